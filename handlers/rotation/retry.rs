//! Retrying transient port failures within one invocation (inside the message lock):
//! `Retry-After` is honoured when the service sent it, jittered exponential backoff is
//! used when it did not, and everything stops at the invocation's deadline so the host
//! can fail the invocation and let Service Bus redeliver.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::ports::{FailureKind, PortError};
use crate::rotation::Engine;

/// Attempts per call. Six attempts with backoff doubling from half a second span about
/// half a minute without Retry-After: long enough to ride out a Graph or Key Vault
/// throttling window (Graph's are measured in seconds to tens of seconds), short enough
/// that a real outage fails the invocation and lets Service Bus redeliver later.
pub const MAX_ATTEMPTS: u32 = 6;

/// First backoff step when the service gave no `Retry-After`.
pub(crate) const BASE_BACKOFF: Duration = Duration::from_millis(500);

/// Largest single backoff without `Retry-After`.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// One invocation's working time. The host's `functionTimeout` is ten minutes and it
/// renews the session lock up to `maxAutoLockRenewalDuration` (ten minutes, host.json);
/// eight minutes leaves two for the audit writes and the answer, so the invocation ends
/// on keyturn's terms rather than the host's.
pub(crate) const INVOCATION_BUDGET: Duration = Duration::from_secs(8 * 60);

/// When an invocation must stop retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline(pub DateTime<Utc>);

impl Deadline {
    pub(crate) fn after(now: DateTime<Utc>, budget: Duration) -> Self {
        let budget = chrono::Duration::from_std(budget).unwrap_or(chrono::Duration::MAX);
        Self(
            now.checked_add_signed(budget)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    /// Whether waiting `wait` from `now` would pass the deadline.
    pub(crate) fn would_pass(&self, now: DateTime<Utc>, wait: Duration) -> bool {
        let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        now.checked_add_signed(wait).is_none_or(|t| t > self.0)
    }
}

/// The wait before attempt `attempt + 1` without `Retry-After`: "equal jitter" (a uniform
/// draw between half and all of the exponential step), which spreads many workers
/// throttled at once while still backing off.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let step = BASE_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_BACKOFF);
    let millis = u64::try_from(step.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::thread_rng().gen_range(millis / 2..=millis))
}

/// Runs `op` until it succeeds, fails for good, or retrying would pass `deadline`.
pub(crate) async fn retrying<T, F, Fut>(
    engine: &Engine,
    deadline: Deadline,
    step: &str,
    mut op: F,
) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let mut attempt = 1;
    loop {
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let FailureKind::Transient { retry_after } = error.kind else {
            return Err(error);
        };
        let wait = retry_after.unwrap_or_else(|| backoff(attempt));
        if attempt >= MAX_ATTEMPTS || deadline.would_pass(engine.clock().now(), wait) {
            tracing::warn!(
                step,
                attempt,
                "transient failure; giving the message back for redelivery"
            );
            return Err(error);
        }
        tracing::info!(
            step,
            attempt,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            honouring_retry_after = retry_after.is_some(),
            "transient failure; retrying within the message lock"
        );
        engine.pause(wait).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        for attempt in 1..=20 {
            let wait = backoff(attempt);
            assert!(wait <= MAX_BACKOFF, "attempt {attempt}: {wait:?}");
            assert!(wait >= BASE_BACKOFF / 2, "attempt {attempt}: {wait:?}");
        }
        assert!(backoff(1) <= BASE_BACKOFF);
        assert!(backoff(10) >= MAX_BACKOFF / 2);
    }

    #[test]
    fn a_deadline_refuses_a_wait_that_would_pass_it() {
        let now = DateTime::<Utc>::from_timestamp(1_900_000_000, 0).expect("time");
        let deadline = Deadline::after(now, Duration::from_secs(60));
        assert!(!deadline.would_pass(now, Duration::from_secs(60)));
        assert!(deadline.would_pass(now, Duration::from_secs(61)));
    }
}
