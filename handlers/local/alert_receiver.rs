//! `keyturn dev`'s alert receiver: a loopback HTTP endpoint that takes the CloudEvents the
//! local `dev` route posts, so the demo's alerts are seen arriving. Its URL carries a
//! random token, like a real webhook's: the URL is stored in the local vault as the
//! route's secret and never printed; what is printed and recorded is the address without
//! it, and what each alert says (credential, threshold, what to do), never a secret
//! value, which an alert never carries.
//!
//! It is strict, as a receiver a deployment relies on should be: a keyturn notice as a
//! CloudEvents 1.0 event in structured mode (`application/cloudevents+json`) or binary
//! mode (`ce-` headers, the data as `application/json`), as the CloudEvents HTTP protocol
//! binding defines them. Anything else is refused with 400 and the reason in plain text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header::CONTENT_TYPE};
use axum::routing::post;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

/// The route `keyturn dev` configures, and the local vault secret holding its URL.
pub const DEV_ROUTE: &str = "dev";
pub const DEV_ROUTE_SECRET: &str = "keyturn-dev-alerts";
/// The file beside the store each received alert is appended to, one JSON line each.
pub const RECEIVED_FILE: &str = "alerts-received.jsonl";

/// The structured-mode media type (HTTP protocol binding, section 3.2.1).
const STRUCTURED: &str = "application/cloudevents+json";
/// The batched-mode media type, which the notifier never sends.
const BATCHED: &str = "application/cloudevents-batch+json";
/// The event types of keyturn's notices start with this.
const TYPE_PREFIX: &str = "io.keyturn.";
const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// What the receiver kept of one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedAlert {
    /// The CloudEvents `type` (`io.keyturn.credential.expiring`, `...expired`, `io.keyturn.digest`).
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    /// The credential's inventory id; `None` for a digest.
    pub subject: Option<String>,
    /// The credential's name; `None` for a digest.
    pub credential: Option<String>,
    /// Days before expiry of the threshold crossed, `0` on expiry; `None` for a digest.
    pub threshold: Option<u32>,
    pub title: String,
    pub severity: String,
    /// What to do, one step per entry.
    pub actions: Vec<String>,
    /// The notice's summary (what the digest counts).
    pub summary: String,
}

impl ReceivedAlert {
    /// One line for a terminal: severity, what, the threshold and the first thing to do
    /// (the whole list is in the record file and `--once`'s summary).
    pub fn line(&self) -> String {
        let text = match self.threshold {
            Some(days) => {
                let threshold = match days {
                    0 => "on expiry".to_owned(),
                    1 => "1 day".to_owned(),
                    n => format!("{n} days"),
                };
                let next = self
                    .actions
                    .first()
                    .map(|a| format!(" → {a}"))
                    .unwrap_or_default();
                format!(
                    "alert  [{}, threshold {threshold}] {}{next}",
                    self.severity, self.title
                )
            }
            None => format!(
                "digest [{}] {}. {}",
                self.severity, self.title, self.summary
            ),
        };
        printable(&text)
    }
}

/// `text` with control characters (a terminal's escape sequences) replaced.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Where the receiver prints each alert's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// The continuous mode's terminal.
    Stdout,
    /// `--once`, whose standard output is the JSON summary.
    Stderr,
}

#[derive(Debug)]
struct Shared {
    token: String,
    received: Mutex<Vec<ReceivedAlert>>,
    echo: Echo,
    record: PathBuf,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct AlertReceiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl AlertReceiver {
    /// Listens on `address` (loopback; port 0 picks a free port). Each alert is appended
    /// to `record` and its line printed to `echo`.
    pub async fn start(address: &str, echo: Echo, record: PathBuf) -> std::io::Result<Self> {
        Self::start_again(address, None, echo, record).await
    }

    /// As [`AlertReceiver::start`], at the URL an earlier receiver had (`previous`, its
    /// [`AlertReceiver::url`]) when `address` leaves the port free (port 0) and that
    /// port is free again: the URL, a secret kept in the vault, then stays the same from
    /// one run to the next. Otherwise on `address` with a new token.
    pub async fn start_again(
        address: &str,
        previous: Option<&str>,
        echo: Echo,
        record: PathBuf,
    ) -> std::io::Result<Self> {
        let reused = match previous.and_then(previous_hook) {
            Some((at, token)) if any_port_on(address, at) => {
                match tokio::net::TcpListener::bind(at).await {
                    Ok(listener) => Some((listener, token)),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let (listener, token) = match reused {
            Some(reused) => reused,
            None => (
                tokio::net::TcpListener::bind(address).await?,
                uuid::Uuid::new_v4().simple().to_string(),
            ),
        };
        let address = listener.local_addr()?;
        if !address.ip().is_loopback() {
            return Err(std::io::Error::other(format!(
                "the alert receiver listens on loopback only, not {address}"
            )));
        }
        let shared = Arc::new(Shared {
            token,
            received: Mutex::new(Vec::new()),
            echo,
            record,
        });
        let router = Router::new()
            .route("/alerts/{token}", post(receive))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            address,
            shared,
            task,
        })
    }

    /// Where it listens, without the token: what may be printed.
    pub fn address(&self) -> String {
        format!("http://{}/alerts/", self.address)
    }

    /// The hook's URL with its token: a secret, stored in the local vault only.
    pub fn url(&self) -> String {
        format!("http://{}/alerts/{}", self.address, self.shared.token)
    }

    /// Alerts received so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedAlert> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The address and token of a hook URL this receiver gave
/// (`http://{loopback address}/alerts/{token}`); `None` for anything else.
fn previous_hook(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (at, token) = rest.split_once("/alerts/")?;
    let at: SocketAddr = at.parse().ok()?;
    let token_is_ours = token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit());
    (at.ip().is_loopback() && at.port() != 0 && token_is_ours).then(|| (at, token.to_owned()))
}

/// Whether `address` asks for any free port on the IP `at` listens on.
fn any_port_on(address: &str, at: SocketAddr) -> bool {
    address
        .parse::<SocketAddr>()
        .is_ok_and(|wanted| wanted.port() == 0 && wanted.ip() == at.ip())
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    if token != shared.token {
        return (StatusCode::NOT_FOUND, "no such hook\n".to_owned());
    }
    let alert = match parse(&headers, &body) {
        Ok(alert) => alert,
        Err(reason) => {
            tracing::warn!(%reason, "the alert receiver refused a request");
            return (StatusCode::BAD_REQUEST, format!("{reason}\n"));
        }
    };
    {
        use std::io::Write;
        let line = alert.line();
        let _ = match shared.echo {
            Echo::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
            Echo::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
        };
    }
    if let Ok(line) = serde_json::to_string(&alert) {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shared.record)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = appended {
            tracing::warn!(%error, "cannot record a received alert");
        }
    }
    shared
        .received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(alert);
    (StatusCode::ACCEPTED, String::new())
}

/// The media type of a `Content-Type` value, lower case, without parameters.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The event's context attributes and data, from either content mode.
struct Event {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    kind: Option<String>,
    subject: Option<String>,
    datacontenttype: Option<String>,
    data: Value,
}

/// Reads a keyturn notice from a CloudEvents request, or says why it is not one.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<ReceivedAlert, String> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().map(media_type))
        .transpose()
        .map_err(|_| "the Content-Type header is not text".to_owned())?;
    let header = |name: &str| -> Result<Option<String>, String> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| format!("the {name} header is not text"))
            })
            .transpose()
    };
    let event = match content_type.as_deref() {
        Some(STRUCTURED) => structured(body)?,
        Some(BATCHED) => {
            return Err(
                "batched CloudEvents are not accepted: send one event per request".to_owned(),
            );
        }
        _ if headers.contains_key("ce-specversion") => {
            if content_type.as_deref() != Some("application/json") {
                return Err(format!(
                    "a binary-mode keyturn event carries its data as application/json, not {}",
                    content_type.as_deref().unwrap_or("no Content-Type")
                ));
            }
            Event {
                specversion: header("ce-specversion")?,
                id: header("ce-id")?,
                source: header("ce-source")?,
                kind: header("ce-type")?,
                subject: header("ce-subject")?,
                datacontenttype: content_type.clone(),
                data: serde_json::from_slice(body)
                    .map_err(|_| "the body is not JSON: a keyturn event's data is".to_owned())?,
            }
        }
        other => {
            return Err(format!(
                "not a CloudEvent: expected Content-Type {STRUCTURED} (structured mode) or ce-specversion, ce-id, ce-source and ce-type headers (binary mode); got {}",
                other.unwrap_or("no Content-Type and no ce- headers")
            ));
        }
    };
    notice(event)
}

fn structured(body: &[u8]) -> Result<Event, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| "the body is not JSON: a structured CloudEvent is one JSON object")?;
    let Value::Object(mut object) = value else {
        return Err("the body is not a JSON object: a structured CloudEvent is one".to_owned());
    };
    let mut text = |name: &str| -> Result<Option<String>, String> {
        match object.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("attribute {name} is not a string")),
        }
    };
    Ok(Event {
        specversion: text("specversion")?,
        id: text("id")?,
        source: text("source")?,
        kind: text("type")?,
        subject: text("subject")?,
        datacontenttype: text("datacontenttype")?,
        data: object.remove("data").unwrap_or(Value::Null),
    })
}

fn notice(event: Event) -> Result<ReceivedAlert, String> {
    match event.specversion.as_deref() {
        Some("1.0") => {}
        Some(other) => return Err(format!("specversion {other:?} is not 1.0")),
        None => return Err("attribute specversion is missing".to_owned()),
    }
    let required = |value: Option<String>, name: &str| match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("attribute {name} is missing or empty")),
    };
    let id = required(event.id, "id")?;
    required(event.source, "source")?;
    let kind = required(event.kind, "type")?;
    if !kind.starts_with(TYPE_PREFIX) {
        return Err(format!(
            "type {kind:?} is not a keyturn notice's ({TYPE_PREFIX}…)"
        ));
    }
    if let Some(content) = &event.datacontenttype
        && media_type(content) != "application/json"
    {
        return Err(format!(
            "datacontenttype {content:?} is not application/json"
        ));
    }
    let Value::Object(data) = event.data else {
        return Err("data is missing or not a JSON object".to_owned());
    };
    let field = |data: &Map<String, Value>, name: &str| match data.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("data.{name} is missing or not text")),
    };
    let title = field(&data, "title")?;
    let summary = field(&data, "summary")?;
    let severity = field(&data, "severity")?;
    if !SEVERITIES.contains(&severity.as_str()) {
        return Err(format!(
            "data.severity {severity:?} is not one of info, warning, critical"
        ));
    }
    let actions = match data.get("actions") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("data.actions holds something other than text")?,
        _ => return Err("data.actions is missing or not a list".to_owned()),
    };
    let detail = data.get("detail").and_then(Value::as_object);
    let digest = kind == "io.keyturn.digest";
    let (credential, threshold) = if digest {
        (None, None)
    } else {
        if event.subject.as_deref().is_none_or(str::is_empty) {
            return Err(
                "attribute subject is missing: a credential's alert names its inventory id"
                    .to_owned(),
            );
        }
        let threshold = detail
            .and_then(|d| d.get("threshold"))
            .and_then(Value::as_u64)
            .and_then(|d| u32::try_from(d).ok())
            .ok_or("data.detail.threshold is missing: a credential's alert names its threshold")?;
        let name = detail
            .and_then(|d| d.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or("data.detail.name is missing: a credential's alert names it")?;
        (Some(name), Some(threshold))
    };
    Ok(ReceivedAlert {
        kind,
        id,
        subject: event.subject,
        credential,
        threshold,
        title,
        severity,
        actions,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::adapters::notify::cloudevents::{STRUCTURED_CONTENT_TYPE, event};
    use crate::ports::notify::{Fact, Notice, NoticeKind, Severity};

    fn notice(kind: NoticeKind) -> Notice {
        Notice {
            id: "n-1".into(),
            kind,
            severity: Severity::Warning,
            title: "Secret db in vault kv expires in 9 days".into(),
            summary: "db expires on 2026-12-15 (in 9 days); keyturn does not manage it.".into(),
            facts: vec![Fact::new("Threshold", "14 days")],
            actions: vec!["Tag it.".into(), "Or else.".into()],
            subject: (kind != NoticeKind::Digest).then(|| "cred-1".to_owned()),
            time: Utc.with_ymd_and_hms(2026, 12, 6, 8, 0, 0).unwrap(),
            detail: json!({ "name": "db", "threshold": 14 }),
        }
    }

    fn structured_request(event: &Value) -> (HeaderMap, Vec<u8>) {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(STRUCTURED_CONTENT_TYPE),
        );
        (headers, serde_json::to_vec(event).unwrap())
    }

    #[test]
    fn a_notice_as_the_notifier_sends_it_is_read_and_printed_on_one_line() {
        let sent = event(&notice(NoticeKind::Expiring), &[], "/keyturn/alerts");
        let (headers, body) = structured_request(&sent);

        let alert = parse(&headers, &body).expect("accepted");

        assert_eq!(alert.kind, "io.keyturn.credential.expiring");
        assert_eq!(alert.subject.as_deref(), Some("cred-1"));
        assert_eq!(alert.credential.as_deref(), Some("db"));
        assert_eq!(alert.threshold, Some(14));
        assert_eq!(
            alert.line(),
            "alert  [warning, threshold 14 days] Secret db in vault kv expires in 9 days → Tag it."
        );
    }

    #[test]
    fn a_digest_is_read_without_a_subject_and_prints_its_counts() {
        let sent = event(&notice(NoticeKind::Digest), &[], "/keyturn/alerts");
        let (headers, body) = structured_request(&sent);

        let alert = parse(&headers, &body).expect("accepted");

        assert_eq!(alert.threshold, None);
        assert!(
            alert.line().starts_with("digest [warning] "),
            "{}",
            alert.line()
        );
        assert!(alert.line().contains("keyturn does not manage it"));
    }

    #[test]
    fn binary_mode_is_read_from_the_ce_headers() {
        let sent = event(&notice(NoticeKind::Expired), &[], "/keyturn/alerts");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, attribute) in [
            ("ce-specversion", "specversion"),
            ("ce-id", "id"),
            ("ce-source", "source"),
            ("ce-type", "type"),
            ("ce-subject", "subject"),
        ] {
            headers.insert(
                name,
                HeaderValue::from_str(sent[attribute].as_str().unwrap()).unwrap(),
            );
        }
        let body = serde_json::to_vec(&sent["data"]).unwrap();

        let alert = parse(&headers, &body).expect("accepted");

        assert_eq!(alert.kind, "io.keyturn.credential.expired");
        assert_eq!(alert.id, "n-1");
        assert_eq!(alert.threshold, Some(14));
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let good = event(&notice(NoticeKind::Expiring), &[], "/keyturn/alerts");
        let changed = |edit: &dyn Fn(&mut Value)| {
            let mut e = good.clone();
            edit(&mut e);
            e
        };
        let cases: Vec<(Value, &str)> = vec![
            (changed(&|e| e["specversion"] = json!("0.3")), "specversion"),
            (
                changed(&|e| {
                    e.as_object_mut().unwrap().remove("id");
                }),
                "attribute id",
            ),
            (changed(&|e| e["source"] = json!("")), "attribute source"),
            (changed(&|e| e["type"] = json!("com.example.x")), "type"),
            (
                changed(&|e| {
                    e.as_object_mut().unwrap().remove("subject");
                }),
                "subject",
            ),
            (changed(&|e| e["data"] = json!("text")), "data"),
            (
                changed(&|e| e["data"]["severity"] = json!("bad")),
                "severity",
            ),
            (
                changed(&|e| e["datacontenttype"] = json!("text/plain")),
                "datacontenttype",
            ),
            (
                changed(&|e| {
                    e["data"]["detail"]
                        .as_object_mut()
                        .unwrap()
                        .remove("threshold");
                }),
                "threshold",
            ),
            (json!([good.clone()]), "JSON object"),
        ];
        for (sent, reason) in cases {
            let (headers, body) = structured_request(&sent);
            let refused = parse(&headers, &body).expect_err("refused");
            assert!(refused.contains(reason), "{refused:?} names {reason}");
        }

        let mut plain = HeaderMap::new();
        plain.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let refused = parse(&plain, &serde_json::to_vec(&good).unwrap()).expect_err("refused");
        assert!(refused.contains("not a CloudEvent"), "{refused}");
        let refused = parse(&HeaderMap::new(), b"{}").expect_err("refused");
        assert!(refused.contains("no Content-Type"), "{refused}");
        let (headers, _) = structured_request(&good);
        let refused = parse(&headers, b"not json").expect_err("refused");
        assert!(refused.contains("not JSON"), "{refused}");
        let mut batch = HeaderMap::new();
        batch.insert(CONTENT_TYPE, HeaderValue::from_static(BATCHED));
        let refused = parse(&batch, b"[]").expect_err("refused");
        assert!(refused.contains("batched"), "{refused}");
    }

    #[test]
    fn a_line_never_carries_control_characters() {
        let mut n = notice(NoticeKind::Expiring);
        n.title = "evil\u{1b}[2Jtitle".into();
        let sent = event(&n, &[], "/keyturn/alerts");
        let (headers, body) = structured_request(&sent);
        let line = parse(&headers, &body).expect("accepted").line();
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
}
