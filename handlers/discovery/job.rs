//! The discovery job message: one sweep fans out into one job per subscription, per vault
//! and per directory range, each a Service Bus message whose `MessageId` is derived from
//! the sweep and the scope, so the broker's duplicate detection drops a job queued twice
//! and a rerun of a job writes the same rows again.
//!
//! On the wire (schema 1): `{"schema":1,"sweep":"20260106T060000Z","scope":{"kind":"vault",...}}`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::ids::SubscriptionId;
use crate::domain::inventory::SweepId;
use crate::ports::catalog::{DirectoryRange, VaultRef};
use crate::ports::queue::OutgoingMessage;

/// The schema this build writes and reads.
pub const SCHEMA: u32 = 1;

const CONTENT_TYPE: &str = "application/json";

/// What one discovery job scans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobScope {
    /// The start of a sweep: queues the subscription and directory jobs. `subscriptions`
    /// empty means every subscription the identity can see.
    Sweep { subscriptions: Vec<SubscriptionId> },
    /// Lists one subscription's vaults and queues one job per vault.
    Subscription { subscription: SubscriptionId },
    /// Lists one vault's secrets, certificates and keys.
    Vault {
        subscription: Option<SubscriptionId>,
        name: String,
        uri: String,
    },
    /// Lists one range of applications or service principals.
    Directory { range: DirectoryRange },
    /// Counts what the sweep wrote into its snapshot (queued after the others,
    /// scheduled late enough for them to finish).
    Snapshot,
}

/// One job: its sweep and scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryJob {
    pub schema: u32,
    pub sweep: SweepId,
    pub scope: JobScope,
}

/// Why a delivered message is not a discovery job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error("the discovery job is not valid JSON of schema {SCHEMA}: {0}")]
    Shape(String),
    #[error("discovery job schema {found} is not {SCHEMA}")]
    Schema { found: u32 },
}

impl DiscoveryJob {
    pub fn new(sweep: SweepId, scope: JobScope) -> Self {
        Self {
            schema: SCHEMA,
            sweep,
            scope,
        }
    }

    pub fn vault(sweep: SweepId, vault: &VaultRef) -> Self {
        Self::new(
            sweep,
            JobScope::Vault {
                subscription: vault.subscription,
                name: vault.name.to_string(),
                uri: vault.uri.url().to_string(),
            },
        )
    }

    /// What the job scans, as a stable text: the session and the idempotency key's input.
    pub fn scope_key(&self) -> String {
        match &self.scope {
            JobScope::Sweep { .. } => "sweep".to_owned(),
            JobScope::Subscription { subscription } => format!("subscription/{subscription}"),
            JobScope::Vault { uri, .. } => format!("vault/{}", uri.to_ascii_lowercase()),
            JobScope::Directory { range } => format!("directory/{}", range.label()),
            JobScope::Snapshot => "snapshot".to_owned(),
        }
    }

    /// The `MessageId`: 32 hex digits of SHA-256 over schema, sweep and scope. The same
    /// job queued twice in one sweep has the same id; another sweep's does not.
    pub fn message_id(&self) -> String {
        let digest = Sha256::digest(format!(
            "discovery|{}|{}|{}",
            self.schema,
            self.sweep,
            self.scope_key()
        ));
        hex::encode(&digest[..16])
    }

    pub fn to_message(&self, scheduled: Option<chrono::DateTime<chrono::Utc>>) -> OutgoingMessage {
        OutgoingMessage {
            message_id: self.message_id(),
            session_id: self.message_id(),
            scheduled_enqueue: scheduled,
            content_type: CONTENT_TYPE,
            body: serde_json::to_vec(self).expect("a discovery job always serializes"),
        }
    }

    pub fn decode(body: &[u8]) -> Result<Self, JobError> {
        let job: DiscoveryJob =
            serde_json::from_slice(body).map_err(|e| JobError::Shape(e.to_string()))?;
        if job.schema != SCHEMA {
            return Err(JobError::Schema { found: job.schema });
        }
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::ports::catalog::{DirectoryKind, HexDigit};

    fn sweep() -> SweepId {
        SweepId::parse("20260106T060000Z").expect("valid")
    }

    #[test]
    fn a_job_round_trips_and_its_id_depends_only_on_sweep_and_scope() {
        let job = DiscoveryJob::new(
            sweep(),
            JobScope::Directory {
                range: DirectoryRange {
                    kind: DirectoryKind::ServicePrincipals,
                    prefix: HexDigit::parse("c").expect("hex"),
                },
            },
        );
        let message = job.to_message(None);
        assert_eq!(DiscoveryJob::decode(&message.body), Ok(job.clone()));
        assert_eq!(message.message_id, job.clone().message_id());
        let other = DiscoveryJob::new(
            SweepId::parse("20260107T060000Z").expect("valid"),
            job.scope.clone(),
        );
        assert_ne!(other.message_id(), job.message_id());
        assert_eq!(message.message_id.len(), 32);
    }

    const GUID: &str = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

    fn any_subscription() -> impl Strategy<Value = SubscriptionId> {
        GUID.prop_map(|g| SubscriptionId::parse(&g).expect("a GUID"))
    }

    fn any_scope() -> impl Strategy<Value = JobScope> {
        prop_oneof![
            prop::collection::vec(any_subscription(), 0..3)
                .prop_map(|subscriptions| JobScope::Sweep { subscriptions }),
            any_subscription().prop_map(|subscription| JobScope::Subscription { subscription }),
            (prop::option::of(any_subscription()), ".{0,24}", ".{0,40}").prop_map(
                |(subscription, name, uri)| JobScope::Vault {
                    subscription,
                    name,
                    uri
                }
            ),
            (any::<bool>(), "[0-9a-f]").prop_map(|(apps, digit)| JobScope::Directory {
                range: DirectoryRange {
                    kind: if apps {
                        DirectoryKind::Applications
                    } else {
                        DirectoryKind::ServicePrincipals
                    },
                    prefix: HexDigit::parse(&digit).expect("hex"),
                },
            }),
            Just(JobScope::Snapshot),
        ]
    }

    proptest! {
        #[test]
        fn any_job_is_queued_and_read_back_under_its_message_id(
            sweep in "[A-Za-z0-9_-]{1,64}",
            scope in any_scope(),
        ) {
            let job = DiscoveryJob::new(SweepId::parse(&sweep).expect("a sweep id"), scope);

            let message = job.to_message(None);

            prop_assert_eq!(DiscoveryJob::decode(&message.body), Ok(job.clone()));
            prop_assert_eq!(&message.message_id, &job.message_id());
            prop_assert_eq!(message.message_id.len(), 32);
        }

        #[test]
        fn a_job_with_a_field_missing_or_wrong_is_refused(
            scope in any_scope(),
            (field, replacement) in prop_oneof![
                Just(("schema", None)),
                Just(("sweep", None)),
                Just(("scope", None)),
                prop::sample::select(vec![json!("1"), json!(-1), json!(1.5), json!(null), json!(4_294_967_296u64)])
                    .prop_map(|v| ("schema", Some(v))),
                prop::sample::select(vec![json!(1), json!(null), json!(""), json!("bad id!"), json!("x".repeat(65))])
                    .prop_map(|v| ("sweep", Some(v))),
                prop::sample::select(vec![
                    json!(null),
                    json!("vault"),
                    json!({"kind": "x"}),
                    json!({"kind": "vault"}),
                    json!({"kind": "subscription", "subscription": "not-a-guid"}),
                    json!({"kind": "directory", "range": {"kind": "applications", "prefix": "g"}}),
                    json!({"kind": "sweep", "subscriptions": "all"}),
                ])
                .prop_map(|v| ("scope", Some(v))),
            ],
        ) {
            let mut value = serde_json::to_value(DiscoveryJob::new(sweep(), scope)).expect("JSON");
            match replacement {
                Some(replacement) => value[field] = replacement,
                None => {
                    value.as_object_mut().expect("an object").remove(field);
                }
            }

            let decoded = DiscoveryJob::decode(value.to_string().as_bytes());

            prop_assert!(decoded.is_err(), "{value} decoded as {decoded:?}");
        }

        #[test]
        fn any_bytes_are_a_job_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(job) = DiscoveryJob::decode(&bytes) {
                prop_assert_eq!(job.schema, SCHEMA);
            }
        }
    }

    #[test]
    fn another_schema_or_shape_is_refused() {
        assert_eq!(
            DiscoveryJob::decode(br#"{"schema":2,"sweep":"s","scope":{"kind":"snapshot"}}"#),
            Err(JobError::Schema { found: 2 })
        );
        assert!(DiscoveryJob::decode(br#"{"schema":1,"sweep":"s","scope":{"kind":"x"}}"#).is_err());
        assert!(
            DiscoveryJob::decode(br#"{"schema":1,"sweep":"bad id!","scope":{"kind":"snapshot"}}"#)
                .is_err()
        );
    }
}
