//! Local mode: the host side played against the real handler binary.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use keyturn::config::Environment;
use keyturn::local::definitions::AppDefinition;
use keyturn::local::handler::Handler;

use crate::helpers::fixture;

#[tokio::test]
async fn the_handler_starts_as_host_json_says_and_answers_enveloped_invocations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = AppDefinition::load(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &Environment::default(),
    )
    .expect("definitions");
    let env = vec![
        ("KEYTURN_BACKEND".to_string(), "local".to_string()),
        ("KEYTURN_AUDIT_STORE".to_string(), "sqlite".to_string()),
        (
            "KEYTURN_DATA_DIR".to_string(),
            dir.path().display().to_string(),
        ),
        (
            "KEYTURN_VAULTS".to_string(),
            "https://kv-local.vault.azure.net/".to_string(),
        ),
        (
            "ServiceBusConnection__fullyQualifiedNamespace".to_string(),
            "sb-local.servicebus.windows.net".to_string(),
        ),
    ];
    let handler = Handler::start(
        &app.handler,
        Some(PathBuf::from(env!("CARGO_BIN_EXE_keyturn"))),
        &env,
        None,
    )
    .await
    .expect("the handler listens");

    let definition = app.function("KeyVaultEvents").expect("defined");
    let event = fixture("keyvault-events/DERIVED.eventgrid-schema.CertificateNearExpiry.json");
    let answer = handler
        .invoke(&definition.name, &definition.binding, event, Map::new())
        .await
        .expect("answered");
    assert!(answer.succeeded(), "{answer:?}");
    assert_eq!(
        answer.body["ReturnValue"]["received"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let sweep = app.function("ExpirySweep").expect("defined");
    let answer = handler
        .invoke(
            &sweep.name,
            &sweep.binding,
            Value::String("{\"IsPastDue\":false}".into()),
            Map::new(),
        )
        .await
        .expect("answered");
    assert!(answer.succeeded(), "{answer:?}");
    handler.stop().await.expect("stops");
}
