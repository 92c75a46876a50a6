//! [`AlertLedger`] in the embedded SQLite file: one row per delivery. A claim is a row in
//! state `claimed` with its holder's token and lease; it is made, or taken over once its
//! lease has run out, inside one write transaction (`BEGIN IMMEDIATE`: concurrent
//! claimers, in this process or another, queue on the file's lock), so one claimer wins.
//! Rows written before claims were leases have no state and read as `sent`.

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rusqlite::{OptionalExtension, params};

use crate::adapters::local::store::{LocalStore, StoreError};
use crate::ports::PortError;
use crate::ports::alert_ledger::{
    AlertLedger, Claim, ClaimToken, LedgerEntry, LedgerKey, LedgerPage, MAX_LEDGER_PAGE,
};

/// The condition of a confirmed row: `sent`, or no state (written before claims were
/// leases, by an instance about to send: read as sent).
const IS_SENT: &str = "(state IS NULL OR state = 'sent')";

fn time(millis: i64) -> Result<DateTime<Utc>, PortError> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .ok_or_else(|| PortError::invalid("the alert ledger holds an invalid time"))
}

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
                        &format!("SELECT sent_at FROM alert_ledger WHERE key = ?1 AND {IS_SENT}"),
                        params![key],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("reading the alert ledger"))
            })
            .await
            .map_err(|e| e.into_port_error("reading the alert ledger"))?;
        millis.map(time).transpose()
    }

    async fn claim(&self, entry: &LedgerEntry, lease: TimeDelta) -> Result<Claim, PortError> {
        /// What a claim found stored: state, `sent_at`, `lease_until`.
        type Found = (Option<String>, i64, Option<i64>);
        let entry = entry.clone();
        let now = entry.sent_at.timestamp_millis();
        let until = (entry.sent_at + lease).timestamp_millis();
        let token = ClaimToken::new();
        let holder = token.as_str().to_owned();
        // `None`: claimed now; otherwise what stood (and was left alone).
        let (found, stood): (Option<Found>, bool) = self
            .store
            .write(move |tx| {
                let found: Option<Found> = tx
                    .query_row(
                        "SELECT state, sent_at, lease_until FROM alert_ledger WHERE key = ?1",
                        params![entry.key.as_str()],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("claiming an alert"))?;
                let claimable = match &found {
                    None => true,
                    Some((Some(state), _, lease_until)) if state == "claimed" => {
                        lease_until.is_none_or(|lease_until| lease_until <= now)
                    }
                    // Sent, or no state (written before claims were leases: sent).
                    Some(_) => false,
                };
                if claimable {
                    tx.execute(
                        "INSERT INTO alert_ledger
                             (key, subject, route, threshold, sent_at, state, lease_until, holder)
                         VALUES (?1, ?2, ?3, ?4, ?5, 'claimed', ?6, ?7)
                         ON CONFLICT (key) DO UPDATE SET subject = excluded.subject,
                             route = excluded.route, threshold = excluded.threshold,
                             sent_at = excluded.sent_at, state = 'claimed',
                             lease_until = excluded.lease_until, holder = excluded.holder",
                        params![
                            entry.key.as_str(),
                            entry.subject,
                            entry.route,
                            entry.threshold,
                            now,
                            until,
                            holder
                        ],
                    )
                    .map_err(StoreError::sqlite("claiming an alert"))?;
                }
                Ok((found, !claimable))
            })
            .await
            .map_err(|e| e.into_port_error("claiming an alert"))?;
        match found {
            Some((Some(state), _, Some(lease_until))) if stood && state == "claimed" => {
                Ok(Claim::Held {
                    until: time(lease_until)?,
                })
            }
            Some((_, sent_at, _)) if stood => Ok(Claim::Sent { at: time(sent_at)? }),
            taken => Ok(Claim::Made {
                token,
                until: time(until)?,
                taken_over: taken.is_some(),
            }),
        }
    }

    async fn confirm(&self, entry: &LedgerEntry, _token: &ClaimToken) -> Result<(), PortError> {
        let entry = entry.clone();
        self.store
            .write(move |tx| {
                // A claim (whoever holds it) becomes sent; a sent row keeps its first
                // confirmation; a row gone meanwhile is written again.
                tx.execute(
                    "INSERT INTO alert_ledger (key, subject, route, threshold, sent_at, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'sent')
                     ON CONFLICT (key) DO UPDATE SET sent_at = excluded.sent_at,
                         state = 'sent', lease_until = NULL, holder = NULL
                     WHERE alert_ledger.state = 'claimed'",
                    params![
                        entry.key.as_str(),
                        entry.subject,
                        entry.route,
                        entry.threshold,
                        entry.sent_at.timestamp_millis()
                    ],
                )
                .map_err(StoreError::sqlite("confirming an alert"))?;
                Ok(())
            })
            .await
            .map_err(|e| e.into_port_error("confirming an alert"))
    }

    async fn release(&self, key: &LedgerKey, token: &ClaimToken) -> Result<(), PortError> {
        let key = key.as_str().to_owned();
        let holder = token.as_str().to_owned();
        self.store
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM alert_ledger
                     WHERE key = ?1 AND state = 'claimed' AND holder = ?2",
                    params![key, holder],
                )
                .map_err(StoreError::sqlite("releasing an alert's claim"))?;
                Ok(())
            })
            .await
            .map_err(|e| e.into_port_error("releasing an alert's claim"))
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

    /// Pages in key order, confirmed rows only; the token is the last key of the page
    /// before.
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
                    .prepare(&format!(
                        "SELECT key, subject, route, threshold, sent_at FROM alert_ledger
                         WHERE sent_at >= ?1 AND sent_at < ?2 AND key > ?3 AND {IS_SENT}
                         ORDER BY key LIMIT ?4"
                    ))
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
            let sent_at = time(millis)?;
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
