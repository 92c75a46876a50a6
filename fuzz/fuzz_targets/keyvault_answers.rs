//! Key Vault answers, decoded by the Key Vault client (the SDK's models, then keyturn's
//! reading of ids, attributes and tags).
#![no_main]

use azure_core::http::StatusCode;
use keyturn::adapters::azure::keyvault::KeyVault;
use keyturn::domain::names::{ObjectName, VaultUrl};
use keyturn::ports::vault::{CertificateStore, SecretStore};
use keyturn_fuzz::{FuzzedAnswer, block_on};
use keyturn_testkit::transport::FixedToken;
use libfuzzer_sys::fuzz_target;

fn client(data: &[u8]) -> KeyVault {
    // A next page or second step finds an empty page.
    let answer = FuzzedAnswer::new(data, (StatusCode::Ok, r#"{"value":[]}"#));
    KeyVault::new(FixedToken::new(), Some(answer.options())).without_challenge_resource_check()
}

fuzz_target!(|data: &[u8]| {
    let vault = VaultUrl::parse("https://fuzz.vault.azure.net").expect("valid");
    let name = ObjectName::parse("db-password").expect("valid");
    block_on(async {
        let _ = client(data).list_secrets(&vault).await;
        let _ = client(data).secret_properties(&vault, &name, None).await;
        let _ = client(data).list_versions(&vault, &name).await;
        let _ = client(data).secret(&vault, &name, None).await;
        let _ = client(data).list_certificates(&vault).await;
        let _ = client(data).certificate_properties(&vault, &name).await;
        let _ = client(data).issuer(&vault, &name).await;
        let _ = client(data).renewal_status(&vault, &name).await;
    });
});
