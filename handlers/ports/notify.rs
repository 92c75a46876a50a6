//! Where alerts and digests are delivered: a Teams channel (Workflows webhook), a Slack
//! channel (incoming webhook), a generic webhook (CloudEvents 1.0) or people's mailboxes
//! (Graph `sendMail`). The alerts engine says what to tell whom as a [`Notice`]; each
//! adapter renders it in its channel's format.
//!
//! A notice never carries a secret value: it names credentials, their expiry and what to
//! do, as the inventory does. A webhook's URL is itself a secret (whoever holds it can
//! post to the channel), so it lives inside the adapter and never in a notice, an error or
//! a log line: [`Notifier::channel`] names the route instead.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::contact::MailAddress;
use crate::ports::PortError;

/// What a notice is about. Each maps to a CloudEvents `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum NoticeKind {
    /// A credential crossed a threshold before its expiry.
    Expiring,
    /// A credential's expiry has passed.
    Expired,
    /// The periodic digest: what expires soon, what is failing, what is unmanaged.
    Digest,
}

impl NoticeKind {
    /// The CloudEvents `type` (reverse-DNS prefixed, as the specification recommends).
    pub fn event_type(self) -> &'static str {
        match self {
            NoticeKind::Expiring => "io.keyturn.credential.expiring",
            NoticeKind::Expired => "io.keyturn.credential.expired",
            NoticeKind::Digest => "io.keyturn.digest",
        }
    }
}

/// How urgent a notice is; channels colour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One labelled line of a notice (`Expires` → `2026-12-20 (14 days)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fact {
    pub name: String,
    pub value: String,
}

impl Fact {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// What to tell someone, independent of the channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    /// Stable for one alert (the same credential and threshold give the same id), so a
    /// receiver can drop a repeated delivery (the CloudEvents `id`).
    pub id: String,
    pub kind: NoticeKind,
    pub severity: Severity,
    pub title: String,
    pub summary: String,
    pub facts: Vec<Fact>,
    /// What to do, one step per entry.
    pub actions: Vec<String>,
    /// What the notice is about (a credential's stable inventory id), the CloudEvents
    /// `subject`; `None` for a digest.
    pub subject: Option<String>,
    pub time: DateTime<Utc>,
    /// Machine-readable detail for receivers that process notices (the CloudEvents
    /// `data.detail`).
    pub detail: serde_json::Value,
}

/// A channel notices are delivered to.
#[async_trait]
pub trait Notifier: Send + Sync + fmt::Debug {
    /// The channel's name for logs and errors: the configured route name, never its URL.
    fn channel(&self) -> &str;

    /// Delivers `notice`, addressed to `people` (their owners). A mail channel sends to
    /// them and refuses an empty list; a webhook channel posts to its one destination and
    /// names them in the message.
    async fn notify(&self, notice: &Notice, people: &[MailAddress]) -> Result<(), PortError>;
}
