//! A bounded cache of entries that expire (verified and minted tokens), and a bounded memo of
//! pure functions of a string (task affinities, opened session handles).

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

/// An entry that stops being usable at `exp` (unix seconds).
pub trait Expiring {
    fn exp(&self) -> u64;
}

impl<T: Expiring> Expiring for std::rc::Rc<T> {
    fn exp(&self) -> u64 {
        (**self).exp()
    }
}

/// Bounded by `capacity`; never returns an entry the caller's predicate rejects.
pub struct ExpiringCache<K, V, S = RandomState> {
    entries: HashMap<K, V, S>,
    capacity: usize,
    pub hits: u64,
    pub misses: u64,
}

impl<K: Hash + Eq, V: Expiring + Clone, S: BuildHasher + Default> ExpiringCache<K, V, S> {
    pub fn new(capacity: usize) -> Self {
        ExpiringCache { entries: HashMap::default(), capacity, hits: 0, misses: 0 }
    }

    /// The entry under `key` if `usable` accepts it; counts a hit or a miss.
    pub fn get<Q: Hash + Eq + ?Sized>(&mut self, key: &Q, usable: impl Fn(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let hit = self.entries.get(key).filter(|v| usable(v)).cloned();
        if hit.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        hit
    }

    /// Stores an entry; when full, expired entries go first, then everything: a re-verify or
    /// re-mint is the only cost, and memory stays bounded without tracking recency.
    pub fn put(&mut self, key: K, value: V, now: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, v| v.exp() > now);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Hashes only the last 32 bytes of each write, with a random key: for keys that are long and
/// end in high-entropy bytes (a JWT ends in its signature), a lookup hashes 32 bytes instead of
/// hundreds. Equality still compares whole keys, so this only chooses the bucket.
#[derive(Default, Clone)]
pub struct TailHash(RandomState);

pub struct TailHasher(DefaultHasher);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(&bytes[bytes.len().saturating_sub(32)..]);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// Results of a pure, costly function of a string, remembered by one worker. Bounded by
/// `capacity`: when full it starts over, since recomputing is the only cost. Failures are not
/// remembered, so a forged input pays every time and cannot fill the memo.
pub struct Memo<V> {
    entries: RefCell<HashMap<Box<str>, V>>,
    capacity: usize,
}

impl<V: Clone> Memo<V> {
    pub fn new(capacity: usize) -> Self {
        Memo { entries: RefCell::new(HashMap::new()), capacity }
    }

    /// The remembered result for `key`, computing it when there is none.
    pub fn get_or(&self, key: &str, compute: impl FnOnce() -> V) -> V {
        let computed: Result<V, std::convert::Infallible> = self.get_or_try(key, || Ok(compute()));
        computed.unwrap_or_else(|never| match never {})
    }

    /// As [`Memo::get_or`], for a computation that can fail: failures are not remembered.
    pub fn get_or_try<E>(&self, key: &str, compute: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        if let Some(v) = self.entries.borrow().get(key) {
            return Ok(v.clone());
        }
        let v = compute()?;
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key.into(), v.clone());
        Ok(v)
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct E(u64);
    impl Expiring for E {
        fn exp(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn full_cache_drops_expired_entries_first_and_stays_bounded() {
        let mut c: ExpiringCache<_, _> = ExpiringCache::new(2);
        c.put([1; 32], E(10), 0);
        c.put([2; 32], E(100), 0);
        c.put([3; 32], E(100), 50);
        assert_eq!(c.len(), 2, "the expired entry made room");
        assert!(c.get(&[1; 32], |_| true).is_none());
        for n in 4..20 {
            c.put([n; 32], E(100), 50);
        }
        assert!(c.len() <= 2);
    }

    #[test]
    fn rejected_entries_count_as_misses() {
        let mut c: ExpiringCache<_, _> = ExpiringCache::new(4);
        c.put([1; 32], E(10), 0);
        assert!(c.get(&[1; 32], |e| e.0 > 20).is_none());
        assert!(c.get(&[1; 32], |e| e.0 > 5).is_some());
        assert_eq!((c.hits, c.misses), (1, 1));
    }

    #[test]
    fn memo_computes_once_forgets_failures_and_stays_bounded() {
        let memo = Memo::new(2);
        let calls = std::cell::Cell::new(0);
        let upper = |k: &str| {
            calls.set(calls.get() + 1);
            if k.is_empty() { Err("empty") } else { Ok(k.to_uppercase()) }
        };
        assert_eq!(memo.get_or_try("a", || upper("a")), Ok("A".to_string()));
        assert_eq!(memo.get_or_try("a", || upper("a")), Ok("A".to_string()));
        assert_eq!(calls.get(), 1);
        assert_eq!(memo.get_or_try("", || upper("")), Err("empty"));
        assert_eq!(memo.get_or_try("", || upper("")), Err("empty"));
        assert_eq!((calls.get(), memo.len()), (3, 1));
        for k in ["b", "c", "d"] {
            memo.get_or_try(k, || upper(k)).unwrap();
        }
        assert!(memo.len() <= 2);
    }

    #[test]
    fn keys_sharing_their_hashed_end_stay_distinct() {
        let mut c: ExpiringCache<Box<str>, E, TailHash> = ExpiringCache::new(8);
        let end = "s".repeat(40);
        c.put(format!("a{end}").into(), E(1), 0);
        c.put(format!("b{end}").into(), E(2), 0);
        assert_eq!(c.get(format!("a{end}").as_str(), |_| true).map(|e| e.0), Some(1));
        assert_eq!(c.get(format!("b{end}").as_str(), |_| true).map(|e| e.0), Some(2));
        assert!(c.get(format!("c{end}").as_str(), |_| true).is_none());
        assert!(c.get(end.as_str(), |_| true).is_none());
    }
}
