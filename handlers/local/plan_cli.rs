//! `keyturn plan`: what the sweep would do with every managed object, and when, without
//! doing any of it, for the local store of `keyturn dev` or for the vaults keyturn manages
//! in Azure (read with the operator's Azure CLI sign-in). Each object is assessed by the
//! sweep's own planning ([`plan::assess`], the same tags, defaults and due rule), so `plan`
//! and the sweep cannot disagree; a rotation already under way (its new credential staged
//! as a pending copy and being proven) is shown as proving, not as due. Nothing is queued,
//! written or audited; values are never read.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::{PlanSettings, local_vault_url};
use crate::domain::names::{ObjectType, VaultUrl};
use crate::ports::directory::CredentialIssuer;
use crate::ports::vault::{CertificateStore, SecretProperties, SecretStore};
use crate::rotation::plan::{self, Assessment, Due, ObjectState};
use crate::rotation::run::{PENDING_PREFIX, capped_end, requested_end};
use crate::rotation::tags::{self, Kind, PolicyDefaults, RotationPolicy};

use super::vault_cli::VaultCliError;

/// One managed object, as the sweep would see it at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedObject {
    /// The vault that holds it.
    pub vault: String,
    pub name: String,
    /// `secret` or `certificate`.
    pub object_type: &'static str,
    /// `entra-app-secret`, `generated` or `certificate`; `None` when the tags are unreadable.
    pub kind: Option<&'static str>,
    /// `due`, `proving`, `scheduled`, `disabled` or `malformed`.
    pub status: &'static str,
    /// When the sweep rotates it: `now` for a due object, the start of its rotate-before
    /// window otherwise; `None` while a rotation is proving its new credential.
    pub due_at: Option<DateTime<Utc>>,
    /// Why it is due, or when it will be: the rule that applies.
    pub reason: String,
    pub expires: Option<DateTime<Utc>>,
    pub validity_days: Option<u32>,
    pub rotate_before_days: Option<u32>,
    /// The new version's expiry if it were rotated at `due_at`: its validity, capped by
    /// the application's password policy for an `entra-app-secret`; while proving, the
    /// expiry of the credential being proven. `None` for a certificate (Key Vault's
    /// certificate policy sets it).
    pub new_expires: Option<DateTime<Utc>>,
    /// The app management policy that caps the new credential, when one does.
    pub capped_by: Option<String>,
    pub overlap_days: Option<u32>,
    /// When the version it replaces is retired at the earliest: `due_at` plus the overlap
    /// (an `entra-app-secret` is promoted, and its overlap starts, once it is proven).
    pub retires_at: Option<DateTime<Utc>>,
    /// The rotation under way, while its new credential is being proven.
    pub proving: Option<Proving>,
    /// `keyturn-last-error` of the current version: the last rotation failed for good.
    pub last_error: Option<String>,
}

/// A rotation whose new credential is staged (its pending copy exists) and being proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Proving {
    /// The pending copy that holds the new value.
    pub pending: String,
    pub key_id: Option<String>,
    pub job_id: Option<String>,
    /// Acceptances in a row so far, of `needed`.
    pub accepted: u32,
    pub needed: u32,
    /// When the current run of acceptances began.
    pub since: Option<DateTime<Utc>>,
    /// When the unproven credential is given up.
    pub deadline: Option<DateTime<Utc>>,
}

/// Every managed object of the vaults planned, sorted by vault and name, with the time of
/// planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub now: DateTime<Utc>,
    pub vaults: Vec<String>,
    pub objects: Vec<PlannedObject>,
    /// `name: last error` of each failing object, as the sweep reports them (the name is
    /// prefixed with its vault when several are planned).
    pub failing: Vec<String>,
    /// `vault: reason` for each listing that could not be read for good (a vault whose
    /// certificates the operator may not list still has its secrets planned).
    pub unreadable: Vec<String>,
}

/// What planning reads: the vaults' secrets and certificates, and the directory that
/// holds the applications they name. Only read calls are made.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub secrets: &'a dyn SecretStore,
    pub certificates: &'a dyn CertificateStore,
    pub directory: &'a dyn CredentialIssuer,
}

/// Plans every secret and certificate of the local store at `now`.
pub async fn plan(
    data_dir: &std::path::Path,
    key_setting: Option<&crate::domain::secret::SecretValue>,
    defaults: crate::config::RotationDefaults,
    now: DateTime<Utc>,
) -> Result<Plan, VaultCliError> {
    let defaults = crate::startup::rotation_policy_defaults(defaults)
        .map_err(|e| VaultCliError::Usage(e.to_string()))?;
    let local = super::vault_cli::open(data_dir, key_setting).await?;
    let sources = Sources {
        secrets: &local.vault,
        certificates: &local.vault,
        directory: &local.directory,
    };
    plan_vaults(sources, &[local_vault_url()], &defaults, now).await
}

/// Plans every secret and certificate of the vaults `settings` name, in Azure, read with
/// the operator's Azure CLI sign-in.
pub async fn plan_azure(
    settings: &PlanSettings,
    now: DateTime<Utc>,
) -> Result<Plan, VaultCliError> {
    let readers =
        crate::startup::plan_readers(settings).map_err(|e| VaultCliError::Usage(e.to_string()))?;
    plan_with(settings, &readers, now).await
}

/// Plans the vaults `settings` name through `readers`.
pub async fn plan_with(
    settings: &PlanSettings,
    readers: &crate::startup::PlanReaders,
    now: DateTime<Utc>,
) -> Result<Plan, VaultCliError> {
    let defaults = crate::startup::rotation_policy_defaults(settings.defaults)
        .map_err(|e| VaultCliError::Usage(e.to_string()))?;
    let sources = Sources {
        secrets: &readers.vault,
        certificates: &readers.vault,
        directory: &readers.graph,
    };
    plan_vaults(sources, &settings.vaults, &defaults, now).await
}

/// Plans every managed object of `vaults` at `now`. A listing refused for good (a missing
/// role) is reported and planning goes on; any other failure ends it.
pub async fn plan_vaults(
    sources: Sources<'_>,
    vaults: &[VaultUrl],
    defaults: &PolicyDefaults,
    now: DateTime<Utc>,
) -> Result<Plan, VaultCliError> {
    let mut objects = Vec::new();
    let mut unreadable = Vec::new();
    for vault in vaults {
        let read = read_vault(sources, vault, defaults, &mut unreadable).await?;
        for state in &read.states {
            let pending = read.pending_for(state);
            if let Some(object) = planned(sources.directory, state, pending, defaults, now).await? {
                objects.push(object);
            }
        }
    }
    objects.sort_by(|a, b| {
        (a.vault.as_str(), a.name.as_str(), a.object_type).cmp(&(
            b.vault.as_str(),
            b.name.as_str(),
            b.object_type,
        ))
    });
    let several = vaults.len() > 1;
    let failing = objects
        .iter()
        .filter_map(|o| {
            let error = o.last_error.as_ref()?;
            Some(if several {
                format!("{}{}: {error}", o.vault, o.name)
            } else {
                format!("{}: {error}", o.name)
            })
        })
        .collect();
    Ok(Plan {
        now,
        vaults: vaults.iter().map(ToString::to_string).collect(),
        objects,
        failing,
        unreadable,
    })
}

/// One vault's current versions, and the pending copies of the rotations under way.
struct VaultRead {
    states: Vec<ObjectState>,
    pending: Vec<SecretProperties>,
}

impl VaultRead {
    /// The pending copy staged for `state`'s object, if a rotation is proving one.
    fn pending_for(&self, state: &ObjectState) -> Option<&SecretProperties> {
        if state.id.object_type() == ObjectType::Certificate {
            return None;
        }
        let name = state.id.name().as_str();
        self.pending
            .iter()
            .find(|p| tag(&p.tags, tags::PENDING_FOR).is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }
}

fn tag<'t>(tags: &'t std::collections::BTreeMap<String, String>, name: &str) -> Option<&'t str> {
    tags.iter()
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

async fn read_vault(
    sources: Sources<'_>,
    vault: &VaultUrl,
    defaults: &PolicyDefaults,
    unreadable: &mut Vec<String>,
) -> Result<VaultRead, VaultCliError> {
    let failed = |e: crate::ports::PortError| VaultCliError::Vault(e.to_string());
    let mut read = VaultRead {
        states: Vec::new(),
        pending: Vec::new(),
    };
    for listed in sources.secrets.list_secrets(vault).await.map_err(failed)? {
        if listed.id.name().as_str().starts_with(PENDING_PREFIX)
            && tag(&listed.tags, tags::PENDING_FOR).is_some()
        {
            read.pending.push(listed);
            continue;
        }
        // Key Vault's listing names no version; the current one is read for each managed
        // object, as the sweep does.
        let unmanaged = listed.managed
            || matches!(
                tags::policy(listed.id.object_type(), &listed.tags, defaults),
                Ok(None)
            );
        if listed.id.version().is_some() || unmanaged {
            read.states.push(ObjectState::from(&listed));
        } else if let Some(current) = sources
            .secrets
            .secret_properties(vault, listed.id.name(), None)
            .await
            .map_err(failed)?
        {
            read.states.push(ObjectState::from(&current));
        }
    }
    let certificates = match sources.certificates.list_certificates(vault).await {
        Ok(certificates) => certificates,
        Err(e) if !e.is_transient() => {
            unreadable.push(format!("{vault}: listing certificates: {e}"));
            Vec::new()
        }
        Err(e) => return Err(failed(e)),
    };
    for listed in certificates {
        let unmanaged = matches!(
            tags::policy(listed.id.object_type(), &listed.tags, defaults),
            Ok(None)
        );
        if listed.id.version().is_some() || unmanaged {
            read.states.push(ObjectState::from(&listed));
        } else if let Some(current) = sources
            .certificates
            .certificate_properties(vault, listed.id.name())
            .await
            .map_err(failed)?
        {
            read.states.push(ObjectState::from(&current));
        }
    }
    Ok(read)
}

/// Shows `object` as proving the credential its pending copy holds: the rotation is
/// under way, so the sweep queues nothing new for it (a rotate job would resume the proof).
fn proving(
    object: &mut PlannedObject,
    pending: &SecretProperties,
    policy: &RotationPolicy,
    now: DateTime<Utc>,
) {
    let time = |name: &str| {
        tag(&pending.tags, name)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let proof = Proving {
        pending: pending.id.name().to_string(),
        key_id: tag(&pending.tags, tags::KEY_ID).map(str::to_string),
        job_id: tag(&pending.tags, tags::JOB_ID).map(str::to_string),
        accepted: tag(&pending.tags, tags::PROOF_STREAK)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        needed: policy.proof.successes,
        since: time(tags::PROOF_SINCE),
        deadline: time(tags::PROOF_DEADLINE),
    };
    object.status = "proving";
    object.due_at = None;
    object.retires_at = None;
    object.capped_by = None;
    object.new_expires = pending.expires;
    let deadline = match proof.deadline {
        Some(deadline) if deadline <= now => format!(
            "its deadline {} has passed: the next attempt gives it up",
            text(deadline)
        ),
        Some(deadline) => format!("given up at {}", text(deadline)),
        None => "no deadline recorded".into(),
    };
    object.reason = format!(
        "rotation under way: its new credential is staged as {} and accepted {}/{} in a row; {deadline}",
        proof.pending, proof.accepted, proof.needed
    );
    object.proving = Some(proof);
}

async fn planned(
    directory: &dyn CredentialIssuer,
    state: &ObjectState,
    pending: Option<&SecretProperties>,
    defaults: &PolicyDefaults,
    now: DateTime<Utc>,
) -> Result<Option<PlannedObject>, VaultCliError> {
    let object_type = match state.id.object_type() {
        ObjectType::Certificate => "certificate",
        _ => "secret",
    };
    let mut object = PlannedObject {
        vault: state.id.vault().to_string(),
        name: state.id.name().to_string(),
        object_type,
        kind: None,
        status: "malformed",
        due_at: None,
        reason: String::new(),
        expires: state.expires,
        validity_days: None,
        rotate_before_days: None,
        new_expires: None,
        capped_by: None,
        overlap_days: None,
        retires_at: None,
        proving: None,
        last_error: plan::last_error(state).map(str::to_string),
    };
    let policy = match plan::assess(state, defaults, now) {
        Assessment::NotManaged => return Ok(None),
        Assessment::Malformed(error) => {
            object.reason = format!("tags cannot be read: {error}");
            return Ok(Some(object));
        }
        Assessment::Disabled => {
            object.status = "disabled";
            object.reason = "the current version is disabled; keyturn leaves it alone".into();
            return Ok(Some(object));
        }
        Assessment::Due { due, policy, .. } => {
            object.status = "due";
            object.due_at = Some(now);
            object.reason = match due {
                Due::Expired { expires } => format!("expired {}", text(expires)),
                Due::Expiring { expires } => format!(
                    "expires {}, within its rotate-before window of {} days",
                    text(expires),
                    policy.rotate_before
                ),
                Due::WithoutExpiry => "no expiry: a managed object gets one at once".into(),
            };
            policy
        }
        Assessment::NotDue { expires } => {
            let Ok(Some(policy)) = tags::policy(state.id.object_type(), &state.tags, defaults)
            else {
                // `assess` found a policy in the same tags.
                return Ok(None);
            };
            object.status = "scheduled";
            let at = plan::due_from(expires, policy.rotate_before);
            object.due_at = Some(at);
            object.reason = format!(
                "expires {}; due {} days before",
                text(expires),
                policy.rotate_before
            );
            policy
        }
    };
    let at = object.due_at.unwrap_or(now).max(now);
    object.kind = Some(policy.kind.name());
    object.validity_days = Some(policy.validity.get());
    object.rotate_before_days = Some(policy.rotate_before.get());
    object.overlap_days = Some(policy.overlap.get());
    object.retires_at = Some(at + policy.overlap.span());
    lifetime(directory, &policy, state, at, &mut object).await?;
    if let Some(pending) = pending {
        proving(&mut object, pending, &policy, now);
    }
    Ok(Some(object))
}

/// The new version's expiry, as the rotation would ask for it at `at`.
async fn lifetime(
    directory: &dyn CredentialIssuer,
    policy: &RotationPolicy,
    state: &ObjectState,
    at: DateTime<Utc>,
    object: &mut PlannedObject,
) -> Result<(), VaultCliError> {
    let managed = tags::ManagedObject {
        policy: policy.clone(),
        bookkeeping: tags::Bookkeeping::read(&state.tags),
    };
    let end = requested_end(at, &managed);
    match &policy.kind {
        Kind::Certificate => {}
        Kind::Generated { .. } => object.new_expires = Some(end),
        Kind::EntraAppSecret { app_id } => {
            let failed = |e: crate::ports::PortError| VaultCliError::Vault(e.to_string());
            let Some(app) = directory.application(app_id).await.map_err(failed)? else {
                object.new_expires = Some(end);
                object.reason.push_str(&format!(
                    "; no application has appId {app_id} in the directory"
                ));
                return Ok(());
            };
            let rules = directory
                .password_rules(&app.object_id)
                .await
                .map_err(failed)?;
            if let Some(policy) = &rules.forbidden_by {
                let _ = write!(
                    object.reason,
                    "; the app management policy {policy} forbids new passwords"
                );
            }
            let capped = capped_end(at, end, &rules);
            if capped < end {
                object.capped_by = rules.max_lifetime.as_ref().map(|(_, p)| p.clone());
                if let Some(policy) = &object.capped_by {
                    let _ = write!(object.reason, "; new expiry capped by {policy}");
                }
                if plan::due_from(capped, policy.rotate_before) <= at {
                    let _ = write!(
                        object.reason,
                        "; that lifetime is within its rotate-before window of {} days, so it is due again at once",
                        policy.rotate_before
                    );
                }
            }
            object.new_expires = Some(capped);
        }
    }
    Ok(())
}

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The plan as a table: one line per object, then the failing objects.
pub fn table(plan: &Plan) -> String {
    let day = |t: &Option<DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let several = plan.vaults.len() > 1;
    let rows: Vec<[String; 8]> = plan
        .objects
        .iter()
        .map(|o| {
            [
                if several {
                    format!("{}{}", o.vault, o.name)
                } else {
                    o.name.clone()
                },
                o.kind.unwrap_or("-").to_string(),
                o.status.to_string(),
                day(&o.due_at),
                day(&o.new_expires),
                o.overlap_days
                    .map_or_else(|| "-".into(), |d| format!("{d}d")),
                day(&o.retires_at),
                o.reason.clone(),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "KIND",
        "STATUS",
        "DUE",
        "NEW EXPIRY",
        "OVERLAP",
        "RETIRES",
        "WHY",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    if plan.objects.is_empty() {
        out.push_str("(no managed objects)\n");
    }
    if !plan.failing.is_empty() {
        out.push_str("\nFAILING\n");
        for failing in &plan.failing {
            let _ = writeln!(out, "{failing}");
        }
    }
    if !plan.unreadable.is_empty() {
        out.push_str("\nNOT READ\n");
        for unreadable in &plan.unreadable {
            let _ = writeln!(out, "{unreadable}");
        }
    }
    out
}
