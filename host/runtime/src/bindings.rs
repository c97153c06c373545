//! All `bindgen!` output of the OTLP worlds lives here; the rest of the crate uses the names
//! re-exported below. Other worlds map their shared interfaces (types, log, config, metrics,
//! key-value, clock) onto [`weft::plugin`] with bindgen's `with:`, so one [`HostState`]
//! implementation serves every world (the filter proxy's bindings do).
//!
//! [`HostState`]: crate::HostState

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "weft:plugin/otlp-processor",
    additional_derives: [PartialEq],
});

pub use exports::weft::plugin::{lifecycle, logs, spans};
pub use weft::plugin::types::{
    Error as GuestError, Event, KeyValue, Link, LogBatch, LogRecord, Resource, Scope, Span,
    SpanBatch, SpanKind, Status, StatusCode, TraceId, Value, ValueNode, ValueTree,
};
pub use weft::plugin::{clock, config, keyvalue, log, metrics, types};

/// Interface names as they appear in a component's exports.
pub mod names {
    /// The lifecycle export every plugin has.
    pub const LIFECYCLE: &str = "weft:plugin/lifecycle@0.1.0";
    /// The span-processor export.
    pub const SPANS: &str = "weft:plugin/spans@0.1.0";
    /// The log-transform export.
    pub const LOGS: &str = "weft:plugin/logs@0.1.0";
    /// The http-filter export.
    pub const FILTER: &str = "weft:plugin/filter@0.1.0";
}
