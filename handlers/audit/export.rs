//! Reading the log out: `keyturn audit list` and `keyturn audit export`. Every chain
//! the store holds is read, one after the other in the order of the store's survey
//! (chain name order); each is read a window at a time from its first position to its
//! head as it stood when that chain's turn came, filtered, and written as it comes, so
//! memory stays flat however long the log is and however many writers wrote it. Entries hold names, versions, thumbprints and hashes, never a secret
//! value (see [`crate::ports::audit`]); an export prints nothing else.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ports::PortError;
use crate::ports::audit::{AuditEntry, AuditFields, AuditStore, ChainId, Outcome, StoredEntry};

/// Positions read per request: the verification window, for the same reasons (flat
/// memory, under Table storage's 1000-entity page).
const PAGE: u32 = super::VERIFY_WINDOW;

/// Which entries to print. Every condition given must hold; none given prints all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Entries stamped at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Entries stamped before this time.
    pub until: Option<DateTime<Utc>>,
    /// Entries whose action is one of these (`secret.read`, `rotation.planned`, ...).
    pub actions: Vec<String>,
    /// Entries naming this object in any object field: a vault, secret name, version,
    /// app id, key id or thumbprint.
    pub object: Option<String>,
    /// Entries whose actor is this identity or function.
    pub identity: Option<String>,
    pub outcome: Option<Outcome>,
}

impl Filter {
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        let record = &entry.record;
        let object = &record.object;
        let named = |wanted: &str| {
            [
                &object.vault,
                &object.secret_name,
                &object.secret_version,
                &object.app_id,
                &object.key_id,
                &object.thumbprint,
            ]
            .into_iter()
            .flatten()
            .any(|text| text.as_str() == wanted)
        };
        self.since.is_none_or(|since| record.at >= since)
            && self.until.is_none_or(|until| record.at < until)
            && (self.actions.is_empty() || self.actions.iter().any(|a| a == record.action.as_str()))
            && self.object.as_deref().is_none_or(named)
            && self
                .identity
                .as_deref()
                .is_none_or(|who| record.actor.name().as_str() == who)
            && self.outcome.is_none_or(|outcome| record.outcome == outcome)
    }

    /// Whether any condition is set: an unreadable entry cannot be judged by one and is
    /// printed only when none is.
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// How entries are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal; the reason last and whole.
    Table,
    /// One JSON object per line per entry, with every field its hash covers.
    Json,
    /// RFC 4180 CSV with a header line, one row per entry.
    Csv,
}

/// Where an export starts, or where the next page does: a position in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Start {
    /// The chain to start in; chains before it (in survey order) are skipped. `None`
    /// starts in the first chain.
    pub chain: Option<ChainId>,
    /// The position to start at in that chain; later chains start at their first.
    pub position: u64,
}

impl Default for Start {
    fn default() -> Self {
        Self {
            chain: None,
            position: 1,
        }
    }
}

/// What an export read and printed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    /// Stored entries read.
    pub read: u64,
    /// Entries printed.
    pub printed: u64,
    /// Occurrences the printed entries stand for (folded entries count each repeat).
    pub occurrences: u64,
    /// Entries that no longer decode (printed as such when no filter is set).
    pub unreadable: u64,
    /// When the limit stopped the export before the end: the chain and position to
    /// start the next page from (`--from-chain`, `--from-sequence`).
    pub next_from: Option<Start>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("cannot read the audit log while {operation}: {source}")]
    Store {
        operation: &'static str,
        #[source]
        source: PortError,
    },
    #[error("cannot write the export: {0}")]
    Write(#[from] io::Error),
}

/// Prints the entries of every chain of `store` that match `filter`, chain by chain and
/// oldest first within each, starting at `from`, at most `limit` of them. A closed
/// output (`| head`) ends the export quietly.
pub async fn export(
    store: &dyn AuditStore,
    filter: &Filter,
    format: Format,
    from: &Start,
    limit: Option<u64>,
    out: &mut dyn Write,
) -> Result<ExportSummary, ExportError> {
    let mut summary = ExportSummary::default();
    match write_all(store, filter, format, from, limit, out, &mut summary).await {
        Err(ExportError::Write(error)) if error.kind() == io::ErrorKind::BrokenPipe => Ok(summary),
        Err(error) => Err(error),
        Ok(()) => {
            out.flush()?;
            Ok(summary)
        }
    }
}

async fn write_all(
    store: &dyn AuditStore,
    filter: &Filter,
    format: Format,
    from: &Start,
    limit: Option<u64>,
    out: &mut dyn Write,
    summary: &mut ExportSummary,
) -> Result<(), ExportError> {
    header(format, out)?;
    let survey = store.survey().await.map_err(|source| ExportError::Store {
        operation: "surveying its chains",
        source,
    })?;
    let mut chains = survey.chains;
    chains.sort();
    let mut chains = chains.into_iter().peekable();
    if let Some(first) = &from.chain {
        while chains.next_if(|chain| chain < first).is_some() {}
    }
    for (index, chain) in chains.enumerate() {
        // Only the chain paging starts in starts past its first position.
        let start = if index == 0 && from.chain.as_ref().is_none_or(|first| *first == chain) {
            from.position.max(1)
        } else {
            1
        };
        let reader = if chain == store.chain() {
            None
        } else {
            Some(store.for_chain(&chain).ok_or_else(|| ExportError::Store {
                operation: "opening a chain",
                source: PortError::invalid(format!(
                    "the store lists chain `{chain}` but cannot read it"
                )),
            })?)
        };
        let reader = reader.as_deref().unwrap_or(store);
        if !write_chain(reader, &chain, filter, format, start, limit, out, summary).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Prints one chain's matching entries from `from` to its head; `false` when the limit
/// stopped it (`summary.next_from` then says where to go on).
#[allow(clippy::too_many_arguments)]
async fn write_chain(
    store: &dyn AuditStore,
    chain: &ChainId,
    filter: &Filter,
    format: Format,
    from: u64,
    limit: Option<u64>,
    out: &mut dyn Write,
    summary: &mut ExportSummary,
) -> Result<bool, ExportError> {
    let failed = |operation| move |source| ExportError::Store { operation, source };
    let Some(head) = store.head().await.map_err(failed("reading the head"))? else {
        return Ok(true);
    };
    let mut next = from;
    while next <= head.position {
        let page = store
            .read(next, PAGE)
            .await
            .map_err(failed("reading entries"))?;
        for stored in page.iter().filter(|s| s.position <= head.position) {
            let printable = match &stored.content {
                Ok(entry) => filter.matches(entry),
                Err(_) => filter.is_empty(),
            };
            if printable && limit.is_some_and(|limit| summary.printed >= limit) {
                summary.next_from = Some(Start {
                    chain: Some(chain.clone()),
                    position: stored.position,
                });
                return Ok(false);
            }
            summary.read += 1;
            match &stored.content {
                Ok(entry) if printable => summary.occurrences += entry.record.occurrences(),
                Ok(_) => {}
                Err(_) => summary.unreadable += 1,
            }
            if printable {
                write_entry(format, chain, stored, out)?;
                summary.printed += 1;
            }
        }
        next = match next.checked_add(u64::from(PAGE)) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(true)
}

/// One entry as exported: its chain, then every field the hash covers under the names
/// the README documents ([`AuditFields`]). Absent fields are left out of JSON and empty
/// in CSV (audit text is never empty, so an empty cell always means absent).
#[derive(Serialize)]
struct Line<'a> {
    chain: &'a str,
    #[serde(flatten)]
    fields: AuditFields<'a>,
}

const CSV_COLUMNS: [&str; 19] = [
    "chain",
    "sequence",
    "time",
    "actor_kind",
    "actor",
    "action",
    "vault",
    "secret_name",
    "secret_version",
    "app_id",
    "key_id",
    "thumbprint",
    "outcome",
    "reason",
    "invocation_id",
    "count",
    "prev_hash",
    "hash",
    "unreadable",
];

impl<'a> Line<'a> {
    fn of(chain: &'a ChainId, entry: &'a AuditEntry) -> Self {
        Self {
            chain: chain.as_str(),
            fields: AuditFields::of(entry),
        }
    }

    fn csv_cells(&self) -> [String; 19] {
        let owned = |value: Option<&str>| value.unwrap_or_default().to_owned();
        let f = &self.fields;
        [
            self.chain.to_owned(),
            f.sequence.to_string(),
            f.time.clone(),
            f.actor_kind.to_owned(),
            f.actor.to_owned(),
            f.action.to_owned(),
            owned(f.vault),
            owned(f.secret_name),
            owned(f.secret_version),
            owned(f.app_id),
            owned(f.key_id),
            owned(f.thumbprint),
            f.outcome.to_owned(),
            owned(f.reason),
            owned(f.invocation_id),
            f.count.map(|c| c.to_string()).unwrap_or_default(),
            f.prev_hash.clone(),
            f.hash.clone(),
            String::new(),
        ]
    }
}

/// The table's columns and their widths: chain (a writer's chain name is `w-` and 32
/// hex digits), sequence, time (to the millisecond), outcome, count, action, actor,
/// object; the reason follows unpadded.
const TABLE_WIDTHS: [usize; 7] = [34, 8, 24, 9, 6, 27, 20];

fn header(format: Format, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Json => Ok(()),
        Format::Csv => writeln!(out, "{}", CSV_COLUMNS.join(",")),
        Format::Table => table_row(
            out,
            [
                "CHAIN", "SEQUENCE", "TIME", "OUTCOME", "COUNT", "ACTION", "ACTOR", "OBJECT",
            ],
            "REASON",
        ),
    }
}

fn write_entry(
    format: Format,
    chain: &ChainId,
    stored: &StoredEntry,
    out: &mut dyn Write,
) -> io::Result<()> {
    let entry = match &stored.content {
        Ok(entry) => entry,
        Err(problem) => {
            let problem = problem.to_string();
            return match format {
                Format::Json => {
                    let line = serde_json::json!({
                        "chain": chain.as_str(),
                        "sequence": stored.position,
                        "unreadable": problem,
                    });
                    writeln!(out, "{line}")
                }
                Format::Csv => {
                    let mut cells: [String; 19] = Default::default();
                    cells[0] = chain.as_str().to_owned();
                    cells[1] = stored.position.to_string();
                    cells[18] = problem;
                    writeln!(out, "{}", csv_row(&cells))
                }
                Format::Table => table_row(
                    out,
                    [
                        chain.as_str(),
                        &stored.position.to_string(),
                        "",
                        "UNREADABLE",
                        "",
                        "",
                        "",
                        "",
                    ],
                    &problem,
                ),
            };
        }
    };
    let line = Line::of(chain, entry);
    match format {
        Format::Json => {
            let json = serde_json::to_string(&line).map_err(io::Error::other)?;
            writeln!(out, "{json}")
        }
        Format::Csv => writeln!(out, "{}", csv_row(&line.csv_cells())),
        Format::Table => {
            let vault = line
                .fields
                .vault
                .map(|v| v.trim_start_matches("https://").trim_end_matches('/'));
            let object = [
                vault,
                line.fields.secret_name,
                line.fields.secret_version,
                line.fields.app_id,
                line.fields.key_id,
                line.fields.thumbprint,
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("/");
            let time = entry.record.at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            table_row(
                out,
                [
                    line.chain,
                    &line.fields.sequence.to_string(),
                    &time,
                    line.fields.outcome,
                    &entry.record.occurrences().to_string(),
                    line.fields.action,
                    line.fields.actor,
                    &object,
                ],
                line.fields.reason.unwrap_or_default(),
            )
        }
    }
}

fn table_row(out: &mut dyn Write, cells: [&str; 8], reason: &str) -> io::Result<()> {
    for (cell, width) in cells.iter().zip(TABLE_WIDTHS) {
        write!(out, "{cell:<width$} ")?;
    }
    // The object column is last but one and may be long: pad it too, then the reason.
    writeln!(out, "{:<32} {reason}", cells[7]).map(|_| ())
}

/// One CSV row: a cell holding a comma or a quote is quoted, its quotes doubled
/// (RFC 4180 section 2). Audit text holds no line breaks.
fn csv_row(cells: &[String]) -> String {
    cells
        .iter()
        .map(|cell| {
            if cell.contains([',', '"']) {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_with_commas_or_quotes_are_quoted() {
        let row = csv_row(&[
            "plain".to_owned(),
            "policy=chain; reason=a,b".to_owned(),
            "say \"hi\"".to_owned(),
        ]);
        assert_eq!(row, "plain,\"policy=chain; reason=a,b\",\"say \"\"hi\"\"\"");
    }
}
