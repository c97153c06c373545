//! Building the guest crates to wasm. Shared by `cargo xtask build-guests`, by the tests (the
//! native Proxy-Wasm filter) and by the build scripts of the host, the adapter and the tests, so
//! all of them build the same way into the same target directory.
//!
//! Standard library only: it is a build-dependency, compiled before anything else.

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
/// drops the `guest-` prefix (`pii-mask`), sorted by name. `cargo` is the cargo binary to run.
pub fn build_guests(workspace: &Path, cargo: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let target_dir = cargo_wasm_build(workspace, cargo, &["guest-*"], GUEST_TARGET)?;
    let out_dir = component_dir(&target_dir);
    let mut guests = Vec::new();
    let entries = std::fs::read_dir(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(name) = component_name(file) else {
            continue;
        };
        guests.push((name, path));
    }
    guests.sort();
    Ok(guests)
}

/// Builds the named guest packages (e.g. `["guest-pii-mask", "guest-sampler"]`, the plugins a
/// binary embeds) in one cargo run and returns `(name, path)` for each component, in the order
/// given; `name` is the package name without its `guest-` prefix, as in [`build_guests`].
pub fn build_guest_packages(
    workspace: &Path,
    cargo: &str,
    packages: &[&str],
) -> Result<Vec<(String, PathBuf)>, String> {
    if packages.is_empty() {
        // `cargo build` with no `--package` would build the workspace's default members.
        return Ok(Vec::new());
    }
    let target_dir = cargo_wasm_build(workspace, cargo, packages, GUEST_TARGET)?;
    let out_dir = component_dir(&target_dir);
    packages
        .iter()
        .map(|package| {
            // A library's artifact has underscores (`guest_pii_mask.wasm`), a binary's the
            // package name as it is (`guest-not-a-plugin.wasm`).
            let path = [package.replace('-', "_"), package.to_string()]
                .iter()
                .map(|stem| out_dir.join(format!("{stem}.wasm")))
                .find(|path| path.is_file())
                .ok_or_else(|| {
                    format!(
                        "{package}: no component in {} after the build",
                        out_dir.display()
                    )
                })?;
            let name = package.strip_prefix("guest-").unwrap_or(package);
            Ok((name.to_string(), path))
        })
        .collect()
}

/// Builds one package as a plain core module for `target` (e.g. `wasm32-unknown-unknown`, where
/// rustc emits no component: the Proxy-Wasm glue, the native SDK filter, a guest to componentize
/// with wit-component) and returns the module's path.
pub fn build_core_guest(
    workspace: &Path,
    cargo: &str,
    package: &str,
    target: &str,
) -> Result<PathBuf, String> {
    let target_dir = cargo_wasm_build(workspace, cargo, &[package], target)?;
    Ok(target_dir
        .join(target)
        .join(GUEST_PROFILE)
        .join(format!("{}.wasm", package.replace('-', "_"))))
}

/// Where the components of a build into `target_dir` are.
fn component_dir(target_dir: &Path) -> PathBuf {
    target_dir.join(GUEST_TARGET).join(GUEST_PROFILE)
}

/// The component name of a guest artifact: `guest_pii_mask.wasm` (a library) or
/// `guest-not-a-plugin.wasm` (a binary) → `pii-mask`, `not-a-plugin`; `None` for other files.
fn component_name(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".wasm")?;
    let name = stem
        .strip_prefix("guest_")
        .or_else(|| stem.strip_prefix("guest-"))?;
    Some(name.replace('_', "-"))
}

/// `cargo build --package <package>… --target <target> --profile guest` into
/// [`guest_target_dir`], with none of the outer build's settings; returns the target directory.
fn cargo_wasm_build(
    workspace: &Path,
    cargo: &str,
    packages: &[&str],
    target: &str,
) -> Result<PathBuf, String> {
    let target_dir = guest_target_dir(workspace);
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).arg("build");
    for package in packages {
        cmd.args(["--package", package]);
    }
    cmd.args(["--target", target, "--profile", GUEST_PROFILE])
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
            "building {} for {target} failed ({status}); is the target installed? \
             `rustup target add {target}`",
            packages.join(", ")
        ));
    }
    Ok(target_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_drop_the_guest_prefix() {
        assert_eq!(
            component_name("guest_pii_mask.wasm").as_deref(),
            Some("pii-mask")
        );
        assert_eq!(
            component_name("guest-not-a-plugin.wasm").as_deref(),
            Some("not-a-plugin")
        );
        assert_eq!(component_name("guest_pii_mask.d"), None);
        assert_eq!(component_name("weft_proxy_glue.wasm"), None);
    }
}
