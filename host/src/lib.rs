//! weft's host: runs observability plugins — WebAssembly components of the `weft:plugin` WIT
//! worlds — over OTLP data, sandboxed and under limits.
//!
//! - [`WeftEngine`]: the one wasmtime engine (Cranelift, pooling, epoch interruption) with an
//!   on-disk cache of compiled components.
//! - [`PluginHost`] loads a component into a [`Plugin`]: checks its world, links the weft
//!   interfaces and a WASI with no ambient authority, runs `init` with the configuration.
//! - [`Plugin::process_traces`] / [`Plugin::process_logs`] run a plugin over OTLP requests with
//!   its CPU deadline, memory cap and [`FailPolicy`]; [`convert`] is the lossless OTLP ↔ WIT
//!   mapping; [`MetricsRegistry`] holds the self-metrics in Prometheus form.
//! - [`proxy`]: the HTTP filter proxy, running `http-filter` components ([`Filter`]) with
//!   Envoy's filter-chain semantics on the same instance pool and limits.

pub mod bindings;
pub mod builtin;
pub mod collector;
pub mod convert;
pub mod engine;
pub mod error;
pub mod inspect;
pub mod kv;
pub mod metrics;
pub mod otlp_io;
pub mod plugin;
pub mod proxy;
mod state;

pub use engine::{EngineSettings, WeftEngine};
pub use error::{CallError, ConvertError, LoadError, TrapKind};
pub use metrics::{MetricsRegistry, PluginMetrics};
pub use plugin::{
    BatchReport, Capabilities, FailPolicy, InstanceReuse, Plugin, PluginHost, PluginSettings,
    ProcessError, Worlds,
};
pub use proxy::Filter;
