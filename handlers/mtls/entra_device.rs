//! The `entra-device` policy: the client is an Entra ID device presenting its device
//! certificate, the device exists and is enabled, and the directory binds this very
//! certificate to it.
//!
//! Checks, in order: the leaf's subject CN is a device id (Entra issues device
//! certificates with `CN=<deviceId>`); the chain ends at the configured device-certificate
//! root (the tenant's `MS-Organization-Access` CA, through [`ChainPolicy`]); the directory
//! knows the device and it is enabled; one of its `alternativeSecurityIds` entries, any of
//! them, binds the certificate; and, when configured, the device is compliant and managed.
//!
//! # The binding
//!
//! Entra records a device certificate as an `alternativeSecurityIds` entry of type 2 whose
//! `key` is the UTF-16LE string `X509:<SHA1-TP-PUBKEY>{thumbprint}{publickeyhash}`: the
//! certificate's SHA-1 thumbprint in hex, then the base64 SHA-256 of its public key
//! ([MS-DVRJ] and [MS-DVRE] section 2.3.3, "Alt-Security-Identities"; the spec writes a
//! `+` between the two parts as notation, real entries have none). The public key hashed
//! is the subjectPublicKey bit string (what .NET's `PublicKey.EncodedKeyValue` holds);
//! the whole SubjectPublicKeyInfo is accepted too, since both name the same key.
//!
//! Directory answers are cached for a configured time, negative ones included, so a
//! device calling in a loop costs one Graph request per period, not one per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::domain::ids::DeviceId;
use crate::mtls::certificate::ClientCertificate;
use crate::mtls::chain::{ChainPolicy, ChainRejection};
use crate::mtls::thumbprints::sha1_thumbprint;
use crate::ports::PortError;
use crate::ports::directory::{AlternativeSecurityId, Device, DeviceDirectory};

/// The `alternativeSecurityIds` type Entra uses for device certificates.
pub const CERTIFICATE_BINDING_TYPE: i32 = 2;

/// The prefix of a certificate binding's key ([MS-DVRJ] section 2.3.3).
pub(crate) const BINDING_PREFIX: &str = "X509:<SHA1-TP-PUBKEY>";

/// How long a directory answer is reused. Five minutes bounds how long a device disabled
/// in Entra keeps reading secrets, while keeping a fleet of thousands of devices that
/// poll every few minutes at a few Graph requests per second, far below Graph's
/// directory-read throttling limits.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5 * 60);

/// How many devices the cache holds. One entry is well under 1 KiB; 100 000 entries
/// covers the largest single-tenant fleets while bounding memory when someone presents
/// many distinct (valid-chain, unknown) device ids.
pub(crate) const MAX_CACHED_DEVICES: usize = 100_000;

/// Why the entra-device policy refused, or could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum EntraDeviceRejection {
    #[error("the certificate's subject CN is not a device id")]
    SubjectNotDeviceId,
    #[error("the certificate does not chain to the device-certificate root: {0}")]
    Chain(ChainRejection),
    #[error("the directory knows no device {device_id}")]
    DeviceUnknown { device_id: DeviceId },
    #[error("device {device_id} is disabled")]
    DeviceDisabled { device_id: DeviceId },
    #[error("no alternativeSecurityIds entry of device {device_id} binds this certificate")]
    CertificateNotBound { device_id: DeviceId },
    #[error("device {device_id} is not compliant")]
    NotCompliant { device_id: DeviceId },
    #[error("device {device_id} is not managed")]
    NotManaged { device_id: DeviceId },
    /// Not a refusal: the directory could not answer. The caller is told to retry.
    #[error("the device directory could not answer: {0}")]
    DirectoryUnavailable(PortError),
}

impl EntraDeviceRejection {
    /// A stable snake_case code for logs and the audit log.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::SubjectNotDeviceId => "subject_not_device_id",
            Self::Chain(rejection) => rejection.reason(),
            Self::DeviceUnknown { .. } => "device_unknown",
            Self::DeviceDisabled { .. } => "device_disabled",
            Self::CertificateNotBound { .. } => "device_certificate_not_bound",
            Self::NotCompliant { .. } => "device_not_compliant",
            Self::NotManaged { .. } => "device_not_managed",
            Self::DirectoryUnavailable(_) => "directory_unavailable",
        }
    }
}

/// What the policy demands of a device beyond existing and being enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceRequirements {
    pub compliant: bool,
    pub managed: bool,
}

/// The `entra-device` policy, built once and shared by requests.
pub(crate) struct EntraDevicePolicy {
    chain: ChainPolicy,
    directory: Arc<dyn DeviceDirectory>,
    requirements: DeviceRequirements,
    ttl: chrono::Duration,
    cache: Mutex<HashMap<DeviceId, Cached>>,
}

#[derive(Clone)]
struct Cached {
    fetched: DateTime<Utc>,
    /// Shared with the requests that read it: a hit costs a reference count, not a copy
    /// of the device's bindings.
    device: Option<Arc<Device>>,
}

impl std::fmt::Debug for EntraDevicePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraDevicePolicy")
            .field("requirements", &self.requirements)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl EntraDevicePolicy {
    /// `chain` must be built with the device-certificate root as its only trust anchor.
    pub(crate) fn new(
        chain: ChainPolicy,
        directory: Arc<dyn DeviceDirectory>,
        requirements: DeviceRequirements,
        ttl: Duration,
    ) -> Self {
        Self {
            chain,
            directory,
            requirements,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The checks that depend on the certificate alone: its subject names a device and
    /// it chains to the device-certificate root at `now`. What it returns stays true
    /// until the chain's validity ends, so callers may keep it (see
    /// [`crate::mtls::verdicts`]); the directory is asked by [`Self::check_device`].
    pub(crate) fn verify_certificate(
        &self,
        leaf: &ClientCertificate,
        presented_intermediates: &[CertificateDer<'_>],
        now: DateTime<Utc>,
    ) -> Result<DeviceCertificate, EntraDeviceRejection> {
        let facts = LeafFacts::of(leaf).ok_or(EntraDeviceRejection::SubjectNotDeviceId)?;
        self.chain
            .validate(leaf, presented_intermediates, now)
            .map_err(EntraDeviceRejection::Chain)?;
        Ok(DeviceCertificate {
            device_id: facts.device_id,
            sha1: sha1_thumbprint(leaf.der().as_ref()).to_string(),
            key_hashes: facts.key_hashes,
        })
    }

    /// The directory's part: the device exists, is enabled, binds this certificate
    /// and meets the requirements. Answers come from the cache while fresh.
    pub(crate) async fn check_device(
        &self,
        certificate: &DeviceCertificate,
        now: DateTime<Utc>,
    ) -> Result<DeviceId, EntraDeviceRejection> {
        let device_id = certificate.device_id;
        let device = self
            .device(&device_id, now)
            .await
            .map_err(EntraDeviceRejection::DirectoryUnavailable)?
            .ok_or(EntraDeviceRejection::DeviceUnknown { device_id })?;
        if !device.account_enabled {
            return Err(EntraDeviceRejection::DeviceDisabled { device_id });
        }
        if !device
            .alternative_security_ids
            .iter()
            .any(|entry| binds(entry, &certificate.sha1, &certificate.key_hashes))
        {
            return Err(EntraDeviceRejection::CertificateNotBound { device_id });
        }
        if self.requirements.compliant && device.is_compliant != Some(true) {
            return Err(EntraDeviceRejection::NotCompliant { device_id });
        }
        if self.requirements.managed && device.is_managed != Some(true) {
            return Err(EntraDeviceRejection::NotManaged { device_id });
        }
        Ok(device_id)
    }

    /// The chain policy that checks device certificates, for its trust-material
    /// horizon.
    pub(crate) fn chain(&self) -> &ChainPolicy {
        &self.chain
    }

    /// The device from the cache while fresh, else from the directory. Errors are not
    /// cached: the next request asks again.
    async fn device(
        &self,
        device_id: &DeviceId,
        now: DateTime<Utc>,
    ) -> Result<Option<Arc<Device>>, PortError> {
        if let Some(cached) = self.lock().get(device_id)
            && now >= cached.fetched
            && now - cached.fetched < self.ttl
        {
            return Ok(cached.device.clone());
        }
        let device = self.directory.device(device_id).await?.map(Arc::new);
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED_DEVICES {
            cache.retain(|_, c| now >= c.fetched && now - c.fetched < self.ttl);
            if cache.len() >= MAX_CACHED_DEVICES {
                cache.clear();
            }
        }
        cache.insert(
            *device_id,
            Cached {
                fetched: now,
                device: device.clone(),
            },
        );
        Ok(device)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Cached>> {
        // The map holds plain data: a panic elsewhere cannot leave it half-updated in a
        // way that matters, so a poisoned lock is used as is.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A device certificate that chains to the device-certificate root, with what the
/// directory check needs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceCertificate {
    device_id: DeviceId,
    /// The certificate's SHA-1 thumbprint, uppercase hex, as bindings write it.
    sha1: String,
    /// SHA-256 of the subjectPublicKey bits, and of the whole SubjectPublicKeyInfo.
    key_hashes: [[u8; 32]; 2],
}

impl DeviceCertificate {}

/// What the binding check needs from the leaf.
struct LeafFacts {
    device_id: DeviceId,
    /// SHA-256 of the subjectPublicKey bits, and of the whole SubjectPublicKeyInfo.
    key_hashes: [[u8; 32]; 2],
}

impl LeafFacts {
    /// Parsed from the DER again: `ClientCertificate` keeps the subject as display text,
    /// which does not escape a comma or equals sign inside a value, so a CN could look
    /// like something it is not.
    fn of(leaf: &ClientCertificate) -> Option<Self> {
        let (_, parsed) = X509Certificate::from_der(leaf.der().as_ref()).ok()?;
        let mut names = parsed.subject().iter_common_name();
        let cn = names.next()?.as_str().ok()?;
        if names.next().is_some() {
            return None;
        }
        let device_id = DeviceId::parse(cn).ok()?;
        let spki = parsed.public_key();
        Some(Self {
            device_id,
            key_hashes: [
                Sha256::digest(&spki.subject_public_key.data).into(),
                Sha256::digest(spki.raw).into(),
            ],
        })
    }
}

/// Whether one `alternativeSecurityIds` entry binds the certificate whose SHA-1
/// thumbprint (uppercase hex) is `sha1` and whose key hashes are `key_hashes`.
/// Length of a SHA-256 digest in padded base64: 4 * ceil(32 / 3).
const BASE64_SHA256_LEN: usize = 44;

fn binds(entry: &AlternativeSecurityId, sha1: &str, key_hashes: &[[u8; 32]; 2]) -> bool {
    if entry.kind != CERTIFICATE_BINDING_TYPE {
        return false;
    }
    let Some(text) = binding_text(&entry.key) else {
        return false;
    };
    let Some(rest) = text.strip_prefix(BINDING_PREFIX) else {
        return false;
    };
    let Some((thumbprint, hash)) = rest.split_at_checked(sha1.len()) else {
        return false;
    };
    // The spec's form separates the two parts with '+', Entra's own writes none. A
    // SHA-256 in base64 is always 44 characters, and may itself begin with '+', so the
    // separator is recognised by length, never by the character alone.
    let hash = match hash.strip_prefix('+') {
        Some(rest) if hash.len() == BASE64_SHA256_LEN + 1 => rest,
        _ => hash,
    };
    let Ok(hash) = STANDARD.decode(hash) else {
        return false;
    };
    thumbprint.eq_ignore_ascii_case(sha1) && key_hashes.iter().any(|h| h.as_slice() == hash)
}

/// The key as text: UTF-16LE as Entra writes it, or UTF-8 as some tools do.
fn binding_text(key: &[u8]) -> Option<String> {
    if key.starts_with(b"X509:") {
        return String::from_utf8(key.to_vec()).ok();
    }
    if !key.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = key
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// The `key` bytes Entra would record for `certificate_der`: for tests, stand-ins and
/// operators registering devices by hand.
pub fn binding_key(certificate_der: &[u8]) -> Option<Vec<u8>> {
    let (_, parsed) = X509Certificate::from_der(certificate_der).ok()?;
    let key_hash = Sha256::digest(&parsed.public_key().subject_public_key.data);
    let text = format!(
        "{BINDING_PREFIX}{}{}",
        sha1_thumbprint(certificate_der),
        STANDARD.encode(key_hash)
    );
    Some(text.encode_utf16().flat_map(u16::to_le_bytes).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device_certificate(device_id: &DeviceId) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, device_id.to_string());
        keyturn_testkit::pki::self_signed(&params).cert_der
    }

    fn facts(der: &[u8]) -> (String, [[u8; 32]; 2]) {
        let certificate = ClientCertificate::from_der(der.to_vec()).expect("parses");
        let facts = LeafFacts::of(&certificate).expect("device certificate");
        (sha1_thumbprint(der).to_string(), facts.key_hashes)
    }

    #[test]
    fn the_binding_entra_writes_binds_its_certificate_and_no_other() {
        let id = DeviceId::new_random();
        let der = device_certificate(&id);
        let other = device_certificate(&id);
        let entry = AlternativeSecurityId {
            kind: CERTIFICATE_BINDING_TYPE,
            identity_provider: None,
            key: binding_key(&der).expect("binding"),
        };
        let (sha1, hashes) = facts(&der);
        assert!(binds(&entry, &sha1, &hashes));
        let (other_sha1, other_hashes) = facts(&other);
        assert!(!binds(&entry, &other_sha1, &other_hashes));
    }

    #[test]
    fn a_binding_of_another_type_does_not_count() {
        let id = DeviceId::new_random();
        let der = device_certificate(&id);
        let entry = AlternativeSecurityId {
            kind: 1,
            identity_provider: None,
            key: binding_key(&der).expect("binding"),
        };
        let (sha1, hashes) = facts(&der);
        assert!(!binds(&entry, &sha1, &hashes));
    }

    #[test]
    fn a_key_hash_whose_base64_begins_with_a_plus_sign_binds_with_or_without_the_separator() {
        let sha1 = "AB".repeat(20);
        // 0xF8 encodes to `+` in its first base64 character, as for one key in 64.
        let hash = [0xF8; 32];
        let hashes = [hash, [0; 32]];
        let encoded = STANDARD.encode(hash);
        assert!(encoded.starts_with('+'));
        for text in [
            format!("{BINDING_PREFIX}{sha1}{encoded}"),
            format!("{BINDING_PREFIX}{sha1}+{encoded}"),
        ] {
            let entry = AlternativeSecurityId {
                kind: CERTIFICATE_BINDING_TYPE,
                identity_provider: None,
                key: text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            };
            assert!(binds(&entry, &sha1, &hashes), "{text}");
        }
    }

    #[test]
    fn a_utf8_binding_with_the_spec_plus_sign_is_understood() {
        let id = DeviceId::new_random();
        let der = device_certificate(&id);
        let (sha1, hashes) = facts(&der);
        let text = format!(
            "{BINDING_PREFIX}{}+{}",
            sha1.to_lowercase(),
            STANDARD.encode(hashes[1])
        );
        let entry = AlternativeSecurityId {
            kind: CERTIFICATE_BINDING_TYPE,
            identity_provider: None,
            key: text.into_bytes(),
        };
        assert!(binds(&entry, &sha1, &hashes));
    }

    #[test]
    fn garbage_keys_bind_nothing() {
        let id = DeviceId::new_random();
        let (sha1, hashes) = facts(&device_certificate(&id));
        for key in [
            Vec::new(),
            vec![0xff; 3],
            b"X509:<SHA1-TP-PUBKEY>".to_vec(),
            format!("{BINDING_PREFIX}{sha1}not base64!").into_bytes(),
        ] {
            let entry = AlternativeSecurityId {
                kind: CERTIFICATE_BINDING_TYPE,
                identity_provider: None,
                key,
            };
            assert!(!binds(&entry, &sha1, &hashes));
        }
    }

    #[test]
    fn a_subject_that_is_not_a_device_id_is_not_a_device_certificate() {
        let params = rcgen::CertificateParams::new(vec!["x.example".to_owned()]).expect("params");
        let der = keyturn_testkit::pki::self_signed(&params).cert_der;
        let certificate = ClientCertificate::from_der(der).expect("parses");
        assert!(LeafFacts::of(&certificate).is_none());
    }
}
