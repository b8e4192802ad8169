//! `demo-backend`: one replica of a demo MCP backend (dual-era rmcp Streamable HTTP server).

use std::{path::PathBuf, process::ExitCode};

use integration::{
    backend::{self, BackendConfig, BackendKind},
    jwks::{KeySource, Verifier},
};
use tokio::net::TcpListener;

const USAGE: &str = "usage: demo-backend --backend files|reports [--replica NAME] [--listen ADDR]
       [--jwks-url URL | --jwks-file PATH | --no-verify] [--gateway-url URL]
       [--json-response] [--allow-host HOST]... [--response-header NAME=VALUE]...

  --replica       name reported by whoami (default: <backend>-1)
  --listen        address to bind (default: 127.0.0.1:0)
  --jwks-url      verify bearer tokens against this JWKS (fetched lazily, refetched on unknown kid)
  --jwks-file     verify bearer tokens against this JWKS file (re-read on unknown kid)
  --no-verify     decode bearer tokens without verifying them (the default without a JWKS)
  --gateway-url   gateway base URL for summarize's call to files (e.g. http://127.0.0.1:10000)
  --json-response answer simple modern requests with application/json instead of SSE
  --allow-host    accept this Host besides localhost, 127.0.0.1 and ::1 (any port)
  --response-header  add this header to every response (tests: a backend that leaks headers)";

struct Args {
    config: BackendConfig,
    listen: String,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut kind, mut replica, mut listen, mut gateway_url) = (None, None, None, None);
    let (mut source, mut no_verify, mut json_response, mut hosts) = (None, false, false, vec![]);
    let mut response_headers = vec![];
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => {
                let name = value()?;
                kind = Some(BackendKind::parse(&name).ok_or(format!("unknown backend {name:?}"))?);
            }
            "--replica" => replica = Some(value()?),
            "--listen" => listen = Some(value()?),
            "--jwks-url" => source = Some(KeySource::Url(value()?)),
            "--jwks-file" => source = Some(KeySource::File(PathBuf::from(value()?))),
            "--no-verify" => no_verify = true,
            "--gateway-url" => gateway_url = Some(value()?),
            "--json-response" => json_response = true,
            "--allow-host" => hosts.push(value()?),
            "--response-header" => {
                let pair = value()?;
                let (name, value) = pair.split_once('=').ok_or(format!("--response-header {pair:?}: NAME=VALUE"))?;
                response_headers.push((name.to_string(), value.to_string()));
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let kind = kind.ok_or("--backend is required")?;
    let verifier = match (source, no_verify) {
        (Some(_), true) => return Err("--no-verify conflicts with --jwks-url/--jwks-file".into()),
        (Some(source), false) => Verifier::from_source(kind.name(), source),
        (None, _) => Verifier::decode_only(kind.name()),
    };
    let config = BackendConfig {
        replica: replica.unwrap_or_else(|| format!("{}-1", kind.name())),
        verifier,
        gateway_url,
        json_response,
        extra_allowed_hosts: hosts,
        response_headers,
        ..BackendConfig::unverified(kind, "")
    };
    Ok(Args {
        config,
        listen: listen.unwrap_or_else(|| "127.0.0.1:0".into()),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            if !error.is_empty() {
                eprintln!("demo-backend: {error}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("demo-backend: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let (kind, replica) = (args.config.kind, args.config.replica.clone());
    let running = match backend::start(listener, args.config) {
        Ok(running) => running,
        Err(error) => {
            eprintln!("demo-backend: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The harness and `make run` wait for this exact line (and read the port from it).
    println!(
        "demo-backend {} {replica} listening on {}",
        kind.name(),
        running.addr
    );
    shutdown_signal().await;
    running.stop().await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
