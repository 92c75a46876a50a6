//! Building audit entries: [`Action`], the closed set of things keyturn records, and
//! [`AuditScope`], the one builder. A scope is what an invocation hands whoever writes on
//! its behalf (the functions, the rotation engine): the log, who acts, the invocation id
//! and the clock its entries are stamped from. Every entry keyturn writes is built here.

use crate::audit::{AuditError, AuditLog};
use crate::domain::clock::Clock;
use crate::ports::audit::{Actor, AuditEntry, AuditObject, AuditRecord, AuditText, Outcome};

/// Reasons are one short line; anything longer is cut so an entry always fits the audit
/// log's per-field limit.
pub(crate) const MAX_REASON_CHARS: usize = 400;

/// What an entry records. The wire strings are the ones stored entries hold (and hash):
/// they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// `KeyVaultEvents` received an expiry event.
    EventReceived,
    /// Planning decided about one object (queued, skipped or failed).
    RotationPlanned,
    /// `ExpirySweep` ran.
    SweepRan,
    /// A vault could not be swept for good.
    SweepVaultFailed,
    /// `RotationWorker` received a job.
    JobReceived,
    RotationSkipped,
    RotationFailed,
    SecretRotated,
    CredentialAdded,
    /// A new credential's value is stored as its pending copy, out of consumers' sight.
    CredentialPending,
    /// One proof attempt of a pending credential (accepted or refused).
    CredentialProving,
    CredentialProven,
    /// A pending copy was deleted (promoted, given up or a stray's).
    PendingRemoved,
    CredentialRemoved,
    CredentialRetired,
    CredentialOrphanRemoved,
    RetirementScheduled,
    CertificateRenewalStarted,
    CertificateRenewalPending,
    CertificateRenewed,
    /// The SecretEndpoint answered a request (served, denied or failed).
    SecretRead,
    /// An invocation failed for good and was completed.
    InvocationFailed,
    /// `AlertSweep` ran: what it sent, by route, and what failed (never a URL).
    AlertsSent,
    /// `EvidenceExport` ran: the package it stored (its name and its manifest's
    /// SHA-256), or why it stored none.
    EvidenceExported,
}

impl Action {
    /// Every action, in no particular order.
    pub const ALL: [Action; 24] = [
        Self::EventReceived,
        Self::RotationPlanned,
        Self::SweepRan,
        Self::SweepVaultFailed,
        Self::JobReceived,
        Self::RotationSkipped,
        Self::RotationFailed,
        Self::SecretRotated,
        Self::CredentialAdded,
        Self::CredentialPending,
        Self::CredentialProving,
        Self::CredentialProven,
        Self::PendingRemoved,
        Self::CredentialRemoved,
        Self::CredentialRetired,
        Self::CredentialOrphanRemoved,
        Self::RetirementScheduled,
        Self::CertificateRenewalStarted,
        Self::CertificateRenewalPending,
        Self::CertificateRenewed,
        Self::SecretRead,
        Self::InvocationFailed,
        Self::AlertsSent,
        Self::EvidenceExported,
    ];

    /// The action as stored in an entry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventReceived => "event.received",
            Self::RotationPlanned => "rotation.planned",
            Self::SweepRan => "sweep.ran",
            Self::SweepVaultFailed => "sweep.vault_failed",
            Self::JobReceived => "job.received",
            Self::RotationSkipped => "rotation.skipped",
            Self::RotationFailed => "rotation.failed",
            Self::SecretRotated => "secret.rotated",
            Self::CredentialAdded => "credential.added",
            Self::CredentialPending => "credential.pending",
            Self::CredentialProving => "credential.proving",
            Self::PendingRemoved => "credential.pending_removed",
            Self::CredentialProven => "credential.proven",
            Self::CredentialRemoved => "credential.removed",
            Self::CredentialRetired => "credential.retired",
            Self::CredentialOrphanRemoved => "credential.orphan_removed",
            Self::RetirementScheduled => "retirement.scheduled",
            Self::CertificateRenewalStarted => "certificate.renewal_started",
            Self::CertificateRenewalPending => "certificate.renewal_pending",
            Self::CertificateRenewed => "certificate.renewed",
            Self::SecretRead => "secret.read",
            Self::InvocationFailed => "invocation.failed",
            Self::AlertsSent => "alerts.sent",
            Self::EvidenceExported => "evidence.exported",
        }
    }

    /// The action a stored string names, if it is one of keyturn's (readers of the log
    /// match on actions, never on their strings).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == text)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and as whom entries are written: the log, the actor, the invocation id and the
/// clock. Cheap to clone.
///
/// Each entry is stamped when it is built, that is when the action it records happened:
/// an invocation that runs for a minute writes entries a minute apart, not all at its
/// start.
#[derive(Debug, Clone)]
pub struct AuditScope {
    log: AuditLog,
    /// The function the scope was made for, whoever [`AuditScope::acting_as`] names.
    function: Actor,
    actor: Actor,
    invocation_id: Option<AuditText>,
    clock: Clock,
}

impl AuditScope {
    /// Entries by the function `name` in the invocation `invocation_id`, stamped from
    /// `clock`. Refuses a name or id that is not audit text (naming which, never echoing
    /// it).
    pub fn function(
        log: AuditLog,
        name: &str,
        invocation_id: &str,
        clock: Clock,
    ) -> Result<Self, AuditError> {
        let function = Actor::Function(text("actor", name)?);
        Ok(Self {
            log,
            actor: function.clone(),
            function,
            invocation_id: Some(text("invocation id", invocation_id)?),
            clock,
        })
    }

    /// The same scope with another actor (an authenticated device, say).
    pub(crate) fn acting_as(&self, actor: Actor) -> Self {
        Self {
            actor,
            ..self.clone()
        }
    }

    /// The entry `record` would append. The reason is cut to [`MAX_REASON_CHARS`], with
    /// control characters made spaces, so a long or multi-line reason never fails it.
    pub(crate) fn entry(
        &self,
        action: Action,
        object: AuditObject,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> Result<AuditRecord, AuditError> {
        let mut record = AuditRecord::new(
            self.clock.now(),
            self.actor.clone(),
            text("action", action.as_str())?,
            outcome,
        );
        record.object = object;
        record.reason = reason
            .map(|r| text("reason", &clip(r, MAX_REASON_CHARS)))
            .transpose()?;
        record.invocation_id = self.invocation_id.clone();
        Ok(record)
    }

    /// Records a refusal (outcome `denied`), folded with its repeats ([`AuditLog::refuse`]):
    /// the first of its kind this window returns once stored, a repeat at once. `code`
    /// is the refusal's reason code, which is all the entry standing for refusals beyond
    /// the kinds a window tracks says.
    pub(crate) async fn refuse(
        &self,
        action: Action,
        object: AuditObject,
        reason: &str,
        code: &str,
    ) -> Result<(), AuditError> {
        self.record_folded(action, object, Outcome::Denied, reason, code)
            .await
    }

    /// Records a decision that a replayed event makes again unchanged (an event
    /// received, a rotation planned), folded like a refusal: one decision is one entry,
    /// its repeats within a window one more entry with their count.
    pub(crate) async fn record_repeatable(
        &self,
        action: Action,
        object: AuditObject,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), AuditError> {
        self.record_folded(action, object, outcome, reason, action.as_str())
            .await
    }

    async fn record_folded(
        &self,
        action: Action,
        object: AuditObject,
        outcome: Outcome,
        reason: &str,
        code: &str,
    ) -> Result<(), AuditError> {
        let record = self.entry(action, object, outcome, Some(reason))?;
        self.log
            .refuse(record, |record| {
                crate::audit::fold::overflow_record(record, &self.function, code)
            })
            .await
    }

    /// Appends one entry; returns once it is stored.
    pub(crate) async fn record(
        &self,
        action: Action,
        object: AuditObject,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> Result<AuditEntry, AuditError> {
        let record = self.entry(action, object, outcome, reason)?;
        self.log.append(record).await
    }
}

fn text(field: &'static str, value: &str) -> Result<AuditText, AuditError> {
    AuditText::parse(value).map_err(|source| AuditError::Text { field, source })
}

fn clip(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_wire_strings_are_unique_and_read_back() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
        let mut wire: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        wire.sort_unstable();
        wire.dedup();
        assert_eq!(wire.len(), Action::ALL.len());
        assert_eq!(Action::parse("secret.rotate"), None);
    }

    /// Stored entries hash these exact strings: changing one breaks every chain.
    #[test]
    fn action_wire_strings_are_the_stored_ones() {
        let stored = [
            "event.received",
            "rotation.planned",
            "sweep.ran",
            "sweep.vault_failed",
            "job.received",
            "rotation.skipped",
            "rotation.failed",
            "secret.rotated",
            "credential.added",
            "credential.pending",
            "credential.proving",
            "credential.proven",
            "credential.pending_removed",
            "credential.removed",
            "credential.retired",
            "credential.orphan_removed",
            "retirement.scheduled",
            "certificate.renewal_started",
            "certificate.renewal_pending",
            "certificate.renewed",
            "secret.read",
            "invocation.failed",
            "alerts.sent",
            "evidence.exported",
        ];
        let wire: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(wire, stored);
    }
}
