//! Key Vault keys in the stand-in: EC P-256 keys that sign a SHA-256 digest (`ES256`)
//! and show their public half, as the audit log's checkpoint signer uses them.
//!
//! Follows the REST reference ("Sign", "Get Key"; examples in
//! `tests/fixtures/keyvault-rest/keyvault-7.5-{sign,GetKey}-example.json`): `POST
//! {vault}/keys/{name}/{version}/sign` takes `{"alg", "value"}` with `value` the
//! unpadded base64url digest and answers `{"kid", "value"}` with the signature `r || s`;
//! get-key (`metadata::get_key`) answers such a key's real public point. The private
//! key never leaves the stand-in, as it never leaves a vault.
//!
//! Signing a digest someone else computed is ECDSA's "prehash" form, which `ring` does
//! not offer (it hashes the message itself), so RustCrypto's `p256` signs here; keyturn
//! verifies with `ring` over the message, which is the same check.

use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use serde::Deserialize;
use serde_json::json;

use super::metadata::{KeyEntry, KeySeed, KeyVersion};
use super::{Call, KeyVaultStandin, KvError, is_version, json_response, parse_body, permission};

/// A SHA-256 digest is 32 bytes; ES256 signs nothing else ("Sign": the value is the
/// digest of the algorithm's hash).
pub const ES256_DIGEST_LEN: usize = 32;

impl KeyVaultStandin<'_> {
    /// Creates an EC P-256 key that signs (a new version when the name exists) and
    /// returns its versioned identifier, `{vault}/keys/{name}/{version}`.
    pub fn create_ec_key(&self, name: &str) -> url::Url {
        let version = self.seed_key(KeySeed::ec(name, "P-256"));
        let mut vault = self.lock();
        if let Some(seeded) = vault
            .keys
            .get_mut(&name.to_ascii_lowercase())
            .and_then(|entry| entry.versions.iter_mut().find(|v| v.version == version))
        {
            seeded.signing = Some(SigningKey::random(&mut rand::rngs::OsRng));
        }
        self.url
            .join(&format!("keys/{name}/{version}"))
            .expect("a key name and version make a valid path")
    }

    /// Enables or disables every version of a key, as `az keyvault key set-attributes
    /// --enabled` does for one.
    pub fn set_key_enabled(&self, name: &str, enabled: bool) {
        if let Some(entry) = self.lock().keys.get_mut(&name.to_ascii_lowercase()) {
            for version in &mut entry.versions {
                version.enabled = enabled;
            }
        }
    }
}

impl KeyVaultStandin<'_> {
    /// Enables or disables one version of a key, as `az keyvault key set-attributes --id
    /// {kid} --enabled false` does to an old version after a rotation.
    pub fn set_key_version_enabled(&self, name: &str, version: &str, enabled: bool) {
        if let Some(found) = self
            .lock()
            .keys
            .get_mut(&name.to_ascii_lowercase())
            .and_then(|entry| {
                entry
                    .versions
                    .iter_mut()
                    .find(|v| v.version.eq_ignore_ascii_case(version))
            })
        {
            found.enabled = enabled;
        }
    }
}

/// A signing key's public point as a JSON Web Key's `x` and `y` (unpadded base64url).
pub(super) fn public_coordinates(key: &SigningKey) -> (String, String) {
    let point = key.verifying_key().to_encoded_point(false);
    let coordinate = |c: Option<&p256::FieldBytes>| {
        URL_SAFE_NO_PAD.encode(c.expect("an uncompressed point has both coordinates"))
    };
    (coordinate(point.x()), coordinate(point.y()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    alg: Option<String>,
    value: Option<String>,
}

/// `POST keys/{name}/{version}/sign`; an empty version signs with the newest.
pub(super) fn sign(
    call: &Call,
    name: &str,
    version: &str,
    body: &[u8],
) -> Result<Response, KvError> {
    call.require(permission::KEYS_SIGN)?;
    let request: SignBody = parse_body(body)?;
    let alg = request
        .alg
        .ok_or_else(|| KvError::bad_parameter("The property 'alg' is required."))?;
    let value = request
        .value
        .ok_or_else(|| KvError::bad_parameter("The property 'value' is required."))?;
    let vault = call.vault();
    let version = Some(version).filter(|v| !v.is_empty());
    let (entry, found) = find(&vault.keys, name, version)?;
    if !found.enabled {
        return Err(KvError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation sign is not allowed on a disabled key.",
        )
        .with_inner("KeyDisabled"));
    }
    let Some(private) = &found.signing else {
        return Err(KvError::bad_parameter(
            "The stand-in holds no private key for this key: create it with create_ec_key to sign.",
        ));
    };
    if alg != "ES256" {
        return Err(KvError::bad_parameter(format!(
            "Algorithm '{alg}' is not valid for a key of type 'EC' and curve 'P-256'."
        )));
    }
    let digest = URL_SAFE_NO_PAD
        .decode(&value)
        .map_err(|_| KvError::bad_parameter("The property 'value' is not valid base64url."))?;
    if digest.len() != ES256_DIGEST_LEN {
        return Err(KvError::bad_parameter(format!(
            "Invalid digest length {} for algorithm ES256; expected {ES256_DIGEST_LEN} bytes.",
            digest.len()
        )));
    }
    let signature: Signature = private.sign_prehash(&digest).map_err(|_| {
        KvError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The digest could not be signed.",
        )
    })?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "kid": format!("{}/keys/{}/{}", call.base, entry.name, found.version),
            "value": URL_SAFE_NO_PAD.encode(signature.to_bytes()),
        }),
    ))
}

fn find<'a>(
    keys: &'a std::collections::BTreeMap<String, KeyEntry>,
    name: &str,
    version: Option<&str>,
) -> Result<(&'a KeyEntry, &'a KeyVersion), KvError> {
    let not_found = || {
        let id = match version {
            Some(v) => format!("{name}/{v}"),
            None => name.to_owned(),
        };
        KvError::new(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!("A key with (name/id) {id} was not found in this key vault."),
        )
    };
    let entry = keys.get(&name.to_ascii_lowercase()).ok_or_else(not_found)?;
    let found = match version {
        None => entry.versions.last(),
        Some(v) if is_version(v) => entry
            .versions
            .iter()
            .find(|kv| kv.version.eq_ignore_ascii_case(v)),
        Some(_) => None,
    };
    Ok((entry, found.ok_or_else(not_found)?))
}
