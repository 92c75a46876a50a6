//! The request log: every request any stand-in answered, with the headers tests assert on
//! and never a token or a body.

use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use http::HeaderMap;

use crate::Service;

/// Request headers worth recording. `Authorization` is recorded as its scheme only.
const RECORDED_HEADERS: [&str; 6] = [
    "content-type",
    "brokerproperties",
    "x-ms-client-request-id",
    "client-request-id",
    "user-agent",
    "accept",
];

/// One answered request.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub service: Service,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Selected request headers, lower-case names. `authorization` holds only the scheme
    /// (`Bearer`), so a token never reaches the log.
    pub headers: Vec<(String, String)>,
    /// When the stand-in received the request, on the monotonic clock: subtract two of
    /// these to see how long a client waited between calls.
    pub received: Instant,
    /// The stand-ins' (possibly advanced) wall clock at receipt.
    pub at: DateTime<Utc>,
    pub status: u16,
    /// `Some` when an injected fault produced the answer.
    pub fault: Option<String>,
}

impl LoggedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }
}

#[derive(Debug, Default)]
pub struct RequestLog {
    entries: Mutex<Vec<LoggedRequest>>,
    /// Requests answered per service, kept even when entries are not (a benchmark
    /// sends hundreds of thousands of requests and must not measure the log growing).
    counts: Mutex<std::collections::HashMap<Service, u64>>,
    /// When set, only the counts are kept.
    counts_only: std::sync::atomic::AtomicBool,
}

impl RequestLog {
    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.lock().clone()
    }

    /// Requests to one service, oldest first.
    pub fn for_service(&self, service: Service) -> Vec<LoggedRequest> {
        self.lock()
            .iter()
            .filter(|r| r.service == service)
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        self.lock().clear();
        self.lock_counts().clear();
    }

    /// Keeps only per-service counts from now on (`true`), or every entry again.
    pub fn set_counts_only(&self, counts_only: bool) {
        self.counts_only
            .store(counts_only, std::sync::atomic::Ordering::Relaxed);
    }

    /// Requests answered by `service` since the last [`RequestLog::clear`].
    pub fn count(&self, service: Service) -> u64 {
        self.lock_counts().get(&service).copied().unwrap_or(0)
    }

    pub(crate) fn push(&self, entry: LoggedRequest) {
        *self.lock_counts().entry(entry.service).or_default() += 1;
        if !self.counts_only.load(std::sync::atomic::Ordering::Relaxed) {
            self.lock().push(entry);
        }
    }

    fn lock_counts(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Service, u64>> {
        self.counts
            .lock()
            .expect("the count lock is never held across a panic")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LoggedRequest>> {
        self.entries
            .lock()
            .expect("the log lock is never held across a panic")
    }
}

pub(crate) fn recorded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut recorded: Vec<(String, String)> = RECORDED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let scheme = auth.split_whitespace().next().unwrap_or("").to_owned();
        recorded.push(("authorization".to_owned(), scheme));
    }
    recorded
}
