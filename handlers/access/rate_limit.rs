//! Request rate limits per key (a client identity, a source address), as the generic cell
//! rate algorithm: each key may make `limit` requests per minute, in a burst of up to
//! `limit`, and is told how long to wait when over. The clock is passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The window limits are expressed over. Operators think in requests per minute, and a
/// device script that retries a few times a minute stays well within a per-minute quota.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Requests per minute, per identity and per source address; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub per_identity: Option<u32>,
    pub per_address: Option<u32>,
}

/// How many keys are remembered. Each costs a few dozen bytes; 100 000 covers every
/// device of a large fleet. When full, keys whose quota has fully refilled are dropped
/// (they behave exactly like unseen keys); if that frees nothing, a key not yet tracked
/// is limited until some quota refills. Forgetting tracked keys instead would let a
/// client that cycles through addresses reset everyone's limits.
pub(crate) const MAX_TRACKED_KEYS: usize = 100_000;

/// A limiter; `None` limit means unlimited.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    /// The spacing between requests at the sustained rate.
    interval: Option<chrono::Duration>,
    /// How far ahead of now a key's schedule may run: the burst.
    tolerance: chrono::Duration,
    /// Each key's theoretical arrival time: when its quota is next fully refilled.
    state: Mutex<HashMap<K, DateTime<Utc>>>,
    /// How many keys `state` may hold: [`MAX_TRACKED_KEYS`] outside tests.
    capacity: usize,
}

/// The request is over the limit; retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for `Retry-After`, rounded up, at least one.
    pub(crate) fn retry_after_seconds(&self) -> u64 {
        let seconds = self.retry_after.as_secs();
        let rounded = if self.retry_after.subsec_nanos() > 0 {
            seconds + 1
        } else {
            seconds
        };
        rounded.max(1)
    }
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// `per_minute` requests per [`WINDOW`]; `None` or 0 disables the limit.
    pub(crate) fn per_minute(per_minute: Option<u32>) -> Self {
        Self::with_capacity(per_minute, MAX_TRACKED_KEYS)
    }

    /// As [`Self::per_minute`], remembering at most `capacity` keys.
    fn with_capacity(per_minute: Option<u32>, capacity: usize) -> Self {
        let window = chrono::Duration::from_std(WINDOW).expect("a minute fits a chrono duration");
        // Beyond i32::MAX requests a minute the interval is below a nanosecond anyway:
        // clamping keeps the division positive instead of wrapping to a negative interval.
        let interval = per_minute
            .filter(|n| *n > 0)
            .map(|n| window / i32::try_from(n).unwrap_or(i32::MAX));
        Self {
            interval,
            tolerance: window,
            state: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    #[cfg(test)]
    pub(crate) fn is_enabled(&self) -> bool {
        self.interval.is_some()
    }

    /// Counts one request by `key` at `now`, or says how long to wait.
    pub(crate) fn check(&self, key: K, now: DateTime<Utc>) -> Result<(), Limited> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        // The map holds plain timestamps: a poisoned lock cannot hold a torn value.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.len() >= self.capacity && !state.contains_key(&key) {
            state.retain(|_, tat| *tat > now);
            if state.len() >= self.capacity {
                // Every tracked key is still spending its quota: the soonest refill frees
                // a place.
                let soonest = state.values().min().copied().unwrap_or(now);
                let wait = (soonest - now).to_std().unwrap_or(Duration::from_secs(1));
                return Err(Limited { retry_after: wait });
            }
        }
        let tat = state.get(&key).copied().unwrap_or(now).max(now);
        let next = tat + interval;
        if next - now > self.tolerance {
            let wait = (next - now - self.tolerance)
                .to_std()
                .unwrap_or(Duration::from_secs(1));
            return Err(Limited { retry_after: wait });
        }
        state.insert(key, next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("in range")
    }

    #[test]
    fn a_burst_up_to_the_limit_passes_and_the_next_request_waits() {
        let limiter = RateLimiter::per_minute(Some(3));
        for _ in 0..3 {
            assert!(limiter.check("device", at(0)).is_ok());
        }
        let limited = limiter.check("device", at(0)).expect_err("over the limit");
        assert_eq!(limited.retry_after, Duration::from_secs(20));
        assert_eq!(limited.retry_after_seconds(), 20);
    }

    #[test]
    fn quota_refills_at_the_sustained_rate() {
        let limiter = RateLimiter::per_minute(Some(3));
        for _ in 0..3 {
            limiter.check("device", at(0)).expect("within burst");
        }
        assert!(limiter.check("device", at(19)).is_err());
        assert!(limiter.check("device", at(20)).is_ok());
        assert!(limiter.check("device", at(20)).is_err());
    }

    #[test]
    fn a_limit_beyond_i32_still_limits_forward_in_time() {
        let limiter = RateLimiter::per_minute(Some(u32::MAX));
        assert!(limiter.is_enabled());
        for _ in 0..1000 {
            assert!(
                limiter.check("a", at(0)).is_ok(),
                "a huge limit admits a burst"
            );
        }
    }

    #[test]
    fn keys_are_limited_separately() {
        let limiter = RateLimiter::per_minute(Some(1));
        assert!(limiter.check("a", at(0)).is_ok());
        assert!(limiter.check("a", at(0)).is_err());
        assert!(limiter.check("b", at(0)).is_ok());
    }

    #[test]
    fn no_limit_or_zero_lets_everything_through() {
        for limit in [None, Some(0)] {
            let limiter = RateLimiter::per_minute(limit);
            assert!(!limiter.is_enabled());
            for _ in 0..1000 {
                assert!(limiter.check("a", at(0)).is_ok());
            }
        }
    }

    #[test]
    fn a_full_table_limits_new_keys_instead_of_forgetting_tracked_ones() {
        let limiter = RateLimiter::with_capacity(Some(1), 2);
        assert!(limiter.check("a", at(0)).is_ok());
        assert!(limiter.check("b", at(0)).is_ok());
        let limited = limiter
            .check("c", at(0))
            .expect_err("no room for a new key");
        assert_eq!(limited.retry_after, Duration::from_secs(60));
        assert!(
            limiter.check("a", at(0)).is_err(),
            "a new key does not reset a tracked key's limit"
        );
    }

    #[test]
    fn a_full_table_makes_room_by_dropping_keys_whose_quota_refilled() {
        let limiter = RateLimiter::with_capacity(Some(1), 2);
        assert!(limiter.check("a", at(0)).is_ok());
        assert!(limiter.check("b", at(30)).is_ok());
        assert!(limiter.check("c", at(60)).is_ok(), "a's quota has refilled");
        assert!(limiter.check("b", at(60)).is_err(), "b is still tracked");
    }

    #[test]
    fn a_fraction_of_a_second_rounds_up_to_a_whole_one() {
        let limited = Limited {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(limited.retry_after_seconds(), 2);
        let tiny = Limited {
            retry_after: Duration::from_millis(1),
        };
        assert_eq!(tiny.retry_after_seconds(), 1);
    }
}
