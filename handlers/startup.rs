//! Start-up: the one place that chooses adapters (Azure or the embedded local store) from
//! settings and builds the services the functions share. Nothing below this module asks
//! which backend it runs on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;

use crate::access::rate_limit::RateLimits;
use crate::adapters::appsettings::AppSettingsSource;
use crate::adapters::azure::audit::TableAuditStore;
use crate::adapters::azure::graph::GraphClient;
use crate::adapters::azure::identity::{CredentialError, credential};
use crate::adapters::azure::keyvault::{KeyVault, KeyVaultSource};
use crate::adapters::azure::servicebus::ServiceBusQueue;
use crate::adapters::azure::table::{TableAuth, TableClient, TableName};
use crate::adapters::azure::table_source::TableSecretSource;
use crate::adapters::azure::token::EntraTokenProver;
use crate::adapters::local::audit::LocalAuditStore;
use crate::adapters::local::directory::LocalDirectory;
use crate::adapters::local::queue::{LocalQueue, QueueSettings};
use crate::adapters::local::store::LocalStore;
use crate::adapters::local::vault::LocalVault;
use crate::audit::AuditLog;
use crate::config::{
    AuditSettings, Backend, CertPolicyName, Environment, ROTATION_FUNCTIONS, Settings, TableAccess,
};
use crate::domain::clock::Clock;
use crate::domain::secret::SecretValue;
use crate::functions::Services;
use crate::functions::secret_endpoint::Endpoint;
use crate::local::vault_cli::{STORE_FILE, local_vault_url};
use crate::mtls::endpoint::{ChainConfig, EntraDeviceConfig, PolicyConfig};
use crate::mtls::entra_device::DeviceRequirements;
use crate::ports::audit::AuditStore;
use crate::ports::directory::DeviceDirectory;
use crate::ports::source::SecretSource;
use crate::rotation::tags::PolicyDefaults;
use crate::rotation::{Engine, Ports};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("audit store: {0}")]
    Audit(String),
    #[error("local store in {path}: {problem}")]
    Local { path: String, problem: String },
    #[error("secret endpoint: {0}")]
    Endpoint(String),
    #[error("rotation: {0}")]
    Rotation(String),
}

/// The audit log the settings choose. Opening it makes no network call.
pub async fn audit_log(settings: &Settings) -> Result<AuditLog, StartupError> {
    AuditLog::start(audit_store(settings, false).await?)
        .map_err(|e| StartupError::Audit(e.to_string()))
}

/// The audit store the settings choose. With `create`, a Table store makes sure its table
/// exists; failing that is logged, not fatal, because the deployment normally creates it
/// and appends report a missing table on their own.
async fn audit_store(
    settings: &Settings,
    create: bool,
) -> Result<Arc<dyn AuditStore>, StartupError> {
    let store: Arc<dyn AuditStore> = match &settings.audit {
        AuditSettings::Sqlite { path } => {
            let store = LocalStore::open(path).map_err(|e| StartupError::Audit(e.to_string()))?;
            Arc::new(LocalAuditStore::new(store))
        }
        AuditSettings::Table { table, access } => {
            let client = table_client(settings, access)?;
            let table = TableName::parse(table).map_err(|e| StartupError::Audit(e.to_string()))?;
            let store = TableAuditStore::new(client, table);
            if create && let Err(error) = store.ensure_table().await {
                tracing::warn!(%error, "cannot make sure the audit table exists");
            }
            Arc::new(store)
        }
    };
    Ok(store)
}

fn table_client(settings: &Settings, access: &TableAccess) -> Result<TableClient, StartupError> {
    match access {
        TableAccess::Identity { endpoint } => TableClient::new(
            endpoint.clone(),
            TableAuth::Token(credential(&settings.credential)?),
            None,
        ),
        TableAccess::ConnectionString { connection_string } => {
            TableClient::from_connection_string(connection_string, None)
        }
    }
    .map_err(|e| StartupError::Audit(e.to_string()))
}

/// The embedded store's parts, opened once for every port that lives in it.
struct LocalParts {
    vault: LocalVault,
    directory: LocalDirectory,
    queue: LocalQueue,
}

async fn local_parts(
    settings: &Settings,
    env: &Environment,
    clock: &Clock,
) -> Result<LocalParts, StartupError> {
    let path = settings.data_dir.join(STORE_FILE);
    let failed = |problem: String| StartupError::Local {
        path: path.display().to_string(),
        problem,
    };
    let store = LocalStore::open(&path).map_err(|e| failed(e.to_string()))?;
    let key_setting = env.value("KEYTURN_LOCAL_VAULT_KEY").map(SecretValue::new);
    let key = LocalVault::key_from_setting_or_file(key_setting.as_ref(), &path)
        .map_err(|e| failed(e.to_string()))?;
    let vault = LocalVault::open(store.clone(), key, clock.clone())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let propagation =
        chrono::TimeDelta::seconds(i64::try_from(settings.local_propagation_seconds).unwrap_or(0));
    let directory =
        LocalDirectory::new(store.clone(), clock.clone()).with_propagation_delay(propagation);
    let queue = LocalQueue::new(
        store,
        &settings.rotation_queue,
        QueueSettings::default(),
        clock.clone(),
    )
    .map_err(|e| failed(e.to_string()))?;
    Ok(LocalParts {
        vault,
        directory,
        queue,
    })
}

/// Everything the functions share, from settings.
pub async fn services(settings: &Settings, env: &Environment) -> Result<Services, StartupError> {
    let clock = Clock::system();
    let audit = AuditLog::start(audit_store(settings, true).await?)
        .map_err(|e| StartupError::Audit(e.to_string()))?;
    let local = match settings.backend {
        Backend::Local => Some(local_parts(settings, env, &clock).await?),
        Backend::Azure => None,
    };
    let azure_credential = match settings.backend {
        Backend::Azure => Some(credential(&settings.credential)?),
        Backend::Local => None,
    };
    let endpoint = endpoint(settings, env, local.as_ref(), azure_credential.as_ref())?;
    let rotation_enabled = settings
        .enabled_functions
        .iter()
        .any(|f| ROTATION_FUNCTIONS.contains(f));
    let rotation = if rotation_enabled {
        let ports = match (&local, &azure_credential) {
            (Some(local), _) => local_rotation_ports(local),
            (None, Some(credential)) => azure_rotation_ports(settings, credential)?,
            (None, None) => unreachable!("every backend yields local parts or a credential"),
        };
        Some(Arc::new(rotation_engine(settings, ports, clock.clone())?))
    } else {
        None
    };
    Ok(Services {
        audit,
        clock,
        endpoint: Arc::new(endpoint),
        rotation,
    })
}

/// The rotation engine over `ports`, with the settings' vaults and policy defaults.
pub fn rotation_engine(
    settings: &Settings,
    ports: Ports,
    clock: Clock,
) -> Result<Engine, StartupError> {
    let d = settings.rotation_defaults;
    let defaults = PolicyDefaults::new(d.validity_days, d.rotate_before_days, d.overlap_days)
        .map_err(|e| StartupError::Rotation(e.to_string()))?;
    Ok(Engine::new(ports, settings.vaults.clone(), defaults, clock))
}

/// Rotation on the embedded store: the local vault, the local directory (as credential
/// issuer and token prover) and the local queue.
fn local_rotation_ports(local: &LocalParts) -> Ports {
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
    let namespace = settings.service_bus_namespace.as_deref().ok_or_else(|| {
        StartupError::Rotation("ServiceBusConnection__fullyQualifiedNamespace is not set".into())
    })?;
    let queue = ServiceBusQueue::new(
        namespace,
        &settings.rotation_queue,
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

/// The SecretEndpoint: certificate policies, the access policy, and the backends this app
/// has: `appsettings` always, `table` when a secrets table is set, `keyvault` when a
/// secrets vault is set (Azure), `local` on the local backend.
fn endpoint(
    settings: &Settings,
    env: &Environment,
    local: Option<&LocalParts>,
    azure_credential: Option<&Arc<dyn TokenCredential>>,
) -> Result<Endpoint, StartupError> {
    let e = &settings.endpoint;
    let mut sources: BTreeMap<String, Arc<dyn SecretSource>> = BTreeMap::new();
    sources.insert(
        "appsettings".into(),
        Arc::new(AppSettingsSource::from_settings(
            &e.appsettings_prefix,
            env.prefixed(&e.appsettings_prefix),
        )),
    );
    if let (Some(table), Some(access)) = (&e.secrets_table, &e.secrets_table_access) {
        let client = table_client(settings, access)?;
        let table =
            TableName::parse(table).map_err(|err| StartupError::Endpoint(err.to_string()))?;
        sources.insert(
            "table".into(),
            Arc::new(TableSecretSource::new(client, table)),
        );
    }
    if let (Some(vault), Some(credential)) = (&e.secrets_vault, azure_credential) {
        sources.insert(
            "keyvault".into(),
            Arc::new(KeyVaultSource::new(vault.clone(), credential.clone(), None)),
        );
    }
    let mut directory: Option<Arc<dyn DeviceDirectory>> = None;
    if let Some(local) = local {
        sources.insert(
            "local".into(),
            Arc::new(local.vault.source(local_vault_url())),
        );
        directory = Some(Arc::new(local.directory.clone()));
    }
    if let Some(credential) = azure_credential
        && e.policies.contains(&CertPolicyName::EntraDevice)
    {
        let graph = GraphClient::new(&settings.entra.graph_endpoint, credential.clone(), None)
            .map_err(|err| StartupError::Endpoint(err.to_string()))?;
        directory = Some(Arc::new(graph));
    }
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
pub fn policy_config(settings: &Settings) -> PolicyConfig {
    let e = &settings.endpoint;
    let on = |name| e.policies.contains(&name);
    PolicyConfig {
        trust_arr_header: e.trust_arr_header,
        thumbprints: on(CertPolicyName::TrustedThumbprints).then(|| e.trusted_thumbprints.clone()),
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
