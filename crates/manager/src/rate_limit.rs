//! Token buckets: how often a peer may do something, as a pure rule over the `now` the caller
//! passes in. The dispatcher bounds each session's status reports and log output with them,
//! and the CA each source address's join attempts.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A rate: `per_second` on average, with bursts of up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rate {
    pub(crate) per_second: f64,
    pub(crate) burst: f64,
}

/// Holds up to `rate.burst` tokens and gains `rate.per_second` a second; each act takes some.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: Rate,
    tokens: f64,
    last_refill: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: rate.burst,
            last_refill: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        self.last_refill = self.last_refill.max(now);
    }

    /// Takes `amount` tokens if the bucket holds them; otherwise takes none and says how long
    /// until it will. An amount larger than the burst can never be taken: that wait is
    /// `Duration::MAX`.
    pub(crate) fn take(&mut self, amount: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if amount <= self.tokens {
            self.tokens -= amount;
            return Ok(());
        }
        if amount > self.rate.burst || self.rate.per_second <= 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::from_secs_f64(
            (amount - self.tokens) / self.rate.per_second,
        ))
    }

    /// True once the bucket is full again, so forgetting it changes nothing.
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.rate.burst
    }
}

/// One bucket per source (such as a peer's address). Buckets that have filled up again are
/// forgotten once more than `max_sources` are kept, so many sources can't grow it without bound;
/// when every kept source is still limited, a new source is refused until one fills up.
#[derive(Debug)]
pub(crate) struct PerSourceLimiter<K> {
    rate: Rate,
    max_sources: usize,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Eq + Hash + Clone> PerSourceLimiter<K> {
    pub(crate) fn new(rate: Rate, max_sources: usize) -> Self {
        PerSourceLimiter {
            rate,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from `source`'s bucket; `Err` says how long it must wait.
    pub(crate) fn take(&mut self, source: &K, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(source) && self.buckets.len() >= self.max_sources {
            self.buckets.retain(|_, bucket| !bucket.is_full(now));
            if self.buckets.len() >= self.max_sources {
                return Err(Duration::from_secs_f64(
                    1.0 / self.rate.per_second.max(1e-9),
                ));
            }
        }
        let rate = self.rate;
        self.buckets
            .entry(source.clone())
            .or_insert_with(|| TokenBucket::new(rate, now))
            .take(1.0, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_A_SECOND_BURST_TWENTY: Rate = Rate {
        per_second: 10.0,
        burst: 20.0,
    };

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(TEN_A_SECOND_BURST_TWENTY, start);
        for _ in 0..20 {
            assert_eq!(bucket.take(1.0, start), Ok(()));
        }
        assert_eq!(bucket.take(1.0, start), Err(Duration::from_millis(100)));
        // Half a second later, five more.
        let later = start + Duration::from_millis(500);
        for _ in 0..5 {
            assert_eq!(bucket.take(1.0, later), Ok(()));
        }
        assert!(bucket.take(1.0, later).is_err());
        // A long pause refills it to the burst, no further.
        let much_later = later + Duration::from_secs(3600);
        assert_eq!(bucket.take(20.0, much_later), Ok(()));
        assert!(bucket.take(1.0, much_later).is_err());
    }

    #[test]
    fn more_than_the_burst_at_once_is_never_allowed() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(TEN_A_SECOND_BURST_TWENTY, start);
        assert_eq!(bucket.take(21.0, start), Err(Duration::MAX));
        // And nothing was taken.
        assert_eq!(bucket.take(20.0, start), Ok(()));
    }

    #[test]
    fn each_source_has_its_own_bucket() {
        let start = Instant::now();
        let mut limiter = PerSourceLimiter::new(TEN_A_SECOND_BURST_TWENTY, 100);
        for _ in 0..20 {
            assert_eq!(limiter.take(&"10.0.0.1", start), Ok(()));
        }
        assert!(limiter.take(&"10.0.0.1", start).is_err());
        assert_eq!(limiter.take(&"10.0.0.2", start), Ok(()));
    }

    #[test]
    fn many_sources_cannot_grow_the_limiter_without_bound() {
        let start = Instant::now();
        let mut limiter = PerSourceLimiter::new(TEN_A_SECOND_BURST_TWENTY, 2);
        assert_eq!(limiter.take(&1, start), Ok(()));
        assert_eq!(limiter.take(&2, start), Ok(()));
        // Both kept sources are still limited: a third waits.
        assert!(limiter.take(&3, start).is_err());
        assert_eq!(limiter.buckets.len(), 2);
        // Once they have refilled they are forgotten and make room.
        let later = start + Duration::from_secs(1);
        assert_eq!(limiter.take(&3, later), Ok(()));
        assert_eq!(limiter.buckets.len(), 1);
    }
}
