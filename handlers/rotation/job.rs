//! The rotation job message: its versioned JSON shape, its deterministic id (the Service
//! Bus `MessageId`), the session it belongs to (`SessionId` = the object), turning a
//! job into the message keyturn sends, and reading a delivered one back, once
//! ([`Delivery::decode`]: one schema check, each field read on its own so an error names
//! it).
//!
//! Schema 1 on the wire:
//! ```json
//! { "schema": 1, "jobId": "…32 hex…", "action": "rotate",
//!   "object": "https://kv.vault.azure.net/secrets/db-password",
//!   "replacesVersion": "…32 hex…" }
//! ```
//! `retire` adds `appObjectId`, `keyId`, `successorVersion` and `rotatedBy`;
//! `followRenewal` adds `attempt`; `prove` adds `keyId` and `attempt`. Unknown fields are ignored, so a newer sender can add
//! optional fields without a schema bump; anything else bumps `schema`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::ids::{DirectoryObjectId, KeyId};
use crate::domain::names::{ObjectId, ObjectType, ObjectVersion};
use crate::ports::queue::{MAX_MESSAGE_ID_LEN, OutgoingMessage};

/// The job schema this build writes and reads.
pub(crate) const SCHEMA: u32 = 1;

/// Job ids are the first 32 hex digits (128 bits) of a SHA-256: collision-free for any
/// number of jobs keyturn will ever see, and short enough to fit a credential's display
/// name next to keyturn's marker.
const JOB_ID_HEX_LEN: usize = 32;

pub(crate) const CONTENT_TYPE: &str = "application/json";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error("job schema {found} is not supported (this build reads schema {SCHEMA})")]
    Schema { found: u32 },
    #[error("job is not a valid schema-{SCHEMA} job: {reason}")]
    Shape { reason: String },
    #[error("job id `{found}` is not {JOB_ID_HEX_LEN} lowercase hex digits")]
    JobId { found: String },
    #[error("job object `{object}` must be a versionless secret or certificate id")]
    Object { object: String },
    #[error("job `{job_id}` does not match its content (expected `{expected}`)")]
    IdMismatch { job_id: String, expected: String },
}

/// A job's deterministic id: the same work always gets the same id, so an event and a
/// sweep for one version are one message within the broker's duplicate-detection window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    pub fn parse(text: &str) -> Result<Self, JobError> {
        let ok = text.len() == JOB_ID_HEX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(text.to_string()))
        } else {
            Err(JobError::JobId {
                found: text.chars().take(JOB_ID_HEX_LEN + 8).collect(),
            })
        }
    }

    fn derive(parts: &[&str]) -> Self {
        let mut hash = Sha256::new();
        // Length-prefixed parts: no two different tuples hash the same bytes.
        for part in parts {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let mut hex = hex::encode(hash.finalize());
        hex.truncate(JOB_ID_HEX_LEN);
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobId {
    type Error = JobError;
    fn try_from(text: String) -> Result<Self, JobError> {
        Self::parse(&text)
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a job asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Replace `replaces_version`, the current version when the job was planned.
    #[serde(rename_all = "camelCase")]
    Rotate {
        object: ObjectId,
        replaces_version: ObjectVersion,
    },
    /// Remove the password credential `key_id` (recorded by keyturn on `replaced_version`)
    /// from the application, now that `successor_version` holds a proven successor.
    #[serde(rename_all = "camelCase")]
    Retire {
        object: ObjectId,
        replaced_version: ObjectVersion,
        app_object_id: DirectoryObjectId,
        key_id: KeyId,
        successor_version: ObjectVersion,
        /// The rotate job whose marker identifies keyturn's own credentials.
        rotated_by: JobId,
    },
    /// Try the token endpoint again with the credential `key_id` that the rotation of
    /// `replaces_version` added and keeps pending (not yet the managed secret's value).
    /// The proof's state lives with the pending copy in Key Vault, never in the job.
    #[serde(rename_all = "camelCase")]
    Prove {
        object: ObjectId,
        replaces_version: ObjectVersion,
        key_id: KeyId,
        attempt: u32,
    },
    /// Look again at a certificate renewal Key Vault is still working on.
    #[serde(rename_all = "camelCase")]
    FollowRenewal {
        object: ObjectId,
        replaces_version: ObjectVersion,
        attempt: u32,
    },
}

impl Action {
    /// The versionless object the job is about.
    pub fn object(&self) -> &ObjectId {
        match self {
            Self::Rotate { object, .. }
            | Self::Retire { object, .. }
            | Self::Prove { object, .. }
            | Self::FollowRenewal { object, .. } => object,
        }
    }

    /// The version the work started from.
    pub(crate) fn version(&self) -> &ObjectVersion {
        match self {
            Self::Rotate {
                replaces_version, ..
            }
            | Self::Prove {
                replaces_version, ..
            }
            | Self::FollowRenewal {
                replaces_version, ..
            } => replaces_version,
            Self::Retire {
                replaced_version, ..
            } => replaced_version,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Rotate { .. } => "rotate",
            Self::Retire { .. } => "retire",
            Self::Prove { .. } => "prove",
            Self::FollowRenewal { .. } => "followRenewal",
        }
    }

    /// The id of the rotate job whose work this job carries on: the rotate job itself, or
    /// the one a `prove` follow-up belongs to. Its marker names the credentials it added.
    pub(crate) fn rotation_id(&self) -> Option<JobId> {
        match self {
            Self::Rotate { .. } => Some(self.job_id()),
            Self::Prove {
                object,
                replaces_version,
                ..
            } => Some(
                Self::Rotate {
                    object: object.clone(),
                    replaces_version: replaces_version.clone(),
                }
                .job_id(),
            ),
            Self::Retire { rotated_by, .. } => Some(rotated_by.clone()),
            Self::FollowRenewal { .. } => None,
        }
    }

    /// The deterministic id: vault, object type, name (without case, as Key Vault compares
    /// names), the version being replaced and the action (with the follow-up attempt).
    pub(crate) fn job_id(&self) -> JobId {
        let object = self.object();
        let name = object.name().as_str().to_ascii_lowercase();
        let attempt = match self {
            Self::FollowRenewal { attempt, .. } => attempt.to_string(),
            // The credential too: a later rotation of the same version (after a failed
            // proof) must not have its follow-ups dropped as duplicates of the earlier ones.
            Self::Prove {
                attempt, key_id, ..
            } => format!("{attempt}/{key_id}"),
            _ => String::new(),
        };
        JobId::derive(&[
            "keyturn-job",
            object.vault().as_str(),
            object.object_type().as_str(),
            &name,
            self.version().as_str(),
            self.name(),
            &attempt,
        ])
    }
}

/// One job: schema, id and action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub schema: u32,
    pub job_id: JobId,
    #[serde(flatten)]
    pub action: Action,
}

impl Job {
    pub fn new(action: Action) -> Self {
        Self {
            schema: SCHEMA,
            job_id: action.job_id(),
            action,
        }
    }

    /// Reads a job from its JSON: [`Delivery::decode`], for a caller that needs the job
    /// or why it does not decode, and nothing else.
    pub fn from_json(value: &Value) -> Result<Self, JobError> {
        Delivery::decode(value)?.job
    }

    /// The job in `job`, a JSON object whose schema is known to be [`SCHEMA`]: each field
    /// read once, a failure naming the field, then the object and the id checked.
    fn from_fields(job: &Map<String, Value>) -> Result<Self, JobError> {
        let job_id: JobId = field(job, "jobId")?;
        let object: ObjectId = field(job, "object")?;
        let action = match field::<String>(job, "action")?.as_str() {
            "rotate" => Action::Rotate {
                object,
                replaces_version: field(job, "replacesVersion")?,
            },
            "retire" => Action::Retire {
                object,
                replaced_version: field(job, "replacedVersion")?,
                app_object_id: field(job, "appObjectId")?,
                key_id: field(job, "keyId")?,
                successor_version: field(job, "successorVersion")?,
                rotated_by: field(job, "rotatedBy")?,
            },
            "prove" => Action::Prove {
                object,
                replaces_version: field(job, "replacesVersion")?,
                key_id: field(job, "keyId")?,
                attempt: field(job, "attempt")?,
            },
            "followRenewal" => Action::FollowRenewal {
                object,
                replaces_version: field(job, "replacesVersion")?,
                attempt: field(job, "attempt")?,
            },
            _ => {
                return Err(JobError::Shape {
                    reason: "`action` is not one of rotate, retire, prove, followRenewal".into(),
                });
            }
        };
        let object = action.object();
        let versionless = object.version().is_none()
            && matches!(
                object.object_type(),
                ObjectType::Secret | ObjectType::Certificate
            );
        if !versionless {
            return Err(JobError::Object {
                object: object.to_string(),
            });
        }
        let expected = action.job_id();
        if job_id != expected {
            return Err(JobError::IdMismatch {
                job_id: job_id.to_string(),
                expected: expected.to_string(),
            });
        }
        Ok(Self {
            schema: SCHEMA,
            job_id,
            action,
        })
    }

    /// The message that carries this job: `MessageId` = job id, `SessionId` = the object.
    pub fn message(&self, scheduled: Option<DateTime<Utc>>) -> OutgoingMessage {
        // Serialising plain strings and integers cannot fail.
        let body = serde_json::to_vec(self).expect("a job always serialises");
        OutgoingMessage {
            message_id: self.job_id.to_string(),
            session_id: session_id(self.action.object()),
            scheduled_enqueue: scheduled,
            content_type: CONTENT_TYPE,
            body,
        }
    }
}

/// A delivered job, decoded once from its JSON. The schema is checked first (so a job
/// from a newer build says so rather than failing on a field) and the job id read next, so
/// the receipt can be recorded under it even when the rest of the job does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The `jobId` as sent.
    pub job_id: String,
    /// The job, or why it does not decode (naming the field).
    pub job: Result<Job, JobError>,
}

impl Delivery {
    /// Refuses a delivery that is not a JSON object, has no numeric `schema`, another
    /// schema than [`SCHEMA`], or no string `jobId`; anything else is a delivery whose
    /// `job` says whether it decoded.
    pub fn decode(value: &Value) -> Result<Self, JobError> {
        let job = value.as_object().ok_or_else(|| JobError::Shape {
            reason: "a job is a JSON object".into(),
        })?;
        let schema = job
            .get("schema")
            .and_then(Value::as_u64)
            .ok_or_else(|| JobError::Shape {
                reason: "`schema` is missing or not a number".into(),
            })?;
        if schema != u64::from(SCHEMA) {
            return Err(JobError::Schema {
                found: u32::try_from(schema).unwrap_or(u32::MAX),
            });
        }
        let job_id: String = field(job, "jobId")?;
        Ok(Self {
            job_id,
            job: Job::from_fields(job),
        })
    }
}

/// One field of a job, decoded on its own so a failure names it.
fn field<T: DeserializeOwned>(job: &Map<String, Value>, name: &'static str) -> Result<T, JobError> {
    let value = job.get(name).ok_or_else(|| JobError::Shape {
        reason: format!("`{name}` is missing"),
    })?;
    T::deserialize(value).map_err(|error| JobError::Shape {
        reason: format!("`{name}`: {error}"),
    })
}

/// The session of an object: `{host}/{collection}/{name}` in lowercase, so every job
/// about one object is handled by one receiver at a time. Identities longer than a
/// `SessionId` may be (128 characters) are replaced by `sha256:` and a hash.
pub fn session_id(object: &ObjectId) -> String {
    let host = object.vault().url().host_str().unwrap_or_default();
    let port = object
        .vault()
        .url()
        .port()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let identity = format!(
        "{host}{port}/{}/{}",
        object.object_type().collection(),
        object.name().as_str().to_ascii_lowercase()
    )
    .to_ascii_lowercase();
    if identity.len() <= MAX_MESSAGE_ID_LEN {
        identity
    } else {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(identity.as_bytes()))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "0123456789abcdef0123456789abcdef";
    const V2: &str = "fedcba9876543210fedcba9876543210";

    fn object(name: &str) -> ObjectId {
        ObjectId::parse(&format!("https://kv-one.vault.azure.net/secrets/{name}")).expect("id")
    }

    fn rotate(name: &str, version: &str) -> Action {
        Action::Rotate {
            object: object(name),
            replaces_version: ObjectVersion::parse(version).expect("version"),
        }
    }

    #[test]
    fn one_version_of_one_object_always_gets_the_same_job_id() {
        assert_eq!(rotate("db", V1).job_id(), rotate("db", V1).job_id());
        // Key Vault compares names without case, and so do job ids.
        assert_eq!(rotate("db", V1).job_id(), rotate("DB", V1).job_id());
    }

    #[test]
    fn another_version_object_or_action_gets_another_job_id() {
        let base = rotate("db", V1).job_id();
        assert_ne!(base, rotate("db", V2).job_id());
        assert_ne!(base, rotate("db2", V1).job_id());
        let follow = Action::FollowRenewal {
            object: object("db"),
            replaces_version: ObjectVersion::parse(V1).expect("version"),
            attempt: 1,
        };
        assert_ne!(base, follow.job_id());
    }

    #[test]
    fn a_proof_follow_up_belongs_to_its_rotation_and_differs_per_credential_and_attempt() {
        let prove = |key: &str, attempt| Action::Prove {
            object: object("db"),
            replaces_version: ObjectVersion::parse(V1).expect("version"),
            key_id: KeyId::parse(key).expect("guid"),
            attempt,
        };
        let k1 = "11111111-1111-4111-8111-111111111111";
        let k2 = "22222222-2222-4222-8222-222222222222";
        assert_eq!(prove(k1, 1).rotation_id(), Some(rotate("db", V1).job_id()));
        assert_ne!(prove(k1, 1).job_id(), prove(k1, 2).job_id());
        assert_ne!(prove(k1, 1).job_id(), prove(k2, 1).job_id());
        assert_ne!(prove(k1, 1).job_id(), rotate("db", V1).job_id());
    }

    #[test]
    fn a_message_carries_the_job_id_and_the_object_session() {
        let job = Job::new(rotate("Db-Password", V1));
        let message = job.message(None);
        assert_eq!(message.message_id, job.job_id.to_string());
        assert!(message.message_id.len() <= MAX_MESSAGE_ID_LEN);
        assert_eq!(
            message.session_id,
            "kv-one.vault.azure.net/secrets/db-password"
        );
        assert_eq!(message.content_type, CONTENT_TYPE);
    }

    #[test]
    fn a_long_object_identity_is_hashed_into_a_session_id() {
        let long = "n".repeat(127);
        let id = session_id(&object(&long));
        assert!(id.starts_with("sha256:"));
        assert!(id.len() <= MAX_MESSAGE_ID_LEN);
        assert_eq!(id, session_id(&object(&long.to_uppercase())));
    }

    #[test]
    fn a_job_round_trips_through_its_json() {
        let job = Job::new(Action::Retire {
            object: object("db"),
            replaced_version: ObjectVersion::parse(V1).expect("version"),
            app_object_id: DirectoryObjectId::parse("33333333-3333-4333-8333-333333333333")
                .expect("guid"),
            key_id: KeyId::parse("11111111-1111-4111-8111-111111111111").expect("guid"),
            successor_version: ObjectVersion::parse(V2).expect("version"),
            rotated_by: rotate("db", V1).job_id(),
        });
        let value: serde_json::Value =
            serde_json::from_slice(&job.message(None).body).expect("json");
        assert_eq!(value["action"], "retire");
        assert_eq!(value["schema"], 1);
        assert_eq!(Job::from_json(&value), Ok(job));
    }

    #[test]
    fn bad_jobs_are_refused_with_the_reason() {
        let good: serde_json::Value =
            serde_json::from_slice(&Job::new(rotate("db", V1)).message(None).body).expect("json");
        let mut future = good.clone();
        future["schema"] = 2.into();
        assert_eq!(Job::from_json(&future), Err(JobError::Schema { found: 2 }));

        let mut versioned = good.clone();
        versioned["object"] = format!("https://kv-one.vault.azure.net/secrets/db/{V1}").into();
        assert!(matches!(
            Job::from_json(&versioned),
            Err(JobError::Object { .. })
        ));

        let mut key = good.clone();
        key["object"] = "https://kv-one.vault.azure.net/keys/db".into();
        assert!(matches!(Job::from_json(&key), Err(JobError::Object { .. })));

        let mut forged = good.clone();
        forged["replacesVersion"] = V2.into();
        assert!(matches!(
            Job::from_json(&forged),
            Err(JobError::IdMismatch { .. })
        ));

        let mut unknown = good.clone();
        unknown["action"] = "explode".into();
        assert!(matches!(
            Job::from_json(&unknown),
            Err(JobError::Shape { .. })
        ));

        let mut bad_id = good;
        bad_id["jobId"] = "job-42".into();
        assert!(matches!(
            Job::from_json(&bad_id),
            Err(JobError::Shape { .. })
        ));

        assert!(matches!(
            Job::from_json(&serde_json::json!({ "jobId": "x" })),
            Err(JobError::Shape { .. })
        ));
    }

    #[test]
    fn every_action_round_trips_through_its_json() {
        let jobs = [
            Job::new(rotate("db", V1)),
            Job::new(Action::Prove {
                object: object("db"),
                replaces_version: ObjectVersion::parse(V1).expect("version"),
                key_id: KeyId::parse("11111111-1111-4111-8111-111111111111").expect("guid"),
                attempt: 2,
            }),
            Job::new(Action::FollowRenewal {
                object: ObjectId::parse("https://kv-one.vault.azure.net/certificates/tls")
                    .expect("id"),
                replaces_version: ObjectVersion::parse(V1).expect("version"),
                attempt: 3,
            }),
        ];
        for job in jobs {
            let value: serde_json::Value =
                serde_json::from_slice(&job.message(None).body).expect("json");
            assert_eq!(Job::from_json(&value), Ok(job));
        }
    }

    #[test]
    fn a_bad_field_is_named_in_the_error() {
        let good: serde_json::Value =
            serde_json::from_slice(&Job::new(rotate("db", V1)).message(None).body).expect("json");
        let cases = [
            (
                "replacesVersion",
                serde_json::json!(5),
                "`replacesVersion`: ",
            ),
            (
                "replacesVersion",
                serde_json::Value::Null,
                "`replacesVersion`: ",
            ),
            ("object", serde_json::json!("not a url"), "`object`: "),
            ("action", serde_json::json!(["rotate"]), "`action`: "),
        ];
        for (name, value, expected) in cases {
            let mut job = good.clone();
            job[name] = value;
            let error = Job::from_json(&job).expect_err("refused").to_string();
            assert!(error.contains(expected), "{name}: {error}");
        }
        let mut missing = good.clone();
        missing
            .as_object_mut()
            .expect("object")
            .remove("replacesVersion");
        assert_eq!(
            Job::from_json(&missing),
            Err(JobError::Shape {
                reason: "`replacesVersion` is missing".into()
            })
        );
    }

    #[test]
    fn a_delivery_keeps_its_job_id_when_the_rest_does_not_decode() {
        let delivery =
            Delivery::decode(&serde_json::json!({ "schema": 1, "jobId": "job-42" })).expect("read");
        assert_eq!(delivery.job_id, "job-42");
        assert!(matches!(delivery.job, Err(JobError::Shape { .. })));

        for refused in [
            serde_json::json!([1]),
            serde_json::json!({ "jobId": "job-42" }),
            serde_json::json!({ "schema": "1", "jobId": "job-42" }),
            serde_json::json!({ "schema": 1, "jobId": 42 }),
            serde_json::json!({ "schema": 1 }),
        ] {
            assert!(
                matches!(Delivery::decode(&refused), Err(JobError::Shape { .. })),
                "{refused}"
            );
        }
        assert_eq!(
            Delivery::decode(&serde_json::json!({ "schema": 99, "jobId": "x" })),
            Err(JobError::Schema { found: 99 })
        );
    }
}
