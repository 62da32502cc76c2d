//! The third-party Vault client `vaultrs` against a real Coffer: if these pass, existing Vault
//! integrations built on it work unchanged.

use std::collections::HashMap;

use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::common::{Server, tempdir};

fn client(s: &Server, token: &str) -> VaultClient {
    let mut b = VaultClientSettingsBuilder::default();
    b.address(&s.addr).token(token);
    if let Some(ca) = &s.ca {
        b.ca_certs(vec![ca.display().to_string()]);
    }
    VaultClient::new(b.build().expect("settings")).expect("client")
}

#[tokio::test]
async fn vaultrs_initializes_unseals_and_manages_tokens_policies_kv_and_cubbyhole() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let anon = client(&s, "");

    let health = vaultrs::sys::health(&anon).await;
    assert!(health.is_err(), "an uninitialized server is not healthy");

    let init = vaultrs::sys::start_initialization(&anon, 3, 2, None).await.expect("init");
    assert_eq!(init.keys.len(), 3);
    let first = vaultrs::sys::unseal(&anon, Some(init.keys[0].clone()), None, None)
        .await
        .expect("unseal 1");
    assert!(first.sealed);
    assert_eq!(first.progress, 1);
    let second = vaultrs::sys::unseal(&anon, Some(init.keys_base64[2].clone()), None, None)
        .await
        .expect("unseal 2");
    assert!(!second.sealed, "two of three shares unseal");
    let health = vaultrs::sys::health(&anon).await.expect("health");
    assert!(health.initialized && !health.sealed);

    let root = client(&s, &init.root_token);
    vaultrs::sys::policy::set(
        &root,
        "app-read",
        "path \"secret/app/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n",
    )
    .await
    .expect("policy set");
    let p = vaultrs::sys::policy::read(&root, "app-read").await.expect("policy read");
    assert!(p.rules.contains("secret/app/*"));
    let names = vaultrs::sys::policy::list(&root).await.expect("policy list");
    assert!(
        names.policies.contains(&"app-read".to_owned())
            && names.policies.contains(&"default".to_owned())
    );

    vaultrs::sys::mount::enable(&root, "secret", "kv", None).await.expect("mount");
    let mounts = vaultrs::sys::mount::list(&root).await.expect("mounts");
    assert_eq!(mounts["secret/"].mount_type, "kv");

    let mut data = HashMap::new();
    data.insert("password", "s3cr3t-from-vaultrs");
    vaultrs::kv1::set(&root, "secret", "app/db", &data).await.expect("kv set");
    let got: HashMap<String, String> =
        vaultrs::kv1::get(&root, "secret", "app/db").await.expect("kv get");
    assert_eq!(got["password"], "s3cr3t-from-vaultrs");
    let keys = vaultrs::kv1::list(&root, "secret", "app").await.expect("kv list");
    assert_eq!(keys.data.keys, vec!["db".to_owned()]);

    let created = vaultrs::token::new(
        &root,
        Some(
            vaultrs::api::token::requests::CreateTokenRequest::builder()
                .policies(vec!["app-read".to_owned()])
                .ttl("1h"),
        ),
    )
    .await
    .expect("token create");
    let app = client(&s, &created.client_token);
    let me = vaultrs::token::lookup_self(&app).await.expect("lookup-self");
    assert_eq!(me.policies, vec!["app-read".to_owned(), "default".to_owned()]);
    assert!(me.ttl > 3500 && me.ttl <= 3600);
    let got: HashMap<String, String> =
        vaultrs::kv1::get(&app, "secret", "app/db").await.expect("app reads its secret");
    assert_eq!(got["password"], "s3cr3t-from-vaultrs");
    assert!(
        vaultrs::kv1::set(&app, "secret", "app/db", &data).await.is_err(),
        "read-only policy cannot write"
    );
    let by_accessor =
        vaultrs::token::lookup_accessor(&root, &created.accessor).await.expect("lookup-accessor");
    assert_eq!(by_accessor.accessor, created.accessor);

    vaultrs::cubbyhole::set(&app, "cubbyhole", "note", &data).await.expect("cubbyhole set");
    let mine: HashMap<String, String> =
        vaultrs::cubbyhole::get(&app, "cubbyhole", "note").await.expect("cubbyhole get");
    assert_eq!(mine["password"], "s3cr3t-from-vaultrs");
    assert!(
        vaultrs::cubbyhole::get_raw(&root, "cubbyhole", "note").await.is_err(),
        "another token's cubbyhole is invisible"
    );

    vaultrs::token::revoke(&root, &created.client_token).await.expect("revoke");
    assert!(vaultrs::token::lookup_self(&app).await.is_err(), "revoked token no longer works");

    vaultrs::sys::seal(&root).await.expect("seal");
    assert!(vaultrs::sys::health(&anon).await.is_err(), "sealed server is unhealthy (503)");
}
