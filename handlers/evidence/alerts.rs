//! `populations/alerts-sent.csv`: every alert and digest the alert ledger confirmed sent
//! in the period, a page at a time. A row is one confirmed delivery (`sent_at` when it was
//! confirmed); a claim never confirmed is no row (its sender may be sending, or stopped
//! before confirming, and the claim is taken over by a later run). The ledger says what
//! went to which route, never a webhook URL or a message's text.

use std::io::Write;

use chrono::SecondsFormat;

use super::Period;
use super::csv::{Cell, write_header, write_row};
use super::populations::PopulationError;
use crate::ports::alert_ledger::{AlertLedger, MAX_LEDGER_PAGE};

pub const ALERTS: &str = "populations/alerts-sent.csv";

const COLUMNS: [&str; 6] = [
    "sent_at",
    "kind",
    "subject",
    "route",
    "threshold_days",
    "ledger_key",
];

/// Writes every delivery confirmed in `period`; returns the rows written. `subject` is a
/// credential's inventory id (`id` in `populations/inventory.csv`) or `digest`;
/// `threshold_days` is the alert's threshold (`0`: on expiry), empty for a digest.
pub async fn write_alerts(
    ledger: &dyn AlertLedger,
    period: &Period,
    out: &mut dyn Write,
) -> Result<u64, PopulationError> {
    write_header(out, &COLUMNS)?;
    let mut rows = 0;
    let mut next: Option<String> = None;
    loop {
        let page = ledger
            .sent_between(period.from, period.to, next.as_deref(), MAX_LEDGER_PAGE)
            .await
            .map_err(|source| PopulationError::Store {
                what: "alert ledger",
                source,
            })?;
        for entry in &page.entries {
            write_row(
                out,
                &[
                    Cell::Value(entry.sent_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                    Cell::Value(
                        if entry.threshold.is_some() {
                            "alert"
                        } else {
                            "digest"
                        }
                        .to_owned(),
                    ),
                    Cell::Text(&entry.subject),
                    Cell::Text(&entry.route),
                    Cell::Value(
                        entry
                            .threshold
                            .map(|days| days.to_string())
                            .unwrap_or_default(),
                    ),
                    Cell::Value(entry.key.as_str().to_owned()),
                ],
            )?;
            rows += 1;
        }
        match page.next {
            Some(token) => next = Some(token),
            None => return Ok(rows),
        }
    }
}
