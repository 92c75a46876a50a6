//! The audit log's anchors in local mode: signed checkpoints in the SQLite store's
//! `audit_checkpoints` table and in an append-only checkpoint file beside the store
//! ([`LocalCheckpoints`]: why both, what a power cut can lose, and what `verify` reads),
//! and an Ed25519 signing key file beside the store, owner-only like the file.
//!
//! Local mode keeps the key beside the log, so whoever can rewrite the data directory can
//! also re-sign a rewritten log: the anchors here catch accidents, a store edited by
//! hand and a store restored from an older copy, not an owner of the machine. Azure
//! keeps the key in Key Vault and the checkpoints in immutable blob storage.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::adapters::local::store::{LocalStore, StoreError};
use crate::domain::file::{OwnerOnlyReadError, publish_owner_only, read_owner_only_text};
use crate::ports::PortError;
use crate::ports::checkpoint::{
    CHECKPOINT_PAGE, CheckpointPages, CheckpointSigner, CheckpointStore, KeyRing,
    MAX_CHECKPOINT_LINE_BYTES, NamedKey, PublicKey, Signature, SignatureAlgorithm,
    SignedCheckpoint, StoredCheckpoint, parse_public_keys,
};

/// The checkpoint file's name inside the data directory.
pub const CHECKPOINT_FILE_NAME: &str = "audit-checkpoints.log";

/// The signing key file's name inside the data directory.
pub const SIGNING_KEY_FILE_NAME: &str = "audit-signing.key";

/// The public key's file, beside the signing key: what an auditor is given.
pub const PUBLIC_KEY_FILE_NAME: &str = "audit-signing.pub.jwk";

/// A PKCS#8 v2 Ed25519 document is 83 bytes, 112 characters of base64 and a line break;
/// anything much larger is not a key file.
const MAX_KEY_FILE_LEN: u64 = 512;

/// The file beside the store at `store_path` called `name`.
pub fn file_beside(store_path: &Path, name: &str) -> PathBuf {
    store_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(name)
}

/// Checkpoints as lines of a file opened for appending only. The lines of one
/// [`CheckpointStore::append_all`] are written whole in one `write` to a file opened
/// with `O_APPEND`, then synced once, so lines from several processes never interleave
/// and a writer anchoring several batches at once pays one sync for all of them (inside
/// [`LocalCheckpoints`], which keeps each checkpoint in the store's table too, the file
/// is synced at most about once a second instead). A line cut short (a crash before the
/// sync, a disk that filled up mid-write) is isolated by the next write, which starts on
/// a fresh line.
#[derive(Debug, Clone)]
pub struct LocalCheckpointFile {
    path: PathBuf,
    file: Arc<Mutex<Option<OpenFile>>>,
    /// How many times this handle synced the file (`sync_data`).
    syncs: Arc<AtomicU64>,
}

/// The open file and where this process last left its end.
#[derive(Debug)]
struct OpenFile {
    file: fs::File,
    /// The file's length after this process's last complete write, which ended with a
    /// line break; `None` until then, or after a write failed part-way.
    ends_clean_at: Option<u64>,
}

impl LocalCheckpointFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: Arc::new(Mutex::new(None)),
            syncs: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times this handle (and its clones) synced the file.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The open file, opened for appending on first use.
    fn open<'a>(slot: &'a mut Option<OpenFile>, path: &Path) -> io::Result<&'a mut OpenFile> {
        match slot {
            Some(open) => Ok(open),
            None => {
                let mut options = fs::OpenOptions::new();
                options.append(true).create(true).read(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                Ok(slot.insert(OpenFile {
                    file: options.open(path)?,
                    ends_clean_at: None,
                }))
            }
        }
    }

    /// Syncs what this handle wrote (`sync_data`); nothing when it never wrote.
    fn sync_now(&self) -> io::Result<()> {
        let slot = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = slot.as_ref() {
            open.file.sync_data()?;
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Appends `lines` (each without its line break) in one write, then syncs the file
    /// when `sync` says so.
    fn append_lines(&self, lines: &[String], sync: bool) -> io::Result<()> {
        let mut slot = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let open = Self::open(&mut slot, &self.path)?;
        let mut bytes =
            Vec::with_capacity(lines.iter().map(|line| line.len() + 1).sum::<usize>() + 1);
        // Only a write that did not finish leaves a line without its break: one of this
        // process's (then `ends_clean_at` is unknown) or another process's (then the
        // length moved). Where neither happened, the last byte is this process's own
        // line break and is not read again.
        let len = open.file.metadata()?.len();
        if open.ends_clean_at != Some(len) && ends_mid_line(&mut open.file, len)? {
            bytes.push(b'\n');
        }
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        open.ends_clean_at = None;
        open.file.write_all(&bytes)?;
        if sync {
            open.file.sync_data()?;
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        // With `O_APPEND` each write goes to the end, wherever other processes left it,
        // and leaves the file's offset just past it: past this write's last line break.
        open.ends_clean_at = Some(open.file.stream_position()?);
        Ok(())
    }
}

/// Whether the file, `len` bytes long, ends with something other than a line break.
fn ends_mid_line(file: &mut fs::File, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[async_trait]
impl CheckpointStore for LocalCheckpointFile {
    async fn append_all(&self, checkpoints: &[SignedCheckpoint]) -> Result<(), PortError> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = checkpoints.iter().map(SignedCheckpoint::to_line).collect();
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append_lines(&lines, true))
            .await
            .map_err(|_| PortError::transient("appending checkpoints: the task failed"))?
            .map_err(|error| {
                PortError::transient(format!(
                    "appending checkpoints to {}: {error}",
                    self.path.display()
                ))
            })
    }

    async fn pages(&self, page: usize) -> Result<Box<dyn CheckpointPages + '_>, PortError> {
        Ok(Box::new(FilePages::open(self.path.clone(), page).await?))
    }
}

/// The checkpoint file's lines, a page at a time: one buffered reader and its line
/// number are all that is held between pages.
#[derive(Debug)]
struct FilePages {
    path: PathBuf,
    /// `None` once the file is read to its end (or was never there).
    reader: Option<BufReader<fs::File>>,
    /// The number of the last line read.
    line: u64,
    page: usize,
}

impl FilePages {
    async fn open(path: PathBuf, page: usize) -> Result<Self, PortError> {
        let opened = path.clone();
        let file = tokio::task::spawn_blocking(move || fs::File::open(opened))
            .await
            .map_err(|_| PortError::transient("reading checkpoints: the task failed"))?;
        let reader = match file {
            Ok(file) => Some(BufReader::new(file)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(read_error(&path, &error)),
        };
        Ok(Self {
            path,
            reader,
            line: 0,
            page: page.max(1),
        })
    }
}

#[async_trait]
impl CheckpointPages for FilePages {
    async fn next_page(&mut self) -> Result<Vec<StoredCheckpoint>, PortError> {
        let Some(mut reader) = self.reader.take() else {
            return Ok(Vec::new());
        };
        let path = self.path.clone();
        let (line, page) = (self.line, self.page);
        let (reader, line, found) = tokio::task::spawn_blocking(move || {
            let mut line = line;
            let found = read_lines(&mut reader, &path, &mut line, page);
            (reader, line, found)
        })
        .await
        .map_err(|_| PortError::transient("reading checkpoints: the task failed"))?;
        self.line = line;
        let found = found?;
        // A short page is the file's end.
        if found.len() == self.page {
            self.reader = Some(reader);
        }
        Ok(found)
    }
}

fn read_error(path: &Path, error: &io::Error) -> PortError {
    PortError::invalid(format!(
        "reading checkpoints from {}: {error}",
        path.display()
    ))
}

/// Reads up to `page` checkpoint lines (blank lines are skipped) after line `line`,
/// which it advances. Fewer than `page`: the file ends.
fn read_lines(
    reader: &mut BufReader<fs::File>,
    path: &Path,
    line: &mut u64,
    page: usize,
) -> Result<Vec<StoredCheckpoint>, PortError> {
    let mut found = Vec::new();
    let cap = u64::try_from(MAX_CHECKPOINT_LINE_BYTES + 1).unwrap_or(u64::MAX);
    while found.len() < page {
        let mut bytes = Vec::new();
        let read = (&mut *reader)
            .take(cap)
            .read_until(b'\n', &mut bytes)
            .map_err(|error| read_error(path, &error))?;
        if read == 0 {
            break;
        }
        *line += 1;
        let complete = bytes.last() == Some(&b'\n');
        if complete {
            bytes.pop();
        } else if bytes.len() > MAX_CHECKPOINT_LINE_BYTES {
            // Skip the rest of an overlong line so the next one is read on its own.
            skip_line(reader).map_err(|error| read_error(path, &error))?;
        }
        if bytes.is_empty() && complete {
            continue;
        }
        let content = match std::str::from_utf8(&bytes) {
            Err(_) => Err("line is not UTF-8 text".to_owned()),
            Ok(_) if bytes.len() > MAX_CHECKPOINT_LINE_BYTES => Err(format!(
                "line is longer than the {MAX_CHECKPOINT_LINE_BYTES} bytes a checkpoint can take"
            )),
            Ok(text) if !complete => {
                SignedCheckpoint::from_line(text).and_then(|_| Err("line is truncated".to_owned()))
            }
            Ok(text) => SignedCheckpoint::from_line(text),
        };
        found.push(StoredCheckpoint {
            location: format!("{} line {line}", path.display()),
            content,
        });
    }
    Ok(found)
}

/// Reads past the next line break (or to the end), holding no more than the reader's
/// buffer: a garbage line of any length is never read into memory.
fn skip_line(reader: &mut BufReader<fs::File>) -> io::Result<()> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|byte| *byte == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                reader.consume(all);
            }
        }
    }
}

/// The checkpoint file beside a store is synced at most about this often while
/// checkpoints are appended (and at once on [`CheckpointStore::sync`]).
pub const FILE_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The local audit log's checkpoints, kept twice and costing no fsync of their own:
/// in the store's `audit_checkpoints` table, committed on the audit store's own
/// connection with `synchronous = NORMAL` ([`LocalStore::write_unsynced`]: written to
/// the WAL, made durable by the next audit batch's synced commit), and as lines of the
/// append-only checkpoint file beside the store ([`LocalCheckpointFile`]), written with
/// every group but synced at most once per [`FILE_SYNC_INTERVAL`] and when the log is
/// flushed or its writer stops. The store is synced at every audit batch anyway; a
/// second fsync per group on the same disk was what the checkpoints cost the reads.
///
/// # Why both
///
/// The table makes each checkpoint durable without a sync of its own. The file is the
/// anchor outside the store: deleting entries and their checkpoint rows from SQLite, or
/// putting back an older copy of the store, leaves the file's lines naming positions
/// the store no longer holds, which `verify` reports as truncation.
///
/// # What a power cut can lose
///
/// Entries are committed (synced) before their checkpoints are made, so no checkpoint
/// ever names an entry that a power cut can lose. It can lose:
/// - the file's lines written since its last sync (at most about a second's worth, or
///   all since the last flush when the log was idle), and rarely leave the last one cut
///   short;
/// - the table's rows committed since the store's last synced commit. Those are
///   checkpoints of batches that were waiting for theirs when that commit was made: the
///   writer stores no further batch while [`crate::audit`]'s 64 batches wait (a batch's
///   room is given back only once its checkpoint is committed), so at most 64 batches
///   lose their table rows.
///
/// `verify` reads the checkpoints of both (the file's lines, then the table's rows the
/// file does not hold), so after a power cut a chain's checkpoints are complete up to
/// the newest one either kept: at most 64 batches past it are reported as not anchored
/// yet, within the tolerance a stopped writer has, not as tampering. Reading the table
/// also serves a store that no writer reopened since; a table row is signed and names
/// its writer's previous checkpoint like a line of the file, so it vouches for exactly
/// as much, and since a checkpoint counts wherever it is found, deleting it from one of
/// the two hides nothing: to remove a checkpoint, both must lose it.
///
/// # Opening for writing
///
/// [`LocalCheckpoints::open_for_writing`] first appends to the file, in the order
/// stored, each checkpoint the table holds past the file's last line of its chain (a
/// file tail lost in a power cut, a write that failed), and syncs it: they are signed
/// and each names the one before, so they are as good as the file's own. A line of the
/// file the table lacks (a store from before the table, or rows lost in the power cut)
/// is never removed.
#[derive(Debug, Clone)]
pub struct LocalCheckpoints {
    file: LocalCheckpointFile,
    store: LocalStore,
    synced: Arc<Mutex<FileSync>>,
    sync_interval: Duration,
}

/// When the file was last synced, and whether lines were written since.
#[derive(Debug)]
struct FileSync {
    at: Instant,
    behind: bool,
}

impl FileSync {
    /// Synced now, nothing written since.
    fn now() -> Self {
        Self {
            at: Instant::now(),
            behind: false,
        }
    }
}

impl LocalCheckpoints {
    /// The checkpoints of `store`, with the checkpoint file at `file`, for reading
    /// (`verify`): nothing is written.
    pub fn reader(store: LocalStore, file: impl Into<PathBuf>) -> Self {
        Self {
            file: LocalCheckpointFile::new(file),
            store,
            synced: Arc::new(Mutex::new(FileSync::now())),
            sync_interval: FILE_SYNC_INTERVAL,
        }
    }

    /// The same checkpoints with the file synced at most once per `interval` instead
    /// of [`FILE_SYNC_INTERVAL`] (zero: every group, as the file alone is).
    pub fn with_file_sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }

    /// The checkpoints of `store` for its writer, after bringing the file level with
    /// the table (see [`LocalCheckpoints`]). `store` must be the audit store's own
    /// [`LocalStore`], so that checkpoint commits wait for its connection rather than
    /// sleep on SQLite's busy timeout.
    pub async fn open_for_writing(
        store: LocalStore,
        file: impl Into<PathBuf>,
    ) -> Result<Self, PortError> {
        let checkpoints = Self::reader(store, file);
        checkpoints.reconcile().await?;
        Ok(checkpoints)
    }

    pub fn file(&self) -> &LocalCheckpointFile {
        &self.file
    }

    /// Appends the table's checkpoints past the file's last line of their chain to the
    /// file, and syncs it. Returns how many were appended.
    pub async fn reconcile(&self) -> Result<usize, PortError> {
        let mut filed = self.file.pages(CHECKPOINT_PAGE).await?;
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        loop {
            let page = filed.next_page().await?;
            if page.is_empty() {
                break;
            }
            for signed in page.into_iter().filter_map(|found| found.content.ok()) {
                let position = last
                    .entry(signed.checkpoint.writer.as_str().to_owned())
                    .or_default();
                *position = (*position).max(signed.checkpoint.position());
            }
        }
        drop(filed);
        let missing = self
            .store
            .call(move |connection| {
                let stored: Vec<(String, i64)> = connection
                    .prepare("SELECT chain, MAX(position) FROM audit_checkpoints GROUP BY chain")
                    .and_then(|mut statement| {
                        statement
                            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                            .collect()
                    })
                    .map_err(StoreError::sqlite("surveying the stored checkpoints"))?;
                let mut missing: Vec<(i64, String)> = Vec::new();
                for (chain, newest) in stored {
                    let filed = last
                        .get(&chain)
                        .map_or(0, |&p| i64::try_from(p).unwrap_or(i64::MAX));
                    if newest <= filed {
                        continue;
                    }
                    let mut statement = connection
                        .prepare_cached(
                            "SELECT id, line FROM audit_checkpoints WHERE chain = ?1 AND position > ?2",
                        )
                        .map_err(StoreError::sqlite("reading the stored checkpoints"))?;
                    let rows = statement
                        .query_map(rusqlite::params![chain, filed], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                        .map_err(StoreError::sqlite("reading the stored checkpoints"))?;
                    missing.extend(rows);
                }
                missing.sort_by_key(|(id, _)| *id);
                Ok(missing)
            })
            .await
            .map_err(|error| error.into_port_error("reading the local audit checkpoints"))?;
        if missing.is_empty() {
            return Ok(0);
        }
        let lines: Vec<String> = missing.into_iter().map(|(_, line)| line).collect();
        let count = lines.len();
        self.append_to_file(lines, true).await?;
        tracing::info!(
            count,
            file = %self.file.path().display(),
            "checkpoints the store held past the checkpoint file's end were appended to it"
        );
        Ok(count)
    }

    /// Whether the file is due a sync: its last was at least the interval ago.
    fn sync_due(&self) -> bool {
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        synced.behind = true;
        synced.at.elapsed() >= self.sync_interval
    }

    async fn append_to_file(&self, lines: Vec<String>, sync: bool) -> Result<(), PortError> {
        let file = self.file.clone();
        let synced = self.synced.clone();
        tokio::task::spawn_blocking(move || {
            file.append_lines(&lines, sync)?;
            if sync {
                *synced.lock().unwrap_or_else(PoisonError::into_inner) = FileSync::now();
            }
            Ok::<_, io::Error>(())
        })
        .await
        .map_err(|_| PortError::transient("appending checkpoints: the task failed"))?
        .map_err(|error| {
            PortError::transient(format!(
                "appending checkpoints to {}: {error}",
                self.file.path().display()
            ))
        })
    }
}

#[async_trait]
impl CheckpointStore for LocalCheckpoints {
    /// Commits the checkpoints to the table without a sync, then writes them to the
    /// file in one write, syncing it only when [`FILE_SYNC_INTERVAL`] has passed since
    /// its last sync (or when the table refused them: then the file alone keeps them).
    async fn append_all(&self, checkpoints: &[SignedCheckpoint]) -> Result<(), PortError> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = checkpoints.iter().map(SignedCheckpoint::to_line).collect();
        let rows = checkpoints
            .iter()
            .zip(&lines)
            .map(|(signed, line)| {
                let position = i64::try_from(signed.checkpoint.position()).map_err(|_| {
                    PortError::invalid(
                        "checkpoint position is beyond what the local store can hold",
                    )
                })?;
                Ok((
                    signed.checkpoint.writer.as_str().to_owned(),
                    position,
                    line.clone(),
                ))
            })
            .collect::<Result<Vec<_>, PortError>>()?;
        let table = self
            .store
            .write_unsynced(move |transaction| {
                let mut insert = transaction
                    .prepare_cached(
                        "INSERT INTO audit_checkpoints (chain, position, line) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(StoreError::sqlite("preparing the checkpoint insert"))?;
                for (chain, position, line) in &rows {
                    insert
                        .execute(rusqlite::params![chain, position, line])
                        .map_err(StoreError::sqlite("inserting an audit checkpoint"))?;
                }
                Ok(())
            })
            .await
            .map_err(|error| error.into_port_error("storing audit checkpoints in the local store"));
        if let Err(error) = &table {
            tracing::warn!(%error, "the audit checkpoints are kept by the checkpoint file alone, synced now");
        }
        let sync = self.sync_due() || table.is_err();
        self.append_to_file(lines, sync).await
    }

    /// The file's checkpoints, in file order, then the table's the file does not hold
    /// (see [`LocalCheckpoints`] for why both), each once.
    async fn pages(&self, page: usize) -> Result<Box<dyn CheckpointPages + '_>, PortError> {
        Ok(Box::new(StorePages {
            file: Some(FilePages::open(self.file.path().to_path_buf(), page).await?),
            store: self.store.clone(),
            seen: SeenLines::open()?,
            after_row: 0,
            table_done: false,
            page: page.max(1),
        }))
    }

    async fn sync(&self) -> Result<(), PortError> {
        let behind = self
            .synced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .behind;
        if !behind {
            return Ok(());
        }
        let file = self.file.clone();
        let synced = self.synced.clone();
        tokio::task::spawn_blocking(move || {
            file.sync_now()?;
            *synced.lock().unwrap_or_else(PoisonError::into_inner) = FileSync::now();
            Ok::<_, io::Error>(())
        })
        .await
        .map_err(|_| PortError::transient("syncing checkpoints: the task failed"))?
        .map_err(|error| {
            PortError::transient(format!(
                "syncing checkpoints in {}: {error}",
                self.file.path().display()
            ))
        })
    }
}

/// Rows of the table read per query while looking for those the file lacks: after a
/// normal run the file holds every one of them, so most queries find none to hand out.
const TABLE_ROWS_PER_QUERY: usize = 1024;

/// [`LocalCheckpoints`] read a page at a time: the file's lines, then the table's rows
/// by id, skipping a row whose checkpoint was already handed out.
#[derive(Debug)]
struct StorePages {
    /// `None` once the file is read.
    file: Option<FilePages>,
    store: LocalStore,
    seen: SeenLines,
    /// The id of the last table row read.
    after_row: i64,
    table_done: bool,
    page: usize,
}

#[async_trait]
impl CheckpointPages for StorePages {
    async fn next_page(&mut self) -> Result<Vec<StoredCheckpoint>, PortError> {
        if let Some(file) = &mut self.file {
            let found = file.next_page().await?;
            if !found.is_empty() {
                for signed in found.iter().filter_map(|f| f.content.as_ref().ok()) {
                    self.seen.insert(signed)?;
                }
                return Ok(found);
            }
            self.file = None;
        }
        let store_path = self.store.path().display().to_string();
        let mut found = Vec::new();
        while found.len() < self.page && !self.table_done {
            let after = self.after_row;
            let limit = i64::try_from(TABLE_ROWS_PER_QUERY.min(self.page - found.len()))
                .unwrap_or(i64::MAX);
            let rows: Vec<(i64, String)> = self
                .store
                .call(move |connection| {
                    connection
                        .prepare_cached(
                            "SELECT id, line FROM audit_checkpoints WHERE id > ?1 ORDER BY id LIMIT ?2",
                        )
                        .and_then(|mut statement| {
                            statement
                                .query_map(rusqlite::params![after, limit], |row| {
                                    Ok((row.get(0)?, row.get(1)?))
                                })?
                                .collect()
                        })
                        .map_err(StoreError::sqlite("reading the stored checkpoints"))
                })
                .await
                .map_err(|error| error.into_port_error("reading the local audit checkpoints"))?;
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) < limit {
                self.table_done = true;
            }
            for (id, line) in rows {
                self.after_row = id;
                let content = SignedCheckpoint::from_line(&line);
                if let Ok(signed) = &content
                    && !self.seen.insert(signed)?
                {
                    continue;
                }
                found.push(StoredCheckpoint {
                    location: format!("{store_path} audit_checkpoints row {id}"),
                    content,
                });
            }
        }
        Ok(found)
    }
}

/// The checkpoints a read has handed out, by the SHA-256 of their stored form, kept in
/// SQLite's private temporary database (an empty file name: created under the
/// temporary directory only once its pages outgrow the cache, unlinked at once, gone
/// when the read ends: <https://www.sqlite.org/inmemorydb.html#temp_db>), so that a
/// table row the file holds too is handed out once, whatever the number of checkpoints,
/// with a bounded cache in memory.
struct SeenLines {
    connection: Mutex<rusqlite::Connection>,
}

impl std::fmt::Debug for SeenLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenLines").finish_non_exhaustive()
    }
}

/// SQLite's page cache for [`SeenLines`], in KiB (a negative `cache_size`): 256 KiB
/// holds about 5,000 digests before pages go to the temporary file.
const SEEN_CACHE_KIB: i64 = 256;

impl SeenLines {
    fn open() -> Result<Self, PortError> {
        let failed = |error: rusqlite::Error| {
            PortError::transient(format!(
                "keeping the checkpoints read in a temporary SQLite file: {error}"
            ))
        };
        let connection = rusqlite::Connection::open("").map_err(failed)?;
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
                 PRAGMA cache_size = -{SEEN_CACHE_KIB}; \
                 CREATE TABLE seen (digest BLOB PRIMARY KEY) WITHOUT ROWID;"
            ))
            .map_err(failed)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    /// Notes `signed` as handed out; false when it already was.
    fn insert(&self, signed: &SignedCheckpoint) -> Result<bool, PortError> {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(signed.to_line().as_bytes());
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let inserted = connection
            .prepare_cached("INSERT OR IGNORE INTO seen (digest) VALUES (?1)")
            .and_then(|mut statement| statement.execute([digest.as_slice()]))
            .map_err(|error| {
                PortError::transient(format!(
                    "keeping the checkpoints read in a temporary SQLite file: {error}"
                ))
            })?;
        Ok(inserted == 1)
    }
}

/// Why the local signing key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningKeyError {
    #[error("audit signing key file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "audit signing key file {path} is readable by other users (mode {mode:o}); make it owner-only (chmod 600)"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("audit signing key file {path} does not hold an Ed25519 key ({problem})")]
    Malformed {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("no random numbers for a new audit signing key")]
    Random,
}

/// The local Ed25519 signing key, read from (or created in) an owner-only file.
pub struct LocalSigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for LocalSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl LocalSigningKey {
    /// Reads the key at `path`, creating it when absent: the file is owner-only (0600),
    /// published atomically (a unique temporary file hard-linked into place, which
    /// fails rather than replace a key another process created first). The public key
    /// is written beside it as [`PUBLIC_KEY_FILE_NAME`] for auditors.
    pub fn load_or_create(path: &Path) -> Result<Self, SigningKeyError> {
        let file_error = |source| SigningKeyError::File {
            path: path.to_path_buf(),
            source,
        };
        match fs::metadata(path) {
            Ok(_) => return Self::read_file(path),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(file_error(error)),
        }
        // The key may be created before the store beside it: its directory then too,
        // owner-only like the store's.
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty() && !parent.exists())
        {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(parent).map_err(file_error)?;
        }
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| SigningKeyError::Random)?;
        let text = Zeroizing::new(format!("{}\n", STANDARD.encode(document.as_ref())));
        // Another process may have published its key first: then that one is read.
        publish_owner_only(path, text.as_bytes()).map_err(file_error)?;
        let key = Self::read_file(path)?;
        publish_public_key(&file_beside(path, PUBLIC_KEY_FILE_NAME), &key.public);
        Ok(key)
    }

    /// Reads an existing key file; never creates one.
    pub fn read_file(path: &Path) -> Result<Self, SigningKeyError> {
        let file_error = |source| SigningKeyError::File {
            path: path.to_path_buf(),
            source,
        };
        let malformed = |problem| SigningKeyError::Malformed {
            path: path.to_path_buf(),
            problem,
        };
        let text = read_owner_only_text(path, MAX_KEY_FILE_LEN).map_err(|error| match error {
            OwnerOnlyReadError::Exposed { mode } => SigningKeyError::Exposed {
                path: path.to_path_buf(),
                mode,
            },
            OwnerOnlyReadError::TooLarge { .. } => malformed("the file is too large"),
            OwnerOnlyReadError::Io(source) => file_error(source),
        })?;
        let document = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| malformed("not base64"))?,
        );
        let pair = Ed25519KeyPair::from_pkcs8(&document)
            .map_err(|_| malformed("not a PKCS#8 Ed25519 key"))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Self {
            pair,
            public: PublicKey::Ed25519(public),
        })
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }
}

/// Adds `public` to the public key file at `path`, a JSON Web Key Set that keeps every
/// key this data directory has signed with (each with its fingerprint as `kid`), so
/// checkpoints signed before a key was replaced still verify. The file is for handing
/// out; failing to write it loses nothing.
fn publish_public_key(path: &Path, public: &PublicKey) {
    let mut ring = match fs::read_to_string(path) {
        Ok(text) => match parse_public_keys(&text) {
            Ok(keys) => KeyRing::new(keys),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "the audit public key file holds no readable key; it is rewritten with the new key only");
                KeyRing::default()
            }
        },
        Err(_) => KeyRing::default(),
    };
    ring.add(NamedKey {
        kid: Some(public.fingerprint()),
        key: public.clone(),
    });
    let keys: Vec<serde_json::Value> = ring.keys().iter().map(NamedKey::to_jwk).collect();
    let set = format!("{}\n", serde_json::json!({ "keys": keys }));
    if let Err(error) = fs::write(path, set) {
        tracing::warn!(path = %path.display(), %error, "cannot write the audit public key file");
    }
}

#[async_trait]
impl CheckpointSigner for LocalSigningKey {
    async fn sign(&self, message: &[u8]) -> Result<Signature, PortError> {
        Ok(Signature {
            algorithm: SignatureAlgorithm::EdDSA,
            key_id: self.public.fingerprint(),
            bytes: self.pair.sign(message).as_ref().to_vec(),
        })
    }

    async fn public_key(&self) -> Result<PublicKey, PortError> {
        Ok(self.public.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_key_file_is_owner_only_and_signs_what_its_public_key_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("new").join(SIGNING_KEY_FILE_NAME);

        let key = LocalSigningKey::load_or_create(&path).expect("created");
        let again = LocalSigningKey::load_or_create(&path).expect("read back");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(key.public(), again.public(), "the key is never replaced");
        let signature = key.sign(b"head").await.expect("signs");
        assert!(
            again
                .public()
                .verifies(signature.algorithm, b"head", &signature.bytes)
        );
        assert!(
            !again
                .public()
                .verifies(signature.algorithm, b"other", &signature.bytes)
        );
        let published = fs::read_to_string(file_beside(&path, PUBLIC_KEY_FILE_NAME)).expect("pub");
        assert_eq!(
            PublicKey::from_jwk(&published).ok().as_ref(),
            Some(key.public())
        );
    }

    #[test]
    fn a_key_that_cannot_be_read_is_a_clear_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SIGNING_KEY_FILE_NAME);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&path)
            .and_then(|mut f| f.write_all(b"not a key\n"))
            .expect("written");

        let error = LocalSigningKey::load_or_create(&path).expect_err("refused");

        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("not base64"), "{message}");
        assert_eq!(
            fs::read(&path).expect("kept"),
            b"not a key\n",
            "never replaced"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SIGNING_KEY_FILE_NAME);
        LocalSigningKey::load_or_create(&path).expect("created");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");

        let error = LocalSigningKey::read_file(&path).expect_err("refused");

        assert!(
            matches!(error, SigningKeyError::Exposed { mode: 0o644, .. }),
            "{error}"
        );
    }

    /// `count` checkpoints of one chain, each naming the one before.
    async fn signed_checkpoints(key: &LocalSigningKey, count: u64) -> Vec<SignedCheckpoint> {
        let mut signed = Vec::new();
        for position in 1..=count {
            let checkpoint = crate::ports::checkpoint::Checkpoint::of_one(
                crate::ports::audit::ChainId::default_chain(),
                position,
                position - 1,
                crate::ports::audit::EntryHash::GENESIS,
                chrono::Utc::now(),
            );
            let signature = key.sign(&checkpoint.signed_bytes()).await.expect("signs");
            signed.push(SignedCheckpoint {
                checkpoint,
                signature,
            });
        }
        signed
    }

    #[tokio::test]
    async fn checkpoints_appended_together_are_a_line_each_and_another_writers_cut_line_is_isolated()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = LocalCheckpointFile::new(dir.path().join(CHECKPOINT_FILE_NAME));
        let key =
            LocalSigningKey::load_or_create(&dir.path().join(SIGNING_KEY_FILE_NAME)).expect("key");
        let signed = signed_checkpoints(&key, 5).await;

        file.append_all(&signed[..3]).await.expect("appended");
        // Another process's write cut short after this one's.
        let mut other = fs::OpenOptions::new()
            .append(true)
            .open(file.path())
            .expect("opened");
        other
            .write_all(b"{\"writer\":\"other\",\"po")
            .expect("written");
        file.append_all(&signed[3..]).await.expect("appended");
        let read = file.read_all().await.expect("read");

        let contents: Vec<_> = read.iter().map(|found| found.content.clone()).collect();
        let mut expected: Vec<Result<SignedCheckpoint, String>> =
            signed[..3].iter().cloned().map(Ok).collect();
        expected.push(Err("line is truncated".to_owned()));
        expected.extend(signed[3..].iter().cloned().map(Ok));
        assert_eq!(contents, expected);
        assert_eq!(
            read[3].location,
            format!("{} line 4", file.path().display())
        );
    }

    #[tokio::test]
    async fn a_truncated_last_line_is_reported_and_the_next_append_starts_a_fresh_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = LocalCheckpointFile::new(dir.path().join(CHECKPOINT_FILE_NAME));
        fs::write(file.path(), b"{\"writer\":\"chain\",\"posi").expect("written");
        let key =
            LocalSigningKey::load_or_create(&dir.path().join(SIGNING_KEY_FILE_NAME)).expect("key");
        let checkpoint = crate::ports::checkpoint::Checkpoint::of_one(
            crate::ports::audit::ChainId::default_chain(),
            1,
            0,
            crate::ports::audit::EntryHash::GENESIS,
            chrono::Utc::now(),
        );
        let signature = key.sign(&checkpoint.signed_bytes()).await.expect("signs");
        let signed = SignedCheckpoint {
            checkpoint,
            signature,
        };

        file.append(&signed).await.expect("appended");
        let read = file.read_all().await.expect("read");

        assert_eq!(read.len(), 2);
        assert_eq!(
            read[0].location,
            format!("{} line 1", file.path().display())
        );
        assert_eq!(read[0].content, Err("line is truncated".to_owned()));
        assert_eq!(read[1].content, Ok(signed));
    }

    /// `count` checkpoints of `chain` from position `from`, each naming the one before.
    async fn chain_checkpoints(
        key: &LocalSigningKey,
        chain: &str,
        from: u64,
        count: u64,
    ) -> Vec<SignedCheckpoint> {
        let mut signed = Vec::new();
        for position in from..from + count {
            let checkpoint = crate::ports::checkpoint::Checkpoint::of_one(
                crate::ports::audit::ChainId::parse(chain).expect("a chain name"),
                position,
                position - 1,
                crate::ports::audit::EntryHash::GENESIS,
                chrono::Utc::now(),
            );
            let signature = key.sign(&checkpoint.signed_bytes()).await.expect("signs");
            signed.push(SignedCheckpoint {
                checkpoint,
                signature,
            });
        }
        signed
    }

    fn synchronous(store: &LocalStore) -> i64 {
        let store = store.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime")
                .block_on(store.call(|c| {
                    c.query_row("PRAGMA synchronous", [], |row| row.get(0))
                        .map_err(StoreError::sqlite("reading synchronous"))
                }))
                .expect("read")
        })
        .join()
        .expect("joins")
    }

    fn table_lines(store_path: &Path) -> Vec<String> {
        let connection = rusqlite::Connection::open(store_path).expect("opens");
        let mut statement = connection
            .prepare("SELECT line FROM audit_checkpoints ORDER BY id")
            .expect("prepared");
        statement
            .query_map([], |row| row.get(0))
            .expect("queried")
            .collect::<Result<Vec<String>, _>>()
            .expect("read")
    }

    #[tokio::test]
    async fn groups_of_checkpoints_cost_no_file_sync_until_the_interval_or_a_sync_and_the_store_stays_synchronous_full()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_path = dir.path().join("keyturn.db");
        let store = LocalStore::open(&store_path).expect("store");
        let key =
            LocalSigningKey::load_or_create(&dir.path().join(SIGNING_KEY_FILE_NAME)).expect("key");
        // An interval no test run reaches: only a sync syncs.
        let checkpoints = LocalCheckpoints::open_for_writing(
            store.clone(),
            dir.path().join(CHECKPOINT_FILE_NAME),
        )
        .await
        .expect("opened")
        .with_file_sync_interval(Duration::from_secs(3600));
        let signed = chain_checkpoints(&key, "w-one", 1, 6).await;

        checkpoints
            .append_all(&signed[..3])
            .await
            .expect("appended");
        checkpoints
            .append_all(&signed[3..])
            .await
            .expect("appended");

        assert_eq!(checkpoints.file().syncs(), 0, "no group synced the file");
        assert_eq!(
            synchronous(&store),
            2,
            "the audit store's connection is FULL again"
        );
        let lines: Vec<String> = signed.iter().map(SignedCheckpoint::to_line).collect();
        assert_eq!(
            table_lines(&store_path),
            lines,
            "the table holds every checkpoint"
        );
        let read = checkpoints.read_all().await.expect("read");
        let contents: Vec<_> = read.into_iter().map(|found| found.content).collect();
        assert_eq!(
            contents,
            signed.iter().cloned().map(Ok).collect::<Vec<_>>(),
            "each checkpoint once, though file and table both hold it"
        );

        checkpoints.sync().await.expect("synced");
        checkpoints.sync().await.expect("nothing more to sync");
        assert_eq!(checkpoints.file().syncs(), 1);

        // With a zero interval every group syncs the file, as the file alone does.
        let every = checkpoints.clone().with_file_sync_interval(Duration::ZERO);
        let more = chain_checkpoints(&key, "w-one", 7, 2).await;
        every.append_all(&more[..1]).await.expect("appended");
        every.append_all(&more[1..]).await.expect("appended");
        assert_eq!(every.file().syncs(), 3);
    }

    #[tokio::test]
    async fn opening_for_writing_appends_the_checkpoints_the_table_holds_past_the_files_end_and_keeps_lines_it_lacks()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_path = dir.path().join("keyturn.db");
        let file_path = dir.path().join(CHECKPOINT_FILE_NAME);
        let store = LocalStore::open(&store_path).expect("store");
        let key =
            LocalSigningKey::load_or_create(&dir.path().join(SIGNING_KEY_FILE_NAME)).expect("key");
        let one = chain_checkpoints(&key, "w-one", 1, 4).await;
        let two = chain_checkpoints(&key, "w-two", 1, 3).await;
        let writing = LocalCheckpoints::open_for_writing(store.clone(), &file_path)
            .await
            .expect("opened");
        writing.append_all(&one[..2]).await.expect("appended");
        writing.append_all(&two).await.expect("appended");
        writing.append_all(&one[2..]).await.expect("appended");
        // A power cut: the file's unsynced tail is gone (w-two's last and w-one's last
        // two lines), and a line the table never held (a store from before the table).
        let old = chain_checkpoints(&key, "w-old", 1, 1).await;
        let kept: Vec<String> = one[..2]
            .iter()
            .chain(&two[..2])
            .chain(&old)
            .map(SignedCheckpoint::to_line)
            .collect();
        fs::write(&file_path, format!("{}\n", kept.join("\n"))).expect("cut");

        let reopened = LocalCheckpoints::open_for_writing(store.clone(), &file_path)
            .await
            .expect("reopened");

        let file: Vec<String> = fs::read_to_string(&file_path)
            .expect("read")
            .lines()
            .map(str::to_owned)
            .collect();
        let mut expected = kept.clone();
        // In the order the table stored them.
        expected.push(two[2].to_line());
        expected.extend(one[2..].iter().map(SignedCheckpoint::to_line));
        assert_eq!(file, expected);
        assert_eq!(
            reopened.file().syncs(),
            1,
            "synced once, after putting them back"
        );
        assert_eq!(
            reopened.reconcile().await.expect("level"),
            0,
            "nothing more to put back"
        );
        let read = reopened.read_all().await.expect("read");
        assert_eq!(read.len(), 8, "every checkpoint once: {read:?}");
    }

    #[tokio::test]
    async fn reading_takes_the_tables_checkpoints_the_file_lost_and_names_a_garbage_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_path = dir.path().join("keyturn.db");
        let file_path = dir.path().join(CHECKPOINT_FILE_NAME);
        let store = LocalStore::open(&store_path).expect("store");
        let key =
            LocalSigningKey::load_or_create(&dir.path().join(SIGNING_KEY_FILE_NAME)).expect("key");
        let signed = chain_checkpoints(&key, "w-one", 1, 3).await;
        let writing = LocalCheckpoints::open_for_writing(store.clone(), &file_path)
            .await
            .expect("opened");
        writing.append_all(&signed).await.expect("appended");
        fs::write(&file_path, format!("{}\n", signed[0].to_line())).expect("tail lost");
        rusqlite::Connection::open(&store_path)
            .expect("opens")
            .execute(
                "INSERT INTO audit_checkpoints (chain, position, line) VALUES ('w-one', 9, 'garbage')",
                [],
            )
            .expect("inserted");

        let read = LocalCheckpoints::reader(store, &file_path)
            .read_all()
            .await
            .expect("read");

        let contents: Vec<_> = read.iter().map(|found| found.content.clone()).collect();
        assert_eq!(contents.len(), 4, "{read:?}");
        assert_eq!(
            contents[..3],
            signed.iter().cloned().map(Ok).collect::<Vec<_>>()[..]
        );
        assert!(contents[3].is_err(), "{read:?}");
        assert_eq!(read[0].location, format!("{} line 1", file_path.display()));
        assert_eq!(
            read[3].location,
            format!("{} audit_checkpoints row 4", store_path.display())
        );
    }
}
