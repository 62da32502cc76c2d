//! A keep-alive connection's memo of the last token presented on it and the salted hash the
//! token store keeps that token under, so that a client sending the same token on request after
//! request pays the salted HMAC-SHA256 once per connection instead of once per request (about
//! 6,700 instructions of a KV v2 read's 118,000, counted by `scripts/cost`).
//!
//! Guarantees:
//! - The memo maps a token to its *id* (the HMAC, after the token's order part) only, never to its entry or its rights: every
//!   request still finds the entry by id in the token store, with its expiry, revocation, use
//!   count and bound CIDRs checked as before. A token revoked between two requests on the same
//!   connection is refused on the second.
//! - The token is compared with the presented one in constant time (invariant 7), and is held
//!   in a zeroized buffer that is wiped when another token replaces it and when the connection
//!   ends (the last holder of the memo drops it). It is never printed: `Debug` says only
//!   whether the memo holds something.
//! - An id is only reused by the token store that computed it (each loaded store has its own
//!   instance number), so a store loaded again after a seal and unseal never takes an id from
//!   an earlier one.
//!
//! What holding the token changes (DESIGN.md's invariants): invariant 1 is about storage, logs,
//! audit entries and error messages, and the memo is none of these. In memory, the cleartext
//! token already lives in the connection's read buffer (hyper reuses it, unzeroized, until the
//! next request overwrites it) and in each request for its life; the memo keeps it for the
//! connection's life instead, in a buffer that is wiped. Someone who can read the process's
//! memory also reads the keyring and the salt, and with them every secret, which is more than a
//! token grants. Not done: sharing memos between connections (a process-wide map from tokens to
//! ids would hold every client's token for as long as the server runs).

use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::secret::ct_eq;

/// One connection's memo (see the module's header). Shared by the requests of the connection,
/// which an HTTP/1 connection serves one at a time, so its lock is not contended.
#[derive(Default)]
pub struct TokenMemo {
    last: Mutex<Option<Remembered>>,
}

struct Remembered {
    /// The token store's instance that computed `id`.
    store: u64,
    token: Zeroizing<Vec<u8>>,
    id: Arc<str>,
}

impl std::fmt::Debug for TokenMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.last.lock().map(|l| l.is_some()).unwrap_or(false);
        f.debug_struct("TokenMemo").field("holds_a_token", &held).finish()
    }
}

impl TokenMemo {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `token` in the token store `store`: the remembered one when `token` is the
    /// token remembered for that store, else `hash(token)`, which is then remembered instead.
    /// The hash runs outside the lock.
    pub(crate) fn id_of(
        &self,
        store: u64,
        token: &str,
        hash: impl FnOnce(&str) -> String,
    ) -> Arc<str> {
        if let Ok(last) = self.last.lock()
            && let Some(r) = last.as_ref()
            && r.store == store
            && ct_eq(r.token.as_slice(), token.as_bytes())
        {
            return r.id.clone();
        }
        let id: Arc<str> = hash(token).into();
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Remembered {
                store,
                token: Zeroizing::new(token.as_bytes().to_vec()),
                id: id.clone(),
            });
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn counting(calls: &Cell<u32>) -> impl Fn(&str) -> String + '_ {
        move |t: &str| {
            calls.set(calls.get() + 1);
            format!("id-of-{t}")
        }
    }

    #[test]
    fn the_same_token_on_the_same_store_is_hashed_once() {
        let memo = TokenMemo::new();
        let calls = Cell::new(0);
        assert_eq!(&*memo.id_of(1, "tok-a", counting(&calls)), "id-of-tok-a");
        assert_eq!(&*memo.id_of(1, "tok-a", counting(&calls)), "id-of-tok-a");
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn another_token_or_another_store_is_hashed_again_and_replaces_the_memo() {
        let memo = TokenMemo::new();
        let calls = Cell::new(0);
        memo.id_of(1, "tok-a", counting(&calls));
        assert_eq!(&*memo.id_of(1, "tok-b", counting(&calls)), "id-of-tok-b");
        // A token that differs only in length, or is a prefix of the remembered one, is no match.
        assert_eq!(&*memo.id_of(1, "tok-", counting(&calls)), "id-of-tok-");
        assert_eq!(&*memo.id_of(1, "tok-", counting(&calls)), "id-of-tok-");
        assert_eq!(calls.get(), 3);
        // The same token under a store loaded again is hashed by that store.
        assert_eq!(&*memo.id_of(2, "tok-", counting(&calls)), "id-of-tok-");
        assert_eq!(calls.get(), 4);
        // Only the last token is remembered.
        memo.id_of(2, "tok-a", counting(&calls));
        assert_eq!(calls.get(), 5);
    }

    /// Through the whole pipeline: the memo names the token's id, never its rights, so a
    /// token revoked between two requests on one connection is refused on the second.
    #[tokio::test]
    async fn a_token_revoked_between_two_requests_on_one_connection_is_refused() {
        use serde_json::json;

        use crate::backend::{BackendConfig, LogicalBackend, Registry};
        use crate::logical::{Error, Operation, Request};
        use crate::{Core, CoreConfig};

        use crate::test_support::Nothing;
        let mut registry = Registry::new();
        registry.register_secrets(
            "cubbyhole",
            Arc::new(|_cfg: BackendConfig| Ok(Arc::new(Nothing) as Arc<dyn LogicalBackend>)),
        );
        let backend = Arc::new(coffer_storage::MemoryBackend::new());
        let core = Core::new(backend, registry, CoreConfig::default());
        let root = core.dev_setup(None).await.expect("dev setup").root_token.expose().to_owned();
        let memo = Arc::new(TokenMemo::new());
        let on_conn = |op: Operation, path: &str, body: serde_json::Value, token: &str| {
            let mut req =
                Request::new(op, path).with_data(crate::logical::into_map(body)).with_token(token);
            req.token_memo = Some(memo.clone());
            req
        };
        let made = core
            .handle(on_conn(
                Operation::Update,
                "auth/token/create",
                json!({"policies": ["default"]}),
                &root,
            ))
            .await
            .expect("create");
        let child = made.auth.expect("auth").client_token.expose().to_owned();
        let self_lookup = || on_conn(Operation::Read, "auth/token/lookup-self", json!({}), &child);
        core.handle(self_lookup()).await.expect("a live token is served");
        core.handle(self_lookup()).await.expect("and again, from the memo");
        core.handle(on_conn(
            Operation::Update,
            "auth/token/revoke",
            json!({ "token": child.clone() }),
            &root,
        ))
        .await
        .expect("revoke");
        // The revocation came on the same connection with another token: the memo now holds
        // root's. Present the child twice more so the second comes from the memo again.
        for _ in 0..2 {
            let refused = core.handle(self_lookup()).await;
            assert!(matches!(refused, Err(Error::PermissionDenied)), "{refused:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let memo = TokenMemo::new();
        memo.id_of(1, "s.secret-token-value", |_| "id".to_owned());
        let shown = format!("{memo:?}");
        assert!(!shown.contains("secret-token-value"), "{shown}");
        assert!(shown.contains("holds_a_token: true"), "{shown}");
    }
}
