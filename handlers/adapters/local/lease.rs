//! [`ObjectLeases`] in the embedded SQLite file: each call is one write transaction, so
//! several processes opening the same file take turns.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use crate::adapters::local::store::{LocalStore, StoreError};
use crate::ports::lease::{Lease, ObjectLeases};
use crate::ports::{FailureKind, PortError};

#[derive(Debug, Clone)]
pub struct LocalLeases {
    store: LocalStore,
}

impl LocalLeases {
    pub fn new(store: LocalStore) -> Self {
        Self { store }
    }
}

fn conflict(context: &str) -> PortError {
    PortError::new(FailureKind::Conflict, context.to_owned())
}

#[async_trait]
impl ObjectLeases for LocalLeases {
    async fn acquire(
        &self,
        key: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, PortError> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        let now = now.timestamp_millis();
        let until = until.timestamp_millis();
        let taken = self
            .store
            .write(move |tx| {
                let row: Option<(String, i64, i64)> = tx
                    .query_row(
                        "SELECT holder, token, until FROM object_leases WHERE key = ?1",
                        params![key],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("reading a lease"))?;
                let token = match row {
                    Some((current, _, running)) if current != holder && running > now => {
                        return Ok(None);
                    }
                    Some((_, token, _)) => token + 1,
                    None => 1,
                };
                tx.execute(
                    "INSERT INTO object_leases (key, holder, token, until) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO UPDATE SET holder = ?2, token = ?3, until = ?4",
                    params![key, holder, token, until],
                )
                .map_err(StoreError::sqlite("taking a lease"))?;
                Ok(Some(Lease {
                    key,
                    holder,
                    token: token as u64,
                }))
            })
            .await
            .map_err(|e| e.into_port_error("taking a lease"))?;
        taken.ok_or_else(|| conflict("taking a lease: another instance holds it"))
    }

    async fn confirm(&self, lease: &Lease, until: DateTime<Utc>) -> Result<(), PortError> {
        let lease = lease.clone();
        let until = until.timestamp_millis();
        let changed = self
            .store
            .write(move |tx| {
                tx.execute(
                    "UPDATE object_leases SET until = ?4 WHERE key = ?1 AND holder = ?2 AND token = ?3",
                    params![lease.key, lease.holder, lease.token as i64, until],
                )
                .map_err(StoreError::sqlite("confirming a lease"))
            })
            .await
            .map_err(|e| e.into_port_error("confirming a lease"))?;
        match changed {
            1 => Ok(()),
            _ => Err(conflict("confirming a lease: it was taken over")),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), PortError> {
        let lease = lease.clone();
        self.store
            .write(move |tx| {
                tx.execute(
                    "UPDATE object_leases SET until = 0 WHERE key = ?1 AND holder = ?2 AND token = ?3",
                    params![lease.key, lease.holder, lease.token as i64],
                )
                .map_err(StoreError::sqlite("releasing a lease"))
            })
            .await
            .map_err(|e| e.into_port_error("releasing a lease"))?;
        Ok(())
    }
}
