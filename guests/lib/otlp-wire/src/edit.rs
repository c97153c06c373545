//! The edit log: what a plugin changes, recorded against the messages of the input (by their
//! offset), then applied in one pass that copies every untouched message as a byte range and
//! re-encodes only the messages on the way to a change.

use std::ops::Range;

use crate::schema::{Kind, Ty};
use crate::value::{AnyValue, encode_key_value};
use crate::view::{HasAttributes, KeyValue, LogRecord, ResourceLogs, ResourceSpans, Span, View};
use crate::wire::{Encoder, Fields, Wire};

/// A field replaced in a message: its number and its encoding (key included; empty: removed),
/// a range of [`Edits::arena`].
#[derive(Debug, Clone)]
struct SetField {
    number: u32,
    encoded: Range<u32>,
}

/// The rarer changes to one message, kept out of line so that the common edit stays small.
#[derive(Debug, Default, Clone)]
struct Extra {
    /// Fields set beyond the two of [`MsgEdit::set`].
    sets: Vec<SetField>,
    /// Attributes added at the end of field `.0`, by key (a later set of the same key wins).
    added: Vec<(u32, String, AnyValue)>,
    /// For a `ResourceSpans` / `ResourceLogs` without a resource: attributes of a new one.
    new_resource: Vec<(String, AnyValue)>,
}

/// Changes to one message.
#[derive(Debug, Default, Clone)]
struct MsgEdit {
    /// Leave the message out.
    drop: bool,
    /// Fields replaced: every occurrence of the number is left out and the encoded field is
    /// written where the first one was, or at the end. Up to two inline (a replaced attribute
    /// value, a status, a severity and its text), more in [`Extra::sets`]; in the order they
    /// were set, one per number.
    set: [Option<SetField>; 2],
    /// The message's new content (a range of the arena), written instead of the old (other
    /// edits to it are moot).
    replace: Option<Range<u32>>,
    /// Added attributes, a new resource, more sets.
    extra: Option<Box<Extra>>,
}

impl MsgEdit {
    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Sets field `f.number`, replacing an earlier set of it.
    fn put(&mut self, f: SetField) {
        let more = self
            .extra
            .as_deref_mut()
            .map(|x| &mut x.sets[..])
            .unwrap_or(&mut []);
        if let Some(slot) = self
            .set
            .iter_mut()
            .flatten()
            .chain(more.iter_mut())
            .find(|s| s.number == f.number)
        {
            *slot = f;
            return;
        }
        match self.set.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(f),
            None => self.extra().sets.push(f),
        }
    }

    /// The fields set, in order.
    fn sets(&self) -> impl Iterator<Item = &SetField> {
        let more = self.extra.as_deref().map(|x| &x.sets[..]).unwrap_or(&[]);
        self.set.iter().flatten().chain(more.iter())
    }

    fn added(&self) -> &[(u32, String, AnyValue)] {
        self.extra.as_deref().map(|x| &x.added[..]).unwrap_or(&[])
    }

    fn new_resource(&self) -> &[(String, AnyValue)] {
        self.extra
            .as_deref()
            .map(|x| &x.new_resource[..])
            .unwrap_or(&[])
    }
}

/// What a plugin changes in one request. Views name what to change; [`Edits::apply`] writes the
/// new request. Changing nothing costs nothing: the host keeps the input as it was.
///
/// Edits cost no allocation each: they are kept in offset order (plugins edit in the order they
/// read, so an edit is usually an append) and new encodings go into one buffer.
#[derive(Debug, Default, Clone)]
pub struct Edits {
    /// The edited messages by offset, sorted.
    msgs: Vec<(u32, MsgEdit)>,
    /// The encodings that edits refer to.
    arena: Vec<u8>,
    replaced: Option<Vec<u8>>,
}

impl Edits {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.replaced.is_none()
    }

    fn at<'a>(&mut self, v: &impl View<'a>) -> &mut MsgEdit {
        let offset = v.msg().start() as u32;
        let i = match self.msgs.last() {
            Some((last, _)) if *last == offset => self.msgs.len() - 1,
            Some((last, _)) if *last > offset => {
                match self.msgs.binary_search_by_key(&offset, |(o, _)| *o) {
                    Ok(i) => i,
                    Err(i) => {
                        self.msgs.insert(i, (offset, MsgEdit::default()));
                        i
                    }
                }
            }
            _ => {
                self.msgs.push((offset, MsgEdit::default()));
                self.msgs.len() - 1
            }
        };
        &mut self.msgs[i].1
    }

    /// Encodes with `f` into the arena; returns the range written.
    fn encode(&mut self, f: impl FnOnce(&mut Encoder)) -> Range<u32> {
        let mut e = Encoder {
            buf: std::mem::take(&mut self.arena),
        };
        let start = e.buf.len() as u32;
        f(&mut e);
        let end = e.buf.len() as u32;
        self.arena = e.buf;
        start..end
    }

    fn bytes(&self, r: &Range<u32>) -> &[u8] {
        &self.arena[r.start as usize..r.end as usize]
    }

    /// Leaves out a span, a log record, an event, a link, an attribute or a whole resource or
    /// scope group. A scope group whose items are all dropped is dropped too, and so is a
    /// resource group whose scope groups all are.
    pub fn drop<'a>(&mut self, v: &impl View<'a>) {
        if v.msg().is_present() {
            self.at(v).drop = true;
        }
    }

    fn set_field<'a>(&mut self, v: &impl View<'a>, number: u32, f: impl FnOnce(&mut Encoder)) {
        if !v.msg().is_present() {
            return;
        }
        let encoded = self.encode(f);
        self.at(v).put(SetField { number, encoded });
    }

    /// Sets attribute `key` of `owner` (a span, event, link, log record, resource or scope):
    /// the first attribute with that key gets the new value (any others with it are left
    /// out), or the attribute is added at the end.
    pub fn set_attribute<'a, A: HasAttributes<'a>>(
        &mut self,
        owner: &A,
        key: &str,
        value: impl Into<AnyValue>,
    ) {
        let value = value.into();
        let mut found = false;
        for kv in owner.attributes() {
            if kv.key_is(key) {
                if found {
                    self.drop(&kv);
                } else {
                    self.set_value(&kv, value.clone());
                    found = true;
                }
            }
        }
        if !found && owner.msg().is_present() {
            let e = self.at(owner);
            let x = e.extra();
            x.added.retain(|(_, k, _)| k != key);
            x.added.push((A::ATTRIBUTES, key.to_string(), value));
        }
    }

    /// Sets `key` only if `owner` has no attribute with that key; returns whether it did.
    pub fn set_attribute_if_absent<'a, A: HasAttributes<'a>>(
        &mut self,
        owner: &A,
        key: &str,
        value: impl Into<AnyValue>,
    ) -> bool {
        if owner.attribute(key).is_some() {
            return false;
        }
        self.set_attribute(owner, key, value);
        true
    }

    /// Removes every attribute named `key` of `owner`.
    pub fn remove_attribute<'a, A: HasAttributes<'a>>(&mut self, owner: &A, key: &str) {
        for kv in owner.attributes() {
            if kv.key_is(key) {
                self.drop(&kv);
            }
        }
        if owner.msg().is_present() {
            let e = self.at(owner);
            if let Some(x) = e.extra.as_deref_mut() {
                x.added.retain(|(_, k, _)| k != key);
            }
        }
    }

    /// Replaces the value of one attribute (nested values included, as a whole).
    pub fn set_value(&mut self, kv: &KeyValue<'_>, value: impl Into<AnyValue>) {
        let value = value.into();
        self.set_field(kv, 2, |e| {
            e.nested(2, |e| {
                value.encode(e);
                true
            });
        });
    }

    /// Replaces the value of one attribute with a string: [`Self::set_value`] without an owned
    /// [`AnyValue`] in between.
    pub fn set_str(&mut self, kv: &KeyValue<'_>, value: &str) {
        self.set_field(kv, 2, |e| {
            e.nested(2, |e| {
                e.bytes_field(1, value.as_bytes());
                true
            });
        });
    }

    /// Sets an attribute of the resource of `group` (a `ResourceSpans` or `ResourceLogs`),
    /// creating the resource when the group has none.
    pub fn set_resource_attribute<'a, G: ResourceGroup<'a>>(
        &mut self,
        group: &G,
        key: &str,
        value: impl Into<AnyValue>,
    ) {
        let resource = group.resource_view();
        if resource.msg().is_present() {
            self.set_attribute(&resource, key, value);
        } else {
            let e = self.at(group);
            let x = e.extra();
            x.new_resource.retain(|(k, _)| k != key);
            x.new_resource.push((key.to_string(), value.into()));
        }
    }

    /// Renames a span.
    pub fn set_span_name(&mut self, span: &Span<'_>, name: &str) {
        self.set_field(span, 5, |e| e.str_field(5, name));
    }

    /// Sets a span's W3C trace state.
    pub fn set_trace_state(&mut self, span: &Span<'_>, trace_state: &str) {
        self.set_field(span, 3, |e| e.str_field(3, trace_state));
    }

    /// Sets a span's status (code 0 unset, 1 ok, 2 error).
    pub fn set_status(&mut self, span: &Span<'_>, code: i32, message: &str) {
        self.set_field(span, 15, |e| {
            e.nested(15, |e| {
                e.str_field(2, message);
                e.varint_field(3, code as u32 as u64);
                true
            });
        });
    }

    /// Replaces a log record's body.
    pub fn set_body(&mut self, record: &LogRecord<'_>, body: impl Into<AnyValue>) {
        let body = body.into();
        self.set_field(record, 5, |e| {
            e.nested(5, |e| {
                body.encode(e);
                true
            });
        });
    }

    /// Sets a log record's severity.
    pub fn set_severity(&mut self, record: &LogRecord<'_>, number: i32, text: &str) {
        self.set_field(record, 2, |e| e.varint_field(2, number as u32 as u64));
        self.set_field(record, 3, |e| e.str_field(3, text));
    }

    /// Replaces a whole message (a span, a log record, …) with `content`, the encoded fields of
    /// a message of the same type (what [`crate::Encoder`] writes; no key or length).
    pub fn replace<'a>(&mut self, v: &impl View<'a>, content: Vec<u8>) {
        if v.msg().is_present() {
            let r = self.encode(|e| e.raw(&content));
            self.at(v).replace = Some(r);
        }
    }

    /// Replaces the whole output with `request` (an encoded request of the same signal): what a
    /// plugin that builds its output itself (owned records) returns.
    pub fn replace_all(&mut self, request: Vec<u8>) {
        self.replaced = Some(request);
    }

    /// The new request: `input` (a `root` message, `Kind::TracesData` or `Kind::LogsData`) with
    /// the edits applied. `None` when there are none (the input stands).
    pub fn apply(&self, input: &[u8], root: Kind) -> Option<Vec<u8>> {
        if let Some(r) = &self.replaced {
            return Some(r.clone());
        }
        if self.msgs.is_empty() {
            return None;
        }
        let mut out = Encoder::with_capacity(input.len() + self.arena.len() + 64);
        // Messages are visited in offset order, and so are the edits: one cursor over them
        // answers "is anything inside this range edited?" and "is this message edited?".
        let mut cursor = 0;
        self.write(input, &mut cursor, root, 0, input.len(), &mut out);
        Some(out.buf)
    }

    /// Like [`Self::apply`], consuming the edits (no copy of a replaced request).
    pub fn into_output(mut self, input: &[u8], root: Kind) -> Option<Vec<u8>> {
        match self.replaced.take() {
            Some(r) => Some(r),
            None => self.apply(input, root),
        }
    }

    /// Whether an edited message starts in `start..end`. `cursor` is the first edit not
    /// before the messages visited so far; `start` never decreases from call to call.
    fn touched(&self, cursor: &mut usize, start: usize, end: usize) -> bool {
        while *cursor < self.msgs.len() && (self.msgs[*cursor].0 as usize) < start {
            *cursor += 1;
        }
        *cursor < self.msgs.len() && (self.msgs[*cursor].0 as usize) < end.max(start + 1)
    }

    /// The edit of the message at `start`, if any (`cursor` as for [`Self::touched`]).
    fn own(&self, cursor: &mut usize, start: usize) -> Option<&MsgEdit> {
        self.touched(cursor, start, start + 1)
            .then(|| &self.msgs[*cursor])
            .filter(|(o, _)| *o as usize == start)
            .map(|(_, e)| e)
    }

    /// Writes the content of message `kind` at `input[start..end]`; `false` when it is left out.
    fn write(
        &self,
        input: &[u8],
        cursor: &mut usize,
        kind: Kind,
        start: usize,
        end: usize,
        out: &mut Encoder,
    ) -> bool {
        let own = self.own(cursor, start);
        if own.is_some_and(|e| e.drop) {
            return false;
        }
        if let Some(content) = own.and_then(|e| e.replace.as_ref()) {
            out.raw(self.bytes(content));
            return true;
        }
        if !self.touched(cursor, start, end) {
            out.raw(&input[start..end]);
            return true;
        }
        let items_field = kind.items_field();
        let (mut items_in, mut items_out) = (0u32, 0u32);
        let mut written_sets: u64 = 0;
        // Fields copied as they are, one after another, are copied in one piece: in wasm each
        // copy is a call out of the guest's code (`memory.copy`).
        let mut copy = PendingCopy::default();
        for f in Fields::new(input, start, end) {
            let Ok(f) = f else { break };
            if let Some(e) = own
                && let Some((i, set)) = e.sets().enumerate().find(|(_, s)| s.number == f.number)
            {
                if written_sets & (1 << i) == 0 {
                    copy.flush(input, out);
                    out.raw(self.bytes(&set.encoded));
                    written_sets |= 1 << i;
                }
                continue;
            }
            let child = match (kind.field(f.number), f.value) {
                (Some((_, Ty::Msg(child))), Wire::Len(_)) => child,
                _ => {
                    copy.add(input, f.start, f.end, out);
                    continue;
                }
            };
            let is_item = items_field == Some(f.number);
            items_in += u32::from(is_item);
            if !self.touched(cursor, f.content, f.end) {
                copy.add(input, f.start, f.end, out);
                items_out += u32::from(is_item);
                continue;
            }
            copy.flush(input, out);
            if out.nested_like(f.number, f.end - f.content, |o| {
                self.write(input, cursor, child, f.content, f.end, o)
            }) {
                items_out += u32::from(is_item);
            }
        }
        copy.flush(input, out);
        if let Some(e) = own {
            for (i, set) in e.sets().enumerate() {
                if written_sets & (1 << i) == 0 {
                    out.raw(self.bytes(&set.encoded));
                }
            }
            for (field, key, value) in e.added() {
                out.nested(*field, |o| {
                    encode_key_value(o, key, value);
                    true
                });
            }
            if !e.new_resource().is_empty() {
                out.nested(1, |o| {
                    for (key, value) in e.new_resource() {
                        o.nested(1, |o| {
                            encode_key_value(o, key, value);
                            true
                        });
                    }
                    true
                });
            }
        }
        // A group whose items were all dropped goes too.
        !(items_in > 0 && items_out == 0)
    }
}

/// A range of the input waiting to be copied to the output.
#[derive(Default)]
struct PendingCopy {
    start: usize,
    end: usize,
}

impl PendingCopy {
    /// Adds `input[start..end]`, copying what waits first unless it ends where this starts.
    #[inline]
    fn add(&mut self, input: &[u8], start: usize, end: usize, out: &mut Encoder) {
        if start != self.end {
            self.flush(input, out);
            self.start = start;
        }
        self.end = end;
    }

    /// Copies what waits.
    #[inline]
    fn flush(&mut self, input: &[u8], out: &mut Encoder) {
        if self.end > self.start {
            out.raw(&input[self.start..self.end]);
        }
        self.start = self.end;
    }
}

/// A resource group: `ResourceSpans` or `ResourceLogs`.
pub trait ResourceGroup<'a>: View<'a> {
    /// Its resource (empty when absent).
    fn resource_view(&self) -> crate::view::Resource<'a>;
}

impl<'a> ResourceGroup<'a> for ResourceSpans<'a> {
    fn resource_view(&self) -> crate::view::Resource<'a> {
        self.resource()
    }
}

impl<'a> ResourceGroup<'a> for ResourceLogs<'a> {
    fn resource_view(&self) -> crate::view::Resource<'a> {
        self.resource()
    }
}
