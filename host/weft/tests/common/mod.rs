#![allow(dead_code)] // each test binary uses its own part of it

//! What the `weft` crate's integration tests share: the workspace root and the guest components,
//! built from source once per test binary with the shared guest build routine (the `weft`
//! binary's own build script builds only the two built-in plugins).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host/weft is two levels inside the workspace")
        .to_path_buf()
}

/// The component of guest `name` (`pii-mask`, `fault`, ...), every guest built on first use.
pub fn guest(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = weft_guest_build::build_guests(&workspace(), &cargo)
            .unwrap_or_else(|e| panic!("building the guests: {e}"));
        built
            .first()
            .and_then(|(_, p)| p.parent())
            .map(Path::to_path_buf)
            .expect("the guests were built")
    });
    dir.join(format!("guest_{}.wasm", name.replace('-', "_")))
}
