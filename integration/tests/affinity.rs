//! Workflow affinity in both eras through a real Envoy: ring-hash pinning on the filter's key,
//! sealed legacy sessions, modern task bindings, expiry, revocation and re-binding.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use integration::harness::{Gateway, Options};
use serde_json::{json, Value};

fn short_lifetimes(idle: u64, absolute: u64) -> Options {
    let mut options = Options::default();
    options.filter_config["sessions"] = json!({"idle_secs": idle, "absolute_secs": absolute});
    options.filter_config["tasks"] = json!({"idle_secs": idle, "absolute_secs": absolute});
    options
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_session_stays_on_one_replica_while_sessions_spread() {
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    let url = gw.mcp_url("files");
    let session = Legacy::open(&url, &token).await;
    let first = session.whoami().await;
    for _ in 0..200 {
        let me = session.whoami().await;
        assert_eq!(me["replica"], first["replica"], "a session moved replicas");
        assert_eq!(me["session"], first["session"], "the upstream session changed");
    }
    let mut replicas = HashSet::new();
    for _ in 0..50 {
        replicas.insert(Legacy::open(&url, &token).await.whoami().await["replica"].to_string());
    }
    assert_eq!(replicas.len(), 2, "50 sessions all landed on {replicas:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn modern_task_stays_on_one_replica_and_other_subject_is_another_binding() {
    let gw = Gateway::start(Options::default());
    let alice = gw.token("alice", "files:read");
    let bob = gw.token("bob", "files:read");
    let url = gw.mcp_url("files");
    let first = whoami_of(&modern_whoami(&url, &alice, "task-pinned").await);
    for _ in 0..200 {
        let me = whoami_of(&modern_whoami(&url, &alice, "task-pinned").await);
        assert_eq!(me["replica"], first["replica"]);
        assert_eq!(me["headers"]["x-mcp-affinity"], first["headers"]["x-mcp-affinity"]);
    }
    let bobs = whoami_of(&modern_whoami(&url, &bob, "task-pinned").await);
    assert_ne!(bobs["headers"]["x-mcp-affinity"], first["headers"]["x-mcp-affinity"]);
    let mut replicas = HashSet::new();
    for i in 0..50 {
        replicas.insert(whoami_of(&modern_whoami(&url, &alice, &format!("task-{i}")).await)["replica"].to_string());
    }
    assert_eq!(replicas.len(), 2, "50 tasks all landed on {replicas:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateway_replicas_serve_one_legacy_session_interchangeably() {
    let gw = Gateway::start(Options::default());
    let (_second, ports) = gw.second_gateway(&Options::default());
    let token = gw.token("alice", "files:read");
    let session = Legacy::open(&gw.mcp_url("files"), &token).await;
    let other = Legacy { url: format!("http://127.0.0.1:{}/mcp/files", ports.gateway), ..Legacy::open(&gw.mcp_url("files"), &token).await };
    let other = Legacy { handle: session.handle.clone(), ..other };
    let first = session.whoami().await;
    for i in 0..20 {
        let me = if i % 2 == 0 { other.whoami().await } else { session.whoami().await };
        assert_eq!((&me["replica"], &me["session"]), (&first["replica"], &first["session"]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_truncated_flipped_or_stolen_handles_get_404() {
    let gw = Gateway::start(Options::default());
    let alice = gw.token("alice", "files:read");
    let mallory = gw.token("mallory", "files:read");
    let url = gw.mcp_url("files");
    let session = Legacy::open(&url, &alice).await;
    let mut flipped = session.handle.clone().into_bytes();
    flipped[30] = if flipped[30] == b'A' { b'B' } else { b'A' };
    let before = backend_requests(&gw).await;
    for (what, handle, token) in [
        ("forged", "dGhpcyBpcyBub3QgYSBoYW5kbGU".to_string(), &alice),
        ("truncated", session.handle[..session.handle.len() - 5].to_string(), &alice),
        ("bit-flipped", String::from_utf8(flipped).unwrap(), &alice),
        ("another subject", session.handle.clone(), &mallory),
    ] {
        let resp = Legacy { url: url.clone(), token: token.clone(), handle }.call("whoami", "{}").await;
        assert_eq!(resp.status, 404, "{what}: {}", resp.body);
        assert_eq!(resp.rpc_code(), -32013, "{what}");
        assert_eq!(resp.json()["id"], 1, "{what}");
    }
    assert_eq!(backend_requests(&gw).await, before, "a refused handle reached a backend");
    wait_audit(&gw, |r| r["reason"] == "session_hijack").await;
    assert_eq!(session.whoami().await["claims"]["sub"], "alice", "the owner's session still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_bindings_are_refused_and_rebinding_works() {
    let gw = Gateway::start(short_lifetimes(2, 4));
    let token = gw.token("alice", "files:read");
    let url = gw.mcp_url("files");
    let session = Legacy::open(&url, &token).await;
    session.whoami().await;
    assert_eq!(whoami_of(&modern_whoami(&url, &token, "task-short").await)["backend"], "files");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Idle: legacy 404 (initialize again), modern 403 -32010 task_expired (start a new task).
    let resp = session.call("whoami", "{}").await;
    assert_eq!(resp.status, 404, "{}", resp.body);
    let resp = modern_whoami(&url, &token, "task-short").await;
    assert_eq!((resp.status, resp.rpc_code()), (403, -32010), "{}", resp.body);
    assert_eq!(resp.json()["error"]["data"]["reason"], "task_expired");
    Legacy::open(&url, &token).await.whoami().await;
    whoami_of(&modern_whoami(&url, &token, "task-new").await);
    // Absolute: a busy session still ends at 4 s. Busy means a use every half second: the
    // gateway's clock counts whole seconds, so uses a second apart can straddle two ticks and
    // meet the 2 s idle limit first.
    let busy = Legacy::open(&url, &token).await;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let resp = busy.call("whoami", "{}").await;
        if resp.status == 404 {
            wait_audit(&gw, |r| r["reason"] == "session_expired").await;
            return;
        }
    }
    panic!("a busy session outlived its absolute expiry");
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_by_session_task_and_subject_applies_on_every_worker() {
    let gw = Gateway::start(Options { concurrency: 2, ..Options::default() });
    let alice = gw.token("alice", "files:read");
    let bob = gw.token("bob", "files:read");
    let url = gw.mcp_url("files");
    let revoke = |body: serde_json::Value| {
        let admin = gw.gateway_admin_url("/revoke");
        async move { send("POST", &admin, &[("content-type", "application/json")], &body.to_string()).await }
    };
    // By session.
    let s1 = Legacy::open(&url, &alice).await;
    let s2 = Legacy::open(&url, &alice).await;
    let resp = revoke(json!({"session": s1.handle})).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.json()["revoked"]["session"].is_string());
    // Several requests: new connections spread over both workers, each must refuse.
    for _ in 0..6 {
        assert_eq!(s1.call("whoami", "{}").await.status, 404);
    }
    s2.whoami().await;
    // By task.
    whoami_of(&modern_whoami(&url, &alice, "task-r").await);
    assert_eq!(revoke(json!({"task": "task-r"})).await.status, 200);
    for _ in 0..6 {
        let resp = modern_whoami(&url, &alice, "task-r").await;
        assert_eq!((resp.status, resp.json()["error"]["data"]["reason"].as_str()), (403, Some("task_revoked")));
    }
    // By subject: everything of alice issued until now; bob is untouched. Her task is bound
    // before the order: one first used after it (a later second) is a new workflow, not revoked.
    whoami_of(&modern_whoami(&url, &bob, "task-b").await);
    whoami_of(&modern_whoami(&url, &alice, "task-other").await);
    assert_eq!(revoke(json!({"subject": "alice"})).await.status, 200);
    for _ in 0..6 {
        assert_eq!(s2.call("whoami", "{}").await.status, 404);
        assert_eq!(modern_whoami(&url, &alice, "task-other").await.status, 403);
    }
    whoami_of(&modern_whoami(&url, &bob, "task-b").await);
    // Bad orders.
    assert_eq!(revoke(json!({"nothing": 1})).await.status, 400);
    assert_eq!(revoke(json!({"task": "a", "subject": "b"})).await.status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_replica_fails_cleanly_and_rebinding_lands_on_the_survivor() {
    let mut gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    let url = gw.mcp_url("files");
    let session = Legacy::open(&url, &token).await;
    let me = session.whoami().await;
    let index = if me["replica"] == "files-1" { 0 } else { 1 };
    gw.backends[index].kill();
    // The session's replica is gone: the request fails cleanly (Envoy skips the dead host, and
    // the survivor does not know the old upstream session, so it answers 404: re-initialize).
    let resp = tokio::time::timeout(Duration::from_secs(10), session.call("whoami", "{}")).await.expect("no hang");
    assert!(resp.status == 404 || resp.status >= 500, "the dead replica's session must fail: {} {}", resp.status, resp.body);
    // Re-binding: every new session lands on the surviving replica.
    for _ in 0..10 {
        let again = tokio::time::timeout(Duration::from_secs(10), async { Legacy::open(&url, &token).await.whoami().await })
            .await
            .expect("no hang");
        assert_ne!(again["replica"], me["replica"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rmcp_legacy_client_reinitializes_by_itself_after_its_session_expires() {
    use integration::client::{Era, McpClient};
    let gw = Gateway::start(short_lifetimes(2, 60));
    let token = gw.token("alice", "files:read");
    let client = McpClient::connect(&gw.mcp_url("files"), Era::Legacy2025_06_18, Some(&token), &[]).await.unwrap();
    let first = client.session_id().expect("handle");
    assert_eq!(client.call_tool("echo", json!({"text": "before"})).await.unwrap(), "before");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The gateway answers 404 for the idle session; the SDK initializes again and retries.
    assert_eq!(client.call_tool("echo", json!({"text": "after"})).await.unwrap(), "after");
    let second = client.session_id().expect("handle");
    assert_ne!(first, second, "the client re-bound to a new session");
    let inits = |records: &[Value]| records.iter().filter(|r| r["method"] == "initialize" && r["decision"] == "allow").count();
    let records = audit_when(&gw, |all| all.iter().any(|r| r["reason"] == "session_idle_expired") && inits(all) >= 2).await;
    assert_eq!(inits(&records), 2, "exactly one re-initialization");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_pulling_the_revocation_feed_converges_within_its_poll_interval() {
    let gw = Gateway::start(Options::default());
    let mut options = Options::default();
    options.filter_config["revocation_feed"] = json!({"cluster": "revocation_feed", "poll_secs": 1});
    let (second, ports) = gw.second_gateway(&options);
    let url_b = format!("http://127.0.0.1:{}/mcp/files", ports.gateway);
    let token = gw.token("alice", "files:read");
    whoami_of(&modern_whoami(&url_b, &token, "fleet-task").await);
    // Revoked at replica A only; B learns it from A's feed.
    let resp = send("POST", &gw.gateway_admin_url("/revoke"), &[("content-type", "application/json")], r#"{"task":"fleet-task"}"#).await;
    assert_eq!(resp.status, 200);
    let start = std::time::Instant::now();
    loop {
        let resp = modern_whoami(&url_b, &token, "fleet-task").await;
        if resp.status == 403 {
            assert_eq!(resp.json()["error"]["data"]["reason"], "task_revoked");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "replica B still serves a task revoked at A:\n{}", second.output());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // B's own feed endpoint now carries the entry too (it is in B's shared table).
    let feed = send("GET", &format!("http://127.0.0.1:{}/revocations", ports.gateway_admin), &[], "").await;
    assert!(feed.json()["tasks"]["fleet-task"].is_u64(), "{}", feed.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_ends_the_session_at_the_gateway_too() {
    let gw = Gateway::start(Options { concurrency: 2, ..Options::default() });
    let token = gw.token("alice", "files:read");
    let session = Legacy::open(&gw.mcp_url("files"), &token).await;
    // New connections spread over both workers: each has used the session in this second, which
    // lets a worker skip reading its use record, and must still see a DELETE made on the other.
    for _ in 0..4 {
        session.whoami().await;
    }
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), ("mcp-session-id", session.handle.as_str()), ("mcp-protocol-version", LEGACY_VERSION)];
    let resp = send("DELETE", &gw.mcp_url("files"), &headers, "").await;
    assert!(resp.status < 300, "DELETE: {} {}", resp.status, resp.body);
    // The handle is dead at the gateway, on every worker, even if a backend still knew the session.
    for _ in 0..6 {
        let after = session.call("whoami", "{}").await;
        assert_eq!(after.status, 404, "{}", after.body);
        assert_eq!(after.json()["error"]["data"]["reason"], "session_ended");
    }
}
