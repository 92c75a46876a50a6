//! Tests of the stand-ins themselves: each one's strictness, its answers against the
//! official REST examples, and the official Key Vault crate against the Key Vault stand-in.

mod discovery;
mod entra;
mod faults;
mod fixtures;
mod graph;
mod keyvault;
mod keyvault_keys;
mod resourcemanager;
mod sdk;
mod servicebus;

use keyturn_standins::{Audience, Standins};
use serde_json::Value;

pub async fn start() -> Standins {
    Standins::start()
        .await
        .expect("the stand-ins start on loopback")
}

/// A token for the default identity, fetched through the token endpoint.
pub async fn token(standins: &Standins, audience: Audience) -> String {
    let identity = standins.identity();
    let response = standins
        .http_client()
        .post(standins.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &identity.app_id.to_string()),
            ("client_secret", identity.client_secret()),
            ("scope", &format!("{}/.default", audience.uri())),
        ])
        .send()
        .await
        .expect("the token endpoint answers");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("a JSON token answer");
    body["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

pub async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}
