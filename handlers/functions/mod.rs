//! One module per folder in `function-definitions/`: each is a plain async function from
//! typed input to typed output. The host layer unwraps envelopes around them and decides,
//! through one classification, what a failure means for the Functions host.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::audit::{Action, AuditError, AuditLog, AuditScope};
use crate::domain::clock::Clock;
use crate::domain::function::Function;
use crate::ports::PortError;
use crate::ports::audit::{AuditObject, AuditText, Outcome};
use crate::rotation::{Engine, RotationError};

pub mod alert_sweep;
pub mod discovery_sweep;
pub mod discovery_worker;
pub mod evidence_export;
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
    /// Where discovery writes what it finds; `None` where rotation is not served (the
    /// endpoint app), since discovery runs beside rotation.
    pub inventory: Option<Arc<dyn crate::ports::inventory::InventoryStore>>,
    /// Discovery over the catalogs start-up chose, writing into `inventory`, with the
    /// queue its jobs travel on; `None` where the inventory is.
    pub discovery: Option<Arc<DiscoveryServices>>,
    /// The alerts engine's ledger, channels and settings; `None` where there is no
    /// inventory to alert from.
    pub alerts: Option<Arc<alert_sweep::AlertServices>>,
    /// The scheduled evidence export's exporter and where it keeps packages; `None`
    /// where there is no inventory to export.
    pub evidence: Option<Arc<evidence_export::EvidenceServices>>,
}

/// What `DiscoverySweep` and `DiscoveryWorker` run on.
#[derive(Debug)]
pub struct DiscoveryServices {
    pub engine: crate::discovery::Discovery,
    /// The discovery queue (`KEYTURN_DISCOVERY_QUEUE`).
    pub queue: Arc<dyn crate::ports::queue::JobQueue>,
    /// The subscriptions a sweep lists; empty: every one the identity can see.
    pub subscriptions: Vec<crate::domain::ids::SubscriptionId>,
}

/// One invocation: which function, the host's invocation id, and the time it started.
#[derive(Clone)]
pub(crate) struct Context {
    pub function: Function,
    pub invocation_id: String,
    pub now: DateTime<Utc>,
    pub services: Arc<Services>,
}

/// Why a function failed. The host classifies it once (`host::outcome`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FunctionError {
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

impl From<AuditError> for FunctionError {
    fn from(error: AuditError) -> Self {
        Self::Port(error.into())
    }
}

impl Context {
    /// The audit scope of this invocation: entries by this function, carrying its
    /// invocation id, each stamped by the services' clock when it is written. The engine
    /// writes through it too.
    pub(crate) fn audit_scope(&self) -> Result<AuditScope, FunctionError> {
        Ok(AuditScope::function(
            self.services.audit.clone(),
            self.function.name(),
            &self.invocation_id,
            self.services.clock.clone(),
        )?)
    }

    /// Appends one entry to the audit log on behalf of this function and invocation.
    pub(crate) async fn audit(
        &self,
        action: Action,
        object: AuditObject,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> Result<(), FunctionError> {
        self.audit_scope()?
            .record(action, object, outcome, reason)
            .await?;
        Ok(())
    }
}

impl Context {
    /// Discovery, or a retryable failure naming what is missing.
    pub(crate) fn discovery(&self) -> Result<&DiscoveryServices, FunctionError> {
        self.services.discovery.as_deref().ok_or_else(|| {
            FunctionError::Port(PortError::transient(
                "discovery is not configured in this app: start-up chose no inventory store",
            ))
        })
    }

    /// The alerts engine's services, or a retryable failure naming what is missing.
    pub(crate) fn alerts(&self) -> Result<&alert_sweep::AlertServices, FunctionError> {
        self.services.alerts.as_deref().ok_or_else(|| {
            FunctionError::Port(PortError::transient(
                "alerts are not configured in this app: start-up chose no inventory store",
            ))
        })
    }

    /// The scheduled evidence export's services, or a retryable failure naming what is
    /// missing.
    pub(crate) fn evidence(&self) -> Result<&evidence_export::EvidenceServices, FunctionError> {
        self.services.evidence.as_deref().ok_or_else(|| {
            FunctionError::Port(PortError::transient(
                "the evidence export is not configured in this app: start-up chose no inventory store",
            ))
        })
    }

    /// The rotation engine, or a retryable failure naming what is missing.
    pub(crate) fn rotation(&self) -> Result<&Engine, FunctionError> {
        self.services.rotation.as_deref().ok_or_else(|| {
            FunctionError::Port(PortError::transient(
                "rotation is not configured in this app: start-up chose no secret store, \
                 directory or job queue",
            ))
        })
    }
}

/// An audit object naming a Key Vault object. Fields that do not fit the audit log's text
/// rules are left out rather than failing the action they describe.
pub(crate) fn vault_object(vault: &str, name: &str, version: Option<&str>) -> AuditObject {
    AuditObject {
        vault: AuditText::parse(vault).ok(),
        secret_name: AuditText::parse(name).ok(),
        secret_version: version.and_then(|v| AuditText::parse(v).ok()),
        ..AuditObject::default()
    }
}
