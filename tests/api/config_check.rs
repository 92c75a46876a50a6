//! `keyturn config check` and `keyturn serve` run the same parse and the same start-up
//! build, files included: for every configuration, both accept or both refuse. File
//! inputs are read with a size cap, and a value that may be a secret is never echoed.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::keyturn;
use keyturn_testkit::pki;

/// How long `serve` may take to either listen or give up. Start-up reads local files
/// only, so anything near this is a hang.
const START_UP_LIMIT: Duration = Duration::from_secs(30);

/// A working local-mode configuration in `dir`, which each case changes.
fn base(dir: &Path) -> Vec<(String, String)> {
    [
        ("KEYTURN_BACKEND", "local".to_string()),
        ("KEYTURN_AUDIT_STORE", "sqlite".to_string()),
        ("KEYTURN_DATA_DIR", dir.join("data").display().to_string()),
        (
            "KEYTURN_VAULTS",
            "https://kv-test.vault.azure.net/".to_string(),
        ),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-test.servicebus.windows.net".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn with(dir: &Path, changes: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = base(dir);
    for (k, v) in changes {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.clone()));
    }
    env
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// What one command said about a configuration.
struct Answer {
    accepted: bool,
    output: String,
}

fn config_check(env: &[(String, String)]) -> Answer {
    let output = keyturn(&borrowed(env))
        .args(["config", "check"])
        .output()
        .expect("keyturn runs");
    Answer {
        accepted: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Runs `serve` until it listens (accepted; then stopped) or exits (refused).
fn serve(env: &[(String, String)]) -> Answer {
    let started = Instant::now();
    let mut child = keyturn(&borrowed(env))
        .args(["serve", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyturn starts");
    let rx = crate::helpers::lines_of(child.stdout.take().expect("stdout"));
    let mut output = String::new();
    let accepted = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let listening = line.contains("\"listening\"");
                output.push_str(&line);
                output.push('\n');
                if listening {
                    break true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                child.wait().expect("keyturn exits");
                break false;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        assert!(
            started.elapsed() < START_UP_LIMIT,
            "serve neither listened nor exited: {output}"
        );
    };
    stop(&mut child);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).expect("stderr");
    }
    output.push_str(&stderr);
    Answer { accepted, output }
}

fn stop(child: &mut Child) {
    if child.try_wait().expect("status").is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A self-signed server certificate and its key, as PEM files in `dir`.
fn tls_files(dir: &Path) -> (String, String) {
    let issued = pki::self_signed(&pki::server_params(&["localhost"]));
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    std::fs::write(&cert, &issued.cert_pem).expect("write cert");
    std::fs::write(&key, &issued.key_pem).expect("write key");
    (cert.display().to_string(), key.display().to_string())
}

fn file(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path.display().to_string()
}

/// What a configuration is, whether it should start, and how it differs from [`base`].
type Case<'a> = (&'a str, bool, Vec<(&'a str, String)>);

#[test]
fn config_check_and_serve_accept_and_refuse_the_same_configurations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (cert, key) = tls_files(d);
    let tls = |cert: &str, key: &str| {
        vec![
            ("KEYTURN_TLS_ADDRESS", "127.0.0.1:0".to_string()),
            ("KEYTURN_TLS_CERT", cert.to_string()),
            ("KEYTURN_TLS_KEY", key.to_string()),
        ]
    };
    let good_policy = r#"{"version":1,"grants":[]}"#;
    let not_a_key = file(d, "not-a-key.pem", "this is not a key\n");
    let not_a_cert = file(d, "not-a-cert.pem", "this is not a certificate\n");
    let policy_file = file(d, "policy.json", good_policy);
    let bad_policy_file = file(d, "bad-policy.json", r#"{"version":1,"grants":["#);
    let keyvault_grant = r#"{"version":1,"grants":[{"name":"kiosks","identities":[{"subject":"CN=kiosk-*"}],"secrets":["wifi-guest"],"backend":"keyvault"}]}"#;
    let local_grant = keyvault_grant.replace("keyvault", "local");
    let missing = d.join("missing.pem").display().to_string();

    let cases: Vec<Case> = vec![
        ("the working configuration", true, vec![]),
        (
            "an inline access policy",
            true,
            vec![("KEYTURN_ACCESS_POLICY", good_policy.to_string())],
        ),
        (
            "an access policy file",
            true,
            vec![("KEYTURN_ACCESS_POLICY", policy_file.clone())],
        ),
        (
            "an access policy granting the local vault",
            true,
            vec![("KEYTURN_ACCESS_POLICY", local_grant)],
        ),
        ("keyturn's own TLS listener", true, tls(&cert, &key)),
        (
            "a malformed inline access policy",
            false,
            vec![("KEYTURN_ACCESS_POLICY", r#"{"version":1,"#.to_string())],
        ),
        (
            "a malformed access policy file",
            false,
            vec![("KEYTURN_ACCESS_POLICY", bad_policy_file)],
        ),
        (
            "a missing access policy file",
            false,
            vec![("KEYTURN_ACCESS_POLICY", missing.clone())],
        ),
        (
            "an access policy granting a backend this app lacks",
            false,
            vec![("KEYTURN_ACCESS_POLICY", keyvault_grant.to_string())],
        ),
        (
            "a local vault key that is not base64 of 32 bytes",
            false,
            vec![("KEYTURN_LOCAL_VAULT_KEY", "c2hvcnQ=".to_string())],
        ),
        ("a TLS key that is not a key", false, tls(&cert, &not_a_key)),
        (
            "a TLS certificate that is not one",
            false,
            tls(&not_a_cert, &key),
        ),
        ("a missing TLS key", false, tls(&cert, &missing)),
        ("an endless TLS certificate", false, tls("/dev/zero", &key)),
        ("an endless TLS key", false, tls(&cert, "/dev/zero")),
        (
            "a data directory that is a device",
            false,
            vec![("KEYTURN_DATA_DIR", "/dev/null".to_string())],
        ),
        (
            "a malformed connection string",
            false,
            vec![
                ("KEYTURN_AUDIT_STORE", "table".to_string()),
                (
                    "KEYTURN_TABLE_CONNECTION_STRING",
                    "this is not a connection string".to_string(),
                ),
            ],
        ),
        (
            "the reserved table name",
            false,
            vec![
                ("KEYTURN_AUDIT_STORE", "table".to_string()),
                (
                    "KEYTURN_TABLE_ENDPOINT",
                    "https://st.table.core.windows.net".to_string(),
                ),
                ("KEYTURN_AUDIT_TABLE", "tables".to_string()),
            ],
        ),
        (
            "a Service Bus namespace with a port",
            false,
            vec![(
                "ServiceBusConnection__fullyQualifiedNamespace",
                "sb-test.servicebus.windows.net:5671".to_string(),
            )],
        ),
        (
            "a vault that is not a Key Vault host",
            false,
            vec![("KEYTURN_VAULTS", "https://vault.example.com/".to_string())],
        ),
        (
            "a chain policy whose roots are missing",
            false,
            vec![
                ("KEYTURN_CERT_POLICIES", "chain".to_string()),
                ("KEYTURN_CHAIN_ROOTS", missing.clone()),
            ],
        ),
        (
            "a chain policy whose roots are endless",
            false,
            vec![
                ("KEYTURN_CERT_POLICIES", "chain".to_string()),
                ("KEYTURN_CHAIN_ROOTS", "/dev/zero".to_string()),
            ],
        ),
    ];
    for (what, expected, changes) in cases {
        let env = with(d, &changes);
        let check = config_check(&env);
        let served = serve(&env);
        assert_eq!(
            check.accepted, expected,
            "config check on {what}: {}",
            check.output
        );
        assert_eq!(
            served.accepted, expected,
            "serve on {what}: {}",
            served.output
        );
    }
}

#[test]
fn a_key_pasted_in_place_of_the_tls_key_path_is_echoed_by_neither_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = tls_files(dir.path());
    for canary in [
        "-----BEGIN PRIVATE KEY-----\nMIIcanaryPEMc2VjcmV0\n-----END PRIVATE KEY-----",
        // A key without the PEM armour still reads as a path, and still is not echoed.
        "MIIcanaryBAREc2VjcmV0a2V5bWF0ZXJpYWw",
    ] {
        let marker = &canary[canary.find("MIIcanary").expect("marker")..][..13];
        let env = with(
            dir.path(),
            &[
                ("KEYTURN_TLS_ADDRESS", "127.0.0.1:0".to_string()),
                ("KEYTURN_TLS_CERT", cert.clone()),
                ("KEYTURN_TLS_KEY", canary.to_string()),
                ("KEYTURN_LOG_LEVEL", "trace".to_string()),
            ],
        );
        let check = config_check(&env);
        let served = serve(&env);
        assert!(!check.accepted && !served.accepted);
        assert!(check.output.contains("KEYTURN_TLS_KEY"), "{}", check.output);
        assert!(
            served.output.contains("KEYTURN_TLS_KEY"),
            "{}",
            served.output
        );
        for (command, output) in [("config check", &check.output), ("serve", &served.output)] {
            assert!(
                !output.contains(marker),
                "{command} echoed the key: {output}"
            );
        }
    }
}

#[test]
fn an_endless_certificate_file_fails_cert_verify_cleanly_and_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (roots, _) = tls_files(dir.path());
    let started = Instant::now();
    let output = keyturn(&[])
        .args(["cert", "verify", "--roots", &roots, "--cert", "/dev/zero"])
        .output()
        .expect("keyturn runs");
    assert!(started.elapsed() < START_UP_LIMIT);
    assert_eq!(output.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["reason"], "unreadable_input");
    assert!(report.to_string().contains("larger than"), "{report}");
}

#[test]
fn an_endless_tls_certificate_stops_serve_cleanly_and_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, key) = tls_files(dir.path());
    let env = with(
        dir.path(),
        &[
            ("KEYTURN_TLS_ADDRESS", "127.0.0.1:0".to_string()),
            ("KEYTURN_TLS_CERT", "/dev/zero".to_string()),
            ("KEYTURN_TLS_KEY", key),
        ],
    );
    let started = Instant::now();
    let output = keyturn(&borrowed(&env))
        .args(["serve", "--port", "0"])
        .output()
        .expect("keyturn runs");
    assert!(started.elapsed() < START_UP_LIMIT);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("larger than"), "{stderr}");
}

#[test]
fn an_appsettings_prefix_over_a_reserved_prefix_stops_config_check_and_serve_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cases: Vec<(String, bool)> = keyturn::config::PLATFORM_SETTING_PREFIXES
        .iter()
        .map(|reserved| (format!("{reserved}SECRETS_"), false))
        .collect();
    // The connection string the backend once served, and keyturn's own settings.
    cases.push(("CUSTOMCONNSTR_".to_string(), false));
    cases.push(("KEYTURN_TABLE_ENDPOINT".to_string(), false));
    cases.push((
        keyturn::config::DEFAULT_APPSETTINGS_PREFIX.to_string(),
        true,
    ));
    cases.push(("DEVICE_SECRET_".to_string(), true));
    for (prefix, expected) in cases {
        let env = with(
            dir.path(),
            &[("KEYTURN_APPSETTINGS_PREFIX", prefix.clone())],
        );
        let check = config_check(&env);
        let served = serve(&env);
        for (command, answer) in [("config check", &check), ("serve", &served)] {
            assert_eq!(
                answer.accepted, expected,
                "{command} on {prefix}: {}",
                answer.output
            );
            if !expected {
                assert!(
                    answer.output.contains("KEYTURN_APPSETTINGS_PREFIX"),
                    "{command} on {prefix} does not name the setting: {}",
                    answer.output
                );
            }
        }
    }
}
