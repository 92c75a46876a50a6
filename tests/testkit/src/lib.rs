//! Test helpers shared by keyturn's unit tests, `tests/api`, the stand-ins and the
//! benches. This crate depends on nothing of keyturn's, so the library's own unit tests
//! can use it without a second copy of keyturn's types.

pub mod pki;
pub mod transport;
