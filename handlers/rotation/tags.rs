//! keyturn's tags on Key Vault objects: which objects are managed, how (the rotation
//! policy), and the bookkeeping keyturn writes on every version it creates.
//!
//! Reading is tolerant of tag-name casing (Key Vault keeps whatever casing a person typed)
//! and strict about values: a malformed value is a [`TagError`] naming the tag, never a
//! silent skip. An object without `keyturn-kind` (or, for certificates, without any
//! `keyturn-` policy tag) is simply not managed.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration as Span, SecondsFormat, Utc};

use crate::domain::ids::{AppId, KeyId};
use crate::domain::limits::{MAX_TAG_VALUE_LEN, MAX_TAGS};
use crate::domain::names::{ObjectType, ObjectVersion};

/// What keyturn does with the object: `entra-app-secret`, `generated` or `certificate`.
pub const KIND: &str = "keyturn-kind";
/// The application (client) id whose password credential the secret holds.
pub const APP_ID: &str = "keyturn-app-id";
pub const VALIDITY_DAYS: &str = "keyturn-validity-days";
pub const ROTATE_BEFORE_DAYS: &str = "keyturn-rotate-before-days";
pub(crate) const OVERLAP_DAYS: &str = "keyturn-overlap-days";
/// `generated` only: characters in the value.
pub const LENGTH: &str = "keyturn-length";
/// `generated` only: one of [`Alphabet`]'s names.
pub const ALPHABET: &str = "keyturn-alphabet";

/// `entra-app-secret` only: how many times in a row the token endpoint must accept a new
/// credential before it is promoted.
pub const PROOF_SUCCESSES: &str = "keyturn-proof-successes";
/// `entra-app-secret` only: the least time, in seconds, those acceptances must span.
pub const PROOF_WINDOW_SECONDS: &str = "keyturn-proof-window-seconds";
/// `entra-app-secret` only: minutes after `addPassword` at which an unproven credential
/// is given up.
pub const PROOF_DEADLINE_MINUTES: &str = "keyturn-proof-deadline-minutes";

/// Bookkeeping: the keyId of the password credential this version holds.
pub const KEY_ID: &str = "keyturn-key-id";
/// Bookkeeping: the keyId the previous version held (retired after the overlap).
pub(crate) const PREVIOUS_KEY_ID: &str = "keyturn-previous-key-id";
/// Bookkeeping: the version this one replaced.
pub(crate) const PREVIOUS_VERSION: &str = "keyturn-previous-version";
/// Bookkeeping: the job that wrote this version.
pub const JOB_ID: &str = "keyturn-job-id";
/// Bookkeeping: when keyturn wrote this version (RFC 3339, UTC).
pub const ROTATED_AT: &str = "keyturn-rotated-at";
/// Bookkeeping: why the last rotation attempt failed permanently; cleared by the next
/// successful rotation (the new version does not carry it).
pub const LAST_ERROR: &str = "keyturn-last-error";

/// Microsoft's rotation samples (Key Vault rotation tutorials) tag secrets with these.
pub(crate) const MS_VALIDITY_PERIOD_DAYS: &str = "ValidityPeriodDays";
pub(crate) const MS_PROVIDER_ADDRESS: &str = "ProviderAddress";
#[cfg(test)]
pub(crate) const MS_CREDENTIAL_ID: &str = "CredentialId";

/// Pending copy: the managed secret (its name) a pending credential belongs to.
pub(crate) const PENDING_FOR: &str = "keyturn-pending-for";
/// Pending copy: when the unproven credential is given up (RFC 3339, UTC).
pub(crate) const PROOF_DEADLINE: &str = "keyturn-proof-deadline";
/// Pending copy: acceptances in a row so far.
pub(crate) const PROOF_STREAK: &str = "keyturn-proof-streak";
/// Pending copy: when the current run of acceptances began (RFC 3339, UTC).
pub(crate) const PROOF_SINCE: &str = "keyturn-proof-since";
/// Pending copy: the last proof attempt scheduled.
pub(crate) const PROOF_ATTEMPT: &str = "keyturn-proof-attempt";

/// The bookkeeping tags, which a new version never inherits from its predecessor.
pub(crate) const BOOKKEEPING: [&str; 6] = [
    KEY_ID,
    PREVIOUS_KEY_ID,
    PREVIOUS_VERSION,
    JOB_ID,
    ROTATED_AT,
    LAST_ERROR,
];

/// Acceptances in a row: at least one, at most 100 (one a minute for over an hour and a
/// half; more proves nothing more).
pub const MAX_PROOF_SUCCESSES: u32 = 100;
/// The proof window may not exceed the largest deadline.
pub const MAX_PROOF_WINDOW_SECONDS: u32 = 24 * 60 * 60;
/// A pending credential is given up at the latest a day after it was added: Entra's
/// observed propagation is minutes, and a credential unproven for a day is broken.
pub const MAX_PROOF_DEADLINE_MINUTES: u32 = 24 * 60;

/// How a new `entra-app-secret` credential is proven before it becomes the managed
/// secret's value: the token endpoint must accept it `successes` times in a row across at
/// least `window_seconds`, within `deadline_minutes` of its addition. Entra propagates a
/// new secret over minutes and intermittently (accepted, refused by another replica,
/// accepted), so one acceptance proves little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofPolicy {
    pub successes: u32,
    pub window_seconds: u32,
    pub deadline_minutes: u32,
}

impl Default for ProofPolicy {
    /// Three acceptances across a minute, within an hour.
    fn default() -> Self {
        Self {
            successes: 3,
            window_seconds: 60,
            deadline_minutes: 60,
        }
    }
}

impl ProofPolicy {
    /// Checks the values the way the tags are checked, naming the tag each stands for.
    pub fn new(
        successes: u32,
        window_seconds: u32,
        deadline_minutes: u32,
    ) -> Result<Self, TagError> {
        let policy = Self {
            successes: bounded(
                PROOF_SUCCESSES,
                &successes.to_string(),
                1,
                MAX_PROOF_SUCCESSES,
            )?,
            window_seconds: bounded(
                PROOF_WINDOW_SECONDS,
                &window_seconds.to_string(),
                0,
                MAX_PROOF_WINDOW_SECONDS,
            )?,
            deadline_minutes: bounded(
                PROOF_DEADLINE_MINUTES,
                &deadline_minutes.to_string(),
                1,
                MAX_PROOF_DEADLINE_MINUTES,
            )?,
        };
        policy.check()
    }

    fn check(self) -> Result<Self, TagError> {
        if u64::from(self.window_seconds) >= u64::from(self.deadline_minutes) * 60 {
            return Err(TagError::ProofWindowNotBelowDeadline {
                window_seconds: self.window_seconds,
                deadline_minutes: self.deadline_minutes,
            });
        }
        Ok(self)
    }

    pub(crate) fn window(self) -> Span {
        Span::seconds(i64::from(self.window_seconds))
    }

    pub(crate) fn deadline(self) -> Span {
        Span::minutes(i64::from(self.deadline_minutes))
    }
}

/// A whole number from `min` to `max` in tag `tag`.
fn bounded(tag: &'static str, text: &str, min: u32, max: u32) -> Result<u32, TagError> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| TagError::Bounded {
            tag,
            found: quoted(text),
            min,
            max,
        })
}

/// Policies are measured in whole days from 1 to ten years: beyond that a rotation policy
/// means nothing, and the bound keeps date arithmetic far inside chrono's range.
pub const MAX_POLICY_DAYS: u32 = 3650;

/// A generated value carries at least this many bits of entropy whatever its alphabet
/// (NIST SP 800-63B and OWASP ask for 128 bits of a random secret); a `keyturn-length`
/// that would give less is refused with the minimum for that alphabet
/// ([`Alphabet::min_length`]).
pub(crate) const MIN_GENERATED_BITS: u32 = 128;
/// 1024 characters is far beyond any password field and far below Key Vault's 25 KB
/// secret size limit.
pub(crate) const MAX_GENERATED_LENGTH: usize = 1024;
/// 32 alphanumeric characters carry about 190 bits.
pub(crate) const DEFAULT_GENERATED_LENGTH: usize = 32;

/// Why an object's tags cannot be read as a policy. Each message names the tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    #[error("tag `{tag}` appears twice with different casing")]
    Duplicate { tag: String },
    #[error("tag `{KIND}` is `{found}`; expected entra-app-secret, generated or certificate")]
    UnknownKind { found: String },
    #[error(
        "tag `{KIND}` is `certificate` but the object is a {object_type}; certificates are rotated as certificate objects"
    )]
    KindMismatch { object_type: ObjectType },
    #[error("tag `{tag}` is required for kind {kind}")]
    Missing {
        tag: &'static str,
        kind: &'static str,
    },
    #[error("tag `{tag}` is not an application id (a GUID)")]
    AppId { tag: &'static str },
    #[error(
        "tag `{tag}` is `{found}`; expected a whole number of days from {min} to {MAX_POLICY_DAYS}"
    )]
    Days {
        tag: &'static str,
        found: String,
        min: u32,
    },
    #[error(
        "tag `{ROTATE_BEFORE_DAYS}` ({rotate_before}) must be less than `{VALIDITY_DAYS}` ({validity}), or every new version would be due at once"
    )]
    RotateBeforeNotBelowValidity { rotate_before: u32, validity: u32 },
    #[error("tag `{tag}` is `{found}`; expected a whole number from {min} to {max}")]
    Bounded {
        tag: &'static str,
        found: String,
        min: u32,
        max: u32,
    },
    #[error(
        "tag `{PROOF_WINDOW_SECONDS}` ({window_seconds}) must be shorter than `{PROOF_DEADLINE_MINUTES}` ({deadline_minutes} minutes), or no proof could ever finish"
    )]
    ProofWindowNotBelowDeadline {
        window_seconds: u32,
        deadline_minutes: u32,
    },
    #[error(
        "tag `{OVERLAP_DAYS}` ({overlap}) is longer than the rotation cadence ({VALIDITY_DAYS} {validity} minus {ROTATE_BEFORE_DAYS} {rotate_before}): a credential would be retired while its successor's successor still needs the overlap"
    )]
    OverlapLongerThanCadence {
        overlap: u32,
        validity: u32,
        rotate_before: u32,
    },
    #[error(
        "tag `{LENGTH}` is `{found}`; expected a whole number from {min} to {MAX_GENERATED_LENGTH}: {alphabet} values need {min} characters for {MIN_GENERATED_BITS} bits of entropy"
    )]
    Length {
        found: String,
        alphabet: &'static str,
        min: usize,
    },
    #[error(
        "tag `{ALPHABET}` is `{found}`; expected alphanumeric, hex, base64url or ascii-printable"
    )]
    Alphabet { found: String },
    #[error(
        "the object carries {count} tags besides keyturn's bookkeeping; Key Vault allows {MAX_TAGS} in all and keyturn needs {needed} for bookkeeping"
    )]
    TooManyTags { count: usize, needed: usize },
}

/// Values shown in a [`TagError`] are cut to this many characters: enough to recognise a
/// typo, short enough that a pasted secret in the wrong tag is not reproduced whole.
const MAX_QUOTED_CHARS: usize = 40;

fn quoted(text: &str) -> String {
    text.chars()
        .take(MAX_QUOTED_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A whole number of days within [`MAX_POLICY_DAYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Days(u32);

impl Days {
    /// `min` is 1 for validity and rotate-before, 0 for the overlap (retire at once).
    pub(crate) fn parse(tag: &'static str, text: &str, min: u32) -> Result<Self, TagError> {
        let error = || TagError::Days {
            tag,
            found: quoted(text),
            min,
        };
        let days: u32 = text.trim().parse().map_err(|_| error())?;
        if (min..=MAX_POLICY_DAYS).contains(&days) {
            Ok(Self(days))
        } else {
            Err(error())
        }
    }

    pub(crate) fn get(self) -> u32 {
        self.0
    }

    pub(crate) fn span(self) -> Span {
        Span::days(i64::from(self.0))
    }
}

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The policy values used when an object's tags leave them out (from settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyDefaults {
    pub validity: Days,
    pub rotate_before: Days,
    pub overlap: Days,
    pub proof: ProofPolicy,
}

impl PolicyDefaults {
    /// Checks the defaults the way an object's tags are checked, naming the tags they
    /// stand for.
    pub fn new(validity: u32, rotate_before: u32, overlap: u32) -> Result<Self, TagError> {
        let validity = Days::parse(VALIDITY_DAYS, &validity.to_string(), 1)?;
        let rotate_before = Days::parse(ROTATE_BEFORE_DAYS, &rotate_before.to_string(), 1)?;
        let overlap = Days::parse(OVERLAP_DAYS, &overlap.to_string(), 0)?;
        if rotate_before >= validity {
            return Err(TagError::RotateBeforeNotBelowValidity {
                rotate_before: rotate_before.get(),
                validity: validity.get(),
            });
        }
        // Settings are refused outright (an operator reads the error at start-up); an
        // object's tags are capped with a warning instead (see `policy`).
        if overlap.get() > validity.get() - rotate_before.get() {
            return Err(TagError::OverlapLongerThanCadence {
                overlap: overlap.get(),
                validity: validity.get(),
                rotate_before: rotate_before.get(),
            });
        }
        Ok(Self {
            validity,
            rotate_before,
            overlap,
            proof: ProofPolicy::default(),
        })
    }

    /// The same defaults with another proof policy (from settings).
    pub fn with_proof(mut self, proof: ProofPolicy) -> Self {
        self.proof = proof;
        self
    }
}

/// Characters a generated value is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `A-Z a-z 0-9`: safe in connection strings, URLs and shells.
    Alphanumeric,
    /// `0-9 a-f`.
    Hex,
    /// `A-Z a-z 0-9 - _` (RFC 4648 section 5).
    Base64Url,
    /// Every printable ASCII character except space (0x21 to 0x7e).
    AsciiPrintable,
}

impl Alphabet {
    pub(crate) fn parse(text: &str) -> Result<Self, TagError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "alphanumeric" => Ok(Self::Alphanumeric),
            "hex" => Ok(Self::Hex),
            "base64url" => Ok(Self::Base64Url),
            "ascii-printable" => Ok(Self::AsciiPrintable),
            _ => Err(TagError::Alphabet {
                found: quoted(text),
            }),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Alphanumeric => "alphanumeric",
            Self::Hex => "hex",
            Self::Base64Url => "base64url",
            Self::AsciiPrintable => "ascii-printable",
        }
    }

    /// The fewest characters that carry [`MIN_GENERATED_BITS`] bits: the smallest `n`
    /// with `size^n >= 2^MIN_GENERATED_BITS` (22 alphanumeric, 32 hex, 22 base64url, 20
    /// ascii-printable).
    pub(crate) fn min_length(self) -> usize {
        let size = self.characters().len() as f64;
        let bits_per_character = size.log2();
        (f64::from(MIN_GENERATED_BITS) / bits_per_character).ceil() as usize
    }

    /// The characters, each one byte of ASCII.
    pub(crate) fn characters(self) -> Vec<u8> {
        let ranges: &[(u8, u8)] = match self {
            Self::Alphanumeric => &[(b'A', b'Z'), (b'a', b'z'), (b'0', b'9')],
            Self::Hex => &[(b'0', b'9'), (b'a', b'f')],
            Self::Base64Url => &[
                (b'A', b'Z'),
                (b'a', b'z'),
                (b'0', b'9'),
                (b'-', b'-'),
                (b'_', b'_'),
            ],
            Self::AsciiPrintable => &[(0x21, 0x7e)],
        };
        ranges.iter().flat_map(|&(lo, hi)| lo..=hi).collect()
    }
}

/// How the object is rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A password credential of an Entra application, rotated through Graph.
    EntraAppSecret { app_id: AppId },
    /// A random value keyturn generates itself.
    Generated { length: usize, alphabet: Alphabet },
    /// A Key Vault certificate, renewed by Key Vault from its policy.
    Certificate,
}

impl Kind {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::EntraAppSecret { .. } => "entra-app-secret",
            Self::Generated { .. } => "generated",
            Self::Certificate => "certificate",
        }
    }
}

/// What keyturn does with a managed object and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    pub kind: Kind,
    /// How long a new credential or value is valid.
    pub validity: Days,
    /// Rotate once expiry is this close.
    pub rotate_before: Days,
    /// How long the previous credential keeps working after a rotation. Never longer than
    /// the cadence (validity minus rotate-before).
    pub overlap: Days,
    /// How a new credential is proven (`entra-app-secret`).
    pub proof: ProofPolicy,
}

/// What keyturn recorded on a version it wrote. Absent on versions a person wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bookkeeping {
    pub key_id: Option<KeyId>,
    pub previous_key_id: Option<KeyId>,
    pub previous_version: Option<ObjectVersion>,
    pub job_id: Option<String>,
    pub rotated_at: Option<DateTime<Utc>>,
}

impl Bookkeeping {
    /// Reads keyturn's bookkeeping tags. Unreadable values are treated as absent: they are
    /// keyturn's own notes, and a damaged note must not stop a rotation (it only makes
    /// keyturn more conservative: a credential it cannot prove it created is never removed).
    pub fn read(tags: &BTreeMap<String, String>) -> Self {
        let text = |name: &str| lookup(tags, name).ok().flatten().map(str::trim);
        Self {
            key_id: text(KEY_ID).and_then(|v| KeyId::parse(v).ok()),
            previous_key_id: text(PREVIOUS_KEY_ID).and_then(|v| KeyId::parse(v).ok()),
            previous_version: text(PREVIOUS_VERSION).and_then(|v| ObjectVersion::parse(v).ok()),
            job_id: text(JOB_ID).filter(|v| !v.is_empty()).map(str::to_string),
            rotated_at: text(ROTATED_AT).and_then(|v| {
                DateTime::parse_from_rfc3339(v)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            }),
        }
    }

    /// Whether keyturn wrote the version carrying these tags.
    pub(crate) fn written_by_keyturn(&self) -> bool {
        self.rotated_at.is_some() && self.job_id.is_some()
    }
}

/// A managed object's policy and the bookkeeping on its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedObject {
    pub policy: RotationPolicy,
    pub bookkeeping: Bookkeeping,
}

/// Reads an object's tags. `Ok(None)`: keyturn does not manage it.
pub fn managed(
    object_type: ObjectType,
    tags: &BTreeMap<String, String>,
    defaults: &PolicyDefaults,
) -> Result<Option<ManagedObject>, TagError> {
    let Some(policy) = policy(object_type, tags, defaults)? else {
        return Ok(None);
    };
    Ok(Some(ManagedObject {
        policy,
        bookkeeping: Bookkeeping::read(tags),
    }))
}

/// Reads the rotation policy. `Ok(None)`: not managed.
pub fn policy(
    object_type: ObjectType,
    tags: &BTreeMap<String, String>,
    defaults: &PolicyDefaults,
) -> Result<Option<RotationPolicy>, TagError> {
    let kind_text = lookup(tags, KIND)?;
    let kind_name = match (object_type, kind_text) {
        (ObjectType::Key, _) => return Ok(None),
        (_, Some(text)) => text.trim().to_ascii_lowercase(),
        // A certificate is recognised by its type once it carries any keyturn policy tag.
        (ObjectType::Certificate, None) => {
            let has_policy = [VALIDITY_DAYS, ROTATE_BEFORE_DAYS, OVERLAP_DAYS]
                .iter()
                .map(|name| lookup(tags, name))
                .collect::<Result<Vec<_>, _>>()?
                .iter()
                .any(Option::is_some);
            if !has_policy {
                return Ok(None);
            }
            "certificate".to_string()
        }
        (ObjectType::Secret, None) => return Ok(None),
    };

    let kind = match kind_name.as_str() {
        "entra-app-secret" => {
            let app_id = match lookup(tags, APP_ID)? {
                Some(text) => AppId::parse(text).map_err(|_| TagError::AppId { tag: APP_ID })?,
                // Microsoft's samples name the credential's provider in ProviderAddress; for
                // an application that is its appId, and only a GUID maps cleanly.
                None => match lookup(tags, MS_PROVIDER_ADDRESS)? {
                    Some(text) => AppId::parse(text).map_err(|_| TagError::AppId {
                        tag: MS_PROVIDER_ADDRESS,
                    })?,
                    None => {
                        return Err(TagError::Missing {
                            tag: APP_ID,
                            kind: "entra-app-secret",
                        });
                    }
                },
            };
            Kind::EntraAppSecret { app_id }
        }
        "generated" => {
            let alphabet = match lookup(tags, ALPHABET)? {
                Some(text) => Alphabet::parse(text)?,
                None => Alphabet::Alphanumeric,
            };
            let min = alphabet.min_length();
            let length = match lookup(tags, LENGTH)? {
                Some(text) => text
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (min..=MAX_GENERATED_LENGTH).contains(n))
                    .ok_or_else(|| TagError::Length {
                        found: quoted(text),
                        alphabet: alphabet.name(),
                        min,
                    })?,
                None => DEFAULT_GENERATED_LENGTH.max(min),
            };
            Kind::Generated { length, alphabet }
        }
        "certificate" => Kind::Certificate,
        _ => {
            return Err(TagError::UnknownKind {
                found: quoted(&kind_name),
            });
        }
    };
    if matches!(kind, Kind::Certificate) != (object_type == ObjectType::Certificate) {
        return Err(match kind {
            Kind::Certificate => TagError::KindMismatch { object_type },
            _ => TagError::UnknownKind {
                found: format!("{} (on a certificate; use certificate)", kind.name()),
            },
        });
    }

    let validity = match lookup(tags, VALIDITY_DAYS)? {
        Some(text) => Days::parse(VALIDITY_DAYS, text, 1)?,
        None => match lookup(tags, MS_VALIDITY_PERIOD_DAYS)? {
            Some(text) => Days::parse(MS_VALIDITY_PERIOD_DAYS, text, 1)?,
            None => defaults.validity,
        },
    };
    let rotate_before = match lookup(tags, ROTATE_BEFORE_DAYS)? {
        Some(text) => Days::parse(ROTATE_BEFORE_DAYS, text, 1)?,
        None => defaults.rotate_before,
    };
    let overlap = match lookup(tags, OVERLAP_DAYS)? {
        Some(text) => Days::parse(OVERLAP_DAYS, text, 0)?,
        None => defaults.overlap,
    };
    let proof = ProofPolicy {
        successes: match lookup(tags, PROOF_SUCCESSES)? {
            Some(text) => bounded(PROOF_SUCCESSES, text, 1, MAX_PROOF_SUCCESSES)?,
            None => defaults.proof.successes,
        },
        window_seconds: match lookup(tags, PROOF_WINDOW_SECONDS)? {
            Some(text) => bounded(PROOF_WINDOW_SECONDS, text, 0, MAX_PROOF_WINDOW_SECONDS)?,
            None => defaults.proof.window_seconds,
        },
        deadline_minutes: match lookup(tags, PROOF_DEADLINE_MINUTES)? {
            Some(text) => bounded(PROOF_DEADLINE_MINUTES, text, 1, MAX_PROOF_DEADLINE_MINUTES)?,
            None => defaults.proof.deadline_minutes,
        },
    }
    .check()?;
    // A certificate's validity comes from its Key Vault policy, so only secrets are held
    // to rotate-before < validity.
    if object_type == ObjectType::Secret && rotate_before >= validity {
        return Err(TagError::RotateBeforeNotBelowValidity {
            rotate_before: rotate_before.get(),
            validity: validity.get(),
        });
    }
    // A new version whose inherited and bookkeeping tags would exceed Key Vault's limit
    // cannot be written, so the policy is refused up front.
    let inherited = inherited_tags(tags).len();
    if object_type == ObjectType::Secret && inherited + BOOKKEEPING.len() > MAX_TAGS {
        return Err(TagError::TooManyTags {
            count: inherited,
            needed: BOOKKEEPING.len(),
        });
    }
    // An overlap longer than the cadence would keep three credentials alive at once and
    // retire one a version still in its overlap holds: capped, with a warning, rather than
    // leaving the object unmanaged.
    let overlap = if object_type == ObjectType::Secret
        && overlap.get() > validity.get() - rotate_before.get()
    {
        let cadence = validity.get() - rotate_before.get();
        tracing::warn!(
            overlap = overlap.get(),
            cadence,
            "{OVERLAP_DAYS} is longer than the rotation cadence; the overlap is capped to it"
        );
        Days(cadence)
    } else {
        overlap
    };
    Ok(Some(RotationPolicy {
        kind,
        validity,
        rotate_before,
        overlap,
        proof,
    }))
}

/// The tag `name` in any casing; two spellings of one name are an error.
fn lookup<'t>(tags: &'t BTreeMap<String, String>, name: &str) -> Result<Option<&'t str>, TagError> {
    let mut found = tags
        .iter()
        .filter(|(key, _)| key.trim().eq_ignore_ascii_case(name));
    let first = found.next();
    if found.next().is_some() {
        return Err(TagError::Duplicate {
            tag: name.to_string(),
        });
    }
    Ok(first.map(|(_, value)| value.as_str()))
}

/// The tags a new version carries over from its predecessor: everything but bookkeeping.
pub fn inherited_tags(tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    tags.iter()
        .filter(|(key, _)| {
            !BOOKKEEPING
                .iter()
                .any(|b| key.trim().eq_ignore_ascii_case(b))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What keyturn writes on a new version it creates.
#[derive(Debug, Clone)]
pub(crate) struct NewBookkeeping<'a> {
    pub key_id: Option<&'a KeyId>,
    pub previous_key_id: Option<&'a KeyId>,
    pub previous_version: &'a ObjectVersion,
    pub job_id: &'a str,
    pub rotated_at: DateTime<Utc>,
}

/// The tags of a new version: the predecessor's policy tags plus fresh bookkeeping.
pub(crate) fn new_version_tags(
    predecessor: &BTreeMap<String, String>,
    notes: &NewBookkeeping<'_>,
) -> BTreeMap<String, String> {
    let mut tags = inherited_tags(predecessor);
    if let Some(key_id) = notes.key_id {
        tags.insert(KEY_ID.into(), key_id.to_string());
    }
    if let Some(previous) = notes.previous_key_id {
        tags.insert(PREVIOUS_KEY_ID.into(), previous.to_string());
    }
    tags.insert(PREVIOUS_VERSION.into(), notes.previous_version.to_string());
    tags.insert(JOB_ID.into(), notes.job_id.to_string());
    tags.insert(
        ROTATED_AT.into(),
        notes.rotated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    tags
}

/// `tags` with `keyturn-last-error` set to `error`, cut to a tag value's length.
pub fn with_last_error(tags: &BTreeMap<String, String>, error: &str) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = tags
        .iter()
        .filter(|(key, _)| !key.trim().eq_ignore_ascii_case(LAST_ERROR))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Longer error texts are cut to fit a tag value.
    let value: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_TAG_VALUE_LEN)
        .collect();
    tags.insert(LAST_ERROR.into(), value);
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab";

    fn defaults() -> PolicyDefaults {
        PolicyDefaults::new(90, 30, 7).expect("valid defaults")
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn secret_policy(pairs: &[(&str, &str)]) -> Result<Option<RotationPolicy>, TagError> {
        policy(ObjectType::Secret, &tags(pairs), &defaults())
    }

    #[test]
    fn an_entra_app_secret_takes_its_app_id_and_the_defaults() {
        let p = secret_policy(&[(KIND, "entra-app-secret"), (APP_ID, APP)])
            .expect("valid")
            .expect("managed");
        assert_eq!(
            p.kind,
            Kind::EntraAppSecret {
                app_id: AppId::parse(APP).expect("guid")
            }
        );
        assert_eq!(
            (p.validity.get(), p.rotate_before.get(), p.overlap.get()),
            (90, 30, 7)
        );
    }

    #[test]
    fn tag_names_are_read_in_any_casing() {
        let p = secret_policy(&[("Keyturn-Kind", "Generated"), ("KEYTURN-LENGTH", "24")])
            .expect("valid")
            .expect("managed");
        assert_eq!(
            p.kind,
            Kind::Generated {
                length: 24,
                alphabet: Alphabet::Alphanumeric
            }
        );
    }

    #[test]
    fn microsoft_sample_tags_map_where_they_fit() {
        let p = secret_policy(&[
            (KIND, "entra-app-secret"),
            (MS_PROVIDER_ADDRESS, APP),
            (MS_VALIDITY_PERIOD_DAYS, "60"),
            (MS_CREDENTIAL_ID, "key1"),
        ])
        .expect("valid")
        .expect("managed");
        assert_eq!(p.validity.get(), 60);
        assert!(matches!(p.kind, Kind::EntraAppSecret { .. }));
    }

    #[test]
    fn objects_without_keyturn_kind_are_not_managed() {
        for pairs in [
            vec![],
            vec![("owner", "team-a")],
            vec![(MS_VALIDITY_PERIOD_DAYS, "60")],
            vec![(LAST_ERROR, "old")],
        ] {
            assert_eq!(secret_policy(&pairs), Ok(None), "{pairs:?}");
        }
    }

    #[test]
    fn a_certificate_is_recognised_from_its_type_once_it_carries_a_policy_tag() {
        let none = policy(ObjectType::Certificate, &tags(&[]), &defaults());
        assert_eq!(none, Ok(None));
        let some = policy(
            ObjectType::Certificate,
            &tags(&[(ROTATE_BEFORE_DAYS, "20")]),
            &defaults(),
        )
        .expect("valid")
        .expect("managed");
        assert_eq!(some.kind, Kind::Certificate);
        assert_eq!(some.rotate_before.get(), 20);
    }

    #[test]
    fn each_malformed_tag_is_named_in_its_error() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![(KIND, "rotate-me")], KIND),
            (vec![(KIND, "entra-app-secret")], APP_ID),
            (vec![(KIND, "entra-app-secret"), (APP_ID, "my-app")], APP_ID),
            (
                vec![
                    (KIND, "entra-app-secret"),
                    (MS_PROVIDER_ADDRESS, "/subscriptions/x"),
                ],
                MS_PROVIDER_ADDRESS,
            ),
            (
                vec![(KIND, "generated"), (VALIDITY_DAYS, "ninety")],
                VALIDITY_DAYS,
            ),
            (
                vec![(KIND, "generated"), (VALIDITY_DAYS, "0")],
                VALIDITY_DAYS,
            ),
            (
                vec![(KIND, "generated"), (VALIDITY_DAYS, "-5")],
                VALIDITY_DAYS,
            ),
            (
                vec![(KIND, "generated"), (VALIDITY_DAYS, "99999")],
                VALIDITY_DAYS,
            ),
            (
                vec![(KIND, "generated"), (ROTATE_BEFORE_DAYS, "1.5")],
                ROTATE_BEFORE_DAYS,
            ),
            (vec![(KIND, "generated"), (OVERLAP_DAYS, "")], OVERLAP_DAYS),
            (
                vec![(KIND, "generated"), (MS_VALIDITY_PERIOD_DAYS, "x")],
                MS_VALIDITY_PERIOD_DAYS,
            ),
            (vec![(KIND, "generated"), (LENGTH, "8")], LENGTH),
            (vec![(KIND, "generated"), (LENGTH, "100000")], LENGTH),
            (vec![(KIND, "generated"), (ALPHABET, "emoji")], ALPHABET),
            (
                vec![
                    (KIND, "generated"),
                    (VALIDITY_DAYS, "30"),
                    (ROTATE_BEFORE_DAYS, "30"),
                ],
                ROTATE_BEFORE_DAYS,
            ),
            (vec![(KIND, "certificate")], KIND),
            (
                vec![(KIND, "generated"), ("KEYTURN-KIND", "generated")],
                KIND,
            ),
        ];
        for (pairs, tag) in cases {
            let error = secret_policy(&pairs).expect_err(&format!("{pairs:?} is malformed"));
            assert!(error.to_string().contains(tag), "{pairs:?}: {error}");
        }
    }

    #[test]
    fn too_many_tags_for_the_bookkeeping_are_refused() {
        let mut pairs = vec![(KIND.to_string(), "generated".to_string())];
        for i in 0..9 {
            pairs.push((format!("team-{i}"), "x".into()));
        }
        let tags: BTreeMap<String, String> = pairs.into_iter().collect();
        let error = policy(ObjectType::Secret, &tags, &defaults()).expect_err("too many");
        assert!(
            matches!(error, TagError::TooManyTags { count: 10, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_quoted_value_is_cut_short() {
        let long = "s3cr3t".repeat(50);
        let error = secret_policy(&[(KIND, "generated"), (LENGTH, &long)]).expect_err("bad");
        assert!(!error.to_string().contains(&long));
    }

    #[test]
    fn a_new_version_inherits_policy_tags_and_replaces_bookkeeping() {
        let old_key = KeyId::parse("11111111-1111-4111-8111-111111111111").expect("guid");
        let new_key = KeyId::parse("22222222-2222-4222-8222-222222222222").expect("guid");
        let predecessor = tags(&[
            (KIND, "entra-app-secret"),
            (APP_ID, APP),
            (KEY_ID, "11111111-1111-4111-8111-111111111111"),
            (LAST_ERROR, "permission denied"),
            (JOB_ID, "old-job"),
        ]);
        let version = ObjectVersion::parse("0123456789abcdef0123456789abcdef").expect("version");
        let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .expect("time")
            .with_timezone(&Utc);
        let new = new_version_tags(
            &predecessor,
            &NewBookkeeping {
                key_id: Some(&new_key),
                previous_key_id: Some(&old_key),
                previous_version: &version,
                job_id: "new-job",
                rotated_at: at,
            },
        );
        assert_eq!(new.get(KIND).map(String::as_str), Some("entra-app-secret"));
        assert_eq!(new.get(LAST_ERROR), None);
        let notes = Bookkeeping::read(&new);
        assert_eq!(notes.key_id, Some(new_key));
        assert_eq!(notes.previous_key_id, Some(old_key));
        assert_eq!(notes.previous_version, Some(version));
        assert_eq!(notes.job_id.as_deref(), Some("new-job"));
        assert_eq!(notes.rotated_at, Some(at));
        assert!(notes.written_by_keyturn());
    }

    #[test]
    fn an_overlap_longer_than_the_cadence_is_capped_to_it() {
        let p = secret_policy(&[
            (KIND, "generated"),
            (VALIDITY_DAYS, "10"),
            (ROTATE_BEFORE_DAYS, "5"),
            (OVERLAP_DAYS, "7"),
        ])
        .expect("valid")
        .expect("managed");
        assert_eq!(p.overlap.get(), 5);
    }

    #[test]
    fn the_proof_policy_comes_from_tags_or_defaults_and_is_bounded() {
        let p = secret_policy(&[(KIND, "entra-app-secret"), (APP_ID, APP)])
            .expect("valid")
            .expect("managed");
        assert_eq!(p.proof, ProofPolicy::default());
        let p = secret_policy(&[
            (KIND, "entra-app-secret"),
            (APP_ID, APP),
            (PROOF_SUCCESSES, "5"),
            (PROOF_WINDOW_SECONDS, "300"),
            (PROOF_DEADLINE_MINUTES, "1440"),
        ])
        .expect("valid")
        .expect("managed");
        assert_eq!(p.proof, ProofPolicy::new(5, 300, 1440).expect("valid"));
        for (tag, value) in [
            (PROOF_SUCCESSES, "0"),
            (PROOF_SUCCESSES, "many"),
            (PROOF_DEADLINE_MINUTES, "1441"),
            (PROOF_DEADLINE_MINUTES, "0"),
            (PROOF_WINDOW_SECONDS, "3600"),
        ] {
            let error = secret_policy(&[(KIND, "entra-app-secret"), (APP_ID, APP), (tag, value)])
                .expect_err("refused");
            assert!(error.to_string().contains(tag), "{tag}={value}: {error}");
        }
    }

    #[test]
    fn the_last_error_tag_fits_a_tag_value() {
        let tags = with_last_error(&BTreeMap::new(), &"x".repeat(1000));
        assert_eq!(tags[LAST_ERROR].chars().count(), MAX_TAG_VALUE_LEN);
    }

    #[test]
    fn defaults_are_held_to_the_same_rules_as_tags() {
        assert!(matches!(
            PolicyDefaults::new(10, 5, 7),
            Err(TagError::OverlapLongerThanCadence { overlap: 7, .. })
        ));
        assert!(PolicyDefaults::new(10, 5, 5).is_ok());
        assert!(PolicyDefaults::new(30, 30, 7).is_err());
        assert!(PolicyDefaults::new(0, 30, 7).is_err());
        assert!(PolicyDefaults::new(90, 30, 0).is_ok());
    }

    #[test]
    fn every_alphabet_has_its_documented_size() {
        let sizes = [
            (Alphabet::Alphanumeric, 62),
            (Alphabet::Hex, 16),
            (Alphabet::Base64Url, 64),
            (Alphabet::AsciiPrintable, 94),
        ];
        for (alphabet, size) in sizes {
            assert_eq!(alphabet.characters().len(), size, "{}", alphabet.name());
            assert_eq!(Alphabet::parse(alphabet.name()), Ok(alphabet));
        }
    }

    #[test]
    fn every_alphabet_needs_128_bits_and_says_its_minimum() {
        let minimums = [
            (Alphabet::Alphanumeric, 22),
            (Alphabet::Hex, 32),
            (Alphabet::Base64Url, 22),
            (Alphabet::AsciiPrintable, 20),
        ];
        for (alphabet, min) in minimums {
            assert_eq!(alphabet.min_length(), min, "{}", alphabet.name());
            let size = alphabet.characters().len() as f64;
            assert!(min as f64 * size.log2() >= f64::from(MIN_GENERATED_BITS));
            assert!(((min - 1) as f64) * size.log2() < f64::from(MIN_GENERATED_BITS));
            let too_short = (min - 1).to_string();
            let error = secret_policy(&[
                (KIND, "generated"),
                (ALPHABET, alphabet.name()),
                (LENGTH, &too_short),
            ])
            .expect_err("below 128 bits");
            assert_eq!(
                error,
                TagError::Length {
                    found: too_short.clone(),
                    alphabet: alphabet.name(),
                    min,
                }
            );
            assert!(
                error.to_string().contains(&format!("from {min} to")),
                "{error}"
            );
            let enough = min.to_string();
            let policy = secret_policy(&[
                (KIND, "generated"),
                (ALPHABET, alphabet.name()),
                (LENGTH, &enough),
            ])
            .expect("128 bits")
            .expect("managed");
            assert_eq!(
                policy.kind,
                Kind::Generated {
                    length: min,
                    alphabet
                }
            );
        }
        // Hex at 16 characters is 64 bits: accepted before, refused now.
        assert!(secret_policy(&[(KIND, "generated"), (ALPHABET, "hex"), (LENGTH, "16")]).is_err());
    }

    #[test]
    fn the_default_length_carries_128_bits_in_every_alphabet() {
        for alphabet in ["alphanumeric", "hex", "base64url", "ascii-printable"] {
            let policy = secret_policy(&[(KIND, "generated"), (ALPHABET, alphabet)])
                .expect("valid")
                .expect("managed");
            let Kind::Generated { length, alphabet } = policy.kind else {
                panic!("generated");
            };
            assert!(length >= alphabet.min_length(), "{}", alphabet.name());
        }
    }
}
