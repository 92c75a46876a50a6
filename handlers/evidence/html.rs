//! `report.html`: the package's [`Summary`] as a page a person would rather look at than
//! read. Self-contained: inline CSS and SVG charts drawn here, no script, no font, image
//! or style fetched from anywhere (a Content-Security-Policy says so to the browser as
//! well), and it prints cleanly (a section per page, charts never cut, black on white).
//!
//! Every text that comes from the tenant or the store (owners, where the evidence was
//! read) is escaped with [`escape`]; the summary holds names and counts only, never a
//! secret value. Each chart's bars carry `data-series`, `data-label` and `data-value`
//! attributes, so a reader (or a test) can check them against `summary.json`.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use super::summary::{Summary, TOP_OWNERS};
use crate::compliance::Severity;

/// The report's name in the package.
pub const REPORT: &str = "report.html";

/// The page's stylesheet: screen first, then print (black on white, a section per page,
/// charts kept whole).
const STYLE: &str = r#"
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --panel:#f9fafb; --accent:#1d4ed8;
  --ok:#15803d; --fail:#b91c1c; --warn:#b45309; --soon:#f59e0b; --excepted:#9ca3af;
  --critical:#7f1d1d; --high:#dc2626; --medium:#f59e0b; --low:#60a5fa; }
* { box-sizing: border-box; }
html { background:#eef1f5; }
body { margin:0; color:var(--ink); font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
  "Helvetica Neue", Arial, sans-serif; }
main { max-width:1000px; margin:0 auto; padding:24px 28px 48px; background:#fff; min-height:100vh; }
header.top { border-bottom:3px solid var(--accent); padding-bottom:14px; margin-bottom:8px; }
header.top h1 { margin:0 0 2px; font-size:26px; letter-spacing:-0.01em; }
header.top .sub { color:var(--muted); margin:0 0 12px; }
dl.meta { display:grid; grid-template-columns:max-content 1fr; gap:3px 16px; margin:0; }
dl.meta dt { color:var(--muted); }
dl.meta dd { margin:0; overflow-wrap:anywhere; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.badge.ok { background:#dcfce7; color:var(--ok); }
.badge.fail { background:#fee2e2; color:var(--fail); }
section { padding:18px 0 8px; border-bottom:1px solid var(--line); }
section:last-of-type { border-bottom:0; }
h2 { font-size:18px; margin:0 0 4px; }
p.note { color:var(--muted); margin:2px 0 12px; font-size:13px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(170px, 1fr)); gap:10px; }
.card { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.card .n { font-size:24px; font-weight:650; font-variant-numeric:tabular-nums; }
.card .l { color:var(--muted); font-size:12.5px; }
.card.alert .n { color:var(--fail); }
.card.warn .n { color:var(--warn); }
svg.chart { display:block; width:100%; height:auto; }
svg.chart text { font-family:inherit; fill:var(--ink); font-size:12px; }
svg.chart text.muted { fill:var(--muted); font-size:11px; }
svg.chart .grid { stroke:var(--line); }
svg.chart .axis { stroke:#9ca3af; }
.s-succeeded { fill:var(--ok); } .s-failed { fill:var(--fail); } .s-overdue { fill:var(--fail); }
.s-expiring { fill:var(--soon); } .s-score { fill:var(--accent); } .s-track { fill:#eef2f7; }
.s-excepted { fill:var(--excepted); } .s-critical { fill:var(--critical); } .s-high { fill:var(--high); }
.s-medium { fill:var(--medium); } .s-low { fill:var(--low); } .s-open { fill:var(--fail); }
.legend { display:flex; flex-wrap:wrap; gap:14px; font-size:12.5px; color:var(--muted); margin:4px 0 8px; }
.legend i { display:inline-block; width:11px; height:11px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
.legend .succeeded { background:var(--ok); } .legend .failed, .legend .open { background:var(--fail); }
.legend .excepted { background:var(--excepted); } .legend .expiring { background:var(--soon); }
.legend .overdue { background:var(--fail); }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:middle; }
th { font-size:12.5px; color:var(--muted); font-weight:600; }
td.num, th.num { text-align:right; width:90px; }
td.owner { overflow-wrap:anywhere; }
td.bar { width:40%; }
td.bar svg.chart { height:12px; }
.empty { color:var(--muted); font-style:italic; padding:8px 0; }
ol.steps { margin:4px 0 0; padding-left:20px; } ol.steps li { margin:4px 0; }
code { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12.5px;
  background:var(--panel); border:1px solid var(--line); border-radius:4px; padding:0 4px; overflow-wrap:anywhere; }
footer { color:var(--muted); font-size:12px; margin-top:18px; }
@page { size:A4; margin:14mm 12mm; }
@media print {
  html, main { background:#fff; }
  body { color:#000; font-size:11pt; }
  main { max-width:none; padding:0; min-height:0; }
  section { break-before:page; border:0; padding-top:0; }
  section.first { break-before:auto; }
  svg.chart, .cards, table, tr, .card { break-inside:avoid; }
  h2 { break-after:avoid; }
  .card { background:#fff; border-color:#000; }
  .card .n, .card.alert .n, .card.warn .n, p.note, .card .l, dl.meta dt, th, footer, .legend { color:#000; }
  .badge.ok, .badge.fail { background:#fff; color:#000; border:1px solid #000; }
  header.top { border-color:#000; }
  svg.chart text, svg.chart text.muted { fill:#000; }
  .s-succeeded, .s-score, .s-low { fill:#555; } .s-failed, .s-overdue, .s-open, .s-critical { fill:#000; }
  .s-high { fill:#222; } .s-medium, .s-expiring { fill:#777; } .s-excepted { fill:#bbb; }
  .s-track { fill:#f2f2f2; }
  .legend .succeeded { background:#555; } .legend .failed, .legend .open, .legend .overdue { background:#000; }
  .legend .excepted { background:#bbb; } .legend .expiring { background:#777; }
  code { background:#fff; border-color:#000; }
}
"#;

/// Escapes text for HTML content and attribute values (double or single quoted).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A count with thousands separated (`12,345`).
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

fn short_day(at: DateTime<Utc>) -> String {
    at.format("%d %b").to_string()
}

/// The report for `summary`.
pub fn render(summary: &Summary) -> String {
    let mut page = String::with_capacity(48 * 1024);
    let period = summary.period().text();
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Credential evidence: {period}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
"#,
        period = escape(&period)
    );
    header(&mut page, summary, &period);
    totals(&mut page, summary);
    scores(&mut page, summary);
    severities(&mut page, summary);
    expiry(&mut page, summary);
    rotations(&mut page, summary);
    owners(&mut page, summary);
    verification(&mut page);
    let _ = write!(
        page,
        r#"<footer>Written by keyturn {version} on {generated}. keyturn gathers evidence about the credentials it inventories and rotates; it is not a certification, and a score counts the checks keyturn can make, not a framework's requirements met.</footer>
</main>
</body>
</html>
"#,
        version = escape(env!("CARGO_PKG_VERSION")),
        generated = escape(
            &summary
                .generated_at
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
    );
    page
}

fn header(page: &mut String, summary: &Summary, period: &str) {
    let scope = &summary.scope;
    let parts: Vec<String> = [
        (scope.subscriptions, "subscription(s)"),
        (scope.vaults, "vault(s)"),
        (
            scope.applications,
            "application(s) and service principal(s)",
        ),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{} {what}", count(n)))
    .collect();
    let mut scope_text = if parts.is_empty() {
        "an empty inventory".to_owned()
    } else {
        parts.join(", ")
    };
    if !summary.compliance_evaluated {
        scope_text.push_str("; compliance was not evaluated");
    }
    let audit = if summary.audit_intact {
        r#"<span class="badge ok">verified</span> every entry and checkpoint of the whole log checked at export (<code>audit/verify.json</code>)"#
    } else {
        r#"<span class="badge fail">did NOT verify</span> at export: see <code>audit/verify.json</code>"#
    };
    let _ = write!(
        page,
        r#"<header class="top">
<h1>Credential evidence report</h1>
<p class="sub">Secrets, keys, certificates and application credentials: inventory, rotations, access and compliance for the period.</p>
<dl class="meta">
<dt>Period</dt><dd>{period}</dd>
<dt>Scope</dt><dd>{scope}</dd>
<dt>Read from</dt><dd>{source}</dd>
<dt>Audit log</dt><dd>{audit}</dd>
<dt>Generated</dt><dd>{generated}</dd>
</dl>
</header>
"#,
        period = escape(period),
        scope = escape(&scope_text),
        source = escape(&summary.source),
        generated = escape(
            &summary
                .generated_at
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
    );
}

fn card(page: &mut String, class: &str, value: u64, label: &str) {
    let _ = write!(
        page,
        r#"<div class="card {class}"><div class="n">{}</div><div class="l">{}</div></div>"#,
        count(value),
        escape(label)
    );
}

fn totals(page: &mut String, summary: &Summary) {
    let t = &summary.totals;
    page.push_str(
        r#"<section class="first" id="totals"><h2>At a glance</h2>
<p class="note">The inventory as its last sweep left it, with expiry counted from the period's end; rotations, reads and audit entries stamped in the period.</p>
<div class="cards">"#,
    );
    let flag = |n: u64, class: &'static str| if n > 0 { class } else { "" };
    card(
        page,
        "",
        t.credentials,
        &format!(
            "credentials ({} in vaults, {} of applications)",
            count(t.vault_objects),
            count(t.directory_credentials)
        ),
    );
    card(page, "", t.vaults, "vaults");
    card(page, "", t.managed, "managed by keyturn");
    card(page, flag(t.unmanaged, "warn"), t.unmanaged, "not managed");
    card(
        page,
        flag(t.expired_enabled, "alert"),
        t.expired,
        &format!("expired ({} still enabled)", count(t.expired_enabled)),
    );
    card(
        page,
        flag(t.expiring_30_days, "warn"),
        t.expiring_30_days,
        "expiring within 30 days",
    );
    card(page, "", t.expiring_60_days, "expiring within 60 days");
    card(
        page,
        flag(t.no_expiry, "warn"),
        t.no_expiry,
        "without an expiry date",
    );
    if summary.compliance_evaluated {
        card(
            page,
            flag(t.findings_open, "alert"),
            t.findings_open,
            "open findings",
        );
        card(
            page,
            "",
            t.findings_excepted,
            "excepted findings (accepted risk)",
        );
    }
    card(page, "", t.rotations_succeeded, "rotations succeeded");
    card(
        page,
        flag(t.rotations_failed, "alert"),
        t.rotations_failed,
        "rotations failed",
    );
    card(page, "", t.reads_granted, "secret reads granted");
    card(
        page,
        flag(t.reads_refused, "warn"),
        t.reads_refused,
        "secret reads refused",
    );
    card(page, "", t.audit_entries, "audit entries in the period");
    page.push_str("</div></section>\n");
}

// ---------------------------------------------------------------------------------------
// Charts

/// The chart's drawing width in SVG units (it scales to the page).
const WIDTH: f64 = 940.0;

/// A step for an axis up to `max` giving at most five lines: 1, 2 or 5 times a power of
/// ten.
fn nice_step(max: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for factor in [1, 2, 5] {
            let candidate = step.saturating_mul(factor);
            if max.div_ceil(candidate) <= 5 {
                return candidate;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// One column of a column chart: its label, a tooltip and stacked segments (CSS class,
/// value) from the bottom.
struct Column {
    label: String,
    title: String,
    segments: Vec<(&'static str, u64)>,
}

/// A column chart: each column a `<g class="bar">` with the series, label and total as
/// data attributes and each segment a `<rect>`.
fn columns(page: &mut String, series: &str, caption: &str, columns: &[Column]) {
    const HEIGHT: f64 = 250.0;
    const LEFT: f64 = 46.0;
    const RIGHT: f64 = 8.0;
    const TOP: f64 = 16.0;
    const BOTTOM: f64 = 34.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let max = columns
        .iter()
        .map(|c| c.segments.iter().map(|(_, v)| v).sum::<u64>())
        .max()
        .unwrap_or(0);
    let step = nice_step(max.max(1));
    let top = max.max(1).div_ceil(step) * step;
    let y = |value: u64| TOP + plot_h - plot_h * value as f64 / top as f64;
    let _ = write!(
        page,
        r#"<svg class="chart" data-chart="{series}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{caption}" xmlns="http://www.w3.org/2000/svg">"#,
        caption = escape(caption)
    );
    let mut tick = 0;
    while tick <= top {
        let at = y(tick);
        let _ = write!(
            page,
            r#"<line class="grid" x1="{LEFT}" x2="{x2}" y1="{at:.1}" y2="{at:.1}"/><text class="muted" x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            x2 = WIDTH - RIGHT,
            tx = LEFT - 6.0,
            ty = at + 4.0,
            label = count(tick)
        );
        tick += step;
    }
    let slot = plot_w / columns.len().max(1) as f64;
    let bar_w = (slot * 0.72).min(56.0);
    // Label every column when they fit, else every n-th.
    let every = (columns.len() as f64 * 58.0 / plot_w).ceil().max(1.0) as usize;
    for (i, column) in columns.iter().enumerate() {
        let total: u64 = column.segments.iter().map(|(_, v)| v).sum();
        let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
        let _ = write!(
            page,
            r#"<g class="bar" data-series="{series}" data-label="{label}" data-value="{total}"><title>{title}</title>"#,
            label = escape(&column.label),
            title = escape(&column.title)
        );
        let mut base = 0u64;
        for (class, value) in &column.segments {
            let y_top = y(base + value);
            let height = y(base) - y_top;
            let _ = write!(
                page,
                r#"<rect class="{class}" data-value="{value}" x="{x:.1}" y="{y_top:.1}" width="{bar_w:.1}" height="{height:.1}" rx="2"/>"#
            );
            base += value;
        }
        if total > 0 && columns.len() <= 30 {
            let _ = write!(
                page,
                r#"<text x="{cx:.1}" y="{ty:.1}" text-anchor="middle">{n}</text>"#,
                cx = x + bar_w / 2.0,
                ty = y(total) - 4.0,
                n = count(total)
            );
        }
        page.push_str("</g>");
        if i.is_multiple_of(every) {
            let _ = write!(
                page,
                r#"<text class="muted" x="{cx:.1}" y="{ly:.1}" text-anchor="middle">{label}</text>"#,
                cx = x + bar_w / 2.0,
                ly = HEIGHT - BOTTOM + 16.0,
                label = escape(&column.label)
            );
        }
    }
    let _ = write!(
        page,
        r#"<line class="axis" x1="{LEFT}" x2="{x2}" y1="{b:.1}" y2="{b:.1}"/></svg>"#,
        x2 = WIDTH - RIGHT,
        b = TOP + plot_h
    );
}

/// One row of a bar chart: a label (and a smaller second line), the segments drawn
/// over a track of `scale`, and the text at the bar's end.
struct Row {
    label: String,
    detail: String,
    segments: Vec<(&'static str, f64)>,
    value: String,
    text: String,
}

/// A horizontal bar chart: each row a `<g class="bar">` with the series, label and
/// value as data attributes.
fn rows(page: &mut String, series: &str, caption: &str, scale: f64, rows: &[Row]) {
    const ROW: f64 = 40.0;
    const LABEL: f64 = 290.0;
    const TEXT: f64 = 250.0;
    let height = ROW * rows.len().max(1) as f64 + 8.0;
    let track = WIDTH - LABEL - TEXT;
    let _ = write!(
        page,
        r#"<svg class="chart" data-chart="{series}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{caption}" xmlns="http://www.w3.org/2000/svg">"#,
        caption = escape(caption)
    );
    for (i, row) in rows.iter().enumerate() {
        let top = 4.0 + ROW * i as f64;
        let _ = write!(
            page,
            r#"<g class="bar" data-series="{series}" data-label="{label}" data-value="{value}"><title>{label}: {text}</title><text x="0" y="{y1:.1}">{label}</text><text class="muted" x="0" y="{y2:.1}">{detail}</text><rect class="s-track" x="{LABEL}" y="{by:.1}" width="{track}" height="18" rx="3"/>"#,
            series = series,
            label = escape(&row.label),
            value = escape(&row.value),
            text = escape(&row.text),
            detail = escape(&row.detail),
            y1 = if row.detail.is_empty() {
                top + 21.5
            } else {
                top + 15.0
            },
            y2 = top + 30.0,
            by = top + 8.0,
        );
        let mut x = LABEL;
        for (class, value) in &row.segments {
            let w = if scale > 0.0 {
                track * value / scale
            } else {
                0.0
            };
            let _ = write!(
                page,
                r#"<rect class="{class}" data-value="{value}" x="{x:.1}" y="{by:.1}" width="{w:.1}" height="18" rx="3"/>"#,
                by = top + 8.0,
            );
            x += w;
        }
        let _ = write!(
            page,
            r#"<text x="{tx:.1}" y="{ty:.1}">{text}</text></g>"#,
            tx = LABEL + track + 10.0,
            ty = top + 21.5,
            text = escape(&row.text)
        );
    }
    page.push_str("</svg>");
}

fn legend(page: &mut String, items: &[(&str, &str)]) {
    page.push_str(r#"<div class="legend">"#);
    for (class, text) in items {
        let _ = write!(
            page,
            r#"<span><i class="{class}"></i>{}</span>"#,
            escape(text)
        );
    }
    page.push_str("</div>");
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "not evaluated".to_owned(), |v| format!("{v:.1} %"))
}

fn scores(page: &mut String, summary: &Summary) {
    page.push_str(r#"<section id="scores"><h2>Scores per framework</h2>"#);
    if !summary.compliance_evaluated {
        page.push_str(
            r#"<p class="empty">Compliance was not evaluated for this package.</p></section>"#,
        );
        return;
    }
    page.push_str(r#"<p class="note">The share of keyturn's checks mapped to each framework that did not fail; excepted checks (accepted risks) count as not failed; where some are excepted, the strict score in brackets counts them as failed. Evidence for an audit, not a certification.</p>"#);
    let list: Vec<Row> = summary
        .frameworks
        .iter()
        .map(|f| Row {
            label: f.name.clone(),
            detail: f.version.clone(),
            segments: vec![("s-score", f.score.unwrap_or(0.0))],
            value: f.score.map_or_else(String::new, |s| format!("{s:.1}")),
            text: match f.score {
                Some(score) if f.strict_score != Some(score) => format!(
                    "{score:.1} % (strict {}) · {} checks",
                    percent(f.strict_score),
                    count(f.checks)
                ),
                Some(score) => format!("{score:.1} % · {} checks", count(f.checks)),
                None => "no check made".to_owned(),
            },
        })
        .collect();
    rows(page, "scores", "Scores per framework", 100.0, &list);
    page.push_str("</section>\n");
}

fn severity_class(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "s-critical",
        Severity::High => "s-high",
        Severity::Medium => "s-medium",
        Severity::Low => "s-low",
    }
}

fn severities(page: &mut String, summary: &Summary) {
    page.push_str(r#"<section id="findings"><h2>Findings by severity</h2>"#);
    if !summary.compliance_evaluated {
        page.push_str(
            r#"<p class="empty">Compliance was not evaluated for this package.</p></section>"#,
        );
        return;
    }
    let _ = write!(
        page,
        r#"<p class="note">{} open and {} excepted findings. An excepted finding is covered by an exception in force; an exception past its expiry counts as open again.</p>"#,
        count(summary.totals.findings_open),
        count(summary.totals.findings_excepted)
    );
    legend(
        page,
        &[
            ("open", "open (colour by severity)"),
            ("excepted", "excepted"),
        ],
    );
    let scale = summary
        .findings_by_severity
        .iter()
        .map(|s| s.open + s.excepted)
        .max()
        .unwrap_or(0) as f64;
    let list: Vec<Row> = summary
        .findings_by_severity
        .iter()
        .map(|s| {
            let mut label = s.severity.as_str().to_owned();
            label[..1].make_ascii_uppercase();
            Row {
                label,
                detail: String::new(),
                segments: vec![
                    (severity_class(s.severity), s.open as f64),
                    ("s-excepted", s.excepted as f64),
                ],
                value: s.open.to_string(),
                text: format!("{} open · {} excepted", count(s.open), count(s.excepted)),
            }
        })
        .collect();
    rows(page, "severity", "Findings by severity", scale, &list);
    page.push_str("</section>\n");
}

fn expiry(page: &mut String, summary: &Summary) {
    let timeline = &summary.expiry;
    page.push_str(r#"<section id="expiry"><h2>Expiry timeline</h2>"#);
    let future: u64 = timeline.months.iter().map(|m| m.count).sum::<u64>() + timeline.later;
    let within_weeks: u64 = timeline.weeks.iter().map(|w| w.count).sum();
    let _ = write!(
        page,
        r#"<p class="note">Credentials by when they expire, from the period's end ({}): already expired, then week by week for a quarter. Later: {} · no expiry date: {}.</p>"#,
        escape(&summary.period().end_text()),
        count(future.saturating_sub(within_weeks)),
        count(timeline.never)
    );
    legend(
        page,
        &[("overdue", "expired"), ("expiring", "expiring that week")],
    );
    let mut list = vec![Column {
        label: "expired".to_owned(),
        title: format!(
            "{} expired by {}",
            count(timeline.overdue),
            summary.period().end_text()
        ),
        segments: vec![("s-overdue", timeline.overdue)],
    }];
    list.extend(timeline.weeks.iter().map(|week| Column {
        label: short_day(week.start),
        title: format!(
            "{} expiring from {} to {}",
            count(week.count),
            day(week.start),
            day(week.end - Duration::days(1))
        ),
        segments: vec![("s-expiring", week.count)],
    }));
    columns(page, "expiry", "Expiry timeline", &list);
    page.push_str("</section>\n");
}

fn rotations(page: &mut String, summary: &Summary) {
    let timeline = &summary.rotations;
    let unit = if timeline.bucket_days == 7 {
        "week".to_owned()
    } else {
        format!("{} weeks", timeline.bucket_days / 7)
    };
    let _ = write!(
        page,
        r#"<section id="rotations"><h2>Rotations per {unit}</h2><p class="note">Rotations finished in the period: secrets stored as a new version and certificates renewed, and rotations that failed for good ({} succeeded, {} failed; every one is a row of <code>populations/rotations.csv</code>). Each bar starts on the day shown.</p>"#,
        count(summary.totals.rotations_succeeded),
        count(summary.totals.rotations_failed)
    );
    legend(page, &[("succeeded", "succeeded"), ("failed", "failed")]);
    let list: Vec<Column> = timeline
        .buckets
        .iter()
        .map(|bucket| Column {
            label: short_day(bucket.start),
            title: format!(
                "{} to {}: {} succeeded, {} failed",
                day(bucket.start),
                day(bucket.end - Duration::seconds(1)),
                count(bucket.succeeded),
                count(bucket.failed)
            ),
            segments: vec![
                ("s-succeeded", bucket.succeeded),
                ("s-failed", bucket.failed),
            ],
        })
        .collect();
    columns(page, "rotations", "Rotations per week", &list);
    page.push_str("</section>\n");
}

fn owners(page: &mut String, summary: &Summary) {
    let _ = write!(
        page,
        r#"<section id="owners"><h2>Owners with the most open findings</h2><p class="note">The {TOP_OWNERS} owners (an application's owners, or a vault object's <code>keyturn-owner</code> tag) whose credentials carry the most open findings.</p>"#
    );
    if !summary.compliance_evaluated {
        page.push_str(
            r#"<p class="empty">Compliance was not evaluated for this package.</p></section>"#,
        );
        return;
    }
    if summary.top_owners.is_empty() {
        page.push_str(r#"<p class="empty">No owner has an open finding.</p></section>"#);
        return;
    }
    let most = summary
        .top_owners
        .iter()
        .map(|o| o.open)
        .max()
        .unwrap_or(1)
        .max(1);
    page.push_str(r#"<table data-chart="owners"><thead><tr><th>Owner</th><th class="num">Open</th><th class="num">Excepted</th><th></th></tr></thead><tbody>"#);
    for owner in &summary.top_owners {
        let width = 100.0 * owner.open as f64 / most as f64;
        let _ = write!(
            page,
            r#"<tr class="bar" data-series="owners" data-label="{name}" data-value="{open}"><td class="owner">{name}</td><td class="num">{open_text}</td><td class="num">{excepted}</td><td class="bar"><svg class="chart" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true" xmlns="http://www.w3.org/2000/svg"><rect class="s-track" x="0" y="0" width="100" height="10" rx="2"/><rect class="s-open" x="0" y="0" width="{width:.1}" height="10" rx="2"/></svg></td></tr>"#,
            name = escape(&owner.owner),
            open = owner.open,
            open_text = count(owner.open),
            excepted = count(owner.excepted),
        );
    }
    page.push_str("</tbody></table></section>\n");
}

fn verification(page: &mut String) {
    page.push_str(
        r#"<section id="verify"><h2>How to verify this package</h2>
<p class="note">Every file of the package, this report included, is listed with its SHA-256 in <code>manifest.json</code>, whose signature (<code>manifest.sig</code>) is made with the audit checkpoint key.</p>
<ol class="steps">
<li>Get the audit checkpoint key's public half from the organisation, not from the package (in Azure: <code>az keyvault key show --id &lt;auditSigningKeyUrl&gt; --query key &gt; key.jwk</code>; locally: <code>audit-signing.pub.jwk</code> beside the store).</li>
<li>Run <code>keyturn evidence verify evidence.zip --public-key key.jwk</code>: it checks the manifest's signature, every file's hash, that no file is missing or added, and the audit extract's hashes, links and signed checkpoints, and names whatever fails.</li>
<li>Without keyturn, <code>README.txt</code> in the package says what is signed and how each hash is computed.</li>
</ol>
</section>
"#,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_no_markup_or_attribute_break_in_text() {
        let hostile = r#"<script>alert('x')</script>"><img src=x onerror=alert(1)>&"#;

        let escaped = escape(hostile);

        assert!(!escaped.contains('<') && !escaped.contains('>'));
        assert!(!escaped.contains('"') && !escaped.contains('\''));
        assert_eq!(escaped.matches("&amp;").count(), 1);
        assert_eq!(escape("Doe, Jane"), "Doe, Jane");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn an_axis_step_gives_at_most_five_lines() {
        for max in [1, 3, 7, 10, 11, 49, 99, 101, 12_345, u64::MAX / 2] {
            let step = nice_step(max);
            assert!(max.div_ceil(step) <= 5, "{max} with step {step}");
        }
        assert_eq!(nice_step(4), 1);
        assert_eq!(nice_step(9), 2);
        assert_eq!(nice_step(23), 5);
    }
}
