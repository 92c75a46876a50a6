//! A secret value: cannot be printed, is zeroed on drop, and is exposed only through
//! one explicit call so that every use is easy to find in review.

use std::fmt;

use zeroize::Zeroizing;

const REDACTED: &str = "[redacted]";

/// A secret value. `Debug` and `Display` print `[redacted]`; it implements neither
/// `Serialize` nor `Clone`-to-string conversions, so it cannot reach a log line, an
/// error or an audit entry by accident. The only way to read it is [`SecretValue::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret itself. Call it only where the value leaves keyturn on purpose:
    /// a response body to an authorized caller, a request body to a secret store.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = SecretValue::new("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
    }

    #[test]
    fn expose_returns_the_value() {
        let secret = SecretValue::new("abc");
        assert_eq!(secret.expose(), "abc");
        assert_eq!(secret.len(), 3);
    }
}
