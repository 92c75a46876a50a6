//! `keyturn plan` against the local store: what the sweep would do, read-only.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Duration, SubsecRound, Utc};
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
fn plan_refuses_a_missing_data_dir_and_azure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("typo");
    let (code, stdout, stderr) = plan(&missing, "table");
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stderr.contains("holds no keyturn data"), "{stderr}");
    assert!(!missing.exists(), "nothing is created");

    let azure = keyturn(&[("KEYTURN_BACKEND", "azure")])
        .args(["plan", "--data-dir"])
        .arg(&missing)
        .output()
        .expect("runs");
    assert_eq!(azure.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&azure.stderr);
    assert!(stderr.contains("only the local store"), "{stderr}");
    assert!(!missing.exists());
}
