//! Proxy-Wasm's serialized header maps: `u32 n`, then `n × (u32 key_len, u32 value_len)`, then
//! `key \0 value \0` for each pair, all little-endian.

use crate::buf::Buf;

/// Appends `pairs` to `out` in the header-map format.
pub(crate) fn serialize<'a, I>(out: &mut Buf, pairs: I)
where
    I: ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    out.push_le(pairs.len() as u64, 4);
    for (k, v) in pairs.clone() {
        out.push_le(k.len() as u64, 4);
        out.push_le(v.len() as u64, 4);
    }
    for (k, v) in pairs {
        out.push(k);
        out.push_byte(0);
        out.push(v);
        out.push_byte(0);
    }
}

/// The pairs of a serialized header map: see [`parse`].
pub(crate) struct Pairs<'a> {
    /// The `(key_len, value_len)` table not read yet.
    sizes: &'a [u8],
    /// The strings not read yet.
    data: &'a [u8],
    /// Number of pairs the map declares.
    declared: usize,
}

/// Reads a serialized header map. `None` if it declares no pair or its size table does not fit;
/// the pairs stop at the first one whose strings run past the end.
pub(crate) fn parse(src: &[u8]) -> Option<Pairs<'_>> {
    let n = u32::from_le_bytes(src.get(..4)?.try_into().ok()?) as usize;
    let table_end = n.checked_mul(8)?.checked_add(4)?;
    if n == 0 || table_end > src.len() {
        return None;
    }
    Some(Pairs {
        sizes: src.get(4..table_end)?,
        data: src.get(table_end..)?,
        declared: n,
    })
}

impl Pairs<'_> {
    /// Number of pairs the map declares (an upper bound of what the iterator yields).
    pub(crate) fn declared(&self) -> usize {
        self.declared
    }
}

fn le32(b: &[u8]) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize)
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let kl = le32(self.sizes)?;
        let vl = le32(self.sizes.get(4..)?)?;
        self.sizes = self.sizes.get(8..)?;
        let total = kl.checked_add(vl)?.checked_add(2)?;
        if total > self.data.len() {
            self.sizes = &[];
            return None;
        }
        let key = self.data.get(..kl)?;
        let value = self.data.get(kl + 1..kl + 1 + vl)?;
        self.data = self.data.get(total..)?;
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::{parse, serialize};
    use crate::buf::Buf;
    use std::vec::Vec;

    fn pairs(src: &[u8]) -> Vec<(&[u8], &[u8])> {
        parse(src).map(|p| p.collect()).unwrap_or_default()
    }

    #[test]
    fn a_serialized_map_reads_back() {
        let input: [(&[u8], &[u8]); 3] = [(b":status", b"200"), (b"x-empty", b""), (b"", b"v")];
        let mut b = Buf::new();
        serialize(&mut b, input.iter().copied());
        let bytes = b.as_slice();
        assert_eq!(&bytes[..4], [3, 0, 0, 0]);
        assert_eq!(&bytes[4..12], [7, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&bytes[28..], b":status\x00200\x00x-empty\x00\x00\x00v\x00");
        assert_eq!(parse(bytes).map(|p| p.declared()), Some(3));
        assert_eq!(pairs(bytes), input);
    }

    #[test]
    fn an_empty_map_is_four_zero_bytes_and_reads_as_none() {
        let mut b = Buf::new();
        serialize(&mut b, core::iter::empty());
        assert_eq!(b.as_slice(), [0, 0, 0, 0]);
        assert!(parse(b.as_slice()).is_none());
        assert!(parse(&[1, 0]).is_none());
    }

    #[test]
    fn a_truncated_map_yields_the_pairs_that_fit() {
        let mut b = Buf::new();
        serialize(&mut b, [(&b"a"[..], &b"1"[..]), (b"bb", b"22")].into_iter());
        let bytes = b.as_slice();
        // The size table must fit, the strings may not.
        assert!(parse(&bytes[..19]).is_none());
        assert_eq!(pairs(&bytes[..bytes.len() - 1]), [(&b"a"[..], &b"1"[..])]);
        assert_eq!(pairs(&bytes[..21]), []);
        // A declared count far larger than the bytes is refused, not trusted.
        assert!(parse(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_none());
    }
}
