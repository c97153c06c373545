//! Builds the glue module (adapters/glue) for wasm32-unknown-unknown and points `WEFT_PROXY_GLUE`
//! at it, so `weft adapt` embeds a glue built from source in this very build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ws = manifest
        .parent()
        .map(Path::to_path_buf)
        .expect("adapters/ is in the workspace");
    println!("cargo:rerun-if-changed={}", manifest.join("glue").display());
    let target_dir = ws.join("target").join("wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&ws)
        .args([
            "build",
            "--package",
            "weft-proxy-glue",
            "--target",
            "wasm32-unknown-unknown",
            "--release",
        ])
        .env("CARGO_TARGET_DIR", &target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the glue");
    if !status.success() {
        panic!(
            "building the Proxy-Wasm glue failed ({status}); is the target installed? \
             `rustup target add wasm32-unknown-unknown`"
        );
    }
    let glue = target_dir.join("wasm32-unknown-unknown/release/weft_proxy_glue.wasm");
    println!("cargo:rustc-env=WEFT_PROXY_GLUE={}", glue.display());
}
