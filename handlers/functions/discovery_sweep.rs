//! `DiscoverySweep`: the timer that starts a sweep of the tenant. It runs the sweep's
//! first job here (listing subscriptions when none are configured) and queues what it
//! fans out to, one discovery job per subscription and directory range, for
//! `DiscoveryWorker`; the sweep's snapshot is queued for later. Each run is audited.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::Action;
use crate::discovery::handle_delivery;
use crate::discovery::job::{DiscoveryJob, JobScope};
use crate::domain::function::Function;
use crate::domain::inventory::SweepId;
use crate::events::timer::TimerInfo;
use crate::functions::{Context, FunctionError};
use crate::ports::audit::{AuditObject, Outcome};

pub(crate) const NAME: Function = Function::DiscoverySweep;
/// The trigger binding's name in `function-definitions/DiscoverySweep/function.json`.
pub const BINDING: &str = "timer";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SweepStarted {
    pub sweep: String,
    pub past_due: bool,
    /// Jobs queued for `DiscoveryWorker`.
    pub queued: usize,
    pub findings: u64,
}

/// How far ahead of its occurrence the host may fire a timer (clock skew between
/// instances); an announced occurrence further ahead than this is not the one firing.
const EARLY_FIRING: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// The schedule occurrence this invocation is for, which names the sweep. The host hands
/// each invocation the status recorded before it (`ScheduleStatus.Next` is the occurrence
/// now firing, or the missed one when past due) and updates it only after the function
/// returns, so a timer fired twice for one occurrence (two instances, or the function's
/// retry policy) sees the same `Next`: both name the same sweep, queue the same job
/// `MessageId`s, and Service Bus duplicate detection keeps one of each. Without a status
/// (`useMonitor` off) the sweep is named by the time it starts.
fn schedule_slot(timer: &TimerInfo, now: DateTime<Utc>) -> DateTime<Utc> {
    timer
        .status
        .and_then(|status| status.next)
        .filter(|next| *next <= now + EARLY_FIRING)
        .unwrap_or(now)
}

pub(crate) async fn run(ctx: &Context, timer: TimerInfo) -> Result<SweepStarted, FunctionError> {
    if timer.is_past_due {
        tracing::warn!("discovery sweep is past due: the previous run was missed or overran");
    }
    let discovery = ctx.discovery()?;
    let sweep = SweepId::starting_at(schedule_slot(&timer, ctx.now));
    let job = DiscoveryJob::new(
        sweep.clone(),
        JobScope::Sweep {
            subscriptions: discovery.subscriptions.clone(),
        },
    );
    let body = serde_json::to_vec(&job).map_err(|e| FunctionError::BadInput(e.to_string()))?;
    let report = handle_delivery(&discovery.engine, discovery.queue.as_ref(), &body, ctx.now)
        .await
        .map_err(super::discovery_worker::delivery_error)?;
    let started = SweepStarted {
        sweep: sweep.to_string(),
        past_due: timer.is_past_due,
        queued: report.follow_ups.len(),
        findings: report.findings,
    };
    let reason = format!(
        "discovery sweep {}{}: {} job(s) queued, {} finding(s)",
        started.sweep,
        if started.past_due { ", past due" } else { "" },
        started.queued,
        started.findings,
    );
    tracing::info!(sweep = %started.sweep, queued = started.queued, "discovery sweep started");
    ctx.audit(
        Action::SweepRan,
        AuditObject::default(),
        Outcome::Succeeded,
        Some(&reason),
    )
    .await?;
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::timer::ScheduleStatus;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a time")
            .with_timezone(&Utc)
    }

    fn timer(next: Option<&str>) -> TimerInfo {
        TimerInfo {
            status: Some(ScheduleStatus {
                last: Some(at("2026-01-06T00:30:00Z")),
                next: next.map(at),
                last_updated: Some(at("2026-01-06T00:30:00Z")),
            }),
            ..TimerInfo::default()
        }
    }

    #[test]
    fn two_firings_of_one_occurrence_name_the_same_sweep() {
        let slot = timer(Some("2026-01-06T06:30:00Z"));
        let first = schedule_slot(&slot, at("2026-01-06T06:30:00.998Z"));
        let retried = schedule_slot(&slot, at("2026-01-06T06:31:30Z"));
        let early = schedule_slot(&slot, at("2026-01-06T06:29:59.5Z"));

        assert_eq!(first, at("2026-01-06T06:30:00Z"));
        assert_eq!(SweepId::starting_at(first), SweepId::starting_at(retried));
        assert_eq!(SweepId::starting_at(first), SweepId::starting_at(early));
    }

    #[test]
    fn a_past_due_firing_is_named_by_the_missed_occurrence() {
        let missed = TimerInfo {
            is_past_due: true,
            ..timer(Some("2026-01-06T06:30:00Z"))
        };

        assert_eq!(
            schedule_slot(&missed, at("2026-01-06T09:12:07Z")),
            at("2026-01-06T06:30:00Z")
        );
    }

    #[test]
    fn without_a_usable_status_the_sweep_is_named_by_its_start() {
        let now = at("2026-01-06T06:30:01Z");

        assert_eq!(schedule_slot(&TimerInfo::default(), now), now);
        assert_eq!(schedule_slot(&timer(None), now), now);
        // An occurrence announced hours ahead is not the one firing.
        assert_eq!(
            schedule_slot(&timer(Some("2026-01-06T12:30:00Z")), now),
            now
        );
    }
}
