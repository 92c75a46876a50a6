//! The Functions custom-handler protocol: envelopes, the axum router, the mapping from a
//! function's outcome to the answer the host expects (`outcome`), and the HTTP answer to
//! each refusal (`answer`).

pub(crate) mod answer;
pub mod envelope;
pub(crate) mod outcome;
pub mod router;
pub mod server;
pub mod tls;
