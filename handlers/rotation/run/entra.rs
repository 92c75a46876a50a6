//! `entra-app-secret`: an application's password credential, rotated in AWS Secrets
//! Manager's staged order (create, test, store as current, retire the previous one later)
//! through Graph, the Entra token endpoint and Key Vault.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use crate::audit::Action as AuditAction;
use crate::domain::ids::{AppId, DirectoryObjectId, KeyId};
use crate::domain::names::ObjectId;
use crate::ports::audit::Outcome;
use crate::ports::directory::{Application, IssuedCredential, PasswordCredential, ProofError};
use crate::ports::vault::{NewSecretVersion, SecretProperties};
use crate::ports::{FailureKind, PortError};
use crate::rotation::RotationError;
use crate::rotation::job::{Action, Job, JobId};
use crate::rotation::plan::audit_object;
use crate::rotation::retry::{Deadline, backoff, retrying};
use crate::rotation::run::{RunOutcome, Step, credential_object, until};
use crate::rotation::tags::{self, ManagedObject, NewBookkeeping};

/// Display names of keyturn's credentials start with this, followed by the job id.
pub const MARKER_PREFIX: &str = "keyturn ";

/// How long keyturn waits for the token endpoint to accept a new credential. Entra
/// documents no propagation SLA; new credentials have been observed to work after 4 to
/// 18 seconds. Two minutes is over six times the slowest observation and still leaves
/// most of an invocation's eight-minute budget for the other steps.
pub const PROOF_BUDGET: Duration = Duration::from_secs(120);

/// Longest wait between two proof attempts: propagation is a matter of seconds, so
/// polling more slowly than this would only add latency.
const MAX_PROOF_WAIT: Duration = Duration::from_secs(15);

/// The wait before proof attempt `attempt + 1`: 2, 4, 8, then every 15 seconds. No
/// jitter: one worker polls one credential.
fn proof_wait(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.clamp(1, 4)).min(MAX_PROOF_WAIT)
}

/// The display name marking a credential as added by `job`.
pub fn marker(job: &JobId) -> String {
    format!("{MARKER_PREFIX}{job}")
}

/// The job id in a keyturn marker; `None` for a credential a person added.
fn marked_job(credential: &PasswordCredential) -> Option<JobId> {
    credential
        .display_name
        .as_deref()?
        .strip_prefix(MARKER_PREFIX)
        .and_then(|rest| JobId::parse(rest.trim()).ok())
}

pub(super) async fn rotate(
    step: &Step<'_>,
    object: &ObjectId,
    current: &SecretProperties,
    app_id: &AppId,
    managed: &ManagedObject,
) -> Result<RunOutcome, RotationError> {
    let job_id = &step.job.job_id;
    let previous_version = current.id.version().cloned().ok_or_else(|| {
        RotationError::port(
            "reading the secret",
            PortError::invalid("current version without a version id"),
        )
    })?;
    let app = resolve(step, object, app_id).await?;

    // Invariant 3: what an earlier delivery of this job added but never stored goes first.
    remove_strays(step, object, &app, &[]).await?;

    let now = step.engine.clock().now();
    let end = requested_end(now, managed);
    let issued = add(step, object, &app, end).await?;
    let new_key = issued.credential.key_id;

    // Invariant 4: proven before stored.
    if let Err(error) = prove(step, object, app_id, &issued).await {
        remove_quietly(
            step,
            object,
            &app,
            &new_key,
            "never accepted by the token endpoint",
        )
        .await;
        return Err(error);
    }

    let tags = tags::new_version_tags(
        &current.tags,
        &NewBookkeeping {
            key_id: Some(&new_key),
            // Invariant 6: a key id is handed on only from a version keyturn wrote; one a
            // person copied onto a version of their own proves nothing.
            previous_key_id: managed
                .bookkeeping
                .key_id
                .as_ref()
                .filter(|_| managed.bookkeeping.written_by_keyturn()),
            previous_version: &previous_version,
            job_id: job_id.as_str(),
            rotated_at: now,
        },
    );
    let secrets = &step.engine.ports().secrets;
    let version = NewSecretVersion {
        content_type: current.content_type.clone(),
        not_before: None,
        expires: Some(end),
        tags,
    };
    let stored = retrying(
        step.engine,
        step.deadline,
        "storing the new version",
        || {
            secrets.set_secret(
                object.vault(),
                object.name(),
                &issued.secret,
                version.clone(),
            )
        },
    )
    .await
    .map_err(|e| RotationError::port(format!("storing a new version of {object}"), e));
    let stored = match stored {
        Ok(stored) => stored,
        Err(error) => {
            // Refused for good (a missing role, a policy): the version was not written and
            // no delivery will come back to clear the credential up (invariant 3 needs one).
            // A transient failure may hide a write that took effect, so that credential is
            // left to the redelivery, which finds out which it was.
            if error.is_permanent() {
                remove_quietly(
                    step,
                    object,
                    &app,
                    &new_key,
                    "Key Vault refused to store it",
                )
                .await;
            }
            return Err(error);
        }
    };
    let new_version = stored
        .id
        .version()
        .map(ToString::to_string)
        .unwrap_or_default();
    step.record(
        AuditAction::SecretRotated,
        credential_object(&stored.id, app_id, Some(&new_key)),
        Outcome::Succeeded,
        &format!("replaces version {previous_version}"),
    )
    .await?;

    converge_after_store(step, object, &stored, app_id, managed).await?;
    Ok(RunOutcome::Rotated {
        version: new_version,
        key_id: Some(new_key.to_string()),
    })
}

/// The end of validity keyturn asks Graph for: the policy's validity from `now`, in whole
/// seconds (Graph keeps whole seconds; the vault's expiry must equal the credential's end).
pub(super) fn requested_end(now: DateTime<Utc>, managed: &ManagedObject) -> DateTime<Utc> {
    (now + managed.policy.validity.span()).trunc_subsecs(0)
}

/// `addPassword` with this job's marker, audited. A credential whose addition cannot be
/// audited for good is removed again (no delivery comes back for it); a transient audit
/// failure is left to the redelivery, which finds the credential by its marker
/// (invariant 3).
async fn add(
    step: &Step<'_>,
    object: &ObjectId,
    app: &Application,
    end: DateTime<Utc>,
) -> Result<IssuedCredential, RotationError> {
    let directory = &step.engine.ports().directory;
    let name = marker(&step.job.job_id);
    let issued: IssuedCredential = retrying(
        step.engine,
        step.deadline,
        "adding a password credential",
        || directory.add_password(&app.object_id, &name, end),
    )
    .await
    .map_err(|e| {
        RotationError::port(
            format!("adding a password credential to application {}", app.app_id),
            e,
        )
    })?;
    let new_key = issued.credential.key_id;
    if let Err(error) = step
        .record(
            AuditAction::CredentialAdded,
            credential_object(object, &app.app_id, Some(&new_key)),
            Outcome::Succeeded,
            &format!("valid until {}", end.to_rfc3339()),
        )
        .await
    {
        if error.is_permanent() {
            remove_quietly(
                step,
                object,
                app,
                &new_key,
                "its addition could not be audited",
            )
            .await;
        }
        return Err(error);
    }
    Ok(issued)
}

/// After this job's version is stored (now, or by an earlier delivery): removes strays of
/// this job and schedules retirement of the previous credential (invariants 3, 5, 7).
pub(super) async fn converge_after_store(
    step: &Step<'_>,
    object: &ObjectId,
    stored: &SecretProperties,
    app_id: &AppId,
    managed: &ManagedObject,
) -> Result<(), RotationError> {
    let notes = tags::Bookkeeping::read(&stored.tags);
    let app = resolve(step, object, app_id).await?;
    remove_strays(step, object, &app, &notes.key_id.iter().collect::<Vec<_>>()).await?;
    let (Some(previous_key), Some(previous_version), Some(successor)) = (
        notes.previous_key_id,
        notes.previous_version,
        stored.id.version(),
    ) else {
        step.record(
            AuditAction::RetirementScheduled,
            audit_object(&stored.id, None),
            Outcome::Skipped,
            "the previous version records no credential keyturn created; it is left to expire",
        )
        .await?;
        return Ok(());
    };
    if Some(previous_key) == notes.key_id {
        return Ok(());
    }
    let retire = Job::new(Action::Retire {
        object: object.clone(),
        replaced_version: previous_version,
        app_object_id: app.object_id,
        key_id: previous_key,
        successor_version: successor.clone(),
        rotated_by: step.job.job_id.clone(),
    });
    let rotated_at = notes
        .rotated_at
        .unwrap_or_else(|| step.engine.clock().now());
    let at = rotated_at + managed.policy.overlap.span();
    let message = retire.message(Some(at));
    let queue = &step.engine.ports().queue;
    retrying(step.engine, step.deadline, "scheduling retirement", || {
        queue.send(&message)
    })
    .await
    .map_err(|e| RotationError::port(format!("scheduling retirement job {}", retire.job_id), e))?;
    step.record(
        AuditAction::RetirementScheduled,
        credential_object(object, app_id, Some(&previous_key)),
        Outcome::Succeeded,
        &format!("retire job {} at {}", retire.job_id, at.to_rfc3339()),
    )
    .await
}

/// Removes the credential `key_id` once its successor is stored (invariants 5 and 6).
pub(super) async fn retire(step: &Step<'_>) -> Result<RunOutcome, RotationError> {
    let Action::Retire {
        object,
        app_object_id,
        key_id,
        successor_version,
        rotated_by,
        ..
    } = &step.job.action
    else {
        return Err(RotationError::port(
            "retiring",
            PortError::invalid("not a retire job"),
        ));
    };
    let Some(current) = step.current_secret(object).await? else {
        return step.skip(object, "the secret no longer exists").await;
    };
    let current_notes = tags::Bookkeeping::read(&current.tags);
    let current_key = current_notes.key_id;
    if current_key.as_ref() == Some(key_id) {
        return step
            .skip(
                object,
                "the credential is the one the current version holds",
            )
            .await;
    }
    // A version a person wrote after the successor (a rollback) may hold the very credential
    // due for removal under a value keyturn cannot see; only keyturn's own versions tell.
    if current.id.version() != Some(successor_version) && !current_notes.written_by_keyturn() {
        return step
            .skip(
                object,
                "the current version was not written by keyturn (a rollback?); the credential is kept",
            )
            .await;
    }
    let secrets = &step.engine.ports().secrets;
    let successor = retrying(step.engine, step.deadline, "reading the successor", || {
        secrets.secret_properties(object.vault(), object.name(), Some(successor_version))
    })
    .await
    .map_err(|e| {
        RotationError::port(
            format!("reading version {successor_version} of {object}"),
            e,
        )
    })?;
    let Some(successor_notes) = successor
        .as_ref()
        .map(|s| tags::Bookkeeping::read(&s.tags))
        .filter(tags::Bookkeeping::written_by_keyturn)
    else {
        return step
            .skip(
                object,
                "the successor version is not stored; nothing is retired",
            )
            .await;
    };
    // Invariant 6: only the key keyturn recorded as the successor's predecessor.
    if successor_notes.previous_key_id.as_ref() != Some(key_id) {
        return step
            .skip(
                object,
                "the successor version does not record the credential as the one it replaces",
            )
            .await;
    }

    // Only on the application the secret names now, never on one a job merely carries.
    let app_id = match tags::managed(object.object_type(), &current.tags, step.engine.defaults()) {
        Ok(Some(ManagedObject {
            policy:
                tags::RotationPolicy {
                    kind: tags::Kind::EntraAppSecret { app_id },
                    ..
                },
            ..
        })) => app_id,
        _ => {
            return step
                .skip(object, "the secret no longer names an application")
                .await;
        }
    };
    let app = match resolve(step, object, &app_id).await {
        Ok(app) => app,
        Err(RotationError::ApplicationNotFound { .. }) => {
            return step
                .skip(object, "the application the secret names does not exist")
                .await;
        }
        Err(error) => return Err(error),
    };
    if app.object_id != *app_object_id {
        return step
            .skip(
                object,
                "the job's application is not the one the secret names",
            )
            .await;
    }

    let directory = &step.engine.ports().directory;
    let credentials = retrying(step.engine, step.deadline, "listing credentials", || {
        directory.password_credentials(app_object_id)
    })
    .await
    .map_err(|e| {
        RotationError::port(
            format!("listing credentials of application object {app_object_id}"),
            e,
        )
    })?;
    let audited = |key: &KeyId| credential_object(object, &app_id, Some(key));
    let outcome = match credentials.iter().find(|c| c.key_id == *key_id) {
        None => {
            step.record(
                AuditAction::CredentialRetired,
                audited(key_id),
                Outcome::Skipped,
                "already removed",
            )
            .await?;
            RunOutcome::Retired {
                key_id: key_id.to_string(),
            }
        }
        Some(credential) if marked_job(credential).is_none() => {
            step.record(
                AuditAction::CredentialRetired,
                audited(key_id),
                Outcome::Skipped,
                "the credential does not carry keyturn's marker; a person's credential is never removed",
            )
            .await?;
            return Ok(RunOutcome::Skipped {
                reason: "not keyturn's credential".into(),
            });
        }
        Some(_) => {
            remove(step, app_object_id, key_id).await?;
            step.record(
                AuditAction::CredentialRetired,
                audited(key_id),
                Outcome::Succeeded,
                "previous credential removed after the overlap",
            )
            .await?;
            RunOutcome::Retired {
                key_id: key_id.to_string(),
            }
        }
    };
    // Strays of the rotation that made the successor (invariant 3), never the current one.
    for stray in credentials.iter().filter(|c| {
        marked_job(c).as_ref() == Some(rotated_by)
            && Some(c.key_id) != current_key
            && c.key_id != *key_id
    }) {
        remove(step, app_object_id, &stray.key_id).await?;
        step.record(
            AuditAction::CredentialOrphanRemoved,
            audited(&stray.key_id),
            Outcome::Succeeded,
            "stray of an earlier attempt",
        )
        .await?;
    }
    Ok(outcome)
}

async fn resolve(
    step: &Step<'_>,
    object: &ObjectId,
    app_id: &AppId,
) -> Result<Application, RotationError> {
    let directory = &step.engine.ports().directory;
    retrying(
        step.engine,
        step.deadline,
        "looking up the application",
        || directory.application(app_id),
    )
    .await
    .map_err(|e| RotationError::port(format!("looking up application {app_id}"), e))?
    .ok_or_else(|| RotationError::ApplicationNotFound {
        object: object.to_string(),
        app_id: app_id.to_string(),
    })
}

/// For a job whose version is no longer current: removes what an earlier delivery of it
/// added but never stored (invariant 3). The credentials the current version records (its
/// own and, during the overlap, the one it replaced) are the vault's and stay.
pub(super) async fn remove_strays_when_skipped(
    step: &Step<'_>,
    object: &ObjectId,
    current: &SecretProperties,
) -> Result<(), RotationError> {
    let Ok(Some(managed)) =
        tags::managed(object.object_type(), &current.tags, step.engine.defaults())
    else {
        return Ok(());
    };
    let tags::Kind::EntraAppSecret { app_id } = &managed.policy.kind else {
        return Ok(());
    };
    let app = match resolve(step, object, app_id).await {
        Ok(app) => app,
        Err(RotationError::ApplicationNotFound { .. }) => return Ok(()),
        Err(error) => return Err(error),
    };
    let notes = &managed.bookkeeping;
    let held: Vec<&KeyId> = [notes.key_id.as_ref(), notes.previous_key_id.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    remove_strays(step, object, &app, &held).await
}

/// Removes every credential bearing this job's marker except those in `keep`.
async fn remove_strays(
    step: &Step<'_>,
    object: &ObjectId,
    app: &Application,
    keep: &[&KeyId],
) -> Result<(), RotationError> {
    let directory = &step.engine.ports().directory;
    let credentials = retrying(step.engine, step.deadline, "listing credentials", || {
        directory.password_credentials(&app.object_id)
    })
    .await
    .map_err(|e| {
        RotationError::port(
            format!("listing credentials of application {}", app.app_id),
            e,
        )
    })?;
    let strays = credentials
        .iter()
        .filter(|c| marked_job(c).as_ref() == Some(&step.job.job_id) && !keep.contains(&&c.key_id));
    for stray in strays {
        remove(step, &app.object_id, &stray.key_id).await?;
        step.record(
            AuditAction::CredentialOrphanRemoved,
            credential_object(object, &app.app_id, Some(&stray.key_id)),
            Outcome::Succeeded,
            "added by an earlier attempt of this job and never stored",
        )
        .await?;
    }
    Ok(())
}

/// removePassword; a credential already gone counts as removed.
async fn remove(
    step: &Step<'_>,
    app: &DirectoryObjectId,
    key_id: &KeyId,
) -> Result<(), RotationError> {
    let directory = &step.engine.ports().directory;
    match retrying(
        step.engine,
        step.deadline,
        "removing a password credential",
        || directory.remove_password(app, key_id),
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(PortError {
            kind: FailureKind::NotFound,
            ..
        }) => Ok(()),
        Err(e) => Err(RotationError::port(
            format!("removing credential {key_id}"),
            e,
        )),
    }
}

/// Best-effort removal after a failed proof; a failure here is left to the next delivery,
/// which finds the credential by its marker.
async fn remove_quietly(
    step: &Step<'_>,
    object: &ObjectId,
    app: &Application,
    key_id: &KeyId,
    why: &str,
) {
    match remove(step, &app.object_id, key_id).await {
        Ok(()) => {
            if let Err(error) = step
                .record(
                    AuditAction::CredentialRemoved,
                    credential_object(object, &app.app_id, Some(key_id)),
                    Outcome::Succeeded,
                    why,
                )
                .await
            {
                tracing::warn!(%error, "cannot audit the removal of an unproven credential");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot remove an unproven credential; the next delivery will")
        }
    }
}

/// Acquires a token with the new credential until the token endpoint accepts it.
async fn prove(
    step: &Step<'_>,
    object: &ObjectId,
    app_id: &AppId,
    issued: &IssuedCredential,
) -> Result<(), RotationError> {
    let engine = step.engine;
    let started = engine.clock().now();
    let give_up_at: DateTime<Utc> = Deadline::after(started, PROOF_BUDGET)
        .0
        .min(step.deadline.0);
    let mut attempt = 1;
    loop {
        let (wait, code) = match engine.ports().prover.prove(app_id, &issued.secret).await {
            Ok(()) => break,
            Err(ProofError::Rejected { code }) => (proof_wait(attempt), code),
            Err(ProofError::Port(e)) => match e.kind {
                FailureKind::Transient { retry_after } => (
                    retry_after.unwrap_or_else(|| backoff(attempt)),
                    "transient".to_string(),
                ),
                _ => {
                    return Err(RotationError::port(
                        format!("proving the new credential of application {app_id}"),
                        e,
                    ));
                }
            },
        };
        let now = engine.clock().now();
        // A wait the clock cannot even represent passes the deadline; no panic on a
        // server's word.
        if Deadline(give_up_at).would_pass(now, wait) {
            return Err(RotationError::ProofTimedOut {
                object: object.to_string(),
                waited_s: until(started, now).as_secs(),
                code,
            });
        }
        tracing::debug!(
            attempt,
            code,
            "new credential not accepted yet; waiting for propagation"
        );
        engine.pause(wait).await;
        attempt += 1;
    }
    let waited = until(started, engine.clock().now());
    step.record(
        AuditAction::CredentialProven,
        credential_object(object, app_id, Some(&issued.credential.key_id)),
        Outcome::Succeeded,
        &format!(
            "token acquired after {} s, {attempt} attempt(s)",
            waited.as_secs()
        ),
    )
    .await
}
