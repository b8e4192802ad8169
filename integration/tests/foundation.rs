//! Foundation: the filter sees MCP traffic of both eras at the envelope level, through a real
//! Envoy, in front of real rmcp backends driven by real rmcp clients.

mod common;

use common::*;
use integration::client::{Era, McpClient};
use integration::harness::{envoy_validate, root, Gateway, Options};
use serde_json::{json, Value};

fn whoami(text: &str) -> Value {
    serde_json::from_str(text).expect("whoami JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn modern_echo_is_byte_exact_including_non_ascii_and_256_kib() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    let client = McpClient::connect(&gw.mcp_url("files"), Era::Modern, Some(&token), &[("Mcp-Task-Id", "task-echo")]).await.unwrap();
    for text in ["héllo wörld ✓ 日本語 \u{1F600}", &"x".repeat(256 * 1024)] {
        let got = client.call_tool("echo", json!({ "text": text })).await.unwrap();
        assert_eq!(got.as_bytes(), text.as_bytes());
    }
    let me = whoami(&client.call_tool("whoami", json!({})).await.unwrap());
    assert_eq!(me["headers"]["mcp-method"], "tools/call");
    assert_eq!(me["headers"]["mcp-name"], "whoami");
    assert_eq!(me["headers"]["x-mcp-affinity"].as_str().map(str::len), Some(22), "the task is bound: {me}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_session_works_and_gets_method_and_name_headers_from_the_body() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    let client = McpClient::connect(&gw.mcp_url("files"), Era::Legacy2025_06_18, Some(&token), &[]).await.unwrap();
    assert!(client.session_id().is_some());
    assert_eq!(client.call_tool("echo", json!({"text": "legacy ✓"})).await.unwrap(), "legacy ✓");
    let me = whoami(&client.call_tool("whoami", json!({})).await.unwrap());
    // The rmcp legacy client sends neither header: the filter set them from the checked body.
    assert_eq!(me["headers"]["mcp-method"], "tools/call");
    assert_eq!(me["headers"]["mcp-name"], "whoami");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_listen_notification_arrives_while_the_stream_is_open() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "");
    let client = McpClient::connect(&gw.mcp_url("files"), Era::Modern, Some(&token), &[]).await.unwrap();
    let mut sub = client.listen_tools_changed().await.unwrap();
    // The backend sends the notification ~2 s after the stream opens and keeps it open: a
    // buffering filter would hold it until the stream ends, and this would time out.
    let next = tokio::time::timeout(std::time::Duration::from_secs(8), sub.next()).await;
    assert!(
        matches!(next, Ok(Ok(Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))))),
        "no list_changed notification while the stream was open: {next:?}"
    );
    client.close().await;
}

/// One malformed request: what is sent and what must come back.
struct Case {
    what: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    status: u16,
    code: Option<i64>,
    id: Value,
}

fn cases() -> Vec<Case> {
    let ok = modern_call(7, "echo", r#"{"text":"x"}"#);
    let with = |over: &[(&'static str, &str)]| {
        let mut h = modern_headers("echo");
        for (k, v) in over {
            h.retain(|(n, _)| n != k);
            if !v.is_empty() {
                h.push((k, v.to_string()));
            }
        }
        h
    };
    let c = |what, headers, body: &str, status, code, id| Case { what, headers, body: body.to_string(), status, code, id };
    vec![
        c("malformed JSON", vec![], "{\"jsonrpc\":", 400, Some(-32700), Value::Null),
        c("batch", vec![], r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, 400, Some(-32600), Value::Null),
        c("duplicate method", vec![], r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","method":"tools/call","params":{"name":"echo"}}"#, 400, Some(-32600), Value::Null),
        c("method not a string", vec![], r#"{"jsonrpc":"2.0","id":3,"method":5}"#, 400, Some(-32600), json!(3)),
        c("Mcp-Method differs", with(&[("mcp-method", "tools/list")]), &ok, 400, Some(-32020), json!(7)),
        c("Mcp-Name differs", with(&[("mcp-name", "whoami")]), &ok, 400, Some(-32020), json!(7)),
        c("base64 Mcp-Name differs", with(&[("mcp-name", "=?base64?d2hvYW1p?=")]), &ok, 400, Some(-32020), json!(7)),
        c("MCP-Protocol-Version differs", with(&[("mcp-protocol-version", "2026-09-01")]), &ok, 400, Some(-32020), json!(7)),
        c("modern without Mcp-Name", with(&[("mcp-name", "")]), &ok, 400, Some(-32020), json!(7)),
        c("modern without Mcp-Method", with(&[("mcp-method", "")]), &ok, 400, Some(-32020), json!(7)),
        c("legacy header disagrees", vec![("mcp-method", "tools/list".into())], r#"{"jsonrpc":"2.0","id":"s","method":"tools/call","params":{"name":"echo"}}"#, 400, Some(-32020), json!("s")),
        c("too large", vec![], &format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#, "a".repeat(1_100_000)), 413, Some(-32600), Value::Null),
        c("bad task id", vec![("mcp-task-id", "no spaces allowed".into())], &ok, 400, Some(-32600), Value::Null),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_contract_errors_and_nothing_reaches_the_backend() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    let url = gw.mcp_url("files");
    let before = backend_requests(&gw).await;
    for case in cases() {
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = post(&url, &token, &headers, &case.body).await;
        assert_eq!(resp.status, case.status, "{}: {}", case.what, resp.body);
        if let Some(code) = case.code {
            assert_eq!(resp.rpc_code(), code, "{}", case.what);
            assert_eq!(resp.json()["id"], case.id, "{}", case.what);
        }
    }
    let wrong_type = send("POST", &url, &[("content-type", "text/plain"), ("authorization", &format!("Bearer {token}"))], "{}").await;
    assert_eq!(wrong_type.status, 415);
    assert_eq!(backend_requests(&gw).await, before, "a refused request reached a backend");
    // Each refusal was written to the audit log with its reason.
    for reason in ["parse_error", "invalid_request", "header_mismatch", "body_too_large", "unsupported_media_type", "invalid_task_id"] {
        wait_audit(&gw, |r| r["reason"] == reason).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_with_bytes_that_are_not_utf8_inside_tool_arguments_is_a_parse_error() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    let before = backend_requests(&gw).await;
    // A byte 0xff inside a string the filter skips (the tool's arguments): the envelope itself
    // is fine, but no part of the body may be read differently by another parser.
    let mut body = modern_call(9, "echo", r#"{"text":"aXb"}"#).into_bytes();
    let at = body.iter().position(|&b| b == b'X').expect("the marker");
    body[at] = 0xff;
    let resp = post(&gw.mcp_url("files"), &token, &pairs(&modern_headers("echo")), &body).await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(resp.rpc_code(), -32700, "{}", resp.body);
    assert_eq!(backend_requests(&gw).await, before, "the request reached a backend");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_filter_a_header_mismatch_reaches_the_backend() {
    // Guards the suite itself: the assertions above depend on the filter being in the chain.
    let gw = Gateway::start(Options { without_filter: true, verifying_backends: false, ..Options::default() });
    let before = backend_requests(&gw).await;
    let legacy_mismatch = r#"{"jsonrpc":"2.0","id":"s","method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#;
    let resp = post(&gw.mcp_url("files"), "x", &[("mcp-method", "tools/list")], legacy_mismatch).await;
    assert_ne!(resp.status, 400, "{}", resp.body);
    assert!(backend_requests(&gw).await > before);
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_headers_are_stripped_both_ways() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "");
    let mut headers = modern_headers("whoami");
    headers.push(("x-mcp-affinity", "forged".into()));
    headers.push(("mcp-session-id", "stale-session".into()));
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = post(&gw.mcp_url("files"), &token, &h, &modern_call(1, "whoami", "{}")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let me = whoami(&tool_text(&resp.body));
    assert_ne!(me["headers"]["x-mcp-affinity"], "forged");
    assert_eq!(me["headers"]["mcp-session-id"], Value::Null, "a modern request's Mcp-Session-Id is dropped");
    assert!(resp.header("x-mcp-affinity").is_none());
}

/// A backend that answers every response with the filter's internal headers and a session id
/// of its own (`--response-header`), behind the gateway or (`without_filter`) not.
fn leaky_backends(without_filter: bool) -> Gateway {
    let leaks = ["x-mcp-affinity=leaked", "x-backend-secret=leaked", "mcp-session-id=upstream-leak"];
    let backend_args = leaks.iter().flat_map(|l| ["--response-header".to_string(), l.to_string()]).collect();
    let mut options = Options { backend_args, without_filter, verifying_backends: !without_filter, ..Options::default() };
    options.filter_config["internal_headers"] = json!(["x-backend-secret"]);
    Gateway::start(options)
}

const LEAKED: [&str; 3] = ["x-mcp-affinity", "x-backend-secret", "mcp-session-id"];

#[tokio::test(flavor = "multi_thread")]
async fn internal_headers_and_the_backends_session_id_never_reach_the_client() {
    let gw = leaky_backends(false);
    let token = gw.token("alice", "");
    let resp = post(&gw.mcp_url("files"), &token, &pairs(&modern_headers("whoami")), &modern_call(1, "whoami", "{}")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    for name in LEAKED {
        assert_eq!(resp.header(name), None, "a modern response shows {name}");
    }
    // A legacy initialize: the client sees the sealed handle, never the backend's id.
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let resp = post(&gw.mcp_url("files"), &token, &[], init).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let handle = resp.header("mcp-session-id").expect("a session handle");
    assert!(handle.len() > 100 && !handle.contains("upstream-leak"), "{handle}");
    assert_eq!((resp.header("x-mcp-affinity"), resp.header("x-backend-secret")), (None, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_filter_the_leaky_backends_headers_reach_the_client() {
    // Guards the test above: these backends really do send the headers.
    let gw = leaky_backends(true);
    let resp = post(&gw.mcp_url("files"), "x", &pairs(&modern_headers("whoami")), &modern_call(1, "whoami", "{}")).await;
    for name in LEAKED {
        assert!(resp.header(name).is_some(), "{name} missing: {:?}", resp.headers);
    }
}

#[test]
fn shipped_envoy_yaml_validates_with_the_built_filter() {
    let dir = std::env::temp_dir().join(format!("mcp-gw-validate-{}", std::process::id()));
    let keys = integration::idp::Keys::ensure(&dir).unwrap();
    // validate mode loads the Wasm and runs on_configure, which needs the key environment.
    let (ok, out) = envoy_validate(&root().join("envoy/envoy.yaml"), &root(), &keys.envoy_env().unwrap());
    assert!(ok, "envoy --mode validate failed:\n{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_filter_configuration_is_refused_at_load_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("mcp-gw-badcfg-{}", std::process::id()));
    let keys = integration::idp::Keys::ensure(&dir).unwrap();
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(root().join("envoy/filter.json")).unwrap()).unwrap();
    config["gateway"]["max_delegation_depth"] = json!(0);
    config["max_body_byte"] = json!(5);
    let template = std::fs::read_to_string(root().join("envoy/envoy.template.yaml")).unwrap();
    let yaml = integration::harness::render_envoy(
        &template,
        &integration::harness::Ports::DEMO,
        &integration::harness::wasm_path().display().to_string(),
        &serde_json::to_string_pretty(&config).unwrap(),
    );
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (ok, out) = envoy_validate(&path, &root(), &keys.envoy_env().unwrap());
    assert!(!ok, "Envoy accepted an invalid filter configuration");
    assert!(out.contains("max_body_byte"), "the error does not name the field:\n{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
