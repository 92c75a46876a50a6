//! `keyturn cert verify`, through its library entry point: rcgen-made PKIs written to a
//! temporary directory, one JSON report and one exit code per run.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use keyturn_testkit::pki::{self, TestCa, rcgen};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, SerialNumber};
use tempfile::TempDir;

use keyturn::domain::thumbprint::Thumbprint;
use keyturn::mtls::verify_cli::{CertVerifyArgs, run};

/// A root, an issuing CA and a device certificate, written as PEM files.
struct Pki {
    dir: TempDir,
    root: TestCa,
    issuing: TestCa,
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap()
}

fn ca(name: &str, parent: Option<&TestCa>) -> TestCa {
    let mut params = pki::ca_params(name);
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    TestCa::from_params(params, parent)
}

impl Pki {
    fn new() -> Self {
        let root = ca("Fleet Root", None);
        let issuing = ca("Fleet Issuing", Some(&root));
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
            root,
            issuing,
        };
        std::fs::write(pki.path("roots.pem"), pki.root.cert_pem()).unwrap();
        std::fs::write(pki.path("intermediates.pem"), pki.issuing.cert_pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a device certificate (PEM) and returns its path and DER.
    fn device(
        &self,
        name: &str,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> (PathBuf, Vec<u8>) {
        let mut params = pki::client_params("laptop-42", &["laptop-42.fleet.example"]);
        // This device certificate carries no keyUsage extension.
        params.key_usages = Vec::new();
        params.serial_number = Some(SerialNumber::from(42u64));
        params.not_before = rcgen::date_time_ymd(2029, 1, 1);
        params.not_after = rcgen::date_time_ymd(2031, 1, 1);
        adjust(&mut params);
        let cert = self.issuing.issue(&params);
        let path = self.path(name);
        std::fs::write(&path, &cert.cert_pem).unwrap();
        (path, cert.cert_der)
    }

    /// Writes CRLs from both CAs into one PEM file; `revoked` are serials the issuing CA revokes.
    fn crls(&self, revoked: &[u64]) -> PathBuf {
        let crl = |issuer: &TestCa, revoked: &[u64]| {
            issuer
                .crl_with(
                    revoked,
                    rcgen::date_time_ymd(2030, 2, 1),
                    rcgen::date_time_ymd(2030, 1, 1),
                    rcgen::date_time_ymd(2031, 1, 1),
                )
                .pem
        };
        let path = self.path("crls.pem");
        std::fs::write(&path, crl(&self.root, &[]) + &crl(&self.issuing, revoked)).unwrap();
        path
    }

    fn args(&self, cert: &Path) -> CertVerifyArgs {
        CertVerifyArgs {
            roots: self.path("roots.pem"),
            intermediates: vec![self.path("intermediates.pem")],
            crl: Vec::new(),
            cert: cert.to_owned(),
            at: None,
        }
    }
}

#[test]
fn a_device_certificate_from_the_fleet_ca_is_valid() {
    let pki = Pki::new();
    let (cert, der) = pki.device("device.pem", |_| {});

    let report = run(&pki.args(&cert), now());
    let json = report.to_json();

    assert_eq!(report.exit_code(), 0);
    assert_eq!(json["valid"], true);
    assert_eq!(json["reason"], serde_json::Value::Null);
    assert_eq!(
        json["thumbprint_sha256"],
        Thumbprint::of_der(&der).to_string()
    );
    assert_eq!(json["subject"], "CN=laptop-42");
    assert_eq!(json["not_after"], "2031-01-01T00:00:00Z");
    assert_eq!(json["revocation"], "not_checked");
}

#[test]
fn a_der_certificate_file_is_accepted_too() {
    let pki = Pki::new();
    let (_, der) = pki.device("device.pem", |_| {});
    let der_path = pki.path("device.der");
    std::fs::write(&der_path, &der).unwrap();

    let report = run(&pki.args(&der_path), now());

    assert_eq!(report.exit_code(), 0, "{}", report.to_json());
}

#[test]
fn an_expired_certificate_is_rejected_with_exit_one() {
    let pki = Pki::new();
    let (cert, _) = pki.device("device.pem", |p| {
        p.not_after = rcgen::date_time_ymd(2030, 5, 1)
    });

    let report = run(&pki.args(&cert), now());
    let json = report.to_json();

    assert_eq!(report.exit_code(), 1);
    assert_eq!(json["valid"], false);
    assert_eq!(json["reason"], "expired");
    assert_eq!(
        json["subject"], "CN=laptop-42",
        "a rejected certificate is still identified"
    );
}

#[test]
fn at_moves_the_validation_time() {
    let pki = Pki::new();
    let (cert, _) = pki.device("device.pem", |_| {});
    let mut args = pki.args(&cert);
    args.at = Some("2032-01-01T00:00:00Z".to_owned());

    let report = run(&args, now());

    assert_eq!(report.to_json()["reason"], "expired");
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_certificate_not_yet_valid_is_rejected() {
    let pki = Pki::new();
    let (cert, _) = pki.device("device.pem", |p| {
        p.not_before = rcgen::date_time_ymd(2030, 9, 1)
    });

    assert_eq!(
        run(&pki.args(&cert), now()).to_json()["reason"],
        "not_yet_valid"
    );
}

#[test]
fn a_certificate_its_ca_formed_badly_is_rejected_with_the_profile_reason() {
    let pki = Pki::new();
    let (zero_serial, _) = pki.device("zero-serial.pem", |p| {
        p.serial_number = Some(SerialNumber::from_slice(&[0]))
    });
    let (no_authority_key, _) = pki.device("no-aki.pem", |p| {
        p.use_authority_key_identifier_extension = false
    });

    let report = run(&pki.args(&zero_serial), now());

    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.to_json()["reason"], "invalid_serial_number");
    assert_eq!(
        run(&pki.args(&no_authority_key), now()).to_json()["reason"],
        "invalid_key_identifiers"
    );
}

#[test]
fn a_certificate_under_another_root_is_an_unknown_issuer() {
    let pki = Pki::new();
    let (cert, _) = pki.device("device.pem", |_| {});
    let stranger = ca("Someone Else's Root", None);
    std::fs::write(pki.path("roots.pem"), stranger.cert_pem()).unwrap();

    let report = run(&pki.args(&cert), now());

    assert_eq!(report.to_json()["reason"], "unknown_issuer");
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_certificate_without_client_auth_is_rejected() {
    let pki = Pki::new();
    let (no_eku, _) = pki.device("no-eku.pem", |p| p.extended_key_usages.clear());
    let (server_only, _) = pki.device("server.pem", |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });

    assert_eq!(
        run(&pki.args(&no_eku), now()).to_json()["reason"],
        "missing_client_auth_eku"
    );
    assert_eq!(
        run(&pki.args(&server_only), now()).to_json()["reason"],
        "missing_client_auth_eku"
    );
}

#[test]
fn a_self_signed_device_certificate_is_an_unknown_issuer() {
    let pki = Pki::new();
    let mut params = CertificateParams::new(vec!["laptop-42.fleet.example".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let path = pki.path("self-signed.pem");
    std::fs::write(&path, pki::self_signed(&params).cert_pem).unwrap();

    assert_eq!(
        run(&pki.args(&path), now()).to_json()["reason"],
        "unknown_issuer"
    );
}

#[test]
fn a_revoked_certificate_is_rejected_when_crls_are_given() {
    let pki = Pki::new();
    let (cert, _) = pki.device("device.pem", |_| {});
    let mut args = pki.args(&cert);
    args.crl = vec![pki.crls(&[42])];

    let report = run(&args, now());
    let json = report.to_json();

    assert_eq!(json["reason"], "revoked");
    assert_eq!(json["revocation"], "checked");
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_certificate_absent_from_the_crls_is_valid_with_revocation_checked() {
    let pki = Pki::new();
    let (cert, _) = pki.device("device.pem", |_| {});
    let mut args = pki.args(&cert);
    args.crl = vec![pki.crls(&[41, 43])];

    let report = run(&args, now());

    assert_eq!(report.exit_code(), 0, "{}", report.to_json());
    assert_eq!(report.to_json()["revocation"], "checked");
}

#[test]
fn a_missing_certificate_file_is_unreadable_input_with_exit_two() {
    let pki = Pki::new();

    let report = run(&pki.args(&pki.path("nope.pem")), now());
    let json = report.to_json();

    assert_eq!(report.exit_code(), 2);
    assert_eq!(json["valid"], false);
    assert_eq!(json["reason"], "unreadable_input");
    assert_eq!(json["thumbprint_sha256"], serde_json::Value::Null);
}

#[test]
fn a_missing_roots_file_is_unreadable_input() {
    let pki = Pki::new();
    let (cert, _) = pki.device("device.pem", |_| {});
    std::fs::remove_file(pki.path("roots.pem")).unwrap();

    let report = run(&pki.args(&cert), now());

    assert_eq!(report.exit_code(), 2);
    assert_eq!(report.to_json()["reason"], "unreadable_input");
}

#[test]
fn unparsable_pem_is_unreadable_input() {
    let pki = Pki::new();
    let broken = pki.path("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();

    let report = run(&pki.args(&broken), now());

    assert_eq!(report.exit_code(), 2);
    assert_eq!(report.to_json()["reason"], "unreadable_input");
}

#[test]
fn a_bundle_given_as_the_certificate_is_refused() {
    let pki = Pki::new();
    let (cert, _) = pki.device("device.pem", |_| {});
    let bundle = pki.path("bundle.pem");
    std::fs::write(
        &bundle,
        std::fs::read_to_string(&cert).unwrap() + pki.issuing.cert_pem(),
    )
    .unwrap();

    let report = run(&pki.args(&bundle), now());

    assert_eq!(report.exit_code(), 2);
    assert_eq!(report.to_json()["reason"], "unreadable_input");
}

#[test]
fn a_bad_at_value_is_bad_usage() {
    let pki = Pki::new();
    let (cert, _) = pki.device("device.pem", |_| {});
    let mut args = pki.args(&cert);
    args.at = Some("next tuesday".to_owned());

    let report = run(&args, now());

    assert_eq!(report.exit_code(), 2);
    assert_eq!(report.to_json()["reason"], "bad_usage");
}
