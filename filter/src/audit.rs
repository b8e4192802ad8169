//! One redacted lineage record per MCP request.
//!
//! Redaction is structural: the record has no field that could hold a token, a tool argument,
//! a result or a raw session id, so the writer cannot log them.

use serde::Serialize;

/// The decision facts of one request, written as `mcp_audit: {json}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub ts: u64,
    pub request_id: String,
    pub era: &'static str,
    pub task: String,
    /// A short keyed hash of the legacy session handle; empty for modern requests.
    pub session: String,
    pub sub: String,
    pub backend: String,
    pub method: String,
    pub name: String,
    pub decision: &'static str,
    pub reason: &'static str,
    pub status: u32,
    /// `jti` of the token minted for the backend.
    pub jti: String,
    /// `jti` of the token the caller presented, when it had one (joins hops into a chain).
    pub parent_jti: String,
    pub aud: String,
    pub scope: String,
    /// The actor chain of the minted token, outermost first.
    pub act: Vec<String>,
    pub depth: u32,
}

pub const ALLOW: &str = "allow";
pub const DENY: &str = "deny";

/// What starts an audit line, whichever sink writes it.
pub const PREFIX: &str = "mcp_audit: ";

impl Record {
    /// The record as JSON: the filter state `wasm.mcp_audit`, and the log line after [`PREFIX`].
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_json_with_every_contract_field() {
        let r = Record { sub: "alice".into(), decision: ALLOW, act: vec!["reports".into(), "mcp-gateway".into()], ..Default::default() };
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        for field in ["ts", "request_id", "era", "task", "session", "sub", "backend", "method", "name", "decision", "reason", "status", "jti", "aud", "scope", "act", "depth"] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert_eq!(json["act"][0], "reports");
    }
}
