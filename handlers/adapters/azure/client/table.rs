//! A small typed client for Azure Table storage (and Azurite) on azure_core's pipeline:
//! tables, and entities inserted, read, queried page by page, updated and deleted with
//! ETag conditions, authenticated by an Entra token or a shared key signature.
//!
//! Speaks the Table service REST API as Microsoft documents it: JSON with
//! `Accept: application/json;odata=nometadata`, `x-ms-version` [`API_VERSION`], keys
//! addressed as `table(PartitionKey='..',RowKey='..')` with single quotes doubled and
//! the rest percent-encoded, continuation through the `x-ms-continuation-Next*` headers.
//! With `nometadata` the service returns no per-entity ETag in query results and no
//! type annotations, so properties are best kept to strings, booleans and 32-bit
//! numbers (keyturn's entities are all strings).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::{
    AUTHORIZATION, CONTENT_TYPE, ETAG, HeaderName, Headers, IF_MATCH, MS_DATE, PREFER,
};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    ClientOptions, Context, Etag, Method, Pipeline, RawResponse, Request, StatusCode, Url,
};
use azure_core::time::OffsetDateTime;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::adapters::azure::client::http;
use crate::adapters::azure::client::http::{
    FailureContext, PipelineAuth, ServiceErrorCode, failure_from_status, pipeline,
};
use crate::domain::secret::SecretValue;
use crate::ports::{FailureKind, PortError};

/// The Entra scope of Azure Storage data-plane tokens.
pub(crate) const TABLE_SCOPE: &str = "https://storage.azure.com/.default";

/// The Table service REST version spoken: the newest one Azurite 3.35 accepts that
/// supports every operation used here and Entra tokens (which need 2019-02-02 or later).
pub(crate) const API_VERSION: &str = "2019-02-02";

/// The service returns at most 1000 entities per query page (Query Entities, "Timeouts
/// and pagination"); `$top` above that is refused.
pub(crate) const MAX_PAGE_SIZE: u32 = 1000;

/// An entity group transaction holds at most 100 operations and 4 MiB of payload, all in
/// one partition of one table ("Performing entity group transactions", requirements).
pub const MAX_BATCH_ENTITIES: usize = 100;
pub(crate) const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// PartitionKey and RowKey are limited to 1 KiB each (Understanding the Table service
/// data model, "System properties").
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// Azurite's well-known development account (documented in "Use Azurite for local Azure
/// Storage development"). Public: it only ever opens a local emulator.
pub(crate) const DEVELOPMENT_ACCOUNT: &str = "devstoreaccount1";
const DEVELOPMENT_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Where `UseDevelopmentStorage=true` points: Azurite's default table port.
pub(crate) const DEVELOPMENT_TABLE_ENDPOINT: &str = "http://127.0.0.1:10002/devstoreaccount1";

const ACCEPT: HeaderName = HeaderName::from_static("accept");
const VERSION: HeaderName = HeaderName::from_static("x-ms-version");
const DATA_SERVICE_VERSION: HeaderName = HeaderName::from_static("dataserviceversion");
const MAX_DATA_SERVICE_VERSION: HeaderName = HeaderName::from_static("maxdataserviceversion");
const NEXT_PARTITION_KEY: HeaderName =
    HeaderName::from_static("x-ms-continuation-nextpartitionkey");
const NEXT_ROW_KEY: HeaderName = HeaderName::from_static("x-ms-continuation-nextrowkey");
const JSON_NO_METADATA: &str = "application/json;odata=nometadata";

/// Building a client or one of its arguments failed. Never quotes a connection string
/// or key: both hold the account key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    #[error("invalid storage connection string: {problem}")]
    InvalidConnectionString { problem: &'static str },
    #[error("invalid storage account key: not base64")]
    InvalidAccountKey,
    #[error("invalid table endpoint: {problem}")]
    InvalidEndpoint { problem: &'static str },
    #[error("invalid entity key: {problem}")]
    InvalidKey { problem: &'static str },
}

pub use crate::domain::resources::TableName;

/// A PartitionKey or RowKey: at most [`MAX_KEY_BYTES`], without the characters the
/// service forbids in keys (`/`, `\`, `#`, `?` and control characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey(String);

impl EntityKey {
    pub fn parse(key: &str) -> Result<Self, TableError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(TableError::InvalidKey {
                problem: "longer than 1 KiB",
            });
        }
        if key
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '#' | '?') || c.is_control())
        {
            return Err(TableError::InvalidKey {
                problem: "holds `/`, `\\`, `#`, `?` or a control character",
            });
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key inside an entity address: quotes doubled (OData string literal), then
    /// percent-encoded so that no character can end the address early.
    fn address_literal(&self) -> String {
        percent_encode(&self.0.replace('\'', "''"))
    }
}

impl FromStr for EntityKey {
    type Err = TableError;

    fn from_str(key: &str) -> Result<Self, Self::Err> {
        Self::parse(key)
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An OData string literal for a `$filter`: `'value'` with single quotes doubled.
/// Build filters from these, never by pasting raw text between quotes.
pub(crate) fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// How the client authenticates.
#[derive(Clone)]
pub(crate) enum TableAuth {
    /// An Entra token for [`TABLE_SCOPE`]; the identity needs a Storage Table Data role.
    /// azure_core's bearer policy only sends tokens over https.
    Token(Arc<dyn TokenCredential>),
    /// The account name and key; requests are signed (SharedKeyLite) and the key is
    /// never sent.
    SharedKey { account: String, key: SecretValue },
}

impl fmt::Debug for TableAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("TableAuth::Token"),
            Self::SharedKey { account, .. } => write!(
                f,
                "TableAuth::SharedKey {{ account: {account:?}, key: [redacted] }}"
            ),
        }
    }
}

/// Which version of an entity a write or delete applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// Whatever is stored (`If-Match: *`).
    Any,
    /// Only this version; otherwise the write fails with a conflict.
    Etag(Etag),
}

/// How an update treats properties absent from the new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// Keep them (Merge Entity).
    Merge,
    /// Remove them (Update Entity).
    Replace,
}

/// An entity as read: its keys, its version when the service reported one, and its
/// own properties (system properties and metadata removed).
#[derive(Debug, Clone, PartialEq)]
pub struct Entity<T> {
    pub partition_key: String,
    pub row_key: String,
    pub etag: Option<Etag>,
    pub properties: T,
}

/// Where the next page of a query starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    next_partition_key: String,
    next_row_key: Option<String>,
}

impl Continuation {
    /// The continuation as one opaque line of text (each key hex-encoded), for a caller
    /// that hands it out as a page token.
    pub fn to_token(&self) -> String {
        match &self.next_row_key {
            Some(row) => format!(
                "{}.{}",
                hex::encode(&self.next_partition_key),
                hex::encode(row)
            ),
            None => hex::encode(&self.next_partition_key),
        }
    }

    /// Reads what [`Continuation::to_token`] wrote; `None` when it is not such a token.
    pub fn from_token(token: &str) -> Option<Self> {
        let text = |hex_text: &str| String::from_utf8(hex::decode(hex_text).ok()?).ok();
        let (partition, row) = match token.split_once('.') {
            Some((partition, row)) => (partition, Some(row)),
            None => (token, None),
        };
        let next_row_key = match row {
            Some(row) => Some(text(row)?),
            None => None,
        };
        Some(Self {
            next_partition_key: text(partition)?,
            next_row_key,
        })
    }
}

/// A query: `$filter`, `$select` (the keys are always selected too), `$top` (at most
/// [`MAX_PAGE_SIZE`]) and where to continue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub filter: Option<String>,
    pub select: Vec<String>,
    pub top: Option<u32>,
    pub continuation: Option<Continuation>,
}

/// One page of query results and where the next begins. A page can be empty while a
/// continuation is still present: keep going until the continuation is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub entities: Vec<Entity<T>>,
    pub continuation: Option<Continuation>,
}

/// The Table client. Cheap to clone.
#[derive(Clone)]
pub struct TableClient {
    endpoint: Url,
    pipeline: Pipeline,
    missing_read: Arc<str>,
    missing_write: Arc<str>,
}

impl fmt::Debug for TableClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableClient")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl TableClient {
    /// A client for the table endpoint `endpoint` (`https://<account>.table.core.windows.net`
    /// or a path-style endpoint such as Azurite's `http://127.0.0.1:10002/devstoreaccount1`).
    /// `options` carry the transport and retries; `None` means keyturn's defaults.
    pub(crate) fn new(
        endpoint: Url,
        auth: TableAuth,
        options: Option<ClientOptions>,
    ) -> Result<Self, TableError> {
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(TableError::InvalidEndpoint {
                problem: "scheme must be http or https",
            });
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(TableError::InvalidEndpoint {
                problem: "must not carry a query or fragment",
            });
        }
        let (auth, missing_read, missing_write) = match auth {
            TableAuth::Token(credential) => {
                let host = endpoint.host_str().unwrap_or("the storage account");
                (
                    PipelineAuth::Bearer {
                        credential,
                        scope: TABLE_SCOPE.to_owned(),
                    },
                    format!("Storage Table Data Reader on {host}"),
                    format!("Storage Table Data Contributor on {host}"),
                )
            }
            TableAuth::SharedKey { account, key } => {
                let decoded = BASE64
                    .decode(key.expose().trim())
                    .map(Zeroizing::new)
                    .map_err(|_| TableError::InvalidAccountKey)?;
                let missing = format!("a valid account key for storage account {account}");
                let policy = SharedKeyLitePolicy {
                    account,
                    key: decoded,
                };
                (
                    PipelineAuth::Policy(Arc::new(policy)),
                    missing.clone(),
                    missing,
                )
            }
        };
        Ok(Self {
            endpoint,
            pipeline: pipeline(options, auth),
            missing_read: missing_read.into(),
            missing_write: missing_write.into(),
        })
    }

    /// A client for `endpoint` that authenticates with an Entra token for Azure Storage
    /// from `credential`: keyturn's identity-based path (`KEYTURN_TABLE_ENDPOINT`).
    pub fn with_token(
        endpoint: Url,
        credential: Arc<dyn TokenCredential>,
        options: Option<ClientOptions>,
    ) -> Result<Self, TableError> {
        Self::new(endpoint, TableAuth::Token(credential), options)
    }

    /// A client from a storage connection string: `UseDevelopmentStorage=true` (Azurite
    /// on its default port) or `DefaultEndpointsProtocol=..;AccountName=..;AccountKey=..`
    /// with an optional `TableEndpoint` or `EndpointSuffix`.
    pub fn from_connection_string(
        connection_string: &SecretValue,
        options: Option<ClientOptions>,
    ) -> Result<Self, TableError> {
        let parsed = ConnectionString::parse(connection_string.expose())?;
        Self::new(
            parsed.endpoint,
            TableAuth::SharedKey {
                account: parsed.account,
                key: parsed.key,
            },
            options,
        )
    }

    /// Creates `table`; succeeds when it already exists.
    pub async fn create_table_if_not_exists(&self, table: &TableName) -> Result<(), PortError> {
        let operation = format!("creating table {table}");
        let url = self.url("Tables", &[]);
        let body = serde_json::to_vec(&serde_json::json!({ "TableName": table.as_str() }))
            .map_err(|_| PortError::invalid(format!("{operation}: encoding the request")))?;
        let mut request = self.request(url, Method::Post, Some(body));
        request.insert_header(PREFER, "return-no-content");
        match self.send(request, &self.write_context(&operation)).await {
            Ok(_) => Ok(()),
            Err(Failure {
                code: Some(code), ..
            }) if code.as_str() == "TableAlreadyExists" => Ok(()),
            Err(failure) => Err(failure.error),
        }
    }

    /// Deletes `table` and everything in it.
    pub async fn delete_table(&self, table: &TableName) -> Result<(), PortError> {
        let operation = format!("deleting table {table}");
        let url = self.url(
            &format!("Tables({})", percent_encode(&odata_string(table.as_str()))),
            &[],
        );
        let request = self.request(url, Method::Delete, None);
        self.send(request, &self.write_context(&operation))
            .await
            .map_err(|f| f.error)?;
        Ok(())
    }

    /// Inserts a new entity; fails with [`FailureKind::Conflict`] when one with the same
    /// keys exists. Returns the new entity's ETag.
    pub async fn insert<T: Serialize>(
        &self,
        table: &TableName,
        partition_key: &EntityKey,
        row_key: &EntityKey,
        properties: &T,
    ) -> Result<Etag, PortError> {
        let operation = format!("inserting an entity into table {table}");
        let body = entity_body(partition_key, row_key, properties, &operation)?;
        let url = self.url(table.as_str(), &[]);
        let mut request = self.request(url, Method::Post, Some(body));
        request.insert_header(PREFER, "return-no-content");
        let response = self
            .send(request, &self.write_context(&operation))
            .await
            .map_err(|f| f.error)?;
        etag_of(&response, &operation)
    }

    /// Inserts `entities` (row key and properties) into one partition of `table` as one
    /// entity group transaction: the service stores all of them or none. Fails with
    /// [`FailureKind::Conflict`] when any of the keys exists, and stores nothing then.
    /// At most [`MAX_BATCH_ENTITIES`] entities and [`MAX_BATCH_BYTES`] of request.
    pub async fn insert_all<T: Serialize>(
        &self,
        table: &TableName,
        partition_key: &EntityKey,
        entities: &[(EntityKey, T)],
    ) -> Result<(), PortError> {
        let operation = format!(
            "inserting {} entities into table {table} in one transaction",
            entities.len()
        );
        if entities.is_empty() {
            return Ok(());
        }
        if entities.len() > MAX_BATCH_ENTITIES {
            return Err(PortError::invalid(format!(
                "{operation}: a transaction holds at most {MAX_BATCH_ENTITIES} entities"
            )));
        }
        let batch = Batch::new(self.url(table.as_str(), &[]));
        let mut parts = Vec::with_capacity(entities.len());
        for (row_key, properties) in entities {
            let entity = entity_body(partition_key, row_key, properties, &operation)?;
            parts.push(batch.insert_part(&entity));
        }
        self.transact(&batch, &parts, &operation).await
    }

    /// Writes `entities` (row key and properties) into one partition of `table`, each
    /// replacing any entity with its keys (Insert Or Replace Entity), in as few entity
    /// group transactions as the limits allow ([`MAX_BATCH_ENTITIES`] entities and
    /// [`MAX_BATCH_BYTES`] each), sent one after another. A row key given twice is written
    /// once, where it came first, with the properties it came with last. Each transaction stores all of its entities
    /// or none: when one fails, the transactions before it stay stored, none after it is
    /// sent, and the error says how many entities were stored.
    pub async fn upsert_all<T: Serialize>(
        &self,
        table: &TableName,
        partition_key: &EntityKey,
        entities: &[(EntityKey, T)],
    ) -> Result<(), PortError> {
        let operation = format!("writing {} entities into table {table}", entities.len());
        // The service refuses a transaction touching one entity twice: keep the last.
        let mut last = std::collections::HashMap::with_capacity(entities.len());
        for (index, (row_key, _)) in entities.iter().enumerate() {
            last.insert(row_key.as_str(), index);
        }
        let batch = Batch::new(self.url(table.as_str(), &[]));
        let envelope = batch.envelope_len();
        let mut transactions: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut current: Vec<Vec<u8>> = Vec::new();
        let mut current_bytes = envelope;
        for (row_key, _) in entities {
            // In the place the row came first, with the properties it came with last.
            let Some(index) = last.remove(row_key.as_str()) else {
                continue;
            };
            let properties = &entities[index].1;
            let entity = entity_body(partition_key, row_key, properties, &operation)?;
            let address = self.url(&entity_address(table, partition_key, row_key), &[]);
            let part = batch.upsert_part(&address, &entity);
            if envelope + part.len() > MAX_BATCH_BYTES {
                return Err(PortError::invalid(format!(
                    "{operation}: an entity exceeds what a transaction of {MAX_BATCH_BYTES} bytes holds"
                )));
            }
            if current.len() == MAX_BATCH_ENTITIES || current_bytes + part.len() > MAX_BATCH_BYTES {
                transactions.push(std::mem::take(&mut current));
                current_bytes = envelope;
            }
            current_bytes += part.len();
            current.push(part);
        }
        if !current.is_empty() {
            transactions.push(current);
        }
        let count = transactions.len();
        let mut stored = 0;
        for (index, parts) in transactions.iter().enumerate() {
            let step = format!(
                "{operation} (transaction {} of {count}, {} entities)",
                index + 1,
                parts.len()
            );
            self.transact(&batch, parts, &step)
                .await
                .map_err(|error| {
                    PortError::new(
                        error.kind,
                        format!(
                            "{}; the {stored} entities of the transactions before it are stored, and none after it was sent",
                            error.context
                        ),
                    )
                })?;
            stored += parts.len();
        }
        Ok(())
    }

    /// Sends one entity group transaction of `parts` and reads its answer.
    async fn transact(
        &self,
        batch: &Batch,
        parts: &[Vec<u8>],
        operation: &str,
    ) -> Result<(), PortError> {
        let body = batch.body(parts);
        if body.len() > MAX_BATCH_BYTES {
            return Err(PortError::invalid(format!(
                "{operation}: the transaction exceeds {MAX_BATCH_BYTES} bytes"
            )));
        }
        let mut request = self.request(self.url("$batch", &[]), Method::Post, None);
        request.insert_header(CONTENT_TYPE, batch.content_type());
        request.set_body(body);
        let context = self.write_context(operation);
        let response = self.send(request, &context).await.map_err(|f| f.error)?;
        match batch_outcome(response.headers(), response.body().as_ref(), parts.len()) {
            BatchOutcome::Stored => Ok(()),
            BatchOutcome::Refused { status, body } => {
                let code = ServiceErrorCode::from_response(&Headers::new(), &body);
                Err(failure_from_status(
                    status,
                    &Headers::new(),
                    code.as_ref(),
                    OffsetDateTime::now_utc(),
                    &context,
                ))
            }
            // The transaction was sent and may well be stored: the outcome is unknown, not
            // refused. A later write finds out (the audit log reads back a conflict).
            BatchOutcome::Unreadable(problem) => Err(PortError::transient(format!(
                "{operation}: the answer could not be read ({problem}); the outcome is unknown"
            ))),
        }
    }

    /// Reads one entity; [`FailureKind::NotFound`] when absent.
    pub async fn get<T: DeserializeOwned>(
        &self,
        table: &TableName,
        partition_key: &EntityKey,
        row_key: &EntityKey,
    ) -> Result<Entity<T>, PortError> {
        let operation = format!("reading an entity from table {table}");
        let url = self.url(&entity_address(table, partition_key, row_key), &[]);
        let request = self.request(url, Method::Get, None);
        let response = self
            .send(request, &self.read_context(&operation))
            .await
            .map_err(|f| f.error)?;
        let etag = response
            .headers()
            .get_optional_string(&ETAG)
            .map(Etag::from);
        let object: Map<String, Value> =
            serde_json::from_slice(response.body().as_ref()).map_err(|_| {
                PortError::invalid(format!("{operation}: the answer is not a JSON entity"))
            })?;
        let mut entity = decode_entity(object, &operation)?;
        entity.etag = etag;
        Ok(entity)
    }

    /// One page of entities matching `query`.
    pub async fn query<T: DeserializeOwned>(
        &self,
        table: &TableName,
        query: &Query,
    ) -> Result<Page<T>, PortError> {
        #[derive(serde::Deserialize)]
        struct Listing {
            value: Vec<Map<String, Value>>,
        }
        let operation = format!("querying table {table}");
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(filter) = &query.filter {
            pairs.push(("$filter", filter.clone()));
        }
        if let Some(top) = query.top {
            if top == 0 || top > MAX_PAGE_SIZE {
                return Err(PortError::invalid(format!(
                    "{operation}: $top must be 1 to {MAX_PAGE_SIZE}"
                )));
            }
            pairs.push(("$top", top.to_string()));
        }
        if !query.select.is_empty() {
            // Every entity is returned with its keys, so they are always selected.
            let mut select = vec!["PartitionKey", "RowKey"];
            select.extend(
                query
                    .select
                    .iter()
                    .map(String::as_str)
                    .filter(|name| !matches!(*name, "PartitionKey" | "RowKey")),
            );
            pairs.push(("$select", select.join(",")));
        }
        if let Some(continuation) = &query.continuation {
            pairs.push(("NextPartitionKey", continuation.next_partition_key.clone()));
            if let Some(row_key) = &continuation.next_row_key {
                pairs.push(("NextRowKey", row_key.clone()));
            }
        }
        let url = self.url(&format!("{}()", table.as_str()), &pairs);
        let request = self.request(url, Method::Get, None);
        let response = self
            .send(request, &self.read_context(&operation))
            .await
            .map_err(|f| f.error)?;
        let continuation = response
            .headers()
            .get_optional_string(&NEXT_PARTITION_KEY)
            .map(|next_partition_key| Continuation {
                next_partition_key,
                next_row_key: response.headers().get_optional_string(&NEXT_ROW_KEY),
            });
        let listing: Listing = serde_json::from_slice(response.body().as_ref()).map_err(|_| {
            PortError::invalid(format!("{operation}: the answer is not an entity listing"))
        })?;
        let entities = listing
            .value
            .into_iter()
            .map(|object| decode_entity(object, &operation))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            entities,
            continuation,
        })
    }

    /// Updates an existing entity (merge or replace) when `if_match` holds; a changed
    /// ETag fails with [`FailureKind::Conflict`], a missing entity with
    /// [`FailureKind::NotFound`]. Returns the new ETag.
    pub async fn update<T: Serialize>(
        &self,
        table: &TableName,
        partition_key: &EntityKey,
        row_key: &EntityKey,
        properties: &T,
        mode: UpdateMode,
        if_match: &IfMatch,
    ) -> Result<Etag, PortError> {
        let operation = format!("updating an entity in table {table}");
        let body = entity_body(partition_key, row_key, properties, &operation)?;
        let url = self.url(&entity_address(table, partition_key, row_key), &[]);
        let method = match mode {
            // PATCH is the Table service's Merge Entity (the MERGE verb's standard name).
            UpdateMode::Merge => Method::Patch,
            UpdateMode::Replace => Method::Put,
        };
        let mut request = self.request(url, method, Some(body));
        request.insert_header(IF_MATCH, if_match_value(if_match));
        let response = self
            .send(request, &self.write_context(&operation))
            .await
            .map_err(|f| f.error)?;
        etag_of(&response, &operation)
    }

    /// Writes an entity whether or not one with its keys exists, replacing every
    /// property (Insert Or Replace Entity: a PUT without `If-Match`).
    pub async fn upsert<T: Serialize>(
        &self,
        table: &TableName,
        partition_key: &EntityKey,
        row_key: &EntityKey,
        properties: &T,
    ) -> Result<(), PortError> {
        let operation = format!("writing an entity into table {table}");
        let body = entity_body(partition_key, row_key, properties, &operation)?;
        let url = self.url(&entity_address(table, partition_key, row_key), &[]);
        let request = self.request(url, Method::Put, Some(body));
        self.send(request, &self.write_context(&operation))
            .await
            .map_err(|f| f.error)?;
        Ok(())
    }

    /// Deletes an entity when `if_match` holds.
    pub async fn delete(
        &self,
        table: &TableName,
        partition_key: &EntityKey,
        row_key: &EntityKey,
        if_match: &IfMatch,
    ) -> Result<(), PortError> {
        let operation = format!("deleting an entity from table {table}");
        let url = self.url(&entity_address(table, partition_key, row_key), &[]);
        let mut request = self.request(url, Method::Delete, None);
        request.insert_header(IF_MATCH, if_match_value(if_match));
        self.send(request, &self.write_context(&operation))
            .await
            .map_err(|f| f.error)?;
        Ok(())
    }

    fn url(&self, resource: &str, query: &[(&str, String)]) -> Url {
        let mut url = self.endpoint.clone();
        let path = format!("{}/{resource}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        if !query.is_empty() {
            let query = query
                .iter()
                .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
                .collect::<Vec<_>>()
                .join("&");
            url.set_query(Some(&query));
        }
        url
    }

    fn request(&self, url: Url, method: Method, body: Option<Vec<u8>>) -> Request {
        let mut request = Request::new(url, method);
        request.insert_header(VERSION, API_VERSION);
        request.insert_header(ACCEPT, JSON_NO_METADATA);
        request.insert_header(DATA_SERVICE_VERSION, "3.0");
        request.insert_header(MAX_DATA_SERVICE_VERSION, "3.0;NetFx");
        if let Some(body) = body {
            request.insert_header(CONTENT_TYPE, "application/json");
            request.set_body(body);
        }
        request
    }

    fn read_context<'a>(&'a self, operation: &'a str) -> FailureContext<'a> {
        FailureContext {
            operation,
            missing_permission: &self.missing_read,
            policy_codes: &[],
        }
    }

    fn write_context<'a>(&'a self, operation: &'a str) -> FailureContext<'a> {
        FailureContext {
            operation,
            missing_permission: &self.missing_write,
            policy_codes: &[],
        }
    }

    async fn send(
        &self,
        mut request: Request,
        context: &FailureContext<'_>,
    ) -> Result<RawResponse, Failure> {
        let response = http::send(&self.pipeline, &mut request, context)
            .await
            .map_err(|error| Failure { error, code: None })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let code = ServiceErrorCode::from_response(response.headers(), response.body().as_ref());
        let error = failure_from_status(
            response.status(),
            response.headers(),
            code.as_ref(),
            OffsetDateTime::now_utc(),
            context,
        );
        Err(Failure { error, code })
    }
}

/// One entity group transaction's request: a `multipart/mixed` batch holding one change
/// set of Insert Entity or Insert Or Replace Entity requests, as "Performing entity group
/// transactions" lays it out. The boundaries are random, so no entity's JSON can contain
/// one.
struct Batch {
    entity_url: Url,
    batch: String,
    changeset: String,
}

impl Batch {
    fn new(entity_url: Url) -> Self {
        Self {
            entity_url,
            batch: format!("batch_{}", uuid::Uuid::new_v4()),
            changeset: format!("changeset_{}", uuid::Uuid::new_v4()),
        }
    }

    fn content_type(&self) -> String {
        format!("multipart/mixed; boundary={}", self.batch)
    }

    /// The change-set part inserting `entity` (Insert Entity: a POST to the table).
    fn insert_part(&self, entity: &[u8]) -> Vec<u8> {
        self.part(
            &format!("POST {}", self.entity_url),
            "Prefer: return-no-content\r\n",
            entity,
        )
    }

    /// The change-set part writing `entity` at `address` whether or not it exists
    /// (Insert Or Replace Entity: a PUT to the entity without `If-Match`).
    fn upsert_part(&self, address: &Url, entity: &[u8]) -> Vec<u8> {
        self.part(&format!("PUT {address}"), "", entity)
    }

    fn part(&self, request: &str, extra_headers: &str, entity: &[u8]) -> Vec<u8> {
        let mut part = format!(
            "--{}\r\n\
             Content-Type: application/http\r\n\
             Content-Transfer-Encoding: binary\r\n\r\n\
             {request} HTTP/1.1\r\n\
             Content-Type: application/json\r\n\
             Accept: {JSON_NO_METADATA}\r\n\
             {extra_headers}\
             DataServiceVersion: 3.0;\r\n\
             Content-Length: {}\r\n\r\n",
            self.changeset,
            entity.len()
        )
        .into_bytes();
        part.extend_from_slice(entity);
        part.extend_from_slice(b"\r\n");
        part
    }

    /// What the request adds around its parts.
    fn envelope_len(&self) -> usize {
        self.body(&[]).len()
    }

    fn body(&self, parts: &[Vec<u8>]) -> Vec<u8> {
        let Self {
            batch, changeset, ..
        } = self;
        let mut body = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + 200);
        body.extend_from_slice(
            format!("--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n")
                .as_bytes(),
        );
        for part in parts {
            body.extend_from_slice(part);
        }
        body.extend_from_slice(format!("--{changeset}--\r\n--{batch}--\r\n").as_bytes());
        body
    }
}

/// What the answer to an entity group transaction says.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every operation answered with a success status.
    Stored,
    /// An operation failed, so the transaction stored nothing: its status and its part
    /// of the answer (which holds the service's error JSON).
    Refused { status: StatusCode, body: Vec<u8> },
    /// The answer is not a batch response that accounts for the operations.
    Unreadable(&'static str),
}

/// Reads a batch response. The service answers 202 with a `multipart/mixed` body whose
/// change-set part holds one embedded HTTP response per operation when all succeeded, or
/// the one failed operation's response when the change set was rolled back.
pub fn batch_outcome(headers: &Headers, body: &[u8], operations: usize) -> BatchOutcome {
    let multipart = headers.get_optional_str(&CONTENT_TYPE).is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/mixed")
    });
    if !multipart {
        return BatchOutcome::Unreadable("not a multipart answer");
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return BatchOutcome::Unreadable("not UTF-8");
    };
    // Each embedded response starts with its status line at the start of a line.
    let mut statuses = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if let Some(rest) = trimmed.strip_prefix("HTTP/1.1 ") {
            let code = rest.split(' ').next().and_then(|c| c.parse::<u16>().ok());
            match code {
                Some(code) => statuses.push((code, offset + line.len())),
                None => return BatchOutcome::Unreadable("an embedded status line is malformed"),
            }
        }
        offset += line.len();
    }
    if let Some(&(code, start)) = statuses.iter().find(|(code, _)| !(200..300).contains(code)) {
        // The failed operation's part runs to the next boundary line.
        let rest = &text[start..];
        let end = rest.find("\n--").map_or(rest.len(), |i| i + 1);
        let part = &rest[..end];
        let json = part.find('{').map_or("", |i| part[i..].trim_end());
        return BatchOutcome::Refused {
            status: StatusCode::from(code),
            body: json.as_bytes().to_vec(),
        };
    }
    if statuses.len() != operations {
        return BatchOutcome::Unreadable("the answer does not account for every operation");
    }
    BatchOutcome::Stored
}

/// A failed call: the port error, and the service's code for callers that tell
/// harmless refusals apart (a table that already exists).
struct Failure {
    error: PortError,
    code: Option<ServiceErrorCode>,
}

struct ConnectionString {
    account: String,
    key: SecretValue,
    endpoint: Url,
}

/// The account name and key of a storage connection string, for the account's other
/// services (the audit checkpoints' Blob container on Azurite).
pub(crate) fn account_key_of(
    connection_string: &SecretValue,
) -> Result<(String, SecretValue), TableError> {
    let parsed = ConnectionString::parse(connection_string.expose())?;
    Ok((parsed.account, parsed.key))
}

impl ConnectionString {
    fn parse(text: &str) -> Result<Self, TableError> {
        let problem = |problem| TableError::InvalidConnectionString { problem };
        let mut protocol = None;
        let mut account = None;
        let mut key = None;
        let mut table_endpoint = None;
        let mut suffix = None;
        let mut development = false;
        for part in text
            .split(';')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (name, value) = part
                .split_once('=')
                .ok_or(problem("a setting is not `Name=value`"))?;
            match name.trim().to_ascii_lowercase().as_str() {
                "usedevelopmentstorage" => development = value.trim().eq_ignore_ascii_case("true"),
                "defaultendpointsprotocol" => protocol = Some(value.trim().to_owned()),
                "accountname" => account = Some(value.trim().to_owned()),
                "accountkey" => key = Some(SecretValue::new(value.trim())),
                "tableendpoint" => table_endpoint = Some(value.trim().to_owned()),
                "endpointsuffix" => suffix = Some(value.trim().to_owned()),
                "sharedaccesssignature" => {
                    return Err(problem("shared access signatures are not supported"));
                }
                // Endpoints of the other services and proxy settings do not concern tables.
                _ => {}
            }
        }
        if development {
            return Ok(Self {
                account: DEVELOPMENT_ACCOUNT.to_owned(),
                key: SecretValue::new(DEVELOPMENT_ACCOUNT_KEY),
                endpoint: Url::parse(DEVELOPMENT_TABLE_ENDPOINT)
                    .expect("invariant: a valid constant URL"),
            });
        }
        let account = account
            .filter(|a| !a.is_empty())
            .ok_or(problem("AccountName is missing"))?;
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or(problem("AccountKey is missing"))?;
        let endpoint = match table_endpoint {
            Some(endpoint) => {
                Url::parse(&endpoint).map_err(|_| problem("TableEndpoint is not a URL"))?
            }
            None => {
                let protocol = protocol.unwrap_or_else(|| "https".to_owned());
                if !matches!(protocol.as_str(), "http" | "https") {
                    return Err(problem("DefaultEndpointsProtocol must be http or https"));
                }
                let suffix = suffix.unwrap_or_else(|| "core.windows.net".to_owned());
                Url::parse(&format!("{protocol}://{account}.table.{suffix}"))
                    .map_err(|_| problem("AccountName and EndpointSuffix do not form a URL"))?
            }
        };
        Ok(Self {
            account,
            key,
            endpoint,
        })
    }
}

/// Signs each try with SharedKeyLite for the Table service ("Authorize with Shared
/// Key", Table service section): `StringToSign = x-ms-date + "\n" +
/// CanonicalizedResource`, where the resource is `/account` followed by the encoded
/// request path, plus `?comp=` when present. The date is taken per try because the
/// service refuses signatures more than 15 minutes old.
struct SharedKeyLitePolicy {
    account: String,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SharedKeyLitePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SharedKeyLitePolicy {{ account: {:?}, key: [redacted] }}",
            self.account
        )
    }
}

impl SharedKeyLitePolicy {
    fn signature(&self, string_to_sign: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .expect("invariant: HMAC accepts keys of any length");
        mac.update(string_to_sign.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }
}

fn canonicalized_resource(account: &str, url: &Url) -> String {
    let mut resource = format!("/{account}{}", url.path());
    if let Some((_, comp)) = url.query_pairs().find(|(name, _)| name == "comp") {
        resource.push_str("?comp=");
        resource.push_str(&comp);
    }
    resource
}

#[async_trait]
impl Policy for SharedKeyLitePolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let date = azure_core::time::to_rfc7231(&OffsetDateTime::now_utc());
        let string_to_sign = format!(
            "{date}\n{}",
            canonicalized_resource(&self.account, request.url())
        );
        let authorization = format!(
            "SharedKeyLite {}:{}",
            self.account,
            self.signature(&string_to_sign)
        );
        request.insert_header(MS_DATE, date);
        request.insert_header(AUTHORIZATION, authorization);
        next[0].send(ctx, request, &next[1..]).await
    }
}

fn entity_address(table: &TableName, partition_key: &EntityKey, row_key: &EntityKey) -> String {
    format!(
        "{}(PartitionKey='{}',RowKey='{}')",
        table.as_str(),
        partition_key.address_literal(),
        row_key.address_literal()
    )
}

fn entity_body<T: Serialize>(
    partition_key: &EntityKey,
    row_key: &EntityKey,
    properties: &T,
    operation: &str,
) -> Result<Vec<u8>, PortError> {
    let Ok(Value::Object(mut object)) = serde_json::to_value(properties) else {
        return Err(PortError::invalid(format!(
            "{operation}: properties must serialise to a JSON object"
        )));
    };
    if ["PartitionKey", "RowKey", "Timestamp"]
        .iter()
        .any(|name| object.contains_key(*name))
    {
        return Err(PortError::invalid(format!(
            "{operation}: properties must not set system properties"
        )));
    }
    object.insert(
        "PartitionKey".into(),
        Value::String(partition_key.0.clone()),
    );
    object.insert("RowKey".into(), Value::String(row_key.0.clone()));
    serde_json::to_vec(&object)
        .map_err(|_| PortError::invalid(format!("{operation}: encoding the entity")))
}

fn decode_entity<T: DeserializeOwned>(
    mut object: Map<String, Value>,
    operation: &str,
) -> Result<Entity<T>, PortError> {
    let mut key = |name: &str| match object.remove(name) {
        Some(Value::String(value)) => Ok(value),
        _ => Err(PortError::invalid(format!(
            "{operation}: an entity lacks its {name}"
        ))),
    };
    let partition_key = key("PartitionKey")?;
    let row_key = key("RowKey")?;
    let etag = match object.remove("odata.etag") {
        Some(Value::String(etag)) => Some(Etag::from(etag)),
        _ => None,
    };
    object.remove("Timestamp");
    object.retain(|name, _| !name.starts_with("odata.") && !name.contains("@odata."));
    let properties = serde_json::from_value(Value::Object(object)).map_err(|_| {
        PortError::invalid(format!(
            "{operation}: an entity does not have the expected properties"
        ))
    })?;
    Ok(Entity {
        partition_key,
        row_key,
        etag,
        properties,
    })
}

fn etag_of(response: &RawResponse, operation: &str) -> Result<Etag, PortError> {
    response
        .headers()
        .get_optional_string(&ETAG)
        .map(Etag::from)
        .ok_or_else(|| {
            PortError::new(
                FailureKind::Invalid,
                format!("{operation}: the answer carries no ETag"),
            )
        })
}

fn if_match_value(if_match: &IfMatch) -> String {
    match if_match {
        IfMatch::Any => "*".to_owned(),
        IfMatch::Etag(etag) => etag.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so that keys and
/// filter text survive any path or query position unchanged.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use azure_core::http::StatusCode;
    use keyturn_testkit::transport::{Answer, CannedTransport, FixedToken};

    use super::*;

    #[test]
    fn a_continuation_survives_its_token_and_garbage_is_no_token() {
        let both = Continuation {
            next_partition_key: "1!8!Yw--".to_owned(),
            next_row_key: Some("1!12!YS5i".to_owned()),
        };
        let partition_only = Continuation {
            next_partition_key: "1!8!Yw--".to_owned(),
            next_row_key: None,
        };

        assert_eq!(Continuation::from_token(&both.to_token()), Some(both));
        assert_eq!(
            Continuation::from_token(&partition_only.to_token()),
            Some(partition_only)
        );
        for bad in ["zz", "31.zz", "ff"] {
            assert_eq!(Continuation::from_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn entity_keys_refuse_forbidden_characters_and_length() {
        for bad in ["a/b", "a\\b", "a#b", "a?b", "a\u{7}b", "a\u{85}b"] {
            assert!(
                matches!(EntityKey::parse(bad), Err(TableError::InvalidKey { .. })),
                "{bad:?}"
            );
        }
        assert!(EntityKey::parse(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(EntityKey::parse(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(
            EntityKey::parse("").is_ok(),
            "the service allows empty keys"
        );
    }

    #[test]
    fn keys_in_addresses_double_quotes_then_percent_encode() {
        let table = TableName::parse("audit").expect("valid name");
        let pk = EntityKey::parse("o'brien & co").expect("valid key");
        let rk = EntityKey::parse("50%(x)").expect("valid key");
        assert_eq!(
            entity_address(&table, &pk, &rk),
            "audit(PartitionKey='o%27%27brien%20%26%20co',RowKey='50%25%28x%29')"
        );
    }

    #[test]
    fn odata_strings_double_single_quotes() {
        assert_eq!(odata_string("it's"), "'it''s'");
    }

    #[test]
    fn connection_strings_parse_without_echoing_the_key() {
        let full = ConnectionString::parse(
            "DefaultEndpointsProtocol=https;AccountName=kt;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .expect("valid");
        assert_eq!(full.endpoint.as_str(), "https://kt.table.core.windows.net/");
        assert_eq!((full.account.as_str(), full.key.expose()), ("kt", "a2V5"));

        let explicit = ConnectionString::parse(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5==;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;",
        )
        .expect("valid");
        assert_eq!(
            explicit.endpoint.as_str(),
            "http://127.0.0.1:10002/devstoreaccount1"
        );
        assert_eq!(explicit.key.expose(), "a2V5==", "values may contain `=`");

        let development = ConnectionString::parse("UseDevelopmentStorage=true").expect("valid");
        assert_eq!(development.account, DEVELOPMENT_ACCOUNT);
        assert_eq!(development.endpoint.as_str(), DEVELOPMENT_TABLE_ENDPOINT);

        let cases = [
            "AccountName=kt",
            "AccountKey=c2VjcmV0LWtleQ==",
            "AccountName=kt;AccountKey=c2VjcmV0LWtleQ==;SharedAccessSignature=sv=1",
            "AccountName=kt;AccountKey=c2VjcmV0LWtleQ==;TableEndpoint=not a url",
            "garbage c2VjcmV0LWtleQ==",
            "DefaultEndpointsProtocol=ftp;AccountName=kt;AccountKey=c2VjcmV0LWtleQ==",
        ];
        for bad in cases {
            let error = ConnectionString::parse(bad).err().expect("refused");
            assert!(!error.to_string().contains("c2VjcmV0LWtleQ"), "{error}");
        }
    }

    #[test]
    fn a_key_that_is_not_base64_is_refused_without_echo() {
        let auth = TableAuth::SharedKey {
            account: "kt".into(),
            key: SecretValue::new("not base64 !!"),
        };
        let endpoint = Url::parse("https://kt.table.core.windows.net").expect("valid URL");
        let error = TableClient::new(endpoint, auth, None).expect_err("bad key");
        assert_eq!(error, TableError::InvalidAccountKey);
    }

    #[test]
    fn shared_key_lite_signs_with_hmac_sha256_in_base64() {
        // Known answer: HMAC-SHA256 of Wikipedia's pangram under the key "key"
        // (f7bc83f4...2d1a3cd8), in base64. Azurite checks real signatures end to end.
        let policy = SharedKeyLitePolicy {
            account: "myaccount".into(),
            key: Zeroizing::new(b"key".to_vec()),
        };
        assert_eq!(
            policy.signature("The quick brown fox jumps over the lazy dog"),
            "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
        assert_eq!(
            format!("{policy:?}"),
            "SharedKeyLitePolicy { account: \"myaccount\", key: [redacted] }"
        );
    }

    #[test]
    fn the_canonical_resource_is_account_path_and_comp_only() {
        let url = Url::parse("https://myaccount.table.core.windows.net/mytable(PartitionKey='a',RowKey='b')?comp=x&$top=1")
            .expect("valid URL");
        assert_eq!(
            canonicalized_resource("myaccount", &url),
            "/myaccount/mytable(PartitionKey='a',RowKey='b')?comp=x"
        );
        let azurite =
            Url::parse("http://127.0.0.1:10002/devstoreaccount1/Tables").expect("valid URL");
        assert_eq!(
            canonicalized_resource("devstoreaccount1", &azurite),
            "/devstoreaccount1/devstoreaccount1/Tables"
        );
    }

    #[test]
    fn entity_bodies_carry_keys_and_refuse_system_properties() {
        let pk = EntityKey::parse("p").expect("valid");
        let rk = EntityKey::parse("r").expect("valid");
        let body =
            entity_body(&pk, &rk, &serde_json::json!({"Name": "x"}), "test").expect("encodes");
        let value: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"Name": "x", "PartitionKey": "p", "RowKey": "r"})
        );
        assert!(entity_body(&pk, &rk, &serde_json::json!({"RowKey": "x"}), "test").is_err());
        assert!(entity_body(&pk, &rk, &"scalar", "test").is_err());
    }

    #[test]
    fn decoded_entities_drop_metadata_and_system_properties() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Row {
            #[serde(rename = "Name")]
            name: String,
        }
        let object = serde_json::json!({
            "PartitionKey": "p", "RowKey": "r", "Timestamp": "2025-01-01T00:00:00Z",
            "odata.etag": "W/\"1\"", "Name": "x", "Name@odata.type": "Edm.String"
        });
        let Value::Object(object) = object else {
            unreachable!("literal is an object")
        };
        let entity: Entity<Row> = decode_entity(object, "test").expect("decodes");
        assert_eq!(entity.properties, Row { name: "x".into() });
        assert_eq!(
            entity.etag.map(|e| e.to_string()),
            Some("W/\"1\"".to_owned())
        );
        assert_eq!(
            (entity.partition_key.as_str(), entity.row_key.as_str()),
            ("p", "r")
        );
    }

    fn recorded_client(
        auth: TableAuth,
        endpoint: &str,
        status: StatusCode,
    ) -> (TableClient, Arc<CannedTransport>) {
        let recorder = CannedTransport::always(Answer::new(
            status,
            br#"{"odata.error":{"code":"EntityAlreadyExists","message":{"value":"raw text"}}}"#
                .to_vec(),
        ));
        let endpoint = Url::parse(endpoint).expect("valid URL");
        (
            TableClient::new(endpoint, auth, Some(recorder.options())).expect("valid client"),
            recorder,
        )
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn requests_carry_the_table_protocol_headers_and_a_signature_not_the_key() {
        let key = "c2VjcmV0LWtleS1ieXRlcw==";
        let auth = TableAuth::SharedKey {
            account: "kt".into(),
            key: SecretValue::new(key),
        };
        let (client, recorder) = recorded_client(
            auth,
            "https://kt.table.core.windows.net",
            StatusCode::Conflict,
        );
        let table = TableName::parse("audit").expect("valid");
        let key_of = |k: &str| EntityKey::parse(k).expect("valid");

        let error = client
            .insert(
                &table,
                &key_of("p"),
                &key_of("r"),
                &serde_json::json!({"A": "b"}),
            )
            .await
            .expect_err("409 answer");

        assert_eq!(error.kind, FailureKind::Conflict);
        assert!(
            !error.context.contains("raw text"),
            "backend messages stay out: {}",
            error.context
        );
        let seen = recorder.seen();
        let (url, headers) = (&seen[0].url, &seen[0].headers);
        assert_eq!(url, "https://kt.table.core.windows.net/audit");
        assert_eq!(header(headers, "accept"), Some(JSON_NO_METADATA));
        assert_eq!(header(headers, "x-ms-version"), Some(API_VERSION));
        assert_eq!(header(headers, "dataserviceversion"), Some("3.0"));
        assert_eq!(header(headers, "maxdataserviceversion"), Some("3.0;NetFx"));
        assert_eq!(header(headers, "content-type"), Some("application/json"));
        assert!(header(headers, "x-ms-date").is_some());
        let authorization = header(headers, "authorization").expect("signed");
        assert!(
            authorization.starts_with("SharedKeyLite kt:"),
            "{authorization}"
        );
        assert!(headers.iter().all(|(_, value)| !value.contains(key)));
    }

    #[tokio::test]
    async fn entra_tokens_are_requested_for_the_storage_scope() {
        let credential = FixedToken::new();
        let (client, recorder) = recorded_client(
            TableAuth::Token(credential.clone()),
            "https://kt.table.core.windows.net",
            StatusCode::Forbidden,
        );
        let table = TableName::parse("audit").expect("valid");

        let error = client
            .create_table_if_not_exists(&table)
            .await
            .expect_err("403 answer");

        assert_eq!(
            error.kind,
            FailureKind::PermissionDenied {
                missing: "Storage Table Data Contributor on kt.table.core.windows.net".into()
            }
        );
        assert_eq!(credential.scopes(), [TABLE_SCOPE]);
        let seen = recorder.seen();
        assert_eq!(
            header(&seen[0].headers, "authorization"),
            Some("Bearer token-for-test")
        );
    }

    fn multipart_headers() -> Headers {
        let mut headers = Headers::new();
        headers.insert(
            CONTENT_TYPE,
            "multipart/mixed; boundary=batchresponse_7d7f2c41-0b0c-4b9e-9c2a-5f7c1f3e9a10",
        );
        headers
    }

    /// The layout "Performing entity group transactions" documents for a change set
    /// whose operations all succeeded: one embedded response per operation.
    fn stored_answer(operations: usize) -> String {
        let mut body = String::from(
            "--batchresponse_7d7f2c41-0b0c-4b9e-9c2a-5f7c1f3e9a10\r\n\
             Content-Type: multipart/mixed; boundary=changesetresponse_0f6b\r\n\r\n",
        );
        for _ in 0..operations {
            body.push_str(
                "--changesetresponse_0f6b\r\n\
                 Content-Type: application/http\r\n\
                 Content-Transfer-Encoding: binary\r\n\r\n\
                 HTTP/1.1 204 No Content\r\n\
                 X-Content-Type-Options: nosniff\r\n\
                 Preference-Applied: return-no-content\r\n\
                 DataServiceVersion: 3.0;\r\n\r\n",
            );
        }
        body.push_str(
            "--changesetresponse_0f6b--\r\n--batchresponse_7d7f2c41-0b0c-4b9e-9c2a-5f7c1f3e9a10--\r\n",
        );
        body
    }

    /// A rolled-back change set: only the failed operation answers, its error message
    /// prefixed with the operation's index.
    const REFUSED_ANSWER: &str = "--batchresponse_7d7f2c41-0b0c-4b9e-9c2a-5f7c1f3e9a10\r\n\
        Content-Type: multipart/mixed; boundary=changesetresponse_0f6b\r\n\r\n\
        --changesetresponse_0f6b\r\n\
        Content-Type: application/http\r\n\
        Content-Transfer-Encoding: binary\r\n\r\n\
        HTTP/1.1 409 Conflict\r\n\
        Content-Type: application/json;odata=nometadata;streaming=true;charset=utf-8\r\n\r\n\
        {\"odata.error\":{\"code\":\"EntityAlreadyExists\",\"message\":{\"lang\":\"en-US\",\"value\":\"1:The specified entity already exists.\"}}}\r\n\
        --changesetresponse_0f6b--\r\n\
        --batchresponse_7d7f2c41-0b0c-4b9e-9c2a-5f7c1f3e9a10--\r\n";

    #[test]
    fn a_batch_answer_with_a_success_per_operation_means_stored() {
        let answer = stored_answer(3);
        assert_eq!(
            batch_outcome(&multipart_headers(), answer.as_bytes(), 3),
            BatchOutcome::Stored
        );
    }

    #[test]
    fn a_batch_answer_missing_an_operation_is_unreadable_not_stored() {
        let answer = stored_answer(2);
        assert!(matches!(
            batch_outcome(&multipart_headers(), answer.as_bytes(), 3),
            BatchOutcome::Unreadable(_)
        ));
    }

    #[test]
    fn a_rolled_back_batch_reports_the_failed_operations_status_and_code() {
        let outcome = batch_outcome(&multipart_headers(), REFUSED_ANSWER.as_bytes(), 3);
        let BatchOutcome::Refused { status, body } = outcome else {
            panic!("expected a refusal, got {outcome:?}");
        };
        assert_eq!(status, StatusCode::Conflict);
        let code = ServiceErrorCode::from_response(&Headers::new(), &body);
        assert_eq!(
            code.as_ref().map(ServiceErrorCode::as_str),
            Some("EntityAlreadyExists")
        );
    }

    #[test]
    fn a_batch_answer_that_is_not_multipart_is_unreadable() {
        let answer = stored_answer(1);
        let mut json = Headers::new();
        json.insert(CONTENT_TYPE, "application/json");
        for headers in [Headers::new(), json] {
            assert!(matches!(
                batch_outcome(&headers, answer.as_bytes(), 1),
                BatchOutcome::Unreadable(_)
            ));
        }
        let garbled = stored_answer(1).replace("HTTP/1.1 204", "HTTP/1.1 2x4");
        assert!(matches!(
            batch_outcome(&multipart_headers(), garbled.as_bytes(), 1),
            BatchOutcome::Unreadable(_)
        ));
    }

    #[test]
    fn a_batch_request_holds_one_change_set_with_one_insert_per_entity() {
        let url = Url::parse("https://acct.table.core.windows.net/audit").expect("url");
        let batch = Batch::new(url);
        let entities = [br#"{"RowKey":"1"}"#.to_vec(), br#"{"RowKey":"2"}"#.to_vec()];
        let parts: Vec<_> = entities.iter().map(|e| batch.insert_part(e)).collect();

        let body = String::from_utf8(batch.body(&parts)).expect("UTF-8");

        assert!(batch.content_type().ends_with(&batch.batch));
        assert!(body.starts_with(&format!("--{}\r\n", batch.batch)));
        assert!(body.ends_with(&format!(
            "--{}--\r\n--{}--\r\n",
            batch.changeset, batch.batch
        )));
        assert_eq!(
            body.matches("POST https://acct.table.core.windows.net/audit HTTP/1.1\r\n")
                .count(),
            2
        );
        assert_eq!(body.matches("Content-Length: 14\r\n\r\n").count(), 2);
        assert_eq!(
            body.matches(&format!("--{}\r\n", batch.changeset)).count(),
            2
        );
        assert_ne!(
            batch.batch,
            Batch::new(Url::parse("https://a/t").expect("url")).batch
        );
    }

    #[tokio::test]
    async fn upsert_all_splits_into_transactions_writes_a_repeated_row_once_and_stops_at_a_refusal()
    {
        let batch_answer = |body: String| {
            Answer::new(StatusCode::Accepted, body).header(
                "content-type",
                "multipart/mixed; boundary=batchresponse_7d7f2c41-0b0c-4b9e-9c2a-5f7c1f3e9a10",
            )
        };
        let transport = CannedTransport::script([
            batch_answer(stored_answer(100)),
            batch_answer(REFUSED_ANSWER.to_owned()),
        ]);
        let client = TableClient::new(
            Url::parse("https://kt.table.core.windows.net").expect("url"),
            TableAuth::Token(FixedToken::new()),
            Some(transport.options()),
        )
        .expect("client");
        let table = TableName::parse("inventory").expect("valid");
        let partition = EntityKey::parse("cvault").expect("valid");
        // 251 given, 250 rows: row 7 comes twice, its second properties win.
        let mut entities: Vec<(EntityKey, Value)> = (0..250)
            .map(|i| {
                let row = EntityKey::parse(&format!("r{i:03}")).expect("valid");
                (row, serde_json::json!({ "N": i }))
            })
            .collect();
        entities.push((
            EntityKey::parse("r007").expect("valid"),
            serde_json::json!({ "N": "last" }),
        ));

        let error = client
            .upsert_all(&table, &partition, &entities)
            .await
            .expect_err("the second transaction is refused");

        assert_eq!(error.kind, FailureKind::Conflict);
        assert!(
            error.context.contains("transaction 2 of 3, 100 entities")
                && error
                    .context
                    .contains("the 100 entities of the transactions before it are stored"),
            "{}",
            error.context
        );
        let seen = transport.seen();
        assert_eq!(seen.len(), 2, "no transaction is sent after a refusal");
        let first = String::from_utf8(seen[0].body.clone()).expect("UTF-8");
        assert_eq!(seen[0].url, "https://kt.table.core.windows.net/$batch");
        assert_eq!(first.matches(" HTTP/1.1\r\n").count(), 100);
        assert_eq!(
            first
                .matches(
                    "PUT https://kt.table.core.windows.net/inventory(PartitionKey='cvault',RowKey='r007') HTTP/1.1\r\n"
                )
                .count(),
            1
        );
        assert!(first.contains(r#""N":"last""#) && !first.contains(r#""N":7,"#));
        assert!(!first.contains("POST "), "upserts, not inserts");
        assert!(
            !first.contains("If-Match"),
            "written whether or not it exists"
        );
        let second = String::from_utf8(seen[1].body.clone()).expect("UTF-8");
        assert!(second.contains("RowKey='r100'") && !second.contains("RowKey='r099'"));
    }

    proptest::proptest! {
        #[test]
        fn any_batch_answer_is_read_without_panicking(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            text in "(HTTP/1.1 [0-9]{0,4}[ a-z]*\r?\n|--[a-z]*\r?\n|\\{[a-z:\"]*\\}|[\r\n]|.){0,40}",
            operations in 0usize..5,
        ) {
            let _ = batch_outcome(&multipart_headers(), &body, operations);
            let _ = batch_outcome(&multipart_headers(), text.as_bytes(), operations);
        }
    }
}
