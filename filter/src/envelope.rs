//! Reads the JSON-RPC envelope of one MCP POST body, and nothing more.
//!
//! Values are borrowed from the body (`&RawValue`, `Cow<str>`): tool arguments, results and any
//! member the gateway does not decide on are scanned for syntax but never materialized. Duplicate
//! keys are refused at every level the gateway reads, because two parsers that resolve a
//! duplicate differently (first wins vs last wins) are the classic request-smuggling hole: the
//! gateway would authorize one method while the server executes another.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::verdict::Refusal;

/// `params._meta` key that carries the protocol version of a modern request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// What kind of JSON-RPC message the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    /// A client's answer to a server request (legacy era only).
    Response,
}

/// The envelope fields the gateway decides on, borrowed from the body where possible.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub kind: Kind,
    /// The request `id` exactly as sent (a string or an integer), echoed in errors.
    pub id: Option<&'a RawValue>,
    pub method: Option<Cow<'a, str>>,
    /// The value `Mcp-Name` mirrors: `params.name`, `params.uri` or `params.taskId` by method.
    pub name: Option<Cow<'a, str>>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`.
    pub meta_version: Option<Cow<'a, str>>,
}

/// Which `params` member names the target of a method (MCP 2026-07-28, standard headers).
pub fn name_member(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    }
}

/// A parse failure, with the request id when it could be read before the failure.
#[derive(Debug)]
pub struct EnvelopeError<'a> {
    pub refusal: Refusal,
    pub id: Option<&'a RawValue>,
}

impl<'a> EnvelopeError<'a> {
    fn new(refusal: Refusal, id: Option<&'a RawValue>) -> Self {
        EnvelopeError { refusal, id }
    }
}

/// Parses one MCP POST body, in one pass over its bytes: `params` and `params._meta` are read
/// where they stand, not captured and parsed again.
pub fn parse(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError<'_>> {
    // The whole body is UTF-8 or nothing of it counts: serde_json checks only the strings it
    // keeps, and a value it skips (tool arguments) must not carry bytes another parser reads
    // differently.
    let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::new(Refusal::ParseError, None))?;
    let top: Top<'_> = serde_json::from_str(text).map_err(|e| {
        let refusal = match e.classify() {
            serde_json::error::Category::Data => {
                if e.to_string().starts_with(BATCH) {
                    Refusal::InvalidRequest("batch requests are not supported")
                } else if e.to_string().starts_with(DUPLICATE) {
                    Refusal::InvalidRequest("duplicate key in the JSON-RPC envelope")
                } else {
                    Refusal::InvalidRequest("body must be one JSON-RPC object")
                }
            }
            _ => Refusal::ParseError,
        };
        EnvelopeError::new(refusal, None)
    })?;
    interpret(top)
}

fn interpret(top: Top<'_>) -> Result<Envelope<'_>, EnvelopeError<'_>> {
    // The id first, so that every later refusal can echo it.
    let id = top.get("id");
    let invalid = |why| EnvelopeError::new(Refusal::InvalidRequest(why), id.filter(|i| is_valid_id(i)));
    if let Some(raw) = id {
        if !is_valid_id(raw) {
            return Err(invalid("id must be a string or an integer"));
        }
    }
    match top.get("jsonrpc").map(as_str) {
        Some(Some(v)) if v == "2.0" => {}
        _ => return Err(invalid("jsonrpc must be \"2.0\"")),
    }
    let method = match top.get("method") {
        None => None,
        Some(raw) => Some(as_str(raw).ok_or_else(|| invalid("method must be a string"))?),
    };
    let kind = match (&method, id) {
        (Some(_), Some(_)) => Kind::Request,
        (Some(_), None) => Kind::Notification,
        (None, Some(_)) if top.get("result").is_some() != top.get("error").is_some() => Kind::Response,
        _ => return Err(invalid("not a JSON-RPC request, notification or response")),
    };
    let mut envelope = Envelope { kind, id, method, name: None, meta_version: None };
    let Some(params) = top.params else {
        return require_name(envelope).map_err(invalid);
    };
    match params.shape {
        Shape::Object => {}
        Shape::NotObject => return Err(invalid("params must be an object")),
        Shape::Duplicate => return Err(invalid("duplicate key in params")),
    }
    if let Some(member) = envelope.method.as_deref().and_then(name_member) {
        if let Some(raw) = params.name_of(member) {
            envelope.name = Some(as_str(raw).ok_or_else(|| invalid("params.name, params.uri and params.taskId must be strings"))?);
        }
    }
    if let Some(meta) = params.meta {
        match meta.shape {
            Shape::Object => {}
            Shape::NotObject => return Err(invalid("params._meta must be an object")),
            Shape::Duplicate => return Err(invalid("duplicate key in params._meta")),
        }
        if let Some(raw) = meta.version {
            envelope.meta_version = Some(as_str(raw).ok_or_else(|| invalid("_meta protocolVersion must be a string"))?);
        }
    }
    require_name(envelope).map_err(invalid)
}

/// Methods that act on a named target are meaningless without it; refusing here keeps a
/// nameless `tools/call` from slipping past name-based policy.
fn require_name(envelope: Envelope<'_>) -> Result<Envelope<'_>, &'static str> {
    let needs = envelope.method.as_deref().and_then(name_member).is_some();
    if needs && envelope.name.is_none() && envelope.kind == Kind::Request {
        return Err("this method requires params.name, params.uri or params.taskId");
    }
    Ok(envelope)
}

/// JSON-RPC ids in MCP are strings or integers; null, fractions, objects are refused.
fn is_valid_id(raw: &RawValue) -> bool {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => true,
        Some(b'-' | b'0'..=b'9') => !text.contains(['.', 'e', 'E']),
        _ => false,
    }
}

/// A JSON string value, unescaped only when it has escapes.
fn as_str<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    if !text.contains('\\') {
        return Some(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

const BATCH: &str = "batch";
const DUPLICATE: &str = "duplicate key";

/// The top-level object: its members other than `params` left raw, and `params` as read.
/// A duplicate key here fails the parse at once (nothing of the body can be trusted); one
/// inside `params` is noted and refused after the whole body proved to be JSON, with the id.
struct Top<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
    params: Option<Params<'a>>,
}

impl<'a> Top<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// What a nested value the gateway reads turned out to be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Object,
    NotObject,
    /// An object with a key twice (after unescaping).
    Duplicate,
}

/// `params`: the members that can name the target (the method, which decides which one, may
/// come later in the body), and `_meta`.
struct Params<'a> {
    shape: Shape,
    /// By position in [`NAME_MEMBERS`].
    named: [Option<&'a RawValue>; 3],
    meta: Option<Meta<'a>>,
}

impl<'a> Params<'a> {
    fn name_of(&self, member: &str) -> Option<&'a RawValue> {
        NAME_MEMBERS.iter().position(|m| *m == member).and_then(|i| self.named[i])
    }
}

/// `params._meta`: only the protocol version is kept.
struct Meta<'a> {
    shape: Shape,
    version: Option<&'a RawValue>,
}

/// Members `name_member` can ask for.
const NAME_MEMBERS: [&str; 3] = ["name", "uri", "taskId"];

/// Object keys seen so far, for the duplicate check: the first few kept in place (an envelope's
/// objects have a handful), the rest in a vector.
#[derive(Default)]
struct Seen<'a> {
    first: [Option<Cow<'a, str>>; 8],
    more: Vec<Cow<'a, str>>,
}

impl<'a> Seen<'a> {
    /// False when `key` was already there.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        let mut known = self.first.iter().map_while(Option::as_ref).chain(self.more.iter());
        if known.any(|k| *k == key) {
            return false;
        }
        match self.first.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(key),
            None => self.more.push(key),
        }
        true
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Top<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopVisitor(std::marker::PhantomData))
    }
}

struct TopVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for TopVisitor<'a> {
    type Value = Top<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut top = Top { members: Vec::with_capacity(6), params: None };
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let duplicate = if key == "params" { top.params.is_some() } else { top.members.iter().any(|(k, _)| *k == key) };
            if duplicate {
                return Err(de::Error::custom(DUPLICATE));
            }
            if key == "params" {
                top.params = Some(map.next_value::<Params<'de>>()?);
            } else {
                let value: &'de RawValue = map.next_value()?;
                top.members.push((key, value));
            }
        }
        Ok(top)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Drain so a syntax error inside still reports as a parse error rather than a batch.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(de::Error::custom(BATCH))
    }
}

/// Reads a nested value that must be an object: anything else is consumed (so the rest of the
/// body is still checked) and reported as its [`Shape`].
trait NestedObject<'de>: Sized {
    fn not_an_object() -> Self;
    fn visit_object<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

struct NestedVisitor<T>(std::marker::PhantomData<T>);

macro_rules! not_an_object {
    ($($visit:ident: $ty:ty),*) => {$(
        fn $visit<E: de::Error>(self, _: $ty) -> Result<T, E> {
            Ok(T::not_an_object())
        }
    )*};
}

impl<'de, T: NestedObject<'de>> Visitor<'de> for NestedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    not_an_object!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::not_an_object())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::not_an_object())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::visit_object(map)
    }
}

impl<'de> NestedObject<'de> for Params<'de> {
    fn not_an_object() -> Self {
        Params { shape: Shape::NotObject, named: [None; 3], meta: None }
    }

    fn visit_object<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut params = Params { shape: Shape::Object, named: [None; 3], meta: None };
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if !seen.insert(key.clone()) {
                params.shape = Shape::Duplicate;
            }
            if key == "_meta" {
                params.meta = Some(map.next_value::<Meta<'de>>()?);
            } else if let Some(i) = NAME_MEMBERS.iter().position(|m| *m == key) {
                params.named[i] = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(params)
    }
}

impl<'de> NestedObject<'de> for Meta<'de> {
    fn not_an_object() -> Self {
        Meta { shape: Shape::NotObject, version: None }
    }

    fn visit_object<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut meta = Meta { shape: Shape::Object, version: None };
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if !seen.insert(key.clone()) {
                meta.shape = Shape::Duplicate;
            }
            if key == META_PROTOCOL_VERSION {
                meta.version = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(meta)
    }
}

impl<'de> Deserialize<'de> for Params<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NestedVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Meta<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NestedVisitor(std::marker::PhantomData))
    }
}

/// An object key, borrowed unless it contains escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> Refusal {
        parse(body.as_bytes()).unwrap_err().refusal
    }

    #[test]
    fn reads_tools_call_envelope_without_touching_arguments() {
        let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"h\u00e9"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let env = parse(body.as_bytes()).unwrap();
        assert_eq!(env.kind, Kind::Request);
        assert_eq!(env.id.unwrap().get(), "7");
        assert_eq!(env.method.as_deref(), Some("tools/call"));
        assert_eq!(env.name.as_deref(), Some("echo"));
        assert_eq!(env.meta_version.as_deref(), Some("2026-07-28"));
        assert!(matches!(env.name, Some(Cow::Borrowed(_))), "plain strings stay borrowed");
    }

    #[test]
    fn resource_uri_and_task_id_are_the_name() {
        let env = parse(br#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}"#).unwrap();
        assert_eq!(env.name.as_deref(), Some("file:///x"));
        let env = parse(br#"{"jsonrpc":"2.0","id":"a","method":"tasks/get","params":{"taskId":"t-1"}}"#).unwrap();
        assert_eq!(env.name.as_deref(), Some("t-1"));
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let env = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"e\u0063ho"}}"#).unwrap();
        assert_eq!(env.method.as_deref(), Some("tools/call"));
        assert_eq!(env.name.as_deref(), Some("echo"));
    }

    #[test]
    fn notification_and_response_kinds() {
        assert_eq!(parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap().kind, Kind::Notification);
        assert_eq!(parse(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#).unwrap().kind, Kind::Response);
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        assert_eq!(refusal("{\"jsonrpc\":"), Refusal::ParseError);
        assert_eq!(refusal("not json"), Refusal::ParseError);
        assert_eq!(refusal(r#"{"jsonrpc":"2.0","id":1,"method":"x"} trailing"#), Refusal::ParseError);
    }

    #[test]
    fn a_body_that_is_not_utf8_anywhere_is_a_parse_error() {
        for body in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"e\",\"arguments\":{\"t\":\"\xc0\"}}}"[..],
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"_meta\":{\"k\":\"\xff\"}}}"[..],
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":[\"\xed\xa0\x80\"]}"[..],
        ] {
            assert_eq!(parse(body).unwrap_err().refusal, Refusal::ParseError);
        }
    }

    #[test]
    fn batch_is_invalid_request() {
        assert_eq!(refusal(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#), Refusal::InvalidRequest("batch requests are not supported"));
    }

    #[test]
    fn duplicate_keys_are_refused_at_every_level_read() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list","params":{"name":"a"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","m\u0065thod":"x","params":{"name":"a"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"k":1,"k":2}}}"#,
        ] {
            assert!(matches!(refusal(body), Refusal::InvalidRequest(_)), "{body}");
        }
    }

    #[test]
    fn wrong_types_are_invalid_requests_that_echo_the_id() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":1}}}"#,
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert!(matches!(err.refusal, Refusal::InvalidRequest(_)), "{body}");
            assert_eq!(err.id.map(|i| i.get()), Some("1"), "{body}");
        }
    }

    #[test]
    fn bad_ids_are_refused_and_not_echoed() {
        for body in [
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
        ] {
            let err = parse(body.as_bytes()).unwrap_err();
            assert!(matches!(err.refusal, Refusal::InvalidRequest(_)), "{body}");
            assert!(err.id.is_none());
        }
    }

    #[test]
    fn a_body_that_is_not_json_is_a_parse_error_before_any_nested_refusal() {
        // The nested duplicate is noted while reading; the broken end still decides.
        assert_eq!(refusal(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":1,"a":2},"x":}"#), Refusal::ParseError);
        assert_eq!(refusal(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1,}"#), Refusal::ParseError);
    }

    #[test]
    fn nested_values_of_every_other_type_are_not_objects() {
        for params in ["\"x\"", "1", "-1", "1.5", "true", "null", "[]", "[{\"name\":\"a\"}]"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{params}}}"#);
            assert_eq!(refusal(&body), Refusal::InvalidRequest("params must be an object"), "{body}");
            let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"_meta":{params}}}}}"#);
            assert_eq!(refusal(&body), Refusal::InvalidRequest("params._meta must be an object"), "{body}");
        }
    }

    #[test]
    fn escaped_keys_are_the_members_they_spell() {
        let env = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","p\u0061rams":{"n\u0061me":"echo","_m\u0065ta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#).unwrap();
        assert_eq!((env.name.as_deref(), env.meta_version.as_deref()), (Some("echo"), Some("2026-07-28")));
        assert!(matches!(refusal(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{},"p\u0061rams":{}}"#), Refusal::InvalidRequest(_)));
        assert_eq!(refusal(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{},"_m\u0065ta":{}}}"#), Refusal::InvalidRequest("duplicate key in params"));
    }

    #[test]
    fn duplicates_are_found_among_many_keys() {
        let keys: String = (0..12).map(|i| format!(r#""k{i}":{i},"#)).collect();
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{{keys}"k11":0}}}}"#);
        assert_eq!(refusal(&body), Refusal::InvalidRequest("duplicate key in params"));
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{{keys}"k12":0}}}}"#);
        assert!(parse(body.as_bytes()).is_ok());
    }

    #[test]
    fn the_name_member_may_come_before_the_method() {
        let env = parse(br#"{"params":{"uri":"file:///x","name":"n"},"jsonrpc":"2.0","id":2,"method":"resources/read"}"#).unwrap();
        assert_eq!(env.name.as_deref(), Some("file:///x"));
    }

    #[test]
    fn non_object_bodies_are_invalid_requests() {
        assert!(matches!(refusal("42"), Refusal::InvalidRequest(_)));
        assert!(matches!(refusal(r#"{"jsonrpc":"2.0"}"#), Refusal::InvalidRequest(_)));
    }
}
