//! Trigger payload types, one module per event source, decoded as tolerantly as the
//! Functions host and Event Grid require (JSON inside strings, either key casing,
//! primitives as strings).

pub mod keyvault;
pub(crate) mod servicebus;
pub(crate) mod timer;
pub(crate) mod tolerant;
pub(crate) mod validation;
