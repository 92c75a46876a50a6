//! What `keyturn dev` shows as rotation happens: it follows the audit log (every chain,
//! from where it last read) and turns each rotation step into one line. The audit log
//! holds no secret value, so neither do these lines.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::ports::audit::{AuditEntry, AuditRecord, AuditStore, Outcome};

/// Entries read per page.
const PAGE: u32 = 500;

/// Reads the audit log's entries as they are appended, on every chain.
pub(crate) struct Follower {
    store: Arc<dyn AuditStore>,
    /// The last position read on each chain.
    read_up_to: BTreeMap<String, u64>,
}

impl Follower {
    /// Follows from the log's current end: what is already there was shown before.
    pub(crate) async fn from_now(store: Arc<dyn AuditStore>) -> Self {
        let mut follower = Self {
            store,
            read_up_to: BTreeMap::new(),
        };
        for (name, chain) in follower.chains().await {
            let head = match chain.head().await {
                Ok(Some(head)) => head.position,
                _ => 0,
            };
            follower.read_up_to.insert(name, head);
        }
        follower
    }

    async fn chains(&self) -> Vec<(String, Arc<dyn AuditStore>)> {
        let Ok(survey) = self.store.survey().await else {
            return Vec::new();
        };
        survey
            .chains
            .iter()
            .filter_map(|c| Some((c.as_str().to_owned(), self.store.for_chain(c)?)))
            .collect()
    }

    /// Follows from the log's first entry.
    pub(crate) fn from_start(store: Arc<dyn AuditStore>) -> Self {
        Self {
            store,
            read_up_to: BTreeMap::new(),
        }
    }

    /// The entries appended since the last call, oldest first.
    pub(crate) async fn next(&mut self) -> Vec<AuditEntry> {
        let mut entries = Vec::new();
        for (name, chain) in self.chains().await {
            let read = self.read_up_to.entry(name).or_insert(0);
            loop {
                let page = match chain.read(*read + 1, PAGE).await {
                    Ok(page) if !page.is_empty() => page,
                    _ => break,
                };
                for stored in page {
                    *read = stored.position;
                    if let Ok(entry) = stored.content {
                        entries.push(entry);
                    }
                }
            }
        }
        entries.sort_by_key(|e| e.record.at);
        entries
    }
}

/// The object a step is about: its secret's name, else its application.
fn subject(record: &AuditRecord) -> &str {
    let object = &record.object;
    object
        .secret_name
        .as_ref()
        .or(object.app_id.as_ref())
        .map_or("-", |t| t.as_str())
}

/// An identifier cut to its first characters: enough to tell versions apart.
fn short(text: Option<&crate::ports::audit::AuditText>) -> String {
    let text = text.map_or("?", |t| t.as_str());
    match text.char_indices().nth(8) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A reason without the `job <id>: ` it starts with (the job is the same for every step).
fn without_job(reason: &str) -> &str {
    reason
        .strip_prefix("job ")
        .and_then(|rest| rest.split_once(": "))
        .filter(|(id, _)| id.chars().all(|c| c.is_ascii_hexdigit()))
        .map_or(reason, |(_, rest)| rest)
}

/// The line shown for one audit entry, or `None` for entries that are no rotation step.
pub(crate) fn line(record: &AuditRecord) -> Option<String> {
    let reason = without_job(record.reason.as_ref().map_or("", |r| r.as_str()));
    let object = &record.object;
    let key = || short(object.key_id.as_ref());
    let version = || short(object.secret_version.as_ref());
    let step = match record.action.as_str() {
        "credential.added" => format!("added credential {} ({reason})", key()),
        "credential.pending" => format!("staged credential {} ({reason})", key()),
        "credential.proving" if record.outcome == Outcome::Succeeded => {
            format!("proving: {reason}")
        }
        "credential.proving" => format!("proof not yet: {reason}"),
        "credential.proven" => format!("proven: {reason}"),
        "secret.rotated" if object.key_id.is_some() => {
            format!("promoted version {} (credential {})", version(), key())
        }
        "secret.rotated" => format!("rotated to version {}", version()),
        "certificate.renewal_started" => format!("renewal started ({reason})"),
        "certificate.renewal_pending" => format!("renewal pending ({reason})"),
        "certificate.renewed" => format!("renewed certificate, version {}", version()),
        "retirement.scheduled" => format!("retirement scheduled ({reason})"),
        "credential.retired" if record.outcome == Outcome::Succeeded => {
            format!("retired credential {}", key())
        }
        "credential.retired" => format!("kept credential {}: {reason}", key()),
        "credential.removed" => format!("removed credential {}: {reason}", key()),
        "credential.pending_removed" => format!("removed pending credential {}: {reason}", key()),
        "credential.orphan_removed" => format!("removed stray credential {}: {reason}", key()),
        "rotation.skipped" => format!("skipped: {reason}"),
        "rotation.failed" | "invocation.failed" => format!("FAILED: {reason}"),
        _ => return None,
    };
    Some(format!(
        "{}  {}  {step}",
        record.at.format("%H:%M:%S"),
        subject(record)
    ))
}

/// Actions that begin or advance a rotation's proof.
const PROVING: [&str; 4] = [
    "credential.added",
    "credential.pending",
    "credential.proving",
    "credential.proven",
];

/// Actions that end a rotation, proven or not.
const ENDED: [&str; 5] = [
    "secret.rotated",
    "certificate.renewed",
    "credential.removed",
    "credential.pending_removed",
    "rotation.failed",
];

/// The objects whose rotation added a credential and has not ended yet (still proving),
/// each with the last step's reason, in the order of `entries`.
pub(crate) fn still_proving(entries: &[AuditEntry]) -> Vec<(String, Option<String>)> {
    let mut open: Vec<(String, Option<String>)> = Vec::new();
    for entry in entries {
        let record = &entry.record;
        let Some(name) = record.object.secret_name.as_ref().map(|n| n.as_str()) else {
            continue;
        };
        let action = record.action.as_str();
        if PROVING.contains(&action) {
            let reason = record.reason.as_ref().map(|r| r.as_str().to_owned());
            match open.iter_mut().find(|(n, _)| n == name) {
                Some(found) => found.1 = reason,
                None => open.push((name.to_owned(), reason)),
            }
        } else if ENDED.contains(&action) {
            open.retain(|(n, _)| n != name);
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::without_job;

    #[test]
    fn the_job_prefix_is_dropped_from_a_reason_and_nothing_else() {
        assert_eq!(without_job("job 01ab: accepted 1/2"), "accepted 1/2");
        assert_eq!(without_job("job is done: x"), "job is done: x");
        assert_eq!(without_job("accepted 1/2"), "accepted 1/2");
    }
}
