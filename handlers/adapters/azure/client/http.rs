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
    ClientOptions, Context, ExponentialRetryOptions, Pipeline, PipelineSendOptions, RawResponse,
    Request, RetryOptions, StatusCode,
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
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Longest wait a server's `Retry-After` is taken at. Azure's throttling answers ask for
/// seconds to minutes; an hour is well past any documented window, and a larger value
/// (or a malformed one such as a timestamp sent as delta-seconds) would have a caller
/// wait for centuries or overflow its clock arithmetic.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Longest time spent retrying one call: a fraction of the Functions default five
/// minute timeout, so a failing call still leaves time to record the failure.
pub(crate) const MAX_RETRY_ELAPSED: Duration = Duration::from_secs(60);

/// Longest service error code kept. Azure codes are short identifiers
/// (`EntityAlreadyExists`, `CredentialTypeNotAllowedAsPerAppPolicy`); anything longer is
/// not a code, so it is dropped rather than copied.
pub(crate) const MAX_SERVICE_CODE_LEN: usize = 128;

/// The default client options of keyturn's Azure clients: the retry settings above and
/// azure_core's default transport.
pub fn default_client_options() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: to_time_duration(INITIAL_RETRY_DELAY),
            max_retries: MAX_RETRIES,
            max_total_elapsed: to_time_duration(MAX_RETRY_ELAPSED),
            max_delay: to_time_duration(MAX_RETRY_DELAY),
        }),
        ..ClientOptions::default()
    }
}

fn to_time_duration(duration: Duration) -> azure_core::time::Duration {
    azure_core::time::Duration::try_from(duration)
        .expect("invariant: the retry constants are far below time::Duration's range")
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
        ErrorKind::Credential => PortError::new(
            FailureKind::PermissionDenied {
                missing: format!(
                    "a token from the configured credential ({})",
                    context.missing_permission
                ),
            },
            format!("{}: could not obtain a token", context.operation),
        ),
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
}
