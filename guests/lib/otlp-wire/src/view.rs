//! Typed, zero-copy views of an OTLP request: each view is a few words (the request and the
//! range of one message) and reads its fields from the bytes when asked. Nothing is decoded
//! that is not read: a sampler that looks at ids and flags never touches a string.
//!
//! Views are lenient: a field that is missing or malformed reads as its default (the host
//! validates every request before a plugin sees it, see [`crate::validate`]).

use crate::schema::Kind;
use crate::wire::{Field, Fields, Wire};

/// One message inside a request: the request's bytes and the message's range in them. Its start
/// offset identifies it for [`crate::Edits`].
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    root: &'a [u8],
    start: u32,
    end: u32,
}

impl<'a> Msg<'a> {
    /// The whole of `root` as one message.
    pub fn root(root: &'a [u8]) -> Self {
        Msg {
            root,
            start: 0,
            end: root.len() as u32,
        }
    }

    /// A message with no fields (what an absent sub-message reads as).
    fn empty() -> Self {
        Msg {
            root: &[],
            start: 0,
            end: 0,
        }
    }

    /// The message's encoded bytes (without its key and length).
    pub fn bytes(&self) -> &'a [u8] {
        &self.root[self.start as usize..self.end as usize]
    }

    /// Where the message starts in the request.
    pub fn start(&self) -> usize {
        self.start as usize
    }

    /// One past where it ends.
    pub fn end(&self) -> usize {
        self.end as usize
    }

    /// Whether this message is part of a request (not an absent sub-message read as empty).
    pub fn is_present(&self) -> bool {
        !self.root.is_empty()
    }

    /// The well-formed fields, in order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + use<'a> {
        Fields::new(self.root, self.start as usize, self.end as usize).map_while(Result::ok)
    }

    fn last(&self, number: u32) -> Option<Field<'a>> {
        crate::wire::find_last(self.root, self.start as usize, self.end as usize, number)
    }

    fn child(&self, f: &Field<'a>) -> Msg<'a> {
        Msg {
            root: self.root,
            start: f.content as u32,
            end: f.end as u32,
        }
    }

    /// The last occurrence of sub-message field `number` (absent: empty).
    fn message(&self, number: u32) -> Option<Msg<'a>> {
        self.last(number)
            .filter(|f| matches!(f.value, Wire::Len(_)))
            .map(|f| self.child(&f))
    }

    fn bytes_of(&self, number: u32) -> &'a [u8] {
        match self.last(number).map(|f| f.value) {
            Some(Wire::Len(b)) => b,
            _ => &[],
        }
    }

    fn str_of(&self, number: u32) -> &'a str {
        crate::wire::utf8(self.bytes_of(number)).unwrap_or("")
    }

    fn varint_of(&self, number: u32) -> u64 {
        match self.last(number).map(|f| f.value) {
            Some(Wire::Varint(v)) => v,
            _ => 0,
        }
    }

    fn fixed64_of(&self, number: u32) -> u64 {
        match self.last(number).map(|f| f.value) {
            Some(Wire::I64(v)) => v,
            _ => 0,
        }
    }

    fn fixed32_of(&self, number: u32) -> u32 {
        match self.last(number).map(|f| f.value) {
            Some(Wire::I32(v)) => v,
            _ => 0,
        }
    }

    fn repeated<V: View<'a>>(&self, number: u32) -> Repeated<'a, V> {
        Repeated {
            parent: *self,
            pos: self.start as usize,
            number,
            _view: std::marker::PhantomData,
        }
    }
}

/// A typed view of one OTLP message.
pub trait View<'a>: Copy {
    /// The message type.
    const KIND: Kind;
    /// The view of `msg`.
    fn from_msg(msg: Msg<'a>) -> Self;
    /// The message it views.
    fn msg(&self) -> Msg<'a>;
}

/// The entries of a repeated sub-message field, in order.
#[derive(Debug, Clone)]
pub struct Repeated<'a, V> {
    parent: Msg<'a>,
    pos: usize,
    number: u32,
    _view: std::marker::PhantomData<V>,
}

impl<'a, V: View<'a>> Iterator for Repeated<'a, V> {
    type Item = V;

    #[inline]
    fn next(&mut self) -> Option<V> {
        let p = self.parent;
        loop {
            let f = crate::wire::find_next(p.root, &mut self.pos, p.end as usize, self.number);
            match f {
                Some(f) if matches!(f.value, Wire::Len(_)) => {
                    return Some(V::from_msg(p.child(&f)));
                }
                Some(_) => continue,
                None => {
                    self.pos = p.end as usize;
                    return None;
                }
            }
        }
    }
}

macro_rules! views {
    ($($(#[$doc:meta])* $name:ident = $kind:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<'a>(Msg<'a>);

        impl<'a> View<'a> for $name<'a> {
            const KIND: Kind = Kind::$kind;
            fn from_msg(msg: Msg<'a>) -> Self {
                $name(msg)
            }
            fn msg(&self) -> Msg<'a> {
                self.0
            }
        }
    )*};
}

views! {
    /// An OTLP traces request (`ExportTraceServiceRequest` / `TracesData`).
    Traces = TracesData;
    /// `ResourceSpans`: one resource and its scope groups.
    ResourceSpans = ResourceSpans;
    /// `ScopeSpans`: one instrumentation scope and its spans.
    ScopeSpans = ScopeSpans;
    /// A `Span`.
    Span = Span;
    /// A span event.
    Event = Event;
    /// A span link.
    Link = Link;
    /// A span's `Status`.
    Status = Status;
    /// An OTLP logs request (`ExportLogsServiceRequest` / `LogsData`).
    Logs = LogsData;
    /// `ResourceLogs`: one resource and its scope groups.
    ResourceLogs = ResourceLogs;
    /// `ScopeLogs`: one instrumentation scope and its records.
    ScopeLogs = ScopeLogs;
    /// A `LogRecord`.
    LogRecord = LogRecord;
    /// A `Resource`.
    Resource = Resource;
    /// An `InstrumentationScope`.
    Scope = Scope;
    /// An attribute (`KeyValue`).
    KeyValue = KeyValue;
    /// An `AnyValue`.
    Value = AnyValue;
    /// An `ArrayValue`.
    Array = ArrayValue;
    /// A `KeyValueList`.
    KvList = KeyValueList;
}

/// A message with attributes (`KeyValue`s in one repeated field).
pub trait HasAttributes<'a>: View<'a> {
    /// The attributes field's number.
    const ATTRIBUTES: u32;

    /// The attributes, in order.
    fn attributes(&self) -> Repeated<'a, KeyValue<'a>> {
        self.msg().repeated(Self::ATTRIBUTES)
    }

    /// The value of the first attribute named `key`.
    fn attribute(&self, key: &str) -> Option<Value<'a>> {
        self.attributes()
            .find(|kv| kv.key_is(key))
            .map(|kv| kv.value())
    }
}

macro_rules! has_attributes {
    ($($name:ident = $n:literal),*) => {$(
        impl<'a> HasAttributes<'a> for $name<'a> {
            const ATTRIBUTES: u32 = $n;
        }
    )*};
}

has_attributes!(
    Span = 9,
    Event = 3,
    Link = 4,
    LogRecord = 6,
    Resource = 1,
    Scope = 3
);

impl<'a> Traces<'a> {
    /// A view of a request's bytes.
    pub fn new(bytes: &'a [u8]) -> Self {
        Traces(Msg::root(bytes))
    }

    /// The resource groups.
    pub fn resource_spans(&self) -> Repeated<'a, ResourceSpans<'a>> {
        self.0.repeated(1)
    }

    /// Every span of the request, in order, with its resource group.
    pub fn spans(&self) -> impl Iterator<Item = (ResourceSpans<'a>, Span<'a>)> + 'a {
        self.resource_spans().flat_map(|rs| {
            rs.scope_spans()
                .flat_map(|ss| ss.spans())
                .map(move |s| (rs, s))
        })
    }
}

impl<'a> ResourceSpans<'a> {
    /// The resource (empty when absent).
    pub fn resource(&self) -> Resource<'a> {
        Resource(self.0.message(1).unwrap_or_else(Msg::empty))
    }

    /// The scope groups.
    pub fn scope_spans(&self) -> Repeated<'a, ScopeSpans<'a>> {
        self.0.repeated(2)
    }

    /// The resource's schema URL.
    pub fn schema_url(&self) -> &'a str {
        self.0.str_of(3)
    }
}

impl<'a> ScopeSpans<'a> {
    /// The instrumentation scope (empty when absent).
    pub fn scope(&self) -> Scope<'a> {
        Scope(self.0.message(1).unwrap_or_else(Msg::empty))
    }

    /// The spans.
    pub fn spans(&self) -> Repeated<'a, Span<'a>> {
        self.0.repeated(2)
    }

    /// The scope's schema URL.
    pub fn schema_url(&self) -> &'a str {
        self.0.str_of(3)
    }
}

fn id<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().unwrap_or([0; N])
}

fn opt_id<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

/// OTLP `Span.SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// `SPAN_KIND_UNSPECIFIED` (and any value this version does not know).
    Unspecified,
    /// `SPAN_KIND_INTERNAL`.
    Internal,
    /// `SPAN_KIND_SERVER`.
    Server,
    /// `SPAN_KIND_CLIENT`.
    Client,
    /// `SPAN_KIND_PRODUCER`.
    Producer,
    /// `SPAN_KIND_CONSUMER`.
    Consumer,
}

impl SpanKind {
    /// From the protobuf enum value.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
}

impl<'a> Span<'a> {
    /// The trace id (16 bytes, big-endian).
    pub fn trace_id(&self) -> [u8; 16] {
        id(self.0.bytes_of(1))
    }
    /// The span id.
    pub fn span_id(&self) -> [u8; 8] {
        id(self.0.bytes_of(2))
    }
    /// W3C trace state.
    pub fn trace_state(&self) -> &'a str {
        self.0.str_of(3)
    }
    /// The parent span id; `None` for a root span.
    pub fn parent_span_id(&self) -> Option<[u8; 8]> {
        opt_id(self.0.bytes_of(4))
    }
    /// W3C trace flags (low 8 bits) and OTLP `SpanFlags`.
    pub fn flags(&self) -> u32 {
        self.0.fixed32_of(16)
    }
    /// The span name.
    pub fn name(&self) -> &'a str {
        self.0.str_of(5)
    }
    /// The span kind as the protobuf enum value.
    pub fn kind_value(&self) -> i32 {
        self.0.varint_of(6) as i32
    }
    /// The span kind.
    pub fn kind(&self) -> SpanKind {
        SpanKind::from_i32(self.kind_value())
    }
    /// Start, ns since the Unix epoch.
    pub fn start_time_unix_nano(&self) -> u64 {
        self.0.fixed64_of(7)
    }
    /// End, ns since the Unix epoch.
    pub fn end_time_unix_nano(&self) -> u64 {
        self.0.fixed64_of(8)
    }
    /// Attributes the sender dropped.
    pub fn dropped_attributes_count(&self) -> u32 {
        self.0.varint_of(10) as u32
    }
    /// Timed events.
    pub fn events(&self) -> Repeated<'a, Event<'a>> {
        self.0.repeated(11)
    }
    /// Events the sender dropped.
    pub fn dropped_events_count(&self) -> u32 {
        self.0.varint_of(12) as u32
    }
    /// Links.
    pub fn links(&self) -> Repeated<'a, Link<'a>> {
        self.0.repeated(13)
    }
    /// Links the sender dropped.
    pub fn dropped_links_count(&self) -> u32 {
        self.0.varint_of(14) as u32
    }
    /// The status code (0 unset, 1 ok, 2 error).
    pub fn status_code(&self) -> i32 {
        self.status().code()
    }
    /// The status message.
    pub fn status_message(&self) -> &'a str {
        self.status().message()
    }
    /// The status (empty when absent: code 0, no message).
    pub fn status(&self) -> Status<'a> {
        Status(self.0.message(15).unwrap_or_else(Msg::empty))
    }

    /// The attributes, events, links and status, in the order they are encoded, in one pass
    /// over the span's fields. Each of [`HasAttributes::attributes`], [`Span::events`],
    /// [`Span::links`] and [`Span::status`] reads all of the span's fields to find its own: a
    /// plugin that visits all of them (a masker, a scrubber) reads the span once with this.
    /// Should a span hold two status fields, the last is its status (as protobuf decodes it).
    pub fn parts(&self) -> impl Iterator<Item = SpanPart<'a>> + 'a {
        let msg = self.0;
        msg.fields().filter_map(move |f| {
            if !matches!(f.value, Wire::Len(_)) {
                return None;
            }
            let child = msg.child(&f);
            Some(match f.number {
                9 => SpanPart::Attribute(KeyValue(child)),
                11 => SpanPart::Event(Event(child)),
                13 => SpanPart::Link(Link(child)),
                15 => SpanPart::Status(Status(child)),
                _ => return None,
            })
        })
    }
}

/// A sub-message of a span, as [`Span::parts`] reads them.
#[derive(Debug, Clone, Copy)]
pub enum SpanPart<'a> {
    /// One of the span's attributes.
    Attribute(KeyValue<'a>),
    /// A span event.
    Event(Event<'a>),
    /// A span link.
    Link(Link<'a>),
    /// The span's status.
    Status(Status<'a>),
}

impl<'a> Status<'a> {
    /// The status code (0 unset, 1 ok, 2 error).
    pub fn code(&self) -> i32 {
        self.0.varint_of(3) as i32
    }
    /// The status message.
    pub fn message(&self) -> &'a str {
        self.0.str_of(2)
    }
}

impl<'a> Event<'a> {
    /// When, ns since the Unix epoch.
    pub fn time_unix_nano(&self) -> u64 {
        self.0.fixed64_of(1)
    }
    /// The event name.
    pub fn name(&self) -> &'a str {
        self.0.str_of(2)
    }
    /// Attributes the sender dropped.
    pub fn dropped_attributes_count(&self) -> u32 {
        self.0.varint_of(4) as u32
    }
}

impl<'a> Link<'a> {
    /// The linked trace.
    pub fn trace_id(&self) -> [u8; 16] {
        id(self.0.bytes_of(1))
    }
    /// The linked span.
    pub fn span_id(&self) -> [u8; 8] {
        id(self.0.bytes_of(2))
    }
    /// W3C trace state.
    pub fn trace_state(&self) -> &'a str {
        self.0.str_of(3)
    }
    /// Attributes the sender dropped.
    pub fn dropped_attributes_count(&self) -> u32 {
        self.0.varint_of(5) as u32
    }
    /// Trace flags.
    pub fn flags(&self) -> u32 {
        self.0.fixed32_of(6)
    }
}

impl<'a> Logs<'a> {
    /// A view of a request's bytes.
    pub fn new(bytes: &'a [u8]) -> Self {
        Logs(Msg::root(bytes))
    }

    /// The resource groups.
    pub fn resource_logs(&self) -> Repeated<'a, ResourceLogs<'a>> {
        self.0.repeated(1)
    }

    /// Every record of the request, in order, with its resource group.
    pub fn records(&self) -> impl Iterator<Item = (ResourceLogs<'a>, LogRecord<'a>)> + 'a {
        self.resource_logs().flat_map(|rl| {
            rl.scope_logs()
                .flat_map(|sl| sl.log_records())
                .map(move |r| (rl, r))
        })
    }
}

impl<'a> ResourceLogs<'a> {
    /// The resource (empty when absent).
    pub fn resource(&self) -> Resource<'a> {
        Resource(self.0.message(1).unwrap_or_else(Msg::empty))
    }
    /// The scope groups.
    pub fn scope_logs(&self) -> Repeated<'a, ScopeLogs<'a>> {
        self.0.repeated(2)
    }
    /// The resource's schema URL.
    pub fn schema_url(&self) -> &'a str {
        self.0.str_of(3)
    }
}

impl<'a> ScopeLogs<'a> {
    /// The instrumentation scope (empty when absent).
    pub fn scope(&self) -> Scope<'a> {
        Scope(self.0.message(1).unwrap_or_else(Msg::empty))
    }
    /// The records.
    pub fn log_records(&self) -> Repeated<'a, LogRecord<'a>> {
        self.0.repeated(2)
    }
    /// The scope's schema URL.
    pub fn schema_url(&self) -> &'a str {
        self.0.str_of(3)
    }
}

impl<'a> LogRecord<'a> {
    /// When the event happened, ns since the Unix epoch (0: unknown).
    pub fn time_unix_nano(&self) -> u64 {
        self.0.fixed64_of(1)
    }
    /// When it was observed, ns since the Unix epoch.
    pub fn observed_time_unix_nano(&self) -> u64 {
        self.0.fixed64_of(11)
    }
    /// OTLP `SeverityNumber` (0 unspecified … 24 FATAL4).
    pub fn severity_number(&self) -> i32 {
        self.0.varint_of(2) as i32
    }
    /// Severity as the source wrote it.
    pub fn severity_text(&self) -> &'a str {
        self.0.str_of(3)
    }
    /// The body, if the record has one.
    pub fn body(&self) -> Option<Value<'a>> {
        self.0.message(5).map(Value)
    }
    /// Attributes the sender dropped.
    pub fn dropped_attributes_count(&self) -> u32 {
        self.0.varint_of(7) as u32
    }
    /// Trace flags of the correlated span.
    pub fn flags(&self) -> u32 {
        self.0.fixed32_of(8)
    }
    /// The correlated trace, if any.
    pub fn trace_id(&self) -> Option<[u8; 16]> {
        opt_id(self.0.bytes_of(9))
    }
    /// The correlated span, if any.
    pub fn span_id(&self) -> Option<[u8; 8]> {
        opt_id(self.0.bytes_of(10))
    }
    /// The event name (empty if none).
    pub fn event_name(&self) -> &'a str {
        self.0.str_of(12)
    }
}

impl<'a> Resource<'a> {
    /// Attributes the sender dropped.
    pub fn dropped_attributes_count(&self) -> u32 {
        self.0.varint_of(2) as u32
    }
}

impl<'a> Scope<'a> {
    /// Scope name.
    pub fn name(&self) -> &'a str {
        self.0.str_of(1)
    }
    /// Scope version.
    pub fn version(&self) -> &'a str {
        self.0.str_of(2)
    }
    /// Attributes the sender dropped.
    pub fn dropped_attributes_count(&self) -> u32 {
        self.0.varint_of(4) as u32
    }
}

impl<'a> KeyValue<'a> {
    /// The attribute name.
    pub fn key(&self) -> &'a str {
        self.0.str_of(1)
    }
    /// Whether the key is `key`: `kv.key() == key` without checking that the bytes are UTF-8
    /// (what looking an attribute up costs per attribute passed over).
    pub fn key_is(&self, key: &str) -> bool {
        self.0.bytes_of(1) == key.as_bytes()
    }
    /// The value (an empty `AnyValue` when absent).
    pub fn value(&self) -> Value<'a> {
        Value(self.0.message(2).unwrap_or_else(Msg::empty))
    }
}

/// What an `AnyValue` holds, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// No value set.
    Empty,
    /// `string_value`.
    Str(&'a str),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bytes_value`.
    Bytes(&'a [u8]),
    /// `array_value`.
    Array(Array<'a>),
    /// `kvlist_value`.
    KvList(KvList<'a>),
}

impl PartialEq for Array<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.bytes() == other.0.bytes()
    }
}

impl PartialEq for KvList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.bytes() == other.0.bytes()
    }
}

impl<'a> Value<'a> {
    /// A view of an encoded `AnyValue` on its own.
    pub fn from_bytes(bytes: &'a [u8]) -> Self {
        Value(Msg::root(bytes))
    }

    /// What the value holds (the last `oneof` member set wins, as in protobuf).
    pub fn get(&self) -> ValueRef<'a> {
        let mut out = ValueRef::Empty;
        for f in self.0.fields() {
            out = match (f.number, f.value) {
                (1, Wire::Len(b)) => ValueRef::Str(crate::wire::utf8(b).unwrap_or("")),
                (2, Wire::Varint(v)) => ValueRef::Bool(v != 0),
                (3, Wire::Varint(v)) => ValueRef::Int(v as i64),
                (4, Wire::I64(v)) => ValueRef::Double(f64::from_bits(v)),
                (5, Wire::Len(_)) => ValueRef::Array(Array(self.0.child(&f))),
                (6, Wire::Len(_)) => ValueRef::KvList(KvList(self.0.child(&f))),
                (7, Wire::Len(b)) => ValueRef::Bytes(b),
                _ => continue,
            };
        }
        out
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&'a str> {
        match self.get() {
            ValueRef::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an int value.
    pub fn as_int(&self) -> Option<i64> {
        match self.get() {
            ValueRef::Int(i) => Some(i),
            _ => None,
        }
    }

    /// Whether any string in the value (nested ones included, keys not) satisfies `f`.
    pub fn any_str(&self, f: &mut impl FnMut(&'a str) -> bool) -> bool {
        match self.get() {
            ValueRef::Str(s) => f(s),
            ValueRef::Array(a) => a.values().any(|v| v.any_str(f)),
            ValueRef::KvList(l) => l.values().any(|kv| kv.value().any_str(f)),
            _ => false,
        }
    }
}

impl<'a> Array<'a> {
    /// The elements.
    pub fn values(&self) -> Repeated<'a, Value<'a>> {
        self.0.repeated(1)
    }
}

impl<'a> KvList<'a> {
    /// The entries.
    pub fn values(&self) -> Repeated<'a, KeyValue<'a>> {
        self.0.repeated(1)
    }
}
