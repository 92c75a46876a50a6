//! Tracing: JSON lines on stdout (the Functions host captures a custom handler's stdout
//! into its own logs), one span per invocation, filter from `KEYTURN_LOG_LEVEL`.
//!
//! Redaction is structural rather than pattern-based: a secret lives only in
//! [`crate::domain::secret::SecretValue`], whose `Debug` and `Display` print `[redacted]`,
//! so no field formatter can print one. Tests capture the output and search it for known
//! secret values.

use std::io;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    #[error("KEYTURN_LOG_LEVEL: not a log filter ({0})")]
    Filter(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the process-wide JSON subscriber writing to stdout.
pub fn init(filter: &str) -> Result<(), TelemetryError> {
    init_with_writer(filter, io::stdout)
}

/// Installs the process-wide JSON subscriber writing to `writer` (tests pass a buffer).
pub fn init_with_writer<W>(filter: &str, writer: W) -> Result<(), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter(e.to_string()))?;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_writer(writer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_filter_is_reported_with_the_setting_name() {
        let err = init_with_writer("keyturn=[", io::sink).expect_err("bad filter");
        assert!(err.to_string().starts_with("KEYTURN_LOG_LEVEL"));
    }
}
