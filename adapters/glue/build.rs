//! The glue shares the guest's memory: it imports `env.memory` instead of defining one, and
//! `weft adapt` maps that import onto the component's memory.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--import-memory");
    }
}
