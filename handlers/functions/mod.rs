//! One module per folder in `function-definitions/`: each is a plain async function from
//! typed input to typed output. The host layer unwraps envelopes around them and decides,
//! through one classification, what a failure means for the Functions host.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::audit::{AuditError, AuditLog};
use crate::domain::clock::Clock;
use crate::ports::audit::{Actor, AuditObject, AuditRecord, AuditText, Outcome};
use crate::ports::{FailureKind, PortError};
use crate::rotation::{Engine, Recorder, RotationError};

pub mod expiry_sweep;
pub mod key_vault_events;
pub mod rotation_worker;
pub mod secret_endpoint;

/// What the functions share: the ports chosen at start-up and the clock.
#[derive(Clone)]
pub struct Services {
    pub audit: AuditLog,
    pub clock: Clock,
    /// The SecretEndpoint's policies, access policy, sources and rate limits; the
    /// default refuses every request.
    pub endpoint: Arc<secret_endpoint::Endpoint>,
    /// The rotation engine over the secret store, directory, token prover and job queue
    /// start-up chose; `None` where no rotation adapters are configured. Then events and
    /// sweeps are acknowledged and audited as skipped (the sweep of a configured app
    /// re-derives everything from Key Vault), and jobs fail retryably so none is dropped.
    pub rotation: Option<Arc<Engine>>,
}

/// One invocation: which function, the host's invocation id, and the time it started.
#[derive(Clone)]
pub struct Context {
    pub function: &'static str,
    pub invocation_id: String,
    pub now: DateTime<Utc>,
    pub services: Arc<Services>,
}

/// Why a function failed. The host classifies it once (`host::outcome`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FunctionError {
    /// The trigger payload cannot be decoded; delivering it again cannot help.
    #[error("bad input: {0}")]
    BadInput(String),
    #[error(transparent)]
    Port(#[from] PortError),
}

impl From<RotationError> for FunctionError {
    fn from(error: RotationError) -> Self {
        Self::Port(error.into())
    }
}

impl Context {
    /// Appends one entry to the audit log on behalf of this function and invocation.
    pub async fn audit(
        &self,
        action: &str,
        object: AuditObject,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> Result<(), FunctionError> {
        let text = |what: &str, value: &str| {
            AuditText::parse(value).map_err(|e| PortError::invalid(format!("audit {what}: {e}")))
        };
        let mut record = AuditRecord::new(
            self.now,
            Actor::Function(text("actor", self.function)?),
            text("action", action)?,
            outcome,
        );
        record.object = object;
        record.reason = reason
            .map(|r| text("reason", &clip(r, MAX_REASON_CHARS)))
            .transpose()?;
        record.invocation_id = Some(text("invocation id", &self.invocation_id)?);
        self.services.audit.append(record).await?;
        Ok(())
    }
}

impl Context {
    /// The rotation engine, or a retryable failure naming what is missing.
    pub fn rotation(&self) -> Result<&Engine, FunctionError> {
        self.services.rotation.as_deref().ok_or_else(|| {
            FunctionError::Port(PortError::transient(
                "rotation is not configured in this app: start-up chose no secret store, \
                 directory or job queue",
            ))
        })
    }
}

/// The engine audits through the invocation, so its entries carry the function and the
/// invocation id like every other entry.
#[async_trait]
impl Recorder for Context {
    async fn record(
        &self,
        action: &str,
        object: AuditObject,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> Result<(), PortError> {
        self.audit(action, object, outcome, reason)
            .await
            .map_err(|error| match error {
                FunctionError::Port(port) => port,
                FunctionError::BadInput(problem) => PortError::invalid(problem),
            })
    }
}

/// Reasons are one short line; anything longer is cut so an entry always fits the audit
/// log's per-field limit.
const MAX_REASON_CHARS: usize = 400;

fn clip(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// An audit object naming a Key Vault object. Fields that do not fit the audit log's text
/// rules are left out rather than failing the action they describe.
pub fn vault_object(vault: &str, name: &str, version: Option<&str>) -> AuditObject {
    AuditObject {
        vault: AuditText::parse(vault).ok(),
        secret_name: AuditText::parse(name).ok(),
        secret_version: version.and_then(|v| AuditText::parse(v).ok()),
        ..AuditObject::default()
    }
}

impl From<AuditError> for FunctionError {
    fn from(error: AuditError) -> Self {
        let context = error.to_string();
        match error {
            AuditError::Store { source, .. } => Self::Port(source),
            // Many appenders raced and this one kept losing: the next delivery will win.
            AuditError::Contended { .. } => {
                Self::Port(PortError::new(FailureKind::Conflict, context))
            }
            // Nothing was refused: the write may succeed on a later delivery or request.
            AuditError::Abandoned | AuditError::WriterStopped => Self::Port(PortError::new(
                FailureKind::Transient { retry_after: None },
                context,
            )),
            // A damaged chain is not repaired by retrying; an operator must look. The host
            // then fails to record the failure too, so the invocation is retried rather
            // than completed unrecorded.
            _ => Self::Port(PortError::invalid(context)),
        }
    }
}
