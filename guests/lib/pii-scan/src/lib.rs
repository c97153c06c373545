//! Hand-written byte scanners for the built-in detectors (cards, phones, e-mails) of weft's PII
//! plugins, the span/log plugin (`guests/pii-mask`) and the HTTP filter (`guests/http-pii-mask`),
//! so that both find exactly the same things.
//!
//! They run on every string value of every batch, so they are written for the common case: a
//! string with no digit and no `@` is rejected after one pass over its bytes, a digit run shorter
//! than 11 digits (ids, status codes, versions) after one more, and nothing is allocated unless
//! something is found. Every position they report is next to an ASCII byte, so slicing the
//! string there is always on a `char` boundary.

/// What a built-in detector found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Luhn-valid payment card number.
    Card,
    /// A mainland-China mobile number.
    Phone,
    /// An e-mail address.
    Email,
}

/// One match of a built-in detector, as byte positions in the scanned string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The detector that matched.
    pub kind: Kind,
    /// Start of the match: the first digit of a number, the first byte of an address.
    pub start: usize,
    /// End (exclusive) of the match.
    pub end: usize,
    /// What to hide. For numbers, the indices (among the match's digits, separators not
    /// counted) of the digits to replace with the mask character. For e-mails, the byte range
    /// of the local part after its first character, to replace with the e-mail mask.
    pub mask_from: usize,
    /// End (exclusive) of what to hide, see `mask_from`.
    pub mask_to: usize,
}

/// The built-in detectors and their settings.
#[derive(Debug, Clone)]
pub struct Detectors {
    /// Detect payment cards.
    pub cards: bool,
    /// Detect mainland-China mobile numbers.
    pub phones: bool,
    /// Detect e-mail addresses.
    pub emails: bool,
    /// Leading card digits left visible.
    pub keep_first: usize,
    /// Trailing card digits left visible. `keep_first + keep_last` is at most
    /// [`MIN_CARD_DIGITS`]` - 1`, checked when the configuration is read.
    pub keep_last: usize,
}

/// The fewest digits a card number has.
pub const MIN_CARD_DIGITS: usize = 13;
/// The most digits a card number has.
const MAX_CARD_DIGITS: usize = 19;
/// The fewest digits either number detector looks at: a national mobile number.
const MIN_NUMBER_DIGITS: usize = 11;

/// Group layouts (digit counts between separators) accepted for an 11-digit mobile number:
/// `13812345678` and `138 1234 5678` / `138-1234-5678`.
const NATIONAL_SHAPES: &[&[usize]] = &[&[11], &[3, 4, 4]];
/// Group layouts accepted for a mobile number with the country code 86 in front (a `+` before
/// it is not a digit and is left as it is): `8613812345678`, `86 13812345678`,
/// `86 138 1234 5678`.
const PREFIXED_SHAPES: &[&[usize]] = &[&[13], &[2, 11], &[2, 3, 4, 4]];

impl Detectors {
    /// Appends the matches in `b` to `hits`, ordered by position and never overlapping.
    #[inline]
    pub fn find(&self, b: &[u8], hits: &mut Vec<Hit>) {
        // One cheap pass first: most strings have no `@` and fewer digits than any number the
        // detectors look for (routes, IPs, status codes, versions), and then nothing can match.
        let (digits, has_at) = census(b);
        if self.emails && has_at {
            find_emails(b, hits);
        }
        if (self.cards || self.phones) && digits >= MIN_NUMBER_DIGITS {
            let emails = hits.len();
            self.find_numbers(b, hits);
            // E-mails were appended first, numbers after them: merge the two sorted lists.
            if emails > 0 && hits.len() > emails {
                hits.sort_unstable_by_key(|h| h.start);
            }
        }
    }

    /// Appends the card and phone numbers in `b` that are not inside one of the e-mails already
    /// in `hits` (digits in an address belong to the address).
    fn find_numbers(&self, b: &[u8], hits: &mut Vec<Hit>) {
        let email_count = hits.len();
        let mut next_email = 0;
        let mut i = 0;
        while let Some(start) = find_byte_between(b, i, b'0' - 1, b'9' + 1) {
            while next_email < email_count && hits[next_email].end <= start {
                next_email += 1;
            }
            // A run stops where the next e-mail begins, so that the two never overlap.
            let limit = match hits.get(next_email).filter(|_| next_email < email_count) {
                Some(email) if email.start <= start => {
                    i = email.end;
                    continue;
                }
                Some(email) => email.start,
                None => b.len(),
            };
            if start > 0 && b[start - 1].is_ascii_alphabetic() {
                // Digits inside a word (hex ids, `v2`, `x86_64`) never match: skip the word
                // instead of looking at each of its digit runs. A grouped run that starts in a
                // word (`ab12 4111 1111 1111 1111`) then starts at its next group.
                i = b[start..limit]
                    .iter()
                    .position(|c| !c.is_ascii_alphanumeric())
                    .map_or(limit, |p| start + p);
                continue;
            }
            let (end, digits) = run_extent(&b[..limit], start);
            i = end;
            // Most runs are short (ids, status codes, dates, versions): neither detector wants
            // them, and they are skipped without looking at their layout.
            if digits >= MIN_NUMBER_DIGITS {
                let run = Run::scan(b, start, limit);
                self.numbers_in_run(b, &run, hits);
            }
        }
    }

    /// Checks a digit run: first as one number, and if it is not one, each of its groups on
    /// its own (so `4111111111111111 12/25` still finds the card: the expiry date is a
    /// separate group that made the run as a whole too long).
    fn numbers_in_run(&self, b: &[u8], run: &Run, hits: &mut Vec<Hit>) {
        if !run.glued_before && !run.glued_after {
            let shape = if run.groups <= run.shape.len() {
                &run.shape[..run.groups]
            } else {
                &[]
            };
            if let Some(hit) = self.classify(b, run.start, run.end, run.digits, shape) {
                hits.push(hit);
                return;
            }
        }
        if run.groups == 1 {
            return;
        }
        let mut j = run.start;
        let mut first_group = true;
        while j < run.end {
            let group_start = j;
            while j < run.end && b[j].is_ascii_digit() {
                j += 1;
            }
            let len = j - group_start;
            let glued = (first_group && run.glued_before) || (j == run.end && run.glued_after);
            if !glued && let Some(hit) = self.classify(b, group_start, j, len, &[len]) {
                hits.push(hit);
            }
            first_group = false;
            // Step over the single separator between two groups.
            j += 1;
        }
    }

    /// Decides whether the digits of `b[start..end]` (`digits` of them, laid out in groups of
    /// `shape` digits; empty when there are too many groups to be a phone) are a phone number
    /// or a card number.
    fn classify(
        &self,
        b: &[u8],
        start: usize,
        end: usize,
        digits: usize,
        shape: &[usize],
    ) -> Option<Hit> {
        if !(MIN_NUMBER_DIGITS..=MAX_CARD_DIGITS).contains(&digits) {
            return None;
        }
        let mut buf = [0u8; MAX_CARD_DIGITS];
        let mut n = 0;
        for (slot, &c) in buf
            .iter_mut()
            .zip(b[start..end].iter().filter(|c| c.is_ascii_digit()))
        {
            *slot = c;
            n += 1;
        }
        let d = &buf[..n];
        let hit = |kind, mask_from, mask_to| Hit {
            kind,
            start,
            end,
            mask_from,
            mask_to,
        };
        if self.phones
            && let Some((from, to)) = phone_mask(d, shape)
        {
            return Some(hit(Kind::Phone, from, to));
        }
        if self.cards && is_card(d) {
            return Some(hit(Kind::Card, self.keep_first, n - self.keep_last));
        }
        None
    }
}

/// Where the run of digits starting at `b[start]` ends, and how many digits it has (see
/// [`Run`]; this is its cheap first look).
#[inline]
fn run_extent(b: &[u8], start: usize) -> (usize, usize) {
    let mut j = start;
    let mut digits = 0;
    loop {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
            digits += 1;
        }
        if j + 1 < b.len() && matches!(b[j], b' ' | b'-') && b[j + 1].is_ascii_digit() {
            j += 1;
        } else {
            return (j, digits);
        }
    }
}

/// How many ASCII digits `b` has, and whether it has an `@`, 8 bytes per step (see
/// [`find_byte_between`]; the loop has no branch but its own).
#[inline]
fn census(b: &[u8]) -> (usize, bool) {
    const DIGIT_BELOW: u64 = ONES * (127 + b'9' as u64 + 1);
    const DIGIT_ABOVE: u64 = ONES * (127 - (b'0' as u64 - 1));
    const AT: u64 = ONES * b'@' as u64;
    let (words, tail) = b.as_chunks::<8>();
    let mut digits: u64 = 0;
    let mut at: u64 = 0;
    for word in words {
        let x = u64::from_le_bytes(*word);
        let low = x & LOW_BITS;
        let is_digit = DIGIT_BELOW.wrapping_sub(low) & (low + DIGIT_ABOVE) & !x & HIGH_BITS;
        // The high bit of each digit's byte, moved to bit 0 of the byte; multiplying by ONES
        // sums the bytes into the top byte (at most 8, so no carry spoils it).
        digits += (is_digit >> 7).wrapping_mul(ONES) >> 56;
        // A zero byte in `x ^ AT` is an `@`. This test may flag bytes above a real zero byte
        // too, but never flags a word without one: exact for "is there any".
        let y = x ^ AT;
        at |= y.wrapping_sub(ONES) & !y & HIGH_BITS;
    }
    let mut digits = digits as usize;
    let mut has_at = at != 0;
    if let Some(last) = b.last_chunk::<8>()
        && !tail.is_empty()
    {
        // The tail as one more word: the last 8 bytes, shifted so that the bytes counted
        // already become zero bytes (neither digits nor `@`). No loop over the tail, whose
        // length differs from string to string.
        let x = u64::from_le_bytes(*last) >> ((8 - tail.len()) * 8);
        let low = x & LOW_BITS;
        let is_digit = DIGIT_BELOW.wrapping_sub(low) & (low + DIGIT_ABOVE) & !x & HIGH_BITS;
        digits += ((is_digit >> 7).wrapping_mul(ONES) >> 56) as usize;
        let y = x ^ AT;
        has_at |= y.wrapping_sub(ONES) & !y & HIGH_BITS != 0;
    } else {
        for &c in tail {
            digits += usize::from(c.is_ascii_digit());
            has_at |= c == b'@';
        }
    }
    (digits, has_at)
}

/// Each byte of a word set to 1.
const ONES: u64 = u64::from_le_bytes([1; 8]);
/// The high bit of each byte of a word.
const HIGH_BITS: u64 = ONES * 0x80;
/// The low seven bits of each byte of a word.
const LOW_BITS: u64 = ONES * 0x7f;

/// The position of the first byte of `b[from..]` strictly between `above` and `below`
/// (`above < below <= 128`, so only ASCII bytes qualify).
///
/// Looks at 8 bytes per step ("has a byte between", Bit Twiddling Hacks): every string of every
/// batch goes through here, and plain byte loops are not vectorised (wasm32 has no SIMD by
/// default anyway). Masking the high bits first keeps the byte lanes from borrowing or carrying
/// into each other, so the result is exact, not a hint to re-check.
#[inline]
fn find_byte_between(b: &[u8], from: usize, above: u8, below: u8) -> Option<usize> {
    let rest = b.get(from..)?;
    let (words, tail) = rest.as_chunks::<8>();
    let lt_below = ONES * (127 + u64::from(below));
    let gt_above = ONES * (127 - u64::from(above));
    for (k, word) in words.iter().enumerate() {
        let x = u64::from_le_bytes(*word);
        let low = x & LOW_BITS;
        let hits = lt_below.wrapping_sub(low) & !x & (low + gt_above) & HIGH_BITS;
        if hits != 0 {
            return Some(from + k * 8 + (hits.trailing_zeros() / 8) as usize);
        }
    }
    tail.iter()
        .position(|&c| c > above && c < below)
        .map(|p| from + words.len() * 8 + p)
}

/// A maximal run of digits in which single spaces or dashes may separate groups of digits.
#[derive(Debug)]
struct Run {
    /// Byte position of the first digit.
    start: usize,
    /// Byte position after the last digit.
    end: usize,
    /// How many digits the run has.
    digits: usize,
    /// How many groups of digits (separated by a space or a dash) the run has.
    groups: usize,
    /// The digit counts of the first groups (enough for every phone layout).
    shape: [usize; 4],
    /// The run continues a word or a decimal number before it (`abc123`, `1.23`).
    glued_before: bool,
    /// A word or a decimal fraction follows the run directly (`123abc`, `123.4`).
    glued_after: bool,
}

impl Run {
    /// Scans the run that starts with the digit at `b[start]` and ends at or before `limit`.
    fn scan(b: &[u8], start: usize, limit: usize) -> Run {
        let mut j = start;
        let mut digits = 0;
        let mut groups = 0;
        let mut shape = [0usize; 4];
        loop {
            let group_start = j;
            while j < limit && b[j].is_ascii_digit() {
                j += 1;
            }
            if let Some(slot) = shape.get_mut(groups) {
                *slot = j - group_start;
            }
            digits += j - group_start;
            groups += 1;
            // A separator only joins two groups when a digit follows it directly.
            if j + 1 < limit && matches!(b[j], b' ' | b'-') && b[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        Run {
            start,
            end: j,
            digits,
            groups,
            shape,
            glued_before: glued_before(b, start),
            glued_after: glued_after(b, j),
        }
    }
}

/// Whether the digit at `b[i]` continues what precedes it: a letter or digit, or a decimal
/// point after a digit. Such digits belong to a longer token (an id, a hash, a decimal number).
fn glued_before(b: &[u8], i: usize) -> bool {
    match i.checked_sub(1).map(|p| b[p]) {
        Some(c) if c.is_ascii_alphanumeric() => true,
        Some(b'.') => i >= 2 && b[i - 2].is_ascii_digit(),
        _ => false,
    }
}

/// Whether what starts at `b[j]`, right after a digit, continues that digit's token.
fn glued_after(b: &[u8], j: usize) -> bool {
    match b.get(j) {
        Some(c) if c.is_ascii_alphanumeric() => true,
        Some(b'.') => b.get(j + 1).is_some_and(u8::is_ascii_digit),
        _ => false,
    }
}

/// For a mainland-China mobile number (`1[3-9]` and 9 more digits, optionally after the country
/// code 86) laid out in groups of `shape` digits, the digit indices to mask: the 4 digits after
/// the 3-digit network prefix, as in `138****5678`.
fn phone_mask(d: &[u8], shape: &[usize]) -> Option<(usize, usize)> {
    match d {
        [b'1', b'3'..=b'9', ..] if d.len() == 11 && NATIONAL_SHAPES.contains(&shape) => {
            Some((3, 7))
        }
        [b'8', b'6', b'1', b'3'..=b'9', ..]
            if d.len() == 13 && PREFIXED_SHAPES.contains(&shape) =>
        {
            Some((5, 9))
        }
        _ => None,
    }
}

/// Whether the ASCII digits `d` are a payment card number: 13 to 19 digits, a first digit of
/// 2 to 6 (the major-industry identifiers of card networks: Mastercard 2 and 5, Amex, JCB and
/// Diners 3, Visa 4, Discover and UnionPay 6), and a valid Luhn check digit.
///
/// The first-digit rule keeps out numbers that are common in telemetry and Luhn-valid one time
/// in ten: Unix times in nanoseconds (19 digits) and milliseconds (13 digits) start with 1.
fn is_card(d: &[u8]) -> bool {
    (MIN_CARD_DIGITS..=MAX_CARD_DIGITS).contains(&d.len())
        && matches!(d.first(), Some(b'2'..=b'6'))
        && luhn_valid(d)
}

/// The Luhn (mod 10) check: from the right, every second digit is doubled (minus 9 when over 9);
/// the sum of all digits must be a multiple of 10.
fn luhn_valid(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &c)| {
            let v = u32::from(c - b'0');
            if i % 2 == 1 {
                if v > 4 { v * 2 - 9 } else { v * 2 }
            } else {
                v
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether `c` may be in the local part of an address (the common unquoted form; `*` is not
/// allowed, so a masked address `u***@example.com` is not found again).
fn is_local_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// Whether `c` may be in a domain name.
fn is_domain_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
}

/// Whether `d` looks like an internet domain: at least two non-empty dot-separated labels, the
/// last (the top-level domain) made of at least two letters. `localhost` and IP addresses are
/// not e-mail domains here.
fn is_domain(d: &[u8]) -> bool {
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in d.split(|&c| c == b'.') {
        if label.is_empty() {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2 && last.len() >= 2 && last.iter().all(u8::is_ascii_alphabetic)
}

/// Appends every e-mail address in `b`, in order.
fn find_emails(b: &[u8], hits: &mut Vec<Hit>) {
    // Bytes before `floor` belong to the previous address.
    let mut floor = 0;
    let mut i = 0;
    while let Some(at) = find_byte_between(b, i, b'@' - 1, b'@' + 1) {
        let mut local = at;
        while local > floor && is_local_byte(b[local - 1]) {
            local -= 1;
        }
        // Sentence punctuation before an address is not part of it.
        while local < at && b[local] == b'.' {
            local += 1;
        }
        let mut end = at + 1;
        while end < b.len() && is_domain_byte(b[end]) {
            end += 1;
        }
        // Nor is the full stop (or a dash) after it.
        while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if local < at && is_domain(&b[at + 1..end]) {
            hits.push(Hit {
                kind: Kind::Email,
                start: local,
                end,
                mask_from: local + 1,
                mask_to: at,
            });
            floor = end;
            i = end;
        } else {
            i = at + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards_and_rejects_a_changed_digit() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"5555555555554444"));
        assert!(luhn_valid(b"378282246310005"));
        assert!(!luhn_valid(b"4111111111111112"));
    }

    #[test]
    fn find_byte_between_matches_a_plain_search() {
        let text = "abc:;?xyz\u{e9}\u{ff}0123456789@ ~\u{7f}/ABCDEFGH09";
        let b = text.as_bytes();
        for (above, below) in [
            (b'0' - 1, b'9' + 1),
            (b'0' - 1, b'@' + 1),
            (0, 128),
            (b'a', b'z'),
        ] {
            for from in 0..=b.len() + 1 {
                let plain = b
                    .get(from..)
                    .and_then(|r| r.iter().position(|&c| c > above && c < below))
                    .map(|p| from + p);
                assert_eq!(
                    find_byte_between(b, from, above, below),
                    plain,
                    "{from} {above} {below}"
                );
            }
        }
    }

    #[test]
    fn census_counts_digits_and_finds_at_signs() {
        for text in [
            "",
            "@",
            "0123456789",
            "abc@def/9:;?é\u{ff}0@",
            "a long string without either, and then 12 digits: 123456789012 and no at",
            "\u{80}\u{7f}\u{3f}\u{40}\u{41}\u{2f}\u{30}\u{39}\u{3a}",
        ] {
            let b = text.as_bytes();
            for start in 0..b.len() {
                let plain = (
                    b[start..].iter().filter(|c| c.is_ascii_digit()).count(),
                    b[start..].contains(&b'@'),
                );
                assert_eq!(census(&b[start..]), plain, "{text:?}[{start}..]");
            }
        }
    }

    #[test]
    fn domains_need_a_dot_and_an_alphabetic_tld() {
        assert!(is_domain(b"example.com"));
        assert!(is_domain(b"mail.example.co.uk"));
        assert!(!is_domain(b"localhost"));
        assert!(!is_domain(b"10.0.0.1"));
        assert!(!is_domain(b"example..com"));
        assert!(!is_domain(b".example.com"));
    }
}
