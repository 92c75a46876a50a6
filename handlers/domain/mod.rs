//! Newtypes that parse, and time arithmetic on a passed-in clock. Imports nothing internal.

pub mod clock;
pub mod dn;
pub mod identity;
pub mod ids;
pub mod names;
pub mod ncrontab;
pub mod resources;
pub mod secret;
pub mod thumbprint;
