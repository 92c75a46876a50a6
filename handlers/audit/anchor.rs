//! Anchoring the audit log outside itself, and verifying the whole log: every writer's
//! chain, against the signed checkpoints of its head.
//!
//! # Why checkpoints
//!
//! A hash chain proves nothing was changed inside it, but not that it is complete
//! (entries removed from the end leave a shorter valid chain) nor that it is the
//! original (anyone who can write the store can re-hash a whole edited chain). After
//! every batch it stores, the writer signs a [`Checkpoint`] of its chain's new head
//! (position and hash) and appends it to storage its own identity cannot rewrite. The
//! checkpoint is written while the next batch is stored (a [`Pipeline`] one deep): the
//! batch's appends are answered once their entries are stored, without waiting for a
//! second write, and the writer stores no further batch until that checkpoint is
//! written. Verification then finds:
//!
//! - entries removed from the end: a checkpoint names a position past the head;
//! - a chain re-hashed after the fact: a checkpoint's hash differs from the entry at its
//!   position (the change lies after the last checkpoint that still matches);
//! - a checkpoint forged or changed: its signature does not verify with the public key;
//! - a checkpoint removed: each checkpoint names its writer's previous one, so a gap
//!   shows; and a chain with more entries past its last checkpoint than two batches
//!   hold lost the checkpoints that covered them (a writer that stops while a
//!   checkpoint is in flight leaves at most that batch and the one after it
//!   unanchored);
//! - a foreign row: a row that is no entry at a position, reported where it sits.
//!
//! Each chain belongs to one writer (one process), so writers never race for a position;
//! the checkpoints name their writer's chain, and verification walks every chain the
//! store or the checkpoints know.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::{AuditError, BreakKind, ChainBreak, ChainHead, VerifyReport, store as store_error};
use crate::ports::audit::{AuditStore, ChainId, EntryHash};
use crate::ports::checkpoint::{
    Checkpoint, CheckpointSigner, CheckpointStore, KeyLookup, SignedCheckpoint, VerifyingKeys,
};

/// Where a writer anchors its batches: the checkpoint store and the signing key.
#[derive(Debug, Clone)]
pub struct Anchor {
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub signer: Arc<dyn CheckpointSigner>,
}

/// The writer's side: signs and stores a checkpoint after each stored batch,
/// remembering its previous checkpoint so that a removed one shows as a gap.
#[derive(Debug)]
pub(crate) struct Anchoring {
    anchor: Anchor,
    chain: ChainId,
    previous: u64,
}

impl Anchoring {
    pub(crate) fn new(anchor: Anchor, chain: ChainId) -> Self {
        Self {
            anchor,
            chain,
            previous: 0,
        }
    }

    /// Anchors the head `position` / `head`. A failure is logged, not returned: the
    /// entries are stored, and the next batch's checkpoint covers them too (verification
    /// reports a chain whose checkpoints stay missing).
    pub(crate) async fn checkpoint(&mut self, position: u64, head: EntryHash) {
        let checkpoint = Checkpoint {
            writer: self.chain.clone(),
            position,
            previous: self.previous,
            head,
            at: chrono::Utc::now(),
        };
        let signed = match self.anchor.signer.sign(&checkpoint.signed_bytes()).await {
            Ok(signature) => SignedCheckpoint {
                checkpoint,
                signature,
            },
            Err(error) => {
                tracing::error!(%error, position, chain = %self.chain, "cannot sign an audit checkpoint");
                return;
            }
        };
        match self.anchor.checkpoints.append(&signed).await {
            Ok(()) => self.previous = position,
            Err(error) => {
                tracing::error!(%error, position, chain = %self.chain, "cannot store an audit checkpoint");
            }
        }
    }
}

/// How many batches a writer may have stored past its last written checkpoint: the one
/// whose checkpoint is in flight and the one being stored meanwhile.
pub(crate) const UNANCHORED_BATCHES: u64 = 2;

/// The writer's anchoring, one checkpoint in flight at a time: [`Pipeline::begin`]
/// starts a batch's checkpoint in a task of its own and returns at once;
/// [`Pipeline::settle`] waits until it is written. Checkpoints are written in batch
/// order, each naming the one before.
#[derive(Debug)]
pub(crate) struct Pipeline {
    idle: Option<Anchoring>,
    in_flight: Option<tokio::task::JoinHandle<Anchoring>>,
    anchor: Anchor,
    chain: ChainId,
    /// The last checkpoint written, should a signer or store panic and take its
    /// [`Anchoring`] with it.
    previous: u64,
}

impl Pipeline {
    pub(crate) fn new(anchor: Anchor, chain: ChainId) -> Self {
        Self {
            idle: Some(Anchoring::new(anchor.clone(), chain.clone())),
            in_flight: None,
            anchor,
            chain,
            previous: 0,
        }
    }

    /// Starts anchoring the head `position` / `head` in a task of its own, once the
    /// checkpoint in flight, if any, is written, and returns without waiting for it.
    pub(crate) async fn begin(&mut self, position: u64, head: EntryHash) {
        self.settle().await;
        let mut anchoring = self.idle.take().unwrap_or_else(|| self.resume());
        self.in_flight = Some(tokio::spawn(async move {
            anchoring.checkpoint(position, head).await;
            anchoring
        }));
    }

    /// Waits until the checkpoint in flight, if any, is written (or has failed, which
    /// [`Anchoring::checkpoint`] logs).
    pub(crate) async fn settle(&mut self) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        let anchoring = match in_flight.await {
            Ok(anchoring) => anchoring,
            Err(error) => {
                tracing::error!(%error, chain = %self.chain, "an audit checkpoint's signer or store panicked");
                self.resume()
            }
        };
        self.previous = anchoring.previous;
        self.idle = Some(anchoring);
    }

    /// An [`Anchoring`] that continues from the last checkpoint known written.
    fn resume(&self) -> Anchoring {
        Anchoring {
            anchor: self.anchor.clone(),
            chain: self.chain.clone(),
            previous: self.previous,
        }
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
/// that cannot be read are errors; damage is a report.
pub async fn verify_log(
    store: &dyn AuditStore,
    checkpoints: Option<&dyn CheckpointStore>,
    keys: Option<&dyn VerifyingKeys>,
) -> Result<LogReport, AuditError> {
    let survey = store
        .survey()
        .await
        .map_err(store_error("surveying the chains"))?;
    let stored = match checkpoints {
        Some(checkpoints) => checkpoints
            .read_all()
            .await
            .map_err(store_error("reading the checkpoints"))?,
        None => Vec::new(),
    };
    let mut breaks: Vec<LocatedBreak> = Vec::new();
    let mut valid: BTreeMap<ChainId, Vec<(String, Checkpoint)>> = BTreeMap::new();
    let mut checked = 0u64;
    // Each key id is looked up once, however many checkpoints name it.
    let mut looked_up: BTreeMap<String, KeyLookup> = BTreeMap::new();
    let mut used: Vec<String> = Vec::new();
    for found in stored {
        let signed = match found.content {
            Ok(signed) => signed,
            Err(problem) => {
                breaks.push(LocatedBreak {
                    chain: None,
                    sequence: 0,
                    problem: BreakKind::CheckpointUnreadable {
                        location: found.location,
                        problem,
                    },
                });
                continue;
            }
        };
        let first_affected = signed.checkpoint.previous.saturating_add(1);
        let key_id = &signed.signature.key_id;
        if !looked_up.contains_key(key_id) {
            let lookup = match keys {
                Some(keys) => keys
                    .lookup(key_id)
                    .await
                    .map_err(|source| AuditError::Key {
                        key_id: key_id.clone(),
                        source,
                    })?,
                None => KeyLookup::Candidates(Vec::new()),
            };
            looked_up.insert(key_id.clone(), lookup);
        }
        let problem = match &looked_up[key_id] {
            KeyLookup::Candidates(candidates) => {
                let verifying = candidates.iter().find(|key| {
                    key.verifies(
                        signed.signature.algorithm,
                        &signed.checkpoint.signed_bytes(),
                        &signed.signature.bytes,
                    )
                });
                match verifying {
                    Some(key) => {
                        let fingerprint = key.fingerprint();
                        if !used.contains(&fingerprint) {
                            used.push(fingerprint);
                        }
                        None
                    }
                    None => Some(BreakKind::CheckpointForged {
                        location: found.location.clone(),
                        position: signed.checkpoint.position,
                        key_id: key_id.clone(),
                        outside_of: None,
                    }),
                }
            }
            KeyLookup::Unknown { looked_in } => Some(BreakKind::CheckpointKeyUnknown {
                location: found.location.clone(),
                position: signed.checkpoint.position,
                key_id: key_id.clone(),
                looked_in: looked_in.clone(),
            }),
            KeyLookup::Foreign { expected } => Some(BreakKind::CheckpointForged {
                location: found.location.clone(),
                position: signed.checkpoint.position,
                key_id: key_id.clone(),
                outside_of: Some(expected.clone()),
            }),
        };
        if let Some(problem) = problem {
            breaks.push(LocatedBreak {
                chain: Some(signed.checkpoint.writer.clone()),
                sequence: first_affected,
                problem,
            });
            continue;
        }
        checked += 1;
        valid
            .entry(signed.checkpoint.writer.clone())
            .or_default()
            .push((found.location, signed.checkpoint));
    }
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
        .chain(valid.keys().cloned())
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
            valid.get(&chain).map_or(&[][..], Vec::as_slice),
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
    Ok(LogReport {
        entries_checked: reports.iter().map(|r| r.entries_checked).sum(),
        checkpoints_checked: checked,
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

/// Holds one chain's walk against its valid checkpoints (in stored order).
async fn judge(
    chain: &ChainId,
    walked: VerifyReport,
    checkpoints: &[(String, Checkpoint)],
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
    let mut problems: Vec<ChainBreak> = report.first_break.iter().cloned().collect();

    // A removed checkpoint: one names a previous checkpoint that is not there.
    let positions: BTreeSet<u64> = checkpoints.iter().map(|(_, c)| c.position).collect();
    for (location, checkpoint) in checkpoints {
        if checkpoint.previous != 0 && !positions.contains(&checkpoint.previous) {
            let before = positions
                .range(..checkpoint.previous)
                .next_back()
                .copied()
                .unwrap_or(0);
            problems.push(ChainBreak {
                sequence: before.saturating_add(1),
                problem: BreakKind::CheckpointMissing {
                    position: checkpoint.previous,
                    named_by: location.clone(),
                },
            });
        }
    }

    // Each checkpoint against the stored chain, in position order.
    let mut by_position: Vec<&(String, Checkpoint)> = checkpoints.iter().collect();
    by_position.sort_by_key(|(_, c)| c.position);
    let mut matched = 0u64;
    for (location, checkpoint) in by_position {
        if checkpoint.position > head {
            problems.push(ChainBreak {
                sequence: head.saturating_add(1),
                problem: BreakKind::Truncated {
                    checkpoint_position: checkpoint.position,
                    location: location.clone(),
                },
            });
            break;
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
                    location: location.clone(),
                    anchored: checkpoint.head,
                    stored: stored_hash,
                },
            });
            break;
        }
        matched = checkpoint.position;
    }
    report.anchored_to = matched;
    report.unanchored = head.saturating_sub(matched);
    // More unanchored entries than a writer leaves (two batches): the checkpoints that
    // covered them are gone (or were never written because signing or storing failed).
    let batch = u64::try_from(store.max_batch().max(1))
        .unwrap_or(u64::MAX)
        .saturating_mul(UNANCHORED_BATCHES);
    if anchored && report.unanchored > batch {
        problems.push(ChainBreak {
            sequence: matched.saturating_add(1),
            problem: BreakKind::CheckpointMissing {
                position: head,
                named_by: format!(
                    "{} entries past the last checkpoint, more than two batches ({batch})",
                    report.unanchored
                ),
            },
        });
    }
    report.first_break = problems.into_iter().min_by_key(|b| b.sequence);
    Ok(report)
}
