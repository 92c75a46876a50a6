//! Scores: every check a rule made, counted as passed, failed or excepted, per framework,
//! per control, per rule and per scope (subscription, vault, application, owner).
//!
//! A score is the share of checks that did not fail: `(passed + excepted) / checks`.
//! Excepted checks are counted apart so that the accepted risk stays visible: the strict
//! score (`passed / checks`) is reported beside it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::spill::{ScopeTallies, SpillError};
pub use crate::domain::compliance::{CheckResult, Tally};

/// A tally with its scores, as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    #[serde(flatten)]
    pub tally: Tally,
    pub score: Option<f64>,
    pub strict_score: Option<f64>,
}

impl From<Tally> for Scored {
    fn from(tally: Tally) -> Self {
        Self {
            tally,
            score: tally.score(),
            strict_score: tally.strict_score(),
        }
    }
}

/// The four scopes scores are kept per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    Subscription,
    Vault,
    Application,
    Owner,
}

impl ScopeKind {
    pub const ALL: [ScopeKind; 4] = [
        Self::Subscription,
        Self::Vault,
        Self::Application,
        Self::Owner,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Vault => "vault",
            Self::Application => "application",
            Self::Owner => "owner",
        }
    }
}

/// Tallies kept while checks run. Those per framework, control and rule are bounded by
/// the catalogue; those per scope (vaults, applications, owners, subscriptions) grow with
/// the tenant, so past a bound they go to a temporary file ([`ScopeTallies`]). Memory
/// never grows with the number of credentials.
#[derive(Debug, Default)]
pub struct Scoreboard {
    pub total: Tally,
    pub frameworks: BTreeMap<String, Tally>,
    pub controls: BTreeMap<(String, String), Tally>,
    pub rules: BTreeMap<String, Tally>,
    pub scopes: ScopeTallies,
}

impl Scoreboard {
    /// A scoreboard holding at most `spill_after` per-scope tallies in memory.
    pub fn new(spill_after: usize) -> Self {
        Self {
            scopes: ScopeTallies::new(spill_after),
            ..Self::default()
        }
    }

    /// Counts one check of `rule`, evidence for `controls` (framework, control) and made
    /// within `scopes`. Fails only when the per-scope tallies cannot be spilled.
    pub fn count<'a>(
        &mut self,
        rule: &str,
        controls: impl IntoIterator<Item = (&'a str, &'a str)>,
        scopes: impl IntoIterator<Item = (ScopeKind, String)>,
        result: CheckResult,
    ) -> Result<(), SpillError> {
        self.total.add(result);
        self.rules.entry(rule.to_owned()).or_default().add(result);
        let mut frameworks: Vec<&str> = Vec::new();
        for (framework, control) in controls {
            self.controls
                .entry((framework.to_owned(), control.to_owned()))
                .or_default()
                .add(result);
            if !frameworks.contains(&framework) {
                frameworks.push(framework);
            }
        }
        for framework in frameworks {
            self.frameworks
                .entry(framework.to_owned())
                .or_default()
                .add(result);
        }
        for (kind, name) in scopes {
            self.scopes.add(kind, name, result)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excepted_checks_count_as_not_failed_and_stay_visible() {
        let mut tally = Tally::default();
        for result in [
            CheckResult::Passed,
            CheckResult::Passed,
            CheckResult::Failed,
            CheckResult::Excepted,
        ] {
            tally.add(result);
        }

        assert_eq!(tally.score(), Some(75.0));
        assert_eq!(tally.strict_score(), Some(50.0));
        assert_eq!(tally.excepted, 1);
        assert_eq!(tally.result(), "fail");
        assert_eq!(Tally::default().score(), None);
        assert_eq!(Tally::default().result(), "not_evaluated");
    }

    #[test]
    fn a_check_counts_once_per_framework_however_many_of_its_controls_it_backs() {
        let mut board = Scoreboard::default();
        board
            .count(
                "audit-chain-broken",
                [
                    ("nist-800-53", "AU-9"),
                    ("nist-800-53", "AU-10"),
                    ("pci-dss", "10.3.2"),
                ],
                [(ScopeKind::Vault, "kv".to_owned())],
                CheckResult::Failed,
            )
            .expect("counted");
        board
            .count(
                "vault-not-recoverable",
                [("cis-azure", "8.5")],
                [(ScopeKind::Vault, "kv".to_owned())],
                CheckResult::Passed,
            )
            .expect("counted");

        assert_eq!(board.frameworks["nist-800-53"].checks, 1);
        assert_eq!(board.frameworks["nist-800-53"].failed, 1);
        assert_eq!(
            board.controls[&("nist-800-53".into(), "AU-10".into())].failed,
            1
        );
        let vault = board
            .scopes
            .get(ScopeKind::Vault, "kv")
            .expect("read")
            .expect("a tally");
        assert_eq!(vault.checks, 2);
        assert_eq!(vault.score(), Some(50.0));
        assert_eq!(board.total.checks, 2);
    }
}
