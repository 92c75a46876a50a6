//! `ExpirySweep`: the timer that re-examines every managed vault (metadata only), queues a
//! job for each managed object that is due, and reports objects whose tags cannot be read.
//! It catches what events missed. Each run is audited with what it found.

use serde::Serialize;

use crate::audit::Action;
use crate::domain::function::Function;
use crate::domain::names::VaultUrl;
use crate::events::timer::TimerInfo;
use crate::functions::{Context, FunctionError};
use crate::ports::audit::{AuditObject, Outcome};
use crate::rotation::plan::{self, SweepOutcome};

pub(crate) const NAME: Function = Function::ExpirySweep;
/// The trigger binding's name in `function-definitions/ExpirySweep/function.json`.
pub const BINDING: &str = "timer";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SweepReport {
    pub vaults: Vec<String>,
    pub past_due: bool,
    #[serde(flatten)]
    pub found: SweepOutcome,
}

pub(crate) async fn run(
    ctx: &Context,
    timer: TimerInfo,
    vaults: &[VaultUrl],
) -> Result<SweepReport, FunctionError> {
    if timer.is_past_due {
        tracing::warn!("sweep is past due: the previous run was missed or overran");
    }
    let Some(engine) = ctx.services.rotation.as_deref() else {
        // Nothing is lost: the next sweep in an app with rotation ports finds every due
        // object from Key Vault's own state.
        tracing::error!("rotation is not configured in this app; nothing swept");
        ctx.audit(
            Action::SweepRan,
            AuditObject::default(),
            Outcome::Skipped,
            Some("rotation is not configured in this app"),
        )
        .await?;
        return Ok(SweepReport {
            vaults: vaults.iter().map(ToString::to_string).collect(),
            past_due: timer.is_past_due,
            found: SweepOutcome::default(),
        });
    };
    let found = plan::sweep(engine, &ctx.audit_scope()?, vaults, ctx.now).await?;
    let report = SweepReport {
        vaults: vaults.iter().map(ToString::to_string).collect(),
        past_due: timer.is_past_due,
        found,
    };
    let reason = format!(
        "{} vault(s){}: {} examined, {} queued, {} malformed, {} failing, {} vault(s) failed",
        report.vaults.len(),
        if report.past_due { ", past due" } else { "" },
        report.found.examined,
        report.found.queued,
        report.found.malformed.len(),
        report.found.failing.len(),
        report.found.failed_vaults.len(),
    );
    tracing::info!(
        examined = report.found.examined,
        queued = report.found.queued,
        malformed = report.found.malformed.len(),
        failing = report.found.failing.len(),
        "sweep finished"
    );
    ctx.audit(
        Action::SweepRan,
        AuditObject::default(),
        Outcome::Succeeded,
        Some(&reason),
    )
    .await?;
    Ok(report)
}
