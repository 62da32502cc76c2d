use serde_json::json;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn members() -> Map<String, Value> {
    match json!({"data": {"password": "canary-1"}, "auth": {"client_token": "t"}}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn pair() -> (KeyPair, Recipient) {
    let k = KeyPair::generate().expect("key pair");
    let r = Recipient::from_header(&k.header_value()).expect("own key is valid");
    (k, r)
}

#[test]
fn the_suite_is_the_one_the_format_names() {
    let s = SUITE.suite();
    assert_eq!(u16::from(s.kem), KEM_ID);
    assert_eq!(u16::from(s.sym.kdf_id), KDF_ID);
    assert_eq!(u16::from(s.sym.aead_id), AEAD_ID);
}

#[test]
fn a_sealed_answer_opens_for_the_same_path_and_token() {
    let (k, r) = pair();
    let b = Binding::new("secret/data/app", Some("tok"));
    let sealed = r.seal(&b, &members()).expect("seal");
    assert_eq!(k.open(&sealed, &b).expect("open"), members());
    // A leading `/` is not part of the path.
    assert!(k.open(&sealed, &Binding::new("/secret/data/app", Some("tok"))).is_ok());
}

#[test]
fn sealed_answer_for_another_path_does_not_open() {
    let (k, r) = pair();
    let sealed = r.seal(&Binding::new("secret/data/app", Some("tok")), &members()).expect("seal");
    let e = k.open(&sealed, &Binding::new("secret/data/other", Some("tok"))).expect_err("path");
    assert!(matches!(e, Error::Open), "{e}");
}

#[test]
fn sealed_answer_for_another_token_does_not_open() {
    let (k, r) = pair();
    let sealed = r.seal(&Binding::new("secret/data/app", Some("tok")), &members()).expect("seal");
    for other in [Some("tok2"), None] {
        let e = k.open(&sealed, &Binding::new("secret/data/app", other)).expect_err("token");
        assert!(matches!(e, Error::Open), "{e}");
    }
}

#[test]
fn sealed_answer_does_not_open_with_another_key() {
    let (_, r) = pair();
    let (other, _) = pair();
    let b = Binding::new("p", None);
    let sealed = r.seal(&b, &members()).expect("seal");
    assert!(matches!(other.open(&sealed, &b), Err(Error::Open)));
}

#[test]
fn a_flipped_bit_anywhere_makes_the_open_fail() {
    let (k, r) = pair();
    let b = Binding::new("p", Some("t"));
    let sealed = r.seal(&b, &members()).expect("seal");
    for i in 0..sealed.ciphertext.len() {
        let mut s = sealed.clone();
        s.ciphertext[i] ^= 0x01;
        assert!(matches!(k.open(&s, &b), Err(Error::Open)), "ciphertext byte {i}");
    }
    for i in 0..sealed.enc.len() {
        let mut s = sealed.clone();
        s.enc[i] ^= 0x01;
        assert!(k.open(&s, &b).is_err(), "enc byte {i}");
    }
    let mut short = sealed.clone();
    short.ciphertext.truncate(10);
    assert!(k.open(&short, &b).is_err());
}

#[test]
fn unknown_versions_and_suites_are_refused_by_name() {
    let (k, r) = pair();
    let b = Binding::new("p", None);
    let sealed = r.seal(&b, &members()).expect("seal");
    let mut v2 = sealed.clone();
    v2.version = 2;
    assert!(matches!(k.open(&v2, &b), Err(Error::Version(2))));
    let mut aes = sealed;
    aes.aead_id = 0x0002;
    let e = k.open(&aes, &b).expect_err("suite");
    assert!(e.to_string().contains("aead 0x0002"), "{e}");
}

#[test]
fn bad_headers_are_refused_with_the_problem_named() {
    let cases = [
        ("", "empty"),
        ("not base64!", "not base64url"),
        ("AAAA", "3 bytes"),
        (&URL_SAFE_NO_PAD.encode([7u8; 33]), "33 bytes"),
        // Low-order points of Curve25519: zero, one, and a point of order 8.
        (&URL_SAFE_NO_PAD.encode([0u8; 32]), "low-order"),
        (
            &URL_SAFE_NO_PAD.encode({
                let mut one = [0u8; 32];
                one[0] = 1;
                one
            }),
            "low-order",
        ),
        (
            &URL_SAFE_NO_PAD
                .encode(hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")),
            "low-order",
        ),
    ];
    for (value, problem) in cases {
        let e = Recipient::from_header(value).expect_err(value);
        assert!(matches!(e, Error::BadKey(_)), "{value}: {e}");
        assert!(e.to_string().contains(problem), "{value}: {e}");
        assert!(e.to_string().contains(HEADER), "{e}");
    }
}

#[test]
fn headers_with_padding_or_spaces_are_accepted() {
    let (k, _) = pair();
    let padded = base64::engine::general_purpose::URL_SAFE.encode(k.public_key());
    assert!(padded.ends_with('='));
    assert!(Recipient::from_header(&padded).is_ok());
    assert!(Recipient::from_header(&format!(" {} ", k.header_value())).is_ok());
}

#[test]
fn the_wire_shape_is_versioned_json_with_base64url() {
    let (_, r) = pair();
    let sealed = r.seal(&Binding::new("p", None), &members()).expect("seal");
    let v = serde_json::to_value(&sealed).expect("json");
    assert_eq!(v["version"], 1);
    assert_eq!(v["kem_id"], 32);
    assert_eq!(v["kdf_id"], 1);
    assert_eq!(v["aead_id"], 3);
    let enc = v["enc"].as_str().expect("enc");
    assert_eq!(enc.len(), 43, "32 bytes, unpadded base64url: {enc}");
    assert!(!v["ciphertext"].as_str().expect("ct").contains(['+', '/', '=']));
    let back: Sealed = serde_json::from_value(v).expect("parse");
    assert_eq!(back, sealed);
}

#[test]
fn unwrap_answers_are_bound_to_the_wrapping_token() {
    let body = match json!({"token": "wrapping"}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let b = Binding::for_request("/sys/wrapping/unwrap/", Some("caller"), Some(&body));
    assert_eq!(b.path(), UNWRAP_PATH);
    assert_eq!(b.aad(), Binding::new(UNWRAP_PATH, Some("wrapping")).aad());
    let b = Binding::for_request("sys/wrapping/unwrap", Some("wrapping"), None);
    assert_eq!(b.aad(), Binding::new(UNWRAP_PATH, Some("wrapping")).aad());
    // Anywhere else, a `token` field is just data.
    let b = Binding::for_request("auth/token/lookup", Some("caller"), Some(&body));
    assert_eq!(b.aad(), Binding::new("auth/token/lookup", Some("caller")).aad());
}

/// RFC 9180 A.2.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base mode),
/// first encryption: the suite opens what the RFC sealed.
#[test]
fn rfc9180_a_2_1_vector_opens() {
    let sk_r: [u8; 32] = hex("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb")
        .try_into()
        .expect("32");
    let k = KeyPair::from_private_bytes(&sk_r).expect("key");
    assert_eq!(
        k.public_key().to_vec(),
        hex("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a")
    );
    let pt = k
        .open_raw(
            &hex("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a"),
            &hex("4f6465206f6e2061204772656369616e2055726e"),
            &hex("436f756e742d30"),
            &hex(
                "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28",
            ),
        )
        .expect("open");
    assert_eq!(*pt, hex("4265617574792069732074727574682c20747275746820626561757479"));
}

/// Coffer's format version 1, sealed by an independent RFC 9180 implementation (Python, with a
/// fixed ephemeral key; the same vector is in docs/sealed-responses.md): opens here.
#[test]
fn format_v1_known_answer_opens() {
    let sk_r: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
    let k = KeyPair::from_private_bytes(&sk_r).expect("key");
    assert_eq!(k.header_value(), "B6N8vBQgk8i3VdwbEOhstCY3StFqqFPtC9_AsrhtHHw");
    let b = Binding::new("secret/data/app", Some("hvs.example-token"));
    assert_eq!(
        b.aad(),
        hex(
            "636f66666572207365616c656420726573706f6e736520763100db186e508c583fa4b7e52b9a7008dd5474343a494b7bf67119f29466175eaed37365637265742f646174612f617070"
        )
    );
    let sealed: Sealed = serde_json::from_value(json!({
        "version": 1, "kem_id": 32, "kdf_id": 1, "aead_id": 3,
        "enc": "WGmv9FBUlzLLqu1eXfmzCm2jHLDldCutWtShp2jxpns",
        "ciphertext": "M7YA879mwWLuoykVJ-JlwhglxOoTGm91HqjmsuRl0VIqh9BudhXKkcRQZ5gWa1uPVwTOfsKbcob9VdYEhv6vQLo93zKlbGZbvpHTqpjw4l1BAovyPg"
    }))
    .expect("sealed");
    let m = k.open(&sealed, &b).expect("open");
    assert_eq!(
        Value::Object(m),
        json!({"data": {"data": {"password": "canary-7f3a"}, "metadata": {"version": 1}}})
    );
}

#[test]
fn key_pairs_print_no_private_key() {
    let (k, r) = pair();
    let shown = format!("{k:?} {r:?}");
    assert!(shown.contains(&k.header_value()));
    assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(k.private.secret_bytes())));
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_header_value_is_a_key_or_a_named_refusal(v in ".{0,64}") {
            if let Err(e) = Recipient::from_header(&v) {
                prop_assert!(matches!(e, Error::BadKey(_)), "{}", e);
            }
        }

        #[test]
        fn any_sealed_object_opens_or_fails_without_panicking(
            enc in proptest::collection::vec(any::<u8>(), 0..40),
            ciphertext in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let k = KeyPair::generate().expect("key");
            let s = Sealed { version: VERSION, kem_id: KEM_ID, kdf_id: KDF_ID, aead_id: AEAD_ID, enc, ciphertext };
            prop_assert!(k.open(&s, &Binding::new("p", None)).is_err());
        }
    }
}
