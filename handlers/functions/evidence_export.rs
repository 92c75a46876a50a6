//! `EvidenceExport`: the timer that exports the previous calendar month's evidence
//! package and keeps it where nobody can change it: in Azure the audit checkpoint
//! container (time-based retention), under `evidence/<yyyy-mm>/`; in local mode the data
//! directory's `evidence/`.
//!
//! One package per month, named by the month alone, and created only where no package
//! of that name exists (`If-None-Match: *`): a rerun, a retried or past-due run, or a
//! second instance firing at the same time stores nothing once the month's package is
//! there. A run first looks and exports only when the package is missing; two runs
//! racing past that look both write a package, the storage keeps the first and refuses
//! the other whole. Running the timer more often than monthly only retries a month that
//! failed. Each run is audited: the package's name, its SHA-256 and its manifest's, or
//! why nothing was stored.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::audit::Action;
use crate::domain::function::Function;
use crate::events::timer::TimerInfo;
use crate::evidence::container::MANIFEST as MANIFEST_FILE;
use crate::evidence::{EvidenceError, ExportSummary, Period};
use crate::functions::{Context, FunctionError};
use crate::ports::PortError;
use crate::ports::audit::{AuditObject, Outcome};

pub(crate) const NAME: Function = Function::EvidenceExport;
/// The trigger binding's name in `function-definitions/EvidenceExport/function.json`.
pub const BINDING: &str = "timer";

/// Where packages are kept, under this prefix, one folder per month.
pub const PREFIX: &str = "evidence/";

/// Writes an evidence package from the stores the app reads, signed with the audit
/// checkpoint key. Start-up implements it over the local store or the Azure tables,
/// container and key; the stores are opened at each run, so start-up makes no call.
#[async_trait]
pub trait EvidenceExporter: Send + Sync {
    async fn export(
        &self,
        period: &Period,
        out: &Path,
        now: DateTime<Utc>,
    ) -> Result<ExportSummary, EvidenceError>;
}

/// Where exported packages are kept: written once, never replaced.
#[async_trait]
pub trait EvidenceShelf: Send + Sync + fmt::Debug {
    /// Where, for the audit entry and the logs (a container or a directory; no secret).
    fn describe(&self) -> String;

    /// Whether a package named `name` is there.
    async fn holds(&self, name: &str) -> Result<bool, PortError>;

    /// Stores the file at `path` as `name`, unless a package of that name is there:
    /// `false` then, and nothing is written.
    async fn store_new(&self, name: &str, path: &Path) -> Result<bool, PortError>;
}

/// What `EvidenceExport` runs on.
pub struct EvidenceServices {
    pub exporter: Arc<dyn EvidenceExporter>,
    pub shelf: Arc<dyn EvidenceShelf>,
}

impl fmt::Debug for EvidenceServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvidenceServices")
            .field("shelf", &self.shelf)
            .finish_non_exhaustive()
    }
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct EvidenceRan {
    pub past_due: bool,
    /// The month exported, `yyyy-mm`.
    pub month: String,
    /// The package's name where it is kept.
    pub package: String,
    pub outcome: ExportOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub(crate) enum ExportOutcome {
    /// This run stored the package.
    Stored {
        sha256: String,
        manifest_sha256: String,
        bytes: u64,
        files: usize,
    },
    /// The month's package was there before this run exported anything.
    AlreadyStored,
    /// Another run stored the month's package while this one exported: this run's copy
    /// was discarded.
    StoredByAnotherRun,
    /// Nothing to export: the audit log holds no entry for the month.
    NothingToExport { why: String },
}

/// The calendar month before the one `now` falls in, in UTC.
pub fn previous_month(now: DateTime<Utc>) -> Period {
    let first = NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
        .expect("invariant: the first of a month is a date");
    let previous = first
        .checked_sub_months(Months::new(1))
        .expect("invariant: a month before a chrono date is a date");
    let midnight = |day: NaiveDate| {
        day.and_hms_opt(0, 0, 0)
            .expect("invariant: midnight is a time")
            .and_utc()
    };
    Period {
        from: midnight(previous),
        to: midnight(first),
    }
}

/// The package's name for the month `period` starts in:
/// `evidence/2026-11/keyturn-evidence-2026-11.zip`.
pub fn package_name(period: &Period) -> String {
    let month = period.from.format("%Y-%m");
    format!("{PREFIX}{month}/keyturn-evidence-{month}.zip")
}

pub(crate) async fn run(ctx: &Context, timer: TimerInfo) -> Result<EvidenceRan, FunctionError> {
    if timer.is_past_due {
        tracing::warn!("evidence export is past due: the previous run was missed or overran");
    }
    let services = ctx.evidence()?;
    let period = previous_month(ctx.now);
    let month = period.from.format("%Y-%m").to_string();
    let name = package_name(&period);
    let ran = |outcome| EvidenceRan {
        past_due: timer.is_past_due,
        month: month.clone(),
        package: name.clone(),
        outcome,
    };
    let shelf = services.shelf.describe();

    if services.shelf.holds(&name).await? {
        tracing::info!(package = %name, "the month's evidence package is already stored");
        ctx.audit(
            Action::EvidenceExported,
            AuditObject::default(),
            Outcome::Skipped,
            Some(&format!("{name} is already stored in {shelf}")),
        )
        .await?;
        return Ok(ran(ExportOutcome::AlreadyStored));
    }

    let scratch = Scratch::create(&ctx.invocation_id)?;
    let out = scratch.path.join(
        name.rsplit('/')
            .next()
            .expect("invariant: a split yields at least one piece"),
    );
    let summary = match services.exporter.export(&period, &out, ctx.now).await {
        Ok(summary) => summary,
        Err(
            error @ (EvidenceError::EmptyLog
            | EvidenceError::BeforeLog { .. }
            | EvidenceError::EmptyPeriod { .. }),
        ) => {
            let why = error.to_string();
            tracing::warn!(%why, "no evidence package for the month");
            ctx.audit(
                Action::EvidenceExported,
                AuditObject::default(),
                Outcome::Skipped,
                Some(&format!("no package for {month}: {why}")),
            )
            .await?;
            return Ok(ran(ExportOutcome::NothingToExport { why }));
        }
        Err(error) => return Err(export_failed(error)),
    };
    let (sha256, bytes, manifest_sha256) = digests(&out)?;

    let outcome = if services.shelf.store_new(&name, &out).await? {
        ExportOutcome::Stored {
            sha256,
            manifest_sha256,
            bytes,
            files: summary.files.len(),
        }
    } else {
        ExportOutcome::StoredByAnotherRun
    };
    let (audited, reason) = match &outcome {
        ExportOutcome::Stored {
            sha256,
            manifest_sha256,
            bytes,
            files,
        } => (
            Outcome::Succeeded,
            format!(
                "stored {name} in {shelf}: period {} to {}, {files} files, {bytes} bytes, package sha256 {sha256}, manifest sha256 {manifest_sha256}, signed by {}",
                period.from.format("%Y-%m-%dT%H:%M:%SZ"),
                period.to.format("%Y-%m-%dT%H:%M:%SZ"),
                summary.key
            ),
        ),
        _ => (
            Outcome::Skipped,
            format!(
                "{name} was stored in {shelf} by another run first; this run's copy is discarded"
            ),
        ),
    };
    tracing::info!(package = %name, outcome = ?outcome, "evidence export finished");
    ctx.audit(
        Action::EvidenceExported,
        AuditObject::default(),
        audited,
        Some(&reason),
    )
    .await?;
    Ok(ran(outcome))
}

/// What an export failure means for the host: a store that could not be read is
/// retried as the store's error says; anything else (a file that could not be written,
/// a signature refused) fails the run, retried by the trigger's policy.
fn export_failed(error: EvidenceError) -> FunctionError {
    match error {
        EvidenceError::Store { source, .. } => FunctionError::Port(source),
        other => FunctionError::Port(PortError::transient(format!(
            "the evidence export failed: {other}"
        ))),
    }
}

/// The package's SHA-256 and length, and its manifest's SHA-256, read back from the
/// file (one buffer at a time).
fn digests(path: &Path) -> Result<(String, u64, String), FunctionError> {
    let failed = |what: &str, e: &dyn fmt::Display| {
        FunctionError::Port(PortError::transient(format!(
            "cannot read back the package {} ({what}): {e}",
            path.display()
        )))
    };
    let mut file = std::fs::File::open(path).map_err(|e| failed("open", &e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(|e| failed("read", &e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    let file = std::fs::File::open(path).map_err(|e| failed("open", &e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| failed("zip", &e))?;
    let mut manifest = zip
        .by_name(MANIFEST_FILE)
        .map_err(|e| failed(MANIFEST_FILE, &e))?;
    let mut manifest_hasher = Sha256::new();
    loop {
        let read = manifest
            .read(&mut buffer)
            .map_err(|e| failed(MANIFEST_FILE, &e))?;
        if read == 0 {
            break;
        }
        manifest_hasher.update(&buffer[..read]);
    }
    Ok((
        hex::encode(hasher.finalize()),
        bytes,
        hex::encode(manifest_hasher.finalize()),
    ))
}

/// A directory of the run's own under the system's temporary directory, removed with
/// whatever it holds when the run ends, whichever way.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create(invocation: &str) -> Result<Self, FunctionError> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let safe: String = invocation
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let path = std::env::temp_dir().join(format!("keyturn-evidence-{safe}-{unique}"));
        std::fs::create_dir_all(&path).map_err(|e| {
            FunctionError::Port(PortError::transient(format!(
                "cannot create the export's temporary directory {}: {e}",
                path.display()
            )))
        })?;
        Ok(Self { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a time")
            .with_timezone(&Utc)
    }

    #[test]
    fn the_previous_month_is_the_whole_calendar_month_before_now() {
        let period = previous_month(at("2026-12-01T03:00:00Z"));
        assert_eq!(period.from, at("2026-11-01T00:00:00Z"));
        assert_eq!(period.to, at("2026-12-01T00:00:00Z"));
        assert_eq!(
            package_name(&period),
            "evidence/2026-11/keyturn-evidence-2026-11.zip"
        );
        let january = previous_month(at("2027-01-31T23:59:59Z"));
        assert_eq!(january.from, at("2026-12-01T00:00:00Z"));
        assert_eq!(january.to, at("2027-01-01T00:00:00Z"));
        let march = previous_month(at("2028-03-15T12:00:00Z"));
        assert_eq!(march.from, at("2028-02-01T00:00:00Z"), "a leap February");
        assert_eq!(march.to, at("2028-03-01T00:00:00Z"));
    }
}
