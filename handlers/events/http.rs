//! The HTTP trigger's request data as the host sends it when it does not forward the
//! request itself (`enableForwardingHttpRequest: false`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::events::tolerant::{self, FieldError, Fields};

/// Why HTTP trigger data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpDataError {
    #[error("HTTP trigger data should be a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("HTTP trigger data is missing `{field}`")]
    MissingField { field: &'static str },
    #[error("HTTP trigger data {0}")]
    Field(#[from] FieldError),
    #[error("HTTP trigger data `{field}` should map names to strings, found {found}")]
    MapShape {
        field: &'static str,
        found: &'static str,
    },
}

/// An HTTP trigger request. Header names are kept in lowercase (HTTP compares them
/// without case); each header may have several values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HttpRequestData {
    #[serde(rename = "Url")]
    url: String,
    #[serde(rename = "Method")]
    method: String,
    #[serde(rename = "Query")]
    query: BTreeMap<String, String>,
    #[serde(rename = "Headers")]
    headers: BTreeMap<String, Vec<String>>,
    #[serde(rename = "Params")]
    params: BTreeMap<String, String>,
    #[serde(rename = "Body", skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

impl HttpRequestData {
    /// Reads the request, possibly inside a JSON string. A JSON body that arrives
    /// already decoded is kept as its JSON text.
    pub fn from_value(value: &Value) -> Result<Self, HttpDataError> {
        let value = tolerant::unwrap_json(value);
        let fields = Fields::of(&value).ok_or(HttpDataError::NotAnObject {
            found: tolerant::kind(&value),
        })?;
        let url = fields
            .string("Url")?
            .ok_or(HttpDataError::MissingField { field: "Url" })?;
        let method = fields
            .string("Method")?
            .ok_or(HttpDataError::MissingField { field: "Method" })?
            .to_ascii_uppercase();
        let headers = string_lists(&fields, "Headers")?
            .into_iter()
            .map(|(name, values)| (name.to_ascii_lowercase(), values))
            .collect();
        let query = string_lists(&fields, "Query")?
            .into_iter()
            .map(|(name, values)| (name, values.join(",")))
            .collect();
        let params = string_lists(&fields, "Params")?
            .into_iter()
            .map(|(name, values)| (name, values.join(",")))
            .collect();
        let body = match fields.value("Body") {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => Some(other.to_string()),
        };
        Ok(Self {
            url,
            method,
            query,
            headers,
            params,
            body,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The method, in uppercase.
    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn query(&self) -> &BTreeMap<String, String> {
        &self.query
    }

    /// Route parameters (`{name}` in the function's route).
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn headers(&self) -> &BTreeMap<String, Vec<String>> {
        &self.headers
    }

    /// The first value of a header, matched without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).first().map(String::as_str)
    }

    /// Every value of a header, matched without case.
    pub fn header_values(&self, name: &str) -> &[String] {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
}

/// A JSON object of names to a string or a list of strings (numbers and booleans are
/// taken as their text), possibly inside a JSON string.
fn string_lists(
    fields: &Fields<'_>,
    field: &'static str,
) -> Result<BTreeMap<String, Vec<String>>, HttpDataError> {
    let Some(map) = fields.object(field)? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for (name, value) in &map {
        let values = match value {
            Value::Array(items) => items
                .iter()
                .map(|item| scalar_text(item).ok_or(item))
                .collect::<Result<Vec<_>, _>>(),
            Value::Null => Ok(Vec::new()),
            other => scalar_text(other).map(|text| vec![text]).ok_or(other),
        }
        .map_err(|bad| HttpDataError::MapShape {
            field,
            found: tolerant::kind(bad),
        })?;
        out.insert(name.clone(), values);
    }
    Ok(out)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn fixture_request() -> Value {
        let path = format!(
            "{}/../shared/fixtures/custom-handler/http-trigger.request.docs.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes =
            fs::read(&path).unwrap_or_else(|error| panic!("fixture {path} is readable: {error}"));
        let request: Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
        request["Data"]["req"].clone()
    }

    #[test]
    fn the_documented_http_request_decodes_and_round_trips() {
        let request = HttpRequestData::from_value(&fixture_request()).expect("decodes");
        assert_eq!(request.url(), "http://localhost:7071/api/order");
        assert_eq!(request.method(), "POST");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header_values("Content-Type"), ["application/json"]);
        assert!(request.query().is_empty());
        assert!(request.params().is_empty());
        assert_eq!(
            request.body(),
            Some("{\"id\":1005,\"quantity\":2,\"color\":\"black\"}")
        );
        let serialised = serde_json::to_value(&request).expect("serialises");
        assert_eq!(HttpRequestData::from_value(&serialised), Ok(request));
    }

    #[test]
    fn single_valued_headers_query_and_params_decode() {
        let request = HttpRequestData::from_value(&json!({
            "url": "https://x/api/secrets/db", "method": "get",
            "headers": {"X-ARR-ClientCert": "MIIB", "Accept": ["a", "b"]},
            "query": {"v": "1", "n": 2}, "params": {"name": "db"}, "body": {"a": 1}
        }))
        .expect("decodes");
        assert_eq!(request.method(), "GET");
        assert_eq!(request.header("x-arr-clientcert"), Some("MIIB"));
        assert_eq!(request.header_values("accept"), ["a", "b"]);
        assert_eq!(request.query().get("n").map(String::as_str), Some("2"));
        assert_eq!(request.param("name"), Some("db"));
        assert_eq!(request.body(), Some("{\"a\":1}"));
    }

    #[test]
    fn a_missing_url_is_named() {
        assert_eq!(
            HttpRequestData::from_value(&json!({"Method": "GET"})),
            Err(HttpDataError::MissingField { field: "Url" })
        );
    }

    #[test]
    fn nested_header_values_are_refused() {
        assert_eq!(
            HttpRequestData::from_value(
                &json!({"Url": "u", "Method": "GET", "Headers": {"a": [{"b": 1}]}})
            ),
            Err(HttpDataError::MapShape {
                field: "Headers",
                found: "an object"
            })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,120}") {
            let _ = HttpRequestData::from_value(&Value::String(text.clone()));
            let _ = HttpRequestData::from_value(&json!({"Url": "u", "Method": "GET", "Headers": text.clone(), "Query": text}));
        }
    }
}
