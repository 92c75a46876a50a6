//! Notifiers for the channels alerts reach people through: Microsoft Teams (a Workflows
//! webhook posting an Adaptive Card, [`teams`]), Slack (an incoming webhook, [`slack`])
//! and any HTTP receiver (a CloudEvents 1.0 structured event, [`cloudevents`]). E-mail
//! goes through Graph `sendMail`, on the Graph client (`adapters::azure::mail`).
//!
//! A webhook URL is a bearer secret: whoever holds it posts to the channel. It is read
//! from Key Vault (or the local vault) at start-up into a [`WebhookUrl`], which prints as
//! `[redacted]`, and it never reaches an error: a transport failure is reported by the
//! route's name, never by reqwest's message (which quotes the URL).

pub mod cloudevents;
pub mod slack;
pub mod teams;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use url::{Host, Url};
use zeroize::Zeroizing;

use crate::domain::secret::SecretValue;
use crate::ports::{FailureKind, PortError};

/// Longest wait for a receiver's answer. Teams Workflows and Slack answer in well under a
/// second; 30 s rides out a slow flow start without holding a sweep for minutes.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest `Retry-After` taken from a receiver. Slack's incoming webhooks ask for about a
/// second when a channel posts faster than one message per second; anything past an hour
/// is not a throttling window, and the next sweep retries the alert anyway.
pub const MAX_WEBHOOK_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Why a webhook URL was refused. Never quotes the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookUrlError {
    #[error("the webhook URL is not an absolute URL")]
    Malformed,
    #[error("the webhook URL must use https (plain http is accepted only on loopback)")]
    Scheme,
    #[error("the webhook URL must not carry user information or a fragment")]
    Parts,
}

/// A webhook's URL: secret, since it authorises posting. `Debug` prints `[redacted]`;
/// the text is kept in zeroed-on-drop memory and exposed only to the HTTP client.
#[derive(Clone)]
pub struct WebhookUrl(Zeroizing<String>);

impl WebhookUrl {
    /// Parses the secret's value. https is required; plain http only to a loopback
    /// address (the receiver `keyturn dev` runs on this machine).
    pub fn parse(value: &SecretValue) -> Result<Self, WebhookUrlError> {
        let url = Url::parse(value.expose().trim()).map_err(|_| WebhookUrlError::Malformed)?;
        let loopback = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => return Err(WebhookUrlError::Malformed),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(WebhookUrlError::Scheme),
        }
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err(WebhookUrlError::Parts);
        }
        Ok(Self(Zeroizing::new(url.to_string())))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookUrl([redacted])")
    }
}

/// The HTTP side every webhook notifier shares: one reqwest client (no redirects, so a
/// post never follows a receiver elsewhere; bounded by [`WEBHOOK_TIMEOUT`]) and the one
/// mapping from a receiver's answer to a [`PortError`].
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
}

impl WebhookClient {
    /// A client over `http` (tests pass one that trusts their CA), or keyturn's default.
    pub fn new(http: Option<reqwest::Client>) -> Result<Self, PortError> {
        let http = match http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(WEBHOOK_TIMEOUT)
                .build()
                .map_err(|_| PortError::invalid("building the webhook HTTP client"))?,
        };
        Ok(Self { http })
    }

    /// Posts `body` to `url` as `content_type`. `channel` names the route in errors.
    pub(crate) async fn post(
        &self,
        url: &WebhookUrl,
        content_type: &str,
        body: Vec<u8>,
        channel: &str,
    ) -> Result<(), PortError> {
        let operation = format!("posting to channel {channel}");
        let response = self
            .http
            .post(url.expose())
            .header(CONTENT_TYPE, content_type)
            .timeout(WEBHOOK_TIMEOUT)
            .body(body)
            .send()
            .await
            // reqwest's error text quotes the URL, which is the secret: only its class is kept.
            .map_err(|error| {
                let what = if error.is_timeout() {
                    "no answer in time"
                } else {
                    "the receiver could not be reached"
                };
                PortError::transient(format!("{operation}: {what}"))
            })?;
        let status = response.status();
        tracing::debug!(channel, status = status.as_u16(), "webhook answered");
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let code = response
            .text()
            .await
            .ok()
            .and_then(|text| receiver_code(&text));
        Err(failure(
            status,
            &headers,
            code.as_deref(),
            channel,
            &operation,
        ))
    }
}

/// A short identifier a receiver answered with (Slack's `invalid_payload`,
/// `channel_is_archived`), kept only when it looks like one, so no echoed text travels on.
fn receiver_code(text: &str) -> Option<String> {
    let text = text.trim();
    let valid = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    valid.then(|| text.to_owned())
}

/// The mapping from a receiver's refusal to the port vocabulary: 401/403 → the URL is no
/// longer accepted (revoked or rotated), 404/410 → the hook or its channel is gone
/// (Slack's `no_service`, `channel_is_archived`), 408/429/5xx → transient (with the
/// receiver's `Retry-After`), other 4xx → the payload was refused.
fn failure(
    status: StatusCode,
    headers: &HeaderMap,
    code: Option<&str>,
    channel: &str,
    operation: &str,
) -> PortError {
    let kind = match status.as_u16() {
        401 | 403 => FailureKind::PermissionDenied {
            missing: format!(
                "a webhook URL the receiver of channel {channel} accepts (it refused the stored one: replace the secret)"
            ),
        },
        404 | 410 => FailureKind::NotFound,
        408 | 500..=599 => FailureKind::Transient { retry_after: None },
        429 => FailureKind::Transient {
            retry_after: retry_after(headers),
        },
        _ => FailureKind::Invalid,
    };
    let message = match code {
        Some(code) => format!("{operation}: HTTP {} ({code})", status.as_u16()),
        None => format!("{operation}: HTTP {}", status.as_u16()),
    };
    PortError::new(kind, message)
}

/// `Retry-After` as delta-seconds, capped at [`MAX_WEBHOOK_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_WEBHOOK_RETRY_AFTER))
}

/// Cuts `text` to at most `max` characters, ending in `…` when cut: the channels refuse
/// over-long fields rather than truncating them.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn url(text: &str) -> Result<WebhookUrl, WebhookUrlError> {
        WebhookUrl::parse(&SecretValue::new(text))
    }

    proptest! {
        #[test]
        fn any_text_is_a_webhook_url_or_refused_and_neither_shows_it(
            scheme in prop::sample::select(vec!["https", "http", "HTTPS", "ftp", ""]),
            user in prop::option::of("[a-z]{1,6}(:[a-z]{1,6})?@"),
            host in prop::sample::select(vec!["hooks.slack.com", "127.0.0.1", "localhost", "[::1]", "10.0.0.1", ""]),
            path in "(/[A-Za-z0-9._~-]{0,12}){0,3}",
            token in "[a-z]{16}",
            fragment in prop::option::of("#[a-z]{0,6}"),
            noise in ".{0,6}",
        ) {
            let text = format!(
                "{scheme}://{}{host}{path}/{token}{}{noise}",
                user.unwrap_or_default(),
                fragment.unwrap_or_default()
            );
            match url(&text) {
                Ok(parsed) => {
                    let parsed_url = Url::parse(parsed.expose()).expect("kept as a URL");
                    let loopback = match parsed_url.host() {
                        Some(Host::Ipv4(ip)) => ip.is_loopback(),
                        Some(Host::Ipv6(ip)) => ip.is_loopback(),
                        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
                        None => false,
                    };
                    prop_assert!(
                        parsed_url.scheme() == "https" || (parsed_url.scheme() == "http" && loopback),
                        "{host}"
                    );
                    prop_assert!(parsed_url.username().is_empty() && parsed_url.fragment().is_none());
                    let shown = format!("{parsed:?}");
                    prop_assert!(!shown.contains(&token), "{shown}");
                }
                Err(error) => prop_assert!(!error.to_string().contains(&token)),
            }
        }
    }

    #[test]
    fn webhook_urls_must_be_https_except_on_loopback() {
        assert!(url("https://prod-12.westeurope.logic.azure.com/workflows/abc?sig=x").is_ok());
        assert!(url("http://127.0.0.1:8088/hooks/teams").is_ok());
        assert!(url("http://localhost:8088/hooks/teams").is_ok());
        assert!(url("http://[::1]:8088/hooks").is_ok());
        assert_eq!(
            url("http://hooks.slack.com/services/T/B/X").err(),
            Some(WebhookUrlError::Scheme)
        );
        assert_eq!(
            url("ftp://127.0.0.1/x").err(),
            Some(WebhookUrlError::Scheme)
        );
        assert_eq!(url("not a url").err(), Some(WebhookUrlError::Malformed));
        assert_eq!(
            url("https://user:pw@hooks.example.com/x").err(),
            Some(WebhookUrlError::Parts)
        );
        assert_eq!(
            url("https://hooks.example.com/x#frag").err(),
            Some(WebhookUrlError::Parts)
        );
    }

    #[test]
    fn a_webhook_url_never_prints() {
        let hook = url("https://hooks.slack.com/services/T0/B0/s3cr3tToken").expect("valid");
        assert_eq!(format!("{hook:?}"), "WebhookUrl([redacted])");
        let refused = url("http://hooks.slack.com/services/T0/B0/s3cr3tToken").expect_err("http");
        assert!(!refused.to_string().contains("s3cr3tToken"));
    }

    #[test]
    fn receiver_refusals_map_to_the_port_vocabulary() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().expect("a header value"));
        let cases = [
            (
                401,
                FailureKind::PermissionDenied {
                    missing: String::new(),
                },
            ),
            (404, FailureKind::NotFound),
            (410, FailureKind::NotFound),
            (400, FailureKind::Invalid),
            (413, FailureKind::Invalid),
            (500, FailureKind::Transient { retry_after: None }),
            (
                429,
                FailureKind::Transient {
                    retry_after: Some(Duration::from_secs(7)),
                },
            ),
        ];
        for (status, expected) in cases {
            let error = failure(
                StatusCode::from_u16(status).expect("a status"),
                &headers,
                Some("invalid_payload"),
                "ops",
                "posting to channel ops",
            );
            match (&error.kind, &expected) {
                (
                    FailureKind::PermissionDenied { missing },
                    FailureKind::PermissionDenied { .. },
                ) => {
                    assert!(missing.contains("channel ops"));
                }
                (kind, expected) => assert_eq!(kind, expected, "HTTP {status}"),
            }
            assert!(error.context.contains("invalid_payload"));
        }
    }

    #[test]
    fn only_identifier_like_answers_are_kept_as_codes() {
        assert_eq!(
            receiver_code("invalid_payload\n").as_deref(),
            Some("invalid_payload")
        );
        assert_eq!(receiver_code("<html>nope</html>"), None);
        assert_eq!(receiver_code(&"a".repeat(65)), None);
    }

    #[test]
    fn clipping_marks_the_cut() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdefghij", 5), "abcd…");
        assert_eq!(clip("abcdefghij", 5).chars().count(), 5);
    }
}
