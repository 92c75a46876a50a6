//! Settings: every app setting keyturn or its Functions host reads, typed and validated
//! once at start-up.
//!
//! [`SETTINGS`] is the single list of settings. `local.settings.sample.json`, the README
//! table and the Bicep app settings are all checked against it by tests, so a setting
//! cannot be added in one place and forgotten in another.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::domain::ids::TenantId;
use crate::domain::names::VaultUrl;
use crate::domain::ncrontab::Schedule;
use crate::domain::secret::SecretValue;

/// Who reads a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadBy {
    /// keyturn's own code.
    Keyturn,
    /// The Azure Functions host (binding expressions, identity-based connections).
    Host,
    /// Both: the host resolves it in a binding and keyturn validates or uses it too.
    Both,
    /// Set by the Functions host for the handler process; never configured by hand.
    HostProvided,
}

/// One setting: its name is an interface, its example is a working sample value.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SettingSpec {
    pub name: &'static str,
    pub read_by: ReadBy,
    /// Where it must be present (empty: never required).
    pub required: Required,
    pub default: Option<&'static str>,
    /// A working value for local development (what `local.settings.sample.json` carries).
    pub example: &'static str,
    /// Redacted by `keyturn config check` and never logged.
    pub secret: bool,
    pub purpose: &'static str,
}

/// When a setting must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Required {
    Never,
    Always,
    /// Required by the rotation functions (KeyVaultEvents, ExpirySweep, RotationWorker)
    /// when at least one of them is enabled in this app.
    ByRotation,
    /// Required by the rotation functions when they run against Azure (not the embedded
    /// local backends of `keyturn dev`).
    ByAzureRotation,
}

/// The functions whose presence makes rotation settings required.
pub const ROTATION_FUNCTIONS: [&str; 3] = ["KeyVaultEvents", "ExpirySweep", "RotationWorker"];

/// Every function keyturn serves, as named in `function-definitions/`.
pub const FUNCTIONS: [&str; 4] = [
    "KeyVaultEvents",
    "ExpirySweep",
    "RotationWorker",
    "SecretEndpoint",
];

/// Every six hours, on the hour. Key Vault raises NearExpiry 30 days ahead, so a sweep
/// four times a day catches anything events missed with weeks to spare, while staying
/// far below Key Vault's list-operation throttling limits.
pub const DEFAULT_SWEEP_SCHEDULE: &str = "0 0 */6 * * *";
pub const DEFAULT_ROTATION_QUEUE: &str = "rotations";
pub const DEFAULT_AUDIT_TABLE: &str = "keyturnaudit";
pub const DEFAULT_DATA_DIR: &str = ".keyturn";
/// Shortest accepted app-settings prefix: long enough to be a namespace of its own.
pub const MIN_APPSETTINGS_PREFIX_LEN: usize = 8;

/// Setting-name prefixes of the Functions host, App Service and the managed identity
/// endpoint; the app-settings backend may never serve their settings.
pub const PLATFORM_SETTING_PREFIXES: [&str; 8] = [
    "AZUREWEBJOBS",
    "WEBSITE_",
    "IDENTITY_",
    "MSI_",
    "FUNCTIONS_",
    "APPLICATIONINSIGHTS_",
    "APPSETTING_",
    "AZURE_",
];

/// The app-settings backend's prefix when none is set.
pub const DEFAULT_APPSETTINGS_PREFIX: &str = "KEYTURN_SECRET_";
/// Entra's and Microsoft Graph's public-cloud hosts.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";
/// Ninety days: the lifetime Microsoft's portal suggests for new client secrets and a
/// common compliance ceiling for shared secrets.
pub const DEFAULT_VALIDITY_DAYS: &str = "90";
/// Thirty days: Key Vault raises `NearExpiry` thirty days ahead, so events and policy agree.
pub const DEFAULT_ROTATE_BEFORE_DAYS: &str = "30";
/// Seven days: long enough for every consumer to pick up the new version (a weekly
/// restart, a daily cache refresh), well inside the thirty-day rotate-before window.
pub const DEFAULT_OVERLAP_DAYS: &str = "7";
/// Rotation policies are whole days up to ten years (the same bound the tags obey).
pub const MAX_POLICY_DAYS: u32 = 3650;

pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "FUNCTIONS_WORKER_RUNTIME",
        read_by: ReadBy::Host,
        required: Required::Always,
        default: None,
        example: "Custom",
        secret: false,
        purpose: "Tells the Functions host that a custom handler serves the functions.",
    },
    SettingSpec {
        name: "AzureWebJobsStorage",
        read_by: ReadBy::Host,
        required: Required::Never,
        default: None,
        example: "UseDevelopmentStorage=true",
        secret: true,
        purpose: "The host's storage for local runs (Azurite). In Azure the identity-based form \
                  AzureWebJobsStorage__accountName is used instead and no key exists.",
    },
    SettingSpec {
        name: "FUNCTIONS_CUSTOMHANDLER_PORT",
        read_by: ReadBy::HostProvided,
        required: Required::Never,
        default: None,
        example: "7072",
        secret: false,
        purpose: "The loopback port the host forwards invocations to; set by the host.",
    },
    SettingSpec {
        name: "KEYTURN_EXIT_WITH_PARENT",
        read_by: ReadBy::HostProvided,
        required: Required::Never,
        default: None,
        example: "true",
        secret: false,
        purpose: "Set by `keyturn dev` for the handler it starts: the handler stops when the \
                  process that started it is gone, so a killed local mode leaves nothing running.",
    },
    SettingSpec {
        name: "KEYTURN_LOG_LEVEL",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("info"),
        example: "info",
        secret: false,
        purpose: "Log filter: a level (error, warn, info, debug, trace) or tracing directives \
                  such as `info,keyturn=debug`.",
    },
    SettingSpec {
        name: "KEYTURN_CREDENTIAL",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("managed-identity"),
        example: "azure-cli",
        secret: false,
        purpose: "How keyturn authenticates to Azure: managed-identity, workload-identity or \
                  azure-cli (development only). No setting ever holds a credential.",
    },
    SettingSpec {
        name: "KEYTURN_BACKEND",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("azure"),
        example: "azure",
        secret: false,
        purpose: "azure (Key Vault, Graph, Entra, Service Bus) or local (the embedded vault, \
                  directory and queue in KEYTURN_DATA_DIR, as `keyturn dev` runs them).",
    },
    SettingSpec {
        name: "AZURE_CLIENT_ID",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "Client id of the user-assigned managed identity (or the workload identity's \
                  application). Empty: the system-assigned identity.",
    },
    SettingSpec {
        name: "AZURE_TENANT_ID",
        read_by: ReadBy::Keyturn,
        required: Required::ByAzureRotation,
        default: None,
        example: "00000000-0000-0000-0000-000000000000",
        secret: false,
        purpose: "The Entra tenant (a GUID) of the applications whose secrets keyturn rotates: \
                  new client secrets are proven against this tenant's token endpoint.",
    },
    SettingSpec {
        name: "KEYTURN_AUTHORITY_HOST",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_AUTHORITY_HOST),
        example: DEFAULT_AUTHORITY_HOST,
        secret: false,
        purpose: "Entra authority host where new client secrets are proven; another cloud's \
                  for sovereign clouds (https://login.microsoftonline.us, https://login.chinacloudapi.cn).",
    },
    SettingSpec {
        name: "KEYTURN_GRAPH_ENDPOINT",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_GRAPH_ENDPOINT),
        example: DEFAULT_GRAPH_ENDPOINT,
        secret: false,
        purpose: "Microsoft Graph endpoint for application credentials and device lookups; \
                  another cloud's for sovereign clouds (https://graph.microsoft.us, \
                  https://microsoftgraph.chinacloudapi.cn).",
    },
    SettingSpec {
        name: "KEYTURN_VAULTS",
        read_by: ReadBy::Keyturn,
        required: Required::ByRotation,
        default: None,
        example: "https://kv-keyturn-dev.vault.azure.net/",
        secret: false,
        purpose: "Comma-separated Key Vault URLs whose secrets and certificates keyturn manages.",
    },
    SettingSpec {
        name: "KEYTURN_SWEEP_SCHEDULE",
        read_by: ReadBy::Both,
        required: Required::Never,
        default: Some(DEFAULT_SWEEP_SCHEDULE),
        example: DEFAULT_SWEEP_SCHEDULE,
        secret: false,
        purpose: "Six-field NCRONTAB schedule (UTC) of the ExpirySweep timer.",
    },
    SettingSpec {
        name: "KEYTURN_ROTATION_QUEUE",
        read_by: ReadBy::Both,
        required: Required::Never,
        default: Some(DEFAULT_ROTATION_QUEUE),
        example: DEFAULT_ROTATION_QUEUE,
        secret: false,
        purpose: "Service Bus queue (sessions and duplicate detection enabled) carrying rotation jobs.",
    },
    SettingSpec {
        name: "KEYTURN_DEFAULT_VALIDITY_DAYS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_VALIDITY_DAYS),
        example: DEFAULT_VALIDITY_DAYS,
        secret: false,
        purpose: "Days a new credential or generated value is valid, for objects without a \
                  keyturn-validity-days tag.",
    },
    SettingSpec {
        name: "KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_ROTATE_BEFORE_DAYS),
        example: DEFAULT_ROTATE_BEFORE_DAYS,
        secret: false,
        purpose: "Rotate this many days before expiry, for objects without a \
                  keyturn-rotate-before-days tag. Must be less than the validity.",
    },
    SettingSpec {
        name: "KEYTURN_DEFAULT_OVERLAP_DAYS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_OVERLAP_DAYS),
        example: DEFAULT_OVERLAP_DAYS,
        secret: false,
        purpose: "Days the previous App Registration secret keeps working after a rotation before \
                  keyturn removes it, for objects without a keyturn-overlap-days tag (0: at once).",
    },
    SettingSpec {
        name: "ServiceBusConnection__fullyQualifiedNamespace",
        read_by: ReadBy::Both,
        required: Required::ByAzureRotation,
        default: None,
        example: "sb-keyturn-dev.servicebus.windows.net",
        secret: false,
        purpose: "Service Bus namespace: the host's trigger connection (identity-based) and \
                  where keyturn sends rotation jobs.",
    },
    SettingSpec {
        name: "ServiceBusConnection__credential",
        read_by: ReadBy::Host,
        required: Required::Never,
        default: None,
        example: "managedidentity",
        secret: false,
        purpose: "Makes the host's Service Bus trigger use a managed identity.",
    },
    SettingSpec {
        name: "ServiceBusConnection__clientId",
        read_by: ReadBy::Host,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "Client id of the user-assigned identity the host's Service Bus trigger uses.",
    },
    SettingSpec {
        name: "KEYTURN_AUDIT_STORE",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("table"),
        example: "sqlite",
        secret: false,
        purpose: "Where the hash-chained audit log lives: table (Azure Table storage) or sqlite \
                  (a file under KEYTURN_DATA_DIR, for local and self-hosted runs).",
    },
    SettingSpec {
        name: "KEYTURN_AUDIT_TABLE",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_AUDIT_TABLE),
        example: DEFAULT_AUDIT_TABLE,
        secret: false,
        purpose: "Table name of the audit log (letters and digits, 3-63 characters).",
    },
    SettingSpec {
        name: "KEYTURN_TABLE_ENDPOINT",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "Table service endpoint, used with keyturn's identity \
                  (https://<account>.table.core.windows.net). Needed when the audit store is table \
                  and no connection string is set.",
    },
    SettingSpec {
        name: "KEYTURN_TABLE_CONNECTION_STRING",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: true,
        purpose: "Storage connection string for the Table service, for Azurite and development \
                  only; in Azure use KEYTURN_TABLE_ENDPOINT and the managed identity.",
    },
    SettingSpec {
        name: "KEYTURN_DATA_DIR",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_DATA_DIR),
        example: DEFAULT_DATA_DIR,
        secret: false,
        purpose: "Directory of the embedded SQLite store (created owner-only).",
    },
    // SecretEndpoint: certificate policies, access policy, backends, rate limits, TLS.
    SettingSpec {
        name: "KEYTURN_TRUST_ARR_CLIENT_CERT",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("false"),
        example: "false",
        secret: false,
        purpose: "true only behind App Service with client certificates required: the \
                  X-ARR-ClientCert header (and the front end's X-Forwarded-For) is then \
                  believed. Otherwise a request carrying the header is refused.",
    },
    SettingSpec {
        name: "KEYTURN_CERT_POLICIES",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "trusted-thumbprints",
        secret: false,
        purpose: "Comma-separated client-certificate policies that must all accept a caller: \
                  trusted-thumbprints, chain, entra-device. None: every request is refused.",
    },
    SettingSpec {
        name: "KEYTURN_TRUSTED_THUMBPRINTS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
        secret: false,
        purpose: "Comma-separated SHA-256 certificate thumbprints of the trusted-thumbprints \
                  policy (SHA-1 accepted with a start-up warning).",
    },
    SettingSpec {
        name: "KEYTURN_CHAIN_ROOTS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "PEM or DER file of the trust anchors of the chain policy.",
    },
    SettingSpec {
        name: "KEYTURN_CHAIN_INTERMEDIATES",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "Comma-separated PEM or DER files of intermediates offered to path building \
                  (App Service forwards the leaf only).",
    },
    SettingSpec {
        name: "KEYTURN_CHAIN_CRLS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "Comma-separated CRL files (PEM or DER) the chain policy checks revocation \
                  against; every certificate below the root must be covered by a current CRL.",
    },
    SettingSpec {
        name: "KEYTURN_CHAIN_REVOCATION",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("crl"),
        example: "crl",
        secret: false,
        purpose: "crl (check against KEYTURN_CHAIN_CRLS, fail closed) or off (no revocation \
                  check; for a PKI without CRLs, with a start-up warning).",
    },
    SettingSpec {
        name: "KEYTURN_CLOCK_SKEW_SECONDS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("300"),
        example: "300",
        secret: false,
        purpose: "How far in the future a certificate's notBefore may lie (0-3600 seconds).",
    },
    SettingSpec {
        name: "KEYTURN_ENTRA_DEVICE_ROOTS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "PEM or DER file of the tenant's device-certificate root (MS-Organization-Access) \
                  for the entra-device policy.",
    },
    SettingSpec {
        name: "KEYTURN_ENTRA_DEVICE_REQUIRE",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "Comma-separated extra demands of the entra-device policy: compliant, managed.",
    },
    SettingSpec {
        name: "KEYTURN_DEVICE_CACHE_SECONDS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("300"),
        example: "300",
        secret: false,
        purpose: "How long a device lookup (found or not) is reused (0-86400 seconds).",
    },
    SettingSpec {
        name: "KEYTURN_ACCESS_POLICY",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: r#"{"version":1,"grants":[]}"#,
        secret: false,
        purpose: "The access policy: a JSON file path, or the JSON itself (starting with `{`). \
                  See docs/access-policy.md. Unset: nothing is granted.",
    },
    SettingSpec {
        name: "KEYTURN_APPSETTINGS_PREFIX",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_APPSETTINGS_PREFIX),
        example: DEFAULT_APPSETTINGS_PREFIX,
        secret: false,
        purpose: "Prefix of the app settings the appsettings backend serves: secret db-password \
                  is <prefix>DB_PASSWORD.",
    },
    SettingSpec {
        name: "KEYTURN_SECRETS_TABLE",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "Table the table backend reads secrets from (reached like the audit table: \
                  KEYTURN_TABLE_ENDPOINT or KEYTURN_TABLE_CONNECTION_STRING). Unset: no table backend.",
    },
    SettingSpec {
        name: "KEYTURN_SECRETS_VAULT",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "The Key Vault URL the SecretEndpoint's keyvault backend reads (with the \
                  endpoint identity's Key Vault Secrets User role).",
    },
    SettingSpec {
        name: "KEYTURN_RATE_LIMIT_PER_IDENTITY",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("60"),
        example: "60",
        secret: false,
        purpose: "Requests per minute one client certificate may make (burst of the same size); 0: unlimited.",
    },
    SettingSpec {
        name: "KEYTURN_RATE_LIMIT_PER_ADDRESS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("600"),
        example: "600",
        secret: false,
        purpose: "Requests per minute one source address may make; 0: unlimited.",
    },
    SettingSpec {
        name: "KEYTURN_TLS_ADDRESS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "Self-hosted mode: address:port where `keyturn serve` terminates TLS itself and \
                  serves only the SecretEndpoint (for example 0.0.0.0:8443). Unset: no TLS listener.",
    },
    SettingSpec {
        name: "KEYTURN_TLS_CERT",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "PEM certificate chain of the TLS listener (with KEYTURN_TLS_ADDRESS).",
    },
    SettingSpec {
        name: "KEYTURN_TLS_KEY",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "PEM private key file of the TLS listener (a path; the key itself never goes \
                  in a setting).",
    },
    SettingSpec {
        name: "KEYTURN_LOCAL_VAULT_KEY",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: true,
        purpose: "Local mode only: base64 of the 32-byte AES-256-GCM key sealing the embedded \
                  vault's values. Empty: a key file created owner-only beside the store. Never \
                  deployed to Azure.",
    },
    SettingSpec {
        name: "KEYTURN_LOCAL_PROPAGATION_SECONDS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("0"),
        example: "0",
        secret: false,
        purpose: "Local mode only: seconds a new application secret is refused by the local \
                  directory's token check, as Entra refuses new secrets until they propagate \
                  (observed 4-18 s). 0-600.",
    },
];

/// The spec of a setting by name.
pub fn spec(name: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Which adapters the ports get: Azure services, or the embedded store of local mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Azure,
    Local,
}

/// How keyturn obtains Azure tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    ManagedIdentity,
    WorkloadIdentity,
    AzureCli,
}

#[derive(Debug, Clone, Serialize)]
pub struct CredentialSettings {
    pub kind: CredentialKind,
    /// A user-assigned identity's client id (a GUID).
    pub client_id: Option<String>,
}

/// Where Entra and Microsoft Graph are, for the cloud keyturn runs in.
#[derive(Debug, Clone, Serialize)]
pub struct EntraSettings {
    /// The tenant new client secrets are proven in; needed by the Azure token prover.
    pub tenant_id: Option<TenantId>,
    pub authority_host: url::Url,
    pub graph_endpoint: url::Url,
}

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

fn redacted<S: serde::Serializer>(_: &SecretValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[redacted]")
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "store")]
pub enum AuditSettings {
    Table { table: String, access: TableAccess },
    Sqlite { path: PathBuf },
}

/// The rotation policy used where an object's tags say nothing: whole days, checked for
/// range and for rotate-before < validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RotationDefaults {
    pub validity_days: u32,
    pub rotate_before_days: u32,
    pub overlap_days: u32,
}

/// The validated configuration of one keyturn process.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub log_level: String,
    pub backend: Backend,
    pub credential: CredentialSettings,
    pub entra: EntraSettings,
    pub vaults: Vec<VaultUrl>,
    pub rotation_defaults: RotationDefaults,
    #[serde(serialize_with = "display")]
    pub sweep_schedule: Schedule,
    pub rotation_queue: String,
    pub service_bus_namespace: Option<String>,
    pub audit: AuditSettings,
    pub data_dir: PathBuf,
    /// How long the local directory refuses a new secret (local backend only).
    pub local_propagation_seconds: u64,
    /// Functions this app serves (all of them unless disabled by `AzureWebJobs.<Name>.Disabled`).
    pub enabled_functions: Vec<&'static str>,
    /// The SecretEndpoint's settings.
    pub endpoint: EndpointSettings,
}

fn display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// One problem with one setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem} (example: {example})")]
pub struct SettingError {
    pub setting: String,
    pub problem: String,
    pub example: String,
}

/// Every problem found, so one start-up attempt reports them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub errors: Vec<SettingError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// The app-setting environment, as a plain map so tests need not touch the process's.
#[derive(Debug, Clone, Default)]
pub struct Environment(BTreeMap<String, String>);

impl Environment {
    pub fn from_process() -> Self {
        // Settings with non-UTF-8 values are kept out rather than aborting start-up here;
        // a required one then reports as missing, naming the setting.
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A setting's value, trimmed; empty counts as unset (App Service cannot delete a
    /// setting from a slot swap, so an emptied one must mean "not set").
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// Every setting whose name starts with `prefix` (without ASCII case), untrimmed:
    /// what the app-settings secret source serves.
    pub fn prefixed<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0.iter().filter_map(move |(name, value)| {
            let head = name.get(..prefix.len())?;
            head.eq_ignore_ascii_case(prefix)
                .then_some((name.as_str(), value.as_str()))
        })
    }

    /// Whether the host was told to disable a function. The host checks
    /// `AzureWebJobs.<F>.Disabled` and, because Linux turns the dots of setting names into
    /// underscores in the environment, `AzureWebJobs_<F>_Disabled`: keyturn reads the same two.
    pub fn function_disabled(&self, function: &str) -> bool {
        [
            format!("AzureWebJobs.{function}.Disabled"),
            format!("AzureWebJobs_{function}_Disabled"),
        ]
        .iter()
        .filter_map(|k| self.value(k))
        .any(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}

struct Collector<'e> {
    env: &'e Environment,
    errors: Vec<SettingError>,
}

impl<'e> Collector<'e> {
    fn fail(&mut self, name: &str, problem: impl Into<String>) {
        let example = spec(name).map(|s| s.example).unwrap_or_default();
        let example = if example.is_empty() {
            spec(name).and_then(|s| s.default).unwrap_or("see README")
        } else {
            example
        };
        self.errors.push(SettingError {
            setting: name.to_string(),
            problem: problem.into(),
            example: example.to_string(),
        });
    }

    /// The value or the spec's default.
    fn value_or_default(&self, name: &str) -> Option<&'e str> {
        self.env
            .value(name)
            .or_else(|| spec(name).and_then(|s| s.default))
    }

    fn parse<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let raw = self.value_or_default(name)?;
        match parse(raw) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.fail(name, problem);
                None
            }
        }
    }
}

impl Settings {
    /// Validates every setting, reporting all problems at once.
    pub fn from_env(env: &Environment) -> Result<Self, ConfigError> {
        let mut c = Collector {
            env,
            errors: Vec::new(),
        };

        let enabled_functions: Vec<&'static str> = FUNCTIONS
            .iter()
            .copied()
            .filter(|f| !env.function_disabled(f))
            .collect();
        let rotation_enabled = enabled_functions
            .iter()
            .any(|f| ROTATION_FUNCTIONS.contains(f));

        let local_backend = env.value("KEYTURN_BACKEND") == Some("local");
        for s in SETTINGS {
            let needed = match s.required {
                Required::Always => true,
                Required::ByRotation => rotation_enabled,
                Required::ByAzureRotation => rotation_enabled && !local_backend,
                Required::Never => false,
            };
            // Host-only settings are the host's business at run time; keyturn reports them
            // only where it depends on them.
            if needed
                && s.read_by != ReadBy::Host
                && env.value(s.name).is_none()
                && s.default.is_none()
            {
                let why = match s.required {
                    Required::ByRotation | Required::ByAzureRotation => {
                        "missing; required while KeyVaultEvents, ExpirySweep or RotationWorker is enabled"
                    }
                    _ => "missing",
                };
                c.fail(s.name, why);
            }
        }

        let backend = c
            .parse("KEYTURN_BACKEND", |v| match v {
                "azure" => Ok(Backend::Azure),
                "local" => Ok(Backend::Local),
                other => Err(format!(
                    "unknown backend `{other}`; expected azure or local"
                )),
            })
            .unwrap_or(Backend::Azure);

        let log_level = c
            .parse("KEYTURN_LOG_LEVEL", |v| {
                tracing_subscriber::EnvFilter::try_new(v)
                    .map(|_| v.to_string())
                    .map_err(|e| format!("not a log level or filter directive ({e})"))
            })
            .unwrap_or_else(|| "info".into());

        let kind = c
            .parse("KEYTURN_CREDENTIAL", |v| match v {
                "managed-identity" => Ok(CredentialKind::ManagedIdentity),
                "workload-identity" => Ok(CredentialKind::WorkloadIdentity),
                "azure-cli" => Ok(CredentialKind::AzureCli),
                other => Err(format!(
                    "unknown credential `{other}`; expected managed-identity, workload-identity or azure-cli"
                )),
            })
            .unwrap_or(CredentialKind::ManagedIdentity);
        let client_id = c.parse("AZURE_CLIENT_ID", |v| {
            uuid::Uuid::parse_str(v)
                .map(|u| u.to_string())
                .map_err(|_| {
                    "not a client id (a GUID such as 00000000-0000-0000-0000-000000000000)"
                        .to_string()
                })
        });

        let tenant_id = c.parse("AZURE_TENANT_ID", |v| {
            TenantId::parse(v).map_err(|_| {
                "not a tenant id (a GUID such as 00000000-0000-0000-0000-000000000000)".to_string()
            })
        });
        let authority_host = c
            .parse("KEYTURN_AUTHORITY_HOST", parse_https_origin)
            .unwrap_or_else(|| default_url(DEFAULT_AUTHORITY_HOST));
        let graph_endpoint = c
            .parse("KEYTURN_GRAPH_ENDPOINT", parse_https_origin)
            .unwrap_or_else(|| default_url(DEFAULT_GRAPH_ENDPOINT));

        let vaults = c
            .parse("KEYTURN_VAULTS", |v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        VaultUrl::parse(s)
                            .map_err(|e| format!("`{s}` is not a Key Vault URL ({e})"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap_or_default();

        let sweep_schedule = c.parse("KEYTURN_SWEEP_SCHEDULE", |v| {
            Schedule::parse(v).map_err(|e| format!("not a six-field NCRONTAB expression ({e})"))
        });

        let rotation_queue = c
            .parse("KEYTURN_ROTATION_QUEUE", |v| {
                parse_queue_name(v).map(str::to_string)
            })
            .unwrap_or_else(|| DEFAULT_ROTATION_QUEUE.into());

        let days = |min: u32| {
            move |v: &str| match v.parse::<u32>() {
                Ok(n) if (min..=MAX_POLICY_DAYS).contains(&n) => Ok(n),
                _ => Err(format!(
                    "not a whole number of days from {min} to {MAX_POLICY_DAYS}"
                )),
            }
        };
        let validity_days = c.parse("KEYTURN_DEFAULT_VALIDITY_DAYS", days(1));
        let rotate_before_days = c.parse("KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS", days(1));
        let overlap_days = c.parse("KEYTURN_DEFAULT_OVERLAP_DAYS", days(0));
        let rotation_defaults = match (validity_days, rotate_before_days, overlap_days) {
            (Some(validity_days), Some(rotate_before_days), Some(overlap_days)) => {
                if rotate_before_days >= validity_days {
                    c.fail(
                        "KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS",
                        format!(
                            "{rotate_before_days} is not less than KEYTURN_DEFAULT_VALIDITY_DAYS ({validity_days}); every new version would be due at once"
                        ),
                    );
                }
                Some(RotationDefaults {
                    validity_days,
                    rotate_before_days,
                    overlap_days,
                })
            }
            _ => None,
        };

        let service_bus_namespace = c.parse("ServiceBusConnection__fullyQualifiedNamespace", |v| {
            parse_namespace(v).map(str::to_string)
        });

        let data_dir = PathBuf::from(
            c.value_or_default("KEYTURN_DATA_DIR")
                .unwrap_or(DEFAULT_DATA_DIR),
        );

        let audit = match c.value_or_default("KEYTURN_AUDIT_STORE") {
            Some("sqlite") => Some(AuditSettings::Sqlite {
                path: data_dir.join("keyturn.db"),
            }),
            Some("table") | None => {
                let table = c
                    .parse("KEYTURN_AUDIT_TABLE", |v| {
                        parse_table_name(v).map(str::to_string)
                    })
                    .unwrap_or_else(|| DEFAULT_AUDIT_TABLE.into());
                let endpoint = c.parse("KEYTURN_TABLE_ENDPOINT", |v| {
                    let u = url::Url::parse(v).map_err(|e| format!("not a URL ({e})"))?;
                    if u.scheme() != "https" {
                        return Err("must be an https URL; plain http is only for Azurite, through KEYTURN_TABLE_CONNECTION_STRING".into());
                    }
                    Ok(u)
                });
                let connection_string = env
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
                        if env.value("KEYTURN_TABLE_ENDPOINT").is_none() {
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
        };

        let endpoint = EndpointSettings::collect(&mut c);
        const MAX_LOCAL_PROPAGATION_SECONDS: u64 = 600;
        let local_propagation_seconds = c
            .parse("KEYTURN_LOCAL_PROPAGATION_SECONDS", |v| {
                parse_bounded(v, MAX_LOCAL_PROPAGATION_SECONDS)
            })
            .unwrap_or(0);

        match (
            c.errors.is_empty(),
            sweep_schedule,
            audit,
            rotation_defaults,
        ) {
            (true, Some(sweep_schedule), Some(audit), Some(rotation_defaults)) => Ok(Settings {
                log_level,
                backend,
                credential: CredentialSettings { kind, client_id },
                entra: EntraSettings {
                    tenant_id,
                    authority_host,
                    graph_endpoint,
                },
                vaults,
                rotation_defaults,
                sweep_schedule,
                rotation_queue,
                service_bus_namespace,
                audit,
                data_dir,
                local_propagation_seconds,
                enabled_functions,
                endpoint,
            }),
            _ => Err(ConfigError { errors: c.errors }),
        }
    }
}

/// A certificate policy named in KEYTURN_CERT_POLICIES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertPolicyName {
    TrustedThumbprints,
    Chain,
    EntraDevice,
}

/// The chain policy's trust material and options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSettings {
    pub roots: PathBuf,
    pub intermediates: Vec<PathBuf>,
    pub crls: Vec<PathBuf>,
    pub check_revocation: bool,
    pub clock_skew_seconds: u64,
}

/// The entra-device policy's root and demands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntraDeviceSettings {
    pub roots: PathBuf,
    pub require_compliant: bool,
    pub require_managed: bool,
    pub cache_seconds: u64,
    /// KEYTURN_CLOCK_SKEW_SECONDS, which applies to every certificate chain.
    pub clock_skew_seconds: u64,
}

/// keyturn's own TLS listener (self-hosted mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsListenerSettings {
    pub address: std::net::SocketAddr,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// The SecretEndpoint's settings. Files are named here and read when the endpoint is
/// built, so `keyturn config check` validates shapes without touching trust material.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointSettings {
    pub trust_arr_header: bool,
    pub policies: Vec<CertPolicyName>,
    pub trusted_thumbprints: Vec<String>,
    pub chain: Option<ChainSettings>,
    pub entra_device: Option<EntraDeviceSettings>,
    /// A path or inline JSON.
    pub access_policy: Option<String>,
    pub appsettings_prefix: String,
    pub secrets_table: Option<String>,
    /// The vault the `keyvault` backend reads.
    pub secrets_vault: Option<VaultUrl>,
    /// How the secrets table is reached; set whenever `secrets_table` is.
    pub secrets_table_access: Option<TableAccess>,
    /// Requests per minute; 0 is unlimited.
    pub rate_limit_per_identity: u32,
    pub rate_limit_per_address: u32,
    pub tls: Option<TlsListenerSettings>,
}

/// The most clock skew accepted: beyond an hour, "skew" is a wrong clock to fix.
const MAX_CLOCK_SKEW_SECONDS: u64 = 3600;
/// The longest device-cache time: a day; longer and a disabled device keeps access
/// for longer than anyone would expect.
const MAX_DEVICE_CACHE_SECONDS: u64 = 86_400;

impl EndpointSettings {
    fn collect(c: &mut Collector<'_>) -> Self {
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let trust_arr_header = c
            .parse("KEYTURN_TRUST_ARR_CLIENT_CERT", parse_bool)
            .unwrap_or(false);
        let policies = c
            .parse("KEYTURN_CERT_POLICIES", |v| {
                list(v)
                    .iter()
                    .map(|name| match name.as_str() {
                        "trusted-thumbprints" => Ok(CertPolicyName::TrustedThumbprints),
                        "chain" => Ok(CertPolicyName::Chain),
                        "entra-device" => Ok(CertPolicyName::EntraDevice),
                        other => Err(format!(
                            "unknown policy `{other}`; expected trusted-thumbprints, chain or entra-device"
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap_or_default();
        let trusted_thumbprints = c
            .parse("KEYTURN_TRUSTED_THUMBPRINTS", |v| {
                let pins = list(v);
                for pin in &pins {
                    crate::domain::thumbprint::Thumbprint::parse(pin)
                        .map_err(|e| format!("`{pin}` is not a thumbprint ({e})"))?;
                }
                Ok(pins)
            })
            .unwrap_or_default();
        if policies.contains(&CertPolicyName::TrustedThumbprints) && trusted_thumbprints.is_empty()
        {
            c.fail(
                "KEYTURN_TRUSTED_THUMBPRINTS",
                "missing; the trusted-thumbprints policy is configured",
            );
        }
        let clock_skew_seconds = c
            .parse("KEYTURN_CLOCK_SKEW_SECONDS", |v| {
                parse_bounded(v, MAX_CLOCK_SKEW_SECONDS)
            })
            .unwrap_or(300);
        let check_revocation = c
            .parse("KEYTURN_CHAIN_REVOCATION", |v| match v {
                "crl" => Ok(true),
                "off" => Ok(false),
                other => Err(format!(
                    "unknown revocation mode `{other}`; expected crl or off"
                )),
            })
            .unwrap_or(true);
        let chain_roots = c.env.value("KEYTURN_CHAIN_ROOTS").map(PathBuf::from);
        let chain = match (policies.contains(&CertPolicyName::Chain), chain_roots) {
            (true, Some(roots)) => Some(ChainSettings {
                roots,
                intermediates: c
                    .env
                    .value("KEYTURN_CHAIN_INTERMEDIATES")
                    .map(|v| list(v).into_iter().map(PathBuf::from).collect())
                    .unwrap_or_default(),
                crls: c
                    .env
                    .value("KEYTURN_CHAIN_CRLS")
                    .map(|v| list(v).into_iter().map(PathBuf::from).collect())
                    .unwrap_or_default(),
                check_revocation,
                clock_skew_seconds,
            }),
            (true, None) => {
                c.fail(
                    "KEYTURN_CHAIN_ROOTS",
                    "missing; the chain policy is configured",
                );
                None
            }
            (false, _) => None,
        };
        let require = c
            .parse("KEYTURN_ENTRA_DEVICE_REQUIRE", |v| {
                let mut demands = (false, false);
                for demand in list(v) {
                    match demand.as_str() {
                        "compliant" => demands.0 = true,
                        "managed" => demands.1 = true,
                        other => {
                            return Err(format!(
                                "unknown demand `{other}`; expected compliant or managed"
                            ));
                        }
                    }
                }
                Ok(demands)
            })
            .unwrap_or_default();
        let cache_seconds = c
            .parse("KEYTURN_DEVICE_CACHE_SECONDS", |v| {
                parse_bounded(v, MAX_DEVICE_CACHE_SECONDS)
            })
            .unwrap_or(300);
        let entra_roots = c.env.value("KEYTURN_ENTRA_DEVICE_ROOTS").map(PathBuf::from);
        let entra_device = match (policies.contains(&CertPolicyName::EntraDevice), entra_roots) {
            (true, Some(roots)) => Some(EntraDeviceSettings {
                roots,
                require_compliant: require.0,
                require_managed: require.1,
                cache_seconds,
                clock_skew_seconds,
            }),
            (true, None) => {
                c.fail(
                    "KEYTURN_ENTRA_DEVICE_ROOTS",
                    "missing; the entra-device policy is configured",
                );
                None
            }
            (false, _) => None,
        };
        let access_policy = c.env.value("KEYTURN_ACCESS_POLICY").map(str::to_string);
        let appsettings_prefix = c
            .parse("KEYTURN_APPSETTINGS_PREFIX", |v| {
                if !v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                    return Err("not a setting-name prefix (letters, digits and '_')".into());
                }
                // A prefix that covers a setting of keyturn's or of the platform would
                // serve those settings (connection strings, the identity endpoint's
                // header) as secrets to any device granted `*` on this backend.
                if v.len() < MIN_APPSETTINGS_PREFIX_LEN {
                    return Err(format!(
                        "too short: at least {MIN_APPSETTINGS_PREFIX_LEN} characters, so it cannot cover other settings"
                    ));
                }
                let upper = v.to_ascii_uppercase();
                let covers_setting = SETTINGS.iter().any(|s| s.name.to_ascii_uppercase().starts_with(&upper));
                let covers_platform = PLATFORM_SETTING_PREFIXES
                    .iter()
                    .any(|p| upper.starts_with(p) || p.starts_with(&upper));
                if covers_setting || covers_platform {
                    return Err("covers keyturn's or the platform's own settings; choose a prefix of its own".into());
                }
                Ok(v.to_string())
            })
            .unwrap_or_else(|| DEFAULT_APPSETTINGS_PREFIX.into());
        let secrets_table = c.parse("KEYTURN_SECRETS_TABLE", |v| {
            parse_table_name(v).map(str::to_string)
        });
        let secrets_table_access = match &secrets_table {
            None => None,
            Some(_) => {
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
                    _ => {
                        c.fail(
                            "KEYTURN_SECRETS_TABLE",
                            "the table backend needs exactly one of KEYTURN_TABLE_ENDPOINT (https) and KEYTURN_TABLE_CONNECTION_STRING",
                        );
                        None
                    }
                }
            }
        };
        let secrets_vault = c.parse("KEYTURN_SECRETS_VAULT", |v| {
            VaultUrl::parse(v).map_err(|e| format!("not a Key Vault URL ({e})"))
        });
        let rate = |c: &mut Collector<'_>, name: &str, default: u32| {
            c.parse(name, |v| {
                v.parse::<u32>()
                    .map_err(|_| "not a whole number of requests per minute".to_string())
            })
            .unwrap_or(default)
        };
        let rate_limit_per_identity = rate(c, "KEYTURN_RATE_LIMIT_PER_IDENTITY", 60);
        let rate_limit_per_address = rate(c, "KEYTURN_RATE_LIMIT_PER_ADDRESS", 600);
        let address = c.parse("KEYTURN_TLS_ADDRESS", |v| {
            v.parse::<std::net::SocketAddr>()
                .map_err(|_| "not an address:port (for example 0.0.0.0:8443)".to_string())
        });
        let certificate = c.env.value("KEYTURN_TLS_CERT").map(PathBuf::from);
        let key = c.env.value("KEYTURN_TLS_KEY").map(PathBuf::from);
        let tls = match (address, certificate, key) {
            (Some(address), Some(certificate), Some(key)) => Some(TlsListenerSettings {
                address,
                certificate,
                key,
            }),
            (None, None, None) => None,
            _ => {
                if c.env.value("KEYTURN_TLS_ADDRESS").is_some()
                    || c.env.value("KEYTURN_TLS_CERT").is_some()
                    || c.env.value("KEYTURN_TLS_KEY").is_some()
                {
                    c.fail(
                        "KEYTURN_TLS_ADDRESS",
                        "the TLS listener needs KEYTURN_TLS_ADDRESS, KEYTURN_TLS_CERT and KEYTURN_TLS_KEY together",
                    );
                }
                None
            }
        };
        if trust_arr_header && tls.is_some() {
            // The plain listener stays on loopback beside the TLS one; believing the
            // header there would let any local process present any certificate.
            c.fail(
                "KEYTURN_TRUST_ARR_CLIENT_CERT",
                "true together with keyturn's own TLS listener (KEYTURN_TLS_ADDRESS); trust the header only behind App Service",
            );
        }
        Self {
            trust_arr_header,
            policies,
            trusted_thumbprints,
            chain,
            entra_device,
            access_policy,
            appsettings_prefix,
            secrets_table,
            secrets_table_access,
            secrets_vault,
            rate_limit_per_identity,
            rate_limit_per_address,
            tls,
        }
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("not a boolean (true or false)".into()),
    }
}

fn parse_bounded(v: &str, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("not a whole number of seconds from 0 to {max}")),
    }
}

/// An https origin such as `https://login.microsoftonline.com`: tokens and secrets go
/// there, so never plain http, and nothing after the host.
fn parse_https_origin(v: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(v).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "https" {
        return Err("must be an https URL".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("must be the host only, without a path, query or fragment".into());
    }
    Ok(url)
}

fn default_url(text: &str) -> url::Url {
    url::Url::parse(text).expect("invariant: the default endpoints are valid URLs")
}

/// Service Bus entity names: letters, digits, periods, hyphens, underscores; start and end
/// with a letter or digit; at most 260 characters (Service Bus naming rules for queues).
fn parse_queue_name(v: &str) -> Result<&str, String> {
    const MAX_QUEUE_NAME: usize = 260;
    let ok_chars = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    let ok_ends = v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if v.len() <= MAX_QUEUE_NAME && ok_chars && ok_ends {
        Ok(v)
    } else {
        Err("not a queue name (letters, digits, '.', '-', '_'; starts and ends with a letter or digit)".into())
    }
}

/// A Service Bus namespace host name, without scheme or path.
fn parse_namespace(v: &str) -> Result<&str, String> {
    let looks_like_host = !v.contains("://")
        && !v.contains('/')
        && v.contains('.')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if looks_like_host {
        Ok(v)
    } else {
        Err("not a fully qualified namespace host name (no scheme, no path)".into())
    }
}

/// Table names: 3-63 alphanumeric characters, not starting with a digit (Table service rules).
fn parse_table_name(v: &str) -> Result<&str, String> {
    let ok = (3..=63).contains(&v.len())
        && v.chars().all(|c| c.is_ascii_alphanumeric())
        && v.starts_with(|c: char| c.is_ascii_alphabetic());
    if ok {
        Ok(v)
    } else {
        Err("not a table name (3-63 letters and digits, starting with a letter)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("FUNCTIONS_WORKER_RUNTIME", "Custom"),
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-0000000000aa"),
            ("KEYTURN_VAULTS", "https://kv-one.vault.azure.net/"),
            (
                "ServiceBusConnection__fullyQualifiedNamespace",
                "sb-one.servicebus.windows.net",
            ),
            ("KEYTURN_AUDIT_STORE", "sqlite"),
        ]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Environment {
        let mut pairs = base();
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            pairs.push((k, v));
        }
        Environment::from_pairs(pairs)
    }

    fn errors_for(env: &Environment) -> Vec<SettingError> {
        Settings::from_env(env)
            .expect_err("configuration should be rejected")
            .errors
    }

    #[test]
    fn a_complete_environment_yields_defaults_where_unset() {
        let s = Settings::from_env(&with(&[])).expect("valid");
        assert_eq!(s.rotation_queue, "rotations");
        assert_eq!(s.sweep_schedule.to_string(), DEFAULT_SWEEP_SCHEDULE);
        assert_eq!(s.credential.kind, CredentialKind::ManagedIdentity);
        assert_eq!(s.vaults.len(), 1);
        assert_eq!(s.enabled_functions.len(), 4);
        assert_eq!(
            s.rotation_defaults,
            RotationDefaults {
                validity_days: 90,
                rotate_before_days: 30,
                overlap_days: 7
            }
        );
        assert_eq!(
            s.entra.tenant_id.map(|t| t.to_string()).as_deref(),
            Some("00000000-0000-0000-0000-0000000000aa")
        );
    }

    #[test]
    fn rotation_defaults_are_checked_for_range_and_order() {
        for (setting, value) in [
            ("KEYTURN_DEFAULT_VALIDITY_DAYS", "0"),
            ("KEYTURN_DEFAULT_VALIDITY_DAYS", "ninety"),
            ("KEYTURN_DEFAULT_OVERLAP_DAYS", "-1"),
            ("KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS", "99999"),
            ("KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS", "90"),
            ("AZURE_TENANT_ID", "contoso.onmicrosoft.com"),
        ] {
            let errors = errors_for(&with(&[(setting, value)]));
            assert!(
                errors.iter().any(|e| e.setting == setting),
                "{setting}={value}: {errors:?}"
            );
        }
        let zero_overlap = Settings::from_env(&with(&[("KEYTURN_DEFAULT_OVERLAP_DAYS", "0")]))
            .expect("an overlap of zero retires at once");
        assert_eq!(zero_overlap.rotation_defaults.overlap_days, 0);
    }

    #[test]
    fn every_problem_names_the_setting_and_gives_an_example() {
        let env = with(&[
            ("KEYTURN_SWEEP_SCHEDULE", "0 */5 * * *"),
            ("KEYTURN_CREDENTIAL", "password"),
            ("KEYTURN_VAULTS", "http://kv-one.vault.azure.net/"),
            ("KEYTURN_ROTATION_QUEUE", "-bad-"),
            ("AZURE_CLIENT_ID", "not-a-guid"),
            ("KEYTURN_LOG_LEVEL", "loud=["),
        ]);
        let errors = errors_for(&env);
        let named: Vec<&str> = errors.iter().map(|e| e.setting.as_str()).collect();
        for expected in [
            "KEYTURN_SWEEP_SCHEDULE",
            "KEYTURN_CREDENTIAL",
            "KEYTURN_VAULTS",
            "KEYTURN_ROTATION_QUEUE",
            "AZURE_CLIENT_ID",
            "KEYTURN_LOG_LEVEL",
        ] {
            assert!(
                named.contains(&expected),
                "{expected} not reported in {named:?}"
            );
        }
        assert!(errors.iter().all(|e| !e.example.is_empty()));
    }

    #[test]
    fn entra_endpoints_default_to_the_public_cloud_and_refuse_anything_but_https_hosts() {
        let s = Settings::from_env(&with(&[])).expect("valid");
        assert_eq!(
            s.entra.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert_eq!(
            s.entra.graph_endpoint.as_str(),
            "https://graph.microsoft.com/"
        );

        let sovereign = Settings::from_env(&with(&[
            ("KEYTURN_AUTHORITY_HOST", "https://login.microsoftonline.us"),
            ("KEYTURN_GRAPH_ENDPOINT", "https://graph.microsoft.us/"),
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
        ]))
        .expect("valid");
        assert_eq!(
            sovereign.entra.graph_endpoint.as_str(),
            "https://graph.microsoft.us/"
        );
        assert!(sovereign.entra.tenant_id.is_some());

        for (setting, bad) in [
            ("KEYTURN_AUTHORITY_HOST", "http://login.microsoftonline.com"),
            (
                "KEYTURN_AUTHORITY_HOST",
                "https://login.microsoftonline.com/tenant",
            ),
            ("KEYTURN_GRAPH_ENDPOINT", "graph.microsoft.com"),
            ("KEYTURN_GRAPH_ENDPOINT", "https://graph.microsoft.com/?x=1"),
            ("AZURE_TENANT_ID", "contoso.onmicrosoft.com"),
        ] {
            let named: Vec<String> = errors_for(&with(&[(setting, bad)]))
                .into_iter()
                .map(|e| e.setting)
                .collect();
            assert_eq!(named, [setting], "{bad}");
        }
    }

    #[test]
    fn rotation_settings_are_required_only_while_a_rotation_function_is_enabled() {
        let missing = Environment::from_pairs([("KEYTURN_AUDIT_STORE", "sqlite")]);
        let named: Vec<String> = errors_for(&missing)
            .into_iter()
            .map(|e| e.setting)
            .collect();
        assert!(named.contains(&"KEYTURN_VAULTS".to_string()));
        assert!(named.contains(&"ServiceBusConnection__fullyQualifiedNamespace".to_string()));

        let endpoint_only = Environment::from_pairs([
            ("KEYTURN_AUDIT_STORE", "sqlite"),
            ("AzureWebJobs.KeyVaultEvents.Disabled", "true"),
            ("AzureWebJobs_ExpirySweep_Disabled", "true"),
            ("AzureWebJobs.RotationWorker.Disabled", "1"),
        ]);
        let s = Settings::from_env(&endpoint_only)
            .expect("endpoint-only app needs no rotation settings");
        assert_eq!(s.enabled_functions, vec!["SecretEndpoint"]);
    }

    #[test]
    fn the_table_audit_store_needs_exactly_one_way_in() {
        let neither = with(&[("KEYTURN_AUDIT_STORE", "table")]);
        assert!(
            errors_for(&neither)
                .iter()
                .any(|e| e.setting == "KEYTURN_TABLE_ENDPOINT")
        );

        let both = with(&[
            ("KEYTURN_AUDIT_STORE", "table"),
            (
                "KEYTURN_TABLE_ENDPOINT",
                "https://st.table.core.windows.net",
            ),
            (
                "KEYTURN_TABLE_CONNECTION_STRING",
                "UseDevelopmentStorage=true",
            ),
        ]);
        assert!(
            errors_for(&both)
                .iter()
                .any(|e| e.setting == "KEYTURN_TABLE_CONNECTION_STRING")
        );

        let http = with(&[
            ("KEYTURN_AUDIT_STORE", "table"),
            ("KEYTURN_TABLE_ENDPOINT", "http://st.table.core.windows.net"),
        ]);
        assert!(
            errors_for(&http)
                .iter()
                .any(|e| e.setting == "KEYTURN_TABLE_ENDPOINT")
        );
    }

    #[test]
    fn the_connection_string_never_appears_in_debug_or_json() {
        let env = with(&[
            ("KEYTURN_AUDIT_STORE", "table"),
            (
                "KEYTURN_TABLE_CONNECTION_STRING",
                "AccountName=a;AccountKey=c2VjcmV0LWtleS12YWx1ZQ==",
            ),
        ]);
        let s = Settings::from_env(&env).expect("valid");
        let json = serde_json::to_string(&s).expect("serialises");
        let debug = format!("{s:?}");
        for text in [json, debug] {
            assert!(!text.contains("c2VjcmV0LWtleS12YWx1ZQ"), "leaked in {text}");
            assert!(text.contains("[redacted]"));
        }
    }

    #[test]
    fn an_appsettings_prefix_may_not_cover_keyturns_or_the_platforms_settings() {
        for prefix in [
            "KEYTURN_",
            "KEYTURN_TABLE",
            "AzureWebJobs",
            "IDENTITY_HEADER_X",
            "WEBSITE_AUTH",
            "SECRET",
        ] {
            let errors = errors_for(&with(&[("KEYTURN_APPSETTINGS_PREFIX", prefix)]));
            assert!(
                errors
                    .iter()
                    .any(|e| e.setting == "KEYTURN_APPSETTINGS_PREFIX"),
                "{prefix} was accepted"
            );
        }
        let s = Settings::from_env(&with(&[("KEYTURN_APPSETTINGS_PREFIX", "DEVICE_SECRET_")]))
            .expect("own prefix");
        assert_eq!(s.endpoint.appsettings_prefix, "DEVICE_SECRET_");
    }

    #[test]
    fn the_forwarded_certificate_header_is_never_trusted_beside_keyturns_own_tls() {
        let errors = errors_for(&with(&[
            ("KEYTURN_TRUST_ARR_CLIENT_CERT", "true"),
            ("KEYTURN_TLS_ADDRESS", "127.0.0.1:8443"),
            ("KEYTURN_TLS_CERT", "/tls/cert.pem"),
            ("KEYTURN_TLS_KEY", "/tls/key.pem"),
        ]));
        assert!(
            errors
                .iter()
                .any(|e| e.setting == "KEYTURN_TRUST_ARR_CLIENT_CERT")
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = with(&[("KEYTURN_ROTATION_QUEUE", "  ")]);
        assert_eq!(
            Settings::from_env(&env).expect("valid").rotation_queue,
            "rotations"
        );
    }

    #[test]
    fn endpoint_settings_default_to_refusing_everyone() {
        let s = Settings::from_env(&with(&[])).expect("valid");
        assert!(s.endpoint.policies.is_empty());
        assert!(!s.endpoint.trust_arr_header);
        assert_eq!(s.endpoint.rate_limit_per_identity, 60);
        assert_eq!(s.endpoint.appsettings_prefix, DEFAULT_APPSETTINGS_PREFIX);
        assert!(s.endpoint.tls.is_none());
    }

    #[test]
    fn a_configured_policy_needs_its_material() {
        let env = with(&[(
            "KEYTURN_CERT_POLICIES",
            "chain, trusted-thumbprints,entra-device",
        )]);
        let named: Vec<String> = errors_for(&env).into_iter().map(|e| e.setting).collect();
        for expected in [
            "KEYTURN_CHAIN_ROOTS",
            "KEYTURN_TRUSTED_THUMBPRINTS",
            "KEYTURN_ENTRA_DEVICE_ROOTS",
        ] {
            assert!(
                named.iter().any(|n| n == expected),
                "{expected} in {named:?}"
            );
        }
    }

    #[test]
    fn malformed_endpoint_settings_are_each_reported() {
        let env = with(&[
            ("KEYTURN_CERT_POLICIES", "chain,pinning"),
            ("KEYTURN_TRUST_ARR_CLIENT_CERT", "yes"),
            ("KEYTURN_TRUSTED_THUMBPRINTS", "AB:CD"),
            ("KEYTURN_CLOCK_SKEW_SECONDS", "7200"),
            ("KEYTURN_RATE_LIMIT_PER_IDENTITY", "-1"),
            ("KEYTURN_SECRETS_TABLE", "no-dashes"),
            ("KEYTURN_TLS_ADDRESS", "0.0.0.0:8443"),
            ("KEYTURN_ENTRA_DEVICE_REQUIRE", "patched"),
            ("KEYTURN_CHAIN_REVOCATION", "ocsp"),
        ]);
        let named: Vec<String> = errors_for(&env).into_iter().map(|e| e.setting).collect();
        for expected in [
            "KEYTURN_CERT_POLICIES",
            "KEYTURN_TRUST_ARR_CLIENT_CERT",
            "KEYTURN_TRUSTED_THUMBPRINTS",
            "KEYTURN_CLOCK_SKEW_SECONDS",
            "KEYTURN_RATE_LIMIT_PER_IDENTITY",
            "KEYTURN_SECRETS_TABLE",
            "KEYTURN_TLS_ADDRESS",
            "KEYTURN_ENTRA_DEVICE_REQUIRE",
            "KEYTURN_CHAIN_REVOCATION",
        ] {
            assert!(
                named.iter().any(|n| n == expected),
                "{expected} in {named:?}"
            );
        }
    }

    #[test]
    fn a_complete_endpoint_configuration_parses() {
        let env = with(&[
            ("KEYTURN_CERT_POLICIES", "chain,entra-device"),
            ("KEYTURN_CHAIN_ROOTS", "/etc/keyturn/roots.pem"),
            ("KEYTURN_CHAIN_CRLS", "/a.crl, /b.crl"),
            ("KEYTURN_ENTRA_DEVICE_ROOTS", "/etc/keyturn/ms-org.pem"),
            ("KEYTURN_ENTRA_DEVICE_REQUIRE", "compliant"),
            ("KEYTURN_TLS_ADDRESS", "127.0.0.1:8443"),
            ("KEYTURN_TLS_CERT", "/tls/cert.pem"),
            ("KEYTURN_TLS_KEY", "/tls/key.pem"),
            ("KEYTURN_RATE_LIMIT_PER_ADDRESS", "0"),
        ]);
        let endpoint = Settings::from_env(&env).expect("valid").endpoint;
        let chain = endpoint.chain.expect("chain");
        assert_eq!(chain.crls.len(), 2);
        assert!(chain.check_revocation);
        let entra = endpoint.entra_device.expect("entra");
        assert!(entra.require_compliant && !entra.require_managed);
        assert_eq!(
            entra.clock_skew_seconds, 300,
            "the one clock-skew setting reaches entra-device too"
        );
        assert_eq!(endpoint.tls.expect("tls").address.port(), 8443);
        assert_eq!(endpoint.rate_limit_per_address, 0);
    }

    #[test]
    fn every_setting_documents_its_purpose_and_a_value_to_start_from() {
        for s in SETTINGS {
            assert!(!s.purpose.is_empty(), "{} has no purpose", s.name);
            let optional_identity_setting = s.example.is_empty() && s.required == Required::Never;
            assert!(
                !s.example.is_empty() || s.default.is_some() || optional_identity_setting,
                "{} has neither an example nor a default",
                s.name
            );
        }
    }
}
