//! weft's plugin runtime: runs observability plugins — WebAssembly components of the
//! `weft:plugin` WIT worlds — sandboxed and under limits. The collector (`weft-collector`) and the
//! filter proxy (`weft-proxy`) are built on it; neither depends on the other.
//!
//! - [`WeftEngine`]: the one wasmtime engine (Cranelift, pooling, epoch interruption) with an
//!   on-disk cache of compiled components.
//! - [`PluginHost`] loads a component into a [`Plugin`]: checks its world, links the weft
//!   interfaces and a WASI with no ambient authority, runs `init` with the configuration. Other
//!   worlds build on [`PluginHost::linker`], [`PluginHost::check_world`] and
//!   [`PluginHost::instances`] ([`Instances`]: the pool, limits and fail policy of any world).
//! - [`Plugin::process`] runs a plugin over an OTLP request of any [`signal`] with its CPU
//!   deadline, memory cap and [`FailPolicy`]; [`convert`] is the lossless OTLP ↔ WIT mapping.
//! - [`MetricsRegistry`] holds the plugins' self-metrics; [`telemetry`] writes every part's
//!   metrics in the Prometheus text format and serves `/metrics`, `/healthz` and `/readyz`.
//! - [`config`]: the settings every Wasm unit shares in a YAML configuration (component,
//!   limits, fail policy, capabilities) and the error type of every configuration section.

pub mod bindings;
pub mod config;
pub mod convert;
pub mod engine;
pub mod error;
pub mod inspect;
pub mod kv;
pub mod log_limit;
pub mod metrics;
pub mod net;
pub mod otlp_io;
pub mod plugin;
pub mod signal;
mod state;
pub mod telemetry;

pub use engine::{EngineSettings, WeftEngine};
pub use error::{CallError, ConvertError, LoadError, TrapKind};
pub use metrics::{MetricsRegistry, PluginMetrics};
pub use plugin::{
    Abi, BatchReport, Capabilities, FailPolicy, InstanceReuse, Instances, MakeExt, OUTPUT_LIMITS,
    Plugin, PluginHost, PluginSettings, ProcessError, Warm, Worlds,
};
pub use signal::{OtlpData, OtlpRequest, Signal, SignalRequest};
pub use state::{HostState, MemoryLimiter, PluginShared};
pub use weft_otlp_wire::{self as wire, WireError};
