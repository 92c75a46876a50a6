//! What `keyturn evidence export` reads and signs with, as the settings choose: the
//! local store of `keyturn dev` (its audit log, checkpoint file, signing key and
//! inventory), or in Azure the audit and inventory tables, the checkpoint container and
//! the Key Vault key, all reached with the operator's Azure CLI sign-in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use chrono::{DateTime, Utc};

use super::StartupError;
use super::anchor::{self, Verification};
use crate::adapters::azure::alert_ledger::TableAlertLedger;
use crate::adapters::azure::client::blob::{BlobClient, ContainerName};
use crate::adapters::azure::client::table::TableName;
use crate::adapters::azure::signer::SignerOptions;
use crate::adapters::local::alert_ledger::LocalAlertLedger;
use crate::adapters::local::anchor::{LocalSigningKey, SIGNING_KEY_FILE_NAME, file_beside};
use crate::adapters::local::inventory::LocalInventory;
use crate::adapters::local::store::LocalStore;
use crate::compliance::{
    Catalogue, ExceptionError, MAX_REGISTER_BYTES, REGISTER_FILE_NAME, Register, Thresholds,
};
use crate::config::{
    AuditCommandSettings, AuditSettings, CheckpointSettings, EXCEPTIONS_BLOB_SETTING, Environment,
    TableAccess,
};
use crate::evidence::{ComplianceInputs, EvidenceError, ExportSummary, Period, Sources};
use crate::functions::evidence_export::{
    EvidenceExporter, EvidenceServices, EvidenceShelf, PREFIX,
};
use crate::ports::alert_ledger::AlertLedger;
use crate::ports::audit::AuditStore;
use crate::ports::checkpoint::{CheckpointSigner, CheckpointStore, VerifyingKeys};
use crate::ports::inventory::InventoryStore;
use crate::ports::{FailureKind, PortError};

/// Everything an export reads, opened.
#[derive(Debug)]
pub struct EvidenceSources {
    pub audit: Arc<dyn AuditStore>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub keys: Arc<dyn VerifyingKeys>,
    pub signer: Arc<dyn CheckpointSigner>,
    pub inventory: Arc<dyn InventoryStore>,
    /// The alert ledger beside the inventory (the local store's, or the alert table).
    pub alerts: Arc<dyn AlertLedger>,
    pub description: String,
    /// The rule catalogue, default thresholds and the exceptions register, as `keyturn
    /// compliance` reads them without options.
    pub catalogue: Catalogue,
    pub thresholds: Thresholds,
    pub register: Register,
}

impl EvidenceSources {
    pub fn sources(&self) -> Sources<'_> {
        Sources {
            audit: self.audit.as_ref(),
            checkpoints: self.checkpoints.as_ref(),
            keys: self.keys.as_ref(),
            signer: self.signer.as_ref(),
            inventory: self.inventory.as_ref(),
            description: &self.description,
            alerts: Some(self.alerts.as_ref()),
            compliance: Some(ComplianceInputs {
                catalogue: &self.catalogue,
                thresholds: &self.thresholds,
                register: &self.register,
                spill_after: crate::compliance::SPILL_AFTER,
            }),
        }
    }
}

/// The exceptions register of a local store: the file given (`--exceptions`), else the
/// data directory's, when there is one (as `keyturn compliance` reads it); a malformed
/// or unreadable one is refused, naming it and the entry.
fn local_register(
    store: &Path,
    given: Option<&Path>,
    catalogue: &Catalogue,
) -> Result<Register, StartupError> {
    if let Some(path) = given {
        return Ok(Register::load(path, catalogue)?);
    }
    let Some(path) = store
        .parent()
        .map(|dir| dir.join(REGISTER_FILE_NAME))
        .filter(|path| path.is_file())
    else {
        return Ok(Register::empty());
    };
    Register::load(&path, catalogue).map_err(|e| StartupError::Local {
        path: path.display().to_string(),
        problem: e.to_string(),
    })
}

/// The exceptions register of an Azure export (and of `keyturn compliance` reading a
/// table): the file given (`--exceptions`), else the blob
/// `KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB` names in the checkpoints' Blob service, read with
/// `credential` (or the connection string's account key); none configured, an empty
/// register. A configured register that cannot be read or is malformed is an error
/// naming it: never an empty register.
pub(super) async fn azure_register(
    checkpoints: &CheckpointSettings,
    access: &TableAccess,
    given: Option<&Path>,
    credential: impl FnOnce() -> Result<Arc<dyn TokenCredential>, StartupError>,
    catalogue: &Catalogue,
) -> Result<Register, StartupError> {
    if let Some(path) = given {
        return Ok(Register::load(path, catalogue)?);
    }
    let Some(blob) = &checkpoints.exceptions else {
        return Ok(Register::empty());
    };
    let file = format!("blob {blob} at {}", checkpoints.endpoint);
    let refuse = |problem: String| ExceptionError::File {
        file: file.clone(),
        problem,
    };
    let client = anchor::blob_checkpoints(checkpoints, access, credential)?
        .client()
        .clone();
    let container = ContainerName::parse(&blob.container).map_err(|e| refuse(e.context))?;
    let bytes = match client.get_blob(&container, &blob.name).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind == FailureKind::NotFound => {
            return Err(refuse(format!(
                "not found: {EXCEPTIONS_BLOB_SETTING} names it, so the export needs it (upload the register there, or unset the setting to export without exceptions)"
            ))
            .into());
        }
        Err(e) => return Err(refuse(e.to_string()).into()),
    };
    if bytes.len() as u64 > MAX_REGISTER_BYTES {
        return Err(refuse(format!("larger than {MAX_REGISTER_BYTES} bytes")).into());
    }
    let text = String::from_utf8(bytes).map_err(|_| refuse("not UTF-8 text".to_owned()))?;
    Ok(Register::parse(&text, &file, catalogue)?)
}

/// The sources `settings` name: the local store's, or Azure's with the operator's Azure
/// CLI sign-in. `public_keys` (key files, as `keyturn audit verify --public-key` takes
/// them) replace the keys the checkpoints are otherwise checked with; `exceptions` (a
/// register file, as `keyturn compliance --exceptions` takes it) replaces the data
/// directory's register, or in Azure the one `KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB` names.
pub async fn evidence_sources(
    settings: &AuditCommandSettings,
    public_keys: &[PathBuf],
    exceptions: Option<&Path>,
    env: &Environment,
) -> Result<EvidenceSources, StartupError> {
    match &settings.audit {
        AuditSettings::Sqlite { path } => {
            local_sources(settings, path, public_keys, exceptions).await
        }
        AuditSettings::Table { .. } => {
            let operator = || -> Result<Arc<dyn TokenCredential>, StartupError> {
                let cli = azure_identity::AzureCliCredential::new(None).map_err(|e| {
                    StartupError::Audit(format!("cannot use the Azure CLI sign-in: {e}"))
                })?;
                Ok(cli)
            };
            azure_sources(
                settings,
                public_keys,
                exceptions,
                env,
                operator()?,
                SignerOptions::default(),
            )
            .await
        }
    }
}

async fn local_sources(
    settings: &AuditCommandSettings,
    path: &Path,
    public_keys: &[PathBuf],
    exceptions: Option<&Path>,
) -> Result<EvidenceSources, StartupError> {
    // Refuses a path that holds no store, naming it.
    let verification = anchor::verification(settings, public_keys).await?;
    let key_path = file_beside(path, SIGNING_KEY_FILE_NAME);
    if !key_path.is_file() {
        return Err(StartupError::Audit(format!(
            "no audit signing key at {}: the package's manifest is signed with the key that signs the audit checkpoints, which `keyturn dev` creates on its first audit entry",
            key_path.display()
        )));
    }
    let signer =
        LocalSigningKey::read_file(&key_path).map_err(|e| StartupError::Audit(e.to_string()))?;
    let store = LocalStore::open(path).map_err(|e| StartupError::Inventory(e.to_string()))?;
    let Verification {
        store: audit,
        checkpoints,
        keys,
    } = verification;
    let checkpoints = checkpoints
        .ok_or_else(|| StartupError::Audit("the local store has no checkpoint file".to_owned()))?;
    let keys = keys.ok_or_else(|| no_keys(path))?;
    let catalogue = Catalogue::builtin();
    let register = local_register(path, exceptions, &catalogue)?;
    Ok(EvidenceSources {
        audit,
        checkpoints,
        keys,
        signer: Arc::new(signer),
        inventory: Arc::new(LocalInventory::new(store.clone())),
        alerts: Arc::new(LocalAlertLedger::new(store)),
        description: format!("local store {}", path.display()),
        catalogue,
        thresholds: Thresholds::default(),
        register,
    })
}

/// The Azure sources with `operator`'s credential and `signer` options (tests reach
/// stand-ins so).
pub async fn azure_sources(
    settings: &AuditCommandSettings,
    public_keys: &[PathBuf],
    exceptions: Option<&Path>,
    env: &Environment,
    operator: Arc<dyn TokenCredential>,
    signer: SignerOptions,
) -> Result<EvidenceSources, StartupError> {
    let inventory = super::inventory_reader(&super::InventoryLocation::default(), env)?;
    // The alert ledger is in the audit log's account (the deployment puts it there), read
    // with the operator's sign-in as the inventory is.
    let alert_table = env
        .value("KEYTURN_ALERT_TABLE")
        .unwrap_or(crate::config::DEFAULT_ALERT_TABLE);
    let alert_table = TableName::parse(alert_table)
        .map_err(|e| StartupError::Alerts(format!("KEYTURN_ALERT_TABLE: {e}")))?;
    let alerts = super::audit_reader::operator_table_client(None, env, "alert ledger")
        .map_err(StartupError::Alerts)?;
    let alerts: Arc<dyn AlertLedger> = Arc::new(TableAlertLedger::new(alerts, alert_table));
    azure_sources_reading(
        settings,
        public_keys,
        exceptions,
        operator,
        signer,
        inventory,
        alerts,
    )
    .await
}

/// [`azure_sources`] with the inventory and the alert ledger already chosen (the app's
/// own, for the scheduled export).
async fn azure_sources_reading(
    settings: &AuditCommandSettings,
    public_keys: &[PathBuf],
    exceptions: Option<&Path>,
    operator: Arc<dyn TokenCredential>,
    signer: SignerOptions,
    inventory: Arc<dyn InventoryStore>,
    alerts: Arc<dyn AlertLedger>,
) -> Result<EvidenceSources, StartupError> {
    let AuditSettings::Table {
        table,
        access,
        checkpoints: Some(checkpoint_settings),
    } = &settings.audit
    else {
        return Err(StartupError::Audit(
            "an evidence package needs the audit checkpoint settings (KEYTURN_AUDIT_CHECKPOINT_ENDPOINT and KEYTURN_AUDIT_SIGNING_KEY): its manifest is signed with the checkpoint key".to_owned(),
        ));
    };
    let catalogue = Catalogue::builtin();
    let register = azure_register(
        checkpoint_settings,
        access,
        exceptions,
        || Ok(operator.clone()),
        &catalogue,
    )
    .await?;
    let verification =
        anchor::verification_with(settings, public_keys, operator.clone(), signer.clone()).await?;
    let key_vault_signer = anchor::key_vault_signer(checkpoint_settings, operator, signer)?;
    let Verification {
        store: audit,
        checkpoints,
        keys,
    } = verification;
    let checkpoints = checkpoints.ok_or_else(|| {
        StartupError::Audit("the audit table's checkpoint container is not set".to_owned())
    })?;
    let keys = keys.ok_or_else(|| {
        StartupError::Audit("no public key checks the audit checkpoints".to_owned())
    })?;
    Ok(EvidenceSources {
        audit,
        checkpoints,
        keys,
        signer: Arc::new(key_vault_signer),
        inventory,
        alerts,
        description: format!(
            "audit table {} and checkpoint container {} ({}), signing key {}",
            table.as_str(),
            checkpoint_settings.container,
            checkpoint_settings.endpoint,
            checkpoint_settings.signing_key
        ),
        catalogue,
        thresholds: Thresholds::default(),
        register,
    })
}

fn no_keys(path: &Path) -> StartupError {
    StartupError::Audit(format!(
        "no public key checks the audit checkpoints of {} (no signing key or public key file beside it; pass --public-key FILE)",
        path.display()
    ))
}

/// The scheduled export's exporter and shelf for an app's `settings`: the local store
/// and its data directory's `evidence/`, or the Azure tables, key and checkpoint
/// container reached with the app's `credential` (needed for the key; the table and the
/// container are reached as the audit log is). Nothing is opened until a run. `None`
/// where the audit table is not anchored: there is no container to keep packages in and
/// no key to sign them, and runs fail naming what is missing.
pub(crate) fn scheduled(
    settings: &crate::config::Settings,
    credential: impl FnOnce() -> Result<Arc<dyn TokenCredential>, StartupError>,
    signer: SignerOptions,
    inventory: Arc<dyn InventoryStore>,
    alerts: Arc<dyn AlertLedger>,
) -> Result<Option<EvidenceServices>, StartupError> {
    let command = AuditCommandSettings {
        credential: settings.credential.clone(),
        audit: settings.audit.clone(),
        any_vault_host: false,
    };
    match &settings.audit {
        AuditSettings::Sqlite { path } => {
            let dir = path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
                .join("evidence");
            Ok(Some(EvidenceServices {
                exporter: Arc::new(Exporter {
                    settings: command,
                    azure: None,
                    inventory,
                    alerts,
                }),
                shelf: Arc::new(DirectoryShelf { dir }),
            }))
        }
        AuditSettings::Table {
            access,
            checkpoints: Some(checkpoints),
            ..
        } => {
            let credential = credential()?;
            let container =
                anchor::blob_checkpoints(checkpoints, access, || Ok(credential.clone()))?;
            Ok(Some(EvidenceServices {
                exporter: Arc::new(Exporter {
                    settings: command,
                    azure: Some((credential, signer)),
                    inventory,
                    alerts,
                }),
                shelf: Arc::new(BlobShelf {
                    client: container.client().clone(),
                    container: container.container().clone(),
                }),
            }))
        }
        AuditSettings::Table {
            checkpoints: None, ..
        } => {
            tracing::warn!(
                "EvidenceExport keeps its packages in the audit checkpoint container and signs them with the checkpoint key: it cannot run until KEYTURN_AUDIT_CHECKPOINT_ENDPOINT and KEYTURN_AUDIT_SIGNING_KEY are set"
            );
            Ok(None)
        }
    }
}

/// Opens the sources at each run and exports.
struct Exporter {
    settings: AuditCommandSettings,
    /// The app's credential and the signer's options, in Azure.
    azure: Option<(Arc<dyn TokenCredential>, SignerOptions)>,
    inventory: Arc<dyn InventoryStore>,
    /// The app's alert ledger, whose deliveries the package lists.
    alerts: Arc<dyn AlertLedger>,
}

#[async_trait::async_trait]
impl EvidenceExporter for Exporter {
    /// The export's future is not `Send` (its writers and sinks are borrowed across
    /// awaits), so it runs on this worker thread, which the runtime gives up to the
    /// export while its other tasks move to the other workers (a monthly export may hold
    /// one worker for as long as it takes).
    async fn export(
        &self,
        period: &Period,
        out: &Path,
        now: DateTime<Utc>,
    ) -> Result<ExportSummary, EvidenceError> {
        let handle = tokio::runtime::Handle::current();
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(EvidenceError::Store {
                what: "evidence sources",
                operation: "starting the export",
                source: PortError::invalid(
                    "the scheduled export runs on a multi-threaded runtime only",
                ),
            });
        }
        tokio::task::block_in_place(|| handle.block_on(self.export_here(period, out, now)))
    }
}

impl Exporter {
    async fn export_here(
        &self,
        period: &Period,
        out: &Path,
        now: DateTime<Utc>,
    ) -> Result<ExportSummary, EvidenceError> {
        let opened = match (&self.settings.audit, &self.azure) {
            (AuditSettings::Sqlite { path }, _) => local_sources(&self.settings, path, &[], None)
                .await
                .map(|mut sources| {
                    sources.inventory = self.inventory.clone();
                    sources.alerts = self.alerts.clone();
                    sources
                }),
            (AuditSettings::Table { .. }, Some((credential, signer))) => {
                azure_sources_reading(
                    &self.settings,
                    &[],
                    None,
                    credential.clone(),
                    signer.clone(),
                    self.inventory.clone(),
                    self.alerts.clone(),
                )
                .await
            }
            (AuditSettings::Table { .. }, None) => Err(StartupError::Audit(
                "no credential reaches the audit checkpoint key".to_owned(),
            )),
        };
        let sources = opened.map_err(|e| EvidenceError::Store {
            what: "evidence sources",
            operation: "opening them",
            source: PortError::transient(e.to_string()),
        })?;
        crate::evidence::export(sources.sources(), period, out, now).await
    }
}

/// Packages as block blobs in the audit checkpoint container, whose retention policy
/// keeps each unchangeable and undeletable once created.
#[derive(Debug)]
struct BlobShelf {
    client: BlobClient,
    container: ContainerName,
}

#[async_trait::async_trait]
impl EvidenceShelf for BlobShelf {
    fn describe(&self) -> String {
        format!("container {}", self.container)
    }

    async fn holds(&self, name: &str) -> Result<bool, PortError> {
        self.client.blob_exists(&self.container, name).await
    }

    async fn store_new(&self, name: &str, path: &Path) -> Result<bool, PortError> {
        self.client
            .upload_block_blob(&self.container, name, path, "application/zip")
            .await
    }
}

/// Packages as files in a directory (local mode): created beside their final name and
/// linked into place only where no file has it, so none is ever replaced.
#[derive(Debug)]
struct DirectoryShelf {
    dir: PathBuf,
}

#[async_trait::async_trait]
impl EvidenceShelf for DirectoryShelf {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    async fn holds(&self, name: &str) -> Result<bool, PortError> {
        Ok(self.file(name)?.exists())
    }

    async fn store_new(&self, name: &str, path: &Path) -> Result<bool, PortError> {
        let target = self.file(name)?;
        let failed = |e: std::io::Error| {
            PortError::transient(format!("cannot store {}: {e}", target.display()))
        };
        let parent = target.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(failed)?;
        let partial = parent.join(format!(".{}.partial", uuid::Uuid::new_v4().simple()));
        std::fs::copy(path, &partial).map_err(failed)?;
        let linked = std::fs::hard_link(&partial, &target);
        let _ = std::fs::remove_file(&partial);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(failed(e)),
        }
    }
}

impl DirectoryShelf {
    /// `name` under the directory; a name that would leave it is refused.
    fn file(&self, name: &str) -> Result<PathBuf, PortError> {
        let relative = name.strip_prefix(PREFIX).unwrap_or(name);
        let inside = relative
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
        if !inside {
            return Err(PortError::invalid(format!(
                "`{name}` is not a package name"
            )));
        }
        Ok(self.dir.join(relative))
    }
}
