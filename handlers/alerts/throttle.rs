//! Honouring a channel's `Retry-After`. Teams Workflows and Slack answer 429 with the
//! seconds to wait when a channel is posted to too fast (Slack: about one message per
//! second per channel). [`Throttled`] wraps a route's notifier: after such an answer it
//! sends nothing on that route until the wait is over, waits a short one out and tries
//! again, and turns a long one into a failure the next run retries, without asking the
//! receiver again in this run.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::domain::contact::MailAddress;
use crate::ports::notify::{Notice, Notifier};
use crate::ports::{FailureKind, PortError};

/// Longest `Retry-After` waited out inside a run. Slack asks for a second or so; ten
/// seconds covers a burst without holding an invocation for minutes (a longer wait is
/// left to the next run, which the ledger makes safe).
pub const MAX_INLINE_WAIT: Duration = Duration::from_secs(10);

/// Tries of one notice on a channel that keeps answering 429 with a short wait.
pub const MAX_TRIES: u32 = 3;

/// A notifier that honours its receiver's `Retry-After`.
#[derive(Debug)]
pub struct Throttled {
    inner: Arc<dyn Notifier>,
    /// Until when the receiver asked not to be posted to.
    quiet_until: Mutex<Option<Instant>>,
    max_wait: Duration,
}

impl Throttled {
    pub fn new(inner: Arc<dyn Notifier>) -> Self {
        Self::with_max_wait(inner, MAX_INLINE_WAIT)
    }

    /// With `max_wait` in place of [`MAX_INLINE_WAIT`].
    pub fn with_max_wait(inner: Arc<dyn Notifier>, max_wait: Duration) -> Self {
        Self {
            inner,
            quiet_until: Mutex::new(None),
            max_wait,
        }
    }

    fn deferred(&self, wait: Duration) -> PortError {
        PortError::new(
            FailureKind::Transient {
                retry_after: Some(wait),
            },
            format!(
                "channel {} asked to wait {} s before the next post; the next run sends this notice",
                self.inner.channel(),
                wait.as_secs().max(1)
            ),
        )
    }
}

#[async_trait]
impl Notifier for Throttled {
    fn channel(&self) -> &str {
        self.inner.channel()
    }

    async fn notify(&self, notice: &Notice, people: &[MailAddress]) -> Result<(), PortError> {
        // One post at a time per channel: a receiver that rate-limits sees no burst.
        let mut quiet_until = self.quiet_until.lock().await;
        let mut tries = 0;
        loop {
            if let Some(until) = *quiet_until {
                let wait = until.saturating_duration_since(Instant::now());
                if wait > self.max_wait {
                    return Err(self.deferred(wait));
                }
                tokio::time::sleep(wait).await;
                *quiet_until = None;
            }
            tries += 1;
            match self.inner.notify(notice, people).await {
                Err(PortError {
                    kind:
                        FailureKind::Transient {
                            retry_after: Some(wait),
                        },
                    ..
                }) if tries < MAX_TRIES && wait <= self.max_wait => {
                    tracing::info!(
                        channel = self.inner.channel(),
                        wait_s = wait.as_secs(),
                        "the channel asked to wait; waiting before posting again"
                    );
                    *quiet_until = Some(Instant::now() + wait);
                }
                Err(error) => {
                    if let FailureKind::Transient {
                        retry_after: Some(wait),
                    } = error.kind
                    {
                        *quiet_until = Some(Instant::now() + wait);
                    }
                    return Err(error);
                }
                Ok(()) => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex as StdMutex;

    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::ports::notify::{NoticeKind, Severity};

    /// Answers from a script, counting posts.
    #[derive(Debug)]
    struct Scripted {
        answers: StdMutex<VecDeque<Result<(), PortError>>>,
        posts: StdMutex<u32>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<(), PortError>>) -> Arc<Self> {
            Arc::new(Self {
                answers: StdMutex::new(answers.into()),
                posts: StdMutex::new(0),
            })
        }

        fn posts(&self) -> u32 {
            *self.posts.lock().expect("not poisoned")
        }
    }

    #[async_trait]
    impl Notifier for Scripted {
        fn channel(&self) -> &str {
            "ops"
        }

        async fn notify(&self, _: &Notice, _: &[MailAddress]) -> Result<(), PortError> {
            *self.posts.lock().expect("not poisoned") += 1;
            self.answers
                .lock()
                .expect("not poisoned")
                .pop_front()
                .unwrap_or(Ok(()))
        }
    }

    fn throttled(seconds: u64) -> Result<(), PortError> {
        Err(PortError::new(
            FailureKind::Transient {
                retry_after: Some(Duration::from_secs(seconds)),
            },
            "posting to channel ops: HTTP 429",
        ))
    }

    fn notice() -> Notice {
        Notice {
            id: "n".to_owned(),
            kind: NoticeKind::Expiring,
            severity: Severity::Warning,
            title: "t".to_owned(),
            summary: "s".to_owned(),
            facts: Vec::new(),
            actions: Vec::new(),
            subject: None,
            time: Utc
                .with_ymd_and_hms(2026, 12, 6, 6, 0, 0)
                .single()
                .expect("a time"),
            detail: json!({}),
        }
    }

    #[tokio::test]
    async fn a_short_retry_after_is_waited_out_and_the_notice_sent() {
        let inner = Scripted::new(vec![throttled(1)]);
        let channel = Throttled::new(inner.clone());
        let started = Instant::now();

        channel
            .notify(&notice(), &[])
            .await
            .expect("sent after the wait");

        assert_eq!(inner.posts(), 2);
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_long_retry_after_defers_this_and_later_notices_without_posting_again() {
        let inner = Scripted::new(vec![throttled(600)]);
        let channel = Throttled::new(inner.clone());

        let first = channel.notify(&notice(), &[]).await.expect_err("deferred");
        let second = channel
            .notify(&notice(), &[])
            .await
            .expect_err("still quiet");

        assert_eq!(
            inner.posts(),
            1,
            "the receiver is not asked again in its wait"
        );
        assert!(matches!(first.kind, FailureKind::Transient { .. }));
        assert!(second.context.contains("channel ops asked to wait"));
    }

    #[tokio::test]
    async fn a_channel_that_keeps_throttling_is_tried_a_bounded_number_of_times() {
        let inner = Scripted::new(vec![throttled(1), throttled(1), throttled(1), Ok(())]);
        let channel = Throttled::new(inner.clone());

        channel.notify(&notice(), &[]).await.expect_err("gave up");

        assert_eq!(inner.posts(), MAX_TRIES);
    }
}
