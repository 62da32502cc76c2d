//! `static-roles/:name`, `static-creds/:name` and `rotate-role/:name`: existing database users
//! whose passwords Coffer owns and rotates, on a period or a cron schedule.
//!
//! Guarantees: creating a static role stores it with the new password as pending, then changes
//! it in PostgreSQL, then stores it final; a creation that PostgreSQL refused removes the record
//! again, one whose outcome is unknown (or a crash) is finished by the rotation task, so a role
//! that exists has a password Coffer knows or is about to settle; each rotation writes the new password as
//! pending before `ALTER ROLE` and promotes it after, so a crash in between is finished by the
//! next pass (the pending password is set again, which is idempotent); the schedule and the
//! last rotation are stored, so they survive restarts; a failed rotation is retried with
//! backoff (10 s doubling to 5 min) and logged without the password.
//! Not guaranteed: rotation at the exact second (the task ticks once a second); with a
//! `rotation_window`, a schedule time missed by more than the window is skipped, as in Vault.

use coffer_core::framework::{Default, Field, Req};
use coffer_core::record;
use coffer_core::time::rfc3339;
use coffer_core::{BatchOp, Error, Response, Result, SecretString, View};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::cron::Schedule;
use super::postgres::DEFAULT_ROTATE;
use super::roles::{apply_credential_fields, known};
use super::template::Vars;
use super::{Database, check_name, into_map, statements};
use coffer_core::time::now_unix;

/// Vault's queue tick: no period shorter than this.
const MIN_PERIOD: u64 = 5;
/// Vault's minimum `rotation_window`.
const MIN_WINDOW: u64 = 3600;
const RETRY_FIRST: u64 = 10;
const RETRY_MAX: u64 = 300;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct StaticRole {
    pub(crate) db_name: String,
    username: String,
    password: SecretString,
    pub(crate) pending_password: Option<SecretString>,
    /// Unix seconds of the last successful rotation.
    last_vault_rotation: u64,
    rotation_period: u64,
    rotation_schedule: String,
    rotation_window: u64,
    rotation_statements: Vec<String>,
    credential_type: String,
    /// Unix seconds when the next rotation is due.
    next_rotation: u64,
    /// Consecutive failed rotations, for backoff.
    failures: u32,
}

coffer_core::record!(StaticRole, "database static role", 1);

pub(crate) const FIELDS: &[Field] = &[
    Field::str("db_name", "The database config of the account."),
    Field::str(
        "username",
        "The existing database user whose password Coffer rotates; fixed at creation.",
    ),
    Field::duration(
        "rotation_period",
        "Rotate every this long (at least 5s); exclusive with rotation_schedule.",
    ),
    Field::str("rotation_schedule", "Cron schedule of rotations; exclusive with rotation_period."),
    Field::duration(
        "rotation_window",
        "How long after a scheduled time a rotation may still start.",
    ),
    Field::str_list("rotation_statements", "SQL that sets the password; empty: Coffer's default."),
    Field::str("credential_type", "Only `password`.").default(Default::Str("password")),
    Field::map("credential_config", "Not supported: set password_policy on the config."),
];

/// A failed password change, and whether the database may have taken the new password.
struct SetFailure {
    error: Error,
    maybe_set: bool,
}

impl StaticRole {
    /// When the rotation after one at `at` is due.
    fn next_after(&self, at: u64) -> u64 {
        if self.rotation_period > 0 {
            return at + self.rotation_period;
        }
        match Schedule::parse(&self.rotation_schedule).map(|s| s.next_after(at)) {
            Ok(Some(t)) => t,
            // Validated at write; a schedule with no time in five years waits a year.
            _ => at + 365 * 86_400,
        }
    }

    fn schedule_json(&self, m: &mut serde_json::Map<String, serde_json::Value>) {
        if self.rotation_period > 0 {
            m.insert("rotation_period".into(), json!(self.rotation_period));
        } else {
            m.insert("rotation_schedule".into(), json!(self.rotation_schedule));
            if self.rotation_window > 0 {
                m.insert("rotation_window".into(), json!(self.rotation_window));
            }
        }
    }
}

impl StaticRole {
    /// The password the database has now.
    pub(crate) fn password(&self) -> &SecretString {
        &self.password
    }
}

impl Database {
    pub(crate) async fn static_role(&self, name: &str) -> Result<Option<StaticRole>> {
        record::load(&self.view, &format!("static-role/{name}")).await
    }

    async fn store_static(&self, name: &str, r: &StaticRole) -> Result<()> {
        self.store_static_live(name, r, None).await
    }

    /// [`Self::store_static`]; with `replaced` (the password until now), the role's password
    /// just became the live one: it goes into the liveness index, and the old one out, in the
    /// same batch.
    async fn store_static_live(
        &self,
        name: &str,
        r: &StaticRole,
        replaced: Option<&SecretString>,
    ) -> Result<()> {
        let raw = record::encode(r)?;
        let key = format!("static-role/{name}");
        match (&self.leaks, replaced) {
            (Some(l), Some(old)) => {
                let live = l.database_static(r.password.expose(), name).await?;
                let mut ops = vec![live.op()];
                if !old.is_empty() && old != &r.password {
                    ops.push(l.database_static_removal(old.expose(), name).await?);
                }
                View::batch_across(vec![
                    (&self.view, vec![BatchOp::Put(key, &raw)]),
                    (l.view(), ops),
                ])
                .await?
            }
            _ => self.view.put(&key, &raw).await?,
        }
        if let Some(due) = self.due.lock().await.as_mut() {
            due.insert(name.to_owned(), r.next_rotation);
        }
        Ok(())
    }

    pub(crate) async fn write_static_role(&self, req: &Req<'_>) -> Result<Response> {
        let name = req.capture("name");
        check_name("static role", name)?;
        let f = req.fields();
        let _s = self.static_lock(name).await;
        let _g = self.lock.lock().await;
        if self.role(name).await?.is_some() {
            return Err(Error::invalid("Role and Static Role names must be unique"));
        }
        let existing = self.static_role(name).await?;
        let creating = existing.is_none();
        let mut r = existing.unwrap_or_else(|| StaticRole {
            credential_type: "password".into(),
            ..StaticRole::default()
        });
        if let Some(d) = f.str("db_name")? {
            r.db_name = d;
        }
        if r.db_name.is_empty() {
            return Err(Error::invalid("database name is a required field"));
        }
        self.config_for_role(&r.db_name, name).await?;
        match f.str("username")? {
            Some(u) if !creating && u != r.username => {
                return Err(Error::invalid("cannot update static account username"));
            }
            Some(u) if !u.is_empty() => r.username = u,
            _ if creating => {
                return Err(Error::invalid(
                    "username is a required field to create a static account",
                ));
            }
            _ => {}
        }
        let period = f.secs("rotation_period")?;
        let schedule = f.str("rotation_schedule")?.filter(|s| !s.is_empty());
        let window = f.secs("rotation_window")?;
        match (period, &schedule) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "mutually exclusive fields rotation_period and rotation_schedule were both \
                     specified; only one of them can be provided",
                ));
            }
            (Some(p), None) => {
                if p < MIN_PERIOD {
                    return Err(Error::invalid(format!(
                        "rotation_period must be {MIN_PERIOD} seconds or more"
                    )));
                }
                r.rotation_period = p;
                r.rotation_schedule.clear();
                r.rotation_window = 0;
            }
            (None, Some(s)) => {
                let parsed = Schedule::parse(s)?;
                if parsed.next_after(now_unix()).is_none() {
                    return Err(Error::invalid(format!(
                        "rotation_schedule {s:?} never fires within five years"
                    )));
                }
                r.rotation_schedule = s.clone();
                r.rotation_period = 0;
            }
            (None, None) if creating => {
                return Err(Error::invalid(
                    "one of rotation_schedule or rotation_period must be provided to create a \
                     static account",
                ));
            }
            (None, None) => {}
        }
        if let Some(w) = window {
            if r.rotation_schedule.is_empty() {
                return Err(Error::invalid(
                    "rotation_window is invalid with use of rotation_period",
                ));
            }
            if w != 0 && w < MIN_WINDOW {
                return Err(Error::invalid(format!(
                    "rotation_window must be {MIN_WINDOW} seconds or more"
                )));
            }
            r.rotation_window = w;
        }
        if let Some(s) = statements(req.data, "rotation_statements")? {
            r.rotation_statements = s;
        }
        apply_credential_fields(&f, &mut r.credential_type)?;
        if creating {
            // The record goes to storage first, with the password it is about to get as
            // pending: a crash (or a failure whose outcome is unknown) from here on is
            // finished by the rotation task rather than losing the password.
            let cfg = self.must_config(&r.db_name).await?;
            let pw = self.passwords.generate(&cfg.password_policy).await?;
            r.pending_password = Some(SecretString::from(pw.expose()));
            r.next_rotation = 0;
            self.store_static(name, &r).await?;
            drop(_g);
            let exists = match self.conn(&r.db_name).await {
                Ok(conn) => conn.role_exists(&r.username).await,
                Err(e) => Err(e),
            };
            match exists {
                Ok(true) => {}
                Ok(false) => {
                    self.forget_static(name).await?;
                    return Err(Error::invalid(format!(
                        "cannot create static role: database user {:?} does not exist",
                        r.username
                    )));
                }
                Err(e) => {
                    self.forget_static(name).await?;
                    return Err(e);
                }
            }
            if let Err(f) = self.set_password(name, &mut r).await {
                if !f.maybe_set {
                    // Nothing changed in the database: the role is not created.
                    self.forget_static(name).await?;
                    return Err(f.error);
                }
                self.note_failure(name, &mut r, &f.error).await?;
                return Err(Error::invalid(format!(
                    "the static role is stored, but whether its password was changed is not \
                     known; the rotation is retried in the background: {}",
                    f.error
                )));
            }
        } else {
            let base = if r.last_vault_rotation > 0 { r.last_vault_rotation } else { now_unix() };
            r.next_rotation = if r.rotation_period > 0 {
                base + r.rotation_period
            } else {
                r.next_after(now_unix())
            };
            self.store_static(name, &r).await?;
        }
        Ok(Response::empty())
    }

    /// Removes static role `name`'s record and its place in the rotation queue.
    /// The role's liveness index entry (its current password's) goes in the same batch.
    async fn forget_static(&self, name: &str) -> Result<()> {
        let key = format!("static-role/{name}");
        let stored = match &self.leaks {
            Some(_) => self.static_role(name).await?,
            None => None,
        };
        match (&self.leaks, stored) {
            (Some(l), Some(r)) if !r.password.is_empty() => {
                let removal = l.database_static_removal(r.password.expose(), name).await?;
                View::batch_across(vec![
                    (&self.view, vec![BatchOp::Delete(key)]),
                    (l.view(), vec![removal]),
                ])
                .await?;
            }
            _ => self.view.delete(&key).await?,
        }
        if let Some(due) = self.due.lock().await.as_mut() {
            due.remove(name);
        }
        Ok(())
    }

    /// Generates a password and sets it in PostgreSQL and in storage: recorded as pending
    /// first, promoted once PostgreSQL took it. A pending password already recorded (an
    /// interrupted rotation or creation) is set again instead of a new one.
    async fn set_password(
        &self,
        name: &str,
        r: &mut StaticRole,
    ) -> std::result::Result<(), SetFailure> {
        let early = |error| SetFailure { error, maybe_set: false };
        let cfg = self.must_config(&r.db_name).await.map_err(early)?;
        let new = match &r.pending_password {
            Some(p) => p.clone(),
            None => SecretString::from(
                self.passwords.generate(&cfg.password_policy).await.map_err(early)?.expose(),
            ),
        };
        // Refused before it is recorded: a pending password is set again at every rotation.
        let in_statements = cfg.statement_password(new.expose()).await.map_err(early)?;
        r.pending_password = Some(new.clone());
        self.store_static(name, r).await.map_err(early)?;
        let stmts = if r.rotation_statements.is_empty() {
            vec![DEFAULT_ROTATE.to_owned()]
        } else {
            r.rotation_statements.clone()
        };
        let conn = self.conn(&r.db_name).await.map_err(early)?;
        conn.try_tx(
            "failed to rotate the static role's password",
            &stmts,
            &Vars { name: &r.username, password: Some(&in_statements), expiration: None },
        )
        .await
        .map_err(|f| SetFailure { error: f.error, maybe_set: f.maybe_committed })?;
        let at = now_unix();
        let old = std::mem::replace(&mut r.password, new);
        r.pending_password = None;
        r.last_vault_rotation = at;
        r.failures = 0;
        r.next_rotation = r.next_after(at);
        // Stays pending on failure, and the next pass sets it again.
        self.store_static_live(name, r, Some(&old))
            .await
            .map_err(|error| SetFailure { error, maybe_set: true })?;
        tracing::info!(role = name, db = r.db_name, "database engine: static role rotated");
        Ok(())
    }

    pub(crate) async fn read_static_role(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let r = self.static_role(name).await?.ok_or(Error::NotFound)?;
        let mut m = into_map(json!({
            "db_name": r.db_name,
            "username": r.username,
            "rotation_statements": r.rotation_statements,
            "credential_type": r.credential_type,
            "last_vault_rotation": rfc3339(r.last_vault_rotation),
        }));
        r.schedule_json(&mut m);
        Ok(Response::data(m))
    }

    pub(crate) async fn delete_static_role(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let _s = self.static_lock(name).await;
        let _g = self.lock.lock().await;
        self.forget_static(name).await?;
        Ok(Response::empty())
    }

    pub(crate) async fn static_creds(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let r = known(self.static_role(name).await?, name)?;
        self.config_for_role(&r.db_name, name).await?;
        let mut m = into_map(json!({
            "username": r.username,
            "password": r.password.expose(),
            "last_vault_rotation": rfc3339(r.last_vault_rotation),
            "ttl": r.next_rotation.saturating_sub(now_unix()),
        }));
        r.schedule_json(&mut m);
        Ok(Response::data(m))
    }

    pub(crate) async fn rotate_role(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        // The role's own lock, not the engine's: the rotation talks to the database.
        let _s = self.static_lock(name).await;
        let mut r = self
            .static_role(name)
            .await?
            .ok_or_else(|| Error::invalid("no static role found for role name"))?;
        if let Err(SetFailure { error: e, .. }) = self.set_password(name, &mut r).await {
            self.note_failure(name, &mut r, &e).await?;
            return Err(Error::invalid(format!(
                "unable to finish rotating credentials; retries will continue in the background \
                 but it is also safe to retry manually: {e}"
            )));
        }
        Ok(Response::empty())
    }

    async fn note_failure(&self, name: &str, r: &mut StaticRole, e: &Error) -> Result<()> {
        r.failures = r.failures.saturating_add(1);
        let wait =
            RETRY_FIRST.saturating_mul(1 << r.failures.min(16).saturating_sub(1)).min(RETRY_MAX);
        r.next_rotation = now_unix() + wait;
        tracing::warn!(
            role = name,
            db = r.db_name,
            failures = r.failures,
            retry_in_secs = wait,
            error = %e,
            "database engine: static role rotation failed"
        );
        self.store_static(name, r).await
    }

    /// One pass of the rotation task: rotates every static role that is due.
    pub(crate) async fn rotate_due(&self) -> Result<()> {
        let mut due_guard = self.due.lock().await;
        if due_guard.is_none() {
            let mut m = std::collections::HashMap::new();
            for name in self.view.list("static-role/").await? {
                if let Some(r) = self.static_role(&name).await? {
                    // An interrupted rotation is finished at once.
                    let at = if r.pending_password.is_some() { 0 } else { r.next_rotation };
                    m.insert(name, at);
                }
            }
            *due_guard = Some(m);
        }
        let t = now_unix();
        let names: Vec<String> = due_guard
            .as_ref()
            .map(|m| m.iter().filter(|(_, at)| **at <= t).map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        drop(due_guard);
        for name in names {
            // The role's own lock, not the engine's: the rotation talks to the database.
            let _s = self.static_lock(&name).await;
            let Some(mut r) = self.static_role(&name).await? else {
                if let Some(m) = self.due.lock().await.as_mut() {
                    m.remove(&name);
                }
                continue;
            };
            let now = now_unix();
            if r.next_rotation > now && r.pending_password.is_none() {
                if let Some(m) = self.due.lock().await.as_mut() {
                    m.insert(name.clone(), r.next_rotation);
                }
                continue;
            }
            // A schedule time missed by more than its window waits for the next one.
            if r.rotation_window > 0
                && r.failures == 0
                && r.pending_password.is_none()
                && now > r.next_rotation + r.rotation_window
            {
                r.next_rotation = r.next_after(now);
                self.store_static(&name, &r).await?;
                continue;
            }
            if let Err(SetFailure { error: e, .. }) = self.set_password(&name, &mut r).await {
                if matches!(e, Error::Sealed) {
                    return Err(e);
                }
                self.note_failure(&name, &mut r, &e).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_rotation_follows_the_period_or_the_schedule() {
        let p = StaticRole { rotation_period: 60, ..StaticRole::default() };
        assert_eq!(p.next_after(1000), 1060);
        let s = StaticRole { rotation_schedule: "0 * * * *".into(), ..StaticRole::default() };
        assert_eq!(s.next_after(1_700_000_000), 1_700_002_800);
    }
}
