//! `RotationWorker`: rotation jobs from the Service Bus queue. A job is a versioned JSON
//! message, decoded once by the host into a `rotation::job::Delivery`; a version this
//! build does not know, or a job that does not decode, is a permanent failure (completed
//! and audited), never a redelivery loop.

use serde::Serialize;

use crate::audit::Action;
use crate::discovery;
use crate::domain::function::Function;
use crate::domain::ids::AppId;
use crate::domain::names::{ObjectId, ObjectType};
use crate::events::servicebus::ServiceBusMessage;
use crate::functions::{Context, FunctionError};
use crate::ports::audit::{AuditObject, Outcome};
use crate::rotation::job::Delivery;
use crate::rotation::run::{self, RunOutcome};
use crate::rotation::{Engine, tags};

pub(crate) const NAME: Function = Function::RotationWorker;
/// The trigger binding's name in `function-definitions/RotationWorker/function.json`.
pub const BINDING: &str = "job";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobReceipt {
    pub job_id: String,
    pub delivery_count: u32,
    #[serde(flatten)]
    pub outcome: RunOutcome,
}

pub(crate) async fn run(
    ctx: &Context,
    delivery: Delivery,
    message: ServiceBusMessage,
) -> Result<JobReceipt, FunctionError> {
    let reason = format!(
        "job {} delivery {}",
        delivery.job_id,
        message.delivery_count()
    );
    ctx.audit(
        Action::JobReceived,
        AuditObject::default(),
        Outcome::Succeeded,
        Some(&reason),
    )
    .await?;
    let job = delivery
        .job
        .map_err(|e| FunctionError::BadInput(e.to_string()))?;
    if message.message_id() != job.job_id.as_str() {
        tracing::debug!(message_id = message.message_id(), job_id = %job.job_id, "message id differs from the job id");
    }
    let engine = ctx.rotation()?;
    let outcome =
        run::run_delivery(engine, &ctx.audit_scope()?, &job, message.delivery_count()).await?;
    if matches!(
        outcome,
        RunOutcome::Rotated { .. } | RunOutcome::Retired { .. }
    ) {
        rescan(ctx, engine, job.action.object()).await;
    }
    Ok(JobReceipt {
        job_id: delivery.job_id,
        delivery_count: message.delivery_count(),
        outcome,
    })
}

/// After a rotation finished (a new version current, or the previous credential removed),
/// queues the scans of what it changed ([`discovery::queue_rescan`]): the object's vault,
/// and for an application's client secret the application's directory range, so the
/// inventory and the alerts computed from it follow within the time the jobs take rather
/// than at the next sweep. The rotation is done whatever happens here: a scan that cannot
/// be queued is logged and left to the next sweep, never a reason to run the job again.
async fn rescan(ctx: &Context, engine: &Engine, object: &ObjectId) {
    let Some(discovery) = ctx.services.discovery.as_deref() else {
        return;
    };
    let app = match object.object_type() {
        ObjectType::Secret => application_of(engine, object).await,
        _ => None,
    };
    match discovery::queue_rescan(
        &discovery.engine,
        discovery.queue.as_ref(),
        object.vault(),
        app,
        ctx.now,
    )
    .await
    {
        Ok(jobs) if jobs.is_empty() => {
            tracing::debug!(object = %object, "no inventory scan after the rotation: discovery has not listed the vault")
        }
        Ok(jobs) => tracing::info!(
            object = %object,
            jobs = jobs.len(),
            "inventory scans queued after the rotation"
        ),
        Err(error) => tracing::warn!(
            object = %object,
            %error,
            "cannot queue the inventory scans after the rotation; the next sweep brings the inventory up to date"
        ),
    }
}

/// The application whose client secret the managed secret holds, by its tags as they are
/// now (`keyturn-app-id`); `None` for any other kind of secret, or when they cannot be read.
async fn application_of(engine: &Engine, object: &ObjectId) -> Option<AppId> {
    let properties = engine
        .ports()
        .secrets
        .secret_properties(object.vault(), object.name(), None)
        .await
        .inspect_err(|error| tracing::warn!(object = %object, %error, "cannot read the rotated secret's tags"))
        .ok()??;
    match tags::policy(ObjectType::Secret, &properties.tags, engine.defaults()) {
        Ok(Some(policy)) => match policy.kind {
            tags::Kind::EntraAppSecret { app_id } => Some(app_id),
            _ => None,
        },
        _ => None,
    }
}
