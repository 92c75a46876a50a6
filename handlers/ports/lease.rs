//! Fencing between instances: a lease per managed object with a fencing token that only
//! ever grows, kept in the store keyturn already has (Table storage in Azure, the
//! embedded SQLite file locally). It does not rely on the broker's sessions.
//!
//! A job takes the object's lease before it works on the object, and confirms it before
//! every destructive step (removing a credential, deleting a pending copy, promoting a
//! version). A confirmation fails once another holder took the lease over (the first
//! holder's lease ran out during a long pause): the first holder then stops without
//! destroying anything and leaves the object to the holder of the newer token.
//!
//! Graph and Key Vault cannot check a token themselves, so a confirmation also extends
//! the lease: the destructive step that follows runs inside a lease nobody else can take.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::ports::PortError;

/// A lease as its holder holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's key: [`lease_key`] of the object.
    pub key: String,
    /// Who holds it (one id per engine instance).
    pub holder: String,
    /// The fencing token: greater than every token handed out before for this key.
    pub token: u64,
}

/// The key of an object's lease: the hex SHA-256 of its identity (a session id), safe as
/// a Table row key and of fixed length.
pub fn lease_key(identity: &str) -> String {
    hex::encode(Sha256::digest(identity.as_bytes()))
}

/// Where leases are kept. Each call is one conditional write: two holders racing for a
/// lease cannot both win.
#[async_trait]
pub trait ObjectLeases: Send + Sync {
    /// Takes the lease of `key` until `until` when it is free, has run out at `now`, or is
    /// already `holder`'s, with a token greater than any before. Fails with
    /// [`FailureKind::Conflict`](crate::ports::FailureKind::Conflict) while another
    /// holder's lease runs, or when another write won the race.
    async fn acquire(
        &self,
        key: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, PortError>;

    /// Confirms that `lease` is still the current one (same holder and token) and extends
    /// it to `until`. Fails with [`FailureKind::Conflict`](crate::ports::FailureKind::Conflict)
    /// when it was taken over.
    async fn confirm(&self, lease: &Lease, until: DateTime<Utc>) -> Result<(), PortError>;

    /// Gives the lease back when it is still `lease`; the token stays, so the next one is
    /// still greater. Releasing a lease taken over does nothing.
    async fn release(&self, lease: &Lease) -> Result<(), PortError>;
}
