//! The alert ledger: what was delivered to which route, so an alert goes out once per
//! credential, threshold and route, across sweeps and restarts (Table storage in Azure,
//! the embedded SQLite file locally).
//!
//! The alerts engine claims a delivery before making it ([`AlertLedger::claim`]), and a
//! claim is a lease: it is recorded as `claimed` until a time a few minutes on (longer
//! than one send with its retries). Of several instances sweeping at once only the one
//! whose claim is made sends; the others find a live claim and leave it alone. A send that
//! succeeds is confirmed ([`AlertLedger::confirm`]: the entry becomes `sent`, with the time
//! it was confirmed) and is never sent again; a send that fails releases the claim
//! ([`AlertLedger::release`]) so the next run sends it. An instance that stops between
//! claim and confirmation (a crash, a host recycled) leaves a claim whose lease runs out:
//! the next run on any instance takes it over, exactly one instance winning (an
//! ETag-conditional update in Table storage, a conditional update inside one transaction
//! in SQLite), and sends it. So a delivery is made at least once: the rare repeat (the
//! stopped instance had sent but not yet confirmed) carries the same notice id (the
//! CloudEvents `id`), by which a receiver drops it.
//!
//! Entries written before claims were leases have no state: they were recorded only by
//! instances about to send, and are read as `sent`.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
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

/// One delivery: as listed, a confirmed one; as handed to [`AlertLedger::claim`] or
/// [`AlertLedger::confirm`], the one being claimed or confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub key: LedgerKey,
    /// What was alerted on: a credential's inventory id, or `digest`.
    pub subject: String,
    /// The route it went to.
    pub route: String,
    /// The threshold in days (`0`: on expiry); `None` for a digest.
    pub threshold: Option<u32>,
    /// When the delivery was confirmed sent. Handed to [`AlertLedger::claim`]: when the
    /// claim is made (the claimer's "now", from which its lease runs and against which
    /// another claim's lease is judged).
    pub sent_at: DateTime<Utc>,
}

/// What holds a claim: written with it, handed back to confirm or release it. A retried
/// claim that finds its own (an insert whose answer was lost) knows it by this.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimToken(String);

impl ClaimToken {
    /// A new, unguessable token (a random UUID).
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// A stored token, as the adapter read it back.
    pub fn from_stored(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ClaimToken {
    fn default() -> Self {
        Self::new()
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This call holds the claim until `until`: send, then confirm or release it.
    /// `taken_over`: an earlier claim's lease had run out (its sender stopped before
    /// confirming, and may have sent: a receiver drops the repeat by the notice id).
    Made {
        token: ClaimToken,
        until: DateTime<Utc>,
        taken_over: bool,
    },
    /// Another claim's lease runs until `until`: its holder is sending. Left alone.
    Held { until: DateTime<Utc> },
    /// Confirmed sent at `at`: never sent again.
    Sent { at: DateTime<Utc> },
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
    /// When the delivery `key` was confirmed sent; `None` when it never was, or is only
    /// claimed. An entry without a state (written before claims were leases) is sent.
    async fn sent(&self, key: &LedgerKey) -> Result<Option<DateTime<Utc>>, PortError>;

    /// Claims a delivery before it is sent, at `entry.sent_at`, for `lease`. Atomic: of
    /// any number of instances claiming one key at once, at most one is answered
    /// [`Claim::Made`]. A key never claimed, or whose claim's lease ended at or before
    /// `entry.sent_at`, is claimed (the latter taken over); a live claim is
    /// [`Claim::Held`]; a sent entry is [`Claim::Sent`] and is never taken over.
    async fn claim(&self, entry: &LedgerEntry, lease: TimeDelta) -> Result<Claim, PortError>;

    /// Confirms a claimed delivery was sent, at `entry.sent_at`: the entry becomes
    /// `sent`. Confirming what is sent already keeps the first confirmation; confirming
    /// after another instance took the claim over still records it sent (it was). An
    /// entry gone meanwhile (housekeeping) is written again as sent.
    async fn confirm(&self, entry: &LedgerEntry, token: &ClaimToken) -> Result<(), PortError>;

    /// Gives a claim back (its sending failed), so the next run may claim it again. Only
    /// a claim still held with `token` is removed: one taken over by another instance,
    /// or confirmed, is left as it is. Releasing what is not held is not an error.
    async fn release(&self, key: &LedgerKey, token: &ClaimToken) -> Result<(), PortError>;

    /// Forgets entries (sent, or claims never confirmed) recorded before `before`
    /// (housekeeping: an alert's key holds the credential's expiry, so old keys are never
    /// asked for again). Returns how many.
    async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64, PortError>;

    /// One page of the deliveries confirmed sent with `sent_at` in `[from, to)` (never a
    /// claim, live or not): at most `limit` (capped at [`MAX_LEDGER_PAGE`]), continuing
    /// from a previous page's `next`. In no promised order, but every such delivery is on
    /// exactly one page of a listing that is followed to its end. A page may be empty
    /// while `next` is still given. A token the adapter did not write is refused
    /// (`Invalid`).
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
