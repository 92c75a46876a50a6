//! Settings: every app setting keyturn or its Functions host reads, parsed once into
//! domain types, section by section.
//!
//! Each section (host, credentials, rotation, audit, endpoint, local) parses its own
//! settings; [`Settings::from_env`] runs them all and reports every problem at once. A
//! command that needs one section parses only that one ([`AuditCommandSettings`]), so
//! `keyturn audit verify` asks for nothing rotation needs. Nothing outside this module
//! reads a setting from the environment.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::domain::function::Function;

mod alerts;
mod audit;
mod credentials;
mod endpoint;
mod host;
mod local;
mod rotation;
mod spec;

pub use alerts::{AlertConfig, MAX_DIGEST_DAYS};
pub(crate) use audit::{AuditSettings, CheckpointSettings, STORE_FILE, TableAccess};
pub use audit::{BlobPath, EXCEPTIONS_BLOB_SETTING};
pub use credentials::{CredentialKind, CredentialSettings};
pub(crate) use credentials::{EntraSettings, VaultHosts};
pub(crate) use endpoint::{CertPolicyName, EndpointSettings};
pub(crate) use host::{Backend, HostSettings};
pub(crate) use local::{LOCAL_VAULT_URL, LocalSettings, local_vault_url};
pub use rotation::RotationDefaults;
pub(crate) use rotation::RotationSettings;
pub use spec::{
    DEFAULT_ALERT_SCHEDULE, DEFAULT_ALERT_TABLE, DEFAULT_APPSETTINGS_PREFIX, DEFAULT_AUDIT_TABLE,
    DEFAULT_AUTHORITY_HOST, DEFAULT_DATA_DIR, DEFAULT_DISCOVERY_QUEUE, DEFAULT_DISCOVERY_SCHEDULE,
    DEFAULT_EVIDENCE_SCHEDULE, DEFAULT_FRONT_END_CHECK_SECONDS, DEFAULT_GRAPH_ENDPOINT,
    DEFAULT_INVENTORY_TABLE, DEFAULT_OVERLAP_DAYS, DEFAULT_ROTATE_BEFORE_DAYS,
    DEFAULT_ROTATION_QUEUE, DEFAULT_SWEEP_SCHEDULE, DEFAULT_VALIDITY_DAYS, FUNCTIONS,
    MAX_POLICY_DAYS, MIN_APPSETTINGS_PREFIX_LEN, PLATFORM_SETTING_PREFIXES, ROTATION_FUNCTIONS,
    ReadBy, Required, SETTINGS, SettingSpec, spec,
};

/// The validated configuration of one keyturn process. Serialised (by `keyturn config
/// check`) with the sections flattened, as one flat object of effective values.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    #[serde(flatten)]
    pub host: HostSettings,
    pub credential: CredentialSettings,
    pub entra: EntraSettings,
    #[serde(flatten)]
    pub rotation: RotationSettings,
    pub audit: AuditSettings,
    #[serde(flatten)]
    pub local: LocalSettings,
    /// The SecretEndpoint's settings.
    pub endpoint: EndpointSettings,
    /// What `AlertSweep` sends, where and when.
    #[serde(flatten)]
    pub alerts: AlertConfig,
}

impl Settings {
    /// Parses every setting, reporting all problems at once.
    pub fn from_env(env: &Environment) -> Result<Self, ConfigError> {
        let mut c = Collector::new(env);
        let host = host::parse(&mut c);
        required(&mut c, &host);
        let credential = credentials::parse_credential(&mut c);
        let entra = credentials::parse_entra(&mut c);
        let vault_hosts = credentials::parse_vault_hosts(&mut c, &entra);
        let rotation = rotation::parse(&mut c, &vault_hosts);
        let local = local::parse(&mut c);
        let audit = audit::parse(&mut c, &local.data_dir);
        let endpoint = endpoint::parse(&mut c, &vault_hosts);
        let alerts = alerts::parse(&mut c, &vault_hosts, host.backend == Backend::Local);
        if endpoint.trust_arr_header && entra.resource_manager_endpoint.is_none() {
            c.fail(
                "KEYTURN_RESOURCE_MANAGER_ENDPOINT",
                "missing; KEYTURN_TRUST_ARR_CLIENT_CERT=true needs it to check the front end, and \
                 KEYTURN_AUTHORITY_HOST names no cloud it could be derived from",
            );
        }
        match (c.errors.is_empty(), rotation, audit, alerts) {
            (true, Some(rotation), Some(audit), Some(alerts)) => Ok(Settings {
                host,
                credential,
                entra,
                rotation,
                audit,
                local,
                endpoint,
                alerts,
            }),
            _ => Err(c.finish()),
        }
    }

    /// Whether any function that rotates is served.
    pub(crate) fn rotation_enabled(&self) -> bool {
        self.host.rotation_enabled()
    }
}

/// What `keyturn audit verify` needs: where the audit log is and how keyturn
/// authenticates to it. Nothing else is read, so nothing else is required.
#[derive(Debug, Clone, Serialize)]
pub struct AuditCommandSettings {
    pub credential: CredentialSettings,
    pub audit: AuditSettings,
    /// `KEYTURN_ALLOW_ANY_VAULT_HOST=true`: the signing key's vault is a loopback
    /// stand-in, whose Key Vault challenge names no vault domain of its host.
    pub any_vault_host: bool,
}

impl AuditCommandSettings {
    /// The audit log is the local store's, or the table's when the settings name one:
    /// with neither `KEYTURN_AUDIT_STORE` nor a way to a table set, it is the SQLite
    /// store in the data directory, so `keyturn audit verify` needs nothing else there.
    pub fn from_env(env: &Environment) -> Result<Self, ConfigError> {
        let mut c = Collector::new(env);
        let credential = credentials::parse_credential(&mut c);
        let any_vault_host = c
            .parse("KEYTURN_ALLOW_ANY_VAULT_HOST", parse_bool)
            .unwrap_or(false);
        let data_dir = local::parse_data_dir(&mut c);
        let names_a_table = [
            "KEYTURN_AUDIT_STORE",
            "KEYTURN_TABLE_ENDPOINT",
            "KEYTURN_TABLE_CONNECTION_STRING",
        ]
        .iter()
        .any(|name| env.value(name).is_some());
        let audit = if names_a_table {
            audit::parse(&mut c, &data_dir)
        } else {
            Some(AuditSettings::Sqlite {
                path: data_dir.join(STORE_FILE),
            })
        };
        match (c.errors.is_empty(), audit) {
            (true, Some(audit)) => Ok(Self {
                credential,
                audit,
                any_vault_host,
            }),
            _ => Err(c.finish()),
        }
    }
}

impl AuditCommandSettings {
    /// The SQLite store in `data_dir`, with no other setting read.
    pub fn local(data_dir: &std::path::Path) -> Self {
        let nothing = Environment::from_pairs(std::iter::empty::<(&str, &str)>());
        Self {
            credential: credentials::parse_credential(&mut Collector::new(&nothing)),
            audit: AuditSettings::Sqlite {
                path: data_dir.join(STORE_FILE),
            },
            any_vault_host: false,
        }
    }
}

/// What `keyturn plan` needs to read Azure: the vaults (`KEYTURN_VAULTS` and any given on
/// the command line), Graph's endpoint and the policy for untagged objects. Nothing about
/// keyturn's own identity, queue or audit log is read: the operator plans with their own
/// sign-in.
#[derive(Debug, Clone, Serialize)]
pub struct PlanSettings {
    pub vaults: Vec<crate::domain::names::VaultUrl>,
    pub graph_endpoint: url::Url,
    /// `KEYTURN_ALLOW_ANY_VAULT_HOST=true`: the vaults are loopback stand-ins.
    pub any_vault_host: bool,
    pub defaults: RotationDefaults,
}

impl PlanSettings {
    /// The settings, with `vaults` from the command line before `KEYTURN_VAULTS`' (each
    /// checked by the same host rules).
    pub fn from_env(env: &Environment, vaults: &[String]) -> Result<Self, ConfigError> {
        let mut c = Collector::new(env);
        let entra = credentials::parse_entra(&mut c);
        let hosts = credentials::parse_vault_hosts(&mut c, &entra);
        let mut urls = Vec::new();
        for text in vaults {
            match hosts.parse(text) {
                Ok(url) => urls.push(url),
                Err(problem) => c.fail("--vault", format!("`{text}`: {problem}")),
            }
        }
        let configured = c
            .parse("KEYTURN_VAULTS", |v| {
                list(v)
                    .iter()
                    .map(|s| hosts.parse(s).map_err(|e| format!("`{s}`: {e}")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap_or_default();
        for url in configured {
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        let defaults = rotation::parse_defaults(&mut c);
        if urls.is_empty() && c.errors.is_empty() {
            c.fail(
                "KEYTURN_VAULTS",
                "missing; name the vaults to plan with --vault https://<vault>.vault.azure.net/ or KEYTURN_VAULTS",
            );
        }
        match defaults {
            Some(defaults) if c.errors.is_empty() => Ok(Self {
                vaults: urls,
                graph_endpoint: entra.graph_endpoint,
                any_vault_host: hosts == VaultHosts::Any,
                defaults,
            }),
            _ => Err(c.finish()),
        }
    }
}

/// Reports every setting the served functions need and nobody set.
fn required(c: &mut Collector<'_>, host: &HostSettings) {
    let rotation_enabled = host.rotation_enabled();
    let local_backend = host.backend == Backend::Local;
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
            && c.env.value(s.name).is_none()
            && s.default.is_none()
        {
            let why = match s.required {
                Required::ByRotation | Required::ByAzureRotation => {
                    "missing; required while KeyVaultEvents, ExpirySweep, RotationWorker, DiscoverySweep, \
                     DiscoveryWorker, AlertSweep or EvidenceExport is enabled"
                }
                _ => "missing",
            };
            c.fail(s.name, why);
        }
    }
}

/// One problem with one setting. The problem never quotes a value that may be secret.
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

    /// This environment with `overrides` set on top.
    pub fn with(&self, overrides: &[(String, String)]) -> Self {
        let mut all = self.0.clone();
        all.extend(overrides.iter().cloned());
        Self(all)
    }

    /// A setting's value, trimmed; empty counts as unset (App Service cannot delete a
    /// setting from a slot swap, so an emptied one must mean "not set").
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// Every setting whose name starts with `prefix` (without ASCII case), untrimmed:
    /// what the app-settings secret source serves.
    pub(crate) fn prefixed<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0.iter().filter_map(move |(name, value)| {
            let head = name.get(..prefix.len())?;
            head.eq_ignore_ascii_case(prefix)
                .then_some((name.as_str(), value.as_str()))
        })
    }

    /// Whether the host was told to disable a function. The host checks
    /// `AzureWebJobs.<F>.Disabled` and, because Linux turns the dots of setting names into
    /// underscores in the environment, `AzureWebJobs_<F>_Disabled`: keyturn reads the same two.
    pub(crate) fn function_disabled(&self, function: Function) -> bool {
        self.disabled_by_name(function.name())
    }

    /// [`Environment::function_disabled`] for a function folder by name, as the host
    /// reads it (`keyturn dev` plays the host over whatever folders exist).
    pub(crate) fn disabled_by_name(&self, function: &str) -> bool {
        [
            format!("AzureWebJobs.{function}.Disabled"),
            format!("AzureWebJobs_{function}_Disabled"),
        ]
        .iter()
        .filter_map(|k| self.value(k))
        .any(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }

    /// The log filter a command that does not parse every setting runs with:
    /// `KEYTURN_LOG_LEVEL` when it is a valid filter, otherwise `default`.
    pub fn log_level_or(&self, default: &str) -> Result<String, ConfigError> {
        let mut c = Collector::new(self);
        let level = host::parse_log_level(&mut c, default);
        if c.errors.is_empty() {
            Ok(level)
        } else {
            Err(c.finish())
        }
    }

    /// The rotation policy for untagged objects (`KEYTURN_DEFAULT_*`, `KEYTURN_PROOF_*`),
    /// checked, for the commands that plan without starting the app (`keyturn plan`).
    pub fn rotation_defaults(&self) -> Result<RotationDefaults, ConfigError> {
        let mut c = Collector::new(self);
        let defaults = rotation::parse_defaults(&mut c);
        match defaults {
            Some(defaults) if c.errors.is_empty() => Ok(defaults),
            _ => Err(c.finish()),
        }
    }

    /// The `KEYTURN_LOCAL_VAULT_KEY` setting, checked, for the local vault commands.
    pub fn local_vault_key(
        &self,
    ) -> Result<Option<crate::domain::secret::SecretValue>, ConfigError> {
        let mut c = Collector::new(self);
        let key = local::parse_vault_key(&mut c);
        if c.errors.is_empty() {
            Ok(key)
        } else {
            Err(c.finish())
        }
    }
}

/// Gathers problems while the sections parse.
struct Collector<'e> {
    env: &'e Environment,
    errors: Vec<SettingError>,
}

impl<'e> Collector<'e> {
    fn new(env: &'e Environment) -> Self {
        Self {
            env,
            errors: Vec::new(),
        }
    }

    fn finish(self) -> ConfigError {
        ConfigError {
            errors: self.errors,
        }
    }

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

/// A comma-separated list, items trimmed, empty items dropped.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
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

/// Whether a value that should name a file looks like secret material pasted in its
/// place (a PEM block, a key, a connection string): such a value is never echoed.
pub fn looks_like_secret_material(value: &str) -> bool {
    const MARKERS: [&str; 5] = [
        "-----BEGIN",
        "PRIVATE KEY",
        "AccountKey=",
        "SharedAccessKey",
        "SharedAccessSignature",
    ];
    value.contains(['\n', '\r']) || MARKERS.iter().any(|m| value.contains(m))
}

fn display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn redacted<T, S: serde::Serializer>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[redacted]")
}

#[cfg(test)]
mod tests;
