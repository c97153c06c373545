//! Builds the guest components from source (see xtask/guest-build) so the CLI tests in
//! host/tests/ can run them; `WEFT_GUEST_DIR` tells them where the components are.

use std::path::{Path, PathBuf};

use weft_guest_build as guests;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ws = manifest
        .parent()
        .map(Path::to_path_buf)
        .expect("host/ is inside the workspace");
    for dir in ["wit", "guests"] {
        println!("cargo:rerun-if-changed={}", ws.join(dir).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if let Err(e) = guests::build_guests(&ws, &cargo) {
        panic!("{e}");
    }
    let dir = guests::guest_target_dir(&ws)
        .join(guests::GUEST_TARGET)
        .join(guests::GUEST_PROFILE);
    println!("cargo:rustc-env=WEFT_GUEST_DIR={}", dir.display());
}
