use std::sync::Arc;

use coffer_storage::{Backend, MemoryBackend};

use super::*;

async fn fresh(
    shares: u64,
    threshold: u64,
) -> (Arc<MemoryBackend>, Barrier, Vec<Zeroizing<Vec<u8>>>) {
    let mem = Arc::new(MemoryBackend::new());
    let barrier = Barrier::new(mem.clone());
    let keys = barrier
        .initialize(&SealConfig::shamir(shares, threshold).expect("config"))
        .await
        .expect("init");
    (mem, barrier, keys)
}

#[tokio::test]
async fn values_round_trip_and_never_reach_storage_in_cleartext() {
    let (mem, b, _) = fresh(1, 1).await;
    b.put("logical/x/secret", b"hunter2-planted").await.expect("put");
    assert_eq!(
        b.get("logical/x/secret").await.expect("get").expect("some").as_slice(),
        b"hunter2-planted"
    );
    for key in ["logical/x/secret", KEYRING_PATH, ROOT_KEY_PATH] {
        let raw = mem.get(key).await.expect("raw").expect("stored");
        assert!(!raw.windows(15).any(|w| w == b"hunter2-planted"), "{key} holds cleartext");
    }
}

#[tokio::test]
async fn barrier_rejects_ciphertext_moved_to_another_path() {
    let (mem, b, _) = fresh(1, 1).await;
    b.put("a/one", b"value").await.expect("put");
    let blob = mem.get("a/one").await.expect("get").expect("some");
    mem.put("a/two", blob).await.expect("raw put");
    assert!(matches!(b.get("a/two").await, Err(Error::Corrupt(_))));
}

#[tokio::test]
async fn every_flipped_byte_makes_the_read_fail() {
    let (mem, b, _) = fresh(1, 1).await;
    b.put("a/flip", b"some secret value").await.expect("put");
    let blob = mem.get("a/flip").await.expect("get").expect("some");
    for i in 0..blob.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = blob.clone();
            bad[i] ^= bit;
            mem.put("a/flip", bad).await.expect("raw put");
            assert!(
                b.get("a/flip").await.is_err(),
                "flip of bit {bit:#x} in byte {i} went unnoticed"
            );
        }
    }
    for cut in [0, 1, 5, blob.len() - 1] {
        mem.put("a/flip", blob[..cut].to_vec()).await.expect("raw put");
        assert!(b.get("a/flip").await.is_err(), "truncation to {cut} went unnoticed");
    }
}

#[tokio::test]
async fn contains_answers_without_opening_and_only_while_unsealed() {
    let (mem, b, _) = fresh(1, 1).await;
    b.put("a/here", b"value").await.expect("put");
    assert!(b.contains("a/here").await.expect("contains"));
    assert!(!b.contains("a/absent").await.expect("contains"));
    // A damaged value is there: a write may repair it, and needs `update` to.
    mem.put("a/damaged", b"not a sealed value".to_vec()).await.expect("raw put");
    assert!(b.get("a/damaged").await.is_err());
    assert!(b.contains("a/damaged").await.expect("contains"));
    b.seal();
    assert!(matches!(b.contains("a/here").await, Err(Error::Sealed)));
}

#[tokio::test]
async fn sealed_barrier_refuses_everything() {
    let (_, b, _) = fresh(1, 1).await;
    b.seal();
    assert!(matches!(b.get("a/b").await, Err(Error::Sealed)));
    assert!(matches!(b.put("a/b", b"x").await, Err(Error::Sealed)));
    assert!(matches!(b.list("a/").await, Err(Error::Sealed)));
    assert!(matches!(b.key_status(), Err(Error::Sealed)));
}

#[tokio::test]
async fn threshold_shares_unseal_and_wrong_shares_never_do() {
    let (mem, b, keys) = fresh(5, 3).await;
    b.put("a/kept", b"v").await.expect("put");
    b.seal();
    let reopened = Barrier::new(mem.clone());
    // Too few shares combine to a wrong key.
    assert!(matches!(reopened.unseal_with_shares(&keys[..2]).await, Err(Error::WrongKey)));
    // Shares from another initialization do not open this one.
    let (_, _, other) = fresh(5, 3).await;
    assert!(reopened.unseal_with_shares(&other[..3]).await.is_err());
    let mixed = vec![keys[0].clone(), keys[1].clone(), other[2].clone()];
    assert!(reopened.unseal_with_shares(&mixed).await.is_err());
    assert!(reopened.is_sealed());
    reopened
        .unseal_with_shares(&[keys[4].clone(), keys[0].clone(), keys[2].clone()])
        .await
        .expect("unseal");
    assert_eq!(reopened.get("a/kept").await.expect("get").expect("some").as_slice(), b"v");
}

#[tokio::test]
async fn rotation_adds_a_term_and_old_terms_still_decrypt() {
    let (mem, b, keys) = fresh(1, 1).await;
    b.put("a/old", b"old").await.expect("put");
    assert_eq!(b.key_status().expect("status").term, 1);
    let info = b.rotate().await.expect("rotate");
    assert_eq!(info.term, 2);
    b.put("a/new", b"new").await.expect("put");
    let raw = mem.get("a/new").await.expect("get").expect("some");
    assert_eq!(&raw[1..5], &2u32.to_be_bytes(), "new writes use the new term");
    b.seal();
    let again = Barrier::new(mem);
    again.unseal_with_shares(&keys).await.expect("unseal");
    assert_eq!(again.key_status().expect("status").term, 2, "rotation is persisted");
    assert_eq!(again.get("a/old").await.expect("get").expect("some").as_slice(), b"old");
    assert_eq!(again.get("a/new").await.expect("get").expect("some").as_slice(), b"new");
}

#[tokio::test]
async fn tampered_seal_config_is_detected_at_unseal() {
    let (mem, b, keys) = fresh(3, 2).await;
    b.seal();
    let cfg = serde_json::to_vec(&SealConfig::shamir(3, 3).expect("cfg")).expect("json");
    mem.put(SEAL_CONFIG_PATH, cfg).await.expect("raw put");
    assert!(b.unseal_with_shares(&keys[..2]).await.is_err());
    assert!(b.is_sealed());
}

#[tokio::test]
async fn initialize_twice_is_refused() {
    let (_, b, _) = fresh(1, 1).await;
    let again = b.initialize(&SealConfig::shamir(1, 1).expect("cfg")).await;
    assert!(matches!(again, Err(Error::AlreadyInitialized)));
}

#[test]
fn seal_config_names_bad_parameters() {
    assert!(SealConfig::shamir(0, 0).is_err());
    assert!(SealConfig::shamir(3, 4).is_err());
    assert!(SealConfig::shamir(3, 1).is_err());
    assert!(SealConfig::shamir(256, 2).is_err());
    assert!(SealConfig::shamir(5, 3).is_ok());
}

#[tokio::test]
async fn views_are_confined_to_their_prefix() {
    let (_, b, _) = fresh(1, 1).await;
    let b = Arc::new(b);
    let one = View::new(b.clone(), "logical/one/");
    let two = View::new(b.clone(), "logical/two/");
    one.put("k", b"1").await.expect("put");
    assert!(two.get("k").await.expect("get").is_none());
    assert!(one.get("../two/k").await.is_err(), "dot-dot must not escape");
    two.put("k", b"2").await.expect("put");
    one.clear().await.expect("clear");
    assert!(one.get("k").await.expect("get").is_none());
    assert_eq!(two.get("k").await.expect("get").expect("some").as_slice(), b"2");
}

#[tokio::test]
async fn random_blobs_never_open_and_never_panic() {
    let (mem, b, _) = fresh(1, 1).await;
    b.put("a/real", b"value").await.expect("put");
    let real = mem.get("a/real").await.expect("get").expect("some");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..2000 {
        let len = (next() % 80) as usize;
        let mut blob: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half of them keep a valid header, so the AEAD itself is exercised.
        if i % 2 == 0 && blob.len() > 5 {
            blob[..5].copy_from_slice(&real[..5]);
        }
        mem.put("a/fuzz", blob).await.expect("raw put");
        assert!(b.get("a/fuzz").await.is_err(), "random blob {i} opened");
    }
}

#[tokio::test]
async fn concurrent_rotations_never_lose_a_term() {
    let (mem, b, keys) = fresh(1, 1).await;
    let b = Arc::new(b);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            b.rotate().await.expect("rotate");
            b.put(&format!("r/{i}"), b"v").await.expect("put");
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(b.key_status().expect("status").term, 9);
    b.seal();
    let again = Barrier::new(mem);
    again.unseal_with_shares(&keys).await.expect("unseal");
    for i in 0..8 {
        assert!(again.get(&format!("r/{i}")).await.expect("readable after unseal").is_some());
    }
}

#[tokio::test]
async fn rekey_replaces_the_unseal_key_and_keeps_the_data() {
    let (mem, b, old) = fresh(5, 3).await;
    b.put("a/kept", b"v").await.expect("put");
    b.verify_unseal_shares(&old[1..4]).await.expect("the right shares verify");
    let (_, _, other) = fresh(5, 3).await;
    assert!(b.verify_unseal_shares(&other[..3]).await.is_err(), "foreign shares verify");
    let new = NewUnsealKey::generate(&SealConfig::shamir(3, 2).expect("config")).expect("new");
    assert!(new.combines_from(&new.shares[1..]) && !new.combines_from(&old[..2]));
    b.rekey(&new).await.expect("rekey");
    assert_eq!(b.seal_config().await.expect("config").expect("some").secret_shares, 3);
    b.seal();
    let reopened = Barrier::new(mem.clone());
    assert!(reopened.unseal_with_shares(&old[..3]).await.is_err(), "old shares still unseal");
    reopened.unseal_with_shares(&new.shares[..2]).await.expect("new shares unseal");
    assert_eq!(reopened.get("a/kept").await.expect("get").expect("some").as_slice(), b"v");
}

mod auto_unseal {
    use super::*;

    fn key(b: u8) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(vec![b; 32])
    }

    #[tokio::test]
    async fn a_static_seal_unseals_without_shares_and_recovery_shares_only_prove_a_quorum() {
        let mem = Arc::new(MemoryBackend::new());
        let b = Barrier::new(mem.clone());
        let seal = StaticSeal::new("k1".into(), key(7), None).expect("seal");
        let recovery = b
            .initialize_auto(&SealConfig::shamir(3, 2).expect("config"), &seal)
            .await
            .expect("init");
        assert_eq!(recovery.len(), 3);
        assert_eq!(b.seal_config().await.expect("config").expect("some").seal_type, "static");
        // Written with the keys in one batch, so no other node sees keys without it; gone once
        // the init's own writes are done.
        assert!(b.auto_init_pending().await.expect("pending"));
        b.finish_auto_init().await.expect("finish");
        assert!(!b.auto_init_pending().await.expect("pending"));
        b.put("logical/x", b"v").await.expect("put");
        b.seal();
        // Recovery shares cannot unseal; the seal can.
        let e = b.unseal_with_shares(&recovery[..2]).await.expect_err("shares unsealed");
        assert!(e.to_string().contains("auto-unseal"), "{e}");
        b.unseal_auto(&seal).await.expect("auto-unseal");
        assert_eq!(b.get("logical/x").await.expect("get").expect("some").as_slice(), b"v");
        // Generate-root's check takes a quorum of recovery shares, and refuses others.
        b.verify_unseal_shares(&recovery[1..]).await.expect("a quorum of recovery shares");
        let wrong = shamir::split(&[9u8; 32], 3, 2).expect("split");
        assert!(matches!(b.verify_unseal_shares(&wrong[..2]).await, Err(Error::WrongKey)));
        // The unseal key is stored only wrapped.
        let wrapped = mem.get(autoseal::WRAPPED_KEY_PATH).await.expect("get").expect("stored");
        assert!(!wrapped.windows(32).any(|w| w == key(7).as_slice()));
    }

    #[tokio::test]
    async fn a_seal_to_seal_migration_rewraps_the_unseal_key_and_keeps_the_recovery_shares() {
        let b = Barrier::new(Arc::new(MemoryBackend::new()));
        let old = StaticSeal::new("old".into(), key(1), None).expect("seal");
        let recovery = b
            .initialize_auto(&SealConfig::shamir(3, 2).expect("config"), &old)
            .await
            .expect("init");
        b.put("logical/x", b"v").await.expect("put");
        b.seal();
        let new = StaticSeal::new("new".into(), key(2), None).expect("seal");
        // Wrong recovery shares: nothing changes, and the barrier stays sealed.
        let wrong = shamir::split(&[9u8; 32], 3, 2).expect("split");
        assert!(b.migrate_between(&wrong[..2], &old, &new).await.is_err());
        assert!(b.is_sealed());
        b.unseal_auto(&old).await.expect("the old seal still opens");
        b.seal();
        b.migrate_between(&recovery[..2], &old, &new).await.expect("migrate");
        assert!(!b.is_sealed());
        b.seal();
        assert!(b.unseal_auto(&old).await.is_err(), "the old seal still opens");
        b.unseal_auto(&new).await.expect("the new seal opens");
        assert_eq!(b.get("logical/x").await.expect("get").expect("some").as_slice(), b"v");
        b.verify_unseal_shares(&recovery[1..]).await.expect("the same recovery shares");
    }

    #[tokio::test]
    async fn a_recovery_rekey_replaces_the_recovery_shares_and_keeps_the_seal() {
        let b = Barrier::new(Arc::new(MemoryBackend::new()));
        let seal = StaticSeal::new("k1".into(), key(5), None).expect("seal");
        let old = b
            .initialize_auto(&SealConfig::shamir(3, 2).expect("config"), &seal)
            .await
            .expect("init");
        b.put("logical/x", b"v").await.expect("put");
        let new = NewUnsealKey::generate(&SealConfig::shamir(5, 3).expect("config")).expect("new");
        b.rekey_recovery(&new).await.expect("rekey");
        let c = b.seal_config().await.expect("config").expect("some");
        assert_eq!((c.seal_type.as_str(), c.secret_shares, c.secret_threshold), ("static", 5, 3));
        b.verify_unseal_shares(&new.shares[2..]).await.expect("the new recovery shares");
        assert!(b.verify_unseal_shares(&old[..2]).await.is_err(), "the old shares still count");
        // The seal still opens the barrier, and the data is there.
        b.seal();
        b.unseal_auto(&seal).await.expect("auto-unseal");
        assert_eq!(b.get("logical/x").await.expect("get").expect("some").as_slice(), b"v");
        // A Shamir barrier has no recovery key.
        let (_, shamir, _) = fresh(1, 1).await;
        let e = shamir.rekey_recovery(&new).await.expect_err("shamir");
        assert!(e.to_string().contains("recovery rekeying not supported"), "{e}");
    }

    #[tokio::test]
    async fn a_rotated_static_key_still_opens_with_the_previous_key_and_a_wrong_key_never() {
        let b = Barrier::new(Arc::new(MemoryBackend::new()));
        let old = StaticSeal::new("old".into(), key(1), None).expect("seal");
        b.initialize_auto(&SealConfig::shamir(1, 1).expect("config"), &old).await.expect("init");
        b.seal();
        let rotated =
            StaticSeal::new("new".into(), key(2), Some(("old".into(), key(1)))).expect("seal");
        b.unseal_auto(&rotated).await.expect("the previous key opens");
        b.seal();
        let missing = StaticSeal::new("new".into(), key(2), None).expect("seal");
        let e = b.unseal_auto(&missing).await.expect_err("no key for the id");
        assert!(e.to_string().contains("\"old\""), "{e}");
        let wrong = StaticSeal::new("old".into(), key(3), None).expect("seal");
        assert!(matches!(b.unseal_auto(&wrong).await, Err(Error::WrongKey)));
        assert!(b.is_sealed());
        assert!(
            StaticSeal::new("k".into(), Zeroizing::new(vec![0; 16]), None).is_err(),
            "16-byte key"
        );
    }
}

#[tokio::test]
async fn a_shamir_barrier_migrates_to_auto_unseal_and_its_shares_become_recovery_shares() {
    let (_, b, shares) = fresh(3, 2).await;
    b.put("logical/x", b"v").await.expect("put");
    b.seal();
    let seal = StaticSeal::new("k".into(), Zeroizing::new(vec![5; 32]), None).expect("seal");
    let wrong = shamir::split(&[9u8; 32], 3, 2).expect("split");
    assert!(b.migrate_to_auto(&wrong[..2], &seal).await.is_err(), "wrong shares migrate");
    assert_eq!(b.seal_config().await.expect("config").expect("some").seal_type, "shamir");
    b.migrate_to_auto(&shares[..2], &seal).await.expect("migrate");
    assert!(!b.is_sealed());
    b.seal();
    assert!(b.unseal_with_shares(&shares[..2]).await.is_err(), "shares still unseal");
    b.unseal_auto(&seal).await.expect("auto-unseal");
    assert_eq!(b.get("logical/x").await.expect("get").expect("some").as_slice(), b"v");
    b.verify_unseal_shares(&shares[1..]).await.expect("the old shares are recovery shares");
}

#[tokio::test]
async fn an_auto_unseal_barrier_migrates_back_to_shamir_with_its_recovery_shares() {
    let b = Barrier::new(Arc::new(MemoryBackend::new()));
    let seal = StaticSeal::new("k".into(), Zeroizing::new(vec![6; 32]), None).expect("seal");
    let recovery =
        b.initialize_auto(&SealConfig::shamir(3, 2).expect("config"), &seal).await.expect("init");
    b.put("logical/x", b"v").await.expect("put");
    b.seal();
    let wrong = shamir::split(&[9u8; 32], 3, 2).expect("split");
    assert!(b.migrate_to_shamir(&wrong[..2], &seal).await.is_err(), "wrong shares migrate");
    assert!(b.is_sealed());
    assert_eq!(b.seal_config().await.expect("config").expect("some").seal_type, "static");
    b.migrate_to_shamir(&recovery[1..], &seal).await.expect("migrate");
    b.seal();
    assert!(b.unseal_auto(&seal).await.is_err(), "the seal still opens it");
    b.unseal_with_shares(&recovery[..2]).await.expect("the recovery shares now unseal");
    assert_eq!(b.get("logical/x").await.expect("get").expect("some").as_slice(), b"v");
}
