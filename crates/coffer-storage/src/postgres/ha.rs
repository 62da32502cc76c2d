//! The PostgreSQL HA lock (`ha_enabled = "true"`): one row, key `leader`, in the `ha_table`,
//! with its holder, its epoch and its expiry; every time is PostgreSQL's `clock_timestamp()`, so
//! the nodes' clocks never decide who leads. The lock is taken, renewed and released on a
//! connection of its own (a one-connection pool beside the request pool): a saturated request
//! pool cannot delay a renewal.
//!
//! Guarantees: the row is taken only when it expired, was released, or its holder's database
//! session is gone (`pg_stat_activity` no longer lists the holder's backend; a session this
//! role cannot see is taken as alive, so the shortcut never frees a lock by mistake); each
//! taking adds one to the epoch. The fencing check each write makes ([`FENCE_SQL`]) takes a
//! `FOR SHARE` lock on the row, so a taking waits for writes already checked to commit, and
//! writes checked after it see the new epoch and are refused: a deposed node's write either
//! committed before the new leader took over, or fails.
//!
//! Not done: a renewal waits for writes in flight (their `FOR SHARE` lock); they are short,
//! and the election loop times a renewal out well before the lock's expiry. On engines without
//! `pg_stat_activity` the session shortcut is absent and a crashed leader is replaced at expiry.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::Pool;

use crate::ha::{Advert, Fence, HaLock, LeaderInfo, NodeInfo};
use crate::{Error, Result};

/// Default `ha_table`.
pub const DEFAULT_HA_TABLE: &str = "coffer_ha_locks";
/// Default lock TTL (Vault's PostgreSQL lock: 15 s).
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(15);
/// The lock TTLs accepted for `ha_lock_ttl`.
pub const LOCK_TTL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(2)..=Duration::from_secs(300);

const LEADER_KEY: &str = "leader";

/// `ha_standby_max_staleness`'s default: how old a standby's proof of freshness may be when
/// it serves a read itself.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_millis(500);
/// The values accepted for `ha_standby_max_staleness`.
pub const MAX_STALENESS_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(200)..=Duration::from_secs(60);

/// HA options of the PostgreSQL backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaOptions {
    pub table: String,
    pub lock_ttl: Duration,
    /// Standbys serve reads themselves, from a replica no older than this (`None`:
    /// `ha_standby_reads = false`, standbys forward every request).
    pub standby_max_staleness: Option<Duration>,
}

impl Default for HaOptions {
    fn default() -> Self {
        Self {
            table: DEFAULT_HA_TABLE.to_owned(),
            lock_ttl: DEFAULT_LOCK_TTL,
            standby_max_staleness: Some(DEFAULT_MAX_STALENESS),
        }
    }
}

/// The check a fenced write makes first, in its own transaction: `$1` is the writer's epoch.
/// No row (nobody ever led) lets epoch 0 write, which is how `sys/init` works before any node
/// leads.
pub(super) fn fence_sql(ha_table: &str) -> String {
    format!(
        "SELECT coalesce((SELECT epoch FROM {ha_table} WHERE key = '{LEADER_KEY}' FOR SHARE), 0) = $1"
    )
}

/// The lock on its own connection.
pub struct PgHaLock {
    pool: Pool,
    node_id: String,
    ttl: Duration,
    fence: std::sync::Arc<Fence>,
    target: String,
    sql: HaSql,
}

struct HaSql {
    acquire: String,
    renew: String,
    release: String,
    leader: String,
    heartbeat: String,
    nodes: String,
}

/// True when the row's holder session is provably gone.
fn holder_gone(row: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = {row}.holder_pid \
         AND (a.backend_start IS NULL OR {row}.holder_start IS NULL OR a.backend_start = {row}.holder_start))"
    )
}

impl HaSql {
    fn new(t: &str) -> Self {
        let me = "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())";
        Self {
            acquire: format!(
                "INSERT INTO {t} AS l (key, holder, epoch, expires_at, holder_pid, holder_start, api_addr, cluster_addr, hostname, acquired_at)
                 VALUES ('{LEADER_KEY}', $1, 1, clock_timestamp() + $2::float8 * interval '1 second', pg_backend_pid(), {me}, $3, $4, $5, clock_timestamp())
                 ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, epoch = l.epoch + 1,
                     expires_at = excluded.expires_at, holder_pid = excluded.holder_pid,
                     holder_start = excluded.holder_start, api_addr = excluded.api_addr,
                     cluster_addr = excluded.cluster_addr, hostname = excluded.hostname,
                     acquired_at = excluded.acquired_at
                 WHERE l.expires_at <= clock_timestamp() OR {}
                 RETURNING epoch",
                holder_gone("l")
            ),
            renew: format!(
                "UPDATE {t} SET expires_at = clock_timestamp() + $3::float8 * interval '1 second'
                 WHERE key = '{LEADER_KEY}' AND holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()
                   AND holder_pid = pg_backend_pid()"
            ),
            release: format!(
                "UPDATE {t} SET expires_at = clock_timestamp() - interval '1 second'
                 WHERE key = '{LEADER_KEY}' AND holder = $1 AND epoch = $2"
            ),
            leader: format!(
                "SELECT holder, epoch, api_addr, cluster_addr, hostname,
                        extract(epoch FROM acquired_at)::float8,
                        expires_at > clock_timestamp() AND NOT {}
                 FROM {t} l WHERE key = '{LEADER_KEY}'",
                holder_gone("l")
            ),
            heartbeat: format!(
                "INSERT INTO {t} (key, holder, epoch, expires_at, api_addr, cluster_addr, hostname, acquired_at)
                 VALUES ('node/' || $1, $1, 0, clock_timestamp(), $2, $3, $4, clock_timestamp())
                 ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at, api_addr = excluded.api_addr,
                     cluster_addr = excluded.cluster_addr, hostname = excluded.hostname"
            ),
            nodes: format!(
                "SELECT holder, api_addr, cluster_addr, hostname, extract(epoch FROM expires_at)::float8
                 FROM {t} WHERE key LIKE 'node/%' AND expires_at > clock_timestamp() - $1::float8 * interval '1 second'
                 ORDER BY key"
            ),
        }
    }
}

impl PgHaLock {
    pub(super) async fn open(
        pool: Pool,
        table: &str,
        name: &str,
        ttl: Duration,
        fence: std::sync::Arc<Fence>,
        target: String,
    ) -> Result<Self> {
        let lock = Self { pool, node_id: random_id(), ttl, fence, target, sql: HaSql::new(table) };
        let c = lock.client().await?;
        let exists: bool = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(|e| lock.error(&format!("cannot look up table {name}"), &e))?
            .get(0);
        if !exists
            && let Err(e) = c
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                         key          text COLLATE \"C\" PRIMARY KEY,
                         holder       text NOT NULL,
                         epoch        bigint NOT NULL,
                         expires_at   timestamptz NOT NULL,
                         holder_pid   integer,
                         holder_start timestamptz,
                         api_addr     text NOT NULL DEFAULT '',
                         cluster_addr text NOT NULL DEFAULT '',
                         hostname     text NOT NULL DEFAULT '',
                         acquired_at  timestamptz NOT NULL
                     )"
                ))
                .await
        {
            let raced = e.code().is_some_and(|c| {
                *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                    || *c == tokio_postgres::error::SqlState::DUPLICATE_TABLE
            });
            if !raced {
                return Err(lock.error(&format!("cannot create table {name}"), &e));
            }
        }
        // A table of another shape (Vault's own vault_ha_locks, say) would fail later, at the
        // first election: say so now.
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0
                 AND NOT attisdropped AND attname = ANY(ARRAY['key','holder','epoch','expires_at','holder_pid','holder_start','api_addr','cluster_addr','hostname','acquired_at'])",
                &[&table],
            )
            .await
            .map_err(|e| lock.error(&format!("cannot inspect table {name}"), &e))?
            .get(0);
        if n != 10 {
            return Err(Error::Backend(format!(
                "postgresql {}: ha_table {name} exists but is not Coffer's HA lock table (Vault's vault_ha_locks has another shape): choose another ha_table",
                lock.target
            )));
        }
        Ok(lock)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| {
            Error::Backend(format!(
                "postgresql {}: HA lock connection: {}",
                self.target,
                coffer_pg::describe_pool(&e)
            ))
        })
    }

    fn error(&self, what: &str, e: &tokio_postgres::Error) -> Error {
        Error::Backend(format!(
            "postgresql {}: HA lock: {what}: {}",
            self.target,
            coffer_pg::describe(e)
        ))
    }
}

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // Unique per process start: the pid, the start time, and the std hasher's random keys.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    format!("{:016x}-{:x}", h.finish(), std::process::id())
}

fn from_unix(secs: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
}

#[async_trait]
impl HaLock for PgHaLock {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn try_acquire(&self, advert: &Advert) -> Result<Option<i64>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &self.sql.acquire,
                &[
                    &self.node_id,
                    &self.ttl.as_secs_f64(),
                    &advert.api_addr,
                    &advert.cluster_addr,
                    &advert.hostname,
                ],
            )
            .await
            .map_err(|e| self.error("acquire", &e))?;
        let epoch = row.map(|r| r.get::<_, i64>(0));
        if let Some(e) = epoch {
            self.fence.hold(e);
        }
        Ok(epoch)
    }

    async fn renew(&self, epoch: i64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(&self.sql.renew, &[&self.node_id, &epoch, &self.ttl.as_secs_f64()])
            .await
            .map_err(|e| self.error("renew", &e))?;
        Ok(n == 1)
    }

    async fn release(&self, epoch: i64) -> Result<()> {
        self.fence.clear();
        let c = self.client().await?;
        c.execute(&self.sql.release, &[&self.node_id, &epoch])
            .await
            .map_err(|e| self.error("release", &e))?;
        Ok(())
    }

    fn step_down_now(&self) {
        self.fence.clear();
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let c = self.client().await?;
        let row = c.query_opt(&self.sql.leader, &[]).await.map_err(|e| self.error("leader", &e))?;
        Ok(row.map(|r| LeaderInfo {
            node_id: r.get(0),
            epoch: r.get(1),
            advert: Advert { api_addr: r.get(2), cluster_addr: r.get(3), hostname: r.get(4) },
            acquired_at: from_unix(r.get(5)),
            live: r.get(6),
        }))
    }

    async fn heartbeat(&self, advert: &Advert) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &self.sql.heartbeat,
            &[&self.node_id, &advert.api_addr, &advert.cluster_addr, &advert.hostname],
        )
        .await
        .map_err(|e| self.error("heartbeat", &e))?;
        Ok(())
    }

    async fn nodes(&self, within: Duration) -> Result<Vec<NodeInfo>> {
        let c = self.client().await?;
        let rows = c
            .query(&self.sql.nodes, &[&within.as_secs_f64()])
            .await
            .map_err(|e| self.error("nodes", &e))?;
        Ok(rows
            .iter()
            .map(|r| NodeInfo {
                node_id: r.get(0),
                advert: Advert { api_addr: r.get(1), cluster_addr: r.get(2), hostname: r.get(3) },
                last_seen: from_unix(r.get(4)),
            })
            .collect())
    }
}
