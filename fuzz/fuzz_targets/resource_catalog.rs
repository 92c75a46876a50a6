//! Resource Manager's listing answers as discovery reads them: the subscriptions the
//! identity can see and one subscription's Key Vaults with their properties.
#![no_main]

use azure_core::http::StatusCode;
use keyturn::adapters::azure::client::resource_manager::ResourceManagerClient;
use keyturn::domain::ids::SubscriptionId;
use keyturn::domain::inventory::{FindingKind, MAX_FINDING_DETAIL_CHARS, Scope};
use keyturn::ports::catalog::ResourceCatalog;
use keyturn_fuzz::{FuzzedAnswer, assert_json_round_trip, block_on, stamp};
use keyturn_testkit::transport::FixedToken;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use url::Url;

const SUBSCRIPTION: &str = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345";

fn client(data: &[u8]) -> ResourceManagerClient {
    let answer = FuzzedAnswer::new(data, (StatusCode::NotFound, "{}"));
    let endpoint = Url::parse("https://management.azure.com").expect("valid");
    ResourceManagerClient::new(&endpoint, FixedToken::new(), Some(answer.options()))
        .expect("valid client")
}

/// How many entries the answer lists, when it is a page at all. (Read from the text made
/// valid UTF-8: serde skips a field it ignores without checking its UTF-8.)
fn listed(data: &[u8]) -> Option<usize> {
    let value: Value = serde_json::from_str(&String::from_utf8_lossy(data)).ok()?;
    Some(value.get("value")?.as_array()?.len())
}

fuzz_target!(|data: &[u8]| {
    let subscription = SubscriptionId::parse(SUBSCRIPTION).expect("valid");
    let stamp = stamp();
    block_on(async {
        if let Ok(page) = client(data).subscriptions(None, &stamp).await {
            // Every listed subscription is read or recorded as a malformed finding on the
            // tenant: none is dropped.
            assert_eq!(
                page.items.len() + page.findings.len(),
                listed(data).unwrap_or(0),
                "a listed subscription was dropped"
            );
            assert!(page.findings.iter().all(|f| f.scope == Scope::Tenant));
            if let Some(next) = &page.next {
                // Following the link is a request or a refusal, never a panic.
                let _ = client(data).subscriptions(Some(next), &stamp).await;
            }
        }
        if let Ok(page) = client(data).vaults(&subscription, None, &stamp).await {
            // Every listed vault is read or recorded as a finding: none is lost.
            assert_eq!(
                page.items.len() + page.findings.len(),
                listed(data).unwrap_or(0),
                "a listed vault was dropped"
            );
            for vault in &page.items {
                assert_eq!(vault.subscription, Some(subscription));
                assert_eq!(vault.sweep, stamp.sweep);
                assert_eq!(vault.id(), vault.source().key());
                assert_json_round_trip(vault);
            }
            for finding in &page.findings {
                assert_eq!(finding.kind, FindingKind::Malformed);
                assert_eq!(finding.scope, Scope::Subscription { subscription });
                assert!(finding.detail.chars().count() <= MAX_FINDING_DETAIL_CHARS);
                assert_json_round_trip(finding);
            }
            if let Some(next) = &page.next {
                let _ = client(data).vaults(&subscription, Some(next), &stamp).await;
            }
        }
    });
});
