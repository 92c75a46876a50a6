//! Compliance: rules kept as data and mapped to the controls of six frameworks
//! ([`catalogue`]), the thresholds some of them compare against ([`thresholds`]), the
//! register of accepted risks ([`exceptions`]), the engine that checks the inventory and
//! the audit log against them ([`engine`]), and the scores it counts ([`scores`]), spilled
//! to a temporary file past a bound where they would grow with the tenant ([`spill`]).
//!
//! keyturn gathers evidence; it does not certify. A score says how many of the checks
//! keyturn can make passed, not that a framework's requirements are met.

pub mod catalogue;
pub mod engine;
pub mod exceptions;
pub mod report;
pub mod scores;
pub mod spill;
pub mod thresholds;
pub mod trend;

pub use catalogue::{Catalogue, CatalogueError, Rule, Severity, Subject};
pub use engine::{
    AuditInput, ComplianceError, Evaluation, Finding, FindingScope, FindingSink, MalformedTags,
    Report, Status, TagExceptions,
};
pub use exceptions::{
    ExceptionError, MAX_REGISTER_BYTES, REGISTER_FILE_NAME, Register, TAG_EXPIRES, TAG_OWNER,
    TAG_REASON, TAG_RULE,
};
pub use report::Scores;
pub use scores::{ScopeKind, Scoreboard, Tally};
pub use spill::{SPILL_AFTER, ScopeTallies, SpillError};
pub use thresholds::{ThresholdError, Thresholds};
pub use trend::Trend;
