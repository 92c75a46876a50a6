//! Local mode: the host side played against the real handler binary.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use keyturn::config::Environment;
use keyturn::local::definitions::AppDefinition;
use keyturn::local::handler::Handler;

use crate::helpers::{fixture, keyturn};

#[tokio::test]
async fn the_handler_starts_as_host_json_says_and_answers_enveloped_invocations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = AppDefinition::load(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &Environment::default(),
    )
    .expect("definitions");
    let env = vec![
        ("KEYTURN_BACKEND".to_string(), "local".to_string()),
        ("KEYTURN_AUDIT_STORE".to_string(), "sqlite".to_string()),
        (
            "KEYTURN_DATA_DIR".to_string(),
            dir.path().display().to_string(),
        ),
        (
            "KEYTURN_VAULTS".to_string(),
            "https://kv-local.vault.azure.net/".to_string(),
        ),
        (
            "ServiceBusConnection__fullyQualifiedNamespace".to_string(),
            "sb-local.servicebus.windows.net".to_string(),
        ),
    ];
    let handler = Handler::start(
        &app.handler,
        Some(PathBuf::from(env!("CARGO_BIN_EXE_keyturn"))),
        &env,
        None,
    )
    .await
    .expect("the handler listens");

    let definition = app.function("KeyVaultEvents").expect("defined");
    let event = fixture("keyvault-events/DERIVED.eventgrid-schema.CertificateNearExpiry.json");
    let answer = handler
        .invoke(&definition.name, &definition.binding, event, Map::new())
        .await
        .expect("answered");
    assert!(answer.succeeded(), "{answer:?}");
    assert_eq!(
        answer.body["ReturnValue"]["received"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let sweep = app.function("ExpirySweep").expect("defined");
    let answer = handler
        .invoke(
            &sweep.name,
            &sweep.binding,
            Value::String("{\"IsPastDue\":false}".into()),
            Map::new(),
        )
        .await
        .expect("answered");
    assert!(answer.succeeded(), "{answer:?}");
    handler.stop().await.expect("stops");
}

fn dev_once(data_dir: &Path, env: &[(&str, &str)]) -> (Option<i32>, Value) {
    let output = keyturn(env)
        .args(["dev", "--once", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("keyturn dev runs");
    let summary = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "--once prints a JSON summary ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), summary)
}

fn names(summary: &Value, list: &str) -> Vec<String> {
    let mut names: Vec<String> = summary[list]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn vault_list(data_dir: &Path) -> Value {
    let output = keyturn(&[])
        .args(["vault", "list", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("keyturn vault list runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn versions_of(list: &Value, name: &str) -> usize {
    list["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["versions"].as_array().map(Vec::len))
        .unwrap_or_else(|| panic!("{name} is listed"))
}

fn audit_verify(data_dir: &Path) -> Value {
    let dir = data_dir.display().to_string();
    let output = keyturn(&[
        ("KEYTURN_BACKEND", "local"),
        ("KEYTURN_AUDIT_STORE", "sqlite"),
        ("KEYTURN_DATA_DIR", &dir),
        ("KEYTURN_VAULTS", "https://keyturn-local.vault.azure.net/"),
    ])
    .args(["audit", "verify"])
    .output()
    .expect("keyturn audit verify runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

const DUE_DEMO_OBJECTS: [&str; 4] = [
    "demo-app-secret",
    "demo-certificate",
    "demo-generated",
    "demo-no-expiry",
];

#[test]
fn dev_once_rotates_the_demos_due_objects_once_and_then_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    // One acceptance proves a credential, so one `--once` drain can rotate.
    let one_proof = [
        ("KEYTURN_PROOF_SUCCESSES", "1"),
        ("KEYTURN_PROOF_WINDOW_SECONDS", "0"),
    ];
    let (code, first) = dev_once(&data, &one_proof);
    assert_eq!(code, Some(0), "{first}");
    assert_eq!(names(&first, "rotated"), DUE_DEMO_OBJECTS, "{first}");
    assert!(first["failed"].as_array().expect("list").is_empty());
    assert_eq!(
        first["scheduled"], 0,
        "the demo's first app secret was not written by keyturn, so it is left to expire"
    );

    let (code, second) = dev_once(&data, &one_proof);
    assert_eq!(code, Some(0), "{second}");
    assert!(names(&second, "rotated").is_empty(), "{second}");

    let list = vault_list(&data);
    for name in ["demo-app-secret", "demo-generated", "demo-no-expiry"] {
        assert_eq!(
            versions_of(&list, name),
            2,
            "{name}: the bootstrap version and one rotation"
        );
    }
    let rotated_certificate = first["rotated"]
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["name"] == "demo-certificate")
        .and_then(|t| t["version"].as_str())
        .expect("the certificate's new version")
        .to_string();
    let certificate = &list["certificates"][0];
    assert_eq!(certificate["currentVersion"], rotated_certificate.as_str());
    let report = audit_verify(&data);
    assert!(
        report["entries_checked"].as_u64().expect("count") > 10,
        "{report}"
    );

    // The values rotation handled appear nowhere but in the vault.
    let values = current_values(
        &data,
        &["demo-app-secret", "demo-generated", "demo-no-expiry"],
    );
    let log = std::fs::read_to_string(data.join("handler.log")).expect("handler log");
    let audit = audit_dump(&data);
    for value in &values {
        assert!(value.len() >= 16, "a real secret value was read");
        for (what, text) in [
            ("handler log", &log),
            ("audit log", &audit),
            ("summary", &first.to_string()),
        ] {
            assert!(
                !text.contains(value.as_str()),
                "a rotated secret value leaked into the {what}"
            );
        }
    }
}

/// The current values of `names` in the local vault, read as the endpoint would.
fn current_values(data: &Path, names: &[&str]) -> Vec<String> {
    use keyturn::adapters::local::store::LocalStore;
    use keyturn::adapters::local::vault::LocalVault;
    use keyturn::domain::clock::Clock;
    use keyturn::domain::names::{ObjectName, VaultUrl};
    use keyturn::ports::vault::SecretStore;

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
        let url = VaultUrl::parse("https://keyturn-local.vault.azure.net/").expect("url");
        let mut values = Vec::new();
        for name in names {
            let name = ObjectName::parse(name).expect("name");
            let secret = vault
                .secret(&url, &name, None)
                .await
                .expect("read")
                .expect("exists");
            values.push(secret.value.expose().to_string());
        }
        values
    })
}

/// Every audit row as text.
fn audit_dump(data: &Path) -> String {
    let db = rusqlite::Connection::open(data.join("keyturn.db")).expect("open");
    let mut statement = db.prepare("SELECT * FROM audit_log").expect("query");
    let columns = statement.column_count();
    let rows = statement
        .query_map([], |row| {
            Ok((0..columns)
                .map(|i| format!("{:?}", row.get_ref(i).map(|v| format!("{v:?}"))))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .expect("rows");
    rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("\n")
}

#[test]
fn killing_dev_mid_rotation_loses_no_job_and_rotates_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    // Entra-like propagation delay keeps the app-secret rotation waiting for its proof
    // after the new credential was added: the moment to kill it.
    // One acceptance proves a credential, so one `--once` drain can rotate.
    let one_proof = [
        ("KEYTURN_PROOF_SUCCESSES", "1"),
        ("KEYTURN_PROOF_WINDOW_SECONDS", "0"),
    ];
    let mut run = keyturn(&[
        ("KEYTURN_LOCAL_PROPAGATION_SECONDS", "5"),
        one_proof[0],
        one_proof[1],
    ])
    .args(["dev", "--once", "--data-dir"])
    .arg(&data)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("keyturn dev starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation never added its credential"
        );
        if credential_added(&data) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    run.kill().expect("kill -9");
    run.wait().expect("reaped");

    // The killed run may have made its first proof attempt and scheduled the next one
    // five seconds on (the propagation delay); `--once` delivers only what is due.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let (code, resumed) = dev_once(&data, &one_proof);
    assert_eq!(code, Some(0), "{resumed}");
    assert!(
        names(&resumed, "rotated").contains(&"demo-app-secret".to_string()),
        "{resumed}"
    );
    let (_, again) = dev_once(&data, &one_proof);
    assert!(names(&again, "rotated").is_empty(), "{again}");

    let list = vault_list(&data);
    for name in ["demo-app-secret", "demo-generated", "demo-no-expiry"] {
        assert_eq!(versions_of(&list, name), 2, "{name} rotated exactly once");
    }
    assert_eq!(
        app_credentials(&data, &list),
        2,
        "the initial and the rotated secret; no orphan"
    );
    audit_verify(&data);
}

fn credential_added(data: &Path) -> bool {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        data.join("keyturn.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return false;
    };
    db.query_row(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'credential.added'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// How many password credentials the demo application has, read through the local
/// directory as the rotation engine sees it.
fn app_credentials(data: &Path, list: &Value) -> usize {
    use keyturn::adapters::local::directory::LocalDirectory;
    use keyturn::adapters::local::store::LocalStore;
    use keyturn::domain::clock::Clock;
    use keyturn::domain::ids::AppId;
    use keyturn::ports::directory::CredentialIssuer;

    let app_id = list["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .find(|s| s["name"] == "demo-app-secret")
        .and_then(|s| s["tags"]["keyturn-app-id"].as_str())
        .and_then(|a| AppId::parse(a).ok())
        .expect("the demo secret names its application");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = LocalStore::open(data.join("keyturn.db")).expect("open");
        let directory = LocalDirectory::new(store, Clock::system());
        let app = directory
            .application(&app_id)
            .await
            .expect("lookup")
            .expect("exists");
        directory
            .password_credentials(&app.object_id)
            .await
            .expect("credentials")
            .len()
    })
}

#[test]
fn vault_set_reads_the_value_from_stdin_and_vault_list_never_prints_it() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (code, _) = dev_once(&data, &[]);
    assert_eq!(code, Some(0));

    let value = "correct-horse-battery-staple-7f3a";
    let mut set = keyturn(&[])
        .args([
            "vault",
            "set",
            "team-api-key",
            "--tags",
            "keyturn-kind=generated,owner=team",
            "--expires",
            "+45d",
            "--data-dir",
        ])
        .arg(&data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("keyturn vault set runs");
    set.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{value}\n").as_bytes())
        .expect("value written");
    let output = set.wait_with_output().expect("finishes");
    assert_eq!(output.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&output.stdout).contains(value));

    let list = vault_list(&data);
    let text = list.to_string();
    assert!(!text.contains(value), "values are never listed");
    let entry = list["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .find(|s| s["name"] == "team-api-key")
        .expect("listed");
    assert_eq!(entry["tags"]["owner"], "team");
    assert!(entry["expires"].as_str().is_some());
}

#[test]
fn vault_commands_explain_a_wrong_data_dir_and_a_wrong_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = keyturn(&[])
        .args(["vault", "list", "--data-dir"])
        .arg(dir.path().join("nothing-here"))
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("holds no keyturn data"));

    let data = dir.path().join("data");
    let (code, _) = dev_once(&data, &[]);
    assert_eq!(code, Some(0));
    // A different 32-byte key than the one the store was sealed with.
    let wrong_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let wrong = keyturn(&[("KEYTURN_LOCAL_VAULT_KEY", wrong_key)])
        .args(["vault", "list", "--data-dir"])
        .arg(&data)
        .output()
        .expect("runs");
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("does not decrypt this store"), "{stderr}");
    assert!(!stderr.contains(wrong_key), "the key is never echoed");

    let usage = keyturn(&[])
        .args(["vault", "set", "bad_name", "--data-dir"])
        .arg(&data)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn a_second_dev_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut first = keyturn(&[])
        .args(["dev", "--data-dir"])
        .arg(&data)
        .args([
            "--tls-address",
            "127.0.0.1:0",
            "--ingress-address",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("keyturn dev starts");
    // The first run prints its instructions once it is up.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        first.stdout.take().expect("stdout"),
    ));
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("secret endpoint"))),
        "the first run came up"
    );

    let (code, stderr) = {
        let output = keyturn(&[])
            .args(["dev", "--once", "--data-dir"])
            .arg(&data)
            .output()
            .expect("runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    let _ = first.wait();
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("another `keyturn dev` is running"),
        "{stderr}"
    );
}

/// A free loopback port (closed again before use; the race is harmless in a test).
#[test]
fn dev_serves_secrets_over_mutual_tls_raises_vault_events_and_accepts_replayed_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (tls, ingress) = (
        format!("127.0.0.1:{}", crate::helpers::unused_port()),
        format!("127.0.0.1:{}", crate::helpers::unused_port()),
    );
    let mut dev = keyturn(&[])
        .args(["dev", "--data-dir"])
        .arg(&data)
        .args(["--tls-address", &tls, "--ingress-address", &ingress])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("keyturn dev starts");
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(dev.stdout.take().expect("stdout")));
    let printed: Vec<String> = lines
        .by_ref()
        .map_while(Result::ok)
        .take_while(|l| !l.starts_with("Files:"))
        .collect();
    let curl_lines: Vec<&String> = printed
        .iter()
        .filter(|l| l.trim_start().starts_with("curl "))
        .collect();
    assert_eq!(
        curl_lines.len(),
        2,
        "the granted and the other device: {printed:?}"
    );

    // Run the printed commands as a user would.
    let run = |line: &str| {
        let mut args: Vec<&str> = line.split_whitespace().skip(1).collect();
        args.extend(["-s", "-o", "-", "-w", "\n%{http_code}"]);
        let output = std::process::Command::new("curl")
            .args(&args)
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let granted = run(curl_lines[0]);
    let other = run(curl_lines[1]);
    assert!(granted.ends_with("\n200"), "{granted}");
    let body: Value = serde_json::from_str(granted.trim_end_matches("\n200")).expect("JSON");
    assert_eq!(body["name"], "demo-generated");
    assert!(body["value"].as_str().is_some_and(|v| v.len() >= 16));
    assert!(other.ends_with("\n403"), "{other}");

    // dev's TLS listener audits the handshakes it refuses, as serve's does.
    let mut hello = std::net::TcpStream::connect(&tls).expect("connects");
    std::io::Write::write_all(&mut hello, b"this is not a ClientHello\r\n\r\n").expect("writes");
    let _ = std::io::Read::read_to_end(&mut hello, &mut Vec::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !audit_reason_has(
        &data,
        "policy=handshake; reason=malformed_handshake; source=127.0.0.1",
    ) {
        assert!(
            std::time::Instant::now() < deadline,
            "the refused handshake is not audited"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // A replayed Event Grid delivery reaches KeyVaultEvents.
    let event =
        crate::helpers::fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json");
    let replayed = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!(
            "http://{ingress}/runtime/webhooks/EventGrid?functionName=KeyVaultEvents"
        ))
        .args([
            "-H",
            "aeg-event-type: Notification",
            "-H",
            "content-type: application/json",
            "-d",
        ])
        .arg(event.to_string())
        .output()
        .expect("curl runs");
    // Accepted, as the host answers an Event Grid delivery its function took.
    assert_eq!(String::from_utf8_lossy(&replayed.stdout), "202");

    // The local vault raises NearExpiry for the demo's secrets like Key Vault; the event
    // queues a job and the pump runs it, with no sweep involved.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let vault = "https://keyturn-local.vault.azure.net/";
    while !audit_has(&data, "event.received", vault, "demo-generated")
        || !audit_has(&data, "secret.rotated", vault, "demo-generated")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the vault's event did not lead to a rotation"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status();
    assert!(dev.wait().expect("exits").success());
}

/// Whether the audit log has `action` on `vault`/`name`.
fn audit_has(data: &Path, action: &str, vault: &str, name: &str) -> bool {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        data.join("keyturn.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return false;
    };
    db.query_row(
        "SELECT COUNT(*) FROM audit_log WHERE action = ?1 AND vault = ?2 AND secret_name = ?3",
        [action, vault, name],
        |row| row.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// Whether the audit log has a denied `secret.read` whose reason is `reason`.
fn audit_reason_has(data: &Path, reason: &str) -> bool {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        data.join("keyturn.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return false;
    };
    db.query_row(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'secret.read' AND outcome = 'denied' AND reason = ?1",
        [reason],
        |row| row.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// `/proc/<pid>/stat`'s state and parent, or `None` once the process is gone.
#[cfg(target_os = "linux")]
fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let parent = rest.next()?.parse().ok()?;
    Some((state, parent))
}

/// Whether `pid` still runs (a zombie has stopped: it holds no socket any more).
#[cfg(target_os = "linux")]
fn running(pid: u32) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| state != 'Z')
}

/// The first child of `parent`, as soon as it exists (before or after its exec).
#[cfg(target_os = "linux")]
fn first_child(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| state_and_parent(*pid).is_some_and(|(_, ppid)| ppid == parent))
}

/// Polls `probe` until it answers; the bound only keeps a broken build from hanging the
/// suite, it is not what the test checks.
#[cfg(target_os = "linux")]
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(std::time::Instant::now() < give_up, "never: {what}");
        std::thread::yield_now();
    }
}

/// The moments, from the handler's first to keyturn dev being up, at which dev is killed.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// As soon as the handler process exists, fork and exec included.
    HandlerForked,
    /// Once the handler runs keyturn's code (its command line is the handler's).
    HandlerExecuted,
    /// Once the handler listens for TLS.
    HandlerListening,
    /// Once dev has printed its instructions.
    DevReady,
}

#[cfg(target_os = "linux")]
#[test]
fn killing_dev_at_any_moment_of_its_handlers_start_leaves_no_handler_and_frees_the_port() {
    for moment in [
        Moment::HandlerForked,
        Moment::HandlerExecuted,
        Moment::HandlerListening,
        Moment::DevReady,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let tls = format!("127.0.0.1:{}", crate::helpers::unused_port());
        let mut dev = keyturn(&[])
            .args(["dev", "--data-dir"])
            .arg(&data)
            .args(["--tls-address", &tls, "--ingress-address", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("keyturn dev starts");
        let handler = eventually("dev starts its handler", || first_child(dev.id()));
        match moment {
            Moment::HandlerForked => {}
            Moment::HandlerExecuted => {
                eventually("the handler execs", || {
                    std::fs::read(format!("/proc/{handler}/cmdline"))
                        .ok()
                        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains("serve"))
                });
            }
            Moment::HandlerListening => {
                eventually("the handler listens for TLS", || {
                    std::net::TcpStream::connect(&tls).ok()
                });
            }
            Moment::DevReady => {
                let stdout = dev.stdout.take().expect("stdout");
                let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
                assert!(
                    lines.any(|l| l.is_ok_and(|l| l.contains("secret endpoint"))),
                    "dev came up"
                );
            }
        }

        dev.kill().expect("SIGKILL");
        dev.wait().expect("reaped");

        eventually(&format!("the handler dies with dev ({moment:?})"), || {
            (!running(handler)).then_some(())
        });
        // The handler shows as a zombie once its main thread has exited; its runtime's
        // other threads still hold the file table, and so the port, a moment longer.
        eventually(&format!("{moment:?}: the TLS port is free again"), || {
            std::net::TcpListener::bind(&tls).ok()
        });
    }
}

#[cfg(target_os = "linux")]
#[test]
fn dev_names_the_process_holding_its_tls_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let tls = holder.local_addr().expect("address").to_string();

    let output = keyturn(&[])
        .args(["dev", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--tls-address", &tls, "--ingress-address", "127.0.0.1:0"])
        .output()
        .expect("runs");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on {tls}: the port is taken by process {}",
            std::process::id()
        )),
        "{stderr}"
    );
}

#[test]
fn dev_once_lists_the_objects_still_proving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // The default proof asks for several acceptances over a window: one drain adds and
    // stages the app secret's credential and leaves it proving.
    let (code, summary) = dev_once(&data, &[]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(names(&summary, "proving"), ["demo-app-secret"], "{summary}");
    assert!(
        !names(&summary, "rotated").contains(&"demo-app-secret".to_string()),
        "{summary}"
    );
}

/// `keyturn dev` on `data`, listening on unused loopback ports, with a rotation's proof
/// needing two acceptances `proof_window_seconds` apart; its stdout piped and its stderr
/// kept in `dir/dev.stderr` for the failure message.
fn spawn_dev(dir: &Path, data: &Path, proof_window_seconds: &str) -> std::process::Child {
    let (tls, ingress) = (
        format!("127.0.0.1:{}", crate::helpers::unused_port()),
        format!("127.0.0.1:{}", crate::helpers::unused_port()),
    );
    keyturn(&[
        ("KEYTURN_PROOF_SUCCESSES", "2"),
        ("KEYTURN_PROOF_WINDOW_SECONDS", proof_window_seconds),
    ])
    .args(["dev", "--data-dir"])
    .arg(data)
    .args(["--tls-address", &tls, "--ingress-address", &ingress])
    .stdout(std::process::Stdio::piped())
    .stderr(std::fs::File::create(dir.join("dev.stderr")).expect("a stderr file"))
    .spawn()
    .expect("keyturn dev starts")
}

#[test]
fn dev_shows_each_rotation_step_as_it_happens_and_never_a_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut dev = spawn_dev(dir.path(), &data, "0");
    let received = crate::helpers::lines_of(dev.stdout.take().expect("stdout"));
    let stderr = || std::fs::read_to_string(dir.path().join("dev.stderr")).unwrap_or_default();
    // The vault's NearExpiry events queue the demo's rotations; the lines come as the
    // pump runs them. The bound only keeps a broken build from hanging the suite.
    let mut shown = Vec::new();
    let done = |shown: &[String]| {
        shown
            .iter()
            .any(|l| l.contains("  demo-app-secret  promoted version "))
            && shown
                .iter()
                .any(|l| l.contains("  demo-generated  rotated to version "))
    };
    while !done(&shown) {
        match received.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(line) => shown.push(line),
            Err(e) => panic!(
                "the rotations never showed ({e}): {shown:#?}\nstderr:\n{}",
                stderr()
            ),
        }
    }
    // Every command the instructions suggest runs, as printed, while dev runs.
    let suggested: Vec<Vec<String>> = shown
        .iter()
        .filter_map(|l| l.trim().strip_prefix("keyturn "))
        .filter(|l| l.contains("--data-dir"))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert!(suggested.len() >= 5, "{shown:#?}");
    let mut outputs = Vec::new();
    for args in &suggested {
        let output = keyturn(&[]).args(args).output().expect("runs");
        assert_eq!(
            output.status.code(),
            Some(0),
            "keyturn {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.stdout.is_empty(),
            "keyturn {args:?} printed nothing"
        );
        outputs.push(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status();
    assert!(dev.wait().expect("exits").success());

    let position = |object: &str, step: &str| {
        shown
            .iter()
            .position(|l| l.contains(&format!("  {object}  {step}")))
            .unwrap_or_else(|| panic!("no `{step}` line for {object}: {shown:#?}"))
    };
    let added = position("demo-app-secret", "added credential ");
    let proving = position("demo-app-secret", "proving: accepted 1/2");
    let proven = position("demo-app-secret", "proving: accepted 2/2");
    let promoted = position("demo-app-secret", "promoted version ");
    assert!(
        added < proving && proving < proven && proven < promoted,
        "{shown:#?}"
    );

    let values = current_values(&data, &["demo-app-secret", "demo-generated"]);
    let printed = format!("{}\n{}", shown.join("\n"), outputs.join("\n"));
    for value in &values {
        assert!(value.len() >= 16, "a real secret value was read");
        assert!(
            !printed.contains(value.as_str()),
            "a secret value was printed"
        );
    }
}

/// A `keyturn dev` killed when the test ends, however it ends: a failed assertion leaves
/// no local mode running (its handler stops with it).
struct StoppedOnDrop(std::process::Child);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `keyturn inventory --format json` of `data`, as an array of credentials.
fn inventory_json(data: &Path) -> Vec<Value> {
    let output = keyturn(&[])
        .args(["inventory", "--format", "json", "--data-dir"])
        .arg(data)
        .output()
        .expect("keyturn inventory runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .expect("JSON")
        .as_array()
        .cloned()
        .expect("an array")
}

/// The vault object `name` of the local vault as the inventory lists it.
fn local_vault_row<'a>(inventory: &'a [Value], name: &str) -> Option<&'a Value> {
    inventory.iter().find(|c| {
        c["source"]["kind"] == "vault"
            && c["source"]["name"] == "keyturn-local"
            && c["name"] == name
    })
}

/// A row's expiry, when it is further out than `days` from now.
fn expires_beyond(row: &Value, days: i64) -> bool {
    row["expires"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|expires| expires > chrono::Utc::now() + chrono::Duration::days(days))
}

#[test]
fn dev_inventory_shows_a_rotation_finished_after_the_start_without_waiting_for_a_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Two acceptances at least 30 seconds apart: the demo application's secret is promoted
    // well after the start's discovery sweep, in the continuous loop.
    let mut dev = StoppedOnDrop(spawn_dev(dir.path(), &data, "30"));
    let received = crate::helpers::lines_of(dev.0.stdout.take().expect("stdout"));
    let stderr = || std::fs::read_to_string(dir.path().join("dev.stderr")).unwrap_or_default();
    let mut shown: Vec<String> = Vec::new();
    let read_until = |shown: &mut Vec<String>, what: &str, done: &dyn Fn(&str) -> bool| {
        // The bound only keeps a broken build from hanging the suite.
        while !shown.iter().any(|l| done(l)) {
            match received.recv_timeout(std::time::Duration::from_secs(120)) {
                Ok(line) => shown.push(line),
                Err(e) => panic!(
                    "{what} never showed ({e}): {shown:#?}\nstderr:\n{}",
                    stderr()
                ),
            }
        }
    };
    // The digest is the start's last step: its discovery sweep is done.
    read_until(&mut shown, "the start's digest", &|l| {
        l.starts_with("digest ")
    });
    let before = inventory_json(&data);
    assert!(
        local_vault_row(&before, "demo-later").is_none(),
        "demo-later is not written yet"
    );

    // A generated secret written now, near its expiry: the local vault raises NearExpiry at
    // the next tick, and keyturn rotates it, after the start's sweep.
    let mut set = keyturn(&[])
        .args([
            "vault",
            "set",
            "demo-later",
            "--tags",
            "keyturn-kind=generated",
        ])
        .args(["--expires", "+5d", "--data-dir"])
        .arg(&data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("keyturn vault set runs");
    {
        use std::io::Write as _;
        set.stdin
            .take()
            .expect("stdin")
            .write_all(b"a-value-to-be-rotated-away")
            .expect("written");
    }
    assert!(set.wait().expect("exits").success());
    read_until(&mut shown, "demo-later's rotation", &|l| {
        l.contains("  demo-later  rotated to version ")
    });
    read_until(&mut shown, "demo-app-secret's promotion", &|l| {
        l.contains("  demo-app-secret  promoted version ")
    });
    let added = shown
        .iter()
        .find_map(|l| l.split("  demo-app-secret  added credential ").nth(1))
        .and_then(|rest| rest.split('…').next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no credential added for demo-app-secret: {shown:#?}"));

    // Both rotations finished after the start's sweep, hours before the next one: the
    // inventory shows them within the seconds their scans take.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut inventory = inventory_json(&data);
    let current = |inventory: &[Value]| {
        let later = local_vault_row(inventory, "demo-later")
            .is_some_and(|row| expires_beyond(row, 60) && row["managed"] == true);
        let app_secret = local_vault_row(inventory, "demo-app-secret").is_some_and(|row| {
            expires_beyond(row, 60)
                && row["tags"]["keyturn-key-id"]
                    .as_str()
                    .is_some_and(|key| key.starts_with(&added))
        });
        let credential = inventory.iter().any(|c| {
            c["source"]["kind"] == "application"
                && c["handle"]["key_id"]
                    .as_str()
                    .is_some_and(|key| key.starts_with(&added))
                && c["managed"] == true
        });
        let staged = inventory.iter().any(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("keyturn-pending-"))
        });
        later && app_secret && credential && !staged
    };
    while !current(&inventory) {
        assert!(
            std::time::Instant::now() < give_up,
            "the inventory still shows the credentials as they were before the rotations: {inventory:#?}\n{shown:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
        inventory = inventory_json(&data);
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &dev.0.id().to_string()])
        .status();
    assert!(dev.0.wait().expect("exits").success());

    let values = current_values(&data, &["demo-app-secret", "demo-later"]);
    let printed = format!(
        "{}\n{}",
        shown.join("\n"),
        serde_json::to_string(&inventory).expect("JSON")
    );
    for value in &values {
        assert!(value.len() >= 16, "a real secret value was read");
        assert!(
            !printed.contains(value.as_str()),
            "a secret value was printed"
        );
    }
}

#[test]
fn the_local_commands_take_their_data_directory_from_keyturn_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_text = data.display().to_string();
    let env = [("KEYTURN_DATA_DIR", data_text.as_str())];
    let output = keyturn(&env)
        .args(["dev", "--once"])
        .output()
        .expect("keyturn dev runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        data.join("keyturn.db").is_file(),
        "dev used KEYTURN_DATA_DIR"
    );
    for args in [
        &["vault", "list"][..],
        &["directory", "policy"],
        &["plan"],
        &["inventory"],
        &["audit", "list"],
        &["audit", "verify"],
    ] {
        let output = keyturn(&env).args(args).output().expect("runs");
        assert_eq!(
            output.status.code(),
            Some(0),
            "keyturn {args:?} with KEYTURN_DATA_DIR: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let listed = keyturn(&env)
        .args(["vault", "list"])
        .output()
        .expect("runs");
    let list: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(versions_of(&list, "demo-generated"), 2, "{list}");
}

#[test]
fn dev_once_sweeps_discovery_so_the_inventory_lists_the_demo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    let (code, summary) = dev_once(&data, &[]);
    assert_eq!(code, Some(0), "{summary}");

    let output = keyturn(&[])
        .args(["inventory", "--format", "json", "--data-dir"])
        .arg(&data)
        .output()
        .expect("keyturn inventory runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let listed: Vec<(String, String, String)> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|c| {
            (
                c["source"]["kind"].as_str().unwrap_or_default().to_owned(),
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for name in DUE_DEMO_OBJECTS {
        assert!(
            listed
                .iter()
                .any(|(source, n, _)| source == "vault" && n == name),
            "{name} is in the inventory: {listed:?}"
        );
    }
    assert!(
        listed
            .iter()
            .any(|(source, _, kind)| source == "application" && kind == "password_credential"),
        "the demo application's password is in the inventory: {listed:?}"
    );
}
