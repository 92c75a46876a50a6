//! The rotation engine: which managed objects are due ([`plan`]), the job messages that
//! carry the work ([`job`]), how each kind rotates ([`run`]), and the tags that say what is
//! managed ([`tags`]). It is built only against the ports, with the clock and the way it
//! waits passed in, so local mode, tests and benchmarks drive it exactly as Azure does.
//!
//! Auditing goes through the [`AuditScope`] the caller hands it (the log, the actor and the
//! invocation id): the engine never imports the function layer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OwnedMutexGuard;

use crate::audit::AuditError;
use crate::domain::clock::Clock;
use crate::domain::names::{ObjectId, VaultUrl};
use crate::ports::directory::{CredentialIssuer, TokenProver};
use crate::ports::lease::ObjectLeases;
use crate::ports::queue::JobQueue;
use crate::ports::vault::{CertificateStore, SecretStore};
use crate::ports::{FailureKind, PortError};

pub mod job;
pub mod plan;
pub mod retry;
pub mod run;
pub mod tags;

use tags::{PolicyDefaults, TagError};

/// The ports the engine works through, chosen at start-up.
#[derive(Debug, Clone)]
pub struct Ports {
    pub secrets: Arc<dyn SecretStore>,
    pub certificates: Arc<dyn CertificateStore>,
    pub directory: Arc<dyn CredentialIssuer>,
    pub prover: Arc<dyn TokenProver>,
    pub queue: Arc<dyn JobQueue>,
}

/// How the engine waits between attempts. Tests pass one that advances their clock.
#[async_trait]
pub trait Pause: Send + Sync {
    async fn pause(&self, duration: Duration);
}

/// Waits on the tokio timer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sleep;

#[async_trait]
impl Pause for Sleep {
    async fn pause(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// The engine: ports, the vaults it manages, policy defaults, the clock and the way it
/// waits. One per process, shared by every invocation.
pub struct Engine {
    ports: Ports,
    vaults: Vec<VaultUrl>,
    defaults: PolicyDefaults,
    clock: Clock,
    pause: Arc<dyn Pause>,
    /// The delivery after which the queue dead-letters a job: a transient failure on it
    /// exhausts the job's retry budget and is recorded like a permanent one.
    max_deliveries: u32,
    /// One lock per object (by session id): Service Bus sessions keep two instances off
    /// one object; this keeps two invocations in one process off it (local mode's pump,
    /// a host that delivered a session again while a timed-out invocation still runs).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Leases fencing other instances off an object (see [`crate::ports::lease`]), and
    /// this engine's holder id. Without them only the broker's sessions and the
    /// in-process lock exclude.
    fence: Option<Arc<dyn ObjectLeases>>,
    holder: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("vaults", &self.vaults)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(
        ports: Ports,
        vaults: Vec<VaultUrl>,
        defaults: PolicyDefaults,
        clock: Clock,
    ) -> Self {
        Self {
            ports,
            vaults,
            defaults,
            clock,
            pause: Arc::new(Sleep),
            max_deliveries: crate::ports::queue::MAX_DELIVERY_COUNT,
            locks: Mutex::new(HashMap::new()),
            fence: None,
            holder: format!("engine-{}", uuid::Uuid::new_v4()),
        }
    }

    /// Fences jobs with leases kept in `leases`: a job takes its object's lease before it
    /// works on it and confirms it before every destructive step.
    pub fn with_fence(mut self, leases: Arc<dyn ObjectLeases>) -> Self {
        self.fence = Some(leases);
        self
    }

    pub(crate) fn fence(&self) -> Option<(&dyn ObjectLeases, &str)> {
        self.fence.as_deref().map(|f| (f, self.holder.as_str()))
    }

    /// The delivery after which the queue dead-letters a job (the queue's
    /// `maxDeliveryCount`).
    pub fn with_max_deliveries(mut self, max_deliveries: u32) -> Self {
        self.max_deliveries = max_deliveries.max(1);
        self
    }

    pub(crate) fn max_deliveries(&self) -> u32 {
        self.max_deliveries
    }

    /// Replaces how the engine waits (tests advance a clock instead of sleeping).
    pub fn with_pause(mut self, pause: Arc<dyn Pause>) -> Self {
        self.pause = pause;
        self
    }

    pub(crate) fn ports(&self) -> &Ports {
        &self.ports
    }

    pub(crate) fn vaults(&self) -> &[VaultUrl] {
        &self.vaults
    }

    pub(crate) fn defaults(&self) -> &PolicyDefaults {
        &self.defaults
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) async fn pause(&self, duration: Duration) {
        self.pause.pause(duration).await;
    }

    /// Holds the object's in-process lock until the guard drops.
    async fn lock(&self, object: &ObjectId) -> OwnedMutexGuard<()> {
        let key = job::session_id(object);
        let lock = {
            // A poisoned map only means another invocation panicked while inserting; the
            // map itself is still a valid map of locks.
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Why planning or running a job failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// A port failed while doing `step`.
    #[error("{step}: {source}")]
    Port {
        step: String,
        #[source]
        source: PortError,
    },
    /// The audit log refused or failed an entry: nothing happens unrecorded. Reads as the
    /// port failure the audit error amounts to.
    #[error("auditing: {}", PortError::from(.0.clone()))]
    Audit(#[from] AuditError),
    #[error("{object}: {source}")]
    Tags {
        object: String,
        #[source]
        source: TagError,
    },
    #[error(
        "{object}: the application {app_id} was not found, or keyturn may not see it (it needs Application.ReadWrite.OwnedBy and to be an owner of the application, or Application.ReadWrite.All)"
    )]
    ApplicationNotFound { object: String, app_id: String },
    #[error(
        "{object}: issued by `{issuer}`, which Key Vault cannot renew on its own; the certificate needs manual renewal"
    )]
    ManualRenewal { object: String, issuer: String },
    #[error("{object}: Key Vault's renewal failed ({code})")]
    RenewalFailed { object: String, code: String },
    #[error(
        "{object}: the token endpoint did not accept the new credential {successes} times in a row across {window_s} s within {deadline_minutes} minutes; it was removed"
    )]
    ProofDeadlinePassed {
        object: String,
        successes: u32,
        window_s: u32,
        deadline_minutes: u32,
    },
    #[error("{object}: the certificate renewal was still pending after {attempts} follow-ups")]
    RenewalStalled { object: String, attempts: u32 },
    /// Another instance took the object's lease over: this job stops before a destructive
    /// step and leaves the object to the holder of the newer fencing token.
    #[error("{object}: another instance took the object's lease over; nothing more is done here")]
    Fenced { object: String },
    #[error(
        "{object}: CredentialTypeNotAllowedAsPerAppPolicy: app management policy `{policy}` forbids adding password credentials to application {app_id} (passwordAddition); keyturn cannot rotate it while the policy applies"
    )]
    PasswordsForbidden {
        object: String,
        app_id: String,
        policy: String,
    },
    #[error(
        "{object}: application {app_id} allows personal Microsoft accounts, so it holds at most {max} passwords (TooManyAppPasswords), and it holds {held}; keyturn adds one only once another is retired or removed"
    )]
    TooManyPasswords {
        object: String,
        app_id: String,
        max: usize,
        held: usize,
    },
}

impl RotationError {
    pub(crate) fn port(step: impl Into<String>, source: PortError) -> Self {
        Self::Port {
            step: step.into(),
            source,
        }
    }

    /// The shared failure vocabulary, so the host classifies this error like any other.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Port { source, .. } => source.kind.clone(),
            Self::Audit(error) => error.kind(),
            Self::Tags { .. } => FailureKind::Invalid,
            Self::ApplicationNotFound { .. } => FailureKind::NotFound,
            Self::ManualRenewal { .. } => FailureKind::PolicyViolation {
                code: "ManualRenewalRequired".into(),
            },
            Self::RenewalFailed { code, .. } => FailureKind::PolicyViolation { code: code.clone() },
            // The rotation's whole budget is spent: recorded as failing, not retried at once
            // (the next sweep starts a new rotation).
            Self::ProofDeadlinePassed { .. } => FailureKind::PolicyViolation {
                code: "ProofDeadlinePassed".into(),
            },
            Self::RenewalStalled { .. } => FailureKind::Invalid,
            Self::Fenced { .. } => FailureKind::Conflict,
            Self::PasswordsForbidden { .. } => FailureKind::PolicyViolation {
                code: "CredentialTypeNotAllowedAsPerAppPolicy".into(),
            },
            Self::TooManyPasswords { .. } => FailureKind::PolicyViolation {
                code: "TooManyAppPasswords".into(),
            },
        }
    }

    /// Whether retrying cannot help (the host completes the message after recording it).
    pub fn is_permanent(&self) -> bool {
        is_permanent(&self.kind())
    }

    /// One line for the `keyturn-last-error` tag, most useful part first (what is missing
    /// or which policy refused), so it survives the tag's 256-character limit.
    pub(crate) fn summary(&self) -> String {
        match self {
            Self::Audit(error) => Self::port("auditing", error.clone().into()).summary(),
            Self::Port { step, source } => match &source.kind {
                FailureKind::PermissionDenied { missing } => {
                    format!("permission_denied: missing {missing} ({step})")
                }
                FailureKind::PolicyViolation { code } => {
                    format!("policy_violation: {code} ({step})")
                }
                FailureKind::NetworkRefused { code } => {
                    format!("network_refused: {code} ({step})")
                }
                _ => format!("{}: {step}: {}", self.code(), source.context),
            },
            other => format!("{}: {other}", other.code()),
        }
    }

    /// A short code for audit reasons and the `keyturn-last-error` tag.
    pub(crate) fn code(&self) -> &'static str {
        match self.kind() {
            FailureKind::Transient { .. } => "transient",
            FailureKind::PermissionDenied { .. } => "permission_denied",
            FailureKind::NotFound => "not_found",
            FailureKind::NetworkRefused { .. } => "network_refused",
            FailureKind::Conflict => "conflict",
            FailureKind::PolicyViolation { .. } => "policy_violation",
            FailureKind::Invalid => "invalid",
        }
    }
}

impl From<RotationError> for PortError {
    fn from(error: RotationError) -> Self {
        let context = error.to_string();
        match error {
            // Keep the adapter's own context (it names the role or permission missing).
            RotationError::Port { step, source } => {
                PortError::new(source.kind, format!("{step}: {}", source.context))
            }
            RotationError::Audit(error) => {
                let source = PortError::from(error);
                PortError::new(source.kind, format!("auditing: {}", source.context))
            }
            other => PortError::new(other.kind(), context),
        }
    }
}

/// Permanent: permission denied, not found, policy violation, invalid. Transient failures
/// and lost races are worth another delivery.
pub(crate) fn is_permanent(kind: &FailureKind) -> bool {
    !matches!(kind, FailureKind::Transient { .. } | FailureKind::Conflict)
}
