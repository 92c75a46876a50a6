//! The invocation envelopes of the custom-handler protocol: the `{"Data", "Metadata"}`
//! request the Functions host posts and the `{"Outputs", "Logs", "ReturnValue"}` answer.

#[cfg(test)]
use std::any::type_name;

#[cfg(test)]
use chrono::{DateTime, Utc};
#[cfg(test)]
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
#[cfg(test)]
use uuid::Uuid;

use crate::events::tolerant;
#[cfg(test)]
use crate::events::tolerant::Fields;

/// Largest invocation body accepted. Event Grid delivers at most 1 MB per event or
/// batch and a Service Bus standard-tier message is at most 256 KB; the host wraps the
/// payload in a JSON string once more (escaping can double it) and adds metadata.
/// 4 MiB admits the largest legitimate delivery with room to spare while stopping a
/// stray upload from holding memory.
pub(crate) const MAX_INVOCATION_BODY_BYTES: usize = 4 * 1024 * 1024;

const DATA: &str = "Data";
const METADATA: &str = "Metadata";
#[cfg(test)]
const SYS: &str = "sys";

/// Why an invocation could not be read. Messages name the binding or metadata key and
/// the JSON kind involved, never the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("invocation body is {len} bytes, over the {limit}-byte limit")]
    BodyTooLarge { len: usize, limit: usize },
    #[error("invocation body is not JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("invocation body should be a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("invocation `{section}` should be an object, found {found}")]
    SectionShape {
        section: &'static str,
        found: &'static str,
    },
    #[error("invocation has no binding named `{binding}`")]
    MissingBinding { binding: String },
    #[error("binding `{binding}` is not a valid {expected}: {reason}")]
    #[cfg(test)]
    BindingShape {
        binding: String,
        expected: &'static str,
        reason: String,
    },
}

/// What the Functions host posts to a custom handler for one invocation.
///
/// Binding values and metadata are kept as the host sent them and decoded on access,
/// because the host's encoding varies by extension version: a value may be an object,
/// or a JSON document inside a string (sometimes twice), and primitives may be strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InvocationRequest {
    #[serde(rename = "Data")]
    data: Map<String, Value>,
    #[serde(rename = "Metadata")]
    metadata: Map<String, Value>,
}

/// The `sys` metadata the host adds to every invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg(test)]
pub(crate) struct SysMetadata {
    pub method_name: Option<String>,
    pub utc_now: Option<DateTime<Utc>>,
    pub rand_guid: Option<Uuid>,
}

impl InvocationRequest {
    /// An empty request, for a caller that plays the host (local mode, tests).
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds a binding value, as the host would put it in `Data`.
    #[cfg(test)]
    pub(crate) fn with_binding(mut self, name: impl Into<String>, value: Value) -> Self {
        self.data.insert(name.into(), value);
        self
    }

    /// Adds a metadata entry, as the host would put it in `Metadata`.
    #[cfg(test)]
    pub(crate) fn with_metadata(mut self, key: impl Into<String>, value: Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    /// Reads a request body. `Data` and `Metadata` may be missing, null, objects, or
    /// objects inside JSON strings; their keys may be in any casing.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_INVOCATION_BODY_BYTES {
            return Err(EnvelopeError::BodyTooLarge {
                len: bytes.len(),
                limit: MAX_INVOCATION_BODY_BYTES,
            });
        }
        let root: Value =
            serde_json::from_slice(bytes).map_err(|error| EnvelopeError::NotJson {
                line: error.line(),
                column: error.column(),
            })?;
        let mut root = match tolerant::unwrap_json(&root) {
            Value::Object(map) => map,
            other => {
                return Err(EnvelopeError::NotAnObject {
                    found: tolerant::kind(&other),
                });
            }
        };
        let data = take_section(&mut root, DATA)?;
        let metadata = take_section(&mut root, METADATA)?;
        Ok(Self { data, metadata })
    }

    /// The binding values, as sent.
    #[cfg(test)]
    pub(crate) fn data(&self) -> &Map<String, Value> {
        &self.data
    }

    /// The trigger metadata, as sent. Event modules read it with
    /// [`crate::events::tolerant::Fields`].
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// A binding decoded as `T`. Every decoding of the value is tried, innermost first,
    /// so a double-encoded object reads as the object and a `String` binding still reads
    /// as the most-decoded text.
    #[cfg(test)]
    pub(crate) fn binding<T: DeserializeOwned>(&self, name: &str) -> Result<T, EnvelopeError> {
        let raw = self.raw_binding(name)?;
        let layers = tolerant::layers(raw);
        let mut last_error = None;
        for layer in layers.iter().rev() {
            match T::deserialize(layer) {
                Ok(value) => return Ok(value),
                Err(error) => last_error = last_error.or(Some(error)),
            }
        }
        Err(EnvelopeError::BindingShape {
            binding: name.to_owned(),
            expected: short_type_name::<T>(),
            reason: last_error.map_or_else(|| "no value".to_owned(), |e| safe_reason(&e)),
        })
    }

    /// A binding's innermost decoded JSON value.
    pub fn binding_value(&self, name: &str) -> Result<Value, EnvelopeError> {
        self.raw_binding(name).map(tolerant::unwrap_json)
    }

    /// The first binding (in name order) and its decoded value, for a caller that does
    /// not know the binding's name: a trigger invocation carries one input binding.
    #[cfg(test)]
    pub(crate) fn first_binding_value(&self) -> Option<(&str, Value)> {
        self.data
            .iter()
            .next()
            .map(|(name, value)| (name.as_str(), tolerant::unwrap_json(value)))
    }

    /// A metadata string, matched without case and unwrapped from `"\"...\""`.
    #[cfg(test)]
    pub(crate) fn metadata_str(&self, key: &str) -> Option<String> {
        self.fields().string(key).ok().flatten()
    }

    /// A metadata count, given as `1` or `"1"`.
    #[cfg(test)]
    pub(crate) fn metadata_u64(&self, key: &str) -> Option<u64> {
        self.fields().u64(key).ok().flatten()
    }

    /// A metadata timestamp.
    #[cfg(test)]
    pub(crate) fn metadata_time(&self, key: &str) -> Option<DateTime<Utc>> {
        self.fields().time(key).ok().flatten()
    }

    /// The host's `sys` metadata: method name, the host's clock and a random GUID.
    #[cfg(test)]
    pub(crate) fn sys(&self) -> Option<SysMetadata> {
        let sys = self.fields().object(SYS).ok().flatten()?;
        let fields = Fields::new(&sys);
        Some(SysMetadata {
            method_name: fields.string("MethodName").ok().flatten(),
            utc_now: fields.time("UtcNow").ok().flatten(),
            rand_guid: fields
                .string("RandGuid")
                .ok()
                .flatten()
                .and_then(|text| Uuid::parse_str(&text).ok()),
        })
    }

    #[cfg(test)]
    fn fields(&self) -> Fields<'_> {
        Fields::new(&self.metadata)
    }

    fn raw_binding(&self, name: &str) -> Result<&Value, EnvelopeError> {
        self.data
            .get(name)
            .or_else(|| {
                self.data
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value)
            })
            .ok_or_else(|| EnvelopeError::MissingBinding {
                binding: name.to_owned(),
            })
    }
}

/// What a custom handler answers the host: output binding values, log lines the host
/// writes to the function's log, and the return value. Log lines are written by the
/// host as given: they must carry names and versions only, never secret values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct InvocationResponse {
    #[serde(rename = "Outputs", default)]
    outputs: Map<String, Value>,
    #[serde(rename = "Logs", default)]
    logs: Vec<String>,
    #[serde(
        rename = "ReturnValue",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    return_value: Option<Value>,
}

impl InvocationResponse {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Sets the value of an output binding.
    #[cfg(test)]
    pub(crate) fn output(mut self, name: impl Into<String>, value: Value) -> Self {
        self.outputs.insert(name.into(), value);
        self
    }

    /// Adds a log line.
    pub(crate) fn log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }

    /// Sets the return value (the `$return` binding).
    pub(crate) fn return_value(mut self, value: Value) -> Self {
        self.return_value = Some(value);
        self
    }

    #[cfg(test)]
    pub(crate) fn outputs(&self) -> &Map<String, Value> {
        &self.outputs
    }

    #[cfg(test)]
    pub(crate) fn logs(&self) -> &[String] {
        &self.logs
    }

    #[cfg(test)]
    pub(crate) fn returned(&self) -> Option<&Value> {
        self.return_value.as_ref()
    }
}

fn take_section(
    root: &mut Map<String, Value>,
    section: &'static str,
) -> Result<Map<String, Value>, EnvelopeError> {
    let key = root
        .keys()
        .find(|key| key.trim().eq_ignore_ascii_case(section))
        .cloned();
    let Some(value) = key.and_then(|key| root.remove(&key)) else {
        return Ok(Map::new());
    };
    match tolerant::unwrap_json(&value) {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(EnvelopeError::SectionShape {
            section,
            found: tolerant::kind(&other),
        }),
    }
}

#[cfg(test)]
fn short_type_name<T>() -> &'static str {
    let full = type_name::<T>();
    let without_generics = full.split('<').next().unwrap_or(full);
    without_generics.rsplit("::").next().unwrap_or(full)
}

/// A serde error reduced to what cannot echo the payload: serde's messages quote the
/// offending value ("invalid type: string \"...\""), so only missing-field messages,
/// which quote our own field names, are passed on.
#[cfg(test)]
fn safe_reason(error: &serde_json::Error) -> String {
    let message = error.to_string();
    if message.starts_with("missing field") {
        message
    } else {
        "wrong type or value".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::json;

    use super::*;
    use crate::events::servicebus::ServiceBusMessage;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/custom-handler/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        fs::read(&path).unwrap_or_else(|error| panic!("fixture {path} is readable: {error}"))
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Hello {
        hello: String,
    }

    #[test]
    fn every_custom_handler_request_fixture_decodes() {
        for name in [
            "http-trigger.request.docs.json",
            "queue-trigger.request.docs.json",
            "servicebus-trigger.request.captured-ext4.json",
        ] {
            let request = InvocationRequest::parse(&fixture(name))
                .unwrap_or_else(|error| panic!("{name} decodes: {error}"));
            assert!(
                request.first_binding_value().is_some(),
                "{name} has a binding"
            );
        }
    }

    #[test]
    fn a_double_encoded_service_bus_body_decodes_to_the_object() {
        let request =
            InvocationRequest::parse(&fixture("servicebus-trigger.request.captured-ext4.json"))
                .expect("fixture decodes");
        let hello: Hello = request.binding("myQueueItem").expect("binding decodes");
        assert_eq!(
            hello,
            Hello {
                hello: "world".into()
            }
        );
        assert_eq!(
            request.binding_value("myqueueitem"),
            Ok(json!({"hello": "world"}))
        );
        let text: String = request
            .binding("myQueueItem")
            .expect("binding reads as text");
        assert_eq!(text, r#"{"hello":"world"}"#);
    }

    #[test]
    fn quoted_metadata_values_are_unwrapped() {
        let request =
            InvocationRequest::parse(&fixture("servicebus-trigger.request.captured-ext4.json"))
                .expect("fixture decodes");
        assert_eq!(
            request.metadata_str("LockToken").as_deref(),
            Some("4223106e-36f4-45ed-b1ab-96ead73e225b")
        );
        assert_eq!(
            request.metadata_str("messageid").as_deref(),
            Some("088fb2b9aede42e7a154dbc7f803a566")
        );
        assert_eq!(request.metadata_u64("DeliveryCount"), Some(1));
        assert_eq!(
            request
                .metadata_time("EnqueuedTimeUtc")
                .map(|t| t.to_rfc3339()),
            Some("2020-10-08T21:49:35.809+00:00".to_owned())
        );
        assert_eq!(request.metadata_str("hello").as_deref(), Some("world"));
        assert_eq!(request.metadata_str("absent"), None);
    }

    #[test]
    fn service_bus_metadata_reads_through_the_envelope() {
        let request =
            InvocationRequest::parse(&fixture("servicebus-trigger.request.captured-ext4.json"))
                .expect("fixture decodes");
        let message =
            ServiceBusMessage::from_metadata(request.metadata()).expect("metadata decodes");
        assert_eq!(message.message_id(), "088fb2b9aede42e7a154dbc7f803a566");
        assert_eq!(message.delivery_count(), 1);
    }

    #[test]
    fn numeric_queue_metadata_reads_as_numbers_and_sys_is_typed() {
        let request = InvocationRequest::parse(&fixture("queue-trigger.request.docs.json"))
            .expect("fixture decodes");
        assert_eq!(request.metadata_u64("DequeueCount"), Some(1));
        assert_eq!(request.metadata_str("dequeuecount").as_deref(), Some("1"));
        let text: String = request.binding("myQueueItem").expect("not JSON, so text");
        assert_eq!(text, "{ message: \"Message sent\" }");
        let sys = request.sys().expect("fixture has sys");
        assert_eq!(sys.method_name.as_deref(), Some("QueueTrigger"));
        assert_eq!(sys.utc_now.map(|t| t.timestamp()), Some(1_570_643_912));
        assert_eq!(
            sys.rand_guid.map(|g| g.to_string()).as_deref(),
            Some("24ad4c06-24ad-4e5b-8294-3da9714877e9")
        );
    }

    #[test]
    fn missing_or_null_sections_read_as_empty() {
        for body in [
            r#"{}"#,
            r#"{"Data": null, "Metadata": null}"#,
            r#"{"data": {}}"#,
        ] {
            let request = InvocationRequest::parse(body.as_bytes()).expect("tolerated");
            assert!(request.data().is_empty());
            assert!(request.metadata().is_empty());
            assert_eq!(request.sys(), None);
        }
    }

    #[test]
    fn sections_inside_strings_and_lowercase_keys_decode() {
        let body = json!({"data": "{\"Event\": {\"id\": \"1\"}}", "metadata": {"SYS": "{\"methodName\": \"F\"}"}});
        let request = InvocationRequest::parse(body.to_string().as_bytes()).expect("tolerated");
        assert_eq!(request.binding_value("event"), Ok(json!({"id": "1"})));
        assert_eq!(
            request.sys().and_then(|s| s.method_name).as_deref(),
            Some("F")
        );
    }

    #[test]
    fn a_body_over_the_limit_is_refused_before_parsing() {
        let body = vec![b' '; MAX_INVOCATION_BODY_BYTES + 1];
        assert_eq!(
            InvocationRequest::parse(&body),
            Err(EnvelopeError::BodyTooLarge {
                len: MAX_INVOCATION_BODY_BYTES + 1,
                limit: MAX_INVOCATION_BODY_BYTES
            })
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_with_its_position() {
        assert_eq!(
            InvocationRequest::parse(b"{\"Data\": "),
            Err(EnvelopeError::NotJson { line: 1, column: 9 })
        );
    }

    #[test]
    fn a_body_that_is_an_array_is_refused() {
        assert_eq!(
            InvocationRequest::parse(b"[1]"),
            Err(EnvelopeError::NotAnObject { found: "an array" })
        );
    }

    #[test]
    fn a_data_section_that_is_a_number_is_refused() {
        assert_eq!(
            InvocationRequest::parse(br#"{"Data": 3}"#),
            Err(EnvelopeError::SectionShape {
                section: "Data",
                found: "a number"
            })
        );
    }

    #[test]
    fn a_missing_binding_is_named() {
        let request = InvocationRequest::new().with_binding("event", json!({}));
        assert_eq!(
            request.binding_value("job"),
            Err(EnvelopeError::MissingBinding {
                binding: "job".into()
            })
        );
    }

    #[test]
    fn a_binding_of_the_wrong_shape_is_named_without_its_contents() {
        let request =
            InvocationRequest::new().with_binding("job", json!({"hello": "hunter2-secret"}));
        let error = request
            .binding::<u64>("job")
            .expect_err("an object is not a number");
        let message = error.to_string();
        assert!(message.contains("`job`"), "{message}");
        assert!(message.contains("u64"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");

        let error = request
            .binding::<Vec<Hello>>("job")
            .expect_err("not a list");
        assert!(!error.to_string().contains("hunter2"));
    }

    #[test]
    fn a_missing_field_is_reported_by_name() {
        let request = InvocationRequest::new().with_binding("job", json!({"other": 1}));
        let error = request.binding::<Hello>("job").expect_err("field missing");
        assert!(
            error.to_string().contains("missing field `hello`"),
            "{error}"
        );
    }

    #[test]
    fn a_built_request_serialises_as_the_host_sends_it_and_parses_back() {
        let request = InvocationRequest::new()
            .with_binding("job", json!("{\"a\":1}"))
            .with_metadata("DeliveryCount", json!("2"));
        let bytes = serde_json::to_vec(&request).expect("serialises");
        let parsed = InvocationRequest::parse(&bytes).expect("parses");
        assert_eq!(parsed, request);
        assert_eq!(parsed.metadata_u64("deliverycount"), Some(2));
    }

    #[test]
    fn the_documented_response_round_trips() {
        let original: Value =
            serde_json::from_slice(&fixture("response.docs.json")).expect("fixture is JSON");
        let response: InvocationResponse =
            serde_json::from_value(original.clone()).expect("fixture decodes");
        assert_eq!(response.logs(), ["Log message 1", "Log message 2"]);
        assert_eq!(response.returned(), Some(&json!("{\"hello\":\"world\"}")));
        assert_eq!(
            response.outputs().get("res"),
            Some(&json!({"body": "Message enqueued"}))
        );
        let again = serde_json::to_value(&response).expect("serialises");
        assert_eq!(again, original);
    }

    #[test]
    fn the_builder_produces_the_host_shape() {
        let response = InvocationResponse::new()
            .output("res", json!({"statusCode": 200}))
            .log("rotated db-password")
            .return_value(json!("ok"));
        assert_eq!(
            serde_json::to_value(&response).ok(),
            Some(json!({
                "Outputs": {"res": {"statusCode": 200}},
                "Logs": ["rotated db-password"],
                "ReturnValue": "ok"
            }))
        );
        assert_eq!(
            serde_json::to_value(InvocationResponse::new()).ok(),
            Some(json!({"Outputs": {}, "Logs": []}))
        );
    }

    #[test]
    fn a_long_number_reads_back_as_the_same_number_after_it_is_written() {
        // 38 nines: the nearest double is 3e37, which a best-effort float parser misses
        // by one unit in the last place, so the value written and read again differed.
        let body = b"{\"Data\": {\"timer\": 29999999999999999999999999999999999999}}";
        let request = InvocationRequest::parse(body).expect("the body parses");
        let written = serde_json::to_vec(&request).expect("a request serialises");
        let again = InvocationRequest::parse(&written).expect("a written request parses");
        assert_eq!(again, request);
        assert_eq!(request.binding_value("timer").ok(), Some(json!(3e37)));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = InvocationRequest::parse(&bytes);
            }

            #[test]
            fn accessors_never_panic_on_arbitrary_text_values(text in ".{0,64}", key in "[A-Za-z]{1,8}") {
                let request = InvocationRequest::new()
                    .with_binding(key.clone(), Value::String(text.clone()))
                    .with_metadata(key.clone(), Value::String(text.clone()))
                    .with_metadata("sys", Value::String(text));
                let _ = request.binding_value(&key);
                let _ = request.binding::<Hello>(&key);
                let _ = request.metadata_str(&key);
                let _ = request.metadata_u64(&key);
                let _ = request.metadata_time(&key);
                let _ = request.sys();
            }
        }
    }
}
