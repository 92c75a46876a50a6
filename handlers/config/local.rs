//! The local section: the data directory of the embedded SQLite store and what local
//! mode's embedded vault and directory need (the vault key, the propagation delay).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use zeroize::Zeroizing;

use super::{Collector, DEFAULT_DATA_DIR, parse_bool, parse_bounded, redacted};
use crate::domain::names::VaultUrl;
use crate::domain::secret::SecretValue;

/// The local vault's URL. It has the shape of a public-cloud vault URL so that events,
/// ids and vault names look as they do in Azure; local mode never contacts it.
pub(crate) const LOCAL_VAULT_URL: &str = "https://keyturn-local.vault.azure.net/";

/// The local vault's URL as a parsed [`VaultUrl`].
pub(crate) fn local_vault_url() -> VaultUrl {
    VaultUrl::parse(LOCAL_VAULT_URL).expect("invariant: the local vault URL is a valid vault URL")
}

/// The local vault key is 32 bytes: an AES-256-GCM key.
pub(super) const LOCAL_VAULT_KEY_BYTES: usize = 32;
/// The longest propagation delay the local directory plays: ten minutes, the upper end
/// of what field reports give for Entra (2 to over 10 minutes), enough to watch a staged
/// rotation prove its credential over several deliveries.
const MAX_LOCAL_PROPAGATION_SECONDS: u64 = 600;

#[derive(Debug, Clone, Serialize)]
pub struct LocalSettings {
    /// The directory of the embedded store (created owner-only).
    pub data_dir: PathBuf,
    /// How long the local directory refuses a new secret (local backend only).
    #[serde(rename = "local_propagation_seconds")]
    pub propagation_seconds: u64,
    /// Whether a propagated secret's token requests flap (accepted, refused, accepted).
    #[serde(rename = "local_flapping")]
    pub flapping: bool,
    /// `KEYTURN_LOCAL_VAULT_KEY`, checked to be base64 of 32 bytes; `None`: the key file
    /// beside the store.
    #[serde(rename = "local_vault_key", serialize_with = "redacted_option")]
    pub vault_key: Option<SecretValue>,
}

fn redacted_option<S: serde::Serializer>(
    key: &Option<SecretValue>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match key {
        Some(key) => redacted(key, s),
        None => s.serialize_none(),
    }
}

pub(super) fn parse(c: &mut Collector<'_>) -> LocalSettings {
    let data_dir = parse_data_dir(c);
    let propagation_seconds = c
        .parse("KEYTURN_LOCAL_PROPAGATION_SECONDS", |v| {
            parse_bounded(v, MAX_LOCAL_PROPAGATION_SECONDS)
        })
        .unwrap_or(0);
    let flapping = c
        .parse("KEYTURN_LOCAL_FLAPPING", parse_bool)
        .unwrap_or(false);
    let vault_key = parse_vault_key(c);
    LocalSettings {
        data_dir,
        propagation_seconds,
        flapping,
        vault_key,
    }
}

/// `KEYTURN_DATA_DIR`: a directory, or a path where one can be created (no file in the
/// way). Checked without creating anything, so `keyturn config check` changes nothing.
pub(super) fn parse_data_dir(c: &mut Collector<'_>) -> PathBuf {
    let dir = PathBuf::from(
        c.value_or_default("KEYTURN_DATA_DIR")
            .unwrap_or(DEFAULT_DATA_DIR),
    );
    if let Some(blocking) = dir.ancestors().find(|p| is_not_a_directory(p)) {
        let problem = if blocking == dir {
            "exists and is not a directory".to_string()
        } else {
            format!("{} exists and is not a directory", blocking.display())
        };
        c.fail("KEYTURN_DATA_DIR", problem);
    }
    dir
}

fn is_not_a_directory(path: &Path) -> bool {
    !path.as_os_str().is_empty() && path.exists() && !path.is_dir()
}

/// `KEYTURN_LOCAL_VAULT_KEY`: base64 of exactly 32 bytes. The problem never quotes it.
pub(super) fn parse_vault_key(c: &mut Collector<'_>) -> Option<SecretValue> {
    let text = c.env.value("KEYTURN_LOCAL_VAULT_KEY")?;
    let problem = match STANDARD.decode(text) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            if bytes.len() == LOCAL_VAULT_KEY_BYTES {
                return Some(SecretValue::new(text.to_string()));
            }
            format!(
                "decodes to {} bytes; the key is base64 of {LOCAL_VAULT_KEY_BYTES} bytes",
                bytes.len()
            )
        }
        Err(_) => format!("not base64 (the key is base64 of {LOCAL_VAULT_KEY_BYTES} bytes)"),
    };
    c.fail("KEYTURN_LOCAL_VAULT_KEY", problem);
    None
}
