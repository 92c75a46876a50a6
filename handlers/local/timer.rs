//! The timer trigger, played locally: fires the function on its NCRONTAB schedule with the
//! `TimerInfo` the host would pass (schedule status, past-due flag).

use chrono::{DateTime, Utc};

use crate::domain::ncrontab::Schedule;
use crate::events::timer::{ScheduleStatus, TimerInfo, TimerSchedule};

/// A run later than this after its scheduled time is past due. The host's own monitor uses
/// the schedule's next occurrence; a fixed allowance keeps a busy machine's small delays
/// from being reported as missed runs.
pub(crate) const PAST_DUE_AFTER: chrono::Duration = chrono::Duration::seconds(10);

/// The timer's state between runs.
#[derive(Debug, Clone)]
pub(crate) struct Timer {
    schedule: Schedule,
    last: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
}

impl Timer {
    /// A timer whose first run is the schedule's first occurrence after `now`.
    pub(crate) fn new(schedule: Schedule, now: DateTime<Utc>) -> Self {
        let next = schedule.next_after(now);
        Self {
            schedule,
            last: None,
            next,
        }
    }

    /// When the timer fires next; `None` for a schedule that never fires.
    #[cfg(test)]
    pub(crate) fn next(&self) -> Option<DateTime<Utc>> {
        self.next
    }

    /// The `TimerInfo` for the run due now, advancing the timer; `None` if nothing is due.
    pub(crate) fn fire(&mut self, now: DateTime<Utc>) -> Option<TimerInfo> {
        let due = self.next.filter(|next| *next <= now)?;
        let next = self.schedule.next_after(now);
        let info = TimerInfo {
            schedule: TimerSchedule {
                adjust_for_dst: true,
            },
            status: Some(ScheduleStatus {
                last: self.last,
                next,
                last_updated: Some(now),
            }),
            is_past_due: now - due > PAST_DUE_AFTER,
        };
        self.last = Some(due);
        self.next = next;
        Some(info)
    }

    /// A run outside the schedule (local mode's `--once` sweep, `runOnStartup`).
    pub(crate) fn fire_now(&mut self, now: DateTime<Utc>) -> TimerInfo {
        let info = TimerInfo {
            schedule: TimerSchedule {
                adjust_for_dst: true,
            },
            status: Some(ScheduleStatus {
                last: self.last,
                next: self.next,
                last_updated: Some(now),
            }),
            is_past_due: false,
        };
        self.last = Some(now);
        info
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, s)
            .single()
            .expect("valid time")
    }

    #[test]
    fn the_timer_fires_at_each_occurrence_and_not_between() {
        let schedule = Schedule::parse("0 */15 * * * *").expect("valid");
        let mut timer = Timer::new(schedule, at(10, 7, 0));
        assert_eq!(timer.next(), Some(at(10, 15, 0)));
        assert!(timer.fire(at(10, 14, 59)).is_none());

        let info = timer.fire(at(10, 15, 1)).expect("due");
        assert!(!info.is_past_due);
        let status = info.status.expect("status");
        assert_eq!(status.last, None);
        assert_eq!(status.next, Some(at(10, 30, 0)));
        assert!(
            timer.fire(at(10, 15, 2)).is_none(),
            "fires once per occurrence"
        );

        let info = timer.fire(at(10, 30, 0)).expect("due");
        assert_eq!(info.status.expect("status").last, Some(at(10, 15, 0)));
    }

    #[test]
    fn a_run_well_after_its_time_is_past_due_and_skips_missed_occurrences() {
        let schedule = Schedule::parse("0 * * * * *").expect("valid");
        let mut timer = Timer::new(schedule, at(10, 0, 30));
        let info = timer.fire(at(10, 5, 0)).expect("due");
        assert!(info.is_past_due);
        assert_eq!(
            timer.next(),
            Some(at(10, 6, 0)),
            "missed runs are not replayed one by one"
        );
    }

    #[test]
    fn timer_info_serialises_in_the_hosts_shape_and_decodes_again() {
        let schedule = Schedule::parse("0 0 */6 * * *").expect("valid");
        let mut timer = Timer::new(schedule, at(5, 0, 0));
        let info = timer.fire(at(6, 0, 0)).expect("due");
        let value = serde_json::to_value(info).expect("json");
        assert_eq!(value["Schedule"]["AdjustForDST"], true);
        assert_eq!(value["IsPastDue"], false);
        assert_eq!(TimerInfo::from_value(&value).expect("decodes"), info);
    }
}
