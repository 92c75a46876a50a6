//! The object lease's contract (what fences two instances off one object): Table storage
//! (Azurite) and the local SQLite file. Each fixture gives two adapters built separately
//! over the same store, as two instances would have.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tempfile::TempDir;

use keyturn::adapters::azure::client::table::{TableClient, TableName};
use keyturn::adapters::azure::lease::TableLeases;
use keyturn::adapters::local::lease::LocalLeases;
use keyturn::adapters::local::store::LocalStore;
use keyturn::domain::secret::SecretValue;
use keyturn::ports::FailureKind;
use keyturn::ports::lease::{ObjectLeases, lease_key};

use super::contract;

const TABLE_ENDPOINT_VARIABLE: &str = "KEYTURN_TEST_TABLE_ENDPOINT";
/// Azurite's published development account key; it opens nothing but a local emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Two instances' views of one lease store, and what keeps it alive.
pub struct Pair {
    first: Arc<dyn ObjectLeases>,
    second: Arc<dyn ObjectLeases>,
    _dir: Option<TempDir>,
}

async fn local() -> Pair {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keyturn.db");
    let open = || {
        Arc::new(LocalLeases::new(
            LocalStore::open(&path).expect("the store opens"),
        ))
    };
    Pair {
        first: open(),
        second: open(),
        _dir: Some(dir),
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
        TableName::parse(&format!("leases{}", uuid::Uuid::new_v4().simple())).expect("table name");
    let client = || TableClient::from_connection_string(&connection, None).expect("client");
    let first = TableLeases::new(client(), table.clone());
    first
        .ensure_table()
        .await
        .expect("the table is created (is Azurite running?)");
    Pair {
        first: Arc::new(first),
        second: Arc::new(TableLeases::new(client(), table)),
        _dir: None,
    }
}

fn key() -> String {
    lease_key(&format!(
        "kv-test.vault.azure.net/secrets/{}",
        uuid::Uuid::new_v4()
    ))
}

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .expect("a time")
        .with_timezone(&Utc)
        + TimeDelta::minutes(minutes)
}

async fn a_running_lease_is_refused_to_another_holder(pair: Pair) {
    let key = key();
    let lease = pair
        .first
        .acquire(&key, "a", at(0), at(10))
        .await
        .expect("free");
    assert_eq!(lease.token, 1);
    let refused = pair.second.acquire(&key, "b", at(5), at(15)).await;
    assert_eq!(
        refused.expect_err("still running").kind,
        FailureKind::Conflict
    );
    pair.first
        .confirm(&lease, at(20))
        .await
        .expect("still current");
}

async fn a_lease_taken_over_fences_its_old_holder(pair: Pair) {
    let key = key();
    let old = pair
        .first
        .acquire(&key, "a", at(0), at(10))
        .await
        .expect("free");
    let new = pair
        .second
        .acquire(&key, "b", at(11), at(21))
        .await
        .expect("ran out, so it is taken over");
    assert!(new.token > old.token, "{} then {}", old.token, new.token);
    let fenced = pair.first.confirm(&old, at(30)).await;
    assert_eq!(fenced.expect_err("taken over").kind, FailureKind::Conflict);
    // The old holder's release gives nothing away: the new holder still holds it.
    pair.first.release(&old).await.expect("a no-op");
    let refused = pair.first.acquire(&key, "a", at(12), at(22)).await;
    assert_eq!(refused.expect_err("b holds it").kind, FailureKind::Conflict);
    pair.second
        .confirm(&new, at(30))
        .await
        .expect("b still holds it");
}

async fn a_confirmation_extends_the_lease(pair: Pair) {
    let key = key();
    let lease = pair
        .first
        .acquire(&key, "a", at(0), at(10))
        .await
        .expect("free");
    pair.first.confirm(&lease, at(30)).await.expect("current");
    let refused = pair.second.acquire(&key, "b", at(20), at(40)).await;
    assert_eq!(
        refused.expect_err("extended to 30").kind,
        FailureKind::Conflict
    );
}

async fn a_released_lease_is_free_and_tokens_keep_growing(pair: Pair) {
    let key = key();
    let first = pair
        .first
        .acquire(&key, "a", at(0), at(10))
        .await
        .expect("free");
    pair.first.release(&first).await.expect("released");
    let second = pair
        .second
        .acquire(&key, "b", at(1), at(11))
        .await
        .expect("released, so free");
    assert!(second.token > first.token);
    let fenced = pair.first.confirm(&first, at(12)).await;
    assert_eq!(fenced.expect_err("given back").kind, FailureKind::Conflict);
    pair.second.release(&second).await.expect("released");
    let third = pair
        .first
        .acquire(&key, "a", at(2), at(12))
        .await
        .expect("free");
    assert!(third.token > second.token);
}

async fn of_racing_acquirers_one_wins(pair: Pair) {
    let key = key();
    let mut racers = Vec::new();
    for holder in 0..8 {
        let leases = if holder % 2 == 0 {
            pair.first.clone()
        } else {
            pair.second.clone()
        };
        let key = key.clone();
        racers.push(tokio::spawn(async move {
            leases
                .acquire(&key, &format!("holder-{holder}"), at(0), at(10))
                .await
        }));
    }
    let mut won = Vec::new();
    for racer in racers {
        match racer.await.expect("joined") {
            Ok(lease) => won.push(lease),
            Err(error) => assert_eq!(error.kind, FailureKind::Conflict, "{error}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
}

macro_rules! lease_contract {
    ($adapter:ident: $fixture:expr) => {
        contract!($adapter: $fixture =>
            a_running_lease_is_refused_to_another_holder,
            a_lease_taken_over_fences_its_old_holder,
            a_confirmation_extends_the_lease,
            a_released_lease_is_free_and_tokens_keep_growing,
            of_racing_acquirers_one_wins,
        );
    };
}

lease_contract!(sqlite: super::local());
lease_contract!(table: super::table());
