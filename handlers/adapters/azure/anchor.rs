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
use crate::ports::checkpoint::{CheckpointStore, SignedCheckpoint, StoredCheckpoint};
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
}

impl BlobCheckpointStore {
    pub fn new(client: BlobClient, container: ContainerName) -> Self {
        Self {
            client,
            container,
            cursors: Mutex::new(HashMap::new()),
        }
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

    async fn read_all(&self) -> Result<Vec<StoredCheckpoint>, PortError> {
        let names = self.client.list_blobs(&self.container, "").await?;
        let mut found = Vec::new();
        for name in names {
            if is_evidence_package(&name) {
                continue;
            }
            let bytes = self.client.get_blob(&self.container, &name).await?;
            let location = |line: usize| format!("blob {}/{name} line {line}", self.container);
            let text = String::from_utf8_lossy(&bytes);
            let complete = text.ends_with('\n');
            let lines: Vec<&str> = text.split_terminator('\n').collect();
            for (number, line) in lines.iter().enumerate() {
                if line.is_empty() {
                    continue;
                }
                let last = number + 1 == lines.len();
                let content = if last && !complete {
                    SignedCheckpoint::from_line(line)
                        .and_then(|_| Err("line is truncated".to_owned()))
                } else {
                    SignedCheckpoint::from_line(line)
                };
                found.push(StoredCheckpoint {
                    location: location(number + 1),
                    content,
                });
            }
        }
        Ok(found)
    }
}
