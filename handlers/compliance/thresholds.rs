//! The numbers some rules compare against: the longest lifetime each kind of credential
//! may have, how often a credential must be rotated, how many active credentials an
//! application may hold, how soon an expiry counts as "expiring", and how far back the
//! audit rules look. Each has a default that says where it comes from; each can be set
//! on the command line, and a bad value is refused naming the option.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use serde::Serialize;

use crate::domain::inventory::{CredentialKind, parse_within};

/// Why a threshold was refused. Each names the option and the value's problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdError {
    #[error(
        "--max-lifetime `{given}`: expected KIND=SPAN, KIND one of secret, certificate, key, password_credential, key_credential and SPAN like 365d"
    )]
    MaxLifetime { given: String },
    #[error("--{option} `{given}`: {problem}")]
    Value {
        option: &'static str,
        given: String,
        problem: String,
    },
}

/// The thresholds, with their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Thresholds {
    /// Longest validity (expiry minus start) per kind.
    #[serde(serialize_with = "days_map")]
    pub max_lifetime: BTreeMap<CredentialKind, TimeDelta>,
    /// Longest time since a credential's current version was created.
    #[serde(serialize_with = "days")]
    pub rotation_period: TimeDelta,
    /// Most active credentials (enabled and unexpired) one application may hold.
    pub credential_limit: u32,
    /// An expiry this close (or closer) is "expiring".
    #[serde(serialize_with = "days")]
    pub expiring_within: TimeDelta,
    /// The audit rules read entries stamped in the last `audit_period`.
    #[serde(serialize_with = "days")]
    pub audit_period: TimeDelta,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_lifetime: BTreeMap::from([
                // A year: the longest lifetime Microsoft's portal recommends for client
                // secrets, and a common ceiling for shared secrets.
                (CredentialKind::Secret, TimeDelta::days(365)),
                (CredentialKind::PasswordCredential, TimeDelta::days(365)),
                // 398 days: the CA/Browser Forum Baseline Requirements' maximum validity
                // for publicly trusted TLS certificates (since 1 September 2020).
                (CredentialKind::Certificate, TimeDelta::days(398)),
                (CredentialKind::KeyCredential, TimeDelta::days(398)),
                // Two years: the key lifetime CIS 8.8 recommends, after NIST SP 800-57
                // Part 1's suggested cryptoperiods.
                (CredentialKind::Key, TimeDelta::days(730)),
            ]),
            // A year: PCI DSS 8.6.3 leaves the frequency to a targeted risk analysis;
            // yearly is the most common outcome and the longest any framework here accepts.
            rotation_period: TimeDelta::days(365),
            // Two: the current credential and the next one while a rotation overlaps them.
            credential_limit: 2,
            // Thirty days: Key Vault raises NearExpiry thirty days ahead, and Entra's
            // recommendations flag credentials expiring within 30 days.
            expiring_within: TimeDelta::days(30),
            // Thirty days: a monthly review, the period an evidence export usually covers.
            audit_period: TimeDelta::days(30),
        }
    }
}

impl Thresholds {
    /// Applies one `--max-lifetime KIND=SPAN`.
    pub fn set_max_lifetime(&mut self, given: &str) -> Result<(), ThresholdError> {
        let refused = || ThresholdError::MaxLifetime {
            given: given.chars().take(64).collect(),
        };
        let (kind, span) = given.split_once('=').ok_or_else(refused)?;
        let kind = CredentialKind::parse(kind.trim()).map_err(|_| refused())?;
        let span = positive("max-lifetime", span)?;
        self.max_lifetime.insert(kind, span);
        Ok(())
    }

    pub fn set_rotation_period(&mut self, given: &str) -> Result<(), ThresholdError> {
        self.rotation_period = positive("rotation-period", given)?;
        Ok(())
    }

    pub fn set_expiring_within(&mut self, given: &str) -> Result<(), ThresholdError> {
        self.expiring_within = parse_within(given).map_err(|e| value("expiring", given, e))?;
        Ok(())
    }

    pub fn set_audit_period(&mut self, given: &str) -> Result<(), ThresholdError> {
        self.audit_period = positive("period", given)?;
        Ok(())
    }

    pub fn set_credential_limit(&mut self, given: &str) -> Result<(), ThresholdError> {
        self.credential_limit = given
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=1000).contains(limit))
            .ok_or_else(|| value("credential-limit", given, "a whole number from 1 to 1000"))?;
        Ok(())
    }
}

fn positive(option: &'static str, given: &str) -> Result<TimeDelta, ThresholdError> {
    let span = parse_within(given).map_err(|e| value(option, given, e))?;
    if span <= TimeDelta::zero() {
        return Err(value(option, given, "must be longer than zero"));
    }
    Ok(span)
}

fn value(option: &'static str, given: &str, problem: impl ToString) -> ThresholdError {
    ThresholdError::Value {
        option,
        given: given.chars().take(64).collect(),
        problem: problem.to_string(),
    }
}

fn days<S: serde::Serializer>(span: &TimeDelta, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_span(*span))
}

fn days_map<S: serde::Serializer>(
    spans: &BTreeMap<CredentialKind, TimeDelta>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(spans.len()))?;
    for (kind, span) in spans {
        map.serialize_entry(kind.as_str(), &format_span(*span))?;
    }
    map.end()
}

/// A span as the options take it: whole days (`30d`), else hours (`12h`).
pub fn format_span(span: TimeDelta) -> String {
    if span.num_hours() % 24 == 0 {
        format!("{}d", span.num_days())
    } else {
        format!("{}h", span.num_hours())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_the_defaults() {
        let mut thresholds = Thresholds::default();
        thresholds.set_max_lifetime("secret=90d").expect("valid");
        thresholds.set_rotation_period("180d").expect("valid");
        thresholds.set_credential_limit("3").expect("valid");
        thresholds.set_expiring_within("14d").expect("valid");

        assert_eq!(
            thresholds.max_lifetime[&CredentialKind::Secret],
            TimeDelta::days(90)
        );
        assert_eq!(
            thresholds.max_lifetime[&CredentialKind::Key],
            TimeDelta::days(730)
        );
        assert_eq!(thresholds.rotation_period, TimeDelta::days(180));
        assert_eq!(thresholds.credential_limit, 3);
        assert_eq!(thresholds.expiring_within, TimeDelta::days(14));
    }

    #[test]
    fn bad_values_are_refused_naming_the_option() {
        let mut thresholds = Thresholds::default();
        let cases: [(&str, Result<(), ThresholdError>); 6] = [
            ("max-lifetime", thresholds.set_max_lifetime("secrets=90d")),
            ("max-lifetime", thresholds.set_max_lifetime("secret")),
            ("max-lifetime", thresholds.set_max_lifetime("secret=0d")),
            ("rotation-period", thresholds.set_rotation_period("a year")),
            ("credential-limit", thresholds.set_credential_limit("0")),
            ("period", thresholds.set_audit_period("-3d")),
        ];
        for (option, result) in cases {
            let error = result.expect_err(option).to_string();
            assert!(error.starts_with(&format!("--{option}")), "{error}");
        }
        assert_eq!(thresholds, Thresholds::default(), "nothing half-applied");
    }

    #[test]
    fn spans_print_as_the_options_take_them() {
        assert_eq!(format_span(TimeDelta::days(30)), "30d");
        assert_eq!(format_span(TimeDelta::hours(36)), "36h");
    }
}
