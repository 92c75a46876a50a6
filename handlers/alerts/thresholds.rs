//! Thresholds: how many days before its expiry a credential is alerted on, and on expiry.
//! The default, 60, 30, 14, 7 and 1 days and on expiry, starts two months out (Entra's own
//! recommendations look only 30 days ahead, Key Vault's NearExpiry event fires once at 30
//! days) and tightens to daily in the last week.
//!
//! A credential is alerted at the tightest threshold it has crossed, once: one first seen
//! 10 days before expiry gets the 14-day alert, not the 60- and 30-day ones as well.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

/// `60,30,14,7,1,0`: `0` is "on expiry".
pub const DEFAULT_THRESHOLDS: &str = "60,30,14,7,1,0";

/// Furthest threshold accepted: ten years, past any credential policy.
pub const MAX_THRESHOLD_DAYS: u32 = 3650;

/// Why the thresholds setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdError {
    #[error(
        "thresholds are whole days from 0 (on expiry) to {MAX_THRESHOLD_DAYS}, comma separated; entry {index} is not"
    )]
    Entry { index: usize },
    #[error("at least one threshold is needed")]
    Empty,
}

/// One threshold: days before expiry, `0` for "on expiry".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u32);

impl Threshold {
    pub const ON_EXPIRY: Threshold = Threshold(0);

    pub fn days(self) -> u32 {
        self.0
    }

    pub fn is_expiry(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("on expiry"),
            1 => f.write_str("1 day"),
            n => write!(f, "{n} days"),
        }
    }
}

/// The configured thresholds, tightest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds(Vec<Threshold>);

impl Default for Thresholds {
    fn default() -> Self {
        Self::parse(DEFAULT_THRESHOLDS).expect("invariant: the default thresholds parse")
    }
}

/// `60,30,14,7,1,0`: furthest first, as the setting is written.
impl fmt::Display for Thresholds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<String> = self.0.iter().rev().map(|t| t.0.to_string()).collect();
        f.write_str(&days.join(","))
    }
}

impl Thresholds {
    /// Parses `60,30,14,7,1,0` (any order, duplicates folded).
    pub fn parse(text: &str) -> Result<Self, ThresholdError> {
        let mut days = Vec::new();
        for (index, entry) in text.split(',').map(str::trim).enumerate() {
            let valid = !entry.is_empty() && entry.bytes().all(|b| b.is_ascii_digit());
            let value: u32 = entry
                .parse()
                .ok()
                .filter(|d| valid && *d <= MAX_THRESHOLD_DAYS)
                .ok_or(ThresholdError::Entry { index: index + 1 })?;
            days.push(Threshold(value));
        }
        days.sort_unstable();
        days.dedup();
        if days.is_empty() {
            return Err(ThresholdError::Empty);
        }
        Ok(Self(days))
    }

    /// The furthest threshold: credentials expiring further out need no alert yet.
    pub fn horizon(&self) -> TimeDelta {
        let furthest = self.0.last().map_or(0, |t| t.0);
        TimeDelta::days(i64::from(furthest))
    }

    /// The tightest threshold a credential expiring at `expires` has crossed at `now`, or
    /// `None` when it has crossed none (or never expires). "On expiry" is crossed once
    /// `expires` has passed; when it is not configured, an expired credential stays at
    /// the tightest threshold it crossed.
    pub fn crossed(&self, expires: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<Threshold> {
        let left = expires? - now;
        if left <= TimeDelta::zero() && self.0.contains(&Threshold::ON_EXPIRY) {
            return Some(Threshold::ON_EXPIRY);
        }
        self.0
            .iter()
            .copied()
            .filter(|t| !t.is_expiry())
            .find(|t| left <= TimeDelta::days(i64::from(t.0)))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::strategy::Strategy;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, 6, 0, 0)
            .single()
            .expect("a time")
    }

    fn days(n: i64) -> Option<DateTime<Utc>> {
        Some(now() + TimeDelta::days(n))
    }

    #[test]
    fn the_tightest_crossed_threshold_is_the_one_alerted() {
        let thresholds = Thresholds::default();
        let cases = [
            (days(90), None),
            (days(60), Some(60)),
            (days(45), Some(60)),
            (days(10), Some(14)),
            (days(7), Some(7)),
            (Some(now() + TimeDelta::hours(20)), Some(1)),
            (Some(now()), Some(0)),
            (days(-3), Some(0)),
            (None, None),
        ];
        for (expires, expected) in cases {
            assert_eq!(
                thresholds.crossed(expires, now()).map(Threshold::days),
                expected,
                "{expires:?}"
            );
        }
    }

    #[test]
    fn without_an_on_expiry_threshold_an_expired_credential_stays_at_the_last_one() {
        let thresholds = Thresholds::parse("30, 7").expect("valid");
        assert_eq!(thresholds.crossed(days(-1), now()), Some(Threshold(7)));
        assert_eq!(thresholds.horizon(), TimeDelta::days(30));
    }

    proptest::proptest! {
        #[test]
        fn any_days_in_any_order_parse_sorted_and_folded(
            days in proptest::collection::vec(0..=MAX_THRESHOLD_DAYS, 1..12),
            padding in proptest::collection::vec(" {0,2}", 12),
        ) {
            let text = days
                .iter()
                .zip(&padding)
                .map(|(d, pad)| format!("{pad}{d}{pad}"))
                .collect::<Vec<_>>()
                .join(",");
            let expected: Vec<Threshold> = days
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(Threshold)
                .collect();

            let parsed = Thresholds::parse(&text).expect("valid thresholds");

            proptest::prop_assert_eq!(&parsed.0, &expected);
            let written = expected.iter().map(|t| t.0.to_string()).collect::<Vec<_>>();
            proptest::prop_assert_eq!(Thresholds::parse(&written.join(",")), Ok(parsed));
        }

        #[test]
        fn any_text_is_thresholds_or_refused_by_an_entry_it_has(text in ".{0,40}") {
            match Thresholds::parse(&text) {
                Ok(parsed) => {
                    proptest::prop_assert!(parsed.0.windows(2).all(|w| w[0] < w[1]));
                    proptest::prop_assert!(parsed.0.iter().all(|t| t.0 <= MAX_THRESHOLD_DAYS));
                    proptest::prop_assert!(!parsed.0.is_empty());
                }
                Err(ThresholdError::Entry { index }) => {
                    proptest::prop_assert!((1..=text.split(',').count()).contains(&index));
                }
                Err(error) => proptest::prop_assert!(false, "{error} for {text:?}"),
            }
        }

        #[test]
        fn a_day_past_the_limit_or_not_whole_is_refused(
            good in 0..=MAX_THRESHOLD_DAYS,
            bad in proptest::prop_oneof![
                (MAX_THRESHOLD_DAYS + 1..).prop_map(|d| d.to_string()),
                "-[0-9]{1,4}",
                "\\+[0-9]{1,4}",
                "[0-9]{1,3}\\.[0-9]",
                "[1-9][0-9]{10,30}",
                "[0-9]{1,3}d",
            ],
        ) {
            proptest::prop_assert_eq!(
                Thresholds::parse(&format!("{good},{bad}")),
                Err(ThresholdError::Entry { index: 2 })
            );
        }
    }

    #[test]
    fn malformed_thresholds_are_refused_by_position() {
        assert_eq!(
            Thresholds::parse("30,x"),
            Err(ThresholdError::Entry { index: 2 })
        );
        assert_eq!(
            Thresholds::parse("-1"),
            Err(ThresholdError::Entry { index: 1 })
        );
        assert_eq!(
            Thresholds::parse("3651"),
            Err(ThresholdError::Entry { index: 1 })
        );
        assert_eq!(
            Thresholds::parse(""),
            Err(ThresholdError::Entry { index: 1 })
        );
        assert_eq!(
            Thresholds::parse("7,7,30").expect("valid").0,
            [Threshold(7), Threshold(30)]
        );
        assert_eq!(Thresholds::default().to_string(), DEFAULT_THRESHOLDS);
    }
}
