//! The whole decision path, natively, with a fixed clock.

use jwt_simple::prelude::*;

use super::*;
use crate::host::test_host::FixedHost;
use crate::identity::tests::{claims, idp, NOW};

/// Counts allocations, so the warm-request benchmark can report them per request.
struct Counting;

static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

struct World {
    gw: Gateway,
    idp: Ed25519KeyPair,
    host: FixedHost,
    /// The plugin configuration `gw` was built from.
    config: String,
}

fn world(extra: &str) -> World {
    let (kp, _) = idp();
    let jwks = format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk());
    let body = format!(
        r#"{{"identity_providers":[{{"issuer":"demo-idp","audiences":["mcp-gateway"],"jwks":{jwks}}}],
        "max_body_bytes":4096,
        "backends":{{"files":{{"scopes":["files:read","files:write"],"tools":{{"echo":[],"read_file":["files:read"],"write_file":["files:write"]}}}},
                     "reports":{{"scopes":["reports:write","files:read"],"tools":{{"summarize":["reports:write"]}}}}}},
        "delegations":[{{"from":"reports","to":"files","scopes":["files:read"]}}]{extra}}}"#
    );
    World { gw: gateway(&body), idp: kp, host: FixedHost::at(NOW), config: body }
}

fn gateway(config: &str) -> Gateway {
    let config = Config::load(config.as_bytes()).unwrap();
    let trust = Trust::build(&config, &crate::trust::tests::signing_env()).unwrap();
    Gateway::new(config, trust)
}

impl World {
    /// Runs `work` on another worker of the same Envoy: the same configuration and shared data,
    /// its own memory (caches, memos).
    fn on_other_worker<T>(&mut self, work: impl FnOnce(&mut World) -> T) -> T {
        let mine = std::mem::replace(&mut self.gw, gateway(&self.config));
        let out = work(self);
        self.gw = mine;
        out
    }

    fn token(&self, scope: &str) -> String {
        self.idp.sign(claims("alice", scope, NOW - 10, 600)).unwrap()
    }

    /// Runs both phases; returns the step and the audit record.
    fn send(&mut self, method: &str, path: &str, extra: &[(&str, &str)], body: &str) -> (Step, Record) {
        let mut h: Vec<(&str, &str)> = vec![(":method", method), (":path", path)];
        if method == "POST" {
            h.push(("content-type", "application/json"));
        }
        h.extend(extra);
        let mut rec = Record::default();
        let step = on_headers(&mut self.gw, &self.host, &h, body.is_empty() && method != "POST", &mut rec);
        let step = match step {
            Step::ReadBody(p) => on_body(&mut self.gw, &self.host, &h, p, body.as_bytes(), &mut rec),
            other => other,
        };
        (step, rec)
    }

    /// A modern `tools/call` within task `t-1`.
    fn modern_call(&mut self, tool: &str, token: &str) -> (Step, Record) {
        let auth = format!("Bearer {token}");
        let headers = [("authorization", auth.as_str()), ("mcp-task-id", "t-1"), ("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", tool)];
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#);
        self.send("POST", "/mcp/files", &headers, &body)
    }

    fn call(&mut self, tool: &str, token: &str) -> (Step, Record) {
        let body = format!(r#"{{"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#);
        let auth = format!("Bearer {token}");
        self.send("POST", "/mcp/files", &[("authorization", &auth), ("mcp-task-id", "t-1")], &body)
    }
}

fn status(step: &Step) -> u32 {
    match step {
        Step::Reply(r) => r.status,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn forwarded_token(step: &Step) -> String {
    let Step::Forward(edits) = step else { panic!("expected forward, got {step:?}") };
    let (_, v) = edits.set.iter().find(|(k, _)| *k == "authorization").expect("authorization set");
    v.strip_prefix("Bearer ").unwrap().to_string()
}

#[test]
fn missing_token_is_401_with_resource_metadata_challenge() {
    let mut w = world("");
    let (step, rec) = w.send("POST", "/mcp/files", &[], "{}");
    let Step::Reply(reply) = step else { panic!() };
    assert_eq!(reply.status, 401);
    let challenge = &reply.headers.iter().find(|(k, _)| *k == "www-authenticate").unwrap().1;
    assert_eq!(challenge, r#"Bearer resource_metadata="http://127.0.0.1:10000/.well-known/oauth-protected-resource/mcp/files""#);
    assert_eq!((rec.decision, rec.reason), (audit::DENY, "token_missing"));
}

#[test]
fn user_token_is_replaced_by_a_minted_backend_token() {
    let mut w = world("");
    let user = w.token("files:read reports:write");
    let (step, rec) = w.call("read_file", &user);
    let minted = forwarded_token(&step);
    assert_ne!(minted, user);
    let claims = w.gw.trust.signer.public_key().verify_token::<crate::identity::McpClaims>(&minted, Some(VerificationOptions {
        artificial_time: Some(Duration::from_secs(NOW)),
        ..Default::default()
    })).unwrap();
    assert_eq!(claims.issuer.as_deref(), Some("mcp-gateway"));
    assert_eq!(claims.subject.as_deref(), Some("alice"));
    assert!(claims.audiences.unwrap().contains(&HashSet::from(["files".to_string()])));
    assert_eq!(claims.custom.scope.as_deref(), Some("files:read"));
    assert_eq!((rec.decision, &*rec.scope, rec.depth), (audit::ALLOW, "files:read", 1));
    assert_eq!(*rec.act, ["mcp-gateway"]);
}

#[test]
fn tool_without_its_scope_is_403_insufficient_scope_with_id() {
    let mut w = world("");
    let user = w.token("files:read");
    let (step, rec) = w.call("write_file", &user);
    let Step::Reply(reply) = step else { panic!() };
    assert_eq!(reply.status, 403);
    assert!(String::from_utf8_lossy(&reply.body).contains(r#""id":"r1""#));
    assert!(reply.headers.iter().any(|(k, v)| *k == "www-authenticate" && v.contains(r#"scope="files:write""#)));
    assert_eq!(rec.reason, "scope_missing");
}

#[test]
fn verified_and_minted_tokens_are_cached() {
    let mut w = world("");
    let user = w.token("files:read");
    let first = forwarded_token(&w.call("read_file", &user).0);
    let second = forwarded_token(&w.call("read_file", &user).0);
    assert_eq!(first, second, "minted token reused within one task");
    assert_eq!((w.gw.verify_cache.hits(), w.gw.mint_cache.hits()), (1, 1));
}

#[test]
fn expired_user_token_is_401_invalid_token() {
    let mut w = world("");
    let user = w.token("files:read");
    w.host.now.set(NOW + 10_000);
    let (step, rec) = w.call("read_file", &user);
    assert_eq!(status(&step), 401);
    assert_eq!(rec.reason, "token_expired");
}

#[test]
fn hop_token_from_reports_gets_a_narrower_files_token() {
    let mut w = world("");
    let user = w.token("files:read files:write reports:write");
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"summarize","arguments":{}}}"#;
    let (step, _) = w.send("POST", "/mcp/reports", &[("authorization", &format!("Bearer {user}")), ("mcp-task-id", "task-9")], body);
    let reports_token = forwarded_token(&step);
    let (step, rec) = w.call("read_file", &reports_token);
    forwarded_token(&step);
    assert_eq!(&*rec.scope, "files:read");
    assert_eq!(*rec.act, ["reports", "mcp-gateway"]);
    assert_eq!((rec.depth, rec.task.as_str()), (2, "task-9"));
    let (step, rec) = w.call("write_file", &reports_token);
    assert_eq!(status(&step), 403, "files:write never crosses the delegation");
    assert_eq!(rec.reason, "scope_missing");
}

#[test]
fn files_token_cannot_call_reports() {
    let mut w = world("");
    let user = w.token("files:read reports:write");
    let files_token = forwarded_token(&w.call("read_file", &user).0);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"summarize","arguments":{}}}"#;
    let (step, rec) = w.send("POST", "/mcp/reports", &[("authorization", &format!("Bearer {files_token}"))], body);
    assert_eq!(status(&step), 403);
    assert_eq!(rec.reason, "delegation_not_allowed");
}

#[test]
fn client_sent_affinity_header_is_removed_first() {
    let mut w = world("");
    let user = w.token("files:read");
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let (step, _) = w.send("POST", "/mcp/files", &[("authorization", &format!("Bearer {user}")), ("x-mcp-affinity", "forged")], body);
    let Step::Forward(edits) = step else { panic!() };
    assert!(edits.remove.contains(&"x-mcp-affinity".to_string()));
    assert!(edits.set.contains(&("mcp-method", "tools/list".into())));
}

#[test]
fn every_request_under_the_route_prefix_is_audited_and_no_other() {
    let mut w = world("");
    let auth = format!("Bearer {}", w.token(""));
    let a = [("authorization", auth.as_str())];
    let (step, rec) = w.send("POST", "/mcp/nope", &a, "{}");
    assert_eq!((status(&step), rec.audited, rec.reason, rec.backend.as_str()), (404, true, "unknown_backend", ""));
    assert!(w.send("POST", "/mcp/files", &a, "{nope").1.audited);
    for path in ["/.well-known/jwks.json", "/healthz", "/mcp"] {
        assert!(!w.send("GET", path, &a, "").1.audited, "{path}");
    }
}

#[test]
fn envelope_errors_map_to_contract_statuses() {
    let mut w = world("");
    let auth = format!("Bearer {}", w.token(""));
    let a = [("authorization", auth.as_str())];
    assert_eq!(status(&w.send("POST", "/mcp/files", &a, "{nope").0), 400);
    assert_eq!(status(&w.send("POST", "/mcp/files", &a, "[]").0), 400);
    assert_eq!(status(&w.send("POST", "/mcp/files", &a, &" ".repeat(5000)).0), 413);
    assert_eq!(status(&w.send("POST", "/mcp/nope", &a, "{}").0), 404);
    assert_eq!(status(&w.send("PUT", "/mcp/files", &a, "").0), 405);
    let bad_task = [("authorization", auth.as_str()), ("mcp-task-id", "a b")];
    assert_eq!(status(&w.send("POST", "/mcp/files", &bad_task, "{}").0), 400);
}

#[test]
fn modern_get_is_405_and_legacy_get_is_authorized() {
    let mut w = world("");
    let auth = format!("Bearer {}", w.token(""));
    let modern = [("authorization", auth.as_str()), ("mcp-protocol-version", "2026-07-28")];
    assert_eq!(status(&w.send("GET", "/mcp/files", &modern, "").0), 405);
    let legacy = [("authorization", auth.as_str()), ("mcp-protocol-version", "2025-06-18")];
    forwarded_token(&w.send("GET", "/mcp/files", &legacy, "").0);
}

#[test]
fn well_known_endpoints_are_served_locally() {
    let mut w = world("");
    let Step::Reply(jwks) = w.send("GET", "/.well-known/jwks.json", &[], "").0 else { panic!() };
    assert_eq!(jwks.status, 200);
    assert!(String::from_utf8_lossy(&jwks.body).contains("\"kid\":\"gw-1\""));
    let Step::Reply(meta) = w.send("GET", "/.well-known/oauth-protected-resource/mcp/files", &[], "").0 else { panic!() };
    let doc: serde_json::Value = serde_json::from_slice(&meta.body).unwrap();
    assert_eq!(doc["resource"], "http://127.0.0.1:10000/mcp/files");
    assert_eq!(doc["authorization_servers"][0], "demo-idp");
}

fn set_header<'a>(step: &'a Step, name: &str) -> Option<&'a str> {
    let Step::Forward(edits) = step else { panic!("expected forward, got {step:?}") };
    edits.set.iter().find(|(k, _)| *k == name).map(|(_, v)| &**v)
}

impl World {
    fn token_for(&self, sub: &str, scope: &str) -> String {
        self.idp.sign(claims(sub, scope, NOW - 10, 100_000)).unwrap()
    }

    /// A legacy initialize whose upstream answers with `upstream_id`: returns the client's handle.
    fn initialize(&mut self, token: &str, upstream_id: &str) -> String {
        let body = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
        let (step, _) = self.send("POST", "/mcp/files", &[("authorization", &format!("Bearer {token}"))], body);
        assert!(set_header(&step, "x-mcp-affinity").is_some());
        let Step::Forward(edits) = step else { unreachable!() };
        let response = [(":status", "200"), ("mcp-session-id", upstream_id)];
        on_response(&self.gw, &self.host, &edits.on_response, &response).session.expect("handle")
    }

    fn legacy_call(&mut self, token: &str, handle: &str) -> (Step, Record) {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        self.send("POST", "/mcp/files", &[("authorization", &format!("Bearer {token}")), ("mcp-session-id", handle)], body)
    }

    fn modern_task_call(&mut self, token: &str, task: &str) -> (Step, Record) {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let h = [("authorization", format!("Bearer {token}")), ("mcp-task-id", task.to_string()), ("mcp-protocol-version", "2026-07-28".into()), ("mcp-method", "tools/call".into()), ("mcp-name", "echo".into())];
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.send("POST", "/mcp/files", &h, body)
    }
}

#[test]
fn sealed_session_restores_upstream_id_and_affinity() {
    let mut w = world("");
    let alice = w.token_for("alice", "files:read");
    let handle = w.initialize(&alice, "upstream-uuid-1");
    assert!(!handle.contains("upstream-uuid-1"));
    let (step, rec) = w.legacy_call(&alice, &handle);
    assert_eq!(set_header(&step, "mcp-session-id"), Some("upstream-uuid-1"));
    let (again, _) = w.legacy_call(&alice, &handle);
    assert_eq!(set_header(&step, "x-mcp-affinity"), set_header(&again, "x-mcp-affinity"));
    assert_eq!(rec.session.len(), 12, "audit carries a short tag, not the handle");
}

#[test]
fn a_plain_response_needs_no_header_edit_and_internal_headers_are_removed_once() {
    let w = world(r#","internal_headers":["x-backend-secret"]"#);
    let plain = [(":status", "201"), ("content-type", "application/json")];
    let edits = on_response(&w.gw, &w.host, &OnResponse::Strip, &plain);
    assert_eq!(edits, ResponseEdits { status: 201, ..Default::default() });
    let leaky = [(":status", "200"), ("x-mcp-affinity", "a"), ("x-backend-secret", "s"), ("x-mcp-affinity", "b"), ("mcp-session-id", "up-1")];
    let edits = on_response(&w.gw, &w.host, &OnResponse::Strip, &leaky);
    assert_eq!(edits.remove, vec!["x-mcp-affinity", "x-backend-secret", "mcp-session-id"]);
    assert_eq!((edits.session, edits.opened), (None, false));
}

#[test]
fn a_live_session_shows_its_handle_only_where_the_upstream_sent_an_id() {
    let w = world("");
    let plan = OnResponse::Handle("the-handle".into());
    let edits = on_response(&w.gw, &w.host, &plan, &[(":status", "200"), ("mcp-session-id", "up-1")]);
    assert_eq!((edits.session.as_deref(), edits.remove.len(), edits.opened), (Some("the-handle"), 0, false));
    let edits = on_response(&w.gw, &w.host, &plan, &[(":status", "202")]);
    assert_eq!((edits.status, edits.session, edits.remove.len()), (202, None, 0));
}

#[test]
fn session_of_another_subject_or_tampered_is_404() {
    let mut w = world("");
    let alice = w.token_for("alice", "files:read");
    let mallory = w.token_for("mallory", "files:read");
    let handle = w.initialize(&alice, "upstream-uuid-1");
    let (step, rec) = w.legacy_call(&mallory, &handle);
    assert_eq!((status(&step), rec.reason), (404, "session_hijack"));
    let mut flipped = handle.clone().into_bytes();
    flipped[40] = if flipped[40] == b'A' { b'B' } else { b'A' };
    let (step, rec) = w.legacy_call(&alice, &String::from_utf8(flipped).unwrap());
    assert_eq!((status(&step), rec.reason), (404, "session_invalid"));
}

#[test]
fn idle_session_expires_and_minted_token_never_outlives_it() {
    let mut w = world(r#","sessions":{"idle_secs":60,"absolute_secs":120}"#);
    let alice = w.token_for("alice", "files:read");
    let handle = w.initialize(&alice, "u-1");
    let (step, rec) = w.legacy_call(&alice, &handle);
    forwarded_token(&step);
    assert_eq!(rec.decision, audit::ALLOW);
    w.host.now.set(NOW + 61);
    let (step, rec) = w.legacy_call(&alice, &handle);
    assert_eq!((status(&step), rec.reason), (404, "session_idle_expired"));
}

#[test]
fn modern_task_binds_per_subject_and_expires_with_32010() {
    let mut w = world(r#","tasks":{"idle_secs":60,"absolute_secs":600}"#);
    let alice = w.token_for("alice", "files:read");
    let bob = w.token_for("bob", "files:read");
    let a1 = set_header(&w.modern_task_call(&alice, "t-1").0, "x-mcp-affinity").unwrap().to_string();
    let a2 = set_header(&w.modern_task_call(&alice, "t-1").0, "x-mcp-affinity").unwrap().to_string();
    let b1 = set_header(&w.modern_task_call(&bob, "t-1").0, "x-mcp-affinity").unwrap().to_string();
    assert_eq!(a1, a2);
    assert_ne!(a1, b1, "another subject's same task id is another binding");
    w.host.now.set(NOW + 61);
    let (step, rec) = w.modern_task_call(&alice, "t-1");
    let Step::Reply(reply) = step else { panic!() };
    assert_eq!((reply.status, rec.reason), (403, "task_expired"));
    assert!(String::from_utf8_lossy(&reply.body).contains("-32010"));
    assert!(set_header(&w.modern_task_call(&alice, "t-2").0, "x-mcp-affinity").is_some(), "a new task starts clean");
}

/// Native cost of the crypto and of the caches in front of it (not a timed test: run with
/// `cargo test -p filter --release -- --ignored bench_verify_and_mint --nocapture`).
#[test]
#[ignore]
fn bench_verify_and_mint() {
    use std::time::Instant;
    let w = world("");
    let user = w.token("files:read reports:write");
    let n = 2000;
    let per = |start: Instant| start.elapsed().as_nanos() / n as u128;
    let t = Instant::now();
    let mut caller = None;
    for _ in 0..n {
        caller = Some(w.gw.trust.verify(&user, NOW, 30).unwrap());
    }
    let verify = per(t);
    let caller = Rc::new(caller.unwrap());
    let mut cache = VerifyCache::new(16);
    cache.put(&user, caller.clone(), NOW);
    let t = Instant::now();
    for _ in 0..n {
        assert!(cache.get(&user, NOW).is_some());
    }
    let verify_cached = per(t);
    let grant = delegation::plan(&w.gw.config, &caller, "files", "t", NOW, None).unwrap();
    let t = Instant::now();
    for i in 0..n {
        delegation::mint(&grant, &w.gw.trust.signer, "mcp-gateway", format!("j{i}"), NOW).unwrap();
    }
    let mint = per(t);
    let mut mints = MintCache::new(16);
    mints.put(&grant, Rc::new(delegation::mint(&grant, &w.gw.trust.signer, "gw", "j".into(), NOW).unwrap()), NOW);
    let t = Instant::now();
    for _ in 0..n {
        assert!(mints.get(&grant, NOW, 30).is_some());
    }
    let mint_cached = per(t);
    println!("verify {verify} ns, verify cached {verify_cached} ns, mint {mint} ns, mint cached {mint_cached} ns");
}

/// Native cost of one warm modern `tools/call` through both phases (caches hot, task bound):
/// `cargo test -p filter --release -- --ignored bench_warm_request --nocapture`.
#[test]
#[ignore]
fn bench_warm_request() {
    use std::time::Instant;
    let mut w = world("");
    let user = w.token("files:read");
    let auth = format!("Bearer {user}");
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let h = [
        (":method", "POST"), (":path", "/mcp/files"), ("content-type", "application/json"), ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "echo"), ("mcp-task-id", "bench-task"),
        ("x-request-id", "5b6154d4-2747-4844-9fc7-132074f8b78b"), ("user-agent", "wrk"), ("accept", "application/json"),
    ];
    let n = 20_000;
    let caller = Rc::new(w.gw.trust.verify(&user, NOW, 30).unwrap());
    let mut run = |phase: &mut dyn FnMut(&mut World)| {
        let t = Instant::now();
        for _ in 0..n {
            phase(&mut w);
        }
        t.elapsed().as_nanos() / n as u128
    };
    let allocations = ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed);
    run(&mut |w| {
        let mut rec = Record::default();
        let Step::ReadBody(p) = on_headers(&mut w.gw, &w.host, &h, false, &mut rec) else { panic!() };
        let Step::Forward(_) = on_body(&mut w.gw, &w.host, &h, p, body.as_bytes(), &mut rec) else { panic!() };
        std::hint::black_box(rec.json());
    });
    // Single-threaded: the other tests are not run with --ignored alone.
    let per_request = (ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed) - allocations) / n as u64;
    let full = run(&mut |w| {
        let mut rec = Record::default();
        let Step::ReadBody(p) = on_headers(&mut w.gw, &w.host, &h, false, &mut rec) else { panic!() };
        let Step::Forward(_) = on_body(&mut w.gw, &w.host, &h, p, body.as_bytes(), &mut rec) else { panic!() };
        std::hint::black_box(rec.json());
    });
    if std::env::var_os("BENCH_WARM_ONLY").is_some() {
        println!("warm request {full} ns");
        return;
    }
    let audit_only = run(&mut |_| {
        let rec = Record { sub: "alice".into(), backend: "files".into(), method: "tools/call".into(), jti: "x".repeat(22).into(), ..Default::default() };
        std::hint::black_box(rec.json());
    });
    let hash_only = run(&mut |_| {
        std::hint::black_box(crate::identity::token_hash(&user));
    });
    let envelope_only = run(&mut |_| {
        std::hint::black_box(crate::envelope::parse(body.as_bytes()).is_ok());
    });
    let task_lookup = run(&mut |w| {
        let ask = workflow::Ask {
            caller: &caller,
            backend: "files",
            era: Era::Modern,
            method: "tools/call",
            task_header: Some("bench-task"),
            session_header: None,
        };
        std::hint::black_box(workflow::bind(&workflow_config(&w.gw), &w.host, &ask).unwrap());
    });
    println!("warm request {full} ns, {per_request} allocations (audit line alone {audit_only} ns, envelope alone {envelope_only} ns, token SHA-256 alone {hash_only} ns, task binding lookup {task_lookup} ns)");
}

#[test]
fn a_busy_task_skips_the_shared_read_within_a_second_yet_revocation_applies_at_once() {
    use crate::session::Revocations;
    let mut w = world("");
    let user = w.token("files:read");
    let task_buckets = |w: &World| w.host.shared.borrow().keys().filter(|k| k.starts_with("mcpgw:task:")).count();
    let call = |w: &mut World| w.modern_call("echo", &user);
    forwarded_token(&call(&mut w).0);
    assert_eq!(task_buckets(&w), 1);
    // Within the same second the worker neither reads nor rewrites the record: drop it, and it
    // stays dropped.
    w.host.shared.borrow_mut().retain(|k, _| !k.starts_with("mcpgw:task:"));
    forwarded_token(&call(&mut w).0);
    assert_eq!(task_buckets(&w), 0);
    // A second later the record is read (and, missing, written) again.
    w.host.now.set(NOW + 1);
    forwarded_token(&call(&mut w).0);
    assert_eq!(task_buckets(&w), 1);
    // Revocation does not wait for the second to end.
    let mut revoked = Revocations::default();
    revoked.revoke_task("t-1", NOW + 1);
    w.host.shared.borrow_mut().insert(crate::workflow::REVOCATIONS_KEY.to_string(), (revoked.encode(), 1));
    let (step, rec) = call(&mut w);
    assert_eq!((status(&step), rec.reason), (403, "task_revoked"));
}

#[test]
fn a_busy_session_skips_the_shared_read_within_a_second_yet_a_delete_on_another_worker_applies_at_once() {
    let mut w = world("");
    let alice = w.token_for("alice", "files:read");
    let handle = w.initialize(&alice, "upstream-1");
    let buckets = |w: &World| -> Vec<(String, (Vec<u8>, u32))> {
        w.host.shared.borrow().iter().filter(|(k, _)| k.starts_with("mcpgw:sess:")).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    forwarded_token(&w.legacy_call(&alice, &handle).0);
    let stored = buckets(&w);
    assert_eq!(stored.len(), 1);
    // Within the same second the worker neither reads nor rewrites the record: drop it, and it
    // stays dropped.
    w.host.shared.borrow_mut().retain(|k, _| !k.starts_with("mcpgw:sess:"));
    forwarded_token(&w.legacy_call(&alice, &handle).0);
    assert!(buckets(&w).is_empty());
    w.host.shared.borrow_mut().extend(stored);
    // Another worker ends the session in that same second: this worker refuses it at once.
    let auth = format!("Bearer {alice}");
    let (step, _) = w.on_other_worker(|w| w.send("DELETE", "/mcp/files", &[("authorization", &auth), ("mcp-session-id", &handle)], ""));
    assert!(matches!(step, Step::Forward(_)), "{step:?}");
    let (step, rec) = w.legacy_call(&alice, &handle);
    assert_eq!((status(&step), rec.reason), (404, "session_ended"));
}

#[test]
fn the_revocation_table_is_decoded_again_only_when_its_version_changes() {
    use crate::session::Revocations;
    let mut w = world("");
    let user = w.token("files:read");
    let key = crate::workflow::REVOCATIONS_KEY.to_string();
    let table = |task: &str| {
        let mut t = Revocations::default();
        t.revoke_task(task, NOW);
        t.encode()
    };
    w.host.shared.borrow_mut().insert(key.clone(), (table("other"), 7));
    forwarded_token(&w.modern_call("echo", &user).0);
    // Other bytes under the same version: the decoded table stands (Envoy never does this; it
    // shows that the version, not the bytes, decides) ...
    w.host.shared.borrow_mut().insert(key.clone(), (table("t-1"), 7));
    forwarded_token(&w.modern_call("echo", &user).0);
    // ... and a new version is decoded at once.
    w.host.shared.borrow_mut().insert(key.clone(), (table("t-1"), 8));
    let (step, rec) = w.modern_call("echo", &user);
    assert_eq!((status(&step), rec.reason), (403, "task_revoked"));
    // An unreadable table refuses (fail closed), whatever was decoded before.
    w.host.shared.borrow_mut().insert(key, (b"garbage".to_vec(), 9));
    assert_eq!(status(&w.modern_call("echo", &user).0), 403);
}

#[test]
fn with_an_epoch_announced_the_table_is_read_only_when_the_epoch_moves() {
    use crate::session::Revocations;
    use crate::workflow::{announce_revocations, store_revocations, REVOCATIONS_KEY};
    let mut w = world("");
    let user = w.token("files:read");
    assert!(announce_revocations(&w.host));
    forwarded_token(&w.modern_call("echo", &user).0);
    // The table changes behind the epoch's back (no writer does this): unseen, so unread.
    let mut revoked = Revocations::default();
    revoked.revoke_task("t-1", NOW);
    w.host.shared.borrow_mut().insert(REVOCATIONS_KEY.to_string(), (b"garbage".to_vec(), 5));
    forwarded_token(&w.modern_call("echo", &user).0);
    // A writer stores and announces: the next request reads the new table and is refused.
    assert!(store_revocations(&w.host, &revoked, 5));
    let (step, rec) = w.modern_call("echo", &user);
    assert_eq!((status(&step), rec.reason), (403, "task_revoked"));
    // A store against a stale version is refused and announces nothing.
    let epoch = w.host.shared.borrow()["mcpgw:revocations:epoch"].1;
    assert!(!store_revocations(&w.host, &Revocations::default(), 5));
    assert_eq!(w.host.shared.borrow()["mcpgw:revocations:epoch"].1, epoch);
}
