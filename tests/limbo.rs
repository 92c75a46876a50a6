//! Runs the x509-limbo conformance suite through the `chain` policy.
//!
//! Every case that applies goes through `ChainPolicy::validate`, built from the case's
//! trusted certificates, intermediates and CRLs, at the case's validation time, and must
//! match the expected result. Cases that do not apply are skipped by the rules in
//! `tests/limbo-skip-rules.md`; known deviations of the policy are listed there by id. The
//! counts in that file are checked against this run, so neither can drift silently.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use keyturn::mtls::certificate::ClientCertificate;
use keyturn::mtls::chain::{
    ChainOptions, ChainPolicy, ExpiredCrl, KeyPurpose, RevocationPolicy, RevocationScope,
    UnknownStatus,
};
use keyturn::mtls::trust::CrlSet;

/// Where the suite lives, relative to the crate (see `tests/fixtures/PROVENANCE.md`).
const LIMBO: &str = "tests/fixtures/x509-limbo/limbo.json";
const RULES: &str = "tests/limbo-skip-rules.md";

#[derive(Deserialize)]
struct Limbo {
    version: u32,
    testcases: Vec<Testcase>,
}

#[derive(Deserialize)]
struct Testcase {
    id: String,
    #[serde(default)]
    conflicts_with: Vec<String>,
    #[serde(default)]
    features: Vec<String>,
    validation_kind: String,
    trusted_certs: Vec<String>,
    untrusted_intermediates: Vec<String>,
    peer_certificate: String,
    validation_time: Option<DateTime<Utc>>,
    signature_algorithms: Vec<String>,
    key_usage: Vec<String>,
    extended_key_usage: Vec<String>,
    expected_result: String,
    max_chain_depth: Option<usize>,
    #[serde(default)]
    crls: Vec<String>,
}

/// One skip rule: a name, and a selector over a case's id, features and fields.
struct Rule {
    name: String,
    selector: String,
}

struct RulesFile {
    rules: Vec<Rule>,
    deviations: BTreeSet<String>,
    counts: BTreeMap<String, usize>,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure(String),
}

#[test]
fn chain_policy_matches_x509_limbo_on_every_case_that_applies() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let limbo_path = manifest.join(LIMBO);
    let limbo: Limbo =
        serde_json::from_slice(&fs::read(&limbo_path).expect("the limbo fixture is readable"))
            .expect("limbo.json follows its schema");
    assert_eq!(limbo.version, 1, "limbo schema version");
    let rules = RulesFile::parse(&fs::read_to_string(manifest.join(RULES)).expect("rules file"));

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut unexpected = Vec::new();
    let mut stale_deviations = Vec::new();
    let now = Utc::now();
    for case in &limbo.testcases {
        *counts.entry("total".to_owned()).or_default() += 1;
        if let Some(rule) = rules.rules.iter().find(|r| r.matches(case)) {
            *counts.entry(format!("skipped:{}", rule.name)).or_default() += 1;
            continue;
        }
        *counts.entry("run".to_owned()).or_default() += 1;
        let outcome = run_case(case, now);
        let matched = matches!(
            (&outcome, case.expected_result.as_str()),
            (Outcome::Success, "SUCCESS") | (Outcome::Failure(_), "FAILURE")
        );
        match (matched, rules.deviations.contains(&case.id)) {
            (true, false) => *counts.entry("passed".to_owned()).or_default() += 1,
            (false, true) => *counts.entry("known_deviations".to_owned()).or_default() += 1,
            (true, true) => stale_deviations.push(case.id.clone()),
            (false, false) => unexpected.push(format!(
                "{}: expected {}, got {:?}",
                case.id, case.expected_result, outcome
            )),
        }
    }

    assert!(
        unexpected.is_empty(),
        "cases that apply and disagree with the suite:\n{}",
        unexpected.join("\n")
    );
    assert!(
        stale_deviations.is_empty(),
        "listed as deviations but now pass; remove them from {RULES}: {stale_deviations:?}"
    );
    let unknown: Vec<_> = rules
        .deviations
        .iter()
        .filter(|id| !limbo.testcases.iter().any(|c| &c.id == *id))
        .collect();
    assert!(unknown.is_empty(), "deviations naming no case: {unknown:?}");
    assert_eq!(
        rules.counts,
        counts,
        "the counts in {RULES} no longer match this run; the run found:\n{}",
        counts
            .iter()
            .map(|(k, v)| format!("| {k} | {v} |"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Builds a chain policy from the case, exactly as keyturn builds one from its
/// configuration, and validates the peer certificate with it.
fn run_case(case: &Testcase, now: DateTime<Utc>) -> Outcome {
    let roots = match pem_certificates(&case.trusted_certs) {
        Ok(roots) => roots,
        Err(e) => return Outcome::Failure(format!("roots: {e}")),
    };
    let intermediates = match pem_certificates(&case.untrusted_intermediates) {
        Ok(intermediates) => intermediates,
        Err(e) => return Outcome::Failure(format!("intermediates: {e}")),
    };
    let crls = match CrlSet::from_bytes(case.crls.concat().as_bytes(), &case.id) {
        _ if case.crls.is_empty() => CrlSet::empty(),
        Ok(crls) => crls,
        Err(e) => return Outcome::Failure(format!("crls: {e}")),
    };

    let mut options = ChainOptions::default();
    options.purpose = purpose(case);
    // The suite's validity cases are exact to the second.
    options.clock_skew = Duration::ZERO;
    options.max_intermediates = case.max_chain_depth;
    options.revocation = if case.crls.is_empty() {
        RevocationPolicy::NotChecked
    } else {
        // The suite supplies only the CRLs a case is about; a certificate no supplied
        // CRL covers (for example the intermediates) is therefore "unknown", and the
        // suite expects that to pass.
        RevocationPolicy::Crl {
            scope: RevocationScope::Chain,
            unknown_status: UnknownStatus::Allow,
            expired_crl: ExpiredCrl::Reject,
        }
    };

    let policy = match ChainPolicy::new(&roots, intermediates, crls, options) {
        Ok(policy) => policy,
        Err(e) => return Outcome::Failure(format!("policy: {e}")),
    };
    let leaf = match CertificateDer::from_pem_slice(case.peer_certificate.as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|der| ClientCertificate::from_der(der.to_vec()).map_err(|e| e.to_string()))
    {
        Ok(leaf) => leaf,
        Err(e) => return Outcome::Failure(format!("leaf: {e}")),
    };
    match policy.validate(&leaf, &[], case.validation_time.unwrap_or(now)) {
        Ok(_) => Outcome::Success,
        Err(rejection) => Outcome::Failure(rejection.reason().to_owned()),
    }
}

/// The EKU the case asks for; when it names none, the one its kind implies.
fn purpose(case: &Testcase) -> KeyPurpose {
    if case.extended_key_usage.iter().any(|e| e == "clientAuth") {
        KeyPurpose::ClientAuth
    } else if case.extended_key_usage.iter().any(|e| e == "serverAuth") {
        KeyPurpose::ServerAuth
    } else if case.validation_kind == "CLIENT" {
        KeyPurpose::ClientAuth
    } else {
        KeyPurpose::ServerAuth
    }
}

fn pem_certificates(pems: &[String]) -> Result<Vec<CertificateDer<'static>>, String> {
    pems.iter()
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string()))
        .collect()
}

impl Rule {
    /// Selectors: `feature=NAME`, `id=ID`, `id^=PREFIX`, `conflicts^=PREFIX` (a listed
    /// conflicting case starts with PREFIX), `kind=KIND`, `key_usage` (the case
    /// constrains the leaf's keyUsage), `eku-other` (the case asks for an EKU other
    /// than serverAuth/clientAuth), `signature_algorithms` (the case constrains them).
    fn matches(&self, case: &Testcase) -> bool {
        let s = self.selector.as_str();
        if let Some(v) = s.strip_prefix("feature=") {
            case.features.iter().any(|f| f == v)
        } else if let Some(v) = s.strip_prefix("id^=") {
            case.id.starts_with(v)
        } else if let Some(v) = s.strip_prefix("id=") {
            case.id == v
        } else if let Some(v) = s.strip_prefix("conflicts^=") {
            case.conflicts_with.iter().any(|c| c.starts_with(v))
        } else if let Some(v) = s.strip_prefix("kind=") {
            case.validation_kind == v
        } else if s == "key_usage" {
            !case.key_usage.is_empty()
        } else if s == "signature_algorithms" {
            !case.signature_algorithms.is_empty()
        } else if s == "eku-other" {
            case.extended_key_usage
                .iter()
                .any(|e| e != "serverAuth" && e != "clientAuth")
        } else {
            panic!("unknown selector {s:?} in {RULES}")
        }
    }
}

impl RulesFile {
    /// Reads the three tables of the rules file: `## Skip rules` (rule | selector |
    /// why), `## Known deviations` (case | why) and `## Counts` (count | value).
    /// A rule may have several selectors separated by ` or `.
    fn parse(text: &str) -> Self {
        let mut section = "";
        let mut rules = Vec::new();
        let mut deviations = BTreeSet::new();
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            if let Some(heading) = line.strip_prefix("## ") {
                section = match heading.trim() {
                    "Skip rules" => "rules",
                    "Known deviations" => "deviations",
                    "Counts" => "counts",
                    _ => "",
                };
                continue;
            }
            let Some(cells) = table_row(line) else {
                continue;
            };
            match (section, cells.as_slice()) {
                ("rules", [name, selectors, ..]) => {
                    for selector in selectors.split(" or ") {
                        rules.push(Rule {
                            name: name.clone(),
                            selector: selector.trim().trim_matches('`').to_owned(),
                        });
                    }
                }
                ("deviations", [id, ..]) => {
                    deviations.insert(id.trim_matches('`').to_owned());
                }
                ("counts", [name, value, ..]) => {
                    let value = value
                        .parse()
                        .unwrap_or_else(|_| panic!("count {name:?} is not a number"));
                    counts.insert(name.trim_matches('`').to_owned(), value);
                }
                _ => {}
            }
        }
        Self {
            rules,
            deviations,
            counts,
        }
    }
}

/// The cells of a markdown table row, or `None` for other lines, the header row and
/// the separator row.
fn table_row(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    let cells: Vec<String> = inner.split('|').map(|c| c.trim().to_owned()).collect();
    let first = cells.first()?;
    if first.starts_with("---") || ["rule", "case", "count"].contains(&first.as_str()) {
        return None;
    }
    Some(cells)
}
