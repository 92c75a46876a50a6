//! The host section: which functions this app serves, which backend its ports use, the
//! log filter, and whether the handler follows the process that started it.

use serde::Serialize;

use super::{Collector, FUNCTIONS, parse_bool};
use crate::domain::function::Function;

/// Which adapters the ports get: Azure services, or the embedded store of local mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Azure,
    Local,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostSettings {
    pub log_level: String,
    pub backend: Backend,
    /// Functions this app serves (all of them unless disabled by `AzureWebJobs.<Name>.Disabled`).
    pub enabled_functions: Vec<Function>,
    /// `KEYTURN_EXIT_WITH_PARENT`: stop when the process that started this one is gone.
    pub exit_with_parent: bool,
}

impl HostSettings {
    /// Whether any function that rotates is served.
    pub(crate) fn rotation_enabled(&self) -> bool {
        self.enabled_functions.iter().any(|f| f.rotates())
    }
}

pub(super) fn parse(c: &mut Collector<'_>) -> HostSettings {
    let enabled_functions: Vec<Function> = FUNCTIONS
        .into_iter()
        .filter(|f| !c.env.function_disabled(*f))
        .collect();
    let backend = c
        .parse("KEYTURN_BACKEND", |v| match v {
            "azure" => Ok(Backend::Azure),
            "local" => Ok(Backend::Local),
            other => Err(format!(
                "unknown backend `{other}`; expected azure or local"
            )),
        })
        .unwrap_or(Backend::Azure);
    let log_level = parse_log_level(c, "info");
    let exit_with_parent = c
        .parse("KEYTURN_EXIT_WITH_PARENT", parse_bool)
        .unwrap_or(false);
    HostSettings {
        log_level,
        backend,
        enabled_functions,
        exit_with_parent,
    }
}

/// `KEYTURN_LOG_LEVEL`, or `default` when it is unset.
pub(super) fn parse_log_level(c: &mut Collector<'_>, default: &str) -> String {
    let Some(v) = c.env.value("KEYTURN_LOG_LEVEL") else {
        return default.to_string();
    };
    match tracing_subscriber::EnvFilter::try_new(v) {
        Ok(_) => v.to_string(),
        Err(e) => {
            c.fail(
                "KEYTURN_LOG_LEVEL",
                format!("not a log level or filter directive ({e})"),
            );
            default.to_string()
        }
    }
}
