//! `report.pdf`: the package's summary for a reader and the management assertion page
//! for the people who sign it, written in-process with `pdf-writer` in the standard
//! fonts (nothing embedded, nothing run outside keyturn), so its text is what
//! `pdftotext` and a screen reader extract.
//!
//! Page 1 is the summary: the period, the scope, where the evidence was read, the
//! totals, the score per framework as a table with bars, open findings by severity, the
//! owners with the most open findings and how to verify the package. Then the
//! management assertion: the statement, the period and scope it covers and lines for two
//! signatories. Lists run onto further pages rather than off one; tenant text (names,
//! owners) is cut with an ellipsis where it would not fit. The report holds names and
//! counts only, never a secret value: none is read.

mod layout;
mod winansi;

use chrono::{DateTime, SecondsFormat, Utc};

use super::Period;
use super::summary::{FrameworkScore, Summary};
use layout::{Document, INK, LEFT, MUTED, RIGHT, RULE, Rgb, WIDTH};
use winansi::Face;

/// The report's name in the package.
pub const REPORT: &str = "report.pdf";

fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

const GOOD: Rgb = Rgb(0.16, 0.55, 0.34);
const FAIR: Rgb = Rgb(0.85, 0.58, 0.10);
const POOR: Rgb = Rgb(0.78, 0.20, 0.18);
const TRACK: Rgb = Rgb(0.92, 0.93, 0.95);
const PANEL: Rgb = Rgb(0.96, 0.97, 0.98);
const EXCEPTED: Rgb = Rgb(0.70, 0.72, 0.76);

fn severity_colour(severity: &str) -> Rgb {
    match severity {
        "critical" => Rgb(0.55, 0.08, 0.12),
        "high" => POOR,
        "medium" => FAIR,
        _ => Rgb(0.35, 0.52, 0.75),
    }
}

fn score_colour(score: f64) -> Rgb {
    if score >= 90.0 {
        GOOD
    } else if score >= 70.0 {
        FAIR
    } else {
        POOR
    }
}

/// What the package covers, in words.
pub fn scope_text(summary: &Summary) -> String {
    let count = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let scope = &summary.scope;
    let counted = if summary.compliance_evaluated {
        format!(
            "{}, {} and {}",
            count(scope.subscriptions, "subscription", "subscriptions"),
            count(scope.vaults, "vault", "vaults"),
            count(scope.applications, "application", "applications")
        )
    } else {
        count(scope.vaults, "vault", "vaults")
    };
    format!("{counted}: every credential and vault in keyturn's inventory, and its audit log")
}

/// The PDF's bytes.
pub fn render(summary: &Summary) -> Vec<u8> {
    let period = summary.period();
    let footer = format!(
        "keyturn evidence package, {}. keyturn gathers evidence; it is not a certification.",
        period.text()
    );
    let mut doc = Document::new(footer);
    summary_pages(&mut doc, summary, &period);
    doc.page_break();
    assertion(&mut doc, summary, &period);
    doc.finish(&format!("Evidence package summary, {}", period.text()))
}

fn heading(doc: &mut Document, text: &str) {
    doc.keep(46.0);
    doc.down(10.0);
    doc.text(LEFT, Face::Bold, 12.0, INK, text);
    doc.down(16.0);
    doc.rule(LEFT, WIDTH, 0.0, 0.6, RULE);
    doc.down(6.0);
}

/// A label and its value, the value wrapped beside the label.
fn field(doc: &mut Document, label: &str, value: &str) {
    doc.keep(14.0);
    doc.text_within(LEFT, 110.0, Face::Bold, 9.5, MUTED, label);
    doc.paragraph(LEFT + 115.0, WIDTH - 115.0, Face::Regular, 9.5, value);
}

/// The period's two lines, on both pages.
fn period_fields(doc: &mut Document, period: &Period) {
    field(doc, "Period", &period.text());
    field(
        doc,
        "Exactly",
        &format!(
            "from {} (included) to {} (excluded)",
            instant(period.from),
            instant(period.to)
        ),
    );
}

/// Page 1's totals: a label and a count each.
pub fn totals(summary: &Summary) -> Vec<(&'static str, u64)> {
    let t = &summary.totals;
    let mut rows = vec![
        ("Credentials in the inventory", t.credentials),
        ("Vaults", t.vaults),
        ("Managed by keyturn", t.managed),
        ("Not managed by keyturn", t.unmanaged),
        ("Expired at the period's end", t.expired),
        ("Expired and still enabled", t.expired_enabled),
        ("Expiring within 30 days of it", t.expiring_30_days),
        ("Without an expiry date", t.no_expiry),
        ("Rotations that succeeded", t.rotations_succeeded),
        ("Rotations that failed", t.rotations_failed),
        ("Secret reads granted", t.reads_granted),
        ("Secret reads refused", t.reads_refused),
        ("Audit entries in the period", t.audit_entries),
    ];
    if summary.compliance_evaluated {
        rows.push(("Open findings", t.findings_open));
        rows.push(("Excepted findings", t.findings_excepted));
    }
    rows
}

fn summary_pages(doc: &mut Document, summary: &Summary, period: &Period) {
    doc.text(LEFT, Face::Bold, 20.0, INK, "Evidence package summary");
    doc.down(26.0);
    doc.text(
        LEFT,
        Face::Regular,
        9.5,
        MUTED,
        "Credentials, rotations and audit evidence gathered by keyturn. keyturn gathers evidence; it is not a certification.",
    );
    doc.down(19.0);
    period_fields(doc, period);
    field(doc, "Scope", &scope_text(summary));
    field(doc, "Read from", &summary.source);
    field(doc, "Generated", &instant(summary.generated_at));
    field(
        doc,
        "To verify",
        "keyturn evidence verify evidence.zip --public-key key.jwk, with the audit checkpoint key's public half obtained from the organisation, not from the package: it checks the signed manifest, every file's SHA-256 and the audit extract, naming whatever fails. README.txt says how to check without keyturn.",
    );
    field(
        doc,
        "Audit log",
        if summary.audit_intact {
            "verified intact at export time (audit/verify.json)"
        } else {
            "did NOT verify at export time: see audit/verify.json"
        },
    );

    heading(doc, "Totals");
    let half = (WIDTH - 24.0) / 2.0;
    for (n, row) in totals(summary).chunks(2).enumerate() {
        doc.keep(16.0);
        if n % 2 == 0 {
            doc.fill(LEFT - 4.0, -2.0, WIDTH + 8.0, 15.0, PANEL);
        }
        for (i, (label, value)) in row.iter().enumerate() {
            let x = LEFT + i as f32 * (half + 24.0);
            doc.text_within(x, half - 60.0, Face::Regular, 9.5, INK, label);
            doc.text_right(x + half, Face::Bold, 9.5, INK, &value.to_string());
        }
        doc.down(15.0);
    }
    doc.down(2.0);

    heading(doc, "Scores per framework");
    if !summary.compliance_evaluated || summary.frameworks.is_empty() {
        doc.paragraph(
            LEFT,
            WIDTH,
            Face::Regular,
            9.5,
            "Compliance was not evaluated for this package: no findings or scores.",
        );
    } else {
        frameworks(doc, &summary.frameworks);
        severities(doc, summary);
        owners(doc, summary);
    }
}

fn frameworks(doc: &mut Document, scores: &[FrameworkScore]) {
    let score_x = LEFT + 350.0;
    let header = |doc: &mut Document| {
        doc.text(LEFT, Face::Bold, 8.5, MUTED, "Framework");
        doc.text_right(LEFT + 262.0, Face::Bold, 8.5, MUTED, "Checks");
        doc.text_right(LEFT + 300.0, Face::Bold, 8.5, MUTED, "Failed");
        doc.text_right(LEFT + 345.0, Face::Bold, 8.5, MUTED, "Excepted");
        doc.text(score_x + 8.0, Face::Bold, 8.5, MUTED, "Score");
        doc.down(14.0);
    };
    header(doc);
    doc.continued = Some("Scores per framework".to_owned());
    for line in scores {
        if doc.keep(17.0) {
            header(doc);
        }
        let name = format!("{} {}", line.name, line.version);
        doc.text_within(LEFT, 222.0, Face::Regular, 9.0, INK, &name);
        doc.text_right(
            LEFT + 262.0,
            Face::Regular,
            9.0,
            INK,
            &line.checks.to_string(),
        );
        doc.text_right(
            LEFT + 300.0,
            Face::Regular,
            9.0,
            INK,
            &line.failed.to_string(),
        );
        doc.text_right(
            LEFT + 345.0,
            Face::Regular,
            9.0,
            INK,
            &line.excepted.to_string(),
        );
        let bar_x = score_x + 8.0;
        let bar_width = RIGHT - bar_x - 42.0;
        doc.fill(bar_x, 1.5, bar_width, 8.0, TRACK);
        match line.score {
            Some(score) => {
                let filled = bar_width * (score as f32 / 100.0).clamp(0.0, 1.0);
                doc.fill(bar_x, 1.5, filled, 8.0, score_colour(score));
                doc.text_right(RIGHT, Face::Bold, 9.0, INK, &format!("{score:.1} %"));
            }
            None => doc.text_right(RIGHT, Face::Regular, 9.0, MUTED, "n/a"),
        }
        doc.down(15.0);
    }
    doc.continued = None;
    doc.keep(12.0);
    doc.text(
        LEFT,
        Face::Regular,
        7.5,
        MUTED,
        "Score: the share of keyturn's checks mapped to the framework that did not fail (excepted ones count as passed); n/a: nothing to check.",
    );
    doc.down(12.0);
}

fn severities(doc: &mut Document, summary: &Summary) {
    heading(doc, "Findings by severity");
    let most = summary
        .findings_by_severity
        .iter()
        .map(|s| s.open + s.excepted)
        .max()
        .unwrap_or(0)
        .max(1);
    doc.text_right(LEFT + 130.0, Face::Bold, 8.5, MUTED, "Open");
    doc.text_right(LEFT + 180.0, Face::Bold, 8.5, MUTED, "Excepted");
    doc.down(14.0);
    let bar_x = LEFT + 195.0;
    let bar_width = RIGHT - bar_x;
    for count in &summary.findings_by_severity {
        doc.keep(16.0);
        let severity = count.severity.as_str();
        doc.text_within(LEFT, 80.0, Face::Regular, 9.5, INK, severity);
        doc.text_right(LEFT + 130.0, Face::Bold, 9.5, INK, &count.open.to_string());
        doc.text_right(
            LEFT + 180.0,
            Face::Regular,
            9.5,
            INK,
            &count.excepted.to_string(),
        );
        let open = bar_width * (count.open as f32 / most as f32);
        let excepted = bar_width * (count.excepted as f32 / most as f32);
        doc.fill(bar_x, 1.5, bar_width, 8.0, TRACK);
        doc.fill(bar_x, 1.5, open, 8.0, severity_colour(severity));
        doc.fill(bar_x + open, 1.5, excepted, 8.0, EXCEPTED);
        doc.down(14.0);
    }
}

fn owners(doc: &mut Document, summary: &Summary) {
    heading(doc, "Owners with the most open findings");
    if summary.top_owners.is_empty() {
        doc.text(
            LEFT,
            Face::Regular,
            9.5,
            INK,
            "No owner has an open finding.",
        );
        doc.down(14.0);
        return;
    }
    // Two columns, filled down the left first, so ten owners take five lines.
    let half = (WIDTH - 24.0) / 2.0;
    let rows = summary.top_owners.len().div_ceil(2);
    let header = |doc: &mut Document| {
        for x in [LEFT, LEFT + half + 24.0] {
            doc.text(x, Face::Bold, 8.5, MUTED, "Owner");
            doc.text_right(x + half - 45.0, Face::Bold, 8.5, MUTED, "Open");
            doc.text_right(x + half, Face::Bold, 8.5, MUTED, "Excepted");
        }
        doc.down(14.0);
    };
    header(doc);
    doc.continued = Some("Owners with the most open findings".to_owned());
    for row in 0..rows {
        if doc.keep(15.0) {
            header(doc);
        }
        for (column, owner) in [row, row + rows]
            .into_iter()
            .filter_map(|i| summary.top_owners.get(i))
            .enumerate()
        {
            let x = LEFT + column as f32 * (half + 24.0);
            doc.text_within(x, half - 80.0, Face::Regular, 9.0, INK, &owner.owner);
            doc.text_right(
                x + half - 45.0,
                Face::Bold,
                9.0,
                INK,
                &owner.open.to_string(),
            );
            doc.text_right(
                x + half,
                Face::Regular,
                9.0,
                INK,
                &owner.excepted.to_string(),
            );
        }
        doc.down(14.0);
    }
    doc.continued = None;
}

/// The statement management signs: what it asserts, and what keyturn is not.
pub const ASSERTION: &str = "Management is responsible for the inventory of secrets, keys and certificates and for the controls over their lifecycle that this evidence package describes. Management asserts that, for the period stated below, the inventory of credentials and vaults and the controls described in this package are complete and accurate: the populations of credentials, rotations and secret reads and the audit log extract it holds are complete and accurate records of that period, and the controls operated as described throughout it, except as disclosed in its findings and in the exceptions register.";

/// What keyturn's part is, under the statement.
pub const NOT_A_CERTIFICATION: &str = "keyturn gathered the evidence in this package from the sources named above and signed its manifest with the audit checkpoint key. keyturn gathers evidence and is not a certification: it expresses no opinion on whether the controls meet any framework's requirements, and a score counts the checks keyturn can make, nothing more.";

fn assertion(doc: &mut Document, summary: &Summary, period: &Period) {
    doc.text(LEFT, Face::Bold, 20.0, INK, "Management assertion");
    doc.down(34.0);
    doc.paragraph(LEFT, WIDTH, Face::Regular, 10.5, ASSERTION);
    doc.down(8.0);
    period_fields(doc, period);
    field(doc, "Scope", &scope_text(summary));
    field(doc, "Evidence read from", &summary.source);
    doc.down(6.0);
    doc.paragraph(LEFT, WIDTH, Face::Regular, 8.5, NOT_A_CERTIFICATION);
    doc.down(10.0);
    doc.text(LEFT, Face::Bold, 9.5, INK, "Organisation");
    doc.rule(LEFT + 115.0, WIDTH - 115.0, 10.0, 0.6, INK);
    doc.down(28.0);
    for n in 1..=2 {
        signatory(doc, n);
    }
}

/// One signatory's lines: name, title, signature and date.
fn signatory(doc: &mut Document, n: usize) {
    doc.keep(160.0);
    doc.text(LEFT, Face::Bold, 11.0, INK, &format!("Signatory {n}"));
    doc.down(24.0);
    // The signature gets room for a hand; each rule sits on its label's baseline.
    for (label, room) in [
        ("Name", 0.0),
        ("Title", 0.0),
        ("Signature", 14.0),
        ("Date", 0.0),
    ] {
        doc.down(room);
        doc.text(LEFT, Face::Regular, 9.5, MUTED, label);
        doc.rule(LEFT + 115.0, WIDTH - 115.0, 10.0, 0.6, INK);
        doc.down(28.0);
    }
    doc.down(6.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::summary::SummaryBuilder;

    fn pages(pdf: &[u8]) -> usize {
        pdf.windows(b"/Type /Page\n".len())
            .filter(|w| *w == b"/Type /Page\n" || w.starts_with(b"/Type /Page "))
            .count()
    }

    fn empty(period: &Period) -> Summary {
        SummaryBuilder::new(period).finish("local store here", true, period.to)
    }

    #[test]
    fn without_compliance_the_report_says_so_and_still_has_the_assertion_page() {
        let period = Period::parse("2026-11-01", "2026-11-30").expect("period");
        let pdf = render(&empty(&period));
        assert!(pdf.starts_with(b"%PDF-"));
        assert_eq!(pages(&pdf), 2, "{}", String::from_utf8_lossy(&pdf));
        assert!(
            String::from_utf8_lossy(&pdf).contains("Compliance was not evaluated"),
            "{}",
            String::from_utf8_lossy(&pdf)
        );
    }

    #[test]
    fn long_lists_run_onto_further_pages_and_the_assertion_keeps_its_own() {
        let period = Period::parse("2026-11-01", "2026-11-30").expect("period");
        let mut summary = empty(&period);
        summary.compliance_evaluated = true;
        summary.frameworks = (0..120)
            .map(|n| FrameworkScore {
                id: format!("f{n}"),
                name: format!("Framework {n} {}", "with a very long name ".repeat(8)),
                version: "1".to_owned(),
                checks: 10,
                passed: 9,
                failed: 1,
                excepted: 0,
                score: Some(90.0),
                strict_score: Some(90.0),
            })
            .collect();
        let pdf = render(&summary);
        // 120 rows of 16 points need at least three pages before the assertion's.
        assert!(pages(&pdf) >= 5, "{}", pages(&pdf));
    }
}
