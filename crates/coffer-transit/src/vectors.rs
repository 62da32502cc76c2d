//! Answers of OpenBao 2.7.2's transit engine, reproduced from the key material it exported: the
//! formats and derivations here are Vault's byte for byte, not merely self-consistent.
//!
//! Each vector was made by hand against `bao server -dev`: a key created `exportable` (and
//! `derived`, `convergent_encryption` where said), one operation, then `export/...` of the key.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::key::{CONVERGENT_VERSION, KeyType, KeyVersion, Policy};
use crate::secret::SecretBytes;
use crate::sign::{Hash, SignOptions};

fn policy(t: KeyType, derived: bool, convergent: bool, key_b64: &str, hmac_b64: &str) -> Policy {
    let mut keys = BTreeMap::new();
    keys.insert(
        1,
        KeyVersion {
            creation_time: 0,
            key: SecretBytes::new(B64.decode(key_b64).expect("key")),
            hmac_key: SecretBytes::new(B64.decode(hmac_b64).expect("hmac key")),
            public_key: String::new(),
        },
    );
    Policy {
        name: "vector".into(),
        key_type: t,
        derived,
        convergent_encryption: convergent,
        convergent_version: if convergent { CONVERGENT_VERSION } else { 0 },
        exportable: true,
        allow_plaintext_backup: false,
        deletion_allowed: false,
        auto_rotate_period: 0,
        min_decryption_version: 1,
        min_encryption_version: 0,
        min_available_version: 0,
        latest_version: 1,
        key_size: 0,
        keys,
        backup_info: None,
        restore_info: None,
    }
}

#[test]
fn convergent_ciphertexts_are_openbaos_byte_for_byte() {
    // plaintext "hello vector", context "tenant-1".
    for (t, key, want) in [
        (
            KeyType::Aes256Gcm96,
            "4PF8KNA4QFNt/lKUafPN+mtvQkMmqI/FdB2efqPh7rI=",
            "vault:v1:N1PfmDDSbv14dC8Bo5Wd7hQVOOTF8E5NdAzbkFtbB9srJMmKaIdPAQ==",
        ),
        (
            KeyType::Aes128Gcm96,
            "Me1pDpHw/CYuLWQsIPM1sw==",
            "vault:v1:JhGgnhTsM/NManAyZko+kMPBiq21Z0qyVy8pMdeWpeMcITdMkmkhzA==",
        ),
        (
            KeyType::ChaCha20Poly1305,
            "RD/q9q947lSV8Y8TCr5FRj4myemZThBjDQMmwxl232o=",
            "vault:v1:NdcSQ4o2d/YXJhQyiIquhZzz3ZbCmyY2VGYiwL3zL8VfFhPy8sJ6nQ==",
        ),
    ] {
        let p = policy(t, true, true, key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        let (got, _) = p.encrypt(0, b"tenant-1", b"", b"hello vector", b"").expect("encrypt");
        assert_eq!(got, want, "{t:?}");
        let (plain, _) = p.decrypt(b"tenant-1", want, b"").expect("decrypt");
        assert_eq!(plain.as_slice(), b"hello vector");
    }
}

#[test]
fn derived_ed25519_signatures_and_hmacs_are_openbaos() {
    let p = policy(
        KeyType::Ed25519,
        true,
        false,
        "AGY11e18Y8ck1BktkG4Ij8wUN8YWY8r4AKH3u9Dxp6nqmlA8LwlEVg++makmlrkOvs7zO0ISz5JHyxlslCsk9g==",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let o = SignOptions {
        hash: Hash::Sha256,
        hash_name: "sha2-256",
        prehashed: false,
        rsa_pss: true,
        jws: false,
    };
    let (sig, _, public_key) = p.sign(0, b"tenant-1", b"hello", &o).expect("sign");
    assert_eq!(
        sig,
        "vault:v1:Jk3esPiGLFTcAyqSOcUJp15kf13l7sRR5Uy2Yw0q4gXivaqypF0DVP4Dbp5jQ+HmJXb42R84+M70PhCZM0xKCw=="
    );
    assert_eq!(public_key.as_deref(), Some("cNWRV31pp8sRMlvilU/eiZHz0RlztfxqW1rzTXKkbKM="));

    let p = policy(
        KeyType::Aes256Gcm96,
        true,
        true,
        "4PF8KNA4QFNt/lKUafPN+mtvQkMmqI/FdB2efqPh7rI=",
        "N/8FgEqwGaf48b43FleoGRoAQ2XzEntjd0n4i2g94Rs=",
    );
    let got = p.hmac_value(0, &aws_lc_rs::digest::SHA256, b"hello").expect("hmac");
    assert_eq!(got, "vault:v1:irWP+sKpA4fwD7UUNn5vD6C8TODX2LSO5pQxnEGKNG8=");
}

#[test]
fn openbaos_ecdsa_signatures_verify_for_any_hash_and_its_ciphertexts_decrypt() {
    // input "hello"; the PKCS#8 of each key is OpenBao's SEC1 export through `openssl pkcs8`.
    for (t, hash, pkcs8, sig) in [
        (
            KeyType::EcdsaP256,
            "sha2-512",
            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdHAxcwOHDfK8t+/7D7rdgpildznfslJpCpnF60z2WU+hRANCAAQEga4W0UMug13Fq9l4uNtNdfwIOeCCvqpAgxSOOAb+H1vvugUaaxfvH5bhpcanmZS0KBlhSaMqhMFTPUGB76lk",
            "vault:v1:MEYCIQCxgr5Bhoj9nXT3s6sTztRaE4tB266M2eDwlmfSOVYX9wIhAIjogDg6t9PWrpENnFa06AhGfDVIYmjF9WVhEPthMAD8",
        ),
        (
            KeyType::EcdsaP384,
            "sha2-256",
            "MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBL2ToGClgo0YrddtVRGsZIqAl+B9Z05gso8vMcizJjDBr6jqnhYaMRcpIyyOIyCYehZANiAASC4gVfoCOKuItOnREamrwWnLphmc1EgoDkrhgBgC0HEBnyxDvvzgqFsEtuLcomlEaFmzN3qChXEx2eMeCMqDzS+ybQoN5Z1mKqER23HN5dEiMpWvx5aP32dfowgtpx5Xw=",
            "vault:v1:MGYCMQDG8Ek/iDUqKLGWzeFZaa2Y9EQXIQg9lXY/tpsjzwbWlQ+b05jQAbnw8OYGX5w9dPMCMQDpQ5StZh8nCgTjoqwbwiORvrZx4H3Z/G6MdyLFQYfDHjLXNmHjDi71qSH5QNx16r8=",
        ),
        (
            KeyType::EcdsaP521,
            "sha2-384",
            "MIHuAgEAMBAGByqGSM49AgEGBSuBBAAjBIHWMIHTAgEBBEIBcgnibp09mB4FJEPDQ2F4XlN59LfsIP4EWNu44LN72h7FvaJT+kCRn8BPO9xcFeNz4CClz/pHNbQujo5E+qt9CYehgYkDgYYABAA9QDxJFMhX+sh4bTyx58lx7nF4LKFN/XPIEzsXD8KYKmAJhnk/Lh0O8vAtaGJlHaDnfZ7aWhVcxZkB3P47M/WuywEAjj76VxNeTQa6AeruM0hJ8yJubLMcTkEVjdmxAWNOo+aXyOjyXmZmbrWeBNDcMeR+bncCV4OLcZOX6KRQVHuN3g==",
            "vault:v1:MIGGAkF+DDmT6ZIQApYPt8llzSx+JPZmiZFRNqrLcqea8Gin9e1/1habaQSNTF6/9jabQf27gkl7XEwsWvQYKcOrC37GIQJBNGHOfcihy0L2GCdPNBS5Yjut+hHf4i2afYlrycaNuItlUiCE5XFE2qSMzeKqd6ro6cFOB52nA3FELdw+Xf88xkE=",
        ),
    ] {
        let p = policy(t, false, false, pkcs8, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        let o = SignOptions {
            hash: Hash::parse(hash).expect("hash"),
            hash_name: hash,
            prehashed: false,
            rsa_pss: true,
            jws: false,
        };
        assert!(p.verify(b"", b"hello", sig, &o).expect("verify"), "{t:?} {hash}");
        assert!(!p.verify(b"", b"hellp", sig, &o).expect("verify"), "{t:?} {hash}");
    }
    let p = policy(
        KeyType::Aes256Gcm96,
        false,
        false,
        "dHVgIHTdj5thTXQ2hkhhM00iPazE5oVfugvqvAxl3AI=",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let (plain, _) = p
        .decrypt(b"", "vault:v1:vIOCwaYc/6EawkG+XvRzXcOlOkl2xegD1cjXflu7McDg", b"ad")
        .expect("decrypt OpenBao's ciphertext");
    assert_eq!(plain.as_slice(), b"hello");
}
