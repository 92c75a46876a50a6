//! Key Vault's answers as discovery reads them, metadata only: the secret, certificate
//! and key lists, a certificate with its policy, and a key with its rotation policy (the
//! two answers of a key read are the input cut at its first NUL).
#![no_main]

use azure_core::http::StatusCode;
use keyturn::adapters::azure::vault_catalog::{KEY_VAULT_SCOPE, KeyVaultCatalog};
use keyturn::domain::inventory::{
    CredentialHandle, CredentialKind, CredentialSource, FindingKind, MAX_FINDING_DETAIL_CHARS,
    Scope,
};
use keyturn::domain::names::{VaultName, VaultUrl};
use keyturn::ports::catalog::{ObjectKind, VaultCatalog, VaultRef};
use keyturn_fuzz::{Scripted, assert_json_round_trip, block_on, parts, stamp};
use keyturn_testkit::transport::FixedToken;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn catalog(answers: &[&[u8]]) -> KeyVaultCatalog {
    let transport = Scripted::new(
        answers.iter().map(|a| (StatusCode::Ok, a.to_vec())),
        (StatusCode::NotFound, "{}"),
    );
    KeyVaultCatalog::new(
        FixedToken::new(),
        KEY_VAULT_SCOPE,
        Some(transport.options()),
    )
}

/// The entries the answer lists, when it is a page at all. (Read from the text made
/// valid UTF-8: serde skips a field it ignores without checking its UTF-8.)
fn listed(data: &[u8]) -> Option<Vec<Value>> {
    let value: Value = serde_json::from_str(&String::from_utf8_lossy(data)).ok()?;
    value.get("value")?.as_array().cloned()
}

fuzz_target!(|data: &[u8]| {
    let vault = VaultRef {
        subscription: None,
        name: "fuzz".parse::<VaultName>().expect("valid"),
        uri: VaultUrl::parse("https://fuzz.vault.azure.net").expect("valid"),
    };
    let stamp = stamp();
    let answers = parts(data, 2);
    block_on(async {
        for kind in ObjectKind::ALL {
            let Ok(page) = catalog(&answers[..1])
                .objects(&vault, kind, None, &stamp)
                .await
            else {
                continue;
            };
            // Every listed item is read, recorded as a finding, or a certificate's own
            // secret or key (`managed`), listed with the certificate.
            let listed = listed(answers[0]).expect("a page read lists its items");
            let managed = listed.iter().filter(|i| i["managed"] == true).count();
            let seen = page.items.len() + page.findings.len();
            assert!(seen <= listed.len() && seen + managed >= listed.len());
            for credential in &page.items {
                let expected = match kind {
                    ObjectKind::Secrets => CredentialKind::Secret,
                    ObjectKind::Certificates => CredentialKind::Certificate,
                    ObjectKind::Keys => CredentialKind::Key,
                };
                assert_eq!(credential.kind, expected);
                assert!(matches!(credential.source, CredentialSource::Vault { .. }));
                assert!(!credential.name.is_empty());
                assert!(!credential.name.contains('/'));
                let CredentialHandle::VaultObject { name, .. } = &credential.handle else {
                    panic!("a vault object's handle is not a vault object");
                };
                assert_eq!(name, &credential.name);
                assert_json_round_trip(credential);
            }
            for finding in &page.findings {
                assert_eq!(finding.kind, FindingKind::Malformed);
                assert!(matches!(finding.scope, Scope::Vault { .. }));
                assert!(finding.detail.chars().count() <= MAX_FINDING_DETAIL_CHARS);
                assert_json_round_trip(finding);
            }
            if let Some(next) = &page.next {
                let _ = catalog(&[]).objects(&vault, kind, Some(next), &stamp).await;
            }
        }
        if let Ok(details) = catalog(&answers[..1]).certificate(&vault, "tls").await {
            assert_json_round_trip(&details);
            if let Some(thumbprint) = &details.thumbprint {
                assert!(thumbprint.bytes().all(|b| b.is_ascii_hexdigit()));
            }
        }
        if let Ok(details) = catalog(&answers).key(&vault, "signing").await {
            assert_json_round_trip(&details);
        }
    });
});
