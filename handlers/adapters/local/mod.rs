//! The embedded store used by local mode and tests: one SQLite file.

pub mod audit;
pub mod store;
