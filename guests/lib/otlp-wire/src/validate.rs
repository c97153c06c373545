//! Validation of a whole request without decoding it: every field of every message is read once
//! (as protobuf, with the OTLP rules a decoder applies: wire types, UTF-8, id lengths, nesting
//! depth), nothing is allocated, and the items (spans, log records) are counted.

use crate::schema::{Kind, Ty};
use crate::wire::{Fields, Wire, WireError};

/// How deeply messages may nest (prost's recursion limit).
pub const MAX_DEPTH: usize = 100;

/// Checks that `buf` is a well-formed `root` message (`Kind::TracesData` or
/// `Kind::LogsData`, i.e. an OTLP export request) and counts its items.
pub fn validate(root: Kind, buf: &[u8]) -> Result<u64, WireError> {
    let mut items = 0;
    walk(root, buf, 0, buf.len(), 0, &mut items)?;
    Ok(items)
}

fn walk(
    kind: Kind,
    buf: &[u8],
    start: usize,
    end: usize,
    depth: usize,
    items: &mut u64,
) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::new(start, "messages nest too deeply"));
    }
    let required = kind.required();
    let mut seen = 0u32;
    for field in Fields::new(buf, start, end) {
        let field = field?;
        let Some((name, ty)) = kind.field(field.number) else {
            continue;
        };
        if field.value.wire_type() != ty.wire_type() {
            return Err(WireError::new(
                field.start,
                format!(
                    "{}.{name}: wire type {} where {} was expected",
                    kind.name(),
                    field.value.wire_type(),
                    ty.wire_type()
                ),
            ));
        }
        if let Some(i) = required.iter().position(|&n| n == field.number) {
            seen |= 1 << i;
        }
        let Wire::Len(content) = field.value else {
            continue;
        };
        match ty {
            Ty::Str if crate::wire::utf8(content).is_none() => {
                return Err(WireError::new(
                    field.content,
                    format!("{}.{name} is not valid UTF-8", kind.name()),
                ));
            }
            Ty::Id { len, optional }
                if content.len() != len && !(optional && content.is_empty()) =>
            {
                let expected = if optional {
                    format!("0 or {len}")
                } else {
                    len.to_string()
                };
                return Err(WireError::new(
                    field.content,
                    format!(
                        "{}.{name} must be {expected} bytes, got {}",
                        kind.name(),
                        content.len()
                    ),
                ));
            }
            Ty::Msg(child) => {
                if kind.items_field() == Some(field.number)
                    && matches!(kind, Kind::ScopeSpans | Kind::ScopeLogs)
                {
                    *items += 1;
                }
                walk(child, buf, field.content, field.end, depth + 1, items)?;
            }
            _ => {}
        }
    }
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
