//! The figures the package's reports show (the HTML report and the PDF read the same
//! [`Summary`]), counted while the export streams what it writes anyway: each inventory
//! row as the inventory population is written, each audit entry of the extract as it is
//! walked, each finding as compliance makes it, and the scores compliance counts. Nothing
//! is read twice and nothing is collected: memory holds fixed-size counters, one bucket
//! per week of the period (bounded, see [`MAX_ROTATION_BUCKETS`]) and the top owners,
//! taken from compliance's own per-owner tallies.
//!
//! Expiry figures are counted from the period's end, as `days_left_at_period_end` in
//! `populations/inventory.csv` is, over the inventory as its last sweep left it.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

use super::Period;
use crate::audit::Action;
use crate::compliance::{Catalogue, Finding, Report, ScopeKind, Severity, SpillError, Status};
use crate::domain::inventory::{CredentialKind, InventoryCredential, InventoryVault};
use crate::ports::audit::{AuditEntry, Outcome};

/// The figures as JSON in the package, for a reader who wants them as data.
pub const SUMMARY: &str = "summary.json";

/// Days ahead of the period's end counted as "expiring soon", the two windows auditors
/// ask about (PCI DSS 4.2.1.1's inventory review; common renewal lead times).
pub const EXPIRING_WINDOWS_DAYS: [i64; 2] = [30, 60];

/// Weeks after the period's end the expiry timeline shows week by week: a quarter.
pub const EXPIRY_WEEKS: usize = 13;

/// Months after the period's end the expiry timeline shows month by month (30-day
/// months): a year.
pub const EXPIRY_MONTHS: usize = 12;

/// Most buckets of the rotations-per-week chart: two years of weeks. A longer period
/// widens each bucket by whole weeks instead, so the chart (and memory) stays bounded
/// however long the period is.
pub const MAX_ROTATION_BUCKETS: usize = 104;

/// Owners listed with the most open findings.
pub const TOP_OWNERS: usize = 10;

/// Everything the reports show. Built by [`SummaryBuilder`] during an export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The period the package covers: `period_from` included, `period_to` excluded (the
    /// period's end, which expiry is counted from).
    pub period_from: DateTime<Utc>,
    pub period_to: DateTime<Utc>,
    /// The last day included (UTC) when the period is made of whole days: the day before
    /// `period_to`, as the reports name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_last_day: Option<NaiveDate>,
    /// When the package was made.
    pub generated_at: DateTime<Utc>,
    /// Where the evidence was read (the manifest's `source`: a local store, or tables in
    /// Azure).
    pub source: String,
    /// What the inventory covers.
    pub scope: Scope,
    pub totals: Totals,
    /// Open and excepted findings per severity, most severe first; every severity is
    /// listed (zero counts included). Empty when compliance was not evaluated.
    pub findings_by_severity: Vec<SeverityCount>,
    /// Scores per framework, in the catalogue's order. Empty when compliance was not
    /// evaluated.
    pub frameworks: Vec<FrameworkScore>,
    pub expiry: ExpiryTimeline,
    pub rotations: RotationTimeline,
    /// The owners with the most open findings (at most [`TOP_OWNERS`]), most first; ties
    /// by name. Owners with no open finding are not listed. Findings whose subject has
    /// no owner count under `(no owner)`.
    pub top_owners: Vec<OwnerFindings>,
    /// Whether the whole audit log verified at export time (`audit/verify.json`).
    pub audit_intact: bool,
    /// Whether compliance was evaluated (rules, findings and scores are present).
    pub compliance_evaluated: bool,
}

/// What the package's inventory covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scope {
    /// Subscriptions checked by compliance (those of the inventory's vaults).
    pub subscriptions: u64,
    pub vaults: u64,
    /// Applications and service principals whose credentials the inventory holds
    /// (counted by compliance's scopes).
    pub applications: u64,
}

/// The headline counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Rows of `populations/inventory.csv`.
    pub credentials: u64,
    /// Vault objects (secrets, certificates, keys) among them.
    pub vault_objects: u64,
    /// Application and service principal credentials among them.
    pub directory_credentials: u64,
    /// Rows of `populations/vaults.csv`.
    pub vaults: u64,
    /// Credentials keyturn rotates, and the others.
    pub managed: u64,
    pub unmanaged: u64,
    pub disabled: u64,
    /// Credentials with no expiry date.
    pub no_expiry: u64,
    /// Expired at the period's end (enabled or not), and those still enabled.
    pub expired: u64,
    pub expired_enabled: u64,
    /// Not expired at the period's end and expiring within 30 / 60 days of it (the 60
    /// includes the 30).
    pub expiring_30_days: u64,
    pub expiring_60_days: u64,
    /// Findings (0 when compliance was not evaluated).
    pub findings_open: u64,
    pub findings_excepted: u64,
    /// Rotations finished in the period: secrets stored as a new version and
    /// certificates renewed; rotations that failed for good.
    pub rotations_succeeded: u64,
    pub rotations_failed: u64,
    /// Secret reads in the period (folded repeats counted each): granted, refused, and
    /// failed on keyturn's side.
    pub reads_granted: u64,
    pub reads_refused: u64,
    pub reads_failed: u64,
    /// Audit entries stamped in the period.
    pub audit_entries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeverityCount {
    pub severity: Severity,
    pub open: u64,
    pub excepted: u64,
}

/// One framework's score: `score` counts excepted checks as not failed, `strict_score`
/// does not (percent, one decimal; `None` when nothing was checked).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameworkScore {
    pub id: String,
    pub name: String,
    pub version: String,
    pub checks: u64,
    pub passed: u64,
    pub failed: u64,
    pub excepted: u64,
    pub score: Option<f64>,
    pub strict_score: Option<f64>,
}

impl Summary {
    /// The period the figures cover.
    pub fn period(&self) -> Period {
        Period {
            from: self.period_from,
            to: self.period_to,
        }
    }
}

/// Credentials by when they expire, from the period's end (`reference`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpiryTimeline {
    pub reference: DateTime<Utc>,
    /// Expired before `reference` (same as [`Totals::expired`]).
    pub overdue: u64,
    /// [`EXPIRY_WEEKS`] weeks from `reference`: bucket `i` holds expiries in
    /// `[reference + 7i days, reference + 7(i+1) days)`.
    pub weeks: Vec<Bucket>,
    /// [`EXPIRY_MONTHS`] 30-day months from `reference`, the same way.
    pub months: Vec<Bucket>,
    /// Expiring after the last month.
    pub later: u64,
    /// No expiry date.
    pub never: u64,
}

/// A count over `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub count: u64,
}

/// Rotations finished in the period, per bucket of `bucket_days` (7: a week; longer
/// only for periods over [`MAX_ROTATION_BUCKETS`] weeks). Buckets start at the period's
/// first instant; the last one ends at the period's end (it may be shorter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationTimeline {
    pub bucket_days: i64,
    pub buckets: Vec<RotationBucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationBucket {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub succeeded: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnerFindings {
    pub owner: String,
    pub open: u64,
    pub excepted: u64,
}

/// Counts the summary's figures as the export streams its inputs: call
/// [`credential`](Self::credential) for each inventory row, [`vault`](Self::vault) for
/// each vault, [`entry`](Self::entry) for each audit entry walked (entries outside the
/// period are ignored, an entry must be given once), [`finding`](Self::finding) for
/// each finding and [`compliance`](Self::compliance) with the evaluation's report; then
/// [`finish`](Self::finish).
#[derive(Debug, Clone)]
pub struct SummaryBuilder {
    period: Period,
    totals: Totals,
    expiry: ExpiryTimeline,
    rotations: RotationTimeline,
    severities: [SeverityCount; 4],
    compliance: Option<(Vec<FrameworkScore>, Scope, Vec<OwnerFindings>)>,
}

const SEVERITIES: [Severity; 4] = [
    Severity::Critical,
    Severity::High,
    Severity::Medium,
    Severity::Low,
];

impl SummaryBuilder {
    pub fn new(period: &Period) -> Self {
        let reference = period.to;
        let buckets = |count: usize, days: i64| {
            (0..count)
                .map(|i| Bucket {
                    start: reference + Duration::days(days * i as i64),
                    end: reference + Duration::days(days * (i as i64 + 1)),
                    count: 0,
                })
                .collect()
        };
        let period_days = (period.to - period.from).num_seconds().max(1) as f64 / 86_400.0;
        let weeks = (period_days / 7.0).ceil() as i64;
        let widen = (weeks + MAX_ROTATION_BUCKETS as i64 - 1) / MAX_ROTATION_BUCKETS as i64;
        let bucket_days = 7 * widen.max(1);
        let count = ((period_days / bucket_days as f64).ceil() as i64).max(1);
        let rotations = (0..count)
            .map(|i| RotationBucket {
                start: period.from + Duration::days(bucket_days * i),
                end: (period.from + Duration::days(bucket_days * (i + 1))).min(period.to),
                succeeded: 0,
                failed: 0,
            })
            .collect();
        Self {
            period: *period,
            totals: Totals::default(),
            expiry: ExpiryTimeline {
                reference,
                overdue: 0,
                weeks: buckets(EXPIRY_WEEKS, 7),
                months: buckets(EXPIRY_MONTHS, 30),
                later: 0,
                never: 0,
            },
            rotations: RotationTimeline {
                bucket_days,
                buckets: rotations,
            },
            severities: SEVERITIES.map(|severity| SeverityCount {
                severity,
                open: 0,
                excepted: 0,
            }),
            compliance: None,
        }
    }

    /// Counts one inventory row.
    pub fn credential(&mut self, credential: &InventoryCredential) {
        let totals = &mut self.totals;
        totals.credentials += 1;
        match credential.kind {
            CredentialKind::Secret | CredentialKind::Certificate | CredentialKind::Key => {
                totals.vault_objects += 1
            }
            CredentialKind::PasswordCredential | CredentialKind::KeyCredential => {
                totals.directory_credentials += 1
            }
        }
        if credential.managed {
            totals.managed += 1;
        } else {
            totals.unmanaged += 1;
        }
        if !credential.enabled {
            totals.disabled += 1;
        }
        let reference = self.expiry.reference;
        let Some(expires) = credential.expires else {
            totals.no_expiry += 1;
            self.expiry.never += 1;
            return;
        };
        if expires < reference {
            totals.expired += 1;
            if credential.enabled {
                totals.expired_enabled += 1;
            }
            self.expiry.overdue += 1;
            return;
        }
        let left = expires - reference;
        if left < Duration::days(EXPIRING_WINDOWS_DAYS[0]) {
            totals.expiring_30_days += 1;
        }
        if left < Duration::days(EXPIRING_WINDOWS_DAYS[1]) {
            totals.expiring_60_days += 1;
        }
        let days = left.num_days();
        if let Some(week) = self.expiry.weeks.get_mut((days / 7) as usize) {
            week.count += 1;
        }
        match self.expiry.months.get_mut((days / 30) as usize) {
            Some(month) => month.count += 1,
            None => self.expiry.later += 1,
        }
    }

    /// Counts one vault.
    pub fn vault(&mut self, _vault: &InventoryVault) {
        self.totals.vaults += 1;
    }

    /// Counts one audit entry, if it is stamped in the period: rotations finished
    /// (per bucket) and secret reads.
    pub fn entry(&mut self, entry: &AuditEntry) {
        let record = &entry.record;
        if !self.period.contains(record.at) {
            return;
        }
        self.totals.audit_entries += 1;
        let action = record.action.as_str();
        let succeeded = action == Action::SecretRotated.as_str()
            || action == Action::CertificateRenewed.as_str();
        let failed = action == Action::RotationFailed.as_str();
        if succeeded || failed {
            let bucket_days = self.rotations.bucket_days;
            let index = ((record.at - self.period.from).num_days() / bucket_days) as usize;
            if let Some(bucket) = self.rotations.buckets.get_mut(index) {
                if succeeded {
                    bucket.succeeded += 1;
                } else {
                    bucket.failed += 1;
                }
            }
            if succeeded {
                self.totals.rotations_succeeded += 1;
            } else {
                self.totals.rotations_failed += 1;
            }
        } else if action == Action::SecretRead.as_str() {
            let occurrences = record.occurrences();
            match record.outcome {
                Outcome::Succeeded => self.totals.reads_granted += occurrences,
                Outcome::Denied => self.totals.reads_refused += occurrences,
                Outcome::Failed | Outcome::Skipped => self.totals.reads_failed += occurrences,
            }
        }
    }

    /// Counts one finding.
    pub fn finding(&mut self, finding: &Finding) {
        let Some(count) = self
            .severities
            .iter_mut()
            .find(|c| c.severity == finding.severity)
        else {
            return;
        };
        match finding.status {
            Status::Open => {
                count.open += 1;
                self.totals.findings_open += 1;
            }
            Status::Excepted => {
                count.excepted += 1;
                self.totals.findings_excepted += 1;
            }
        }
    }

    /// Takes the scores, the scope and the top owners from compliance's report; the
    /// per-scope tallies are read once, in order, keeping only the top owners.
    pub fn compliance(&mut self, catalogue: &Catalogue, report: &Report) -> Result<(), SpillError> {
        let board = &report.board;
        let frameworks = catalogue
            .frameworks()
            .iter()
            .map(|framework| {
                let tally = board
                    .frameworks
                    .get(&framework.id)
                    .copied()
                    .unwrap_or_default();
                FrameworkScore {
                    id: framework.id.clone(),
                    name: framework.name.clone(),
                    version: framework.version.clone(),
                    checks: tally.checks,
                    passed: tally.passed,
                    failed: tally.failed,
                    excepted: tally.excepted,
                    score: tally.score(),
                    strict_score: tally.strict_score(),
                }
            })
            .collect();
        let scope = Scope {
            subscriptions: board.scopes.count(ScopeKind::Subscription)?,
            vaults: board.scopes.count(ScopeKind::Vault)?,
            applications: board.scopes.count(ScopeKind::Application)?,
        };
        // Most open first, then by name: each owner is placed among the top kept so far.
        let mut owners: Vec<OwnerFindings> = Vec::with_capacity(TOP_OWNERS + 1);
        board.scopes.each(ScopeKind::Owner, |owner, tally| {
            if tally.failed > 0 {
                let candidate = OwnerFindings {
                    owner: owner.to_owned(),
                    open: tally.failed,
                    excepted: tally.excepted,
                };
                let at = owners.partition_point(|kept| {
                    kept.open > candidate.open
                        || (kept.open == candidate.open && kept.owner < candidate.owner)
                });
                if at < TOP_OWNERS {
                    owners.insert(at, candidate);
                    owners.truncate(TOP_OWNERS);
                }
            }
            Ok::<_, SpillError>(())
        })?;
        self.compliance = Some((frameworks, scope, owners));
        Ok(())
    }

    /// The summary; `source` says where the evidence was read, `audit_intact` whether the
    /// whole log verified.
    pub fn finish(self, source: &str, audit_intact: bool, generated_at: DateTime<Utc>) -> Summary {
        let evaluated = self.compliance.is_some();
        let (frameworks, mut scope, top_owners) = self.compliance.unwrap_or_default();
        scope.vaults = self.totals.vaults;
        Summary {
            period_from: self.period.from,
            period_to: self.period.to,
            period_last_day: self.period.days().map(|(_, last)| last),
            generated_at,
            source: source.to_owned(),
            scope,
            findings_by_severity: if evaluated {
                self.severities.to_vec()
            } else {
                Vec::new()
            },
            totals: self.totals,
            frameworks,
            expiry: self.expiry,
            rotations: self.rotations,
            top_owners,
            audit_intact,
            compliance_evaluated: evaluated,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::inventory::{CredentialHandle, CredentialSource, SweepId};
    use crate::domain::names::VaultUrl;
    use crate::ports::audit::{Actor, AuditRecord, AuditText, EntryHash};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn november() -> Period {
        Period::parse("2026-11-01", "2026-11-30").expect("period")
    }

    fn secret(
        name: &str,
        expires: Option<&str>,
        enabled: bool,
        managed: bool,
    ) -> InventoryCredential {
        InventoryCredential {
            source: CredentialSource::Vault {
                subscription: None,
                name: "kv-prod".parse().expect("name"),
                uri: VaultUrl::parse("https://kv-prod.vault.azure.net/").expect("url"),
            },
            kind: CredentialKind::Secret,
            name: name.to_owned(),
            handle: CredentialHandle::VaultObject {
                name: name.to_owned(),
                version: None,
                versions: None,
            },
            enabled,
            created: None,
            updated: None,
            not_before: None,
            expires: expires.map(at),
            content_type: None,
            tags: BTreeMap::new(),
            certificate: None,
            key: None,
            directory: None,
            owners: Vec::new(),
            managed,
            scanned_at: at("2026-12-01T00:00:00Z"),
            sweep: SweepId::parse("s1").expect("sweep"),
        }
    }

    fn entry(when: &str, action: &str, outcome: Outcome, count: Option<u64>) -> AuditEntry {
        let mut record = AuditRecord::new(
            at(when),
            Actor::Function(AuditText::parse("RotationWorker").expect("actor")),
            AuditText::parse(action).expect("action"),
            outcome,
        );
        record.count = count;
        let zero: EntryHash = "0".repeat(64).parse().expect("hash");
        AuditEntry {
            sequence: 1,
            record,
            prev_hash: zero,
            hash: zero,
        }
    }

    #[test]
    fn expiry_is_counted_from_the_period_end_into_windows_weeks_and_months() {
        let mut figures = SummaryBuilder::new(&november());
        // The period ends 2026-12-01T00:00:00Z.
        for (name, expires, enabled) in [
            ("gone", Some("2026-11-15T00:00:00Z"), true),
            ("gone-disabled", Some("2026-10-01T00:00:00Z"), false),
            ("day-one", Some("2026-12-01T00:00:00Z"), true),
            ("week-two", Some("2026-12-09T00:00:00Z"), true),
            ("day-45", Some("2027-01-15T00:00:00Z"), true),
            ("next-year", Some("2028-01-01T00:00:00Z"), true),
            ("forever", None, true),
        ] {
            figures.credential(&secret(name, expires, enabled, name == "day-one"));
        }

        let summary = figures.finish("test", true, at("2026-12-02T00:00:00Z"));

        let totals = &summary.totals;
        assert_eq!(totals.credentials, 7);
        assert_eq!(totals.vault_objects, 7);
        assert_eq!((totals.managed, totals.unmanaged), (1, 6));
        assert_eq!(totals.disabled, 1);
        assert_eq!((totals.expired, totals.expired_enabled), (2, 1));
        assert_eq!(totals.expiring_30_days, 2);
        assert_eq!(totals.expiring_60_days, 3);
        assert_eq!(totals.no_expiry, 1);
        let expiry = &summary.expiry;
        assert_eq!(expiry.reference, at("2026-12-01T00:00:00Z"));
        assert_eq!((expiry.overdue, expiry.never, expiry.later), (2, 1, 1));
        assert_eq!(expiry.weeks.len(), EXPIRY_WEEKS);
        assert_eq!(expiry.weeks[0].count, 1);
        assert_eq!(expiry.weeks[1].count, 1);
        assert_eq!(expiry.weeks[6].count, 1, "day 45 is in the seventh week");
        assert_eq!(expiry.weeks.iter().map(|w| w.count).sum::<u64>(), 3);
        assert_eq!(expiry.months.len(), EXPIRY_MONTHS);
        assert_eq!(expiry.months[0].count, 2);
        assert_eq!(expiry.months[1].count, 1);
        assert_eq!(expiry.weeks[1].start, at("2026-12-08T00:00:00Z"));
    }

    #[test]
    fn rotations_and_reads_are_counted_per_week_of_the_period_only() {
        let mut figures = SummaryBuilder::new(&november());
        for e in [
            entry(
                "2026-11-01T00:00:00Z",
                "secret.rotated",
                Outcome::Succeeded,
                None,
            ),
            entry(
                "2026-11-07T23:59:59Z",
                "certificate.renewed",
                Outcome::Succeeded,
                None,
            ),
            entry(
                "2026-11-08T00:00:00Z",
                "rotation.failed",
                Outcome::Failed,
                None,
            ),
            entry(
                "2026-11-30T23:00:00Z",
                "secret.rotated",
                Outcome::Succeeded,
                None,
            ),
            entry(
                "2026-12-01T00:00:00Z",
                "secret.rotated",
                Outcome::Succeeded,
                None,
            ),
            entry(
                "2026-10-31T23:59:59Z",
                "rotation.failed",
                Outcome::Failed,
                None,
            ),
            entry(
                "2026-11-02T00:00:00Z",
                "secret.read",
                Outcome::Succeeded,
                None,
            ),
            entry(
                "2026-11-02T00:00:00Z",
                "secret.read",
                Outcome::Denied,
                Some(5),
            ),
            entry(
                "2026-11-03T00:00:00Z",
                "credential.added",
                Outcome::Succeeded,
                None,
            ),
        ] {
            figures.entry(&e);
        }

        let summary = figures.finish("test", true, at("2026-12-02T00:00:00Z"));

        let rotations = &summary.rotations;
        assert_eq!(rotations.bucket_days, 7);
        assert_eq!(
            rotations.buckets.len(),
            5,
            "30 days are four weeks and two days"
        );
        assert_eq!(rotations.buckets[4].end, at("2026-12-01T00:00:00Z"));
        let counts: Vec<(u64, u64)> = rotations
            .buckets
            .iter()
            .map(|b| (b.succeeded, b.failed))
            .collect();
        assert_eq!(counts, [(2, 0), (0, 1), (0, 0), (0, 0), (1, 0)]);
        let totals = &summary.totals;
        assert_eq!(
            (totals.rotations_succeeded, totals.rotations_failed),
            (3, 1)
        );
        assert_eq!((totals.reads_granted, totals.reads_refused), (1, 5));
        assert_eq!(totals.audit_entries, 7);
    }

    #[test]
    fn a_long_period_widens_the_rotation_buckets_instead_of_adding_them() {
        let decade = Period::parse("2020-01-01", "2029-12-31").expect("period");

        let figures = SummaryBuilder::new(&decade).finish("test", true, Utc::now());

        assert!(figures.rotations.buckets.len() <= MAX_ROTATION_BUCKETS);
        assert_eq!(figures.rotations.bucket_days % 7, 0);
        assert_eq!(
            figures.rotations.buckets.last().map(|b| b.end),
            Some(decade.to)
        );
    }

    #[test]
    fn without_compliance_the_summary_says_so_and_lists_no_scores() {
        let summary = SummaryBuilder::new(&november()).finish("test", false, Utc::now());

        assert!(!summary.compliance_evaluated);
        assert!(summary.frameworks.is_empty());
        assert!(summary.findings_by_severity.is_empty());
        assert!(!summary.audit_intact);
    }

    #[test]
    fn compliance_gives_every_framework_its_score_and_lists_the_owners_with_most_open() {
        // Held in memory, and spilled to a temporary file after two owners.
        for spill_after in [crate::compliance::SPILL_AFTER, 2] {
            let catalogue = Catalogue::builtin();
            let mut board = crate::compliance::Scoreboard::new(spill_after);
            let owner = |name: &str| [(ScopeKind::Owner, name.to_owned())];
            let failed = crate::domain::compliance::CheckResult::Failed;
            let passed = crate::domain::compliance::CheckResult::Passed;
            let mut count = |controls: [(&'static str, &'static str); 1], scope, result| {
                board.count("r", controls, scope, result).expect("counted");
            };
            for _ in 0..3 {
                count([("pci-dss", "8.6.3")], owner("bob"), failed);
            }
            count([("pci-dss", "8.6.3")], owner("alice"), failed);
            count([("pci-dss", "8.6.3")], owner("carol"), passed);
            for i in 0..(TOP_OWNERS + 5) {
                count([("cis-azure", "8.5")], owner(&format!("o{i:02}")), failed);
            }
            assert_eq!(board.scopes.is_spilled(), spill_after == 2);
            let report = Report {
                evaluated_at: at("2026-12-01T00:00:00Z"),
                catalogue_version: catalogue.version().to_owned(),
                framework: None,
                thresholds: crate::compliance::Thresholds::default(),
                board,
                open: 0,
                excepted: 0,
                by_severity: Default::default(),
                not_evaluated: Vec::new(),
                lapsed_exceptions: Vec::new(),
                exceptions_register: None,
                tag_exceptions: Vec::new(),
                malformed_exception_tags: Vec::new(),
            };
            let mut figures = SummaryBuilder::new(&november());

            figures
                .compliance(&catalogue, &report)
                .expect("the tallies read back");
            let summary = figures.finish("test", true, Utc::now());

            assert!(summary.compliance_evaluated);
            assert_eq!(summary.frameworks.len(), catalogue.frameworks().len());
            let pci = summary
                .frameworks
                .iter()
                .find(|f| f.id == "pci-dss")
                .expect("pci-dss is in the catalogue");
            assert_eq!((pci.checks, pci.failed, pci.passed), (5, 4, 1));
            assert_eq!(pci.score, Some(20.0));
            assert_eq!(summary.top_owners.len(), TOP_OWNERS);
            assert_eq!(summary.top_owners[0].owner, "bob");
            assert_eq!(summary.top_owners[0].open, 3);
            assert_eq!(summary.top_owners[1].owner, "alice");
            assert_eq!(summary.top_owners[2].owner, "o00");
            assert!(summary.top_owners.iter().all(|o| o.owner != "carol"));
            assert_eq!(summary.findings_by_severity.len(), 4);
            assert_eq!(summary.findings_by_severity[0].severity, Severity::Critical);
        }
    }
}
