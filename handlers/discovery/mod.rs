//! Discovery: what exists in the tenant (vaults and their objects, application and
//! service-principal credentials), read as metadata and written into the inventory.
//!
//! A sweep fans out into jobs ([`job::DiscoveryJob`]): one per subscription, per vault
//! and per directory range. Each job reads its scope a page at a time through the
//! catalog ports and writes each page through the [`InventoryStore`] before reading the
//! next, so memory holds one page whatever the tenant's size. Every write is an upsert on
//! a stable id, so a job run twice leaves the same rows.
//!
//! A scope that cannot be read (a vault behind its firewall, a subscription without a
//! role, a page that fails, a malformed entry) becomes a [`ScopeFinding`] on that scope
//! and the job, and the sweep, go on. Only a throttling answer whose `Retry-After` is
//! beyond what a call waits out is returned as an error, for the queue to redeliver the
//! job later.

pub mod budget;
pub mod job;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use crate::discovery::budget::{Budgets, Pacer, WINDOW};
use crate::discovery::job::{DiscoveryJob, JobScope};
use crate::domain::ids::{AppId, DirectoryObjectId, KeyId, SubscriptionId};
use crate::domain::inventory::{
    Adoption, CredentialFilter, CredentialHandle, CredentialKind, CredentialSource, FindingKind,
    InventoryCredential, OWNER_TAG, Scope, ScopeFinding, SweepId, SweepSnapshot,
};
use crate::domain::names::{VaultName, VaultUrl};
use crate::ports::catalog::{
    CatalogPage, Cursor, DirectoryCatalog, DirectoryKind, DirectoryRange, ObjectKind,
    ResourceCatalog, Stamp, VaultCatalog, VaultRef,
};
use crate::ports::inventory::{InventoryStore, credential_stream, finding_stream, vault_stream};
use crate::ports::queue::JobQueue;
use crate::ports::{FailureKind, PortError};

/// The tag that puts a Key Vault object under keyturn's management (`rotation::tags`).
const MANAGED_KIND_TAG: &str = "keyturn-kind";

/// The tag on a rotation's staging copy (`keyturn-pending-{keyId}`) naming the managed
/// secret it stages a new value for (`rotation::tags`): it is managed with that secret.
const PENDING_FOR_TAG: &str = "keyturn-pending-for";

/// Page size for the snapshot's walk of the store.
const SNAPSHOT_PAGE: u32 = 500;

/// Certificates or keys of one listing page whose details and versions are read at once.
/// A key costs three requests one after another (the key, its rotation policy, its
/// versions): four at once keep a page's ten keys to three rounds, short of a secrets
/// listing of a few hundred, and a vault job at most 1 + 2 x 4 requests in flight, well
/// within what the vault's budget (200 a second by default) lets through at Key Vault's
/// usual 10 to 50 ms.
pub const DETAILS_AT_ONCE: usize = 4;

/// The ports and settings a discovery run needs.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub resources: Arc<dyn ResourceCatalog>,
    pub vaults: Arc<dyn VaultCatalog>,
    pub directory: Arc<dyn DirectoryCatalog>,
    pub store: Arc<dyn InventoryStore>,
    pub budgets: Budgets,
    graph: Arc<Pacer>,
    resource_manager: Arc<Pacer>,
}

/// What one job did: the jobs it queues next and how much it wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobReport {
    pub follow_ups: Vec<DiscoveryJob>,
    pub credentials: u64,
    pub vaults: u64,
    pub findings: u64,
}

impl Discovery {
    pub fn new(
        resources: Arc<dyn ResourceCatalog>,
        vaults: Arc<dyn VaultCatalog>,
        directory: Arc<dyn DirectoryCatalog>,
        store: Arc<dyn InventoryStore>,
        budgets: Budgets,
    ) -> Self {
        Self {
            resources,
            vaults,
            directory,
            store,
            graph: Arc::new(Pacer::new(budgets.graph, WINDOW)),
            resource_manager: Arc::new(Pacer::new(budgets.resource_manager, WINDOW)),
            budgets,
        }
    }

    /// Runs one job at `now`. `Err` only for a failure worth redelivering the whole job
    /// (throttled beyond what a call waits out, or the inventory store failing).
    pub async fn run(
        &self,
        job: &DiscoveryJob,
        now: DateTime<Utc>,
    ) -> Result<JobReport, PortError> {
        let stamp = Stamp {
            sweep: job.sweep.clone(),
            at: now,
        };
        match &job.scope {
            JobScope::Sweep { subscriptions } => self.sweep(subscriptions, &stamp).await,
            JobScope::Subscription { subscription } => {
                self.subscription(subscription, &stamp).await
            }
            JobScope::Vault {
                subscription,
                name,
                uri,
            } => {
                let parsed = VaultName::parse(name).ok().zip(VaultUrl::parse(uri).ok());
                let Some((name, uri)) = parsed else {
                    return Err(PortError::invalid(
                        "discovery job names a vault whose name or URI does not parse",
                    ));
                };
                let vault = VaultRef {
                    subscription: *subscription,
                    name,
                    uri,
                };
                self.vault(&vault, &stamp).await
            }
            JobScope::Directory { range } => self.directory_range(range, &stamp).await,
            JobScope::Snapshot => self.snapshot(&stamp).await,
        }
    }

    async fn sweep(
        &self,
        configured: &[SubscriptionId],
        stamp: &Stamp,
    ) -> Result<JobReport, PortError> {
        let mut report = JobReport::default();
        let sub_job = |subscription: SubscriptionId| {
            DiscoveryJob::new(stamp.sweep.clone(), JobScope::Subscription { subscription })
        };
        if configured.is_empty() {
            let mut after: Option<Cursor> = None;
            loop {
                self.resource_manager.wait().await;
                match self.resources.subscriptions(after.as_ref(), stamp).await {
                    Ok(page) => {
                        self.put_findings(&mut report, &page.findings).await?;
                        report
                            .follow_ups
                            .extend(page.items.iter().map(|s| sub_job(s.id)));
                        after = page.next;
                    }
                    Err(error) => {
                        self.record(&mut report, Scope::Tenant, "subscriptions", &error, stamp)
                            .await?;
                        break;
                    }
                }
                if after.is_none() {
                    // Listed to the end: what an older sweep found on the tenant is gone
                    // unless this one found it again.
                    self.store
                        .clear_findings(&Scope::Tenant, &stamp.sweep)
                        .await?;
                    break;
                }
            }
        } else {
            report
                .follow_ups
                .extend(configured.iter().copied().map(sub_job));
        }
        for kind in [
            DirectoryKind::Applications,
            DirectoryKind::ServicePrincipals,
        ] {
            report
                .follow_ups
                .extend(DirectoryRange::all(kind).map(|range| {
                    DiscoveryJob::new(stamp.sweep.clone(), JobScope::Directory { range })
                }));
        }
        Ok(report)
    }

    async fn subscription(
        &self,
        subscription: &SubscriptionId,
        stamp: &Stamp,
    ) -> Result<JobReport, PortError> {
        let mut report = JobReport::default();
        let scope = Scope::Subscription {
            subscription: *subscription,
        };
        let mut after: Option<Cursor> = None;
        loop {
            self.resource_manager.wait().await;
            let page = match self
                .resources
                .vaults(subscription, after.as_ref(), stamp)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    self.record(&mut report, scope, "vaults", &error, stamp)
                        .await?;
                    return Ok(report);
                }
            };
            self.put_findings(&mut report, &page.findings).await?;
            for vault in &page.items {
                self.store.put_vault(vault).await?;
                report.vaults += 1;
                let vault_scope = Scope::Vault {
                    subscription: vault.subscription,
                    name: vault.name.clone(),
                };
                if vault.needs_list_only_policy() {
                    let finding = ScopeFinding::new(
                        vault_scope.clone(),
                        FindingKind::AccessPolicyMode,
                        vault.name.to_string(),
                        "the vault uses access policies: Key Vault Reader cannot list it; grant discovery an access policy with list permissions only (secrets, certificates, keys), or move the vault to RBAC",
                        stamp.at,
                        stamp.sweep.clone(),
                    );
                    self.put_findings(&mut report, &[finding]).await?;
                }
                report.follow_ups.push(DiscoveryJob::vault(
                    stamp.sweep.clone(),
                    &VaultRef {
                        subscription: vault.subscription,
                        name: vault.name.clone(),
                        uri: vault.uri.clone(),
                    },
                ));
            }
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        self.store.clear_findings(&scope, &stamp.sweep).await?;
        Ok(report)
    }

    async fn vault(&self, vault: &VaultRef, stamp: &Stamp) -> Result<JobReport, PortError> {
        let pacer = Pacer::new(self.budgets.key_vault_per_vault, WINDOW);
        let scope = Scope::Vault {
            subscription: vault.subscription,
            name: vault.name.clone(),
        };
        // Secrets, certificates and keys are three independent listings: read at once,
        // paced together within the vault's budget.
        let listings =
            ObjectKind::ALL.map(|kind| self.vault_objects(vault, kind, &pacer, &scope, stamp));
        let mut report = JobReport::default();
        let mut complete = true;
        for (listed, listed_whole) in futures::future::try_join_all(listings).await? {
            report.credentials += listed.credentials;
            report.findings += listed.findings;
            complete &= listed_whole;
        }
        if complete {
            // Only a complete listing proves an object is gone.
            let source = CredentialSource::Vault {
                subscription: vault.subscription,
                name: vault.name.clone(),
                uri: vault.uri.clone(),
            };
            self.store.retire_unseen(&source, &stamp.sweep).await?;
            self.end_adoptions(&source, &stamp.sweep).await?;
            self.store.clear_findings(&scope, &stamp.sweep).await?;
        }
        Ok(report)
    }

    /// Reads what a listing leaves out of one object (a certificate's or key's details and
    /// version count) and whether keyturn manages it.
    async fn vault_object(
        &self,
        pacer: &Pacer,
        vault: &VaultRef,
        kind: ObjectKind,
        credential: &mut InventoryCredential,
        stamp: &Stamp,
    ) -> Result<JobReport, PortError> {
        let mut report = JobReport::default();
        if kind != ObjectKind::Secrets {
            self.read_details(pacer, vault, kind, credential, &mut report, stamp)
                .await?;
            self.count_versions(pacer, vault, kind, credential, &mut report, stamp)
                .await?;
        }
        credential.managed = vault_object_is_managed(credential);
        Ok(report)
    }

    /// Reads a certificate's or key's details into it, charging the vault's budget for
    /// every request the read sends (a key's is two: the key and its rotation policy). A
    /// read that fails is a finding and leaves the details unknown.
    async fn read_details(
        &self,
        pacer: &Pacer,
        vault: &VaultRef,
        kind: ObjectKind,
        credential: &mut InventoryCredential,
        report: &mut JobReport,
        stamp: &Stamp,
    ) -> Result<(), PortError> {
        pacer.wait_for(self.vaults.detail_requests(kind)).await;
        let read = match kind {
            ObjectKind::Certificates => self
                .vaults
                .certificate(vault, &credential.name)
                .await
                .map(|details| credential.certificate = Some(details)),
            ObjectKind::Keys => self
                .vaults
                .key(vault, &credential.name)
                .await
                .map(|details| credential.key = Some(details)),
            ObjectKind::Secrets => Ok(()),
        };
        match read {
            Ok(()) => Ok(()),
            Err(error) => {
                let scope = Scope::Vault {
                    subscription: vault.subscription,
                    name: vault.name.clone(),
                };
                let subject = format!("{}/{}", kind.as_str(), credential.name);
                self.record(report, scope, &subject, &error, stamp).await
            }
        }
    }

    /// Counts a certificate's or key's versions into its handle, a paced request per
    /// page of 25. Secrets are not counted: they are most of a tenant's objects (the
    /// benchmark's 100,000), each count is at least one more request, and a secret's
    /// expiry is its current version's; certificates and keys already cost a details
    /// request each, and their versions show renewals and rotations. A listing that fails
    /// is a finding and leaves the count unknown.
    async fn count_versions(
        &self,
        pacer: &Pacer,
        vault: &VaultRef,
        kind: ObjectKind,
        credential: &mut InventoryCredential,
        report: &mut JobReport,
        stamp: &Stamp,
    ) -> Result<(), PortError> {
        let mut total = 0u32;
        let mut after: Option<Cursor> = None;
        loop {
            pacer.wait().await;
            match self
                .vaults
                .versions(vault, kind, &credential.name, after.as_ref())
                .await
            {
                Ok((listed, next)) => {
                    total = total.saturating_add(listed);
                    after = next;
                }
                Err(error) => {
                    let scope = Scope::Vault {
                        subscription: vault.subscription,
                        name: vault.name.clone(),
                    };
                    let subject = format!("{}/{} versions", kind.as_str(), credential.name);
                    return self.record(report, scope, &subject, &error, stamp).await;
                }
            }
            if after.is_none() {
                break;
            }
        }
        if let CredentialHandle::VaultObject { versions, .. } = &mut credential.handle {
            *versions = Some(total);
        }
        Ok(())
    }

    /// Lists one kind of a vault's objects a page at a time, reading each certificate's
    /// and key's details, and writes each page. Also says whether the listing was whole.
    async fn vault_objects(
        &self,
        vault: &VaultRef,
        kind: ObjectKind,
        pacer: &Pacer,
        scope: &Scope,
        stamp: &Stamp,
    ) -> Result<(JobReport, bool), PortError> {
        let mut report = JobReport::default();
        let mut complete = true;
        let mut after: Option<Cursor> = None;
        loop {
            pacer.wait().await;
            let page = match self
                .vaults
                .objects(vault, kind, after.as_ref(), stamp)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    self.record(&mut report, scope.clone(), kind.as_str(), &error, stamp)
                        .await?;
                    complete = false;
                    break;
                }
            };
            let CatalogPage {
                mut items,
                findings,
                next,
            } = page;
            self.put_findings(&mut report, &findings).await?;
            // An object's details and versions do not wait on another's: up to
            // DETAILS_AT_ONCE objects are read at a time, every request still paced by the
            // vault's budget.
            let reads: Vec<_> = items
                .iter_mut()
                .map(|credential| self.vault_object(pacer, vault, kind, credential, stamp))
                .collect();
            let read: Vec<JobReport> = futures::stream::iter(reads)
                .buffer_unordered(DETAILS_AT_ONCE)
                .try_collect()
                .await?;
            report.findings += read.iter().map(|r| r.findings).sum::<u64>();
            self.write(&mut report, &items, stamp).await?;
            if kind == ObjectKind::Secrets {
                self.record_adoptions(vault, &items, stamp).await?;
            }
            after = next;
            if after.is_none() {
                break;
            }
        }
        Ok((report, complete))
    }

    async fn directory_range(
        &self,
        range: &DirectoryRange,
        stamp: &Stamp,
    ) -> Result<JobReport, PortError> {
        let mut report = JobReport::default();
        let scope = Scope::DirectoryPage {
            range: range.label(),
        };
        let federated = self
            .federated_counts(range, &scope, &mut report, stamp)
            .await?;
        let mut after: Option<Cursor> = None;
        let mut pages = 0u32;
        // An object or credential listed malformed (no usable id, a date that does not
        // parse) is not written, so the range does not prove it gone.
        let mut complete = true;
        loop {
            self.graph.wait().await;
            let page = match self
                .directory
                .credentials(range, after.as_ref(), stamp, self.graph.as_ref())
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    let subject = format!("page {}", pages + 1);
                    self.record(&mut report, scope, &subject, &error, stamp)
                        .await?;
                    return Ok(report);
                }
            };
            pages += 1;
            let CatalogPage {
                mut items,
                findings,
                next,
            } = page;
            complete &= !findings.iter().any(|f| f.kind == FindingKind::Malformed);
            self.put_findings(&mut report, &findings).await?;
            // The page's client secrets a managed vault secret holds are managed though
            // their names do not say so: the vault jobs recorded them, before or after.
            let apps: Vec<AppId> = items
                .iter()
                .filter_map(|c| c.adoption_key().map(|(app_id, _)| app_id))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let adopted = self.adopted(&apps).await?;
            for credential in &mut items {
                let held = credential
                    .adoption_key()
                    .is_some_and(|pair| adopted.contains(&pair));
                credential.set_adopted(held);
                if let (CredentialSource::Application { object_id, .. }, Some(details)) =
                    (&credential.source, credential.directory.as_mut())
                {
                    details.federated_credentials = federated
                        .as_ref()
                        .map(|counts| counts.get(object_id).copied().unwrap_or(0));
                }
            }
            self.write(&mut report, &items, stamp).await?;
            // A vault job may have recorded or retired an adoption of these applications
            // while the page was being written, after the read above and before its own
            // mark could see this page's rows: what changed lands on the rows now. (An
            // adoption recorded after this read is marked by the vault job itself, on the
            // rows written here.)
            let now_adopted = self.adopted(&apps).await?;
            let gained: Vec<_> = now_adopted.difference(&adopted).copied().collect();
            let lost: Vec<_> = adopted.difference(&now_adopted).copied().collect();
            if !gained.is_empty() {
                self.store.mark_adopted(&gained, true).await?;
            }
            if !lost.is_empty() {
                self.store.mark_adopted(&lost, false).await?;
            }
            after = next;
            if after.is_none() {
                break;
            }
        }
        if complete {
            // Every object of the range was listed with all its credentials: what an older
            // sweep wrote there and this one did not is gone from the directory.
            self.store
                .retire_unseen_in_range(range, &stamp.sweep)
                .await?;
        }
        self.store.clear_findings(&scope, &stamp.sweep).await?;
        Ok(report)
    }

    /// How many federated identity credentials each application of `range` has (those
    /// with none are absent): `None` for service principals, or when the listing fails,
    /// which is a finding on the range and leaves the counts unknown.
    async fn federated_counts(
        &self,
        range: &DirectoryRange,
        scope: &Scope,
        report: &mut JobReport,
        stamp: &Stamp,
    ) -> Result<Option<HashMap<DirectoryObjectId, u32>>, PortError> {
        if range.kind != DirectoryKind::Applications {
            return Ok(None);
        }
        let mut counts = HashMap::new();
        let mut after: Option<Cursor> = None;
        loop {
            self.graph.wait().await;
            match self
                .directory
                .federated_credential_counts(range, after.as_ref())
                .await
            {
                Ok(page) => {
                    counts.extend(page.items);
                    after = page.next;
                }
                Err(error) => {
                    let subject = "federated identity credentials";
                    self.record(report, scope.clone(), subject, &error, stamp)
                        .await?;
                    return Ok(None);
                }
            }
            if after.is_none() {
                return Ok(Some(counts));
            }
        }
    }

    /// Writes a page of credentials and the findings they carry: no end date, an owner
    /// without a mail address.
    async fn write(
        &self,
        report: &mut JobReport,
        items: &[InventoryCredential],
        stamp: &Stamp,
    ) -> Result<(), PortError> {
        if items.is_empty() {
            return Ok(());
        }
        self.store.put_credentials(items).await?;
        report.credentials += items.len() as u64;
        let mut findings = Vec::new();
        for credential in items {
            let scope = Scope::Credential {
                id: credential.id(),
            };
            if credential.expires.is_none() && credential.enabled {
                findings.push(ScopeFinding::new(
                    scope.clone(),
                    FindingKind::NoEndDate,
                    credential.name.clone(),
                    format!("{} {} has no end date", credential.kind, credential.name),
                    stamp.at,
                    stamp.sweep.clone(),
                ));
            }
            for owner in &credential.owners {
                if owner.mail.is_none() {
                    let who = owner
                        .user_principal_name
                        .clone()
                        .or_else(|| owner.display_name.clone())
                        .unwrap_or_else(|| "an owner".to_owned());
                    findings.push(ScopeFinding::new(
                        scope.clone(),
                        FindingKind::OwnerWithoutMail,
                        who.clone(),
                        format!("owner {who} has no mail address: alerts go to its UPN or the default route"),
                        stamp.at,
                        stamp.sweep.clone(),
                    ));
                }
            }
        }
        self.put_findings(report, &findings).await
    }

    async fn put_findings(
        &self,
        report: &mut JobReport,
        findings: &[ScopeFinding],
    ) -> Result<(), PortError> {
        for finding in findings {
            self.store.put_finding(finding).await?;
            report.findings += 1;
        }
        Ok(())
    }

    /// Records why `subject` on `scope` could not be read. A throttling answer with a
    /// `Retry-After` beyond what the call waited out is returned instead, so the job is
    /// redelivered after it.
    async fn record(
        &self,
        report: &mut JobReport,
        scope: Scope,
        subject: &str,
        error: &PortError,
        stamp: &Stamp,
    ) -> Result<(), PortError> {
        let kind = match &error.kind {
            FailureKind::Transient {
                retry_after: Some(_),
            } => return Err(error.clone()),
            FailureKind::Transient { retry_after: None } => FindingKind::PageFailed,
            FailureKind::PermissionDenied { .. } => FindingKind::AccessDenied,
            FailureKind::NetworkRefused { .. } => FindingKind::NetworkRefused,
            FailureKind::NotFound => FindingKind::Deleted,
            FailureKind::Invalid => FindingKind::Malformed,
            _ => FindingKind::PageFailed,
        };
        let finding = ScopeFinding::new(
            scope,
            kind,
            subject,
            error.to_string(),
            stamp.at,
            stamp.sweep.clone(),
        );
        self.put_findings(report, &[finding]).await
    }

    /// The adopted client secrets of `apps`, read from the store (nothing to read for
    /// none).
    async fn adopted(&self, apps: &[AppId]) -> Result<BTreeSet<(AppId, KeyId)>, PortError> {
        if apps.is_empty() {
            return Ok(BTreeSet::new());
        }
        self.store.adopted(apps).await
    }

    /// Records the application password credentials a page's managed secrets hold
    /// ([`adopted_by`]), stamped with the sweep, and marks their rows managed where a
    /// directory job has written them already; a directory job writing them later reads
    /// the adoptions back. A credential keyturn adopted rather than added has a name that
    /// does not say so, and only the vault knows.
    async fn record_adoptions(
        &self,
        vault: &VaultRef,
        secrets: &[InventoryCredential],
        stamp: &Stamp,
    ) -> Result<(), PortError> {
        let vault_key = CredentialSource::Vault {
            subscription: vault.subscription,
            name: vault.name.clone(),
            uri: vault.uri.clone(),
        }
        .key();
        let adoptions: Vec<Adoption> = secrets
            .iter()
            .filter(|secret| secret.managed)
            .flat_map(|secret| {
                adopted_by(secret)
                    .into_iter()
                    .map(|(app_id, key_id)| Adoption {
                        app_id,
                        key_id,
                        holder: secret.id(),
                        vault: vault_key.clone(),
                        sweep: stamp.sweep.clone(),
                    })
            })
            .collect();
        if adoptions.is_empty() {
            return Ok(());
        }
        self.store.put_adoptions(&adoptions).await?;
        let pairs: Vec<(AppId, KeyId)> = adoptions.iter().map(|a| (a.app_id, a.key_id)).collect();
        self.store.mark_adopted(&pairs, true).await?;
        Ok(())
    }

    /// After a complete listing of `vault`: the adoptions its secrets no longer name end,
    /// and the credentials they held are unmanaged again, unless another secret still
    /// holds them (or keyturn's name marks them).
    async fn end_adoptions(
        &self,
        vault: &CredentialSource,
        sweep: &SweepId,
    ) -> Result<(), PortError> {
        let ended = self.store.retire_adoptions(vault, sweep).await?;
        if ended.is_empty() {
            return Ok(());
        }
        let apps: Vec<AppId> = ended
            .iter()
            .map(|(app_id, _)| *app_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let still = self.adopted(&apps).await?;
        let ended: Vec<(AppId, KeyId)> = ended
            .into_iter()
            .filter(|pair| !still.contains(pair))
            .collect();
        if !ended.is_empty() {
            self.store.mark_adopted(&ended, false).await?;
        }
        Ok(())
    }

    /// Counts what the store holds into the sweep's snapshot, a page at a time.
    async fn snapshot(&self, stamp: &Stamp) -> Result<JobReport, PortError> {
        let store = self.store.as_ref();
        let mut snapshot = SweepSnapshot::new(stamp.sweep.clone(), stamp.at);
        let mut credentials = credential_stream(store, CredentialFilter::default(), SNAPSHOT_PAGE);
        while let Some(credential) = credentials.next().await {
            snapshot.count(&credential?);
        }
        let mut vaults = vault_stream(store, SNAPSHOT_PAGE);
        while let Some(vault) = vaults.next().await {
            vault?;
            snapshot.vaults += 1;
        }
        let mut findings = finding_stream(store, SNAPSHOT_PAGE);
        while let Some(finding) = findings.next().await {
            let finding = finding?;
            if finding.sweep == stamp.sweep {
                snapshot.findings += 1;
                if finding.kind.is_error() {
                    snapshot.errors += 1;
                }
            }
        }
        drop((credentials, vaults, findings));
        self.store.put_snapshot(&snapshot).await?;
        Ok(JobReport::default())
    }
}

/// The application and password credential a managed vault secret holds, by its tags
/// (and the one it held before, still in its overlap until keyturn removes it).
fn adopted_by(secret: &InventoryCredential) -> Vec<(AppId, KeyId)> {
    [secret.held_client_secret(), secret.previous_client_secret()]
        .into_iter()
        .flatten()
        .collect()
}

/// A vault object is managed when it carries `keyturn-kind`; a certificate also when it
/// carries any other `keyturn-` policy tag (`rotation::tags`); a secret also when it is a
/// rotation's staging copy (`keyturn-pending-for`), which belongs to the secret it names.
fn vault_object_is_managed(credential: &InventoryCredential) -> bool {
    credential.tags.keys().any(|name| {
        let name = name.to_ascii_lowercase();
        name == MANAGED_KIND_TAG
            || (credential.kind == CredentialKind::Secret && name == PENDING_FOR_TAG)
            || (credential.kind == CredentialKind::Certificate
                && name.starts_with("keyturn-")
                && name != OWNER_TAG)
    })
}

/// How long after a sweep starts its snapshot is counted: long enough for the fan-out to
/// finish at the default budgets on a large tenant (the benchmark's 100,000 objects take
/// minutes), short enough to chart the same day. A late job's rows are counted by the next
/// sweep's snapshot.
pub const SNAPSHOT_DELAY: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Why a delivered discovery message was not handled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The message is not a discovery job: redelivering cannot help.
    #[error(transparent)]
    Job(#[from] job::JobError),
    /// The job or a follow-up's send failed: worth redelivering (the job is idempotent).
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Handles one delivered job: runs it and queues what it fans out to, each follow-up a
/// message whose id the broker deduplicates. A sweep also queues its snapshot, scheduled
/// [`SNAPSHOT_DELAY`] later.
pub async fn handle_delivery(
    discovery: &Discovery,
    queue: &dyn JobQueue,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<JobReport, DeliveryError> {
    let job = DiscoveryJob::decode(body)?;
    let report = discovery.run(&job, now).await?;
    for follow_up in &report.follow_ups {
        queue.send(&follow_up.to_message(None)).await?;
    }
    if matches!(job.scope, JobScope::Sweep { .. }) {
        let snapshot = DiscoveryJob::new(job.sweep.clone(), JobScope::Snapshot);
        queue
            .send(&snapshot.to_message(Some(now + SNAPSHOT_DELAY)))
            .await?;
    }
    Ok(report)
}

/// Queues the scans that bring the inventory up to date once a rotation has finished,
/// rather than leaving it to the next sweep (hours later): the job of the vault holding
/// the rotated object and, for an application's client secret, the job of the directory
/// range holding `app`. One vault and one range, as a sweep scans them, under a sweep id
/// of their own ([`SweepId::rescan_at`]): a sweep's ids are taken by its own jobs, which
/// the queue would drop as duplicates. Each job is idempotent, so a scan that finds
/// nothing new changes nothing, and no snapshot is queued: trends stay one point a sweep.
///
/// A vault the inventory does not hold is not scanned: discovery does not list it (a
/// subscription it is not configured for), or no sweep has run yet. Returns the jobs
/// queued.
pub async fn queue_rescan(
    discovery: &Discovery,
    queue: &dyn JobQueue,
    vault: &VaultUrl,
    app: Option<AppId>,
    now: DateTime<Utc>,
) -> Result<Vec<DiscoveryJob>, PortError> {
    let sweep = SweepId::rescan_at(now);
    let mut jobs = Vec::new();
    if let Some(known) = discovery.store.vault(vault).await? {
        jobs.push(DiscoveryJob::vault(
            sweep.clone(),
            &VaultRef {
                subscription: known.subscription,
                name: known.name,
                uri: known.uri,
            },
        ));
    }
    if let Some(range) =
        app.and_then(|app_id| DirectoryRange::holding(DirectoryKind::Applications, &app_id))
    {
        jobs.push(DiscoveryJob::new(sweep, JobScope::Directory { range }));
    }
    for job in &jobs {
        queue.send(&job.to_message(None)).await?;
    }
    Ok(jobs)
}

/// Runs a sweep to completion in this process, `parallelism` jobs at a time: what local
/// mode, the tests and the benchmark use in place of the queue. Jobs run as the queue
/// would deliver them, each once, in the order [`Pending`] gives; the snapshot runs last.
pub async fn run_sweep(
    discovery: &Discovery,
    sweep: SweepId,
    subscriptions: Vec<SubscriptionId>,
    parallelism: usize,
    now: DateTime<Utc>,
) -> Result<SweepReport, PortError> {
    let mut report = SweepReport::default();
    let parallelism = parallelism.max(1);
    let mut pending = Pending {
        directory_slots: directory_slots(parallelism),
        ..Pending::default()
    };
    pending.push(DiscoveryJob::new(
        sweep.clone(),
        JobScope::Sweep { subscriptions },
    ));
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        while running.len() < parallelism {
            let Some(job) = pending.next() else {
                break;
            };
            running.push(async move {
                let outcome = discovery.run(&job, now).await;
                (job, outcome)
            });
        }
        let Some((job, outcome)) = running.next().await else {
            break;
        };
        pending.finished(&job);
        let done = outcome?;
        *report.jobs.entry(kind_of(&job)).or_default() += 1;
        report.credentials += done.credentials;
        report.vaults += done.vaults;
        report.findings += done.findings;
        for follow_up in done.follow_ups {
            pending.push(follow_up);
        }
    }
    discovery
        .run(&DiscoveryJob::new(sweep, JobScope::Snapshot), now)
        .await?;
    Ok(report)
}

/// How many directory jobs an in-process sweep runs at once while vault jobs wait: half
/// the slots. A directory job is a chain of Graph pages one after another (an application
/// range of 1,250 applications is 13 pages with owners and 13 of federated credentials,
/// 26 at 100 to 300 ms each), the longest chains of a sweep, and all of them share the
/// instance's one Graph budget: started first and together (the sixteen application
/// ranges at the default 32 slots), they keep that budget busy from the start, while a
/// vault job, a few hundred milliseconds within its own vault's budget, takes the other
/// half of the slots in turn.
fn directory_slots(parallelism: usize) -> usize {
    (parallelism / 2).max(1)
}

/// The jobs of an in-process sweep waiting to run, and the order they run in: the jobs
/// that fan out first (they queue the rest), then directory jobs up to
/// `directory_slots` while vault jobs are waiting or may still be queued (any number
/// once none are), then vault jobs.
#[derive(Debug, Default)]
struct Pending {
    fan_out: VecDeque<DiscoveryJob>,
    vaults: VecDeque<DiscoveryJob>,
    directory: VecDeque<DiscoveryJob>,
    running_fan_out: usize,
    running_directory: usize,
    directory_slots: usize,
}

impl Pending {
    fn push(&mut self, job: DiscoveryJob) {
        match job.scope {
            JobScope::Vault { .. } => self.vaults.push_back(job),
            JobScope::Directory { .. } => self.directory.push_back(job),
            _ => self.fan_out.push_back(job),
        }
    }

    /// The next job to start, if one may start now.
    fn next(&mut self) -> Option<DiscoveryJob> {
        if let Some(job) = self.fan_out.pop_front() {
            self.running_fan_out += 1;
            return Some(job);
        }
        let vaults_to_come = !self.vaults.is_empty() || self.running_fan_out > 0;
        let directory_may_start =
            !vaults_to_come || self.running_directory < self.directory_slots.max(1);
        if directory_may_start && let Some(job) = self.directory.pop_front() {
            self.running_directory += 1;
            return Some(job);
        }
        self.vaults.pop_front()
    }

    fn finished(&mut self, job: &DiscoveryJob) {
        match job.scope {
            JobScope::Vault { .. } => {}
            JobScope::Directory { .. } => self.running_directory -= 1,
            _ => self.running_fan_out -= 1,
        }
    }
}

/// What a sweep run in-process did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub jobs: HashMap<&'static str, u64>,
    pub credentials: u64,
    pub vaults: u64,
    pub findings: u64,
}

fn kind_of(job: &DiscoveryJob) -> &'static str {
    match job.scope {
        JobScope::Sweep { .. } => "sweep",
        JobScope::Subscription { .. } => "subscription",
        JobScope::Vault { .. } => "vault",
        JobScope::Directory { .. } => "directory",
        JobScope::Snapshot => "snapshot",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_jobs_take_at_most_half_the_slots_and_always_one() {
        assert_eq!(directory_slots(32), 16);
        assert_eq!(directory_slots(8), 4);
        assert_eq!(directory_slots(3), 1);
        assert_eq!(directory_slots(1), 1);
        assert_eq!(directory_slots(0), 1);
    }
}
