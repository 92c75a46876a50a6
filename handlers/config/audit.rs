//! The audit section: where the hash-chained audit log lives (Azure Table storage or the
//! embedded SQLite store), how keyturn reaches the Table service, and, in Azure, where
//! the log's signed checkpoints go (a Blob container) and the Key Vault key that signs
//! them.

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

/// Where a table store's writers anchor their chains: the checkpoint container and the
/// signing key. Both or neither are set.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckpointSettings {
    /// The Blob service (`https://<account>.blob.core.windows.net`); plain http only
    /// for Azurite, reached with `KEYTURN_TABLE_CONNECTION_STRING`'s account key.
    pub endpoint: url::Url,
    /// The container under a time-based retention policy; checked by the container
    /// naming rules (3-63 lowercase letters, digits and single hyphens).
    pub container: String,
    /// The Key Vault EC P-256 key's URL, with or without its version.
    pub signing_key: url::Url,
    /// The compliance exceptions register: a blob of the same Blob service
    /// (`KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB`). `None`: no register is configured, so
    /// nothing is excepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exceptions: Option<BlobPath>,
}

/// A blob in the checkpoints' Blob service: `CONTAINER/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobPath {
    /// Checked by the container naming rules.
    pub container: String,
    /// The blob's name: 1-1024 characters, no empty, `.` or `..` segment.
    pub name: String,
}

impl fmt::Display for BlobPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.container, self.name)
    }
}

/// The setting naming the exceptions register's blob.
pub const EXCEPTIONS_BLOB_SETTING: &str = "KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB";

fn parse_blob_path(v: &str) -> Result<BlobPath, String> {
    const FORM: &str = "CONTAINER/NAME, such as compliance/exceptions.json";
    let (container, name) = v
        .split_once('/')
        .ok_or_else(|| format!("expected {FORM}"))?;
    let container = parse_container_name(container)
        .map_err(|problem| format!("the container: {problem}; expected {FORM}"))?;
    let name_ok = (1..=1024).contains(&name.chars().count())
        && !name.chars().any(char::is_control)
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if !name_ok {
        return Err(format!(
            "the blob name is 1-1024 characters without empty, `.` or `..` segments; expected {FORM}"
        ));
    }
    Ok(BlobPath {
        container: container.to_owned(),
        name: name.to_owned(),
    })
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "store")]
pub enum AuditSettings {
    Table {
        table: TableName,
        access: TableAccess,
        /// `None`: the table's chains are not anchored (no checkpoint settings).
        checkpoints: Option<Box<CheckpointSettings>>,
    },
    Sqlite {
        path: PathBuf,
    },
}

/// The embedded store's file inside the data directory.
pub(crate) const STORE_FILE: &str = "keyturn.db";

/// The checkpoint container the deployment creates (`auditCheckpointContainerName`).
pub const DEFAULT_CHECKPOINT_CONTAINER: &str = "audit-checkpoints";

pub(super) fn parse(c: &mut Collector<'_>, data_dir: &Path) -> Option<AuditSettings> {
    // The inventory table lives beside the audit table, reached the same way; a bad name
    // is reported here with every other setting rather than at the first write.
    c.parse("KEYTURN_INVENTORY_TABLE", parse_table_name);
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
            let checkpoints = parse_checkpoints(c, connection_string.is_some());
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
                    checkpoints,
                }),
                (None, Some(connection_string)) => Some(AuditSettings::Table {
                    table,
                    access: TableAccess::ConnectionString { connection_string },
                    checkpoints,
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

/// The checkpoint settings: both the endpoint and the key, or neither. `azurite`: the
/// table is reached by connection string, so a plain-http Blob endpoint is accepted.
fn parse_checkpoints(c: &mut Collector<'_>, azurite: bool) -> Option<Box<CheckpointSettings>> {
    let endpoint = c.parse("KEYTURN_AUDIT_CHECKPOINT_ENDPOINT", |v| {
        let u = url::Url::parse(v).map_err(|e| format!("not a URL ({e})"))?;
        match u.scheme() {
            "https" => {}
            "http" if azurite => {}
            _ => {
                return Err("must be an https URL (https://<account>.blob.core.windows.net); plain http only for Azurite, with KEYTURN_TABLE_CONNECTION_STRING".into());
            }
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err("must carry no query or fragment (no SAS token: keyturn's identity signs in)".into());
        }
        Ok(u)
    });
    let container = c
        .parse("KEYTURN_AUDIT_CHECKPOINT_CONTAINER", |v| {
            parse_container_name(v).map(str::to_owned)
        })
        .unwrap_or_else(|| DEFAULT_CHECKPOINT_CONTAINER.to_owned());
    let signing_key = c.parse("KEYTURN_AUDIT_SIGNING_KEY", parse_key_url);
    let exceptions = c.parse(EXCEPTIONS_BLOB_SETTING, parse_blob_path);
    match (endpoint, signing_key) {
        (Some(endpoint), Some(signing_key)) => Some(Box::new(CheckpointSettings {
            endpoint,
            container,
            signing_key,
            exceptions,
        })),
        (None, None) => {
            if exceptions.is_some() {
                c.fail(
                    EXCEPTIONS_BLOB_SETTING,
                    "set without KEYTURN_AUDIT_CHECKPOINT_ENDPOINT and KEYTURN_AUDIT_SIGNING_KEY: the register is read from the checkpoints' Blob service, beside the evidence packages it is applied to",
                );
            }
            None
        }
        (Some(_), None) => {
            if c.env.value("KEYTURN_AUDIT_SIGNING_KEY").is_none() {
                c.fail(
                    "KEYTURN_AUDIT_SIGNING_KEY",
                    "missing; KEYTURN_AUDIT_CHECKPOINT_ENDPOINT is set, and checkpoints are signed with a Key Vault key (https://<vault>.vault.azure.net/keys/<name>)",
                );
            }
            None
        }
        (None, Some(_)) => {
            if c.env.value("KEYTURN_AUDIT_CHECKPOINT_ENDPOINT").is_none() {
                c.fail(
                    "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                    "missing; KEYTURN_AUDIT_SIGNING_KEY is set, and signed checkpoints go to a Blob container (https://<account>.blob.core.windows.net)",
                );
            }
            None
        }
    }
}

/// Container names follow the Blob service's rules ("Naming and referencing
/// containers").
fn parse_container_name(v: &str) -> Result<&str, String> {
    let valid = (3..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--");
    if valid {
        Ok(v)
    } else {
        Err("3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit".into())
    }
}

/// A Key Vault key URL: https, `/keys/<name>` with an optional 32-hex-digit version.
fn parse_key_url(v: &str) -> Result<url::Url, String> {
    const FORM: &str = "https://<vault>.vault.azure.net/keys/<name>[/<version>]";
    let u = url::Url::parse(v).map_err(|e| format!("not a URL ({e}); expected {FORM}"))?;
    let segments: Vec<&str> = u.path().trim_matches('/').split('/').collect();
    let name_ok = |name: &str| {
        (1..=127).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let version_ok =
        |version: &str| version.len() == 32 && version.bytes().all(|b| b.is_ascii_hexdigit());
    let path_ok = match segments.as_slice() {
        ["keys", name] => name_ok(name),
        ["keys", name, version] => name_ok(name) && version_ok(version),
        _ => false,
    };
    if u.scheme() != "https" || u.query().is_some() || u.fragment().is_some() || !path_ok {
        return Err(format!("not a Key Vault key URL; expected {FORM}"));
    }
    Ok(u)
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
