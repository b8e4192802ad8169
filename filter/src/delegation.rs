//! Delegates narrowly: for each hop, decides what the backend's token may carry and mints it.
//!
//! Per hop: audience = that backend, scope = intersection, expiry never later than the parent,
//! one more RFC 8693 `act` level, a depth limit. A backend that calls another backend through
//! the gateway presents the token it received; the gateway accepts it only for configured
//! delegations and never lets the downstream token outgrow it.

use std::rc::Rc;

use jwt_simple::prelude::*;

use crate::cache::{Expiring, ExpiringCache};
use crate::config::Config;
use crate::identity::{Actor, Caller, McpClaims, Origin};
use crate::policy::narrowed;
use crate::verdict::Refusal;

/// What one minted token carries, borrowed from the caller, the configuration and the request:
/// on a warm request it is only compared with the cached token's, never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant<'a> {
    pub sub: Rc<str>,
    pub aud: &'a str,
    pub scopes: Vec<&'a str>,
    pub exp: u64,
    pub task: &'a str,
    pub act: Actor,
    /// Hash of the token it was derived from (mint-cache key part).
    pub parent: [u8; 32],
    /// Workspace roots the backend must confine itself to (empty: none given).
    pub workspace: &'a [String],
}

/// Decides the grant for `caller` calling `backend` within `task`, never later than `not_after`
/// (the end of the session or task binding, when there is one).
pub fn plan<'a>(config: &'a Config, caller: &'a Caller, backend: &'a str, task: &'a str, now: u64, not_after: Option<u64>) -> Result<Grant<'a>, Refusal> {
    let allowed = &config.backends.get(backend).ok_or(Refusal::UnknownBackend)?.scopes;
    let (scopes, act) = match &caller.origin {
        Origin::User { .. } => {
            (narrowed(&caller.scopes, &[allowed]), Actor { sub: config.gateway.issuer.clone(), act: None })
        }
        Origin::Hop { backend: from, act: parent_act, .. } => {
            let delegation = config.delegation(from, backend).ok_or(Refusal::DelegationNotAllowed)?;
            let act = Actor { sub: from.clone(), act: Some(Box::new(parent_act.clone())) };
            if act.depth() > config.gateway.max_delegation_depth {
                return Err(Refusal::DelegationTooDeep);
            }
            (narrowed(&caller.scopes, &[&delegation.scopes, allowed]), act)
        }
    };
    let mut exp = (now + config.gateway.token_ttl_secs).min(caller.exp);
    if let Some(end) = not_after {
        exp = exp.min(end);
    }
    let workspace = workspace_roots(config, caller);
    Ok(Grant { sub: caller.sub.clone(), aud: backend, scopes, exp, task, act, parent: caller.token_hash, workspace })
}

/// The workspace roots that confine `caller`: its token's, else the configured ones for its
/// subject (user tokens only: a hop keeps exactly what its parent carried).
pub fn workspace_roots<'a>(config: &'a Config, caller: &'a Caller) -> &'a [String] {
    match (&caller.origin, caller.workspace.is_empty()) {
        (_, false) => &caller.workspace,
        (Origin::User { .. }, true) => config.workspaces.get(&*caller.sub).map_or(&[], Vec::as_slice),
        (Origin::Hop { .. }, true) => &[],
    }
}

/// A minted token with the facts the audit line records.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The `authorization` header value, `Bearer <token>`, built once per token.
    pub bearer: Rc<str>,
    // The audit facts are shared with each request's record, not copied into it.
    pub jti: Rc<str>,
    pub scope: Rc<str>,
    pub exp: u64,
    pub act: Actor,
    /// The actor chain, outermost first.
    pub chain: Rc<[String]>,
    /// What it was minted for: (parent, audience, task), to confirm a cache hit.
    pub parent: [u8; 32],
    pub aud: Rc<str>,
    pub task: String,
}

const BEARER: &str = "Bearer ";

impl Minted {
    /// The signed token.
    pub fn token(&self) -> &str {
        &self.bearer[BEARER.len()..]
    }

    fn issued_for(&self, grant: &Grant) -> bool {
        self.parent == grant.parent
            && *self.aud == *grant.aud
            && self.task == grant.task
            && self.scope.split(' ').filter(|s| !s.is_empty()).eq(grant.scopes.iter().copied())
    }
}

/// Signs the grant as the gateway.
pub fn mint(grant: &Grant, signer: &Ed25519KeyPair, issuer: &str, jti: String, now: u64) -> Result<Minted, Refusal> {
    let scope = grant.scopes.join(" ");
    let workspace = (!grant.workspace.is_empty()).then(|| grant.workspace.to_vec());
    let custom = McpClaims { scope: Some(scope.clone()), task: Some(grant.task.to_string()), act: Some(grant.act.clone()), workspace };
    let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(grant.exp.saturating_sub(now)))
        .with_issuer(issuer)
        .with_subject(&*grant.sub)
        .with_audience(grant.aud)
        .with_jwt_id(&jti);
    // Explicit times: the clock is the caller's, not the library's.
    claims.issued_at = Some(Duration::from_secs(now));
    claims.invalid_before = Some(Duration::from_secs(now));
    claims.expires_at = Some(Duration::from_secs(grant.exp));
    let token = signer.sign(claims).map_err(|_| Refusal::MintUnavailable)?;
    Ok(Minted {
        bearer: format!("{BEARER}{token}").into(),
        jti: jti.into(),
        scope: scope.into(),
        exp: grant.exp,
        act: grant.act.clone(),
        chain: grant.act.chain().into_iter().map(str::to_string).collect(),
        parent: grant.parent,
        aud: grant.aud.into(),
        task: grant.task.to_string(),
    })
}

/// Minted tokens by (parent token, backend, task, scope), reused until shortly before expiry.
/// A hit is confirmed against the entry's own fields, so a key collision can only cost a
/// re-mint, never hand out another grant's token.
pub struct MintCache {
    entries: ExpiringCache<u64, Rc<Minted>>,
}

impl Expiring for Minted {
    fn exp(&self) -> u64 {
        self.exp
    }
}

impl MintCache {
    pub fn new(capacity: usize) -> Self {
        MintCache { entries: ExpiringCache::new(capacity) }
    }

    /// The grant's key. It needs to spread, not to resist an attacker: the map hashes it again
    /// with its own random key, and its seed is the parent token's SHA-256, which nobody can aim
    /// at without that token. So the strings are folded in a word at a time, with their lengths,
    /// in place of a keyed SipHash over each field (a twentieth of a warm request natively).
    fn key(grant: &Grant) -> u64 {
        let seed = u64::from_le_bytes(grant.parent[..8].try_into().expect("8 of 32 bytes"));
        [grant.aud, grant.task].into_iter().chain(grant.scopes.iter().copied()).fold(seed, fold_str)
    }

    /// A cached token for the grant, if it stays valid past the refresh margin and ends no later
    /// than the grant does (a shorter binding must never get a longer-lived cached token).
    pub fn get(&mut self, grant: &Grant, now: u64, margin: u64) -> Option<Rc<Minted>> {
        let key = Self::key(grant);
        self.entries.get(&key, |m| m.exp >= now + margin && m.exp <= grant.exp && m.issued_for(grant))
    }

    pub fn put(&mut self, grant: &Grant, minted: Rc<Minted>, now: u64) {
        let key = Self::key(grant);
        self.entries.put(key, minted, now);
    }

    pub fn hits(&self) -> u64 {
        self.entries.hits
    }

    pub fn misses(&self) -> u64 {
        self.entries.misses
    }
}

/// Folds one string into a key: each 8-byte word, then the length, multiplied into the state
/// (FxHash's step), so that ("ab", "c") and ("a", "bc") differ.
fn fold_str(state: u64, s: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let mut words = s.as_bytes().chunks_exact(8);
    let mut h = words.by_ref().fold(state, |h, w| step(h, u64::from_le_bytes(w.try_into().expect("8 bytes"))));
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    h = step(h, u64::from_le_bytes(tail));
    step(h, s.len() as u64)
}

/// Builds the caller a verified gateway-minted token stands for: the backend it was minted for
/// is now the caller of a further hop.
pub fn hop_caller(claims: &JWTClaims<McpClaims>, token_hash: [u8; 32], scopes: Vec<String>) -> Option<Caller> {
    let backend = match claims.audiences.as_ref()? {
        Audiences::AsString(s) => s.clone(),
        Audiences::AsSet(set) if set.len() == 1 => set.iter().next()?.clone(),
        Audiences::AsSet(_) => return None,
    };
    Some(Caller {
        sub: claims.subject.as_deref()?.into(),
        scopes,
        exp: claims.expires_at?.as_secs(),
        jti: claims.jwt_id.as_deref().map(Into::into),
        origin: Origin::Hop { backend, task: claims.custom.task.clone(), act: claims.custom.act.clone()? },
        token_hash,
        workspace: claims.custom.workspace.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::NOW;

    fn config(depth: u32) -> Config {
        let body = format!(
            r#"{{"identity_providers":[{{"issuer":"demo-idp","audiences":["mcp-gateway"],"jwks":{{"keys":[]}}}}],
            "gateway":{{"token_ttl_secs":300,"max_delegation_depth":{depth}}},
            "backends":{{"files":{{"scopes":["files:read","files:write"]}},"reports":{{"scopes":["reports:write","files:read"]}}}},
            "delegations":[{{"from":"reports","to":"files","scopes":["files:read"]}}]}}"#
        );
        Config::load(body.as_bytes()).unwrap()
    }

    fn user(scopes: &[&str], exp: u64) -> Caller {
        Caller {
            sub: "alice".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            exp,
            jti: Some("u1".into()),
            origin: Origin::User { issuer: "demo-idp".into() },
            token_hash: [7; 32],
            workspace: vec![],
        }
    }

    #[test]
    fn user_hop_gets_intersection_and_gateway_actor() {
        let (cfg, caller) = (config(2), user(&["files:read", "reports:write", "admin"], NOW + 3600));
        let g = plan(&cfg, &caller, "files", "t1", NOW, None).unwrap();
        assert_eq!(g.scopes, vec!["files:read"]);
        assert_eq!(g.aud, "files");
        assert_eq!(g.exp, NOW + 300, "ttl bounds the token");
        assert_eq!(g.act.chain(), vec!["mcp-gateway"]);
    }

    #[test]
    fn expiry_never_later_than_parent_or_binding() {
        let (cfg, short, long) = (config(2), user(&[], NOW + 60), user(&[], NOW + 600));
        assert_eq!(plan(&cfg, &short, "files", "t", NOW, None).unwrap().exp, NOW + 60);
        assert_eq!(plan(&cfg, &long, "files", "t", NOW, Some(NOW + 20)).unwrap().exp, NOW + 20);
    }

    fn minted_hop(cfg: &Config, signer: &Ed25519KeyPair, user_scopes: &[&str]) -> Caller {
        let caller = user(user_scopes, NOW + 3600);
        let g = plan(cfg, &caller, "reports", "t1", NOW, None).unwrap();
        let m = mint(&g, signer, "mcp-gateway", "j1".into(), NOW).unwrap();
        let claims = signer.public_key().verify_token::<McpClaims>(m.token(), Some(VerificationOptions {
            artificial_time: Some(Duration::from_secs(NOW)),
            ..Default::default()
        })).unwrap();
        let scopes = claims.custom.scope.clone().unwrap().split(' ').map(str::to_string).collect();
        hop_caller(&claims, [9; 32], scopes).unwrap()
    }

    #[test]
    fn chained_hop_is_narrower_with_one_more_actor() {
        let cfg = config(2);
        let signer = Ed25519KeyPair::generate().with_key_id("gw-1");
        let reports = minted_hop(&cfg, &signer, &["files:read", "files:write", "reports:write"]);
        assert_eq!(reports.scopes, vec!["files:read", "reports:write"], "files:write never reaches reports");
        let task = reports.declared_task(Some("another-task")).unwrap();
        let g = plan(&cfg, &reports, "files", task, NOW + 10, None).unwrap();
        assert_eq!(g.scopes, vec!["files:read"], "the delegation allows at most files:read");
        assert_eq!(g.act.chain(), vec!["reports", "mcp-gateway"]);
        assert!(g.exp <= reports.exp);
        assert_eq!(g.task, "t1", "the hop keeps the parent's task");
        let without = minted_hop(&cfg, &signer, &["reports:write"]);
        let g = plan(&cfg, &without, "files", "t", NOW, None).unwrap();
        assert!(g.scopes.is_empty(), "a hop cannot gain what its parent lacked");
    }

    #[test]
    fn delegation_not_configured_or_too_deep_is_refused() {
        let cfg = config(2);
        let signer = Ed25519KeyPair::generate();
        let mut reports = minted_hop(&cfg, &signer, &["files:read"]);
        if let Origin::Hop { backend, .. } = &mut reports.origin {
            *backend = "files".into();
        }
        assert_eq!(plan(&cfg, &reports, "reports", "t", NOW, None), Err(Refusal::DelegationNotAllowed));
        let shallow = config(1);
        let reports = minted_hop(&shallow, &signer, &["files:read"]);
        assert_eq!(plan(&shallow, &reports, "files", "t", NOW, None), Err(Refusal::DelegationTooDeep));
    }

    #[test]
    fn mint_cache_reuses_until_margin_and_respects_shorter_grants() {
        let cfg = config(2);
        let signer = Ed25519KeyPair::generate();
        let caller = user(&["files:read"], NOW + 3600);
        let g = plan(&cfg, &caller, "files", "t", NOW, None).unwrap();
        let mut cache = MintCache::new(10);
        cache.put(&g, Rc::new(mint(&g, &signer, "gw", "j".into(), NOW).unwrap()), NOW);
        assert!(cache.get(&g, NOW + 100, 30).is_some());
        assert!(cache.get(&g, NOW + 280, 30).is_none(), "inside the refresh margin");
        let shorter = Grant { exp: g.exp - 1, ..g.clone() };
        assert!(cache.get(&shorter, NOW, 30).is_none());
        assert_eq!((cache.hits(), cache.misses()), (1, 2));
    }

    #[test]
    fn mint_cache_keys_tell_every_field_and_boundary_apart() {
        let (cfg, caller) = (config(2), user(&["files:read", "files:write"], NOW + 3600));
        let g = plan(&cfg, &caller, "files", "task-12345678", NOW, None).unwrap();
        let key = MintCache::key(&g);
        assert_eq!(key, MintCache::key(&g.clone()), "a key is a function of the grant");
        let others = [
            Grant { parent: [8; 32], ..g.clone() },
            Grant { aud: "reports", ..g.clone() },
            Grant { task: "task-12345679", ..g.clone() },
            Grant { task: "task-12345678\0", ..g.clone() },
            Grant { scopes: vec!["files:read"], ..g.clone() },
            // The same bytes split differently between the fields.
            Grant { aud: "filest", task: "ask-12345678", ..g.clone() },
        ];
        for other in &others {
            assert_ne!(MintCache::key(other), key, "{:?} {:?} {:?}", other.aud, other.task, other.scopes);
        }
        assert_eq!(fold_str(1, ""), fold_str(1, ""));
        assert_ne!(fold_str(1, ""), fold_str(1, "\0"));
    }
}
