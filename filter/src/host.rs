//! What the core needs from its host besides the request: time and randomness.
//!
//! Behind a trait so the pipeline runs natively in tests with a fixed clock.

/// The host's clock and random source.
pub trait Host {
    /// Unix time in seconds.
    fn now(&self) -> u64;
    /// 16 random bytes (token ids, fresh task ids, session nonces).
    fn random16(&self) -> [u8; 16];
    /// A fresh random identifier (URL-safe, 22 characters).
    fn random_id(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.random16())
    }
}

#[cfg(test)]
pub mod test_host {
    use std::cell::Cell;

    /// A fixed clock and a counter for randomness.
    pub struct FixedHost {
        pub now: Cell<u64>,
        pub counter: Cell<u8>,
    }

    impl FixedHost {
        pub fn at(now: u64) -> Self {
            FixedHost { now: Cell::new(now), counter: Cell::new(0) }
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
    }
}
