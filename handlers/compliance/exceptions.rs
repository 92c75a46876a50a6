//! The exceptions register: risks someone accepted, each with an owner, a reason and an
//! expiry date. An excepted finding is still a finding: it is printed and counted as
//! excepted, never dropped. An exception past its expiry date no longer applies, so the
//! finding counts against the score again (and the report names the lapsed exception).
//!
//! The register is a JSON file:
//!
//! ```json
//! { "exceptions": [
//!   { "rule": "vault-public-network-access", "subject": "vault:kv-legacy",
//!     "owner": "ada@contoso.com", "reason": "Partner integration until the VPN is live",
//!     "expires": "2027-03-31" } ] }
//! ```
//!
//! `subject` is an inventory record id (64 hex digits, as `keyturn inventory --format
//! json` prints it), `vault:NAME`, `application:APP-ID`, `subscription:ID`, or `*` for
//! every subject of the rule. `expires` is a date (the exception holds through that day,
//! UTC) or an RFC 3339 time. The whole file is read and checked before anything is
//! evaluated: one malformed entry refuses the file, naming the file and the entry, and
//! no entry of it applies.

use std::fmt;
use std::path::Path;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::catalogue::Catalogue;
use crate::domain::file::{CappedReadError, read_capped_text};
use crate::domain::inventory::RecordId;

/// A register far larger than any team keeps by hand: 4 MiB holds about 10,000 entries.
pub const MAX_REGISTER_BYTES: u64 = 4 * 1024 * 1024;

/// Longest owner or reason text: a line or two, not a document.
const MAX_TEXT_CHARS: usize = 500;

/// Tags that declare an exception on the object they are set on (a vault secret, key or
/// certificate), instead of an entry in the register: the rule (several comma-separated),
/// the reason, the owner and the expiry (a date or an RFC 3339 time), all four required.
pub const TAG_RULE: &str = "keyturn-exception-rule";
pub const TAG_REASON: &str = "keyturn-exception-reason";
pub const TAG_OWNER: &str = "keyturn-exception-owner";
pub const TAG_EXPIRES: &str = "keyturn-exception-expires";
const TAGS: [&str; 4] = [TAG_RULE, TAG_REASON, TAG_OWNER, TAG_EXPIRES];

/// The file name `keyturn compliance` looks for in the data directory.
pub const REGISTER_FILE_NAME: &str = "compliance-exceptions.json";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExceptionError {
    #[error("exceptions register {file}: {problem}")]
    File { file: String, problem: String },
    #[error("exceptions register {file}, entry {index}{named}: {problem}")]
    Entry {
        file: String,
        /// 1-based position in the `exceptions` array.
        index: usize,
        /// ` (rule `x`, subject `y`)` when those could be read.
        named: String,
        problem: String,
    },
}

/// Which findings of its rule an exception covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Covers {
    Record(RecordId),
    Vault(String),
    Application(String),
    Subscription(String),
    Every,
}

impl Covers {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::Every);
        }
        let named = |prefix: &str| {
            text.strip_prefix(prefix)
                .map(str::trim)
                .filter(|rest| !rest.is_empty())
                .map(str::to_owned)
        };
        if let Some(vault) = named("vault:") {
            Ok(Self::Vault(vault))
        } else if let Some(app) = named("application:") {
            Ok(Self::Application(app))
        } else if let Some(subscription) = named("subscription:") {
            Ok(Self::Subscription(subscription))
        } else if let Ok(record) = RecordId::parse(text) {
            Ok(Self::Record(record))
        } else {
            Err("`subject` must be a record id (64 hex digits), vault:NAME, application:APP-ID, subscription:ID or *".into())
        }
    }
}

impl fmt::Display for Covers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Record(id) => write!(f, "{id}"),
            Self::Vault(name) => write!(f, "vault:{name}"),
            Self::Application(app) => write!(f, "application:{app}"),
            Self::Subscription(id) => write!(f, "subscription:{id}"),
            Self::Every => f.write_str("*"),
        }
    }
}

/// What a finding is, as far as matching an exception needs.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub rule: &'a str,
    pub record: Option<&'a RecordId>,
    pub vault: Option<&'a str>,
    pub application: Option<&'a str>,
    pub subscription: Option<&'a str>,
}

/// One accepted risk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exception {
    /// 1-based position in the register (`0` for one declared by tags).
    pub entry: usize,
    /// The record whose tags declare it; `None` for a register entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_on: Option<RecordId>,
    pub rule: String,
    #[serde(serialize_with = "as_text")]
    pub subject: Covers,
    pub owner: String,
    pub reason: String,
    /// The first moment it no longer applies.
    pub expires: DateTime<Utc>,
}

fn as_text<S: serde::Serializer>(covers: &Covers, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(covers)
}

impl Exception {
    fn covers(&self, target: &Target<'_>) -> bool {
        if self.rule != target.rule {
            return false;
        }
        let same = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
        match &self.subject {
            Covers::Every => true,
            Covers::Record(id) => target.record == Some(id),
            Covers::Vault(name) => same(target.vault, name),
            Covers::Application(app) => same(target.application, app),
            Covers::Subscription(id) => same(target.subscription, id),
        }
    }

    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        now < self.expires
    }
}

/// What the register says of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// An exception in force covers it.
    Excepted(&'a Exception),
    /// Only lapsed exceptions cover it: it counts again.
    Lapsed(&'a Exception),
    None,
}

/// The register, validated whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Register {
    source: Option<String>,
    entries: Vec<Exception>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    exceptions: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryShape {
    rule: String,
    subject: String,
    owner: String,
    reason: String,
    expires: String,
}

impl Register {
    /// An empty register: nothing is excepted.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads and validates the register at `path`.
    pub fn load(path: &Path, catalogue: &Catalogue) -> Result<Self, ExceptionError> {
        let file = path.display().to_string();
        let text =
            read_capped_text(path, MAX_REGISTER_BYTES).map_err(|e| ExceptionError::File {
                file: file.clone(),
                problem: match e {
                    CappedReadError::TooLarge { cap } => format!("larger than {cap} bytes"),
                    CappedReadError::Io(source) => source.to_string(),
                },
            })?;
        Self::parse(&text, &file, catalogue)
    }

    /// Parses a register's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str, catalogue: &Catalogue) -> Result<Self, ExceptionError> {
        let shape: FileShape = serde_json::from_str(text).map_err(|e| ExceptionError::File {
            file: file.to_owned(),
            problem: format!(
                "expected {{\"exceptions\": [ ... ]}}: {}",
                serde_json::Error::to_string(&e)
            ),
        })?;
        let mut entries = Vec::with_capacity(shape.exceptions.len());
        for (position, value) in shape.exceptions.into_iter().enumerate() {
            let index = position + 1;
            let named = naming(&value);
            let refuse = |problem: String| ExceptionError::Entry {
                file: file.to_owned(),
                index,
                named: named.clone(),
                problem,
            };
            let entry: EntryShape = serde_json::from_value(value).map_err(|e| {
                refuse(format!(
                    "expected rule, subject, owner, reason and expires: {e}"
                ))
            })?;
            if catalogue.rule(&entry.rule).is_none() {
                return Err(refuse(format!(
                    "no rule is called `{}`",
                    short(&entry.rule)
                )));
            }
            let subject = Covers::parse(&entry.subject).map_err(refuse)?;
            for (field, text) in [("owner", &entry.owner), ("reason", &entry.reason)] {
                if text.trim().is_empty() {
                    return Err(refuse(format!(
                        "`{field}` is empty: an exception needs one"
                    )));
                }
                if text.chars().count() > MAX_TEXT_CHARS {
                    return Err(refuse(format!(
                        "`{field}` is longer than {MAX_TEXT_CHARS} characters"
                    )));
                }
            }
            let expires = parse_expiry(&entry.expires).ok_or_else(|| {
                refuse(format!(
                    "`expires` `{}` is not a date (2027-03-31) or an RFC 3339 time",
                    short(&entry.expires)
                ))
            })?;
            entries.push(Exception {
                entry: index,
                declared_on: None,
                rule: entry.rule,
                subject,
                owner: entry.owner.trim().to_owned(),
                reason: entry.reason.trim().to_owned(),
                expires,
            });
        }
        Ok(Self {
            source: Some(file.to_owned()),
            entries,
        })
    }

    /// Where the register was read from (`None`: no register).
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    pub fn entries(&self) -> &[Exception] {
        &self.entries
    }

    /// What the register says of `target` at `now`: an exception in force wins over a
    /// lapsed one; among several in force, the first in the file.
    pub fn verdict(&self, target: &Target<'_>, now: DateTime<Utc>) -> Verdict<'_> {
        verdict_among(&self.entries, target, now)
    }
}

/// What `exceptions` say of `target` at `now`: the first in force wins, else the first
/// lapsed one.
pub fn verdict_among<'a>(
    exceptions: impl IntoIterator<Item = &'a Exception>,
    target: &Target<'_>,
    now: DateTime<Utc>,
) -> Verdict<'a> {
    let mut lapsed = None;
    for exception in exceptions.into_iter().filter(|e| e.covers(target)) {
        if exception.is_active(now) {
            return Verdict::Excepted(exception);
        }
        lapsed.get_or_insert(exception);
    }
    lapsed.map_or(Verdict::None, Verdict::Lapsed)
}

/// The exceptions an object's tags declare for it (tag names compared ignoring case):
/// none when no `keyturn-exception-*` tag is set; an error saying what is wrong when some
/// are set but do not make an exception (a tag missing or empty, an unknown rule, an
/// expiry that is not a date), so a mistyped exception is never silently ignored.
pub fn from_tags(
    tags: &std::collections::BTreeMap<String, String>,
    record: &RecordId,
    catalogue: &Catalogue,
) -> Result<Vec<Exception>, String> {
    let get = |name: &str| {
        tags.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
    };
    if TAGS.iter().all(|tag| get(tag).is_none()) {
        return Ok(Vec::new());
    }
    let required = |name: &str| {
        get(name).filter(|value| !value.is_empty()).ok_or_else(|| {
            format!(
                "the {name} tag is missing or empty: an exception declared by tags needs {TAG_RULE}, {TAG_REASON}, {TAG_OWNER} and {TAG_EXPIRES}"
            )
        })
    };
    let rules = required(TAG_RULE)?;
    let reason = required(TAG_REASON)?;
    let owner = required(TAG_OWNER)?;
    let expires_text = required(TAG_EXPIRES)?;
    let expires = parse_expiry(expires_text).ok_or_else(|| {
        format!(
            "{TAG_EXPIRES} `{}` is not a date (2027-03-31) or an RFC 3339 time",
            short(expires_text)
        )
    })?;
    let mut declared = Vec::new();
    for rule in rules.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if catalogue.rule(rule).is_none() {
            return Err(format!("{TAG_RULE} names no rule called `{}`", short(rule)));
        }
        declared.push(Exception {
            entry: 0,
            declared_on: Some(record.clone()),
            rule: rule.to_owned(),
            subject: Covers::Record(record.clone()),
            owner: short(owner),
            reason: short(reason),
            expires,
        });
    }
    if declared.is_empty() {
        return Err(format!("{TAG_RULE} names no rule"));
    }
    Ok(declared)
}

/// ` (rule `x`, subject `y`)` from whatever of an entry can be read, to name it in an
/// error.
fn naming(value: &serde_json::Value) -> String {
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(short);
    match (field("rule"), field("subject")) {
        (Some(rule), Some(subject)) => format!(" (rule `{rule}`, subject `{subject}`)"),
        (Some(rule), None) => format!(" (rule `{rule}`)"),
        _ => String::new(),
    }
}

/// At most 80 characters of text from the file, without control characters.
fn short(text: &str) -> String {
    text.chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A date holds through its whole day (UTC): the exception lapses at the next midnight.
fn parse_expiry(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date
            .and_hms_opt(0, 0, 0)
            .map(|midnight| midnight.and_utc() + TimeDelta::days(1));
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn register(text: &str) -> Result<Register, ExceptionError> {
        Register::parse(text, "exceptions.json", &Catalogue::builtin())
    }

    fn vault_target(vault: &str) -> Target<'_> {
        Target {
            rule: "vault-public-network-access",
            record: None,
            vault: Some(vault),
            application: None,
            subscription: None,
        }
    }

    const VALID: &str = r#"{ "exceptions": [
        { "rule": "vault-public-network-access", "subject": "vault:kv-legacy",
          "owner": "ada@contoso.com", "reason": "Partner integration until the VPN is live",
          "expires": "2027-03-31" } ] }"#;

    #[test]
    fn a_valid_exception_covers_its_subject_through_its_expiry_day() {
        let register = register(VALID).expect("valid");

        let before = register.verdict(&vault_target("KV-Legacy"), at("2027-03-31T23:59:59Z"));
        let after = register.verdict(&vault_target("kv-legacy"), at("2027-04-01T00:00:00Z"));
        let other = register.verdict(&vault_target("kv-prod"), at("2027-01-01T00:00:00Z"));

        assert!(matches!(before, Verdict::Excepted(e) if e.owner == "ada@contoso.com"));
        assert!(matches!(after, Verdict::Lapsed(e) if e.entry == 1));
        assert_eq!(other, Verdict::None);
    }

    #[test]
    fn an_exception_in_force_wins_over_a_lapsed_one() {
        let register = register(
            r#"{ "exceptions": [
            { "rule": "vault-public-network-access", "subject": "*", "owner": "a",
              "reason": "old", "expires": "2020-01-01" },
            { "rule": "vault-public-network-access", "subject": "vault:kv-legacy",
              "owner": "b", "reason": "new", "expires": "2030-01-01T00:00:00Z" } ] }"#,
        )
        .expect("valid");

        let verdict = register.verdict(&vault_target("kv-legacy"), at("2026-01-01T00:00:00Z"));

        assert!(
            matches!(verdict, Verdict::Excepted(e) if e.entry == 2),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_malformed_entry_refuses_the_file_naming_the_file_and_the_entry() {
        let cases = [
            (
                r#"{"rule": "no-such-rule", "subject": "*", "owner": "a", "reason": "r", "expires": "2030-01-01"}"#,
                "no-such-rule",
            ),
            (
                r#"{"rule": "rotation-failed", "subject": "vault:", "owner": "a", "reason": "r", "expires": "2030-01-01"}"#,
                "subject",
            ),
            (
                r#"{"rule": "rotation-failed", "subject": "*", "owner": " ", "reason": "r", "expires": "2030-01-01"}"#,
                "owner",
            ),
            (
                r#"{"rule": "rotation-failed", "subject": "*", "owner": "a", "reason": "r", "expires": "next year"}"#,
                "expires",
            ),
            (
                r#"{"rule": "rotation-failed", "subject": "*", "owner": "a", "reason": "r"}"#,
                "expires",
            ),
            (
                r#"{"rule": "rotation-failed", "subject": "*", "owner": "a", "reason": "r", "expires": "2030-01-01", "approved": true}"#,
                "approved",
            ),
        ];
        for (entry, named) in cases {
            let text = format!(
                r#"{{ "exceptions": [ {{ "rule": "rotation-failed", "subject": "*", "owner": "a", "reason": "fine", "expires": "2030-01-01" }}, {entry} ] }}"#
            );
            let error = register(&text).expect_err(entry);
            let message = error.to_string();
            assert!(
                matches!(&error, ExceptionError::Entry { index: 2, file, .. } if file == "exceptions.json"),
                "{message}"
            );
            assert!(message.contains(named), "{message}");
        }
    }

    #[test]
    fn a_file_that_is_not_a_register_is_refused_naming_it() {
        for text in ["", "[]", r#"{"exception": []}"#, "{ not json"] {
            let error = register(text).expect_err(text);
            assert!(
                matches!(&error, ExceptionError::File { file, .. } if file == "exceptions.json"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_record_id_subject_covers_only_that_record() {
        let id = RecordId::parse(&"a".repeat(64)).expect("id");
        let other = RecordId::parse(&"b".repeat(64)).expect("id");
        let register = register(&format!(
            r#"{{ "exceptions": [ {{ "rule": "secret-no-expiry", "subject": "{id}", "owner": "a", "reason": "r", "expires": "2030-01-01" }} ] }}"#
        ))
        .expect("valid");
        let target = |record| Target {
            rule: "secret-no-expiry",
            record: Some(record),
            vault: Some("kv"),
            application: None,
            subscription: None,
        };
        let now = at("2026-01-01T00:00:00Z");

        assert!(matches!(
            register.verdict(&target(&id), now),
            Verdict::Excepted(_)
        ));
        assert_eq!(register.verdict(&target(&other), now), Verdict::None);
    }
}
