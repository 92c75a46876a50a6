//! The configured certificate policies as one decision: where the client certificate
//! comes from (the `X-ARR-ClientCert` header, trusted only behind App Service, or the
//! peer chain of keyturn's own TLS listener), and every configured policy accepting it.
//!
//! All configured policies must pass; with none configured every request is refused. A
//! refusal names the step that decided and a stable reason code for the audit log; the
//! caller sees only the category ([`RefusalKind`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;

use crate::domain::identity::{Authenticated, PolicyKind};
use crate::domain::thumbprint::Thumbprint;
use crate::mtls::certificate::ClientCertificate;
use crate::mtls::chain::{ChainPolicy, not_after_of};
use crate::mtls::entra_device::{EntraDevicePolicy, EntraDeviceRejection};
use crate::mtls::header::{HeaderError, parse_arr_client_cert};
use crate::mtls::thumbprints::TrustedThumbprints;
use crate::mtls::trust::CrlSet;
use crate::mtls::verdicts::{PresentedKey, Verdict, VerdictCache};
use crate::ports::FailureKind;

/// Where a request's client certificate came from.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// No certificate at all.
    Nothing,
    /// The raw `X-ARR-ClientCert` header value.
    ArrHeader(&'a str),
    /// The chain the client sent in keyturn's own TLS handshake, leaf first. The TLS
    /// layer has checked that the client holds the leaf's private key.
    PeerChain(&'a [CertificateDer<'static>]),
    /// Both a TLS peer chain and the header: a client trying to override what it proved.
    Both,
    /// More than one `X-ARR-ClientCert` header. App Service's front end sends exactly one
    /// (and strips any the client sent), so a second one is a client's, and no order
    /// between them can be trusted: the request is refused whatever they hold.
    RepeatedArrHeader,
}

/// What the caller is told, by category. Details stay in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No certificate policy is configured: the endpoint trusts nobody.
    NoPolicy,
    /// No client certificate was presented.
    CertificateRequired,
    /// A certificate was presented and refused.
    CertificateRejected,
    /// A policy could not decide because a dependency (the device directory) failed.
    Unavailable,
}

/// A refusal: which step decided, its stable reason code and a detail for the logs.
/// The detail never holds certificate bytes or anything secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRefusal {
    pub kind: RefusalKind,
    /// `header`, `tls`, `configuration` or a policy name.
    pub step: &'static str,
    pub reason: &'static str,
    pub detail: String,
    /// The presented leaf's SHA-256 thumbprint, when it parsed.
    pub thumbprint: Option<Thumbprint>,
    /// For [`RefusalKind::Unavailable`]: how long the failed dependency asked to be left
    /// alone (Graph's `Retry-After` when it throttles).
    pub retry_after: Option<std::time::Duration>,
}

/// The configured policies.
#[derive(Default)]
pub struct CertificatePolicies {
    trust_arr_header: bool,
    thumbprints: Option<TrustedThumbprints>,
    chain: Option<Arc<ChainPolicy>>,
    entra_device: Option<EntraDevicePolicy>,
    verdicts: VerdictCache,
}

impl std::fmt::Debug for CertificatePolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificatePolicies")
            .field("trust_arr_header", &self.trust_arr_header)
            .field("policies", &self.configured())
            .finish()
    }
}

impl CertificatePolicies {
    /// No policy: every request is refused.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether the `X-ARR-ClientCert` header is believed (keyturn runs behind App
    /// Service, which sets it and strips any the client sent).
    pub fn trust_arr_header(mut self, trust: bool) -> Self {
        self.trust_arr_header = trust;
        self
    }

    pub fn with_thumbprints(mut self, policy: TrustedThumbprints) -> Self {
        self.thumbprints = Some(policy);
        self
    }

    pub fn with_chain(mut self, policy: Arc<ChainPolicy>) -> Self {
        self.chain = Some(policy);
        self
    }

    pub(crate) fn with_entra_device(mut self, policy: EntraDevicePolicy) -> Self {
        self.entra_device = Some(policy);
        self
    }

    /// Whether the `X-ARR-ClientCert` header (and the front end's `X-Forwarded-For`)
    /// is believed.
    pub(crate) fn trusts_arr_header(&self) -> bool {
        self.trust_arr_header
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.thumbprints.is_none() && self.chain.is_none() && self.entra_device.is_none()
    }

    /// The configured policies' names, in evaluation order.
    pub fn configured(&self) -> Vec<PolicyKind> {
        let mut kinds = Vec::new();
        if self.thumbprints.is_some() {
            kinds.push(PolicyKind::TrustedThumbprints);
        }
        if self.chain.is_some() {
            kinds.push(PolicyKind::Chain);
        }
        if self.entra_device.is_some() {
            kinds.push(PolicyKind::EntraDevice);
        }
        kinds
    }

    /// The chain policy, for scheduled CRL refreshes.
    pub(crate) fn chain(&self) -> Option<&Arc<ChainPolicy>> {
        self.chain.as_ref()
    }

    /// Runs every configured policy on the presented certificate at `now`. Cheap local
    /// checks (thumbprints, chain) run before the directory lookup.
    pub async fn authenticate(
        &self,
        presented: Presented<'_>,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, CertificateRefusal> {
        if self.is_empty() {
            return Err(refusal(
                RefusalKind::NoPolicy,
                "configuration",
                "no_certificate_policy_configured",
                "no certificate policy is configured",
                None,
            ));
        }
        let crls = self.crls_in_force();
        let key = self.cache_key(presented);
        let cached = key.and_then(|key| self.verdicts.get(&key, now, crls.as_ref()));
        let verdict = match cached {
            Some(verdict) => verdict,
            None => {
                let (verdict, until) = self.check_locally(presented, now)?;
                let verdict = Arc::new(verdict);
                if let Some(key) = key {
                    self.verdicts
                        .insert(key, verdict.clone(), now, until, crls.clone());
                }
                verdict
            }
        };

        let mut policies = verdict.policies.clone();
        let mut device_id = None;
        if let (Some(entra), Some(certificate)) = (&self.entra_device, &verdict.device) {
            let thumbprint = Some(verdict.leaf.thumbprint());
            let device = entra
                .check_device(certificate, now)
                .await
                .map_err(|e| entra_refusal(&e, thumbprint))?;
            policies.push(PolicyKind::EntraDevice);
            device_id = Some(device);
        }
        Ok(Authenticated {
            identity: verdict.identity.clone(),
            device_id,
            policies,
        })
    }

    /// How many presented certificates have a verdict kept (see
    /// [`crate::mtls::verdicts`]).
    pub fn kept_verdicts(&self) -> usize {
        self.verdicts.len()
    }

    /// The chain policy's CRLs in force; verdicts reached under other CRLs miss.
    fn crls_in_force(&self) -> Option<Arc<CrlSet>> {
        self.chain.as_ref().map(|chain| chain.crls())
    }

    /// The verdict cache's key for what was presented, when it can be cached: only
    /// certificates that reach the policies (a trusted header, a TLS peer chain).
    fn cache_key(&self, presented: Presented<'_>) -> Option<PresentedKey> {
        match presented {
            Presented::ArrHeader(value) if self.trust_arr_header => {
                Some(PresentedKey::header(value))
            }
            Presented::PeerChain(chain) if !chain.is_empty() => Some(PresentedKey::peer_chain(
                chain.iter().map(|der| der.as_ref()),
            )),
            _ => None,
        }
    }

    /// Every check that depends on the presented certificate alone: parsing it, the
    /// pins, the chain and the device certificate's chain. Returns the verdict and the
    /// instant until which it holds (see [`crate::mtls::verdicts`]).
    fn check_locally(
        &self,
        presented: Presented<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Verdict, DateTime<Utc>), CertificateRefusal> {
        let (leaf, intermediates) = self.extract(presented)?;
        let thumbprint = Some(leaf.thumbprint());
        let rejected = |step, reason, detail: String| {
            refusal(
                RefusalKind::CertificateRejected,
                step,
                reason,
                detail,
                thumbprint,
            )
        };

        let mut policies = Vec::new();
        let mut identity = None;
        // Presented intermediates bound whatever path the policies built. One that does
        // not parse may have been ignored by path building, but nothing is assumed about
        // it: its stand-in instant keeps the verdict from being kept.
        let mut until = intermediates
            .iter()
            .map(|der| not_after_of(der.as_ref()))
            .fold(leaf.not_after(), DateTime::min);
        if let Some(pins) = &self.thumbprints {
            let accepted = pins.validate(&leaf).map_err(|e| {
                rejected(
                    PolicyKind::TrustedThumbprints.as_str(),
                    e.reason(),
                    e.to_string(),
                )
            })?;
            policies.push(PolicyKind::TrustedThumbprints);
            identity.get_or_insert(accepted);
        }
        if let Some(chain) = &self.chain {
            let accepted = chain
                .validate(&leaf, intermediates, now)
                .map_err(|e| rejected(PolicyKind::Chain.as_str(), e.reason(), e.to_string()))?;
            policies.push(PolicyKind::Chain);
            identity.get_or_insert(accepted);
            until = until.min(horizon(chain));
        }
        let mut device = None;
        if let Some(entra) = &self.entra_device {
            let certificate = entra
                .verify_certificate(&leaf, intermediates, now)
                .map_err(|e| entra_refusal(&e, thumbprint))?;
            identity.get_or_insert_with(|| leaf.clone().into_identity(PolicyKind::EntraDevice));
            device = Some(certificate);
            until = until.min(horizon(entra.chain()));
        }
        let identity = identity.expect("at least one policy is configured, checked above");
        Ok((
            Verdict {
                leaf,
                identity,
                policies,
                device,
            },
            until,
        ))
    }

    /// The leaf and the intermediates that came with it.
    fn extract<'p>(
        &self,
        presented: Presented<'p>,
    ) -> Result<(ClientCertificate, &'p [CertificateDer<'static>]), CertificateRefusal> {
        let no_thumbprint = None;
        match presented {
            Presented::Nothing => Err(refusal(
                RefusalKind::CertificateRequired,
                "tls",
                "certificate_required",
                "no client certificate was presented",
                no_thumbprint,
            )),
            Presented::Both => Err(refusal(
                RefusalKind::CertificateRejected,
                "header",
                "client_cert_header_with_tls_certificate",
                "an X-ARR-ClientCert header came with a TLS client certificate",
                no_thumbprint,
            )),
            Presented::RepeatedArrHeader => Err(refusal(
                RefusalKind::CertificateRejected,
                "header",
                HeaderError::Repeated.reason(),
                "the X-ARR-ClientCert header came more than once",
                no_thumbprint,
            )),
            Presented::ArrHeader(_) if !self.trust_arr_header => Err(refusal(
                RefusalKind::CertificateRejected,
                "header",
                "client_cert_header_not_trusted",
                "X-ARR-ClientCert is only trusted behind App Service (KEYTURN_TRUST_ARR_CLIENT_CERT)",
                no_thumbprint,
            )),
            Presented::ArrHeader(value) => parse_arr_client_cert(value)
                .map(|leaf| (leaf, &[][..]))
                .map_err(|e| {
                    refusal(
                        RefusalKind::CertificateRejected,
                        "header",
                        e.reason(),
                        e.to_string(),
                        no_thumbprint,
                    )
                }),
            Presented::PeerChain([]) => Err(refusal(
                RefusalKind::CertificateRequired,
                "tls",
                "certificate_required",
                "the TLS client sent no certificate",
                no_thumbprint,
            )),
            Presented::PeerChain([leaf, intermediates @ ..]) => {
                ClientCertificate::from_der(leaf.as_ref().to_vec())
                    .map(|leaf| (leaf, intermediates))
                    .map_err(|e| {
                        refusal(
                            RefusalKind::CertificateRejected,
                            "tls",
                            "malformed_certificate",
                            e.to_string(),
                            no_thumbprint,
                        )
                    })
            }
        }
    }
}

/// The instant until which `chain`'s own material (roots, configured intermediates,
/// CRLs) lets an acceptance stand.
fn horizon(chain: &ChainPolicy) -> DateTime<Utc> {
    chain.horizon().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The refusal for an entra-device rejection: the directory failing is "try again
/// later" (with its `Retry-After`), anything else a rejected certificate.
fn entra_refusal(
    rejection: &EntraDeviceRejection,
    thumbprint: Option<Thumbprint>,
) -> CertificateRefusal {
    let (kind, retry_after) = match rejection {
        EntraDeviceRejection::DirectoryUnavailable(error) => (
            RefusalKind::Unavailable,
            match error.kind {
                FailureKind::Transient { retry_after } => retry_after,
                _ => None,
            },
        ),
        _ => (RefusalKind::CertificateRejected, None),
    };
    CertificateRefusal {
        retry_after,
        ..refusal(
            kind,
            PolicyKind::EntraDevice.as_str(),
            rejection.reason(),
            rejection.to_string(),
            thumbprint,
        )
    }
}

fn refusal(
    kind: RefusalKind,
    step: &'static str,
    reason: &'static str,
    detail: impl Into<String>,
    thumbprint: Option<Thumbprint>,
) -> CertificateRefusal {
    CertificateRefusal {
        kind,
        step,
        reason,
        detail: detail.into(),
        thumbprint,
        retry_after: None,
    }
}
