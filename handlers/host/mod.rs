//! The Functions custom-handler protocol.
