//! Use records: when this gateway first and last saw a modern task or a legacy session.
//!
//! Stored in proxy-wasm shared data (the bucket table of [`super::table`]) so every worker of
//! one Envoy sees them. A record is kept as a tombstone long after it expired, so an expired task id
//! or session cannot come back as a fresh one when its record is swept.

use super::revoke::Revocations;
use super::Limits;

/// First and last use of a task or session as seen by this gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub first: u64,
    pub last: u64,
    /// The client ended the legacy session with `DELETE`.
    pub ended: bool,
}

/// Size of an encoded [`Usage`].
pub const USAGE_BYTES: usize = 17;

/// Why a modern task is refused; `reason()` is the stable audit/metrics code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskError {
    Expired,
    Revoked,
}

impl TaskError {
    /// Stable machine-readable reason.
    pub fn reason(self) -> &'static str {
        match self {
            TaskError::Expired => "task_expired",
            TaskError::Revoked => "task_revoked",
        }
    }
}

impl Usage {
    /// A record first and last used at `now`.
    pub fn new(now: u64) -> Usage {
        Usage { first: now, last: now, ended: false }
    }

    /// Fixed-size little-endian bytes: `first ‖ last ‖ ended`.
    pub fn encode(&self) -> [u8; USAGE_BYTES] {
        let mut out = [0u8; USAGE_BYTES];
        out[..8].copy_from_slice(&self.first.to_le_bytes());
        out[8..16].copy_from_slice(&self.last.to_le_bytes());
        out[16] = u8::from(self.ended);
        out
    }

    /// `None` for empty bytes (proxy-wasm cannot delete a key; an empty value means "no record")
    /// and for anything that is not a record.
    pub fn decode(bytes: &[u8]) -> Option<Usage> {
        let bytes: &[u8; USAGE_BYTES] = bytes.try_into().ok()?;
        let ended = match bytes[16] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let first = u64::from_le_bytes(bytes[..8].try_into().ok()?);
        let last = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
        Some(Usage { first, last, ended })
    }

    /// Combines two workers' views after a lost compare-and-swap: earliest first, latest last.
    pub fn merge(self, other: Usage) -> Usage {
        Usage { first: self.first.min(other.first), last: self.last.max(other.last), ended: self.ended || other.ended }
    }

    /// The record after a use at `now`.
    pub fn touched(self, now: u64) -> Usage {
        Usage { last: self.last.max(now), ..self }
    }

    /// The record after the client ended the session at `now`.
    pub fn ended_at(self, now: u64) -> Usage {
        Usage { ended: true, ..self.touched(now) }
    }

    /// Whether the idle or absolute limit has passed at `now` (both are "on or after").
    pub fn expired(&self, now: u64, limits: &Limits) -> bool {
        now >= self.first.saturating_add(limits.absolute_secs) || now >= self.last.saturating_add(limits.idle_secs)
    }

    /// Whether the record may be deleted: unused for a whole `absolute_secs`, so whatever it
    /// tracked expired long ago (validation keeps `idle_secs <= absolute_secs`).
    pub fn sweepable(&self, now: u64, limits: &Limits) -> bool {
        now >= self.last.max(self.first).saturating_add(limits.absolute_secs)
    }
}

/// Checks one call of a modern task (`usage` is its record, `None` when first seen) and returns
/// the record to store. Revocation is told before expiry.
pub fn check_task(
    usage: Option<Usage>,
    now: u64,
    limits: &Limits,
    revocations: &Revocations,
    sub: &str,
    task: &str,
) -> Result<Usage, TaskError> {
    let record = usage.unwrap_or_else(|| Usage::new(now));
    if revocations.task_revoked(sub, task, record.first) {
        return Err(TaskError::Revoked);
    }
    if usage.is_some() && record.expired(now, limits) {
        return Err(TaskError::Expired);
    }
    Ok(record.touched(now))
}

/// The keys whose records may be deleted at `now` (for the glue's periodic sweep).
pub fn sweep<K>(records: impl IntoIterator<Item = (K, Usage)>, now: u64, limits: &Limits) -> Vec<K> {
    records.into_iter().filter(|(_, usage)| usage.sweepable(now, limits)).map(|(key, _)| key).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600;
    const LIMITS: Limits = Limits { idle_secs: 900, absolute_secs: 28_800 };

    fn none() -> Revocations {
        Revocations::default()
    }

    #[test]
    fn first_call_of_a_task_starts_its_record() {
        assert_eq!(check_task(None, NOW, &LIMITS, &none(), "alice", "t1"), Ok(Usage::new(NOW)));
    }

    #[test]
    fn busy_task_stays_alive_and_records_last_use() {
        let used = Usage { first: NOW - 3_000, last: NOW - 899, ended: false };
        assert_eq!(check_task(Some(used), NOW, &LIMITS, &none(), "alice", "t1"), Ok(Usage { last: NOW, ..used }));
    }

    #[test]
    fn task_idle_for_idle_secs_expires() {
        let used = Usage { first: NOW - 3_000, last: NOW - 900, ended: false };
        assert_eq!(check_task(Some(used), NOW, &LIMITS, &none(), "alice", "t1"), Err(TaskError::Expired));
    }

    #[test]
    fn task_expires_absolute_even_if_busy() {
        let used = Usage { first: NOW - 28_800, last: NOW - 1, ended: false };
        assert_eq!(check_task(Some(used), NOW, &LIMITS, &none(), "alice", "t1"), Err(TaskError::Expired));
    }

    #[test]
    fn revoked_task_id_is_refused_for_every_subject() {
        let mut revocations = none();
        revocations.revoke_task("t1", NOW - 10);
        for sub in ["alice", "bob"] {
            assert_eq!(check_task(None, NOW, &LIMITS, &revocations, sub, "t1"), Err(TaskError::Revoked));
        }
        assert!(check_task(None, NOW, &LIMITS, &revocations, "alice", "t2").is_ok());
    }

    #[test]
    fn revoke_subject_revokes_tasks_started_before_but_not_after() {
        let mut revocations = none();
        revocations.revoke_subject("alice", NOW - 10);
        let old = Usage::new(NOW - 100);
        assert_eq!(check_task(Some(old), NOW, &LIMITS, &revocations, "alice", "t1"), Err(TaskError::Revoked));
        assert!(check_task(None, NOW, &LIMITS, &revocations, "alice", "t2").is_ok());
        assert!(check_task(Some(old), NOW, &LIMITS, &revocations, "bob", "t1").is_ok());
    }

    #[test]
    fn revocation_is_told_before_expiry() {
        let mut revocations = none();
        revocations.revoke_task("t1", NOW);
        let expired = Usage::new(NOW - 28_800);
        assert_eq!(check_task(Some(expired), NOW, &LIMITS, &revocations, "alice", "t1"), Err(TaskError::Revoked));
    }

    #[test]
    fn usage_round_trips_through_bytes() {
        let usage = Usage { first: NOW, last: NOW + 5, ended: true };
        assert_eq!(Usage::decode(&usage.encode()), Some(usage));
    }

    #[test]
    fn empty_or_foreign_bytes_are_no_record() {
        assert_eq!(Usage::decode(b""), None);
        assert_eq!(Usage::decode(&[0; 16]), None);
        let mut bad = Usage::new(NOW).encode();
        bad[16] = 2;
        assert_eq!(Usage::decode(&bad), None);
    }

    #[test]
    fn merge_keeps_earliest_first_and_latest_last() {
        let a = Usage { first: 10, last: 50, ended: false };
        let b = Usage { first: 20, last: 60, ended: true };
        assert_eq!(a.merge(b), Usage { first: 10, last: 60, ended: true });
    }

    #[test]
    fn sweep_keeps_expired_records_as_tombstones_for_absolute_secs() {
        let records = vec![
            ("fresh", Usage::new(NOW - 10)),
            ("idle_expired", Usage::new(NOW - 1_000)),
            ("unused_for_absolute", Usage { first: NOW - 40_000, last: NOW - 28_800, ended: false }),
        ];
        assert_eq!(sweep(records, NOW, &LIMITS), vec!["unused_for_absolute"]);
    }

    #[test]
    fn limits_near_u64_max_do_not_overflow() {
        let huge = Limits { idle_secs: u64::MAX, absolute_secs: u64::MAX };
        assert!(!Usage::new(NOW).expired(u64::MAX - 1, &huge));
        assert!(!Usage::new(NOW).sweepable(u64::MAX - 1, &huge));
    }
}
