//! Authorization propagation through a real Envoy (CONTRACT items 2, 4, 5): the caller is
//! verified once, every backend gets only a token the gateway minted for it, and every hop
//! narrows what the next one may do.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use common::*;
use integration::client::{CallError, Era, McpClient};
use integration::harness::{Gateway, Options};
use integration::idp::{random_id, TokenSpec};
use jwt_simple::prelude::{
    Claims, Duration as JwtDuration, Ed25519KeyPair, Ed25519PublicKey, EdDSAKeyPairLike, EdDSAPublicKeyLike, HS256Key,
    MACLike, NoCustomClaims, VerificationOptions,
};
use serde_json::{json, Value};

/// The RFC 9728 metadata URL that challenges for `files` name: built from `public_url` in
/// `envoy/filter.json`, so it is the same whatever port a test's listener got.
const FILES_METADATA: &str = "http://127.0.0.1:10000/.well-known/oauth-protected-resource/mcp/files";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The sorted scopes of a space-separated `scope` claim.
fn scopes(claim: &Value) -> Vec<String> {
    let claim = claim.as_str().unwrap_or_else(|| panic!("scope is not a string: {claim}"));
    let mut scopes: Vec<String> = claim.split(' ').map(String::from).collect();
    scopes.sort();
    scopes
}

/// A raw modern `tools/call` of `whoami` at `url`, with the token when there is one.
async fn raw_whoami(url: &str, token: Option<&str>) -> Raw {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    let modern = modern_headers("whoami");
    headers.extend(modern.iter().map(|(k, v)| (*k, v.as_str())));
    send("POST", url, &headers, &modern_call(1, "whoami", "{}")).await
}

/// The claims the backend reported through `whoami`.
async fn whoami_claims(client: &McpClient) -> Value {
    let text = client.call_tool("whoami", json!({})).await.expect("whoami");
    json_of(&text)["claims"].clone()
}

/// A hop token for `aud` signed with the gateway's own key, as the gateway would mint it.
fn gateway_signed(gw: &Gateway, aud: &str, claims: Value) -> String {
    let pem = std::fs::read_to_string(gw.keys.gateway_pem()).expect("gateway.pem");
    let key = Ed25519KeyPair::from_pem(&pem).expect("gateway key").with_key_id("gw-1");
    let claims = Claims::with_custom_claims(claims, JwtDuration::from_secs(300))
        .with_issuer("mcp-gateway")
        .with_subject("alice")
        .with_audience(aud)
        .with_jwt_id(random_id());
    key.sign(claims).expect("sign")
}

#[tokio::test(flavor = "multi_thread")]
async fn user_token_never_reaches_a_backend_which_sees_only_a_narrower_gateway_token() {
    // Given a user token with more scopes than `files` may ever receive
    let gw = Gateway::start(Options::default());
    let user_token = gw.token("alice", "files:read files:write reports:write admin");

    // When it goes through the gateway
    let client = McpClient::connect(&gw.mcp_url("files"), Era::Modern, Some(&user_token), &[("Mcp-Task-Id", "task-who")]).await.unwrap();
    let claims = whoami_claims(&client).await;
    client.close().await;
    let after = now();

    // Then the backend saw only a token the gateway minted for it
    assert_eq!(claims["iss"], "mcp-gateway", "{claims}");
    assert_eq!(claims["aud"], "files", "{claims}");
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(scopes(&claims["scope"]), ["files:read", "files:write"], "caller scope ∩ files scopes: {claims}");
    let user = jwt_payload(&user_token);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()) && claims["jti"] != user["jti"], "{claims}");
    assert_eq!(claims["task"], "task-who", "{claims}");
    assert_eq!(claims["act"], json!({"sub": "mcp-gateway"}), "one actor level, the gateway: {claims}");
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp <= after + 300, "exp {exp} beyond now + token_ttl_secs ({after} + 300)");
    assert!(exp <= user["exp"].as_u64().unwrap(), "exp {exp} beyond the user token's {}", user["exp"]);
    let received = backend_bearer_tokens(&gw).await;
    assert!(!received.is_empty(), "the backends recorded no bearer token");
    assert!(received.iter().all(|t| jwt_payload(t)["iss"] == "mcp-gateway"), "a backend received a non-gateway token");

    // And the user token sent straight to a replica is refused there
    let direct = raw_whoami(&gw.backend_url(0, "/mcp/files"), Some(&user_token)).await;
    assert_eq!(direct.status, 401, "a backend accepted a user token: {}", direct.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn minted_token_never_outlives_the_user_token() {
    // Given a user token that ends sooner than token_ttl_secs (300 s) from now
    let gw = Gateway::start(Options::default());
    let user_token = TokenSpec { ttl_secs: 60, ..TokenSpec::new("alice", "files:read") }.sign(&gw.keys).unwrap();

    // When a backend is called with it
    let client = McpClient::connect(&gw.mcp_url("files"), Era::Modern, Some(&user_token), &[]).await.unwrap();
    let claims = whoami_claims(&client).await;
    client.close().await;

    // Then the backend's token ends no later than the user's
    let user_exp = jwt_payload(&user_token)["exp"].as_u64().unwrap();
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp <= user_exp, "minted exp {exp} outlives the user token's {user_exp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn write_file_without_files_write_is_refused_with_insufficient_scope_before_the_backend() {
    // Given a caller holding only files:read
    let gw = Gateway::start(Options::default());
    let reader = gw.token("alice", "files:read");
    let write = modern_call(41, "write_file", r#"{"path":"notes.txt","text":"x"}"#);
    let headers = modern_headers("write_file");
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let before = backend_requests(&gw).await;

    // When it calls write_file
    let resp = post(&gw.mcp_url("files"), &reader, &headers, &write).await;

    // Then the gateway refuses it with a scope challenge and a JSON-RPC error for that request
    assert_eq!(resp.status, 403, "{}", resp.body);
    let challenge = resp.header("www-authenticate").expect("WWW-Authenticate");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains(r#"error="insufficient_scope""#), "{challenge}");
    assert!(challenge.contains(r#"scope="files:write""#), "{challenge}");
    assert_eq!(resp.json()["id"], 41, "{}", resp.body);
    assert!(resp.json()["error"]["code"].is_i64(), "{}", resp.body);
    assert_eq!(backend_requests(&gw).await, before, "a refused write_file reached a backend");

    // And a real modern client's call fails at the gateway, not as the backend's own tool error
    let client = McpClient::connect(&gw.mcp_url("files"), Era::Modern, Some(&reader), &[]).await.unwrap();
    let before = backend_requests(&gw).await;
    let result = client.call_tool("write_file", json!({"path": "notes.txt", "text": "x"})).await;
    assert!(matches!(result, Err(CallError::Rpc(_) | CallError::Transport(_))), "{result:?}");
    assert_eq!(backend_requests(&gw).await, before, "the client's write_file reached a backend");
    client.close().await;

    // While the same request with files:write passes (the refusal was about scope alone)
    let writer = gw.token("alice", "files:read files:write");
    assert_eq!(post(&gw.mcp_url("files"), &writer, &headers, &write).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn summarize_calls_files_with_a_narrower_token_naming_reports_as_latest_actor() {
    // Given a caller of reports in one task, and the token reports itself received
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read reports:write");
    let client = McpClient::connect(&gw.mcp_url("reports"), Era::Modern, Some(&token), &[("Mcp-Task-Id", "task-sum")]).await.unwrap();
    let parent = whoami_claims(&client).await;
    // The hop below happens at a later second, so a downstream exp of now + ttl would show.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // When reports/summarize calls files through the gateway with that token
    let text = client.call_tool("summarize", json!({"path": "q3.txt"})).await.expect("summarize");
    client.close().await;
    let out = json_of(&text);
    let down = &out["downstream_claims"];

    // Then files got a token for itself, no broader than the delegation, no longer-lived than
    // the parent, in the parent's task, with reports as the outermost actor
    assert_eq!(out["content"], "demo content of q3.txt");
    let hop = wait_audit(&gw, |r| r["backend"] == "files" && r["decision"] == "allow").await;
    assert_eq!(hop["parent_jti"], parent["jti"], "summarize presented another token than whoami saw: {hop}");
    assert_eq!(down["aud"], "files", "{down}");
    assert_eq!(down["iss"], "mcp-gateway", "{down}");
    assert_eq!(down["sub"], "alice", "{down}");
    assert_eq!(down["scope"], "files:read", "{down}");
    let (exp, parent_exp) = (down["exp"].as_u64().expect("exp"), parent["exp"].as_u64().expect("parent exp"));
    assert!(exp <= parent_exp, "downstream exp {exp} later than the parent's {parent_exp}");
    assert_eq!(down["act"], json!({"sub": "reports", "act": {"sub": "mcp-gateway"}}), "{down}");
    assert_eq!(down["task"], "task-sum", "{down}");
    assert_eq!(parent["task"], "task-sum", "{parent}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delegation_past_max_depth_is_refused() {
    // Given a gateway that allows one actor level only
    let mut options = Options::default();
    options.filter_config["gateway"]["max_delegation_depth"] = json!(1);
    let gw = Gateway::start(options);
    let token = gw.token("alice", "files:read reports:write");
    let client = McpClient::connect(&gw.mcp_url("reports"), Era::Modern, Some(&token), &[]).await.unwrap();

    // When reports calls files with its token (a second level)
    let result = client.call_tool("summarize", json!({"path": "q3.txt"})).await;
    client.close().await;

    // Then the onward call is refused, and summarize reports that as a tool error
    assert!(matches!(&result, Err(CallError::Tool(text)) if text.contains("403")), "{result:?}");
    let refusal = wait_audit(&gw, |r| r["reason"] == "delegation_too_deep").await;
    assert_eq!((refusal["backend"].as_str(), refusal["status"].as_u64()), (Some("files"), Some(403)), "{refusal}");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_token_presented_to_reports_is_refused_as_a_delegation_not_configured() {
    // Given a token the gateway minted for files (only reports → files is configured)
    let gw = Gateway::start(Options::default());
    let hop = |aud: &str| {
        gateway_signed(&gw, aud, json!({"scope": "files:read", "act": {"sub": "mcp-gateway"}, "task": "t"}))
    };
    let files_token = hop("files");
    let before = backend_requests(&gw).await;

    // When files presents it to reports
    let resp = raw_whoami(&gw.mcp_url("reports"), Some(&files_token)).await;

    // Then the gateway refuses the hop
    assert_eq!(resp.status, 403, "{}", resp.body);
    assert_eq!(backend_requests(&gw).await, before, "the refused hop reached a backend");
    let refusal = wait_audit(&gw, |r| r["reason"] == "delegation_not_allowed").await;
    assert_eq!(refusal["backend"], "reports", "{refusal}");
    // While the configured direction, signed the same way, passes (the token itself is good)
    let reports_token = hop("reports");
    assert_eq!(raw_whoami(&gw.mcp_url("files"), Some(&reports_token)).await.status, 200);
}

/// One request the gateway must refuse with 401.
struct Refused {
    what: &'static str,
    token: Option<String>,
    reason: &'static str,
}

/// Tokens that must not get in, each otherwise a plausible token of alice with files:read.
fn refused_tokens(gw: &Gateway) -> Vec<Refused> {
    let idp = gw.keys.idp_key().expect("IdP key");
    let kid = idp.key_id().clone().expect("IdP kid");
    let spec = TokenSpec::new("alice", "files:read");
    let t = now();
    let mut expired = spec.claims();
    expired.issued_at = Some(JwtDuration::from_secs(t - 700));
    expired.invalid_before = Some(JwtDuration::from_secs(t - 700));
    expired.expires_at = Some(JwtDuration::from_secs(t - 120));
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let alg_none = format!(
        "{}.{}.",
        b64(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#).as_bytes()),
        b64(&serde_json::to_vec(&spec.claims()).unwrap())
    );
    // Algorithm confusion: an HMAC keyed with the IdP's public key bytes, naming its kid.
    let confused = HS256Key::from_bytes(&idp.public_key().to_bytes()).with_key_id(&kid).authenticate(spec.claims()).unwrap();
    let good = spec.sign(&gw.keys).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let flipped = if parts[2].starts_with('A') { "B" } else { "A" };
    let bad_signature = format!("{}.{}.{flipped}{}", parts[0], parts[1], &parts[2][1..]);
    let mut admin = jwt_payload(&good);
    admin["sub"] = json!("admin");
    let bad_payload = format!("{}.{}.{}", parts[0], b64(&serde_json::to_vec(&admin).unwrap()), parts[2]);
    let stranger = Ed25519KeyPair::generate().with_key_id("idp-unknown");
    let sign = |spec: TokenSpec| spec.sign(&gw.keys).unwrap();
    let r = |what, token: Option<String>, reason| Refused { what, token, reason };
    vec![
        r("missing", None, "token_missing"),
        r("expired", Some(idp.sign(expired).unwrap()), "token_expired"),
        r("not yet valid", Some(sign(TokenSpec { not_before_offset: 120, ..spec.clone() })), "token_not_yet_valid"),
        r("wrong audience", Some(sign(TokenSpec { audience: "files".into(), ..spec.clone() })), "token_wrong_audience"),
        r("wrong issuer", Some(sign(TokenSpec { issuer: "other-idp".into(), ..spec.clone() })), "token_wrong_issuer"),
        r("alg none", Some(alg_none), "token_alg_not_allowed"),
        r("HS256 with the public key", Some(confused), "token_alg_not_allowed"),
        r("tampered signature", Some(bad_signature), "token_bad_signature"),
        r("tampered payload", Some(bad_payload), "token_bad_signature"),
        r("unknown kid", Some(stranger.sign(spec.claims()).unwrap()), "token_unknown_key"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_or_missing_tokens_get_401_with_a_challenge_and_never_reach_a_backend() {
    let gw = Gateway::start(Options::default());
    let before = backend_requests(&gw).await;
    for case in refused_tokens(&gw) {
        // Given one bad (or no) token, when it calls a tool
        let seen = audit_records(&gw).len();
        let resp = raw_whoami(&gw.mcp_url("files"), case.token.as_deref()).await;

        // Then 401 with a challenge naming the resource metadata; invalid_token only when sent
        assert_eq!(resp.status, 401, "{}: {}", case.what, resp.body);
        let challenge = resp.header("www-authenticate").unwrap_or_else(|| panic!("{}: no WWW-Authenticate", case.what));
        assert!(challenge.starts_with("Bearer "), "{}: {challenge}", case.what);
        assert!(challenge.contains(&format!(r#"resource_metadata="{FILES_METADATA}""#)), "{}: {challenge}", case.what);
        let invalid_token = challenge.contains(r#"error="invalid_token""#);
        assert_eq!(invalid_token, case.token.is_some(), "{}: {challenge}", case.what);
        assert!(!challenge.contains("error=") || invalid_token, "{}: {challenge}", case.what);
        let record = nth_audit(&gw, seen).await;
        assert_eq!((record["decision"].as_str(), record["reason"].as_str()), (Some("deny"), Some(case.reason)), "{}: {record}", case.what);
    }
    assert_eq!(backend_requests(&gw).await, before, "a request without a valid token reached a backend");
}

#[tokio::test(flavor = "multi_thread")]
async fn protected_resource_metadata_follows_rfc_9728() {
    let gw = Gateway::start(Options::default());

    // When a client follows the challenge's resource_metadata path
    let resp = send("GET", &gw.url("/.well-known/oauth-protected-resource/mcp/files"), &[], "").await;

    // Then it learns the resource, who issues tokens for it and which scopes exist
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.header("content-type").is_some_and(|c| c.starts_with("application/json")));
    let metadata = resp.json();
    assert_eq!(metadata["resource"], "http://127.0.0.1:10000/mcp/files", "{metadata}");
    assert_eq!(metadata["authorization_servers"], json!(["demo-idp"]), "{metadata}");
    assert_eq!(metadata["scopes_supported"], json!(["files:read", "files:write"]), "{metadata}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_jwks_holds_the_public_key_that_verifies_what_backends_receive() {
    // Given a backend call through the gateway
    let gw = Gateway::start(Options::default());
    let client = McpClient::connect(&gw.mcp_url("files"), Era::Modern, Some(&gw.token("alice", "files:read")), &[]).await.unwrap();
    let claims = whoami_claims(&client).await;
    client.close().await;

    // When the gateway's JWKS is fetched
    let resp = send("GET", &gw.url("/.well-known/jwks.json"), &[], "").await;

    // Then it holds exactly the gateway's public key, under its kid, and no private part
    assert_eq!(resp.status, 200, "{}", resp.body);
    let jwks = resp.json();
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!(keys[0]["kid"], "gw-1", "{jwks}");
    assert!(keys[0].get("d").is_none(), "private key material published: {jwks}");
    let published = Ed25519PublicKey::from_jwk(&keys[0].to_string()).expect("Ed25519 JWK");
    let pem = std::fs::read_to_string(gw.keys.gateway_pem()).unwrap();
    assert_eq!(published.to_bytes(), Ed25519KeyPair::from_pem(&pem).unwrap().public_key().to_bytes());
    // And that key verifies the very token whose claims whoami reported
    let received = backend_bearer_tokens(&gw).await;
    let token = received.iter().find(|t| jwt_payload(t)["jti"] == claims["jti"]).expect("whoami's token among the recorded ones");
    let options = VerificationOptions { time_tolerance: Some(JwtDuration::from_secs(0)), ..Default::default() };
    published.verify_token::<NoCustomClaims>(token, Some(options)).expect("the JWKS key verifies the minted token");
    assert_eq!(jwt_payload(token), claims);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_idp_key_works_without_restart_and_an_idp_outage_keeps_the_last_good_keys() {
    // Given a gateway that has fetched the IdP's first key
    let gw = Gateway::start(Options::default());
    let files = gw.mcp_url("files");
    assert_eq!(raw_whoami(&files, Some(&gw.token("alice", ""))).await.status, 200);

    // When the IdP rotates to a new key behind its jwks_uri
    gw.keys.rotate_idp("idp-2").unwrap();
    let rotated = gw.token("alice", "");
    assert_eq!(jwt_kid(&rotated), "idp-2");

    // Then a token of the new key is accepted, with no restart, once the gateway has refetched
    // (an unknown kid triggers that)
    let start = Instant::now();
    let mut status = 0;
    while start.elapsed() < Duration::from_secs(10) {
        status = raw_whoami(&files, Some(&rotated)).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200, "a token of the rotated key was not accepted within 10 s");

    // When the IdP's JWKS endpoint goes down and, past min_refresh_secs (1 s) since that
    // fetch, a token naming a key nobody knows makes the gateway refetch
    let failures = gw.envoy_log().matches("refresh failed").count();
    std::fs::write(gw.keys.dir.join("down"), "").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stranger = Ed25519KeyPair::generate().with_key_id("idp-3").sign(TokenSpec::new("alice", "").claims()).unwrap();
    assert_eq!(raw_whoami(&files, Some(&stranger)).await.status, 401);
    gw.wait_for_log("refresh failed", failures + 1, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Then new tokens of the last good key still work
    let fresh = gw.token("bob", "");
    let resp = raw_whoami(&files, Some(&fresh)).await;
    assert_eq!(resp.status, 200, "the last good keys were dropped: {}", resp.body);
    assert_eq!(json_of(&tool_text(&resp.body))["claims"]["sub"], "bob");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_kid_seen_within_min_refresh_secs_of_a_fetch_is_still_refetched() {
    // Given a gateway that has just fetched the IdP's keys, and an IdP that then rotates
    let gw = Gateway::start(Options::default());
    gw.keys.rotate_idp("idp-2").unwrap();
    let rotated = gw.token("alice", "");

    // When a token of the new key arrives less than min_refresh_secs (1 s) after that fetch
    // (it may be refused: the refetch may not run yet), and the client retries a while later
    raw_whoami(&gw.mcp_url("files"), Some(&rotated)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let retry = raw_whoami(&gw.mcp_url("files"), Some(&rotated)).await;

    // Then the gateway refetched as soon as the interval allowed, and the retry is accepted
    assert_eq!(retry.status, 200, "the unknown kid was forgotten instead of deferred: {}", retry.body);
}

/// The `kid` in a compact JWT's header.
fn jwt_kid(token: &str) -> String {
    let header = URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap();
    serde_json::from_slice::<Value>(&header).unwrap()["kid"].as_str().unwrap_or_default().to_string()
}

/// A modern `resources/read` of `uri`.
async fn read_resource(gw: &Gateway, token: &str, uri: &str) -> Raw {
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "resources/read"),
        ("mcp-name", uri),
    ];
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"resources/read","params":{{"uri":"{uri}","_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}},"io.modelcontextprotocol/clientInfo":{{"name":"t","version":"1"}}}}}}}}"#
    );
    post(&gw.mcp_url("files"), token, &headers, &body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn workspace_roots_confine_resource_reads_and_travel_in_the_minted_token() {
    let mut options = Options::default();
    options.filter_config["workspaces"] = json!({"bob": ["file:///work/bob/"]});
    let gw = Gateway::start(options);
    // From a token claim.
    let alice = TokenSpec { extra: Some(json!({"workspace": ["file:///work/alice/"]})), ..TokenSpec::new("alice", "files:read") }
        .sign(&gw.keys)
        .unwrap();
    let denied = read_resource(&gw, &alice, "file:///work/bob/secret.txt").await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.json()["error"]["data"]["reason"], "workspace_denied");
    assert_eq!(denied.json()["id"], 9);
    let traversal = read_resource(&gw, &alice, "file:///work/alice/../bob/secret.txt").await;
    assert_eq!(traversal.status, 403, "{}", traversal.body);
    let inside = read_resource(&gw, &alice, "file:///work/alice/notes.txt").await;
    assert_ne!(inside.status, 403, "{}", inside.body);
    // The backend receives the roots so it can confine tool arguments itself.
    let me = whoami_of(&modern_whoami(&gw.mcp_url("files"), &alice, "ws-task").await);
    assert_eq!(me["claims"]["workspace"], json!(["file:///work/alice/"]));
    // From the configuration, for a subject whose token has no claim.
    let bob = gw.token("bob", "files:read");
    assert_eq!(read_resource(&gw, &bob, "file:///work/alice/notes.txt").await.status, 403);
    assert_ne!(read_resource(&gw, &bob, "file:///work/bob/notes.txt").await.status, 403);
    let me = whoami_of(&modern_whoami(&gw.mcp_url("files"), &bob, "ws-task").await);
    assert_eq!(me["claims"]["workspace"], json!(["file:///work/bob/"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unlisted_tool_is_refused_without_echoing_its_name_into_headers() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    // A JSON-escaped CRLF in the tool name must not become a response header (both eras).
    let legacy = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x\r\nSet-Cookie: a=b","arguments":{}}}"#;
    let modern = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x\r\nSet-Cookie: a=b","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let modern_headers = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "=?base64?eA0KU2V0LUNvb2tpZTogYT1i?=")];
    for (body, headers) in [(legacy, &[][..]), (modern, &modern_headers[..])] {
        let resp = post(&gw.mcp_url("files"), &token, headers, body).await;
        assert_eq!(resp.status, 403, "{}", resp.body);
        assert!(resp.header("set-cookie").is_none(), "header injection: {:?}", resp.headers);
        for value in resp.headers.values() {
            assert!(!value.as_bytes().windows(10).any(|w| w == b"Set-Cookie"), "client text in a header: {value:?}");
        }
        assert_eq!(resp.json()["error"]["data"]["reason"], "tool_not_allowed");
        assert_eq!(resp.json()["id"], 5);
    }
}
