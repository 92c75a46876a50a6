//! Names of the Azure resources keyturn talks to besides Key Vault: Table service tables,
//! Service Bus queues and namespaces. Settings and adapters parse through these types, so
//! `keyturn config check` and start-up apply one set of rules.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Table names are 3 to 63 characters (Table service "Understanding the Table service
/// data model", Table names).
pub(crate) const TABLE_NAME_MIN_LEN: usize = 3;
/// See [`TABLE_NAME_MIN_LEN`].
pub(crate) const TABLE_NAME_MAX_LEN: usize = 63;
/// Queue names are at most 260 characters (Service Bus naming rules for queues).
pub(crate) const QUEUE_NAME_MAX_LEN: usize = 260;

/// Why a resource name was refused. Messages name the rule broken, never the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceNameError {
    #[error("invalid table name: {problem}")]
    Table { problem: &'static str },
    #[error("invalid queue name: {problem}")]
    Queue { problem: &'static str },
    #[error("invalid Service Bus namespace: {problem}")]
    Namespace { problem: &'static str },
}

/// A table name as the service accepts it: 3 to 63 ASCII letters and digits, starting
/// with a letter, and not the reserved name `tables`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName(String);

impl TableName {
    pub fn parse(name: &str) -> Result<Self, ResourceNameError> {
        let problem = |problem| Err(ResourceNameError::Table { problem });
        if !(TABLE_NAME_MIN_LEN..=TABLE_NAME_MAX_LEN).contains(&name.len()) {
            return problem("must be 3 to 63 characters long");
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return problem("must hold only ASCII letters and digits");
        }
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return problem("must start with a letter");
        }
        if name.eq_ignore_ascii_case("tables") {
            return problem("`tables` is reserved");
        }
        Ok(Self(name.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Service Bus queue name: 1 to 260 letters, digits, '.', '-' and '_', starting and
/// ending with a letter or digit (Service Bus naming rules for queues).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueName(String);

impl QueueName {
    pub(crate) fn parse(name: &str) -> Result<Self, ResourceNameError> {
        let problem = |problem| Err(ResourceNameError::Queue { problem });
        if name.is_empty() || name.len() > QUEUE_NAME_MAX_LEN {
            return problem("must be 1 to 260 characters");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return problem("may hold only letters, digits, '.', '-' and '_'");
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return problem("must start and end with a letter or digit");
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Service Bus namespace's fully qualified host name, such as
/// `sb-keyturn.servicebus.windows.net`: no scheme, port, path or credentials, because
/// the Functions host's identity-based connection takes a bare host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceBusNamespace(String);

impl ServiceBusNamespace {
    pub(crate) fn parse(host: &str) -> Result<Self, ResourceNameError> {
        let problem = |problem| Err(ResourceNameError::Namespace { problem });
        let host = host.trim();
        if host.is_empty()
            || host.contains(['/', ':', '@', '?', '#'])
            || host.chars().any(char::is_whitespace)
        {
            return problem("must be a host name such as sb-keyturn.servicebus.windows.net");
        }
        let labels_ok = host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !host.contains('.') || !labels_ok {
            return problem("is not a fully qualified host name");
        }
        Ok(Self(host.to_ascii_lowercase()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_type {
    ($type:ty) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $type {
            type Err = ResourceNameError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

text_type!(TableName);
text_type!(QueueName);
text_type!(ServiceBusNamespace);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_the_service_rules() {
        assert!(TableName::parse("audit2025").is_ok());
        for bad in [
            "ab",
            "1audit",
            "audit-log",
            "tables",
            "Tables",
            &"a".repeat(64),
            "audit log",
        ] {
            assert!(
                matches!(TableName::parse(bad), Err(ResourceNameError::Table { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn queue_names_follow_the_service_bus_rules() {
        assert!(QueueName::parse("rotations").is_ok());
        assert!(QueueName::parse("a.b-c_d").is_ok());
        for bad in [
            "",
            "-rotations",
            "rot/ations",
            "rotations-",
            &"q".repeat(261),
        ] {
            assert!(
                matches!(QueueName::parse(bad), Err(ResourceNameError::Queue { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn a_namespace_is_a_bare_host_name() {
        assert_eq!(
            ServiceBusNamespace::parse("SB-One.servicebus.windows.net")
                .expect("a host")
                .as_str(),
            "sb-one.servicebus.windows.net"
        );
        for bad in [
            "",
            "https://sb.servicebus.windows.net",
            "sb.servicebus.windows.net:443",
            "sb/x",
            "sb x",
            "localhost",
            "sb..windows.net",
            "user@sb.servicebus.windows.net",
        ] {
            assert!(
                matches!(
                    ServiceBusNamespace::parse(bad),
                    Err(ResourceNameError::Namespace { .. })
                ),
                "{bad:?} should be refused"
            );
        }
    }
}
