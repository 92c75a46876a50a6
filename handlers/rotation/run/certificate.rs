//! `certificate`: Key Vault renews the certificate from its own policy. keyturn starts the
//! renewal and follows it: within the invocation for up to [`CERTIFICATE_WAIT`] (a
//! self-signed certificate is ready in seconds), then through follow-up jobs scheduled
//! [`FOLLOW_INTERVAL`] apart, because an integrated CA (DigiCert, GlobalSign) may take
//! days to validate an OV or EV order, far longer than any message lock.
//!
//! Key Vault can renew a certificate on its own when its policy's issuer is `Self` or an
//! issuer object, which Key Vault only accepts for its integrated CAs (DigiCert,
//! GlobalSign). `Unknown` means the certificate was issued outside Key Vault: a renewal
//! would leave a CSR waiting for a person to merge, so keyturn reports that manual
//! renewal is needed and starts nothing.
//!
//! Like the other kinds, the steps that act are fenced (`ports::lease`): an instance
//! whose lease on the certificate was taken over starts no renewal, records none and
//! schedules no follow-up; the lease's new holder does.

use std::time::Duration;

use crate::audit::Action as AuditAction;
use crate::domain::names::{ObjectId, ObjectVersion};
use crate::ports::audit::Outcome;
use crate::ports::vault::CertificateOperation;
use crate::ports::{FailureKind, PortError};
use crate::rotation::RotationError;
use crate::rotation::job::{Action, Job};
use crate::rotation::plan::audit_object;
use crate::rotation::retry::retrying;
use crate::rotation::run::{RunOutcome, Step};
use crate::rotation::tags;

/// How long one invocation follows a renewal: self-signed renewals complete within
/// seconds; a minute covers them with room and stays far inside the invocation budget.
pub(crate) const CERTIFICATE_WAIT: Duration = Duration::from_secs(60);

/// Poll interval within the invocation.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Between follow-up jobs: an hour keeps a CA order that takes days to a few dozen
/// messages, and a certificate is due a rotate-before window (days) ahead anyway.
pub(crate) const FOLLOW_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// A week of hourly follow-ups: DigiCert and GlobalSign document OV validation in one to
/// three business days; a renewal still pending after a week needs a person.
pub(crate) const MAX_FOLLOW_ATTEMPTS: u32 = 7 * 24;

/// The issuer name Key Vault gives certificates issued outside it.
const UNKNOWN_ISSUER: &str = "Unknown";

/// Starts or follows the renewal of `object`, which was at `replaces_version` when the job
/// was planned; `attempt` counts follow-up jobs (0 for the first).
pub(super) async fn rotate(
    step: &Step<'_>,
    object: &ObjectId,
    replaces_version: &ObjectVersion,
    attempt: u32,
) -> Result<RunOutcome, RotationError> {
    let certificates = &step.engine.ports().certificates;
    let current = retrying(
        step.engine,
        step.deadline,
        "reading the certificate",
        || certificates.certificate_properties(object.vault(), object.name()),
    )
    .await
    .map_err(|e| RotationError::port(format!("reading certificate {object}"), e))?;
    let Some(current) = current else {
        return step.skip(object, "the certificate no longer exists").await;
    };
    if current.id.version() != Some(replaces_version) {
        if attempt > 0 {
            // A new version appeared while keyturn followed the renewal: it is recorded
            // as renewed only if the renewal operation completed with that very version.
            return match last_operation(step, object).await? {
                Some(CertificateOperation::Completed { version })
                    if current.id.version() == Some(&version) =>
                {
                    renewed(step, object, &current.id).await
                }
                _ => {
                    step.skip(
                        object,
                        "the certificate has a new version that no renewal keyturn followed made",
                    )
                    .await
                }
            };
        }
        return step.skip(object, "already renewed").await;
    }
    match tags::policy(object.object_type(), &current.tags, step.engine.defaults()) {
        Ok(Some(_)) => {}
        Ok(None) => return step.skip(object, "no longer managed").await,
        Err(source) => {
            return Err(RotationError::Tags {
                object: object.to_string(),
                source,
            });
        }
    }
    if attempt == 0 {
        let issuer = retrying(step.engine, step.deadline, "reading the issuer", || {
            certificates.issuer(object.vault(), object.name())
        })
        .await
        .map_err(|e| {
            RotationError::port(format!("reading the policy of certificate {object}"), e)
        })?;
        if issuer.trim().is_empty() || issuer.trim().eq_ignore_ascii_case(UNKNOWN_ISSUER) {
            return Err(RotationError::ManualRenewal {
                object: object.to_string(),
                issuer: if issuer.trim().is_empty() {
                    UNKNOWN_ISSUER.into()
                } else {
                    issuer
                },
            });
        }
        // An instance whose lease was taken over starts nothing: the new holder renews.
        step.fence().await?;
        let operation = retrying(step.engine, step.deadline, "starting the renewal", || {
            certificates.begin_renewal(object.vault(), object.name())
        })
        .await
        .map_err(|e| RotationError::port(format!("renewing certificate {object}"), e))?;
        step.record(
            AuditAction::CertificateRenewalStarted,
            audit_object(object, Some(replaces_version)),
            Outcome::Succeeded,
            &format!("issuer {issuer}"),
        )
        .await?;
        if let Some(done) = settled(step, object, replaces_version, operation).await? {
            return Ok(done);
        }
    }
    let waited_from = step.engine.clock().now();
    loop {
        let operation = retrying(step.engine, step.deadline, "following the renewal", || {
            certificates.renewal_status(object.vault(), object.name())
        })
        .await
        .map_err(|e| RotationError::port(format!("following the renewal of {object}"), e))?;
        if let Some(done) = settled(step, object, replaces_version, operation).await? {
            return Ok(done);
        }
        let waited = crate::rotation::run::until(waited_from, step.engine.clock().now());
        if waited + POLL_INTERVAL > CERTIFICATE_WAIT {
            break;
        }
        step.engine.pause(POLL_INTERVAL).await;
    }
    follow_later(step, object, replaces_version, attempt + 1).await
}

/// The certificate's last operation, or `None` when it has none.
async fn last_operation(
    step: &Step<'_>,
    object: &ObjectId,
) -> Result<Option<CertificateOperation>, RotationError> {
    let certificates = &step.engine.ports().certificates;
    match retrying(step.engine, step.deadline, "reading the renewal", || {
        certificates.renewal_status(object.vault(), object.name())
    })
    .await
    {
        Ok(operation) => Ok(Some(operation)),
        Err(PortError {
            kind: FailureKind::NotFound,
            ..
        }) => Ok(None),
        Err(e) => Err(RotationError::port(
            format!("reading the renewal of {object}"),
            e,
        )),
    }
}

/// `Some` when the operation has ended (renewed, or failed for good). An operation that
/// completed with the version the job replaces is an earlier renewal, not one of that
/// version: nothing was renewed, and the job is skipped, never recorded as a renewal.
async fn settled(
    step: &Step<'_>,
    object: &ObjectId,
    replaces_version: &ObjectVersion,
    operation: CertificateOperation,
) -> Result<Option<RunOutcome>, RotationError> {
    match operation {
        CertificateOperation::InProgress => Ok(None),
        CertificateOperation::Completed { version } if version == *replaces_version => step
            .skip(
                object,
                "no renewal of this version is under way: the last completed renewal made this version itself",
            )
            .await
            .map(Some),
        CertificateOperation::Completed { version } => {
            let id = object.vault().object_id(
                object.object_type(),
                object.name().clone(),
                Some(version),
            );
            renewed(step, object, &id).await.map(Some)
        }
        CertificateOperation::Failed { code } => Err(RotationError::RenewalFailed {
            object: object.to_string(),
            code,
        }),
        CertificateOperation::Cancelled => Err(RotationError::RenewalFailed {
            object: object.to_string(),
            code: "Cancelled".into(),
        }),
    }
}

async fn renewed(
    step: &Step<'_>,
    object: &ObjectId,
    new: &ObjectId,
) -> Result<RunOutcome, RotationError> {
    // Only the lease's holder records the renewal: one renewal, audited once.
    step.fence().await?;
    step.record(
        AuditAction::CertificateRenewed,
        audit_object(new, None),
        Outcome::Succeeded,
        &format!("replaces version {}", step.job.action.version()),
    )
    .await?;
    let _ = object;
    Ok(RunOutcome::Rotated {
        version: new.version().map(ToString::to_string).unwrap_or_default(),
        key_id: None,
    })
}

async fn follow_later(
    step: &Step<'_>,
    object: &ObjectId,
    replaces_version: &crate::domain::names::ObjectVersion,
    attempt: u32,
) -> Result<RunOutcome, RotationError> {
    if attempt > MAX_FOLLOW_ATTEMPTS {
        return Err(RotationError::RenewalStalled {
            object: object.to_string(),
            attempts: MAX_FOLLOW_ATTEMPTS,
        });
    }
    let follow = Job::new(Action::FollowRenewal {
        object: object.clone(),
        replaces_version: replaces_version.clone(),
        attempt,
    });
    let interval =
        chrono::Duration::from_std(FOLLOW_INTERVAL).unwrap_or(chrono::Duration::hours(1));
    let at = step.engine.clock().now() + interval;
    let message = follow.message(Some(at));
    let queue = &step.engine.ports().queue;
    // Taken over, the new holder follows the renewal; a second chain of follow-ups would
    // outlive the broker's duplicate window.
    step.fence().await?;
    retrying(step.engine, step.deadline, "scheduling a follow-up", || {
        queue.send(&message)
    })
    .await
    .map_err(|e| RotationError::port(format!("scheduling follow-up job {}", follow.job_id), e))?;
    step.record(
        AuditAction::CertificateRenewalPending,
        audit_object(object, Some(replaces_version)),
        Outcome::Succeeded,
        &format!("follow-up {attempt} at {}", at.to_rfc3339()),
    )
    .await?;
    Ok(RunOutcome::RenewalPending {
        next_attempt: attempt,
    })
}
