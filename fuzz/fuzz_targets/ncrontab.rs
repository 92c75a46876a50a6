//! NCRONTAB schedules (the timer trigger's six-field format).
#![no_main]

use chrono::{TimeZone, Utc};
use keyturn::domain::ncrontab::Schedule;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(schedule) = Schedule::parse(text) else {
        return;
    };
    // Round trip: the schedule written out reads back as the same schedule.
    let again = Schedule::parse(&schedule.to_string()).expect("a written schedule parses");
    assert_eq!(again, schedule);
    let json = serde_json::to_string(&schedule).expect("a schedule serialises");
    let again: Schedule = serde_json::from_str(&json).expect("a serialised schedule reads back");
    assert_eq!(again, schedule);
    for t in [
        Utc.with_ymd_and_hms(2027, 2, 28, 23, 59, 59).unwrap(),
        Utc.with_ymd_and_hms(2028, 12, 31, 23, 59, 59).unwrap(),
    ] {
        if let Some(next) = schedule.next_after(t) {
            assert!(next > t, "next_after goes forward");
            assert!(schedule.matches(next), "next_after lands on a match");
        }
    }
});
