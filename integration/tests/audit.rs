//! Observing without inspecting (CONTRACT items 7, 8 and 9), through a real Envoy: signed results
//! and notifications verify after the trip, request bodies arrive byte for byte, every request
//! leaves exactly one redacted audit line, a delegation chain can be rebuilt from those lines
//! alone, no secret reaches Envoy's log, and the metrics move with the traffic.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use integration::backend::{debug_last_bodies, signing};
use integration::client::{Era, McpClient};
use integration::harness::{Gateway, Options};
use integration::idp::{random_id, TokenSpec};
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};

const EIGHT_MIB: usize = 8 * 1024 * 1024;

/// Calls a `signed*` tool through `client`: the two texts of its result, (text, signature).
async fn signed_call(client: &McpClient, tool: &str, args: Value) -> (String, String) {
    let Value::Object(args) = args else { panic!("arguments must be an object") };
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
    let result = client.service().call_tool(params).await.unwrap_or_else(|e| panic!("{tool}: {e}"));
    let texts: Vec<String> = result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect();
    assert_ne!(result.is_error, Some(true), "{tool} failed: {:?}", texts.first().map(|t| t.chars().take(300).collect::<String>()));
    let count = texts.len();
    <[String; 2]>::try_from(texts).map(|[text, signature]| (text, signature)).unwrap_or_else(|_| panic!("{tool}: {count} texts, not 2"))
}

/// The scopes of a space-separated scope string, as a set.
fn scope_set(scope: &Value) -> BTreeSet<String> {
    scope.as_str().unwrap_or_else(|| panic!("scope is not a string: {scope}")).split(' ').filter(|s| !s.is_empty()).map(String::from).collect()
}

// ---- Results and requests pass through untouched (CONTRACT item 7) ----------------------------

#[tokio::test(flavor = "multi_thread")]
async fn signed_non_ascii_result_verifies_after_the_gateway_in_both_eras() {
    // Given backends that sign the exact bytes of what they return
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "");
    let text = "héllo wörld ✓ 日本語 \u{1F600} \"quoted\" \\ \u{0} tab\t crlf\r\n";
    for era in [Era::Modern, Era::Legacy2025_06_18] {
        // When a client calls `signed` through the gateway
        let client = McpClient::connect(&gw.mcp_url("files"), era, Some(&token), &[]).await.unwrap();
        let (got, signature) = signed_call(&client, "signed", json!({ "text": text })).await;
        client.close().await;

        // Then the text arrives intact and the signature over it verifies with the demo key
        assert_eq!(got, text, "{era:?}");
        signing::verify(&got, &signature).unwrap_or_else(|e| panic!("{era:?}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_eight_mib_result_verifies_after_the_gateway_in_both_eras() {
    // Given a result twice Envoy's per-connection buffer (4 MiB): it only gets through if
    // nothing on the way buffers the response body
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "");
    for era in [Era::Modern, Era::Legacy2025_06_18] {
        // When a client asks for an 8 MiB signed text through the gateway
        let client = McpClient::connect(&gw.mcp_url("reports"), era, Some(&token), &[]).await.unwrap();
        let (text, signature) = signed_call(&client, "signed_big", json!({ "bytes": EIGHT_MIB })).await;
        client.close().await;

        // Then all of it arrives and the signature over its bytes verifies
        assert!(text.len() + 3 >= EIGHT_MIB && text.len() <= EIGHT_MIB, "{era:?}: {} bytes arrived", text.len());
        signing::verify(&text, &signature).unwrap_or_else(|e| panic!("{era:?}: {e}"));
    }
}

/// Checks a `signed_stream` response: `count` signed progress notifications, one by one, then
/// the signed result.
fn assert_signed_stream(events: &[Event], text: &str, count: usize, era: &str) {
    let progress: Vec<&Event> = events.iter().filter(|e| e.data["method"] == "notifications/progress").collect();
    assert_eq!(progress.len(), count, "{era}: {events:#?}");
    for (i, event) in progress.iter().enumerate() {
        let message = event.data["params"]["message"].as_str().unwrap_or_else(|| panic!("{era}: no message: {event:?}"));
        let (signature, line) = message.split_once(' ').unwrap_or_else(|| panic!("{era}: not '<signature> <text>': {message}"));
        assert_eq!(line, format!("{text} #{}", i + 1), "{era}");
        signing::verify(line, signature).unwrap_or_else(|e| panic!("{era}: notification {}: {e}", i + 1));
    }
    let result = events.iter().find(|e| e.data.get("result").is_some()).unwrap_or_else(|| panic!("{era}: no result: {events:#?}"));
    let content = &result.data["result"]["content"];
    let (got, signature) = (content[0]["text"].as_str(), content[1]["text"].as_str());
    assert_eq!(got, Some(text), "{era}: {result:?}");
    signing::verify(text, signature.unwrap_or_default()).unwrap_or_else(|e| panic!("{era}: result: {e}"));
    // The backend sends a notification every 500 ms and the result 500 ms after the last: a
    // buffering proxy would hand them all over at the end, together with the result.
    let lead = result.at.duration_since(progress[0].at);
    assert!(lead >= Duration::from_millis(1000), "{era}: the first notification came only {lead:?} before the result");
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_notifications_stream_through_one_by_one_before_the_result_in_both_eras() {
    // Given a tool that sends three signed progress notifications on its response stream
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "");
    let url = gw.mcp_url("files");
    let auth = format!("Bearer {token}");
    let base = [("content-type", "application/json"), ("accept", "application/json, text/event-stream"), ("authorization", auth.as_str())];

    // When a modern client calls it through the gateway
    let mut modern: Vec<(&str, &str)> = base.to_vec();
    let modern_mcp = modern_headers("signed_stream");
    modern.extend(pairs(&modern_mcp));
    let body = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"signed_stream","arguments":{"text":"tick ✓","count":3},"_meta":{"progressToken":"p-modern","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"raw-test","version":"1"}}}}"#;
    let events = post_events(&url, &modern, body).await;

    // Then every notification and the result verify, and they arrived as they were sent
    assert_signed_stream(&events, "tick ✓", 3, "modern");

    // And the same in a legacy session
    let session = Legacy::open(&url, &token).await;
    let mut legacy: Vec<(&str, &str)> = base.to_vec();
    legacy.extend([("mcp-session-id", session.handle.as_str()), ("mcp-protocol-version", LEGACY_VERSION)]);
    let body = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"signed_stream","arguments":{"text":"tock ✓","count":3},"_meta":{"progressToken":"p-legacy"}}}"#;
    assert_signed_stream(&post_events(&url, &legacy, body).await, "tock ✓", 3, "legacy");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_reach_the_backend_byte_for_byte_in_both_eras() {
    // Given bodies with odd whitespace, unusual key order and escapes a re-serializer would change
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "");
    let url = gw.mcp_url("reports");
    let reports = gw.backend_url(2, "");
    let modern = concat!(
        "{ \"params\" :{\"_meta\":{\"io.modelcontextprotocol/clientInfo\":{\"version\":\"1\",\"name\":\"raw\"},",
        "\"io.modelcontextprotocol/clientCapabilities\":{ },\"io.modelcontextprotocol/protocolVersion\" : \"2026-07-28\"},\r\n",
        "\t\"arguments\" : {\"text\":\"caf\\u00e9 \\/ é ✓\"},\"name\":\"echo\"},\n  \"method\":\"tools/call\" ,\"id\":  17,",
        "\"jsonrpc\" : \"2.0\"   }\n\n"
    );
    let legacy = "\n{\"params\":{ \"arguments\":{\"text\":\"le\\u0067acy\\t✓\"} , \"name\" : \"echo\" },\"id\":\"b-1\",\t\"method\":\"tools/call\",\"jsonrpc\":\"2.0\"}\r\n";

    // When they are sent through the gateway, modern and in a legacy session
    let resp = post(&url, &token, &pairs(&modern_headers("echo")), modern).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(tool_text(&resp.body), "café / é ✓");
    let modern_arrived = debug_last_bodies(&reports).await.expect("last bodies").pop();
    let session = Legacy::open(&url, &token).await;
    let resp = session.send(legacy).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(tool_text(&resp.body), "legacy\t✓");
    let legacy_arrived = debug_last_bodies(&reports).await.expect("last bodies").pop();

    // Then the backend received exactly the bytes the client sent
    assert_eq!(modern_arrived.as_deref().map(String::from_utf8_lossy), Some(modern.into()), "modern");
    assert_eq!(legacy_arrived.as_deref().map(String::from_utf8_lossy), Some(legacy.into()), "legacy");
}

// ---- Audit (CONTRACT item 8) ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn secret_markers_tokens_and_session_ids_never_reach_envoys_log() {
    // Given secrets in a token claim, in tool arguments, in tool results and in session ids
    let gw = Gateway::start(Options::default());
    let marker = |what: &str| format!("SECRET-{what}-{}", random_id());
    let (in_claim, in_args, in_path, in_written, in_refused, in_unparsed) =
        (marker("claim"), marker("args"), marker("path"), marker("written"), marker("refused"), marker("unparsed"));
    let claim = Some(json!({ "demo_secret": in_claim }));
    let user = TokenSpec { extra: claim.clone(), ..TokenSpec::new("alice", "files:read files:write") }.sign(&gw.keys).unwrap();
    let reader = TokenSpec { extra: claim, ..TokenSpec::new("alice", "files:read") }.sign(&gw.keys).unwrap();
    let url = gw.mcp_url("files");

    // When they travel through the gateway: modern calls (written text comes back only as a
    // result, and so does the signature) ...
    let client = McpClient::connect(&url, Era::Modern, Some(&user), &[("Mcp-Task-Id", "task-secrets")]).await.unwrap();
    assert_eq!(client.call_tool("echo", json!({ "text": in_args })).await.unwrap(), in_args);
    client.call_tool("write_file", json!({ "path": in_path, "text": in_written })).await.unwrap();
    assert_eq!(client.call_tool("read_file", json!({ "path": in_path })).await.unwrap(), in_written);
    let (_, in_result) = signed_call(&client, "signed", json!({ "text": in_path })).await;
    client.close().await;
    // ... a legacy session, whose upstream id only the backend and its results know ...
    let session = Legacy::open(&url, &user).await;
    let upstream_session = session.whoami().await["session"].as_str().expect("upstream session id").to_string();
    assert_ne!(upstream_session, session.handle, "the client must see a handle, not the upstream id");
    assert_eq!(tool_text(&session.call("echo", &json!({ "text": in_args }).to_string()).await.body), in_args);
    // ... and refused requests: one for its scope, one that is not even JSON
    let refused = modern_call(1, "write_file", &json!({ "path": "p", "text": in_refused }).to_string());
    assert_eq!(post(&url, &reader, &pairs(&modern_headers("write_file")), &refused).await.status, 403);
    let unparsed = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{in_unparsed}""#);
    assert_eq!(post(&url, &user, &[], &unparsed).await.status, 400);
    wait_audit(&gw, |r| r["reason"] == "parse_error").await;

    // Then none of them appears anywhere in Envoy's output (application and access log) ...
    let log = gw.envoy_log();
    assert!(log.contains("mcp_audit: ") && log.contains("access: "), "no audit and access lines to search:\n{log}");
    let mut secrets = vec![
        ("token claim", in_claim),
        ("tool argument", in_args),
        ("path argument", in_path),
        ("written text, returned as a result", in_written),
        ("argument of a refused call", in_refused),
        ("argument of an unparsable body", in_unparsed),
        ("signature, only ever a result", in_result),
        ("upstream session id", upstream_session),
        ("gateway session handle", session.handle.clone()),
    ];
    // ... nor any part of a token but its generic header: the user's or one the gateway minted
    for token in [user.clone(), reader.clone()] {
        secrets.extend(token.split('.').skip(1).map(|part| ("user token", part.to_string())));
    }
    let minted = backend_bearer_tokens(&gw).await;
    assert!(!minted.is_empty(), "the backends recorded no token");
    for token in minted {
        secrets.extend(token.split('.').skip(1).map(|part| ("minted token", part.to_string())));
    }
    for (what, secret) in &secrets {
        assert!(!log.contains(secret.as_str()), "{what} {secret:?} appears in Envoy's log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hashed_subject_mode_logs_a_stable_keyed_hash_and_never_the_subject() {
    // Given a gateway configured to hash subjects in its audit lines, and two users
    let mut options = Options::default();
    options.filter_config["audit"] = json!({ "subject": "hash" });
    let gw = Gateway::start(options);
    let (ann, bob) = (format!("ann-{}", random_id()), format!("bob-{}", random_id()));
    let url = gw.mcp_url("files");

    // When ann calls twice and bob once, each in a task of its own
    let mut subs = Vec::new();
    for (who, task) in [(&ann, "task-ann-1"), (&ann, "task-ann-2"), (&bob, "task-bob-1")] {
        let me = whoami_of(&modern_whoami(&url, &gw.token(who, ""), task).await);
        // Hashing is for the log only: the backend still learns who the subject is.
        assert_eq!(me["claims"]["sub"], who.as_str(), "{me}");
        subs.push(wait_audit(&gw, |r| r["task"] == task).await["sub"].clone());
    }
    let [ann_1, ann_2, bob_1] = <[Value; 3]>::try_from(subs).expect("three lines");

    // Then the subject is a stable pseudonym: the same for both of ann's calls, another for bob
    assert!(ann_1.as_str().is_some_and(|s| !s.is_empty()), "{ann_1}");
    assert_eq!(ann_1, ann_2);
    assert_ne!(ann_1, bob_1);
    // And neither name appears anywhere in Envoy's log
    let log = gw.envoy_log();
    assert!(!log.contains(&ann) && !log.contains(&bob), "a subject appears in Envoy's log:\n{log}");
}

/// One request that must leave exactly one audit line with this decision, reason and status.
struct Path {
    /// The audit `reason`; empty for the allowed request.
    reason: &'static str,
    status: u16,
    backend: &'static str,
    headers: Vec<(String, String)>,
    body: String,
}

impl Path {
    /// A JSON POST to `backend` at the gateway, with `token` if any; `headers` add or replace.
    fn new(reason: &'static str, status: u16, backend: &'static str, token: Option<&str>, headers: &[(&str, &str)], body: &str) -> Path {
        let mut all: Vec<(String, String)> =
            vec![("content-type".into(), "application/json".into()), ("accept".into(), "application/json, text/event-stream".into())];
        if let Some(token) = token {
            all.push(("authorization".into(), format!("Bearer {token}")));
        }
        for (name, value) in headers {
            all.retain(|(n, _)| n != name);
            all.push((name.to_string(), value.to_string()));
        }
        Path { reason, status, backend, headers: all, body: body.to_string() }
    }

    fn decision(&self) -> &'static str {
        if self.reason.is_empty() {
            "allow"
        } else {
            "deny"
        }
    }

    /// Sends it with a unique `x-request-id`; that id.
    async fn send(&self, gw: &Gateway) -> String {
        let id = format!("audit-{}-{}", self.decision(), random_id());
        let mut headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        headers.push(("x-request-id", id.as_str()));
        let resp = send("POST", &gw.mcp_url(self.backend), &headers, &self.body).await;
        assert_eq!(resp.status, self.status, "{:?}: {}", self.reason, resp.body);
        id
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decision_path_leaves_exactly_one_audit_line_with_its_decision_and_reason() {
    // Given tasks that expire after 2 idle seconds, a task about to, a token the gateway minted
    // for files (reports may not be called with it) and a legacy session of alice
    let mut options = Options::default();
    options.filter_config["tasks"] = json!({ "idle_secs": 2, "absolute_secs": 600 });
    let gw = Gateway::start(options);
    let (alice, mallory) = (gw.token("alice", "files:read"), gw.token("mallory", "files:read"));
    let files = gw.mcp_url("files");
    let idle_task = format!("audit-idle-{}", random_id());
    whoami_of(&modern_whoami(&files, &alice, &idle_task).await);
    let idle_since = Instant::now();
    let minted = backend_bearer_tokens(&gw).await;
    let files_token = minted.into_iter().find(|t| jwt_payload(t)["aud"] == "files").expect("a token minted for files");
    let session = Legacy::open(&files, &alice).await;

    let echo = modern_call(7, "echo", r#"{"text":"x"}"#);
    let echo_headers = modern_headers("echo");
    let echo_h = pairs(&echo_headers);
    let mismatch: Vec<(&str, &str)> = echo_h.iter().copied().chain([("mcp-method", "tools/list")]).collect();
    let write_headers = modern_headers("write_file");
    let whoami_headers = modern_headers("whoami");
    let legacy_whoami = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;
    let in_session = |handle: &str| [("mcp-session-id", handle.to_string()), ("mcp-protocol-version", LEGACY_VERSION.to_string())];
    let forged = in_session("dGhpcyBpcyBub3QgYSBoYW5kbGU");
    let stolen = in_session(&session.handle);
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stolen: Vec<(&str, &str)> = stolen.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let too_large = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#, "a".repeat(1_100_000));
    let paths = [
        Path::new("", 200, "files", Some(&alice), &echo_h, &echo),
        Path::new("token_missing", 401, "files", None, &echo_h, &echo),
        Path::new("token_expired", 401, "files", Some(&expired_token(&gw, "alice")), &echo_h, &echo),
        Path::new("scope_missing", 403, "files", Some(&alice), &pairs(&write_headers), &modern_call(8, "write_file", r#"{"path":"p","text":"x"}"#)),
        Path::new("delegation_not_allowed", 403, "reports", Some(&files_token), &pairs(&whoami_headers), &modern_call(9, "whoami", "{}")),
        Path::new("parse_error", 400, "files", Some(&alice), &[], "{\"jsonrpc\":"),
        Path::new("invalid_request", 400, "files", Some(&alice), &[], r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
        Path::new("header_mismatch", 400, "files", Some(&alice), &mismatch, &echo),
        Path::new("body_too_large", 413, "files", Some(&alice), &[], &too_large),
        Path::new("unsupported_media_type", 415, "files", Some(&alice), &[("content-type", "text/plain")], "{}"),
        Path::new("session_invalid", 404, "files", Some(&alice), &forged, legacy_whoami),
        Path::new("session_hijack", 404, "files", Some(&mallory), &stolen, legacy_whoami),
        Path::new("unknown_backend", 404, "nope", Some(&alice), &echo_h, &echo),
    ];

    // When each is sent once, with a unique x-request-id, and then the idle task is used again
    let mut sent = Vec::new();
    for path in &paths {
        sent.push((path, path.send(&gw).await));
    }
    tokio::time::sleep((idle_since + Duration::from_millis(3500)).saturating_duration_since(Instant::now())).await;
    let mut task_headers = pairs(&whoami_headers);
    task_headers.push(("mcp-task-id", idle_task.as_str()));
    let expired = Path::new("task_expired", 403, "files", Some(&alice), &task_headers, &modern_call(1, "whoami", "{}"));
    sent.push((&expired, expired.send(&gw).await));

    // Then each left exactly one audit line, carrying its request id, decision, reason and status
    for (_, id) in &sent {
        audit_for_request(&gw, id).await;
    }
    // A duplicate would be written with the first, when the request ends: this is ample.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records = audit_records(&gw);
    for (path, id) in &sent {
        let lines: Vec<&Value> = records.iter().filter(|r| r["request_id"] == id.as_str()).collect();
        assert_eq!(lines.len(), 1, "{:?}: {lines:#?}", path.reason);
        let line = lines[0];
        let got = (line["decision"].as_str(), line["reason"].as_str(), line["status"].as_u64(), line["backend"].as_str());
        // A path that names no backend is audited with none.
        let backend = if path.reason == "unknown_backend" { "" } else { path.backend };
        assert_eq!(got, (Some(path.decision()), Some(path.reason), Some(u64::from(path.status)), Some(backend)), "{line}");
    }
}

/// The tokens of a delegation chain, from the user's down to `leaf`'s, rebuilt by following
/// `parent_jti` to the lines whose `jti` it names: for each token, the lines that presented a
/// token minted as it (`jti`), outermost (the user's call) first.
fn lineage<'a>(lines: &'a [Value], leaf: &'a Value) -> Vec<Vec<&'a Value>> {
    let mut chain = vec![vec![leaf]];
    let mut parent = &leaf["parent_jti"];
    loop {
        let hop: Vec<&Value> = lines.iter().filter(|l| l["jti"] == *parent && l["task"] == leaf["task"]).collect();
        if hop.is_empty() {
            break;
        }
        parent = &hop[0]["parent_jti"];
        assert!(hop.iter().all(|l| l["parent_jti"] == *parent), "one jti, two parents: {hop:#?}");
        assert!(chain.len() < 10, "a parent_jti cycle: {chain:#?}");
        chain.insert(0, hop);
    }
    chain
}

#[tokio::test(flavor = "multi_thread")]
async fn summarize_chain_is_rebuilt_from_audit_lines_alone() {
    // Given a user in one task, calling reports/summarize, which calls files through the gateway
    let gw = Gateway::start(Options::default());
    let user = gw.token("alice", "files:read reports:write");
    let task = format!("audit-chain-{}", random_id());
    let client = McpClient::connect(&gw.mcp_url("reports"), Era::Modern, Some(&user), &[("Mcp-Task-Id", &task)]).await.unwrap();
    client.call_tool("summarize", json!({ "path": "q3.txt" })).await.expect("summarize");
    client.close().await;

    // When an operator reads only the audit lines of that task (each written as its request
    // ends, which can be just after the client has its response)
    let leaf = wait_audit(&gw, |r| r["task"] == task.as_str() && r["name"] == "read_file").await;
    for (backend, name) in [("files", "whoami"), ("reports", "summarize")] {
        wait_audit(&gw, |r| r["task"] == task.as_str() && r["backend"] == backend && r["name"] == name).await;
    }
    let lines: Vec<Value> = audit_records(&gw).into_iter().filter(|r| r["task"] == task.as_str()).collect();
    let chain = lineage(&lines, &leaf);

    // Then they join into user → reports → files: the user's token presented to reports ...
    assert_eq!(chain.len(), 2, "{chain:#?}");
    let user_jti = jwt_payload(&user)["jti"].clone();
    let reports = chain[0].iter().find(|l| l["name"] == "summarize").unwrap_or_else(|| panic!("no summarize line: {chain:#?}"));
    assert_eq!(reports["parent_jti"], user_jti, "{reports}");
    let facts = |l: &Value| (l["decision"].clone(), l["sub"].clone(), l["backend"].clone(), l["aud"].clone(), l["depth"].clone(), l["act"].clone());
    assert_eq!(facts(reports), facts(&json!({"decision": "allow", "sub": "alice", "backend": "reports", "aud": "reports", "depth": 1, "act": ["mcp-gateway"]})));
    assert_eq!(scope_set(&reports["scope"]), scope_set(&json!("files:read reports:write")), "{reports}");
    // ... and the token minted for reports presented by reports to files, one level deeper
    let files = chain[1][0];
    assert_eq!(files["method"], "tools/call", "{files}");
    assert_eq!(facts(files), facts(&json!({"decision": "allow", "sub": "alice", "backend": "files", "aud": "files", "depth": 2, "act": ["reports", "mcp-gateway"]})));
    assert_eq!(files["scope"], "files:read", "{files}");
    assert!(files["jti"].as_str().is_some_and(|j| !j.is_empty()) && files["jti"] != reports["jti"], "{files}");
    // And every files line of the task hangs off that reports token
    let at_files: Vec<&Value> = lines.iter().filter(|l| l["backend"] == "files").collect();
    assert!(at_files.len() >= 2, "read_file and whoami: {at_files:#?}");
    assert!(at_files.iter().all(|l| l["parent_jti"] == reports["jti"] && l["depth"] == 2), "{at_files:#?}");
}

// ---- Metrics (CONTRACT item 9) ------------------------------------------------------------------

/// The value of a metric in `after` minus `before` (absent counts as 0).
fn moved(before: &Prometheus, after: &Prometheus, stat: &str) -> f64 {
    after.get(stat).unwrap_or(0.0) - before.get(stat).unwrap_or(0.0)
}

/// How far each of `expected`'s metrics moved since `before`, once they match `expected` or
/// 10 s have passed: the filter flushes cache and mint counts on its 200 ms tick, and Envoy
/// publishes histograms at its stats flush (every 5 s). The last scrape comes with it.
async fn settled(gw: &Gateway, before: &Prometheus, expected: &[(&'static str, f64)]) -> (Vec<(&'static str, f64)>, Prometheus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = Prometheus::scrape(gw);
        let got: Vec<(&'static str, f64)> = expected.iter().map(|(stat, _)| (*stat, moved(before, &now, stat))).collect();
        if got == expected || Instant::now() > deadline {
            return (got, now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_as_a_scripted_sequence_of_calls_predicts() {
    // Given a fresh gateway (one worker, so one verify cache and one mint cache) that has its keys
    let gw = Gateway::start(Options::default());
    let start = Prometheus::scrape(&gw);
    assert!(start.get("mcp_gateway.jwks.refresh_ok").unwrap_or(0.0) >= 1.0, "no JWKS refresh counted:\n{}", start.ours());
    assert_eq!(start.get("mcp_gateway.jwks.refresh_failed").unwrap_or(0.0), 0.0, "{}", start.ours());
    let token = gw.token("alice", "files:read");
    let url = gw.mcp_url("files");
    let mut echo = modern_headers("echo");
    echo.push(("mcp-task-id", "task-metrics".to_string()));
    let mut write = modern_headers("write_file");
    write.push(("mcp-task-id", "task-metrics".to_string()));

    // When: three allowed calls with one token in one task, then a call that token may not
    // make, then one without a token
    let before = Prometheus::scrape(&gw);
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = format!("metrics-allow-{i}");
        let mut h = pairs(&echo);
        h.push(("x-request-id", id.as_str()));
        assert_eq!(post(&url, &token, &h, &modern_call(i, "echo", r#"{"text":"x"}"#)).await.status, 200);
        ids.push(id);
    }
    let mut h = pairs(&write);
    h.push(("x-request-id", "metrics-scope"));
    assert_eq!(post(&url, &token, &h, &modern_call(3, "write_file", r#"{"path":"p","text":"x"}"#)).await.status, 403);
    let unauthenticated = [("content-type", "application/json"), ("x-request-id", "metrics-no-token")];
    let mut h: Vec<(&str, &str)> = unauthenticated.to_vec();
    h.extend(pairs(&echo));
    assert_eq!(send("POST", &url, &h, &modern_call(4, "echo", r#"{"text":"x"}"#)).await.status, 401);
    ids.extend(["metrics-scope".to_string(), "metrics-no-token".to_string()]);
    for id in &ids {
        audit_for_request(&gw, id).await;
    }

    // Then the counters moved by exactly what happened. The unauthenticated call counts under
    // tools/call too: refused before its body is read, it is labelled by its declared Mcp-Method.
    let expected = [
        ("mcp_gateway.requests.allow", 3.0),
        ("mcp_gateway.requests.deny", 2.0),
        ("mcp_gateway.method.tools_call", 5.0),
        ("mcp_gateway.denied.scope_missing", 1.0),
        ("mcp_gateway.denied.token_missing", 1.0),
        // One token minted, then reused for the same token and task.
        ("mcp_gateway.tokens_minted", 1.0),
        ("mcp_gateway.mint_cache.miss", 1.0),
        ("mcp_gateway.mint_cache.hit", 2.0),
        // One token verified, then found in the cache three times.
        ("mcp_gateway.verify_cache.miss", 1.0),
        ("mcp_gateway.verify_cache.hit", 3.0),
        ("mcp_gateway.sessions.opened", 0.0),
        // The delegation depth of the three allowed calls, 1 each.
        ("mcp_gateway.delegation_depth.1", 3.0),
        ("mcp_gateway.delegation_depth.2", 0.0),
    ];
    let (got, flushed) = settled(&gw, &before, &expected).await;
    assert_eq!(got, expected, "\n{}", flushed.ours());

    // And a legacy initialize opens one session
    let before = Prometheus::scrape(&gw);
    Legacy::open(&url, &token).await;
    let opened = wait_audit(&gw, |r| r["method"] == "initialize").await;
    assert_eq!(opened["decision"], "allow", "{opened}");
    let expected = [("mcp_gateway.sessions.opened", 1.0), ("mcp_gateway.method.initialize", 1.0)];
    let (got, after) = settled(&gw, &before, &expected).await;
    assert_eq!(got, expected, "\n{}", after.ours());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_abandoned_before_its_body_ends_is_audited_as_an_incomplete_denial() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    let id = format!("audit-incomplete-{}", random_id());
    let before = backend_requests(&gw).await;
    // Headers announce 100 bytes; 10 arrive, then the client goes away.
    let url = gw.mcp_url("files");
    let authority = url.trim_start_matches("http://").split('/').next().expect("authority").to_string();
    let mut socket = tokio::net::TcpStream::connect(&authority).await.expect("connect to the gateway");
    let head = format!(
        "POST /mcp/files HTTP/1.1\r\nhost: {authority}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\nx-request-id: {id}\r\ncontent-length: 100\r\n\r\n{{\"jsonrpc\""
    );
    socket.write_all(head.as_bytes()).await.expect("send");
    socket.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(socket);
    let records = audit_for_request(&gw, &id).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!((r["decision"].as_str(), r["reason"].as_str(), r["backend"].as_str(), r["sub"].as_str()), (Some("deny"), Some("incomplete"), Some("files"), Some("alice")), "{r}");
    assert_eq!(r["jti"], "", "nothing was minted: {r}");
    assert_eq!(backend_requests(&gw).await, before, "nothing reached the backend");
}

/// Sends `n` whoami calls, each with its own request id, and returns the ids.
async fn tagged_calls(gw: &Gateway, n: usize) -> Vec<String> {
    let token = gw.token("alice", "files:read");
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("sink-{i}-{}", random_id());
        let mut headers = modern_headers("whoami");
        headers.push(("x-request-id", id.clone()));
        let resp = post(&gw.mcp_url("files"), &token, &pairs(&headers), &modern_call(1, "whoami", "{}")).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        ids.push(id);
    }
    ids
}

/// The log lines with an audit record for `id`, split into Envoy application-log lines (the
/// `[wasm]` logger) and access-log lines.
fn audit_lines_for(gw: &Gateway, id: &str) -> (usize, usize) {
    let log = gw.envoy_log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("mcp_audit: ") && l.contains(id)).collect();
    let application = lines.iter().filter(|l| l.contains("[wasm]")).count();
    (application, lines.len() - application)
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_sink_writes_one_line_per_mcp_request_and_none_for_other_requests() {
    let gw = Gateway::start(Options::default());
    let ids = tagged_calls(&gw, 5).await;
    let jwks_lines = || gw.envoy_log().matches("\"GET /.well-known/jwks.json\" 200").count();
    let before = jwks_lines();
    assert_eq!(send("GET", &gw.url("/.well-known/jwks.json"), &[], "").await.status, 200);
    for id in &ids {
        assert_eq!(audit_for_request(&gw, id).await.len(), 1, "{id}");
        assert_eq!(audit_lines_for(&gw, id), (0, 1), "{id}: the access log writes it, the filter does not log it");
    }
    // The gateway's own JWKS is no MCP request: the access log's filter skips it.
    assert!(eventually(|| jwks_lines() > before).await, "no access line for the JWKS request");
    assert!(!gw.envoy_log().contains("mcp_audit: -"), "{}", gw.envoy_log());
    assert_eq!(gw.envoy_log().lines().filter(|l| l.contains("mcp_audit: ")).count(), audit_records(&gw).len());
}

#[tokio::test(flavor = "multi_thread")]
async fn log_sink_writes_each_record_through_envoys_application_log() {
    let mut options = Options::default();
    options.filter_config["audit"] = json!({"sink": "log"});
    let gw = Gateway::start(options);
    let ids = tagged_calls(&gw, 3).await;
    for id in &ids {
        let records = audit_for_request(&gw, id).await;
        assert_eq!(records[0]["decision"], "allow");
        // The demo listener also has the audit access log: each record shows once in each.
        eventually(|| audit_lines_for(&gw, id) == (1, 1)).await;
        assert_eq!(audit_lines_for(&gw, id), (1, 1), "{id}");
    }
}
