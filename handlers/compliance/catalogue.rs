//! The rule catalogue: what keyturn checks, how severe each failure is, why it matters,
//! how to fix it, and which controls of which frameworks it is evidence for. It is data
//! (`rules.json`, embedded in the binary) so that an auditor can read the mapping without
//! reading code, and a reviewer can change a control id without touching an evaluator.
//!
//! [`Catalogue::parse`] refuses a catalogue that would mislead: two rules with one id, a
//! control that names a framework or a control id the catalogue does not list, a rule
//! without a rationale or a remediation, a condition on a kind the rule does not apply to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::inventory::{CredentialKind, PermissionModel};

/// The catalogue shipped with keyturn.
const BUILTIN: &str = include_str!("rules.json");

/// Why a catalogue was refused. Each variant names the rule or framework at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogueError {
    #[error("the rule catalogue is not valid JSON for its schema: {0}")]
    Syntax(String),
    #[error("rule id `{0}` appears more than once")]
    DuplicateRule(String),
    #[error("framework id `{0}` appears more than once")]
    DuplicateFramework(String),
    #[error("rule `{rule}`: {problem}")]
    Rule { rule: String, problem: String },
    #[error("framework `{framework}`: {problem}")]
    Framework { framework: String, problem: String },
}

/// How bad a failure of a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule is checked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Secret,
    Certificate,
    Key,
    PasswordCredential,
    KeyCredential,
    Vault,
    /// An application (its credentials counted together).
    Application,
    /// The audit log.
    AuditLog,
}

impl Subject {
    /// The subject a credential of `kind` is.
    pub fn of_kind(kind: CredentialKind) -> Self {
        match kind {
            CredentialKind::Secret => Self::Secret,
            CredentialKind::Certificate => Self::Certificate,
            CredentialKind::Key => Self::Key,
            CredentialKind::PasswordCredential => Self::PasswordCredential,
            CredentialKind::KeyCredential => Self::KeyCredential,
        }
    }
}

/// One framework: its name, the version its control ids come from, and the controls the
/// catalogue maps to (id and title).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    pub id: String,
    pub name: String,
    pub version: String,
    pub controls: BTreeMap<String, String>,
}

/// When a control applies to a finding of its rule: only on credentials of these kinds,
/// only in vaults of this permission model. A condition that cannot be decided (the
/// vault's model is unknown) leaves the control out rather than guess.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<Subject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_model: Option<PermissionModel>,
}

/// A control a rule maps to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlMapping {
    pub framework: String,
    pub control: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
}

impl ControlMapping {
    /// Whether the control applies to a subject of `subject`, in a vault of `model`
    /// (`None`: not in a vault, or the vault's model is unknown).
    pub fn applies(&self, subject: Subject, model: Option<PermissionModel>) -> bool {
        let Some(when) = &self.when else {
            return true;
        };
        (when.kinds.is_empty() || when.kinds.contains(&subject))
            && when
                .permission_model
                .is_none_or(|wanted| model == Some(wanted))
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub applies_to: Vec<Subject>,
    pub rationale: String,
    pub remediation: String,
    pub controls: Vec<ControlMapping>,
}

impl Rule {
    pub fn applies_to(&self, subject: Subject) -> bool {
        self.applies_to.contains(&subject)
    }

    /// Whether any of its controls belongs to `framework`.
    pub fn maps_to(&self, framework: &str) -> bool {
        self.controls.iter().any(|c| c.framework == framework)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    catalogue_version: String,
    frameworks: Vec<Framework>,
    rules: Vec<Rule>,
}

/// The validated catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    version: String,
    frameworks: Vec<Framework>,
    rules: Vec<Rule>,
}

impl Catalogue {
    /// The catalogue shipped with keyturn. Validated by a unit test, so this cannot fail
    /// in a build that passed its tests.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN).expect("invariant: the embedded rules.json is validated by its test")
    }

    /// Parses and validates a catalogue.
    pub fn parse(json: &str) -> Result<Self, CatalogueError> {
        let document: Document =
            serde_json::from_str(json).map_err(|e| CatalogueError::Syntax(e.to_string()))?;
        let mut frameworks = BTreeMap::new();
        for framework in &document.frameworks {
            let problem = |problem: &str| CatalogueError::Framework {
                framework: framework.id.clone(),
                problem: problem.to_owned(),
            };
            if !is_id(&framework.id) {
                return Err(problem("an id is lowercase letters, digits and `-`"));
            }
            if framework.name.trim().is_empty() || framework.version.trim().is_empty() {
                return Err(problem("a framework needs a name and a version"));
            }
            if framework.controls.is_empty()
                || framework
                    .controls
                    .iter()
                    .any(|(id, title)| id.trim().is_empty() || title.trim().is_empty())
            {
                return Err(problem("every control needs an id and a title"));
            }
            if frameworks
                .insert(framework.id.as_str(), framework)
                .is_some()
            {
                return Err(CatalogueError::DuplicateFramework(framework.id.clone()));
            }
        }
        let mut seen = BTreeSet::new();
        let mut used: BTreeSet<(&str, &str)> = BTreeSet::new();
        for rule in &document.rules {
            let problem = |problem: String| CatalogueError::Rule {
                rule: rule.id.clone(),
                problem,
            };
            if !is_id(&rule.id) {
                return Err(problem("an id is lowercase letters, digits and `-`".into()));
            }
            if !seen.insert(rule.id.as_str()) {
                return Err(CatalogueError::DuplicateRule(rule.id.clone()));
            }
            for (field, text) in [
                ("title", &rule.title),
                ("rationale", &rule.rationale),
                ("remediation", &rule.remediation),
            ] {
                if text.trim().is_empty() {
                    return Err(problem(format!("its {field} is empty")));
                }
            }
            if rule.applies_to.is_empty() {
                return Err(problem("it applies to nothing".into()));
            }
            if rule.controls.is_empty() {
                return Err(problem("it maps to no control".into()));
            }
            for mapping in &rule.controls {
                let Some(framework) = frameworks.get(mapping.framework.as_str()) else {
                    return Err(problem(format!(
                        "framework `{}` is not in the catalogue",
                        mapping.framework
                    )));
                };
                if !framework.controls.contains_key(&mapping.control) {
                    return Err(problem(format!(
                        "control `{}` is not one of {} {}'s listed controls",
                        mapping.control, framework.name, framework.version
                    )));
                }
                used.insert((framework.id.as_str(), mapping.control.as_str()));
                if let Some(when) = &mapping.when {
                    if when.kinds.is_empty() && when.permission_model.is_none() {
                        return Err(problem(format!(
                            "control `{}` has an empty condition",
                            mapping.control
                        )));
                    }
                    if let Some(kind) = when.kinds.iter().find(|k| !rule.applies_to(**k)) {
                        return Err(problem(format!(
                            "control `{}` is conditioned on {kind:?}, which the rule does not apply to",
                            mapping.control
                        )));
                    }
                }
            }
            let mut pairs = BTreeSet::new();
            for mapping in &rule.controls {
                if !pairs.insert((&mapping.framework, &mapping.control)) {
                    return Err(problem(format!(
                        "control `{}` of `{}` is listed twice",
                        mapping.control, mapping.framework
                    )));
                }
            }
        }
        for framework in &document.frameworks {
            if let Some(unused) = framework
                .controls
                .keys()
                .find(|control| !used.contains(&(framework.id.as_str(), control.as_str())))
            {
                return Err(CatalogueError::Framework {
                    framework: framework.id.clone(),
                    problem: format!("control `{unused}` is listed but no rule maps to it"),
                });
            }
        }
        Ok(Self {
            version: document.catalogue_version,
            frameworks: document.frameworks,
            rules: document.rules,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn frameworks(&self) -> &[Framework] {
        &self.frameworks
    }

    pub fn framework(&self, id: &str) -> Option<&Framework> {
        self.frameworks.iter().find(|f| f.id == id)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

/// Ids are short, lowercase and stable: they are CSV cells, JSON keys and exception
/// references.
fn is_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin_json() -> serde_json::Value {
        serde_json::from_str(BUILTIN).expect("rules.json is JSON")
    }

    fn parse_edited(
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Result<Catalogue, CatalogueError> {
        let mut json = builtin_json();
        edit(&mut json);
        Catalogue::parse(&json.to_string())
    }

    #[test]
    fn the_shipped_catalogue_is_valid() {
        let catalogue = Catalogue::parse(BUILTIN).expect("rules.json validates");
        assert!(catalogue.rules().len() >= 19);
    }

    #[test]
    fn the_catalogue_names_the_six_frameworks_with_their_versions() {
        let catalogue = Catalogue::builtin();
        let named: BTreeMap<&str, &str> = catalogue
            .frameworks()
            .iter()
            .map(|f| (f.id.as_str(), f.version.as_str()))
            .collect();
        assert_eq!(
            named,
            BTreeMap::from([
                ("cis-azure", "2.1.0"),
                ("hipaa", "45 CFR Part 164 Subpart C"),
                ("iso-27001", "2022"),
                ("nist-800-53", "Revision 5"),
                ("pci-dss", "4.0.1"),
                ("soc2", "2017 (revised points of focus, 2022)"),
            ])
        );
    }

    #[test]
    fn every_rule_the_issue_lists_is_in_the_catalogue() {
        let catalogue = Catalogue::builtin();
        for id in [
            "secret-no-expiry",
            "key-no-expiry",
            "credential-no-expiry",
            "credential-expired-enabled",
            "credential-expiring-unmanaged",
            "credential-lifetime-too-long",
            "credential-not-rotated",
            "application-password-credential",
            "application-too-many-credentials",
            "credential-no-owner",
            "certificate-weak-key",
            "certificate-sha1-signature",
            "certificate-no-auto-renew",
            "vault-not-recoverable",
            "vault-public-network-access",
            "vault-access-policy-mode",
            "key-no-rotation-policy",
            "rotation-failed",
            "audit-chain-broken",
        ] {
            assert!(catalogue.rule(id).is_some(), "{id} is missing");
        }
    }

    #[test]
    fn cis_key_vault_controls_follow_the_vaults_permission_model() {
        let catalogue = Catalogue::builtin();
        let cis = |rule: &str, subject, model| -> Vec<String> {
            catalogue
                .rule(rule)
                .expect("rule")
                .controls
                .iter()
                .filter(|c| c.framework == "cis-azure" && c.applies(subject, model))
                .map(|c| c.control.clone())
                .collect()
        };
        let (rbac, policies) = (
            Some(PermissionModel::Rbac),
            Some(PermissionModel::AccessPolicy),
        );
        assert_eq!(cis("secret-no-expiry", Subject::Secret, rbac), ["8.3"]);
        assert_eq!(cis("secret-no-expiry", Subject::Secret, policies), ["8.4"]);
        assert!(cis("secret-no-expiry", Subject::Secret, None).is_empty());
        assert_eq!(cis("key-no-expiry", Subject::Key, rbac), ["8.1"]);
        assert_eq!(cis("key-no-expiry", Subject::Key, policies), ["8.2"]);
    }

    #[test]
    fn a_duplicate_rule_id_is_refused() {
        let result = parse_edited(|json| {
            let rules = json["rules"].as_array_mut().expect("rules");
            let first = rules[0].clone();
            rules.push(first);
        });
        assert_eq!(
            result,
            Err(CatalogueError::DuplicateRule("secret-no-expiry".into()))
        );
    }

    #[test]
    fn a_control_of_an_unknown_framework_or_control_id_is_refused() {
        let unknown_framework = parse_edited(|json| {
            json["rules"][0]["controls"][0]["framework"] = "cis-aws".into();
        });
        let unknown_control = parse_edited(|json| {
            json["rules"][0]["controls"][0]["control"] = "8.99".into();
        });
        assert!(
            matches!(&unknown_framework, Err(CatalogueError::Rule { rule, problem }) if rule == "secret-no-expiry" && problem.contains("cis-aws")),
            "{unknown_framework:?}"
        );
        assert!(
            matches!(&unknown_control, Err(CatalogueError::Rule { problem, .. }) if problem.contains("8.99")),
            "{unknown_control:?}"
        );
    }

    #[test]
    fn an_empty_rationale_or_remediation_is_refused() {
        for field in ["rationale", "remediation", "title"] {
            let result = parse_edited(|json| json["rules"][2][field] = " ".into());
            assert!(
                matches!(&result, Err(CatalogueError::Rule { problem, .. }) if problem.contains(field)),
                "{field}: {result:?}"
            );
        }
    }

    #[test]
    fn a_condition_on_a_kind_the_rule_does_not_cover_is_refused() {
        let result = parse_edited(|json| {
            json["rules"][0]["controls"][2]["when"] = serde_json::json!({ "kinds": ["vault"] });
        });
        assert!(
            matches!(&result, Err(CatalogueError::Rule { problem, .. }) if problem.contains("Vault")),
            "{result:?}"
        );
    }

    #[test]
    fn a_listed_control_no_rule_maps_to_is_refused() {
        let result = parse_edited(|json| {
            json["frameworks"][0]["controls"]["8.9"] = "Something else".into();
        });
        assert!(
            matches!(&result, Err(CatalogueError::Framework { framework, problem }) if framework == "cis-azure" && problem.contains("8.9")),
            "{result:?}"
        );
    }

    #[test]
    fn an_unknown_field_is_refused_rather_than_ignored() {
        let result = parse_edited(|json| json["rules"][0]["sevrity"] = "low".into());
        assert!(
            matches!(result, Err(CatalogueError::Syntax(_))),
            "{result:?}"
        );
    }
}
