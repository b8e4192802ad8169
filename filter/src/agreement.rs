//! Decides the protocol era of a request and makes its MCP headers agree with its body.
//!
//! Envoy routes, RBAC and rate limits decide on headers while the server executes the body; a
//! request whose `Mcp-Method` says `tools/list` but whose body says `tools/call` is a confused
//! deputy. So a present header must equal the body, a modern request must carry the headers its
//! spec requires, and a legacy request that lacks them gets them set from the checked body.

use std::borrow::Cow;
use std::rc::Rc;

use base64::Engine;

use crate::envelope::{name_member, Envelope, Kind};
use crate::verdict::Refusal;

pub const H_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const H_METHOD: &str = "mcp-method";
pub const H_NAME: &str = "mcp-name";
pub const H_SESSION_ID: &str = "mcp-session-id";
pub const H_TASK_ID: &str = "mcp-task-id";

const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";
/// The first protocol version of the stateless (modern) era.
pub const FIRST_MODERN_VERSION: &str = "2026-07-28";

/// The two eras of MCP over Streamable HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Modern,
    Legacy,
}

impl Era {
    pub fn as_str(self) -> &'static str {
        match self {
            Era::Modern => "modern",
            Era::Legacy => "legacy",
        }
    }
}

/// The singleton MCP headers of a request, read once from the header list.
#[derive(Debug, Default, Clone)]
pub struct McpHeaders<'h> {
    pub protocol_version: Option<&'h str>,
    pub method: Option<&'h str>,
    pub name: Option<&'h str>,
    pub session_id: Option<&'h str>,
    pub task_id: Option<&'h str>,
}

impl<'h> McpHeaders<'h> {
    /// Picks the MCP headers out of a request's headers; a repeated one is a mismatch, since an
    /// intermediary that reads the other copy would decide on a value the server never sees.
    pub fn read(headers: &[crate::headers::Pair<'h>]) -> Result<Self, Refusal> {
        let mut out = McpHeaders::default();
        for &(name, value) in headers {
            let slot = match name {
                H_PROTOCOL_VERSION => &mut out.protocol_version,
                H_METHOD => &mut out.method,
                H_NAME => &mut out.name,
                H_SESSION_ID => &mut out.session_id,
                H_TASK_ID => &mut out.task_id,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(Refusal::HeaderMismatch("an MCP header is repeated"));
            }
        }
        Ok(out)
    }
}

/// What agreement concluded for a request that may go on.
#[derive(Debug, PartialEq, Eq)]
pub struct Agreed {
    pub era: Era,
    /// Headers to set on the upstream request (legacy requests that lacked them).
    pub set_headers: Vec<(&'static str, Rc<str>)>,
    /// Whether a client-sent `Mcp-Session-Id` must be dropped (modern requests).
    pub drop_session_id: bool,
}

/// True for a modern version; an unparseable version is refused rather than guessed.
pub fn is_modern_version(version: &str) -> Result<bool, Refusal> {
    let b = version.as_bytes();
    let date_shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    if !date_shaped {
        return Err(Refusal::UnsupportedVersion);
    }
    // ISO dates compare correctly as strings.
    Ok(version >= FIRST_MODERN_VERSION)
}

/// Decides the era of a POST and checks its headers against its envelope.
pub fn agree(headers: &McpHeaders<'_>, envelope: &Envelope<'_>) -> Result<Agreed, Refusal> {
    let meta = envelope.meta_version.as_deref();
    if let (Some(h), Some(m)) = (headers.protocol_version, meta) {
        if h != m {
            return Err(Refusal::HeaderMismatch("MCP-Protocol-Version differs from params._meta protocolVersion"));
        }
    }
    let declared = headers.protocol_version.or(meta);
    let declared_modern = match declared {
        Some(v) => is_modern_version(v)?,
        None => false,
    };
    let method = envelope.method.as_deref();
    // rmcp's default client names 2026-07-28 in initialize and then settles on a session:
    // whatever version it names, initialize starts the legacy handshake.
    let era = if declared_modern && method != Some("initialize") { Era::Modern } else { Era::Legacy };

    check_method(headers.method, method)?;
    let expected_name = method.and_then(name_member).and(envelope.name.as_deref());
    check_name(headers.name, expected_name)?;

    let mut agreed = Agreed { era, set_headers: Vec::new(), drop_session_id: false };
    match era {
        Era::Modern => {
            if envelope.kind == Kind::Response {
                return Err(Refusal::InvalidRequest("the modern era has no client responses over POST"));
            }
            if headers.protocol_version.is_none() {
                return Err(Refusal::HeaderMismatch("modern request without MCP-Protocol-Version header"));
            }
            if headers.method.is_none() {
                return Err(Refusal::HeaderMismatch("modern request without Mcp-Method header"));
            }
            if headers.name.is_none() && requires_name_header(method) {
                return Err(Refusal::HeaderMismatch("modern request without Mcp-Name header"));
            }
            agreed.drop_session_id = headers.session_id.is_some();
        }
        Era::Legacy => {
            if let (None, Some(m)) = (headers.method, method) {
                agreed.set_headers.push((H_METHOD, Rc::from(m)));
            }
            if let (None, Some(n)) = (headers.name, expected_name) {
                agreed.set_headers.push((H_NAME, encode_header_value(n).as_ref().into()));
            }
        }
    }
    Ok(agreed)
}

/// The methods whose `Mcp-Name` the 2026-07-28 transport makes mandatory.
fn requires_name_header(method: Option<&str>) -> bool {
    matches!(method, Some("tools/call" | "resources/read" | "prompts/get"))
}

fn check_method(header: Option<&str>, body: Option<&str>) -> Result<(), Refusal> {
    match (header, body) {
        (Some(h), Some(b)) if h != b => Err(Refusal::HeaderMismatch("Mcp-Method differs from the body method")),
        (Some(_), None) => Err(Refusal::HeaderMismatch("Mcp-Method on a message without a method")),
        _ => Ok(()),
    }
}

fn check_name(header: Option<&str>, body: Option<&str>) -> Result<(), Refusal> {
    let Some(raw) = header else { return Ok(()) };
    let decoded = decode_header_value(raw)
        .ok_or(Refusal::HeaderMismatch("Mcp-Name is not valid =?base64?...?= encoding"))?;
    match body {
        Some(b) if decoded == b => Ok(()),
        Some(_) => Err(Refusal::HeaderMismatch("Mcp-Name differs from the body")),
        None => Err(Refusal::HeaderMismatch("Mcp-Name on a method that names no target")),
    }
}

/// Reverses the `=?base64?…?=` header value encoding of MCP 2026-07-28.
pub fn decode_header_value(raw: &str) -> Option<Cow<'_, str>> {
    match raw.strip_prefix(BASE64_PREFIX).and_then(|s| s.strip_suffix(BASE64_SUFFIX)) {
        None => Some(Cow::Borrowed(raw)),
        Some(inner) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(inner).ok()?;
            String::from_utf8(bytes).ok().map(Cow::Owned)
        }
    }
}

/// Encodes a value for a header, wrapping it when it cannot travel bare (non-printable or
/// non-ASCII characters, edge whitespace, or a value that already looks encoded).
pub fn encode_header_value(value: &str) -> Cow<'_, str> {
    let needs = value.starts_with([' ', '\t'])
        || value.ends_with([' ', '\t'])
        || value.bytes().any(|c| !(0x20..=0x7e).contains(&c))
        || (value.starts_with(BASE64_PREFIX) && value.ends_with(BASE64_SUFFIX));
    if needs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        Cow::Owned(format!("{BASE64_PREFIX}{b64}{BASE64_SUFFIX}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// `Mcp-Task-Id`: 1-64 characters of `A-Z a-z 0-9 . _ -` (CONTRACT item 6).
pub fn valid_task_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::parse;

    const CALL_MODERN: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    const CALL_LEGACY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"échø","arguments":{}}}"#;

    fn run(body: &str, pairs: &[(&str, &str)]) -> Result<Agreed, Refusal> {
        let headers = McpHeaders::read(pairs)?;
        agree(&headers, &parse(body.as_bytes()).unwrap())
    }

    const MODERN_OK: [(&str, &str); 3] =
        [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "echo")];

    #[test]
    fn modern_request_with_agreeing_headers_passes_unchanged() {
        let agreed = run(CALL_MODERN, &MODERN_OK).unwrap();
        assert_eq!(agreed.era, Era::Modern);
        assert!(agreed.set_headers.is_empty());
    }

    #[test]
    fn each_disagreeing_header_is_a_mismatch() {
        for (i, wrong) in ["2026-09-01", "tools/list", "other"].iter().enumerate() {
            let mut pairs = MODERN_OK.to_vec();
            pairs[i].1 = wrong;
            assert!(matches!(run(CALL_MODERN, &pairs), Err(Refusal::HeaderMismatch(_))), "{wrong}");
        }
    }

    #[test]
    fn modern_request_missing_a_required_header_is_a_mismatch() {
        for skip in 0..3 {
            let pairs: Vec<_> = MODERN_OK.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, p)| *p).collect();
            assert!(matches!(run(CALL_MODERN, &pairs), Err(Refusal::HeaderMismatch(_))), "without {skip}");
        }
    }

    #[test]
    fn base64_name_is_decoded_before_comparison() {
        let encoded = encode_header_value("échø");
        assert!(encoded.starts_with("=?base64?"));
        let agreed = run(CALL_LEGACY, &[("mcp-method", "tools/call"), ("mcp-name", &encoded)]).unwrap();
        assert_eq!(agreed.era, Era::Legacy);
        assert!(run(CALL_LEGACY, &[("mcp-name", "=?base64?!!?=")]).is_err());
    }

    #[test]
    fn legacy_request_without_headers_gets_them_from_the_body() {
        let agreed = run(CALL_LEGACY, &[("mcp-session-id", "s1")]).unwrap();
        assert_eq!(agreed.era, Era::Legacy);
        assert_eq!(agreed.set_headers, vec![(H_METHOD, "tools/call".into()), (H_NAME, encode_header_value("échø").as_ref().into())]);
        assert!(!agreed.drop_session_id);
    }

    #[test]
    fn legacy_header_that_disagrees_is_still_a_mismatch() {
        assert!(run(CALL_LEGACY, &[("mcp-method", "tools/list")]).is_err());
    }

    #[test]
    fn initialize_is_legacy_whatever_version_it_names() {
        let body = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2026-07-28"}}"#;
        assert_eq!(run(body, &[("mcp-protocol-version", "2026-07-28")]).unwrap().era, Era::Legacy);
    }

    #[test]
    fn modern_session_id_is_dropped() {
        let mut pairs = MODERN_OK.to_vec();
        pairs.push(("mcp-session-id", "stale"));
        assert!(run(CALL_MODERN, &pairs).unwrap().drop_session_id);
    }

    #[test]
    fn repeated_header_is_a_mismatch() {
        let mut pairs = MODERN_OK.to_vec();
        pairs.push(("mcp-method", "tools/call"));
        assert!(matches!(run(CALL_MODERN, &pairs), Err(Refusal::HeaderMismatch(_))));
    }

    #[test]
    fn garbage_version_is_refused() {
        assert_eq!(run(CALL_LEGACY, &[("mcp-protocol-version", "latest")]), Err(Refusal::UnsupportedVersion));
    }

    #[test]
    fn task_ids() {
        assert!(valid_task_id("task-1.a_B"));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id(&"a".repeat(65)));
        assert!(!valid_task_id("a b"));
        assert!(!valid_task_id("é"));
    }
}
