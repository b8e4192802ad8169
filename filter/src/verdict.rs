//! The one place where a refusal becomes an HTTP status, a JSON-RPC error and an audit reason.
//!
//! Every concern returns a typed [`Refusal`]; nothing else in the filter decides what a client
//! sees when a request is turned away, so codes stay stable and every path is counted alike.

use serde_json::value::RawValue;

use crate::session::{SessionError, TaskError};

/// JSON-RPC error codes used by the gateway (JSON-RPC 2.0 and the MCP specification).
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    /// MCP 2026-07-28: a standard header disagrees with the body, or a required one is missing.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// Implementation-defined range; -32000/-32001 are taken by SDKs for transport failures.
    pub const TASK_REFUSED: i64 = -32010;
    /// 401: no valid token.
    pub const UNAUTHENTICATED: i64 = -32011;
    /// 403: the token lacks a scope, or the delegation is not allowed.
    pub const FORBIDDEN: i64 = -32012;
    /// 404: the legacy session is unknown, expired or not the caller's.
    pub const SESSION_NOT_FOUND: i64 = -32013;
    pub const INTERNAL: i64 = -32603;
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    AlgorithmNotAllowed,
    UnknownKey,
    BadSignature,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "token_missing",
            AuthFailure::Malformed => "token_malformed",
            AuthFailure::Expired => "token_expired",
            AuthFailure::NotYetValid => "token_not_yet_valid",
            AuthFailure::WrongIssuer => "token_wrong_issuer",
            AuthFailure::WrongAudience => "token_wrong_audience",
            AuthFailure::AlgorithmNotAllowed => "token_alg_not_allowed",
            AuthFailure::UnknownKey => "token_unknown_key",
            AuthFailure::BadSignature => "token_bad_signature",
        }
    }
}

/// Why a request was refused. `reason()` is the stable code written to audit lines and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body is not JSON.
    ParseError,
    /// JSON, but not one valid JSON-RPC 2.0 message (batch, duplicate key, wrong type).
    InvalidRequest(&'static str),
    /// A standard MCP header is missing or differs from the body.
    HeaderMismatch(&'static str),
    /// The declared protocol version is not one the gateway understands.
    UnsupportedVersion,
    BodyTooLarge,
    UnsupportedMediaType,
    /// The path names no configured backend.
    UnknownBackend,
    /// Method not allowed on an MCP endpoint (e.g. PUT, or GET in the modern era).
    MethodNotAllowed,
    /// The `Mcp-Task-Id` header is not 1-64 characters of `A-Za-z0-9._-`.
    InvalidTaskId,
    /// No acceptable bearer token.
    Unauthenticated(AuthFailure),
    /// The effective scope lacks what the method, tool or resource needs (space-separated).
    InsufficientScope(String),
    /// A backend presented its token for a hop that no configured delegation allows.
    DelegationNotAllowed,
    /// The hop would exceed `max_delegation_depth`.
    DelegationTooDeep,
    /// A resource URI outside the subject's approved workspace roots.
    WorkspaceDenied,
    /// A tool the backend's policy does not list (and `allow_unlisted_tools` is off).
    ToolNotAllowed,
    /// The gateway cannot mint (no signing key); fail closed rather than forward.
    MintUnavailable,
    /// A legacy session handle that may not be used: 404 tells the client to initialize again.
    Session(SessionError),
    /// A modern task past its lifetime or revoked: the agent starts a new task.
    Task(TaskError),
}

impl Refusal {
    /// HTTP status of the local reply.
    pub fn status(&self) -> u32 {
        match self {
            Refusal::ParseError
            | Refusal::InvalidRequest(_)
            | Refusal::HeaderMismatch(_)
            | Refusal::UnsupportedVersion
            | Refusal::InvalidTaskId => 400,
            Refusal::Unauthenticated(_) => 401,
            Refusal::InsufficientScope(_)
            | Refusal::DelegationNotAllowed
            | Refusal::DelegationTooDeep
            | Refusal::WorkspaceDenied
            | Refusal::ToolNotAllowed => 403,
            Refusal::MintUnavailable => 503,
            Refusal::Session(_) => 404,
            Refusal::Task(_) => 403,
            Refusal::BodyTooLarge => 413,
            Refusal::UnsupportedMediaType => 415,
            Refusal::UnknownBackend => 404,
            Refusal::MethodNotAllowed => 405,
        }
    }

    /// JSON-RPC error code of the reply body.
    pub fn rpc_code(&self) -> i64 {
        match self {
            Refusal::ParseError => code::PARSE_ERROR,
            Refusal::HeaderMismatch(_) => code::HEADER_MISMATCH,
            Refusal::InvalidRequest(_)
            | Refusal::UnsupportedVersion
            | Refusal::BodyTooLarge
            | Refusal::UnsupportedMediaType
            | Refusal::UnknownBackend
            | Refusal::MethodNotAllowed
            | Refusal::InvalidTaskId => code::INVALID_REQUEST,
            Refusal::Unauthenticated(_) => code::UNAUTHENTICATED,
            Refusal::InsufficientScope(_)
            | Refusal::DelegationNotAllowed
            | Refusal::DelegationTooDeep
            | Refusal::WorkspaceDenied
            | Refusal::ToolNotAllowed => code::FORBIDDEN,
            Refusal::MintUnavailable => code::INTERNAL,
            Refusal::Session(_) => code::SESSION_NOT_FOUND,
            Refusal::Task(_) => code::TASK_REFUSED,
        }
    }

    /// Stable machine-readable reason (audit `reason`, metrics label, `error.data.reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ParseError => "parse_error",
            Refusal::InvalidRequest(_) => "invalid_request",
            Refusal::HeaderMismatch(_) => "header_mismatch",
            Refusal::UnsupportedVersion => "unsupported_protocol_version",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::UnsupportedMediaType => "unsupported_media_type",
            Refusal::UnknownBackend => "unknown_backend",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::InvalidTaskId => "invalid_task_id",
            Refusal::Unauthenticated(f) => f.reason(),
            Refusal::InsufficientScope(_) => "scope_missing",
            Refusal::DelegationNotAllowed => "delegation_not_allowed",
            Refusal::DelegationTooDeep => "delegation_too_deep",
            Refusal::WorkspaceDenied => "workspace_denied",
            Refusal::ToolNotAllowed => "tool_not_allowed",
            Refusal::MintUnavailable => "mint_unavailable",
            Refusal::Session(e) => e.reason(),
            Refusal::Task(e) => e.reason(),
        }
    }

    /// Human-readable message; never contains request content beyond header names.
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::ParseError => "Parse error: body is not valid JSON",
            Refusal::InvalidRequest(why) | Refusal::HeaderMismatch(why) => why,
            Refusal::UnsupportedVersion => "Unsupported MCP protocol version",
            Refusal::BodyTooLarge => "Request body exceeds max_body_bytes",
            Refusal::UnsupportedMediaType => "Content-Type must be application/json",
            Refusal::UnknownBackend => "No MCP backend is configured at this path",
            Refusal::MethodNotAllowed => "HTTP method not allowed on this MCP endpoint",
            Refusal::InvalidTaskId => "Mcp-Task-Id must be 1-64 characters of A-Z a-z 0-9 . _ -",
            Refusal::Unauthenticated(_) => "Unauthorized: a valid bearer token is required",
            Refusal::InsufficientScope(_) => "Forbidden: insufficient scope",
            Refusal::DelegationNotAllowed => "Forbidden: this delegation is not allowed",
            Refusal::DelegationTooDeep => "Forbidden: delegation depth limit reached",
            Refusal::WorkspaceDenied => "Forbidden: resource outside the approved workspace",
            Refusal::ToolNotAllowed => "Forbidden: this tool is not allowed on this backend",
            Refusal::MintUnavailable => "Gateway cannot mint backend tokens",
            Refusal::Session(_) => "Session not found: initialize a new session",
            Refusal::Task(TaskError::Expired) => "Task expired: start a new task (new Mcp-Task-Id)",
            Refusal::Task(TaskError::Revoked) => "Task revoked: start a new task (new Mcp-Task-Id)",
        }
    }

    /// Headers that go with the reply besides the content type. `resource_metadata` is the
    /// RFC 9728 metadata URL of the addressed backend, named in OAuth challenges.
    pub fn extra_headers(&self, resource_metadata: &str) -> Vec<(&'static str, String)> {
        match self {
            Refusal::MethodNotAllowed => vec![("allow", "POST".to_string())],
            Refusal::Unauthenticated(AuthFailure::Missing) => {
                vec![("www-authenticate", format!(r#"Bearer resource_metadata="{resource_metadata}""#))]
            }
            Refusal::Unauthenticated(_) => vec![(
                "www-authenticate",
                format!(r#"Bearer error="invalid_token", resource_metadata="{resource_metadata}""#),
            )],
            Refusal::InsufficientScope(needed) => vec![(
                "www-authenticate",
                format!(r#"Bearer error="insufficient_scope", scope="{needed}", resource_metadata="{resource_metadata}""#),
            )],
            _ => Vec::new(),
        }
    }
}

/// A local reply the glue sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The reply for a refusal: status, JSON-RPC error echoing the request `id` when one was read.
    pub fn refusal(refusal: &Refusal, id: Option<&RawValue>, resource_metadata: &str) -> Reply {
        let mut headers = refusal.extra_headers(resource_metadata);
        headers.push(("content-type", "application/json".to_string()));
        Reply {
            status: refusal.status(),
            headers,
            body: rpc_error_body(id, refusal.rpc_code(), refusal.message(), refusal.reason()),
        }
    }
}

/// A JSON-RPC 2.0 error object. `id` is copied verbatim (it was validated as a string or number).
pub fn rpc_error_body(id: Option<&RawValue>, code: i64, message: &str, reason: &str) -> Vec<u8> {
    let id = id.map(RawValue::get).unwrap_or("null");
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{},"data":{{"reason":{}}}}}}}"#,
        serde_json::Value::from(message),
        serde_json::Value::from(reason),
    );
    body.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_mismatch_is_400_with_32020_and_echoes_id() {
        let id = RawValue::from_string("\"abc\"".into()).unwrap();
        let reply = Reply::refusal(&Refusal::HeaderMismatch("Mcp-Method differs"), Some(&id), "");
        assert_eq!(reply.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(v["id"], "abc");
        assert_eq!(v["error"]["code"], -32020);
        assert_eq!(v["error"]["data"]["reason"], "header_mismatch");
    }

    #[test]
    fn refusal_without_id_has_null_id() {
        let reply = Reply::refusal(&Refusal::ParseError, None, "");
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert!(v["id"].is_null());
        assert_eq!(v["error"]["code"], -32700);
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(Refusal::BodyTooLarge.status(), 413);
        assert_eq!(Refusal::UnsupportedMediaType.status(), 415);
        assert_eq!(Refusal::InvalidRequest("batch").rpc_code(), -32600);
    }

    #[test]
    fn challenges_name_the_resource_metadata() {
        let url = "http://gw/.well-known/oauth-protected-resource/mcp/files";
        let missing = Reply::refusal(&Refusal::Unauthenticated(AuthFailure::Missing), None, url);
        assert_eq!(missing.status, 401);
        assert_eq!(missing.headers[0].1, format!(r#"Bearer resource_metadata="{url}""#));
        let invalid = Reply::refusal(&Refusal::Unauthenticated(AuthFailure::Expired), None, url);
        assert!(invalid.headers[0].1.contains(r#"error="invalid_token""#));
        let scope = Reply::refusal(&Refusal::InsufficientScope("files:write".into()), None, url);
        assert_eq!(scope.status, 403);
        assert!(scope.headers[0].1.starts_with(r#"Bearer error="insufficient_scope", scope="files:write""#));
    }
}
