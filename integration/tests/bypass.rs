//! The bypasses a red-team pass found (issue 31), each tried through a real Envoy: a request
//! that could skip a check must now get the same verdict as its plain form.

mod common;

use bytes::Bytes;
use common::*;
use integration::harness::{Gateway, Options};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response read whole over HTTP/2.
struct H2 {
    status: u16,
    body: String,
}

impl H2 {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn reason(&self) -> String {
        self.json()["error"]["data"]["reason"].as_str().unwrap_or_default().to_string()
    }
}

/// A POST over h2c (prior knowledge) whose last frame is a trailers HEADERS frame; `body` empty
/// sends no DATA frame at all.
async fn h2_post_with_trailers(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &str) -> H2 {
    let addr = format!("127.0.0.1:{}", gw.ports.gateway);
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("h2 ready");
    let mut request = http::Request::builder().method("POST").uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut stream) = client.send_request(request.body(()).unwrap(), false).expect("send request");
    if !body.is_empty() {
        stream.send_data(Bytes::copy_from_slice(body.as_bytes()), false).expect("send data");
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    stream.send_trailers(trailers).expect("send trailers");
    let response = response.await.expect("response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    H2 { status, body: String::from_utf8_lossy(&out).into_owned() }
}

/// Headers of a modern `tools/call` of `name` with a bearer token, owned.
fn modern_call_headers(token: &str, name: &str, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("accept", "application/json, text/event-stream".to_string()),
        ("authorization", format!("Bearer {token}")),
    ];
    headers.extend(modern_headers(name));
    headers.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    headers
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_request_ending_in_trailers_gets_every_check() {
    // Given a caller with a user token, and a client-set affinity header to smuggle
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    let headers = modern_call_headers(&token, "whoami", &[("mcp-task-id", "task-h2"), ("x-mcp-affinity", "smuggled")]);

    // When a correct call ends with trailers
    let ok = h2_post_with_trailers(&gw, "/mcp/files", &pairs(&headers), &modern_call(1, "whoami", "{}")).await;

    // Then it was checked and delegated like any other: the backend saw a minted token, never
    // the user's, and not the smuggled affinity
    assert_eq!(ok.status, 200, "{}", ok.body);
    let who: Value = serde_json::from_str(&tool_text(&ok.body)).unwrap();
    assert_eq!(who["claims"]["iss"], "mcp-gateway", "{who}");
    assert_eq!(who["claims"]["task"], "task-h2", "{who}");
    assert!(!backend_bearer_tokens(&gw).await.contains(&token), "the user's token reached a backend");
    assert!(!backend_header_values(&gw, "x-mcp-affinity").await.iter().any(|v| v == "smuggled"), "a client affinity arrived");
    let record = wait_audit(&gw, |r| r["task"] == "task-h2").await;
    assert_eq!((record["decision"].as_str(), record["status"].as_u64()), (Some("allow"), Some(200)), "{record}");

    // And a header that disagrees with the body is refused, nothing forwarded
    let before = backend_requests(&gw).await;
    let lying = modern_call_headers(&token, "echo", &[]);
    let refused = h2_post_with_trailers(&gw, "/mcp/files", &pairs(&lying), &modern_call(2, "read_secret", "{}")).await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_i64()), (400, Some(-32020)), "{}", refused.body);
    assert_eq!(refused.json()["id"], 2);

    // And a revoked task stays revoked however the request ends
    assert_eq!(revoke(&gw, json!({"task": "task-h2"})).await.status, 200);
    let secret = modern_call_headers(&token, "read_secret", &[("mcp-task-id", "task-h2")]);
    let revoked = h2_post_with_trailers(&gw, "/mcp/files", &pairs(&secret), &modern_call(3, "read_secret", "{}")).await;
    assert_eq!((revoked.status, revoked.reason().as_str()), (403, "task_revoked"), "{}", revoked.body);

    // And headers followed straight by trailers (no DATA frame) are an empty body
    let empty = h2_post_with_trailers(&gw, "/mcp/files", &pairs(&headers), "").await;
    assert_eq!(empty.status, 400, "{}", empty.body);
    assert_eq!(backend_requests(&gw).await, before, "a refused request reached a backend");
}

/// A raw HTTP/1.1 chunked POST whose body ends with a trailer section; the whole response.
async fn chunked_post_with_trailers(gw: &Gateway, headers: &[(&str, &str)], body: &str) -> String {
    let mut request = format!("POST /mcp/files HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("\r\n{:x}\r\n{body}\r\n0\r\nx-checksum: abc\r\n\r\n", body.len()));
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.ports.gateway)).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http1_chunked_request_with_trailers_gets_every_check() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    let before = backend_requests(&gw).await;

    // A header that disagrees with the body: refused
    let lying = modern_call_headers(&token, "echo", &[]);
    let refused = chunked_post_with_trailers(&gw, &pairs(&lying), &modern_call(7, "read_secret", "{}")).await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(refused.contains("-32020"), "{refused}");
    assert_eq!(backend_requests(&gw).await, before, "a refused request reached a backend");

    // A correct one: delegated
    let ok = chunked_post_with_trailers(&gw, &pairs(&modern_call_headers(&token, "whoami", &[])), &modern_call(8, "whoami", "{}")).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(!backend_bearer_tokens(&gw).await.contains(&token), "the user's token reached a backend");
}
