//! Building the guest components. Shared, via `#[path]`, by `cargo xtask build-guests` and by the
//! tests' build script, so both build the same way into the same target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Rust target guests are built for (rustc emits a component directly).
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// The cargo profile for guests (size- and speed-tuned, see the workspace Cargo.toml).
pub const GUEST_PROFILE: &str = "guest";

/// The target directory for guests: beside the host's, so nested cargo runs never wait on the
/// lock of the cargo that runs a build script.
pub fn guest_target_dir(workspace: &Path) -> PathBuf {
    workspace.join("target").join("wasm")
}

/// Builds every `guest-*` package and returns `(name, path)` for each component, where `name`
/// drops the `guest-` prefix (`pii-mask`). `cargo` is the cargo binary to run.
pub fn build_guests(workspace: &Path, cargo: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let target_dir = cargo_wasm_build(workspace, cargo, "guest-*", GUEST_TARGET)?;
    let out_dir = target_dir.join(GUEST_TARGET).join(GUEST_PROFILE);
    let mut guests = Vec::new();
    let entries = std::fs::read_dir(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(stem) = file.strip_suffix(".wasm") else {
            continue;
        };
        let Some(name) = stem
            .strip_prefix("guest_")
            .or_else(|| stem.strip_prefix("guest-"))
        else {
            continue;
        };
        guests.push((name.replace('_', "-"), path));
    }
    guests.sort();
    Ok(guests)
}

/// Builds one package as a plain core module for `target` (e.g. `wasm32-unknown-unknown`, where
/// rustc emits no component: the Proxy-Wasm glue, the native SDK filter, a guest to componentize
/// with wit-component) and returns the module's path.
#[allow(dead_code)] // used by the build scripts and the tests, not by xtask itself
pub fn build_core_guest(
    workspace: &Path,
    cargo: &str,
    package: &str,
    target: &str,
) -> Result<PathBuf, String> {
    let target_dir = cargo_wasm_build(workspace, cargo, package, target)?;
    Ok(target_dir
        .join(target)
        .join(GUEST_PROFILE)
        .join(format!("{}.wasm", package.replace('-', "_"))))
}

/// `cargo build --package <package> --target <target> --profile guest` into
/// [`guest_target_dir`], with none of the outer build's settings; returns the target directory.
fn cargo_wasm_build(
    workspace: &Path,
    cargo: &str,
    package: &str,
    target: &str,
) -> Result<PathBuf, String> {
    let target_dir = guest_target_dir(workspace);
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--package",
            package,
            "--target",
            target,
            "--profile",
            GUEST_PROFILE,
        ])
        .env("CARGO_TARGET_DIR", &target_dir);
    // A build script's environment describes the outer build (flags, clippy's wrapper, the
    // jobserver); the wasm build must not inherit it.
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
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building {package} for {target} failed ({status}); is the target installed? \
             `rustup target add {target}`"
        ));
    }
    Ok(target_dir)
}
