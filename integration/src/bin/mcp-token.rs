//! The demo identity provider's command line.
//!
//! `mcp-token --sub alice --scope "files:read" --ttl 600` prints one signed JWT;
//! `mcp-token keys` creates missing demo keys; `mcp-token idp --listen ADDR` serves the JWKS.
use std::path::PathBuf;
use std::process::ExitCode;

use integration::idp::{serve_jwks, Keys, TokenSpec};

const USAGE: &str = "usage: mcp-token [--dir .demo] [--sub S] [--scope \"a b\"] [--ttl SECS] [--aud A] [--iss I]
       mcp-token keys [--dir .demo]
       mcp-token idp --listen 127.0.0.1:18000 [--dir .demo]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.first().map(String::as_str) {
        Some("keys" | "idp") => args.remove(0),
        _ => "sign".to_string(),
    };
    let mut dir = PathBuf::from(".demo");
    let mut spec = TokenSpec::new("alice", "files:read");
    let mut listen = "127.0.0.1:18000".to_string();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            eprintln!("mcp-token: {flag} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--dir" => dir = value.into(),
            "--sub" => spec.sub = value,
            "--scope" => spec.scope = value,
            "--aud" => spec.audience = value,
            "--iss" => spec.issuer = value,
            "--listen" => listen = value,
            "--ttl" => match value.parse() {
                Ok(ttl) => spec.ttl_secs = ttl,
                Err(_) => {
                    eprintln!("mcp-token: --ttl must be seconds");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("mcp-token: unknown flag {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let keys = match Keys::ensure(&dir) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("mcp-token: keys in {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let result = match command.as_str() {
        "keys" => Ok(()),
        "idp" => match tokio::net::TcpListener::bind(&listen).await {
            Ok(listener) => {
                println!("demo-idp serving {}/jwks.json", listen);
                serve_jwks(listener, keys).await
            }
            Err(e) => Err(e),
        },
        _ => spec.sign(&keys).map(|token| println!("{token}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-token: {e}");
            ExitCode::FAILURE
        }
    }
}
