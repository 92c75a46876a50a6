//! Start-up: the one place that chooses adapters (Azure or the embedded local store) from
//! settings and builds the services the functions share. Nothing below this module asks
//! which backend it runs on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use rustls::ServerConfig;

use crate::access::rate_limit::RateLimits;
use crate::adapters::appsettings::AppSettingsSource;
use crate::adapters::azure::audit::TableAuditStore;
mod anchor;
mod audit_reader;
mod compliance_reader;
mod credential;
mod evidence;
mod front_end;
mod inventory_reader;
pub mod notify;
mod plan_reader;

pub use audit_reader::{AuditLocation, audit_reader};
pub use compliance_reader::{ComplianceReaders, compliance_readers, compliance_register};
pub use evidence::{EvidenceSources, azure_sources, evidence_sources};
pub use inventory_reader::{InventoryLocation, inventory_reader};
pub use plan_reader::{PlanReaders, plan_readers, plan_readers_with};

pub use anchor::{
    Verification, public_key_file, read_public_key_file, verification, verification_with,
};

use crate::adapters::azure::alert_ledger::TableAlertLedger;
use crate::adapters::azure::client::resource_manager::ResourceManagerClient;
use crate::adapters::azure::client::table::{TableAuth, TableClient, TableName};
use crate::adapters::azure::graph::GraphClient;
use crate::adapters::azure::inventory::TableInventory;
use crate::adapters::azure::keyvault::{KeyVault, KeyVaultSource};
use crate::adapters::azure::lease::TableLeases;
use crate::adapters::azure::servicebus::ServiceBusQueue;
pub use crate::adapters::azure::signer::SignerOptions;
use crate::adapters::azure::table_source::TableSecretSource;
use crate::adapters::azure::token::EntraTokenProver;
use crate::adapters::azure::vault_catalog::{KEY_VAULT_SCOPE, KeyVaultCatalog};
use crate::adapters::local::alert_ledger::LocalAlertLedger;
use crate::adapters::local::audit::LocalAuditStore;
use crate::adapters::local::catalog::LocalCatalog;
use crate::adapters::local::directory::LocalDirectory;
use crate::adapters::local::inventory::LocalInventory;
use crate::adapters::local::lease::LocalLeases;
use crate::adapters::local::queue::{LocalQueue, QueueSettings};
use crate::adapters::local::store::LocalStore;
use crate::adapters::local::vault::LocalVault;
use crate::alerts::engine::AlertSettings;
use crate::alerts::routing::RoutingSettings;
use crate::audit::AuditLog;
use crate::config::{
    AuditCommandSettings, AuditSettings, Backend, CertPolicyName, CredentialSettings,
    DEFAULT_INVENTORY_TABLE, Environment, STORE_FILE, Settings, TableAccess, local_vault_url,
};
use crate::discovery::Discovery;
use crate::domain::clock::Clock;
use crate::domain::resources::QueueName;
use crate::domain::secret::SecretValue;
use crate::functions::alert_sweep::AlertServices;
use crate::functions::secret_endpoint::NAME as SECRET_ENDPOINT;
use crate::functions::secret_endpoint::{self, Endpoint};
use crate::functions::{DiscoveryServices, Services};
use crate::host::router::{AppState, router};
use crate::host::tls;
use crate::ports::alert_ledger::AlertLedger;
use crate::ports::inventory::InventoryStore;
use crate::ports::lease::ObjectLeases;
use crate::ports::vault::SecretStore;
pub use credential::{CredentialError, credential};

use crate::mtls::endpoint::{ChainConfig, EntraDeviceConfig, PolicyConfig};
use crate::mtls::entra_device::DeviceRequirements;
use crate::ports::audit::{AuditStore, ChainId};
use crate::ports::directory::DeviceDirectory;
use crate::ports::site::SiteConfiguration;
use crate::ports::source::SecretSource;
use crate::rotation::tags::{PolicyDefaults, ProofPolicy};
use crate::rotation::{Engine, Ports};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("audit store: {0}")]
    Audit(String),
    #[error("inventory store: {0}")]
    Inventory(String),
    #[error("alerts: {0}")]
    Alerts(String),
    #[error("local store in {path}: {problem}")]
    Local { path: String, problem: String },
    #[error("secret endpoint: {0}")]
    Endpoint(String),
    #[error("rotation: {0}")]
    Rotation(String),
    #[error("TLS listener: {0}")]
    Tls(String),
    /// The compliance exceptions register named (a file or a blob) cannot be read or is
    /// malformed.
    #[error(transparent)]
    Exceptions(#[from] crate::compliance::ExceptionError),
}

/// The audit log `keyturn audit verify` reads. Opening it makes no network call.
pub async fn audit_log(settings: &AuditCommandSettings) -> Result<AuditLog, StartupError> {
    AuditLog::start(audit_store(&settings.audit, &settings.credential, None, false).await?)
        .map_err(|e| StartupError::Audit(e.to_string()))
}

/// The audit store the settings choose. With `create`, a Table store makes sure its table
/// exists; failing that is logged, not fatal, because the deployment normally creates it
/// and appends report a missing table on their own. A SQLite store in the local
/// backends' file shares their connection.
async fn audit_store(
    audit: &AuditSettings,
    credential: &CredentialSettings,
    local: Option<&LocalBackends>,
    create: bool,
) -> Result<Arc<dyn AuditStore>, StartupError> {
    let store: Arc<dyn AuditStore> = match audit {
        AuditSettings::Sqlite { path } => {
            Arc::new(LocalAuditStore::new(local_audit_store(path, local)?))
        }
        AuditSettings::Table { table, access, .. } => {
            let client = table_client(credential, access)?;
            // A writer appends to a chain of its own, so that instances never race for
            // one position; verification, list and export read every chain.
            let store = if create {
                TableAuditStore::with_chain(client, table.clone(), ChainId::generate())
            } else {
                TableAuditStore::new(client, table.clone())
            };
            if create && let Err(error) = store.ensure_table().await {
                tracing::warn!(%error, "cannot make sure the audit table exists");
            }
            Arc::new(store)
        }
    };
    Ok(store)
}

/// The SQLite store holding the audit log at `path`: the local backends' when it is
/// their file (one connection for both), else opened.
fn local_audit_store(
    path: &Path,
    local: Option<&LocalBackends>,
) -> Result<LocalStore, StartupError> {
    match local {
        Some(local) if local.store.path() == path => Ok(local.store.clone()),
        _ => LocalStore::open(path).map_err(|e| StartupError::Audit(e.to_string())),
    }
}

/// The audit store the writer appends to and where it anchors its batches, as the
/// audit settings choose. A SQLite store keeps its checkpoints in itself (on the same
/// connection) and in the file beside it; a table store is anchored when the checkpoint
/// settings are given, with keyturn's credential (`given`, else the one the settings
/// choose).
async fn audit_writer(
    audit: &AuditSettings,
    credential_settings: &CredentialSettings,
    local: Option<&LocalBackends>,
    given: Option<Arc<dyn TokenCredential>>,
    signer: SignerOptions,
) -> Result<(Arc<dyn AuditStore>, Option<crate::audit::Anchor>), StartupError> {
    if let AuditSettings::Sqlite { path } = audit {
        let store = local_audit_store(path, local)?;
        let anchor = anchor::local_anchor(&store).await?;
        return Ok((Arc::new(LocalAuditStore::new(store)), Some(anchor)));
    }
    let store = audit_store(audit, credential_settings, local, true).await?;
    let anchor = audit_anchor(audit, credential_settings, given, signer).await?;
    Ok((store, anchor))
}

/// Where a table store's writer anchors its batches: in the checkpoint container when
/// the checkpoint settings are given, with keyturn's credential (`given`, else the one
/// the settings choose).
async fn audit_anchor(
    audit: &AuditSettings,
    credential_settings: &CredentialSettings,
    given: Option<Arc<dyn TokenCredential>>,
    signer: SignerOptions,
) -> Result<Option<crate::audit::Anchor>, StartupError> {
    match audit {
        AuditSettings::Sqlite { .. } => Ok(None),
        AuditSettings::Table {
            access,
            checkpoints: Some(checkpoints),
            ..
        } => {
            let credential = match given {
                Some(credential) => credential,
                None => credential(credential_settings)?,
            };
            anchor::azure_anchor(checkpoints, access, credential, signer).map(Some)
        }
        AuditSettings::Table {
            checkpoints: None, ..
        } => {
            tracing::warn!(
                "the audit log is not anchored: set KEYTURN_AUDIT_CHECKPOINT_ENDPOINT and KEYTURN_AUDIT_SIGNING_KEY so that truncation and a re-hashed chain are detected"
            );
            Ok(None)
        }
    }
}

/// `keyturn audit verify` against Table storage: the checkpoints from their container
/// and, without `key`, the public key from Key Vault, both read with `operator`'s
/// sign-in (`keyturn audit verify` passes the Azure CLI's).
async fn azure_verification(
    settings: &AuditCommandSettings,
    given: Option<crate::ports::checkpoint::KeyRing>,
    operator: impl FnOnce() -> Result<Arc<dyn TokenCredential>, StartupError>,
    signer: SignerOptions,
) -> Result<Verification, StartupError> {
    use crate::ports::checkpoint::VerifyingKeys;
    let store = audit_store(&settings.audit, &settings.credential, None, false).await?;
    let AuditSettings::Table {
        access,
        checkpoints: Some(checkpoints),
        ..
    } = &settings.audit
    else {
        return Ok(Verification {
            store,
            checkpoints: None,
            keys: given.map(|ring| Arc::new(ring) as Arc<dyn VerifyingKeys>),
        });
    };
    // The operator signs in only where something needs a token: the container when
    // the table is reached with an identity, Key Vault when no key file is given.
    let needs_sign_in = matches!(access, TableAccess::Identity { .. }) || given.is_none();
    let credential = if needs_sign_in {
        Some(operator()?)
    } else {
        None
    };
    let signed_in = || {
        credential
            .clone()
            .ok_or_else(|| StartupError::Audit("no sign-in for the checkpoint container".into()))
    };
    let container = anchor::blob_checkpoints(checkpoints, access, signed_in)?;
    let keys: Arc<dyn VerifyingKeys> = match given {
        Some(ring) => Arc::new(ring),
        None => {
            // Each checkpoint's key version is read from Key Vault as it is named; the
            // configured key is read now, so a missing read role shows before any work.
            let signer = anchor::key_vault_signer(checkpoints, signed_in()?, signer)?;
            let versions = crate::adapters::azure::signer::KeyVaultVersions::new(signer)
                .await
                .map_err(|e| {
                    StartupError::Audit(format!(
                        "{e} (or pass the key's public key files with --public-key FILE)"
                    ))
                })?;
            Arc::new(versions)
        }
    };
    Ok(Verification {
        store,
        checkpoints: Some(Arc::new(container)),
        keys: Some(keys),
    })
}

fn table_client(
    credential_settings: &CredentialSettings,
    access: &TableAccess,
) -> Result<TableClient, StartupError> {
    match access {
        TableAccess::Identity { endpoint } => TableClient::new(
            endpoint.clone(),
            TableAuth::Token(credential(credential_settings)?),
            None,
        ),
        TableAccess::ConnectionString { connection_string } => {
            TableClient::from_connection_string(connection_string, None)
        }
    }
    .map_err(|e| StartupError::Audit(e.to_string()))
}

/// The adapters start-up chose: Azure services reached with keyturn's credential, or the
/// embedded store of local mode.
pub(crate) enum Backends {
    Azure(AzureBackends),
    Local(LocalBackends),
}

/// What every Azure adapter is built with.
pub(crate) struct AzureBackends {
    pub credential: Arc<dyn TokenCredential>,
}

/// The embedded store and every port that lives in it, opened once.
#[derive(Clone)]
pub(crate) struct LocalBackends {
    pub store: LocalStore,
    pub vault: LocalVault,
    pub directory: LocalDirectory,
    pub queue: LocalQueue,
}

/// How the embedded store is opened.
pub(crate) struct LocalOptions<'a> {
    pub data_dir: &'a Path,
    /// `KEYTURN_LOCAL_VAULT_KEY`; `None`: the key file beside the store.
    pub vault_key: Option<&'a SecretValue>,
    pub queue: &'a QueueName,
    pub propagation: chrono::TimeDelta,
    pub flapping: bool,
}

/// Why the embedded store cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LocalOpenError {
    #[error("{0}")]
    Store(#[from] crate::adapters::local::store::StoreError),
    #[error("{0}")]
    Other(String),
}

impl LocalBackends {
    /// The one place the embedded store is opened: `serve` on the local backend, `keyturn
    /// dev` and `keyturn vault` all come here.
    pub(crate) async fn open(
        options: LocalOptions<'_>,
        clock: &Clock,
    ) -> Result<Self, LocalOpenError> {
        let other = |e: &dyn std::fmt::Display| LocalOpenError::Other(e.to_string());
        let path = options.data_dir.join(STORE_FILE);
        let store = LocalStore::open(&path)?;
        let key = LocalVault::key_from_setting_or_file(options.vault_key, &path)
            .map_err(|e| other(&e))?;
        let vault = LocalVault::open(store.clone(), key, clock.clone())
            .await
            .map_err(|e| other(&e))?;
        let directory = LocalDirectory::new(store.clone(), clock.clone())
            .with_propagation_delay(options.propagation)
            .with_flapping(options.flapping);
        let queue = LocalQueue::new(
            store.clone(),
            options.queue.as_str(),
            QueueSettings::default(),
            clock.clone(),
        )
        .map_err(|e| other(&e))?;
        Ok(Self {
            store,
            vault,
            directory,
            queue,
        })
    }
}

/// The backends the settings choose.
pub(crate) async fn backends(settings: &Settings, clock: &Clock) -> Result<Backends, StartupError> {
    match settings.host.backend {
        Backend::Azure => Ok(Backends::Azure(AzureBackends {
            credential: credential(&settings.credential)?,
        })),
        Backend::Local => {
            let data_dir = &settings.local.data_dir;
            let options = LocalOptions {
                data_dir,
                vault_key: settings.local.vault_key.as_ref(),
                queue: &settings.rotation.queue,
                propagation: chrono::TimeDelta::seconds(
                    i64::try_from(settings.local.propagation_seconds).unwrap_or(0),
                ),
                flapping: settings.local.flapping,
            };
            let local =
                LocalBackends::open(options, clock)
                    .await
                    .map_err(|e| StartupError::Local {
                        path: data_dir.join(STORE_FILE).display().to_string(),
                        problem: e.to_string(),
                    })?;
            Ok(Backends::Local(local))
        }
    }
}

/// Everything the functions share, from settings.
pub async fn services(settings: &Settings, env: &Environment) -> Result<Services, StartupError> {
    services_with(settings, env, Overrides::default()).await
}

/// What a caller puts in place of parts start-up would build from settings. `serve`
/// passes none; the tests parse their settings like `serve` and put only in-memory ports,
/// a manual clock or a chosen audit store here.
#[derive(Default)]
pub struct Overrides {
    /// The clock the functions and the rotation engine read.
    pub clock: Option<Clock>,
    /// The audit store, in place of the one `KEYTURN_AUDIT_STORE` chooses.
    pub audit: Option<Arc<dyn AuditStore>>,
    /// Starts the audit log the settings choose without its checkpoints: the reference
    /// `benches/endpoint.rs` measures what the checkpoints cost against, everything
    /// else started as `serve` starts it. `serve` never sets it.
    pub unanchored_audit: bool,
    /// The rotation ports, in place of the backend's.
    pub rotation: Option<RotationOverride>,
    /// Endpoint sources added to the configured ones (a name already configured is
    /// replaced).
    pub sources: BTreeMap<String, Arc<dyn SecretSource>>,
    /// The device directory the entra-device policy asks, in place of the backend's.
    pub directory: Option<Arc<dyn DeviceDirectory>>,
    /// keyturn's Azure credential, in place of the one `KEYTURN_CREDENTIAL` chooses.
    pub credential: Option<Arc<dyn TokenCredential>>,
    /// Client options (transport, retries) of the Resource Manager client the front-end
    /// check reads the site with.
    pub resource_manager_options: Option<azure_core::http::ClientOptions>,
    /// What the front-end check reads the site's configuration from, in place of Azure
    /// Resource Manager.
    pub site: Option<Arc<dyn SiteConfiguration>>,
    /// How the audit checkpoints' Key Vault signer reaches the vault (transport, the
    /// challenge check), in place of keyturn's defaults.
    pub signer_options: Option<SignerOptions>,
    /// The HTTP client alert webhooks are posted with (tests trust their CA with it).
    pub webhooks: Option<crate::adapters::notify::WebhookClient>,
}

/// Rotation ports put in place of the backend's.
pub enum RotationOverride {
    /// The engine over these ports, waiting through `pause` where given.
    Ports {
        ports: Ports,
        pause: Option<Arc<dyn crate::rotation::Pause>>,
    },
    /// No rotation engine, as where no rotation adapters are configured.
    Absent,
}

/// [`services`] with `overrides` in place of what the settings would build.
pub async fn services_with(
    settings: &Settings,
    env: &Environment,
    overrides: Overrides,
) -> Result<Services, StartupError> {
    let Overrides {
        clock,
        audit,
        unanchored_audit,
        rotation,
        sources,
        directory,
        credential: given_credential,
        resource_manager_options,
        site,
        signer_options,
        webhooks,
    } = overrides;
    let evidence_signer = signer_options.clone().unwrap_or_default();
    let clock = clock.unwrap_or_else(Clock::system);
    let backends = match (&given_credential, settings.host.backend) {
        (Some(credential), Backend::Azure) => Backends::Azure(AzureBackends {
            credential: credential.clone(),
        }),
        _ => backends(settings, &clock).await?,
    };
    let local = match &backends {
        Backends::Local(local) => Some(local),
        Backends::Azure(_) => None,
    };
    let (store, anchor) = match audit {
        Some(store) => (store, None),
        None => {
            audit_writer(
                &settings.audit,
                &settings.credential,
                local,
                given_credential.clone(),
                signer_options.unwrap_or_default(),
            )
            .await?
        }
    };
    let anchor = anchor.filter(|_| !unanchored_audit);
    let audit =
        AuditLog::start_anchored(store, anchor).map_err(|e| StartupError::Audit(e.to_string()))?;
    let mut endpoint_backends = EndpointBackends::of(&backends);
    if let Some(directory) = directory {
        endpoint_backends = endpoint_backends.with_directory(directory);
    }
    let mut endpoint = endpoint(settings, env, endpoint_backends, sources)?;
    if settings.endpoint.trust_arr_header
        && settings.host.enabled_functions.contains(&SECRET_ENDPOINT)
    {
        let credential = match (&given_credential, &backends) {
            (Some(credential), _) => Some(credential.clone()),
            (None, Backends::Azure(azure)) => Some(azure.credential.clone()),
            (None, Backends::Local(_)) => credential(&settings.credential).ok(),
        };
        let gate = front_end::gate(front_end::SiteSource {
            site,
            credential,
            options: resource_manager_options,
            settings,
        })
        .await;
        endpoint = endpoint.with_front_end_gate(gate);
    }
    let rotation = match rotation {
        _ if !settings.rotation_enabled() => None,
        Some(RotationOverride::Absent) => None,
        Some(RotationOverride::Ports { ports, pause }) => {
            let engine = rotation_engine(settings, ports, clock.clone())?;
            Some(Arc::new(match pause {
                Some(pause) => engine.with_pause(pause),
                None => engine,
            }))
        }
        None => {
            let ports = match &backends {
                Backends::Local(local) => local_rotation_ports(local),
                Backends::Azure(azure) => azure_rotation_ports(settings, &azure.credential)?,
            };
            let leases = object_leases(settings, &backends).await?;
            Some(Arc::new(
                rotation_engine(settings, ports, clock.clone())?.with_fence(leases),
            ))
        }
    };
    // Discovery runs where rotation does (the rotator app); the endpoint keeps no inventory.
    let inventory = if settings.rotation_enabled() {
        Some(inventory_store(settings, env, &backends)?)
    } else {
        None
    };
    let discovery = match &inventory {
        Some(store) => discovery(settings, &backends, store.clone(), &clock)?.map(Arc::new),
        None => None,
    };
    let alerts = match &inventory {
        Some(_) => Some(Arc::new(alert_services(settings, &backends, webhooks)?)),
        None => None,
    };
    // The scheduled export reads the inventory too: it runs in the rotator app.
    let evidence = match (&inventory, &alerts) {
        (Some(store), Some(alerts))
            if settings
                .host
                .enabled_functions
                .contains(&crate::domain::function::Function::EvidenceExport) =>
        {
            let app_credential = || match (&given_credential, &backends) {
                (Some(credential), _) => Ok(credential.clone()),
                (None, Backends::Azure(azure)) => Ok(azure.credential.clone()),
                (None, Backends::Local(_)) => {
                    credential(&settings.credential).map_err(StartupError::from)
                }
            };
            evidence::scheduled(
                settings,
                app_credential,
                evidence_signer,
                store.clone(),
                alerts.ledger.clone(),
            )?
            .map(Arc::new)
        }
        _ => None,
    };
    Ok(Services {
        audit,
        clock,
        endpoint: Arc::new(endpoint),
        rotation,
        inventory,
        discovery,
        alerts,
        evidence,
    })
}

/// What `AlertSweep` runs on: the ledger beside the inventory (the embedded store, or
/// `KEYTURN_ALERT_TABLE` in the audit log's account, which the deployment creates), the
/// routes' channels read from the vault at each run (the local vault, or
/// `KEYTURN_ALERT_VAULT` with keyturn's identity) and the engine's settings. No network
/// call is made here.
fn alert_services(
    settings: &Settings,
    backends: &Backends,
    webhooks: Option<crate::adapters::notify::WebhookClient>,
) -> Result<AlertServices, StartupError> {
    let failed = |e: &dyn std::fmt::Display| StartupError::Alerts(e.to_string());
    let config = &settings.alerts;
    let ledger: Arc<dyn AlertLedger> = match (backends, &settings.audit) {
        (Backends::Local(local), _) => Arc::new(LocalAlertLedger::new(local.store.clone())),
        (Backends::Azure(_), AuditSettings::Table { access, .. }) => {
            Arc::new(TableAlertLedger::new(
                table_client(&settings.credential, access)?,
                config.table.clone(),
            ))
        }
        (Backends::Azure(_), AuditSettings::Sqlite { path }) => Arc::new(LocalAlertLedger::new(
            LocalStore::open(path).map_err(|e| failed(&e))?,
        )),
    };
    let webhooks = match webhooks {
        Some(webhooks) => webhooks,
        None => crate::adapters::notify::WebhookClient::new(None).map_err(|e| failed(&e))?,
    };
    let (secrets, vault, mail): (Arc<dyn SecretStore>, _, _) = match backends {
        Backends::Local(local) => (
            Arc::new(local.vault.clone()),
            Some(config.vault.clone().unwrap_or_else(local_vault_url)),
            None,
        ),
        Backends::Azure(azure) => {
            let mail = match &config.mailbox {
                Some(mailbox) => Some(notify::MailSetup {
                    graph: GraphClient::new(
                        &settings.entra.graph_endpoint,
                        azure.credential.clone(),
                        None,
                    )
                    .map_err(|e| failed(&e))?,
                    mailbox: mailbox.clone(),
                }),
                None => None,
            };
            let mut vault = KeyVault::new(azure.credential.clone(), None);
            if config.any_vault_host {
                // Loopback stand-ins answer Key Vault's challenge for `vault.azure.net` from
                // a host that cannot be under it; the setting is for them alone.
                vault = vault.without_challenge_resource_check();
            }
            (Arc::new(vault), config.vault.clone(), mail)
        }
    };
    let engine_settings = AlertSettings {
        thresholds: config.thresholds.clone(),
        routing: RoutingSettings::new(&config.routes, config.default_route.clone()),
        defaults: policy_defaults(settings)?,
        digest_every: chrono::TimeDelta::days(i64::from(config.digest_days)),
        digest_horizon: chrono::TimeDelta::days(i64::from(config.digest_horizon_days)),
    };
    Ok(AlertServices {
        ledger,
        channels: Arc::new(notify::VaultChannels {
            routes: config.routes.clone(),
            secrets,
            vault,
            webhooks,
            mail,
            event_source: None,
        }),
        settings: engine_settings,
    })
}

/// Discovery over the backend's catalogs, writing into `store`: local mode's vault and
/// directory, or Resource Manager, Key Vault and Graph with keyturn's identity, its jobs
/// on the discovery queue. `None` on Azure where the Service Bus namespace or Resource
/// Manager is not known (the functions then fail retryably, naming what is missing).
fn discovery(
    settings: &Settings,
    backends: &Backends,
    store: Arc<dyn InventoryStore>,
    clock: &Clock,
) -> Result<Option<DiscoveryServices>, StartupError> {
    let failed = |e: &dyn std::fmt::Display| StartupError::Inventory(e.to_string());
    let configured = settings.rotation.discovery_budgets;
    let budgets = crate::discovery::budget::Budgets {
        key_vault_per_vault: configured.key_vault_per_vault,
        graph: configured.graph,
        resource_manager: configured.resource_manager,
    };
    let queue_name = settings.rotation.discovery_queue.as_str();
    let (engine, queue): (Discovery, Arc<dyn crate::ports::queue::JobQueue>) = match backends {
        Backends::Local(local) => {
            let catalog = Arc::new(LocalCatalog::for_local_vault(
                Arc::new(local.vault.clone()),
                Arc::new(local.vault.clone()),
                local.directory.clone(),
            ));
            let queue = LocalQueue::new(
                local.store.clone(),
                queue_name,
                QueueSettings::default(),
                clock.clone(),
            )
            .map_err(|e| failed(&e))?;
            (
                Discovery::new(catalog.clone(), catalog.clone(), catalog, store, budgets),
                Arc::new(queue),
            )
        }
        Backends::Azure(azure) => {
            let (Some(namespace), Some(resource_manager)) = (
                settings.rotation.service_bus_namespace.as_ref(),
                settings.entra.resource_manager_endpoint.as_ref(),
            ) else {
                tracing::warn!(
                    "discovery is off: the Service Bus namespace or Resource Manager endpoint is not set"
                );
                return Ok(None);
            };
            let credential = azure.credential.clone();
            let resources = ResourceManagerClient::new(resource_manager, credential.clone(), None)
                .map_err(|e| failed(&e))?;
            let scope = settings.entra.cloud().map_or_else(
                || KEY_VAULT_SCOPE.to_owned(),
                |cloud| {
                    format!(
                        "https://{}/.default",
                        cloud.key_vault_suffix().trim_start_matches('.')
                    )
                },
            );
            let vaults = KeyVaultCatalog::new(credential.clone(), &scope, None);
            let directory =
                GraphClient::new(&settings.entra.graph_endpoint, credential.clone(), None)
                    .map_err(|e| failed(&e))?;
            let queue = ServiceBusQueue::new(namespace.as_str(), queue_name, credential, None)
                .map_err(|e| failed(&e))?;
            (
                Discovery::new(
                    Arc::new(resources),
                    Arc::new(vaults),
                    Arc::new(directory),
                    store,
                    budgets,
                ),
                Arc::new(queue),
            )
        }
    };
    Ok(Some(DiscoveryServices {
        engine,
        queue,
        subscriptions: settings.rotation.discovery_subscriptions.clone(),
    }))
}

/// Where discovery keeps the inventory: the embedded store locally, Table storage (the
/// audit log's account, `KEYTURN_INVENTORY_TABLE`) on Azure. No network call: the
/// deployment creates the table, and a write to a missing one fails naming it.
fn inventory_store(
    settings: &Settings,
    env: &Environment,
    backends: &Backends,
) -> Result<Arc<dyn InventoryStore>, StartupError> {
    let failed = |e: &dyn std::fmt::Display| StartupError::Inventory(e.to_string());
    match (backends, &settings.audit) {
        (Backends::Local(local), _) => Ok(Arc::new(LocalInventory::new(local.store.clone()))),
        (Backends::Azure(_), AuditSettings::Table { access, .. }) => {
            let name = env
                .value("KEYTURN_INVENTORY_TABLE")
                .unwrap_or(DEFAULT_INVENTORY_TABLE);
            let table = TableName::parse(name).map_err(|e| failed(&e))?;
            Ok(Arc::new(TableInventory::new(
                table_client(&settings.credential, access)?,
                table,
            )))
        }
        (Backends::Azure(_), AuditSettings::Sqlite { path }) => Ok(Arc::new(LocalInventory::new(
            LocalStore::open(path).map_err(|e| failed(&e))?,
        ))),
    }
}

/// The state the router serves: the services and the settings' vaults.
pub fn app_state(settings: &Settings, services: Services) -> AppState {
    AppState {
        services: Arc::new(services),
        vaults: Arc::new(settings.rotation.vaults.clone()),
    }
}

/// The rotation engine over `ports`, with the settings' vaults and policy defaults.
pub fn rotation_engine(
    settings: &Settings,
    ports: Ports,
    clock: Clock,
) -> Result<Engine, StartupError> {
    let defaults = policy_defaults(settings)?;
    // The delivery after which the queue dead-letters a job: the local queue's own
    // setting, or the Service Bus queue's maxDeliveryCount as Bicep deploys it (the same).
    let max_deliveries = match settings.host.backend {
        crate::config::Backend::Local => QueueSettings::default().max_delivery_count,
        crate::config::Backend::Azure => crate::ports::queue::MAX_DELIVERY_COUNT,
    };
    Ok(
        Engine::new(ports, settings.rotation.vaults.clone(), defaults, clock)
            .with_max_deliveries(max_deliveries),
    )
}

fn policy_defaults(settings: &Settings) -> Result<PolicyDefaults, StartupError> {
    rotation_policy_defaults(settings.rotation.defaults)
}

/// The policy for untagged objects, as the engine reads it from the settings.
pub(crate) fn rotation_policy_defaults(
    d: crate::config::RotationDefaults,
) -> Result<PolicyDefaults, StartupError> {
    let proof = ProofPolicy::new(
        d.proof_successes,
        d.proof_window_seconds,
        d.proof_deadline_minutes,
    )
    .map_err(|e| StartupError::Rotation(e.to_string()))?;
    PolicyDefaults::new(d.validity_days, d.rotate_before_days, d.overlap_days)
        .map(|defaults| defaults.with_proof(proof))
        .map_err(|e| StartupError::Rotation(e.to_string()))
}

/// The Table that keeps the rotation leases, next to the audit table (the Bicep deploys it
/// under this name).
const LEASE_TABLE: &str = "keyturnleases";

/// Where the rotation engine keeps the leases that fence instances off each other's
/// objects: the embedded store locally, Table storage (the audit log's account) on Azure.
async fn object_leases(
    settings: &Settings,
    backends: &Backends,
) -> Result<Arc<dyn ObjectLeases>, StartupError> {
    let failed = |e: &dyn std::fmt::Display| StartupError::Rotation(e.to_string());
    match (backends, &settings.audit) {
        (Backends::Local(local), _) => Ok(Arc::new(LocalLeases::new(local.store.clone()))),
        (Backends::Azure(_), AuditSettings::Table { access, .. }) => {
            let table = TableName::parse(LEASE_TABLE).map_err(|e| failed(&e))?;
            let leases = TableLeases::new(table_client(&settings.credential, access)?, table);
            if let Err(error) = leases.ensure_table().await {
                tracing::warn!(%error, "cannot make sure the lease table exists");
            }
            Ok(Arc::new(leases))
        }
        (Backends::Azure(_), AuditSettings::Sqlite { path }) => Ok(Arc::new(LocalLeases::new(
            LocalStore::open(path).map_err(|e| failed(&e))?,
        ))),
    }
}

/// Rotation on the embedded store: the local vault, the local directory (as credential
/// issuer and token prover) and the local queue.
fn local_rotation_ports(local: &LocalBackends) -> Ports {
    Ports {
        secrets: Arc::new(local.vault.clone()),
        certificates: Arc::new(local.vault.clone()),
        directory: Arc::new(local.directory.clone()),
        prover: Arc::new(local.directory.clone()),
        queue: Arc::new(local.queue.clone()),
    }
}

/// Rotation on Azure: Key Vault through the official crates, Graph, the tenant's token
/// endpoint and the Service Bus queue, all with keyturn's identity (the token prover uses
/// the credential being proven, nothing of keyturn's).
fn azure_rotation_ports(
    settings: &Settings,
    credential: &Arc<dyn TokenCredential>,
) -> Result<Ports, StartupError> {
    let failed = |e: &dyn std::fmt::Display| StartupError::Rotation(e.to_string());
    let vault = Arc::new(KeyVault::new(credential.clone(), None));
    let graph = GraphClient::new(&settings.entra.graph_endpoint, credential.clone(), None)
        .map_err(|e| failed(&e))?;
    let tenant = settings.entra.tenant_id.as_ref().ok_or_else(|| {
        StartupError::Rotation(
            "AZURE_TENANT_ID is not set; the token prover needs the tenant".into(),
        )
    })?;
    let scope = format!(
        "{}/.default",
        settings.entra.graph_endpoint.as_str().trim_end_matches('/')
    );
    let prover = EntraTokenProver::new(&settings.entra.authority_host, tenant, scope, None)
        .map_err(|e| failed(&e))?;
    let namespace = settings
        .rotation
        .service_bus_namespace
        .as_ref()
        .ok_or_else(|| {
            StartupError::Rotation(
                "ServiceBusConnection__fullyQualifiedNamespace is not set".into(),
            )
        })?;
    let queue = ServiceBusQueue::new(
        namespace.as_str(),
        settings.rotation.queue.as_str(),
        credential.clone(),
        None,
    )
    .map_err(|e| failed(&e))?;
    Ok(Ports {
        secrets: vault.clone(),
        certificates: vault,
        directory: Arc::new(graph),
        prover: Arc::new(prover),
        queue: Arc::new(queue),
    })
}

/// What the endpoint's backends come from: keyturn's Azure credential, or the local
/// vault's source and directory.
enum EndpointBackends<'a> {
    Azure {
        credential: &'a Arc<dyn TokenCredential>,
        directory: Option<Arc<dyn DeviceDirectory>>,
    },
    Local {
        source: Arc<dyn SecretSource>,
        directory: Arc<dyn DeviceDirectory>,
    },
}

impl<'a> EndpointBackends<'a> {
    fn of(backends: &'a Backends) -> Self {
        match backends {
            Backends::Azure(azure) => Self::Azure {
                credential: &azure.credential,
                directory: None,
            },
            Backends::Local(local) => Self::Local {
                source: Arc::new(local.vault.source(local_vault_url())),
                directory: Arc::new(local.directory.clone()),
            },
        }
    }

    /// These backends with `directory` as the device directory.
    fn with_directory(self, directory: Arc<dyn DeviceDirectory>) -> Self {
        match self {
            Self::Azure { credential, .. } => Self::Azure {
                credential,
                directory: Some(directory),
            },
            Self::Local { source, .. } => Self::Local { source, directory },
        }
    }
}

/// keyturn's own TLS listener configuration, when one is configured and the
/// SecretEndpoint is served: the certificate chain and key, read with a size cap.
pub fn tls_config(settings: &Settings) -> Result<Option<Arc<ServerConfig>>, StartupError> {
    match &settings.endpoint.tls {
        Some(tls) if settings.host.enabled_functions.contains(&SECRET_ENDPOINT) => {
            tls::server_config(&tls.certificate, &tls.key)
                .map(Some)
                .map_err(|e| StartupError::Tls(e.to_string()))
        }
        _ => Ok(None),
    }
}

/// Why keyturn's own TLS listener did not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsStartError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start TLS: {0}")]
    Start(std::io::Error),
}

/// Starts keyturn's own TLS listener on `address` with the configuration
/// [`tls_config`] built, serving only the SecretEndpoint over `state` until `shutdown`
/// resolves (in-flight requests then finish). The handshakes it refuses are audited as
/// the SecretEndpoint's refusals, folded (`secret_endpoint::refuse_handshake`).
pub async fn spawn_tls(
    address: SocketAddr,
    config: Arc<ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tls::TlsServer, TlsStartError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| TlsStartError::Bind { address, source })?;
    let services = state.services.clone();
    let refusals = tls::HandshakeRefusals::new(move |source, reason| {
        let services = services.clone();
        Box::pin(async move {
            if let Err(error) = secret_endpoint::refuse_handshake(&services, source, reason).await {
                tracing::error!(%error, reason, "a refused TLS handshake could not be audited");
            }
        })
    });
    let app = router(state, &[SECRET_ENDPOINT]);
    tls::spawn(listener, config, app, refusals, shutdown).map_err(TlsStartError::Start)
}

/// Everything start-up builds from files and settings, built and dropped: what
/// `keyturn config check` runs, so it refuses what `serve` would refuse (trust
/// material, the access policy and its backends, the TLS certificate and key, the
/// connection string, the credential, the rotation clients). It opens no store, creates
/// nothing and makes no network call; the local store's vault and directory are stood
/// in for by [`Unopened`].
pub fn check(settings: &Settings, env: &Environment) -> Result<(), StartupError> {
    tls_config(settings)?;
    if let AuditSettings::Table { access, .. } = &settings.audit {
        table_client(&settings.credential, access)?;
    }
    let azure_credential = match settings.host.backend {
        Backend::Azure => Some(credential(&settings.credential)?),
        Backend::Local => None,
    };
    let backends = match &azure_credential {
        Some(credential) => EndpointBackends::Azure {
            credential,
            directory: None,
        },
        None => EndpointBackends::Local {
            source: Arc::new(Unopened),
            directory: Arc::new(Unopened),
        },
    };
    endpoint(settings, env, backends, BTreeMap::new())?;
    if settings.rotation_enabled() {
        if let Some(credential) = &azure_credential {
            azure_rotation_ports(settings, credential)?;
        }
        policy_defaults(settings)?;
    }
    Ok(())
}

/// The local store's parts as `keyturn config check` sees them: named, never opened.
#[derive(Debug)]
struct Unopened;

const UNOPENED: &str = "the local store is not opened by a configuration check";

#[async_trait::async_trait]
impl SecretSource for Unopened {
    async fn fetch(
        &self,
        _: &crate::domain::names::ObjectName,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<crate::ports::source::SourcedSecret>, crate::ports::PortError> {
        Err(crate::ports::PortError::transient(UNOPENED))
    }
}

#[async_trait::async_trait]
impl DeviceDirectory for Unopened {
    async fn device(
        &self,
        _: &crate::domain::ids::DeviceId,
    ) -> Result<Option<crate::ports::directory::Device>, crate::ports::PortError> {
        Err(crate::ports::PortError::transient(UNOPENED))
    }
}

/// The SecretEndpoint: certificate policies, the access policy, and the backends this app
/// has: `appsettings` always, `table` when a secrets table is set, `keyvault` when a
/// secrets vault is set (Azure), `local` on the local backend.
fn endpoint(
    settings: &Settings,
    env: &Environment,
    backends: EndpointBackends<'_>,
    extra_sources: BTreeMap<String, Arc<dyn SecretSource>>,
) -> Result<Endpoint, StartupError> {
    let e = &settings.endpoint;
    let (local, azure_credential, given_directory) = match backends {
        EndpointBackends::Local { source, directory } => (Some((source, directory)), None, None),
        EndpointBackends::Azure {
            credential,
            directory,
        } => (None, Some(credential), directory),
    };
    let mut sources: BTreeMap<String, Arc<dyn SecretSource>> = BTreeMap::new();
    sources.insert(
        "appsettings".into(),
        Arc::new(AppSettingsSource::from_settings(
            &e.appsettings_prefix,
            env.prefixed(&e.appsettings_prefix),
        )),
    );
    if let (Some(table), Some(access)) = (&e.secrets_table, &e.secrets_table_access) {
        let client = table_client(&settings.credential, access)?;
        sources.insert(
            "table".into(),
            Arc::new(TableSecretSource::new(client, table.clone())),
        );
    }
    if let (Some(vault), Some(credential)) = (&e.secrets_vault, azure_credential) {
        sources.insert(
            "keyvault".into(),
            Arc::new(KeyVaultSource::new(vault.clone(), credential.clone(), None)),
        );
    }
    let mut directory: Option<Arc<dyn DeviceDirectory>> = None;
    if let Some((source, local_directory)) = local {
        sources.insert("local".into(), source);
        directory = Some(local_directory);
    }
    if let Some(given) = given_directory {
        directory = Some(given);
    } else if let Some(credential) = azure_credential
        && e.uses(CertPolicyName::EntraDevice)
    {
        let graph = GraphClient::new(&settings.entra.graph_endpoint, credential.clone(), None)
            .map_err(|err| StartupError::Endpoint(err.to_string()))?;
        directory = Some(Arc::new(graph));
    }
    sources.extend(extra_sources);
    let limits = RateLimits {
        per_identity: Some(e.rate_limit_per_identity),
        per_address: Some(e.rate_limit_per_address),
    };
    Endpoint::from_config(
        &policy_config(settings),
        e.access_policy.as_deref(),
        sources,
        directory,
        limits,
    )
    .map_err(|err| StartupError::Endpoint(err.to_string()))
}

/// The certificate-policy part of the settings.
pub(crate) fn policy_config(settings: &Settings) -> PolicyConfig {
    let e = &settings.endpoint;
    PolicyConfig {
        trust_arr_header: e.trust_arr_header,
        thumbprints: e.uses(CertPolicyName::TrustedThumbprints).then(|| {
            e.trusted_thumbprints
                .iter()
                .map(ToString::to_string)
                .collect()
        }),
        chain: e.chain.as_ref().map(|c| ChainConfig {
            roots: c.roots.clone(),
            intermediates: c.intermediates.clone(),
            crls: c.crls.clone(),
            check_revocation: c.check_revocation,
            clock_skew: Duration::from_secs(c.clock_skew_seconds),
        }),
        entra_device: e.entra_device.as_ref().map(|d| EntraDeviceConfig {
            roots: d.roots.clone(),
            requirements: DeviceRequirements {
                compliant: d.require_compliant,
                managed: d.require_managed,
            },
            cache_ttl: Duration::from_secs(d.cache_seconds),
            clock_skew: Duration::from_secs(d.clock_skew_seconds),
        }),
    }
}
