//! The audit log anchored outside itself: signed checkpoints of every writer's chain,
//! and `verify_log` finding each way the log can be tampered with, with the first
//! position affected. Each scenario runs against the SQLite store with its checkpoint
//! file and key (and against Azure Table and Blob storage on Azurite in
//! `audit_anchor_azure`). Tampering goes straight to the storage underneath.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use keyturn::adapters::local::anchor::{
    CHECKPOINT_FILE_NAME, LocalCheckpoints, LocalSigningKey, SIGNING_KEY_FILE_NAME,
};
use keyturn::adapters::local::audit::LocalAuditStore;
use keyturn::adapters::local::store::LocalStore;
use keyturn::audit::{
    Actor, Anchor, AuditLog, AuditText, LogReport, Outcome, entry_hash, verify_log,
};
use keyturn::ports::audit::{AuditEntry, AuditRecord, AuditStore, ChainId, EntryHash};
use keyturn::ports::checkpoint::{
    BatchHead, Checkpoint, CheckpointSigner, CheckpointStore, PublicKey, SignedCheckpoint,
};

/// One anchored store under test, and a way to reach under it.
#[async_trait]
pub(crate) trait Anchored: Send + Sync + 'static {
    /// A new writer of `chain`, built separately as another process would build it.
    async fn writer(&self, chain: &ChainId) -> AuditLog;
    /// The store (any chain) for verification.
    async fn store(&self) -> Arc<dyn AuditStore>;
    async fn checkpoints(&self) -> Arc<dyn CheckpointStore>;
    async fn public_key(&self) -> PublicKey;
    /// The key the writers sign their checkpoints with.
    async fn signer(&self) -> Arc<dyn CheckpointSigner>;
    /// A writer of `chain` that stores entries without checkpoints.
    async fn unanchored_writer(&self, chain: &ChainId) -> AuditLog;

    async fn set_action(&self, chain: &ChainId, position: u64, action: &str);
    async fn set_hashes(&self, chain: &ChainId, position: u64, prev: EntryHash, hash: EntryHash);
    async fn corrupt(&self, chain: &ChainId, position: u64);
    async fn delete(&self, chain: &ChainId, position: u64);
    async fn swap(&self, chain: &ChainId, first: u64, second: u64);
    async fn add_foreign_row(&self, chain: &ChainId);
    /// The stored checkpoint lines, in order.
    async fn checkpoint_lines(&self) -> Vec<String>;
    /// Replaces every stored checkpoint line (where the storage lets anyone do that).
    async fn rewrite_checkpoints(&self, lines: &[String]);
}

pub(crate) struct SqliteAnchored {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteAnchored {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("data").join("keyturn.db");
        Self { _dir: dir, path }
    }

    fn beside(&self, name: &str) -> PathBuf {
        self.path.with_file_name(name)
    }

    fn raw(&self) -> rusqlite::Connection {
        let connection = rusqlite::Connection::open(&self.path).expect("the store file opens");
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .expect("busy timeout");
        connection
    }

    fn execute(&self, sql: &str, params: impl rusqlite::Params) -> usize {
        self.raw().execute(sql, params).expect("the statement runs")
    }
}

#[async_trait]
impl Anchored for SqliteAnchored {
    async fn writer(&self, chain: &ChainId) -> AuditLog {
        let store = LocalStore::open(&self.path).expect("the local store opens");
        let key =
            LocalSigningKey::load_or_create(&self.beside(SIGNING_KEY_FILE_NAME)).expect("the key");
        let checkpoints =
            LocalCheckpoints::open_for_writing(store.clone(), self.beside(CHECKPOINT_FILE_NAME))
                .await
                .expect("the checkpoints open");
        let anchor = Anchor {
            checkpoints: Arc::new(checkpoints),
            signer: Arc::new(key),
        };
        AuditLog::start_anchored(
            Arc::new(LocalAuditStore::with_chain(store, chain.clone())),
            Some(anchor),
        )
        .expect("the writer starts")
    }

    async fn signer(&self) -> Arc<dyn CheckpointSigner> {
        Arc::new(
            LocalSigningKey::load_or_create(&self.beside(SIGNING_KEY_FILE_NAME)).expect("the key"),
        )
    }

    async fn unanchored_writer(&self, chain: &ChainId) -> AuditLog {
        let store = LocalStore::open(&self.path).expect("the local store opens");
        AuditLog::new(Arc::new(LocalAuditStore::with_chain(store, chain.clone())))
    }

    async fn store(&self) -> Arc<dyn AuditStore> {
        Arc::new(LocalAuditStore::new(
            LocalStore::open(&self.path).expect("the local store opens"),
        ))
    }

    async fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        Arc::new(LocalCheckpoints::reader(
            LocalStore::open(&self.path).expect("the local store opens"),
            self.beside(CHECKPOINT_FILE_NAME),
        ))
    }

    async fn public_key(&self) -> PublicKey {
        LocalSigningKey::read_file(&self.beside(SIGNING_KEY_FILE_NAME))
            .expect("the key")
            .public()
            .clone()
    }

    async fn set_action(&self, chain: &ChainId, position: u64, action: &str) {
        let changed = self.execute(
            "UPDATE audit_log SET action = ?1 WHERE chain = ?2 AND position = ?3",
            rusqlite::params![action, chain.as_str(), position as i64],
        );
        assert_eq!(changed, 1);
    }

    async fn set_hashes(&self, chain: &ChainId, position: u64, prev: EntryHash, hash: EntryHash) {
        let changed = self.execute(
            "UPDATE audit_log SET prev_hash = ?1, hash = ?2 WHERE chain = ?3 AND position = ?4",
            rusqlite::params![
                prev.to_hex(),
                hash.to_hex(),
                chain.as_str(),
                position as i64
            ],
        );
        assert_eq!(changed, 1);
    }

    async fn corrupt(&self, chain: &ChainId, position: u64) {
        let changed = self.execute(
            "UPDATE audit_log SET hash = 'garbage', at = 'not a time' WHERE chain = ?1 AND position = ?2",
            rusqlite::params![chain.as_str(), position as i64],
        );
        assert_eq!(changed, 1);
    }

    async fn delete(&self, chain: &ChainId, position: u64) {
        let changed = self.execute(
            "DELETE FROM audit_log WHERE chain = ?1 AND position = ?2",
            rusqlite::params![chain.as_str(), position as i64],
        );
        assert_eq!(changed, 1);
    }

    async fn swap(&self, chain: &ChainId, first: u64, second: u64) {
        let chain = chain.as_str();
        self.raw()
            .execute_batch(&format!(
                "BEGIN;
                 UPDATE audit_log SET position = 1000000000 WHERE chain = '{chain}' AND position = {first};
                 UPDATE audit_log SET position = {first} WHERE chain = '{chain}' AND position = {second};
                 UPDATE audit_log SET position = {second} WHERE chain = '{chain}' AND position = 1000000000;
                 COMMIT;"
            ))
            .expect("swap");
    }

    async fn add_foreign_row(&self, _chain: &ChainId) {
        // A row whose chain column names no chain, sorting before every real one.
        self.execute(
            "INSERT INTO audit_log (chain, position, sequence, at, actor_kind, actor, action, outcome, prev_hash, hash)
             VALUES ('  Foreign!', 1, 1, 'x', 'x', 'x', 'x', 'x', 'x', 'x')",
            [],
        );
    }

    async fn checkpoint_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.beside(CHECKPOINT_FILE_NAME))
            .expect("the checkpoint file")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The file and the store's checkpoint table alike: a checkpoint counts wherever
    /// it is found, so a tamperer must change both.
    async fn rewrite_checkpoints(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(self.beside(CHECKPOINT_FILE_NAME), text).expect("rewritten");
        self.execute("DELETE FROM audit_checkpoints", []);
        for line in lines {
            let fields: serde_json::Value = serde_json::from_str(line).expect("JSON");
            self.execute(
                "INSERT INTO audit_checkpoints (chain, position, line) VALUES (?1, ?2, ?3)",
                rusqlite::params![
                    fields["writer"].as_str().expect("a writer"),
                    fields["position"].as_i64().expect("a position"),
                    line
                ],
            );
        }
    }
}

fn text(value: &str) -> AuditText {
    AuditText::parse(value).expect("test text is valid")
}

fn clock(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .expect("a valid fixed time")
        + chrono::Duration::seconds(i64::from(second))
}

fn read_record(second: u32) -> AuditRecord {
    let mut record = AuditRecord::new(
        clock(second),
        Actor::Identity(text("sha256:device")),
        text("secret.read"),
        Outcome::Succeeded,
    );
    record.object.secret_name = Some(text("db-password"));
    record.reason = Some(text(&format!("request {second}")));
    record
}

pub(crate) fn chain(name: &str) -> ChainId {
    ChainId::parse(name).expect("a valid chain name")
}

/// `count` entries appended one at a time, each anchored before the next is appended,
/// so each batch holds one entry and each checkpoint one batch's head (under load the
/// writer puts the heads of the batches stored while it wrote in one checkpoint: see
/// [`a_checkpoint_of_several_batches_vouches_for_each`]).
pub(crate) async fn append(log: &AuditLog, count: u32) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    for second in 0..count {
        entries.push(log.append(read_record(second)).await.expect("append"));
        log.flush().await.expect("the batch anchored");
    }
    entries
}

/// Six entries of `writer` stored one batch each without checkpoints, then anchored by
/// two checkpoints of three heads each (as the writer makes them under load), signed
/// with the writers' key; returns the entries and the checkpoints.
async fn anchored_in_twos(
    fixture: &impl Anchored,
    writer: &ChainId,
) -> (Vec<AuditEntry>, Vec<SignedCheckpoint>) {
    let log = fixture.unanchored_writer(writer).await;
    let mut entries = Vec::new();
    for second in 0..6 {
        entries.push(log.append(read_record(second)).await.expect("append"));
    }
    let signed = signed_in_groups(fixture.signer().await.as_ref(), writer, &entries, &[3, 3]).await;
    fixture
        .checkpoints()
        .await
        .append_all(&signed)
        .await
        .expect("appended");
    (entries, signed)
}

/// Checkpoints of `writer`'s stored `entries` (one batch each), `sizes` heads at a time,
/// each naming the one before, signed by `signer`: as the writer makes them under load.
pub(crate) async fn signed_in_groups(
    signer: &dyn CheckpointSigner,
    writer: &ChainId,
    entries: &[AuditEntry],
    sizes: &[usize],
) -> Vec<SignedCheckpoint> {
    let mut signed = Vec::new();
    let mut previous = 0;
    let mut rest = entries;
    for &size in sizes {
        let (group, after) = rest.split_at(size);
        rest = after;
        let checkpoint = Checkpoint {
            writer: writer.clone(),
            previous,
            heads: group
                .iter()
                .map(|entry| BatchHead {
                    position: entry.sequence,
                    head: entry.hash,
                })
                .collect(),
            at: Utc::now(),
        };
        previous = checkpoint.position();
        let signature = signer
            .sign(&checkpoint.signed_bytes())
            .await
            .expect("signs");
        signed.push(SignedCheckpoint {
            checkpoint,
            signature,
        });
    }
    signed
}

pub(crate) async fn a_checkpoint_of_several_batches_vouches_for_each(fixture: impl Anchored) {
    let writer = chain("w-one");
    anchored_in_twos(&fixture, &writer).await;

    let report = verify(&fixture).await;
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.checkpoints_checked, 2, "{report}");
    assert_eq!(report.chains[0].anchored_to, 6, "{report}");
    assert_eq!(report.unanchored, 0, "{report}");

    // One head changed inside the second checkpoint, its signature kept: forged, from
    // the first position it vouches for.
    let (_, signed) = anchored_in_twos(&fixture, &chain("w-two")).await;
    let mut changed = signed[1].clone();
    changed.checkpoint.heads[1].head = "07".repeat(32).parse::<EntryHash>().expect("a hash");
    fixture
        .checkpoints()
        .await
        .append(&changed)
        .await
        .expect("appended");
    assert_break(
        &verify(&fixture).await,
        &chain("w-two"),
        4,
        "checkpoint_forged",
    );
}

pub(crate) async fn entries_deleted_from_the_end_under_a_checkpoint_of_several_batches_are_found(
    fixture: impl Anchored,
) {
    let writer = chain("w-one");
    anchored_in_twos(&fixture, &writer).await;

    fixture.delete(&writer, 6).await;
    fixture.delete(&writer, 5).await;

    let report = verify(&fixture).await;
    assert_break(&report, &writer, 5, "truncated");
    assert_eq!(report.chains[0].anchored_to, 4, "{report}");
}

pub(crate) async fn verify(fixture: &impl Anchored) -> LogReport {
    let store = fixture.store().await;
    let checkpoints = fixture.checkpoints().await;
    let key = fixture.public_key().await;
    verify_log(store.as_ref(), Some(checkpoints.as_ref()), Some(&key))
        .await
        .expect("the log can be read")
}

/// Asserts the report's first break is in `chain` at `sequence` and of the kind.
pub(crate) fn assert_break(report: &LogReport, chain: &ChainId, sequence: u64, kind: &str) {
    let found = report
        .first_break
        .as_ref()
        .unwrap_or_else(|| panic!("a break is found: {report}"));
    assert_eq!(found.chain.as_ref(), Some(chain), "{report}");
    assert_eq!(found.sequence, sequence, "{report}");
    let json = serde_json::to_value(&found.problem).expect("serialises");
    assert_eq!(json["kind"], kind, "{report}");
}

pub(crate) async fn an_untouched_log_verifies_with_every_batch_anchored(fixture: impl Anchored) {
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 5).await;

    let report = verify(&fixture).await;

    assert!(report.is_intact(), "{report}");
    assert_eq!(report.entries_checked, 5);
    assert_eq!(report.checkpoints_checked, 5, "one checkpoint per batch");
    assert_eq!(report.unanchored, 0);
    assert_eq!(report.chains.len(), 1);
    assert_eq!(report.chains[0].anchored_to, 5);
}

pub(crate) async fn an_edited_entry_is_found_where_it_was_edited(fixture: impl Anchored) {
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 5).await;

    fixture.set_action(&writer, 3, "secret.delete").await;

    assert_break(&verify(&fixture).await, &writer, 3, "content_hash_mismatch");
}

pub(crate) async fn a_deleted_middle_entry_is_found(fixture: impl Anchored) {
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 5).await;

    fixture.delete(&writer, 3).await;

    assert_break(&verify(&fixture).await, &writer, 3, "missing");
}

pub(crate) async fn entries_deleted_from_the_end_are_found(fixture: impl Anchored) {
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 5).await;

    fixture.delete(&writer, 5).await;
    fixture.delete(&writer, 4).await;

    let report = verify(&fixture).await;
    assert_break(&report, &writer, 4, "truncated");
}

pub(crate) async fn reordered_entries_are_found(fixture: impl Anchored) {
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 5).await;

    fixture.swap(&writer, 2, 3).await;

    assert_break(&verify(&fixture).await, &writer, 2, "out_of_order");
}

pub(crate) async fn a_chain_rehashed_after_the_fact_is_found(fixture: impl Anchored) {
    let writer = chain("w-one");
    let entries = append(&fixture.writer(&writer).await, 5).await;

    // The whole chain from entry 3 on is rewritten consistently: edited, re-hashed and
    // re-linked, so the chain alone verifies.
    let mut prev = entries[1].hash;
    for entry in &entries[2..] {
        let mut record = entry.record.clone();
        if entry.sequence == 3 {
            record.action = text("secret.delete");
            fixture.set_action(&writer, 3, "secret.delete").await;
        }
        let hash = entry_hash(entry.sequence, &prev, &record);
        fixture
            .set_hashes(&writer, entry.sequence, prev, hash)
            .await;
        prev = hash;
    }
    let unanchored = verify_log(fixture.store().await.as_ref(), None, None)
        .await
        .expect("readable");
    assert!(
        unanchored.is_intact(),
        "the chain alone cannot tell: {unanchored}"
    );

    assert_break(&verify(&fixture).await, &writer, 3, "checkpoint_mismatch");
}

/// A checkpoint of `writer` vouching for `head` at position 3 (after one at 2): a
/// rewritten head, when `head` is another entry's hash.
fn rewritten_head_at_3(writer: &ChainId, head: EntryHash) -> Checkpoint {
    Checkpoint::of_one(writer.clone(), 3, 2, head, Utc::now())
}

pub(crate) async fn a_forged_checkpoint_is_found(fixture: impl Anchored) {
    let writer = chain("w-one");
    let entries = append(&fixture.writer(&writer).await, 3).await;

    // A checkpoint signed by another key, vouching for a rewritten head.
    let other = tempfile::tempdir().expect("tempdir");
    let forger = LocalSigningKey::load_or_create(&other.path().join("forger.key")).expect("key");
    let checkpoint = rewritten_head_at_3(&writer, entries[0].hash);
    let signature = forger
        .sign(&checkpoint.signed_bytes())
        .await
        .expect("signs");
    let forged = SignedCheckpoint {
        checkpoint,
        signature,
    };
    fixture
        .checkpoints()
        .await
        .append(&forged)
        .await
        .expect("appended");

    assert_break(&verify(&fixture).await, &writer, 3, "checkpoint_forged");
}

pub(crate) async fn a_changed_checkpoint_is_found(fixture: impl Anchored) {
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 3).await;

    let mut lines = fixture.checkpoint_lines().await;
    let mut changed: serde_json::Value = serde_json::from_str(&lines[1]).expect("JSON");
    changed["position"] = 9.into();
    lines[1] = changed.to_string();
    fixture.rewrite_checkpoints(&lines).await;

    assert_break(&verify(&fixture).await, &writer, 2, "checkpoint_forged");
}

pub(crate) async fn a_removed_checkpoint_is_found(fixture: impl Anchored) {
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 4).await;

    let mut lines = fixture.checkpoint_lines().await;
    lines.remove(1);
    fixture.rewrite_checkpoints(&lines).await;

    assert_break(&verify(&fixture).await, &writer, 2, "checkpoint_missing");
}

pub(crate) async fn a_foreign_row_is_a_break_and_never_blocks_appends(fixture: impl Anchored) {
    let writer = chain("w-one");
    let log = fixture.writer(&writer).await;
    append(&log, 2).await;

    fixture.add_foreign_row(&writer).await;
    let after = log.append(read_record(9)).await.expect("appends go on");
    let restarted = fixture.writer(&writer).await;
    let next = restarted
        .append(read_record(10))
        .await
        .expect("a writer reading the head afresh appends too");

    assert_eq!((after.sequence, next.sequence), (3, 4));
    let report = verify(&fixture).await;
    let found = report
        .first_break
        .as_ref()
        .expect("the foreign row is found");
    let json = serde_json::to_value(&found.problem).expect("serialises");
    assert_eq!(json["kind"], "foreign_row", "{report}");
    assert_eq!(
        report.entries_checked, 4,
        "every real entry still verifies: {report}"
    );
}

pub(crate) async fn a_garbage_row_is_named_and_loses_no_entry(fixture: impl Anchored) {
    let writer = chain("w-one");
    let log = fixture.writer(&writer).await;
    append(&log, 3).await;

    fixture.corrupt(&writer, 2).await;
    log.append(read_record(9)).await.expect("appends go on");

    let report = verify(&fixture).await;
    assert_break(&report, &writer, 2, "unreadable");
    let stored = fixture
        .store()
        .await
        .for_chain(&writer)
        .expect("chains")
        .read(1, 10)
        .await
        .expect("readable");
    assert_eq!(stored.len(), 4, "every stored row is still there");
}

pub(crate) async fn writers_append_concurrently_each_to_its_own_chain(fixture: impl Anchored) {
    let names = [chain("w-a"), chain("w-b"), chain("w-c"), chain("w-d")];
    let mut tasks = tokio::task::JoinSet::new();
    for name in &names {
        // Separately built writers: their own connection or client, key and file handle.
        let log = fixture.writer(name).await;
        tasks.spawn(async move {
            let mut appended = Vec::new();
            for second in 0..12 {
                appended.push(log.append(read_record(second)).await.expect("append"));
            }
            // A batch is answered before its checkpoint is written: wait for the last.
            log.flush().await.expect("every batch anchored");
            appended
        });
    }
    while let Some(appended) = tasks.join_next().await {
        let sequences: Vec<u64> = appended.expect("task").iter().map(|e| e.sequence).collect();
        assert_eq!(
            sequences,
            (1..=12).collect::<Vec<_>>(),
            "no writer waited for a position"
        );
    }

    let report = verify(&fixture).await;

    assert!(report.is_intact(), "{report}");
    assert_eq!(report.entries_checked, 48);
    assert_eq!(
        report
            .chains
            .iter()
            .map(|c| c.chain.clone())
            .collect::<Vec<_>>(),
        names
    );
    assert!(
        report.chains.iter().all(|c| c.anchored_to == 12),
        "{report}"
    );
}

pub(crate) async fn a_chain_removed_whole_is_found_by_its_checkpoints(fixture: impl Anchored) {
    let kept = chain("w-a");
    let removed = chain("w-b");
    append(&fixture.writer(&kept).await, 2).await;
    append(&fixture.writer(&removed).await, 2).await;

    fixture.delete(&removed, 1).await;
    fixture.delete(&removed, 2).await;

    assert_break(&verify(&fixture).await, &removed, 1, "truncated");
}

macro_rules! anchored_sqlite {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::SqliteAnchored::new()).await;
                }
            )*
        }
    };
}

anchored_sqlite!(
    an_untouched_log_verifies_with_every_batch_anchored,
    an_edited_entry_is_found_where_it_was_edited,
    a_deleted_middle_entry_is_found,
    entries_deleted_from_the_end_are_found,
    reordered_entries_are_found,
    a_chain_rehashed_after_the_fact_is_found,
    a_forged_checkpoint_is_found,
    a_changed_checkpoint_is_found,
    a_removed_checkpoint_is_found,
    a_foreign_row_is_a_break_and_never_blocks_appends,
    a_garbage_row_is_named_and_loses_no_entry,
    writers_append_concurrently_each_to_its_own_chain,
    a_chain_removed_whole_is_found_by_its_checkpoints,
    a_checkpoint_of_several_batches_vouches_for_each,
    entries_deleted_from_the_end_under_a_checkpoint_of_several_batches_are_found,
);

#[tokio::test]
async fn a_truncated_checkpoint_file_is_named_with_its_line_and_loses_no_entry() {
    let fixture = SqliteAnchored::new();
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 3).await;
    let mut lines = fixture.checkpoint_lines().await;
    let last = lines.pop().expect("a line");
    let path = fixture.beside(CHECKPOINT_FILE_NAME);
    std::fs::write(
        &path,
        format!("{}\n{}", lines.join("\n"), &last[..last.len() / 2]),
    )
    .expect("cut short");

    let report = verify(&fixture).await;

    let found = report.first_break.as_ref().expect("the cut line is found");
    assert_eq!(found.chain, None);
    let sentence = report.to_string();
    assert!(
        sentence.contains(&format!("{} line 3", path.display())) && sentence.contains("truncated"),
        "{sentence}"
    );
    assert_eq!(report.entries_checked, 3, "{report}");
    // The next writer starts a fresh line, first putting back whole the checkpoint the
    // store's table keeps of the cut line; nothing stored is lost.
    let next = fixture.writer(&writer).await;
    next.append(read_record(9)).await.expect("appends go on");
    next.flush().await.expect("its batch anchored");
    let after = fixture.checkpoint_lines().await;
    assert_eq!(after.len(), 5, "{after:?}");
    assert_eq!(after[3], last, "the cut checkpoint whole again");
}

impl SqliteAnchored {
    /// Replaces the checkpoint file's lines, leaving the store's table as it is.
    fn rewrite_checkpoint_file(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(self.beside(CHECKPOINT_FILE_NAME), text).expect("rewritten");
    }

    /// How many checkpoints the store's table holds.
    fn table_checkpoints(&self) -> i64 {
        self.raw()
            .query_row("SELECT COUNT(*) FROM audit_checkpoints", [], |row| {
                row.get(0)
            })
            .expect("counted")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_power_cut_the_lost_checkpoints_are_not_anchored_yet_and_tampering_is_still_found()
{
    let fixture = SqliteAnchored::new();
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 8).await;
    let lines = fixture.checkpoint_lines().await;
    assert_eq!(lines.len(), 8, "a checkpoint per batch");
    assert_eq!(fixture.table_checkpoints(), 8, "in the table too");

    // A power cut: the file keeps the lines it synced (the first three), the table loses
    // its rows committed after the store's last synced commit (the last two).
    fixture.rewrite_checkpoint_file(&lines[..3]);
    fixture.execute(
        "DELETE FROM audit_checkpoints WHERE id IN (SELECT id FROM audit_checkpoints ORDER BY id DESC LIMIT 2)",
        [],
    );

    // Before any writer reopens, the table's checkpoints past the file count.
    let report = verify(&fixture).await;
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.chains[0].anchored_to, 6, "{report}");
    assert_eq!(report.unanchored, 2, "{report}");
    assert!(report.to_string().contains("not anchored yet"), "{report}");

    // A writer reopening puts them back in the file, then anchors its own batches.
    let reopened = fixture.writer(&writer).await;
    append(&reopened, 1).await;
    let file = fixture.checkpoint_lines().await;
    assert_eq!(
        file[..6],
        lines[..6],
        "the table's checkpoints back in the file"
    );
    assert_eq!(file.len(), 7, "{file:?}");
    let report = verify(&fixture).await;
    assert!(report.is_intact(), "{report}");
    assert_eq!(
        (report.chains[0].anchored_to, report.unanchored),
        (9, 0),
        "{report}"
    );

    // Entries deleted from the end with their checkpoint rows, the file keeping its
    // lines: truncation, found from the file.
    fixture.delete(&writer, 9).await;
    fixture.delete(&writer, 8).await;
    fixture.execute("DELETE FROM audit_checkpoints WHERE position >= 8", []);
    assert_break(&verify(&fixture).await, &writer, 8, "truncated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_lost_from_the_file_or_the_table_alone_still_counts_and_lost_from_both_is_missing()
 {
    let fixture = SqliteAnchored::new();
    let writer = chain("w-one");
    append(&fixture.writer(&writer).await, 4).await;
    let lines = fixture.checkpoint_lines().await;

    let mut file_without_2 = lines.clone();
    file_without_2.remove(1);
    fixture.rewrite_checkpoint_file(&file_without_2);
    let from_table = verify(&fixture).await;
    fixture.rewrite_checkpoint_file(&lines);
    fixture.execute("DELETE FROM audit_checkpoints WHERE position = 2", []);
    let from_file = verify(&fixture).await;
    fixture.rewrite_checkpoint_file(&file_without_2);
    let from_neither = verify(&fixture).await;

    assert!(from_table.is_intact(), "{from_table}");
    assert_eq!(from_table.checkpoints_checked, 4, "{from_table}");
    assert!(from_file.is_intact(), "{from_file}");
    assert_eq!(from_file.checkpoints_checked, 4, "{from_file}");
    assert_break(&from_neither, &writer, 2, "checkpoint_missing");
}

/// `keyturn audit verify` with `args`, in a clean environment.
fn verify_command(args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let output = crate::helpers::keyturn(&[])
        .args(["audit", "verify"])
        .args(args)
        .output()
        .expect("keyturn runs");
    let report = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (
        output.status.code(),
        report,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn audit_verify_needs_only_the_data_directory_and_checks_the_signatures() {
    let fixture = SqliteAnchored::new();
    append(&fixture.writer(&ChainId::default_chain()).await, 3).await;
    let dir = data_dir(&fixture);

    let (code, report, stderr) = verify_command(&["--data-dir", &dir]);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["entries_checked"], 3, "{report}");
    assert_eq!(report["checkpoints_checked"], 3, "{report}");
    assert_eq!(
        report["public_key"],
        fixture.public_key().await.fingerprint(),
        "{report}"
    );
}

#[tokio::test]
async fn an_auditor_with_only_the_public_key_finds_a_checkpoint_signed_by_another() {
    let fixture = SqliteAnchored::new();
    append(&fixture.writer(&ChainId::default_chain()).await, 2).await;
    let dir = data_dir(&fixture);
    let other = tempfile::tempdir().expect("tempdir");
    let stranger = LocalSigningKey::load_or_create(&other.path().join("k.key")).expect("key");
    let stranger_key = other.path().join("stranger.jwk");
    std::fs::write(&stranger_key, stranger.public().to_jwk().to_string()).expect("written");
    let published = keyturn::startup::public_key_file(&fixture.path);

    let (own, _, stderr) = verify_command(&[
        "--data-dir",
        &dir,
        "--public-key",
        &published.display().to_string(),
    ]);
    let (code, report, _) = verify_command(&[
        "--data-dir",
        &dir,
        "--public-key",
        &stranger_key.display().to_string(),
    ]);

    assert_eq!(
        own,
        Some(0),
        "the published public key checks every checkpoint: {stderr}"
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        report["first_break"]["problem"]["kind"], "checkpoint_forged",
        "{report}"
    );
    assert_eq!(report["first_break"]["sequence"], 1, "{report}");
}

#[test]
fn audit_verify_on_a_directory_without_a_store_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mistyped = dir.path().join("keyturn-typo");

    let (code, _, stderr) = verify_command(&["--data-dir", &mistyped.display().to_string()]);

    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no audit store at"), "{stderr}");
    assert!(!mistyped.exists(), "nothing was created");
}

#[tokio::test]
async fn a_key_that_cannot_be_read_is_named_and_nothing_is_lost() {
    let fixture = SqliteAnchored::new();
    append(&fixture.writer(&ChainId::default_chain()).await, 2).await;
    let dir = data_dir(&fixture);
    let bad_public = fixture.beside("garbage.jwk");
    std::fs::write(&bad_public, "{\"kty\":\"OKP\"").expect("written");
    let key_path = fixture.beside(SIGNING_KEY_FILE_NAME);
    let mut permissions = std::fs::metadata(&key_path).expect("key").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o644);
    std::fs::set_permissions(&key_path, permissions).expect("chmod");

    let (public_code, _, public_error) = verify_command(&[
        "--data-dir",
        &dir,
        "--public-key",
        &bad_public.display().to_string(),
    ]);
    let (key_code, _, key_error) = verify_command(&["--data-dir", &dir]);

    assert_eq!(public_code, Some(2), "{public_error}");
    assert!(
        public_error.contains(&bad_public.display().to_string())
            && public_error.contains("JSON Web Key"),
        "{public_error}"
    );
    assert_eq!(key_code, Some(2), "{key_error}");
    assert!(
        key_error.contains(&key_path.display().to_string())
            && key_error.contains("readable by other users"),
        "{key_error}"
    );
    let stored = fixture.store().await.read(1, 10).await.expect("readable");
    assert_eq!(stored.len(), 2, "every entry is still stored");
}

/// The data directory the fixture's store is in, as `--data-dir` takes it.
fn data_dir(fixture: &SqliteAnchored) -> String {
    fixture
        .path
        .parent()
        .expect("data dir")
        .display()
        .to_string()
}

/// The public key file beside the store holds every key the directory signed with.
fn published_keys(fixture: &SqliteAnchored) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(keyturn::startup::public_key_file(&fixture.path)).expect("read");
    let set: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    set["keys"].as_array().expect("a JSON Web Key Set").clone()
}

/// A writer of the default chain signing with a new local key: the old key file is
/// removed, as an operator replacing the key does, and the next writer creates one.
fn replace_the_local_key(fixture: &SqliteAnchored) {
    std::fs::remove_file(fixture.beside(SIGNING_KEY_FILE_NAME)).expect("the old key is removed");
}

/// Two checkpoints of the default chain signed by a first key, the key replaced, two
/// more signed by the new one; the two public keys.
async fn signed_before_and_after_a_key_replacement(
    fixture: &SqliteAnchored,
) -> (PublicKey, PublicKey) {
    let writer = ChainId::default_chain();
    append(&fixture.writer(&writer).await, 2).await;
    let old = fixture.public_key().await;
    replace_the_local_key(fixture);
    append(&fixture.writer(&writer).await, 2).await;
    (old, fixture.public_key().await)
}

#[tokio::test]
async fn checkpoints_signed_before_and_after_the_local_key_was_replaced_all_verify() {
    let fixture = SqliteAnchored::new();
    let (old, new) = signed_before_and_after_a_key_replacement(&fixture).await;
    let dir = data_dir(&fixture);

    let (code, report, stderr) = verify_command(&["--data-dir", &dir]);

    assert_ne!(old, new, "the key was replaced");
    let published = published_keys(&fixture);
    assert_eq!(published.len(), 2, "both keys are published: {published:?}");
    assert_eq!(published[0]["kid"], old.fingerprint());
    assert_eq!(published[1]["kid"], new.fingerprint());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["checkpoints_checked"], 4, "{report}");
    assert_eq!(
        report["public_keys"],
        serde_json::json!([old.fingerprint(), new.fingerprint()]),
        "each checkpoint checked with the key that signed it: {report}"
    );
}

#[tokio::test]
async fn an_auditor_needs_every_key_version_and_is_told_which_one_is_missing() {
    let fixture = SqliteAnchored::new();
    let (_, new) = signed_before_and_after_a_key_replacement(&fixture).await;
    let data = data_dir(&fixture);
    let auditor = tempfile::tempdir().expect("tempdir");
    let published = published_keys(&fixture);
    let mut files = Vec::new();
    for (n, key) in published.iter().enumerate() {
        let file = auditor.path().join(format!("key-{n}.jwk"));
        std::fs::write(&file, key.to_string()).expect("written");
        files.push(file.display().to_string());
    }
    let set = keyturn::startup::public_key_file(&fixture.path)
        .display()
        .to_string();

    let (both, _, both_error) = verify_command(&[
        "--data-dir",
        &data,
        "--public-key",
        &files[0],
        "--public-key",
        &files[1],
    ]);
    let (from_set, _, set_error) = verify_command(&["--data-dir", &data, "--public-key", &set]);
    let (code, report, stderr) = verify_command(&["--data-dir", &data, "--public-key", &files[0]]);

    assert_eq!(both, Some(0), "one file per key: {both_error}");
    assert_eq!(from_set, Some(0), "one JSON Web Key Set: {set_error}");
    assert_eq!(code, Some(1), "{stderr}");
    let found = &report["first_break"];
    assert_eq!(
        found["problem"]["kind"], "checkpoint_key_unknown",
        "{report}"
    );
    assert_eq!(found["problem"]["key_id"], new.fingerprint(), "{report}");
    assert_eq!(found["problem"]["position"], 3, "{report}");
    // The new writer's first checkpoint names no previous one: it vouches for the
    // chain from its start.
    assert_eq!(found["sequence"], 1, "{report}");
    assert!(
        stderr.contains(&format!(
            "(position 3) is signed by key {}, which no public key in the 1 given public key(s) matches",
            new.fingerprint()
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_checkpoint_whose_key_id_names_another_key_than_signed_it_is_forged() {
    let fixture = SqliteAnchored::new();
    let writer = ChainId::default_chain();
    let entries = append(&fixture.writer(&writer).await, 2).await;
    let old = fixture.public_key().await;
    replace_the_local_key(&fixture);
    append(&fixture.writer(&writer).await, 1).await;
    // Someone holding the new key signs a checkpoint of a rewritten head and names the
    // old key in it, as if it were an old checkpoint.
    let key = LocalSigningKey::read_file(&fixture.beside(SIGNING_KEY_FILE_NAME)).expect("key");
    let checkpoint = rewritten_head_at_3(&writer, entries[0].hash);
    let mut signature = key.sign(&checkpoint.signed_bytes()).await.expect("signs");
    signature.key_id = old.fingerprint();
    fixture
        .checkpoints()
        .await
        .append(&SignedCheckpoint {
            checkpoint,
            signature,
        })
        .await
        .expect("appended");
    let data = data_dir(&fixture);

    let (code, report, stderr) = verify_command(&["--data-dir", &data]);

    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        report["first_break"]["problem"]["kind"], "checkpoint_forged",
        "{report}"
    );
    assert_eq!(
        report["first_break"]["problem"]["key_id"],
        old.fingerprint(),
        "{report}"
    );
    assert_eq!(report["first_break"]["sequence"], 3, "{report}");
}
