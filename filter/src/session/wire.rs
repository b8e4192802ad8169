//! The compact binary encoding shared by sealed bindings and the revocation table.
//!
//! LEB128 varints and length-prefixed UTF-8. Decoding is strict (no overlong or overflowing
//! varint, no trailing byte), so every value has exactly one encoding and a reader never
//! allocates more than the input it was given.

/// Appends `value` as an unsigned LEB128 varint (1 byte below 128, 5 bytes for a unix time).
pub(super) fn put_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a length-prefixed UTF-8 string.
pub(super) fn put_str(out: &mut Vec<u8>, text: &str) {
    put_u64(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// A cursor over encoded bytes; every read returns `None` on malformed or short input.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            // The 10th byte may carry only the top bit of a u64.
            if i == 9 && byte > 1 {
                return None;
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                // A final zero byte after the first is an overlong encoding of a smaller value.
                if i > 0 && byte == 0 {
                    return None;
                }
                return Some(value);
            }
        }
        None
    }

    pub(super) fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.u64()?).ok()?;
        if len > self.rest.len() {
            return None;
        }
        let (text, rest) = self.rest.split_at(len);
        self.rest = rest;
        std::str::from_utf8(text).ok()
    }

    /// Succeeds only when every byte was read.
    pub(super) fn finish(self) -> Option<()> {
        self.rest.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_u64(&mut out, value);
        out
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for value in [0, 1, 127, 128, 16_383, 16_384, 1_767_225_600, u64::from(u32::MAX), u64::MAX] {
            let bytes = varint(value);
            let mut reader = Reader::new(&bytes);
            assert_eq!(reader.u64(), Some(value));
            assert!(reader.finish().is_some());
        }
        assert_eq!(varint(1_767_225_600).len(), 5);
    }

    #[test]
    fn overlong_and_overflowing_varints_are_refused() {
        assert_eq!(Reader::new(&[0x80, 0x00]).u64(), None);
        assert_eq!(Reader::new(&[0xff; 9].iter().copied().chain([0x02]).collect::<Vec<_>>()).u64(), None);
        assert_eq!(Reader::new(&[0xff; 11]).u64(), None);
        assert_eq!(Reader::new(&[0x80]).u64(), None);
    }

    #[test]
    fn string_longer_than_input_is_refused() {
        let mut bytes = Vec::new();
        put_str(&mut bytes, "alice");
        bytes.pop();
        assert_eq!(Reader::new(&bytes).str(), None);
    }

    #[test]
    fn trailing_bytes_fail_finish() {
        let mut reader = Reader::new(&[1, 2]);
        assert_eq!(reader.u64(), Some(1));
        assert!(reader.finish().is_none());
    }
}
