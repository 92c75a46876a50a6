//! The first-run demo of local mode: a dev PKI, an access policy granting one demo device,
//! and managed objects in the local vault that show every kind of rotation: an application
//! client secret near expiry, a generated secret near expiry, an expired certificate and a
//! secret without expiry. Beside it, an inventory demo for discovery: a second vault and
//! more applications and service principals with owners. Each is seeded once per data
//! directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::adapters::local::directory::{ListedCredential, ListedCredentialKind, LocalDirectory};
use crate::adapters::local::vault::{LocalCertificatePolicy, LocalVault};
use crate::config::local_vault_url;
use crate::domain::ids::KeyId;
use crate::domain::inventory::Owner;
use crate::domain::names::{ObjectName, VaultUrl};
use crate::domain::secret::SecretValue;
use crate::local::pki::{self, DEV_ORGANIZATION, DevPki, GRANTED_DEVICE_CN};
use crate::ports::directory::CredentialIssuer;
use crate::ports::vault::NewSecretVersion;

/// Marks a bootstrapped data directory; written last, so an interrupted bootstrap runs
/// again from the start.
const MARKER: &str = "bootstrapped.json";
const ACCESS_POLICY: &str = "access-policy.json";
/// Marks that the inventory demo was seeded (written last, as [`MARKER`]).
const INVENTORY_MARKER: &str = "bootstrapped-inventory.json";

/// The demo's second vault, holding objects for discovery only.
pub(crate) const DEMO_SECOND_VAULT: &str = "https://keyturn-demo-team.vault.azure.net/";
const OWNER_CHEN: &str = "chen@keyturn.local";

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
        seed_inventory_demo(data_dir, vault, directory, now).await?;
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
    seed_inventory_demo(data_dir, vault, directory, now).await?;
    Ok(demo)
}

/// What discovery finds beyond the rotation demo, so the inventory has something of every
/// kind: a second vault with secrets expired, expiring, long-lived and managed; more
/// applications and service principals with password and certificate credentials,
/// expired, expiring and long-lived, managed (named as keyturn names its credentials) and
/// not; owners, one without a mail address. Nothing here is due for rotation, so the
/// rotation demo is unchanged. Seeded once per data directory, also into one bootstrapped
/// before it existed.
async fn seed_inventory_demo(
    data_dir: &Path,
    vault: &LocalVault,
    directory: &LocalDirectory,
    now: DateTime<Utc>,
) -> Result<(), BootstrapError> {
    let marker = data_dir.join(INVENTORY_MARKER);
    if marker.is_file() {
        return Ok(());
    }
    let store = |e: crate::ports::PortError| BootstrapError::Store(e.to_string());
    let url = VaultUrl::parse(DEMO_SECOND_VAULT)
        .expect("invariant: the second demo vault's URL is a vault URL");
    let name =
        |n: &str| ObjectName::parse(n).expect("invariant: demo names are valid secret names");
    let unmanaged = || BTreeMap::from([("keyturn-owner".to_string(), OWNER_CHEN.to_string())]);
    let managed = BTreeMap::from([
        ("keyturn-kind".to_string(), "generated".to_string()),
        ("keyturn-length".to_string(), "40".to_string()),
    ]);
    let secrets = [
        (
            "team-db-password",
            unmanaged(),
            Some(now - Duration::days(5)),
        ),
        ("team-api-key", unmanaged(), Some(now + Duration::days(20))),
        ("team-legacy-token", unmanaged(), None),
        (
            "team-signing-seed",
            managed,
            Some(now + Duration::days(365)),
        ),
    ];
    for (secret, tags, expires) in secrets {
        vault
            .set_secret_at(
                &url,
                &name(secret),
                &SecretValue::new(random_text()),
                version(tags, expires),
                now,
            )
            .await
            .map_err(store)?;
    }

    // Credentials issued in the past: the directory stamps them with its clock.
    let past = directory
        .clone()
        .with_clock(crate::domain::clock::Clock::fixed(
            now - Duration::days(400),
        ));
    let owner = |display: &str, upn: &str, mail: Option<&str>| Owner {
        object_id: None,
        display_name: Some(display.to_owned()),
        user_principal_name: Some(upn.to_owned()),
        mail: mail.map(str::to_owned),
    };
    let certificate = |display: &str, usage: &str, start, end| ListedCredential {
        key_id: KeyId::new_random(),
        display_name: Some(display.to_owned()),
        kind: ListedCredentialKind::Certificate {
            usage: usage.to_owned(),
            thumbprint: Some(random_text()[..40].to_ascii_uppercase()),
        },
        start: Some(start),
        end: Some(end),
    };

    // Payroll: a managed long-lived secret, an expired one nobody removed, a long-lived
    // certificate credential; two owners, one without mail.
    let payroll = directory
        .create_application("keyturn demo: payroll")
        .await
        .map_err(store)?;
    directory
        .add_password(
            &payroll.object_id,
            "keyturn rotation (demo)",
            now + Duration::days(300),
        )
        .await
        .map_err(store)?;
    past.add_password(
        &payroll.object_id,
        "legacy secret (demo)",
        now - Duration::days(35),
    )
    .await
    .map_err(store)?;
    directory
        .add_listed_credential(
            &payroll.object_id,
            &certificate(
                "payroll certificate (demo)",
                "Verify",
                now - Duration::days(30),
                now + Duration::days(700),
            ),
        )
        .await
        .map_err(store)?;
    for person in [
        owner("Ana Silva", "ana@keyturn.local", Some("ana@keyturn.local")),
        owner("Bo Jensen", "bo@keyturn.local", None),
    ] {
        directory
            .add_owner(&payroll.object_id, &person)
            .await
            .map_err(store)?;
    }
    // Its service principal holds a managed secret of its own.
    let payroll_principal = directory
        .create_service_principal(Some(payroll.app_id), "keyturn demo: payroll")
        .await
        .map_err(store)?;
    directory
        .add_listed_credential(
            &payroll_principal.object_id,
            &ListedCredential {
                key_id: KeyId::new_random(),
                display_name: Some("keyturn rotation (demo principal)".to_owned()),
                kind: ListedCredentialKind::Password,
                start: Some(now - Duration::days(10)),
                end: Some(now + Duration::days(90)),
            },
        )
        .await
        .map_err(store)?;
    directory
        .add_owner(
            &payroll_principal.object_id,
            &owner("Ana Silva", "ana@keyturn.local", Some("ana@keyturn.local")),
        )
        .await
        .map_err(store)?;

    // Reporting: an unmanaged secret expiring in twelve days.
    let reporting = directory
        .create_application("keyturn demo: reporting")
        .await
        .map_err(store)?;
    directory
        .add_password(
            &reporting.object_id,
            "reporting secret (demo)",
            now + Duration::days(12),
        )
        .await
        .map_err(store)?;
    directory
        .add_owner(
            &reporting.object_id,
            &owner("Chen Wu", OWNER_CHEN, Some(OWNER_CHEN)),
        )
        .await
        .map_err(store)?;

    // A SAML sign-in service principal with no registration here: its signing
    // certificate expires in 25 days, an old password expired last week.
    let saml = directory
        .create_service_principal(None, "keyturn demo: SAML sign-in")
        .await
        .map_err(store)?;
    directory
        .add_listed_credential(
            &saml.object_id,
            &certificate(
                "SAML signing (demo)",
                "Sign",
                now - Duration::days(340),
                now + Duration::days(25),
            ),
        )
        .await
        .map_err(store)?;
    directory
        .add_listed_credential(
            &saml.object_id,
            &ListedCredential {
                key_id: KeyId::new_random(),
                display_name: Some("old SAML password (demo)".to_owned()),
                kind: ListedCredentialKind::Password,
                start: Some(now - Duration::days(372)),
                end: Some(now - Duration::days(7)),
            },
        )
        .await
        .map_err(store)?;
    directory
        .add_owner(
            &saml.object_id,
            &owner(
                "Dana Okafor",
                "dana@keyturn.local",
                Some("dana@keyturn.local"),
            ),
        )
        .await
        .map_err(store)?;

    write(
        &marker,
        &serde_json::to_vec_pretty(&json!({ "seededAt": now, "vault": DEMO_SECOND_VAULT }))
            .unwrap_or_default(),
    )
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
         \nSee what the vault holds, what is due and what rotation did:\n  keyturn vault list --data-dir {data}\n  keyturn plan --data-dir {data}\n  keyturn inventory --data-dir {data}\n  keyturn audit list --data-dir {data}\n  keyturn audit verify --data-dir {data}\n\
         \nFiles: dev CA {ca}, access policy {policy}\n",
        data = data_dir.display(),
        granted = curl(&p.granted_cert(), &p.granted_key()),
        other = curl(&p.other_cert(), &p.other_key()),
        ca = p.ca().display(),
        policy = demo.access_policy.display(),
    )
}
