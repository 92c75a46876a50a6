//! The stand-ins' clock: real time plus an offset tests can move forward, so credential
//! propagation, expiry and duplicate-detection windows are tested without sleeping.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Default)]
pub struct Clock {
    offset: Mutex<Duration>,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
            + *self
                .offset
                .lock()
                .expect("the clock lock is never held across a panic")
    }

    /// Moves every stand-in's notion of "now" forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let by = Duration::from_std(by).unwrap_or(Duration::MAX);
        let mut offset = self
            .offset
            .lock()
            .expect("the clock lock is never held across a panic");
        *offset += by;
    }
}
