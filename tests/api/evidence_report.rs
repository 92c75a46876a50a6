//! The package's `report.html` as a reader's browser meets it: opened in headless
//! Chromium (through `tests/browser/open-report.mjs`) with scripts off and every request
//! but the page's own refused and recorded, it makes no request, logs no error, draws
//! the charts with the summary's figures, shows hostile tenant text as text, and prints
//! to a handful of pages. A screenshot is kept in `target/test-artifacts/`
//! (`evidence-report.png`).
//!
//! Needs Chromium and playwright-core: `.ci/test` installs both and sets
//! `KEYTURN_TEST_CHROMIUM` and `KEYTURN_TEST_PLAYWRIGHT_DIR`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::evidence::{credential, export_from, file, log, period, store_with};

const CHROMIUM_VARIABLE: &str = "KEYTURN_TEST_CHROMIUM";
const PLAYWRIGHT_VARIABLE: &str = "KEYTURN_TEST_PLAYWRIGHT_DIR";

/// An owner's name that would run a script, load an image and end the attribute it sits
/// in, were it not escaped.
const HOSTILE_OWNER: &str = r#"Mallory "><img src="http://x.invalid/o.png" onerror="alert(1)"><script>fetch('http://x.invalid/')</script>"#;

fn tool(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: install Chromium and playwright-core via the project's test command (.ci/test)")
    })
}

/// `test-artifacts/` in the target directory (CARGO_TARGET_DIR when set, as `.ci/run`
/// sets it for the clone it tests, which it then removes).
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("the artifacts directory");
    dir
}

/// Opens `report` in headless Chromium; returns what the script saw.
fn open_in_chromium(report: &Path, screenshot: &Path, printed: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/open-report.mjs");
    let output = std::process::Command::new("node")
        .arg(&script)
        .arg(report)
        .arg(screenshot)
        .arg(printed)
        .env("KEYTURN_CHROMIUM", tool(CHROMIUM_VARIABLE))
        .env("KEYTURN_PLAYWRIGHT_DIR", tool(PLAYWRIGHT_VARIABLE))
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "open-report.mjs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// The values of the bars of `series`, in the page's order.
fn bars(seen: &Value, series: &str) -> Vec<String> {
    seen["bars"]
        .as_array()
        .expect("bars")
        .iter()
        .filter(|bar| bar["series"] == series)
        .map(|bar| bar["value"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn numbers(values: impl IntoIterator<Item = u64>) -> Vec<String> {
    values.into_iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn the_report_opens_in_chromium_without_a_request_or_an_error_and_charts_the_summary() {
    let store = store_with(
        log(),
        vec![
            credential(1, "ordinary secret", Some("Doe, Jane")),
            credential(2, "second", Some(HOSTILE_OWNER)),
            credential(3, "third", Some(HOSTILE_OWNER)),
        ],
    )
    .await;
    let out = store.out("evidence.zip");
    export_from(&store, &period("2026-11-01", "2026-11-30"), &out)
        .await
        .expect("exported");
    let html = file(&out, "report.html");
    let summary: Value = serde_json::from_str(&file(&out, "summary.json")).expect("summary");
    let report = store.out("report.html");
    std::fs::write(&report, &html).expect("report written");

    // As written: no script, nothing to fetch, the hostile name only escaped.
    let lower = html.to_ascii_lowercase();
    for fetches in [
        "<script", "<link", "<img", "<iframe", "<object", "url(", "@import",
    ] {
        assert!(!lower.contains(fetches), "the page holds {fetches}");
    }
    // Tenant text is escaped, so every `<` opens one of the page's own tags and every `"`
    // delimits an attribute's value: no tag names a resource or a handler.
    for tag in lower.split('<').skip(1) {
        // The tag without its (escaped) attribute values.
        let tag: String = tag
            .split('>')
            .next()
            .unwrap_or_default()
            .split('"')
            .step_by(2)
            .collect();
        for attribute in [
            " src=",
            " href=",
            " srcset=",
            " action=",
            " onerror=",
            " onload=",
        ] {
            assert!(!tag.contains(attribute), "<{tag}> holds {attribute}");
        }
    }
    assert!(html.contains("Mallory &quot;&gt;&lt;img src=&quot;http://x.invalid/o.png&quot;"));

    let screenshot = artifacts().join("evidence-report.png");
    let printed = store.out("report.pdf");
    let seen = open_in_chromium(&report, &screenshot, &printed);

    let url = seen["url"].as_str().expect("url");
    assert_eq!(
        seen["requests"],
        serde_json::json!([url]),
        "only the page itself is read"
    );
    assert_eq!(seen["console_errors"], serde_json::json!([]));
    assert_eq!(seen["page_errors"], serde_json::json!([]));
    assert_eq!(seen["scripts"], 0);
    assert!(
        seen["title"]
            .as_str()
            .is_some_and(|t| t.contains("2026-11-01 to 2026-11-30")),
        "{}",
        seen["title"]
    );
    // The hostile owner is shown as the text it is.
    assert!(
        seen["text"]
            .as_str()
            .is_some_and(|text| text.contains(HOSTILE_OWNER)),
        "the owner's name is not shown as text"
    );

    let charts: Vec<&str> = seen["charts"]
        .as_array()
        .expect("charts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for chart in ["scores", "severity", "expiry", "rotations"] {
        assert!(charts.contains(&chart), "no {chart} chart in {charts:?}");
    }
    let expiry = &summary["expiry"];
    let weeks = expiry["weeks"].as_array().expect("weeks");
    let mut expected = vec![expiry["overdue"].as_u64().expect("overdue")];
    expected.extend(weeks.iter().map(|w| w["count"].as_u64().expect("count")));
    assert_eq!(bars(&seen, "expiry"), numbers(expected));
    assert_eq!(
        expiry["overdue"], 3,
        "the three credentials expired on 2026-11-20"
    );
    let rotations = summary["rotations"]["buckets"].as_array().expect("buckets");
    assert_eq!(
        bars(&seen, "rotations"),
        numbers(
            rotations.iter().map(|b| {
                b["succeeded"].as_u64().unwrap_or(0) + b["failed"].as_u64().unwrap_or(0)
            })
        )
    );
    assert_eq!(bars(&seen, "rotations"), ["2", "0", "0", "0", "0"]);
    let severities = summary["findings_by_severity"]
        .as_array()
        .expect("severities");
    assert_eq!(
        bars(&seen, "severity"),
        numbers(severities.iter().map(|s| s["open"].as_u64().unwrap_or(0)))
    );
    let frameworks = summary["frameworks"].as_array().expect("frameworks");
    assert_eq!(bars(&seen, "scores").len(), frameworks.len());
    for (bar, framework) in bars(&seen, "scores").iter().zip(frameworks) {
        let score = framework["score"].as_f64().map(|s| format!("{s:.1}"));
        assert_eq!(Some(bar.clone()), score.or(Some(String::new())));
    }
    let owners = summary["top_owners"].as_array().expect("owners");
    assert_eq!(
        bars(&seen, "owners"),
        numbers(owners.iter().map(|o| o["open"].as_u64().unwrap_or(0)))
    );
    // Every bar with a value is drawn.
    for bar in seen["bars"].as_array().expect("bars") {
        if bar["value"]
            .as_str()
            .is_some_and(|v| !v.is_empty() && v != "0")
        {
            assert_eq!(bar["drawn"], true, "{bar}");
        }
    }

    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000);
    // Printed: the header and totals, then one page per section (six).
    let pages = seen["pdf_pages"].as_u64().expect("pages");
    assert!((7..=10).contains(&pages), "{pages} pages printed");
}
