//! One MCP request through the concerns, in order, returning what the glue must do:
//! internal headers → authentication → envelope and agreement → policy → delegation.
//!
//! Pure: it reads the header list and body handed to it, and time and randomness through
//! [`Host`]; the proxy-wasm glue in `lib.rs` applies the returned [`Step`].

use std::rc::Rc;

use crate::agreement::{self, Era, McpHeaders};
use crate::audit::{self, Record};
use crate::config::{Config, SubjectLogging};
use crate::metrics::{self, Tally};
use crate::delegation::{self, MintCache};
use crate::envelope;
use crate::headers::Pair;
use crate::host::Host;
use crate::identity::{Caller, VerifyCache};
use crate::policy::{self, Ask};
use crate::trust::Trust;
use crate::verdict::{AuthFailure, Refusal, Reply};
use crate::workflow::{self, OnResponse, WorkflowConfig};

/// The per-worker state the pipeline decides with.
pub struct Gateway {
    pub config: Config,
    pub trust: Trust,
    pub verify_cache: VerifyCache,
    pub mint_cache: MintCache,
    /// Set when a token named a key no identity provider has: the glue refetches JWKS.
    pub jwks_refresh_wanted: bool,
    /// Tokens minted by this worker.
    pub minted: u64,
    /// Per-request counters not yet flushed to Envoy.
    pub pending_metrics: crate::metrics::Pending,
}

impl Gateway {
    pub fn new(config: Config, trust: Trust) -> Gateway {
        let verify_cache = VerifyCache::new(config.gateway.verify_cache_entries);
        let mint_cache = MintCache::new(config.gateway.mint_cache_entries);
        Gateway {
            config,
            trust,
            verify_cache,
            mint_cache,
            jwks_refresh_wanted: false,
            minted: 0,
            pending_metrics: Default::default(),
        }
    }

    /// This worker's event counts so far.
    pub fn tally(&self) -> Tally {
        Tally {
            verify_hit: self.verify_cache.hits(),
            verify_miss: self.verify_cache.misses(),
            mint_hit: self.mint_cache.hits(),
            mint_miss: self.mint_cache.misses(),
            minted: self.minted,
        }
    }

    /// The subject as the audit line shows it: raw, or a keyed hash for privacy.
    pub fn audit_subject(&self, sub: &Rc<str>) -> Rc<str> {
        match self.config.audit.subject {
            SubjectLogging::Raw => sub.clone(),
            SubjectLogging::Hash => crate::session::keyed_hash(&self.trust.workflow.hash, "audit-subject", sub).into(),
        }
    }
}

/// Header edits to apply to the upstream request, and what to do with its response.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Edits {
    pub remove: Vec<String>,
    /// Values shared with the caches they come from (the minted token, the task's affinity).
    pub set: Vec<(&'static str, Rc<str>)>,
    /// What the upstream's `Mcp-Session-Id` becomes toward the client.
    pub on_response: OnResponse,
}

/// What the glue does next.
#[derive(Debug)]
pub enum Step {
    /// Forward upstream after applying the edits.
    Forward(Edits),
    /// Hold the headers and hand the whole body to [`on_body`].
    ReadBody(Pending),
    /// Answer locally; nothing goes upstream.
    Reply(Reply),
}

/// What the header phase learned, carried to the body phase.
#[derive(Debug)]
pub struct Pending {
    pub backend: String,
    pub edits: Edits,
    pub caller: Rc<Caller>,
}

pub use crate::headers::get as header;

const JWKS_PATH: &str = "/.well-known/jwks.json";
const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// Header phase. Fills `rec` with what it learns, whatever the outcome.
pub fn on_headers(gw: &mut Gateway, host: &dyn Host, headers: &[Pair<'_>], end_of_stream: bool, rec: &mut Record) -> Step {
    let mut edits = Edits::default();
    for (name, _) in headers {
        if gw.config.is_internal_header(name) && !edits.remove.iter().any(|r| r == name) {
            edits.remove.push(name.to_string());
        }
    }
    let path = header(headers, ":path").unwrap_or("");
    let http_method = header(headers, ":method").unwrap_or("");
    if let Some(reply) = well_known(&gw.config, &gw.trust, http_method, path) {
        return Step::Reply(reply);
    }
    // Every request under the route prefix is an MCP request and gets an audit line (the shipped
    // audit logger selects them by the same prefix), a path naming no backend included.
    rec.audited = path.starts_with(gw.config.route_prefix.as_str());
    let Some(backend) = gw.config.backend_for_path(path) else {
        if rec.audited {
            return refuse(&gw.config, rec, Refusal::UnknownBackend, None);
        }
        return Step::Forward(edits);
    };
    rec.backend = backend.to_string();
    // What the headers declare, so refusals before the body is read are audited sensibly; the
    // body phase overwrites both with checked values.
    let declares_modern = header(headers, agreement::H_PROTOCOL_VERSION).is_some_and(|v| agreement::is_modern_version(v) == Ok(true));
    rec.era = if declares_modern { Era::Modern } else { Era::Legacy }.as_str();
    rec.method = metrics::known_method(header(headers, agreement::H_METHOD).unwrap_or("")).into();
    if let Some(task) = header(headers, agreement::H_TASK_ID) {
        if !agreement::valid_task_id(task) {
            return refuse(&gw.config, rec, Refusal::InvalidTaskId, None);
        }
    }
    let caller = match authenticate(gw, host.now(), headers) {
        Ok(c) => c,
        Err(failure) => return refuse(&gw.config, rec, Refusal::Unauthenticated(failure), None),
    };
    rec.sub = gw.audit_subject(&caller.sub).into();
    if let Some(jti) = &caller.jti {
        rec.parent_jti = jti.clone().into();
    }
    rec.task = caller.declared_task(header(headers, agreement::H_TASK_ID)).unwrap_or("").to_string();
    match http_method {
        "POST" => {
            if !is_json(header(headers, "content-type")) {
                return refuse(&gw.config, rec, Refusal::UnsupportedMediaType, None);
            }
            let declared_len = header(headers, "content-length").and_then(|v| v.parse::<usize>().ok());
            if declared_len.is_some_and(|n| n > gw.config.max_body_bytes) {
                return refuse(&gw.config, rec, Refusal::BodyTooLarge, None);
            }
            let pending = Pending { backend: backend.to_string(), edits, caller };
            if end_of_stream {
                // No body at all: answer as the body phase would for an empty body.
                return on_body(gw, host, headers, pending, b"", rec);
            }
            Step::ReadBody(pending)
        }
        // The legacy era's SSE stream and session end; the modern era has neither.
        "GET" | "DELETE" => {
            rec.method = metrics::method_text(http_method);
            match header(headers, agreement::H_PROTOCOL_VERSION).map(agreement::is_modern_version) {
                Some(Ok(true)) => {
                    rec.era = Era::Modern.as_str();
                    refuse(&gw.config, rec, Refusal::MethodNotAllowed, None)
                }
                Some(Err(refusal)) => refuse(&gw.config, rec, refusal, None),
                _ => {
                    let pending = Pending { backend: backend.to_string(), edits, caller };
                    let ask = Ask { method: http_method, name: None };
                    authorize(gw, host, headers, pending, Era::Legacy, ask, None, rec)
                }
            }
        }
        _ => refuse(&gw.config, rec, Refusal::MethodNotAllowed, None),
    }
}

/// Body phase: envelope, agreement, policy, delegation.
pub fn on_body(gw: &mut Gateway, host: &dyn Host, headers: &[Pair<'_>], pending: Pending, body: &[u8], rec: &mut Record) -> Step {
    if body.len() > gw.config.max_body_bytes {
        return refuse(&gw.config, rec, Refusal::BodyTooLarge, None);
    }
    let env = match envelope::parse(body) {
        Ok(env) => env,
        Err(err) => return refuse(&gw.config, rec, err.refusal, err.id),
    };
    rec.method = metrics::method_text(env.method.as_deref().unwrap_or(""));
    rec.name = env.name.as_deref().unwrap_or("").to_string();
    let agreed = match McpHeaders::read(headers).and_then(|h| agreement::agree(&h, &env)) {
        Ok(a) => a,
        Err(refusal) => return refuse(&gw.config, rec, refusal, env.id),
    };
    rec.era = agreed.era.as_str();
    let mut pending = pending;
    pending.edits.set.extend(agreed.set_headers);
    if agreed.drop_session_id {
        pending.edits.remove.push(agreement::H_SESSION_ID.to_string());
    }
    let ask = Ask { method: env.method.as_deref().unwrap_or(""), name: env.name.as_deref() };
    authorize(gw, host, headers, pending, agreed.era, ask, env.id, rec)
}

/// Workflow binding, policy, then delegation: decides the backend token and sets it as the
/// only credential.
#[allow(clippy::too_many_arguments)]
fn authorize(
    gw: &mut Gateway,
    host: &dyn Host,
    headers: &[Pair<'_>],
    pending: Pending,
    era: Era,
    ask: Ask<'_>,
    id: Option<&serde_json::value::RawValue>,
    rec: &mut Record,
) -> Step {
    let now = host.now();
    let bound = {
        let cfg = workflow_config(gw);
        let wf_ask = workflow::Ask {
            caller: &pending.caller,
            backend: &pending.backend,
            era,
            method: ask.method,
            task_header: header(headers, agreement::H_TASK_ID),
            session_header: header(headers, agreement::H_SESSION_ID).filter(|_| era == Era::Legacy),
        };
        workflow::bind(&cfg, host, &wf_ask)
    };
    let bound = match bound {
        Ok(b) => b,
        Err(refusal) => return refuse(&gw.config, rec, refusal, id),
    };
    rec.session = bound.session_tag.clone();
    let grant = match delegation::plan(&gw.config, &pending.caller, &pending.backend, &bound.task, now, bound.not_after) {
        Ok(g) => g,
        Err(refusal) => return refuse(&gw.config, rec, refusal, id),
    };
    rec.task = grant.task.to_string();
    let backend = &gw.config.backends[&pending.backend];
    let allowed = policy::required(backend, ask)
        .and_then(|needed| policy::check(&needed, &grant.scopes))
        .and_then(|()| policy::check_workspace(grant.workspace, ask));
    if let Err(refusal) = allowed {
        return refuse(&gw.config, rec, refusal, id);
    }
    let margin = (gw.config.gateway.token_ttl_secs / 10).max(5);
    let minted = match gw.mint_cache.get(&grant, now, margin) {
        Some(m) => m,
        None => match delegation::mint(&grant, &gw.trust.signer, &gw.config.gateway.issuer, host.random_id(), now) {
            Ok(m) => {
                let m = Rc::new(m);
                gw.mint_cache.put(&grant, m.clone(), now);
                gw.minted += 1;
                m
            }
            Err(refusal) => return refuse(&gw.config, rec, refusal, id),
        },
    };
    rec.decision = audit::ALLOW;
    rec.jti = minted.jti.clone().into();
    rec.aud = minted.aud.clone().into();
    rec.scope = minted.scope.clone().into();
    rec.act = minted.chain.clone().into();
    rec.depth = minted.act.depth();
    let mut edits = pending.edits;
    edits.set.extend(bound.set);
    edits.set.push(("authorization", minted.bearer.clone()));
    edits.on_response = bound.on_response;
    Step::Forward(edits)
}

/// The binding settings of this gateway.
pub fn workflow_config(gw: &Gateway) -> WorkflowConfig<'_> {
    WorkflowConfig {
        keys: &gw.trust.workflow,
        sessions: &gw.config.sessions,
        tasks: &gw.config.tasks,
        policy_version: gw.config.policy_version,
    }
}

/// What the response phase changes in the upstream's response headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResponseEdits<'h> {
    /// The upstream's `:status`, for the audit record.
    pub status: u32,
    /// Headers to remove: internal ones the upstream sent, and its session id when the client
    /// is shown none.
    pub remove: Vec<&'h str>,
    /// The session handle the client sees in place of the upstream's `Mcp-Session-Id`.
    pub session: Option<String>,
    /// A new session was sealed (`initialize`).
    pub opened: bool,
}

/// Response phase, from the response headers read once: only what the upstream actually sent
/// is removed or replaced, so a plain response costs no header edit at all.
pub fn on_response<'h>(gw: &Gateway, host: &dyn Host, plan: &OnResponse, headers: &[Pair<'h>]) -> ResponseEdits<'h> {
    let status = header(headers, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut remove: Vec<&'h str> = Vec::new();
    for (name, _) in headers {
        if gw.config.is_internal_header(name) && !remove.contains(name) {
            remove.push(name);
        }
    }
    let upstream = header(headers, agreement::H_SESSION_ID);
    // The backend's session id is never shown: the client sees the sealed handle or nothing.
    let session = workflow::on_response(&workflow_config(gw), host, plan, upstream);
    if session.is_none() && upstream.is_some() {
        remove.push(agreement::H_SESSION_ID);
    }
    let opened = session.is_some() && matches!(plan, OnResponse::Seal(_));
    ResponseEdits { status, remove, session, opened }
}

/// Verifies the bearer token, through the cache.
fn authenticate(gw: &mut Gateway, now: u64, headers: &[Pair<'_>]) -> Result<Rc<Caller>, AuthFailure> {
    let value = header(headers, "authorization").ok_or(AuthFailure::Missing)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthFailure::Malformed)?;
    if let Some(caller) = gw.verify_cache.get(token, now) {
        return Ok(caller);
    }
    let verified = gw.trust.verify(token, now, gw.config.gateway.leeway_secs);
    if verified == Err(AuthFailure::UnknownKey) {
        gw.jwks_refresh_wanted = true;
    }
    let caller = Rc::new(verified?);
    gw.verify_cache.put(token, caller.clone(), now);
    Ok(caller)
}

/// The gateway's own endpoints: its JWKS and RFC 9728 protected-resource metadata.
fn well_known(config: &Config, trust: &Trust, http_method: &str, path: &str) -> Option<Reply> {
    let path = path.split('?').next().unwrap_or(path);
    let body = if path == JWKS_PATH {
        trust.jwks_json.clone()
    } else {
        let backend = config.backend_for_path(path.strip_prefix(METADATA_PREFIX)?)?;
        serde_json::json!({
            "resource": format!("{}{}{backend}", config.gateway.public_url, config.route_prefix),
            "authorization_servers": config.identity_providers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            "scopes_supported": config.backends[backend].scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": backend,
        })
        .to_string()
    };
    if http_method != "GET" {
        return Some(Reply { status: 405, headers: vec![("allow", "GET".into())], body: Vec::new() });
    }
    Some(Reply { status: 200, headers: vec![("content-type", "application/json".into())], body: body.into_bytes() })
}

fn refuse(config: &Config, rec: &mut Record, refusal: Refusal, id: Option<&serde_json::value::RawValue>) -> Step {
    rec.decision = audit::DENY;
    rec.reason = refusal.reason();
    let metadata = config.resource_metadata_url(if rec.backend.is_empty() { "" } else { &rec.backend });
    let reply = Reply::refusal(&refusal, id, &metadata);
    rec.status = reply.status;
    Step::Reply(reply)
}

/// The body outgrew `max_body_bytes` while streaming in (no `content-length`, or a false one).
pub fn body_too_large(config: &Config, rec: &mut Record) -> Step {
    refuse(config, rec, Refusal::BodyTooLarge, None)
}

/// `application/json`, with or without parameters such as `charset`.
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests;
