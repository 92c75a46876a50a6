//! `SecretEndpoint`: `GET /api/secrets/{name}` for devices authenticated by their client
//! certificate. The name is validated before anything else happens; a caller is served
//! only when every configured certificate policy accepts it and the access policy grants
//! the name. With no certificate policy configured, every request is refused: an endpoint
//! that trusts nobody is the safe default.

use crate::domain::names::ObjectName;
use crate::domain::secret::SecretValue;
use crate::functions::{Context, FunctionError};
use crate::ports::audit::{AuditObject, AuditText, Outcome};

pub const NAME: &str = "SecretEndpoint";

/// A refusal the caller sees: a status and a stable code, never internals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

impl Refusal {
    pub const INVALID_NAME: Refusal = Refusal {
        status: 400,
        code: "invalid_name",
        message: "secret names are 1-127 letters, digits and hyphens",
    };
    pub const NO_POLICY: Refusal = Refusal {
        status: 403,
        code: "forbidden",
        message: "the caller is not allowed to read this secret",
    };
}

/// A secret to hand to an authorized caller. The value is written into the response body
/// at the HTTP edge and nowhere else.
#[derive(Debug)]
pub struct Delivered {
    pub name: ObjectName,
    pub value: SecretValue,
    pub version: Option<String>,
    pub content_type: Option<String>,
    /// RFC 3339.
    pub expires_on: Option<String>,
}

/// Either a refusal (audited here) or a failure of a port.
#[derive(Debug)]
pub enum EndpointError {
    Refused(Refusal),
    Failed(FunctionError),
}

impl From<FunctionError> for EndpointError {
    fn from(e: FunctionError) -> Self {
        Self::Failed(e)
    }
}

pub async fn run(ctx: &Context, raw_name: &str) -> Result<Delivered, EndpointError> {
    let Ok(name) = ObjectName::parse(raw_name) else {
        // The raw name is not audited: it failed validation and may be anything.
        ctx.audit("secret.read", AuditObject::default(), Outcome::Denied, Some(Refusal::INVALID_NAME.code))
            .await?;
        return Err(EndpointError::Refused(Refusal::INVALID_NAME));
    };
    let object = AuditObject {
        secret_name: AuditText::parse(name.to_string()).ok(),
        ..AuditObject::default()
    };
    ctx.audit("secret.read", object, Outcome::Denied, Some("no_certificate_policy_configured"))
        .await?;
    Err(EndpointError::Refused(Refusal::NO_POLICY))
}
