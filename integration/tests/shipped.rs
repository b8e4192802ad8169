//! The shipped deployment files stay in step with the filter and with envoy/envoy.yaml.

use integration::harness::root;

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn demo_filter_configuration_loads() {
    filter::config::Config::load(read("envoy/filter.json").as_bytes()).expect("envoy/filter.json");
}

#[test]
fn istio_example_configuration_loads_and_keeps_the_required_plugin_options() {
    let yaml = read("envoy/istio/envoyfilter.yaml");
    let start = yaml.find("value: |").expect("configuration block") + "value: |".len();
    let block: String = yaml[start..].lines().skip(1).take_while(|l| l.starts_with("                ")).collect::<Vec<_>>().join("\n");
    filter::config::Config::load(block.as_bytes()).expect("istio EnvoyFilter configuration");
    assert!(yaml.contains("allow_on_headers_stop_iteration: true"));
    assert!(yaml.contains("runtime: envoy.wasm.runtime.v8"));
    assert!(yaml.contains("httpHeaderName: x-mcp-affinity"));
}

#[test]
fn compose_runs_the_same_envoy_yaml_and_filter() {
    let compose = read("envoy/docker-compose.yaml");
    let envoy = read("envoy/envoy.yaml");
    assert!(compose.contains("./envoy.yaml:/work/envoy/envoy.yaml"));
    let wasm = "target/wasm32-wasip1/release/filter.wasm";
    assert!(envoy.contains(&format!("filename: {wasm}")), "envoy.yaml loads {wasm} relative to the project root");
    assert!(compose.contains(&format!("/work/{wasm}")));
    for port in ["18000", "18001", "18002", "18003"] {
        assert!(compose.contains(port) && envoy.contains(port), "port {port} differs between compose and envoy.yaml");
    }
    for key in ["MCP_GW_SIGNING_KEY", "MCP_GW_SEAL_KEYS", "MCP_GW_HASH_KEY"] {
        assert!(compose.contains(key) && envoy.contains(key), "{key}");
    }
}

#[test]
fn every_shipped_envoy_config_enables_stop_iteration_on_every_wasm_filter() {
    // Without it, pausing in on_http_request_headers also stops the filter's body callbacks.
    let envoy = read("envoy/envoy.yaml");
    let filters = envoy.matches("envoy.extensions.filters.http.wasm.v3.Wasm").count();
    assert!(filters >= 2);
    assert_eq!(envoy.matches("allow_on_headers_stop_iteration: true").count(), filters);
}

#[test]
fn the_module_envoy_loads_exports_only_the_listed_callbacks() {
    // The integration tests run Envoy on this file: make build must have trimmed it, so that
    // every test passing also shows that the callbacks left out are not needed.
    let wasm = root().join("target/wasm32-wasip1/release/filter.wasm");
    let module = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e} (run make build)", wasm.display()));
    let list = read("filter/callbacks");
    let (_, removed) = wasm_exports::trim(&module, &wasm_exports::listed(&list)).expect("every listed callback is exported");
    assert!(removed.is_empty(), "make build left these callbacks exported: {removed:?}");
}
