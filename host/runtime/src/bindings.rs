//! All `bindgen!` output of the OTLP worlds lives here; the rest of the crate uses the names
//! re-exported below. The typed-records world is generated first and owns the shared interfaces
//! (types, log, config, metrics, key-value, clock); the batch-ABI world maps its imports onto
//! them with bindgen's `with:`, as other worlds do (the filter proxy's bindings), so one
//! [`HostState`] implementation serves every world.
//!
//! [`HostState`]: crate::HostState

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "weft:plugin/typed-otlp-processor",
    additional_derives: [PartialEq],
});

/// The batch ABI (`weft:plugin/otlp-processor`): requests cross as protobuf bytes.
pub mod batch {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "weft:plugin/otlp-processor",
        with: {
            "weft:plugin/types": super::weft::plugin::types,
            "weft:plugin/log": super::weft::plugin::log,
            "weft:plugin/config": super::weft::plugin::config,
            "weft:plugin/metrics": super::weft::plugin::metrics,
            "weft:plugin/keyvalue": super::weft::plugin::keyvalue,
            "weft:plugin/clock": super::weft::plugin::clock,
            "weft:plugin/lifecycle": super::exports::weft::plugin::lifecycle,
        },
    });
    pub use exports::weft::plugin::{otlp_logs, otlp_traces};
}

pub use exports::weft::plugin::{lifecycle, logs, spans};
pub use weft::plugin::types::{
    Error as GuestError, Event, KeyValue, Link, LogBatch, LogRecord, Outcome, Resource, Scope,
    Span, SpanBatch, SpanKind, Status, StatusCode, TraceId, Value, ValueNode, ValueTree,
};
pub use weft::plugin::{clock, config, keyvalue, log, metrics, types};

/// Interface names as they appear in a component's exports.
pub mod names {
    /// The lifecycle export every plugin has.
    pub const LIFECYCLE: &str = "weft:plugin/lifecycle@0.2.0";
    /// The typed span-processor export (world typed-span-processor).
    pub const SPANS: &str = "weft:plugin/spans@0.2.0";
    /// The typed log-transform export (world typed-log-transform).
    pub const LOGS: &str = "weft:plugin/logs@0.2.0";
    /// The batch-ABI traces export (world span-processor).
    pub const OTLP_TRACES: &str = "weft:plugin/otlp-traces@0.2.0";
    /// The batch-ABI logs export (world log-transform).
    pub const OTLP_LOGS: &str = "weft:plugin/otlp-logs@0.2.0";
    /// The http-filter export.
    pub const FILTER: &str = "weft:plugin/filter@0.2.0";
}
