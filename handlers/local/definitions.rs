//! Reads `host.json` and `function-definitions/` the way the Functions host does, resolving
//! `%SETTING%` binding expressions from the app settings, so local mode runs exactly what
//! deploys.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::Environment;
use crate::domain::ncrontab::Schedule;

/// Definition files larger than this are not definitions.
const MAX_DEFINITION_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    #[error("cannot read {path}: {problem}")]
    Read { path: PathBuf, problem: String },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("{path}: binding expression %{setting}% names a setting that is not set")]
    UnresolvedSetting { path: PathBuf, setting: String },
}

/// How the host starts the handler (`customHandler.description`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerCommand {
    pub executable: String,
    pub arguments: Vec<String>,
    pub forward_http: bool,
}

/// A function's trigger, with binding expressions resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    EventGrid,
    Timer {
        schedule: Schedule,
        run_on_startup: bool,
    },
    ServiceBus {
        queue: String,
        sessions: bool,
    },
    Http {
        route: String,
        methods: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDefinition {
    pub name: String,
    /// The trigger binding's name: the key of its value in the invocation's `Data`.
    pub binding: String,
    pub trigger: Trigger,
}

/// Everything local mode needs from the app's definition files.
#[derive(Debug, Clone)]
pub struct AppDefinition {
    pub handler: HandlerCommand,
    pub functions: Vec<FunctionDefinition>,
}

impl AppDefinition {
    /// Reads `root/host.json` and `root/function-definitions/*/function.json`, resolving
    /// `%SETTING%` from `env`. Functions disabled by `AzureWebJobs.<F>.Disabled` are left out.
    pub fn load(root: &Path, env: &Environment) -> Result<Self, DefinitionError> {
        let host_path = root.join("host.json");
        let host = read_json(&host_path)?;
        let invalid = |problem: &str| DefinitionError::Invalid {
            path: host_path.clone(),
            problem: problem.to_string(),
        };
        let description = host
            .pointer("/customHandler/description")
            .ok_or_else(|| invalid("customHandler.description is missing"))?;
        let executable = description
            .get("defaultExecutablePath")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("defaultExecutablePath is missing"))?
            .to_string();
        let arguments = match description.get("arguments") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|a| {
                    a.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| invalid("arguments must be strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("arguments must be an array")),
        };
        let forward_http = host
            .pointer("/customHandler/enableForwardingHttpRequest")
            .and_then(Value::as_bool)
            .unwrap_or(false);

        let definitions = root.join("function-definitions");
        let mut functions = Vec::new();
        let entries = fs::read_dir(&definitions).map_err(|e| DefinitionError::Read {
            path: definitions.clone(),
            problem: e.to_string(),
        })?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            if env.disabled_by_name(&name) {
                continue;
            }
            let path = definitions.join(&name).join("function.json");
            functions.push(function(&name, &path, env)?);
        }
        Ok(Self {
            handler: HandlerCommand {
                executable,
                arguments,
                forward_http,
            },
            functions,
        })
    }

    pub fn function(&self, name: &str) -> Option<&FunctionDefinition> {
        self.functions.iter().find(|f| f.name == name)
    }
}

fn function(
    name: &str,
    path: &Path,
    env: &Environment,
) -> Result<FunctionDefinition, DefinitionError> {
    let definition = read_json(path)?;
    let invalid = |problem: String| DefinitionError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    let bindings = definition
        .get("bindings")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("has no bindings array".into()))?;
    let trigger = bindings
        .iter()
        .find(|b| {
            b.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("Trigger"))
        })
        .ok_or_else(|| invalid("has no trigger binding".into()))?;
    let text = |key: &str| -> Result<String, DefinitionError> {
        let raw = trigger
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("trigger has no `{key}`")))?;
        resolve(raw, env, path)
    };
    let binding = text("name")?;
    let kind = text("type")?;
    let trigger = match kind.as_str() {
        "eventGridTrigger" => Trigger::EventGrid,
        "timerTrigger" => {
            let expression = text("schedule")?;
            let schedule =
                Schedule::parse(&expression).map_err(|e| invalid(format!("schedule: {e}")))?;
            let run_on_startup = trigger
                .get("runOnStartup")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Trigger::Timer {
                schedule,
                run_on_startup,
            }
        }
        "serviceBusTrigger" => Trigger::ServiceBus {
            queue: text("queueName")?,
            sessions: trigger
                .get("isSessionsEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        "httpTrigger" => Trigger::Http {
            route: text("route")?,
            methods: trigger
                .get("methods")
                .and_then(Value::as_array)
                .map(|m| {
                    m.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_ascii_uppercase)
                        .collect()
                })
                .unwrap_or_default(),
        },
        other => {
            return Err(invalid(format!(
                "trigger type `{other}` is not one local mode plays"
            )));
        }
    };
    Ok(FunctionDefinition {
        name: name.to_string(),
        binding,
        trigger,
    })
}

/// Resolves `%NAME%` binding expressions the way the host does: the whole `%...%` is
/// replaced by the app setting's value; an unset setting is an error, not an empty string.
pub(crate) fn resolve(
    raw: &str,
    env: &Environment,
    path: &Path,
) -> Result<String, DefinitionError> {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            return Err(DefinitionError::Invalid {
                path: path.to_path_buf(),
                problem: format!("unterminated binding expression in `{raw}`"),
            });
        };
        let setting = &after[..end];
        let value = env
            .value(setting)
            .map(str::to_string)
            .or_else(|| {
                crate::config::spec(setting)
                    .and_then(|s| s.default)
                    .map(str::to_string)
            })
            .ok_or_else(|| DefinitionError::UnresolvedSetting {
                path: path.to_path_buf(),
                setting: setting.to_string(),
            })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn read_json(path: &Path) -> Result<Value, DefinitionError> {
    let read_err = |problem: String| DefinitionError::Read {
        path: path.to_path_buf(),
        problem,
    };
    let metadata = fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
    if metadata.len() > MAX_DEFINITION_BYTES {
        return Err(DefinitionError::Invalid {
            path: path.to_path_buf(),
            problem: format!("larger than {MAX_DEFINITION_BYTES} bytes"),
        });
    }
    let text = fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| DefinitionError::Invalid {
        path: path.to_path_buf(),
        problem: format!("not JSON ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn the_projects_definitions_load_with_defaults_resolved() {
        let app = AppDefinition::load(project(), &Environment::default()).expect("loads");
        assert_eq!(app.handler.executable, "keyturn");
        assert_eq!(app.handler.arguments, ["serve"]);
        assert!(app.handler.forward_http);
        let names: Vec<&str> = app.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "AlertSweep",
                "DiscoverySweep",
                "DiscoveryWorker",
                "EvidenceExport",
                "ExpirySweep",
                "KeyVaultEvents",
                "RotationWorker",
                "SecretEndpoint"
            ]
        );
        match &app.function("DiscoverySweep").expect("discovery").trigger {
            Trigger::Timer { schedule, .. } => assert_eq!(schedule.to_string(), "0 30 */6 * * *"),
            other => panic!("{other:?}"),
        }
        match &app.function("DiscoveryWorker").expect("worker").trigger {
            Trigger::ServiceBus { queue, sessions } => {
                assert_eq!(queue, "discovery");
                assert!(sessions);
            }
            other => panic!("{other:?}"),
        }
        match &app.function("ExpirySweep").expect("sweep").trigger {
            Trigger::Timer { schedule, .. } => assert_eq!(schedule.to_string(), "0 0 */6 * * *"),
            other => panic!("{other:?}"),
        }
        match &app.function("RotationWorker").expect("worker").trigger {
            Trigger::ServiceBus { queue, sessions } => {
                assert_eq!(queue, "rotations");
                assert!(sessions);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_replace_binding_expressions() {
        let env = Environment::from_pairs([
            ("KEYTURN_SWEEP_SCHEDULE", "*/10 * * * * *"),
            ("KEYTURN_ROTATION_QUEUE", "jobs"),
            ("AzureWebJobs.SecretEndpoint.Disabled", "true"),
        ]);
        let app = AppDefinition::load(project(), &env).expect("loads");
        assert!(
            app.function("SecretEndpoint").is_none(),
            "disabled functions are not played"
        );
        match &app.function("ExpirySweep").expect("sweep").trigger {
            Trigger::Timer { schedule, .. } => assert_eq!(schedule.to_string(), "*/10 * * * * *"),
            other => panic!("{other:?}"),
        }
        match &app.function("RotationWorker").expect("worker").trigger {
            Trigger::ServiceBus { queue, .. } => assert_eq!(queue, "jobs"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unset_setting_without_a_default_is_an_error_naming_it() {
        let err = resolve(
            "%NO_SUCH_SETTING%",
            &Environment::default(),
            Path::new("f.json"),
        )
        .expect_err("unset");
        assert!(err.to_string().contains("NO_SUCH_SETTING"), "{err}");
        let err = resolve("%OPEN", &Environment::default(), Path::new("f.json"))
            .expect_err("unterminated");
        assert!(err.to_string().contains("unterminated"), "{err}");
    }

    #[test]
    fn text_around_expressions_is_kept() {
        let env = Environment::from_pairs([("A", "x"), ("B", "y")]);
        assert_eq!(
            resolve("pre-%A%-mid-%B%-post", &env, Path::new("f")).expect("ok"),
            "pre-x-mid-y-post"
        );
    }
}
