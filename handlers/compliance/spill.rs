//! What an evaluation counts per scope and per application, held in memory up to a bound
//! and spilled past it into a temporary SQLite database, so that memory does not grow
//! with the tenant: the per-scope tallies of the scoreboard ([`ScopeTallies`]) and the
//! engine's facts per application ([`Applications`]).
//!
//! Below the bound nothing touches the disk. Past it, everything held is written in one
//! transaction (tallies added to those already spilled, an application's first-seen name
//! and owners kept) and memory starts again from empty. Reads give the same answers
//! either way, in the same order: SQLite compares text with `memcmp` (the BINARY
//! collation), as Rust orders `String`s.
//!
//! The database is SQLite's private temporary one (an empty file name): SQLite creates
//! it under the temporary directory, unlinks it at once and it is gone when the
//! connection closes (<https://www.sqlite.org/inmemorydb.html#temp_db>), so neither a
//! failed export nor a crash leaves it behind.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::scores::{CheckResult, ScopeKind, Tally};
use crate::domain::inventory::RecordId;

/// Entries (scope tallies, or applications and their names) held in memory before they
/// are spilled: a few hundred bytes each (a name and a tally; a record id, app id, name
/// and owners), so a few hundred kilobytes, while a tenant's hundred thousand
/// applications would hold tens of megabytes. Each spill writes at most this many rows
/// in one transaction. `benches/evidence.rs` measured 4096 too: a megabyte more at the
/// peak of both its tenants, and no faster.
pub const SPILL_AFTER: usize = 1024;

/// SQLite's page cache for the spilled entries, in KiB (a negative `cache_size`): the
/// default is 2,000 KiB; a spill is written in sorted batches and read once in order,
/// so a small cache costs little.
const SPILL_CACHE_KIB: i64 = 512;

/// Opens a private temporary database with `schema`. Nothing here must survive a crash:
/// no journal, no syncing.
fn temporary(schema: &str) -> Result<Connection, SpillError> {
    let connection = Connection::open("")?;
    connection.execute_batch(&format!(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         PRAGMA cache_size = -{SPILL_CACHE_KIB}; {schema}"
    ))?;
    Ok(connection)
}

/// Why spilled tallies could not be written or read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpillError {
    #[error("cannot keep the tallies in a temporary SQLite file: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a tally spilled to the temporary SQLite file does not read back: {0}")]
    Unreadable(String),
}

/// A count as SQLite stores it (a signed 64-bit integer); tallies of one evaluation never
/// reach `i64::MAX`.
fn stored(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn count_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Tallies per scope (subscription, vault, application, owner).
#[derive(Debug)]
pub struct ScopeTallies {
    held: BTreeMap<(ScopeKind, String), Tally>,
    limit: usize,
    spilled: Option<Connection>,
}

impl Default for ScopeTallies {
    fn default() -> Self {
        Self::new(SPILL_AFTER)
    }
}

impl ScopeTallies {
    /// Holds at most `limit` tallies in memory (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            held: BTreeMap::new(),
            limit: limit.max(1),
            spilled: None,
        }
    }

    /// Counts one check made within the scope `kind` named `name`.
    pub fn add(
        &mut self,
        kind: ScopeKind,
        name: String,
        result: CheckResult,
    ) -> Result<(), SpillError> {
        let key = (kind, name);
        if let Some(tally) = self.held.get_mut(&key) {
            tally.add(result);
            return Ok(());
        }
        if self.held.len() >= self.limit {
            self.spill()?;
        }
        self.held.entry(key).or_default().add(result);
        Ok(())
    }

    /// Whether some tallies went to the temporary database.
    pub fn is_spilled(&self) -> bool {
        self.spilled.is_some()
    }

    fn spill(&mut self) -> Result<(), SpillError> {
        if self.spilled.is_none() {
            self.spilled = Some(temporary(
                "CREATE TABLE tallies (kind TEXT NOT NULL, name TEXT NOT NULL, \
                 checks INTEGER NOT NULL, passed INTEGER NOT NULL, failed INTEGER NOT NULL, \
                 excepted INTEGER NOT NULL, PRIMARY KEY (kind, name)) WITHOUT ROWID;",
            )?);
        }
        let connection = self.spilled.as_mut().expect("opened above");
        let transaction = connection.transaction()?;
        {
            let mut upsert = transaction.prepare_cached(
                "INSERT INTO tallies (kind, name, checks, passed, failed, excepted) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (kind, name) DO UPDATE SET \
                     checks = checks + excluded.checks, passed = passed + excluded.passed, \
                     failed = failed + excluded.failed, excepted = excepted + excluded.excepted",
            )?;
            for ((kind, name), tally) in std::mem::take(&mut self.held) {
                upsert.execute(params![
                    kind.as_str(),
                    name,
                    stored(tally.checks),
                    stored(tally.passed),
                    stored(tally.failed),
                    stored(tally.excepted)
                ])?;
            }
        }
        Ok(transaction.commit()?)
    }

    /// The tally of one scope, if any check counted under it.
    pub fn get(&self, kind: ScopeKind, name: &str) -> Result<Option<Tally>, SpillError> {
        let held = self.held.get(&(kind, name.to_owned())).copied();
        let Some(connection) = &self.spilled else {
            return Ok(held);
        };
        let spilled = connection
            .query_row(
                "SELECT checks, passed, failed, excepted FROM tallies \
                 WHERE kind = ?1 AND name = ?2",
                params![kind.as_str(), name],
                |row| tally_at(row, 0),
            )
            .optional()?;
        Ok(match (spilled, held) {
            (Some(spilled), Some(held)) => Some(sum(spilled, held)),
            (spilled, held) => spilled.or(held),
        })
    }

    /// How many scopes of `kind` have a tally.
    pub fn count(&self, kind: ScopeKind) -> Result<u64, SpillError> {
        let mut count = 0;
        self.each(kind, |_, _| {
            count += 1;
            Ok::<_, SpillError>(())
        })?;
        Ok(count)
    }

    /// Every scope of `kind` with its tally, in name order.
    pub fn each<E: From<SpillError>>(
        &self,
        kind: ScopeKind,
        mut visit: impl FnMut(&str, Tally) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut held = self
            .held
            .range((kind, String::new())..)
            .take_while(|((k, _), _)| *k == kind)
            .map(|((_, name), tally)| (name.as_str(), *tally))
            .peekable();
        if let Some(connection) = &self.spilled {
            let mut select = connection
                .prepare_cached(
                    "SELECT name, checks, passed, failed, excepted FROM tallies \
                     WHERE kind = ?1 ORDER BY name",
                )
                .map_err(SpillError::from)?;
            let mut rows = select
                .query(params![kind.as_str()])
                .map_err(SpillError::from)?;
            // Both are in name order: merged, a name in both counted once.
            while let Some(row) = rows.next().map_err(SpillError::from)? {
                let name: String = row.get(0).map_err(SpillError::from)?;
                let mut tally = tally_at(row, 1).map_err(SpillError::from)?;
                while let Some((before, held_tally)) = held.next_if(|(n, _)| *n < name.as_str()) {
                    visit(before, held_tally)?;
                }
                if let Some((_, held_tally)) = held.next_if(|(n, _)| *n == name.as_str()) {
                    tally = sum(tally, held_tally);
                }
                visit(&name, tally)?;
            }
        }
        for (name, tally) in held {
            visit(name, tally)?;
        }
        Ok(())
    }
}

/// The tally in the four columns from `first`.
fn tally_at(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Tally> {
    Ok(Tally {
        checks: count_of(row.get(first)?),
        passed: count_of(row.get(first + 1)?),
        failed: count_of(row.get(first + 2)?),
        excepted: count_of(row.get(first + 3)?),
    })
}

fn sum(a: Tally, b: Tally) -> Tally {
    Tally {
        checks: a.checks + b.checks,
        passed: a.passed + b.passed,
        failed: a.failed + b.failed,
        excepted: a.excepted + b.excepted,
    }
}

/// What the credential-count rule needs of one application registration: its app id and
/// name, its owners and how many of its credentials are active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationFacts {
    pub app_id: String,
    pub name: String,
    pub owners: Vec<String>,
    pub active: u32,
}

/// The engine's facts per application registration (by inventory record) and the name
/// of every application or service principal (by app id), so that an audit entry, which
/// names the app id only, counts under the same application scope as the inventory's
/// records. The first name and owners seen for each are kept.
#[derive(Debug)]
pub struct Applications {
    facts: BTreeMap<RecordId, ApplicationFacts>,
    names: BTreeMap<String, String>,
    limit: usize,
    spilled: Option<Connection>,
}

impl Applications {
    /// Holds at most `limit` facts and names in memory (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            facts: BTreeMap::new(),
            names: BTreeMap::new(),
            limit: limit.max(1),
            spilled: None,
        }
    }

    fn make_room(&mut self) -> Result<(), SpillError> {
        if self.facts.len() + self.names.len() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Names the application or service principal `app_id`, unless it was named before.
    pub fn name(&mut self, app_id: &str, name: impl FnOnce() -> String) -> Result<(), SpillError> {
        if self.names.contains_key(app_id) {
            return Ok(());
        }
        self.make_room()?;
        self.names.insert(app_id.to_owned(), name());
        Ok(())
    }

    /// Counts one credential of the application registration `record`; `first` gives its
    /// facts (with no active credential counted) when it was not seen before.
    pub fn credential(
        &mut self,
        record: RecordId,
        active: bool,
        first: impl FnOnce() -> ApplicationFacts,
    ) -> Result<(), SpillError> {
        if !self.facts.contains_key(&record) {
            self.make_room()?;
        }
        let facts = self.facts.entry(record).or_insert_with(first);
        if active {
            facts.active += 1;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<(), SpillError> {
        if self.spilled.is_none() {
            self.spilled = Some(temporary(
                "CREATE TABLE facts (record TEXT PRIMARY KEY, app_id TEXT NOT NULL, \
                 name TEXT NOT NULL, owners TEXT NOT NULL, active INTEGER NOT NULL) \
                 WITHOUT ROWID; \
                 CREATE TABLE names (app_id TEXT PRIMARY KEY, name TEXT NOT NULL) \
                 WITHOUT ROWID;",
            )?);
        }
        let connection = self.spilled.as_mut().expect("opened above");
        let transaction = connection.transaction()?;
        {
            let mut facts = transaction.prepare_cached(
                "INSERT INTO facts (record, app_id, name, owners, active) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (record) DO UPDATE SET \
                     active = active + excluded.active",
            )?;
            for (record, held) in std::mem::take(&mut self.facts) {
                let owners = serde_json::to_string(&held.owners)
                    .expect("invariant: a list of strings always encodes");
                facts.execute(params![
                    record.to_string(),
                    held.app_id,
                    held.name,
                    owners,
                    held.active
                ])?;
            }
            let mut names = transaction
                .prepare_cached("INSERT OR IGNORE INTO names (app_id, name) VALUES (?1, ?2)")?;
            for (app_id, name) in std::mem::take(&mut self.names) {
                names.execute(params![app_id, name])?;
            }
        }
        Ok(transaction.commit()?)
    }

    /// The name first given to `app_id`, if any.
    pub fn name_of(&self, app_id: &str) -> Result<Option<String>, SpillError> {
        if let Some(connection) = &self.spilled {
            // Spilled names were seen first.
            let spilled = connection
                .query_row(
                    "SELECT name FROM names WHERE app_id = ?1",
                    params![app_id],
                    |row| row.get(0),
                )
                .optional()?;
            if spilled.is_some() {
                return Ok(spilled);
            }
        }
        Ok(self.names.get(app_id).cloned())
    }

    /// Every application registration's facts, in record order; the facts are handed
    /// over (names stay).
    pub fn drain<E: From<SpillError>>(
        &mut self,
        mut visit: impl FnMut(RecordId, ApplicationFacts) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.spilled.is_none() {
            for (record, facts) in std::mem::take(&mut self.facts) {
                visit(record, facts)?;
            }
            return Ok(());
        }
        self.spill()?;
        let connection = self.spilled.as_ref().expect("invariant: spilled above");
        let mut select = connection
            .prepare("SELECT record, app_id, name, owners, active FROM facts ORDER BY record")
            .map_err(SpillError::from)?;
        let mut rows = select.query([]).map_err(SpillError::from)?;
        while let Some(row) = rows.next().map_err(SpillError::from)? {
            let (record, facts) = facts_of(row)?;
            visit(record, facts)?;
        }
        Ok(())
    }
}

fn facts_of(row: &rusqlite::Row<'_>) -> Result<(RecordId, ApplicationFacts), SpillError> {
    let record: String = row.get(0)?;
    let record =
        RecordId::parse(&record).map_err(|e| SpillError::Unreadable(format!("record id: {e}")))?;
    let owners: String = row.get(3)?;
    let owners = serde_json::from_str(&owners)
        .map_err(|e| SpillError::Unreadable(format!("owners: {e}")))?;
    Ok((
        record,
        ApplicationFacts {
            app_id: row.get(1)?,
            name: row.get(2)?,
            owners,
            active: row.get(4)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tallies(limit: usize) -> ScopeTallies {
        let mut tallies = ScopeTallies::new(limit);
        for round in 0..3u32 {
            for (n, kind) in [ScopeKind::Owner, ScopeKind::Application, ScopeKind::Vault]
                .into_iter()
                .cycle()
                .take(30)
                .enumerate()
            {
                let result = match (n + round as usize) % 3 {
                    0 => CheckResult::Passed,
                    1 => CheckResult::Failed,
                    _ => CheckResult::Excepted,
                };
                tallies
                    .add(kind, format!("scope {}", n % 7), result)
                    .expect("counted");
            }
        }
        tallies
    }

    fn listed(tallies: &ScopeTallies, kind: ScopeKind) -> Vec<(String, Tally)> {
        let mut listed = Vec::new();
        tallies
            .each(kind, |name, tally| {
                listed.push((name.to_owned(), tally));
                Ok::<_, SpillError>(())
            })
            .expect("read");
        listed
    }

    #[test]
    fn spilled_tallies_read_back_as_those_held_in_memory() {
        let memory = tallies(1000);
        let spilled = tallies(2);

        assert!(!memory.is_spilled());
        assert!(spilled.is_spilled());
        for kind in ScopeKind::ALL {
            assert_eq!(listed(&spilled, kind), listed(&memory, kind), "{kind:?}");
            assert_eq!(
                spilled.count(kind).expect("count"),
                memory.count(kind).expect("count")
            );
        }
        assert_eq!(listed(&memory, ScopeKind::Owner).len(), 7);
        assert_eq!(
            spilled.get(ScopeKind::Vault, "scope 3").expect("read"),
            memory.get(ScopeKind::Vault, "scope 3").expect("read")
        );
        assert_eq!(
            spilled
                .get(ScopeKind::Subscription, "scope 3")
                .expect("read"),
            None
        );
    }

    #[test]
    fn spilled_applications_keep_their_first_name_and_owners_and_add_their_counts() {
        let record = |n: u8| RecordId::parse(&format!("{n:064x}")).expect("record id");
        let facts = |name: &str| ApplicationFacts {
            app_id: "app".into(),
            name: name.into(),
            owners: vec![format!("owner of {name}")],
            active: 0,
        };
        let run = |limit: usize| {
            let mut applications = Applications::new(limit);
            for n in [3u8, 1, 2, 3, 1, 3] {
                applications
                    .name(&format!("app-{n}"), || format!("first {n}"))
                    .expect("named");
                applications
                    .credential(record(n), n != 2, || facts(&format!("first {n}")))
                    .expect("counted");
                applications
                    .name(&format!("app-{n}"), || format!("later {n}"))
                    .expect("named");
            }
            let mut drained = Vec::new();
            applications
                .drain(|record, facts| {
                    drained.push((record, facts));
                    Ok::<_, SpillError>(())
                })
                .expect("drained");
            let names: Vec<Option<String>> = (1..=4u8)
                .map(|n| applications.name_of(&format!("app-{n}")).expect("read"))
                .collect();
            (applications.spilled.is_some(), drained, names)
        };

        let (memory_spilled, memory, memory_names) = run(1000);
        let (spilled, drained, names) = run(2);

        assert!(!memory_spilled);
        assert!(spilled);
        assert_eq!(drained, memory);
        assert_eq!(names, memory_names);
        assert_eq!(
            memory.iter().map(|(_, f)| f.active).collect::<Vec<_>>(),
            [2, 0, 3]
        );
        assert_eq!(memory[0].1.name, "first 1");
        assert_eq!(memory_names[3], None);
        assert_eq!(memory_names[0].as_deref(), Some("first 1"));
    }
}
