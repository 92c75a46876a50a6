//! [`InventoryStore`] in the embedded SQLite file: each record is kept as its JSON under
//! its stable id, with the columns reads filter and page on beside it. Pages are keyset
//! pages (`id > last`), so a walk costs one index seek per page whatever the table's size.

use std::collections::BTreeSet;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::adapters::local::store::{LocalStore, StoreError};
use crate::domain::ids::{AppId, KeyId};
use crate::domain::inventory::{
    Adoption, CredentialFilter, CredentialSource, InventoryCredential, InventoryVault, Scope,
    ScopeFinding, SweepId, SweepSnapshot,
};
use crate::domain::names::VaultUrl;
use crate::ports::PortError;
use crate::ports::inventory::{InventoryStore, MAX_PAGE_SIZE, Page, PageToken};

#[derive(Debug, Clone)]
pub struct LocalInventory {
    store: LocalStore,
}

impl LocalInventory {
    pub fn new(store: LocalStore) -> Self {
        Self { store }
    }
}

fn encode<T: Serialize>(record: &T, what: &str) -> Result<String, PortError> {
    serde_json::to_string(record)
        .map_err(|_| PortError::invalid(format!("encoding {what} for the local store")))
}

/// A stored record that no longer parses (edited by hand, or written by a newer keyturn)
/// is an error naming its row, never a silent skip.
fn decode<T: DeserializeOwned>(id: &str, json: &str, what: &str) -> Result<T, PortError> {
    serde_json::from_str(json)
        .map_err(|_| PortError::invalid(format!("{what} {id} in the local store does not parse")))
}

/// An application password credential's `adoption` column: `{app id}|{key id}`.
fn adoption_column(app_id: &AppId, key_id: &KeyId) -> String {
    format!("{app_id}|{key_id}")
}

fn clamp(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE_SIZE)
}

/// Reads up to `limit` `(key, record)` rows after `after`, in key order, and the token
/// of the next page (the last key read) when the page was full.
fn keyset_page(
    connection: &Connection,
    sql: &str,
    arguments: Vec<Value>,
    limit: u32,
) -> Result<Page<(String, String)>, StoreError> {
    let mut statement = connection
        .prepare_cached(sql)
        .map_err(StoreError::sqlite("preparing an inventory read"))?;
    let rows = statement
        .query_map(params_from_iter(arguments), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(StoreError::sqlite("reading the inventory"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::sqlite("reading the inventory"))?;
    let next = match rows.last() {
        Some((key, _)) if rows.len() == limit as usize => Some(PageToken::new(key.clone())),
        _ => None,
    };
    Ok(Page { items: rows, next })
}

/// An adoption's application and keyId as stored.
fn adoption_pair(app: &str, key: &str) -> Result<(AppId, KeyId), PortError> {
    AppId::parse(app)
        .ok()
        .zip(KeyId::parse(key).ok())
        .ok_or_else(|| PortError::invalid("an adoption in the local store does not parse"))
}

/// A simple page over one table keyed by `id`.
async fn simple_page<T: DeserializeOwned + Send + 'static>(
    store: &LocalStore,
    table: &'static str,
    what: &'static str,
    after: Option<&PageToken>,
    limit: u32,
) -> Result<Page<T>, PortError> {
    let limit = clamp(limit);
    let after = after.map(|token| token.as_str().to_owned());
    let Page { items: rows, next } = store
        .call(move |connection| {
            let sql = format!(
                "SELECT id, record FROM {table} WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2"
            );
            keyset_page(
                connection,
                &sql,
                vec![
                    after.map_or(Value::Null, Value::Text),
                    Value::Integer(i64::from(limit)),
                ],
                limit,
            )
        })
        .await
        .map_err(|e| e.into_port_error(&format!("reading {what}s")))?;
    let items = rows
        .iter()
        .map(|(id, json)| decode(id, json, what))
        .collect::<Result<Vec<T>, _>>()?;
    Ok(Page { items, next })
}

#[async_trait]
impl InventoryStore for LocalInventory {
    async fn put_credentials(&self, credentials: &[InventoryCredential]) -> Result<(), PortError> {
        let rows = credentials
            .iter()
            .map(|credential| {
                Ok((
                    credential.id().to_string(),
                    credential.source.key().to_string(),
                    credential.source.kind().as_str(),
                    credential.kind.as_str(),
                    credential.expires.map(|at| at.timestamp()),
                    credential.managed,
                    credential.sweep.to_string(),
                    encode(credential, "a credential")?,
                    credential
                        .adoption_key()
                        .map(|(app_id, key_id)| adoption_column(&app_id, &key_id)),
                ))
            })
            .collect::<Result<Vec<_>, PortError>>()?;
        self.store
            .write(move |tx| {
                let mut statement = tx
                    .prepare_cached(
                        "INSERT INTO inventory_credentials
                            (id, source_key, source_kind, kind, expires, managed, sweep, record,
                             adoption)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT (id) DO UPDATE SET source_key = ?2, source_kind = ?3,
                            kind = ?4, expires = ?5, managed = ?6, sweep = ?7, record = ?8,
                            adoption = ?9",
                    )
                    .map_err(StoreError::sqlite("preparing a credential write"))?;
                for (id, source, source_kind, kind, expires, managed, sweep, record, adoption) in
                    rows
                {
                    statement
                        .execute(params![
                            id,
                            source,
                            source_kind,
                            kind,
                            expires,
                            managed,
                            sweep,
                            record,
                            adoption
                        ])
                        .map_err(StoreError::sqlite("writing a credential"))?;
                }
                Ok(())
            })
            .await
            .map_err(|e| e.into_port_error("writing inventory credentials"))
    }

    async fn put_vault(&self, vault: &InventoryVault) -> Result<(), PortError> {
        let (id, record) = (vault.id().to_string(), encode(vault, "a vault")?);
        self.store
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO inventory_vaults (id, record) VALUES (?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET record = ?2",
                    params![id, record],
                )
                .map_err(StoreError::sqlite("writing a vault"))?;
                Ok(())
            })
            .await
            .map_err(|e| e.into_port_error("writing an inventory vault"))
    }

    async fn put_finding(&self, finding: &ScopeFinding) -> Result<(), PortError> {
        let id = finding.id().to_string();
        let scope = finding.scope.key().to_string();
        let sweep = finding.sweep.to_string();
        let record = encode(finding, "a finding")?;
        self.store
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO inventory_findings (id, scope_key, sweep, record)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET scope_key = ?2, sweep = ?3, record = ?4",
                    params![id, scope, sweep, record],
                )
                .map_err(StoreError::sqlite("writing a finding"))?;
                Ok(())
            })
            .await
            .map_err(|e| e.into_port_error("writing an inventory finding"))
    }

    async fn put_snapshot(&self, snapshot: &SweepSnapshot) -> Result<(), PortError> {
        let sweep = snapshot.sweep.to_string();
        let at = snapshot.at.timestamp();
        let record = encode(snapshot, "a snapshot")?;
        self.store
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO inventory_snapshots (sweep, at, record) VALUES (?1, ?2, ?3)
                     ON CONFLICT (sweep) DO UPDATE SET at = ?2, record = ?3",
                    params![sweep, at, record],
                )
                .map_err(StoreError::sqlite("writing a snapshot"))?;
                Ok(())
            })
            .await
            .map_err(|e| e.into_port_error("writing an inventory snapshot"))
    }

    async fn retire_unseen(
        &self,
        source: &CredentialSource,
        sweep: &SweepId,
    ) -> Result<u64, PortError> {
        let (source, sweep) = (source.key().to_string(), sweep.to_string());
        self.store
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM inventory_credentials WHERE source_key = ?1 AND sweep < ?2",
                    params![source, sweep],
                )
                .map_err(StoreError::sqlite("retiring credentials"))
            })
            .await
            .map(|removed| removed as u64)
            .map_err(|e| e.into_port_error("retiring unseen inventory credentials"))
    }

    async fn clear_findings(&self, scope: &Scope, sweep: &SweepId) -> Result<u64, PortError> {
        let (scope, sweep) = (scope.key().to_string(), sweep.to_string());
        self.store
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM inventory_findings WHERE scope_key = ?1 AND sweep < ?2",
                    params![scope, sweep],
                )
                .map_err(StoreError::sqlite("clearing findings"))
            })
            .await
            .map(|removed| removed as u64)
            .map_err(|e| e.into_port_error("clearing inventory findings"))
    }

    async fn put_adoptions(&self, adoptions: &[Adoption]) -> Result<(), PortError> {
        let rows: Vec<[String; 6]> = adoptions
            .iter()
            .map(|a| {
                [
                    a.id().to_string(),
                    a.app_id.to_string(),
                    a.key_id.to_string(),
                    a.holder.to_string(),
                    a.vault.to_string(),
                    a.sweep.to_string(),
                ]
            })
            .collect();
        self.store
            .write(move |tx| {
                let mut statement = tx
                    .prepare_cached(
                        "INSERT INTO inventory_adoptions (id, app_id, key_id, holder, vault, sweep)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (id) DO UPDATE SET vault = ?5, sweep = ?6",
                    )
                    .map_err(StoreError::sqlite("preparing an adoption write"))?;
                for row in rows {
                    statement
                        .execute(params_from_iter(row))
                        .map_err(StoreError::sqlite("writing an adoption"))?;
                }
                Ok(())
            })
            .await
            .map_err(|e| e.into_port_error("writing inventory adoptions"))
    }

    async fn adopted(&self, apps: &[AppId]) -> Result<BTreeSet<(AppId, KeyId)>, PortError> {
        let apps: Vec<String> = apps.iter().map(ToString::to_string).collect();
        let rows = self
            .store
            .call(move |connection| {
                let mut statement = connection
                    .prepare_cached(
                        "SELECT app_id, key_id FROM inventory_adoptions WHERE app_id = ?1",
                    )
                    .map_err(StoreError::sqlite("preparing an adoption read"))?;
                let mut rows = Vec::new();
                for app in apps {
                    let found = statement
                        .query_map(params![app], |row| {
                            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                        })
                        .map_err(StoreError::sqlite("reading adoptions"))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(StoreError::sqlite("reading adoptions"))?;
                    rows.extend(found);
                }
                Ok(rows)
            })
            .await
            .map_err(|e| e.into_port_error("reading inventory adoptions"))?;
        rows.iter()
            .map(|(app, key)| adoption_pair(app, key))
            .collect()
    }

    async fn retire_adoptions(
        &self,
        vault: &CredentialSource,
        sweep: &SweepId,
    ) -> Result<Vec<(AppId, KeyId)>, PortError> {
        let (vault, sweep) = (vault.key().to_string(), sweep.to_string());
        let rows = self
            .store
            .write(move |tx| {
                let rows = tx
                    .prepare_cached(
                        "DELETE FROM inventory_adoptions WHERE vault = ?1 AND sweep < ?2
                         RETURNING app_id, key_id",
                    )
                    .map_err(StoreError::sqlite("preparing an adoption retirement"))?
                    .query_map(params![vault, sweep], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                    })
                    .map_err(StoreError::sqlite("retiring adoptions"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("retiring adoptions"))?;
                Ok(rows)
            })
            .await
            .map_err(|e| e.into_port_error("retiring inventory adoptions"))?;
        rows.iter()
            .map(|(app, key)| adoption_pair(app, key))
            .collect()
    }

    /// Reads, changes and writes each row within one write transaction: no other write
    /// lands between.
    async fn mark_adopted(
        &self,
        pairs: &[(AppId, KeyId)],
        adopted: bool,
    ) -> Result<u64, PortError> {
        let columns: Vec<String> = pairs
            .iter()
            .map(|(app_id, key_id)| adoption_column(app_id, key_id))
            .collect();
        self.store
            .write(move |tx| {
                let mut read = tx
                    .prepare_cached(
                        "SELECT id, record FROM inventory_credentials WHERE adoption = ?1",
                    )
                    .map_err(StoreError::sqlite("preparing an adopted credential read"))?;
                let mut rows = Vec::new();
                for column in columns {
                    let found = read
                        .query_map(params![column], |row| {
                            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                        })
                        .map_err(StoreError::sqlite("reading an adopted credential"))?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(StoreError::sqlite("reading an adopted credential"))?;
                    rows.extend(found);
                }
                let mut write = tx
                    .prepare_cached(
                        "UPDATE inventory_credentials SET managed = ?2, record = ?3 WHERE id = ?1",
                    )
                    .map_err(StoreError::sqlite("preparing an adopted credential write"))?;
                let mut changed = 0u64;
                for (id, json) in rows {
                    // A row that no longer parses is left as it is: the next directory
                    // job rewrites it whole.
                    let Ok(mut credential) = serde_json::from_str::<InventoryCredential>(&json)
                    else {
                        continue;
                    };
                    if !credential.set_adopted(adopted) {
                        continue;
                    }
                    let Ok(record) = serde_json::to_string(&credential) else {
                        continue;
                    };
                    write
                        .execute(params![id, credential.managed, record])
                        .map_err(StoreError::sqlite("writing an adopted credential"))?;
                    changed += 1;
                }
                Ok(changed)
            })
            .await
            .map_err(|e| e.into_port_error("marking adopted inventory credentials"))
    }

    async fn credentials(
        &self,
        filter: &CredentialFilter,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<InventoryCredential>, PortError> {
        let limit = clamp(limit);
        // What SQL can decide is pushed down; `filter.matches` below decides the rest
        // (owners live inside the record), so a page may come back short.
        let mut conditions = Vec::new();
        let mut arguments = Vec::new();
        if let Some(after) = after {
            arguments.push(Value::Text(after.as_str().to_owned()));
            conditions.push(format!("id > ?{}", arguments.len()));
        }
        if let Some(expiring) = &filter.expiring {
            arguments.push(Value::Integer(expiring.until().timestamp()));
            conditions.push(format!(
                "expires IS NOT NULL AND expires <= ?{}",
                arguments.len()
            ));
        }
        if filter.unmanaged_only {
            conditions.push("managed = 0".to_owned());
        }
        if let Some(kind) = filter.source_kind {
            arguments.push(Value::Text(kind.as_str().to_owned()));
            conditions.push(format!("source_kind = ?{}", arguments.len()));
        }
        if let Some(kind) = filter.kind {
            arguments.push(Value::Text(kind.as_str().to_owned()));
            conditions.push(format!("kind = ?{}", arguments.len()));
        }
        arguments.push(Value::Integer(i64::from(limit)));
        let sql = format!(
            "SELECT id, record FROM inventory_credentials {} ORDER BY id LIMIT ?{}",
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            },
            arguments.len()
        );
        let Page { items: rows, next } = self
            .store
            .call(move |connection| keyset_page(connection, &sql, arguments, limit))
            .await
            .map_err(|e| e.into_port_error("reading inventory credentials"))?;
        let mut items = Vec::with_capacity(rows.len());
        for (id, json) in &rows {
            let credential: InventoryCredential = decode(id, json, "credential")?;
            if filter.matches(&credential) {
                items.push(credential);
            }
        }
        Ok(Page { items, next })
    }

    async fn vaults(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<InventoryVault>, PortError> {
        simple_page(&self.store, "inventory_vaults", "vault", after, limit).await
    }

    async fn vault(&self, uri: &VaultUrl) -> Result<Option<InventoryVault>, PortError> {
        let id = CredentialSource::vault_key(uri).to_string();
        let looked_up = id.clone();
        let json = self
            .store
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT record FROM inventory_vaults WHERE id = ?1",
                        params![looked_up],
                        |row| row.get::<_, String>(0),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("reading a vault"))
            })
            .await
            .map_err(|e| e.into_port_error("reading a vault"))?;
        json.map(|json| decode(&id, &json, "vault")).transpose()
    }

    async fn findings(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<ScopeFinding>, PortError> {
        simple_page(&self.store, "inventory_findings", "finding", after, limit).await
    }

    async fn snapshots(
        &self,
        after: Option<&PageToken>,
        limit: u32,
    ) -> Result<Page<SweepSnapshot>, PortError> {
        let limit = clamp(limit);
        // Snapshots are ordered by time, then sweep id; the token is `{at}:{sweep}`.
        let after = match after {
            None => None,
            Some(token) => {
                let (at, sweep) = token
                    .as_str()
                    .split_once(':')
                    .and_then(|(at, sweep)| Some((at.parse::<i64>().ok()?, sweep.to_owned())))
                    .ok_or_else(|| PortError::invalid("a snapshot page token does not parse"))?;
                Some((at, sweep))
            }
        };
        let rows = self
            .store
            .call(move |connection| {
                let (at, sweep) = after.map_or((Value::Null, Value::Null), |(at, sweep)| {
                    (Value::Integer(at), Value::Text(sweep))
                });
                let mut statement = connection
                    .prepare_cached(
                        "SELECT sweep, at, record FROM inventory_snapshots
                         WHERE (?1 IS NULL OR (at, sweep) > (?1, ?2))
                         ORDER BY at, sweep LIMIT ?3",
                    )
                    .map_err(StoreError::sqlite("preparing a snapshot read"))?;
                statement
                    .query_map(params![at, sweep, i64::from(limit)], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, String>(2)?,
                        ))
                    })
                    .map_err(StoreError::sqlite("reading snapshots"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("reading snapshots"))
            })
            .await
            .map_err(|e| e.into_port_error("reading inventory snapshots"))?;
        let next = match rows.last() {
            Some((sweep, at, _)) if rows.len() == limit as usize => {
                Some(PageToken::new(format!("{at}:{sweep}")))
            }
            _ => None,
        };
        let items = rows
            .iter()
            .map(|(sweep, _, json)| decode(sweep, json, "snapshot"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, next })
    }
}
