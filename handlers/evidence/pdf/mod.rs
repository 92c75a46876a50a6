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

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::domain::compliance::Tally;

use super::{EvidenceError, Package, Period, Section, extract, populations};
use layout::{Document, INK, LEFT, MUTED, RIGHT, RULE, Rgb, WIDTH};
use winansi::Face;

/// The report's name in the package.
pub const REPORT: &str = "report.pdf";

/// One framework's score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameworkLine {
    pub name: String,
    pub version: String,
    pub tally: Tally,
}

/// What the report shows besides the package's own counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Where the evidence was read (as the manifest's `source`).
    pub source: String,
    /// What the package covers: the tenant, subscriptions or store.
    pub scope: String,
    pub frameworks: Vec<FrameworkLine>,
    /// Open findings per severity, most severe first.
    pub severities: Vec<(String, u64)>,
    /// Owners with open findings, most first.
    pub owners: Vec<(String, u64)>,
    /// Why the compliance figures are missing, when they are.
    pub not_evaluated: Option<String>,
}

/// One of the package's counts, as a total on page 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Total {
    pub label: &'static str,
    pub value: u64,
    /// The file whose rows are counted.
    pub file: &'static str,
}

/// The totals page 1 shows: the row counts of the package's populations and extract.
pub fn totals(package: &Package) -> Vec<Total> {
    let rows = |file: &str| {
        package
            .files()
            .iter()
            .find(|f| f.path == file)
            .and_then(|f| f.rows)
    };
    [
        ("Credentials in the inventory", populations::INVENTORY),
        ("Vaults", populations::VAULTS),
        ("Rotations in the period", populations::ROTATIONS),
        ("Identity and secret pairs read", populations::READS),
        ("Audit entries in the extract", extract::ENTRIES),
    ]
    .into_iter()
    .filter_map(|(label, file)| rows(file).map(|value| Total { label, value, file }))
    .collect()
}

/// The report as a package section.
#[derive(Debug, Clone)]
pub struct ReportPdf {
    pub figures: Figures,
    pub generated_at: DateTime<Utc>,
}

impl ReportPdf {
    /// The report of an export read from `source`, without compliance figures yet.
    pub fn local(source: &str, generated_at: DateTime<Utc>) -> Self {
        Self {
            figures: Figures {
                source: source.to_owned(),
                scope: format!(
                    "every credential and vault in the inventory, and the audit log, read from {source}"
                ),
                not_evaluated: Some(
                    "The compliance scores are not part of this report yet: keyturn compliance prints them for the same store.".to_owned(),
                ),
                ..Figures::default()
            },
            generated_at,
        }
    }
}

#[async_trait]
impl Section for ReportPdf {
    fn describe(&self) -> String {
        format!("{REPORT}: the summary and the management assertion page, to be signed")
    }

    async fn write(&self, period: &Period, package: &mut Package) -> Result<(), EvidenceError> {
        let totals = totals(package);
        let bytes = render(&self.figures, &totals, period, self.generated_at);
        package.add(REPORT, &bytes)?;
        Ok(())
    }
}

fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The period as people read it: whole days when it starts and ends at midnight.
pub fn period_text(period: &Period) -> String {
    let midnight = |at: DateTime<Utc>| at.time() == chrono::NaiveTime::MIN;
    if midnight(period.from) && midnight(period.to) {
        let last = period.to - chrono::Duration::days(1);
        format!(
            "{} to {} inclusive (UTC)",
            period.from.format("%Y-%m-%d"),
            last.format("%Y-%m-%d")
        )
    } else {
        format!(
            "{} to {} (UTC)",
            period.from.format("%Y-%m-%d %H:%M:%S"),
            period.to.format("%Y-%m-%d %H:%M:%S")
        )
    }
}

const GOOD: Rgb = Rgb(0.16, 0.55, 0.34);
const FAIR: Rgb = Rgb(0.85, 0.58, 0.10);
const POOR: Rgb = Rgb(0.78, 0.20, 0.18);
const TRACK: Rgb = Rgb(0.92, 0.93, 0.95);
const PANEL: Rgb = Rgb(0.96, 0.97, 0.98);

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

/// How many owners page 1 lists; the findings CSV has them all.
const TOP_OWNERS: usize = 10;

/// The PDF's bytes.
pub fn render(
    figures: &Figures,
    totals: &[Total],
    period: &Period,
    generated_at: DateTime<Utc>,
) -> Vec<u8> {
    let footer = format!(
        "keyturn evidence package, {}. keyturn gathers evidence; it is not a certification.",
        period_text(period)
    );
    let mut doc = Document::new(footer);
    summary(&mut doc, figures, totals, period, generated_at);
    doc.page_break();
    assertion(&mut doc, figures, period);
    doc.finish(&format!(
        "Evidence package summary, {}",
        period_text(period)
    ))
}

fn heading(doc: &mut Document, text: &str) {
    doc.keep(52.0);
    doc.down(14.0);
    doc.text(LEFT, Face::Bold, 12.0, INK, text);
    doc.down(17.0);
    doc.rule(LEFT, WIDTH, 0.0, 0.6, RULE);
    doc.down(8.0);
}

/// A label and its value on one line.
fn field(doc: &mut Document, label: &str, value: &str) {
    doc.keep(15.0);
    doc.text_within(LEFT, 110.0, Face::Bold, 9.5, MUTED, label);
    doc.text(LEFT + 115.0, Face::Regular, 9.5, INK, value);
    doc.down(14.0);
}

fn summary(
    doc: &mut Document,
    figures: &Figures,
    totals: &[Total],
    period: &Period,
    generated_at: DateTime<Utc>,
) {
    doc.text(LEFT, Face::Bold, 20.0, INK, "Evidence package summary");
    doc.down(26.0);
    doc.text(
        LEFT,
        Face::Regular,
        9.5,
        MUTED,
        "Credentials, rotations and audit evidence gathered by keyturn. keyturn gathers evidence; it is not a certification.",
    );
    doc.down(22.0);
    field(doc, "Period", &period_text(period));
    field(
        doc,
        "Exactly",
        &format!(
            "from {} (included) to {} (excluded)",
            instant(period.from),
            instant(period.to)
        ),
    );
    field(doc, "Scope", &figures.scope);
    field(doc, "Read from", &figures.source);
    field(doc, "Generated", &instant(generated_at));

    heading(doc, "Totals");
    let half = (WIDTH - 24.0) / 2.0;
    for (n, row) in totals.chunks(2).enumerate() {
        doc.keep(18.0);
        if n % 2 == 0 {
            doc.fill(LEFT - 4.0, -1.5, WIDTH + 8.0, 15.5, PANEL);
        }
        for (i, total) in row.iter().enumerate() {
            let x = LEFT + i as f32 * (half + 24.0);
            doc.text_within(x, half - 60.0, Face::Regular, 9.5, INK, total.label);
            doc.text_right(x + half, Face::Bold, 9.5, INK, &total.value.to_string());
        }
        doc.down(17.0);
    }
    doc.down(2.0);

    heading(doc, "Scores per framework");
    if let Some(why) = &figures.not_evaluated {
        doc.paragraph(LEFT, WIDTH, Face::Regular, 9.5, why);
    }
    if !figures.frameworks.is_empty() {
        frameworks(doc, &figures.frameworks);
    }

    heading(doc, "Open findings by severity");
    let open: u64 = figures.severities.iter().map(|(_, n)| n).sum();
    if figures.severities.is_empty() || open == 0 {
        doc.text(LEFT, Face::Regular, 9.5, INK, "No open finding.");
        doc.down(14.0);
    } else {
        let most = figures
            .severities
            .iter()
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(1)
            .max(1);
        for (severity, count) in &figures.severities {
            doc.keep(16.0);
            doc.text_within(LEFT, 80.0, Face::Regular, 9.5, INK, severity);
            doc.text_right(LEFT + 130.0, Face::Bold, 9.5, INK, &count.to_string());
            let bar = (WIDTH - 150.0) * (*count as f32 / most as f32);
            doc.fill(LEFT + 145.0, 1.5, WIDTH - 150.0, 8.0, TRACK);
            doc.fill(LEFT + 145.0, 1.5, bar, 8.0, severity_colour(severity));
            doc.down(15.0);
        }
    }

    heading(doc, "Owners with the most open findings");
    if figures.owners.is_empty() {
        doc.text(
            LEFT,
            Face::Regular,
            9.5,
            INK,
            "No owner has an open finding.",
        );
        doc.down(14.0);
    } else {
        doc.continued = Some("Owners with the most open findings".to_owned());
        for (owner, count) in figures.owners.iter().take(TOP_OWNERS) {
            doc.keep(15.0);
            doc.text_within(LEFT, WIDTH - 70.0, Face::Regular, 9.5, INK, owner);
            doc.text_right(RIGHT, Face::Bold, 9.5, INK, &count.to_string());
            doc.down(14.0);
        }
        doc.continued = None;
        if figures.owners.len() > TOP_OWNERS {
            doc.text(
                LEFT,
                Face::Regular,
                8.5,
                MUTED,
                &format!(
                    "and {} more owner(s) with open findings",
                    figures.owners.len() - TOP_OWNERS
                ),
            );
            doc.down(14.0);
        }
    }

    heading(doc, "How to verify this package");
    doc.paragraph(
        LEFT,
        WIDTH,
        Face::Regular,
        9.5,
        "manifest.json lists every file of the package with its SHA-256 and is signed (manifest.sig) with the audit checkpoint key. Obtain that key's public half from the organisation, not from the package, and run: keyturn evidence verify evidence.zip --public-key key.jwk. It checks the signature, every file's hash, that no file is missing or added, and the audit extract's hash chain and signed checkpoints, naming whatever fails. README.txt in the package explains how to check it without keyturn.",
    );
}

fn frameworks(doc: &mut Document, lines: &[FrameworkLine]) {
    let score_x = LEFT + 330.0;
    let header = |doc: &mut Document| {
        doc.text(LEFT, Face::Bold, 8.5, MUTED, "Framework");
        doc.text_right(LEFT + 230.0, Face::Bold, 8.5, MUTED, "Checks");
        doc.text_right(LEFT + 270.0, Face::Bold, 8.5, MUTED, "Failed");
        doc.text_right(LEFT + 318.0, Face::Bold, 8.5, MUTED, "Excepted");
        doc.text(
            score_x + 8.0,
            Face::Bold,
            8.5,
            MUTED,
            "Score (excepted count as passed)",
        );
        doc.down(14.0);
    };
    header(doc);
    doc.continued = Some("Scores per framework".to_owned());
    for line in lines {
        if doc.keep(17.0) {
            header(doc);
        }
        let name = format!("{} {}", line.name, line.version);
        doc.text_within(LEFT, 175.0, Face::Regular, 9.5, INK, &name);
        doc.text_right(
            LEFT + 230.0,
            Face::Regular,
            9.5,
            INK,
            &line.tally.checks.to_string(),
        );
        doc.text_right(
            LEFT + 270.0,
            Face::Regular,
            9.5,
            INK,
            &line.tally.failed.to_string(),
        );
        doc.text_right(
            LEFT + 318.0,
            Face::Regular,
            9.5,
            INK,
            &line.tally.excepted.to_string(),
        );
        let bar_x = score_x + 8.0;
        let bar_width = RIGHT - bar_x - 42.0;
        doc.fill(bar_x, 1.5, bar_width, 8.0, TRACK);
        match line.tally.score() {
            Some(score) => {
                let filled = bar_width * (score as f32 / 100.0).clamp(0.0, 1.0);
                doc.fill(bar_x, 1.5, filled, 8.0, score_colour(score));
                doc.text_right(RIGHT, Face::Bold, 9.5, INK, &format!("{score:.1} %"));
            }
            None => doc.text_right(RIGHT, Face::Regular, 9.5, MUTED, "n/a"),
        }
        doc.down(16.0);
    }
    doc.continued = None;
}

/// The statement management signs: what it asserts, and what keyturn is not.
pub const ASSERTION: &str = "Management is responsible for the inventory of secrets, keys and certificates and for the controls over their lifecycle that this evidence package describes. Management asserts that, for the period stated below, the inventory of credentials and vaults and the controls described in this package are complete and accurate: the populations of credentials, rotations and secret reads and the audit log extract it holds are complete and accurate records of that period, and the controls operated as described throughout it, except as disclosed in its findings and in the exceptions register.";

/// What keyturn's part is, under the statement.
pub const NOT_A_CERTIFICATION: &str = "keyturn gathered the evidence in this package from the sources named above and signed its manifest with the audit checkpoint key. keyturn gathers evidence and is not a certification: it expresses no opinion on whether the controls meet any framework's requirements, and a score counts the checks keyturn can make, nothing more.";

fn assertion(doc: &mut Document, figures: &Figures, period: &Period) {
    doc.text(LEFT, Face::Bold, 20.0, INK, "Management assertion");
    doc.down(34.0);
    doc.paragraph(LEFT, WIDTH, Face::Regular, 10.5, ASSERTION);
    doc.down(8.0);
    field(doc, "Period", &period_text(period));
    field(
        doc,
        "Exactly",
        &format!(
            "from {} (included) to {} (excluded)",
            instant(period.from),
            instant(period.to)
        ),
    );
    field(doc, "Scope", &figures.scope);
    field(doc, "Evidence read from", &figures.source);
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
    // The signature gets room for a hand; the rule sits on the label's baseline.
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

    fn pages(pdf: &[u8]) -> usize {
        pdf.windows(b"/Type /Page\n".len())
            .filter(|w| *w == b"/Type /Page\n" || w.starts_with(b"/Type /Page "))
            .count()
    }

    #[test]
    fn long_lists_run_onto_further_pages_and_the_assertion_keeps_its_own() {
        let period = Period::parse("2026-11-01", "2026-11-30").expect("period");
        let now = period.to;
        let short = render(&ReportPdf::local("here", now).figures, &[], &period, now);
        let many = Figures {
            frameworks: (0..120)
                .map(|n| FrameworkLine {
                    name: format!("Framework {n} {}", "with a very long name ".repeat(8)),
                    version: "1".to_owned(),
                    tally: Tally {
                        checks: 10,
                        passed: 9,
                        failed: 1,
                        excepted: 0,
                    },
                })
                .collect(),
            ..ReportPdf::local("here", now).figures
        };
        let long = render(&many, &[], &period, now);
        assert_eq!(pages(&short), 2, "{}", String::from_utf8_lossy(&short));
        // 120 rows of 16 points need at least three pages before the assertion's.
        assert!(pages(&long) >= 5, "{}", pages(&long));
    }

    #[test]
    fn the_period_reads_as_whole_days_or_exact_times() {
        let days = Period::parse("2026-11-01", "2026-11-30").expect("period");
        assert_eq!(
            period_text(&days),
            "2026-11-01 to 2026-11-30 inclusive (UTC)"
        );
        let times = Period::parse("2026-11-01T06:00:00Z", "2026-11-02T06:00:00Z").expect("p");
        assert_eq!(
            period_text(&times),
            "2026-11-01 06:00:00 to 2026-11-02 06:00:00 (UTC)"
        );
    }
}
