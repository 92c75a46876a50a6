//! The first-run demo of local mode: a dev PKI, an access policy granting one demo device,
//! and managed objects in the local vault that show every kind of rotation: an application
//! client secret near expiry, a generated secret near expiry, an expired certificate and a
//! secret without expiry. Bootstrapping happens once per data directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::adapters::local::directory::LocalDirectory;
use crate::adapters::local::vault::{LocalCertificatePolicy, LocalVault};
use crate::config::local_vault_url;
use crate::domain::names::ObjectName;
use crate::domain::secret::SecretValue;
use crate::local::pki::{self, DEV_ORGANIZATION, DevPki, GRANTED_DEVICE_CN};
use crate::ports::directory::CredentialIssuer;
use crate::ports::vault::NewSecretVersion;

/// Marks a bootstrapped data directory; written last, so an interrupted bootstrap runs
/// again from the start.
const MARKER: &str = "bootstrapped.json";
const ACCESS_POLICY: &str = "access-policy.json";

pub(crate) const DEMO_APP_SECRET: &str = "demo-app-secret";
pub(crate) const DEMO_GENERATED: &str = "demo-generated";
pub(crate) const DEMO_CERTIFICATE: &str = "demo-certificate";
pub(crate) const DEMO_NO_EXPIRY: &str = "demo-no-expiry";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("bootstrap: {0}")]
    Store(String),
    #[error("bootstrap: cannot write {path}: {problem}")]
    Write { path: PathBuf, problem: String },
}

/// Where the demo's files are.
#[derive(Debug, Clone)]
pub(crate) struct Demo {
    pub pki: DevPki,
    pub access_policy: PathBuf,
}

impl Demo {
    pub(crate) fn at(data_dir: &Path) -> Self {
        Self {
            pki: DevPki::at(data_dir),
            access_policy: data_dir.join(ACCESS_POLICY),
        }
    }
}

pub(crate) fn is_bootstrapped(data_dir: &Path) -> bool {
    data_dir.join(MARKER).is_file()
}

/// Creates the demo in `data_dir` as of `now`, unless it exists already.
pub(crate) async fn bootstrap(
    data_dir: &Path,
    vault: &LocalVault,
    directory: &LocalDirectory,
    now: DateTime<Utc>,
) -> Result<Demo, BootstrapError> {
    let demo = Demo::at(data_dir);
    if is_bootstrapped(data_dir) {
        return Ok(demo);
    }
    pki::create(&demo.pki, now)?;
    let policy = json!({
        "version": 1,
        "grants": [{
            "name": "the demo device reads the demo secrets",
            "identities": [{ "subject": format!("CN={GRANTED_DEVICE_CN}, O={DEV_ORGANIZATION}") }],
            "secrets": ["demo-*"],
            "backend": "local"
        }]
    });
    write(
        &demo.access_policy,
        &serde_json::to_vec_pretty(&policy).unwrap_or_default(),
    )?;

    let store = |e: crate::ports::PortError| BootstrapError::Store(e.to_string());
    let url = local_vault_url();
    let name =
        |n: &str| ObjectName::parse(n).expect("invariant: demo names are valid secret names");

    // An application whose client secret expires in ten days: inside the default
    // rotate-before window, so the first sweep rotates it through the directory.
    let app = directory
        .create_application("keyturn demo application")
        .await
        .map_err(store)?;
    let expires = now + Duration::days(10);
    let issued = directory
        .add_password(&app.object_id, "initial secret (demo)", expires)
        .await
        .map_err(store)?;
    let tags = BTreeMap::from([
        ("keyturn-kind".to_string(), "entra-app-secret".to_string()),
        ("keyturn-app-id".to_string(), app.app_id.to_string()),
        (
            "keyturn-key-id".to_string(),
            issued.credential.key_id.to_string(),
        ),
    ]);
    vault
        .set_secret_at(
            &url,
            &name(DEMO_APP_SECRET),
            &issued.secret,
            version(tags, Some(expires)),
            now,
        )
        .await
        .map_err(store)?;

    let generated_tags = BTreeMap::from([
        ("keyturn-kind".to_string(), "generated".to_string()),
        ("keyturn-length".to_string(), "40".to_string()),
    ]);
    vault
        .set_secret_at(
            &url,
            &name(DEMO_GENERATED),
            &SecretValue::new(random_text()),
            version(generated_tags.clone(), Some(now + Duration::days(5))),
            now,
        )
        .await
        .map_err(store)?;
    vault
        .set_secret_at(
            &url,
            &name(DEMO_NO_EXPIRY),
            &SecretValue::new(random_text()),
            version(generated_tags, None),
            now,
        )
        .await
        .map_err(store)?;

    // Issued 400 days ago for 365 days: expired for a month.
    let certificate_tags =
        BTreeMap::from([("keyturn-kind".to_string(), "certificate".to_string())]);
    vault
        .create_certificate(
            &url,
            &name(DEMO_CERTIFICATE),
            LocalCertificatePolicy::self_signed("demo.keyturn.local", &["demo.keyturn.local"], 365),
            certificate_tags,
            now - Duration::days(400),
        )
        .await
        .map_err(store)?;

    write(
        &data_dir.join(MARKER),
        &serde_json::to_vec_pretty(
            &json!({ "bootstrappedAt": now, "application": app.app_id.to_string() }),
        )
        .unwrap_or_default(),
    )?;
    Ok(demo)
}

fn version(tags: BTreeMap<String, String>, expires: Option<DateTime<Utc>>) -> NewSecretVersion {
    NewSecretVersion {
        content_type: Some("text/plain".into()),
        not_before: None,
        expires,
        tags,
    }
}

/// A demo value from the OS CSPRNG.
fn random_text() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BootstrapError> {
    fs::write(path, bytes).map_err(|e| BootstrapError::Write {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

/// What a user should try, printed after start-up.
pub(crate) fn instructions(
    demo: &Demo,
    data_dir: &Path,
    tls_address: &str,
    ingress: &str,
) -> String {
    let p = &demo.pki;
    let curl = |cert: &Path, key: &Path| {
        format!(
            "curl --cacert {} --cert {} --key {} https://{tls_address}/api/secrets/{DEMO_GENERATED}",
            p.ca().display(),
            cert.display(),
            key.display()
        )
    };
    format!(
        "keyturn local mode\n\
         \n  data directory:   {data}\n  secret endpoint:  https://{tls_address}/api/secrets/<name> (mutual TLS)\n  event ingress:    {ingress}\n\
         \nFetch a secret with the granted demo device:\n  {granted}\n\
         \nThe other demo device is authenticated but not granted (403):\n  {other}\n\
         \nSee what the vault holds and what rotation did:\n  keyturn vault list --data-dir {data}\n  keyturn audit verify   (with KEYTURN_AUDIT_STORE=sqlite KEYTURN_DATA_DIR={data})\n\
         \nFiles: dev CA {ca}, access policy {policy}\n",
        data = data_dir.display(),
        granted = curl(&p.granted_cert(), &p.granted_key()),
        other = curl(&p.other_cert(), &p.other_key()),
        ca = p.ca().display(),
        policy = demo.access_policy.display(),
    )
}
