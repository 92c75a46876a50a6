//! The trend: one point per inventory sweep. A complete `keyturn compliance` run records its
//! scores on the snapshot of the latest sweep (the inventory it read); a later run over the
//! same sweep replaces that point. Keeping the point with the sweep's snapshot (rather than
//! in a store of its own) needs no new table in either backend, ties each score to the
//! inventory it was computed from, and keeps one point per sweep however often the command
//! runs.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::engine::Report;
use crate::domain::compliance::ComplianceSummary;
use crate::domain::inventory::{SweepId, SweepSnapshot};
use crate::ports::PortError;
use crate::ports::inventory::{InventoryStore, Page, PageToken};

/// Points printed: the last 30 sweeps (a week of six-hourly sweeps, or a month of daily
/// ones).
pub const TREND_POINTS: usize = 30;

/// Snapshots read per request.
const PAGE_SIZE: u32 = 1000;

/// One sweep's point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendPoint {
    pub sweep: SweepId,
    /// When the sweep's snapshot was taken.
    pub at: DateTime<Utc>,
    pub evaluated_at: DateTime<Utc>,
    pub score: Option<f64>,
    pub strict_score: Option<f64>,
    pub open: u64,
    pub excepted: u64,
    /// Score per framework id.
    pub frameworks: std::collections::BTreeMap<String, Option<f64>>,
}

impl TrendPoint {
    fn of(snapshot: &SweepSnapshot, summary: &ComplianceSummary) -> Self {
        Self {
            sweep: snapshot.sweep.clone(),
            at: snapshot.at,
            evaluated_at: summary.evaluated_at,
            score: summary.total.score(),
            strict_score: summary.total.strict_score(),
            open: summary.open,
            excepted: summary.excepted,
            frameworks: summary
                .frameworks
                .iter()
                .map(|(id, tally)| (id.clone(), tally.score()))
                .collect(),
        }
    }
}

/// The trend, and whether this run was recorded in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Trend {
    /// Oldest first, at most [`TREND_POINTS`].
    pub points: Vec<TrendPoint>,
    /// The sweep this run's scores were recorded on.
    pub recorded_on: Option<SweepId>,
    /// Why this run was not recorded (none asked, a limited run, no sweep yet, a store
    /// that refused the write).
    pub not_recorded: Option<String>,
}

/// A report's counts as a trend point keeps them.
pub fn summary_of(report: &Report) -> ComplianceSummary {
    ComplianceSummary {
        evaluated_at: report.evaluated_at,
        catalogue_version: report.catalogue_version.clone(),
        total: report.board.total,
        frameworks: report.board.frameworks.clone(),
        open: report.open,
        excepted: report.excepted,
    }
}

/// Reads the snapshots (a page at a time, keeping the last [`TREND_POINTS`] points) and,
/// when `record` is given, stores it on the latest sweep's snapshot. A store that cannot
/// be written (an operator with a reader role) leaves the trend as it was and says why;
/// one that cannot be read is an error.
pub async fn update(
    store: &dyn InventoryStore,
    record: Result<ComplianceSummary, String>,
) -> Result<Trend, PortError> {
    let mut points: VecDeque<TrendPoint> = VecDeque::with_capacity(TREND_POINTS + 1);
    let mut latest: Option<SweepSnapshot> = None;
    let mut after: Option<PageToken> = None;
    loop {
        let Page { items, next } = store.snapshots(after.as_ref(), PAGE_SIZE).await?;
        for snapshot in items {
            if let Some(summary) = &snapshot.compliance {
                points.push_back(TrendPoint::of(&snapshot, summary));
                if points.len() > TREND_POINTS {
                    points.pop_front();
                }
            }
            latest = Some(snapshot);
        }
        match next {
            Some(token) => after = Some(token),
            None => break,
        }
    }
    let mut trend = Trend::default();
    match (record, latest) {
        (Err(why), _) => trend.not_recorded = Some(why),
        (Ok(_), None) => {
            trend.not_recorded =
                Some("the inventory has no sweep snapshot yet to record the scores on".into());
        }
        (Ok(summary), Some(mut snapshot)) => {
            snapshot.compliance = Some(summary.clone());
            match store.put_snapshot(&snapshot).await {
                Ok(()) => {
                    let point = TrendPoint::of(&snapshot, &summary);
                    if points
                        .back()
                        .is_some_and(|last| last.sweep == snapshot.sweep)
                    {
                        points.pop_back();
                    }
                    points.push_back(point);
                    if points.len() > TREND_POINTS {
                        points.pop_front();
                    }
                    trend.recorded_on = Some(snapshot.sweep);
                }
                Err(error) => {
                    trend.not_recorded = Some(format!("cannot write the snapshot: {error}"))
                }
            }
        }
    }
    trend.points = points.into();
    Ok(trend)
}
