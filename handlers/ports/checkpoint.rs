//! The audit log's anchors: signed checkpoints of each chain's head, where they are kept
//! (storage keyturn's identities can append to but never alter), and the key that signs
//! them (usable to sign, never exported).
//!
//! # The checkpoint
//!
//! A checkpoint says "writer `writer`'s chain had, at time `at`, its head at each of
//! these positions with these hashes; my previous checkpoint ended at `previous`" (0 for
//! none). The writer makes one for every batch it stores; when several batches were
//! stored while the last checkpoint was being written, one checkpoint carries all of
//! their heads, in position order, under one signature. What is signed is its canonical
//! encoding.
//!
//! A checkpoint of one head (`keyturn-checkpoint-v1`) is the concatenation of:
//!
//! 1. the 21 ASCII bytes `keyturn-checkpoint-v1`;
//! 2. the writer's chain name: its UTF-8 length as an unsigned 64-bit big-endian integer,
//!    then its bytes;
//! 3. `position` and `previous`, each an unsigned 64-bit big-endian integer;
//! 4. `head`, 32 raw bytes;
//! 5. `at` (RFC 3339 UTC, nine fractional digits, `Z`): length as above, then its bytes.
//!
//! A checkpoint of several heads (`keyturn-checkpoint-v2`) is the concatenation of:
//!
//! 1. the 21 ASCII bytes `keyturn-checkpoint-v2`;
//! 2. the writer's chain name, as in v1;
//! 3. `previous`, then the number of heads, each an unsigned 64-bit big-endian integer;
//! 4. for each head in order: its position (unsigned 64-bit big-endian), then its hash
//!    (32 raw bytes);
//! 5. `at`, as in v1.
//!
//! The tags differ, so a signature over one encoding never checks as the other.
//!
//! Stored, a checkpoint is one line of JSON: `writer`, `previous`, `at`, then `position`
//! and `head` (one head) or `heads`, a list of `[position, head]` pairs (several), then
//! `algorithm` (`EdDSA` for Ed25519, `ES256` for ECDSA P-256 with SHA-256, signature
//! `r || s`), `key_id` and `signature` (unpadded base64url). Anyone with the public key
//! can check a line with nothing but SHA-256 and an Ed25519 or ECDSA implementation.

use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ports::PortError;
use crate::ports::audit::{ChainId, EntryHash, format_audit_time};

/// The first bytes of the signed encoding of a checkpoint of one head.
pub(crate) const CHECKPOINT_ENCODING_TAG: &[u8; 21] = b"keyturn-checkpoint-v1";

/// The first bytes of the signed encoding of a checkpoint of several heads.
pub(crate) const GROUP_ENCODING_TAG: &[u8; 21] = b"keyturn-checkpoint-v2";

/// The most heads one checkpoint carries. The writer stores no batch while 64 wait for
/// their checkpoint (`audit::anchor::UNANCHORED_BATCHES`), so it never has more than
/// that to put in one; a stored line with more is refused.
pub const MAX_HEADS_PER_CHECKPOINT: usize = 64;

/// Longest stored checkpoint line accepted, in bytes. A line holds a 63-byte chain
/// name, a number, up to [`MAX_HEADS_PER_CHECKPOINT`] positions with a 64-digit hash
/// each (about 90 bytes a head), a time, a key id (a Key Vault key URL is under 300
/// bytes) and a signature in base64: under 7 KiB. 16 KiB leaves room and keeps a
/// garbage file from being read into memory as one line.
pub(crate) const MAX_CHECKPOINT_LINE_BYTES: usize = 16 * 1024;

/// One stored batch's head: the position of its last entry, and that entry's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchHead {
    pub position: u64,
    pub head: EntryHash,
}

/// A chain's heads at one moment, as its writer saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub writer: ChainId,
    /// Where the writer's previous checkpoint ended: the position of its last head (0:
    /// none).
    pub previous: u64,
    /// The heads it vouches for, in increasing position: one per batch, at least one.
    pub heads: Vec<BatchHead>,
    pub at: DateTime<Utc>,
}

impl Checkpoint {
    /// A checkpoint of one head.
    pub fn of_one(
        writer: ChainId,
        position: u64,
        previous: u64,
        head: EntryHash,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            writer,
            previous,
            heads: vec![BatchHead { position, head }],
            at,
        }
    }

    /// The last head's position: the furthest the checkpoint vouches for (`previous`
    /// for a checkpoint without heads, which is never stored).
    pub fn position(&self) -> u64 {
        self.heads
            .last()
            .map_or(self.previous, |last| last.position)
    }

    /// Each head with the position of the head before it (the first's: `previous`), in
    /// order: every head is a checkpoint of its batch, naming the one before.
    pub fn links(&self) -> impl Iterator<Item = (u64, BatchHead)> + '_ {
        let befores = std::iter::once(self.previous).chain(self.heads.iter().map(|h| h.position));
        befores.zip(self.heads.iter().copied())
    }

    /// The bytes that are signed, as the module documentation specifies.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let time = format_audit_time(&self.at);
        let mut bytes = Vec::with_capacity(96 + 40 * self.heads.len());
        let writer = self.writer.as_str();
        match self.heads.as_slice() {
            [only] => {
                bytes.extend_from_slice(CHECKPOINT_ENCODING_TAG);
                bytes.extend_from_slice(&(writer.len() as u64).to_be_bytes());
                bytes.extend_from_slice(writer.as_bytes());
                bytes.extend_from_slice(&only.position.to_be_bytes());
                bytes.extend_from_slice(&self.previous.to_be_bytes());
                bytes.extend_from_slice(only.head.as_bytes());
            }
            heads => {
                bytes.extend_from_slice(GROUP_ENCODING_TAG);
                bytes.extend_from_slice(&(writer.len() as u64).to_be_bytes());
                bytes.extend_from_slice(writer.as_bytes());
                bytes.extend_from_slice(&self.previous.to_be_bytes());
                bytes.extend_from_slice(&(heads.len() as u64).to_be_bytes());
                for head in heads {
                    bytes.extend_from_slice(&head.position.to_be_bytes());
                    bytes.extend_from_slice(head.head.as_bytes());
                }
            }
        }
        bytes.extend_from_slice(&(time.len() as u64).to_be_bytes());
        bytes.extend_from_slice(time.as_bytes());
        bytes
    }
}

/// The signature algorithms checkpoints are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignatureAlgorithm {
    /// Ed25519 (RFC 8032), the local key.
    EdDSA,
    /// ECDSA on P-256 over SHA-256, signature `r || s` (RFC 7518 section 3.4): a Key
    /// Vault EC key.
    ES256,
}

/// A signature and the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub algorithm: SignatureAlgorithm,
    /// The key's name where it lives: a Key Vault key URL with its version, or the
    /// local key's fingerprint.
    pub key_id: String,
    pub bytes: Vec<u8>,
}

/// A checkpoint and its signature, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub signature: Signature,
}

/// A stored line. Field order is the line's: `writer`, `position`, `previous`, `head`
/// as the first version wrote them, `heads` in their place for several.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    writer: ChainId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
    previous: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    head: Option<EntryHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heads: Option<Vec<(u64, EntryHash)>>,
    at: String,
    algorithm: SignatureAlgorithm,
    key_id: String,
    signature: String,
}

impl SignedCheckpoint {
    /// The stored form: one line of JSON, without the line break.
    pub fn to_line(&self) -> String {
        let checkpoint = &self.checkpoint;
        let (position, head, heads) = match checkpoint.heads.as_slice() {
            [only] => (Some(only.position), Some(only.head), None),
            heads => (
                None,
                None,
                Some(heads.iter().map(|h| (h.position, h.head)).collect()),
            ),
        };
        let line = Line {
            writer: checkpoint.writer.clone(),
            position,
            previous: checkpoint.previous,
            head,
            heads,
            at: format_audit_time(&checkpoint.at),
            algorithm: self.signature.algorithm,
            key_id: self.signature.key_id.clone(),
            signature: BASE64URL.encode(&self.signature.bytes),
        };
        serde_json::to_string(&line).expect("invariant: a checkpoint line always encodes")
    }

    /// Parses one stored line. The error says what is wrong, never echoing the line.
    pub fn from_line(line: &str) -> Result<Self, String> {
        if line.len() > MAX_CHECKPOINT_LINE_BYTES {
            return Err(format!(
                "line is {} bytes, more than the {MAX_CHECKPOINT_LINE_BYTES} a checkpoint can take",
                line.len()
            ));
        }
        let parsed: Line = serde_json::from_str(line).map_err(|e| {
            if e.is_eof() {
                "line is truncated".to_owned()
            } else {
                format!(
                    "not a checkpoint ({} at column {})",
                    category(&e),
                    e.column()
                )
            }
        })?;
        let heads = match (parsed.position, parsed.head, parsed.heads) {
            (Some(position), Some(head), None) => vec![BatchHead { position, head }],
            (None, None, Some(heads)) => read_heads(parsed.previous, heads)?,
            _ => {
                return Err(
                    "a checkpoint holds either `position` and `head` or `heads`, not both or neither"
                        .to_owned(),
                );
            }
        };
        let at = crate::ports::audit::parse_audit_time(&parsed.at).map_err(|e| e.to_string())?;
        let bytes = BASE64URL
            .decode(parsed.signature.as_bytes())
            .map_err(|_| "signature is not unpadded base64url".to_owned())?;
        if parsed.key_id.is_empty() || parsed.key_id.chars().any(char::is_control) {
            return Err("key_id is empty or holds a control character".to_owned());
        }
        Ok(Self {
            checkpoint: Checkpoint {
                writer: parsed.writer,
                previous: parsed.previous,
                heads,
                at,
            },
            signature: Signature {
                algorithm: parsed.algorithm,
                key_id: parsed.key_id,
                bytes,
            },
        })
    }
}

/// A stored `heads` list: 2 to [`MAX_HEADS_PER_CHECKPOINT`] heads, each past the one
/// before it (the first past `previous`). One head is written as `position` and `head`.
fn read_heads(previous: u64, heads: Vec<(u64, EntryHash)>) -> Result<Vec<BatchHead>, String> {
    if heads.len() < 2 || heads.len() > MAX_HEADS_PER_CHECKPOINT {
        return Err(format!(
            "`heads` holds {} heads; a checkpoint line's list holds 2 to {MAX_HEADS_PER_CHECKPOINT}",
            heads.len()
        ));
    }
    let mut before = previous;
    let mut read = Vec::with_capacity(heads.len());
    for (position, head) in heads {
        if position <= before {
            return Err(format!(
                "`heads` names position {position} after {before}: positions must increase"
            ));
        }
        before = position;
        read.push(BatchHead { position, head });
    }
    Ok(read)
}

fn category(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Data => "a field is missing or of the wrong kind",
        serde_json::error::Category::Eof => "truncated",
        serde_json::error::Category::Io => "unreadable",
    }
}

/// One stored checkpoint as read back: decoded, or what is wrong with it. `location`
/// says where it is (file and line, blob and line), for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub location: String,
    pub content: Result<SignedCheckpoint, String>,
}

/// Where checkpoints are kept: append-only storage whose stored lines keyturn's own
/// identities cannot change or remove.
#[async_trait]
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    /// Appends one checkpoint after every one stored before it.
    async fn append(&self, checkpoint: &SignedCheckpoint) -> Result<(), PortError> {
        self.append_all(std::slice::from_ref(checkpoint)).await
    }

    /// Appends `checkpoints`, in order, after every one stored before them, in as few
    /// writes as the store allows (the local file alone: one `write` and one sync; the
    /// local store's table and file: one unsynced commit and one `write`; a blob: one
    /// append block), so a writer anchoring several batches at once pays one write for
    /// all of them. On an error some of them may be stored.
    async fn append_all(&self, checkpoints: &[SignedCheckpoint]) -> Result<(), PortError>;

    /// Every stored checkpoint, in the order stored, at most `page` (at least one) per
    /// [`CheckpointPages::next_page`]: a reader holds one page and what it needs to find
    /// its place, however many checkpoints are stored (one per write batch, for as long
    /// as the log grows). A store that has never been written to has no page.
    async fn pages(&self, page: usize) -> Result<Box<dyn CheckpointPages + '_>, PortError>;

    /// Every stored checkpoint at once, in the order stored: for tests and tools that
    /// look at a few. Verification and the evidence export read [`Self::pages`].
    async fn read_all(&self) -> Result<Vec<StoredCheckpoint>, PortError> {
        let mut pages = self.pages(CHECKPOINT_PAGE).await?;
        let mut all = Vec::new();
        loop {
            let page = pages.next_page().await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// Makes every checkpoint appended so far durable, for a store whose appends are
    /// not each made durable on their own (the local store: see
    /// `adapters::local::anchor::LocalCheckpoints`). The writer calls it when its log is
    /// flushed and when it stops. Stores whose appends are durable when they return
    /// (the blob, the plain local file) have nothing to do.
    async fn sync(&self) -> Result<(), PortError> {
        Ok(())
    }
}

/// Checkpoints read per page by verification and the evidence export: a few hundred
/// lines of about 600 bytes, so a page is well under a megabyte, and a store of
/// thousands of checkpoints is read in a few dozen requests.
pub const CHECKPOINT_PAGE: usize = 256;

/// A read of a store's checkpoints in the order stored, a page at a time
/// ([`CheckpointStore::pages`]).
#[async_trait]
pub trait CheckpointPages: Send {
    /// The next checkpoints, at most the page size the read was opened with; empty
    /// once every one is read (and from then on).
    async fn next_page(&mut self) -> Result<Vec<StoredCheckpoint>, PortError>;
}

/// Checkpoints already in memory, handed out a page at a time: for stores that keep
/// a few (test doubles).
#[derive(Debug)]
pub struct PagesOf {
    rest: std::vec::IntoIter<StoredCheckpoint>,
    page: usize,
}

impl PagesOf {
    pub fn new(checkpoints: Vec<StoredCheckpoint>, page: usize) -> Self {
        Self {
            rest: checkpoints.into_iter(),
            page: page.max(1),
        }
    }
}

#[async_trait]
impl CheckpointPages for PagesOf {
    async fn next_page(&mut self) -> Result<Vec<StoredCheckpoint>, PortError> {
        Ok(self.rest.by_ref().take(self.page).collect())
    }
}

/// The key checkpoints are signed with. It never leaves its home: callers get
/// signatures and the public key, never the private key.
#[async_trait]
pub trait CheckpointSigner: Send + Sync + fmt::Debug {
    async fn sign(&self, message: &[u8]) -> Result<Signature, PortError>;

    /// The public key that checks this signer's signatures.
    async fn public_key(&self) -> Result<PublicKey, PortError>;
}

/// Why a public key could not be read. The messages never quote the input: a key file
/// handed over by mistake may hold a private key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicKeyError {
    #[error("not a JSON Web Key ({problem})")]
    NotAJwk { problem: String },
    #[error(
        "unsupported key ({found}): checkpoints are checked with an EC P-256 key (Key Vault, ES256) or an Ed25519 key (local mode)"
    )]
    Unsupported { found: String },
    #[error("the key's `{field}` is not base64 or base64url of the right length")]
    MalformedCoordinate { field: &'static str },
    #[error(
        "the key holds a private part (`{field}`): a private key must never be handed around; give only the public key (`az keyvault key show` prints only the public part)"
    )]
    PrivateKey { field: &'static str },
    #[error("not a public key in PEM ({problem})")]
    NotAPem { problem: String },
    #[error("the JSON Web Key Set holds no key")]
    EmptySet,
}

/// Longest `kid` kept; a Key Vault key URL with its version is under 300 bytes.
const MAX_KID_LEN: usize = 1024;

/// JSON Web Key members that hold private or secret key material (RFC 7518 section 6):
/// EC and OKP `d`, RSA's primes and exponents, and a symmetric key's `k`.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Base64 as JSON Web Keys carry it (base64url, RFC 7515) and as `az keyvault key
/// show` prints it (standard base64 with padding): either alphabet, padding optional.
const BASE64URL_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);
const BASE64_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A public key that checks checkpoint signatures, read from and written as a JSON Web
/// Key (RFC 7517; Ed25519 as RFC 8037's `OKP`), the form `az keyvault key show` prints.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519([u8; 32]),
    /// An uncompressed P-256 point: `0x04 || x || y`.
    EcP256([u8; 65]),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Whether `signature` is this key's signature of `message` with `algorithm`.
    pub fn verifies(
        &self,
        algorithm: SignatureAlgorithm,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};
        match (self, algorithm) {
            (Self::Ed25519(key), SignatureAlgorithm::EdDSA) => {
                UnparsedPublicKey::new(&ED25519, key)
                    .verify(message, signature)
                    .is_ok()
            }
            (Self::EcP256(point), SignatureAlgorithm::ES256) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            _ => false,
        }
    }

    /// A short name for the key: `sha256:` and the first 16 hex digits of the SHA-256
    /// of its raw public bytes. The local key's checkpoints name it by this.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = match self {
            Self::Ed25519(key) => Sha256::digest(key),
            Self::EcP256(point) => Sha256::digest(point),
        };
        format!("sha256:{}", &hex::encode(digest)[..16])
    }

    /// The key as a JSON Web Key.
    pub fn to_jwk(&self) -> serde_json::Value {
        match self {
            Self::Ed25519(key) => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": BASE64URL.encode(key),
            }),
            Self::EcP256(point) => serde_json::json!({
                "kty": "EC", "crv": "P-256",
                "x": BASE64URL.encode(&point[1..33]),
                "y": BASE64URL.encode(&point[33..65]),
            }),
        }
    }

    /// Reads one JSON Web Key: bare, wrapped as Key Vault and `az keyvault key show`
    /// answer (`{"key": {...}, "attributes": ...}`), or a JSON Web Key Set holding one
    /// key. A key with a private member is refused (see [`PublicKeyError::PrivateKey`]).
    pub fn from_jwk(json: &str) -> Result<Self, PublicKeyError> {
        let mut keys = parse_json_keys(json)?;
        match keys.len() {
            1 => Ok(keys.remove(0).key),
            0 => Err(PublicKeyError::EmptySet),
            _ => Err(PublicKeyError::NotAJwk {
                problem: "a set of several keys where one is expected".to_owned(),
            }),
        }
    }

    /// Reads an SPKI public key (`-----BEGIN PUBLIC KEY-----`, what `az keyvault key
    /// download --encoding PEM` writes): EC P-256 or Ed25519.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, PublicKeyError> {
        use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
        use x509_parser::prelude::FromDer;
        use x509_parser::x509::SubjectPublicKeyInfo;
        let pem_error = |problem: &str| PublicKeyError::NotAPem {
            problem: problem.to_owned(),
        };
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|_| pem_error("the block is not a DER SubjectPublicKeyInfo"))?;
        if !rest.is_empty() {
            return Err(pem_error("bytes follow the SubjectPublicKeyInfo"));
        }
        let bits: &[u8] = &spki.subject_public_key.data;
        let algorithm = &spki.algorithm.algorithm;
        if *algorithm == OID_SIG_ED25519 {
            let key: [u8; 32] = bits
                .try_into()
                .map_err(|_| pem_error("an Ed25519 key is 32 bytes"))?;
            return Ok(Self::Ed25519(key));
        }
        if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if curve.as_ref() != Some(&OID_EC_P256) {
                return Err(PublicKeyError::Unsupported {
                    found: "an EC key on another curve than P-256".to_owned(),
                });
            }
            let point: [u8; 65] = bits
                .try_into()
                .ok()
                .filter(|p: &[u8; 65]| p[0] == 4)
                .ok_or_else(|| pem_error("the EC point is not an uncompressed P-256 point"))?;
            return Ok(Self::EcP256(point));
        }
        Err(PublicKeyError::Unsupported {
            found: format!("a key of algorithm {algorithm}"),
        })
    }
}

/// A public key and the key id it answers to (`kid`): a Key Vault key URL with its
/// version, a local key's fingerprint, or none (a bare key, a PEM file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedKey {
    pub kid: Option<String>,
    pub key: PublicKey,
}

impl NamedKey {
    /// The key as a JSON Web Key, with its `kid` when it has one.
    pub fn to_jwk(&self) -> serde_json::Value {
        let mut jwk = self.key.to_jwk();
        if let Some(kid) = &self.kid {
            jwk["kid"] = serde_json::Value::String(kid.clone());
        }
        jwk
    }

    /// Whether this key is the one a checkpoint's `key_id` names: its `kid` (Key Vault
    /// URLs compared as Key Vault compares names, ignoring case) or its fingerprint.
    pub fn answers_to(&self, key_id: &str) -> bool {
        if self.key.fingerprint() == key_id {
            return true;
        }
        self.kid
            .as_deref()
            .is_some_and(|kid| kid == key_id || same_key_url(kid, key_id))
    }
}

/// Whether two Key Vault key URLs name the same key version: vault host, key name and
/// version are case-insensitive in Key Vault.
fn same_key_url(a: &str, b: &str) -> bool {
    let normal = |text: &str| {
        url::Url::parse(text)
            .ok()
            .filter(|u| u.scheme() == "https")
            .map(|u| {
                (
                    u.host_str().unwrap_or_default().to_ascii_lowercase(),
                    u.port_or_known_default(),
                    u.path().trim_end_matches('/').to_ascii_lowercase(),
                )
            })
    };
    matches!((normal(a), normal(b)), (Some(x), Some(y)) if x == y)
}

/// Reads a public key file: one JSON Web Key (bare or as Key Vault wraps it), a JSON Web
/// Key Set (`{"keys": [...]}`), or SPKI PEM blocks (`-----BEGIN PUBLIC KEY-----`).
pub fn parse_public_keys(text: &str) -> Result<Vec<NamedKey>, PublicKeyError> {
    if text.trim_start().starts_with("-----BEGIN") {
        return parse_pem_keys(text);
    }
    let keys = parse_json_keys(text)?;
    if keys.is_empty() {
        return Err(PublicKeyError::EmptySet);
    }
    Ok(keys)
}

fn parse_pem_keys(text: &str) -> Result<Vec<NamedKey>, PublicKeyError> {
    use x509_parser::pem::Pem;
    let mut keys = Vec::new();
    for block in Pem::iter_from_buffer(text.as_bytes()) {
        let block = block.map_err(|_| PublicKeyError::NotAPem {
            problem: "a block is malformed or truncated".to_owned(),
        })?;
        match block.label.as_str() {
            "PUBLIC KEY" => keys.push(NamedKey {
                kid: None,
                key: PublicKey::from_spki_der(&block.contents)?,
            }),
            label if label.contains("PRIVATE") => {
                return Err(PublicKeyError::PrivateKey { field: "PEM" });
            }
            _ => {
                return Err(PublicKeyError::NotAPem {
                    problem: "a block is not a PUBLIC KEY".to_owned(),
                });
            }
        }
    }
    if keys.is_empty() {
        return Err(PublicKeyError::NotAPem {
            problem: "no complete PUBLIC KEY block".to_owned(),
        });
    }
    Ok(keys)
}

fn parse_json_keys(json: &str) -> Result<Vec<NamedKey>, PublicKeyError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| PublicKeyError::NotAJwk {
            problem: category(&e).to_owned(),
        })?;
    if let Some(set) = value.get("keys") {
        let members = set.as_array().ok_or_else(|| PublicKeyError::NotAJwk {
            problem: "`keys` is not a list".to_owned(),
        })?;
        return members.iter().map(named_key).collect();
    }
    let jwk = value.get("key").filter(|k| k.is_object()).unwrap_or(&value);
    Ok(vec![named_key(jwk)?])
}

/// One JSON Web Key. Members `az keyvault key show` prints as `null` count as absent.
fn named_key(jwk: &serde_json::Value) -> Result<NamedKey, PublicKeyError> {
    if !jwk.is_object() {
        return Err(PublicKeyError::NotAJwk {
            problem: "not a JSON object".to_owned(),
        });
    }
    let present = |field: &str| jwk.get(field).is_some_and(|v| !v.is_null());
    if let Some(field) = PRIVATE_MEMBERS.into_iter().find(|f| present(f)) {
        return Err(PublicKeyError::PrivateKey { field });
    }
    let text = |field: &'static str| jwk.get(field).and_then(serde_json::Value::as_str);
    let coordinate = |field: &'static str, len: usize| {
        text(field)
            .and_then(|v| {
                BASE64URL_ANY_PADDING
                    .decode(v)
                    .or_else(|_| BASE64_ANY_PADDING.decode(v))
                    .ok()
            })
            .filter(|bytes| bytes.len() == len)
            .ok_or(PublicKeyError::MalformedCoordinate { field })
    };
    let key = match (text("kty"), text("crv")) {
        (Some("OKP"), Some("Ed25519")) => {
            let x = coordinate("x", 32)?;
            let mut key = [0; 32];
            key.copy_from_slice(&x);
            PublicKey::Ed25519(key)
        }
        (Some("EC" | "EC-HSM"), Some("P-256")) => {
            let x = coordinate("x", 32)?;
            let y = coordinate("y", 32)?;
            let mut point = [0; 65];
            point[0] = 4;
            point[1..33].copy_from_slice(&x);
            point[33..].copy_from_slice(&y);
            PublicKey::EcP256(point)
        }
        (None, _) => {
            return Err(PublicKeyError::NotAJwk {
                problem: "no `kty`".to_owned(),
            });
        }
        (Some(kty), crv) => {
            return Err(PublicKeyError::Unsupported {
                found: describe_key_type(kty, crv),
            });
        }
    };
    let kid = match jwk.get("kid") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(kid))
            if !kid.is_empty()
                && kid.len() <= MAX_KID_LEN
                && !kid.chars().any(char::is_control) =>
        {
            Some(kid.clone())
        }
        Some(_) => {
            return Err(PublicKeyError::NotAJwk {
                problem: "`kid` is not a key id".to_owned(),
            });
        }
    };
    Ok(NamedKey { kid, key })
}

/// "an RSA key", "an EC key on curve P-384": the key type and curve named only when
/// they are ones JSON Web Keys define, so nothing else from the input is echoed.
fn describe_key_type(kty: &str, crv: Option<&str>) -> String {
    const TYPES: [&str; 7] = ["RSA", "RSA-HSM", "EC", "EC-HSM", "oct", "oct-HSM", "OKP"];
    const CURVES: [&str; 8] = [
        "P-256", "P-384", "P-521", "P-256K", "Ed25519", "Ed448", "X25519", "X448",
    ];
    let Some(kty) = TYPES.into_iter().find(|t| *t == kty) else {
        return "a key of an unknown type".to_owned();
    };
    let article = if kty.starts_with(['R', 'E', 'O', 'o']) {
        "an"
    } else {
        "a"
    };
    match crv.and_then(|c| CURVES.into_iter().find(|k| *k == c)) {
        Some(curve) => format!("{article} {kty} key on curve {curve}"),
        None if crv.is_some() => format!("{article} {kty} key on an unknown curve"),
        None => format!("{article} {kty} key"),
    }
}

/// What the keys a verification holds say about the key a checkpoint names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    /// The keys to check its signature with: the one its key id names, or keys that
    /// name none (a bare key or a PEM file may be any). Empty: no key at all.
    Candidates(Vec<PublicKey>),
    /// No key matches the id; `looked_in` says where they were looked for.
    Unknown { looked_in: String },
    /// The id names a key outside the one the log is signed with (`expected`): the
    /// checkpoint is forged, whatever its signature.
    Foreign { expected: String },
    /// The key the id names was not read, and `reason` says why and what to do (a cap
    /// on the versions one verification reads, a version its vault will not show): the
    /// checkpoint is neither verified nor forged.
    Unverifiable { reason: String },
}

/// The public keys a verification checks signatures with, found by the key id each
/// checkpoint names: given keys, or each version of a Key Vault key fetched on demand.
#[async_trait]
pub trait VerifyingKeys: Send + Sync + fmt::Debug {
    /// The keys for `key_id`. An error: the keys cannot be read (not: no key matches).
    async fn lookup(&self, key_id: &str) -> Result<KeyLookup, PortError>;

    /// The keys held before any lookup, for the report.
    fn held(&self) -> Vec<PublicKey>;
}

/// One key given alone stands for every checkpoint, as "the public key".
#[async_trait]
impl VerifyingKeys for PublicKey {
    async fn lookup(&self, _key_id: &str) -> Result<KeyLookup, PortError> {
        Ok(KeyLookup::Candidates(vec![self.clone()]))
    }

    fn held(&self) -> Vec<PublicKey> {
        vec![self.clone()]
    }
}

/// Keys given to a verification (files, the local key and its predecessors): the key a
/// checkpoint's id names, else every key that names none.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<NamedKey>,
}

impl KeyRing {
    pub fn new(keys: Vec<NamedKey>) -> Self {
        let mut ring = Self::default();
        for key in keys {
            ring.add(key);
        }
        ring
    }

    /// Adds a key; the same key twice is kept once (with a `kid` if either had one).
    pub fn add(&mut self, key: NamedKey) {
        match self.keys.iter_mut().find(|k| k.key == key.key) {
            Some(existing) if existing.kid.is_none() => existing.kid = key.kid,
            Some(_) => {}
            None => self.keys.push(key),
        }
    }

    pub fn keys(&self) -> &[NamedKey] {
        &self.keys
    }
}

#[async_trait]
impl VerifyingKeys for KeyRing {
    async fn lookup(&self, key_id: &str) -> Result<KeyLookup, PortError> {
        let named: Vec<PublicKey> = self
            .keys
            .iter()
            .filter(|k| k.answers_to(key_id))
            .map(|k| k.key.clone())
            .collect();
        if !named.is_empty() {
            return Ok(KeyLookup::Candidates(named));
        }
        let unnamed: Vec<PublicKey> = self
            .keys
            .iter()
            .filter(|k| k.kid.is_none())
            .map(|k| k.key.clone())
            .collect();
        if unnamed.is_empty() {
            return Ok(KeyLookup::Unknown {
                looked_in: format!("the {} given public key(s)", self.keys.len()),
            });
        }
        Ok(KeyLookup::Candidates(unnamed))
    }

    fn held(&self) -> Vec<PublicKey> {
        self.keys.iter().map(|k| k.key.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
            .single()
            .expect("valid")
    }

    fn signature() -> Signature {
        Signature {
            algorithm: SignatureAlgorithm::EdDSA,
            key_id: "sha256:0011223344556677".to_owned(),
            bytes: vec![1, 2, 3],
        }
    }

    fn checkpoint() -> SignedCheckpoint {
        SignedCheckpoint {
            checkpoint: Checkpoint::of_one(
                ChainId::parse("w-1").expect("valid"),
                7,
                3,
                EntryHash::from_bytes([0xab; 32]),
                at(),
            ),
            signature: signature(),
        }
    }

    /// A checkpoint of the heads at `positions`, each hash the position's low byte
    /// repeated.
    fn group(previous: u64, positions: &[u64]) -> SignedCheckpoint {
        SignedCheckpoint {
            checkpoint: Checkpoint {
                writer: ChainId::parse("w-1").expect("valid"),
                previous,
                heads: positions
                    .iter()
                    .map(|&position| BatchHead {
                        position,
                        head: EntryHash::from_bytes([position as u8; 32]),
                    })
                    .collect(),
                at: at(),
            },
            signature: signature(),
        }
    }

    #[test]
    fn a_checkpoint_line_round_trips() {
        let signed = checkpoint();
        let line = signed.to_line();
        assert!(!line.contains('\n'));
        assert_eq!(SignedCheckpoint::from_line(&line), Ok(signed));
    }

    #[test]
    fn a_checkpoint_of_one_head_is_written_as_the_first_version_wrote_it() {
        let line = checkpoint().to_line();
        assert_eq!(
            line,
            format!(
                "{{\"writer\":\"w-1\",\"position\":7,\"previous\":3,\"head\":\"{}\",\"at\":\"2025-03-01T12:00:00.000000000Z\",\"algorithm\":\"EdDSA\",\"key_id\":\"sha256:0011223344556677\",\"signature\":\"AQID\"}}",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn a_checkpoint_of_several_heads_round_trips_and_links_each_to_the_one_before() {
        let signed = group(3, &[5, 9, 12]);
        let line = signed.to_line();
        assert!(
            line.contains(&format!("\"heads\":[[5,\"{}\"],", "05".repeat(32))),
            "{line}"
        );
        assert!(!line.contains("\"position\""), "{line}");
        let read = SignedCheckpoint::from_line(&line).expect("reads back");
        assert_eq!(read, signed);
        assert_eq!(read.checkpoint.position(), 12);
        let links: Vec<(u64, u64)> = read
            .checkpoint
            .links()
            .map(|(before, head)| (before, head.position))
            .collect();
        assert_eq!(links, vec![(3, 5), (5, 9), (9, 12)]);
    }

    #[test]
    fn a_heads_list_that_no_writer_writes_is_refused() {
        let longest: Vec<u64> = (1..=MAX_HEADS_PER_CHECKPOINT as u64 + 1).collect();
        let both = checkpoint().to_line().replace(
            "\"at\"",
            &format!(
                "\"heads\":[[8,\"{}\"],[9,\"{}\"]],\"at\"",
                "00".repeat(32),
                "00".repeat(32)
            ),
        );
        let one = group(3, &[5, 6])
            .to_line()
            .replace(&format!(",[6,\"{}\"]", "06".repeat(32)), "");
        let cases = [
            (one, "holds 1 heads"),
            (group(3, &[5, 5]).to_line(), "positions must increase"),
            (group(3, &[9, 5]).to_line(), "positions must increase"),
            (group(5, &[5, 6]).to_line(), "positions must increase"),
            (group(0, &longest).to_line(), "holds 65 heads"),
            (both, "not both or neither"),
        ];
        for (line, expected) in cases {
            let error = SignedCheckpoint::from_line(&line).expect_err("refused");
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_bad_line_says_what_is_wrong_without_echoing_it() {
        let line = checkpoint().to_line();
        let cases = [
            (&line[..line.len() / 2], "truncated"),
            ("{\"secret\":\"hunter2\"}", "field"),
            ("hunter2", "malformed JSON"),
        ];
        for (input, expected) in cases {
            let error = SignedCheckpoint::from_line(input).expect_err("refused");
            assert!(error.contains(expected), "{input}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn the_signed_bytes_of_several_heads_follow_the_documented_encoding() {
        let signed = group(3, &[5, 9]);
        let mut expected = b"keyturn-checkpoint-v2".to_vec();
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(b"w-1");
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(&5u64.to_be_bytes());
        expected.extend_from_slice(&[5; 32]);
        expected.extend_from_slice(&9u64.to_be_bytes());
        expected.extend_from_slice(&[9; 32]);
        let time = "2025-03-01T12:00:00.000000000Z";
        expected.extend_from_slice(&(time.len() as u64).to_be_bytes());
        expected.extend_from_slice(time.as_bytes());
        assert_eq!(signed.checkpoint.signed_bytes(), expected);
    }

    #[test]
    fn the_signed_bytes_follow_the_documented_encoding() {
        let signed = checkpoint();
        let mut expected = b"keyturn-checkpoint-v1".to_vec();
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(b"w-1");
        expected.extend_from_slice(&7u64.to_be_bytes());
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&[0xab; 32]);
        let time = "2025-03-01T12:00:00.000000000Z";
        expected.extend_from_slice(&(time.len() as u64).to_be_bytes());
        expected.extend_from_slice(time.as_bytes());
        assert_eq!(signed.checkpoint.signed_bytes(), expected);
    }

    #[test]
    fn public_keys_read_as_jwk_and_refuse_what_they_cannot_check() {
        let ed = PublicKey::Ed25519([7; 32]);
        assert_eq!(PublicKey::from_jwk(&ed.to_jwk().to_string()), Ok(ed));
        let mut point = [9; 65];
        point[0] = 4;
        let ec = PublicKey::EcP256(point);
        let wrapped = serde_json::json!({ "key": ec.to_jwk() }).to_string();
        assert_eq!(PublicKey::from_jwk(&wrapped), Ok(ec));
        assert_eq!(
            PublicKey::from_jwk(r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#),
            Err(PublicKeyError::Unsupported {
                found: "an RSA key".to_owned()
            })
        );
        assert!(matches!(
            PublicKey::from_jwk("not json"),
            Err(PublicKeyError::NotAJwk { .. })
        ));
        assert_eq!(
            PublicKey::from_jwk(r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA"}"#),
            Err(PublicKeyError::MalformedCoordinate { field: "x" })
        );
    }

    /// A fixture under `tests/fixtures/keyvault-rest/` (see its PROVENANCE.md).
    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/keyvault-rest/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("fixture {path} is readable: {error}"))
    }

    const SHOW: &str = "DERIVED.az-keyvault-key-show.ec-p256.json";
    const DOWNLOAD: &str = "DERIVED.az-keyvault-key-download.ec-p256.pem";
    const SHOWN_KID: &str =
        "https://myvault.vault.azure.net/keys/audit-checkpoints/78deebed173b48e48f55abf87ed4cf71";

    #[test]
    fn what_az_prints_and_downloads_reads_as_one_key() {
        let shown = fixture(SHOW);
        let member =
            serde_json::from_str::<serde_json::Value>(&shown).expect("JSON")["key"].to_string();

        let whole = parse_public_keys(&shown).expect("az keyvault key show");
        let queried = parse_public_keys(&member).expect("az keyvault key show --query key");
        let pem = parse_public_keys(&fixture(DOWNLOAD)).expect("az keyvault key download");

        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].kid.as_deref(), Some(SHOWN_KID));
        assert!(matches!(whole[0].key, PublicKey::EcP256(_)));
        assert_eq!(queried, whole);
        assert_eq!(pem.len(), 1);
        assert_eq!(pem[0].kid, None, "a PEM file names no key");
        assert_eq!(
            pem[0].key, whole[0].key,
            "the same point, whichever way it came"
        );
        assert_eq!(PublicKey::from_jwk(&shown), Ok(whole[0].key.clone()));
    }

    #[test]
    fn the_rest_reference_get_key_answer_is_refused_for_its_rsa_key() {
        let example: serde_json::Value =
            serde_json::from_str(&fixture("keyvault-7.5-GetKey-example.json")).expect("JSON");
        let body = example["responses"]["200"]["body"].to_string();

        let error = PublicKey::from_jwk(&body).expect_err("an RSA key checks no checkpoint");

        assert_eq!(
            error,
            PublicKeyError::Unsupported {
                found: "an RSA key".to_owned()
            }
        );
        assert!(error.to_string().contains("EC P-256"), "{error}");
    }

    #[test]
    fn a_key_file_that_cannot_be_used_says_why_without_quoting_it() {
        let shown = fixture(SHOW);
        let mut value: serde_json::Value = serde_json::from_str(&shown).expect("JSON");
        value["key"]["d"] = "c2VjcmV0LXByaXZhdGUtc2NhbGFy".into();
        let with_private = value.to_string();
        value["key"]["d"] = serde_json::Value::Null;
        value["key"]["crv"] = "P-384".into();
        let other_curve = value.to_string();
        // Only the label matters: the block is refused before its content is looked at.
        let private_pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode([0u8; 48])
        );
        let mut numeric_kid = PublicKey::EcP256([4; 65]).to_jwk();
        numeric_kid["kid"] = 7.into();
        let numeric_kid = numeric_kid.to_string();
        let download = fixture(DOWNLOAD);
        let cut_pem = &download[..download.len() - 30];

        let cases: [(&str, &str); 8] = [
            (&with_private, "a private key must never be handed around"),
            (&other_curve, "an EC-HSM key on curve P-384"),
            (&shown[..shown.len() / 2], "truncated"),
            (&private_pem, "a private key must never be handed around"),
            (cut_pem, "not a public key in PEM"),
            (r#"{"keys": []}"#, "holds no key"),
            (&numeric_kid, "`kid` is not a key id"),
            (
                r#"{"kty":"oct","k":"c2VjcmV0LXN5bW1ldHJpYy1rZXk"}"#,
                "private part (`k`)",
            ),
        ];
        for (input, expected) in cases {
            let error = parse_public_keys(input).expect_err("refused").to_string();
            assert!(error.contains(expected), "{error}");
            assert!(
                !error.contains("c2VjcmV0"),
                "no key material quoted: {error}"
            );
        }
    }

    #[tokio::test]
    async fn a_key_ring_finds_each_checkpoint_s_key_by_its_id() {
        let ed = |byte| PublicKey::Ed25519([byte; 32]);
        let named = |kid: &str, byte| NamedKey {
            kid: Some(kid.to_owned()),
            key: ed(byte),
        };
        let v1 = "https://kv.vault.azure.net/keys/audit/0123456789abcdef0123456789abcdef";
        let v2 = "https://kv.vault.azure.net/keys/audit/fedcba9876543210fedcba9876543210";
        let ring = KeyRing::new(vec![named(v1, 1), named(v2, 2)]);
        let with_bare = KeyRing::new(vec![
            named(v1, 1),
            NamedKey {
                kid: None,
                key: ed(3),
            },
        ]);

        assert_eq!(
            ring.lookup(v2).await,
            Ok(KeyLookup::Candidates(vec![ed(2)]))
        );
        assert_eq!(
            ring.lookup(&v1.to_ascii_uppercase().replace("HTTPS", "https"))
                .await,
            Ok(KeyLookup::Candidates(vec![ed(1)])),
            "Key Vault names ignore case"
        );
        assert_eq!(
            ring.lookup(&ed(2).fingerprint()).await,
            Ok(KeyLookup::Candidates(vec![ed(2)])),
            "a local key answers to its fingerprint"
        );
        assert!(matches!(
            ring.lookup("https://kv.vault.azure.net/keys/audit/00000000000000000000000000000000")
                .await,
            Ok(KeyLookup::Unknown { .. })
        ));
        assert_eq!(
            with_bare.lookup(v2).await,
            Ok(KeyLookup::Candidates(vec![ed(3)])),
            "a key that names none may be any"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_read_or_refused_without_a_panic(text in ".{0,400}") {
            let _ = parse_public_keys(&text);
            let _ = parse_public_keys(&format!("-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----\n"));
        }

        #[test]
        fn az_output_cut_anywhere_is_refused(cut in 0usize..1000) {
            let shown = fixture(SHOW);
            let trimmed = shown.trim_end();
            let at = cut % trimmed.len();
            proptest::prop_assert!(parse_public_keys(&trimmed[..at]).is_err());
        }

        #[test]
        fn a_key_with_any_private_member_is_refused_whatever_else_it_holds(
            member in proptest::sample::select(PRIVATE_MEMBERS.to_vec()),
            value in "[A-Za-z0-9_-]{1,64}",
            kty in proptest::sample::select(vec!["EC", "EC-HSM", "OKP", "RSA", "oct"]),
        ) {
            let mut jwk = PublicKey::EcP256([4; 65]).to_jwk();
            jwk["kty"] = kty.into();
            jwk[member] = value.clone().into();
            let error = parse_public_keys(&jwk.to_string()).expect_err("refused");
            proptest::prop_assert!(matches!(error, PublicKeyError::PrivateKey { .. }), "{}", error);
            proptest::prop_assert!(!error.to_string().contains(&value) || value.len() < 8, "{}", error);
        }

        #[test]
        fn a_key_written_reads_back_the_same(bytes in proptest::array::uniform32(proptest::num::u8::ANY), kid in proptest::option::of("[a-z0-9:/._-]{1,80}")) {
            let named = NamedKey { kid, key: PublicKey::Ed25519(bytes) };
            let read = parse_public_keys(&named.to_jwk().to_string()).expect("read back");
            proptest::prop_assert_eq!(read, vec![named]);
        }
    }
}
