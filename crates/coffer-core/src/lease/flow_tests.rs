//! The expiration manager against a whole core on memory storage, with an engine that records
//! what it was asked to renew and revoke and can be told to fail (as a database that is down).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use coffer_barrier::BatchOp;
use coffer_storage::{Backend, MemoryBackend};
use serde_json::{Map, Value, json};

use crate::backend::{BackendConfig, BackendRequest, LeaseRequest, LogicalBackend, Registry};
use crate::due::{self as index, Due};
use crate::logical::{Error, Operation, Request, Response, Result, SecretLease};
use crate::{Core, CoreConfig};

#[derive(Default)]
struct Log {
    revoked: Mutex<Vec<String>>,
    /// Calls of `revoke_lease` without a lease id (the pipeline taking back a secret no lease
    /// answers for), failed ones included.
    undo_calls: std::sync::atomic::AtomicU64,
    renewed: Mutex<Vec<(String, u64)>>,
    fail: AtomicBool,
    /// Revocations fail as on a node that lost leadership (not a refusal of the engine's).
    standby: AtomicBool,
    /// `creds/slow` tells `entered`, then waits for `resume` before answering.
    entered: tokio::sync::Notify,
    resume: tokio::sync::Notify,
}

impl Log {
    fn revoked(&self) -> Vec<String> {
        self.revoked.lock().expect("lock").clone()
    }
}

struct Engine {
    log: Arc<Log>,
}

#[async_trait]
impl LogicalBackend for Engine {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response> {
        // `creds/<user>?ttl=N&max_ttl=M`: a credential for <user> with a lease of N seconds,
        // renewable up to M seconds from issue.
        let user = req.path.strip_prefix("creds/").ok_or(Error::NotFound)?;
        if user == "slow" {
            self.log.entered.notify_one();
            self.log.resume.notified().await;
        }
        let secs = |k: &str| -> Result<u64> {
            let v = req.data.get(k).and_then(Value::as_str).map_or(Ok(0), str::parse);
            v.map_err(|_| Error::invalid(k))
        };
        let (ttl, max_ttl) = (secs("ttl")?, secs("max_ttl")?);
        let mut internal = Map::new();
        internal.insert("user".into(), json!(user));
        let mut data = Map::new();
        data.insert("username".into(), json!(user));
        Ok(Response {
            data: Some(data),
            secret: Some(SecretLease {
                ttl,
                max_ttl,
                renewable: true,
                internal,
                live_values: Vec::new(),
            }),
            ..Response::default()
        })
    }

    async fn renew_lease(&self, l: &LeaseRequest<'_>) -> Result<()> {
        let user = l.internal["user"].as_str().unwrap_or_default().to_owned();
        self.log.renewed.lock().expect("lock").push((user, l.expire_time));
        Ok(())
    }

    async fn revoke_lease(&self, l: &LeaseRequest<'_>) -> Result<()> {
        if l.lease_id.is_empty() {
            self.log.undo_calls.fetch_add(1, Ordering::SeqCst);
        }
        if self.log.fail.load(Ordering::SeqCst) {
            return Err(Error::Internal("database is down".into()));
        }
        if self.log.standby.load(Ordering::SeqCst) {
            return Err(Error::Standby);
        }
        let user = l.internal["user"].as_str().unwrap_or_default().to_owned();
        self.log.revoked.lock().expect("lock").push(user);
        Ok(())
    }
}

struct Fixture {
    storage: Arc<MemoryBackend>,
    core: Arc<Core>,
    log: Arc<Log>,
    root: String,
    keys: Vec<zeroize::Zeroizing<Vec<u8>>>,
}

fn registry(log: &Arc<Log>) -> Registry {
    let mut r = Registry::new();
    // Every core has a cubbyhole mount; these tests never use it, any engine will do.
    for kind in ["leasetest", "cubbyhole"] {
        let log = log.clone();
        r.register_secrets(
            kind,
            Arc::new(move |_cfg: BackendConfig| {
                Ok(Arc::new(Engine { log: log.clone() }) as Arc<dyn LogicalBackend>)
            }),
        );
    }
    r
}

async fn fixture() -> Fixture {
    let storage = Arc::new(MemoryBackend::new());
    let log = Arc::new(Log::default());
    let core = Core::new(storage.clone(), registry(&log), CoreConfig::default());
    let init = core.dev_setup(None).await.expect("dev setup");
    core.mount_secrets("db/", "leasetest", "", &[]).await.expect("mount");
    Fixture { storage, core, log, root: init.root_token.expose().to_owned(), keys: init.keys }
}

impl Fixture {
    async fn call(&self, op: Operation, path: &str, body: Value, token: &str) -> Result<Response> {
        let data = crate::logical::into_map(body);
        self.core.handle(Request::new(op, path).with_data(data).with_token(token)).await
    }

    async fn creds(&self, user: &str, ttl: u64, token: &str) -> String {
        self.creds_max(user, ttl, 0, token).await
    }

    async fn creds_max(&self, user: &str, ttl: u64, max_ttl: u64, token: &str) -> String {
        let body = json!({"ttl": ttl.to_string(), "max_ttl": max_ttl.to_string()});
        let r = self
            .call(Operation::Read, &format!("db/creds/{user}"), body, token)
            .await
            .expect("creds");
        assert!(r.lease_id.starts_with(&format!("db/creds/{user}/")), "{}", r.lease_id);
        assert!(r.renewable);
        r.lease_id
    }

    /// A child of root, with a 1 h TTL.
    async fn child_token(&self) -> String {
        self.call(Operation::Update, "auth/token/create", json!({"ttl": "1h"}), &self.root)
            .await
            .expect("child")
            .auth
            .expect("auth")
            .client_token
            .expose()
            .to_owned()
    }

    async fn lookup(&self, lease_id: &str) -> Result<Map<String, Value>> {
        let r = self
            .call(Operation::Update, "sys/leases/lookup", json!({"lease_id": lease_id}), &self.root)
            .await?;
        Ok(r.data.unwrap_or_default())
    }

    /// A new core on the same storage, as after a restart, unsealed with the same keys.
    async fn restart(&mut self) {
        self.core.seal().await.expect("seal");
        let storage: Arc<dyn Backend> = self.storage.clone();
        self.core = Core::new(storage, registry(&self.log), CoreConfig::default());
        self.core.unseal_with(&self.keys).await.expect("unseal");
    }
}

/// A fixture whose engine refuses revocations, and a lease of root's (`user`, 1 s) whose
/// revocation was attempted (and failed).
async fn failing_lease(user: &str) -> (Fixture, String) {
    let f = fixture().await;
    f.log.fail.store(true, Ordering::SeqCst);
    let id = f.creds(user, 1, &f.root).await;
    eventually("a revocation was attempted", async || {
        f.lookup(&id).await.is_ok_and(|l| l.get("revoke_attempts").is_some())
    })
    .await;
    (f, id)
}

/// A fixture, a child token of root, and a lease that child asked for (`user`, 60 s).
async fn child_with_lease(user: &str) -> (Fixture, String, String) {
    let f = fixture().await;
    let child = f.child_token().await;
    let id = f.creds(user, 60, &child).await;
    (f, child, id)
}

/// Polls `f` for up to 30 s: enough for the longest wait here (a lease due 10 s out, beyond the
/// horizon) on a loaded machine.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn leases_are_looked_up_listed_renewed_within_their_maximum_and_revoked() {
    let f = fixture().await;
    let id = f.creds_max("alice", 30, 100, &f.root).await;
    let l = f.lookup(&id).await.expect("lookup");
    assert_eq!(l["id"], json!(id));
    assert!(l["ttl"].as_u64().expect("ttl") <= 30);
    assert_eq!(l["renewable"], json!(true));

    let listed =
        f.call(Operation::List, "sys/leases/lookup/db/creds/alice", json!({}), &f.root).await;
    let keys = listed.expect("list").data.expect("data")["keys"].clone();
    assert_eq!(keys, json!([id.rsplit('/').next().expect("last")]));

    let r = f
        .call(
            Operation::Update,
            "sys/leases/renew",
            json!({"lease_id": id, "increment": "1h"}),
            &f.root,
        )
        .await
        .expect("renew");
    // The engine capped the lease at 100 s from issue.
    assert!(r.lease_duration <= 100 && r.lease_duration >= 90, "{}", r.lease_duration);
    assert!(r.warnings.iter().any(|w| w.contains("capped")), "{:?}", r.warnings);
    assert_eq!(f.log.renewed.lock().expect("lock").len(), 1);

    f.call(Operation::Update, &format!("sys/revoke/{id}"), json!({}), &f.root)
        .await
        .expect("revoke");
    assert_eq!(f.log.revoked(), ["alice"]);
    let gone = f.lookup(&id).await.expect_err("revoked lease");
    assert!(gone.to_string().contains("invalid lease"), "{gone}");
    // Revoking again is not an error, and does not call the engine twice.
    f.call(Operation::Update, "sys/leases/revoke", json!({"lease_id": id}), &f.root)
        .await
        .expect("again");
    assert_eq!(f.log.revoked().len(), 1);
}

#[tokio::test]
async fn leases_made_together_are_stored_in_the_order_they_were_made() {
    let f = fixture().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(f.creds("alice", 60, &f.root).await);
        // The order part counts 65.5 µs steps: apart by more, each sorts after the one before.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for w in ids.windows(2) {
        assert!(w[0] < w[1], "lease ids not in the order they were made: {ids:?}");
    }
    for id in &ids {
        let last = id.rsplit('/').next().expect("last");
        assert!(last.len() == 26 && last.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
    }
    // Their records, named by the lease id, sit in the same order in storage, and so do their
    // token links and expiry entries, named after it.
    let stored = f.storage.list("sys/expire/id/db/creds/alice/").await.expect("list");
    let names: Vec<&str> = ids.iter().map(|id| id.rsplit('/').next().expect("last")).collect();
    assert_eq!(stored, names);
    let mut links = Vec::new();
    let mut due = Vec::new();
    for (key, id) in index_entries(&f).await {
        let last = id.rsplit('/').next().expect("last").to_owned();
        let name = key.rsplit('/').next().expect("name");
        match key.split('/').next() {
            Some("token") => links.push((name.to_owned(), last)),
            Some("due") => due.push((key.clone(), last)),
            _ => panic!("unexpected entry {key}"),
        }
    }
    assert_eq!(links.len(), ids.len());
    assert_eq!(due.len(), ids.len());
    for (name, last) in &links {
        assert!(name.starts_with(&format!("{last}.")), "token link {name} of lease {last}");
    }
    assert_eq!(links.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(), names);
    for (key, last) in &due {
        assert!(key.rsplit('/').next().expect("name").starts_with(&format!("l.{last}.")), "{key}");
    }
}

/// Every lease index entry in storage, by key relative to the expiration manager's view, with
/// the lease id it is for: expiry entries, then token links, then failed revocations, each in
/// key order.
async fn index_entries(f: &Fixture) -> Vec<(String, String)> {
    let active = f.core.active().expect("unsealed");
    let view = &active.leases.view;
    let mut out = Vec::new();
    for dir in ["due/", "token/", "failed/"] {
        for rest in view.list_recursive(dir).await.expect("list") {
            let key = format!("{dir}{rest}");
            let raw = view.get(&key).await.expect("get").expect("listed");
            let id = match Due::decode(&raw) {
                Some((_, Due::Lease(id))) => id,
                Some((_, Due::Token(_))) => continue,
                None => String::from_utf8(raw.to_vec()).expect("a lease id"),
            };
            out.push((key, id));
        }
    }
    out
}

/// Rewrites the lease `id` as leases were stored before they were named in order: its expiry
/// entry and token link named by the hash alone. Returns that name.
async fn store_with_hashed_names(f: &Fixture, id: &str) -> String {
    let active = f.core.active().expect("unsealed");
    let leases = &active.leases;
    let mut e = leases.get(id).await.expect("get").expect("stored");
    let token = e.token_id.clone().expect("asked for by root");
    let (new_name, new_due) = (e.name(), e.due_key(e.due));
    e.ordered_names = false;
    let raw = super::encode(&e).expect("encode");
    let idx = Due::Lease(id.to_owned()).encode(e.due);
    let old_name = index::lease_name(id, false);
    leases
        .view
        .batch(vec![
            BatchOp::Put(format!("id/{id}"), &raw),
            BatchOp::Delete(new_due),
            BatchOp::Delete(format!("token/{token}/{new_name}")),
            BatchOp::Put(index::lease_key(&old_name, e.due), &idx),
            BatchOp::Put(format!("token/{token}/{old_name}"), id.as_bytes()),
        ])
        .await
        .expect("rewrite");
    old_name
}

async fn index_keys(f: &Fixture) -> Vec<String> {
    index_entries(f).await.into_iter().map(|(k, _)| k).collect()
}

#[tokio::test]
async fn a_lease_stored_with_hashed_names_is_renewed_retried_and_revoked_without_leaving_entries() {
    let f = fixture().await;
    let id = f.creds_max("old", 60, 7200, &f.root).await;
    let old_name = store_with_hashed_names(&f, &id).await;
    let leases = &f.core.active().expect("unsealed").leases;
    let token = leases.get(&id).await.expect("get").expect("stored").token_id.expect("token");

    // A renewal moves its expiry entry, under the name it has.
    let renew = json!({"lease_id": id, "increment": "3600"});
    f.call(Operation::Update, "sys/leases/renew", renew, &f.root).await.expect("renew");
    let e = leases.get(&id).await.expect("get").expect("stored");
    assert!(!e.ordered_names);
    let link = format!("token/{token}/{old_name}");
    assert_eq!(index_keys(&f).await, [index::lease_key(&old_name, e.due), link.clone()]);

    // A revocation that fails keeps it, with its failed entry under that name too ...
    f.log.fail.store(true, Ordering::SeqCst);
    let r = f.call(Operation::Update, "sys/leases/revoke", json!({"lease_id": id}), &f.root).await;
    assert!(r.is_err());
    let e = leases.get(&id).await.expect("get").expect("kept");
    let failed = format!("failed/{old_name}");
    assert_eq!(
        index_keys(&f).await,
        [index::lease_key(&old_name, e.due), link.clone(), failed.clone()]
    );
    // ... which tidy leaves, as the lease still fails.
    let r = f.call(Operation::Update, "sys/leases/tidy", json!({}), &f.root).await.expect("tidy");
    assert_eq!(r.data.expect("data")["dangling_index_entries_removed"], json!(0));

    // Revoked once the engine works: nothing is left.
    f.log.fail.store(false, Ordering::SeqCst);
    f.call(Operation::Update, "sys/leases/revoke", json!({"lease_id": id}), &f.root)
        .await
        .expect("revoke");
    assert_eq!(f.log.revoked(), ["old"]);
    assert_eq!(index_keys(&f).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_lease_stored_with_hashed_names_is_named_in_order_once_moved_and_revoked_by_its_token() {
    let f = fixture().await;
    let id = f.creds("moved", 60, &f.root).await;
    store_with_hashed_names(&f, &id).await;
    let leases = &f.core.active().expect("unsealed").leases;
    assert_eq!(leases.rename_prefix("db/", "db2/").await.expect("move"), 1);
    let moved = id.replacen("db/", "db2/", 1);
    let e = leases.get(&moved).await.expect("get").expect("moved");
    assert!(e.ordered_names);
    let (name, token) = (index::lease_name(&moved, true), e.token_id.clone().expect("token"));
    assert_eq!(
        index_keys(&f).await,
        [index::lease_key(&name, e.due), format!("token/{token}/{name}")]
    );
    // And one still under the hashed names goes with its token, links and all.
    let child = f.child_token().await;
    let other = f.creds("other", 60, &child).await;
    store_with_hashed_names(&f, &other).await;
    f.call(Operation::Update, "auth/token/revoke-self", json!({}), &child).await.expect("revoke");
    assert_eq!(f.log.revoked(), ["other"]);
    assert_eq!(
        index_keys(&f).await,
        [index::lease_key(&name, e.due), format!("token/{token}/{name}")]
    );
}

#[tokio::test]
async fn a_failing_lease_moved_with_its_mount_is_still_listed_as_failing_and_retried() {
    let (f, id) = failing_lease("dave").await;
    let active = f.core.active().expect("unsealed");
    let last = id.rsplit('/').next().expect("last");
    let failed = index_keys(&f).await.into_iter().filter(|k| k.starts_with("failed/"));
    let failed: Vec<String> = failed.collect();
    assert!(
        failed.len() == 1 && failed[0].starts_with(&format!("failed/{last}.")),
        "named in order: {failed:?}"
    );
    assert_eq!(active.leases.rename_prefix("db/", "db2/").await.expect("move"), 1);
    let moved = id.replacen("db/", "db2/", 1);
    let failing = active.leases.failing().await.expect("failing");
    assert_eq!(failing.iter().map(|l| l.lease_id.as_str()).collect::<Vec<_>>(), [moved.as_str()]);
    f.log.fail.store(false, Ordering::SeqCst);
    eventually("the retry succeeded", async || f.log.revoked() == ["dave"]).await;
    assert_eq!(index_entries(&f).await, Vec::<(String, String)>::new());
}

/// A token whose revocation began (marked, its links listed) while its lease moved with its
/// mount: the listing found the old link and missed the new one. The move revokes the lease.
#[tokio::test]
async fn a_lease_moved_while_its_token_is_being_revoked_goes_with_the_token() {
    let (f, child, id) = child_with_lease("eve").await;
    let active = f.core.active().expect("unsealed");
    let tokens = active.tokens.clone();
    tokens.mark_revoking(&tokens.id_of(&child)).await.expect("mark");
    assert_eq!(active.leases.rename_prefix("db/", "db2/").await.expect("move"), 1);
    assert_eq!(f.log.revoked(), ["eve"]);
    let moved = id.replacen("db/", "db2/", 1);
    assert!(active.leases.get(&moved).await.expect("get").is_none());
    assert_eq!(index_keys(&f).await, Vec::<String>::new());
}

#[tokio::test]
async fn tidy_removes_failed_entries_of_leases_that_are_gone_or_no_longer_failing() {
    let f = fixture().await;
    let id = f.creds("h", 3600, &f.root).await;
    let leases = &f.core.active().expect("unsealed").leases;
    let e = leases.get(&id).await.expect("get").expect("stored");
    // As a mount move before moves took them along left them: under the former id, and one of
    // a lease that is not failing.
    let gone = "db-old/creds/h/7mccpL0IJAimWWySHwicliGYWw";
    leases
        .view
        .put(&format!("failed/{}", index::lease_name(gone, true)), gone.as_bytes())
        .await
        .expect("put");
    leases.view.put(&format!("failed/{}", e.name()), id.as_bytes()).await.expect("put");
    let r = f.call(Operation::Update, "sys/leases/tidy", json!({}), &f.root).await.expect("tidy");
    assert_eq!(r.data.expect("data")["dangling_index_entries_removed"], json!(2));
    assert!(!index_keys(&f).await.iter().any(|k| k.starts_with("failed/")));
    assert!(leases.get(&id).await.expect("get").is_some());
}

#[tokio::test]
async fn an_index_entry_left_by_a_gone_lease_is_removed_when_due_whichever_its_name() {
    let f = fixture().await;
    let active = f.core.active().expect("unsealed");
    let leases = &active.leases;
    let now = crate::time::now_unix();
    for (id, ordered) in
        [("db/creds/x/7mccpL0IJAimWWySHwicliGYWw", true), ("db/creds/x/abc", false)]
    {
        let key = index::lease_key(&index::lease_name(id, ordered), now);
        let due = Due::Lease(id.to_owned());
        leases.view.put(&key, &due.encode(now)).await.expect("put");
        leases.offer(now, due);
    }
    eventually("both dangling entries were removed", async || index_entries(&f).await.is_empty())
        .await;
    assert!(f.log.revoked().is_empty());
}

#[tokio::test]
async fn an_expired_lease_is_revoked_by_the_engine_without_anyone_asking() {
    let f = fixture().await;
    let id = f.creds("bob", 1, &f.root).await;
    eventually("the lease expired", async || f.log.revoked() == ["bob"]).await;
    assert!(f.lookup(&id).await.is_err());
}

#[tokio::test]
async fn a_failing_revocation_stays_with_its_error_and_is_retried_until_it_succeeds() {
    let (f, id) = failing_lease("carol").await;
    let l = f.lookup(&id).await.expect("still there");
    assert!(l["revoke_error"].as_str().expect("error").contains("database is down"));
    // A token without sudo sees the lease, not the engine's error.
    let plain = f
        .call(Operation::Update, "auth/token/create", json!({"policies": ["default"]}), &f.root)
        .await
        .expect("token")
        .auth
        .expect("auth")
        .client_token
        .expose()
        .to_owned();
    let seen = f
        .call(Operation::Update, "sys/leases/lookup", json!({"lease_id": id}), &plain)
        .await
        .expect("default policy looks up")
        .data
        .expect("data");
    assert!(seen.get("revoke_error").is_none() && seen.get("id").is_some(), "{seen:?}");
    let failing =
        f.call(Operation::Read, "sys/leases", json!({"type": "irrevocable"}), &f.root).await;
    let data = failing.expect("failing list").data.expect("data");
    assert_eq!(data["lease_count"], json!(1));
    assert_eq!(data["leases"][0]["lease_id"], json!(id));
    // A synchronous revoke reports the failure, and the lease is still kept.
    let e = f.call(Operation::Update, "sys/leases/revoke", json!({"lease_id": id}), &f.root).await;
    assert!(e.is_err());
    assert!(f.lookup(&id).await.is_ok());

    f.log.fail.store(false, Ordering::SeqCst);
    eventually("the retry succeeded", async || f.log.revoked() == ["carol"]).await;
    assert!(f.lookup(&id).await.is_err());
    let failing = f.call(Operation::Read, "sys/leases", json!({}), &f.root).await.expect("list");
    assert_eq!(failing.data.expect("data")["lease_count"], json!(0));
}

#[tokio::test]
async fn revoking_a_token_revokes_the_leases_it_asked_for() {
    let f = fixture().await;
    let child = f.child_token().await;
    let a = f.creds("dave", 60, &child).await;
    let b = f.creds("erin", 60, &f.root).await;
    f.call(Operation::Update, "auth/token/revoke-self", json!({}), &child).await.expect("revoke");
    assert_eq!(f.log.revoked(), ["dave"]);
    assert!(f.lookup(&a).await.is_err());
    assert!(f.lookup(&b).await.is_ok(), "another token's lease stays");
}

/// A token's revocation that cannot settle one of its leases (here the node lost leadership,
/// which is not the engine refusing) stops there with the lease's link kept: before, the link
/// went and the revocation went on, and the lease outlived the token until its expiry.
#[tokio::test]
async fn a_token_revocation_cut_short_at_a_lease_revokes_it_when_finished() {
    let (f, child, id) = child_with_lease("fay").await;
    f.log.standby.store(true, Ordering::SeqCst);
    let r = f.call(Operation::Update, "auth/token/revoke-self", json!({}), &child).await;
    assert!(matches!(r, Err(Error::Standby)), "{r:?}");
    assert!(f.lookup(&id).await.is_ok(), "the lease stays");
    assert!(index_keys(&f).await.iter().any(|k| k.starts_with("token/")), "with its link");
    f.log.standby.store(false, Ordering::SeqCst);
    let finish = json!({"token": child});
    f.call(Operation::Update, "auth/token/revoke", finish, &f.root).await.expect("finished");
    assert_eq!(f.log.revoked(), ["fay"]);
    assert!(f.lookup(&id).await.is_err());
    assert_eq!(index_keys(&f).await, Vec::<String>::new());
}

/// A token revoked while the engine refuses to revoke one of its leases goes; the lease stays,
/// with its retry stored and no link to the token, and is revoked once the engine works.
#[tokio::test]
async fn a_token_revoked_while_its_leases_engine_refuses_goes_and_the_lease_is_retried() {
    let (f, child, id) = child_with_lease("hal").await;
    f.log.fail.store(true, Ordering::SeqCst);
    f.call(Operation::Update, "auth/token/revoke-self", json!({}), &child).await.expect("revoke");
    let me = f.call(Operation::Read, "auth/token/lookup-self", json!({}), &child).await;
    assert!(matches!(me, Err(Error::PermissionDenied)), "{me:?}");
    let l = f.lookup(&id).await.expect("the lease stays");
    assert!(l["revoke_error"].as_str().expect("error").contains("database is down"));
    assert!(!index_keys(&f).await.iter().any(|k| k.starts_with("token/")), "no link left");
    f.log.fail.store(false, Ordering::SeqCst);
    eventually("the retry revoked it", async || f.log.revoked() == ["hal"]).await;
    assert_eq!(index_keys(&f).await, Vec::<String>::new());
}

/// A token store of an earlier activation (its expiration manager dropped at seal) revokes no
/// token: it would take the token and leave its leases. `initialize` makes and drops such a
/// store, and the task it started to finish interrupted revocations may run after the next
/// unseal.
#[tokio::test]
async fn a_token_store_of_an_earlier_activation_revokes_no_token_without_its_leases() {
    let (f, child, id) = child_with_lease("gus").await;
    let earlier = f.core.active().expect("unsealed").tokens.clone();
    f.core.seal().await.expect("seal");
    f.core.unseal_with(&f.keys).await.expect("unseal");
    let r = earlier.revoke_tree(&earlier.id_of(&child)).await;
    assert!(matches!(r, Err(Error::Sealed)), "{r:?}");
    assert!(f.lookup(&id).await.is_ok(), "the lease stays");
    // Nor did it mark the token, which this activation's cache would still serve.
    let me = f.call(Operation::Read, "auth/token/lookup-self", json!({}), &child).await;
    assert!(me.is_ok(), "{me:?}");
    let marked = f.storage.list("sys/token/revoking/").await.expect("list");
    assert_eq!(marked, Vec::<String>::new());
    // The store of this activation revokes both.
    f.call(Operation::Update, "auth/token/revoke", json!({"token": child}), &f.root)
        .await
        .expect("revoke");
    assert_eq!(f.log.revoked(), ["gus"]);
    assert!(f.lookup(&id).await.is_err());
}

/// What else happens while the engine makes the secret.
#[derive(Clone, Copy, PartialEq)]
enum Meanwhile {
    Nothing,
    /// The engine is told to refuse revocations.
    EngineRefuses,
    /// The mount is removed.
    Unmounted,
}

/// A child token asks for `db/creds/slow`; while the engine makes it, the token is marked as
/// being revoked (a revocation's first step, before it lists the token's leases, of which it
/// has none yet), and `meanwhile` happens; the request's answer.
async fn secret_made_while_its_token_is_marked(
    f: &Fixture,
    meanwhile: Meanwhile,
) -> Result<Response> {
    let child = f.child_token().await;
    let entered = f.log.entered.notified();
    let core = f.core.clone();
    let token = child.clone();
    let request = tokio::spawn(async move {
        let data = crate::logical::into_map(json!({"ttl": "60"}));
        core.handle(
            Request::new(Operation::Read, "db/creds/slow").with_data(data).with_token(&token),
        )
        .await
    });
    entered.await;
    let tokens = f.core.active().expect("unsealed").tokens.clone();
    tokens.mark_revoking(&tokens.id_of(&child)).await.expect("mark");
    f.log.fail.store(meanwhile == Meanwhile::EngineRefuses, Ordering::SeqCst);
    if meanwhile == Meanwhile::Unmounted {
        f.call(Operation::Delete, "sys/mounts/db", json!({}), &f.root).await.expect("unmount");
    }
    f.log.resume.notify_one();
    request.await.expect("task")
}

/// A token whose revocation began while one of its secrets was being made: the revocation
/// marked it and listed its leases before that secret's lease was stored, so it cannot take
/// that lease. The lease is taken back and the request refused (the lease outlived the token).
#[tokio::test]
async fn a_secret_made_while_its_token_is_being_revoked_is_taken_back() {
    let f = fixture().await;
    let answer = secret_made_while_its_token_is_marked(&f, Meanwhile::Nothing).await;
    assert!(matches!(answer, Err(Error::PermissionDenied)), "{answer:?}");
    // Revoked once, by the lease taken back; the request's refusal does not revoke it again.
    assert_eq!(f.log.revoked(), ["slow"], "the credential made meanwhile is revoked once");
    let left = f.call(Operation::List, "sys/leases/lookup/db/creds/slow", json!({}), &f.root).await;
    assert!(matches!(left, Err(Error::NotFound)), "no lease is left: {left:?}");
}

/// The same race with the engine refusing the revocation: the lease taken back stays with its
/// retry stored (as every lease whose engine refuses), the request's refusal does not call the
/// engine a second time, and the retry revokes it once the engine works again.
#[tokio::test]
async fn a_secret_taken_back_while_its_engine_refuses_stays_with_its_lease_until_revoked() {
    let f = fixture().await;
    let answer = secret_made_while_its_token_is_marked(&f, Meanwhile::EngineRefuses).await;
    assert!(matches!(answer, Err(Error::PermissionDenied)), "{answer:?}");
    assert_eq!(f.log.undo_calls.load(Ordering::SeqCst), 0, "the lease's revocation only");
    let kept = f.call(Operation::List, "sys/leases/lookup/db/creds/slow", json!({}), &f.root).await;
    let ids = kept.expect("the lease is kept").data.expect("data")["keys"].clone();
    let id = format!("db/creds/slow/{}", ids[0].as_str().expect("an id"));
    assert!(f.lookup(&id).await.expect("lookup").get("revoke_attempts").is_some());
    f.log.fail.store(false, Ordering::SeqCst);
    eventually("the retry revoked it", async || f.log.revoked() == ["slow"]).await;
    assert!(f.lookup(&id).await.is_err(), "and the lease is gone");
}

/// The same race with the mount removed meanwhile: no retry of the lease could reach the
/// engine, so the request's refusal revokes the secret through the engine that made it.
#[tokio::test]
async fn a_secret_taken_back_after_its_mount_was_removed_is_revoked_by_the_request() {
    let f = fixture().await;
    let answer = secret_made_while_its_token_is_marked(&f, Meanwhile::Unmounted).await;
    assert!(matches!(answer, Err(Error::PermissionDenied)), "{answer:?}");
    assert_eq!(f.log.revoked(), ["slow"], "the credential made meanwhile is revoked");
    assert_eq!(f.log.undo_calls.load(Ordering::SeqCst), 1, "by the request's refusal");
}

#[tokio::test]
async fn revoke_prefix_takes_every_lease_below_and_revoke_force_removes_failing_ones() {
    let f = fixture().await;
    for u in ["p1", "p2"] {
        f.creds(u, 60, &f.root).await;
        f.creds(u, 60, &f.root).await;
    }
    let other = f.creds("q", 60, &f.root).await;
    f.call(Operation::Update, "sys/leases/revoke-prefix/db/creds/p1", json!({}), &f.root)
        .await
        .expect("revoke-prefix");
    assert_eq!(f.log.revoked(), ["p1", "p1"]);

    f.log.fail.store(true, Ordering::SeqCst);
    let e = f.call(Operation::Update, "sys/leases/revoke-prefix/db/", json!({}), &f.root).await;
    assert!(e.is_err(), "a failing engine fails revoke-prefix");
    assert!(f.lookup(&other).await.is_ok(), "and the lease stays");
    f.call(Operation::Update, "sys/leases/revoke-force/db/", json!({}), &f.root)
        .await
        .expect("revoke-force");
    assert!(f.lookup(&other).await.is_err(), "forced out");
    let none = f.call(Operation::List, "sys/leases/lookup/db/", json!({}), &f.root).await;
    assert!(matches!(none, Err(Error::NotFound)), "{none:?}");
}

#[tokio::test]
async fn revoke_prefix_and_lease_lookup_need_sudo() {
    let f = fixture().await;
    f.call(
        Operation::Update,
        "sys/policies/acl/leases",
        json!({"policy": "path \"sys/leases/*\" { capabilities = [\"update\", \"list\"] }"}),
        &f.root,
    )
    .await
    .expect("policy");
    let t = f
        .call(Operation::Update, "auth/token/create", json!({"policies": ["leases"]}), &f.root)
        .await
        .expect("token")
        .auth
        .expect("auth")
        .client_token
        .expose()
        .to_owned();
    let id = f.creds("s", 60, &f.root).await;
    for path in ["sys/leases/revoke-prefix/db/", "sys/leases/revoke-force/db/"] {
        let e = f.call(Operation::Update, path, json!({}), &t).await;
        assert!(matches!(e, Err(Error::PermissionDenied)), "{path}: {e:?}");
    }
    let e = f.call(Operation::List, "sys/leases/lookup/db/", json!({}), &t).await;
    assert!(matches!(e, Err(Error::PermissionDenied)), "{e:?}");
    // Lookup and renew by id are plain updates.
    f.call(Operation::Update, "sys/leases/lookup", json!({"lease_id": id}), &t)
        .await
        .expect("lookup");
}

#[tokio::test]
async fn leases_survive_a_restart_and_only_those_due_soon_are_loaded() {
    let mut f = fixture().await;
    let soon = f.creds("soon", 2, &f.root).await;
    let mut later = Vec::new();
    for i in 0..20 {
        later.push(f.creds(&format!("later{i}"), 3600, &f.root).await);
    }
    f.restart().await;
    let active = f.core.active().expect("unsealed");
    let in_memory = active.leases.queue.lock().expect("queue").set.len();
    // The root token never expires; the 20 hour-long leases wait in storage.
    assert_eq!(in_memory, 1, "only the lease due soon is read at unseal");
    assert!(f.lookup(&later[7]).await.is_ok());
    eventually("the lease due soon expired after the restart", async || {
        f.log.revoked() == ["soon"]
    })
    .await;
    assert!(f.lookup(&soon).await.is_err());
}

/// Storage that counts folder scans: reading one expiry bucket is one.
struct CountingScans {
    inner: Arc<MemoryBackend>,
    scans: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl Backend for CountingScans {
    async fn get(&self, key: &str) -> coffer_storage::Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> coffer_storage::Result<()> {
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str) -> coffer_storage::Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> coffer_storage::Result<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> coffer_storage::Result<Vec<String>> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        self.inner.scan(prefix, after, limit).await
    }
    async fn batch(&self, ops: Vec<coffer_storage::Op>) -> coffer_storage::Result<()> {
        self.inner.batch(ops).await
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

/// Unseal reads the expiry index from the stored low-water mark; after a long time stopped it
/// reads the buckets that hold entries, not every minute since, and what fell due meanwhile is
/// revoked.
#[tokio::test]
async fn unseal_after_a_long_stop_reads_only_the_buckets_with_entries_and_revokes_what_fell_due() {
    let f = fixture().await;
    f.creds("overdue", 2, &f.root).await;
    let mut later = Vec::new();
    for i in 0..3 {
        later.push(f.creds(&format!("later{i}"), 3600, &f.root).await);
    }
    f.core.seal().await.expect("seal");
    // As if the server had last run 100,000 buckets ago: the mark written then, far below.
    let barrier = Arc::new(coffer_barrier::Barrier::new(f.storage.clone()));
    barrier.unseal_with_shares(&f.keys).await.expect("barrier");
    let low = index::bucket_of(crate::time::now_unix()) - 100_000;
    let expire = coffer_barrier::View::new(barrier.clone(), "sys/expire/");
    expire.put("low", low.to_string().as_bytes()).await.expect("mark");
    barrier.seal();

    let counting = Arc::new(CountingScans {
        inner: f.storage.clone(),
        scans: std::sync::atomic::AtomicU64::new(0),
    });
    let core = Core::new(counting.clone(), registry(&f.log), CoreConfig::default());
    core.unseal_with(&f.keys).await.expect("unseal");
    let scans = counting.scans.load(Ordering::SeqCst);
    assert!(scans < 100, "{scans} scans at unseal: one per bucket since the mark");
    eventually("the lease that fell due while stopped is revoked", async || {
        f.log.revoked() == ["overdue"]
    })
    .await;
    let r = core
        .handle(
            Request::new(Operation::Update, "sys/leases/lookup")
                .with_data(crate::logical::into_map(json!({"lease_id": later[1]})))
                .with_token(&f.root),
        )
        .await;
    assert!(r.is_ok(), "a lease due later is still there");
}

#[tokio::test]
async fn tokens_expire_in_the_background_with_their_leases() {
    let f = fixture().await;
    let t = f
        .call(Operation::Update, "auth/token/create", json!({"ttl": "1s"}), &f.root)
        .await
        .expect("token")
        .auth
        .expect("auth")
        .client_token
        .expose()
        .to_owned();
    let lease = f.creds("frank", 3600, &t).await;
    let active = f.core.active().expect("unsealed");
    let id = active.tokens.id_of(&t);
    eventually("the token was revoked without being presented", async || {
        active.tokens.get_entry(&id).await.expect("entry").is_none()
    })
    .await;
    assert_eq!(f.log.revoked(), ["frank"]);
    assert!(f.lookup(&lease).await.is_err());
}

#[tokio::test]
async fn token_leases_are_looked_up_and_revoked_by_lease_id_but_not_renewed_there() {
    let f = fixture().await;
    let t = f
        .call(Operation::Update, "auth/token/create", json!({"ttl": "1h"}), &f.root)
        .await
        .expect("token")
        .auth
        .expect("auth")
        .client_token
        .expose()
        .to_owned();
    let id = f.core.active().expect("unsealed").tokens.id_of(&t);
    let listed = f
        .call(Operation::List, "sys/leases/lookup/auth/token/create/", json!({}), &f.root)
        .await
        .expect("list");
    assert_eq!(listed.data.expect("data")["keys"], json!([id]));
    let lease_id = format!("auth/token/create/{id}");
    let l = f.lookup(&lease_id).await.expect("lookup");
    assert!(l["ttl"].as_u64().expect("ttl") > 3000);
    // As in Vault, a token renews through auth/token/renew*, not here.
    let e = f
        .call(Operation::Update, "sys/leases/renew", json!({"lease_id": lease_id}), &f.root)
        .await
        .expect_err("token lease renewal");
    assert!(e.to_string().contains("tokens cannot be renewed through this endpoint"), "{e}");
    f.call(Operation::Update, "sys/leases/revoke-prefix/auth/token/", json!({}), &f.root)
        .await
        .expect("revoke-prefix");
    let e = f.call(Operation::Update, "auth/token/lookup-self", json!({}), &t).await;
    assert!(matches!(e, Err(Error::PermissionDenied)), "{e:?}");
    assert!(f.lookup(&lease_id).await.is_err());
}

#[tokio::test]
async fn tidy_removes_index_entries_that_point_at_nothing() {
    let f = fixture().await;
    let id = f.creds("g", 3600, &f.root).await;
    let active = f.core.active().expect("unsealed");
    // A lease record lost without its index entry (as after an interrupted change).
    active.leases.view.delete(&format!("id/{id}")).await.expect("delete");
    let r = f.call(Operation::Update, "sys/leases/tidy", json!({}), &f.root).await.expect("tidy");
    assert!(r.warnings.is_empty(), "a finished tidy is no warning: {:?}", r.warnings);
    assert_eq!(r.data.expect("data")["dangling_index_entries_removed"], json!(1));
}

#[tokio::test]
async fn a_lease_due_beyond_the_horizon_is_loaded_when_its_time_comes_and_revoked() {
    let f = fixture().await;
    let far = 5 * index::BUCKET_SECS;
    let id = f.creds("far", far, &f.root).await;
    let active = f.core.active().expect("unsealed");
    let in_memory = |a: &crate::core::Active| {
        a.leases.queue.lock().expect("queue").set.iter().any(|(_, d)| *d == Due::Lease(id.clone()))
    };
    assert!(!in_memory(&active), "a lease beyond the horizon waits in storage");
    eventually("the far lease was revoked", async || f.log.revoked() == ["far"]).await;
    assert!(f.lookup(&id).await.is_err());
}

#[tokio::test]
async fn an_unreadable_index_entry_neither_keeps_the_server_sealed_nor_hides_the_others() {
    let mut f = fixture().await;
    let id = f.creds("ok", 2, &f.root).await;
    let active = f.core.active().expect("unsealed");
    let now = crate::time::now_unix();
    active
        .leases
        .view
        .put(&format!("{}junk", index::bucket_dir(index::bucket_of(now))), b"not json")
        .await
        .expect("put");
    drop(active);
    f.restart().await;
    eventually("the readable lease expired", async || f.log.revoked() == ["ok"]).await;
    assert!(f.lookup(&id).await.is_err());
}

#[tokio::test]
async fn unmounting_revokes_the_mounts_leases_or_keeps_the_mount_when_it_cannot() {
    let f = fixture().await;
    f.creds("u1", 3600, &f.root).await;
    f.log.fail.store(true, Ordering::SeqCst);
    let e = f.call(Operation::Delete, "sys/mounts/db", json!({}), &f.root).await;
    let e = e.expect_err("unmount with a failing engine");
    assert!(e.to_string().contains("revoking its leases failed"), "{e}");
    // The mount is still there and still works.
    f.creds("u2", 3600, &f.root).await;
    f.log.fail.store(false, Ordering::SeqCst);
    f.call(Operation::Delete, "sys/mounts/db", json!({}), &f.root).await.expect("unmount");
    let mut revoked = f.log.revoked();
    revoked.sort();
    assert_eq!(revoked, ["u1", "u2"]);
    let gone = f.call(Operation::Read, "db/creds/u3", json!({}), &f.root).await;
    assert!(gone.is_err(), "the mount is gone");
}

#[tokio::test]
async fn more_expiries_in_one_bucket_than_memory_holds_are_paged_through_and_all_revoked() {
    let mut f = fixture().await;
    let n = index::MEMORY_LIMIT * 3;
    // Due in the bucket after next, so they are all written before the first falls due.
    for i in 0..n {
        f.creds(&format!("u{i}"), 2 * index::BUCKET_SECS, &f.root).await;
    }
    {
        let active = f.core.active().expect("unsealed");
        let q = active.leases.queue.lock().expect("queue");
        assert!(q.set.len() <= index::MEMORY_LIMIT, "{} entries held", q.set.len());
        assert!(!q.streamed.is_empty(), "the crowded bucket is streamed");
    }
    // And from storage at unseal: the bucket is found too large and streamed, never read whole.
    f.restart().await;
    {
        let active = f.core.active().expect("unsealed");
        let q = active.leases.queue.lock().expect("queue");
        assert!(q.set.len() <= index::MEMORY_LIMIT, "{} entries held", q.set.len());
        assert!(!q.streamed.is_empty(), "streamed after the restart");
    }
    eventually("every lease of the crowded bucket was revoked", async || {
        f.log.revoked().len() == n
    })
    .await;
    let mut revoked = f.log.revoked();
    revoked.sort();
    revoked.dedup();
    assert_eq!(revoked.len(), n, "each lease revoked once");
    eventually("the streamed bucket is done with", async || {
        let active = f.core.active().expect("unsealed");
        active.leases.queue.lock().expect("queue").streamed.is_empty()
    })
    .await;
}

#[tokio::test]
async fn revoke_prefix_pages_through_more_leases_than_one_page() {
    let f = fixture().await;
    let n = super::PAGE * 2 + 7;
    for i in 0..n {
        f.creds(&format!("many/{i}"), 3600, &f.root).await;
    }
    let keep = f.creds("other", 3600, &f.root).await;
    f.call(Operation::Update, "sys/leases/revoke-prefix/db/creds/many", json!({}), &f.root)
        .await
        .expect("revoke-prefix");
    assert_eq!(f.log.revoked().len(), n);
    assert!(f.lookup(&keep).await.is_ok(), "a lease outside the prefix stays");
}
