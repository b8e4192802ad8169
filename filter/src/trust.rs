//! The keys the gateway trusts and signs with, built once from config and the environment.
//!
//! Key material comes from environment variables (Envoy passes them into the VM with
//! `vm_config.environment_variables`), never from the committed YAML.

use std::collections::HashSet;

use jwt_simple::prelude::*;

use crate::config::{Config, IdpConfig};
use crate::identity::{self, Caller, Key, KeySet, McpClaims, Origin, TrustedIssuer};
use crate::session::{decode_key, SealKeys};
use crate::verdict::AuthFailure;
use crate::workflow::WorkflowKeys;

/// Everything needed to verify callers and mint backend tokens.
pub struct Trust {
    pub idps: Vec<TrustedIssuer>,
    /// The gateway's own issuer, for hop tokens presented back by backends.
    pub own: TrustedIssuer,
    pub signer: Ed25519KeyPair,
    /// The gateway's public JWKS document, served at `/.well-known/jwks.json`.
    pub jwks_json: String,
    pub workflow: WorkflowKeys,
}

impl Trust {
    /// Builds trust from config; `env` looks up environment variables. Errors name the field.
    pub fn build(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<Trust, Vec<String>> {
        let mut problems = Vec::new();
        let key_env = &config.gateway.signing_key_env;
        let signer = match env(key_env) {
            None => {
                problems.push(format!("gateway.signing_key_env: environment variable {key_env} is not set"));
                None
            }
            Some(pem) => match Ed25519KeyPair::from_pem(pem.trim()) {
                Ok(kp) => Some(kp.with_key_id(&config.gateway.signing_key_id)),
                Err(_) => {
                    problems.push(format!("gateway.signing_key_env: {key_env} is not an Ed25519 private key in PEM"));
                    None
                }
            },
        };
        let seal = env(&config.seal_keys_env)
            .ok_or_else(|| format!("seal_keys_env: environment variable {} is not set", config.seal_keys_env))
            .and_then(|spec| SealKeys::from_spec(&spec).map_err(|e| format!("seal_keys_env: {}: {e}", config.seal_keys_env)));
        let hash = env(&config.hash_key_env)
            .ok_or_else(|| format!("hash_key_env: environment variable {} is not set", config.hash_key_env))
            .and_then(|k| decode_key(&k).map_err(|e| format!("hash_key_env: {}: {e}", config.hash_key_env)));
        let workflow = match (seal, hash) {
            (Ok(seal), Ok(hash)) => Some(WorkflowKeys::new(seal, hash)),
            (seal, hash) => {
                problems.extend(seal.err());
                problems.extend(hash.err());
                None
            }
        };
        let mut idps = Vec::new();
        for (i, idp) in config.identity_providers.iter().enumerate() {
            match trusted_idp(idp, env) {
                Ok(t) => idps.push(t),
                Err(e) => problems.push(format!("identity_providers[{i}].{e}")),
            }
        }
        let (Some(signer), Some(workflow), true) = (signer, workflow, problems.is_empty()) else {
            return Err(problems);
        };
        let public = signer.public_key();
        let jwks_json = format!(r#"{{"keys":[{}]}}"#, public.to_jwk());
        let own = TrustedIssuer {
            issuer: config.gateway.issuer.clone(),
            audiences: config.backends.keys().cloned().collect(),
            algorithms: vec!["EdDSA".into()],
            keys: KeySet::from_keys(vec![Key::EdDsa(public)]),
        };
        Ok(Trust { idps, own, signer, jwks_json, workflow })
    }

    /// Verifies a bearer token as a user token of an identity provider or a hop token of the
    /// gateway itself, picked by its (unverified) `iss`; the signature then decides.
    pub fn verify(&self, token: &str, now: u64, leeway: u64) -> Result<Caller, AuthFailure> {
        let iss = identity::peek_issuer(token).ok_or(AuthFailure::Malformed)?;
        let hash = identity::token_hash(token);
        if iss == self.own.issuer {
            let claims = identity::verify(token, &self.own, now, leeway)?;
            let scopes = identity::scopes_of(&claims);
            return crate::delegation::hop_caller(&claims, hash, scopes).ok_or(AuthFailure::Malformed);
        }
        let idp = self.idps.iter().find(|t| t.issuer == iss).ok_or(AuthFailure::WrongIssuer)?;
        let claims: JWTClaims<McpClaims> = identity::verify(token, idp, now, leeway)?;
        Ok(Caller {
            sub: claims.subject.as_deref().unwrap_or_default().into(),
            scopes: identity::scopes_of(&claims),
            exp: claims.expires_at.map_or(0, |d| d.as_secs()),
            jti: claims.jwt_id.as_deref().map(Into::into),
            origin: Origin::User { issuer: iss },
            token_hash: hash,
            workspace: claims.custom.workspace.clone().unwrap_or_default(),
        })
    }

    /// Replaces an identity provider's keys after a JWKS fetch; a document without usable keys
    /// keeps the last good set.
    pub fn refresh_jwks(&mut self, idp_index: usize, json: &str) -> Result<usize, String> {
        let keys = KeySet::from_jwks(json)?;
        let n = keys.len();
        let idp = self.idps.get_mut(idp_index).ok_or("no such identity provider")?;
        // Keep an HS256 secret configured alongside a JWKS.
        idp.keys = keys;
        Ok(n)
    }
}

fn trusted_idp(idp: &IdpConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<TrustedIssuer, String> {
    let mut keys = match &idp.jwks {
        Some(doc) => KeySet::from_jwks(&doc.to_string()).map_err(|e| format!("jwks: {e}"))?,
        // Fetched later through the cluster; until then no token of this issuer verifies.
        None => KeySet::default(),
    };
    if let Some(var) = &idp.hs256_secret_env {
        let secret = env(var).ok_or_else(|| format!("hs256_secret_env: environment variable {var} is not set"))?;
        let mut all = std::mem::take(&mut keys).into_keys();
        all.push(Key::Hs256(HS256Key::from_bytes(secret.as_bytes())));
        keys = KeySet::from_keys(all);
    }
    Ok(TrustedIssuer {
        issuer: idp.issuer.clone(),
        audiences: idp.audiences.iter().cloned().collect::<HashSet<_>>(),
        algorithms: idp.algorithms.clone(),
        keys,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::tests::{claims, idp, NOW};

    pub fn config_with(jwks: &str) -> Config {
        let body = format!(
            r#"{{"identity_providers":[{{"issuer":"demo-idp","audiences":["mcp-gateway"],"jwks":{jwks}}}],
            "backends":{{"files":{{"scopes":["files:read"]}},"reports":{{"scopes":["reports:write","files:read"]}}}},
            "delegations":[{{"from":"reports","to":"files","scopes":["files:read"]}}]}}"#
        );
        Config::load(body.as_bytes()).unwrap()
    }

    pub fn signing_env() -> impl Fn(&str) -> Option<String> {
        let pem = Ed25519KeyPair::generate().to_pem();
        move |name: &str| match name {
            "MCP_GW_SIGNING_KEY" => Some(pem.clone()),
            "MCP_GW_SEAL_KEYS" => Some("k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into()),
            "MCP_GW_HASH_KEY" => Some("AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=".into()),
            _ => None,
        }
    }

    #[test]
    fn missing_signing_key_is_named() {
        let err = Trust::build(&config_with(r#"{"keys":[]}"#), &|_| None).err().unwrap();
        assert!(err[0].contains("MCP_GW_SIGNING_KEY"), "{err:?}");
    }

    #[test]
    fn user_and_hop_tokens_verify_by_issuer() {
        let (kp, _) = idp();
        let jwks = format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk());
        let trust = Trust::build(&config_with(&jwks), &signing_env()).unwrap();
        let token = kp.sign(claims("alice", "files:read", NOW, 600)).unwrap();
        let caller = trust.verify(&token, NOW, 0).unwrap();
        assert_eq!(caller.origin, Origin::User { issuer: "demo-idp".into() });
        assert!(trust.jwks_json.contains(r#""kid":"gw-1""#), "{}", trust.jwks_json);
        // A token of an unknown issuer is refused before any key is tried.
        let other = kp.sign(claims("alice", "", NOW, 600).with_issuer("evil")).unwrap();
        assert_eq!(trust.verify(&other, NOW, 0).unwrap_err(), AuthFailure::WrongIssuer);
    }

    #[test]
    fn bad_jwks_keeps_last_good_keys() {
        let (kp, _) = idp();
        let jwks = format!(r#"{{"keys":[{}]}}"#, kp.public_key().to_jwk());
        let mut trust = Trust::build(&config_with(&jwks), &signing_env()).unwrap();
        assert!(trust.refresh_jwks(0, "<html>down</html>").is_err());
        let token = kp.sign(claims("alice", "", NOW, 600)).unwrap();
        assert!(trust.verify(&token, NOW, 0).is_ok());
    }
}
