//! One canned transport: an azure_core [`HttpClient`] that answers from a script of
//! canned responses and records every request it was sent, so a test checks the exact
//! request a client builds and how it reads an answer, without any network.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::http::headers::Headers;
use azure_core::http::{
    AsyncRawResponse, Body, ClientOptions, HttpClient, Request, RetryOptions, StatusCode, Transport,
};

/// One canned answer: status, headers and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn new(status: StatusCode, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn headers<'a>(mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        for (name, value) in pairs {
            self = self.header(name, value);
        }
        self
    }
}

/// A request as the transport saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub url: String,
    /// Header names as azure_core keeps them (lower case).
    pub headers: Vec<(String, String)>,
    /// The body when it was bytes; empty otherwise.
    pub body: Vec<u8>,
}

impl SeenRequest {
    /// The value of the first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answers each request with the next answer of its script, or with one answer for
/// every request, and keeps what it was sent. A request beyond the script is a test
/// bug and panics with the request's method and URL.
#[derive(Debug)]
pub struct CannedTransport {
    script: Mutex<VecDeque<Answer>>,
    always: Option<Answer>,
    seen: Mutex<Vec<SeenRequest>>,
}

impl CannedTransport {
    /// Answers the requests in order, one answer each.
    pub fn script(answers: impl IntoIterator<Item = Answer>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(answers.into_iter().collect()),
            always: None,
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Answers every request the same way.
    pub fn always(answer: Answer) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(VecDeque::new()),
            always: Some(answer),
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Client options sending through this transport, with retries off so one call is
    /// one request.
    pub fn options(self: &Arc<Self>) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(self.clone())),
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        }
    }

    /// Every request sent so far, oldest first.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("test lock").clone()
    }
}

#[async_trait]
impl HttpClient for CannedTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let body = match request.body() {
            Body::Bytes(bytes) => bytes.to_vec(),
            #[allow(unreachable_patterns)]
            _ => Vec::new(),
        };
        let seen = SeenRequest {
            method: request.method().to_string(),
            url: request.url().to_string(),
            headers: request
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_str().to_owned()))
                .collect(),
            body,
        };
        let answer = match &self.always {
            Some(answer) => answer.clone(),
            None => self
                .script
                .lock()
                .expect("test lock")
                .pop_front()
                .unwrap_or_else(|| {
                    panic!("no canned answer left for {} {}", seen.method, seen.url)
                }),
        };
        self.seen.lock().expect("test lock").push(seen);
        let mut headers = Headers::new();
        for (name, value) in answer.headers {
            headers.insert(name, value);
        }
        Ok(AsyncRawResponse::from_bytes(
            answer.status,
            headers,
            answer.body,
        ))
    }
}

/// A credential that hands out a fixed bearer token valid for an hour and records the
/// scopes it was asked for.
#[derive(Debug, Default)]
pub struct FixedToken {
    scopes: Mutex<Vec<String>>,
}

impl FixedToken {
    pub const TOKEN: &'static str = "token-for-test";

    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every scope asked for so far, in order.
    pub fn scopes(&self) -> Vec<String> {
        self.scopes.lock().expect("test lock").clone()
    }
}

#[async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.scopes
            .lock()
            .expect("test lock")
            .extend(scopes.iter().map(|s| s.to_string()));
        Ok(AccessToken::new(
            Self::TOKEN,
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}
