//! mtls: client-certificate extraction and validation policies.
