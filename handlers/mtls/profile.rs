//! keyturn's certificate and CRL profile: how a trusted CA must form what it issues.
//!
//! The rules are RFC 5280's (sections 4 and 5) and the CA/Browser Forum's that the
//! x509-limbo suite encodes, judged per certificate and per role in the path.
//! webpki checks what makes a path *valid* (signatures, validity, basicConstraints,
//! path length, EKU, name constraints, revocation). It does not check how a certificate
//! is *formed*, and it treats a trust anchor as a bare name and key. The functions here
//! fill that gap. They are pure: they read an already-parsed certificate and say why it
//! does not conform, and only ever add reasons to reject.

use std::fmt;
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::{GeneralName, NameConstraints, ParsedExtension, X509Extension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_PKIX_AUTHORITY_INFO_ACCESS, OID_SIG_ED25519,
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_CRL_DISTRIBUTION_POINTS, OID_X509_EXT_CRL_NUMBER, OID_X509_EXT_EXTENDED_KEY_USAGE,
    OID_X509_EXT_KEY_USAGE, OID_X509_EXT_NAME_CONSTRAINTS, OID_X509_EXT_POLICY_CONSTRAINTS,
    OID_X509_EXT_SUBJECT_ALT_NAME, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// The longest serial number a conforming CA may use, in encoded octets (RFC 5280
/// section 4.1.2.2: "MUST NOT use serialNumber values longer than 20 octets").
pub(crate) const MAX_SERIAL_OCTETS: usize = 20;

/// The smallest RSA modulus accepted, in bits: the CA/Browser Forum Baseline
/// Requirements section 6.1.5 minimum, and the smallest key webpki verifies a
/// signature with (`RSA_PKCS1_2048_8192_*`).
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// The most name-constraint comparisons one pair of certificates may ask for: the names
/// of a certificate (subject attributes plus subjectAltName entries) times the subtrees
/// of a nameConstraints extension above it. OpenSSL's `NAME_CHECK_MAX` (2^20, in
/// `crypto/x509/v3_ncons.c`), added with its fix for quadratic name-constraint checking
/// (openssl/openssl#4393); ordinary CAs are several orders of magnitude below it.
pub(crate) const MAX_NAME_CONSTRAINT_CHECKS: usize = 1 << 20;

/// The longest DNS name, in octets (RFC 1035 section 2.3.4: 255 octets on the wire,
/// which is 253 characters in dotted form).
const MAX_DNS_NAME_LEN: usize = 253;

/// The longest DNS label (RFC 1035 section 2.3.4).
const MAX_DNS_LABEL_LEN: usize = 63;

/// The certificate extensions webpki understands, and so may be critical in a trust
/// anchor: keyUsage, subjectAltName, basicConstraints, nameConstraints,
/// cRLDistributionPoints and extKeyUsage (webpki 0.103 `cert.rs`, `remember_cert_extension`).
/// webpki rejects any other critical extension in the certificates it checks; a root gets
/// the same treatment here.
const UNDERSTOOD_CRITICAL_EXTENSIONS: [&Oid<'static>; 6] = [
    &OID_X509_EXT_KEY_USAGE,
    &OID_X509_EXT_SUBJECT_ALT_NAME,
    &OID_X509_EXT_BASIC_CONSTRAINTS,
    &OID_X509_EXT_NAME_CONSTRAINTS,
    &OID_X509_EXT_CRL_DISTRIBUTION_POINTS,
    &OID_X509_EXT_EXTENDED_KEY_USAGE,
];

/// Where a certificate sits in a path; several rules depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// The client's own certificate.
    EndEntity,
    /// A CA certificate between the leaf and the trust anchor.
    Intermediate,
    /// The configured root certificate the path ends at.
    TrustAnchor,
}

/// Whether the key identifier rules (RFC 5280 sections 4.2.1.1 and 4.2.1.2, and the
/// CA/Browser Forum's form of a root's authorityKeyIdentifier) apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyIdentifiers {
    /// Every certificate but the root carries authorityKeyIdentifier with a
    /// keyIdentifier; every CA certificate carries subjectKeyIdentifier; neither is
    /// critical; a root's authorityKeyIdentifier, if any, is only a keyIdentifier equal
    /// to its subjectKeyIdentifier.
    Required,
    /// Not checked: for a CA whose profile keyturn cannot know in advance and whose
    /// omissions would lock out every client (path building never needs them: webpki
    /// matches issuers by name and signature).
    NotChecked,
}

/// Whether a leaf's keyUsage, when present, must allow the signature a TLS client makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKeyUsage {
    /// A leaf carrying keyUsage must assert digitalSignature: a TLS client proves it
    /// holds its key by signing the handshake (CertificateVerify, RFC 8446 section
    /// 4.4.3, RFC 5246 section 7.4.8), and RFC 5280 section 4.2.1.3 reserves that use
    /// of a key to digitalSignature. A leaf without keyUsage is not restricted.
    SigningRequired,
    /// Not checked: for a CA whose profile keyturn cannot know in advance.
    NotChecked,
}

/// Why a certificate or CRL does not conform to keyturn's profile. Each carries a short
/// detail naming the field; none carries anything secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ProfileViolation {
    #[error("cannot be parsed: {detail}")]
    Unparseable { detail: String },
    #[error("public key not allowed: {detail}")]
    ForbiddenPublicKey { detail: String },
    #[error("serial number not allowed: {detail}")]
    InvalidSerialNumber { detail: String },
    #[error("key identifiers do not conform: {detail}")]
    InvalidKeyIdentifiers { detail: String },
    #[error("basicConstraints do not conform: {detail}")]
    InvalidBasicConstraints { detail: String },
    #[error("keyUsage does not conform: {detail}")]
    InvalidKeyUsage { detail: String },
    #[error("extKeyUsage does not conform: {detail}")]
    InvalidExtendedKeyUsage { detail: String },
    #[error("subject does not conform: {detail}")]
    InvalidSubject { detail: String },
    #[error("subjectAltName does not conform: {detail}")]
    InvalidSubjectAltName { detail: String },
    #[error("nameConstraints do not conform: {detail}")]
    InvalidNameConstraints { detail: String },
    #[error("authorityInfoAccess does not conform: {detail}")]
    InvalidAuthorityInfoAccess { detail: String },
    #[error("policyConstraints does not conform: {detail}")]
    InvalidPolicyConstraints { detail: String },
    #[error(
        "{names} names checked against {constraints} name constraints exceed {MAX_NAME_CONSTRAINT_CHECKS} comparisons"
    )]
    TooManyNameConstraintChecks { names: usize, constraints: usize },
    #[error("critical extension {oid} is not understood")]
    UnsupportedCriticalExtension { oid: String },
    #[error("CRL does not conform: {detail}")]
    InvalidCrl { detail: String },
}

/// How much name-constraint work a certificate brings to a path: the names it presents
/// and the constraint subtrees it imposes on the certificates below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NameLoad {
    pub names: usize,
    pub constraints: usize,
}

/// What keyturn needs to know about a root beyond its name and key, read once when the
/// policy is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnchorFacts {
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// False when the root carries keyUsage without cRLSign (RFC 5280 section 4.2.1.3):
    /// a CRL in its name must then not be used.
    pub may_sign_crls: bool,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EndEntity => "leaf",
            Self::Intermediate => "intermediate",
            Self::TrustAnchor => "root",
        })
    }
}

/// Parses a certificate for the checks below. Extensions x509-parser cannot read stay
/// in the result as `ParseError`; the checks that care about them reject.
pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, ProfileViolation> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(ProfileViolation::Unparseable {
            detail: "trailing data after the certificate".to_owned(),
        }),
        Err(e) => Err(ProfileViolation::Unparseable {
            detail: e.to_string(),
        }),
    }
}

/// Every rule for a certificate in `role`. The first violation found is returned.
pub(crate) fn check_certificate(
    cert: &X509Certificate<'_>,
    role: CertRole,
    key_identifiers: KeyIdentifiers,
) -> Result<(), ProfileViolation> {
    public_key(cert)?;
    // A root is trusted by configuration and never revoked by serial number; widely
    // trusted roots carry serial 0 (Starfield Root Certificate Authority - G2).
    if role != CertRole::TrustAnchor {
        serial_number(cert)?;
    }
    if key_identifiers == KeyIdentifiers::Required {
        key_identifier_rules(cert, role)?;
    }
    ca_extensions(cert, role)?;
    extended_key_usage(cert, role)?;
    subject_and_alt_names(cert, role)?;
    name_constraints(cert, role)?;
    policy_constraints(cert)?;
    authority_info_access(cert)?;
    if role == CertRole::TrustAnchor {
        critical_extensions_understood(cert)?;
    }
    Ok(())
}

/// The [`LeafKeyUsage::SigningRequired`] rule for a leaf.
pub(crate) fn leaf_key_usage(cert: &X509Certificate<'_>) -> Result<(), ProfileViolation> {
    match extension(cert, &OID_X509_EXT_KEY_USAGE)?.map(X509Extension::parsed_extension) {
        Some(ParsedExtension::KeyUsage(ku)) if !ku.digital_signature() => {
            Err(ProfileViolation::InvalidKeyUsage {
                detail: "a leaf's keyUsage does not assert digitalSignature".to_owned(),
            })
        }
        Some(ParsedExtension::KeyUsage(_)) | None => Ok(()),
        Some(_) => Err(ProfileViolation::InvalidKeyUsage {
            detail: "cannot be parsed".to_owned(),
        }),
    }
}

/// The name-constraint work `cert` brings (see [`NameLoad`]). Unreadable extensions
/// count as empty: [`check_certificate`] rejects them.
pub(crate) fn name_load(cert: &X509Certificate<'_>) -> NameLoad {
    let alt_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.len(),
        _ => 0,
    };
    let constraints = match cert.name_constraints() {
        Ok(Some(nc)) => {
            nc.value.permitted_subtrees.as_ref().map_or(0, Vec::len)
                + nc.value.excluded_subtrees.as_ref().map_or(0, Vec::len)
        }
        _ => 0,
    };
    NameLoad {
        names: cert.subject().iter_attributes().count() + alt_names,
        constraints,
    }
}

/// Refuses a path, given leaf first and root last, in which checking some certificate's
/// names against the constraints of one above it would take more than
/// [`MAX_NAME_CONSTRAINT_CHECKS`] comparisons. webpki bounds the comparisons it makes, but
/// not those it skips (subject attributes against constraints of a type it does not
/// implement), so a pathological chain can be within its budget and still be refused here.
pub(crate) fn name_constraint_work(path: &[NameLoad]) -> Result<(), ProfileViolation> {
    for (index, constraining) in path.iter().enumerate() {
        if constraining.constraints == 0 {
            continue;
        }
        for named in &path[..index] {
            if named.names.saturating_mul(constraining.constraints) > MAX_NAME_CONSTRAINT_CHECKS {
                return Err(ProfileViolation::TooManyNameConstraintChecks {
                    names: named.names,
                    constraints: constraining.constraints,
                });
            }
        }
    }
    Ok(())
}

/// A root's validity and CRL-signing permission, which are judged at validation time.
pub(crate) fn anchor_facts(cert: &X509Certificate<'_>) -> AnchorFacts {
    let validity = cert.validity();
    AnchorFacts {
        not_before: timestamp(validity.not_before.timestamp()),
        not_after: timestamp(validity.not_after.timestamp()),
        may_sign_crls: match cert.key_usage() {
            Ok(Some(ku)) => ku.value.crl_sign(),
            Ok(None) => true,
            Err(_) => false,
        },
    }
}

/// The CRL profile webpki leaves out: the CRLNumber extension is present and not
/// critical (RFC 5280 section 5.2.3). Returns the CRL's nextUpdate, read on the way.
pub(crate) fn check_crl(der: &[u8]) -> Result<Option<DateTime<Utc>>, ProfileViolation> {
    let crl = match CertificateRevocationList::from_der(der) {
        Ok((_, crl)) => crl,
        Err(e) => {
            return Err(ProfileViolation::InvalidCrl {
                detail: e.to_string(),
            });
        }
    };
    let number = crl
        .extensions()
        .iter()
        .find(|ext| ext.oid == OID_X509_EXT_CRL_NUMBER);
    match number {
        None => Err(ProfileViolation::InvalidCrl {
            detail: "the mandatory CRLNumber extension is missing".to_owned(),
        }),
        Some(ext) if ext.critical => Err(ProfileViolation::InvalidCrl {
            detail: "the CRLNumber extension is marked critical".to_owned(),
        }),
        Some(_) => Ok(crl.next_update().map(|next| timestamp(next.timestamp()))),
    }
}

/// Keys a client may authenticate with, and a CA may sign with: RSA of at least
/// [`MIN_RSA_BITS`] in whole bytes, ECDSA on P-256, P-384 or P-521, and Ed25519 (CA/B
/// Forum Baseline Requirements section 6.1.5, and what TLS 1.3 signature schemes cover).
/// DSA, P-192 and every other curve or algorithm are refused.
fn public_key(cert: &X509Certificate<'_>) -> Result<(), ProfileViolation> {
    let spki = cert.public_key();
    let algorithm = &spki.algorithm.algorithm;
    let forbidden = |detail: String| Err(ProfileViolation::ForbiddenPublicKey { detail });
    if *algorithm == OID_PKCS1_RSAENCRYPTION || *algorithm == OID_PKCS1_RSASSAPSS {
        let modulus = match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => rsa.modulus,
            _ => return forbidden("the RSA key cannot be parsed".to_owned()),
        };
        let bits = rsa_modulus_bits(modulus);
        if bits < MIN_RSA_BITS {
            return forbidden(format!("RSA key of {bits} bits, below {MIN_RSA_BITS}"));
        }
        if !bits.is_multiple_of(8) {
            return forbidden(format!(
                "RSA modulus of {bits} bits is not a whole number of bytes"
            ));
        }
        Ok(())
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 || c == OID_NIST_EC_P521 => Ok(()),
            Some(c) => forbidden(format!("elliptic curve {c} is not allowed")),
            None => forbidden("elliptic curve key without a named curve".to_owned()),
        }
    } else if *algorithm == OID_SIG_ED25519 {
        Ok(())
    } else {
        forbidden(format!("key algorithm {algorithm} is not allowed"))
    }
}

/// Significant bits of an unsigned big-endian integer.
fn rsa_modulus_bits(modulus: &[u8]) -> usize {
    let digits = match modulus.iter().position(|b| *b != 0) {
        Some(first) => &modulus[first..],
        None => return 0,
    };
    // `digits` is non-empty and its first byte non-zero.
    digits.len() * 8 - digits[0].leading_zeros() as usize
}

/// RFC 5280 section 4.1.2.2: a positive integer of at most [`MAX_SERIAL_OCTETS`]
/// octets. Zero is not positive.
fn serial_number(cert: &X509Certificate<'_>) -> Result<(), ProfileViolation> {
    let raw = cert.raw_serial();
    if raw.len() > MAX_SERIAL_OCTETS {
        return Err(ProfileViolation::InvalidSerialNumber {
            detail: format!("{} octets, more than {MAX_SERIAL_OCTETS}", raw.len()),
        });
    }
    if raw.iter().all(|b| *b == 0) {
        return Err(ProfileViolation::InvalidSerialNumber {
            detail: "zero".to_owned(),
        });
    }
    Ok(())
}

fn key_identifier_rules(
    cert: &X509Certificate<'_>,
    role: CertRole,
) -> Result<(), ProfileViolation> {
    let bad = |detail: &str| {
        Err(ProfileViolation::InvalidKeyIdentifiers {
            detail: detail.to_owned(),
        })
    };
    let aki_ext = extension(cert, &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)?;
    let ski_ext = extension(cert, &OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)?;
    // RFC 5280 4.2.1.1 and 4.2.1.2: "Conforming CAs MUST mark this extension as non-critical."
    if aki_ext.is_some_and(|e| e.critical) {
        return bad("authorityKeyIdentifier is marked critical");
    }
    if ski_ext.is_some_and(|e| e.critical) {
        return bad("subjectKeyIdentifier is marked critical");
    }
    let aki = match aki_ext.map(X509Extension::parsed_extension) {
        None => None,
        Some(ParsedExtension::AuthorityKeyIdentifier(aki)) => Some(aki),
        Some(_) => return bad("authorityKeyIdentifier cannot be parsed"),
    };
    let ski = match ski_ext.map(X509Extension::parsed_extension) {
        None => None,
        Some(ParsedExtension::SubjectKeyIdentifier(ski)) => Some(ski.0),
        Some(_) => return bad("subjectKeyIdentifier cannot be parsed"),
    };
    let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
    // RFC 5280 4.2.1.1: the keyIdentifier MUST be present in every certificate but a
    // self-signed one. A root is exempt whoever issued it: it is trusted by
    // configuration, so nothing is looked up by its authority key, and a cross-signed
    // root without one is a valid anchor (x509-limbo `cve::cve-2024-0567`).
    if role != CertRole::TrustAnchor && aki.is_none_or(|a| a.key_identifier.is_none()) {
        return bad("authorityKeyIdentifier with a keyIdentifier is missing");
    }
    // RFC 5280 4.2.1.2: MUST appear in all CA certificates.
    if role != CertRole::EndEntity && ski.is_none() {
        return bad("subjectKeyIdentifier is missing from a CA certificate");
    }
    // CA/B Forum Baseline Requirements 7.1.2.1.3: a root's authorityKeyIdentifier is a
    // keyIdentifier only, identical to its subjectKeyIdentifier.
    if let (CertRole::TrustAnchor, Some(aki)) = (role, aki) {
        if aki.authority_cert_issuer.is_some() {
            return bad("a root's authorityKeyIdentifier names an authorityCertIssuer");
        }
        if aki.authority_cert_serial.is_some() {
            return bad("a root's authorityKeyIdentifier names an authorityCertSerialNumber");
        }
        match &aki.key_identifier {
            None => return bad("a root's authorityKeyIdentifier has no keyIdentifier"),
            Some(id) if self_issued && Some(id.0) != ski => {
                return bad(
                    "a self-issued root's authorityKeyIdentifier differs from its subjectKeyIdentifier",
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// basicConstraints and keyUsage: a root states cA=TRUE in a critical basicConstraints
/// (RFC 5280 4.2.1.9, which webpki cannot see for an anchor); keyCertSign needs cA
/// (4.2.1.9), and a CA that states keyUsage can sign certificates with it (4.2.1.3).
fn ca_extensions(cert: &X509Certificate<'_>, role: CertRole) -> Result<(), ProfileViolation> {
    let bc_ext = extension(cert, &OID_X509_EXT_BASIC_CONSTRAINTS)?;
    let bc = match bc_ext.map(X509Extension::parsed_extension) {
        None => None,
        Some(ParsedExtension::BasicConstraints(bc)) => Some(bc),
        Some(_) => {
            return Err(ProfileViolation::InvalidBasicConstraints {
                detail: "cannot be parsed".to_owned(),
            });
        }
    };
    let is_ca = bc.is_some_and(|bc| bc.ca);
    if role == CertRole::TrustAnchor {
        let detail = match bc_ext {
            None => Some("a root has no basicConstraints"),
            Some(ext) if !ext.critical => Some("a root's basicConstraints is not critical"),
            Some(_) if !is_ca => Some("a root's basicConstraints does not assert cA"),
            Some(_) => None,
        };
        if let Some(detail) = detail {
            return Err(ProfileViolation::InvalidBasicConstraints {
                detail: detail.to_owned(),
            });
        }
    }
    let ku = match extension(cert, &OID_X509_EXT_KEY_USAGE)?.map(X509Extension::parsed_extension) {
        None => None,
        Some(ParsedExtension::KeyUsage(ku)) => Some(ku),
        Some(_) => {
            return Err(ProfileViolation::InvalidKeyUsage {
                detail: "cannot be parsed".to_owned(),
            });
        }
    };
    if let Some(ku) = ku {
        if ku.key_cert_sign() && !is_ca {
            return Err(ProfileViolation::InvalidKeyUsage {
                detail: "keyCertSign is asserted without basicConstraints cA".to_owned(),
            });
        }
        if role != CertRole::EndEntity && is_ca && !ku.key_cert_sign() {
            return Err(ProfileViolation::InvalidKeyUsage {
                detail: "a CA's keyUsage does not assert keyCertSign".to_owned(),
            });
        }
    }
    Ok(())
}

/// CA/B Forum Baseline Requirements: a subscriber's extKeyUsage is not critical
/// (7.1.2.7.6) and does not contain anyExtendedKeyUsage (7.1.2.7.10); a root carries none
/// (7.1.2.1.2).
fn extended_key_usage(cert: &X509Certificate<'_>, role: CertRole) -> Result<(), ProfileViolation> {
    let Some(ext) = extension(cert, &OID_X509_EXT_EXTENDED_KEY_USAGE)? else {
        return Ok(());
    };
    let bad = |detail: &str| {
        Err(ProfileViolation::InvalidExtendedKeyUsage {
            detail: detail.to_owned(),
        })
    };
    match role {
        CertRole::TrustAnchor => bad("a root carries extKeyUsage"),
        CertRole::EndEntity if ext.critical => bad("a leaf's extKeyUsage is marked critical"),
        CertRole::EndEntity => match ext.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(eku) if eku.any => {
                bad("a leaf's extKeyUsage contains anyExtendedKeyUsage")
            }
            ParsedExtension::ExtendedKeyUsage(_) => Ok(()),
            _ => bad("cannot be parsed"),
        },
        CertRole::Intermediate => Ok(()),
    }
}

/// RFC 5280 4.1.2.6: a CA's subject is a non-empty name; a certificate with an empty
/// subject carries a critical subjectAltName. 4.2.1.6: a dNSName is in preferred name
/// syntax (RFC 1034 3.5 as relaxed by RFC 1123 2.1, which also rules out a dotted-quad).
fn subject_and_alt_names(
    cert: &X509Certificate<'_>,
    role: CertRole,
) -> Result<(), ProfileViolation> {
    let empty_subject = cert.subject().iter().next().is_none();
    if empty_subject && role != CertRole::EndEntity {
        return Err(ProfileViolation::InvalidSubject {
            detail: "a CA certificate has an empty subject".to_owned(),
        });
    }
    let bad = |detail: String| Err(ProfileViolation::InvalidSubjectAltName { detail });
    let Some(ext) = extension(cert, &OID_X509_EXT_SUBJECT_ALT_NAME)? else {
        if empty_subject {
            return bad("the subject is empty and there is no subjectAltName".to_owned());
        }
        return Ok(());
    };
    if empty_subject && !ext.critical {
        return bad("the subject is empty and subjectAltName is not critical".to_owned());
    }
    let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() else {
        return bad("cannot be parsed".to_owned());
    };
    for name in &san.general_names {
        if let GeneralName::DNSName(dns) = name
            && !is_dns_name(dns)
        {
            return bad(format!("dNSName {dns:?} is not a host name"));
        }
    }
    Ok(())
}

/// Preferred name syntax: dot-separated labels of letters, digits and inner hyphens,
/// with a leading `*` label allowed (RFC 6125 6.4.3 wildcards), and not an IPv4
/// address written as a name.
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_DNS_NAME_LEN || name.parse::<Ipv4Addr>().is_ok() {
        return false;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    name.split('.').enumerate().all(|(index, label)| {
        (index == 0 && label == "*")
            || (!label.is_empty()
                && label.len() <= MAX_DNS_LABEL_LEN
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-'))
    })
}

/// RFC 5280 4.2.1.10: nameConstraints only in a CA certificate, with at least one
/// non-empty subtree list (CA/B Forum 7.1.2.5.2), and a dNSName constraint is a host
/// name, never with a leading period (the leading period belongs to URI constraints).
fn name_constraints(cert: &X509Certificate<'_>, role: CertRole) -> Result<(), ProfileViolation> {
    let Some(ext) = extension(cert, &OID_X509_EXT_NAME_CONSTRAINTS)? else {
        return Ok(());
    };
    let bad = |detail: String| Err(ProfileViolation::InvalidNameConstraints { detail });
    if role == CertRole::EndEntity {
        return bad("a leaf carries nameConstraints".to_owned());
    }
    let ParsedExtension::NameConstraints(nc) = ext.parsed_extension() else {
        return bad("cannot be parsed".to_owned());
    };
    let NameConstraints {
        permitted_subtrees,
        excluded_subtrees,
    } = nc;
    let subtrees = || {
        permitted_subtrees
            .iter()
            .chain(excluded_subtrees.iter())
            .flatten()
    };
    if subtrees().next().is_none() {
        return bad("neither permitted nor excluded subtrees are given".to_owned());
    }
    for subtree in subtrees() {
        if let GeneralName::DNSName(dns) = subtree.base
            && dns.starts_with('.')
        {
            return bad(format!("dNSName constraint {dns:?} has a leading period"));
        }
    }
    Ok(())
}

/// RFC 5280 4.2.1.11: "Conforming CAs MUST mark this extension as critical." webpki
/// does not process policies and rejects the extension when critical, so a certificate
/// that carries policyConstraints is refused either way.
fn policy_constraints(cert: &X509Certificate<'_>) -> Result<(), ProfileViolation> {
    match extension(cert, &OID_X509_EXT_POLICY_CONSTRAINTS)? {
        Some(ext) if !ext.critical => Err(ProfileViolation::InvalidPolicyConstraints {
            detail: "policyConstraints is not marked critical".to_owned(),
        }),
        _ => Ok(()),
    }
}

/// RFC 5280 4.2.2.1: AuthorityInfoAccessSyntax is SEQUENCE SIZE (1..MAX) OF AccessDescription.
fn authority_info_access(cert: &X509Certificate<'_>) -> Result<(), ProfileViolation> {
    let Some(ext) = extension(cert, &OID_PKIX_AUTHORITY_INFO_ACCESS)? else {
        return Ok(());
    };
    match ext.parsed_extension() {
        ParsedExtension::AuthorityInfoAccess(aia) if !aia.accessdescs.is_empty() => Ok(()),
        ParsedExtension::AuthorityInfoAccess(_) => {
            Err(ProfileViolation::InvalidAuthorityInfoAccess {
                detail: "no access descriptions".to_owned(),
            })
        }
        _ => Err(ProfileViolation::InvalidAuthorityInfoAccess {
            detail: "cannot be parsed".to_owned(),
        }),
    }
}

/// A root's critical extensions are ones webpki would understand in any other position.
fn critical_extensions_understood(cert: &X509Certificate<'_>) -> Result<(), ProfileViolation> {
    match cert
        .extensions()
        .iter()
        .find(|ext| ext.critical && !UNDERSTOOD_CRITICAL_EXTENSIONS.contains(&&ext.oid))
    {
        Some(ext) => Err(ProfileViolation::UnsupportedCriticalExtension {
            oid: ext.oid.to_id_string(),
        }),
        None => Ok(()),
    }
}

/// The extension with `oid`, refusing a certificate that carries it twice (RFC 5280
/// section 4.2: "MUST NOT include more than one instance of a particular extension").
fn extension<'c, 'a>(
    cert: &'c X509Certificate<'a>,
    oid: &Oid<'_>,
) -> Result<Option<&'c X509Extension<'a>>, ProfileViolation> {
    let mut found = cert.extensions().iter().filter(|ext| ext.oid == *oid);
    let first = found.next();
    if found.next().is_some() {
        return Err(ProfileViolation::Unparseable {
            detail: format!("extension {} appears more than once", oid.to_id_string()),
        });
    }
    Ok(first)
}

fn timestamp(secs: i64) -> DateTime<Utc> {
    // X.509 times are years 1950 to 9999, all representable; the epoch stands in
    // should that ever change, and is in every certificate's past, never its future.
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use keyturn_testkit::pki::{self, TestCa, ca_params, client_params};
    use rcgen::{
        CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        GeneralSubtree, IsCa, KeyUsagePurpose, NameConstraints as RcgenNameConstraints,
        PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
    };

    use super::*;

    /// An RSA public key with a modulus of a chosen size. The profile reads keys and
    /// never verifies signatures, so the modulus need not belong to a real key.
    struct RsaPublicKey(Vec<u8>);

    impl PublicKeyData for RsaPublicKey {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }

        fn algorithm(&self) -> &'static SignatureAlgorithm {
            &rcgen::PKCS_RSA_SHA256
        }
    }

    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            len @ 0..=0x7f => out.push(len as u8),
            len @ 0x80..=0xff => out.extend([0x81, len as u8]),
            len => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    fn rsa_key(bits: usize) -> RsaPublicKey {
        let mut modulus = vec![0xffu8; bits.div_ceil(8)];
        // The top byte holds the bits beyond whole bytes (all eight when there are none).
        let top_bits = (bits - 1) % 8 + 1;
        modulus[0] = 0xff >> (8 - top_bits);
        let mut integer = vec![0u8];
        integer.extend(&modulus);
        let key = der(0x30, &[der(0x02, &integer), der(0x02, &[1, 0, 1])].concat());
        RsaPublicKey(key)
    }

    fn extension(oid: &[u64], critical: bool, content: Vec<u8>) -> CustomExtension {
        let mut ext = CustomExtension::from_oid_content(oid, content);
        ext.set_criticality(critical);
        ext
    }

    const AKI: &[u64] = &[2, 5, 29, 35];
    const SKI: &[u64] = &[2, 5, 29, 14];
    const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];

    fn root() -> TestCa {
        TestCa::root("root")
    }

    fn self_signed(params: &CertificateParams) -> Vec<u8> {
        pki::self_signed(params).cert_der
    }

    fn issued_by(params: &CertificateParams, issuer: &TestCa) -> Vec<u8> {
        issuer.issue(params).cert_der
    }

    fn leaf_params() -> CertificateParams {
        let mut params = client_params("device-7", &["device-7.example.com"]);
        params.serial_number = Some(SerialNumber::from(7u64));
        params
    }

    fn leaf(adjust: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let mut params = leaf_params();
        adjust(&mut params);
        issued_by(&params, &root())
    }

    fn check(der: &[u8], role: CertRole) -> Result<(), ProfileViolation> {
        check_certificate(&parse(der).unwrap(), role, KeyIdentifiers::Required)
    }

    fn replace_once(der: &mut [u8], from: &[u8], to: &[u8]) {
        let at: Vec<usize> = der
            .windows(from.len())
            .enumerate()
            .filter(|(_, w)| *w == from)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "the bytes to replace occur once");
        der[at[0]..at[0] + to.len()].copy_from_slice(to);
    }

    macro_rules! assert_violation {
        ($result:expr, $pattern:pat) => {
            let result = $result;
            assert!(matches!(result, Err($pattern)), "got {result:?}");
        };
    }

    #[test]
    fn a_conforming_leaf_intermediate_and_root_pass() {
        let root = root();
        let intermediate = ca_params("intermediate");

        assert_eq!(check(root.cert_der(), CertRole::TrustAnchor), Ok(()));
        assert_eq!(
            check(&issued_by(&intermediate, &root), CertRole::Intermediate),
            Ok(())
        );
        assert_eq!(check(&leaf(|_| {}), CertRole::EndEntity), Ok(()));
    }

    #[test]
    fn a_p192_leaf_key_is_forbidden() {
        let mut der = leaf(|_| {});
        // prime256v1 (1.2.840.10045.3.1.7) becomes prime192v1 (1.2.840.10045.3.1.1).
        replace_once(
            &mut der,
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x01],
        );

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::ForbiddenPublicKey { .. }
        );
    }

    #[test]
    fn a_dsa_leaf_key_is_forbidden() {
        let mut der = leaf(|_| {});
        // id-ecPublicKey (1.2.840.10045.2.1) becomes id-dsa (1.2.840.10040.4.1).
        replace_once(
            &mut der,
            &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
            &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01],
        );

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::ForbiddenPublicKey { .. }
        );
    }

    #[test]
    fn an_rsa_key_below_2048_bits_is_forbidden() {
        let root = root();
        let der = leaf_params()
            .signed_by(&rsa_key(1024), &root.issuer())
            .unwrap()
            .der()
            .to_vec();

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::ForbiddenPublicKey { .. }
        );
    }

    #[test]
    fn an_rsa_modulus_that_is_not_whole_bytes_is_forbidden() {
        let root = root();
        let issuer = root.issuer();
        let odd = leaf_params().signed_by(&rsa_key(2052), &issuer).unwrap();
        let even = leaf_params().signed_by(&rsa_key(2048), &issuer).unwrap();

        assert_violation!(
            check(odd.der(), CertRole::TrustAnchor),
            ProfileViolation::ForbiddenPublicKey { .. }
        );
        assert_eq!(public_key(&parse(even.der()).unwrap()), Ok(()));
    }

    #[test]
    fn rsa_modulus_bits_ignore_leading_zero_octets() {
        assert_eq!(rsa_modulus_bits(&[0x00, 0x0f, 0xff]), 12);
        assert_eq!(rsa_modulus_bits(&[0x80, 0x00]), 16);
        assert_eq!(rsa_modulus_bits(&[0x00]), 0);
        assert_eq!(rsa_modulus_bits(&[]), 0);
    }

    #[test]
    fn a_zero_serial_number_is_refused() {
        let der = leaf(|p| p.serial_number = Some(SerialNumber::from_slice(&[0])));

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidSerialNumber { .. }
        );
    }

    #[test]
    fn a_serial_number_longer_than_20_octets_is_refused() {
        let longest = leaf(|p| p.serial_number = Some(SerialNumber::from_slice(&[0x11; 20])));
        let too_long = leaf(|p| p.serial_number = Some(SerialNumber::from_slice(&[0x11; 21])));

        assert_eq!(check(&longest, CertRole::EndEntity), Ok(()));
        assert_violation!(
            check(&too_long, CertRole::EndEntity),
            ProfileViolation::InvalidSerialNumber { .. }
        );
    }

    #[test]
    fn a_root_with_serial_number_zero_is_still_a_root() {
        let mut params = ca_params("root");
        params.serial_number = Some(SerialNumber::from_slice(&[0]));

        assert_eq!(check(&self_signed(&params), CertRole::TrustAnchor), Ok(()));
    }

    #[test]
    fn a_leaf_without_an_authority_key_identifier_is_refused() {
        let der = leaf(|p| p.use_authority_key_identifier_extension = false);

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidKeyIdentifiers { .. }
        );
    }

    #[test]
    fn an_intermediate_without_an_authority_key_identifier_is_refused() {
        let mut params = ca_params("intermediate");
        params.use_authority_key_identifier_extension = false;

        assert_violation!(
            check(&issued_by(&params, &root()), CertRole::Intermediate),
            ProfileViolation::InvalidKeyIdentifiers { .. }
        );
    }

    #[test]
    fn missing_key_identifiers_pass_when_they_are_not_checked() {
        let der = leaf(|p| p.use_authority_key_identifier_extension = false);

        assert_eq!(
            check_certificate(
                &parse(&der).unwrap(),
                CertRole::EndEntity,
                KeyIdentifiers::NotChecked
            ),
            Ok(())
        );
    }

    #[test]
    fn a_critical_authority_key_identifier_is_refused() {
        let der = leaf(|p| {
            p.use_authority_key_identifier_extension = false;
            p.custom_extensions = vec![extension(AKI, true, der(0x30, &der(0x80, &[7; 20])))];
        });

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidKeyIdentifiers { .. }
        );
    }

    #[test]
    fn a_critical_subject_key_identifier_is_refused() {
        let der = leaf(|p| p.custom_extensions = vec![extension(SKI, true, der(0x04, &[7; 20]))]);

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidKeyIdentifiers { .. }
        );
    }

    #[test]
    fn a_ca_without_a_subject_key_identifier_is_refused() {
        // rcgen writes a subjectKeyIdentifier for every CA it knows to be one; this CA
        // states cA=TRUE itself.
        let mut params = ca_params("intermediate");
        params.is_ca = IsCa::NoCa;
        params.custom_extensions = vec![extension(
            BASIC_CONSTRAINTS,
            true,
            der(0x30, &der(0x01, &[0xff])),
        )];

        assert_violation!(
            check(&issued_by(&params, &root()), CertRole::Intermediate),
            ProfileViolation::InvalidKeyIdentifiers { .. }
        );
    }

    #[test]
    fn a_root_may_omit_its_authority_key_identifier() {
        let mut params = ca_params("root");
        params.use_authority_key_identifier_extension = false;

        assert_eq!(check(&self_signed(&params), CertRole::TrustAnchor), Ok(()));
    }

    #[test]
    fn a_root_authority_key_identifier_without_a_key_identifier_is_refused() {
        let mut params = ca_params("root");
        params.use_authority_key_identifier_extension = false;
        params.custom_extensions = vec![extension(AKI, false, der(0x30, &[]))];

        assert_violation!(
            check(&self_signed(&params), CertRole::TrustAnchor),
            ProfileViolation::InvalidKeyIdentifiers { .. }
        );
    }

    #[test]
    fn a_root_authority_key_identifier_naming_an_issuer_is_refused() {
        let mut params = ca_params("root");
        params.use_authority_key_identifier_extension = false;
        let issuer = der(0xa1, &der(0x82, b"root.example"));
        params.custom_extensions = vec![extension(
            AKI,
            false,
            der(0x30, &[der(0x80, &[7; 20]), issuer].concat()),
        )];

        assert_violation!(
            check(&self_signed(&params), CertRole::TrustAnchor),
            ProfileViolation::InvalidKeyIdentifiers { .. }
        );
    }

    #[test]
    fn a_root_authority_key_identifier_naming_a_serial_number_is_refused() {
        let mut params = ca_params("root");
        params.use_authority_key_identifier_extension = false;
        params.custom_extensions = vec![extension(
            AKI,
            false,
            der(0x30, &[der(0x80, &[7; 20]), der(0x82, &[1])].concat()),
        )];

        assert_violation!(
            check(&self_signed(&params), CertRole::TrustAnchor),
            ProfileViolation::InvalidKeyIdentifiers { .. }
        );
    }

    #[test]
    fn a_self_issued_root_naming_another_key_as_its_authority_is_refused() {
        let mut params = ca_params("root");
        params.use_authority_key_identifier_extension = false;
        params.custom_extensions = vec![extension(AKI, false, der(0x30, &der(0x80, &[7; 20])))];

        assert_violation!(
            check(&self_signed(&params), CertRole::TrustAnchor),
            ProfileViolation::InvalidKeyIdentifiers { .. }
        );
    }

    #[test]
    fn a_root_without_basic_constraints_is_refused() {
        let mut params = ca_params("root");
        params.is_ca = IsCa::NoCa;
        params.use_authority_key_identifier_extension = false;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.custom_extensions = vec![extension(SKI, false, der(0x04, &[7; 20]))];

        assert_violation!(
            check(&self_signed(&params), CertRole::TrustAnchor),
            ProfileViolation::InvalidBasicConstraints { .. }
        );
    }

    #[test]
    fn a_root_with_non_critical_basic_constraints_is_refused() {
        let mut params = ca_params("root");
        params.is_ca = IsCa::NoCa;
        params.use_authority_key_identifier_extension = false;
        params.custom_extensions = vec![
            extension(BASIC_CONSTRAINTS, false, der(0x30, &der(0x01, &[0xff]))),
            extension(SKI, false, der(0x04, &[7; 20])),
        ];

        assert_violation!(
            check(&self_signed(&params), CertRole::TrustAnchor),
            ProfileViolation::InvalidBasicConstraints { .. }
        );
    }

    #[test]
    fn a_root_that_is_not_a_ca_is_refused() {
        let mut params = ca_params("root");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];

        assert_violation!(
            check(&self_signed(&params), CertRole::TrustAnchor),
            ProfileViolation::InvalidBasicConstraints { .. }
        );
    }

    #[test]
    fn a_ca_whose_key_usage_leaves_out_key_cert_sign_is_refused() {
        let mut params = ca_params("root");
        params.key_usages = vec![KeyUsagePurpose::CrlSign];

        assert_violation!(
            check(&self_signed(&params), CertRole::TrustAnchor),
            ProfileViolation::InvalidKeyUsage { .. }
        );
    }

    #[test]
    fn a_leaf_whose_key_usage_does_not_allow_signing_is_refused() {
        for usages in [
            vec![KeyUsagePurpose::KeyEncipherment],
            vec![
                KeyUsagePurpose::KeyAgreement,
                KeyUsagePurpose::DataEncipherment,
            ],
        ] {
            let der = leaf(|p| p.key_usages = usages.clone());
            assert_violation!(
                leaf_key_usage(&parse(&der).unwrap()),
                ProfileViolation::InvalidKeyUsage { .. }
            );
        }
    }

    #[test]
    fn a_leaf_that_may_sign_or_carries_no_key_usage_passes_the_signing_rule() {
        let signing = leaf(|p| {
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]
        });
        let unrestricted = leaf(|p| p.key_usages.clear());

        assert_eq!(leaf_key_usage(&parse(&signing).unwrap()), Ok(()));
        assert_eq!(leaf_key_usage(&parse(&unrestricted).unwrap()), Ok(()));
    }

    #[test]
    fn a_leaf_asserting_key_cert_sign_is_refused() {
        let der = leaf(|p| p.key_usages = vec![KeyUsagePurpose::KeyCertSign]);

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidKeyUsage { .. }
        );
    }

    #[test]
    fn a_leaf_with_a_critical_extended_key_usage_is_refused() {
        let client_auth = der(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02]);
        let der = leaf(|p| {
            p.extended_key_usages.clear();
            p.custom_extensions = vec![extension(&[2, 5, 29, 37], true, der(0x30, &client_auth))];
        });

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidExtendedKeyUsage { .. }
        );
    }

    #[test]
    fn a_leaf_with_any_extended_key_usage_is_refused() {
        let der = leaf(|p| p.extended_key_usages.push(ExtendedKeyUsagePurpose::Any));

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidExtendedKeyUsage { .. }
        );
    }

    #[test]
    fn a_root_with_an_extended_key_usage_is_refused() {
        let mut params = ca_params("root");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];

        assert_violation!(
            check(&self_signed(&params), CertRole::TrustAnchor),
            ProfileViolation::InvalidExtendedKeyUsage { .. }
        );
    }

    #[test]
    fn a_ca_with_an_empty_subject_is_refused() {
        let mut params = ca_params("intermediate");
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::DnsName("ca.example".try_into().unwrap())];

        assert_violation!(
            check(&issued_by(&params, &root()), CertRole::Intermediate),
            ProfileViolation::InvalidSubject { .. }
        );
    }

    #[test]
    fn an_empty_subject_needs_a_critical_subject_alt_name() {
        // rcgen marks subjectAltName critical when the subject is empty.
        let critical = leaf(|p| p.distinguished_name = DistinguishedName::new());
        let non_critical = leaf(|p| {
            p.distinguished_name = DistinguishedName::new();
            p.subject_alt_names.clear();
            p.custom_extensions = vec![extension(
                &[2, 5, 29, 17],
                false,
                der(0x30, &der(0x82, b"device-7.example.com")),
            )];
        });

        assert_eq!(check(&critical, CertRole::EndEntity), Ok(()));
        assert_violation!(
            check(&non_critical, CertRole::EndEntity),
            ProfileViolation::InvalidSubjectAltName { .. }
        );
    }

    #[test]
    fn a_dns_name_with_an_underscore_is_refused() {
        let der = leaf(|p| {
            p.subject_alt_names = vec![SanType::DnsName("dev_7.example.com".try_into().unwrap())]
        });

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidSubjectAltName { .. }
        );
    }

    #[test]
    fn an_ip_address_written_as_a_dns_name_is_refused() {
        let der =
            leaf(|p| p.subject_alt_names = vec![SanType::DnsName("192.0.2.7".try_into().unwrap())]);

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidSubjectAltName { .. }
        );
    }

    #[test]
    fn dns_names_follow_the_preferred_name_syntax() {
        for good in [
            "example.com",
            "device-7.example.com",
            "*.example.com",
            "7.example.com",
            "example.com.",
            "localhost",
        ] {
            assert!(is_dns_name(good), "{good}");
        }
        let too_long_label = format!("{}.example.com", "a".repeat(64));
        for bad in [
            "",
            "dev_7.example.com",
            "-device.example.com",
            "device-.example.com",
            "a..example.com",
            "example.*.com",
            "**.example.com",
            "192.0.2.7",
            "device 7.example.com",
            too_long_label.as_str(),
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn name_constraints_on_a_leaf_are_refused() {
        let der = leaf(|p| {
            p.name_constraints = Some(RcgenNameConstraints {
                permitted_subtrees: vec![GeneralSubtree::DnsName("example.com".to_owned())],
                excluded_subtrees: Vec::new(),
            })
        });

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidNameConstraints { .. }
        );
    }

    #[test]
    fn name_constraints_without_any_subtree_are_refused() {
        let mut params = ca_params("intermediate");
        params.custom_extensions = vec![extension(&[2, 5, 29, 30], true, der(0x30, &[]))];

        assert_violation!(
            check(&issued_by(&params, &root()), CertRole::Intermediate),
            ProfileViolation::InvalidNameConstraints { .. }
        );
    }

    #[test]
    fn a_dns_name_constraint_with_a_leading_period_is_refused() {
        let constrained = |name: &str| {
            let mut params = ca_params("intermediate");
            params.name_constraints = Some(RcgenNameConstraints {
                permitted_subtrees: vec![GeneralSubtree::DnsName(name.to_owned())],
                excluded_subtrees: Vec::new(),
            });
            issued_by(&params, &root())
        };

        assert_eq!(
            check(&constrained("example.com"), CertRole::Intermediate),
            Ok(())
        );
        assert_violation!(
            check(&constrained(".example.com"), CertRole::Intermediate),
            ProfileViolation::InvalidNameConstraints { .. }
        );
    }

    #[test]
    fn an_authority_info_access_without_descriptions_is_refused() {
        let der = leaf(|p| {
            p.custom_extensions = vec![extension(
                &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                false,
                der(0x30, &[]),
            )]
        });

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::InvalidAuthorityInfoAccess { .. }
        );
    }

    #[test]
    fn a_non_critical_policy_constraints_extension_is_refused() {
        let mut params = ca_params("intermediate");
        params.custom_extensions = vec![extension(
            &[2, 5, 29, 36],
            false,
            der(0x30, &der(0x80, &[0])),
        )];

        assert_violation!(
            check(&issued_by(&params, &root()), CertRole::Intermediate),
            ProfileViolation::InvalidPolicyConstraints { .. }
        );
    }

    #[test]
    fn an_unknown_critical_extension_in_a_root_is_refused() {
        let mut params = ca_params("root");
        params.custom_extensions = vec![extension(
            &[1, 3, 6, 1, 4, 1, 55738, 666, 1],
            true,
            der(0x05, &[]),
        )];

        assert_violation!(
            check(&self_signed(&params), CertRole::TrustAnchor),
            ProfileViolation::UnsupportedCriticalExtension { .. }
        );
    }

    #[test]
    fn an_extension_given_twice_is_unparseable() {
        let der = leaf(|p| {
            p.custom_extensions = vec![
                extension(SKI, false, der(0x04, &[7; 20])),
                extension(SKI, false, der(0x04, &[8; 20])),
            ]
        });

        assert_violation!(
            check(&der, CertRole::EndEntity),
            ProfileViolation::Unparseable { .. }
        );
    }

    #[test]
    fn bytes_that_are_not_a_certificate_are_unparseable() {
        assert_violation!(
            parse(b"\x30\x03\x02\x01\x00"),
            ProfileViolation::Unparseable { .. }
        );
    }

    #[test]
    fn name_constraint_work_is_bounded_per_pair_of_certificates() {
        let load = |names, constraints| NameLoad { names, constraints };
        let at_limit = [load(1024, 0), load(0, 1024)];
        let beyond = [load(1025, 0), load(0, 1024)];
        // Constraints bind only the certificates below them.
        let constraints_below_names = [load(0, 4096), load(4096, 0)];

        assert_eq!(name_constraint_work(&at_limit), Ok(()));
        assert_violation!(
            name_constraint_work(&beyond),
            ProfileViolation::TooManyNameConstraintChecks {
                names: 1025,
                constraints: 1024
            }
        );
        assert_eq!(name_constraint_work(&constraints_below_names), Ok(()));
    }

    #[test]
    fn name_load_counts_subject_attributes_alt_names_and_subtrees() {
        let mut params = ca_params("intermediate");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Fleet");
        params.subject_alt_names = vec![SanType::DnsName("ca.example".try_into().unwrap())];
        params.name_constraints = Some(RcgenNameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DnsName("example.com".to_owned())],
            excluded_subtrees: vec![GeneralSubtree::DnsName("bad.example.com".to_owned())],
        });

        assert_eq!(
            name_load(&parse(&issued_by(&params, &root())).unwrap()),
            NameLoad {
                names: 3,
                constraints: 2
            }
        );
    }

    #[test]
    fn a_root_without_crl_sign_may_not_sign_crls() {
        let mut params = ca_params("root");
        let signs = anchor_facts(&parse(&self_signed(&params)).unwrap());
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let does_not = anchor_facts(&parse(&self_signed(&params)).unwrap());

        assert!(signs.may_sign_crls);
        assert!(!does_not.may_sign_crls);
    }

    fn crl(extensions: Option<Vec<u8>>) -> Vec<u8> {
        let ecdsa_sha256 = der(
            0x30,
            &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
        );
        let common_name = der(
            0x30,
            &[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, b"root")].concat(),
        );
        let issuer = der(0x30, &der(0x31, &common_name));
        let mut tbs = [
            der(0x02, &[1]),
            ecdsa_sha256.clone(),
            issuer,
            der(0x17, b"300101000000Z"),
            der(0x17, b"310101000000Z"),
        ]
        .concat();
        if let Some(extensions) = extensions {
            tbs.extend(der(0xa0, &der(0x30, &extensions)));
        }
        der(
            0x30,
            &[der(0x30, &tbs), ecdsa_sha256, der(0x03, &[0x00])].concat(),
        )
    }

    fn crl_number(critical: bool) -> Vec<u8> {
        let mut ext = der(0x06, &[0x55, 0x1d, 0x14]);
        if critical {
            ext.extend(der(0x01, &[0xff]));
        }
        ext.extend(der(0x04, &der(0x02, &[1])));
        der(0x30, &ext)
    }

    #[test]
    fn a_crl_with_a_non_critical_crl_number_passes() {
        assert!(check_crl(&crl(Some(crl_number(false)))).is_ok());
    }

    #[test]
    fn a_crl_without_a_crl_number_is_refused() {
        assert_violation!(check_crl(&crl(None)), ProfileViolation::InvalidCrl { .. });
    }

    #[test]
    fn a_crl_with_a_critical_crl_number_is_refused() {
        assert_violation!(
            check_crl(&crl(Some(crl_number(true)))),
            ProfileViolation::InvalidCrl { .. }
        );
    }
}
