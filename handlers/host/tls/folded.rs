//! Handshake failures and refused connections, logged folded: the first of a kind from
//! a source is logged at once, the rest of that window are counted and logged as one
//! line when the window closes. A flood of failed handshakes costs a few lines a window,
//! not one line per connection.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::source::Source;

/// Who a line is about: a source, or every source beyond
/// [`FoldedLog`]'s per-window source count, folded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum About {
    Source(Source),
    OtherSources,
}

#[derive(Debug)]
struct Fold {
    opened: Instant,
    /// Events since the line logged when the fold opened.
    more: u64,
    /// An example detail (the first error's text) for the closing line.
    detail: String,
}

#[derive(Debug)]
pub(super) struct FoldedLog {
    window: Duration,
    max_sources: usize,
    folds: Mutex<HashMap<(About, &'static str), Fold>>,
}

impl FoldedLog {
    /// One line per source and reason per `window`, for at most `max_sources` sources
    /// a window; beyond that, all other sources share one line per reason.
    pub(super) fn new(window: Duration, max_sources: usize) -> Self {
        Self {
            window,
            max_sources,
            folds: Mutex::new(HashMap::new()),
        }
    }

    /// Records one event; logs it if it opens a fold.
    pub(super) fn record(
        &self,
        source: Source,
        reason: &'static str,
        detail: &dyn std::fmt::Display,
    ) {
        let now = Instant::now();
        let mut folds = self.folds.lock().unwrap_or_else(PoisonError::into_inner);
        let mut about = About::Source(source);
        if !folds.contains_key(&(about, reason)) && folds.len() >= self.max_sources {
            about = About::OtherSources;
        }
        match folds.get_mut(&(about, reason)) {
            Some(fold) => fold.more += 1,
            None => {
                let detail = detail.to_string();
                log_line(about, reason, 1, &detail);
                folds.insert(
                    (about, reason),
                    Fold {
                        opened: now,
                        more: 0,
                        detail,
                    },
                );
            }
        }
    }

    /// Closes the folds whose window has passed, logging one line with the count of
    /// each that had more events. Call at least once a window.
    pub(super) fn flush(&self) {
        let now = Instant::now();
        let mut folds = self.folds.lock().unwrap_or_else(PoisonError::into_inner);
        folds.retain(|(about, reason), fold| {
            if now.duration_since(fold.opened) < self.window {
                return true;
            }
            if fold.more > 0 {
                log_line(*about, reason, fold.more, &fold.detail);
            }
            false
        });
    }
}

fn log_line(about: About, reason: &str, count: u64, detail: &str) {
    match about {
        About::Source(source) => {
            tracing::info!(%source, reason, count, detail, "TLS connection not served")
        }
        About::OtherSources => tracing::info!(
            source = "other sources",
            reason,
            count,
            detail,
            "TLS connection not served"
        ),
    }
}
