//! In-process token buckets guarding the public shopper pages, one bucket per key
//! (a client IP, a plate). Integer arithmetic only: a full bucket of `n` requests
//! per minute holds `n * 60_000` units and refills `n` units per millisecond.
//! Keys beyond `entries` are forgotten least-recently-seen first, so memory stays
//! bounded whatever a client sends. Must never: touch the store or a wallet (it runs
//! before either, so excess requests cost nothing downstream).

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

const UNITS_PER_REQUEST: u64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: u64,
    at_ms: i64,
}

pub struct RateLimiter<K: Hash + Eq> {
    per_minute: u64,
    buckets: Mutex<LruCache<K, Bucket>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    pub fn new(per_minute: u32, entries: usize) -> RateLimiter<K> {
        let entries = NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        RateLimiter {
            per_minute: u64::from(per_minute.max(1)),
            buckets: Mutex::new(LruCache::new(entries)),
        }
    }

    /// Takes one request from `key`'s bucket at `now_ms`; false when it is empty.
    pub fn allow(&self, key: K, now_ms: i64) -> bool {
        let capacity = self.per_minute * UNITS_PER_REQUEST;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.get_or_insert_mut(key, || Bucket {
            units: capacity,
            at_ms: now_ms,
        });
        let elapsed = u64::try_from(now_ms.saturating_sub(bucket.at_ms)).unwrap_or(0);
        bucket.units = bucket
            .units
            .saturating_add(elapsed.saturating_mul(self.per_minute))
            .min(capacity);
        bucket.at_ms = bucket.at_ms.max(now_ms);
        if bucket.units < UNITS_PER_REQUEST {
            return false;
        }
        bucket.units -= UNITS_PER_REQUEST;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_minute_rate_passes_then_the_next_is_refused() {
        let limiter = RateLimiter::new(3, 10);
        assert!((0..3).all(|_| limiter.allow("a", 1_000)));
        assert!(!limiter.allow("a", 1_000));
        assert!(
            limiter.allow("b", 1_000),
            "other keys have their own bucket"
        );
    }

    #[test]
    fn buckets_refill_at_the_rate_per_minute() {
        let limiter = RateLimiter::new(6, 10);
        assert!((0..6).all(|_| limiter.allow(1u8, 0)));
        assert!(!limiter.allow(1, 9_999), "one request per 10 s");
        assert!(limiter.allow(1, 10_000));
        assert!(!limiter.allow(1, 10_001));
        assert!(
            (0..6).all(|_| limiter.allow(1, 10_000_000)),
            "refill caps at the burst"
        );
        assert!(!limiter.allow(1, 10_000_000));
    }

    #[test]
    fn forgotten_keys_start_full_and_memory_stays_bounded() {
        let limiter = RateLimiter::new(1, 2);
        assert!(limiter.allow(1u32, 0));
        for k in 2..100u32 {
            limiter.allow(k, 0);
        }
        assert!(limiter.allow(1, 0));
        assert_eq!(limiter.buckets.lock().unwrap().len(), 2);
    }
}
