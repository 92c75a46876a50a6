//! Two `keyturn serve` processes on one data directory: they share the embedded store
//! (vault, directory and the leases that fence instances) and nothing else, no lock in
//! any one process's memory. Both are delivered the same rotate job at the same moment,
//! several times over, as a redelivery racing the original would be: one rotation
//! survives, the credential consumers hold works, and no stray or pending copy remains.
//! (Interleaving at every step is `rotation_fence`'s, with two engines and held calls;
//! here the claim is checked across real processes.)

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use keyturn::adapters::local::directory::LocalDirectory;
use keyturn::adapters::local::store::LocalStore;
use keyturn::domain::clock::Clock;
use keyturn::domain::ids::AppId;
use keyturn::domain::names::{ObjectId, ObjectName, ObjectVersion, VaultUrl};
use keyturn::local::vault_cli;
use keyturn::ports::directory::{CredentialIssuer, TokenProver};
use keyturn::ports::vault::SecretStore;
use keyturn::rotation::job::{Action, Job};
use keyturn::rotation::run::{MARKER_PREFIX, PENDING_PREFIX};

use crate::helpers::{Served, fixture, keyturn};

const VAULT: &str = "https://keyturn-local.vault.azure.net/";

fn serve(env: &[(&str, &str)]) -> Served {
    crate::helpers::serve(env, Duration::from_secs(60))
}

fn run(data: &Path, args: &[&str], stdin: Option<&str>) -> Value {
    let mut child = keyturn(&[])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyturn runs");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("written");
    }
    drop(input);
    let output = child.wait_with_output().expect("finishes");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

fn secret<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .find(|s| s["name"] == name)
}

/// The captured Service Bus invocation carrying `job`, double-encoded as the host does.
fn invocation(job: &Job) -> Value {
    let body: Value = serde_json::from_slice(&job.message(None).body).expect("json");
    let mut captured = fixture("custom-handler/servicebus-trigger.request.captured-ext4.json");
    let double_encoded = Value::String(Value::String(body.to_string()).to_string());
    captured["Data"] = json!({ "job": double_encoded });
    captured
}

#[test]
fn two_processes_delivered_the_same_job_at_once_make_one_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let dev = keyturn(&[])
        .args(["dev", "--once", "--data-dir"])
        .arg(&data)
        .output()
        .expect("keyturn dev runs");
    assert!(dev.status.code().is_some());
    let list = run(&data, &["vault", "list"], None);
    let app_id = secret(&list, "demo-app-secret").expect("demo")["tags"]["keyturn-app-id"]
        .as_str()
        .expect("appId")
        .to_owned();
    run(
        &data,
        &[
            "vault",
            "set",
            "payments",
            "--tags",
            &format!("keyturn-kind=entra-app-secret,keyturn-app-id={app_id}"),
            "--expires",
            "+2d",
        ],
        Some("a value a person set"),
    );
    let list = run(&data, &["vault", "list"], None);
    let v1 = secret(&list, "payments").expect("set")["currentVersion"]
        .as_str()
        .expect("version")
        .to_owned();
    let job = Job::new(Action::Rotate {
        object: ObjectId::parse(&format!("{VAULT}secrets/payments")).expect("id"),
        replaces_version: ObjectVersion::parse(&v1).expect("version"),
    });

    let data_text = data.display().to_string();
    let env = [
        ("KEYTURN_BACKEND", "local"),
        ("KEYTURN_AUDIT_STORE", "sqlite"),
        ("KEYTURN_DATA_DIR", data_text.as_str()),
        ("KEYTURN_VAULTS", VAULT),
        ("KEYTURN_PROOF_SUCCESSES", "1"),
        ("KEYTURN_PROOF_WINDOW_SECONDS", "0"),
        ("KEYTURN_LOCAL_PROPAGATION_SECONDS", "0"),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-test.servicebus.windows.net",
        ),
    ];
    let processes = [serve(&env), serve(&env)];
    let body = invocation(&job);
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let answers: Vec<Value> = std::thread::scope(|scope| {
            let sent: Vec<_> = processes
                .iter()
                .map(|process| {
                    let body = &body;
                    let url = process.url("/RotationWorker");
                    scope.spawn(move || {
                        let response = reqwest::blocking::Client::new()
                            .post(url)
                            .timeout(Duration::from_secs(300))
                            .json(body)
                            .send()
                            .expect("answered");
                        assert_eq!(response.status(), 200);
                        response.json::<Value>().expect("JSON")
                    })
                })
                .collect();
            sent.into_iter()
                .map(|s| s.join().expect("the delivery thread"))
                .collect()
        });
        outcomes.extend(answers);
    }
    drop(processes);
    let rotated = outcomes
        .iter()
        .filter(|o| o["ReturnValue"]["outcome"] == "rotated")
        .count();
    assert_eq!(rotated, 1, "one delivery rotates: {outcomes:?}");

    // One rotation: one new version, and no pending copy left.
    let list = run(&data, &["vault", "list"], None);
    let payments = secret(&list, "payments").expect("listed");
    assert_eq!(
        payments["versions"].as_array().map(Vec::len),
        Some(2),
        "exactly one new version: {payments}"
    );
    assert!(
        list["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .filter(|s| s["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with(PENDING_PREFIX))
            .all(|s| s["tags"]["keyturn-pending-for"] != "payments"),
        "no pending copy of this rotation remains: {list}"
    );
    let new_key = payments["tags"]["keyturn-key-id"]
        .as_str()
        .expect("the new version records its key id")
        .to_owned();

    // Exactly one credential bears this rotation's marker, and it is the one consumers
    // now hold, which works.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = LocalStore::open(data.join("keyturn.db")).expect("the store opens");
        let directory = LocalDirectory::new(store, Clock::system());
        let app_id = AppId::parse(&app_id).expect("appId");
        let app = directory
            .application(&app_id)
            .await
            .expect("read")
            .expect("the demo application");
        let marked: Vec<String> = directory
            .password_credentials(&app.object_id)
            .await
            .expect("listed")
            .into_iter()
            .filter(|c| {
                c.display_name.as_deref() == Some(&format!("{MARKER_PREFIX}{}", job.job_id))
            })
            .map(|c| c.key_id.to_string())
            .collect();
        assert_eq!(
            marked,
            vec![new_key],
            "no stray credential of this rotation"
        );
        let vault = vault_cli::open_vault(&data, None)
            .await
            .expect("the vault opens");
        let current = vault
            .secret(
                &VaultUrl::parse(VAULT).expect("vault"),
                &ObjectName::parse("payments").expect("name"),
                None,
            )
            .await
            .expect("read")
            .expect("the secret");
        directory
            .prove(&app_id, &current.value)
            .await
            .expect("the credential consumers hold works");
    });
}
