//! Discovery's catalogs over local mode: the local vault's objects, read through its
//! [`SecretStore`] and [`CertificateStore`] metadata calls (never a value), under one
//! subscription, one vault per vault URL the local store holds objects for (local mode's
//! own vault always among them); and the local directory's applications and service
//! principals with their password and key credentials and owners. Local mode has no
//! keys, so that list is empty.

use std::sync::Arc;

use async_trait::async_trait;

use crate::adapters::local::directory::{ListedCredentialKind, LocalDirectory};
use crate::adapters::local::store::StoreError;
use crate::domain::ids::{DirectoryObjectId, KeyId, SubscriptionId};
use crate::domain::inventory::{
    CertificateDetails, CredentialHandle, CredentialKind, CredentialSource, DirectoryDetails,
    InventoryCredential, InventoryVault, KeyDetails, PermissionModel,
};
use crate::domain::names::{ObjectName, VaultName, VaultUrl};
use crate::ports::catalog::{
    CatalogPage, Cursor, DirectoryCatalog, DirectoryKind, DirectoryRange, ObjectKind,
    RequestBudget, ResourceCatalog, Stamp, SubscriptionRef, VaultCatalog, VaultRef,
};
use crate::ports::directory::CredentialIssuer;
use crate::ports::vault::{CertificateStore, SecretStore};
use crate::ports::{FailureKind, PortError};

/// The subscription local mode's vault is listed under: the nil GUID, which no Azure
/// subscription has.
pub const LOCAL_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";

/// Local mode's vault and directory, as discovery reads Azure.
#[derive(Debug, Clone)]
pub struct LocalCatalog {
    secrets: Arc<dyn SecretStore>,
    certificates: Arc<dyn CertificateStore>,
    directory: LocalDirectory,
    /// Local mode's own vault, listed even while it is empty.
    vault: VaultRef,
}

impl LocalCatalog {
    /// The vault at `url` (named `name`) and the directory.
    pub fn new(
        secrets: Arc<dyn SecretStore>,
        certificates: Arc<dyn CertificateStore>,
        directory: LocalDirectory,
        name: VaultName,
        url: VaultUrl,
    ) -> Self {
        Self {
            secrets,
            certificates,
            directory,
            vault: VaultRef {
                subscription: None,
                name,
                uri: url,
            },
        }
    }

    /// Local mode's own vault (`keyturn-local`).
    pub fn for_local_vault(
        secrets: Arc<dyn SecretStore>,
        certificates: Arc<dyn CertificateStore>,
        directory: LocalDirectory,
    ) -> Self {
        let url = crate::config::local_vault_url();
        let name = url
            .vault_name()
            .cloned()
            .expect("invariant: the local vault URL is under a Key Vault domain");
        Self::new(secrets, certificates, directory, name, url)
    }

    /// The vaults to list: the catalog's own and every other vault URL the local store
    /// holds secrets or certificates for, in URL order.
    async fn vaults_held(&self) -> Result<Vec<VaultRef>, PortError> {
        let urls: Vec<String> = self
            .directory
            .store()
            .call(|connection| {
                let mut statement = connection
                    .prepare(
                        "SELECT vault FROM vault_secret_versions \
                         UNION SELECT vault FROM vault_certificates ORDER BY 1",
                    )
                    .map_err(StoreError::sqlite("listing local vaults"))?;
                let rows = statement
                    .query_map([], |row| row.get(0))
                    .map_err(StoreError::sqlite("listing local vaults"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("listing local vaults"))?;
                Ok(rows)
            })
            .await
            .map_err(|error| error.into_port_error("listing local vaults"))?;
        let mut vaults = vec![self.vault.clone()];
        for url in urls {
            let unreadable = || PortError::invalid("the local store holds an unreadable vault URL");
            let uri = VaultUrl::parse(&url).map_err(|_| unreadable())?;
            if uri == self.vault.uri {
                continue;
            }
            let name = uri.vault_name().cloned().ok_or_else(unreadable)?;
            vaults.push(VaultRef {
                subscription: None,
                name,
                uri,
            });
        }
        Ok(vaults)
    }
}

fn vault_source(vault: &VaultRef) -> CredentialSource {
    CredentialSource::Vault {
        subscription: None,
        name: vault.name.clone(),
        uri: vault.uri.clone(),
    }
}

fn local_subscription() -> SubscriptionId {
    SubscriptionId::parse(LOCAL_SUBSCRIPTION).expect("the nil GUID is a subscription id")
}

#[async_trait]
impl ResourceCatalog for LocalCatalog {
    async fn subscriptions(
        &self,
        _after: Option<&Cursor>,
        _stamp: &Stamp,
    ) -> Result<CatalogPage<SubscriptionRef>, PortError> {
        Ok(CatalogPage::last(vec![SubscriptionRef {
            id: local_subscription(),
            display_name: Some("local".to_owned()),
        }]))
    }

    async fn vaults(
        &self,
        subscription: &SubscriptionId,
        _after: Option<&Cursor>,
        stamp: &Stamp,
    ) -> Result<CatalogPage<InventoryVault>, PortError> {
        if *subscription != local_subscription() {
            return Err(PortError::new(
                FailureKind::NotFound,
                format!("local mode has no subscription {subscription}"),
            ));
        }
        let vaults = self
            .vaults_held()
            .await?
            .into_iter()
            .map(|vault| InventoryVault {
                subscription: None,
                resource_group: None,
                name: vault.name,
                uri: vault.uri,
                location: None,
                soft_delete: Some(true),
                purge_protection: Some(false),
                permission_model: PermissionModel::Rbac,
                public_network_access: None,
                scanned_at: stamp.at,
                sweep: stamp.sweep.clone(),
            })
            .collect();
        Ok(CatalogPage::last(vaults))
    }
}

#[async_trait]
impl VaultCatalog for LocalCatalog {
    async fn objects(
        &self,
        vault: &VaultRef,
        kind: ObjectKind,
        _after: Option<&Cursor>,
        stamp: &Stamp,
    ) -> Result<CatalogPage<InventoryCredential>, PortError> {
        if !self.vaults_held().await?.iter().any(|v| v.uri == vault.uri) {
            return Err(PortError::new(FailureKind::NotFound, "not a local vault"));
        }
        let record = |kind: CredentialKind, name: &ObjectName| InventoryCredential {
            source: vault_source(vault),
            kind,
            name: name.as_str().to_owned(),
            handle: CredentialHandle::VaultObject {
                name: name.as_str().to_owned(),
                version: None,
                versions: None,
            },
            enabled: true,
            created: None,
            updated: None,
            not_before: None,
            expires: None,
            content_type: None,
            tags: Default::default(),
            certificate: None,
            key: None,
            directory: None,
            owners: Vec::new(),
            managed: false,
            scanned_at: stamp.at,
            sweep: stamp.sweep.clone(),
        };
        let items = match kind {
            ObjectKind::Secrets => self
                .secrets
                .list_secrets(&vault.uri)
                .await?
                .into_iter()
                .filter(|p| !p.managed)
                .map(|p| InventoryCredential {
                    handle: CredentialHandle::VaultObject {
                        name: p.id.name().as_str().to_owned(),
                        version: p.id.version().map(|v| v.as_str().to_owned()),
                        versions: None,
                    },
                    enabled: p.enabled,
                    created: p.created,
                    updated: p.updated,
                    not_before: p.not_before,
                    expires: p.expires,
                    content_type: p.content_type.clone(),
                    tags: p.tags.clone(),
                    ..record(CredentialKind::Secret, p.id.name())
                })
                .collect(),
            ObjectKind::Certificates => self
                .certificates
                .list_certificates(&vault.uri)
                .await?
                .into_iter()
                .map(|p| InventoryCredential {
                    enabled: p.enabled,
                    not_before: p.not_before,
                    expires: p.expires,
                    tags: p.tags.clone(),
                    certificate: Some(CertificateDetails {
                        thumbprint: p.x5t_hex.clone(),
                        ..CertificateDetails::default()
                    }),
                    ..record(CredentialKind::Certificate, p.id.name())
                })
                .collect(),
            ObjectKind::Keys => Vec::new(),
        };
        Ok(CatalogPage::last(items))
    }

    async fn certificate(
        &self,
        vault: &VaultRef,
        name: &str,
    ) -> Result<CertificateDetails, PortError> {
        let name = ObjectName::parse(name)
            .map_err(|_| PortError::invalid("a certificate name that does not parse"))?;
        let properties = self
            .certificates
            .certificate_properties(&vault.uri, &name)
            .await?
            .ok_or_else(|| PortError::new(FailureKind::NotFound, "no such certificate"))?;
        let issuer = self.certificates.issuer(&vault.uri, &name).await?;
        Ok(CertificateDetails {
            thumbprint: properties.x5t_hex,
            policy_issuer: Some(issuer),
            ..CertificateDetails::default()
        })
    }

    async fn key(&self, _vault: &VaultRef, _name: &str) -> Result<KeyDetails, PortError> {
        Err(PortError::new(
            FailureKind::NotFound,
            "the local vault holds no keys",
        ))
    }

    /// The local vault is not Key Vault: no budget to charge but a read per object.
    fn detail_requests(&self, kind: ObjectKind) -> u32 {
        u32::from(kind != ObjectKind::Secrets)
    }

    /// A local certificate's versions are those of the secret that backs it, as in Key
    /// Vault; the local vault holds no keys.
    async fn versions(
        &self,
        vault: &VaultRef,
        kind: ObjectKind,
        name: &str,
        _after: Option<&Cursor>,
    ) -> Result<(u32, Option<Cursor>), PortError> {
        if kind == ObjectKind::Keys {
            return Err(PortError::new(
                FailureKind::NotFound,
                "the local vault holds no keys",
            ));
        }
        let name = ObjectName::parse(name)
            .map_err(|_| PortError::invalid("an object name that does not parse"))?;
        let versions = self.secrets.list_versions(&vault.uri, &name).await?;
        Ok((u32::try_from(versions.len()).unwrap_or(u32::MAX), None))
    }
}

#[async_trait]
impl DirectoryCatalog for LocalCatalog {
    async fn credentials(
        &self,
        range: &DirectoryRange,
        _after: Option<&Cursor>,
        stamp: &Stamp,
        _budget: &dyn RequestBudget,
    ) -> Result<CatalogPage<InventoryCredential>, PortError> {
        let objects = match range.kind {
            DirectoryKind::Applications => self.directory.applications().await?,
            DirectoryKind::ServicePrincipals => self.directory.service_principals().await?,
        };
        let prefix = range.prefix.to_string();
        let mut items = Vec::new();
        for object in objects {
            if !object.app_id.to_string().starts_with(&prefix) {
                continue;
            }
            let source = match range.kind {
                DirectoryKind::Applications => CredentialSource::Application {
                    object_id: object.object_id,
                    app_id: object.app_id,
                    display_name: object.display_name.clone(),
                },
                DirectoryKind::ServicePrincipals => CredentialSource::ServicePrincipal {
                    object_id: object.object_id,
                    app_id: object.app_id,
                    display_name: object.display_name.clone(),
                },
            };
            let owners = self.directory.owners(&object.object_id).await?;
            let record = |key_id: KeyId,
                          display_name: Option<String>,
                          kind: CredentialKind,
                          details: DirectoryDetails| InventoryCredential {
                source: source.clone(),
                kind,
                name: display_name.unwrap_or_else(|| key_id.to_string()),
                handle: CredentialHandle::DirectoryCredential { key_id },
                enabled: true,
                created: None,
                updated: None,
                not_before: None,
                expires: None,
                content_type: None,
                tags: Default::default(),
                certificate: None,
                key: None,
                directory: Some(details),
                owners: owners.clone(),
                managed: false,
                scanned_at: stamp.at,
                sweep: stamp.sweep.clone(),
            };
            if range.kind == DirectoryKind::Applications {
                for credential in self
                    .directory
                    .password_credentials(&object.object_id)
                    .await?
                {
                    items.push(InventoryCredential {
                        not_before: credential.start,
                        expires: credential.end,
                        ..record(
                            credential.key_id,
                            credential.display_name,
                            CredentialKind::PasswordCredential,
                            DirectoryDetails {
                                credential_type: Some("Password".to_owned()),
                                ..DirectoryDetails::default()
                            },
                        )
                    });
                }
            }
            for credential in self.directory.listed_credentials(&object.object_id).await? {
                let (kind, details) = match credential.kind {
                    ListedCredentialKind::Password => (
                        CredentialKind::PasswordCredential,
                        DirectoryDetails {
                            credential_type: Some("Password".to_owned()),
                            ..DirectoryDetails::default()
                        },
                    ),
                    ListedCredentialKind::Certificate { usage, thumbprint } => (
                        CredentialKind::KeyCredential,
                        DirectoryDetails {
                            credential_type: Some("AsymmetricX509Cert".to_owned()),
                            usage: Some(usage),
                            thumbprint,
                            ..DirectoryDetails::default()
                        },
                    ),
                };
                items.push(InventoryCredential {
                    not_before: credential.start,
                    expires: credential.end,
                    ..record(credential.key_id, credential.display_name, kind, details)
                });
            }
        }
        Ok(CatalogPage::last(items))
    }

    /// The local directory has no federated identity credentials: every application
    /// counts none.
    async fn federated_credential_counts(
        &self,
        _range: &DirectoryRange,
        _after: Option<&Cursor>,
    ) -> Result<CatalogPage<(DirectoryObjectId, u32)>, PortError> {
        Ok(CatalogPage::last(Vec::new()))
    }
}
