//! The audit log's checkpoints in Azure Blob storage: one append blob per writer chain
//! (`<chain>/<index>.log`, one line per checkpoint), in a container whose time-based
//! retention policy allows protected append writes only. keyturn's identities can
//! create a blob and append to it; nobody can change or delete a written block until
//! the retention period ends.
//!
//! Evidence packages exported on a schedule share the container, as block blobs under
//! [`EVIDENCE_PREFIX`] (`evidence/<yyyy-mm>/...zip`); reading the checkpoints passes
//! over them.
//!
//! Only checkpoints go there, not every entry: a checkpoint is a few hundred bytes per
//! batch and proves the whole chain up to its position, while a complete copy would
//! double every audit write (and its latency) for what the chain and the signed
//! checkpoints already prove.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::adapters::azure::client::blob::{
    BlobClient, ContainerName, MAX_BLOCK_BYTES, MAX_BLOCKS_PER_BLOB,
};
use crate::ports::audit::ChainId;
use crate::ports::checkpoint::{
    CheckpointPages, CheckpointStore, MAX_CHECKPOINT_LINE_BYTES, SignedCheckpoint, StoredCheckpoint,
};
use crate::ports::{FailureKind, PortError};

/// Where scheduled evidence packages are kept in the checkpoint container.
pub const EVIDENCE_PREFIX: &str = "evidence/";

/// Whether `name` is an evidence package rather than a chain's checkpoint blob (a chain
/// may be called `evidence`: its blobs end in `.log`).
pub fn is_evidence_package(name: &str) -> bool {
    name.starts_with(EVIDENCE_PREFIX) && name.ends_with(".zip")
}

/// Where a writer's next checkpoint goes.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    index: u32,
    offset: u64,
    /// Lines in the blob: at least as many as its blocks, so a blob rolls over before
    /// it reaches [`MAX_BLOCKS_PER_BLOB`] blocks, and holds no more lines than a blob of
    /// one line per block, which the client reads whole (`MAX_READ_BYTES`).
    lines: u32,
}

/// Checkpoints in append blobs.
#[derive(Debug)]
pub struct BlobCheckpointStore {
    client: BlobClient,
    container: ContainerName,
    cursors: Mutex<HashMap<ChainId, Cursor>>,
    /// Bytes of a blob read per request: [`READ_BYTES`].
    read_bytes: u64,
}

impl BlobCheckpointStore {
    pub fn new(client: BlobClient, container: ContainerName) -> Self {
        Self {
            client,
            container,
            cursors: Mutex::new(HashMap::new()),
            read_bytes: READ_BYTES,
        }
    }

    /// The same store reading `bytes` (at least one) of a blob per request instead of
    /// [`READ_BYTES`]: for tests, to cut lines at range ends.
    pub fn with_read_bytes(mut self, bytes: u64) -> Self {
        self.read_bytes = bytes.max(1);
        self
    }

    /// The client the container is reached with.
    pub fn client(&self) -> &BlobClient {
        &self.client
    }

    /// The container the checkpoints are kept in.
    pub fn container(&self) -> &ContainerName {
        &self.container
    }

    fn blob_name(chain: &ChainId, index: u32) -> String {
        format!("{chain}/{index:06}.log")
    }

    /// Where `chain`'s checkpoints continue: after the last block of its newest blob.
    async fn find_cursor(&self, chain: &ChainId) -> Result<Cursor, PortError> {
        let names = self
            .client
            .list_blobs(&self.container, &format!("{chain}/"))
            .await?;
        let Some(index) = names
            .iter()
            .filter_map(|name| name.strip_prefix(&format!("{chain}/")))
            .filter_map(|rest| rest.strip_suffix(".log"))
            .filter_map(|index| index.parse::<u32>().ok())
            .max()
        else {
            return Ok(Cursor {
                index: 0,
                offset: 0,
                lines: 0,
            });
        };
        let bytes = self
            .client
            .get_blob(&self.container, &Self::blob_name(chain, index))
            .await?;
        Ok(Cursor {
            index,
            offset: bytes.len() as u64,
            lines: u32::try_from(bytes.iter().filter(|b| **b == b'\n').count()).unwrap_or(u32::MAX),
        })
    }
}

impl BlobCheckpointStore {
    /// Appends `block`, `count` whole lines of `chain`'s checkpoints, to the chain's
    /// newest blob, or to a new one when that one would pass [`MAX_BLOCKS_PER_BLOB`]
    /// lines.
    async fn append_block(
        &self,
        chain: &ChainId,
        block: Vec<u8>,
        count: usize,
    ) -> Result<(), PortError> {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let mut cursors = self.cursors.lock().await;
        let mut cursor = match cursors.get(chain) {
            Some(cursor) => *cursor,
            None => self.find_cursor(chain).await?,
        };
        if cursor.lines > 0 && cursor.lines.saturating_add(count) >= MAX_BLOCKS_PER_BLOB {
            cursor = Cursor {
                index: cursor.index + 1,
                offset: 0,
                lines: 0,
            };
        }
        let blob = Self::blob_name(chain, cursor.index);
        if cursor.offset == 0 {
            self.client
                .create_append_blob(&self.container, &blob)
                .await?;
        }
        match self
            .client
            .append_block(&self.container, &blob, cursor.offset, block)
            .await
        {
            Ok(offset) => {
                cursors.insert(
                    chain.clone(),
                    Cursor {
                        index: cursor.index,
                        offset,
                        lines: cursor.lines.saturating_add(count),
                    },
                );
                Ok(())
            }
            Err(error) => {
                // The blob is not where this writer thought (another writer of the same
                // chain, or a retried append whose first try was stored): read it
                // afresh next time.
                if error.kind == FailureKind::Conflict {
                    cursors.remove(chain);
                }
                Err(error)
            }
        }
    }
}

#[async_trait]
impl CheckpointStore for BlobCheckpointStore {
    async fn append_all(&self, checkpoints: &[SignedCheckpoint]) -> Result<(), PortError> {
        let mut lines = Vec::with_capacity(checkpoints.len());
        for checkpoint in checkpoints {
            let mut line = checkpoint.to_line().into_bytes();
            line.push(b'\n');
            lines.push((&checkpoint.checkpoint.writer, line));
        }
        // One append block per chain carries all of that chain's lines (a writer passes
        // only its own), split where a block would pass the service's limit.
        let mut start = 0;
        while let Some((chain, _)) = lines.get(start) {
            let chain = *chain;
            let mut end = start;
            let mut bytes = 0;
            while let Some((next, line)) = lines.get(end) {
                if *next != chain || (end > start && bytes + line.len() > MAX_BLOCK_BYTES) {
                    break;
                }
                bytes += line.len();
                end += 1;
            }
            let block: Vec<u8> = lines[start..end]
                .iter()
                .flat_map(|(_, line)| line.iter().copied())
                .collect();
            self.append_block(chain, block, end - start).await?;
            start = end;
        }
        Ok(())
    }

    async fn pages(&self, page: usize) -> Result<Box<dyn CheckpointPages + '_>, PortError> {
        let names = self
            .client
            .list_blobs(&self.container, "")
            .await?
            .into_iter()
            .filter(|name| !is_evidence_package(name))
            .collect::<Vec<_>>()
            .into_iter();
        Ok(Box::new(BlobPages {
            store: self,
            names,
            blob: None,
            page: page.max(1),
        }))
    }
}

/// Bytes of a checkpoint blob read per request: a few thousand lines, so a blob of
/// [`MAX_BLOCKS_PER_BLOB`] lines is never held whole.
const READ_BYTES: u64 = 1024 * 1024;

/// The checkpoint blobs read a page at a time, each a range of bytes at a time: the
/// blob names (one per 50,000 checkpoints), one range and a line cut by its end are
/// all that is held.
struct BlobPages<'a> {
    store: &'a BlobCheckpointStore,
    names: std::vec::IntoIter<String>,
    blob: Option<BlobRead>,
    page: usize,
}

/// Where the read of one blob is.
struct BlobRead {
    name: String,
    /// The next byte to read.
    offset: u64,
    /// The number of the last line handed out.
    line: usize,
    /// The start of a line the last range cut, at most one byte more than a checkpoint
    /// line can take; `cut_len` counts all of it.
    cut: Vec<u8>,
    cut_len: usize,
    /// The last range read, and how much of it is handed out.
    range: Vec<u8>,
    used: usize,
    /// No byte follows `range`.
    ended: bool,
}

impl BlobRead {
    /// The checkpoint (or what is wrong) in one line of the blob: `complete` when a
    /// line break ends it.
    fn line(&mut self, container: &ContainerName, complete: bool) -> Option<StoredCheckpoint> {
        self.line += 1;
        let bytes = std::mem::take(&mut self.cut);
        let len = std::mem::take(&mut self.cut_len);
        if len == 0 {
            return None;
        }
        let content = if len > MAX_CHECKPOINT_LINE_BYTES {
            Err(format!(
                "line is {len} bytes, more than the {MAX_CHECKPOINT_LINE_BYTES} a checkpoint can take"
            ))
        } else {
            let text = String::from_utf8_lossy(&bytes);
            if complete {
                SignedCheckpoint::from_line(&text)
            } else {
                SignedCheckpoint::from_line(&text).and_then(|_| Err("line is truncated".to_owned()))
            }
        };
        Some(StoredCheckpoint {
            location: format!("blob {container}/{} line {}", self.name, self.line),
            content,
        })
    }

    /// Adds bytes of the line being read, keeping only what a checkpoint line can hold.
    fn take(&mut self, bytes: &[u8]) {
        let room = (MAX_CHECKPOINT_LINE_BYTES + 1).saturating_sub(self.cut.len());
        self.cut.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.cut_len += bytes.len();
    }
}

#[async_trait]
impl CheckpointPages for BlobPages<'_> {
    async fn next_page(&mut self) -> Result<Vec<StoredCheckpoint>, PortError> {
        let container = &self.store.container;
        let mut found = Vec::new();
        while found.len() < self.page {
            let Some(blob) = &mut self.blob else {
                let Some(name) = self.names.next() else {
                    break;
                };
                self.blob = Some(BlobRead {
                    name,
                    offset: 0,
                    line: 0,
                    cut: Vec::new(),
                    cut_len: 0,
                    range: Vec::new(),
                    used: 0,
                    ended: false,
                });
                continue;
            };
            if blob.used < blob.range.len() {
                let rest = &blob.range[blob.used..];
                match rest.iter().position(|byte| *byte == b'\n') {
                    Some(end) => {
                        let line = blob.range[blob.used..blob.used + end].to_vec();
                        blob.take(&line);
                        blob.used += end + 1;
                        if let Some(stored) = blob.line(container, true) {
                            found.push(stored);
                        }
                    }
                    None => {
                        let rest = blob.range[blob.used..].to_vec();
                        blob.take(&rest);
                        blob.used = blob.range.len();
                    }
                }
                continue;
            }
            if blob.ended {
                // The blob's last line, when no line break ends it.
                if blob.cut_len > 0
                    && let Some(stored) = blob.line(container, false)
                {
                    found.push(stored);
                }
                self.blob = None;
                continue;
            }
            let range = self
                .store
                .client
                .get_blob_range(container, &blob.name, blob.offset, self.store.read_bytes)
                .await?
                .unwrap_or_default();
            blob.offset += range.len() as u64;
            blob.ended = (range.len() as u64) < self.store.read_bytes;
            blob.range = range;
            blob.used = 0;
        }
        Ok(found)
    }
}
