//! The weft guest SDK: write a weft plugin as a WebAssembly component in a few lines.
//!
//! A plugin is a type that implements [`Plugin`] (build yourself from the configuration) and one
//! or both of [`SpanProcessor`] and [`LogTransform`]; one macro exports it:
//!
//! ```ignore
//! use weft_guest::{Config, Edits, Error, HasAttributes, Plugin, SpanProcessor, view::Traces};
//!
//! struct Tagger { value: String }
//!
//! impl Plugin for Tagger {
//!     fn new(config: &Config) -> Result<Self, Error> {
//!         Ok(Tagger { value: config.get_str("value").unwrap_or("weft").to_string() })
//!     }
//! }
//!
//! impl SpanProcessor for Tagger {
//!     fn process_spans(&mut self, traces: Traces<'_>, edits: &mut Edits) -> Result<(), Error> {
//!         for (_, span) in traces.spans() {
//!             edits.set_attribute(&span, "tagged.by", self.value.as_str());
//!         }
//!         Ok(())
//!     }
//! }
//!
//! weft_guest::export_span_processor!(Tagger);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2`: the output is a component for the world
//! `weft:plugin/span-processor` (or `log-transform`, or `otlp-processor` for both).
//!
//! **The batch ABI.** A whole OTLP request crosses into the plugin as its protobuf bytes, one
//! buffer. [`view`] reads it in place: `traces.spans()`, `span.name()`, `span.attribute("k")`
//! are `&str`s and ints read from the bytes when asked, so a plugin pays only for what it
//! reads. [`Edits`] records what changes (drop a span or record, set / remove an attribute,
//! replace a value or a body, rename, set a status); the SDK then writes the new request in one
//! pass that copies everything untouched as byte ranges, and when nothing changed, nothing
//! crosses back at all. A plugin that wants owned values instead decodes the request with
//! [`records::span_batches`], changes the [`SpanBatch`]es and returns
//! `edits.replace_all(records::encode_span_batches(&batches))`.
//!
//! **Typed records.** The `typed-*` worlds pass each (resource, scope) batch as WIT records
//! (what componentize-py and componentize-js guests get from the WIT alone); in Rust, implement
//! [`TypedSpanProcessor`] / [`TypedLogTransform`] and export with
//! [`export_typed_span_processor!`] and friends. Every string and list costs a host call there:
//! the batch ABI is the fast one.
//!
//! **The WIT.** This crate carries the WIT package it was written against (`wit/` in the crate,
//! `weft:plugin@0.2.0` for weft-guest 0.2): the export macros read it wherever the SDK is on
//! disk, so a plugin is any cargo project that depends on `weft-guest`. To build against another
//! copy of the WIT, name its directory relative to the plugin crate:
//! `weft_guest::export_span_processor!(Tagger, wit: "wit");`.

pub mod http;
pub mod records;
pub mod store;
mod value;

pub use weft_otlp_wire::view::{self, HasAttributes, ValueRef};
pub use weft_otlp_wire::{self as wire, Edits, Kind as wire_kind, ResourceGroup};

pub use http::{Action, HttpFilter, LocalResponse};
pub use value::{AnyValue, AttributesExt};

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Bindings for what every plugin imports (the host services) and the shared OTLP types.
/// Only imports are generated here, so linking the SDK adds no exports to a component.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        inline: "
            package weft:sdk;
            world sdk {
                import weft:plugin/types@0.2.0;
                import weft:plugin/log@0.2.0;
                import weft:plugin/config@0.2.0;
                import weft:plugin/metrics@0.2.0;
                import weft:plugin/keyvalue@0.2.0;
                import weft:plugin/clock@0.2.0;
                import weft:plugin/http@0.2.0;
            }
        ",
        path: "wit",
        generate_all,
        generate_unused_types: true,
        additional_derives: [PartialEq, Clone],
    });
}

#[doc(hidden)]
pub use weft_otlp_wire::Kind as __Kind;

pub use bindings::weft::plugin::types::{
    Error, Event, KeyValue, Link, LogBatch, LogRecord, Outcome, Resource, Scope, Span, SpanBatch,
    SpanKind, Status, StatusCode, TraceId, Value, ValueNode, ValueTree,
};
pub use bindings::weft::plugin::{clock, keyvalue, log as host_log, metrics};

/// A span id: 8 bytes, big-endian.
pub type SpanId = u64;

/// Build a plugin from its configuration. Called once per instance, before any batch.
///
/// Parse and validate everything here (compile patterns, check ranges): an error fails the
/// plugin's load and the operator sees its message, instead of every batch failing later.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin, or says what is wrong with the configuration
    /// (usually [`Error::InvalidConfig`], see [`Config::parse`]).
    fn new(config: &Config) -> Result<Self, Error>;
}

/// A plugin for the `span-processor` world (the batch ABI).
pub trait SpanProcessor: Plugin {
    /// Processes one OTLP traces request: read it through `traces`, record changes in `edits`
    /// (none: the request passes on as it came). Called for one request at a time; `&mut self`
    /// is this instance's state.
    fn process_spans(&mut self, traces: view::Traces<'_>, edits: &mut Edits) -> Result<(), Error>;
}

/// A plugin for the `log-transform` world (the batch ABI).
pub trait LogTransform: Plugin {
    /// Processes one OTLP logs request; see [`SpanProcessor::process_spans`].
    fn process_logs(&mut self, logs: view::Logs<'_>, edits: &mut Edits) -> Result<(), Error>;
}

/// A plugin for the `typed-span-processor` world: batches as WIT records.
pub trait TypedSpanProcessor: Plugin {
    /// Processes one batch of spans sharing a resource and scope; returns the spans to keep.
    fn process_spans(&mut self, batch: SpanBatch) -> Result<SpanBatch, Error>;
}

/// A plugin for the `typed-log-transform` world: batches as WIT records.
pub trait TypedLogTransform: Plugin {
    /// Processes one batch of log records sharing a resource and scope; returns those to keep.
    fn process_logs(&mut self, batch: LogBatch) -> Result<LogBatch, Error>;
}

/// Runs a batch-ABI processor over `request` and makes the WIT outcome of its edits.
#[doc(hidden)]
pub fn __outcome(
    request: &[u8],
    kind: weft_otlp_wire::Kind,
    f: impl FnOnce(&mut Edits) -> Result<(), Error>,
) -> Result<Option<Vec<u8>>, Error> {
    let mut edits = Edits::new();
    f(&mut edits)?;
    Ok(edits.into_output(request, kind))
}

/// The plugin's configuration: the JSON object the operator gave (`{}` when none).
#[derive(Debug, Clone)]
pub struct Config {
    json: serde_json::Value,
}

impl Config {
    /// Reads the configuration from the host.
    pub fn from_host() -> Result<Self, Error> {
        Self::from_json(&bindings::weft::plugin::config::get_json())
    }

    /// A configuration from JSON text (what the host gives; also handy in native unit tests).
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let json: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(text)
                .map_err(|e| Error::InvalidConfig(format!("configuration is not JSON: {e}")))?
        };
        Ok(Config { json })
    }

    /// The whole configuration.
    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }

    /// Deserializes the whole configuration into `T`; serde's message (which names the key)
    /// becomes an [`Error::InvalidConfig`]. Use `#[serde(deny_unknown_fields)]` to catch typos.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_value(self.json.clone())
            .map_err(|e| Error::InvalidConfig(format!("invalid configuration: {e}")))
    }

    /// A top-level string value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(|v| v.as_str())
    }
}

/// Log lines to the host (the host tags them with the plugin's name).
pub mod log {
    use super::host_log::{Level, log};

    /// Logs at debug level.
    pub fn debug(msg: &str) {
        log(Level::Debug, msg)
    }
    /// Logs at info level.
    pub fn info(msg: &str) {
        log(Level::Info, msg)
    }
    /// Logs at warn level.
    pub fn warn(msg: &str) {
        log(Level::Warn, msg)
    }
    /// Logs at error level.
    pub fn error(msg: &str) {
        log(Level::Error, msg)
    }
}

impl TraceId {
    /// The 16 bytes of the id.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.hi.to_be_bytes());
        b[8..].copy_from_slice(&self.lo.to_be_bytes());
        b
    }

    /// The id as 32 lowercase hex digits, as in `traceparent`.
    pub fn to_hex(&self) -> String {
        format!("{:016x}{:016x}", self.hi, self.lo)
    }
}

/// Runs `f` with this instance's plugin, created by [`Plugin::new`] in `init`.
///
/// Wasm instances are single-threaded, so a thread-local cell holds the one plugin value.
#[doc(hidden)]
pub fn __with_plugin<T: Plugin, R>(
    cell: &'static std::thread::LocalKey<std::cell::RefCell<Option<T>>>,
    f: impl FnOnce(&mut T) -> Result<R, Error>,
) -> Result<R, Error> {
    cell.with(|c| match c.borrow_mut().as_mut() {
        Some(plugin) => f(plugin),
        None => Err(Error::Other(
            "the host called the plugin before init".into(),
        )),
    })
}

/// `init`: reads the configuration and builds the plugin into `cell`.
#[doc(hidden)]
pub fn __init<T: Plugin>(
    cell: &'static std::thread::LocalKey<std::cell::RefCell<Option<T>>>,
) -> Result<(), Error> {
    let config = Config::from_host()?;
    let plugin = T::new(&config)?;
    cell.with(|c| *c.borrow_mut() = Some(plugin));
    Ok(())
}

include!(concat!(env!("OUT_DIR"), "/wit_dir.rs"));

/// The bindings every export macro generates: `[$wit]` is the WIT directory relative to the
/// plugin crate (`[]`: the SDK's own, by [`__weft_wit_dir!`]), `$world` the world's name, then
/// any extra `with` mappings.
#[doc(hidden)]
#[macro_export]
macro_rules! __weft_bindings {
    ([], $($rest:tt)*) => {
        $crate::__weft_wit_dir!($($rest)*);
    };
    ([$wit:literal], $world:literal $(, $iface:literal => $path:path)*) => {
        $crate::__wit_bindgen::generate!({
            world: $world,
            path: $wit,
            runtime_path: "::weft_guest::__wit_bindgen::rt",
            with: {
                "weft:plugin/types@0.2.0": ::weft_guest::bindings::weft::plugin::types,
                "weft:plugin/log@0.2.0": ::weft_guest::bindings::weft::plugin::log,
                "weft:plugin/config@0.2.0": ::weft_guest::bindings::weft::plugin::config,
                "weft:plugin/metrics@0.2.0": ::weft_guest::bindings::weft::plugin::metrics,
                "weft:plugin/keyvalue@0.2.0": ::weft_guest::bindings::weft::plugin::keyvalue,
                "weft:plugin/clock@0.2.0": ::weft_guest::bindings::weft::plugin::clock,
                $($iface: $path,)*
            },
            generate_all,
        });
    };
}

/// What every export macro expands to: a module, compiled for wasm32 only, with the bindings of
/// the world (the arguments of [`__weft_bindings!`] in `( … )`), the `lifecycle` export, the
/// world's own exports (`$exports`, items that name `__weft_bindings` and `__WEFT_PLUGIN`) and
/// wit-bindgen's `export!`.
#[doc(hidden)]
#[macro_export]
macro_rules! __weft_export {
    ($ty:ident, ($($bindings:tt)*), $($exports:item)*) => {
        #[cfg(target_arch = "wasm32")]
        mod __weft_export {
            use super::*;
            mod __weft_bindings {
                $crate::__weft_bindings!($($bindings)*);
            }
            $crate::__weft_lifecycle!($ty);
            $($exports)*
            __weft_bindings::export!($ty with_types_in __weft_bindings);
        }
    };
}

/// Implements the `lifecycle` export for `$ty` (shared by the export macros).
#[doc(hidden)]
#[macro_export]
macro_rules! __weft_lifecycle {
    ($ty:ident) => {
        ::std::thread_local! {
            static __WEFT_PLUGIN: ::std::cell::RefCell<Option<$ty>> =
                const { ::std::cell::RefCell::new(None) };
        }
        impl __weft_bindings::exports::weft::plugin::lifecycle::Guest for $ty {
            fn init() -> Result<(), $crate::Error> {
                $crate::__init::<$ty>(&__WEFT_PLUGIN)
            }
        }
    };
}

/// Implements the `otlp-traces` export for `$ty`, a [`SpanProcessor`].
#[doc(hidden)]
#[macro_export]
macro_rules! __weft_otlp_traces {
    ($ty:ident) => {
        impl __weft_bindings::exports::weft::plugin::otlp_traces::Guest for $ty {
            fn process_traces(
                request: ::std::vec::Vec<u8>,
            ) -> Result<$crate::Outcome, $crate::Error> {
                $crate::__with_plugin(&__WEFT_PLUGIN, |p| {
                    let out = $crate::__outcome(&request, $crate::__Kind::TracesData, |e| {
                        <$ty as $crate::SpanProcessor>::process_spans(
                            p,
                            $crate::view::Traces::new(&request),
                            e,
                        )
                    })?;
                    Ok(out.map_or($crate::Outcome::Unchanged, $crate::Outcome::Replaced))
                })
            }
        }
    };
}

/// Implements the `otlp-logs` export for `$ty`, a [`LogTransform`].
#[doc(hidden)]
#[macro_export]
macro_rules! __weft_otlp_logs {
    ($ty:ident) => {
        impl __weft_bindings::exports::weft::plugin::otlp_logs::Guest for $ty {
            fn process_logs(
                request: ::std::vec::Vec<u8>,
            ) -> Result<$crate::Outcome, $crate::Error> {
                $crate::__with_plugin(&__WEFT_PLUGIN, |p| {
                    let out = $crate::__outcome(&request, $crate::__Kind::LogsData, |e| {
                        <$ty as $crate::LogTransform>::process_logs(
                            p,
                            $crate::view::Logs::new(&request),
                            e,
                        )
                    })?;
                    Ok(out.map_or($crate::Outcome::Unchanged, $crate::Outcome::Replaced))
                })
            }
        }
    };
}

/// Implements the `spans` export for `$ty`, a [`TypedSpanProcessor`].
#[doc(hidden)]
#[macro_export]
macro_rules! __weft_spans {
    ($ty:ident) => {
        impl __weft_bindings::exports::weft::plugin::spans::Guest for $ty {
            fn process_spans(batch: $crate::SpanBatch) -> Result<$crate::SpanBatch, $crate::Error> {
                $crate::__with_plugin(&__WEFT_PLUGIN, |p| {
                    <$ty as $crate::TypedSpanProcessor>::process_spans(p, batch)
                })
            }
        }
    };
}

/// Implements the `logs` export for `$ty`, a [`TypedLogTransform`].
#[doc(hidden)]
#[macro_export]
macro_rules! __weft_logs {
    ($ty:ident) => {
        impl __weft_bindings::exports::weft::plugin::logs::Guest for $ty {
            fn process_logs(batch: $crate::LogBatch) -> Result<$crate::LogBatch, $crate::Error> {
                $crate::__with_plugin(&__WEFT_PLUGIN, |p| {
                    <$ty as $crate::TypedLogTransform>::process_logs(p, batch)
                })
            }
        }
    };
}

/// Exports `$ty` (a [`SpanProcessor`]) as a component of the world `weft:plugin/span-processor`.
///
/// Exports are only emitted when compiling for wasm32, so the plugin crate can also be built
/// natively as a library (unit tests, benchmarks against the native code).
///
/// The WIT is the SDK's own (see the crate docs); to use another copy, name its directory
/// relative to the plugin crate: `export_span_processor!(MyPlugin, wit: "wit")` (the same for
/// every export macro).
#[macro_export]
macro_rules! export_span_processor {
    ($ty:ident $(, wit: $wit:literal)?) => {
        $crate::__weft_export!(
            $ty,
            ([$($wit)?], "weft:plugin/span-processor@0.2.0"),
            $crate::__weft_otlp_traces!($ty);
        );
    };
}

/// Exports `$ty` (a [`LogTransform`]) as a component of the world `weft:plugin/log-transform`.
#[macro_export]
macro_rules! export_log_transform {
    ($ty:ident $(, wit: $wit:literal)?) => {
        $crate::__weft_export!(
            $ty,
            ([$($wit)?], "weft:plugin/log-transform@0.2.0"),
            $crate::__weft_otlp_logs!($ty);
        );
    };
}

/// Exports `$ty` (both a [`SpanProcessor`] and a [`LogTransform`]) as a component of the world
/// `weft:plugin/otlp-processor`.
#[macro_export]
macro_rules! export_otlp_processor {
    ($ty:ident $(, wit: $wit:literal)?) => {
        $crate::__weft_export!(
            $ty,
            ([$($wit)?], "weft:plugin/otlp-processor@0.2.0"),
            $crate::__weft_otlp_traces!($ty);
            $crate::__weft_otlp_logs!($ty);
        );
    };
}

/// Exports `$ty` (a [`TypedSpanProcessor`]) as a component of the world
/// `weft:plugin/typed-span-processor`.
#[macro_export]
macro_rules! export_typed_span_processor {
    ($ty:ident $(, wit: $wit:literal)?) => {
        $crate::__weft_export!(
            $ty,
            ([$($wit)?], "weft:plugin/typed-span-processor@0.2.0"),
            $crate::__weft_spans!($ty);
        );
    };
}

/// Exports `$ty` (a [`TypedLogTransform`]) as a component of the world
/// `weft:plugin/typed-log-transform`.
#[macro_export]
macro_rules! export_typed_log_transform {
    ($ty:ident $(, wit: $wit:literal)?) => {
        $crate::__weft_export!(
            $ty,
            ([$($wit)?], "weft:plugin/typed-log-transform@0.2.0"),
            $crate::__weft_logs!($ty);
        );
    };
}

/// Exports `$ty` (both typed traits) as a component of the world
/// `weft:plugin/typed-otlp-processor`.
#[macro_export]
macro_rules! export_typed_otlp_processor {
    ($ty:ident $(, wit: $wit:literal)?) => {
        $crate::__weft_export!(
            $ty,
            ([$($wit)?], "weft:plugin/typed-otlp-processor@0.2.0"),
            $crate::__weft_spans!($ty);
            $crate::__weft_logs!($ty);
        );
    };
}

/// Exports `$ty` (an [`HttpFilter`]) as a component of the world `weft:plugin/http-filter`: it
/// runs in weft's filter proxy, and in Envoy after `weft adapt`.
#[macro_export]
macro_rules! export_http_filter {
    ($ty:ident $(, wit: $wit:literal)?) => {
        $crate::__weft_export!(
            $ty,
            (
                [$($wit)?],
                "weft:plugin/http-filter@0.2.0",
                "weft:plugin/http@0.2.0" => ::weft_guest::bindings::weft::plugin::http
            ),
            $crate::__weft_filter!($ty);
        );
    };
}

/// Implements the `filter` export for `$ty`, an [`HttpFilter`]: the `http-stream` resource
/// (one per HTTP stream, holding `$ty`'s `Stream`), its callbacks, `on-tick` and
/// `on-http-call-response`.
#[doc(hidden)]
#[macro_export]
macro_rules! __weft_filter {
    ($ty:ident) => {
        use __weft_bindings::exports::weft::plugin::filter as __filter;
        use $crate::HttpFilter as __Filter;

        /// The per-stream state of `$ty`.
        pub struct __WeftStream(::std::cell::RefCell<<$ty as __Filter>::Stream>);

        fn __action(a: $crate::Action) -> __filter::Action {
            match a {
                $crate::Action::Continue => __filter::Action::Continue,
                $crate::Action::Pause => __filter::Action::Pause,
                $crate::Action::Respond(r) => __filter::Action::Respond(__filter::LocalResponse {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                    details: r.details,
                }),
            }
        }

        fn __call<R>(f: impl FnOnce(&mut $ty) -> R) -> R {
            __WEFT_PLUGIN.with(|c| {
                let mut plugin = c.borrow_mut();
                match plugin.as_mut() {
                    Some(p) => f(p),
                    None => panic!("weft: the proxy called the filter before init"),
                }
            })
        }

        impl __WeftStream {
            /// Runs `f` with the plugin and this stream's state.
            fn with<R>(&self, f: impl FnOnce(&mut $ty, &mut <$ty as __Filter>::Stream) -> R) -> R {
                __call(|p| f(p, &mut self.0.borrow_mut()))
            }
        }

        impl __filter::GuestHttpStream for __WeftStream {
            fn new() -> Self {
                __WeftStream(::std::cell::RefCell::new(__call(|p| {
                    <$ty as __Filter>::new_stream(p)
                })))
            }
            fn on_request_headers(&self, n: u32, eos: bool) -> __filter::Action {
                __action(self.with(|p, s| <$ty as __Filter>::on_request_headers(p, s, n, eos)))
            }
            fn on_request_body(&self, n: u32, eos: bool) -> __filter::Action {
                __action(self.with(|p, s| <$ty as __Filter>::on_request_body(p, s, n, eos)))
            }
            fn on_request_trailers(&self, n: u32) -> __filter::Action {
                __action(self.with(|p, s| <$ty as __Filter>::on_request_trailers(p, s, n)))
            }
            fn on_response_headers(&self, n: u32, eos: bool) -> __filter::Action {
                __action(self.with(|p, s| <$ty as __Filter>::on_response_headers(p, s, n, eos)))
            }
            fn on_response_body(&self, n: u32, eos: bool) -> __filter::Action {
                __action(self.with(|p, s| <$ty as __Filter>::on_response_body(p, s, n, eos)))
            }
            fn on_response_trailers(&self, n: u32) -> __filter::Action {
                __action(self.with(|p, s| <$ty as __Filter>::on_response_trailers(p, s, n)))
            }
            fn on_done(&self) {
                self.with(|p, s| <$ty as __Filter>::on_done(p, s))
            }
        }

        impl __filter::Guest for $ty {
            type HttpStream = __WeftStream;
            fn on_tick() {
                __call(|p| <$ty as __Filter>::on_tick(p))
            }
            fn on_http_call_response(token: u32, status: u16, body: Vec<u8>) {
                __call(|p| <$ty as __Filter>::on_http_call_response(p, token, status, body))
            }
        }
    };
}
