//! AlertSweep through the host's envelope, built by start-up from the alert settings: the
//! routes' webhook URLs read from the local vault, each due credential alerted once per
//! route across runs, the digest once per period, a throttling receiver's `Retry-After`
//! honoured, a route whose secret is missing reported while the others deliver, a
//! failed delivery sent by the next run, and no webhook URL in any log line, answer or
//! audit entry.

use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use keyturn::adapters::local::store::LocalStore;
use keyturn::adapters::local::vault::LocalVault;
use keyturn::adapters::notify::WebhookClient;
use keyturn::domain::inventory::InventoryCredential;
use keyturn::domain::names::{ObjectName, VaultUrl};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::vault::{NewSecretVersion, SecretStore};
use keyturn::startup::Overrides;
use keyturn_standins::{Receiver, Receivers};

use crate::helpers::{AppOptions, TestApp, rotation, spawn_app_from};

const LOCAL_VAULT: &str = "https://keyturn-local.vault.azure.net/";

/// Log output gathered in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

fn credential(name: &str, expires: DateTime<Utc>, tags: &[(&str, &str)]) -> InventoryCredential {
    crate::helpers::kv_prod_secret(name, Some(expires), tags, expires - TimeDelta::days(400))
}

/// The app with alerts routed to the receivers: `siem` (CloudEvents, the default route),
/// `ops` (Slack) and `gone` (Slack, whose secret was never stored).
async fn app_with_routes(receivers: &Receivers) -> TestApp {
    let options = AppOptions {
        settings: [
            (
                "KEYTURN_ALERT_ROUTES",
                "siem=cloudevents:alerts-siem;ops=slack:alerts-ops;gone=slack:alerts-gone",
            ),
            ("KEYTURN_ALERT_DEFAULT_ROUTE", "siem"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        overrides: Overrides {
            webhooks: Some(
                WebhookClient::new(Some(receivers.http_client())).expect("a webhook client"),
            ),
            ..Overrides::default()
        },
    };
    let app = spawn_app_from(options, rotation()).await;
    let path = app.data_dir().join("keyturn.db");
    let store = LocalStore::open(&path).expect("the store opens");
    let key = LocalVault::key_from_setting_or_file(None, &path).expect("the vault key");
    let vault = LocalVault::open(store, key, app.rotation.clock.clock())
        .await
        .expect("the vault opens");
    for (name, receiver) in [
        ("alerts-siem", Receiver::CloudEvents),
        ("alerts-ops", Receiver::Slack),
    ] {
        vault
            .set_secret(
                &VaultUrl::parse(LOCAL_VAULT).expect("a URL"),
                &ObjectName::parse(name).expect("a name"),
                &SecretValue::new(receivers.url(receiver)),
                NewSecretVersion::default(),
            )
            .await
            .expect("stored");
    }
    app
}

async fn sweep(app: &TestApp) -> Value {
    let response = app
        .invoke(
            "AlertSweep",
            &json!({ "Data": { "timer": { "IsPastDue": false } }, "Metadata": {} }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["ReturnValue"].clone()
}

// A current-thread runtime: the app's tasks run on this thread, under the subscriber set here.
#[tokio::test(flavor = "current_thread")]
async fn the_alert_sweep_alerts_each_due_credential_once_per_route_and_never_logs_a_url() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests' threads may have cached their callsites as uninteresting to the
    // no-op subscriber; this one must see every line.
    tracing::callsite::rebuild_interest_cache();
    let receivers = Receivers::start().await.expect("receivers start");
    let app = app_with_routes(&receivers).await;
    let now = app.rotation.clock.clock().now();
    let inventory = app.services.inventory.as_ref().expect("an inventory");
    inventory
        .put_credentials(&[
            // 10 days out, routed by its tag to ops (Slack): the 14-day alert.
            credential(
                "db-password",
                now + TimeDelta::days(10),
                &[("keyturn-owner", "ops")],
            ),
            // Expired, no owner: the default route (siem), "on expiry".
            credential("old-api-key", now - TimeDelta::days(2), &[]),
            // 90 days out: past no threshold.
            credential("fresh-token", now + TimeDelta::days(90), &[]),
        ])
        .await
        .expect("seeded");
    // Slack asks to wait a second: the sweep waits it out and posts again.
    receivers.fail_next(Receiver::Slack, 429, Some(1));

    let first = sweep(&app).await;

    assert_eq!(first["alerts_off"], false, "{first}");
    assert_eq!(first["alerts"]["due"], 2, "{first}");
    assert_eq!(first["alerts"]["sent"], 2, "{first}");
    assert_eq!(
        first["alerts"]["sent_by_route"],
        json!({ "ops": 1, "siem": 1 })
    );
    assert_eq!(first["digest"]["sent"], 1, "{first}");
    assert_eq!(first["unavailable_routes"][0][0], "gone", "{first}");
    // The oldest scan read is the expired credential's: 402 days ago.
    assert_eq!(first["inventory_age_hours"], 402 * 24, "{first}");
    assert_eq!(first["inventory_stale"], true);
    let events = receivers.received(Receiver::CloudEvents);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e.body["type"].as_str().expect("a type"))
        .collect();
    assert_eq!(
        types,
        ["io.keyturn.credential.expired", "io.keyturn.digest"],
        "{events:?}"
    );
    assert_eq!(receivers.received(Receiver::Slack).len(), 1);

    let second = sweep(&app).await;

    assert_eq!(second["alerts"]["sent"], 0, "{second}");
    assert_eq!(second["alerts"]["already_sent"], 2, "{second}");
    assert_eq!(second["digest"]["sent"], 0, "{second}");
    assert_eq!(second["digest"]["already_sent"], 1, "{second}");
    assert_eq!(receivers.received(Receiver::CloudEvents).len(), 2);
    assert_eq!(receivers.received(Receiver::Slack).len(), 1);

    let entries = app.audit_entries().await;
    let audited: Vec<&str> = entries
        .iter()
        .filter(|e| e.record.action.as_str() == "alerts.sent")
        .filter_map(|e| e.record.reason.as_ref().map(|r| r.as_str()))
        .collect();
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert!(
        audited[0].contains("(sent: ops 1 siem 1)")
            && audited[0].contains("digest sent to siem")
            && audited[0].contains("routes not built: gone"),
        "{}",
        audited[0]
    );
    let token = receivers.token();
    let logs = captured.text();
    // Other test threads can leave callsites cached as uninteresting, so which lines
    // this capture holds varies; `keyturn dev`'s test searches a whole process's log.
    assert!(!logs.is_empty(), "the run logged something to search");
    assert!(!logs.contains(&token), "a webhook URL reached the logs");
    assert!(!first.to_string().contains(&token));
    assert!(audited.iter().all(|reason| !reason.contains(&token)));
}

#[tokio::test]
async fn a_delivery_that_fails_is_sent_by_the_next_run_and_the_digest_with_it() {
    let receivers = Receivers::start().await.expect("receivers start");
    let app = app_with_routes(&receivers).await;
    let now = app.rotation.clock.clock().now();
    let inventory = app.services.inventory.as_ref().expect("an inventory");
    inventory
        .put_credentials(&[credential("old-api-key", now - TimeDelta::days(2), &[])])
        .await
        .expect("seeded");
    // The receiver fails both posts of the first run (the alert and the digest).
    receivers.fail_next(Receiver::CloudEvents, 503, None);
    receivers.fail_next(Receiver::CloudEvents, 503, None);

    let failed = sweep(&app).await;

    assert_eq!(failed["alerts"]["sent"], 0, "{failed}");
    assert_eq!(failed["alerts"]["failed"].as_array().map(Vec::len), Some(1));
    assert_eq!(failed["digest"]["failed"].as_array().map(Vec::len), Some(1));
    let entries = app.audit_entries().await;
    let last = entries.last().expect("audited");
    assert_eq!(last.record.action.as_str(), "alerts.sent");
    assert_eq!(last.record.outcome, keyturn::ports::audit::Outcome::Failed);
    assert!(receivers.received(Receiver::CloudEvents).is_empty());

    let retried = sweep(&app).await;

    assert_eq!(retried["alerts"]["sent"], 1, "{retried}");
    assert_eq!(retried["digest"]["sent"], 1, "{retried}");
    assert_eq!(receivers.received(Receiver::CloudEvents).len(), 2);
}

#[tokio::test]
async fn without_a_route_the_sweep_says_alerts_are_off_and_sends_nothing() {
    let app = spawn_app_from(AppOptions::default(), rotation()).await;
    let now = app.rotation.clock.clock().now();
    let inventory = app.services.inventory.as_ref().expect("an inventory");
    inventory
        .put_credentials(&[credential("old-api-key", now - TimeDelta::days(2), &[])])
        .await
        .expect("seeded");

    let ran = sweep(&app).await;

    assert_eq!(ran["alerts_off"], true, "{ran}");
    assert_eq!(ran["alerts"]["due"], 1, "{ran}");
    assert_eq!(ran["alerts"]["sent"], 0, "{ran}");
    assert_eq!(ran["alerts"]["unrouted"], 1, "{ran}");
    assert_eq!(ran["digest"]["sent"], 0, "{ran}");
    let entries = app.audit_entries().await;
    let reason = entries
        .iter()
        .rev()
        .find(|e| e.record.action.as_str() == "alerts.sent")
        .and_then(|e| e.record.reason.as_ref())
        .map(|r| r.as_str().to_owned())
        .expect("the run is audited with a reason");
    assert!(
        reason.starts_with("alerts are off (KEYTURN_ALERT_ROUTES names no route): 1 due, 0 sent"),
        "{reason}"
    );
}
