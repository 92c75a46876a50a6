//! `keyturn vault list` and `keyturn vault set`: the local vault from the command line.
//! Listing prints metadata only (versions, tags, expiry); a value is read from stdin when
//! set and never printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::adapters::local::vault::LocalVault;
use crate::config::{DEFAULT_ROTATION_QUEUE, LOCAL_VAULT_URL, STORE_FILE, local_vault_url};
use crate::domain::clock::Clock;
use crate::domain::names::ObjectName;
use crate::domain::resources::QueueName;
use crate::domain::secret::SecretValue;
use crate::ports::vault::{CertificateStore, NewSecretVersion, SecretStore};
use crate::startup::{LocalBackends, LocalOpenError, LocalOptions};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultCliError {
    #[error(
        "{0} holds no keyturn data: run `keyturn dev --data-dir {0}` first, or pass the right --data-dir"
    )]
    NoDataDir(PathBuf),
    #[error("{0}")]
    Open(String),
    #[error("the database is locked by another keyturn process; try again when it is idle ({0})")]
    Locked(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Vault(String),
}

/// The local vault of an existing data directory, opened where start-up opens it.
pub async fn open_vault(
    data_dir: &Path,
    key_setting: Option<&SecretValue>,
) -> Result<LocalVault, VaultCliError> {
    open(data_dir, key_setting).await.map(|local| local.vault)
}

/// The local backends of an existing data directory; nothing is created when `data_dir`
/// holds no store.
pub(crate) async fn open(
    data_dir: &Path,
    key_setting: Option<&SecretValue>,
) -> Result<LocalBackends, VaultCliError> {
    let path = data_dir.join(STORE_FILE);
    if !path.is_file() {
        return Err(VaultCliError::NoDataDir(data_dir.to_path_buf()));
    }
    let queue = QueueName::parse(DEFAULT_ROTATION_QUEUE)
        .expect("invariant: the default queue name is valid");
    let options = LocalOptions {
        data_dir,
        vault_key: key_setting,
        queue: &queue,
        propagation: chrono::TimeDelta::zero(),
        flapping: false,
    };
    match LocalBackends::open(options, &Clock::system()).await {
        Ok(local) => Ok(local),
        Err(LocalOpenError::Store(e)) => Err(classify_open(e)),
        Err(e) => Err(VaultCliError::Open(e.to_string())),
    }
}

fn classify_open(e: crate::adapters::local::store::StoreError) -> VaultCliError {
    let text = e.to_string();
    if text.contains("locked") || text.contains("busy") {
        VaultCliError::Locked(text)
    } else {
        VaultCliError::Open(text)
    }
}

/// Every secret and certificate with its versions, tags and expiry; never a value.
pub async fn list(vault: &LocalVault) -> Result<Value, VaultCliError> {
    let url = local_vault_url();
    let failed = |e: crate::ports::PortError| VaultCliError::Vault(e.to_string());
    let mut objects = Vec::new();
    let mut secrets = vault.list_secrets(&url).await.map_err(failed)?;
    secrets.sort_by(|a, b| a.id.name().as_str().cmp(b.id.name().as_str()));
    for current in secrets {
        let name = current.id.name().clone();
        let mut versions = vault.list_versions(&url, &name).await.map_err(failed)?;
        versions.sort_by_key(|v| v.created);
        objects.push(json!({
            "name": name.to_string(),
            "kind": if current.managed { "certificate-secret" } else { "secret" },
            "currentVersion": current.id.version().map(ToString::to_string),
            "expires": current.expires,
            "contentType": current.content_type,
            "tags": current.tags,
            "versions": versions.iter().map(|v| json!({
                "version": v.id.version().map(ToString::to_string),
                "enabled": v.enabled,
                "created": v.created,
                "notBefore": v.not_before,
                "expires": v.expires,
                "tags": v.tags,
            })).collect::<Vec<_>>(),
        }));
    }
    let mut certificates = vault.list_certificates(&url).await.map_err(failed)?;
    certificates.sort_by(|a, b| a.id.name().as_str().cmp(b.id.name().as_str()));
    let certificates: Vec<Value> = certificates
        .iter()
        .map(|c| {
            json!({
                "name": c.id.name().to_string(),
                "kind": "certificate",
                "currentVersion": c.id.version().map(ToString::to_string),
                "expires": c.expires,
                "tags": c.tags,
                "x5t": c.x5t_hex,
            })
        })
        .collect();
    Ok(json!({ "vault": LOCAL_VAULT_URL, "secrets": objects, "certificates": certificates }))
}

/// `--tags` values: `key=value` pairs, repeated or comma-separated.
pub fn parse_tags(items: &[String]) -> Result<BTreeMap<String, String>, VaultCliError> {
    let mut tags = BTreeMap::new();
    for item in items
        .iter()
        .flat_map(|i| i.split(','))
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| VaultCliError::Usage(format!("tag `{item}` is not key=value")))?;
        if key.trim().is_empty() {
            return Err(VaultCliError::Usage(format!(
                "tag `{item}` has an empty key"
            )));
        }
        tags.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(tags)
}

/// `--expires`: an RFC 3339 time, or `+<n>d`, `+<n>h`, `+<n>m` from `now`.
pub fn parse_expires(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, VaultCliError> {
    let bad = || {
        VaultCliError::Usage(format!(
            "--expires `{text}` is neither RFC 3339 nor +<n>d/+<n>h/+<n>m"
        ))
    };
    if let Some(relative) = text.strip_prefix('+') {
        let (number, unit) = relative
            .char_indices()
            .next_back()
            .map(|(at, _)| relative.split_at(at))
            .ok_or_else(bad)?;
        let n: i64 = number.parse().map_err(|_| bad())?;
        let delta = match unit {
            "d" => Duration::try_days(n),
            "h" => Duration::try_hours(n),
            "m" => Duration::try_minutes(n),
            _ => None,
        }
        .ok_or_else(bad)?;
        return now.checked_add_signed(delta).ok_or_else(bad);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad())
}

/// Writes a new version of `name` with `value`; returns its metadata as JSON.
pub async fn set(
    vault: &LocalVault,
    name: &str,
    value: SecretValue,
    tags: BTreeMap<String, String>,
    expires: Option<DateTime<Utc>>,
    content_type: Option<String>,
    now: DateTime<Utc>,
) -> Result<Value, VaultCliError> {
    let name = ObjectName::parse(name).map_err(|e| VaultCliError::Usage(e.to_string()))?;
    if value.is_empty() {
        return Err(VaultCliError::Usage(
            "the value read from stdin is empty".into(),
        ));
    }
    let version = NewSecretVersion {
        content_type,
        not_before: None,
        expires,
        tags,
    };
    let properties = vault
        .set_secret_at(&local_vault_url(), &name, &value, version, now)
        .await
        .map_err(|e| VaultCliError::Vault(e.to_string()))?;
    Ok(json!({
        "name": name.to_string(),
        "version": properties.id.version().map(ToString::to_string),
        "expires": properties.expires,
        "tags": properties.tags,
    }))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn tags_are_key_value_pairs_repeated_or_comma_separated() {
        let tags = parse_tags(&[
            "keyturn-kind=generated,keyturn-length=32".into(),
            "team = core".into(),
        ])
        .expect("valid");
        assert_eq!(tags.len(), 3);
        assert_eq!(tags["team"], "core");
        assert!(parse_tags(&["novalue".into()]).is_err());
        assert!(parse_tags(&["=x".into()]).is_err());
    }

    #[test]
    fn expiry_is_absolute_or_relative_to_now() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("time");
        assert_eq!(
            parse_expires("+2d", now).expect("ok"),
            now + Duration::days(2)
        );
        assert_eq!(
            parse_expires("+3h", now).expect("ok"),
            now + Duration::hours(3)
        );
        assert_eq!(
            parse_expires("2027-01-01T00:00:00Z", now).expect("ok"),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
                .single()
                .expect("time")
        );
        for bad in ["", "+", "+d", "+5y", "+5é", "tomorrow", "+99999999999999d"] {
            assert!(parse_expires(bad, now).is_err(), "{bad}");
        }
    }
}
