//! Container image archives, as `docker save` and `podman save` write them: the legacy layout
//! (`manifest.json` naming a config and `<id>/layer.tar` files), the OCI layout (`index.json`,
//! `oci-layout`, `blobs/sha256/<hex>`, with image indexes followed), or both at once (Docker 25
//! and later). The archive itself may be gzip-compressed (`docker save | gzip`).
//!
//! Scanned: every file of every layer, uncompressed or gzip-compressed, including files that a
//! later layer deletes (a whiteout, `.wh.<name>`, or an opaque directory, `.wh..wh..opq`) or
//! replaces: those are reported as such, since they are still in the archive and in any registry
//! the image was pushed to. The image config's `Env`, `Cmd`, `Entrypoint`, `Labels` and history
//! (`created_by`: the build commands, where `ARG` and `RUN` values end up).
//!
//! Guarantees: the archive is read as a stream, twice (an index pass, then a layer pass), so its
//! size is not bounded by memory; only JSON documents up to 4 MiB are kept. Not done:
//! zstd-compressed layers (reported and skipped), foreign layers that are not in the archive.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::read::GzDecoder;
use serde::Deserialize;
use serde_json::Value;

use super::{Origin, Scanner, Source};

const MAX_JSON: u64 = 4 << 20;
const GZIP: [u8; 2] = [0x1f, 0x8b];
const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Whether `path` looks like a tar archive (possibly gzip-compressed) worth trying as an image.
pub(super) fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 265];
    let Ok(mut f) = File::open(path) else { return false };
    let n = read_up_to(&mut f, &mut head);
    if n >= 2 && head[..2] == GZIP {
        let name = path.to_string_lossy().to_ascii_lowercase();
        return name.ends_with(".tar.gz") || name.ends_with(".tgz");
    }
    n >= 262 && &head[257..262] == b"ustar"
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// The archive, decompressed when it is gzip.
fn open(path: &Path) -> Result<Box<dyn Read>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = BufReader::new(f);
    let gz = r.fill_buf()?.starts_with(&GZIP);
    Ok(if gz { Box::new(GzDecoder::new(r)) } else { Box::new(r) })
}

fn entry_name(e: &tar::Entry<'_, impl Read>) -> Result<String> {
    let p = e.path()?;
    let s = p.to_string_lossy();
    Ok(s.trim_start_matches("./").trim_start_matches('/').to_owned())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LegacyManifest {
    #[serde(default)]
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// One image in the archive: its name, config document and layer entries, bottom first.
struct Image {
    name: String,
    config: Option<String>,
    layers: Vec<String>,
}

pub(super) fn scan_archive(s: &mut Scanner<'_>, path: &Path, target: &str) -> Result<()> {
    // Pass 1: the names of all entries, and the JSON documents.
    let mut names = HashSet::new();
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut ar = tar::Archive::new(open(path)?);
    for e in ar.entries().with_context(|| format!("{target} is not a tar archive"))? {
        let mut e = e.with_context(|| format!("{target}: a damaged tar entry"))?;
        let name = entry_name(&e)?;
        if e.header().entry_type().is_file() && e.size() <= MAX_JSON {
            let mut buf = Vec::new();
            e.read_to_end(&mut buf)?;
            if matches!(buf.first(), Some(b'{' | b'[')) {
                docs.insert(name.clone(), buf);
            }
        }
        names.insert(name);
    }
    let images = images(&docs, &names);
    if images.is_empty() {
        bail!(
            "{target} is a tar archive but not an image archive (no manifest.json or index.json): \
             unpack it and scan the directory"
        );
    }
    // Where each layer entry is first used: (image, layer index).
    let mut layer_of: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, img) in images.iter().enumerate() {
        for (j, l) in img.layers.iter().enumerate() {
            layer_of.entry(l.as_str()).or_insert((i, j));
        }
        if let Some(c) = &img.config
            && let Some(doc) = docs.get(c)
        {
            scan_config(s, target, &img.name, c, doc);
        }
        for l in &img.layers {
            if !names.contains(l) {
                s.warn(format!("{target}: layer {l} of {} is not in the archive", img.name));
            }
        }
    }
    // Pass 2: the layers, with what each deletes and holds, to annotate the findings after.
    let mut changes: HashMap<(usize, usize), LayerChanges> = HashMap::new();
    let first_finding = s.findings.len();
    let mut finding_layer: Vec<(usize, (usize, usize))> = Vec::new();
    let mut ar = tar::Archive::new(open(path)?);
    for e in ar.entries()? {
        let e = e?;
        let name = entry_name(&e)?;
        let Some(&at) = layer_of.get(name.as_str()) else { continue };
        let before = s.findings.len();
        let c = scan_layer(s, e, target, &name)?;
        s.stats.layers += 1;
        finding_layer.extend((before..s.findings.len()).map(|f| (f, at)));
        changes.insert(at, c);
    }
    for (f, (img, layer)) in finding_layer {
        debug_assert!(f >= first_finding);
        let path = s.findings[f].origin.path.clone();
        let later = (layer + 1..images[img].layers.len())
            .filter_map(|j| Some((j, changes.get(&(img, j))?)));
        let mut note = format!("layer {} of {}", layer + 1, images[img].layers.len());
        for (j, c) in later {
            if c.deletes(&path) {
                note.push_str(&format!(", deleted by layer {} (whiteout): not in the final filesystem, still in the image", j + 1));
                break;
            }
            if c.files.contains(&path) {
                note.push_str(&format!(", replaced by layer {}: still in the image", j + 1));
                break;
            }
        }
        s.findings[f].origin.note = Some(note);
    }
    Ok(())
}

/// The images the archive's index documents describe: `manifest.json` when present (it names
/// everything, in both layouts), else the OCI `index.json`, following nested indexes.
fn images(docs: &HashMap<String, Vec<u8>>, names: &HashSet<String>) -> Vec<Image> {
    if let Some(m) = docs.get("manifest.json")
        && let Ok(list) = serde_json::from_slice::<Vec<LegacyManifest>>(m)
    {
        return list
            .into_iter()
            .map(|m| Image {
                name: m
                    .repo_tags
                    .and_then(|t| t.into_iter().next())
                    .unwrap_or_else(|| m.config.clone()),
                config: Some(m.config).filter(|c| !c.is_empty()),
                layers: m.layers,
            })
            .collect();
    }
    let mut out = Vec::new();
    if let Some(index) =
        docs.get("index.json").and_then(|d| serde_json::from_slice::<Value>(d).ok())
    {
        let mut pending = vec![(index, String::new())];
        let mut guard = 0;
        while let Some((doc, name)) = pending.pop() {
            guard += 1;
            if guard > 1000 {
                break;
            }
            for m in doc["manifests"].as_array().into_iter().flatten() {
                let ref_name = m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| name.clone());
                let Some(blob) = m["digest"].as_str().and_then(blob_name) else { continue };
                let Some(child) =
                    docs.get(&blob).and_then(|d| serde_json::from_slice::<Value>(d).ok())
                else {
                    continue;
                };
                if child.get("manifests").is_some() {
                    pending.push((child, ref_name));
                } else if let Some(layers) = child["layers"].as_array() {
                    let layers: Vec<String> = layers
                        .iter()
                        .filter_map(|l| l["digest"].as_str().and_then(blob_name))
                        .collect();
                    let config = child["config"]["digest"].as_str().and_then(blob_name);
                    let name = if ref_name.is_empty() {
                        m["digest"].as_str().unwrap_or("").to_owned()
                    } else {
                        ref_name
                    };
                    out.push(Image { name, config, layers });
                }
            }
        }
    }
    out.retain(|i| i.layers.iter().any(|l| names.contains(l)) || i.config.is_some());
    out
}

/// `sha256:<hex>` to its entry, `blobs/sha256/<hex>`.
fn blob_name(digest: &str) -> Option<String> {
    let (alg, hex) = digest.split_once(':')?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (ok(alg) && ok(hex)).then(|| format!("blobs/{alg}/{hex}"))
}

/// What a layer deletes (whiteouts, opaque directories) and the regular files it holds.
#[derive(Default)]
struct LayerChanges {
    whiteouts: HashSet<String>,
    opaque_dirs: HashSet<String>,
    files: HashSet<String>,
}

impl LayerChanges {
    /// Whether this layer hides `path` of a lower layer.
    fn deletes(&self, path: &str) -> bool {
        if self.whiteouts.contains(path) {
            return true;
        }
        let mut p = path;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if self.whiteouts.contains(p) || self.opaque_dirs.contains(p) {
                return true;
            }
        }
        self.opaque_dirs.contains("")
    }
}

fn scan_layer(
    s: &mut Scanner<'_>,
    entry: tar::Entry<'_, impl Read>,
    target: &str,
    layer: &str,
) -> Result<LayerChanges> {
    let mut r = BufReader::new(entry);
    let head = r.fill_buf()?;
    let inner: Box<dyn Read + '_> = if head.starts_with(&GZIP) {
        Box::new(GzDecoder::new(r))
    } else if head.starts_with(&ZSTD) {
        s.warn(format!(
            "{target}: layer {layer} is zstd-compressed, which this scanner does not read"
        ));
        return Ok(LayerChanges::default());
    } else {
        Box::new(r)
    };
    let mut changes = LayerChanges::default();
    let mut ar = tar::Archive::new(inner);
    for e in
        ar.entries().with_context(|| format!("{target}: layer {layer} is not a tar archive"))?
    {
        let mut e = e.with_context(|| format!("{target}: layer {layer} has a damaged entry"))?;
        let path = entry_name(&e)?.trim_end_matches('/').to_owned();
        let (dir, base) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if base == ".wh..wh..opq" {
            changes.opaque_dirs.insert(dir.to_owned());
            continue;
        }
        if let Some(hidden) = base.strip_prefix(".wh.") {
            changes.whiteouts.insert(if dir.is_empty() {
                hidden.to_owned()
            } else {
                format!("{dir}/{hidden}")
            });
            continue;
        }
        if !e.header().entry_type().is_file() || s.detector.skips_path(&path) {
            continue;
        }
        changes.files.insert(path.clone());
        let mut origin = Origin::new(Source::Image, target, &path);
        origin.layer = Some(layer_id(layer));
        if e.size() > s.max_size {
            s.too_large(&origin);
            continue;
        }
        let mut buf = Vec::new();
        e.read_to_end(&mut buf)?;
        s.blob(&origin, &buf);
    }
    Ok(changes)
}

/// A layer's digest when its entry is a blob, else its entry name (`<id>/layer.tar`).
fn layer_id(entry: &str) -> String {
    match entry.strip_prefix("blobs/").and_then(|r| r.split_once('/')) {
        Some((alg, hex)) => format!("{alg}:{hex}"),
        None => entry.to_owned(),
    }
}

/// The config's environment, command, labels and build history, each scanned as lines of text.
fn scan_config(s: &mut Scanner<'_>, target: &str, image: &str, entry: &str, doc: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(doc) else {
        s.warn(format!("{target}: the config {entry} of {image} is not JSON"));
        return;
    };
    let strings = |x: &Value| -> Vec<String> {
        x.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
    };
    let cfg = &v["config"];
    let labels: Vec<String> = cfg["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let history: Vec<String> = v["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["created_by"].as_str().unwrap_or_default().to_owned())
        .collect();
    let parts = [
        ("config Env", strings(&cfg["Env"])),
        ("config Cmd", strings(&cfg["Cmd"])),
        ("config Entrypoint", strings(&cfg["Entrypoint"])),
        ("config Labels", labels),
        ("history created_by", history),
    ];
    for (what, lines) in parts {
        if lines.is_empty() {
            continue;
        }
        let mut origin = Origin::new(Source::Image, target, &format!("[{what}]"));
        origin.layer = Some(layer_id(entry));
        origin.note = Some(format!("{image}: image config, {what} (line = entry number)"));
        // One entry per line, so a finding's line number is the entry's.
        let text = lines.iter().map(|l| l.replace('\n', " ")).collect::<Vec<_>>().join("\n");
        s.blob(&origin, text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_files() {
        let mut c = LayerChanges::default();
        c.whiteouts.insert("etc/app/secret.env".into());
        c.whiteouts.insert("opt/tool".into());
        c.opaque_dirs.insert("var/cache".into());
        assert!(c.deletes("etc/app/secret.env"));
        assert!(c.deletes("opt/tool/bin/run"), "a deleted directory's files");
        assert!(c.deletes("var/cache/x/y"), "an opaque directory hides everything below");
        assert!(!c.deletes("etc/app/other.env"));
        assert!(!c.deletes("var/cached"));
        c.opaque_dirs.insert(String::new());
        assert!(c.deletes("anything"), "an opaque root");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A damaged or hostile archive is an error or a scan, never a panic: random bytes, and
        /// a valid tar header followed by random bytes.
        #[test]
        fn any_archive_bytes_are_refused_or_scanned_without_panic(
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            with_header in proptest::bool::ANY,
        ) {
            let mut bytes = Vec::new();
            if with_header {
                let mut h = tar::Header::new_gnu();
                h.set_size(tail.len() as u64);
                h.set_path("manifest.json").expect("path");
                h.set_cksum();
                bytes.extend_from_slice(h.as_bytes());
            }
            bytes.extend_from_slice(&tail);
            let dir = tempfile::tempdir().expect("tmp");
            let p = dir.path().join("x.tar");
            std::fs::write(&p, &bytes).expect("write");
            let detector = super::super::Detector {
                rules: super::super::rules::RuleSet::builtin().expect("rules"),
                entropy: None,
            };
            let mut s = super::super::tests::scanner(&detector);
            let _ = scan_archive(&mut s, &p, "x.tar");
        }
    }

    #[test]
    fn digests_name_blob_entries_and_nothing_else() {
        assert_eq!(blob_name("sha256:abc123").as_deref(), Some("blobs/sha256/abc123"));
        assert_eq!(blob_name("sha256:../x"), None);
        assert_eq!(blob_name("nocolon"), None);
        assert_eq!(layer_id("blobs/sha256/abc"), "sha256:abc");
        assert_eq!(layer_id("abc/layer.tar"), "abc/layer.tar");
    }
}
