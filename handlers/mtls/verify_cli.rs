//! `keyturn cert verify`: runs the `chain` policy on a certificate file and reports the
//! decision as one JSON object, so an operator can check a device certificate against
//! the same roots, intermediates and CRLs the endpoint uses.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use rustls_pki_types::CertificateDer;
use serde_json::json;

use crate::domain::file::read_capped;
use crate::mtls::certificate::ClientCertificate;
use crate::mtls::chain::{ChainOptions, ChainPolicy, ChainRejection, RevocationPolicy};
use crate::mtls::trust::{self, MAX_TRUST_FILE_LEN};

/// Exit code: the certificate was accepted.
pub(crate) const EXIT_ACCEPTED: i32 = 0;
/// Exit code: the certificate was rejected by the policy.
pub(crate) const EXIT_REJECTED: i32 = 1;
/// Exit code: bad usage or unreadable input; no decision was made. (Also what clap
/// uses for argument errors, so scripts see one code for "fix the command".)
pub(crate) const EXIT_USAGE: i32 = 2;

/// Arguments of `keyturn cert verify`.
#[derive(clap::Args, Debug, Clone)]
pub struct CertVerifyArgs {
    /// Trusted root certificates (PEM bundle or one DER certificate).
    #[arg(long, value_name = "FILE")]
    pub roots: PathBuf,
    /// Intermediate certificates offered to path building (PEM or DER); repeatable.
    #[arg(long, value_name = "FILE")]
    pub intermediates: Vec<PathBuf>,
    /// CRLs (PEM or DER); repeatable. When given, revocation is checked strictly: every
    /// certificate below the root must be covered by a current CRL.
    #[arg(long, value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// The certificate to verify (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Validate at this time instead of now (RFC 3339, for example 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
}

/// Why `cert verify` could not reach a decision.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CliError {
    #[error("--at {value:?} is not an RFC 3339 time: {detail}")]
    BadTime { value: String, detail: String },
    #[error("{0}")]
    Trust(#[from] trust::TrustError),
    #[error("cannot read {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    BadCertificate { path: PathBuf, detail: String },
}

/// The outcome of `cert verify`: what to print and the exit code.
#[derive(Debug)]
pub struct CertVerifyReport {
    outcome: Outcome,
    certificate: Option<ClientCertificate>,
    revocation_checked: bool,
}

#[derive(Debug)]
enum Outcome {
    Accepted,
    Rejected(ChainRejection),
    Unusable(CliError),
}

impl CliError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::BadTime { .. } => "bad_usage",
            Self::Trust(_) | Self::Read { .. } | Self::BadCertificate { .. } => "unreadable_input",
        }
    }
}

impl CertVerifyReport {
    /// `valid`, `reason` (null when valid), `message`, `thumbprint_sha256`, `subject`,
    /// `not_after` (null when the certificate could not be read) and `revocation`
    /// (`checked` or `not_checked`).
    pub fn to_json(&self) -> serde_json::Value {
        let (valid, reason, message) = match &self.outcome {
            Outcome::Accepted => (true, None, "certificate accepted".to_owned()),
            Outcome::Rejected(rejection) => {
                (false, Some(rejection.reason()), rejection.to_string())
            }
            Outcome::Unusable(error) => (false, Some(error.reason()), error.to_string()),
        };
        let certificate = self.certificate.as_ref();
        json!({
            "valid": valid,
            "reason": reason,
            "message": message,
            "thumbprint_sha256": certificate.map(|c| c.thumbprint().to_string()),
            "subject": certificate.map(|c| c.subject().to_owned()),
            "not_after": certificate
                .map(|c| c.not_after().to_rfc3339_opts(SecondsFormat::Secs, true)),
            "revocation": if self.revocation_checked { "checked" } else { "not_checked" },
        })
    }

    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            Outcome::Accepted => EXIT_ACCEPTED,
            Outcome::Rejected(_) => EXIT_REJECTED,
            Outcome::Unusable(_) => EXIT_USAGE,
        }
    }
}

/// Runs the chain policy as configured by `args`, at `--at` or else `now`.
pub fn run(args: &CertVerifyArgs, now: DateTime<Utc>) -> CertVerifyReport {
    let revocation_checked = !args.crl.is_empty();
    let unusable = |error: CliError| CertVerifyReport {
        outcome: Outcome::Unusable(error),
        certificate: None,
        revocation_checked,
    };
    let at = match &args.at {
        Some(value) => match DateTime::parse_from_rfc3339(value) {
            Ok(at) => at.with_timezone(&Utc),
            Err(e) => {
                return unusable(CliError::BadTime {
                    value: value.clone(),
                    detail: e.to_string(),
                });
            }
        },
        None => now,
    };
    let certificate = match read_certificate(&args.cert) {
        Ok(certificate) => certificate,
        Err(error) => return unusable(error),
    };
    let mut options = ChainOptions::default();
    if !revocation_checked {
        options.revocation = RevocationPolicy::NotChecked;
    }
    let policy = match ChainPolicy::from_files(&args.roots, &args.intermediates, &args.crl, options)
    {
        Ok(policy) => policy,
        Err(error) => return unusable(error.into()),
    };
    let outcome = match policy.validate(&certificate, &[], at) {
        Ok(_) => Outcome::Accepted,
        Err(rejection) => Outcome::Rejected(rejection),
    };
    CertVerifyReport {
        outcome,
        certificate: Some(certificate),
        revocation_checked,
    }
}

/// The certificate to check: exactly one, PEM or DER. A bundle is refused rather than
/// silently checking its first certificate.
fn read_certificate(path: &Path) -> Result<ClientCertificate, CliError> {
    let read_error = |detail: String| CliError::Read {
        path: path.to_path_buf(),
        detail,
    };
    // Bounded whatever the file is: `--cert /dev/zero` stops after the cap.
    let bytes = read_capped(path, MAX_TRUST_FILE_LEN).map_err(|e| read_error(e.to_string()))?;
    let mut ders: Vec<CertificateDer<'static>> =
        trust::certificates_from_bytes(&bytes, &path.display().to_string())?;
    let der = match (ders.pop(), ders.is_empty()) {
        (Some(der), true) => der,
        _ => {
            return Err(CliError::BadCertificate {
                path: path.to_path_buf(),
                detail: format!("holds {} certificates; give exactly one", ders.len() + 1),
            });
        }
    };
    ClientCertificate::from_der(der.to_vec()).map_err(|e| CliError::BadCertificate {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}
