//! What discovery reads from a vault, as metadata only: keys (list, versions, `GET`, the
//! rotation policy), certificate versions, and the seeding of keys and certificates
//! without going through certificate issuance. Also the value-read ledger: every request
//! that could return a secret value, a private key or a wrapped key is counted before any
//! permission check, so a discovery test can assert that none was made.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use rand::RngCore;
use serde_json::{Value, json};

use super::{
    Call, CertificateEntry, CertificateVersion, KeyVaultStandin, KvError, RECOVERABLE_DAYS,
    RECOVERY_LEVEL, certificate_attributes, json_response, new_version, page,
};
use crate::pki::self_signed_for_vault;

/// Permission names for keys, as Key Vault's data actions `keys/read` splits them.
pub mod key_permission {
    pub const KEYS_GET: &str = "keys/get";
    pub const KEYS_LIST: &str = "keys/list";
    pub const KEYS_GET_ROTATION_POLICY: &str = "keys/getrotationpolicy";
}

#[derive(Debug, Clone)]
pub(crate) struct KeyEntry {
    pub(super) name: String,
    pub(super) versions: Vec<KeyVersion>,
    /// `Some(days before expiry)` when the key has a rotation policy with a `Rotate`
    /// action.
    rotate_before_expiry_days: Option<u32>,
}

#[derive(Debug, Clone)]
pub(super) struct KeyVersion {
    pub(super) version: String,
    kty: String,
    key_size: Option<u32>,
    crv: Option<String>,
    pub(super) enabled: bool,
    /// The private key of a key that signs (`keys::create_ec_key`); its public half is
    /// what get-key answers. Seeded metadata-only keys have none.
    pub(super) signing: Option<p256::ecdsa::SigningKey>,
    exp: Option<i64>,
    created: i64,
    tags: Option<BTreeMap<String, String>>,
}

/// A key to place in the vault: its type and size or curve, attributes and tags.
#[derive(Debug, Clone)]
pub struct KeySeed {
    name: String,
    kty: String,
    key_size: Option<u32>,
    crv: Option<String>,
    expires: Option<DateTime<Utc>>,
    tags: BTreeMap<String, String>,
    rotate_before_expiry_days: Option<u32>,
}

impl KeySeed {
    /// An RSA key of `bits`.
    pub fn rsa(name: impl Into<String>, bits: u32) -> Self {
        Self {
            name: name.into(),
            kty: "RSA".to_owned(),
            key_size: Some(bits),
            crv: None,
            expires: None,
            tags: BTreeMap::new(),
            rotate_before_expiry_days: None,
        }
    }

    /// An EC key on `curve` (`P-256`, `P-384`, `P-521`, `P-256K`).
    pub fn ec(name: impl Into<String>, curve: &str) -> Self {
        Self {
            kty: "EC".to_owned(),
            key_size: None,
            crv: Some(curve.to_owned()),
            ..Self::rsa(name, 0)
        }
    }

    pub fn expires(mut self, at: DateTime<Utc>) -> Self {
        self.expires = Some(at);
        self
    }

    pub fn tag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(name.into(), value.into());
        self
    }

    /// A rotation policy that rotates `days` before expiry.
    pub fn rotated_before_expiry(mut self, days: u32) -> Self {
        self.rotate_before_expiry_days = Some(days);
        self
    }
}

/// A certificate to place in the vault as if Key Vault had issued it: a self-signed
/// certificate for `subject` valid from `not_before` to `expires` (whole days), with a
/// policy naming `issuer` and its lifetime action.
#[derive(Debug, Clone)]
pub struct CertificateSeed {
    name: String,
    subject: String,
    issuer: String,
    not_before: DateTime<Utc>,
    expires: DateTime<Utc>,
    auto_renew_percent: Option<u32>,
    tags: BTreeMap<String, String>,
    der: Option<Vec<u8>>,
}

impl CertificateSeed {
    pub fn new(
        name: impl Into<String>,
        subject: impl Into<String>,
        not_before: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Self {
        Self {
            name: name.into(),
            subject: subject.into(),
            issuer: "Self".to_owned(),
            not_before,
            expires,
            auto_renew_percent: None,
            tags: BTreeMap::new(),
            der: None,
        }
    }

    /// The policy's issuer name (`Self`, `Unknown`, or a configured issuer).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// A lifetime action that renews at `percent` of the lifetime.
    pub fn auto_renew_at(mut self, percent: u32) -> Self {
        self.auto_renew_percent = Some(percent);
        self
    }

    pub fn tag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(name.into(), value.into());
        self
    }

    /// Uses `der` as the certificate instead of making one (benchmarks seed thousands).
    pub fn with_der(mut self, der: Vec<u8>) -> Self {
        self.der = Some(der);
        self
    }
}

impl KeyVaultStandin<'_> {
    /// Adds a version of a key and returns its version id.
    pub fn seed_key(&self, seed: KeySeed) -> String {
        let now = self.shared.clock.now().timestamp();
        let version = new_version();
        let mut vault = self.lock();
        let entry = vault
            .keys
            .entry(seed.name.to_ascii_lowercase())
            .or_insert_with(|| KeyEntry {
                name: seed.name.clone(),
                versions: Vec::new(),
                rotate_before_expiry_days: None,
            });
        entry.rotate_before_expiry_days = seed.rotate_before_expiry_days;
        entry.versions.push(KeyVersion {
            version: version.clone(),
            kty: seed.kty,
            key_size: seed.key_size,
            crv: seed.crv,
            enabled: true,
            exp: seed.expires.map(|t| t.timestamp()),
            created: now,
            tags: Some(seed.tags).filter(|t| !t.is_empty()),
            signing: None,
        });
        version
    }

    /// Adds a version of a certificate and returns its version id.
    ///
    /// # Panics
    /// When the certificate cannot be made (a subject rcgen refuses): a test bug.
    pub fn seed_certificate(&self, seed: CertificateSeed) -> String {
        let now = self.shared.clock.now().timestamp();
        let der = match seed.der {
            Some(der) => der,
            None => {
                let start = time::OffsetDateTime::from_unix_timestamp(seed.not_before.timestamp())
                    .expect("a chrono time is a valid unix time");
                let days = (seed.expires - seed.not_before).num_days().max(1);
                let months = u32::try_from((days + 29) / 30).unwrap_or(u32::MAX);
                let (issued, _) = self_signed_for_vault(&seed.subject, &[], months, false, start)
                    .expect("the seeded subject is a valid name");
                issued.cert_der.clone()
            }
        };
        let version = new_version();
        let mut lifetime_actions = Vec::new();
        if let Some(percent) = seed.auto_renew_percent {
            lifetime_actions.push(json!({
                "trigger": { "lifetime_percentage": percent },
                "action": { "action_type": "AutoRenew" },
            }));
        } else {
            lifetime_actions.push(json!({
                "trigger": { "days_before_expiry": 30 },
                "action": { "action_type": "EmailContacts" },
            }));
        }
        let policy = json!({
            "key_props": { "exportable": true, "kty": "EC", "crv": "P-256", "reuse_key": false },
            "secret_props": { "contentType": super::PEM_CONTENT_TYPE },
            "x509_props": {
                "subject": seed.subject,
                "ekus": ["1.3.6.1.5.5.7.3.1"],
                "key_usage": ["digitalSignature"],
                "validity_months": ((seed.expires - seed.not_before).num_days() + 29) / 30,
            },
            "lifetime_actions": lifetime_actions,
            "issuer": { "name": seed.issuer },
        });
        let mut vault = self.lock();
        let entry = vault
            .certificates
            .entry(seed.name.to_ascii_lowercase())
            .or_insert_with(|| CertificateEntry {
                name: seed.name.clone(),
                versions: Vec::new(),
                policy: Value::Null,
                policy_created: now,
                operation: None,
            });
        entry.policy = policy;
        entry.versions.push(CertificateVersion {
            version: version.clone(),
            der,
            nbf: seed.not_before.timestamp(),
            exp: seed.expires.timestamp(),
            created: now,
            tags: Some(seed.tags).filter(|t| !t.is_empty()),
        });
        version
    }

    /// How many requests could have returned a secret value, a private key or key
    /// material (`GET` of a secret or a certificate's backing secret, key export and
    /// cryptographic operations, backups), answered or refused.
    pub fn value_reads(&self) -> u64 {
        self.lock().value_reads
    }
}

/// Whether a request could return a value: discovery must never make one.
pub(super) fn reads_a_value(method: &Method, segments: &[&str]) -> bool {
    match (method, segments) {
        (&Method::GET, ["secrets", _]) => true,
        (&Method::GET, ["secrets", _, version]) => *version != "versions",
        (&Method::GET, ["deletedsecrets", _]) => false,
        (&Method::POST, ["keys", ..]) => !matches!(segments, ["keys", _, "create"]),
        (&Method::POST, [_, _, "backup"]) => true,
        _ => false,
    }
}

fn key_attributes(v: &KeyVersion) -> Value {
    let mut attributes = json!({
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.created,
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": RECOVERABLE_DAYS,
        "exportable": false,
    });
    if let Some(exp) = v.exp {
        attributes["exp"] = json!(exp);
    }
    attributes
}

fn key_not_found(name: &str) -> KvError {
    KvError::new(
        StatusCode::NOT_FOUND,
        "KeyNotFound",
        format!("A key with (name/id) {name} was not found in this key vault."),
    )
}

/// Get Keys: each key's current version as a KeyItem (`kid` without a version,
/// attributes, tags).
pub(super) fn list_keys(call: &Call) -> Result<http::Response<axum::body::Body>, KvError> {
    call.require(key_permission::KEYS_LIST)?;
    let (items, page_size) = {
        let vault = call.vault();
        let items: Vec<Value> = vault
            .keys
            .values()
            .filter_map(|entry| {
                let v = entry.versions.last()?;
                let mut item = json!({
                    "kid": format!("{}/keys/{}", call.base, entry.name),
                    "attributes": key_attributes(v),
                });
                if let Some(tags) = &v.tags {
                    item["tags"] = json!(tags);
                }
                Some(item)
            })
            .collect();
        (items, vault.page_size)
    };
    page(call, "/keys", items, page_size)
}

pub(super) fn list_key_versions(
    call: &Call,
    name: &str,
) -> Result<http::Response<axum::body::Body>, KvError> {
    call.require(key_permission::KEYS_LIST)?;
    let (items, page_size) = {
        let vault = call.vault();
        let entry = vault
            .keys
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| key_not_found(name))?;
        let items: Vec<Value> = entry
            .versions
            .iter()
            .map(|v| {
                json!({
                    "kid": format!("{}/keys/{}/{}", call.base, entry.name, v.version),
                    "attributes": key_attributes(v),
                })
            })
            .collect();
        (items, vault.page_size)
    };
    page(call, &format!("/keys/{name}/versions"), items, page_size)
}

/// Get Key: the public JSON web key (never the private part; Key Vault does not export
/// it here) with attributes and tags. A disabled key is shown all the same, with
/// `"enabled": false`: Key Vault refuses a disabled key's operations (sign answers 403
/// `Forbidden`, inner `KeyDisabled`), not reading its public half. Recorded against Key
/// Vault (service 1.2.236.0, api-version 7.3-preview) in Azure/azure-sdk-for-java,
/// `sdk/keyvault/azure-security-keyvault-keys/src/test/resources/session-records/KeyClientTest.updateDisabledKey[1].json`
/// (commit `fe461be09153118b322d4383a0dff52a6b0cb6f8`): `GET keys/testKey2/` of an EC
/// P-256 key created disabled answers 200 with its `kid`, `x`, `y` and `"enabled": false`.
pub(super) fn get_key(
    call: &Call,
    name: &str,
    version: Option<&str>,
) -> Result<http::Response<axum::body::Body>, KvError> {
    call.require(key_permission::KEYS_GET)?;
    let vault = call.vault();
    let entry = vault
        .keys
        .get(&name.to_ascii_lowercase())
        .ok_or_else(|| key_not_found(name))?;
    let v = match version {
        None => entry.versions.last(),
        Some(wanted) => entry
            .versions
            .iter()
            .find(|kv| kv.version.eq_ignore_ascii_case(wanted)),
    }
    .ok_or_else(|| key_not_found(name))?;
    let kid = format!("{}/keys/{}/{}", call.base, entry.name, v.version);
    let mut jwk = json!({ "kid": kid, "kty": v.kty });
    match (v.key_size, &v.crv) {
        (_, Some(crv)) => {
            let len = match crv.as_str() {
                "P-384" => 48,
                "P-521" => 66,
                _ => 32,
            };
            jwk["crv"] = json!(crv);
            match &v.signing {
                Some(signing) => {
                    let (x, y) = super::keys::public_coordinates(signing);
                    jwk["x"] = json!(x);
                    jwk["y"] = json!(y);
                }
                None => {
                    jwk["x"] = json!(random_b64(len));
                    jwk["y"] = json!(random_b64(len));
                }
            }
            jwk["key_ops"] = json!(["sign", "verify"]);
        }
        (Some(bits), None) => {
            jwk["n"] = json!(random_b64((bits / 8) as usize));
            jwk["e"] = json!("AQAB");
            jwk["key_ops"] = json!([
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey"
            ]);
        }
        (None, None) => {}
    }
    let mut body = json!({ "key": jwk, "attributes": key_attributes(v) });
    if let Some(tags) = &v.tags {
        body["tags"] = json!(tags);
    }
    Ok(json_response(StatusCode::OK, body))
}

/// Get Key Rotation Policy: a key never given one answers the default policy, which only
/// notifies 30 days before expiry.
pub(super) fn key_rotation_policy(
    call: &Call,
    name: &str,
) -> Result<http::Response<axum::body::Body>, KvError> {
    call.require(key_permission::KEYS_GET_ROTATION_POLICY)?;
    let vault = call.vault();
    let entry = vault
        .keys
        .get(&name.to_ascii_lowercase())
        .ok_or_else(|| key_not_found(name))?;
    let id = format!("{}/keys/{}/rotationpolicy", call.base, entry.name);
    let body = match entry.rotate_before_expiry_days {
        Some(days) => json!({
            "id": id,
            "lifetimeActions": [
                { "trigger": { "timeBeforeExpiry": format!("P{days}D") }, "action": { "type": "Rotate" } },
                { "trigger": { "timeBeforeExpiry": "P30D" }, "action": { "type": "Notify" } },
            ],
            "attributes": { "expiryTime": "P1Y", "created": 1_700_000_000, "updated": 1_700_000_000 },
        }),
        None => json!({
            "id": id,
            "lifetimeActions": [
                { "trigger": { "timeBeforeExpiry": "P30D" }, "action": { "type": "Notify" } },
            ],
            "attributes": {},
        }),
    };
    Ok(json_response(StatusCode::OK, body))
}

/// Get Certificate Versions: every version as a CertificateItem (id with its version,
/// x5t, attributes, tags).
pub(super) fn list_certificate_versions(
    call: &Call,
    name: &str,
) -> Result<http::Response<axum::body::Body>, KvError> {
    call.require(super::permission::CERTIFICATES_LIST)?;
    let (items, page_size) = {
        let vault = call.vault();
        let entry = vault
            .certificates
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| super::certificate_not_found(name))?;
        let items: Vec<Value> = entry
            .versions
            .iter()
            .map(|v| {
                let mut item = json!({
                    "id": format!("{}/certificates/{}/{}", call.base, entry.name, v.version),
                    "x5t": super::x5t(&v.der),
                    "attributes": certificate_attributes(v),
                });
                if let Some(tags) = &v.tags {
                    item["tags"] = json!(tags);
                }
                item
            })
            .collect();
        (items, vault.page_size)
    };
    page(
        call,
        &format!("/certificates/{name}/versions"),
        items,
        page_size,
    )
}

fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
