//! What is due: from an object's metadata and a passed-in `now`, whether a managed object
//! needs rotating (expiring within its rotate-before window, expired, or without expiry),
//! and the jobs that follow, from a version Key Vault reported near expiry or expired
//! ([`ExpiryNotice`], which the function layer reads from an event) or from a sweep over
//! the vaults.
//!
//! Planning reads metadata only, never a value, and sends jobs whose ids are
//! deterministic: planning the same version twice (an event and a sweep, or two sweeps)
//! yields the same message, which the broker's duplicate detection drops.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{Action as AuditAction, AuditScope};
use crate::domain::names::{ObjectId, ObjectName, ObjectType, ObjectVersion, VaultName, VaultUrl};
use crate::ports::audit::{AuditObject, AuditText, Outcome};
use crate::ports::vault::{CertificateProperties, SecretProperties};
use crate::rotation::job::{Action, Job, JobId};
use crate::rotation::retry::{Deadline, INVOCATION_BUDGET, retrying};
use crate::rotation::tags::{self, Days, PolicyDefaults, RotationPolicy, TagError};
use crate::rotation::{Engine, RotationError};

/// The current version of a secret or certificate, as planning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectState {
    /// With the current version.
    pub id: ObjectId,
    pub enabled: bool,
    pub expires: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
    /// A secret that backs a certificate: Key Vault manages it, keyturn never does.
    pub backs_certificate: bool,
}

impl From<&SecretProperties> for ObjectState {
    fn from(p: &SecretProperties) -> Self {
        Self {
            id: p.id.clone(),
            enabled: p.enabled,
            expires: p.expires,
            tags: p.tags.clone(),
            backs_certificate: p.managed,
        }
    }
}

impl From<&CertificateProperties> for ObjectState {
    fn from(p: &CertificateProperties) -> Self {
        Self {
            id: p.id.clone(),
            enabled: p.enabled,
            expires: p.expires,
            tags: p.tags.clone(),
            backs_certificate: false,
        }
    }
}

/// Why an object is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "due")]
pub(crate) enum Due {
    Expired {
        expires: DateTime<Utc>,
    },
    Expiring {
        expires: DateTime<Utc>,
    },
    /// A managed object without an expiry is rotated at once: from then on it has one.
    WithoutExpiry,
}

/// Whether an object expiring at `expires` is due at `now` with `rotate_before`.
pub(crate) fn due(
    expires: Option<DateTime<Utc>>,
    rotate_before: Days,
    now: DateTime<Utc>,
) -> Option<Due> {
    let Some(expires) = expires else {
        return Some(Due::WithoutExpiry);
    };
    if expires <= now {
        Some(Due::Expired { expires })
    } else if due_from(expires, rotate_before) <= now {
        Some(Due::Expiring { expires })
    } else {
        None
    }
}

/// When an object expiring at `expires` becomes due: the start of its rotate-before window.
pub(crate) fn due_from(expires: DateTime<Utc>, rotate_before: Days) -> DateTime<Utc> {
    expires - rotate_before.span()
}

/// The `keyturn-last-error` of a managed object's current version: set when its last
/// rotation failed for good, cleared by the next one that succeeds.
pub(crate) fn last_error(state: &ObjectState) -> Option<&str> {
    state
        .tags
        .iter()
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(tags::LAST_ERROR))
        .map(|(_, error)| error.as_str())
}

/// What planning concluded about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Assessment {
    Due {
        job: Box<Job>,
        due: Due,
        policy: RotationPolicy,
    },
    NotDue {
        expires: DateTime<Utc>,
    },
    NotManaged,
    /// A person disabled the current version; keyturn leaves it alone.
    Disabled,
    Malformed(TagError),
}

/// Assesses one object's current version at `now`.
pub(crate) fn assess(
    state: &ObjectState,
    defaults: &PolicyDefaults,
    now: DateTime<Utc>,
) -> Assessment {
    if state.backs_certificate {
        return Assessment::NotManaged;
    }
    let Some(version) = state.id.version().cloned() else {
        // Listings always carry the version; without one there is nothing to replace.
        return Assessment::NotManaged;
    };
    let policy = match tags::policy(state.id.object_type(), &state.tags, defaults) {
        Ok(Some(policy)) => policy,
        Ok(None) => return Assessment::NotManaged,
        Err(error) => return Assessment::Malformed(error),
    };
    if !state.enabled {
        return Assessment::Disabled;
    }
    match due(state.expires, policy.rotate_before, now) {
        Some(due) => Assessment::Due {
            job: Box::new(Job::new(Action::Rotate {
                object: state.id.without_version(),
                replaces_version: version,
            })),
            due,
            policy,
        },
        None => Assessment::NotDue {
            // `due` returns None only for objects that have an expiry.
            expires: state.expires.unwrap_or(now),
        },
    }
}

/// What one Key Vault event led to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "decision")]
pub enum EventDecision {
    Queued {
        #[serde(rename = "jobId")]
        job_id: JobId,
    },
    NotDue,
    NotManaged,
    Disabled,
    Malformed {
        reason: String,
    },
    /// Planning failed for good for this event (a missing role, say); the other events of
    /// the delivery are still planned.
    Failed {
        reason: String,
    },
    /// The event's version is no longer current (already rotated, or replaced by hand).
    Stale,
    /// The object no longer exists.
    Gone,
    /// The event names a vault that is not in `KEYTURN_VAULTS`.
    UnknownVault,
    /// This app has no rotation ports; the next sweep of a configured app finds the object.
    NotConfigured,
}

/// An audit object naming a Key Vault object and, when known, its version.
pub(crate) fn audit_object(id: &ObjectId, version: Option<&ObjectVersion>) -> AuditObject {
    AuditObject {
        vault: AuditText::parse(id.vault().as_str()).ok(),
        secret_name: AuditText::parse(id.name().as_str()).ok(),
        secret_version: version
            .or(id.version())
            .and_then(|v| AuditText::parse(v.as_str()).ok()),
        ..AuditObject::default()
    }
}

/// One version Key Vault reported near expiry or expired: the object (its type and name,
/// in the vault the report names) and the version the report is about. Only reports that
/// make keyturn rotate become notices; the function layer reads them from events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryNotice {
    /// The vault by name, as the report gives it.
    pub vault: VaultName,
    pub object_type: ObjectType,
    pub name: ObjectName,
    pub version: ObjectVersion,
    /// The object's id, when the report carried one: it names the vault exactly.
    pub id: Option<ObjectId>,
}

/// Plans from one expiry notice: re-reads the object's current metadata (the notice may
/// be late or duplicated) and queues a job when it is managed and due.
#[tracing::instrument(skip_all, fields(vault = %notice.vault, name = %notice.name))]
pub async fn from_notice(
    engine: &Engine,
    audit: &AuditScope,
    notice: &ExpiryNotice,
    now: DateTime<Utc>,
) -> Result<EventDecision, RotationError> {
    let configured = notice
        .id
        .as_ref()
        .and_then(|id| engine.vaults().iter().find(|v| *v == id.vault()))
        .or_else(|| {
            engine
                .vaults()
                .iter()
                .find(|v| v.vault_name() == Some(&notice.vault))
        });
    let Some(vault) = configured else {
        tracing::info!(name = %notice.name, "event from a vault keyturn does not manage");
        return Ok(EventDecision::UnknownVault);
    };
    let id = vault.object_id(notice.object_type, notice.name.clone(), None);
    let deadline = Deadline::after(engine.clock().now(), INVOCATION_BUDGET);
    let Some(state) = current_state(engine, deadline, &id).await? else {
        audit
            .record_repeatable(
                AuditAction::RotationPlanned,
                audit_object(&id, Some(&notice.version)),
                Outcome::Skipped,
                "the object no longer exists",
            )
            .await?;
        return Ok(EventDecision::Gone);
    };
    if state.id.version() != Some(&notice.version) {
        audit
            .record_repeatable(
                AuditAction::RotationPlanned,
                audit_object(&id, Some(&notice.version)),
                Outcome::Skipped,
                "the event's version is no longer current",
            )
            .await?;
        return Ok(EventDecision::Stale);
    }
    let decision = match assess(&state, engine.defaults(), now) {
        Assessment::Due { job, due, policy } => {
            queue_due(engine, audit, deadline, &state, &job, &due, &policy, "").await?;
            EventDecision::Queued {
                job_id: job.job_id.clone(),
            }
        }
        Assessment::Malformed(error) => EventDecision::Malformed {
            reason: record_malformed(audit, &state, &error).await?,
        },
        Assessment::NotDue { expires } => {
            tracing::debug!(name = %id.name(), %expires, "not yet due");
            EventDecision::NotDue
        }
        Assessment::NotManaged => EventDecision::NotManaged,
        Assessment::Disabled => EventDecision::Disabled,
    };
    Ok(decision)
}

fn due_text(due: &Due) -> String {
    match due {
        Due::Expired { expires } => format!("expired {}", expires.to_rfc3339()),
        Due::Expiring { expires } => format!("expires {}", expires.to_rfc3339()),
        Due::WithoutExpiry => "no expiry".into(),
    }
}

async fn current_state(
    engine: &Engine,
    deadline: Deadline,
    id: &ObjectId,
) -> Result<Option<ObjectState>, RotationError> {
    let ports = engine.ports();
    let (vault, name) = (id.vault(), id.name());
    match id.object_type() {
        ObjectType::Certificate => {
            retrying(engine, deadline, "reading certificate metadata", || {
                ports.certificates.certificate_properties(vault, name)
            })
            .await
            .map(|p| p.as_ref().map(ObjectState::from))
            .map_err(|e| RotationError::port(format!("reading certificate {id}"), e))
        }
        _ => retrying(engine, deadline, "reading secret metadata", || {
            ports.secrets.secret_properties(vault, name, None)
        })
        .await
        .map(|p| p.as_ref().map(ObjectState::from))
        .map_err(|e| RotationError::port(format!("reading secret {id}"), e)),
    }
}

/// Audits a managed object whose tags cannot be read as a failed plan (for an event and
/// for the sweep alike), and gives back the reason.
async fn record_malformed(
    audit: &AuditScope,
    state: &ObjectState,
    error: &impl std::fmt::Display,
) -> Result<String, RotationError> {
    let reason = error.to_string();
    audit
        .record(
            AuditAction::RotationPlanned,
            audit_object(&state.id, None),
            Outcome::Failed,
            Some(&reason),
        )
        .await?;
    Ok(reason)
}

/// Sends the job for a due object, then records that it was planned (`source` says who
/// found it, for the audit reason).
#[allow(clippy::too_many_arguments)]
async fn queue_due(
    engine: &Engine,
    audit: &AuditScope,
    deadline: Deadline,
    state: &ObjectState,
    job: &Job,
    due: &Due,
    policy: &RotationPolicy,
    source: &str,
) -> Result<(), RotationError> {
    send(engine, deadline, job).await?;
    let reason = format!(
        "{} job {} queued{source} ({})",
        policy.kind.name(),
        job.job_id,
        due_text(due)
    );
    // A replayed event plans the same job again (Service Bus drops the duplicate
    // message): one decision, folded with a count rather than recorded again.
    audit
        .record_repeatable(
            AuditAction::RotationPlanned,
            audit_object(&state.id, None),
            Outcome::Succeeded,
            &reason,
        )
        .await?;
    Ok(())
}

async fn send(engine: &Engine, deadline: Deadline, job: &Job) -> Result<(), RotationError> {
    let message = job.message(None);
    retrying(engine, deadline, "sending a job", || {
        engine.ports().queue.send(&message)
    })
    .await
    .map_err(|e| RotationError::port(format!("sending job {}", job.job_id), e))
}

/// What a sweep found, in counts, with the objects that need a person's attention named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepOutcome {
    /// Secrets and certificates listed (current versions).
    pub examined: usize,
    /// Jobs sent (duplicates of earlier sends included: the broker drops them).
    pub queued: usize,
    pub not_due: usize,
    pub not_managed: usize,
    pub disabled: usize,
    /// `vault/name: reason` for each object whose keyturn tags cannot be read.
    pub malformed: Vec<String>,
    /// `vault: reason` for each vault that could not be listed for good (a missing role).
    pub failed_vaults: Vec<String>,
    /// `vault/name: last error` for each managed object whose last rotation failed for
    /// good (`keyturn-last-error` on its current version): reported by every sweep until
    /// a rotation succeeds, so a failing object cannot run to expiry unnoticed.
    pub failing: Vec<String>,
}

/// Sweeps `vaults`: lists secrets and certificates (metadata only), queues a job for each
/// managed object that is due, and reports malformed tags. A vault that cannot be listed
/// for good (permission) is reported and the sweep goes on; a transient failure fails the
/// sweep after the other vaults are done, so the timer's retry runs it again (the jobs
/// already sent are dropped as duplicates).
#[tracing::instrument(skip_all, fields(vaults = vaults.len()))]
pub async fn sweep(
    engine: &Engine,
    audit: &AuditScope,
    vaults: &[VaultUrl],
    now: DateTime<Utc>,
) -> Result<SweepOutcome, RotationError> {
    let deadline = Deadline::after(engine.clock().now(), INVOCATION_BUDGET);
    let mut outcome = SweepOutcome::default();
    let mut transient: Option<RotationError> = None;
    for vault in vaults {
        match sweep_vault(engine, audit, deadline, vault, now, &mut outcome).await {
            Ok(()) => {}
            Err(error) if !error.is_permanent() => {
                tracing::warn!(%vault, %error, "sweeping a vault failed; the sweep will be retried");
                transient.get_or_insert(error);
            }
            Err(error) => {
                let reason = error.to_string();
                audit
                    .record(
                        AuditAction::SweepVaultFailed,
                        AuditObject {
                            vault: AuditText::parse(vault.as_str()).ok(),
                            ..AuditObject::default()
                        },
                        Outcome::Failed,
                        Some(&reason),
                    )
                    .await?;
                outcome.failed_vaults.push(format!("{vault}: {reason}"));
            }
        }
    }
    match transient {
        Some(error) => Err(error),
        None => Ok(outcome),
    }
}

async fn sweep_vault(
    engine: &Engine,
    audit: &AuditScope,
    deadline: Deadline,
    vault: &VaultUrl,
    now: DateTime<Utc>,
    outcome: &mut SweepOutcome,
) -> Result<(), RotationError> {
    let ports = engine.ports();
    let secrets = retrying(engine, deadline, "listing secrets", || {
        ports.secrets.list_secrets(vault)
    })
    .await
    .map_err(|e| RotationError::port(format!("listing secrets of {vault}"), e))?;
    // A vault whose certificates keyturn may not list (it holds only a secrets role) still
    // has its secrets swept; the certificate failure is reported once they are.
    let (certificates, certificates_failed) =
        match retrying(engine, deadline, "listing certificates", || {
            ports.certificates.list_certificates(vault)
        })
        .await
        {
            Ok(certificates) => (certificates, None),
            Err(e) => (
                Vec::new(),
                Some(RotationError::port(
                    format!("listing certificates of {vault}"),
                    e,
                )),
            ),
        };
    // Key Vault's certificate list names no version; the current one is read for each
    // managed certificate, or the sweep could never plan a certificate (nor tell a renewed
    // version from the one it replaced).
    let mut current_certificates = Vec::with_capacity(certificates.len());
    for listed in certificates {
        let unmanaged = matches!(
            tags::policy(listed.id.object_type(), &listed.tags, engine.defaults()),
            Ok(None)
        );
        if listed.id.version().is_some() || unmanaged {
            current_certificates.push(listed);
            continue;
        }
        let name = listed.id.name().clone();
        match retrying(engine, deadline, "reading a certificate", || {
            ports.certificates.certificate_properties(vault, &name)
        })
        .await
        {
            Ok(Some(current)) => current_certificates.push(current),
            // Deleted since it was listed.
            Ok(None) => {}
            Err(e) => {
                return Err(RotationError::port(
                    format!("reading certificate {name} in {vault}"),
                    e,
                ));
            }
        }
    }
    // The same for secrets: Key Vault's secret list names no version either.
    let mut current_secrets = Vec::with_capacity(secrets.len());
    for listed in secrets {
        let unmanaged = listed.managed
            || matches!(
                tags::policy(listed.id.object_type(), &listed.tags, engine.defaults()),
                Ok(None)
            );
        if listed.id.version().is_some() || unmanaged {
            current_secrets.push(listed);
            continue;
        }
        let name = listed.id.name().clone();
        match retrying(engine, deadline, "reading a secret", || {
            ports.secrets.secret_properties(vault, &name, None)
        })
        .await
        {
            Ok(Some(current)) => current_secrets.push(current),
            // Deleted since it was listed.
            Ok(None) => {}
            Err(e) => {
                return Err(RotationError::port(
                    format!("reading secret {name} in {vault}"),
                    e,
                ));
            }
        }
    }
    let states = current_secrets
        .iter()
        .map(ObjectState::from)
        .chain(current_certificates.iter().map(ObjectState::from));
    for state in states {
        outcome.examined += 1;
        let assessment = assess(&state, engine.defaults(), now);
        if !matches!(assessment, Assessment::NotManaged)
            && let Some(error) = last_error(&state)
        {
            tracing::warn!(object = %state.id.name(), error, "managed object is failing");
            outcome
                .failing
                .push(format!("{}{}: {error}", vault, state.id.name()));
        }
        match assessment {
            Assessment::Due { job, due, policy } => {
                queue_due(
                    engine,
                    audit,
                    deadline,
                    &state,
                    &job,
                    &due,
                    &policy,
                    " by the sweep",
                )
                .await?;
                outcome.queued += 1;
            }
            Assessment::Malformed(error) => {
                let reason = record_malformed(audit, &state, &error).await?;
                outcome
                    .malformed
                    .push(format!("{}{}: {reason}", vault, state.id.name()));
            }
            Assessment::NotDue { .. } => outcome.not_due += 1,
            Assessment::NotManaged => outcome.not_managed += 1,
            Assessment::Disabled => outcome.disabled += 1,
        }
    }
    certificates_failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0)
            .single()
            .expect("time")
    }

    fn defaults() -> PolicyDefaults {
        PolicyDefaults::new(90, 30, 7).expect("defaults")
    }

    fn state(tags: &[(&str, &str)], expires: Option<DateTime<Utc>>) -> ObjectState {
        ObjectState {
            id: ObjectId::parse(
                "https://kv-one.vault.azure.net/secrets/db/0123456789abcdef0123456789abcdef",
            )
            .expect("id"),
            enabled: true,
            expires,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            backs_certificate: false,
        }
    }

    #[test]
    fn due_follows_the_rotate_before_window() {
        let days = |n: i64| chrono::Duration::days(n);
        let window = Days::parse(tags::ROTATE_BEFORE_DAYS, "30", 1).expect("days");
        let cases = [
            (None, Some(Due::WithoutExpiry)),
            (
                Some(now() - days(1)),
                Some(Due::Expired {
                    expires: now() - days(1),
                }),
            ),
            (Some(now()), Some(Due::Expired { expires: now() })),
            (
                Some(now() + days(1)),
                Some(Due::Expiring {
                    expires: now() + days(1),
                }),
            ),
            (
                Some(now() + days(30)),
                Some(Due::Expiring {
                    expires: now() + days(30),
                }),
            ),
            (Some(now() + days(30) + chrono::Duration::seconds(1)), None),
            (Some(now() + days(365)), None),
        ];
        for (expires, expected) in cases {
            assert_eq!(due(expires, window, now()), expected, "{expires:?}");
        }
    }

    #[test]
    fn assessment_covers_every_case() {
        let generated = [(tags::KIND, "generated")];
        let soon = Some(now() + chrono::Duration::days(3));
        let later = Some(now() + chrono::Duration::days(300));

        assert!(matches!(
            assess(&state(&generated, soon), &defaults(), now()),
            Assessment::Due { .. }
        ));
        assert!(matches!(
            assess(&state(&generated, later), &defaults(), now()),
            Assessment::NotDue { .. }
        ));
        assert_eq!(
            assess(&state(&[], soon), &defaults(), now()),
            Assessment::NotManaged
        );
        assert!(matches!(
            assess(
                &state(&[(tags::KIND, "gnerated")], soon),
                &defaults(),
                now()
            ),
            Assessment::Malformed(TagError::UnknownKind { .. })
        ));
        let mut disabled = state(&generated, soon);
        disabled.enabled = false;
        assert_eq!(assess(&disabled, &defaults(), now()), Assessment::Disabled);
        let mut backing = state(&generated, soon);
        backing.backs_certificate = true;
        assert_eq!(assess(&backing, &defaults(), now()), Assessment::NotManaged);
    }

    #[test]
    fn a_due_object_gets_a_rotate_job_for_its_current_version() {
        let Assessment::Due { job, .. } = assess(
            &state(&[(tags::KIND, "generated")], None),
            &defaults(),
            now(),
        ) else {
            panic!("an object without expiry is due");
        };
        match &job.action {
            Action::Rotate {
                object,
                replaces_version,
            } => {
                assert_eq!(
                    object.to_string(),
                    "https://kv-one.vault.azure.net/secrets/db"
                );
                assert_eq!(
                    replaces_version.as_str(),
                    "0123456789abcdef0123456789abcdef"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_per_object_rotate_before_tag_overrides_the_default() {
        let in_ten_days = Some(now() + chrono::Duration::days(10));
        let tight = [(tags::KIND, "generated"), (tags::ROTATE_BEFORE_DAYS, "5")];
        assert!(matches!(
            assess(&state(&tight, in_ten_days), &defaults(), now()),
            Assessment::NotDue { .. }
        ));
        let loose = [(tags::KIND, "generated"), (tags::ROTATE_BEFORE_DAYS, "15")];
        assert!(matches!(
            assess(&state(&loose, in_ten_days), &defaults(), now()),
            Assessment::Due { .. }
        ));
    }
}
