//! Six-field NCRONTAB schedules (`{second} {minute} {hour} {day} {month} {day-of-week}`)
//! as Azure Functions timer triggers use them, evaluated in UTC.
//!
//! The semantics follow the NCrontab library the Functions host uses: day-of-week is
//! 0–6 with Sunday 0 (7 is refused); a time must match day-of-month AND day-of-week
//! (unlike Vixie cron's OR); month and day names match by case-insensitive prefix of
//! the English name, first in calendar order ("Jan", "january", "Mon", "T" = Tuesday);
//! a reversed range `5-2` means `2-5`; `a/n` runs from `a` to the field's maximum.
//! One deliberate difference: a step of 0, which NCrontab quietly treats as 1, is refused.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The example every "wrong format" message gives: every six hours, on the hour.
pub(crate) const EXAMPLE: &str = "0 0 */6 * * *";

/// The field order every "wrong format" message gives.
pub(crate) const FORMAT: &str = "{second} {minute} {hour} {day} {month} {day-of-week}";

/// How far ahead [`Schedule::next_after`] looks. The Gregorian calendar repeats its
/// dates and weekdays every 400 years (146,097 days, exactly 20,871 weeks), so a
/// schedule with no occurrence within 400 years has none at all (`0 0 0 30 2 *`).
pub(crate) const SEARCH_HORIZON_YEARS: i32 = 400;

/// Longest expression accepted. A field enumerating all 60 seconds is 170 characters,
/// so six fully enumerated fields still fit; anything longer is not a schedule.
pub(crate) const MAX_EXPRESSION_LEN: usize = 1024;

/// Longest excerpt of a refused field value an error quotes.
const MAX_QUOTED_LEN: usize = 32;

const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const DAY_NAMES: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// One of the six fields of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    DayOfWeek,
}

impl Field {
    const ALL: [Field; 6] = [
        Self::Second,
        Self::Minute,
        Self::Hour,
        Self::Day,
        Self::Month,
        Self::DayOfWeek,
    ];

    fn min(self) -> u32 {
        match self {
            Self::Day | Self::Month => 1,
            _ => 0,
        }
    }

    fn max(self) -> u32 {
        match self {
            Self::Second | Self::Minute => 59,
            Self::Hour => 23,
            Self::Day => 31,
            Self::Month => 12,
            Self::DayOfWeek => 6,
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Self::Month => &MONTH_NAMES,
            Self::DayOfWeek => &DAY_NAMES,
            _ => &[],
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day-of-month",
            Self::Month => "month",
            Self::DayOfWeek => "day-of-week",
        })
    }
}

/// Why a schedule was refused. Each message names the field and the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error(
        "the schedule is empty; a six-field NCRONTAB expression is required ({FORMAT}), for example `{EXAMPLE}`"
    )]
    Empty,
    #[error("the schedule is {len} characters, over the {MAX_EXPRESSION_LEN}-character limit")]
    TooLong { len: usize },
    #[error(
        "the schedule has {found} fields; a six-field NCRONTAB expression is required ({FORMAT}), for example `{EXAMPLE}`"
    )]
    FieldCount { found: usize },
    #[error(
        "TimeSpan schedules (hh:mm:ss) are not supported; a six-field NCRONTAB expression is required ({FORMAT}), for example `{EXAMPLE}`"
    )]
    TimeSpan,
    #[error("the {field} field has an empty list element")]
    EmptyValue { field: Field },
    #[error("the {field} field value {value:?} is not a number")]
    InvalidValue { field: Field, value: String },
    #[error("the {field} field value {value:?} is not a known name")]
    UnknownName { field: Field, value: String },
    #[error("the {field} field value {value} is outside {min}-{max}")]
    OutOfRange {
        field: Field,
        value: u64,
        min: u32,
        max: u32,
    },
    #[error("the day-of-week field value 7 is outside 0-6: NCRONTAB counts Sunday as 0 only")]
    SundayAsSeven,
    #[error("the {field} field step {value:?} must be a whole number of at least 1")]
    InvalidStep { field: Field, value: String },
}

/// A parsed schedule. Each field is a set of allowed values, bit `i` meaning value `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    expression: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
}

impl Schedule {
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let len = expression.chars().count();
        if len > MAX_EXPRESSION_LEN {
            return Err(ScheduleError::TooLong { len });
        }
        let tokens: Vec<&str> = expression.split_whitespace().collect();
        if tokens.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if tokens.len() == 1 && tokens[0].contains(':') {
            return Err(ScheduleError::TimeSpan);
        }
        if tokens.len() != Field::ALL.len() {
            return Err(ScheduleError::FieldCount {
                found: tokens.len(),
            });
        }
        let mut sets = [0u64; 6];
        for ((set, field), token) in sets.iter_mut().zip(Field::ALL).zip(&tokens) {
            *set = parse_field(field, token)?;
        }
        let [seconds, minutes, hours, days, months, weekdays] = sets;
        Ok(Self {
            expression: expression.to_owned(),
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
        })
    }

    /// Whether `t` is an occurrence: a whole second whose every field matches.
    pub fn matches(&self, t: DateTime<Utc>) -> bool {
        t.nanosecond() == 0
            && has(self.seconds, t.second())
            && has(self.minutes, t.minute())
            && has(self.hours, t.hour())
            && self.matches_date(t.date_naive())
    }

    /// The first occurrence strictly after `t`, or `None` when there is none within
    /// [`SEARCH_HORIZON_YEARS`] (so none ever) or it would fall beyond chrono's range.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = t
            .naive_utc()
            .with_nanosecond(0)?
            .checked_add_signed(chrono::Duration::seconds(1))?;
        let last_year = start.year().checked_add(SEARCH_HORIZON_YEARS)?;
        let mut date = start.date();
        let mut from = (start.hour(), start.minute(), start.second());
        while date.year() <= last_year {
            if !has(self.months, date.month()) {
                date = first_of_next_month(date)?;
                from = (0, 0, 0);
                continue;
            }
            if self.matches_date(date)
                && let Some((hour, minute, second)) = self.first_time_from(from)
            {
                let found: NaiveDateTime = date.and_hms_opt(hour, minute, second)?;
                return Some(found.and_utc());
            }
            date = date.succ_opt()?;
            from = (0, 0, 0);
        }
        None
    }

    fn matches_date(&self, date: NaiveDate) -> bool {
        has(self.days, date.day())
            && has(self.months, date.month())
            && has(self.weekdays, date.weekday().num_days_from_sunday())
    }

    /// The earliest matching time of day at or after `from`.
    fn first_time_from(
        &self,
        (hour0, minute0, second0): (u32, u32, u32),
    ) -> Option<(u32, u32, u32)> {
        for hour in hour0..24 {
            if !has(self.hours, hour) {
                continue;
            }
            let minute_start = if hour == hour0 { minute0 } else { 0 };
            for minute in minute_start..60 {
                if !has(self.minutes, minute) {
                    continue;
                }
                let second_start = if hour == hour0 && minute == minute0 {
                    second0
                } else {
                    0
                };
                if let Some(second) = (second_start..60).find(|s| has(self.seconds, *s)) {
                    return Some((hour, minute, second));
                }
            }
        }
        None
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.expression)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn has(set: u64, value: u32) -> bool {
    value < 64 && set & (1 << value) != 0
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year().checked_add(1)?, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

fn quoted(text: &str) -> String {
    text.chars().take(MAX_QUOTED_LEN).collect()
}

fn parse_field(field: Field, text: &str) -> Result<u64, ScheduleError> {
    text.split(',').try_fold(
        0u64,
        |set, element| Ok(set | parse_element(field, element)?),
    )
}

/// One list element: `*`, `v`, `a-b`, each optionally followed by `/step`.
fn parse_element(field: Field, element: &str) -> Result<u64, ScheduleError> {
    if element.is_empty() {
        return Err(ScheduleError::EmptyValue { field });
    }
    let (range, step) = match element.find('/') {
        Some(slash) if slash > 0 => (
            &element[..slash],
            Some(parse_step(field, &element[slash + 1..])?),
        ),
        _ => (element, None),
    };
    let (first, last) = if range == "*" {
        (field.min(), field.max())
    } else if let Some((low, high)) = range.split_once('-').filter(|(low, _)| !low.is_empty()) {
        let (low, high) = (parse_value(field, low)?, parse_value(field, high)?);
        (low.min(high), low.max(high))
    } else {
        let value = parse_value(field, range)?;
        match step {
            Some(_) => (value, field.max()),
            None => (value, value),
        }
    };
    let step = step.unwrap_or(1);
    Ok((first..=last)
        .step_by(step)
        .fold(0u64, |set, value| set | (1 << value)))
}

fn parse_step(field: Field, text: &str) -> Result<usize, ScheduleError> {
    let invalid = || ScheduleError::InvalidStep {
        field,
        value: quoted(text),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match text.parse::<usize>() {
        Ok(step) if step >= 1 => Ok(step),
        _ => Err(invalid()),
    }
}

/// A number in the field's range, or (for months and days of the week) a name.
fn parse_value(field: Field, text: &str) -> Result<u32, ScheduleError> {
    let value = if text.starts_with(|c: char| c.is_ascii_digit()) {
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ScheduleError::InvalidValue {
                field,
                value: quoted(text),
            });
        }
        text.parse::<u64>()
            .map_err(|_| ScheduleError::InvalidValue {
                field,
                value: quoted(text),
            })?
    } else if field.names().is_empty() {
        return Err(ScheduleError::InvalidValue {
            field,
            value: quoted(text),
        });
    } else {
        let index = field
            .names()
            .iter()
            .position(|name| {
                name.get(..text.len())
                    .is_some_and(|prefix| prefix.eq_ignore_ascii_case(text))
            })
            .ok_or_else(|| ScheduleError::UnknownName {
                field,
                value: quoted(text),
            })?;
        index as u64 + u64::from(field.min())
    };
    if field == Field::DayOfWeek && value == 7 {
        return Err(ScheduleError::SundayAsSeven);
    }
    if value < u64::from(field.min()) || value > u64::from(field.max()) {
        return Err(ScheduleError::OutOfRange {
            field,
            value,
            min: field.min(),
            max: field.max(),
        });
    }
    Ok(value as u32)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|error| panic!("test time {text} is valid: {error}"))
    }

    /// (expression, from, expected next occurrence).
    const NEXT_OCCURRENCES: &[(&str, &str, Option<&str>)] = &[
        // steps
        (
            "0 0 */6 * * *",
            "2024-01-01T00:00:00Z",
            Some("2024-01-01T06:00:00Z"),
        ),
        (
            "0 0 */6 * * *",
            "2024-01-01T05:59:59.500Z",
            Some("2024-01-01T06:00:00Z"),
        ),
        (
            "0 */5 * * * *",
            "2024-03-10T10:07:30Z",
            Some("2024-03-10T10:10:00Z"),
        ),
        (
            "*/15 * * * * *",
            "2024-03-10T10:00:14Z",
            Some("2024-03-10T10:00:15Z"),
        ),
        (
            "0 10-40/15 * * * *",
            "2024-03-10T10:26:00Z",
            Some("2024-03-10T10:40:00Z"),
        ),
        (
            "0 50/5 * * * *",
            "2024-03-10T10:56:00Z",
            Some("2024-03-10T11:50:00Z"),
        ),
        // strictly after, whole seconds
        (
            "* * * * * *",
            "2024-03-10T10:00:00Z",
            Some("2024-03-10T10:00:01Z"),
        ),
        (
            "* * * * * *",
            "2024-03-10T10:00:00.999Z",
            Some("2024-03-10T10:00:01Z"),
        ),
        // lists and ranges
        (
            "0 0 8,12,18 * * *",
            "2024-03-10T12:00:00Z",
            Some("2024-03-10T18:00:00Z"),
        ),
        (
            "0 0 8,12,18 * * *",
            "2024-03-10T18:00:00Z",
            Some("2024-03-11T08:00:00Z"),
        ),
        (
            "0 0 9-17 * * *",
            "2024-03-10T17:00:01Z",
            Some("2024-03-11T09:00:00Z"),
        ),
        (
            "0 0 5-2 * * *",
            "2024-03-10T06:00:00Z",
            Some("2024-03-11T02:00:00Z"),
        ),
        // names
        (
            "0 30 9 * * Mon-Fri",
            "2024-03-08T10:00:00Z",
            Some("2024-03-11T09:30:00Z"),
        ),
        (
            "0 0 12 * * sun",
            "2024-03-09T13:00:00Z",
            Some("2024-03-10T12:00:00Z"),
        ),
        (
            "0 0 12 1 january,JUL *",
            "2024-02-01T00:00:00Z",
            Some("2024-07-01T12:00:00Z"),
        ),
        (
            "0 0 0 * * Mon/2",
            "2024-03-08T00:00:00Z",
            Some("2024-03-11T00:00:00Z"),
        ),
        (
            "0 0 0 * * 0",
            "2024-03-09T00:00:00Z",
            Some("2024-03-10T00:00:00Z"),
        ),
        // day-of-month AND day-of-week (Friday the 13th)
        (
            "0 0 0 13 * Fri",
            "2024-01-01T00:00:00Z",
            Some("2024-09-13T00:00:00Z"),
        ),
        // month ends
        (
            "0 0 0 31 * *",
            "2024-04-01T00:00:00Z",
            Some("2024-05-31T00:00:00Z"),
        ),
        (
            "0 0 0 30,31 * *",
            "2023-01-31T00:00:00Z",
            Some("2023-03-30T00:00:00Z"),
        ),
        // leap years, including the skipped century
        (
            "0 0 0 29 Feb *",
            "2024-03-01T00:00:00Z",
            Some("2028-02-29T00:00:00Z"),
        ),
        (
            "0 0 0 29 2 *",
            "2096-03-01T00:00:00Z",
            Some("2104-02-29T00:00:00Z"),
        ),
        (
            "0 0 0 29 2 Mon",
            "2024-01-01T00:00:00Z",
            Some("2044-02-29T00:00:00Z"),
        ),
        // year rollover
        (
            "0 0 0 1 Jan *",
            "2024-06-15T00:00:00Z",
            Some("2025-01-01T00:00:00Z"),
        ),
        (
            "59 59 23 31 12 *",
            "2024-12-31T23:59:59Z",
            Some("2025-12-31T23:59:59Z"),
        ),
        (
            "* * * * * *",
            "2024-12-31T23:59:59Z",
            Some("2025-01-01T00:00:00Z"),
        ),
        // never
        ("0 0 0 30 2 *", "2024-01-01T00:00:00Z", None),
        ("0 0 0 31 4,6,9,11 *", "2024-01-01T00:00:00Z", None),
    ];

    #[test]
    fn next_occurrences_match_the_table() {
        for (expression, from, expected) in NEXT_OCCURRENCES {
            let schedule = Schedule::parse(expression)
                .unwrap_or_else(|error| panic!("{expression} parses: {error}"));
            let next = schedule.next_after(at(from));
            assert_eq!(next, expected.map(at), "{expression} after {from}");
            if let Some(next) = next {
                assert!(schedule.matches(next), "{expression} matches {next}");
            }
        }
    }

    /// (expression, expected error).
    fn invalid_expressions() -> Vec<(String, ScheduleError)> {
        use Field::*;
        use ScheduleError::*;
        let out_of_range = |field: Field, value: u64| OutOfRange {
            field,
            value,
            min: field.min(),
            max: field.max(),
        };
        vec![
            (String::new(), Empty),
            ("   ".into(), Empty),
            ("0 */5 * * *".into(), FieldCount { found: 5 }),
            ("0 0 0 * * * 2024".into(), FieldCount { found: 7 }),
            ("00:05:00".into(), TimeSpan),
            ("1.00:00:00".into(), TimeSpan),
            ("60 * * * * *".into(), out_of_range(Second, 60)),
            ("* 60 * * * *".into(), out_of_range(Minute, 60)),
            ("* * 24 * * *".into(), out_of_range(Hour, 24)),
            ("* * * 0 * *".into(), out_of_range(Day, 0)),
            ("* * * 32 * *".into(), out_of_range(Day, 32)),
            ("* * * * 0 *".into(), out_of_range(Month, 0)),
            ("* * * * 13 *".into(), out_of_range(Month, 13)),
            ("* * * * * 7".into(), SundayAsSeven),
            ("* * * * * 0-7".into(), SundayAsSeven),
            ("* * * * * 8".into(), out_of_range(DayOfWeek, 8)),
            ("5-70 * * * * *".into(), out_of_range(Second, 70)),
            (
                "*/0 * * * * *".into(),
                InvalidStep {
                    field: Second,
                    value: "0".into(),
                },
            ),
            (
                "*/x * * * * *".into(),
                InvalidStep {
                    field: Second,
                    value: "x".into(),
                },
            ),
            (
                "*/ * * * * *".into(),
                InvalidStep {
                    field: Second,
                    value: String::new(),
                },
            ),
            (
                "* */-1 * * * *".into(),
                InvalidStep {
                    field: Minute,
                    value: "-1".into(),
                },
            ),
            ("1,,2 * * * * *".into(), EmptyValue { field: Second }),
            ("1, * * * * *".into(), EmptyValue { field: Second }),
            (
                "a * * * * *".into(),
                InvalidValue {
                    field: Second,
                    value: "a".into(),
                },
            ),
            (
                "1x * * * * *".into(),
                InvalidValue {
                    field: Second,
                    value: "1x".into(),
                },
            ),
            (
                "-5 * * * * *".into(),
                InvalidValue {
                    field: Second,
                    value: "-5".into(),
                },
            ),
            (
                "/5 * * * * *".into(),
                InvalidValue {
                    field: Second,
                    value: "/5".into(),
                },
            ),
            (
                "1-2-3 * * * * *".into(),
                InvalidValue {
                    field: Second,
                    value: "2-3".into(),
                },
            ),
            (
                "*-5 * * * * *".into(),
                InvalidValue {
                    field: Second,
                    value: "*".into(),
                },
            ),
            (
                "99999999999999999999999 * * * * *".into(),
                InvalidValue {
                    field: Second,
                    value: "99999999999999999999999".into(),
                },
            ),
            (
                "* * * * Foo *".into(),
                UnknownName {
                    field: Month,
                    value: "Foo".into(),
                },
            ),
            (
                "* * * * * Funday".into(),
                UnknownName {
                    field: DayOfWeek,
                    value: "Funday".into(),
                },
            ),
            (
                "* * * Mon * *".into(),
                InvalidValue {
                    field: Day,
                    value: "Mon".into(),
                },
            ),
            (
                format!("0 0 0 * * {}", "1,".repeat(MAX_EXPRESSION_LEN)),
                TooLong {
                    len: 10 + 2 * MAX_EXPRESSION_LEN,
                },
            ),
        ]
    }

    #[test]
    fn invalid_expressions_are_refused_with_their_error() {
        for (expression, expected) in invalid_expressions() {
            assert_eq!(
                Schedule::parse(&expression),
                Err(expected),
                "{expression:?}"
            );
        }
    }

    #[test]
    fn format_errors_ask_for_six_fields_with_an_example() {
        for expression in ["0 */5 * * *", "00:05:00", ""] {
            let message = Schedule::parse(expression)
                .expect_err("wrong format")
                .to_string();
            assert!(message.contains("six-field"), "{message}");
            assert!(message.contains(EXAMPLE), "{message}");
        }
    }

    #[test]
    fn names_match_by_prefix_in_calendar_order_like_ncrontab() {
        let by_prefix = Schedule::parse("0 0 0 1 Ju *").expect("parses");
        let june = Schedule::parse("0 0 0 1 6 *").expect("parses");
        assert_eq!(
            by_prefix.next_after(at("2024-01-01T00:00:00Z")),
            june.next_after(at("2024-01-01T00:00:00Z"))
        );
        let tuesday = Schedule::parse("0 0 0 * * T").expect("parses");
        assert_eq!(
            tuesday.next_after(at("2024-03-10T00:00:00Z")),
            Some(at("2024-03-12T00:00:00Z"))
        );
    }

    #[test]
    fn display_and_serde_keep_the_original_expression() {
        let schedule: Schedule = "0  0 */6 * * *".parse().expect("parses");
        assert_eq!(schedule.to_string(), "0  0 */6 * * *");
        assert_eq!(
            serde_json::to_string(&schedule).ok().as_deref(),
            Some("\"0  0 */6 * * *\"")
        );
        assert!(serde_json::from_str::<Schedule>("\"0 */5 * * *\"").is_err());
    }

    #[test]
    fn matches_requires_a_whole_second() {
        let schedule = Schedule::parse("* * * * * *").expect("parses");
        assert!(schedule.matches(at("2024-03-10T10:00:00Z")));
        assert!(!schedule.matches(at("2024-03-10T10:00:00.5Z")));
    }

    #[test]
    fn the_search_stops_at_the_end_of_chronos_range() {
        let schedule = Schedule::parse("0 0 0 30 2 *").expect("parses");
        assert_eq!(schedule.next_after(DateTime::<Utc>::MAX_UTC), None);
        let every_second = Schedule::parse("* * * * * *").expect("parses");
        assert_eq!(every_second.next_after(DateTime::<Utc>::MAX_UTC), None);
    }

    /// How many seconds after `t` the property test checks second by second.
    const BRUTE_FORCE_WINDOW_SECONDS: i64 = 3 * 3600;

    fn field_text(field: Field) -> impl Strategy<Value = String> {
        let (min, max) = (field.min(), field.max());
        let value = min..=max;
        prop_oneof![
            Just("*".to_owned()),
            (1..=max).prop_map(|n| format!("*/{n}")),
            value.clone().prop_map(|v| v.to_string()),
            (value.clone(), value.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
            (value.clone(), value.clone(), 1..=max).prop_map(|(a, b, n)| format!("{a}-{b}/{n}")),
            (value.clone(), 1..=max).prop_map(|(a, n)| format!("{a}/{n}")),
            proptest::collection::vec(value, 1..5).prop_map(|values| {
                values
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        ]
    }

    fn valid_expression() -> impl Strategy<Value = String> {
        (
            field_text(Field::Second),
            field_text(Field::Minute),
            field_text(Field::Hour),
            prop_oneof![3 => Just("*".to_owned()), 1 => field_text(Field::Day)],
            prop_oneof![3 => Just("*".to_owned()), 1 => field_text(Field::Month)],
            prop_oneof![3 => Just("*".to_owned()), 1 => field_text(Field::DayOfWeek)],
        )
            .prop_map(|(s, m, h, d, mo, w)| format!("{s} {m} {h} {d} {mo} {w}"))
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 2000-01-01 to 2100-01-01, with sub-second parts.
        (946_684_800i64..4_102_444_800, 0u32..1_000_000_000).prop_map(|(seconds, nanos)| {
            DateTime::from_timestamp(seconds, nanos).unwrap_or_default()
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_strings(text in ".{0,80}") {
            let _ = Schedule::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_cron_like_strings(text in "[0-9*/,a-zA-Z -]{0,60}") {
            if let Ok(schedule) = Schedule::parse(&text) {
                let _ = schedule.next_after(DateTime::<Utc>::UNIX_EPOCH);
            }
        }

        #[test]
        fn next_after_is_the_first_matching_second_after_t(expression in valid_expression(), t in instant()) {
            let schedule = Schedule::parse(&expression).expect("generated expressions are valid");
            if let Some(next) = schedule.next_after(t) {
                prop_assert!(next > t, "{} after {} gave {}", expression, t, next);
                prop_assert!(schedule.matches(next), "{} gave non-matching {}", expression, next);
                let first = t.with_nanosecond(0).unwrap_or(t) + chrono::Duration::seconds(1);
                let end = next.min(t + chrono::Duration::seconds(BRUTE_FORCE_WINDOW_SECONDS));
                let mut candidate = first;
                while candidate < end {
                    prop_assert!(!schedule.matches(candidate), "{} skipped {} before {}", expression, candidate, next);
                    candidate += chrono::Duration::seconds(1);
                }
            } else {
                // Only a day/month/weekday combination that never occurs has no next time.
                let daily = Schedule::parse(&format!("0 0 0 {}", expression.splitn(4, ' ').nth(3).unwrap_or("* * *")))
                    .expect("the date part of a valid expression is valid");
                prop_assert_eq!(daily.next_after(t), None, "{}", expression);
            }
        }
    }
}
