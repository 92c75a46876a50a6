//! The inventory store in memory: records keyed by their stable ids, pages in id order
//! with the last id as the token, the port's filter applied to every page (as every real
//! store applies it last), and writes that can be refused, as a store that lost its
//! permission would refuse them.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;
use keyturn::domain::ids::{AppId, KeyId};
use keyturn::domain::inventory::{
    Adoption, CredentialFilter, CredentialSource, InventoryCredential, InventoryVault, Scope,
    ScopeFinding, SweepId, SweepSnapshot,
};
use keyturn::ports::inventory::{InventoryStore, MAX_PAGE_SIZE, Page, PageToken};
use keyturn::ports::{FailureKind, PortError};

use crate::locked;

#[derive(Debug, Default)]
pub struct MemoryInventory {
    credentials: Mutex<BTreeMap<String, InventoryCredential>>,
    vaults: Mutex<BTreeMap<String, InventoryVault>>,
    findings: Mutex<BTreeMap<String, ScopeFinding>>,
    /// Keyed by `{at, fixed width}:{sweep}`, so iteration is oldest first.
    snapshots: Mutex<BTreeMap<String, SweepSnapshot>>,
    adoptions: Mutex<BTreeMap<String, Adoption>>,
    refuse_writes: Mutex<bool>,
    writes: Mutex<u64>,
}

impl MemoryInventory {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on every write fails with a permission error (or works again).
    pub fn refuse_writes(&self, refuse: bool) {
        *locked(&self.refuse_writes) = refuse;
    }

    /// How many records were written (each upsert counts, also rewriting a same row).
    pub fn writes(&self) -> u64 {
        *locked(&self.writes)
    }

    /// Every credential, in id order.
    pub fn all_credentials(&self) -> Vec<InventoryCredential> {
        locked(&self.credentials).values().cloned().collect()
    }

    fn allow_write(&self, records: usize) -> Result<(), PortError> {
        if *locked(&self.refuse_writes) {
            return Err(PortError::new(
                FailureKind::PermissionDenied {
                    missing: "Storage Table Data Contributor on the inventory table".to_owned(),
                },
                "writing the inventory",
            ));
        }
        *locked(&self.writes) += records as u64;
        Ok(())
    }
}

fn page_of<T: Clone>(
    records: &BTreeMap<String, T>,
    after: Option<&PageToken>,
    limit: u32,
    keep: impl Fn(&T) -> bool,
) -> Page<T> {
    let limit = limit.clamp(1, MAX_PAGE_SIZE) as usize;
    let start = match after {
        Some(token) => Bound::Excluded(token.as_str().to_owned()),
        None => Bound::Unbounded,
    };
    let read: Vec<(&String, &T)> = records
        .range((start, Bound::Unbounded))
        .take(limit)
        .collect();
    let next = match read.last() {
        Some((key, _)) if read.len() == limit => Some(PageToken::new((*key).clone())),
        _ => None,
    };
    Page {
        items: read
            .into_iter()
            .map(|(_, record)| record)
            .filter(|record| keep(record))
            .cloned()
            .collect(),
        next,
    }
}

#[async_trait]
impl InventoryStore for MemoryInventory {
    async fn put_credentials(&self, credentials: &[InventoryCredential]) -> Result<(), PortError> {
        self.allow_write(credentials.len())?;
        let mut stored = locked(&self.credentials);
        for credential in credentials {
            stored.insert(credential.id().to_string(), credential.clone());
        }
        Ok(())
    }

    async fn put_vault(&self, vault: &InventoryVault) -> Result<(), PortError> {
        self.allow_write(1)?;
        locked(&self.vaults).insert(vault.id().to_string(), vault.clone());
        Ok(())
    }

    async fn put_finding(&self, finding: &ScopeFinding) -> Result<(), PortError> {
        self.allow_write(1)?;
        locked(&self.findings).insert(finding.id().to_string(), finding.clone());
        Ok(())
    }

    async fn put_snapshot(&self, snapshot: &SweepSnapshot) -> Result<(), PortError> {
        self.allow_write(1)?;
        let mut stored = locked(&self.snapshots);
        stored.retain(|_, kept| kept.sweep != snapshot.sweep);
        let key = format!(
            "{}:{}",
            snapshot.at.format("%Y%m%dT%H%M%S%.9f"),
            snapshot.sweep
        );
        stored.insert(key, snapshot.clone());
        Ok(())
    }

    async fn retire_unseen(
        &self,
        source: &CredentialSource,
        sweep: &SweepId,
    ) -> Result<u64, PortError> {
        self.allow_write(0)?;
        let key = source.key();
        let mut stored = locked(&self.credentials);
        let before = stored.len();
        stored.retain(|_, credential| credential.source.key() != key || &credential.sweep >= sweep);
        Ok((before - stored.len()) as u64)
    }

    async fn clear_findings(&self, scope: &Scope, sweep: &SweepId) -> Result<u64, PortError> {
        self.allow_write(0)?;
        let key = scope.key();
        let mut stored = locked(&self.findings);
        let before = stored.len();
        stored.retain(|_, finding| finding.scope.key() != key || &finding.sweep >= sweep);
        Ok((before - stored.len()) as u64)
    }

    async fn put_adoptions(&self, adoptions: &[Adoption]) -> Result<(), PortError> {
        self.allow_write(adoptions.len())?;
        let mut stored = locked(&self.adoptions);
        for adoption in adoptions {
            stored.insert(adoption.id().to_string(), adoption.clone());
        }
        Ok(())
    }

    async fn adopted(&self, apps: &[AppId]) -> Result<BTreeSet<(AppId, KeyId)>, PortError> {
        Ok(locked(&self.adoptions)
            .values()
            .filter(|a| apps.contains(&a.app_id))
            .map(|a| (a.app_id, a.key_id))
            .collect())
    }

    async fn retire_adoptions(
        &self,
        vault: &CredentialSource,
        sweep: &SweepId,
    ) -> Result<Vec<(AppId, KeyId)>, PortError> {
        self.allow_write(0)?;
        let key = vault.key();
        let mut ended = Vec::new();
        locked(&self.adoptions).retain(|_, a| {
            let stale = a.vault == key && &a.sweep < sweep;
            if stale {
                ended.push((a.app_id, a.key_id));
            }
            !stale
        });
        Ok(ended)
    }

    async fn mark_adopted(
        &self,
        pairs: &[(AppId, KeyId)],
        adopted: bool,
    ) -> Result<u64, PortError> {
        self.allow_write(0)?;
        let mut changed = 0;
        for credential in locked(&self.credentials).values_mut() {
            let named = credential
                .adoption_key()
                .is_some_and(|pair| pairs.contains(&pair));
            if named && credential.set_adopted(adopted) {
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn credentials(
        &self,
        filter: &CredentialFilter,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<InventoryCredential>, PortError> {
        Ok(page_of(&locked(&self.credentials), after, limit, |c| {
            filter.matches(c)
        }))
    }

    async fn vaults(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<InventoryVault>, PortError> {
        Ok(page_of(&locked(&self.vaults), after, limit, |_| true))
    }

    async fn findings(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<ScopeFinding>, PortError> {
        Ok(page_of(&locked(&self.findings), after, limit, |_| true))
    }

    async fn snapshots(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<SweepSnapshot>, PortError> {
        Ok(page_of(&locked(&self.snapshots), after, limit, |_| true))
    }
}
