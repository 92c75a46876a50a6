//! The [`TokenProver`] on Entra's v2 token endpoint: proves a client secret works by
//! acquiring a token with it (client-credentials grant), and tells "not accepted (yet)"
//! apart from "could not ask".
//!
//! The request body carries the secret, so it is built in a zeroed-on-drop buffer, never
//! formatted, and never leaves this module except to the transport. azure_core's logging
//! policy logs the method, the URL with query parameters redacted and allow-listed
//! headers, never a body; `Request`'s `Debug` prints a body as `Bytes { .. }` outside
//! azure_core's own tests. Entra's `error_description` (free text that can quote the
//! request) is never read: only `error` and the numeric `error_codes`.

use std::fmt;

use async_trait::async_trait;
use azure_core::http::headers::{CONTENT_TYPE, HeaderName};
use azure_core::http::{ClientOptions, Method, Pipeline, Request, StatusCode, Url};
use azure_core::time::OffsetDateTime;
use serde::Deserialize;
use url::form_urlencoded;
use zeroize::Zeroizing;

use crate::adapters::azure::client::http;
use crate::adapters::azure::client::http::{
    FailureContext, PipelineAuth, failure_from_status, pipeline,
};
use crate::domain::ids::{AppId, TenantId};
use crate::domain::secret::SecretValue;
use crate::ports::directory::{ProofError, TokenProver};
use crate::ports::{FailureKind, PortError};

/// Where Entra signs in for the public cloud; sovereign clouds have their own
/// (`KEYTURN_AUTHORITY_HOST`).
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// The scope proofs ask for: any resource the application may get a token for works,
/// and every application can get one for Microsoft Graph's `.default` scope, even with
/// no permission granted. Sovereign clouds use their Graph endpoint's scope.
pub const DEFAULT_PROOF_SCOPE: &str = "https://graph.microsoft.com/.default";

/// AADSTS7000215: invalid client secret. Also what Entra answers while a new secret is
/// still propagating (seconds, no SLA), so it means "not accepted yet".
pub(crate) const INVALID_SECRET: u32 = 7_000_215;
/// AADSTS7000222: the client secret has expired.
pub(crate) const EXPIRED_SECRET: u32 = 7_000_222;
/// AADSTS700016: no application with this client id in the tenant.
pub(crate) const UNKNOWN_APPLICATION: u32 = 700_016;

const ACCEPT: HeaderName = HeaderName::from_static("accept");
const FORM: &str = "application/x-www-form-urlencoded";

/// Proves client secrets against `{authority}/{tenant}/oauth2/v2.0/token`.
#[derive(Clone)]
pub struct EntraTokenProver {
    token_url: Url,
    scope: String,
    pipeline: Pipeline,
}

impl fmt::Debug for EntraTokenProver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraTokenProver")
            .field("token_url", &self.token_url.as_str())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Building the prover failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenProverError {
    #[error("invalid authority host: {problem}")]
    InvalidAuthority { problem: &'static str },
    #[error("invalid proof scope: it must end in /.default")]
    InvalidScope,
}

impl EntraTokenProver {
    /// `authority` is the authority host (`https://login.microsoftonline.com`, or a
    /// sovereign cloud's); `scope` the `.default` scope tokens are requested for
    /// ([`DEFAULT_PROOF_SCOPE`] in the public cloud). The endpoint needs no credential of
    /// keyturn's own: the proof is the credential.
    pub fn new(
        authority: &Url,
        tenant: &TenantId,
        scope: impl Into<String>,
        options: Option<ClientOptions>,
    ) -> Result<Self, TokenProverError> {
        if authority.scheme() != "https" {
            return Err(TokenProverError::InvalidAuthority {
                problem: "must be https: the request carries a secret",
            });
        }
        if authority.query().is_some() || authority.fragment().is_some() {
            return Err(TokenProverError::InvalidAuthority {
                problem: "must not carry a query or fragment",
            });
        }
        let scope = scope.into();
        if !scope.ends_with("/.default") {
            return Err(TokenProverError::InvalidScope);
        }
        let mut token_url = authority.clone();
        let base = token_url.path().trim_end_matches('/').to_owned();
        token_url.set_path(&format!("{base}/{tenant}/oauth2/v2.0/token"));
        Ok(Self {
            token_url,
            scope,
            pipeline: pipeline(options, PipelineAuth::None),
        })
    }

    /// The form body, built in a buffer zeroed when dropped.
    fn body(&self, app_id: &AppId, secret: &SecretValue) -> Zeroizing<String> {
        let mut body = Zeroizing::new(String::new());
        form_urlencoded::Serializer::new(&mut *body)
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &app_id.to_string())
            .append_pair("client_secret", secret.expose())
            .append_pair("scope", &self.scope)
            .finish();
        body
    }
}

/// Entra's OAuth error answer: only the machine-readable parts are read.
#[derive(Deserialize)]
struct EntraError {
    error: Option<String>,
    #[serde(default)]
    error_codes: Vec<u32>,
}

/// What an unsuccessful token answer means for a proof.
fn classify(
    status: StatusCode,
    headers: &azure_core::http::headers::Headers,
    body: &[u8],
    app_id: &AppId,
) -> ProofError {
    let operation = format!("proving a client secret of application {app_id}");
    let answer: Option<EntraError> = serde_json::from_slice(body).ok();
    let codes = answer
        .as_ref()
        .map(|a| a.error_codes.as_slice())
        .unwrap_or_default();
    if let Some(code) = codes
        .iter()
        .find(|code| matches!(**code, INVALID_SECRET | EXPIRED_SECRET))
    {
        return ProofError::Rejected {
            code: format!("AADSTS{code}"),
        };
    }
    if codes.contains(&UNKNOWN_APPLICATION) {
        return ProofError::Port(PortError::new(
            FailureKind::NotFound,
            format!(
                "{operation}: no application with this id in the tenant (AADSTS{UNKNOWN_APPLICATION})"
            ),
        ));
    }
    let numeric = u16::from(status);
    let described = match (
        codes.first(),
        answer.as_ref().and_then(|a| a.error.as_deref()),
    ) {
        (Some(code), _) => format!("{operation} (AADSTS{code})"),
        (None, Some(error)) if is_oauth_error_name(error) => format!("{operation} ({error})"),
        _ => operation,
    };
    let context = FailureContext {
        operation: &described,
        missing_permission: "a client secret the token endpoint accepts",
        policy_codes: &[],
    };
    let error = failure_from_status(status, headers, None, OffsetDateTime::now_utc(), &context);
    // A 400 or 401 that is not about the secret is a request Entra will never accept
    // (wrong tenant, bad scope): not a permission keyturn could be granted.
    if matches!(numeric, 400 | 401) {
        return ProofError::Port(PortError::new(FailureKind::Invalid, error.context));
    }
    ProofError::Port(error)
}

/// OAuth error names are short snake_case words (`invalid_client`); anything else is
/// not copied.
fn is_oauth_error_name(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[async_trait]
impl TokenProver for EntraTokenProver {
    async fn prove(&self, app_id: &AppId, secret: &SecretValue) -> Result<(), ProofError> {
        let operation = format!("proving a client secret of application {app_id}");
        let mut request = Request::new(self.token_url.clone(), Method::Post);
        request.insert_header(CONTENT_TYPE, FORM);
        request.insert_header(ACCEPT, "application/json");
        // The transport needs its own copy (azure_core's `Bytes`), which is not zeroed
        // when freed; the copy keyturn builds is.
        request.set_body(self.body(app_id, secret).as_bytes().to_vec());
        let context = FailureContext {
            operation: &operation,
            missing_permission: "network access to the token endpoint",
            policy_codes: &[],
        };
        let response = http::send(&self.pipeline, &mut request, &context)
            .await
            .map_err(ProofError::Port);
        // The request, body included, is not needed past this point.
        drop(request);
        let response = response?;
        if response.status().is_success() {
            // The token itself is not needed: getting one is the proof. It is dropped
            // with the response.
            return Ok(());
        }
        Err(classify(
            response.status(),
            response.headers(),
            response.body().as_ref(),
            app_id,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use keyturn_testkit::transport::{Answer, CannedTransport};

    use super::*;

    const SECRET: &str = "Abc8Q~a-secret-that-must-never-be-seen";

    fn app() -> AppId {
        AppId::parse("6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab").expect("valid")
    }

    fn tenant() -> TenantId {
        TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("valid")
    }

    fn prover(answer: Answer) -> (EntraTokenProver, Arc<CannedTransport>) {
        let canned = CannedTransport::always(answer);
        let authority = Url::parse("https://login.example.test").expect("valid");
        let prover = EntraTokenProver::new(
            &authority,
            &tenant(),
            DEFAULT_PROOF_SCOPE,
            Some(canned.options()),
        )
        .expect("valid prover");
        (prover, canned)
    }

    fn canned(status: StatusCode, headers: Vec<(&str, &str)>, body: &str) -> Answer {
        Answer::new(status, body.as_bytes().to_vec()).headers(headers)
    }

    fn entra_error(code: u32) -> String {
        format!(
            r#"{{"error":"invalid_client","error_description":"AADSTS{code}: {SECRET} echoed","error_codes":[{code}]}}"#
        )
    }

    #[tokio::test]
    async fn a_token_answer_proves_the_secret_and_the_request_is_a_client_credentials_form() {
        let (prover, canned) = prover(canned(
            StatusCode::Ok,
            vec![],
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":"t"}"#,
        ));

        prover
            .prove(&app(), &SecretValue::new(SECRET))
            .await
            .expect("accepted");

        let seen = canned.seen();
        let (url, headers, body) = (&seen[0].url, &seen[0].headers, &seen[0].body);
        assert_eq!(
            url,
            "https://login.example.test/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "content-type" && v == FORM)
        );
        assert!(headers.iter().all(|(n, _)| n != "authorization"));
        let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| {
            form.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field("grant_type"), Some("client_credentials"));
        assert_eq!(
            field("client_id"),
            Some("6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab")
        );
        assert_eq!(field("client_secret"), Some(SECRET));
        assert_eq!(field("scope"), Some(DEFAULT_PROOF_SCOPE));
    }

    #[tokio::test]
    async fn invalid_and_expired_secrets_are_rejections_naming_the_code() {
        for (code, expected) in [
            (INVALID_SECRET, "AADSTS7000215"),
            (EXPIRED_SECRET, "AADSTS7000222"),
        ] {
            let body: &'static str = Box::leak(entra_error(code).into_boxed_str());
            let (prover, _) = prover(canned(StatusCode::Unauthorized, vec![], body));

            let error = prover
                .prove(&app(), &SecretValue::new(SECRET))
                .await
                .expect_err("refused");

            assert_eq!(
                error,
                ProofError::Rejected {
                    code: expected.into()
                }
            );
        }
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_transient_with_the_servers_delay() {
        let cases = [
            (
                StatusCode::TooManyRequests,
                vec![("retry-after", "7")],
                Some(7),
            ),
            (StatusCode::TooManyRequests, vec![], None),
            (
                StatusCode::ServiceUnavailable,
                vec![("retry-after", "2")],
                Some(2),
            ),
            (StatusCode::InternalServerError, vec![], None),
        ];
        for (status, headers, seconds) in cases {
            let (prover, _) = prover(canned(
                status,
                headers,
                r#"{"error":"temporarily_unavailable","error_codes":[50196]}"#,
            ));

            let error = prover
                .prove(&app(), &SecretValue::new(SECRET))
                .await
                .expect_err("refused");

            let ProofError::Port(error) = error else {
                panic!("expected a port error for {status:?}, got {error:?}");
            };
            assert_eq!(
                error.kind,
                FailureKind::Transient {
                    retry_after: seconds.map(std::time::Duration::from_secs)
                },
                "{status:?}"
            );
        }
    }

    #[tokio::test]
    async fn other_refusals_are_permanent_and_never_quote_entra() {
        let cases = [
            (
                StatusCode::BadRequest,
                entra_error(UNKNOWN_APPLICATION),
                FailureKind::NotFound,
            ),
            (
                StatusCode::BadRequest,
                entra_error(90002),
                FailureKind::Invalid,
            ),
            (
                StatusCode::BadRequest,
                "<html>not json</html>".to_owned(),
                FailureKind::Invalid,
            ),
        ];
        for (status, body, kind) in cases {
            let body: &'static str = Box::leak(body.into_boxed_str());
            let (prover, _) = prover(canned(status, vec![], body));

            let error = prover
                .prove(&app(), &SecretValue::new(SECRET))
                .await
                .expect_err("refused");

            let ProofError::Port(error) = error else {
                panic!("expected a port error, got {error:?}");
            };
            assert_eq!(error.kind, kind, "{body}");
            assert!(!error.context.contains(SECRET), "{}", error.context);
            assert!(!error.context.contains("echoed"), "{}", error.context);
        }
    }

    /// Collects everything every tracing event writes, at every level.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("test lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn no_trace_at_any_level_carries_the_secret() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let body: &'static str = Box::leak(entra_error(INVALID_SECRET).into_boxed_str());

        for (status, body) in [
            (StatusCode::Ok, r#"{"access_token":"t","expires_in":3599}"#),
            (StatusCode::Unauthorized, body),
        ] {
            let (prover, _) = prover(canned(status, vec![], body));
            let outcome = prover.prove(&app(), &SecretValue::new(SECRET)).await;
            tracing::info!(outcome = ?outcome, prover = ?prover, "proved");
        }

        let text = String::from_utf8_lossy(&captured.0.lock().expect("test lock")).into_owned();
        assert!(
            text.contains("oauth2/v2.0/token"),
            "the pipeline traced: {text}"
        );
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("client_secret"), "{text}");
    }

    #[test]
    fn the_authority_must_be_https_and_the_scope_a_default_scope() {
        let http = Url::parse("http://login.example.test").expect("valid");
        assert!(matches!(
            EntraTokenProver::new(&http, &tenant(), DEFAULT_PROOF_SCOPE, None),
            Err(TokenProverError::InvalidAuthority { .. })
        ));
        let https = Url::parse("https://login.example.test/").expect("valid");
        assert_eq!(
            EntraTokenProver::new(&https, &tenant(), "https://graph.microsoft.com", None)
                .map(|_| ()),
            Err(TokenProverError::InvalidScope)
        );
        let prover =
            EntraTokenProver::new(&https, &tenant(), DEFAULT_PROOF_SCOPE, None).expect("valid");
        assert!(!format!("{prover:?}").contains("client_secret"));
    }
}
