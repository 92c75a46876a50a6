//! The Graph stand-in's answers and [`GraphClient`]'s requests checked against Microsoft
//! Graph's own v1.0 metadata (`tests/fixtures/graph/graph-v1.0-credential-snippets.xml`):
//! every `passwordCredential` field either sends or reads is one the metadata declares, and
//! `addPassword` / `removePassword` carry only the parameters their actions declare.

use std::collections::BTreeSet;

use azure_core::http::StatusCode;
use chrono::Duration;
use keyturn_standins::{Audience, Permissions, Standins};
use keyturn_testkit::transport::{Answer, CannedTransport, FixedToken};
use serde_json::{Value, json};

use keyturn::adapters::azure::graph::GraphClient;
use keyturn::domain::ids::{DirectoryObjectId, KeyId};
use keyturn::ports::directory::CredentialIssuer;

use crate::helpers::fixtures;

/// The metadata snippet, as Microsoft publishes it.
fn metadata() -> String {
    let path = fixtures().join("graph/graph-v1.0-credential-snippets.xml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `Name` attributes of the `<child>` elements inside the first `<kind Name="name">`
/// element (a complex type's properties, an action's parameters).
fn names_in(metadata: &str, kind: &str, name: &str, child: &str) -> BTreeSet<String> {
    let opening = format!("<{kind} Name=\"{name}\"");
    let start = metadata
        .find(&opening)
        .unwrap_or_else(|| panic!("{opening} is not in the metadata"));
    let closing = format!("</{kind}>");
    let end = start
        + metadata[start..]
            .find(&closing)
            .expect("the element closes");
    metadata[start..end]
        .lines()
        .filter_map(|line| line.trim().strip_prefix(&format!("<{child} Name=\"")))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

fn password_credential_fields() -> BTreeSet<String> {
    let fields = names_in(&metadata(), "ComplexType", "passwordCredential", "Property");
    assert!(
        fields.contains("secretText") && fields.contains("keyId"),
        "{fields:?}"
    );
    fields
}

/// An action's parameters, without the entity it is bound to.
fn action_parameters(action: &str) -> BTreeSet<String> {
    let mut parameters = names_in(&metadata(), "Action", action, "Parameter");
    assert!(parameters.remove("bindingParameter"), "{action} is bound");
    parameters
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn the_metadata_declares_what_keyturn_relies_on() {
    assert_eq!(
        action_parameters("addPassword"),
        BTreeSet::from(["passwordCredential".to_owned()])
    );
    assert_eq!(
        action_parameters("removePassword"),
        BTreeSet::from(["keyId".to_owned()])
    );
    let fields = password_credential_fields();
    for field in ["displayName", "endDateTime", "hint", "startDateTime"] {
        assert!(fields.contains(field), "{field}");
    }
}

#[tokio::test]
async fn the_stand_ins_password_credentials_have_exactly_the_metadatas_fields() {
    let standins = Standins::start().await.expect("stand-ins");
    let app = standins
        .graph()
        .seed_application("metadata", Permissions::all());
    let token = standins.issue_token(Audience::Graph, Permissions::all());
    let base = standins.graph().url().clone();
    let end = (standins.now() + Duration::days(30)).to_rfc3339();
    let added: Value = standins
        .http_client()
        .post(
            base.join(&format!("v1.0/applications/{}/addPassword", app.object_id))
                .expect("url"),
        )
        .bearer_auth(&token)
        .json(&json!({ "passwordCredential": { "displayName": "m", "endDateTime": end } }))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    let fields = password_credential_fields();
    let mut answered = keys(&added);
    answered.remove("@odata.context");
    assert_eq!(
        answered, fields,
        "addPassword answers a whole passwordCredential"
    );

    let application: Value = standins
        .http_client()
        .get(
            base.join(&format!("v1.0/applications/{}", app.object_id))
                .expect("url"),
        )
        .bearer_auth(&token)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    let listed = application["passwordCredentials"]
        .as_array()
        .expect("passwordCredentials");
    assert!(!listed.is_empty());
    for credential in listed {
        assert_eq!(keys(credential), fields, "{credential}");
        assert_eq!(credential["secretText"], Value::Null, "never listed again");
    }

    // The stand-in refuses a field the metadata does not declare, as Graph does.
    let refused = standins
        .http_client()
        .post(
            base.join(&format!("v1.0/applications/{}/addPassword", app.object_id))
                .expect("url"),
        )
        .bearer_auth(&token)
        .json(&json!({ "passwordCredential": { "displayName": "m", "lifetime": "P30D" } }))
        .send()
        .await
        .expect("answered");
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn the_clients_requests_carry_only_the_metadatas_names() {
    const KEY: &str = "8f4e2d1c-6b5a-4c3d-9e8f-7a6b5c4d3e2f";
    let answer = json!({
        "customKeyIdentifier": null, "displayName": "keyturn job 1",
        "endDateTime": "2026-01-01T00:00:00Z", "hint": "Xy1", "keyId": KEY,
        "secretText": "Xy1-not-a-real-secret-0123456789abcdefgh",
        "startDateTime": "2025-01-01T00:00:00Z"
    });
    let canned = CannedTransport::script([
        Answer::new(StatusCode::Ok, answer.to_string()),
        Answer::new(StatusCode::NoContent, Vec::new()),
    ]);
    let endpoint = azure_core::http::Url::parse("https://graph.microsoft.com").expect("url");
    let client = GraphClient::new(&endpoint, FixedToken::new(), Some(canned.options()))
        .expect("https endpoint");
    let object =
        DirectoryObjectId::parse("5d8e3f0a-1b2c-4d3e-8f9a-0b1c2d3e4f5a").expect("object id");
    let end = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("valid")
        .with_timezone(&chrono::Utc);
    let issued = client
        .add_password(&object, "keyturn job 1", end)
        .await
        .expect("added");
    client
        .remove_password(&object, &issued.credential.key_id)
        .await
        .expect("removed");
    assert_eq!(issued.credential.key_id, KeyId::parse(KEY).expect("key id"));

    let seen = canned.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].url.ends_with("/addPassword"), "{}", seen[0].url);
    assert!(seen[1].url.ends_with("/removePassword"), "{}", seen[1].url);
    let add: Value = serde_json::from_slice(&seen[0].body).expect("JSON body");
    assert!(
        keys(&add).is_subset(&action_parameters("addPassword")),
        "{add}"
    );
    let credential = keys(&add["passwordCredential"]);
    assert!(
        credential.is_subset(&password_credential_fields()),
        "{credential:?}"
    );
    let remove: Value = serde_json::from_slice(&seen[1].body).expect("JSON body");
    assert_eq!(
        keys(&remove),
        action_parameters("removePassword"),
        "{remove}"
    );
}
