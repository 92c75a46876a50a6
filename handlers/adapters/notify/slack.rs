//! Slack through an incoming webhook: `text` (the notification and fallback line) and
//! Block Kit blocks (a header, the summary, the facts as fields, what to do).
//!
//! Slack refuses blocks over its limits (Block Kit reference): a header's text is at most
//! 150 characters, a section's text 3,000, a section at most 10 fields of 2,000 each. Text
//! is clipped to them, and `&`, `<` and `>` are escaped as Slack's formatting guide asks,
//! so a credential's name cannot turn into a link or a mention.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::adapters::notify::{WebhookClient, WebhookUrl, clip};
use crate::domain::contact::MailAddress;
use crate::ports::PortError;
use crate::ports::notify::{Notice, Notifier, Severity};

pub const MAX_HEADER_CHARS: usize = 150;
pub const MAX_SECTION_CHARS: usize = 3000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD_CHARS: usize = 2000;

/// Posts notices to one Slack channel.
#[derive(Debug, Clone)]
pub struct SlackNotifier {
    channel: String,
    url: WebhookUrl,
    client: WebhookClient,
}

impl SlackNotifier {
    pub fn new(channel: impl Into<String>, url: WebhookUrl, client: WebhookClient) -> Self {
        Self {
            channel: channel.into(),
            url,
            client,
        }
    }
}

/// Slack's escaping for text in `mrkdwn` and `plain_text`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The incoming-webhook payload for `notice`.
pub fn payload(notice: &Notice, people: &[MailAddress]) -> Value {
    let marker = match notice.severity {
        Severity::Critical => ":red_circle:",
        Severity::Warning => ":warning:",
        Severity::Info => ":information_source:",
    };
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {"type": "plain_text", "text": clip(&escape(&notice.title), MAX_HEADER_CHARS)},
        }),
        json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": clip(&format!("{marker} {}", escape(&notice.summary)), MAX_SECTION_CHARS)},
        }),
    ];
    let mut facts: Vec<(String, String)> = notice
        .facts
        .iter()
        .map(|fact| (fact.name.clone(), fact.value.clone()))
        .collect();
    if !people.is_empty() {
        let names: Vec<&str> = people.iter().map(MailAddress::as_str).collect();
        facts.push(("For".to_owned(), names.join(", ")));
    }
    for chunk in facts.chunks(MAX_FIELDS) {
        let fields: Vec<Value> = chunk
            .iter()
            .map(|(name, value)| {
                json!({"type": "mrkdwn", "text": clip(&format!("*{}*\n{}", escape(name), escape(value)), MAX_FIELD_CHARS)})
            })
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if !notice.actions.is_empty() {
        let steps: Vec<String> = notice
            .actions
            .iter()
            .map(|action| format!("• {}", escape(action)))
            .collect();
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": clip(&format!("*What to do*\n{}", steps.join("\n")), MAX_SECTION_CHARS)},
        }));
    }
    json!({
        "text": clip(&format!("{}: {}", escape(&notice.title), escape(&notice.summary)), MAX_SECTION_CHARS),
        "blocks": blocks,
    })
}

#[async_trait]
impl Notifier for SlackNotifier {
    fn channel(&self) -> &str {
        &self.channel
    }

    async fn notify(&self, notice: &Notice, people: &[MailAddress]) -> Result<(), PortError> {
        let body = serde_json::to_vec(&payload(notice, people))
            .map_err(|_| PortError::invalid("encoding the Slack message"))?;
        self.client
            .post(&self.url, "application/json", body, &self.channel)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_formatting_characters_are_escaped() {
        assert_eq!(
            escape("<!channel> & <@U1>"),
            "&lt;!channel&gt; &amp; &lt;@U1&gt;"
        );
    }
}
