//! Bakes the absolute path of the WIT package this SDK carries (`wit/`, beside this file) into
//! the export macros. `wit_bindgen::generate!` resolves a relative `path` against the crate it
//! expands in — the plugin's — so the macros name the SDK's own copy by its absolute path: a
//! plugin anywhere on disk (a path, git or registry dependency) builds against the WIT of the
//! SDK version it depends on, with nothing to copy.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let wit = manifest.join("wit");
    let wit = wit.canonicalize().unwrap_or_else(|e| {
        panic!(
            "weft-guest: the WIT package {} is missing: {e}",
            wit.display()
        )
    });
    let wit = wit
        .to_str()
        .unwrap_or_else(|| panic!("weft-guest: {} is not UTF-8", wit.display()));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    // `{:?}` writes a Rust string literal (quotes and escapes included).
    let source = format!(
        "/// The WIT directory every export macro reads: the SDK's own `wit/`.\n\
         #[doc(hidden)]\n\
         #[macro_export]\n\
         macro_rules! __weft_wit_dir {{\n    \
             ($($then:tt)*) => {{ $crate::__weft_bindings!([{wit:?}], $($then)*); }};\n\
         }}\n"
    );
    std::fs::write(out.join("wit_dir.rs"), source).expect("write wit_dir.rs");
}
