//! `keyturn audit list` and `keyturn audit export` through the binary, against the
//! store `keyturn dev --once` leaves in a data directory.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::helpers::keyturn;

/// A value only the test knows, set in the vault and rotated by keyturn: no export
/// may print it.
const CANARY: &str = "canary-value-5d1c9a0e-never-printed";
const CANARY_NAME: &str = "audit-canary";

/// A data directory after two local runs: the demo's rotations, then a secret holding
/// the canary value rotated as well.
fn populated() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    dev_once(&data);
    let mut set = keyturn(&[])
        .args([
            "vault",
            "set",
            CANARY_NAME,
            "--tags",
            "keyturn-kind=generated",
            "--expires",
            "+1d",
            "--data-dir",
        ])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("keyturn vault set runs");
    set.stdin
        .take()
        .expect("stdin")
        .write_all(CANARY.as_bytes())
        .expect("value written");
    assert!(set.wait_with_output().expect("finishes").status.success());
    dev_once(&data);
    (dir, data)
}

fn dev_once(data: &Path) {
    let output = keyturn(&[])
        .args(["dev", "--once", "--data-dir"])
        .arg(data)
        .output()
        .expect("keyturn dev runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

fn audit(data: &Path, args: &[&str]) -> Output {
    keyturn(&[])
        .args(["audit"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("keyturn audit runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_lines(output: &Output) -> Vec<Value> {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect()
}

#[test]
fn export_prints_each_entry_as_one_json_line_with_its_own_fields() {
    let (_dir, data) = populated();

    let entries = json_lines(&audit(&data, &["export"]));

    assert!(entries.len() > 10, "{entries:?}");
    for (index, entry) in entries.iter().enumerate() {
        assert_eq!(
            entry["sequence"],
            index as u64 + 1,
            "in order, none left out"
        );
        for field in ["time", "actor_kind", "actor", "action", "outcome"] {
            assert!(entry[field].is_string(), "{field} in {entry}");
        }
        for field in ["prev_hash", "hash"] {
            assert_eq!(entry[field].as_str().map(str::len), Some(64), "{entry}");
        }
    }
    for pair in entries.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "the chain links");
    }
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "secret.rotated" && e["secret_name"] == CANARY_NAME),
        "the canary's rotation is recorded"
    );
    assert!(entries.iter().any(|e| e["invocation_id"].is_string()));
}

#[test]
fn no_format_ever_prints_a_secret_value() {
    let (_dir, data) = populated();

    for format in ["json", "csv", "table"] {
        for command in ["list", "export"] {
            let output = audit(&data, &[command, "--format", format]);
            assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
            let text = stdout(&output);
            assert!(text.contains(CANARY_NAME), "{command} {format} names it");
            assert!(
                !text.contains(CANARY),
                "{command} {format} printed the value"
            );
            assert!(!stderr(&output).contains(CANARY));
        }
    }
}

#[test]
fn filters_select_by_action_object_identity_outcome_and_time() {
    let (_dir, data) = populated();
    let all = json_lines(&audit(&data, &["export"]));
    let selected = |args: &[&str]| {
        let mut full = vec!["export"];
        full.extend_from_slice(args);
        json_lines(&audit(&data, &full))
    };

    let rotated = selected(&["--action", "secret.rotated", "--object", CANARY_NAME]);
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(rotated[0]["secret_name"], CANARY_NAME);

    let several = selected(&["--action", "secret.rotated", "--action", "job.received"]);
    let expected = all
        .iter()
        .filter(|e| e["action"] == "secret.rotated" || e["action"] == "job.received")
        .count();
    assert_eq!(several.len(), expected);
    assert!(expected > 1);

    let actor = all[0]["actor"].as_str().expect("actor");
    let by_actor = selected(&["--identity", actor]);
    assert_eq!(
        by_actor.len(),
        all.iter().filter(|e| e["actor"] == actor).count()
    );
    assert!(by_actor.iter().all(|e| e["actor"] == actor));

    let succeeded = selected(&["--outcome", "succeeded"]);
    assert!(!succeeded.is_empty());
    assert!(succeeded.iter().all(|e| e["outcome"] == "succeeded"));
    assert!(succeeded.len() < all.len() || all.iter().all(|e| e["outcome"] == "succeeded"));

    // Every entry of the second run is stamped at or after the canary's rotation
    // began; the time range splits the log there.
    let split = rotated[0]["time"].as_str().expect("time");
    let after = selected(&["--since", split]);
    let before = selected(&["--until", split]);
    assert_eq!(after.len() + before.len(), all.len());
    assert!(!after.is_empty() && !before.is_empty());
    assert!(after.iter().all(|e| e["time"].as_str() >= Some(split)));
    assert!(before.iter().all(|e| e["time"].as_str() < Some(split)));
}

#[test]
fn list_pages_with_limit_and_from_sequence() {
    let (_dir, data) = populated();
    let all = json_lines(&audit(&data, &["export"]));

    let first = audit(&data, &["list", "--format", "json", "--limit", "3"]);
    let page = json_lines(&first);
    assert_eq!(page, all[..3]);
    assert!(
        stderr(&first).contains("--from-sequence 4"),
        "{}",
        stderr(&first)
    );

    let rest = json_lines(&audit(&data, &["export", "--from-sequence", "4"]));
    assert_eq!(rest, all[3..]);
}

#[test]
fn csv_has_a_header_and_one_row_per_entry_and_table_one_line_per_entry() {
    let (_dir, data) = populated();
    let all = json_lines(&audit(&data, &["export"]));

    let csv = stdout(&audit(&data, &["export", "--format", "csv"]));
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some(
            "chain,sequence,time,actor_kind,actor,action,vault,secret_name,secret_version,app_id,\
             key_id,thumbprint,outcome,reason,invocation_id,count,prev_hash,hash,unreadable"
        )
    );
    assert_eq!(rows.count(), all.len());

    let table = stdout(&audit(&data, &["list"]));
    let mut lines = table.lines();
    assert!(lines.next().expect("a header").starts_with("CHAIN"));
    assert_eq!(lines.count(), all.len());
}

/// A second writer's chain in the local store `keyturn dev` left: `count` denied
/// `secret.read` entries naming `writer-<n>`.
async fn write_second_chain(data: &Path, chain: &str, count: u32) {
    use keyturn::adapters::local::audit::LocalAuditStore;
    use keyturn::adapters::local::store::LocalStore;
    use keyturn::audit::{Actor, AuditLog, AuditText, Outcome};
    use keyturn::ports::audit::{AuditRecord, ChainId};

    let store = LocalStore::open(data.join("keyturn.db")).expect("the store opens");
    let chain = ChainId::parse(chain).expect("a chain name");
    let log = AuditLog::new(std::sync::Arc::new(LocalAuditStore::with_chain(
        store, chain,
    )));
    let text = |value: &str| AuditText::parse(value).expect("audit text");
    for index in 0..count {
        let mut record = AuditRecord::new(
            chrono::Utc::now(),
            Actor::Identity(text("sha256:second-writer")),
            text("secret.read"),
            Outcome::Denied,
        );
        record.object.secret_name = Some(text(&format!("writer-{index}")));
        log.append(record).await.expect("append");
    }
}

#[tokio::test]
async fn every_writers_chain_is_listed_exported_filtered_and_paged() {
    let (_dir, data) = populated();
    let first = json_lines(&audit(&data, &["export"]));
    let second = "w-0123456789abcdef0123456789abcdef";
    write_second_chain(&data, second, 5).await;

    let all = json_lines(&audit(&data, &["export"]));
    assert_eq!(all.len(), first.len() + 5, "both chains are exported");
    let (default, other): (Vec<_>, Vec<_>) = all.iter().partition(|e| e["chain"] != second);
    assert!(default.iter().all(|e| e["chain"] == "chain"), "{default:?}");
    for (chain, entries) in [("default", &default), (second, &other)] {
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(entry["sequence"], index as u64 + 1, "{chain}: {entry}");
        }
        for pair in entries.windows(2) {
            assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "{chain} links");
        }
    }
    assert_eq!(other.len(), 5);

    let denied = json_lines(&audit(
        &data,
        &[
            "export",
            "--identity",
            "sha256:second-writer",
            "--outcome",
            "denied",
        ],
    ));
    assert_eq!(denied.len(), 5, "filters reach the second chain");
    assert!(denied.iter().all(|e| e["chain"] == second));

    let page = audit(
        &data,
        &["export", "--limit", &(first.len() + 2).to_string()],
    );
    assert_eq!(json_lines(&page), all[..first.len() + 2]);
    assert!(
        stderr(&page).contains(&format!("--from-chain {second} --from-sequence 3")),
        "{}",
        stderr(&page)
    );
    let rest = json_lines(&audit(
        &data,
        &["export", "--from-chain", second, "--from-sequence", "3"],
    ));
    assert_eq!(rest, all[first.len() + 2..]);

    let csv = stdout(&audit(&data, &["export", "--format", "csv"]));
    assert_eq!(
        csv.lines()
            .filter(|row| row.starts_with(&format!("{second},")))
            .count(),
        5
    );
    let table = stdout(&audit(&data, &["list"]));
    assert_eq!(table.lines().filter(|l| l.starts_with(second)).count(), 5);
}

#[test]
fn reading_a_directory_without_a_store_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("mistyped");

    for command in ["list", "export"] {
        let output = audit(&missing, &[command]);
        assert_eq!(output.status.code(), Some(2));
        assert!(
            stderr(&output).contains("holds no keyturn store"),
            "{}",
            stderr(&output)
        );
    }
    assert!(!missing.exists());

    let bad = audit(&missing, &["list", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("RFC 3339"), "{}", stderr(&bad));
}

/// Azurite's well-known development account key, published in Microsoft's Azurite
/// documentation; it opens nothing but a local emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[tokio::test]
async fn export_reads_a_table_named_on_the_command_line() {
    use keyturn::adapters::azure::audit::TableAuditStore;
    use keyturn::adapters::azure::client::table::{TableClient, TableName};
    use keyturn::audit::{Actor, AuditLog, AuditText, Outcome};
    use keyturn::domain::secret::SecretValue;
    use keyturn::ports::audit::AuditRecord;

    let endpoint = std::env::var("KEYTURN_TEST_TABLE_ENDPOINT").unwrap_or_else(|_| {
        panic!("KEYTURN_TEST_TABLE_ENDPOINT is not set: start Azurite via the project's test command (.ci/test)")
    });
    let connection_string = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
    );
    let client =
        TableClient::from_connection_string(&SecretValue::new(connection_string.clone()), None)
            .expect("a valid connection string");
    let name = format!("auditcli{}", uuid::Uuid::new_v4().simple());
    let table = TableName::parse(&name).expect("a valid table name");
    let store = TableAuditStore::new(client, table);
    store.ensure_table().await.expect("table created");
    let second = keyturn::ports::audit::ChainId::parse("w-5e60d").expect("a chain name");
    let other = AuditLog::new(
        keyturn::ports::audit::AuditStore::for_chain(&store, &second).expect("chains"),
    );
    let log = AuditLog::new(std::sync::Arc::new(store));
    let text = |value: &str| AuditText::parse(value).expect("audit text");
    for index in 0..7u32 {
        let mut record = AuditRecord::new(
            chrono::Utc::now(),
            Actor::Identity(text("sha256:abc")),
            text("secret.read"),
            if index % 2 == 0 {
                Outcome::Succeeded
            } else {
                Outcome::Denied
            },
        );
        record.object.secret_name = Some(text(&format!("name-{index}")));
        record.count = (index == 3).then_some(42);
        log.append(record).await.expect("append");
    }
    for index in 0..2u32 {
        let mut record = AuditRecord::new(
            chrono::Utc::now(),
            Actor::Identity(text("sha256:other")),
            text("secret.read"),
            Outcome::Succeeded,
        );
        record.object.secret_name = Some(text(&format!("other-{index}")));
        other.append(record).await.expect("append");
    }

    let everything = keyturn(&[("KEYTURN_TABLE_CONNECTION_STRING", &connection_string)])
        .args(["audit", "export", "--table", &name])
        .output()
        .expect("keyturn audit export runs");
    let everything = json_lines(&everything);
    let chains: Vec<(&str, u64)> = everything
        .iter()
        .filter_map(|e| Some((e["chain"].as_str()?, e["sequence"].as_u64()?)))
        .collect();
    assert_eq!(chains.len(), 9, "both chains of the table: {chains:?}");
    assert_eq!(chains[7..], [("w-5e60d", 1), ("w-5e60d", 2)]);

    let output = keyturn(&[("KEYTURN_TABLE_CONNECTION_STRING", &connection_string)])
        .args(["audit", "export", "--table", &name, "--outcome", "denied"])
        .output()
        .expect("keyturn audit export runs");

    let entries = json_lines(&output);
    let sequences: Vec<u64> = entries
        .iter()
        .filter_map(|e| e["sequence"].as_u64())
        .collect();
    assert_eq!(sequences, [2, 4, 6]);
    assert_eq!(entries[1]["count"], 42);
    assert_eq!(entries[1]["secret_name"], "name-3");
    assert!(
        stderr(&output).contains("(44 occurrences)"),
        "{}",
        stderr(&output)
    );
}
