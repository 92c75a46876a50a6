//! The audit store on the local SQLite file: one row per entry, keyed by chain and
//! position, appended inside `BEGIN IMMEDIATE` so that concurrent writers (tasks or
//! processes) take turns and a stale writer is refused instead of forking a chain.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use crate::adapters::local::store::{LocalStore, StoreError};
use crate::ports::audit::{
    Actor, AuditDataError, AuditEntry, AuditObject, AuditRecord, AuditStore, AuditText, ChainId,
    ForeignRow, StoredEntry, Survey, format_audit_time, parse_audit_count, parse_audit_time,
};
use crate::ports::{FailureKind, PortError};

const COLUMNS: &str = "position, sequence, at, actor_kind, actor, action, vault, secret_name, \
    secret_version, app_id, key_id, thumbprint, outcome, reason, invocation_id, prev_hash, hash, count";

/// Entries written in one transaction. A commit (with its fsync) costs far more than an
/// insert, so concurrent appends share one; 256 entries of at most a few KiB each keep
/// a transaction well under a millisecond of inserts and bound the memory it holds.
const MAX_BATCH: usize = 256;

/// The audit port on a [`LocalStore`], appending to one chain.
#[derive(Debug, Clone)]
pub struct LocalAuditStore {
    store: LocalStore,
    chain: ChainId,
}

impl LocalAuditStore {
    /// The store's default chain ([`ChainId::DEFAULT`]).
    pub fn new(store: LocalStore) -> Self {
        Self::with_chain(store, ChainId::default_chain())
    }

    /// The store appending to and reading `chain`.
    pub fn with_chain(store: LocalStore, chain: ChainId) -> Self {
        Self { store, chain }
    }
}

#[async_trait]
impl AuditStore for LocalAuditStore {
    fn chain(&self) -> ChainId {
        self.chain.clone()
    }

    fn for_chain(&self, chain: &ChainId) -> Option<std::sync::Arc<dyn AuditStore>> {
        Some(std::sync::Arc::new(Self::with_chain(
            self.store.clone(),
            chain.clone(),
        )))
    }

    async fn survey(&self) -> Result<Survey, PortError> {
        self.store
            .call(|connection| {
                let mut statement = connection
                    .prepare("SELECT chain, MIN(rowid), COUNT(*) FROM audit_log GROUP BY chain ORDER BY chain")
                    .map_err(StoreError::sqlite("preparing the audit survey"))?;
                let rows = statement
                    .query_map([], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                    })
                    .map_err(StoreError::sqlite("surveying the audit log"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("surveying the audit log"))?;
                let mut survey = Survey::default();
                for (chain, rowid) in rows {
                    match ChainId::parse(chain) {
                        Ok(chain) => survey.chains.push(chain),
                        Err(_) => survey.foreign.push(ForeignRow {
                            chain: None,
                            location: format!("audit_log row {rowid} (its chain is not a chain name)"),
                            after: None,
                        }),
                    }
                }
                Ok(survey)
            })
            .await
            .map_err(|error| error.into_port_error("surveying the local audit log"))
    }

    async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
        let chain = self.chain.as_str().to_owned();
        self.store
            .call(move |connection| {
                connection
                    .query_row(
                        &format!("SELECT {COLUMNS} FROM audit_log WHERE chain = ?1 ORDER BY position DESC LIMIT 1"),
                        [chain],
                        stored_entry,
                    )
                    .optional()
                    .map_err(StoreError::sqlite("reading the audit head"))
            })
            .await
            .map_err(|error| error.into_port_error("reading the local audit head"))
    }

    async fn append(&self, entry: &AuditEntry) -> Result<(), PortError> {
        self.append_all(std::slice::from_ref(entry)).await
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn append_all(&self, entries: &[AuditEntry]) -> Result<(), PortError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let position = to_sql_position(first.sequence)?;
        let rows = entries
            .iter()
            .map(|entry| Ok((to_sql_position(entry.sequence)?, entry.clone())))
            .collect::<Result<Vec<_>, PortError>>()?;
        let chain = self.chain.as_str().to_owned();
        let appended = self
            .store
            .write(move |transaction| {
                let head: Option<i64> = transaction
                    .query_row(
                        "SELECT MAX(position) FROM audit_log WHERE chain = ?1",
                        [&chain],
                        |row| row.get(0),
                    )
                    .map_err(StoreError::sqlite("reading the audit head"))?;
                if head.unwrap_or(0).checked_add(1) != Some(position) {
                    return Ok(false);
                }
                let mut insert = transaction
                    .prepare_cached(&format!(
                        "INSERT INTO audit_log (chain, {COLUMNS}) VALUES \
                         (?19, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
                    ))
                    .map_err(StoreError::sqlite("preparing the audit insert"))?;
                for (position, entry) in &rows {
                    let record = &entry.record;
                    // Counts past i64 cannot happen (one per request); stored as NULL
                    // they would fail verification rather than pass unseen.
                    let count = record.count.and_then(|count| i64::try_from(count).ok());
                    let object = &record.object;
                    let text =
                        |value: &Option<AuditText>| value.as_ref().map(|t| t.as_str().to_owned());
                    insert
                        .execute(params![
                            position,
                            position,
                            format_audit_time(&record.at),
                            record.actor.kind(),
                            record.actor.name().as_str(),
                            record.action.as_str(),
                            text(&object.vault),
                            text(&object.secret_name),
                            text(&object.secret_version),
                            text(&object.app_id),
                            text(&object.key_id),
                            text(&object.thumbprint),
                            record.outcome.as_str(),
                            text(&record.reason),
                            text(&record.invocation_id),
                            entry.prev_hash.to_hex(),
                            entry.hash.to_hex(),
                            count,
                            chain,
                        ])
                        .map_err(StoreError::sqlite("inserting an audit entry"))?;
                }
                Ok(true)
            })
            .await
            .map_err(|error| error.into_port_error("appending to the local audit log"))?;
        if appended {
            Ok(())
        } else {
            Err(PortError::new(
                FailureKind::Conflict,
                "appending to the local audit log: another writer moved the head",
            ))
        }
    }

    async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError> {
        let start = to_sql_position(from)?;
        let end = start.saturating_add(i64::from(count));
        let chain = self.chain.as_str().to_owned();
        self.store
            .call(move |connection| {
                let mut statement = connection
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM audit_log \
                         WHERE chain = ?3 AND position >= ?1 AND position < ?2 ORDER BY position"
                    ))
                    .map_err(StoreError::sqlite("preparing the audit read"))?;
                let rows = statement
                    .query_map(params![start, end, chain], stored_entry)
                    .map_err(StoreError::sqlite("reading audit entries"))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("reading audit entries"))
            })
            .await
            .map_err(|error| error.into_port_error("reading the local audit log"))
    }
}

fn to_sql_position(position: u64) -> Result<i64, PortError> {
    i64::try_from(position)
        .map_err(|_| PortError::invalid("audit position is beyond what the local store can hold"))
}

/// Reads a row. Only a row whose columns have the wrong SQL types fails the query;
/// content that no longer parses becomes an unreadable entry at its position.
fn stored_entry(row: &Row<'_>) -> rusqlite::Result<StoredEntry> {
    let position: i64 = row.get("position")?;
    let sequence: i64 = row.get("sequence")?;
    let count: Option<i64> = row.get("count")?;
    let texts: [Option<String>; 15] = [
        row.get("at")?,
        row.get("actor_kind")?,
        row.get("actor")?,
        row.get("action")?,
        row.get("vault")?,
        row.get("secret_name")?,
        row.get("secret_version")?,
        row.get("app_id")?,
        row.get("key_id")?,
        row.get("thumbprint")?,
        row.get("outcome")?,
        row.get("reason")?,
        row.get("invocation_id")?,
        row.get("prev_hash")?,
        row.get("hash")?,
    ];
    Ok(StoredEntry {
        position: u64::try_from(position).unwrap_or(0),
        content: decode(sequence, texts, count),
    })
}

fn decode(
    sequence: i64,
    texts: [Option<String>; 15],
    count: Option<i64>,
) -> Result<AuditEntry, AuditDataError> {
    let count = count
        .map(|count| parse_audit_count(&count.to_string()))
        .transpose()?;
    let [
        at,
        actor_kind,
        actor,
        action,
        vault,
        secret_name,
        secret_version,
        app_id,
        key_id,
        thumbprint,
        outcome,
        reason,
        invocation_id,
        prev_hash,
        hash,
    ] = texts;
    let required =
        |value: Option<String>, field| value.ok_or(AuditDataError::MissingField { field });
    let optional = |value: Option<String>| value.map(AuditText::parse).transpose();
    let sequence = u64::try_from(sequence)
        .ok()
        .filter(|s| *s >= 1)
        .ok_or(AuditDataError::MalformedNumber { field: "sequence" })?;
    let actor_name = AuditText::parse(required(actor, "actor")?)?;
    Ok(AuditEntry {
        sequence,
        record: AuditRecord {
            at: parse_audit_time(&required(at, "at")?)?,
            actor: Actor::from_parts(&required(actor_kind, "actor_kind")?, actor_name)?,
            action: AuditText::parse(required(action, "action")?)?,
            object: AuditObject {
                vault: optional(vault)?,
                secret_name: optional(secret_name)?,
                secret_version: optional(secret_version)?,
                app_id: optional(app_id)?,
                key_id: optional(key_id)?,
                thumbprint: optional(thumbprint)?,
            },
            outcome: required(outcome, "outcome")?.parse()?,
            reason: optional(reason)?,
            invocation_id: optional(invocation_id)?,
            count,
        },
        prev_hash: required(prev_hash, "prev_hash")?.parse()?,
        hash: required(hash, "hash")?.parse()?,
    })
}
