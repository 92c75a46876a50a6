//! Alerts that reach a credential's owner in time: the channels alerts go out on
//! ([`routes`]), and (on the inventory) thresholds, routing to owners, a ledger that
//! remembers what was sent, and the periodic digest.

pub mod engine;
pub mod message;
pub mod routes;
pub mod routing;
pub mod thresholds;
pub mod throttle;
