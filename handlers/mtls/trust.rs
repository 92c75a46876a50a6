//! Trust material for certificate validation: trust anchors, intermediates and CRLs,
//! read from PEM bundles or DER files, and the reloadable [`CrlSet`].

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor};
use webpki::{CertRevocationList, OwnedCertRevocationList};

use crate::domain::file::{CappedReadError, read_capped};
use crate::mtls::profile;

/// The largest trust file read. Mozilla's whole root bundle is about 250 KB and a
/// busy enterprise CA's full CRL a few MB; 16 MiB is ample for both while keeping a
/// mistaken path (a disk image, a log file) from being read into memory.
pub(crate) const MAX_TRUST_FILE_LEN: u64 = 16 * 1024 * 1024;

const PEM_BEGIN: &[u8] = b"-----BEGIN";

/// Why trust material could not be loaded. Configuration errors: they stop start-up
/// (or a reload) rather than reject a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_TRUST_FILE_LEN} bytes")]
    TooLarge { path: PathBuf },
    #[error("{origin}: not valid PEM: {detail}")]
    Pem { origin: String, detail: String },
    #[error("{origin}: holds no {expected}")]
    Empty {
        origin: String,
        expected: &'static str,
    },
    #[error("{origin}: certificate #{index} is not usable: {detail}")]
    InvalidCertificate {
        origin: String,
        index: usize,
        detail: String,
    },
    #[error("{origin}: CRL #{index} is not usable: {detail}")]
    InvalidCrl {
        origin: String,
        index: usize,
        detail: String,
    },
}

/// Certificate revocation lists, parsed and ready for webpki. Remembers the files it
/// came from so that [`CrlSet::reload`] can read them again when the CA publishes.
#[derive(Debug, Default)]
pub struct CrlSet {
    crls: Vec<CertRevocationList<'static>>,
    sources: Vec<PathBuf>,
    /// The earliest nextUpdate of the set, after which a strict policy refuses what it
    /// accepted before.
    next_update: Option<DateTime<Utc>>,
}

impl CrlSet {
    /// A set with no CRLs, for policies that do not check revocation.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads CRLs from files, each PEM (any number of `X509 CRL` blocks) or one DER CRL.
    pub(crate) fn load(paths: &[PathBuf]) -> Result<Self, TrustError> {
        let mut crls = Vec::new();
        for path in paths {
            let bytes = read_limited(path)?;
            crls.extend(parse_crls(&bytes, &path.display().to_string())?);
        }
        Ok(Self::of(crls, paths.to_vec()))
    }

    /// CRLs from bytes in memory (PEM or one DER CRL); `origin` names them in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, TrustError> {
        Ok(Self::of(parse_crls(bytes, origin)?, Vec::new()))
    }

    /// CRLs already in DER form.
    #[cfg(test)]
    pub(crate) fn from_der_list(
        ders: &[CertificateRevocationListDer<'_>],
    ) -> Result<Self, TrustError> {
        let crls = ders
            .iter()
            .enumerate()
            .map(|(index, der)| parse_one_crl(der.as_ref(), "CRL list", index))
            .collect::<Result<_, _>>()?;
        Ok(Self::of(crls, Vec::new()))
    }

    fn of(crls: Vec<(CertRevocationList<'static>, DateTime<Utc>)>, sources: Vec<PathBuf>) -> Self {
        let next_update = crls.iter().map(|(_, next)| *next).min();
        Self {
            crls: crls.into_iter().map(|(crl, _)| crl).collect(),
            sources,
            next_update,
        }
    }

    /// Reads the same files again. On error the caller keeps its current set, so a CA
    /// publishing a half-written file never leaves keyturn without CRLs.
    pub(crate) fn reload(&self) -> Result<Self, TrustError> {
        Self::load(&self.sources)
    }

    pub fn len(&self) -> usize {
        self.crls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.crls.is_empty()
    }

    pub(crate) fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// The earliest nextUpdate in the set (`None` when it is empty).
    pub fn next_update(&self) -> Option<DateTime<Utc>> {
        self.next_update
    }

    pub(crate) fn webpki_crls(&self) -> Vec<&CertRevocationList<'static>> {
        self.crls.iter().collect()
    }
}

/// Reads certificates from a file: PEM (any number of `CERTIFICATE` blocks) or one
/// DER certificate.
pub(crate) fn certificates_from_file(
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let bytes = read_limited(path)?;
    certificates_from_bytes(&bytes, &path.display().to_string())
}

/// Certificates from bytes in memory (PEM or one DER certificate); `origin` names them
/// in errors. Each must parse as an X.509 certificate.
pub fn certificates_from_bytes(
    bytes: &[u8],
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let certificates: Vec<CertificateDer<'static>> = pem_or_der(bytes, origin, "certificates")?;
    for (index, certificate) in certificates.iter().enumerate() {
        webpki::EndEntityCert::try_from(certificate).map_err(|e| {
            TrustError::InvalidCertificate {
                origin: origin.to_owned(),
                index,
                detail: e.to_string(),
            }
        })?;
    }
    Ok(certificates)
}

/// A configured root: the trust anchor webpki builds paths to, and the certificate it
/// came from, which keyturn's own profile checks read (webpki keeps only a root's
/// subject, key and name constraints: RFC 5280 section 6.1.1's name and key).
pub(crate) struct Root {
    pub(crate) anchor: TrustAnchor<'static>,
    pub(crate) der: CertificateDer<'static>,
}

/// Trust anchors from root certificates, each kept beside its certificate.
pub(crate) fn roots(roots: &[CertificateDer<'_>]) -> Result<Vec<Root>, TrustError> {
    if roots.is_empty() {
        return Err(TrustError::Empty {
            origin: "roots".to_owned(),
            expected: "certificates",
        });
    }
    roots
        .iter()
        .enumerate()
        .map(|(index, root)| {
            webpki::anchor_from_trusted_cert(root)
                .map(|anchor| Root {
                    anchor: anchor.to_owned(),
                    der: root.clone().into_owned(),
                })
                .map_err(|e| TrustError::InvalidCertificate {
                    origin: "roots".to_owned(),
                    index,
                    detail: e.to_string(),
                })
        })
        .collect()
}

/// The objects in `bytes`: every PEM block of `T`'s label, or the whole input as one
/// DER object; at least one. `origin` names the input and `expected` what it should
/// hold, in errors.
fn pem_or_der<T>(bytes: &[u8], origin: &str, expected: &'static str) -> Result<Vec<T>, TrustError>
where
    T: PemObject + From<Vec<u8>>,
{
    let objects: Vec<T> = if looks_like_pem(bytes) {
        T::pem_slice_iter(bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| TrustError::Pem {
                origin: origin.to_owned(),
                detail: e.to_string(),
            })?
    } else {
        vec![T::from(bytes.to_vec())]
    };
    if objects.is_empty() {
        return Err(TrustError::Empty {
            origin: origin.to_owned(),
            expected,
        });
    }
    Ok(objects)
}

fn parse_crls(
    bytes: &[u8],
    origin: &str,
) -> Result<Vec<(CertRevocationList<'static>, DateTime<Utc>)>, TrustError> {
    let ders: Vec<CertificateRevocationListDer<'static>> = pem_or_der(bytes, origin, "CRLs")?;
    ders.iter()
        .enumerate()
        .map(|(index, der)| parse_one_crl(der.as_ref(), origin, index))
        .collect()
}

/// One CRL for webpki, with its nextUpdate.
fn parse_one_crl(
    der: &[u8],
    origin: &str,
    index: usize,
) -> Result<(CertRevocationList<'static>, DateTime<Utc>), TrustError> {
    let invalid = |detail: String| TrustError::InvalidCrl {
        origin: origin.to_owned(),
        index,
        detail,
    };
    let crl = OwnedCertRevocationList::from_der(der)
        .map(CertRevocationList::from)
        .map_err(|e| invalid(e.to_string()))?;
    // webpki does not insist on what RFC 5280 requires of every CRL; a CRL that breaks
    // it is refused here, so a reload keeps the previous set and start-up stops.
    let next_update = profile::check_crl(der).map_err(|e| invalid(e.to_string()))?;
    // webpki has already required nextUpdate; should it be missing all the same, the
    // earliest time there is stands in, so nothing relying on it is kept.
    Ok((crl, next_update.unwrap_or(DateTime::<Utc>::MIN_UTC)))
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(PEM_BEGIN.len()).any(|w| w == PEM_BEGIN)
}

fn read_limited(path: &Path) -> Result<Vec<u8>, TrustError> {
    read_capped(path, MAX_TRUST_FILE_LEN).map_err(|error| match error {
        CappedReadError::TooLarge { .. } => TrustError::TooLarge {
            path: path.to_owned(),
        },
        CappedReadError::Io(source) => TrustError::Read {
            path: path.to_owned(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use keyturn_testkit::pki::{Crl, TestCa};

    use super::*;

    fn ca() -> TestCa {
        TestCa::root("test root")
    }

    /// An empty CRL signed by a fresh CA.
    fn empty_crl() -> Crl {
        ca().crl(
            &[],
            rcgen::date_time_ymd(2024, 1, 1),
            rcgen::date_time_ymd(2034, 1, 1),
        )
    }

    #[test]
    fn a_pem_bundle_yields_every_certificate() {
        let (a, b) = (ca(), ca());
        let bundle = format!("{}\n{}", a.cert_pem(), b.cert_pem());
        let certificates = certificates_from_bytes(bundle.as_bytes(), "bundle").unwrap();
        assert_eq!(certificates.len(), 2);
        assert_eq!(certificates[1].as_ref(), b.cert_der());
    }

    #[test]
    fn a_der_file_yields_one_certificate() {
        let a = ca();
        let certificates = certificates_from_bytes(a.cert_der(), "der").unwrap();
        assert_eq!(certificates.len(), 1);
    }

    #[test]
    fn pem_without_certificates_is_empty() {
        let key_only = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(matches!(
            certificates_from_bytes(key_only.as_bytes(), "key.pem"),
            Err(TrustError::Empty { .. })
        ));
    }

    #[test]
    fn garbage_is_an_invalid_certificate() {
        assert!(matches!(
            certificates_from_bytes(b"not a certificate", "junk"),
            Err(TrustError::InvalidCertificate { index: 0, .. })
        ));
    }

    #[test]
    fn a_truncated_pem_block_is_a_pem_error() {
        let a = ca();
        let pem = a.cert_pem();
        let truncated = &pem[..pem.len() - 30];
        assert!(matches!(
            certificates_from_bytes(truncated.as_bytes(), "cut.pem"),
            Err(TrustError::Pem { .. })
        ));
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        assert!(matches!(
            certificates_from_file(Path::new("/nonexistent/roots.pem")),
            Err(TrustError::Read { .. })
        ));
    }

    #[test]
    fn crls_load_from_files_and_reload() {
        let crl = empty_crl();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.crl");
        fs::write(&path, &crl.pem).unwrap();

        let set = CrlSet::load(std::slice::from_ref(&path)).unwrap();
        assert_eq!(set.len(), 1);

        fs::write(&path, "-----BEGIN X509 CRL-----\nAAAA\n").unwrap();
        assert!(
            set.reload().is_err(),
            "a broken file must not replace the set"
        );
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_crl_without_a_crl_number_is_refused_when_loaded() {
        let mut der = empty_crl().der;
        // id-ce-cRLNumber (2.5.29.20) becomes an unassigned id-ce arc (2.5.29.99):
        // the CRL is well-formed DER without a CRLNumber. Signatures are checked when a
        // CRL is used, not when it is loaded.
        let at = der
            .windows(5)
            .position(|w| w == [0x06, 0x03, 0x55, 0x1d, 0x14])
            .unwrap();
        der[at + 4] = 0x63;

        let error = CrlSet::from_bytes(&der, "root.crl").unwrap_err();

        assert!(matches!(error, TrustError::InvalidCrl { index: 0, .. }));
        assert!(error.to_string().contains("CRLNumber"), "{error}");
    }

    #[test]
    fn bytes_that_are_not_a_crl_are_rejected() {
        assert!(matches!(
            CrlSet::from_bytes(b"\x30\x03\x02\x01\x00", "junk.crl"),
            Err(TrustError::InvalidCrl { .. })
        ));
    }
}
