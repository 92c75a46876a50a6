//! report.pdf read as an auditor reads it, through poppler's `pdftotext`: the management
//! assertion with the period, the scope and the lines to sign, the totals equal to what
//! the store holds, every word inside the page's margins, tenant text cut rather than
//! spilled, and the file covered by the signed manifest like any other.
//!
//! `pdftotext` comes from poppler-utils (`.ci/test` installs it and names it in
//! KEYTURN_TEST_PDFTOTEXT). Without it the test says so and skips, except in CI, where it
//! fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use futures::TryStreamExt;

use keyturn::evidence::pdf::REPORT;
use keyturn::ports::inventory::{credential_stream, vault_stream};

use super::*;

/// `pdftotext`, or `None` outside CI when it is not installed.
fn pdftotext() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KEYTURN_TEST_PDFTOTEXT") {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pdftotext"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "pdftotext (poppler-utils) is missing: .ci/test installs it"
        );
        eprintln!("skipped: pdftotext (poppler-utils) is not installed");
    }
    found
}

fn run(tool: &Path, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .expect("the tool runs");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 text")
}

const LONG_OWNER: &str = "Platform Engineering and Site Reliability, Payments Division, Europe, Middle East and Africa region (primary on-call rota)";
const NON_LATIN_OWNER: &str = "Łukasz Wróbel 東京";

#[tokio::test]
async fn the_report_pdf_holds_the_assertion_the_period_and_the_stores_totals() {
    let Some(pdftotext) = pdftotext() else {
        return;
    };
    // Credentials expired by the period's end (findings for compliance) under a long
    // owner name, a name in scripts WinAnsi cannot show, and more owners than the report
    // lists.
    let mut credentials: Vec<InventoryCredential> = (10..40)
        .map(|n| {
            let owner = match n {
                10..14 => LONG_OWNER.to_owned(),
                14..17 => NON_LATIN_OWNER.to_owned(),
                n => format!("owner-{:02}@contoso.example", n % 12),
            };
            credential(n, &format!("secret {n}"), Some(&owner))
        })
        .collect();
    credentials.push(credential(2, FORMULA_NAME, None));
    let store = store_with(log(), credentials).await;
    let settings = AuditCommandSettings::local(&store.data);
    let env = Environment::from_pairs(std::iter::empty::<(&str, &str)>());
    let sources = startup::evidence_sources(&settings, &[], None, &env)
        .await
        .expect("the sources open");
    let out = store.out("evidence.zip");
    let november = period("2026-11-01", "2026-11-30");
    export(
        sources.sources(),
        &november,
        &out,
        at("2026-12-06T00:00:00Z"),
    )
    .await
    .expect("exported");

    // The store's own counts.
    let inventory = sources.inventory.as_ref();
    let credentials: Vec<_> = credential_stream(inventory, CredentialFilter::default(), 100)
        .try_collect()
        .await
        .expect("credentials");
    let vaults: Vec<_> = vault_stream(inventory, 100)
        .try_collect()
        .await
        .expect("vaults");
    assert_eq!(credentials.len(), 31);

    let (_, pdf) = files(&out)
        .into_iter()
        .find(|(name, _)| name == REPORT)
        .expect("report.pdf is in the package");
    assert!(pdf.starts_with(b"%PDF-"));
    let pdf_path = store.out("report.pdf");
    std::fs::write(&pdf_path, &pdf).expect("written");
    // Kept where a reader can open it after the run.
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/evidence-report");
    if std::fs::create_dir_all(&kept).is_ok() {
        let _ = std::fs::write(kept.join("report.pdf"), &pdf);
    }
    let text = run(
        &pdftotext,
        &["-layout", pdf_path.to_str().expect("path"), "-"],
    );
    let pages: Vec<&str> = text
        .split('\u{c}')
        .filter(|p| !p.trim().is_empty())
        .collect();
    assert!(pages.len() >= 2, "{text}");

    // The totals, each on its line beside its label, equal to the store's counts.
    let total = |label: &str| -> u64 {
        let line = text
            .lines()
            .find(|line| line.contains(label))
            .unwrap_or_else(|| panic!("no `{label}` in:\n{text}"));
        let after = &line[line.find(label).expect("label") + label.len()..];
        after
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number after `{label}`: {line}"))
    };
    assert_eq!(
        total("Credentials in the inventory"),
        credentials.len() as u64
    );
    assert_eq!(total("Vaults"), vaults.len() as u64);
    let expired = credentials
        .iter()
        .filter(|c| c.expires.is_some_and(|e| e < november.to))
        .count() as u64;
    assert!(expired > 0);
    assert_eq!(total("Expired at the period's end"), expired);
    let rotations = population(&out, "populations/rotations.csv");
    let result = |r: &str| rotations.iter().filter(|row| row["result"] == r).count() as u64;
    assert_eq!(total("Rotations that succeeded"), result("rotated"));
    assert_eq!(total("Rotations that failed"), result("failed"));
    let reads = population(&out, "populations/secret-reads.csv");
    let sum = |column: &str| -> u64 {
        reads
            .iter()
            .map(|row| row[column].parse::<u64>().expect("a count"))
            .sum()
    };
    assert_eq!(total("Secret reads granted"), sum("granted"));
    assert_eq!(total("Secret reads refused"), sum("refused"));
    let in_period = log()
        .iter()
        .filter(|entry| november.contains(at(entry.at)))
        .count() as u64;
    assert_eq!(total("Audit entries in the period"), in_period);

    // Page 1: the period, the scope, where read, the scores and the owners.
    let summary = pages[0];
    assert!(
        summary.contains("2026-11-01 to 2026-11-30 (UTC, both days included)"),
        "{summary}"
    );
    assert!(
        summary.contains("from 2026-11-01T00:00:00Z (included) to 2026-12-01T00:00:00Z (excluded)")
    );
    let scope = format!("{} vaults and", vaults.len());
    assert!(vaults.is_empty() || vaults.len() > 1);
    assert!(summary.contains(&scope), "{summary}");
    assert!(summary.contains(&sources.description), "{summary}");
    assert!(summary.contains("PCI DSS"), "{summary}");
    assert!(summary.contains(" %"), "{summary}");
    assert!(summary.contains("@contoso.example"), "{summary}");
    // Ten owners listed; tenant text cut, and a script WinAnsi has no glyphs for
    // replaced, never dropping the line.
    assert!(!text.contains(LONG_OWNER));
    assert!(text.contains("Platform Engineering and Site"), "{text}");
    assert!(text.contains('…'));
    assert!(text.contains("?ukasz Wróbel ??"), "{text}");
    assert!(text.contains("keyturn evidence verify"));

    // The assertion page.
    let assertion = pages
        .iter()
        .find(|p| p.contains("Management assertion"))
        .expect("an assertion page");
    let prose = assertion.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        prose.contains("Management asserts that, for the period stated below, the inventory of credentials and vaults and the controls described in this package are complete and accurate"),
        "{prose}"
    );
    assert!(prose.contains("keyturn gathers evidence and is not a certification"));
    assert!(assertion.contains("2026-11-01 to 2026-11-30 (UTC, both days included)"));
    assert!(assertion.contains(&scope));
    for n in ["Signatory 1", "Signatory 2"] {
        assert!(assertion.contains(n), "{assertion}");
    }
    for label in ["Name", "Title", "Signature", "Date"] {
        let lines = assertion
            .lines()
            .filter(|line| line.trim() == label)
            .count();
        assert_eq!(lines, 2, "two `{label}` lines:\n{assertion}");
    }

    // Every word inside the page's margins (pdftotext's boxes: points from the top left).
    let boxes = run(
        &pdftotext,
        &["-bbox", pdf_path.to_str().expect("path"), "-"],
    );
    let mut words = 0;
    for word in boxes
        .lines()
        .filter(|l| l.trim_start().starts_with("<word "))
    {
        let attr = |name: &str| -> f64 {
            let at = word.find(&format!("{name}=\"")).expect("attribute") + name.len() + 2;
            word[at..at + word[at..].find('"').expect("quote")]
                .parse()
                .expect("a number")
        };
        assert!(attr("xMin") >= 53.0 && attr("xMax") <= 542.5, "{word}");
        assert!(
            attr("yMin") >= 50.0 && attr("yMax") <= 842.0 - 20.0,
            "{word}"
        );
        words += 1;
    }
    assert!(words > 200, "{words} words");

    // Names and counts only: the failed rotation's detail is in the populations, not here.
    assert!(!text.contains("Forbidden"));

    // The report is in the manifest, and a changed byte in it is named.
    let manifest: serde_json::Value =
        serde_json::from_str(&file(&out, "manifest.json")).expect("manifest JSON");
    assert!(
        manifest["files"]
            .as_array()
            .expect("files")
            .iter()
            .any(|f| f["path"] == REPORT)
    );
    let key = key_of(&store);
    assert!(verified(&out, &key).intact);
    let tampered = store.out("tampered.zip");
    let mut all = files(&out);
    let (_, bytes) = all.iter_mut().find(|(n, _)| n == REPORT).expect("report");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    write_zip(&tampered, &all);
    let report = verified(&tampered, &key);
    assert!(!report.intact);
    assert!(
        report.problems.iter().any(|p| p.contains(REPORT)),
        "{:?}",
        report.problems
    );
}
