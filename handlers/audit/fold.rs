//! Folding repeated refusals: within one window, the first refusal of a kind is written
//! as an entry of its own and every repeat of it is only counted; when the window
//! closes, the repeats become one entry whose `count` says exactly how many there were.
//! A kind is everything an entry says apart from its time and invocation id: the actor
//! (the identity, when one was authenticated), the action, the object, the outcome and
//! the reason (which names the step, the reason code and the source address or /64).
//! A flood of refused requests then costs a bounded number of entries a window, and the
//! counts still add up to every refusal made.
//!
//! At most [`MAX_FOLDED_KINDS`] kinds are tracked a window. A refusal of a kind beyond
//! them is folded with every other such refusal of its reason code into one kind per code
//! (naming neither source nor identity), so a client cycling through addresses or names
//! cannot grow the log or the memory held, only the counts.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::ports::audit::{Actor, AuditObject, AuditRecord, AuditText, Outcome};

/// How long a window lasts: repeats are written as one entry at most this long after the
/// first of them. Ten seconds keeps the log close to real time for an operator watching
/// it, while a flood at any rate costs at most 2 x [`MAX_FOLDED_KINDS`] (plus one per
/// reason code) entries per window; a process that dies loses at most this long of
/// repeat counts (the first refusal of each kind is already stored).
pub const FOLD_WINDOW: Duration = Duration::from_secs(10);

/// Kinds tracked per window. A kind costs a few hundred bytes; 256 kinds cover every
/// device of a site refused at once and bound the refusal entries of a window to 512
/// plus one pair per reason code, whatever the flood.
pub const MAX_FOLDED_KINDS: usize = 256;

/// Everything an entry says apart from its time, invocation id and count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    actor: Actor,
    action: AuditText,
    object: AuditObject,
    outcome: Outcome,
    reason: Option<AuditText>,
}

impl Kind {
    fn of(record: &AuditRecord) -> Self {
        Self {
            actor: record.actor.clone(),
            action: record.action.clone(),
            object: record.object.clone(),
            outcome: record.outcome,
            reason: record.reason.clone(),
        }
    }
}

/// What to do with one refusal.
#[derive(Debug)]
pub(crate) enum Folded {
    /// The first of its kind this window: write it now.
    First(Box<AuditRecord>),
    /// A repeat: counted, to be written when the window closes.
    Counted,
}

/// The refusals of the current window.
#[derive(Debug)]
pub(crate) struct Folds {
    max_kinds: usize,
    /// Each kind seen this window, with the first of its repeats (its `count` the
    /// number of repeats so far), or `None` while it has had none.
    open: Mutex<HashMap<Kind, Option<AuditRecord>>>,
}

impl Default for Folds {
    fn default() -> Self {
        Self::new(MAX_FOLDED_KINDS)
    }
}

impl Folds {
    pub(crate) fn new(max_kinds: usize) -> Self {
        Self {
            max_kinds,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts `record`. `overflow` builds the record that stands for it when the window
    /// already tracks as many kinds as it may.
    pub(crate) fn add(
        &self,
        record: AuditRecord,
        overflow: impl FnOnce(&AuditRecord) -> AuditRecord,
    ) -> Folded {
        // The map holds plain records: a poisoned lock cannot hold a torn value.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kind = Kind::of(&record);
        let mut record = record;
        if !open.contains_key(&kind) && open.len() >= self.max_kinds {
            record = overflow(&record);
            kind = Kind::of(&record);
        }
        match open.get_mut(&kind) {
            None => {
                open.insert(kind, None);
                Folded::First(Box::new(record))
            }
            Some(repeats @ None) => {
                *repeats = Some(record);
                Folded::Counted
            }
            Some(Some(first)) => {
                first.count = Some(first.occurrences() + 1);
                Folded::Counted
            }
        }
    }

    /// Closes the window: the entries its repeats stand for (one per kind that had any,
    /// stamped with the first repeat's time), and a fresh window.
    pub(crate) fn close(&self) -> Vec<AuditRecord> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *open).into_values().flatten().collect()
    }
}

/// The record standing for a refusal beyond the tracked kinds: by `function`, naming the
/// reason `code` only.
pub(crate) fn overflow_record(record: &AuditRecord, function: &Actor, code: &str) -> AuditRecord {
    let mut folded = AuditRecord::new(
        record.at,
        function.clone(),
        record.action.clone(),
        record.outcome,
    );
    folded.reason = AuditText::parse(format!(
        "reason={code}; from sources or identities beyond the {MAX_FOLDED_KINDS} a window tracks"
    ))
    .ok();
    folded
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn refusal(source: &str, second: i64) -> AuditRecord {
        let text = |value: &str| AuditText::parse(value).expect("audit text");
        let mut record = AuditRecord::new(
            Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
                .single()
                .expect("time")
                + chrono::Duration::seconds(second),
            Actor::Function(text("SecretEndpoint")),
            text("secret.read"),
            Outcome::Denied,
        );
        record.reason = Some(text(&format!(
            "policy=rate-limit; reason=address_rate_limited; source={source}"
        )));
        record
    }

    fn overflow(record: &AuditRecord) -> AuditRecord {
        let function = Actor::Function(AuditText::parse("SecretEndpoint").expect("text"));
        overflow_record(record, &function, "address_rate_limited")
    }

    #[test]
    fn the_first_of_a_kind_is_written_and_its_repeats_close_as_one_counted_entry() {
        let folds = Folds::new(8);

        let first = folds.add(refusal("192.0.2.1", 0), overflow);
        let repeats: Vec<Folded> = (1..=4)
            .map(|second| folds.add(refusal("192.0.2.1", second), overflow))
            .collect();
        let closed = folds.close();

        assert!(matches!(first, Folded::First(r) if r.count.is_none()));
        assert!(repeats.iter().all(|f| matches!(f, Folded::Counted)));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].count, Some(4));
        assert_eq!(
            closed[0].at,
            refusal("192.0.2.1", 1).at,
            "the first repeat's time"
        );
        assert!(folds.close().is_empty(), "a fresh window");
        assert!(matches!(
            folds.add(refusal("192.0.2.1", 20), overflow),
            Folded::First(_)
        ));
    }

    #[test]
    fn a_single_repeat_is_one_entry_without_a_count() {
        let folds = Folds::new(8);
        folds.add(refusal("192.0.2.1", 0), overflow);
        folds.add(refusal("192.0.2.1", 1), overflow);

        let closed = folds.close();

        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].occurrences(), 1);
    }

    #[test]
    fn kinds_beyond_the_bound_share_one_entry_per_reason_code() {
        let folds = Folds::new(4);
        let mut first = 0;
        for index in 0..1000 {
            if let Folded::First(_) = folds.add(refusal(&format!("192.0.2.{index}"), 0), overflow) {
                first += 1;
            }
        }
        let closed = folds.close();

        // Four tracked sources, each written once; every other refusal is one overflow
        // kind: its first written, the other 995 closed as one entry.
        assert_eq!(first, 5);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].count, Some(995));
        assert!(
            closed[0]
                .reason
                .as_ref()
                .is_some_and(|r| !r.as_str().contains("192.0.2.")),
            "{closed:?}"
        );
    }
}
