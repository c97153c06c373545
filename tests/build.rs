//! Builds every guest component from source and emits one path constant per component into
//! `$OUT_DIR/guests.rs` (e.g. `PII_MASK`), so tests never depend on a stale or committed .wasm.

use std::path::{Path, PathBuf};

#[path = "../xtask/src/guests.rs"]
mod guests;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ws = manifest
        .parent()
        .map(Path::to_path_buf)
        .expect("tests/ is inside the workspace");
    for dir in ["wit", "guests"] {
        println!("cargo:rerun-if-changed={}", ws.join(dir).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = match guests::build_guests(&ws, &cargo) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    let mut src = String::new();
    for (name, path) in &built {
        let ident = name.to_uppercase().replace('-', "_");
        src.push_str(&format!(
            "/// The `{name}` component, built from guests/ by build.rs.\npub const {ident}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(out, src).expect("write guests.rs");
}
