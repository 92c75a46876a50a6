//! The Service Bus stand-in: the REST send operation (`POST /{queue}/messages` with a
//! `BrokerProperties` header), duplicate detection, session-required queues, and the
//! messages it accepted for tests to read.

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde::Deserialize;
use url::Url;

use crate::Shared;
use crate::auth::{Audience, BearerRefusal};

/// Service Bus message and session ids are at most 128 characters ("Service Bus quotas").
pub const MAX_ID_LEN: usize = 128;
/// The Standard tier's largest message is 256 KiB ("Service Bus quotas").
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// The claim a token's application needs to send.
pub const SEND_PERMISSION: &str = "Send";

/// How a queue behaves.
#[derive(Debug, Clone, Default)]
pub struct QueueOptions {
    /// Messages without a SessionId are refused.
    pub requires_session: bool,
    /// A MessageId seen within this window is accepted but not stored again.
    pub duplicate_detection_window: Option<std::time::Duration>,
}

/// A message the stand-in accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    pub queue: String,
    pub message_id: Option<String>,
    pub session_id: Option<String>,
    pub scheduled_enqueue_time_utc: Option<DateTime<Utc>>,
    pub time_to_live_seconds: Option<f64>,
    pub label: Option<String>,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub enqueued_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(crate) struct Namespace {
    queues: BTreeMap<String, Queue>,
}

#[derive(Debug)]
struct Queue {
    options: QueueOptions,
    messages: Vec<ReceivedMessage>,
    /// Messages the queue holds before it is full (its size quota), if limited.
    max_messages: Option<usize>,
}

/// The Service Bus stand-in as tests see it.
#[derive(Debug, Clone, Copy)]
pub struct ServiceBusStandin<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) url: &'a Url,
}

impl ServiceBusStandin<'_> {
    /// `https://127.0.0.1:{port}/`, standing for `https://{namespace}.servicebus.windows.net/`.
    pub fn url(&self) -> &Url {
        self.url
    }

    pub fn create_queue(&self, name: impl Into<String>, options: QueueOptions) {
        self.lock().queues.insert(
            name.into().to_ascii_lowercase(),
            Queue {
                options,
                messages: Vec::new(),
                max_messages: None,
            },
        );
    }

    /// Limits how many messages `queue` holds: past that a send is refused with 403 and
    /// Service Bus's quota answer, as a queue at its maximum size is.
    pub fn set_max_messages(&self, queue: &str, max: Option<usize>) {
        if let Some(queue) = self.lock().queues.get_mut(&queue.to_ascii_lowercase()) {
            queue.max_messages = max;
        }
    }

    /// Messages the queue accepted, in order of arrival.
    pub fn messages(&self, queue: &str) -> Vec<ReceivedMessage> {
        self.lock()
            .queues
            .get(&queue.to_ascii_lowercase())
            .map(|q| q.messages.clone())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, Namespace> {
        self.shared.namespace()
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// Service Bus answers REST errors as `<Error><Code>..</Code><Detail>..</Detail></Error>`.
struct BusError {
    status: StatusCode,
    detail: String,
}

impl BusError {
    fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for BusError {
    fn into_response(self) -> Response {
        let detail = xml_escape(&format!(
            "{} TrackingId:{}, SystemTracker:standin, Timestamp:{}",
            self.detail,
            uuid::Uuid::new_v4(),
            Utc::now().format("%Y-%m-%dT%H:%M:%S")
        ));
        let body = format!(
            "<Error><Code>{}</Code><Detail>{detail}</Detail></Error>",
            self.status.as_u16()
        );
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml; charset=utf-8"),
        );
        response
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn fault_response(status: StatusCode) -> Response {
    let detail = match status {
        StatusCode::TOO_MANY_REQUESTS => {
            "The request was terminated because the entity is being throttled. Please wait and retry."
        }
        StatusCode::SERVICE_UNAVAILABLE => "The server is busy. Please retry the operation.",
        _ => "The service encountered an internal error.",
    };
    BusError::new(status, detail).into_response()
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&shared, &method, &uri, &headers, body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The BrokerProperties the stand-in understands; anything else is refused rather than
/// silently dropped.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BrokerProperties {
    #[serde(rename = "MessageId")]
    message_id: Option<String>,
    #[serde(rename = "SessionId")]
    session_id: Option<String>,
    #[serde(rename = "ScheduledEnqueueTimeUtc")]
    scheduled_enqueue_time_utc: Option<String>,
    #[serde(rename = "TimeToLive")]
    time_to_live: Option<f64>,
    #[serde(rename = "Label")]
    label: Option<String>,
    #[serde(rename = "CorrelationId")]
    correlation_id: Option<String>,
    #[serde(rename = "PartitionKey")]
    _partition_key: Option<String>,
    #[serde(rename = "ReplyTo")]
    _reply_to: Option<String>,
    #[serde(rename = "ReplyToSessionId")]
    _reply_to_session_id: Option<String>,
    #[serde(rename = "To")]
    _to: Option<String>,
    #[serde(rename = "ForcePersistence")]
    _force_persistence: Option<bool>,
}

fn handle(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, BusError> {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let queue_name = match (method, segments.as_slice()) {
        (&Method::POST, [queue, "messages"]) if !queue.is_empty() => *queue,
        _ => {
            return Err(BusError::new(
                StatusCode::BAD_REQUEST,
                "The request is not a Send Message operation: POST /{queue}/messages.",
            ));
        }
    };
    let now = shared.clock.now();
    let grant = shared
        .tokens
        .check(headers, Audience::ServiceBus, now)
        .map_err(|refusal| {
            let detail = match refusal {
                BearerRefusal::Missing | BearerRefusal::NotBearer => {
                    "MissingToken: The authorization header was not provided.".to_owned()
                }
                BearerRefusal::Unknown => "InvalidSignature: The token is not valid.".to_owned(),
                BearerRefusal::Expired => "ExpiredToken: The token is expired.".to_owned(),
                BearerRefusal::WrongAudience { found } => format!(
                    "InvalidAudience: The token audience '{found}' is not valid for {}.",
                    Audience::ServiceBus.uri()
                ),
            };
            BusError::new(StatusCode::UNAUTHORIZED, detail)
        })?;
    if !grant.permissions.allows(SEND_PERMISSION) {
        return Err(BusError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "Unauthorized access. 'Send' claim(s) are required to perform this operation. Resource: 'sb://standin/{queue_name}'."
            ),
        ));
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                BusError::new(
                    StatusCode::BAD_REQUEST,
                    "The Content-Type header is not valid.",
                )
            })
        })
        .transpose()?
        .ok_or_else(|| {
            BusError::new(
                StatusCode::BAD_REQUEST,
                "The Content-Type header is required.",
            )
        })?;
    let properties: BrokerProperties = match headers.get("BrokerProperties") {
        None => BrokerProperties::default(),
        Some(value) => {
            let text = value.to_str().map_err(|_| invalid_broker_properties())?;
            serde_json::from_str(text).map_err(|_| invalid_broker_properties())?
        }
    };
    for (name, id) in [
        ("MessageId", &properties.message_id),
        ("SessionId", &properties.session_id),
    ] {
        if let Some(id) = id
            && (id.is_empty() || id.chars().count() > MAX_ID_LEN)
        {
            return Err(BusError::new(
                StatusCode::BAD_REQUEST,
                format!("The {name} must be 1 to {MAX_ID_LEN} characters."),
            ));
        }
    }
    if properties
        .time_to_live
        .is_some_and(|ttl| ttl <= 0.0 || !ttl.is_finite())
    {
        return Err(BusError::new(
            StatusCode::BAD_REQUEST,
            "The TimeToLive must be a positive number of seconds.",
        ));
    }
    // The REST API writes DateTime broker properties in RFC 1123 form
    // ("Sun, 06 Nov 1994 08:49:37 GMT").
    let scheduled = properties
        .scheduled_enqueue_time_utc
        .as_deref()
        .map(|t| {
            DateTime::parse_from_rfc2822(t)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| {
                    BusError::new(
                        StatusCode::BAD_REQUEST,
                        "The ScheduledEnqueueTimeUtc broker property must be an RFC 1123 date, such as 'Sun, 06 Nov 1994 08:49:37 GMT'.",
                    )
                })
        })
        .transpose()?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(BusError::new(
            StatusCode::FORBIDDEN,
            format!(
                "The message size of {} bytes exceeds the maximum allowed size of {MAX_MESSAGE_BYTES} bytes.",
                body.len()
            ),
        ));
    }

    let mut namespace = shared.namespace();
    let queue = namespace
        .queues
        .get_mut(&queue_name.to_ascii_lowercase())
        .ok_or_else(|| {
            BusError::new(
                StatusCode::NOT_FOUND,
                format!("The messaging entity 'sb://standin/{queue_name}' could not be found."),
            )
        })?;
    if queue.options.requires_session && properties.session_id.is_none() {
        return Err(BusError::new(
            StatusCode::BAD_REQUEST,
            "The SessionId was not set on a message, and it cannot be sent to the entity. Entities that have session support enabled can only receive messages that have the SessionId set to a valid value.",
        ));
    }
    let duplicate = match (
        &properties.message_id,
        queue.options.duplicate_detection_window,
    ) {
        (Some(id), Some(window)) => {
            let window = Duration::from_std(window).unwrap_or(Duration::MAX);
            queue
                .messages
                .iter()
                .any(|m| m.message_id.as_deref() == Some(id) && now - m.enqueued_at < window)
        }
        _ => false,
    };
    if !duplicate
        && queue
            .max_messages
            .is_some_and(|max| queue.messages.len() >= max)
    {
        return Err(BusError::new(
            StatusCode::FORBIDDEN,
            format!(
                "The maximum entity size has been reached or exceeded for Queue: 'sb://standin/{queue_name}'."
            ),
        ));
    }
    if !duplicate {
        queue.messages.push(ReceivedMessage {
            queue: queue_name.to_owned(),
            message_id: properties.message_id,
            session_id: properties.session_id,
            scheduled_enqueue_time_utc: scheduled,
            time_to_live_seconds: properties.time_to_live,
            label: properties.label,
            correlation_id: properties.correlation_id,
            content_type: Some(content_type),
            body: body.to_vec(),
            enqueued_at: now,
        });
    }
    Ok(StatusCode::CREATED.into_response())
}

fn invalid_broker_properties() -> BusError {
    BusError::new(
        StatusCode::BAD_REQUEST,
        "The value of the HTTP header 'BrokerProperties' is invalid: it must be a JSON object of known broker properties.",
    )
}
