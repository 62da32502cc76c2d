//! Release builds lay out the functions a server and an agent run first in `.text`, in the order
//! `symbol-order.txt` gives (made by `scripts/symbol-order`), so the pages a process touches are
//! few and adjacent and its resident memory is small: the kernel maps file pages around every
//! page touched, and scattered hot functions pull in most of a 17 MiB `.text`.
//!
//! Only where the linker is known to be lld (rustc's default for x86_64-unknown-linux-gnu since
//! 1.90); `--no-warn-symbol-ordering` because a listed function that a later change renamed or
//! removed costs memory, not correctness (`scripts/bench` reports how many are still found).
//! `COFFER_SYMBOL_ORDER=0` turns it off, for a build with another linker.

fn main() {
    println!("cargo::rerun-if-changed=symbol-order.txt");
    println!("cargo::rerun-if-env-changed=COFFER_SYMBOL_ORDER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let release = var("PROFILE") == "release";
    let lld_by_default = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if !release || !lld_by_default || var("COFFER_SYMBOL_ORDER") == "0" {
        return;
    }
    let file = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    if file.exists() {
        println!("cargo::rustc-link-arg-bin=coffer=-Wl,--symbol-ordering-file={}", file.display());
        println!("cargo::rustc-link-arg-bin=coffer=-Wl,--no-warn-symbol-ordering");
    }
}
