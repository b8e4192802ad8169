//! A real rmcp Streamable HTTP client for tests, in either protocol era.
//!
//! - [`Era::Modern`]: `server/discover` at `2026-07-28`, then stateless requests; rmcp sends
//!   `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` and `params._meta` with
//!   `io.modelcontextprotocol/protocolVersion` (plus `clientInfo`, `clientCapabilities`).
//! - [`Era::Legacy2025_06_18`] / [`Era::Legacy2025_11_25`]: `initialize` pinned to that
//!   version, then requests carry the server's (here: the gateway's) `Mcp-Session-Id`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::{
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, ClientJsonRpcMessage, ErrorData,
        Implementation, ProtocolVersion, SubscriptionFilter,
    },
    service::{ClientInitializeError, RunningService, ServiceError, Subscription},
    transport::{
        streamable_http_client::{
            SseError, StreamableHttpClient, StreamableHttpClientTransportConfig,
            StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
        },
        StreamableHttpClientTransport,
    },
    ClientLifecycleMode, ClientServiceExt, RoleClient,
};
use serde_json::Value;
use sse_stream::Sse;

/// Which MCP protocol era (and version) a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// `2026-07-28`: stateless, no `initialize`.
    Modern,
    /// `initialize` at `2025-06-18`, then an `Mcp-Session-Id` session.
    Legacy2025_06_18,
    /// `initialize` at `2025-11-25`, then an `Mcp-Session-Id` session.
    Legacy2025_11_25,
}

impl Era {
    /// The protocol version this era pins.
    pub fn protocol_version(self) -> ProtocolVersion {
        match self {
            Self::Modern => ProtocolVersion::V_2026_07_28,
            Self::Legacy2025_06_18 => ProtocolVersion::V_2025_06_18,
            Self::Legacy2025_11_25 => ProtocolVersion::V_2025_11_25,
        }
    }

    fn lifecycle(self) -> ClientLifecycleMode {
        match self {
            // Discover, not Auto: a modern test must fail rather than quietly fall back to legacy.
            Self::Modern => ClientLifecycleMode::Discover {
                preferred_versions: vec![self.protocol_version()],
            },
            Self::Legacy2025_06_18 | Self::Legacy2025_11_25 => ClientLifecycleMode::Initialize,
        }
    }
}

/// Why a call did not produce a tool's text.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The tool ran and reported an error (`isError: true`); its text.
    #[error("tool error: {0}")]
    Tool(String),
    /// A JSON-RPC error response.
    #[error("JSON-RPC error {}: {}", .0.code.0, .0.message)]
    Rpc(ErrorData),
    /// Anything below JSON-RPC: HTTP status, connection, stream.
    #[error("transport: {0}")]
    Transport(ServiceError),
}

impl From<ServiceError> for CallError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::McpError(data) => Self::Rpc(data),
            other => Self::Transport(other),
        }
    }
}

/// A connected MCP client.
pub struct McpClient {
    service: RunningService<RoleClient, ClientConfig>,
    session_id: Arc<Mutex<Option<String>>>,
}

impl McpClient {
    /// Connects to `url` in `era`, sending `Authorization: Bearer <token>` (when given) and
    /// `headers` (e.g. `Mcp-Task-Id`) on every request. rmcp refuses to let callers set
    /// `Accept`, `Mcp-Session-Id` or `Last-Event-Id` this way.
    pub async fn connect(
        url: &str,
        era: Era,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Self, ClientInitializeError> {
        let mut config =
            StreamableHttpClientTransportConfig::with_uri(url).custom_headers(header_map(headers));
        if let Some(token) = token {
            config = config.auth_header(token);
        }
        let session_id = Arc::new(Mutex::new(None));
        let http = SessionRecordingClient {
            inner: reqwest::Client::new(),
            session_id: session_id.clone(),
        };
        let transport = StreamableHttpClientTransport::with_client(http, config);
        let info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("mcp-gateway-tests", "0.1.0"),
        )
        .with_protocol_version(era.protocol_version());
        let service = info
            .serve_with_lifecycle(transport, era.lifecycle())
            .await?;
        Ok(Self {
            service,
            session_id,
        })
    }

    /// Calls a tool and returns the concatenated text of its result.
    pub async fn call_tool(&self, name: &str, args: Value) -> Result<String, CallError> {
        let mut params = CallToolRequestParams::new(name.to_owned());
        if let Value::Object(args) = args {
            params = params.with_arguments(args);
        }
        let result = self.service.call_tool(params).await?;
        let text: String = result
            .content
            .iter()
            .filter_map(|c| c.as_text())
            .map(|t| t.text.as_str())
            .collect();
        if result.is_error == Some(true) {
            Err(CallError::Tool(text))
        } else {
            Ok(text)
        }
    }

    /// The names of the server's tools.
    pub async fn list_tools(&self) -> Result<Vec<String>, CallError> {
        let tools = self.service.list_all_tools().await?;
        Ok(tools
            .into_iter()
            .map(|tool| tool.name.into_owned())
            .collect())
    }

    /// Opens a modern `subscriptions/listen` stream for `notifications/tools/list_changed`.
    pub async fn listen_tools_changed(&self) -> Result<Subscription, CallError> {
        Ok(self
            .service
            .listen(SubscriptionFilter::builder().tools_list_changed().build())
            .await?)
    }

    /// The `Mcp-Session-Id` the server gave at `initialize` (legacy; `None` for modern).
    /// Through the gateway this is the gateway's session handle, not the backend's id.
    pub fn session_id(&self) -> Option<String> {
        self.session_id.lock().expect("session id lock").clone()
    }

    /// The protocol version agreed with the server.
    pub fn protocol_version(&self) -> Option<String> {
        self.service
            .peer_info()
            .map(|info| info.protocol_version.to_string())
    }

    /// The underlying rmcp client, for anything these helpers do not cover.
    pub fn service(&self) -> &RunningService<RoleClient, ClientConfig> {
        &self.service
    }

    /// Ends the client; a legacy session is ended with `DELETE`.
    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }
}

fn header_map(headers: &[(&str, &str)]) -> HashMap<HeaderName, HeaderValue> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
            (
                name,
                HeaderValue::from_str(value).expect("valid header value"),
            )
        })
        .collect()
}

/// rmcp's reqwest client, noting the session id the server hands out at `initialize`:
/// rmcp keeps it inside its transport worker and offers no accessor.
#[derive(Clone)]
struct SessionRecordingClient {
    inner: reqwest::Client,
    session_id: Arc<Mutex<Option<String>>>,
}

type HttpResult<T> = Result<T, StreamableHttpError<reqwest::Error>>;

impl StreamableHttpClient for SessionRecordingClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let limits = StreamableHttpResponseLimits::default();
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let response = self
            .inner
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await?;
        if let StreamableHttpPostResponse::Json(_, Some(id))
        | StreamableHttpPostResponse::Sse(_, Some(id)) = &response
        {
            *self.session_id.lock().expect("session id lock") = Some(id.clone());
        }
        Ok(response)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<()> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        self.inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        self.inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}
