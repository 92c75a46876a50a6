//! The audit log's storage port: what an audit entry holds, and the conditional append
//! and ordered reads every audit store must offer.
//!
//! Entries hold text and hashes only. No field can hold a
//! [`SecretValue`](crate::domain::secret::SecretValue): every type here derives
//! `Serialize`, which `SecretValue` deliberately does not implement, so a secret cannot be
//! put in an entry without first calling `expose()` on it in plain sight.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::ports::PortError;

/// Longest text accepted in one audit field, in bytes. Key Vault names are at most 127
/// characters, versions 32 hex digits, Graph ids 36 and thumbprints 64; reasons are short
/// sentences. 1 KiB leaves room for all of them while keeping an entry (a dozen fields) far
/// below Azure Table storage's 64 KiB per-property and 1 MiB per-entity limits.
pub(crate) const MAX_AUDIT_TEXT_BYTES: usize = 1024;

/// Length of a SHA-256 digest, the hash of the chain.
pub(crate) const HASH_BYTES: usize = 32;

/// Why a piece of audit data was refused. Never carries the refused text itself: an
/// operator may have pasted a secret into the wrong field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditDataError {
    #[error("audit text is empty")]
    EmptyText,
    #[error("audit text is {len} bytes, more than the {max} allowed")]
    TextTooLong { len: usize, max: usize },
    #[error("audit text holds a control character at byte {index}")]
    ControlCharacter { index: usize },
    #[error("unknown actor kind (expected `function` or `identity`)")]
    UnknownActorKind,
    #[error("unknown outcome (expected succeeded, failed, denied or skipped)")]
    UnknownOutcome,
    #[error("hash is not {HASH_BYTES} bytes of lowercase hex")]
    MalformedHash,
    #[error("time is not an RFC 3339 UTC timestamp")]
    MalformedTime,
    #[error("field `{field}` is missing")]
    MissingField { field: &'static str },
    #[error("field `{field}` is not a positive sequence number")]
    MalformedNumber { field: &'static str },
    #[error(
        "chain name is not 1-63 lowercase letters, digits and `-` starting with a letter or digit"
    )]
    MalformedChain,
}

/// One line of audit text: non-empty, at most [`MAX_AUDIT_TEXT_BYTES`], no control
/// characters (so an entry always prints as one unambiguous line).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AuditText(String);

impl AuditText {
    pub fn parse(text: impl Into<String>) -> Result<Self, AuditDataError> {
        let text = text.into();
        if text.is_empty() {
            return Err(AuditDataError::EmptyText);
        }
        if text.len() > MAX_AUDIT_TEXT_BYTES {
            return Err(AuditDataError::TextTooLong {
                len: text.len(),
                max: MAX_AUDIT_TEXT_BYTES,
            });
        }
        if let Some((index, _)) = text.char_indices().find(|(_, c)| c.is_control()) {
            return Err(AuditDataError::ControlCharacter { index });
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AuditText {
    type Err = AuditDataError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl TryFrom<String> for AuditText {
    type Error = AuditDataError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(text)
    }
}

impl From<AuditText> for String {
    fn from(text: AuditText) -> Self {
        text.0
    }
}

impl fmt::Debug for AuditText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for AuditText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who acted: one of keyturn's functions (by function name) or an identity (an Entra
/// object id, an app id, a device certificate thumbprint, an operator's name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Actor {
    Function(AuditText),
    Identity(AuditText),
}

impl Actor {
    pub(crate) fn from_parts(kind: &str, name: AuditText) -> Result<Self, AuditDataError> {
        match kind {
            "function" => Ok(Self::Function(name)),
            "identity" => Ok(Self::Identity(name)),
            _ => Err(AuditDataError::UnknownActorKind),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Function(_) => "function",
            Self::Identity(_) => "identity",
        }
    }

    pub fn name(&self) -> &AuditText {
        match self {
            Self::Function(name) | Self::Identity(name) => name,
        }
    }
}

/// Which object an action touched. Every part is optional because actions touch
/// different things: a rotation names vault, secret and version; a credential
/// rotation names app id and key id; a device read names a thumbprint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuditObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<AuditText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<AuditText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<AuditText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<AuditText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<AuditText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<AuditText>,
}

/// How the action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Denied,
    Skipped,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Denied => "denied",
            Self::Skipped => "skipped",
        }
    }
}

impl FromStr for Outcome {
    type Err = AuditDataError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "denied" => Ok(Self::Denied),
            "skipped" => Ok(Self::Skipped),
            _ => Err(AuditDataError::UnknownOutcome),
        }
    }
}

/// What a caller asks to record. The time comes from the caller's clock: the audit log
/// never reads one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    #[serde(with = "audit_time")]
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub action: AuditText,
    #[serde(default)]
    pub object: AuditObject,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<AuditText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<AuditText>,
    /// How many occurrences this one entry stands for, when repeats of one decision were
    /// folded into it (a refusal repeated within a window, an event delivered again);
    /// absent for a single occurrence. `at` is then the first occurrence's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl AuditRecord {
    /// A record with no object, reason or invocation id; set those fields directly.
    pub fn new(at: DateTime<Utc>, actor: Actor, action: AuditText, outcome: Outcome) -> Self {
        Self {
            at,
            actor,
            action,
            object: AuditObject::default(),
            outcome,
            reason: None,
            invocation_id: None,
            count: None,
        }
    }

    /// How many occurrences the entry stands for: its folded count, or one.
    pub fn occurrences(&self) -> u64 {
        self.count.unwrap_or(1)
    }
}

/// Parses a stored folded count: a decimal of at least 2 (one occurrence is stored as no
/// count, so a stored 0 or 1 was written by something other than keyturn).
pub(crate) fn parse_audit_count(text: &str) -> Result<u64, AuditDataError> {
    text.parse::<u64>()
        .ok()
        .filter(|count| *count >= 2)
        .ok_or(AuditDataError::MalformedNumber { field: "count" })
}

/// The one text form of an entry's time, used in storage and in the hash: RFC 3339 in
/// UTC with exactly nine fractional digits and a `Z`, so that a stored time parses back
/// to the same instant and re-encodes to the same bytes.
pub(crate) fn format_audit_time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Parses a time written by [`format_audit_time`] (any RFC 3339 offset is accepted and
/// converted to UTC).
pub(crate) fn parse_audit_time(text: &str) -> Result<DateTime<Utc>, AuditDataError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| AuditDataError::MalformedTime)
}

mod audit_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        at: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_audit_time(at))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_audit_time(&text).map_err(serde::de::Error::custom)
    }
}

/// A SHA-256 digest in the chain. Text form: 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryHash([u8; HASH_BYTES]);

impl EntryHash {
    /// The previous hash of the first entry.
    pub(crate) const GENESIS: EntryHash = EntryHash([0; HASH_BYTES]);

    pub(crate) fn from_bytes(bytes: [u8; HASH_BYTES]) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for EntryHash {
    type Err = AuditDataError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Only the lowercase form is accepted so that one hash has exactly one spelling.
        if text.len() != HASH_BYTES * 2 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(AuditDataError::MalformedHash);
        }
        let mut bytes = [0; HASH_BYTES];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| AuditDataError::MalformedHash)?;
        Ok(Self(bytes))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", self.to_hex())
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for EntryHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for EntryHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One sealed link of the chain: a record, its sequence number (1 for the first entry),
/// the previous entry's hash and its own hash. `audit::seal` makes these; stores only
/// keep and return them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub sequence: u64,
    #[serde(flatten)]
    pub record: AuditRecord,
    pub prev_hash: EntryHash,
    pub hash: EntryHash,
}

/// What a store holds at one position. `content` is an error when the stored data no
/// longer decodes (someone edited it into nonsense); verification reports that as a
/// break at `position` instead of giving up on the whole log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub position: u64,
    pub content: Result<AuditEntry, AuditDataError>,
}

/// Longest chain name: short enough to be a Table storage PartitionKey and a blob name
/// segment with room to spare, long enough for a prefix and 32 hex digits.
pub(crate) const MAX_CHAIN_ID_BYTES: usize = 63;

/// Names one writer's chain. The log is a set of chains, one per writer, so that
/// several instances append at once without racing for one position; signed
/// checkpoints tie them together. Lowercase letters, digits and `-`, starting with a
/// letter or digit, at most [`MAX_CHAIN_ID_BYTES`]: valid as a Table PartitionKey, a
/// blob name segment and a SQLite text key alike.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChainId(String);

impl ChainId {
    /// The chain of a store built without naming one: the single chain keyturn kept
    /// before the log had one chain per writer.
    pub const DEFAULT: &'static str = "chain";

    pub fn parse(text: impl Into<String>) -> Result<Self, AuditDataError> {
        let text = text.into();
        let valid = !text.is_empty()
            && text.len() <= MAX_CHAIN_ID_BYTES
            && !text.starts_with('-')
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(text))
        } else {
            Err(AuditDataError::MalformedChain)
        }
    }

    /// The default chain ([`ChainId::DEFAULT`]).
    pub fn default_chain() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    /// A fresh chain for one writer process: `w-` and 32 random hex digits, so two
    /// processes never share one by accident.
    pub fn generate() -> Self {
        Self(format!("w-{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ChainId {
    fn default() -> Self {
        Self::default_chain()
    }
}

impl TryFrom<String> for ChainId {
    type Error = AuditDataError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(text)
    }
}

impl From<ChainId> for String {
    fn from(chain: ChainId) -> Self {
        chain.0
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entry flattened into its named fields, every one its hash covers, as text (the
/// one place that says which field is which and how it is written): the Table entity's
/// properties and the export's JSON fields and CSV columns are these. Absent fields are
/// `None` (and left out of JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditFields<'a> {
    pub sequence: u64,
    pub time: String,
    pub actor_kind: &'static str,
    pub actor: &'a str,
    pub action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<&'a str>,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    pub prev_hash: String,
    pub hash: String,
}

impl<'a> AuditFields<'a> {
    pub fn of(entry: &'a AuditEntry) -> Self {
        let record = &entry.record;
        let object = &record.object;
        let text = |value: &'a Option<AuditText>| value.as_ref().map(AuditText::as_str);
        Self {
            sequence: entry.sequence,
            time: format_audit_time(&record.at),
            actor_kind: record.actor.kind(),
            actor: record.actor.name().as_str(),
            action: record.action.as_str(),
            vault: text(&object.vault),
            secret_name: text(&object.secret_name),
            secret_version: text(&object.secret_version),
            app_id: text(&object.app_id),
            key_id: text(&object.key_id),
            thumbprint: text(&object.thumbprint),
            outcome: record.outcome.as_str(),
            reason: text(&record.reason),
            invocation_id: text(&record.invocation_id),
            count: record.count,
            prev_hash: entry.prev_hash.to_hex(),
            hash: entry.hash.to_hex(),
        }
    }
}

/// What a store holds as a whole: every chain with at least one row, and every row that
/// belongs to no chain's positions (a foreign row: written by someone other than
/// keyturn, or keyed so that it names no position).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    pub chains: Vec<ChainId>,
    pub foreign: Vec<ForeignRow>,
}

/// A row that is not an entry at a position. `chain` is the chain whose partition (or
/// column) it sits in when that names a valid chain; `after` is the highest position
/// of that chain it sorts after, when the store can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRow {
    pub chain: Option<ChainId>,
    /// Where it is, in the store's own terms (partition and row key, or table row id).
    pub location: String,
    pub after: Option<u64>,
}

/// Where audit entries are kept. Positions start at 1 and are the store's own key; an
/// honest store keeps each entry at the position equal to its sequence number.
///
/// A store value appends to and reads one chain, [`AuditStore::chain`];
/// [`AuditStore::survey`] and [`AuditStore::for_chain`] reach the others.
#[async_trait]
pub trait AuditStore: Send + Sync + fmt::Debug {
    /// The chain this store value appends to and reads.
    fn chain(&self) -> ChainId {
        ChainId::default_chain()
    }

    /// The same store, reading and appending to `chain`. Stores that hold one chain
    /// only answer `None` for any other.
    fn for_chain(&self, chain: &ChainId) -> Option<std::sync::Arc<dyn AuditStore>> {
        let _ = chain;
        None
    }

    /// Every chain the store holds and every foreign row. Stores with one chain only
    /// report that chain when it holds anything.
    async fn survey(&self) -> Result<Survey, PortError> {
        let chains = if self.head().await?.is_some() {
            vec![self.chain()]
        } else {
            Vec::new()
        };
        Ok(Survey {
            chains,
            foreign: Vec::new(),
        })
    }

    /// The entry at the highest position, or `None` when the log is empty.
    async fn head(&self) -> Result<Option<StoredEntry>, PortError>;

    /// Stores `entry` at position `entry.sequence`. Callers pass one past the head they
    /// read; when another writer has taken that position (or, for stores that can tell,
    /// when the head has moved) the store refuses with [`FailureKind::Conflict`] and
    /// stores nothing. Stored entries are never overwritten.
    ///
    /// [`FailureKind::Conflict`]: crate::ports::FailureKind::Conflict
    async fn append(&self, entry: &AuditEntry) -> Result<(), PortError>;

    /// How many entries [`AuditStore::append_all`] stores in one all-or-none write. One
    /// (the default) for stores without multi-entry transactions.
    fn max_batch(&self) -> usize {
        1
    }

    /// Stores consecutive `entries` (sealed in order, the first one past the head) all
    /// or none, with the same conflict rule as [`AuditStore::append`]. Callers pass at
    /// most [`AuditStore::max_batch`] entries; the default, for stores that write one
    /// entry at a time, is correct for exactly one.
    async fn append_all(&self, entries: &[AuditEntry]) -> Result<(), PortError> {
        for entry in entries {
            self.append(entry).await?;
        }
        Ok(())
    }

    /// The entries at positions `from .. from + count`, in ascending position order.
    /// Positions with nothing stored are simply absent from the answer.
    async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_text_refuses_bad_input_without_echoing_it() {
        let cases: Vec<(String, AuditDataError)> = vec![
            (String::new(), AuditDataError::EmptyText),
            (
                "x".repeat(MAX_AUDIT_TEXT_BYTES + 1),
                AuditDataError::TextTooLong {
                    len: MAX_AUDIT_TEXT_BYTES + 1,
                    max: MAX_AUDIT_TEXT_BYTES,
                },
            ),
            (
                "line\nbreak".into(),
                AuditDataError::ControlCharacter { index: 4 },
            ),
            (
                "nul\0".into(),
                AuditDataError::ControlCharacter { index: 3 },
            ),
        ];
        for (input, expected) in cases {
            let error = AuditText::parse(input.clone()).expect_err("bad input must be refused");
            assert_eq!(error, expected);
            if !input.is_empty() {
                assert!(!error.to_string().contains(input.as_str()));
            }
        }
    }

    #[test]
    fn audit_text_accepts_the_longest_allowed_line() {
        let text = "é".repeat(MAX_AUDIT_TEXT_BYTES / 2);
        assert_eq!(AuditText::parse(text.clone()).map(String::from), Ok(text));
    }

    #[test]
    fn entry_hash_has_exactly_one_spelling() {
        let lower = "ab".repeat(HASH_BYTES);
        let hash: EntryHash = lower.parse().expect("lowercase hex of the right length");
        assert_eq!(hash.to_hex(), lower);
        for bad in [
            "AB".repeat(HASH_BYTES),
            "ab".repeat(HASH_BYTES - 1),
            "zz".repeat(HASH_BYTES),
        ] {
            assert_eq!(bad.parse::<EntryHash>(), Err(AuditDataError::MalformedHash));
        }
    }

    #[test]
    fn audit_time_round_trips_to_the_same_bytes() {
        let text = "2025-03-01T12:34:56.000000789Z";
        let at = parse_audit_time(text).expect("valid RFC 3339");
        assert_eq!(format_audit_time(&at), text);
        assert_eq!(
            parse_audit_time("yesterday"),
            Err(AuditDataError::MalformedTime)
        );
    }

    #[test]
    fn actor_and_outcome_refuse_unknown_words() {
        let name = AuditText::parse("RotationWorker").expect("valid text");
        assert_eq!(
            Actor::from_parts("robot", name),
            Err(AuditDataError::UnknownActorKind)
        );
        assert_eq!(
            "won".parse::<Outcome>(),
            Err(AuditDataError::UnknownOutcome)
        );
        for outcome in [
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::Denied,
            Outcome::Skipped,
        ] {
            assert_eq!(outcome.as_str().parse::<Outcome>(), Ok(outcome));
        }
    }
}
