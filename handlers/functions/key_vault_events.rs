//! `KeyVaultEvents`: Key Vault events from Event Grid (either schema). Expiry events for
//! secrets and certificates (the one filter: `KeyVaultEvent::rotation_trigger`) go to the
//! rotation planner as an `ExpiryNotice`; it re-reads the object and queues a job when it
//! is managed and due. Every other event is acknowledged and ignored (logged at debug).

use serde::Serialize;

use crate::audit::Action;
use crate::domain::function::Function;
use crate::domain::names::ObjectId;
use crate::events::keyvault::KeyVaultEvent;
use crate::functions::{Context, FunctionError, vault_object};
use crate::ports::audit::Outcome;
use crate::rotation::plan::{self, EventDecision, ExpiryNotice};

pub(crate) const NAME: Function = Function::KeyVaultEvents;
/// The trigger binding's name in `function-definitions/KeyVaultEvents/function.json`.
pub const BINDING: &str = "event";

/// What one invocation did with its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Handled {
    /// Expiry events for secrets and certificates, as the object ids Key Vault writes:
    /// `https://{vault}/{secrets|certificates}/{name}/{version}`.
    pub received: Vec<String>,
    /// Events of other types, acknowledged without action.
    pub ignored: usize,
    /// What planning decided for each received event, in order.
    pub decisions: Vec<EventDecision>,
}

pub(crate) async fn run(
    ctx: &Context,
    events: Vec<KeyVaultEvent>,
) -> Result<Handled, FunctionError> {
    let mut handled = Handled {
        received: Vec::new(),
        ignored: 0,
        decisions: Vec::new(),
    };
    for event in events {
        // The vault's URL where the event carries the object's id, as the rotation engine
        // records it, so one vault reads the same in every audit entry.
        let vault = event
            .object_id()
            .map(|id| id.vault().to_string())
            .unwrap_or_else(|| event.vault().to_string());
        let kind = event.kind();
        let Some(notice) = expiry_notice(&event) else {
            tracing::debug!(event_type = kind.event_type(), %vault, name = ?event.object_name(), "event ignored");
            handled.ignored += 1;
            continue;
        };
        let (name, version) = (notice.name.to_string(), notice.version.to_string());
        tracing::info!(event_type = kind.event_type(), %vault, %name, %version, "expiry event received");
        // A replayed event is one event: its repeats within a window are folded with a
        // count, not recorded again.
        let scope = ctx.audit_scope()?;
        scope
            .record_repeatable(
                Action::EventReceived,
                vault_object(&vault, &name, Some(&version)),
                Outcome::Succeeded,
                kind.event_type(),
            )
            .await?;
        // Events only hasten what the sweep finds from Key Vault's own state, so an app
        // without rotation ports acknowledges them rather than failing delivery forever.
        let decision = match ctx.services.rotation.as_deref() {
            Some(engine) => match plan::from_notice(engine, &scope, &notice, ctx.now).await {
                Ok(decision) => decision,
                // Event Grid redelivers the whole batch, and planning the events already
                // planned again queues nothing new (one job id per version).
                Err(error) if !error.is_permanent() => return Err(error.into()),
                // Delivering again cannot help this event; it must not cost the others.
                Err(error) => {
                    let reason = error.summary();
                    tracing::warn!(%vault, %name, %error, "event cannot be planned");
                    ctx.audit(
                        Action::RotationPlanned,
                        vault_object(&vault, &name, Some(&version)),
                        Outcome::Failed,
                        Some(&reason),
                    )
                    .await?;
                    EventDecision::Failed { reason }
                }
            },
            None => {
                tracing::error!(%vault, %name, "rotation is not configured in this app; event left to the sweep");
                EventDecision::NotConfigured
            }
        };
        tracing::info!(%vault, %name, ?decision, "event planned");
        handled.received.push(received_id(ctx, &notice).to_string());
        handled.decisions.push(decision);
    }
    Ok(handled)
}

/// What planning needs from an event, for an event that triggers rotation (the filter is
/// [`KeyVaultEvent::rotation_trigger`]); `None` for every other event.
pub fn expiry_notice(event: &KeyVaultEvent) -> Option<ExpiryNotice> {
    let object = event.rotation_trigger()?;
    Some(ExpiryNotice {
        vault: event.vault().clone(),
        object_type: object.object_type,
        name: object.name.clone(),
        version: object.version.clone(),
        id: object.id.clone(),
    })
}

/// The id of the notice's object version: in the vault its id names or, for an event
/// without one, the vault of that name keyturn is configured with, else the vault's
/// public-cloud URL.
fn received_id(ctx: &Context, notice: &ExpiryNotice) -> ObjectId {
    let vault = match &notice.id {
        Some(id) => id.vault().clone(),
        None => ctx
            .services
            .rotation
            .as_deref()
            .and_then(|engine| {
                engine
                    .vaults()
                    .iter()
                    .find(|vault| vault.vault_name() == Some(&notice.vault))
            })
            .cloned()
            .unwrap_or_else(|| notice.vault.public_cloud_url()),
    };
    vault.object_id(
        notice.object_type,
        notice.name.clone(),
        Some(notice.version.clone()),
    )
}
