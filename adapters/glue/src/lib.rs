//! The glue that `weft adapt` links into an http-filter component's main core module.
//!
//! It exports the Proxy-Wasm 0.2.1 ABI (`proxy_on_*`) that Envoy calls, and implements every
//! import of the `weft:plugin/http-filter` world (and the WASI 0.2 functions a Rust `std` guest
//! imports) with `env.proxy_*` host calls. After fusion, it is part of the guest's module:
//!
//! * it uses the guest's memory (`env.memory` here) and the guest's `__stack_pointer`;
//! * every byte it needs comes from the guest's `cabi_realloc`: it has no data segments, no
//!   statics in memory and no stack of its own at a fixed address (the fuser's verify step
//!   rejects a glue build that has any). Its one root pointer lives in a wasm global that the
//!   fuser adds (`weft:glue.state` / `weft:glue.set_state`);
//! * functions of the guest it calls are imported from the module `weft:guest` under the names
//!   the guest exports them as;
//! * it never frees: `cabi_realloc` cannot free, so every buffer the glue owns is reused (one
//!   scratch buffer, growable tables), and every buffer it hands to the guest is the guest's to
//!   free. Memory therefore does not grow with the number of requests.
//!
//! The code is panic-free by construction (no indexing that can fail, no `unwrap`, wrapping
//! arithmetic where it could overflow): a panic would pull in `core::fmt` and its static data.
//!
//! The Proxy-Wasm exports and the WIT imports are in `glue` (wasm32 only). The data structures
//! are modules of their own that also build natively, for their unit tests: the byte buffer
//! ([`buf`]), the context table ([`contexts`]), the resource handles ([`handles`]), the metric
//! ids ([`metrics`]), Proxy-Wasm header maps ([`header_map`]) and the configuration's JSON
//! reader ([`json`]); [`abi`] has the canonical-ABI layouts, [`mem`] the allocator.
//!
//! The mapping of each function to its Proxy-Wasm calls is in adapters/README.md.

#![cfg_attr(target_arch = "wasm32", no_std)]
#![warn(clippy::undocumented_unsafe_blocks)]
// Natively only the unit tests use the data structures; the wasm32 build uses all of them.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod abi;
mod buf;
mod contexts;
mod handles;
mod header_map;
mod json;
mod mem;
mod metrics;

#[cfg(target_arch = "wasm32")]
mod glue;
