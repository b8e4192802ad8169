//! What the core needs from its host besides the request: time and randomness.
//!
//! Behind a trait so the pipeline runs natively in tests with a fixed clock.

/// The host's clock and random source.
pub trait Host {
    /// Unix time in seconds.
    fn now(&self) -> u64;
    /// 16 random bytes (token ids, fresh task ids, session nonces).
    fn random16(&self) -> [u8; 16];
    /// Reads a shared-data value (visible to every worker of this Envoy) and its version.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, u32);
    /// Writes a shared-data value if its version is still `cas` (`None`: unconditionally).
    /// Returns false when another worker wrote first.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
    /// A fresh random identifier (URL-safe, 22 characters).
    fn random_id(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.random16())
    }
}

#[cfg(test)]
pub mod test_host {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// A fixed clock, a counter for randomness and an in-memory shared-data store.
    pub struct FixedHost {
        pub now: Cell<u64>,
        pub counter: Cell<u8>,
        pub shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    }

    impl FixedHost {
        pub fn at(now: u64) -> Self {
            FixedHost { now: Cell::new(now), counter: Cell::new(0), shared: RefCell::new(HashMap::new()) }
        }
    }

    impl super::Host for FixedHost {
        fn now(&self) -> u64 {
            self.now.get()
        }
        fn random16(&self) -> [u8; 16] {
            self.counter.set(self.counter.get().wrapping_add(1));
            [self.counter.get(); 16]
        }
        fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
            match self.shared.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), *cas),
                None => (None, 0),
            }
        }
        fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            let mut map = self.shared.borrow_mut();
            let current = map.get(key).map_or(0, |(_, c)| *c);
            if cas.is_some_and(|c| c != current) {
                return false;
            }
            map.insert(key.to_string(), (value.to_vec(), current + 1));
            true
        }
    }
}
