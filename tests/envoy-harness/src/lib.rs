//! Envoy as a test peer, shared by weft's Envoy tests (`weft_tests::envoy` re-exports it) and
//! `cargo xtask bench envoy`, so the benchmark runs Envoy exactly as the tests do:
//!
//! - [`config`]: finding the Envoy binary and writing its bootstrap;
//! - [`process`]: a running Envoy with admin helpers, and a small blocking HTTP/1.1 client.
//!
//! Standard library, `anyhow` and `serde_json` only.

pub mod config;
pub mod process;

pub use config::{ENVOY_ENV, EnvoyConfig, LISTENER_NAME, WasmFilter, envoy_binary, find_envoy};
pub use process::{Envoy, HttpResponse, clock_ticks_per_second, http_request, validate};
