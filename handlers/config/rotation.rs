//! The rotation section: the vaults keyturn manages, the policy for untagged objects, the
//! sweep's schedule and the Service Bus queue that carries rotation jobs.

use serde::Serialize;

use super::{
    Collector, DEFAULT_DISCOVERY_QUEUE, DEFAULT_ROTATION_QUEUE, MAX_POLICY_DAYS, VaultHosts,
    display, list,
};
use crate::domain::ids::SubscriptionId;
use crate::domain::names::VaultUrl;
use crate::domain::ncrontab::Schedule;
use crate::domain::resources::{QueueName, ServiceBusNamespace};

/// The rotation policy used where an object's tags say nothing: whole days, checked for
/// range and for rotate-before < validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RotationDefaults {
    pub validity_days: u32,
    pub rotate_before_days: u32,
    pub overlap_days: u32,
    /// How a new application secret is proven before promotion (`KEYTURN_PROOF_*`).
    pub proof_successes: u32,
    pub proof_window_seconds: u32,
    pub proof_deadline_minutes: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct RotationSettings {
    pub vaults: Vec<VaultUrl>,
    #[serde(rename = "rotation_defaults")]
    pub defaults: RotationDefaults,
    #[serde(serialize_with = "display")]
    pub sweep_schedule: Schedule,
    #[serde(rename = "rotation_queue")]
    pub queue: QueueName,
    /// When `DiscoverySweep` starts a sweep of the tenant.
    #[serde(serialize_with = "display")]
    pub discovery_schedule: Schedule,
    /// The queue carrying discovery jobs to `DiscoveryWorker`.
    pub discovery_queue: QueueName,
    /// When `EvidenceExport` exports the previous month's evidence package.
    #[serde(serialize_with = "display")]
    pub evidence_schedule: Schedule,
    /// How fast discovery may call each service.
    pub discovery_budgets: DiscoveryBudgets,
    /// The subscriptions discovery inventories (`KEYTURN_DISCOVERY_SUBSCRIPTIONS`); empty:
    /// every subscription the identity can see.
    pub discovery_subscriptions: Vec<SubscriptionId>,
    pub service_bus_namespace: Option<ServiceBusNamespace>,
}

/// How many requests discovery may send per 10 seconds: to each vault, to Microsoft Graph
/// and to Resource Manager (`discovery::budget` says what each limit is and why the
/// defaults take the share they take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiscoveryBudgets {
    pub key_vault_per_vault: u32,
    pub graph: u32,
    pub resource_manager: u32,
}

/// Key Vault's limit per vault per 10 seconds, the most its budget may take.
pub const MAX_KEY_VAULT_BUDGET: u32 = 4_000;
/// Graph's 8,000 resource units per 10 seconds at 2 units a list request.
pub const MAX_GRAPH_BUDGET: u32 = 4_000;
/// Resource Manager's burst of 250 reads.
pub const MAX_RESOURCE_MANAGER_BUDGET: u32 = 250;

fn parse_budgets(c: &mut Collector<'_>) -> Option<DiscoveryBudgets> {
    let budget = |max: u32| {
        move |v: &str| match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "not a whole number of requests per 10 seconds from 1 to {max}"
            )),
        }
    };
    let key_vault_per_vault = c.parse(
        "KEYTURN_DISCOVERY_KEYVAULT_BUDGET",
        budget(MAX_KEY_VAULT_BUDGET),
    );
    let graph = c.parse("KEYTURN_DISCOVERY_GRAPH_BUDGET", budget(MAX_GRAPH_BUDGET));
    let resource_manager = c.parse(
        "KEYTURN_DISCOVERY_RESOURCE_MANAGER_BUDGET",
        budget(MAX_RESOURCE_MANAGER_BUDGET),
    );
    Some(DiscoveryBudgets {
        key_vault_per_vault: key_vault_per_vault?,
        graph: graph?,
        resource_manager: resource_manager?,
    })
}

/// Comma-separated subscription ids, each once, in the order given.
fn subscriptions(v: &str) -> Result<Vec<SubscriptionId>, String> {
    let mut ids: Vec<SubscriptionId> = Vec::new();
    for text in list(v) {
        let id = SubscriptionId::parse(&text).map_err(|e| format!("`{text}`: {e}"))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

pub(super) fn parse(c: &mut Collector<'_>, hosts: &VaultHosts) -> Option<RotationSettings> {
    let vaults = c
        .parse("KEYTURN_VAULTS", |v| {
            list(v)
                .iter()
                .map(|s| hosts.parse(s).map_err(|e| format!("`{s}`: {e}")))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default();

    let sweep_schedule = c.parse("KEYTURN_SWEEP_SCHEDULE", |v| {
        Schedule::parse(v).map_err(|e| format!("not a six-field NCRONTAB expression ({e})"))
    });

    let queue = c
        .parse("KEYTURN_ROTATION_QUEUE", |v| {
            QueueName::parse(v).map_err(|e| {
                format!(
                    "{e} (letters, digits, '.', '-', '_'; starts and ends with a letter or digit)"
                )
            })
        })
        .unwrap_or_else(|| {
            QueueName::parse(DEFAULT_ROTATION_QUEUE)
                .expect("invariant: the default queue name is valid")
        });

    let discovery_schedule = c.parse("KEYTURN_DISCOVERY_SCHEDULE", |v| {
        Schedule::parse(v).map_err(|e| format!("not a six-field NCRONTAB expression ({e})"))
    });
    let evidence_schedule = c.parse("KEYTURN_EVIDENCE_SCHEDULE", |v| {
        Schedule::parse(v).map_err(|e| format!("not a six-field NCRONTAB expression ({e})"))
    });
    let discovery_queue = c
        .parse("KEYTURN_DISCOVERY_QUEUE", |v| {
            QueueName::parse(v).map_err(|e| {
                format!(
                    "{e} (letters, digits, '.', '-', '_'; starts and ends with a letter or digit)"
                )
            })
        })
        .unwrap_or_else(|| {
            QueueName::parse(DEFAULT_DISCOVERY_QUEUE)
                .expect("invariant: the default queue name is valid")
        });

    let discovery_budgets = parse_budgets(c);
    let discovery_subscriptions = c
        .parse("KEYTURN_DISCOVERY_SUBSCRIPTIONS", subscriptions)
        .unwrap_or_default();

    let defaults = parse_defaults(c);

    let service_bus_namespace = c.parse("ServiceBusConnection__fullyQualifiedNamespace", |v| {
        ServiceBusNamespace::parse(v).map_err(|e| {
            format!("{e}: a fully qualified namespace host name (no scheme, port or path)")
        })
    });

    Some(RotationSettings {
        vaults,
        defaults: defaults?,
        sweep_schedule: sweep_schedule?,
        queue,
        discovery_schedule: discovery_schedule?,
        evidence_schedule: evidence_schedule?,
        discovery_queue,
        discovery_budgets: discovery_budgets?,
        discovery_subscriptions,
        service_bus_namespace,
    })
}

pub(super) fn parse_defaults(c: &mut Collector<'_>) -> Option<RotationDefaults> {
    let days = |min: u32| {
        move |v: &str| match v.parse::<u32>() {
            Ok(n) if (min..=MAX_POLICY_DAYS).contains(&n) => Ok(n),
            _ => Err(format!(
                "not a whole number of days from {min} to {MAX_POLICY_DAYS}"
            )),
        }
    };
    let validity_days = c.parse("KEYTURN_DEFAULT_VALIDITY_DAYS", days(1));
    let rotate_before_days = c.parse("KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS", days(1));
    let overlap_days = c.parse("KEYTURN_DEFAULT_OVERLAP_DAYS", days(0));
    let whole = |min: u32, max: u32| {
        move |v: &str| match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("not a whole number from {min} to {max}")),
        }
    };
    let proof_successes = c.parse(
        "KEYTURN_PROOF_SUCCESSES",
        whole(1, crate::rotation::tags::MAX_PROOF_SUCCESSES),
    );
    let proof_window_seconds = c.parse(
        "KEYTURN_PROOF_WINDOW_SECONDS",
        whole(0, crate::rotation::tags::MAX_PROOF_WINDOW_SECONDS),
    );
    let proof_deadline_minutes = c.parse(
        "KEYTURN_PROOF_DEADLINE_MINUTES",
        whole(1, crate::rotation::tags::MAX_PROOF_DEADLINE_MINUTES),
    );
    let (validity_days, rotate_before_days, overlap_days) =
        (validity_days?, rotate_before_days?, overlap_days?);
    let (proof_successes, proof_window_seconds, proof_deadline_minutes) = (
        proof_successes?,
        proof_window_seconds?,
        proof_deadline_minutes?,
    );
    if u64::from(proof_window_seconds) >= u64::from(proof_deadline_minutes) * 60 {
        c.fail(
            "KEYTURN_PROOF_WINDOW_SECONDS",
            format!(
                "{proof_window_seconds} s is not shorter than KEYTURN_PROOF_DEADLINE_MINUTES ({proof_deadline_minutes} minutes); no proof could finish"
            ),
        );
    }
    if rotate_before_days < validity_days && overlap_days > validity_days - rotate_before_days {
        c.fail(
            "KEYTURN_DEFAULT_OVERLAP_DAYS",
            format!(
                "{overlap_days} is longer than the rotation cadence (KEYTURN_DEFAULT_VALIDITY_DAYS {validity_days} minus KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS {rotate_before_days}); a retirement would remove a credential a newer version's overlap still needs"
            ),
        );
    }
    if rotate_before_days >= validity_days {
        c.fail(
            "KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS",
            format!(
                "{rotate_before_days} is not less than KEYTURN_DEFAULT_VALIDITY_DAYS ({validity_days}); every new version would be due at once"
            ),
        );
    }
    Some(RotationDefaults {
        validity_days,
        rotate_before_days,
        overlap_days,
        proof_successes,
        proof_window_seconds,
        proof_deadline_minutes,
    })
}
