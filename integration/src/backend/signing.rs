//! The fixed demo key of the `signed*` tools, and the check a client runs on what they return.
//!
//! A tool signs the exact UTF-8 bytes of the text it returns; a client that verifies the
//! signature after the gateway proves the gateway passed the result through untouched
//! (CONTRACT item 7). The seed is public on purpose: the key proves integrity, not identity.

use base64::{engine::general_purpose::STANDARD, Engine};
use ed25519_compact::{KeyPair, PublicKey, Seed, Signature};

/// Seed of the demo key: 32 fixed bytes, so every backend and every test derive the same key.
pub const DEMO_SEED: [u8; 32] = *b"mcp-gateway demo signing seed v1";

fn key_pair() -> KeyPair {
    KeyPair::from_seed(Seed::new(DEMO_SEED))
}

/// The demo public key, derived from [`DEMO_SEED`].
pub fn public_key() -> PublicKey {
    key_pair().pk
}

/// A detached Ed25519 signature over the UTF-8 bytes of `text`, base64 (standard, padded).
pub fn sign(text: &str) -> String {
    STANDARD.encode(key_pair().sk.sign(text.as_bytes(), None).as_ref())
}

/// Checks a [`sign`] signature over `text` against the demo public key.
pub fn verify(text: &str, signature: &str) -> Result<(), String> {
    let bytes = STANDARD
        .decode(signature)
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let signature = Signature::from_slice(&bytes).map_err(|e| format!("not a signature: {e}"))?;
    public_key()
        .verify(text.as_bytes(), &signature)
        .map_err(|e| format!("signature does not verify: {e}"))
}

/// A deterministic text of at most `bytes` bytes (and at least `bytes - 3`), mixing ASCII and
/// multi-byte characters, every line numbered, so a dropped, reordered or re-encoded chunk
/// changes the bytes.
pub fn sample_text(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 64);
    let mut line = 0u64;
    while text.len() < bytes {
        text.push_str(&format!(
            "{line:08} héllo wörld ✓ 日本語 \u{1F600} \"quoted\" \\ tab\t\n"
        ));
        line += 1;
    }
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_only_for_the_exact_text() {
        let text = "héllo ✓";
        let signature = sign(text);
        assert_eq!(verify(text, &signature), Ok(()));
        assert!(verify("hello ✓", &signature).is_err());
        assert!(verify(&format!("{text} "), &signature).is_err());
        assert!(verify(text, "AAAA").is_err());
    }

    #[test]
    fn the_key_is_the_same_every_time() {
        assert_eq!(public_key(), public_key());
        assert_eq!(sign("x"), sign("x"), "Ed25519 signatures are deterministic");
    }

    #[test]
    fn sample_text_has_the_asked_size_on_a_char_boundary() {
        for bytes in [0, 1, 70, 1000, 8 * 1024 * 1024] {
            let text = sample_text(bytes);
            assert!(
                text.len() <= bytes && text.len() + 3 >= bytes,
                "{bytes}: {}",
                text.len()
            );
        }
        assert!(sample_text(1000).contains('日'));
    }
}
