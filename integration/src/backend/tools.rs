//! The demo MCP server: its tools (CONTRACT, "Demo topology") and its `subscriptions/listen`.
//!
//! Besides the contract's tools, both backends have `signed`, `signed_big` and `signed_stream`,
//! whose results carry a detached signature by the demo key in [`super::signing`], so a client
//! can prove that the gateway passed results and notifications through byte for byte.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use rmcp::{
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
        ServerCapabilities, ServerConfig, SubscriptionFilter, Tool,
    },
    service::{RequestContext, RoleServer, SubscriptionContext},
    ErrorData, ServerHandler,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::{signing, BackendKind, Caller};
use crate::client::{Era, McpClient};

/// Largest `big` result, so a typo in a test cannot exhaust memory.
const MAX_BIG_BYTES: usize = 64 * 1024 * 1024;
/// Delay before the one notification a `subscriptions/listen` stream gets.
const LISTEN_NOTIFY_AFTER: Duration = Duration::from_secs(2);
/// Pause after each `signed_stream` notification, so a client sees them arrive one by one,
/// well before the result (a buffering proxy would deliver them all at the end).
const STREAM_NOTIFY_EVERY: Duration = Duration::from_millis(500);
/// Most notifications one `signed_stream` call sends.
const MAX_STREAM_NOTIFICATIONS: u32 = 20;

/// What every copy of the server (rmcp builds one per request or session) shares.
pub(super) struct Shared {
    pub kind: BackendKind,
    pub replica: String,
    /// Scopes are enforced only when tokens are verified: unverified claims prove nothing.
    pub enforce_scopes: bool,
    pub gateway_url: Option<String>,
    /// `write_file` lands here, per replica, so tests can see which replica served a call.
    pub files: Mutex<HashMap<String, String>>,
}

/// One demo backend's MCP handler.
#[derive(Clone)]
pub(super) struct DemoServer(pub Arc<Shared>);

/// A tool failure reported in-band (`isError: true`), as MCP asks for tool-level errors.
type ToolResult = Result<String, String>;

impl DemoServer {
    fn tools(&self) -> Vec<Tool> {
        let mut tools = vec![
            tool(
                "whoami",
                "Replica, backend, verified token claims and MCP headers seen",
                json!({}),
            ),
            tool(
                "echo",
                "Returns text byte for byte",
                json!({"text": {"type": "string"}}),
            ),
            tool(
                "big",
                "Returns a text of the given number of bytes",
                json!({"bytes": {"type": "integer"}}),
            ),
            tool(
                "signed",
                "Returns text and a detached Ed25519 signature (base64) over its UTF-8 bytes",
                json!({"text": {"type": "string"}}),
            ),
            tool(
                "signed_big",
                "Returns a deterministic text of about the given number of bytes, and its signature",
                json!({"bytes": {"type": "integer"}}),
            ),
            tool(
                "signed_stream",
                "Sends count progress notifications '<signature> <text> #i', then returns like signed",
                json!({"text": {"type": "string"}, "count": {"type": "integer"}}),
            ),
        ];
        match self.0.kind {
            BackendKind::Files => tools.extend([
                tool(
                    "read_file",
                    "Reads a demo file (files:read)",
                    json!({"path": {"type": "string"}}),
                ),
                tool(
                    "write_file",
                    "Writes a demo file on this replica (files:write)",
                    json!({"path": {"type": "string"}, "text": {"type": "string"}}),
                ),
                tool(
                    "read_secret",
                    "Reads a demo secret (files:read)",
                    json!({"name": {"type": "string"}}),
                ),
            ]),
            BackendKind::Reports => tools.extend([
                tool(
                    "publish",
                    "Publishes a report (reports:write)",
                    json!({"text": {"type": "string"}}),
                ),
                tool(
                    "summarize",
                    "Reads a file from the files backend through the gateway (reports:write)",
                    json!({"path": {"type": "string"}}),
                ),
            ]),
        }
        tools
    }

    /// The texts of a tool's result: the text and its signature for the `signed*` tools, one
    /// text for the others.
    async fn contents(
        &self,
        name: &str,
        args: &JsonObject,
        request: &RequestInfo,
        context: &RequestContext<RoleServer>,
    ) -> Result<Vec<String>, String> {
        match name {
            "signed" => Ok(signed(arg(args, "text")?)),
            "signed_big" => {
                let bytes = checked_size(arg(args, "bytes")?)?;
                Ok(signed(signing::sample_text(bytes)))
            }
            "signed_stream" => {
                let text: String = arg(args, "text")?;
                notify_signed(context, &text, arg(args, "count")?).await?;
                Ok(signed(text))
            }
            _ => self.run(name, args, request).await.map(|text| vec![text]),
        }
    }

    async fn run(&self, name: &str, args: &JsonObject, request: &RequestInfo) -> ToolResult {
        let (shared, caller) = (&self.0, &request.caller);
        match (shared.kind, name) {
            (_, "whoami") => Ok(self.whoami(caller, request).to_string()),
            (_, "echo") => arg::<String>(args, "text"),
            (_, "big") => big(arg(args, "bytes")?),
            (BackendKind::Files, "read_file") => {
                self.require(caller, "files:read")?;
                let path: String = arg(args, "path")?;
                let written = shared.files.lock().expect("files lock").get(&path).cloned();
                Ok(written.unwrap_or_else(|| format!("demo content of {path}")))
            }
            (BackendKind::Files, "write_file") => {
                self.require(caller, "files:write")?;
                let (path, text) = (arg(args, "path")?, arg(args, "text")?);
                shared.files.lock().expect("files lock").insert(path, text);
                Ok("ok".into())
            }
            (BackendKind::Files, "read_secret") => {
                self.require(caller, "files:read")?;
                Ok(format!(
                    "demo secret {}: hunter2",
                    arg::<String>(args, "name")?
                ))
            }
            (BackendKind::Reports, "publish") => {
                self.require(caller, "reports:write")?;
                arg::<String>(args, "text").map(|_| "ok".into())
            }
            (BackendKind::Reports, "summarize") => {
                self.require(caller, "reports:write")?;
                self.summarize(arg(args, "path")?, caller).await
            }
            _ => Err(format!("unknown tool {name}")),
        }
    }

    fn whoami(&self, caller: &Caller, request: &RequestInfo) -> Value {
        json!({
            "replica": self.0.replica,
            "backend": self.0.kind.name(),
            "claims": caller.claims,
            "session": request.header("mcp-session-id"),
            "headers": request.headers_json(),
        })
    }

    /// A backend calling another backend through the gateway with the token it received:
    /// the delegation path the gateway must attenuate (CONTRACT, "Per request" 5).
    async fn summarize(&self, path: String, caller: &Caller) -> ToolResult {
        let gateway = self
            .0
            .gateway_url
            .as_deref()
            .ok_or("no --gateway-url configured")?;
        let url = format!("{}/mcp/files", gateway.trim_end_matches('/'));
        let client = McpClient::connect(&url, Era::Modern, caller.token.as_deref(), &[])
            .await
            .map_err(|e| format!("connect {url}: {e}"))?;
        let content = client.call_tool("read_file", json!({"path": path})).await;
        let whoami = client.call_tool("whoami", json!({})).await;
        client.close().await;
        let content = content.map_err(|e| format!("files/read_file: {e}"))?;
        let whoami: Value =
            serde_json::from_str(&whoami.map_err(|e| format!("files/whoami: {e}"))?)
                .map_err(|e| format!("files/whoami: {e}"))?;
        Ok(json!({"content": content, "downstream_claims": whoami["claims"]}).to_string())
    }

    fn require(&self, caller: &Caller, scope: &str) -> Result<(), String> {
        if !self.0.enforce_scopes || caller.has_scope(scope) {
            Ok(())
        } else {
            Err(format!("insufficient scope: {scope} required"))
        }
    }
}

impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        let name = format!("demo-backend-{}", self.0.kind.name());
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(name, env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools().into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.get_tool(&request.name).is_none() {
            return Err(ErrorData::invalid_params(
                format!("unknown tool {}", request.name),
                None,
            ));
        }
        let info = RequestInfo::from_context(&context);
        let args = request.arguments.unwrap_or_default();
        let result = match self.contents(&request.name, &args, &info, &context).await {
            Ok(texts) => {
                CallToolResult::success(texts.into_iter().map(ContentBlock::text).collect())
            }
            Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
        };
        Ok(result.into())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    /// Modern `subscriptions/listen`: rmcp has already sent the acknowledgment; one
    /// `tools/list_changed` follows after a pause (so tests can see a held-open stream deliver
    /// late events through the gateway), then the stream idles until the client leaves.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        tokio::select! {
            _ = context.cancelled() => return Ok(()),
            _ = tokio::time::sleep(LISTEN_NOTIFY_AFTER) => {}
        }
        if context.accepted().tools_list_changed == Some(true) {
            let _ = context.sink().notify_tool_list_changed().await;
        }
        context.cancelled().await;
        Ok(())
    }
}

/// What a tool call can see of the HTTP request that carried it.
struct RequestInfo {
    caller: Caller,
    headers: http::HeaderMap,
}

impl RequestInfo {
    /// The MCP and gateway headers whoami reports, so tests see what the gateway forwarded.
    const REPORTED_HEADERS: [&'static str; 6] = [
        "mcp-method",
        "mcp-name",
        "mcp-protocol-version",
        "mcp-session-id",
        "mcp-task-id",
        "x-mcp-affinity",
    ];

    fn from_context(context: &RequestContext<RoleServer>) -> Self {
        // rmcp's Streamable HTTP service stores the request's http::request::Parts (with the
        // extensions our auth layer added) in every request context, in both eras.
        let parts = context.extensions.get::<http::request::Parts>();
        Self {
            caller: parts
                .and_then(|p| p.extensions.get::<Caller>())
                .cloned()
                .unwrap_or_default(),
            headers: parts.map(|p| p.headers.clone()).unwrap_or_default(),
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    fn headers_json(&self) -> Value {
        Self::REPORTED_HEADERS
            .iter()
            .map(|name| (name.to_string(), json!(self.header(name))))
            .collect()
    }
}

fn tool(name: &'static str, description: &'static str, properties: Value) -> Tool {
    let required: Vec<&String> = properties
        .as_object()
        .map(|p| p.keys().collect())
        .unwrap_or_default();
    let schema = json!({"type": "object", "properties": properties, "required": required});
    let Value::Object(schema) = schema else {
        unreachable!("json! object")
    };
    Tool::new(name, description, schema)
}

fn arg<T: DeserializeOwned>(args: &JsonObject, name: &str) -> Result<T, String> {
    let value = args
        .get(name)
        .ok_or_else(|| format!("missing argument {name}"))?;
    serde_json::from_value(value.clone()).map_err(|e| format!("argument {name}: {e}"))
}

fn big(bytes: usize) -> ToolResult {
    Ok("x".repeat(checked_size(bytes)?))
}

fn checked_size(bytes: usize) -> Result<usize, String> {
    if bytes > MAX_BIG_BYTES {
        return Err(format!("at most {MAX_BIG_BYTES} bytes"));
    }
    Ok(bytes)
}

/// `[text, signature]`: the result of the `signed*` tools.
fn signed(text: String) -> Vec<String> {
    let signature = signing::sign(&text);
    vec![text, signature]
}

/// `count` `notifications/progress` on the request's own stream (MCP routes progress by the
/// request's `_meta.progressToken`), each `message` being `<signature> <text> #<i>`.
async fn notify_signed(
    context: &RequestContext<RoleServer>,
    text: &str,
    count: u32,
) -> Result<(), String> {
    if count > MAX_STREAM_NOTIFICATIONS {
        return Err(format!("at most {MAX_STREAM_NOTIFICATIONS} notifications"));
    }
    let token = context
        .meta
        .get_progress_token()
        .ok_or("signed_stream needs _meta.progressToken")?;
    for i in 1..=count {
        let line = format!("{text} #{i}");
        let progress = ProgressNotificationParam::new(token.clone(), f64::from(i))
            .with_total(f64::from(count))
            .with_message(format!("{} {line}", signing::sign(&line)));
        context
            .peer
            .notify_progress(progress)
            .await
            .map_err(|e| format!("progress notification: {e}"))?;
        tokio::time::sleep(STREAM_NOTIFY_EVERY).await;
    }
    Ok(())
}
