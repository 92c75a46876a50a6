//! The `appsettings` secret source: secrets in app settings (environment variables)
//! named with a prefix, for small setups and for migrating from the PowerShell proxy,
//! which kept its secrets the same way.
//!
//! The secret `db-password` is the setting `<prefix>DB_PASSWORD`: the name in upper case
//! with `-` written as `_` (environment variable names cannot hold `-` on every
//! platform). Key Vault names hold no `_` and compare without case, so each setting
//! names exactly one secret. Values are read once at start-up, as App Service restarts
//! the app whenever a setting changes.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::names::ObjectName;
use crate::domain::secret::SecretValue;
use crate::ports::PortError;
use crate::ports::source::{SecretSource, SourcedSecret};

/// The prefix used when none is configured.
#[cfg(test)]
pub(crate) const DEFAULT_PREFIX: &str = "KEYTURN_SECRET_";

/// Secrets from prefixed settings.
pub struct AppSettingsSource {
    prefix: String,
    values: HashMap<String, SecretValue>,
}

impl std::fmt::Debug for AppSettingsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSettingsSource")
            .field("prefix", &self.prefix)
            .field("secrets", &self.values.len())
            .finish()
    }
}

impl AppSettingsSource {
    /// Keeps the settings whose names start with `prefix` (compared without case, as
    /// Windows does for environment variables).
    pub fn from_settings<'a>(
        prefix: &str,
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let upper_prefix = prefix.to_ascii_uppercase();
        let values = settings
            .into_iter()
            .filter_map(|(name, value)| {
                let upper = name.to_ascii_uppercase();
                let rest = upper.strip_prefix(&upper_prefix)?;
                (!rest.is_empty()).then(|| (rest.to_owned(), SecretValue::new(value)))
            })
            .collect();
        Self {
            prefix: prefix.to_owned(),
            values,
        }
    }

    /// The setting that holds `name`.
    pub fn setting_name(prefix: &str, name: &ObjectName) -> String {
        format!("{prefix}{}", key(name))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

fn key(name: &ObjectName) -> String {
    name.as_str().to_ascii_uppercase().replace('-', "_")
}

#[async_trait]
impl SecretSource for AppSettingsSource {
    async fn fetch(
        &self,
        name: &ObjectName,
        _now: DateTime<Utc>,
    ) -> Result<Option<SourcedSecret>, PortError> {
        Ok(self.values.get(&key(name)).map(|value| SourcedSecret {
            value: value.clone(),
            version: None,
            content_type: None,
            expires: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ObjectName {
        ObjectName::parse(text).expect("valid name")
    }

    #[tokio::test]
    async fn a_prefixed_setting_serves_the_secret_of_the_same_name() {
        let source = AppSettingsSource::from_settings(
            DEFAULT_PREFIX,
            [
                ("KEYTURN_SECRET_DB_PASSWORD", "s3cret"),
                ("KEYTURN_LOG_LEVEL", "info"),
                ("keyturn_secret_wifi_psk", "psk"),
            ],
        );
        assert_eq!(source.len(), 2);
        let found = source
            .fetch(&name("db-password"), Utc::now())
            .await
            .expect("reads")
            .expect("present");
        assert_eq!(found.value.expose(), "s3cret");
        assert!(
            source
                .fetch(&name("WIFI-psk"), Utc::now())
                .await
                .expect("reads")
                .is_some()
        );
        assert!(
            source
                .fetch(&name("log-level"), Utc::now())
                .await
                .expect("reads")
                .is_none()
        );
        assert_eq!(
            AppSettingsSource::setting_name(DEFAULT_PREFIX, &name("db-password")),
            "KEYTURN_SECRET_DB_PASSWORD"
        );
    }

    #[test]
    fn debug_shows_no_value() {
        let source = AppSettingsSource::from_settings("P_", [("P_A", "hunter2")]);
        assert!(!format!("{source:?}").contains("hunter2"));
    }
}
