//! The endpoint section: the SecretEndpoint's certificate policies and their trust
//! material, the access policy, the secret backends, rate limits and keyturn's own TLS
//! listener.

use std::path::PathBuf;

use serde::Serialize;

use super::audit::{parse_table_name, table_access};
use super::{
    Collector, DEFAULT_APPSETTINGS_PREFIX, MIN_APPSETTINGS_PREFIX_LEN, PLATFORM_SETTING_PREFIXES,
    SETTINGS, TableAccess, VaultHosts, list, looks_like_secret_material, parse_bool, parse_bounded,
    redacted,
};
use crate::domain::names::VaultUrl;
use crate::domain::resources::TableName;
use crate::domain::thumbprint::Thumbprint;

/// The most clock skew accepted: beyond an hour, "skew" is a wrong clock to fix.
const MAX_CLOCK_SKEW_SECONDS: u64 = 3600;
/// The longest device-cache time: a day; longer and a disabled device keeps access
/// for longer than anyone would expect.
const MAX_DEVICE_CACHE_SECONDS: u64 = 86_400;
/// The longest time between front-end checks: a day.
const MAX_FRONT_END_CHECK_SECONDS: u64 = 86_400;

/// A certificate policy named in KEYTURN_CERT_POLICIES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertPolicyName {
    TrustedThumbprints,
    Chain,
    EntraDevice,
}

/// The chain policy's trust material and options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSettings {
    pub roots: PathBuf,
    pub intermediates: Vec<PathBuf>,
    pub crls: Vec<PathBuf>,
    pub check_revocation: bool,
    pub clock_skew_seconds: u64,
}

/// The entra-device policy's root and demands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntraDeviceSettings {
    pub roots: PathBuf,
    pub require_compliant: bool,
    pub require_managed: bool,
    pub cache_seconds: u64,
    /// KEYTURN_CLOCK_SKEW_SECONDS, which applies to every certificate chain.
    pub clock_skew_seconds: u64,
}

/// keyturn's own TLS listener (self-hosted mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsListenerSettings {
    pub address: std::net::SocketAddr,
    pub certificate: PathBuf,
    /// Never echoed: see `KEYTURN_TLS_KEY`.
    #[serde(serialize_with = "redacted")]
    pub key: PathBuf,
}

/// The SecretEndpoint's settings. The files named here are read by start-up, which
/// `keyturn config check` runs too, so both refuse the same trust material.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointSettings {
    pub trust_arr_header: bool,
    pub policies: Vec<CertPolicyName>,
    pub trusted_thumbprints: Vec<Thumbprint>,
    pub chain: Option<ChainSettings>,
    pub entra_device: Option<EntraDeviceSettings>,
    /// A path or inline JSON.
    pub access_policy: Option<String>,
    pub appsettings_prefix: String,
    pub secrets_table: Option<TableName>,
    /// The vault the `keyvault` backend reads.
    pub secrets_vault: Option<VaultUrl>,
    /// How the secrets table is reached; set whenever `secrets_table` is.
    pub secrets_table_access: Option<TableAccess>,
    /// Requests per minute; 0 is unlimited.
    pub rate_limit_per_identity: u32,
    pub rate_limit_per_address: u32,
    pub tls: Option<TlsListenerSettings>,
    /// Seconds between checks of the site's own front end (with `trust_arr_header`).
    pub front_end_check_seconds: u64,
    /// The platform's names for the site keyturn runs as, read where the header is
    /// trusted: the front-end check reads that site.
    pub site: PlatformSite,
}

/// `WEBSITE_OWNER_NAME`, `WEBSITE_RESOURCE_GROUP` and `WEBSITE_SITE_NAME`, as the App
/// Service platform sets them on every site. Checked where they are used (start-up), so
/// that a missing one closes the endpoint with its reason rather than stopping the app.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlatformSite {
    pub owner_name: Option<String>,
    pub resource_group: Option<String>,
    pub site_name: Option<String>,
}

impl EndpointSettings {
    pub(crate) fn uses(&self, policy: CertPolicyName) -> bool {
        self.policies.contains(&policy)
    }
}

pub(super) fn parse(c: &mut Collector<'_>, hosts: &VaultHosts) -> EndpointSettings {
    let trust_arr_header = c
        .parse("KEYTURN_TRUST_ARR_CLIENT_CERT", parse_bool)
        .unwrap_or(false);
    let policies = c
        .parse("KEYTURN_CERT_POLICIES", |v| {
            list(v)
                .iter()
                .map(|name| match name.as_str() {
                    "trusted-thumbprints" => Ok(CertPolicyName::TrustedThumbprints),
                    "chain" => Ok(CertPolicyName::Chain),
                    "entra-device" => Ok(CertPolicyName::EntraDevice),
                    other => Err(format!(
                        "unknown policy `{other}`; expected trusted-thumbprints, chain or entra-device"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default();
    let trusted_thumbprints = c
        .parse("KEYTURN_TRUSTED_THUMBPRINTS", |v| {
            list(v)
                .iter()
                .map(|pin| {
                    Thumbprint::parse(pin).map_err(|e| format!("`{pin}` is not a thumbprint ({e})"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default();
    if policies.contains(&CertPolicyName::TrustedThumbprints) && trusted_thumbprints.is_empty() {
        c.fail(
            "KEYTURN_TRUSTED_THUMBPRINTS",
            "missing; the trusted-thumbprints policy is configured",
        );
    }
    let clock_skew_seconds = c
        .parse("KEYTURN_CLOCK_SKEW_SECONDS", |v| {
            parse_bounded(v, MAX_CLOCK_SKEW_SECONDS)
        })
        .unwrap_or(300);
    let chain = parse_chain(c, &policies, clock_skew_seconds);
    let entra_device = parse_entra_device(c, &policies, clock_skew_seconds);
    let access_policy = c.env.value("KEYTURN_ACCESS_POLICY").map(str::to_string);
    let appsettings_prefix = c
        .parse("KEYTURN_APPSETTINGS_PREFIX", parse_appsettings_prefix)
        .unwrap_or_else(|| DEFAULT_APPSETTINGS_PREFIX.into());
    let secrets_table = c.parse("KEYTURN_SECRETS_TABLE", parse_table_name);
    let secrets_table_access = match &secrets_table {
        None => None,
        Some(_) => {
            let access = table_access(c);
            if access.is_none() {
                c.fail(
                    "KEYTURN_SECRETS_TABLE",
                    "the table backend needs exactly one of KEYTURN_TABLE_ENDPOINT (https) and KEYTURN_TABLE_CONNECTION_STRING",
                );
            }
            access
        }
    };
    let secrets_vault = c.parse("KEYTURN_SECRETS_VAULT", |v| hosts.parse(v));
    let rate = |c: &mut Collector<'_>, name: &str, default: u32| {
        c.parse(name, |v| {
            v.parse::<u32>()
                .map_err(|_| "not a whole number of requests per minute".to_string())
        })
        .unwrap_or(default)
    };
    let rate_limit_per_identity = rate(c, "KEYTURN_RATE_LIMIT_PER_IDENTITY", 60);
    let rate_limit_per_address = rate(c, "KEYTURN_RATE_LIMIT_PER_ADDRESS", 600);
    let tls = parse_tls(c);
    if trust_arr_header && tls.is_some() {
        // The plain listener stays on loopback beside the TLS one; believing the
        // header there would let any local process present any certificate.
        c.fail(
            "KEYTURN_TRUST_ARR_CLIENT_CERT",
            "true together with keyturn's own TLS listener (KEYTURN_TLS_ADDRESS); trust the header only behind App Service",
        );
    }
    let front_end_check_seconds = c
        .parse("KEYTURN_FRONT_END_CHECK_SECONDS", |v| {
            parse_bounded(v, MAX_FRONT_END_CHECK_SECONDS).and_then(|n| {
                if n == 0 {
                    Err(format!(
                        "not a whole number of seconds from 1 to {MAX_FRONT_END_CHECK_SECONDS}"
                    ))
                } else {
                    Ok(n)
                }
            })
        })
        .unwrap_or(300);
    let platform = |name: &str| c.env.value(name).map(str::to_owned);
    let site = PlatformSite {
        owner_name: platform("WEBSITE_OWNER_NAME"),
        resource_group: platform("WEBSITE_RESOURCE_GROUP"),
        site_name: platform("WEBSITE_SITE_NAME"),
    };
    EndpointSettings {
        trust_arr_header,
        policies,
        trusted_thumbprints,
        chain,
        entra_device,
        access_policy,
        appsettings_prefix,
        secrets_table,
        secrets_table_access,
        secrets_vault,
        rate_limit_per_identity,
        rate_limit_per_address,
        tls,
        front_end_check_seconds,
        site,
    }
}

fn parse_chain(
    c: &mut Collector<'_>,
    policies: &[CertPolicyName],
    clock_skew_seconds: u64,
) -> Option<ChainSettings> {
    let check_revocation = c
        .parse("KEYTURN_CHAIN_REVOCATION", |v| match v {
            "crl" => Ok(true),
            "off" => Ok(false),
            other => Err(format!(
                "unknown revocation mode `{other}`; expected crl or off"
            )),
        })
        .unwrap_or(true);
    let paths = |c: &Collector<'_>, name: &str| -> Vec<PathBuf> {
        c.env
            .value(name)
            .map(|v| list(v).into_iter().map(PathBuf::from).collect())
            .unwrap_or_default()
    };
    let roots = c.env.value("KEYTURN_CHAIN_ROOTS").map(PathBuf::from);
    match (policies.contains(&CertPolicyName::Chain), roots) {
        (true, Some(roots)) => Some(ChainSettings {
            roots,
            intermediates: paths(c, "KEYTURN_CHAIN_INTERMEDIATES"),
            crls: paths(c, "KEYTURN_CHAIN_CRLS"),
            check_revocation,
            clock_skew_seconds,
        }),
        (true, None) => {
            c.fail(
                "KEYTURN_CHAIN_ROOTS",
                "missing; the chain policy is configured",
            );
            None
        }
        (false, _) => None,
    }
}

fn parse_entra_device(
    c: &mut Collector<'_>,
    policies: &[CertPolicyName],
    clock_skew_seconds: u64,
) -> Option<EntraDeviceSettings> {
    let (require_compliant, require_managed) = c
        .parse("KEYTURN_ENTRA_DEVICE_REQUIRE", |v| {
            let mut demands = (false, false);
            for demand in list(v) {
                match demand.as_str() {
                    "compliant" => demands.0 = true,
                    "managed" => demands.1 = true,
                    other => {
                        return Err(format!(
                            "unknown demand `{other}`; expected compliant or managed"
                        ));
                    }
                }
            }
            Ok(demands)
        })
        .unwrap_or_default();
    let cache_seconds = c
        .parse("KEYTURN_DEVICE_CACHE_SECONDS", |v| {
            parse_bounded(v, MAX_DEVICE_CACHE_SECONDS)
        })
        .unwrap_or(300);
    let roots = c.env.value("KEYTURN_ENTRA_DEVICE_ROOTS").map(PathBuf::from);
    match (policies.contains(&CertPolicyName::EntraDevice), roots) {
        (true, Some(roots)) => Some(EntraDeviceSettings {
            roots,
            require_compliant,
            require_managed,
            cache_seconds,
            clock_skew_seconds,
        }),
        (true, None) => {
            c.fail(
                "KEYTURN_ENTRA_DEVICE_ROOTS",
                "missing; the entra-device policy is configured",
            );
            None
        }
        (false, _) => None,
    }
}

fn parse_appsettings_prefix(v: &str) -> Result<String, String> {
    if !v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
        return Err("not a setting-name prefix (letters, digits and '_')".into());
    }
    // A prefix that overlaps a setting of keyturn's or of the platform would serve those
    // settings (connection strings, the identity endpoint's header) as secrets to any
    // device granted `*` on this backend.
    if v.len() < MIN_APPSETTINGS_PREFIX_LEN {
        return Err(format!(
            "too short: at least {MIN_APPSETTINGS_PREFIX_LEN} characters, so it cannot cover other settings"
        ));
    }
    if let Some(reserved) = PLATFORM_SETTING_PREFIXES
        .iter()
        .find(|reserved| overlaps(v, reserved))
    {
        return Err(format!(
            "overlaps {reserved}, which the platform reserves for its own settings; choose a prefix of its own"
        ));
    }
    if let Some(setting) = SETTINGS.iter().find(|setting| overlaps(v, setting.name)) {
        return Err(format!(
            "overlaps the setting {}; choose a prefix of its own",
            setting.name
        ));
    }
    Ok(v.to_string())
}

/// Whether either name is a prefix of the other, compared without case: then some
/// setting name could start with both.
fn overlaps(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_uppercase(), b.to_ascii_uppercase());
    a.starts_with(&b) || b.starts_with(&a)
}

fn parse_tls(c: &mut Collector<'_>) -> Option<TlsListenerSettings> {
    let address = c.parse("KEYTURN_TLS_ADDRESS", |v| {
        v.parse::<std::net::SocketAddr>()
            .map_err(|_| "not an address:port (for example 0.0.0.0:8443)".to_string())
    });
    let certificate = c.parse("KEYTURN_TLS_CERT", |v| file_path(v, "a certificate chain"));
    // The value is never quoted: a key pasted here instead of its path is a secret.
    let key = c.parse("KEYTURN_TLS_KEY", |v| file_path(v, "a private key"));
    let set = |name| c.env.value(name).is_some();
    let all_set = set("KEYTURN_TLS_ADDRESS") && set("KEYTURN_TLS_CERT") && set("KEYTURN_TLS_KEY");
    let any_set = set("KEYTURN_TLS_ADDRESS") || set("KEYTURN_TLS_CERT") || set("KEYTURN_TLS_KEY");
    match (address, certificate, key) {
        (Some(address), Some(certificate), Some(key)) => Some(TlsListenerSettings {
            address,
            certificate,
            key,
        }),
        _ => {
            if any_set && !all_set {
                c.fail(
                    "KEYTURN_TLS_ADDRESS",
                    "the TLS listener needs KEYTURN_TLS_ADDRESS, KEYTURN_TLS_CERT and KEYTURN_TLS_KEY together",
                );
            }
            None
        }
    }
}

/// A setting that names a file. Material pasted in place of the path is refused without
/// being quoted.
fn file_path(v: &str, holding: &str) -> Result<PathBuf, String> {
    if looks_like_secret_material(v) {
        return Err(format!(
            "holds what looks like {holding} itself, not the path of a file holding it; put it in an owner-only file and set the path"
        ));
    }
    Ok(PathBuf::from(v))
}
