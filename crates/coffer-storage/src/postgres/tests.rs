use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coffer_pgtest::Cluster;

use super::*;

/// A database of its own on the shared cluster, so the tests run in parallel.
fn fresh_db(cluster: &Cluster) -> (String, String) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("storage_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let url = cluster.create_database(&name);
    (name, url)
}

async fn connect(url: &str) -> PostgresBackend {
    PostgresBackend::connect(&PostgresOptions::new(url)).await.expect("connect")
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let (_, url) = fresh_db(Cluster::shared());
    let b = connect(&url).await;
    crate::conformance::exercise(&b).await;
}

#[tokio::test]
async fn creates_its_table_with_byte_ordered_keys() {
    let cluster = Cluster::shared();
    let (db, url) = fresh_db(cluster);
    let b = connect(&url).await;
    let coll = cluster.sql(
        &db,
        "SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation \
         WHERE a.attrelid = 'coffer_kv'::regclass AND a.attname = 'key'",
    );
    assert_eq!(coll, "C");
    // Byte order, not a locale's: 'B' (0x42) < 'a' (0x61) < 'é' (0xc3..).
    for k in ["o/a", "o/B", "o/é", "o/-"] {
        b.put(k, vec![1]).await.expect("put");
    }
    assert_eq!(b.list("o/").await.expect("list"), ["-", "B", "a", "é"]);
    // A second start finds the table and keeps its rows.
    let again = connect(&url).await;
    assert_eq!(again.get("o/B").await.expect("get"), Some(vec![1]));
}

#[tokio::test]
async fn the_table_name_option_is_honoured_and_validated() {
    let cluster = Cluster::shared();
    let (db, url) = fresh_db(cluster);
    cluster.sql(&db, "CREATE SCHEMA vault");
    let mut opts = PostgresOptions::new(&url);
    opts.table = "vault.secrets_kv".into();
    let b = PostgresBackend::connect(&opts).await.expect("connect");
    b.put("a/b", b"v".to_vec()).await.expect("put");
    assert_eq!(cluster.sql(&db, "SELECT key FROM vault.secrets_kv"), "a/b");
    assert_eq!(cluster.sql(&db, "SELECT to_regclass('coffer_kv') IS NULL"), "t");
    for bad in ["", "Kv", "kv; DROP TABLE x", "a.b.c", "9kv", "kv\"x"] {
        opts.table = bad.into();
        let e = PostgresBackend::connect(&opts).await.err().expect("refused");
        assert!(e.to_string().contains("identifier"), "{bad:?}: {e}");
    }
}

#[tokio::test]
async fn a_table_that_orders_keys_by_locale_is_refused() {
    let cluster = Cluster::shared();
    let (db, url) = fresh_db(cluster);
    cluster
        .sql(&db, "CREATE TABLE coffer_kv (key text COLLATE \"POSIX\" PRIMARY KEY, value bytea)");
    let e = PostgresBackend::connect(&PostgresOptions::new(&url)).await.err().expect("refused");
    assert!(e.to_string().contains("COLLATE"), "{e}");
}

#[tokio::test]
async fn data_survives_a_new_pool_and_a_server_restart() {
    let cluster = Cluster::start();
    let url = cluster.create_database("restart");
    {
        let b = connect(&url).await;
        b.put("kept/one", b"1".to_vec()).await.expect("put");
    }
    let b = connect(&url).await;
    assert_eq!(b.get("kept/one").await.expect("get"), Some(b"1".to_vec()));

    // The pool holds a connection to the old server process; the restart closes it.
    cluster.stop();
    let down = b.get("kept/one").await.expect_err("server is down");
    assert!(down.to_string().contains("127.0.0.1"), "{down}");
    cluster.start_again();
    assert_eq!(b.get("kept/one").await.expect("get after restart"), Some(b"1".to_vec()));
    b.put("kept/two", b"2".to_vec()).await.expect("put after restart");
    assert_eq!(b.list("kept/").await.expect("list"), ["one", "two"]);
}

#[tokio::test]
async fn listing_skips_the_subtrees_of_large_folders() {
    let cluster = Cluster::shared();
    let (db, url) = fresh_db(cluster);
    let b = connect(&url).await;
    cluster.sql(
        &db,
        "INSERT INTO coffer_kv (key, value) \
         SELECT format('sys/expire/b%s/lease%s', i % 3, lpad(i::text, 6, '0')), '\\x01' \
         FROM generate_series(1, 150000) AS i",
    );
    b.put("sys/expire/note", vec![2]).await.expect("put");
    let before = b.list_reads.load(Ordering::Relaxed);
    assert_eq!(b.list("sys/expire/").await.expect("list"), ["b0/", "b1/", "b2/", "note"]);
    let reads = b.list_reads.load(Ordering::Relaxed) - before;
    assert!(reads <= 5, "listing 4 children took {reads} index reads");
    assert_eq!(b.list("sys/expire/b1/").await.expect("list").len(), 50_000);
}

#[tokio::test]
async fn a_refused_password_gives_an_error_without_the_password() {
    let cluster = Cluster::shared();
    let secret = "Wr0ngPassw0rd-Sentinel";
    let url = cluster.url_for("coffer_admin", secret, "postgres");
    let e = PostgresBackend::connect(&PostgresOptions::new(&url)).await.err().expect("refused");
    let msg = e.to_string();
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{}/postgres", cluster.port())), "{msg}");
    assert!(!msg.contains(secret) && !msg.contains(&url), "{msg}");
    let opts = PostgresOptions::new(&url);
    assert!(!format!("{opts:?}").contains(secret), "{opts:?}");
}

#[tokio::test]
async fn tls_with_verify_full_against_the_test_ca() {
    let cluster = Cluster::start_tls();
    let url = cluster.create_database("tls");
    let ca = cluster.ca_pem_path().expect("ca");
    let full = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let b = connect(&full).await;
    crate::conformance::exercise(&b).await;
    let ssl = cluster.sql("tls", "SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE datname = 'tls'");
    assert_eq!(ssl, "t", "every connection to the database uses TLS");

    // verify-ca and require with the CA also connect; plaintext is refused by the server.
    for mode in ["verify-ca", "require"] {
        let u = format!("{url}?sslmode={mode}&sslrootcert={}", ca.display());
        connect(&u).await.get("x").await.expect(mode);
    }
    let plain = PostgresBackend::connect(&PostgresOptions::new(format!("{url}?sslmode=disable")))
        .await
        .err()
        .expect("plaintext refused");
    assert!(
        plain.to_string().contains("no encryption") || plain.to_string().contains("pg_hba"),
        "{plain}"
    );
}

#[tokio::test]
async fn tls_with_verify_full_refuses_a_server_from_another_ca_or_name() {
    let cluster = Cluster::start_tls();
    let other = Cluster::start_tls();
    let url = cluster.superuser_url();
    let wrong_ca = other.ca_pem_path().expect("ca");
    let e = PostgresBackend::connect(&PostgresOptions::new(format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        wrong_ca.display()
    )))
    .await
    .err()
    .expect("a certificate from another CA is refused");
    assert!(!e.to_string().contains(&url), "{e}");

    // The certificate names 127.0.0.1 and localhost, not db.example: connect to 127.0.0.1
    // (hostaddr) while calling the server db.example. verify-full refuses, verify-ca accepts.
    let ca = cluster.ca_pem_path().expect("ca");
    let renamed = url.replace("@127.0.0.1:", "@db.example:");
    let with = |mode: &str| {
        format!("{renamed}?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}", ca.display())
    };
    let e = PostgresBackend::connect(&PostgresOptions::new(with("verify-full")))
        .await
        .err()
        .expect("a certificate for another name is refused");
    assert!(e.to_string().contains("db.example"), "{e}");
    connect(&with("verify-ca")).await.get("x").await.expect("verify-ca ignores the name");
}

#[tokio::test]
async fn a_role_with_only_the_tables_privileges_can_use_a_table_made_for_it() {
    let cluster = Cluster::shared();
    let (db, _) = fresh_db(cluster);
    let role = format!("{db}_app");
    cluster.sql(
        &db,
        &format!(
            "CREATE TABLE coffer_kv (key text COLLATE \"C\" PRIMARY KEY, value bytea NOT NULL);
             CREATE ROLE {role} LOGIN PASSWORD 'App-pw-1';
             REVOKE CREATE ON SCHEMA public FROM PUBLIC;
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON coffer_kv TO {role};"
        ),
    );
    let url = format!("{}?sslmode=disable", cluster.url_for(&role, "App-pw-1", &db));
    let b = connect(&url).await;
    b.put("a/k", b"v".to_vec()).await.expect("put");
    assert_eq!(b.get("a/k").await.expect("get"), Some(b"v".to_vec()));
}

#[tokio::test]
async fn a_table_without_a_unique_key_is_refused() {
    let cluster = Cluster::shared();
    let (db, url) = fresh_db(cluster);
    cluster
        .sql(&db, "CREATE TABLE coffer_kv (key text COLLATE \"C\" NOT NULL, value bytea NOT NULL)");
    let e = PostgresBackend::connect(&PostgresOptions::new(&url)).await.err().expect("refused");
    assert!(e.to_string().contains("is not (key text"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_a_failing_one_fails_alone() {
    let cluster = Cluster::shared();
    let (db, url) = fresh_db(cluster);
    let b = std::sync::Arc::new(connect(&url).await);
    // A write PostgreSQL itself refuses, as a constraint or a full disk would.
    cluster.sql(
        &db,
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.key = 'bad/key' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER poison BEFORE INSERT ON coffer_kv FOR EACH ROW EXECUTE FUNCTION poison();
         CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF OLD.key = 'bad/gone' THEN RAISE EXCEPTION 'poisoned delete'; END IF; RETURN OLD; END $$;
         CREATE TRIGGER keep BEFORE DELETE ON coffer_kv FOR EACH ROW EXECUTE FUNCTION keep();",
    );
    b.put("bad/gone", b"kept".to_vec()).await.expect("put");
    let before = b.commits.load(Ordering::Relaxed);
    let writes: Vec<_> = (0..64)
        .map(|i| {
            let b = std::sync::Arc::clone(&b);
            tokio::spawn(async move {
                let ops = match i {
                    // Several keys, one of them refused: the whole request must go.
                    13 => vec![
                        Op::Put("ok/13".into(), b"v".to_vec()),
                        Op::Put("bad/key".into(), b"v".to_vec()),
                    ],
                    i => vec![Op::Put(format!("ok/{i}"), b"v".to_vec())],
                };
                (i, b.batch(ops).await)
            })
        })
        .collect();
    for w in writes {
        let (i, r) = w.await.expect("task");
        match i {
            13 => {
                let e = r.expect_err("the refused request fails");
                assert!(e.to_string().contains("poisoned"), "{e}");
            }
            _ => r.expect("the other requests stand"),
        }
    }
    let fresh = connect(&url).await;
    // Alone in its group, so that nothing else fails the combined statement: a refused delete,
    // and the put beside it goes too.
    let e = b
        .batch(vec![Op::Put("ok/29".into(), b"w".to_vec()), Op::Delete("bad/gone".into())])
        .await
        .expect_err("the refused delete fails its request");
    assert!(e.to_string().contains("poisoned delete"), "{e}");
    for i in (0..64).filter(|i| *i != 13) {
        assert_eq!(fresh.get(&format!("ok/{i}")).await.expect("get"), Some(b"v".to_vec()), "{i}");
    }
    assert_eq!(fresh.get("ok/13").await.expect("get"), None, "a failed request left nothing");
    assert_eq!(fresh.get("ok/29").await.expect("get"), Some(b"v".to_vec()), "not overwritten");
    assert_eq!(fresh.get("bad/gone").await.expect("get"), Some(b"kept".to_vec()));
    assert_eq!(cluster.sql(&db, "SELECT count(*) FROM coffer_kv"), "64");
    let commits = b.commits.load(Ordering::Relaxed) - before;
    assert!(commits < 64, "64 concurrent requests took {commits} commits");
}

/// A TCP proxy in front of the cluster whose connections the test can cut, as a network that
/// drops them would: both ends see the socket close, and nothing more goes through.
struct Proxy {
    port: u16,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(to: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = std::sync::Arc::clone(&links);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut server =
                    tokio::net::TcpStream::connect(("127.0.0.1", to)).await.expect("connect");
                let link = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                held.lock().expect("links").push(link.abort_handle());
            }
        });
        Self { port, links }
    }

    /// Closes every connection made so far.
    fn cut(&self) {
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }
}

/// The backends of `db` waiting for a lock, once there is one not in `seen`.
async fn new_lock_waiter(cluster: &Cluster, db: &str, seen: &[String]) -> String {
    for _ in 0..500 {
        let waiting = cluster.sql(
            db,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        );
        if let Some(pid) = waiting.lines().find(|p| !seen.iter().any(|s| s == p)) {
            return pid.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no new write waits for the lock");
}

/// A group whose connection is cut after it was sent: whether PostgreSQL committed it is
/// unknown (here the server still holds it, waiting for a row lock), and the error says so; it
/// is not sent again, which could land before the first attempt and be undone by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_cut_off_after_it_was_sent_fails_saying_it_may_have_been_applied() {
    let cluster = Cluster::shared();
    let (db, url) = fresh_db(cluster);
    let proxy = Proxy::start(cluster.port()).await;
    let via_proxy = url.replace(&format!(":{}/", cluster.port()), &format!(":{}/", proxy.port));
    let b = std::sync::Arc::new(connect(&via_proxy).await);
    b.put("held/key", b"old".to_vec()).await.expect("put");
    // Holds the row, so that the next group waits on the server for it.
    let locker = connect(&url).await;
    let mut lc = locker.pool.get().await.expect("connection");
    let lock = lc.transaction().await.expect("begin");
    lock.execute("SELECT 1 FROM coffer_kv WHERE key = 'held/key' FOR UPDATE", &[])
        .await
        .expect("lock");
    let write = tokio::spawn({
        let b = std::sync::Arc::clone(&b);
        async move { b.put("held/key", b"new".to_vec()).await }
    });
    let first = new_lock_waiter(cluster, &db, &[]).await;
    proxy.cut();
    // A group sent again would wait for the row too: give up on it rather than hang.
    let e = tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .expect("the cut-off group is answered, not sent again")
        .expect("task")
        .expect_err("cut off");
    let text = e.to_string();
    assert!(text.contains("may or may not have been applied"), "{text}");
    assert_eq!(text.matches("storage backend error").count(), 1, "{text}");
    assert!(!text.contains("coffer_admin") && !text.contains(&via_proxy), "{text}");
    // Nothing sent it again, and the cut-off session was ended before the error was given:
    // it cannot run its statement after a later group any more.
    let session =
        cluster.sql(&db, &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {first}"));
    assert_eq!(session, "0", "the cut-off session is gone");
    lock.rollback().await.expect("release");
    b.put("other/key", b"v".to_vec()).await.expect("put after the cut");
    assert_eq!(
        connect(&url).await.get("held/key").await.expect("get"),
        Some(b"old".to_vec()),
        "the cut-off statement never ran"
    );
}

mod ha_lock {
    //! The HA lock and fencing against a real PostgreSQL.

    use std::time::Duration;

    use super::*;
    use crate::ha::{Advert, HaLock};

    async fn node(url: &str, ttl: Duration) -> PostgresBackend {
        let mut o = PostgresOptions::new(url);
        o.ha = Some(ha::HaOptions {
            table: "coffer_ha_locks".into(),
            lock_ttl: ttl,
            ..Default::default()
        });
        PostgresBackend::connect(&o).await.expect("connect")
    }

    fn advert(n: &str) -> Advert {
        Advert {
            api_addr: format!("https://{n}:8200"),
            cluster_addr: String::new(),
            hostname: n.into(),
        }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_each_taking_raises_the_epoch() {
        let (_, url) = fresh_db(Cluster::shared());
        let (a, b) =
            (node(&url, Duration::from_secs(30)).await, node(&url, Duration::from_secs(30)).await);
        let (la, lb) = (a.ha_lock().expect("lock"), b.ha_lock().expect("lock"));
        // Before anyone led, an epoch-0 write works (sys/init does this).
        a.put("core/x", vec![1]).await.expect("write before any leader");
        assert_eq!(la.try_acquire(&advert("a")).await.expect("acquire"), Some(1));
        assert_eq!(lb.try_acquire(&advert("b")).await.expect("acquire"), None);
        let leader = lb.leader().await.expect("leader").expect("row");
        assert_eq!((leader.node_id.as_str(), leader.epoch, leader.live), (la.node_id(), 1, true));
        assert_eq!(leader.advert.api_addr, "https://a:8200");
        assert!(la.renew(1).await.expect("renew"));
        assert!(!lb.renew(1).await.expect("renew by a non-holder"), "only the holder renews");
        la.release(1).await.expect("release");
        assert!(!la.renew(1).await.expect("renew after release"));
        assert_eq!(lb.try_acquire(&advert("b")).await.expect("acquire"), Some(2));
        let now = lb.leader().await.expect("leader").expect("row");
        assert_eq!((now.node_id.as_str(), now.epoch), (lb.node_id(), 2));
    }

    #[tokio::test]
    async fn a_deposed_leader_cannot_write_and_a_standby_never_could() {
        let (_, url) = fresh_db(Cluster::shared());
        let ttl = Duration::from_secs(2);
        let (a, b) = (node(&url, ttl).await, node(&url, ttl).await);
        let (la, lb) = (a.ha_lock().expect("lock"), b.ha_lock().expect("lock"));
        assert_eq!(la.try_acquire(&advert("a")).await.expect("acquire"), Some(1));
        a.put("k", vec![1]).await.expect("the leader writes");
        a.batch(vec![Op::Put("k2".into(), vec![2])]).await.expect("the leader's batch");
        let refused = b.put("k", vec![9]).await.expect_err("a standby's write");
        assert!(matches!(refused, Error::Fenced(_)), "{refused}");
        assert!(matches!(b.delete("k").await, Err(Error::Fenced(_))));
        // a stops renewing (a pause): the lock expires on the database's clock, b takes it.
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        assert_eq!(lb.try_acquire(&advert("b")).await.expect("acquire"), Some(2));
        // a still believes it holds epoch 1: the database refuses its writes and its renewal.
        let refused = a.put("k", vec![7]).await.expect_err("the deposed leader's write");
        assert!(matches!(refused, Error::Fenced(_)), "{refused}");
        assert!(matches!(a.batch(vec![Op::Delete("k2".into())]).await, Err(Error::Fenced(_))));
        assert!(!la.renew(1).await.expect("renew"));
        b.put("k", vec![3]).await.expect("the new leader writes");
        assert_eq!(a.get("k").await.expect("get"), Some(vec![3]));
        assert_eq!(
            a.get("k2").await.expect("get"),
            Some(vec![2]),
            "the refused delete changed nothing"
        );
    }

    #[tokio::test]
    async fn a_leader_whose_session_ended_is_replaced_before_its_expiry() {
        let (_, url) = fresh_db(Cluster::shared());
        let ttl = Duration::from_secs(60);
        let a = node(&url, ttl).await;
        let b = node(&url, ttl).await;
        let lb = b.ha_lock().expect("lock");
        assert_eq!(
            a.ha_lock().expect("lock").try_acquire(&advert("a")).await.expect("acquire"),
            Some(1)
        );
        assert_eq!(lb.try_acquire(&advert("b")).await.expect("acquire"), None);
        // The process dies: its connections close, PostgreSQL ends its sessions.
        drop(a);
        let start = std::time::Instant::now();
        let epoch = loop {
            if let Some(e) = lb.try_acquire(&advert("b")).await.expect("acquire") {
                break e;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "not taken within 10 s of a's end");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(epoch, 2);
    }

    #[tokio::test]
    async fn a_fenced_leader_passes_the_conformance_suite() {
        let (_, url) = fresh_db(Cluster::shared());
        let a = node(&url, Duration::from_secs(30)).await;
        a.ha_lock().expect("lock").try_acquire(&advert("a")).await.expect("acquire");
        crate::conformance::exercise(&a).await;
    }

    #[tokio::test]
    async fn nodes_report_themselves() {
        let (_, url) = fresh_db(Cluster::shared());
        let a = node(&url, Duration::from_secs(10)).await;
        let la = a.ha_lock().expect("lock");
        la.heartbeat(&advert("a")).await.expect("heartbeat");
        la.heartbeat(&advert("a")).await.expect("heartbeat again");
        let nodes = la.nodes(Duration::from_secs(30)).await.expect("nodes");
        assert_eq!(nodes.len(), 1);
        assert_eq!(
            (nodes[0].node_id.as_str(), nodes[0].advert.hostname.as_str()),
            (la.node_id(), "a")
        );
    }

    #[tokio::test]
    async fn options_are_checked() {
        let mut o = PostgresOptions::new("postgres://u:p@h/db");
        o.ha = Some(ha::HaOptions {
            table: "coffer_kv".into(),
            lock_ttl: Duration::from_secs(15),
            ..Default::default()
        });
        assert!(o.check().is_err(), "the lock table must differ from the data table");
        o.ha = Some(ha::HaOptions {
            table: "locks".into(),
            lock_ttl: Duration::from_secs(1),
            ..Default::default()
        });
        assert!(o.check().is_err(), "a 1 s lock is refused");
        o.ha = Some(ha::HaOptions::default());
        o.check().expect("defaults");
    }
}

mod change_feed {
    use std::sync::Mutex;

    use super::feed::{Change, ChangeFeed};
    use super::*;

    async fn ha_backend(url: &str) -> PostgresBackend {
        let mut o = PostgresOptions::new(url);
        o.ha = Some(ha::HaOptions::default());
        PostgresBackend::connect(&o).await.expect("connect")
    }

    async fn recording(url: &str) -> (ChangeFeed, Arc<Mutex<Vec<Change>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let feed = ChangeFeed::open(url, DEFAULT_TABLE, move |c| s.lock().expect("lock").push(c))
            .await
            .expect("open feed");
        (feed, seen)
    }

    #[tokio::test]
    async fn a_sync_returns_only_after_every_change_committed_before_it_was_delivered() {
        let (_, url) = fresh_db(Cluster::shared());
        let writer = ha_backend(&url).await;
        let (feed, seen) = recording(&url).await;
        assert!(feed.is_live());
        assert_eq!(seen.lock().expect("lock").as_slice(), [Change::All], "first: everything");
        for i in 0..50 {
            let key = format!("logical/x/k{i}");
            writer.put(&key, vec![1]).await.expect("put");
            // No sleep: the barrier alone must make the acknowledged write visible.
            feed.sync(Duration::from_secs(10)).await.expect("sync");
            let last = seen.lock().expect("lock").last().cloned();
            assert_eq!(last, Some(Change::Keys(vec![key])), "write {i} not seen after a sync");
        }
        writer
            .batch(vec![Op::Put("a/1".into(), vec![1]), Op::Delete("a/2".into())])
            .await
            .expect("batch");
        feed.sync(Duration::from_secs(10)).await.expect("sync");
        let last = seen.lock().expect("lock").last().cloned();
        assert_eq!(last, Some(Change::Keys(vec!["a/1".into(), "a/2".into()])), "one per group");
        assert_eq!(feed.applied(), 52);
        // A node without HA notifies nothing: its writes never reach the feed.
        let plain = connect(&url).await;
        plain.put("b/1", vec![1]).await.expect("put");
        feed.sync(Duration::from_secs(10)).await.expect("sync");
        assert_eq!(feed.applied(), 52);
    }

    #[tokio::test]
    async fn a_terminated_feed_connection_is_down_at_once_then_comes_back_with_everything() {
        let cluster = Cluster::shared();
        let (db, url) = fresh_db(cluster);
        let writer = ha_backend(&url).await;
        let (feed, seen) = recording(&url).await;
        let pid = feed.backend_pid().expect("pid");
        cluster.sql(&db, &format!("SELECT pg_terminate_backend({pid})"));
        let start = std::time::Instant::now();
        while feed.is_live() {
            assert!(start.elapsed() < Duration::from_secs(5), "still live after termination");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(feed.sync(Duration::from_secs(2)).await.is_err(), "a sync on a dead feed");
        // Missed while down, so reported as "everything" on return.
        writer.put("c/1", vec![1]).await.expect("put");
        while !feed.is_live() {
            assert!(start.elapsed() < Duration::from_secs(10), "no reconnection");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_ne!(feed.backend_pid(), Some(pid));
        feed.sync(Duration::from_secs(10)).await.expect("sync after reconnecting");
        let all = seen.lock().expect("lock").iter().filter(|c| **c == Change::All).count();
        assert_eq!(all, 2, "{:?}", seen.lock().expect("lock"));
    }

    /// A callback that falls behind never lets notifications pile up without bound (nor holds
    /// back PostgreSQL's queue): the feed drops its session and comes back with "everything".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_feed_whose_callback_falls_behind_drops_its_session_and_reports_everything() {
        let cluster = Cluster::shared();
        let (db, url) = fresh_db(cluster);
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (g, s) = (released.clone(), seen.clone());
        let feed = ChangeFeed::open(&url, DEFAULT_TABLE, move |c| {
            // The first change after "everything" blocks until the test lets go (off the
            // runtime's hands, so the feed's connection is still read meanwhile).
            if c != Change::All {
                tokio::task::block_in_place(|| {
                    while !g.load(std::sync::atomic::Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                });
            }
            s.lock().expect("lock").push(c);
        })
        .await
        .expect("open feed");
        let pid = feed.backend_pid().expect("pid");
        // More notifications than the feed queues, each its own (PostgreSQL merges equal ones).
        let channel = format!("coffer_changes:{DEFAULT_TABLE}");
        cluster.sql(
            &db,
            &format!(
                "SELECT count(pg_notify('{channel}', '1' || chr(10) || 'k' || g)) \
                 FROM generate_series(1, 6000) g"
            ),
        );
        let start = std::time::Instant::now();
        while cluster.sql(&db, &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"))
            != "0"
        {
            assert!(start.elapsed() < Duration::from_secs(10), "the session was not dropped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        released.store(true, std::sync::atomic::Ordering::SeqCst);
        while feed.backend_pid().is_none_or(|p| p == pid) || !feed.is_live() {
            assert!(start.elapsed() < Duration::from_secs(20), "no reconnection");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        feed.sync(Duration::from_secs(10)).await.expect("sync after reconnecting");
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.last(), Some(&Change::All), "everything, after the reconnection");
        assert!(seen.len() < 6000, "{} changes handed on", seen.len());
    }
}

/// PostgreSQL keeps a prepared statement's generic plan, made from the table's statistics of
/// the time, until the table is analyzed again. Made while the table was small, that plan is a
/// sequential scan, and every read, list and delete would then scan the whole table as it grows,
/// until autovacuum analyzes it again (with autovacuum off: for good). Coffer's sessions plan
/// no sequential scan of its table.
#[tokio::test]
async fn statements_planned_while_the_table_was_small_do_not_scan_it_once_it_has_grown() {
    let cluster = Cluster::shared();
    let (db, url) = fresh_db(cluster);
    // Made here (as a DBA may), so that the scan that builds the primary key's index is counted
    // now: psql's session reports its counts when it ends.
    cluster.sql(
        &db,
        "CREATE TABLE coffer_kv (key text COLLATE \"C\" PRIMARY KEY, value bytea NOT NULL) \
         WITH (autovacuum_enabled = false)",
    );
    let counts = || {
        let row = cluster.sql(
            &db,
            "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables \
             WHERE relname = 'coffer_kv'",
        );
        let (seq, idx) = row.split_once('|').expect("two columns");
        (seq.parse::<u64>().expect("seq_scan"), idx.parse::<u64>().expect("idx_scan"))
    };
    let (made, _) = counts();
    let b = connect(&url).await;
    for i in 0..60 {
        b.put(&format!("a/{i:02}"), vec![1]).await.expect("put");
    }
    cluster.sql(&db, "ANALYZE coffer_kv");
    // More than five runs of each statement: PostgreSQL then settles on its generic plan.
    for i in 0..8 {
        b.get(&format!("a/{i:02}")).await.expect("get");
        b.list("a/").await.expect("list");
        b.delete(&format!("a/{i:02}")).await.expect("delete");
    }
    cluster.sql(
        &db,
        "INSERT INTO coffer_kv (key, value) \
         SELECT format('b/%s', lpad(i::text, 6, '0')), '\\x01' FROM generate_series(1, 100000) AS i",
    );
    for i in 10..18 {
        assert_eq!(b.get(&format!("b/{i:06}")).await.expect("get"), Some(vec![1]));
        assert_eq!(b.list("a/").await.expect("list").len(), 60 - 8);
        b.delete(&format!("b/{i:06}")).await.expect("delete");
    }
    // Coffer's sessions report their counts when they end: end them, and wait until they have.
    drop(b);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.sql(
        &db,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    ) != "0"
    {
        assert!(std::time::Instant::now() < deadline, "Coffer's sessions did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (seq, idx) = counts();
    // Every read, list and delete is a scan of some kind: 48 in all.
    assert!(idx >= 48, "the sessions' counts were not reported: {seq} seq, {idx} idx");
    assert_eq!(seq, made, "Coffer's statements scanned the table {} times", seq - made);
}
