//! The anchored audit log's tamper scenarios (`audit_anchor`) against Azure Table
//! storage for the entries and Blob storage for the checkpoints, both on Azurite. The
//! checkpoints are signed with a local Ed25519 key here; Key Vault's `sign` is the
//! stand-in's concern.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use keyturn::adapters::azure::anchor::BlobCheckpointStore;
use keyturn::adapters::azure::audit::{MAX_POSITION, TableAuditStore};
use keyturn::adapters::azure::client::blob::{BlobAuth, BlobClient, ContainerName};
use keyturn::adapters::azure::client::table::{
    EntityKey, IfMatch, TableClient, TableName, UpdateMode,
};
use keyturn::adapters::local::anchor::LocalSigningKey;
use keyturn::audit::{Anchor, AuditLog};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::audit::{AuditStore, ChainId, EntryHash};
use keyturn::ports::checkpoint::{CheckpointStore, PublicKey};

use crate::audit_anchor::*;

/// Azurite's well-known development account key; it opens nothing but the emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn endpoint(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: start Azurite via the project's test command (.ci/test)")
    })
}

pub(crate) struct AzureAnchored {
    connection_string: SecretValue,
    table: TableName,
    blob_endpoint: String,
    container: ContainerName,
    _key_dir: tempfile::TempDir,
    key: std::path::PathBuf,
}

impl AzureAnchored {
    pub(crate) async fn new() -> Self {
        let table_endpoint = endpoint("KEYTURN_TEST_TABLE_ENDPOINT");
        let blob_endpoint = endpoint("KEYTURN_TEST_BLOB_ENDPOINT");
        let connection_string = SecretValue::new(format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={table_endpoint}"
        ));
        let id = uuid::Uuid::new_v4().simple().to_string();
        let table = TableName::parse(&format!("anchor{id}")).expect("table name");
        let container = ContainerName::parse(&format!("checkpoints-{}", &id[..20])).expect("name");
        let key_dir = tempfile::tempdir().expect("tempdir");
        let fixture = Self {
            connection_string,
            table,
            blob_endpoint,
            container,
            key: key_dir.path().join("audit-signing.key"),
            _key_dir: key_dir,
        };
        TableAuditStore::new(fixture.table_client(), fixture.table.clone())
            .ensure_table()
            .await
            .expect("the table is created (is Azurite running?)");
        fixture
            .blob_client()
            .create_container_if_not_exists(&fixture.container)
            .await
            .expect("the container is created (is Azurite's blob service running?)");
        fixture
    }

    fn table_client(&self) -> TableClient {
        TableClient::from_connection_string(&self.connection_string, None).expect("client")
    }

    fn blob_client(&self) -> BlobClient {
        BlobClient::new(
            url::Url::parse(&self.blob_endpoint).expect("URL"),
            BlobAuth::SharedKey {
                account: "devstoreaccount1".to_owned(),
                key: SecretValue::new(AZURITE_ACCOUNT_KEY),
            },
            None,
        )
        .expect("client")
    }

    fn keys(chain: &ChainId, position: u64) -> (EntityKey, EntityKey) {
        (
            EntityKey::parse(chain.as_str()).expect("key"),
            EntityKey::parse(&format!("{:019}", MAX_POSITION - position)).expect("key"),
        )
    }

    async fn properties(&self, chain: &ChainId, position: u64) -> Map<String, Value> {
        let (partition, row) = Self::keys(chain, position);
        self.table_client()
            .get::<Map<String, Value>>(&self.table, &partition, &row)
            .await
            .expect("the entity exists")
            .properties
    }

    async fn replace(&self, chain: &ChainId, position: u64, properties: &Map<String, Value>) {
        let (partition, row) = Self::keys(chain, position);
        self.table_client()
            .update(
                &self.table,
                &partition,
                &row,
                properties,
                UpdateMode::Replace,
                &IfMatch::Any,
            )
            .await
            .expect("replaced");
    }

    async fn edit(&self, chain: &ChainId, position: u64, edits: &[(&str, String)]) {
        let mut properties = self.properties(chain, position).await;
        for (name, value) in edits {
            properties.insert((*name).into(), Value::String(value.clone()));
        }
        self.replace(chain, position, &properties).await;
    }

    /// The checkpoint blobs' names, in order.
    async fn blobs(&self) -> Vec<String> {
        self.blob_client()
            .list_blobs(&self.container, "")
            .await
            .expect("listed")
    }
}

#[async_trait]
impl Anchored for AzureAnchored {
    async fn writer(&self, chain: &ChainId) -> AuditLog {
        let key = LocalSigningKey::load_or_create(&self.key).expect("key");
        let anchor = Anchor {
            checkpoints: Arc::new(BlobCheckpointStore::new(
                self.blob_client(),
                self.container.clone(),
            )),
            signer: Arc::new(key),
        };
        AuditLog::start_anchored(
            Arc::new(TableAuditStore::with_chain(
                self.table_client(),
                self.table.clone(),
                chain.clone(),
            )),
            Some(anchor),
        )
        .expect("the writer starts")
    }

    async fn store(&self) -> Arc<dyn AuditStore> {
        Arc::new(TableAuditStore::new(
            self.table_client(),
            self.table.clone(),
        ))
    }

    async fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        Arc::new(BlobCheckpointStore::new(
            self.blob_client(),
            self.container.clone(),
        ))
    }

    async fn public_key(&self) -> PublicKey {
        LocalSigningKey::read_file(&self.key)
            .expect("key")
            .public()
            .clone()
    }

    async fn set_action(&self, chain: &ChainId, position: u64, action: &str) {
        self.edit(chain, position, &[("Action", action.to_owned())])
            .await;
    }

    async fn set_hashes(&self, chain: &ChainId, position: u64, prev: EntryHash, hash: EntryHash) {
        self.edit(
            chain,
            position,
            &[("PrevHash", prev.to_hex()), ("Hash", hash.to_hex())],
        )
        .await;
    }

    async fn corrupt(&self, chain: &ChainId, position: u64) {
        self.edit(
            chain,
            position,
            &[
                ("Hash", "garbage".to_owned()),
                ("Time", "not a time".to_owned()),
            ],
        )
        .await;
    }

    async fn delete(&self, chain: &ChainId, position: u64) {
        let (partition, row) = Self::keys(chain, position);
        self.table_client()
            .delete(&self.table, &partition, &row, &IfMatch::Any)
            .await
            .expect("deleted");
    }

    async fn swap(&self, chain: &ChainId, first: u64, second: u64) {
        let a = self.properties(chain, first).await;
        let b = self.properties(chain, second).await;
        self.replace(chain, first, &b).await;
        self.replace(chain, second, &a).await;
    }

    async fn add_foreign_row(&self, chain: &ChainId) {
        // In the chain's own partition, with a RowKey that sorts before every position,
        // so a naive head read would take it for the newest entry.
        let partition = EntityKey::parse(chain.as_str()).expect("key");
        let row = EntityKey::parse("!not-a-position").expect("key");
        let mut properties = Map::new();
        properties.insert(
            "Note".into(),
            Value::String("written by someone else".into()),
        );
        self.table_client()
            .insert(&self.table, &partition, &row, &properties)
            .await
            .expect("inserted");
    }

    async fn checkpoint_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for blob in self.blobs().await {
            let bytes = self
                .blob_client()
                .get_blob(&self.container, &blob)
                .await
                .expect("read");
            lines.extend(
                String::from_utf8(bytes)
                    .expect("text")
                    .lines()
                    .map(str::to_owned),
            );
        }
        lines
    }

    async fn rewrite_checkpoints(&self, _lines: &[String]) {
        panic!(
            "the blob client never replaces a blob, and in Azure the container's retention policy forbids it: changed and removed checkpoints are the checkpoint file's scenarios"
        );
    }
}

macro_rules! anchored_azure {
    ($($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                crate::audit_anchor::$scenario(AzureAnchored::new().await).await;
            }
        )*
    };
}

anchored_azure!(
    an_untouched_log_verifies_with_every_batch_anchored,
    an_edited_entry_is_found_where_it_was_edited,
    a_deleted_middle_entry_is_found,
    entries_deleted_from_the_end_are_found,
    reordered_entries_are_found,
    a_chain_rehashed_after_the_fact_is_found,
    a_forged_checkpoint_is_found,
    a_foreign_row_is_a_break_and_never_blocks_appends,
    a_garbage_row_is_named_and_loses_no_entry,
    writers_append_concurrently_each_to_its_own_chain,
    a_chain_removed_whole_is_found_by_its_checkpoints,
);
