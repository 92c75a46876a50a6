//! What an alert says: what expires, where, whose it is, and what to do. For a managed
//! credential, when keyturn will rotate it (from its rotation policy, by the planner's own
//! rule); for an unmanaged one, the exact tags that would put it under keyturn's
//! management, or the move to a certificate or federated credential that removes the
//! secret altogether.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use crate::alerts::thresholds::Threshold;
use crate::domain::inventory::{CredentialKind, CredentialSource, InventoryCredential};
use crate::domain::names::ObjectType;
use crate::ports::alert_ledger::LedgerKey;
use crate::ports::notify::{Fact, Notice, NoticeKind, Severity};
use crate::rotation::plan::due_from;
use crate::rotation::tags::{
    self, ALPHABET, APP_ID, KIND, LAST_ERROR, PENDING_FOR, PolicyDefaults, ROTATE_BEFORE_DAYS,
    VALIDITY_DAYS,
};

/// `2026-12-20`.
fn date(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// Whole days from `now` to `expires`, rounded down (negative once past).
pub fn days_left(expires: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (expires - now).num_days()
}

fn kind_label(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::Secret => "Secret",
        CredentialKind::Certificate => "Certificate",
        CredentialKind::Key => "Key",
        CredentialKind::PasswordCredential => "Client secret",
        CredentialKind::KeyCredential => "Certificate credential",
    }
}

/// `vault kv-prod`, `application Payroll (app id …)`.
pub fn source_label(source: &CredentialSource) -> String {
    match source {
        CredentialSource::Vault { name, .. } => format!("vault {name}"),
        CredentialSource::Application { app_id, .. } => {
            format!("application {} (app id {app_id})", source.label())
        }
        CredentialSource::ServicePrincipal { app_id, .. } => {
            format!("service principal {} (app id {app_id})", source.label())
        }
    }
}

/// When it expires, in words: `in 14 days`, `today`, `3 days ago`.
fn when(expires: DateTime<Utc>, now: DateTime<Utc>) -> String {
    match days_left(expires, now) {
        _ if expires <= now => {
            let ago = (now - expires).num_days();
            match ago {
                0 => "today (expired)".to_owned(),
                1 => "1 day ago".to_owned(),
                n => format!("{n} days ago"),
            }
        }
        0 => "within a day".to_owned(),
        1 => "in 1 day".to_owned(),
        n => format!("in {n} days"),
    }
}

/// The notice for `credential` crossing `threshold` at `now`. `defaults` are the
/// deployment's rotation defaults (what a tag left out means).
pub fn alert(
    credential: &InventoryCredential,
    threshold: Threshold,
    now: DateTime<Utc>,
    defaults: &PolicyDefaults,
) -> Notice {
    let expires = credential.expires.unwrap_or(now);
    let expired = expires <= now;
    let label = kind_label(credential.kind);
    let source = source_label(&credential.source);
    let title = if expired {
        format!("{label} {} in {source} has expired", credential.name)
    } else {
        format!(
            "{label} {} in {source} expires {}",
            credential.name,
            when(expires, now)
        )
    };
    let managed = if credential.managed {
        "keyturn manages it"
    } else {
        "keyturn does not manage it"
    };
    let summary = format!(
        "{} {} on {} ({}); {managed}.",
        credential.name,
        if expired { "expired" } else { "expires" },
        date(expires),
        when(expires, now)
    );
    // A managed credential whose rotation failed will expire unless someone acts.
    let failing = credential.managed
        && credential
            .tags
            .keys()
            .any(|name| name.eq_ignore_ascii_case(LAST_ERROR));
    let severity = if expired || threshold.days() <= 1 || failing {
        Severity::Critical
    } else if threshold.days() <= 14 {
        Severity::Warning
    } else {
        Severity::Info
    };
    let mut facts = vec![
        Fact::new("Source", source),
        Fact::new("Kind", credential.kind.as_str()),
        Fact::new(
            "Expires",
            format!("{} ({})", date(expires), when(expires, now)),
        ),
        Fact::new(
            "Managed by keyturn",
            if credential.managed { "yes" } else { "no" },
        ),
        Fact::new("Threshold", threshold.to_string()),
    ];
    if let Some(certificate) = &credential.certificate {
        if let Some(subject) = &certificate.subject {
            facts.push(Fact::new("Subject", subject));
        }
        if let Some(thumbprint) = &certificate.thumbprint {
            facts.push(Fact::new("Thumbprint", thumbprint));
        }
    }
    let owners: Vec<String> = credential
        .owners
        .iter()
        .filter_map(|o| {
            o.display_name
                .clone()
                .or_else(|| o.user_principal_name.clone())
        })
        .collect();
    if !owners.is_empty() {
        facts.push(Fact::new("Owners", owners.join(", ")));
    }
    Notice {
        id: notice_id(credential, threshold),
        kind: if expired {
            NoticeKind::Expired
        } else {
            NoticeKind::Expiring
        },
        severity,
        title,
        summary,
        facts,
        actions: advice(credential, now, defaults),
        subject: Some(credential.id().to_string()),
        time: now,
        detail: json!({
            "credential": credential.id().as_str(),
            "source": credential.source,
            "name": credential.name,
            "kind": credential.kind,
            "expires": expires,
            "daysLeft": days_left(expires, now),
            "threshold": threshold.days(),
            "managed": credential.managed,
        }),
    }
}

/// The alert's stable id: the credential, the expiry it had and the threshold, so the
/// same alert has the same id on every route and every retry, and a renewed credential
/// (a new expiry) starts its thresholds afresh.
pub fn notice_id(credential: &InventoryCredential, threshold: Threshold) -> String {
    let expires = credential
        .expires
        .map(|e| e.to_rfc3339())
        .unwrap_or_default();
    LedgerKey::of(&[
        credential.id().as_str(),
        &expires,
        &threshold.days().to_string(),
    ])
    .to_string()
}

fn object_type(kind: CredentialKind) -> Option<ObjectType> {
    match kind {
        CredentialKind::Secret => Some(ObjectType::Secret),
        CredentialKind::Certificate => Some(ObjectType::Certificate),
        CredentialKind::Key => Some(ObjectType::Key),
        CredentialKind::PasswordCredential | CredentialKind::KeyCredential => None,
    }
}

/// What to do, one step per entry.
pub fn advice(
    credential: &InventoryCredential,
    now: DateTime<Utc>,
    defaults: &PolicyDefaults,
) -> Vec<String> {
    let validity = defaults.validity;
    let rotate_before = defaults.rotate_before;
    if credential.managed {
        return managed_advice(credential, now, defaults);
    }
    let app_id = match &credential.source {
        CredentialSource::Application { app_id, .. }
        | CredentialSource::ServicePrincipal { app_id, .. } => app_id.to_string(),
        CredentialSource::Vault { .. } => "<the application's client id>".to_owned(),
    };
    match credential.kind {
        CredentialKind::Secret => vec![
            format!(
                "To have keyturn generate and rotate its value, tag the secret {KIND}=generated, {VALIDITY_DAYS}={validity}, {ROTATE_BEFORE_DAYS}={rotate_before} (optionally {ALPHABET})."
            ),
            format!(
                "If it holds an application's client secret, tag it {KIND}=entra-app-secret, {APP_ID}={app_id} instead, and keyturn rotates the credential in Entra and here."
            ),
            "Better still, have its callers use a managed identity or a federated credential, and delete the secret.".to_owned(),
        ],
        CredentialKind::Certificate => {
            let mut steps = vec![format!(
                "To have keyturn renew it before expiry, tag the certificate {VALIDITY_DAYS}={validity}, {ROTATE_BEFORE_DAYS}={rotate_before}."
            )];
            if credential
                .certificate
                .as_ref()
                .is_some_and(|c| c.auto_renews())
            {
                steps.push("Its policy has an auto-renew lifetime action: check that its issuer can still issue, since Key Vault has not renewed it.".to_owned());
            }
            steps
        }
        CredentialKind::Key => {
            if credential.key.as_ref().is_some_and(|k| k.rotation_policy) {
                vec!["Its Key Vault rotation policy should renew it: check the policy's expiry time and that the rotation ran.".to_owned()]
            } else {
                vec!["Give the key a Key Vault rotation policy (keyturn does not rotate keys), or create a new version and move its users to it before expiry.".to_owned()]
            }
        }
        CredentialKind::PasswordCredential => vec![
            format!(
                "To have keyturn rotate it, keep the client secret in a Key Vault secret tagged {KIND}=entra-app-secret, {APP_ID}={app_id}; keyturn then adds a new one, proves it and removes the old one."
            ),
            "Better: move the application to a certificate credential or a federated identity credential (workload identity federation), which leave no shared secret to leak.".to_owned(),
        ],
        CredentialKind::KeyCredential => {
            let mut steps = vec![format!(
                "Upload a new certificate to the {} before {} and switch its users to it (keyturn does not rotate key credentials), or replace it with a federated identity credential.",
                match credential.source {
                    CredentialSource::ServicePrincipal { .. } => "service principal",
                    _ => "application",
                },
                date(credential.expires.unwrap_or(now))
            )];
            if matches!(credential.source, CredentialSource::ServicePrincipal { .. }) {
                steps.push("If it is a SAML signing certificate, create a new one in the enterprise application's single sign-on settings and make it active before the old one expires.".to_owned());
            }
            steps
        }
    }
}

fn managed_advice(
    credential: &InventoryCredential,
    now: DateTime<Utc>,
    defaults: &PolicyDefaults,
) -> Vec<String> {
    let tag = |wanted: &str| {
        credential
            .tags
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value)
    };
    if let Some(managed) = tag(PENDING_FOR) {
        return vec![format!(
            "Nothing to do: it is the staging copy of a rotation of {managed} in progress; keyturn makes it {managed}'s value once Entra has accepted the new credential, and deletes it, or gives the credential up at its proof deadline."
        )];
    }
    let mut steps = Vec::new();
    if let Some(error) = credential
        .tags
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(LAST_ERROR))
        .map(|(_, value)| value)
    {
        steps.push(format!(
            "keyturn's last rotation of it failed: {error}. Fix the cause; keyturn tries again at its next sweep."
        ));
    }
    // A client secret keyturn manages is rotated through the vault secret that holds it,
    // whose tags the alert engine gives it: its policy (`keyturn-rotate-before-days`
    // above all) is that secret's.
    let held = object_type(credential.kind).is_none();
    let policy_type = match credential.kind {
        CredentialKind::PasswordCredential => Some(ObjectType::Secret),
        kind => object_type(kind),
    };
    let policy = policy_type
        .and_then(|object_type| tags::policy(object_type, &credential.tags, defaults).ok())
        .flatten();
    let rotate_before = policy
        .as_ref()
        .map_or(defaults.rotate_before, |p| p.rotate_before);
    let via = if held {
        " (through the Key Vault secret that holds it)"
    } else {
        ""
    };
    match credential.expires {
        Some(expires) => {
            let due = due_from(expires, rotate_before);
            if due <= now {
                steps.push(format!(
                    "keyturn rotates it{via} at its next sweep: it has been due since {} ({rotate_before} days before expiry). If this alert repeats at the next threshold, the rotation is failing: run `keyturn plan` or read the audit log.",
                    date(due)
                ));
            } else {
                steps.push(format!(
                    "Nothing to do: keyturn rotates it{via} on {} ({rotate_before} days before expiry, {} from now).",
                    date(due),
                    span(due - now)
                ));
            }
        }
        None => steps.push(format!(
            "keyturn rotates it{via} at its next sweep, which gives it an expiry."
        )),
    }
    steps
}

fn span(delta: TimeDelta) -> String {
    match delta.num_days() {
        0 => "less than a day".to_owned(),
        1 => "1 day".to_owned(),
        n => format!("{n} days"),
    }
}
