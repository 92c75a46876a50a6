//! Lenient reading of JSON the way Azure's hosts really send it: documents wrapped in
//! JSON strings, primitives as strings, keys in either casing and with stray spaces.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

/// How many JSON-string wrappings are peeled off a value before we stop. The Functions
/// host encodes string binding values once more (the captured Service Bus request shows
/// two layers); four leaves room for a sender that already encoded its own payload, and
/// bounds the work a hostile value can cause.
pub(crate) const MAX_STRING_NESTING: usize = 4;

/// Formats tried, in order, for a timestamp without an offset. .NET serialises a
/// `DateTime` of unspecified kind without one; the hosts only ever send UTC there.
const NAIVE_TIME_FORMATS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];

/// A field that is present but cannot be read as what the caller needs. Names the
/// field and the JSON kind found, never the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    #[error("field `{field}` should be {expected}, found {found}")]
    WrongShape {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
}

impl FieldError {
    fn wrong_shape(field: &str, expected: &'static str, found: &Value) -> Self {
        Self::WrongShape {
            field: field.to_owned(),
            expected,
            found: kind(found),
        }
    }

    /// The field the error is about.
    #[cfg(test)]
    pub(crate) fn field(&self) -> &str {
        match self {
            Self::WrongShape { field, .. } => field,
        }
    }
}

/// The JSON kind of a value, for error messages that must not echo the value.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Every decoding of `value`, outermost first: the value itself, then, while it is a
/// string holding a JSON document, that document, up to [`MAX_STRING_NESTING`] times.
pub(crate) fn layers(value: &Value) -> Vec<Value> {
    let mut out = vec![value.clone()];
    while out.len() <= MAX_STRING_NESTING {
        let Some(Value::String(text)) = out.last() else {
            break;
        };
        match serde_json::from_str::<Value>(text) {
            Ok(inner) => out.push(inner),
            Err(_) => break,
        }
    }
    out
}

/// The innermost decoding of `value` (see [`layers`]).
pub(crate) fn unwrap_json(value: &Value) -> Value {
    let mut layers = layers(value);
    layers.pop().unwrap_or(Value::Null)
}

/// Peels JSON-string wrappings off a string while what is inside is still a string:
/// `"\"abc\""` becomes `abc`, while `"1"` stays `1` rather than turning into a number.
pub(crate) fn unwrap_string(text: &str) -> String {
    let mut current = text.to_owned();
    for _ in 0..MAX_STRING_NESTING {
        match serde_json::from_str::<Value>(&current) {
            Ok(Value::String(inner)) => current = inner,
            _ => break,
        }
    }
    current
}

/// Parses a timestamp: RFC 3339, or an offset-less ISO 8601 form taken as UTC.
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    NAIVE_TIME_FORMATS
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
}

/// Case-insensitive, space-tolerant read access to the fields of one JSON object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Self { map }
    }

    /// The fields of `value` when it is an object.
    pub(crate) fn of(value: &'a Value) -> Option<Self> {
        value.as_object().map(Self::new)
    }

    /// The raw value of `key`: an exact match first, otherwise the first key equal to it
    /// ignoring ASCII case and surrounding spaces. `null` counts as absent.
    pub(crate) fn value(&self, key: &str) -> Option<&'a Value> {
        let found = self.map.get(key).or_else(|| {
            self.map
                .iter()
                .find(|(candidate, _)| candidate.trim().eq_ignore_ascii_case(key))
                .map(|(_, value)| value)
        });
        found.filter(|value| !value.is_null())
    }

    /// Whether `key` is present with a non-null value.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.value(key).is_some()
    }

    /// A string field, unwrapped from JSON-string encodings and trimmed. Numbers and
    /// booleans are given in their JSON text.
    pub(crate) fn string(&self, key: &str) -> Result<Option<String>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(unwrap_string(text).trim().to_owned())),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(Value::Bool(flag)) => Ok(Some(flag.to_string())),
            Some(other) => Err(FieldError::wrong_shape(key, "a string", other)),
        }
    }

    /// An unsigned integer, as a number or as a string of digits.
    pub(crate) fn u64(&self, key: &str) -> Result<Option<u64>, FieldError> {
        self.integer(key, "an unsigned integer", serde_json::Number::as_u64)
    }

    /// A signed integer, as a number or as a string of digits.
    pub(crate) fn i64(&self, key: &str) -> Result<Option<i64>, FieldError> {
        self.integer(key, "an integer", serde_json::Number::as_i64)
    }

    /// An integer of type `T`, as a JSON number `from_number` takes or as a string of
    /// digits; `expected` names it in the error.
    fn integer<T: std::str::FromStr>(
        &self,
        key: &str,
        expected: &'static str,
        from_number: fn(&serde_json::Number) -> Option<T>,
    ) -> Result<Option<T>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(value @ Value::Number(number)) => from_number(number)
                .map(Some)
                .ok_or_else(|| FieldError::wrong_shape(key, expected, value)),
            Some(value @ Value::String(text)) => unwrap_string(text)
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|_| FieldError::wrong_shape(key, expected, value)),
            Some(other) => Err(FieldError::wrong_shape(key, expected, other)),
        }
    }

    /// A boolean, as `true`/`false` or as those words in a string, in any case.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, FieldError> {
        const EXPECTED: &str = "a boolean";
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(value @ Value::String(text)) => {
                let text = unwrap_string(text);
                let text = text.trim();
                if text.eq_ignore_ascii_case("true") {
                    Ok(Some(true))
                } else if text.eq_ignore_ascii_case("false") {
                    Ok(Some(false))
                } else {
                    Err(FieldError::wrong_shape(key, EXPECTED, value))
                }
            }
            Some(other) => Err(FieldError::wrong_shape(key, EXPECTED, other)),
        }
    }

    /// A timestamp in RFC 3339 (or offset-less ISO 8601, taken as UTC).
    pub(crate) fn time(&self, key: &str) -> Result<Option<DateTime<Utc>>, FieldError> {
        const EXPECTED: &str = "an RFC 3339 timestamp";
        match self.value(key) {
            None => Ok(None),
            Some(value @ Value::String(text)) => parse_time(&unwrap_string(text))
                .map(Some)
                .ok_or_else(|| FieldError::wrong_shape(key, EXPECTED, value)),
            Some(other) => Err(FieldError::wrong_shape(key, EXPECTED, other)),
        }
    }

    /// A time given as Unix seconds, as a number or a string of digits; an RFC 3339
    /// string is accepted too. An empty string counts as absent.
    pub(crate) fn unix_time(&self, key: &str) -> Result<Option<DateTime<Utc>>, FieldError> {
        const EXPECTED: &str = "Unix seconds";
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        let seconds = match value {
            Value::Number(number) => number.as_i64().or_else(|| {
                number
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            }),
            Value::String(text) => {
                let text = unwrap_string(text);
                let text = text.trim();
                if text.is_empty() {
                    return Ok(None);
                }
                match text.parse::<i64>() {
                    Ok(seconds) => Some(seconds),
                    Err(_) => {
                        return parse_time(text)
                            .map(Some)
                            .ok_or_else(|| FieldError::wrong_shape(key, EXPECTED, value));
                    }
                }
            }
            _ => None,
        };
        seconds
            .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
            .map(Some)
            .ok_or_else(|| FieldError::wrong_shape(key, EXPECTED, value))
    }

    /// A nested object, possibly delivered as a JSON document inside a string.
    pub(crate) fn object(&self, key: &str) -> Result<Option<Map<String, Value>>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(value) => match unwrap_json(value) {
                Value::Object(map) => Ok(Some(map)),
                Value::Null => Ok(None),
                other => Err(FieldError::wrong_shape(key, "an object", &other)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn layers_peel_a_double_encoded_document() {
        let value = json!("\"{\\\"hello\\\":\\\"world\\\"}\"");
        let layers = layers(&value);
        assert_eq!(layers.len(), 3);
        assert_eq!(layers[2], json!({"hello": "world"}));
    }

    #[test]
    fn layers_stop_at_the_nesting_limit() {
        let mut value = json!({"deep": true});
        for _ in 0..MAX_STRING_NESTING + 3 {
            value = Value::String(value.to_string());
        }
        assert_eq!(layers(&value).len(), MAX_STRING_NESTING + 1);
    }

    #[test]
    fn string_fields_are_found_in_any_casing_and_unquoted() {
        let value = json!({"lockToken ": "\"abc\"", "Count": 3});
        let fields = Fields::of(&value).expect("literal is an object");
        assert_eq!(fields.string("LockToken"), Ok(Some("abc".to_owned())));
        assert_eq!(fields.string("count"), Ok(Some("3".to_owned())));
        assert_eq!(fields.string("missing"), Ok(None));
    }

    #[test]
    fn numbers_arrive_as_numbers_or_strings() {
        let value = json!({"a": 1, "b": "2", "c": "\"3\"", "d": "x", "e": -1});
        let fields = Fields::of(&value).expect("literal is an object");
        assert_eq!(fields.u64("a"), Ok(Some(1)));
        assert_eq!(fields.u64("b"), Ok(Some(2)));
        assert_eq!(fields.u64("c"), Ok(Some(3)));
        assert!(fields.u64("d").is_err());
        assert!(fields.u64("e").is_err());
        assert_eq!(fields.i64("e"), Ok(Some(-1)));
    }

    #[test]
    fn a_wrong_shape_error_names_the_field_but_not_the_value() {
        let value = json!({"Flag": "hunter2"});
        let fields = Fields::of(&value).expect("literal is an object");
        let error = fields.bool("Flag").expect_err("not a boolean");
        let message = error.to_string();
        assert!(message.contains("Flag"));
        assert!(!message.contains("hunter2"));
    }

    #[test]
    fn times_accept_offsets_and_offsetless_utc() {
        let value = json!({"a": "2019-07-25T01:08:33.1036736Z", "b": "2020-10-08T21:49:35.809", "c": "1559081980"});
        let fields = Fields::of(&value).expect("literal is an object");
        assert_eq!(
            fields.time("a").ok().flatten().map(|t| t.timestamp()),
            Some(1_564_016_913)
        );
        assert_eq!(
            fields
                .time("b")
                .ok()
                .flatten()
                .map(|t| t.timestamp_millis()),
            Some(1_602_193_775_809)
        );
        assert_eq!(
            fields.unix_time("c").ok().flatten().map(|t| t.timestamp()),
            Some(1_559_081_980)
        );
    }
}
