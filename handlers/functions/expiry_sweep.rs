//! `ExpirySweep`: the timer that re-examines every managed vault, catching what events
//! missed. Each run is audited with the vaults it covers.

use serde::Serialize;

use crate::domain::names::VaultUrl;
use crate::events::timer::TimerInfo;
use crate::functions::{Context, FunctionError};
use crate::ports::audit::{AuditObject, Outcome};

pub const NAME: &str = "ExpirySweep";
/// The trigger binding's name in `function-definitions/ExpirySweep/function.json`.
pub const BINDING: &str = "timer";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub vaults: Vec<String>,
    pub past_due: bool,
}

pub async fn run(ctx: &Context, timer: TimerInfo, vaults: &[VaultUrl]) -> Result<SweepReport, FunctionError> {
    let report = SweepReport {
        vaults: vaults.iter().map(ToString::to_string).collect(),
        past_due: timer.is_past_due,
    };
    if report.past_due {
        tracing::warn!("sweep is past due: the previous run was missed or overran");
    }
    let reason = format!(
        "{} vault(s){}",
        report.vaults.len(),
        if report.past_due { ", past due" } else { "" }
    );
    ctx.audit("sweep.ran", AuditObject::default(), Outcome::Succeeded, Some(&reason))
        .await?;
    Ok(report)
}
