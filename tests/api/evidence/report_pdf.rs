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

use keyturn::domain::compliance::Tally;
use keyturn::evidence::pdf::{Figures, FrameworkLine, REPORT, ReportPdf};
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
const SCOPE: &str = "tenant contoso.example: the inventory's vaults and application credentials";

fn figures(source: &str) -> Figures {
    let tally = |checks, failed, excepted| Tally {
        checks,
        passed: checks - failed - excepted,
        failed,
        excepted,
    };
    Figures {
        source: source.to_owned(),
        scope: SCOPE.to_owned(),
        frameworks: vec![
            FrameworkLine {
                name: "PCI DSS".to_owned(),
                version: "4.0.1".to_owned(),
                tally: tally(40, 6, 2),
            },
            FrameworkLine {
                name: "NIST SP 800-53".to_owned(),
                version: "rev. 5".to_owned(),
                tally: tally(52, 1, 0),
            },
            FrameworkLine {
                name: "HIPAA Security Rule".to_owned(),
                version: "45 CFR 164".to_owned(),
                tally: tally(0, 0, 0),
            },
        ],
        severities: vec![
            ("critical".to_owned(), 1),
            ("high".to_owned(), 4),
            ("medium".to_owned(), 2),
            ("low".to_owned(), 0),
        ],
        owners: (0..14)
            .map(|n| match n {
                0 => (LONG_OWNER.to_owned(), 20),
                1 => ("Łukasz Wróbel 東京".to_owned(), 15),
                n => (format!("owner-{n:02}@contoso.example"), 14 - n),
            })
            .collect(),
        not_evaluated: None,
    }
}

#[tokio::test]
async fn the_report_pdf_holds_the_assertion_the_period_and_the_stores_totals() {
    let Some(pdftotext) = pdftotext() else {
        return;
    };
    let mut credentials: Vec<InventoryCredential> = (10..40)
        .map(|n| credential(n, &format!("secret {n}"), Some("Doe, Jane")))
        .collect();
    credentials.push(credential(2, FORMULA_NAME, None));
    let store = store_with(log(), credentials).await;
    let settings = AuditCommandSettings::local(&store.data);
    let env = Environment::from_pairs(std::iter::empty::<(&str, &str)>());
    let sources = startup::evidence_sources(&settings, &[], &env)
        .await
        .expect("the sources open");
    let report = ReportPdf {
        figures: figures(&sources.description),
        generated_at: at("2026-12-06T00:00:00Z"),
    };
    let out = store.out("evidence.zip");
    export(
        sources.sources(),
        &[&report],
        &period("2026-11-01", "2026-11-30"),
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
    let manifest: serde_json::Value =
        serde_json::from_str(&file(&out, "manifest.json")).expect("manifest JSON");
    let rows = |path: &str| {
        manifest["files"]
            .as_array()
            .expect("files")
            .iter()
            .find(|f| f["path"] == path)
            .and_then(|f| f["rows"].as_u64())
            .expect("rows")
    };
    let rotations = population(&out, "populations/rotations.csv").len() as u64;
    assert_eq!(total("Rotations in the period"), rotations);
    assert_eq!(
        total("Audit entries in the extract"),
        rows("audit/entries.jsonl")
    );

    // Page 1: the period, the scope, where read, the scores and the owners.
    let summary = pages[0];
    assert!(
        summary.contains("2026-11-01 to 2026-11-30 inclusive (UTC)"),
        "{summary}"
    );
    assert!(
        summary.contains("from 2026-11-01T00:00:00Z (included) to 2026-12-01T00:00:00Z (excluded)")
    );
    assert!(summary.contains(SCOPE), "{summary}");
    assert!(summary.contains("PCI DSS 4.0.1"), "{summary}");
    assert!(summary.contains("85.0 %"), "{summary}");
    assert!(summary.contains("n/a"), "{summary}");
    assert!(summary.contains("owner-02@contoso.example"));
    // Ten owners listed, the rest counted; tenant text cut, and a script WinAnsi has no
    // glyphs for replaced, never dropping the line.
    assert!(!text.contains("owner-10@contoso.example"), "{text}");
    assert!(text.contains("and 4 more owner(s)"), "{text}");
    assert!(!text.contains(LONG_OWNER));
    assert!(text.contains("Platform Engineering and Site Reliability, Payments"));
    assert!(text.contains('…'));
    assert!(text.contains("?ukasz Wróbel ??"), "{text}");
    assert!(text.contains("keyturn evidence verify"));

    // The assertion page.
    let assertion = pages
        .iter()
        .find(|p| p.contains("Management assertion"))
        .expect("an assertion page");
    let prose = assertion.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(prose.contains("Management asserts that, for the period stated below, the inventory of credentials and vaults and the controls described in this package are complete and accurate"), "{prose}");
    assert!(prose.contains("keyturn gathers evidence and is not a certification"));
    assert!(assertion.contains("2026-11-01 to 2026-11-30 inclusive (UTC)"));
    assert!(assertion.contains(SCOPE));
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

    // No secret value: the report holds names and counts; the store holds no value to
    // leak, and the one value-like text the log holds is not there either.
    assert!(!text.contains("Forbidden"));

    // The report is in the manifest, and a changed byte in it is named.
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
