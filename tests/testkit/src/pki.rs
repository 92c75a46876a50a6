//! One test PKI: CAs (roots and intermediates), leaf certificates and CRLs made with
//! rcgen, handed out as DER and PEM. Tests shape a certificate by adjusting rcgen's
//! parameters (re-exported as [`rcgen`]) before it is signed.

pub use rcgen;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};

/// A certificate and its private key, in the forms tests need.
#[derive(Clone)]
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// PKCS#8 DER.
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_der", &self.cert_der.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Issued {
    /// The certificate rcgen made and the key it certifies.
    pub fn new(cert: &rcgen::Certificate, key: &KeyPair) -> Self {
        Self {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The parameters of a CA named `name` (CN only): basicConstraints CA, keyCertSign and
/// cRLSign, and the authority key identifier RFC 5280 asks for.
pub fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::new()).expect("no names to check");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    params
}

/// The parameters of a device certificate: CN `name`, the given DNS names, the
/// clientAuth extended key usage, digitalSignature, and the authority key identifier.
pub fn client_params(name: &str, dns_names: &[&str]) -> CertificateParams {
    let names: Vec<String> = dns_names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("valid DNS names");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

/// The parameters of a TLS server certificate: CN the first name, every name (DNS names
/// and IP addresses) a subject alternative name, the serverAuth extended key usage, and
/// the authority key identifier.
pub fn server_params(names: &[&str]) -> CertificateParams {
    let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(sans).expect("valid names");
    params.distinguished_name = DistinguishedName::new();
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

/// A fresh 2048-bit RSA key (signing with SHA-256). rcgen generates only ECDSA and
/// Ed25519 keys on ring, so aws-lc-rs makes this one; ring signs with it.
pub fn rsa_key() -> KeyPair {
    use aws_lc_rs::encoding::AsDer;
    let generated =
        aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("an RSA key");
    let pkcs8 = generated.as_der().expect("PKCS#8 DER");
    KeyPair::try_from(pkcs8.as_ref()).expect("ring signs with an RSA PKCS#8 key")
}

/// A self-signed certificate with a fresh key.
pub fn self_signed(params: &CertificateParams) -> Issued {
    let key = KeyPair::generate().expect("a key");
    let cert = params.self_signed(&key).expect("self-signed");
    Issued::new(&cert, &key)
}

/// A CA: its parameters and key sign what it issues.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    issued: Issued,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A root CA named `name`.
    pub fn root(name: &str) -> Self {
        Self::new(ca_params(name), None, KeyPair::generate().expect("a key"))
    }

    /// A CA named `name` issued by `parent`.
    pub fn intermediate(name: &str, parent: &TestCa) -> Self {
        Self::new(
            ca_params(name),
            Some(parent),
            KeyPair::generate().expect("a key"),
        )
    }

    /// A CA from `params` (see [`ca_params`]) with a fresh key, signed by `parent` or by
    /// itself.
    pub fn from_params(params: CertificateParams, parent: Option<&TestCa>) -> Self {
        Self::new(params, parent, KeyPair::generate().expect("a key"))
    }

    /// A CA from `params` (see [`ca_params`]) and `key`, signed by `parent` or by itself.
    pub fn new(params: CertificateParams, parent: Option<&TestCa>, key: KeyPair) -> Self {
        let cert = match parent {
            Some(parent) => params.signed_by(&key, &parent.issuer()).expect("signed"),
            None => params.self_signed(&key).expect("self-signed"),
        };
        let issued = Issued::new(&cert, &key);
        Self {
            params,
            key,
            issued,
        }
    }

    /// This CA's own certificate and key.
    pub fn cert(&self) -> &Issued {
        &self.issued
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.issued.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.issued.cert_pem
    }

    pub fn params(&self) -> &CertificateParams {
        &self.params
    }

    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    /// What rcgen signs with on this CA's behalf.
    pub fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// Signs `params` with a fresh key.
    pub fn issue(&self, params: &CertificateParams) -> Issued {
        self.issue_with_key(params, &KeyPair::generate().expect("a key"))
    }

    /// Signs `params` for `key`.
    pub fn issue_with_key(&self, params: &CertificateParams, key: &KeyPair) -> Issued {
        let cert = params.signed_by(key, &self.issuer()).expect("signed");
        Issued::new(&cert, key)
    }

    /// A CRL numbered 1 listing `revoked` serials, revoked at `this_update`.
    pub fn crl(
        &self,
        revoked: &[u64],
        this_update: time::OffsetDateTime,
        next_update: time::OffsetDateTime,
    ) -> Crl {
        self.crl_with(revoked, this_update, this_update, next_update)
    }

    /// A CRL numbered 1 listing `revoked` serials, each revoked at `revoked_at`.
    pub fn crl_with(
        &self,
        revoked: &[u64],
        revoked_at: time::OffsetDateTime,
        this_update: time::OffsetDateTime,
        next_update: time::OffsetDateTime,
    ) -> Crl {
        let crl = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: revoked_at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer())
        .expect("signed");
        Crl {
            der: crl.der().to_vec(),
            pem: crl.pem().expect("PEM"),
        }
    }
}

/// A signed CRL.
#[derive(Debug, Clone)]
pub struct Crl {
    pub der: Vec<u8>,
    pub pem: String,
}
