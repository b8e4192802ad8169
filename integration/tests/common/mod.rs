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

/// Sends a raw request with exactly these headers and body (bytes as given, UTF-8 or not).
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Raw {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), url).body(body.as_ref().to_vec());
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
pub async fn post(url: &str, token: &str, headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Raw {
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

/// The `mcp_audit` records in Envoy's log so far, oldest first.
pub fn audit_records(gw: &Gateway) -> Vec<Value> {
    gw.envoy_log()
        .lines()
        .filter_map(|line| line.split_once("mcp_audit: "))
        .filter_map(|(_, json)| serde_json::from_str(json).ok())
        .collect()
}

/// Whether `done` holds within 5 s, polled every 50 ms: Envoy writes its logs (the audit
/// records among them) when a request ends, and its access log on a flush interval, both of
/// which can come after the client has read its response.
pub async fn eventually(done: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > std::time::Duration::from_secs(5) {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    true
}

/// The audit records once `done` holds for them. Requests are logged as they end, which is
/// not always the order their responses reached the client: wait for every record a test
/// reads, not only for the one it expects last.
pub async fn audit_when(gw: &Gateway, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    assert!(eventually(|| done(&audit_records(gw))).await, "the mcp_audit records never matched:\n{:#?}", audit_records(gw));
    audit_records(gw)
}

/// The first audit record matching `wanted`, once Envoy has written it.
pub async fn wait_audit(gw: &Gateway, wanted: impl Fn(&Value) -> bool) -> Value {
    audit_when(gw, |records| records.iter().any(&wanted)).await.into_iter().find(|r| wanted(r)).expect("found above")
}

/// The audit record at `index` (0 = the first one logged), once Envoy has written it.
pub async fn nth_audit(gw: &Gateway, index: usize) -> Value {
    let nth = || audit_records(gw).into_iter().nth(index);
    assert!(eventually(|| nth().is_some()).await, "no mcp_audit record #{index}:\n{:#?}", audit_records(gw));
    nth().expect("found above")
}

/// The last requests every backend replica received, as `/_debug/last_requests` shows them.
pub async fn backend_last_requests(gw: &Gateway) -> Vec<Value> {
    let mut all = Vec::new();
    for i in 0..3 {
        let requests: Vec<Value> =
            reqwest::get(gw.backend_url(i, "/_debug/last_requests")).await.expect("last requests").json().await.expect("JSON");
        all.extend(requests);
    }
    all
}

/// The values of header `name` (lower case) over the last requests the backends received.
pub async fn backend_header_values(gw: &Gateway, name: &str) -> Vec<String> {
    let mut values = Vec::new();
    for request in backend_last_requests(gw).await {
        for pair in request["headers"].as_array().cloned().unwrap_or_default() {
            if pair[0] == name {
                values.push(pair[1].as_str().unwrap_or_default().to_string());
            }
        }
    }
    values
}

/// The bearer tokens of the last requests every backend replica received.
pub async fn backend_bearer_tokens(gw: &Gateway) -> Vec<String> {
    let values = backend_header_values(gw, "authorization").await;
    values.iter().map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_string()).collect()
}

/// `POST /revoke` on the gateway's admin listener.
pub async fn revoke(gw: &Gateway, order: Value) -> Raw {
    send("POST", &gw.gateway_admin_url("/revoke"), &[("content-type", "application/json")], order.to_string()).await
}

/// The payload of a compact JWT, unverified.
pub fn jwt_payload(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap_or_else(|| panic!("not a JWT: {token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

/// A raw legacy session: `initialize`, `notifications/initialized`, then calls with the handle.
pub struct Legacy {
    pub url: String,
    pub token: String,
    pub handle: String,
}

pub const LEGACY_VERSION: &str = "2025-06-18";

impl Legacy {
    /// Initializes through `url`; panics unless the gateway answers with a session handle.
    pub async fn open(url: &str, token: &str) -> Legacy {
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
        let resp = post(url, token, &[], init).await;
        assert_eq!(resp.status, 200, "initialize: {}", resp.body);
        let handle = resp.header("mcp-session-id").expect("session handle").to_string();
        let legacy = Legacy { url: url.to_string(), token: token.to_string(), handle };
        let note = legacy.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
        assert!(note.status < 300, "initialized: {} {}", note.status, note.body);
        legacy
    }

    /// Sends one message in this session.
    pub async fn send(&self, body: &str) -> Raw {
        post(&self.url, &self.token, &[("mcp-session-id", &self.handle), ("mcp-protocol-version", LEGACY_VERSION)], body).await
    }

    /// Calls a tool; the raw response.
    pub async fn call(&self, tool: &str, args: &str) -> Raw {
        self.send(&format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#)).await
    }

    /// `whoami` as JSON.
    pub async fn whoami(&self) -> Value {
        let resp = self.call("whoami", "{}").await;
        assert_eq!(resp.status, 200, "whoami: {}", resp.body);
        serde_json::from_str(&tool_text(&resp.body)).unwrap()
    }
}

/// A modern `whoami` with a task id, raw.
pub async fn modern_whoami(url: &str, token: &str, task: &str) -> Raw {
    let mut headers = modern_headers("whoami");
    headers.push(("mcp-task-id", task.to_string()));
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post(url, token, &h, &modern_call(1, "whoami", "{}")).await
}

/// The JSON `whoami` returned in a raw response.
pub fn whoami_of(resp: &Raw) -> Value {
    assert_eq!(resp.status, 200, "whoami: {}", resp.body);
    serde_json::from_str(&tool_text(&resp.body)).unwrap()
}

// ---- Audit, signatures and metrics (integration/tests/audit.rs) --------------------------------

/// `(name, value)` pairs as the raw helpers take them, from owned values.
pub fn pairs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// A demo IdP token of `sub` (scope `files:read`) that expired two minutes ago, beyond the
/// gateway's 30 s leeway.
pub fn expired_token(gw: &Gateway, sub: &str) -> String {
    use jwt_simple::prelude::{Duration, EdDSAKeyPairLike};
    let mut claims = integration::idp::TokenSpec::new(sub, "files:read").claims();
    let t = now();
    claims.issued_at = Some(Duration::from_secs(t - 700));
    claims.invalid_before = Some(Duration::from_secs(t - 700));
    claims.expires_at = Some(Duration::from_secs(t - 120));
    gw.keys.idp_key().expect("IdP key").sign(claims).expect("sign")
}

/// The audit records whose `request_id` is `id`, once at least one is written.
pub async fn audit_for_request(gw: &Gateway, id: &str) -> Vec<Value> {
    wait_audit(gw, |r| r["request_id"] == id).await;
    audit_records(gw).into_iter().filter(|r| r["request_id"] == id).collect()
}

/// One server-sent event of a response, with when it arrived.
#[derive(Debug)]
pub struct Event {
    pub at: std::time::Instant,
    pub data: Value,
}

/// Sends a POST and reads its response as it streams, keeping every SSE event whose data is a
/// JSON message (priming events without data are skipped). Panics unless the status is 200.
pub async fn post_events(url: &str, headers: &[(&str, &str)], body: &str) -> Vec<Event> {
    let client = reqwest::Client::new();
    let mut req = client.post(url).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send().await.expect("request");
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.headers());
    let mut events = Vec::new();
    let mut pending = Vec::new();
    while let Some(chunk) = resp.chunk().await.expect("response chunk") {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let raw: Vec<u8> = pending.drain(..end + 2).collect();
            let text = String::from_utf8(raw).expect("UTF-8 event");
            let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
            if data.iter().all(|d| d.is_empty()) {
                continue;
            }
            let data = serde_json::from_str(&data.join("\n")).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {text}"));
            events.push(Event { at: std::time::Instant::now(), data });
        }
    }
    events
}

/// One scrape of Envoy's `/stats/prometheus`: sample values by series (`name` or `name{labels}`).
pub struct Prometheus {
    samples: std::collections::HashMap<String, f64>,
    text: String,
}

impl Prometheus {
    pub fn scrape(gw: &Gateway) -> Prometheus {
        let text = gw.admin_get("/stats/prometheus");
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(series, value)| Some((series.trim_end_matches("{}").to_string(), value.parse().ok()?)))
            .collect();
        Prometheus { samples, text }
    }

    /// The Prometheus name Envoy gives a proxy-wasm metric: its `wasmcustom` namespace is
    /// stripped, with no `envoy_` prefix, and every character outside `[A-Za-z0-9_]` becomes `_`.
    pub fn name(stat: &str) -> String {
        stat.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
    }

    /// The value of the metric `stat` (dotted proxy-wasm name), or `None` when Envoy has none.
    pub fn get(&self, stat: &str) -> Option<f64> {
        self.samples.get(&Self::name(stat)).copied()
    }

    /// The filter's own samples (named `mcp_gateway_*`, unlike Envoy's `envoy_*` stats, which
    /// carry `mcp_gateway` only as a label), for failure messages.
    pub fn ours(&self) -> String {
        self.text.lines().filter(|l| l.starts_with("mcp_gateway")).collect::<Vec<_>>().join("\n")
    }
}
