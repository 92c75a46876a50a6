//! The audit checkpoints' signing key in Azure: a Key Vault EC P-256 key used through
//! Key Vault's `sign` operation (official crate `azure_security_keyvault_keys`), so the
//! private key never leaves the vault and keyturn's identity may sign but not export,
//! change or delete it.
//!
//! Key Vault signs a digest, not a message ("Sign": "Creates a signature from a digest"):
//! keyturn sends the SHA-256 of the checkpoint's signed bytes with `alg` `ES256` and
//! gets `r || s` back, which is exactly what ECDSA P-256 with SHA-256 over the message
//! verifies (RFC 7518 section 3.4). The signature's key id is the versioned key URL Key
//! Vault answers with (`kid`), so a checkpoint names the very key version that signed it.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, StatusCode};
use azure_security_keyvault_keys::models::{
    KeyClientGetKeyOptions, KeyClientSignOptions, SignParameters,
    SignatureAlgorithm as KeyVaultAlgorithm,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use sha2::{Digest, Sha256};

use crate::adapters::azure::client::http::{FailureContext, default_client_options};
use crate::adapters::azure::keyvault::{failure, inner_code};
use crate::domain::names::{NameError, ObjectId, ObjectType};
use crate::ports::checkpoint::{
    CheckpointSigner, KeyLookup, PublicKey, Signature, SignatureAlgorithm, VerifyingKeys,
};
use crate::ports::{FailureKind, PortError};

/// An ES256 signature is `r || s`, two 32-byte P-256 scalars (RFC 7518 section 3.4).
const ES256_SIGNATURE_LEN: usize = 64;

/// Key Vault's inner error code behind a 403 on a disabled key, which no role
/// assignment changes.
const KEY_DISABLED: &str = "KeyDisabled";

/// A Key Vault key's URL, `https://{vault}.vault.azure.net/keys/{name}[/{version}]`.
/// Without a version, Key Vault signs with the key's current version and names it in
/// its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUrl(ObjectId);

impl KeyUrl {
    /// Parses a key URL; the error says what is wrong without quoting more than a
    /// name's excerpt.
    pub fn parse(text: &str) -> Result<Self, String> {
        const FORM: &str = "https://VAULT.vault.azure.net/keys/NAME[/VERSION]";
        let id = ObjectId::parse(text)
            .map_err(|e: NameError| format!("not a Key Vault key URL ({FORM}): {e}"))?;
        if id.object_type() != ObjectType::Key {
            return Err(format!(
                "not a Key Vault key URL ({FORM}): it names a {} object",
                id.object_type().collection()
            ));
        }
        Ok(Self(id))
    }

    pub fn name(&self) -> &str {
        self.0.name().as_str()
    }

    pub fn version(&self) -> Option<&str> {
        self.0.version().map(|v| v.as_str())
    }

    /// The vault's base URL, `https://{vault}.vault.azure.net/`.
    pub fn vault(&self) -> &str {
        self.0.vault().as_str()
    }
}

impl fmt::Display for KeyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Signs checkpoints with a Key Vault key.
pub struct KeyVaultSigner {
    client: KeyClient,
    key: KeyUrl,
    /// The role an identity needs, named in a refusal.
    missing: String,
}

impl fmt::Debug for KeyVaultSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultSigner")
            .field("key", &self.key.to_string())
            .finish_non_exhaustive()
    }
}

/// How the signer's client is built beyond the credential.
#[derive(Debug, Clone, Default)]
pub struct SignerOptions {
    /// Transport and retries; `None`: keyturn's defaults.
    pub client: Option<ClientOptions>,
    /// Accept a challenge whose resource is not the vault's own domain: only for a
    /// stand-in on loopback (see `KeyVault::without_challenge_resource_check`).
    pub skip_challenge_resource_check: bool,
}

impl KeyVaultSigner {
    pub fn new(
        key: KeyUrl,
        credential: Arc<dyn TokenCredential>,
        options: SignerOptions,
    ) -> Result<Self, PortError> {
        let client_options = KeyClientOptions {
            client_options: options.client.unwrap_or_else(default_client_options),
            verify_challenge_resource: Some(!options.skip_challenge_resource_check),
            ..KeyClientOptions::default()
        };
        let client =
            KeyClient::new(key.vault(), credential, Some(client_options)).map_err(|_| {
                PortError::invalid(format!("cannot build a Key Vault client for {key}"))
            })?;
        let missing = format!(
            "the keyturn audit signer role (Microsoft.KeyVault/vaults/keys/sign/action and keys/read) on key {key}"
        );
        Ok(Self {
            client,
            key,
            missing,
        })
    }

    pub fn key(&self) -> &KeyUrl {
        &self.key
    }

    fn context<'a>(&'a self, operation: &'a str) -> FailureContext<'a> {
        FailureContext {
            operation,
            missing_permission: &self.missing,
            policy_codes: &[],
        }
    }

    /// The crate's errors through Key Vault's one mapping
    /// ([`keyvault::failure`](crate::adapters::azure::keyvault::failure)), with a
    /// disabled key told apart from a missing role.
    fn failure(&self, error: &azure_core::Error, operation: &str) -> PortError {
        if error.http_status() == Some(StatusCode::Forbidden)
            && inner_code(error).is_some_and(|code| code.as_str() == KEY_DISABLED)
        {
            return PortError::new(
                FailureKind::Invalid,
                format!(
                    "{operation}: HTTP 403 ({KEY_DISABLED}): the key is disabled in its vault; enable it or set another key"
                ),
            );
        }
        failure(error, &self.context(operation))
    }
}

#[async_trait]
impl CheckpointSigner for KeyVaultSigner {
    async fn sign(&self, message: &[u8]) -> Result<Signature, PortError> {
        let operation = format!(
            "signing an audit checkpoint with Key Vault key {}",
            self.key
        );
        let parameters = SignParameters {
            algorithm: Some(KeyVaultAlgorithm::Es256),
            value: Some(Sha256::digest(message).to_vec()),
        };
        let content = parameters
            .try_into()
            .map_err(|_| PortError::invalid(format!("{operation}: encoding the request")))?;
        let options = KeyClientSignOptions {
            key_version: self.key.version().map(str::to_owned),
            ..KeyClientSignOptions::default()
        };
        let result = self
            .client
            .sign(self.key.name(), content, Some(options))
            .await
            .map_err(|e| self.failure(&e, &operation))?
            .into_model()
            .map_err(|e| self.failure(&e, &operation))?;
        let bytes = result
            .result
            .filter(|bytes| bytes.len() == ES256_SIGNATURE_LEN)
            .ok_or_else(|| {
                PortError::invalid(format!(
                    "{operation}: the answer carries no {ES256_SIGNATURE_LEN}-byte ES256 signature"
                ))
            })?;
        // The answer's `kid` names the version that signed; a key URL without a version
        // needs it, or the checkpoint could not say which key checks it.
        let key_id = match result.kid.as_deref().map(KeyUrl::parse) {
            Some(Ok(kid)) if kid.version().is_some() && kid.name() == self.key.name() => {
                kid.to_string()
            }
            _ if self.key.version().is_some() => self.key.to_string(),
            _ => {
                return Err(PortError::invalid(format!(
                    "{operation}: the answer names no key version"
                )));
            }
        };
        Ok(Signature {
            algorithm: SignatureAlgorithm::ES256,
            key_id,
            bytes,
        })
    }

    async fn public_key(&self) -> Result<PublicKey, PortError> {
        self.public_key_version(self.key.version())
            .await
            .map(|(_, key)| key)
    }
}

impl KeyVaultSigner {
    /// The public key of `version` of the signer's key (its newest without one) and
    /// the versioned key id Key Vault names it by. Key Vault answers only the public
    /// part; an answer holding a private part is refused all the same.
    pub async fn public_key_version(
        &self,
        version: Option<&str>,
    ) -> Result<(String, PublicKey), PortError> {
        let shown = match version {
            Some(version) => format!("{}keys/{}/{version}", self.key.vault(), self.key.name()),
            None => self.key.to_string(),
        };
        let operation = format!("reading the public key of Key Vault key {shown}");
        let options = KeyClientGetKeyOptions {
            key_version: version.map(str::to_owned),
            ..KeyClientGetKeyOptions::default()
        };
        let key = self
            .client
            .get_key(self.key.name(), Some(options))
            .await
            .map_err(|e| self.failure(&e, &operation))?
            .into_model()
            .map_err(|e| self.failure(&e, &operation))?;
        let jwk = key
            .key
            .ok_or_else(|| PortError::invalid(format!("{operation}: the answer holds no key")))?;
        let kid = jwk.kid.clone().unwrap_or_else(|| shown.clone());
        let json = serde_json::to_string(&jwk)
            .map_err(|_| PortError::invalid(format!("{operation}: the key cannot be encoded")))?;
        match PublicKey::from_jwk(&json) {
            Ok(key @ PublicKey::EcP256(_)) => Ok((kid, key)),
            Ok(_) => Err(PortError::invalid(format!(
                "{operation}: not an EC P-256 key, which ES256 needs"
            ))),
            Err(problem) => Err(PortError::invalid(format!("{operation}: {problem}"))),
        }
    }
}

/// The most versions of the audit signing key one verification reads from Key Vault,
/// the configured one included.
///
/// Real rotation stays far below it: the deployment never rotates the key by itself (a
/// rotation is a new version someone makes, `infra/README.md`), and even a Key Vault
/// rotation policy at its shortest (a version expires at least 28 days after it is made)
/// would make 14 versions a year, so 256 is 18 years of the fastest routine rotation.
/// The checkpoint container is writable by design (append), so its lines can name
/// versions nobody made; without a cap, a blob of made-up versions makes `verify` send
/// one GET per line to a vault that allows 4,000 requests per 10 s and shares them with
/// production. 256 reads are at most 6.4 % of one such window.
pub const MAX_KEY_VERSIONS_READ: usize = 256;

/// Every version of the audit signing key, read from Key Vault as checkpoints name
/// them (`GET keys/{name}/{version}`: the public part only), each once, at most
/// [`MAX_KEY_VERSIONS_READ`] of them: a checkpoint naming a further version is
/// unverifiable, and nothing is fetched for it. A checkpoint whose key id is not a
/// version of the configured key (another vault, another key, no version) is forged
/// whatever its signature, and nothing is fetched for it: a forged id never sends a
/// request elsewhere.
#[derive(Debug)]
pub struct KeyVaultVersions {
    signer: KeyVaultSigner,
    /// Versions read so far, by version (lowercase); `None`: Key Vault holds no such
    /// version.
    cache: tokio::sync::Mutex<std::collections::BTreeMap<String, Option<PublicKey>>>,
    first: PublicKey,
}

impl KeyVaultVersions {
    /// Reads the configured key (its pinned version, else its newest) at once, so a
    /// missing read role is an error before any checkpoint is read.
    pub async fn new(signer: KeyVaultSigner) -> Result<Self, PortError> {
        let (kid, first) = signer.public_key_version(signer.key().version()).await?;
        let mut cache = std::collections::BTreeMap::new();
        if let Some(version) = KeyUrl::parse(&kid)
            .ok()
            .and_then(|url| url.version().map(str::to_ascii_lowercase))
        {
            cache.insert(version, Some(first.clone()));
        }
        Ok(Self {
            signer,
            cache: tokio::sync::Mutex::new(cache),
            first,
        })
    }

    /// The configured key without its version: what every key id must be a version of.
    fn expected(&self) -> String {
        format!(
            "{}keys/{}",
            self.signer.key().vault(),
            self.signer.key().name()
        )
    }
}

#[async_trait]
impl VerifyingKeys for KeyVaultVersions {
    async fn lookup(&self, key_id: &str) -> Result<KeyLookup, PortError> {
        let configured = self.signer.key();
        let version = KeyUrl::parse(key_id).ok().and_then(|url| {
            let same_key = url.vault().eq_ignore_ascii_case(configured.vault())
                && url.name().eq_ignore_ascii_case(configured.name());
            url.version()
                .filter(|_| same_key)
                .map(str::to_ascii_lowercase)
        });
        let Some(version) = version else {
            return Ok(KeyLookup::Foreign {
                expected: self.expected(),
            });
        };
        let mut cache = self.cache.lock().await;
        let found = match cache.get(&version) {
            Some(found) => found.clone(),
            None if cache.len() >= MAX_KEY_VERSIONS_READ => {
                return Ok(KeyLookup::Unverifiable {
                    reason: format!(
                        "the checkpoints name more than {MAX_KEY_VERSIONS_READ} versions of {}, the most one verification reads from Key Vault (real rotation never makes that many; made-up versions are likely), so version {version} was not read: verify with the key's real versions given as --public-key files",
                        self.expected()
                    ),
                });
            }
            None => {
                let found = match self.signer.public_key_version(Some(&version)).await {
                    Ok((_, key)) => Some(key),
                    Err(error) if error.kind == FailureKind::NotFound => None,
                    Err(error) => return Err(error),
                };
                cache.insert(version.clone(), found.clone());
                found
            }
        };
        Ok(match found {
            Some(key) => KeyLookup::Candidates(vec![key]),
            None => KeyLookup::Unknown {
                looked_in: format!(
                    "Key Vault (it holds no version {version} of {})",
                    self.expected()
                ),
            },
        })
    }

    fn held(&self) -> Vec<PublicKey> {
        vec![self.first.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_urls_parse_with_and_without_a_version_and_refuse_other_objects() {
        let versioned =
            KeyUrl::parse("https://kv-audit.vault.azure.net/keys/audit-checkpoints/0123456789abcdef0123456789abcdef")
                .expect("a versioned key URL");
        assert_eq!(versioned.name(), "audit-checkpoints");
        assert_eq!(
            versioned.version(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(versioned.vault(), "https://kv-audit.vault.azure.net/");
        let latest = KeyUrl::parse("https://kv-audit.vault.azure.net/keys/audit-checkpoints")
            .expect("a key URL without a version");
        assert_eq!(latest.version(), None);
        for refused in [
            "https://kv-audit.vault.azure.net/secrets/audit-checkpoints",
            "http://kv-audit.vault.azure.net/keys/audit-checkpoints",
            "https://kv-audit.vault.azure.net/keys/audit_checkpoints",
            "https://kv-audit.vault.azure.net/keys/a/b/c",
            "not a url",
        ] {
            assert!(KeyUrl::parse(refused).is_err(), "{refused}");
        }
    }
}
