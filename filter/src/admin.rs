//! The gateway's admin API (revocation), served on a loopback-only listener by the same filter
//! in admin mode. Writes the shared revocation table every worker of this Envoy reads.

use serde::Deserialize;

use crate::host::Host;
use crate::session::{self, Revocations, SealKeys};
use crate::verdict::Reply;
use crate::workflow::{self, WorkflowKeys, REVOCATIONS_KEY};

/// The plugin configuration of the admin listener: `{"admin": {...}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_seal_env")]
    pub seal_keys_env: String,
    #[serde(default = "default_hash_env")]
    pub hash_key_env: String,
    /// Revocations older than this are pruned (the longest session or task lifetime).
    #[serde(default = "default_horizon")]
    pub horizon_secs: u64,
}

fn default_seal_env() -> String {
    "MCP_GW_SEAL_KEYS".into()
}
fn default_hash_env() -> String {
    "MCP_GW_HASH_KEY".into()
}
fn default_horizon() -> u64 {
    30 * 24 * 3600
}

/// Detects an admin-mode plugin configuration.
pub fn parse(bytes: &[u8]) -> Option<Result<AdminConfig, String>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        admin: AdminConfig,
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    value.get("admin")?;
    Some(serde_json::from_value::<Wrapper>(value).map(|w| w.admin).map_err(|e| format!("admin: {e}")))
}

/// Builds the keys the admin API needs from the environment.
pub fn keys(cfg: &AdminConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<WorkflowKeys, String> {
    let seal = env(&cfg.seal_keys_env).ok_or_else(|| format!("admin.seal_keys_env: {} is not set", cfg.seal_keys_env))?;
    let hash = env(&cfg.hash_key_env).ok_or_else(|| format!("admin.hash_key_env: {} is not set", cfg.hash_key_env))?;
    Ok(WorkflowKeys::new(
        SealKeys::from_spec(&seal).map_err(|e| format!("admin.seal_keys_env: {e}"))?,
        session::decode_key(&hash).map_err(|e| format!("admin.hash_key_env: {e}"))?,
    ))
}

/// Merges a polled revocation feed into this Envoy's shared table (compare-and-swap). Returns
/// how many entries the feed carried, or why it was not taken in.
pub fn take_in_feed(host: &dyn Host, body: &[u8]) -> Result<usize, String> {
    let feed = Revocations::from_json(body)?;
    for _ in 0..8 {
        let (stored, cas) = host.shared_get(REVOCATIONS_KEY);
        let mut table = match stored.as_deref().map(Revocations::decode) {
            None => Revocations::default(),
            Some(t) => t?,
        };
        if !table.merge(&feed) || workflow::store_revocations(host, &table, cas) {
            return Ok(feed.len());
        }
    }
    Err("revocation table busy".to_string())
}

fn json(status: u32, body: String) -> Reply {
    Reply { status, headers: vec![("content-type", "application/json".into())], body: body.into_bytes() }
}

fn error(status: u32, message: &str) -> Reply {
    json(status, serde_json::json!({ "error": message }).to_string())
}

/// Handles one admin request: `POST /revoke` with `{"session"|"task"|"subject": "..."}`, or
/// `GET /revocations` (the table as JSON, for other replicas' revocation feed).
pub fn handle(cfg: &AdminConfig, keys: &WorkflowKeys, host: &dyn Host, method: &str, path: &str, body: &[u8]) -> Reply {
    if path == "/revocations" && method == "GET" {
        // The feed other gateway replicas poll (revocation_feed).
        let table = host.shared_get(REVOCATIONS_KEY).0.map(|b| Revocations::decode(&b));
        return match table {
            None => json(200, Revocations::default().to_json()),
            Some(Ok(t)) => json(200, t.to_json()),
            Some(Err(e)) => error(500, &e),
        };
    }
    if path != "/revoke" {
        return error(404, "not found");
    }
    if method != "POST" {
        return error(405, "use POST");
    }
    let now = host.now();
    let order = match session::parse_revoke_request(body, now) {
        Ok(order) => order,
        Err(e) => return error(400, &e),
    };
    // Compare-and-swap: another worker may revoke at the same moment.
    for _ in 0..8 {
        let (stored, cas) = host.shared_get(REVOCATIONS_KEY);
        let mut table = match stored.as_deref().map(Revocations::decode) {
            None => Revocations::default(),
            Some(Ok(t)) => t,
            Some(Err(e)) => return error(500, &format!("revocation table unreadable: {e}")),
        };
        table.prune(now, cfg.horizon_secs);
        let answer = session::apply(&mut table, &order, now, &keys.seal, &keys.hash);
        if workflow::store_revocations(host, &table, cas) {
            return json(200, answer);
        }
    }
    error(503, "revocation table busy, retry")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::test_host::FixedHost;

    fn setup() -> (AdminConfig, WorkflowKeys, FixedHost) {
        let cfg = parse(br#"{"admin":{}}"#).unwrap().unwrap();
        let keys = WorkflowKeys::new(SealKeys::new(vec![(1, [1; 32])]).unwrap(), [2; 32]);
        (cfg, keys, FixedHost::at(1_800_000_000))
    }

    #[test]
    fn revoke_task_is_stored_for_every_worker() {
        let (cfg, keys, host) = setup();
        let reply = handle(&cfg, &keys, &host, "POST", "/revoke", br#"{"task":"t-1"}"#);
        assert_eq!(reply.status, 200);
        assert!(String::from_utf8_lossy(&reply.body).contains(r#""revoked""#));
        let table = Revocations::decode(&host.shared_get(REVOCATIONS_KEY).0.unwrap()).unwrap();
        assert!(table.task_revoked("anyone", "t-1", 0));
    }

    #[test]
    fn revocations_are_served_as_a_feed() {
        let (cfg, keys, host) = setup();
        handle(&cfg, &keys, &host, "POST", "/revoke", br#"{"subject":"alice"}"#);
        let feed = handle(&cfg, &keys, &host, "GET", "/revocations", b"");
        assert_eq!(feed.status, 200);
        let table = Revocations::from_json(&feed.body).unwrap();
        assert!(table.task_revoked("alice", "any", 0));
    }

    #[test]
    fn bad_orders_are_400_and_other_paths_404() {
        let (cfg, keys, host) = setup();
        assert_eq!(handle(&cfg, &keys, &host, "POST", "/revoke", br#"{"task":"a","subject":"b"}"#).status, 400);
        assert_eq!(handle(&cfg, &keys, &host, "POST", "/revoke", b"nope").status, 400);
        assert_eq!(handle(&cfg, &keys, &host, "GET", "/revoke", b"").status, 405);
        assert_eq!(handle(&cfg, &keys, &host, "POST", "/other", b"").status, 404);
    }

    #[test]
    fn gateway_config_is_not_admin_mode() {
        assert!(parse(br#"{"backends":{}}"#).is_none());
        assert!(parse(br#"{"admin":{"typo":1}}"#).unwrap().is_err());
    }
}
