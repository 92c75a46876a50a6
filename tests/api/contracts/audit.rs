//! The audit log's contract, run against every store: the embedded SQLite file, Azure
//! Table storage (Azurite) and the in-memory double. Tampering goes straight to the
//! storage underneath, the way an attacker with access to the file or the table would.
//! The double keeps decoded entries, so an entry that no longer decodes cannot exist in
//! it: that scenario is for the stores that keep bytes (their `bytes` capability).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use keyturn::adapters::azure::audit::{CHAIN_PARTITION, MAX_POSITION, TableAuditStore};
use keyturn::adapters::azure::client::table::{
    EntityKey, IfMatch, TableClient, TableName, UpdateMode,
};
use keyturn::adapters::local::audit::LocalAuditStore;
use keyturn::adapters::local::store::LocalStore;
use keyturn::audit::{Actor, AuditLog, AuditText, BreakKind, ChainBreak, Outcome};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::audit::{AuditEntry, AuditRecord, StoredEntry};
use keyturn_doubles::MemoryAuditStore;

use super::contract;

/// Where the test command starts Azurite's table service.
const TABLE_ENDPOINT_VARIABLE: &str = "KEYTURN_TEST_TABLE_ENDPOINT";

/// Azurite's well-known development account key, published in Microsoft's Azurite
/// documentation; it opens nothing but a local emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Concurrent writers in the fork test: more than the two cores this runs on, so
/// writers really interleave, and enough that every append meets competition.
const WRITERS: usize = 8;
const APPENDS_PER_WRITER: usize = 6;

/// One store under test, and a way to reach under it.
#[async_trait]
trait Fixture: Send + Sync + 'static {
    /// A new writer on the same storage: its own SQLite connection or HTTP client, as
    /// separate processes or Functions instances would have.
    fn writer(&self) -> AuditLog;
    async fn edit_action(&self, position: u64, action: &str);
    async fn corrupt_hash(&self, position: u64);
    async fn delete(&self, position: u64);
    async fn swap(&self, first: u64, second: u64);
}

struct SqliteFixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteFixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state").join("keyturn.db");
        Self { _dir: dir, path }
    }

    fn raw(&self) -> rusqlite::Connection {
        let connection = rusqlite::Connection::open(&self.path).expect("the store file opens");
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .expect("busy timeout");
        connection
    }
}

#[async_trait]
impl Fixture for SqliteFixture {
    fn writer(&self) -> AuditLog {
        let store = LocalStore::open(&self.path).expect("the local store opens");
        AuditLog::new(Arc::new(LocalAuditStore::new(store)))
    }

    async fn edit_action(&self, position: u64, action: &str) {
        let changed = self
            .raw()
            .execute(
                "UPDATE audit_log SET action = ?1 WHERE position = ?2",
                rusqlite::params![action, position as i64],
            )
            .expect("update");
        assert_eq!(changed, 1);
    }

    async fn corrupt_hash(&self, position: u64) {
        let changed = self
            .raw()
            .execute(
                "UPDATE audit_log SET hash = 'not-a-hash' WHERE position = ?1",
                [position as i64],
            )
            .expect("update");
        assert_eq!(changed, 1);
    }

    async fn delete(&self, position: u64) {
        let changed = self
            .raw()
            .execute(
                "DELETE FROM audit_log WHERE position = ?1",
                [position as i64],
            )
            .expect("delete");
        assert_eq!(changed, 1);
    }

    async fn swap(&self, first: u64, second: u64) {
        let parking = 1_000_000_000i64;
        self.raw()
            .execute_batch(&format!(
                "BEGIN;
                 UPDATE audit_log SET position = {parking} WHERE position = {first};
                 UPDATE audit_log SET position = {first} WHERE position = {second};
                 UPDATE audit_log SET position = {second} WHERE position = {parking};
                 COMMIT;"
            ))
            .expect("swap");
    }
}

struct TableFixture {
    connection_string: SecretValue,
    client: TableClient,
    table: TableName,
}

impl TableFixture {
    async fn new() -> Self {
        let endpoint = std::env::var(TABLE_ENDPOINT_VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{TABLE_ENDPOINT_VARIABLE} is not set: start Azurite via the project's test command (.ci/test)"
            )
        });
        let connection_string = SecretValue::new(format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
        ));
        let client = TableClient::from_connection_string(&connection_string, None)
            .expect("a valid connection string");
        let table = TableName::parse(&format!("audit{}", uuid::Uuid::new_v4().simple()))
            .expect("a valid table name");
        TableAuditStore::new(client.clone(), table.clone())
            .ensure_table()
            .await
            .expect("the table is created (is Azurite running?)");
        Self {
            connection_string,
            client,
            table,
        }
    }

    fn keys(position: u64) -> (EntityKey, EntityKey) {
        (
            EntityKey::parse(CHAIN_PARTITION).expect("valid key"),
            EntityKey::parse(&format!("{:019}", MAX_POSITION - position)).expect("valid key"),
        )
    }

    async fn properties(&self, position: u64) -> Map<String, Value> {
        let (partition, row) = Self::keys(position);
        self.client
            .get::<Map<String, Value>>(&self.table, &partition, &row)
            .await
            .expect("the entity exists")
            .properties
    }

    async fn replace(&self, position: u64, properties: &Map<String, Value>) {
        let (partition, row) = Self::keys(position);
        self.client
            .update(
                &self.table,
                &partition,
                &row,
                properties,
                UpdateMode::Replace,
                &IfMatch::Any,
            )
            .await
            .expect("the entity is replaced");
    }
}

#[async_trait]
impl Fixture for TableFixture {
    fn writer(&self) -> AuditLog {
        let client = TableClient::from_connection_string(&self.connection_string, None)
            .expect("a valid connection string");
        AuditLog::new(Arc::new(TableAuditStore::new(client, self.table.clone())))
    }

    async fn edit_action(&self, position: u64, action: &str) {
        let mut properties = self.properties(position).await;
        properties.insert("Action".into(), Value::String(action.into()));
        self.replace(position, &properties).await;
    }

    async fn corrupt_hash(&self, position: u64) {
        let mut properties = self.properties(position).await;
        properties.insert("Hash".into(), Value::String("not-a-hash".into()));
        self.replace(position, &properties).await;
    }

    async fn delete(&self, position: u64) {
        let (partition, row) = Self::keys(position);
        self.client
            .delete(&self.table, &partition, &row, &IfMatch::Any)
            .await
            .expect("the entity is deleted");
    }

    async fn swap(&self, first: u64, second: u64) {
        let first_properties = self.properties(first).await;
        let second_properties = self.properties(second).await;
        self.replace(first, &second_properties).await;
        self.replace(second, &first_properties).await;
    }
}

/// The in-memory double, shared by every writer as one store is by several instances.
#[derive(Default)]
struct MemoryFixture {
    store: Arc<MemoryAuditStore>,
}

impl MemoryFixture {
    fn entry(entries: &mut BTreeMap<u64, AuditEntry>, position: u64) -> &mut AuditEntry {
        entries.get_mut(&position).expect("the entry exists")
    }
}

#[async_trait]
impl Fixture for MemoryFixture {
    fn writer(&self) -> AuditLog {
        AuditLog::new(self.store.clone())
    }

    async fn edit_action(&self, position: u64, action: &str) {
        self.store.tamper(|entries| {
            Self::entry(entries, position).record.action = text(action);
        });
    }

    async fn corrupt_hash(&self, _position: u64) {
        unreachable!("the double keeps decoded entries: its suite leaves this scenario out")
    }

    async fn delete(&self, position: u64) {
        self.store.tamper(|entries| {
            assert!(entries.remove(&position).is_some(), "the entry exists");
        });
    }

    async fn swap(&self, first: u64, second: u64) {
        self.store.tamper(|entries| {
            let first_entry = Self::entry(entries, first).clone();
            let second_entry = std::mem::replace(Self::entry(entries, second), first_entry);
            *Self::entry(entries, first) = second_entry;
        });
    }
}

fn text(value: &str) -> AuditText {
    AuditText::parse(value).expect("test text is valid")
}

fn clock(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .expect("a valid fixed time")
        + chrono::Duration::seconds(i64::from(second))
}

fn rotation(invocation: &str, second: u32) -> AuditRecord {
    let mut record = AuditRecord::new(
        clock(second),
        Actor::Function(text("RotationWorker")),
        text("secret.rotate"),
        Outcome::Succeeded,
    );
    record.object.vault = Some(text("kv-prod"));
    record.object.secret_name = Some(text("db-password"));
    record.object.secret_version = Some(text("0123456789abcdef0123456789abcdef"));
    record.reason = Some(text("due: expires in 29 days"));
    record.invocation_id = Some(text(invocation));
    record
}

async fn append_five(log: &AuditLog) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    for second in 0..5 {
        let mut record = rotation(&format!("invocation-{second}"), second);
        // One entry stands for folded repeats: its count is stored and read back too.
        record.count = (second == 2).then_some(100_000);
        let entry = log.append(record).await.expect("append");
        entries.push(entry);
    }
    entries
}

fn entries(stored: Vec<StoredEntry>) -> Vec<AuditEntry> {
    stored
        .into_iter()
        .map(|stored| {
            let entry = stored.content.expect("every stored entry decodes");
            assert_eq!(entry.sequence, stored.position);
            entry
        })
        .collect()
}

async fn appended_entries_read_back_unchanged_and_verify(fixture: impl Fixture) {
    let log = fixture.writer();

    let appended = append_five(&log).await;

    assert_eq!(
        appended.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let read_back = entries(log.read(1, 100).await.expect("read"));
    assert_eq!(read_back, appended);
    let report = log.verify().await.expect("verify");
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.entries_checked, 5);
    let head = report.head.expect("a non-empty log has a head");
    assert_eq!((head.sequence, head.hash), (5, Some(appended[4].hash)));
}

async fn chain_breaks_when_an_entry_is_edited(fixture: impl Fixture) {
    let log = fixture.writer();
    append_five(&log).await;

    fixture.edit_action(3, "secret.delete").await;

    let report = log.verify().await.expect("verify");
    let found = report.first_break.clone().expect("the edit is detected");
    assert_eq!(found.sequence, 3, "{report}");
    assert!(
        matches!(found.problem, BreakKind::ContentHashMismatch { .. }),
        "{report}"
    );
    assert_eq!(report.entries_checked, 2);
}

async fn chain_breaks_when_an_entry_is_deleted(fixture: impl Fixture) {
    let log = fixture.writer();
    append_five(&log).await;

    fixture.delete(3).await;

    let report = log.verify().await.expect("verify");
    assert_eq!(
        report.first_break,
        Some(ChainBreak {
            sequence: 3,
            problem: BreakKind::Missing {
                next_present: Some(4)
            }
        }),
        "{report}"
    );
}

async fn chain_breaks_when_entries_are_reordered(fixture: impl Fixture) {
    let log = fixture.writer();
    append_five(&log).await;

    fixture.swap(2, 3).await;

    let report = log.verify().await.expect("verify");
    assert_eq!(
        report.first_break,
        Some(ChainBreak {
            sequence: 2,
            problem: BreakKind::OutOfOrder { found: 3 }
        }),
        "{report}"
    );
}

async fn chain_breaks_when_an_entry_no_longer_decodes(fixture: impl Fixture) {
    let log = fixture.writer();
    append_five(&log).await;

    fixture.corrupt_hash(4).await;

    let report = log.verify().await.expect("verify");
    let found = report.first_break.clone().expect("the damage is detected");
    assert_eq!(found.sequence, 4, "{report}");
    assert!(
        matches!(found.problem, BreakKind::Unreadable { .. }),
        "{report}"
    );
}

async fn concurrent_writers_extend_one_chain_without_forks_or_gaps(fixture: impl Fixture) {
    let writers: Vec<AuditLog> = (0..WRITERS).map(|_| fixture.writer()).collect();

    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(writer, log)| {
            tokio::spawn(async move {
                for append in 0..APPENDS_PER_WRITER {
                    let invocation = format!("writer-{writer}-append-{append}");
                    log.append(rotation(&invocation, append as u32))
                        .await
                        .expect("a concurrent append succeeds");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a writer task completes");
    }

    let log = fixture.writer();
    let total = (WRITERS * APPENDS_PER_WRITER) as u64;
    let report = log.verify().await.expect("verify");
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.entries_checked, total);
    let stored = entries(log.read(1, 1000).await.expect("read"));
    let sequences: Vec<u64> = stored.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=total).collect::<Vec<_>>());
    let invocations: BTreeSet<String> = stored
        .iter()
        .map(|e| e.record.invocation_id.as_ref().expect("set").to_string())
        .collect();
    assert_eq!(
        invocations.len(),
        WRITERS * APPENDS_PER_WRITER,
        "every append is stored exactly once"
    );
}

async fn stored_entries_never_hold_a_secret_value_handled_alongside(fixture: impl Fixture) {
    let log = fixture.writer();
    let new_value = SecretValue::new("Zq8!-new-db-password-value-7731");
    let mut record = rotation("invocation-secret", 0);
    record.reason = Some(text(&format!("rotated to {new_value}")));

    log.append(record).await.expect("append");

    let stored = entries(log.read(1, 10).await.expect("read"));
    let json = serde_json::to_string(&stored).expect("entries serialise");
    assert!(json.contains("db-password"), "the entry names the secret");
    assert!(
        !json.contains(new_value.expose()),
        "the entry holds the value"
    );
    let fields: Vec<String> = serde_json::from_str::<Vec<Map<String, Value>>>(&json)
        .expect("a JSON array of objects")
        .iter()
        .flat_map(|entry| entry.keys().cloned().collect::<Vec<_>>())
        .collect();
    assert!(
        fields.iter().all(|field| !field.contains("value")),
        "{fields:?}"
    );
}

macro_rules! audit_suite {
    ($($adapter:ident ($capability:ident): $fixture:expr),+ $(,)?) => {
        $( audit_suite!(@ $capability, $adapter, $fixture); )+
    };
    (@ bytes, $adapter:ident, $fixture:expr) => {
        contract!($adapter: $fixture =>
            appended_entries_read_back_unchanged_and_verify,
            chain_breaks_when_an_entry_is_edited,
            chain_breaks_when_an_entry_is_deleted,
            chain_breaks_when_entries_are_reordered,
            chain_breaks_when_an_entry_no_longer_decodes,
            concurrent_writers_extend_one_chain_without_forks_or_gaps,
            stored_entries_never_hold_a_secret_value_handled_alongside,
        );
    };
    (@ decoded, $adapter:ident, $fixture:expr) => {
        contract!($adapter: $fixture =>
            appended_entries_read_back_unchanged_and_verify,
            chain_breaks_when_an_entry_is_edited,
            chain_breaks_when_an_entry_is_deleted,
            chain_breaks_when_entries_are_reordered,
            concurrent_writers_extend_one_chain_without_forks_or_gaps,
            stored_entries_never_hold_a_secret_value_handled_alongside,
        );
    };
}

audit_suite!(
    sqlite (bytes): async { super::SqliteFixture::new() },
    table (bytes): super::TableFixture::new(),
    memory (decoded): async { super::MemoryFixture::default() },
);

#[tokio::test]
async fn reopening_the_sqlite_file_keeps_the_chain() {
    let fixture = SqliteFixture::new();
    let before = append_five(&fixture.writer()).await;

    let reopened = fixture.writer();
    let next = reopened
        .append(rotation("after-reopen", 9))
        .await
        .expect("append after reopening");

    assert_eq!(next.sequence, 6);
    assert_eq!(next.prev_hash, before[4].hash);
    let report = reopened.verify().await.expect("verify");
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.entries_checked, 6);
}

#[tokio::test]
async fn the_table_client_is_refused_by_azurite_with_a_wrong_key() {
    // Proves requests are really signed and checked: the same request with another key
    // must be refused, as a permission problem that names no key.
    let endpoint = std::env::var(TABLE_ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!("{TABLE_ENDPOINT_VARIABLE} is not set: start Azurite via the project's test command (.ci/test)")
    });
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let connection_string = SecretValue::new(format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={wrong_key};TableEndpoint={endpoint}"
    ));
    let client = TableClient::from_connection_string(&connection_string, None)
        .expect("a valid connection string");
    let table =
        TableName::parse(&format!("refused{}", uuid::Uuid::new_v4().simple())).expect("valid name");

    let error = client
        .create_table_if_not_exists(&table)
        .await
        .expect_err("a wrong key is refused");

    assert!(
        matches!(
            error.kind,
            keyturn::ports::FailureKind::PermissionDenied { .. }
        ),
        "{error:?}"
    );
    assert!(!error.to_string().contains(wrong_key));
}

#[tokio::test]
async fn the_table_client_round_trips_entities_with_awkward_keys_and_etags() {
    let fixture = TableFixture::new().await;
    let client = &fixture.client;
    let table = &fixture.table;
    let partition = EntityKey::parse("o'brien & co (50%)").expect("valid key");
    let row = EntityKey::parse("ümlaut 'quoted' +plus").expect("valid key");
    let mut properties = Map::new();
    properties.insert("Name".into(), Value::String("first".into()));

    let etag = client
        .insert(table, &partition, &row, &properties)
        .await
        .expect("insert");
    let again = client
        .insert(table, &partition, &row, &properties)
        .await
        .expect_err("duplicate");
    let read = client
        .get::<Map<String, Value>>(table, &partition, &row)
        .await
        .expect("get");

    assert_eq!(again.kind, keyturn::ports::FailureKind::Conflict);
    assert_eq!(
        read.properties.get("Name"),
        Some(&Value::String("first".into()))
    );
    assert_eq!(
        (read.partition_key.as_str(), read.row_key.as_str()),
        (partition.as_str(), row.as_str())
    );

    properties.insert("Name".into(), Value::String("second".into()));
    let newer = client
        .update(
            table,
            &partition,
            &row,
            &properties,
            UpdateMode::Merge,
            &IfMatch::Etag(etag.clone()),
        )
        .await
        .expect("update with the current ETag");
    let stale = client
        .update(
            table,
            &partition,
            &row,
            &properties,
            UpdateMode::Replace,
            &IfMatch::Etag(etag),
        )
        .await
        .expect_err("a stale ETag is refused");
    assert_eq!(stale.kind, keyturn::ports::FailureKind::Conflict);

    client
        .delete(table, &partition, &row, &IfMatch::Etag(newer))
        .await
        .expect("delete with the current ETag");
    let gone = client
        .get::<Map<String, Value>>(table, &partition, &row)
        .await
        .expect_err("deleted");
    assert_eq!(gone.kind, keyturn::ports::FailureKind::NotFound);
}

#[tokio::test]
async fn the_table_client_follows_continuations_across_pages() {
    let fixture = TableFixture::new().await;
    let partition = EntityKey::parse("p").expect("valid key");
    for index in 0..7 {
        let row = EntityKey::parse(&format!("r{index}")).expect("valid key");
        let mut properties = Map::new();
        properties.insert("Index".into(), Value::String(index.to_string()));
        properties.insert("Other".into(), Value::String("x".into()));
        fixture
            .client
            .insert(&fixture.table, &partition, &row, &properties)
            .await
            .expect("insert");
    }

    let mut query = keyturn::adapters::azure::client::table::Query {
        filter: Some("PartitionKey eq 'p' and Index ne '3'".into()),
        select: vec!["Index".into()],
        top: Some(2),
        continuation: None,
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = fixture
            .client
            .query::<Map<String, Value>>(&fixture.table, &query)
            .await
            .expect("query");
        pages += 1;
        for entity in page.entities {
            assert!(
                !entity.properties.contains_key("Other"),
                "$select is applied"
            );
            seen.push(
                entity.properties["Index"]
                    .as_str()
                    .expect("a string")
                    .to_owned(),
            );
        }
        match page.continuation {
            Some(next) => query.continuation = Some(next),
            None => break,
        }
    }

    assert_eq!(seen, ["0", "1", "2", "4", "5", "6"]);
    assert!(
        pages >= 3,
        "$top=2 over six matches takes at least three pages, took {pages}"
    );
}

fn named(name: &str) -> Map<String, Value> {
    let mut properties = Map::new();
    properties.insert("Name".into(), Value::String(name.into()));
    properties
}

async fn rows_in(fixture: &TableFixture, partition: &str) -> Vec<String> {
    let query = keyturn::adapters::azure::client::table::Query {
        filter: Some(format!("PartitionKey eq '{partition}'")),
        ..Default::default()
    };
    fixture
        .client
        .query::<Map<String, Value>>(&fixture.table, &query)
        .await
        .expect("query")
        .entities
        .into_iter()
        .map(|entity| entity.row_key.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn a_table_transaction_stores_all_of_its_entities_or_none() {
    let fixture = TableFixture::new().await;
    let partition = EntityKey::parse("tx").expect("valid key");
    let key = |row: &str| EntityKey::parse(row).expect("valid key");
    let first: Vec<(EntityKey, Map<String, Value>)> = ["a", "b", "c"]
        .into_iter()
        .map(|row| (key(row), named(row)))
        .collect();

    fixture
        .client
        .insert_all(&fixture.table, &partition, &first)
        .await
        .expect("a transaction of three new entities is stored");
    // The second transaction's middle entity takes a key the first one stored.
    let second: Vec<(EntityKey, Map<String, Value>)> = ["d", "b", "e"]
        .into_iter()
        .map(|row| (key(row), named(row)))
        .collect();
    let refused = fixture
        .client
        .insert_all(&fixture.table, &partition, &second)
        .await
        .expect_err("a taken key refuses the whole transaction");

    assert_eq!(
        refused.kind,
        keyturn::ports::FailureKind::Conflict,
        "{refused}"
    );
    assert_eq!(
        rows_in(&fixture, "tx").await,
        ["a", "b", "c"],
        "nothing of the refused transaction is stored"
    );
    let read = fixture
        .client
        .get::<Map<String, Value>>(&fixture.table, &partition, &key("b"))
        .await
        .expect("get");
    assert_eq!(
        read.properties.get("Name"),
        Some(&Value::String("b".into()))
    );
}

#[tokio::test]
async fn a_table_transaction_of_the_largest_size_is_stored_and_a_larger_one_is_refused_unsent() {
    use keyturn::adapters::azure::client::table::MAX_BATCH_ENTITIES;
    let fixture = TableFixture::new().await;
    let partition = EntityKey::parse("big").expect("valid key");
    let rows = |count: usize, prefix: &str| -> Vec<(EntityKey, Map<String, Value>)> {
        (0..count)
            .map(|i| {
                let row = format!("{prefix}{i:03}");
                (EntityKey::parse(&row).expect("valid key"), named(&row))
            })
            .collect()
    };

    fixture
        .client
        .insert_all(&fixture.table, &partition, &rows(MAX_BATCH_ENTITIES, "r"))
        .await
        .expect("the service's largest transaction is stored");
    let too_many = fixture
        .client
        .insert_all(
            &fixture.table,
            &partition,
            &rows(MAX_BATCH_ENTITIES + 1, "s"),
        )
        .await
        .expect_err("one entity more than a transaction may hold");

    assert_eq!(
        too_many.kind,
        keyturn::ports::FailureKind::Invalid,
        "{too_many}"
    );
    let stored = rows_in(&fixture, "big").await;
    assert_eq!(stored.len(), MAX_BATCH_ENTITIES);
    assert!(stored.iter().all(|row| row.starts_with('r')), "{stored:?}");
}

/// The Table store, counting the writes the audit writer hands it and their sizes.
#[derive(Debug)]
struct CountingStore {
    inner: TableAuditStore,
    writes: std::sync::Mutex<Vec<usize>>,
}

#[async_trait]
impl keyturn::ports::audit::AuditStore for CountingStore {
    async fn head(&self) -> Result<Option<StoredEntry>, keyturn::ports::PortError> {
        self.inner.head().await
    }

    async fn append(&self, entry: &AuditEntry) -> Result<(), keyturn::ports::PortError> {
        self.append_all(std::slice::from_ref(entry)).await
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    async fn append_all(&self, entries: &[AuditEntry]) -> Result<(), keyturn::ports::PortError> {
        self.writes.lock().expect("test lock").push(entries.len());
        self.inner.append_all(entries).await
    }

    async fn read(
        &self,
        from: u64,
        count: u32,
    ) -> Result<Vec<StoredEntry>, keyturn::ports::PortError> {
        self.inner.read(from, count).await
    }
}

#[tokio::test]
async fn concurrent_appends_to_the_table_store_are_written_in_shared_transactions() {
    use keyturn::ports::audit::AuditStore;
    let fixture = TableFixture::new().await;
    let store = Arc::new(CountingStore {
        inner: TableAuditStore::new(fixture.client.clone(), fixture.table.clone()),
        writes: std::sync::Mutex::default(),
    });
    let log = AuditLog::new(store.clone());
    let mut appends = tokio::task::JoinSet::new();
    for second in 0..120u32 {
        let log = log.clone();
        appends.spawn(async move { log.append(rotation("batched", second)).await });
    }
    let mut sequences = BTreeSet::new();
    while let Some(result) = appends.join_next().await {
        let entry = result.expect("task").expect("append");
        sequences.insert(entry.sequence);
    }

    assert_eq!(sequences, (1..=120).collect::<BTreeSet<u64>>());
    let writes = store.writes.lock().expect("test lock").clone();
    assert_eq!(writes.iter().sum::<usize>(), 120, "{writes:?}");
    assert!(
        writes.len() < 120 && writes.iter().any(|&size| size > 1),
        "appends queued behind a round trip share a transaction: {writes:?}"
    );
    assert!(
        writes.iter().all(|&size| size <= store.max_batch()),
        "{writes:?}"
    );
    let report = log.verify().await.expect("verify");
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.entries_checked, 120);
}
