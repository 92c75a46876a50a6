//! The `table` secret source: secrets kept as entities of an Azure Table storage table,
//! read with keyturn's identity (Storage Table Data Reader on that table) or, for Azurite
//! and development, a connection string.
//!
//! One entity per secret: PartitionKey [`SECRETS_PARTITION`], RowKey the secret name in
//! lowercase (Key Vault names compare without case, so one secret has one row), and the
//! properties `Value` (required), `Version`, `ContentType`, `ExpiresOn` and `NotBefore`
//! (RFC 3339 text) and `Enabled` (boolean, true when absent).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::adapters::azure::client::table::{EntityKey, TableClient, TableName};
use crate::domain::names::ObjectName;
use crate::domain::secret::SecretValue;
use crate::ports::source::{SecretSource, SourcedSecret, servable};
use crate::ports::{FailureKind, PortError};

/// The partition every secret row lives in. One partition keeps point reads to a single
/// key pair an operator can type; the endpoint never scans, so partition size is no cost.
pub const SECRETS_PARTITION: &str = "secret";

/// Reads secrets from one table.
#[derive(Debug, Clone)]
pub struct TableSecretSource {
    client: TableClient,
    table: TableName,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretRow {
    value: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    expires_on: Option<String>,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

impl TableSecretSource {
    pub fn new(client: TableClient, table: TableName) -> Self {
        Self { client, table }
    }

    /// The RowKey of `name`.
    pub fn row_key(name: &ObjectName) -> String {
        name.as_str().to_ascii_lowercase()
    }
}

#[async_trait]
impl SecretSource for TableSecretSource {
    async fn fetch(
        &self,
        name: &ObjectName,
        now: DateTime<Utc>,
    ) -> Result<Option<SourcedSecret>, PortError> {
        let invalid = |what: &str| PortError::invalid(format!("secret row for {name}: {what}"));
        let partition =
            EntityKey::parse(SECRETS_PARTITION).map_err(|_| invalid("partition key"))?;
        let row = EntityKey::parse(&Self::row_key(name)).map_err(|_| invalid("row key"))?;
        let entity = match self
            .client
            .get::<SecretRow>(&self.table, &partition, &row)
            .await
        {
            Ok(entity) => entity,
            Err(error) if error.kind == FailureKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let row = entity.properties;
        let time = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    DateTime::parse_from_rfc3339(t.trim())
                        .map(|at| at.with_timezone(&Utc))
                        .map_err(|_| invalid(&format!("{field} is not RFC 3339")))
                })
                .transpose()
        };
        let expires = time("ExpiresOn", &row.expires_on)?;
        let not_before = time("NotBefore", &row.not_before)?;
        if !servable(row.enabled.unwrap_or(true), not_before, expires, now) {
            return Ok(None);
        }
        Ok(Some(SourcedSecret {
            value: SecretValue::new(row.value),
            version: row.version,
            content_type: row.content_type,
            expires,
        }))
    }
}
