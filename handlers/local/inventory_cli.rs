//! `keyturn inventory`: every credential discovery found, read from the inventory store
//! (the local store of `keyturn dev`, or the inventory table in Azure with the operator's
//! sign-in) a page at a time and printed as it is read, as a table, one JSON array or CSV.
//! Memory holds one page whatever the tenant's size.
//!
//! The inventory holds metadata only (its records have no field that could carry a
//! secret value), so nothing printed here can be one.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::domain::inventory::{
    CredentialFilter, CredentialHandle, CredentialSource, ExpiryBucket, InventoryCredential,
    RecordId,
};
use crate::ports::PortError;
use crate::ports::inventory::{InventoryStore, credential_stream, finding_stream};

/// Credentials read per request: Table storage's largest page.
const PAGE_SIZE: u32 = 1000;

/// Scope errors named on stderr at most; the rest are counted.
const ERRORS_NAMED: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryCliError {
    #[error("cannot read the inventory: {0}")]
    Store(#[from] PortError),
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

/// What was printed, for the line on stderr.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub printed: u64,
    pub expired: u64,
    pub unmanaged: u64,
    pub no_end_date: u64,
    /// Findings that stopped part of the last sweeps (a vault that refused, a page that
    /// failed), whatever the filter.
    pub scope_errors: u64,
    /// The first few of them, as lines to show.
    pub named_errors: Vec<String>,
}

/// One credential as `--format json` prints it: the record, its id and where its expiry
/// falls at the time of printing.
#[derive(Serialize)]
struct JsonCredential<'a> {
    id: RecordId,
    #[serde(flatten)]
    credential: &'a InventoryCredential,
    expiry: ExpiryBucket,
}

/// Prints every credential `filter` matches to `out`, then reads the findings for the
/// summary. `now` places expiries (days left, buckets).
pub async fn print(
    store: &dyn InventoryStore,
    filter: &CredentialFilter,
    format: Format,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<Summary, InventoryCliError> {
    let mut summary = Summary::default();
    match format {
        Format::Json => out.write_all(b"[")?,
        Format::Table => writeln!(out, "{}", table_row(&TABLE_HEADER.map(str::to_owned)))?,
        Format::Csv => writeln!(out, "{}", csv_row(&CSV_HEADER.map(str::to_owned)))?,
    }
    let mut credentials = credential_stream(store, filter.clone(), PAGE_SIZE);
    while let Some(credential) = credentials.next().await {
        let credential = credential?;
        match format {
            Format::Json => {
                if summary.printed > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(b"\n  ")?;
                let view = JsonCredential {
                    id: credential.id(),
                    credential: &credential,
                    expiry: credential.expiry_bucket(now),
                };
                serde_json::to_writer(&mut *out, &view).map_err(io::Error::other)?;
            }
            Format::Table => writeln!(out, "{}", table_row(&table_cells(&credential, now)))?,
            Format::Csv => writeln!(out, "{}", csv_row(&csv_cells(&credential, now)))?,
        }
        summary.printed += 1;
        match credential.expiry_bucket(now) {
            ExpiryBucket::Expired => summary.expired += 1,
            ExpiryBucket::NoEndDate => summary.no_end_date += 1,
            _ => {}
        }
        if !credential.managed {
            summary.unmanaged += 1;
        }
    }
    if format == Format::Json {
        out.write_all(if summary.printed > 0 {
            b"\n]\n"
        } else {
            b"]\n"
        })?;
    }
    out.flush()?;
    let mut findings = finding_stream(store, PAGE_SIZE);
    while let Some(finding) = findings.next().await {
        let finding = finding?;
        if finding.kind.is_error() {
            summary.scope_errors += 1;
            if summary.named_errors.len() < ERRORS_NAMED {
                summary.named_errors.push(format!(
                    "{} on {}: {}",
                    finding.kind.as_str(),
                    scope_label(&finding.scope),
                    finding.detail
                ));
            }
        }
    }
    Ok(summary)
}

fn scope_label(scope: &crate::domain::inventory::Scope) -> String {
    use crate::domain::inventory::Scope;
    match scope {
        Scope::Tenant => "the tenant".to_owned(),
        Scope::Subscription { subscription } => format!("subscription {subscription}"),
        Scope::Vault { name, .. } => format!("vault {name}"),
        Scope::DirectoryPage { range } => format!("directory page {range}"),
        Scope::Application { object_id } => format!("application {object_id}"),
        Scope::ServicePrincipal { object_id } => format!("service principal {object_id}"),
        Scope::Credential { id } => format!("credential {id}"),
    }
}

fn source_kind_label(source: &CredentialSource) -> &'static str {
    match source {
        CredentialSource::Vault { .. } => "vault",
        CredentialSource::Application { .. } => "app",
        CredentialSource::ServicePrincipal { .. } => "sp",
    }
}

/// Whole days from `now` to the expiry (negative once expired); `None`: no end date.
fn days_left(credential: &InventoryCredential, now: DateTime<Utc>) -> Option<i64> {
    credential.expires.map(|expires| (expires - now).num_days())
}

/// The owners as one line: the `keyturn-owner` tag, then each owner's UPN, mail or name.
fn owners_line(credential: &InventoryCredential) -> String {
    let mut names: Vec<&str> = credential.owner_tag().into_iter().collect();
    names.extend(credential.owners.iter().filter_map(|owner| {
        owner
            .user_principal_name
            .as_deref()
            .or(owner.mail.as_deref())
            .or(owner.display_name.as_deref())
    }));
    names.join(";")
}

fn handle_text(handle: &CredentialHandle) -> String {
    match handle {
        CredentialHandle::VaultObject { version, .. } => version.clone().unwrap_or_default(),
        CredentialHandle::DirectoryCredential { key_id } => key_id.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Table

const TABLE_HEADER: [&str; 7] = [
    "SOURCE", "NAME", "KIND", "EXPIRES", "DAYS", "MANAGED", "OWNERS",
];
/// Column widths; the last column is not padded. Longer text is cut with `…`.
const TABLE_WIDTHS: [usize; 6] = [28, 32, 19, 10, 6, 7];

fn table_cells(credential: &InventoryCredential, now: DateTime<Utc>) -> [String; 7] {
    [
        format!(
            "{} {}",
            source_kind_label(&credential.source),
            credential.source.label()
        ),
        credential.name.clone(),
        credential.kind.as_str().to_owned(),
        credential.expires.map_or_else(
            || "never".to_owned(),
            |at| at.format("%Y-%m-%d").to_string(),
        ),
        days_left(credential, now).map_or_else(|| "-".to_owned(), |days| days.to_string()),
        if credential.managed { "yes" } else { "no" }.to_owned(),
        owners_line(credential),
    ]
}

fn table_row(cells: &[String; 7]) -> String {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(TABLE_WIDTHS) {
        let cell = printable(cell);
        let shown: String = if cell.chars().count() > width {
            cell.chars()
                .take(width - 1)
                .chain(std::iter::once('…'))
                .collect()
        } else {
            cell
        };
        line.push_str(&format!("{shown:<width$}  "));
    }
    line.push_str(&printable(&cells[6]));
    line.trim_end().to_owned()
}

/// Names come from Azure and may hold control characters (a display name can): they are
/// shown as `?` so a terminal never interprets them.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

// ---------------------------------------------------------------------------------------
// CSV

const CSV_HEADER: [&str; 15] = [
    "id",
    "source_kind",
    "source",
    "source_id",
    "name",
    "kind",
    "version_or_key_id",
    "enabled",
    "not_before",
    "expires",
    "days_left",
    "expiry",
    "managed",
    "owners",
    "scanned_at",
];

fn csv_cells(credential: &InventoryCredential, now: DateTime<Utc>) -> [String; 15] {
    let time = |at: Option<DateTime<Utc>>| at.map(|at| at.to_rfc3339()).unwrap_or_default();
    let source_id = match &credential.source {
        CredentialSource::Vault { uri, .. } => uri.to_string(),
        CredentialSource::Application { app_id, .. }
        | CredentialSource::ServicePrincipal { app_id, .. } => app_id.to_string(),
    };
    [
        credential.id().to_string(),
        credential.source.kind().as_str().to_owned(),
        text_cell(&credential.source.label()),
        source_id,
        text_cell(&credential.name),
        credential.kind.as_str().to_owned(),
        handle_text(&credential.handle),
        credential.enabled.to_string(),
        time(credential.not_before),
        time(credential.expires),
        days_left(credential, now)
            .map(|d| d.to_string())
            .unwrap_or_default(),
        credential.expiry_bucket(now).as_str().to_owned(),
        credential.managed.to_string(),
        text_cell(&owners_line(credential)),
        credential.scanned_at.to_rfc3339(),
    ]
}

/// Text from Azure opened in a spreadsheet must not run as a formula (OWASP "CSV
/// Injection"): a cell starting with `=`, `+`, `-`, `@`, tab or carriage return gets a
/// leading `'`.
fn text_cell(text: &str) -> String {
    let text = printable(text);
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}

fn csv_row(cells: &[String]) -> String {
    cells
        .iter()
        .map(|cell| {
            if cell.contains([',', '"', '\n', '\r']) {
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
    fn spreadsheet_formulas_in_names_are_defused_and_separators_quoted() {
        assert_eq!(text_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(text_cell("-1+2"), "'-1+2");
        assert_eq!(text_cell("db-password"), "db-password");
        assert_eq!(
            csv_row(&[
                "a,b".to_owned(),
                "say \"hi\"".to_owned(),
                "plain".to_owned()
            ]),
            "\"a,b\",\"say \"\"hi\"\"\",plain"
        );
    }

    #[test]
    fn table_cells_are_cut_to_their_column_and_control_characters_hidden() {
        let cells = [
            "vault kv-prod".to_owned(),
            "x".repeat(40),
            "secret".to_owned(),
            "2030-01-01".to_owned(),
            "12".to_owned(),
            "no".to_owned(),
            "evil\u{1b}[31m".to_owned(),
        ];

        let row = table_row(&cells);

        assert!(row.contains(&format!("{}…", "x".repeat(31))), "{row}");
        assert!(!row.contains('\u{1b}'), "{row}");
    }
}
