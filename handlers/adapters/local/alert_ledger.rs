//! [`AlertLedger`] in the embedded SQLite file: one row per delivery, inserted once
//! (`INSERT OR IGNORE`, so the first record of a key stands).

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{OptionalExtension, params};

use crate::adapters::local::store::{LocalStore, StoreError};
use crate::ports::PortError;
use crate::ports::alert_ledger::{
    AlertLedger, LedgerEntry, LedgerKey, LedgerPage, MAX_LEDGER_PAGE,
};

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

    /// Pages in key order; the token is the last key of the page before.
    async fn sent_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        next: Option<&str>,
        limit: u32,
    ) -> Result<LedgerPage, PortError> {
        let after = match next {
            Some(token) => LedgerKey::parse(token)
                .ok_or_else(|| PortError::invalid("not a page token of the alert ledger"))?
                .as_str()
                .to_owned(),
            None => String::new(),
        };
        let limit = limit.clamp(1, MAX_LEDGER_PAGE);
        let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
        type Row = (String, String, String, Option<u32>, i64);
        let rows: Vec<Row> = self
            .store
            .call(move |connection| {
                let mut statement = connection
                    .prepare(
                        "SELECT key, subject, route, threshold, sent_at FROM alert_ledger
                         WHERE sent_at >= ?1 AND sent_at < ?2 AND key > ?3
                         ORDER BY key LIMIT ?4",
                    )
                    .map_err(StoreError::sqlite("listing the alert ledger"))?;
                let rows = statement
                    .query_map(params![from, to, after, limit], |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                        ))
                    })
                    .map_err(StoreError::sqlite("listing the alert ledger"))?;
                rows.collect::<Result<Vec<Row>, _>>()
                    .map_err(StoreError::sqlite("listing the alert ledger"))
            })
            .await
            .map_err(|e| e.into_port_error("listing the alert ledger"))?;
        let full = rows.len() == limit as usize;
        let mut entries = Vec::with_capacity(rows.len());
        for (key, subject, route, threshold, millis) in rows {
            let key = LedgerKey::parse(&key)
                .ok_or_else(|| PortError::invalid("the alert ledger holds a malformed key"))?;
            let sent_at = Utc
                .timestamp_millis_opt(millis)
                .single()
                .ok_or_else(|| PortError::invalid("the alert ledger holds an invalid time"))?;
            entries.push(LedgerEntry {
                key,
                subject,
                route,
                threshold,
                sent_at,
            });
        }
        let next = if full {
            entries.last().map(|entry| entry.key.as_str().to_owned())
        } else {
            None
        };
        Ok(LedgerPage { entries, next })
    }
}
