//! The worker: runs one job against current state, for each kind of managed object, and
//! keeps the crash-convergence invariants below true whatever point a process dies at.
//!
//! # Invariants
//!
//! 1. **Current state first.** Every job re-reads the object before acting. A job whose
//!    version is no longer current does nothing but converge (below) and completes as
//!    `skipped`; duplicate and late deliveries are therefore harmless.
//! 2. **One worker per object.** Service Bus sessions (`SessionId` = the object) hand an
//!    object's jobs to one receiver at a time across instances; [`Engine`]'s per-object
//!    lock does the same within a process. Neither is trusted alone: a session lock can be
//!    lost to a long pause. A job also takes the object's lease (`ports::lease`, Table
//!    storage or the local store) and confirms its fencing token before every write to
//!    Graph or Key Vault; a job whose lease was taken over stops without destroying
//!    anything. Key Vault and Graph cannot check the token themselves, so a holder stalled
//!    inside one call past its lease term could still act once after a takeover.
//! 3. **Marked before stored, stored before proven.** Every password credential keyturn
//!    adds carries the marker `keyturn <rotation job id>` as its display name, and its
//!    value is stored at once as the pending copy `keyturn-pending-{keyId}` in the same
//!    vault (never a message, table, log or audit entry). A credential bearing the marker
//!    is held by that pending copy (its proof goes on: a rotation adds exactly one
//!    credential however long propagation takes) or by a version of the managed secret;
//!    anything else bearing the marker is a stray of a delivery that died before storing
//!    it, and Graph returns a secret's text only once, so it is removed, never adopted. A
//!    credential Key Vault refused for good to store is removed at once: no delivery comes
//!    back for it.
//! 4. **Proven before promoted.** The managed secret gets the new value only after the
//!    token endpoint accepted it N times in a row across at least W seconds (the
//!    [`ProofPolicy`](crate::rotation::tags::ProofPolicy)), one attempt per delivery in
//!    scheduled `prove` follow-ups whose state lives in the pending copy's tags. At the
//!    proof deadline the pending copy and the credential are removed and the rotation
//!    fails for good (`rotation.failed`, `keyturn-last-error`).
//! 5. **Stored before retired.** Retirement of the previous credential is scheduled only
//!    after its successor is stored (and therefore proven), and a retire job re-checks
//!    that the credential it removes is not the one the current version holds.
//! 6. **Only keyturn's credentials are removed.** A credential is removed only when its
//!    keyId was recorded by keyturn on a version keyturn wrote (`keyturn-key-id`, handed on
//!    as `keyturn-previous-key-id` on the successor keyturn wrote) *and* it carries
//!    keyturn's marker, on the application the secret names now, while the current version
//!    is that successor or one keyturn wrote after it; or when it carries the marker of the
//!    rotation at hand and neither a version nor a pending copy holds it (invariant 3). A
//!    credential any version of the secret records is never removed as a stray: consumers
//!    may hold it until its own retirement. A credential a person added is never removed.
//! 7. **Follow-ups are re-sent on convergence.** A delivery that finds its job already
//!    done by itself re-sends the job's follow-ups (retirement); their deterministic ids
//!    make the broker drop a copy it already holds, and retiring twice is harmless.
//!
//! Failures are classified once, by the adapters ([`FailureKind`]): transient ones are
//! retried within the message lock ([`retry`](crate::rotation::retry)) and then fail the
//! invocation; permanent ones, and transient ones on the last delivery the queue allows,
//! are audited, recorded on the secret as `keyturn-last-error`, and returned (the host
//! completes a permanent one; the queue dead-letters the other).

use std::time::Duration;

use serde::Serialize;

use crate::audit::{Action as AuditAction, AuditScope};
use crate::domain::names::{ObjectId, ObjectName, ObjectType, ObjectVersion};
use crate::domain::secret::SecretValue;
use crate::ports::audit::{AuditObject, AuditText, Outcome};
use crate::ports::lease::{Lease, lease_key};
use crate::ports::vault::{NewSecretVersion, SecretProperties};
use crate::ports::{FailureKind, PortError};
use crate::rotation::job::{Action, Job};
use crate::rotation::plan::audit_object;
use crate::rotation::retry::{Deadline, INVOCATION_BUDGET, retrying};
use crate::rotation::tags;
use crate::rotation::{Engine, RotationError};

mod certificate;
mod entra;
pub(crate) use entra::{capped_end, requested_end};
mod generated;

pub use entra::{MARKER_PREFIX, PENDING_PREFIX, marker, pending_name};

/// What a job did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum RunOutcome {
    /// A new version is current.
    #[serde(rename_all = "camelCase")]
    Rotated {
        version: String,
        key_id: Option<String>,
    },
    /// The previous credential was removed.
    #[serde(rename_all = "camelCase")]
    Retired { key_id: String },
    /// A new credential is being proven; the next attempt is scheduled.
    #[serde(rename_all = "camelCase")]
    Proving {
        key_id: String,
        accepted: u32,
        needed: u32,
        next_attempt_at: String,
    },
    /// Key Vault is still renewing the certificate; a follow-up job is scheduled.
    #[serde(rename_all = "camelCase")]
    RenewalPending { next_attempt: u32 },
    /// Nothing to do (already done, superseded, gone or no longer managed).
    Skipped { reason: String },
}

/// Runs one job. Errors are either transient (fail the invocation for redelivery) or
/// permanent, already audited and recorded on the secret.
#[tracing::instrument(skip_all, fields(job_id = %job.job_id, action = job.action.name(), object = %job.action.object()))]
pub async fn run(
    engine: &Engine,
    audit: &AuditScope,
    job: &Job,
) -> Result<RunOutcome, RotationError> {
    run_delivery(engine, audit, job, 1).await
}

/// [`run`] for the `delivery`-th delivery of the job's message. A transient failure on
/// the last delivery the queue allows (its `maxDeliveryCount`) exhausts the job's retry
/// budget: it is audited as `rotation.failed` and recorded as `keyturn-last-error` before
/// the queue dead-letters the message, so it is not silent.
#[tracing::instrument(skip_all, fields(job_id = %job.job_id, delivery))]
pub async fn run_delivery(
    engine: &Engine,
    audit: &AuditScope,
    job: &Job,
    delivery: u32,
) -> Result<RunOutcome, RotationError> {
    let object = job.action.object();
    let _exclusive = engine.lock(object).await;
    let deadline = Deadline::after(engine.clock().now(), INVOCATION_BUDGET);
    let lease = take_lease(engine, object).await?;
    let step = Step {
        engine,
        audit,
        job,
        deadline,
        lease,
    };
    let result = match &job.action {
        Action::Rotate {
            replaces_version, ..
        } => match object.object_type() {
            ObjectType::Certificate => {
                certificate::rotate(&step, object, replaces_version, 0).await
            }
            _ => rotate_secret(&step, object, replaces_version).await,
        },
        Action::FollowRenewal {
            replaces_version,
            attempt,
            ..
        } => certificate::rotate(&step, object, replaces_version, *attempt).await,
        Action::Prove {
            replaces_version,
            key_id,
            attempt,
            ..
        } => match object.object_type() {
            ObjectType::Secret => {
                prove_secret(&step, object, replaces_version, key_id, *attempt).await
            }
            _ => {
                step.skip(object, "only an application's secret is proven")
                    .await
            }
        },
        // Key Vault renews a certificate in place: there is no credential to retire, and a
        // secret of the same name (a certificate's backing secret) is not keyturn's to touch.
        Action::Retire { .. } => match object.object_type() {
            ObjectType::Certificate => {
                step.skip(object, "a certificate has no credential to retire")
                    .await
            }
            _ => entra::retire(&step).await,
        },
    };
    if let (Some((leases, _)), Some(lease)) = (engine.fence(), &step.lease)
        && let Err(error) = leases.release(lease).await
    {
        tracing::warn!(%error, "cannot give the object's lease back; it runs out on its own");
    }
    match result {
        // Taken over: the newer holder finishes the object; this delivery is done.
        Err(RotationError::Fenced { .. }) => {
            let reason = "another instance took the object's lease over";
            tracing::warn!(reason, "job stopped before a destructive step");
            Ok(RunOutcome::Skipped {
                reason: reason.to_owned(),
            })
        }
        Ok(outcome) => {
            if let RunOutcome::Skipped { reason } = &outcome {
                tracing::info!(reason, "job skipped");
            }
            Ok(outcome)
        }
        Err(error) if error.is_permanent() => {
            step.record_permanent(&error).await;
            Err(error)
        }
        Err(error) if delivery >= engine.max_deliveries() => {
            tracing::error!(%error, delivery, "job failed on its last delivery; the queue dead-letters it");
            step.record_failure(
                &error,
                &format!("retry budget exhausted after {delivery} deliveries"),
            )
            .await;
            Err(error)
        }
        Err(error) => {
            tracing::warn!(%error, "job failed; it will be delivered again");
            Err(error)
        }
    }
}

async fn rotate_secret(
    step: &Step<'_>,
    object: &ObjectId,
    replaces_version: &ObjectVersion,
) -> Result<RunOutcome, RotationError> {
    let job = step.job;
    let Some(current) = step.current_secret(object).await? else {
        return step.skip(object, "the secret no longer exists").await;
    };
    let current_version = current.id.version().cloned();
    if current_version.as_ref() != Some(replaces_version) {
        let notes = tags::Bookkeeping::read(&current.tags);
        let rotation = job.action.rotation_id();
        if rotation.is_some() && notes.job_id.as_deref() == rotation.as_ref().map(|r| r.as_str()) {
            // This job already stored its version; finish what may not have been finished.
            if let Ok(Some(managed)) =
                tags::managed(ObjectType::Secret, &current.tags, step.engine.defaults())
                && let tags::Kind::EntraAppSecret { app_id } = &managed.policy.kind
            {
                entra::converge_after_store(step, object, &current, app_id, &managed).await?;
            }
            return step.skip(object, "already rotated").await;
        }
        // A delivery that died between adding and storing left a credential only this
        // job's marker finds; no other delivery will come back for it.
        entra::remove_strays_when_skipped(step, object, &current).await?;
        let reason = if notes.written_by_keyturn() {
            "already rotated"
        } else {
            "superseded by a version keyturn did not write"
        };
        return step.skip(object, reason).await;
    }
    let Some(managed) = step.managed_secret(object, &current.tags)? else {
        return step.skip(object, "no longer managed").await;
    };
    if !current.enabled {
        return step.skip(object, "the current version is disabled").await;
    }
    match &managed.policy.kind {
        tags::Kind::EntraAppSecret { app_id } => {
            entra::rotate(step, object, &current, app_id, &managed).await
        }
        tags::Kind::Generated { length, alphabet } => {
            generated::rotate(step, object, &current, &managed, *length, *alphabet).await
        }
        tags::Kind::Certificate => Err(RotationError::Tags {
            object: object.to_string(),
            source: tags::TagError::KindMismatch {
                object_type: ObjectType::Secret,
            },
        }),
    }
}

/// A `prove` follow-up: the rotation it carries on must still be the one to do (the
/// version it replaces still current, the secret still an application's secret).
async fn prove_secret(
    step: &Step<'_>,
    object: &ObjectId,
    replaces_version: &ObjectVersion,
    key_id: &crate::domain::ids::KeyId,
    attempt: u32,
) -> Result<RunOutcome, RotationError> {
    let Some(current) = step.current_secret(object).await? else {
        return step.skip(object, "the secret no longer exists").await;
    };
    if current.id.version() != Some(replaces_version) {
        // Promoted already (converge, as a late rotate delivery would) or superseded.
        return rotate_secret(step, object, replaces_version).await;
    }
    let Some(managed) = step.managed_secret(object, &current.tags)? else {
        return step.skip(object, "no longer managed").await;
    };
    match &managed.policy.kind {
        tags::Kind::EntraAppSecret { app_id } => {
            entra::prove_pending(step, object, &current, app_id, &managed, key_id, attempt).await
        }
        _ => {
            step.skip(object, "the secret no longer names an application")
                .await
        }
    }
}

/// What every step of one job shares.
pub(crate) struct Step<'a> {
    pub engine: &'a Engine,
    pub audit: &'a AuditScope,
    pub job: &'a Job,
    pub deadline: Deadline,
    /// The object's lease, when the engine fences.
    pub lease: Option<Lease>,
}

/// How long a lease runs without being confirmed. Every destructive step confirms (and so
/// extends) it first; a holder slower than this between two steps may be taken over, and
/// then stops at its next step, which is safe. Short, so that a stopped instance's lease
/// does not hold its object's redeliveries up for long.
pub(crate) const LEASE_TERM: Duration = Duration::from_secs(60);

/// How often a job waiting for another holder's lease asks again.
const LEASE_POLL: Duration = Duration::from_secs(2);

fn lease_until(engine: &Engine) -> chrono::DateTime<chrono::Utc> {
    engine.clock().now()
        + chrono::Duration::from_std(LEASE_TERM).unwrap_or_else(|_| chrono::Duration::zero())
}

/// Takes the object's lease when the engine fences. While another instance holds it, the
/// job fails with a conflict (not permanent): its message comes back later.
async fn take_lease(engine: &Engine, object: &ObjectId) -> Result<Option<Lease>, RotationError> {
    let Some((leases, holder)) = engine.fence() else {
        return Ok(None);
    };
    let key = lease_key(&crate::rotation::job::session_id(object));
    // Another holder's lease runs out within a term unless it is alive and confirming;
    // wait that long (a stopped instance's lease), then give the delivery back.
    let mut waited = Duration::ZERO;
    loop {
        match leases
            .acquire(&key, holder, engine.clock().now(), lease_until(engine))
            .await
        {
            Ok(lease) => return Ok(Some(lease)),
            Err(PortError {
                kind: FailureKind::Conflict,
                ..
            }) if waited <= LEASE_TERM => {
                engine.pause(LEASE_POLL).await;
                waited += LEASE_POLL;
            }
            Err(e) => {
                return Err(RotationError::port(
                    format!("taking the lease of {object}"),
                    e,
                ));
            }
        }
    }
}

impl Step<'_> {
    /// The secret's keyturn policy from its current version's tags: `None` when it is no
    /// longer managed, an error naming the object when the tags are malformed.
    fn managed_secret(
        &self,
        object: &ObjectId,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<tags::ManagedObject>, RotationError> {
        tags::managed(ObjectType::Secret, tags, self.engine.defaults()).map_err(|source| {
            RotationError::Tags {
                object: object.to_string(),
                source,
            }
        })
    }

    /// Confirms, right before a destructive step, that this job still holds the object's
    /// lease. Taken over: [`RotationError::Fenced`], and the step is not done.
    pub(crate) async fn fence(&self) -> Result<(), RotationError> {
        let object = self.job.action.object();
        let (Some((leases, _)), Some(lease)) = (self.engine.fence(), &self.lease) else {
            return Ok(());
        };
        match leases.confirm(lease, lease_until(self.engine)).await {
            Ok(()) => Ok(()),
            Err(PortError {
                kind: FailureKind::Conflict,
                ..
            }) => Err(RotationError::Fenced {
                object: object.to_string(),
            }),
            Err(e) => Err(RotationError::port(
                format!("confirming the lease of {object}"),
                e,
            )),
        }
    }

    /// Writes `value` as a new version of `name` in the object's vault, fenced (a job whose
    /// lease was taken over writes nothing) and retried within the invocation; a failure
    /// names `what` and the object ("storing a new version of …").
    pub(crate) async fn store_secret(
        &self,
        object: &ObjectId,
        name: &ObjectName,
        value: &SecretValue,
        version: NewSecretVersion,
        what: &str,
    ) -> Result<SecretProperties, RotationError> {
        self.fence().await?;
        let secrets = &self.engine.ports().secrets;
        retrying(self.engine, self.deadline, what, || {
            secrets.set_secret(object.vault(), name, value, version.clone())
        })
        .await
        .map_err(|e| RotationError::port(format!("{what} of {object}"), e))
    }

    /// Appends an audit entry; failing to audit fails the step (nothing happens unrecorded).
    pub(crate) async fn record(
        &self,
        action: AuditAction,
        object: AuditObject,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), RotationError> {
        let reason = format!("job {}: {reason}", self.job.job_id);
        self.audit
            .record(action, object, outcome, Some(&reason))
            .await?;
        Ok(())
    }

    pub(crate) async fn skip(
        &self,
        object: &ObjectId,
        reason: &str,
    ) -> Result<RunOutcome, RotationError> {
        self.record(
            AuditAction::RotationSkipped,
            audit_object(object, Some(self.job.action.version())),
            Outcome::Skipped,
            reason,
        )
        .await?;
        Ok(RunOutcome::Skipped {
            reason: reason.to_string(),
        })
    }

    pub(crate) async fn current_secret(
        &self,
        object: &ObjectId,
    ) -> Result<Option<crate::ports::vault::SecretProperties>, RotationError> {
        let secrets = &self.engine.ports().secrets;
        retrying(self.engine, self.deadline, "reading the secret", || {
            secrets.secret_properties(object.vault(), object.name(), None)
        })
        .await
        .map_err(|e| RotationError::port(format!("reading secret {object}"), e))
    }

    /// Audits a permanent failure and records it on the secret's current version. Both
    /// are best effort here: the error itself still reaches the host, which records it
    /// again (`invocation.failed`) or fails the invocation if it cannot.
    async fn record_permanent(&self, error: &RotationError) {
        self.record_failure(error, error.code()).await;
    }

    /// Audits `rotation.failed` (with `why` before the error) and records the error on
    /// the secret's current version as `keyturn-last-error`.
    async fn record_failure(&self, error: &RotationError, why: &str) {
        let object = self.job.action.object();
        if let RotationError::Port {
            source:
                crate::ports::PortError {
                    kind: FailureKind::PermissionDenied { missing },
                    ..
                },
            ..
        } = error
        {
            tracing::error!(missing, "permission missing");
        }
        let message = error.to_string();
        if let Err(audit_error) = self
            .audit
            .record(
                AuditAction::RotationFailed,
                audit_object(object, Some(self.job.action.version())),
                Outcome::Failed,
                Some(&format!("job {}: {why}: {message}", self.job.job_id)),
            )
            .await
        {
            tracing::error!(%audit_error, "cannot audit a permanent rotation failure");
        }
        if object.object_type() != ObjectType::Secret {
            // The port offers tags on secrets only; a certificate's failure lives in the
            // audit log and the invocation's answer.
            return;
        }
        let secrets = &self.engine.ports().secrets;
        let current = match secrets
            .secret_properties(object.vault(), object.name(), None)
            .await
        {
            Ok(Some(current)) => current,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the secret to record the failure on it");
                return;
            }
        };
        let Some(version) = current.id.version() else {
            return;
        };
        let text = format!(
            "{} {}",
            self.engine.clock().now().format("%Y-%m-%dT%H:%M:%SZ"),
            if why == error.code() {
                error.summary()
            } else {
                format!("{why}: {}", error.summary())
            }
        );
        let tagged = tags::with_last_error(&current.tags, &text);
        match secrets
            .update_tags(object.vault(), object.name(), version, tagged)
            .await
        {
            Ok(_) => tracing::info!("failure recorded on the secret as {}", tags::LAST_ERROR),
            Err(e) => tracing::warn!(error = %e, "cannot record the failure on the secret"),
        }
    }
}

/// An audit object for a credential of an application.
pub(crate) fn credential_object(
    object: &ObjectId,
    app_id: &crate::domain::ids::AppId,
    key_id: Option<&crate::domain::ids::KeyId>,
) -> AuditObject {
    AuditObject {
        app_id: AuditText::parse(app_id.to_string()).ok(),
        key_id: key_id.and_then(|k| AuditText::parse(k.to_string()).ok()),
        ..audit_object(object, None)
    }
}

/// Converts a chrono span to a std duration for waits, clamping negatives to zero.
pub(crate) fn until(
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}
