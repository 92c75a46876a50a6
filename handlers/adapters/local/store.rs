//! The embedded SQLite file behind local mode: opening it safely (owner-only
//! permissions, WAL, busy timeout), its schema migrations, and running connection work
//! off the async runtime.
//!
//! One file holds every local adapter's tables (audit log, vault, queue, app
//! directory), so a local installation is one file to back up and one to protect.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::ports::{FailureKind, PortError};

/// How long a connection waits for another connection's write lock before giving up.
/// Local writes are single-row transactions that hold the lock for milliseconds; five
/// seconds rides out a burst of every local function writing at once and still fails
/// fast enough for an operator to notice a stuck process holding the file.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, as an ordered list of migrations. Version `n` is `MIGRATIONS[n - 1]`;
/// applied migrations are never edited, only new ones appended.
const MIGRATIONS: &[&str] = &[
    // 1: the audit log. `position` is the store's key; `sequence` is what the sealed
    // entry claims, kept separately so that a moved row is visible as such.
    "CREATE TABLE audit_log (
        position INTEGER PRIMARY KEY NOT NULL CHECK (position >= 1),
        sequence INTEGER NOT NULL,
        at TEXT NOT NULL,
        actor_kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        vault TEXT,
        secret_name TEXT,
        secret_version TEXT,
        app_id TEXT,
        key_id TEXT,
        thumbprint TEXT,
        outcome TEXT NOT NULL,
        reason TEXT,
        invocation_id TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    ) STRICT;",
    // 2: the local vault. Values are AES-256-GCM ciphertexts bound to their row; a
    // nonce is unique across the whole store so no nonce is ever used twice. Times are
    // Unix seconds, as Key Vault's attributes are. `id` orders versions: the current
    // version of a name is its latest.
    "CREATE TABLE vault_meta (
        key TEXT PRIMARY KEY NOT NULL,
        nonce BLOB NOT NULL UNIQUE,
        ciphertext BLOB NOT NULL
    ) STRICT;
    CREATE TABLE vault_secret_versions (
        id INTEGER PRIMARY KEY NOT NULL,
        vault TEXT NOT NULL,
        name_key TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        not_before INTEGER,
        expires INTEGER,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        content_type TEXT,
        tags TEXT NOT NULL,
        managed INTEGER NOT NULL,
        nonce BLOB NOT NULL UNIQUE,
        ciphertext BLOB NOT NULL,
        UNIQUE (vault, name_key, version)
    ) STRICT;
    CREATE INDEX vault_secret_versions_by_name ON vault_secret_versions (vault, name_key, id);
    CREATE TABLE vault_certificates (
        vault TEXT NOT NULL,
        name_key TEXT NOT NULL,
        name TEXT NOT NULL,
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        dns_names TEXT NOT NULL,
        validity_days INTEGER NOT NULL,
        tags TEXT NOT NULL,
        PRIMARY KEY (vault, name_key)
    ) STRICT;
    CREATE TABLE vault_certificate_versions (
        id INTEGER PRIMARY KEY NOT NULL,
        vault TEXT NOT NULL,
        name_key TEXT NOT NULL,
        version TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        not_before INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        created INTEGER NOT NULL,
        x5t TEXT NOT NULL,
        cer BLOB NOT NULL,
        UNIQUE (vault, name_key, version),
        FOREIGN KEY (vault, name_key) REFERENCES vault_certificates (vault, name_key)
    ) STRICT;
    CREATE TABLE vault_certificate_operations (
        vault TEXT NOT NULL,
        name_key TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('inProgress', 'completed', 'failed', 'cancelled')),
        version TEXT,
        error_code TEXT,
        PRIMARY KEY (vault, name_key)
    ) STRICT;
    CREATE TABLE vault_events_raised (
        vault TEXT NOT NULL,
        object_type TEXT NOT NULL,
        name_key TEXT NOT NULL,
        version TEXT NOT NULL,
        event_type TEXT NOT NULL,
        raised_at INTEGER NOT NULL,
        PRIMARY KEY (vault, object_type, name_key, version, event_type)
    ) STRICT;",
    // 3: the local application directory. Password credentials keep only a salted
    // SHA-256 of their secret text, never the text.
    "CREATE TABLE directory_applications (
        object_id TEXT PRIMARY KEY NOT NULL,
        app_id TEXT NOT NULL UNIQUE,
        display_name TEXT
    ) STRICT;
    CREATE TABLE directory_passwords (
        key_id TEXT PRIMARY KEY NOT NULL,
        object_id TEXT NOT NULL REFERENCES directory_applications (object_id),
        display_name TEXT,
        hint TEXT,
        start INTEGER NOT NULL,
        end INTEGER NOT NULL,
        created INTEGER NOT NULL,
        salt BLOB NOT NULL,
        hash BLOB NOT NULL
    ) STRICT;
    CREATE TABLE directory_devices (
        device_id TEXT PRIMARY KEY NOT NULL,
        account_enabled INTEGER NOT NULL,
        alternative_security_ids TEXT NOT NULL,
        is_compliant INTEGER,
        is_managed INTEGER
    ) STRICT;",
    // 4: the embedded queue. Times are Unix milliseconds: lock durations are seconds
    // long and tests step the clock finely. A message is either active (possibly
    // locked) or dead-lettered; completed messages are deleted.
    "CREATE TABLE queue_messages (
        sequence INTEGER PRIMARY KEY NOT NULL,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body BLOB NOT NULL,
        enqueued_at INTEGER NOT NULL,
        visible_at INTEGER NOT NULL,
        delivery_count INTEGER NOT NULL DEFAULT 0,
        lock_token TEXT UNIQUE,
        locked_until INTEGER,
        dead_lettered_at INTEGER,
        dead_letter_reason TEXT,
        dead_letter_description TEXT
    ) STRICT;
    CREATE INDEX queue_messages_due ON queue_messages (queue, dead_lettered_at, visible_at, sequence);
    CREATE TABLE queue_sessions (
        queue TEXT NOT NULL,
        session_id TEXT NOT NULL,
        lock_token TEXT NOT NULL,
        locked_until INTEGER NOT NULL,
        PRIMARY KEY (queue, session_id)
    ) STRICT;
    CREATE TABLE queue_message_ids (
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        PRIMARY KEY (queue, message_id)
    ) STRICT;",
    // 5: an audit entry may stand for several folded occurrences (NULL: one).
    "ALTER TABLE audit_log ADD COLUMN count INTEGER CHECK (count IS NULL OR count >= 2);",
    // 6: the local vault's soft delete. A deleted secret's versions are dropped (local
    // mode offers no recovery) but its name stays taken until `purge_at`, as Key Vault
    // keeps a soft-deleted name for the vault's retention period.
    "CREATE TABLE vault_secrets_deleted (
        vault TEXT NOT NULL,
        name_key TEXT NOT NULL,
        name TEXT NOT NULL,
        deleted_at INTEGER NOT NULL,
        purge_at INTEGER NOT NULL,
        PRIMARY KEY (vault, name_key)
    ) STRICT;",
    // 7: the audit log holds one chain per writer. A position is taken once per chain;
    // rows stored before are the default chain's.
    "CREATE TABLE audit_log_chained (
        chain TEXT NOT NULL DEFAULT 'chain',
        position INTEGER NOT NULL CHECK (position >= 1),
        sequence INTEGER NOT NULL,
        at TEXT NOT NULL,
        actor_kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        vault TEXT,
        secret_name TEXT,
        secret_version TEXT,
        app_id TEXT,
        key_id TEXT,
        thumbprint TEXT,
        outcome TEXT NOT NULL,
        reason TEXT,
        invocation_id TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        count INTEGER CHECK (count IS NULL OR count >= 2),
        PRIMARY KEY (chain, position)
    ) STRICT;
    INSERT INTO audit_log_chained (chain, position, sequence, at, actor_kind, actor, action,
        vault, secret_name, secret_version, app_id, key_id, thumbprint, outcome, reason,
        invocation_id, prev_hash, hash, count)
    SELECT 'chain', position, sequence, at, actor_kind, actor, action, vault, secret_name,
        secret_version, app_id, key_id, thumbprint, outcome, reason, invocation_id,
        prev_hash, hash, count FROM audit_log;
    DROP TABLE audit_log;
    ALTER TABLE audit_log_chained RENAME TO audit_log;",
    // 8: leases fencing instances off each other's objects. A row is never deleted, so an
    // object's fencing token only grows; `until` is Unix milliseconds.
    "CREATE TABLE object_leases (
        key TEXT PRIMARY KEY NOT NULL,
        holder TEXT NOT NULL,
        token INTEGER NOT NULL CHECK (token >= 1),
        until INTEGER NOT NULL
    ) STRICT;",
    // 9: the inventory discovery writes. Each record is its JSON (`record`), keyed by its
    // stable id; the columns beside it are what reads filter and page on. `expires` is
    // Unix seconds, NULL for a credential without an end date.
    "CREATE TABLE inventory_credentials (
        id TEXT PRIMARY KEY NOT NULL,
        source_key TEXT NOT NULL,
        source_kind TEXT NOT NULL,
        kind TEXT NOT NULL,
        expires INTEGER,
        managed INTEGER NOT NULL,
        sweep TEXT NOT NULL,
        record TEXT NOT NULL
    ) STRICT;
    CREATE INDEX inventory_credentials_by_source ON inventory_credentials (source_key, sweep);
    CREATE TABLE inventory_vaults (
        id TEXT PRIMARY KEY NOT NULL,
        record TEXT NOT NULL
    ) STRICT;
    CREATE TABLE inventory_findings (
        id TEXT PRIMARY KEY NOT NULL,
        scope_key TEXT NOT NULL,
        sweep TEXT NOT NULL,
        record TEXT NOT NULL
    ) STRICT;
    CREATE INDEX inventory_findings_by_scope ON inventory_findings (scope_key, sweep);
    CREATE TABLE inventory_snapshots (
        sweep TEXT PRIMARY KEY NOT NULL,
        at INTEGER NOT NULL,
        record TEXT NOT NULL
    ) STRICT;
    CREATE INDEX inventory_snapshots_by_time ON inventory_snapshots (at, sweep);",
    // 10: the local directory's app management policies (`keyturn directory policy`): the
    // tenant's default (`scope` 'tenant') and one per application (its object id), each a
    // password lifetime limit in seconds, as Graph's `passwordLifetime` restriction.
    "CREATE TABLE directory_policies (
        scope TEXT PRIMARY KEY NOT NULL,
        display_name TEXT NOT NULL,
        max_password_lifetime INTEGER NOT NULL CHECK (max_password_lifetime >= 1)
    ) STRICT;",
    // 11: the alert ledger: one row per delivery (a credential's threshold to a route, or a
    // digest), so an alert goes out once across sweeps and restarts. `sent_at` is Unix
    // milliseconds, indexed for housekeeping.
    "CREATE TABLE alert_ledger (
        key TEXT PRIMARY KEY NOT NULL,
        subject TEXT NOT NULL,
        route TEXT NOT NULL,
        threshold INTEGER,
        sent_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX alert_ledger_sent_at ON alert_ledger (sent_at);",
    // 12: the rest of the local directory discovery reads: service principals, credentials
    // listed as metadata only (key credentials of applications and service principals,
    // service principals' password credentials; none has a secret text or a private key
    // here) and owners. `object_id` is an application's or a service principal's.
    "CREATE TABLE directory_service_principals (
        object_id TEXT PRIMARY KEY NOT NULL,
        app_id TEXT NOT NULL UNIQUE,
        display_name TEXT
    ) STRICT;
    CREATE TABLE directory_listed_credentials (
        key_id TEXT PRIMARY KEY NOT NULL,
        object_id TEXT NOT NULL,
        credential_type TEXT NOT NULL CHECK (credential_type IN ('Password', 'AsymmetricX509Cert')),
        usage TEXT,
        thumbprint TEXT,
        display_name TEXT,
        start INTEGER,
        end INTEGER
    ) STRICT;
    CREATE INDEX directory_listed_credentials_by_object ON directory_listed_credentials (object_id);
    CREATE TABLE directory_owners (
        object_id TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        display_name TEXT,
        user_principal_name TEXT,
        mail TEXT,
        PRIMARY KEY (object_id, owner_id)
    ) STRICT;",
    // 13: alert ledger claims are leases. `state` is 'claimed' (being sent; `holder` the
    // claim's token, `lease_until` Unix milliseconds when another instance may take it
    // over, `sent_at` when it was claimed) or 'sent' (`sent_at` when it was confirmed).
    // Rows from before this migration have no state and are read as sent: they were only
    // written by an instance about to send.
    "ALTER TABLE alert_ledger ADD COLUMN state TEXT CHECK (state IN ('claimed', 'sent'));
    ALTER TABLE alert_ledger ADD COLUMN lease_until INTEGER;
    ALTER TABLE alert_ledger ADD COLUMN holder TEXT;",
    // 14: the audit log's signed checkpoints, beside the checkpoint file: each row one
    // checkpoint's stored line (`line`, as the file holds it), with the chain and position
    // it names for finding those the file lacks.
    "CREATE TABLE audit_checkpoints (
        id INTEGER PRIMARY KEY NOT NULL,
        chain TEXT NOT NULL,
        position INTEGER NOT NULL,
        line TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_checkpoints_by_chain ON audit_checkpoints (chain, position);",
    // 15: adoptions, the application client secrets managed vault secrets hold (by their
    // `keyturn-app-id` and `keyturn-key-id` tags), so that a directory job writes such a
    // credential managed whether or not the vault job has run before it; and beside each
    // application password credential its `{app id}|{key id}` (`adoption`), so that a vault
    // job marks the row of a credential it finds adopted. A row written before has none
    // until its directory job writes it again, and that job reads the adoptions itself.
    "CREATE TABLE inventory_adoptions (
        id TEXT PRIMARY KEY NOT NULL,
        app_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        holder TEXT NOT NULL,
        vault TEXT NOT NULL,
        sweep TEXT NOT NULL
    ) STRICT;
    CREATE INDEX inventory_adoptions_by_app ON inventory_adoptions (app_id);
    CREATE INDEX inventory_adoptions_by_vault ON inventory_adoptions (vault, sweep);
    ALTER TABLE inventory_credentials ADD COLUMN adoption TEXT;
    CREATE INDEX inventory_credentials_by_adoption ON inventory_credentials (adoption)
        WHERE adoption IS NOT NULL;",
];

/// Opening the store or running work on it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("SQLite failed while {operation}: {source}")]
    Sqlite {
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path} has schema version {found}, newer than the {supported} this keyturn knows; upgrade keyturn"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("a local store task panicked or was cancelled")]
    TaskFailed,
}

impl StoreError {
    /// A wrapper for `map_err` naming what was being done.
    pub fn sqlite(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Sqlite { operation, source }
    }

    /// The port vocabulary for this failure. SQLite's own message stays out of the
    /// context: it can quote stored text.
    pub(crate) fn into_port_error(self, context: &str) -> PortError {
        let kind = match &self {
            StoreError::Sqlite { source, .. } => match source.sqlite_error_code() {
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                    FailureKind::Transient { retry_after: None }
                }
                Some(ErrorCode::ConstraintViolation) => FailureKind::Conflict,
                Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
                    FailureKind::PermissionDenied {
                        missing: "read and write access to the local store file".into(),
                    }
                }
                Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure) => {
                    FailureKind::Transient { retry_after: None }
                }
                _ => FailureKind::Invalid,
            },
            StoreError::Io { .. } | StoreError::TaskFailed => {
                FailureKind::Transient { retry_after: None }
            }
            StoreError::NewerSchema { .. } => FailureKind::Invalid,
        };
        let detail = match &self {
            StoreError::Sqlite { operation, source } => match source.sqlite_error_code() {
                Some(code) => format!("{operation} ({code:?})"),
                None => (*operation).to_owned(),
            },
            StoreError::Io { .. } => "file access failed".to_owned(),
            StoreError::NewerSchema { .. } => "schema is newer than this keyturn".to_owned(),
            StoreError::TaskFailed => "store task failed".to_owned(),
        };
        PortError::new(kind, format!("{context}: {detail}"))
    }
}

/// The local store: one SQLite file. Cheap to clone; clones share one connection, used
/// by one blocking task at a time. Several `LocalStore`s (or processes) may open the
/// same file; SQLite's locking and the busy timeout serialise their writes.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl LocalStore {
    /// Opens (creating when absent) the store at `path` and brings its schema up to
    /// date. A created parent directory gets mode 0700 and a created file 0600: the file
    /// holds the local vault. Blocking: call it at start-up or inside `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<LocalStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        create_private_file(&path)?;
        let connection = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(StoreError::sqlite("opening the store"))?;
        configure(&connection)?;
        let mut connection = connection;
        migrate(&mut connection, &path)?;
        Ok(LocalStore {
            inner: Arc::new(Inner {
                path,
                connection: Mutex::new(connection),
            }),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` on the connection in a blocking task, so async callers never stall
    /// the runtime on disk I/O or on another writer's lock.
    pub async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic inside earlier work cannot leave a transaction open: rusqlite rolls
            // back on drop while unwinding, so the connection is usable after poisoning.
            let mut connection = inner
                .connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(|_| StoreError::TaskFailed)?
    }

    /// The schema version this file is at.
    #[cfg(test)]
    pub(crate) async fn schema_version(&self) -> Result<u32, StoreError> {
        self.call(|connection| current_version(connection)).await
    }

    /// Runs `work` inside a write transaction taken up front (`BEGIN IMMEDIATE`), so
    /// that concurrent writers queue on the lock instead of failing on upgrade.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.call(move |connection| immediate(connection, work))
            .await
    }
}

/// Runs `work` in a write transaction taken up front (`BEGIN IMMEDIATE`) and commits it.
fn immediate<T>(
    connection: &mut Connection,
    work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::sqlite("starting a write transaction"))?;
    let value = work(&transaction)?;
    transaction
        .commit()
        .map_err(StoreError::sqlite("committing a write transaction"))?;
    Ok(value)
}

impl LocalStore {
    /// [`LocalStore::write`] committed with `synchronous = NORMAL`: the commit is written
    /// to the WAL but not synced, so it costs no fsync of its own. For rows whose loss in
    /// a power cut is tolerated (the audit checkpoints: see
    /// [`crate::adapters::local::anchor::LocalCheckpoints`]).
    ///
    /// Why such a commit still becomes durable soon: in WAL mode a commit appends its
    /// frames to the one WAL file, and every later commit appends after them (writers
    /// take the write lock in turn); recovery replays the WAL's frames in order up to
    /// its last valid commit. The next commit with `synchronous = FULL` on this file (an
    /// audit batch, any other write) syncs the WAL after its own frames, so with them
    /// every frame before, this commit's included; a WAL checkpoint also syncs the WAL
    /// before copying it into the database. A power cut before then loses this commit
    /// and any other unsynced ones after it, never a commit synced before it.
    ///
    /// The connection is shared, so the work waits for the connection like any other
    /// (no busy-timeout sleeps against this process's own writers), and the connection
    /// is back at `synchronous = FULL` when this returns, also when `work` fails or
    /// panics.
    pub(crate) async fn write_unsynced<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.call(move |connection| {
            connection
                .execute_batch("PRAGMA synchronous = NORMAL")
                .map_err(StoreError::sqlite("setting synchronous = NORMAL"))?;
            let full_again = FullAgain(connection);
            let value = immediate(full_again.0, work)?;
            full_again.restore()?;
            Ok(value)
        })
        .await
    }
}

/// Puts a connection back at `synchronous = FULL` when dropped (after a failure or a
/// panic inside [`LocalStore::write_unsynced`]), or when [`FullAgain::restore`]d.
struct FullAgain<'c>(&'c mut Connection);

impl FullAgain<'_> {
    fn restore(self) -> Result<(), StoreError> {
        let result = self
            .0
            .execute_batch("PRAGMA synchronous = FULL")
            .map_err(StoreError::sqlite("setting synchronous = FULL"));
        std::mem::forget(self);
        result
    }
}

impl Drop for FullAgain<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.0.execute_batch("PRAGMA synchronous = FULL") {
            tracing::error!(%error, "cannot set the local store back to synchronous = FULL");
        }
    }
}

/// The schema version this build of keyturn writes.
pub(crate) fn supported_schema_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).expect("invariant: the migration list is short")
}

fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let io_error = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let missing_parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty() && !parent.exists());
    if let Some(parent) = missing_parent {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(parent).map_err(io_error)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(io_error(error)),
    }
}

fn configure(connection: &Connection) -> Result<(), StoreError> {
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(StoreError::sqlite("setting the busy timeout"))?;
    // WAL lets readers (verification, the vault) run while a writer appends. FULL
    // synchronous makes each committed audit entry durable across power loss, which
    // the audit log promises and NORMAL does not.
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(StoreError::sqlite("switching to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Sqlite {
            operation: "switching to WAL",
            source: rusqlite::Error::InvalidQuery,
        });
    }
    connection
        .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(StoreError::sqlite("setting pragmas"))?;
    Ok(())
}

fn current_version(connection: &Connection) -> Result<u32, StoreError> {
    connection
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |row| row.get(0),
        )
        .map_err(StoreError::sqlite("reading the schema version"))
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::sqlite("starting the migration"))?;
    transaction
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version INTEGER PRIMARY KEY NOT NULL
            ) STRICT;",
        )
        .map_err(StoreError::sqlite("creating the schema version table"))?;
    let found = current_version(&transaction)?;
    let supported = supported_schema_version();
    if found > supported {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(found as usize) {
        transaction
            .execute_batch(sql)
            .map_err(StoreError::sqlite("applying a migration"))?;
        transaction
            .execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [version],
            )
            .map_err(StoreError::sqlite("recording a migration"))?;
    }
    transaction
        .commit()
        .map_err(StoreError::sqlite("committing the migration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opening_creates_a_private_file_in_a_private_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested").join("keyturn.db");

        let store = LocalStore::open(&path).expect("open");

        assert_eq!(
            store.schema_version().await.expect("version"),
            supported_schema_version()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().expect("has a parent")), 0o700);
        }
    }

    #[tokio::test]
    async fn reopening_applies_no_migration_twice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keyturn.db");
        drop(LocalStore::open(&path).expect("first open"));

        let store = LocalStore::open(&path).expect("second open");

        let rows: u32 = store
            .call(|c| {
                c.query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
                    .map_err(StoreError::sqlite("counting"))
            })
            .await
            .expect("count");
        assert_eq!(rows, supported_schema_version());
    }

    #[tokio::test]
    async fn an_alert_ledger_from_before_claim_leases_is_migrated_and_its_rows_read_as_sent() {
        use crate::adapters::local::alert_ledger::LocalAlertLedger;
        use crate::ports::alert_ledger::{AlertLedger, Claim, LedgerEntry, LedgerKey};
        use chrono::{TimeZone, Utc};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keyturn.db");
        // A file as the schema before leases left it (version 12), with a delivery the
        // engine recorded then: a row without a state.
        let sent_at = Utc
            .with_ymd_and_hms(2026, 11, 2, 8, 0, 0)
            .single()
            .expect("a time");
        let key = LedgerKey::of(&["credential", "14", "ops"]);
        {
            let mut connection = Connection::open(&path).expect("sqlite");
            let transaction = connection.transaction().expect("a transaction");
            transaction
                .execute_batch(
                    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY NOT NULL) STRICT;",
                )
                .expect("versions");
            for (version, sql) in (1..=12).zip(MIGRATIONS) {
                transaction.execute_batch(sql).expect("a migration");
                transaction
                    .execute(
                        "INSERT INTO schema_version (version) VALUES (?1)",
                        [version],
                    )
                    .expect("recorded");
            }
            transaction
                .execute(
                    "INSERT INTO alert_ledger (key, subject, route, threshold, sent_at)
                     VALUES (?1, 'credential', 'ops', 14, ?2)",
                    rusqlite::params![key.as_str(), sent_at.timestamp_millis()],
                )
                .expect("a delivery");
            transaction.commit().expect("committed");
        }

        let store = LocalStore::open(&path).expect("migrated");
        let ledger = LocalAlertLedger::new(store.clone());

        assert_eq!(
            store.schema_version().await.expect("version"),
            supported_schema_version()
        );
        assert_eq!(ledger.sent(&key).await.expect("read"), Some(sent_at));
        let again = LedgerEntry {
            key: key.clone(),
            subject: "credential".to_owned(),
            route: "ops".to_owned(),
            threshold: Some(14),
            sent_at: sent_at + chrono::TimeDelta::days(1),
        };
        assert_eq!(
            ledger
                .claim(&again, chrono::TimeDelta::minutes(10))
                .await
                .expect("claimed"),
            Claim::Sent { at: sent_at }
        );
        let listed = ledger
            .sent_between(sent_at, again.sent_at, None, 10)
            .await
            .expect("listed");
        assert_eq!(listed.entries.len(), 1);
    }

    #[tokio::test]
    async fn a_file_from_a_newer_keyturn_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keyturn.db");
        let store = LocalStore::open(&path).expect("open");
        store
            .call(|c| {
                c.execute("INSERT INTO schema_version (version) VALUES (999)", [])
                    .map_err(StoreError::sqlite("faking a newer schema"))
            })
            .await
            .expect("insert");
        drop(store);

        let error = LocalStore::open(&path).expect_err("newer schema");

        assert!(
            matches!(error, StoreError::NewerSchema { found: 999, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_store_runs_in_wal_mode() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("open");
        let mode: String = store
            .call(|c| {
                c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                    .map_err(StoreError::sqlite("reading the journal mode"))
            })
            .await
            .expect("journal mode");
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn an_unsynced_write_commits_and_leaves_the_connection_synchronous_full_even_when_it_fails()
     {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("open");
        let synchronous = || {
            store.call(|c| {
                c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
                    .map_err(StoreError::sqlite("reading synchronous"))
            })
        };
        let insert = "INSERT INTO audit_checkpoints (chain, position, line) VALUES ('c', 1, 'l')";

        store
            .write_unsynced(move |t| {
                t.execute(insert, [])
                    .map_err(StoreError::sqlite("inserting"))?;
                t.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
                    .map_err(StoreError::sqlite("reading synchronous"))
            })
            .await
            .map(|during| assert_eq!(during, 1, "NORMAL while it commits"))
            .expect("committed");
        let after = synchronous().await.expect("read");
        let failed = store
            .write_unsynced(move |t| {
                t.execute(insert, [])
                    .map_err(StoreError::sqlite("inserting"))?;
                Err::<(), _>(StoreError::TaskFailed)
            })
            .await;
        let after_failure = synchronous().await.expect("read");
        let rows: i64 = store
            .call(|c| {
                c.query_row("SELECT COUNT(*) FROM audit_checkpoints", [], |r| r.get(0))
                    .map_err(StoreError::sqlite("counting"))
            })
            .await
            .expect("counted");

        assert_eq!(after, 2, "FULL again");
        assert!(failed.is_err());
        assert_eq!(after_failure, 2, "FULL again after a failure");
        assert_eq!(rows, 1, "the failed write was rolled back");
    }

    #[test]
    fn busy_and_constraint_failures_map_to_transient_and_conflict() {
        let failure = |code| StoreError::Sqlite {
            operation: "testing",
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        };
        let busy = failure(rusqlite::ffi::SQLITE_BUSY).into_port_error("appending");
        let taken = failure(rusqlite::ffi::SQLITE_CONSTRAINT).into_port_error("appending");
        assert!(busy.is_transient());
        assert_eq!(taken.kind, FailureKind::Conflict);
    }
}
