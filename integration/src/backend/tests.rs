//! Backends and clients talking directly, without Envoy.

use jwt_simple::prelude::{Claims, Duration, Ed25519KeyPair, EdDSAKeyPairLike};
use serde_json::{json, Value};

use super::*;
use crate::client::{CallError, Era, McpClient};

async fn start_backend(config: BackendConfig) -> RunningBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(listener, config).unwrap()
}

fn signed_token(key: &Ed25519KeyPair, aud: &str, scope: &str) -> String {
    let claims = Claims::with_custom_claims(json!({"scope": scope}), Duration::from_mins(5))
        .with_audience(aud)
        .with_subject("alice");
    key.sign(claims).unwrap()
}

fn whoami(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn echo_round_trips_in_both_eras() {
    let backend = start_backend(BackendConfig::unverified(BackendKind::Files, "files-1")).await;
    for era in [Era::Modern, Era::Legacy2025_06_18, Era::Legacy2025_11_25] {
        let client = McpClient::connect(&backend.url(), era, None, &[])
            .await
            .unwrap();
        assert_eq!(
            client.protocol_version().as_deref(),
            Some(era.protocol_version().as_str())
        );
        let text = "héllo \u{0}\"\\ wörld";
        assert_eq!(
            client
                .call_tool("echo", json!({"text": text}))
                .await
                .unwrap(),
            text
        );
        client.close().await;
    }
    backend.stop().await;
}

#[tokio::test]
async fn legacy_client_holds_the_session_the_server_sees_and_modern_has_none() {
    let backend = start_backend(BackendConfig::unverified(BackendKind::Files, "files-1")).await;
    let legacy = McpClient::connect(&backend.url(), Era::Legacy2025_11_25, None, &[])
        .await
        .unwrap();
    let seen = whoami(&legacy.call_tool("whoami", json!({})).await.unwrap());
    assert_eq!(seen["session"].as_str(), legacy.session_id().as_deref());
    assert!(legacy.session_id().is_some());

    let modern = McpClient::connect(&backend.url(), Era::Modern, None, &[("Mcp-Task-Id", "t-1")])
        .await
        .unwrap();
    let seen = whoami(&modern.call_tool("whoami", json!({})).await.unwrap());
    assert_eq!(seen["session"], Value::Null);
    assert_eq!(modern.session_id(), None);
    assert_eq!(seen["headers"]["mcp-method"], "tools/call");
    assert_eq!(seen["headers"]["mcp-name"], "whoami");
    assert_eq!(seen["headers"]["mcp-task-id"], "t-1");
    assert_eq!(
        (seen["replica"].as_str(), seen["backend"].as_str()),
        (Some("files-1"), Some("files"))
    );
    legacy.close().await;
    modern.close().await;
    backend.stop().await;
}

#[tokio::test]
async fn raw_bodies_are_recorded_as_received() {
    let backend = start_backend(BackendConfig::unverified(BackendKind::Reports, "reports-1")).await;
    let before = debug_count(&backend.base_url()).await.unwrap();
    let client = McpClient::connect(&backend.url(), Era::Modern, None, &[])
        .await
        .unwrap();
    client
        .call_tool("echo", json!({"text": "recorded"}))
        .await
        .unwrap();
    let bodies = debug_last_bodies(&backend.base_url()).await.unwrap();
    let last: Value = serde_json::from_slice(bodies.last().unwrap()).unwrap();
    assert_eq!(last["params"]["arguments"]["text"], "recorded");
    assert_eq!(debug_count(&backend.base_url()).await.unwrap(), before + 2); // discover + call
    client.close().await;
    backend.stop().await;
}

#[tokio::test]
async fn token_signed_by_trusted_key_is_accepted_and_wrong_audience_gets_401() {
    let key = Ed25519KeyPair::generate().with_key_id("gw-1");
    let config = BackendConfig {
        verifier: Verifier::from_keys("files", vec![key.public_key()]),
        ..BackendConfig::unverified(BackendKind::Files, "files-1")
    };
    let backend = start_backend(config).await;

    let good = signed_token(&key, "files", "files:read");
    let client = McpClient::connect(&backend.url(), Era::Modern, Some(&good), &[])
        .await
        .unwrap();
    let seen = whoami(&client.call_tool("whoami", json!({})).await.unwrap());
    assert_eq!(seen["claims"]["sub"], "alice");
    assert_eq!(
        client
            .call_tool("read_file", json!({"path": "a.txt"}))
            .await
            .unwrap(),
        "demo content of a.txt"
    );
    let denied = client
        .call_tool("write_file", json!({"path": "a.txt", "text": "x"}))
        .await;
    assert!(matches!(denied, Err(CallError::Tool(message)) if message.contains("files:write")));
    client.close().await;

    let before = debug_count(&backend.base_url()).await.unwrap();
    let wrong_audience = signed_token(&key, "reports", "files:read");
    let response = reqwest::Client::new()
        .post(backend.url())
        .bearer_auth(wrong_audience)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    assert_eq!(debug_count(&backend.base_url()).await.unwrap(), before + 1); // counted, refused
    backend.stop().await;
}

#[tokio::test]
async fn listen_stream_delivers_tools_list_changed() {
    let backend = start_backend(BackendConfig::unverified(BackendKind::Files, "files-1")).await;
    let client = McpClient::connect(&backend.url(), Era::Modern, None, &[])
        .await
        .unwrap();
    let mut subscription = client.listen_tools_changed().await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), subscription.next()).await;
    assert!(matches!(
        next.unwrap().unwrap(),
        Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))
    ));
    client.close().await;
    backend.stop().await;
}

#[tokio::test]
async fn big_results_arrive_whole_in_both_eras() {
    let backend = start_backend(BackendConfig::unverified(BackendKind::Files, "files-1")).await;
    for era in [Era::Modern, Era::Legacy2025_11_25] {
        let client = McpClient::connect(&backend.url(), era, None, &[])
            .await
            .unwrap();
        let text = client
            .call_tool("big", json!({"bytes": 3 * 1024 * 1024}))
            .await
            .unwrap();
        assert_eq!(text.len(), 3 * 1024 * 1024);
        client.close().await;
    }
    backend.stop().await;
}

#[tokio::test]
async fn summarize_calls_files_with_the_token_it_received() {
    let files = start_backend(BackendConfig::unverified(BackendKind::Files, "files-1")).await;
    // No gateway here: the "gateway URL" is the files backend itself, which serves /mcp/files.
    let reports = start_backend(BackendConfig {
        gateway_url: Some(files.base_url()),
        ..BackendConfig::unverified(BackendKind::Reports, "reports-1")
    })
    .await;
    let key = Ed25519KeyPair::generate();
    let token = signed_token(&key, "reports", "reports:write");
    let client = McpClient::connect(&reports.url(), Era::Legacy2025_06_18, Some(&token), &[])
        .await
        .unwrap();
    let summary: Value = serde_json::from_str(
        &client
            .call_tool("summarize", json!({"path": "q3.txt"}))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["content"], "demo content of q3.txt");
    assert_eq!(summary["downstream_claims"]["aud"], "reports");
    assert_eq!(summary["downstream_claims"]["scope"], "reports:write");
    client.close().await;
    reports.stop().await;
    files.stop().await;
}
