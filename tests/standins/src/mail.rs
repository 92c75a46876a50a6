//! Graph `sendMail` on the Graph stand-in: `POST /v1.0/users/{id | userPrincipalName}/sendMail`
//! with the application permission Mail.Send, as Graph's `user: sendMail` reference
//! describes it. Strict where Graph is: the mailbox must exist (404
//! `ErrorInvalidUser`), an Exchange application access policy limits the mailboxes an
//! application may send as (403 `ErrorAccessDenied`), the body is JSON with a `message`
//! whose properties are message properties (400 `RequestBodyRead` for an unknown one),
//! at least one recipient (400 `ErrorInvalidRecipients`), a `body.contentType` of `Text`
//! or `HTML`; accepted mail is answered 202 with no body and kept for the test.

use std::collections::{BTreeMap, BTreeSet};

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use uuid::Uuid;

use crate::Shared;
use crate::auth::Grant;
use crate::graph::GraphStandin;

/// The application permission sendMail needs (Graph permissions reference).
pub const MAIL_SEND: &str = "Mail.Send";

/// The mailboxes of the tenant and what was sent.
#[derive(Debug, Default)]
pub(crate) struct PostOffice {
    /// Lower-case SMTP addresses (which are also the users' UPNs here).
    mailboxes: BTreeSet<String>,
    /// Application access policies: an application listed here may send only as these
    /// mailboxes (`New-ApplicationAccessPolicy -AccessRight RestrictAccess`).
    restricted: BTreeMap<Uuid, BTreeSet<String>>,
    sent: Vec<SentMail>,
}

/// One accepted sendMail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub content_type: String,
    pub content: String,
    pub importance: Option<String>,
    pub save_to_sent_items: Option<bool>,
}

impl GraphStandin<'_> {
    /// Creates a mailbox (a user with an Exchange Online mailbox) at `address`.
    pub fn seed_mailbox(&self, address: &str) {
        self.shared
            .post_office()
            .mailboxes
            .insert(address.to_ascii_lowercase());
    }

    /// An application access policy: `app_id` may send only as `mailboxes`.
    pub fn restrict_mail_send(&self, app_id: Uuid, mailboxes: &[&str]) {
        self.shared.post_office().restricted.insert(
            app_id,
            mailboxes.iter().map(|m| m.to_ascii_lowercase()).collect(),
        );
    }

    /// Mail accepted so far, oldest first.
    pub fn sent_mail(&self) -> Vec<SentMail> {
        self.shared.post_office().sent.clone()
    }
}

/// A refusal in Graph's error shape (the Graph router renders it).
pub(crate) struct MailRefusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> MailRefusal {
    MailRefusal {
        status,
        code,
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SendMailBody {
    message: Option<MessageBody>,
    save_to_sent_items: Option<bool>,
}

/// The `message` properties a sendMail may set (Graph `message` resource, the writable
/// subset keyturn could use); any other name is refused as Graph refuses an undeclared
/// property.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MessageBody {
    subject: Option<String>,
    body: Option<ItemBody>,
    #[serde(default)]
    to_recipients: Vec<Recipient>,
    #[serde(default)]
    cc_recipients: Vec<Recipient>,
    #[serde(default)]
    bcc_recipients: Vec<Recipient>,
    importance: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ItemBody {
    content_type: Option<String>,
    content: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Recipient {
    email_address: EmailAddress,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailAddress {
    address: Option<String>,
    #[allow(dead_code)]
    name: Option<String>,
}

pub(crate) fn send_mail(
    shared: &Shared,
    grant: &Grant,
    user: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, MailRefusal> {
    let mailbox = url::form_urlencoded::parse(format!("u={user}").as_bytes())
        .next()
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "The content type is not supported.",
        ));
    }
    let mut office = shared.post_office();
    if !office.mailboxes.contains(&mailbox) {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            format!("The requested user '{mailbox}' is invalid."),
        ));
    }
    if let Some(allowed) = office.restricted.get(&grant.app_id)
        && !allowed.contains(&mailbox)
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
        ));
    }
    let parsed: SendMailBody = serde_json::from_slice(body).map_err(|error| {
        let text = error.to_string();
        let message = match text.strip_prefix("unknown field `").and_then(|r| r.split_once('`')) {
            Some((name, _)) => format!(
                "The property '{name}' does not exist on type 'microsoft.graph.message'. Make sure to only use property names that are defined by the type or mark the type as open type."
            ),
            None => "Empty Payload. JSON content expected.".to_owned(),
        };
        refuse(StatusCode::BAD_REQUEST, "RequestBodyRead", message)
    })?;
    let message = parsed.message.ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidParameter",
            "The value of the parameter 'Message' is empty.",
        )
    })?;
    let recipients: Vec<&Recipient> = message
        .to_recipients
        .iter()
        .chain(&message.cc_recipients)
        .chain(&message.bcc_recipients)
        .collect();
    let valid_address = |r: &&Recipient| {
        r.email_address.address.as_deref().is_some_and(|a| {
            a.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        })
    };
    if recipients.is_empty() || !recipients.iter().all(valid_address) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid., A message can't be sent because it contains no recipients.",
        ));
    }
    let item = message.body.unwrap_or(ItemBody {
        content_type: None,
        content: None,
    });
    let content_type = item.content_type.unwrap_or_else(|| "Text".to_owned());
    if !["text", "html"].contains(&content_type.to_ascii_lowercase().as_str()) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            format!("Requested value '{content_type}' was not found."),
        ));
    }
    if let Some(importance) = &message.importance
        && !["low", "normal", "high"].contains(&importance.to_ascii_lowercase().as_str())
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            format!("Requested value '{importance}' was not found."),
        ));
    }
    office.sent.push(SentMail {
        from: mailbox,
        to: message
            .to_recipients
            .iter()
            .filter_map(|r| r.email_address.address.clone())
            .collect(),
        subject: message.subject.unwrap_or_default(),
        content_type,
        content: item.content.unwrap_or_default(),
        importance: message.importance,
        save_to_sent_items: parsed.save_to_sent_items,
    });
    Ok(StatusCode::ACCEPTED.into_response())
}
