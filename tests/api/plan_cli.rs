//! `keyturn plan` against the local store and against Azure (the Key Vault and Graph
//! stand-ins): what the sweep would do, read-only.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use keyturn_standins::{Audience, PasswordRestriction, Permissions, SecretSeed, Service, Standins};
use serde_json::Value;

use crate::helpers::keyturn;

const CANARY: &str = "plan-canary-value-5d1e9b";

fn dev_once(data: &Path) {
    let output = keyturn(&[])
        .args(["dev", "--once", "--data-dir"])
        .arg(data)
        .output()
        .expect("keyturn dev runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn vault_set(data: &Path, name: &str, tags: &str, expires: &str) {
    let mut set = keyturn(&[])
        .args(["vault", "set", name, "--tags", tags, "--expires", expires])
        .arg("--data-dir")
        .arg(data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("keyturn vault set runs");
    set.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{CANARY}-{name}\n").as_bytes())
        .expect("value written");
    let output = set.wait_with_output().expect("finishes");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every file of the data directory with its bytes (SQLite's shared-memory index aside:
/// readers map it).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if !path.to_string_lossy().ends_with("-shm") {
                files.insert(
                    path.display().to_string(),
                    std::fs::read(&path).expect("readable"),
                );
            }
        }
    }
    files
}

fn plan(data: &Path, format: &str) -> (Option<i32>, String, String) {
    let output = keyturn(&[])
        .args(["plan", "--format", format, "--data-dir"])
        .arg(data)
        .output()
        .expect("keyturn plan runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

#[test]
fn plan_lists_due_scheduled_and_failing_objects_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    dev_once(&data);
    vault_set(&data, "due-soon", "keyturn-kind=generated", "+2d");
    vault_set(
        &data,
        "later",
        "keyturn-kind=generated,keyturn-rotate-before-days=20,keyturn-validity-days=120,keyturn-overlap-days=3",
        "+200d",
    );
    vault_set(
        &data,
        "broken",
        "keyturn-kind=generated,keyturn-last-error=generating failed for good",
        "+100d",
    );
    vault_set(&data, "plain", "owner=team", "+1d");

    let before = snapshot(&data);
    let (code, json, stderr) = plan(&data, "json");
    assert_eq!(code, Some(0), "{stderr}");
    let (table_code, table, _) = plan(&data, "table");
    assert_eq!(table_code, Some(0));
    assert_eq!(snapshot(&data), before, "plan writes nothing to the store");
    for output in [&json, &table, &stderr] {
        assert!(!output.contains(CANARY), "no value is printed: {output}");
    }

    let report: Value = serde_json::from_str(&json).expect("JSON");
    let now = time(&report["now"]);
    let object = |name: &str| {
        report["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .find(|o| o["name"] == name)
            .cloned()
    };
    assert!(
        object("plain").is_none(),
        "unmanaged objects are not planned"
    );

    let due = object("due-soon").expect("planned");
    assert_eq!(due["status"], "due");
    assert_eq!(due["kind"], "generated");
    assert_eq!(time(&due["dueAt"]), now);
    assert!(
        due["reason"]
            .as_str()
            .expect("reason")
            .contains("rotate-before window of 30 days"),
        "{due}"
    );
    assert_eq!(
        time(&due["newExpires"]),
        (now + Duration::days(90)).trunc_subsecs(0)
    );
    assert_eq!(time(&due["retiresAt"]), now + Duration::days(7));

    let later = object("later").expect("planned");
    assert_eq!(later["status"], "scheduled");
    let expires = time(&later["expires"]);
    let due_at = time(&later["dueAt"]);
    assert_eq!(due_at, expires - Duration::days(20));
    assert_eq!(later["validityDays"], 120);
    assert_eq!(later["overlapDays"], 3);
    assert_eq!(time(&later["newExpires"]), due_at + Duration::days(120));
    assert_eq!(time(&later["retiresAt"]), due_at + Duration::days(3));
    assert!(later["lastError"].is_null());

    let broken = object("broken").expect("planned");
    assert_eq!(broken["lastError"], "generating failed for good");
    assert_eq!(
        report["failing"],
        serde_json::json!(["broken: generating failed for good"])
    );

    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in {table}"))
    };
    assert!(row("due-soon").contains(" due "), "{table}");
    assert!(
        row("later").contains(&due_at.format("%Y-%m-%d %H:%M").to_string()),
        "{table}"
    );
    assert!(
        table.contains("FAILING\nbroken: generating failed for good"),
        "{table}"
    );
}

#[test]
fn plan_refuses_a_missing_data_dir_and_azure_without_vaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("typo");
    let (code, stdout, stderr) = plan(&missing, "table");
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stderr.contains("holds no keyturn data"), "{stderr}");
    assert!(!missing.exists(), "nothing is created");

    // A data directory given on the command line is read even where the settings name
    // Azure.
    let (code, _, stderr) = {
        let output = keyturn(&[("KEYTURN_BACKEND", "azure")])
            .args(["plan", "--data-dir"])
            .arg(&missing)
            .output()
            .expect("runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(2));
    assert!(stderr.contains("holds no keyturn data"), "{stderr}");
    assert!(!missing.exists());

    // Azure without a vault to read says which setting names them.
    let azure = keyturn(&[("KEYTURN_BACKEND", "azure")])
        .args(["plan"])
        .output()
        .expect("runs");
    assert_eq!(azure.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&azure.stderr);
    assert!(
        stderr.contains("KEYTURN_VAULTS") && stderr.contains("--vault"),
        "{stderr}"
    );

    // A vault that is not a Key Vault host is refused before anything is read.
    let azure = keyturn(&[])
        .args(["plan", "--vault", "https://example.com/"])
        .output()
        .expect("runs");
    assert_eq!(azure.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&azure.stderr);
    assert!(stderr.contains("--vault"), "{stderr}");
}

#[test]
fn plan_shows_the_demo_secret_proving_as_dev_once_does_not_due() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let once = keyturn(&[])
        .args(["dev", "--once", "--data-dir"])
        .arg(&data)
        .output()
        .expect("keyturn dev runs");
    let summary: Value = serde_json::from_slice(&once.stdout).expect("a JSON summary");
    let proving_in_dev: Vec<String> = summary["proving"]
        .as_array()
        .expect("a proving list")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        proving_in_dev.iter().any(|n| n == "demo-app-secret"),
        "{summary}"
    );

    let (code, json, stderr) = plan(&data, "json");
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&json).expect("JSON");
    let demo = report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["name"] == "demo-app-secret")
        .cloned()
        .expect("the demo secret is planned");
    assert_eq!(demo["status"], "proving", "{demo}");
    assert!(demo["dueAt"].is_null(), "{demo}");
    let proving = &demo["proving"];
    assert_eq!(proving["needed"], 3, "{demo}");
    assert!(proving["accepted"].as_u64().expect("a count") < 3, "{demo}");
    let deadline = time(&proving["deadline"]);
    let now = time(&report["now"]);
    assert!(
        deadline > now && deadline <= now + Duration::minutes(60),
        "{demo}"
    );
    let pending = proving["pending"].as_str().expect("the pending copy");
    assert!(pending.starts_with("keyturn-pending-"), "{demo}");
    assert_eq!(
        pending.strip_prefix("keyturn-pending-"),
        proving["keyId"].as_str()
    );
    assert!(
        report["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .all(|o| !o["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("keyturn-pending-")),
        "a pending copy is no object of its own: {json}"
    );

    let (_, table, _) = plan(&data, "table");
    let row = table
        .lines()
        .find(|l| l.starts_with("demo-app-secret"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" proving "), "{table}");
    assert!(
        row.contains(&format!("/{} in a row", proving["needed"])),
        "{table}"
    );
}

fn directory_policy(data: &Path, args: &[&str]) -> Value {
    let output = keyturn(&[])
        .args(["directory", "policy", "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .expect("keyturn directory policy runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn planned_object(data: &Path, name: &str) -> (DateTime<Utc>, Value) {
    let (code, json, stderr) = plan(data, "json");
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&json).expect("JSON");
    let object = report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} in {json}"));
    (time(&report["now"]), object)
}

#[test]
fn a_local_app_management_policy_caps_what_plan_shows_and_what_a_rotation_asks_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    dev_once(&data);
    let list = keyturn(&[])
        .args(["vault", "list", "--data-dir"])
        .arg(&data)
        .output()
        .expect("keyturn vault list runs");
    let list: Value = serde_json::from_slice(&list.stdout).expect("JSON");
    let app_id = list["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .find(|s| s["name"] == "demo-app-secret")
        .and_then(|s| s["tags"]["keyturn-app-id"].as_str())
        .expect("the demo application's appId")
        .to_owned();
    vault_set(
        &data,
        "capped",
        &format!("keyturn-kind=entra-app-secret,keyturn-app-id={app_id}"),
        "+2d",
    );

    // Without a policy the new secret gets its validity (90 days by default).
    let (now, object) = planned_object(&data, "capped");
    assert_eq!(
        time(&object["newExpires"]),
        (now + Duration::days(90)).trunc_subsecs(0)
    );
    assert!(object["cappedBy"].is_null(), "{object}");

    // The tenant's default caps it.
    let policies = directory_policy(
        &data,
        &["--max-password-days", "60", "--name", "tenant: 60 days"],
    );
    assert_eq!(policies["policies"][0]["maxPasswordLifetimeDays"], 60);
    assert!(policies["policies"][0]["appId"].is_null());
    let (now, object) = planned_object(&data, "capped");
    assert_eq!(
        time(&object["newExpires"]),
        (now + Duration::days(60)).trunc_subsecs(0)
    );
    assert_eq!(object["cappedBy"], "tenant: 60 days (the tenant's default)");

    // The application's own policy replaces the tenant's, even when it allows more.
    directory_policy(
        &data,
        &[
            "--app",
            &app_id,
            "--max-password-days",
            "75",
            "--name",
            "demo: 75 days",
        ],
    );
    let (now, object) = planned_object(&data, "capped");
    assert_eq!(
        time(&object["newExpires"]),
        (now + Duration::days(75)).trunc_subsecs(0)
    );
    assert_eq!(object["cappedBy"], "demo: 75 days");
    let (_, table, _) = plan(&data, "table");
    assert!(
        table.contains("new expiry capped by demo: 75 days"),
        "{table}"
    );

    // A rotation asks for no more than the policy allows, and its version expires then.
    let before = Utc::now().trunc_subsecs(0);
    let rotated = keyturn(&[
        ("KEYTURN_PROOF_SUCCESSES", "1"),
        ("KEYTURN_PROOF_WINDOW_SECONDS", "0"),
    ])
    .args(["dev", "--once", "--data-dir"])
    .arg(&data)
    .output()
    .expect("keyturn dev runs");
    let after = Utc::now();
    let summary: Value = serde_json::from_slice(&rotated.stdout).expect("a JSON summary");
    assert!(
        summary["rotated"]
            .as_array()
            .expect("rotated")
            .iter()
            .any(|r| r["name"] == "capped"),
        "{summary}"
    );
    let list = keyturn(&[])
        .args(["vault", "list", "--data-dir"])
        .arg(&data)
        .output()
        .expect("keyturn vault list runs");
    let list: Value = serde_json::from_slice(&list.stdout).expect("JSON");
    let capped = list["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .find(|s| s["name"] == "capped")
        .cloned()
        .expect("listed");
    let expires = time(&capped["expires"]);
    assert!(
        expires >= before + Duration::days(75) && expires <= after + Duration::days(75),
        "{capped}"
    );

    // Cleared, the tenant's default applies again; cleared too, nothing caps.
    let policies = directory_policy(&data, &["--app", &app_id, "--clear"]);
    assert_eq!(policies["policies"].as_array().map(Vec::len), Some(1));
    directory_policy(&data, &["--clear"]);
    let policies = directory_policy(&data, &[]);
    assert_eq!(policies["policies"], serde_json::json!([]));
}

#[test]
fn a_local_policy_is_refused_for_an_unknown_application_or_a_lifetime_out_of_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    dev_once(&data);
    for args in [
        vec!["--app", "not-a-guid", "--max-password-days", "30"],
        vec![
            "--app",
            "00000000-0000-0000-0000-000000000001",
            "--max-password-days",
            "30",
        ],
        vec!["--max-password-days", "0"],
        vec!["--max-password-days", "3651"],
    ] {
        let output = keyturn(&[])
            .args(["directory", "policy", "--data-dir"])
            .arg(&data)
            .args(&args)
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Against Azure: the Key Vault and Graph stand-ins, with the Azure CLI sign-in of a fake
// `az` first on PATH
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_azure_with_the_operators_cli_sign_in_and_writes_nothing() {
    let standins = Standins::start().await.expect("the stand-ins start");
    let now = standins.now();
    let graph = standins.graph();
    let app = graph.seed_application("payments-api", Permissions::only(Vec::<String>::new()));
    graph.set_application_policy(
        app.object_id,
        Some((
            "payments: 30 days",
            vec![PasswordRestriction::password_lifetime("P30D", None)],
        )),
    );
    let vault = standins.keyvault();
    let entra = |name: &str, expires_in: i64| {
        SecretSeed::new(name, format!("{CANARY}-{name}"))
            .expires(now + Duration::days(expires_in))
            .tag("keyturn-kind", "entra-app-secret")
            .tag("keyturn-app-id", app.app_id.to_string())
    };
    vault.seed_secret(entra("payments-api-secret", 5));
    vault.seed_secret(entra("billing-api-secret", 5));
    let key_id = uuid::Uuid::new_v4();
    let deadline = (now + Duration::minutes(40)).trunc_subsecs(0);
    let since = (now - Duration::seconds(30)).trunc_subsecs(0);
    let credential_end = (now + Duration::days(30)).trunc_subsecs(0);
    vault.seed_secret(
        SecretSeed::new(
            format!("keyturn-pending-{key_id}"),
            format!("{CANARY}-pending"),
        )
        .expires(credential_end)
        .tag("keyturn-pending-for", "billing-api-secret")
        .tag("keyturn-job-id", "cccccccccccccccccccccccccccccccc")
        .tag("keyturn-key-id", key_id.to_string())
        .tag("keyturn-proof-deadline", deadline.to_rfc3339())
        .tag("keyturn-proof-streak", "2")
        .tag("keyturn-proof-since", since.to_rfc3339())
        .tag("keyturn-proof-attempt", "4"),
    );
    vault.seed_secret(
        SecretSeed::new("later", format!("{CANARY}-later"))
            .expires(now + Duration::days(200))
            .tag("keyturn-kind", "generated"),
    );
    vault.seed_secret(
        SecretSeed::new("broken", format!("{CANARY}-broken"))
            .expires(now + Duration::days(100))
            .tag("keyturn-kind", "generated")
            .tag("keyturn-last-error", "generating failed for good"),
    );
    vault.seed_secret(
        SecretSeed::new("plain", format!("{CANARY}-plain")).expires(now + Duration::days(1)),
    );
    standins.clear_requests();

    // The operator's sign-in may only read: a write would be refused as well as logged.
    let vault_token = standins.issue_token(
        Audience::KeyVault,
        Permissions::only([
            "secrets/list",
            "secrets/get",
            "certificates/list",
            "certificates/get",
        ]),
    );
    let graph_token = standins.issue_token(
        Audience::Graph,
        Permissions::only(["Application.Read.All", "Policy.Read.All"]),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let expires_on = (now + Duration::minutes(50)).timestamp();
    crate::helpers::fake_az(dir.path(), &vault_token, Some(&graph_token), expires_on);
    let ca = dir.path().join("standins-ca.pem");
    std::fs::write(&ca, standins.ca().cert_pem()).expect("the CA is written");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let vault_url = standins.keyvault().url().to_string();
    let graph_url = standins.graph().url().to_string();
    let run = move |format: &'static str| {
        let (path, ca, vault_url, graph_url) = (
            path.clone(),
            ca.clone(),
            vault_url.clone(),
            graph_url.clone(),
        );
        tokio::task::spawn_blocking(move || {
            keyturn(&[
                ("PATH", path.as_str()),
                // The stand-ins' CA, trusted the way an operator adds a CA to the platform.
                ("SSL_CERT_FILE", &ca.display().to_string()),
                ("KEYTURN_BACKEND", "azure"),
                ("KEYTURN_VAULTS", vault_url.as_str()),
                ("KEYTURN_ALLOW_ANY_VAULT_HOST", "true"),
                ("KEYTURN_GRAPH_ENDPOINT", graph_url.as_str()),
            ])
            .args(["plan", "--format", format])
            .output()
            .expect("keyturn plan runs")
        })
    };
    let json = run("json").await.expect("joined");
    let table = run("table").await.expect("joined");
    let stdout = String::from_utf8_lossy(&json.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&json.stderr).into_owned();
    assert_eq!(json.status.code(), Some(0), "{stderr}");
    assert_eq!(table.status.code(), Some(0));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();

    // Read only: every call to Key Vault and Graph was a read, and none was refused.
    let requests = standins.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request.method, "GET", "plan made a write: {request:?}");
        assert!(
            request.status < 300 || request.status == 401,
            "plan was refused: {request:?}"
        );
    }
    assert!(
        requests.iter().any(|r| r.service == Service::Graph),
        "the applications and their policies are read from Graph"
    );
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).expect("az was called");
    assert!(
        calls.contains("--scope https://vault.azure.net/.default"),
        "{calls}"
    );
    for output in [&stdout, &stderr, &table] {
        assert!(!output.contains(CANARY), "no value is printed: {output}");
    }
    assert!(
        standins
            .keyvault()
            .secret_versions("payments-api-secret")
            .len()
            == 1,
        "nothing is written"
    );

    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    let planned_at = time(&report["now"]);
    let object = |name: &str| {
        report["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .find(|o| o["name"] == name)
            .cloned()
    };
    assert!(
        object("plain").is_none(),
        "unmanaged objects are not planned"
    );

    // Due, and capped by the application's own policy to 30 days.
    let due = object("payments-api-secret").expect("planned");
    assert_eq!(due["status"], "due", "{due}");
    assert_eq!(due["kind"], "entra-app-secret");
    assert_eq!(due["vault"], standins.keyvault().url().as_str());
    assert_eq!(
        time(&due["newExpires"]),
        (planned_at + Duration::days(30)).trunc_subsecs(0),
        "{due}"
    );
    assert_eq!(due["cappedBy"], "payments: 30 days", "{due}");

    // Proving: its pending copy's proof, not due again.
    let proving = object("billing-api-secret").expect("planned");
    assert_eq!(proving["status"], "proving", "{proving}");
    assert!(proving["dueAt"].is_null());
    assert_eq!(proving["proving"]["accepted"], 2);
    assert_eq!(proving["proving"]["needed"], 3);
    assert_eq!(time(&proving["proving"]["deadline"]), deadline);
    assert_eq!(time(&proving["proving"]["since"]), since);
    assert_eq!(proving["proving"]["keyId"], key_id.to_string());
    assert_eq!(time(&proving["newExpires"]), credential_end);
    assert!(
        object(&format!("keyturn-pending-{key_id}")).is_none(),
        "a pending copy is no object of its own"
    );

    let later = object("later").expect("planned");
    assert_eq!(later["status"], "scheduled");
    assert_eq!(
        time(&later["dueAt"]),
        time(&later["expires"]) - Duration::days(30)
    );
    assert_eq!(
        report["failing"],
        serde_json::json!(["broken: generating failed for good"])
    );

    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in {table}"))
            .to_owned()
    };
    assert!(row("payments-api-secret").contains(" due "), "{table}");
    assert!(row("billing-api-secret").contains(" proving "), "{table}");
    assert!(
        row("billing-api-secret").contains("2/3 in a row"),
        "{table}"
    );
}
