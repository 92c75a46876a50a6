//! A presented client certificate parsed once at the edge, and its conversion into the
//! validated client identity ([`ClientIdentity`], in `domain::identity`) a policy vouches for.
//!
//! Every policy (`chain`, `trusted-thumbprints`, `entra-device`) starts from a
//! [`ClientCertificate`] and, when it accepts, returns a [`ClientIdentity`] that says
//! which policy decided. Nothing downstream parses certificate bytes again.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::domain::dn::rfc4514;
use crate::domain::identity::{
    CertificateDetails, ClientIdentity, ExtendedKeyUsage, PolicyKind, SubjectAltName,
};
use crate::domain::thumbprint::Thumbprint;

/// Why bytes are not a usable X.509 certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    #[error("certificate is not valid DER X.509: {detail}")]
    Malformed { detail: String },
    #[error("certificate is followed by {bytes} bytes of trailing data")]
    TrailingData { bytes: usize },
    #[error("certificate {field} is out of the representable time range")]
    TimeOutOfRange { field: &'static str },
}

/// A certificate as presented by a client: DER that x509-parser accepted, with the
/// fields every policy and the audit log need already extracted.
#[derive(Clone)]
pub struct ClientCertificate {
    der: CertificateDer<'static>,
    details: CertificateDetails,
}

impl ClientCertificate {
    /// Parses one DER certificate. Trailing bytes are refused: a header or file that
    /// carries more than one certificate is not what the caller thinks it is.
    pub fn from_der(der: impl Into<Vec<u8>>) -> Result<Self, CertificateError> {
        let der: Vec<u8> = der.into();
        let details = {
            let (rest, parsed) =
                X509Certificate::from_der(&der).map_err(|e| CertificateError::Malformed {
                    detail: e.to_string(),
                })?;
            if !rest.is_empty() {
                return Err(CertificateError::TrailingData { bytes: rest.len() });
            }
            extract_details(&parsed, Thumbprint::of_der(&der))?
        };
        Ok(Self {
            der: CertificateDer::from(der),
            details,
        })
    }

    pub(crate) fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    pub fn thumbprint(&self) -> Thumbprint {
        self.details.thumbprint
    }

    pub(crate) fn subject(&self) -> &str {
        &self.details.subject
    }

    pub(crate) fn not_after(&self) -> DateTime<Utc> {
        self.details.not_after
    }

    #[cfg(test)]
    pub(crate) fn subject_alt_names(&self) -> &[SubjectAltName] {
        &self.details.subject_alt_names
    }

    pub(crate) fn extended_key_usage(&self) -> ExtendedKeyUsage {
        self.details.extended_key_usage
    }

    /// The identity a policy vouches for. Only policies call this, after they have
    /// decided to accept the certificate.
    pub fn into_identity(self, decided_by: PolicyKind) -> ClientIdentity {
        ClientIdentity::new(self.details, decided_by)
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("thumbprint", &self.details.thumbprint)
            .field("subject", &self.details.subject)
            .field("issuer", &self.details.issuer)
            .finish_non_exhaustive()
    }
}

/// The details of a parsed certificate, read once.
fn extract_details(
    parsed: &X509Certificate<'_>,
    thumbprint: Thumbprint,
) -> Result<CertificateDetails, CertificateError> {
    let subject_alt_names = match parsed.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .map(subject_alt_name)
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            return Err(CertificateError::Malformed {
                detail: format!("subjectAltName: {e}"),
            });
        }
    };
    let extended_key_usage = match parsed.extended_key_usage() {
        Ok(Some(extension)) => ExtendedKeyUsage {
            present: true,
            client_auth: extension.value.client_auth,
            server_auth: extension.value.server_auth,
            any: extension.value.any,
        },
        Ok(None) => ExtendedKeyUsage::default(),
        Err(e) => {
            return Err(CertificateError::Malformed {
                detail: format!("extendedKeyUsage: {e}"),
            });
        }
    };
    let validity = parsed.validity();
    Ok(CertificateDetails {
        subject: rfc4514(parsed.subject()),
        issuer: rfc4514(parsed.issuer()),
        serial_hex: hex::encode(parsed.raw_serial()),
        subject_alt_names,
        not_before: to_utc(validity.not_before.timestamp(), "notBefore")?,
        not_after: to_utc(validity.not_after.timestamp(), "notAfter")?,
        extended_key_usage,
        thumbprint,
    })
}

/// A subjectAltName entry as x509-parser decoded it, in the form policies match on.
fn subject_alt_name(name: &GeneralName<'_>) -> SubjectAltName {
    match name {
        GeneralName::DNSName(dns) => SubjectAltName::Dns((*dns).to_owned()),
        GeneralName::RFC822Name(email) => SubjectAltName::Email((*email).to_owned()),
        GeneralName::URI(uri) => SubjectAltName::Uri((*uri).to_owned()),
        GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
            Some(ip) => SubjectAltName::Ip(ip),
            None => SubjectAltName::Other(name.to_string()),
        },
        GeneralName::DirectoryName(dn) => SubjectAltName::DirectoryName(dn.to_string()),
        GeneralName::OtherName(oid, _) => SubjectAltName::OtherName {
            oid: oid.to_id_string(),
        },
        other => SubjectAltName::Other(other.to_string()),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Some(IpAddr::from(v4))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Some(IpAddr::from(v6))
    } else {
        None
    }
}

fn to_utc(timestamp: i64, field: &'static str) -> Result<DateTime<Utc>, CertificateError> {
    DateTime::from_timestamp(timestamp, 0).ok_or(CertificateError::TimeOutOfRange { field })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed_der() -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(vec!["device-1.example.com".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-1");
        keyturn_testkit::pki::self_signed(&params).cert_der
    }

    #[test]
    fn a_certificate_parses_and_exposes_its_identity_fields() {
        let der = self_signed_der();
        let certificate = ClientCertificate::from_der(der.clone()).unwrap();
        assert_eq!(certificate.subject(), "CN=device-1");
        assert_eq!(certificate.thumbprint(), Thumbprint::of_der(&der));
        assert_eq!(
            certificate.subject_alt_names(),
            &[SubjectAltName::Dns("device-1.example.com".to_owned())]
        );

        let identity = certificate.into_identity(PolicyKind::Chain);
        assert_eq!(identity.decided_by(), PolicyKind::Chain);
        let json = serde_json::to_value(&identity).unwrap();
        assert_eq!(json["decided_by"], "chain");
        assert_eq!(json["subject"], "CN=device-1");
        assert_eq!(
            json["thumbprint_sha256"],
            Thumbprint::of_der(&der).to_string()
        );
    }

    #[test]
    fn truncated_der_is_malformed() {
        let der = self_signed_der();
        let truncated = &der[..der.len() - 10];
        assert!(matches!(
            ClientCertificate::from_der(truncated.to_vec()),
            Err(CertificateError::Malformed { .. })
        ));
    }

    #[test]
    fn trailing_bytes_after_the_certificate_are_refused() {
        let mut der = self_signed_der();
        der.extend_from_slice(&[0, 0, 0]);
        assert_eq!(
            ClientCertificate::from_der(der).unwrap_err(),
            CertificateError::TrailingData { bytes: 3 }
        );
    }

    #[test]
    fn random_bytes_are_malformed() {
        assert!(matches!(
            ClientCertificate::from_der(b"hello, not a certificate".to_vec()),
            Err(CertificateError::Malformed { .. })
        ));
    }
}
