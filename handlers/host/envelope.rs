//! The custom-handler invocation envelopes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("invocation body is not an envelope: {0}")]
    Body(String),
    #[error("binding `{0}` is missing")]
    MissingBinding(String),
    #[error("binding `{name}` does not decode: {problem}")]
    Binding { name: String, problem: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InvocationRequest {
    #[serde(rename = "Data", default)]
    data: Map<String, Value>,
    #[serde(rename = "Metadata", default)]
    metadata: Map<String, Value>,
}

impl InvocationRequest {
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Body(e.to_string()))
    }

    pub fn binding_value(&self, name: &str) -> Result<Value, EnvelopeError> {
        let mut v = self.data.get(name).cloned().ok_or_else(|| EnvelopeError::MissingBinding(name.into()))?;
        for _ in 0..3 {
            match v {
                Value::String(ref s) => match serde_json::from_str::<Value>(s) {
                    Ok(inner) => v = inner,
                    Err(_) => break,
                },
                _ => break,
            }
        }
        Ok(v)
    }

    pub fn binding<T: DeserializeOwned>(&self, name: &str) -> Result<T, EnvelopeError> {
        serde_json::from_value(self.binding_value(name)?).map_err(|e| EnvelopeError::Binding { name: name.into(), problem: e.to_string() })
    }

    pub fn metadata_str(&self, key: &str) -> Option<String> {
        self.metadata.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).and_then(|(_, v)| v.as_str().map(|s| s.trim_matches('"').to_string()))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs")]
    outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    return_value: Option<Value>,
}

impl InvocationResponse {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }
    pub fn return_value(mut self, v: Value) -> Self {
        self.return_value = Some(v);
        self
    }
}
