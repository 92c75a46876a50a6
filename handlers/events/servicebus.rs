//! The Service Bus message properties keyturn needs, read from the trigger metadata the
//! Functions host sends (quoted strings, numbers as strings, casing by extension version).

use chrono::{DateTime, Utc};
#[cfg(test)]
use serde_json::json;
use serde_json::{Map, Value};

use crate::events::tolerant::{FieldError, Fields};

/// Why the message metadata could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceBusError {
    #[error("Service Bus metadata is missing `{field}`")]
    MissingField { field: &'static str },
    #[error("Service Bus metadata {0}")]
    Field(#[from] FieldError),
    #[error("Service Bus metadata `DeliveryCount` {count} does not fit in 32 bits")]
    DeliveryCountRange { count: u64 },
}

/// A received message's broker properties. `user_properties` are the application
/// properties (`UserProperties` up to extension 4, `ApplicationProperties` from 5).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBusMessage {
    message_id: String,
    delivery_count: u32,
    enqueued_time: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    lock_token: Option<String>,
    session_id: Option<String>,
    sequence_number: Option<i64>,
    content_type: Option<String>,
    user_properties: Map<String, Value>,
}

impl ServiceBusMessage {
    /// Reads the properties from an invocation's metadata. `MessageId` and
    /// `DeliveryCount` are required: Service Bus sets both on every message.
    pub fn from_metadata(metadata: &Map<String, Value>) -> Result<Self, ServiceBusError> {
        let fields = Fields::new(metadata);
        let message_id = fields
            .string("MessageId")?
            .filter(|id| !id.is_empty())
            .ok_or(ServiceBusError::MissingField { field: "MessageId" })?;
        let count = fields
            .u64("DeliveryCount")?
            .ok_or(ServiceBusError::MissingField {
                field: "DeliveryCount",
            })?;
        let delivery_count =
            u32::try_from(count).map_err(|_| ServiceBusError::DeliveryCountRange { count })?;
        let user_properties = match fields.object("UserProperties")? {
            Some(properties) => properties,
            None => fields.object("ApplicationProperties")?.unwrap_or_default(),
        };
        Ok(Self {
            message_id,
            delivery_count,
            enqueued_time: fields.time("EnqueuedTimeUtc")?,
            expires_at: fields.time("ExpiresAtUtc")?,
            lock_token: non_empty(fields.string("LockToken")?),
            session_id: non_empty(fields.string("SessionId")?),
            sequence_number: fields.i64("SequenceNumber")?,
            content_type: non_empty(fields.string("ContentType")?),
            user_properties,
        })
    }

    /// The metadata in the shape the host sends (as extension 5 does, without the
    /// extra quoting), for a caller that plays the host.
    #[cfg(test)]
    pub(crate) fn to_metadata(&self) -> Map<String, Value> {
        let mut metadata = Map::new();
        metadata.insert("MessageId".into(), json!(self.message_id));
        metadata.insert("DeliveryCount".into(), json!(self.delivery_count));
        let optional = [
            (
                "EnqueuedTimeUtc",
                self.enqueued_time.map(|t| json!(t.to_rfc3339())),
            ),
            (
                "ExpiresAtUtc",
                self.expires_at.map(|t| json!(t.to_rfc3339())),
            ),
            ("LockToken", self.lock_token.as_ref().map(|v| json!(v))),
            ("SessionId", self.session_id.as_ref().map(|v| json!(v))),
            ("SequenceNumber", self.sequence_number.map(|v| json!(v))),
            ("ContentType", self.content_type.as_ref().map(|v| json!(v))),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                metadata.insert(key.into(), value);
            }
        }
        metadata.insert(
            "UserProperties".into(),
            Value::Object(self.user_properties.clone()),
        );
        metadata
    }

    pub(crate) fn message_id(&self) -> &str {
        &self.message_id
    }

    /// How many times the message has been delivered, this delivery included (1 first).
    pub(crate) fn delivery_count(&self) -> u32 {
        self.delivery_count
    }

    #[cfg(test)]
    pub(crate) fn enqueued_time(&self) -> Option<DateTime<Utc>> {
        self.enqueued_time
    }

    #[cfg(test)]
    pub(crate) fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    #[cfg(test)]
    pub(crate) fn lock_token(&self) -> Option<&str> {
        self.lock_token.as_deref()
    }

    #[cfg(test)]
    pub(crate) fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    #[cfg(test)]
    pub(crate) fn sequence_number(&self) -> Option<i64> {
        self.sequence_number
    }

    #[cfg(test)]
    pub(crate) fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    #[cfg(test)]
    pub(crate) fn user_properties(&self) -> &Map<String, Value> {
        &self.user_properties
    }

    /// One application property as text, matched without case.
    #[cfg(test)]
    pub(crate) fn user_property(&self, key: &str) -> Option<String> {
        Fields::new(&self.user_properties)
            .string(key)
            .ok()
            .flatten()
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use proptest::prelude::*;

    use super::*;

    fn captured_metadata() -> Map<String, Value> {
        let path = format!(
            "{}/tests/fixtures/custom-handler/servicebus-trigger.request.captured-ext4.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes =
            fs::read(&path).unwrap_or_else(|error| panic!("fixture {path} is readable: {error}"));
        let request: Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
        request["Metadata"]
            .as_object()
            .cloned()
            .expect("fixture has Metadata")
    }

    #[test]
    fn the_captured_extension_4_metadata_decodes() {
        let message = ServiceBusMessage::from_metadata(&captured_metadata()).expect("decodes");
        assert_eq!(message.message_id(), "088fb2b9aede42e7a154dbc7f803a566");
        assert_eq!(message.delivery_count(), 1);
        assert_eq!(
            message.lock_token(),
            Some("4223106e-36f4-45ed-b1ab-96ead73e225b")
        );
        assert_eq!(message.sequence_number(), Some(1));
        assert_eq!(message.content_type(), Some("application/json"));
        assert_eq!(message.session_id(), None);
        assert_eq!(
            message.enqueued_time().map(|t| t.to_rfc3339()),
            Some("2020-10-08T21:49:35.809+00:00".to_owned())
        );
        assert_eq!(
            message.expires_at().map(|t| t.to_rfc3339()),
            Some("2020-10-22T21:49:35.809+00:00".to_owned())
        );
        assert_eq!(
            message.user_property("sec-fetch-site").as_deref(),
            Some("cross-site")
        );
        assert_eq!(message.user_properties().len(), 2);
    }

    #[test]
    fn the_captured_metadata_round_trips_through_the_host_shape() {
        let message = ServiceBusMessage::from_metadata(&captured_metadata()).expect("decodes");
        let again = ServiceBusMessage::from_metadata(&message.to_metadata()).expect("re-decodes");
        assert_eq!(again, message);
    }

    #[test]
    fn extension_5_casing_and_application_properties_decode() {
        let metadata = json!({
            "messageId": "m-1", "deliveryCount": 3, "sessionId": "vault/secret",
            "applicationProperties": {"kind": "rotate"}
        });
        let message = ServiceBusMessage::from_metadata(metadata.as_object().expect("object"))
            .expect("decodes");
        assert_eq!(message.message_id(), "m-1");
        assert_eq!(message.delivery_count(), 3);
        assert_eq!(message.session_id(), Some("vault/secret"));
        assert_eq!(message.user_property("Kind").as_deref(), Some("rotate"));
    }

    #[test]
    fn a_missing_message_id_is_named() {
        let metadata = json!({"DeliveryCount": "1"});
        assert_eq!(
            ServiceBusMessage::from_metadata(metadata.as_object().expect("object")),
            Err(ServiceBusError::MissingField { field: "MessageId" })
        );
    }

    #[test]
    fn a_missing_delivery_count_is_named() {
        let metadata = json!({"MessageId": "m"});
        assert_eq!(
            ServiceBusMessage::from_metadata(metadata.as_object().expect("object")),
            Err(ServiceBusError::MissingField {
                field: "DeliveryCount"
            })
        );
    }

    #[test]
    fn a_non_numeric_delivery_count_is_named() {
        let metadata = json!({"MessageId": "m", "DeliveryCount": "one"});
        let error = ServiceBusMessage::from_metadata(metadata.as_object().expect("object"))
            .expect_err("not a number");
        assert!(
            matches!(&error, ServiceBusError::Field(field) if field.field() == "DeliveryCount")
        );
    }

    #[test]
    fn an_oversized_delivery_count_is_refused() {
        let metadata = json!({"MessageId": "m", "DeliveryCount": u64::MAX});
        assert_eq!(
            ServiceBusMessage::from_metadata(metadata.as_object().expect("object")),
            Err(ServiceBusError::DeliveryCountRange { count: u64::MAX })
        );
    }

    #[test]
    fn a_bad_enqueued_time_is_named() {
        let metadata =
            json!({"MessageId": "m", "DeliveryCount": 1, "EnqueuedTimeUtc": "\"yesterday\""});
        let error = ServiceBusMessage::from_metadata(metadata.as_object().expect("object"))
            .expect_err("bad time");
        assert!(
            matches!(&error, ServiceBusError::Field(field) if field.field() == "EnqueuedTimeUtc")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_metadata_text_never_panics(key in "[A-Za-z]{1,16}", text in ".{0,80}") {
            let mut metadata = captured_metadata();
            metadata.insert(key, Value::String(text.clone()));
            metadata.insert("UserProperties".into(), Value::String(text));
            let _ = ServiceBusMessage::from_metadata(&metadata);
        }
    }
}
