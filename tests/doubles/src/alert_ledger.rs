//! The alert ledger in memory: deliveries by key, the first record standing, shared by
//! clones so two "instances" see one ledger.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keyturn::ports::PortError;
use keyturn::ports::alert_ledger::{
    AlertLedger, LedgerEntry, LedgerKey, LedgerPage, MAX_LEDGER_PAGE,
};

use crate::locked;

#[derive(Debug, Clone, Default)]
pub struct MemoryAlertLedger {
    entries: Arc<Mutex<BTreeMap<LedgerKey, LedgerEntry>>>,
}

impl MemoryAlertLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every recorded delivery, in key order.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        locked(&self.entries).values().cloned().collect()
    }
}

#[async_trait]
impl AlertLedger for MemoryAlertLedger {
    async fn sent(&self, key: &LedgerKey) -> Result<Option<DateTime<Utc>>, PortError> {
        Ok(locked(&self.entries).get(key).map(|entry| entry.sent_at))
    }

    async fn record(&self, entry: &LedgerEntry) -> Result<bool, PortError> {
        let mut entries = locked(&self.entries);
        if entries.contains_key(&entry.key) {
            return Ok(false);
        }
        entries.insert(entry.key.clone(), entry.clone());
        Ok(true)
    }

    async fn forget(&self, key: &LedgerKey) -> Result<(), PortError> {
        locked(&self.entries).remove(key);
        Ok(())
    }

    async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64, PortError> {
        let mut entries = locked(&self.entries);
        let count = entries.len();
        entries.retain(|_, entry| entry.sent_at >= before);
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
