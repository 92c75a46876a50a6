//! Entra identifiers: application (client) ids, object ids, credential key ids and
//! device ids are all GUIDs, each its own type so one is never passed for another.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not a GUID (expected the form 00000000-0000-0000-0000-000000000000)")]
pub struct IdError {
    pub what: &'static str,
}

macro_rules! guid_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, IdError> {
                // Only the hyphenated form: it is the only one Entra and Graph emit, and
                // accepting braces or URNs would let two spellings name one object.
                let text = text.trim();
                if text.len() != 36 {
                    return Err(IdError { what: $what });
                }
                Uuid::parse_str(text).map(Self).map_err(|_| IdError { what: $what })
            }

            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

guid_newtype!(
    /// An application's appId (client id), as in `keyturn-app-id`.
    AppId,
    "application id"
);
guid_newtype!(
    /// A directory object's id (an application object, a service principal).
    DirectoryObjectId,
    "directory object id"
);
guid_newtype!(
    /// A password credential's keyId.
    KeyId,
    "credential key id"
);
guid_newtype!(
    /// An Entra device id (the deviceId property, also the device certificate's subject CN).
    DeviceId,
    "device id"
);
guid_newtype!(
    /// An Entra tenant id.
    TenantId,
    "tenant id"
);
guid_newtype!(
    /// An Azure subscription id.
    SubscriptionId,
    "subscription id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hyphenated_guid_parses_and_prints_lowercase() {
        let id = AppId::parse("6F1B7A7E-0B1C-4D2A-9E3F-0123456789AB").expect("valid");
        assert_eq!(id.to_string(), "6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab");
    }

    #[test]
    fn other_spellings_and_garbage_are_refused() {
        for bad in [
            "",
            "6f1b7a7e0b1c4d2a9e3f0123456789ab",
            "{6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab}",
            "urn:uuid:6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab",
            "6f1b7a7e-0b1c-4d2a-9e3f-0123456789ag",
            "not-a-guid",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_goes_through_parse() {
        let ok: DeviceId =
            serde_json::from_str("\"6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab\"").expect("valid");
        assert_eq!(ok.to_string(), "6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab");
        assert!(serde_json::from_str::<DeviceId>("\"nope\"").is_err());
    }
}
