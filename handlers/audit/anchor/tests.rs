//! Verification reads the checkpoints a page at a time and gives the report it gave when
//! it read them all at once: `whole_store_report` below is that reading, as it was
//! (every stored checkpoint in one list, each chain's in memory), kept to compare with.

use std::collections::{BTreeMap, BTreeSet};

use chrono::TimeZone;

use super::*;
use crate::adapters::local::anchor::{LocalCheckpoints, LocalSigningKey};
use crate::adapters::local::audit::LocalAuditStore;
use crate::adapters::local::store::LocalStore;
use crate::audit::{AuditError, BreakKind, ChainBreak, VerifyReport, store as store_error};
use crate::ports::audit::{Actor, AuditRecord, AuditText, ChainId, EntryHash, Outcome};
use crate::ports::checkpoint::{CheckpointStore, KeyLookup, SignedCheckpoint, VerifyingKeys};

// --- the whole-store reading, as it was ---

async fn whole_store_report(
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
    // Each verified checkpoint's heads, each with the position before it.
    let mut valid: BTreeMap<ChainId, Vec<(String, u64, BatchHead)>> = BTreeMap::new();
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
                        position: signed.checkpoint.position(),
                        key_id: key_id.clone(),
                        outside_of: None,
                    }),
                }
            }
            KeyLookup::Unknown { looked_in } => Some(BreakKind::CheckpointKeyUnknown {
                location: found.location.clone(),
                position: signed.checkpoint.position(),
                key_id: key_id.clone(),
                looked_in: looked_in.clone(),
            }),
            KeyLookup::Foreign { expected } => Some(BreakKind::CheckpointForged {
                location: found.location.clone(),
                position: signed.checkpoint.position(),
                key_id: key_id.clone(),
                outside_of: Some(expected.clone()),
            }),
            KeyLookup::Unverifiable { reason } => Some(BreakKind::CheckpointUnverifiable {
                location: found.location.clone(),
                position: signed.checkpoint.position(),
                key_id: key_id.clone(),
                reason: reason.clone(),
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
        let heads = valid.entry(signed.checkpoint.writer.clone()).or_default();
        for (previous, head) in signed.checkpoint.links() {
            heads.push((found.location.clone(), previous, head));
        }
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
        let walked = crate::audit::verify(chain_store).await?;
        let report = whole_store_judge(
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

/// Holds one chain's walk against the heads of its valid checkpoints (in stored order).
async fn whole_store_judge(
    chain: &ChainId,
    walked: VerifyReport,
    checkpoints: &[(String, u64, BatchHead)],
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
    let positions: BTreeSet<u64> = checkpoints.iter().map(|(_, _, h)| h.position).collect();
    for (location, previous, _) in checkpoints {
        if *previous != 0 && !positions.contains(previous) {
            let before = positions
                .range(..*previous)
                .next_back()
                .copied()
                .unwrap_or(0);
            problems.push(ChainBreak {
                sequence: before.saturating_add(1),
                problem: BreakKind::CheckpointMissing {
                    position: *previous,
                    named_by: location.clone(),
                },
            });
        }
    }

    // Each head against the stored chain, in position order.
    let mut by_position: Vec<(&String, &BatchHead)> =
        checkpoints.iter().map(|(l, _, h)| (l, h)).collect();
    by_position.sort_by_key(|(_, h)| h.position);
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

// --- stores to read ---

const CHAINS: [&str; 3] = ["w-one", "w-two", "w-three"];

/// Entries per batch, and batches per chain. Every batch is checkpointed: w-one's and
/// w-two's each in a checkpoint of its own, w-three's two at a time (one checkpoint of
/// two heads, as the writer makes when two batches were stored while it wrote).
const EVERY: u64 = 3;
const CHECKPOINTS: u64 = 40;
/// Stored checkpoints: one per batch of two chains, one per two of the third.
const LINES: u64 = 2 * CHECKPOINTS + CHECKPOINTS / 2;

struct Fixture {
    _dir: tempfile::TempDir,
    store: LocalStore,
    store_path: std::path::PathBuf,
    file_path: std::path::PathBuf,
    key: LocalSigningKey,
}

fn text(value: &str) -> AuditText {
    AuditText::parse(value).expect("test text is valid")
}

fn record(n: u64) -> AuditRecord {
    let at = chrono::Utc
        .with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .expect("a valid fixed time")
        + chrono::Duration::seconds(i64::try_from(n).expect("small"));
    AuditRecord::new(
        at,
        Actor::Function(text("RotationWorker")),
        text("secret.rotate"),
        Outcome::Succeeded,
    )
}

async fn sign(key: &LocalSigningKey, checkpoint: Checkpoint) -> SignedCheckpoint {
    let signature = key
        .sign(&checkpoint.signed_bytes())
        .await
        .expect("the local key signs");
    SignedCheckpoint {
        checkpoint,
        signature,
    }
}

/// Three chains of `EVERY * CHECKPOINTS` entries, each batch of `EVERY` checkpointed
/// (in the store's table and its file; w-three's two batches to a checkpoint), the
/// chains' batches taking turns so their checkpoints interleave.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_path = dir.path().join("keyturn.db");
    let file_path = dir.path().join("audit-checkpoints.log");
    let store = LocalStore::open(&store_path).expect("store");
    let key = LocalSigningKey::load_or_create(&dir.path().join("audit-signing.key")).expect("key");
    let checkpoints = LocalCheckpoints::open_for_writing(store.clone(), &file_path)
        .await
        .expect("opened");
    let mut heads: BTreeMap<&str, EntryHash> = BTreeMap::new();
    for batch in 0..CHECKPOINTS {
        for name in CHAINS {
            let chain = ChainId::parse(name).expect("a chain name");
            let audit = LocalAuditStore::with_chain(store.clone(), chain.clone());
            let mut prev = *heads.entry(name).or_insert(EntryHash::GENESIS);
            let mut entries = Vec::new();
            for position in batch * EVERY + 1..=(batch + 1) * EVERY {
                let entry = crate::audit::seal(position, prev, record(position));
                prev = entry.hash;
                entries.push(entry);
            }
            audit.append_all(&entries).await.expect("appended");
            let before = heads.insert(name, prev).expect("entered above");
            let this = BatchHead {
                position: (batch + 1) * EVERY,
                head: prev,
            };
            let (previous, batch_heads) = match name {
                "w-three" if batch % 2 == 0 => continue,
                "w-three" => (
                    (batch - 1) * EVERY,
                    vec![
                        BatchHead {
                            position: batch * EVERY,
                            head: before,
                        },
                        this,
                    ],
                ),
                _ => (batch * EVERY, vec![this]),
            };
            let signed = sign(
                &key,
                Checkpoint {
                    writer: chain,
                    previous,
                    heads: batch_heads,
                    at: chrono::Utc::now(),
                },
            )
            .await;
            checkpoints.append(&signed).await.expect("anchored");
        }
    }
    checkpoints.sync().await.expect("synced");
    Fixture {
        _dir: dir,
        store,
        store_path,
        file_path,
        key,
    }
}

impl Fixture {
    fn sql(&self, statement: &str) {
        rusqlite::Connection::open(&self.store_path)
            .expect("opens")
            .execute_batch(statement)
            .expect("executed");
    }

    fn file_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.file_path)
            .expect("read")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_file(&self, lines: &[String]) {
        std::fs::write(&self.file_path, format!("{}\n", lines.join("\n"))).expect("written");
    }

    /// Removes `chain`'s checkpoint of one head at `position` from the file and the
    /// table.
    fn remove_checkpoint(&self, chain: &str, position: u64) {
        let needle = format!("\"writer\":\"{chain}\",\"position\":{position},");
        let kept: Vec<String> = self
            .file_lines()
            .into_iter()
            .filter(|line| !line.contains(&needle))
            .collect();
        self.write_file(&kept);
        self.sql(&format!(
            "DELETE FROM audit_checkpoints WHERE chain = '{chain}' AND position = {position}"
        ));
    }

    /// Appends `line` to the file only.
    fn append_line(&self, line: &str) {
        let mut lines = self.file_lines();
        lines.push(line.to_owned());
        self.write_file(&lines);
    }

    /// The report of pages of every size in `pages` and of the whole-store reading: all
    /// the same, or the test fails naming the page size.
    async fn report(&self, pages: &[usize]) -> LogReport {
        let audit = LocalAuditStore::new(self.store.clone());
        let checkpoints = LocalCheckpoints::reader(self.store.clone(), &self.file_path);
        let key = self.key.public().clone();
        let whole = whole_store_report(&audit, Some(&checkpoints), Some(&key))
            .await
            .expect("verified whole");
        for &page in pages {
            let paged = verify_log_in_pages(&audit, Some(&checkpoints), Some(&key), page)
                .await
                .expect("verified in pages");
            assert_eq!(paged, whole, "pages of {page}");
        }
        whole
    }
}

const PAGES: [usize; 6] = [1, 2, 3, 7, CHECKPOINT_PAGE, 100_000];

#[tokio::test]
async fn an_intact_log_reads_the_same_in_pages_of_any_size() {
    let fixture = fixture().await;

    let report = fixture.report(&PAGES).await;

    assert!(report.is_intact(), "{report}");
    assert_eq!(report.checkpoints_checked, LINES);
    assert_eq!(report.chains.len(), 3);
    assert!(
        report
            .chains
            .iter()
            .all(|chain| chain.anchored_to == EVERY * CHECKPOINTS),
        "{report:?}"
    );
}

#[tokio::test]
async fn each_chain_s_damage_reads_the_same_in_pages_of_any_size() {
    let fixture = fixture().await;
    // w-one: a checkpoint signed with the key whose head is not the stored entry's
    // (the chain re-hashed after it), in the middle.
    let rehashed = sign(
        &fixture.key,
        Checkpoint::of_one(
            ChainId::parse("w-one").expect("chain"),
            10 * EVERY,
            9 * EVERY,
            EntryHash::GENESIS,
            chrono::Utc::now(),
        ),
    )
    .await;
    fixture.append_line(&rehashed.to_line());
    // w-two: two checkpoints removed from file and table, the later one first.
    fixture.remove_checkpoint("w-two", 30 * EVERY);
    fixture.remove_checkpoint("w-two", 12 * EVERY);
    // w-three: entries removed from the end, past three checkpoints.
    fixture.sql(&format!(
        "DELETE FROM audit_log WHERE chain = 'w-three' AND position > {}",
        (CHECKPOINTS - 3) * EVERY + 1
    ));

    let report = fixture.report(&PAGES).await;

    let breaks: Vec<_> = report
        .chains
        .iter()
        .map(|chain| {
            chain
                .first_break
                .as_ref()
                .map(|found| (found.sequence, std::mem::discriminant(&found.problem)))
        })
        .collect();
    // Chains in name order: w-one, w-three, w-two.
    assert!(
        matches!(
            report.chains[0].first_break.as_ref().map(|b| &b.problem),
            Some(BreakKind::CheckpointMismatch { .. })
        ),
        "{breaks:?}"
    );
    assert!(
        matches!(
            report.chains[1].first_break.as_ref().map(|b| &b.problem),
            Some(BreakKind::Truncated { .. })
        ),
        "{breaks:?}"
    );
    assert_eq!(
        report.chains[2].first_break,
        Some(ChainBreak {
            sequence: 11 * EVERY + 1,
            problem: BreakKind::CheckpointMissing {
                position: 12 * EVERY,
                named_by: format!(
                    "{} line {}",
                    fixture.file_path.display(),
                    // Lines in turns: w-one's and w-two's each turn, w-three's every
                    // second (6 before the 13th turn); w-two's is second in its turn, and
                    // one line of it (position 12 * EVERY, the 12th) is gone.
                    12 * 2 + 6 + 2 - 1
                ),
            },
        }),
        "{breaks:?}"
    );
}

#[tokio::test]
async fn a_damaged_store_s_checkpoints_read_the_same_in_pages_of_any_size() {
    let fixture = fixture().await;
    let mut lines = fixture.file_lines();
    // The file's last twenty lines lost (the table keeps them), a garbage line and a
    // forged one (a checkpoint's signature from another) in the middle.
    lines.truncate(lines.len() - 20);
    let donor = SignedCheckpoint::from_line(&lines[4]).expect("a checkpoint");
    let mut forged = SignedCheckpoint::from_line(&lines[50]).expect("a checkpoint");
    forged.signature = donor.signature;
    lines.insert(60, "not a checkpoint".to_owned());
    lines.insert(30, forged.to_line());
    fixture.write_file(&lines);
    // The table: a garbage row and one checkpoint twice more.
    let again = lines[3].replace('\'', "''");
    fixture.sql(&format!(
        "INSERT INTO audit_checkpoints (chain, position, line) VALUES ('w-one', 999, 'garbage'); \
         INSERT INTO audit_checkpoints (chain, position, line) VALUES ('w-one', 3, '{again}'); \
         INSERT INTO audit_checkpoints (chain, position, line) VALUES ('w-one', 3, '{again}');"
    ));

    let report = fixture.report(&PAGES).await;

    assert!(
        matches!(
            report.first_break.as_ref().map(|b| &b.problem),
            Some(BreakKind::CheckpointForged { .. })
        ),
        "{report}"
    );
    assert_eq!(
        report.checkpoints_checked, LINES,
        "the table's rows the file lost count, each once: {report}"
    );
    let read = LocalCheckpoints::reader(fixture.store.clone(), &fixture.file_path)
        .read_all()
        .await
        .expect("read");
    let rows = read
        .iter()
        .filter(|found| found.location.contains("audit_checkpoints row"))
        .count();
    assert_eq!(
        rows, 21,
        "the 20 lines the file lost and the garbage row: {read:?}"
    );
}

#[tokio::test]
async fn pages_hand_out_every_checkpoint_once_in_the_order_stored() {
    let fixture = fixture().await;
    let checkpoints = LocalCheckpoints::reader(fixture.store.clone(), &fixture.file_path);
    let whole = checkpoints.read_all().await.expect("read");

    for page in [1, 4, 1000] {
        let mut pages = checkpoints.pages(page).await.expect("opened");
        let mut read = Vec::new();
        loop {
            let found = pages.next_page().await.expect("read");
            assert!(found.len() <= page, "at most a page: {}", found.len());
            if found.is_empty() {
                break;
            }
            read.extend(found);
        }
        assert!(
            pages.next_page().await.expect("read").is_empty(),
            "done stays done"
        );
        assert_eq!(read, whole, "pages of {page}");
    }
    assert_eq!(whole.len(), usize::try_from(LINES).expect("small"));
}
