//! The alert ledger's contract (an alert goes out once across sweeps, restarts and
//! instances): Table storage (Azurite), the local SQLite file and the in-memory double. Each fixture gives two
//! adapters built separately over the same store, as two instances or a restart would.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tempfile::TempDir;

use keyturn::adapters::azure::alert_ledger::TableAlertLedger;
use keyturn::adapters::azure::client::table::{TableClient, TableName};
use keyturn::adapters::local::alert_ledger::LocalAlertLedger;
use keyturn::adapters::local::store::LocalStore;
use keyturn::domain::secret::SecretValue;
use keyturn::ports::alert_ledger::{AlertLedger, LedgerEntry, LedgerKey};
use keyturn_doubles::MemoryAlertLedger;

use super::contract;

const TABLE_ENDPOINT_VARIABLE: &str = "KEYTURN_TEST_TABLE_ENDPOINT";
/// Azurite's published development account key; it opens nothing but a local emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Two views of one ledger, and what keeps it alive.
pub struct Pair {
    first: Arc<dyn AlertLedger>,
    second: Arc<dyn AlertLedger>,
    _dir: Option<TempDir>,
}

async fn local() -> Pair {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keyturn.db");
    let open = || {
        Arc::new(LocalAlertLedger::new(
            LocalStore::open(&path).expect("the store opens"),
        ))
    };
    Pair {
        first: open(),
        second: open(),
        _dir: Some(dir),
    }
}

async fn memory() -> Pair {
    let ledger = MemoryAlertLedger::new();
    Pair {
        first: Arc::new(ledger.clone()),
        second: Arc::new(ledger),
        _dir: None,
    }
}

async fn table() -> Pair {
    let endpoint = std::env::var(TABLE_ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!("{TABLE_ENDPOINT_VARIABLE} is not set: start Azurite via the project's test command (.ci/test)")
    });
    let connection = SecretValue::new(format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
    ));
    let table =
        TableName::parse(&format!("alerts{}", uuid::Uuid::new_v4().simple())).expect("table name");
    let client = || TableClient::from_connection_string(&connection, None).expect("client");
    let first = TableAlertLedger::new(client(), table.clone());
    first
        .ensure_table()
        .await
        .expect("the table is created (is Azurite running?)");
    Pair {
        first: Arc::new(first),
        second: Arc::new(TableAlertLedger::new(client(), table)),
        _dir: None,
    }
}

fn at(days: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .expect("a time")
        .with_timezone(&Utc)
        + TimeDelta::days(days)
}

fn entry(subject: &str, threshold: u32, sent_at: DateTime<Utc>) -> LedgerEntry {
    LedgerEntry {
        key: LedgerKey::of(&[subject, &threshold.to_string(), "ops"]),
        subject: subject.to_owned(),
        route: "ops".to_owned(),
        threshold: Some(threshold),
        sent_at,
    }
}

async fn a_delivery_never_recorded_was_never_sent(pair: Pair) {
    let key = LedgerKey::of(&["never", "sent"]);

    assert_eq!(pair.first.sent(&key).await.expect("read"), None);
}

async fn a_recorded_delivery_is_remembered_by_another_instance(pair: Pair) {
    let sent = entry("credential-a", 14, at(0));

    pair.first.record(&sent).await.expect("recorded");

    assert_eq!(
        pair.second.sent(&sent.key).await.expect("read"),
        Some(at(0))
    );
    let other = entry("credential-a", 7, at(0));
    assert_eq!(pair.second.sent(&other.key).await.expect("read"), None);
}

async fn recording_a_delivery_again_keeps_the_first_record(pair: Pair) {
    let first = entry("credential-b", 30, at(0));
    let again = entry("credential-b", 30, at(1));

    pair.first.record(&first).await.expect("recorded");
    pair.second
        .record(&again)
        .await
        .expect("a repeat is not an error");

    assert_eq!(
        pair.first.sent(&first.key).await.expect("read"),
        Some(at(0))
    );
}

async fn a_digest_without_a_threshold_is_recorded(pair: Pair) {
    let digest = LedgerEntry {
        key: LedgerKey::of(&["digest", "2030-W01", "ops"]),
        subject: "digest".to_owned(),
        route: "ops".to_owned(),
        threshold: None,
        sent_at: at(0),
    };

    pair.first.record(&digest).await.expect("recorded");

    assert_eq!(
        pair.second.sent(&digest.key).await.expect("read"),
        Some(at(0))
    );
}

async fn only_the_first_of_two_instances_recording_one_key_makes_the_record(pair: Pair) {
    let claim = entry("digest-claim", 0, at(0));

    let (first, second) = tokio::join!(pair.first.record(&claim), pair.second.record(&claim));

    let made = [first.expect("recorded"), second.expect("recorded")];
    assert_eq!(
        made.iter().filter(|made| **made).count(),
        1,
        "exactly one record is made: {made:?}"
    );
    assert!(
        !pair.first.record(&claim).await.expect("recorded"),
        "a record stands"
    );
}

async fn a_forgotten_claim_can_be_made_again(pair: Pair) {
    let claim = entry("digest-failed", 0, at(0));
    assert!(pair.first.record(&claim).await.expect("recorded"));

    pair.second.forget(&claim.key).await.expect("forgot");
    pair.second
        .forget(&claim.key)
        .await
        .expect("forgetting again is not an error");

    assert_eq!(pair.first.sent(&claim.key).await.expect("read"), None);
    assert!(pair.second.record(&claim).await.expect("recorded again"));
}

async fn forgetting_removes_only_older_deliveries(pair: Pair) {
    let old = entry("credential-old", 1, at(-400));
    let recent = entry("credential-new", 1, at(-10));
    pair.first.record(&old).await.expect("recorded");
    pair.first.record(&recent).await.expect("recorded");

    let removed = pair.second.forget_before(at(-365)).await.expect("forgot");

    assert_eq!(removed, 1);
    assert_eq!(pair.first.sent(&old.key).await.expect("read"), None);
    assert_eq!(
        pair.first.sent(&recent.key).await.expect("read"),
        Some(at(-10))
    );
}

async fn a_listing_gives_each_delivery_of_the_period_once_across_pages(pair: Pair) {
    let inside: Vec<LedgerEntry> = (0..5)
        .map(|n| entry(&format!("credential-{n}"), 7, at(n * 2)))
        .collect();
    let before = entry("credential-before", 7, at(-1));
    let at_end = entry("credential-at-end", 7, at(10));
    for sent in inside.iter().chain([&before, &at_end]) {
        pair.first.record(sent).await.expect("recorded");
    }

    let mut listed: Vec<LedgerEntry> = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = pair
            .second
            .sent_between(at(0), at(10), next.as_deref(), 2)
            .await
            .expect("listed");
        assert!(page.entries.len() <= 2, "{page:?}");
        listed.extend(page.entries);
        pages += 1;
        assert!(pages <= 10, "the listing ends");
        match page.next {
            Some(token) => next = Some(token),
            None => break,
        }
    }

    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let mut expected = inside;
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(listed, expected);
    assert!(
        pages >= 3,
        "five deliveries in pages of two: {pages} page(s)"
    );
}

async fn a_listing_of_an_empty_period_is_one_empty_page(pair: Pair) {
    pair.first
        .record(&entry("credential-x", 1, at(0)))
        .await
        .expect("recorded");

    let page = pair
        .second
        .sent_between(at(5), at(6), None, 100)
        .await
        .expect("listed");

    assert!(page.entries.is_empty(), "{page:?}");
    assert_eq!(page.next, None);
}

async fn a_page_token_the_ledger_did_not_write_is_refused(pair: Pair) {
    let refused = pair
        .first
        .sent_between(at(0), at(1), Some("not a token"), 10)
        .await
        .expect_err("refused");

    assert_eq!(refused.kind, keyturn::ports::FailureKind::Invalid);
}

macro_rules! ledger_contract {
    ($adapter:ident: $fixture:expr) => {
        contract!($adapter: $fixture =>
            a_delivery_never_recorded_was_never_sent,
            a_recorded_delivery_is_remembered_by_another_instance,
            recording_a_delivery_again_keeps_the_first_record,
            a_digest_without_a_threshold_is_recorded,
            only_the_first_of_two_instances_recording_one_key_makes_the_record,
            a_forgotten_claim_can_be_made_again,
            forgetting_removes_only_older_deliveries,
            a_listing_gives_each_delivery_of_the_period_once_across_pages,
            a_listing_of_an_empty_period_is_one_empty_page,
            a_page_token_the_ledger_did_not_write_is_refused,
        );
    };
}

ledger_contract!(sqlite: super::local());
ledger_contract!(memory: super::memory());
ledger_contract!(table: super::table());
