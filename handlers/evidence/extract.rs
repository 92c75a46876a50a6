//! The audit log's extract for a period, and its verification with nothing but the
//! package and a public key.
//!
//! # What the extract holds
//!
//! For every chain with an entry stamped in the period, the entries at positions
//! `first ..= last`, where
//! - `first` is the position before the chain's first entry stamped in the period (its
//!   link: the entry whose hash the period's first entry points at), or 1;
//! - `last` is the first position at or after the chain's last entry stamped in the
//!   period that a signed checkpoint vouches for, or the chain's head when no checkpoint
//!   does yet. A checkpoint holds the heads of several batches: `last` is the last head
//!   of the checkpoint that holds that first position.
//!
//! Entries between `first` and `last` stamped outside the period (the link, the ones
//! up to the checkpoint, and any whose action happened just before its neighbours') are
//! in the extract because the chain needs them; the populations count only those stamped
//! in the period. Each line is one entry exactly as `keyturn audit export --format json`
//! prints it: its chain, then every field its hash covers.
//!
//! With it go the chain's checkpoints from the one holding the last head at or before
//! `first` to the one holding `last`, one stored line each.
//!
//! # What verifying it proves
//!
//! Recomputing each entry's hash from its fields and following the links proves the
//! extract's entries are unchanged, complete and in order from `first` to `last`. A
//! signed checkpoint at `last` whose head hash is the last entry's hash proves that this
//! very sequence is what the writer had stored when it signed: the hash at `last` commits
//! to every entry before it, back to `first`. Nobody without the signing key can produce
//! another extract that passes. What it cannot prove: that no entry stamped in the period
//! sits outside `first ..= last` (positions are in append order, and the export chose the
//! range from the whole chain; `audit/verify.json` is the whole log's verification at
//! export time).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::anchor::checked::CheckpointIndex;
use crate::audit::entry_hash;
use crate::ports::PortError;
use crate::ports::audit::{
    Actor, AuditEntry, AuditFields, AuditObject, AuditRecord, AuditStore, AuditText, ChainId,
    EntryHash, StoredEntry, parse_audit_time,
};
use crate::ports::checkpoint::{CHECKPOINT_PAGE, PublicKey, SignedCheckpoint};

use super::Period;

/// The extract's entries, one JSON object per line.
pub const ENTRIES: &str = "audit/entries.jsonl";
/// The checkpoints that anchor them, one stored line each.
pub const CHECKPOINTS: &str = "audit/checkpoints.jsonl";
/// The whole log's verification at export time, as `keyturn audit verify` prints it.
pub const VERIFY_REPORT: &str = "audit/verify.json";
/// Each chain's range in the extract.
pub const RANGES: &str = "audit/ranges.json";

/// Positions read per request: flat memory, and under Table storage's 1000-entity page.
const WINDOW: u32 = 500;

/// Longest extract line read back: an entry's 13 text fields hold at most 1 KiB each
/// (the audit log's per-field limit), so 64 KiB takes any real line and stops a garbage
/// file from being read into memory as one line.
const MAX_LINE_BYTES: u64 = 64 * 1024;

/// One chain's part of the extract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRange {
    pub chain: ChainId,
    /// The extract's first position: the link before the period's first entry, or 1.
    pub first: u64,
    /// The first and last positions whose entries are stamped in the period.
    pub period_first: u64,
    pub period_last: u64,
    /// The extract's last position: checkpointed, unless `anchored` is false.
    pub last: u64,
    pub anchored: bool,
    /// Entries stamped in the period.
    pub entries_in_period: u64,
}

/// Where the period lies in the log.
#[derive(Debug, Clone, Default)]
pub struct Located {
    pub ranges: Vec<ChainRange>,
    /// The oldest entry's time over all chains (`None`: the log is empty).
    pub log_begins: Option<DateTime<Utc>>,
}

/// The reader for `chain`: `store` itself when it reads that chain.
pub(crate) fn chain_reader(
    store: &dyn AuditStore,
    chain: &ChainId,
) -> Result<Option<Arc<dyn AuditStore>>, PortError> {
    if *chain == store.chain() {
        return Ok(None);
    }
    store.for_chain(chain).map(Some).ok_or_else(|| {
        PortError::invalid(format!(
            "the store lists chain `{chain}` but cannot read it"
        ))
    })
}

/// Calls `each` with every stored entry at positions `from ..= to`, a window at a time.
pub(crate) async fn walk<E: From<PortError>>(
    store: &dyn AuditStore,
    from: u64,
    to: u64,
    mut each: impl FnMut(&StoredEntry) -> Result<(), E>,
) -> Result<(), E> {
    let mut next = from.max(1);
    while next <= to {
        let page = store.read(next, WINDOW).await?;
        for stored in page.iter().filter(|s| s.position <= to) {
            each(stored)?;
        }
        next = match next.checked_add(u64::from(WINDOW)) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(())
}

/// Finds each chain's range for `period`, reading every chain once from its start (a
/// window at a time: memory stays flat however long the log). `anchors` holds the
/// checkpoints, of which the verified ones vouch for positions.
pub(crate) async fn locate(
    store: &dyn AuditStore,
    period: &Period,
    anchors: &CheckpointIndex,
) -> Result<Located, PortError> {
    let survey = store.survey().await?;
    let mut chains = survey.chains;
    chains.sort();
    let mut located = Located::default();
    for chain in chains {
        let owned = chain_reader(store, &chain)?;
        let reader = owned.as_deref().unwrap_or(store);
        let Some(head) = reader.head().await? else {
            continue;
        };
        let mut found: Option<(u64, u64, u64)> = None;
        let mut begins = None;
        walk::<PortError>(reader, 1, head.position, |stored| {
            let Ok(entry) = &stored.content else {
                return Ok(());
            };
            let at = entry.record.at;
            if begins.is_none_or(|begins| at < begins) {
                begins = Some(at);
            }
            if period.contains(at) {
                found = Some(match found {
                    None => (stored.position, stored.position, 1),
                    Some((first, _, count)) => (first, stored.position, count + 1),
                });
            }
            Ok(())
        })
        .await?;
        if let Some(begins) = begins
            && located.log_begins.is_none_or(|b| begins < b)
        {
            located.log_begins = Some(begins);
        }
        let Some((period_first, period_last, entries_in_period)) = found else {
            continue;
        };
        // The first checkpointed position at or after the period's last entry, carried
        // on to the last head its checkpoint holds (which vouches for the batches between
        // them too), so that every checkpoint the extract's lines hold lies within it.
        let anchor = match anchors.first_verified_from(&chain, period_last)? {
            Some(first) if first <= head.position => Some(
                anchors
                    .line_end_from(&chain, period_last)?
                    .filter(|end| *end <= head.position)
                    .unwrap_or(first),
            ),
            _ => None,
        };
        located.ranges.push(ChainRange {
            chain,
            first: period_first.saturating_sub(1).max(1),
            period_first,
            period_last,
            last: anchor.unwrap_or(head.position),
            anchored: anchor.is_some(),
            entries_in_period,
        });
    }
    Ok(located)
}

/// One line of the extract: the chain, then the entry's fields as the export prints
/// them; an entry that no longer decodes is written as its position and what is wrong.
#[derive(Serialize)]
struct Line<'a> {
    chain: &'a str,
    #[serde(flatten)]
    fields: AuditFields<'a>,
}

/// Writes one stored entry as an extract line.
pub(crate) fn write_line(
    out: &mut dyn Write,
    chain: &ChainId,
    stored: &StoredEntry,
) -> io::Result<()> {
    let json = match &stored.content {
        Ok(entry) => serde_json::to_string(&Line {
            chain: chain.as_str(),
            fields: AuditFields::of(entry),
        })
        .map_err(io::Error::other)?,
        Err(problem) => serde_json::json!({
            "chain": chain.as_str(),
            "sequence": stored.position,
            "unreadable": problem.to_string(),
        })
        .to_string(),
    };
    out.write_all(json.as_bytes())?;
    out.write_all(b"\n")
}

/// Writes the checkpoints a chain's range needs, one stored line each: from the last one
/// at or before `first` to the first one at or after `last`, in stored order, a page at
/// a time. Returns how many; the outer error is the index's, the inner the writer's.
pub(crate) fn write_checkpoints(
    out: &mut dyn Write,
    range: &ChainRange,
    checkpoints: &CheckpointIndex,
) -> Result<io::Result<u64>, PortError> {
    let from = checkpoints
        .last_decoded_to(&range.chain, range.first)?
        .unwrap_or(0);
    let to = checkpoints
        .first_decoded_from(&range.chain, range.last)?
        .unwrap_or(u64::MAX);
    let mut written = 0u64;
    let mut after = 0;
    loop {
        let lines = checkpoints.lines(&range.chain, from, to, after, CHECKPOINT_PAGE)?;
        let Some((last, _)) = lines.last() else {
            return Ok(Ok(written));
        };
        after = *last;
        for (_, line) in &lines {
            if let Err(error) = writeln!(out, "{line}") {
                return Ok(Err(error));
            }
            written += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Verifying an extract

/// An extract line read back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadLine {
    chain: ChainId,
    sequence: u64,
    #[serde(default)]
    unreadable: Option<String>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    actor_kind: Option<String>,
    #[serde(default)]
    actor: Option<AuditText>,
    #[serde(default)]
    action: Option<AuditText>,
    #[serde(default)]
    vault: Option<AuditText>,
    #[serde(default)]
    secret_name: Option<AuditText>,
    #[serde(default)]
    secret_version: Option<AuditText>,
    #[serde(default)]
    app_id: Option<AuditText>,
    #[serde(default)]
    key_id: Option<AuditText>,
    #[serde(default)]
    thumbprint: Option<AuditText>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    reason: Option<AuditText>,
    #[serde(default)]
    invocation_id: Option<AuditText>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    prev_hash: Option<EntryHash>,
    #[serde(default)]
    hash: Option<EntryHash>,
}

impl ReadLine {
    /// The entry the line stands for, or why it stands for none.
    fn entry(self) -> Result<AuditEntry, String> {
        if let Some(problem) = self.unreadable {
            return Err(format!("stored as unreadable ({problem})"));
        }
        let missing = |field: &str| format!("field `{field}` is missing");
        let time = self.time.ok_or_else(|| missing("time"))?;
        let at = parse_audit_time(&time).map_err(|e| e.to_string())?;
        let kind = self.actor_kind.ok_or_else(|| missing("actor_kind"))?;
        let actor = Actor::from_parts(&kind, self.actor.ok_or_else(|| missing("actor"))?)
            .map_err(|e| e.to_string())?;
        let outcome = self
            .outcome
            .ok_or_else(|| missing("outcome"))?
            .parse()
            .map_err(|e: crate::ports::audit::AuditDataError| e.to_string())?;
        let mut record = AuditRecord::new(
            at,
            actor,
            self.action.ok_or_else(|| missing("action"))?,
            outcome,
        );
        record.object = AuditObject {
            vault: self.vault,
            secret_name: self.secret_name,
            secret_version: self.secret_version,
            app_id: self.app_id,
            key_id: self.key_id,
            thumbprint: self.thumbprint,
        };
        record.reason = self.reason;
        record.invocation_id = self.invocation_id;
        record.count = self.count;
        Ok(AuditEntry {
            sequence: self.sequence,
            record,
            prev_hash: self.prev_hash.ok_or_else(|| missing("prev_hash"))?,
            hash: self.hash.ok_or_else(|| missing("hash"))?,
        })
    }
}

/// One chain of a verified extract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainCheck {
    pub chain: ChainId,
    pub first: u64,
    pub last: u64,
    pub entries: u64,
    /// The highest position a signed checkpoint in the package vouches for (0: none).
    pub anchored_to: u64,
    /// Entries after `anchored_to`: not (yet) vouched for by a checkpoint.
    pub unanchored: u64,
}

/// What verifying an extract found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtractReport {
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    pub chains: Vec<ChainCheck>,
    /// Every problem found, each naming the file, the chain and the position.
    pub problems: Vec<String>,
}

impl ExtractReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The chain being walked.
struct Walking {
    chain: ChainId,
    first: u64,
    next: u64,
    last_hash: Option<EntryHash>,
    entries: u64,
    anchored_to: u64,
    broken: bool,
}

/// Verifies an extract: `entries` (the lines of [`ENTRIES`]) against `checkpoints` (the
/// lines of [`CHECKPOINTS`]), each checkpoint's signature checked with `keys` (it
/// verifies when one of them verifies it).
pub fn verify_extract(
    entries: &mut dyn BufRead,
    checkpoints: &mut dyn BufRead,
    keys: &[PublicKey],
) -> io::Result<ExtractReport> {
    let mut report = ExtractReport::default();
    let anchors = read_checkpoints(checkpoints, keys, &mut report)?;
    let mut seen: BTreeSet<ChainId> = BTreeSet::new();
    let mut walking: Option<Walking> = None;
    let mut number = 0u64;
    while let Some(line) = read_line(entries)? {
        number += 1;
        let where_ = format!("{ENTRIES} line {number}");
        let parsed: ReadLine = match serde_json::from_slice(&line) {
            Ok(parsed) => parsed,
            Err(e) => {
                report
                    .problems
                    .push(format!("{where_}: not an extract line ({e})"));
                continue;
            }
        };
        if walking.as_ref().is_none_or(|w| w.chain != parsed.chain) {
            if let Some(done) = walking.take() {
                finish_chain(done, &anchors, &mut report);
            }
            if !seen.insert(parsed.chain.clone()) {
                report.problems.push(format!(
                    "{where_}: chain {} appears again after other chains: the lines were reordered",
                    parsed.chain
                ));
            }
            walking = Some(Walking {
                chain: parsed.chain.clone(),
                first: parsed.sequence,
                next: parsed.sequence,
                last_hash: None,
                entries: 0,
                anchored_to: 0,
                broken: false,
            });
        }
        let w = walking.as_mut().expect("invariant: set just above");
        let sequence = parsed.sequence;
        let at = format!("{where_}: chain {} position {sequence}", w.chain);
        if sequence != w.next {
            report.problems.push(if sequence > w.next {
                format!("{at}: positions {} to {} are missing", w.next, sequence - 1)
            } else {
                format!("{at}: out of order (position {} expected)", w.next)
            });
            w.broken = true;
        }
        w.next = sequence.saturating_add(1);
        let entry = match parsed.entry() {
            Ok(entry) => entry,
            Err(problem) => {
                report.problems.push(format!("{at}: {problem}"));
                w.broken = true;
                w.last_hash = None;
                continue;
            }
        };
        let computed = entry_hash(entry.sequence, &entry.prev_hash, &entry.record);
        if computed != entry.hash {
            report.problems.push(format!(
                "{at}: content was changed (it hashes to {computed}, the line says {})",
                entry.hash
            ));
            w.broken = true;
        }
        let expected_prev = match (w.last_hash, sequence) {
            (Some(hash), _) => Some(hash),
            (None, 1) => Some(EntryHash::GENESIS),
            // The extract's first line links to an entry outside it.
            (None, _) => None,
        };
        if let Some(expected) = expected_prev
            && expected != entry.prev_hash
        {
            report.problems.push(format!(
                "{at}: does not link to the entry before it (that one hashes to {expected}, this one points at {})",
                entry.prev_hash
            ));
            w.broken = true;
        }
        if let Some(checkpoint) = anchors.get(&(w.chain.clone(), sequence)) {
            if checkpoint.head == entry.hash && !w.broken {
                w.anchored_to = sequence;
            } else if checkpoint.head != entry.hash {
                report.problems.push(format!(
                    "{at}: the signed checkpoint at this position says its hash is {}, the extract's entry hashes to {}: the chain was re-hashed after it was signed",
                    checkpoint.head, entry.hash
                ));
            }
        }
        w.last_hash = Some(entry.hash);
        w.entries += 1;
        report.entries_checked += 1;
    }
    if let Some(done) = walking.take() {
        finish_chain(done, &anchors, &mut report);
    }
    Ok(report)
}

fn finish_chain(done: Walking, anchors: &Anchors, report: &mut ExtractReport) {
    let last = done.next.saturating_sub(1);
    // The package holds a chain's checkpoints up to the first one at or after the
    // extract's end: one past the last line means lines were cut off the end.
    let beyond = anchors
        .range((done.chain.clone(), last.saturating_add(1))..)
        .take_while(|((chain, _), _)| *chain == done.chain)
        .map(|((_, position), _)| *position)
        .next();
    if let Some(position) = beyond {
        report.problems.push(format!(
            "{ENTRIES}: chain {} ends at position {last}, before the checkpoint at {position} that should close it: entries were removed from the end",
            done.chain
        ));
    }
    report.chains.push(ChainCheck {
        unanchored: last.saturating_sub(done.anchored_to.max(done.first.saturating_sub(1))),
        chain: done.chain,
        first: done.first,
        last,
        entries: done.entries,
        anchored_to: done.anchored_to,
    });
}

/// A head a verified checkpoint vouches for: its hash, and the position of the head
/// before it (0: none).
#[derive(Debug, Clone, Copy)]
struct Anchored {
    head: EntryHash,
    previous: u64,
}

/// The heads verified checkpoints vouch for, by chain and position.
type Anchors = BTreeMap<(ChainId, u64), Anchored>;

/// Reads the checkpoint lines: the heads of those whose signature one of `keys` verifies,
/// by chain and position; the others are reported. Heads that name a previous one
/// missing from between them are reported too.
fn read_checkpoints(
    lines: &mut dyn BufRead,
    keys: &[PublicKey],
    report: &mut ExtractReport,
) -> io::Result<Anchors> {
    let mut anchors = BTreeMap::new();
    let mut number = 0u64;
    while let Some(line) = read_line(lines)? {
        number += 1;
        let where_ = format!("{CHECKPOINTS} line {number}");
        let text = String::from_utf8_lossy(&line);
        let signed = match SignedCheckpoint::from_line(&text) {
            Ok(signed) => signed,
            Err(problem) => {
                report.problems.push(format!("{where_}: {problem}"));
                continue;
            }
        };
        let bytes = signed.checkpoint.signed_bytes();
        let verified = keys
            .iter()
            .any(|key| key.verifies(signed.signature.algorithm, &bytes, &signed.signature.bytes));
        if !verified {
            report.problems.push(format!(
                "{where_}: the checkpoint of chain {} at position {} does not verify with the public key{} given (signed by {}): forged, changed or signed by another key",
                signed.checkpoint.writer,
                signed.checkpoint.position(),
                if keys.len() == 1 { "" } else { "s" },
                signed.signature.key_id
            ));
            continue;
        }
        report.checkpoints_checked += 1;
        for (previous, head) in signed.checkpoint.links() {
            anchors.insert(
                (signed.checkpoint.writer.clone(), head.position),
                Anchored {
                    head: head.head,
                    previous,
                },
            );
        }
    }
    // Each checkpoint names its writer's previous one (0: the writer's first). One named
    // that lies within the package's checkpoints of the chain but is not among them was
    // removed; one before the first of them predates the extract.
    let mut first_of: BTreeMap<&ChainId, u64> = BTreeMap::new();
    for (chain, position) in anchors.keys() {
        first_of.entry(chain).or_insert(*position);
    }
    for ((chain, position), checkpoint) in &anchors {
        let previous = checkpoint.previous;
        let within = first_of.get(chain).is_some_and(|first| previous >= *first);
        if previous != 0 && within && !anchors.contains_key(&(chain.clone(), previous)) {
            report.problems.push(format!(
                "{CHECKPOINTS}: chain {chain}'s checkpoint at position {position} names the one at {previous} as the one before it, which is not in the package: a checkpoint was removed"
            ));
        }
    }
    Ok(anchors)
}

/// The next line without its line feed; `None` at the end. A line longer than
/// [`MAX_LINE_BYTES`] is an error.
fn read_line(input: &mut dyn BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let read = (&mut *input)
        .take(MAX_LINE_BYTES + 1)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() as u64 > MAX_LINE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a line is longer than {MAX_LINE_BYTES} bytes"),
        ));
    }
    Ok(Some(line))
}
