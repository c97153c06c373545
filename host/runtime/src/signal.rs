//! The telemetry signals weft carries, written once: [`Signal`] names one, [`OtlpData`] holds a
//! request of either, and [`SignalRequest`] is what the plugin runtime needs of a signal's OTLP
//! request to run a plugin over it (the traces and logs paths share one loop, see
//! [`Plugin::process`](crate::Plugin::process)). A new signal is a new `SignalRequest` impl.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

use bytes::Bytes;
use prost::Message as _;
use weft_otlp_wire::{Kind, WireError};

use crate::bindings::{LogBatch, SpanBatch};
use crate::convert;
use crate::error::{CallError, ConvertError};
use crate::plugin::Plugin;

/// A telemetry signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Log records.
    Logs,
}

impl Signal {
    /// `traces` or `logs`: the pipeline name, and the `pipeline` label of the self-metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request's worth of telemetry, of either signal: its OTLP protobuf bytes (an
/// `ExportTraceServiceRequest` or `ExportLogsServiceRequest`), validated once when it was made
/// and never decoded on the way through. Cloning shares the bytes (a reference count), so every
/// exporter, every retry and a fail-open fallback hold the same buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpData {
    signal: Signal,
    bytes: Bytes,
    items: u64,
}

/// A request decoded into the prost types (for exporters that print, tests, `weft test`).
#[derive(Debug, Clone, PartialEq)]
pub enum OtlpRequest {
    /// An OTLP traces request.
    Traces(ExportTraceServiceRequest),
    /// An OTLP logs request.
    Logs(ExportLogsServiceRequest),
}

impl Signal {
    /// The protobuf message a request of this signal is.
    pub fn kind(self) -> Kind {
        match self {
            Signal::Traces => Kind::TracesData,
            Signal::Logs => Kind::LogsData,
        }
    }
}

impl OtlpData {
    /// A request from its protobuf bytes: validated (wire format, UTF-8, id lengths, nesting)
    /// and counted in one pass, without decoding.
    pub fn from_protobuf(signal: Signal, bytes: impl Into<Bytes>) -> Result<Self, WireError> {
        Self::from_protobuf_within(signal, bytes, &weft_otlp_wire::Limits::RECEIVER)
    }

    /// [`Self::from_protobuf`] within `limits` (a plugin's output limits).
    pub fn from_protobuf_within(
        signal: Signal,
        bytes: impl Into<Bytes>,
        limits: &weft_otlp_wire::Limits,
    ) -> Result<Self, WireError> {
        let bytes = bytes.into();
        let items = weft_otlp_wire::validate_with(signal.kind(), &bytes, limits)?;
        Ok(OtlpData {
            signal,
            bytes,
            items,
        })
    }

    /// A plugin's answer to `input`, validated within `limits`. Only what the plugin wrote is
    /// walked: sub-messages that are the input's, byte for byte and in the same place, were
    /// validated when `input` was made ([`weft_otlp_wire::validate_output`]).
    pub fn from_plugin_output(
        input: &OtlpData,
        bytes: impl Into<Bytes>,
        limits: &weft_otlp_wire::Limits,
    ) -> Result<Self, WireError> {
        let bytes = bytes.into();
        let kind = input.signal.kind();
        let items = weft_otlp_wire::validate_output(kind, &bytes, &input.bytes, limits)?;
        Ok(OtlpData {
            signal: input.signal,
            bytes,
            items,
        })
    }

    /// A traces request from the prost type (encoded once, then validated: prost encodes ids
    /// of any length).
    pub fn from_traces(req: &ExportTraceServiceRequest) -> Result<Self, WireError> {
        Self::from_protobuf(Signal::Traces, req.encode_to_vec())
    }

    /// A logs request from the prost type.
    pub fn from_logs(req: &ExportLogsServiceRequest) -> Result<Self, WireError> {
        Self::from_protobuf(Signal::Logs, req.encode_to_vec())
    }

    /// A decoded request.
    pub fn from_request(req: &OtlpRequest) -> Result<Self, WireError> {
        match req {
            OtlpRequest::Traces(t) => Self::from_traces(t),
            OtlpRequest::Logs(l) => Self::from_logs(l),
        }
    }

    /// An empty request of `signal`.
    pub fn empty(signal: Signal) -> Self {
        OtlpData {
            signal,
            bytes: Bytes::new(),
            items: 0,
        }
    }

    /// Items (spans or log records) in the request.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Which signal it carries.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The protobuf bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Decodes the request into the prost types.
    pub fn decode(&self) -> Result<OtlpRequest, prost::DecodeError> {
        Ok(match self.signal {
            Signal::Traces => {
                OtlpRequest::Traces(ExportTraceServiceRequest::decode(&self.bytes[..])?)
            }
            Signal::Logs => OtlpRequest::Logs(ExportLogsServiceRequest::decode(&self.bytes[..])?),
        })
    }

    /// Decodes a traces request (an empty one for a logs request).
    pub fn traces(&self) -> ExportTraceServiceRequest {
        match self.decode() {
            Ok(OtlpRequest::Traces(t)) => t,
            _ => ExportTraceServiceRequest::default(),
        }
    }

    /// Decodes a logs request (an empty one for a traces request).
    pub fn logs(&self) -> ExportLogsServiceRequest {
        match self.decode() {
            Ok(OtlpRequest::Logs(l)) => l,
            _ => ExportLogsServiceRequest::default(),
        }
    }

    /// Joins requests of one signal into one: protobuf concatenation, which for a message of one
    /// repeated field is the merged request. Each part's bytes are copied once (one part is
    /// returned as it is). `None` if there are no parts or their signals differ.
    pub fn concat(parts: Vec<OtlpData>) -> Option<OtlpData> {
        let signal = parts.first()?.signal;
        if parts.iter().any(|p| p.signal != signal) {
            return None;
        }
        if parts.len() == 1 {
            return parts.into_iter().next();
        }
        let len = parts.iter().map(|p| p.bytes.len()).sum();
        let mut joined = bytes::BytesMut::with_capacity(len);
        let mut items = 0;
        for p in &parts {
            joined.extend_from_slice(&p.bytes);
            items += p.items;
        }
        Some(OtlpData {
            signal,
            bytes: joined.freeze(),
            items,
        })
    }
}

/// A (resource, scope) group of a request taken apart: the resource, its schema URL, and the
/// scope group (`ScopeSpans`, `ScopeLogs`) with its items.
pub type Group<G> = (Option<PbResource>, String, G);

/// Checks one scope group against `limits` (a typed plugin's output limits): the group is
/// encoded as a request of its own (one `ResourceSpans` / `ResourceLogs`: resource 1, scope
/// group 2, schema URL 3, the same field numbers in both signals) and validated like a batch
/// plugin's output.
pub fn check_group<G: prost::Message>(
    signal: Signal,
    (resource, schema_url, scoped): &Group<G>,
    limits: &weft_otlp_wire::Limits,
) -> Result<(), WireError> {
    use prost::encoding::{WireType, encode_key, encode_varint, message, string};
    let len = resource.as_ref().map_or(0, |r| message::encoded_len(1, r))
        + message::encoded_len(2, scoped)
        + if schema_url.is_empty() {
            0
        } else {
            string::encoded_len(3, schema_url)
        };
    let mut buf = Vec::with_capacity(len + 11);
    encode_key(1, WireType::LengthDelimited, &mut buf);
    encode_varint(len as u64, &mut buf);
    if let Some(r) = resource {
        message::encode(1, r, &mut buf);
    }
    message::encode(2, scoped, &mut buf);
    if !schema_url.is_empty() {
        string::encode(3, schema_url, &mut buf);
    }
    weft_otlp_wire::validate_with(signal.kind(), &buf, limits).map(|_| ())
}

/// What the plugin runtime needs of one signal's OTLP request. Implemented for
/// `ExportTraceServiceRequest` and `ExportLogsServiceRequest`.
pub trait SignalRequest: Sized {
    /// The signal.
    const SIGNAL: Signal;
    /// One scope group of the request (`ScopeSpans`, `ScopeLogs`).
    type Scoped: prost::Message;
    /// The WIT batch one scope group crosses to a plugin as.
    type Batch;

    /// Items in the request.
    fn items(&self) -> u64;
    /// Converts every scope group to its WIT batch, in request order. Fails on malformed OTLP
    /// (bad ids), before any plugin sees any of it.
    fn to_batches(&self) -> Result<Vec<Self::Batch>, ConvertError>;
    /// Takes the request apart into its scope groups, in the order of [`Self::to_batches`].
    fn into_groups(self) -> Vec<Group<Self::Scoped>>;
    /// Puts a request together from scope groups: consecutive groups with the same resource
    /// share one resource entry.
    fn from_groups(groups: Vec<Group<Self::Scoped>>) -> Self;
    /// Items in one scope group.
    fn scoped_items(scoped: &Self::Scoped) -> u64;
    /// Items in one batch.
    fn batch_items(batch: &Self::Batch) -> u64;
    /// A plugin's output batch back in OTLP form. `original` is the input group's resource (kept
    /// as it was where the plugin left it unchanged) and `scope_present` whether it had a scope.
    fn batch_to_pb(
        batch: Self::Batch,
        original: Option<&PbResource>,
        scope_present: bool,
    ) -> Result<Group<Self::Scoped>, ConvertError>;
    /// Whether the input group had a scope.
    fn scope_present(scoped: &Self::Scoped) -> bool;
    /// Runs `plugin` over one batch (no fail policy).
    fn call(plugin: &Plugin, batch: &Self::Batch) -> Result<Self::Batch, CallError>;
    /// The request as protobuf bytes, validated (the batch ABI's form).
    fn to_data(&self) -> Result<OtlpData, WireError>;
    /// The request back from its bytes.
    fn from_data(data: &OtlpData) -> Result<Self, prost::DecodeError>;
}

/// Groups consecutive scope groups with equal resources, for [`SignalRequest::from_groups`].
fn regroup<S, R>(groups: Vec<Group<S>>, make: impl Fn(Option<PbResource>, String, S) -> R) -> Vec<R>
where
    R: ResourceEntry<S>,
{
    let mut out: Vec<R> = Vec::new();
    for (resource, schema_url, scoped) in groups {
        match out.last_mut() {
            Some(last) if last.same_resource(&resource, &schema_url) => last.push(scoped),
            _ => out.push(make(resource, schema_url, scoped)),
        }
    }
    out
}

/// A `ResourceSpans` / `ResourceLogs`: one resource and its scope groups.
trait ResourceEntry<S> {
    fn same_resource(&self, resource: &Option<PbResource>, schema_url: &str) -> bool;
    fn push(&mut self, scoped: S);
}

impl ResourceEntry<ScopeSpans> for ResourceSpans {
    fn same_resource(&self, resource: &Option<PbResource>, schema_url: &str) -> bool {
        self.resource == *resource && self.schema_url == schema_url
    }
    fn push(&mut self, scoped: ScopeSpans) {
        self.scope_spans.push(scoped);
    }
}

impl ResourceEntry<ScopeLogs> for ResourceLogs {
    fn same_resource(&self, resource: &Option<PbResource>, schema_url: &str) -> bool {
        self.resource == *resource && self.schema_url == schema_url
    }
    fn push(&mut self, scoped: ScopeLogs) {
        self.scope_logs.push(scoped);
    }
}

impl SignalRequest for ExportTraceServiceRequest {
    const SIGNAL: Signal = Signal::Traces;
    type Scoped = ScopeSpans;
    type Batch = SpanBatch;

    fn items(&self) -> u64 {
        self.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum()
    }

    fn to_batches(&self) -> Result<Vec<SpanBatch>, ConvertError> {
        let mut batches = Vec::new();
        for rs in &self.resource_spans {
            let resource = convert::resource_from_pb(rs.resource.as_ref(), &rs.schema_url);
            for ss in &rs.scope_spans {
                batches.push(SpanBatch {
                    resource: resource.clone(),
                    scope: convert::scope_from_pb(ss.scope.as_ref(), &ss.schema_url),
                    spans: ss
                        .spans
                        .iter()
                        .map(convert::span_from_pb)
                        .collect::<Result<_, _>>()?,
                });
            }
        }
        Ok(batches)
    }

    fn into_groups(self) -> Vec<Group<ScopeSpans>> {
        self.resource_spans
            .into_iter()
            .flat_map(|rs| {
                let (resource, schema_url) = (rs.resource, rs.schema_url);
                rs.scope_spans
                    .into_iter()
                    .map(move |ss| (resource.clone(), schema_url.clone(), ss))
            })
            .collect()
    }

    fn from_groups(groups: Vec<Group<ScopeSpans>>) -> Self {
        ExportTraceServiceRequest {
            resource_spans: regroup(groups, |resource, schema_url, ss| ResourceSpans {
                resource,
                scope_spans: vec![ss],
                schema_url,
            }),
        }
    }

    fn scoped_items(scoped: &ScopeSpans) -> u64 {
        scoped.spans.len() as u64
    }

    fn batch_items(batch: &SpanBatch) -> u64 {
        batch.spans.len() as u64
    }

    fn batch_to_pb(
        b: SpanBatch,
        original: Option<&PbResource>,
        scope_present: bool,
    ) -> Result<Group<ScopeSpans>, ConvertError> {
        let (resource, resource_url) = convert::resource_to_pb(b.resource, original)?;
        let (scope, schema_url) = convert::scope_to_pb(b.scope, scope_present)?;
        let spans = b
            .spans
            .into_iter()
            .map(convert::span_to_pb)
            .collect::<Result<_, _>>()?;
        Ok((
            resource,
            resource_url,
            ScopeSpans {
                scope,
                spans,
                schema_url,
            },
        ))
    }

    fn scope_present(scoped: &ScopeSpans) -> bool {
        scoped.scope.is_some()
    }

    fn call(plugin: &Plugin, batch: &SpanBatch) -> Result<SpanBatch, CallError> {
        plugin.call_spans(batch)
    }

    fn to_data(&self) -> Result<OtlpData, WireError> {
        OtlpData::from_traces(self)
    }

    fn from_data(data: &OtlpData) -> Result<Self, prost::DecodeError> {
        Self::decode(&data.bytes()[..])
    }
}

impl SignalRequest for ExportLogsServiceRequest {
    const SIGNAL: Signal = Signal::Logs;
    type Scoped = ScopeLogs;
    type Batch = LogBatch;

    fn items(&self) -> u64 {
        self.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum()
    }

    fn to_batches(&self) -> Result<Vec<LogBatch>, ConvertError> {
        let mut batches = Vec::new();
        for rl in &self.resource_logs {
            let resource = convert::resource_from_pb(rl.resource.as_ref(), &rl.schema_url);
            for sl in &rl.scope_logs {
                batches.push(LogBatch {
                    resource: resource.clone(),
                    scope: convert::scope_from_pb(sl.scope.as_ref(), &sl.schema_url),
                    records: sl
                        .log_records
                        .iter()
                        .map(convert::log_from_pb)
                        .collect::<Result<_, _>>()?,
                });
            }
        }
        Ok(batches)
    }

    fn into_groups(self) -> Vec<Group<ScopeLogs>> {
        self.resource_logs
            .into_iter()
            .flat_map(|rl| {
                let (resource, schema_url) = (rl.resource, rl.schema_url);
                rl.scope_logs
                    .into_iter()
                    .map(move |sl| (resource.clone(), schema_url.clone(), sl))
            })
            .collect()
    }

    fn from_groups(groups: Vec<Group<ScopeLogs>>) -> Self {
        ExportLogsServiceRequest {
            resource_logs: regroup(groups, |resource, schema_url, sl| ResourceLogs {
                resource,
                scope_logs: vec![sl],
                schema_url,
            }),
        }
    }

    fn scoped_items(scoped: &ScopeLogs) -> u64 {
        scoped.log_records.len() as u64
    }

    fn batch_items(batch: &LogBatch) -> u64 {
        batch.records.len() as u64
    }

    fn batch_to_pb(
        b: LogBatch,
        original: Option<&PbResource>,
        scope_present: bool,
    ) -> Result<Group<ScopeLogs>, ConvertError> {
        let (resource, resource_url) = convert::resource_to_pb(b.resource, original)?;
        let (scope, schema_url) = convert::scope_to_pb(b.scope, scope_present)?;
        let log_records = b
            .records
            .into_iter()
            .map(convert::log_to_pb)
            .collect::<Result<_, _>>()?;
        Ok((
            resource,
            resource_url,
            ScopeLogs {
                scope,
                log_records,
                schema_url,
            },
        ))
    }

    fn scope_present(scoped: &ScopeLogs) -> bool {
        scoped.scope.is_some()
    }

    fn call(plugin: &Plugin, batch: &LogBatch) -> Result<LogBatch, CallError> {
        plugin.call_logs(batch)
    }

    fn to_data(&self) -> Result<OtlpData, WireError> {
        OtlpData::from_logs(self)
    }

    fn from_data(data: &OtlpData) -> Result<Self, prost::DecodeError> {
        Self::decode(&data.bytes()[..])
    }
}
