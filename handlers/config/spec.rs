//! The list of settings: every app setting keyturn or its Functions host reads, with who
//! reads it, when it is required, its default and a working example.
//!
//! [`SETTINGS`] is the single list. `local.settings.sample.json`, the README table and the
//! Bicep app settings are all checked against it by tests, so a setting cannot be added in
//! one place and forgotten in another.

use serde::Serialize;

use crate::domain::function::Function;

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
pub const ROTATION_FUNCTIONS: [Function; 7] = Function::ROTATION;

/// Every function keyturn serves, as named in `function-definitions/`.
pub const FUNCTIONS: [Function; 8] = Function::ALL;

/// Every six hours, on the hour. Key Vault raises NearExpiry 30 days ahead, so a sweep
/// four times a day catches anything events missed with weeks to spare, while staying
/// far below Key Vault's list-operation throttling limits.
pub const DEFAULT_SWEEP_SCHEDULE: &str = "0 0 */6 * * *";
pub const DEFAULT_ROTATION_QUEUE: &str = "rotations";
/// Every six hours, at half past: a discovery sweep reads the whole tenant (metadata
/// only), offset from the expiry sweep so the two do not start together.
pub const DEFAULT_DISCOVERY_SCHEDULE: &str = "0 30 */6 * * *";
pub const DEFAULT_DISCOVERY_QUEUE: &str = "discovery";
/// Monthly, at 03:00 UTC on the first: the previous calendar month is over, and its last
/// audit entries have had three hours to be anchored by a checkpoint.
pub const DEFAULT_EVIDENCE_SCHEDULE: &str = "0 0 3 1 * *";
/// Daily at 08:00 UTC: an hour and a half after the 06:30 discovery sweep starts, so its
/// jobs have refreshed the inventory the alerts are read from.
pub const DEFAULT_ALERT_SCHEDULE: &str = "0 0 8 * * *";
pub const DEFAULT_ALERT_TABLE: &str = "keyturnalerts";
pub const DEFAULT_AUDIT_TABLE: &str = "keyturnaudit";
pub const DEFAULT_INVENTORY_TABLE: &str = "keyturninventory";
pub const DEFAULT_DATA_DIR: &str = ".keyturn";
/// Shortest accepted app-settings prefix: long enough to be a namespace of its own.
pub const MIN_APPSETTINGS_PREFIX_LEN: usize = 8;

/// Setting-name prefixes the platform reserves for its own settings, many of them
/// secret-bearing: App Service's connection strings (`CUSTOMCONNSTR_`, `SQLCONNSTR_`,
/// ...), its mirrored app settings (`APPSETTING_`), the site's and the Functions host's
/// settings (`WEBSITE_`, `WEBSITES_`, `FUNCTIONS_`, `AzureWebJobs`, with the storage
/// connection string), monitoring keys (`APPINSIGHTS_`, `APPLICATIONINSIGHTS_`),
/// authentication secrets (`MICROSOFT_PROVIDER_`), registry credentials
/// (`DOCKER_REGISTRY_`), the container platform's (`CONTAINER_`), the managed identity
/// endpoint's header (`IDENTITY_`, `MSI_`) and the Azure SDKs' credentials (`AZURE_`).
/// The app-settings backend's prefix is accepted only if none of these overlaps it
/// (neither is a prefix of the other, compared without case): an allow-list rule, not a
/// list of names to avoid. keyturn's own settings are reserved by name ([`SETTINGS`]).
pub const PLATFORM_SETTING_PREFIXES: [&str; 18] = [
    "CUSTOMCONNSTR_",
    "SQLAZURECONNSTR_",
    "SQLCONNSTR_",
    "MYSQLCONNSTR_",
    "POSTGRESQLCONNSTR_",
    "APPSETTING_",
    "WEBSITE_",
    "WEBSITES_",
    "APPINSIGHTS_",
    "APPLICATIONINSIGHTS_",
    "MICROSOFT_PROVIDER_",
    "DOCKER_REGISTRY_",
    "CONTAINER_",
    "AzureWebJobs",
    "FUNCTIONS_",
    "IDENTITY_",
    "MSI_",
    "AZURE_",
];

/// The app-settings backend's prefix when none is set.
pub const DEFAULT_APPSETTINGS_PREFIX: &str = "KEYTURN_SECRET_";
/// Entra's and Microsoft Graph's public-cloud hosts.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";
/// Five minutes between checks of the endpoint's front end: a changed client-certificate
/// setting is noticed within minutes, at 288 Resource Manager reads a day per instance,
/// far below its read throttling limits.
pub const DEFAULT_FRONT_END_CHECK_SECONDS: &str = "300";
/// Ninety days: the lifetime Microsoft's portal suggests for new client secrets and a
/// common compliance ceiling for shared secrets.
pub const DEFAULT_VALIDITY_DAYS: &str = "90";
/// Thirty days: Key Vault raises `NearExpiry` thirty days ahead, so events and policy agree.
pub const DEFAULT_ROTATE_BEFORE_DAYS: &str = "30";
/// Seven days: long enough for every consumer to pick up the new version (a weekly
/// restart, a daily cache refresh), well inside the thirty-day rotate-before window.
pub const DEFAULT_OVERLAP_DAYS: &str = "7";
/// A new application secret is promoted once the token endpoint accepted it three times in
/// a row across a minute: Entra propagates a secret over minutes and intermittently, so
/// one acceptance may come from the one replica that has it.
pub const DEFAULT_PROOF_SUCCESSES: &str = "3";
pub const DEFAULT_PROOF_WINDOW_SECONDS: &str = "60";
/// An hour: field reports put propagation at 2 to over 10 minutes; six times the slowest.
pub const DEFAULT_PROOF_DEADLINE_MINUTES: &str = "60";
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
        name: "KEYTURN_RESOURCE_MANAGER_ENDPOINT",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "https://management.azure.com",
        secret: false,
        purpose: "Azure Resource Manager, where the endpoint reads its own site's client-certificate \
                  settings before it believes X-ARR-ClientCert. Default: the Resource Manager of \
                  the cloud KEYTURN_AUTHORITY_HOST names (https://management.azure.com, \
                  https://management.usgovcloudapi.net, https://management.chinacloudapi.cn).",
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
        name: "KEYTURN_ALLOW_ANY_VAULT_HOST",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("false"),
        example: "false",
        secret: false,
        purpose: "Tests only: true lets KEYTURN_VAULTS and KEYTURN_SECRETS_VAULT name any https \
                  host (an HTTPS stand-in on loopback), and `keyturn audit verify` accept such a \
                  stand-in's Key Vault challenge for KEYTURN_AUDIT_SIGNING_KEY. Otherwise a vault URL must be a Key Vault \
                  host of the cloud KEYTURN_AUTHORITY_HOST names, so Key Vault tokens go nowhere else.",
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
        name: "KEYTURN_DISCOVERY_SCHEDULE",
        read_by: ReadBy::Both,
        required: Required::Never,
        default: Some(DEFAULT_DISCOVERY_SCHEDULE),
        example: DEFAULT_DISCOVERY_SCHEDULE,
        secret: false,
        purpose: "Six-field NCRONTAB schedule (UTC) of the DiscoverySweep timer, which starts a \
                  metadata-only sweep of the tenant into the inventory.",
    },
    SettingSpec {
        name: "KEYTURN_EVIDENCE_SCHEDULE",
        read_by: ReadBy::Both,
        required: Required::Never,
        default: Some(DEFAULT_EVIDENCE_SCHEDULE),
        example: DEFAULT_EVIDENCE_SCHEDULE,
        secret: false,
        purpose: "Six-field NCRONTAB schedule (UTC) of the EvidenceExport timer, which exports the \
                  previous calendar month's evidence package into the audit checkpoint container \
                  (evidence/<yyyy-mm>/), once per month whatever the number of runs.",
    },
    SettingSpec {
        name: "KEYTURN_DISCOVERY_KEYVAULT_BUDGET",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("2000"),
        example: "2000",
        secret: false,
        purpose: "Requests discovery may send to each Key Vault per 10 seconds (1-4000): half of \
                  Key Vault's limit by default, leaving the rest to the applications that read the vault.",
    },
    SettingSpec {
        name: "KEYTURN_DISCOVERY_GRAPH_BUDGET",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("500"),
        example: "500",
        secret: false,
        purpose: "Requests discovery may send to Microsoft Graph per 10 seconds, per instance \
                  (1-4000): a quarter of Graph's identity limit by default.",
    },
    SettingSpec {
        name: "KEYTURN_DISCOVERY_RESOURCE_MANAGER_BUDGET",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("100"),
        example: "100",
        secret: false,
        purpose: "Requests discovery may send to Azure Resource Manager per 10 seconds, per \
                  instance (1-250).",
    },
    SettingSpec {
        name: "KEYTURN_DISCOVERY_SUBSCRIPTIONS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "Comma-separated subscription ids whose Key Vaults discovery inventories; empty \
                  or absent: every subscription the identity can see. One named but not visible \
                  becomes a finding on that subscription and the sweep goes on. The Bicep sets it \
                  from discoverySubscriptions.",
    },
    SettingSpec {
        name: "KEYTURN_DISCOVERY_QUEUE",
        read_by: ReadBy::Both,
        required: Required::Never,
        default: Some(DEFAULT_DISCOVERY_QUEUE),
        example: DEFAULT_DISCOVERY_QUEUE,
        secret: false,
        purpose: "Service Bus queue (sessions and duplicate detection enabled) carrying discovery \
                  jobs to DiscoveryWorker.",
    },
    SettingSpec {
        name: "KEYTURN_ALERT_SCHEDULE",
        read_by: ReadBy::Both,
        required: Required::Never,
        default: Some(DEFAULT_ALERT_SCHEDULE),
        example: DEFAULT_ALERT_SCHEDULE,
        secret: false,
        purpose: "Six-field NCRONTAB schedule (UTC) of the AlertSweep timer, which alerts \
                  credentials past a threshold from the inventory, sends the digest when its \
                  period is due and forgets old ledger entries. Leave time after the discovery \
                  sweep for its jobs to finish.",
    },
    SettingSpec {
        name: "KEYTURN_ALERT_THRESHOLDS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(crate::alerts::thresholds::DEFAULT_THRESHOLDS),
        example: crate::alerts::thresholds::DEFAULT_THRESHOLDS,
        secret: false,
        purpose: "Days before expiry at which a credential is alerted, comma separated (0: on \
                  expiry; 0 to 3650). One alert per credential per threshold per route.",
    },
    SettingSpec {
        name: "KEYTURN_ALERT_ROUTES",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "ops=teams:alerts-teams-ops;owners=mail",
        secret: false,
        purpose: "The alert channels, name=kind[:secret] separated by ';': teams, slack and \
                  cloudevents name the Key Vault (or local vault) secret holding the webhook's \
                  URL, never the URL; mail sends through Graph from KEYTURN_ALERT_MAILBOX. \
                  Unset: no alert is sent.",
    },
    SettingSpec {
        name: "KEYTURN_ALERT_DEFAULT_ROUTE",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "ops",
        secret: false,
        purpose: "The route (one of KEYTURN_ALERT_ROUTES) carrying alerts that no owner or \
                  keyturn-owner tag routes, and the digest.",
    },
    SettingSpec {
        name: "KEYTURN_ALERT_VAULT",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "https://kv-keyturn-dev.vault.azure.net/",
        secret: false,
        purpose: "The Key Vault holding the webhook routes' URLs as secrets \
                  (https://<vault>.vault.azure.net/), read with keyturn's identity at each \
                  AlertSweep run. Required when a route is a webhook, except on the local \
                  backend, whose vault holds them.",
    },
    SettingSpec {
        name: "KEYTURN_ALERT_MAILBOX",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "keyturn-alerts@contoso.com",
        secret: false,
        purpose: "The mailbox a mail route sends from (Graph sendMail, Mail.Send restricted to \
                  this mailbox). Required when a route is mail.",
    },
    SettingSpec {
        name: "KEYTURN_ALERT_DIGEST_DAYS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("7"),
        example: "7",
        secret: false,
        purpose: "Days between digests to the default route (1-366); one per period, \
                  whatever the number of instances.",
    },
    SettingSpec {
        name: "KEYTURN_ALERT_DIGEST_HORIZON_DAYS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("30"),
        example: "30",
        secret: false,
        purpose: "The digest lists what expires within this many days (1-3650).",
    },
    SettingSpec {
        name: "KEYTURN_ALERT_TABLE",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_ALERT_TABLE),
        example: DEFAULT_ALERT_TABLE,
        secret: false,
        purpose: "Table name of the alert ledger (what was sent to which route), in the audit \
                  log's storage account (letters and digits, 3-63 characters).",
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
        name: "KEYTURN_PROOF_SUCCESSES",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_PROOF_SUCCESSES),
        example: DEFAULT_PROOF_SUCCESSES,
        secret: false,
        purpose: "Times in a row the token endpoint must accept a new App Registration secret \
                  before it becomes the managed secret's value (1 to 100), for objects without \
                  a keyturn-proof-successes tag.",
    },
    SettingSpec {
        name: "KEYTURN_PROOF_WINDOW_SECONDS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_PROOF_WINDOW_SECONDS),
        example: DEFAULT_PROOF_WINDOW_SECONDS,
        secret: false,
        purpose: "Least seconds those acceptances must span (0 to 86400), for objects without \
                  a keyturn-proof-window-seconds tag.",
    },
    SettingSpec {
        name: "KEYTURN_PROOF_DEADLINE_MINUTES",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_PROOF_DEADLINE_MINUTES),
        example: DEFAULT_PROOF_DEADLINE_MINUTES,
        secret: false,
        purpose: "Minutes after adding a new App Registration secret at which keyturn gives up \
                  an unproven one, removes it and records the rotation as failed (1 to 1440), \
                  for objects without a keyturn-proof-deadline-minutes tag.",
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
        name: "KEYTURN_INVENTORY_TABLE",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_INVENTORY_TABLE),
        example: DEFAULT_INVENTORY_TABLE,
        secret: false,
        purpose: "Table name of the inventory discovery writes (credentials, vaults, findings, \
                  sweep snapshots), in the audit log's storage account (letters and digits, \
                  3-63 characters).",
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
        name: "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "Blob service endpoint of the audit log's signed checkpoints \
                  (https://<account>.blob.core.windows.net), used with keyturn's identity. With \
                  KEYTURN_AUDIT_SIGNING_KEY, every table-store writer anchors its chain there; \
                  set both or neither.",
    },
    SettingSpec {
        name: "KEYTURN_AUDIT_CHECKPOINT_CONTAINER",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(super::audit::DEFAULT_CHECKPOINT_CONTAINER),
        example: super::audit::DEFAULT_CHECKPOINT_CONTAINER,
        secret: false,
        purpose: "Blob container of the audit checkpoints, under a time-based retention policy \
                  that allows protected append writes (the deployment creates it).",
    },
    SettingSpec {
        name: "KEYTURN_AUDIT_SIGNING_KEY",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "URL of the Key Vault EC P-256 key that signs the audit checkpoints (ES256) \
                  through Key Vault's sign operation (https://<vault>.vault.azure.net/keys/<name>, \
                  with or without a version). keyturn's identity needs only its sign and read \
                  data actions.",
    },
    SettingSpec {
        name: "KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: None,
        example: "",
        secret: false,
        purpose: "The compliance exceptions register (JSON, as `keyturn compliance --exceptions` \
                  reads it) as CONTAINER/NAME in the Blob service of \
                  KEYTURN_AUDIT_CHECKPOINT_ENDPOINT: EvidenceExport and `keyturn evidence export` \
                  against Azure read it with their identity (read only). Unset: no register, \
                  nothing is excepted; set, a register that cannot be read or is malformed \
                  fails the export, naming the blob.",
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
        name: "KEYTURN_FRONT_END_CHECK_SECONDS",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some(DEFAULT_FRONT_END_CHECK_SECONDS),
        example: DEFAULT_FRONT_END_CHECK_SECONDS,
        secret: false,
        purpose: "With KEYTURN_TRUST_ARR_CLIENT_CERT=true: seconds between checks of the site's \
                  own front end (client certificates required, no exclusion path over \
                  /api/secrets). Until a check passes, and after one fails, the endpoint answers \
                  503; while closed it checks again after at most 60 seconds. 1 to 86400.",
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
        // A path, but a key pasted here by mistake would be one: never echoed.
        secret: true,
        purpose: "PEM private key file of the TLS listener (a path; the key itself never goes \
                  in a setting, and the value is never echoed in case it was pasted here).",
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
                  (field reports: 2 to over 10 minutes). 0-600.",
    },
    SettingSpec {
        name: "KEYTURN_LOCAL_FLAPPING",
        read_by: ReadBy::Keyturn,
        required: Required::Never,
        default: Some("false"),
        example: "false",
        secret: false,
        purpose: "Local mode only: true makes a propagated application secret's first token \
                  requests flap (accepted, refused, accepted), as Entra's replicas catching up \
                  one by one do, so the staged proof can be watched resetting its count.",
    },
];

/// The spec of a setting by name.
pub fn spec(name: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

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
