//! Microsoft Teams through a Workflows webhook ("Post to a channel when a webhook request
//! is received"): the flow takes a message whose attachments are Adaptive Cards and posts
//! each card to the channel.
//!
//! Cards are version 1.4: the highest every Teams client renders in a channel post
//! through Workflows (Teams "Adaptive Cards" reference; 1.5 is desktop-only).

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::adapters::notify::{WebhookClient, WebhookUrl, clip};
use crate::domain::contact::MailAddress;
use crate::ports::PortError;
use crate::ports::notify::{Notice, Notifier, Severity};

/// The Adaptive Card schema a card names.
pub const ADAPTIVE_CARD_SCHEMA: &str = "http://adaptivecards.io/schemas/adaptive-card.json";
/// The card version sent (see the module documentation).
pub const ADAPTIVE_CARD_VERSION: &str = "1.4";
/// The attachment content type Teams reads as an Adaptive Card.
pub const ADAPTIVE_CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// Teams refuses a message above about 28 KB (Teams "Limits and specifications",
/// message size); facts are clipped so a card stays far below it.
const MAX_FACT_VALUE_CHARS: usize = 500;

/// Posts notices as Adaptive Cards to one Teams channel.
#[derive(Debug, Clone)]
pub struct TeamsNotifier {
    channel: String,
    url: WebhookUrl,
    client: WebhookClient,
}

impl TeamsNotifier {
    pub fn new(channel: impl Into<String>, url: WebhookUrl, client: WebhookClient) -> Self {
        Self {
            channel: channel.into(),
            url,
            client,
        }
    }
}

/// The Workflows message carrying `notice` as one Adaptive Card.
pub fn message(notice: &Notice, people: &[MailAddress]) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": ADAPTIVE_CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": card(notice, people),
        }],
    })
}

/// The Adaptive Card: a coloured title, the summary, the facts as a FactSet, then what
/// to do.
pub fn card(notice: &Notice, people: &[MailAddress]) -> Value {
    let colour = match notice.severity {
        Severity::Critical => "Attention",
        Severity::Warning => "Warning",
        Severity::Info => "Default",
    };
    let mut facts: Vec<Value> = notice
        .facts
        .iter()
        .map(|fact| json!({"title": fact.name, "value": clip(&fact.value, MAX_FACT_VALUE_CHARS)}))
        .collect();
    if !people.is_empty() {
        let names: Vec<&str> = people.iter().map(MailAddress::as_str).collect();
        facts.push(json!({"title": "For", "value": names.join(", ")}));
    }
    let mut body = vec![
        json!({
            "type": "TextBlock",
            "text": notice.title,
            "size": "Medium",
            "weight": "Bolder",
            "color": colour,
            "wrap": true,
        }),
        json!({"type": "TextBlock", "text": notice.summary, "wrap": true}),
    ];
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    if !notice.actions.is_empty() {
        body.push(json!({
            "type": "TextBlock",
            "text": "What to do",
            "weight": "Bolder",
            "spacing": "Medium",
            "wrap": true,
        }));
        for action in &notice.actions {
            body.push(json!({"type": "TextBlock", "text": format!("- {action}"), "wrap": true}));
        }
    }
    json!({
        "$schema": ADAPTIVE_CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": ADAPTIVE_CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    })
}

#[async_trait]
impl Notifier for TeamsNotifier {
    fn channel(&self) -> &str {
        &self.channel
    }

    async fn notify(&self, notice: &Notice, people: &[MailAddress]) -> Result<(), PortError> {
        let body = serde_json::to_vec(&message(notice, people))
            .map_err(|_| PortError::invalid("encoding the Teams card"))?;
        self.client
            .post(&self.url, "application/json", body, &self.channel)
            .await
    }
}
