//! Newtypes that parse, time arithmetic on a passed-in clock, the identity of an
//! authenticated client (shared by `mtls` and `access`), RFC 4514 names and Key Vault's
//! limits. Imports nothing internal.

pub mod clock;
pub mod compliance;
pub mod contact;
pub(crate) mod dn;
pub(crate) mod file;
pub(crate) mod function;
pub mod identity;
pub mod ids;
pub mod inventory;
pub mod limits;
pub mod names;
pub mod ncrontab;
pub(crate) mod resources;
pub mod secret;
pub mod thumbprint;
