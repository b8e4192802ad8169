//! A demo MCP backend: an rmcp Streamable HTTP server behind bearer-token checks and a recorder.
//!
//! Dual-era without extra code: rmcp's `StreamableHttpService` with `legacy_session_mode`
//! (its default) and a `LocalSessionManager` runs `initialize` + `Mcp-Session-Id` sessions
//! for legacy clients, and serves any request whose `_meta` declares `2026-07-28` statelessly
//! (`server/discover`, `subscriptions/listen`, ...), on the same endpoint.

mod record;
pub mod signing;
mod tools;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Json, Router,
};
use rmcp::transport::{
    streamable_http_server::session::local::LocalSessionManager, StreamableHttpServerConfig,
    StreamableHttpService,
};
use serde_json::{json, Value};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::jwks::Verifier;
use record::Recorder;
use tools::{DemoServer, Shared};

/// Which of the two demo backends this is; its name is the path segment and the token audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Files,
    Reports,
}

impl BackendKind {
    /// `files` or `reports`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Reports => "reports",
        }
    }

    /// Parses `files` or `reports`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Files, Self::Reports]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// Everything a backend needs to start.
pub struct BackendConfig {
    pub kind: BackendKind,
    pub replica: String,
    pub verifier: Verifier,
    /// Base URL of the gateway, for `summarize`'s onward call (`<url>/mcp/files`).
    pub gateway_url: Option<String>,
    /// Answer simple modern requests with `application/json` instead of an SSE stream.
    pub json_response: bool,
    /// Host names accepted besides rmcp's loopback defaults (`localhost`, `127.0.0.1`, `::1`,
    /// any port), which already cover Envoy passing `Host: 127.0.0.1:10000` through.
    pub extra_allowed_hosts: Vec<String>,
    /// Headers added to every response: a backend that leaks what it should not, for the
    /// gateway's response-header tests.
    pub response_headers: Vec<(String, String)>,
}

impl BackendConfig {
    /// A backend that decodes tokens without verifying them.
    pub fn unverified(kind: BackendKind, replica: impl Into<String>) -> Self {
        Self {
            kind,
            replica: replica.into(),
            verifier: Verifier::decode_only(kind.name()),
            gateway_url: None,
            json_response: false,
            extra_allowed_hosts: vec![],
            response_headers: vec![],
        }
    }
}

/// The bearer token of the current request and its claims, for the tools.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    pub token: Option<String>,
    pub claims: Value,
}

impl Caller {
    /// Whether the space-separated `scope` claim (RFC 8693 section 4.2) names `scope`.
    fn has_scope(&self, scope: &str) -> bool {
        self.claims["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|s| s == scope))
    }
}

/// A backend serving on a listener until stopped.
pub struct RunningBackend {
    pub addr: SocketAddr,
    pub kind: BackendKind,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningBackend {
    /// `http://<addr>/mcp/<backend>`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp/{}", self.addr, self.kind.name())
    }

    /// `http://<addr>`, for the `/_debug/*` routes.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes open streams and sessions and waits for the server to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Serves `config` on `listener` in a background task.
pub fn start(listener: TcpListener, config: BackendConfig) -> std::io::Result<RunningBackend> {
    let addr = listener.local_addr()?;
    let kind = config.kind;
    let shutdown = CancellationToken::new();
    let app = router(config, shutdown.clone());
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(error) = serve.await {
                eprintln!("demo-backend: {error}");
            }
        }
    });
    Ok(RunningBackend {
        addr,
        kind,
        shutdown,
        task,
    })
}

/// The whole HTTP surface: the MCP endpoint at `/mcp/<backend>` and `/mcp`, and `/_debug/*`.
pub fn router(config: BackendConfig, shutdown: CancellationToken) -> Router {
    let shared = Arc::new(Shared {
        kind: config.kind,
        replica: config.replica,
        enforce_scopes: config.verifier.verifies(),
        gateway_url: config.gateway_url,
        files: Default::default(),
    });
    let mut allowed_hosts = StreamableHttpServerConfig::default().allowed_hosts;
    allowed_hosts.extend(config.extra_allowed_hosts);
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts)
        .with_json_response(config.json_response)
        // Ending the server ends its sessions and long-lived SSE streams too, so a graceful
        // shutdown does not wait on a `subscriptions/listen` held open by a test.
        .with_cancellation_token(shutdown.child_token());
    let mcp = StreamableHttpService::new(
        move || Ok(DemoServer(shared.clone())),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    let recorder = Arc::new(Recorder::default());
    let verifier = Arc::new(config.verifier);
    let leaked = Arc::new(config.response_headers);
    Router::new()
        .route_service(&format!("/mcp/{}", config.kind.name()), mcp.clone())
        .route_service("/mcp", mcp)
        // Layers run bottom-up: record what arrived, then authenticate, then MCP.
        .layer(middleware::from_fn_with_state(verifier, authenticate))
        .layer(middleware::from_fn_with_state(
            recorder.clone(),
            record::record,
        ))
        .merge(record::routes(recorder))
        .layer(middleware::from_fn_with_state(leaked, add_response_headers))
}

/// Adds the configured headers to every response, overriding any of the same name.
async fn add_response_headers(
    State(headers): State<Arc<Vec<(String, String)>>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    for (name, value) in headers.iter() {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name.as_str()),
            axum::http::HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Refuses a request whose bearer token does not verify, before the MCP layer sees it.
async fn authenticate(
    State(verifier): State<Arc<Verifier>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = match bearer_token(request.headers()) {
        Ok(token) => token,
        Err(reason) => return unauthorized(reason),
    };
    match verifier.check(token.as_deref()).await {
        Ok(claims) => {
            request.extensions_mut().insert(Caller { token, claims });
            next.run(request).await
        }
        Err(error) => unauthorized(&error.to_string()),
    }
}

fn bearer_token(headers: &axum::http::HeaderMap) -> Result<Option<String>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "authorization header is not ASCII")?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err("authorization is not a bearer token"),
    }
}

fn unauthorized(reason: &str) -> Response {
    let challenge = HeaderValue::from_static(r#"Bearer error="invalid_token""#);
    let body = Json(json!({"error": "invalid_token", "error_description": reason}));
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        body,
    )
        .into_response()
}

/// Reads `GET /_debug/count` of a backend at `base_url`.
pub async fn debug_count(base_url: &str) -> reqwest::Result<u64> {
    let value: HashMap<String, u64> = reqwest::get(format!("{base_url}/_debug/count"))
        .await?
        .json()
        .await?;
    Ok(value.get("count").copied().unwrap_or_default())
}

/// Reads `GET /_debug/last_bodies` of a backend at `base_url`, decoded, oldest first.
pub async fn debug_last_bodies(base_url: &str) -> reqwest::Result<Vec<Vec<u8>>> {
    use base64::{engine::general_purpose::STANDARD, Engine};
    let bodies: Vec<String> = reqwest::get(format!("{base_url}/_debug/last_bodies"))
        .await?
        .json()
        .await?;
    Ok(bodies
        .iter()
        .filter_map(|b| STANDARD.decode(b).ok())
        .collect())
}

#[cfg(test)]
mod tests;
