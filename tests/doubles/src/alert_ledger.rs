//! The alert ledger in memory: deliveries by key, the first record standing, shared by
//! clones so two "instances" see one ledger.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keyturn::ports::PortError;
use keyturn::ports::alert_ledger::{AlertLedger, LedgerEntry, LedgerKey};

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
}
