//! Builds the glue module (adapters/glue) for wasm32-unknown-unknown and points `WEFT_PROXY_GLUE`
//! at it, so `weft adapt` embeds a glue built from source in this very build.

use std::path::{Path, PathBuf};

use weft_guest_build as guests;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ws = manifest
        .parent()
        .map(Path::to_path_buf)
        .expect("adapters/ is in the workspace");
    println!("cargo:rerun-if-changed={}", manifest.join("glue").display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let glue = guests::build_core_guest(&ws, &cargo, "weft-proxy-glue", "wasm32-unknown-unknown")
        .unwrap_or_else(|e| panic!("the Proxy-Wasm glue: {e}"));
    println!("cargo:rustc-env=WEFT_PROXY_GLUE={}", glue.display());
}
