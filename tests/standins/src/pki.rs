//! The stand-ins' certificates, from the shared test PKI (`keyturn_testkit::pki`): one CA
//! that issues the stand-ins' server certificate, and the self-signed certificates the
//! Key Vault stand-in makes for a certificate whose issuer is `Self`.

use keyturn_testkit::pki::{self, Issued, TestCa, rcgen};
use rcgen::{CertificateParams, DnType, KeyPair};
use time::{Duration, OffsetDateTime};

/// The CA and server certificates live for a day: long enough for any test run, short
/// enough that nobody mistakes them for something to keep.
const TEST_CERT_LIFETIME: Duration = Duration::days(1);

/// Why a certificate a request asked for could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("could not build or sign the certificate for {subject:?}: {source}")]
    Sign {
        subject: String,
        source: rcgen::Error,
    },
}

fn valid_for_a_day(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + TEST_CERT_LIFETIME;
}

/// A throwaway CA named `common_name`; clients trust it through its certificate, and
/// nothing outside a test run ever sees it.
pub(crate) fn ca(common_name: &str) -> TestCa {
    let mut params = pki::ca_params(common_name);
    valid_for_a_day(&mut params);
    TestCa::from_params(params, None)
}

/// A server certificate for `localhost` and `127.0.0.1`, issued by `ca`.
pub(crate) fn server_cert(ca: &TestCa) -> Issued {
    let mut params = pki::server_params(&["localhost", "127.0.0.1"]);
    valid_for_a_day(&mut params);
    ca.issue(&params)
}

/// PEM of the certificate followed by its key, as Key Vault returns a certificate's
/// backing secret with content type `application/x-pem-file`.
pub(crate) fn pem_bundle(issued: &Issued) -> String {
    format!("{}{}", issued.key_pem, issued.cert_pem)
}

/// A self-signed certificate and a CSR for `subject` (an X.500 name such as
/// `CN=example`), as Key Vault makes for a certificate whose issuer is `Self`.
pub(crate) fn self_signed_for_vault(
    subject: &str,
    dns_names: &[String],
    validity_months: u32,
    rsa: bool,
    now: OffsetDateTime,
) -> Result<(Issued, Vec<u8>), PkiError> {
    let sign_error = |source| PkiError::Sign {
        subject: subject.to_owned(),
        source,
    };
    let mut params = CertificateParams::new(dns_names.to_vec()).map_err(sign_error)?;
    let cn = subject.strip_prefix("CN=").unwrap_or(subject);
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = now;
    params.not_after = now + Duration::days(30 * i64::from(validity_months));
    let key = if rsa {
        pki::rsa_key()
    } else {
        KeyPair::generate().map_err(sign_error)?
    };
    let csr = params.serialize_request(&key).map_err(sign_error)?;
    let cert = params.self_signed(&key).map_err(sign_error)?;
    Ok((Issued::new(&cert, &key), csr.der().to_vec()))
}
