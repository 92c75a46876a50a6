//! The alert ledger's contract (an alert goes out at least once, and once unless its
//! sender stopped between sending and confirming, across sweeps, restarts and
//! instances): Table storage (Azurite), the local SQLite file and the in-memory double.
//! Each fixture gives two adapters built separately over the same store, as two instances
//! or a restart would, and writes an entry as the ledger did before claims were leases.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use tempfile::TempDir;

use keyturn::adapters::azure::alert_ledger::TableAlertLedger;
use keyturn::adapters::azure::client::table::{EntityKey, TableClient, TableName};
use keyturn::adapters::local::alert_ledger::LocalAlertLedger;
use keyturn::adapters::local::store::LocalStore;
use keyturn::domain::secret::SecretValue;
use keyturn::ports::alert_ledger::{AlertLedger, Claim, ClaimToken, LedgerEntry, LedgerKey};
use keyturn_doubles::MemoryAlertLedger;

use super::contract;

const TABLE_ENDPOINT_VARIABLE: &str = "KEYTURN_TEST_TABLE_ENDPOINT";
/// Azurite's published development account key; it opens nothing but a local emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How an entry written before claims were leases is stored, per adapter.
enum Legacy {
    Sqlite(std::path::PathBuf),
    Memory(MemoryAlertLedger),
    Table(TableClient, TableName),
}

/// Two views of one ledger, and what keeps it alive.
pub struct Pair {
    first: Arc<dyn AlertLedger>,
    second: Arc<dyn AlertLedger>,
    legacy: Legacy,
    _dir: Option<TempDir>,
}

impl Pair {
    /// Stores `entry` as the ledger stored a delivery before claims were leases: the row
    /// the engine inserted before sending, with no state.
    async fn put_legacy(&self, entry: &LedgerEntry) {
        match &self.legacy {
            Legacy::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path).expect("sqlite");
                connection
                    .execute(
                        "INSERT INTO alert_ledger (key, subject, route, threshold, sent_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        rusqlite::params![
                            entry.key.as_str(),
                            entry.subject,
                            entry.route,
                            entry.threshold,
                            entry.sent_at.timestamp_millis()
                        ],
                    )
                    .expect("a legacy row");
            }
            Legacy::Memory(ledger) => ledger.put_legacy(entry),
            Legacy::Table(client, table) => {
                #[derive(serde::Serialize)]
                #[serde(rename_all = "PascalCase")]
                struct Stored<'a> {
                    subject: &'a str,
                    route: &'a str,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    threshold: Option<u32>,
                    sent_at: String,
                }
                let key = |text: &str| EntityKey::parse(text).expect("a table key");
                client
                    .insert(
                        table,
                        &key("alert"),
                        &key(entry.key.as_str()),
                        &Stored {
                            subject: &entry.subject,
                            route: &entry.route,
                            threshold: entry.threshold,
                            sent_at: entry.sent_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                        },
                    )
                    .await
                    .expect("a legacy entity");
            }
        }
    }
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
        legacy: Legacy::Sqlite(path.clone()),
        _dir: Some(dir),
    }
}

async fn memory() -> Pair {
    let ledger = MemoryAlertLedger::new();
    Pair {
        first: Arc::new(ledger.clone()),
        second: Arc::new(ledger.clone()),
        legacy: Legacy::Memory(ledger),
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
        second: Arc::new(TableAlertLedger::new(client(), table.clone())),
        legacy: Legacy::Table(client(), table),
        _dir: None,
    }
}

fn at(days: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .expect("a time")
        .with_timezone(&Utc)
        + TimeDelta::days(days)
}

/// The lease the scenarios claim for.
const LEASE: TimeDelta = TimeDelta::minutes(10);

fn entry(subject: &str, threshold: u32, sent_at: DateTime<Utc>) -> LedgerEntry {
    LedgerEntry {
        key: LedgerKey::of(&[subject, &threshold.to_string(), "ops"]),
        subject: subject.to_owned(),
        route: "ops".to_owned(),
        threshold: Some(threshold),
        sent_at,
    }
}

/// `entry` claimed at its time, at a moment nothing else holds it.
async fn claim(ledger: &dyn AlertLedger, entry: &LedgerEntry) -> ClaimToken {
    match ledger.claim(entry, LEASE).await.expect("claimed") {
        Claim::Made { token, .. } => token,
        other => panic!("the claim is made: {other:?}"),
    }
}

/// `entry` claimed and confirmed at its time, as the engine records a delivery it made.
async fn deliver(ledger: &dyn AlertLedger, entry: &LedgerEntry) {
    let token = claim(ledger, entry).await;
    ledger.confirm(entry, &token).await.expect("confirmed");
}

/// `entry` as of `at` (a claim or confirmation made then).
fn when(entry: &LedgerEntry, at: DateTime<Utc>) -> LedgerEntry {
    LedgerEntry {
        sent_at: at,
        ..entry.clone()
    }
}

async fn a_delivery_never_recorded_was_never_sent(pair: Pair) {
    let key = LedgerKey::of(&["never", "sent"]);

    assert_eq!(pair.first.sent(&key).await.expect("read"), None);
}

async fn a_confirmed_delivery_is_remembered_by_another_instance(pair: Pair) {
    let sent = entry("credential-a", 14, at(0));

    deliver(pair.first.as_ref(), &sent).await;

    assert_eq!(
        pair.second.sent(&sent.key).await.expect("read"),
        Some(at(0))
    );
    let other = entry("credential-a", 7, at(0));
    assert_eq!(pair.second.sent(&other.key).await.expect("read"), None);
}

async fn a_delivery_is_sent_as_of_its_confirmation_not_its_claim(pair: Pair) {
    let claimed = entry("credential-c", 14, at(0));
    let token = claim(pair.first.as_ref(), &claimed).await;
    assert_eq!(
        pair.second.sent(&claimed.key).await.expect("read"),
        None,
        "a claim is not a delivery"
    );

    let confirmed_at = at(0) + TimeDelta::seconds(3);
    pair.first
        .confirm(&when(&claimed, confirmed_at), &token)
        .await
        .expect("confirmed");

    assert_eq!(
        pair.second.sent(&claimed.key).await.expect("read"),
        Some(confirmed_at)
    );
}

async fn confirming_a_delivery_again_keeps_the_first_confirmation(pair: Pair) {
    let first = entry("credential-b", 30, at(0));
    deliver(pair.first.as_ref(), &first).await;

    let again = when(&first, at(1));
    assert_eq!(
        pair.second.claim(&again, LEASE).await.expect("claimed"),
        Claim::Sent { at: at(0) },
        "a sent delivery is not claimed again"
    );
    pair.second
        .confirm(&again, &ClaimToken::new())
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

    deliver(pair.first.as_ref(), &digest).await;

    assert_eq!(
        pair.second.sent(&digest.key).await.expect("read"),
        Some(at(0))
    );
}

async fn only_one_of_two_instances_claiming_one_key_at_once_makes_the_claim(pair: Pair) {
    let claim = entry("digest-claim", 0, at(0));

    let (first, second) = tokio::join!(
        pair.first.claim(&claim, LEASE),
        pair.second.claim(&claim, LEASE)
    );

    let claims = [first.expect("claimed"), second.expect("claimed")];
    assert_eq!(
        claims
            .iter()
            .filter(|c| matches!(
                c,
                Claim::Made {
                    taken_over: false,
                    ..
                }
            ))
            .count(),
        1,
        "exactly one claim is made: {claims:?}"
    );
    assert!(
        claims.contains(&Claim::Held {
            until: at(0) + LEASE
        }),
        "the other finds it held for the lease: {claims:?}"
    );
    assert_eq!(
        pair.first.claim(&claim, LEASE).await.expect("claimed"),
        Claim::Held {
            until: at(0) + LEASE
        },
        "a claim stands"
    );
}

async fn a_live_claim_blocks_a_second_claimer(pair: Pair) {
    let claimed = entry("credential-live", 7, at(0));
    claim(pair.first.as_ref(), &claimed).await;

    let later = when(&claimed, at(0) + LEASE - TimeDelta::seconds(1));
    let second = pair.second.claim(&later, LEASE).await.expect("claimed");

    assert_eq!(
        second,
        Claim::Held {
            until: at(0) + LEASE
        }
    );
    assert_eq!(pair.second.sent(&claimed.key).await.expect("read"), None);
}

async fn an_expired_claim_is_taken_over_by_exactly_one_of_two_concurrent_claimers(pair: Pair) {
    let claimed = entry("credential-stopped", 7, at(0));
    let stopped = claim(pair.first.as_ref(), &claimed).await;

    // The lease has run out: the first claimer stopped without confirming.
    let later = at(0) + LEASE + TimeDelta::seconds(1);
    let retry = when(&claimed, later);
    let (first, second) = tokio::join!(
        pair.first.claim(&retry, LEASE),
        pair.second.claim(&retry, LEASE)
    );

    let claims = [first.expect("claimed"), second.expect("claimed")];
    let winners: Vec<&Claim> = claims
        .iter()
        .filter(|c| matches!(c, Claim::Made { .. }))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one takes it over: {claims:?}");
    let Claim::Made {
        token,
        until,
        taken_over,
    } = winners[0].clone()
    else {
        unreachable!("filtered on Made")
    };
    assert!(taken_over, "{claims:?}");
    assert_eq!(until, later + LEASE);
    assert!(
        claims.contains(&Claim::Held { until }),
        "the other finds the new claim: {claims:?}"
    );

    // The stopped claimer coming back to release its claim leaves the new one alone.
    pair.first
        .release(&claimed.key, &stopped)
        .await
        .expect("not an error");
    assert_eq!(
        pair.second.claim(&retry, LEASE).await.expect("claimed"),
        Claim::Held { until }
    );
    pair.second
        .confirm(&when(&claimed, later), &token)
        .await
        .expect("confirmed");
    assert_eq!(
        pair.first.sent(&claimed.key).await.expect("read"),
        Some(later)
    );
}

async fn a_sent_entry_is_never_taken_over(pair: Pair) {
    let sent = entry("credential-sent", 1, at(0));
    deliver(pair.first.as_ref(), &sent).await;

    let much_later = when(&sent, at(0) + LEASE * 100);
    let (first, second) = tokio::join!(
        pair.first.claim(&much_later, LEASE),
        pair.second.claim(&much_later, LEASE)
    );

    assert_eq!(first.expect("claimed"), Claim::Sent { at: at(0) });
    assert_eq!(second.expect("claimed"), Claim::Sent { at: at(0) });
    assert_eq!(pair.first.sent(&sent.key).await.expect("read"), Some(at(0)));
}

async fn an_entry_from_before_leases_reads_as_sent(pair: Pair) {
    let legacy = entry("credential-legacy", 14, at(0));
    pair.put_legacy(&legacy).await;

    assert_eq!(
        pair.first.sent(&legacy.key).await.expect("read"),
        Some(at(0))
    );
    assert_eq!(
        pair.second
            .claim(&when(&legacy, at(1)), LEASE)
            .await
            .expect("claimed"),
        Claim::Sent { at: at(0) },
        "never sent again"
    );
    let page = pair
        .second
        .sent_between(at(0), at(1), None, 10)
        .await
        .expect("listed");
    assert_eq!(page.entries, vec![legacy]);
}

async fn a_released_claim_can_be_made_again(pair: Pair) {
    let claimed = entry("digest-failed", 0, at(0));
    let token = claim(pair.first.as_ref(), &claimed).await;

    pair.second
        .release(&claimed.key, &ClaimToken::new())
        .await
        .expect("releasing another's claim is not an error");
    assert!(
        matches!(
            pair.second.claim(&claimed, LEASE).await.expect("claimed"),
            Claim::Held { .. }
        ),
        "a claim is released only by its holder"
    );
    pair.second
        .release(&claimed.key, &token)
        .await
        .expect("released");
    pair.second
        .release(&claimed.key, &token)
        .await
        .expect("releasing again is not an error");

    assert_eq!(pair.first.sent(&claimed.key).await.expect("read"), None);
    assert!(matches!(
        pair.second
            .claim(&claimed, LEASE)
            .await
            .expect("claimed again"),
        Claim::Made {
            taken_over: false,
            ..
        }
    ));
}

async fn forgetting_removes_only_older_deliveries(pair: Pair) {
    let old = entry("credential-old", 1, at(-400));
    let recent = entry("credential-new", 1, at(-10));
    let old_claim = entry("credential-old-claim", 1, at(-400));
    deliver(pair.first.as_ref(), &old).await;
    deliver(pair.first.as_ref(), &recent).await;
    claim(pair.first.as_ref(), &old_claim).await;

    let removed = pair.second.forget_before(at(-365)).await.expect("forgot");

    assert_eq!(removed, 2, "the old delivery and the old claim");
    assert_eq!(pair.first.sent(&old.key).await.expect("read"), None);
    assert_eq!(
        pair.first.sent(&recent.key).await.expect("read"),
        Some(at(-10))
    );
    assert!(matches!(
        pair.first
            .claim(&when(&old_claim, at(0)), LEASE)
            .await
            .expect("claimed"),
        Claim::Made {
            taken_over: false,
            ..
        }
    ));
}

async fn a_listing_gives_each_delivery_of_the_period_once_across_pages(pair: Pair) {
    let inside: Vec<LedgerEntry> = (0..5)
        .map(|n| entry(&format!("credential-{n}"), 7, at(n * 2)))
        .collect();
    let before = entry("credential-before", 7, at(-1));
    let at_end = entry("credential-at-end", 7, at(10));
    for sent in inside.iter().chain([&before, &at_end]) {
        deliver(pair.first.as_ref(), sent).await;
    }

    let listed = list(pair.second.as_ref(), at(0), at(10), 2).await;

    let mut expected = inside;
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(listed.entries, expected);
    assert!(
        listed.pages >= 3,
        "five deliveries in pages of two: {} page(s)",
        listed.pages
    );
}

async fn a_listing_leaves_out_claims_live_or_expired(pair: Pair) {
    let sent = entry("credential-listed", 7, at(1));
    let live = entry("credential-sending", 7, at(2));
    let stopped = entry("credential-stopped", 7, at(3) - LEASE * 2);
    deliver(pair.first.as_ref(), &sent).await;
    claim(pair.first.as_ref(), &live).await;
    claim(pair.second.as_ref(), &stopped).await;

    let listed = list(pair.second.as_ref(), at(0), at(5), 1).await;

    assert_eq!(listed.entries, vec![sent]);
}

/// A listing followed to its end, in key order, and how many pages it took.
struct Listed {
    entries: Vec<LedgerEntry>,
    pages: usize,
}

async fn list(
    ledger: &dyn AlertLedger,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u32,
) -> Listed {
    let mut entries: Vec<LedgerEntry> = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = ledger
            .sent_between(from, to, next.as_deref(), limit)
            .await
            .expect("listed");
        assert!(page.entries.len() <= limit as usize, "{page:?}");
        entries.extend(page.entries);
        pages += 1;
        assert!(pages <= 10, "the listing ends");
        match page.next {
            Some(token) => next = Some(token),
            None => break,
        }
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Listed { entries, pages }
}

async fn a_listing_of_an_empty_period_is_one_empty_page(pair: Pair) {
    deliver(pair.first.as_ref(), &entry("credential-x", 1, at(0))).await;

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
            a_confirmed_delivery_is_remembered_by_another_instance,
            a_delivery_is_sent_as_of_its_confirmation_not_its_claim,
            confirming_a_delivery_again_keeps_the_first_confirmation,
            a_digest_without_a_threshold_is_recorded,
            only_one_of_two_instances_claiming_one_key_at_once_makes_the_claim,
            a_live_claim_blocks_a_second_claimer,
            an_expired_claim_is_taken_over_by_exactly_one_of_two_concurrent_claimers,
            a_sent_entry_is_never_taken_over,
            an_entry_from_before_leases_reads_as_sent,
            a_released_claim_can_be_made_again,
            forgetting_removes_only_older_deliveries,
            a_listing_gives_each_delivery_of_the_period_once_across_pages,
            a_listing_leaves_out_claims_live_or_expired,
            a_listing_of_an_empty_period_is_one_empty_page,
            a_page_token_the_ledger_did_not_write_is_refused,
        );
    };
}

ledger_contract!(sqlite: super::local());
ledger_contract!(memory: super::memory());
ledger_contract!(table: super::table());
