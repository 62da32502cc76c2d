//! `coffer operator generate-root` and `coffer operator rekey`: the quorum operations, with
//! `vault operator generate-root` and `vault operator rekey`'s flags and habits. A share is given
//! as an argument, as `-` (all of standard input) or, with neither, asked for on the terminal
//! without echo; the nonce comes from `-nonce`, or from the server's status when prompting.
//!
//! Not here: `-pgp-key`, `-pgp-keys`, `-backup`, `-backup-retrieve` and the recovery/DR
//! variants are refused by the server (or, for `-target=recovery`, here), as Coffer has neither
//! PGP-encrypted shares nor recovery keys.

use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use base64::Engine as _;
use clap::Args;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::client::{Global, client};
use super::output::{Format, cell, print_value, table};
use super::prompt;

#[derive(Args, Debug)]
pub(crate) struct GenerateRootArgs {
    /// One unseal key share; `-` reads it from stdin, and without it the command asks for it
    /// (without echo)
    key: Option<String>,
    /// Start a root token generation (with -otp, or none to have the server make one)
    #[arg(long)]
    init: bool,
    /// Cancel the root token generation under way
    #[arg(long)]
    cancel: bool,
    /// Show the root token generation under way
    #[arg(long)]
    status: bool,
    /// Decode an encoded root token with -otp (`-` reads it from stdin)
    #[arg(long, value_name = "ENCODED")]
    decode: Option<String>,
    /// Print a one-time pad of the length the server asks for
    #[arg(long = "generate-otp")]
    generate_otp: bool,
    /// The one-time pad: with -init, to encode the token; with -decode, to decode it
    #[arg(long)]
    otp: Option<String>,
    /// The generation's nonce (needed when the share is an argument or on stdin)
    #[arg(long)]
    nonce: Option<String>,
    /// Not supported: Coffer encodes the token with an OTP only
    #[arg(long = "pgp-key")]
    pgp_key: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct RekeyArgs {
    /// One unseal key share (current ones; new ones with -verify); `-` reads it from stdin, and
    /// without it the command asks for it (without echo)
    key: Option<String>,
    /// Start a rekey
    #[arg(long)]
    init: bool,
    /// Cancel the rekey under way
    #[arg(long)]
    cancel: bool,
    /// Show the rekey (or, with -verify, the verification) under way
    #[arg(long)]
    status: bool,
    /// Number of new key shares (with -init)
    #[arg(long = "key-shares", default_value_t = 5)]
    key_shares: u64,
    /// Number of new shares needed to unseal (with -init)
    #[arg(long = "key-threshold", default_value_t = 3)]
    key_threshold: u64,
    /// With -init: the new shares take effect only after a threshold of them is given back
    /// (`coffer operator rekey -verify`); without -init: give a new share for that check
    #[arg(long)]
    verify: bool,
    /// The operation's nonce (needed when the share is an argument or on stdin)
    #[arg(long)]
    nonce: Option<String>,
    /// `barrier` (the unseal key shares) or `recovery` (the recovery key shares of an
    /// auto-unseal server)
    #[arg(long, default_value = "barrier")]
    target: String,
    /// Not supported: shares are returned in the clear
    #[arg(long = "pgp-keys", value_delimiter = ',')]
    pgp_keys: Vec<String>,
    /// Not supported (Vault allows it only with -pgp-keys)
    #[arg(long)]
    backup: bool,
}

fn body(a: &Option<Value>) -> Value {
    a.clone().unwrap_or(Value::Null)
}

fn gen_root_table(b: &Value) -> String {
    let g = |k: &str| b.get(k).cloned().unwrap_or(Value::Null);
    let mut rows = vec![
        ("Nonce".into(), cell(&g("nonce"))),
        ("Started".into(), cell(&g("started"))),
        ("Progress".into(), format!("{}/{}", cell(&g("progress")), cell(&g("required")))),
        ("Complete".into(), cell(&g("complete"))),
    ];
    let nonempty = |k: &str| b.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    if nonempty("encoded_token") {
        rows.push(("Encoded Token".into(), cell(&g("encoded_token"))));
    }
    if nonempty("otp") {
        rows.push(("OTP".into(), cell(&g("otp"))));
    }
    if b.get("otp_length").and_then(Value::as_u64).is_some_and(|n| n > 0) {
        rows.push(("OTP Length".into(), cell(&g("otp_length"))));
    }
    table(&rows)
}

fn show(g: &Global, b: &Value, render: fn(&Value) -> String) -> Result<ExitCode> {
    match g.format {
        Format::Json | Format::Yaml => print_value(b, g.format)?,
        Format::Table => print!("{}", render(b)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `XOR(base64-decoded encoded, otp)`: the inverse of the server's encoding.
fn decode_token(encoded: &str, otp: &str) -> Result<Zeroizing<String>> {
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded.trim().trim_end_matches('='))
            .map_err(|e| anyhow!("error decoding base64'd token: {e}"))?,
    );
    if raw.len() != otp.len() {
        bail!(
            "error xoring token: length of byte slices is not equivalent: {} != {}",
            raw.len(),
            otp.len()
        );
    }
    let bytes: Zeroizing<Vec<u8>> =
        Zeroizing::new(raw.iter().zip(otp.bytes()).map(|(a, b)| a ^ b).collect());
    Ok(Zeroizing::new(String::from_utf8(bytes.to_vec()).map_err(|_| {
        anyhow!("the decoded token is not text: the encoded token or the OTP is wrong")
    })?))
}

/// The share and the nonce to send: from the argument or stdin (nonce from `-nonce`), or asked
/// for on the terminal (nonce from the server's status, shown first, as vault does).
fn share_and_nonce(
    key: Option<String>,
    flag_nonce: Option<String>,
    status_nonce: &str,
) -> Result<(Zeroizing<String>, String)> {
    let (key, nonce) = match key.as_deref() {
        Some("-") => (prompt::stdin_all()?, flag_nonce.unwrap_or_default()),
        Some(k) => (Zeroizing::new(k.trim().to_owned()), flag_nonce.unwrap_or_default()),
        None => {
            eprintln!("Operation nonce: {status_nonce}");
            (prompt::hidden("Unseal Key (will be hidden): ")?, status_nonce.to_owned())
        }
    };
    if nonce.is_empty() {
        bail!("Missing nonce value: specify it via the -nonce flag");
    }
    Ok((key, nonce))
}

pub(super) async fn generate_root(g: &Global, a: GenerateRootArgs) -> Result<ExitCode> {
    let c = client(g)?;
    const PATH: &str = "sys/generate-root/attempt";
    if a.generate_otp {
        let st = body(&c.read(PATH).await?.body);
        let len = st.get("otp_length").and_then(Value::as_u64).unwrap_or(0) as usize;
        if len == 0 {
            bail!("the server did not say how long the OTP must be");
        }
        let otp = Zeroizing::new(coffer_core::random::random_base62(len));
        return match g.format {
            Format::Table => {
                println!("{}", otp.as_str());
                Ok(ExitCode::SUCCESS)
            }
            _ => show(g, &json!({ "otp": otp.as_str(), "otp_length": len }), gen_root_table),
        };
    }
    if let Some(encoded) = a.decode {
        let otp = a.otp.ok_or_else(|| anyhow!("Missing otp: use -otp to supply it"))?;
        let encoded = if encoded == "-" { prompt::stdin_all()? } else { Zeroizing::new(encoded) };
        let token = decode_token(&encoded, &otp)?;
        return match g.format {
            Format::Table => {
                println!("{}", token.as_str());
                Ok(ExitCode::SUCCESS)
            }
            _ => show(g, &json!({ "token": token.as_str() }), gen_root_table),
        };
    }
    if a.cancel {
        c.delete(PATH).await?;
        println!("Success! Root token generation canceled (if it was started)");
        return Ok(ExitCode::SUCCESS);
    }
    if a.init {
        let mut req = serde_json::Map::new();
        if let Some(otp) = a.otp {
            req.insert("otp".into(), json!(otp));
        }
        if let Some(k) = a.pgp_key {
            req.insert("pgp_key".into(), json!(k));
        }
        let b = body(&c.write(PATH, &Value::Object(req)).await?.body);
        return show(g, &b, gen_root_table);
    }
    let st = body(&c.read(PATH).await?.body);
    if a.status {
        return show(g, &st, gen_root_table);
    }
    if st.get("started") != Some(&Value::Bool(true)) {
        bail!(
            "No root generation is in progress. Start a root generation by running \
             \"coffer operator generate-root -init\"."
        );
    }
    let status_nonce = st.get("nonce").and_then(Value::as_str).unwrap_or("").to_owned();
    let (key, nonce) = share_and_nonce(a.key, a.nonce, &status_nonce)?;
    let b = body(
        &c.write("sys/generate-root/update", &json!({ "key": key.as_str(), "nonce": nonce }))
            .await?
            .body,
    );
    show(g, &b, gen_root_table)
}

fn rekey_table(b: &Value) -> String {
    let g = |k: &str| b.get(k).cloned().unwrap_or(Value::Null);
    let mut rows = vec![
        ("Nonce".into(), cell(&g("nonce"))),
        ("Started".into(), cell(&g("started"))),
        ("Rekey Progress".into(), format!("{}/{}", cell(&g("progress")), cell(&g("required")))),
        ("New Shares".into(), cell(&g("n"))),
        ("New Threshold".into(), cell(&g("t"))),
        ("Verification Required".into(), cell(&g("verification_required"))),
    ];
    if let Some(v) = b.get("verification_nonce") {
        rows.push(("Verification Nonce".into(), cell(v)));
    }
    table(&rows)
}

fn verify_table(b: &Value) -> String {
    let g = |k: &str| b.get(k).cloned().unwrap_or(Value::Null);
    table(&[
        ("Started".into(), cell(&g("started"))),
        ("New Shares".into(), cell(&g("n"))),
        ("New Threshold".into(), cell(&g("t"))),
        ("Verification Nonce".into(), cell(&g("nonce"))),
        ("Verification Progress".into(), format!("{}/{}", cell(&g("progress")), cell(&g("t")))),
    ])
}

pub(super) async fn rekey(g: &Global, a: RekeyArgs) -> Result<ExitCode> {
    let (base, recovery) = match a.target.as_str() {
        "barrier" => ("sys/rekey", false),
        "recovery" => ("sys/rekey-recovery-key", true),
        other => bail!("Unknown target: {other} (`barrier` or `recovery`)"),
    };
    let c = client(g)?;
    if a.cancel {
        c.delete(&format!("{base}/init")).await?;
        println!("Success! Canceled rekeying (if it was started)");
        return Ok(ExitCode::SUCCESS);
    }
    if a.init {
        let b = body(
            &c.write(
                &format!("{base}/init"),
                &json!({
                    "secret_shares": a.key_shares,
                    "secret_threshold": a.key_threshold,
                    "pgp_keys": a.pgp_keys,
                    "backup": a.backup,
                    "require_verification": a.verify,
                }),
            )
            .await?
            .body,
        );
        if g.format == Format::Table && !a.verify {
            eprintln!(
                "WARNING! If you lose the keys after they are returned, there is no recovery. \
                 Consider canceling this operation and re-initializing with -verify, so that \
                 the new keys take effect only after you gave a threshold of them back."
            );
        }
        return show(g, &b, rekey_table);
    }
    let status_path = format!("{base}/{}", if a.verify { "verify" } else { "init" });
    let st = match c.read(&status_path).await {
        Ok(ans) => body(&ans.body),
        // The verify status is a 400 when no rekey exists: the same advice as for none.
        Err(_) if a.verify && !a.status => json!({ "started": false }),
        Err(e) => return Err(e.into()),
    };
    if a.status {
        return show(g, &st, if a.verify { verify_table } else { rekey_table });
    }
    if st.get("started") != Some(&Value::Bool(true)) {
        bail!(
            "No rekey is in progress. Start a rekey process by running \"coffer operator rekey -init{}\".",
            if recovery { " -target=recovery" } else { "" }
        );
    }
    let status_nonce = st.get("nonce").and_then(Value::as_str).unwrap_or("").to_owned();
    let (key, nonce) = share_and_nonce(a.key, a.nonce, &status_nonce)?;
    let update_path = format!("{base}/{}", if a.verify { "verify" } else { "update" });
    let b =
        body(&c.write(&update_path, &json!({ "key": key.as_str(), "nonce": nonce })).await?.body);
    if g.format.structured() {
        print_value(&b, g.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    if b.get("complete") != Some(&Value::Bool(true)) {
        print!("{}", if a.verify { verify_table(&b) } else { rekey_table(&b) });
        return Ok(ExitCode::SUCCESS);
    }
    if a.verify {
        println!(
            "\nRekey verification successful. The rekey operation is complete and the new keys \
             are now active."
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Value::Array(keys)) = b.get("keys_base64") {
        for (i, k) in keys.iter().enumerate() {
            println!("Key {}: {}", i + 1, cell(k));
        }
    }
    println!("\nOperation nonce: {}", cell(b.get("nonce").unwrap_or(&Value::Null)));
    let (n, t) = (cell(&st["n"]), cell(&st["t"]));
    let what = if recovery { "recovery" } else { "unseal" };
    if b.get("verification_required") == Some(&Value::Bool(true)) {
        println!(
            "\nCoffer has created a new {what} key, split into {n} key shares with a key \
             threshold of {t}. These are not active until the verification is complete: give \
             {t} of them back with `coffer operator rekey -verify{}`. Until then, and if the \
             rekey is canceled or the server sealed, the current shares stay valid.\n\n\
             Verification nonce: {}",
            if recovery { " -target=recovery" } else { "" },
            cell(b.get("verification_nonce").unwrap_or(&Value::Null))
        );
    } else if recovery {
        println!(
            "\nCoffer recovery keys rekeyed to {n} key shares and a key threshold of {t}. \
             Distribute the key shares printed above: {t} of them make a quorum for \
             generate-root and the next recovery rekey. The old recovery shares no longer do."
        );
    } else {
        println!(
            "\nCoffer unseal keys rekeyed to {n} key shares and a key threshold of {t}. \
             Distribute the key shares printed above: when the server is sealed or \
             restarted, {t} of them unseal it. The old shares no longer do."
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_inverts_the_servers_encoding() {
        let otp = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let token = "cfs.abcdefghijklmnopqrstuvwxyz012345";
        let x: Vec<u8> = token.bytes().zip(otp.bytes()).map(|(a, b)| a ^ b).collect();
        let enc = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&x);
        assert_eq!(decode_token(&enc, otp).expect("decode").as_str(), token);
        assert!(decode_token(&enc, "short").is_err());
        let other = "B".repeat(36);
        assert_ne!(decode_token(&enc, &other).map(|t| t.to_string()).ok(), Some(token.into()));
    }
}
