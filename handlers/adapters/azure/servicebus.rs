//! The [`JobQueue`] on Service Bus: a small typed sender for the REST Send Message
//! operation (`POST https://{namespace}/{queue}/messages`), because the Functions output
//! binding cannot set what keyturn relies on: `MessageId` (duplicate detection),
//! `SessionId` (one worker per object) and `ScheduledEnqueueTimeUtc` (work due later).
//!
//! Broker properties travel as JSON in the `BrokerProperties` header; date-time
//! properties are written in RFC 1123 form (`Sun, 06 Nov 1994 08:49:37 GMT`), as the
//! REST API's message mapping requires. Sending the same `MessageId` twice within the
//! queue's duplicate-detection window is accepted (201) and delivered once, so a
//! retried send is harmless.

use std::fmt;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::{CONTENT_TYPE, HeaderName};
use azure_core::http::{ClientOptions, Method, Pipeline, Request, StatusCode, Url};
use azure_core::time::OffsetDateTime;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;

use crate::adapters::azure::client::http;
use crate::adapters::azure::client::http::{
    FailureContext, PipelineAuth, failure_from_status, pipeline,
};
use crate::domain::resources::{QueueName, ResourceNameError, ServiceBusNamespace};
use crate::ports::queue::{JobQueue, MAX_MESSAGE_ID_LEN, OutgoingMessage};
use crate::ports::{FailureKind, PortError};

/// The Entra scope of Service Bus data-plane tokens.
pub(crate) const SERVICE_BUS_SCOPE: &str = "https://servicebus.azure.net/.default";

/// The Standard tier's largest message (256 KiB, "Service Bus quotas"); refused before
/// sending so that the service's 403 can only mean a full queue.
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Service Bus asks clients to treat a send as failed after 60 s (the REST API's default
/// `timeout`); keyturn's jobs are small, so a slower send is a failure worth retrying.
pub(crate) const SEND_TIMEOUT_SECONDS: u32 = 60;

const BROKER_PROPERTIES: HeaderName = HeaderName::from_static("brokerproperties");

/// Building the sender failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceBusError {
    #[error("invalid Service Bus namespace: {problem}")]
    InvalidNamespace { problem: &'static str },
    #[error("invalid queue name: {problem}")]
    InvalidQueue { problem: &'static str },
}

/// The broker properties keyturn sets (Service Bus REST "Message properties" mapping).
#[derive(Debug, Serialize)]
struct BrokerProperties<'a> {
    #[serde(rename = "MessageId")]
    message_id: &'a str,
    #[serde(rename = "SessionId")]
    session_id: &'a str,
    #[serde(
        rename = "ScheduledEnqueueTimeUtc",
        skip_serializing_if = "Option::is_none"
    )]
    scheduled_enqueue_time_utc: Option<String>,
}

/// RFC 1123 date, always in GMT, as Service Bus REST reads `DateTime` broker properties.
pub(crate) fn rfc1123(time: DateTime<Utc>) -> String {
    time.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Sends jobs to one queue.
#[derive(Clone)]
pub struct ServiceBusQueue {
    messages_url: Url,
    queue: String,
    pipeline: Pipeline,
    missing_permission: String,
}

impl fmt::Debug for ServiceBusQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBusQueue")
            .field("messages_url", &self.messages_url.as_str())
            .finish_non_exhaustive()
    }
}

impl ServiceBusQueue {
    /// A sender for `queue` in the namespace whose host is `namespace`
    /// (`ServiceBusConnection__fullyQualifiedNamespace`, e.g.
    /// `sb-keyturn.servicebus.windows.net`).
    pub(crate) fn new(
        namespace: &str,
        queue: &str,
        credential: Arc<dyn TokenCredential>,
        options: Option<ClientOptions>,
    ) -> Result<Self, ServiceBusError> {
        let namespace = ServiceBusNamespace::parse(namespace).map_err(|e| match e {
            ResourceNameError::Namespace { problem } => {
                ServiceBusError::InvalidNamespace { problem }
            }
            _ => ServiceBusError::InvalidNamespace {
                problem: "is not a valid host name",
            },
        })?;
        let base = Url::parse(&format!("https://{namespace}/")).map_err(|_| {
            ServiceBusError::InvalidNamespace {
                problem: "is not a valid host name",
            }
        })?;
        Self::with_base_url(base, queue, credential, options)
    }

    /// A sender whose namespace is reached at `base` (`https://{host}[:port]/`): for HTTPS
    /// stand-ins on loopback. Tokens are still requested for [`SERVICE_BUS_SCOPE`].
    pub fn with_base_url(
        base: Url,
        queue: &str,
        credential: Arc<dyn TokenCredential>,
        options: Option<ClientOptions>,
    ) -> Result<Self, ServiceBusError> {
        if base.scheme() != "https" {
            return Err(ServiceBusError::InvalidNamespace {
                problem: "must be reached over https (bearer tokens are never sent over http)",
            });
        }
        if base.path() != "/" || base.query().is_some() || base.fragment().is_some() {
            return Err(ServiceBusError::InvalidNamespace {
                problem: "must be a bare https origin",
            });
        }
        check_queue(queue)?;
        let mut messages_url = base.clone();
        messages_url.set_path(&format!("{queue}/messages"));
        messages_url
            .query_pairs_mut()
            .append_pair("timeout", &SEND_TIMEOUT_SECONDS.to_string());
        let host = base.host_str().unwrap_or("the namespace").to_owned();
        Ok(Self {
            messages_url,
            queue: queue.to_owned(),
            pipeline: pipeline(
                options,
                PipelineAuth::Bearer {
                    credential,
                    scope: SERVICE_BUS_SCOPE.to_owned(),
                },
            ),
            missing_permission: format!("Azure Service Bus Data Sender on queue {queue} in {host}"),
        })
    }

    fn failure(
        &self,
        status: StatusCode,
        headers: &azure_core::http::headers::Headers,
        body: &[u8],
        operation: &str,
    ) -> PortError {
        match u16::from(status) {
            // Service Bus documents 403 on send as "quota exceeded or message too large";
            // size is checked before sending, so a quota answer means a full queue, which
            // drains. Any other 403 (a network rule, a disabled entity) is not a full queue
            // and is not retried as one.
            403 if is_quota_exceeded(body) => PortError::new(
                FailureKind::Transient { retry_after: None },
                format!("{operation}: HTTP 403 (the queue is full)"),
            ),
            403 => PortError::new(
                FailureKind::PermissionDenied {
                    missing: self.missing_permission.clone(),
                },
                format!(
                    "{operation}: HTTP 403 (refused for a reason other than the queue's quota: check the namespace's network rules and that the queue is enabled)"
                ),
            ),
            // 410: the queue does not exist.
            410 => PortError::new(
                FailureKind::NotFound,
                format!("{operation}: HTTP 410 (no such queue)"),
            ),
            _ => failure_from_status(
                status,
                headers,
                None,
                OffsetDateTime::now_utc(),
                &FailureContext {
                    operation,
                    missing_permission: &self.missing_permission,
                    policy_codes: &[],
                },
            ),
        }
    }
}

/// Whether a Service Bus 403's `<Detail>` is its quota answer ("The maximum entity size has
/// been reached or exceeded", `QuotaExceeded`). The text is only matched, never copied.
fn is_quota_exceeded(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    let detail = text
        .split_once("<detail>")
        .and_then(|(_, rest)| rest.split_once("</detail>"))
        .map_or(text.as_str(), |(detail, _)| detail);
    ["quota", "maximum entity size", "exceeded"]
        .iter()
        .any(|marker| detail.contains(marker))
}

/// Service Bus entity names: letters, digits, `.`, `-`, `_`, starting and ending with a
/// letter or digit, at most 260 characters (Service Bus naming rules for queues).
fn check_queue(queue: &str) -> Result<(), ServiceBusError> {
    QueueName::parse(queue).map(drop).map_err(|e| match e {
        ResourceNameError::Queue { problem } => ServiceBusError::InvalidQueue { problem },
        _ => ServiceBusError::InvalidQueue {
            problem: "is not a queue name",
        },
    })
}

fn check_id(what: &str, id: &str, operation: &str) -> Result<(), PortError> {
    if id.is_empty() || id.chars().count() > MAX_MESSAGE_ID_LEN {
        return Err(PortError::invalid(format!(
            "{operation}: the {what} must be 1 to {MAX_MESSAGE_ID_LEN} characters"
        )));
    }
    Ok(())
}

#[async_trait]
impl JobQueue for ServiceBusQueue {
    async fn send(&self, message: &OutgoingMessage) -> Result<(), PortError> {
        let operation = format!(
            "sending message {} to queue {}",
            message
                .message_id
                .chars()
                .take(MAX_MESSAGE_ID_LEN)
                .collect::<String>(),
            self.queue
        );
        check_id("MessageId", &message.message_id, &operation)?;
        check_id("SessionId", &message.session_id, &operation)?;
        if message.body.len() > MAX_MESSAGE_BYTES {
            return Err(PortError::invalid(format!(
                "{operation}: the body is {} bytes; Service Bus takes at most {MAX_MESSAGE_BYTES}",
                message.body.len()
            )));
        }
        let properties = BrokerProperties {
            message_id: &message.message_id,
            session_id: &message.session_id,
            scheduled_enqueue_time_utc: message.scheduled_enqueue.map(rfc1123),
        };
        let properties = serde_json::to_string(&properties)
            .map_err(|_| PortError::invalid(format!("{operation}: encoding BrokerProperties")))?;
        let mut request = Request::new(self.messages_url.clone(), Method::Post);
        request.insert_header(CONTENT_TYPE, message.content_type);
        request.insert_header(BROKER_PROPERTIES, properties);
        request.set_body(message.body.clone());
        let context = FailureContext {
            operation: &operation,
            missing_permission: &self.missing_permission,
            policy_codes: &[],
        };
        let response = http::send(&self.pipeline, &mut request, &context).await?;
        match response.status() {
            StatusCode::Created => Ok(()),
            status if status.is_success() => Ok(()),
            status => Err(self.failure(
                status,
                response.headers(),
                response.body().as_ref(),
                &operation,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use keyturn_testkit::transport::{Answer, CannedTransport, FixedToken};

    use super::*;

    /// A queue whose every request is answered with `status` and a body echoing input;
    /// the credential records the scopes it was asked for.
    fn queue(status: StatusCode) -> (ServiceBusQueue, Arc<CannedTransport>, Arc<FixedToken>) {
        let canned = CannedTransport::always(Answer::new(
            status,
            b"<Error><Code>x</Code><Detail>detail echoing input</Detail></Error>".to_vec(),
        ));
        let credential = FixedToken::new();
        let queue = ServiceBusQueue::new(
            "sb-keyturn.servicebus.windows.net",
            "rotations",
            credential.clone(),
            Some(canned.options()),
        )
        .expect("valid sender");
        (queue, canned, credential)
    }

    /// Tokens are asked for the Service Bus scope only.
    fn assert_service_bus_scope(credential: &FixedToken) {
        let scopes = credential.scopes();
        assert!(!scopes.is_empty());
        assert!(scopes.iter().all(|s| s == SERVICE_BUS_SCOPE), "{scopes:?}");
    }

    fn message() -> OutgoingMessage {
        OutgoingMessage {
            message_id: "kv-prod/secret/app-secret/0123".into(),
            session_id: "kv-prod/secret/app-secret".into(),
            scheduled_enqueue: Some(
                Utc.with_ymd_and_hms(2025, 3, 1, 8, 49, 37)
                    .single()
                    .expect("valid time"),
            ),
            content_type: "application/json",
            body: br#"{"v":1}"#.to_vec(),
        }
    }

    #[test]
    fn scheduled_times_are_written_in_rfc_1123_form() {
        let at = Utc
            .with_ymd_and_hms(1994, 11, 6, 8, 49, 37)
            .single()
            .expect("valid time");
        assert_eq!(rfc1123(at), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[tokio::test]
    async fn a_send_posts_the_body_with_broker_properties_and_a_bearer_token() {
        let (queue, canned, credential) = queue(StatusCode::Created);

        queue.send(&message()).await.expect("sent");

        assert_service_bus_scope(&credential);
        let seen = canned.seen();
        assert_eq!(
            seen[0].url,
            "https://sb-keyturn.servicebus.windows.net/rotations/messages?timeout=60"
        );
        let header = |name: &str| seen[0].header(name);
        assert_eq!(header("authorization"), Some("Bearer token-for-test"));
        assert_eq!(header("content-type"), Some("application/json"));
        let properties: serde_json::Value =
            serde_json::from_str(header("brokerproperties").expect("present")).expect("JSON");
        assert_eq!(
            properties,
            serde_json::json!({
                "MessageId": "kv-prod/secret/app-secret/0123",
                "SessionId": "kv-prod/secret/app-secret",
                "ScheduledEnqueueTimeUtc": "Sat, 01 Mar 2025 08:49:37 GMT",
            })
        );
    }

    #[tokio::test]
    async fn refusals_map_to_port_failures_without_the_services_text() {
        let cases = [
            (StatusCode::Unauthorized, "permission"),
            (StatusCode::Forbidden, "permission"),
            (StatusCode::Gone, "not found"),
            (StatusCode::InternalServerError, "transient"),
            (StatusCode::BadRequest, "invalid"),
        ];
        for (status, expected) in cases {
            let (queue, _, credential) = queue(status);

            let error = queue.send(&message()).await.expect_err("refused");

            assert_service_bus_scope(&credential);
            let kind = match error.kind {
                FailureKind::PermissionDenied { ref missing } => {
                    assert_eq!(
                        missing,
                        "Azure Service Bus Data Sender on queue rotations in sb-keyturn.servicebus.windows.net"
                    );
                    "permission"
                }
                FailureKind::Transient { .. } => "transient",
                FailureKind::NotFound => "not found",
                FailureKind::Invalid => "invalid",
                _ => "other",
            };
            assert_eq!(kind, expected, "{status:?}");
            assert!(!error.context.contains("echoing"), "{}", error.context);
        }
    }

    #[tokio::test]
    async fn only_a_quota_403_is_a_full_queue_worth_retrying() {
        let answer = |detail: &str| {
            CannedTransport::always(Answer::new(
                StatusCode::Forbidden,
                format!("<Error><Code>403</Code><Detail>{detail} TrackingId:1</Detail></Error>"),
            ))
        };
        let full = [
            "The maximum entity size has been reached or exceeded for Queue: 'sb://ns/rotations'. Size of entity in bytes:1073742326, Max entity size in bytes: 1073741824.",
            "QuotaExceeded: the quota of the namespace is used up.",
        ];
        let other = [
            "Ip has been prevented to connect to the endpoint.",
            "Messaging entity 'sb://ns/rotations' is currently disabled.",
        ];
        for (details, transient) in [(&full, true), (&other, false)] {
            for detail in details {
                let canned = answer(detail);
                let queue = ServiceBusQueue::new(
                    "sb-keyturn.servicebus.windows.net",
                    "rotations",
                    FixedToken::new(),
                    Some(canned.options()),
                )
                .expect("valid sender");
                let error = queue.send(&message()).await.expect_err("refused");
                assert_eq!(error.is_transient(), transient, "{detail}: {error:?}");
                assert!(!error.context.contains("TrackingId"), "{error:?}");
                if !transient {
                    assert!(
                        matches!(error.kind, FailureKind::PermissionDenied { .. }),
                        "{error:?}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn ids_and_bodies_beyond_service_bus_limits_are_refused_before_sending() {
        let (queue, canned, _) = queue(StatusCode::Created);
        let too_long = "x".repeat(MAX_MESSAGE_ID_LEN + 1);
        let cases = [
            OutgoingMessage {
                message_id: String::new(),
                ..message()
            },
            OutgoingMessage {
                session_id: too_long.clone(),
                ..message()
            },
            OutgoingMessage {
                message_id: too_long,
                ..message()
            },
            OutgoingMessage {
                body: vec![b'x'; MAX_MESSAGE_BYTES + 1],
                ..message()
            },
        ];
        for message in cases {
            let error = queue.send(&message).await.expect_err("refused");
            assert_eq!(error.kind, FailureKind::Invalid);
        }
        assert!(canned.seen().is_empty());
    }

    #[test]
    fn namespaces_and_queues_are_checked() {
        let credential: Arc<dyn TokenCredential> = FixedToken::new();
        for bad in ["", "https://sb.servicebus.windows.net", "sb/x", "sb x"] {
            assert!(
                matches!(
                    ServiceBusQueue::new(bad, "rotations", credential.clone(), None),
                    Err(ServiceBusError::InvalidNamespace { .. })
                ),
                "{bad:?}"
            );
        }
        for bad in [
            "",
            "-rotations",
            "rot/ations",
            "rotations-",
            &"q".repeat(261),
        ] {
            assert!(
                matches!(
                    ServiceBusQueue::new(
                        "sb.servicebus.windows.net",
                        bad,
                        credential.clone(),
                        None
                    ),
                    Err(ServiceBusError::InvalidQueue { .. })
                ),
                "{bad:?}"
            );
        }
        let http = Url::parse("http://127.0.0.1:1/").expect("valid");
        assert!(ServiceBusQueue::with_base_url(http, "rotations", credential, None).is_err());
    }
}
