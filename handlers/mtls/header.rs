//! The `X-ARR-ClientCert` header: how App Service hands the client certificate it
//! received during the TLS handshake to the app behind it.
//!
//! App Service terminates TLS and, with `clientCertEnabled` and
//! `clientCertMode=Required`, forwards the leaf certificate as base64 of its DER
//! encoding, without PEM armour and without the chain. It does not validate the
//! certificate for the app; that is what `mtls::chain` and the other policies do.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::mtls::certificate::{CertificateError, ClientCertificate};

/// The header App Service sets (its name is case-insensitive in HTTP).
pub(crate) const ARR_CLIENT_CERT_HEADER: &str = "X-ARR-ClientCert";

/// The longest header value looked at, checked before any decoding. A device
/// certificate is 1 to 2 KB of DER (an RSA-4096 key with a few SANs stays under 3 KB),
/// which is under 4 KB of base64; 16 KiB leaves room for unusually large certificates
/// while refusing a value built to make the server decode and parse megabytes per
/// request. (App Service itself caps request headers well above this.)
pub(crate) const MAX_HEADER_VALUE_LEN: usize = 16 * 1024;

const PEM_ARMOUR: &str = "-----BEGIN";

/// Why a header value is not a usable client certificate. Each variant has a stable
/// [`reason`](HeaderError::reason) code for responses, logs and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("client certificate header is empty")]
    Empty,
    #[error(
        "client certificate header is {length} bytes; at most {MAX_HEADER_VALUE_LEN} are accepted"
    )]
    TooLarge { length: usize },
    /// More than one value: the header repeated, or values folded into one line with
    /// commas (base64 has no comma). App Service sends exactly one.
    #[error("client certificate header holds more than one value; App Service sends exactly one")]
    Repeated,
    #[error("client certificate header carries PEM armour; App Service sends bare base64 DER")]
    PemArmour,
    #[error("client certificate header is not standard base64: {detail}")]
    NotBase64 { detail: String },
    #[error("client certificate header does not hold a valid certificate: {source}")]
    MalformedCertificate { source: CertificateError },
}

impl HeaderError {
    /// A stable snake_case code naming the failure.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "header_empty",
            Self::TooLarge { .. } => "header_too_large",
            Self::Repeated => "client_cert_header_repeated",
            Self::PemArmour => "pem_armour_not_accepted",
            Self::NotBase64 { .. } => "not_base64",
            Self::MalformedCertificate {
                source: CertificateError::TrailingData { .. },
            } => "trailing_data",
            Self::MalformedCertificate { .. } => "malformed_certificate",
        }
    }
}

/// Decodes an `X-ARR-ClientCert` value into a parsed certificate.
///
/// Surrounding whitespace is tolerated (proxies and test tools add it); everything
/// else must be exactly standard-alphabet, padded base64 of one DER certificate.
pub fn parse_arr_client_cert(value: &str) -> Result<ClientCertificate, HeaderError> {
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(HeaderError::TooLarge {
            length: value.len(),
        });
    }
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(HeaderError::Empty);
    }
    if trimmed.contains(',') {
        return Err(HeaderError::Repeated);
    }
    if trimmed.contains(PEM_ARMOUR) {
        return Err(HeaderError::PemArmour);
    }
    let der = STANDARD
        .decode(trimmed)
        .map_err(|e| HeaderError::NotBase64 {
            detail: e.to_string(),
        })?;
    ClientCertificate::from_der(der).map_err(|source| HeaderError::MalformedCertificate { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_der() -> Vec<u8> {
        let params = rcgen::CertificateParams::new(vec!["device.example.com".to_owned()]).unwrap();
        keyturn_testkit::pki::self_signed(&params).cert_der
    }

    #[test]
    fn base64_der_with_surrounding_whitespace_is_accepted() {
        let der = certificate_der();
        let value = format!("  {}\r\n", STANDARD.encode(&der));
        let certificate = parse_arr_client_cert(&value).unwrap();
        assert_eq!(certificate.der().as_ref(), der.as_slice());
    }

    #[test]
    fn text_that_is_not_base64_is_rejected_as_not_base64() {
        assert_eq!(
            parse_arr_client_cert("this is not base64!")
                .unwrap_err()
                .reason(),
            "not_base64"
        );
    }

    #[test]
    fn truncated_der_is_rejected_as_malformed_certificate() {
        let der = certificate_der();
        let truncated = STANDARD.encode(&der[..der.len() / 2]);
        assert_eq!(
            parse_arr_client_cert(&truncated).unwrap_err().reason(),
            "malformed_certificate"
        );
    }

    #[test]
    fn pem_armour_is_rejected() {
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(certificate_der())
        );
        assert_eq!(
            parse_arr_client_cert(&pem).unwrap_err(),
            HeaderError::PemArmour
        );
        assert_eq!(
            parse_arr_client_cert(&pem).unwrap_err().reason(),
            "pem_armour_not_accepted"
        );
    }

    #[test]
    fn a_hundred_kilobytes_of_garbage_is_rejected_as_too_large() {
        let garbage: String = (0..100 * 1024)
            .map(|i| (b'!' + (i % 90) as u8) as char)
            .collect();
        assert_eq!(
            parse_arr_client_cert(&garbage).unwrap_err().reason(),
            "header_too_large"
        );
    }

    #[test]
    fn valid_base64_of_random_bytes_is_malformed() {
        assert_eq!(
            parse_arr_client_cert(&STANDARD.encode([0x30, 0x82, 0xff, 0xff, 1, 2, 3]))
                .unwrap_err()
                .reason(),
            "malformed_certificate"
        );
    }

    #[test]
    fn an_empty_header_is_rejected() {
        assert_eq!(
            parse_arr_client_cert(" \t ").unwrap_err().reason(),
            "header_empty"
        );
    }

    #[test]
    fn url_safe_base64_is_not_base64() {
        let encoded = STANDARD
            .encode(certificate_der())
            .replace('+', "-")
            .replace('/', "_");
        // A certificate's base64 almost always contains '+' or '/'; make sure this one does.
        let encoded = if encoded.contains('-') || encoded.contains('_') {
            encoded
        } else {
            format!("-{encoded}")
        };
        assert_eq!(
            parse_arr_client_cert(&encoded).unwrap_err().reason(),
            "not_base64"
        );
    }

    #[test]
    fn a_value_one_byte_over_the_limit_is_rejected_before_decoding() {
        let value = "A".repeat(MAX_HEADER_VALUE_LEN + 1);
        assert_eq!(
            parse_arr_client_cert(&value).unwrap_err(),
            HeaderError::TooLarge {
                length: MAX_HEADER_VALUE_LEN + 1
            }
        );
    }

    #[test]
    fn two_values_folded_into_one_line_are_refused_as_repeated() {
        let one = STANDARD.encode(certificate_der());
        let other = STANDARD.encode(certificate_der());
        for value in [
            format!("{one},{other}"),
            format!("{one}, {other}"),
            format!("{one},"),
        ] {
            assert_eq!(
                parse_arr_client_cert(&value).unwrap_err(),
                HeaderError::Repeated
            );
        }
    }

    #[test]
    fn two_concatenated_certificates_are_trailing_data() {
        let mut der = certificate_der();
        der.extend(certificate_der());
        assert_eq!(
            parse_arr_client_cert(&STANDARD.encode(der))
                .unwrap_err()
                .reason(),
            "trailing_data"
        );
    }
}
