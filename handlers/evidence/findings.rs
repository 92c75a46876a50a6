//! Compliance in the package: every finding (`populations/findings.csv`), every exception
//! of the register (`populations/exceptions.csv`) and the control matrix
//! (`control-matrix.csv`): per framework and control, the rules behind it, its result
//! and which files and rows are the evidence.
//!
//! Findings are written grouped by rule (in the catalogue's order) and, within a rule, by
//! the controls they count for, so that the matrix can name each control's findings as
//! row ranges. The engine makes findings subject by subject, so they are first spilled
//! into one temporary file per group (a handful: rules times their control variants) and
//! copied into the package after the evaluation: memory holds one open file per group,
//! never the findings.
//!
//! Row numbers are a spreadsheet's: the header is row 1, the first finding row 2.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};

use super::csv::{Cell, write_header, write_row};
use super::{EvidenceError, Package, extract, populations};
use crate::compliance::catalogue::{Catalogue, Subject};
use crate::compliance::exceptions::Exception;
use crate::compliance::{Finding, MalformedTags, Register, Report, Status, TagExceptions};
use crate::domain::inventory::RecordId;

pub const FINDINGS: &str = "populations/findings.csv";
pub const EXCEPTIONS: &str = "populations/exceptions.csv";
pub const CONTROL_MATRIX: &str = "control-matrix.csv";

const FINDING_COLUMNS: [&str; 18] = [
    "rule",
    "title",
    "severity",
    "status",
    "subject_kind",
    "record_id",
    "name",
    "subscription",
    "vault",
    "app_id",
    "application",
    "owners",
    "detail",
    "controls",
    "exception_id",
    "exception_owner",
    "exception_expires",
    "exception_lapsed",
];

const EXCEPTION_COLUMNS: [&str; 12] = [
    "id",
    "source",
    "rule",
    "subject",
    "owner",
    "reason",
    "expires",
    "expired",
    "findings_excepted",
    "findings_lapsed",
    "declared_on",
    "problem",
];

const MATRIX_COLUMNS: [&str; 12] = [
    "framework",
    "framework_name",
    "framework_version",
    "control",
    "control_title",
    "rules",
    "result",
    "checks",
    "passed",
    "failed",
    "excepted",
    "evidence",
];

/// The id an exception has in `exceptions.csv` and `findings.csv`: `register:N` for the
/// register's entry N, `tag:RECORD-ID:RULE` for one an object's tags declare.
pub fn exception_id(entry: usize, declared_on: Option<&RecordId>, rule: &str) -> String {
    match declared_on {
        Some(record) => format!("tag:{record}:{rule}"),
        None => format!("register:{entry}"),
    }
}

/// `framework:control` pairs, `;`-separated: the controls a finding counts for.
fn controls_of(finding: &Finding) -> String {
    finding
        .controls
        .iter()
        .map(|c| format!("{}:{}", c.framework, c.control))
        .collect::<Vec<_>>()
        .join(";")
}

/// A temporary file removed when dropped.
struct Spill {
    path: PathBuf,
    file: BufWriter<File>,
    rows: u64,
}

impl Spill {
    fn create() -> io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "keyturn-evidence-{}.csv",
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Self {
            path,
            file: BufWriter::new(file),
            rows: 0,
        })
    }

    /// Copies everything written into `out`.
    fn copy_into(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.file.flush()?;
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0))?;
        io::copy(&mut BufReader::new(&*file), out)?;
        Ok(())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where one group of findings landed in `findings.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placed {
    rule: String,
    /// `(framework, control)` pairs the group's findings count for.
    controls: Vec<(String, String)>,
    /// Spreadsheet rows, both included.
    first: u64,
    last: u64,
}

/// Counts per exception of the register: findings it excepts, findings it covered after
/// its expiry.
#[derive(Debug, Clone, Copy, Default)]
struct Matched {
    excepted: u64,
    lapsed: u64,
}

/// Rows of `exceptions.csv` written as they come, into a file created on the first.
#[derive(Default)]
struct Rows {
    spill: Option<Spill>,
}

impl Rows {
    fn file(&mut self) -> io::Result<&mut Spill> {
        if self.spill.is_none() {
            self.spill = Some(Spill::create()?);
        }
        Ok(self.spill.as_mut().expect("created above"))
    }

    fn copy_into(&mut self, out: &mut dyn Write) -> io::Result<u64> {
        match &mut self.spill {
            Some(spill) => {
                spill.copy_into(out)?;
                Ok(spill.rows)
            }
            None => Ok(0),
        }
    }
}

/// Takes each finding as the engine makes it, and what objects' exception tags make
/// (the engine's sink in [`super::evaluate`]), then writes the three files. Exceptions
/// declared by tags are written out as their object's findings end, never collected:
/// memory holds the register's counts (bounded by its file) and one object's tags.
pub struct FindingsWriter {
    /// Groups keyed by the rule's position in the catalogue and the controls.
    groups: BTreeMap<(usize, String), (Placed, Spill)>,
    rule_order: BTreeMap<String, usize>,
    /// Counts per exception of the register, by id.
    matched: BTreeMap<String, Matched>,
    /// When the evaluation judges expiry (`expired` in `exceptions.csv`).
    now: DateTime<Utc>,
    /// The exceptions the tags of the object being evaluated declare, with their counts
    /// so far: its findings come next.
    pending: Vec<(Exception, Matched)>,
    /// `exceptions.csv` rows of exceptions declared by tags, and of tags that make none.
    tagged: Rows,
    malformed: Rows,
}

impl FindingsWriter {
    pub fn new(catalogue: &Catalogue, now: DateTime<Utc>) -> Self {
        Self {
            groups: BTreeMap::new(),
            rule_order: catalogue
                .rules()
                .iter()
                .enumerate()
                .map(|(index, rule)| (rule.id.clone(), index))
                .collect(),
            matched: BTreeMap::new(),
            now,
            pending: Vec::new(),
            tagged: Rows::default(),
            malformed: Rows::default(),
        }
    }

    /// Takes what one object's exception tags make, before its findings; the previous
    /// object's exceptions, whose findings are all counted, are written out.
    pub fn tags(&mut self, made: TagExceptions<'_>) -> io::Result<()> {
        self.flush_pending()?;
        match made {
            TagExceptions::Declared(declared) => {
                self.pending = declared
                    .iter()
                    .map(|e| (e.clone(), Matched::default()))
                    .collect();
            }
            TagExceptions::Malformed(malformed) => {
                let spill = self.malformed.file()?;
                write_malformed(&mut spill.file, malformed)?;
                spill.rows += 1;
            }
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let now = self.now;
        let spill = self.tagged.file()?;
        for (exception, matched) in std::mem::take(&mut self.pending) {
            let id = exception_id(
                exception.entry,
                exception.declared_on.as_ref(),
                &exception.rule,
            );
            write_exception(&mut spill.file, &exception, &id, "tags", now, matched)?;
            spill.rows += 1;
        }
        Ok(())
    }

    /// Spills one finding into its group.
    pub fn take(&mut self, finding: &Finding) -> io::Result<()> {
        let order = self
            .rule_order
            .get(&finding.rule)
            .copied()
            .unwrap_or(usize::MAX);
        let signature = controls_of(finding);
        let key = (order, signature);
        if !self.groups.contains_key(&key) {
            let placed = Placed {
                rule: finding.rule.clone(),
                controls: finding
                    .controls
                    .iter()
                    .map(|c| (c.framework.clone(), c.control.clone()))
                    .collect(),
                first: 0,
                last: 0,
            };
            self.groups.insert(key.clone(), (placed, Spill::create()?));
        }
        let (_, spill) = self.groups.get_mut(&key).expect("inserted above");
        write_finding(&mut spill.file, finding, &key.1)?;
        spill.rows += 1;
        if let Some(exception) = &finding.exception {
            let matched = match &exception.declared_on {
                // Declared by tags: the object being evaluated's.
                Some(record) => self.pending.iter_mut().find_map(|(pending, matched)| {
                    (pending.declared_on.as_ref() == Some(record) && pending.rule == finding.rule)
                        .then_some(matched)
                }),
                None => Some(
                    self.matched
                        .entry(exception_id(exception.entry, None, &finding.rule))
                        .or_default(),
                ),
            };
            let Some(matched) = matched else {
                return Ok(());
            };
            if exception.lapsed {
                matched.lapsed += 1;
            } else if finding.status == Status::Excepted {
                matched.excepted += 1;
            }
        }
        Ok(())
    }

    /// Writes `findings.csv`, `exceptions.csv` and `control-matrix.csv` into `package`.
    pub fn write(
        mut self,
        catalogue: &Catalogue,
        report: &Report,
        register: &Register,
        package: &mut Package,
    ) -> Result<(), EvidenceError> {
        let failed = |file: &'static str| move |source| EvidenceError::Write { file, source };

        package.begin(FINDINGS)?;
        write_header(package, &FINDING_COLUMNS).map_err(failed(FINDINGS))?;
        let mut next_row = 2u64;
        let mut placed = Vec::with_capacity(self.groups.len());
        let mut rows = 0;
        for (_, (mut group, mut spill)) in std::mem::take(&mut self.groups) {
            spill.copy_into(package).map_err(failed(FINDINGS))?;
            group.first = next_row;
            group.last = next_row + spill.rows - 1;
            next_row += spill.rows;
            rows += spill.rows;
            placed.push(group);
        }
        package.end(Some(rows))?;

        package.begin(EXCEPTIONS)?;
        let rows = self
            .write_exceptions(register, package)
            .map_err(failed(EXCEPTIONS))?;
        package.end(Some(rows))?;

        let population_rows: BTreeMap<String, u64> = package
            .files()
            .iter()
            .filter_map(|f| f.rows.map(|rows| (f.path.clone(), rows)))
            .collect();
        package.begin(CONTROL_MATRIX)?;
        let rows = write_matrix(catalogue, report, &placed, &population_rows, package)
            .map_err(failed(CONTROL_MATRIX))?;
        package.end(Some(rows))?;
        Ok(())
    }

    /// The register's exceptions, then those tags declared, then tags that make none.
    fn write_exceptions(&mut self, register: &Register, out: &mut dyn Write) -> io::Result<u64> {
        self.flush_pending()?;
        write_header(out, &EXCEPTION_COLUMNS)?;
        let source = register.source().unwrap_or_default();
        let mut rows = 0;
        for exception in register.entries() {
            let id = exception_id(exception.entry, None, &exception.rule);
            let matched = self.matched.get(&id).copied().unwrap_or_default();
            write_exception(out, exception, &id, source, self.now, matched)?;
            rows += 1;
        }
        rows += self.tagged.copy_into(out)?;
        // Tags that do not make an exception: named, never dropped.
        rows += self.malformed.copy_into(out)?;
        Ok(rows)
    }
}

/// A row naming an object whose exception tags make no exception, and why.
fn write_malformed(out: &mut dyn Write, malformed: &MalformedTags) -> io::Result<()> {
    let record = malformed.record_id.to_string();
    write_row(
        out,
        &[
            Cell::Value(format!("tag:{record}")),
            Cell::Text(&format!(
                "tags on {} ({})",
                malformed.name, malformed.source
            )),
            Cell::Value(String::new()),
            Cell::Value(record),
            Cell::Value(String::new()),
            Cell::Value(String::new()),
            Cell::Value(String::new()),
            Cell::Value(String::new()),
            0u64.into(),
            0u64.into(),
            Cell::Value("tags".to_owned()),
            Cell::Text(&malformed.problem),
        ],
    )
}

fn time(at: DateTime<Utc>) -> Cell<'static> {
    Cell::Value(at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn write_finding(out: &mut dyn Write, finding: &Finding, controls: &str) -> io::Result<()> {
    let scope = &finding.scope;
    let exception = finding.exception.as_ref();
    write_row(
        out,
        &[
            Cell::Value(finding.rule.clone()),
            Cell::Text(&finding.title),
            Cell::Value(finding.severity.as_str().to_owned()),
            Cell::Value(
                match finding.status {
                    Status::Open => "open",
                    Status::Excepted => "excepted",
                }
                .to_owned(),
            ),
            Cell::Value(subject_name(finding.subject_kind).to_owned()),
            Cell::Value(
                finding
                    .record_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
            Cell::Text(&finding.name),
            Cell::Text(scope.subscription.as_deref().unwrap_or_default()),
            Cell::Text(scope.vault.as_deref().unwrap_or_default()),
            Cell::Text(
                scope
                    .application
                    .as_ref()
                    .map(|a| a.app_id.as_str())
                    .unwrap_or_default(),
            ),
            Cell::Text(
                scope
                    .application
                    .as_ref()
                    .map(|a| a.name.as_str())
                    .unwrap_or_default(),
            ),
            Cell::Text(&scope.owners.join(";")),
            Cell::Text(&finding.detail),
            Cell::Text(controls),
            Cell::Value(
                exception
                    .map(|e| exception_id(e.entry, e.declared_on.as_ref(), &finding.rule))
                    .unwrap_or_default(),
            ),
            Cell::Text(exception.map(|e| e.owner.as_str()).unwrap_or_default()),
            exception.map_or(Cell::Value(String::new()), |e| time(e.expires)),
            Cell::Value(exception.map(|e| e.lapsed.to_string()).unwrap_or_default()),
        ],
    )
}

fn write_exception(
    out: &mut dyn Write,
    exception: &Exception,
    id: &str,
    source: &str,
    now: DateTime<Utc>,
    matched: Matched,
) -> io::Result<()> {
    write_row(
        out,
        &[
            Cell::Value(id.to_owned()),
            Cell::Text(source),
            Cell::Value(exception.rule.clone()),
            Cell::Text(&exception.subject.to_string()),
            Cell::Text(&exception.owner),
            Cell::Text(&exception.reason),
            time(exception.expires),
            Cell::Value((!exception.is_active(now)).to_string()),
            matched.excepted.into(),
            matched.lapsed.into(),
            Cell::Value(
                if exception.declared_on.is_some() {
                    "tags"
                } else {
                    "register"
                }
                .to_owned(),
            ),
            Cell::Value(String::new()),
        ],
    )
}

fn subject_name(subject: Subject) -> &'static str {
    match subject {
        Subject::Secret => "secret",
        Subject::Certificate => "certificate",
        Subject::Key => "key",
        Subject::PasswordCredential => "password_credential",
        Subject::KeyCredential => "key_credential",
        Subject::Vault => "vault",
        Subject::Application => "application",
        Subject::AuditLog => "audit_log",
    }
}

/// The population a rule's checks were made over, besides its findings.
fn population_of(rule: &str, subjects: &[Subject]) -> &'static str {
    match rule {
        "rotation-failed" => populations::ROTATIONS,
        "audit-chain-broken" => extract::VERIFY_REPORT,
        _ if subjects.iter().all(|s| *s == Subject::Vault) => populations::VAULTS,
        _ => populations::INVENTORY,
    }
}

/// `A-B` ranges of spreadsheet rows, adjacent ranges merged.
fn ranges(mut spans: Vec<(u64, u64)>) -> String {
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (first, last) in spans {
        match merged.last_mut() {
            Some(previous) if previous.1 + 1 >= first => previous.1 = previous.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
        .iter()
        .map(|(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row per framework and control of the catalogue.
fn write_matrix(
    catalogue: &Catalogue,
    report: &Report,
    placed: &[Placed],
    population_rows: &BTreeMap<String, u64>,
    out: &mut dyn Write,
) -> io::Result<u64> {
    write_header(out, &MATRIX_COLUMNS)?;
    let mut rows = 0;
    for framework in catalogue.frameworks() {
        for (control, title) in &framework.controls {
            let rules: Vec<_> = catalogue
                .rules()
                .iter()
                .filter(|rule| {
                    rule.controls
                        .iter()
                        .any(|c| c.framework == framework.id && c.control == *control)
                })
                .collect();
            let tally = report
                .board
                .controls
                .get(&(framework.id.clone(), control.clone()))
                .copied()
                .unwrap_or_default();
            let result = if tally.checks == 0 {
                "not_assessed"
            } else if tally.failed > 0 {
                "fail"
            } else if tally.excepted > 0 {
                "excepted"
            } else {
                "pass"
            };
            let spans: Vec<(u64, u64)> = placed
                .iter()
                .filter(|group| {
                    group
                        .controls
                        .iter()
                        .any(|(f, c)| *f == framework.id && c == control)
                })
                .map(|group| (group.first, group.last))
                .collect();
            let mut evidence = Vec::new();
            if !spans.is_empty() {
                evidence.push(format!("{FINDINGS} rows {}", ranges(spans)));
            }
            let mut files: Vec<&str> = rules
                .iter()
                .map(|rule| population_of(&rule.id, &rule.applies_to))
                .collect();
            files.sort_unstable();
            files.dedup();
            for file in files {
                match population_rows.get(file) {
                    Some(0) | None => evidence.push(file.to_owned()),
                    Some(rows) => {
                        evidence.push(format!("{file} rows {}", ranges(vec![(2, rows + 1)])))
                    }
                }
            }
            write_row(
                out,
                &[
                    Cell::Value(framework.id.clone()),
                    Cell::Text(&framework.name),
                    Cell::Text(&framework.version),
                    Cell::Text(control),
                    Cell::Text(title),
                    Cell::Value(
                        rules
                            .iter()
                            .map(|r| r.id.as_str())
                            .collect::<Vec<_>>()
                            .join(";"),
                    ),
                    Cell::Value(result.to_owned()),
                    tally.checks.into(),
                    tally.passed.into(),
                    tally.failed.into(),
                    tally.excepted.into(),
                    Cell::Text(&evidence.join("; ")),
                ],
            )?;
            rows += 1;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_row_spans_merge_and_single_rows_stand_alone() {
        assert_eq!(ranges(vec![(5, 7), (2, 4), (9, 9)]), "2-7, 9");
        assert_eq!(ranges(vec![(2, 2)]), "2");
        assert_eq!(ranges(Vec::new()), "");
    }
}
