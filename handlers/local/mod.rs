//! Local mode (`keyturn dev`): plays the Functions host for keyturn's functions from
//! `host.json` and `function-definitions/`, with embedded backends: the handler runs as the
//! host would start it, the timer fires on its NCRONTAB schedule, events arrive through a
//! loopback Event Grid ingress, and rotation jobs flow through the embedded queue.

pub mod alert_receiver;
pub(crate) mod bootstrap;
pub mod compliance_cli;
pub mod definitions;
pub mod dev;
pub mod directory_cli;
pub mod handler;
pub(crate) mod ingress;
pub mod inventory_cli;
pub(crate) mod pki;
pub mod plan_cli;
pub(crate) mod ports;
pub(crate) mod progress;
pub(crate) mod timer;
pub mod vault_cli;
