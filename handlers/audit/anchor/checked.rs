//! The stored checkpoints as verification and the evidence export read them: one pass
//! over the checkpoint store a page at a time ([`CheckpointStore::pages`]), each
//! checkpoint's signature checked with the key its id names, and every checkpoint that
//! decodes kept in SQLite's private temporary database, indexed by chain and position.
//!
//! A log has one checkpoint per write batch for as long as it grows (3,907 for a million
//! entries in 256-entry batches), so neither the checkpoints nor their positions are
//! held in memory: the pass holds one page, the keys looked up and the first problem
//! found, and the questions verification asks of a chain's checkpoints (which one names
//! a previous checkpoint that is not there, which is the first in position order that
//! the stored chain contradicts) are answered by the index a page at a time. The
//! temporary database is created under the temporary directory only once its pages
//! outgrow its cache ([`CACHE_KIB`]), is unlinked at once, and is gone when the
//! verification ends (<https://www.sqlite.org/inmemorydb.html#temp_db>).

use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

use super::LocatedBreak;
use crate::audit::{AuditError, BreakKind};
use crate::ports::PortError;
use crate::ports::audit::{ChainId, EntryHash};
use crate::ports::checkpoint::{
    CheckpointStore, KeyLookup, NamedKey, SignedCheckpoint, VerifyingKeys,
};

/// SQLite's page cache for the index, in KiB (a negative `cache_size`): about 2,000
/// checkpoints without their lines, or 700 with them, before pages go to the
/// temporary file. Each question reads the index in order, so a small cache costs
/// little.
const CACHE_KIB: i64 = 1024;

/// The stored checkpoints that decode, in a temporary database.
pub(crate) struct CheckpointIndex {
    connection: Mutex<Connection>,
}

impl std::fmt::Debug for CheckpointIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointIndex").finish_non_exhaustive()
    }
}

/// What one pass over the stored checkpoints found.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) index: CheckpointIndex,
    /// Checkpoints whose signature a key verified.
    pub(crate) verified: u64,
    /// The first stored checkpoint that does not decode or whose signature no key
    /// verifies, with the first position it leaves unanchored.
    pub(crate) first_problem: Option<LocatedBreak>,
    /// Every key that verified a checkpoint, in the order first used, each with the id
    /// the first checkpoint it verified named.
    pub(crate) keys: Vec<NamedKey>,
}

/// One checkpoint as the index returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Indexed {
    /// Its place in the order stored (from 1).
    pub(crate) stored: i64,
    pub(crate) position: u64,
    pub(crate) head: EntryHash,
    pub(crate) location: String,
}

/// A checkpoint that names a previous one the chain's verified checkpoints lack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MissingPrevious {
    pub(crate) previous: u64,
    pub(crate) named_by: String,
    /// The highest verified position below `previous` (0: none).
    pub(crate) before: u64,
}

fn temporary(error: rusqlite::Error) -> AuditError {
    AuditError::Store {
        operation: "keeping the checkpoints in a temporary SQLite file",
        source: PortError::transient(error.to_string()),
    }
}

/// Positions as SQLite orders them: an unsigned 64-bit position as the signed integer
/// SQLite stores, order kept (the top bit flipped).
fn key(position: u64) -> i64 {
    i64::from_ne_bytes((position ^ (1 << 63)).to_ne_bytes())
}

fn position(key: i64) -> u64 {
    u64::from_ne_bytes(key.to_ne_bytes()) ^ (1 << 63)
}

/// Reads every checkpoint of `checkpoints`, `page` at a time, checks each signature with
/// the key its id names among `keys` (none: nothing verifies), and indexes those that
/// decode, with their stored line when `keep_lines`. A key that cannot be read is an
/// error; a checkpoint that does not decode or verify is the first problem (or not the
/// first).
pub(crate) async fn check(
    checkpoints: &dyn CheckpointStore,
    keys: Option<&dyn VerifyingKeys>,
    page: usize,
    keep_lines: bool,
) -> Result<Checked, AuditError> {
    let index = CheckpointIndex::open()?;
    let mut checked = Checked {
        index,
        verified: 0,
        first_problem: None,
        keys: Vec::new(),
    };
    // Each key id is looked up once, however many checkpoints name it.
    let mut looked_up: std::collections::BTreeMap<String, KeyLookup> =
        std::collections::BTreeMap::new();
    let mut pages = checkpoints
        .pages(page)
        .await
        .map_err(super::store_error("reading the checkpoints"))?;
    let mut stored = 0i64;
    loop {
        let found = pages
            .next_page()
            .await
            .map_err(super::store_error("reading the checkpoints"))?;
        if found.is_empty() {
            break;
        }
        let mut rows = Vec::with_capacity(found.len());
        for found in found {
            stored += 1;
            let signed = match found.content {
                Ok(signed) => signed,
                Err(problem) => {
                    checked.first_problem.get_or_insert(LocatedBreak {
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
            let problem = judge_signature(
                &signed,
                &looked_up[key_id],
                &found.location,
                &mut checked.keys,
            );
            let verified = problem.is_none();
            if let Some(problem) = problem {
                checked.first_problem.get_or_insert(LocatedBreak {
                    chain: Some(signed.checkpoint.writer.clone()),
                    sequence: signed.checkpoint.previous.saturating_add(1),
                    problem,
                });
            } else {
                checked.verified += 1;
            }
            rows.push((stored, signed, verified, found.location));
        }
        checked.index.insert(&rows, keep_lines)?;
    }
    Ok(checked)
}

/// What is wrong with `signed`'s signature given what its key id looked up (`None`:
/// verified, and the key that verified it is among `used`).
fn judge_signature(
    signed: &SignedCheckpoint,
    lookup: &KeyLookup,
    location: &str,
    used: &mut Vec<NamedKey>,
) -> Option<BreakKind> {
    let key_id = &signed.signature.key_id;
    match lookup {
        KeyLookup::Candidates(candidates) => {
            let bytes = signed.checkpoint.signed_bytes();
            let verifying = candidates.iter().find(|key| {
                key.verifies(signed.signature.algorithm, &bytes, &signed.signature.bytes)
            });
            match verifying {
                Some(key) => {
                    if !used.iter().any(|k| k.key == *key) {
                        used.push(NamedKey {
                            kid: Some(key_id.clone()),
                            key: key.clone(),
                        });
                    }
                    None
                }
                None => Some(BreakKind::CheckpointForged {
                    location: location.to_owned(),
                    position: signed.checkpoint.position(),
                    key_id: key_id.clone(),
                    outside_of: None,
                }),
            }
        }
        KeyLookup::Unknown { looked_in } => Some(BreakKind::CheckpointKeyUnknown {
            location: location.to_owned(),
            position: signed.checkpoint.position(),
            key_id: key_id.clone(),
            looked_in: looked_in.clone(),
        }),
        KeyLookup::Foreign { expected } => Some(BreakKind::CheckpointForged {
            location: location.to_owned(),
            position: signed.checkpoint.position(),
            key_id: key_id.clone(),
            outside_of: Some(expected.clone()),
        }),
        KeyLookup::Unverifiable { reason } => Some(BreakKind::CheckpointUnverifiable {
            location: location.to_owned(),
            position: signed.checkpoint.position(),
            key_id: key_id.clone(),
            reason: reason.clone(),
        }),
    }
}

impl CheckpointIndex {
    fn open() -> Result<Self, AuditError> {
        let connection = Connection::open("").map_err(temporary)?;
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
                 PRAGMA cache_size = -{CACHE_KIB}; \
                 CREATE TABLE checkpoints (stored INTEGER NOT NULL, chain TEXT NOT NULL, \
                 position INTEGER NOT NULL, previous INTEGER NOT NULL, head BLOB NOT NULL, \
                 verified INTEGER NOT NULL, location TEXT NOT NULL); \
                 CREATE INDEX checkpoints_by_position ON checkpoints (chain, position, stored); \
                 CREATE INDEX checkpoints_by_stored ON checkpoints (stored, position); \
                 CREATE TABLE lines (stored INTEGER PRIMARY KEY, line TEXT NOT NULL);"
            ))
            .map_err(temporary)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(
        &self,
        rows: &[(i64, SignedCheckpoint, bool, String)],
        keep_lines: bool,
    ) -> Result<(), AuditError> {
        let mut connection = self.connection();
        let transaction = connection.transaction().map_err(temporary)?;
        {
            let mut insert = transaction
                .prepare_cached(
                    "INSERT INTO checkpoints (stored, chain, position, previous, head, verified, location) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(temporary)?;
            let mut keep = transaction
                .prepare_cached("INSERT INTO lines (stored, line) VALUES (?1, ?2)")
                .map_err(temporary)?;
            for (stored, signed, verified, location) in rows {
                let checkpoint = &signed.checkpoint;
                // Each head is a checkpoint of its batch, naming the one before it.
                for (previous, head) in checkpoint.links() {
                    insert
                        .execute(params![
                            stored,
                            checkpoint.writer.as_str(),
                            key(head.position),
                            key(previous),
                            head.head.as_bytes().as_slice(),
                            verified,
                            location,
                        ])
                        .map_err(temporary)?;
                }
                if keep_lines {
                    keep.execute(params![stored, signed.to_line()])
                        .map_err(temporary)?;
                }
            }
        }
        transaction.commit().map_err(temporary)
    }

    /// The chains verified checkpoints name, in name order.
    pub(crate) fn chains(&self) -> Result<Vec<ChainId>, AuditError> {
        let connection = self.connection();
        let names: Vec<String> = connection
            .prepare("SELECT DISTINCT chain FROM checkpoints WHERE verified = 1 ORDER BY chain")
            .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
            .map_err(temporary)?;
        Ok(names
            .into_iter()
            .filter_map(|name| ChainId::parse(name).ok())
            .collect())
    }

    /// Of `chain`'s verified checkpoints that name a previous one (not 0) that no
    /// verified checkpoint of the chain is at, the one with the lowest verified
    /// position below it, the first stored among equals.
    pub(crate) fn first_missing_previous(
        &self,
        chain: &ChainId,
    ) -> Result<Option<MissingPrevious>, AuditError> {
        let connection = self.connection();
        let found: Option<(i64, String, Option<i64>)> = connection
            .prepare_cached(
                "SELECT v.previous, v.location, \
                   (SELECT MAX(p.position) FROM checkpoints p \
                    WHERE p.chain = v.chain AND p.verified = 1 AND p.position < v.previous) AS before \
                 FROM checkpoints v \
                 WHERE v.chain = ?1 AND v.verified = 1 AND v.previous != ?2 \
                   AND NOT EXISTS (SELECT 1 FROM checkpoints p \
                     WHERE p.chain = v.chain AND p.verified = 1 AND p.position = v.previous) \
                 ORDER BY COALESCE(before, ?2), v.stored LIMIT 1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![chain.as_str(), key(0)], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()
            })
            .map_err(temporary)?;
        Ok(found.map(|(previous, named_by, before)| MissingPrevious {
            previous: position(previous),
            named_by,
            before: before.map_or(0, position),
        }))
    }

    /// `chain`'s verified checkpoints in position order (the first stored first among
    /// equals), at most `limit` after `after` (the last one a previous call returned).
    pub(crate) fn verified_by_position(
        &self,
        chain: &ChainId,
        after: Option<&Indexed>,
        limit: usize,
    ) -> Result<Vec<Indexed>, AuditError> {
        let (after_position, after_stored) = match after {
            Some(after) => (key(after.position), after.stored),
            None => (i64::MIN, i64::MIN),
        };
        let connection = self.connection();
        connection
            .prepare_cached(
                "SELECT stored, position, head, location FROM checkpoints \
                 WHERE chain = ?1 AND verified = 1 AND (position, stored) > (?2, ?3) \
                 ORDER BY position, stored LIMIT ?4",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(
                        params![
                            chain.as_str(),
                            after_position,
                            after_stored,
                            i64::try_from(limit).unwrap_or(i64::MAX)
                        ],
                        |row| {
                            let head: Vec<u8> = row.get(2)?;
                            Ok((row.get(0)?, row.get(1)?, head, row.get(3)?))
                        },
                    )?
                    .collect::<Result<Vec<(i64, i64, Vec<u8>, String)>, _>>()
            })
            .map_err(temporary)?
            .into_iter()
            .map(|(stored, at, head, location)| {
                let head: [u8; 32] = head.try_into().map_err(|_| AuditError::Store {
                    operation: "keeping the checkpoints in a temporary SQLite file",
                    source: PortError::transient("a head hash read back at the wrong length"),
                })?;
                Ok(Indexed {
                    stored,
                    position: position(at),
                    head: EntryHash::from_bytes(head),
                    location,
                })
            })
            .collect()
    }

    /// The lowest position at or after `from` of `chain`'s verified checkpoints.
    pub(crate) fn first_verified_from(
        &self,
        chain: &ChainId,
        from: u64,
    ) -> Result<Option<u64>, AuditError> {
        self.scalar(
            "SELECT MIN(position) FROM checkpoints WHERE chain = ?1 AND verified = 1 AND position >= ?2",
            chain,
            from,
        )
    }

    /// The last head of the stored checkpoint that holds the first of `chain`'s verified
    /// heads at or after `from`: a checkpoint carries the heads of several batches, and
    /// an extract that ends at one of them ends at its checkpoint's last.
    pub(crate) fn line_end_from(
        &self,
        chain: &ChainId,
        from: u64,
    ) -> Result<Option<u64>, AuditError> {
        self.scalar(
            "SELECT MAX(l.position) FROM checkpoints l WHERE l.stored = \
               (SELECT f.stored FROM checkpoints f \
                WHERE f.chain = ?1 AND f.verified = 1 AND f.position >= ?2 \
                ORDER BY f.position, f.stored LIMIT 1)",
            chain,
            from,
        )
    }

    /// The highest position at or before `to` of `chain`'s checkpoints, verified or not.
    pub(crate) fn last_decoded_to(
        &self,
        chain: &ChainId,
        to: u64,
    ) -> Result<Option<u64>, AuditError> {
        self.scalar(
            "SELECT MAX(position) FROM checkpoints WHERE chain = ?1 AND position <= ?2",
            chain,
            to,
        )
    }

    /// The lowest position at or after `from` of `chain`'s checkpoints, verified or not.
    pub(crate) fn first_decoded_from(
        &self,
        chain: &ChainId,
        from: u64,
    ) -> Result<Option<u64>, AuditError> {
        self.scalar(
            "SELECT MIN(position) FROM checkpoints WHERE chain = ?1 AND position >= ?2",
            chain,
            from,
        )
    }

    fn scalar(&self, sql: &str, chain: &ChainId, at: u64) -> Result<Option<u64>, AuditError> {
        let connection = self.connection();
        let found: Option<i64> = connection
            .prepare_cached(sql)
            .and_then(|mut statement| {
                statement.query_row(params![chain.as_str(), key(at)], |row| row.get(0))
            })
            .map_err(temporary)?;
        Ok(found.map(position))
    }

    /// The stored lines (kept when checked with `keep_lines`) of `chain`'s checkpoints,
    /// verified or not, at positions `from ..= to`, in the order stored: at most `limit`
    /// stored after `after` (0 to start).
    pub(crate) fn lines(
        &self,
        chain: &ChainId,
        from: u64,
        to: u64,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, AuditError> {
        let connection = self.connection();
        connection
            .prepare_cached(
                "SELECT DISTINCT c.stored, l.line FROM checkpoints c JOIN lines l ON l.stored = c.stored \
                 WHERE c.chain = ?1 AND c.position BETWEEN ?2 AND ?3 AND c.stored > ?4 \
                 ORDER BY c.stored LIMIT ?5",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(
                        params![
                            chain.as_str(),
                            key(from),
                            key(to),
                            after,
                            i64::try_from(limit).unwrap_or(i64::MAX)
                        ],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )?
                    .collect()
            })
            .map_err(temporary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_keep_their_order_as_sqlite_integers() {
        let positions = [
            0,
            1,
            2,
            255,
            1 << 62,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for pair in positions.windows(2) {
            assert!(key(pair[0]) < key(pair[1]), "{pair:?}");
        }
        for p in positions {
            assert_eq!(position(key(p)), p);
        }
    }
}
