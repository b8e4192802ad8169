//! The benchmark's floor: what any proxy-wasm filter that reads an MCP body pays.
//!
//! It holds the request headers, buffers the body, parses the JSON-RPC envelope borrowed
//! (`Cow<str>`, `&RawValue`: arguments are scanned, never materialized) and sets four request
//! headers. No authentication, policy, tokens or audit: the gateway filter's cost above this
//! probe is the cost of those.
//!
//! With the configuration `hostcalls` it also makes the host calls mcp-gateway-filter's glue
//! makes on a cached modern request, with no logic between them: the gap from `floor` is what
//! those calls cost in Envoy, the gap to the gateway is the gateway's own Wasm code. A
//! comma-separated subset of the call groups (`headers,shared,property,response,gateway_sets`,
//! the parts `pairs,clock,status_read,remove`, and `code,log,metrics` that the gateway does not
//! make) measures one group at a time (`BENCH_CONFIGS="probe probe:pairs probe:clock"`). The group
//! `value` reads one request header by name: the price of any host call that returns data, against
//! `shared`, one that returns nothing.

use std::borrow::Cow;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde::Deserialize;
use serde_json::value::RawValue;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { calls: Calls::default() }) });
}}

/// The members of a JSON-RPC request the probe reads.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "_meta")]
    meta: Option<&'a RawValue>,
}

/// The host-call groups of mcp-gateway-filter's glue on a cached modern request.
#[derive(Clone, Copy, Default)]
struct Calls {
    /// One shared-data read (the revocation epoch, an empty value; a warm task skips its bucket).
    shared: bool,
    /// The gateway's request header edits (`authorization` with a minted-token-sized value and
    /// the affinity key) in place of the probe's four.
    gateway_sets: bool,
    /// The audit record as filter state for the access log.
    property: bool,
    /// All response headers read (the status and what needs stripping, in one call).
    response: bool,
    /// All request headers read, and the clock (the group `headers` is both); and, to price one
    /// call at a time, the response calls the gateway made before it read the map once
    /// (`:status` by name, two headers removed by name).
    pairs: bool,
    clock: bool,
    status_read: bool,
    remove: bool,
    /// One request header read by name (`x-request-id`).
    value: bool,
    /// The response code read in `on_log`.
    code: bool,
    /// An audit-sized log line.
    log: bool,
    /// Two counters and a histogram (ids: requests, method, depth).
    metrics: Option<(u32, u32, u32)>,
}

impl Calls {
    fn parse(config: &str) -> Option<Calls> {
        let mut calls = Calls::default();
        let groups = match config {
            "" | "floor" => return Some(calls),
            // The gateway's calls on a warm modern request (bench/v8 counts them).
            "hostcalls" => "headers,shared,property,response,gateway_sets",
            other => other,
        };
        for group in groups.split(',') {
            match group {
                "headers" => (calls.pairs, calls.clock) = (true, true),
                "shared" => calls.shared = true,
                "gateway_sets" => calls.gateway_sets = true,
                "property" => calls.property = true,
                "response" => calls.response = true,
                "pairs" => calls.pairs = true,
                "clock" => calls.clock = true,
                "status_read" => calls.status_read = true,
                "value" => calls.value = true,
                "remove" => calls.remove = true,
                "code" => calls.code = true,
                "log" => calls.log = true,
                "metrics" => {
                    let define = |kind, name| hostcalls::define_metric(kind, name).unwrap_or(0);
                    calls.metrics = Some((
                        define(MetricType::Counter, "probe.requests.allow"),
                        define(MetricType::Counter, "probe.method.tools_call"),
                        define(MetricType::Histogram, "probe.delegation_depth"),
                    ));
                }
                _ => return None,
            }
        }
        Some(calls)
    }
}

struct Root {
    calls: Calls,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let Some(calls) = Calls::parse(&String::from_utf8_lossy(&config)) else { return false };
        self.calls = calls;
        let _ = hostcalls::set_shared_data("probe:epoch", Some(b""), None);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe { calls: self.calls }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    calls: Calls,
}

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.calls.pairs {
            std::hint::black_box(header_map_bytes(HTTP_REQUEST_HEADERS));
        }
        if self.calls.clock {
            let _ = hostcalls::get_current_time();
        }
        if self.calls.value {
            std::hint::black_box(self.get_http_request_header("x-request-id"));
        }
        // Hold the headers until the body is read (needs `allow_on_headers_stop_iteration`).
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let env = match serde_json::from_slice::<Envelope<'_>>(&body) {
            Ok(env) if env.jsonrpc == "2.0" => env,
            _ => {
                self.send_http_response(400, vec![("content-type", "text/plain")], Some(b"bad envelope\n"));
                return Action::Pause;
            }
        };
        let params = env.params.as_ref();
        let name = params.and_then(|p| p.name.as_deref()).unwrap_or("");
        let era = if params.and_then(|p| p.meta).is_some() { "modern" } else { "legacy" };
        if self.calls.shared {
            let _ = hostcalls::get_shared_data("probe:epoch");
        }
        if self.calls.property {
            set_audit_state(AUDIT_SIZED_LINE);
        }
        if self.calls.gateway_sets {
            std::hint::black_box((name, era));
            self.set_http_request_header("authorization", Some(MINTED_SIZED_BEARER));
            self.set_http_request_header("x-mcp-affinity", Some("keUbChFWnfsz6UiW8cz-SA"));
            return Action::Continue;
        }
        self.set_http_request_header("mcp-method", Some(&env.method));
        self.set_http_request_header("mcp-name", Some(name));
        self.set_http_request_header("x-probe-era", Some(era));
        self.set_http_request_header("x-probe-id", Some(env.id.map_or("", |id| id.get())));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.calls.response {
            std::hint::black_box(header_map_bytes(HTTP_RESPONSE_HEADERS));
        }
        if self.calls.status_read {
            let status = self.get_http_response_header(":status");
            std::hint::black_box(&status);
        }
        if self.calls.remove {
            self.set_http_response_header("x-mcp-affinity", None);
            self.set_http_response_header("mcp-session-id", None);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.calls.code {
            let code = self.get_property(vec!["response", "code"]);
            std::hint::black_box(&code);
        }
        if self.calls.log {
            log::info!("probe_audit: {}", AUDIT_SIZED_LINE);
        }
        if let Some((requests, method, depth)) = self.calls.metrics {
            let _ = hostcalls::increment_metric(requests, 1);
            let _ = hostcalls::increment_metric(method, 1);
            let _ = hostcalls::record_metric(depth, 1);
        }
    }
}

// The host calls as the gateway makes them, straight through the ABI: the SDK's getter would
// also copy every name and value of a map into its own String, and its property setter builds
// the path in two vectors, work of the SDK's that the gateway does not do and the floor must not
// count.
extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
}

const HTTP_REQUEST_HEADERS: u32 = 0;
const HTTP_RESPONSE_HEADERS: u32 = 2;

/// A header map as Envoy serializes it, unparsed.
fn header_map_bytes(map_type: u32) -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: on success Envoy wrote `size` bytes into memory it obtained from this module's
    // allocator (the SDK's `proxy_on_memory_allocate`, a leaked `Vec<u8>` of that capacity).
    unsafe {
        if proxy_get_header_map_pairs(map_type, &mut data, &mut size) != 0 || data.is_null() {
            return Vec::new();
        }
        Vec::from_raw_parts(data, size, size)
    }
}

/// The filter state `wasm.mcp_audit` (a one-part property path is its name as is).
fn set_audit_state(value: &str) {
    const PATH: &[u8] = b"mcp_audit";
    // SAFETY: both pointers are valid for their lengths during the call; Envoy copies them.
    unsafe {
        proxy_set_property(PATH.as_ptr(), PATH.len(), value.as_ptr(), value.len());
    }
}

/// As long as the `authorization` value the gateway sets for the bench request (about 420 bytes).
const MINTED_SIZED_BEARER: &str = concat!(
    "Bearer eyJhbGciOiJFZERTQSIsImtpZCI6Imd3LTEiLCJ0eXAiOiJKV1QifQ.",
    "eyJpYXQiOjE3NjQwMDAwMDAsImV4cCI6MTc2NDAwMDMwMCwibmJmIjoxNzY0MDAwMDAwLCJpc3MiOiJtY3AtZ2F0ZXdheSIsInN1YiI6ImFsaWNlIiwiYXVkIjoiZmlsZXMiLCJqdGkiOiJxMlZiOXhXM2tMMHBSN3RZIiwic2NvcGUiOiJmaWxlczpyZWFkIiwidGFzayI6ImJlbmNoLXRhc2siLCJhY3QiOnsic3ViIjoibWNwLWdhdGV3YXkifX0.",
    "c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl"
);

/// As long as the gateway's audit line for the bench request.
const AUDIT_SIZED_LINE: &str = r#"{"ts":1764000000,"request_id":"0f8a3c52-7d1e-4b9a-9f3e-2c6d8e1a4b7f","era":"modern","task":"bench-task","session":"","sub":"alice","backend":"files","method":"tools/call","name":"echo","decision":"allow","reason":"","status":200,"jti":"q2Vb9xW3kL0pR7tY","parent_jti":"a8Zk2Lm4Nq6Rs8Tu","aud":"files","scope":"files:read","act":["mcp-gateway"],"depth":1}"#;
