//! Request headers as Envoy hands them over: one serialized block, read in place.
//!
//! The proxy-wasm SDK turns the block into a `String` pair per header; on the request path that
//! is two allocations and copies per header (the bearer token among them). The core reads
//! borrowed pairs instead, out of the one buffer the host wrote.

/// One header: lower-case name, value.
pub type Pair<'a> = (&'a str, &'a str);

/// Looks up a header (names are lower-case in Envoy's header map).
pub fn get<'h>(headers: &[Pair<'h>], name: &str) -> Option<&'h str> {
    headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// A serialized header map (proxy-wasm ABI: a `u32` count, a `u32` name and value length per
/// pair, then each name and value followed by a NUL byte), with the offsets of its pairs.
#[derive(Debug, Default)]
pub struct Block {
    bytes: Vec<u8>,
    /// Name start, name end, value start, value end; a name or value that is not UTF-8 has
    /// [`NOT_UTF8_SPAN`] for its start.
    spans: Vec<[usize; 4]>,
}

/// Marks a name or value that failed UTF-8 validation when the block was indexed.
const NOT_UTF8_SPAN: usize = usize::MAX;

/// Stands in for a value that is not UTF-8: it matches no name, token or version, so such a
/// header fails every check it takes part in.
const NOT_UTF8: &str = "\u{fffd}";

impl Block {
    /// Indexes a block. A malformed block reads as no headers at all, which every later check
    /// refuses (no token, no method).
    pub fn parse(bytes: Vec<u8>) -> Block {
        let spans = Self::index(&bytes).unwrap_or_default();
        Block { bytes, spans }
    }

    fn index(bytes: &[u8]) -> Option<Vec<[usize; 4]>> {
        let word = |at: usize| -> Option<usize> { Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize) };
        let count = word(0)?;
        let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
        if data > bytes.len() {
            return None;
        }
        // Names, values and their NUL ends are one run of bytes: when it is UTF-8 as a whole (the
        // usual case), so is each of them, and one pass over it replaces one per string.
        let all_utf8 = std::str::from_utf8(&bytes[data..]).is_ok();
        let mut spans = Vec::with_capacity(count);
        for i in 0..count {
            let (name_len, value_len) = (word(4 + 8 * i)?, word(8 + 8 * i)?);
            let name = [data, data.checked_add(name_len)?];
            let value = [name[1] + 1, (name[1] + 1).checked_add(value_len)?];
            if value[1] >= bytes.len() || bytes[name[1]] != 0 || bytes[value[1]] != 0 {
                return None;
            }
            // Validated once here: the pairs are read several times per request.
            let utf8 = |[from, to]: [usize; 2]| if all_utf8 || std::str::from_utf8(&bytes[from..to]).is_ok() { from } else { NOT_UTF8_SPAN };
            spans.push([utf8(name), name[1], utf8(value), value[1]]);
            data = value[1] + 1;
        }
        Some(spans)
    }

    /// The pairs, borrowed from the block.
    pub fn pairs(&self) -> Vec<Pair<'_>> {
        let text = |from: usize, to: usize| {
            if from == NOT_UTF8_SPAN {
                return NOT_UTF8;
            }
            // SAFETY: `index` checked that these bytes are UTF-8 (else `from` is NOT_UTF8_SPAN),
            // and the block's bytes never change after it.
            unsafe { std::str::from_utf8_unchecked(&self.bytes[from..to]) }
        };
        self.spans.iter().map(|s| (text(s[0], s[1]), text(s[2], s[3]))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes pairs as Envoy does.
    fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend((k.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend(*k);
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_pairs_in_order_including_empty_values() {
        let block = Block::parse(serialize(&[(b":path", b"/mcp/files"), (b"x-empty", b""), (b"authorization", b"Bearer t")]));
        let pairs = block.pairs();
        assert_eq!(pairs, vec![(":path", "/mcp/files"), ("x-empty", ""), ("authorization", "Bearer t")]);
        assert_eq!(get(&pairs, "authorization"), Some("Bearer t"));
        assert_eq!(get(&pairs, "Authorization"), None);
    }

    #[test]
    fn a_value_that_is_not_utf8_matches_nothing() {
        let block = Block::parse(serialize(&[(b"mcp-method", b"tools/\xffcall"), (b"x-\xc3", b"v"), (b"ok", b"\xc3\xa9")]));
        assert_eq!(block.pairs(), vec![("mcp-method", NOT_UTF8), (NOT_UTF8, "v"), ("ok", "é")]);
    }

    #[test]
    fn malformed_blocks_read_as_no_headers() {
        let good = serialize(&[(b"a", b"b"), (b"c", b"d")]);
        for bad in [vec![], vec![9, 0, 0, 0], good[..good.len() - 1].to_vec(), {
            let mut b = good.clone();
            b[4] = 200; // a name running past the end
            b
        }, {
            let mut b = good.clone();
            let at = b.len() - 2;
            b[at + 1] = b'x'; // a missing terminator
            b
        }] {
            assert!(Block::parse(bad).pairs().is_empty());
        }
        assert_eq!(Block::parse(good).pairs().len(), 2);
        assert!(Block::parse(serialize(&[])).pairs().is_empty());
    }
}
