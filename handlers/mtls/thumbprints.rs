//! The `trusted-thumbprints` policy: a client certificate is accepted when a digest of
//! its DER encoding is on a configured list.
//!
//! SHA-256 pins are the norm. SHA-1 pins are accepted because Windows' certificate store
//! and the Azure portal still show SHA-1 thumbprints first, and fleets migrating from the
//! PowerShell proxy carry lists of them; start-up logs a warning for each one, since a
//! SHA-1 pin identifies a certificate less firmly. Every comparison runs in constant
//! time over the digest bytes and every configured pin is compared, so neither a partial
//! match nor the pin's position in the list shows in the timing.

use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use subtle::{Choice, ConstantTimeEq};

use crate::domain::identity::{ClientIdentity, PolicyKind};
use crate::domain::thumbprint::{Thumbprint, ThumbprintError};
use crate::mtls::certificate::ClientCertificate;

/// Why the thumbprint policy could not be built or refused a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThumbprintPolicyError {
    #[error("trusted thumbprint #{index} is not a thumbprint: {source}")]
    InvalidPin {
        index: usize,
        source: ThumbprintError,
    },
    #[error("no trusted thumbprint is configured")]
    NoPins,
    #[error("the certificate's thumbprint is not on the trusted list")]
    NotTrusted,
}

impl ThumbprintPolicyError {
    /// A stable snake_case code for refusals (configuration errors never reach a caller).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::NotTrusted => "thumbprint_not_trusted",
            Self::InvalidPin { .. } | Self::NoPins => "thumbprint_policy_misconfigured",
        }
    }
}

/// The configured pins, split by algorithm so each presented certificate is hashed once
/// per algorithm in use.
#[derive(Debug, Clone)]
pub struct TrustedThumbprints {
    sha256: Vec<Thumbprint>,
    sha1: Vec<Thumbprint>,
}

impl TrustedThumbprints {
    /// Parses the pins in the forms operators paste (see [`Thumbprint::parse`]).
    pub fn parse<'a>(
        pins: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ThumbprintPolicyError> {
        let mut sha256 = Vec::new();
        let mut sha1 = Vec::new();
        for (index, pin) in pins.into_iter().enumerate() {
            let thumbprint = Thumbprint::parse(pin)
                .map_err(|source| ThumbprintPolicyError::InvalidPin { index, source })?;
            if thumbprint.is_legacy_sha1() {
                sha1.push(thumbprint);
            } else {
                sha256.push(thumbprint);
            }
        }
        if sha256.is_empty() && sha1.is_empty() {
            return Err(ThumbprintPolicyError::NoPins);
        }
        Ok(Self { sha256, sha1 })
    }

    /// The legacy SHA-1 pins, for the start-up warning.
    pub(crate) fn legacy_sha1_pins(&self) -> &[Thumbprint] {
        &self.sha1
    }

    /// Accepts `certificate` when one of its digests is pinned.
    pub(crate) fn validate(
        &self,
        certificate: &ClientCertificate,
    ) -> Result<ClientIdentity, ThumbprintPolicyError> {
        let mut hit = any_equal(&self.sha256, &certificate.thumbprint());
        if !self.sha1.is_empty() {
            let sha1 = sha1_thumbprint(certificate.der().as_ref());
            hit |= any_equal(&self.sha1, &sha1);
        }
        if bool::from(hit) {
            Ok(certificate
                .clone()
                .into_identity(PolicyKind::TrustedThumbprints))
        } else {
            Err(ThumbprintPolicyError::NotTrusted)
        }
    }
}

/// The SHA-1 thumbprint of a certificate's DER, as Windows shows it.
pub(crate) fn sha1_thumbprint(der: &[u8]) -> Thumbprint {
    Thumbprint::from_digest_bytes(digest(&SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
        .expect("a SHA-1 digest is 20 bytes, which is a SHA-1 thumbprint's length")
}

/// Compares against every pin without stopping at the first match.
fn any_equal(pins: &[Thumbprint], presented: &Thumbprint) -> Choice {
    pins.iter().fold(Choice::from(0), |hit, pin| {
        hit | pin.as_bytes().ct_eq(presented.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate() -> ClientCertificate {
        let params = rcgen::CertificateParams::new(vec!["device.example.com".to_owned()])
            .expect("valid params");
        ClientCertificate::from_der(keyturn_testkit::pki::self_signed(&params).cert_der)
            .expect("parses")
    }

    #[test]
    fn a_pinned_sha256_thumbprint_is_accepted() {
        let presented = certificate();
        let other = certificate();
        let policy = TrustedThumbprints::parse([
            other.thumbprint().to_string().as_str(),
            presented.thumbprint().to_lower_hex().as_str(),
        ])
        .expect("valid pins");
        let identity = policy.validate(&presented).expect("pinned");
        assert_eq!(identity.decided_by(), PolicyKind::TrustedThumbprints);
        assert_eq!(identity.thumbprint(), presented.thumbprint());
    }

    #[test]
    fn an_unpinned_certificate_is_refused() {
        let policy = TrustedThumbprints::parse([certificate().thumbprint().to_string().as_str()])
            .expect("valid pin");
        let error = policy.validate(&certificate()).expect_err("not pinned");
        assert_eq!(error.reason(), "thumbprint_not_trusted");
    }

    #[test]
    fn a_sha1_pin_matches_and_is_reported_as_legacy() {
        let presented = certificate();
        let sha1 = sha1_thumbprint(presented.der().as_ref());
        let policy = TrustedThumbprints::parse([sha1.to_string().as_str()]).expect("valid pin");
        assert_eq!(policy.legacy_sha1_pins(), &[sha1]);
        assert!(policy.validate(&presented).is_ok());
        assert!(policy.validate(&certificate()).is_err());
    }

    #[test]
    fn a_malformed_pin_is_refused_with_its_position() {
        let error = TrustedThumbprints::parse(["AB:CD", "zz"]).expect_err("bad pins");
        assert!(matches!(
            error,
            ThumbprintPolicyError::InvalidPin { index: 0, .. }
        ));
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert_eq!(
            TrustedThumbprints::parse(std::iter::empty()).expect_err("empty"),
            ThumbprintPolicyError::NoPins
        );
    }
}
