//! The edit log: what a plugin changes, recorded against the messages of the input (by their
//! offset), then applied in one pass that copies every untouched message as a byte range and
//! re-encodes only the messages on the way to a change.

use std::collections::BTreeMap;

use crate::schema::{Kind, Ty};
use crate::value::{AnyValue, encode_key_value};
use crate::view::{HasAttributes, KeyValue, LogRecord, ResourceLogs, ResourceSpans, Span, View};
use crate::wire::{Encoder, Fields, Wire};

/// Changes to one message.
#[derive(Debug, Default, Clone)]
struct MsgEdit {
    /// Leave the message out.
    drop: bool,
    /// Fields replaced: every occurrence of the number is left out and the encoded field (key
    /// included; empty: removed) is written where the first one was, or at the end.
    set: Vec<(u32, Vec<u8>)>,
    /// Attributes added at the end of field `.0`, by key (a later set of the same key wins).
    added: Vec<(u32, String, AnyValue)>,
    /// For a `ResourceSpans` / `ResourceLogs` without a resource: attributes of a new one.
    new_resource: Vec<(String, AnyValue)>,
    /// The message's new content, written instead of the old (other edits to it are moot).
    replace: Option<Vec<u8>>,
}

/// What a plugin changes in one request. Views name what to change; [`Edits::apply`] writes the
/// new request. Changing nothing costs nothing: the host keeps the input as it was.
#[derive(Debug, Default, Clone)]
pub struct Edits {
    by_offset: BTreeMap<u32, MsgEdit>,
    replaced: Option<Vec<u8>>,
}

impl Edits {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.by_offset.is_empty() && self.replaced.is_none()
    }

    fn at<'a>(&mut self, v: &impl View<'a>) -> &mut MsgEdit {
        self.by_offset.entry(v.msg().start() as u32).or_default()
    }

    /// Leaves out a span, a log record, an event, a link, an attribute or a whole resource or
    /// scope group. A scope group whose items are all dropped is dropped too, and so is a
    /// resource group whose scope groups all are.
    pub fn drop<'a>(&mut self, v: &impl View<'a>) {
        if v.msg().is_present() {
            self.at(v).drop = true;
        }
    }

    fn set_field<'a>(&mut self, v: &impl View<'a>, number: u32, encoded: Vec<u8>) {
        if !v.msg().is_present() {
            return;
        }
        let e = self.at(v);
        e.set.retain(|(n, _)| *n != number);
        e.set.push((number, encoded));
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
            if kv.key() == key {
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
            e.added.retain(|(_, k, _)| k != key);
            e.added.push((A::ATTRIBUTES, key.to_string(), value));
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
            if kv.key() == key {
                self.drop(&kv);
            }
        }
        if owner.msg().is_present() {
            self.at(owner).added.retain(|(_, k, _)| k != key);
        }
    }

    /// Replaces the value of one attribute (nested values included, as a whole).
    pub fn set_value(&mut self, kv: &KeyValue<'_>, value: impl Into<AnyValue>) {
        let mut e = Encoder::default();
        e.nested(2, |e| {
            value.into().encode(e);
            true
        });
        self.set_field(kv, 2, e.buf);
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
            e.new_resource.retain(|(k, _)| k != key);
            e.new_resource.push((key.to_string(), value.into()));
        }
    }

    /// Renames a span.
    pub fn set_span_name(&mut self, span: &Span<'_>, name: &str) {
        self.set_field(span, 5, str_field(5, name));
    }

    /// Sets a span's W3C trace state.
    pub fn set_trace_state(&mut self, span: &Span<'_>, trace_state: &str) {
        self.set_field(span, 3, str_field(3, trace_state));
    }

    /// Sets a span's status (code 0 unset, 1 ok, 2 error).
    pub fn set_status(&mut self, span: &Span<'_>, code: i32, message: &str) {
        let mut e = Encoder::default();
        e.nested(15, |e| {
            e.str_field(2, message);
            e.varint_field(3, code as u32 as u64);
            true
        });
        self.set_field(span, 15, e.buf);
    }

    /// Replaces a log record's body.
    pub fn set_body(&mut self, record: &LogRecord<'_>, body: impl Into<AnyValue>) {
        let mut e = Encoder::default();
        e.nested(5, |e| {
            body.into().encode(e);
            true
        });
        self.set_field(record, 5, e.buf);
    }

    /// Sets a log record's severity.
    pub fn set_severity(&mut self, record: &LogRecord<'_>, number: i32, text: &str) {
        let mut e = Encoder::default();
        e.varint_field(2, number as u32 as u64);
        self.set_field(record, 2, e.buf);
        self.set_field(record, 3, str_field(3, text));
    }

    /// Replaces a whole message (a span, a log record, …) with `content`, the encoded fields of
    /// a message of the same type (what [`crate::Encoder`] writes; no key or length).
    pub fn replace<'a>(&mut self, v: &impl View<'a>, content: Vec<u8>) {
        if v.msg().is_present() {
            self.at(v).replace = Some(content);
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
        if self.by_offset.is_empty() {
            return None;
        }
        let mut out = Encoder::with_capacity(input.len() + 64);
        // The edited offsets, sorted, for "is anything inside this range edited?" by binary
        // search (a BTreeMap range query per message cost more than the copying).
        let keys: Vec<u32> = self.by_offset.keys().copied().collect();
        self.write(input, &keys, root, 0, input.len(), &mut out);
        Some(out.buf)
    }

    /// Like [`Self::apply`], consuming the edits (no copy of a replaced request).
    pub fn into_output(mut self, input: &[u8], root: Kind) -> Option<Vec<u8>> {
        match self.replaced.take() {
            Some(r) => Some(r),
            None => self.apply(input, root),
        }
    }

    /// Whether an edited message starts in `start..end` (`keys`: the edited offsets, sorted).
    fn touched(keys: &[u32], start: usize, end: usize) -> bool {
        let i = keys.partition_point(|&k| (k as usize) < start);
        i < keys.len() && (keys[i] as usize) < end.max(start + 1)
    }

    /// Writes the content of message `kind` at `input[start..end]`; `false` when it is left out.
    fn write(
        &self,
        input: &[u8],
        keys: &[u32],
        kind: Kind,
        start: usize,
        end: usize,
        out: &mut Encoder,
    ) -> bool {
        let own = self.by_offset.get(&(start as u32));
        if own.is_some_and(|e| e.drop) {
            return false;
        }
        if let Some(content) = own.and_then(|e| e.replace.as_ref()) {
            out.raw(content);
            return true;
        }
        if !Self::touched(keys, start, end) {
            out.raw(&input[start..end]);
            return true;
        }
        let items_field = kind.items_field();
        let (mut items_in, mut items_out) = (0u32, 0u32);
        let mut written_sets: u64 = 0;
        for f in Fields::new(input, start, end) {
            let Ok(f) = f else { break };
            if let Some(e) = own
                && let Some(i) = e.set.iter().position(|(n, _)| *n == f.number)
            {
                if written_sets & (1 << i) == 0 {
                    out.raw(&e.set[i].1);
                    written_sets |= 1 << i;
                }
                continue;
            }
            let child = match (kind.field(f.number), f.value) {
                (Some((_, Ty::Msg(child))), Wire::Len(_)) => child,
                _ => {
                    out.raw(&input[f.start..f.end]);
                    continue;
                }
            };
            let is_item = items_field == Some(f.number);
            items_in += u32::from(is_item);
            if !Self::touched(keys, f.content, f.end) {
                out.raw(&input[f.start..f.end]);
                items_out += u32::from(is_item);
                continue;
            }
            if out.nested(f.number, |o| {
                self.write(input, keys, child, f.content, f.end, o)
            }) {
                items_out += u32::from(is_item);
            }
        }
        if let Some(e) = own {
            for (i, (_, encoded)) in e.set.iter().enumerate() {
                if written_sets & (1 << i) == 0 {
                    out.raw(encoded);
                }
            }
            for (field, key, value) in &e.added {
                out.nested(*field, |o| {
                    encode_key_value(o, key, value);
                    true
                });
            }
            if !e.new_resource.is_empty() {
                out.nested(1, |o| {
                    for (key, value) in &e.new_resource {
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

fn str_field(number: u32, s: &str) -> Vec<u8> {
    let mut e = Encoder::default();
    e.str_field(number, s);
    e.buf
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
