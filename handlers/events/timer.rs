//! The timer trigger's `TimerInfo`: schedule flags, last and next occurrences, and
//! whether the invocation is late.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::events::tolerant::{self, FieldError, Fields};

/// Why a `TimerInfo` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimerError {
    #[error("timer info should be a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("timer info {0}")]
    Field(#[from] FieldError),
}

/// The `Schedule` part of `TimerInfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TimerSchedule {
    #[serde(rename = "AdjustForDST")]
    pub adjust_for_dst: bool,
}

/// The `ScheduleStatus` part of `TimerInfo`; absent when the host keeps no status
/// (`useMonitor: false`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScheduleStatus {
    #[serde(rename = "Last", skip_serializing_if = "Option::is_none")]
    pub last: Option<DateTime<Utc>>,
    #[serde(rename = "Next", skip_serializing_if = "Option::is_none")]
    pub next: Option<DateTime<Utc>>,
    #[serde(rename = "LastUpdated", skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<DateTime<Utc>>,
}

/// What the timer trigger passes to the function. Serialises in the host's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TimerInfo {
    #[serde(rename = "Schedule")]
    pub schedule: TimerSchedule,
    #[serde(rename = "ScheduleStatus", skip_serializing_if = "Option::is_none")]
    pub status: Option<ScheduleStatus>,
    #[serde(rename = "IsPastDue")]
    pub is_past_due: bool,
}

impl TimerInfo {
    /// Reads a `TimerInfo`, possibly inside a JSON string. Missing parts take their
    /// defaults (not past due, no DST adjustment, no status).
    pub fn from_value(value: &Value) -> Result<Self, TimerError> {
        let value = tolerant::unwrap_json(value);
        if value.is_null() {
            return Ok(Self::default());
        }
        let fields = Fields::of(&value).ok_or(TimerError::NotAnObject {
            found: tolerant::kind(&value),
        })?;
        let schedule = match fields.object("Schedule")? {
            Some(schedule) => TimerSchedule {
                adjust_for_dst: Fields::new(&schedule)
                    .bool("AdjustForDST")?
                    .unwrap_or(false),
            },
            None => TimerSchedule::default(),
        };
        let status = match fields.object("ScheduleStatus")? {
            Some(status) => {
                let status = Fields::new(&status);
                Some(ScheduleStatus {
                    last: status.time("Last")?,
                    next: status.time("Next")?,
                    last_updated: status.time("LastUpdated")?,
                })
            }
            None => None,
        };
        Ok(Self {
            schedule,
            status,
            is_past_due: fields.bool("IsPastDue")?.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn fixture() -> Value {
        let path = format!(
            "{}/tests/fixtures/custom-handler/timer-trigger.data-value.docs.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes =
            fs::read(&path).unwrap_or_else(|error| panic!("fixture {path} is readable: {error}"));
        serde_json::from_slice(&bytes).expect("fixture is JSON")
    }

    fn time(text: &str) -> DateTime<Utc> {
        tolerant::parse_time(text).expect("test timestamp is valid")
    }

    #[test]
    fn the_documented_timer_info_decodes_and_round_trips() {
        let info = TimerInfo::from_value(&fixture()).expect("fixture decodes");
        assert!(info.schedule.adjust_for_dst);
        assert!(!info.is_past_due);
        assert_eq!(
            info.status,
            Some(ScheduleStatus {
                last: Some(time("2016-10-04T10:15:00Z")),
                next: Some(time("2016-10-04T10:20:00Z")),
                last_updated: Some(time("2016-10-04T10:16:00Z")),
            })
        );
        let serialised = serde_json::to_value(info).expect("serialises");
        assert_eq!(TimerInfo::from_value(&serialised), Ok(info));
    }

    #[test]
    fn timer_info_inside_a_string_decodes() {
        let wrapped = Value::String(fixture().to_string());
        assert_eq!(
            TimerInfo::from_value(&wrapped),
            TimerInfo::from_value(&fixture())
        );
    }

    #[test]
    fn missing_parts_take_defaults() {
        assert_eq!(TimerInfo::from_value(&json!({})), Ok(TimerInfo::default()));
        assert_eq!(
            TimerInfo::from_value(&Value::Null),
            Ok(TimerInfo::default())
        );
        let info = TimerInfo::from_value(
            &json!({"isPastDue": "True", "scheduleStatus": {"next": "2024-01-01T00:00:00"}}),
        )
        .expect("decodes");
        assert!(info.is_past_due);
        assert_eq!(
            info.status.and_then(|s| s.next),
            Some(time("2024-01-01T00:00:00Z"))
        );
        assert_eq!(info.status.and_then(|s| s.last), None);
    }

    #[test]
    fn a_bad_timestamp_is_named() {
        let error = TimerInfo::from_value(&json!({"ScheduleStatus": {"Next": "tomorrow"}}))
            .expect_err("bad time");
        assert!(matches!(&error, TimerError::Field(field) if field.field() == "Next"));
    }

    #[test]
    fn a_non_object_is_refused() {
        assert_eq!(
            TimerInfo::from_value(&json!([1])),
            Err(TimerError::NotAnObject { found: "an array" })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,120}") {
            let _ = TimerInfo::from_value(&Value::String(text.clone()));
            let _ = TimerInfo::from_value(&json!({"ScheduleStatus": {"Last": text.clone()}, "IsPastDue": text}));
        }
    }
}
