//! Plays the Functions host's side of the custom-handler protocol: starts the handler as
//! `host.json` says (same executable, same arguments, `FUNCTIONS_CUSTOMHANDLER_PORT`),
//! waits until it listens, and posts invocations in the host's envelopes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::process::{Child, Command};

use crate::local::definitions::HandlerCommand;

/// How long the handler may take to listen. The host itself waits 60 s for a custom
/// handler; keyturn starts in milliseconds, so a much shorter bound reports a broken
/// start quickly.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one invocation may run, as `functionTimeout` in host.json allows.
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    #[error("cannot start the handler {executable}: {problem}")]
    Start { executable: String, problem: String },
    #[error("the handler did not listen on port {port} within {seconds} s")]
    NotListening { port: u16, seconds: u64 },
    #[error("the handler exited ({status})")]
    Exited { status: String },
    #[error("invocation of {function} did not complete: {problem}")]
    Invocation { function: String, problem: String },
}

/// The handler's answer to one invocation.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The host treats any 2xx as success.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A running handler process.
#[derive(Debug)]
pub struct Handler {
    child: Child,
    port: u16,
    http: reqwest::Client,
}

impl Handler {
    /// Starts `command` from `app_root` with `env` added to this process's environment
    /// and `FUNCTIONS_CUSTOMHANDLER_PORT` set, as the host does. `executable` overrides
    /// host.json's path (local mode runs the binary it is, not a packaged copy).
    /// With `log`, the handler's stdout and stderr are appended to that file (the host
    /// likewise keeps a handler's output out of the caller's way).
    pub async fn start(
        command: &HandlerCommand,
        executable: Option<PathBuf>,
        env: &[(String, String)],
        log: Option<&Path>,
    ) -> Result<Self, HandlerError> {
        let port = free_port().map_err(|e| HandlerError::Start {
            executable: command.executable.clone(),
            problem: e.to_string(),
        })?;
        let program = executable.unwrap_or_else(|| PathBuf::from(&command.executable));
        let mut cmd = Command::new(&program);
        cmd.args(&command.arguments)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        die_with_this_process(&mut cmd);
        if let Some(log) = log {
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .map_err(|e| HandlerError::Start {
                        executable: command.executable.clone(),
                        problem: format!("cannot open the log {}: {e}", log.display()),
                    })
            };
            cmd.stdout(open()?).stderr(open()?);
        }
        let child = cmd.spawn().map_err(|e| HandlerError::Start {
            executable: program.display().to_string(),
            problem: e.to_string(),
        })?;
        let http = reqwest::Client::builder()
            .timeout(INVOCATION_TIMEOUT)
            .build()
            .map_err(|e| HandlerError::Start {
                executable: program.display().to_string(),
                problem: e.to_string(),
            })?;
        let mut handler = Self { child, port, http };
        handler.wait_listening().await?;
        Ok(handler)
    }

    /// The handler's process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn wait_listening(&mut self) -> Result<(), HandlerError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(HandlerError::Exited {
                    status: status.to_string(),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HandlerError::NotListening {
                    port: self.port,
                    seconds: START_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Posts one invocation of `function` with `binding` = `value` and `metadata`, as the
    /// host does: `POST /<Function>`, a fresh invocation id header, the `{Data, Metadata}`
    /// envelope with every value encoded as the host encodes it ([`host_encoded`]).
    pub async fn invoke(
        &self,
        function: &str,
        binding: &str,
        value: Value,
        metadata: Map<String, Value>,
    ) -> Result<Answer, HandlerError> {
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let mut data = Map::new();
        if let Some(value) = host_encoded(value) {
            data.insert(binding.to_string(), value);
        }
        let metadata: Map<String, Value> = metadata
            .into_iter()
            .filter_map(|(name, value)| Some((name, host_encoded(value)?)))
            .collect();
        let envelope = json!({ "Data": data, "Metadata": metadata });
        let failed = |problem: String| HandlerError::Invocation {
            function: function.to_string(),
            problem,
        };
        let response = self
            .http
            .post(format!("http://127.0.0.1:{}/{function}", self.port))
            .header("X-Azure-Functions-InvocationId", &invocation_id)
            .json(&envelope)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// Asks the handler to stop (SIGTERM, as App Service does) and waits for it; in-flight
    /// invocations finish first.
    pub async fn stop(mut self) -> Result<(), HandlerError> {
        #[cfg(unix)]
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        match status {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let _ = self.child.kill().await;
                Ok(())
            }
        }
    }
}

/// A binding or metadata value as the Functions host puts it in a custom handler's
/// envelope (`ScriptInvocationContextExtensions.GetHttpScriptInvocationContextValue`):
/// what serialises to a JSON object stays an object; anything else is serialised to JSON
/// text and sent as a string, so a string arrives JSON-encoded twice (`"\"abc\""`), a
/// number or boolean as its text (`"1"`), an array as its JSON text. The host leaves out
/// null values (`None`).
pub(crate) fn host_encoded(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(object) => Some(Value::Object(object)),
        other => Some(Value::String(other.to_string())),
    }
}

/// Makes the child die with this process however this process ends, `kill -9`
/// included, from the child's first instruction on: Linux's parent-death signal (SIGKILL)
/// is armed between fork and exec, and a parent already gone by then (the child was
/// re-parented) ends the child before it execs. The signal follows the thread that forks;
/// local mode starts the handler from the thread that runs it to the end.
/// `KEYTURN_EXIT_WITH_PARENT` remains the handler's own check where this is unavailable.
#[cfg(target_os = "linux")]
fn die_with_this_process(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_this_process(_cmd: &mut Command) {}

/// A loopback port nobody listens on right now.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the host posted for a Service Bus message, captured from a running host
    /// (`tests/fixtures/custom-handler/servicebus-trigger.request.captured-ext4.json`).
    fn captured() -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/custom-handler/servicebus-trigger.request.captured-ext4.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
    }

    #[test]
    fn values_are_encoded_as_the_captured_host_envelope_encodes_them() {
        let captured = captured();
        // The message body, a string: JSON-encoded twice.
        assert_eq!(
            host_encoded(json!(r#"{"hello":"world"}"#)),
            Some(captured["Data"]["myQueueItem"].clone())
        );
        // Numbers as their text, strings and times quoted, objects as objects.
        let metadata = &captured["Metadata"];
        assert_eq!(
            host_encoded(json!(1)),
            Some(metadata["DeliveryCount"].clone())
        );
        assert_eq!(
            host_encoded(json!(1)),
            Some(metadata["SequenceNumber"].clone())
        );
        assert_eq!(
            host_encoded(json!("4223106e-36f4-45ed-b1ab-96ead73e225b")),
            Some(metadata["LockToken"].clone())
        );
        assert_eq!(
            host_encoded(json!("2020-10-08T21:49:35.809Z")),
            Some(metadata["EnqueuedTimeUtc"].clone())
        );
        assert_eq!(
            host_encoded(json!("application/json")),
            Some(metadata["ContentType"].clone())
        );
        assert_eq!(
            host_encoded(metadata["UserProperties"].clone()),
            Some(metadata["UserProperties"].clone())
        );
        assert_eq!(host_encoded(Value::Null), None);
        assert_eq!(host_encoded(json!([1, 2])), Some(json!("[1,2]")));
    }
}
