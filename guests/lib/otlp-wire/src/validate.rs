//! Validation of a whole request without decoding it: every field of every message is read once
//! (as protobuf, with the OTLP rules a decoder applies: wire types, UTF-8, id lengths, nesting
//! depth), nothing is allocated, and the items (spans, log records) are counted.

use crate::schema::{Kind, Ty};
use crate::wire::{Fields, Wire, WireError};

/// What a request may hold beyond the protobuf rules. A receiver uses [`Limits::RECEIVER`];
/// the host holds a plugin's output to the limits configured for that plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How deeply `AnyValue`s may nest: an attribute's value is at depth 1, an element of an
    /// array held by that value at depth 2.
    pub max_value_depth: usize,
    /// Entries of one attribute list, key-value list or array.
    pub max_entries: usize,
    /// Bytes of one string or bytes field (a log body, an attribute value, a span name).
    pub max_string_bytes: usize,
}

impl Limits {
    /// What a receiver accepts: values nested 100 000 deep (the OpenTelemetry Collector
    /// accepts that too), any number of entries and any string the message size allows. The
    /// walk keeps its own stack on the heap, so depth costs memory (two or three 64-byte frames
    /// per nested value: about 13 to 19 MB at 100 000 levels, while the walk lasts), never the
    /// thread's stack.
    pub const RECEIVER: Limits = Limits {
        max_value_depth: 100_000,
        max_entries: usize::MAX,
        max_string_bytes: usize::MAX,
    };
}

/// Checks that `buf` is a well-formed `root` message (`Kind::TracesData` or
/// `Kind::LogsData`, i.e. an OTLP export request) within [`Limits::RECEIVER`] and counts its
/// items.
pub fn validate(root: Kind, buf: &[u8]) -> Result<u64, WireError> {
    validate_with(root, buf, &Limits::RECEIVER)
}

/// Values nested this deep are walked by recursion (the fast path, which every real request
/// takes); a subtree deeper than that by [`walk_deep`], whose stack is on the heap.
const RECURSE_VALUE_DEPTH: usize = 16;

/// [`validate`] within `limits`. A deep message costs heap, not stack.
pub fn validate_with(root: Kind, buf: &[u8], limits: &Limits) -> Result<u64, WireError> {
    let mut items = 0;
    // Without entry or string limits (a receiver's), those checks are compiled out.
    if limits.max_entries == usize::MAX && limits.max_string_bytes == usize::MAX {
        walk::<false, true>(root, buf, 0, buf.len(), &[], None, 0, &mut items, limits)?;
    } else {
        walk::<true, true>(root, buf, 0, buf.len(), &[], None, 0, &mut items, limits)?;
    }
    Ok(items)
}

/// [`validate_with`] without the flat check of attributes and values (every message walked
/// the one general way): the reference the tests hold the fast path to.
#[doc(hidden)]
pub fn validate_general(root: Kind, buf: &[u8], limits: &Limits) -> Result<u64, WireError> {
    let mut items = 0;
    walk::<true, false>(root, buf, 0, buf.len(), &[], None, 0, &mut items, limits)?;
    Ok(items)
}

/// [`validate_with`] for `out`, a plugin's answer to `input` (a request that was validated
/// before the plugin saw it). A sub-message of `out` whose bytes are those of the message in
/// the same place of `input` (same parent, same field, in order) is the input's own and is not
/// walked again: what is checked is what the plugin wrote. A plugin that masks a few values
/// pays for the spans it touched, a sampler that drops spans or an enricher that edits only
/// the resource for almost nothing. The result is [`validate_with`]'s whenever the input's
/// unchanged parts are within `limits` (the receivers' limits always are).
pub fn validate_output(
    root: Kind,
    out: &[u8],
    input: &[u8],
    limits: &Limits,
) -> Result<u64, WireError> {
    let mut items = 0;
    let twin = Some((0, input.len()));
    if limits.max_entries == usize::MAX && limits.max_string_bytes == usize::MAX {
        walk::<false, true>(root, out, 0, out.len(), input, twin, 0, &mut items, limits)?;
    } else {
        walk::<true, true>(root, out, 0, out.len(), input, twin, 0, &mut items, limits)?;
    }
    Ok(items)
}

/// How many bytes of two items' contents tell whether one is the other edited: a span's trace
/// and span ids, a log record's timestamps and first fields.
const SAME_ITEM_PREFIX: usize = 32;

/// How many of the input's next items are looked at for an output item that is not the
/// input's item at the cursor (those in between were dropped: a sampler's work).
const DROPPED_LOOKAHEAD: usize = 64;

/// What an output sub-message is to the input.
enum Twin {
    /// Byte for byte the input's message in the same place.
    Same,
    /// A message of the input (its content at `input[.0...1]`), edited: walked paired with it.
    Edited(usize, usize),
    /// Added or edited by the plugin: walked whole.
    New,
}

/// Whether a message of `kind` holds the groups the items are counted in: never skipped.
fn counts_items(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::TracesData
            | Kind::ResourceSpans
            | Kind::ScopeSpans
            | Kind::LogsData
            | Kind::ResourceLogs
            | Kind::ScopeLogs
    )
}

/// Finds the input's counterpart of the output field `f` (a sub-message of `child`) among the
/// input's fields from `*cursor`, advancing the cursor past it when there is one.
///
/// The groups are walked paired, as they hold the items that are counted. Items (spans, log
/// records), resources, scopes, events and links are skipped when equal and walked paired when
/// edited, so that the attributes a plugin left as they were are skipped too: an attribute
/// (`KeyValue`) is paired with the input's attribute in the same place and skipped when equal
/// (a memcmp of a few dozen bytes, against the walk of two or three messages). Values and the
/// rest are checked. The input's items come in the output's order, some edited, dropped or
/// added: the item at the cursor is the output's when it starts alike (the same ids and
/// times); else the output's may be among the next [`DROPPED_LOOKAHEAD`] (those in between
/// were dropped: a sampler's work); else it is new.
#[inline]
fn twin_of(
    f: &crate::wire::Field<'_>,
    child: Kind,
    out: &[u8],
    input: &[u8],
    cursor: &mut usize,
    end: usize,
) -> Twin {
    let item = matches!(child, Kind::Span | Kind::LogRecord);
    let whole = matches!(
        child,
        Kind::Resource | Kind::Scope | Kind::Event | Kind::Link | Kind::KeyValue
    );
    if !(item || whole || counts_items(child)) {
        return Twin::New;
    }
    let mut pos = *cursor;
    let Some(g) = crate::wire::find_next(input, &mut pos, end, f.number) else {
        return Twin::New;
    };
    let mine = &out[f.content..f.end];
    let paired = |g: &crate::wire::Field<'_>| {
        if mine == &input[g.content..g.end] {
            Twin::Same
        } else if child == Kind::KeyValue {
            Twin::New
        } else {
            Twin::Edited(g.content, g.end)
        }
    };
    if !item {
        *cursor = g.end;
        if counts_items(child) {
            return Twin::Edited(g.content, g.end);
        }
        return paired(&g);
    }
    let p = SAME_ITEM_PREFIX.min(mine.len());
    let starts_alike =
        |g: &crate::wire::Field<'_>| input[g.content..g.end].get(..p) == Some(&mine[..p]);
    if starts_alike(&g) {
        *cursor = g.end;
        return paired(&g);
    }
    for _ in 0..DROPPED_LOOKAHEAD {
        let Some(h) = crate::wire::find_next(input, &mut pos, end, f.number) else {
            break;
        };
        if starts_alike(&h) {
            *cursor = h.end;
            return paired(&h);
        }
    }
    Twin::New
}

/// Checks one field of a `kind` message: its wire type, UTF-8, id lengths and the limits on
/// strings and entries; marks it in `seen` and counts it in `entries` and `items`. Returns the
/// sub-message to walk, if the field is one.
#[inline(always)]
fn step<const LIMITED: bool>(
    kind: Kind,
    required: &[u32],
    field: &crate::wire::Field<'_>,
    limits: &Limits,
    seen: &mut u32,
    entries: &mut usize,
    items: &mut u64,
) -> Result<Option<Kind>, Box<WireError>> {
    // The error is boxed so that the result fits in two registers: this runs for every field.
    let Some((name, ty)) = kind.field(field.number) else {
        return Ok(None);
    };
    if field.value.wire_type() != ty.wire_type() {
        return Err(Box::new(wrong_wire_type(kind, name, ty, field)));
    }
    if !required.is_empty()
        && let Some(i) = required.iter().position(|&n| n == field.number)
    {
        *seen |= 1 << i;
    }
    let Wire::Len(content) = field.value else {
        return Ok(None);
    };
    match ty {
        Ty::Str | Ty::Bytes if LIMITED && content.len() > limits.max_string_bytes => {
            Err(Box::new(too_long(kind, name, field, content.len(), limits)))
        }
        Ty::Str if crate::wire::utf8(content).is_none() => Err(Box::new(WireError::new(
            field.content,
            format!("{}.{name} is not valid UTF-8", kind.name()),
        ))),
        Ty::Id { len, optional } if content.len() != len && !(optional && content.is_empty()) => {
            Err(Box::new(wrong_id(
                kind,
                name,
                field,
                len,
                optional,
                content.len(),
            )))
        }
        Ty::Msg(child) => {
            if kind.items_field() == Some(field.number)
                && matches!(kind, Kind::ScopeSpans | Kind::ScopeLogs)
            {
                *items += 1;
            }
            if LIMITED && (child == Kind::KeyValue || kind == Kind::ArrayValue) {
                *entries += 1;
                if *entries > limits.max_entries {
                    return Err(Box::new(too_many(kind, name, field, limits)));
                }
            }
            Ok(Some(child))
        }
        _ => Ok(None),
    }
}

#[cold]
#[inline(never)]
fn wrong_wire_type(kind: Kind, name: &str, ty: Ty, field: &crate::wire::Field<'_>) -> WireError {
    WireError::new(
        field.start,
        format!(
            "{}.{name}: wire type {} where {} was expected",
            kind.name(),
            field.value.wire_type(),
            ty.wire_type()
        ),
    )
}

#[cold]
#[inline(never)]
fn too_long(
    kind: Kind,
    name: &str,
    field: &crate::wire::Field<'_>,
    len: usize,
    limits: &Limits,
) -> WireError {
    WireError::new(
        field.content,
        format!(
            "{}.{name} is {len} bytes, more than the limit of {}",
            kind.name(),
            limits.max_string_bytes
        ),
    )
}

#[cold]
#[inline(never)]
fn wrong_id(
    kind: Kind,
    name: &str,
    field: &crate::wire::Field<'_>,
    len: usize,
    optional: bool,
    got: usize,
) -> WireError {
    let expected = if optional {
        format!("0 or {len}")
    } else {
        len.to_string()
    };
    WireError::new(
        field.content,
        format!("{}.{name} must be {expected} bytes, got {got}", kind.name()),
    )
}

#[cold]
#[inline(never)]
fn too_many(kind: Kind, name: &str, field: &crate::wire::Field<'_>, limits: &Limits) -> WireError {
    WireError::new(
        field.start,
        format!(
            "{}.{name} has more than {} entries",
            kind.name(),
            limits.max_entries
        ),
    )
}

/// The depth of a child `child` of a message at `value_depth`, checked against the limit.
#[inline(always)]
fn child_depth(
    child: Kind,
    value_depth: usize,
    at: usize,
    limits: &Limits,
) -> Result<usize, WireError> {
    let d = value_depth + usize::from(child == Kind::AnyValue);
    if d > limits.max_value_depth {
        return Err(WireError::new(
            at,
            format!("values nest more than {} deep", limits.max_value_depth),
        ));
    }
    Ok(d)
}

/// Walks the `kind` message at `buf[start..end]` by recursion, handing subtrees of values
/// nested deeper than [`RECURSE_VALUE_DEPTH`] to [`walk_deep`]: the recursion is at most
/// about 40 frames deep whatever the input. When the message is a plugin's output paired with
/// its `twin` in `input` (the twin's content range), sub-messages that are the twin's own are
/// not walked ([`validate_output`]).
#[allow(clippy::too_many_arguments)]
fn walk<const LIMITED: bool, const FLAT: bool>(
    kind: Kind,
    buf: &[u8],
    start: usize,
    end: usize,
    input: &[u8],
    mut twin: Option<(usize, usize)>,
    value_depth: usize,
    items: &mut u64,
    limits: &Limits,
) -> Result<(), WireError> {
    let (mut seen, mut entries) = (0u32, 0usize);
    let required = kind.required();
    for field in Fields::new(buf, start, end) {
        let field = field?;
        let Some(child) = step::<LIMITED>(
            kind,
            required,
            &field,
            limits,
            &mut seen,
            &mut entries,
            items,
        )
        .map_err(|e| *e)?
        else {
            continue;
        };
        let d = child_depth(child, value_depth, field.start, limits)?;
        if d > RECURSE_VALUE_DEPTH {
            walk_deep::<LIMITED>(child, buf, field.content, field.end, d, items, limits)?;
            continue;
        }
        let child_twin = match &mut twin {
            Some((cursor, twin_end)) => {
                match twin_of(&field, child, buf, input, cursor, *twin_end) {
                    Twin::Same => continue,
                    Twin::Edited(s, e) => Some((s, e)),
                    Twin::New => None,
                }
            }
            None => None,
        };
        // Most sub-messages are attributes with a scalar value: checked in one flat loop.
        if FLAT
            && matches!(child, Kind::KeyValue | Kind::AnyValue)
            && flat_ok::<LIMITED>(child, buf, field.content, field.end, d, limits)
        {
            continue;
        }
        walk::<LIMITED, FLAT>(
            child,
            buf,
            field.content,
            field.end,
            input,
            child_twin,
            d,
            items,
            limits,
        )?;
    }
    check_required(kind, start, seen)
}

/// Whether the `KeyValue` or `AnyValue` at `buf[start..end]` (an `AnyValue` at `value_depth`,
/// or a `KeyValue` whose value would be one deeper) is valid and holds no array or map: the
/// checks of [`step`], without recursion or pairing. `false` also when it is not sure (a nested
/// value, a malformed field): [`walk`] then walks it and says what is wrong.
#[inline]
fn flat_ok<const LIMITED: bool>(
    kind: Kind,
    buf: &[u8],
    start: usize,
    end: usize,
    value_depth: usize,
    limits: &Limits,
) -> bool {
    // Neither has required fields, item counts or entry counts: [`step`]'s counters stay 0.
    let (mut seen, mut entries, mut items) = (0u32, 0usize, 0u64);
    for field in Fields::new(buf, start, end) {
        let Ok(field) = field else { return false };
        match step::<LIMITED>(
            kind,
            &[],
            &field,
            limits,
            &mut seen,
            &mut entries,
            &mut items,
        ) {
            Ok(None) => {}
            Ok(Some(Kind::AnyValue)) if kind == Kind::KeyValue => {
                if value_depth >= limits.max_value_depth
                    || !flat_ok::<LIMITED>(
                        Kind::AnyValue,
                        buf,
                        field.content,
                        field.end,
                        value_depth + 1,
                        limits,
                    )
                {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// One message being walked by [`walk_deep`].
struct Frame<'a> {
    kind: Kind,
    start: usize,
    fields: Fields<'a>,
    seen: u32,
    value_depth: usize,
    entries: usize,
}

/// [`walk`] with its stack on the heap, for deep values.
fn walk_deep<const LIMITED: bool>(
    kind: Kind,
    buf: &[u8],
    start: usize,
    end: usize,
    value_depth: usize,
    items: &mut u64,
    limits: &Limits,
) -> Result<(), WireError> {
    let mut stack = vec![Frame {
        kind,
        start,
        fields: Fields::new(buf, start, end),
        seen: 0,
        value_depth,
        entries: 0,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(field) = top.fields.next() else {
            let done = stack.pop().expect("a frame");
            check_required(done.kind, done.start, done.seen)?;
            continue;
        };
        let field = field?;
        let Some(child) = step::<LIMITED>(
            top.kind,
            top.kind.required(),
            &field,
            limits,
            &mut top.seen,
            &mut top.entries,
            items,
        )
        .map_err(|e| *e)?
        else {
            continue;
        };
        let d = child_depth(child, top.value_depth, field.start, limits)?;
        stack.push(Frame {
            kind: child,
            start: field.content,
            fields: Fields::new(buf, field.content, field.end),
            seen: 0,
            value_depth: d,
            entries: 0,
        });
    }
    Ok(())
}

/// Fails when a field `kind` requires was not among those `seen` in the message at `start`.
fn check_required(kind: Kind, start: usize, seen: u32) -> Result<(), WireError> {
    let required = kind.required();
    for (i, &n) in required.iter().enumerate() {
        if seen & (1 << i) == 0 {
            let (name, ty) = kind.field(n).unwrap_or(("?", Ty::Bytes));
            let len = match ty {
                Ty::Id { len, .. } => len,
                _ => 0,
            };
            return Err(WireError::new(
                start,
                format!("{}.{name} must be {len} bytes, got 0", kind.name()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{key_value_raw, nested_arrays, one_span_request};

    fn deep(depth: usize) -> Vec<u8> {
        one_span_request(
            "op",
            [key_value_raw("deep", &nested_arrays(depth, 7)).as_slice()],
        )
    }

    #[test]
    fn a_receiver_takes_values_nested_as_deep_as_the_collector_does() {
        // 100 000 nested values (200 000 messages) on the test thread's stack: the walk keeps
        // its own stack, so this neither overflows nor is refused.
        assert_eq!(validate(Kind::TracesData, &deep(100_000)), Ok(1));
        let err = validate(Kind::TracesData, &deep(100_001)).unwrap_err();
        assert!(
            err.to_string().contains("nest more than 100000 deep"),
            "{err}"
        );
    }

    #[test]
    fn limits_bound_depth_entries_and_string_sizes() {
        let limits = Limits {
            max_value_depth: 64,
            max_entries: 3,
            max_string_bytes: 10,
        };
        let ok = validate_with(Kind::TracesData, &deep(64), &limits);
        assert_eq!(ok, Ok(1));
        let err = validate_with(Kind::TracesData, &deep(65), &limits).unwrap_err();
        assert!(err.to_string().contains("nest more than 64 deep"), "{err}");

        let kv = key_value_raw("k", &nested_arrays(1, 1));
        let three = one_span_request("op", [kv.as_slice(); 3]);
        assert_eq!(validate_with(Kind::TracesData, &three, &limits), Ok(1));
        let four = one_span_request("op", [kv.as_slice(); 4]);
        let err = validate_with(Kind::TracesData, &four, &limits).unwrap_err();
        assert!(
            err.to_string()
                .contains("span.attributes has more than 3 entries"),
            "{err}"
        );

        let long = one_span_request("an-eleven-", []);
        assert_eq!(validate_with(Kind::TracesData, &long, &limits), Ok(1));
        let longer = one_span_request("an-eleven-b", []);
        let err = validate_with(Kind::TracesData, &longer, &limits).unwrap_err();
        assert!(err.to_string().contains("span.name is 11 bytes"), "{err}");
    }
}
