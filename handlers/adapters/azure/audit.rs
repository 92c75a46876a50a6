//! The audit store on Azure Table storage: one partition per writer's chain (the
//! default chain's is [`CHAIN_PARTITION`]), one entity per entry, keyed
//! so that the newest entry comes first and a position can be taken only once.
//!
//! # Why inverted row keys
//!
//! Each entry's RowKey is `MAX_POSITION - position`, zero-padded to 19 digits. The
//! service sorts a partition by RowKey, so the head is the first entity of a `$top=1`
//! query, and an append is a plain Insert Entity of position `head + 1`: when two
//! writers race for the same position, the service accepts one insert and answers the
//! other 409, which the audit log turns into a retry from the new head. Entities are
//! only ever inserted, so the entry a writer read as head can never change under it,
//! and no two entries can share a position: the chain cannot fork.
//!
//! Entries appended together are inserted in one entity group transaction (up to 100):
//! the service stores all of them or none, and refuses the whole transaction with 409
//! when any of their positions is taken. One round trip then carries a whole batch of
//! the audit writer's, so the secret endpoint is not held to one audited read per
//! round trip to the service.
//!
//! The alternative, a head entity updated with `If-Match` in the same transaction as
//! the new entries, adds a second source of truth that can disagree with the entries;
//! the inverted keys do without one. One partition caps appends at the service's
//! per-partition rate (about 2000 entities per second).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::adapters::azure::client::table::{
    Entity, EntityKey, MAX_BATCH_ENTITIES, Page, Query, TableClient, TableName, odata_string,
};
use crate::ports::audit::{
    Actor, AuditDataError, AuditEntry, AuditFields, AuditObject, AuditRecord, AuditStore,
    AuditText, ChainId, ForeignRow, StoredEntry, Survey, parse_audit_count, parse_audit_time,
};
use crate::ports::{FailureKind, PortError};

/// The partition holding the chain.
pub const CHAIN_PARTITION: &str = "chain";

/// The highest position the row keys can express: the largest 19-digit number, so
/// every RowKey has the same width and sorts numerically.
pub const MAX_POSITION: u64 = 9_999_999_999_999_999_999;

/// The audit port on a Table storage table, appending to one chain's partition.
#[derive(Debug, Clone)]
pub struct TableAuditStore {
    client: TableClient,
    table: TableName,
    chain: ChainId,
    partition: EntityKey,
}

impl TableAuditStore {
    /// The default chain's partition, [`CHAIN_PARTITION`].
    pub fn new(client: TableClient, table: TableName) -> Self {
        Self::with_chain(client, table, ChainId::default_chain())
    }

    /// The store appending to and reading `chain`'s partition.
    pub fn with_chain(client: TableClient, table: TableName, chain: ChainId) -> Self {
        Self {
            partition: EntityKey::parse(chain.as_str())
                .expect("invariant: a chain name is a valid key"),
            client,
            table,
            chain,
        }
    }

    /// Creates the table when it does not exist yet.
    pub async fn ensure_table(&self) -> Result<(), PortError> {
        self.client.create_table_if_not_exists(&self.table).await
    }

    async fn entries(
        &self,
        filter: String,
        top: Option<u32>,
        stop_after_first: bool,
    ) -> Result<Vec<StoredEntry>, PortError> {
        let mut query = Query {
            filter: Some(filter),
            top,
            ..Query::default()
        };
        let mut found = Vec::new();
        loop {
            let page: Page<AuditRow> = self.client.query(&self.table, &query).await?;
            // A foreign row (a RowKey that is no position) is not an entry: it is left
            // out here, so it never blocks an append, and `survey` reports it.
            found.extend(page.entities.into_iter().filter_map(stored_entry));
            match page.continuation {
                Some(next) if !stop_after_first || found.is_empty() => {
                    query.continuation = Some(next)
                }
                _ => return Ok(found),
            }
        }
    }
}

#[async_trait]
impl AuditStore for TableAuditStore {
    fn chain(&self) -> ChainId {
        self.chain.clone()
    }

    fn for_chain(&self, chain: &ChainId) -> Option<std::sync::Arc<dyn AuditStore>> {
        Some(std::sync::Arc::new(Self::with_chain(
            self.client.clone(),
            self.table.clone(),
            chain.clone(),
        )))
    }

    /// Reads every row's keys once: each partition named like a chain and holding a
    /// position is a chain; any other row is foreign.
    async fn survey(&self) -> Result<Survey, PortError> {
        let mut query = Query {
            select: vec!["PartitionKey".to_owned()],
            ..Query::default()
        };
        let mut chains = std::collections::BTreeSet::new();
        let mut foreign = Vec::new();
        loop {
            let page: Page<serde_json::Map<String, serde_json::Value>> =
                self.client.query(&self.table, &query).await?;
            for entity in page.entities {
                let chain = ChainId::parse(entity.partition_key.clone()).ok();
                match (&chain, position_of(&entity.row_key)) {
                    (Some(chain), Some(_)) => {
                        chains.insert(chain.clone());
                    }
                    _ => foreign.push(ForeignRow {
                        chain,
                        location: format!(
                            "table {} partition {:?} row {:?}",
                            self.table,
                            shorten(&entity.partition_key),
                            shorten(&entity.row_key)
                        ),
                        after: None,
                    }),
                }
            }
            match page.continuation {
                Some(next) => query.continuation = Some(next),
                None => break,
            }
        }
        Ok(Survey {
            chains: chains.into_iter().collect(),
            foreign,
        })
    }

    async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
        let filter = format!("PartitionKey eq {}", odata_string(self.chain.as_str()));
        // A page may come back empty with a continuation; keep reading until one entity
        // arrives or the partition ends.
        let entries = self.entries(filter, Some(1), true).await?;
        Ok(entries.into_iter().next())
    }

    async fn append(&self, entry: &AuditEntry) -> Result<(), PortError> {
        let row_key = row_key(entry.sequence)?;
        let row = AuditRow::from_entry(entry);
        self.client
            .insert(&self.table, &self.partition, &row_key, &row)
            .await
            .map(|_| ())
            .map_err(|error| {
                position_taken(error, || {
                    format!(
                        "appending audit entry {}: position already taken",
                        entry.sequence
                    )
                })
            })
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH_ENTITIES
    }

    async fn append_all(&self, entries: &[AuditEntry]) -> Result<(), PortError> {
        let [first, ..] = entries else {
            return Ok(());
        };
        let rows = entries
            .iter()
            .map(|entry| Ok((row_key(entry.sequence)?, AuditRow::from_entry(entry))))
            .collect::<Result<Vec<_>, PortError>>()?;
        self.client
            .insert_all(&self.table, &self.partition, &rows)
            .await
            .map_err(|error| {
                position_taken(error, || {
                    format!(
                        "appending audit entries from {}: a position is already taken",
                        first.sequence
                    )
                })
            })
    }

    async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError> {
        let newest = row_key(from)?;
        let end = from.saturating_add(u64::from(count));
        let mut filter = format!(
            "PartitionKey eq {} and RowKey le {}",
            odata_string(self.chain.as_str()),
            odata_string(newest.as_str())
        );
        if end <= MAX_POSITION {
            filter.push_str(&format!(
                " and RowKey gt {}",
                odata_string(row_key(end)?.as_str())
            ));
        }
        let mut entries = self.entries(filter, None, false).await?;
        entries.reverse();
        Ok(entries)
    }
}

/// A conflict from the table means a position another writer already holds; it keeps
/// its kind and gets `context` instead of the table client's wording.
fn position_taken(error: PortError, context: impl FnOnce() -> String) -> PortError {
    if error.kind == FailureKind::Conflict {
        PortError::new(FailureKind::Conflict, context())
    } else {
        error
    }
}

fn row_key(position: u64) -> Result<EntityKey, PortError> {
    if position == 0 || position > MAX_POSITION {
        return Err(PortError::invalid(format!(
            "audit position {position} is outside 1..={MAX_POSITION}"
        )));
    }
    let key = format!("{:019}", MAX_POSITION - position);
    Ok(EntityKey::parse(&key).expect("invariant: 19 digits form a valid key"))
}

fn position_of(row_key: &str) -> Option<u64> {
    if row_key.len() != 19 || !row_key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let inverted: u64 = row_key.parse().ok()?;
    MAX_POSITION.checked_sub(inverted).filter(|p| *p >= 1)
}

fn stored_entry(entity: Entity<AuditRow>) -> Option<StoredEntry> {
    Some(StoredEntry {
        position: position_of(&entity.row_key)?,
        content: entity.properties.into_entry(),
    })
}

/// A key as a report shows it: at most 64 characters (keys may be 1 KiB of anything).
fn shorten(key: &str) -> String {
    key.chars().take(64).collect()
}

/// An entry as an entity. Every property is a string so that no Edm type annotations
/// are needed; a missing property reads as `None` and surfaces as an unreadable entry.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AuditRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vault: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thumbprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invocation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<String>,
}

impl AuditRow {
    fn from_entry(entry: &AuditEntry) -> Self {
        let fields = AuditFields::of(entry);
        let text = |value: Option<&str>| value.map(str::to_owned);
        Self {
            sequence: Some(fields.sequence.to_string()),
            time: Some(fields.time),
            actor_kind: Some(fields.actor_kind.to_owned()),
            actor: Some(fields.actor.to_owned()),
            action: Some(fields.action.to_owned()),
            vault: text(fields.vault),
            secret_name: text(fields.secret_name),
            secret_version: text(fields.secret_version),
            app_id: text(fields.app_id),
            key_id: text(fields.key_id),
            thumbprint: text(fields.thumbprint),
            outcome: Some(fields.outcome.to_owned()),
            reason: text(fields.reason),
            invocation_id: text(fields.invocation_id),
            prev_hash: Some(fields.prev_hash),
            hash: Some(fields.hash),
            count: fields.count.map(|count| count.to_string()),
        }
    }

    fn into_entry(self) -> Result<AuditEntry, AuditDataError> {
        fn required(value: Option<String>, field: &'static str) -> Result<String, AuditDataError> {
            value.ok_or(AuditDataError::MissingField { field })
        }
        let optional = |value: Option<String>| value.map(AuditText::parse).transpose();
        let sequence = required(self.sequence, "Sequence")?
            .parse::<u64>()
            .ok()
            .filter(|s| *s >= 1)
            .ok_or(AuditDataError::MalformedNumber { field: "Sequence" })?;
        let actor_name = AuditText::parse(required(self.actor, "Actor")?)?;
        Ok(AuditEntry {
            sequence,
            record: AuditRecord {
                at: parse_audit_time(&required(self.time, "Time")?)?,
                actor: Actor::from_parts(&required(self.actor_kind, "ActorKind")?, actor_name)?,
                action: AuditText::parse(required(self.action, "Action")?)?,
                object: AuditObject {
                    vault: optional(self.vault)?,
                    secret_name: optional(self.secret_name)?,
                    secret_version: optional(self.secret_version)?,
                    app_id: optional(self.app_id)?,
                    key_id: optional(self.key_id)?,
                    thumbprint: optional(self.thumbprint)?,
                },
                outcome: required(self.outcome, "Outcome")?.parse()?,
                reason: optional(self.reason)?,
                invocation_id: optional(self.invocation_id)?,
                count: self.count.as_deref().map(parse_audit_count).transpose()?,
            },
            prev_hash: required(self.prev_hash, "PrevHash")?.parse()?,
            hash: required(self.hash, "Hash")?.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_sort_newest_first_and_round_trip() {
        let keys: Vec<String> = [1, 2, 10, MAX_POSITION]
            .iter()
            .map(|p| row_key(*p).expect("in range").as_str().to_owned())
            .collect();
        assert_eq!(keys[0], "9999999999999999998");
        assert_eq!(keys[3], "0000000000000000000");
        assert!(
            keys.windows(2).all(|w| w[0] > w[1]),
            "later positions sort first: {keys:?}"
        );
        for position in [1, 2, 10, MAX_POSITION] {
            let key = row_key(position).expect("in range");
            assert_eq!(position_of(key.as_str()), Some(position));
        }
    }

    #[test]
    fn positions_outside_the_key_space_are_refused() {
        assert!(row_key(0).is_err());
        assert!(row_key(MAX_POSITION + 1).is_err());
        for bad in [
            "9999999999999999999",
            "123",
            "abcdefghijklmnopqrs",
            "-000000000000000001",
        ] {
            assert_eq!(position_of(bad), None, "{bad}");
        }
    }
}
