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
//! The code is panic-free by construction (raw pointers, wrapping arithmetic): a panic would
//! pull in `core::fmt` and its static data.
//!
//! The mapping of each function to its Proxy-Wasm calls is in adapters/README.md.

#![cfg_attr(target_arch = "wasm32", no_std)]
#![allow(clippy::missing_safety_doc, clippy::not_unsafe_ptr_arg_deref)]

#[cfg(target_arch = "wasm32")]
mod glue;
