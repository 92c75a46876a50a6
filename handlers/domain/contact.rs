//! Where a person is reached: an e-mail address that parses. Owners of applications
//! (their `mail` or `userPrincipalName`), a `keyturn-owner` tag and the sending mailbox
//! are all read into this type at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest address SMTP carries: a 256-octet path less its angle brackets
/// (RFC 5321 section 4.5.3.1.3).
pub const MAIL_ADDRESS_MAX_LEN: usize = 254;

/// Why an address was refused. Messages name the rule broken, never the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContactError {
    #[error("a mail address must be 3 to {MAIL_ADDRESS_MAX_LEN} characters, found {len}")]
    Length { len: usize },
    #[error("a mail address needs exactly one @ with text on both sides")]
    Shape,
    #[error("a mail address may not contain spaces, control characters, quotes or angle brackets")]
    Character,
    #[error("a mail address's domain must contain a dot and no empty label")]
    Domain,
}

/// An e-mail address of the plain `local@domain.tld` form Entra stores in `mail` and
/// `userPrincipalName`. Quoted local parts and address literals are refused: they are
/// not what a directory holds, and refusing them keeps the address safe to put in a
/// Graph request or a card.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MailAddress(String);

impl MailAddress {
    pub fn parse(text: &str) -> Result<Self, ContactError> {
        let text = text.trim();
        let len = text.chars().count();
        if !(3..=MAIL_ADDRESS_MAX_LEN).contains(&len) {
            return Err(ContactError::Length { len });
        }
        if text.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>' | ',' | ';')
        }) {
            return Err(ContactError::Character);
        }
        let (local, domain) = text.split_once('@').ok_or(ContactError::Shape)?;
        if local.is_empty() || domain.is_empty() || domain.contains('@') {
            return Err(ContactError::Shape);
        }
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return Err(ContactError::Domain);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MailAddress {
    type Err = ContactError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailAddress({})", self.0)
    }
}

impl Serialize for MailAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MailAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_parse_and_keep_their_text() {
        for text in [
            "alice@contoso.com",
            "ops-team+kv@sub.contoso.co.uk",
            " bob@x.io ",
        ] {
            let address = MailAddress::parse(text).expect(text);
            assert_eq!(address.as_str(), text.trim());
        }
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_rule_broken() {
        let cases = [
            ("", ContactError::Length { len: 0 }),
            ("alice", ContactError::Shape),
            ("@contoso.com", ContactError::Shape),
            ("alice@", ContactError::Shape),
            ("a@b@contoso.com", ContactError::Shape),
            ("alice@localhost", ContactError::Domain),
            ("alice@contoso..com", ContactError::Domain),
            ("alice smith@contoso.com", ContactError::Character),
            ("\"alice\"@contoso.com", ContactError::Character),
            ("alice@contoso.com>", ContactError::Character),
            ("a@b.c,d@e.f", ContactError::Character),
        ];
        for (text, expected) in cases {
            assert_eq!(MailAddress::parse(text), Err(expected), "{text:?}");
        }
        let long = format!("{}@contoso.com", "a".repeat(MAIL_ADDRESS_MAX_LEN));
        assert!(matches!(
            MailAddress::parse(&long),
            Err(ContactError::Length { .. })
        ));
    }
}
