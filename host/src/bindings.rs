//! All `bindgen!` output lives here; the rest of the crate uses the names re-exported below.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "weft:plugin/otlp-processor",
    additional_derives: [PartialEq],
});

pub use exports::weft::plugin::{lifecycle, logs, spans};
pub use weft::plugin::types::{
    Error as GuestError, Event, KeyValue, Link, LogBatch, LogRecord, Resource, Scope, Span,
    SpanBatch, SpanKind, Status, StatusCode, TraceId, Value, ValueNode, ValueTree,
};
pub use weft::plugin::{clock, config, keyvalue, log, metrics, types};

/// Bindings of the `http-filter` world. The interfaces it shares with the OTLP worlds (types,
/// log, config, metrics, key-value, clock) are mapped onto the ones above, so one `HostState`
/// implementation and one linker serve every world.
pub mod http_filter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weft:plugin/http-filter",
        with: {
            "weft:plugin/types": super::weft::plugin::types,
            "weft:plugin/log": super::weft::plugin::log,
            "weft:plugin/config": super::weft::plugin::config,
            "weft:plugin/metrics": super::weft::plugin::metrics,
            "weft:plugin/keyvalue": super::weft::plugin::keyvalue,
            "weft:plugin/clock": super::weft::plugin::clock,
        },
    });
}

pub use http_filter::exports::weft::plugin::filter;
pub use http_filter::weft::plugin::http;

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
