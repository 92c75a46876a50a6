//! Trigger payload types, one module per event source, decoded as tolerantly as the
//! Functions host and Event Grid require (JSON inside strings, either key casing,
//! primitives as strings).

pub mod keyvault;
pub mod servicebus;
pub mod timer;
pub(crate) mod tolerant;
pub mod validation;
