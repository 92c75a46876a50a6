//! The alerts section: when `AlertSweep` runs, the thresholds, the routes (each webhook
//! route names the vault secret holding its URL, never the URL), the default route, the
//! mailbox mail is sent from, the digest's period and horizon, and the ledger's table.

use serde::{Serialize, Serializer};

use super::{Collector, VaultHosts, audit::parse_table_name, display};
use crate::adapters::azure::client::table::TableName;
use crate::alerts::routes::{Channel, Route, RouteName, parse_routes};
use crate::alerts::thresholds::{MAX_THRESHOLD_DAYS, Thresholds};
use crate::domain::contact::MailAddress;
use crate::domain::names::VaultUrl;
use crate::domain::ncrontab::Schedule;

/// Longest digest period: a year. A digest rarer than that is no digest.
pub const MAX_DIGEST_DAYS: u32 = 366;

#[derive(Debug, Clone, Serialize)]
pub struct AlertConfig {
    /// When `AlertSweep` runs.
    #[serde(rename = "alert_schedule", serialize_with = "display")]
    pub schedule: Schedule,
    #[serde(rename = "alert_thresholds", serialize_with = "display")]
    pub thresholds: Thresholds,
    #[serde(rename = "alert_routes", serialize_with = "routes")]
    pub routes: Vec<Route>,
    #[serde(rename = "alert_default_route", serialize_with = "optional_route")]
    pub default_route: Option<RouteName>,
    #[serde(rename = "alert_mailbox")]
    pub mailbox: Option<MailAddress>,
    #[serde(rename = "alert_digest_days")]
    pub digest_days: u32,
    #[serde(rename = "alert_digest_horizon_days")]
    pub digest_horizon_days: u32,
    /// The ledger's table, beside the audit log (Azure).
    #[serde(rename = "alert_table", serialize_with = "display")]
    pub table: TableName,
    /// The vault holding the webhook routes' URLs; `None` on the local backend, whose
    /// vault holds them.
    #[serde(rename = "alert_vault")]
    pub vault: Option<VaultUrl>,
    /// `KEYTURN_ALLOW_ANY_VAULT_HOST`: the vault may be a loopback stand-in, whose Key Vault
    /// challenge names a resource its host cannot be under (tests only).
    #[serde(skip)]
    pub any_vault_host: bool,
}

pub(super) fn parse(
    c: &mut Collector<'_>,
    hosts: &VaultHosts,
    local_backend: bool,
) -> Option<AlertConfig> {
    let schedule = c.parse("KEYTURN_ALERT_SCHEDULE", |v| {
        Schedule::parse(v).map_err(|e| format!("not a six-field NCRONTAB expression ({e})"))
    });
    let thresholds = c.parse("KEYTURN_ALERT_THRESHOLDS", |v| {
        Thresholds::parse(v).map_err(|e| e.to_string())
    });
    let routes = c
        .parse("KEYTURN_ALERT_ROUTES", |v| {
            parse_routes(v).map_err(|e| {
                format!(
                    "{e}; routes are name=kind[:secret] separated by ';', the secret naming the \
                     vault secret that holds a webhook's URL"
                )
            })
        })
        .unwrap_or_default();
    let default_route = c.parse("KEYTURN_ALERT_DEFAULT_ROUTE", |v| {
        let name = RouteName::parse(v)
            .ok_or("not a route name (lower-case letters, digits and hyphens)")?;
        if routes.iter().any(|r| r.name == name) {
            Ok(name)
        } else {
            Err(format!(
                "route {name} is not one of KEYTURN_ALERT_ROUTES; define it there first"
            ))
        }
    });
    let mailbox = c.parse("KEYTURN_ALERT_MAILBOX", |v| {
        MailAddress::parse(v).map_err(|e| format!("not a mail address ({e})"))
    });
    if mailbox.is_none()
        && c.env.value("KEYTURN_ALERT_MAILBOX").is_none()
        && let Some(mail) = routes.iter().find(|r| r.channel == Channel::Mail)
    {
        c.fail(
            "KEYTURN_ALERT_MAILBOX",
            format!(
                "missing; route {} sends mail, which goes out from this mailbox",
                mail.name
            ),
        );
    }
    let digest_days = c.parse("KEYTURN_ALERT_DIGEST_DAYS", |v| {
        whole_days(v, 1, MAX_DIGEST_DAYS)
    });
    let digest_horizon_days = c.parse("KEYTURN_ALERT_DIGEST_HORIZON_DAYS", |v| {
        whole_days(v, 1, MAX_THRESHOLD_DAYS)
    });
    let table = c.parse("KEYTURN_ALERT_TABLE", parse_table_name);
    let vault = c.parse("KEYTURN_ALERT_VAULT", |v| {
        hosts.parse(v).map_err(|e| format!("`{v}`: {e}"))
    });
    let webhook = routes.iter().find(|r| r.channel != Channel::Mail);
    if let Some(webhook) = webhook
        && vault.is_none()
        && !local_backend
        && c.env.value("KEYTURN_ALERT_VAULT").is_none()
    {
        c.fail(
            "KEYTURN_ALERT_VAULT",
            format!(
                "missing; route {} reads its webhook URL from a secret in this vault",
                webhook.name
            ),
        );
    }
    Some(AlertConfig {
        schedule: schedule?,
        thresholds: thresholds?,
        routes,
        default_route,
        mailbox,
        digest_days: digest_days?,
        digest_horizon_days: digest_horizon_days?,
        table: table?,
        vault,
        any_vault_host: *hosts == VaultHosts::Any,
    })
}

fn whole_days(v: &str, min: u32, max: u32) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("not a whole number of days from {min} to {max}")),
    }
}

fn routes<S: Serializer>(routes: &[Route], s: S) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = routes
        .iter()
        .map(|r| match &r.channel {
            Channel::Teams { secret }
            | Channel::Slack { secret }
            | Channel::CloudEvents { secret } => {
                format!("{}={}:{secret}", r.name, r.channel.kind())
            }
            Channel::Mail => format!("{}=mail", r.name),
        })
        .collect();
    s.collect_str(&text.join(";"))
}

fn optional_route<S: Serializer>(route: &Option<RouteName>, s: S) -> Result<S::Ok, S::Error> {
    match route {
        Some(route) => s.collect_str(route),
        None => s.serialize_none(),
    }
}
