//! [`ObjectLeases`] in Table storage: one entity per object in partition `lease`, every
//! change an ETag-conditional write, so two instances racing for a lease cannot both win.
//! Entities are never deleted, so an object's fencing token only grows.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::adapters::azure::client::table::{
    EntityKey, IfMatch, TableClient, TableName, UpdateMode,
};
use crate::ports::lease::{Lease, ObjectLeases};
use crate::ports::{FailureKind, PortError};

const PARTITION: &str = "lease";

#[derive(Debug, Clone)]
pub struct TableLeases {
    client: TableClient,
    table: TableName,
}

/// A lease as stored. The token is a decimal string: Table storage's JSON numbers are
/// 32-bit unless annotated, and a token must never wrap.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Stored {
    holder: String,
    token: String,
    until: String,
}

fn conflict(context: &str) -> PortError {
    PortError::new(FailureKind::Conflict, context.to_owned())
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl TableLeases {
    pub fn new(client: TableClient, table: TableName) -> Self {
        Self { client, table }
    }

    /// Creates the table when absent.
    pub async fn ensure_table(&self) -> Result<(), PortError> {
        self.client.create_table_if_not_exists(&self.table).await
    }

    fn keys(key: &str) -> Result<(EntityKey, EntityKey), PortError> {
        let bad = |_| PortError::invalid("a lease key is not a valid Table key");
        Ok((
            EntityKey::parse(PARTITION).map_err(bad)?,
            EntityKey::parse(key).map_err(bad)?,
        ))
    }

    async fn read(&self, key: &str) -> Result<Option<(Stored, u64, Option<IfMatch>)>, PortError> {
        let (partition, row) = Self::keys(key)?;
        match self
            .client
            .get::<Stored>(&self.table, &partition, &row)
            .await
        {
            Ok(entity) => {
                let token = entity
                    .properties
                    .token
                    .parse::<u64>()
                    .map_err(|_| PortError::invalid("a stored lease has no valid token"))?;
                Ok(Some((
                    entity.properties,
                    token,
                    entity.etag.map(IfMatch::Etag),
                )))
            }
            Err(PortError {
                kind: FailureKind::NotFound,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write(
        &self,
        key: &str,
        stored: &Stored,
        if_match: Option<IfMatch>,
    ) -> Result<(), PortError> {
        let (partition, row) = Self::keys(key)?;
        let written = match if_match {
            None => self
                .client
                .insert(&self.table, &partition, &row, stored)
                .await
                .map(|_| ()),
            Some(if_match) => self
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
                .map(|_| ()),
        };
        match written {
            Err(PortError {
                kind: FailureKind::Conflict | FailureKind::NotFound,
                ..
            }) => Err(conflict("writing a lease: another instance wrote it first")),
            other => other,
        }
    }
}

#[async_trait]
impl ObjectLeases for TableLeases {
    async fn acquire(
        &self,
        key: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, PortError> {
        let (token, if_match) = match self.read(key).await? {
            None => (1, None),
            Some((stored, token, if_match)) => {
                let running = DateTime::parse_from_rfc3339(&stored.until)
                    .map(|t| t.with_timezone(&Utc) > now)
                    .map_err(|_| PortError::invalid("a stored lease has no valid expiry"))?;
                if stored.holder != holder && running {
                    return Err(conflict("taking a lease: another instance holds it"));
                }
                // An entity read without an ETag cannot be replaced safely.
                let if_match =
                    if_match.ok_or_else(|| PortError::invalid("a stored lease has no ETag"))?;
                (token + 1, Some(if_match))
            }
        };
        let stored = Stored {
            holder: holder.to_owned(),
            token: token.to_string(),
            until: time(until),
        };
        self.write(key, &stored, if_match).await?;
        Ok(Lease {
            key: key.to_owned(),
            holder: holder.to_owned(),
            token,
        })
    }

    async fn confirm(&self, lease: &Lease, until: DateTime<Utc>) -> Result<(), PortError> {
        match self.read(&lease.key).await? {
            Some((stored, token, Some(if_match)))
                if stored.holder == lease.holder && token == lease.token =>
            {
                let stored = Stored {
                    until: time(until),
                    ..stored
                };
                self.write(&lease.key, &stored, Some(if_match))
                    .await
                    .map_err(|_| conflict("confirming a lease: it was taken over"))
            }
            _ => Err(conflict("confirming a lease: it was taken over")),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), PortError> {
        match self.read(&lease.key).await? {
            Some((stored, token, Some(if_match)))
                if stored.holder == lease.holder && token == lease.token =>
            {
                let stored = Stored {
                    until: time(DateTime::<Utc>::UNIX_EPOCH),
                    ..stored
                };
                match self.write(&lease.key, &stored, Some(if_match)).await {
                    // Taken over meanwhile: nothing of ours to give back.
                    Err(PortError {
                        kind: FailureKind::Conflict,
                        ..
                    }) => Ok(()),
                    other => other,
                }
            }
            _ => Ok(()),
        }
    }
}
