//! Anchoring the audit log outside itself, and verifying the whole log: every writer's
//! chain, against the signed checkpoints of its head.
//!
//! # Why checkpoints
//!
//! A hash chain proves nothing was changed inside it, but not that it is complete
//! (entries removed from the end leave a shorter valid chain) nor that it is the
//! original (anyone who can write the store can re-hash a whole edited chain). Every
//! batch the writer stores has its head (position and hash) in a signed [`Checkpoint`],
//! appended to storage its own identity cannot rewrite. The batch's appends are answered
//! once their entries are stored, without waiting for a second write: a
//! [`CheckpointWriter`] of its own takes the heads of the batches stored meanwhile, at
//! most once per [`CHECKPOINT_INTERVAL`] (20 ms) unless three quarters of
//! [`UNANCHORED_BATCHES`] wait, puts them in one checkpoint under one signature, and
//! writes it (locally one unsynced commit to the store's checkpoint table and one write
//! to the checkpoint file, which is synced about once a second and when the log is
//! flushed: see `adapters::local::anchor::LocalCheckpoints`; in Azure one blob append
//! block). The writer stores no further batch while [`UNANCHORED_BATCHES`] (64) batches
//! wait for theirs. One signature per write rather than per batch: under load a write
//! carries the heads of dozens of batches, and a signature (an Ed25519 signature
//! locally, a Key Vault `sign` round trip in Azure) is the dearest part of a checkpoint.
//! Verification then finds:
//!
//! - entries removed from the end: a checkpoint names a position past the head;
//! - a chain re-hashed after the fact: a checkpoint's hash differs from the entry at its
//!   position (the change lies after the last checkpoint that still matches);
//! - a checkpoint forged or changed: its signature does not verify with the public key;
//! - a checkpoint removed: each checkpoint names its writer's previous one, so a gap
//!   shows; and a chain with more entries past its last checkpoint than
//!   [`UNANCHORED_BATCHES`] batches hold lost the checkpoints that covered them (a
//!   writer that stops with checkpoints waiting leaves at most that many batches
//!   unanchored);
//! - a foreign row: a row that is no entry at a position, reported where it sits.
//!
//! Each chain belongs to one writer (one process), so writers never race for a position;
//! the checkpoints name their writer's chain, and verification walks every chain the
//! store or the checkpoints know.

use std::collections::BTreeSet;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use super::{AuditError, BreakKind, ChainBreak, ChainHead, VerifyReport, store as store_error};
use crate::ports::audit::{AuditStore, ChainId, EntryHash};
use crate::ports::checkpoint::{
    BatchHead, CHECKPOINT_PAGE, Checkpoint, CheckpointPages, CheckpointSigner, CheckpointStore,
    MAX_HEADS_PER_CHECKPOINT, PagesOf, SignedCheckpoint, VerifyingKeys,
};

pub(crate) mod checked;
#[cfg(test)]
mod tests;

/// Where a writer anchors its batches: the checkpoint store and the signing key.
#[derive(Debug, Clone)]
pub struct Anchor {
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub signer: Arc<dyn CheckpointSigner>,
}

/// The checkpoint writer's side: signs one checkpoint of the heads of the batches stored
/// since its last and stores it, remembering where its previous checkpoint ended so that
/// a removed one shows as a gap.
#[derive(Debug)]
struct Anchoring {
    anchor: Anchor,
    chain: ChainId,
    previous: u64,
}

impl Anchoring {
    /// Signs one checkpoint of the heads (`position`, `hash`), in order, naming the
    /// previous checkpoint (several, should there be more than
    /// [`MAX_HEADS_PER_CHECKPOINT`]), and stores them in one
    /// [`CheckpointStore::append_all`]. A failure is logged, not returned: the entries
    /// are stored, and a later batch's checkpoint covers them too (verification reports
    /// a chain whose checkpoints stay missing). When a signature fails, the checkpoints
    /// before it are stored and the rest are not, so every stored checkpoint names one
    /// that is stored.
    async fn checkpoint_all(&mut self, heads: &[(u64, EntryHash)]) {
        let at = chrono::Utc::now();
        let mut previous = self.previous;
        let checkpoints: Vec<Checkpoint> = heads
            .chunks(MAX_HEADS_PER_CHECKPOINT)
            .map(|chunk| {
                let checkpoint = Checkpoint {
                    writer: self.chain.clone(),
                    previous,
                    heads: chunk
                        .iter()
                        .map(|&(position, head)| BatchHead { position, head })
                        .collect(),
                    at,
                };
                previous = checkpoint.position();
                checkpoint
            })
            .collect();
        let signer = self.anchor.signer.as_ref();
        let mut signed = Vec::with_capacity(checkpoints.len());
        for checkpoint in checkpoints {
            match signer.sign(&checkpoint.signed_bytes()).await {
                Ok(signature) => signed.push(SignedCheckpoint {
                    checkpoint,
                    signature,
                }),
                Err(error) => {
                    tracing::error!(%error, position = checkpoint.position(), chain = %self.chain, "cannot sign an audit checkpoint");
                    break;
                }
            }
        }
        let Some(last) = signed.last().map(|signed| signed.checkpoint.position()) else {
            return;
        };
        match self.anchor.checkpoints.append_all(&signed).await {
            Ok(()) => self.previous = last,
            Err(error) => {
                tracing::error!(%error, position = last, checkpoints = signed.len(), chain = %self.chain, "cannot store audit checkpoints");
            }
        }
    }
}

/// How many stored batches may wait for their checkpoints to be written: the writer
/// stores no further batch until fewer do. So a writer that stops leaves at most this
/// many batches unanchored, and `verify` takes more entries than that many batches hold
/// past a chain's last checkpoint for a lost checkpoint.
pub(crate) const UNANCHORED_BATCHES: u64 = 64;

/// The checkpoint writer writes at most once per this interval, unless three quarters of
/// [`UNANCHORED_BATCHES`] wait or the log is flushed: each write (a commit and a file
/// write locally, a blob append in Azure) competes with the entries' own, so under load
/// each one carries the checkpoints of several batches.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(20);

/// Checkpoints waiting this many are written without waiting for the interval.
const WRITE_AT: usize = UNANCHORED_BATCHES as usize * 3 / 4;

/// Room for one more stored batch without a written checkpoint; given back once its
/// checkpoint is written (or has failed).
#[derive(Debug)]
pub(crate) struct Room {
    _held: Option<OwnedSemaphorePermit>,
}

/// A stored batch's head, waiting for its checkpoint.
#[derive(Debug)]
struct Pending {
    position: u64,
    head: EntryHash,
    _room: Room,
}

/// The writer's anchoring: a thread of its own that puts the heads of the stored batches
/// waiting into one signed checkpoint, in batch order, naming the one before, and writes it.
/// The audit writer takes [`CheckpointWriter::room`] before it stores a batch (waiting
/// only while [`UNANCHORED_BATCHES`] batches wait for their checkpoints) and hands the
/// stored head to [`CheckpointWriter::begin`], which returns at once;
/// [`CheckpointWriter::settle`] waits until every checkpoint handed over is written.
///
/// A thread rather than a task on the audit writer's runtime, so that signing and
/// syncing never take the audit writer's turn.
#[derive(Debug)]
pub(crate) struct CheckpointWriter {
    room: Arc<Semaphore>,
    hurry: Arc<Notify>,
    queue: mpsc::UnboundedSender<Pending>,
    chain: ChainId,
    checkpoints: Arc<dyn CheckpointStore>,
}

impl CheckpointWriter {
    /// Starts the checkpoint writer's thread for `chain`. Fails only when the operating
    /// system will not give it a thread or the thread its runtime.
    pub(crate) fn start(anchor: Anchor, chain: ChainId) -> Result<Self, AuditError> {
        let (queue, pending) = mpsc::unbounded_channel();
        let hurry = Arc::new(Notify::new());
        let checkpoints = anchor.checkpoints.clone();
        let anchoring = Anchoring {
            anchor,
            chain: chain.clone(),
            previous: 0,
        };
        super::spawn_with_runtime(
            "keyturn-audit-anchor",
            write_checkpoints(anchoring, pending, hurry.clone()),
        )?;
        Ok(Self {
            room: Arc::new(Semaphore::new(UNANCHORED_BATCHES as usize)),
            hurry,
            queue,
            chain,
            checkpoints,
        })
    }

    /// Waits until fewer than [`UNANCHORED_BATCHES`] stored batches wait for their
    /// checkpoints, and takes room for one more.
    pub(crate) async fn room(&self) -> Room {
        Room {
            _held: self.room.clone().acquire_owned().await.ok(),
        }
    }

    /// Hands the stored head `position` / `head` to the checkpoint writer with the room
    /// its batch took, and returns without waiting.
    pub(crate) fn begin(&self, room: Room, position: u64, head: EntryHash) {
        let pending = Pending {
            position,
            head,
            _room: room,
        };
        if self.queue.send(pending).is_err() {
            tracing::error!(position, chain = %self.chain, "the audit checkpoint writer has stopped; the batch stays unanchored");
        }
        let waiting = UNANCHORED_BATCHES as usize - self.room.available_permits();
        if waiting >= WRITE_AT {
            self.hurry.notify_one();
        }
    }

    /// Waits until every checkpoint handed over is written (or has failed, which is
    /// logged), asking the checkpoint writer not to wait for its interval, and made
    /// durable ([`CheckpointStore::sync`]). The caller must hold no [`Room`].
    pub(crate) async fn settle(&self) {
        self.hurry.notify_one();
        let all = UNANCHORED_BATCHES as u32;
        drop(self.room.acquire_many(all).await);
        if let Err(error) = self.checkpoints.sync().await {
            tracing::error!(%error, chain = %self.chain, "cannot make the audit checkpoints durable");
        }
    }
}

/// The checkpoint writer's loop, until the audit writer is gone: wakes for the first
/// head handed over, waits out the interval since its last write unless it is hurried
/// (three quarters of [`UNANCHORED_BATCHES`] wait, or a flush), then signs and stores
/// every head waiting in one checkpoint. It is not woken for each head that arrives
/// meanwhile.
async fn write_checkpoints(
    mut anchoring: Anchoring,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    hurry: Arc<Notify>,
) {
    let mut group = Vec::new();
    let mut next_write = tokio::time::Instant::now();
    while pending.recv_many(&mut group, usize::MAX).await > 0 {
        if group.len() < WRITE_AT && tokio::time::Instant::now() < next_write {
            tokio::select! {
                biased;
                () = hurry.notified() => {}
                () = tokio::time::sleep_until(next_write) => {}
            }
        }
        while let Ok(more) = pending.try_recv() {
            group.push(more);
        }
        let heads: Vec<(u64, EntryHash)> = group.iter().map(|p| (p.position, p.head)).collect();
        // A signer or store that panics fails this group (its batches stay unanchored,
        // the next checkpoint covers them), not the writer.
        if AssertUnwindSafe(anchoring.checkpoint_all(&heads))
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(chain = %anchoring.chain, "an audit checkpoint's signer or store panicked");
        }
        // Their room is given back only now that their checkpoints are written.
        group.clear();
        next_write = tokio::time::Instant::now() + CHECKPOINT_INTERVAL;
    }
}

/// A break somewhere in the log: which chain (none for a checkpoint that names no
/// readable chain) and the first position affected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocatedBreak {
    pub chain: Option<ChainId>,
    pub sequence: u64,
    pub problem: BreakKind,
}

/// One chain's verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub chain: ChainId,
    pub entries_checked: u64,
    pub head: Option<ChainHead>,
    /// The highest position a valid checkpoint vouches for (0: none).
    pub anchored_to: u64,
    /// Entries past the last checkpoint: at most the batch a writer was storing when it
    /// stopped.
    pub unanchored: u64,
    pub first_break: Option<ChainBreak>,
}

/// The whole log's verification: every chain, every checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogReport {
    /// Entries that passed every check, over all chains.
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    pub unanchored: u64,
    /// The public key's fingerprint the signatures were checked with (the first, when
    /// several were).
    pub public_key: Option<String>,
    /// Every public key that checked at least one checkpoint, in the order first used
    /// (one per key version after rotations).
    pub public_keys: Vec<String>,
    /// The first break found (chains in name order, checkpoint problems first).
    pub first_break: Option<LocatedBreak>,
    pub chains: Vec<ChainReport>,
}

impl LogReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

impl fmt::Display for LogReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_break {
            None => write!(
                f,
                "audit log intact: {} entries in {} chain(s) verified against {} signed checkpoint(s)",
                self.entries_checked,
                self.chains.len(),
                self.checkpoints_checked
            )?,
            Some(found) => {
                if let Some(chain) = &found.chain {
                    write!(f, "chain {chain}: ")?;
                }
                super::describe_break(f, found.sequence, &found.problem)?;
            }
        }
        if self.unanchored > 0 {
            write!(
                f,
                "; {} entries past the last checkpoint are not anchored yet",
                self.unanchored
            )?;
        }
        Ok(())
    }
}

/// Verifies every chain of `store` and, with `checkpoints`, every checkpoint against
/// the key its id names among `keys` and against the chains. Store failures and keys
/// that cannot be read are errors; damage is a report. The checkpoints are read a page
/// of [`CHECKPOINT_PAGE`] at a time (see [`checked`]): memory does not grow with their
/// number.
pub async fn verify_log(
    store: &dyn AuditStore,
    checkpoints: Option<&dyn CheckpointStore>,
    keys: Option<&dyn VerifyingKeys>,
) -> Result<LogReport, AuditError> {
    verify_log_in_pages(store, checkpoints, keys, CHECKPOINT_PAGE).await
}

/// [`verify_log`], reading the checkpoints `page` at a time.
pub(crate) async fn verify_log_in_pages(
    store: &dyn AuditStore,
    checkpoints: Option<&dyn CheckpointStore>,
    keys: Option<&dyn VerifyingKeys>,
    page: usize,
) -> Result<LogReport, AuditError> {
    let survey = store
        .survey()
        .await
        .map_err(store_error("surveying the chains"))?;
    let empty = EmptyCheckpoints;
    let checked = checked::check(checkpoints.unwrap_or(&empty), keys, page, false).await?;
    // Checkpoint problems come first, in the order stored; only the first is reported.
    let mut breaks: Vec<LocatedBreak> = checked.first_problem.iter().cloned().collect();
    for row in &survey.foreign {
        breaks.push(LocatedBreak {
            chain: row.chain.clone(),
            sequence: row.after.map_or(1, |after| after.saturating_add(1)),
            problem: BreakKind::ForeignRow {
                location: row.location.clone(),
            },
        });
    }

    let chains: BTreeSet<ChainId> = survey
        .chains
        .iter()
        .cloned()
        .chain(checked.index.chains()?)
        .collect();
    let mut reports = Vec::new();
    for chain in chains {
        let owned = store.for_chain(&chain);
        let chain_store: &dyn AuditStore = match &owned {
            Some(chain_store) => chain_store.as_ref(),
            None if chain == store.chain() => store,
            None => {
                tracing::warn!(%chain, "the store cannot read this chain");
                continue;
            }
        };
        let walked = super::verify(chain_store).await?;
        let report = judge(
            &chain,
            walked,
            &checked.index,
            page,
            chain_store,
            checkpoints.is_some(),
        )
        .await?;
        if let Some(found) = &report.first_break {
            breaks.push(LocatedBreak {
                chain: Some(chain.clone()),
                sequence: found.sequence,
                problem: found.problem.clone(),
            });
        }
        reports.push(report);
    }
    let used: Vec<String> = checked.keys.iter().map(|k| k.key.fingerprint()).collect();
    Ok(LogReport {
        entries_checked: reports.iter().map(|r| r.entries_checked).sum(),
        checkpoints_checked: checked.verified,
        unanchored: reports.iter().map(|r| r.unanchored).sum(),
        public_key: used.first().cloned().or_else(|| {
            let held = keys.map(VerifyingKeys::held).unwrap_or_default();
            match held.as_slice() {
                [only] => Some(only.fingerprint()),
                _ => None,
            }
        }),
        public_keys: used,
        first_break: breaks.into_iter().next(),
        chains: reports,
    })
}

/// No checkpoint store: a log verified without its anchors.
#[derive(Debug)]
struct EmptyCheckpoints;

#[async_trait::async_trait]
impl CheckpointStore for EmptyCheckpoints {
    async fn append_all(&self, _: &[SignedCheckpoint]) -> Result<(), crate::ports::PortError> {
        Err(crate::ports::PortError::invalid(
            "no checkpoint store to append to",
        ))
    }

    async fn pages(
        &self,
        page: usize,
    ) -> Result<Box<dyn CheckpointPages + '_>, crate::ports::PortError> {
        Ok(Box::new(PagesOf::new(Vec::new(), page)))
    }
}

/// Holds one chain's walk against its verified checkpoints in `index`, read `page` at
/// a time in position order.
async fn judge(
    chain: &ChainId,
    walked: VerifyReport,
    index: &checked::CheckpointIndex,
    page: usize,
    store: &dyn AuditStore,
    anchored: bool,
) -> Result<ChainReport, AuditError> {
    let head = walked.head.as_ref().map_or(0, |head| head.sequence);
    let mut report = ChainReport {
        chain: chain.clone(),
        entries_checked: walked.entries_checked,
        head: walked.head.clone(),
        anchored_to: 0,
        unanchored: 0,
        first_break: walked.first_break.clone(),
    };
    // The first break is the lowest position; among equals the walk's own, then a
    // removed checkpoint (the first stored that names one), then the checkpoints
    // against the chain, then too many unanchored entries.
    let mut problems: Vec<ChainBreak> = report.first_break.iter().cloned().collect();

    // A removed checkpoint: one names a previous checkpoint that is not there.
    if let Some(missing) = index.first_missing_previous(chain)? {
        problems.push(ChainBreak {
            sequence: missing.before.saturating_add(1),
            problem: BreakKind::CheckpointMissing {
                position: missing.previous,
                named_by: missing.named_by,
            },
        });
    }

    // Each checkpoint against the stored chain, in position order.
    let mut matched = 0u64;
    let mut after: Option<checked::Indexed> = None;
    'pages: loop {
        let found = index.verified_by_position(chain, after.as_ref(), page.max(1))?;
        let Some(last) = found.last().cloned() else {
            break;
        };
        for checkpoint in found {
            if checkpoint.position > head {
                problems.push(ChainBreak {
                    sequence: head.saturating_add(1),
                    problem: BreakKind::Truncated {
                        checkpoint_position: checkpoint.position,
                        location: checkpoint.location,
                    },
                });
                break 'pages;
            }
            let stored = store
                .read(checkpoint.position, 1)
                .await
                .map_err(store_error("reading a checkpointed entry"))?;
            let stored_hash = stored
                .into_iter()
                .find(|s| s.position == checkpoint.position)
                .and_then(|s| s.content.ok())
                .map(|entry| entry.hash);
            if stored_hash != Some(checkpoint.head) {
                problems.push(ChainBreak {
                    sequence: matched.saturating_add(1),
                    problem: BreakKind::CheckpointMismatch {
                        checkpoint_position: checkpoint.position,
                        location: checkpoint.location,
                        anchored: checkpoint.head,
                        stored: stored_hash,
                    },
                });
                break 'pages;
            }
            matched = checkpoint.position;
        }
        after = Some(last);
    }
    report.anchored_to = matched;
    report.unanchored = head.saturating_sub(matched);
    // More unanchored entries than a writer leaves ([`UNANCHORED_BATCHES`] batches):
    // the checkpoints that covered them are gone (or were never written because signing
    // or storing failed).
    let batch = u64::try_from(store.max_batch().max(1))
        .unwrap_or(u64::MAX)
        .saturating_mul(UNANCHORED_BATCHES);
    if anchored && report.unanchored > batch {
        problems.push(ChainBreak {
            sequence: matched.saturating_add(1),
            problem: BreakKind::CheckpointMissing {
                position: head,
                named_by: format!(
                    "{} entries past the last checkpoint, more than {UNANCHORED_BATCHES} batches ({batch})",
                    report.unanchored
                ),
            },
        });
    }
    report.first_break = problems.into_iter().min_by_key(|b| b.sequence);
    Ok(report)
}
