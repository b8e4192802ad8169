//! Revocation: the admin API's orders and the bounded table every worker consults.
//!
//! The table is stored as one proxy-wasm shared-data value, so a revocation posted to the admin
//! listener takes effect on the next request on every worker. It is bounded: each kind keeps at
//! most [`MAX_PER_KIND`] entries, dropping the oldest, and [`Revocations::prune`] drops entries
//! old enough that whatever they revoked has expired anyway.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::seal::{open, SealKeys, MAX_HANDLE_CHARS};
use super::session_tag;
use super::wire::{self, Reader};
use crate::agreement::valid_task_id;

/// Most entries kept per kind (session tags, task ids, subjects).
pub const MAX_PER_KIND: usize = 1024;
/// Longest subject the admin API accepts.
pub const MAX_SUBJECT_BYTES: usize = 255;
const VERSION: u8 = 1;

/// Revoked session tags, task ids (for every subject) and subjects, each with its time.
/// Its JSON form (`GET /revocations`, the revocation feed) is these three maps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocations {
    /// Session tag → when revoked.
    sessions: BTreeMap<String, u64>,
    /// Task id → when revoked.
    tasks: BTreeMap<String, u64>,
    /// Subject → everything of it issued at or before this time is revoked.
    subjects: BTreeMap<String, u64>,
}

impl Revocations {
    /// Whether a legacy session is revoked: by its tag, its task, or its subject.
    pub fn session_revoked(&self, tag: &str, sub: &str, task: &str, issued_at: u64) -> bool {
        self.sessions.contains_key(tag) || self.task_revoked(sub, task, issued_at)
    }

    /// Whether a task first seen at `first` is revoked: by its id or its subject.
    pub fn task_revoked(&self, sub: &str, task: &str, first: u64) -> bool {
        self.tasks.contains_key(task) || self.subjects.get(sub).is_some_and(|&before| first <= before)
    }

    /// Revokes one session by tag (also what a client's `DELETE` does).
    pub fn revoke_session(&mut self, tag: &str, now: u64) {
        insert_bounded(&mut self.sessions, tag, now);
    }

    /// Revokes a task id for every subject.
    pub fn revoke_task(&mut self, task: &str, now: u64) {
        insert_bounded(&mut self.tasks, task, now);
    }

    /// Revokes every session and task of `sub` issued at or before `before`. Same-second
    /// issues count as before: fail closed, the client re-binds a second later.
    pub fn revoke_subject(&mut self, sub: &str, before: u64) {
        insert_bounded(&mut self.subjects, sub, before);
    }

    /// Drops entries older than `horizon_secs` (use the longest `absolute_secs`): every
    /// session or task they could match has expired by then.
    pub fn prune(&mut self, now: u64, horizon_secs: u64) {
        for kind in [&mut self.sessions, &mut self.tasks, &mut self.subjects] {
            kind.retain(|_, at| now < at.saturating_add(horizon_secs));
        }
    }

    /// Takes in every entry of `other` (later times win): how a gateway replica converges on a
    /// revocation feed. Returns whether anything changed.
    pub fn merge(&mut self, other: &Revocations) -> bool {
        let before = self.clone();
        for (mine, theirs) in [(&mut self.sessions, &other.sessions), (&mut self.tasks, &other.tasks), (&mut self.subjects, &other.subjects)] {
            for (name, at) in theirs {
                insert_bounded(mine, name, *at);
            }
        }
        *self != before
    }

    /// The JSON form, for `GET /revocations`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// Reads the JSON form; a feed larger than the table bound is refused.
    pub fn from_json(bytes: &[u8]) -> Result<Revocations, String> {
        let table: Revocations = serde_json::from_slice(bytes).map_err(|e| format!("revocation feed: {e}"))?;
        if [&table.sessions, &table.tasks, &table.subjects].iter().any(|k| k.len() > MAX_PER_KIND) {
            return Err(format!("revocation feed: more than {MAX_PER_KIND} entries of one kind"));
        }
        Ok(table)
    }

    /// Number of entries of all kinds.
    pub fn len(&self) -> usize {
        self.sessions.len() + self.tasks.len() + self.subjects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Compact bytes: version, then per kind a count and `(name, time)` pairs.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        for kind in [&self.sessions, &self.tasks, &self.subjects] {
            wire::put_u64(&mut out, kind.len() as u64);
            for (name, at) in kind {
                wire::put_str(&mut out, name);
                wire::put_u64(&mut out, *at);
            }
        }
        out
    }

    /// Reads [`encode`](Self::encode)'s bytes; empty bytes (never written) are an empty table.
    pub fn decode(bytes: &[u8]) -> Result<Revocations, String> {
        if bytes.is_empty() {
            return Ok(Revocations::default());
        }
        read(bytes).ok_or_else(|| "revocation table: unreadable bytes".to_string())
    }
}

fn read(bytes: &[u8]) -> Option<Revocations> {
    let mut r = Reader::new(bytes);
    if r.u8()? != VERSION {
        return None;
    }
    let mut kinds = [BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
    for kind in &mut kinds {
        let count = usize::try_from(r.u64()?).ok().filter(|&n| n <= MAX_PER_KIND)?;
        for _ in 0..count {
            let name = r.str()?.to_string();
            let at = r.u64()?;
            kind.insert(name, at);
        }
    }
    r.finish()?;
    let [sessions, tasks, subjects] = kinds;
    Some(Revocations { sessions, tasks, subjects })
}

/// Adds or refreshes an entry (keeping the later time); when full, the oldest entry goes.
fn insert_bounded(kind: &mut BTreeMap<String, u64>, name: &str, at: u64) {
    if let Some(existing) = kind.get_mut(name) {
        *existing = (*existing).max(at);
        return;
    }
    if kind.len() >= MAX_PER_KIND {
        let oldest = kind.iter().min_by_key(|(_, at)| **at).map(|(name, _)| name.clone());
        if let Some(oldest) = oldest {
            kind.remove(&oldest);
        }
    }
    kind.insert(name.to_string(), at);
}

/// One `POST /revoke` order.
#[derive(Clone, PartialEq, Eq)]
pub enum RevokeOrder {
    /// A session handle as the client holds it.
    Session(String),
    Task(String),
    /// A subject and the time up to which its sessions and tasks are revoked.
    Subject {
        sub: String,
        before: u64,
    },
}

/// The handle is a credential; it is never printed.
impl std::fmt::Debug for RevokeOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevokeOrder::Session(_) => write!(f, "Session(<redacted>)"),
            RevokeOrder::Task(task) => write!(f, "Task({task:?})"),
            RevokeOrder::Subject { sub, before } => write!(f, "Subject {{ sub: {sub:?}, before: {before} }}"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    session: Option<String>,
    task: Option<String>,
    subject: Option<String>,
}

/// Parses an admin `POST /revoke` body: exactly one of `session`, `task`, `subject`, a string.
/// The error is the `400` answer's message.
pub fn parse_revoke_request(body: &[u8], now: u64) -> Result<RevokeOrder, String> {
    // Derived Deserialize refuses duplicate and unknown keys, so `{"task":"a","task":"b"}` fails.
    let body: RevokeBody = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    match (body.session, body.task, body.subject) {
        (Some(handle), None, None) => {
            if handle.is_empty() || handle.len() > MAX_HANDLE_CHARS {
                return Err(format!("session: a handle is 1 to {MAX_HANDLE_CHARS} characters"));
            }
            Ok(RevokeOrder::Session(handle))
        }
        (None, Some(task), None) => {
            if !valid_task_id(&task) {
                return Err("task: a task id is 1-64 characters of A-Z a-z 0-9 . _ -".to_string());
            }
            Ok(RevokeOrder::Task(task))
        }
        (None, None, Some(sub)) => {
            if sub.is_empty() || sub.len() > MAX_SUBJECT_BYTES {
                return Err(format!("subject: a subject is 1 to {MAX_SUBJECT_BYTES} bytes"));
            }
            Ok(RevokeOrder::Subject { sub, before: now })
        }
        _ => Err(r#"body: exactly one of "session", "task", "subject" is required"#.to_string()),
    }
}

/// Applies an order and returns the `200` answer, `{"revoked": {...}}`. A session is revoked by
/// its tag even when the handle does not open (sealed with a retired key, or garbage): the
/// answer then says `"opened": false` and names nothing else.
pub fn apply(
    revocations: &mut Revocations,
    order: &RevokeOrder,
    now: u64,
    keys: &SealKeys,
    tag_key: &[u8; 32],
) -> String {
    let revoked = match order {
        RevokeOrder::Session(handle) => {
            let tag = session_tag(tag_key, handle);
            revocations.revoke_session(&tag, now);
            match open(keys, handle) {
                Ok(b) => serde_json::json!({
                    "session": tag, "opened": true, "sub": b.sub, "backend": b.backend, "task": b.task,
                }),
                Err(_) => serde_json::json!({ "session": tag, "opened": false }),
            }
        }
        RevokeOrder::Task(task) => {
            revocations.revoke_task(task, now);
            serde_json::json!({ "task": task, "at": now })
        }
        RevokeOrder::Subject { sub, before } => {
            revocations.revoke_subject(sub, *before);
            serde_json::json!({ "subject": sub, "before": before })
        }
    };
    serde_json::json!({ "revoked": revoked }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::seal::tests::{binding, keys, sealed, NOW};

    #[test]
    fn feed_round_trips_and_merging_keeps_later_times() {
        let mut a = Revocations::default();
        a.revoke_task("t-1", NOW);
        a.revoke_subject("alice", NOW);
        let mut b = Revocations::default();
        b.revoke_subject("alice", NOW + 5);
        let feed = Revocations::from_json(a.to_json().as_bytes()).unwrap();
        assert_eq!(feed, a);
        assert!(b.merge(&feed));
        assert!(b.task_revoked("bob", "t-1", 0));
        assert!(b.task_revoked("alice", "x", NOW + 5), "the later subject cut-off stays");
        assert!(!b.merge(&feed), "merging again changes nothing");
        assert!(Revocations::from_json(br#"{"sessions":{},"tasks":{},"subjects":{},"x":1}"#).is_err());
    }

    const TAG_KEY: [u8; 32] = [3; 32];

    fn answer(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn revoke_body_with_one_string_key_parses() {
        assert_eq!(parse_revoke_request(br#"{"task":"t-1"}"#, NOW), Ok(RevokeOrder::Task("t-1".into())));
        assert_eq!(
            parse_revoke_request(br#"{"subject":"alice"}"#, NOW),
            Ok(RevokeOrder::Subject { sub: "alice".into(), before: NOW })
        );
        assert_eq!(parse_revoke_request(br#"{"session":"AQE"}"#, NOW), Ok(RevokeOrder::Session("AQE".into())));
    }

    #[test]
    fn revoke_body_other_than_one_string_key_is_refused() {
        let bad: [&[u8]; 12] = [
            b"",
            b"[]",
            b"{}",
            br#"{"task":"a","subject":"b"}"#,
            br#"{"task":"a","task":"b"}"#,
            br#"{"user":"alice"}"#,
            br#"{"task":5}"#,
            br#"{"task":null}"#,
            br#"{"task":"has space"}"#,
            br#"{"subject":""}"#,
            br#"{"session":""}"#,
            br#"{"task":"a"} trailing"#,
        ];
        for body in bad {
            assert!(parse_revoke_request(body, NOW).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn revoke_order_debug_hides_the_handle() {
        assert_eq!(format!("{:?}", RevokeOrder::Session("secret-handle".into())), "Session(<redacted>)");
    }

    #[test]
    fn revoking_a_session_stores_its_tag_and_names_its_owner() {
        let mut revocations = Revocations::default();
        let handle = sealed();
        let text = apply(&mut revocations, &RevokeOrder::Session(handle.clone()), NOW, &keys(), &TAG_KEY);
        let tag = session_tag(&TAG_KEY, &handle);
        assert!(!text.contains(&handle));
        let v = answer(&text);
        assert_eq!(v["revoked"]["session"], tag.as_str());
        assert_eq!(v["revoked"]["sub"], "alice");
        let b = binding();
        assert!(revocations.session_revoked(&tag, &b.sub, &b.task, b.issued_at));
    }

    #[test]
    fn handle_that_does_not_open_is_still_revoked_by_tag() {
        let mut revocations = Revocations::default();
        let text = apply(&mut revocations, &RevokeOrder::Session("garbage".into()), NOW, &keys(), &TAG_KEY);
        assert_eq!(answer(&text)["revoked"]["opened"], false);
        assert!(revocations.session_revoked(&session_tag(&TAG_KEY, "garbage"), "x", "y", NOW));
    }

    #[test]
    fn revoke_task_answers_with_the_task() {
        let mut revocations = Revocations::default();
        let text = apply(&mut revocations, &RevokeOrder::Task("t-1".into()), NOW, &keys(), &TAG_KEY);
        assert_eq!(answer(&text), serde_json::json!({"revoked": {"task": "t-1", "at": NOW}}));
        assert!(revocations.task_revoked("anyone", "t-1", NOW + 100));
    }

    #[test]
    fn revoke_subject_revokes_sessions_issued_before() {
        let mut revocations = Revocations::default();
        let order = parse_revoke_request(br#"{"subject":"alice"}"#, NOW).unwrap();
        let text = apply(&mut revocations, &order, NOW, &keys(), &TAG_KEY);
        assert_eq!(answer(&text), serde_json::json!({"revoked": {"subject": "alice", "before": NOW}}));
        assert!(revocations.session_revoked("tag", "alice", "t", NOW - 1));
        assert!(revocations.session_revoked("tag", "alice", "t", NOW), "same second fails closed");
        assert!(!revocations.session_revoked("tag", "alice", "t", NOW + 1));
        assert!(!revocations.session_revoked("tag", "bob", "t", NOW - 1));
    }

    #[test]
    fn revoking_a_subject_again_keeps_the_later_time() {
        let mut revocations = Revocations::default();
        revocations.revoke_subject("alice", NOW);
        revocations.revoke_subject("alice", NOW - 50);
        assert!(revocations.task_revoked("alice", "t", NOW));
    }

    #[test]
    fn full_table_drops_the_oldest_entry() {
        let mut revocations = Revocations::default();
        for i in 0..MAX_PER_KIND as u64 {
            revocations.revoke_task(&format!("t{i}"), NOW + i);
        }
        revocations.revoke_task("newest", NOW + 5_000);
        assert_eq!(revocations.len(), MAX_PER_KIND);
        assert!(!revocations.task_revoked("a", "t0", NOW));
        assert!(revocations.task_revoked("a", "t1", NOW));
        assert!(revocations.task_revoked("a", "newest", NOW));
    }

    #[test]
    fn prune_drops_entries_older_than_the_horizon() {
        let mut revocations = Revocations::default();
        revocations.revoke_session("old", NOW - 28_800);
        revocations.revoke_session("recent", NOW - 28_799);
        revocations.prune(NOW, 28_800);
        assert!(!revocations.session_revoked("old", "a", "t", NOW));
        assert!(revocations.session_revoked("recent", "a", "t", NOW));
    }

    #[test]
    fn revocations_round_trip_through_bytes() {
        let mut revocations = Revocations::default();
        revocations.revoke_session("AbCdEfGhIjKl", NOW);
        revocations.revoke_task("t-1", NOW);
        revocations.revoke_subject("alice", NOW);
        let bytes = revocations.encode();
        assert_eq!(Revocations::decode(&bytes), Ok(revocations));
        assert_eq!(bytes.len(), 1 + 3 + (1 + 12 + 5) + (1 + 3 + 5) + (1 + 5 + 5));
    }

    #[test]
    fn empty_bytes_are_an_empty_table() {
        assert_eq!(Revocations::decode(b""), Ok(Revocations::default()));
        assert_eq!(Revocations::default().encode(), vec![1, 0, 0, 0]);
    }

    #[test]
    fn corrupt_or_oversized_table_bytes_are_refused() {
        let mut bytes = Revocations::default().encode();
        bytes.push(0);
        assert!(Revocations::decode(&bytes).is_err());
        assert!(Revocations::decode(&[2, 0, 0, 0]).is_err());
        let mut too_many = vec![1];
        wire::put_u64(&mut too_many, MAX_PER_KIND as u64 + 1);
        assert!(Revocations::decode(&too_many).is_err());
    }

    #[test]
    fn full_table_size_is_bounded() {
        let mut revocations = Revocations::default();
        for i in 0..2 * MAX_PER_KIND as u64 {
            revocations.revoke_session(&format!("{i:012}"), NOW + i);
            revocations.revoke_task(&format!("{i:064}"), NOW + i);
            revocations.revoke_subject(&format!("{i:0255}"), NOW + i);
        }
        let bytes = revocations.encode().len();
        assert!(bytes <= 1 + 3 * 2 + MAX_PER_KIND * ((1 + 12 + 5) + (1 + 64 + 5) + (2 + 255 + 5)), "{bytes}");
    }
}
