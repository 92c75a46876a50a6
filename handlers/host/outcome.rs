//! What a function's result means for the Functions host: the one place where errors
//! are classified. The table in `docs/outcomes.md` describes what this code does.

use std::time::Duration;

use crate::functions::FunctionError;
use crate::ports::{FailureKind, PortError};

/// The host-facing meaning of a function's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Fail the invocation (non-2xx) so the trigger delivers again: Service Bus abandons
    /// and redelivers (dead-lettering after the queue's maxDeliveryCount), Event Grid
    /// retries on its policy, the timer's retry policy runs again.
    Retry { after: Option<Duration> },
    /// Trying again cannot help: record and audit the failure, then answer 2xx so the
    /// message is completed instead of burning every delivery attempt.
    Permanent { code: &'static str },
}

/// Classifies a function's failure: the one decision every trigger's answer follows.
pub(crate) fn classify(error: &FunctionError) -> Disposition {
    match error {
        FunctionError::BadInput(_) => Disposition::Permanent { code: "bad_input" },
        FunctionError::Port(e) => classify_port(e),
    }
}

/// Classifies a port failure. Every function's error type reduces to this.
pub(crate) fn classify_port(error: &PortError) -> Disposition {
    match &error.kind {
        FailureKind::Transient { retry_after } => Disposition::Retry {
            after: *retry_after,
        },
        // A lost race (ETag, duplicate key) resolves itself on the next delivery, which
        // re-reads current state first.
        FailureKind::Conflict => Disposition::Retry { after: None },
        FailureKind::PermissionDenied { .. } => Disposition::Permanent {
            code: "permission_denied",
        },
        FailureKind::NetworkRefused { .. } => Disposition::Permanent {
            code: "network_refused",
        },
        FailureKind::NotFound => Disposition::Permanent { code: "not_found" },
        FailureKind::PolicyViolation { .. } => Disposition::Permanent {
            code: "policy_violation",
        },
        FailureKind::Invalid => Disposition::Permanent { code: "invalid" },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_input_is_permanent() {
        let e = FunctionError::BadInput("not JSON".into());
        assert_eq!(classify(&e), Disposition::Permanent { code: "bad_input" });
    }

    #[test]
    fn each_failure_kind_has_one_disposition() {
        let after = Some(Duration::from_secs(7));
        let cases = [
            (
                FailureKind::Transient { retry_after: after },
                Disposition::Retry { after },
            ),
            (FailureKind::Conflict, Disposition::Retry { after: None }),
            (
                FailureKind::PermissionDenied {
                    missing: "Key Vault Secrets Officer".into(),
                },
                Disposition::Permanent {
                    code: "permission_denied",
                },
            ),
            (
                FailureKind::NotFound,
                Disposition::Permanent { code: "not_found" },
            ),
            (
                FailureKind::NetworkRefused {
                    code: "ForbiddenByFirewall".into(),
                },
                Disposition::Permanent {
                    code: "network_refused",
                },
            ),
            (
                FailureKind::PolicyViolation {
                    code: "CredentialInvalidLifetimeAsPerAppPolicy".into(),
                },
                Disposition::Permanent {
                    code: "policy_violation",
                },
            ),
            (
                FailureKind::Invalid,
                Disposition::Permanent { code: "invalid" },
            ),
        ];
        for (kind, expected) in cases {
            assert_eq!(
                classify_port(&PortError::new(kind.clone(), "test")),
                expected,
                "{kind:?}"
            );
        }
    }
}
