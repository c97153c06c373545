//! The `bindgen!` output of the `http-filter` world. The interfaces it shares with the OTLP
//! worlds (types, log, config, metrics, key-value, clock) are mapped onto the runtime's, so the
//! runtime's `HostState` implementation serves them; this crate implements only `http`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "weft:plugin/http-filter",
    with: {
        "weft:plugin/types": weft_runtime::bindings::weft::plugin::types,
        "weft:plugin/log": weft_runtime::bindings::weft::plugin::log,
        "weft:plugin/config": weft_runtime::bindings::weft::plugin::config,
        "weft:plugin/metrics": weft_runtime::bindings::weft::plugin::metrics,
        "weft:plugin/keyvalue": weft_runtime::bindings::weft::plugin::keyvalue,
        "weft:plugin/clock": weft_runtime::bindings::weft::plugin::clock,
    },
});

pub use exports::weft::plugin::filter;
pub use weft::plugin::http;
