//! `AlertSweep`: the timer that runs the alerts engine over the inventory discovery keeps.
//! Each run builds the channels (reading each webhook route's URL from its vault secret,
//! so a replaced URL is used from the next run on), alerts every credential past a
//! threshold it was not alerted at, sends the digest when its period is due, and forgets
//! ledger entries past their use. It says how old the inventory it read is, and audits
//! what it sent by route (never a URL). A delivery that fails gives its claim back, so the
//! next run sends it; a route that cannot be built fails its deliveries, not the others'.

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::alerts::engine::{AlertEngine, AlertReport, AlertSettings, Channels};
use crate::audit::Action;
use crate::domain::function::Function;
use crate::events::timer::TimerInfo;
use crate::functions::{Context, FunctionError};
use crate::ports::alert_ledger::AlertLedger;
use crate::ports::audit::{AuditObject, Outcome};

pub(crate) const NAME: Function = Function::AlertSweep;
/// The trigger binding's name in `function-definitions/AlertSweep/function.json`.
pub const BINDING: &str = "timer";

/// An inventory older than this is called stale in the run's outcome and log: discovery
/// runs every six hours by default, so a day means several sweeps did not finish.
pub const STALE_INVENTORY: TimeDelta = TimeDelta::hours(24);

/// The channels of the configured routes, built for one run. Start-up implements it over
/// the vault and the notifiers; tests give fixed channels.
#[async_trait]
pub trait ChannelSource: Send + Sync {
    /// Every route that could be built, and for each that could not, its name and why
    /// (naming the route and the secret, never a value).
    async fn channels(&self) -> (Channels, Vec<(String, String)>);
}

/// What `AlertSweep` runs on.
pub struct AlertServices {
    pub ledger: Arc<dyn AlertLedger>,
    pub channels: Arc<dyn ChannelSource>,
    pub settings: AlertSettings,
}

impl std::fmt::Debug for AlertServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertServices")
            .field("ledger", &self.ledger)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct AlertsRan {
    pub past_due: bool,
    /// No route is configured (`KEYTURN_ALERT_ROUTES` empty): alerts are off, and every
    /// due credential is counted as unrouted.
    pub alerts_off: bool,
    /// How old the inventory the alerts stand on is: when discovery last read the
    /// oldest of the credentials this run looked at (`None`: it looked at none).
    pub inventory_scanned_at: Option<DateTime<Utc>>,
    pub inventory_age_hours: Option<i64>,
    pub inventory_stale: bool,
    /// Routes that could not be built this run, with why.
    pub unavailable_routes: Vec<(String, String)>,
    pub alerts: AlertReport,
    pub digest: AlertReport,
    /// Ledger entries forgotten by housekeeping.
    pub forgotten: u64,
}

pub(crate) async fn run(ctx: &Context, timer: TimerInfo) -> Result<AlertsRan, FunctionError> {
    if timer.is_past_due {
        tracing::warn!("alert sweep is past due: the previous run was missed or overran");
    }
    let services = ctx.alerts()?;
    let inventory = ctx.services.inventory.as_deref().ok_or_else(|| {
        FunctionError::Port(crate::ports::PortError::transient(
            "alerts are not configured in this app: start-up chose no inventory store",
        ))
    })?;
    let alerts_off = services.settings.routing.routes.is_empty();
    if alerts_off {
        tracing::warn!(
            "alerts are off: KEYTURN_ALERT_ROUTES names no route, so nothing is sent and no digest goes out; due credentials are only counted"
        );
    }
    let (channels, unavailable_routes) = services.channels.channels().await;
    for (route, problem) in &unavailable_routes {
        tracing::error!(
            route,
            problem,
            "a route cannot be built; its alerts wait for the next run"
        );
    }
    let engine = AlertEngine {
        inventory,
        ledger: services.ledger.as_ref(),
        channels: &channels,
        settings: &services.settings,
        clock: &ctx.services.clock,
    };
    let alerts = engine.alert(ctx.now).await?;
    let digest = engine.digest(ctx.now).await?;
    let forgotten = services
        .ledger
        .forget_before(ctx.now - services.settings.ledger_horizon())
        .await?;

    let scanned_at = alerts.oldest_scan;
    let age = scanned_at.map(|at| (ctx.now - at).num_hours());
    let stale = scanned_at.is_some_and(|at| ctx.now - at > STALE_INVENTORY);
    let ran = AlertsRan {
        past_due: timer.is_past_due,
        alerts_off,
        inventory_scanned_at: scanned_at,
        inventory_age_hours: age,
        inventory_stale: stale,
        unavailable_routes,
        alerts,
        digest,
        forgotten,
    };
    if stale {
        tracing::warn!(
            age_hours = age,
            "alerting from an inventory discovery has not refreshed for over a day: check DiscoverySweep and DiscoveryWorker"
        );
    }
    tracing::info!(
        due = ran.alerts.due,
        sent = ran.alerts.sent,
        already_sent = ran.alerts.already_sent,
        in_flight = ran.alerts.in_flight,
        taken_over = ran.alerts.taken_over + ran.digest.taken_over,
        failed = ran.alerts.failed.len() + ran.digest.failed.len(),
        unrouted = ran.alerts.unrouted,
        digest_sent = ran.digest.sent,
        inventory_age_hours = age,
        "alert sweep finished"
    );
    let failed = !ran.alerts.failed.is_empty() || !ran.digest.failed.is_empty();
    ctx.audit(
        Action::AlertsSent,
        AuditObject::default(),
        if failed {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        },
        Some(&reason(&ran)),
    )
    .await?;
    Ok(ran)
}

/// The audit entry's reason: counts and route names, never a URL or a credential's
/// value (the engine's failures name the route and an HTTP status or a class of error).
fn reason(ran: &AlertsRan) -> String {
    let a = &ran.alerts;
    let mut text = String::new();
    if ran.alerts_off {
        text.push_str("alerts are off (KEYTURN_ALERT_ROUTES names no route): ");
    }
    let _ = write!(
        text,
        "{} due, {} sent, {} already sent, {} unrouted, {} failed",
        a.due,
        a.sent,
        a.already_sent,
        a.unrouted,
        a.failed.len()
    );
    if a.in_flight > 0 {
        let _ = write!(text, ", {} being sent by another instance", a.in_flight);
    }
    let taken_over = a.taken_over + ran.digest.taken_over;
    if taken_over > 0 {
        let _ = write!(
            text,
            ", {taken_over} sent on a claim whose sender stopped before confirming it"
        );
    }
    let mut routes = a.sent_by_route.iter().peekable();
    if routes.peek().is_some() {
        text.push_str(" (sent:");
        for (route, count) in routes {
            let _ = write!(text, " {route} {count}");
        }
        text.push(')');
    }
    match (
        ran.digest.sent_by_route.keys().next(),
        ran.digest.failed.first(),
    ) {
        (Some(route), _) => {
            let _ = write!(text, "; digest sent to {route}");
        }
        (None, Some(failure)) => {
            let _ = write!(text, "; digest to {} failed", failure.route);
        }
        (None, None) => {}
    }
    let mut failing: Vec<&str> = a.failed.iter().map(|f| f.route.as_str()).collect();
    failing.sort_unstable();
    failing.dedup();
    if !failing.is_empty() {
        let _ = write!(text, "; failing routes: {}", failing.join(" "));
    }
    if !ran.unavailable_routes.is_empty() {
        let names: Vec<&str> = ran
            .unavailable_routes
            .iter()
            .map(|(r, _)| r.as_str())
            .collect();
        let _ = write!(text, "; routes not built: {}", names.join(" "));
    }
    match ran.inventory_age_hours {
        Some(hours) => {
            let _ = write!(
                text,
                "; inventory {hours} h old{}",
                if ran.inventory_stale { " (stale)" } else { "" }
            );
        }
        None => text.push_str("; no credential within the thresholds"),
    }
    if ran.forgotten > 0 {
        let _ = write!(text, "; {} old ledger entries forgotten", ran.forgotten);
    }
    text
}
