//! Strict stand-ins for the receivers alerts are posted to: a Teams Workflows webhook, a
//! Slack incoming webhook and a generic CloudEvents receiver, on one HTTPS listener, each
//! behind a path holding a random token as the real hooks do. Each checks its payload as
//! the real receiver would and refuses what it would refuse; what it accepts is kept for
//! the test to read.
//!
//! - Teams (Workflows "Post to a channel when a webhook request is received"): a JSON
//!   `message` whose `attachments` are Adaptive Cards (`contentType`
//!   `application/vnd.microsoft.card.adaptive`, `content.type` `AdaptiveCard`, a
//!   `version` up to 1.5, a non-empty `body` of known elements, TextBlock with `text`,
//!   FactSet with string `title`/`value` facts), at most 28 KB; answers 202.
//! - Slack: JSON with a non-empty `text` (Slack's `no_text` otherwise), blocks within
//!   Block Kit's limits (50 blocks, header text 150, section text 3,000, 10 fields of
//!   2,000); answers 200 `ok`, or 400 `invalid_payload` / `invalid_blocks`.
//! - CloudEvents (structured mode, HTTP binding 3.2): `application/cloudevents+json`,
//!   `specversion` 1.0, non-empty `id`, `source`, `type`, RFC 3339 `time`, attribute names
//!   of lower-case letters and digits; answers 202.
//!
//! A hook can be revoked (404, Slack's `no_service`) or made to fail the next posts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::Value;
use url::Url;

use crate::server::{self, Listener};
use crate::{StartError, TestCa, http_client_for, pki};

/// Teams refuses a message above about 28 KB (Teams "Limits and specifications").
pub const TEAMS_MAX_BYTES: usize = 28 * 1024;
/// Adaptive Card versions Teams renders.
const TEAMS_CARD_VERSIONS: [&str; 6] = ["1.0", "1.1", "1.2", "1.3", "1.4", "1.5"];
const CARD_ELEMENTS: [&str; 8] = [
    "TextBlock",
    "FactSet",
    "Container",
    "ColumnSet",
    "Image",
    "ActionSet",
    "RichTextBlock",
    "Table",
];
const SLACK_MAX_BLOCKS: usize = 50;
const SLACK_MAX_HEADER: usize = 150;
const SLACK_MAX_SECTION: usize = 3000;
const SLACK_MAX_FIELDS: usize = 10;
const SLACK_MAX_FIELD: usize = 2000;
/// CloudEvents attribute names: lower-case letters and digits, 20 characters at most
/// recommended (specification, "Attribute Naming Convention").
const CLOUDEVENTS_MAX_NAME: usize = 20;

/// One of the receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Receiver {
    Teams,
    Slack,
    CloudEvents,
}

impl Receiver {
    fn path(self) -> &'static str {
        match self {
            Receiver::Teams => "teams",
            Receiver::Slack => "slack",
            Receiver::CloudEvents => "events",
        }
    }
}

/// A payload a receiver accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub receiver: Receiver,
    pub content_type: Option<String>,
    pub body: Value,
}

#[derive(Debug, Default)]
struct Hooks {
    token: String,
    revoked: Vec<Receiver>,
    failures: VecDeque<(Receiver, StatusCode, Option<u64>)>,
    received: Vec<Received>,
    refused: Vec<(Receiver, String)>,
}

/// The three receivers, running. Dropping this stops them.
pub struct Receivers {
    hooks: Arc<Mutex<Hooks>>,
    url: Url,
    client: reqwest::Client,
    ca: TestCa,
    _listener: Listener,
}

impl std::fmt::Debug for Receivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receivers").finish_non_exhaustive()
    }
}

impl Receivers {
    pub async fn start() -> Result<Self, StartError> {
        let ca = pki::ca("keyturn receivers test CA");
        let tls = server::tls_config(&pki::server_cert(&ca))?;
        let token: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let hooks = Arc::new(Mutex::new(Hooks {
            token,
            ..Hooks::default()
        }));
        let router = Router::new()
            .route("/{receiver}/{token}", post(receive))
            .with_state(hooks.clone());
        let listener = server::start(tls, router).await?;
        let url = Url::parse(&format!("https://{}/", listener.addr))
            .expect("a socket address makes a valid https URL");
        let client = http_client_for(&ca).map_err(StartError::Client)?;
        Ok(Self {
            hooks,
            url,
            client,
            ca,
            _listener: listener,
        })
    }

    /// The hook's URL, holding its secret token, as the channel's settings give it.
    pub fn url(&self, receiver: Receiver) -> String {
        let token = self.lock().token.clone();
        self.url
            .join(&format!("{}/{token}", receiver.path()))
            .expect("a path joins")
            .to_string()
    }

    /// The token in every hook's URL: what must never appear in a log.
    pub fn token(&self) -> String {
        self.lock().token.clone()
    }

    /// The CA the receivers' certificate is issued by: what a `keyturn` process is given
    /// to trust (`SSL_CERT_FILE`).
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// A client that trusts the receivers' CA and follows no redirect.
    pub fn http_client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Payloads `receiver` accepted, oldest first.
    pub fn received(&self, receiver: Receiver) -> Vec<Received> {
        self.lock()
            .received
            .iter()
            .filter(|r| r.receiver == receiver)
            .cloned()
            .collect()
    }

    /// Why payloads were refused, oldest first.
    pub fn refusals(&self) -> Vec<(Receiver, String)> {
        self.lock().refused.clone()
    }

    /// Removes `receiver`'s hook: posts get 404 from now on.
    pub fn revoke(&self, receiver: Receiver) {
        self.lock().revoked.push(receiver);
    }

    /// The next post to `receiver` fails with `status` (and `Retry-After`).
    pub fn fail_next(&self, receiver: Receiver, status: u16, retry_after: Option<u64>) {
        let status = StatusCode::from_u16(status).expect("a valid status");
        self.lock()
            .failures
            .push_back((receiver, status, retry_after));
    }

    fn lock(&self) -> MutexGuard<'_, Hooks> {
        self.hooks
            .lock()
            .expect("the hooks lock is never held across a panic")
    }
}

async fn receive(
    State(hooks): State<Arc<Mutex<Hooks>>>,
    Path((receiver, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut hooks = hooks
        .lock()
        .expect("the hooks lock is never held across a panic");
    let receiver = match receiver.as_str() {
        "teams" => Receiver::Teams,
        "slack" => Receiver::Slack,
        "events" => Receiver::CloudEvents,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if token != hooks.token || hooks.revoked.contains(&receiver) {
        return (StatusCode::NOT_FOUND, "no_service").into_response();
    }
    if let Some(position) = hooks.failures.iter().position(|(r, ..)| *r == receiver) {
        let (_, status, retry_after) = hooks
            .failures
            .remove(position)
            .expect("the position was just found");
        let mut response = status.into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                seconds.to_string().parse().expect("digits make a header"),
            );
        }
        return response;
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let checked = match receiver {
        Receiver::Teams => check_teams(content_type.as_deref(), &body),
        Receiver::Slack => check_slack(content_type.as_deref(), &body),
        Receiver::CloudEvents => check_cloudevent(content_type.as_deref(), &body),
    };
    match checked {
        Ok(value) => {
            hooks.received.push(Received {
                receiver,
                content_type,
                body: value,
            });
            match receiver {
                Receiver::Slack => (StatusCode::OK, "ok").into_response(),
                _ => StatusCode::ACCEPTED.into_response(),
            }
        }
        Err(refusal) => {
            hooks.refused.push((receiver, refusal.reason.clone()));
            (StatusCode::BAD_REQUEST, refusal.answer).into_response()
        }
    }
}

struct Refusal {
    /// What the receiver answers (Slack's error code; a short text for the others).
    answer: &'static str,
    /// Why, for the test.
    reason: String,
}

fn refuse(answer: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        answer,
        reason: reason.into(),
    }
}

fn is_json(content_type: Option<&str>, expected: &str) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case(expected))
}

fn check_teams(content_type: Option<&str>, body: &[u8]) -> Result<Value, Refusal> {
    const BAD: &str = "Bad Request";
    if !is_json(content_type, "application/json") {
        return Err(refuse(BAD, "content type is not application/json"));
    }
    if body.len() > TEAMS_MAX_BYTES {
        return Err(refuse("Request Entity Too Large", "message above 28 KB"));
    }
    let message: Value =
        serde_json::from_slice(body).map_err(|_| refuse(BAD, "body is not JSON"))?;
    if message["type"] != "message" {
        return Err(refuse(BAD, "type is not \"message\""));
    }
    let attachments = message["attachments"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| refuse(BAD, "no attachments"))?;
    for attachment in attachments {
        if attachment["contentType"] != "application/vnd.microsoft.card.adaptive" {
            return Err(refuse(BAD, "attachment is not an Adaptive Card"));
        }
        let card = &attachment["content"];
        if card["type"] != "AdaptiveCard" {
            return Err(refuse(BAD, "content.type is not AdaptiveCard"));
        }
        if let Some(schema) = card.get("$schema")
            && schema != "http://adaptivecards.io/schemas/adaptive-card.json"
        {
            return Err(refuse(BAD, "unknown $schema"));
        }
        let version = card["version"].as_str().unwrap_or_default();
        if !TEAMS_CARD_VERSIONS.contains(&version) {
            return Err(refuse(
                BAD,
                format!("card version {version:?} not rendered by Teams"),
            ));
        }
        let elements = card["body"]
            .as_array()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| refuse(BAD, "card body is empty"))?;
        for element in elements {
            check_card_element(element)?;
        }
    }
    Ok(message)
}

fn check_card_element(element: &Value) -> Result<(), Refusal> {
    const BAD: &str = "Bad Request";
    let kind = element["type"].as_str().unwrap_or_default();
    if !CARD_ELEMENTS.contains(&kind) {
        return Err(refuse(BAD, format!("unknown card element {kind:?}")));
    }
    match kind {
        "TextBlock" if !element["text"].is_string() => Err(refuse(BAD, "TextBlock without text")),
        "FactSet" => {
            let facts = element["facts"]
                .as_array()
                .ok_or_else(|| refuse(BAD, "FactSet without facts"))?;
            if facts
                .iter()
                .all(|f| f["title"].is_string() && f["value"].is_string())
            {
                Ok(())
            } else {
                Err(refuse(BAD, "a fact without a string title and value"))
            }
        }
        _ => Ok(()),
    }
}

fn text_len(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

fn check_slack(content_type: Option<&str>, body: &[u8]) -> Result<Value, Refusal> {
    if !is_json(content_type, "application/json") {
        return Err(refuse(
            "invalid_payload",
            "content type is not application/json",
        ));
    }
    let payload: Value =
        serde_json::from_slice(body).map_err(|_| refuse("invalid_payload", "body is not JSON"))?;
    if text_len(&payload["text"]) == 0 {
        return Err(refuse("no_text", "no top-level text"));
    }
    let Some(blocks) = payload.get("blocks") else {
        return Ok(payload);
    };
    let blocks = blocks
        .as_array()
        .ok_or_else(|| refuse("invalid_blocks", "blocks is not an array"))?;
    if blocks.len() > SLACK_MAX_BLOCKS {
        return Err(refuse("invalid_blocks", "more than 50 blocks"));
    }
    for block in blocks {
        match block["type"].as_str().unwrap_or_default() {
            "header" => {
                if block["text"]["type"] != "plain_text"
                    || !(1..=SLACK_MAX_HEADER).contains(&text_len(&block["text"]["text"]))
                {
                    return Err(refuse(
                        "invalid_blocks",
                        "header text missing, not plain_text or above 150",
                    ));
                }
            }
            "section" => {
                let text = &block["text"];
                let fields = block.get("fields");
                if text.is_null() && fields.is_none() {
                    return Err(refuse(
                        "invalid_blocks",
                        "section with neither text nor fields",
                    ));
                }
                if !text.is_null()
                    && (!matches!(text["type"].as_str(), Some("mrkdwn" | "plain_text"))
                        || !(1..=SLACK_MAX_SECTION).contains(&text_len(&text["text"])))
                {
                    return Err(refuse(
                        "invalid_blocks",
                        "section text empty, untyped or above 3000",
                    ));
                }
                if let Some(fields) = fields {
                    let fields = fields
                        .as_array()
                        .filter(|f| (1..=SLACK_MAX_FIELDS).contains(&f.len()))
                        .ok_or_else(|| refuse("invalid_blocks", "section fields not 1 to 10"))?;
                    if fields.iter().any(|f| {
                        !matches!(f["type"].as_str(), Some("mrkdwn" | "plain_text"))
                            || !(1..=SLACK_MAX_FIELD).contains(&text_len(&f["text"]))
                    }) {
                        return Err(refuse(
                            "invalid_blocks",
                            "a field empty, untyped or above 2000",
                        ));
                    }
                }
            }
            "context" | "divider" | "actions" | "image" | "rich_text" => {}
            other => {
                return Err(refuse(
                    "invalid_blocks",
                    format!("unknown block type {other:?}"),
                ));
            }
        }
    }
    Ok(payload)
}

fn check_cloudevent(content_type: Option<&str>, body: &[u8]) -> Result<Value, Refusal> {
    const BAD: &str = "Bad Request";
    if !is_json(content_type, "application/cloudevents+json") {
        return Err(refuse(
            BAD,
            "not application/cloudevents+json (structured mode)",
        ));
    }
    let event: Value = serde_json::from_slice(body).map_err(|_| refuse(BAD, "body is not JSON"))?;
    let object = event
        .as_object()
        .ok_or_else(|| refuse(BAD, "the event is not a JSON object"))?;
    if event["specversion"] != "1.0" {
        return Err(refuse(BAD, "specversion is not 1.0"));
    }
    for required in ["id", "source", "type"] {
        if text_len(&event[required]) == 0 {
            return Err(refuse(BAD, format!("{required} missing or empty")));
        }
    }
    if let Some(time) = object.get("time") {
        let valid = time
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
        if !valid {
            return Err(refuse(BAD, "time is not RFC 3339"));
        }
    }
    for name in object.keys() {
        let valid = !name.is_empty()
            && name.len() <= CLOUDEVENTS_MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid && name != "data_base64" {
            return Err(refuse(
                BAD,
                format!("attribute name {name:?} is not lower-case alphanumeric"),
            ));
        }
    }
    if object.contains_key("data") && object.contains_key("data_base64") {
        return Err(refuse(BAD, "both data and data_base64"));
    }
    Ok(event)
}
