//! The anchored audit log's tamper scenarios (`audit_anchor`) against Azure Table
//! storage for the entries and Blob storage for the checkpoints, both on Azurite, and the
//! checkpoints signed by a Key Vault EC key through its `sign` operation (the Key Vault
//! stand-in), as a deployment signs them. The public key is read back from the vault.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use keyturn::adapters::azure::anchor::BlobCheckpointStore;
use keyturn::adapters::azure::audit::{MAX_POSITION, TableAuditStore};
use keyturn::adapters::azure::client::blob::{BlobAuth, BlobClient, ContainerName};
use keyturn::adapters::azure::client::table::{
    EntityKey, IfMatch, TableClient, TableName, UpdateMode,
};
use keyturn::adapters::azure::signer::{KeyUrl, KeyVaultSigner, SignerOptions};
use keyturn::audit::{Anchor, AuditLog};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::audit::{AuditStore, ChainId, EntryHash};
use keyturn::ports::checkpoint::{CheckpointSigner, CheckpointStore, PublicKey};
use keyturn_standins::{Permissions, Standins};

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
    pub(crate) standins: Standins,
    /// The checkpoint key's versioned URL in the Key Vault stand-in.
    pub(crate) key: KeyUrl,
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
        let standins = Standins::start()
            .await
            .expect("the stand-ins start on loopback");
        let key = KeyUrl::parse(
            standins
                .keyvault()
                .create_ec_key("audit-checkpoints")
                .as_str(),
        )
        .expect("the stand-in's key URL is a key URL");
        let fixture = Self {
            connection_string,
            table,
            blob_endpoint,
            container,
            standins,
            key,
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

    /// A signer of the checkpoint key for an identity holding `permissions`.
    pub(crate) fn signer_with(&self, key: &KeyUrl, permissions: Permissions) -> KeyVaultSigner {
        let identity = self.standins.seed_identity("keyturn-audit", permissions);
        // Writers sign from threads of their own that end with them: each signer has
        // connections of its own.
        let (client, credential) = self.standins.own_client(&identity);
        KeyVaultSigner::new(
            key.clone(),
            credential,
            SignerOptions {
                client: Some(client),
                skip_challenge_resource_check: true,
            },
        )
        .expect("the signer is built")
    }

    /// The signer a deployment's writer holds: only `keys/sign` and `keys/get`.
    pub(crate) fn signer(&self) -> KeyVaultSigner {
        self.signer_with(&self.key, Permissions::only(["keys/sign", "keys/get"]))
    }

    /// A writer of `chain` whose checkpoints `signer` signs.
    pub(crate) fn writer_signed_by(
        &self,
        chain: &ChainId,
        signer: Arc<dyn CheckpointSigner>,
    ) -> AuditLog {
        let anchor = Anchor {
            checkpoints: Arc::new(BlobCheckpointStore::new(
                self.blob_client(),
                self.container.clone(),
            )),
            signer,
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

    pub(crate) fn table_client(&self) -> TableClient {
        TableClient::from_connection_string(&self.connection_string, None).expect("client")
    }

    pub(crate) fn container(&self) -> &ContainerName {
        &self.container
    }

    pub(crate) fn blob_client(&self) -> BlobClient {
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
        self.writer_signed_by(chain, Arc::new(self.signer()))
    }

    async fn signer(&self) -> Arc<dyn CheckpointSigner> {
        Arc::new(AzureAnchored::signer(self))
    }

    async fn unanchored_writer(&self, chain: &ChainId) -> AuditLog {
        AuditLog::new(Arc::new(TableAuditStore::with_chain(
            self.table_client(),
            self.table.clone(),
            chain.clone(),
        )))
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
        self.signer()
            .public_key()
            .await
            .expect("the public key is read from the vault")
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
    a_checkpoint_of_several_batches_vouches_for_each,
    entries_deleted_from_the_end_under_a_checkpoint_of_several_batches_are_found,
    a_chain_removed_whole_is_found_by_its_checkpoints,
);

/// Entries and checkpoints as `verify_log` reads them with `key`.
async fn verify_with(fixture: &AzureAnchored, key: &PublicKey) -> keyturn::audit::LogReport {
    let store = fixture.store().await;
    let checkpoints = fixture.checkpoints().await;
    keyturn::audit::verify_log(store.as_ref(), Some(checkpoints.as_ref()), Some(key))
        .await
        .expect("the log can be read")
}

fn no_retries(standins: &Standins) -> azure_core::http::ClientOptions {
    azure_core::http::ClientOptions {
        retry: azure_core::http::RetryOptions::none(),
        ..standins.client_options()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_signed_by_the_vault_key_are_es256_and_name_its_version() {
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 2).await;

    let lines = fixture.checkpoint_lines().await;

    // Two batches, each head in a signed checkpoint: one each, or both in one when the
    // second was stored while the first's checkpoint was being written.
    let mut heads = Vec::new();
    for line in &lines {
        let signed = keyturn::ports::checkpoint::SignedCheckpoint::from_line(line).expect("a line");
        assert_eq!(
            signed.signature.algorithm,
            keyturn::ports::checkpoint::SignatureAlgorithm::ES256
        );
        assert_eq!(signed.signature.key_id, fixture.key.to_string());
        assert_eq!(signed.signature.bytes.len(), 64, "r || s");
        heads.extend(signed.checkpoint.heads.iter().map(|h| h.position));
    }
    assert_eq!(heads, vec![1, 2], "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_appended_together_read_back_in_order_and_another_writer_continues_after_them()
{
    let fixture = AzureAnchored::new().await;
    let signer = fixture.signer();
    let mut signed = Vec::new();
    for position in 1..=5u64 {
        let checkpoint = keyturn::ports::checkpoint::Checkpoint::of_one(
            chain("w-one"),
            position,
            position - 1,
            format!("{position:02}")
                .repeat(32)
                .parse::<EntryHash>()
                .expect("a hash"),
            chrono::Utc::now(),
        );
        let signature = signer
            .sign(&checkpoint.signed_bytes())
            .await
            .expect("the audit key signs");
        signed.push(keyturn::ports::checkpoint::SignedCheckpoint {
            checkpoint,
            signature,
        });
    }

    // Three in one append block, then two by a store that has not written before and
    // so finds where the blob ends.
    fixture
        .checkpoints()
        .await
        .append_all(&signed[..3])
        .await
        .expect("appended");
    fixture
        .checkpoints()
        .await
        .append_all(&signed[3..])
        .await
        .expect("appended");
    let read = fixture.checkpoints().await.read_all().await.expect("read");

    let contents: Vec<_> = read.iter().map(|found| found.content.clone()).collect();
    assert_eq!(contents, signed.into_iter().map(Ok).collect::<Vec<_>>());
    for (number, found) in read.iter().enumerate() {
        assert!(
            found
                .location
                .ends_with(&format!("w-one/000000.log line {}", number + 1)),
            "{}",
            found.location
        );
    }
    let report = verify_with(&fixture, &fixture.public_key().await).await;
    let found = report.first_break.as_ref().expect("no entries under them");
    assert!(
        matches!(found.problem, keyturn::audit::BreakKind::Truncated { .. }),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoint_blobs_read_a_range_and_a_page_at_a_time_hand_out_what_one_read_does() {
    let fixture = AzureAnchored::new().await;
    let signer = fixture.signer();
    let mut signed = Vec::new();
    for (name, count) in [("w-one", 9u64), ("w-two", 4)] {
        for position in 1..=count {
            let checkpoint = keyturn::ports::checkpoint::Checkpoint::of_one(
                chain(name),
                position,
                position - 1,
                "00".repeat(32).parse::<EntryHash>().expect("a hash"),
                chrono::Utc::now(),
            );
            let signature = signer
                .sign(&checkpoint.signed_bytes())
                .await
                .expect("the audit key signs");
            signed.push(keyturn::ports::checkpoint::SignedCheckpoint {
                checkpoint,
                signature,
            });
        }
    }
    let store = fixture.checkpoints().await;
    store.append_all(&signed[..5]).await.expect("appended");
    store.append_all(&signed[5..9]).await.expect("appended");
    store.append_all(&signed[9..]).await.expect("appended");
    // w-one's blob then ends with an empty line and a line cut short.
    let client = fixture.blob_client();
    let blob = "w-one/000000.log";
    let length = client
        .get_blob(&fixture.container, blob)
        .await
        .expect("read")
        .len() as u64;
    client
        .append_block(
            &fixture.container,
            blob,
            length,
            b"\n{\"writer\":\"w-one\",\"po".to_vec(),
        )
        .await
        .expect("appended");
    let whole = store.read_all().await.expect("read");

    for read_bytes in [1, 7, 100, 1000] {
        let ranged = BlobCheckpointStore::new(fixture.blob_client(), fixture.container.clone())
            .with_read_bytes(read_bytes);
        for page in [1, 3, 100] {
            let mut pages = ranged.pages(page).await.expect("opened");
            let mut read = Vec::new();
            loop {
                let found = pages.next_page().await.expect("read");
                assert!(found.len() <= page);
                if found.is_empty() {
                    break;
                }
                read.extend(found);
            }
            assert_eq!(read, whole, "ranges of {read_bytes} bytes, pages of {page}");
        }
    }
    let contents: Vec<_> = whole.iter().map(|found| found.content.clone()).collect();
    let mut expected: Vec<Result<_, String>> = signed[..9].iter().cloned().map(Ok).collect();
    expected.push(Err("line is truncated".to_owned()));
    expected.extend(signed[9..].iter().cloned().map(Ok));
    assert_eq!(contents, expected);
    assert!(
        whole[9].location.ends_with("w-one/000000.log line 11"),
        "the empty line is counted: {}",
        whole[9].location
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_signed_by_another_vault_key_is_found() {
    let fixture = AzureAnchored::new().await;
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 2).await;
    // Someone who may sign with another key of the same vault writes a checkpoint of a
    // chain they made up, and signs it properly with that key.
    let other = KeyUrl::parse(
        fixture
            .standins
            .keyvault()
            .create_ec_key("not-the-audit-key")
            .as_str(),
    )
    .expect("a key URL");
    let forger = fixture.signer_with(&other, Permissions::only(["keys/sign"]));
    let checkpoint = keyturn::ports::checkpoint::Checkpoint::of_one(
        writer.clone(),
        2,
        2,
        "07".repeat(32).parse::<EntryHash>().expect("a hash"),
        chrono::Utc::now(),
    );
    let signature = forger
        .sign(&checkpoint.signed_bytes())
        .await
        .expect("the other key signs");
    assert_eq!(signature.key_id, other.to_string());
    append_signed(&fixture, checkpoint, signature).await;

    let report = verify_with(&fixture, &fixture.public_key().await).await;

    assert_break(&report, &writer, 3, "checkpoint_forged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_sign_names_the_key_and_role_and_every_entry_stays() {
    let fixture = AzureAnchored::new().await;
    let identity_secret;
    let refused = {
        let identity = fixture
            .standins
            .seed_identity("keyturn-no-sign", Permissions::only(["keys/get"]));
        identity_secret = identity.client_secret().to_owned();
        KeyVaultSigner::new(
            fixture.key.clone(),
            fixture.standins.credential_for(&identity),
            SignerOptions {
                client: Some(no_retries(&fixture.standins)),
                skip_challenge_resource_check: true,
            },
        )
        .expect("built")
    };
    let error = refused.sign(b"a checkpoint").await.expect_err("refused");
    let writer = chain("w-refused");
    let log = fixture.writer_signed_by(&writer, Arc::new(refused));

    append(&log, 3).await;

    let text = error.to_string();
    assert!(
        matches!(
            error.kind,
            keyturn::ports::FailureKind::PermissionDenied { .. }
        ),
        "{error:?}"
    );
    assert!(text.contains(&fixture.key.to_string()), "{text}");
    assert!(text.contains("keys/sign/action"), "{text}");
    assert!(!text.contains(&identity_secret), "no secret in: {text}");
    let stored = fixture.store().await;
    let store = stored
        .for_chain(&writer)
        .expect("the table store reads any chain");
    assert_eq!(
        store.read(1, 10).await.expect("readable").len(),
        3,
        "every entry is stored although no checkpoint could be signed"
    );
    assert!(fixture.checkpoint_lines().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_or_throttled_key_is_a_clear_error_naming_it() {
    let fixture = AzureAnchored::new().await;
    let identity = fixture.standins.seed_identity(
        "keyturn-audit",
        Permissions::only(["keys/sign", "keys/get"]),
    );
    let signer = KeyVaultSigner::new(
        fixture.key.clone(),
        fixture.standins.credential_for(&identity),
        SignerOptions {
            client: Some(no_retries(&fixture.standins)),
            skip_challenge_resource_check: true,
        },
    )
    .expect("built");
    signer.sign(b"warm up the token").await.expect("signs");

    fixture.standins.inject(
        keyturn_standins::Service::KeyVault,
        keyturn_standins::Route::new(axum::http::Method::POST, "/keys/"),
        keyturn_standins::Fault::throttled(Some(2)),
    );
    let throttled = signer.sign(b"a checkpoint").await.expect_err("throttled");
    fixture
        .standins
        .keyvault()
        .set_key_enabled(fixture.key.name(), false);
    let disabled = signer.sign(b"a checkpoint").await.expect_err("disabled");

    assert!(throttled.is_transient(), "{throttled:?}");
    assert!(throttled.to_string().contains("HTTP 429"), "{throttled}");
    assert!(
        throttled.to_string().contains(&fixture.key.to_string()),
        "{throttled}"
    );
    assert!(disabled.to_string().contains("disabled"), "{disabled}");
    assert!(
        disabled.to_string().contains(&fixture.key.to_string()),
        "{disabled}"
    );
    for error in [&throttled, &disabled] {
        assert!(
            !error.to_string().contains(identity.client_secret()),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_public_key_that_cannot_be_read_is_an_error_naming_the_key() {
    let fixture = AzureAnchored::new().await;
    let missing = KeyUrl::parse(&format!(
        "{}keys/no-such-key",
        fixture.standins.keyvault().url()
    ))
    .expect("a key URL");
    let not_found = fixture
        .signer_with(&missing, Permissions::only(["keys/get"]))
        .public_key()
        .await
        .expect_err("no such key");
    let no_read = fixture
        .signer_with(&fixture.key, Permissions::only(["keys/sign"]))
        .public_key()
        .await
        .expect_err("no keys/get");

    assert_eq!(
        not_found.kind,
        keyturn::ports::FailureKind::NotFound,
        "{not_found:?}"
    );
    assert!(
        not_found.to_string().contains(&missing.to_string()),
        "{not_found}"
    );
    assert!(
        matches!(
            no_read.kind,
            keyturn::ports::FailureKind::PermissionDenied { .. }
        ),
        "{no_read:?}"
    );
    assert!(
        no_read.to_string().contains(&fixture.key.to_string()),
        "{no_read}"
    );
}

impl AzureAnchored {
    /// The settings that name this fixture's table, container and key, as a deployment
    /// sets them (the table and container on Azurite, reached by connection string).
    pub(crate) fn settings(&self) -> Vec<(String, String)> {
        [
            ("KEYTURN_AUDIT_STORE", "table".to_owned()),
            ("KEYTURN_AUDIT_TABLE", self.table.to_string()),
            (
                "KEYTURN_TABLE_CONNECTION_STRING",
                self.connection_string.expose().to_owned(),
            ),
            (
                "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                self.blob_endpoint.clone(),
            ),
            (
                "KEYTURN_AUDIT_CHECKPOINT_CONTAINER",
                self.container.as_str().to_owned(),
            ),
            ("KEYTURN_AUDIT_SIGNING_KEY", self.key.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    pub(crate) fn signer_options(&self) -> SignerOptions {
        SignerOptions {
            client: Some(self.standins.client_options()),
            skip_challenge_resource_check: true,
        }
    }

    /// `keyturn audit verify` as the settings name the log, signed in as `identity`.
    pub(crate) async fn verification(
        &self,
        public_key: Option<&std::path::Path>,
        permissions: Permissions,
    ) -> Result<keyturn::startup::Verification, keyturn::startup::StartupError> {
        let env = keyturn::config::Environment::from_pairs(self.settings());
        let settings =
            keyturn::config::AuditCommandSettings::from_env(&env).expect("the settings parse");
        let operator = self.standins.seed_identity("operator", permissions);
        keyturn::startup::verification_with(
            &settings,
            public_key,
            self.standins.credential_for(&operator),
            self.signer_options(),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_up_anchors_each_process_on_its_own_chain_and_verify_reads_the_vault_key() {
    let fixture = AzureAnchored::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = keyturn::config::Environment::from_pairs(crate::helpers::test_settings(dir.path()))
        .with(&fixture.settings());
    let settings = keyturn::config::Settings::from_env(&env).expect("the settings parse");
    let writer = fixture
        .standins
        .seed_identity("keyturn", Permissions::only(["keys/sign", "keys/get"]));
    let mut processes = Vec::new();
    for _ in 0..2 {
        let overrides = keyturn::startup::Overrides {
            credential: Some(fixture.standins.credential_for(&writer)),
            signer_options: Some(fixture.signer_options()),
            rotation: Some(keyturn::startup::RotationOverride::Absent),
            ..keyturn::startup::Overrides::default()
        };
        let services = keyturn::startup::services_with(&settings, &env, overrides)
            .await
            .expect("start-up builds the app");
        processes.push(services);
    }

    for services in &processes {
        append(&services.audit, 2).await;
    }
    let report = fixture
        .verification(None, Permissions::only(["keys/get"]))
        .await
        .expect("the operator reads the log, its checkpoints and the key")
        .run()
        .await
        .expect("readable");

    assert!(report.is_intact(), "{report}");
    assert_eq!(report.chains.len(), 2, "one chain per process: {report}");
    assert_eq!(report.entries_checked, 4);
    assert_eq!(report.checkpoints_checked, 4, "one checkpoint per batch");
    assert_eq!(report.unanchored, 0);
    assert_eq!(
        report.public_key,
        Some(fixture.public_key().await.fingerprint()),
        "checked with the vault key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_with_a_foreign_public_key_file_finds_every_checkpoint_forged() {
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 2).await;
    let other = KeyUrl::parse(
        fixture
            .standins
            .keyvault()
            .create_ec_key("someone-elses")
            .as_str(),
    )
    .expect("a key URL");
    let foreign = fixture
        .signer_with(&other, Permissions::only(["keys/get"]))
        .public_key()
        .await
        .expect("read");
    let dir = tempfile::tempdir().expect("tempdir");
    let own_file = dir.path().join("audit.jwk");
    let foreign_file = dir.path().join("foreign.jwk");
    std::fs::write(&own_file, fixture.public_key().await.to_jwk().to_string()).expect("written");
    std::fs::write(&foreign_file, foreign.to_jwk().to_string()).expect("written");

    // An offline auditor: the key from a file, no Key Vault permission at all.
    let own = fixture
        .verification(Some(&own_file), Permissions::only(Vec::<String>::new()))
        .await
        .expect("no vault read is needed")
        .run()
        .await
        .expect("readable");
    let forged = fixture
        .verification(Some(&foreign_file), Permissions::only(Vec::<String>::new()))
        .await
        .expect("no vault read is needed")
        .run()
        .await
        .expect("readable");

    assert!(own.is_intact(), "{own}");
    assert_break(&forged, &chain("w-one"), 1, "checkpoint_forged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_without_read_on_the_key_names_it_and_the_way_out() {
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 1).await;

    let error = fixture
        .verification(None, Permissions::only(["keys/sign"]))
        .await
        .expect_err("the key cannot be read");

    let text = error.to_string();
    assert!(text.contains(&fixture.key.to_string()), "{text}");
    assert!(text.contains("--public-key"), "{text}");
    assert!(!text.contains(AZURITE_ACCOUNT_KEY), "{text}");
    let stored = fixture.store().await;
    let store = stored.for_chain(&chain("w-one")).expect("any chain");
    assert_eq!(store.read(1, 10).await.expect("readable").len(), 1);
}

/// `keyturn audit verify` as an operator with read access to the key runs it: each key
/// version read from Key Vault.
async fn verify_online(fixture: &AzureAnchored) -> keyturn::audit::LogReport {
    fixture
        .verification(None, Permissions::only(["keys/get"]))
        .await
        .expect("the operator reads the key")
        .run()
        .await
        .expect("readable")
}

/// A key file as `az keyvault key show` prints it (azure-cli's `transform_key_output`:
/// the key bundle with every JSON Web Key member, unset ones `null`, camelCase
/// `keyOps`, and the coordinates in standard base64 with padding).
fn az_key_show(kid: &str, key: &PublicKey) -> String {
    use base64::Engine as _;
    let jwk = key.to_jwk();
    let standard = |field: &str| {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk[field].as_str().expect("a coordinate"))
            .expect("base64url");
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    serde_json::json!({
        "attributes": {
            "created": "2025-03-01T12:00:00+00:00",
            "enabled": true,
            "expires": null,
            "exportable": false,
            "hsmPlatform": null,
            "notBefore": null,
            "recoverableDays": 90,
            "recoveryLevel": "Recoverable+Purgeable",
            "updated": "2025-03-01T12:00:00+00:00"
        },
        "key": {
            "crv": "P-256", "d": null, "dp": null, "dq": null, "e": null, "k": null,
            "keyOps": ["sign", "verify"], "kid": kid, "kty": "EC", "n": null, "p": null,
            "q": null, "qi": null, "t": null, "x": standard("x"), "y": standard("y")
        },
        "managed": null,
        "releasePolicy": null,
        "tags": null
    })
    .to_string()
}

/// An EC P-256 key as `az keyvault key download --encoding PEM` writes it: its
/// SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, the uncompressed point) in PEM.
fn az_key_download_pem(key: &PublicKey) -> String {
    use base64::Engine as _;
    let PublicKey::EcP256(point) = key else {
        panic!("a Key Vault audit key is EC P-256")
    };
    let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").expect("hex");
    der.extend_from_slice(point);
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
        &body[..64],
        &body[64..]
    )
}

/// The audit key without a version, so its signer signs with the newest version.
fn versionless(fixture: &AzureAnchored) -> KeyUrl {
    KeyUrl::parse(&format!(
        "{}keys/{}",
        fixture.key.vault(),
        fixture.key.name()
    ))
    .expect("a key URL")
}

/// Two checkpoints signed by the audit key's first version, the key rotated in Key
/// Vault (a new version), two more signed by the new version. Returns both versions'
/// key ids.
async fn rotated_log(fixture: &AzureAnchored) -> (String, String) {
    let signer = fixture.signer_with(
        &versionless(fixture),
        Permissions::only(["keys/sign", "keys/get"]),
    );
    let log = fixture.writer_signed_by(&chain("w-one"), Arc::new(signer));
    append(&log, 2).await;
    let rotated = fixture
        .standins
        .keyvault()
        .create_ec_key(fixture.key.name())
        .to_string();
    append(&log, 2).await;
    (fixture.key.to_string(), rotated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_across_a_key_rotation_verify_each_with_its_own_version_from_key_vault() {
    let fixture = AzureAnchored::new().await;
    let (first, second) = rotated_log(&fixture).await;
    let key_ids: Vec<String> = fixture
        .checkpoint_lines()
        .await
        .iter()
        .map(|line| {
            keyturn::ports::checkpoint::SignedCheckpoint::from_line(line)
                .expect("a checkpoint")
                .signature
                .key_id
        })
        .collect();
    fixture.standins.clear_requests();

    let report = verify_online(&fixture).await;

    assert_ne!(first, second);
    assert_eq!(
        key_ids,
        [&first, &first, &second, &second].map(String::clone)
    );
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.checkpoints_checked, 4);
    assert_eq!(
        report.public_keys.len(),
        2,
        "one key per version: {report:?}"
    );
    let reads: Vec<String> = fixture
        .standins
        .requests_to(keyturn_standins::Service::KeyVault)
        .into_iter()
        .filter(|r| r.method == "GET" && r.status == 200 && r.path.contains("/keys/"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        reads.len(),
        2,
        "each version is read once, however many checkpoints name it: {reads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_auditor_verifies_a_rotation_with_every_version_and_is_told_which_is_missing() {
    let fixture = AzureAnchored::new().await;
    let (first, second) = rotated_log(&fixture).await;
    let reader = fixture.signer_with(&fixture.key, Permissions::only(["keys/get"]));
    let auditor = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let mut pems = Vec::new();
    for kid in [&first, &second] {
        let version = KeyUrl::parse(kid).expect("a key URL");
        let (shown, key) = reader
            .public_key_version(version.version())
            .await
            .expect("read");
        assert_eq!(&shown, kid);
        let file = auditor
            .path()
            .join(format!("{}.json", version.version().expect("v")));
        std::fs::write(&file, az_key_show(kid, &key)).expect("written");
        files.push(file);
        let pem = auditor
            .path()
            .join(format!("{}.pem", version.version().expect("v")));
        std::fs::write(&pem, az_key_download_pem(&key)).expect("written");
        pems.push(pem);
    }
    let set = auditor.path().join("all.jwks");
    let mut members = Vec::new();
    for file in &files {
        let shown: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("JSON");
        members.push(shown["key"].clone());
    }
    std::fs::write(&set, serde_json::json!({ "keys": members }).to_string()).expect("written");
    let offline = |paths: Vec<std::path::PathBuf>| {
        let fixture = &fixture;
        async move {
            let env = keyturn::config::Environment::from_pairs(fixture.settings());
            let settings =
                keyturn::config::AuditCommandSettings::from_env(&env).expect("the settings parse");
            let operator = fixture
                .standins
                .seed_identity("auditor", Permissions::only(Vec::<String>::new()));
            keyturn::startup::verification_with(
                &settings,
                &paths,
                fixture.standins.credential_for(&operator),
                fixture.signer_options(),
            )
            .await
            .expect("no vault read is needed")
            .run()
            .await
            .expect("readable")
        }
    };

    let both = offline(files.clone()).await;
    let from_set = offline(vec![set]).await;
    let missing = offline(vec![files[0].clone()]).await;
    let from_pem = offline(pems).await;

    assert!(both.is_intact(), "{both}");
    assert_eq!(both.checkpoints_checked, 4);
    assert!(from_set.is_intact(), "{from_set}");
    assert!(
        from_pem.is_intact(),
        "PEM files name no key, each is tried: {from_pem}"
    );
    assert_break(&missing, &chain("w-one"), 3, "checkpoint_key_unknown");
    let sentence = missing.to_string();
    assert!(
        sentence.contains(&format!(
            "(position 3) is signed by key {second}, which no public key in the 1 given public key(s) matches"
        )),
        "{sentence}"
    );
}

/// A checkpoint the audit key really signed, appended with its key id replaced.
async fn append_with_key_id(fixture: &AzureAnchored, key_id: &str) {
    let checkpoint = keyturn::ports::checkpoint::Checkpoint::of_one(
        chain("w-one"),
        2,
        2,
        "07".repeat(32).parse::<EntryHash>().expect("a hash"),
        chrono::Utc::now(),
    );
    let mut signature = fixture
        .signer()
        .sign(&checkpoint.signed_bytes())
        .await
        .expect("the audit key signs");
    signature.key_id = key_id.to_owned();
    append_signed(fixture, checkpoint, signature).await;
}

/// Appends a checkpoint with `signature` to the fixture's container.
async fn append_signed(
    fixture: &AzureAnchored,
    checkpoint: keyturn::ports::checkpoint::Checkpoint,
    signature: keyturn::ports::checkpoint::Signature,
) {
    fixture
        .checkpoints()
        .await
        .append(&keyturn::ports::checkpoint::SignedCheckpoint {
            checkpoint,
            signature,
        })
        .await
        .expect("appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_naming_a_key_outside_the_audit_key_is_forged_and_nothing_is_fetched_for_it() {
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 2).await;
    let version = fixture.key.version().expect("versioned");
    append_with_key_id(
        &fixture,
        &format!("https://elsewhere.vault.azure.net/keys/audit-checkpoints/{version}"),
    )
    .await;
    fixture.standins.clear_requests();

    let report = verify_online(&fixture).await;

    assert_break(&report, &chain("w-one"), 3, "checkpoint_forged");
    let problem =
        serde_json::to_value(&report.first_break.as_ref().expect("a break").problem).expect("JSON");
    assert_eq!(
        problem["outside_of"],
        versionless(&fixture).to_string(),
        "{report}"
    );
    assert_eq!(problem["position"], 2, "{report}");
    assert!(report.to_string().contains("is forged"), "{report}");
    let reads = fixture
        .standins
        .requests_to(keyturn_standins::Service::KeyVault)
        .into_iter()
        .filter(|r| r.method == "GET" && r.status == 200 && r.path.contains("/keys/"))
        .count();
    assert_eq!(reads, 1, "only the configured key is read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_naming_a_version_key_vault_does_not_hold_is_named() {
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 2).await;
    let made_up = format!("{}/{}", versionless(&fixture), "0".repeat(32));
    append_with_key_id(&fixture, &made_up).await;

    let report = verify_online(&fixture).await;

    assert_break(&report, &chain("w-one"), 3, "checkpoint_key_unknown");
    let sentence = report.to_string();
    assert!(sentence.contains(&made_up), "{sentence}");
    assert!(
        sentence.contains("Key Vault (it holds no version"),
        "{sentence}"
    );
}

/// Reads of the audit key's versions the Key Vault stand-in answered (its 401
/// challenges left out).
fn key_reads(fixture: &AzureAnchored) -> Vec<String> {
    fixture
        .standins
        .requests_to(keyturn_standins::Service::KeyVault)
        .into_iter()
        .filter(|r| r.method == "GET" && r.status != 401 && r.path.contains("/keys/"))
        .map(|r| r.path)
        .collect()
}

/// `count` made-up versions of the audit key, each its own 32 hex digits.
fn made_up_versions(fixture: &AzureAnchored, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| format!("{}/{}", versionless(fixture), uuid::Uuid::new_v4().simple()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_made_up_key_versions_reads_key_vault_at_most_the_cap_and_verify_still_reports()
{
    use keyturn::adapters::azure::signer::MAX_KEY_VERSIONS_READ;
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 2).await;
    // Whoever may append to the container writes one blob of 2,000 lines, each naming
    // another version of the right key that nobody ever made.
    let flood = chain("w-flood");
    let mut block = String::new();
    for (i, key_id) in made_up_versions(&fixture, 2_000).into_iter().enumerate() {
        let i = i as u64;
        let line = keyturn::ports::checkpoint::SignedCheckpoint {
            checkpoint: keyturn::ports::checkpoint::Checkpoint::of_one(
                flood.clone(),
                i + 1,
                i,
                "07".repeat(32).parse::<EntryHash>().expect("a hash"),
                chrono::Utc::now(),
            ),
            signature: keyturn::ports::checkpoint::Signature {
                algorithm: keyturn::ports::checkpoint::SignatureAlgorithm::ES256,
                key_id,
                bytes: vec![7; 64],
            },
        }
        .to_line();
        block.push_str(&line);
        block.push('\n');
    }
    let blob = format!("{flood}/000000.log");
    let client = fixture.blob_client();
    assert!(
        client
            .create_append_blob(fixture.container(), &blob)
            .await
            .expect("created")
    );
    client
        .append_block(fixture.container(), &blob, 0, block.into_bytes())
        .await
        .expect("appended");
    fixture.standins.clear_requests();

    let report = verify_online(&fixture).await;

    let reads = key_reads(&fixture);
    assert_eq!(
        reads.len(),
        MAX_KEY_VERSIONS_READ,
        "the configured version and {} made-up ones, then no more",
        MAX_KEY_VERSIONS_READ - 1
    );
    assert_break(&report, &flood, 1, "checkpoint_key_unknown");
    let own = report
        .chains
        .iter()
        .find(|c| c.chain == chain("w-one"))
        .expect("the real chain is reported");
    assert!(own.first_break.is_none(), "{report:?}");
    assert_eq!(own.anchored_to, 2, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_past_the_cap_are_unverifiable_naming_it_and_are_never_fetched() {
    use keyturn::adapters::azure::signer::{KeyVaultVersions, MAX_KEY_VERSIONS_READ};
    use keyturn::ports::checkpoint::{KeyLookup, VerifyingKeys};
    let fixture = AzureAnchored::new().await;
    let versions =
        KeyVaultVersions::new(fixture.signer_with(&fixture.key, Permissions::only(["keys/get"])))
            .await
            .expect("the configured key is read");
    let made_up = made_up_versions(&fixture, MAX_KEY_VERSIONS_READ + 10);
    fixture.standins.clear_requests();

    let mut lookups = Vec::new();
    for key_id in &made_up {
        lookups.push(versions.lookup(key_id).await.expect("no error"));
    }
    let reads_for_the_flood = key_reads(&fixture).len();
    let configured = versions
        .lookup(&fixture.key.to_string())
        .await
        .expect("no error");
    let again = versions.lookup(&made_up[0]).await.expect("no error");

    // The configured version was read when the key ring was made: 255 more fit.
    let (read, past): (Vec<_>, Vec<_>) = lookups
        .iter()
        .enumerate()
        .partition(|(i, _)| *i < MAX_KEY_VERSIONS_READ - 1);
    assert_eq!(reads_for_the_flood, MAX_KEY_VERSIONS_READ - 1);
    for (_, lookup) in read {
        assert!(matches!(lookup, KeyLookup::Unknown { .. }), "{lookup:?}");
    }
    assert_eq!(past.len(), 11);
    for (i, lookup) in past {
        let KeyLookup::Unverifiable { reason } = lookup else {
            panic!("{lookup:?}");
        };
        let version = made_up[i].rsplit('/').next().expect("a version");
        assert!(
            reason.contains(&format!("more than {MAX_KEY_VERSIONS_READ} versions")),
            "{reason}"
        );
        assert!(reason.contains(version), "{reason}");
        assert!(reason.contains("--public-key"), "{reason}");
    }
    assert!(
        matches!(&configured, KeyLookup::Candidates(keys) if keys.len() == 1),
        "a version read before the cap still verifies: {configured:?}"
    );
    assert!(matches!(again, KeyLookup::Unknown { .. }), "{again:?}");
    assert_eq!(
        key_reads(&fixture).len(),
        MAX_KEY_VERSIONS_READ - 1,
        "nothing more is read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_signed_by_a_version_disabled_after_rotation_still_verify_from_key_vault() {
    let fixture = AzureAnchored::new().await;
    let (first, second) = rotated_log(&fixture).await;
    let old = KeyUrl::parse(&first).expect("a key URL");
    let vault = fixture.standins.keyvault();
    vault.set_key_version_enabled(fixture.key.name(), old.version().expect("versioned"), false);
    // The disabled version no longer signs, as in Key Vault.
    let refused = fixture
        .signer_with(&old, Permissions::only(["keys/sign", "keys/get"]))
        .sign(b"a checkpoint")
        .await
        .expect_err("a disabled version does not sign");
    fixture.standins.clear_requests();

    let report = verify_online(&fixture).await;

    assert!(refused.to_string().contains("disabled"), "{refused}");
    assert!(
        report.is_intact(),
        "Key Vault shows a disabled version's public key, so its checkpoints verify: {report}"
    );
    assert_eq!(report.checkpoints_checked, 4);
    assert_eq!(report.public_keys.len(), 2, "{report:?}");
    let reads: Vec<String> = fixture
        .standins
        .requests_to(keyturn_standins::Service::KeyVault)
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/keys/") && r.status == 200)
        .map(|r| r.path)
        .collect();
    assert!(
        reads
            .iter()
            .any(|path| path.ends_with(old.version().expect("v"))),
        "the disabled version is read like any other: {reads:?}"
    );
    assert_ne!(first, second);
}

/// `keyturn audit verify`, the binary, as an operator runs it against Azure: the table,
/// its connection and the checkpoint container and key given as settings on the command
/// line, signed in with the Azure CLI (a fake `az` first on PATH) holding only `keys/get`.
async fn verify_binary(fixture: &AzureAnchored, sign_in: &std::path::Path) -> std::process::Output {
    let path = format!(
        "{}:{}",
        sign_in.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ca = sign_in.join("standins-ca.pem");
    std::fs::write(&ca, fixture.standins.ca().cert_pem()).expect("the CA is written");
    let mut env: Vec<(String, String)> = fixture.settings();
    env.extend([
        ("PATH".to_owned(), path),
        // The stand-ins' CA, trusted the way an operator adds a CA to the platform.
        ("SSL_CERT_FILE".to_owned(), ca.display().to_string()),
        ("KEYTURN_ALLOW_ANY_VAULT_HOST".to_owned(), "true".to_owned()),
    ]);
    tokio::task::spawn_blocking(move || {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        crate::helpers::keyturn(&pairs)
            .args(["audit", "verify"])
            .output()
            .expect("keyturn audit verify runs")
    })
    .await
    .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyturn_audit_verify_reads_azure_with_the_operators_cli_sign_in() {
    let fixture = AzureAnchored::new().await;
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 3).await;
    let token = fixture.standins.issue_token(
        keyturn_standins::Audience::KeyVault,
        Permissions::only(["keys/get"]),
    );
    let sign_in = tempfile::tempdir().expect("tempdir");
    crate::helpers::fake_az(
        sign_in.path(),
        &token,
        None,
        (fixture.standins.now() + chrono::TimeDelta::minutes(50)).timestamp(),
    );

    let intact = verify_binary(&fixture, sign_in.path()).await;
    fixture.set_action(&writer, 2, "secret.deleted").await;
    let broken = verify_binary(&fixture, sign_in.path()).await;

    let stderr = String::from_utf8_lossy(&intact.stderr).into_owned();
    assert_eq!(intact.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("audit log intact"), "{stderr}");
    let report: Value = serde_json::from_slice(&intact.stdout).expect("the report is JSON");
    assert_eq!(report["entries_checked"], 3, "{report}");
    assert_eq!(report["checkpoints_checked"], 3, "{report}");
    assert!(report["first_break"].is_null(), "{report}");
    assert_eq!(
        report["public_key"],
        fixture.public_key().await.fingerprint(),
        "checked with the key read from Key Vault: {report}"
    );

    let stderr = String::from_utf8_lossy(&broken.stderr).into_owned();
    assert_eq!(broken.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("BROKEN at sequence 2"),
        "the first broken position is named: {stderr}"
    );
    let report: Value = serde_json::from_slice(&broken.stdout).expect("the report is JSON");
    assert_eq!(report["first_break"]["sequence"], 2, "{report}");
    assert_eq!(report["first_break"]["chain"], "w-one", "{report}");
    assert_eq!(
        report["first_break"]["problem"]["kind"], "content_hash_mismatch",
        "{report}"
    );

    let calls = std::fs::read_to_string(sign_in.path().join("calls.log")).expect("az was called");
    assert!(
        calls.lines().all(|call| call.starts_with(
            "account get-access-token -o json --scope https://vault.azure.net/.default"
        )),
        "only a Key Vault token is asked for (the table and container are reached by their connection string): {calls}"
    );
    assert!(!stderr.contains(AZURITE_ACCOUNT_KEY), "{stderr}");
}
