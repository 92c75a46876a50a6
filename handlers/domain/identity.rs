//! Who a client is once a certificate policy has accepted it: the identity types that
//! `mtls` produces and `access` decides on, so neither room imports the other.
//!
//! [`ClientIdentity`] holds only public certificate data (no private key, nothing
//! secret), so it can be logged and written to the audit log as is. It is built inside
//! the crate only, by a certificate policy that has decided to accept.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::ids::DeviceId;
use crate::domain::thumbprint::Thumbprint;

/// Which policy accepted a client certificate. Carried in [`ClientIdentity`] so the
/// access policy and the audit log can tell a chain-validated device from a pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PolicyKind {
    /// Path validation to a configured trust anchor (`mtls::chain`).
    Chain,
    /// The leaf's SHA-256 thumbprint is on a configured list.
    TrustedThumbprints,
    /// The leaf is an Entra ID device certificate of a known, enabled device.
    EntraDevice,
}

/// What the leaf's extendedKeyUsage extension says, if it has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExtendedKeyUsage {
    /// The extension is present at all.
    pub present: bool,
    pub client_auth: bool,
    pub server_auth: bool,
    /// anyExtendedKeyUsage (2.5.29.37.0).
    pub any: bool,
}

/// A subjectAltName entry, in the forms policies match on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub(crate) enum SubjectAltName {
    Dns(String),
    Email(String),
    Uri(String),
    Ip(IpAddr),
    DirectoryName(String),
    /// `otherName` (for example a Windows UPN); the OID in dotted form.
    OtherName {
        oid: String,
    },
    /// Any other, or unparsable, entry, as x509-parser describes it.
    Other(String),
}

/// The fields of a certificate that policies, the access policy and the audit log use,
/// extracted once when the certificate is parsed (`mtls::certificate`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CertificateDetails {
    #[serde(rename = "thumbprint_sha256")]
    pub(crate) thumbprint: Thumbprint,
    /// RFC 4514 string ([`crate::domain::dn::rfc4514`]).
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) serial_hex: String,
    pub(crate) subject_alt_names: Vec<SubjectAltName>,
    pub(crate) not_before: DateTime<Utc>,
    pub(crate) not_after: DateTime<Utc>,
    #[serde(skip)]
    pub(crate) extended_key_usage: ExtendedKeyUsage,
}

/// A client that a policy accepted.
#[derive(Debug, Clone, Serialize)]
pub struct ClientIdentity {
    #[serde(flatten)]
    details: CertificateDetails,
    decided_by: PolicyKind,
}

/// A client every configured policy accepted.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub identity: ClientIdentity,
    /// Set only when the `entra-device` policy verified the device.
    pub device_id: Option<DeviceId>,
    /// The policies that accepted, in evaluation order.
    pub policies: Vec<PolicyKind>,
}

impl ClientIdentity {
    /// The identity a policy vouches for, from the details of the certificate it
    /// accepted. Only policies call this (through `ClientCertificate::into_identity`).
    pub(crate) fn new(details: CertificateDetails, decided_by: PolicyKind) -> Self {
        Self {
            details,
            decided_by,
        }
    }

    /// SHA-256 of the leaf certificate's DER.
    pub(crate) fn thumbprint(&self) -> Thumbprint {
        self.details.thumbprint
    }

    /// The leaf's subject distinguished name, RFC 4514 style (`CN=..., O=...`).
    pub(crate) fn subject(&self) -> &str {
        &self.details.subject
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.details.issuer
    }

    /// The leaf's serial number, lowercase hex of its DER content octets.
    #[cfg(test)]
    pub(crate) fn serial_hex(&self) -> &str {
        &self.details.serial_hex
    }

    pub(crate) fn subject_alt_names(&self) -> &[SubjectAltName] {
        &self.details.subject_alt_names
    }

    #[cfg(test)]
    pub(crate) fn not_after(&self) -> DateTime<Utc> {
        self.details.not_after
    }

    #[cfg(test)]
    pub(crate) fn decided_by(&self) -> PolicyKind {
        self.decided_by
    }
}

impl PolicyKind {
    /// The name used in configuration and in audit entries.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Chain => "chain",
            Self::TrustedThumbprints => "trusted-thumbprints",
            Self::EntraDevice => "entra-device",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
