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
    }

    pub(crate) fn push(&self, entry: LoggedRequest) {
        self.lock().push(entry);
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
