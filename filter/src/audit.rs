//! One redacted lineage record per MCP request.
//!
//! Redaction is structural: the record has no field that could hold a token, a tool argument,
//! a result or a raw session id, so the writer cannot log them.

use std::borrow::Cow;
use std::ops::Deref;
use std::rc::Rc;

use crate::text::push_decimal;

/// A value the record shares with what it came from (the verified caller, the mint cache's
/// token): taking it never copies. `Rc`'s own empty default allocates, and every request starts
/// from a default record, so the empty value here is one per thread. Conversions from text are
/// for tests only, so the request path cannot copy into one by accident.
#[derive(Debug, PartialEq, Eq)]
pub struct Shared<T: ?Sized>(Rc<T>);

impl<T: ?Sized> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

thread_local! {
    static NO_TEXT: Rc<str> = Rc::from("");
    static NO_ACTORS: Rc<[String]> = Rc::from([]);
}

impl Default for Shared<str> {
    fn default() -> Self {
        Shared(NO_TEXT.with(Rc::clone))
    }
}

impl Default for Shared<[String]> {
    fn default() -> Self {
        Shared(NO_ACTORS.with(Rc::clone))
    }
}

impl<T: ?Sized> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized> From<Rc<T>> for Shared<T> {
    fn from(rc: Rc<T>) -> Self {
        Shared(rc)
    }
}

#[cfg(test)]
impl From<&str> for Shared<str> {
    fn from(text: &str) -> Self {
        Shared(text.into())
    }
}

#[cfg(test)]
impl From<String> for Shared<str> {
    fn from(text: String) -> Self {
        Shared(text.into())
    }
}

#[cfg(test)]
impl<const N: usize> From<[String; N]> for Shared<[String]> {
    fn from(actors: [String; N]) -> Self {
        Shared(Rc::from(actors))
    }
}

#[cfg(test)]
impl<T: ?Sized + serde::Serialize> serde::Serialize for Shared<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// The decision facts of one request, written as `mcp_audit: {json}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Record {
    pub ts: u64,
    pub request_id: String,
    pub era: &'static str,
    pub task: String,
    /// A short keyed hash of the legacy session handle; empty for modern requests.
    pub session: String,
    pub sub: Shared<str>,
    pub backend: String,
    pub method: Cow<'static, str>,
    pub name: String,
    pub decision: &'static str,
    pub reason: &'static str,
    pub status: u32,
    /// `jti` of the token minted for the backend (this and `aud`, `scope`, `act` are shared with
    /// the mint cache's entry).
    pub jti: Shared<str>,
    /// `jti` of the token the caller presented, when it had one (joins hops into a chain).
    pub parent_jti: Shared<str>,
    pub aud: Shared<str>,
    pub scope: Shared<str>,
    /// The actor chain of the minted token, outermost first.
    pub act: Shared<[String]>,
    pub depth: u32,
    /// An MCP request (its path is under the route prefix): it gets a line, whatever happens.
    #[cfg_attr(test, serde(skip))]
    pub audited: bool,
}

pub const ALLOW: &str = "allow";
pub const DENY: &str = "deny";

/// The reason of a request that ended (the client went away) before the gateway decided:
/// nothing of it was forwarded.
pub const INCOMPLETE: &str = "incomplete";

/// What starts an audit line, whichever sink writes it.
pub const PREFIX: &str = "mcp_audit: ";

impl Record {
    /// Closes the record as the request ends: one never decided is a denial.
    pub fn finish(&mut self) {
        if self.decision.is_empty() {
            self.decision = DENY;
            self.reason = INCOMPLETE;
        }
    }

    /// The record as JSON: the filter state `wasm.mcp_audit`, and the log line after [`PREFIX`].
    /// Written by hand, once per request: field names are constants, and most values need no
    /// escaping, which one scan decides (the tests hold it equal to serde_json's output).
    pub fn json(&self) -> String {
        let mut out = String::with_capacity(512);
        out.push_str("{\"ts\":");
        push_decimal(&mut out, self.ts);
        let strings: [(&str, &str); 10] = [
            ("request_id", &self.request_id),
            ("era", self.era),
            ("task", &self.task),
            ("session", &self.session),
            ("sub", &self.sub),
            ("backend", &self.backend),
            ("method", &self.method),
            ("name", &self.name),
            ("decision", self.decision),
            ("reason", self.reason),
        ];
        for (key, value) in strings {
            push_member(&mut out, key, value);
        }
        out.push_str(",\"status\":");
        push_decimal(&mut out, self.status.into());
        for (key, value) in [("jti", &*self.jti), ("parent_jti", &*self.parent_jti), ("aud", &*self.aud), ("scope", &*self.scope)] {
            push_member(&mut out, key, value);
        }
        out.push_str(",\"act\":[");
        for (i, actor) in self.act.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, actor);
        }
        out.push_str("],\"depth\":");
        push_decimal(&mut out, self.depth.into());
        out.push('}');
        out
    }
}

/// `,"key":"value"`; keys are the record's own names, which need no escaping.
fn push_member(out: &mut String, key: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    push_json_str(out, value);
}

/// A JSON string, escaped as serde_json escapes (quote, backslash, control characters).
fn push_json_str(out: &mut String, value: &str) {
    if !needs_escape(value.as_bytes()) {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(value).unwrap_or_default());
    }
}

/// Whether any byte is a control character, a quote or a backslash: eight bytes at a time, as
/// the audit values are mostly ids and names tens of bytes long.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero exactly when some byte of `x` is below `n` (n <= 0x80): the has-less-than test,
    // whose borrows can mark bytes above the first hit, never a word with none.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut words = bytes.chunks_exact(8);
    let hit = words.by_ref().any(|w| {
        let x = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        below(x, 0x20) | below(x ^ (ONES * u64::from(b'"')), 1) | below(x ^ (ONES * u64::from(b'\\')), 1) != 0
    });
    hit || words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handwritten_json_is_serde_json_output() {
        let plain = Record { ts: 1, request_id: "r".into(), era: "modern", sub: "alice".into(), decision: ALLOW, status: 200, act: ["a".to_string(), "b".to_string()].into(), depth: 2, ..Default::default() };
        let tricky = Record {
            sub: "al\"ice\\ \u{1} \n é 😀 </script>".into(),
            name: "tab\there".into(),
            act: ["x\"y".to_string()].into(),
            ..plain.clone()
        };
        for r in [Record::default(), plain, tricky] {
            assert_eq!(r.json(), serde_json::to_string(&r).unwrap());
        }
    }

    #[test]
    fn escapes_are_found_at_every_position_of_a_word() {
        for len in 0..20 {
            let plain = "a".repeat(len);
            assert!(!needs_escape(plain.as_bytes()), "{len}");
            for at in 0..len {
                for bad in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[at] = bad;
                    assert!(needs_escape(&bytes), "{len} {at} {bad:#x}");
                }
                // Bytes next to the forbidden ones, and high bytes of UTF-8, need no escape.
                for fine in [0x20, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff] {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[at] = fine;
                    assert!(!needs_escape(&bytes), "{len} {at} {fine:#x}");
                }
            }
        }
    }

    #[test]
    fn the_word_check_agrees_with_the_byte_check_on_every_pair_of_bytes() {
        let scalar = |bytes: &[u8]| bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for background in [b'a', 0x21, 0x5d, 0xff] {
            for a in 0..=255u8 {
                for b in 0..=255u8 {
                    let mut word = [background; 8];
                    (word[3], word[4]) = (a, b);
                    assert_eq!(needs_escape(&word), scalar(&word), "{background:#x} {a:#x} {b:#x}");
                }
            }
        }
    }

    #[test]
    fn default_records_share_one_empty_value_per_thread() {
        let (a, b) = (Record::default(), Record::default());
        assert!(Rc::ptr_eq(&a.jti.0, &b.scope.0) && Rc::ptr_eq(&a.act.0, &b.act.0));
        assert_eq!((&*a.sub, a.act.len()), ("", 0));
    }

    #[test]
    fn a_record_never_decided_finishes_as_an_incomplete_denial() {
        let mut undecided = Record { audited: true, ..Default::default() };
        undecided.finish();
        assert_eq!((undecided.decision, undecided.reason), (DENY, INCOMPLETE));
        let mut allowed = Record { decision: ALLOW, ..Default::default() };
        allowed.finish();
        assert_eq!((allowed.decision, allowed.reason), (ALLOW, ""));
    }

    #[test]
    fn record_is_json_with_every_contract_field() {
        let r = Record { sub: "alice".into(), decision: ALLOW, act: ["reports".to_string(), "mcp-gateway".to_string()].into(), ..Default::default() };
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        for field in ["ts", "request_id", "era", "task", "session", "sub", "backend", "method", "name", "decision", "reason", "status", "jti", "aud", "scope", "act", "depth"] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert_eq!(json["act"][0], "reports");
    }
}
