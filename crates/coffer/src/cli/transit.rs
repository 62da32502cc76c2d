//! `coffer transit encrypt|decrypt`: a file or stdin, of any size, encrypted with a data key
//! that a transit key wraps (envelope encryption), streamed in chunks so memory stays bounded
//! whatever the input's size.
//!
//! The format (version 1), documented in docs/transit.md:
//! ```text
//! "COFFERTS" (8 bytes) | 0x01 | header length (u32 BE) | header (JSON)
//! then chunks: flag (u8: 0 more, 1 final) | length (u32 BE) | AES-256-GCM ciphertext ‖ tag
//! ```
//! The header names the mount, key and (optional, base64) context, and carries the data key as
//! the transit ciphertext `datakey/plaintext/:name` answered (`vault:vN:...`) and a random 7-byte
//! nonce prefix. Chunk `i`'s nonce is prefix ‖ i (u32 BE) ‖ flag, and its associated data is
//! SHA-256 of the magic, version and header bytes. So a chunk moved, dropped, duplicated or taken
//! from another file fails to open; a stream cut after any chunk lacks the final flag and is
//! refused; bytes after the final chunk are refused.
//!
//! Guarantees: at most one chunk (64 KiB) of plaintext and one of ciphertext are in memory at a
//! time; the data key is zeroized after use and never written anywhere in clear; `decrypt` with
//! `-out FILE` writes to a temporary file beside it and renames it only once the whole stream
//! authenticated (to stdout, plaintext is written as chunks authenticate, and a failure exits
//! non-zero after the good chunks). Not here: compression, or keys other than transit ones.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use super::client::{Global, client};

const MAGIC: &[u8; 8] = b"COFFERTS";
const VERSION: u8 = 1;
/// Plaintext bytes per chunk.
pub(crate) const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
/// A header larger than this is not one Coffer wrote.
const MAX_HEADER: u32 = 64 * 1024;

#[derive(Subcommand, Debug)]
pub(crate) enum TransitCmd {
    /// Encrypt a file or stdin with a new data key wrapped by a transit key
    #[command(
        after_help = "The input is read in 64 KiB chunks, so a file of any size is never held whole in memory. \
A new 256-bit data key comes from the server (`datakey/plaintext/KEY`); the output starts with a header \
holding the key's name and the data key wrapped by it, followed by AES-256-GCM chunks that are \
authenticated in order, so truncation, reordering or splicing are detected. Only a holder of \
`decrypt` on the transit key can recover the data key. Format: docs/transit.md.\n\n\
Examples:\n  \
coffer transit encrypt -key=backups -in=db.dump -out=db.dump.enc\n  \
pg_dump app | coffer transit encrypt -key=backups > app.sql.enc\n  \
coffer transit encrypt -key=per-tenant -context=tenant-42 -in=report.pdf -out=report.pdf.enc"
    )]
    Encrypt(EncryptArgs),
    /// Decrypt what `coffer transit encrypt` wrote, to a file or stdout
    #[command(
        after_help = "The key's mount and name, and the context, are read from the header (-key and \
-mount override them, e.g. for a key restored under another name). The wrapped data key is sent to \
the server's `decrypt/KEY`; the chunks are decrypted here. With -out, the plaintext is written to a \
temporary file and renamed into place only when the whole stream authenticated; on stdout it is \
written as chunks authenticate, and a damaged or truncated stream exits 1 after the good part.\n\n\
Examples:\n  \
coffer transit decrypt -in=db.dump.enc -out=db.dump\n  \
coffer transit decrypt < app.sql.enc | psql app"
    )]
    Decrypt(DecryptArgs),
}

#[derive(Args, Debug)]
pub(crate) struct Io {
    /// Input file; `-` or absent: stdin
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file; `-` or absent: stdout
    #[arg(long = "out", value_name = "FILE")]
    output: Option<PathBuf>,
    /// The transit engine's mount path
    #[arg(long)]
    mount: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct EncryptArgs {
    /// The transit key that wraps the data key (it must support encryption)
    #[arg(long)]
    key: String,
    /// Context for a derived key (sent base64-encoded; kept in the header for decryption)
    #[arg(long)]
    context: Option<String>,
    #[command(flatten)]
    io: Io,
}

#[derive(Args, Debug)]
pub(crate) struct DecryptArgs {
    /// The transit key to unwrap with (default: the one the header names)
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    io: Io,
}

/// The stream's header, as JSON after the magic and version.
#[derive(Serialize, Deserialize, Debug)]
struct Header {
    mount: String,
    key: String,
    /// The data key, wrapped: `vault:vN:...`.
    wrapped_key: String,
    /// Base64 context for derived keys; empty: none.
    #[serde(default)]
    context: String,
    /// Base64 of the 7-byte nonce prefix.
    nonce_prefix: String,
    chunk_size: usize,
    cipher: String,
}

pub(crate) async fn run(g: &Global, cmd: TransitCmd) -> Result<ExitCode> {
    match cmd {
        TransitCmd::Encrypt(a) => encrypt(g, a).await,
        TransitCmd::Decrypt(a) => decrypt(g, a).await,
    }
}

fn is_std(p: &Option<PathBuf>) -> bool {
    p.as_deref().is_none_or(|p| p == Path::new("-"))
}

fn open_input(p: &Option<PathBuf>) -> Result<Box<dyn Read>> {
    Ok(if is_std(p) {
        Box::new(BufReader::with_capacity(CHUNK, std::io::stdin()))
    } else {
        let p = p.as_deref().unwrap_or(Path::new("-"));
        Box::new(BufReader::with_capacity(
            CHUNK,
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        ))
    })
}

/// Refuses a mount path or key name that could make `<mount>/decrypt/<key>` name anything but a
/// transit decrypt endpoint (`..`, query strings, empty segments).
fn check_names(mount: &str, key: &str) -> Result<()> {
    let word = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !mount.split('/').all(word) {
        bail!("the stream names an invalid mount path {mount:?}");
    }
    if !word(key) {
        bail!("the stream names an invalid key name {key:?}");
    }
    Ok(())
}

fn mount_of(m: &Option<String>, default: &str) -> String {
    m.as_deref().unwrap_or(default).trim_matches('/').to_owned()
}

/// Chunk `i`'s nonce: prefix ‖ i ‖ final flag.
fn nonce(prefix: &[u8; 7], i: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&i.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Reads as much of `buf` as the input has; the count (less than `buf.len()` only at its end).
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("cannot read the input"),
        }
    }
    Ok(n)
}

fn preamble(header_json: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(header_json.len()).context("header too large")?;
    let mut p = Vec::with_capacity(13 + header_json.len());
    p.extend_from_slice(MAGIC);
    p.push(VERSION);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(header_json);
    Ok(p)
}

async fn encrypt(g: &Global, a: EncryptArgs) -> Result<ExitCode> {
    let c = client(g)?;
    let mount = mount_of(&a.io.mount, "transit");
    check_names(&mount, &a.key)?;
    let context = a.context.as_deref().map(|s| B64.encode(s)).unwrap_or_default();
    let mut body = json!({ "bits": 256 });
    if !context.is_empty() {
        body["context"] = json!(context);
    }
    let ans = c.write(&format!("{mount}/datakey/plaintext/{}", a.key), &body).await?;
    let data = ans.data().context("the server's datakey answer has no data")?;
    let wrapped = data
        .get("ciphertext")
        .and_then(|v| v.as_str())
        .context("the server's datakey answer has no ciphertext")?
        .to_owned();
    let dk = Zeroizing::new(
        B64.decode(
            data.get("plaintext")
                .and_then(|v| v.as_str())
                .context("the server's datakey answer has no plaintext")?,
        )
        .context("the server's data key is not base64")?,
    );
    let mut prefix = [0u8; 7];
    aws_lc_rs::rand::fill(&mut prefix).map_err(|_| anyhow::anyhow!("system RNG failed"))?;
    let header = Header {
        mount,
        key: a.key,
        wrapped_key: wrapped,
        context,
        nonce_prefix: B64.encode(prefix),
        chunk_size: CHUNK,
        cipher: "aes-256-gcm".into(),
    };
    let pre = preamble(&serde_json::to_vec(&header)?)?;
    let aad = digest::digest(&digest::SHA256, &pre);
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &dk).map_err(|_| anyhow::anyhow!("bad data key length"))?,
    );
    drop(dk);

    let mut input = open_input(&a.io.input)?;
    let out_file;
    let mut out: Box<dyn Write> = if is_std(&a.io.output) {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        let p = a.io.output.as_deref().unwrap_or(Path::new("-"));
        out_file =
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
        Box::new(BufWriter::new(out_file))
    };
    out.write_all(&pre)?;
    // Two buffers: the chunk being sealed, and the next one read ahead to know which is last.
    let mut cur = Zeroizing::new(vec![0u8; CHUNK + TAG]);
    let mut next = Zeroizing::new(vec![0u8; CHUNK + TAG]);
    let mut cur_len = read_full(&mut input, &mut cur[..CHUNK])?;
    let mut i: u32 = 0;
    loop {
        let next_len =
            if cur_len == CHUNK { read_full(&mut input, &mut next[..CHUNK])? } else { 0 };
        let last = next_len == 0;
        let tag = key
            .seal_in_place_separate_tag(
                nonce(&prefix, i, last),
                Aad::from(aad.as_ref()),
                &mut cur[..cur_len],
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        cur[cur_len..cur_len + TAG].copy_from_slice(tag.as_ref());
        let len = u32::try_from(cur_len + TAG).context("chunk too large")?;
        out.write_all(&[u8::from(last)])?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(&cur[..cur_len + TAG])?;
        if last {
            break;
        }
        std::mem::swap(&mut cur, &mut next);
        cur_len = next_len;
        i = i.checked_add(1).context("input too large for one stream (2^32 chunks)")?;
    }
    out.flush().context("cannot write the output")?;
    Ok(ExitCode::SUCCESS)
}

async fn decrypt(g: &Global, a: DecryptArgs) -> Result<ExitCode> {
    let mut input = open_input(&a.io.input)?;
    let mut fixed = [0u8; 13];
    if read_full(&mut input, &mut fixed)? < 13 || &fixed[..8] != MAGIC {
        bail!("the input is not a Coffer transit stream (no COFFERTS header)");
    }
    if fixed[8] != VERSION {
        bail!("unsupported Coffer transit stream version {}", fixed[8]);
    }
    let hlen = u32::from_be_bytes([fixed[9], fixed[10], fixed[11], fixed[12]]);
    if hlen > MAX_HEADER {
        bail!("the stream's header is too large ({hlen} bytes)");
    }
    let mut hjson = vec![0u8; hlen as usize];
    if read_full(&mut input, &mut hjson)? < hjson.len() {
        bail!("the stream is truncated inside its header");
    }
    let header: Header =
        serde_json::from_slice(&hjson).context("the stream's header is not valid")?;
    if header.cipher != "aes-256-gcm" || header.chunk_size == 0 || header.chunk_size > 16 * CHUNK {
        bail!(
            "unsupported stream parameters (cipher {:?}, chunk size {})",
            header.cipher,
            header.chunk_size
        );
    }
    let prefix: [u8; 7] = B64
        .decode(&header.nonce_prefix)
        .ok()
        .and_then(|v| v.try_into().ok())
        .context("the stream's nonce prefix is not valid")?;
    let mut pre = fixed.to_vec();
    pre.extend_from_slice(&hjson);
    let aad = digest::digest(&digest::SHA256, &pre);

    let c = client(g)?;
    let mount = mount_of(&a.io.mount, &header.mount);
    let key_name = a.key.unwrap_or_else(|| header.key.clone());
    // The header is the file's, not the user's: it may only name a decrypt endpoint.
    check_names(&mount, &key_name)?;
    let mut body = json!({ "ciphertext": header.wrapped_key });
    if !header.context.is_empty() {
        body["context"] = json!(header.context);
    }
    let ans = c.write(&format!("{mount}/decrypt/{key_name}"), &body).await?;
    let dk = Zeroizing::new(
        B64.decode(
            ans.data()
                .and_then(|d| d.get("plaintext"))
                .and_then(|v| v.as_str())
                .context("the server's decrypt answer has no plaintext")?,
        )
        .context("the unwrapped data key is not base64")?,
    );
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &dk)
            .map_err(|_| anyhow::anyhow!("the unwrapped data key has the wrong length"))?,
    );
    drop(dk);

    let (tmp, dest) = if is_std(&a.io.output) {
        (None, None)
    } else {
        let dest = a.io.output.clone().unwrap_or_default();
        let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(format!(".coffer-tmp-{}", std::process::id()));
        (Some(dest.with_file_name(name)), Some(dest))
    };
    let result = (|| -> Result<()> {
        let mut out: Box<dyn Write> = match &tmp {
            None => Box::new(BufWriter::new(std::io::stdout().lock())),
            Some(t) => Box::new(BufWriter::new(
                std::fs::File::create(t)
                    .with_context(|| format!("cannot create {}", t.display()))?,
            )),
        };
        let max = header.chunk_size + TAG;
        let mut buf = Zeroizing::new(vec![0u8; max]);
        let mut i: u32 = 0;
        loop {
            let mut rec = [0u8; 5];
            let got = read_full(&mut input, &mut rec)?;
            if got == 0 {
                bail!("the stream is truncated: it ends before its final chunk");
            }
            if got < 5 {
                bail!("the stream is truncated inside chunk {i}");
            }
            let last = match rec[0] {
                0 => false,
                1 => true,
                f => bail!("chunk {i} has an unknown flag {f}"),
            };
            let len = u32::from_be_bytes([rec[1], rec[2], rec[3], rec[4]]) as usize;
            if !(TAG..=max).contains(&len) {
                bail!("chunk {i} has an impossible length {len}");
            }
            if read_full(&mut input, &mut buf[..len])? < len {
                bail!("the stream is truncated inside chunk {i}");
            }
            let plain = key
                .open_in_place(nonce(&prefix, i, last), Aad::from(aad.as_ref()), &mut buf[..len])
                .map_err(|_| {
                    anyhow::anyhow!(
                        "chunk {i} does not authenticate: the stream was altered, reordered, or is not this key's"
                    )
                })?;
            out.write_all(plain).context("cannot write the output")?;
            if last {
                break;
            }
            i = i.checked_add(1).context("stream too long")?;
        }
        let mut extra = [0u8; 1];
        if read_full(&mut input, &mut extra)? != 0 {
            bail!("the stream has data after its final chunk");
        }
        out.flush().context("cannot write the output")?;
        Ok(())
    })();
    match (result, tmp, dest) {
        (Ok(()), Some(t), Some(d)) => {
            std::fs::rename(&t, &d)
                .with_context(|| format!("cannot rename into {}", d.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        (Ok(()), _, _) => Ok(ExitCode::SUCCESS),
        (Err(e), t, _) => {
            if let Some(t) = t {
                let _ = std::fs::remove_file(t);
            }
            Err(e)
        }
    }
}
