//! `keyturn compliance`: runs the rule catalogue over the inventory and the audit log and
//! prints each finding as it is made, then the scores per framework and per scope. As a
//! table for a terminal, or as one JSON document whose shape the README documents.
//!
//! Findings carry names, ids, dates and the audit log's reasons; the inventory and the
//! audit log hold no secret value, so nothing printed here can be one.

use std::io::{self, Write};

use serde::Serialize;

use crate::compliance::engine::{AuditInput, Finding};
use crate::compliance::trend::{self, Trend};
use crate::compliance::{
    Catalogue, ComplianceError, Evaluation, Report, ScopeKind, Scores, Status,
};
use crate::ports::inventory::InventoryStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// Runs `evaluation` and prints it to `out`; with `record`, a complete run's scores become
/// the latest sweep's trend point. Returns the report and the trend (for the exit code and
/// the summary lines).
pub async fn print(
    evaluation: &Evaluation<'_>,
    inventory: &dyn InventoryStore,
    audit: Option<AuditInput<'_>>,
    record: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(Report, Trend), ComplianceError> {
    match format {
        Format::Json => print_json(evaluation, inventory, audit, record, out).await,
        Format::Table => print_table(evaluation, inventory, audit, record, out).await,
    }
}

/// Records the run (when asked, and only a complete one) and reads the trend.
async fn trend_after(
    evaluation: &Evaluation<'_>,
    inventory: &dyn InventoryStore,
    report: &Report,
    record: bool,
) -> Result<Trend, ComplianceError> {
    let wanted = if !record {
        Err("--no-record was given".to_owned())
    } else if evaluation.framework.is_some() {
        Err("a run limited to one framework is not recorded".to_owned())
    } else {
        Ok(trend::summary_of(report))
    };
    trend::update(inventory, wanted)
        .await
        .map_err(ComplianceError::Inventory)
}

async fn print_json(
    evaluation: &Evaluation<'_>,
    inventory: &dyn InventoryStore,
    audit: Option<AuditInput<'_>>,
    record: bool,
    out: &mut dyn Write,
) -> Result<(Report, Trend), ComplianceError> {
    out.write_all(b"{\"findings\": [")?;
    let mut written = 0u64;
    let mut sink = |finding: &Finding| -> io::Result<()> {
        out.write_all(if written == 0 { b"\n  " } else { b",\n  " })?;
        serde_json::to_writer(&mut *out, finding).map_err(io::Error::other)?;
        written += 1;
        Ok(())
    };
    let report = evaluation.run(inventory, audit, &mut sink).await?;
    out.write_all(if written == 0 { b"],\n" } else { b"\n],\n" })?;
    let trend = trend_after(evaluation, inventory, &report, record).await?;
    let tail = JsonTail::of(&report, &trend, evaluation.catalogue)?;
    let tail = serde_json::to_value(&tail).map_err(io::Error::other)?;
    // The tail's fields follow the findings in the same object.
    if let serde_json::Value::Object(fields) = tail {
        let count = fields.len();
        for (index, (name, value)) in fields.into_iter().enumerate() {
            write!(out, "{}: ", serde_json::Value::String(name))?;
            serde_json::to_writer(&mut *out, &value).map_err(io::Error::other)?;
            out.write_all(if index + 1 < count { b",\n" } else { b"\n" })?;
        }
    }
    out.write_all(b"}\n")?;
    out.flush()?;
    Ok((report, trend))
}

/// Everything `--format json` prints after the findings.
#[derive(Serialize)]
struct JsonTail<'a> {
    evaluated_at: String,
    catalogue_version: &'a str,
    framework: Option<&'a str>,
    thresholds: &'a crate::compliance::Thresholds,
    exceptions_register: Option<&'a str>,
    summary: Summary<'a>,
    scores: Scores,
    not_evaluated: &'a [crate::compliance::engine::NotEvaluated],
    lapsed_exceptions: &'a [crate::compliance::exceptions::Exception],
    tag_exceptions: &'a [crate::compliance::exceptions::Exception],
    malformed_exception_tags: &'a [crate::compliance::MalformedTags],
    trend: &'a Trend,
}

#[derive(Serialize)]
struct Summary<'a> {
    open: u64,
    excepted: u64,
    by_severity: &'a std::collections::BTreeMap<crate::compliance::Severity, u64>,
}

impl<'a> JsonTail<'a> {
    fn of(
        report: &'a Report,
        trend: &'a Trend,
        catalogue: &Catalogue,
    ) -> Result<Self, ComplianceError> {
        Ok(Self {
            evaluated_at: report.evaluated_at.to_rfc3339(),
            catalogue_version: &report.catalogue_version,
            framework: report.framework.as_deref(),
            thresholds: &report.thresholds,
            exceptions_register: report.exceptions_register.as_deref(),
            summary: Summary {
                open: report.open,
                excepted: report.excepted,
                by_severity: &report.by_severity,
            },
            scores: Scores::of(report, catalogue)?,
            not_evaluated: &report.not_evaluated,
            lapsed_exceptions: &report.lapsed_exceptions,
            tag_exceptions: &report.tag_exceptions,
            malformed_exception_tags: &report.malformed_exception_tags,
            trend,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Table

const FINDING_HEADER: [&str; 6] = ["SEVERITY", "STATUS", "RULE", "SUBJECT", "SCOPE", "DETAIL"];
/// Column widths; the last column is not padded. Longer text is cut with `…`.
const FINDING_WIDTHS: [usize; 5] = [8, 8, 30, 28, 24];

async fn print_table(
    evaluation: &Evaluation<'_>,
    inventory: &dyn InventoryStore,
    audit: Option<AuditInput<'_>>,
    record: bool,
    out: &mut dyn Write,
) -> Result<(Report, Trend), ComplianceError> {
    writeln!(
        out,
        "{}",
        row(&FINDING_HEADER.map(str::to_owned), &FINDING_WIDTHS)
    )?;
    let mut sink = |finding: &Finding| -> io::Result<()> {
        let status = match finding.status {
            Status::Open if finding.exception.is_some() => "lapsed",
            Status::Open => "open",
            Status::Excepted => "excepted",
        };
        let cells = [
            finding.severity.as_str().to_owned(),
            status.to_owned(),
            finding.rule.clone(),
            finding.name.clone(),
            scope_label(finding),
            finding.detail.clone(),
        ];
        writeln!(out, "{}", row(&cells, &FINDING_WIDTHS))
    };
    let report = evaluation.run(inventory, audit, &mut sink).await?;
    let trend = trend_after(evaluation, inventory, &report, record).await?;
    let scores = Scores::of(&report, evaluation.catalogue)?;

    writeln!(out)?;
    let header = [
        "FRAMEWORK",
        "VERSION",
        "CHECKS",
        "FAILED",
        "EXCEPTED",
        "SCORE",
    ];
    let widths = [44, 26, 7, 7, 9];
    writeln!(out, "{}", row(&header.map(str::to_owned), &widths))?;
    for framework in &scores.frameworks {
        let t = &framework.scored;
        writeln!(
            out,
            "{}",
            row(
                &[
                    framework.name.clone(),
                    framework.version.clone(),
                    t.tally.checks.to_string(),
                    t.tally.failed.to_string(),
                    t.tally.excepted.to_string(),
                    score_text(t.score, t.strict_score),
                ],
                &widths
            )
        )?;
    }
    writeln!(out)?;
    let header = ["SCOPE", "NAME", "CHECKS", "FAILED", "EXCEPTED", "SCORE"];
    let widths = [12, 44, 7, 7, 9];
    writeln!(out, "{}", row(&header.map(str::to_owned), &widths))?;
    for kind in ScopeKind::ALL {
        for scope in scores.scopes.get(&kind).into_iter().flatten() {
            let t = &scope.scored;
            writeln!(
                out,
                "{}",
                row(
                    &[
                        kind.as_str().to_owned(),
                        scope.name.clone(),
                        t.tally.checks.to_string(),
                        t.tally.failed.to_string(),
                        t.tally.excepted.to_string(),
                        score_text(t.score, t.strict_score),
                    ],
                    &widths
                )
            )?;
        }
    }
    if !trend.points.is_empty() {
        writeln!(out)?;
        let mut header = vec![
            "SWEEP".to_owned(),
            "EVALUATED".to_owned(),
            "SCORE".to_owned(),
        ];
        header.extend(scores.frameworks.iter().map(|f| f.id.to_ascii_uppercase()));
        let line = |cells: &[String]| {
            cells
                .iter()
                .map(|cell| format!("{:<18}", printable(cell)))
                .collect::<String>()
                .trim_end()
                .to_owned()
        };
        writeln!(out, "{}", line(&header))?;
        for point in &trend.points {
            let mut cells = vec![
                point.sweep.to_string(),
                point.evaluated_at.format("%Y-%m-%d %H:%M").to_string(),
                percent(point.score),
            ];
            cells.extend(
                scores
                    .frameworks
                    .iter()
                    .map(|f| percent(point.frameworks.get(&f.id).copied().flatten())),
            );
            writeln!(out, "{}", line(&cells))?;
        }
    }
    out.flush()?;
    Ok((report, trend))
}

fn percent(score: Option<f64>) -> String {
    score.map_or_else(|| "-".to_owned(), |score| format!("{score:.1}%"))
}

fn score_text(score: Option<f64>, strict: Option<f64>) -> String {
    match (score, strict) {
        (Some(score), Some(strict)) if score != strict => {
            format!("{score:.1}% ({strict:.1}% without exceptions)")
        }
        (Some(score), _) => format!("{score:.1}%"),
        _ => "-".to_owned(),
    }
}

fn scope_label(finding: &Finding) -> String {
    let scope = &finding.scope;
    if let Some(vault) = &scope.vault {
        format!("vault {vault}")
    } else if let Some(application) = &scope.application {
        format!("app {}", application.name)
    } else if let Some(subscription) = &scope.subscription {
        format!("subscription {subscription}")
    } else {
        "tenant".to_owned()
    }
}

fn row<const N: usize>(cells: &[String; N], widths: &[usize]) -> String {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(widths) {
        let cell = printable(cell);
        let shown: String = if cell.chars().count() > *width {
            cell.chars()
                .take(width - 1)
                .chain(std::iter::once('…'))
                .collect()
        } else {
            cell
        };
        line.push_str(&format!("{shown:<width$}  "));
    }
    if let Some(last) = cells.get(widths.len()) {
        line.push_str(&printable(last));
    }
    line.trim_end().to_owned()
}

/// Names come from Azure and may hold control characters: shown as `?` so a terminal
/// never interprets them.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_cut_long_cells_and_hide_control_characters() {
        let line = row(
            &[
                "high".to_owned(),
                "x".repeat(20),
                "evil\u{1b}[31m".to_owned(),
            ],
            &[8, 10],
        );
        assert!(line.contains(&format!("{}…", "x".repeat(9))), "{line}");
        assert!(!line.contains('\u{1b}'), "{line}");
    }

    #[test]
    fn a_score_shows_the_strict_score_when_exceptions_change_it() {
        assert_eq!(
            score_text(Some(75.0), Some(50.0)),
            "75.0% (50.0% without exceptions)"
        );
        assert_eq!(score_text(Some(100.0), Some(100.0)), "100.0%");
        assert_eq!(score_text(None, None), "-");
    }
}
