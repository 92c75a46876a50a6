//! The alert ledger in memory: deliveries by key, claimed and confirmed under one lock,
//! shared by clones so two "instances" see one ledger.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use keyturn::ports::PortError;
use keyturn::ports::alert_ledger::{
    AlertLedger, Claim, ClaimToken, LedgerEntry, LedgerKey, LedgerPage, MAX_LEDGER_PAGE,
};

use crate::locked;

/// An entry as held: the delivery, and its claim while it is not confirmed.
#[derive(Debug, Clone)]
struct Held {
    entry: LedgerEntry,
    /// `None`: sent. Also how an entry written before claims were leases is held (see
    /// [`MemoryAlertLedger::put_legacy`]): it reads as sent.
    claim: Option<(ClaimToken, DateTime<Utc>)>,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryAlertLedger {
    entries: Arc<Mutex<BTreeMap<LedgerKey, Held>>>,
}

impl MemoryAlertLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every confirmed delivery, in key order.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        locked(&self.entries)
            .values()
            .filter(|held| held.claim.is_none())
            .map(|held| held.entry.clone())
            .collect()
    }

    /// Stores an entry as a ledger written before claims were leases holds it: no state.
    pub fn put_legacy(&self, entry: &LedgerEntry) {
        locked(&self.entries).insert(
            entry.key.clone(),
            Held {
                entry: entry.clone(),
                claim: None,
            },
        );
    }
}

#[async_trait]
impl AlertLedger for MemoryAlertLedger {
    async fn sent(&self, key: &LedgerKey) -> Result<Option<DateTime<Utc>>, PortError> {
        Ok(locked(&self.entries)
            .get(key)
            .filter(|held| held.claim.is_none())
            .map(|held| held.entry.sent_at))
    }

    async fn claim(&self, entry: &LedgerEntry, lease: TimeDelta) -> Result<Claim, PortError> {
        let mut entries = locked(&self.entries);
        let now = entry.sent_at;
        let taken_over = match entries.get(&entry.key) {
            None => false,
            Some(Held { claim: None, entry }) => return Ok(Claim::Sent { at: entry.sent_at }),
            Some(Held {
                claim: Some((_, until)),
                ..
            }) if *until > now => return Ok(Claim::Held { until: *until }),
            Some(_) => true,
        };
        let token = ClaimToken::new();
        let until = now + lease;
        entries.insert(
            entry.key.clone(),
            Held {
                entry: entry.clone(),
                claim: Some((token.clone(), until)),
            },
        );
        Ok(Claim::Made {
            token,
            until,
            taken_over,
        })
    }

    async fn confirm(&self, entry: &LedgerEntry, _token: &ClaimToken) -> Result<(), PortError> {
        let mut entries = locked(&self.entries);
        if entries
            .get(&entry.key)
            .is_some_and(|held| held.claim.is_none())
        {
            return Ok(());
        }
        entries.insert(
            entry.key.clone(),
            Held {
                entry: entry.clone(),
                claim: None,
            },
        );
        Ok(())
    }

    async fn release(&self, key: &LedgerKey, token: &ClaimToken) -> Result<(), PortError> {
        let mut entries = locked(&self.entries);
        let held_by_token = entries
            .get(key)
            .is_some_and(|held| held.claim.as_ref().is_some_and(|(t, _)| t == token));
        if held_by_token {
            entries.remove(key);
        }
        Ok(())
    }

    async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64, PortError> {
        let mut entries = locked(&self.entries);
        let count = entries.len();
        entries.retain(|_, held| held.entry.sent_at >= before);
        Ok((count - entries.len()) as u64)
    }

    /// Pages in key order; the token is the last key of the page before.
    async fn sent_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        next: Option<&str>,
        limit: u32,
    ) -> Result<LedgerPage, PortError> {
        let after = match next {
            Some(token) => Some(
                LedgerKey::parse(token)
                    .ok_or_else(|| PortError::invalid("not a page token of the alert ledger"))?,
            ),
            None => None,
        };
        let limit = limit.clamp(1, MAX_LEDGER_PAGE) as usize;
        let entries: Vec<LedgerEntry> = locked(&self.entries)
            .values()
            .filter(|held| held.claim.is_none())
            .map(|held| &held.entry)
            .filter(|entry| after.as_ref().is_none_or(|after| entry.key > *after))
            .filter(|entry| from <= entry.sent_at && entry.sent_at < to)
            .take(limit)
            .cloned()
            .collect();
        let next = (entries.len() == limit)
            .then(|| entries.last().map(|entry| entry.key.as_str().to_owned()))
            .flatten();
        Ok(LedgerPage { entries, next })
    }
}
