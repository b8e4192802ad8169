//! Verifies the caller's bearer token once: identity providers' tokens and the gateway's own
//! hop tokens. Time comes in as an argument, so expiry is tested with a fixed clock.

use std::collections::HashSet;
use std::rc::Rc;

use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::cache::{Expiring, ExpiringCache, TailHash};
use crate::verdict::AuthFailure;

/// RFC 8693 actor claim: the outermost actor is the latest hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// Number of actor levels (hops) in the chain.
    pub fn depth(&self) -> u32 {
        1 + self.act.as_ref().map_or(0, |a| a.depth())
    }

    /// The chain, outermost first.
    pub fn chain(&self) -> Vec<&str> {
        let mut out = vec![self.sub.as_str()];
        let mut next = &self.act;
        while let Some(a) = next {
            out.push(a.sub.as_str());
            next = &a.act;
        }
        out
    }
}

/// The MCP-relevant private claims of a token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct McpClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// Approved workspace roots (URI prefixes) the backend must confine tool arguments to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Vec<String>>,
}

/// Where a verified caller's authority comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A user (agent) token of a configured identity provider.
    User { issuer: String },
    /// A token the gateway minted for `backend`, presented back by that backend for a further hop.
    Hop { backend: String, task: Option<String>, act: Actor },
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Shared with each request's audit record, not copied into it.
    pub sub: Rc<str>,
    pub scopes: Vec<String>,
    pub exp: u64,
    pub jti: Option<Rc<str>>,
    pub origin: Origin,
    /// SHA-256 of the presented token: the cache key and the parent id of minted tokens.
    pub token_hash: [u8; 32],
    /// Workspace roots from the token (empty: not confined by the token).
    pub workspace: Vec<String>,
}

impl Caller {
    /// The task this caller names: a hop's token task wins over the `Mcp-Task-Id` header, so a
    /// backend cannot move its hop into another workflow.
    pub fn declared_task<'a>(&'a self, task_header: Option<&'a str>) -> Option<&'a str> {
        match &self.origin {
            Origin::Hop { task: Some(t), .. } => Some(t.as_str()),
            _ => task_header,
        }
    }
}

/// A public (or, for HS256, shared) verification key with its id.
pub enum Key {
    EdDsa(Ed25519PublicKey),
    Es256(ES256PublicKey),
    Rs256(RS256PublicKey),
    Hs256(HS256Key),
}

impl Key {
    fn alg(&self) -> &'static str {
        match self {
            Key::EdDsa(_) => "EdDSA",
            Key::Es256(_) => "ES256",
            Key::Rs256(_) => "RS256",
            Key::Hs256(_) => "HS256",
        }
    }

    fn kid(&self) -> Option<&str> {
        match self {
            Key::EdDsa(k) => k.key_id().as_deref(),
            Key::Es256(k) => k.key_id().as_deref(),
            Key::Rs256(k) => k.key_id().as_deref(),
            Key::Hs256(k) => k.key_id().as_deref(),
        }
    }

    fn verify(&self, token: &str, options: VerificationOptions) -> Result<JWTClaims<McpClaims>, jwt_simple::Error> {
        let options = Some(options);
        match self {
            Key::EdDsa(k) => k.verify_token(token, options),
            Key::Es256(k) => k.verify_token(token, options),
            Key::Rs256(k) => k.verify_token(token, options),
            Key::Hs256(k) => k.verify_token(token, options),
        }
    }
}

/// The keys of one issuer.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

#[derive(Deserialize)]
struct Jwks<'a> {
    #[serde(borrow)]
    keys: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct JwkHead<'a> {
    kty: &'a str,
    #[serde(default)]
    crv: Option<&'a str>,
}

impl KeySet {
    /// Parses a JWKS document. Keys of unsupported types are skipped; a document with no usable
    /// key is an error, so a broken fetch never replaces a good key set.
    pub fn from_jwks(json: &str) -> Result<KeySet, String> {
        let jwks: Jwks = serde_json::from_str(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for raw in jwks.keys {
            let Ok(head) = serde_json::from_str::<JwkHead>(raw.get()) else { continue };
            let key = match (head.kty, head.crv) {
                ("OKP", Some("Ed25519")) => Ed25519PublicKey::from_jwk(raw.get()).map(Key::EdDsa),
                ("EC", Some("P-256")) => ES256PublicKey::from_jwk(raw.get()).map(Key::Es256),
                ("RSA", _) => RS256PublicKey::from_jwk(raw.get()).map(Key::Rs256),
                _ => continue,
            };
            if let Ok(key) = key {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err("JWKS has no usable EdDSA, ES256 or RS256 key".to_string());
        }
        Ok(KeySet { keys })
    }

    pub fn from_keys(keys: Vec<Key>) -> KeySet {
        KeySet { keys }
    }

    pub fn into_keys(self) -> Vec<Key> {
        self.keys
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token header: by `kid`, or the only key of that algorithm when no kid.
    fn select(&self, alg: &str, kid: Option<&str>) -> Result<&Key, AuthFailure> {
        let mut candidates = self.keys.iter().filter(|k| match kid {
            Some(kid) => k.kid() == Some(kid),
            None => k.alg() == alg,
        });
        let key = candidates.next().ok_or(AuthFailure::UnknownKey)?;
        if kid.is_none() && candidates.next().is_some() {
            return Err(AuthFailure::UnknownKey);
        }
        // The key's type decides the algorithm: an RS256 public key is never an HS256 secret.
        if key.alg() != alg {
            return Err(AuthFailure::AlgorithmNotAllowed);
        }
        Ok(key)
    }
}

/// An issuer the gateway accepts tokens from, with what it checks.
pub struct TrustedIssuer {
    pub issuer: String,
    pub audiences: HashSet<String>,
    pub algorithms: Vec<String>,
    pub keys: KeySet,
}

/// Reads the unverified `iss` to pick the issuer whose keys must verify the token.
pub fn peek_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = Base64UrlSafeNoPadding::decode_to_vec(payload, None).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

/// The SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    hmac_sha256::Hash::hash(token.as_bytes())
}

/// Verifies a token against one issuer: signature by an allowed algorithm, `iss`, `aud`, `exp`
/// (required), `nbf`, `sub` (required), with `leeway` seconds of clock skew.
pub fn verify(token: &str, trusted: &TrustedIssuer, now: u64, leeway: u64) -> Result<JWTClaims<McpClaims>, AuthFailure> {
    let meta = Token::decode_metadata(token).map_err(|_| AuthFailure::Malformed)?;
    if !trusted.algorithms.iter().any(|a| a == meta.algorithm()) {
        return Err(AuthFailure::AlgorithmNotAllowed);
    }
    let key = trusted.keys.select(meta.algorithm(), meta.key_id())?;
    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([trusted.issuer.clone()])),
        allowed_audiences: Some(trusted.audiences.clone()),
        time_tolerance: Some(Duration::from_secs(leeway)),
        artificial_time: Some(Duration::from_secs(now)),
        max_token_length: Some(16 * 1024),
        ..VerificationOptions::default()
    };
    let claims = key.verify(token, options).map_err(classify)?;
    if claims.expires_at.is_none() {
        return Err(AuthFailure::Malformed);
    }
    if claims.subject.as_deref().is_none_or(str::is_empty) {
        return Err(AuthFailure::Malformed);
    }
    Ok(claims)
}

fn classify(err: jwt_simple::Error) -> AuthFailure {
    match err.downcast_ref::<JWTError>() {
        Some(JWTError::TokenHasExpired) => AuthFailure::Expired,
        Some(JWTError::TokenNotValidYet | JWTError::ClockDrift) => AuthFailure::NotYetValid,
        Some(JWTError::RequiredIssuerMismatch | JWTError::RequiredIssuerMissing) => AuthFailure::WrongIssuer,
        Some(JWTError::RequiredAudienceMismatch | JWTError::RequiredAudienceMissing) => AuthFailure::WrongAudience,
        Some(JWTError::AlgorithmMismatch) => AuthFailure::AlgorithmNotAllowed,
        Some(JWTError::InvalidSignature) => AuthFailure::BadSignature,
        _ => AuthFailure::BadSignature,
    }
}

/// The split of a space-separated `scope` claim.
pub fn scopes_of(claims: &JWTClaims<McpClaims>) -> Vec<String> {
    claims.custom.scope.as_deref().unwrap_or("").split_ascii_whitespace().map(str::to_string).collect()
}

/// Verified callers by token. Keyed by the token itself, not a hash of it: a lookup hashes the
/// token's signature end and compares the whole token, so no collision can ever return another
/// caller; only verified tokens are stored, so nobody can choose colliding keys to fill it.
/// Bounded; an entry never outlives its token's `exp`.
pub struct VerifyCache(ExpiringCache<Box<str>, Rc<Caller>, TailHash>);

impl Expiring for Caller {
    fn exp(&self) -> u64 {
        self.exp
    }
}

impl VerifyCache {
    pub fn new(capacity: usize) -> Self {
        VerifyCache(ExpiringCache::new(capacity))
    }

    pub fn get(&mut self, token: &str, now: u64) -> Option<Rc<Caller>> {
        self.0.get(token, |c| c.exp > now)
    }

    pub fn put(&mut self, token: &str, caller: Rc<Caller>, now: u64) {
        self.0.put(token.into(), caller, now);
    }

    pub fn hits(&self) -> u64 {
        self.0.hits
    }

    pub fn misses(&self) -> u64 {
        self.0.misses
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const NOW: u64 = 1_800_000_000;

    pub fn idp() -> (Ed25519KeyPair, TrustedIssuer) {
        let kp = Ed25519KeyPair::generate().with_key_id("idp-1");
        let trusted = TrustedIssuer {
            issuer: "demo-idp".into(),
            audiences: HashSet::from(["mcp-gateway".to_string()]),
            algorithms: vec!["EdDSA".into(), "ES256".into(), "RS256".into()],
            keys: KeySet::from_jwks(&format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk())).unwrap(),
        };
        (kp, trusted)
    }

    pub fn claims(sub: &str, scope: &str, iat: u64, ttl: u64) -> JWTClaims<McpClaims> {
        let mut c = Claims::with_custom_claims(
            McpClaims { scope: Some(scope.into()), ..Default::default() },
            Duration::from_secs(ttl),
        )
        .with_issuer("demo-idp")
        .with_audience("mcp-gateway")
        .with_subject(sub);
        c.issued_at = Some(Duration::from_secs(iat));
        c.invalid_before = Some(Duration::from_secs(iat));
        c.expires_at = Some(Duration::from_secs(iat + ttl));
        c
    }

    #[test]
    fn valid_token_verifies_with_its_scopes() {
        let (kp, trusted) = idp();
        let token = kp.sign(claims("alice", "files:read reports:write", NOW, 600)).unwrap();
        let c = verify(&token, &trusted, NOW + 1, 0).unwrap();
        assert_eq!(c.subject.as_deref(), Some("alice"));
        assert_eq!(scopes_of(&c), vec!["files:read", "reports:write"]);
        assert_eq!(peek_issuer(&token).as_deref(), Some("demo-idp"));
    }

    #[test]
    fn expired_and_not_yet_valid_are_refused_outside_leeway() {
        let (kp, trusted) = idp();
        let token = kp.sign(claims("alice", "", NOW, 600)).unwrap();
        assert_eq!(verify(&token, &trusted, NOW + 631, 30).unwrap_err(), AuthFailure::Expired);
        assert!(verify(&token, &trusted, NOW + 629, 30).is_ok(), "within leeway");
        assert_eq!(verify(&token, &trusted, NOW - 100, 30).unwrap_err(), AuthFailure::NotYetValid);
    }

    #[test]
    fn wrong_issuer_and_audience_are_refused() {
        let (kp, trusted) = idp();
        let token = kp.sign(claims("alice", "", NOW, 600).with_issuer("evil")).unwrap();
        assert_eq!(verify(&token, &trusted, NOW, 0).unwrap_err(), AuthFailure::WrongIssuer);
        let mut c = claims("alice", "", NOW, 600);
        c.audiences = Some(Audiences::AsString("other".into()));
        let token = kp.sign(c).unwrap();
        assert_eq!(verify(&token, &trusted, NOW, 0).unwrap_err(), AuthFailure::WrongAudience);
    }

    #[test]
    fn tampered_signature_and_unknown_key_are_refused() {
        let (kp, trusted) = idp();
        let token = kp.sign(claims("alice", "", NOW, 600)).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let payload = Base64UrlSafeNoPadding::decode_to_vec(&parts[1], None).unwrap();
        let forged = String::from_utf8(payload).unwrap().replace("alice", "admin");
        parts[1] = Base64UrlSafeNoPadding::encode_to_string(forged).unwrap();
        assert_eq!(verify(&parts.join("."), &trusted, NOW, 0).unwrap_err(), AuthFailure::BadSignature);
        let other = Ed25519KeyPair::generate().with_key_id("idp-2");
        let token = other.sign(claims("alice", "", NOW, 600)).unwrap();
        assert_eq!(verify(&token, &trusted, NOW, 0).unwrap_err(), AuthFailure::UnknownKey);
    }

    #[test]
    fn alg_none_and_hs256_with_the_public_key_are_refused() {
        let (kp, trusted) = idp();
        let payload = Base64UrlSafeNoPadding::encode_to_string(
            serde_json::to_vec(&claims("alice", "", NOW, 600)).unwrap(),
        )
        .unwrap();
        let none_header = Base64UrlSafeNoPadding::encode_to_string(br#"{"alg":"none","kid":"idp-1"}"#).unwrap();
        assert_eq!(verify(&format!("{none_header}.{payload}."), &trusted, NOW, 0).unwrap_err(), AuthFailure::AlgorithmNotAllowed);
        // Algorithm confusion: HMAC keyed with the public key bytes, claiming the IdP's kid.
        let hs = HS256Key::from_bytes(&kp.public_key().to_bytes()).with_key_id("idp-1");
        let token = hs.authenticate(claims("alice", "", NOW, 600)).unwrap();
        let mut with_hs = TrustedIssuer { algorithms: vec!["EdDSA".into(), "HS256".into()], ..trusted };
        assert_eq!(verify(&token, &with_hs, NOW, 0).unwrap_err(), AuthFailure::AlgorithmNotAllowed);
        with_hs.algorithms = vec!["EdDSA".into()];
        assert_eq!(verify(&token, &with_hs, NOW, 0).unwrap_err(), AuthFailure::AlgorithmNotAllowed);
    }

    #[test]
    fn token_without_exp_is_refused() {
        let (kp, trusted) = idp();
        let mut c = claims("alice", "", NOW, 600);
        c.expires_at = None;
        assert_eq!(verify(&kp.sign(c).unwrap(), &trusted, NOW, 0).unwrap_err(), AuthFailure::Malformed);
    }

    #[test]
    fn cache_entries_never_outlive_exp_and_stay_bounded() {
        let caller = |n: u8, exp| {
            Rc::new(Caller { sub: "a".into(), scopes: vec![], exp, jti: None, origin: Origin::User { issuer: "i".into() }, token_hash: [n; 32], workspace: vec![] })
        };
        let mut cache = VerifyCache::new(2);
        cache.put("t1", caller(1, NOW + 10), NOW);
        assert!(cache.get("t1", NOW + 9).is_some());
        assert!(cache.get("t1", NOW + 10).is_none(), "expired entry is not returned");
        assert!(cache.get("t1x", NOW).is_none());
        for n in 2..10 {
            cache.put(&format!("t{n}"), caller(n, NOW + 100), NOW);
        }
        assert!(cache.len() <= 2);
    }

    #[test]
    fn actor_chain_is_outermost_first() {
        let act = Actor { sub: "reports".into(), act: Some(Box::new(Actor { sub: "mcp-gateway".into(), act: None })) };
        assert_eq!(act.chain(), vec!["reports", "mcp-gateway"]);
        assert_eq!(act.depth(), 2);
    }
}
