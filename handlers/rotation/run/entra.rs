//! `entra-app-secret`: an application's password credential, rotated in AWS Secrets
//! Manager's staged order through Graph, the Entra token endpoint and Key Vault:
//!
//! 1. **add**: one `addPassword`, marked with the rotation's job id;
//! 2. **pending**: the new value is stored at once, in Key Vault only, as a companion
//!    secret `keyturn-pending-{keyId}` that no consumer of the managed secret reads, tagged
//!    with the secret it belongs to and the state of its proof;
//! 3. **prove**: one token request per delivery, in scheduled `prove` follow-ups, until the
//!    token endpoint accepted the credential N times in a row across at least W seconds,
//!    or the proof deadline passes;
//! 4. **promote**: the value becomes the managed secret's new current version, the pending
//!    copy is deleted and the previous credential's retirement scheduled;
//! 5. **retire**: after the overlap, the previous credential is removed.
//!
//! The pending copy's name carries the credential's keyId, so every rotation uses a name
//! never used before: Key Vault's soft delete keeps a deleted name taken for the vault's
//! retention period (7 to 90 days), and a fixed name deleted after one rotation could not
//! be set again by the next. The keyId also ties the two halves together after a crash:
//! a credential marked by a rotation is either held by a pending copy (its proof goes on)
//! or by a version of the managed secret, or it is a stray that is removed.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

use crate::audit::Action as AuditAction;
use crate::domain::ids::{AppId, DirectoryObjectId, KeyId};
use crate::domain::inventory::OWNER_TAG;
use crate::domain::names::{ObjectId, ObjectName};
use crate::domain::secret::SecretValue;
use crate::ports::audit::Outcome;
use crate::ports::directory::{
    Application, IssuedCredential, PasswordCredential, PasswordRules, ProofError,
};
use crate::ports::vault::{NewSecretVersion, SecretProperties};
use crate::ports::{FailureKind, PortError};
use crate::rotation::RotationError;
use crate::rotation::job::{Action, Job, JobId};
use crate::rotation::plan::audit_object;
use crate::rotation::retry::retrying;
use crate::rotation::run::{RunOutcome, Step, credential_object, until};
use crate::rotation::tags::{self, ManagedObject, NewBookkeeping, ProofPolicy};

/// Display names of keyturn's credentials start with this, followed by the job id.
pub const MARKER_PREFIX: &str = "keyturn ";

/// Names of pending copies start with this, followed by the credential's keyId.
pub const PENDING_PREFIX: &str = "keyturn-pending-";

/// The first wait after a refusal. Entra's propagation takes minutes; the first retries
/// come quickly for the common case of a few seconds, then back off.
const FIRST_PROOF_WAIT: Duration = Duration::from_secs(5);

/// Longest wait between two proof attempts while the credential is refused: field reports
/// put propagation at 2 to over 10 minutes, so a minute keeps promotion within a minute of
/// the credential working at the cost of about one delivery a minute.
const MAX_PROOF_WAIT: Duration = Duration::from_secs(60);

/// Shortest spacing of two acceptances counted towards a proof: requests closer together
/// are likely answered by the same replica and prove nothing about the others.
const MIN_PROOF_SPACING: Duration = Duration::from_secs(5);

/// The wait before the next proof attempt after `refusals` refusals in a row (at least
/// one): 5, 10, 20, 40, then every 60 seconds. No jitter: one worker polls one credential.
fn refused_wait(refusals: u32) -> Duration {
    FIRST_PROOF_WAIT
        .saturating_mul(1u32 << refusals.saturating_sub(1).min(4))
        .min(MAX_PROOF_WAIT)
}

/// The wait before the next attempt during a run of `streak` acceptances that began at
/// `since`: the rest of the window shared out over the acceptances still needed, so the
/// last one lands when the window is complete.
fn streak_wait(
    proof: ProofPolicy,
    streak: u32,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Duration {
    let left = until(now, since + proof.window());
    let needed = proof.successes.saturating_sub(streak);
    let wait = if needed == 0 { left } else { left / needed };
    wait.max(MIN_PROOF_SPACING)
}

/// `at` rounded up to a whole second.
fn ceil_to_second(at: DateTime<Utc>) -> DateTime<Utc> {
    let whole = at.trunc_subsecs(0);
    if whole < at {
        whole + chrono::Duration::seconds(1)
    } else {
        whole
    }
}

/// The display name marking a credential as added by `job`.
pub fn marker(job: &JobId) -> String {
    format!("{MARKER_PREFIX}{job}")
}

/// The name of the pending copy of the credential `key_id`.
pub fn pending_name(key_id: &KeyId) -> ObjectName {
    // "keyturn-pending-" and a GUID: 52 letters, digits and hyphens, a valid name.
    ObjectName::parse(&format!("{PENDING_PREFIX}{key_id}"))
        .expect("invariant: a keyId makes a valid secret name")
}

/// The job id in a keyturn marker; `None` for a credential a person added.
fn marked_job(credential: &PasswordCredential) -> Option<JobId> {
    credential
        .display_name
        .as_deref()?
        .strip_prefix(MARKER_PREFIX)
        .and_then(|rest| JobId::parse(rest.trim()).ok())
}

/// The rotation the job at hand belongs to (its marker).
fn rotation_id(step: &Step<'_>) -> JobId {
    step.job
        .action
        .rotation_id()
        .unwrap_or_else(|| step.job.job_id.clone())
}

/// A pending copy and the state of its proof, read from its tags.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    properties: SecretProperties,
    key_id: KeyId,
    deadline: DateTime<Utc>,
    streak: u32,
    since: Option<DateTime<Utc>>,
    attempt: u32,
}

impl Pending {
    /// The pending copy's state, when its tags say it holds `key_id` for `object` in the
    /// rotation `rotation`; `None` for anything else (a secret a person named alike).
    fn read(
        properties: SecretProperties,
        object: &ObjectId,
        rotation: &JobId,
        key_id: &KeyId,
    ) -> Option<Self> {
        let tag = |name: &str| {
            properties
                .tags
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let time = |name: &str| {
            tag(name)
                .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let belongs = tag(tags::PENDING_FOR)
            .is_some_and(|n| n.eq_ignore_ascii_case(object.name().as_str()))
            && tag(tags::JOB_ID).as_deref() == Some(rotation.as_str())
            && tag(tags::KEY_ID).as_deref() == Some(key_id.to_string().as_str());
        if !belongs {
            return None;
        }
        Some(Self {
            key_id: *key_id,
            deadline: time(tags::PROOF_DEADLINE)?,
            streak: tag(tags::PROOF_STREAK)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            since: time(tags::PROOF_SINCE),
            attempt: tag(tags::PROOF_ATTEMPT)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            properties,
        })
    }

    /// The tags of a pending copy: what it belongs to, where its proof stands, and the
    /// owner of the secret it belongs to (`current`'s `keyturn-owner`), whose it is too.
    #[allow(clippy::too_many_arguments)]
    fn tags(
        object: &ObjectId,
        current: &SecretProperties,
        rotation: &JobId,
        key_id: &KeyId,
        deadline: DateTime<Utc>,
        streak: u32,
        since: Option<DateTime<Utc>>,
        attempt: u32,
    ) -> BTreeMap<String, String> {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut tags = BTreeMap::from([
            (tags::PENDING_FOR.to_string(), object.name().to_string()),
            (tags::JOB_ID.to_string(), rotation.to_string()),
            (tags::KEY_ID.to_string(), key_id.to_string()),
            (tags::PROOF_DEADLINE.to_string(), time(deadline)),
            (tags::PROOF_STREAK.to_string(), streak.to_string()),
            (tags::PROOF_ATTEMPT.to_string(), attempt.to_string()),
        ]);
        if let Some(since) = since {
            tags.insert(tags::PROOF_SINCE.to_string(), time(since));
        }
        if let Some((_, owner)) = current
            .tags
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(OWNER_TAG))
        {
            tags.insert(OWNER_TAG.to_string(), owner.clone());
        }
        tags
    }
}

pub(super) async fn rotate(
    step: &Step<'_>,
    object: &ObjectId,
    current: &SecretProperties,
    app_id: &AppId,
    managed: &ManagedObject,
) -> Result<RunOutcome, RotationError> {
    let app = resolve(step, object, app_id).await?;

    // Invariant 3: a credential an earlier delivery of this rotation added is either being
    // proven (its pending copy exists: the proof goes on, nothing is added) or a stray.
    if let Some(pending) = in_flight(step, object, &app).await? {
        return resume(step, object, current, &app, managed, pending).await;
    }

    let rules = password_rules(step, object, &app).await?;
    let now = step.engine.clock().now();
    let end = capped_end(now, requested_end(now, managed), &rules);
    let issued = add(step, object, &app, end).await?;
    // The credential ends when Graph says it does: its answer, not the request, is the
    // expiry the pending copy and then the promoted version carry.
    let end = issued.credential.end.unwrap_or(end);
    let pending = stage(step, object, current, &app, managed, &issued, end, now).await?;
    advance(step, object, current, &app, managed, pending, 0).await
}

/// The end of validity keyturn asks Graph for: the policy's validity from `now`, in whole
/// seconds (Graph keeps whole seconds; the vault's expiry must equal the credential's end).
pub(crate) fn requested_end(now: DateTime<Utc>, managed: &ManagedObject) -> DateTime<Utc> {
    (now + managed.policy.validity.span()).trunc_subsecs(0)
}

/// The tenant's rules for a new password of `app`, read before `addPassword`: a policy
/// that forbids passwords is a permanent failure naming it, and so is an application that
/// may hold only two passwords (it allows personal Microsoft accounts) and holds them.
async fn password_rules(
    step: &Step<'_>,
    object: &ObjectId,
    app: &Application,
) -> Result<PasswordRules, RotationError> {
    let directory = &step.engine.ports().directory;
    let rules = retrying(
        step.engine,
        step.deadline,
        "reading the app management policies",
        || directory.password_rules(&app.object_id),
    )
    .await
    .map_err(|e| {
        RotationError::port(
            format!(
                "reading the app management policies of application {}",
                app.app_id
            ),
            e,
        )
    })?;
    if let Some(policy) = &rules.forbidden_by {
        return Err(RotationError::PasswordsForbidden {
            object: object.to_string(),
            app_id: app.app_id.to_string(),
            policy: policy.clone(),
        });
    }
    if let Some(max) = rules.max_passwords {
        let held = retrying(
            step.engine,
            step.deadline,
            "listing password credentials",
            || directory.password_credentials(&app.object_id),
        )
        .await
        .map_err(|e| {
            RotationError::port(
                format!("listing the credentials of application {}", app.app_id),
                e,
            )
        })?
        .len();
        if held >= max {
            return Err(RotationError::TooManyPasswords {
                object: object.to_string(),
                app_id: app.app_id.to_string(),
                max,
                held,
            });
        }
    }
    Ok(rules)
}

/// `end`, or the end the policy's `maxLifetime` allows from `now` when that is sooner.
pub(crate) fn capped_end(
    now: DateTime<Utc>,
    end: DateTime<Utc>,
    rules: &PasswordRules,
) -> DateTime<Utc> {
    match &rules.max_lifetime {
        Some((max, policy)) => {
            let allowed = now
                .checked_add_signed(*max)
                .map_or(end, |allowed| allowed.trunc_subsecs(0));
            if allowed < end {
                tracing::warn!(
                    %policy,
                    requested = %end,
                    allowed = %allowed,
                    "the app management policy caps the new credential's lifetime"
                );
            }
            end.min(allowed)
        }
        None => end,
    }
}

/// `addPassword` with this rotation's marker, audited. A credential whose addition cannot
/// be audited for good is removed again (no delivery comes back for it); a transient audit
/// failure is left to the redelivery, which finds the credential by its marker
/// (invariant 3).
async fn add(
    step: &Step<'_>,
    object: &ObjectId,
    app: &Application,
    end: DateTime<Utc>,
) -> Result<IssuedCredential, RotationError> {
    let directory = &step.engine.ports().directory;
    let name = marker(&rotation_id(step));
    // Nothing is added for an object another instance took over: it would be its stray.
    step.fence().await?;
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

/// Stores the new value as its pending copy, at once: from here a crash loses nothing.
#[allow(clippy::too_many_arguments)]
async fn stage(
    step: &Step<'_>,
    object: &ObjectId,
    current: &SecretProperties,
    app: &Application,
    managed: &ManagedObject,
    issued: &IssuedCredential,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Pending, RotationError> {
    let key_id = issued.credential.key_id;
    let deadline = now + managed.policy.proof.deadline();
    let name = pending_name(&key_id);
    let version = NewSecretVersion {
        content_type: None,
        not_before: None,
        expires: Some(end),
        tags: Pending::tags(
            object,
            current,
            &rotation_id(step),
            &key_id,
            deadline,
            0,
            None,
            0,
        ),
    };
    // Fenced: taken over since the credential was added, the new holder removes it as a
    // stray (it bears this rotation's marker and no pending copy holds it).
    let stored = step
        .store_secret(
            object,
            &name,
            &issued.secret,
            version,
            &format!("storing the pending copy {name}"),
        )
        .await;
    let stored = match stored {
        Ok(stored) => stored,
        Err(error) => {
            // Refused for good (a missing role, a policy): nothing was written and no
            // delivery comes back for the credential (invariant 3 needs one). A transient
            // failure may hide a write that took effect: the redelivery finds out which.
            if error.is_permanent() {
                remove_quietly(step, object, app, &key_id, "Key Vault refused to store it").await;
            }
            return Err(error);
        }
    };
    step.record(
        AuditAction::CredentialPending,
        credential_object(object, &app.app_id, Some(&key_id)),
        Outcome::Succeeded,
        &format!(
            "stored as {name}; proof until {}",
            deadline.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
    )
    .await?;
    Pending::read(stored, object, &rotation_id(step), &key_id).ok_or_else(|| {
        RotationError::port(
            format!("reading back the pending copy {name}"),
            PortError::invalid("its tags do not read back"),
        )
    })
}

/// The pending copy of a credential this rotation added, if any; every other credential
/// bearing its marker that no pending copy holds is a stray and is removed.
async fn in_flight(
    step: &Step<'_>,
    object: &ObjectId,
    app: &Application,
) -> Result<Option<Pending>, RotationError> {
    let rotation = rotation_id(step);
    let held = held_keys(step, object).await?;
    let mut found = None;
    for credential in marked_credentials(step, app, &rotation).await? {
        if held.contains(&credential.key_id) {
            continue;
        }
        if found.is_none()
            && let Some(pending) = pending(step, object, &rotation, &credential.key_id).await?
        {
            found = Some(pending);
            continue;
        }
        remove_stray(step, object, app, &credential.key_id).await?;
    }
    Ok(found)
}

/// The pending copy holding `key_id` for this rotation.
async fn pending(
    step: &Step<'_>,
    object: &ObjectId,
    rotation: &JobId,
    key_id: &KeyId,
) -> Result<Option<Pending>, RotationError> {
    let secrets = &step.engine.ports().secrets;
    let name = pending_name(key_id);
    let found = retrying(
        step.engine,
        step.deadline,
        "reading the pending copy",
        || secrets.secret_properties(object.vault(), &name, None),
    )
    .await
    .map_err(|e| RotationError::port(format!("reading the pending copy {name}"), e))?;
    Ok(found.and_then(|p| Pending::read(p, object, rotation, key_id)))
}

/// A rotate job delivered again while its credential is being proven (a redelivery, or
/// the sweep after the broker's duplicate window): the proof's next follow-up is sent
/// again, which the broker drops if it still holds it, so one proof goes on, never two.
/// A proof that never made its first attempt makes it now.
async fn resume(
    step: &Step<'_>,
    object: &ObjectId,
    current: &SecretProperties,
    app: &Application,
    managed: &ManagedObject,
    pending: Pending,
) -> Result<RunOutcome, RotationError> {
    if pending.attempt == 0 {
        return advance(step, object, current, app, managed, pending, 0).await;
    }
    let now = step.engine.clock().now();
    let at = now.min(pending.deadline);
    schedule(step, object, &pending.key_id, pending.attempt, at).await?;
    Ok(RunOutcome::Proving {
        key_id: pending.key_id.to_string(),
        accepted: pending.streak,
        needed: managed.policy.proof.successes,
        next_attempt_at: at.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// Sends the `prove` follow-up `attempt` for the credential `key_id`, due at `at`.
async fn schedule(
    step: &Step<'_>,
    object: &ObjectId,
    key_id: &KeyId,
    attempt: u32,
    at: DateTime<Utc>,
) -> Result<(), RotationError> {
    let follow = Job::new(Action::Prove {
        object: object.clone(),
        replaces_version: step.job.action.version().clone(),
        key_id: *key_id,
        attempt,
    });
    let message = follow.message(Some(at));
    let queue = &step.engine.ports().queue;
    retrying(
        step.engine,
        step.deadline,
        "scheduling the next proof",
        || queue.send(&message),
    )
    .await
    .map_err(|e| RotationError::port(format!("scheduling proof job {}", follow.job_id), e))
}

/// The `prove` follow-up: one more proof attempt of the credential `key_id`.
pub(super) async fn prove_pending(
    step: &Step<'_>,
    object: &ObjectId,
    current: &SecretProperties,
    app_id: &AppId,
    managed: &ManagedObject,
    key_id: &KeyId,
    attempt: u32,
) -> Result<RunOutcome, RotationError> {
    let app = resolve(step, object, app_id).await?;
    let rotation = rotation_id(step);
    match pending(step, object, &rotation, key_id).await? {
        Some(pending) => advance(step, object, current, &app, managed, pending, attempt).await,
        None => {
            // Promoted, given up or never stored: what this rotation left unheld goes.
            in_flight(step, object, &app).await?;
            step.skip(
                object,
                "no pending credential of this rotation is being proven",
            )
            .await
        }
    }
}

/// One proof attempt of a pending credential, then: promotion once proven, the end of the
/// rotation once its deadline has passed, or the next attempt scheduled.
async fn advance(
    step: &Step<'_>,
    object: &ObjectId,
    current: &SecretProperties,
    app: &Application,
    managed: &ManagedObject,
    pending: Pending,
    attempt: u32,
) -> Result<RunOutcome, RotationError> {
    let engine = step.engine;
    let proof = managed.policy.proof;
    let now = engine.clock().now();
    if now >= pending.deadline {
        return give_up(step, object, app, &pending, proof).await;
    }
    let secrets = &engine.ports().secrets;
    let name = pending_name(&pending.key_id);
    let value = retrying(
        engine,
        step.deadline,
        "reading the pending credential",
        || secrets.secret(object.vault(), &name, None),
    )
    .await
    .map_err(|e| RotationError::port(format!("reading the pending copy {name}"), e))?;
    let Some(value) = value else {
        return step
            .skip(object, "the pending copy is gone; nothing is being proven")
            .await;
    };
    let value = value.value;
    let audited = credential_object(object, &app.app_id, Some(&pending.key_id));
    let (streak, since) = match engine.ports().prover.prove(&app.app_id, &value).await {
        Ok(()) => {
            let streak = pending.streak.saturating_add(1);
            // Kept in whole seconds (the tag's precision), rounded up so the window is
            // never shorter than asked.
            let since = pending.since.unwrap_or_else(|| ceil_to_second(now));
            step.record(
                AuditAction::CredentialProving,
                audited.clone(),
                Outcome::Succeeded,
                &format!(
                    "accepted {streak}/{} in a row over {} s (attempt {})",
                    proof.successes,
                    until(since, now).as_secs(),
                    attempt + 1
                ),
            )
            .await?;
            (streak, Some(since))
        }
        Err(ProofError::Rejected { code }) => {
            step.record(
                AuditAction::CredentialProving,
                audited.clone(),
                Outcome::Failed,
                &format!(
                    "refused ({code}), not propagated yet (attempt {})",
                    attempt + 1
                ),
            )
            .await?;
            (0, None)
        }
        Err(ProofError::Port(e)) if e.is_transient() => {
            tracing::info!(error = %e, "the token endpoint is unavailable; the proof waits");
            (pending.streak, pending.since)
        }
        Err(ProofError::Port(e)) => {
            abandon(
                step,
                object,
                app,
                &pending.key_id,
                "its proof failed for good",
            )
            .await;
            return Err(RotationError::port(
                format!("proving the new credential of application {}", app.app_id),
                e,
            ));
        }
    };
    if let Some(since) = since
        && streak >= proof.successes
        && (proof.window_seconds == 0 || now - since >= proof.window())
    {
        step.record(
            AuditAction::CredentialProven,
            audited,
            Outcome::Succeeded,
            &format!(
                "accepted {streak} times in a row over {} s, {} attempt(s)",
                until(since, now).as_secs(),
                attempt + 1
            ),
        )
        .await?;
        return promote(step, object, current, app, managed, &pending, &value).await;
    }

    let wait = match since {
        Some(since) => streak_wait(proof, streak, since, now),
        None => refused_wait(attempt.saturating_add(1)),
    };
    let at = (now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX))
        .min(pending.deadline);
    let next = attempt.saturating_add(1);
    let tags = Pending::tags(
        object,
        current,
        &rotation_id(step),
        &pending.key_id,
        pending.deadline,
        streak,
        since,
        next,
    );
    let version = pending.properties.id.version().cloned().ok_or_else(|| {
        RotationError::port(
            format!("reading the pending copy {name}"),
            PortError::invalid("a version without a version id"),
        )
    })?;
    // A proof recorded by an instance taken over would overwrite the new holder's.
    step.fence().await?;
    retrying(engine, step.deadline, "recording the proof", || {
        secrets.update_tags(object.vault(), &name, &version, tags.clone())
    })
    .await
    .map_err(|e| RotationError::port(format!("recording the proof on {name}"), e))?;
    schedule(step, object, &pending.key_id, next, at).await?;
    Ok(RunOutcome::Proving {
        key_id: pending.key_id.to_string(),
        accepted: streak,
        needed: proof.successes,
        next_attempt_at: at.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// Writes the proven value as the managed secret's new current version, then converges.
async fn promote(
    step: &Step<'_>,
    object: &ObjectId,
    current: &SecretProperties,
    app: &Application,
    managed: &ManagedObject,
    pending: &Pending,
    value: &SecretValue,
) -> Result<RunOutcome, RotationError> {
    let previous_version = current.id.version().cloned().ok_or_else(|| {
        RotationError::port(
            "reading the secret",
            PortError::invalid("current version without a version id"),
        )
    })?;
    let rotation = rotation_id(step);
    let new_key = pending.key_id;
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
            job_id: rotation.as_str(),
            rotated_at: step.engine.clock().now(),
        },
    );
    let version = NewSecretVersion {
        content_type: current.content_type.clone(),
        not_before: None,
        expires: pending.properties.expires,
        tags,
    };
    let stored = step
        .store_secret(
            object,
            object.name(),
            value,
            version,
            "storing a new version",
        )
        .await;
    let stored = match stored {
        Ok(stored) => stored,
        Err(error) => {
            // Refused for good: the rotation ends here, and what it added goes with it. A
            // transient failure is left to the redelivery (the pending copy stays).
            if error.is_permanent() {
                abandon(step, object, app, &new_key, "Key Vault refused to store it").await;
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
        credential_object(&stored.id, &app.app_id, Some(&new_key)),
        Outcome::Succeeded,
        &format!("replaces version {previous_version}"),
    )
    .await?;
    converge_after_store(step, object, &stored, &app.app_id, managed).await?;
    Ok(RunOutcome::Rotated {
        version: new_version,
        key_id: Some(new_key.to_string()),
    })
}

/// The proof deadline passed: the pending copy and the unproven credential are removed
/// (in that order: a crash between leaves a marked credential no pending copy holds, which
/// the next delivery removes as a stray) and the rotation fails for good.
async fn give_up(
    step: &Step<'_>,
    object: &ObjectId,
    app: &Application,
    pending: &Pending,
    proof: ProofPolicy,
) -> Result<RunOutcome, RotationError> {
    delete_pending(
        step,
        object,
        app,
        &pending.key_id,
        "its proof deadline passed",
    )
    .await?;
    remove(step, &app.object_id, &pending.key_id).await?;
    step.record(
        AuditAction::CredentialRemoved,
        credential_object(object, &app.app_id, Some(&pending.key_id)),
        Outcome::Succeeded,
        "never proven before its deadline",
    )
    .await?;
    Err(RotationError::ProofDeadlinePassed {
        object: object.to_string(),
        successes: proof.successes,
        window_s: proof.window_seconds,
        deadline_minutes: proof.deadline_minutes,
    })
}

/// Best-effort end of a rotation that failed for good: its pending copy and its credential.
async fn abandon(step: &Step<'_>, object: &ObjectId, app: &Application, key_id: &KeyId, why: &str) {
    if let Err(error) = delete_pending(step, object, app, key_id, why).await {
        tracing::warn!(%error, "cannot delete the pending copy; the next delivery will");
    }
    remove_quietly(step, object, app, key_id, why).await;
}

/// Deletes the pending copy of `key_id`; one already gone counts as deleted.
async fn delete_pending(
    step: &Step<'_>,
    object: &ObjectId,
    app: &Application,
    key_id: &KeyId,
    why: &str,
) -> Result<(), RotationError> {
    let secrets = &step.engine.ports().secrets;
    let name = pending_name(key_id);
    step.fence().await?;
    match retrying(
        step.engine,
        step.deadline,
        "deleting the pending copy",
        || secrets.delete_secret(object.vault(), &name),
    )
    .await
    {
        Ok(()) => {
            step.record(
                AuditAction::PendingRemoved,
                credential_object(object, &app.app_id, Some(key_id)),
                Outcome::Succeeded,
                &format!("{name} deleted: {why}"),
            )
            .await
        }
        Err(PortError {
            kind: FailureKind::NotFound,
            ..
        }) => Ok(()),
        Err(e) => Err(RotationError::port(
            format!("deleting the pending copy {name}"),
            e,
        )),
    }
}

/// Every key id a version of the managed secret records: the credentials consumers may
/// hold (the current one, and earlier ones until their own retirement). Never a stray.
async fn held_keys(step: &Step<'_>, object: &ObjectId) -> Result<Vec<KeyId>, RotationError> {
    let secrets = &step.engine.ports().secrets;
    let versions = retrying(step.engine, step.deadline, "listing versions", || {
        secrets.list_versions(object.vault(), object.name())
    })
    .await
    .map_err(|e| RotationError::port(format!("listing the versions of {object}"), e))?;
    Ok(versions
        .iter()
        .filter_map(|v| tags::Bookkeeping::read(&v.tags).key_id)
        .collect())
}

/// The credentials of `app` bearing the marker of `rotation`.
async fn marked_credentials(
    step: &Step<'_>,
    app: &Application,
    rotation: &JobId,
) -> Result<Vec<PasswordCredential>, RotationError> {
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
    Ok(credentials
        .into_iter()
        .filter(|c| marked_job(c).as_ref() == Some(rotation))
        .collect())
}

/// Removes a credential this rotation added that nothing holds, with its pending copy if
/// one is left.
async fn remove_stray(
    step: &Step<'_>,
    object: &ObjectId,
    app: &Application,
    key_id: &KeyId,
) -> Result<(), RotationError> {
    delete_pending(step, object, app, key_id, "its credential is a stray").await?;
    remove(step, &app.object_id, key_id).await?;
    step.record(
        AuditAction::CredentialOrphanRemoved,
        credential_object(object, &app.app_id, Some(key_id)),
        Outcome::Succeeded,
        "added by an earlier attempt of this rotation and never stored",
    )
    .await
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
    if let Some(key_id) = &notes.key_id {
        delete_pending(step, object, &app, key_id, "its credential was promoted").await?;
    }
    // Whatever else this rotation added and nothing holds (invariant 3).
    in_flight(step, object, &app).await?;
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
        rotated_by: rotation_id(step),
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
    // Strays of the rotation that made the successor (invariant 3): never a credential
    // any version records (the current one, or one still within its own overlap), never
    // one whose proof is still going on.
    let held = held_keys(step, object).await?;
    for stray in credentials.iter().filter(|c| {
        marked_job(c).as_ref() == Some(rotated_by)
            && Some(c.key_id) != current_key
            && c.key_id != *key_id
            && !held.contains(&c.key_id)
    }) {
        if pending(step, object, rotated_by, &stray.key_id)
            .await?
            .is_some()
        {
            continue;
        }
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
/// added but never promoted, pending copy and all (invariant 3). A credential any version
/// of the secret records is the vault's and stays: consumers may hold it until its own
/// retirement.
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
    // A superseded rotation's proof ends too: its pending credential is a stray now.
    let rotation = rotation_id(step);
    let held = held_keys(step, object).await?;
    for credential in marked_credentials(step, &app, &rotation).await? {
        if !held.contains(&credential.key_id) {
            remove_stray(step, object, &app, &credential.key_id).await?;
        }
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
    step.fence().await?;
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
