//! The test PKI: one CA that issues the stand-ins' server certificate and, for the
//! secret-endpoint tests, device client certificates.

use std::net::{IpAddr, Ipv4Addr};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// The CA and server certificates live for a day: long enough for any test run, short
/// enough that nobody mistakes them for something to keep.
const TEST_CERT_LIFETIME: Duration = Duration::days(1);

/// Client certificates default to thirty days, so tests of "expires soon" logic have room
/// on both sides of a typical 7- or 14-day warning threshold.
const DEFAULT_CLIENT_CERT_LIFETIME: Duration = Duration::days(30);

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("could not generate a key pair: {0}")]
    Key(rcgen::Error),
    #[error("could not build or sign the certificate for {subject:?}: {source}")]
    Sign {
        subject: String,
        source: rcgen::Error,
    },
}

/// A certificate and its private key, in the forms tests need.
#[derive(Clone)]
pub struct IssuedCert {
    cert_der: Vec<u8>,
    cert_pem: String,
    key_pkcs8_der: Vec<u8>,
    key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("sha1_thumbprint", &self.sha1_thumbprint())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl IssuedCert {
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pkcs8_der(&self) -> &[u8] {
        &self.key_pkcs8_der
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate as App Service forwards it in `X-ARR-ClientCert`: base64 DER, no
    /// PEM armour.
    pub fn arr_client_cert_header(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.cert_der)
    }

    /// Upper-case hex SHA-1 of the DER, the thumbprint Azure shows.
    pub fn sha1_thumbprint(&self) -> String {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.cert_der);
        hex::encode_upper(digest.as_ref())
    }

    /// Lower-case hex SHA-256 of the DER.
    pub fn sha256_thumbprint(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.cert_der);
        hex::encode(digest.as_ref())
    }

    /// PEM of the certificate followed by its key, as Key Vault returns a certificate's
    /// backing secret with content type `application/x-pem-file`.
    pub fn pem_bundle(&self) -> String {
        format!("{}{}", self.key_pem, self.cert_pem)
    }

    pub(crate) fn rustls_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.cert_der.clone())]
    }

    pub(crate) fn rustls_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8_der.clone()))
    }
}

/// What a client certificate should look like. The defaults make a valid device
/// certificate; tests change one field to make an invalid one.
#[derive(Debug, Clone)]
pub struct ClientCertOptions {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Adds the clientAuth extended key usage (RFC 5280 section 4.2.1.12).
    pub client_auth_eku: bool,
    /// Subject alternative DNS names, if any.
    pub dns_names: Vec<String>,
}

impl Default for ClientCertOptions {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::hours(1),
            not_after: now + DEFAULT_CLIENT_CERT_LIFETIME,
            client_auth_eku: true,
            dns_names: Vec::new(),
        }
    }
}

/// A throwaway certificate authority. Clients trust it through
/// [`TestCa::certificate_pem`]; nothing outside a test run ever sees it.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Key)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + TEST_CERT_LIFETIME;
        let cert = params.self_signed(&key).map_err(|source| PkiError::Sign {
            subject: common_name.to_owned(),
            source,
        })?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn issue_server_cert(&self) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().map_err(|source| PkiError::Sign {
                subject: "localhost".into(),
                source,
            })?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + TEST_CERT_LIFETIME;
        self.sign("localhost", params)
    }

    /// A client certificate whose subject is `CN={subject_cn}`.
    pub fn issue_client_cert(
        &self,
        subject_cn: &str,
        options: ClientCertOptions,
    ) -> Result<IssuedCert, PkiError> {
        let mut params =
            CertificateParams::new(options.dns_names.clone()).map_err(|source| PkiError::Sign {
                subject: subject_cn.to_owned(),
                source,
            })?;
        params
            .distinguished_name
            .push(DnType::CommonName, subject_cn);
        params.not_before = options.not_before;
        params.not_after = options.not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if options.client_auth_eku {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        self.sign(subject_cn, params)
    }

    fn sign(&self, subject: &str, mut params: CertificateParams) -> Result<IssuedCert, PkiError> {
        // RFC 5280 4.2.1.1: a conforming CA names its key in what it issues, and
        // keyturn's chain policy checks that it does.
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(PkiError::Key)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Sign {
                subject: subject.to_owned(),
                source,
            })?;
        Ok(IssuedCert {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pkcs8_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A self-signed certificate and a CSR for `subject` (an X.500 name such as
/// `CN=example`), as Key Vault makes for a certificate whose issuer is `Self`.
pub(crate) fn self_signed_for_vault(
    subject: &str,
    dns_names: &[String],
    validity_months: u32,
    rsa: bool,
    now: OffsetDateTime,
) -> Result<(IssuedCert, Vec<u8>), PkiError> {
    let key = if rsa {
        KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
    } else {
        KeyPair::generate()
    }
    .map_err(PkiError::Key)?;
    let mut params =
        CertificateParams::new(dns_names.to_vec()).map_err(|source| PkiError::Sign {
            subject: subject.to_owned(),
            source,
        })?;
    let cn = subject.strip_prefix("CN=").unwrap_or(subject);
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = now;
    params.not_after = now + Duration::days(30 * i64::from(validity_months));
    let sign_error = |source| PkiError::Sign {
        subject: subject.to_owned(),
        source,
    };
    let csr = params.serialize_request(&key).map_err(sign_error)?;
    let cert = params.self_signed(&key).map_err(sign_error)?;
    Ok((
        IssuedCert {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pkcs8_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        },
        csr.der().to_vec(),
    ))
}
