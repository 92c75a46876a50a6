//! The secret endpoint's certificate side as start-up builds it and keeps it fresh: the
//! policies settings describe ([`PolicyConfig`]: trusted thumbprints, the chain policy
//! with its trust material and CRLs, the entra-device policy with its directory cache),
//! built into [`CertificatePolicies`], and the scheduled CRL refresh.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::mtls::chain::{
    ChainOptions, ChainPolicy, KeyIdentifiers, LeafKeyUsage, RevocationPolicy,
};
use crate::mtls::entra_device::{DeviceRequirements, EntraDevicePolicy};
use crate::mtls::policies::CertificatePolicies;
use crate::mtls::thumbprints::{ThumbprintPolicyError, TrustedThumbprints};
use crate::mtls::trust::TrustError;
use crate::ports::directory::DeviceDirectory;

/// Why the configured certificate policies cannot be built. Start-up stops on these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyConfigError {
    #[error("trusted-thumbprints policy: {0}")]
    Thumbprints(#[from] ThumbprintPolicyError),
    #[error("{policy} policy trust material: {source}")]
    Trust {
        policy: &'static str,
        source: TrustError,
    },
    #[error("the entra-device policy needs a device directory, and none was provided")]
    NoDirectory,
}

/// Which certificate policies to run and with what, as settings describe them. Paths
/// are read when the endpoint is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub trust_arr_header: bool,
    /// Pins for `trusted-thumbprints`; `None` leaves the policy off.
    pub thumbprints: Option<Vec<String>>,
    pub chain: Option<ChainConfig>,
    pub entra_device: Option<EntraDeviceConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    pub roots: PathBuf,
    pub intermediates: Vec<PathBuf>,
    pub crls: Vec<PathBuf>,
    /// When false, revocation is not checked (a PKI without CRLs must say so).
    pub check_revocation: bool,
    pub clock_skew: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraDeviceConfig {
    /// The tenant's device-certificate root (`MS-Organization-Access`).
    pub roots: PathBuf,
    pub requirements: DeviceRequirements,
    pub cache_ttl: Duration,
    /// How far ahead of our clock a device certificate's notBefore may lie.
    pub clock_skew: Duration,
}

/// The certificate policies a configuration describes. Logs a warning per SHA-1 pin.
pub(crate) fn build_policies(
    config: &PolicyConfig,
    directory: Option<Arc<dyn DeviceDirectory>>,
) -> Result<CertificatePolicies, PolicyConfigError> {
    let mut policies = CertificatePolicies::none().trust_arr_header(config.trust_arr_header);
    if let Some(pins) = &config.thumbprints {
        let pins = TrustedThumbprints::parse(pins.iter().map(String::as_str))?;
        for pin in pins.legacy_sha1_pins() {
            tracing::warn!(
                thumbprint = %pin,
                "a trusted thumbprint is SHA-1, which identifies a certificate less firmly; pin its SHA-256 thumbprint instead"
            );
        }
        policies = policies.with_thumbprints(pins);
    }
    if let Some(chain) = &config.chain {
        let revocation = if chain.check_revocation {
            RevocationPolicy::STRICT
        } else {
            tracing::warn!("the chain policy does not check revocation");
            RevocationPolicy::NotChecked
        };
        let options = ChainOptions {
            clock_skew: chain.clock_skew,
            revocation,
            ..ChainOptions::default()
        };
        let policy =
            ChainPolicy::from_files(&chain.roots, &chain.intermediates, &chain.crls, options)
                .map_err(|source| PolicyConfigError::Trust {
                    policy: "chain",
                    source,
                })?;
        policies = policies.with_chain(Arc::new(policy));
    }
    if let Some(entra) = &config.entra_device {
        let directory = directory.ok_or(PolicyConfigError::NoDirectory)?;
        let chain = ChainPolicy::from_files(&entra.roots, &[], &[], entra_chain_options(config))
            .map_err(|source| PolicyConfigError::Trust {
                policy: "entra-device",
                source,
            })?;
        policies = policies.with_entra_device(EntraDevicePolicy::new(
            chain,
            directory,
            entra.requirements,
            entra.cache_ttl,
        ));
    }
    Ok(policies)
}

/// The entra-device policy's chain options: the configured clock-skew allowance, which
/// settings carry on the chain policy's configuration (the default when that policy is
/// off).
fn entra_chain_options(config: &PolicyConfig) -> ChainOptions {
    let defaults = ChainOptions::default();
    ChainOptions {
        clock_skew: config
            .entra_device
            .as_ref()
            .map_or(defaults.clock_skew, |entra| entra.clock_skew),
        // Entra publishes no CRL for device certificates: a device is revoked by
        // disabling or deleting it, which the directory lookup sees.
        revocation: RevocationPolicy::NotChecked,
        // Microsoft documents no profile for MS-Organization-Access certificates, and a
        // tenant cannot have them reissued: a missing key identifier must not lock out
        // every device. Nor is it known whether their keyUsage asserts digitalSignature.
        // The rest of keyturn's certificate profile applies.
        key_identifiers: KeyIdentifiers::NotChecked,
        leaf_key_usage: LeafKeyUsage::NotChecked,
        ..defaults
    }
}

/// How often the chain policy's CRL files are read again. A CA publishes a new CRL when
/// it revokes (and at least once per its next-update period, usually days); the files
/// are local, so a reread is cheap. Five minutes matches the entra-device directory
/// cache ([`crate::mtls::entra_device::DEFAULT_CACHE_TTL`]): on either policy a device
/// that is revoked or disabled stops reading secrets within five minutes.
pub const CRL_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Whether there are CRL files to refresh: a chain policy loaded from CRL files.
pub fn has_crls_to_refresh(policies: &CertificatePolicies) -> bool {
    policies
        .chain()
        .is_some_and(|chain| !chain.crls().sources().is_empty())
}

/// One scheduled refresh: reads the CRL files again and swaps them in. When a file is
/// missing, unreadable or malformed (a CA midway through publishing), the set in force
/// stays and the failure is logged; the next refresh tries again.
pub fn refresh_crls(policies: &CertificatePolicies) -> Option<Result<usize, TrustError>> {
    policies.chain().map(|chain| refresh_chain_crls(chain))
}

fn refresh_chain_crls(chain: &ChainPolicy) -> Result<usize, TrustError> {
    let result = chain.reload_crls();
    match &result {
        Ok(count) => tracing::debug!(crls = count, "certificate revocation lists refreshed"),
        Err(error) => tracing::warn!(
            %error,
            "cannot refresh the certificate revocation lists; the ones loaded before stay in force"
        ),
    }
    result
}

/// Refreshes the CRLs every `interval` until `stop` completes (start-up passes
/// [`CRL_REFRESH_INTERVAL`] and the shutdown signal). Completes at once when there are
/// no CRL files. The files are read on the blocking pool, so a large CRL never stalls
/// requests. The future holds the chain policy, not `policies`, so it can be spawned.
pub fn refresh_crls_every<S: Future<Output = ()>>(
    policies: &CertificatePolicies,
    interval: Duration,
    stop: S,
) -> impl Future<Output = ()> + use<S> {
    let chain = policies
        .chain()
        .filter(|_| has_crls_to_refresh(policies))
        .cloned();
    async move {
        let Some(chain) = chain else {
            return;
        };
        let refreshing = async {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; the CRLs were just loaded with the policies.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let chain = chain.clone();
                if tokio::task::spawn_blocking(move || refresh_chain_crls(&chain))
                    .await
                    .is_err()
                {
                    tracing::error!("the CRL refresh task failed; retrying at the next interval");
                }
            }
        };
        tokio::select! {
            () = refreshing => {},
            () = stop => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entra_device_chain_allows_the_configured_clock_skew() {
        // entra-device alone, without the chain policy: its own skew applies.
        let entra = EntraDeviceConfig {
            roots: PathBuf::from("device-roots.pem"),
            requirements: DeviceRequirements::default(),
            cache_ttl: Duration::from_secs(300),
            clock_skew: Duration::from_secs(17),
        };
        let config = PolicyConfig {
            entra_device: Some(entra),
            ..PolicyConfig::default()
        };
        let options = entra_chain_options(&config);
        assert_eq!(options.clock_skew, Duration::from_secs(17));
        assert_eq!(options.revocation, RevocationPolicy::NotChecked);
    }

    #[test]
    fn the_entra_device_chain_leaves_out_only_the_undocumented_profile_rules() {
        let options = entra_chain_options(&PolicyConfig::default());
        let defaults = ChainOptions::default();

        assert_eq!(options.key_identifiers, KeyIdentifiers::NotChecked);
        assert_eq!(options.leaf_key_usage, LeafKeyUsage::NotChecked);
        assert_eq!(defaults.key_identifiers, KeyIdentifiers::Required);
        assert_eq!(defaults.leaf_key_usage, LeafKeyUsage::SigningRequired);
        assert_eq!(options.purpose, defaults.purpose);
    }
}
