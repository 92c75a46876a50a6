//! Several `keyturn serve` processes on the Azure backend run `AlertSweep` at the same
//! moment against one alert ledger table (Azurite) and one inventory table, as the
//! instances of a scaled-out rotator would when their timers fire together. They share the
//! tables and nothing else: no lock in any process's memory. The webhook URLs are read
//! from the Key Vault stand-in with the operator-style Azure CLI credential, and the
//! receivers are the strict Slack and CloudEvents stand-ins. Exactly one digest goes out,
//! each due credential is alerted exactly once per route, and a second round of
//! simultaneous runs sends nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use keyturn_standins::{Audience, Permissions, Receiver, Receivers, SecretSeed, Standins};
use serde_json::{Value, json};

use keyturn::adapters::azure::alert_ledger::TableAlertLedger;
use keyturn::adapters::azure::client::table::{TableClient, TableName};
use keyturn::adapters::azure::inventory::TableInventory;
use keyturn::domain::inventory::InventoryCredential;
use keyturn::domain::secret::SecretValue;
use keyturn::ports::inventory::InventoryStore;

use crate::helpers::Served;

/// How many instances sweep at once.
const PROCESSES: usize = 4;
/// Azurite's well-known development account key.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn serve(env: &[(String, String)]) -> Served {
    let borrowed: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    crate::helpers::serve(&borrowed, Duration::from_secs(60))
}

fn credential(name: &str, expires: DateTime<Utc>, tags: &[(&str, &str)]) -> InventoryCredential {
    crate::helpers::kv_prod_secret(name, Some(expires), tags, Utc::now() - TimeDelta::hours(1))
}

/// Posts the timer to every process at the same moment; each one's `ReturnValue`.
fn sweep_all_at_once(processes: &[Served]) -> Vec<Value> {
    let start = Arc::new(Barrier::new(processes.len()));
    std::thread::scope(|scope| {
        let runs: Vec<_> = processes
            .iter()
            .map(|process| {
                let start = start.clone();
                let url = process.url("/AlertSweep");
                scope.spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    start.wait();
                    let response = http
                        .post(url)
                        .header(
                            "X-Azure-Functions-InvocationId",
                            uuid::Uuid::new_v4().to_string(),
                        )
                        .timeout(Duration::from_secs(120))
                        .json(
                            &json!({ "Data": { "timer": { "IsPastDue": false } }, "Metadata": {} }),
                        )
                        .send()
                        .expect("answered");
                    let status = response.status();
                    let body: Value = response.json().expect("JSON");
                    assert_eq!(status, 200, "{body}");
                    body["ReturnValue"].clone()
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("the sweep thread"))
            .collect()
    })
}

fn total(runs: &[Value], part: &str, count: &str) -> u64 {
    runs.iter()
        .map(|run| run[part][count].as_u64().unwrap_or_else(|| panic!("{run}")))
        .sum()
}

#[test]
fn processes_sweeping_at_once_send_one_digest_and_each_alert_once() {
    let endpoint = std::env::var("KEYTURN_TEST_TABLE_ENDPOINT").unwrap_or_else(|_| {
        panic!("KEYTURN_TEST_TABLE_ENDPOINT is not set: start Azurite via the project's test command (.ci/test)")
    });
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
    );
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let inventory_table = format!("alertinventory{suffix}");
    let ledger_table = format!("alertledger{suffix}");
    let audit_table = format!("alertaudit{suffix}");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let now = Utc::now();
    let (standins, receivers) = runtime.block_on(async {
        let client =
            TableClient::from_connection_string(&SecretValue::new(connection.clone()), None)
                .expect("client");
        let inventory = TableInventory::new(
            client.clone(),
            TableName::parse(&inventory_table).expect("table name"),
        );
        inventory
            .ensure_table()
            .await
            .expect("the table is created (is Azurite running?)");
        TableAlertLedger::new(client, TableName::parse(&ledger_table).expect("table name"))
            .ensure_table()
            .await
            .expect("the ledger table is created");
        inventory
            .put_credentials(&[
                // Expired, no owner: the default route (siem), "on expiry".
                credential("old-api-key", now - TimeDelta::days(2), &[]),
                // 10 days out, routed by its tag to ops (Slack): the 14-day alert.
                credential(
                    "db-password",
                    now + TimeDelta::days(10),
                    &[("keyturn-owner", "ops")],
                ),
                // 5 days out, no owner: siem, the 7-day alert.
                credential("tls-cert", now + TimeDelta::days(5), &[]),
                // Past no threshold.
                credential("fresh-token", now + TimeDelta::days(90), &[]),
            ])
            .await
            .expect("seeded");
        let standins = Standins::start().await.expect("the stand-ins start");
        let receivers = Receivers::start().await.expect("the receivers start");
        (standins, receivers)
    });
    for (name, receiver) in [
        ("alerts-siem", Receiver::CloudEvents),
        ("alerts-ops", Receiver::Slack),
    ] {
        standins
            .keyvault()
            .seed_secret(SecretSeed::new(name, receivers.url(receiver)));
    }
    let vault_token = standins.issue_token(Audience::KeyVault, Permissions::only(["secrets/get"]));
    let dir = tempfile::tempdir().expect("tempdir");
    crate::helpers::fake_az(
        dir.path(),
        &vault_token,
        None,
        (standins.now() + TimeDelta::minutes(50)).timestamp(),
    );
    let ca = dir.path().join("trusted.pem");
    std::fs::write(
        &ca,
        format!(
            "{}\n{}",
            standins.ca().cert_pem(),
            receivers.ca().cert_pem()
        ),
    )
    .expect("the CAs are written");
    let vault = standins.keyvault().url().to_string();
    let env: Vec<(String, String)> = [
        (
            "PATH",
            format!(
                "{}:{}",
                dir.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        ),
        // The stand-ins' and receivers' CAs, trusted as an operator adds a CA.
        ("SSL_CERT_FILE", ca.display().to_string()),
        ("KEYTURN_BACKEND", "azure".to_owned()),
        ("KEYTURN_CREDENTIAL", "azure-cli".to_owned()),
        ("AZURE_TENANT_ID", standins.tenant_id().to_string()),
        ("KEYTURN_ALLOW_ANY_VAULT_HOST", "true".to_owned()),
        ("KEYTURN_VAULTS", vault.clone()),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-test.servicebus.windows.net".to_owned(),
        ),
        ("KEYTURN_AUDIT_STORE", "table".to_owned()),
        ("KEYTURN_AUDIT_TABLE", audit_table.clone()),
        ("KEYTURN_TABLE_CONNECTION_STRING", connection.clone()),
        ("KEYTURN_INVENTORY_TABLE", inventory_table.clone()),
        ("KEYTURN_ALERT_TABLE", ledger_table.clone()),
        ("KEYTURN_ALERT_VAULT", vault),
        (
            "KEYTURN_ALERT_ROUTES",
            "siem=cloudevents:alerts-siem;ops=slack:alerts-ops".to_owned(),
        ),
        ("KEYTURN_ALERT_DEFAULT_ROUTE", "siem".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let processes: Vec<Served> = std::thread::scope(|scope| {
        let started: Vec<_> = (0..PROCESSES)
            .map(|_| scope.spawn(|| serve(&env)))
            .collect();
        started
            .into_iter()
            .map(|s| s.join().expect("a process started"))
            .collect()
    });

    let first = sweep_all_at_once(&processes);

    // Three credentials are due, on two routes: three alerts and one digest in all.
    assert_eq!(
        total(&first, "alerts", "due"),
        3 * PROCESSES as u64,
        "{first:?}"
    );
    assert_eq!(total(&first, "alerts", "sent"), 3, "{first:?}");
    assert_eq!(total(&first, "digest", "sent"), 1, "{first:?}");
    for run in &first {
        assert_eq!(run["alerts"]["failed"], json!([]), "{run}");
        assert_eq!(run["digest"]["failed"], json!([]), "{run}");
        assert_eq!(run["unavailable_routes"], json!([]), "{run}");
    }
    let events = receivers.received(Receiver::CloudEvents);
    let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in &events {
        by_type
            .entry(event.body["type"].as_str().expect("a type").to_owned())
            .or_default()
            .push(event.body["subject"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(
        by_type.get("io.keyturn.digest").map(Vec::len),
        Some(1),
        "exactly one digest: {by_type:?}"
    );
    let mut alerted: Vec<&String> = [
        "io.keyturn.credential.expired",
        "io.keyturn.credential.expiring",
    ]
    .iter()
    .flat_map(|t| by_type.get(*t).into_iter().flatten())
    .collect();
    alerted.sort();
    assert_eq!(alerted.len(), 2, "each siem alert once: {by_type:?}");
    assert_ne!(alerted[0], alerted[1], "two credentials, not one twice");
    let slack = receivers.received(Receiver::Slack);
    assert_eq!(slack.len(), 1, "the ops alert once: {slack:?}");
    assert!(
        slack[0].body.to_string().contains("db-password"),
        "{:?}",
        slack[0].body
    );
    assert!(
        receivers.refusals().is_empty(),
        "{:?}",
        receivers.refusals()
    );

    // Every instance runs again at once: everything is in the ledger, nothing goes out.
    let second = sweep_all_at_once(&processes);

    assert_eq!(total(&second, "alerts", "sent"), 0, "{second:?}");
    assert_eq!(total(&second, "digest", "sent"), 0, "{second:?}");
    assert_eq!(
        total(&second, "alerts", "already_sent"),
        3 * PROCESSES as u64,
        "{second:?}"
    );
    assert_eq!(receivers.received(Receiver::CloudEvents).len(), 3);
    assert_eq!(receivers.received(Receiver::Slack).len(), 1);
    drop(processes);
    drop(standins);
    drop(receivers);
    drop(runtime);
}
