//! The protobuf wire format, as much of it as OTLP needs: fields read in place, and an
//! [`Encoder`] that writes canonical encodings.

use std::fmt;

/// Wire type of a varint field.
pub const VARINT: u8 = 0;
/// Wire type of an 8-byte little-endian field (`fixed64`, `double`).
pub const I64: u8 = 1;
/// Wire type of a length-delimited field (strings, bytes, messages).
pub const LEN: u8 = 2;
/// Wire type of a 4-byte little-endian field (`fixed32`).
pub const I32: u8 = 5;

/// The value of one field, borrowed from the buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wire<'a> {
    /// A varint (`uint32`, `int64`, `bool`, enums).
    Varint(u64),
    /// 8 bytes (`fixed64`, `double`).
    I64(u64),
    /// Length-delimited content (strings, bytes, messages).
    Len(&'a [u8]),
    /// 4 bytes (`fixed32`).
    I32(u32),
}

impl Wire<'_> {
    /// The wire type number.
    pub fn wire_type(&self) -> u8 {
        match self {
            Wire::Varint(_) => VARINT,
            Wire::I64(_) => I64,
            Wire::Len(_) => LEN,
            Wire::I32(_) => I32,
        }
    }
}

/// One field of a message. Offsets are into the buffer the [`Fields`] iterator reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field<'a> {
    /// The field number.
    pub number: u32,
    /// Its value.
    pub value: Wire<'a>,
    /// Where the field (its key) starts.
    pub start: usize,
    /// Where a length-delimited field's content starts (`end` for other wire types).
    pub content: usize,
    /// One past the field's last byte.
    pub end: usize,
}

/// Malformed protobuf, or OTLP that breaks a rule of the specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// Byte offset in the request where the problem is.
    pub offset: usize,
    /// What is wrong, naming the OTLP field where known (`span.trace_id must be 16 bytes, got 3`).
    pub message: String,
}

impl WireError {
    pub(crate) fn new(offset: usize, message: impl Into<String>) -> Self {
        WireError {
            offset,
            message: message.into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for WireError {}

/// `b` as UTF-8, or `None`. ASCII, what telemetry strings mostly are, is checked 8 bytes at a
/// time; `std::str::from_utf8` alone goes byte by byte through strings shorter than 16 bytes.
#[inline]
pub fn utf8(b: &[u8]) -> Option<&str> {
    let mut chunks = b.chunks_exact(8);
    let mut high = 0u64;
    for c in &mut chunks {
        high |= u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
    }
    let tail = chunks.remainder().iter().fold(0u8, |acc, &x| acc | x);
    if high & 0x8080_8080_8080_8080 == 0 && tail < 0x80 {
        // SAFETY: every byte is ASCII, and ASCII is UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b).ok()
}

/// Reads a varint at `*pos`, advancing it. `None` when truncated or longer than 10 bytes.
#[inline]
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    // Keys, lengths and small numbers are one byte: that path is a load and a compare.
    let b = *buf.get(*pos)?;
    if b < 0x80 {
        *pos += 1;
        return Some(u64::from(b));
    }
    read_varint_slow(buf, pos)
}

#[cold]
#[inline(never)]
fn read_varint_slow(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut at = *pos;
    for i in 0..10 {
        let b = *buf.get(at)?;
        at += 1;
        if i == 9 && b > 1 {
            return None;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            *pos = at;
            return Some(value);
        }
    }
    None
}

/// Reads the field at `*pos` of `buf` (the end of its message), advancing `*pos` past it;
/// `None` when it is malformed ([`Fields`] then says how). The one decoding of a field that
/// the validator, the views and the edit log all go through.
#[inline(always)]
fn read_field<'a>(buf: &'a [u8], pos: &mut usize) -> Option<Field<'a>> {
    let start = *pos;
    let mut p = start;
    let key = read_varint(buf, &mut p)?;
    let number = key >> 3;
    if number == 0 || number > MAX_FIELD_NUMBER {
        return None;
    }
    let (value, content, end) = match (key & 7) as u8 {
        VARINT => {
            let v = read_varint(buf, &mut p)?;
            (Wire::Varint(v), p, p)
        }
        I64 => {
            let b: [u8; 8] = buf.get(p..p.checked_add(8)?)?.try_into().ok()?;
            (Wire::I64(u64::from_le_bytes(b)), p + 8, p + 8)
        }
        I32 => {
            let b: [u8; 4] = buf.get(p..p.checked_add(4)?)?.try_into().ok()?;
            (Wire::I32(u32::from_le_bytes(b)), p + 4, p + 4)
        }
        LEN => {
            let len = usize::try_from(read_varint(buf, &mut p)?).ok()?;
            let end = p.checked_add(len).filter(|&e| e <= buf.len())?;
            (Wire::Len(&buf[p..end]), p, end)
        }
        _ => return None,
    };
    *pos = end;
    Some(Field {
        number: number as u32,
        value,
        start,
        content,
        end,
    })
}

/// The next field numbered `number` in `buf[*pos..end]`, advancing `*pos` past it; `None` at
/// the end or at a malformed field (like [`Fields`], which stops there).
#[inline]
pub(crate) fn find_next<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    end: usize,
    number: u32,
) -> Option<Field<'a>> {
    let buf = &buf[..end.min(buf.len())];
    while *pos < buf.len() {
        let f = read_field(buf, pos)?;
        if f.number == number {
            return Some(f);
        }
    }
    None
}

/// The last field numbered `number` among the fields of `buf[start..end]` (those before a
/// malformed field, like [`Fields`]).
#[inline]
pub(crate) fn find_last(buf: &[u8], start: usize, end: usize, number: u32) -> Option<Field<'_>> {
    let mut pos = start;
    let mut found = None;
    while let Some(f) = find_next(buf, &mut pos, end, number) {
        found = Some(f);
    }
    found
}

/// The largest field number protobuf allows.
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// The fields of the message in `buf[start..end]`, in order. Stops at the first malformed field
/// with an error.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Fields<'a> {
    /// The fields of `buf[start..end]`; offsets in the fields are into `buf`.
    pub fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        Fields {
            buf,
            pos: start,
            end: end.min(buf.len()),
        }
    }

    #[inline(always)]
    fn read(&mut self) -> Result<Field<'a>, WireError> {
        let start = self.pos;
        match read_field(&self.buf[..self.end], &mut self.pos) {
            Some(f) => Ok(f),
            None => Err(self.diagnose(start)),
        }
    }

    /// What is wrong with the field at `start` (which [`read_field`] refused).
    #[cold]
    #[inline(never)]
    fn diagnose(&mut self, start: usize) -> WireError {
        self.pos = start;
        match self.read_checked() {
            Err(e) => e,
            Ok(_) => malformed(start, "malformed field"),
        }
    }

    fn read_checked(&mut self) -> Result<Field<'a>, WireError> {
        let start = self.pos;
        let buf = &self.buf[..self.end];
        let bad = |m: &'static str| malformed(start, m);
        let key = read_varint(buf, &mut self.pos).ok_or_else(|| bad("truncated field key"))?;
        let number = key >> 3;
        if number == 0 || number > MAX_FIELD_NUMBER {
            return Err(bad("invalid field number"));
        }
        let number = number as u32;
        let value = match (key & 7) as u8 {
            VARINT => Wire::Varint(
                read_varint(buf, &mut self.pos).ok_or_else(|| bad("truncated varint"))?,
            ),
            I64 => {
                let b = buf
                    .get(self.pos..self.pos + 8)
                    .ok_or_else(|| bad("truncated fixed64"))?;
                self.pos += 8;
                Wire::I64(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            }
            I32 => {
                let b = buf
                    .get(self.pos..self.pos + 4)
                    .ok_or_else(|| bad("truncated fixed32"))?;
                self.pos += 4;
                Wire::I32(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
            }
            LEN => {
                let len = read_varint(buf, &mut self.pos).ok_or_else(|| bad("truncated length"))?;
                let content = self.pos;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| content.checked_add(l))
                    .filter(|&e| e <= buf.len())
                    .ok_or_else(|| {
                        bad("length-delimited field runs past the end of its message")
                    })?;
                self.pos = end;
                return Ok(Field {
                    number,
                    value: Wire::Len(&buf[content..end]),
                    start,
                    content,
                    end,
                });
            }
            3 | 4 => return Err(bad("protobuf groups are not supported")),
            _ => return Err(bad("invalid wire type")),
        };
        Ok(Field {
            number,
            value,
            start,
            content: self.pos,
            end: self.pos,
        })
    }
}

#[cold]
#[inline(never)]
fn malformed(offset: usize, message: &'static str) -> WireError {
    WireError::new(offset, message)
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let r = self.read();
        if r.is_err() {
            self.pos = self.end;
        }
        Some(r)
    }
}

/// Bytes a varint of `v` takes.
#[inline]
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Writes protobuf. Scalars equal to their default are the caller's to skip (the `*_field`
/// helpers write what they are given); [`Encoder::nested`] writes a sub-message in place and
/// fixes its length afterwards.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    /// What has been written.
    pub buf: Vec<u8>,
}

impl Encoder {
    /// An encoder with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(n),
        }
    }

    /// Appends a varint.
    #[inline]
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// Appends a field key.
    #[inline]
    pub fn key(&mut self, number: u32, wire_type: u8) {
        self.varint((u64::from(number) << 3) | u64::from(wire_type));
    }

    /// Appends a length-delimited field.
    pub fn bytes_field(&mut self, number: u32, bytes: &[u8]) {
        self.key(number, LEN);
        self.varint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    /// Appends a string field, unless it is empty (the proto3 default).
    pub fn str_field(&mut self, number: u32, s: &str) {
        if !s.is_empty() {
            self.bytes_field(number, s.as_bytes());
        }
    }

    /// Appends a varint field, unless it is 0.
    pub fn varint_field(&mut self, number: u32, v: u64) {
        if v != 0 {
            self.key(number, VARINT);
            self.varint(v);
        }
    }

    /// Appends a `fixed64` field, unless it is 0.
    pub fn fixed64_field(&mut self, number: u32, v: u64) {
        if v != 0 {
            self.key(number, I64);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Appends a `fixed32` field, unless it is 0.
    pub fn fixed32_field(&mut self, number: u32, v: u32) {
        if v != 0 {
            self.key(number, I32);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Appends bytes as they are (fields copied from another message).
    #[inline]
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends a length-delimited field whose content `f` writes. When `f` returns `false`
    /// the field is taken back and nothing is written; returns what `f` returned.
    pub fn nested(&mut self, number: u32, f: impl FnOnce(&mut Self) -> bool) -> bool {
        self.nested_like(number, 0, f)
    }

    /// [`Self::nested`] for content expected to be about `hint` bytes long (an edited
    /// message: its length before the edit). Room for the length is made before the content
    /// is written, so the content moves only when its length takes another number of bytes
    /// than `hint`'s (a request's resource and scope groups are hundreds of kilobytes).
    pub fn nested_like(
        &mut self,
        number: u32,
        hint: usize,
        f: impl FnOnce(&mut Self) -> bool,
    ) -> bool {
        let mark = self.buf.len();
        self.key(number, LEN);
        let len_at = self.buf.len();
        let room = varint_len(hint as u64);
        self.buf.resize(len_at + room, 0);
        if !f(self) {
            self.buf.truncate(mark);
            return false;
        }
        let content = len_at + room;
        let old_end = self.buf.len();
        let len = old_end - content;
        let n = varint_len(len as u64);
        if n > room {
            self.buf.resize(old_end + n - room, 0);
            self.buf.copy_within(content..old_end, len_at + n);
        } else if n < room {
            self.buf.copy_within(content..old_end, len_at + n);
            self.buf.truncate(old_end - (room - n));
        }
        let mut v = len as u64;
        for i in 0..n {
            let more = if i + 1 < n { 0x80 } else { 0 };
            self.buf[len_at + i] = (v as u8 & 0x7f) | more;
            v >>= 7;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_agrees_with_std_at_every_length_and_position() {
        for len in 0..40 {
            let ascii = vec![b'a'; len];
            assert_eq!(utf8(&ascii), std::str::from_utf8(&ascii).ok(), "{len}");
            for at in 0..len {
                // A lone continuation byte, a two-byte char cut short, and a whole one.
                for (bad, good) in [
                    (&[0x80u8][..], false),
                    (&[0xc3][..], false),
                    (&[0xc3, 0xa9][..], true),
                ] {
                    let mut b = ascii.clone();
                    b.splice(at..at, bad.iter().copied());
                    assert_eq!(utf8(&b), std::str::from_utf8(&b).ok(), "{len} {at} {bad:?}");
                    assert_eq!(utf8(&b).is_some(), good, "{len} {at} {bad:?}");
                }
            }
        }
    }

    #[test]
    fn varints_round_trip_and_overlong_ones_are_refused() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut e = Encoder::default();
            e.varint(v);
            assert_eq!(e.buf.len(), varint_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(read_varint(&e.buf, &mut pos), Some(v));
            assert_eq!(pos, e.buf.len());
        }
        let mut pos = 0;
        assert_eq!(read_varint(&[0xff; 11], &mut pos), None);
        let mut pos = 0;
        assert_eq!(read_varint(&[0x80], &mut pos), None, "truncated");
    }

    #[test]
    fn nested_fixes_lengths_of_any_size_and_can_take_a_field_back() {
        for len in [0usize, 1, 127, 128, 20_000] {
            let mut e = Encoder::default();
            assert!(e.nested(3, |e| {
                e.raw(&vec![7u8; len]);
                true
            }));
            let f: Vec<_> = Fields::new(&e.buf, 0, e.buf.len()).collect();
            assert_eq!(f.len(), 1);
            let f = f[0].as_ref().expect("well formed");
            assert_eq!((f.number, f.end), (3, e.buf.len()));
            assert_eq!(f.value, Wire::Len(&vec![7u8; len][..]));
        }
        let mut e = Encoder::default();
        e.varint_field(1, 5);
        assert!(!e.nested(2, |e| {
            e.raw(b"gone");
            false
        }));
        assert_eq!(e.buf, [8, 5]);
    }

    #[test]
    fn malformed_fields_are_errors_with_their_offset() {
        // A length running past the end, a group, field number 0.
        for (bytes, offset) in [
            (&[0x0a, 0x05, 1, 2][..], 0),
            (&[0x08, 0x01, 0x0b][..], 2),
            (&[0x00, 0x01][..], 0),
        ] {
            let errs: Vec<_> = Fields::new(bytes, 0, bytes.len())
                .filter_map(Result::err)
                .collect();
            assert_eq!(errs.len(), 1, "{bytes:?}");
            assert_eq!(errs[0].offset, offset, "{bytes:?}");
        }
    }
}
