//! Sealed legacy session handles: the `Mcp-Session-Id` the client sees.
//!
//! A handle is `version ‖ key id ‖ nonce ‖ XChaCha20-Poly1305(binding)`, base64url without
//! padding. The binding travels inside the handle, so any Envoy worker or gateway replica holding
//! the key can serve the session without shared state; the version and key id are associated
//! data, so they cannot be swapped. XChaCha's 192-bit nonce makes random nonces safe for any
//! number of handles under one key.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

use super::wire::{self, Reader};
use super::SessionError;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 2;
/// Length of the random nonce `seal` takes.
pub const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bound the associated data to this use, should a key ever be shared with another purpose.
const AAD_CONTEXT: &[u8] = b"mcp-gateway-filter/session";
/// Largest encoded binding `seal` accepts; bounds the work `open` does on hostile input.
pub const MAX_BINDING_BYTES: usize = 1024;
const MAX_HANDLE_BYTES: usize = HEADER_LEN + NONCE_LEN + MAX_BINDING_BYTES + TAG_LEN;
/// Longest handle `open` will decode.
pub const MAX_HANDLE_CHARS: usize = (MAX_HANDLE_BYTES * 4).div_ceil(3);
/// Longest upstream `Mcp-Session-Id` the gateway seals.
pub const MAX_UPSTREAM_SESSION_CHARS: usize = 256;

/// The sealing keys: the current one seals, every one opens, so a key can be rotated without
/// dropping live sessions (keep the old key listed for `absolute_secs` after rotating).
#[derive(Clone)]
pub struct SealKeys {
    /// `(key id, key)`; the first is current.
    keys: Vec<(u8, [u8; 32])>,
}

impl std::fmt::Debug for SealKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|(id, _)| format!("k{id}")).collect();
        write!(f, "SealKeys {{ ids: {ids:?} }}")
    }
}

impl SealKeys {
    /// Keys by id; the first seals. Refuses an empty list and a repeated id.
    pub fn new(keys: Vec<(u8, [u8; 32])>) -> Result<SealKeys, String> {
        if keys.is_empty() {
            return Err("seal keys: at least one key is required".to_string());
        }
        for (i, (id, _)) in keys.iter().enumerate() {
            if keys[..i].iter().any(|(other, _)| other == id) {
                return Err(format!("seal keys: k{id} is listed twice"));
            }
        }
        Ok(SealKeys { keys })
    }

    /// Parses `k1:<base64 32 bytes>,k0:<base64 32 bytes>`; the first entry is current. Errors
    /// name the entry and never echo key material.
    pub fn from_spec(spec: &str) -> Result<SealKeys, String> {
        let mut keys = Vec::new();
        for (i, entry) in spec.split(',').map(str::trim).enumerate() {
            let n = i + 1;
            let Some((id, key)) = entry.split_once(':') else {
                return Err(format!("seal keys: entry {n} must be k<id>:<base64 key>"));
            };
            let id = id.trim();
            let digits = id.strip_prefix('k').filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()));
            let Some(id) = digits.and_then(|d| d.parse::<u8>().ok()) else {
                return Err(format!("seal keys: entry {n} has a key id that is not k0..k255"));
            };
            let key = decode_key(key).map_err(|e| format!("seal keys: k{id}: {e}"))?;
            keys.push((id, key));
        }
        SealKeys::new(keys)
    }

    /// Id of the key that seals new handles.
    pub fn current_id(&self) -> u8 {
        self.keys[0].0
    }

    /// The current key's id and cipher.
    fn current(&self) -> (u8, XChaCha20Poly1305) {
        let (id, key) = &self.keys[0];
        (*id, XChaCha20Poly1305::new(key.into()))
    }

    fn cipher(&self, id: u8) -> Option<XChaCha20Poly1305> {
        let (_, key) = self.keys.iter().find(|(k, _)| *k == id)?;
        Some(XChaCha20Poly1305::new(key.into()))
    }
}

/// Decodes one 32-byte key from base64 (standard or URL-safe, padded or not). The error says
/// what is wrong without echoing the text.
pub fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| "key is not base64".to_string())?;
    let key: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| format!("key is {} bytes, expected 32", bytes.len()))?;
    if key == [0; 32] {
        return Err("key is all zero bytes".to_string());
    }
    Ok(key)
}

/// Everything a legacy session is bound to.
#[derive(Clone, PartialEq, Eq)]
pub struct Binding {
    /// The backend's own `Mcp-Session-Id`, restored on the way upstream.
    pub upstream_session: String,
    /// The `x-mcp-affinity` value chosen at `initialize`.
    pub affinity: String,
    pub sub: String,
    pub task: String,
    pub backend: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub policy_version: u32,
}

/// The upstream session id is a credential at the backend; it is never printed.
impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("upstream_session", &"<redacted>")
            .field("affinity", &self.affinity)
            .field("sub", &self.sub)
            .field("task", &self.task)
            .field("backend", &self.backend)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("policy_version", &self.policy_version)
            .finish()
    }
}

impl Binding {
    fn encode(&self, out: &mut Vec<u8>) {
        for text in [&self.upstream_session, &self.affinity, &self.sub, &self.task, &self.backend] {
            wire::put_str(out, text);
        }
        wire::put_u64(out, self.issued_at);
        wire::put_u64(out, self.expires_at);
        wire::put_u64(out, u64::from(self.policy_version));
    }

    fn decode(bytes: &[u8]) -> Option<Binding> {
        let mut r = Reader::new(bytes);
        let binding = Binding {
            upstream_session: r.str()?.to_string(),
            affinity: r.str()?.to_string(),
            sub: r.str()?.to_string(),
            task: r.str()?.to_string(),
            backend: r.str()?.to_string(),
            issued_at: r.u64()?,
            expires_at: r.u64()?,
            policy_version: u32::try_from(r.u64()?).ok()?,
        };
        r.finish()?;
        Some(binding)
    }
}

/// Whether a backend's `Mcp-Session-Id` may be sealed: 1 to 256 visible ASCII characters, as
/// the MCP transport requires (anything else is the backend's error, not a session).
pub fn valid_upstream_session_id(id: &str) -> bool {
    (1..=MAX_UPSTREAM_SESSION_CHARS).contains(&id.len()) && id.bytes().all(|c| (0x21..=0x7e).contains(&c))
}

/// Seals a binding under the current key with a fresh random `nonce` (from the host's RNG).
/// `TooLarge` when the encoded binding exceeds [`MAX_BINDING_BYTES`].
pub fn seal(keys: &SealKeys, binding: &Binding, nonce: [u8; NONCE_LEN]) -> Result<String, SessionError> {
    let mut body = Vec::with_capacity(128);
    binding.encode(&mut body);
    if body.len() > MAX_BINDING_BYTES {
        return Err(SessionError::TooLarge);
    }
    let (id, cipher) = keys.current();
    let header = [VERSION, id];
    cipher.encrypt_in_place(&XNonce::from(nonce), &aad(header), &mut body).map_err(|_| SessionError::TooLarge)?;
    let mut handle = Vec::with_capacity(HEADER_LEN + NONCE_LEN + body.len());
    handle.extend_from_slice(&header);
    handle.extend_from_slice(&nonce);
    handle.extend_from_slice(&body);
    Ok(URL_SAFE_NO_PAD.encode(handle))
}

/// Opens a handle. Anything that is not a handle this gateway sealed with a listed key, byte
/// for byte, is `Malformed`; which check failed is not told, so there is no oracle.
pub fn open(keys: &SealKeys, handle: &str) -> Result<Binding, SessionError> {
    if handle.len() > MAX_HANDLE_CHARS {
        return Err(SessionError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD.decode(handle).map_err(|_| SessionError::Malformed)?;
    if bytes.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || bytes[0] != VERSION {
        return Err(SessionError::Malformed);
    }
    let header = [bytes[0], bytes[1]];
    let cipher = keys.cipher(header[1]).ok_or(SessionError::Malformed)?;
    let (nonce, sealed) = bytes[HEADER_LEN..].split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| SessionError::Malformed)?;
    let mut body = sealed.to_vec();
    cipher.decrypt_in_place(&nonce, &aad(header), &mut body).map_err(|_| SessionError::Malformed)?;
    Binding::decode(&body).ok_or(SessionError::Malformed)
}

fn aad(header: [u8; HEADER_LEN]) -> [u8; AAD_CONTEXT.len() + HEADER_LEN] {
    let mut aad = [0u8; AAD_CONTEXT.len() + HEADER_LEN];
    aad[..AAD_CONTEXT.len()].copy_from_slice(AAD_CONTEXT);
    aad[AAD_CONTEXT.len()..].copy_from_slice(&header);
    aad
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) const NOW: u64 = 1_767_225_600;

    pub(crate) fn keys() -> SealKeys {
        SealKeys::new(vec![(1, [7; 32])]).unwrap()
    }

    pub(crate) fn binding() -> Binding {
        Binding {
            upstream_session: "3f2c9a1e-8b7d-4c6e-9f01-2a3b4c5d6e7f".to_string(),
            affinity: "Qm9uam91ciBsZSBtb25kZQ".to_string(),
            sub: "alice".to_string(),
            task: "task-2026-report-001".to_string(),
            backend: "files".to_string(),
            issued_at: NOW,
            expires_at: NOW + 28_800,
            policy_version: 1,
        }
    }

    pub(crate) fn sealed() -> String {
        seal(&keys(), &binding(), [9; NONCE_LEN]).unwrap()
    }

    fn b64(key: [u8; 32]) -> String {
        STANDARD.encode(key)
    }

    #[test]
    fn sealed_handle_opens_to_the_same_binding() {
        assert_eq!(open(&keys(), &sealed()), Ok(binding()));
    }

    #[test]
    fn typical_handle_is_url_safe_and_short() {
        let handle = sealed();
        assert!(handle.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(handle.len(), 195, "typical handle length changed");
    }

    #[test]
    fn handle_does_not_reveal_the_binding() {
        let handle = sealed();
        let bytes = URL_SAFE_NO_PAD.decode(&handle).unwrap();
        for secret in [&b"3f2c9a1e"[..], b"alice", b"files", b"task-2026"] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret));
        }
    }

    #[test]
    fn different_nonces_give_different_handles() {
        let other = seal(&keys(), &binding(), [10; NONCE_LEN]).unwrap();
        assert_ne!(sealed(), other);
        assert_eq!(open(&keys(), &other), Ok(binding()));
    }

    #[test]
    fn bit_flipped_handle_does_not_open() {
        let bytes = URL_SAFE_NO_PAD.decode(sealed()).unwrap();
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            assert_eq!(open(&keys(), &URL_SAFE_NO_PAD.encode(flipped)), Err(SessionError::Malformed), "byte {i}");
        }
    }

    #[test]
    fn truncated_or_extended_handle_does_not_open() {
        let handle = sealed();
        for cut in [1, 2, 4, 20, handle.len() - 3] {
            assert_eq!(open(&keys(), &handle[..handle.len() - cut]), Err(SessionError::Malformed), "cut {cut}");
        }
        assert_eq!(open(&keys(), &format!("{handle}AA")), Err(SessionError::Malformed));
        assert_eq!(open(&keys(), ""), Err(SessionError::Malformed));
    }

    #[test]
    fn non_canonical_base64_does_not_open() {
        let handle = sealed();
        assert_eq!(open(&keys(), &format!("{handle}=")), Err(SessionError::Malformed));
        assert_eq!(open(&keys(), &handle.replace('-', "+").replace('_', "/")).is_ok(), !handle.contains(['-', '_']));
        assert_eq!(open(&keys(), "not a handle!"), Err(SessionError::Malformed));
    }

    #[test]
    fn wrong_version_does_not_open() {
        let mut bytes = URL_SAFE_NO_PAD.decode(sealed()).unwrap();
        bytes[0] = 2;
        assert_eq!(open(&keys(), &URL_SAFE_NO_PAD.encode(bytes)), Err(SessionError::Malformed));
    }

    #[test]
    fn unknown_key_id_does_not_open() {
        let other = SealKeys::new(vec![(2, [7; 32])]).unwrap();
        assert_eq!(open(&other, &sealed()), Err(SessionError::Malformed));
    }

    #[test]
    fn same_id_other_key_does_not_open() {
        let other = SealKeys::new(vec![(1, [8; 32])]).unwrap();
        assert_eq!(open(&other, &sealed()), Err(SessionError::Malformed));
    }

    #[test]
    fn handle_sealed_with_old_key_opens_after_rotation() {
        let rotated = SealKeys::from_spec(&format!("k2:{},k1:{}", b64([5; 32]), b64([7; 32]))).unwrap();
        assert_eq!(open(&rotated, &sealed()), Ok(binding()));
        let fresh = seal(&rotated, &binding(), [1; NONCE_LEN]).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&fresh).unwrap()[1], 2);
        assert_eq!(open(&keys(), &fresh), Err(SessionError::Malformed), "old gateway cannot open new key");
    }

    #[test]
    fn overlong_handle_is_refused_before_decoding() {
        assert_eq!(open(&keys(), &"A".repeat(MAX_HANDLE_CHARS + 1)), Err(SessionError::Malformed));
    }

    #[test]
    fn oversized_binding_is_not_sealed() {
        let mut big = binding();
        big.sub = "a".repeat(MAX_BINDING_BYTES);
        assert_eq!(seal(&keys(), &big, [0; NONCE_LEN]), Err(SessionError::TooLarge));
    }

    #[test]
    fn largest_binding_seals_and_opens() {
        let mut big = binding();
        let mut body = Vec::new();
        big.encode(&mut body);
        big.sub.push_str(&"a".repeat(MAX_BINDING_BYTES - body.len() - 1));
        let handle = seal(&keys(), &big, [0; NONCE_LEN]).unwrap();
        assert!(handle.len() <= MAX_HANDLE_CHARS);
        assert_eq!(open(&keys(), &handle), Ok(big));
    }

    #[test]
    fn key_spec_with_two_keys_seals_with_the_first() {
        let keys = SealKeys::from_spec(&format!(" k1:{} , k0:{}", b64([1; 32]), b64([2; 32]))).unwrap();
        assert_eq!(keys.current_id(), 1);
        assert_eq!(format!("{keys:?}"), r#"SealKeys { ids: ["k1", "k0"] }"#);
    }

    #[test]
    fn key_spec_accepts_url_safe_and_unpadded_base64() {
        assert!(SealKeys::from_spec(&format!("k0:{}", URL_SAFE_NO_PAD.encode([0xfb; 32]))).is_ok());
    }

    #[test]
    fn key_spec_errors_name_the_problem_without_key_material() {
        let short = STANDARD.encode([3; 16]);
        let cases = [
            (String::new(), "entry 1 must be"),
            (format!("k1:{short}"), "k1: key is 16 bytes, expected 32"),
            ("k1:%%%".to_string(), "k1: key is not base64"),
            (format!("x1:{}", b64([1; 32])), "entry 1 has a key id"),
            (format!("k256:{}", b64([1; 32])), "entry 1 has a key id"),
            (format!("k:{}", b64([1; 32])), "entry 1 has a key id"),
            (format!("k+1:{}", b64([1; 32])), "entry 1 has a key id"),
            (format!("k1:{},k1:{}", b64([1; 32]), b64([2; 32])), "k1 is listed twice"),
            (format!("k1:{},", b64([1; 32])), "entry 2 must be"),
            (format!("k1:{}", b64([0; 32])), "all zero"),
        ];
        for (spec, expected) in cases {
            let err = SealKeys::from_spec(&spec).unwrap_err();
            assert!(err.contains(expected), "{spec:?}: {err}");
            assert!(!err.contains(&short) && !err.contains(&b64([1; 32])), "{err}");
        }
    }

    #[test]
    fn binding_debug_hides_the_upstream_session() {
        let text = format!("{:?}", binding());
        assert!(!text.contains("3f2c9a1e") && text.contains("alice"), "{text}");
    }

    #[test]
    fn upstream_session_ids_must_be_visible_ascii() {
        assert!(valid_upstream_session_id("3f2c9a1e-8b7d-4c6e-9f01-2a3b4c5d6e7f"));
        assert!(!valid_upstream_session_id(""));
        assert!(!valid_upstream_session_id("a b"));
        assert!(!valid_upstream_session_id("é"));
        assert!(!valid_upstream_session_id(&"a".repeat(MAX_UPSTREAM_SESSION_CHARS + 1)));
    }
}
