//! Key Vault events as Event Grid delivers them, in the Event Grid schema or the
//! CloudEvents 1.0 schema, one event or a batch, in any key casing.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::names::{NameError, ObjectId, ObjectName, ObjectType, ObjectVersion, VaultName};
use crate::events::tolerant::{self, FieldError, Fields};

/// Most events one delivery may carry: Event Grid's `maxEventsPerBatch` is at most 5000.
pub(crate) const MAX_EVENTS_PER_DELIVERY: usize = 5000;

#[cfg(test)]
const EVENT_TYPE_PREFIX: &str = "Microsoft.KeyVault.";

/// The Event Grid event type of the subscription handshake; see
/// [`crate::events::validation`].
pub(crate) const SUBSCRIPTION_VALIDATION_EVENT: &str =
    "Microsoft.EventGrid.SubscriptionValidationEvent";

/// Which Key Vault event this is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyVaultEventKind {
    SecretNewVersionCreated,
    SecretNearExpiry,
    SecretExpired,
    CertificateNewVersionCreated,
    CertificateNearExpiry,
    CertificateExpired,
    KeyNewVersionCreated,
    KeyNearExpiry,
    KeyExpired,
    VaultAccessPolicyChanged,
    /// Any other event type, kept as sent (trimmed).
    Other(String),
}

const KNOWN_KINDS: [(KeyVaultEventKind, &str); 10] = [
    (
        KeyVaultEventKind::SecretNewVersionCreated,
        "Microsoft.KeyVault.SecretNewVersionCreated",
    ),
    (
        KeyVaultEventKind::SecretNearExpiry,
        "Microsoft.KeyVault.SecretNearExpiry",
    ),
    (
        KeyVaultEventKind::SecretExpired,
        "Microsoft.KeyVault.SecretExpired",
    ),
    (
        KeyVaultEventKind::CertificateNewVersionCreated,
        "Microsoft.KeyVault.CertificateNewVersionCreated",
    ),
    (
        KeyVaultEventKind::CertificateNearExpiry,
        "Microsoft.KeyVault.CertificateNearExpiry",
    ),
    (
        KeyVaultEventKind::CertificateExpired,
        "Microsoft.KeyVault.CertificateExpired",
    ),
    (
        KeyVaultEventKind::KeyNewVersionCreated,
        "Microsoft.KeyVault.KeyNewVersionCreated",
    ),
    (
        KeyVaultEventKind::KeyNearExpiry,
        "Microsoft.KeyVault.KeyNearExpiry",
    ),
    (
        KeyVaultEventKind::KeyExpired,
        "Microsoft.KeyVault.KeyExpired",
    ),
    (
        KeyVaultEventKind::VaultAccessPolicyChanged,
        "Microsoft.KeyVault.VaultAccessPolicyChanged",
    ),
];

impl KeyVaultEventKind {
    /// The events that make keyturn rotate: a secret or certificate about to expire or
    /// expired. Keys are not rotated by keyturn; new versions are its own doing.
    pub const ROTATION_TRIGGERS: [KeyVaultEventKind; 4] = [
        Self::SecretNearExpiry,
        Self::SecretExpired,
        Self::CertificateNearExpiry,
        Self::CertificateExpired,
    ];

    /// The kind named by an event type, matched without case.
    pub fn from_event_type(event_type: &str) -> Self {
        let event_type = event_type.trim();
        KNOWN_KINDS
            .iter()
            .find(|(_, wire)| wire.eq_ignore_ascii_case(event_type))
            .map_or_else(
                || Self::Other(event_type.to_owned()),
                |(kind, _)| kind.clone(),
            )
    }

    /// The event type as it appears on the wire.
    pub fn event_type(&self) -> &str {
        match self {
            Self::Other(event_type) => event_type,
            known => KNOWN_KINDS
                .iter()
                .find(|(kind, _)| kind == known)
                .map_or("", |(_, wire)| wire),
        }
    }

    pub(crate) fn triggers_rotation(&self) -> bool {
        Self::ROTATION_TRIGGERS.contains(self)
    }

    /// Whether the event type names a Key Vault event at all.
    #[cfg(test)]
    pub(crate) fn is_key_vault(&self) -> bool {
        self.event_type()
            .get(..EVENT_TYPE_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(EVENT_TYPE_PREFIX))
    }

    /// The object type this kind of event is about, for the known object events.
    pub(crate) fn object_type(&self) -> Option<ObjectType> {
        match self {
            Self::SecretNewVersionCreated | Self::SecretNearExpiry | Self::SecretExpired => {
                Some(ObjectType::Secret)
            }
            Self::CertificateNewVersionCreated
            | Self::CertificateNearExpiry
            | Self::CertificateExpired => Some(ObjectType::Certificate),
            Self::KeyNewVersionCreated | Self::KeyNearExpiry | Self::KeyExpired => {
                Some(ObjectType::Key)
            }
            Self::VaultAccessPolicyChanged | Self::Other(_) => None,
        }
    }
}

impl fmt::Display for KeyVaultEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.event_type())
    }
}

/// The envelope schema an event arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventSchema {
    /// Event Grid schema: `eventType`, `topic`, `subject`, `eventTime`, `data`.
    EventGrid,
    /// CloudEvents 1.0: `type`, `source`, `subject`, `time`, `data`, `specversion`.
    CloudEvents,
}

/// The secret, certificate or key an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultObject {
    pub object_type: ObjectType,
    pub name: ObjectName,
    pub version: ObjectVersion,
    /// The object's id URL, when the event carried one.
    pub id: Option<ObjectId>,
}

/// What an event is about: one object, or the vault itself (access policy changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventTarget {
    Object(Box<KeyVaultObject>),
    Vault,
}

/// One Key Vault event, whichever schema and casing it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultEvent {
    id: String,
    kind: KeyVaultEventKind,
    vault: VaultName,
    target: EventTarget,
    not_before: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
    event_time: Option<DateTime<Utc>>,
    schema: EventSchema,
}

/// Why an event was refused. Names the field, never echoes its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyVaultEventError {
    #[error("event delivery is not JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("an event should be a JSON object, found {found}")]
    NotAnEvent { found: &'static str },
    #[error(
        "event has neither `eventType` (Event Grid schema) nor `type` with `specversion` (CloudEvents)"
    )]
    UnknownSchema,
    #[error("event is an Event Grid subscription validation, not a Key Vault event")]
    SubscriptionValidation,
    #[error("event is missing `{field}`")]
    MissingField { field: &'static str },
    #[error("event {0}")]
    Field(#[from] FieldError),
    #[error("event field `{field}` is invalid: {source}")]
    InvalidName {
        field: &'static str,
        #[source]
        source: NameError,
    },
    #[error("event `Id` disagrees with `{field}`")]
    IdMismatch { field: &'static str },
    #[error("event delivery is an empty array")]
    EmptyBatch,
    #[error("event delivery holds {len} events, over the {limit}-event limit")]
    BatchTooLarge { len: usize, limit: usize },
    #[error("event {index} of the delivery: {source}")]
    InBatch {
        index: usize,
        #[source]
        source: Box<KeyVaultEventError>,
    },
}

impl KeyVaultEvent {
    /// Reads one event (an object, or an object inside a JSON string).
    pub fn parse(value: &Value) -> Result<Self, KeyVaultEventError> {
        let value = tolerant::unwrap_json(value);
        let fields = Fields::of(&value).ok_or(KeyVaultEventError::NotAnEvent {
            found: tolerant::kind(&value),
        })?;
        let schema = schema_of(&fields)?;
        let (type_key, time_key, source_key) = match schema {
            EventSchema::EventGrid => ("eventType", "eventTime", "topic"),
            EventSchema::CloudEvents => ("type", "time", "source"),
        };
        let event_type = fields
            .string(type_key)?
            .ok_or(KeyVaultEventError::MissingField { field: type_key })?;
        if event_type.eq_ignore_ascii_case(SUBSCRIPTION_VALIDATION_EVENT) {
            return Err(KeyVaultEventError::SubscriptionValidation);
        }
        let kind = KeyVaultEventKind::from_event_type(&event_type);
        let id = fields
            .string("id")?
            .filter(|id| !id.is_empty())
            .ok_or(KeyVaultEventError::MissingField { field: "id" })?;
        let event_time = fields.time(time_key)?;
        let data = fields
            .object("data")?
            .ok_or(KeyVaultEventError::MissingField { field: "data" })?;
        let data = Fields::new(&data);

        let vault_text = match data.string("VaultName")? {
            Some(name) => name,
            None => fields
                .string(source_key)?
                .and_then(|source| vault_of_resource_id(&source))
                .ok_or(KeyVaultEventError::MissingField { field: "VaultName" })?,
        };
        let vault =
            VaultName::parse(&vault_text).map_err(|source| KeyVaultEventError::InvalidName {
                field: "VaultName",
                source,
            })?;

        let object_type = match data.string("ObjectType")? {
            Some(text) if text.eq_ignore_ascii_case("Vault") => None,
            Some(text) => Some(ObjectType::parse(&text).map_err(|source| {
                KeyVaultEventError::InvalidName {
                    field: "ObjectType",
                    source,
                }
            })?),
            None => match kind {
                KeyVaultEventKind::VaultAccessPolicyChanged => None,
                _ => Some(kind.object_type().ok_or(KeyVaultEventError::MissingField {
                    field: "ObjectType",
                })?),
            },
        };

        let target = match object_type {
            None => EventTarget::Vault,
            Some(object_type) => {
                EventTarget::Object(Box::new(parse_object(&fields, &data, object_type, &vault)?))
            }
        };

        Ok(Self {
            id,
            kind,
            vault,
            target,
            not_before: data.unix_time("NBF")?,
            expires: data.unix_time("EXP")?,
            event_time,
            schema,
        })
    }

    /// Reads a delivery: one event, or an array of events (either possibly inside a
    /// JSON string). Refuses the whole delivery if any event is malformed, naming it.
    pub fn parse_all(value: &Value) -> Result<Vec<Self>, KeyVaultEventError> {
        match tolerant::unwrap_json(value) {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(KeyVaultEventError::EmptyBatch);
                }
                if items.len() > MAX_EVENTS_PER_DELIVERY {
                    return Err(KeyVaultEventError::BatchTooLarge {
                        len: items.len(),
                        limit: MAX_EVENTS_PER_DELIVERY,
                    });
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| {
                        Self::parse(item).map_err(|source| KeyVaultEventError::InBatch {
                            index,
                            source: Box::new(source),
                        })
                    })
                    .collect()
            }
            single => Self::parse(&single).map(|event| vec![event]),
        }
    }

    /// [`KeyVaultEvent::parse_all`] over raw bytes.
    #[cfg(test)]
    pub(crate) fn parse_slice(bytes: &[u8]) -> Result<Vec<Self>, KeyVaultEventError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|error| KeyVaultEventError::NotJson {
                line: error.line(),
                column: error.column(),
            })?;
        Self::parse_all(&value)
    }

    #[cfg(test)]
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub fn kind(&self) -> &KeyVaultEventKind {
        &self.kind
    }

    pub fn vault(&self) -> &VaultName {
        &self.vault
    }

    #[cfg(test)]
    pub(crate) fn target(&self) -> &EventTarget {
        &self.target
    }

    /// The object the event is about; `None` for vault-level events.
    pub(crate) fn object(&self) -> Option<&KeyVaultObject> {
        match &self.target {
            EventTarget::Object(object) => Some(object),
            EventTarget::Vault => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn object_type(&self) -> Option<ObjectType> {
        self.object().map(|object| object.object_type)
    }

    pub fn object_name(&self) -> Option<&ObjectName> {
        self.object().map(|object| &object.name)
    }

    pub fn version(&self) -> Option<&ObjectVersion> {
        self.object().map(|object| &object.version)
    }

    pub fn object_id(&self) -> Option<&ObjectId> {
        self.object().and_then(|object| object.id.as_ref())
    }

    /// The object version's not-before time (`NBF`).
    #[cfg(test)]
    pub(crate) fn not_before(&self) -> Option<DateTime<Utc>> {
        self.not_before
    }

    /// The object version's expiry time (`EXP`).
    pub fn expires(&self) -> Option<DateTime<Utc>> {
        self.expires
    }

    /// When Key Vault raised the event (`eventTime` or `time`; optional in CloudEvents).
    #[cfg(test)]
    pub(crate) fn event_time(&self) -> Option<DateTime<Utc>> {
        self.event_time
    }

    #[cfg(test)]
    pub(crate) fn schema(&self) -> EventSchema {
        self.schema
    }

    pub fn triggers_rotation(&self) -> bool {
        self.kind.triggers_rotation()
    }

    /// The object whose version should be planned for rotation: `Some` only for an event
    /// that triggers rotation ([`KeyVaultEventKind::ROTATION_TRIGGERS`]) about an object.
    /// The one place events are filtered for rotation.
    pub fn rotation_trigger(&self) -> Option<&KeyVaultObject> {
        self.object().filter(|_| self.triggers_rotation())
    }
}

fn schema_of(fields: &Fields<'_>) -> Result<EventSchema, KeyVaultEventError> {
    if fields.contains("specversion") {
        Ok(EventSchema::CloudEvents)
    } else if fields.contains("eventType") {
        Ok(EventSchema::EventGrid)
    } else if fields.contains("type") && fields.contains("source") {
        Ok(EventSchema::CloudEvents)
    } else {
        Err(KeyVaultEventError::UnknownSchema)
    }
}

fn parse_object(
    fields: &Fields<'_>,
    data: &Fields<'_>,
    object_type: ObjectType,
    vault: &VaultName,
) -> Result<KeyVaultObject, KeyVaultEventError> {
    // Key Vault sets the subject to the object name; use it when data lacks one.
    let name_text = match data.string("ObjectName")? {
        Some(name) => name,
        None => fields
            .string("subject")?
            .ok_or(KeyVaultEventError::MissingField {
                field: "ObjectName",
            })?,
    };
    let name = ObjectName::parse(&name_text).map_err(|source| KeyVaultEventError::InvalidName {
        field: "ObjectName",
        source,
    })?;
    let version_text = data
        .string("Version")?
        .ok_or(KeyVaultEventError::MissingField { field: "Version" })?;
    let version =
        ObjectVersion::parse(&version_text).map_err(|source| KeyVaultEventError::InvalidName {
            field: "Version",
            source,
        })?;
    let id = data
        .string("Id")?
        .filter(|text| !text.is_empty())
        .map(|text| ObjectId::parse(&text))
        .transpose()
        .map_err(|source| KeyVaultEventError::InvalidName {
            field: "Id",
            source,
        })?;
    if let Some(id) = &id {
        if id.object_type() != object_type {
            return Err(KeyVaultEventError::IdMismatch {
                field: "ObjectType",
            });
        }
        if !id.name().matches(&name) {
            return Err(KeyVaultEventError::IdMismatch {
                field: "ObjectName",
            });
        }
        if id
            .version()
            .is_some_and(|id_version| id_version != &version)
        {
            return Err(KeyVaultEventError::IdMismatch { field: "Version" });
        }
        if id
            .vault()
            .vault_name()
            .is_some_and(|id_vault| id_vault != vault)
        {
            return Err(KeyVaultEventError::IdMismatch { field: "VaultName" });
        }
    }
    Ok(KeyVaultObject {
        object_type,
        name,
        version,
        id,
    })
}

/// The vault name at the end of an ARM resource id (`.../providers/Microsoft.KeyVault/vaults/{name}`).
fn vault_of_resource_id(resource_id: &str) -> Option<String> {
    let mut segments = resource_id.trim_end_matches('/').rsplit('/');
    let name = segments.next()?;
    let collection = segments.next()?;
    collection
        .eq_ignore_ascii_case("vaults")
        .then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::json;

    use super::*;

    const VERSION: &str = "ee059b2bb5bc48398a53b168c6cdcb10";
    const NBF: i64 = 1_559_081_980;
    const EXP: i64 = 1_559_082_102;
    /// 2019-07-25T01:08:33.1036736Z, the fixtures' event time.
    const EVENT_TIME_MICROS: i64 = 1_564_016_913_103_673;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/keyvault-events/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes =
            fs::read(&path).unwrap_or_else(|error| panic!("fixture {path} is readable: {error}"));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|error| panic!("fixture {path} is JSON: {error}"))
    }

    fn assert_fixture(
        name: &str,
        kind: KeyVaultEventKind,
        object_type: ObjectType,
        object_name: &str,
        schema: EventSchema,
    ) {
        let events = KeyVaultEvent::parse_all(&fixture(name))
            .unwrap_or_else(|error| panic!("{name} decodes: {error}"));
        assert_eq!(events.len(), 1, "{name}");
        let event = &events[0];
        assert_eq!(event.id(), "00eccf70-95a7-4e7c-8299-2eb17ee9ad64", "{name}");
        assert_eq!(event.kind(), &kind, "{name}");
        assert_eq!(event.vault().as_str(), "sample-kv", "{name}");
        assert_eq!(event.object_type(), Some(object_type), "{name}");
        assert_eq!(
            event.object_name().map(ObjectName::as_str),
            Some(object_name),
            "{name}"
        );
        assert_eq!(
            event.version().map(ObjectVersion::as_str),
            Some(VERSION),
            "{name}"
        );
        assert_eq!(
            event.not_before().map(|t| t.timestamp()),
            Some(NBF),
            "{name}"
        );
        assert_eq!(event.expires().map(|t| t.timestamp()), Some(EXP), "{name}");
        assert_eq!(
            event.event_time().map(|t| t.timestamp_micros()),
            Some(EVENT_TIME_MICROS),
            "{name}"
        );
        assert_eq!(event.schema(), schema, "{name}");
        assert_eq!(
            event.object_id().map(ToString::to_string),
            Some(format!(
                "https://sample-kv.vault.azure.net/{}/{object_name}/{VERSION}",
                object_type.collection()
            )),
            "{name}"
        );
        assert_eq!(
            event.triggers_rotation(),
            kind.triggers_rotation(),
            "{name}"
        );
        assert_eq!(
            event.rotation_trigger().map(|object| &object.name),
            event.object_name().filter(|_| kind.triggers_rotation()),
            "{name}"
        );
    }

    #[test]
    fn the_official_event_grid_example_decodes() {
        assert_fixture(
            "eventgrid-schema.secret_new_version_created.json",
            KeyVaultEventKind::SecretNewVersionCreated,
            ObjectType::Secret,
            "newsecret",
            EventSchema::EventGrid,
        );
    }

    #[test]
    fn the_official_cloudevents_example_decodes() {
        assert_fixture(
            "cloudevents-schema.secret_new_version_created.json",
            KeyVaultEventKind::SecretNewVersionCreated,
            ObjectType::Secret,
            "newsecret",
            EventSchema::CloudEvents,
        );
    }

    #[test]
    fn the_legacy_casing_array_with_stray_spaces_decodes_trimmed() {
        assert_fixture(
            "docs-legacy-casing.secret_new_version_created.array.json",
            KeyVaultEventKind::SecretNewVersionCreated,
            ObjectType::Secret,
            "newsecret",
            EventSchema::EventGrid,
        );
    }

    #[test]
    fn the_derived_expiry_events_decode_in_both_schemas() {
        for (schema_name, schema) in [
            ("eventgrid-schema", EventSchema::EventGrid),
            ("cloudevents-schema", EventSchema::CloudEvents),
        ] {
            for (kind_name, kind, object_type, object_name) in [
                (
                    "SecretNearExpiry",
                    KeyVaultEventKind::SecretNearExpiry,
                    ObjectType::Secret,
                    "newsecret",
                ),
                (
                    "SecretExpired",
                    KeyVaultEventKind::SecretExpired,
                    ObjectType::Secret,
                    "newsecret",
                ),
                (
                    "CertificateNearExpiry",
                    KeyVaultEventKind::CertificateNearExpiry,
                    ObjectType::Certificate,
                    "newcert",
                ),
                (
                    "CertificateExpired",
                    KeyVaultEventKind::CertificateExpired,
                    ObjectType::Certificate,
                    "newcert",
                ),
            ] {
                assert!(kind.triggers_rotation());
                assert_fixture(
                    &format!("DERIVED.{schema_name}.{kind_name}.json"),
                    kind,
                    object_type,
                    object_name,
                    schema,
                );
            }
        }
    }

    #[test]
    fn every_fixture_in_the_folder_decodes() {
        let folder = format!(
            "{}/tests/fixtures/keyvault-events",
            env!("CARGO_MANIFEST_DIR")
        );
        let entries = fs::read_dir(&folder).unwrap_or_else(|error| panic!("{folder}: {error}"));
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("directory entry is readable").path();
            let bytes = fs::read(&path).expect("fixture is readable");
            let events = KeyVaultEvent::parse_slice(&bytes)
                .unwrap_or_else(|error| panic!("{} decodes: {error}", path.display()));
            assert!(!events.is_empty());
            count += 1;
        }
        assert_eq!(count, 11, "every fixture in {folder} was read");
    }

    #[test]
    fn event_kinds_round_trip_through_their_wire_names() {
        for (kind, wire) in KNOWN_KINDS.iter() {
            assert_eq!(kind.event_type(), *wire);
            assert_eq!(
                &KeyVaultEventKind::from_event_type(&wire.to_ascii_lowercase()),
                kind
            );
            assert!(kind.is_key_vault());
        }
        let other = KeyVaultEventKind::from_event_type(" Microsoft.Storage.BlobCreated ");
        assert_eq!(
            other,
            KeyVaultEventKind::Other("Microsoft.Storage.BlobCreated".into())
        );
        assert_eq!(other.event_type(), "Microsoft.Storage.BlobCreated");
        assert!(!other.triggers_rotation());
        assert!(!other.is_key_vault());
        assert!(!KeyVaultEventKind::SecretNewVersionCreated.triggers_rotation());
        assert!(!KeyVaultEventKind::KeyNearExpiry.triggers_rotation());
    }

    fn base_event() -> Value {
        fixture("eventgrid-schema.secret_new_version_created.json")
    }

    fn with_data(key: &str, value: Value) -> Value {
        let mut event = base_event();
        event["data"][key] = value;
        event
    }

    fn without_data(key: &str) -> Value {
        let mut event = base_event();
        if let Some(data) = event["data"].as_object_mut() {
            data.remove(key);
        }
        event
    }

    #[test]
    fn nbf_and_exp_may_be_numbers_strings_or_null() {
        let event = KeyVaultEvent::parse(&with_data("EXP", json!(EXP))).expect("number accepted");
        assert_eq!(event.expires().map(|t| t.timestamp()), Some(EXP));
        let event = KeyVaultEvent::parse(&with_data("EXP", Value::Null)).expect("null accepted");
        assert_eq!(event.expires(), None);
        let event = KeyVaultEvent::parse(&with_data("NBF", json!(""))).expect("empty accepted");
        assert_eq!(event.not_before(), None);
    }

    #[test]
    fn an_event_inside_a_json_string_decodes() {
        let event =
            KeyVaultEvent::parse(&Value::String(base_event().to_string())).expect("decodes");
        assert_eq!(event.vault().as_str(), "sample-kv");
    }

    #[test]
    fn a_missing_vault_name_falls_back_to_the_topic() {
        let event =
            KeyVaultEvent::parse(&without_data("VaultName")).expect("topic names the vault");
        assert_eq!(event.vault().as_str(), "sample-kv");
    }

    #[test]
    fn vault_access_policy_changes_target_the_vault() {
        let event = json!({
            "id": "1", "eventType": "Microsoft.KeyVault.VaultAccessPolicyChanged",
            "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/sample-kv",
            "subject": "sample-kv", "eventTime": "2019-07-25T01:08:33Z",
            "data": {"Id": "https://sample-kv.vault.azure.net/", "VaultName": "sample-kv",
                     "ObjectType": "Vault", "ObjectName": "sample-kv", "Version": null, "NBF": null, "EXP": null}
        });
        let event = KeyVaultEvent::parse(&event).expect("decodes");
        assert_eq!(event.kind(), &KeyVaultEventKind::VaultAccessPolicyChanged);
        assert_eq!(event.target(), &EventTarget::Vault);
        assert_eq!(event.object(), None);
    }

    #[test]
    fn a_missing_object_name_is_named() {
        let mut event = without_data("ObjectName");
        if let Some(map) = event.as_object_mut() {
            map.remove("subject");
        }
        assert_eq!(
            KeyVaultEvent::parse(&event),
            Err(KeyVaultEventError::MissingField {
                field: "ObjectName"
            })
        );
    }

    #[test]
    fn a_bad_object_name_is_named() {
        assert!(matches!(
            KeyVaultEvent::parse(&with_data("ObjectName", json!("new_secret"))),
            Err(KeyVaultEventError::InvalidName {
                field: "ObjectName",
                ..
            })
        ));
    }

    #[test]
    fn a_bad_version_is_named() {
        assert!(matches!(
            KeyVaultEvent::parse(&with_data("Version", json!("latest"))),
            Err(KeyVaultEventError::InvalidName {
                field: "Version",
                ..
            })
        ));
    }

    #[test]
    fn a_missing_version_is_named() {
        assert_eq!(
            KeyVaultEvent::parse(&without_data("Version")),
            Err(KeyVaultEventError::MissingField { field: "Version" })
        );
    }

    #[test]
    fn an_unknown_object_type_is_named() {
        assert!(matches!(
            KeyVaultEvent::parse(&with_data("ObjectType", json!("StorageAccount"))),
            Err(KeyVaultEventError::InvalidName {
                field: "ObjectType",
                ..
            })
        ));
    }

    #[test]
    fn a_bad_vault_name_is_named() {
        assert!(matches!(
            KeyVaultEvent::parse(&with_data("VaultName", json!("bad--vault"))),
            Err(KeyVaultEventError::InvalidName {
                field: "VaultName",
                ..
            })
        ));
    }

    #[test]
    fn an_unparsable_expiry_is_named() {
        let error =
            KeyVaultEvent::parse(&with_data("EXP", json!({"when": 1}))).expect_err("object");
        assert!(matches!(&error, KeyVaultEventError::Field(field) if field.field() == "EXP"));
        let error = KeyVaultEvent::parse(&with_data("EXP", json!("soon"))).expect_err("text");
        assert!(error.to_string().contains("EXP"));
        assert!(!error.to_string().contains("soon"));
    }

    #[test]
    fn an_id_that_disagrees_with_the_name_is_refused() {
        assert_eq!(
            KeyVaultEvent::parse(&with_data(
                "Id",
                json!(format!(
                    "https://sample-kv.vault.azure.net/secrets/other/{VERSION}"
                ))
            )),
            Err(KeyVaultEventError::IdMismatch {
                field: "ObjectName"
            })
        );
        assert_eq!(
            KeyVaultEvent::parse(&with_data(
                "Id",
                json!(format!(
                    "https://other-kv.vault.azure.net/secrets/newsecret/{VERSION}"
                ))
            )),
            Err(KeyVaultEventError::IdMismatch { field: "VaultName" })
        );
    }

    #[test]
    fn an_unparsable_id_is_named() {
        assert!(matches!(
            KeyVaultEvent::parse(&with_data("Id", json!("not a url"))),
            Err(KeyVaultEventError::InvalidName { field: "Id", .. })
        ));
    }

    #[test]
    fn non_object_data_is_refused() {
        let mut event = base_event();
        event["data"] = json!([1, 2]);
        let error = KeyVaultEvent::parse(&event).expect_err("array data");
        assert!(matches!(&error, KeyVaultEventError::Field(field) if field.field() == "data"));
    }

    #[test]
    fn missing_data_is_named() {
        let mut event = base_event();
        if let Some(map) = event.as_object_mut() {
            map.remove("data");
        }
        assert_eq!(
            KeyVaultEvent::parse(&event),
            Err(KeyVaultEventError::MissingField { field: "data" })
        );
    }

    #[test]
    fn an_event_without_a_schema_is_refused() {
        assert_eq!(
            KeyVaultEvent::parse(&json!({"id": "1", "data": {}})),
            Err(KeyVaultEventError::UnknownSchema)
        );
        assert_eq!(
            KeyVaultEvent::parse(&json!(42)),
            Err(KeyVaultEventError::NotAnEvent { found: "a number" })
        );
    }

    #[test]
    fn a_subscription_validation_is_not_taken_for_a_key_vault_event() {
        let event = json!({"id": "1", "eventType": SUBSCRIPTION_VALIDATION_EVENT, "data": {"validationCode": "x"}});
        assert_eq!(
            KeyVaultEvent::parse(&event),
            Err(KeyVaultEventError::SubscriptionValidation)
        );
    }

    #[test]
    fn a_bad_event_in_a_batch_is_reported_by_index() {
        let batch = json!([base_event(), with_data("Version", json!("x"))]);
        assert!(matches!(
            KeyVaultEvent::parse_all(&batch),
            Err(KeyVaultEventError::InBatch { index: 1, .. })
        ));
        assert_eq!(
            KeyVaultEvent::parse_all(&json!([])),
            Err(KeyVaultEventError::EmptyBatch)
        );
        assert_eq!(
            KeyVaultEvent::parse_slice(b"[{"),
            Err(KeyVaultEventError::NotJson { line: 1, column: 2 })
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn arbitrary_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(|f| json!(f)),
                ".{0,40}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    proptest::collection::btree_map(
                        prop_oneof![
                            Just("id".to_owned()),
                            Just("eventType".to_owned()),
                            Just("type".to_owned()),
                            Just("specversion".to_owned()),
                            Just("data".to_owned()),
                            Just("VaultName".to_owned()),
                            Just("ObjectName".to_owned()),
                            Just("ObjectType".to_owned()),
                            Just("Version".to_owned()),
                            Just("NBF".to_owned()),
                            Just("EXP".to_owned()),
                            Just("Id".to_owned()),
                            ".{0,12}",
                        ],
                        inner,
                        0..10,
                    )
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn parsing_arbitrary_json_never_panics(value in arbitrary_json()) {
                let _ = KeyVaultEvent::parse_all(&value);
                let _ = KeyVaultEvent::parse(&Value::String(value.to_string()));
            }

            #[test]
            fn parsing_arbitrary_bytes_never_panics(text in ".{0,200}") {
                let _ = KeyVaultEvent::parse_slice(text.as_bytes());
            }

            #[test]
            fn arbitrary_data_fields_never_panic(key in prop_oneof![
                Just("VaultName"), Just("ObjectName"), Just("ObjectType"), Just("Version"),
                Just("NBF"), Just("EXP"), Just("Id")
            ], value in arbitrary_json()) {
                let _ = KeyVaultEvent::parse(&with_data(key, value));
            }
        }
    }
}
