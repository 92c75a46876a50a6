//! The `keyturn` binary as the host and operators run it.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Served, envelope, fixture, keyturn};

fn local_env(data_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("KEYTURN_BACKEND", "local".into()),
        ("KEYTURN_AUDIT_STORE", "sqlite".into()),
        ("KEYTURN_DATA_DIR", data_dir.display().to_string()),
        ("KEYTURN_VAULTS", "https://kv-test.vault.azure.net/".into()),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-test.servicebus.windows.net".into(),
        ),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn serve(env: &[(&str, &str)]) -> Served {
    crate::helpers::serve(env, Duration::from_secs(30))
}

#[test]
fn serve_refuses_to_start_naming_each_missing_setting() {
    let output = keyturn(&[])
        .args(["serve", "--port", "0"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for setting in [
        "KEYTURN_VAULTS",
        "ServiceBusConnection__fullyQualifiedNamespace",
        "KEYTURN_TABLE_ENDPOINT",
    ] {
        assert!(stderr.contains(setting), "{setting} not named in: {stderr}");
    }
    assert!(stderr.contains("example:"), "{stderr}");
}

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_redacted() {
    let key = "S2V5dHVybi10ZXN0LWFjY291bnQta2V5LW5vdC1yZWFs";
    let connection = format!(
        "DefaultEndpointsProtocol=https;AccountName=stkeyturn;AccountKey={key};EndpointSuffix=core.windows.net"
    );
    let output = keyturn(&[
        ("KEYTURN_AUDIT_STORE", "table"),
        ("KEYTURN_TABLE_CONNECTION_STRING", &connection),
        ("KEYTURN_VAULTS", "https://kv-test.vault.azure.net/"),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-test.servicebus.windows.net",
        ),
        ("AZURE_TENANT_ID", "00000000-0000-0000-0000-0000000000aa"),
    ])
    .args(["config", "check"])
    .output()
    .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains(key) && !String::from_utf8_lossy(&output.stderr).contains(key));
    let report: Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["valid"], true);
    assert_eq!(
        report["settings"]["KEYTURN_TABLE_CONNECTION_STRING"]["value"],
        "[redacted]"
    );
    assert_eq!(
        report["settings"]["KEYTURN_SWEEP_SCHEDULE"]["source"],
        "default"
    );
    assert_eq!(report["effective"]["rotation_queue"], "rotations");
}

#[test]
fn config_check_exits_non_zero_and_names_the_bad_setting() {
    let output = keyturn(&[
        ("KEYTURN_AUDIT_STORE", "sqlite"),
        ("KEYTURN_VAULTS", "https://kv-test.vault.azure.net/"),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-test.servicebus.windows.net",
        ),
        ("KEYTURN_SWEEP_SCHEDULE", "0 */5 * * *"),
    ])
    .args(["config", "check"])
    .output()
    .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["valid"], false);
    let errors = report["errors"].to_string();
    assert!(errors.contains("KEYTURN_SWEEP_SCHEDULE"), "{errors}");
}

#[test]
fn serve_answers_invocations_in_a_span_per_invocation_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = local_env(dir.path());
    let served = serve(&borrowed(&env));

    let invocation_id = "3f2a1b4c-0000-4000-8000-00000000abcd";
    let event = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json");
    let response = reqwest::blocking::Client::new()
        .post(served.url("/KeyVaultEvents"))
        .header("X-Azure-Functions-InvocationId", invocation_id)
        .json(&envelope("event", event))
        .send()
        .expect("answered");
    assert_eq!(response.status(), 200);

    let (status, stdout, _) = served.terminate();
    assert!(status.success(), "exit status {status:?}");
    let finished: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "invocation finished")
        .collect();
    assert_eq!(finished.len(), 1, "{stdout}");
    assert_eq!(finished[0]["span"]["function"], "KeyVaultEvents");
    assert_eq!(finished[0]["span"]["invocation_id"], invocation_id);
    assert!(stdout.contains("\"stopped\""), "{stdout}");

    let verify = keyturn(&borrowed(&env))
        .args(["audit", "verify"])
        .output()
        .expect("runs");
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let report: Value = serde_json::from_slice(&verify.stdout).expect("JSON report");
    assert_eq!(report["entries_checked"], 1);
}

#[test]
fn the_readmes_audit_verify_needs_nothing_but_the_audit_store() {
    // A data directory with a valid chain, where the README's command looks for it:
    // `.keyturn` under the working directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join(".keyturn");
    let env = local_env(&data_dir);
    let served = serve(&borrowed(&env));
    let event = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json");
    let response = reqwest::blocking::Client::new()
        .post(served.url("/KeyVaultEvents"))
        .json(&envelope("event", event))
        .send()
        .expect("answered");
    assert_eq!(response.status(), 200);
    let (status, _, _) = served.terminate();
    assert!(status.success());

    // `keyturn audit verify` in a clean shell: no setting at all, no tenant, no vaults,
    // no Service Bus namespace.
    let verify = keyturn(&[])
        .current_dir(dir.path())
        .args(["audit", "verify"])
        .output()
        .expect("runs");
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let report: Value = serde_json::from_slice(&verify.stdout).expect("JSON report");
    assert_eq!(report["entries_checked"], 1);
}

#[test]
fn audit_verify_names_the_first_broken_link_and_exits_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = local_env(dir.path());
    let served = serve(&borrowed(&env));
    let http = reqwest::blocking::Client::new();
    for _ in 0..3 {
        let event = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretExpired.json");
        let response = http
            .post(served.url("/KeyVaultEvents"))
            .json(&envelope("event", event))
            .send()
            .expect("answered");
        assert_eq!(response.status(), 200);
    }
    let (status, _, _) = served.terminate();
    assert!(status.success());

    // Someone edits the second entry's reason directly in the database.
    let db = rusqlite::Connection::open(dir.path().join("keyturn.db")).expect("open");
    let changed = db
        .execute(
            "UPDATE audit_log SET reason = 'nothing to see' WHERE position = 2",
            [],
        )
        .expect("update");
    assert_eq!(changed, 1);
    drop(db);

    let verify = keyturn(&borrowed(&env))
        .args(["audit", "verify"])
        .output()
        .expect("runs");
    assert_eq!(verify.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&verify.stdout).expect("JSON report");
    assert_eq!(report["first_break"]["sequence"], 2, "{report}");
}

#[test]
fn a_known_secret_never_reaches_logs_or_responses() {
    let Ok(endpoint) = std::env::var("KEYTURN_TEST_TABLE_ENDPOINT") else {
        panic!(
            "KEYTURN_TEST_TABLE_ENDPOINT is unset: start Azurite via the project's test command (.ci/test)"
        );
    };
    // Azurite's well-known development account key: the secret that signs every audit
    // write this process makes.
    let key =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};TableEndpoint={endpoint};"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().display().to_string();
    let table = format!(
        "redaction{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let served = serve(&[
        ("KEYTURN_AUDIT_STORE", "table"),
        ("KEYTURN_AUDIT_TABLE", &table),
        ("KEYTURN_TABLE_CONNECTION_STRING", &connection),
        ("KEYTURN_VAULTS", "https://kv-test.vault.azure.net/"),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-test.servicebus.windows.net",
        ),
        ("KEYTURN_LOG_LEVEL", "trace"),
        // The embedded backends: the sweep and the worker run for real without Azure.
        ("KEYTURN_BACKEND", "local"),
        ("KEYTURN_DATA_DIR", &data_dir),
    ]);
    let http = reqwest::blocking::Client::new();
    let mut bodies = String::new();
    let invocations = [
        (
            "/KeyVaultEvents",
            envelope(
                "event",
                fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json"),
            ),
        ),
        (
            "/ExpirySweep",
            envelope(
                "timer",
                fixture("custom-handler/timer-trigger.data-value.docs.json"),
            ),
        ),
        (
            "/RotationWorker",
            envelope("job", json!({ "schema": 1, "jobId": "job-1" })),
        ),
        ("/KeyVaultEvents", envelope("event", json!("not an event"))),
    ];
    for (path, body) in invocations {
        let response = http
            .post(served.url(path))
            .json(&body)
            .send()
            .expect("answered");
        assert_eq!(response.status(), 200, "{path}");
        bodies.push_str(&response.text().expect("body"));
    }
    let response = http
        .get(served.url("/api/secrets/db-password"))
        .send()
        .expect("answered");
    bodies.push_str(&format!("{:?}", response.headers()));
    bodies.push_str(&response.text().expect("body"));

    let (status, stdout, stderr) = served.terminate();
    assert!(status.success());
    assert!(
        stdout.contains("invocation finished"),
        "trace logs were captured"
    );
    for (what, text) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("responses", &bodies),
    ] {
        assert!(!text.contains(key), "the account key leaked into {what}");
        assert!(
            !text.contains(&key[..20]),
            "part of the account key leaked into {what}"
        );
    }
}

#[test]
fn package_builds_the_zip_the_host_expects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("dist/keyturn.zip");
    let root = env!("CARGO_MANIFEST_DIR");
    let output = keyturn(&[])
        .args(["package", "--root", root, "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut zip =
        zip::ZipArchive::new(std::fs::File::open(&out).expect("zip exists")).expect("a zip");
    let mut names: Vec<String> = zip.file_names().map(str::to_string).collect();
    names.sort();
    let mut expected = vec!["host.json".to_string(), "keyturn".to_string()];
    for entry in std::fs::read_dir(Path::new(root).join("function-definitions")).expect("dir") {
        let function = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        expected.push(format!("{function}/function.json"));
    }
    expected.sort();
    assert_eq!(names, expected);

    for name in names.iter().filter(|n| n.ends_with("function.json")) {
        let mut text = String::new();
        zip.by_name(name)
            .expect("entry")
            .read_to_string(&mut text)
            .expect("text");
        let source =
            std::fs::read_to_string(Path::new(root).join("function-definitions").join(name))
                .expect("source");
        assert_eq!(text, source, "{name} is shipped as written");
    }
    let executable = zip.by_name("keyturn").expect("binary");
    assert_eq!(executable.unix_mode().map(|m| m & 0o777), Some(0o755));
    assert_eq!(
        executable.size(),
        std::fs::metadata(env!("CARGO_BIN_EXE_keyturn"))
            .expect("binary")
            .len()
    );
}

/// The host reads a non-2xx answer's status and drops its body, `Logs` included: a
/// retryable failure must be in the process's own log (stdout, which the host captures
/// into the function's log), with the invocation it belongs to and its reason.
#[test]
fn a_retryable_failure_is_logged_on_stdout_with_its_invocation_and_reason() {
    // An audit table nobody listens at: every audit write fails to connect, which is
    // transient, so the event is answered 500 for the trigger to deliver again.
    let key =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = local_env(dir.path());
    env.retain(|(k, _)| *k != "KEYTURN_AUDIT_STORE");
    env.push(("KEYTURN_AUDIT_STORE", "table".into()));
    env.push(("KEYTURN_TABLE_CONNECTION_STRING", connection));
    let served = serve(&borrowed(&env));

    let invocation_id = "5b7c9d1e-0000-4000-8000-00000000f00d";
    let event = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json");
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
        .post(served.url("/KeyVaultEvents"))
        .header("X-Azure-Functions-InvocationId", invocation_id)
        .json(&envelope("event", event))
        .send()
        .expect("answered");
    assert_eq!(response.status(), 500);

    let (_, stdout, _) = served.terminate();
    let failures: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("will deliver it again"))
        })
        .collect();
    assert_eq!(failures.len(), 1, "{stdout}");
    let line = &failures[0];
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["span"]["function"], "KeyVaultEvents", "{line}");
    assert_eq!(line["span"]["invocation_id"], invocation_id, "{line}");
    let error = line["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("could not be reached"), "{line}");
    assert!(
        !stdout.contains(key),
        "the account key never reaches the log"
    );
}
