//! Release builds are laid out so that a process touches few pages of the binary, since resident
//! memory counts every page of it the kernel maps, and the kernel maps file pages around every
//! page touched:
//!
//! - The functions a server and an agent run come first in `.text`, in the order
//!   `symbol-order.txt` gives (made by `scripts/symbol-order`): scattered over a 17 MiB `.text`,
//!   they pull in most of it; packed, only the block they fill.
//! - With `COFFER_RELR=1` (the `Containerfile` sets it), relative relocations are packed
//!   (`-z pack-relative-relocs`, glibc's DT_RELR): the dynamic loader reads every relocation at
//!   start, and as RELA entries (24 bytes each) they fill about 1 MiB of the file, which stays
//!   mapped: an idle agent measured 0.4 to 1.2 MiB smaller (docs/performance.md); packed, they
//!   take 16 KiB. Not by default: such a binary needs glibc 2.36 or later where it runs (the
//!   link records `GLIBC_ABI_DT_RELR`, and an older glibc refuses to start it), where one built
//!   on Debian 12 without it runs from glibc 2.34.
//!
//! Only where the linker is known to be lld (rustc's default for x86_64-unknown-linux-gnu since
//! 1.90). `--no-warn-symbol-ordering` because a listed function that a later change renamed or
//! removed costs memory, not correctness (`scripts/bench` reports how many are still found).
//! DT_RELR only in a native build whose glibc defines it: linked against an older one, the
//! binary would start unrelocated instead of refusing. `COFFER_SYMBOL_ORDER=0` turns the order
//! off, and both are off for a build with another linker.

fn main() {
    println!("cargo::rerun-if-changed=symbol-order.txt");
    println!("cargo::rerun-if-env-changed=COFFER_SYMBOL_ORDER");
    println!("cargo::rerun-if-env-changed=COFFER_RELR");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let release = var("PROFILE") == "release";
    let lld_by_default = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if !release || !lld_by_default {
        return;
    }
    let file = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    if var("COFFER_SYMBOL_ORDER") != "0" && file.exists() {
        println!("cargo::rustc-link-arg-bin=coffer=-Wl,--symbol-ordering-file={}", file.display());
        println!("cargo::rustc-link-arg-bin=coffer=-Wl,--no-warn-symbol-ordering");
    }
    if var("COFFER_RELR") == "1" {
        if var("TARGET") == var("HOST") && host_glibc_has_relr() {
            println!("cargo::rustc-link-arg-bin=coffer=-Wl,-z,pack-relative-relocs");
        } else {
            println!(
                "cargo::warning=COFFER_RELR=1 ignored: the build host's glibc has no DT_RELR \
                 support (2.36 or later), or this is a cross build"
            );
        }
    }
}

/// Whether the libc.so.6 the link will use defines the version glibc gave DT_RELR support.
fn host_glibc_has_relr() -> bool {
    let Ok(out) = std::process::Command::new("cc").arg("-print-file-name=libc.so.6").output()
    else {
        return false;
    };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // A bare name back means cc did not find it.
    if !out.status.success() || !path.starts_with('/') {
        return false;
    }
    println!("cargo::rerun-if-changed={path}");
    let Ok(libc) = std::fs::read(&path) else {
        return false;
    };
    let needle = b"GLIBC_ABI_DT_RELR";
    libc.windows(needle.len()).any(|w| w == needle)
}
