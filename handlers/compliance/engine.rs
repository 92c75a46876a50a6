//! The engine: reads the inventory a page at a time (vaults first, then credentials) and
//! the audit log a window at a time, runs every rule of the catalogue on every subject it
//! applies to, hands each finding to a sink as soon as it is made, and counts every check
//! on the scoreboard.
//!
//! Memory holds one page of records, the vaults' permission models (so a secret's CIS
//! control can follow its vault's mode) and a count per control and rule. What grows
//! with the tenant (one small count per application for the credential-count rule, each
//! application's name, the tallies per scope) is held in memory up to
//! [`Evaluation::spill_after`] entries and spilled past it into a temporary file
//! ([`super::spill`]); never with the number of credentials or audit entries.
//!
//! Each rule's logic lives here, keyed by the rule's id; everything else about a rule
//! (severity, controls, texts) comes from the catalogue. A test checks that the two name
//! the same rules.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use serde::Serialize;

use super::catalogue::{Catalogue, Rule, Severity, Subject};
use super::exceptions::{self, Exception, Register, Target, Verdict};
use super::scores::{CheckResult, ScopeKind, Scoreboard};
use super::spill::{ApplicationFacts, Applications, SpillError};
use super::thresholds::Thresholds;
use crate::audit::{Action, LogReport};
use crate::domain::inventory::{
    CredentialFilter, CredentialKind, CredentialSource, InventoryCredential, InventoryVault,
    PermissionModel, RecordId,
};
use crate::ports::PortError;
use crate::ports::audit::{AuditEntry, AuditStore};
use crate::ports::inventory::{InventoryStore, credential_stream, vault_stream};

/// Records read per request: Table storage's largest page.
const PAGE_SIZE: u32 = 1000;

/// Audit positions read per request: under Table storage's 1000-entity page, as the
/// audit export reads.
const AUDIT_WINDOW: u32 = 500;

/// Longest text of a finding's detail: one sentence, as inventory findings.
const MAX_DETAIL_CHARS: usize = 400;

/// Every rule this engine implements, by id. The catalogue must name exactly these.
pub const IMPLEMENTED: [&str; 19] = [
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
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComplianceError {
    #[error("unknown framework `{given}`: one of {known}")]
    UnknownFramework { given: String, known: String },
    #[error("cannot read the inventory: {0}")]
    Inventory(PortError),
    #[error("cannot read the audit log while {operation}: {source}")]
    Audit {
        operation: &'static str,
        source: PortError,
    },
    #[error("cannot write the findings: {0}")]
    Output(#[from] io::Error),
    #[error(transparent)]
    Spill(#[from] SpillError),
}

/// A control a finding is evidence for, with its framework's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlRef {
    pub framework: String,
    pub version: String,
    pub control: String,
}

/// Where a finding sits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FindingScope {
    pub subscription: Option<String>,
    pub vault: Option<String>,
    pub application: Option<ApplicationRef>,
    /// The `keyturn-owner` tag, then each owner's UPN, mail or display name.
    pub owners: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplicationRef {
    pub app_id: String,
    pub name: String,
}

impl ApplicationRef {
    fn label(&self) -> String {
        format!("{} ({})", self.name, self.app_id)
    }
}

/// Whether a finding counts against the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    /// Covered by an exception in force: shown and counted as excepted.
    Excepted,
}

/// The exception a finding matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionRef {
    /// 1-based entry in the register (`0`: declared by the object's tags).
    pub entry: usize,
    /// The record whose tags declare it; `None` for a register entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_on: Option<RecordId>,
    pub owner: String,
    pub reason: String,
    pub expires: DateTime<Utc>,
    /// The exception's expiry has passed: it no longer applies and the finding is open.
    pub lapsed: bool,
}

impl ExceptionRef {
    fn of(exception: &Exception, lapsed: bool) -> Self {
        Self {
            entry: exception.entry,
            declared_on: exception.declared_on.clone(),
            owner: exception.owner.clone(),
            reason: exception.reason.clone(),
            expires: exception.expires,
            lapsed,
        }
    }
}

/// One failed check. Its fields are the columns of a findings CSV and the rows of a
/// control matrix: a stable rule id, the subject's inventory record id, its scope,
/// severity and controls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub status: Status,
    pub subject_kind: Subject,
    /// The inventory record checked (`None` for audit-log findings).
    pub record_id: Option<RecordId>,
    pub name: String,
    pub scope: FindingScope,
    pub detail: String,
    pub controls: Vec<ControlRef>,
    pub exception: Option<ExceptionRef>,
}

/// Receives each finding as it is made.
pub trait FindingSink {
    fn finding(&mut self, finding: &Finding) -> io::Result<()>;

    /// Whether this sink takes what objects' `keyturn-exception-*` tags make through
    /// [`tags`](Self::tags), as each object is evaluated. One that does keeps the report
    /// from collecting them ([`Report::tag_exceptions`],
    /// [`Report::malformed_exception_tags`], and lapsed tag exceptions in
    /// [`Report::lapsed_exceptions`]), so memory does not grow with the tenant.
    fn takes_tags(&self) -> bool {
        false
    }

    /// What one object's exception tags make, before that object's findings (which are
    /// the only ones its exceptions can cover). Called only when
    /// [`takes_tags`](Self::takes_tags), and only for objects with such tags.
    fn tags(&mut self, made: TagExceptions<'_>) -> io::Result<()> {
        let _ = made;
        Ok(())
    }
}

/// What an object's `keyturn-exception-*` tags make.
#[derive(Debug, Clone, Copy)]
pub enum TagExceptions<'a> {
    /// The exceptions they declare (one per rule named).
    Declared(&'a [Exception]),
    /// Why they make none: the object's findings stay open.
    Malformed(&'a MalformedTags),
}

impl<F: FnMut(&Finding) -> io::Result<()>> FindingSink for F {
    fn finding(&mut self, finding: &Finding) -> io::Result<()> {
        self(finding)
    }
}

/// The audit log as the audit rules read it: the store, and `verify_log`'s verdict on it
/// (or why it could not be verified).
pub struct AuditInput<'a> {
    pub store: &'a dyn AuditStore,
    pub verification: Result<LogReport, String>,
}

/// A rule that made no check, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotEvaluated {
    pub rule: String,
    pub reason: String,
}

/// What an evaluation counted.
#[derive(Debug, Serialize)]
pub struct Report {
    pub evaluated_at: DateTime<Utc>,
    pub catalogue_version: String,
    /// The framework the evaluation was limited to, if any.
    pub framework: Option<String>,
    pub thresholds: Thresholds,
    #[serde(skip)]
    pub board: Scoreboard,
    pub open: u64,
    pub excepted: u64,
    pub by_severity: BTreeMap<Severity, u64>,
    pub not_evaluated: Vec<NotEvaluated>,
    /// Exceptions that matched a finding after their expiry date (the register's only,
    /// when the sink takes tags).
    pub lapsed_exceptions: Vec<Exception>,
    /// Where the exceptions were read from.
    pub exceptions_register: Option<String>,
    /// Exceptions declared by objects' tags (`keyturn-exception-*`), each once; empty
    /// when the sink takes tags ([`FindingSink::takes_tags`]).
    pub tag_exceptions: Vec<Exception>,
    /// Objects whose `keyturn-exception-*` tags do not make an exception: their findings
    /// stay open, and each is named here (or given to a sink that takes tags).
    pub malformed_exception_tags: Vec<MalformedTags>,
}

/// An object whose exception tags were refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MalformedTags {
    pub record_id: RecordId,
    pub name: String,
    /// The vault or application holding it.
    pub source: String,
    pub problem: String,
}

/// One evaluation's inputs besides the stores.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation<'a> {
    pub catalogue: &'a Catalogue,
    pub thresholds: &'a Thresholds,
    pub register: &'a Register,
    /// Only rules mapped to this framework, and only its controls.
    pub framework: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// How many per-scope tallies, and how many applications' facts and names, are held
    /// in memory before they go to a temporary file: [`super::SPILL_AFTER`], unless a
    /// test makes it small.
    pub spill_after: usize,
}

impl<'a> Evaluation<'a> {
    /// Checks that `framework` is one of the catalogue's.
    pub fn framework_id(catalogue: &Catalogue, given: &str) -> Result<String, ComplianceError> {
        catalogue
            .framework(given)
            .map(|f| f.id.clone())
            .ok_or_else(|| ComplianceError::UnknownFramework {
                given: given.chars().take(64).collect(),
                known: catalogue
                    .frameworks()
                    .iter()
                    .map(|f| f.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Runs every rule over `inventory` and, when given, the audit log; each finding goes
    /// to `sink` as it is made.
    pub async fn run(
        &self,
        inventory: &dyn InventoryStore,
        audit: Option<AuditInput<'_>>,
        sink: &mut dyn FindingSink,
    ) -> Result<Report, ComplianceError> {
        if let Some(framework) = self.framework {
            Self::framework_id(self.catalogue, framework)?;
        }
        let mut run = Run {
            evaluation: *self,
            sink,
            report: Report {
                evaluated_at: self.now,
                catalogue_version: self.catalogue.version().to_owned(),
                framework: self.framework.map(str::to_owned),
                thresholds: self.thresholds.clone(),
                board: Scoreboard::new(self.spill_after),
                open: 0,
                excepted: 0,
                by_severity: BTreeMap::new(),
                not_evaluated: Vec::new(),
                lapsed_exceptions: Vec::new(),
                exceptions_register: self.register.source().map(str::to_owned),
                tag_exceptions: Vec::new(),
                malformed_exception_tags: Vec::new(),
            },
            tagged: Vec::new(),
            lapsed: BTreeSet::new(),
            applications: Applications::new(self.spill_after),
        };

        let mut vaults: BTreeMap<String, VaultFacts> = BTreeMap::new();
        let mut stream = vault_stream(inventory, PAGE_SIZE);
        while let Some(vault) = stream.next().await {
            let vault = vault.map_err(ComplianceError::Inventory)?;
            run.vault(&vault)?;
            vaults.insert(
                vault.uri.to_string(),
                VaultFacts {
                    model: vault.permission_model,
                },
            );
        }
        drop(stream);

        let mut stream = credential_stream(inventory, CredentialFilter::default(), PAGE_SIZE);
        while let Some(credential) = stream.next().await {
            let credential = credential.map_err(ComplianceError::Inventory)?;
            let model = match &credential.source {
                CredentialSource::Vault { uri, .. } => {
                    vaults.get(&uri.to_string()).map(|facts| facts.model)
                }
                _ => None,
            };
            run.credential(&credential, model)?;
            if let CredentialSource::Application { app_id, .. }
            | CredentialSource::ServicePrincipal { app_id, .. } = &credential.source
            {
                run.applications
                    .name(&app_id.to_string(), || credential.source.label())?;
            }
            if let CredentialSource::Application { app_id, .. } = &credential.source {
                run.applications.credential(
                    credential.source.key(),
                    is_active(&credential, self.now),
                    || ApplicationFacts {
                        app_id: app_id.to_string(),
                        name: credential.source.label(),
                        owners: owners_of(&credential),
                        active: 0,
                    },
                )?;
            }
        }
        drop(stream);
        // The names stay for the audit rules; the facts are handed over in record order.
        let mut applications = std::mem::replace(&mut run.applications, Applications::new(1));
        applications.drain(|record, facts| run.application(record, facts))?;
        run.applications = applications;

        match audit {
            Some(audit) => run.audit(audit).await?,
            None => {
                for rule in ["rotation-failed", "audit-chain-broken"] {
                    run.not_evaluated(rule, "no audit log was read");
                }
            }
        }
        Ok(run.finish())
    }
}

#[derive(Debug, Clone, Copy)]
struct VaultFacts {
    model: PermissionModel,
}

/// What a check is about.
struct Checked {
    subject: Subject,
    record: Option<RecordId>,
    name: String,
    scope: FindingScope,
    model: Option<PermissionModel>,
}

/// A rule's verdict on one subject.
enum Check {
    /// The rule cannot judge this subject (a field it needs is unknown): no check.
    Skip,
    Pass,
    Fail(String),
}

struct Run<'e, 's> {
    evaluation: Evaluation<'e>,
    sink: &'s mut dyn FindingSink,
    report: Report,
    lapsed: BTreeSet<(usize, Option<RecordId>, String)>,
    /// The exceptions the tags of the credential being checked declare.
    tagged: Vec<Exception>,
    /// Application names by app id, so that an audit entry (which names the app id only)
    /// counts under the same application scope as the inventory's records, and the facts
    /// of the credential-count rule per application registration.
    applications: Applications,
}

impl Run<'_, '_> {
    fn finish(mut self) -> Report {
        for rule in self.evaluation.catalogue.rules() {
            if self.selected(rule)
                && !self.report.board.rules.contains_key(&rule.id)
                && !self.report.not_evaluated.iter().any(|n| n.rule == rule.id)
            {
                self.report.not_evaluated.push(NotEvaluated {
                    rule: rule.id.clone(),
                    reason: "nothing in the inventory or the period it applies to".into(),
                });
            }
        }
        self.report
    }

    fn selected(&self, rule: &Rule) -> bool {
        self.evaluation
            .framework
            .is_none_or(|framework| rule.maps_to(framework))
    }

    fn not_evaluated(&mut self, rule: &str, reason: &str) {
        let known = self.evaluation.catalogue.rule(rule);
        if known.is_some_and(|rule| self.selected(rule)) {
            self.report.not_evaluated.push(NotEvaluated {
                rule: rule.to_owned(),
                reason: reason.to_owned(),
            });
        }
    }

    /// Records one check of `rule_id` on `checked`.
    fn check(
        &mut self,
        rule_id: &str,
        checked: &Checked,
        check: Check,
    ) -> Result<(), ComplianceError> {
        let catalogue = self.evaluation.catalogue;
        let Some(rule) = catalogue.rule(rule_id) else {
            return Ok(());
        };
        if !self.selected(rule) || !rule.applies_to(checked.subject) {
            return Ok(());
        }
        let detail = match check {
            Check::Skip => return Ok(()),
            Check::Pass => None,
            Check::Fail(detail) => Some(detail),
        };
        let controls: Vec<ControlRef> = rule
            .controls
            .iter()
            .filter(|c| c.applies(checked.subject, checked.model))
            .filter(|c| self.evaluation.framework.is_none_or(|f| c.framework == f))
            .filter_map(|c| {
                catalogue
                    .framework(&c.framework)
                    .map(|framework| ControlRef {
                        framework: framework.id.clone(),
                        version: framework.version.clone(),
                        control: c.control.clone(),
                    })
            })
            .collect();
        if controls.is_empty() {
            // Evidence for none of the frameworks asked about (a CIS-only run on a secret
            // whose vault's mode is unknown): not a check of this run.
            return Ok(());
        }
        let (result, finding) = match detail {
            None => (CheckResult::Passed, None),
            Some(detail) => {
                let target = Target {
                    rule: &rule.id,
                    record: checked.record.as_ref(),
                    vault: checked.scope.vault.as_deref(),
                    application: checked
                        .scope
                        .application
                        .as_ref()
                        .map(|a| a.app_id.as_str()),
                    subscription: checked.scope.subscription.as_deref(),
                };
                let verdict = exceptions::verdict_among(
                    self.tagged.iter().chain(self.evaluation.register.entries()),
                    &target,
                    self.evaluation.now,
                );
                let (result, status, exception) = match verdict {
                    Verdict::Excepted(e) => (
                        CheckResult::Excepted,
                        Status::Excepted,
                        Some(ExceptionRef::of(e, false)),
                    ),
                    Verdict::Lapsed(e) => {
                        // A sink taking tags sees a lapsed tag exception in the
                        // findings it covers; the register's are bounded by its file.
                        let kept = e.declared_on.is_none() || !self.sink.takes_tags();
                        if kept
                            && self
                                .lapsed
                                .insert((e.entry, e.declared_on.clone(), e.rule.clone()))
                        {
                            self.report.lapsed_exceptions.push(e.clone());
                        }
                        (
                            CheckResult::Failed,
                            Status::Open,
                            Some(ExceptionRef::of(e, true)),
                        )
                    }
                    Verdict::None => (CheckResult::Failed, Status::Open, None),
                };
                let finding = Finding {
                    rule: rule.id.clone(),
                    title: rule.title.clone(),
                    severity: rule.severity,
                    status,
                    subject_kind: checked.subject,
                    record_id: checked.record.clone(),
                    name: checked.name.clone(),
                    scope: checked.scope.clone(),
                    detail: detail.chars().take(MAX_DETAIL_CHARS).collect(),
                    controls: controls.clone(),
                    exception,
                };
                (result, Some(finding))
            }
        };
        let scopes = scope_keys(&checked.scope, checked.subject);
        self.report.board.count(
            &rule.id,
            controls
                .iter()
                .map(|c| (c.framework.as_str(), c.control.as_str())),
            scopes,
            result,
        )?;
        if let Some(finding) = finding {
            match finding.status {
                Status::Open => self.report.open += 1,
                Status::Excepted => self.report.excepted += 1,
            }
            *self.report.by_severity.entry(finding.severity).or_default() += 1;
            self.sink.finding(&finding)?;
        }
        Ok(())
    }

    fn vault(&mut self, vault: &InventoryVault) -> Result<(), ComplianceError> {
        let checked = Checked {
            subject: Subject::Vault,
            record: Some(vault.id()),
            name: vault.name.to_string(),
            scope: FindingScope {
                subscription: vault.subscription.map(|s| s.to_string()),
                vault: Some(vault.name.to_string()),
                application: None,
                owners: Vec::new(),
            },
            model: Some(vault.permission_model),
        };
        let recoverable = match (vault.soft_delete, vault.purge_protection) {
            (Some(false), _) => Check::Fail("soft delete is off".into()),
            (_, Some(false)) => Check::Fail(
                "purge protection is off: a deleted vault or object can be purged at once".into(),
            ),
            (Some(true), Some(true)) => Check::Pass,
            _ => Check::Skip,
        };
        self.check("vault-not-recoverable", &checked, recoverable)?;
        let public = match vault.public_network_access.as_deref() {
            Some(access) if access.eq_ignore_ascii_case("enabled") => {
                Check::Fail("public network access is Enabled".into())
            }
            Some(_) => Check::Pass,
            None => Check::Skip,
        };
        self.check("vault-public-network-access", &checked, public)?;
        let model = match vault.permission_model {
            PermissionModel::AccessPolicy => {
                Check::Fail("the vault authorises with access policies, not Azure RBAC".into())
            }
            PermissionModel::Rbac => Check::Pass,
        };
        self.check("vault-access-policy-mode", &checked, model)
    }

    fn credential(
        &mut self,
        credential: &InventoryCredential,
        model: Option<PermissionModel>,
    ) -> Result<(), ComplianceError> {
        let checked = Checked {
            subject: Subject::of_kind(credential.kind),
            record: Some(credential.id()),
            name: credential.name.clone(),
            scope: scope_of(credential),
            model,
        };
        match exceptions::from_tags(
            &credential.tags,
            &credential.id(),
            self.evaluation.catalogue,
        ) {
            Ok(declared) => {
                if !self.sink.takes_tags() {
                    self.report.tag_exceptions.extend(declared.iter().cloned());
                } else if !declared.is_empty() {
                    self.sink.tags(TagExceptions::Declared(&declared))?;
                }
                self.tagged = declared;
            }
            Err(problem) => {
                let malformed = MalformedTags {
                    record_id: credential.id(),
                    name: credential.name.clone(),
                    source: credential.source.label(),
                    problem,
                };
                if self.sink.takes_tags() {
                    self.sink.tags(TagExceptions::Malformed(&malformed))?;
                } else {
                    self.report.malformed_exception_tags.push(malformed);
                }
            }
        }
        let now = self.evaluation.now;
        let thresholds = self.evaluation.thresholds;
        let checked_all = credential_checks(credential, now, thresholds)
            .into_iter()
            .try_for_each(|(rule, check)| self.check(rule, &checked, check));
        self.tagged.clear();
        checked_all
    }

    fn application(
        &mut self,
        record: RecordId,
        facts: ApplicationFacts,
    ) -> Result<(), ComplianceError> {
        let limit = self.evaluation.thresholds.credential_limit;
        let check = if facts.active > limit {
            Check::Fail(format!(
                "{} active credentials, more than the limit of {limit}",
                facts.active
            ))
        } else {
            Check::Pass
        };
        let checked = Checked {
            subject: Subject::Application,
            record: Some(record),
            name: facts.name.clone(),
            scope: FindingScope {
                subscription: None,
                vault: None,
                application: Some(ApplicationRef {
                    app_id: facts.app_id,
                    name: facts.name,
                }),
                owners: facts.owners,
            },
            model: None,
        };
        self.check("application-too-many-credentials", &checked, check)
    }

    async fn audit(&mut self, audit: AuditInput<'_>) -> Result<(), ComplianceError> {
        let log = Checked {
            subject: Subject::AuditLog,
            record: None,
            name: "audit log".into(),
            scope: FindingScope::default(),
            model: None,
        };
        match &audit.verification {
            Ok(report) if report.is_intact() => {
                self.check("audit-chain-broken", &log, Check::Pass)?;
            }
            Ok(report) => {
                self.check("audit-chain-broken", &log, Check::Fail(report.to_string()))?;
            }
            Err(reason) => {
                let reason = format!("the audit log could not be verified: {reason}");
                self.not_evaluated("audit-chain-broken", &reason);
            }
        }
        let since = self.evaluation.now - self.evaluation.thresholds.audit_period;
        let rotations = self
            .evaluation
            .catalogue
            .rule("rotation-failed")
            .is_some_and(|rule| self.selected(rule));
        if rotations {
            self.rotations(audit.store, since).await?;
        }
        Ok(())
    }

    /// Every rotation that ended in the period: a failure is a failed check, a success a
    /// passed one.
    async fn rotations(
        &mut self,
        store: &dyn AuditStore,
        since: DateTime<Utc>,
    ) -> Result<(), ComplianceError> {
        let failed = |operation| move |source| ComplianceError::Audit { operation, source };
        let survey = store
            .survey()
            .await
            .map_err(failed("surveying its chains"))?;
        let mut chains = survey.chains;
        chains.sort();
        for chain in chains {
            let owned = if chain == store.chain() {
                None
            } else {
                match store.for_chain(&chain) {
                    Some(reader) => Some(reader),
                    None => continue,
                }
            };
            let reader = owned.as_deref().unwrap_or(store);
            let Some(head) = reader.head().await.map_err(failed("reading a head"))? else {
                continue;
            };
            let mut next = 1u64;
            while next <= head.position {
                let page = reader
                    .read(next, AUDIT_WINDOW)
                    .await
                    .map_err(failed("reading entries"))?;
                for stored in page.iter().filter(|s| s.position <= head.position) {
                    if let Ok(entry) = &stored.content
                        && entry.record.at >= since
                        && entry.record.at <= self.evaluation.now
                    {
                        self.rotation(chain.as_str(), entry)?;
                    }
                }
                match next.checked_add(u64::from(AUDIT_WINDOW)) {
                    Some(after) => next = after,
                    None => break,
                }
            }
        }
        Ok(())
    }

    fn rotation(&mut self, chain: &str, entry: &AuditEntry) -> Result<(), ComplianceError> {
        let record = &entry.record;
        // The actions that end a rotation: one failure or one success each.
        let action = Action::parse(record.action.as_str());
        let check = if action == Some(Action::RotationFailed) {
            let reason = record
                .reason
                .as_ref()
                .map(|r| r.as_str())
                .unwrap_or("no reason recorded");
            Check::Fail(format!(
                "failed at {} (audit entry {chain}#{}): {reason}",
                record.at.to_rfc3339(),
                entry.sequence
            ))
        } else if matches!(
            action,
            Some(Action::SecretRotated | Action::CertificateRenewed)
        ) {
            Check::Pass
        } else {
            return Ok(());
        };
        let object = &record.object;
        let vault = object.vault.as_ref().map(|v| vault_name_of(v.as_str()));
        let name = object
            .secret_name
            .as_ref()
            .or(object.app_id.as_ref())
            .map_or_else(|| "unnamed object".to_owned(), |n| n.as_str().to_owned());
        let checked = Checked {
            subject: Subject::AuditLog,
            record: None,
            name,
            scope: FindingScope {
                subscription: None,
                vault,
                application: match object.app_id.as_ref() {
                    Some(app) => Some(ApplicationRef {
                        app_id: app.as_str().to_owned(),
                        name: self
                            .applications
                            .name_of(app.as_str())?
                            .unwrap_or_else(|| app.as_str().to_owned()),
                    }),
                    None => None,
                },
                owners: Vec::new(),
            },
            model: None,
        };
        self.check("rotation-failed", &checked, check)
    }
}

/// Every credential rule's verdict on one credential.
fn credential_checks(
    credential: &InventoryCredential,
    now: DateTime<Utc>,
    thresholds: &Thresholds,
) -> Vec<(&'static str, Check)> {
    let kind = credential.kind;
    let days = |span: TimeDelta| span.num_days();
    let date = |at: DateTime<Utc>| at.format("%Y-%m-%d").to_string();
    let no_expiry = || match credential.expires {
        None => Check::Fail("no expiration date".into()),
        Some(_) => Check::Pass,
    };
    let mut checks = vec![
        ("secret-no-expiry", no_expiry()),
        ("key-no-expiry", no_expiry()),
        ("credential-no-expiry", no_expiry()),
    ];

    let expired_enabled = match credential.expires {
        Some(expires) if expires <= now && credential.enabled => Check::Fail(format!(
            "expired on {} ({} days ago) and still enabled",
            date(expires),
            days(now - expires)
        )),
        _ => Check::Pass,
    };
    checks.push(("credential-expired-enabled", expired_enabled));

    let expiring = match credential.expires {
        Some(expires)
            if expires > now
                && expires <= now + thresholds.expiring_within
                && !credential.managed =>
        {
            Check::Fail(format!(
                "expires on {} (in {} days) and keyturn does not manage it",
                date(expires),
                days(expires - now)
            ))
        }
        _ => Check::Pass,
    };
    checks.push(("credential-expiring-unmanaged", expiring));

    let start = credential.not_before.or(credential.created);
    let lifetime = match (
        start,
        credential.expires,
        thresholds.max_lifetime.get(&kind),
    ) {
        (Some(start), Some(expires), Some(max)) if expires - start > *max => Check::Fail(format!(
            "valid for {} days ({} to {}), longer than the {}-day maximum for a {kind}",
            days(expires - start),
            date(start),
            date(expires),
            days(*max)
        )),
        (Some(_), Some(_), Some(_)) => Check::Pass,
        _ => Check::Skip,
    };
    checks.push(("credential-lifetime-too-long", lifetime));

    let since = credential.created.or(credential.not_before);
    let rotated = match since {
        _ if !credential.enabled => Check::Skip,
        Some(since) if now - since > thresholds.rotation_period => Check::Fail(format!(
            "current version created on {} ({} days ago); the rotation period is {} days",
            date(since),
            days(now - since),
            days(thresholds.rotation_period)
        )),
        Some(_) => Check::Pass,
        None => Check::Skip,
    };
    checks.push(("credential-not-rotated", rotated));

    let password = if kind == CredentialKind::PasswordCredential
        && credential.enabled
        && credential.expires.is_none_or(|expires| expires > now)
    {
        let federated = credential
            .directory
            .as_ref()
            .and_then(|d| d.federated_credentials)
            .unwrap_or(0);
        Check::Fail(format!(
            "authenticates with a client secret; the application has {federated} federated identity credential(s)"
        ))
    } else {
        Check::Skip
    };
    checks.push(("application-password-credential", password));

    let owned = if credential.owner_tag().is_none() && credential.owners.is_empty() {
        Check::Fail(match credential.source {
            CredentialSource::Vault { .. } => "no keyturn-owner tag".into(),
            _ => "the application or service principal has no owners".into(),
        })
    } else {
        Check::Pass
    };
    checks.push(("credential-no-owner", owned));

    if let Some(certificate) = &credential.certificate {
        let rsa = certificate
            .key_type
            .as_deref()
            .is_some_and(|t| t.to_ascii_uppercase().starts_with("RSA"));
        let weak = match (rsa, certificate.key_size, certificate.curve.as_deref()) {
            (true, Some(bits), _) if bits < 2048 => {
                Check::Fail(format!("RSA key of {bits} bits, under 2048"))
            }
            (true, Some(_), _) => Check::Pass,
            (_, _, Some(curve)) => match curve_bits(curve) {
                Some(bits) if bits < 256 => {
                    Check::Fail(format!("elliptic curve {curve}, under P-256"))
                }
                Some(_) => Check::Pass,
                None => Check::Skip,
            },
            _ => Check::Skip,
        };
        checks.push(("certificate-weak-key", weak));
        checks.push((
            "certificate-sha1-signature",
            if certificate.sha1_signature {
                Check::Fail("signed with SHA-1".into())
            } else {
                Check::Pass
            },
        ));
        checks.push((
            "certificate-no-auto-renew",
            if certificate.auto_renews() || credential.managed {
                Check::Pass
            } else {
                Check::Fail(
                    "its policy has no AutoRenew lifetime action and keyturn does not manage it"
                        .into(),
                )
            },
        ));
    }
    if let Some(key) = &credential.key {
        checks.push((
            "key-no-rotation-policy",
            if key.rotation_policy {
                Check::Pass
            } else {
                Check::Fail("no rotation policy with a Rotate action".into())
            },
        ));
    }
    checks
}

/// A curve's size from its Key Vault name (`P-256`, `P-384`, `P-521`, `P-256K`).
fn curve_bits(curve: &str) -> Option<u32> {
    let digits: String = curve
        .trim()
        .strip_prefix("P-")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Enabled and not expired.
fn is_active(credential: &InventoryCredential, now: DateTime<Utc>) -> bool {
    credential.enabled && credential.expires.is_none_or(|expires| expires > now)
}

fn owners_of(credential: &InventoryCredential) -> Vec<String> {
    let mut owners: Vec<String> = credential
        .owner_tag()
        .map(str::to_owned)
        .into_iter()
        .collect();
    owners.extend(credential.owners.iter().filter_map(|owner| {
        owner
            .user_principal_name
            .clone()
            .or_else(|| owner.mail.clone())
            .or_else(|| owner.display_name.clone())
    }));
    owners
}

fn scope_of(credential: &InventoryCredential) -> FindingScope {
    let (subscription, vault, application) = match &credential.source {
        CredentialSource::Vault {
            subscription, name, ..
        } => (
            subscription.map(|s| s.to_string()),
            Some(name.to_string()),
            None,
        ),
        CredentialSource::Application { app_id, .. }
        | CredentialSource::ServicePrincipal { app_id, .. } => (
            None,
            None,
            Some(ApplicationRef {
                app_id: app_id.to_string(),
                name: credential.source.label(),
            }),
        ),
    };
    FindingScope {
        subscription,
        vault,
        application,
        owners: owners_of(credential),
    }
}

/// The scope keys a check counts under. Credentials without an owner count under
/// `(no owner)`; vaults and the audit log have no owner scope.
fn scope_keys(scope: &FindingScope, subject: Subject) -> Vec<(ScopeKind, String)> {
    let mut keys = Vec::new();
    if let Some(subscription) = &scope.subscription {
        keys.push((ScopeKind::Subscription, subscription.clone()));
    }
    if let Some(vault) = &scope.vault {
        keys.push((ScopeKind::Vault, vault.clone()));
    }
    if let Some(application) = &scope.application {
        keys.push((ScopeKind::Application, application.label()));
    }
    let owned = !matches!(subject, Subject::Vault | Subject::AuditLog);
    if owned && scope.owners.is_empty() {
        keys.push((ScopeKind::Owner, "(no owner)".to_owned()));
    }
    for owner in &scope.owners {
        keys.push((ScopeKind::Owner, owner.clone()));
    }
    keys
}

/// A vault's name from the URL the audit log records (`https://NAME.vault.azure.net/`),
/// or the text itself when it is not one.
fn vault_name_of(text: &str) -> String {
    url::Url::parse(text)
        .ok()
        .and_then(|url| {
            url.host_str()
                .and_then(|host| host.split('.').next())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_implements_exactly_the_catalogues_rules() {
        let catalogue = Catalogue::builtin();
        let catalogue: BTreeSet<&str> = catalogue
            .rules()
            .iter()
            .map(|rule| rule.id.as_str())
            .collect();
        let implemented: BTreeSet<&str> = IMPLEMENTED.into_iter().collect();
        assert_eq!(catalogue, implemented);
    }

    #[test]
    fn curve_sizes_come_from_key_vault_curve_names() {
        assert_eq!(curve_bits("P-256"), Some(256));
        assert_eq!(curve_bits("P-256K"), Some(256));
        assert_eq!(curve_bits("P-521"), Some(521));
        assert_eq!(curve_bits("P-192"), Some(192));
        assert_eq!(curve_bits("secp256k1"), None);
    }

    #[test]
    fn an_audit_entrys_vault_url_names_the_vault() {
        assert_eq!(vault_name_of("https://kv-prod.vault.azure.net/"), "kv-prod");
        assert_eq!(vault_name_of("kv-prod"), "kv-prod");
    }
}
