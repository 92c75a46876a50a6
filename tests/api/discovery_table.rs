//! Discovery into Table storage (Azurite), counting the requests the inventory makes: a
//! page of one vault's objects is one entity group transaction, a directory page one
//! write per application it holds, and nothing discovered is lost on the way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::http::{AsyncRawResponse, Body, ClientOptions, HttpClient, Request, Transport};
use chrono::Duration;
use futures::TryStreamExt;
use keyturn_standins::{
    CertificateSeed, KeySeed, Permissions, SecretSeed, Standins, VaultProperties,
};

use keyturn::adapters::azure::client::http::default_client_options;
use keyturn::adapters::azure::client::resource_manager::ResourceManagerClient;
use keyturn::adapters::azure::client::table::{TableClient, TableName};
use keyturn::adapters::azure::graph::GraphClient;
use keyturn::adapters::azure::inventory::TableInventory;
use keyturn::adapters::azure::vault_catalog::{KEY_VAULT_SCOPE, KeyVaultCatalog};
use keyturn::discovery::budget::Budgets;
use keyturn::discovery::{Discovery, run_sweep};
use keyturn::domain::inventory::{
    CredentialFilter, CredentialKind, InventoryCredential, SourceKind, SweepId,
};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::inventory::credential_stream;

const TABLE_ENDPOINT_VARIABLE: &str = "KEYTURN_TEST_TABLE_ENDPOINT";
/// Azurite's published development account key; it opens nothing but a local emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The Key Vault stand-in's page, as Key Vault's: 25 objects.
const KEY_VAULT_PAGE: usize = 25;

/// Sends through reqwest and counts each request by what it writes: `$batch` (an entity
/// group transaction) or a single entity's `PUT`, per partition kind (its first letter:
/// `c` a source's credentials, `i` the application index).
#[derive(Debug, Default)]
struct CountingTransport {
    inner: reqwest::Client,
    requests: Mutex<BTreeMap<String, u64>>,
}

#[async_trait]
impl HttpClient for CountingTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let url = request.url();
        let what = if url.path().ends_with("/$batch") {
            let kind = match request.body() {
                Body::Bytes(bytes) => {
                    let text = String::from_utf8_lossy(bytes);
                    text.find("PartitionKey='")
                        .and_then(|at| text[at + "PartitionKey='".len()..].chars().next())
                        .map_or_else(|| "?".to_owned(), String::from)
                }
                Body::SeekableStream(_) => "?".to_owned(),
            };
            format!("transaction {kind}")
        } else if let Some(at) = url.path().find("PartitionKey='") {
            let kind = &url.path()[at + "PartitionKey='".len()..][..1];
            format!("{} {kind}", request.method())
        } else {
            format!("{} other", request.method())
        };
        *self
            .requests
            .lock()
            .expect("test lock")
            .entry(what)
            .or_default() += 1;
        self.inner.execute_request(request).await
    }
}

impl CountingTransport {
    fn count(&self, what: &str) -> u64 {
        self.requests
            .lock()
            .expect("test lock")
            .get(what)
            .copied()
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn a_vaults_page_is_one_table_request_and_every_credential_is_stored() {
    let endpoint = std::env::var(TABLE_ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!("{TABLE_ENDPOINT_VARIABLE} is not set: start Azurite via the project's test command (.ci/test)")
    });
    let standins = Standins::start().await.expect("stand-ins start");
    let now = standins.now();
    let arm = standins.resource_manager();
    let subscription = arm.seed_subscription("production");
    // Two vaults: 120 secrets, 2 certificates and 2 keys; 30 secrets.
    let mut vault_pages = 0;
    for (v, secrets) in [120usize, 30].into_iter().enumerate() {
        let vault = standins.add_vault().await.expect("a vault starts");
        for i in 0..secrets {
            vault.seed_secret(
                SecretSeed::new(format!("secret-{i:03}"), "v")
                    .expires(now + Duration::days(i as i64)),
            );
        }
        vault_pages += secrets.div_ceil(KEY_VAULT_PAGE);
        if v == 0 {
            for i in 0..2 {
                vault.seed_certificate(CertificateSeed::new(
                    format!("cert-{i}"),
                    "CN=count",
                    now,
                    now + Duration::days(90),
                ));
                vault.seed_key(KeySeed::rsa(format!("key-{i}"), 2048));
            }
            vault_pages += 2;
        }
        arm.seed_vault(
            subscription,
            &format!("kv-count-{v}"),
            vault.url(),
            VaultProperties::default(),
        );
    }
    // Twelve applications, each with two client secrets.
    let graph = standins.graph();
    for i in 0..12 {
        let app = graph.seed_application(
            format!("app-{i:02}"),
            Permissions::only(Vec::<String>::new()),
        );
        graph.add_password(app.object_id, now + Duration::days(30), true);
        graph.add_password(app.object_id, now + Duration::days(60), true);
    }
    let identity = standins.seed_identity(
        "keyturn-discovery",
        Permissions::only([
            "secrets/list",
            "certificates/list",
            "certificates/get",
            "keys/list",
            "keys/get",
            "keys/getrotationpolicy",
            "Microsoft.KeyVault/vaults/read",
            "Application.Read.All",
        ]),
    );
    let credential = standins.credential_for(&identity);
    let options = ClientOptions {
        transport: standins.client_options().transport,
        ..default_client_options()
    };
    let transport = Arc::new(CountingTransport::default());
    let connection = SecretValue::new(format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
    ));
    let client = TableClient::from_connection_string(
        &connection,
        Some(ClientOptions {
            transport: Some(Transport::new(transport.clone())),
            ..default_client_options()
        }),
    )
    .expect("client");
    let table =
        TableName::parse(&format!("count{}", uuid::Uuid::new_v4().simple())).expect("table name");
    let store = Arc::new(TableInventory::new(client, table));
    store
        .ensure_table()
        .await
        .expect("the table is created (is Azurite running?)");
    let discovery = Discovery::new(
        Arc::new(
            ResourceManagerClient::new(arm.url(), credential.clone(), Some(options.clone()))
                .expect("https"),
        ),
        Arc::new(KeyVaultCatalog::new(
            credential.clone(),
            KEY_VAULT_SCOPE,
            Some(options.clone()),
        )),
        Arc::new(
            GraphClient::with_scope(
                graph.url(),
                GRAPH_SCOPE.to_owned(),
                credential,
                Some(options),
            )
            .expect("https"),
        ),
        store.clone(),
        Budgets::default(),
    );

    let report = run_sweep(
        &discovery,
        SweepId::parse("count").expect("valid"),
        Vec::new(),
        8,
        now,
    )
    .await
    .expect("the sweep completes");

    let stored: Vec<InventoryCredential> =
        credential_stream(store.as_ref(), CredentialFilter::default(), 1000)
            .try_collect()
            .await
            .expect("read back");
    let vault_objects = 120 + 2 + 2 + 30;
    // Per application or service principal, how many credentials: the twelve seeded here
    // hold two; the stand-ins' own identities one each.
    let mut directory: BTreeMap<String, usize> = BTreeMap::new();
    for credential in stored
        .iter()
        .filter(|c| c.source.kind() != SourceKind::Vault)
    {
        *directory
            .entry(credential.source.key().to_string())
            .or_default() += 1;
    }
    let pairs = directory.values().filter(|n| **n == 2).count();
    let singles = directory.values().filter(|n| **n == 1).count();
    assert_eq!(stored.len() as u64, report.credentials, "nothing lost");
    assert_eq!(stored.len(), vault_objects + 2 * pairs + singles);
    assert_eq!(pairs, 12);
    // Credential partitions start with `c`, one per source: each vault page is one
    // transaction, each application's pair of client secrets one more, and only a
    // source with a single credential on its page is written on its own.
    let transactions = transport.count("transaction c");
    let single_writes = transport.count("PUT c");
    // The application index (`i`, by an app id's first two digits) is written once per
    // page for the applications with client secrets it holds: at most one write per such
    // application, fewer where a page's applications share a partition.
    let index_writes = transport.count("transaction i") + transport.count("PUT i");
    let with_client_secrets = stored
        .iter()
        .filter(|c| c.kind == CredentialKind::PasswordCredential)
        .filter(|c| c.source.kind() == SourceKind::Application)
        .map(|c| c.source.key())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    println!(
        "{} credentials ({vault_objects} vault objects in {vault_pages} pages, {} of {} applications): {transactions} transactions and {single_writes} single writes to the inventory table, and {index_writes} to the application index",
        stored.len(),
        stored.len() - vault_objects,
        directory.len()
    );
    assert_eq!(single_writes, singles as u64);
    assert_eq!(transactions, (vault_pages + pairs) as u64);
    assert!(
        (1..=with_client_secrets).contains(&index_writes),
        "{index_writes} index writes for {with_client_secrets} applications with client secrets"
    );
    assert_eq!(
        transport.count("transaction ?"),
        0,
        "every transaction classified"
    );
}
