//! [`AlertLedger`] in Table storage: one entity per delivery in partition `alert`, row key
//! the ledger key. A claim is an insert (a conflict: the key is there already), or, once
//! the standing claim's lease has run out, an update conditional on the ETag read
//! (`If-Match`): of instances taking one expired claim over at once, one update is made
//! and the others are answered 412. Entities written before claims were leases have no
//! `State` and read as sent.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::adapters::azure::client::table::{
    Continuation, Entity, EntityKey, IfMatch, Query, TableClient, TableName, UpdateMode,
};
use crate::ports::alert_ledger::{
    AlertLedger, Claim, ClaimToken, LedgerEntry, LedgerKey, LedgerPage, MAX_LEDGER_PAGE,
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

/// A delivery as stored. `SentAt` and `LeaseUntil` are RFC 3339 text compared as text
/// (fixed width, UTC), so housekeeping filters on them without typed-property
/// annotations. `State` is `claimed` (being sent: `Holder` the claim's token, `SentAt`
/// when it was claimed) or `sent` (`SentAt` when it was confirmed); absent on entities
/// written before claims were leases, which were only written by an instance about to
/// send, and so read as sent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Stored {
    subject: String,
    route: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<u32>,
    sent_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder: Option<String>,
}

const CLAIMED: &str = "claimed";
const SENT: &str = "sent";

/// Rounds of read-and-write a claim or confirmation tries when the entity keeps changing
/// under it (each lost round means another instance wrote; the next read sees what).
const ROUNDS: usize = 4;

impl Stored {
    fn of(entry: &LedgerEntry, state: &str, claim: Option<(&ClaimToken, DateTime<Utc>)>) -> Self {
        Self {
            subject: entry.subject.clone(),
            route: entry.route.clone(),
            threshold: entry.threshold,
            sent_at: time(entry.sent_at),
            state: Some(state.to_owned()),
            lease_until: claim.map(|(_, until)| time(until)),
            holder: claim.map(|(token, _)| token.as_str().to_owned()),
        }
    }

    /// Whether this is a claim (not yet confirmed sent).
    fn claimed(&self) -> bool {
        self.state.as_deref() == Some(CLAIMED)
    }

    fn sent_at(&self) -> Result<DateTime<Utc>, PortError> {
        parse_time(&self.sent_at)
    }

    /// When the claim's lease runs out; a claim without one is treated as run out.
    fn lease_until(&self) -> Result<Option<DateTime<Utc>>, PortError> {
        self.lease_until.as_deref().map(parse_time).transpose()
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, PortError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| PortError::invalid("the alert ledger holds an invalid time"))
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

    /// The stored entity of `key`; `None` when absent.
    async fn read(&self, key: &LedgerKey) -> Result<Option<Entity<Stored>>, PortError> {
        let (partition, row) = Self::keys(key)?;
        match self
            .client
            .get::<Stored>(&self.table, &partition, &row)
            .await
        {
            Ok(entity) => Ok(Some(entity)),
            Err(PortError {
                kind: FailureKind::NotFound,
                ..
            }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Writes `stored` over the entity read with `etag`; `false` when another write got
    /// there first (412) or it is gone.
    async fn replace(
        &self,
        key: &LedgerKey,
        stored: &Stored,
        etag: Option<azure_core::http::Etag>,
    ) -> Result<bool, PortError> {
        let (partition, row) = Self::keys(key)?;
        let if_match = version(etag)?;
        match self
            .client
            .update(
                &self.table,
                &partition,
                &row,
                stored,
                UpdateMode::Replace,
                &if_match,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(PortError {
                kind: FailureKind::Conflict | FailureKind::NotFound,
                ..
            }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Inserts `stored`; `false` when the key is there already.
    async fn insert(&self, key: &LedgerKey, stored: &Stored) -> Result<bool, PortError> {
        let (partition, row) = Self::keys(key)?;
        match self
            .client
            .insert(&self.table, &partition, &row, stored)
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
}

/// The condition that makes a write over what was read atomic. Table storage answers
/// every read with an ETag; without one a takeover could overwrite another instance's,
/// so it is refused rather than made unconditional.
fn version(etag: Option<azure_core::http::Etag>) -> Result<IfMatch, PortError> {
    etag.map(IfMatch::Etag).ok_or_else(|| {
        PortError::invalid("the Table service read an alert ledger entity without an ETag")
    })
}

fn contended(what: &str) -> PortError {
    PortError::transient(format!(
        "{what}: the alert ledger entry kept changing under {ROUNDS} tries; the next run tries again"
    ))
}

#[async_trait]
impl AlertLedger for TableAlertLedger {
    async fn sent(&self, key: &LedgerKey) -> Result<Option<DateTime<Utc>>, PortError> {
        match self.read(key).await? {
            Some(entity) if !entity.properties.claimed() => entity.properties.sent_at().map(Some),
            _ => Ok(None),
        }
    }

    async fn claim(&self, entry: &LedgerEntry, lease: TimeDelta) -> Result<Claim, PortError> {
        let now = entry.sent_at;
        let token = ClaimToken::new();
        let until = now + lease;
        let stored = Stored::of(entry, CLAIMED, Some((&token, until)));
        for _ in 0..ROUNDS {
            if self.insert(&entry.key, &stored).await? {
                return Ok(Claim::Made {
                    token,
                    until,
                    taken_over: false,
                });
            }
            let Some(found) = self.read(&entry.key).await? else {
                continue; // released or forgotten meanwhile: insert again
            };
            let standing = &found.properties;
            if !standing.claimed() {
                return Ok(Claim::Sent {
                    at: standing.sent_at()?,
                });
            }
            if standing.holder.as_deref() == Some(token.as_str()) {
                // This claim's own insert, made on a try whose answer was lost.
                return Ok(Claim::Made {
                    token,
                    until,
                    taken_over: false,
                });
            }
            match standing.lease_until()? {
                Some(standing_until) if standing_until > now => {
                    return Ok(Claim::Held {
                        until: standing_until,
                    });
                }
                _ => {}
            }
            // The standing claim's lease has run out: take it over, if no other instance
            // wrote since it was read.
            if self.replace(&entry.key, &stored, found.etag).await? {
                return Ok(Claim::Made {
                    token,
                    until,
                    taken_over: true,
                });
            }
        }
        Err(contended("claiming an alert"))
    }

    async fn confirm(&self, entry: &LedgerEntry, _token: &ClaimToken) -> Result<(), PortError> {
        let stored = Stored::of(entry, SENT, None);
        for _ in 0..ROUNDS {
            match self.read(&entry.key).await? {
                // Sent already: the first confirmation stands.
                Some(found) if !found.properties.claimed() => return Ok(()),
                Some(found) => {
                    if self.replace(&entry.key, &stored, found.etag).await? {
                        return Ok(());
                    }
                }
                None => {
                    if self.insert(&entry.key, &stored).await? {
                        return Ok(());
                    }
                }
            }
        }
        Err(contended("confirming an alert"))
    }

    async fn release(&self, key: &LedgerKey, token: &ClaimToken) -> Result<(), PortError> {
        let Some(found) = self.read(key).await? else {
            return Ok(());
        };
        if !found.properties.claimed() || found.properties.holder.as_deref() != Some(token.as_str())
        {
            return Ok(());
        }
        let (partition, row) = Self::keys(key)?;
        let if_match = version(found.etag)?;
        match self
            .client
            .delete(&self.table, &partition, &row, &if_match)
            .await
        {
            // Changed since it was read (taken over or confirmed) or gone: not this
            // claim's to release any more.
            Ok(())
            | Err(PortError {
                kind: FailureKind::NotFound | FailureKind::Conflict,
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

    /// Pages as Table storage returns them (row key order), claims left out here rather
    /// than in the filter (a comparison with a property an entity lacks, as entities
    /// written before claims were leases lack `State`, leaves the entity out); the token
    /// is the service's continuation.
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
                "State".to_owned(),
            ],
            top: Some(limit.clamp(1, MAX_LEDGER_PAGE)),
            continuation,
        };
        let page = self.client.query::<Stored>(&self.table, &query).await?;
        let mut entries = Vec::with_capacity(page.entities.len());
        for entity in page.entities {
            if entity.properties.claimed() {
                continue;
            }
            let key = LedgerKey::parse(&entity.row_key)
                .ok_or_else(|| PortError::invalid("the alert ledger holds a malformed key"))?;
            let sent_at = entity.properties.sent_at()?;
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
