//! Helpers shared by the integration test files.
#![allow(dead_code)]

use integration::backend::debug_count;
use integration::harness::Gateway;
use serde_json::Value;

/// A response read whole.
pub struct Raw {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Raw {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON-RPC error code of the body.
    pub fn rpc_code(&self) -> i64 {
        self.json()["error"]["code"].as_i64().unwrap_or_else(|| panic!("no error code: {}", self.body))
    }
}

/// Sends a raw request with exactly these headers and body.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Raw {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), url).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    Raw { status, headers, body }
}

/// A JSON POST with a bearer token and extra headers.
pub async fn post(url: &str, token: &str, headers: &[(&str, &str)], body: &str) -> Raw {
    let auth = format!("Bearer {token}");
    let mut all = vec![("content-type", "application/json"), ("accept", "application/json, text/event-stream"), ("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    send("POST", url, &all, body).await
}

/// Requests that reached all backend replicas so far.
pub async fn backend_requests(gw: &Gateway) -> u64 {
    let mut total = 0;
    for i in 0..3 {
        total += debug_count(&gw.backend_url(i, "")).await.expect("debug count");
    }
    total
}

/// Headers of a correct modern `tools/call` of `name`.
pub fn modern_headers(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("mcp-protocol-version", "2026-07-28".to_string()),
        ("mcp-method", "tools/call".to_string()),
        ("mcp-name", name.to_string()),
    ]
}

/// A modern `tools/call` body.
pub fn modern_call(id: u64, name: &str, args: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{name}","arguments":{args},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}},"io.modelcontextprotocol/clientInfo":{{"name":"raw-test","version":"1"}}}}}}}}"#
    )
}

/// The JSON text a tool returned in an SSE or JSON response body.
pub fn tool_text(body: &str) -> String {
    let json = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|d| d.contains("\"result\"") || d.contains("\"error\""))
        .unwrap_or(body.trim());
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("no JSON-RPC message ({e}): {body}"));
    v["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text: {v}")).to_string()
}
