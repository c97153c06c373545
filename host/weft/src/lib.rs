//! The `weft` binary's library: the configuration file that composes the collector, the filter
//! proxies and the telemetry ([`config`]), the service that starts them and hot-reloads their
//! plugins ([`service`]), the plugins built into the binary ([`builtin`]), , the WIT package
//! it was built against ([`wit`]), and the authors' commands: `weft new` ([`scaffold`]),
//! `weft build` ([`builder`]), `weft test`'s request fixtures ([`http_fixture`]) and
//! `--expect` ([`expect`]).

pub mod builder;
pub mod builtin;
pub mod config;
pub mod expect;
pub mod http_fixture;
pub mod scaffold;
pub mod service;
pub mod wit;

pub use config::{Config, DEFAULT_CONFIG};
pub use service::{Running, StartError, load_filters, load_processors, start};
