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

/// Parses one MCP POST body.
pub fn parse(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError<'_>> {
    let top: RawObject<'_> = serde_json::from_slice(body).map_err(|e| {
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
    interpret(&top)
}

fn interpret<'a>(top: &RawObject<'a>) -> Result<Envelope<'a>, EnvelopeError<'a>> {
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
    let Some(params) = top.get("params") else {
        return require_name(envelope).map_err(invalid);
    };
    let params: RawObject<'a> = parse_object(params).map_err(|dup| {
        invalid(if dup { "duplicate key in params" } else { "params must be an object" })
    })?;
    if let Some(member) = envelope.method.as_deref().and_then(name_member) {
        if let Some(raw) = params.get(member) {
            envelope.name = Some(as_str(raw).ok_or_else(|| invalid("params.name, params.uri and params.taskId must be strings"))?);
        }
    }
    if let Some(meta) = params.get("_meta") {
        let meta: RawObject<'a> = parse_object(meta).map_err(|dup| {
            invalid(if dup { "duplicate key in params._meta" } else { "params._meta must be an object" })
        })?;
        if let Some(raw) = meta.get(META_PROTOCOL_VERSION) {
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

/// Parses a raw value as an object of raw members. `Err(true)` means a duplicate key.
fn parse_object<'a>(raw: &'a RawValue) -> Result<RawObject<'a>, bool> {
    serde_json::from_str(raw.get()).map_err(|e| e.to_string().starts_with(DUPLICATE))
}

const BATCH: &str = "batch";
const DUPLICATE: &str = "duplicate key";

/// One JSON object's members, values left raw. Refuses duplicate keys (after unescaping).
struct RawObject<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawObjectVisitor(std::marker::PhantomData))
    }
}

struct RawObjectVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for RawObjectVisitor<'a> {
    type Value = RawObject<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'a, str>, &'a RawValue)> = Vec::with_capacity(8);
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if members.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let value: &'de RawValue = map.next_value()?;
            members.push((key, value));
        }
        Ok(RawObject { members })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Drain so a syntax error inside still reports as a parse error rather than a batch.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(de::Error::custom(BATCH))
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
    fn non_object_bodies_are_invalid_requests() {
        assert!(matches!(refusal("42"), Refusal::InvalidRequest(_)));
        assert!(matches!(refusal(r#"{"jsonrpc":"2.0"}"#), Refusal::InvalidRequest(_)));
    }
}
