//! The development PKI local mode bootstraps: a dev CA, a localhost server certificate for
//! the TLS-terminating secret endpoint, two device certificates with the clientAuth EKU
//! (one the demo access policy grants, one it does not) and an empty CRL, so the `chain`
//! policy runs with revocation on, exactly as in production.
//!
//! Private keys are written owner-only. None of this is meant for anything but a demo on
//! one machine.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
};

/// How long the dev certificates and the CRL stay valid. A year keeps a demo working
/// without renewals while still expiring, unlike a "never expires" dev certificate.
pub(crate) const DEV_VALIDITY_DAYS: i64 = 365;

/// The files of the dev PKI, under `<data-dir>/pki/`.
#[derive(Debug, Clone)]
pub(crate) struct DevPki {
    pub dir: PathBuf,
}

impl DevPki {
    pub(crate) fn at(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("pki"),
        }
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub(crate) fn crl(&self) -> PathBuf {
        self.dir.join("ca.crl.pem")
    }
    pub(crate) fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub(crate) fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
    /// The device the demo access policy grants.
    pub(crate) fn granted_cert(&self) -> PathBuf {
        self.dir.join("device-granted.pem")
    }
    pub(crate) fn granted_key(&self) -> PathBuf {
        self.dir.join("device-granted-key.pem")
    }
    /// The device the demo access policy does not grant.
    pub(crate) fn other_cert(&self) -> PathBuf {
        self.dir.join("device-other.pem")
    }
    pub(crate) fn other_key(&self) -> PathBuf {
        self.dir.join("device-other-key.pem")
    }
}

/// The organization in every dev certificate's subject.
pub(crate) const DEV_ORGANIZATION: &str = "keyturn local mode";

/// The granted demo device's subject common name.
pub(crate) const GRANTED_DEVICE_CN: &str = "keyturn-demo-device-1";
/// The other demo device's subject common name.
pub(crate) const OTHER_DEVICE_CN: &str = "keyturn-demo-device-2";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("dev PKI: {0}")]
    Generate(String),
    #[error("dev PKI: cannot write {path}: {problem}")]
    Write { path: PathBuf, problem: String },
}

fn generate(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

fn params(cn: &str, now: DateTime<Utc>) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    // DER order is least specific first, as CAs encode it; the RFC 4514 string (what
    // access policies match) then reads `CN=..., O=...`.
    name.push(DnType::OrganizationName, DEV_ORGANIZATION);
    name.push(DnType::CommonName, cn);
    params.distinguished_name = name;
    params.not_before = to_offset(now - chrono::Duration::minutes(5))?;
    params.not_after = to_offset(now + chrono::Duration::days(DEV_VALIDITY_DAYS))?;
    params.key_identifier_method = KeyIdMethod::Sha256;
    // RFC 5280 4.2.1.1: the chain policy's profile requires the issuer's key identifier
    // in every certificate a CA issues.
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn to_offset(t: DateTime<Utc>) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|e| PkiError::Generate(e.to_string()))
}

/// Generates the dev PKI into `pki.dir` as of `now`.
pub(crate) fn create(pki: &DevPki, now: DateTime<Utc>) -> Result<(), PkiError> {
    fs::create_dir_all(&pki.dir).map_err(|e| PkiError::Write {
        path: pki.dir.clone(),
        problem: e.to_string(),
    })?;
    restrict_dir(&pki.dir)?;

    let ca_key = KeyPair::generate().map_err(generate)?;
    let mut ca_params = params("keyturn dev CA", now)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(generate)?;
    let issuer = Issuer::new(ca_params, &ca_key);
    write(&pki.ca(), ca_cert.pem().as_bytes(), false)?;

    let server_key = KeyPair::generate().map_err(generate)?;
    let mut server = params("localhost", now)?;
    server.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().map_err(generate)?),
        SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let server_cert = server.signed_by(&server_key, &issuer).map_err(generate)?;
    write(&pki.server_cert(), server_cert.pem().as_bytes(), false)?;
    write(
        &pki.server_key(),
        server_key.serialize_pem().as_bytes(),
        true,
    )?;

    for (cn, cert_path, key_path) in [
        (GRANTED_DEVICE_CN, pki.granted_cert(), pki.granted_key()),
        (OTHER_DEVICE_CN, pki.other_cert(), pki.other_key()),
    ] {
        let key = KeyPair::generate().map_err(generate)?;
        let mut device = params(cn, now)?;
        device.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        device.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = device.signed_by(&key, &issuer).map_err(generate)?;
        write(&cert_path, cert.pem().as_bytes(), false)?;
        write(&key_path, key.serialize_pem().as_bytes(), true)?;
    }

    let crl = CertificateRevocationListParams {
        this_update: to_offset(now - chrono::Duration::minutes(5))?,
        next_update: to_offset(now + chrono::Duration::days(DEV_VALIDITY_DAYS))?,
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .map_err(generate)?;
    write(&pki.crl(), crl.pem().map_err(generate)?.as_bytes(), false)?;
    Ok(())
}

fn write(path: &Path, bytes: &[u8], private: bool) -> Result<(), PkiError> {
    let failed = |e: std::io::Error| PkiError::Write {
        path: path.to_path_buf(),
        problem: e.to_string(),
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(bytes).map_err(failed)
}

fn restrict_dir(dir: &Path) -> Result<(), PkiError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
            PkiError::Write {
                path: dir.to_path_buf(),
                problem: e.to_string(),
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mtls::certificate::ClientCertificate;
    use crate::mtls::chain::{ChainOptions, ChainPolicy};

    #[test]
    fn the_dev_pki_yields_devices_the_chain_policy_accepts_with_revocation_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = DevPki::at(dir.path());
        let now = Utc::now();
        create(&pki, now).expect("generated");

        let policy = ChainPolicy::from_files(&pki.ca(), &[], &[pki.crl()], ChainOptions::default())
            .expect("trust loads");
        for cert in [pki.granted_cert(), pki.other_cert()] {
            let pem = fs::read(&cert).expect("cert");
            let der = crate::mtls::trust::certificates_from_bytes(&pem, "device certificate")
                .expect("pem")
                .remove(0);
            let client = ClientCertificate::from_der(der.as_ref().to_vec()).expect("parses");
            policy
                .validate(&client, &[], now)
                .expect("the chain policy accepts a dev device");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(pki.granted_key())
                .expect("key")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
