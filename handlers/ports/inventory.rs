//! The inventory store: where discovery writes what it found (credentials, vaults,
//! findings, one snapshot per sweep) and where `keyturn inventory`, alerts and digests read
//! it back. Table storage in Azure, the embedded SQLite file locally.
//!
//! Writes are upserts keyed by each record's stable id, so a scan job that runs twice
//! (Service Bus delivers at least once) leaves the same rows. Reads are paged: a caller
//! walks a tenant's credentials one page at a time ([`credential_stream`]) and never holds
//! the whole tenant in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::domain::ids::{AppId, KeyId};
use crate::domain::inventory::{
    Adoption, CredentialFilter, CredentialSource, InventoryCredential, InventoryVault, RecordId,
    Scope, ScopeFinding, SourceKind, SweepId, SweepSnapshot,
};
use crate::domain::names::VaultUrl;
use crate::ports::PortError;
use crate::ports::catalog::{DirectoryKind, DirectoryRange};

/// Most records one page may hold: Table storage returns at most 1,000 entities per query
/// response (Query Entities, "Query timeout and pagination").
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Where the next page starts: opaque, produced by the store and handed back unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken(String);

impl PageToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of records and where the next one starts (`None`: this was the last). A page
/// may hold fewer records than asked for, even none, and still have a next one: a store
/// that filters after reading returns what passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<PageToken>,
}

/// Where the inventory is kept.
#[async_trait]
pub trait InventoryStore: Send + Sync + fmt::Debug {
    /// Writes each credential over the record with its id (inserting when new): a page
    /// at a time, as few requests as the store allows. Not atomic across credentials in
    /// general (Table storage stores each source's share of the call whole or not at all,
    /// SQLite the whole call): a failure may leave some written, it is returned, and the
    /// retry writes them again to the same rows.
    async fn put_credentials(&self, credentials: &[InventoryCredential]) -> Result<(), PortError>;

    /// Writes a vault over the record with its id.
    async fn put_vault(&self, vault: &InventoryVault) -> Result<(), PortError>;

    /// Writes a finding over the record with its id (same scope, kind and subject).
    async fn put_finding(&self, finding: &ScopeFinding) -> Result<(), PortError>;

    /// Writes a sweep's snapshot over any earlier one of the same sweep.
    async fn put_snapshot(&self, snapshot: &SweepSnapshot) -> Result<(), PortError>;

    /// Removes the credentials of `source` last written by a sweep older than `sweep`
    /// (sweep ids sort by time): what was deleted in Azure since the last sweep. Call it
    /// only after a complete scan of the source. Rows of `sweep` itself and of any newer
    /// sweep stay, so a late redelivery of an old sweep's job never deletes what a newer
    /// sweep wrote. Returns how many were removed.
    async fn retire_unseen(
        &self,
        source: &CredentialSource,
        sweep: &SweepId,
    ) -> Result<u64, PortError>;

    /// Removes the directory credentials of `range` (applications or service principals
    /// whose appId starts with its digit) written by a sweep older than `sweep`: the
    /// credentials deleted from an object since, and every credential of an object deleted
    /// since. Call it only after a complete scan of the range. Returns how many were
    /// removed.
    ///
    /// This default walks the range's kind of source a page at a time and retires each
    /// source holding an older row, keeping in memory only those sources; a store that
    /// can select the rows by range itself does so instead.
    async fn retire_unseen_in_range(
        &self,
        range: &DirectoryRange,
        sweep: &SweepId,
    ) -> Result<u64, PortError> {
        let filter = CredentialFilter {
            source_kind: Some(match range.kind {
                DirectoryKind::Applications => SourceKind::Application,
                DirectoryKind::ServicePrincipals => SourceKind::ServicePrincipal,
            }),
            ..CredentialFilter::default()
        };
        let mut stale: BTreeMap<RecordId, CredentialSource> = BTreeMap::new();
        let mut after: Option<PageToken> = None;
        loop {
            let page = self
                .credentials(&filter, after.as_ref(), MAX_PAGE_SIZE)
                .await?;
            for credential in page.items {
                let older = credential.sweep < *sweep;
                let in_range = DirectoryRange::of(&credential.source).as_ref() == Some(range);
                if older && in_range {
                    stale
                        .entry(credential.source.key())
                        .or_insert(credential.source);
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut removed = 0;
        for source in stale.values() {
            removed += self.retire_unseen(source, sweep).await?;
        }
        Ok(removed)
    }

    /// Removes the findings on `scope` written by a sweep older than `sweep`: problems
    /// that are gone. A newer sweep's findings stay, as in [`InventoryStore::retire_unseen`].
    async fn clear_findings(&self, scope: &Scope, sweep: &SweepId) -> Result<u64, PortError>;

    /// Records each adoption over the record with its id (the same credential and holder),
    /// stamped with the sweep it carries.
    async fn put_adoptions(&self, adoptions: &[Adoption]) -> Result<(), PortError>;

    /// The application password credentials of `apps` that an adoption names, as
    /// (application, keyId). A directory job asks this for each page of applications it
    /// writes: a point or partition read per application, or one range read over the
    /// adoptions (at most two per managed application secret), never a walk of the
    /// tenant's credentials.
    async fn adopted(&self, apps: &[AppId]) -> Result<BTreeSet<(AppId, KeyId)>, PortError>;

    /// Removes the adoptions held in `vault` (its secrets) recorded by a sweep older than
    /// `sweep`: those its secrets no longer name (tags removed or pointing at another
    /// credential, the secret deleted). Call it only after a complete listing of the
    /// vault's secrets. Returns the (application, keyId) pairs the removed adoptions named.
    async fn retire_adoptions(
        &self,
        vault: &CredentialSource,
        sweep: &SweepId,
    ) -> Result<Vec<(AppId, KeyId)>, PortError>;

    /// Sets whether each application password credential `pairs` names is adopted
    /// ([`InventoryCredential::set_adopted`]) on the row the store holds for it, changing
    /// nothing else on the row, and never over a write of the same row made meanwhile (a
    /// directory job rewriting it): the flag lands on the row as it is now. A pair whose
    /// credential has no row yet is skipped (the directory job that writes it asks
    /// [`InventoryStore::adopted`]). Returns how many rows changed.
    async fn mark_adopted(&self, pairs: &[(AppId, KeyId)], adopted: bool)
    -> Result<u64, PortError>;

    /// One page of the credentials `filter` matches, at most `limit` (capped at
    /// [`MAX_PAGE_SIZE`]), starting where `after` says (`None`: the first page). Every
    /// matching credential appears on exactly one page of a walk.
    async fn credentials(
        &self,
        filter: &CredentialFilter,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<InventoryCredential>, PortError>;

    /// One page of the vaults.
    async fn vaults(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<InventoryVault>, PortError>;

    /// The vault at `uri` as the store holds it, if a sweep found it.
    ///
    /// This default walks the vaults a page at a time; a store that can read one record
    /// by its id ([`CredentialSource::vault_key`]) does so instead.
    async fn vault(&self, uri: &VaultUrl) -> Result<Option<InventoryVault>, PortError> {
        let mut after: Option<PageToken> = None;
        loop {
            let page = self.vaults(after.as_ref(), MAX_PAGE_SIZE).await?;
            if let Some(vault) = page.items.into_iter().find(|v| v.uri == *uri) {
                return Ok(Some(vault));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(None),
            }
        }
    }

    /// One page of the findings.
    async fn findings(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<ScopeFinding>, PortError>;

    /// One page of the snapshots, oldest sweep first.
    async fn snapshots(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<SweepSnapshot>, PortError>;
}

/// Every credential `filter` matches, one page of `page_size` read at a time: memory
/// holds one page, whatever the tenant's size.
pub fn credential_stream<'a>(
    store: &'a dyn InventoryStore,
    filter: CredentialFilter,
    page_size: u32,
) -> BoxStream<'a, Result<InventoryCredential, PortError>> {
    paged(move |after| {
        let filter = filter.clone();
        async move { store.credentials(&filter, after.as_ref(), page_size).await }
    })
}

/// Every vault, a page at a time.
pub fn vault_stream(
    store: &dyn InventoryStore,
    page_size: u32,
) -> BoxStream<'_, Result<InventoryVault, PortError>> {
    paged(move |after| async move { store.vaults(after.as_ref(), page_size).await })
}

/// Every finding, a page at a time.
pub fn finding_stream(
    store: &dyn InventoryStore,
    page_size: u32,
) -> BoxStream<'_, Result<ScopeFinding, PortError>> {
    paged(move |after| async move { store.findings(after.as_ref(), page_size).await })
}

/// Counts what the store holds now as `sweep`'s snapshot at `at` and writes it: every
/// credential (by kind, source, expiry bucket at `at`, managed or not), every vault and
/// every finding, read a page at a time. Run once a sweep's jobs are done; running it
/// again rewrites the same snapshot.
pub async fn take_snapshot(
    store: &dyn InventoryStore,
    sweep: SweepId,
    at: chrono::DateTime<chrono::Utc>,
    page_size: u32,
) -> Result<SweepSnapshot, PortError> {
    let mut snapshot = SweepSnapshot::new(sweep, at);
    let mut credentials = credential_stream(store, CredentialFilter::default(), page_size);
    while let Some(credential) = credentials.next().await {
        snapshot.count(&credential?);
    }
    let mut vaults = vault_stream(store, page_size);
    while let Some(vault) = vaults.next().await {
        vault?;
        snapshot.vaults += 1;
    }
    let mut findings = finding_stream(store, page_size);
    while let Some(finding) = findings.next().await {
        snapshot.count_finding(&finding?);
    }
    store.put_snapshot(&snapshot).await?;
    Ok(snapshot)
}

/// Walks pages from the first until one has no next token, yielding their records.
fn paged<'a, T, F, Fut>(read: F) -> BoxStream<'a, Result<T, PortError>>
where
    T: Send + 'a,
    F: Fn(Option<PageToken>) -> Fut + Send + Sync + 'a,
    Fut: std::future::Future<Output = Result<Page<T>, PortError>> + Send + 'a,
{
    // State: `Some(after)` while a page remains to read (`Some(None)` is the first).
    stream::try_unfold(
        (Some(None::<PageToken>), read),
        |(state, read)| async move {
            let Some(after) = state else {
                return Ok::<_, PortError>(None);
            };
            let page = read(after).await?;
            let next = page.next.map(Some);
            Ok(Some((
                stream::iter(page.items.into_iter().map(Ok::<T, PortError>)),
                (next, read),
            )))
        },
    )
    .try_flatten()
    .boxed()
}
