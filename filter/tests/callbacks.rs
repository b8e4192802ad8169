//! The callbacks `make build` leaves exported (filter/callbacks) are those the glue implements,
//! plus the SDK's own: a callback implemented in lib.rs but missing from the list would never be
//! called by Envoy, and one listed but not implemented costs a call into V8 per request.

use std::collections::BTreeSet;

const SDK_OWN: [&str; 3] = ["proxy_on_context_create", "proxy_on_delete", "proxy_on_memory_allocate"];

/// The ABI export behind an SDK trait method: `on_http_request_headers` is
/// `proxy_on_request_headers`, `on_log` is `proxy_on_log`.
fn export_of(method: &str) -> String {
    let rest = method.strip_prefix("on_").expect("a callback method");
    format!("proxy_on_{}", rest.strip_prefix("http_").filter(|r| r.starts_with("re")).unwrap_or(rest))
}

#[test]
fn the_exported_callbacks_are_the_implemented_ones() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let glue = std::fs::read_to_string(format!("{dir}/src/lib.rs")).unwrap();
    let list = std::fs::read_to_string(format!("{dir}/callbacks")).unwrap();
    let listed: BTreeSet<String> = wasm_exports::listed(&list).into_iter().map(String::from).collect();
    let mut implemented: BTreeSet<String> = glue
        .split("fn on_")
        .skip(1)
        .map(|rest| export_of(&format!("on_{}", rest.split('(').next().unwrap())))
        .collect();
    assert!(implemented.contains("proxy_on_request_headers"), "lib.rs read wrongly: {implemented:?}");
    implemented.extend(SDK_OWN.map(String::from));
    assert_eq!(listed, implemented, "filter/callbacks against the callbacks lib.rs implements");
}

#[test]
fn trait_methods_map_to_their_exports() {
    assert_eq!(export_of("on_http_request_headers"), "proxy_on_request_headers");
    assert_eq!(export_of("on_http_response_body"), "proxy_on_response_body");
    assert_eq!(export_of("on_http_call_response"), "proxy_on_http_call_response");
    assert_eq!(export_of("on_tick"), "proxy_on_tick");
}
