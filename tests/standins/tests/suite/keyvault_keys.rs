//! The Key Vault stand-in's keys: `sign` and get-key follow the REST reference and its
//! examples, and refuse what Key Vault refuses.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyturn_standins::keyvault::{key_permission, permission};
use keyturn_standins::{Audience, Permissions, Standins};
use ring::digest::{SHA256, digest};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Value, json};

use crate::{json, start, token};

const API: &str = "api-version=2025-07-01";

fn example(name: &str) -> Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/keyvault-rest")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixtures are JSON")
}

fn keys(value: &Value) -> std::collections::BTreeSet<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

async fn sign(standins: &Standins, token: &str, key: &url::Url, body: Value) -> reqwest::Response {
    standins
        .http_client()
        .post(format!("{key}/sign?{API}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn es256(digest_of: &[u8]) -> Value {
    json!({"alg": "ES256", "value": URL_SAFE_NO_PAD.encode(digest(&SHA256, digest_of))})
}

#[tokio::test]
async fn a_signed_digest_verifies_with_the_public_key_get_key_answers() {
    let standins = start().await;
    let token = token(&standins, Audience::KeyVault).await;
    let key = standins.keyvault().create_ec_key("audit-checkpoints");

    let signed = sign(&standins, &token, &key, es256(b"checkpoint bytes")).await;
    assert_eq!(signed.status(), 200);
    let signed = json(signed).await;
    let got = json(
        standins
            .http_client()
            .get(format!("{key}?{API}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(signed["kid"], key.as_str());
    assert_eq!(got["key"]["kid"], key.as_str());
    assert_eq!(got["key"]["kty"], "EC");
    assert_eq!(got["key"]["crv"], "P-256");
    assert_eq!(got["key"]["key_ops"], json!(["sign", "verify"]));
    assert!(
        got["key"].get("d").is_none(),
        "the private key never leaves"
    );
    let coordinate = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(got["key"][name].as_str().expect("a coordinate"))
            .expect("base64url")
    };
    let mut point = vec![4];
    point.extend(coordinate("x"));
    point.extend(coordinate("y"));
    let signature = URL_SAFE_NO_PAD
        .decode(signed["value"].as_str().expect("a signature"))
        .expect("base64url");
    assert_eq!(signature.len(), 64, "r || s");
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(b"checkpoint bytes", &signature)
        .expect("the signature of the digest verifies over the message");
}

#[tokio::test]
async fn sign_and_get_key_answers_have_the_example_shapes() {
    let standins = start().await;
    let token = token(&standins, Audience::KeyVault).await;
    let key = standins.keyvault().create_ec_key("audit-checkpoints");
    let unversioned = key
        .as_str()
        .rsplit_once('/')
        .expect("a version")
        .0
        .to_owned();

    let signed = json(sign(&standins, &token, &key, es256(b"x")).await).await;
    let latest = json(
        standins
            .http_client()
            .get(format!("{unversioned}?{API}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;

    let sign_example = &example("keyvault-7.5-sign-example.json")["responses"]["200"]["body"];
    assert_eq!(keys(&signed), keys(sign_example));
    let get_example = &example("keyvault-7.5-GetKey-example.json")["responses"]["200"]["body"];
    let mut top = keys(get_example);
    top.remove("tags"); // the key was created without tags
    assert_eq!(keys(&latest), top);
    let mut attributes = keys(&latest["attributes"]);
    // In real answers of newer API versions, not in the 7.5 example.
    attributes.remove("recoverableDays");
    attributes.remove("exportable");
    assert_eq!(attributes, keys(&get_example["attributes"]));
    assert_eq!(latest["key"]["kid"], key.as_str(), "the newest version");
}

#[tokio::test]
async fn sign_refuses_what_key_vault_refuses_with_its_error_shape() {
    let standins = start().await;
    let token = token(&standins, Audience::KeyVault).await;
    let key = standins.keyvault().create_ec_key("audit-checkpoints");
    let digest_of_x = URL_SAFE_NO_PAD.encode(digest(&SHA256, b"x"));
    let cases = [
        (
            "another algorithm",
            json!({"alg": "RS256", "value": digest_of_x}),
        ),
        (
            "a 20-byte value",
            json!({"alg": "ES256", "value": URL_SAFE_NO_PAD.encode([1u8; 20])}),
        ),
        (
            "a message, not a digest",
            json!({"alg": "ES256", "value": URL_SAFE_NO_PAD.encode([1u8; 100])}),
        ),
        (
            "standard base64",
            json!({"alg": "ES256", "value": "+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/8"}),
        ),
        ("no alg", json!({"value": digest_of_x})),
        ("no value", json!({"alg": "ES256"})),
        (
            "an unknown field",
            json!({"alg": "ES256", "value": digest_of_x, "digest": "x"}),
        ),
    ];
    for (case, body) in cases {
        let response = sign(&standins, &token, &key, body).await;
        assert_eq!(response.status(), 400, "{case}");
        let body = json(response).await;
        assert_eq!(body["error"]["code"], "BadParameter", "{case}: {body}");
        assert!(body["error"]["message"].is_string(), "{case}: {body}");
    }
}

#[tokio::test]
async fn sign_needs_a_token_with_the_sign_permission_and_an_enabled_key() {
    let standins = start().await;
    let key = standins.keyvault().create_ec_key("audit-checkpoints");
    let reader = standins.issue_token(
        Audience::KeyVault,
        Permissions::only([key_permission::KEYS_GET]),
    );
    let signer = standins.issue_token(
        Audience::KeyVault,
        Permissions::only([permission::KEYS_SIGN]),
    );
    let missing =
        url::Url::parse(&key.as_str().replace("audit-checkpoints", "no-such-key")).unwrap();

    let anonymous = standins
        .http_client()
        .post(format!("{key}/sign?{API}"))
        .json(&es256(b"x"))
        .send()
        .await
        .unwrap();
    let without_sign = sign(&standins, &reader, &key, es256(b"x")).await;
    let unknown = sign(&standins, &signer, &missing, es256(b"x")).await;
    standins
        .keyvault()
        .set_key_enabled("audit-checkpoints", false);
    let disabled = sign(&standins, &signer, &key, es256(b"x")).await;

    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    assert_eq!(without_sign.status(), 403);
    let body = json(without_sign).await;
    assert_eq!(
        body["error"]["innererror"]["code"], "ForbiddenByRbac",
        "{body}"
    );
    assert_eq!(unknown.status(), 404);
    assert_eq!(json(unknown).await["error"]["code"], "KeyNotFound");
    assert_eq!(disabled.status(), 403);
    assert_eq!(
        json(disabled).await["error"]["innererror"]["code"],
        "KeyDisabled"
    );
}
