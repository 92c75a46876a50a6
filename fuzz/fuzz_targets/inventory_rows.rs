//! Inventory and alert ledger rows read back from Table storage: a query answer read as
//! credentials, vaults, findings and snapshots, and a ledger entity read as a delivery.
//! Whatever reads is written again and read back from what was written: the same record.
#![no_main]

use azure_core::http::StatusCode;
use chrono::{DateTime, Datelike, SubsecRound, TimeDelta};
use keyturn::adapters::azure::alert_ledger::TableAlertLedger;
use keyturn::adapters::azure::client::table::{TableClient, TableName};
use keyturn::adapters::azure::inventory::TableInventory;
use keyturn::domain::inventory::CredentialFilter;
use keyturn::ports::alert_ledger::{AlertLedger, ClaimToken, LedgerEntry, LedgerKey};
use keyturn::ports::inventory::{InventoryStore, MAX_PAGE_SIZE};
use keyturn_fuzz::{Scripted, block_on, now};
use keyturn_testkit::transport::FixedToken;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::Arc;
use url::Url;

fn client(transport: &Arc<Scripted>) -> TableClient {
    let endpoint = Url::parse("https://fuzz.table.core.windows.net").expect("valid");
    TableClient::with_token(endpoint, FixedToken::new(), Some(transport.options()))
        .expect("valid client")
}

fn table() -> TableName {
    TableName::parse("inventory").expect("valid")
}

/// An inventory reading only the answers given, in order; then empty listings.
fn inventory(answers: Vec<Vec<u8>>) -> (TableInventory, Arc<Scripted>) {
    let transport = Scripted::new(
        answers.into_iter().map(|a| (StatusCode::Ok, a)),
        (StatusCode::Ok, r#"{"value":[]}"#),
    );
    (TableInventory::new(client(&transport), table()), transport)
}

/// The entities written through `transport`, as a query answer listing them. Every
/// `Edm.DateTime` written is one Table storage holds: 1601-01-01 to 9999-12-31.
/// The entities written into partitions whose key starts with `partition`, as a
/// listing of them answers. Writing an application's client secret also writes its
/// application index row (partition `i` + the app id's first digits); a listing asks the
/// service for its own partitions only, which this transport, answering every query
/// alike, leaves to the harness to select.
fn written(transport: &Scripted, partition: &str) -> Vec<u8> {
    let key = format!("PartitionKey='{partition}");
    let entities: Vec<Value> = transport
        .seen()
        .into_iter()
        .filter(|(method, url, _)| method == "PUT" && url.contains(&key))
        .map(|(_, _, body)| serde_json::from_slice(&body).expect("a written entity is JSON"))
        .collect();
    for entity in &entities {
        if let Some(expires) = entity.get("Expires") {
            let text = expires.as_str().expect("Expires is text");
            let at = DateTime::parse_from_rfc3339(text).expect("Expires is RFC 3339");
            assert!(
                (1601..=9999).contains(&at.year()),
                "Expires {text} is not a Table date"
            );
        }
    }
    serde_json::to_vec(&serde_json::json!({ "value": entities })).expect("JSON")
}

fn ledger(data: &[u8]) {
    let key = LedgerKey::of(&["fuzz"]);
    let transport = Scripted::new(
        [(StatusCode::Ok, data.to_vec())],
        (StatusCode::NotFound, "{}"),
    );
    let _ = block_on(TableAlertLedger::new(client(&transport), table()).sent(&key));

    // A delivery confirmed from the input's text is read back at its time (to the
    // millisecond the ledger keeps).
    let text = String::from_utf8_lossy(data);
    let seconds = data
        .iter()
        .fold(0i64, |acc, b| (acc * 31 + i64::from(*b)) % 400_000_000);
    let entry = LedgerEntry {
        key: LedgerKey::of(&[&text]),
        subject: text.chars().take(200).collect(),
        route: text.chars().rev().take(40).collect(),
        threshold: data.first().map(|b| u32::from(*b)),
        sent_at: now() + TimeDelta::seconds(seconds) + TimeDelta::nanoseconds(seconds),
    };

    // A claim that finds the input standing (the insert answered 409) reads it as a
    // ledger entity: an error, or an answer, never a panic; a bounded number of tries.
    let transport = Scripted::new(
        [
            (StatusCode::Conflict, b"{}".to_vec()),
            (StatusCode::Ok, data.to_vec()),
        ],
        (StatusCode::NotFound, "{}"),
    );
    let _ = block_on(
        TableAlertLedger::new(client(&transport), table()).claim(&entry, TimeDelta::minutes(10)),
    );

    // Confirmed where nothing stands (read: 404), the delivery is inserted as sent.
    let transport = Scripted::new(
        [
            (StatusCode::NotFound, b"{}".to_vec()),
            (StatusCode::NoContent, Vec::new()),
        ],
        (StatusCode::NotFound, "{}"),
    );
    let ledger = TableAlertLedger::new(client(&transport), table());
    if block_on(ledger.confirm(&entry, &ClaimToken::new())).is_err() {
        return;
    }
    let (_, _, body) = transport
        .seen()
        .into_iter()
        .find(|(method, _, _)| method == "POST")
        .expect("the delivery was inserted");
    let transport = Scripted::new([(StatusCode::Ok, body)], (StatusCode::NotFound, "{}"));
    let sent = block_on(TableAlertLedger::new(client(&transport), table()).sent(&entry.key))
        .expect("a confirmed delivery reads back");
    assert_eq!(sent, Some(entry.sent_at.trunc_subsecs(3)));
}

fuzz_target!(|data: &[u8]| {
    block_on(async {
        let filter = CredentialFilter::default();
        let (store, _) = inventory(vec![data.to_vec()]);
        if let Ok(page) = store.credentials(&filter, None, MAX_PAGE_SIZE).await {
            // One at a time: each is one entity written (a page of several of one source
            // is a batch, whose multipart answer this transport does not give).
            let (writer, transport) = inventory(Vec::new());
            let mut all_written = true;
            for credential in &page.items {
                all_written &= writer
                    .put_credentials(std::slice::from_ref(credential))
                    .await
                    .is_ok();
            }
            if all_written {
                let (reader, _) = inventory(vec![written(&transport, "c")]);
                let back = reader
                    .credentials(&filter, None, MAX_PAGE_SIZE)
                    .await
                    .expect("written credentials read back");
                assert_eq!(back.items, page.items);
            }
        }
        let (store, _) = inventory(vec![data.to_vec()]);
        if let Ok(page) = store.vaults(None, MAX_PAGE_SIZE).await {
            let (writer, transport) = inventory(Vec::new());
            let mut all_written = true;
            for vault in &page.items {
                all_written &= writer.put_vault(vault).await.is_ok();
            }
            if all_written {
                let (reader, _) = inventory(vec![written(&transport, "vault")]);
                let back = reader.vaults(None, MAX_PAGE_SIZE).await;
                assert_eq!(back.expect("written vaults read back").items, page.items);
            }
        }
        let (store, _) = inventory(vec![data.to_vec()]);
        if let Ok(page) = store.findings(None, MAX_PAGE_SIZE).await {
            let (writer, transport) = inventory(Vec::new());
            let mut all_written = true;
            for finding in &page.items {
                all_written &= writer.put_finding(finding).await.is_ok();
            }
            if all_written {
                let (reader, _) = inventory(vec![written(&transport, "f")]);
                let back = reader.findings(None, MAX_PAGE_SIZE).await;
                assert_eq!(back.expect("written findings read back").items, page.items);
            }
        }
        let (store, _) = inventory(vec![data.to_vec()]);
        if let Ok(page) = store.snapshots(None, MAX_PAGE_SIZE).await {
            let (writer, transport) = inventory(Vec::new());
            let mut all_written = true;
            for snapshot in &page.items {
                all_written &= writer.put_snapshot(snapshot).await.is_ok();
            }
            if all_written {
                let (reader, _) = inventory(vec![written(&transport, "snapshot")]);
                let back = reader.snapshots(None, MAX_PAGE_SIZE).await;
                assert_eq!(back.expect("written snapshots read back").items, page.items);
            }
        }
    });
    ledger(data);
});
