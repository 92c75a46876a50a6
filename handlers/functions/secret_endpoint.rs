//! `SecretEndpoint`: `GET /api/secrets/{name}` for devices authenticated by their client
//! certificate. Owns the request flow; the certificate policies are built in
//! `mtls::endpoint`, the HTTP answer to each [`Refusal`] is chosen in `host::answer`.
//!
//! In order: the source address's rate limit, before anything else happens (so a flood
//! from one address costs a counter, not a validation); where `X-ARR-ClientCert` is
//! trusted, nothing is served until the front end has been shown to demand client
//! certificates (`mtls::front_end`); the name is validated; every configured
//! certificate policy must accept the client (none configured: every request is
//! refused); the identity's rate limit; the access policy must grant the name, which
//! also picks the backend; the backend is read. A caller who may not read a name gets
//! the same 403 whether or not the secret exists; only a caller who may read it can
//! learn that it is missing (404). Every grant and every refusal is written to the audit
//! log with the identity, the name, the source address (an IPv6 address's /64), the step
//! that decided and a reason code; the caller sees only a stable code. Refusals are
//! folded: the first of a kind in a window is written before the answer, its repeats are
//! counted into one entry when the window closes (`audit::fold`), so a flood of refused
//! requests neither grows the log nor queues ahead of grants. keyturn's own TLS listener
//! reports the handshakes it refuses here too ([`refuse_handshake`]), audited alike.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;

use crate::access::rate_limit::{Limited, RateLimiter, RateLimits};
use crate::access::{AccessPolicy, AccessPolicyError, Decision};
use crate::audit::{Action, AuditError};
use crate::domain::function::Function;
use crate::domain::identity::Authenticated;
use crate::domain::names::ObjectName;
use crate::domain::secret::SecretValue;
use crate::functions::{Context, FunctionError, Services};
use crate::mtls::endpoint::{PolicyConfig, PolicyConfigError, build_policies};
use crate::mtls::front_end::FrontEndGate;
use crate::mtls::policies::{CertificatePolicies, CertificateRefusal, Presented, RefusalKind};
use crate::ports::audit::{Actor, AuditObject, AuditText, Outcome};
use crate::ports::directory::DeviceDirectory;
use crate::ports::source::SecretSource;

pub const NAME: Function = Function::SecretEndpoint;

/// The audit action of every entry this function writes.
pub(crate) const AUDIT_ACTION: Action = Action::SecretRead;

/// Why a request is refused, by category: what the caller may learn. The host maps each
/// to an HTTP status (`host::answer`); details stay in the logs and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The name is not a Key Vault object name.
    InvalidName,
    /// Authorization refused, or nobody is trusted at all. Identical whether or not the
    /// secret exists.
    Forbidden,
    CertificateRequired,
    CertificateRejected,
    /// The caller may read the name, and there is no such (live) secret.
    NotFound,
    /// Over a rate limit; try again after `retry_after` seconds.
    RateLimited {
        retry_after: u64,
    },
    /// A dependency failed; try again, after `retry_after` seconds when it said.
    Unavailable {
        retry_after: Option<u64>,
    },
    /// `X-ARR-ClientCert` is trusted, and the front end has not been shown to demand a
    /// certificate on this route: nothing is served until a check shows it does.
    FrontEndUnverified,
}

/// A secret to hand to an authorized caller. The value is written into the response body
/// at the HTTP edge and nowhere else.
#[derive(Debug)]
pub(crate) struct Delivered {
    pub name: ObjectName,
    pub value: SecretValue,
    pub version: Option<String>,
    pub content_type: Option<String>,
    /// RFC 3339.
    pub expires_on: Option<String>,
}

/// Either a refusal (audited here) or a failure of a port.
#[derive(Debug)]
pub(crate) enum EndpointError {
    Refused(Refusal),
    Failed(FunctionError),
}

impl From<FunctionError> for EndpointError {
    fn from(e: FunctionError) -> Self {
        Self::Failed(e)
    }
}

/// One request as the HTTP edge saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EndpointRequest<'a> {
    pub name: &'a str,
    pub presented: Presented<'a>,
    /// The client's address: the TLS peer, or the address App Service reported.
    pub source_address: Option<IpAddr>,
}

/// Everything the endpoint decides with. The default trusts nobody and refuses every
/// request, which is what an app without endpoint configuration serves.
#[derive(Debug)]
pub struct Endpoint {
    policies: CertificatePolicies,
    access: AccessPolicy,
    sources: BTreeMap<String, Arc<dyn SecretSource>>,
    per_identity: RateLimiter<Vec<u8>>,
    per_address: RateLimiter<IpAddr>,
    /// Present where `X-ARR-ClientCert` is trusted: closed, every request is refused.
    front_end: Option<Arc<FrontEndGate>>,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self::refuse_all()
    }
}

/// Why the endpoint's configuration cannot be used. Start-up stops on these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointConfigError {
    #[error("access policy: {0}")]
    Access(#[from] AccessPolicyError),
    #[error(transparent)]
    Policies(#[from] PolicyConfigError),
}

impl Endpoint {
    /// Trusts nobody.
    pub(crate) fn refuse_all() -> Self {
        Self {
            policies: CertificatePolicies::none(),
            access: AccessPolicy::default(),
            sources: BTreeMap::new(),
            per_identity: RateLimiter::per_minute(None),
            per_address: RateLimiter::per_minute(None),
            front_end: None,
        }
    }

    /// An endpoint over ready-made parts. Every grant must name one of `sources`.
    pub(crate) fn new(
        policies: CertificatePolicies,
        access: AccessPolicy,
        sources: BTreeMap<String, Arc<dyn SecretSource>>,
        limits: RateLimits,
    ) -> Result<Self, EndpointConfigError> {
        let names: Vec<&str> = sources.keys().map(String::as_str).collect();
        access.check_backends(&names)?;
        Ok(Self {
            policies,
            access,
            sources,
            per_identity: RateLimiter::per_minute(limits.per_identity),
            per_address: RateLimiter::per_minute(limits.per_address),
            front_end: None,
        })
    }

    /// This endpoint, serving only while `gate` is open.
    pub(crate) fn with_front_end_gate(mut self, gate: Arc<FrontEndGate>) -> Self {
        self.front_end = Some(gate);
        self
    }

    /// Builds the endpoint from its settings: reads trust material, parses pins, loads
    /// the access policy (`access_policy`: a path or inline JSON; `None` grants nothing)
    /// and checks it against `sources` (backend name to source, chosen by start-up).
    /// `directory` is needed only by the `entra-device` policy.
    pub fn from_config(
        config: &PolicyConfig,
        access_policy: Option<&str>,
        sources: BTreeMap<String, Arc<dyn SecretSource>>,
        directory: Option<Arc<dyn DeviceDirectory>>,
        limits: RateLimits,
    ) -> Result<Self, EndpointConfigError> {
        Self::new(
            build_policies(config, directory)?,
            access_policy
                .map(AccessPolicy::load)
                .transpose()?
                .unwrap_or_default(),
            sources,
            limits,
        )
    }

    pub fn policies(&self) -> &CertificatePolicies {
        &self.policies
    }
}

/// Records a handshake keyturn's own TLS listener refused (`host::tls`): a refusal under
/// the step `handshake` with the listener's reason code and the source (an IPv4 address,
/// or an IPv6 address's /64), folded with its repeats like every other refusal. Nothing
/// was authenticated and no name was asked for, so the entry names neither. The
/// listener's own limits on a source's connections came first.
pub(crate) async fn refuse_handshake(
    services: &Arc<Services>,
    source: IpAddr,
    reason: &'static str,
) -> Result<(), FunctionError> {
    let ctx = Context {
        function: NAME,
        invocation_id: uuid::Uuid::new_v4().to_string(),
        now: services.clock.now(),
        services: services.clone(),
    };
    let entry = Entry::refused(None, "handshake", reason).from(Some(address_key(source)));
    record(&ctx, entry, None).await
}

/// Serves one request.
pub(crate) async fn run(
    ctx: &Context,
    request: EndpointRequest<'_>,
) -> Result<Delivered, EndpointError> {
    let endpoint = &ctx.services.endpoint;
    let client = request.source_address.map(address_key);
    // The raw name is not audited unless it is valid: it may be anything.
    let valid_name = ObjectName::parse(request.name).ok();

    if let Some(address) = client
        && let Err(limited) = endpoint.per_address.check(address, ctx.now)
    {
        let entry = Entry::refused(valid_name.as_ref(), "rate-limit", "address_rate_limited");
        record(ctx, entry.from(client), None).await?;
        return Err(rate_limited(limited));
    }

    if let Some(reason) = endpoint.front_end.as_ref().and_then(|gate| gate.refusal()) {
        // Start-up and every failed check log the reason in full; each refusal is audited.
        tracing::warn!(reason, "request refused: the front end is not verified");
        let entry = Entry::refused(valid_name.as_ref(), "front-end", reason);
        record(ctx, entry.from(client), None).await?;
        return Err(EndpointError::Refused(Refusal::FrontEndUnverified));
    }

    let Some(name) = valid_name else {
        let entry = Entry::refused(None, "name", "invalid_name");
        record(ctx, entry.from(client), None).await?;
        return Err(EndpointError::Refused(Refusal::InvalidName));
    };

    if endpoint.policies.is_empty() {
        let entry = Entry::refused(
            Some(&name),
            "configuration",
            "no_certificate_policy_configured",
        );
        record(ctx, entry.from(client), None).await?;
        return Err(EndpointError::Refused(Refusal::Forbidden));
    }

    let who = match endpoint
        .policies
        .authenticate(request.presented, ctx.now)
        .await
    {
        Ok(who) => who,
        Err(refusal) => return Err(refuse_certificate(ctx, &name, client, refusal).await),
    };

    if let Err(limited) = endpoint
        .per_identity
        .check(who.identity.thumbprint().as_bytes().to_vec(), ctx.now)
    {
        let entry = Entry::refused(Some(&name), "rate-limit", "identity_rate_limited");
        record(ctx, entry.from(client), Some(&who)).await?;
        return Err(rate_limited(limited));
    }

    let (grant, grant_name, backend) = match endpoint.access.authorize(&who, &name) {
        Decision::Granted {
            grant,
            grant_name,
            backend,
        } => (grant, grant_name, backend),
        Decision::Denied => {
            tracing::info!(name = %name, thumbprint = %who.identity.thumbprint(), "no grant covers this caller and name");
            let entry = Entry::refused(Some(&name), "access", "no_grant");
            record(ctx, entry.from(client), Some(&who)).await?;
            return Err(EndpointError::Refused(Refusal::Forbidden));
        }
    };
    let grant_text = match grant_name {
        Some(n) => format!("grant={grant} ({n}); backend={backend}"),
        None => format!("grant={grant}; backend={backend}"),
    };

    let Some(source) = endpoint.sources.get(backend) else {
        // Unreachable by construction (`Endpoint::new` checks every grant's backend); kept
        // as a refusal rather than a panic.
        let entry = Entry::failed(&name, "access", "backend_not_configured", &grant_text);
        record(ctx, entry.from(client), Some(&who)).await?;
        return Err(EndpointError::Refused(Refusal::Unavailable {
            retry_after: None,
        }));
    };
    let secret = match source.fetch(&name, ctx.now).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            let entry = Entry::failed(&name, "source", "not_found", &grant_text);
            record(ctx, entry.from(client), Some(&who)).await?;
            return Err(EndpointError::Refused(Refusal::NotFound));
        }
        Err(error) => {
            tracing::error!(%error, backend, name = %name, "the secret source failed");
            let entry = Entry::failed(&name, "source", "source_failed", &grant_text);
            record(ctx, entry.from(client), Some(&who)).await?;
            return Err(EndpointError::Failed(FunctionError::Port(error)));
        }
    };

    // Audited before the value leaves: a read that cannot be recorded is not served.
    let mut entry = Entry::granted(&name, &grant_text).from(client);
    entry.version = secret.version.clone();
    record(ctx, entry, Some(&who)).await?;
    Ok(Delivered {
        name,
        value: secret.value,
        version: secret.version,
        content_type: secret.content_type,
        expires_on: secret
            .expires
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true)),
    })
}

/// The IPv6 prefix length one client is assumed to hold. An ISP or cloud hands a
/// subscriber at least a /64 (RFC 6177), so one client can pick from 2^64 addresses;
/// limiting each address separately would not limit it at all.
const IPV6_CLIENT_PREFIX_BITS: u32 = 64;

/// The key an address is rate-limited by: an IPv4 address itself (also when written as
/// IPv4-mapped IPv6), an IPv6 address's /64.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - IPV6_CLIENT_PREFIX_BITS);
            IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() & mask))
        }
    }
}

/// The longest `Retry-After` passed on from a backend. Graph and Key Vault ask for
/// seconds to a few minutes when they throttle; five minutes (the directory cache's
/// lifetime) bounds what a wrong or hostile header could make every device wait.
pub(crate) const MAX_RETRY_AFTER_SECONDS: u64 = 300;

/// Whole seconds for the `Retry-After` of a 503 a backend caused: rounded up, at least
/// one, at most [`MAX_RETRY_AFTER_SECONDS`].
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    let rounded = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded.clamp(1, MAX_RETRY_AFTER_SECONDS)
}

fn rate_limited(limited: Limited) -> EndpointError {
    EndpointError::Refused(Refusal::RateLimited {
        retry_after: limited.retry_after_seconds(),
    })
}

async fn refuse_certificate(
    ctx: &Context,
    name: &ObjectName,
    client: Option<IpAddr>,
    refusal: CertificateRefusal,
) -> EndpointError {
    tracing::warn!(
        name = %name,
        step = refusal.step,
        reason = refusal.reason,
        detail = %refusal.detail,
        thumbprint = refusal.thumbprint.map(|t| t.to_string()),
        "client certificate refused"
    );
    let mut entry = Entry::refused(Some(name), refusal.step, refusal.reason).from(client);
    entry.thumbprint = refusal.thumbprint.map(|t| t.to_string());
    let answer = match refusal.kind {
        RefusalKind::NoPolicy => Refusal::Forbidden,
        RefusalKind::CertificateRequired => Refusal::CertificateRequired,
        RefusalKind::CertificateRejected => Refusal::CertificateRejected,
        RefusalKind::Unavailable => {
            entry.outcome = Outcome::Failed;
            Refusal::Unavailable {
                retry_after: refusal.retry_after.map(retry_after_seconds),
            }
        }
    };
    match record(ctx, entry, None).await {
        Ok(()) => EndpointError::Refused(answer),
        Err(error) => EndpointError::Failed(error),
    }
}

/// One audit entry in the making.
struct Entry<'n> {
    name: Option<&'n ObjectName>,
    outcome: Outcome,
    step: &'static str,
    reason: &'static str,
    extra: Option<String>,
    thumbprint: Option<String>,
    version: Option<String>,
    /// The rate-limit key of the client's address: the address, or an IPv6 /64.
    source: Option<IpAddr>,
}

impl<'n> Entry<'n> {
    fn refused(name: Option<&'n ObjectName>, step: &'static str, reason: &'static str) -> Self {
        Self {
            name,
            outcome: Outcome::Denied,
            step,
            reason,
            extra: None,
            thumbprint: None,
            version: None,
            source: None,
        }
    }

    fn from(self, source: Option<IpAddr>) -> Self {
        Self { source, ..self }
    }

    fn failed(name: &'n ObjectName, step: &'static str, reason: &'static str, extra: &str) -> Self {
        Self {
            outcome: Outcome::Failed,
            extra: Some(extra.to_owned()),
            ..Self::refused(Some(name), step, reason)
        }
    }

    fn granted(name: &'n ObjectName, extra: &str) -> Self {
        Self {
            outcome: Outcome::Succeeded,
            extra: Some(extra.to_owned()),
            ..Self::refused(Some(name), "access", "granted")
        }
    }
}

/// Writes `entry`, with the authenticated identity as the actor when there is one.
async fn record(
    ctx: &Context,
    entry: Entry<'_>,
    who: Option<&Authenticated>,
) -> Result<(), FunctionError> {
    let scope = ctx.audit_scope()?;
    let mut reason = format!("policy={}; reason={}", entry.step, entry.reason);
    let scope = match who {
        Some(who) => {
            let by: Vec<&str> = who.policies.iter().map(|p| p.as_str()).collect();
            reason.push_str(&format!(
                "; authenticated-by={}; subject={}",
                by.join("+"),
                who.identity.subject()
            ));
            if let Some(device) = &who.device_id {
                reason.push_str(&format!("; device={device}"));
            }
            let actor = AuditText::parse(format!("sha256:{}", who.identity.thumbprint())).map_err(
                |source| AuditError::Text {
                    field: "actor",
                    source,
                },
            )?;
            scope.acting_as(Actor::Identity(actor))
        }
        None => scope,
    };
    if let Some(extra) = &entry.extra {
        reason.push_str("; ");
        reason.push_str(extra);
    }
    if let Some(source) = entry.source {
        reason.push_str(&format!("; source={}", source_text(source)));
    }
    let thumbprint = entry
        .thumbprint
        .or_else(|| who.map(|w| w.identity.thumbprint().to_string()));
    let object = AuditObject {
        secret_name: entry.name.and_then(|n| AuditText::parse(n.as_str()).ok()),
        secret_version: entry.version.and_then(|v| AuditText::parse(v).ok()),
        thumbprint: thumbprint.and_then(|t| AuditText::parse(t).ok()),
        ..AuditObject::default()
    };
    if entry.outcome == Outcome::Denied {
        scope
            .refuse(AUDIT_ACTION, object, &reason, entry.reason)
            .await?;
    } else {
        scope
            .record(AUDIT_ACTION, object, entry.outcome, Some(&reason))
            .await?;
    }
    Ok(())
}

/// How an entry names a source: an IPv4 address as itself, an IPv6 key as its /64.
fn source_text(source: IpAddr) -> String {
    match source {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/{IPV6_CLIENT_PREFIX_BITS}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a literal address")
    }

    #[test]
    fn a_backends_retry_after_is_rounded_up_and_capped() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(30)), 30);
        assert_eq!(
            retry_after_seconds(Duration::from_secs(86_400)),
            MAX_RETRY_AFTER_SECONDS
        );
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_share_a_rate_limit_key() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn ipv4_addresses_keep_their_own_rate_limit_key() {
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(address_key(ip("192.0.2.7")), address_key(ip("192.0.2.8")));
    }
}
