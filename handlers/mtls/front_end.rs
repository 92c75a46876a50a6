//! What keyturn's front end must be before `X-ARR-ClientCert` can be believed, decided
//! from the site's own configuration as Azure Resource Manager reports it
//! (`GET .../providers/Microsoft.Web/sites/{site}`): the header proves a handshake only
//! when the front end demanded one, that is `clientCertEnabled` is true,
//! `clientCertMode` is `Required` and no `clientCertExclusionPaths` entry covers the
//! secret route. The site is named by the platform's own variables
//! (`WEBSITE_OWNER_NAME`, `WEBSITE_RESOURCE_GROUP`, `WEBSITE_SITE_NAME`).
//!
//! [`FrontEndGate`] holds the latest decision: closed until a check passes, closed again
//! when one fails. [`watch`] rechecks on a schedule; start-up builds the site reader and
//! runs the first check, and the endpoint refuses every request while the gate is closed.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde::Deserialize;

use crate::ports::site::SiteConfiguration;

/// The Resource Manager API version of `Microsoft.Web/sites` read here.
pub(crate) const SITES_API_VERSION: &str = "2024-04-01";

/// The route whose requests must carry a demanded certificate.
pub(crate) const SECRET_ROUTE: &str = "/api/secrets/";

/// The site keyturn runs as, from the platform's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SiteRef {
    subscription: String,
    resource_group: String,
    site: String,
}

/// Why the platform's variables do not name a site.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SiteRefError {
    #[error("{0} is not set; the platform sets it on every App Service and Functions site")]
    Missing(&'static str),
    #[error("WEBSITE_OWNER_NAME is not {{subscriptionId}}+{{webspace}}")]
    OwnerName,
    #[error("{0} holds characters a resource name cannot")]
    Invalid(&'static str),
}

impl SiteRef {
    /// From `WEBSITE_OWNER_NAME` (`{subscriptionId}+{webspace}`),
    /// `WEBSITE_RESOURCE_GROUP` and `WEBSITE_SITE_NAME`.
    pub(crate) fn from_platform(
        owner_name: Option<&str>,
        resource_group: Option<&str>,
        site_name: Option<&str>,
    ) -> Result<Self, SiteRefError> {
        let owner = owner_name.ok_or(SiteRefError::Missing("WEBSITE_OWNER_NAME"))?;
        let resource_group =
            resource_group.ok_or(SiteRefError::Missing("WEBSITE_RESOURCE_GROUP"))?;
        let site = site_name.ok_or(SiteRefError::Missing("WEBSITE_SITE_NAME"))?;
        let subscription = owner
            .split_once('+')
            .map(|(subscription, _)| subscription)
            .filter(|s| uuid::Uuid::parse_str(s).is_ok())
            .ok_or(SiteRefError::OwnerName)?;
        // Resource group names are letters, digits, '-', '_', '.', '(' and ')'; site names
        // letters, digits and '-'. Anything else would change the request's path.
        let group_ok = !resource_group.is_empty()
            && resource_group
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.()".contains(c));
        if !group_ok {
            return Err(SiteRefError::Invalid("WEBSITE_RESOURCE_GROUP"));
        }
        if site.is_empty() || !site.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(SiteRefError::Invalid("WEBSITE_SITE_NAME"));
        }
        Ok(Self {
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            site: site.to_owned(),
        })
    }

    /// The site's Resource Manager resource id,
    /// `/subscriptions/{id}/resourceGroups/{group}/providers/Microsoft.Web/sites/{site}`.
    pub(crate) fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}",
            self.subscription, self.resource_group, self.site
        )
    }
}

/// The parts of a site's configuration that decide whether the header is believed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct FrontEnd {
    properties: FrontEndProperties,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FrontEndProperties {
    #[serde(default)]
    client_cert_enabled: Option<bool>,
    #[serde(default)]
    client_cert_mode: Option<String>,
    #[serde(default)]
    client_cert_exclusion_paths: Option<String>,
}

/// Why the front end cannot vouch for the header. Each has a stable reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FrontEndProblem {
    #[error("clientCertEnabled is not true: the front end does not ask for certificates")]
    CertificatesNotEnabled,
    #[error("clientCertMode is {mode:?}, not Required: a request may arrive without a handshake")]
    NotRequired { mode: Option<String> },
    #[error("clientCertExclusionPaths entry {path:?} covers the secret route")]
    Excluded { path: String },
}

impl FrontEndProblem {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::CertificatesNotEnabled => "client_cert_not_enabled",
            Self::NotRequired { .. } => "client_cert_not_required",
            Self::Excluded { .. } => "secret_route_excluded",
        }
    }
}

impl FrontEnd {
    /// Decodes a site resource as Resource Manager returns it.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Whether the front end demands a certificate for every request to `route`.
    pub(crate) fn vouches_for(&self, route: &str) -> Result<(), FrontEndProblem> {
        let p = &self.properties;
        if p.client_cert_enabled != Some(true) {
            return Err(FrontEndProblem::CertificatesNotEnabled);
        }
        if p.client_cert_mode.as_deref() != Some("Required") {
            return Err(FrontEndProblem::NotRequired {
                mode: p.client_cert_mode.clone(),
            });
        }
        // Exclusion paths are comma-separated path prefixes; ';' is split on too, so a
        // list written with the other separator can only refuse more. They are compared
        // without case. One covers the route when either is a prefix of the other: `/api`
        // excludes every secret, `/api/secrets/db` one of them.
        let route = route.to_ascii_lowercase();
        let excluded = p
            .client_cert_exclusion_paths
            .as_deref()
            .unwrap_or_default()
            .split([',', ';'])
            .map(str::trim)
            .filter(|path| !path.is_empty())
            .find(|path| {
                let path = path.to_ascii_lowercase();
                route.starts_with(&path) || path.starts_with(&route)
            });
        match excluded {
            Some(path) => Err(FrontEndProblem::Excluded {
                path: path.to_owned(),
            }),
            None => Ok(()),
        }
    }
}

/// The longest wait before a closed gate is checked again, whatever the interval: a
/// role assignment still propagating after a deployment, or a Resource Manager blip,
/// keeps the endpoint closed for a minute at most once it is resolved.
pub(crate) const CLOSED_RECHECK: Duration = Duration::from_secs(60);

/// Whether the endpoint may believe `X-ARR-ClientCert` now: open only while the latest
/// check of the front end passed.
#[derive(Debug)]
pub(crate) struct FrontEndGate {
    state: RwLock<Option<&'static str>>,
}

impl FrontEndGate {
    /// A gate closed for `reason` until a check opens it.
    pub(crate) fn closed(reason: &'static str) -> Self {
        Self {
            state: RwLock::new(Some(reason)),
        }
    }

    /// Why requests are refused now; `None` while the gate is open.
    pub(crate) fn refusal(&self) -> Option<&'static str> {
        *self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, refusal: Option<&'static str>) -> Option<&'static str> {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *state, refusal)
    }

    /// Reads the site, decides, and opens or closes the gate. Every failed check is
    /// logged with its reason; opening is logged once.
    pub(crate) async fn check(&self, site: &dyn SiteConfiguration) -> bool {
        let refusal = match site.read_site().await {
            Err(error) => {
                tracing::error!(
                    reason = "site_read_failed",
                    %error,
                    "the secret endpoint refuses every request: its front end's configuration cannot be read"
                );
                Some("site_read_failed")
            }
            Ok(body) => match FrontEnd::from_json(&body) {
                Err(error) => {
                    tracing::error!(
                        reason = "site_unreadable",
                        line = error.line(),
                        column = error.column(),
                        "the secret endpoint refuses every request: the site's configuration is not a site resource"
                    );
                    Some("site_unreadable")
                }
                Ok(front_end) => match front_end.vouches_for(SECRET_ROUTE) {
                    Ok(()) => None,
                    Err(problem) => {
                        tracing::error!(
                            reason = problem.reason(),
                            problem = %problem,
                            "the secret endpoint refuses every request: its front end does not demand client certificates for it"
                        );
                        Some(problem.reason())
                    }
                },
            },
        };
        let before = self.set(refusal);
        if refusal.is_none() && before.is_some() {
            tracing::info!(
                "the front end requires client certificates on the secret route: X-ARR-ClientCert is believed"
            );
        }
        refusal.is_none()
    }
}

/// Checks the front end again every `every` while the gate is open, and after at most
/// [`CLOSED_RECHECK`] while it is closed, until the gate is dropped. `open` is what the
/// first check (run by start-up) found.
pub(crate) async fn watch(
    gate: Weak<FrontEndGate>,
    site: Arc<dyn SiteConfiguration>,
    every: Duration,
    mut open: bool,
) {
    loop {
        let wait = if open {
            every
        } else {
            every.min(CLOSED_RECHECK)
        };
        tokio::time::sleep(wait).await;
        let Some(gate) = gate.upgrade() else {
            return;
        };
        open = gate.check(site.as_ref()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBSCRIPTION: &str = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345";

    fn site(enabled: bool, mode: &str, exclusions: Option<&str>) -> FrontEnd {
        let body = serde_json::json!({
            "id": format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/testrg123/providers/Microsoft.Web/sites/sitef6141"),
            "name": "sitef6141",
            "type": "Microsoft.Web/sites",
            "kind": "app",
            "location": "East US",
            "properties": {
                "clientCertEnabled": enabled,
                "clientCertMode": mode,
                "clientCertExclusionPaths": exclusions,
                "httpsOnly": true,
            }
        });
        FrontEnd::from_json(body.to_string().as_bytes()).expect("decodes")
    }

    #[test]
    fn required_certificates_with_no_exclusion_vouch_for_the_header() {
        assert_eq!(
            site(true, "Required", None).vouches_for(SECRET_ROUTE),
            Ok(())
        );
        assert_eq!(
            site(true, "Required", Some("/health,/api/status")).vouches_for(SECRET_ROUTE),
            Ok(())
        );
    }

    #[test]
    fn every_weaker_front_end_is_refused_with_its_reason() {
        let cases = [
            (site(false, "Required", None), "client_cert_not_enabled"),
            (site(true, "Optional", None), "client_cert_not_required"),
            (
                site(true, "OptionalInteractiveUser", None),
                "client_cert_not_required",
            ),
            (
                site(true, "Required", Some("/api/secrets")),
                "secret_route_excluded",
            ),
            (
                site(true, "Required", Some("/health, /API")),
                "secret_route_excluded",
            ),
            (
                site(true, "Required", Some("/api/secrets/db-password")),
                "secret_route_excluded",
            ),
        ];
        for (front_end, reason) in cases {
            assert_eq!(
                front_end.vouches_for(SECRET_ROUTE).unwrap_err().reason(),
                reason,
                "{front_end:?}"
            );
        }
    }

    #[test]
    fn a_site_without_the_properties_does_not_vouch() {
        let front_end = FrontEnd::from_json(br#"{"properties":{}}"#).expect("decodes");
        assert_eq!(
            front_end.vouches_for(SECRET_ROUTE).unwrap_err().reason(),
            "client_cert_not_enabled"
        );
        assert!(FrontEnd::from_json(b"{}").is_err());
    }

    #[test]
    fn the_site_is_named_by_the_platforms_variables() {
        let owner = format!("{SUBSCRIPTION}+rg-keyturn-EastUSwebspace");
        let site = SiteRef::from_platform(Some(&owner), Some("rg-keyturn"), Some("kt-endpoint"))
            .expect("valid");
        assert_eq!(
            site.resource_id(),
            format!(
                "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-keyturn/providers/Microsoft.Web/sites/kt-endpoint"
            )
        );
    }

    #[test]
    fn malformed_platform_variables_are_refused() {
        let owner = format!("{SUBSCRIPTION}+webspace");
        let cases = [
            (None, Some("rg"), Some("site")),
            (
                Some("not-a-subscription+webspace"),
                Some("rg"),
                Some("site"),
            ),
            (Some(SUBSCRIPTION), Some("rg"), Some("site")),
            (Some(owner.as_str()), Some("rg/../x"), Some("site")),
            (Some(owner.as_str()), Some("rg"), Some("site?x=1")),
            (Some(owner.as_str()), Some("rg"), None),
        ];
        for (owner, group, name) in cases {
            assert!(
                SiteRef::from_platform(owner, group, name).is_err(),
                "{owner:?} {group:?} {name:?}"
            );
        }
    }
}
