//! Name patterns of the access policy: literal text with `*` standing for any run of
//! characters, compared without ASCII case (Key Vault names and DNS names are
//! case-insensitive, and so are the distinguished-name attribute values operators write).

use std::fmt;

use crate::domain::names::OBJECT_NAME_MAX_LEN;

/// The longest pattern accepted. Distinguished names and SANs stay far below this;
/// the limit keeps a mistaken policy (a pasted certificate) from being taken as a name.
pub(crate) const MAX_PATTERN_LEN: usize = 1024;

/// Why text is not a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern is {length} characters; at most {MAX_PATTERN_LEN} are accepted")]
    TooLong { length: usize },
    #[error("pattern holds a control character")]
    ControlCharacter,
    #[error(
        "secret pattern has {found:?} at position {position}; only letters, digits, '-' and '*' are allowed"
    )]
    NotASecretName { position: usize, found: char },
    #[error("secret pattern is longer than a secret name (127 characters)")]
    SecretPatternTooLong,
}

/// A `*` glob, matched without ASCII case.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    text: String,
    /// The literal pieces between stars, lowercased.
    pieces: Vec<String>,
    leading_star: bool,
    trailing_star: bool,
}

impl Pattern {
    /// Any text pattern (subjects, SANs, issuers).
    pub(crate) fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.chars().count() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong {
                length: text.chars().count(),
            });
        }
        if text.chars().any(char::is_control) {
            return Err(PatternError::ControlCharacter);
        }
        let pieces = text.split('*').map(|p| p.to_ascii_lowercase()).collect();
        Ok(Self {
            text: text.to_owned(),
            pieces,
            leading_star: text.starts_with('*'),
            trailing_star: text.ends_with('*'),
        })
    }

    /// A pattern over secret names: Key Vault name characters and `*` only.
    pub(crate) fn parse_secret(text: &str) -> Result<Self, PatternError> {
        if let Some((position, found)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '*')))
        {
            return Err(PatternError::NotASecretName { position, found });
        }
        if text.chars().filter(|c| *c != '*').count() > OBJECT_NAME_MAX_LEN {
            return Err(PatternError::SecretPatternTooLong);
        }
        Self::parse(text)
    }

    /// Whether `candidate` matches the whole pattern.
    pub(crate) fn matches(&self, candidate: &str) -> bool {
        let candidate = candidate.to_ascii_lowercase();
        let mut rest = candidate.as_str();
        let last = self.pieces.len() - 1;
        for (index, piece) in self.pieces.iter().enumerate() {
            if index == 0 && !self.leading_star {
                let Some(after) = rest.strip_prefix(piece.as_str()) else {
                    return false;
                };
                rest = after;
                if last == 0 {
                    return rest.is_empty();
                }
            } else if index == last && !self.trailing_star {
                return rest.ends_with(piece.as_str());
            } else if !piece.is_empty() {
                // Leftmost match is enough for a `*`-only glob: taking the earliest
                // occurrence leaves the most text for the pieces that follow.
                let Some(at) = rest.find(piece.as_str()) else {
                    return false;
                };
                rest = &rest[at + piece.len()..];
            }
        }
        true
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, candidate: &str) -> bool {
        Pattern::parse(pattern).expect("valid").matches(candidate)
    }

    #[test]
    fn literal_patterns_match_only_themselves_without_case() {
        assert!(matches("db-password", "DB-Password"));
        assert!(!matches("db-password", "db-password2"));
        assert!(!matches("db-password", "xdb-password"));
    }

    #[test]
    fn stars_match_any_run_of_characters() {
        assert!(matches("wifi-*", "wifi-"));
        assert!(matches("wifi-*", "wifi-office"));
        assert!(!matches("wifi-*", "wif"));
        assert!(matches("*-token", "npm-token"));
        assert!(!matches("*-token", "npm-token-old"));
        assert!(matches("a*b*c", "a-b-b-c"));
        assert!(!matches("a*b*c", "a-c-b"));
        assert!(matches("*", ""));
        assert!(matches("CN=*, O=Contoso", "CN=laptop-7, O=Contoso"));
        assert!(!matches("ab*ba", "aba"));
        assert!(matches("ab*ba", "abba"));
    }

    #[test]
    fn secret_patterns_allow_only_name_characters_and_stars() {
        assert!(Pattern::parse_secret("ci-*").is_ok());
        assert!(matches!(
            Pattern::parse_secret("ci_*"),
            Err(PatternError::NotASecretName { position: 2, .. })
        ));
        assert!(Pattern::parse_secret(&"a".repeat(128)).is_err());
    }

    #[test]
    fn empty_and_control_patterns_are_refused() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert_eq!(Pattern::parse("a\nb"), Err(PatternError::ControlCharacter));
        assert!(matches!(
            Pattern::parse(&"a".repeat(MAX_PATTERN_LEN + 1)),
            Err(PatternError::TooLong { .. })
        ));
    }
}
