//! The scores of a [`Report`] as they are printed (`keyturn compliance --format json`'s
//! `scores` object) and as an evidence export's control matrix reads them: per framework
//! with each control's result and the rules behind it, per rule, and per scope.

use serde::Serialize;

use super::catalogue::{Catalogue, Severity};
use super::engine::Report;
use super::scores::{ScopeKind, Scored};
use super::spill::SpillError;

/// Every score of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    pub total: Scored,
    pub frameworks: Vec<FrameworkScore>,
    pub rules: Vec<RuleScore>,
    /// Keyed `subscription`, `vault`, `application`, `owner`; each list sorted by name.
    pub scopes: std::collections::BTreeMap<ScopeKind, Vec<ScopeScore>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameworkScore {
    pub id: String,
    pub name: String,
    pub version: String,
    #[serde(flatten)]
    pub scored: Scored,
    /// `pass`, `fail` or `not_evaluated`.
    pub result: &'static str,
    pub controls: Vec<ControlScore>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlScore {
    pub control: String,
    pub title: String,
    #[serde(flatten)]
    pub scored: Scored,
    pub result: &'static str,
    /// The rules whose checks are evidence for this control.
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleScore {
    pub rule: String,
    pub severity: Severity,
    #[serde(flatten)]
    pub scored: Scored,
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScopeScore {
    pub name: String,
    #[serde(flatten)]
    pub scored: Scored,
}

impl Scores {
    /// The scores of `report`, with names and titles from `catalogue`. A framework or
    /// control the run was not limited away from is listed even when nothing was checked
    /// (its result is then `not_evaluated`), so a control matrix has a row for it. Every
    /// scope is listed: fails only when spilled tallies cannot be read back.
    pub fn of(report: &Report, catalogue: &Catalogue) -> Result<Self, SpillError> {
        let board = &report.board;
        let frameworks = catalogue
            .frameworks()
            .iter()
            .filter(|f| report.framework.as_deref().is_none_or(|only| only == f.id))
            .map(|framework| {
                let tally = board
                    .frameworks
                    .get(&framework.id)
                    .copied()
                    .unwrap_or_default();
                let controls = framework
                    .controls
                    .iter()
                    .map(|(control, title)| {
                        let tally = board
                            .controls
                            .get(&(framework.id.clone(), control.clone()))
                            .copied()
                            .unwrap_or_default();
                        let rules = catalogue
                            .rules()
                            .iter()
                            .filter(|rule| {
                                rule.controls
                                    .iter()
                                    .any(|c| c.framework == framework.id && c.control == *control)
                            })
                            .map(|rule| rule.id.clone())
                            .collect();
                        ControlScore {
                            control: control.clone(),
                            title: title.clone(),
                            scored: tally.into(),
                            result: tally.result(),
                            rules,
                        }
                    })
                    .collect();
                FrameworkScore {
                    id: framework.id.clone(),
                    name: framework.name.clone(),
                    version: framework.version.clone(),
                    scored: tally.into(),
                    result: tally.result(),
                    controls,
                }
            })
            .collect();
        let rules = catalogue
            .rules()
            .iter()
            .filter(|rule| {
                report
                    .framework
                    .as_deref()
                    .is_none_or(|only| rule.maps_to(only))
            })
            .map(|rule| {
                let tally = board.rules.get(&rule.id).copied().unwrap_or_default();
                RuleScore {
                    rule: rule.id.clone(),
                    severity: rule.severity,
                    scored: tally.into(),
                    result: tally.result(),
                }
            })
            .collect();
        let mut scopes = std::collections::BTreeMap::new();
        for kind in ScopeKind::ALL {
            let mut listed = Vec::new();
            board.scopes.each(kind, |name, tally| {
                listed.push(ScopeScore {
                    name: name.to_owned(),
                    scored: tally.into(),
                });
                Ok::<_, SpillError>(())
            })?;
            scopes.insert(kind, listed);
        }
        Ok(Self {
            total: board.total.into(),
            frameworks,
            rules,
            scopes,
        })
    }
}
