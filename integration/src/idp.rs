//! The demo identity provider: its Ed25519 key, the tokens it signs, and its JWKS endpoint.
//! Also generates the gateway's signing key and sealing keys for the demo and the tests.

use std::path::{Path, PathBuf};

use base64::Engine;
use jwt_simple::prelude::*;
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "demo-idp";
pub const AUDIENCE: &str = "mcp-gateway";

/// The private claims a demo user token carries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Any further claims ([`TokenSpec::extra`]).
    #[serde(flatten, default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Key files of one demo or test installation.
#[derive(Debug, Clone)]
pub struct Keys {
    pub dir: PathBuf,
}

impl Keys {
    pub fn idp_pem(&self) -> PathBuf {
        self.dir.join("idp.pem")
    }
    pub fn idp_jwks(&self) -> PathBuf {
        self.dir.join("idp-jwks.json")
    }
    pub fn gateway_pem(&self) -> PathBuf {
        self.dir.join("gateway.pem")
    }
    pub fn seal_keys(&self) -> PathBuf {
        self.dir.join("seal.keys")
    }
    pub fn hash_key(&self) -> PathBuf {
        self.dir.join("hash.key")
    }

    /// Creates whatever key is missing in `dir` (never overwrites).
    pub fn ensure(dir: &Path) -> std::io::Result<Keys> {
        std::fs::create_dir_all(dir)?;
        let keys = Keys { dir: dir.to_path_buf() };
        if !keys.idp_pem().exists() {
            keys.rotate_idp("idp-1")?;
        }
        if !keys.gateway_pem().exists() {
            std::fs::write(keys.gateway_pem(), Ed25519KeyPair::generate().to_pem())?;
        }
        if !keys.seal_keys().exists() {
            std::fs::write(keys.seal_keys(), format!("k1:{}\n", random_key()?))?;
        }
        if !keys.hash_key().exists() {
            std::fs::write(keys.hash_key(), format!("{}\n", random_key()?))?;
        }
        Ok(keys)
    }

    /// Replaces the IdP key with a new one under `kid` and republishes the JWKS.
    pub fn rotate_idp(&self, kid: &str) -> std::io::Result<()> {
        let kp = Ed25519KeyPair::generate().with_key_id(kid);
        std::fs::write(self.idp_pem(), format!("{kid}\n{}", kp.to_pem()))?;
        std::fs::write(self.idp_jwks(), format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk()))
    }

    /// The current IdP key pair with its kid.
    pub fn idp_key(&self) -> std::io::Result<Ed25519KeyPair> {
        let text = std::fs::read_to_string(self.idp_pem())?;
        let (kid, pem) = text.split_once('\n').ok_or_else(|| std::io::Error::other("idp.pem: no kid line"))?;
        let kp = Ed25519KeyPair::from_pem(pem).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(kp.with_key_id(kid))
    }

    /// Environment Envoy needs for the filter (signing and sealing keys).
    pub fn envoy_env(&self) -> std::io::Result<Vec<(String, String)>> {
        Ok(vec![
            ("MCP_GW_SIGNING_KEY".into(), std::fs::read_to_string(self.gateway_pem())?),
            ("MCP_GW_SEAL_KEYS".into(), std::fs::read_to_string(self.seal_keys())?.trim().to_string()),
            ("MCP_GW_HASH_KEY".into(), std::fs::read_to_string(self.hash_key())?.trim().to_string()),
        ])
    }
}

/// A token request.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub sub: String,
    pub scope: String,
    pub ttl_secs: u64,
    pub issuer: String,
    pub audience: String,
    /// Seconds from now before which the token is not valid (negative: already valid).
    pub not_before_offset: i64,
    /// Further private claims, a JSON object (e.g. a marker a test must never find in a log).
    pub extra: Option<serde_json::Value>,
}

impl TokenSpec {
    pub fn new(sub: &str, scope: &str) -> TokenSpec {
        TokenSpec {
            sub: sub.into(),
            scope: scope.into(),
            ttl_secs: 600,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            not_before_offset: 0,
            extra: None,
        }
    }

    /// The claims of this token, with `now` as issue time.
    pub fn claims(&self) -> JWTClaims<UserClaims> {
        let extra = self.extra.as_ref().and_then(|e| e.as_object()).cloned().unwrap_or_default();
        let mut claims = Claims::with_custom_claims(UserClaims { scope: Some(self.scope.clone()), extra }, Duration::from_secs(self.ttl_secs))
            .with_issuer(&self.issuer)
            .with_audience(&self.audience)
            .with_subject(&self.sub)
            .with_jwt_id(random_id());
        let now = Clock::now_since_epoch().as_secs() as i64;
        claims.issued_at = Some(Duration::from_secs((now + self.not_before_offset.min(0)) as u64));
        claims.invalid_before = Some(Duration::from_secs((now + self.not_before_offset) as u64));
        claims.expires_at = Some(Duration::from_secs((now + self.ttl_secs as i64) as u64));
        claims
    }

    /// Signs with the demo IdP key.
    pub fn sign(&self, keys: &Keys) -> std::io::Result<String> {
        keys.idp_key()?.sign(self.claims()).map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// 32 random bytes, base64.
fn random_key() -> std::io::Result<String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// A random URL-safe id.
pub fn random_id() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("random");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Serves the IdP's JWKS at `/jwks.json`, re-reading the file on every request (so a rotation
/// is visible at once) and answering 503 when `down` exists beside it (an outage on demand).
pub async fn serve_jwks(listener: tokio::net::TcpListener, keys: Keys) -> std::io::Result<()> {
    use axum::{http::StatusCode, routing::get, Router};
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let keys = keys.clone();
            async move {
                if keys.dir.join("down").exists() {
                    return (StatusCode::SERVICE_UNAVAILABLE, String::from("down"));
                }
                match std::fs::read_to_string(keys.idp_jwks()) {
                    Ok(doc) => (StatusCode::OK, doc),
                    Err(_) => (StatusCode::NOT_FOUND, String::new()),
                }
            }
        }),
    );
    axum::serve(listener, app).await
}
