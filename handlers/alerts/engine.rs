//! The alerts engine: walks the inventory (a page at a time, never the whole tenant),
//! alerts each credential at the tightest threshold it has crossed, once per route
//! (the ledger remembers), and sends the periodic digest.
//!
//! One client secret kept in a vault is two rows of the inventory: the managed vault
//! secret whose `keyturn-app-id` and `keyturn-key-id` name it, and the application's
//! credential, with one expiry and one thing to do. The application credential speaks for
//! the pair: it carries the application's owners, and its alert says keyturn rotates it
//! through the secret. The secret's tags come with it (its `keyturn-owner` routes the alert
//! too, its `keyturn-last-error` says the rotation is failing), and the secret is not
//! alerted, nor counted in the digest, on its own. A secret whose credential is not in the
//! inventory (the directory could not be read) still speaks for itself. The secrets are
//! read first, in a walk of the vault secrets only, and held by the credential they name:
//! at most one per managed application secret.
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

use crate::domain::ids::{AppId, KeyId};
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
use crate::domain::inventory::{
    CredentialFilter, CredentialKind, Expiring, InventoryCredential, SourceKind,
};
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
    /// been alerted at that threshold on that route before; a client secret kept in a
    /// managed vault secret once for the pair, as the client secret (module doc).
    pub async fn alert(&self, now: DateTime<Utc>) -> Result<AlertReport, PortError> {
        let mut report = AlertReport::default();
        let expiring = Some(Expiring {
            now,
            within: self.settings.thresholds.horizon(),
        });
        let due = |credential: &InventoryCredential| {
            credential.enabled
                && self
                    .settings
                    .thresholds
                    .crossed(credential.expires, now)
                    .is_some()
        };
        let mut held = self.held_client_secrets(expiring, due).await?;
        let filter = CredentialFilter {
            expiring,
            ..CredentialFilter::default()
        };
        let mut credentials = credential_stream(self.inventory, filter, PAGE_SIZE);
        while let Some(mut credential) = credentials.try_next().await? {
            if !credential.enabled {
                continue;
            }
            let scanned = credential.scanned_at;
            report.oldest_scan = Some(report.oldest_scan.map_or(scanned, |t| t.min(scanned)));
            report.newest_scan = Some(report.newest_scan.map_or(scanned, |t| t.max(scanned)));
            if !due(&credential) {
                continue;
            }
            if held.speaks_for_secret(&mut credential) == Speaker::Secret {
                // Its client secret speaks for it, or it does at the end of the walk.
                continue;
            }
            self.alert_one(&credential, now, &mut report).await?;
        }
        drop(credentials);
        for secret in held.unspoken() {
            self.alert_one(&secret, now, &mut report).await?;
        }
        Ok(report)
    }

    /// The managed vault secrets among those `expiring` selects (and `keep` keeps) that
    /// hold an application client secret, by that client secret.
    async fn held_client_secrets(
        &self,
        expiring: Option<Expiring>,
        keep: impl Fn(&InventoryCredential) -> bool,
    ) -> Result<HeldSecrets, PortError> {
        let filter = CredentialFilter {
            expiring,
            source_kind: Some(SourceKind::Vault),
            kind: Some(CredentialKind::Secret),
            ..CredentialFilter::default()
        };
        let mut held = HeldSecrets::default();
        let mut secrets = credential_stream(self.inventory, filter, PAGE_SIZE);
        while let Some(secret) = secrets.try_next().await? {
            if !secret.managed || !keep(&secret) {
                continue;
            }
            if let Some(pair) = secret.held_client_secret() {
                held.secrets.insert(pair, Some(secret));
            }
        }
        Ok(held)
    }

    /// Alerts one credential at the tightest threshold it has crossed at `now`, on each
    /// of its routes the ledger has no delivery for.
    async fn alert_one(
        &self,
        credential: &InventoryCredential,
        now: DateTime<Utc>,
        report: &mut AlertReport,
    ) -> Result<(), PortError> {
        let Some(threshold) = self.settings.thresholds.crossed(credential.expires, now) else {
            return Ok(());
        };
        report.due += 1;
        let routed = route(credential, &self.settings.routing);
        report.routing_problems += routed.problems.len() as u64;
        if routed.deliveries.is_empty() {
            report.unrouted += 1;
            tracing::warn!(
                credential = %credential.id(),
                threshold = threshold.days(),
                "an alert has no route: set a default route"
            );
            return Ok(());
        }
        let notice = message::alert(credential, threshold, now, &self.settings.defaults);
        for delivery in routed.deliveries {
            let entry = LedgerEntry {
                key: LedgerKey::of(&[&notice.id, delivery.route.as_str()]),
                subject: credential.id().to_string(),
                route: delivery.route.to_string(),
                threshold: Some(threshold.days()),
                // Stamped by the clock when it is claimed and when it is confirmed.
                sent_at: now,
            };
            self.deliver(&notice, &delivery.route, &delivery.people, entry, report)
                .await?;
        }
        Ok(())
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
        let mut held = self.held_client_secrets(None, |_| true).await?;
        let mut credentials =
            credential_stream(self.inventory, CredentialFilter::default(), PAGE_SIZE);
        while let Some(mut credential) = credentials.try_next().await? {
            if held.speaks_for_secret(&mut credential) == Speaker::Secret {
                continue;
            }
            summary.count(&credential, now, horizon);
        }
        drop(credentials);
        for secret in held.unspoken() {
            summary.count(&secret, now, horizon);
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

/// Who a walk's credential is: a vault secret its client secret speaks for (or will, at
/// the end of the walk), or one that speaks for itself (and for the secret holding it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaker {
    Secret,
    Itself,
}

/// The managed vault secrets holding a client secret, by the client secret; `None` once
/// their client secret was met in the walk and spoke for them.
#[derive(Debug, Default)]
struct HeldSecrets {
    secrets: BTreeMap<(AppId, KeyId), Option<InventoryCredential>>,
}

impl HeldSecrets {
    /// Whether `credential` is a secret whose client secret speaks for it. A client
    /// secret held by a secret takes the secret's tags (its owner tag, its last error)
    /// and the secret is then spoken for.
    fn speaks_for_secret(&mut self, credential: &mut InventoryCredential) -> Speaker {
        if credential.managed
            && let Some(pair) = credential.held_client_secret()
            && self.secrets.contains_key(&pair)
        {
            return Speaker::Secret;
        }
        if let Some(pair) = credential.adoption_key()
            && let Some(held) = self.secrets.get_mut(&pair)
            && let Some(secret) = held.take()
        {
            for (name, value) in secret.tags {
                credential.tags.entry(name).or_insert(value);
            }
        }
        Speaker::Itself
    }

    /// The secrets whose client secret the walk did not meet: each speaks for itself.
    fn unspoken(self) -> impl Iterator<Item = InventoryCredential> {
        self.secrets.into_values().flatten()
    }
}

impl Summary {
    /// Counts one credential into the digest.
    fn count(
        &mut self,
        credential: &InventoryCredential,
        now: DateTime<Utc>,
        horizon: DateTime<Utc>,
    ) {
        self.total += 1;
        if !credential.managed {
            self.unmanaged += 1;
        }
        let failing = credential.managed
            && (credential
                .tags
                .keys()
                .any(|name| name.eq_ignore_ascii_case(LAST_ERROR))
                || credential.expires.is_some_and(|e| e <= now));
        if failing {
            self.failing += 1;
        }
        let Some(expires) = credential.expires.filter(|e| *e <= horizon) else {
            return;
        };
        if !credential.enabled {
            return;
        }
        if expires <= now {
            self.expired += 1;
        } else {
            self.expiring += 1;
        }
        self.soonest.push(Listed::of(credential, expires, failing));
        if self.soonest.len() > DIGEST_LISTED {
            self.soonest.pop();
        }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::ids::DirectoryObjectId;
    use crate::domain::inventory::{CredentialHandle, CredentialSource, SweepId};
    use crate::domain::names::VaultUrl;

    const APP: &str = "11111111-0000-4000-8000-000000000001";
    const KEY: &str = "22222222-0000-4000-8000-000000000001";

    fn client_secret() -> InventoryCredential {
        InventoryCredential {
            source: CredentialSource::Application {
                object_id: DirectoryObjectId::parse("00000000-0000-4000-8000-000000000001")
                    .expect("an object id"),
                app_id: AppId::parse(APP).expect("an app id"),
                display_name: None,
            },
            kind: CredentialKind::PasswordCredential,
            name: "payroll".to_owned(),
            handle: CredentialHandle::DirectoryCredential {
                key_id: KeyId::parse(KEY).expect("a key id"),
            },
            tags: BTreeMap::new(),
            ..secret()
        }
    }

    fn secret() -> InventoryCredential {
        InventoryCredential {
            source: CredentialSource::Vault {
                subscription: None,
                name: "kv-prod".parse().expect("a vault name"),
                uri: VaultUrl::parse("https://kv-prod.vault.azure.net").expect("a vault url"),
            },
            kind: CredentialKind::Secret,
            name: "payroll-secret".to_owned(),
            handle: CredentialHandle::VaultObject {
                name: "payroll-secret".to_owned(),
                version: None,
                versions: None,
            },
            enabled: true,
            created: None,
            updated: None,
            not_before: None,
            expires: None,
            content_type: None,
            tags: [
                ("keyturn-kind", "entra-app-secret"),
                ("keyturn-app-id", APP),
                ("keyturn-key-id", KEY),
                ("keyturn-owner", "platform"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            certificate: None,
            key: None,
            directory: None,
            owners: Vec::new(),
            managed: true,
            scanned_at: DateTime::from_timestamp(0, 0).expect("a time"),
            sweep: SweepId::parse("s1").expect("a sweep"),
        }
    }

    fn held() -> HeldSecrets {
        let mut held = HeldSecrets::default();
        let secret = secret();
        held.secrets
            .insert(secret.held_client_secret().expect("held"), Some(secret));
        held
    }

    #[test]
    fn the_client_secret_speaks_for_the_secret_holding_it_whichever_a_walk_meets_first() {
        for secret_first in [true, false] {
            let mut held = held();
            let (mut secret, mut credential) = (secret(), client_secret());

            let speakers = if secret_first {
                let s = held.speaks_for_secret(&mut secret);
                (s, held.speaks_for_secret(&mut credential))
            } else {
                let c = held.speaks_for_secret(&mut credential);
                (held.speaks_for_secret(&mut secret), c)
            };

            assert_eq!(
                speakers,
                (Speaker::Secret, Speaker::Itself),
                "{secret_first}"
            );
            assert_eq!(
                credential.owner_tag(),
                Some("platform"),
                "the secret's tags came with it"
            );
            assert_eq!(held.unspoken().count(), 0, "{secret_first}");
        }
    }

    #[test]
    fn a_secret_whose_client_secret_the_walk_never_meets_speaks_for_itself() {
        let mut held = held();
        let mut secret = secret();

        assert_eq!(held.speaks_for_secret(&mut secret), Speaker::Secret);
        let unspoken: Vec<_> = held.unspoken().collect();

        assert_eq!(unspoken, vec![secret]);
    }
}
