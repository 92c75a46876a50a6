//! The alerts engine: walks the inventory (a page at a time, never the whole tenant),
//! alerts each credential at the tightest threshold it has crossed, once per route
//! (the ledger remembers), and sends the periodic digest.
//!
//! Each delivery (an alert or the period's digest) is claimed in the ledger before it is
//! sent, as a lease ([`ALERT_LEASE`], [`DIGEST_LEASE`]): instances sweeping at once send it
//! once, the others leaving a live claim alone. A delivery sent is confirmed in the ledger
//! and never sent again; one that fails gives its claim back, so the next run tries it
//! again; one failing channel never stops the others. An instance that stops between claim
//! and confirmation leaves a claim whose lease runs out, and the next run (on any
//! instance) takes it over and sends it: deliveries are at least once, and the rare repeat
//! (the stopped instance had sent, but not confirmed) carries the same notice id (the
//! CloudEvents `id`) for the receiver to drop. What went out, what was already sent, what
//! another instance was sending, what was taken over, what failed and what had nowhere to
//! go are counted in the report.

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
use crate::domain::clock::Clock;
use crate::domain::contact::MailAddress;
use crate::domain::inventory::{CredentialFilter, Expiring, InventoryCredential};
use crate::ports::PortError;
use crate::ports::alert_ledger::{AlertLedger, Claim, ClaimToken, LedgerEntry, LedgerKey};
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

/// How long a claim on one alert holds off other instances: well over one send with its
/// retries (three tries of a 30-second webhook timeout, with `Retry-After` waits of up to
/// 10 s between them, is two minutes). After it, another run may take the claim over.
pub const ALERT_LEASE: TimeDelta = TimeDelta::minutes(10);

/// How long a claim on the period's digest holds: the digest is summarised after it is
/// claimed, which reads the whole inventory a page at a time.
pub const DIGEST_LEASE: TimeDelta = TimeDelta::minutes(30);

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
    /// Deliveries another instance has claimed and is sending (its lease is live): left
    /// to it. Should it stop before confirming, a later run takes the claim over.
    pub in_flight: u64,
    /// Deliveries made now on a claim taken over: an earlier sender stopped between its
    /// claim and its confirmation (the receiver may see that notice twice, with one id).
    pub taken_over: u64,
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
    /// When claims are made and confirmed (a run's `now` says which thresholds are
    /// crossed; a long run's claims are stamped as they are made, so their leases hold).
    pub clock: &'a Clock,
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
                    // Stamped by the clock when it is claimed and when it is confirmed.
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
    /// The period's ledger entry is claimed before the digest is summarised and sent
    /// ([`DIGEST_LEASE`]): of several instances (or runs) only the one whose claim is made
    /// sends, and a sending that fails releases the claim so the next run tries again. An
    /// instance that stops before confirming leaves a claim the next run in the period
    /// takes over once its lease has run out: the digest goes out at least once, with the
    /// period's stable notice id.
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
        let Some((entry, token)) = self.claim(entry, DIGEST_LEASE, &mut report).await? else {
            return Ok(report);
        };
        let sent = self
            .send_digest(now, period, &route, &entry, &mut report)
            .await;
        if matches!(sent, Ok(true)) {
            self.confirm(entry, &token).await?;
        } else {
            // Not sent: the claim is given back so the next run sends it.
            self.ledger.release(&entry.key, &token).await?;
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

    /// Delivers one alert unless the ledger holds it. The ledger entry is claimed before
    /// sending, as a lease ([`ALERT_LEASE`]; a conditional insert, or a conditional
    /// takeover of a claim whose lease ran out: one instance wins): of several instances
    /// sweeping at once only the one whose claim is made sends. A send that succeeds is
    /// confirmed; one that fails releases the claim so the next run sends it. A crash
    /// between claim and confirmation leaves a claim the next run takes over once its
    /// lease has run out, so the alert is sent at least once; a receiver drops the rare
    /// repeat (sent, but not confirmed) by the notice's stable id.
    async fn deliver(
        &self,
        notice: &Notice,
        route: &RouteName,
        people: &[MailAddress],
        entry: LedgerEntry,
        report: &mut AlertReport,
    ) -> Result<(), PortError> {
        let Some((entry, token)) = self.claim(entry, ALERT_LEASE, report).await? else {
            return Ok(());
        };
        if self.send(notice, route, people, &entry, report).await? {
            self.confirm(entry, &token).await
        } else {
            // Not sent: the claim is given back so the next run sends it.
            self.ledger.release(&entry.key, &token).await
        }
    }

    /// Claims `entry` now for `lease`: the entry as claimed and the claim's token, or
    /// `None` (counted) when it was sent before or another instance is sending it.
    async fn claim(
        &self,
        mut entry: LedgerEntry,
        lease: TimeDelta,
        report: &mut AlertReport,
    ) -> Result<Option<(LedgerEntry, ClaimToken)>, PortError> {
        if self.ledger.sent(&entry.key).await?.is_some() {
            report.already_sent += 1;
            return Ok(None);
        }
        entry.sent_at = self.clock.now();
        match self.ledger.claim(&entry, lease).await? {
            Claim::Made {
                token, taken_over, ..
            } => {
                if taken_over {
                    report.taken_over += 1;
                    tracing::warn!(
                        route = %entry.route,
                        subject = %entry.subject,
                        "an earlier claim on this notice ran out unconfirmed (its sender stopped); sending it now, with the same notice id"
                    );
                }
                Ok(Some((entry, token)))
            }
            Claim::Held { .. } => {
                report.in_flight += 1;
                Ok(None)
            }
            Claim::Sent { .. } => {
                report.already_sent += 1;
                Ok(None)
            }
        }
    }

    /// Records a claimed delivery as sent, now.
    async fn confirm(&self, mut entry: LedgerEntry, token: &ClaimToken) -> Result<(), PortError> {
        entry.sent_at = self.clock.now();
        self.ledger.confirm(&entry, token).await
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
