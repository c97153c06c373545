//! OTLP protobuf without decoding it: weft's batch ABI, shared by the host and the guest SDK.
//!
//! A request crosses into a plugin as its protobuf bytes (one `list<u8>`) and comes back the
//! same way. This crate is everything both sides need to work on those bytes in place:
//!
//! - [`validate`]: checks a whole request in one pass, the rules an OTLP decoder applies (wire
//!   types, UTF-8, id lengths, nesting), and counts its items, allocating nothing. The host runs
//!   it on what clients send and on what every plugin returns.
//! - [`view`]: typed views (`Traces`, `Span`, `KeyValue`, `Value`, …) that read fields from the
//!   bytes when asked; strings are `&str` into the request.
//! - [`Edits`]: what a plugin changes (drop a span, set an attribute, mask a value, replace a
//!   body), recorded by message offset and applied in one pass that copies untouched messages
//!   as byte ranges.
//! - [`Encoder`]: canonical protobuf writing, for new values and whole requests.
//!
//! No dependencies; builds for `wasm32-wasip2` and natively.

#![warn(missing_docs)]

pub mod edit;
pub mod schema;
pub mod validate;
pub mod value;
pub mod view;
pub mod wire;

pub use edit::{Edits, ResourceGroup};
pub use schema::Kind;
pub use validate::{Limits, validate, validate_general, validate_output, validate_with};
pub use value::AnyValue;
pub use view::{HasAttributes, View};
pub use wire::{Encoder, WireError};
