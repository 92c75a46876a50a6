//! The audit log's store in memory: positions are sequence numbers, a taken position is a
//! conflict (as in every real store), and one action can be refused for good, as a
//! misconfigured log would.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use keyturn::ports::FailureKind;
use keyturn::ports::PortError;
use keyturn::ports::audit::{AuditEntry, AuditRecord, AuditStore, StoredEntry};

use crate::locked;

#[derive(Debug, Default)]
pub struct MemoryAuditStore {
    entries: Mutex<BTreeMap<u64, AuditEntry>>,
    refused: Mutex<Option<String>>,
}

impl MemoryAuditStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, every entry recording `action` is refused (`Invalid`).
    pub fn refuse(&self, action: &str) {
        *locked(&self.refused) = Some(action.to_owned());
    }

    /// Reaches under the store, as someone with access to the storage would: `edit` gets
    /// the stored entries by position, to change, remove or move.
    pub fn tamper(&self, edit: impl FnOnce(&mut BTreeMap<u64, AuditEntry>)) {
        edit(&mut locked(&self.entries));
    }

    /// The stored records, in order.
    pub fn records(&self) -> Vec<AuditRecord> {
        locked(&self.entries)
            .values()
            .map(|entry| entry.record.clone())
            .collect()
    }
}

#[async_trait]
impl AuditStore for MemoryAuditStore {
    async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
        Ok(locked(&self.entries)
            .iter()
            .next_back()
            .map(|(position, entry)| StoredEntry {
                position: *position,
                content: Ok(entry.clone()),
            }))
    }

    async fn append(&self, entry: &AuditEntry) -> Result<(), PortError> {
        if locked(&self.refused).as_deref() == Some(entry.record.action.as_str()) {
            return Err(PortError::invalid("the audit log refused the entry"));
        }
        let mut entries = locked(&self.entries);
        if entries.contains_key(&entry.sequence) {
            return Err(PortError::new(FailureKind::Conflict, "position taken"));
        }
        entries.insert(entry.sequence, entry.clone());
        Ok(())
    }

    async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError> {
        Ok(locked(&self.entries)
            .range(from..from.saturating_add(u64::from(count)))
            .map(|(position, entry)| StoredEntry {
                position: *position,
                content: Ok(entry.clone()),
            })
            .collect())
    }
}
