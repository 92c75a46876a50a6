//! The `chain` policy: a client certificate is accepted when webpki builds a path from
//! it to a configured trust anchor, valid at a passed-in time, with the clientAuth
//! extended key usage, and not revoked by a configured CRL.
//!
//! webpki does the path building, signature, validity, basicConstraints, path length,
//! name constraint and CRL checks. This module adds what keyturn requires beyond it:
//! the leaf must *carry* the clientAuth EKU (webpki accepts a leaf without an EKU
//! extension), a bounded clock-skew allowance for fresh certificates, an optional
//! limit on intermediates, an explicit revocation policy, stable reason codes, and
//! keyturn's certificate profile ([`profile`](crate::mtls::profile)): how every
//! certificate of the path, the root included, is formed. A webpki trust anchor is only
//! a name and a key, so the root's certificate is kept beside it and its validity and
//! form are judged here.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use webpki::{
    EndEntityCert, ExpirationPolicy, KeyUsage, RevocationCheckDepth, RevocationOptionsBuilder,
    UnknownStatusPolicy, VerifiedPath,
};

use crate::domain::identity::{ClientIdentity, PolicyKind};
use crate::mtls::certificate::ClientCertificate;
use crate::mtls::profile::{self, AnchorFacts, NameLoad, ProfileViolation};
pub(crate) use crate::mtls::profile::{CertRole, KeyIdentifiers, LeafKeyUsage};
use crate::mtls::trust::{self, CrlSet, TrustError};

/// How far in the future a certificate's notBefore may lie and still be accepted.
///
/// A device that enrols (SCEP/Intune, ADCS autoenrolment) and calls at once presents a
/// certificate whose notBefore is the CA's "now", which can be ahead of this host's
/// clock. Five minutes is the tolerance Windows domains already live with (Kerberos'
/// default maximum clock skew), so a fleet that authenticates to AD at all is within it.
/// The allowance applies to notBefore only: an expired certificate is never accepted.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The most intermediates a client may present alongside its leaf (self-hosted TLS
/// mode; App Service forwards the leaf only). webpki builds paths of at most six
/// intermediates, so more than eight distinct certificates can only be padding or an
/// attempt to make path building expensive (RFC 4158 section 5.2 loops).
pub(crate) const MAX_PRESENTED_INTERMEDIATES: usize = 8;

/// How many times a path is rebuilt at a later notBefore within the clock-skew
/// allowance. Each rebuild moves past one certificate's notBefore; one per presented
/// intermediate, plus the leaf and a configured intermediate, covers every path this
/// policy accepts from a client.
const MAX_SKEW_RECHECKS: usize = MAX_PRESENTED_INTERMEDIATES + 2;

/// Signature algorithms accepted in certificates and CRLs: the set rustls' *ring*
/// provider verifies for TLS, fixed here rather than taken from
/// `webpki::ALL_VERIFICATION_ALGS`, whose contents change with the crate features that
/// other dependencies happen to enable.
static SUPPORTED_SIGNATURE_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_3072_8192_SHA384,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Why the chain policy refused a certificate. [`reason`](ChainRejection::reason) gives
/// a stable snake_case code; `Display` a short message. Neither carries anything secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainRejection {
    #[error("certificate is malformed: {detail}")]
    MalformedCertificate { detail: String },
    #[error("a certificate in the chain expired at {not_after} (checked at {time})")]
    Expired {
        time: DateTime<Utc>,
        not_after: DateTime<Utc>,
    },
    #[error("a certificate in the chain is not valid before {not_before} (checked at {time})")]
    NotYetValid {
        time: DateTime<Utc>,
        not_before: DateTime<Utc>,
    },
    #[error("a certificate's validity period ends before it starts")]
    InvalidValidityPeriod,
    #[error("no path to a trusted root")]
    UnknownIssuer,
    #[error("a certificate in the chain is explicitly distrusted")]
    Distrusted,
    #[error("leaf does not carry the {required} extended key usage")]
    MissingRequiredEku { required: KeyPurpose },
    #[error("a certificate in the chain is revoked")]
    Revoked,
    #[error("no CRL covers a certificate in the chain, and unknown status is rejected")]
    RevocationStatusUnknown,
    #[error("the CRL for a certificate in the chain expired at {next_update} (checked at {time})")]
    CrlExpired {
        time: DateTime<Utc>,
        next_update: DateTime<Utc>,
    },
    #[error("a CRL is not usable: {detail}")]
    InvalidCrl { detail: String },
    #[error("a signature in the chain does not verify")]
    BadSignature,
    #[error("a certificate is signed with an unsupported algorithm or key: {detail}")]
    UnsupportedSignatureAlgorithm { detail: String },
    #[error("the chain is longer than allowed")]
    PathTooLong,
    #[error("an intermediate's basicConstraints pathLenConstraint is exceeded")]
    PathLenConstraintViolated,
    #[error("a certificate carries a critical extension that is not understood")]
    UnsupportedCriticalExtension,
    #[error("a CA certificate was presented as the leaf")]
    CaUsedAsEndEntity,
    #[error("a certificate that is not a CA was used as an issuer")]
    EndEntityUsedAsCa,
    #[error("a name in the chain violates an issuer's name constraints: {detail}")]
    NameConstraintViolation { detail: String },
    #[error("path building exceeded its work limit: {detail}")]
    PathBuildingLimitExceeded { detail: String },
    #[error(
        "the client presented {count} intermediates; at most {MAX_PRESENTED_INTERMEDIATES} are accepted"
    )]
    TooManyIntermediates { count: usize },
    #[error("certificate is not valid: {detail}")]
    Invalid { detail: String },
    #[error("the {role}'s public key is not allowed: {detail}")]
    ForbiddenPublicKey { role: CertRole, detail: String },
    #[error("the {role}'s serial number is not allowed: {detail}")]
    InvalidSerialNumber { role: CertRole, detail: String },
    #[error("the {role}'s key identifiers do not conform: {detail}")]
    InvalidKeyIdentifiers { role: CertRole, detail: String },
    #[error("the {role}'s basicConstraints do not conform: {detail}")]
    InvalidBasicConstraints { role: CertRole, detail: String },
    #[error("the {role}'s keyUsage does not conform: {detail}")]
    InvalidKeyUsage { role: CertRole, detail: String },
    #[error("the {role}'s extKeyUsage does not conform: {detail}")]
    InvalidExtendedKeyUsage { role: CertRole, detail: String },
    #[error("the {role}'s subject does not conform: {detail}")]
    InvalidSubject { role: CertRole, detail: String },
    #[error("the {role}'s subjectAltName does not conform: {detail}")]
    InvalidSubjectAltName { role: CertRole, detail: String },
    #[error("the {role}'s nameConstraints do not conform: {detail}")]
    InvalidNameConstraints { role: CertRole, detail: String },
    #[error("the {role}'s authorityInfoAccess does not conform: {detail}")]
    InvalidAuthorityInfoAccess { role: CertRole, detail: String },
    #[error("the {role}'s policyConstraints do not conform: {detail}")]
    InvalidPolicyConstraints { role: CertRole, detail: String },
}

/// Stands in for a [`ChainRejection`] raised inside webpki's per-path callback, which can
/// only return a webpki error: the rejection itself is kept aside and returned when
/// webpki's final error is this one. Chosen because webpki ranks it below every error
/// about a signature, validity, revocation or EKU, so a more telling failure of another
/// candidate path still wins, and because it already means "this path is refused".
const PATH_REFUSED: webpki::Error = webpki::Error::MaximumPathDepthExceeded;

/// The extended key usage the leaf must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyPurpose {
    /// id-kp-clientAuth (1.3.6.1.5.5.7.3.2): what every keyturn endpoint requires.
    ClientAuth,
    /// id-kp-serverAuth (1.3.6.1.5.5.7.3.1). keyturn never requires it of a client;
    /// it exists so the x509-limbo conformance suite, whose cases are mostly
    /// server-profile chains, can exercise this same code path.
    ServerAuth,
}

/// How revocation is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationPolicy {
    /// No revocation checking. Must be chosen explicitly: the default checks.
    NotChecked,
    /// Check against the policy's [`CrlSet`].
    Crl {
        /// Which certificates are checked: the leaf only, or the leaf and every
        /// intermediate (trust anchors are never checked: a root is removed from the
        /// configuration, not revoked).
        scope: RevocationScope,
        /// What happens to a certificate no loaded CRL covers (no CRL from its issuer,
        /// or no CRLs loaded at all).
        unknown_status: UnknownStatus,
        /// What happens when the covering CRL's nextUpdate has passed.
        expired_crl: ExpiredCrl,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationScope {
    EndEntity,
    Chain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownStatus {
    /// Reject as `revocation_status_unknown`.
    Reject,
    /// Accept as if not revoked.
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredCrl {
    /// Reject as `crl_expired`: a stale CRL cannot show a recent revocation.
    Reject,
    /// Use the CRL anyway.
    Accept,
}

/// Options of the chain policy. Start from `ChainOptions::default()` and change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChainOptions {
    pub purpose: KeyPurpose,
    /// See [`DEFAULT_CLOCK_SKEW`].
    pub clock_skew: Duration,
    pub revocation: RevocationPolicy,
    /// The most intermediates a path may have, not counting self-issued ones (RFC 5280
    /// section 6.1's max_path_length). `None` leaves webpki's own limit of six.
    pub max_intermediates: Option<usize>,
    /// Whether the key identifier rules apply (see [`KeyIdentifiers`]). Required by
    /// default; the entra-device policy turns them off, since Microsoft does not document
    /// the profile of `MS-Organization-Access` certificates and a tenant cannot reissue
    /// them.
    pub key_identifiers: KeyIdentifiers,
    /// Whether a leaf's keyUsage must allow signing (see [`LeafKeyUsage`]). Required by
    /// default; off for the entra-device policy, for the same reason as key identifiers.
    pub leaf_key_usage: LeafKeyUsage,
}

/// The `chain` policy, built once from trust material and shared by requests.
pub struct ChainPolicy {
    anchors: Vec<TrustAnchor<'static>>,
    /// What the profile says of each root, by the index of its anchor.
    roots: Vec<RootProfile>,
    intermediates: Vec<CertificateDer<'static>>,
    /// The profile's verdict on each configured intermediate, by its DER.
    intermediate_verdicts: HashMap<Vec<u8>, Judged>,
    crls: RwLock<Arc<CrlSet>>,
    options: ChainOptions,
    /// The earliest notAfter of the roots and configured intermediates.
    material_not_after: Option<DateTime<Utc>>,
}

/// A root as the profile sees it, read once when the policy is built.
struct RootProfile {
    verdict: Result<(), ProfileViolation>,
    /// `None` when the certificate could not be parsed; `verdict` then rejects.
    facts: Option<AnchorFacts>,
    load: NameLoad,
}

/// An intermediate as the profile sees it.
#[derive(Debug, Clone)]
struct Judged {
    verdict: Result<(), ProfileViolation>,
    load: NameLoad,
}

impl Default for ChainOptions {
    /// clientAuth required, [`DEFAULT_CLOCK_SKEW`], and fail-closed revocation: every
    /// certificate below the root must be covered by a current CRL.
    fn default() -> Self {
        Self {
            purpose: KeyPurpose::ClientAuth,
            clock_skew: DEFAULT_CLOCK_SKEW,
            revocation: RevocationPolicy::STRICT,
            max_intermediates: None,
            key_identifiers: KeyIdentifiers::Required,
            leaf_key_usage: LeafKeyUsage::SigningRequired,
        }
    }
}

impl RevocationPolicy {
    /// Leaf and intermediates checked, unknown status rejected, expired CRLs rejected.
    pub(crate) const STRICT: Self = Self::Crl {
        scope: RevocationScope::Chain,
        unknown_status: UnknownStatus::Reject,
        expired_crl: ExpiredCrl::Reject,
    };
}

impl ChainRejection {
    /// A stable snake_case code naming the failure, for responses, logs and audit.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedCertificate { .. } => "malformed_certificate",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::InvalidValidityPeriod => "invalid_validity_period",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Distrusted => "distrusted",
            Self::MissingRequiredEku {
                required: KeyPurpose::ClientAuth,
            } => "missing_client_auth_eku",
            Self::MissingRequiredEku {
                required: KeyPurpose::ServerAuth,
            } => "missing_server_auth_eku",
            Self::Revoked => "revoked",
            Self::RevocationStatusUnknown => "revocation_status_unknown",
            Self::CrlExpired { .. } => "crl_expired",
            Self::InvalidCrl { .. } => "invalid_crl",
            Self::BadSignature => "bad_signature",
            Self::UnsupportedSignatureAlgorithm { .. } => "unsupported_signature_algorithm",
            Self::PathTooLong => "path_too_long",
            Self::PathLenConstraintViolated => "path_len_constraint_violated",
            Self::UnsupportedCriticalExtension => "unsupported_critical_extension",
            Self::CaUsedAsEndEntity => "ca_used_as_end_entity",
            Self::EndEntityUsedAsCa => "end_entity_used_as_ca",
            Self::NameConstraintViolation { .. } => "name_constraint_violation",
            Self::PathBuildingLimitExceeded { .. } => "path_building_limit_exceeded",
            Self::TooManyIntermediates { .. } => "too_many_intermediates",
            Self::Invalid { .. } => "invalid_certificate",
            Self::ForbiddenPublicKey { .. } => "forbidden_public_key",
            Self::InvalidSerialNumber { .. } => "invalid_serial_number",
            Self::InvalidKeyIdentifiers { .. } => "invalid_key_identifiers",
            Self::InvalidBasicConstraints { .. } => "invalid_basic_constraints",
            Self::InvalidKeyUsage { .. } => "invalid_key_usage",
            Self::InvalidExtendedKeyUsage { .. } => "invalid_extended_key_usage",
            Self::InvalidSubject { .. } => "invalid_subject",
            Self::InvalidSubjectAltName { .. } => "invalid_subject_alt_name",
            Self::InvalidNameConstraints { .. } => "invalid_name_constraints",
            Self::InvalidAuthorityInfoAccess { .. } => "invalid_authority_info_access",
            Self::InvalidPolicyConstraints { .. } => "invalid_policy_constraints",
        }
    }

    fn from_profile(violation: ProfileViolation, role: CertRole) -> Self {
        use ProfileViolation as V;
        match violation {
            V::Unparseable { detail } => Self::MalformedCertificate {
                detail: format!("{role}: {detail}"),
            },
            V::ForbiddenPublicKey { detail } => Self::ForbiddenPublicKey { role, detail },
            V::InvalidSerialNumber { detail } => Self::InvalidSerialNumber { role, detail },
            V::InvalidKeyIdentifiers { detail } => Self::InvalidKeyIdentifiers { role, detail },
            V::InvalidBasicConstraints { detail } => Self::InvalidBasicConstraints { role, detail },
            V::InvalidKeyUsage { detail } => Self::InvalidKeyUsage { role, detail },
            V::InvalidExtendedKeyUsage { detail } => Self::InvalidExtendedKeyUsage { role, detail },
            V::InvalidSubject { detail } => Self::InvalidSubject { role, detail },
            V::InvalidSubjectAltName { detail } => Self::InvalidSubjectAltName { role, detail },
            V::InvalidNameConstraints { detail } => Self::InvalidNameConstraints { role, detail },
            V::InvalidAuthorityInfoAccess { detail } => {
                Self::InvalidAuthorityInfoAccess { role, detail }
            }
            V::InvalidPolicyConstraints { detail } => {
                Self::InvalidPolicyConstraints { role, detail }
            }
            V::TooManyNameConstraintChecks { .. } => Self::PathBuildingLimitExceeded {
                detail: violation.to_string(),
            },
            V::UnsupportedCriticalExtension { .. } => Self::UnsupportedCriticalExtension,
            V::InvalidCrl { detail } => Self::InvalidCrl { detail },
        }
    }

    fn from_webpki(error: webpki::Error, purpose: KeyPurpose) -> Self {
        use webpki::Error as E;
        let detail = || format!("{error:?}");
        match error {
            E::CertExpired { time, not_after } => Self::Expired {
                time: to_utc(time),
                not_after: to_utc(not_after),
            },
            E::CertNotValidYet { time, not_before } => Self::NotYetValid {
                time: to_utc(time),
                not_before: to_utc(not_before),
            },
            E::InvalidCertValidity => Self::InvalidValidityPeriod,
            E::UnknownIssuer => Self::UnknownIssuer,
            E::CertDistrusted => Self::Distrusted,
            E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => {
                Self::MissingRequiredEku { required: purpose }
            }
            E::CertRevoked => Self::Revoked,
            E::UnknownRevocationStatus => Self::RevocationStatusUnknown,
            E::CrlExpired { time, next_update } => Self::CrlExpired {
                time: to_utc(time),
                next_update: to_utc(next_update),
            },
            E::InvalidCrlSignatureForPublicKey
            | E::IssuerNotCrlSigner
            | E::InvalidCrlNumber
            | E::UnsupportedCrlVersion
            | E::UnsupportedDeltaCrl
            | E::UnsupportedIndirectCrl
            | E::UnsupportedCrlIssuingDistributionPoint
            | E::UnsupportedRevocationReason
            | E::UnsupportedRevocationReasonsPartitioning
            | E::UnsupportedCrlSignatureAlgorithmContext(_)
            | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => {
                Self::InvalidCrl { detail: detail() }
            }
            E::InvalidSignatureForPublicKey => Self::BadSignature,
            E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
            | E::SignatureAlgorithmMismatch => {
                Self::UnsupportedSignatureAlgorithm { detail: detail() }
            }
            E::MaximumPathDepthExceeded => Self::PathTooLong,
            E::PathLenConstraintViolated => Self::PathLenConstraintViolated,
            E::UnsupportedCriticalExtension => Self::UnsupportedCriticalExtension,
            E::CaUsedAsEndEntity => Self::CaUsedAsEndEntity,
            E::EndEntityUsedAsCa => Self::EndEntityUsedAsCa,
            E::NameConstraintViolation
            | E::MalformedNameConstraint
            | E::InvalidNetworkMaskConstraint
            | E::MalformedDnsIdentifier
            | E::UnsupportedNameType => Self::NameConstraintViolation { detail: detail() },
            E::MaximumSignatureChecksExceeded
            | E::MaximumPathBuildCallsExceeded
            | E::MaximumNameConstraintComparisonsExceeded => {
                Self::PathBuildingLimitExceeded { detail: detail() }
            }
            E::BadDer
            | E::BadDerTime
            | E::TrailingData(_)
            | E::MalformedExtensions
            | E::ExtensionValueInvalid
            | E::UnsupportedCertVersion
            | E::InvalidSerialNumber => Self::MalformedCertificate { detail: detail() },
            // Includes the unit variants webpki 0.103 deprecated and no longer returns.
            _ => Self::Invalid { detail: detail() },
        }
    }
}

impl std::fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ClientAuth => "clientAuth",
            Self::ServerAuth => "serverAuth",
        })
    }
}

impl ChainPolicy {
    /// Builds the policy. `roots` become trust anchors; `intermediates` are offered to
    /// path building for every request, in addition to what a client presents.
    pub fn new(
        roots: &[CertificateDer<'_>],
        intermediates: Vec<CertificateDer<'static>>,
        crls: CrlSet,
        options: ChainOptions,
    ) -> Result<Self, TrustError> {
        let (anchors, roots): (Vec<_>, Vec<_>) = trust::roots(roots)?
            .into_iter()
            .map(|root| {
                let profile = match profile::parse(&root.der) {
                    Ok(cert) => RootProfile {
                        verdict: profile::check_certificate(
                            &cert,
                            CertRole::TrustAnchor,
                            options.key_identifiers,
                        ),
                        facts: Some(profile::anchor_facts(&cert)),
                        load: profile::name_load(&cert),
                    },
                    Err(violation) => RootProfile {
                        verdict: Err(violation),
                        facts: None,
                        load: NameLoad::default(),
                    },
                };
                (root.anchor, profile)
            })
            .unzip();
        let intermediate_verdicts = intermediates
            .iter()
            .map(|der| {
                (
                    der.to_vec(),
                    judge_intermediate(der, options.key_identifiers),
                )
            })
            .collect();
        // A root that did not parse is refused by its verdict; nothing relying on it is
        // kept either.
        let material_not_after = roots
            .iter()
            .map(|root: &RootProfile| {
                root.facts
                    .as_ref()
                    .map_or(DateTime::<Utc>::MIN_UTC, |f| f.not_after)
            })
            .chain(intermediates.iter().map(|der| not_after_of(der.as_ref())))
            .min();
        Ok(Self {
            anchors,
            roots,
            intermediates,
            intermediate_verdicts,
            crls: RwLock::new(Arc::new(crls)),
            options,
            material_not_after,
        })
    }

    /// Builds the policy from files: a roots bundle, intermediate bundles and CRL files,
    /// each PEM or DER.
    pub(crate) fn from_files(
        roots: &Path,
        intermediates: &[PathBuf],
        crls: &[PathBuf],
        options: ChainOptions,
    ) -> Result<Self, TrustError> {
        let roots = trust::certificates_from_file(roots)?;
        let mut pool = Vec::new();
        for path in intermediates {
            pool.extend(trust::certificates_from_file(path)?);
        }
        Self::new(&roots, pool, CrlSet::load(crls)?, options)
    }

    /// The earliest instant at which the policy's own material can change a decision:
    /// a root or configured intermediate expiring, or (when revocation is checked) the
    /// CRLs in force going stale. `None` when nothing of it expires.
    pub(crate) fn horizon(&self) -> Option<DateTime<Utc>> {
        let crls = match self.options.revocation {
            RevocationPolicy::NotChecked => None,
            RevocationPolicy::Crl { .. } => self.crls().next_update(),
        };
        self.material_not_after.into_iter().chain(crls).min()
    }

    /// The CRLs in force.
    pub(crate) fn crls(&self) -> Arc<CrlSet> {
        // A poisoned lock still holds a whole `Arc`: the writer only swaps pointers.
        self.crls
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the CRLs; validations already running finish with the old set.
    pub(crate) fn replace_crls(&self, crls: CrlSet) {
        *self
            .crls
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(crls);
    }

    /// Reads the CRL files again and swaps them in. On error the current set stays
    /// in force and the error says which file failed. Returns the number of CRLs loaded.
    pub(crate) fn reload_crls(&self) -> Result<usize, TrustError> {
        let fresh = self.crls().reload()?;
        let count = fresh.len();
        self.replace_crls(fresh);
        Ok(count)
    }

    /// Validates `leaf` (with whatever intermediates the client presented) at `now`.
    pub fn validate(
        &self,
        leaf: &ClientCertificate,
        presented_intermediates: &[CertificateDer<'_>],
        now: DateTime<Utc>,
    ) -> Result<ClientIdentity, ChainRejection> {
        if presented_intermediates.len() > MAX_PRESENTED_INTERMEDIATES {
            return Err(ChainRejection::TooManyIntermediates {
                count: presented_intermediates.len(),
            });
        }
        let purpose = self.options.purpose;
        let end_entity = EndEntityCert::try_from(leaf.der())
            .map_err(|e| ChainRejection::from_webpki(e, purpose))?;
        let pool: Vec<CertificateDer<'_>> = self
            .intermediates
            .iter()
            .cloned()
            .chain(presented_intermediates.iter().cloned())
            .collect();
        let crls = self.crls();
        // Each presented intermediate is parsed and judged once, however many candidate
        // paths it appears in.
        let presented: HashMap<&[u8], Judged> = presented_intermediates
            .iter()
            .map(|der| {
                (
                    der.as_ref(),
                    judge_intermediate(der, self.options.key_identifiers),
                )
            })
            .collect();
        let leaf_cert = profile::parse(leaf.der())
            .map_err(|violation| ChainRejection::from_profile(violation, CertRole::EndEntity))?;
        let paths = PathContext {
            end_entity: &end_entity,
            leaf_load: profile::name_load(&leaf_cert),
            pool: &pool,
            presented: &presented,
            crls: &crls,
        };

        let mut at = now;
        let mut result = self.build_path(&paths, at);
        // A notBefore within the allowance is rechecked at that notBefore, not at the end
        // of the allowance: expiry and CRL freshness are judged at the earliest instant
        // every notBefore has passed, the closest to `now` there is, so only notBefore
        // gets the benefit of the doubt. Each recheck moves to a later notBefore.
        for _ in 0..MAX_SKEW_RECHECKS {
            match result {
                Err(ChainRejection::NotYetValid { not_before, .. })
                    if not_before > at && not_before <= now + self.options.clock_skew =>
                {
                    at = not_before;
                    result = self.build_path(&paths, at);
                }
                _ => break,
            }
        }
        result?;

        if !leaf_carries_purpose(leaf, purpose) {
            return Err(ChainRejection::MissingRequiredEku { required: purpose });
        }
        // The leaf's own profile is judged once a trusted CA is known to have issued it,
        // so that a stranger's certificate is reported as an unknown issuer.
        profile::check_certificate(
            &leaf_cert,
            CertRole::EndEntity,
            self.options.key_identifiers,
        )
        .and_then(|()| match self.options.leaf_key_usage {
            LeafKeyUsage::SigningRequired => profile::leaf_key_usage(&leaf_cert),
            LeafKeyUsage::NotChecked => Ok(()),
        })
        .map_err(|violation| ChainRejection::from_profile(violation, CertRole::EndEntity))?;
        Ok(leaf.clone().into_identity(PolicyKind::Chain))
    }

    fn build_path(&self, paths: &PathContext<'_>, at: DateTime<Utc>) -> Result<(), ChainRejection> {
        let time = unix_time(at);
        let crls = paths.crls;
        let purpose = self.options.purpose;
        let usage = match purpose {
            KeyPurpose::ClientAuth => KeyUsage::client_auth(),
            KeyPurpose::ServerAuth => KeyUsage::server_auth(),
        };
        let crl_refs = crls.webpki_crls();
        let revocation = match self.options.revocation {
            RevocationPolicy::NotChecked => None,
            RevocationPolicy::Crl {
                scope,
                unknown_status,
                expired_crl,
            } => match RevocationOptionsBuilder::new(&crl_refs) {
                Ok(builder) => Some(
                    builder
                        .with_depth(match scope {
                            RevocationScope::EndEntity => RevocationCheckDepth::EndEntity,
                            RevocationScope::Chain => RevocationCheckDepth::Chain,
                        })
                        .with_status_policy(match unknown_status {
                            UnknownStatus::Reject => UnknownStatusPolicy::Deny,
                            UnknownStatus::Allow => UnknownStatusPolicy::Allow,
                        })
                        .with_expiration_policy(match expired_crl {
                            ExpiredCrl::Reject => ExpirationPolicy::Enforce,
                            ExpiredCrl::Accept => ExpirationPolicy::Ignore,
                        })
                        .build(),
                ),
                // webpki needs at least one CRL. With none loaded every status is
                // unknown, so the unknown-status rule decides alone.
                Err(_) => match unknown_status {
                    UnknownStatus::Reject => {
                        return Err(ChainRejection::RevocationStatusUnknown);
                    }
                    UnknownStatus::Allow => None,
                },
            },
        };

        // The first path refused by keyturn's own checks, and why.
        let refused: RefCell<Option<ChainRejection>> = RefCell::new(None);
        let path_check = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
            self.check_path(path, paths, at).map_err(|rejection| {
                refused.borrow_mut().get_or_insert(rejection);
                PATH_REFUSED
            })
        };

        let result = paths.end_entity.verify_for_usage(
            SUPPORTED_SIGNATURE_ALGORITHMS,
            &self.anchors,
            paths.pool,
            time,
            usage,
            revocation,
            Some(&path_check),
        );
        match result {
            Ok(_) => Ok(()),
            Err(PATH_REFUSED) => Err(refused.into_inner().unwrap_or(ChainRejection::PathTooLong)),
            Err(e) => Err(ChainRejection::from_webpki(e, purpose)),
        }
    }

    /// keyturn's checks of a path webpki has verified: its length, the profile of each
    /// intermediate and of the root, the root's validity at `at`, and whether a CRL in the
    /// root's name may be used.
    fn check_path(
        &self,
        path: &VerifiedPath<'_>,
        paths: &PathContext<'_>,
        at: DateTime<Utc>,
    ) -> Result<(), ChainRejection> {
        if let Some(max) = self.options.max_intermediates
            && logical_intermediates(path) > max
        {
            return Err(ChainRejection::PathTooLong);
        }
        // Leaf first, root last, for the name-constraint work limit.
        let mut loads = vec![paths.leaf_load];
        for cert in path.intermediate_certificates() {
            let der = cert.der();
            let judged = match self
                .intermediate_verdicts
                .get(der.as_ref())
                .or_else(|| paths.presented.get(der.as_ref()))
            {
                Some(judged) => judged.clone(),
                // webpki only builds from the pool it was given; judged afresh all the same.
                None => judge_intermediate(&der, self.options.key_identifiers),
            };
            judged
                .verdict
                .map_err(|v| ChainRejection::from_profile(v, CertRole::Intermediate))?;
            loads.push(judged.load);
        }

        // webpki hands back a reference into the anchors it was given, which identifies
        // the root even when two roots share a name and key.
        let anchor = path.anchor();
        let Some(root) = self
            .anchors
            .iter()
            .position(|a| std::ptr::eq(a, anchor))
            .and_then(|index| self.roots.get(index))
        else {
            return Err(ChainRejection::Invalid {
                detail: "the path ends at a trust anchor that is not configured".to_owned(),
            });
        };
        root.verdict
            .clone()
            .map_err(|v| ChainRejection::from_profile(v, CertRole::TrustAnchor))?;
        loads.push(root.load);
        profile::name_constraint_work(&loads)
            .map_err(|v| ChainRejection::from_profile(v, CertRole::TrustAnchor))?;
        let Some(facts) = &root.facts else {
            return Err(ChainRejection::MalformedCertificate {
                detail: "root: cannot be parsed".to_owned(),
            });
        };
        // RFC 5280 section 6.1 leaves a trust anchor's validity to the relying party;
        // keyturn does not trust a root outside its own validity period. Compared in
        // whole seconds, as webpki compares the rest of the path.
        let at = to_utc(unix_time(at));
        if at < facts.not_before {
            return Err(ChainRejection::NotYetValid {
                time: at,
                not_before: facts.not_before,
            });
        }
        if at > facts.not_after {
            return Err(ChainRejection::Expired {
                time: at,
                not_after: facts.not_after,
            });
        }
        // webpki checks cRLSign of an intermediate that signs a CRL, but has no keyUsage
        // for a root: a root whose keyUsage leaves out cRLSign must not be the issuer of
        // a CRL that this path is checked against (RFC 5280 section 4.2.1.3).
        if !facts.may_sign_crls && self.consults_root_crl(path) {
            let root_subject = anchor.subject.as_ref();
            if paths
                .crls
                .webpki_crls()
                .iter()
                .any(|crl| crl.issuer() == root_subject)
            {
                return Err(ChainRejection::InvalidCrl {
                    detail: "a CRL is issued in the name of a root whose keyUsage lacks cRLSign"
                        .to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Whether revocation checking of `path` reads a CRL issued by its root: the
    /// certificate directly below the root is checked.
    fn consults_root_crl(&self, path: &VerifiedPath<'_>) -> bool {
        match self.options.revocation {
            RevocationPolicy::NotChecked => false,
            RevocationPolicy::Crl {
                scope: RevocationScope::Chain,
                ..
            } => true,
            RevocationPolicy::Crl {
                scope: RevocationScope::EndEntity,
                ..
            } => path.intermediate_certificates().next().is_none(),
        }
    }
}

/// What every candidate path of one validation shares.
struct PathContext<'a> {
    end_entity: &'a EndEntityCert<'a>,
    leaf_load: NameLoad,
    pool: &'a [CertificateDer<'a>],
    presented: &'a HashMap<&'a [u8], Judged>,
    crls: &'a CrlSet,
}

/// The profile's verdict on a certificate used as an intermediate.
fn judge_intermediate(der: &CertificateDer<'_>, key_identifiers: KeyIdentifiers) -> Judged {
    match profile::parse(der) {
        Ok(cert) => Judged {
            verdict: profile::check_certificate(&cert, CertRole::Intermediate, key_identifiers),
            load: profile::name_load(&cert),
        },
        Err(violation) => Judged {
            verdict: Err(violation),
            load: NameLoad::default(),
        },
    }
}

/// Intermediates that count towards a path length: self-issued certificates (a CA
/// re-keying under its own name) do not (RFC 5280 section 6.1.4 (l)).
fn logical_intermediates(path: &VerifiedPath<'_>) -> usize {
    path.intermediate_certificates()
        .filter(|cert| cert.subject() != cert.issuer())
        .count()
}

/// webpki accepts a leaf without any EKU extension for client authentication (RFC 5280
/// reads a missing EKU as "any purpose"). keyturn requires the purpose to be stated:
/// a certificate issued for something else (code signing, S/MIME, a web server) must
/// not open the secret endpoint.
fn leaf_carries_purpose(leaf: &ClientCertificate, purpose: KeyPurpose) -> bool {
    match purpose {
        KeyPurpose::ClientAuth => leaf.extended_key_usage().client_auth,
        KeyPurpose::ServerAuth => leaf.extended_key_usage().server_auth,
    }
}

/// webpki counts whole seconds since the epoch. A `now` before 1970 can only come
/// from a broken clock; it becomes the epoch, before which no usable certificate is
/// valid, so the result is a rejection rather than an acceptance.
fn unix_time(at: DateTime<Utc>) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(at.timestamp()).unwrap_or(0),
    ))
}

fn to_utc(time: UnixTime) -> DateTime<Utc> {
    // webpki's times come from X.509 UTCTime/GeneralizedTime, years 1950 to 9999, all
    // representable; the epoch stands in should that ever change.
    i64::try_from(time.as_secs())
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// A certificate's notAfter. A certificate x509-parser cannot read stands in with the
/// earliest time there is, so nothing relying on it is kept.
pub(crate) fn not_after_of(der: &[u8]) -> DateTime<Utc> {
    <x509_parser::prelude::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(der)
        .ok()
        .and_then(|(_, cert)| DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use keyturn_testkit::pki::{self, TestCa, rcgen};
    use rcgen::{
        CertificateParams, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SerialNumber,
    };
    use rustls_pki_types::CertificateRevocationListDer;

    use super::*;

    /// A CA of the shared test PKI, with its certificate as rustls holds it.
    struct Ca {
        ca: TestCa,
        der: CertificateDer<'static>,
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap()
    }

    fn ca(name: &str, parent: Option<&Ca>) -> Ca {
        ca_with(name, parent, KeyPair::generate().unwrap(), |_| {})
    }

    /// A CA valid 2025..2040 with a given key; `adjust` changes its parameters.
    fn ca_with(
        name: &str,
        parent: Option<&Ca>,
        key: KeyPair,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Ca {
        let mut params = pki::ca_params(name);
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        adjust(&mut params);
        let ca = TestCa::new(params, parent.map(|p| &p.ca), key);
        Ca {
            der: CertificateDer::from(ca.cert_der().to_vec()),
            ca,
        }
    }

    /// A device certificate with the clientAuth EKU, valid 2029..2031; `adjust` changes it.
    fn leaf(issuer: &Ca, adjust: impl FnOnce(&mut CertificateParams)) -> ClientCertificate {
        let mut params = pki::client_params("device-7", &["device-7.example.com"]);
        params.serial_number = Some(SerialNumber::from(7u64));
        params.not_before = rcgen::date_time_ymd(2029, 1, 1);
        params.not_after = rcgen::date_time_ymd(2031, 1, 1);
        adjust(&mut params);
        ClientCertificate::from_der(issuer.ca.issue(&params).cert_der).unwrap()
    }

    fn crl(
        issuer: &Ca,
        revoked: &[u64],
        next_update: time::OffsetDateTime,
    ) -> CertificateRevocationListDer<'static> {
        CertificateRevocationListDer::from(
            issuer
                .ca
                .crl_with(
                    revoked,
                    rcgen::date_time_ymd(2030, 2, 1),
                    rcgen::date_time_ymd(2030, 1, 1),
                    next_update,
                )
                .der,
        )
    }

    fn policy(root: &Ca, intermediate: &Ca, options: ChainOptions) -> ChainPolicy {
        ChainPolicy::new(
            std::slice::from_ref(&root.der),
            vec![intermediate.der.clone()],
            CrlSet::empty(),
            options,
        )
        .unwrap()
    }

    fn without_revocation() -> ChainOptions {
        ChainOptions {
            revocation: RevocationPolicy::NotChecked,
            ..ChainOptions::default()
        }
    }

    fn reason(result: Result<ClientIdentity, ChainRejection>) -> &'static str {
        result.expect_err("the policy must reject").reason()
    }

    #[test]
    fn a_leaf_issued_through_an_intermediate_is_accepted() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});

        let identity = policy(&root, &issuing, without_revocation())
            .validate(&device, &[], now())
            .unwrap();

        assert_eq!(identity.decided_by(), PolicyKind::Chain);
        assert_eq!(identity.thumbprint(), device.thumbprint());
        assert_eq!(identity.subject(), "CN=device-7");
        assert_eq!(identity.issuer(), "CN=issuing");
        assert_eq!(identity.serial_hex(), "07");
        assert_eq!(
            identity.not_after(),
            Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn an_intermediate_presented_by_the_client_completes_the_path() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});
        let policy = ChainPolicy::new(
            std::slice::from_ref(&root.der),
            Vec::new(),
            CrlSet::empty(),
            without_revocation(),
        )
        .unwrap();

        assert_eq!(
            reason(policy.validate(&device, &[], now())),
            "unknown_issuer"
        );
        assert!(
            policy
                .validate(&device, std::slice::from_ref(&issuing.der), now())
                .is_ok()
        );
    }

    #[test]
    fn an_expired_leaf_is_rejected_as_expired() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |p| p.not_after = rcgen::date_time_ymd(2030, 5, 1));

        let rejection = policy(&root, &issuing, without_revocation())
            .validate(&device, &[], now())
            .unwrap_err();

        assert_eq!(rejection.reason(), "expired");
        assert_eq!(
            rejection,
            ChainRejection::Expired {
                time: now(),
                not_after: Utc.with_ymd_and_hms(2030, 5, 1, 0, 0, 0).unwrap()
            }
        );
    }

    #[test]
    fn a_leaf_not_yet_valid_is_rejected_as_not_yet_valid() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |p| {
            p.not_before = rcgen::date_time_ymd(2030, 7, 1)
        });

        assert_eq!(
            reason(policy(&root, &issuing, without_revocation()).validate(&device, &[], now())),
            "not_yet_valid"
        );
    }

    #[test]
    fn a_leaf_issued_moments_ahead_of_our_clock_is_accepted_within_the_skew() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |p| {
            p.not_before =
                time::OffsetDateTime::from_unix_timestamp(now().timestamp() + 120).unwrap()
        });
        let policy = policy(&root, &issuing, without_revocation());

        assert!(policy.validate(&device, &[], now()).is_ok());
        let mut strict = without_revocation();
        strict.clock_skew = Duration::ZERO;
        let root_again = ChainPolicy::new(
            std::slice::from_ref(&root.der),
            vec![issuing.der.clone()],
            CrlSet::empty(),
            strict,
        )
        .unwrap();
        assert_eq!(
            reason(root_again.validate(&device, &[], now())),
            "not_yet_valid"
        );
    }

    #[test]
    fn a_leaf_ahead_of_our_clock_is_judged_against_a_crl_fresh_now() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let in_minutes =
            |m: i64| time::OffsetDateTime::from_unix_timestamp(now().timestamp() + m * 60).unwrap();
        let device = leaf(&issuing, |p| p.not_before = in_minutes(1));
        let crls = CrlSet::from_der_list(&[
            crl(&root, &[], rcgen::date_time_ymd(2031, 1, 1)),
            crl(&issuing, &[], in_minutes(2)),
        ])
        .unwrap();
        let policy = ChainPolicy::new(
            std::slice::from_ref(&root.der),
            vec![issuing.der.clone()],
            crls,
            ChainOptions::default(),
        )
        .unwrap();

        assert!(
            policy.validate(&device, &[], now()).is_ok(),
            "the CRL is fresh for two more minutes; the skew allowance must not age it"
        );
        assert_eq!(
            reason(policy.validate(&device, &[], now() + chrono::TimeDelta::minutes(3))),
            "crl_expired"
        );
    }

    #[test]
    fn a_leaf_from_another_root_is_an_unknown_issuer() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let other_root = ca("other root", None);
        let other_issuing = ca("other issuing", Some(&other_root));
        let device = leaf(&other_issuing, |_| {});

        assert_eq!(
            reason(policy(&root, &issuing, without_revocation()).validate(&device, &[], now())),
            "unknown_issuer"
        );
    }

    #[test]
    fn a_leaf_from_an_impostor_ca_with_a_trusted_name_has_a_bad_signature() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let impostor_root = ca("impostor root", None);
        let impostor = ca("issuing", Some(&impostor_root));
        let device = leaf(&impostor, |_| {});

        assert_eq!(
            reason(policy(&root, &issuing, without_revocation()).validate(&device, &[], now())),
            "bad_signature"
        );
    }

    #[test]
    fn a_leaf_without_any_eku_is_missing_client_auth() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |p| p.extended_key_usages.clear());

        assert_eq!(
            reason(policy(&root, &issuing, without_revocation()).validate(&device, &[], now())),
            "missing_client_auth_eku"
        );
    }

    #[test]
    fn a_server_auth_only_leaf_is_missing_client_auth() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
        });

        assert_eq!(
            reason(policy(&root, &issuing, without_revocation()).validate(&device, &[], now())),
            "missing_client_auth_eku"
        );
    }

    #[test]
    fn a_self_signed_leaf_is_an_unknown_issuer() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let mut params = CertificateParams::new(vec!["device-7.example.com".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let device = ClientCertificate::from_der(pki::self_signed(&params).cert_der).unwrap();

        assert_eq!(
            reason(policy(&root, &issuing, without_revocation()).validate(&device, &[], now())),
            "unknown_issuer"
        );
    }

    #[test]
    fn a_leaf_revoked_by_its_issuers_crl_is_rejected_as_revoked() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});
        let crls = CrlSet::from_der_list(&[
            crl(&root, &[], rcgen::date_time_ymd(2031, 1, 1)),
            crl(&issuing, &[7], rcgen::date_time_ymd(2031, 1, 1)),
        ])
        .unwrap();
        let policy = ChainPolicy::new(
            std::slice::from_ref(&root.der),
            vec![issuing.der.clone()],
            crls,
            ChainOptions::default(),
        )
        .unwrap();

        assert_eq!(reason(policy.validate(&device, &[], now())), "revoked");
        let other = leaf(&issuing, |p| {
            p.serial_number = Some(SerialNumber::from(8u64))
        });
        assert!(policy.validate(&other, &[], now()).is_ok());
    }

    #[test]
    fn strict_revocation_rejects_a_chain_no_crl_covers() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});
        // Only the root's CRL: the leaf's status is unknown.
        let crls =
            CrlSet::from_der_list(&[crl(&root, &[], rcgen::date_time_ymd(2031, 1, 1))]).unwrap();
        let policy = ChainPolicy::new(
            std::slice::from_ref(&root.der),
            vec![issuing.der.clone()],
            crls,
            ChainOptions::default(),
        )
        .unwrap();

        assert_eq!(
            reason(policy.validate(&device, &[], now())),
            "revocation_status_unknown"
        );
        policy.replace_crls(CrlSet::empty());
        assert_eq!(
            reason(policy.validate(&device, &[], now())),
            "revocation_status_unknown",
            "no CRLs at all must not mean no checking"
        );
    }

    #[test]
    fn an_expired_crl_is_rejected_as_crl_expired() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});
        let crls = CrlSet::from_der_list(&[
            crl(&root, &[], rcgen::date_time_ymd(2031, 1, 1)),
            crl(&issuing, &[], rcgen::date_time_ymd(2030, 3, 1)),
        ])
        .unwrap();
        let policy = ChainPolicy::new(
            std::slice::from_ref(&root.der),
            vec![issuing.der.clone()],
            crls,
            ChainOptions::default(),
        )
        .unwrap();

        assert_eq!(reason(policy.validate(&device, &[], now())), "crl_expired");
    }

    #[test]
    fn reloading_crls_picks_up_a_new_revocation() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root.pem");
        let issuing_path = dir.path().join("issuing.pem");
        let crl_path = dir.path().join("crls.der");
        std::fs::write(&root_path, root.der.as_ref()).unwrap();
        std::fs::write(&issuing_path, issuing.der.as_ref()).unwrap();
        let write_crls = |revoked: &[u64]| {
            let pem = [
                crl(&root, &[], rcgen::date_time_ymd(2031, 1, 1)),
                crl(&issuing, revoked, rcgen::date_time_ymd(2031, 1, 1)),
            ]
            .iter()
            .map(|der| {
                format!(
                    "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der)
                )
            })
            .collect::<String>();
            std::fs::write(&crl_path, pem).unwrap();
        };
        write_crls(&[]);
        let policy = ChainPolicy::from_files(
            &root_path,
            &[issuing_path],
            std::slice::from_ref(&crl_path),
            ChainOptions::default(),
        )
        .unwrap();
        assert!(policy.validate(&device, &[], now()).is_ok());

        write_crls(&[7]);
        assert_eq!(policy.reload_crls().unwrap(), 2);

        assert_eq!(reason(policy.validate(&device, &[], now())), "revoked");
    }

    #[test]
    fn a_path_longer_than_configured_is_too_long() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});
        let mut options = without_revocation();
        options.max_intermediates = Some(0);

        assert_eq!(
            reason(policy(&root, &issuing, options).validate(&device, &[], now())),
            "path_too_long"
        );
    }

    #[test]
    fn too_many_presented_intermediates_are_refused_before_path_building() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});
        let padding = vec![issuing.der.clone(); MAX_PRESENTED_INTERMEDIATES + 1];

        assert_eq!(
            reason(policy(&root, &issuing, without_revocation()).validate(
                &device,
                &padding,
                now()
            )),
            "too_many_intermediates"
        );
    }

    #[test]
    fn an_expired_root_is_rejected_as_expired() {
        let root = ca_with("root", None, KeyPair::generate().unwrap(), |p| {
            p.not_after = rcgen::date_time_ymd(2030, 3, 1)
        });
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});

        assert_eq!(
            policy(&root, &issuing, without_revocation())
                .validate(&device, &[], now())
                .unwrap_err(),
            ChainRejection::Expired {
                time: now(),
                not_after: Utc.with_ymd_and_hms(2030, 3, 1, 0, 0, 0).unwrap()
            }
        );
    }

    #[test]
    fn a_current_root_anchors_the_path_beside_an_expired_one_with_the_same_name_and_key() {
        let key = KeyPair::generate().unwrap();
        let renewed = ca_with(
            "root",
            None,
            KeyPair::from_pem(&key.serialize_pem()).unwrap(),
            |_| {},
        );
        let expired = ca_with("root", None, key, |p| {
            p.not_after = rcgen::date_time_ymd(2030, 3, 1)
        });
        let issuing = ca("issuing", Some(&renewed));
        let device = leaf(&issuing, |_| {});
        let policy = ChainPolicy::new(
            &[expired.der.clone(), renewed.der.clone()],
            vec![issuing.der.clone()],
            CrlSet::empty(),
            without_revocation(),
        )
        .unwrap();

        assert!(policy.validate(&device, &[], now()).is_ok());
    }

    #[test]
    fn a_root_that_breaks_the_profile_anchors_nothing() {
        let root = ca_with("root", None, KeyPair::generate().unwrap(), |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]
        });
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});

        let rejection = policy(&root, &issuing, without_revocation())
            .validate(&device, &[], now())
            .unwrap_err();

        assert_eq!(rejection.reason(), "invalid_extended_key_usage");
        assert!(matches!(
            rejection,
            ChainRejection::InvalidExtendedKeyUsage {
                role: CertRole::TrustAnchor,
                ..
            }
        ));
    }

    #[test]
    fn a_presented_intermediate_without_an_authority_key_identifier_is_refused_unless_not_checked()
    {
        let root = ca("root", None);
        let issuing = ca_with("issuing", Some(&root), KeyPair::generate().unwrap(), |p| {
            p.use_authority_key_identifier_extension = false
        });
        let device = leaf(&issuing, |_| {});
        let build = |options| {
            ChainPolicy::new(
                std::slice::from_ref(&root.der),
                Vec::new(),
                CrlSet::empty(),
                options,
            )
            .unwrap()
        };
        let presented = std::slice::from_ref(&issuing.der);

        assert_eq!(
            reason(build(without_revocation()).validate(&device, presented, now())),
            "invalid_key_identifiers"
        );
        let mut lenient = without_revocation();
        lenient.key_identifiers = KeyIdentifiers::NotChecked;
        assert!(build(lenient).validate(&device, presented, now()).is_ok());
    }

    #[test]
    fn a_leaf_whose_key_usage_does_not_allow_signing_is_refused_unless_not_checked() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |p| {
            p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        });

        assert_eq!(
            reason(policy(&root, &issuing, without_revocation()).validate(&device, &[], now())),
            "invalid_key_usage"
        );
        let mut lenient = without_revocation();
        lenient.leaf_key_usage = LeafKeyUsage::NotChecked;
        assert!(
            policy(&root, &issuing, lenient)
                .validate(&device, &[], now())
                .is_ok()
        );
    }

    #[test]
    fn a_leaf_that_breaks_the_profile_is_refused_once_its_issuer_is_known() {
        let root = ca("root", None);
        let issuing = ca("issuing", Some(&root));
        let stranger = ca("stranger", None);
        let zero_serial =
            |p: &mut CertificateParams| p.serial_number = Some(SerialNumber::from_slice(&[0]));
        let policy = policy(&root, &issuing, without_revocation());

        assert_eq!(
            reason(policy.validate(&leaf(&issuing, zero_serial), &[], now())),
            "invalid_serial_number"
        );
        assert_eq!(
            reason(policy.validate(&leaf(&stranger, zero_serial), &[], now())),
            "unknown_issuer"
        );
    }

    #[test]
    fn a_crl_in_the_name_of_a_root_without_crl_sign_is_refused() {
        let key = KeyPair::generate().unwrap();
        // The same name and key with cRLSign, so that rcgen signs the CRL.
        let signer = ca_with(
            "root",
            None,
            KeyPair::from_pem(&key.serialize_pem()).unwrap(),
            |_| {},
        );
        let root = ca_with("root", None, key, |p| {
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign]
        });
        let issuing = ca("issuing", Some(&root));
        let device = leaf(&issuing, |_| {});
        let crls = CrlSet::from_der_list(&[
            crl(&signer, &[], rcgen::date_time_ymd(2031, 1, 1)),
            crl(&issuing, &[], rcgen::date_time_ymd(2031, 1, 1)),
        ])
        .unwrap();
        let policy = ChainPolicy::new(
            std::slice::from_ref(&root.der),
            vec![issuing.der.clone()],
            crls,
            ChainOptions::default(),
        )
        .unwrap();

        assert_eq!(reason(policy.validate(&device, &[], now())), "invalid_crl");
    }
}
