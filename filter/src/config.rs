//! The filter's configuration: the `configuration` JSON of `envoy.filters.http.wasm`.
//!
//! Parsed once in `on_configure` into typed structs; unknown fields are refused and `validate`
//! names every bad field, so a typo fails the load instead of silently disabling a check.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::session::Limits;

/// Header the filter sets for Envoy's ring hash; clients may never send it.
pub const AFFINITY_HEADER: &str = "x-mcp-affinity";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Largest accepted POST body; larger ones get 413.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Path prefix of MCP endpoints; `<prefix><backend>` is one backend's endpoint.
    #[serde(default = "defaults::route_prefix")]
    pub route_prefix: String,
    /// The MCP backends behind the gateway, by name (the path segment after the prefix).
    pub backends: BTreeMap<String, BackendConfig>,
    /// Further request headers only the filter may set; client copies are removed.
    #[serde(default)]
    pub internal_headers: Vec<String>,
    /// Identity providers whose tokens the gateway accepts from callers.
    pub identity_providers: Vec<IdpConfig>,
    /// The gateway as a token issuer for its backends.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// Which backend may call which other backend through the gateway, with at most which scopes.
    #[serde(default)]
    pub delegations: Vec<DelegationConfig>,
    /// Lifetime of legacy sessions.
    #[serde(default)]
    pub sessions: Limits,
    /// Lifetime of modern task bindings.
    #[serde(default)]
    pub tasks: Limits,
    /// Environment variable with the session sealing keys, `k1:<base64>,k0:<base64>` (first seals).
    #[serde(default = "defaults::seal_keys_env")]
    pub seal_keys_env: String,
    /// Environment variable with the 32-byte key of affinity and session-tag hashes (base64).
    #[serde(default = "defaults::hash_key_env")]
    pub hash_key_env: String,
    /// Sessions sealed under another policy version must initialize again.
    #[serde(default = "defaults::policy_version")]
    pub policy_version: u32,
    /// What the audit line may show.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Pull revocations from another replica's (or a central) feed on a timer.
    #[serde(default)]
    pub revocation_feed: Option<FeedConfig>,
    /// Approved workspace roots (URI prefixes) per subject, for tokens without a `workspace`
    /// claim: `resources/read` is confined to them and minted tokens carry them.
    #[serde(default)]
    pub workspaces: BTreeMap<String, Vec<String>>,
}

/// A revocation feed: `GET <path>` on an Envoy cluster answering the JSON revocation table
/// (the admin listener's `/revocations`). Every replica converges within `poll_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    pub cluster: String,
    #[serde(default = "defaults::feed_path")]
    pub path: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "defaults::feed_poll_secs")]
    pub poll_secs: u64,
    #[serde(default = "defaults::jwks_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `raw` (default) or `hash`: a keyed hash of the subject, stable for joining lines.
    #[serde(default)]
    pub subject: SubjectLogging,
    /// Where the record is written; either way it is also the filter state `wasm.mcp_audit`.
    #[serde(default)]
    pub sink: AuditSink,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSink {
    /// A line in Envoy's application log per request: works with any listener config, but
    /// Envoy's log call writes to stderr synchronously, the costliest host call per request.
    #[default]
    Log,
    /// Only the filter state: the listener's access log writes the line
    /// (`mcp_audit: %FILTER_STATE(wasm.mcp_audit:PLAIN)%`), buffered by Envoy and sent to any
    /// access-log sink (file, gRPC ALS, OpenTelemetry).
    AccessLog,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectLogging {
    #[default]
    Raw,
    Hash,
}

/// One backend: what its tokens may carry and what each method, tool or resource needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Scopes a token for this backend may ever carry (the caller's are intersected with these).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes needed per JSON-RPC method (all of them); unlisted methods need none.
    #[serde(default)]
    pub methods: BTreeMap<String, Vec<String>>,
    /// Scopes needed per tool (all of them).
    #[serde(default)]
    pub tools: BTreeMap<String, Vec<String>>,
    /// Whether a tool not listed in `tools` may be called (with no scope needed).
    #[serde(default)]
    pub allow_unlisted_tools: bool,
    /// Scopes needed per resource URI prefix (the longest matching prefix decides).
    #[serde(default)]
    pub resources: Vec<ResourceRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRule {
    pub prefix: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Accepted `aud` values (any one).
    pub audiences: Vec<String>,
    /// Allowed `alg` values; `none` is never allowed, HS256 only with `hs256_secret_env`.
    #[serde(default = "defaults::algorithms")]
    pub algorithms: Vec<String>,
    /// An inline JWKS document.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// A JWKS fetched through an Envoy cluster, refreshed on a timer and on an unknown `kid`.
    #[serde(default)]
    pub jwks_uri: Option<JwksUri>,
    /// Environment variable holding an HS256 shared secret (explicit opt-in).
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksUri {
    /// Envoy cluster that reaches the identity provider.
    pub cluster: String,
    pub path: String,
    /// `:authority` of the fetch; defaults to the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// Regular refresh interval.
    #[serde(default = "defaults::jwks_refresh_secs")]
    pub refresh_secs: u64,
    /// Least time between fetches triggered by an unknown `kid` or a failed fetch.
    #[serde(default = "defaults::jwks_min_refresh_secs")]
    pub min_refresh_secs: u64,
    #[serde(default = "defaults::jwks_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// `iss` of minted tokens.
    #[serde(default = "defaults::gateway_issuer")]
    pub issuer: String,
    /// Public base URL of the gateway, for RFC 9728 metadata and challenges.
    #[serde(default = "defaults::public_url")]
    pub public_url: String,
    /// Environment variable holding the Ed25519 signing key (PEM).
    #[serde(default = "defaults::signing_key_env")]
    pub signing_key_env: String,
    /// `kid` of the signing key in the gateway's JWKS.
    #[serde(default = "defaults::signing_key_id")]
    pub signing_key_id: String,
    /// Lifetime of minted tokens (never past the caller's `exp`).
    #[serde(default = "defaults::token_ttl_secs")]
    pub token_ttl_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "defaults::leeway_secs")]
    pub leeway_secs: u64,
    /// Most `act` levels a minted token may carry.
    #[serde(default = "defaults::max_delegation_depth")]
    pub max_delegation_depth: u32,
    /// Entries of the verified-token cache (0 disables it).
    #[serde(default = "defaults::cache_entries")]
    pub verify_cache_entries: usize,
    /// Entries of the minted-token cache (0 disables it).
    #[serde(default = "defaults::cache_entries")]
    pub mint_cache_entries: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationConfig {
    /// The calling backend (the `aud` of the token it presents).
    pub from: String,
    /// The backend it may call.
    pub to: String,
    /// The most the hop token may carry.
    pub scopes: Vec<String>,
}

mod defaults {
    pub fn max_body_bytes() -> usize {
        1 << 20
    }
    pub fn route_prefix() -> String {
        "/mcp/".to_string()
    }
    pub fn algorithms() -> Vec<String> {
        vec!["EdDSA".into(), "ES256".into(), "RS256".into()]
    }
    pub fn jwks_refresh_secs() -> u64 {
        300
    }
    pub fn jwks_min_refresh_secs() -> u64 {
        5
    }
    pub fn jwks_timeout_ms() -> u64 {
        2000
    }
    pub fn gateway_issuer() -> String {
        "mcp-gateway".into()
    }
    pub fn public_url() -> String {
        "http://127.0.0.1:10000".into()
    }
    pub fn signing_key_env() -> String {
        "MCP_GW_SIGNING_KEY".into()
    }
    pub fn signing_key_id() -> String {
        "gw-1".into()
    }
    pub fn token_ttl_secs() -> u64 {
        300
    }
    pub fn leeway_secs() -> u64 {
        30
    }
    pub fn max_delegation_depth() -> u32 {
        2
    }
    pub fn cache_entries() -> usize {
        10_000
    }
    pub fn seal_keys_env() -> String {
        "MCP_GW_SEAL_KEYS".into()
    }
    pub fn hash_key_env() -> String {
        "MCP_GW_HASH_KEY".into()
    }
    pub fn policy_version() -> u32 {
        1
    }
    pub fn feed_path() -> String {
        "/revocations".into()
    }
    pub fn feed_poll_secs() -> u64 {
        10
    }
}

const ALGORITHMS: [&str; 4] = ["EdDSA", "ES256", "RS256", "HS256"];

/// A configuration error: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid mcp-gateway-filter configuration: {}", self.0.join("; "))
    }
}

impl Config {
    /// Parses and validates the plugin configuration bytes.
    pub fn load(bytes: &[u8]) -> Result<Config, ConfigError> {
        let config: Config = serde_json::from_slice(bytes).map_err(|e| ConfigError(vec![format!("configuration: {e}")]))?;
        config.validate()?;
        Ok(config)
    }

    /// Every problem at once, each naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !(1..=64 << 20).contains(&self.max_body_bytes) {
            problems.push(format!("max_body_bytes: {} is outside 1..=67108864", self.max_body_bytes));
        }
        if !self.route_prefix.starts_with('/') || !self.route_prefix.ends_with('/') {
            problems.push(format!("route_prefix: {:?} must start and end with '/'", self.route_prefix));
        }
        if self.backends.is_empty() {
            problems.push("backends: at least one backend is required".to_string());
        }
        for name in self.backends.keys() {
            if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                problems.push(format!("backends.{name}: a backend name is 1+ characters of A-Z a-z 0-9 - _"));
            }
        }
        // Scopes reach WWW-Authenticate challenges: only RFC 6749 scope-tokens may be configured.
        let scope_token = |s: &String| !s.is_empty() && s.bytes().all(|c| c == 0x21 || (0x23..=0x5b).contains(&c) || (0x5d..=0x7e).contains(&c));
        for (name, b) in &self.backends {
            let lists = b.methods.values().chain(b.tools.values()).chain(b.resources.iter().map(|r| &r.scopes));
            if let Some(bad) = b.scopes.iter().chain(lists.flatten()).find(|s| !scope_token(s)) {
                problems.push(format!("backends.{name}: {bad:?} is not a scope-token (RFC 6749: printable ASCII, no space, quote or backslash)"));
            }
        }
        for (i, h) in self.internal_headers.iter().enumerate() {
            if h.is_empty() || h.bytes().any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')) {
                problems.push(format!("internal_headers[{i}]: {h:?} must be a lower-case header name"));
            }
        }
        self.validate_auth(&mut problems);
        self.sessions.validate("sessions", &mut problems);
        if let Some(feed) = &self.revocation_feed {
            if feed.poll_secs == 0 || feed.timeout_ms == 0 || !feed.path.starts_with('/') {
                problems.push("revocation_feed: poll_secs and timeout_ms must be positive and path must start with '/'".into());
            }
        }
        self.tasks.validate("tasks", &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }

    fn validate_auth(&self, problems: &mut Vec<String>) {
        if self.identity_providers.is_empty() {
            problems.push("identity_providers: at least one identity provider is required".to_string());
        }
        for (i, idp) in self.identity_providers.iter().enumerate() {
            let at = format!("identity_providers[{i}]");
            if idp.issuer.is_empty() || idp.issuer == self.gateway.issuer {
                problems.push(format!("{at}.issuer: must be non-empty and differ from gateway.issuer"));
            }
            if idp.audiences.is_empty() {
                problems.push(format!("{at}.audiences: at least one audience is required"));
            }
            for alg in &idp.algorithms {
                if !ALGORITHMS.contains(&alg.as_str()) {
                    problems.push(format!("{at}.algorithms: {alg:?} is not one of {ALGORITHMS:?}"));
                }
                if alg == "HS256" && idp.hs256_secret_env.is_none() {
                    problems.push(format!("{at}.algorithms: HS256 needs hs256_secret_env"));
                }
            }
            if idp.jwks.is_none() && idp.jwks_uri.is_none() && idp.hs256_secret_env.is_none() {
                problems.push(format!("{at}: one of jwks, jwks_uri or hs256_secret_env is required"));
            }
            if let Some(uri) = &idp.jwks_uri {
                if !uri.path.starts_with('/') {
                    problems.push(format!("{at}.jwks_uri.path: must start with '/'"));
                }
                if uri.refresh_secs == 0 || uri.min_refresh_secs == 0 || uri.timeout_ms == 0 {
                    problems.push(format!("{at}.jwks_uri: refresh_secs, min_refresh_secs and timeout_ms must be positive"));
                }
            }
        }
        let gw = &self.gateway;
        if gw.token_ttl_secs == 0 || gw.token_ttl_secs > 86_400 {
            problems.push(format!("gateway.token_ttl_secs: {} is outside 1..=86400", gw.token_ttl_secs));
        }
        if gw.max_delegation_depth == 0 || gw.max_delegation_depth > 8 {
            problems.push(format!("gateway.max_delegation_depth: {} is outside 1..=8", gw.max_delegation_depth));
        }
        if gw.public_url.ends_with('/') || !gw.public_url.starts_with("http") {
            problems.push(format!("gateway.public_url: {:?} must be an http(s) URL without a trailing '/'", gw.public_url));
        }
        for (i, d) in self.delegations.iter().enumerate() {
            for (field, name) in [("from", &d.from), ("to", &d.to)] {
                if !self.backends.contains_key(name) {
                    problems.push(format!("delegations[{i}].{field}: {name:?} is not a configured backend"));
                }
            }
        }
    }

    /// The delegation that lets `from` call `to`, if configured.
    pub fn delegation(&self, from: &str, to: &str) -> Option<&DelegationConfig> {
        self.delegations.iter().find(|d| d.from == from && d.to == to)
    }

    /// RFC 9728 metadata URL of a backend's MCP endpoint.
    pub fn resource_metadata_url(&self, backend: &str) -> String {
        format!("{}/.well-known/oauth-protected-resource{}{backend}", self.gateway.public_url, self.route_prefix)
    }

    /// The backend a request path addresses, if any (query string ignored).
    pub fn backend_for_path<'p>(&self, path: &'p str) -> Option<&'p str> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let name = path.strip_prefix(self.route_prefix.as_str())?;
        self.backends.contains_key(name).then_some(name)
    }

    /// Whether a request header may only be set by the filter.
    pub fn is_internal_header(&self, name: &str) -> bool {
        name == AFFINITY_HEADER || self.internal_headers.iter().any(|h| h == name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config body with one inline-JWKS identity provider and the given members.
    pub fn with_idp(members: &str) -> Vec<u8> {
        format!(r#"{{"identity_providers":[{{"issuer":"demo-idp","audiences":["mcp-gateway"],"jwks":{{"keys":[]}}}}],{members}}}"#).into_bytes()
    }

    #[test]
    fn auth_fields_are_checked_by_name() {
        let body = br#"{"backends":{"files":{}},"identity_providers":[{"issuer":"mcp-gateway","audiences":[],"algorithms":["none","HS256"]}],
            "gateway":{"token_ttl_secs":0,"max_delegation_depth":0},"delegations":[{"from":"reports","to":"files","scopes":[]}]}"#;
        let text = Config::load(body).unwrap_err().to_string();
        for field in ["identity_providers[0].issuer", "identity_providers[0].audiences", "identity_providers[0].algorithms",
            "identity_providers[0]: one of", "gateway.token_ttl_secs", "gateway.max_delegation_depth", "delegations[0].from"] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::load(&with_idp(r#""backends":{"files":{}}"#)).unwrap();
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.backend_for_path("/mcp/files?x=1"), Some("files"));
        assert_eq!(c.backend_for_path("/mcp/other"), None);
        assert_eq!(c.backend_for_path("/mcp/files/extra"), None);
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let err = Config::load(&with_idp(r#""backends":{"files":{}},"max_body_byte":5"#)).unwrap_err();
        assert!(err.to_string().contains("max_body_byte"), "{err}");
    }

    #[test]
    fn scopes_that_could_break_a_challenge_header_are_refused() {
        let err = Config::load(&with_idp(r#""backends":{"files":{"scopes":["ok"],"tools":{"t":["a\"b"]}}}"#)).unwrap_err();
        assert!(err.to_string().contains("backends.files"), "{err}");
        let err = Config::load(&with_idp(r#""backends":{"files":{"scopes":["two words"]}}"#)).unwrap_err();
        assert!(err.to_string().contains("scope-token"), "{err}");
    }

    #[test]
    fn every_bad_field_is_named() {
        let err = Config::load(&with_idp(r#""backends":{"a b":{}},"max_body_bytes":0,"route_prefix":"mcp","internal_headers":["X-Up"]"#)).unwrap_err();
        let text = err.to_string();
        for field in ["max_body_bytes", "route_prefix", "backends.a b", "internal_headers[0]"] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
    }

    #[test]
    fn affinity_header_is_always_internal() {
        let c = Config::load(&with_idp(r#""backends":{"files":{}},"internal_headers":["x-gw-extra"]"#)).unwrap();
        assert!(c.is_internal_header("x-mcp-affinity"));
        assert!(c.is_internal_header("x-gw-extra"));
        assert!(!c.is_internal_header("mcp-method"));
    }
}
