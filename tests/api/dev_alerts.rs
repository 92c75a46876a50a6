//! `keyturn dev`'s alerts, driven through the binary: the local receiver gets one alert per
//! demo credential past a threshold, read from the inventory the run left; a second run
//! sends nothing new; no secret (the receiver's URL token, a demo value) is ever printed;
//! and the run leaves a current inventory with its sweep snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use keyturn::alerts::engine::DEFAULT_DIGEST_DAYS;
use keyturn::alerts::thresholds::Thresholds;

use crate::helpers::keyturn;

const ROUTE_SECRET: &str = "keyturn-dev-alerts";

/// `dev --once`: its exit code, JSON summary and everything it printed.
fn dev_once(data: &Path) -> (Option<i32>, Value, String) {
    let output = keyturn(&[])
        .args(["dev", "--once", "--data-dir"])
        .arg(data)
        .output()
        .expect("keyturn dev runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let summary = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--once prints a JSON summary ({e}); stderr: {stderr}"));
    (output.status.code(), summary, format!("{stdout}\n{stderr}"))
}

/// A command's JSON output; it must exit with `code` (`keyturn compliance` exits 1 while
/// findings are open).
fn json_of(args: &[&str], data: &Path, code: i32) -> Value {
    let output = keyturn(&[])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("runs");
    assert_eq!(
        output.status.code(),
        Some(code),
        "keyturn {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().map(|t| {
        DateTime::parse_from_rfc3339(t)
            .expect("an RFC 3339 time")
            .with_timezone(&Utc)
    })
}

/// The credential alerts of a summary: subject (inventory id) → the alerts naming it.
fn credential_alerts(summary: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut by_subject: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for alert in summary["alerts"].as_array().expect("alerts listed") {
        if alert["type"] == "io.keyturn.digest" {
            continue;
        }
        let subject = alert["subject"].as_str().expect("a subject").to_owned();
        by_subject.entry(subject).or_default().push(alert.clone());
    }
    by_subject
}

fn digests(summary: &Value) -> usize {
    summary["alerts"]
        .as_array()
        .expect("alerts listed")
        .iter()
        .filter(|a| a["type"] == "io.keyturn.digest")
        .count()
}

/// The digest period `at` falls in (the engine counts periods from the Unix epoch).
fn digest_period(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(DEFAULT_DIGEST_DAYS * 86_400)
}

/// Every version's value of every secret in the inventory's vaults: what must never be
/// printed.
fn every_secret_value(data: &Path, inventory: &Value) -> Vec<(String, String)> {
    use keyturn::adapters::local::store::LocalStore;
    use keyturn::adapters::local::vault::LocalVault;
    use keyturn::domain::clock::Clock;
    use keyturn::domain::names::{ObjectName, VaultUrl};
    use keyturn::ports::vault::SecretStore;

    let secrets: Vec<(String, String)> = inventory
        .as_array()
        .expect("an array")
        .iter()
        .filter(|c| c["source"]["kind"] == "vault")
        .map(|c| {
            (
                c["source"]["uri"].as_str().expect("a vault URI").to_owned(),
                c["name"].as_str().expect("a name").to_owned(),
            )
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let path = data.join("keyturn.db");
        let store = LocalStore::open(&path).expect("open");
        let key = LocalVault::key_from_setting_or_file(None, &path).expect("key file");
        let vault = LocalVault::open(store, key, Clock::system())
            .await
            .expect("vault");
        let mut values = Vec::new();
        for (uri, name) in secrets {
            let url = VaultUrl::parse(&uri).expect("url");
            let name = ObjectName::parse(&name).expect("name");
            let versions = vault.list_versions(&url, &name).await.expect("versions");
            for version in versions {
                let secret = vault
                    .secret(&url, &name, version.id.version())
                    .await
                    .expect("read")
                    .expect("exists");
                values.push((name.to_string(), secret.value.expose().to_string()));
            }
        }
        values
    })
}

fn snapshots(data: &Path) -> Vec<keyturn::domain::inventory::SweepSnapshot> {
    use keyturn::adapters::local::inventory::LocalInventory;
    use keyturn::adapters::local::store::LocalStore;
    use keyturn::ports::inventory::InventoryStore;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = LocalStore::open(data.join("keyturn.db")).expect("open");
        let page = LocalInventory::new(store)
            .snapshots(None, 100)
            .await
            .expect("snapshots");
        assert!(page.next.is_none(), "one page holds them");
        page.items
    })
}

#[test]
fn dev_alerts_each_due_demo_credential_once_across_runs_and_never_prints_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    let began = Utc::now();
    let (code, first, first_output) = dev_once(&data);
    assert_eq!(code, Some(0), "{first_output}");
    let inventory = json_of(&["inventory", "--format", "json"], &data, 0);

    // The expected alerts, from what the store holds: every enabled credential whose
    // expiry is within the furthest default threshold, a client secret kept in a managed
    // vault secret once, as the application's credential (the secret is not alerted).
    let horizon = Thresholds::default().horizon();
    let credentials = inventory.as_array().expect("an array");
    let due = |c: &&Value| {
        c["enabled"] == true
            && time(&c["expires"]).is_some_and(|expires| expires <= began + horizon)
    };
    let due_client_secrets: BTreeSet<(String, String)> = credentials
        .iter()
        .filter(due)
        .filter(|c| c["source"]["kind"] == "application" && c["kind"] == "password_credential")
        .map(|c| {
            (
                c["source"]["app_id"]
                    .as_str()
                    .expect("an app id")
                    .to_owned(),
                c["handle"]["key_id"].as_str().expect("a key id").to_owned(),
            )
        })
        .collect();
    let spoken_for = |c: &&Value| {
        let tag = |name: &str| c["tags"][name].as_str().map(str::to_owned);
        c["managed"] == true
            && tag("keyturn-app-id")
                .zip(tag("keyturn-key-id"))
                .is_some_and(|pair| due_client_secrets.contains(&pair))
    };
    let paired = credentials.iter().filter(due).filter(spoken_for).count();
    assert_eq!(
        paired, 1,
        "the demo's client secret kept in the local vault"
    );
    let expected: BTreeMap<String, String> = credentials
        .iter()
        .filter(due)
        .filter(|c| !spoken_for(c))
        .map(|c| {
            (
                c["id"].as_str().expect("an id").to_owned(),
                c["name"].as_str().expect("a name").to_owned(),
            )
        })
        .collect();
    assert!(
        expected.len() >= 5,
        "the demo has credentials expired and expiring: {inventory}"
    );
    let alerted = credential_alerts(&first);
    assert_eq!(
        alerted.keys().collect::<BTreeSet<_>>(),
        expected.keys().collect::<BTreeSet<_>>(),
        "one alert per credential past a threshold: {first_output}"
    );
    for (subject, alerts) in &alerted {
        assert_eq!(alerts.len(), 1, "alerted once: {alerts:?}");
        assert_eq!(
            alerts[0]["credential"].as_str(),
            Some(expected[subject].as_str())
        );
        assert!(
            !alerts[0]["actions"].as_array().expect("actions").is_empty(),
            "says what to do: {alerts:?}"
        );
    }
    assert_eq!(digests(&first), 1, "{first_output}");

    // What the terminal shows: where the receiver listens (without its token) and one
    // line per alert.
    assert!(
        first_output.contains("Alerts go to the local CloudEvents receiver at http://127.0.0.1:"),
        "{first_output}"
    );
    let lines = |prefix: &str| {
        first_output
            .lines()
            .filter(|l| l.starts_with(prefix))
            .count()
    };
    assert_eq!(lines("alert  ["), expected.len(), "{first_output}");
    assert_eq!(lines("digest ["), 1, "{first_output}");
    let recorded = std::fs::read_to_string(data.join("alerts-received.jsonl")).expect("recorded");
    assert_eq!(recorded.lines().count(), expected.len() + 1, "{recorded}");

    // Rotation ran before discovery: the renewed demo certificate and the rotated
    // generated secret are listed as they are now, far from expiry, and not alerted.
    for renewed in ["demo-certificate", "demo-generated"] {
        let listed = credentials
            .iter()
            .find(|c| c["source"]["kind"] == "vault" && c["name"] == renewed)
            .unwrap_or_else(|| panic!("{renewed} is in the inventory"));
        let expires = time(&listed["expires"]).expect("an expiry");
        assert!(expires > began + horizon, "{renewed} is current: {listed}");
    }
    // The run took its sweep's snapshot, over the inventory it left.
    let taken = snapshots(&data);
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].credentials, credentials.len() as u64);
    assert!(
        credentials
            .iter()
            .all(|c| c["sweep"].as_str() == Some(taken[0].sweep.as_str())),
        "the snapshot is the sweep's that listed the inventory"
    );

    // The receiver's URL is a secret with an owner and an expiry: no finding or alert of
    // its own.
    let route = credentials
        .iter()
        .find(|c| c["name"] == ROUTE_SECRET)
        .expect("the route's secret is in the inventory");
    assert_eq!(route["tags"]["keyturn-owner"], "dev", "{route}");
    assert!(!alerted.contains_key(route["id"].as_str().expect("an id")));
    let compliance = json_of(&["compliance", "--format", "json"], &data, 1);
    let own: Vec<&Value> = compliance["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["name"] == ROUTE_SECRET)
        .collect();
    assert!(own.is_empty(), "{own:?}");
    assert!(
        compliance["trend"]["not_recorded"].is_null(),
        "the scores are recorded on the snapshot: {}",
        compliance["trend"]
    );

    // A second run: the ledger remembers what was sent.
    let (code, second, second_output) = dev_once(&data);
    let ended = Utc::now();
    assert_eq!(code, Some(0), "{second_output}");
    assert!(credential_alerts(&second).is_empty(), "{second_output}");
    if digest_period(began) == digest_period(ended) {
        assert_eq!(digests(&second), 0, "{second_output}");
    }
    assert_eq!(snapshots(&data).len(), 2);

    // Nothing secret in anything printed: not a demo value, not the token in any of the
    // receiver's URLs (one per run).
    let inventory = json_of(&["inventory", "--format", "json"], &data, 0);
    let values = every_secret_value(&data, &inventory);
    let urls: Vec<&str> = values
        .iter()
        .filter(|(name, _)| name == ROUTE_SECRET)
        .map(|(_, value)| value.as_str())
        .collect();
    // The second run's receiver took the first's port and token again: the route's
    // secret kept its one version rather than gaining one per run.
    assert_eq!(urls.len(), 1, "one URL for both runs");
    let printed = format!(
        "{first_output}\n{second_output}\n{}\n{}\n{recorded}",
        std::fs::read_to_string(data.join("handler.log")).unwrap_or_default(),
        std::fs::read_to_string(data.join("alerts-received.jsonl")).expect("recorded"),
    );
    for url in urls {
        let token = url.rsplit('/').next().expect("a token");
        assert!(
            token.len() >= 32,
            "the URL carries a token: {}",
            token.len()
        );
        assert!(!printed.contains(token), "the receiver's token was printed");
        let address = url.trim_end_matches(token);
        assert!(printed.contains(address), "its address is printed");
    }
    for (name, value) in &values {
        assert!(value.len() >= 16, "{name}: a real value was read");
        assert!(
            !printed.contains(value.as_str()),
            "{name}'s value was printed"
        );
    }
}
