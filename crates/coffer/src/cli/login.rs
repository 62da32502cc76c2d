//! `coffer login`: check a token, or log in with an auth method, and save the token where later
//! commands find it (`~/.coffer-token`, mode 0600).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde_json::{Value, json};

use super::client::{Global, client, parse_pairs, print_answer, read_secret_input, token_file};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
coffer login                                    # prompts for a token\n  \
coffer login -method=approle role_id=$ROLE_ID secret_id=-   # secret ID from stdin\n  \
coffer login -method=jwt role=ci jwt=@$CI_JOB_JWT_FILE\n  \
coffer login -method=kubernetes role=web jwt=@/var/run/secrets/kubernetes.io/serviceaccount/token\n  \
coffer login -method=cert -client-cert=me.pem -client-key=me-key.pem name=web\n  \
coffer login -method=userpass username=alice     # prompts for the password (not echoed)\n\n\
Each method logs in at auth/<path>/login (the path defaults to the method's name).")]
pub(crate) struct LoginArgs {
    /// With -method=token: the token (`-` reads stdin; prompted for when missing). With other
    /// methods: the login's KEY=VALUE fields (`KEY=@file` reads a file, `KEY=-` reads stdin)
    pub args: Vec<String>,
    /// Auth method: token, approle, userpass, jwt, oidc (JWT login), kubernetes, cert
    #[arg(long, default_value = "token", value_name = "TYPE")]
    pub method: String,
    /// Where the method is mounted below auth/ (defaults to the method's name)
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Don't save the token, only check it
    #[arg(long = "no-store")]
    pub no_store: bool,
    /// Print only the token and don't save it
    #[arg(long = "token-only")]
    pub token_only: bool,
}

pub(super) async fn run(g: &Global, a: LoginArgs) -> Result<ExitCode> {
    let method = a.method.to_lowercase();
    let (token, body) = if method == "token" {
        if a.args.len() > 1 {
            bail!("-method=token takes one argument, the token; got {}", a.args.len());
        }
        // As vault: asked for without echo; `-` or a piped stdin reads it from stdin.
        let token = match a.args.into_iter().next() {
            Some(t) => read_secret_input("", Some(t))?,
            None => super::prompt::hidden("Token (will be hidden): ")?.to_string(),
        };
        let c = client(g)?.with_token(Some(token.clone())).with_wrap_ttl(None);
        let ans = c.read("auth/token/lookup-self").await?;
        let mut b = ans.body.unwrap_or(Value::Null);
        // Shown like a login's auth block, so both kinds print alike.
        if let Some(d) = b.get("data").cloned() {
            b["auth"] = json!({
                "client_token": token,
                "accessor": d.get("accessor"),
                "lease_duration": d.get("ttl"),
                "renewable": d.get("renewable"),
                "policies": d.get("policies"),
                "token_policies": d.get("policies"),
                "identity_policies": d.get("identity_policies"),
                "metadata": d.get("meta"),
            });
        }
        (token, b)
    } else {
        let kind = match method.as_str() {
            "approle" | "userpass" | "jwt" | "oidc" | "kubernetes" | "cert" => method.as_str(),
            other => bail!(
                "unknown login method {other:?}: use token, approle, userpass, jwt, oidc, \
                 kubernetes or cert (or `coffer write auth/<path>/login ...` for another method)"
            ),
        };
        let mount = a.path.as_deref().unwrap_or(kind).trim_matches('/').to_owned();
        let mut data = parse_pairs(&a.args)?;
        // As vault: userpass logs in at login/<username>, with the password asked for (without
        // echo) when it is not given.
        let path = if kind == "userpass" {
            let user = match data.remove("username") {
                Some(Value::String(u)) if !u.is_empty() => u,
                _ => bail!("missing username: give username=NAME"),
            };
            if !data.contains_key("password") {
                let pw = super::prompt::hidden("Password (will be hidden): ")?;
                data.insert("password".into(), Value::String(pw.to_string()));
            }
            format!("{mount}/login/{user}")
        } else {
            format!("{mount}/login")
        };
        let c = client(g)?;
        // A login needs no token; sending a stale saved one would only confuse the audit log.
        let c = c.with_token(None);
        let ans = c.write(&format!("auth/{path}"), &Value::Object(data)).await?;
        let b = ans.body.ok_or_else(|| anyhow!("the server answered the login with no body"))?;
        if b.get("wrap_info").is_some_and(|w| !w.is_null()) {
            // Wrapped (-wrap-ttl): the token is in the wrapping token's cubbyhole, not here.
            return print_answer(g, Some(&b));
        }
        let token = b
            .get("auth")
            .and_then(|a| a.get("client_token"))
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("the server's answer has no auth block"))?
            .to_owned();
        (token, b)
    };
    if a.token_only {
        println!("{token}");
        return Ok(ExitCode::SUCCESS);
    }
    if !a.no_store {
        let path = token_file().ok_or_else(|| {
            anyhow!("HOME is not set; cannot save the token (use -no-store and COFFER_TOKEN)")
        })?;
        write_private(&path, token.as_bytes())?;
    }
    if g.format.structured() || g.field.is_some() {
        return print_answer(g, Some(&body));
    }
    println!(
        "Success! You are now authenticated. Future commands use this token{}.\n",
        if a.no_store {
            " only if you set COFFER_TOKEN"
        } else {
            " (saved with mode 0600 in ~/.coffer-token)"
        }
    );
    print_answer(g, Some(&body))
}

/// Writes a file only its owner can read, creating it with that mode (no window where it is
/// readable by others).
fn write_private(path: &std::path::Path, content: &[u8]) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(content)?;
    Ok(())
}
/// `coffer print token`: the token this client would send, alone on a line, as `vault print
/// token` does (nothing, and status 0, when there is none).
pub(super) fn print_token() -> ExitCode {
    if let Some(t) = super::client::current_token() {
        println!("{t}");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("t");
        write_private(&p, b"tok").expect("write");
        assert_eq!(std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777, 0o600);
    }
}
