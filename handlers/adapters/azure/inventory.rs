//! [`InventoryStore`] in Table storage: one table (`KEYTURN_INVENTORY_TABLE`) holding
//! four kinds of entity, told apart by their partition:
//!
//! | partition | row | what |
//! |---|---|---|
//! | `c` + source key | credential id | a credential; one partition per vault or directory object |
//! | `vault` | vault id | a vault |
//! | `f` + scope key | finding id | a finding |
//! | `snapshot` | time + sweep | a sweep's counts, in time order |
//! | `a` + app id | adoption id | an adoption: a managed vault secret holds this client secret |
//! | `i` + app id's first two digits | app id | the application's object id |
//!
//! A credential's partition is its source, so a scan job writes and retires within one
//! partition and the load spreads across partitions as Table storage scales them. A page
//! of one source's credentials is written as one entity group transaction (up to 100
//! entities and 4 MiB): one request, stored whole or not at all. Each
//! record is stored as its JSON (in chunks under the 64 KiB property limit) beside the
//! properties a query filters on (`SourceKind`, `Kind`, `Expires` as `Edm.DateTime`,
//! `Managed`, `Sweep`, and for a directory credential its `DirectoryRange`).
//!
//! Adoptions are kept per application, so a directory job reads those of a page of
//! applications with one range query over the adoption partitions (at most two rows per
//! managed application secret, however large the tenant). A vault job finds the row of a
//! credential it finds adopted through the application index (`i`), which each write of
//! an application's client secrets keeps: its object id names the row's partition.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::adapters::azure::client::table::{
    Continuation, EntityKey, IfMatch, Query, TableClient, TableName, UpdateMode, odata_string,
};
use crate::domain::ids::{AppId, DirectoryObjectId, KeyId};
use crate::domain::inventory::{
    Adoption, CredentialFilter, CredentialSource, InventoryCredential, InventoryVault, Scope,
    ScopeFinding, SweepId, SweepSnapshot,
};
use crate::domain::names::VaultUrl;
use crate::ports::catalog::{DirectoryKind, DirectoryRange};
use crate::ports::inventory::{InventoryStore, MAX_PAGE_SIZE, Page, PageToken};
use crate::ports::{FailureKind, PortError};

const CREDENTIAL_PREFIX: &str = "c";
/// The first partition key past every credential partition (`c` + hex): `d`.
const CREDENTIAL_END: &str = "d";
const FINDING_PREFIX: &str = "f";
const VAULT_PARTITION: &str = "vault";
const SNAPSHOT_PARTITION: &str = "snapshot";
const ADOPTION_PREFIX: &str = "a";
/// The first partition key past every adoption partition (`a` + app id): `b`.
const ADOPTION_END: &str = "b";
const APP_INDEX_PREFIX: &str = "i";
/// Applications of one page up to which [`TableInventory::adopted`] reads each one's
/// partition; past it, one range query between the lowest and highest app id.
const ADOPTION_POINT_READS: usize = 8;
/// Tries at changing one row's managed flag while directory jobs keep rewriting it.
const MARK_ATTEMPTS: usize = 8;
/// A directory credential's range (`applications/3`), what retiring a range selects by.
const RANGE_PROPERTY: &str = "DirectoryRange";

/// Characters of record JSON per property. A Table string property holds at most 64 KiB
/// as UTF-16 ("Understanding the Table service data model", property types); 16,000
/// characters are at most 32,000 UTF-16 code units, 64,000 bytes.
const CHUNK_CHARS: usize = 16_000;
/// Chunks per record: 14 of 64,000 bytes stay under the 1 MiB entity limit with room for
/// the other properties.
const MAX_CHUNKS: usize = 14;

/// Partitions one `put_credentials` call writes at once: enough to hide a round trip when
/// a directory page spans many applications, far below the account's scalability target.
const WRITE_CONCURRENCY: usize = 16;

/// One entity of a partition: its row key and properties.
type Row = (EntityKey, Map<String, Value>);

#[derive(Debug, Clone)]
pub struct TableInventory {
    client: TableClient,
    table: TableName,
}

fn key(text: &str) -> Result<EntityKey, PortError> {
    EntityKey::parse(text).map_err(|_| PortError::invalid("an inventory key is not a Table key"))
}

fn datetime(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `at` within what an `Edm.DateTime` property holds, 1601-01-01 to 9999-12-31 (UTC). An
/// expiry outside it (a date an outside system set far out, or before any calendar Table
/// storage knows) is filtered on as the nearest end of the range, which orders it the same
/// against any moment a query names; the record keeps it exactly. Written as it is, the
/// service would refuse the entity, and with it the page of credentials it came in.
fn table_time(at: DateTime<Utc>) -> DateTime<Utc> {
    let first = DateTime::from_timestamp(-11_644_473_600, 0).expect("1601-01-01 is a time");
    let last =
        DateTime::from_timestamp(253_402_300_799, 999_999_000).expect("9999-12-31 is a time");
    at.clamp(first, last)
}

/// The properties of one record: its JSON in chunks (`Record`, `Record1`, ...).
fn record_properties<T: Serialize>(
    record: &T,
    what: &str,
) -> Result<Map<String, Value>, PortError> {
    let json = serde_json::to_string(record)
        .map_err(|_| PortError::invalid(format!("encoding {what} for the inventory table")))?;
    let chars: Vec<char> = json.chars().collect();
    let chunks: Vec<String> = chars
        .chunks(CHUNK_CHARS)
        .map(|chunk| chunk.iter().collect())
        .collect();
    if chunks.len() > MAX_CHUNKS {
        return Err(PortError::invalid(format!(
            "{what} is {} characters, more than one Table entity holds",
            chars.len()
        )));
    }
    let mut properties = Map::new();
    for (index, chunk) in chunks.into_iter().enumerate() {
        properties.insert(chunk_name(index), Value::String(chunk));
    }
    Ok(properties)
}

fn chunk_name(index: usize) -> String {
    match index {
        0 => "Record".to_owned(),
        n => format!("Record{n}"),
    }
}

fn record_of<T: DeserializeOwned>(
    properties: &Map<String, Value>,
    row: &str,
    what: &str,
) -> Result<T, PortError> {
    let unreadable = || {
        PortError::invalid(format!(
            "{what} {row} in the inventory table does not parse"
        ))
    };
    let mut json = String::new();
    for index in 0..MAX_CHUNKS {
        match properties.get(&chunk_name(index)) {
            Some(Value::String(chunk)) => json.push_str(chunk),
            Some(_) => return Err(unreadable()),
            None => break,
        }
    }
    serde_json::from_str(&json).map_err(|_| unreadable())
}

fn token(continuation: Option<Continuation>) -> Option<PageToken> {
    continuation.map(|c| PageToken::new(c.to_token()))
}

fn adoption_partition(app_id: &AppId) -> String {
    format!("{ADOPTION_PREFIX}{app_id}")
}

/// The application index's partition of `app_id`: its first two hex digits, so a page of
/// one directory range (one first digit) writes at most sixteen partitions.
fn app_index_partition(app_id: &AppId) -> String {
    let text = app_id.to_string();
    format!("{APP_INDEX_PREFIX}{}", &text[..2])
}

fn text_property<'a>(properties: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    properties.get(name).and_then(Value::as_str)
}

/// An adoption's application and keyId as stored.
fn adoption_pair(properties: &Map<String, Value>) -> Result<(AppId, KeyId), PortError> {
    text_property(properties, "AppId")
        .and_then(|text| AppId::parse(text).ok())
        .zip(text_property(properties, "KeyId").and_then(|text| KeyId::parse(text).ok()))
        .ok_or_else(|| PortError::invalid("an adoption in the inventory table does not parse"))
}

fn continuation(after: Option<&PageToken>) -> Result<Option<Continuation>, PortError> {
    after
        .map(|token| {
            Continuation::from_token(token.as_str())
                .ok_or_else(|| PortError::invalid("an inventory page token does not parse"))
        })
        .transpose()
}

impl TableInventory {
    pub fn new(client: TableClient, table: TableName) -> Self {
        Self { client, table }
    }

    /// Creates the table when absent.
    pub async fn ensure_table(&self) -> Result<(), PortError> {
        self.client.create_table_if_not_exists(&self.table).await
    }

    async fn put(
        &self,
        partition: &str,
        row: &str,
        properties: &Map<String, Value>,
    ) -> Result<(), PortError> {
        self.client
            .upsert(&self.table, &key(partition)?, &key(row)?, properties)
            .await
    }

    /// Deletes every entity `filter` selects, a page at a time. A row already gone (a
    /// concurrent rerun deleted it) counts as deleted by that rerun, not by this one.
    async fn delete_where(&self, filter: String) -> Result<u64, PortError> {
        let mut removed = 0;
        let mut query = Query {
            filter: Some(filter),
            select: vec!["Sweep".to_owned()],
            top: Some(MAX_PAGE_SIZE),
            continuation: None,
        };
        loop {
            let page = self
                .client
                .query::<Map<String, Value>>(&self.table, &query)
                .await?;
            for entity in &page.entities {
                let deleted = self
                    .client
                    .delete(
                        &self.table,
                        &key(&entity.partition_key)?,
                        &key(&entity.row_key)?,
                        &IfMatch::Any,
                    )
                    .await;
                match deleted {
                    Ok(()) => removed += 1,
                    Err(error) if error.kind == FailureKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
            match page.continuation {
                Some(next) => query.continuation = Some(next),
                None => return Ok(removed),
            }
        }
    }

    async fn page_of<T: DeserializeOwned>(
        &self,
        filter: String,
        after: Option<&PageToken>,
        limit: u32,
        what: &str,
    ) -> Result<Page<T>, PortError> {
        let query = Query {
            filter: Some(filter),
            select: Vec::new(),
            top: Some(limit.clamp(1, MAX_PAGE_SIZE)),
            continuation: continuation(after)?,
        };
        let page = self
            .client
            .query::<Map<String, Value>>(&self.table, &query)
            .await?;
        let items = page
            .entities
            .iter()
            .map(|entity| record_of(&entity.properties, &entity.row_key, what))
            .collect::<Result<Vec<T>, _>>()?;
        Ok(Page {
            items,
            next: token(page.continuation),
        })
    }

    fn credential_entity(
        credential: &InventoryCredential,
    ) -> Result<(String, String, Map<String, Value>), PortError> {
        let mut properties = record_properties(credential, "a credential")?;
        properties.insert(
            "SourceKind".into(),
            Value::String(credential.source.kind().as_str().to_owned()),
        );
        properties.insert(
            "Kind".into(),
            Value::String(credential.kind.as_str().to_owned()),
        );
        if let Some(expires) = credential.expires {
            // Typed, so that `Expires le datetime'...'` compares times, not text.
            properties.insert("Expires@odata.type".into(), "Edm.DateTime".into());
            properties.insert(
                "Expires".into(),
                Value::String(datetime(table_time(expires))),
            );
        }
        properties.insert("Managed".into(), Value::Bool(credential.managed));
        properties.insert("Sweep".into(), Value::String(credential.sweep.to_string()));
        if let Some(range) = DirectoryRange::of(&credential.source) {
            properties.insert(RANGE_PROPERTY.into(), Value::String(range.label()));
        }
        Ok((
            format!("{CREDENTIAL_PREFIX}{}", credential.source.key()),
            credential.id().to_string(),
            properties,
        ))
    }

    /// Writes each partition's entities, a single one on its own and more as entity group
    /// transactions, [`WRITE_CONCURRENCY`] partitions at once.
    async fn write_partitions(&self, partitions: Vec<(String, Vec<Row>)>) -> Result<(), PortError> {
        stream::iter(partitions)
            .map(|(partition, entities)| async move {
                let partition = key(&partition)?;
                match entities.as_slice() {
                    [(row, properties)] => {
                        self.client
                            .upsert(&self.table, &partition, row, properties)
                            .await
                    }
                    _ => {
                        self.client
                            .upsert_all(&self.table, &partition, &entities)
                            .await
                    }
                }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    /// Every entity `filter` selects, its `select`ed properties, a page at a time.
    async fn select_all(
        &self,
        filter: String,
        select: &[&str],
    ) -> Result<Vec<(String, String, Map<String, Value>)>, PortError> {
        let mut query = Query {
            filter: Some(filter),
            select: select.iter().map(|name| (*name).to_owned()).collect(),
            top: Some(MAX_PAGE_SIZE),
            continuation: None,
        };
        let mut rows = Vec::new();
        loop {
            let page = self
                .client
                .query::<Map<String, Value>>(&self.table, &query)
                .await?;
            rows.extend(
                page.entities
                    .into_iter()
                    .map(|e| (e.partition_key, e.row_key, e.properties)),
            );
            match page.continuation {
                Some(next) => query.continuation = Some(next),
                None => return Ok(rows),
            }
        }
    }

    /// The object id the application index holds for `app_id`, if any.
    async fn object_of(&self, app_id: &AppId) -> Result<Option<DirectoryObjectId>, PortError> {
        let read = self
            .client
            .get::<Map<String, Value>>(
                &self.table,
                &key(&app_index_partition(app_id))?,
                &key(&app_id.to_string())?,
            )
            .await;
        match read {
            Ok(entity) => text_property(&entity.properties, "ObjectId")
                .and_then(|text| DirectoryObjectId::parse(text).ok())
                .map(Some)
                .ok_or_else(|| {
                    PortError::invalid(
                        "an application index row in the inventory table does not parse",
                    )
                }),
            Err(error) if error.kind == FailureKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Sets one row's adoption as it is stored now: read with its ETag, changed, and
    /// written only if nobody wrote it meanwhile (else read again). `true` when it changed.
    async fn mark_row(
        &self,
        partition: &EntityKey,
        row: &EntityKey,
        adopted: bool,
    ) -> Result<bool, PortError> {
        for _ in 0..MARK_ATTEMPTS {
            let entity = match self
                .client
                .get::<Map<String, Value>>(&self.table, partition, row)
                .await
            {
                Ok(entity) => entity,
                Err(error) if error.kind == FailureKind::NotFound => return Ok(false),
                Err(error) => return Err(error),
            };
            let mut credential: InventoryCredential =
                record_of(&entity.properties, row.as_str(), "credential")?;
            if !credential.set_adopted(adopted) {
                return Ok(false);
            }
            let etag = entity.etag.ok_or_else(|| {
                PortError::invalid("the inventory table returned a credential without its ETag")
            })?;
            let (_, _, properties) = Self::credential_entity(&credential)?;
            let written = self
                .client
                .update(
                    &self.table,
                    partition,
                    row,
                    &properties,
                    UpdateMode::Replace,
                    &IfMatch::Etag(etag),
                )
                .await;
            match written {
                Ok(_) => return Ok(true),
                Err(error) if error.kind == FailureKind::Conflict => continue,
                Err(error) if error.kind == FailureKind::NotFound => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        Err(PortError::new(
            FailureKind::Conflict,
            "marking an adopted credential: its row kept changing",
        ))
    }

    fn snapshot_row(snapshot: &SweepSnapshot) -> String {
        format!(
            "{}-{}",
            snapshot.at.format("%Y%m%dT%H%M%S%.9fZ"),
            snapshot.sweep
        )
    }
}

#[async_trait]
impl InventoryStore for TableInventory {
    async fn put_credentials(&self, credentials: &[InventoryCredential]) -> Result<(), PortError> {
        // One partition per source: a vault's page is one entity group transaction, a
        // directory page one per application or service principal it holds.
        let mut partitions: Vec<(String, Vec<Row>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for credential in credentials {
            let (partition, row, properties) = Self::credential_entity(credential)?;
            let entity = (key(&row)?, properties);
            match index.get(&partition) {
                Some(&at) => partitions[at].1.push(entity),
                None => {
                    index.insert(partition.clone(), partitions.len());
                    partitions.push((partition, vec![entity]));
                }
            }
        }
        self.write_partitions(partitions).await?;
        // The application index: what a vault job finding a client secret adopted needs
        // to find its row (the partition is the application's object id).
        let mut index: BTreeMap<String, BTreeMap<String, Map<String, Value>>> = BTreeMap::new();
        for credential in credentials {
            if let (Some((app_id, _)), CredentialSource::Application { object_id, .. }) =
                (credential.adoption_key(), &credential.source)
            {
                let mut properties = Map::new();
                properties.insert("ObjectId".into(), Value::String(object_id.to_string()));
                properties.insert("Sweep".into(), Value::String(credential.sweep.to_string()));
                index
                    .entry(app_index_partition(&app_id))
                    .or_default()
                    .insert(app_id.to_string(), properties);
            }
        }
        let index = index
            .into_iter()
            .map(|(partition, rows)| {
                let rows = rows
                    .into_iter()
                    .map(|(row, properties)| Ok((key(&row)?, properties)))
                    .collect::<Result<Vec<_>, PortError>>()?;
                Ok((partition, rows))
            })
            .collect::<Result<Vec<_>, PortError>>()?;
        self.write_partitions(index).await
    }

    async fn put_vault(&self, vault: &InventoryVault) -> Result<(), PortError> {
        let properties = record_properties(vault, "a vault")?;
        self.put(VAULT_PARTITION, vault.id().as_str(), &properties)
            .await
    }

    async fn put_finding(&self, finding: &ScopeFinding) -> Result<(), PortError> {
        let mut properties = record_properties(finding, "a finding")?;
        properties.insert("Sweep".into(), Value::String(finding.sweep.to_string()));
        let partition = format!("{FINDING_PREFIX}{}", finding.scope.key());
        self.put(&partition, finding.id().as_str(), &properties)
            .await
    }

    async fn put_snapshot(&self, snapshot: &SweepSnapshot) -> Result<(), PortError> {
        let row = Self::snapshot_row(snapshot);
        let mut properties = record_properties(snapshot, "a snapshot")?;
        properties.insert("Sweep".into(), Value::String(snapshot.sweep.to_string()));
        self.put(SNAPSHOT_PARTITION, &row, &properties).await?;
        // The same sweep written before at another time is replaced, not kept beside.
        self.delete_where(format!(
            "PartitionKey eq {} and Sweep eq {} and RowKey ne {}",
            odata_string(SNAPSHOT_PARTITION),
            odata_string(snapshot.sweep.as_str()),
            odata_string(&row)
        ))
        .await?;
        Ok(())
    }

    async fn retire_unseen(
        &self,
        source: &CredentialSource,
        sweep: &SweepId,
    ) -> Result<u64, PortError> {
        self.delete_where(format!(
            "PartitionKey eq {} and Sweep lt {}",
            odata_string(&format!("{CREDENTIAL_PREFIX}{}", source.key())),
            odata_string(sweep.as_str())
        ))
        .await
    }

    /// One query over the credential partitions selects the range's older rows by the
    /// `DirectoryRange` property each directory credential carries; no record is read.
    /// An applications range also retires its older application index rows (the
    /// applications deleted since, or left without a client secret), which are not
    /// counted.
    async fn retire_unseen_in_range(
        &self,
        range: &DirectoryRange,
        sweep: &SweepId,
    ) -> Result<u64, PortError> {
        let removed = self
            .delete_where(format!(
                "PartitionKey gt {} and PartitionKey lt {} and {RANGE_PROPERTY} eq {} and Sweep lt {}",
                odata_string(CREDENTIAL_PREFIX),
                odata_string(CREDENTIAL_END),
                odata_string(&range.label()),
                odata_string(sweep.as_str())
            ))
            .await?;
        if range.kind == DirectoryKind::Applications {
            // `i` + the range's digit + any second digit: between `i{d}` and `i{d}~`.
            let first = format!("{APP_INDEX_PREFIX}{}", range.prefix);
            self.delete_where(format!(
                "PartitionKey gt {} and PartitionKey lt {} and Sweep lt {}",
                odata_string(&first),
                odata_string(&format!("{first}~")),
                odata_string(sweep.as_str())
            ))
            .await?;
        }
        Ok(removed)
    }

    async fn clear_findings(&self, scope: &Scope, sweep: &SweepId) -> Result<u64, PortError> {
        self.delete_where(format!(
            "PartitionKey eq {} and Sweep lt {}",
            odata_string(&format!("{FINDING_PREFIX}{}", scope.key())),
            odata_string(sweep.as_str())
        ))
        .await
    }

    async fn put_adoptions(&self, adoptions: &[Adoption]) -> Result<(), PortError> {
        let mut partitions: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for adoption in adoptions {
            let mut properties = Map::new();
            for (name, value) in [
                ("AppId", adoption.app_id.to_string()),
                ("KeyId", adoption.key_id.to_string()),
                ("Holder", adoption.holder.to_string()),
                ("Vault", adoption.vault.to_string()),
                ("Sweep", adoption.sweep.to_string()),
            ] {
                properties.insert(name.into(), Value::String(value));
            }
            partitions
                .entry(adoption_partition(&adoption.app_id))
                .or_default()
                .push((key(adoption.id().as_str())?, properties));
        }
        self.write_partitions(partitions.into_iter().collect())
            .await
    }

    async fn adopted(&self, apps: &[AppId]) -> Result<BTreeSet<(AppId, KeyId)>, PortError> {
        let apps: BTreeSet<AppId> = apps.iter().copied().collect();
        let (Some(first), Some(last)) = (apps.first(), apps.last()) else {
            return Ok(BTreeSet::new());
        };
        const SELECT: &[&str] = &["AppId", "KeyId"];
        let select = SELECT;
        let rows = if apps.len() <= ADOPTION_POINT_READS {
            let filters: Vec<String> = apps
                .iter()
                .map(|app| format!("PartitionKey eq {}", odata_string(&adoption_partition(app))))
                .collect();
            stream::iter(filters)
                .map(|filter| self.select_all(filter, SELECT))
                .buffer_unordered(WRITE_CONCURRENCY)
                .try_concat()
                .await?
        } else {
            self.select_all(
                format!(
                    "PartitionKey ge {} and PartitionKey le {}",
                    odata_string(&adoption_partition(first)),
                    odata_string(&adoption_partition(last))
                ),
                select,
            )
            .await?
        };
        let mut adopted = BTreeSet::new();
        for (_, _, properties) in &rows {
            let pair = adoption_pair(properties)?;
            if apps.contains(&pair.0) {
                adopted.insert(pair);
            }
        }
        Ok(adopted)
    }

    async fn retire_adoptions(
        &self,
        vault: &CredentialSource,
        sweep: &SweepId,
    ) -> Result<Vec<(AppId, KeyId)>, PortError> {
        let rows = self
            .select_all(
                format!(
                    "PartitionKey gt {} and PartitionKey lt {} and Vault eq {} and Sweep lt {}",
                    odata_string(ADOPTION_PREFIX),
                    odata_string(ADOPTION_END),
                    odata_string(vault.key().as_str()),
                    odata_string(sweep.as_str())
                ),
                &["AppId", "KeyId"],
            )
            .await?;
        let mut ended = Vec::new();
        for (partition, row, properties) in &rows {
            let deleted = self
                .client
                .delete(&self.table, &key(partition)?, &key(row)?, &IfMatch::Any)
                .await;
            match deleted {
                Ok(()) => ended.push(adoption_pair(properties)?),
                // A concurrent rerun retired it (and reports it).
                Err(error) if error.kind == FailureKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok(ended)
    }

    async fn mark_adopted(
        &self,
        pairs: &[(AppId, KeyId)],
        adopted: bool,
    ) -> Result<u64, PortError> {
        let mut by_app: BTreeMap<AppId, Vec<KeyId>> = BTreeMap::new();
        for (app_id, key_id) in pairs {
            by_app.entry(*app_id).or_default().push(*key_id);
        }
        let mut changed = 0;
        for (app_id, key_ids) in by_app {
            let Some(object_id) = self.object_of(&app_id).await? else {
                continue;
            };
            let source = CredentialSource::Application {
                object_id,
                app_id,
                display_name: None,
            };
            let partition = key(&format!("{CREDENTIAL_PREFIX}{}", source.key()))?;
            for key_id in key_ids {
                let row =
                    key(InventoryCredential::password_credential_id(&source, &key_id).as_str())?;
                if self.mark_row(&partition, &row, adopted).await? {
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    async fn credentials(
        &self,
        filter: &CredentialFilter,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<InventoryCredential>, PortError> {
        // What OData can decide is pushed down; `filter.matches` decides the rest (owners
        // live inside the record), so a page may come back short or empty.
        let mut conditions = vec![
            format!("PartitionKey gt {}", odata_string(CREDENTIAL_PREFIX)),
            format!("PartitionKey lt {}", odata_string(CREDENTIAL_END)),
        ];
        if let Some(expiring) = &filter.expiring {
            conditions.push(format!(
                "Expires le datetime'{}'",
                datetime(expiring.until())
            ));
        }
        if filter.unmanaged_only {
            conditions.push("Managed eq false".to_owned());
        }
        if let Some(kind) = filter.source_kind {
            conditions.push(format!("SourceKind eq {}", odata_string(kind.as_str())));
        }
        if let Some(kind) = filter.kind {
            conditions.push(format!("Kind eq {}", odata_string(kind.as_str())));
        }
        let mut page: Page<InventoryCredential> = self
            .page_of(conditions.join(" and "), after, limit, "credential")
            .await?;
        page.items.retain(|credential| filter.matches(credential));
        Ok(page)
    }

    async fn vaults(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<InventoryVault>, PortError> {
        let filter = format!("PartitionKey eq {}", odata_string(VAULT_PARTITION));
        self.page_of(filter, after, limit, "vault").await
    }

    async fn vault(&self, uri: &VaultUrl) -> Result<Option<InventoryVault>, PortError> {
        // One point query: the vault partition, the vault's id as the row.
        let filter = format!(
            "PartitionKey eq {} and RowKey eq {}",
            odata_string(VAULT_PARTITION),
            odata_string(CredentialSource::vault_key(uri).as_str())
        );
        let page: Page<InventoryVault> = self.page_of(filter, None, 1, "vault").await?;
        Ok(page.items.into_iter().next())
    }

    async fn findings(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<ScopeFinding>, PortError> {
        // `f` + 64 hex digits: every finding partition sorts between `f` and `g`.
        let filter = format!(
            "PartitionKey gt {} and PartitionKey lt {}",
            odata_string(FINDING_PREFIX),
            odata_string("g")
        );
        self.page_of(filter, after, limit, "finding").await
    }

    async fn snapshots(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<SweepSnapshot>, PortError> {
        let filter = format!("PartitionKey eq {}", odata_string(SNAPSHOT_PARTITION));
        self.page_of(filter, after, limit, "snapshot").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_record_is_split_under_the_property_limit_and_read_back_whole() {
        let text = "é".repeat(CHUNK_CHARS * 2 + 5);

        let properties = record_properties(&text, "a test record").expect("fits");
        let back: String = record_of(&properties, "row", "test record").expect("reads");

        assert_eq!(properties.len(), 3);
        assert!(properties.values().all(|chunk| {
            chunk.as_str().expect("text").encode_utf16().count() * 2 <= 64 * 1024
        }));
        assert_eq!(back, text);
    }

    #[test]
    fn an_expiry_outside_table_storage_s_dates_is_filtered_on_at_its_end_and_kept_whole() {
        use std::collections::BTreeMap;

        use crate::domain::inventory::{CredentialHandle, CredentialKind};
        use crate::domain::names::{VaultName, VaultUrl};

        let credential = |expires: DateTime<Utc>| InventoryCredential {
            source: CredentialSource::Vault {
                subscription: None,
                name: "kv-prod".parse::<VaultName>().expect("name"),
                uri: VaultUrl::parse("https://kv-prod.vault.azure.net").expect("url"),
            },
            kind: CredentialKind::Secret,
            name: "far".to_owned(),
            handle: CredentialHandle::VaultObject {
                name: "far".to_owned(),
                version: None,
                versions: None,
            },
            enabled: true,
            created: None,
            updated: None,
            not_before: None,
            expires: Some(expires),
            content_type: None,
            tags: BTreeMap::new(),
            certificate: None,
            key: None,
            directory: None,
            owners: Vec::new(),
            managed: false,
            scanned_at: DateTime::from_timestamp(1_811_764_800, 0).expect("time"),
            sweep: SweepId::parse("s1").expect("sweep"),
        };
        // What Key Vault's Unix seconds and Graph's offsets can name past either end.
        let cases = [
            (253_402_300_800, "9999-12-31T23:59:59.999999Z"),
            (8_000_000_000_000, "9999-12-31T23:59:59.999999Z"),
            (-100_000_000_000, "1601-01-01T00:00:00.000000Z"),
            (1_811_764_800, "2027-05-31T12:00:00.000000Z"),
        ];
        for (seconds, written) in cases {
            let credential = credential(DateTime::from_timestamp(seconds, 0).expect("a time"));

            let (_, _, properties) =
                TableInventory::credential_entity(&credential).expect("an entity");
            let back: InventoryCredential =
                record_of(&properties, "row", "credential").expect("reads");

            assert_eq!(properties["Expires"], written, "{seconds}");
            assert_eq!(back, credential);
        }
    }

    mod records {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::*;
        use crate::adapters::azure::client::table::EntityKey;
        use crate::domain::ids::{AppId, DirectoryObjectId, KeyId, SubscriptionId};
        use crate::domain::inventory::{
            CertificateDetails, CredentialHandle, CredentialKind, DirectoryDetails, KeyDetails,
            LifetimeAction, LifetimeActionType, LifetimeTrigger, Owner,
        };
        use crate::domain::names::{VaultName, VaultUrl};

        const GUID: &str = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

        /// Text as outside systems name things: short, any Unicode, or long enough to
        /// span the record's chunks.
        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => ".{0,12}",
                1 => "[a-zé😀\"\\\\]{15990,16010}",
            ]
        }

        /// Any time chrono holds: far past and future included.
        fn time() -> impl Strategy<Value = DateTime<Utc>> {
            prop_oneof![
                3 => 0i64..4_102_444_800,
                1 => -8_000_000_000_000i64..8_000_000_000_000,
            ]
            .prop_flat_map(|s| (Just(s), 0u32..1_000_000_000))
            .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).expect("in chrono's range"))
        }

        fn source() -> impl Strategy<Value = CredentialSource> {
            let name = "[a-z][a-z0-9]{2,20}";
            prop_oneof![
                (prop::option::of(GUID), name).prop_map(|(subscription, name)| {
                    CredentialSource::Vault {
                        subscription: subscription
                            .map(|s| SubscriptionId::parse(&s).expect("guid")),
                        name: name.parse::<VaultName>().expect("vault name"),
                        uri: VaultUrl::parse(&format!("https://{name}.vault.azure.net"))
                            .expect("vault url"),
                    }
                }),
                (GUID, GUID, prop::option::of(text()), any::<bool>()).prop_map(
                    |(object, app, display_name, application)| {
                        let object_id = DirectoryObjectId::parse(&object).expect("guid");
                        let app_id = AppId::parse(&app).expect("guid");
                        if application {
                            CredentialSource::Application {
                                object_id,
                                app_id,
                                display_name,
                            }
                        } else {
                            CredentialSource::ServicePrincipal {
                                object_id,
                                app_id,
                                display_name,
                            }
                        }
                    }
                ),
            ]
        }

        fn details() -> impl Strategy<
            Value = (
                Option<CertificateDetails>,
                Option<KeyDetails>,
                Option<DirectoryDetails>,
            ),
        > {
            let certificate = (
                prop::option::of(text()),
                prop::option::of(any::<u32>()),
                any::<bool>(),
                prop::collection::vec((any::<bool>(), any::<bool>(), any::<u32>()), 0..3),
            )
                .prop_map(|(issuer, key_size, sha1, actions)| CertificateDetails {
                    issuer: issuer.clone(),
                    subject: issuer,
                    key_size,
                    sha1_signature: sha1,
                    lifetime_actions: actions
                        .into_iter()
                        .map(|(renew, days, n)| LifetimeAction {
                            action: if renew {
                                LifetimeActionType::AutoRenew
                            } else {
                                LifetimeActionType::EmailContacts
                            },
                            trigger: if days {
                                LifetimeTrigger::DaysBeforeExpiry(n)
                            } else {
                                LifetimeTrigger::LifetimePercentage(n)
                            },
                        })
                        .collect(),
                    ..CertificateDetails::default()
                });
            let key = (
                prop::option::of(text()),
                prop::option::of(any::<u32>()),
                any::<bool>(),
            )
                .prop_map(|(key_type, key_size, rotation_policy)| KeyDetails {
                    key_type,
                    key_size,
                    curve: None,
                    rotation_policy,
                });
            let directory = (prop::option::of(text()), prop::option::of(any::<u32>())).prop_map(
                |(usage, federated_credentials)| DirectoryDetails {
                    usage,
                    federated_credentials,
                    ..DirectoryDetails::default()
                },
            );
            (
                prop::option::of(certificate),
                prop::option::of(key),
                prop::option::of(directory),
            )
        }

        fn owner() -> impl Strategy<Value = Owner> {
            (
                prop::option::of(GUID),
                prop::option::of(text()),
                prop::option::of(text()),
                prop::option::of(text()),
            )
                .prop_map(|(id, display_name, user_principal_name, mail)| Owner {
                    object_id: id.map(|i| DirectoryObjectId::parse(&i).expect("guid")),
                    display_name,
                    user_principal_name,
                    mail,
                })
        }

        fn credential() -> impl Strategy<Value = InventoryCredential> {
            let handle = prop_oneof![
                (
                    text(),
                    prop::option::of("[0-9a-f]{32}"),
                    prop::option::of(any::<u32>())
                )
                    .prop_map(|(name, version, versions)| {
                        CredentialHandle::VaultObject {
                            name,
                            version,
                            versions,
                        }
                    }),
                GUID.prop_map(|k| CredentialHandle::DirectoryCredential {
                    key_id: KeyId::parse(&k).expect("guid")
                }),
            ];
            let times = (
                prop::option::of(time()),
                prop::option::of(time()),
                prop::option::of(time()),
                prop::option::of(time()),
                time(),
            );
            let rest = (
                prop::option::of(text()),
                prop::collection::btree_map(text(), text(), 0..3),
                details(),
                prop::collection::vec(owner(), 0..3),
                any::<bool>(),
                any::<bool>(),
                "[A-Za-z0-9_-]{1,64}",
            );
            (
                source(),
                prop::sample::select(CredentialKind::ALL.to_vec()),
                text(),
                handle,
                times,
                rest,
            )
                .prop_map(
                    |(
                        source,
                        kind,
                        name,
                        handle,
                        (created, updated, not_before, expires, scanned_at),
                        (
                            content_type,
                            tags,
                            (certificate, key, directory),
                            owners,
                            enabled,
                            managed,
                            sweep,
                        ),
                    )| {
                        let tags: BTreeMap<String, String> = tags;
                        InventoryCredential {
                            source,
                            kind,
                            name,
                            handle,
                            enabled,
                            created,
                            updated,
                            not_before,
                            expires,
                            content_type,
                            tags,
                            certificate,
                            key,
                            directory,
                            owners,
                            managed,
                            scanned_at,
                            sweep: SweepId::parse(&sweep).expect("sweep id"),
                        }
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]

            #[test]
            fn a_credential_written_as_a_row_reads_back_the_same(credential in credential()) {
                let (partition, row, properties) =
                    TableInventory::credential_entity(&credential).expect("fits an entity");

                let back: InventoryCredential =
                    record_of(&properties, &row, "credential").expect("reads back");

                prop_assert_eq!(&back, &credential);
                prop_assert!(EntityKey::parse(&partition).is_ok() && EntityKey::parse(&row).is_ok());
                for (name, value) in &properties {
                    if name.starts_with("Record") {
                        let units = value.as_str().expect("text").encode_utf16().count();
                        prop_assert!(units * 2 <= 64 * 1024, "{name} is {units} UTF-16 units");
                    }
                }
                if let Some(expires) = properties.get("Expires") {
                    let at = DateTime::parse_from_rfc3339(expires.as_str().expect("text"))
                        .expect("an RFC 3339 time");
                    prop_assert!((1601..=9999).contains(&chrono::Datelike::year(&at)));
                }
            }
        }
    }

    #[test]
    fn a_record_larger_than_an_entity_is_refused_not_cut() {
        let text = "x".repeat(CHUNK_CHARS * MAX_CHUNKS + 1);

        let error = record_properties(&text, "a test record").expect_err("too large");

        assert_eq!(error.kind, FailureKind::Invalid);
    }
}
