//! The bounded store of use records in proxy-wasm shared data.
//!
//! proxy-wasm cannot delete a shared-data key, so one key per task or session would grow without
//! bound. Records live instead in a fixed number of buckets (`SLOTS` keys per kind), each holding
//! up to `PER_BUCKET` records. A full bucket drops a record whose binding ended long ago first
//! (it is "sweepable"), and only then the least recently used one; memory stays bounded at about
//! `SLOTS × PER_BUCKET × 33` bytes per kind whatever the traffic.

use super::tasks::{Usage, USAGE_BYTES};
use super::Limits;

/// Buckets per kind (tasks, sessions).
pub const SLOTS: usize = 1 << 16;
/// Records per bucket.
pub const PER_BUCKET: usize = 8;
const ID_BYTES: usize = 16;
const ENTRY_BYTES: usize = ID_BYTES + USAGE_BYTES;

/// A record's identity in the table: 16 bytes of a hash of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordId([u8; ID_BYTES]);

impl RecordId {
    /// The id of a record named by a keyed hash (a task affinity, a session tag): those are
    /// already uniform, so their own bytes serve, without hashing them again.
    pub fn of(name: &str) -> RecordId {
        use base64::Engine;
        let mut id = [0u8; ID_BYTES];
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(name) {
            Ok(bytes) if bytes.len() >= 8 => {
                let n = bytes.len().min(ID_BYTES);
                id[..n].copy_from_slice(&bytes[..n]);
            }
            _ => id.copy_from_slice(&hmac_sha256::Hash::hash(name.as_bytes())[..ID_BYTES]),
        }
        RecordId(id)
    }

    /// The shared-data key of this record's bucket, e.g. `mcpgw:task:1a2b`.
    pub fn bucket_key(&self, kind: &str) -> String {
        let slot = usize::from(u16::from_le_bytes([self.0[0], self.0[1]])) % SLOTS;
        format!("mcpgw:{kind}:{slot:04x}")
    }
}

/// The record of `id` in a bucket's bytes.
pub fn find(bucket: &[u8], id: &RecordId) -> Option<Usage> {
    bucket.chunks_exact(ENTRY_BYTES).find(|e| e[..ID_BYTES] == id.0).and_then(|e| Usage::decode(&e[ID_BYTES..]))
}

/// The bucket's bytes with `id`'s record set to `usage`, evicting if the bucket is full.
pub fn upsert(bucket: &[u8], id: &RecordId, usage: Usage, now: u64, limits: &Limits) -> Vec<u8> {
    let mut entries: Vec<(RecordId, Usage)> = bucket
        .chunks_exact(ENTRY_BYTES)
        .filter_map(|e| Some((RecordId(e[..ID_BYTES].try_into().ok()?), Usage::decode(&e[ID_BYTES..])?)))
        .filter(|(other, _)| other != id)
        .collect();
    if entries.len() >= PER_BUCKET {
        let victim = entries
            .iter()
            .position(|(_, u)| u.sweepable(now, limits))
            .or_else(|| entries.iter().enumerate().min_by_key(|(_, (_, u))| u.last).map(|(i, _)| i));
        if let Some(i) = victim {
            entries.swap_remove(i);
        }
    }
    entries.push((*id, usage));
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for (rid, u) in entries {
        out.extend_from_slice(&rid.0);
        out.extend_from_slice(&u.encode());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { idle_secs: 60, absolute_secs: 600 };

    #[test]
    fn records_are_found_and_updated_in_place() {
        let a = RecordId::of("task-a");
        let b = RecordId::of("task-b");
        let bucket = upsert(&[], &a, Usage::new(100), 100, &LIMITS);
        let bucket = upsert(&bucket, &b, Usage::new(105), 105, &LIMITS);
        let bucket = upsert(&bucket, &a, Usage::new(100).touched(110), 110, &LIMITS);
        assert_eq!(find(&bucket, &a), Some(Usage { first: 100, last: 110, ended: false }));
        assert_eq!(find(&bucket, &b), Some(Usage::new(105)));
        assert_eq!(bucket.len(), 2 * ENTRY_BYTES);
    }

    #[test]
    fn a_full_bucket_drops_long_ended_records_before_live_ones() {
        let mut bucket = Vec::new();
        let old = RecordId::of("old");
        bucket = upsert(&bucket, &old, Usage::new(0), 0, &LIMITS);
        for i in 1..PER_BUCKET {
            bucket = upsert(&bucket, &RecordId::of(&format!("live-{i}")), Usage::new(900), 900, &LIMITS);
        }
        bucket = upsert(&bucket, &RecordId::of("new"), Usage::new(1000), 1000, &LIMITS);
        assert_eq!(bucket.len(), PER_BUCKET * ENTRY_BYTES, "bounded");
        assert_eq!(find(&bucket, &old), None, "the sweepable record went");
        assert!(find(&bucket, &RecordId::of("live-1")).is_some());
    }

    #[test]
    fn keys_spread_over_a_fixed_number_of_buckets() {
        let key = RecordId::of("x").bucket_key("task");
        assert!(key.starts_with("mcpgw:task:") && key.len() == "mcpgw:task:".len() + 4);
    }
}
