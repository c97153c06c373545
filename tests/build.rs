//! Builds every guest component from source and emits one path constant per component into
//! `$OUT_DIR/guests.rs` (e.g. `PII_MASK`), so tests never depend on a stale or committed .wasm.

use std::path::{Path, PathBuf};

use weft_guest_build as guests;

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
    // ab-router again, built for wasm32-unknown-unknown (a core module, no WASI) and made a
    // component here with wit-component, as `wasm-tools component new` would.
    let core = guests::build_core_guest(&ws, &cargo, "guest-ab-router", "wasm32-unknown-unknown")
        .unwrap_or_else(|e| panic!("{e}"));
    let module = std::fs::read(&core).unwrap_or_else(|e| panic!("{}: {e}", core.display()));
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|enc| enc.validate(true).encode())
        .unwrap_or_else(|e| panic!("componentizing {}: {e:#}", core.display()));
    let unknown = core.with_file_name("guest_ab_router.component.wasm");
    std::fs::write(&unknown, component).expect("write the componentized ab-router");
    src.push_str(&format!(
        "/// ab-router built for wasm32-unknown-unknown, componentized with wit-component.\npub const AB_ROUTER_UNKNOWN: &str = {:?};\n",
        unknown.display().to_string()
    ));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(out, src).expect("write guests.rs");
}
