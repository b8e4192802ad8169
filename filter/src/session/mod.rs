//! Sessions and tasks: workflow affinity, sealed legacy sessions, modern task records and
//! revocation (CONTRACT "Per request" 6).
//!
//! Pure: time, nonces, keys and the shared records come in as arguments; the glue reads and
//! writes proxy-wasm shared data. Submodules: [`seal`] (handles), [`tasks`] (use records),
//! [`revoke`] (the revocation table and admin orders).

pub mod revoke;
pub mod seal;
pub mod table;
pub mod tasks;
mod wire;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

pub use revoke::{apply, parse_revoke_request, Revocations, RevokeOrder};
pub use seal::{decode_key, open, seal, valid_upstream_session_id, Binding, SealKeys, NONCE_LEN};
pub use tasks::{check_task, sweep, TaskError, Usage};

/// Why a legacy session handle is refused (`404`, the client initializes again), or not issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// Does not open: tampered, truncated, unknown key id, bad base64, wrong version.
    Malformed,
    /// Another subject presents the handle: a hijack attempt.
    WrongSubject,
    WrongBackend,
    WrongTask,
    IdleExpired,
    AbsoluteExpired,
    Revoked,
    /// Issued under another policy version.
    PolicyChanged,
    /// The client ended the session with `DELETE`.
    Ended,
    /// At `initialize`: the binding is too large to seal.
    TooLarge,
}

impl SessionError {
    /// Stable machine-readable reason (audit `reason`, metrics label).
    pub fn reason(self) -> &'static str {
        match self {
            SessionError::Malformed => "session_invalid",
            SessionError::WrongSubject => "session_hijack",
            SessionError::WrongBackend => "session_wrong_backend",
            SessionError::WrongTask => "session_wrong_task",
            SessionError::IdleExpired => "session_idle_expired",
            SessionError::AbsoluteExpired => "session_expired",
            SessionError::Revoked => "session_revoked",
            SessionError::PolicyChanged => "session_policy_changed",
            SessionError::Ended => "session_ended",
            SessionError::TooLarge => "session_too_large",
        }
    }
}

/// Idle and absolute lifetime of sessions or tasks (`"sessions"` / `"tasks"` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Unused this long, it expires.
    pub idle_secs: u64,
    /// This long after it began, it expires however busy.
    pub absolute_secs: u64,
}

/// Longest `absolute_secs` accepted: 30 days.
pub const MAX_ABSOLUTE_SECS: u64 = 30 * 24 * 3600;

impl Default for Limits {
    fn default() -> Self {
        Limits { idle_secs: 900, absolute_secs: 28_800 }
    }
}

impl Limits {
    /// Adds every problem to `problems`, each prefixed with `field` (e.g. `sessions`).
    pub fn validate(&self, field: &str, problems: &mut Vec<String>) {
        if self.idle_secs == 0 {
            problems.push(format!("{field}.idle_secs: must be at least 1"));
        }
        if !(1..=MAX_ABSOLUTE_SECS).contains(&self.absolute_secs) {
            problems.push(format!("{field}.absolute_secs: {} is outside 1..={MAX_ABSOLUTE_SECS}", self.absolute_secs));
        }
        if self.idle_secs > self.absolute_secs {
            problems
                .push(format!("{field}.idle_secs: {} exceeds absolute_secs {}", self.idle_secs, self.absolute_secs));
        }
    }
}

/// What a request using a session must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The authenticated subject.
    pub sub: &'a str,
    /// The backend the path addresses.
    pub backend: &'a str,
    /// The request's task (`Mcp-Task-Id` or hop token), if it names one.
    pub task: Option<&'a str>,
    /// The current configuration's policy version.
    pub policy_version: u32,
}

/// Checks an opened session for one request and returns the use record to store under
/// `sess:<tag>`. `usage` is this gateway's record, `None` when it never saw the session.
///
/// Identity is checked first, so a stolen handle is reported as a hijack even when expired.
/// Idle time counts from `max(issued_at, usage.last)`. With no record the idle limit is not
/// applied: another replica sharing the key may have served the session a moment ago, and
/// failing it here would break replicas serving one session interchangeably; the absolute
/// limit, carried in the handle, always holds.
pub fn check_session(
    binding: &Binding,
    tag: &str,
    expected: &Expected<'_>,
    now: u64,
    usage: Option<Usage>,
    limits: &Limits,
    revocations: &Revocations,
) -> Result<Usage, SessionError> {
    if binding.sub != expected.sub {
        return Err(SessionError::WrongSubject);
    }
    if binding.backend != expected.backend {
        return Err(SessionError::WrongBackend);
    }
    if expected.task.is_some_and(|task| task != binding.task) {
        return Err(SessionError::WrongTask);
    }
    if revocations.session_revoked(tag, &binding.sub, &binding.task, binding.issued_at) {
        return Err(SessionError::Revoked);
    }
    if usage.is_some_and(|u| u.ended) {
        return Err(SessionError::Ended);
    }
    if binding.policy_version != expected.policy_version {
        return Err(SessionError::PolicyChanged);
    }
    // A shortened absolute_secs in the config applies to sessions already issued.
    let absolute_end = binding.expires_at.min(binding.issued_at.saturating_add(limits.absolute_secs));
    if now >= absolute_end {
        return Err(SessionError::AbsoluteExpired);
    }
    let record = Usage { first: binding.issued_at, last: binding.issued_at, ended: false };
    let record = usage.map_or(record, |u| record.merge(u));
    if usage.is_some() && now >= record.last.saturating_add(limits.idle_secs) {
        return Err(SessionError::IdleExpired);
    }
    Ok(record.touched(now))
}

/// The affinity key of a modern task: a keyed hash of (subject, backend, task), so another
/// subject reusing a task id lands in another binding, and ids cannot be guessed from outside.
/// `key` must stay the same across seal-key rotation and replicas (22 characters out).
pub fn affinity_for_task(key: &[u8; 32], sub: &str, backend: &str, task: &str) -> String {
    let mut mac = hmac_sha256::HMAC::new(key);
    mac.update(b"mcp-gateway-filter/task-affinity\0");
    // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    for field in [sub, backend, task] {
        mac.update((field.len() as u64).to_be_bytes());
        mac.update(field);
    }
    URL_SAFE_NO_PAD.encode(&mac.finalize()[..16])
}

/// The affinity key of a legacy session, chosen at `initialize` from 16 random bytes.
pub fn new_affinity(random: [u8; 16]) -> String {
    URL_SAFE_NO_PAD.encode(random)
}

/// A short keyed hash (16 characters) of `value` in a named domain, e.g. audit subjects.
pub fn keyed_hash(key: &[u8; 32], domain: &str, value: &str) -> String {
    let mut mac = hmac_sha256::HMAC::new(key);
    mac.update(b"mcp-gateway-filter/");
    mac.update(domain);
    mac.update(b"\0");
    mac.update(value);
    URL_SAFE_NO_PAD.encode(&mac.finalize()[..12])
}

/// A short keyed hash of a handle (12 characters) for audit lines, use records and the
/// revocation table: it identifies a session without being able to act as one.
pub fn session_tag(key: &[u8; 32], handle: &str) -> String {
    let mut mac = hmac_sha256::HMAC::new(key);
    mac.update(b"mcp-gateway-filter/session-tag\0");
    mac.update(handle);
    URL_SAFE_NO_PAD.encode(&mac.finalize()[..9])
}

#[cfg(test)]
mod tests {
    use super::seal::tests::{binding, keys, sealed, NOW};
    use super::*;

    const HASH_KEY: [u8; 32] = [4; 32];
    const LIMITS: Limits = Limits { idle_secs: 900, absolute_secs: 28_800 };

    fn expected() -> Expected<'static> {
        Expected { sub: "alice", backend: "files", task: None, policy_version: 1 }
    }

    fn check(expected: &Expected<'_>, now: u64, usage: Option<Usage>) -> Result<Usage, SessionError> {
        check_session(&binding(), "tag", expected, now, usage, &LIMITS, &Revocations::default())
    }

    fn seen(last: u64) -> Option<Usage> {
        Some(Usage { first: NOW, last, ended: false })
    }

    #[test]
    fn matching_live_session_passes_and_records_use() {
        assert_eq!(
            check(&expected(), NOW + 60, seen(NOW + 30)),
            Ok(Usage { first: NOW, last: NOW + 60, ended: false })
        );
    }

    #[test]
    fn other_subject_is_a_hijack() {
        assert_eq!(check(&Expected { sub: "mallory", ..expected() }, NOW, None), Err(SessionError::WrongSubject));
    }

    #[test]
    fn hijack_is_reported_even_when_expired() {
        let late = NOW + 100_000;
        assert_eq!(check(&Expected { sub: "mallory", ..expected() }, late, None), Err(SessionError::WrongSubject));
    }

    #[test]
    fn other_backend_is_refused() {
        assert_eq!(check(&Expected { backend: "reports", ..expected() }, NOW, None), Err(SessionError::WrongBackend));
    }

    #[test]
    fn other_task_is_refused_and_absent_task_is_not_checked() {
        let other = Expected { task: Some("another-task"), ..expected() };
        assert_eq!(check(&other, NOW, None), Err(SessionError::WrongTask));
        let same = Expected { task: Some("task-2026-report-001"), ..expected() };
        assert!(check(&same, NOW, None).is_ok());
    }

    #[test]
    fn idle_expiry_counts_from_last_use() {
        assert!(check(&expected(), NOW + 2_000, seen(NOW + 1_101)).is_ok());
        assert_eq!(check(&expected(), NOW + 2_000, seen(NOW + 1_100)), Err(SessionError::IdleExpired));
    }

    #[test]
    fn session_never_seen_here_is_not_idle_expired() {
        // Another replica issued and served it; only the absolute limit is known here.
        assert_eq!(check(&expected(), NOW + 5_000, None), Ok(Usage { first: NOW, last: NOW + 5_000, ended: false }));
    }

    #[test]
    fn record_older_than_issue_counts_from_issue() {
        assert!(check(&expected(), NOW + 899, seen(NOW - 5_000)).is_ok());
    }

    #[test]
    fn session_expires_absolute_even_if_busy() {
        assert_eq!(check(&expected(), NOW + 28_800, seen(NOW + 28_799)), Err(SessionError::AbsoluteExpired));
        assert!(check(&expected(), NOW + 28_799, seen(NOW + 28_798)).is_ok());
    }

    #[test]
    fn shortened_absolute_limit_applies_to_issued_sessions() {
        let shorter = Limits { idle_secs: 900, absolute_secs: 3_600 };
        let result = check_session(&binding(), "t", &expected(), NOW + 3_600, None, &shorter, &Revocations::default());
        assert_eq!(result, Err(SessionError::AbsoluteExpired));
    }

    #[test]
    fn revoked_tag_refuses_the_session() {
        let mut revocations = Revocations::default();
        revocations.revoke_session("tag", NOW + 5);
        let result = check_session(&binding(), "tag", &expected(), NOW + 10, None, &LIMITS, &revocations);
        assert_eq!(result, Err(SessionError::Revoked));
    }

    #[test]
    fn revoked_task_refuses_its_legacy_session() {
        let mut revocations = Revocations::default();
        revocations.revoke_task("task-2026-report-001", NOW + 5);
        let result = check_session(&binding(), "tag", &expected(), NOW + 10, None, &LIMITS, &revocations);
        assert_eq!(result, Err(SessionError::Revoked));
    }

    #[test]
    fn ended_session_is_refused() {
        let ended = Some(Usage::new(NOW).ended_at(NOW + 5));
        assert_eq!(check(&expected(), NOW + 10, ended), Err(SessionError::Ended));
    }

    #[test]
    fn other_policy_version_is_refused() {
        assert_eq!(check(&Expected { policy_version: 2, ..expected() }, NOW, None), Err(SessionError::PolicyChanged));
    }

    #[test]
    fn every_error_has_its_stable_reason() {
        let reasons = [
            (SessionError::Malformed, "session_invalid"),
            (SessionError::WrongSubject, "session_hijack"),
            (SessionError::WrongBackend, "session_wrong_backend"),
            (SessionError::WrongTask, "session_wrong_task"),
            (SessionError::IdleExpired, "session_idle_expired"),
            (SessionError::AbsoluteExpired, "session_expired"),
            (SessionError::Revoked, "session_revoked"),
            (SessionError::PolicyChanged, "session_policy_changed"),
            (SessionError::Ended, "session_ended"),
            (SessionError::TooLarge, "session_too_large"),
        ];
        for (error, reason) in reasons {
            assert_eq!(error.reason(), reason);
        }
        assert_eq!(TaskError::Expired.reason(), "task_expired");
        assert_eq!(TaskError::Revoked.reason(), "task_revoked");
    }

    #[test]
    fn same_task_other_subject_is_another_affinity() {
        let alice = affinity_for_task(&HASH_KEY, "alice", "files", "t1");
        assert_eq!(alice, affinity_for_task(&HASH_KEY, "alice", "files", "t1"));
        assert_ne!(alice, affinity_for_task(&HASH_KEY, "bob", "files", "t1"));
        assert_ne!(alice, affinity_for_task(&HASH_KEY, "alice", "reports", "t1"));
        assert_ne!(alice, affinity_for_task(&[5; 32], "alice", "files", "t1"));
        assert_eq!(alice.len(), 22);
    }

    #[test]
    fn affinity_fields_cannot_be_shifted_into_each_other() {
        assert_ne!(affinity_for_task(&HASH_KEY, "ab", "c", "t"), affinity_for_task(&HASH_KEY, "a", "bc", "t"));

    }

    #[test]
    fn legacy_affinity_is_22_url_safe_characters() {
        let affinity = new_affinity([0xff; 16]);
        assert_eq!(affinity.len(), 22);
        assert!(affinity.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn session_tag_is_short_keyed_and_not_the_handle() {
        let handle = sealed();
        let tag = session_tag(&HASH_KEY, &handle);
        assert_eq!(tag.len(), 12);
        assert!(!handle.contains(&tag));
        assert_eq!(tag, session_tag(&HASH_KEY, &handle));
        assert_ne!(tag, session_tag(&[5; 32], &handle));
        assert_ne!(tag, affinity_for_task(&HASH_KEY, &handle, "", "")[..12]);
    }

    #[test]
    fn limits_parse_with_defaults_and_refuse_unknown_fields() {
        let limits: Limits = serde_json::from_str(r#"{"idle_secs": 60}"#).unwrap();
        assert_eq!(limits, Limits { idle_secs: 60, absolute_secs: 28_800 });
        let err = serde_json::from_str::<Limits>(r#"{"idle_sec": 60}"#).unwrap_err();
        assert!(err.to_string().contains("idle_sec"), "{err}");
    }

    #[test]
    fn limits_validation_names_every_bad_field() {
        let mut problems = Vec::new();
        Limits { idle_secs: 0, absolute_secs: 0 }.validate("sessions", &mut problems);
        Limits { idle_secs: 100, absolute_secs: 50 }.validate("tasks", &mut problems);
        let text = problems.join("; ");
        for field in ["sessions.idle_secs", "sessions.absolute_secs", "tasks.idle_secs: 100 exceeds"] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        let mut none = Vec::new();
        Limits::default().validate("sessions", &mut none);
        assert!(none.is_empty(), "{none:?}");
    }

    /// `cargo test -p filter --release -- --ignored bench_seal_open --nocapture`
    #[test]
    #[ignore]
    fn bench_seal_open() {
        use std::hint::black_box;
        use std::time::Instant;
        const N: u32 = 100_000;
        let (keys, binding) = (keys(), binding());
        let start = Instant::now();
        let mut handle = String::new();
        for i in 0..N {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..4].copy_from_slice(&i.to_le_bytes());
            handle = seal(black_box(&keys), black_box(&binding), nonce).unwrap();
        }
        let seal_ns = start.elapsed().as_nanos() / u128::from(N);
        let start = Instant::now();
        for _ in 0..N {
            black_box(open(black_box(&keys), black_box(&handle)).unwrap());
        }
        let open_ns = start.elapsed().as_nanos() / u128::from(N);
        let start = Instant::now();
        for _ in 0..N {
            black_box(session_tag(black_box(&HASH_KEY), black_box(&handle)));
        }
        let tag_ns = start.elapsed().as_nanos() / u128::from(N);
        println!("handle {} chars; seal {seal_ns} ns, open {open_ns} ns, session_tag {tag_ns} ns", handle.len());
    }
}
