//! The handshakes an event webhook must answer before events flow: Event Grid's
//! `SubscriptionValidationEvent` and the CloudEvents webhook `OPTIONS` request.

use serde_json::{Value, json};

use crate::events::keyvault::SUBSCRIPTION_VALIDATION_EVENT;
use crate::events::tolerant::{self, FieldError, Fields};

/// Longest `WebHook-Request-Origin` accepted: the origin is a DNS name, at most 253
/// characters (RFC 1035 section 2.3.4, less the root label).
pub(crate) const MAX_ORIGIN_LEN: usize = 253;

/// Longest validation code accepted. Event Grid sends a GUID (36 characters); 1 KiB is
/// generous yet keeps the echoed answer small.
pub(crate) const MAX_VALIDATION_CODE_LEN: usize = 1024;

const ORIGIN_HEADER: &str = "WebHook-Request-Origin";
const CALLBACK_HEADER: &str = "WebHook-Request-Callback";
const RATE_HEADER: &str = "WebHook-Request-Rate";

/// Why a handshake could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("subscription validation {0}")]
    Field(#[from] FieldError),
    #[error("subscription validation event is missing `{field}`")]
    MissingField { field: &'static str },
    #[error("subscription validation code is {len} characters, over the {limit} limit")]
    CodeTooLong { len: usize, limit: usize },
    #[error("webhook handshake is missing the {ORIGIN_HEADER} header")]
    MissingOrigin,
    #[error("webhook handshake origin is {len} characters, over the {limit} limit")]
    OriginTooLong { len: usize, limit: usize },
}

/// Event Grid's subscription handshake: answer `validation_response()` with 200, or
/// visit `validation_url` with a GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionValidation {
    code: String,
    url: Option<String>,
}

impl SubscriptionValidation {
    /// The handshake in a delivery (one event or an array whose first event is the
    /// validation event), or `None` when the delivery is ordinary events.
    pub fn from_delivery(value: &Value) -> Result<Option<Self>, ValidationError> {
        let value = tolerant::unwrap_json(value);
        let event = match &value {
            Value::Array(items) => items.first().map(tolerant::unwrap_json),
            other => Some(other.clone()),
        };
        let Some(event) = event else {
            return Ok(None);
        };
        let Some(fields) = Fields::of(&event) else {
            return Ok(None);
        };
        let is_validation = fields.string("eventType")?.is_some_and(|event_type| {
            event_type.eq_ignore_ascii_case(SUBSCRIPTION_VALIDATION_EVENT)
        });
        if !is_validation {
            return Ok(None);
        }
        let data = fields
            .object("data")?
            .ok_or(ValidationError::MissingField { field: "data" })?;
        let data = Fields::new(&data);
        let code = data
            .string("validationCode")?
            .filter(|code| !code.is_empty())
            .ok_or(ValidationError::MissingField {
                field: "validationCode",
            })?;
        let len = code.chars().count();
        if len > MAX_VALIDATION_CODE_LEN {
            return Err(ValidationError::CodeTooLong {
                len,
                limit: MAX_VALIDATION_CODE_LEN,
            });
        }
        let url = data.string("validationUrl")?.filter(|url| !url.is_empty());
        Ok(Some(Self { code, url }))
    }

    #[cfg(test)]
    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    #[cfg(test)]
    pub(crate) fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The body Event Grid expects back: `{"validationResponse": code}`.
    pub fn validation_response(&self) -> Value {
        json!({ "validationResponse": self.code })
    }
}

/// The CloudEvents webhook abuse-protection handshake (CloudEvents "HTTP 1.1 Web Hooks
/// for Event Delivery", section 4): an `OPTIONS` request naming its origin, answered with
/// `WebHook-Allowed-Origin` (and `WebHook-Allowed-Rate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookHandshake {
    origin: String,
    callback: Option<String>,
    requested_rate: Option<u32>,
}

impl WebhookHandshake {
    /// The handshake in a request, or `None` for any method but `OPTIONS`. Header names
    /// match without case.
    pub(crate) fn from_request<'a>(
        method: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Self>, ValidationError> {
        if !method.trim().eq_ignore_ascii_case("OPTIONS") {
            return Ok(None);
        }
        let mut origin = None;
        let mut callback = None;
        let mut requested_rate = None;
        for (name, value) in headers {
            let value = value.trim();
            if name.eq_ignore_ascii_case(ORIGIN_HEADER) {
                origin = Some(value);
            } else if name.eq_ignore_ascii_case(CALLBACK_HEADER) {
                callback = Some(value.to_owned()).filter(|v| !v.is_empty());
            } else if name.eq_ignore_ascii_case(RATE_HEADER) {
                requested_rate = value.parse().ok();
            }
        }
        let origin = origin
            .filter(|origin| !origin.is_empty())
            .ok_or(ValidationError::MissingOrigin)?;
        let len = origin.chars().count();
        if len > MAX_ORIGIN_LEN {
            return Err(ValidationError::OriginTooLong {
                len,
                limit: MAX_ORIGIN_LEN,
            });
        }
        Ok(Some(Self {
            origin: origin.to_owned(),
            callback,
            requested_rate,
        }))
    }

    #[cfg(test)]
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    #[cfg(test)]
    pub(crate) fn requested_rate(&self) -> Option<u32> {
        self.requested_rate
    }

    /// Headers granting delivery, at the rate asked for or any rate, to the origin when it
    /// is Event Grid's (see [`event_grid_origin`]) and to Event Grid's public origin
    /// otherwise: a foreign origin is never granted, as the Functions host grants none.
    pub(crate) fn response_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "WebHook-Allowed-Origin",
                event_grid_origin(Some(&self.origin)).to_owned(),
            ),
            (
                "WebHook-Allowed-Rate",
                self.requested_rate
                    .map_or_else(|| "*".to_owned(), |rate| rate.to_string()),
            ),
        ]
    }
}

/// Event Grid's origins in each cloud, as the Functions host's Event Grid extension
/// lists them (`HttpRequestProcessor.GetAllowedOriginResponseHeader`).
pub(crate) const EVENT_GRID_ORIGINS: [&str; 5] = [
    "eventgrid.azure.net",
    "eventgrid.azure.us",
    "eventgrid.azure.eaglex.ic.gov",
    "eventgrid.azure.microsoft.scloud",
    "eventgrid.azure.cn",
];

/// The origin a CloudEvents handshake is granted: the requested one when it is Event
/// Grid's, else Event Grid's public-cloud origin (also when none was named), exactly as
/// the host answers.
pub(crate) fn event_grid_origin(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|origin| EVENT_GRID_ORIGINS.iter().find(|o| **o == origin))
        .copied()
        .unwrap_or(EVENT_GRID_ORIGINS[0])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn validation_event() -> Value {
        json!([{
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/sample-kv",
            "subject": "",
            "data": {
                "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/x/validate?id=1&t=2"
            },
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2018-01-25T22:12:19.4556811Z",
            "metadataVersion": "1",
            "dataVersion": "1"
        }])
    }

    #[test]
    fn a_subscription_validation_is_recognised_and_answered() {
        let validation = SubscriptionValidation::from_delivery(&validation_event())
            .expect("decodes")
            .expect("is a validation");
        assert_eq!(validation.code(), "512d38b6-c7b8-40c8-89fe-f46f9e9622b6");
        assert!(
            validation
                .url()
                .is_some_and(|url| url.starts_with("https://rp-eastus2"))
        );
        assert_eq!(
            validation.validation_response(),
            json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
        );
    }

    #[test]
    fn ordinary_events_are_not_a_validation() {
        let event =
            json!({"id": "1", "eventType": "Microsoft.KeyVault.SecretNearExpiry", "data": {}});
        assert_eq!(SubscriptionValidation::from_delivery(&event), Ok(None));
        assert_eq!(SubscriptionValidation::from_delivery(&json!([])), Ok(None));
        assert_eq!(
            SubscriptionValidation::from_delivery(&json!("text")),
            Ok(None)
        );
    }

    #[test]
    fn a_validation_without_a_code_is_refused() {
        let mut event = validation_event();
        event[0]["data"] = json!({"validationUrl": "https://x"});
        assert_eq!(
            SubscriptionValidation::from_delivery(&event),
            Err(ValidationError::MissingField {
                field: "validationCode"
            })
        );
    }

    #[test]
    fn a_cloudevents_handshake_is_read_from_options() {
        let handshake = WebhookHandshake::from_request(
            "OPTIONS",
            [
                ("webhook-request-origin", "eventgrid.azure.net"),
                ("WebHook-Request-Rate", "120"),
            ],
        )
        .expect("decodes")
        .expect("is a handshake");
        assert_eq!(handshake.origin(), "eventgrid.azure.net");
        assert_eq!(handshake.requested_rate(), Some(120));
        assert_eq!(
            handshake.response_headers(),
            vec![
                ("WebHook-Allowed-Origin", "eventgrid.azure.net".to_owned()),
                ("WebHook-Allowed-Rate", "120".to_owned())
            ]
        );
    }

    #[test]
    fn only_event_grids_origins_are_granted() {
        for origin in EVENT_GRID_ORIGINS {
            assert_eq!(event_grid_origin(Some(origin)), origin);
        }
        for foreign in [
            Some("eventemitter.example.com"),
            Some("EVENTGRID.AZURE.NET.example.com"),
            Some(""),
            None,
        ] {
            assert_eq!(
                event_grid_origin(foreign),
                "eventgrid.azure.net",
                "{foreign:?}"
            );
        }
        let foreign =
            WebhookHandshake::from_request("OPTIONS", [("WebHook-Request-Origin", "evil.example")])
                .expect("decodes")
                .expect("is a handshake");
        assert_eq!(
            foreign.response_headers()[0],
            ("WebHook-Allowed-Origin", "eventgrid.azure.net".to_owned())
        );
    }

    #[test]
    fn a_post_is_not_a_handshake() {
        assert_eq!(
            WebhookHandshake::from_request("POST", [("WebHook-Request-Origin", "x")]),
            Ok(None)
        );
    }

    #[test]
    fn an_options_request_without_origin_is_refused() {
        assert_eq!(
            WebhookHandshake::from_request("OPTIONS", [("Host", "localhost")]),
            Err(ValidationError::MissingOrigin)
        );
    }

    #[test]
    fn an_overlong_origin_is_refused() {
        let origin = "a".repeat(MAX_ORIGIN_LEN + 1);
        assert_eq!(
            WebhookHandshake::from_request(
                "OPTIONS",
                [("WebHook-Request-Origin", origin.as_str())]
            ),
            Err(ValidationError::OriginTooLong {
                len: MAX_ORIGIN_LEN + 1,
                limit: MAX_ORIGIN_LEN
            })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_deliveries_never_panic(text in ".{0,200}") {
            let _ = SubscriptionValidation::from_delivery(&Value::String(text.clone()));
            let _ = WebhookHandshake::from_request("OPTIONS", [("WebHook-Request-Origin", text.as_str()), ("WebHook-Request-Rate", text.as_str())]);
        }
    }
}
