//! [`AlertLedger`] in Table storage: one entity per delivery in partition `alert`, row key
//! the ledger key. Recording is an insert, and a conflict (the key is there already) is
//! the first record standing, not an error.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::adapters::azure::client::table::{
    Continuation, EntityKey, IfMatch, Query, TableClient, TableName,
};
use crate::ports::alert_ledger::{
    AlertLedger, LedgerEntry, LedgerKey, LedgerPage, MAX_LEDGER_PAGE,
};
use crate::ports::{FailureKind, PortError};

const PARTITION: &str = "alert";

/// What one page of housekeeping reads: Table storage's largest page.
const FORGET_PAGE: u32 = 1000;

#[derive(Debug, Clone)]
pub struct TableAlertLedger {
    client: TableClient,
    table: TableName,
}

/// A delivery as stored. `SentAt` is RFC 3339 text compared as text (fixed width, UTC),
/// so housekeeping filters on it without typed-property annotations.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Stored {
    subject: String,
    route: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<u32>,
    sent_at: String,
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl TableAlertLedger {
    pub fn new(client: TableClient, table: TableName) -> Self {
        Self { client, table }
    }

    /// Creates the table when absent.
    pub async fn ensure_table(&self) -> Result<(), PortError> {
        self.client.create_table_if_not_exists(&self.table).await
    }

    fn keys(key: &LedgerKey) -> Result<(EntityKey, EntityKey), PortError> {
        let bad = |_| PortError::invalid("a ledger key is not a valid Table key");
        Ok((
            EntityKey::parse(PARTITION).map_err(bad)?,
            EntityKey::parse(key.as_str()).map_err(bad)?,
        ))
    }
}

#[async_trait]
impl AlertLedger for TableAlertLedger {
    async fn sent(&self, key: &LedgerKey) -> Result<Option<DateTime<Utc>>, PortError> {
        let (partition, row) = Self::keys(key)?;
        match self
            .client
            .get::<Stored>(&self.table, &partition, &row)
            .await
        {
            Ok(entity) => DateTime::parse_from_rfc3339(&entity.properties.sent_at)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| PortError::invalid("the alert ledger holds an invalid time")),
            Err(PortError {
                kind: FailureKind::NotFound,
                ..
            }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn record(&self, entry: &LedgerEntry) -> Result<bool, PortError> {
        let (partition, row) = Self::keys(&entry.key)?;
        let stored = Stored {
            subject: entry.subject.clone(),
            route: entry.route.clone(),
            threshold: entry.threshold,
            sent_at: time(entry.sent_at),
        };
        match self
            .client
            .insert(&self.table, &partition, &row, &stored)
            .await
        {
            Ok(_) => Ok(true),
            Err(PortError {
                kind: FailureKind::Conflict,
                ..
            }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn forget(&self, key: &LedgerKey) -> Result<(), PortError> {
        let (partition, row) = Self::keys(key)?;
        match self
            .client
            .delete(&self.table, &partition, &row, &IfMatch::Any)
            .await
        {
            Ok(())
            | Err(PortError {
                kind: FailureKind::NotFound,
                ..
            }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64, PortError> {
        let mut removed = 0;
        let mut query = Query {
            filter: Some(format!(
                "PartitionKey eq '{PARTITION}' and SentAt lt '{}'",
                time(before)
            )),
            select: vec!["SentAt".to_owned()],
            top: Some(FORGET_PAGE),
            continuation: None,
        };
        loop {
            let page = self
                .client
                .query::<serde_json::Value>(&self.table, &query)
                .await?;
            for entity in &page.entities {
                let bad = |_| PortError::invalid("a stored ledger key is not a valid Table key");
                let partition = EntityKey::parse(&entity.partition_key).map_err(bad)?;
                let row = EntityKey::parse(&entity.row_key).map_err(bad)?;
                match self
                    .client
                    .delete(&self.table, &partition, &row, &IfMatch::Any)
                    .await
                {
                    Ok(()) => removed += 1,
                    // Another instance's housekeeping got there first.
                    Err(PortError {
                        kind: FailureKind::NotFound,
                        ..
                    }) => {}
                    Err(error) => return Err(error),
                }
            }
            match page.continuation {
                Some(next) => query.continuation = Some(next),
                None => return Ok(removed),
            }
        }
    }

    /// Pages as Table storage returns them (row key order); the token is its
    /// continuation.
    async fn sent_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        next: Option<&str>,
        limit: u32,
    ) -> Result<LedgerPage, PortError> {
        let continuation = match next {
            Some(token) => Some(
                Continuation::from_token(token)
                    .ok_or_else(|| PortError::invalid("not a page token of the alert ledger"))?,
            ),
            None => None,
        };
        let query = Query {
            filter: Some(format!(
                "PartitionKey eq '{PARTITION}' and SentAt ge '{}' and SentAt lt '{}'",
                time(from),
                time(to)
            )),
            select: vec![
                "Subject".to_owned(),
                "Route".to_owned(),
                "Threshold".to_owned(),
                "SentAt".to_owned(),
            ],
            top: Some(limit.clamp(1, MAX_LEDGER_PAGE)),
            continuation,
        };
        let page = self.client.query::<Stored>(&self.table, &query).await?;
        let mut entries = Vec::with_capacity(page.entities.len());
        for entity in page.entities {
            let key = LedgerKey::parse(&entity.row_key)
                .ok_or_else(|| PortError::invalid("the alert ledger holds a malformed key"))?;
            let sent_at = DateTime::parse_from_rfc3339(&entity.properties.sent_at)
                .map_err(|_| PortError::invalid("the alert ledger holds an invalid time"))?
                .with_timezone(&Utc);
            entries.push(LedgerEntry {
                key,
                subject: entity.properties.subject,
                route: entity.properties.route,
                threshold: entity.properties.threshold,
                sent_at,
            });
        }
        Ok(LedgerPage {
            entries,
            next: page.continuation.map(|c| c.to_token()),
        })
    }
}
