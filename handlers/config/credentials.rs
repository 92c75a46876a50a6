//! The credentials section: how keyturn authenticates to Azure, where Entra and Microsoft
//! Graph are, and which cloud that makes it: the cloud decides which hosts may be sent
//! Key Vault tokens.

use serde::Serialize;

use super::{Collector, DEFAULT_AUTHORITY_HOST, DEFAULT_GRAPH_ENDPOINT, parse_bool};
use crate::domain::ids::TenantId;
use crate::domain::names::{KEY_VAULT_DNS_SUFFIXES, VaultUrl};

/// How keyturn obtains Azure tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    ManagedIdentity,
    WorkloadIdentity,
    AzureCli,
}

#[derive(Debug, Clone, Serialize)]
pub struct CredentialSettings {
    pub kind: CredentialKind,
    /// A user-assigned identity's client id (a GUID).
    pub client_id: Option<String>,
}

/// Where Entra and Microsoft Graph are, for the cloud keyturn runs in.
#[derive(Debug, Clone, Serialize)]
pub struct EntraSettings {
    /// The tenant new client secrets are proven in; needed by the Azure token prover.
    pub tenant_id: Option<TenantId>,
    pub authority_host: url::Url,
    pub graph_endpoint: url::Url,
    /// Azure Resource Manager: `KEYTURN_RESOURCE_MANAGER_ENDPOINT`, else the configured
    /// cloud's; `None` where neither names one.
    pub resource_manager_endpoint: Option<url::Url>,
}

impl EntraSettings {
    /// The cloud the authority host belongs to, if it is one Microsoft runs.
    pub(crate) fn cloud(&self) -> Option<Cloud> {
        Cloud::of_authority(&self.authority_host)
    }
}

/// The Azure clouds keyturn knows, by their Entra authority host (Microsoft's "National
/// clouds" documentation lists the authority and Key Vault endpoints of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Cloud {
    Public,
    China,
    UsGovernment,
    Germany,
}

impl Cloud {
    pub(crate) fn of_authority(authority: &url::Url) -> Option<Self> {
        match authority.host_str()? {
            "login.microsoftonline.com" => Some(Self::Public),
            "login.chinacloudapi.cn" | "login.partner.microsoftonline.cn" => Some(Self::China),
            "login.microsoftonline.us" => Some(Self::UsGovernment),
            "login.microsoftonline.de" => Some(Self::Germany),
            _ => None,
        }
    }

    /// This cloud's Azure Resource Manager (`environment().resourceManager` in Bicep).
    pub(crate) fn resource_manager(self) -> &'static str {
        match self {
            Self::Public => "https://management.azure.com",
            Self::China => "https://management.chinacloudapi.cn",
            Self::UsGovernment => "https://management.usgovcloudapi.net",
            Self::Germany => "https://management.microsoftazure.de",
        }
    }

    /// The DNS suffix of this cloud's Key Vault hosts.
    pub(crate) fn key_vault_suffix(self) -> &'static str {
        match self {
            Self::Public => KEY_VAULT_DNS_SUFFIXES[0],
            Self::China => KEY_VAULT_DNS_SUFFIXES[1],
            Self::UsGovernment => KEY_VAULT_DNS_SUFFIXES[2],
            Self::Germany => KEY_VAULT_DNS_SUFFIXES[3],
        }
    }
}

/// Which hosts a vault URL may name: Key Vault hosts of the configured cloud (of any
/// cloud when the authority host is not one Microsoft runs), or, with
/// `KEYTURN_ALLOW_ANY_VAULT_HOST=true`, any https host (the tests' stand-ins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "rule", content = "cloud")]
pub(crate) enum VaultHosts {
    Cloud(Option<Cloud>),
    Any,
}

impl VaultHosts {
    /// A vault URL these rules accept. The problem names the rule, not the input.
    pub(crate) fn parse(self, text: &str) -> Result<VaultUrl, String> {
        let url = VaultUrl::parse(text).map_err(|e| format!("not a Key Vault URL ({e})"))?;
        let Self::Cloud(cloud) = self else {
            return Ok(url);
        };
        let host = url
            .url()
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let allowed: Vec<&str> = match cloud {
            Some(cloud) => vec![cloud.key_vault_suffix()],
            None => KEY_VAULT_DNS_SUFFIXES.to_vec(),
        };
        let under = |suffix: &&str| {
            host.strip_suffix(suffix)
                .is_some_and(|name| name.ends_with('.'))
        };
        if url.vault_name().is_some() && url.url().port().is_none() && allowed.iter().any(under) {
            Ok(url)
        } else {
            Err(format!(
                "not a Key Vault host of this cloud (https://<vault>.{}/); set \
                 KEYTURN_ALLOW_ANY_VAULT_HOST=true only for test stand-ins",
                allowed.join(" or https://<vault>.")
            ))
        }
    }
}

pub(super) fn parse_credential(c: &mut Collector<'_>) -> CredentialSettings {
    let kind = c
        .parse("KEYTURN_CREDENTIAL", |v| match v {
            "managed-identity" => Ok(CredentialKind::ManagedIdentity),
            "workload-identity" => Ok(CredentialKind::WorkloadIdentity),
            "azure-cli" => Ok(CredentialKind::AzureCli),
            other => Err(format!(
                "unknown credential `{other}`; expected managed-identity, workload-identity or azure-cli"
            )),
        })
        .unwrap_or(CredentialKind::ManagedIdentity);
    let client_id = c.parse("AZURE_CLIENT_ID", |v| {
        uuid::Uuid::parse_str(v)
            .map(|u| u.to_string())
            .map_err(|_| {
                "not a client id (a GUID such as 00000000-0000-0000-0000-000000000000)".to_string()
            })
    });
    CredentialSettings { kind, client_id }
}

pub(super) fn parse_entra(c: &mut Collector<'_>) -> EntraSettings {
    let tenant_id = c.parse("AZURE_TENANT_ID", |v| {
        TenantId::parse(v).map_err(|_| {
            "not a tenant id (a GUID such as 00000000-0000-0000-0000-000000000000)".to_string()
        })
    });
    let authority_host = c
        .parse("KEYTURN_AUTHORITY_HOST", parse_https_origin)
        .unwrap_or_else(|| default_url(DEFAULT_AUTHORITY_HOST));
    let graph_endpoint = c
        .parse("KEYTURN_GRAPH_ENDPOINT", parse_https_origin)
        .unwrap_or_else(|| default_url(DEFAULT_GRAPH_ENDPOINT));
    let resource_manager_endpoint = c
        .parse("KEYTURN_RESOURCE_MANAGER_ENDPOINT", parse_https_origin)
        .or_else(|| {
            Cloud::of_authority(&authority_host).map(|cloud| default_url(cloud.resource_manager()))
        });
    EntraSettings {
        tenant_id,
        authority_host,
        graph_endpoint,
        resource_manager_endpoint,
    }
}

pub(super) fn parse_vault_hosts(c: &mut Collector<'_>, entra: &EntraSettings) -> VaultHosts {
    let any = c
        .parse("KEYTURN_ALLOW_ANY_VAULT_HOST", parse_bool)
        .unwrap_or(false);
    if any {
        VaultHosts::Any
    } else {
        VaultHosts::Cloud(entra.cloud())
    }
}

/// An https origin such as `https://login.microsoftonline.com`: tokens and secrets go
/// there, so never plain http, and nothing after the host.
fn parse_https_origin(v: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(v).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "https" {
        return Err("must be an https URL".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("must be the host only, without a path, query or fragment".into());
    }
    Ok(url)
}

fn default_url(text: &str) -> url::Url {
    url::Url::parse(text).expect("invariant: the default endpoints are valid URLs")
}
