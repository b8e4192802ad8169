//! Independent MCP client SDKs through the gateway: the official Python SDK (`mcp` 2.x) and
//! both TypeScript SDKs (`@modelcontextprotocol/client` 2.x, `@modelcontextprotocol/sdk` 1.x),
//! each in every connect mode it has, against the real Envoy and the rmcp demo backends. The
//! other suites drive rmcp on both ends; these prove the gateway holds for clients written
//! by others, with the headers, probes, GET streams and DELETEs those clients really send.
//!
//! The scripts live in `integration/clients/`; `make clients` (a dependency of `make test`)
//! installs their pinned SDKs. A missing install fails the tests: it never skips them.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use integration::harness::{root, Gateway, Options};
use serde_json::Value;

/// Astral-plane emoji, combining accent, CJK, right-to-left, a quote and a backslash: must come
/// back byte for byte (the gateway never parses tool arguments or results).
const TEXT: &str = "h\u{e9}llo w\u{f6}rld \u{2713} \u{65e5}\u{672c}\u{8a9e} \u{1F600} e\u{301} \u{5e9}\u{5dc}\u{5d5}\u{5dd} \"q\" \\";

/// The handshake-era versions of CONTRACT.md, "Protocol eras".
const LEGACY_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// How long one client run may take before it counts as hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// One client SDK and the script that drives it.
#[derive(Debug, Clone, Copy)]
enum Sdk {
    /// PyPI `mcp` 2.x: modes `modern`, `legacy`, `auto`.
    Python,
    /// npm `@modelcontextprotocol/client` 2.x: modes `modern`, `legacy`, `auto`.
    TsV2,
    /// npm `@modelcontextprotocol/sdk` 1.x: mode `legacy`.
    TsV1,
}

impl Sdk {
    fn key(self) -> &'static str {
        match self {
            Sdk::Python => "py",
            Sdk::TsV2 => "ts2",
            Sdk::TsV1 => "ts1",
        }
    }

    /// Fails the test (never skips it) when `make clients` has not installed this SDK.
    fn ensure_installed(self) {
        let installed = self.paths().2;
        assert!(
            installed.exists(),
            "the {self:?} client SDK is not installed (no {}): run `make clients` (`make test` does)",
            installed.display()
        );
    }

    /// The interpreter and script that drive this SDK.
    fn command(self) -> Command {
        self.ensure_installed();
        let (program, script, _) = self.paths();
        let mut cmd = Command::new(program);
        cmd.arg(script);
        cmd
    }

    /// The interpreter, the script, and a file that exists once the SDK is installed.
    fn paths(self) -> (PathBuf, PathBuf, PathBuf) {
        let clients = root().join("integration/clients");
        match self {
            Sdk::Python => {
                let python = root().join(".tools/pyenv/bin/python");
                (python.clone(), clients.join("python/client.py"), python)
            }
            Sdk::TsV2 | Sdk::TsV1 => {
                let (script, package) = match self {
                    Sdk::TsV2 => ("client-v2.mjs", "@modelcontextprotocol/client"),
                    _ => ("client-v1.mjs", "@modelcontextprotocol/sdk"),
                };
                let ts = clients.join("ts");
                (PathBuf::from("node"), ts.join(script), ts.join("node_modules").join(package).join("package.json"))
            }
        }
    }
}

/// What one client run did: its JSON line, and its stderr for failure messages.
struct Run {
    out: Value,
    stderr: String,
}

/// Runs `sdk`'s script in `mode` against the gateway's `files` endpoint; `Err` carries the exit
/// status and what the client printed.
fn run_client(gw: &Gateway, sdk: Sdk, mode: &str, token: &str, task: &str) -> Result<Run, String> {
    let tag = format!("{}-{mode}-{task}", sdk.key());
    let (out_path, err_path) = (gw.dir.join(format!("{tag}.out")), gw.dir.join(format!("{tag}.err")));
    let mut cmd = sdk.command();
    cmd.args([gw.mcp_url("files").as_str(), token, mode, "--task-id", task, "--text", TEXT]);
    // Files, not pipes: a chatty client cannot block on a full pipe while we wait for it.
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start the {sdk:?} client ({cmd:?}): {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for client") {
            break status;
        }
        if start.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            break child.wait().expect("killed client");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() {
        return Err(format!("{sdk:?} {mode} exited with {status} after {:?}\nstdout: {stdout}\nstderr: {stderr}", start.elapsed()));
    }
    let out = serde_json::from_str(stdout.trim()).map_err(|e| format!("{sdk:?} {mode} printed no JSON line ({e}): {stdout}\nstderr: {stderr}"))?;
    Ok(Run { out, stderr })
}

/// Which era a connect mode must end in: the demo backends are dual-era and answer
/// `server/discover`, so `auto` settles on modern.
fn expected_era(mode: &str) -> &'static str {
    if mode == "legacy" {
        "legacy"
    } else {
        "modern"
    }
}

/// Runs one SDK in one mode through the gateway and checks everything a user of the gateway
/// relies on: the result, the delegated identity, the session swap and the audit trail.
async fn works_through_the_gateway(sdk: Sdk, mode: &'static str) {
    sdk.ensure_installed();
    let gw = Gateway::start(Options::default());
    let token = gw.token("alice", "files:read");
    let task = format!("{}-{mode}", sdk.key());
    let run = tokio::task::block_in_place(|| run_client(&gw, sdk, mode, &token, &task));
    let Run { out, stderr } = run.unwrap_or_else(|e| panic!("{e}"));
    let ctx = format!("{sdk:?} {mode}: {out}\nstderr: {stderr}");
    eprintln!("{sdk:?} {} {}: {mode} -> {}", out["sdk"], out["sdk_version"], out["protocol_version"]);
    let era = expected_era(mode);
    let me = &out["whoami"];

    // The tool results, byte for byte.
    assert_eq!(out["echo"].as_str().map(str::as_bytes), Some(TEXT.as_bytes()), "echo is not byte-exact: {ctx}");
    let tools: Vec<&str> = out["tools"].as_array().expect("tools").iter().filter_map(Value::as_str).collect();
    assert!(tools.contains(&"echo") && tools.contains(&"whoami"), "tools/list: {ctx}");

    // The backend saw a token the gateway minted for it, never the user's.
    assert_eq!(me["claims"]["iss"], "mcp-gateway", "{ctx}");
    assert_eq!(me["claims"]["aud"], "files", "{ctx}");
    assert_eq!(me["claims"]["sub"], "alice", "{ctx}");
    assert_eq!(me["claims"]["task"], task.as_str(), "the client's Mcp-Task-Id is the task: {ctx}");

    // The negotiated era, and the session the client holds.
    let version = out["protocol_version"].as_str().unwrap_or_default();
    let handle = out["session_id"].as_str();
    if era == "modern" {
        assert_eq!(version, "2026-07-28", "{ctx}");
        assert_eq!(handle, None, "a modern client holds no session: {ctx}");
        assert_eq!(me["session"], Value::Null, "{ctx}");
    } else {
        assert!(LEGACY_VERSIONS.contains(&version), "legacy version {version:?}: {ctx}");
        let upstream = me["session"].as_str().unwrap_or_else(|| panic!("the backend saw no session: {ctx}"));
        let handle = handle.unwrap_or_else(|| panic!("the legacy client holds no session id: {ctx}"));
        assert_ne!(handle, upstream, "the client got the backend's own session id: {ctx}");
        assert!(!handle.contains(upstream), "the handle shows the upstream id: {ctx}");
    }
    // Every HTTP exchange succeeded, including a legacy client's GET stream and DELETE.
    for exchange in out["exchanges"].as_array().expect("exchanges") {
        let status = exchange["status"].as_u64().unwrap_or(0);
        assert!((200..300).contains(&status), "{} answered {status}: {ctx}", exchange["method"]);
    }

    // The audit trail: every request of the task in the negotiated era, allowed, and the
    // calls themselves among them. A legacy client's DELETE is its last request.
    let of_task = |all: &[Value]| -> Vec<Value> { all.iter().filter(|r| r["task"] == task.as_str()).cloned().collect() };
    let calls = |records: &[Value], name: &str| records.iter().filter(|r| r["method"] == "tools/call" && r["name"] == name).count();
    let ended = |records: &[Value]| era != "legacy" || records.iter().any(|r| r["method"] == "DELETE");
    let records = of_task(
        &audit_when(&gw, |all| {
            let records = of_task(all);
            calls(&records, "echo") > 0 && calls(&records, "whoami") > 0 && ended(&records)
        })
        .await,
    );
    assert_eq!((calls(&records, "echo"), calls(&records, "whoami")), (1, 1), "audit: {records:#?}");
    assert_eq!(records.iter().any(|r| r["method"] == "initialize"), era == "legacy", "audit: {records:#?}");
    if mode == "auto" {
        assert!(records.iter().any(|r| r["method"] == "server/discover"), "auto chose modern without a probe: {records:#?}");
    }
    for r in &records {
        assert_eq!(r["era"], era, "audit era: {r}");
        assert_eq!((&r["decision"], &r["sub"], &r["aud"]), (&"allow".into(), &"alice".into(), &"files".into()), "audit: {r}");
        let session = r["session"].as_str().unwrap_or_default();
        if era == "legacy" && r["method"] != "initialize" {
            assert!(!session.is_empty() && Some(session) != handle && Some(session) != me["session"].as_str(), "audit session: {r}");
        }
        if era == "modern" {
            assert_eq!(session, "", "audit session: {r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_modern_works_through_the_gateway() {
    works_through_the_gateway(Sdk::Python, "modern").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_legacy_works_through_the_gateway() {
    works_through_the_gateway(Sdk::Python, "legacy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_auto_negotiates_modern_through_the_gateway() {
    works_through_the_gateway(Sdk::Python, "auto").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_sdk_v2_modern_works_through_the_gateway() {
    works_through_the_gateway(Sdk::TsV2, "modern").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_sdk_v2_legacy_works_through_the_gateway() {
    works_through_the_gateway(Sdk::TsV2, "legacy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_sdk_v2_auto_negotiates_modern_through_the_gateway() {
    works_through_the_gateway(Sdk::TsV2, "auto").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_sdk_v1_legacy_works_through_the_gateway() {
    works_through_the_gateway(Sdk::TsV1, "legacy").await;
}

/// Guards the suite itself: a client that swallowed errors would pass every test above.
#[tokio::test(flavor = "multi_thread")]
async fn every_client_exits_non_zero_when_the_gateway_refuses_its_token() {
    let runs = [(Sdk::Python, "modern"), (Sdk::Python, "legacy"), (Sdk::TsV2, "modern"), (Sdk::TsV2, "legacy"), (Sdk::TsV1, "legacy")];
    runs.iter().for_each(|(sdk, _)| sdk.ensure_installed());
    let gw = Gateway::start(Options::default());
    for (sdk, mode) in runs {
        let result = tokio::task::block_in_place(|| run_client(&gw, sdk, mode, "not-a-jwt", "refused"));
        let err = match result {
            Ok(run) => panic!("{sdk:?} {mode} succeeded with a bad token: {}", run.out),
            Err(e) => e,
        };
        // The gateway's 401 (the SDKs word it as the status or as its JSON-RPC error code).
        assert!(err.contains("401") || err.contains("-32011"), "{sdk:?} {mode} failed, but not on the 401: {err}");
    }
    wait_audit(&gw, |r| r["reason"] == "token_malformed").await;
}
