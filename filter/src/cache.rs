//! A bounded cache of entries that expire; shared by the verified-token and minted-token caches.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// An entry that stops being usable at `exp` (unix seconds).
pub trait Expiring {
    fn exp(&self) -> u64;
}

/// Bounded by `capacity`; never returns an entry the caller's predicate rejects.
pub struct ExpiringCache<K, V> {
    entries: HashMap<K, V>,
    capacity: usize,
    pub hits: u64,
    pub misses: u64,
}

impl<K: Hash + Eq, V: Expiring + Clone> ExpiringCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        ExpiringCache { entries: HashMap::new(), capacity, hits: 0, misses: 0 }
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
        let mut c = ExpiringCache::new(2);
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
        let mut c = ExpiringCache::new(4);
        c.put([1; 32], E(10), 0);
        assert!(c.get(&[1; 32], |e| e.0 > 20).is_none());
        assert!(c.get(&[1; 32], |e| e.0 > 5).is_some());
        assert_eq!((c.hits, c.misses), (1, 1));
    }
}
