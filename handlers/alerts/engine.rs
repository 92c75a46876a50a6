//! The alerts engine: walks the inventory (a page at a time, never the whole tenant),
//! alerts each credential at the tightest threshold it has crossed, once per route
//! (the ledger remembers), and sends the periodic digest.
//!
//! Each delivery (an alert or the period's digest) is claimed in the ledger before it is
//! sent, so instances sweeping at once send it once; a delivery that fails gives its claim
//! back, so the next run tries it again; one failing channel never stops the others. What went out, what was already sent, what failed and
//! what had nowhere to go are counted in the report.

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::json;

use crate::alerts::message::{self, source_label};
use crate::alerts::routes::RouteName;
use crate::alerts::routing::{RoutingSettings, route};
use crate::alerts::thresholds::Thresholds;
use crate::domain::contact::MailAddress;
use crate::domain::inventory::{CredentialFilter, Expiring, InventoryCredential};
use crate::ports::PortError;
use crate::ports::alert_ledger::{AlertLedger, LedgerEntry, LedgerKey};
use crate::ports::inventory::{InventoryStore, credential_stream, finding_stream};
use crate::ports::notify::{Fact, Notice, NoticeKind, Notifier, Severity};
use crate::rotation::tags::{LAST_ERROR, PolicyDefaults};

/// Records read per inventory page: the stores' largest page (Table storage's 1,000),
/// so a walk costs as few round trips as it can while memory holds one page.
pub const PAGE_SIZE: u32 = 1000;

/// Credentials a digest lists by name (the soonest to expire); the rest are counted.
/// Teams and Slack both cut long messages; twenty lines is what a reader takes in.
pub const DIGEST_LISTED: usize = 20;

/// A week: the digest's default period.
pub const DEFAULT_DIGEST_DAYS: i64 = 7;
/// The digest's default look-ahead: what expires in the next 30 days.
pub const DEFAULT_DIGEST_HORIZON_DAYS: i64 = 30;

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub thresholds: Thresholds,
    pub routing: RoutingSettings,
    /// The rotation defaults: what a managed credential's missing tags mean.
    pub defaults: PolicyDefaults,
    /// How often the digest goes out.
    pub digest_every: TimeDelta,
    /// What "expires soon" means in the digest.
    pub digest_horizon: TimeDelta,
}

/// How long past its furthest threshold a delivery is remembered: a year. An alert's
/// key holds the credential's expiry, so a renewed credential never asks for an old key;
/// only an expired credential nobody removed is alerted "on expiry" again, once a year.
pub const LEDGER_RETENTION: TimeDelta = TimeDelta::days(365);

impl AlertSettings {
    /// Deliveries recorded before `now` minus this are forgotten: the furthest threshold
    /// (an alert at it stays relevant until the credential expires) plus
    /// [`LEDGER_RETENTION`], and never less than two digest periods.
    pub fn ledger_horizon(&self) -> TimeDelta {
        (self.thresholds.horizon() + LEDGER_RETENTION).max(self.digest_every * 2)
    }
}

/// The channels, by route.
pub type Channels = BTreeMap<RouteName, Arc<dyn Notifier>>;

/// A delivery that failed (it is tried again at the next run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryFailure {
    pub route: String,
    /// The credential's inventory id, or `digest`.
    pub subject: String,
    pub error: String,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AlertReport {
    /// Credentials past a threshold.
    pub due: u64,
    /// Deliveries made now.
    pub sent: u64,
    /// Deliveries the ledger says were made before.
    pub already_sent: u64,
    /// Credentials past a threshold with no route to carry their alert.
    pub unrouted: u64,
    /// Deliveries made now, by route.
    pub sent_by_route: BTreeMap<String, u64>,
    /// Owners or tag entries that could not be used (see routing).
    pub routing_problems: u64,
    /// When discovery last read the oldest and the newest of the credentials this run
    /// looked at: how stale the inventory the alerts stand on is.
    pub oldest_scan: Option<DateTime<Utc>>,
    pub newest_scan: Option<DateTime<Utc>>,
    pub failed: Vec<DeliveryFailure>,
}

/// The engine over its ports.
pub struct AlertEngine<'a> {
    pub inventory: &'a dyn InventoryStore,
    pub ledger: &'a dyn AlertLedger,
    pub channels: &'a Channels,
    pub settings: &'a AlertSettings,
}

impl AlertEngine<'_> {
    /// Alerts every enabled credential that has crossed a threshold at `now` and has not
    /// been alerted at that threshold on that route before.
    pub async fn alert(&self, now: DateTime<Utc>) -> Result<AlertReport, PortError> {
        let mut report = AlertReport::default();
        let filter = CredentialFilter {
            expiring: Some(Expiring {
                now,
                within: self.settings.thresholds.horizon(),
            }),
            ..CredentialFilter::default()
        };
        let mut credentials = credential_stream(self.inventory, filter, PAGE_SIZE);
        while let Some(credential) = credentials.try_next().await? {
            if !credential.enabled {
                continue;
            }
            let scanned = credential.scanned_at;
            report.oldest_scan = Some(report.oldest_scan.map_or(scanned, |t| t.min(scanned)));
            report.newest_scan = Some(report.newest_scan.map_or(scanned, |t| t.max(scanned)));
            let Some(threshold) = self.settings.thresholds.crossed(credential.expires, now) else {
                continue;
            };
            report.due += 1;
            let routed = route(&credential, &self.settings.routing);
            report.routing_problems += routed.problems.len() as u64;
            if routed.deliveries.is_empty() {
                report.unrouted += 1;
                tracing::warn!(
                    credential = %credential.id(),
                    threshold = threshold.days(),
                    "an alert has no route: set a default route"
                );
                continue;
            }
            let notice = message::alert(&credential, threshold, now, &self.settings.defaults);
            for delivery in routed.deliveries {
                let entry = LedgerEntry {
                    key: LedgerKey::of(&[&notice.id, delivery.route.as_str()]),
                    subject: credential.id().to_string(),
                    route: delivery.route.to_string(),
                    threshold: Some(threshold.days()),
                    sent_at: now,
                };
                self.deliver(
                    &notice,
                    &delivery.route,
                    &delivery.people,
                    entry,
                    &mut report,
                )
                .await?;
            }
        }
        Ok(report)
    }

    /// Sends the digest to the default route, once per period (`digest_every`, counted
    /// from the Unix epoch, so every instance agrees which period `now` is in).
    ///
    /// The period's ledger entry is recorded before the digest is sent, as a claim: of
    /// several instances (or runs) only the one whose record is made sends, and a sending
    /// that fails forgets the claim so the next run tries again. A crash between claim
    /// and send skips that period's digest rather than sending it twice.
    pub async fn digest(&self, now: DateTime<Utc>) -> Result<AlertReport, PortError> {
        let mut report = AlertReport::default();
        let Some(route) = self.settings.routing.default_route.clone() else {
            return Ok(report);
        };
        let period_seconds = self.settings.digest_every.num_seconds().max(1);
        let period = now.timestamp().div_euclid(period_seconds);
        let entry = LedgerEntry {
            key: LedgerKey::of(&["digest", &period.to_string(), route.as_str()]),
            subject: "digest".to_owned(),
            route: route.to_string(),
            threshold: None,
            sent_at: now,
        };
        if self.ledger.sent(&entry.key).await?.is_some() || !self.ledger.record(&entry).await? {
            report.already_sent += 1;
            return Ok(report);
        }
        let sent = self
            .send_digest(now, period, &route, &entry, &mut report)
            .await;
        if !matches!(sent, Ok(true)) {
            // Not sent: the claim is given back so the next run sends it.
            self.ledger.forget(&entry.key).await?;
        }
        sent.map(|_| report)
    }

    /// Sends the claimed digest; `Ok(false)` when the channel refused it (reported).
    async fn send_digest(
        &self,
        now: DateTime<Utc>,
        period: i64,
        route: &RouteName,
        entry: &LedgerEntry,
        report: &mut AlertReport,
    ) -> Result<bool, PortError> {
        let summary = self.summarise(now).await?;
        let notice = summary.notice(now, self.settings.digest_horizon, period);
        let before = report.sent;
        self.send(&notice, route, &[], entry, report).await?;
        Ok(report.sent > before)
    }

    /// Delivers one alert unless the ledger holds it. The ledger entry is recorded before
    /// sending, as a claim (a conditional insert: Table storage answers 409 to every
    /// instance but the first): of several instances sweeping at once only the one whose
    /// record is made sends, and a sending that fails forgets the claim so the next run
    /// sends it. A crash between claim and send loses that one alert rather than sending
    /// it twice; the credential stays in the digest and meets its next threshold.
    async fn deliver(
        &self,
        notice: &Notice,
        route: &RouteName,
        people: &[MailAddress],
        entry: LedgerEntry,
        report: &mut AlertReport,
    ) -> Result<(), PortError> {
        if self.ledger.sent(&entry.key).await?.is_some() || !self.ledger.record(&entry).await? {
            report.already_sent += 1;
            return Ok(());
        }
        if !self.send(notice, route, people, &entry, report).await? {
            // Not sent: the claim is given back so the next run sends it.
            self.ledger.forget(&entry.key).await?;
        }
        Ok(())
    }

    /// Hands `notice` to the route's channel and reports the outcome; `true` when it was
    /// delivered. Records nothing.
    async fn send(
        &self,
        notice: &Notice,
        route: &RouteName,
        people: &[MailAddress],
        entry: &LedgerEntry,
        report: &mut AlertReport,
    ) -> Result<bool, PortError> {
        let Some(channel) = self.channels.get(route) else {
            report.failed.push(DeliveryFailure {
                route: route.to_string(),
                subject: entry.subject.clone(),
                error: format!("route {route} is not configured"),
            });
            return Ok(false);
        };
        match channel.notify(notice, people).await {
            Ok(()) => {
                report.sent += 1;
                *report.sent_by_route.entry(route.to_string()).or_default() += 1;
                tracing::info!(
                    route = %route,
                    subject = %entry.subject,
                    threshold = entry.threshold,
                    notice = %notice.id,
                    "notice delivered"
                );
                Ok(true)
            }
            Err(error) => {
                tracing::warn!(
                    route = %route,
                    subject = %entry.subject,
                    error = %error,
                    "notice not delivered; the next run tries again"
                );
                report.failed.push(DeliveryFailure {
                    route: route.to_string(),
                    subject: entry.subject.clone(),
                    error: error.to_string(),
                });
                Ok(false)
            }
        }
    }

    /// One pass over the inventory and its findings, holding one page and the
    /// [`DIGEST_LISTED`] soonest credentials.
    async fn summarise(&self, now: DateTime<Utc>) -> Result<Summary, PortError> {
        let horizon = now + self.settings.digest_horizon;
        let mut summary = Summary::default();
        let mut credentials =
            credential_stream(self.inventory, CredentialFilter::default(), PAGE_SIZE);
        while let Some(credential) = credentials.try_next().await? {
            summary.total += 1;
            if !credential.managed {
                summary.unmanaged += 1;
            }
            let failing = credential.managed
                && (credential
                    .tags
                    .keys()
                    .any(|name| name.eq_ignore_ascii_case(LAST_ERROR))
                    || credential.expires.is_some_and(|e| e <= now));
            if failing {
                summary.failing += 1;
            }
            let Some(expires) = credential.expires.filter(|e| *e <= horizon) else {
                continue;
            };
            if !credential.enabled {
                continue;
            }
            if expires <= now {
                summary.expired += 1;
            } else {
                summary.expiring += 1;
            }
            summary
                .soonest
                .push(Listed::of(&credential, expires, failing));
            if summary.soonest.len() > DIGEST_LISTED {
                summary.soonest.pop();
            }
        }
        let mut findings = finding_stream(self.inventory, PAGE_SIZE);
        while let Some(finding) = findings.try_next().await? {
            if finding.kind.is_error() {
                summary.scan_errors += 1;
            }
        }
        Ok(summary)
    }
}

/// One credential a digest names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Listed {
    expires: DateTime<Utc>,
    line: String,
}

impl Listed {
    fn of(credential: &InventoryCredential, expires: DateTime<Utc>, failing: bool) -> Self {
        let state = match (credential.managed, failing) {
            (true, true) => "managed, rotation failing",
            (true, false) => "managed",
            (false, _) => "unmanaged",
        };
        Self {
            expires,
            line: format!(
                "{} {} ({}) expires {}: {state}",
                credential.kind.as_str(),
                credential.name,
                source_label(&credential.source),
                expires.format("%Y-%m-%d")
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Summary {
    total: u64,
    expiring: u64,
    expired: u64,
    failing: u64,
    unmanaged: u64,
    scan_errors: u64,
    /// A max-heap on expiry: popping drops the latest, keeping the soonest.
    soonest: BinaryHeap<Listed>,
}

impl Summary {
    fn notice(self, now: DateTime<Utc>, horizon: TimeDelta, period: i64) -> Notice {
        let days = horizon.num_days();
        let severity = if self.expired > 0 || self.failing > 0 {
            Severity::Critical
        } else if self.expiring > 0 {
            Severity::Warning
        } else {
            Severity::Info
        };
        let mut listed: Vec<Listed> = self.soonest.into_vec();
        listed.sort();
        let shown = listed.len() as u64;
        let mut actions: Vec<String> = listed.into_iter().map(|l| l.line).collect();
        let due = self.expiring + self.expired;
        if due > shown {
            actions.push(format!(
                "… and {} more: run `keyturn inventory --expiring {days}d` for the full list",
                due - shown
            ));
        }
        if self.unmanaged > 0 {
            actions.push(format!(
                "{} credentials are not managed by keyturn: `keyturn inventory --unmanaged` lists them with the tags that would bring them under management",
                self.unmanaged
            ));
        }
        Notice {
            id: LedgerKey::of(&["digest", &period.to_string()]).to_string(),
            kind: NoticeKind::Digest,
            severity,
            title: format!("keyturn digest: {due} credentials expire within {days} days"),
            summary: format!(
                "Of {} credentials in the inventory, {} expire in the next {days} days, {} have expired, {} managed ones are failing to rotate and {} are unmanaged.",
                self.total, self.expiring, self.expired, self.failing, self.unmanaged
            ),
            facts: vec![
                Fact::new(
                    format!("Expiring within {days} days"),
                    self.expiring.to_string(),
                ),
                Fact::new("Expired", self.expired.to_string()),
                Fact::new("Failing (managed)", self.failing.to_string()),
                Fact::new("Unmanaged", format!("{} of {}", self.unmanaged, self.total)),
                Fact::new("Scan errors", self.scan_errors.to_string()),
            ],
            actions,
            subject: None,
            time: now,
            detail: json!({
                "period": period,
                "at": now.to_rfc3339_opts(SecondsFormat::Secs, true),
                "horizonDays": days,
                "total": self.total,
                "expiring": self.expiring,
                "expired": self.expired,
                "failing": self.failing,
                "unmanaged": self.unmanaged,
                "scanErrors": self.scan_errors,
            }),
        }
    }
}
