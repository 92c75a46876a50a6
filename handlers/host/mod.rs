//! The Functions custom-handler protocol.

pub mod envelope;
