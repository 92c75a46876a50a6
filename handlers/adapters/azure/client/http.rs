//! Plumbing shared by every Azure adapter: the azure_core pipeline they send through
//! (retries, optional bearer token, injectable transport), and the one mapping from an
//! HTTP answer or transport failure to the port vocabulary ([`PortError`]).

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{
    HeaderName, Headers, RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS,
};
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions, Context, Pipeline, PipelineSendOptions, RawResponse, Request, RetryOptions,
    StatusCode,
};
use azure_core::time::OffsetDateTime;
use serde::Deserialize;

use crate::ports::{FailureKind, PortError};

/// Retries inside one call, on top of which the Functions host redelivers failed
/// invocations. Three retries with backoff from 500 ms ride out a throttling burst or a
/// gateway blip (Azure's retry guidance for storage and Graph); more would only eat into
/// the invocation's time budget, which the host's redelivery spends better.
pub(crate) const MAX_RETRIES: u32 = 3;

/// First backoff delay; doubled on each retry up to [`MAX_RETRY_DELAY`].
pub(crate) const INITIAL_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Longest single backoff. Also caps how long a `Retry-After` is honoured inside a call:
/// beyond this the failure is reported as transient with its `retry_after`, and the
/// caller schedules the retry instead of holding the invocation open.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Longest wait a server's `Retry-After` is taken at. Azure's throttling answers ask for
/// seconds to minutes; an hour is well past any documented window, and a larger value
/// (or a malformed one such as a timestamp sent as delta-seconds) would have a caller
/// wait for centuries or overflow its clock arithmetic.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Longest wait for one try's answer. azure_core's transport has no timeout of its own, so
/// an endpoint that accepts the connection and never answers (a hung identity endpoint, a
/// stalled gateway) would hold the call, and the invocation, until the host kills it. A
/// try that outlives this is a transport failure: retried like one, then handed to the
/// caller as transient. Longer than the 60 s a service is asked to answer within (Service
/// Bus's `timeout`), so a service's own timeout answers first; shorter than the 100 s
/// Azure's SDKs give a try.
pub const MAX_TRY_DURATION: Duration = Duration::from_secs(90);

/// Longest time spent retrying one call: a fraction of the Functions default five
/// minute timeout, so a failing call still leaves time to record the failure.
pub(crate) const MAX_RETRY_ELAPSED: Duration = Duration::from_secs(60);

/// Longest service error code kept. Azure codes are short identifiers
/// (`EntityAlreadyExists`, `CredentialTypeNotAllowedAsPerAppPolicy`); anything longer is
/// not a code, so it is dropped rather than copied.
pub(crate) const MAX_SERVICE_CODE_LEN: usize = 128;

/// The default client options of keyturn's Azure clients: [`BoundedRetry`] in place of
/// azure_core's retry policy, and azure_core's default transport. Every pipeline keyturn
/// builds (its own clients, the Key Vault crates' clients, the managed identity
/// credential's) takes these, so no `Retry-After` parks a call beyond
/// [`MAX_RETRY_DELAY`].
pub fn default_client_options() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        per_call_policies: vec![Arc::new(BoundedRetry::default())],
        ..ClientOptions::default()
    }
}

/// `options` without any retry, for requests that must be sent once (Graph's
/// addPassword): azure_core's retry is switched off, and [`SendOnce`] goes first among the
/// per-call policies, so every [`BoundedRetry`] after it makes a single try. The retry is
/// told by the type of a value in the request's context, not by looking for it among the
/// policies, which azure_core keeps as opaque `dyn Policy`.
pub(crate) fn without_retries(options: &ClientOptions) -> ClientOptions {
    let mut per_call: Vec<Arc<dyn Policy>> = vec![Arc::new(SendOnce)];
    per_call.extend(options.per_call_policies.iter().cloned());
    ClientOptions {
        retry: RetryOptions::none(),
        per_call_policies: per_call,
        ..options.clone()
    }
}

/// A per-call policy that marks the request as one to send once: it puts itself in the
/// context, where [`BoundedRetry`] finds it by its type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendOnce;

#[async_trait::async_trait]
impl Policy for SendOnce {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        let ctx = ctx.clone().with_value(SendOnce);
        next[0].send(&ctx, request, &next[1..]).await
    }
}

/// keyturn's retry policy. azure_core's own sleeps `max(Retry-After, backoff)` whatever the
/// server asks, so one `Retry-After: 3600` from Table storage would park the audit writer,
/// and every call behind it, for an hour. This one retries a transport failure or a 408,
/// 429, 500, 502, 503 or 504 up to [`MAX_RETRIES`] times within [`MAX_RETRY_ELAPSED`],
/// backing off from [`INITIAL_RETRY_DELAY`] and honouring a `Retry-After` up to
/// [`MAX_RETRY_DELAY`]; a server that asks for longer gets its answer handed straight back,
/// and the caller sees a transient failure carrying the delay ([`failure_from_status`]) and
/// schedules the retry itself.
#[derive(Debug, Clone)]
pub struct BoundedRetry {
    try_timeout: Duration,
    initial_delay: Duration,
    max_retries: u32,
    max_elapsed: Duration,
    max_delay: Duration,
}

impl Default for BoundedRetry {
    fn default() -> Self {
        Self {
            try_timeout: MAX_TRY_DURATION,
            initial_delay: INITIAL_RETRY_DELAY,
            max_retries: MAX_RETRIES,
            max_elapsed: MAX_RETRY_ELAPSED,
            max_delay: MAX_RETRY_DELAY,
        }
    }
}

impl BoundedRetry {
    /// The backoff before retry `retry` (1-based): the initial delay doubled each time, with
    /// up to 255 ms of jitter, at most `max_delay`.
    fn backoff(&self, retry: u32) -> Duration {
        let doubled = self
            .initial_delay
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)));
        let jitter = Duration::from_millis(u64::from(rand::random::<u8>()));
        doubled.saturating_add(jitter).min(self.max_delay)
    }
}

/// The statuses a retry may cure (azure_core's default set).
fn is_retryable(status: StatusCode) -> bool {
    matches!(u16::from(status), 408 | 429 | 500 | 502 | 503 | 504)
}

#[async_trait::async_trait]
impl Policy for BoundedRetry {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        let started = std::time::Instant::now();
        let max_retries = if ctx.value::<SendOnce>().is_some() {
            0
        } else {
            self.max_retries
        };
        let mut retry = 0u32;
        loop {
            if retry > 0 {
                request.body_mut().reset().await?;
            }
            let result =
                tokio::time::timeout(self.try_timeout, next[0].send(ctx, request, &next[1..]))
                    .await
                    .unwrap_or_else(|_| {
                        Err(azure_core::Error::with_message(
                            ErrorKind::Io,
                            format!("no answer within {} s", self.try_timeout.as_secs_f32()),
                        ))
                    });
            let asked = match &result {
                Ok(response) if is_retryable(response.status()) => {
                    match u16::from(response.status()) {
                        429 | 503 => requested_delay(response.headers(), OffsetDateTime::now_utc()),
                        _ => None,
                    }
                }
                Ok(_) => return result,
                Err(error) if matches!(error.kind(), ErrorKind::Io | ErrorKind::Connection) => None,
                Err(_) => return result,
            };
            // Beyond the bound the retry is the caller's: hand the answer back at once.
            if asked.is_some_and(|asked| asked > self.max_delay) {
                return result;
            }
            retry += 1;
            let wait = asked.unwrap_or_default().max(self.backoff(retry));
            if retry > max_retries || started.elapsed() + wait > self.max_elapsed {
                return result;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// How a client authenticates its requests.
#[derive(Debug, Clone)]
pub(crate) enum PipelineAuth {
    /// No authorization policy (the client signs requests itself, or needs none).
    None,
    /// An Entra bearer token for `scope`, added by azure_core's bearer policy (which
    /// refuses to send a token over plain http).
    Bearer {
        credential: Arc<dyn TokenCredential>,
        scope: String,
    },
    /// A policy of the client's own, for example a shared key signature.
    Policy(Arc<dyn Policy>),
}

/// Builds the pipeline of an Azure client. `options` default to
/// [`default_client_options`]; a caller's options (a test transport, other retries) are
/// used as given. Authorization runs once per try, so a retried request gets a fresh
/// token or signature.
pub(crate) fn pipeline(options: Option<ClientOptions>, auth: PipelineAuth) -> Pipeline {
    let options = options.unwrap_or_else(default_client_options);
    let per_try: Vec<Arc<dyn Policy>> = match auth {
        PipelineAuth::None => Vec::new(),
        PipelineAuth::Bearer { credential, scope } => {
            vec![Arc::new(BearerTokenAuthorizationPolicy::new(
                credential,
                [scope],
            ))]
        }
        PipelineAuth::Policy(policy) => vec![policy],
    };
    Pipeline::new(
        option_env!("CARGO_PKG_NAME"),
        option_env!("CARGO_PKG_VERSION"),
        options,
        Vec::new(),
        per_try,
        None,
    )
}

/// What the caller was doing, for the error: never a secret, never a backend message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailureContext<'a> {
    /// What was being done, e.g. "inserting audit entry 12 into table audit".
    pub operation: &'a str,
    /// The role or permission a 401/403 means is missing, e.g. "Storage Table Data
    /// Contributor on account kt".
    pub missing_permission: &'a str,
    /// Service error codes that mean "refused by policy" for this operation (for Graph,
    /// app management policy codes); a 400 or 403 carrying one becomes
    /// [`FailureKind::PolicyViolation`].
    pub policy_codes: &'a [&'a str],
}

/// A service's machine-readable error code (`x-ms-error-code`, or `error.code` /
/// `odata.error.code` in a JSON body). Only identifier-like codes are kept, so a code
/// can go into an error context without carrying a backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceErrorCode(String);

impl ServiceErrorCode {
    /// Accepts `[A-Za-z0-9_.-]{1,128}`; anything else is not a code.
    pub(crate) fn parse(code: &str) -> Option<Self> {
        let valid = !code.is_empty()
            && code.len() <= MAX_SERVICE_CODE_LEN
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        valid.then(|| Self(code.to_owned()))
    }

    /// The code from the `x-ms-error-code` header, else from the body's JSON
    /// (`{"error":{"code":..}}` as Graph and Key Vault send, or `{"odata.error":{"code":..}}`
    /// as Table storage does).
    pub(crate) fn from_response(headers: &Headers, body: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Envelope {
            error: Option<Inner>,
            #[serde(rename = "odata.error")]
            odata_error: Option<Inner>,
        }
        #[derive(Deserialize)]
        struct Inner {
            code: Option<String>,
        }
        if let Some(code) = headers
            .get_optional_str(&HeaderName::from_static("x-ms-error-code"))
            .and_then(Self::parse)
        {
            return Some(code);
        }
        let envelope: Envelope = serde_json::from_slice(body).ok()?;
        envelope
            .error
            .or(envelope.odata_error)
            .and_then(|inner| inner.code)
            .and_then(|code| Self::parse(&code))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The one mapping from an unsuccessful HTTP answer to a [`PortError`]:
/// 401/403 → permission denied (naming what is missing), 404 → not found, 409/412 →
/// conflict, 429/503 → transient with the server's retry delay, other 5xx and 408 →
/// transient, other 4xx → invalid. A 400/403 whose service code is one of
/// `context.policy_codes` is a policy violation. `now` resolves an HTTP-date
/// `Retry-After`.
pub(crate) fn failure_from_status(
    status: StatusCode,
    headers: &Headers,
    code: Option<&ServiceErrorCode>,
    now: OffsetDateTime,
    context: &FailureContext<'_>,
) -> PortError {
    let numeric = u16::from(status);
    let policy_code = code.filter(|code| {
        matches!(numeric, 400 | 403) && context.policy_codes.contains(&code.as_str())
    });
    let kind = match (numeric, policy_code) {
        (_, Some(code)) => FailureKind::PolicyViolation {
            code: code.as_str().to_owned(),
        },
        (401 | 403, None) => FailureKind::PermissionDenied {
            missing: context.missing_permission.to_owned(),
        },
        (404, None) => FailureKind::NotFound,
        (409 | 412, None) => FailureKind::Conflict,
        (429 | 503, None) => FailureKind::Transient {
            retry_after: retry_after(headers, now),
        },
        (408 | 500..=599, None) => FailureKind::Transient { retry_after: None },
        _ => FailureKind::Invalid,
    };
    let message = match code {
        Some(code) => format!("{}: HTTP {numeric} ({})", context.operation, code.as_str()),
        None => format!("{}: HTTP {numeric}", context.operation),
    };
    PortError::new(kind, message)
}

/// Sends `request` through `pipeline` and hands back whatever HTTP answer comes back:
/// azure_core's own status check is skipped so that the caller reads the status, error
/// body and `Retry-After` itself (through [`failure_from_status`]). A failure with no
/// answer is mapped by [`failure_from_transport`].
pub(crate) async fn send(
    pipeline: &Pipeline,
    request: &mut Request,
    context: &FailureContext<'_>,
) -> Result<RawResponse, PortError> {
    let options = PipelineSendOptions {
        skip_checks: true,
        ..PipelineSendOptions::default()
    };
    pipeline
        .send(&Context::new(), request, Some(options))
        .await
        .map_err(|error| failure_from_transport(&error, context))
}

/// Maps a failure that produced no HTTP answer (connection refused, reset, timeout,
/// token acquisition) to a [`PortError`]. azure_core's message is not copied: it can
/// quote a URL with a SAS token or a credential's diagnostic.
pub(crate) fn failure_from_transport(
    error: &azure_core::Error,
    context: &FailureContext<'_>,
) -> PortError {
    match error.kind() {
        ErrorKind::HttpResponse { status, .. } => {
            // Only reached when a caller let azure_core check the status itself.
            let numeric = u16::from(*status);
            let kind = match numeric {
                401 | 403 => FailureKind::PermissionDenied {
                    missing: context.missing_permission.to_owned(),
                },
                404 => FailureKind::NotFound,
                409 | 412 => FailureKind::Conflict,
                408 | 429 | 500..=599 => FailureKind::Transient { retry_after: None },
                _ => FailureKind::Invalid,
            };
            PortError::new(kind, format!("{}: HTTP {numeric}", context.operation))
        }
        ErrorKind::Connection | ErrorKind::Io => PortError::transient(format!(
            "{}: the service could not be reached",
            context.operation
        )),
        ErrorKind::Credential => failure_from_credential(error, context),
        ErrorKind::DataConversion => PortError::invalid(format!(
            "{}: the request or answer could not be encoded",
            context.operation
        )),
        _ => PortError::invalid(format!(
            "{}: the request could not be sent",
            context.operation
        )),
    }
}

/// Maps a failure to obtain a token. azure_identity wraps whatever went wrong in
/// `ErrorKind::Credential`; the cause is found in its source chain. An identity endpoint
/// that answers 408, 429 or 5xx, or cannot be reached, is transient (App Service and IMDS
/// restart, throttle and time out like any service); a 400 is App Service's and IMDS's
/// answer for an identity not assigned to this resource, and that, like any other refusal
/// or a credential that could not even ask (no sign-in, bad configuration), is permanent.
fn failure_from_credential(error: &azure_core::Error, context: &FailureContext<'_>) -> PortError {
    let could_not = format!("{}: could not obtain a token", context.operation);
    let permission = |missing: String| {
        PortError::new(FailureKind::PermissionDenied { missing }, could_not.clone())
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(inner) = current.downcast_ref::<azure_core::Error>() {
            match inner.kind() {
                ErrorKind::HttpResponse {
                    status,
                    raw_response,
                    ..
                } => {
                    let numeric = u16::from(*status);
                    return match numeric {
                        408 | 429 | 500..=599 => PortError::new(
                            FailureKind::Transient {
                                retry_after: raw_response.as_ref().and_then(|raw| {
                                    retry_after(raw.headers(), OffsetDateTime::now_utc())
                                }),
                            },
                            format!(
                                "{}: the identity endpoint answered HTTP {numeric}",
                                context.operation
                            ),
                        ),
                        400 => PortError::new(
                            FailureKind::PermissionDenied {
                                missing: format!(
                                    "a managed identity assigned to this resource ({})",
                                    context.missing_permission
                                ),
                            },
                            format!(
                                "{}: the identity endpoint answered HTTP 400 (the identity is not assigned to this resource)",
                                context.operation
                            ),
                        ),
                        _ => permission(format!(
                            "a token from the configured credential ({}); the identity endpoint answered HTTP {numeric}",
                            context.missing_permission
                        )),
                    };
                }
                ErrorKind::Io | ErrorKind::Connection => {
                    return PortError::transient(format!(
                        "{}: the identity endpoint could not be reached",
                        context.operation
                    ));
                }
                _ => {}
            }
        }
        cause = current.source();
    }
    permission(format!(
        "a token from the configured credential ({})",
        context.missing_permission
    ))
}

/// The delay a 429/503 asks for: `x-ms-retry-after-ms` or `retry-after-ms`
/// (milliseconds), else `Retry-After` as delta-seconds or an HTTP-date (relative to
/// `now`; a date in the past means "now"), at most [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &Headers, now: OffsetDateTime) -> Option<Duration> {
    requested_delay(headers, now).map(|wait| wait.min(MAX_RETRY_AFTER))
}

fn requested_delay(headers: &Headers, now: OffsetDateTime) -> Option<Duration> {
    for name in [X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS] {
        if let Some(millis) = headers
            .get_optional_str(&name)
            .and_then(|value| value.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(millis));
        }
    }
    let value = headers.get_optional_str(&RETRY_AFTER)?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = azure_core::time::parse_rfc7231(value).ok()?;
    let wait = at - now;
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: FailureContext<'static> = FailureContext {
        operation: "inserting an entity",
        missing_permission: "Storage Table Data Contributor on account kt",
        policy_codes: &["CredentialTypeNotAllowedAsPerAppPolicy"],
    };

    /// Response headers as name/value pairs, for table-driven cases.
    type Pairs = &'static [(&'static str, &'static str)];

    fn now() -> OffsetDateTime {
        azure_core::time::parse_rfc7231("Sat, 01 Mar 2025 12:00:00 GMT").expect("valid date")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> Headers {
        let mut headers = Headers::new();
        for (name, value) in pairs {
            headers.insert(*name, *value);
        }
        headers
    }

    #[test]
    fn statuses_map_to_the_port_vocabulary() {
        let permission = || FailureKind::PermissionDenied {
            missing: CONTEXT.missing_permission.to_owned(),
        };
        let cases = [
            (401, permission()),
            (403, permission()),
            (404, FailureKind::NotFound),
            (409, FailureKind::Conflict),
            (412, FailureKind::Conflict),
            (429, FailureKind::Transient { retry_after: None }),
            (503, FailureKind::Transient { retry_after: None }),
            (500, FailureKind::Transient { retry_after: None }),
            (502, FailureKind::Transient { retry_after: None }),
            (504, FailureKind::Transient { retry_after: None }),
            (408, FailureKind::Transient { retry_after: None }),
            (400, FailureKind::Invalid),
            (405, FailureKind::Invalid),
            (413, FailureKind::Invalid),
        ];
        for (status, expected) in cases {
            let error = failure_from_status(
                StatusCode::from(status),
                &Headers::new(),
                None,
                now(),
                &CONTEXT,
            );
            assert_eq!(error.kind, expected, "status {status}");
            assert_eq!(error.context, format!("inserting an entity: HTTP {status}"));
        }
    }

    #[test]
    fn throttling_carries_the_servers_retry_delay() {
        let cases: [(Pairs, Option<Duration>); 7] = [
            (&[("retry-after", "7")], Some(Duration::from_secs(7))),
            (
                &[("retry-after", "Sat, 01 Mar 2025 12:00:30 GMT")],
                Some(Duration::from_secs(30)),
            ),
            (
                &[("retry-after", "Sat, 01 Mar 2025 11:59:00 GMT")],
                Some(Duration::ZERO),
            ),
            (
                &[("x-ms-retry-after-ms", "1500")],
                Some(Duration::from_millis(1500)),
            ),
            (
                &[("retry-after-ms", "250"), ("retry-after", "9")],
                Some(Duration::from_millis(250)),
            ),
            (&[("retry-after", "soon")], None),
            (&[], None),
        ];
        for status in [429, 503] {
            for (pairs, expected) in &cases {
                let error = failure_from_status(
                    StatusCode::from(status),
                    &headers(pairs),
                    None,
                    now(),
                    &CONTEXT,
                );
                assert_eq!(
                    error.kind,
                    FailureKind::Transient {
                        retry_after: *expected
                    },
                    "status {status}, headers {pairs:?}"
                );
            }
        }
    }

    #[test]
    fn an_enormous_retry_delay_is_capped() {
        for pairs in [
            &[("retry-after", "9999999999999")][..],
            &[("x-ms-retry-after-ms", "18446744073709551615")][..],
            &[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")][..],
        ] {
            assert_eq!(
                retry_after(&headers(pairs), now()),
                Some(MAX_RETRY_AFTER),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn a_listed_policy_code_on_400_or_403_is_a_policy_violation() {
        let code = ServiceErrorCode::parse("CredentialTypeNotAllowedAsPerAppPolicy");
        for status in [400, 403] {
            let error = failure_from_status(
                StatusCode::from(status),
                &Headers::new(),
                code.as_ref(),
                now(),
                &CONTEXT,
            );
            assert_eq!(
                error.kind,
                FailureKind::PolicyViolation {
                    code: "CredentialTypeNotAllowedAsPerAppPolicy".into()
                }
            );
        }
        let other = ServiceErrorCode::parse("Request_BadRequest");
        let error = failure_from_status(
            StatusCode::BadRequest,
            &Headers::new(),
            other.as_ref(),
            now(),
            &CONTEXT,
        );
        assert_eq!(error.kind, FailureKind::Invalid);
        assert_eq!(
            error.context,
            "inserting an entity: HTTP 400 (Request_BadRequest)"
        );
    }

    #[test]
    fn service_codes_come_from_header_or_body_and_never_carry_messages() {
        let cases: [(Pairs, &str, Option<&str>); 6] = [
            (
                &[("x-ms-error-code", "EntityAlreadyExists")],
                "",
                Some("EntityAlreadyExists"),
            ),
            (
                &[],
                r#"{"error":{"code":"Forbidden","message":"value hunter2 refused"}}"#,
                Some("Forbidden"),
            ),
            (
                &[],
                r#"{"odata.error":{"code":"TableNotFound","message":{"value":"x"}}}"#,
                Some("TableNotFound"),
            ),
            (&[], r#"{"error":{"code":"not a code: hunter2"}}"#, None),
            (&[], "<html>oops</html>", None),
            (
                &[("x-ms-error-code", "bad code with spaces")],
                r#"{"error":{"code":"Fallback"}}"#,
                Some("Fallback"),
            ),
        ];
        for (pairs, body, expected) in cases {
            let code = ServiceErrorCode::from_response(&headers(pairs), body.as_bytes());
            assert_eq!(
                code.as_ref().map(ServiceErrorCode::as_str),
                expected,
                "{pairs:?} {body}"
            );
        }
        assert_eq!(
            ServiceErrorCode::parse(&"a".repeat(MAX_SERVICE_CODE_LEN + 1)),
            None
        );
    }

    #[test]
    fn transport_failures_are_transient_and_keep_no_backend_text() {
        let cases = [
            (ErrorKind::Connection, true),
            (ErrorKind::Io, true),
            (ErrorKind::DataConversion, false),
            (ErrorKind::Other, false),
        ];
        for (kind, transient) in cases {
            let error = azure_core::Error::with_message(kind.clone(), "secret=hunter2 in a url");
            let mapped = failure_from_transport(&error, &CONTEXT);
            assert_eq!(mapped.is_transient(), transient, "{kind:?}");
            assert!(!mapped.context.contains("hunter2"));
        }
        let credential = azure_core::Error::with_message(ErrorKind::Credential, "token hunter2");
        let mapped = failure_from_transport(&credential, &CONTEXT);
        assert!(matches!(mapped.kind, FailureKind::PermissionDenied { .. }));
        assert!(!mapped.context.contains("hunter2"));
    }

    /// A token failure as azure_identity's managed identity credential reports it: the
    /// identity endpoint's answer (or transport failure) wrapped in `ErrorKind::Credential`,
    /// and that wrapped again by the bearer policy.
    fn identity_failure(inner: azure_core::Error) -> azure_core::Error {
        let credential = azure_core::Error::with_error(
            ErrorKind::Credential,
            inner,
            "ManagedIdentityCredential authentication failed. hunter2",
        );
        credential.with_context("token acquisition failed")
    }

    fn endpoint_answer(status: u16) -> azure_core::Error {
        azure_core::Error::new(
            ErrorKind::HttpResponse {
                status: StatusCode::from(status),
                error_code: None,
                raw_response: None,
            },
            "The request failed: hunter2",
        )
    }

    #[test]
    fn an_identity_endpoint_that_fails_or_times_out_is_transient() {
        for status in [408, 429, 500, 502, 503, 504] {
            let mapped =
                failure_from_transport(&identity_failure(endpoint_answer(status)), &CONTEXT);
            assert!(mapped.is_transient(), "{status}: {mapped:?}");
            assert!(
                mapped.context.contains(&format!("HTTP {status}")),
                "{mapped:?}"
            );
            assert!(!mapped.context.contains("hunter2"));
        }
        for kind in [ErrorKind::Io, ErrorKind::Connection] {
            let unreachable = azure_core::Error::with_message(kind.clone(), "reset hunter2");
            let mapped = failure_from_transport(&identity_failure(unreachable), &CONTEXT);
            assert!(mapped.is_transient(), "{kind:?}: {mapped:?}");
            assert!(!mapped.context.contains("hunter2"));
        }
    }

    #[test]
    fn an_identity_not_assigned_is_permanent_and_says_so() {
        let mapped = failure_from_transport(&identity_failure(endpoint_answer(400)), &CONTEXT);
        let FailureKind::PermissionDenied { missing } = &mapped.kind else {
            panic!("a permanent refusal: {mapped:?}");
        };
        assert!(missing.contains("managed identity assigned"), "{missing}");
        assert!(mapped.context.contains("not assigned"), "{mapped:?}");
        assert!(!mapped.context.contains("hunter2"));
        for status in [401, 403, 404] {
            let mapped =
                failure_from_transport(&identity_failure(endpoint_answer(status)), &CONTEXT);
            assert!(!mapped.is_transient(), "{status}: {mapped:?}");
        }
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_bound_is_handed_back_at_once() {
        use keyturn_testkit::transport::{Answer, CannedTransport};

        let canned = CannedTransport::always(
            Answer::new(StatusCode::TooManyRequests, "").header("retry-after", "86400"),
        );
        let options = ClientOptions {
            transport: canned.options().transport,
            ..default_client_options()
        };
        let pipeline = pipeline(Some(options), PipelineAuth::None);
        let mut request = Request::new(
            azure_core::http::Url::parse("https://kt.table.core.windows.net/audit").expect("url"),
            azure_core::http::Method::Get,
        );
        let started = std::time::Instant::now();
        let response = send(&pipeline, &mut request, &CONTEXT)
            .await
            .expect("answered");
        assert!(
            started.elapsed() < MAX_RETRY_DELAY,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(canned.seen().len(), 1, "not retried inside the call");
        let error = failure_from_status(
            response.status(),
            response.headers(),
            None,
            OffsetDateTime::now_utc(),
            &CONTEXT,
        );
        assert_eq!(
            error.kind,
            FailureKind::Transient {
                retry_after: Some(MAX_RETRY_AFTER)
            }
        );
    }

    #[tokio::test]
    async fn an_endpoint_that_never_answers_is_a_transport_failure_after_each_try() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        // Accepts every connection and holds it open without a byte of answer.
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let retry = BoundedRetry {
            try_timeout: Duration::from_millis(200),
            initial_delay: Duration::from_millis(10),
            max_retries: 1,
            ..BoundedRetry::default()
        };
        let options = ClientOptions {
            retry: RetryOptions::none(),
            per_call_policies: vec![Arc::new(retry)],
            ..ClientOptions::default()
        };
        let pipeline = pipeline(Some(options), PipelineAuth::None);
        let mut request = Request::new(
            azure_core::http::Url::parse(&format!("http://{address}/token")).expect("url"),
            azure_core::http::Method::Get,
        );
        let error = send(&pipeline, &mut request, &CONTEXT)
            .await
            .expect_err("no answer ever comes");
        held.abort();
        assert!(
            matches!(error.kind, FailureKind::Transient { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_short_retry_after_is_waited_out_inside_the_call() {
        use keyturn_testkit::transport::{Answer, CannedTransport};

        let canned = CannedTransport::script([
            Answer::new(StatusCode::ServiceUnavailable, "").header("retry-after-ms", "20"),
            Answer::new(StatusCode::Ok, "{}"),
        ]);
        let options = ClientOptions {
            transport: canned.options().transport,
            ..default_client_options()
        };
        let pipeline = pipeline(Some(options), PipelineAuth::None);
        let mut request = Request::new(
            azure_core::http::Url::parse("https://kt.table.core.windows.net/audit").expect("url"),
            azure_core::http::Method::Get,
        );
        let response = send(&pipeline, &mut request, &CONTEXT)
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::Ok);
        assert_eq!(canned.seen().len(), 2);
    }

    /// A 503 then a 200: the pipeline's answer, and how many tries the transport saw.
    async fn tries_through(once: bool, retry: BoundedRetry) -> (StatusCode, usize) {
        use keyturn_testkit::transport::{Answer, CannedTransport};

        let canned = CannedTransport::script([
            Answer::new(StatusCode::ServiceUnavailable, ""),
            Answer::new(StatusCode::Ok, "{}"),
        ]);
        let options = ClientOptions {
            transport: canned.options().transport,
            per_call_policies: vec![Arc::new(retry)],
            ..default_client_options()
        };
        let options = if once {
            without_retries(&options)
        } else {
            options
        };
        let pipeline = pipeline(Some(options), PipelineAuth::None);
        let mut request = Request::new(
            azure_core::http::Url::parse("https://graph.microsoft.com/v1.0/x").expect("url"),
            azure_core::http::Method::Post,
        );
        let response = send(&pipeline, &mut request, &CONTEXT)
            .await
            .expect("answered");
        (response.status(), canned.seen().len())
    }

    #[tokio::test]
    async fn a_request_sent_once_gets_one_try_whatever_bounded_retry_it_carries() {
        // keyturn's own retry, and one configured otherwise (as a test or a client might).
        let quick = || BoundedRetry {
            initial_delay: Duration::from_millis(1),
            max_retries: 5,
            ..BoundedRetry::default()
        };
        assert_eq!(
            tries_through(false, quick()).await,
            (StatusCode::Ok, 2),
            "retried without the marker"
        );
        assert_eq!(
            tries_through(true, quick()).await,
            (StatusCode::ServiceUnavailable, 1)
        );
        assert_eq!(
            tries_through(true, BoundedRetry::default()).await,
            (StatusCode::ServiceUnavailable, 1)
        );
    }
}
