//! Any HTTP receiver, as a CloudEvents 1.0 event in structured content mode: one JSON
//! object with the context attributes and `data`, sent as
//! `application/cloudevents+json` (CloudEvents HTTP protocol binding, section 3.2).
//!
//! `id` is the notice's stable id and `source` the deployment's, so a receiver that sees
//! the same `source` + `id` twice knows it is one event delivered again (CloudEvents
//! specification, `id`).

use async_trait::async_trait;
use chrono::SecondsFormat;
use serde_json::{Value, json};

use crate::adapters::notify::{WebhookClient, WebhookUrl};
use crate::domain::contact::MailAddress;
use crate::ports::PortError;
use crate::ports::notify::{Notice, Notifier};

pub const SPEC_VERSION: &str = "1.0";
/// The structured-mode media type (HTTP protocol binding, section 3.2.1).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
/// `source` when the deployment names none: a URI-reference, as the attribute requires.
pub const DEFAULT_SOURCE: &str = "/keyturn/alerts";

/// Posts notices as CloudEvents to one receiver.
#[derive(Debug, Clone)]
pub struct CloudEventsNotifier {
    channel: String,
    source: String,
    url: WebhookUrl,
    client: WebhookClient,
}

impl CloudEventsNotifier {
    /// `source` is the CloudEvents `source` of every event sent (for example the
    /// deployment's function app URL); `None` gives [`DEFAULT_SOURCE`].
    pub fn new(
        channel: impl Into<String>,
        source: Option<String>,
        url: WebhookUrl,
        client: WebhookClient,
    ) -> Self {
        Self {
            channel: channel.into(),
            source: source.unwrap_or_else(|| DEFAULT_SOURCE.to_owned()),
            url,
            client,
        }
    }
}

/// The structured event for `notice` from `source`.
pub fn event(notice: &Notice, people: &[MailAddress], source: &str) -> Value {
    let mut event = json!({
        "specversion": SPEC_VERSION,
        "id": notice.id,
        "source": source,
        "type": notice.kind.event_type(),
        "time": notice.time.to_rfc3339_opts(SecondsFormat::Secs, true),
        "datacontenttype": "application/json",
        "data": {
            "title": notice.title,
            "summary": notice.summary,
            "severity": notice.severity,
            "facts": notice.facts,
            "actions": notice.actions,
            "owners": people,
            "detail": notice.detail,
        },
    });
    if let Some(subject) = &notice.subject {
        event["subject"] = json!(subject);
    }
    event
}

#[async_trait]
impl Notifier for CloudEventsNotifier {
    fn channel(&self) -> &str {
        &self.channel
    }

    async fn notify(&self, notice: &Notice, people: &[MailAddress]) -> Result<(), PortError> {
        let body = serde_json::to_vec(&event(notice, people, &self.source))
            .map_err(|_| PortError::invalid("encoding the CloudEvent"))?;
        self.client
            .post(&self.url, STRUCTURED_CONTENT_TYPE, body, &self.channel)
            .await
    }
}
