//! Microsoft Graph's application and service principal listings as discovery reads
//! them: password and key credentials, owners (and a longer owner list read in full, the
//! input's second part after its first NUL).
#![no_main]

use azure_core::http::StatusCode;
use keyturn::adapters::azure::graph::{DEFAULT_GRAPH_ENDPOINT, GraphClient};
use keyturn::domain::inventory::{
    CredentialHandle, CredentialKind, CredentialSource, FindingKind, MAX_FINDING_DETAIL_CHARS,
    Scope,
};
use keyturn::ports::catalog::{DirectoryCatalog, DirectoryKind, DirectoryRange, HexDigit, Unpaced};
use keyturn_fuzz::{Scripted, assert_json_round_trip, block_on, parts, stamp};
use keyturn_testkit::transport::FixedToken;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use url::Url;

fn client(answers: &[&[u8]]) -> GraphClient {
    let transport = Scripted::new(
        answers.iter().map(|a| (StatusCode::Ok, a.to_vec())),
        (StatusCode::NotFound, "{}"),
    );
    let endpoint = Url::parse(DEFAULT_GRAPH_ENDPOINT).expect("valid");
    GraphClient::new(&endpoint, FixedToken::new(), Some(transport.options())).expect("valid client")
}

/// How many credentials the answer lists, over every object.
fn listed(data: &[u8]) -> usize {
    let value =
        serde_json::from_str::<Value>(&String::from_utf8_lossy(data)).expect("a page read is JSON");
    assert!(value["value"].is_array(), "a page read lists its objects");
    let count = |object: &Value, field: &str| object[field].as_array().map_or(0, Vec::len);
    value["value"].as_array().map_or(0, |objects| {
        objects
            .iter()
            .map(|o| (count(o, "passwordCredentials") + count(o, "keyCredentials")).max(1))
            .sum()
    })
}

fuzz_target!(|data: &[u8]| {
    let stamp = stamp();
    let answers = parts(data, 2);
    block_on(async {
        for kind in [
            DirectoryKind::Applications,
            DirectoryKind::ServicePrincipals,
        ] {
            let range = DirectoryRange {
                kind,
                prefix: HexDigit::parse("a").expect("hex"),
            };
            let Ok(page) = client(&answers)
                .credentials(&range, None, &stamp, &Unpaced)
                .await
            else {
                continue;
            };
            assert!(page.items.len() + page.findings.len() <= listed(answers[0]));
            for credential in &page.items {
                match (&credential.source, kind) {
                    (CredentialSource::Application { .. }, DirectoryKind::Applications)
                    | (
                        CredentialSource::ServicePrincipal { .. },
                        DirectoryKind::ServicePrincipals,
                    ) => {}
                    (source, kind) => panic!("{kind:?} listed a credential of {source:?}"),
                }
                assert!(matches!(
                    credential.kind,
                    CredentialKind::PasswordCredential | CredentialKind::KeyCredential
                ));
                assert!(matches!(
                    credential.handle,
                    CredentialHandle::DirectoryCredential { .. }
                ));
                assert!(!credential.name.is_empty());
                let directory = credential.directory.as_ref().expect("directory details");
                if credential.kind == CredentialKind::PasswordCredential {
                    assert_eq!(directory.thumbprint, None);
                }
                assert_json_round_trip(credential);
            }
            for finding in &page.findings {
                assert_eq!(finding.kind, FindingKind::Malformed);
                assert!(matches!(
                    finding.scope,
                    Scope::DirectoryPage { .. }
                        | Scope::Application { .. }
                        | Scope::ServicePrincipal { .. }
                ));
                assert!(finding.subject.chars().count() <= 64);
                assert!(finding.detail.chars().count() <= MAX_FINDING_DETAIL_CHARS);
                assert_json_round_trip(finding);
            }
            if let Some(next) = &page.next {
                let _ = client(&[])
                    .credentials(&range, Some(next), &stamp, &Unpaced)
                    .await;
            }
        }
    });
});
