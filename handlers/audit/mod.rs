//! The append-only audit log: sealing records into a SHA-256 hash chain, appending them
//! without forking the chain, and verifying a stored chain link by link. Entries are
//! built in one place, [`scope`]: the closed set of [`Action`]s and the [`AuditScope`]
//! (log, actor, invocation id) an invocation hands whoever writes on its behalf.
//!
//! # The chain
//!
//! Entry `n` (sequence numbers start at 1) stores the hash of entry `n - 1` as its
//! previous hash; the first entry's previous hash is 32 zero bytes. An entry's hash is
//! `SHA-256(canonical_encoding(entry))`, where the canonical encoding is the
//! concatenation of:
//!
//! 1. the 16 ASCII bytes `keyturn-audit-v1` (the format's name and version);
//! 2. the sequence number as an unsigned 64-bit big-endian integer (8 bytes);
//! 3. the previous hash, 32 raw bytes;
//! 4. these fields, in this order, each encoded as one byte `0x00` when absent, or
//!    `0x01` followed by the UTF-8 byte length as an unsigned 64-bit big-endian integer
//!    followed by the UTF-8 bytes when present:
//!    `time`, `actor_kind`, `actor`, `action`, `vault`, `secret_name`,
//!    `secret_version`, `app_id`, `key_id`, `thumbprint`, `outcome`, `reason`,
//!    `invocation_id`;
//! 5. only when at least one of them is present, the extension fields, in this order,
//!    encoded like the fields of 4: `count` (the folded count as ASCII decimal digits,
//!    at least `2`). An entry without extension fields encodes exactly as it did before
//!    they existed, so stored chains keep their hashes; an entry with them cannot share
//!    an encoding with one without, as the 13 fields of 4 are self-delimiting.
//!
//! `time` is RFC 3339 in UTC with exactly nine fractional digits and a trailing `Z`
//! (`2025-03-01T12:00:00.000000000Z`); `actor_kind` is `function` or `identity`;
//! `outcome` is `succeeded`, `failed`, `denied` or `skipped`. `time`, `actor_kind`,
//! `actor`, `action` and `outcome` are always present. Hashes are written as 64 lowercase
//! hex digits. Length prefixes make the encoding unambiguous: no two different entries
//! share an encoding, whatever bytes their fields hold. The JSON that
//! `keyturn audit verify` prints, or any export of the stored entries, carries every
//! field needed to recompute each hash with nothing but a SHA-256 implementation.
//!
//! # Appending
//!
//! An append reads the head, seals the record as head + 1 and asks the store to keep it
//! at exactly that position. Stores refuse with a conflict when another writer got there
//! first; the append then starts again from the new head. No two entries can ever claim
//! the same position, so concurrent writers interleave but never fork the chain.
//!
//! # What verification cannot see
//!
//! A chain proves that nothing inside it was changed, removed or reordered. Removing
//! entries from the end leaves a shorter, valid chain: compare the reported head
//! (sequence and hash) with a copy kept elsewhere to detect that.

use std::collections::VecDeque;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod anchor;
pub mod export;
pub(crate) mod fold;
pub(crate) mod scope;

pub use anchor::{Anchor, ChainReport, LocatedBreak, LogReport, verify_log};
pub use fold::{FOLD_WINDOW, MAX_FOLDED_KINDS};
pub use scope::{Action, AuditScope};

use futures::FutureExt;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::ports::audit::{
    AuditDataError, AuditEntry, AuditRecord, AuditStore, EntryHash, StoredEntry, format_audit_time,
};
use crate::ports::{FailureKind, PortError};

pub use crate::ports::audit::{Actor, AuditText, Outcome};

/// The first bytes of every canonical encoding: the format's name and version, so a
/// future encoding can never produce the same hash input as this one.
pub(crate) const CANONICAL_ENCODING_TAG: &[u8; 16] = b"keyturn-audit-v1";

/// How many times an append starts over after losing a race for the next position.
/// Each loss means another writer succeeded, so a writer only keeps losing while others
/// keep winning. Concurrency is bounded by the Functions host (Service Bus
/// `maxConcurrentCalls` defaults to 16 per instance) and one invocation writes a handful
/// of entries; 64 rounds outlasts any burst of that size, while a writer that still loses
/// after 64 rounds is better off failing the invocation and being redelivered.
pub(crate) const MAX_APPEND_ATTEMPTS: u32 = 64;

/// Upper bound of the random pause after a lost race, in milliseconds. A few
/// milliseconds is one store round trip on SQLite and a fraction of one on Table storage:
/// enough to let the winner's neighbours through without slowing the common case.
const MAX_BACKOFF_MILLIS: u64 = 20;

/// How many positions verification reads per request: small enough to keep memory flat
/// for long logs, and under Table storage's 1000-entity page so one window is usually
/// one round trip.
const VERIFY_WINDOW: u32 = 500;

/// What went wrong while appending to or verifying the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A field of an entry being built is not audit text.
    #[error("audit {field}: {source}")]
    Text {
        field: &'static str,
        #[source]
        source: AuditDataError,
    },
    #[error("audit store failed while {operation}: {source}")]
    Store {
        operation: &'static str,
        #[source]
        source: PortError,
    },
    #[error("gave up appending after {attempts} attempts lost the race for the next position")]
    Contended { attempts: u32 },
    #[error(
        "the newest audit entry (position {position}) is unreadable or misplaced; run `keyturn audit verify`"
    )]
    CorruptHead { position: u64 },
    /// The public key a checkpoint names cannot be read (not: there is no such key).
    #[error("cannot read the public key {key_id}: {source}")]
    Key {
        key_id: String,
        #[source]
        source: PortError,
    },
    #[error("the audit log is full: sequence numbers are exhausted")]
    SequenceExhausted,
    /// The writer ended without answering (it panicked); the entry may or may not be
    /// stored.
    #[error("the audit append was abandoned before it was answered")]
    Abandoned,
    /// The writer is not running (its thread could not start, or it ended): nothing
    /// can be appended.
    #[error("the audit writer is not running")]
    WriterStopped,
    /// The writer's thread or its runtime could not be created.
    #[error("the audit writer could not start: {problem}")]
    WriterNotStarted { problem: String },
}

impl AuditError {
    /// The shared failure vocabulary, so whoever failed to audit is classified like any
    /// other port failure.
    pub(crate) fn kind(&self) -> FailureKind {
        match self {
            Self::Store { source, .. } => source.kind.clone(),
            // Many appenders raced and this one kept losing: the next delivery will win.
            Self::Contended { .. } => FailureKind::Conflict,
            // Nothing was refused: the write may succeed on a later delivery or request.
            Self::Abandoned | Self::WriterStopped => FailureKind::Transient { retry_after: None },
            // A damaged chain is not repaired by retrying; an operator must look. The host
            // then fails to record the failure too, so the invocation is retried rather
            // than completed unrecorded.
            _ => FailureKind::Invalid,
        }
    }
}

impl From<AuditError> for PortError {
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::Store { source, .. } => source,
            other => PortError::new(other.kind(), other.to_string()),
        }
    }
}

/// Seals `record` as entry `sequence` following an entry whose hash is `prev_hash`.
pub(crate) fn seal(sequence: u64, prev_hash: EntryHash, record: AuditRecord) -> AuditEntry {
    let hash = entry_hash(sequence, &prev_hash, &record);
    AuditEntry {
        sequence,
        record,
        prev_hash,
        hash,
    }
}

/// The hash an entry with this content must carry.
pub fn entry_hash(sequence: u64, prev_hash: &EntryHash, record: &AuditRecord) -> EntryHash {
    let digest = Sha256::digest(canonical_encoding(sequence, prev_hash, record));
    EntryHash::from_bytes(digest.into())
}

/// The bytes that are hashed, exactly as the module documentation specifies.
pub(crate) fn canonical_encoding(
    sequence: u64,
    prev_hash: &EntryHash,
    record: &AuditRecord,
) -> Vec<u8> {
    let object = &record.object;
    let time = format_audit_time(&record.at);
    let fields: [Option<&str>; 13] = [
        Some(&time),
        Some(record.actor.kind()),
        Some(record.actor.name().as_str()),
        Some(record.action.as_str()),
        object.vault.as_ref().map(AuditText::as_str),
        object.secret_name.as_ref().map(AuditText::as_str),
        object.secret_version.as_ref().map(AuditText::as_str),
        object.app_id.as_ref().map(AuditText::as_str),
        object.key_id.as_ref().map(AuditText::as_str),
        object.thumbprint.as_ref().map(AuditText::as_str),
        Some(record.outcome.as_str()),
        record.reason.as_ref().map(AuditText::as_str),
        record.invocation_id.as_ref().map(AuditText::as_str),
    ];
    let count = record.count.map(|count| count.to_string());
    let extensions: [Option<&str>; 1] = [count.as_deref()];
    let mut bytes = Vec::with_capacity(256);
    bytes.extend_from_slice(CANONICAL_ENCODING_TAG);
    bytes.extend_from_slice(&sequence.to_be_bytes());
    bytes.extend_from_slice(prev_hash.as_bytes());
    let extended = extensions.iter().any(Option::is_some);
    let written = fields.iter().chain(extensions.iter().filter(|_| extended));
    for field in written {
        match field {
            None => bytes.push(0),
            Some(text) => {
                bytes.push(1);
                bytes.extend_from_slice(&(text.len() as u64).to_be_bytes());
                bytes.extend_from_slice(text.as_bytes());
            }
        }
    }
    bytes
}

/// The audit log every feature writes to. Cheap to clone: clones share one store and
/// one writer.
///
/// The writer has two lanes. Appends (a grant, a rotation step: anything a caller waits
/// on before acting) go first; refusals ([`AuditLog::refuse`]) are folded
/// ([`fold`]) and what is left of them rides in the room a write has after the appends
/// waiting for it, so no flood of refusals ever delays a grant's entry by a write.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Arc<dyn AuditStore>,
    writer: mpsc::Sender<Waiting>,
    refusals: mpsc::Sender<Waiting>,
    folds: Arc<fold::Folds>,
    closes: mpsc::Sender<oneshot::Sender<()>>,
}

/// Refusals queued for the writer. Only the first of each kind a window is queued (at
/// most 2 x [`fold::MAX_FOLDED_KINDS`] plus one per reason code a window), so this is
/// room to spare.
const MAX_QUEUED_REFUSALS: usize = 4096;

/// Folded entries of closed windows kept for writing while the store refuses them: at
/// most a few hundred a window, so this holds over an hour of windows before the oldest
/// counts are given up (and an error says how many).
const MAX_HELD_REPEATS: usize = 65_536;

/// What the writer takes in: the two lanes, the window's folds and requests to close
/// the window at once.
struct Intake {
    appends: mpsc::Receiver<Waiting>,
    refusals: mpsc::Receiver<Waiting>,
    folds: Arc<fold::Folds>,
    closes: mpsc::Receiver<oneshot::Sender<()>>,
}

/// Appends queued for the writer, at most this many at once; a caller finding the queue
/// full waits for room. Every queued append has a caller waiting for its answer, so the
/// queue holds at most one entry per request in flight: the bound only stops a flood of
/// requests from growing memory without limit while the store is slow.
const MAX_QUEUED_APPENDS: usize = 16_384;

/// The last entry this process stored: the next sequence and the hash it links to.
#[derive(Debug, Clone, Copy)]
struct KnownHead {
    next: u64,
    hash: EntryHash,
}

#[derive(Debug)]
struct Waiting {
    record: AuditRecord,
    answer: oneshot::Sender<Result<AuditEntry, AuditError>>,
}

impl AuditLog {
    /// A log over `store`, with its writer: a thread of its own that takes every append
    /// queued since its last write, seals them in arrival order and stores them in one
    /// write (up to the store's batch size), then starts the next write at once.
    ///
    /// Why a thread and not a task: each write's cycle (store, answer, take the next
    /// batch) must not wait in the request runtime's run queues behind the requests it
    /// holds up. Measured with `benches/endpoint.rs`, a writer driven from the request
    /// runtime spent more of each cycle waiting to be scheduled than writing.
    ///
    /// Fails only when the operating system will not give the writer a thread or the
    /// thread its runtime (descriptors or threads exhausted): a process that cannot
    /// audit must not start.
    pub(crate) fn start(store: Arc<dyn AuditStore>) -> Result<Self, AuditError> {
        Self::start_anchored(store, None)
    }

    /// [`AuditLog::start`] with every stored batch anchored: once a batch is stored and
    /// its appends answered, the checkpoint writer (a thread of its own, see [`anchor`])
    /// signs a checkpoint of the chain's new head and appends it to the checkpoint store
    /// together with any others waiting, while the writer goes on storing batches. So a
    /// batch's checkpoint costs its appends no wait, and at most
    /// `UNANCHORED_BATCHES` (64) batches are ever stored without one: while that many
    /// wait, the writer stores no further batch.
    pub fn start_anchored(
        store: Arc<dyn AuditStore>,
        anchor: Option<Anchor>,
    ) -> Result<Self, AuditError> {
        let (writer, appends) = mpsc::channel(MAX_QUEUED_APPENDS);
        let (refusals, refused) = mpsc::channel(MAX_QUEUED_REFUSALS);
        let (closes, close_requests) = mpsc::channel(16);
        let folds = Arc::new(fold::Folds::default());
        let intake = Intake {
            appends,
            refusals: refused,
            folds: folds.clone(),
            closes: close_requests,
        };
        let anchoring = anchor
            .map(|anchor| anchor::CheckpointWriter::start(anchor, store.chain()))
            .transpose()?;
        spawn_with_runtime(
            "keyturn-audit",
            write_batches(store.clone(), anchoring, intake),
        )?;
        Ok(Self {
            store,
            writer,
            refusals,
            folds,
            closes,
        })
    }

    /// [`AuditLog::start`] for callers that cannot report a failure to start (tests,
    /// benches, tools): such a log answers every append [`AuditError::WriterStopped`].
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        match Self::start(store.clone()) {
            Ok(log) => log,
            Err(error) => {
                tracing::error!(%error, "the audit log cannot write");
                let (writer, _) = mpsc::channel(1);
                let (refusals, _) = mpsc::channel(1);
                let (closes, _) = mpsc::channel(1);
                Self {
                    store,
                    writer,
                    refusals,
                    folds: Arc::default(),
                    closes,
                }
            }
        }
    }

    /// Seals `record` as the next entry and stores it, starting over (up to
    /// [`MAX_APPEND_ATTEMPTS`] times) when another writer takes the position first.
    /// Returns once the entry is stored. Appends made at the same time in this process
    /// are sealed in arrival order and stored together. A caller that stops waiting
    /// does not withdraw its entry: once queued, it is written.
    pub async fn append(&self, record: AuditRecord) -> Result<AuditEntry, AuditError> {
        let (answer, answered) = oneshot::channel();
        self.writer
            .send(Waiting { record, answer })
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        answered.await.unwrap_or(Err(AuditError::Abandoned))
    }

    /// Records a refusal, folded ([`fold`]): the first of its kind this window is
    /// written (in the refusals' lane) before this returns; a repeat is only counted, and
    /// returns at once, to be written with its kind's count when the window closes.
    /// `overflow` builds the record standing for it when the window tracks as many kinds
    /// as it may.
    pub(crate) async fn refuse(
        &self,
        record: AuditRecord,
        overflow: impl FnOnce(&AuditRecord) -> AuditRecord,
    ) -> Result<(), AuditError> {
        let fold::Folded::First(record) = self.folds.add(record, overflow) else {
            return Ok(());
        };
        let (answer, answered) = oneshot::channel();
        self.refusals
            .send(Waiting {
                record: *record,
                answer,
            })
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        answered
            .await
            .unwrap_or(Err(AuditError::Abandoned))
            .map(|_| ())
    }

    /// Closes the refusals' window now rather than at its end, and returns once the
    /// entries of its repeats are stored and every batch stored so far is anchored (its
    /// checkpoint written): for shutdown, and for tests that read the checkpoints.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (done, finished) = oneshot::channel();
        self.closes
            .send(done)
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        finished.await.map_err(|_| AuditError::Abandoned)
    }

    /// The stored entries at positions `from .. from + count`, in order, as the store
    /// holds them (for export and display; [`AuditLog::verify`] judges them).
    pub async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, AuditError> {
        self.store
            .read(from, count)
            .await
            .map_err(store("reading entries"))
    }

    /// Walks the whole chain; see [`verify`].
    pub async fn verify(&self) -> Result<VerifyReport, AuditError> {
        verify(self.store.as_ref()).await
    }
}

/// Runs `work` to its end on a thread called `name` with a single-threaded runtime of
/// its own; returns once the thread runs. Fails only when the operating system will not
/// give it a thread or the thread its runtime.
fn spawn_with_runtime(
    name: &str,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AuditError> {
    let (ready, started) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    let _ = ready.send(Ok(()));
                    runtime.block_on(work);
                }
                Err(error) => {
                    let _ = ready.send(Err(error.to_string()));
                }
            }
        })
        .map_err(|error| AuditError::WriterNotStarted {
            problem: error.to_string(),
        })?;
    match started.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(problem)) => Err(AuditError::WriterNotStarted { problem }),
        Err(_) => Err(AuditError::WriterNotStarted {
            problem: format!("the {name} thread ended before it was ready"),
        }),
    }
}

/// The writer's loop: until every clone of the log is gone, write what is waiting, at
/// most the store's batch size at a time: appends first, then the first refusals of
/// their kinds, then the counted repeats of closed windows, each only in the room the
/// ones before left. The writer remembers the head it last stored and seals the next
/// batch after it without reading the store again; should another writer (another
/// process) have appended in between, the store refuses the position and the head is
/// read afresh.
async fn write_batches(
    store: Arc<dyn AuditStore>,
    anchoring: Option<anchor::CheckpointWriter>,
    mut intake: Intake,
) {
    let limit = store.max_batch().max(1);
    let mut known = None;
    let mut batch = Vec::with_capacity(limit);
    let mut refused = Vec::with_capacity(limit);
    // Folded entries of closed windows not yet stored, and who waits for them.
    let mut repeats: VecDeque<AuditRecord> = VecDeque::new();
    let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
    // After the store refused repeats, they wait for the next window before retrying.
    let mut holding = false;
    let mut window = tokio::time::interval_at(
        tokio::time::Instant::now() + fold::FOLD_WINDOW,
        fold::FOLD_WINDOW,
    );
    window.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    loop {
        if open && (repeats.is_empty() || holding) {
            tokio::select! {
                biased;
                taken = intake.appends.recv_many(&mut batch, limit) => open = taken > 0,
                taken = intake.refusals.recv_many(&mut refused, limit) => open = taken > 0,
                _ = window.tick() => {
                    repeats.extend(intake.folds.close());
                    holding = false;
                }
                Some(done) = intake.closes.recv() => {
                    repeats.extend(intake.folds.close());
                    closing.push(done);
                    holding = false;
                }
            }
        }
        if !open {
            repeats.extend(intake.folds.close());
        }
        // Room for this batch's checkpoint, taken before the batch is gathered: while
        // as many batches as may wait for their checkpoints do, appends queue up and
        // go in this batch.
        let room = match &anchoring {
            Some(anchoring) => Some(anchoring.room().await),
            None => None,
        };
        batch.append(&mut refused);
        top_up(&mut batch, &mut intake.appends, limit);
        top_up(&mut batch, &mut intake.refusals, limit);
        let mut riding = Vec::new();
        while batch.len() < limit && !holding {
            let Some(record) = repeats.pop_front() else {
                break;
            };
            let (answer, stored) = oneshot::channel();
            riding.push((record.clone(), stored));
            batch.push(Waiting { record, answer });
        }
        if batch.is_empty() {
            drop(room);
            // Nothing to write: every closed window is stored, unless the store refused
            // some of it and it waits for the next window.
            if repeats.is_empty() {
                if !closing.is_empty()
                    && let Some(anchoring) = &anchoring
                {
                    anchoring.settle().await;
                }
                for done in closing.drain(..) {
                    let _ = done.send(());
                }
            }
            if !open {
                break;
            }
            continue;
        }
        // Checkpoints of earlier batches are written while this batch is stored.
        let written = write_batch(store.as_ref(), std::mem::take(&mut batch), &mut known);
        // A store that panics fails its own batch (every append in it is answered
        // `Abandoned` as its answer is dropped), not the writer: later appends are
        // still written, after the head read afresh.
        match AssertUnwindSafe(written).catch_unwind().await {
            Ok(Some(head)) => {
                if let (Some(anchoring), Some(room)) = (&anchoring, room) {
                    anchoring.begin(room, head.sequence, head.hash);
                }
            }
            // Nothing stored, nothing to anchor: the room is given back.
            Ok(None) => drop(room),
            Err(_) => {
                drop(room);
                tracing::error!("the audit store panicked while writing a batch");
                known = None;
            }
        }
        // Repeats the store did not take go back, in order, for the next window.
        for (record, mut stored) in riding.into_iter().rev() {
            if !matches!(stored.try_recv(), Ok(Ok(_))) {
                repeats.push_front(record);
                holding = true;
            }
        }
        if holding {
            let lost = repeats.len().saturating_sub(MAX_HELD_REPEATS);
            if lost > 0 || !open {
                let lost = if open { lost } else { repeats.len() };
                let occurrences: u64 = repeats.iter().take(lost).map(|r| r.occurrences()).sum();
                tracing::error!(
                    entries = lost,
                    occurrences,
                    "the audit store refuses folded refusal counts; giving up the oldest"
                );
                repeats.drain(..lost);
            }
        }
        if repeats.is_empty() {
            // Whoever waits for the window to close also waits for its anchoring.
            if !closing.is_empty()
                && let Some(anchoring) = &anchoring
            {
                anchoring.settle().await;
            }
            for done in closing.drain(..) {
                let _ = done.send(());
            }
        }
    }
    if let Some(anchoring) = &anchoring {
        anchoring.settle().await;
    }
}

/// Moves what `lane` holds into `batch` without waiting, up to `limit` in all.
fn top_up(batch: &mut Vec<Waiting>, lane: &mut mpsc::Receiver<Waiting>, limit: usize) {
    while batch.len() < limit {
        match lane.try_recv() {
            Ok(waiting) => batch.push(waiting),
            Err(_) => break,
        }
    }
}

/// Seals `batch` after the stored head and stores it in one write, starting over from
/// the new head when another writer got there first; answers every waiting append.
/// Returns the last entry stored, the chain's new head, when the batch was stored.
async fn write_batch(
    store: &dyn AuditStore,
    batch: Vec<Waiting>,
    known: &mut Option<KnownHead>,
) -> Option<StoredHead> {
    if batch.is_empty() {
        return None;
    }
    // Whatever happens below, only a successful write leaves a head to trust.
    let mut start = known.take();
    let failure = 'attempts: {
        for attempt in 1..=MAX_APPEND_ATTEMPTS {
            let (first, prev_hash) = match start.take() {
                Some(head) => (head.next, head.hash),
                None => match store.head().await {
                    Ok(None) => (1, EntryHash::GENESIS),
                    Ok(Some(StoredEntry {
                        position,
                        content: Ok(head),
                    })) if head.sequence == position => match position.checked_add(1) {
                        Some(next) => (next, head.hash),
                        None => break 'attempts Failure::SequenceExhausted,
                    },
                    Ok(Some(StoredEntry { position, .. })) => {
                        break 'attempts Failure::CorruptHead(position);
                    }
                    Err(error) => break 'attempts Failure::Store("reading the head", error),
                },
            };
            let mut entries = Vec::with_capacity(batch.len());
            let mut prev_hash = prev_hash;
            for (offset, waiting) in batch.iter().enumerate() {
                let Some(sequence) = u64::try_from(offset)
                    .ok()
                    .and_then(|offset| first.checked_add(offset))
                else {
                    break 'attempts Failure::SequenceExhausted;
                };
                let entry = seal(sequence, prev_hash, waiting.record.clone());
                prev_hash = entry.hash;
                entries.push(entry);
            }
            let stored = match store.append_all(&entries).await {
                Ok(()) => true,
                // A write the transport retried after its first try was stored (the
                // answer lost on the way back) is refused as a conflict with itself;
                // sealing the batch again would store every entry twice.
                Err(error) if error.kind == FailureKind::Conflict => {
                    already_stored(store, &entries).await
                }
                Err(error) => break 'attempts Failure::Store("appending an entry", error),
            };
            if stored {
                *known = entries.last().and_then(|last| {
                    Some(KnownHead {
                        next: last.sequence.checked_add(1)?,
                        hash: last.hash,
                    })
                });
                let head = entries.last().map(|last| StoredHead {
                    sequence: last.sequence,
                    hash: last.hash,
                });
                for (waiting, entry) in batch.into_iter().zip(entries) {
                    let _ = waiting.answer.send(Ok(entry));
                }
                return head;
            }
            tracing::debug!(first, attempt, "audit append lost the race; retrying");
            let pause = rand::thread_rng().gen_range(0..=MAX_BACKOFF_MILLIS);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        Failure::Contended
    };
    for waiting in batch {
        let _ = waiting.answer.send(Err(failure.to_error()));
    }
    None
}

/// The last entry of a stored batch.
struct StoredHead {
    sequence: u64,
    hash: EntryHash,
}

/// Whether the store holds exactly `entries` at their positions: the same hashes, so the
/// same content after the same predecessors. Another writer's entries never match, as
/// their records differ; a store that cannot be read counts as not holding them.
async fn already_stored(store: &dyn AuditStore, entries: &[AuditEntry]) -> bool {
    let (Some(first), Ok(count)) = (entries.first(), u32::try_from(entries.len())) else {
        return false;
    };
    match store.read(first.sequence, count).await {
        Ok(stored) => {
            stored.len() == entries.len()
                && stored.iter().zip(entries).all(|(stored, entry)| {
                    stored.position == entry.sequence
                        && stored
                            .content
                            .as_ref()
                            .is_ok_and(|found| found.hash == entry.hash)
                })
        }
        Err(_) => false,
    }
}

/// Why a batch was not stored; every append in it gets its own [`AuditError`].
enum Failure {
    Store(&'static str, PortError),
    SequenceExhausted,
    CorruptHead(u64),
    Contended,
}

impl Failure {
    fn to_error(&self) -> AuditError {
        match self {
            Self::Store(operation, source) => AuditError::Store {
                operation,
                source: source.clone(),
            },
            Self::SequenceExhausted => AuditError::SequenceExhausted,
            Self::CorruptHead(position) => AuditError::CorruptHead {
                position: *position,
            },
            Self::Contended => AuditError::Contended {
                attempts: MAX_APPEND_ATTEMPTS,
            },
        }
    }
}

fn store(operation: &'static str) -> impl Fn(PortError) -> AuditError {
    move |source| AuditError::Store { operation, source }
}

/// The result of walking a chain. The log is intact when `first_break` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries that passed every check before the walk ended.
    pub entries_checked: u64,
    /// The newest stored entry, to compare with a copy kept elsewhere.
    pub head: Option<ChainHead>,
    /// The lowest position where the chain breaks.
    pub first_break: Option<ChainBreak>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// The newest entry as the store reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub sequence: u64,
    pub hash: Option<EntryHash>,
}

/// Where the chain breaks and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The position (sequence number) of the first entry that fails a check.
    pub sequence: u64,
    pub problem: BreakKind,
}

/// What is wrong at a break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakKind {
    /// The entry's content no longer hashes to its stored hash: it was edited.
    ContentHashMismatch {
        stored: EntryHash,
        computed: EntryHash,
    },
    /// The entry does not point at the entry before it: that one was edited and
    /// re-hashed, or replaced.
    PreviousHashMismatch {
        expected: EntryHash,
        found: EntryHash,
    },
    /// Nothing is stored here, yet later entries exist: entries were deleted.
    /// `next_present` is the next stored position when it lies within the same read
    /// window; `None` when the whole window after the gap is empty.
    Missing { next_present: Option<u64> },
    /// The entry stored here carries another sequence number: entries were moved.
    OutOfOrder { found: u64 },
    /// The stored data here no longer decodes.
    Unreadable { problem: String },
    /// A signed checkpoint names a position past the chain's head: entries were
    /// removed from the end.
    Truncated {
        checkpoint_position: u64,
        location: String,
    },
    /// A signed checkpoint's head hash is not the hash stored at its position: the chain
    /// was edited and re-hashed after the fact, somewhere from this position up to the
    /// checkpoint's.
    CheckpointMismatch {
        checkpoint_position: u64,
        location: String,
        anchored: EntryHash,
        stored: Option<EntryHash>,
    },
    /// A checkpoint that should be there is not: another one names it as its previous,
    /// or more entries follow the last checkpoint than the batches a writer may leave
    /// unanchored hold.
    CheckpointMissing { position: u64, named_by: String },
    /// A checkpoint's signature does not verify with the public key: forged, changed,
    /// or signed by another key; or it names a key outside the audit signing key
    /// (`outside_of`: the key its id should be a version of), whatever its signature.
    CheckpointForged {
        location: String,
        position: u64,
        key_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        outside_of: Option<String>,
    },
    /// A checkpoint names a key no available public key matches (`looked_in`: the
    /// given keys, or Key Vault): a key version is missing from those given, or the
    /// checkpoint names a version that never existed.
    CheckpointKeyUnknown {
        location: String,
        position: u64,
        key_id: String,
        looked_in: String,
    },
    /// A checkpoint's key was not read, so its signature was not checked (`reason`:
    /// why, and what verifies it): neither verified nor forged.
    CheckpointUnverifiable {
        location: String,
        position: u64,
        key_id: String,
        reason: String,
    },
    /// A stored checkpoint does not decode (garbage, or a line cut short).
    CheckpointUnreadable { location: String, problem: String },
    /// A row that is no entry at a position sits among the entries.
    ForeignRow { location: String },
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_break {
            None => write!(
                f,
                "audit chain intact: {} entries verified",
                self.entries_checked
            )?,
            Some(ChainBreak { sequence, problem }) => {
                describe_break(f, *sequence, problem)?;
                write!(f, "; {} entries before it verified", self.entries_checked)?;
            }
        }
        if let Some(head) = &self.head {
            write!(f, "; head is sequence {}", head.sequence)?;
            if let Some(hash) = &head.hash {
                write!(f, " with hash {hash}")?;
            }
        }
        Ok(())
    }
}

/// "audit chain BROKEN at sequence N: what is wrong".
pub(crate) fn describe_break(
    f: &mut fmt::Formatter<'_>,
    sequence: u64,
    problem: &BreakKind,
) -> fmt::Result {
    write!(f, "audit chain BROKEN at sequence {sequence}: ")?;
    match problem {
        BreakKind::ContentHashMismatch { stored, computed } => write!(
            f,
            "content was changed (stored hash {stored}, content hashes to {computed})"
        ),
        BreakKind::PreviousHashMismatch { expected, found } => write!(
            f,
            "link to the previous entry is broken (previous entry hashes to {expected}, this entry points at {found})"
        ),
        BreakKind::Missing {
            next_present: Some(next),
        } => write!(f, "entries {sequence} to {} are missing", next - 1),
        BreakKind::Missing { next_present: None } => write!(
            f,
            "entry {sequence} and the {VERIFY_WINDOW} positions after it are missing"
        ),
        BreakKind::OutOfOrder { found } => write!(
            f,
            "the entry stored here claims sequence {found} (entries were reordered)"
        ),
        BreakKind::Unreadable { problem } => write!(f, "stored entry is unreadable ({problem})"),
        BreakKind::Truncated {
            checkpoint_position,
            location,
        } => write!(
            f,
            "entries were removed from the end (the checkpoint at {location} vouches for position {checkpoint_position})"
        ),
        BreakKind::CheckpointMismatch {
            checkpoint_position,
            location,
            anchored,
            stored,
        } => {
            write!(
                f,
                "the chain was rewritten (the checkpoint at {location} signed hash {anchored} for position {checkpoint_position}, the store holds "
            )?;
            match stored {
                Some(stored) => write!(f, "{stored})"),
                None => write!(f, "no readable entry there)"),
            }
        }
        BreakKind::CheckpointMissing { position, named_by } => write!(
            f,
            "the checkpoint for position {position} is missing ({named_by})"
        ),
        BreakKind::CheckpointForged {
            location,
            position,
            key_id,
            outside_of: None,
        } => write!(
            f,
            "the checkpoint at {location} (position {position}, key {key_id}) does not verify with the public key"
        ),
        BreakKind::CheckpointForged {
            location,
            position,
            key_id,
            outside_of: Some(expected),
        } => write!(
            f,
            "the checkpoint at {location} (position {position}) is forged: it names key {key_id}, which is no version of the audit signing key {expected}"
        ),
        BreakKind::CheckpointKeyUnknown {
            location,
            position,
            key_id,
            looked_in,
        } => write!(
            f,
            "the checkpoint at {location} (position {position}) is signed by key {key_id}, which no public key in {looked_in} matches"
        ),
        BreakKind::CheckpointUnverifiable {
            location,
            position,
            key_id,
            reason,
        } => write!(
            f,
            "the checkpoint at {location} (position {position}, key {key_id}) cannot be verified: {reason}"
        ),
        BreakKind::CheckpointUnreadable { location, problem } => {
            write!(f, "the checkpoint at {location} is unreadable ({problem})")
        }
        BreakKind::ForeignRow { location } => write!(
            f,
            "a row that is no audit entry sits among the entries ({location})"
        ),
    }
}

/// Walks the chain in `store` from the first position to the head and reports the
/// first broken link. Store failures are errors; damage to the chain is a report.
pub(crate) async fn verify(store: &dyn AuditStore) -> Result<VerifyReport, AuditError> {
    let head = store
        .head()
        .await
        .map_err(self::store("reading the head"))?;
    let Some(head) = head else {
        return Ok(VerifyReport {
            entries_checked: 0,
            head: None,
            first_break: None,
        });
    };
    let mut walk = Walk {
        expected: 1,
        prev_hash: EntryHash::GENESIS,
        checked: 0,
    };
    let report = |walk: &Walk, first_break| VerifyReport {
        entries_checked: walk.checked,
        head: Some(ChainHead {
            sequence: head.position,
            hash: head.content.as_ref().ok().map(|entry| entry.hash),
        }),
        first_break,
    };
    let mut from = 1u64;
    while from <= head.position {
        let window = store
            .read(from, VERIFY_WINDOW)
            .await
            .map_err(self::store("reading entries"))?;
        if window.is_empty() {
            // Skipping ahead to the next stored entry would need a scan the stores do not
            // offer; the first missing position is what matters.
            let found = ChainBreak {
                sequence: walk.expected,
                problem: BreakKind::Missing { next_present: None },
            };
            return Ok(report(&walk, Some(found)));
        }
        for stored in &window {
            if let Some(found) = walk.check(stored) {
                return Ok(report(&walk, Some(found)));
            }
        }
        from = match from.checked_add(u64::from(VERIFY_WINDOW)) {
            Some(next) => next,
            None => break,
        };
    }
    // The head itself was read separately; if the windows stopped short of it the store
    // lost entries between the two reads or the head sits beyond the last window.
    if walk.expected <= head.position {
        let found = ChainBreak {
            sequence: walk.expected,
            problem: BreakKind::Missing {
                next_present: Some(head.position),
            },
        };
        return Ok(report(&walk, Some(found)));
    }
    Ok(report(&walk, None))
}

struct Walk {
    expected: u64,
    prev_hash: EntryHash,
    checked: u64,
}

impl Walk {
    fn check(&mut self, stored: &StoredEntry) -> Option<ChainBreak> {
        let at = |sequence, problem| Some(ChainBreak { sequence, problem });
        if stored.position > self.expected {
            return at(
                self.expected,
                BreakKind::Missing {
                    next_present: Some(stored.position),
                },
            );
        }
        if stored.position < self.expected {
            return at(
                self.expected,
                BreakKind::OutOfOrder {
                    found: stored.position,
                },
            );
        }
        let entry = match &stored.content {
            Ok(entry) => entry,
            Err(problem) => {
                return at(
                    stored.position,
                    BreakKind::Unreadable {
                        problem: problem.to_string(),
                    },
                );
            }
        };
        if entry.sequence != stored.position {
            return at(
                stored.position,
                BreakKind::OutOfOrder {
                    found: entry.sequence,
                },
            );
        }
        let computed = entry_hash(entry.sequence, &entry.prev_hash, &entry.record);
        if computed != entry.hash {
            return at(
                stored.position,
                BreakKind::ContentHashMismatch {
                    stored: entry.hash,
                    computed,
                },
            );
        }
        if entry.prev_hash != self.prev_hash {
            return at(
                stored.position,
                BreakKind::PreviousHashMismatch {
                    expected: self.prev_hash,
                    found: entry.prev_hash,
                },
            );
        }
        self.prev_hash = entry.hash;
        self.expected = self.expected.saturating_add(1);
        self.checked += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use chrono::{DateTime, TimeZone, Utc};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::domain::secret::SecretValue;

    fn text(value: &str) -> AuditText {
        AuditText::parse(value).expect("test text is valid")
    }

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
            .single()
            .expect("a valid fixed time")
            + chrono::Duration::seconds(i64::from(second))
    }

    fn rotation_record(second: u32) -> AuditRecord {
        let mut record = AuditRecord::new(
            at(second),
            Actor::Function(text("RotationWorker")),
            text("secret.rotate"),
            Outcome::Succeeded,
        );
        record.object.vault = Some(text("kv-prod"));
        record.object.secret_name = Some(text("db-password"));
        record.object.secret_version = Some(text("0123456789abcdef0123456789abcdef"));
        record.invocation_id = Some(text("5f0c0d4e-2f35-4f1a-9f3e-8a7f0b6c1d2e"));
        record
    }

    /// A store in memory, used only to exercise the chain logic without I/O; the real
    /// adapters run the same scenarios in the integration tests.
    #[derive(Debug, Default)]
    struct MemoryStore {
        entries: Mutex<BTreeMap<u64, AuditEntry>>,
    }

    #[async_trait]
    impl AuditStore for MemoryStore {
        async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
            let entries = self.entries.lock().expect("test lock is never poisoned");
            Ok(entries
                .iter()
                .next_back()
                .map(|(position, entry)| StoredEntry {
                    position: *position,
                    content: Ok(entry.clone()),
                }))
        }

        async fn append(&self, entry: &AuditEntry) -> Result<(), PortError> {
            let mut entries = self.entries.lock().expect("test lock is never poisoned");
            if entries.contains_key(&entry.sequence) {
                return Err(PortError::new(FailureKind::Conflict, "position taken"));
            }
            entries.insert(entry.sequence, entry.clone());
            Ok(())
        }

        async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError> {
            let entries = self.entries.lock().expect("test lock is never poisoned");
            Ok(entries
                .range(from..from.saturating_add(u64::from(count)))
                .map(|(position, entry)| StoredEntry {
                    position: *position,
                    content: Ok(entry.clone()),
                })
                .collect())
        }
    }

    async fn log_with(count: u32) -> (Arc<MemoryStore>, AuditLog) {
        let store = Arc::new(MemoryStore::default());
        let log = AuditLog::new(store.clone());
        for second in 0..count {
            log.append(rotation_record(second))
                .await
                .expect("append to memory store");
        }
        (store, log)
    }

    #[test]
    fn an_independent_implementation_of_the_documented_encoding_agrees() {
        let record = rotation_record(7);
        let prev = EntryHash::from_bytes([0xab; 32]);

        let mut expected = Vec::new();
        expected.extend_from_slice(b"keyturn-audit-v1");
        expected.extend_from_slice(&42u64.to_be_bytes());
        expected.extend_from_slice(&[0xab; 32]);
        let present = |bytes: &mut Vec<u8>, value: &str| {
            bytes.push(1);
            bytes.extend_from_slice(&(value.len() as u64).to_be_bytes());
            bytes.extend_from_slice(value.as_bytes());
        };
        present(&mut expected, "2025-03-01T12:00:07.000000000Z");
        present(&mut expected, "function");
        present(&mut expected, "RotationWorker");
        present(&mut expected, "secret.rotate");
        present(&mut expected, "kv-prod");
        present(&mut expected, "db-password");
        present(&mut expected, "0123456789abcdef0123456789abcdef");
        expected.extend_from_slice(&[0, 0, 0]);
        present(&mut expected, "succeeded");
        expected.push(0);
        present(&mut expected, "5f0c0d4e-2f35-4f1a-9f3e-8a7f0b6c1d2e");

        assert_eq!(canonical_encoding(42, &prev, &record), expected);
        let digest: [u8; 32] = Sha256::digest(&expected).into();
        assert_eq!(
            entry_hash(42, &prev, &record),
            EntryHash::from_bytes(digest)
        );
    }

    #[test]
    fn a_folded_count_is_an_extension_field_after_the_thirteen() {
        let single = rotation_record(7);
        let mut folded = single.clone();
        folded.count = Some(12);
        let prev = EntryHash::from_bytes([0xab; 32]);

        let mut expected = canonical_encoding(42, &prev, &single);
        expected.push(1);
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(b"12");

        assert_eq!(canonical_encoding(42, &prev, &folded), expected);
        assert_ne!(
            entry_hash(42, &prev, &folded),
            entry_hash(42, &prev, &single)
        );
    }

    #[tokio::test]
    async fn an_edited_count_breaks_the_chain() {
        let (store, log) = log_with(0).await;
        let mut record = rotation_record(0);
        record.count = Some(100_000);
        log.append(record).await.expect("append");
        store
            .entries
            .lock()
            .expect("test lock")
            .get_mut(&1)
            .expect("entry 1 exists")
            .record
            .count = Some(3);

        let report = log.verify().await.expect("verify");

        assert!(matches!(
            report.first_break.map(|b| b.problem),
            Some(BreakKind::ContentHashMismatch { .. })
        ));
    }

    #[test]
    fn moving_text_between_fields_changes_the_hash() {
        let mut first = rotation_record(0);
        first.object.vault = Some(text("kv"));
        first.object.secret_name = Some(text("prod"));
        let mut second = rotation_record(0);
        second.object.vault = Some(text("kvp"));
        second.object.secret_name = Some(text("rod"));
        let mut third = rotation_record(0);
        third.object.vault = None;
        third.object.secret_name = Some(text("kvprod"));

        let hashes = [&first, &second, &third].map(|r| entry_hash(1, &EntryHash::GENESIS, r));
        assert_ne!(hashes[0], hashes[1]);
        assert_ne!(hashes[0], hashes[2]);
        assert_ne!(hashes[1], hashes[2]);
    }

    #[tokio::test]
    async fn appended_entries_form_a_chain_from_a_zero_genesis() {
        let (_store, log) = log_with(0).await;

        let first = log.append(rotation_record(0)).await.expect("first append");
        let second = log.append(rotation_record(1)).await.expect("second append");

        assert_eq!((first.sequence, second.sequence), (1, 2));
        assert_eq!(first.prev_hash, EntryHash::GENESIS);
        assert_eq!(second.prev_hash, first.hash);
        assert_eq!(first.record, rotation_record(0));
        let report = log.verify().await.expect("verify");
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries_checked, 2);
        assert_eq!(
            report.head,
            Some(ChainHead {
                sequence: 2,
                hash: Some(second.hash)
            })
        );
    }

    #[tokio::test]
    async fn verification_walks_past_the_first_read_window() {
        let (store, log) = log_with(VERIFY_WINDOW * 2 + 10).await;
        let late = u64::from(VERIFY_WINDOW) * 2 + 3;
        store
            .entries
            .lock()
            .expect("test lock")
            .get_mut(&late)
            .expect("entry exists")
            .record
            .outcome = Outcome::Denied;

        let report = log.verify().await.expect("verify");

        assert_eq!(report.first_break.map(|b| b.sequence), Some(late));
        assert_eq!(report.entries_checked, late - 1);
    }

    fn refusal(second: u32) -> AuditRecord {
        let mut record = rotation_record(second);
        record.action = text("secret.read");
        record.outcome = Outcome::Denied;
        record.invocation_id = Some(text(&format!("request-{second}")));
        record
    }

    #[tokio::test]
    async fn refusals_write_the_first_of_a_kind_and_fold_its_repeats_when_the_window_closes() {
        let (store, log) = log_with(0).await;
        log.flush().await.expect("closing an empty window returns");

        for second in 0..5 {
            log.refuse(refusal(second), |r| r.clone())
                .await
                .expect("refused");
        }
        let before_close = store.entries.lock().expect("test lock").len();
        log.flush().await.expect("window closes");

        let entries: Vec<AuditEntry> = store
            .entries
            .lock()
            .expect("test lock")
            .values()
            .cloned()
            .collect();
        assert_eq!(before_close, 1, "only the first is written at once");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].record.count, None);
        assert_eq!(entries[0].record.at, at(0));
        assert_eq!(entries[1].record.count, Some(4));
        assert_eq!(entries[1].record.at, at(1), "stamped with the first repeat");
        let report = log.verify().await.expect("verify");
        assert!(report.is_intact(), "{report}");
    }

    #[tokio::test]
    async fn refusals_wait_behind_appends_in_one_write() {
        let store = GatedStore::closed();
        let log = AuditLog::new(store.clone());
        let first = spawn_append(&log, 0);
        store.until_writes_begun(1).await;
        let refused = {
            let log = log.clone();
            tokio::spawn(async move { log.refuse(refusal(1), |r| r.clone()).await })
        };
        eventually(|| MAX_QUEUED_REFUSALS - log.refusals.capacity() >= 1).await;
        let granted = spawn_append(&log, 2);
        eventually(|| queued(&log) >= 1).await;

        store.gate.add_permits(2);
        first.await.expect("task").expect("first append");
        let granted = granted.await.expect("task").expect("queued append");
        refused.await.expect("task").expect("refusal");

        let stored = store.inner.entries.lock().expect("test lock").clone();
        let refusal_at = stored
            .values()
            .find(|e| e.record.outcome == Outcome::Denied)
            .map(|e| e.sequence);
        assert!(
            refusal_at > Some(granted.sequence),
            "the append queued after the refusal is written ahead of it"
        );
    }

    #[tokio::test]
    async fn an_empty_log_verifies_with_no_head() {
        let (_store, log) = log_with(0).await;
        let report = log.verify().await.expect("verify");
        assert_eq!(
            report,
            VerifyReport {
                entries_checked: 0,
                head: None,
                first_break: None
            }
        );
    }

    #[tokio::test]
    async fn chain_breaks_where_an_edited_entry_was_rehashed() {
        let (store, log) = log_with(5).await;
        {
            let mut entries = store.entries.lock().expect("test lock");
            let entry = entries.get_mut(&3).expect("entry 3 exists");
            entry.record.outcome = Outcome::Failed;
            entry.hash = entry_hash(3, &entry.prev_hash, &entry.record);
        }

        let report = log.verify().await.expect("verify");

        let found = report.first_break.expect("the rehashed edit is detected");
        assert_eq!(found.sequence, 4);
        assert!(matches!(
            found.problem,
            BreakKind::PreviousHashMismatch { .. }
        ));
        assert_eq!(report.entries_checked, 3);
    }

    #[tokio::test]
    async fn chain_breaks_when_the_first_entry_is_deleted() {
        let (store, log) = log_with(3).await;
        store.entries.lock().expect("test lock").remove(&1);

        let report = log.verify().await.expect("verify");

        assert_eq!(
            report.first_break,
            Some(ChainBreak {
                sequence: 1,
                problem: BreakKind::Missing {
                    next_present: Some(2)
                }
            })
        );
    }

    #[tokio::test]
    async fn report_serialises_as_json_and_reads_as_a_sentence() {
        let (store, log) = log_with(2).await;
        store
            .entries
            .lock()
            .expect("test lock")
            .get_mut(&2)
            .expect("entry 2 exists")
            .record
            .action = text("secret.delete");

        let report = log.verify().await.expect("verify");

        let json = serde_json::to_value(&report).expect("report serialises");
        assert_eq!(json["first_break"]["sequence"], 2);
        assert_eq!(
            json["first_break"]["problem"]["kind"],
            "content_hash_mismatch"
        );
        let sentence = report.to_string();
        assert!(sentence.contains("BROKEN at sequence 2"), "{sentence}");
        assert!(sentence.contains("content was changed"), "{sentence}");
    }

    #[tokio::test]
    async fn an_append_refuses_to_continue_from_a_misplaced_head() {
        let (store, _) = log_with(2).await;
        {
            let mut entries = store.entries.lock().expect("test lock");
            let moved = entries.remove(&2).expect("entry 2 exists");
            entries.insert(7, moved);
        }
        // A writer that reads the head (a process starting, or one whose remembered
        // head was refused).
        let log = AuditLog::new(store.clone());

        let error = log
            .append(rotation_record(9))
            .await
            .expect_err("head is misplaced");

        assert!(
            matches!(error, AuditError::CorruptHead { position: 7 }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_writer_whose_remembered_head_went_stale_continues_from_the_stored_one() {
        let (store, first) = log_with(1).await;
        let second = AuditLog::new(store.clone());
        for round in 0..3 {
            second
                .append(rotation_record(10 + round))
                .await
                .expect("the other writer appends");
            // `first` remembers the head it wrote; the store refuses that position and
            // the append starts again from the stored head.
            first
                .append(rotation_record(20 + round))
                .await
                .expect("the stale writer appends after the others");
        }
        let report = first.verify().await.expect("verify");
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries_checked, 7);
    }

    /// A store whose writes each wait for a permit, so a test can queue appends behind
    /// a write in progress; it counts the writes begun.
    #[derive(Debug)]
    struct GatedStore {
        inner: MemoryStore,
        begun: AtomicUsize,
        gate: tokio::sync::Semaphore,
    }

    impl GatedStore {
        fn closed() -> Arc<Self> {
            Arc::new(Self {
                inner: MemoryStore::default(),
                begun: AtomicUsize::new(0),
                gate: tokio::sync::Semaphore::new(0),
            })
        }

        async fn until_writes_begun(&self, count: usize) {
            eventually(|| self.begun.load(Ordering::SeqCst) >= count).await;
        }
    }

    #[async_trait]
    impl AuditStore for GatedStore {
        async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
            self.inner.head().await
        }

        async fn append(&self, entry: &AuditEntry) -> Result<(), PortError> {
            self.append_all(std::slice::from_ref(entry)).await
        }

        fn max_batch(&self) -> usize {
            64
        }

        async fn append_all(&self, entries: &[AuditEntry]) -> Result<(), PortError> {
            self.begun.fetch_add(1, Ordering::SeqCst);
            self.gate
                .acquire()
                .await
                .expect("the test never closes the gate")
                .forget();
            for entry in entries {
                self.inner.append(entry).await?;
            }
            Ok(())
        }

        async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError> {
            self.inner.read(from, count).await
        }
    }

    /// Checkpoints whose writes each wait for a permit, so a test can hold one in flight;
    /// it keeps the checkpoints of each write together, so a test sees which were
    /// written at once (one write: one sync of the local file, one blob append block).
    #[derive(Debug)]
    struct GatedCheckpoints {
        writes: Mutex<Vec<Vec<crate::ports::checkpoint::SignedCheckpoint>>>,
        begun: AtomicUsize,
        gate: tokio::sync::Semaphore,
    }

    impl GatedCheckpoints {
        fn closed() -> Arc<Self> {
            Arc::new(Self {
                writes: Mutex::default(),
                begun: AtomicUsize::new(0),
                gate: tokio::sync::Semaphore::new(0),
            })
        }

        /// The (position, previous) pairs of the heads the stored checkpoints hold, one
        /// list per write, in the order written.
        fn writes(&self) -> Vec<Vec<(u64, u64)>> {
            let writes = self.writes.lock().expect("test lock is never poisoned");
            writes
                .iter()
                .map(|write| {
                    write
                        .iter()
                        .flat_map(|s| s.checkpoint.links())
                        .map(|(previous, head)| (head.position, previous))
                        .collect()
                })
                .collect()
        }

        /// How many signed checkpoints each write stored.
        fn signed_per_write(&self) -> Vec<usize> {
            let writes = self.writes.lock().expect("test lock is never poisoned");
            writes.iter().map(Vec::len).collect()
        }
    }

    #[async_trait]
    impl crate::ports::checkpoint::CheckpointStore for GatedCheckpoints {
        async fn append_all(
            &self,
            checkpoints: &[crate::ports::checkpoint::SignedCheckpoint],
        ) -> Result<(), PortError> {
            self.begun.fetch_add(1, Ordering::SeqCst);
            self.gate
                .acquire()
                .await
                .expect("the test never closes the gate")
                .forget();
            self.writes
                .lock()
                .expect("test lock is never poisoned")
                .push(checkpoints.to_vec());
            Ok(())
        }

        async fn pages(
            &self,
            page: usize,
        ) -> Result<Box<dyn crate::ports::checkpoint::CheckpointPages + '_>, PortError> {
            let writes = self.writes.lock().expect("test lock is never poisoned");
            let stored = writes
                .iter()
                .flatten()
                .enumerate()
                .map(
                    |(line, signed)| crate::ports::checkpoint::StoredCheckpoint {
                        location: format!("line {}", line + 1),
                        content: Ok(signed.clone()),
                    },
                )
                .collect();
            Ok(Box::new(crate::ports::checkpoint::PagesOf::new(
                stored, page,
            )))
        }
    }

    /// A real Ed25519 key in a temporary directory.
    fn signing_key(
        dir: &tempfile::TempDir,
    ) -> Arc<crate::adapters::local::anchor::LocalSigningKey> {
        Arc::new(
            crate::adapters::local::anchor::LocalSigningKey::load_or_create(
                &dir.path().join("audit-signing.key"),
            )
            .expect("a key is created"),
        )
    }

    /// A log over a memory store (one entry per batch) anchored in `checkpoints`.
    fn anchored_log(
        checkpoints: &Arc<GatedCheckpoints>,
        dir: &tempfile::TempDir,
    ) -> (
        Arc<MemoryStore>,
        Arc<crate::adapters::local::anchor::LocalSigningKey>,
        AuditLog,
    ) {
        let store = Arc::new(MemoryStore::default());
        let signer = signing_key(dir);
        let anchor = anchor::Anchor {
            checkpoints: checkpoints.clone(),
            signer: signer.clone(),
        };
        let log = AuditLog::start_anchored(store.clone(), Some(anchor)).expect("the writer starts");
        (store, signer, log)
    }

    /// Appends `record`, failing the test if it is not answered within 10 s.
    async fn answered(log: &AuditLog, second: u32) -> AuditEntry {
        tokio::time::timeout(Duration::from_secs(10), log.append(rotation_record(second)))
            .await
            .expect("answered without waiting for a checkpoint")
            .expect("stored")
    }

    #[tokio::test]
    async fn a_batch_is_answered_before_its_checkpoint_is_written_and_checkpoints_waiting_together_are_written_in_one_write()
     {
        let checkpoints = GatedCheckpoints::closed();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (store, signer, log) = anchored_log(&checkpoints, &dir);

        // The first batch is answered while its checkpoint is still being written.
        let first = answered(&log, 1).await;
        eventually(|| checkpoints.begun.load(Ordering::SeqCst) == 1).await;
        // Four more batches are stored and answered meanwhile, their checkpoints waiting.
        for second in 2..=5 {
            let entry = answered(&log, second).await;
            assert_eq!(entry.sequence, u64::from(second));
        }
        assert_eq!(first.sequence, 1);
        assert!(checkpoints.writes().is_empty());

        // Once the first write is done, the four waiting are written in one write, in
        // batch order, each naming the one before, under one signature.
        checkpoints.gate.add_permits(2);
        let flushed = tokio::spawn({
            let log = log.clone();
            async move { log.flush().await }
        });
        flushed.await.expect("joins").expect("flushed");
        assert_eq!(
            checkpoints.writes(),
            vec![vec![(1, 0)], vec![(2, 1), (3, 2), (4, 3), (5, 4)]]
        );
        assert_eq!(
            checkpoints.signed_per_write(),
            vec![1, 1],
            "one signed checkpoint per write"
        );
        assert_eq!(
            checkpoints.begun.load(Ordering::SeqCst),
            2,
            "two writes in all"
        );
        let public = signer.public().clone();
        let report = anchor::verify_log(store.as_ref(), Some(checkpoints.as_ref()), Some(&public))
            .await
            .expect("verifies");
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.unanchored, 0, "{report}");
        assert_eq!(report.chains[0].anchored_to, 5, "{report}");
        assert_eq!(
            report.checkpoints_checked, 2,
            "two signed checkpoints hold the five batches' heads: {report}"
        );
    }

    #[tokio::test]
    async fn no_batch_is_stored_while_as_many_batches_as_may_wait_for_their_checkpoints_do() {
        let checkpoints = GatedCheckpoints::closed();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (store, _signer, log) = anchored_log(&checkpoints, &dir);
        let most = u32::try_from(anchor::UNANCHORED_BATCHES).expect("a small bound");

        // The first checkpoint's write is held; batches go on being stored and answered
        // until `most` of them wait for their checkpoints.
        answered(&log, 1).await;
        eventually(|| checkpoints.begun.load(Ordering::SeqCst) == 1).await;
        for second in 2..=most {
            answered(&log, second).await;
        }
        let next = spawn_append(&log, most + 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !next.is_finished(),
            "one batch more waits for a checkpoint to be written"
        );
        assert_eq!(
            store.entries.lock().expect("test lock").len(),
            most as usize
        );

        // Once the first checkpoint is written, the waiting batch is stored.
        checkpoints.gate.add_permits(1);
        let next = next.await.expect("joins").expect("answered");
        assert_eq!(next.sequence, u64::from(most) + 1);
        checkpoints.gate.add_permits(2);
        log.flush().await.expect("flushed");
        let written: Vec<u64> = checkpoints
            .writes()
            .into_iter()
            .flatten()
            .map(|(position, _)| position)
            .collect();
        assert_eq!(written, (1..=u64::from(most) + 1).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn as_many_batches_as_may_wait_past_the_last_checkpoint_are_a_writer_in_flight_and_one_more_is_a_lost_checkpoint()
     {
        let checkpoints = GatedCheckpoints::closed();
        checkpoints.gate.add_permits(1);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (store, signer, anchored) = anchored_log(&checkpoints, &dir);
        anchored.append(rotation_record(1)).await.expect("answered");
        anchored.flush().await.expect("anchored");
        // Entries stored without checkpoints, as by a writer stopped with its
        // checkpoints waiting (this store's batches hold one entry).
        let unanchored = AuditLog::new(store.clone());
        let public = signer.public().clone();
        let verify =
            || anchor::verify_log(store.as_ref(), Some(checkpoints.as_ref()), Some(&public));
        let most = u32::try_from(anchor::UNANCHORED_BATCHES).expect("a small bound");
        for second in 2..=most + 1 {
            unanchored
                .append(rotation_record(second))
                .await
                .expect("answered");
        }
        let report = verify().await.expect("verifies");
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.unanchored, anchor::UNANCHORED_BATCHES, "{report}");

        unanchored
            .append(rotation_record(most + 2))
            .await
            .expect("answered");
        let report = verify().await.expect("verifies");
        let found = report.first_break.as_ref().expect("a lost checkpoint");
        assert_eq!(found.sequence, 2, "{report}");
        assert!(
            matches!(found.problem, BreakKind::CheckpointMissing { .. }),
            "{report}"
        );
    }

    /// Waits for `condition`, failing the test rather than hanging it if it never holds.
    async fn eventually(condition: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !condition() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(waited.is_ok(), "the condition did not hold within 10 s");
    }

    fn queued(log: &AuditLog) -> usize {
        MAX_QUEUED_APPENDS - log.writer.capacity()
    }

    fn spawn_append(log: &AuditLog, second: u32) -> JoinHandle<Result<AuditEntry, AuditError>> {
        let log = log.clone();
        tokio::spawn(async move { log.append(rotation_record(second)).await })
    }

    #[tokio::test]
    async fn appends_queued_behind_a_write_are_stored_together_in_arrival_order() {
        let store = GatedStore::closed();
        let log = AuditLog::new(store.clone());
        let first = spawn_append(&log, 0);
        store.until_writes_begun(1).await;
        let mut behind = Vec::new();
        for second in 1..=10 {
            behind.push(spawn_append(&log, second));
            eventually(|| queued(&log) >= second as usize).await;
        }

        store.gate.add_permits(2);
        let mut entries = vec![first.await.expect("task").expect("first append")];
        for handle in behind {
            entries.push(handle.await.expect("task").expect("queued append"));
        }

        let sequences: Vec<u64> = entries.iter().map(|e| e.sequence).collect();
        let times: Vec<_> = entries.iter().map(|e| e.record.at).collect();
        assert_eq!(sequences, (1..=11).collect::<Vec<u64>>());
        assert_eq!(times, (0..=10).map(at).collect::<Vec<_>>(), "arrival order");
        assert_eq!(
            store.begun.load(Ordering::SeqCst),
            2,
            "one write for the first append, one for the ten queued behind it"
        );
        let report = log.verify().await.expect("verify");
        assert!(report.is_intact(), "{report}");
    }

    #[tokio::test]
    async fn an_append_dropped_while_still_queued_is_written_after_the_write_ahead_of_it() {
        let store = GatedStore::closed();
        let log = AuditLog::new(store.clone());
        let ahead = spawn_append(&log, 0);
        store.until_writes_begun(1).await;
        let queued_caller = spawn_append(&log, 1);
        eventually(|| queued(&log) == 1).await;
        // The client goes away while its entry still waits behind the write in progress.
        queued_caller.abort();
        assert!(queued_caller.await.expect_err("aborted").is_cancelled());

        store.gate.add_permits(3);
        ahead.await.expect("task").expect("the write ahead");
        let next = log
            .append(rotation_record(2))
            .await
            .expect("a later append");

        assert_eq!(
            next.sequence, 3,
            "the dropped caller's entry holds position 2"
        );
        let report = log.verify().await.expect("verify");
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries_checked, 3);
    }

    #[tokio::test]
    async fn an_append_whose_caller_stops_waiting_is_still_written() {
        let store = GatedStore::closed();
        let log = AuditLog::new(store.clone());
        let caller = spawn_append(&log, 0);
        store.until_writes_begun(1).await;
        // The client goes away while its entry is being written.
        caller.abort();
        assert!(caller.await.expect_err("aborted").is_cancelled());

        store.gate.add_permits(2);
        let next = log
            .append(rotation_record(1))
            .await
            .expect("a later append");

        assert_eq!(
            next.sequence, 2,
            "the abandoned caller's entry holds position 1"
        );
        let report = log.verify().await.expect("verify");
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries_checked, 2);
    }

    /// A store whose writes are stored but answered as conflicts, as when a transport
    /// retries a write whose first try succeeded and whose answer was lost.
    #[derive(Debug, Default)]
    struct AnswerLost {
        inner: MemoryStore,
    }

    #[async_trait]
    impl AuditStore for AnswerLost {
        async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
            self.inner.head().await
        }

        async fn append(&self, entry: &AuditEntry) -> Result<(), PortError> {
            self.inner.append(entry).await?;
            Err(PortError::new(FailureKind::Conflict, "position taken"))
        }

        async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError> {
            self.inner.read(from, count).await
        }
    }

    #[tokio::test]
    async fn a_write_refused_as_a_conflict_with_itself_is_not_stored_twice() {
        let store = Arc::new(AnswerLost::default());
        let log = AuditLog::new(store.clone());

        let first = log.append(rotation_record(0)).await.expect("first append");
        let second = log.append(rotation_record(1)).await.expect("second append");

        assert_eq!((first.sequence, second.sequence), (1, 2));
        let report = log.verify().await.expect("verify");
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries_checked, 2, "each record is stored once");
    }

    /// A store whose first write panics.
    #[derive(Debug, Default)]
    struct PanicsOnce {
        inner: MemoryStore,
        panicked: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl AuditStore for PanicsOnce {
        async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
            self.inner.head().await
        }

        async fn append(&self, entry: &AuditEntry) -> Result<(), PortError> {
            if !self.panicked.swap(true, Ordering::SeqCst) {
                panic!("a store bug");
            }
            self.inner.append(entry).await
        }

        async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError> {
            self.inner.read(from, count).await
        }
    }

    #[tokio::test]
    async fn a_store_that_panics_fails_its_batch_and_the_writer_goes_on() {
        let store = Arc::new(PanicsOnce::default());
        let log = AuditLog::new(store.clone());

        let first = log.append(rotation_record(0)).await;
        let second = log.append(rotation_record(1)).await;

        assert!(matches!(first, Err(AuditError::Abandoned)), "{first:?}");
        let second = second.expect("the writer survived the panic");
        assert_eq!(second.sequence, 1, "nothing was stored by the failed batch");
        let report = log.verify().await.expect("verify");
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries_checked, 1);
    }

    #[tokio::test]
    async fn entries_never_carry_a_secret_value_handled_alongside() {
        // A rotation handles the new value and audits what it did; the record type has
        // nowhere to put the value (it holds `AuditText`, and `SecretValue` is not
        // `Serialize`), so the serialised entry and its Debug form cannot contain it.
        let secret = SecretValue::new("s3cr3t-Value-that-must-not-leak");
        let (_store, log) = log_with(0).await;
        let mut record = rotation_record(0);
        record.reason = Some(text(&format!("rotated; new value is {secret}")));

        let entry = log.append(record).await.expect("append");

        let json = serde_json::to_string(&entry).expect("entry serialises");
        let debug = format!("{entry:?}");
        for rendered in [&json, &debug] {
            assert!(!rendered.contains(secret.expose()));
            assert!(
                rendered.contains("db-password"),
                "the entry names the secret"
            );
        }
        let fields: Vec<String> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json)
                .expect("entry is a JSON object")
                .keys()
                .cloned()
                .collect();
        for field in &fields {
            assert!(
                !field.contains("value"),
                "entry has a value-like field: {field}"
            );
        }
    }
}
