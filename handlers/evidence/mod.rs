//! The auditor's evidence package: one zip for a period holding CSV populations (the
//! inventory, the rotations, the secret reads), the audit log's extract with its signed
//! checkpoints and the public key, the whole log's verification, and a manifest of every
//! file's SHA-256 signed with the audit checkpoint key; and its verification with the
//! package and a public key alone ([`verify`]).
//!
//! Everything is streamed: rows are read a page at a time and written into the zip as
//! they come, so memory holds a page, not the period or the tenant. Findings and the
//! exceptions objects' tags declare are written out as the evaluation makes them. The
//! only tallies kept are bounded by what they count (reads per identity and secret,
//! rotations in flight, the exceptions register's entries).

pub mod alerts;
pub mod container;
pub mod csv;
pub mod extract;
pub mod findings;
pub mod html;
pub mod pdf;
pub mod populations;
pub mod summary;
pub mod verify;

use std::path::Path;

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};

pub use container::{ContainerError, Manifest, ManifestFile, Package};

use crate::audit::anchor::checked;
use crate::audit::{AuditError, verify_log};
use crate::compliance::{
    AuditInput, Catalogue, ComplianceError, Evaluation, Finding, FindingSink, Register,
    TagExceptions, Thresholds,
};
use crate::ports::PortError;
use crate::ports::alert_ledger::AlertLedger;
use crate::ports::audit::AuditStore;
use crate::ports::checkpoint::{
    CHECKPOINT_PAGE, CheckpointSigner, CheckpointStore, NamedKey, VerifyingKeys,
};
use crate::ports::inventory::InventoryStore;
use container::ManifestPeriod;
use findings::FindingsWriter;
use populations::{PopulationError, Reads, Rotations};
use summary::{Summary, SummaryBuilder};

/// The period a package covers: `from` included, `to` excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Why `--from` / `--to` do not make a period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeriodError {
    #[error(
        "--{flag} `{text}` is not a date (2026-11-01) or an RFC 3339 time (2026-11-01T00:00:00Z)"
    )]
    Malformed { flag: &'static str, text: String },
    #[error("--from `{from}` is after --to `{to}`")]
    Reversed { from: String, to: String },
    #[error("the period is empty: --from `{from}` and --to `{to}` are the same instant")]
    Empty { from: String, to: String },
}

impl Period {
    /// Parses `--from` and `--to`: a date (`2026-11-01`, midnight UTC; for `--to` the
    /// whole day is included, so the period ends at the next midnight) or an RFC 3339
    /// time (for `--to`, excluded).
    pub fn parse(from: &str, to: &str) -> Result<Self, PeriodError> {
        let from_at = instant("from", from, false)?;
        let to_at = instant("to", to, true)?;
        // Errors echo what was typed: `--to 2026-12-01` ends at the next midnight, which
        // the user never wrote.
        let typed = |text: &str| text.chars().take(64).collect::<String>();
        if from_at > to_at {
            return Err(PeriodError::Reversed {
                from: typed(from),
                to: typed(to),
            });
        }
        if from_at == to_at {
            return Err(PeriodError::Empty {
                from: typed(from),
                to: typed(to),
            });
        }
        Ok(Self {
            from: from_at,
            to: to_at,
        })
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && at < self.to
    }

    /// The first and last days of a period made of whole days (UTC), both included:
    /// `to` is the midnight after the last. `None` when either end is not a midnight.
    pub fn days(&self) -> Option<(NaiveDate, NaiveDate)> {
        let midnight = |at: DateTime<Utc>| at.time() == chrono::NaiveTime::MIN;
        (midnight(self.from) && midnight(self.to)).then(|| {
            (
                self.from.date_naive(),
                (self.to - Duration::days(1)).date_naive(),
            )
        })
    }

    /// The period as the package's reports name it: its days, the last included, when it
    /// is made of whole days; otherwise its instants, the end excluded.
    pub fn text(&self) -> String {
        match self.days() {
            Some((first, last)) if first == last => format!("{first} (UTC, one day)"),
            Some((first, last)) => format!("{first} to {last} (UTC, both days included)"),
            None => format!(
                "{} to {} (excluded)",
                self.from.to_rfc3339_opts(SecondsFormat::Secs, true),
                self.to.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        }
    }

    /// The period's end (`to`, the instant expiry is counted from) as the reports name
    /// it: the end of its last day when it ends at midnight, else the instant.
    pub fn end_text(&self) -> String {
        if self.to.time() == chrono::NaiveTime::MIN {
            format!(
                "the end of {} (UTC)",
                (self.to - Duration::days(1)).format("%Y-%m-%d")
            )
        } else {
            self.to.to_rfc3339_opts(SecondsFormat::Secs, true)
        }
    }

    /// The period as `--from` and `--to` take it: whole days as the dates typed (`--to`
    /// the last day included), other instants in RFC 3339 (`--to` excluded).
    pub fn describe(&self) -> String {
        let midnight = |at: DateTime<Utc>| at.time() == chrono::NaiveTime::MIN;
        let from = if midnight(self.from) {
            self.from.format("%Y-%m-%d").to_string()
        } else {
            self.from.to_rfc3339_opts(SecondsFormat::Secs, true)
        };
        let to = if midnight(self.to) {
            // Midnight ends the day before, which `--to DATE` names.
            (self.to - Duration::days(1)).format("%Y-%m-%d").to_string()
        } else {
            self.to.to_rfc3339_opts(SecondsFormat::Secs, true)
        };
        let last = if midnight(self.to) {
            "included"
        } else {
            "excluded"
        };
        format!("--from {from} --to {to} ({last})")
    }
}

fn instant(flag: &'static str, text: &str, end: bool) -> Result<DateTime<Utc>, PeriodError> {
    let malformed = || PeriodError::Malformed {
        flag,
        text: text.chars().take(64).collect(),
    };
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let day = if end {
            day.checked_add_signed(Duration::days(1))
                .ok_or_else(malformed)?
        } else {
            day
        };
        return Ok(day.and_hms_opt(0, 0, 0).ok_or_else(malformed)?.and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| malformed())
}

/// Why an export failed. Whatever it is, no package is left behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    #[error("the audit log holds no entry: there is nothing to export")]
    EmptyLog,
    #[error("the period {period} ends before the audit log's first entry ({begins})")]
    BeforeLog { period: String, begins: String },
    #[error("no audit entry is stamped in the period {period}")]
    EmptyPeriod { period: String },
    #[error("cannot read the {what} while {operation}: {source}")]
    Store {
        what: &'static str,
        operation: &'static str,
        #[source]
        source: PortError,
    },
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("cannot write {file} into the package: {source}")]
    Write {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Population(#[from] PopulationError),
    #[error("cannot evaluate compliance: {0}")]
    Compliance(#[from] ComplianceError),
}

impl From<PortError> for EvidenceError {
    /// A read of the audit log's entries failed (the walks over its chains).
    fn from(source: PortError) -> Self {
        Self::Store {
            what: "audit log",
            operation: "reading entries",
            source,
        }
    }
}

fn audit_error(operation: &'static str) -> impl Fn(PortError) -> EvidenceError {
    move |source| EvidenceError::Store {
        what: "audit log",
        operation,
        source,
    }
}

/// Where the package's evidence is read.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    pub audit: &'a dyn AuditStore,
    pub checkpoints: &'a dyn CheckpointStore,
    /// The public keys that check the checkpoints' signatures, found by the key id each
    /// names (the signer's is added to the package).
    pub keys: &'a dyn VerifyingKeys,
    /// Signs the manifest: the audit checkpoint key.
    pub signer: &'a dyn CheckpointSigner,
    pub inventory: &'a dyn InventoryStore,
    /// Where the evidence was read, as the manifest says.
    pub description: &'a str,
    /// The alert ledger (what was sent to which route); `None` leaves
    /// `populations/alerts-sent.csv` out.
    pub alerts: Option<&'a dyn AlertLedger>,
    /// The rules the inventory and the audit log are checked against, evaluated once
    /// during the export; `None` leaves findings and scores out of the reports.
    pub compliance: Option<ComplianceInputs<'a>>,
}

/// What a compliance evaluation needs besides the stores.
#[derive(Debug, Clone, Copy)]
pub struct ComplianceInputs<'a> {
    pub catalogue: &'a Catalogue,
    pub thresholds: &'a Thresholds,
    /// The exceptions register (accepted risks), as `keyturn compliance` reads it.
    pub register: &'a Register,
    /// Per-scope tallies and applications held in memory before they go to a temporary
    /// file ([`crate::compliance::SPILL_AFTER`]).
    pub spill_after: usize,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportSummary {
    pub out: String,
    pub files: Vec<ManifestFile>,
    pub key: String,
}

/// The public keys that verify the package's checkpoints and its manifest, as a JSON Web
/// Key Set (each with the key id it signed as, where known).
pub const KEYS: &str = "keys/audit-signing.jwks";

/// The package's README, for whoever opens the zip first.
const README: &str = include_str!("package-readme.txt");

/// Writes the evidence package for `period` to `out`: a temporary file beside it until
/// every file, the manifest and its signature are written, then renamed into place.
pub async fn export(
    sources: Sources<'_>,
    period: &Period,
    out: &Path,
    now: DateTime<Utc>,
) -> Result<ExportSummary, EvidenceError> {
    let signer_key = sources
        .signer
        .public_key()
        .await
        .map_err(audit_error("reading the signing key's public half"))?;
    // The checkpoints: those a key verifies say where each chain may end, and the keys
    // that verify them go into the package. They are read a page at a time and indexed
    // in a temporary file: a log has one per write batch.
    let checked = checked::check(
        sources.checkpoints,
        Some(sources.keys),
        CHECKPOINT_PAGE,
        true,
    )
    .await
    .map_err(|error| match error {
        AuditError::Key { source, .. } => audit_error("reading a checkpoint's key")(source),
        other => audit_error("reading the checkpoints")(other.into()),
    })?;
    let index = &checked.index;
    let mut keys: Vec<NamedKey> = checked.keys;
    if !keys.iter().any(|k| k.key == signer_key) {
        keys.push(NamedKey {
            kid: None,
            key: signer_key.clone(),
        });
    }

    let located = extract::locate(sources.audit, period, index)
        .await
        .map_err(audit_error("finding the period"))?;
    let Some(begins) = located.log_begins else {
        return Err(EvidenceError::EmptyLog);
    };
    if period.to <= begins {
        return Err(EvidenceError::BeforeLog {
            period: period.describe(),
            begins: begins.to_rfc3339_opts(SecondsFormat::Secs, true),
        });
    }
    if located.ranges.is_empty() {
        return Err(EvidenceError::EmptyPeriod {
            period: period.describe(),
        });
    }

    let mut package = Package::create(out)?;
    package.add("README.txt", README.as_bytes())?;
    let set = serde_json::json!({ "keys": keys.iter().map(NamedKey::to_jwk).collect::<Vec<_>>() });
    let set =
        serde_json::to_vec_pretty(&set).expect("invariant: a JSON Web Key Set always encodes");
    package.add(KEYS, &set)?;

    // The extract, counting the period's secret reads and the reports' figures on the
    // way (the extract holds every entry stamped in the period, each once).
    let mut reads = Reads::default();
    let mut figures = SummaryBuilder::new(period);
    package.begin(extract::ENTRIES)?;
    let mut lines = 0u64;
    for range in &located.ranges {
        let owned = extract::chain_reader(sources.audit, &range.chain)
            .map_err(audit_error("opening a chain"))?;
        let reader = owned.as_deref().unwrap_or(sources.audit);
        extract::walk::<EvidenceError>(reader, range.first, range.last, |stored| {
            extract::write_line(&mut package, &range.chain, stored).map_err(|source| {
                EvidenceError::Write {
                    file: extract::ENTRIES,
                    source,
                }
            })?;
            if let Ok(entry) = &stored.content {
                reads.take(entry, period);
                figures.entry(entry);
            }
            lines += 1;
            Ok(())
        })
        .await?;
    }
    package.end(Some(lines))?;

    package.begin(extract::CHECKPOINTS)?;
    let mut anchored = 0u64;
    for range in &located.ranges {
        anchored += extract::write_checkpoints(&mut package, range, index)
            .map_err(audit_error("reading the checkpoints"))?
            .map_err(|source| EvidenceError::Write {
                file: extract::CHECKPOINTS,
                source,
            })?;
    }
    package.end(Some(anchored))?;
    // The index is not read again; its temporary file goes before verification makes its own.
    drop(checked.index);
    let ranges = serde_json::to_vec_pretty(&located.ranges)
        .expect("invariant: ranges of names and numbers always encode");
    package.add(extract::RANGES, &ranges)?;

    let verified = verify_log(sources.audit, Some(sources.checkpoints), Some(sources.keys))
        .await
        .map_err(|e| EvidenceError::Store {
            what: "audit log",
            operation: "verifying it",
            source: e.into(),
        })?;
    let report = serde_json::to_vec_pretty(&verified)
        .expect("invariant: a verification report always encodes");
    package.add(extract::VERIFY_REPORT, &report)?;

    package.begin(populations::READS)?;
    let rows = reads
        .write(&mut package)
        .map_err(|source| EvidenceError::Write {
            file: populations::READS,
            source,
        })?;
    package.end(Some(rows))?;

    package.begin(populations::ROTATIONS)?;
    let rotations = write_rotations(sources.audit, &located, period, &mut package).await?;
    package.end(Some(rotations))?;

    package.begin(populations::INVENTORY)?;
    let rows =
        populations::write_inventory(sources.inventory, period, &mut package, &mut figures).await?;
    package.end(Some(rows))?;
    package.begin(populations::VAULTS)?;
    let rows = populations::write_vaults(sources.inventory, &mut package, &mut figures).await?;
    package.end(Some(rows))?;
    if let Some(ledger) = sources.alerts {
        package.begin(alerts::ALERTS)?;
        let rows = alerts::write_alerts(ledger, period, &mut package).await?;
        package.end(Some(rows))?;
    }

    if let Some(inputs) = sources.compliance {
        evaluate(
            &sources,
            inputs,
            &verified,
            period,
            now,
            &mut figures,
            &mut package,
        )
        .await?;
    }

    // The reports: what they show is counted above, nothing more is read.
    let summary: Summary = figures.finish(sources.description, verified.is_intact(), now);
    let figures_json =
        serde_json::to_vec_pretty(&summary).expect("invariant: a summary always encodes");
    package.add(summary::SUMMARY, &figures_json)?;
    package.add(pdf::REPORT, &pdf::render(&summary))?;
    package.add(html::REPORT, html::render(&summary).as_bytes())?;

    let mut notes = vec![
        "populations/inventory.csv and vaults.csv are the inventory as discovery's last sweep left it at export time (scanned_at says when each row was seen); days_left_at_period_end is counted from the period's end.".to_owned(),
        format!(
            "audit/entries.jsonl holds {} chain(s); entries stamped in the period: {}. See README.txt for what its verification proves.",
            located.ranges.len(),
            located.ranges.iter().map(|r| r.entries_in_period).sum::<u64>()
        ),
    ];
    if !verified.is_intact() {
        notes.push(format!(
            "the audit log did NOT verify at export time: {verified}"
        ));
    }
    if located.ranges.iter().any(|r| !r.anchored) {
        notes.push("some chains' last entries in the period are not anchored by a checkpoint yet (audit/ranges.json: anchored false)".to_owned());
    }
    let manifest = Manifest {
        format: container::FORMAT.to_owned(),
        created_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        period: ManifestPeriod {
            from: period.from.to_rfc3339_opts(SecondsFormat::Secs, true),
            to: period.to.to_rfc3339_opts(SecondsFormat::Secs, true),
            last_day: period.days().map(|(_, last)| last.to_string()),
        },
        source: sources.description.to_owned(),
        keyturn_version: env!("CARGO_PKG_VERSION").to_owned(),
        files: Vec::new(),
        notes,
    };
    let manifest = package.finish(manifest, sources.signer).await?;
    Ok(ExportSummary {
        out: out.display().to_string(),
        files: manifest.files,
        key: signer_key.fingerprint(),
    })
}

/// Compliance, evaluated once for the package: every finding and the scores go to the
/// reports' figures, and to the findings, exceptions and control matrix files. The
/// inventory is judged as of the period's end (or now, if sooner), as
/// `days_left_at_period_end` counts; the audit rules read the period's rotations and the
/// whole log's verification.
#[allow(clippy::too_many_arguments)]
async fn evaluate(
    sources: &Sources<'_>,
    inputs: ComplianceInputs<'_>,
    verified: &crate::audit::LogReport,
    period: &Period,
    now: DateTime<Utc>,
    figures: &mut SummaryBuilder,
    package: &mut Package,
) -> Result<(), EvidenceError> {
    let at = period.to.min(now);
    let mut thresholds = inputs.thresholds.clone();
    thresholds.audit_period = at - period.from;
    let evaluation = Evaluation {
        catalogue: inputs.catalogue,
        thresholds: &thresholds,
        register: inputs.register,
        framework: None,
        now: at,
        spill_after: inputs.spill_after,
    };
    let audit = AuditInput {
        store: sources.audit,
        verification: Ok(verified.clone()),
    };
    let mut sink = Sink {
        figures,
        findings: FindingsWriter::new(inputs.catalogue, at),
    };
    let report = evaluation
        .run(sources.inventory, Some(audit), &mut sink)
        .await?;
    let Sink { figures, findings } = sink;
    figures
        .compliance(inputs.catalogue, &report)
        .map_err(ComplianceError::from)?;
    findings.write(inputs.catalogue, &report, inputs.register, package)
}

/// Where the evaluation's findings go: the reports' figures and the findings files; and
/// what objects' exception tags make, straight to the exceptions file, so nothing the
/// evaluation sees is collected.
struct Sink<'a> {
    figures: &'a mut SummaryBuilder,
    findings: FindingsWriter,
}

impl FindingSink for Sink<'_> {
    fn finding(&mut self, finding: &Finding) -> std::io::Result<()> {
        self.figures.finding(finding);
        self.findings.take(finding)
    }

    fn takes_tags(&self) -> bool {
        true
    }

    fn tags(&mut self, made: TagExceptions<'_>) -> std::io::Result<()> {
        self.findings.tags(made)
    }
}

/// Every rotation finished in the period, chain by chain: each chain is followed from
/// its first entry (so a rotation's earlier steps and the object's previous key id are
/// known) to the extract's end.
async fn write_rotations(
    store: &dyn AuditStore,
    located: &extract::Located,
    period: &Period,
    package: &mut Package,
) -> Result<u64, EvidenceError> {
    let write_error = |source| EvidenceError::Write {
        file: populations::ROTATIONS,
        source,
    };
    Rotations::header(package).map_err(write_error)?;
    let mut rotations = Rotations::default();
    for range in &located.ranges {
        let owned =
            extract::chain_reader(store, &range.chain).map_err(audit_error("opening a chain"))?;
        let reader = owned.as_deref().unwrap_or(store);
        extract::walk::<EvidenceError>(reader, 1, range.last, |stored| {
            if let Ok(entry) = &stored.content {
                rotations
                    .take(range.chain.as_str(), entry, period, package)
                    .map_err(write_error)?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(rotations.rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_period_of_whole_days_is_named_by_its_days_and_ends_with_its_last() {
        let november = Period::parse("2026-11-01", "2026-11-30").expect("period");

        assert_eq!(november.to, at("2026-12-01T00:00:00Z"));
        assert_eq!(
            november.days(),
            Some((
                NaiveDate::from_ymd_opt(2026, 11, 1).expect("day"),
                NaiveDate::from_ymd_opt(2026, 11, 30).expect("day")
            ))
        );
        assert_eq!(
            november.text(),
            "2026-11-01 to 2026-11-30 (UTC, both days included)"
        );
        assert_eq!(november.end_text(), "the end of 2026-11-30 (UTC)");
        assert_eq!(
            Period::parse("2026-11-01", "2026-11-01")
                .expect("period")
                .text(),
            "2026-11-01 (UTC, one day)"
        );
    }

    #[test]
    fn a_period_of_instants_is_named_by_them_its_end_excluded() {
        let times = Period::parse("2026-11-01T06:00:00Z", "2026-11-02T06:00:00Z").expect("p");

        assert_eq!(times.days(), None);
        assert_eq!(
            times.text(),
            "2026-11-01T06:00:00Z to 2026-11-02T06:00:00Z (excluded)"
        );
        assert_eq!(times.end_text(), "2026-11-02T06:00:00Z");
        let from_six = Period::parse("2026-11-01T06:00:00Z", "2026-11-01").expect("p");
        assert_eq!(from_six.days(), None);
        assert_eq!(from_six.end_text(), "the end of 2026-11-01 (UTC)");
    }
}
