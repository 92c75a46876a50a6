//! E-mail through Microsoft Graph `sendMail`, sent as one configured mailbox
//! (`POST /users/{mailbox}/sendMail`, application permission Mail.Send).
//!
//! Mail.Send as an application permission lets its holder send as any mailbox in the
//! tenant. Exchange Online narrows it to the one mailbox keyturn sends from: an
//! application access policy (`New-ApplicationAccessPolicy -AccessRight
//! RestrictAccess -PolicyScopeGroupId <mail-enabled group holding the mailbox>`) or, its
//! successor, RBAC for Applications (`New-ManagementRoleAssignment -Role "Application
//! Mail.Send" -CustomResourceScope <scope>`, with the Entra grant removed). The README's
//! permission matrix shows both. Graph then refuses any other mailbox with 403
//! `ErrorAccessDenied`, which this notifier reports as a missing permission.
//!
//! The body is plain text: nothing from the inventory (a credential's name, a tag) can
//! become markup in a reader's mail client. The message is not saved to Sent Items:
//! keyturn's record of what it sent is its alert ledger.
//!
//! sendMail is sent through the retrying pipeline: a retry after a lost answer can send
//! one mail twice, which is better than an alert that never arrives.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::adapters::azure::client::http::FailureContext;
use crate::adapters::azure::graph::GraphClient;
use crate::domain::contact::MailAddress;
use crate::ports::PortError;
use crate::ports::notify::{Notice, Notifier};

/// What sending needs, for the error when Graph refuses.
pub const MAIL_PERMISSION: &str = "Microsoft Graph Mail.Send (application), scoped by an Exchange application access policy or RBAC for Applications to the sending mailbox";

/// Sends notices as mail from one mailbox.
#[derive(Debug, Clone)]
pub struct GraphMailNotifier {
    channel: String,
    graph: GraphClient,
    mailbox: MailAddress,
}

impl GraphMailNotifier {
    pub fn new(channel: impl Into<String>, graph: GraphClient, mailbox: MailAddress) -> Self {
        Self {
            channel: channel.into(),
            graph,
            mailbox,
        }
    }
}

/// The plain-text body: summary, facts, then what to do.
pub fn text(notice: &Notice) -> String {
    let mut text = format!("{}\n\n", notice.summary);
    for fact in &notice.facts {
        text.push_str(&format!("{}: {}\n", fact.name, fact.value));
    }
    if !notice.actions.is_empty() {
        text.push_str("\nWhat to do:\n");
        for action in &notice.actions {
            text.push_str(&format!("- {action}\n"));
        }
    }
    text.push_str("\n-- keyturn\n");
    text
}

/// The sendMail request body (Graph `user: sendMail`: `message` and `saveToSentItems`).
pub fn request(notice: &Notice, people: &[MailAddress]) -> Value {
    let recipients: Vec<Value> = people
        .iter()
        .map(|person| json!({"emailAddress": {"address": person.as_str()}}))
        .collect();
    let importance = match notice.severity {
        crate::ports::notify::Severity::Critical => "high",
        _ => "normal",
    };
    json!({
        "message": {
            "subject": notice.title,
            "importance": importance,
            "body": {"contentType": "Text", "content": text(notice)},
            "toRecipients": recipients,
        },
        "saveToSentItems": false,
    })
}

#[async_trait]
impl Notifier for GraphMailNotifier {
    fn channel(&self) -> &str {
        &self.channel
    }

    async fn notify(&self, notice: &Notice, people: &[MailAddress]) -> Result<(), PortError> {
        if people.is_empty() {
            return Err(PortError::invalid(format!(
                "mailing notice {} through channel {}: no recipient",
                notice.id, self.channel
            )));
        }
        let operation = format!(
            "sending mail from {} through channel {}",
            self.mailbox, self.channel
        );
        let context = FailureContext {
            operation: &operation,
            missing_permission: MAIL_PERMISSION,
            policy_codes: &[],
        };
        self.graph
            .send_mail(&self.mailbox, &request(notice, people), &context)
            .await
    }
}
