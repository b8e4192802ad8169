//! Bearer-token checks of the demo backends: Ed25519 JWTs verified against the gateway's JWKS.
//!
//! A backend must refuse every token that the gateway did not mint for it, so that a user
//! token forwarded by mistake fails visibly (CONTRACT, "Demo topology").

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jwt_simple::prelude::{
    Duration as JwtDuration, Ed25519PublicKey, EdDSAPublicKeyLike, NoCustomClaims, Token,
    VerificationOptions,
};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

/// Clock skew tolerated on `exp`/`nbf`: everything runs on one machine, so keep it tight
/// (jwt-simple's default of 15 minutes would hide expiry bugs in the gateway).
const TIME_TOLERANCE_SECS: u64 = 5;
/// A token naming an unknown `kid` refetches the key set at most this often, so a flood of
/// forged tokens cannot turn the backend into a JWKS load generator.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(1);

/// Where the trusted public keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS served over HTTP (the gateway's `/.well-known/jwks.json`).
    Url(String),
    /// A JWKS document on disk, re-read when a token names an unknown key.
    File(PathBuf),
}

/// Why a bearer token was refused; every variant becomes HTTP 401.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("no trusted key with kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("audience is not {0:?}")]
    WrongAudience(String),
    #[error("key set unavailable: {0}")]
    KeySet(String),
}

/// Checks bearer tokens for one backend (the audience).
pub struct Verifier {
    audience: String,
    mode: Mode,
}

enum Mode {
    /// Decode claims without checking anything (foundation tests, before the gateway mints).
    DecodeOnly,
    Verify(KeyStore),
}

struct KeyStore {
    source: Option<KeySource>,
    keys: RwLock<Vec<Ed25519PublicKey>>,
    last_fetch: Mutex<Option<Instant>>,
    http: reqwest::Client,
}

impl Verifier {
    /// Accepts any well-formed JWT (or none) and reports its claims unverified.
    pub fn decode_only(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            mode: Mode::DecodeOnly,
        }
    }

    /// Verifies against a JWKS loaded lazily from `source` and reloaded on an unknown `kid`.
    pub fn from_source(audience: impl Into<String>, source: KeySource) -> Self {
        Self {
            audience: audience.into(),
            mode: Mode::Verify(KeyStore::new(Some(source), vec![])),
        }
    }

    /// Verifies against a fixed set of keys (tests).
    pub fn from_keys(audience: impl Into<String>, keys: Vec<Ed25519PublicKey>) -> Self {
        Self {
            audience: audience.into(),
            mode: Mode::Verify(KeyStore::new(None, keys)),
        }
    }

    /// Whether signatures, expiry and audience are checked (and so tool scopes enforced).
    pub fn verifies(&self) -> bool {
        matches!(self.mode, Mode::Verify(_))
    }

    /// Checks an optional bearer token and returns its claims (`Value::Null` when absent and
    /// not verifying).
    pub async fn check(&self, token: Option<&str>) -> Result<Value, AuthError> {
        match (&self.mode, token) {
            (Mode::DecodeOnly, None) => Ok(Value::Null),
            (Mode::DecodeOnly, Some(token)) => decode_claims(token),
            (Mode::Verify(_), None) => Err(AuthError::Missing),
            (Mode::Verify(store), Some(token)) => {
                store.verify(token).await?;
                let claims = decode_claims(token)?;
                check_audience(&claims, &self.audience)?;
                Ok(claims)
            }
        }
    }
}

impl KeyStore {
    fn new(source: Option<KeySource>, keys: Vec<Ed25519PublicKey>) -> Self {
        Self {
            source,
            keys: RwLock::new(keys),
            last_fetch: Mutex::new(None),
            http: reqwest::Client::new(),
        }
    }

    /// Verifies signature, algorithm (EdDSA only), `exp` (required) and `nbf`.
    async fn verify(&self, token: &str) -> Result<(), AuthError> {
        let kid = Token::decode_metadata(token)
            .map_err(|e| AuthError::Malformed(e.to_string()))?
            .key_id()
            .map(str::to_owned);
        if let Some(result) = self.try_keys(token, kid.as_deref()).await {
            return result;
        }
        self.refresh().await?;
        self.try_keys(token, kid.as_deref())
            .await
            .unwrap_or(Err(AuthError::UnknownKey(kid)))
    }

    /// `None` when no loaded key matches the token's `kid` (a token without `kid` tries all).
    async fn try_keys(&self, token: &str, kid: Option<&str>) -> Option<Result<(), AuthError>> {
        let keys = self.keys.read().await;
        let mut candidates = keys
            .iter()
            .filter(|key| kid.is_none() || key.key_id().as_deref() == kid)
            .peekable();
        candidates.peek()?;
        let mut last_error = String::new();
        for key in candidates {
            match key.verify_token::<NoCustomClaims>(token, Some(verification_options())) {
                Ok(claims) if claims.expires_at.is_none() => {
                    return Some(Err(AuthError::Invalid("token has no exp".into())))
                }
                Ok(_) => return Some(Ok(())),
                Err(e) => last_error = e.to_string(),
            }
        }
        Some(Err(AuthError::Invalid(last_error)))
    }

    async fn refresh(&self) -> Result<(), AuthError> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        let mut last_fetch = self.last_fetch.lock().await;
        if last_fetch.is_some_and(|at| at.elapsed() < MIN_REFETCH_INTERVAL) {
            return Ok(());
        }
        *last_fetch = Some(Instant::now());
        let document = match source {
            KeySource::Url(url) => self.fetch_url(url).await?,
            KeySource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| AuthError::KeySet(format!("{}: {e}", path.display())))?,
        };
        *self.keys.write().await = parse_jwks(&document).map_err(AuthError::KeySet)?;
        Ok(())
    }

    async fn fetch_url(&self, url: &str) -> Result<String, AuthError> {
        let response = self
            .http
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| AuthError::KeySet(format!("{url}: {e}")))?;
        response
            .text()
            .await
            .map_err(|e| AuthError::KeySet(format!("{url}: {e}")))
    }
}

fn verification_options() -> VerificationOptions {
    VerificationOptions {
        time_tolerance: Some(JwtDuration::from_secs(TIME_TOLERANCE_SECS)),
        ..Default::default()
    }
}

/// The gateway mints `aud` = the backend's name; anything broader (another audience, or a
/// list naming several backends) could be replayed elsewhere, so only that exact value passes.
fn check_audience(claims: &Value, audience: &str) -> Result<(), AuthError> {
    let ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.len() == 1 && auds[0] == audience,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::WrongAudience(audience.to_owned()))
    }
}

/// The payload of a compact JWT as JSON, without any check.
pub fn decode_claims(token: &str) -> Result<Value, AuthError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not a compact JWS".into()));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| AuthError::Malformed(format!("payload: {e}")))?;
    match serde_json::from_slice(&bytes) {
        Ok(claims @ Value::Object(_)) => Ok(claims),
        Ok(_) => Err(AuthError::Malformed("payload is not a JSON object".into())),
        Err(e) => Err(AuthError::Malformed(format!("payload: {e}"))),
    }
}

/// The Ed25519 keys of a JWKS document (`{"keys": [...]}`); keys of other types are skipped.
pub fn parse_jwks(document: &str) -> Result<Vec<Ed25519PublicKey>, String> {
    let jwks: Value = serde_json::from_str(document).map_err(|e| format!("JWKS: {e}"))?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS: no \"keys\" array")?;
    Ok(keys
        .iter()
        .filter(|jwk| {
            jwk.get("kty") == Some(&"OKP".into()) && jwk.get("crv") == Some(&"Ed25519".into())
        })
        .filter_map(|jwk| Ed25519PublicKey::from_jwk(&jwk.to_string()).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::{Claims, Ed25519KeyPair, EdDSAKeyPairLike};

    fn token(key: &Ed25519KeyPair, aud: &str) -> String {
        let claims = Claims::create(JwtDuration::from_mins(5))
            .with_audience(aud)
            .with_subject("alice");
        key.sign(claims).unwrap()
    }

    #[tokio::test]
    async fn token_for_this_backend_is_accepted_and_others_are_refused() {
        let key = Ed25519KeyPair::generate().with_key_id("k1");
        let verifier = Verifier::from_keys("files", vec![key.public_key()]);
        let claims = verifier.check(Some(&token(&key, "files"))).await.unwrap();
        assert_eq!(claims["sub"], "alice");
        assert!(matches!(
            verifier.check(Some(&token(&key, "reports"))).await,
            Err(AuthError::WrongAudience(_))
        ));
        let stranger = Ed25519KeyPair::generate().with_key_id("k2");
        assert!(matches!(
            verifier.check(Some(&token(&stranger, "files"))).await,
            Err(AuthError::UnknownKey(_))
        ));
        assert!(matches!(
            verifier.check(None).await,
            Err(AuthError::Missing)
        ));
    }

    #[test]
    fn jwks_round_trips_through_jwt_simple_export() {
        let key = Ed25519KeyPair::generate().with_key_id("k1");
        let document = format!(
            r#"{{"keys":[{},{{"kty":"RSA","n":"x","e":"AQAB"}}]}}"#,
            key.public_key().to_jwk()
        );
        let keys = parse_jwks(&document).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key_id().as_deref(), Some("k1"));
    }

    #[tokio::test]
    async fn jwks_url_is_fetched_lazily_and_refetched_for_a_new_kid() {
        let old = Ed25519KeyPair::generate().with_key_id("old");
        let new = Ed25519KeyPair::generate().with_key_id("new");
        let jwks = std::sync::Arc::new(std::sync::Mutex::new(vec![old.public_key().to_jwk()]));
        let served = jwks.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let keys = served.lock().unwrap().join(",");
                async move { format!(r#"{{"keys":[{keys}]}}"#) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let verifier = Verifier::from_source("files", KeySource::Url(url));
        assert!(verifier.check(Some(&token(&old, "files"))).await.is_ok());
        // Rotation: the new key appears in the JWKS; a token naming it triggers one refetch.
        jwks.lock().unwrap().push(new.public_key().to_jwk());
        tokio::time::sleep(MIN_REFETCH_INTERVAL).await;
        assert!(verifier.check(Some(&token(&new, "files"))).await.is_ok());
    }
}
