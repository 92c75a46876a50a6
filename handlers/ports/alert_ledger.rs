//! The alert ledger: what was delivered to which route, so an alert goes out once per
//! credential, threshold and route, across sweeps and restarts (Table storage in Azure,
//! the embedded SQLite file locally).
//!
//! The alerts engine records a delivery before making it, as a claim ([`AlertLedger::record`]
//! says whether this call made the record): of several instances sweeping at once only the
//! one whose record is made sends, and a sending that fails forgets the claim so the next
//! run sends it. A crash between claim and send loses that one delivery rather than sending
//! it twice. Receivers can still drop a repeat by the notice's stable id (the CloudEvents
//! `id`).

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::ports::PortError;

/// A ledger key: the hex SHA-256 of what identifies one delivery. Fixed length and safe
/// as a Table row key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LedgerKey(String);

impl LedgerKey {
    /// The key of the delivery identified by `parts` (joined by `|`, which none contains).
    pub fn of(parts: &[&str]) -> Self {
        Self(hex::encode(Sha256::digest(parts.join("|").as_bytes())))
    }

    /// Parses a stored key: 64 lower-case hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LedgerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One recorded delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub key: LedgerKey,
    /// What was alerted on: a credential's inventory id, or `digest`.
    pub subject: String,
    /// The route it went to.
    pub route: String,
    /// The threshold in days (`0`: on expiry); `None` for a digest.
    pub threshold: Option<u32>,
    pub sent_at: DateTime<Utc>,
}

/// One page of a listing: the deliveries and where the next page begins (`None`: this
/// was the last). The token is the adapter's own; hand it back as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntry>,
    pub next: Option<String>,
}

/// Most deliveries one listing page holds: Table storage's largest page.
pub const MAX_LEDGER_PAGE: u32 = 1000;

/// Where deliveries are remembered.
#[async_trait]
pub trait AlertLedger: Send + Sync + fmt::Debug {
    /// When the delivery `key` was recorded; `None` when it never was.
    async fn sent(&self, key: &LedgerKey) -> Result<Option<DateTime<Utc>>, PortError>;

    /// Records a delivery. The first record of a key stands: recording the same key
    /// again (a retried run, a second instance) changes nothing and is not an error.
    /// Returns whether this call made the record (`false`: one stood already), so a
    /// record made before sending is a claim only one instance wins.
    async fn record(&self, entry: &LedgerEntry) -> Result<bool, PortError>;

    /// Forgets one delivery: a claim whose sending failed, so the next run may try again.
    /// Forgetting a key never recorded is not an error.
    async fn forget(&self, key: &LedgerKey) -> Result<(), PortError>;

    /// Forgets deliveries recorded before `before` (housekeeping: an alert's key holds the
    /// credential's expiry, so old keys are never asked for again). Returns how many.
    async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64, PortError>;

    /// One page of the deliveries recorded with `sent_at` in `[from, to)`: at most `limit`
    /// (capped at [`MAX_LEDGER_PAGE`]), continuing from a previous page's `next`. In no
    /// promised order, but every such delivery is on exactly one page of a listing that
    /// is followed to its end. A page may be empty while `next` is still given. A token
    /// the adapter did not write is refused (`Invalid`).
    async fn sent_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        next: Option<&str>,
        limit: u32,
    ) -> Result<LedgerPage, PortError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_parse_back() {
        let key = LedgerKey::of(&["credential", "2026-12-20T00:00:00Z", "14", "ops"]);
        assert_eq!(
            key,
            LedgerKey::of(&["credential", "2026-12-20T00:00:00Z", "14", "ops"])
        );
        assert_ne!(
            key,
            LedgerKey::of(&["credential", "2026-12-20T00:00:00Z", "7", "ops"])
        );
        assert_eq!(LedgerKey::parse(key.as_str()), Some(key));
        assert_eq!(LedgerKey::parse("ABC"), None);
    }
}
