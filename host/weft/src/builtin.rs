//! Plugins built into the `weft` binary, so `weft run` works with no files at all. build.rs
//! compiles them from guests/ (and only them) and they are embedded here.

/// Names of the built-in plugins (`builtin:<name>` in a configuration).
pub const NAMES: [&str; 2] = ["pii-mask", "sampler"];

/// The component bytes of built-in plugin `name`.
pub fn get(name: &str) -> Option<&'static [u8]> {
    match name {
        "pii-mask" => Some(include_bytes!(concat!(
            env!("WEFT_BUILTIN_DIR"),
            "/guest_pii_mask.wasm"
        ))),
        "sampler" => Some(include_bytes!(concat!(
            env!("WEFT_BUILTIN_DIR"),
            "/guest_sampler.wasm"
        ))),
        _ => None,
    }
}
