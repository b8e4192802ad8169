//! Integration harness: a real Envoy with the built filter, in front of real demo backends.
//!
//! Every test gets its own processes on free loopback ports; `Drop` stops them, and a failing
//! test prints Envoy's log. The Envoy config is rendered from `envoy/envoy.template.yaml`, the
//! same template the shipped `envoy/envoy.yaml` comes from.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::idp::{Keys, TokenSpec};

/// The project root (the workspace that holds `integration/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Ports of one gateway topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub gateway: u16,
    pub admin: u16,
    pub gateway_admin: u16,
    pub files_1: u16,
    pub files_2: u16,
    pub reports: u16,
    pub idp: u16,
    /// Where the `revocation_feed` cluster points (another replica's admin listener).
    pub feed: u16,
}

impl Ports {
    /// The demo topology of CONTRACT.md.
    pub const DEMO: Ports =
        Ports { gateway: 10000, admin: 9901, gateway_admin: 10001, files_1: 18001, files_2: 18002, reports: 18003, idp: 18000, feed: 10001 };

    /// Free loopback ports for one test.
    pub fn free() -> Ports {
        let listeners: Vec<TcpListener> = (0..7).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
        let p: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
        Ports { gateway: p[0], admin: p[1], gateway_admin: p[2], files_1: p[3], files_2: p[4], reports: p[5], idp: p[6], feed: p[2] }
    }
}

/// Renders the Envoy template. `filter_config` is the filter's JSON configuration.
pub fn render_envoy(template: &str, ports: &Ports, wasm: &str, filter_config: &str) -> String {
    let mut out = String::with_capacity(template.len() + filter_config.len());
    for line in template.lines() {
        if let Some(at) = line.find("{{FILTER_CONFIG}}") {
            // A YAML block scalar: every line of the JSON at the placeholder's indentation.
            let indent = &line[..at];
            for json_line in filter_config.trim_end().lines() {
                out.push_str(indent);
                out.push_str(json_line);
                out.push('\n');
            }
            continue;
        }
        let line = line
            .replace("{{GATEWAY_PORT}}", &ports.gateway.to_string())
            .replace("{{ADMIN_PORT}}", &ports.admin.to_string())
            .replace("{{GW_ADMIN_PORT}}", &ports.gateway_admin.to_string())
            .replace("{{FILES_1_PORT}}", &ports.files_1.to_string())
            .replace("{{FILES_2_PORT}}", &ports.files_2.to_string())
            .replace("{{REPORTS_PORT}}", &ports.reports.to_string())
            .replace("{{IDP_PORT}}", &ports.idp.to_string())
            .replace("{{FEED_PORT}}", &ports.feed.to_string())
            .replace("{{WASM}}", wasm);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The shipped demo Envoy config as the template renders it (kept in step by a test).
pub fn render_demo_envoy() -> String {
    let template = std::fs::read_to_string(root().join("envoy/envoy.template.yaml")).expect("template");
    let config = std::fs::read_to_string(root().join("envoy/filter.json")).expect("filter.json");
    render_envoy(&template, &Ports::DEMO, "target/wasm32-wasip1/release/filter.wasm", &config)
}

/// The Envoy binary: `ENVOY_BIN`, else the one `make setup` unpacked into `.tools/`.
pub fn envoy_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let bin = root().join(".tools/envoy/envoy");
    assert!(bin.exists(), "no Envoy at {}: run `make setup` or set ENVOY_BIN", bin.display());
    bin
}

/// The release filter that `make build` produces.
pub fn wasm_path() -> PathBuf {
    let wasm = root().join("target/wasm32-wasip1/release/filter.wasm");
    assert!(wasm.exists(), "no filter at {}: run `make build`", wasm.display());
    wasm
}

/// A built binary of this crate (`demo-backend`, ...), next to the test executable's folder.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(bin.exists(), "no {} at {}: build the integration crate's binaries", name, bin.display());
    bin
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr into `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { name: name.to_string(), child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the process now (e.g. to kill a replica mid-test).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `addr` answers `GET path` with a 200, or panics with the process's log.
pub fn wait_http_ok(addr: &str, path: &str, proc_: &mut Proc, timeout: Duration) {
    if let Err(e) = try_wait_http_ok(addr, path, proc_, timeout) {
        panic!("{e}");
    }
}

/// Like [`wait_http_ok`], but says why it failed instead of panicking.
pub fn try_wait_http_ok(addr: &str, path: &str, proc_: &mut Proc, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(status) = exited_status(proc_) {
            return Err(format!("{} exited ({status}) before it was ready:\n{}", proc_.name, proc_.output()));
        }
        if http_get(addr, path).map(|(s, _)| s == 200).unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{} not ready at {addr}{path} after {timeout:?}:\n{}", proc_.name, proc_.output()))
}

/// Waits until `proc_` has printed `needle` at least `count` times, or panics with its output.
pub fn wait_for_output(proc_: &Proc, needle: &str, count: usize, timeout: Duration) {
    let start = Instant::now();
    while proc_.output().matches(needle).count() < count {
        assert!(start.elapsed() < timeout, "{needle:?} not printed {count} times in {timeout:?}:\n{}", proc_.output());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every worker's VM (and the main thread's) must hold the IdP keys before a test sends a token.
fn wait_for_idp_keys(envoy: &Proc, concurrency: u32) {
    wait_for_output(envoy, "jwks: identity_providers[0] refreshed", concurrency as usize + 1, Duration::from_secs(20));
}

fn exited_status(proc_: &mut Proc) -> Option<std::process::ExitStatus> {
    proc_.exited()
}

/// A minimal blocking HTTP/1.1 GET (Envoy refuses HTTP/1.0) for readiness checks: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// What to start.
#[derive(Clone)]
pub struct Options {
    /// The filter configuration JSON (defaults to `envoy/filter.json`).
    pub filter_config: serde_json::Value,
    /// Envoy worker threads.
    pub concurrency: u32,
    /// Extra arguments for every demo backend (e.g. token verification flags).
    pub backend_args: Vec<String>,
    /// Environment for Envoy (keys the filter reads).
    pub envoy_env: Vec<(String, String)>,
    /// Replace the filter chain's Wasm filter with nothing (proves tests depend on the filter).
    pub without_filter: bool,
    /// Backends verify tokens against the gateway's JWKS (otherwise they only decode them).
    pub verifying_backends: bool,
}

impl Default for Options {
    fn default() -> Self {
        let config = std::fs::read_to_string(root().join("envoy/filter.json")).expect("filter.json");
        Options {
            filter_config: serde_json::from_str(&config).expect("filter.json is JSON"),
            concurrency: 1,
            backend_args: Vec::new(),
            envoy_env: Vec::new(),
            without_filter: false,
            verifying_backends: true,
        }
    }
}

/// One running topology: Envoy with the filter, the three demo backends and the demo IdP.
pub struct Gateway {
    pub ports: Ports,
    pub dir: PathBuf,
    pub keys: Keys,
    pub envoy: Proc,
    pub backends: Vec<Proc>,
    pub idp: Proc,
}

impl Gateway {
    /// Starts the backends, then Envoy, and waits until all are ready.
    pub fn start(options: Options) -> Gateway {
        // Free ports are found by binding and releasing them, so another process can take one
        // before ours binds it; a start that failed that way is retried on fresh ports.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&options) {
                Ok(gw) => return gw,
                Err(e) => last = e,
            }
        }
        panic!("gateway topology did not start: {last}");
    }

    fn try_start(options: &Options) -> Result<Gateway, String> {
        let ports = Ports::free();
        let dir = std::env::temp_dir().join(format!("mcp-gw-test-{}-{}", std::process::id(), ports.gateway));
        std::fs::create_dir_all(&dir).expect("test dir");
        let keys = Keys::ensure(&dir.join("keys")).expect("demo keys");
        let gateway_url = format!("http://127.0.0.1:{}", ports.gateway);
        let mut idp_cmd = Command::new(bin_path("mcp-token"));
        idp_cmd.args(["idp", "--listen", &format!("127.0.0.1:{}", ports.idp), "--dir"]).arg(&keys.dir);
        let mut idp = Proc::spawn("idp", idp_cmd, dir.join("idp.log"));
        let mut backends = Vec::new();
        for (backend, replica, port) in [
            ("files", "files-1", ports.files_1),
            ("files", "files-2", ports.files_2),
            ("reports", "reports-1", ports.reports),
        ] {
            let mut cmd = Command::new(bin_path("demo-backend"));
            cmd.args(["--backend", backend, "--replica", replica, "--listen", &format!("127.0.0.1:{port}")]);
            cmd.args(["--gateway-url", &gateway_url]);
            if options.verifying_backends {
                cmd.args(["--jwks-url", &format!("{gateway_url}/.well-known/jwks.json")]);
            }
            cmd.args(&options.backend_args);
            backends.push(Proc::spawn(replica, cmd, dir.join(format!("{replica}.log"))));
        }
        try_wait_http_ok(&format!("127.0.0.1:{}", ports.idp), "/jwks.json", &mut idp, Duration::from_secs(20))?;
        let mut env = keys.envoy_env().expect("key env");
        env.extend(options.envoy_env.iter().cloned());
        let envoy = start_envoy(options, &ports, &dir, &env);
        let mut gw = Gateway { ports, dir, keys, envoy, backends, idp };
        for i in 0..gw.backends.len() {
            let port = [ports.files_1, ports.files_2, ports.reports][i];
            try_wait_http_ok(&format!("127.0.0.1:{port}"), "/_debug/count", &mut gw.backends[i], Duration::from_secs(20))?;
        }
        try_wait_http_ok(&format!("127.0.0.1:{}", ports.admin), "/ready", &mut gw.envoy, Duration::from_secs(30))?;
        if !options.without_filter {
            wait_for_idp_keys(&gw.envoy, options.concurrency);
        }
        Ok(gw)
    }

    /// A second gateway Envoy in front of the same backends and IdP, with the same keys (two
    /// replicas of the gateway); its `revocation_feed` cluster points at this one's admin
    /// listener. Its ports are in the returned [`Ports`].
    pub fn second_gateway(&self, options: &Options) -> (Proc, Ports) {
        let fresh = Ports::free();
        let ports = Ports {
            gateway: fresh.gateway,
            admin: fresh.admin,
            gateway_admin: fresh.gateway_admin,
            feed: self.ports.gateway_admin,
            ..self.ports
        };
        let dir = self.dir.join("second");
        std::fs::create_dir_all(&dir).expect("dir");
        let env = self.keys.envoy_env().expect("key env");
        let mut envoy = start_envoy(options, &ports, &dir, &env);
        wait_http_ok(&format!("127.0.0.1:{}", ports.admin), "/ready", &mut envoy, Duration::from_secs(30));
        wait_for_idp_keys(&envoy, options.concurrency);
        (envoy, ports)
    }

    /// Waits until Envoy's log has `needle` at least `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) {
        wait_for_output(&self.envoy, needle, count, timeout);
    }

    /// A URL at the gateway listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.ports.gateway, path)
    }

    /// The MCP endpoint of a backend at the gateway.
    pub fn mcp_url(&self, backend: &str) -> String {
        self.url(&format!("/mcp/{backend}"))
    }

    /// Direct URL of a backend replica (bypassing the gateway): index 0, 1 = files, 2 = reports.
    pub fn backend_url(&self, index: usize, path: &str) -> String {
        let port = [self.ports.files_1, self.ports.files_2, self.ports.reports][index];
        format!("http://127.0.0.1:{port}{path}")
    }

    /// A user token from the demo IdP.
    pub fn token(&self, sub: &str, scope: &str) -> String {
        TokenSpec::new(sub, scope).sign(&self.keys).expect("sign token")
    }

    /// Envoy's log so far (application log and access log).
    pub fn envoy_log(&self) -> String {
        self.envoy.output()
    }

    /// The gateway's own admin listener (revocation).
    pub fn gateway_admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.ports.gateway_admin, path)
    }

    /// Envoy admin GET (e.g. `/stats/prometheus`).
    pub fn admin_get(&self, path: &str) -> String {
        http_get(&format!("127.0.0.1:{}", self.ports.admin), path).map(|(_, b)| b).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- envoy log ({}) ----\n{}", self.envoy.log.display(), self.envoy.output());
            for b in &self.backends {
                eprintln!("---- {} log ----\n{}", b.name, b.output());
            }
            return;
        }
        // Logs of a passing test are not needed; a failing one keeps them for a look.
        self.envoy.kill();
        self.idp.kill();
        for b in &mut self.backends {
            b.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_envoy(options: &Options, ports: &Ports, dir: &Path, env: &[(String, String)]) -> Proc {
    let template = std::fs::read_to_string(root().join("envoy/envoy.template.yaml")).expect("template");
    let filter_config = serde_json::to_string_pretty(&options.filter_config).expect("config");
    let mut yaml = render_envoy(&template, ports, &wasm_path().display().to_string(), &filter_config);
    if options.without_filter {
        yaml = remove_wasm_filter(&yaml);
    }
    let config_path = dir.join("envoy.yaml");
    std::fs::write(&config_path, yaml).expect("write envoy.yaml");
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("-c").arg(&config_path);
    cmd.args(["--concurrency", &options.concurrency.to_string(), "--disable-hot-restart", "-l", "info"]);
    cmd.args(["--log-format", "[%Y-%m-%d %T.%e][%l][%n] %v"]);
    // The audit line comes from the access log, which Envoy buffers (10 s by default).
    cmd.args(["--file-flush-interval-msec", "100"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn("envoy", cmd, dir.join("envoy.log"))
}

/// Drops the `envoy.filters.http.wasm` entry from a rendered config.
fn remove_wasm_filter(yaml: &str) -> String {
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start() == "- name: envoy.filters.http.wasm" {
            skipping = Some(indent);
            continue;
        }
        if let Some(i) = skipping {
            if indent > i {
                continue;
            }
            skipping = None;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Runs `envoy --mode validate` on a config file with `env`; returns (success, output).
pub fn envoy_validate(config: &Path, cwd: &Path, env: &[(String, String)]) -> (bool, String) {
    let out = Command::new(envoy_bin())
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(config)
        .output()
        .expect("run envoy --mode validate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_envoy_yaml_is_the_rendered_template() {
        let shipped = std::fs::read_to_string(root().join("envoy/envoy.yaml")).expect("envoy/envoy.yaml");
        assert_eq!(shipped, render_demo_envoy(), "envoy/envoy.yaml is stale: run `make envoy-yaml`");
    }

    #[test]
    fn removing_the_filter_leaves_the_router() {
        let yaml = render_demo_envoy();
        let without = remove_wasm_filter(&yaml);
        assert!(!without.contains("envoy.filters.http.wasm"));
        assert!(without.contains("envoy.filters.http.router"));
        assert!(without.contains("allow_on_headers_stop_iteration") == false);
    }
}
