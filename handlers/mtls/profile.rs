//! keyturn's certificate and CRL profile: how a trusted CA must form what it issues (RFC 5280 section 4 and 5, and the CA/Browser Forum rules the x509-limbo suite encodes), judged per certificate and role, on top of webpki's path validation.
//!
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
pub const MAX_SERIAL_OCTETS: usize = 20;

/// The smallest RSA modulus accepted, in bits: the CA/Browser Forum Baseline
/// Requirements section 6.1.5 minimum, and the smallest key webpki verifies a
/// signature with (`RSA_PKCS1_2048_8192_*`).
pub const MIN_RSA_BITS: usize = 2048;

/// The most name-constraint comparisons one pair of certificates may ask for: the names
/// of a certificate (subject attributes plus subjectAltName entries) times the subtrees
/// of a nameConstraints extension above it. OpenSSL's `NAME_CHECK_MAX` (2^20, in
/// `crypto/x509/v3_ncons.c`), added with its fix for quadratic name-constraint checking
/// (openssl/openssl#4393); ordinary CAs are several orders of magnitude below it.
pub const MAX_NAME_CONSTRAINT_CHECKS: usize = 1 << 20;

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

/// Why a certificate or CRL does not conform to keyturn's profile. Each carries a short
/// detail naming the field; none carries anything secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileViolation {
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
pub struct NameLoad {
    pub names: usize,
    pub constraints: usize,
}

/// What keyturn needs to know about a root beyond its name and key, read once when the
/// policy is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorFacts {
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
pub fn parse(der: &[u8]) -> Result<X509Certificate<'_>, ProfileViolation> {
    match X509Certificate::from_der(der) {
        Ok((rest, cert)) if rest.is_empty() => Ok(cert),
        Ok(_) => Err(ProfileViolation::Unparseable {
            detail: "trailing data after the certificate".to_owned(),
        }),
        Err(e) => Err(ProfileViolation::Unparseable {
            detail: e.to_string(),
        }),
    }
}

/// Every rule for a certificate in `role`. The first violation found is returned.
pub fn check_certificate(
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

/// The name-constraint work `cert` brings (see [`NameLoad`]). Unreadable extensions
/// count as empty: [`check_certificate`] rejects them.
pub fn name_load(cert: &X509Certificate<'_>) -> NameLoad {
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
pub fn name_constraint_work(path: &[NameLoad]) -> Result<(), ProfileViolation> {
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
pub fn anchor_facts(cert: &X509Certificate<'_>) -> AnchorFacts {
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
/// critical (RFC 5280 section 5.2.3).
pub fn check_crl(der: &[u8]) -> Result<(), ProfileViolation> {
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
        Some(_) => Ok(()),
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
        if bits % 8 != 0 {
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
