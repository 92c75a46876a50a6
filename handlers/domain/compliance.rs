//! A compliance run's counts, as the inventory keeps them beside a sweep's snapshot so that
//! scores can be drawn over time: how many checks passed, failed or were excepted, in
//! total and per framework. The rules and the engine that count them live in
//! `compliance/`; these are only the numbers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Counts of checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub checks: u64,
    pub passed: u64,
    pub failed: u64,
    pub excepted: u64,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    Passed,
    Failed,
    Excepted,
}

impl Tally {
    pub fn add(&mut self, result: CheckResult) {
        self.checks += 1;
        match result {
            CheckResult::Passed => self.passed += 1,
            CheckResult::Failed => self.failed += 1,
            CheckResult::Excepted => self.excepted += 1,
        }
    }

    /// Percent of checks that did not fail (excepted ones count as not failed), to one
    /// decimal; `None` when nothing was checked.
    pub fn score(&self) -> Option<f64> {
        percent(self.passed + self.excepted, self.checks)
    }

    /// Percent of checks that passed outright.
    pub fn strict_score(&self) -> Option<f64> {
        percent(self.passed, self.checks)
    }

    /// `pass` when no check failed (excepted ones included), `fail` otherwise;
    /// `not_evaluated` when nothing was checked.
    pub fn result(&self) -> &'static str {
        if self.checks == 0 {
            "not_evaluated"
        } else if self.failed == 0 {
            "pass"
        } else {
            "fail"
        }
    }
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    // Counts stay far below 2^52, where f64 is exact.
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

/// One compliance run's scores, kept with the snapshot of the sweep whose inventory it
/// read: a point of the trend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplianceSummary {
    pub evaluated_at: DateTime<Utc>,
    pub catalogue_version: String,
    pub total: Tally,
    /// Keyed by framework id (`cis-azure`, `pci-dss`, ...).
    pub frameworks: BTreeMap<String, Tally>,
    pub open: u64,
    pub excepted: u64,
}
