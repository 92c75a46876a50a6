//! [`AlertLedger`] in the embedded SQLite file: one row per delivery, inserted once
//! (`INSERT OR IGNORE`, so the first record of a key stands).

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{OptionalExtension, params};

use crate::adapters::local::store::{LocalStore, StoreError};
use crate::ports::PortError;
use crate::ports::alert_ledger::{AlertLedger, LedgerEntry, LedgerKey};

#[derive(Debug, Clone)]
pub struct LocalAlertLedger {
    store: LocalStore,
}

impl LocalAlertLedger {
    pub fn new(store: LocalStore) -> Self {
        Self { store }
    }
}

#[async_trait]
impl AlertLedger for LocalAlertLedger {
    async fn sent(&self, key: &LedgerKey) -> Result<Option<DateTime<Utc>>, PortError> {
        let key = key.as_str().to_owned();
        let millis: Option<i64> = self
            .store
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT sent_at FROM alert_ledger WHERE key = ?1",
                        params![key],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("reading the alert ledger"))
            })
            .await
            .map_err(|e| e.into_port_error("reading the alert ledger"))?;
        millis
            .map(|millis| {
                Utc.timestamp_millis_opt(millis)
                    .single()
                    .ok_or_else(|| PortError::invalid("the alert ledger holds an invalid time"))
            })
            .transpose()
    }

    async fn record(&self, entry: &LedgerEntry) -> Result<bool, PortError> {
        let entry = entry.clone();
        self.store
            .write(move |tx| {
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO alert_ledger (key, subject, route, threshold, sent_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        entry.key.as_str(),
                        entry.subject,
                        entry.route,
                        entry.threshold,
                        entry.sent_at.timestamp_millis()
                    ],
                )
                .map_err(StoreError::sqlite("recording an alert"))?;
                Ok(inserted == 1)
            })
            .await
            .map_err(|e| e.into_port_error("recording an alert"))
    }

    async fn forget(&self, key: &LedgerKey) -> Result<(), PortError> {
        let key = key.as_str().to_owned();
        self.store
            .write(move |tx| {
                tx.execute("DELETE FROM alert_ledger WHERE key = ?1", params![key])
                    .map_err(StoreError::sqlite("forgetting an alert"))?;
                Ok(())
            })
            .await
            .map_err(|e| e.into_port_error("forgetting an alert"))
    }

    async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64, PortError> {
        let before = before.timestamp_millis();
        self.store
            .write(move |tx| {
                let removed = tx
                    .execute(
                        "DELETE FROM alert_ledger WHERE sent_at < ?1",
                        params![before],
                    )
                    .map_err(StoreError::sqlite("forgetting old alerts"))?;
                Ok(removed as u64)
            })
            .await
            .map_err(|e| e.into_port_error("forgetting old alerts"))
    }
}
