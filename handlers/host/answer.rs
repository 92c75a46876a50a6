//! What an HTTP caller is told: the one table from a function's refusal (and the host's
//! own failures) to an HTTP status, a stable error code and a short message. Details
//! stay in the logs and the audit log; this table is all a caller ever sees.

use axum::http::StatusCode;

use crate::functions::secret_endpoint::Refusal;

/// An error answer: status, stable code, short message and, for 429 and 503, the
/// seconds for `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorAnswer {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
    pub retry_after: Option<u64>,
}

impl ErrorAnswer {
    const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
            retry_after: None,
        }
    }

    /// A request the host cannot route: no such function, or one that is not enabled.
    pub(crate) const UNKNOWN_ROUTE: Self = Self::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such function or route",
    );

    /// A failure that trying again cannot fix; the caller learns nothing more.
    pub(crate) const INTERNAL: Self = Self::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request could not be served",
    );

    /// What the secret endpoint's caller is told for `refusal`. A caller who may not read
    /// a name gets the same 403 whether or not the secret exists.
    pub(crate) fn refused(refusal: Refusal) -> Self {
        match refusal {
            Refusal::InvalidName => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_name",
                "secret names are 1-127 letters, digits and hyphens",
            ),
            Refusal::Forbidden => Self::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the caller is not allowed to read this secret",
            ),
            Refusal::CertificateRequired => Self::new(
                StatusCode::UNAUTHORIZED,
                "certificate_required",
                "a client certificate is required",
            ),
            Refusal::CertificateRejected => Self::new(
                StatusCode::FORBIDDEN,
                "certificate_rejected",
                "the client certificate is not accepted",
            ),
            Refusal::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", "no such secret"),
            Refusal::RateLimited { retry_after } => Self {
                retry_after: Some(retry_after),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests; retry later",
                )
            },
            Refusal::FrontEndUnverified => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "front_end_unverified",
                "the endpoint has not verified that its front end requires client certificates",
            ),
            Refusal::Unavailable { retry_after } => Self {
                retry_after,
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "try again later",
                )
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status_and_code() {
        let cases = [
            (Refusal::InvalidName, 400, "invalid_name"),
            (Refusal::Forbidden, 403, "forbidden"),
            (Refusal::CertificateRequired, 401, "certificate_required"),
            (Refusal::CertificateRejected, 403, "certificate_rejected"),
            (Refusal::NotFound, 404, "not_found"),
            (Refusal::RateLimited { retry_after: 7 }, 429, "rate_limited"),
            (
                Refusal::Unavailable { retry_after: None },
                503,
                "unavailable",
            ),
            (Refusal::FrontEndUnverified, 503, "front_end_unverified"),
        ];
        for (refusal, status, code) in cases {
            let answer = ErrorAnswer::refused(refusal);
            assert_eq!(
                (answer.status.as_u16(), answer.code),
                (status, code),
                "{refusal:?}"
            );
        }
    }

    #[test]
    fn only_waits_the_caller_can_act_on_carry_retry_after() {
        assert_eq!(
            ErrorAnswer::refused(Refusal::RateLimited { retry_after: 7 }).retry_after,
            Some(7)
        );
        assert_eq!(
            ErrorAnswer::refused(Refusal::Unavailable {
                retry_after: Some(3)
            })
            .retry_after,
            Some(3)
        );
        assert_eq!(ErrorAnswer::refused(Refusal::Forbidden).retry_after, None);
    }
}
