//! Builds the two plugins built into `weft` (guests/pii-mask, guests/sampler) from source with the
//! shared guest build routine (xtask/guest-build) and points `WEFT_BUILTIN_DIR` at them, so
//! `weft run` works with no files and a `cargo run -p weft` builds no other guest.

use std::path::{Path, PathBuf};

/// The guest packages `builtin.rs` embeds.
const BUILTINS: [&str; 2] = ["guest-pii-mask", "guest-sampler"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ws = manifest
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("host/weft is inside the workspace");
    for dir in [
        "wit",
        "guests/sdk",
        "guests/lib",
        "guests/pii-mask",
        "guests/sampler",
    ] {
        println!("cargo:rerun-if-changed={}", ws.join(dir).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = weft_guest_build::build_guest_packages(&ws, &cargo, &BUILTINS)
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = built
        .first()
        .and_then(|(_, path)| path.parent())
        .expect("two components were built");
    println!("cargo:rustc-env=WEFT_BUILTIN_DIR={}", dir.display());
}
