//! Builds the alert channels from the configured routes: each webhook route's URL is read
//! from the vault (Key Vault, or the local vault in `keyturn dev`) into a
//! [`WebhookUrl`], and the mail route sends through Graph from the configured mailbox.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::adapters::azure::graph::GraphClient;
use crate::adapters::azure::mail::GraphMailNotifier;
use crate::adapters::notify::cloudevents::CloudEventsNotifier;
use crate::adapters::notify::slack::SlackNotifier;
use crate::adapters::notify::teams::TeamsNotifier;
use crate::adapters::notify::{WebhookClient, WebhookUrl, WebhookUrlError};
use crate::alerts::routes::{Channel, Route, RouteName};
use crate::alerts::throttle::Throttled;
use crate::domain::contact::MailAddress;
use crate::domain::names::{ObjectName, VaultUrl};
use crate::functions::alert_sweep::ChannelSource;
use crate::ports::PortError;
use crate::ports::notify::Notifier;
use crate::ports::vault::SecretStore;

/// Why a route could not be built. Names the route and the secret, never a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    #[error("route {route}: secret {secret} does not exist in vault {vault}")]
    SecretMissing {
        route: RouteName,
        secret: ObjectName,
        vault: String,
    },
    #[error("route {route}: reading secret {secret}: {source}")]
    Read {
        route: RouteName,
        secret: ObjectName,
        source: PortError,
    },
    #[error("route {route}: secret {secret} does not hold a usable webhook URL: {source}")]
    Url {
        route: RouteName,
        secret: ObjectName,
        source: WebhookUrlError,
    },
    #[error("route {route}: a mail route needs the sending mailbox and Graph")]
    NoMailbox { route: RouteName },
    #[error("route {route}: no vault is configured for the webhook URLs (KEYTURN_ALERT_VAULT)")]
    NoVault { route: RouteName },
}

/// What the mail channel sends through.
#[derive(Debug, Clone)]
pub struct MailSetup {
    pub graph: GraphClient,
    pub mailbox: MailAddress,
}

/// The channels, by route name.
pub type Channels = BTreeMap<RouteName, Arc<dyn Notifier>>;

/// Builds every route's notifier; the first route that cannot be built stops start-up, so
/// a broken channel is found when keyturn starts, not when the first alert is due.
pub async fn channels(
    routes: &[Route],
    secrets: &dyn SecretStore,
    vault: &VaultUrl,
    webhooks: &WebhookClient,
    mail: Option<&MailSetup>,
    event_source: Option<&str>,
) -> Result<Channels, ChannelError> {
    let mut channels: Channels = BTreeMap::new();
    for route in routes {
        let notifier = channel(route, secrets, Some(vault), webhooks, mail, event_source).await?;
        channels.insert(route.name.clone(), notifier);
    }
    Ok(channels)
}

/// One route's notifier.
async fn channel(
    route: &Route,
    secrets: &dyn SecretStore,
    vault: Option<&VaultUrl>,
    webhooks: &WebhookClient,
    mail: Option<&MailSetup>,
    event_source: Option<&str>,
) -> Result<Arc<dyn Notifier>, ChannelError> {
    let name = route.name.as_str().to_owned();
    let url = |secret| async move {
        let vault = vault.ok_or_else(|| ChannelError::NoVault {
            route: route.name.clone(),
        })?;
        webhook_url(route, secret, secrets, vault).await
    };
    Ok(match &route.channel {
        Channel::Teams { secret } => Arc::new(TeamsNotifier::new(
            name,
            url(secret).await?,
            webhooks.clone(),
        )),
        Channel::Slack { secret } => Arc::new(SlackNotifier::new(
            name,
            url(secret).await?,
            webhooks.clone(),
        )),
        Channel::CloudEvents { secret } => Arc::new(CloudEventsNotifier::new(
            name,
            event_source.map(str::to_owned),
            url(secret).await?,
            webhooks.clone(),
        )),
        Channel::Mail => {
            let mail = mail.ok_or_else(|| ChannelError::NoMailbox {
                route: route.name.clone(),
            })?;
            Arc::new(GraphMailNotifier::new(
                name,
                mail.graph.clone(),
                mail.mailbox.clone(),
            ))
        }
    })
}

async fn webhook_url(
    route: &Route,
    secret: &ObjectName,
    secrets: &dyn SecretStore,
    vault: &VaultUrl,
) -> Result<WebhookUrl, ChannelError> {
    let value = secrets
        .secret(vault, secret, None)
        .await
        .map_err(|source| ChannelError::Read {
            route: route.name.clone(),
            secret: secret.clone(),
            source,
        })?
        .ok_or_else(|| ChannelError::SecretMissing {
            route: route.name.clone(),
            secret: secret.clone(),
            vault: vault.to_string(),
        })?;
    WebhookUrl::parse(&value.value).map_err(|source| ChannelError::Url {
        route: route.name.clone(),
        secret: secret.clone(),
        source,
    })
}

/// The channels `AlertSweep` builds at each run, route by route: a route whose secret is
/// missing or unusable is reported and the others still deliver. Every channel honours
/// its receiver's `Retry-After` ([`Throttled`]).
pub struct VaultChannels {
    pub routes: Vec<Route>,
    pub secrets: Arc<dyn SecretStore>,
    /// Where the webhook routes' secrets are; `None`: no webhook route can be built.
    pub vault: Option<VaultUrl>,
    pub webhooks: WebhookClient,
    pub mail: Option<MailSetup>,
    pub event_source: Option<String>,
}

#[async_trait::async_trait]
impl ChannelSource for VaultChannels {
    async fn channels(&self) -> (Channels, Vec<(String, String)>) {
        let mut built: Channels = BTreeMap::new();
        let mut problems = Vec::new();
        for route in &self.routes {
            match channel(
                route,
                self.secrets.as_ref(),
                self.vault.as_ref(),
                &self.webhooks,
                self.mail.as_ref(),
                self.event_source.as_deref(),
            )
            .await
            {
                Ok(notifier) => {
                    built.insert(route.name.clone(), Arc::new(Throttled::new(notifier)));
                }
                Err(error) => problems.push((route.name.to_string(), error.to_string())),
            }
        }
        (built, problems)
    }
}
