//! What the engines need from the outside world, as traits. Each port has an Azure
//! adapter and an embedded local adapter, and both pass the same contract tests.

use std::time::Duration;

pub mod alert_ledger;
pub mod audit;
pub mod catalog;
pub mod checkpoint;
pub mod directory;
pub mod inventory;
pub mod lease;
pub mod notify;
pub mod queue;
pub mod site;
pub mod source;
pub mod vault;

/// What a failure seen at a port means, decided once by the adapter that saw it.
///
/// Adapters turn transport and HTTP failures into one of these; the host's single
/// classification function (`host::outcome::classify`) turns them into the answer the
/// Functions host expects. Nothing between the two inspects status codes again.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// Worth trying again: timeouts, connection failures, 5xx, 429/503 (with the
    /// server's `Retry-After` when it sent one).
    Transient { retry_after: Option<Duration> },
    /// The caller lacks a role or permission. `missing` names it (for example
    /// "Key Vault Secrets Officer on vault kv-prod") so an operator can grant it.
    PermissionDenied { missing: String },
    /// The service refused the caller's network before looking at its roles (a firewall
    /// rule, public access disabled, no private link); `code` is the service's
    /// (`ForbiddenByFirewall`, `ForbiddenByConnection`). Granting a role cannot help.
    NetworkRefused { code: String },
    /// The object does not exist.
    NotFound,
    /// A conditional write lost a race (ETag mismatch, duplicate key).
    Conflict,
    /// The service refused the request by policy (for example an app management
    /// policy forbidding the requested credential lifetime).
    PolicyViolation { code: String },
    /// The request or the stored data is malformed; repeating it cannot help.
    Invalid,
}

/// An error from a port. `context` says what was being done, never carries a secret
/// value, and never carries a raw backend message that might echo one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{context}: {kind:?}")]
pub struct PortError {
    pub kind: FailureKind,
    pub context: String,
}

impl PortError {
    pub fn new(kind: FailureKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
        }
    }

    pub fn transient(context: impl Into<String>) -> Self {
        Self::new(FailureKind::Transient { retry_after: None }, context)
    }

    pub fn invalid(context: impl Into<String>) -> Self {
        Self::new(FailureKind::Invalid, context)
    }

    pub fn is_transient(&self) -> bool {
        matches!(self.kind, FailureKind::Transient { .. })
    }
}
