//! The audit section: where the hash-chained audit log lives (Azure Table storage or the
//! embedded SQLite store) and how keyturn reaches the Table service.

use std::fmt;
use std::path::Path;
use std::path::PathBuf;

use serde::Serialize;

use super::{Collector, DEFAULT_AUDIT_TABLE, redacted};
use crate::domain::resources::TableName;
use crate::domain::secret::SecretValue;

/// Where the Table service is and how keyturn authenticates to it.
#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "auth")]
pub enum TableAccess {
    Identity {
        endpoint: url::Url,
    },
    ConnectionString {
        #[serde(serialize_with = "redacted")]
        connection_string: SecretValue,
    },
}

impl fmt::Debug for TableAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity { endpoint } => f
                .debug_struct("Identity")
                .field("endpoint", &endpoint.as_str())
                .finish(),
            Self::ConnectionString { .. } => f
                .debug_struct("ConnectionString")
                .field("connection_string", &"[redacted]")
                .finish(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "store")]
pub enum AuditSettings {
    Table {
        table: TableName,
        access: TableAccess,
    },
    Sqlite {
        path: PathBuf,
    },
}

/// The embedded store's file inside the data directory.
pub(crate) const STORE_FILE: &str = "keyturn.db";

pub(super) fn parse(c: &mut Collector<'_>, data_dir: &Path) -> Option<AuditSettings> {
    match c.value_or_default("KEYTURN_AUDIT_STORE") {
        Some("sqlite") => Some(AuditSettings::Sqlite {
            path: data_dir.join(STORE_FILE),
        }),
        Some("table") | None => {
            let table = c
                .parse("KEYTURN_AUDIT_TABLE", parse_table_name)
                .unwrap_or_else(|| {
                    TableName::parse(DEFAULT_AUDIT_TABLE)
                        .expect("invariant: the default audit table name is valid")
                });
            let endpoint = c.parse("KEYTURN_TABLE_ENDPOINT", |v| {
                let u = url::Url::parse(v).map_err(|e| format!("not a URL ({e})"))?;
                if u.scheme() != "https" {
                    return Err("must be an https URL; plain http is only for Azurite, through KEYTURN_TABLE_CONNECTION_STRING".into());
                }
                Ok(u)
            });
            let connection_string = c
                .env
                .value("KEYTURN_TABLE_CONNECTION_STRING")
                .map(SecretValue::new);
            match (endpoint, connection_string) {
                (Some(_), Some(_)) => {
                    c.fail(
                        "KEYTURN_TABLE_CONNECTION_STRING",
                        "set together with KEYTURN_TABLE_ENDPOINT; set only one",
                    );
                    None
                }
                (Some(endpoint), None) => Some(AuditSettings::Table {
                    table,
                    access: TableAccess::Identity { endpoint },
                }),
                (None, Some(connection_string)) => Some(AuditSettings::Table {
                    table,
                    access: TableAccess::ConnectionString { connection_string },
                }),
                (None, None) => {
                    if c.env.value("KEYTURN_TABLE_ENDPOINT").is_none() {
                        c.fail(
                            "KEYTURN_TABLE_ENDPOINT",
                            "missing; the table audit store needs KEYTURN_TABLE_ENDPOINT (or KEYTURN_TABLE_CONNECTION_STRING for Azurite), or set KEYTURN_AUDIT_STORE=sqlite",
                        );
                    }
                    None
                }
            }
        }
        Some(other) => {
            c.fail(
                "KEYTURN_AUDIT_STORE",
                format!("unknown store `{other}`; expected table or sqlite"),
            );
            None
        }
    }
}

/// How a table other than the audit table (the secrets table) is reached: the same
/// settings, which must then name exactly one way in.
pub(super) fn table_access(c: &Collector<'_>) -> Option<TableAccess> {
    let endpoint = c
        .env
        .value("KEYTURN_TABLE_ENDPOINT")
        .and_then(|v| url::Url::parse(v).ok().filter(|u| u.scheme() == "https"));
    let connection_string = c
        .env
        .value("KEYTURN_TABLE_CONNECTION_STRING")
        .map(SecretValue::new);
    match (endpoint, connection_string) {
        (Some(endpoint), None) => Some(TableAccess::Identity { endpoint }),
        (None, Some(connection_string)) => {
            Some(TableAccess::ConnectionString { connection_string })
        }
        _ => None,
    }
}

/// Table names follow the Table service's rules, `tables` (reserved) included.
pub(super) fn parse_table_name(v: &str) -> Result<TableName, String> {
    TableName::parse(v)
        .map_err(|e| format!("{e} (3-63 letters and digits, starting with a letter)"))
}
