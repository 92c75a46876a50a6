//! `DiscoverySweep`: the timer that starts a sweep of the tenant. It runs the sweep's
//! first job here (listing subscriptions when none are configured) and queues what it
//! fans out to, one discovery job per subscription and directory range, for
//! `DiscoveryWorker`; the sweep's snapshot is queued for later. Each run is audited.

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

pub(crate) async fn run(ctx: &Context, timer: TimerInfo) -> Result<SweepStarted, FunctionError> {
    if timer.is_past_due {
        tracing::warn!("discovery sweep is past due: the previous run was missed or overran");
    }
    let discovery = ctx.discovery()?;
    let sweep = SweepId::starting_at(ctx.now);
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
