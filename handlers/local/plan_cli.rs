//! `keyturn plan`: what the sweep would do with every managed object of the local store,
//! and when, without doing any of it. Each object is assessed by the sweep's own planning
//! ([`plan::assess`], the same tags, defaults and due rule), so `plan` and the sweep cannot
//! disagree. Nothing is queued, written or audited; values are never read.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::adapters::local::directory::LocalDirectory;
use crate::config::local_vault_url;
use crate::domain::names::ObjectType;
use crate::ports::directory::CredentialIssuer;
use crate::ports::vault::{CertificateStore, SecretStore};
use crate::rotation::plan::{self, Assessment, Due, ObjectState};
use crate::rotation::run::{capped_end, requested_end};
use crate::rotation::tags::{self, Kind, PolicyDefaults, RotationPolicy};

use super::vault_cli::VaultCliError;

/// One managed object, as the sweep would see it at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedObject {
    pub name: String,
    /// `secret` or `certificate`.
    pub object_type: &'static str,
    /// `entra-app-secret`, `generated` or `certificate`; `None` when the tags are unreadable.
    pub kind: Option<&'static str>,
    /// `due`, `scheduled`, `disabled` or `malformed`.
    pub status: &'static str,
    /// When the sweep rotates it: `now` for a due object, the start of its rotate-before
    /// window otherwise.
    pub due_at: Option<DateTime<Utc>>,
    /// Why it is due, or when it will be: the rule that applies.
    pub reason: String,
    pub expires: Option<DateTime<Utc>>,
    pub validity_days: Option<u32>,
    pub rotate_before_days: Option<u32>,
    /// The new version's expiry if it were rotated at `due_at`: its validity, capped by
    /// the application's password policy for an `entra-app-secret`. `None` for a
    /// certificate (Key Vault's certificate policy sets it).
    pub new_expires: Option<DateTime<Utc>>,
    /// The app management policy that caps the new credential, when one does.
    pub capped_by: Option<String>,
    pub overlap_days: Option<u32>,
    /// When the version it replaces is retired at the earliest: `due_at` plus the overlap
    /// (an `entra-app-secret` is promoted, and its overlap starts, once it is proven).
    pub retires_at: Option<DateTime<Utc>>,
    /// `keyturn-last-error` of the current version: the last rotation failed for good.
    pub last_error: Option<String>,
}

/// Every managed object of the local store, sorted by name, with the time of planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub now: DateTime<Utc>,
    pub objects: Vec<PlannedObject>,
    /// `name: last error` of each failing object, as the sweep reports them.
    pub failing: Vec<String>,
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
    let url = local_vault_url();
    let failed = |e: crate::ports::PortError| VaultCliError::Vault(e.to_string());
    let mut states: Vec<ObjectState> = Vec::new();
    for listed in local.vault.list_secrets(&url).await.map_err(failed)? {
        if listed.id.version().is_some() {
            states.push(ObjectState::from(&listed));
        } else if let Some(current) = local
            .vault
            .secret_properties(&url, listed.id.name(), None)
            .await
            .map_err(failed)?
        {
            states.push(ObjectState::from(&current));
        }
    }
    for listed in local.vault.list_certificates(&url).await.map_err(failed)? {
        if listed.id.version().is_some() {
            states.push(ObjectState::from(&listed));
        } else if let Some(current) = local
            .vault
            .certificate_properties(&url, listed.id.name())
            .await
            .map_err(failed)?
        {
            states.push(ObjectState::from(&current));
        }
    }
    let mut objects = Vec::new();
    for state in &states {
        if let Some(object) = planned(&local.directory, state, &defaults, now).await? {
            objects.push(object);
        }
    }
    objects.sort_by(|a, b| (a.name.as_str(), a.object_type).cmp(&(b.name.as_str(), b.object_type)));
    let failing = objects
        .iter()
        .filter_map(|o| Some(format!("{}: {}", o.name, o.last_error.as_ref()?)))
        .collect();
    Ok(Plan {
        now,
        objects,
        failing,
    })
}

async fn planned(
    directory: &LocalDirectory,
    state: &ObjectState,
    defaults: &PolicyDefaults,
    now: DateTime<Utc>,
) -> Result<Option<PlannedObject>, VaultCliError> {
    let object_type = match state.id.object_type() {
        ObjectType::Certificate => "certificate",
        _ => "secret",
    };
    let mut object = PlannedObject {
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
    Ok(Some(object))
}

/// The new version's expiry, as the rotation would ask for it at `at`.
async fn lifetime(
    directory: &LocalDirectory,
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
                    "; no application has appId {app_id} in the local directory"
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
    let rows: Vec<[String; 8]> = plan
        .objects
        .iter()
        .map(|o| {
            [
                o.name.clone(),
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
    out
}
