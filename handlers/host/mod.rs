//! The Functions custom-handler protocol: envelopes, the axum router, and the mapping from
//! a function's outcome to the answer the host expects.

pub mod answer;
pub mod envelope;
pub mod outcome;
pub mod router;
pub mod server;
pub mod tls;
