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

impl Record {
    /// The log line.
    pub fn line(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string());
        format!("mcp_audit: {json}")
    }
}

/// Audit lines held for one log call per tick (`audit.flush: tick`): Envoy's Wasm log call is
/// the costliest host call on the request path, and one call can carry many lines.
#[derive(Debug, Default)]
pub struct Batch {
    text: String,
    lines: usize,
}

/// Most lines one batch holds before it is written at once.
pub const BATCH_LINES: usize = 64;

impl Batch {
    /// Adds a line; returns the whole batch when it is full and must be written now.
    pub fn push(&mut self, line: &str) -> Option<String> {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(line);
        self.lines += 1;
        (self.lines >= BATCH_LINES).then(|| self.take()).flatten()
    }

    /// Everything held, if anything (the tick writes it).
    pub fn take(&mut self) -> Option<String> {
        self.lines = 0;
        (!self.text.is_empty()).then(|| std::mem::take(&mut self.text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_keeps_one_line_per_record_and_flushes_when_full() {
        let mut batch = Batch::default();
        assert_eq!(batch.push("mcp_audit: {\"a\":1}"), None);
        assert_eq!(batch.push("mcp_audit: {\"a\":2}"), None);
        assert_eq!(batch.take().as_deref(), Some("mcp_audit: {\"a\":1}\nmcp_audit: {\"a\":2}"));
        assert_eq!(batch.take(), None);
        let full = (0..BATCH_LINES).filter_map(|i| batch.push(&format!("l{i}"))).next().expect("flushed when full");
        assert_eq!(full.lines().count(), BATCH_LINES);
    }

    #[test]
    fn line_is_prefixed_json_with_every_contract_field() {
        let r = Record { sub: "alice".into(), decision: ALLOW, act: vec!["reports".into(), "mcp-gateway".into()], ..Default::default() };
        let line = r.line();
        let json: serde_json::Value = serde_json::from_str(line.strip_prefix("mcp_audit: ").unwrap()).unwrap();
        for field in ["ts", "request_id", "era", "task", "session", "sub", "backend", "method", "name", "decision", "reason", "status", "jti", "aud", "scope", "act", "depth"] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert_eq!(json["act"][0], "reports");
    }
}
