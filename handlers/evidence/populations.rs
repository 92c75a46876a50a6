//! The CSV populations an auditor samples from, each written row by row as it is read:
//! the inventory, the rotations of the period and the secret reads counted per identity
//! and secret. No population holds a secret value: the inventory and the audit log
//! hold names, versions, key ids and thumbprints only, and nothing else is read.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;

use crate::audit::Action;
use crate::domain::inventory::{
    CredentialFilter, CredentialHandle, CredentialSource, InventoryCredential, InventoryVault,
};
use crate::ports::PortError;
use crate::ports::audit::{AuditEntry, AuditText, Outcome};
use crate::ports::inventory::{InventoryStore, MAX_PAGE_SIZE, credential_stream, vault_stream};

use super::Period;
use super::csv::{Cell, write_header, write_row};
use super::summary::SummaryBuilder;

pub const INVENTORY: &str = "populations/inventory.csv";
pub const VAULTS: &str = "populations/vaults.csv";
pub const ROTATIONS: &str = "populations/rotations.csv";
pub const READS: &str = "populations/secret-reads.csv";

fn time(at: DateTime<Utc>) -> Cell<'static> {
    Cell::Value(at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn maybe_time(at: Option<DateTime<Utc>>) -> Cell<'static> {
    at.map_or(Cell::Value(String::new()), time)
}

fn flag(value: bool) -> Cell<'static> {
    Cell::Value(value.to_string())
}

/// What writing a population can fail on.
#[derive(Debug, thiserror::Error)]
pub enum PopulationError {
    #[error("cannot read the {what}: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: PortError,
    },
    #[error("cannot write the package: {0}")]
    Write(#[from] io::Error),
}

// ---------------------------------------------------------------------------------------
// Inventory

const INVENTORY_COLUMNS: [&str; 19] = [
    "id",
    "source_kind",
    "source",
    "source_id",
    "name",
    "kind",
    "version_or_key_id",
    "enabled",
    "created",
    "not_before",
    "expires",
    "days_left_at_period_end",
    "managed",
    "owners",
    "owner_tag",
    "content_type",
    "key_or_certificate",
    "scanned_at",
    "sweep",
];

/// Every credential in the inventory, a page at a time. The inventory holds the last
/// sweep's view: `scanned_at` says when each row was seen. Returns the rows written.
pub async fn write_inventory(
    store: &dyn InventoryStore,
    period: &Period,
    out: &mut dyn Write,
    figures: &mut SummaryBuilder,
) -> Result<u64, PopulationError> {
    write_header(out, &INVENTORY_COLUMNS)?;
    let mut rows = 0;
    let mut credentials = credential_stream(store, CredentialFilter::default(), MAX_PAGE_SIZE);
    while let Some(credential) = credentials.next().await {
        let credential = credential.map_err(|source| PopulationError::Store {
            what: "inventory",
            source,
        })?;
        write_credential(out, &credential, period.to)?;
        figures.credential(&credential);
        rows += 1;
    }
    Ok(rows)
}

fn write_credential(
    out: &mut dyn Write,
    credential: &InventoryCredential,
    end: DateTime<Utc>,
) -> io::Result<()> {
    let source_id = match &credential.source {
        CredentialSource::Vault { uri, .. } => uri.to_string(),
        CredentialSource::Application { app_id, .. }
        | CredentialSource::ServicePrincipal { app_id, .. } => app_id.to_string(),
    };
    let handle = match &credential.handle {
        CredentialHandle::VaultObject { version, .. } => version.clone().unwrap_or_default(),
        CredentialHandle::DirectoryCredential { key_id } => key_id.to_string(),
    };
    let owners = credential
        .owners
        .iter()
        .filter_map(|owner| {
            owner
                .user_principal_name
                .as_deref()
                .or(owner.mail.as_deref())
                .or(owner.display_name.as_deref())
        })
        .collect::<Vec<_>>()
        .join(";");
    let strength = match (&credential.certificate, &credential.key) {
        (Some(cert), _) => describe_key(
            cert.key_type.as_deref(),
            cert.key_size,
            cert.curve.as_deref(),
        ),
        (None, Some(key)) => {
            describe_key(key.key_type.as_deref(), key.key_size, key.curve.as_deref())
        }
        (None, None) => String::new(),
    };
    let days_left = credential
        .expires
        .map(|expires| (expires - end).num_days().to_string())
        .unwrap_or_default();
    write_row(
        out,
        &[
            Cell::Value(credential.id().to_string()),
            Cell::Value(credential.source.kind().as_str().to_owned()),
            Cell::Text(&credential.source.label()),
            Cell::Text(&source_id),
            Cell::Text(&credential.name),
            Cell::Value(credential.kind.as_str().to_owned()),
            Cell::Text(&handle),
            flag(credential.enabled),
            maybe_time(credential.created),
            maybe_time(credential.not_before),
            maybe_time(credential.expires),
            Cell::Value(days_left),
            flag(credential.managed),
            Cell::Text(&owners),
            Cell::Text(credential.owner_tag().unwrap_or_default()),
            Cell::Text(credential.content_type.as_deref().unwrap_or_default()),
            Cell::Text(&strength),
            time(credential.scanned_at),
            Cell::Text(credential.sweep.as_str()),
        ],
    )
}

fn describe_key(kind: Option<&str>, size: Option<u32>, curve: Option<&str>) -> String {
    [
        kind.map(str::to_owned),
        size.map(|s| s.to_string()),
        curve.map(str::to_owned),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ")
}

const VAULT_COLUMNS: [&str; 10] = [
    "id",
    "name",
    "uri",
    "subscription",
    "resource_group",
    "soft_delete",
    "purge_protection",
    "permission_model",
    "public_network_access",
    "scanned_at",
];

/// Every vault in the inventory with the properties compliance looks at.
pub async fn write_vaults(
    store: &dyn InventoryStore,
    out: &mut dyn Write,
    figures: &mut SummaryBuilder,
) -> Result<u64, PopulationError> {
    write_header(out, &VAULT_COLUMNS)?;
    let mut rows = 0;
    let mut vaults = vault_stream(store, MAX_PAGE_SIZE);
    while let Some(vault) = vaults.next().await {
        let vault = vault.map_err(|source| PopulationError::Store {
            what: "inventory's vaults",
            source,
        })?;
        write_vault(out, &vault)?;
        figures.vault(&vault);
        rows += 1;
    }
    Ok(rows)
}

fn write_vault(out: &mut dyn Write, vault: &InventoryVault) -> io::Result<()> {
    let optional =
        |value: Option<bool>| Cell::Value(value.map(|v| v.to_string()).unwrap_or_default());
    let model = serde_json::to_value(vault.permission_model)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    write_row(
        out,
        &[
            Cell::Value(vault.id().to_string()),
            Cell::Text(vault.name.as_str()),
            Cell::Text(vault.uri.as_str()),
            Cell::Text(
                &vault
                    .subscription
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
            Cell::Text(vault.resource_group.as_deref().unwrap_or_default()),
            optional(vault.soft_delete),
            optional(vault.purge_protection),
            Cell::Value(model),
            Cell::Text(vault.public_network_access.as_deref().unwrap_or_default()),
            time(vault.scanned_at),
        ],
    )
}

// ---------------------------------------------------------------------------------------
// Rotations

const ROTATION_COLUMNS: [&str; 18] = [
    "completed_at",
    "result",
    "vault",
    "object",
    "app_id",
    "old_version",
    "new_version",
    "old_key_id",
    "new_key_id",
    "proof",
    "proven_at",
    "started_at",
    "actor",
    "invocation_id",
    "chain",
    "sequence",
    "action",
    "detail",
];

/// Most objects whose rotation is followed at once. A rotation's steps (a credential
/// added, proven, stored) span minutes to a proof window of hours; an object still
/// open when the bound is reached is the oldest and is let go (its row then lacks
/// `started_at` and `proof`). Bounds memory whatever the log holds.
const MAX_OPEN_ROTATIONS: usize = 100_000;

/// Rotations seen so far in an object's life.
#[derive(Debug, Default, Clone)]
struct Open {
    started_at: Option<DateTime<Utc>>,
    proof: Option<String>,
    proven_at: Option<DateTime<Utc>>,
    seen: u64,
}

/// Follows entries in log order and writes one row per finished rotation stamped in
/// the period: a secret stored as a new version (`secret.rotated`), a certificate renewed
/// (`certificate.renewed`) or a rotation that failed for good (`rotation.failed`). The
/// steps before (the credential added and proven, the renewal started) fill in the
/// row's start and proof; a rotation without such a step (a generated secret, stored in
/// one step) started when its worker invocation received the job (`job.received`). The
/// previous rotation of the same object gives the old key id.
#[derive(Debug, Default)]
pub struct Rotations {
    open: HashMap<String, Open>,
    /// The key id each object's last rotation put in place (bounded like `open`).
    last_key: HashMap<String, String>,
    /// When each worker invocation received its job, by chain and invocation id (bounded
    /// like `open`; a rotation takes its invocation's and removes it).
    jobs: HashMap<(String, String), DateTime<Utc>>,
    tick: u64,
    pub rows: u64,
}

fn object_key(entry: &AuditEntry) -> Option<String> {
    let object = &entry.record.object;
    let text = |t: &Option<AuditText>| text_of(t).unwrap_or_default().to_owned();
    (object.secret_name.is_some() || object.app_id.is_some()).then(|| {
        format!(
            "{}|{}|{}",
            text(&object.vault),
            text(&object.secret_name),
            text(&object.app_id)
        )
    })
}

fn text_of(text: &Option<AuditText>) -> Option<&str> {
    text.as_ref().map(AuditText::as_str)
}

impl Rotations {
    pub fn header(out: &mut dyn Write) -> io::Result<()> {
        write_header(out, &ROTATION_COLUMNS)
    }

    /// Takes the next entry of a chain; writes a row when it finishes a rotation in
    /// `period`.
    pub fn take(
        &mut self,
        chain: &str,
        entry: &AuditEntry,
        period: &Period,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let Some(action) = Action::parse(entry.record.action.as_str()) else {
            return Ok(());
        };
        if action == Action::JobReceived {
            // A worker's invocation starts with the job it received; a rotation with no
            // earlier step of its own (a generated secret) started then.
            if let Some(invocation) = text_of(&entry.record.invocation_id) {
                if self.jobs.len() >= MAX_OPEN_ROTATIONS {
                    self.jobs.clear();
                }
                self.jobs
                    .insert((chain.to_owned(), invocation.to_owned()), entry.record.at);
            }
            return Ok(());
        }
        let Some(key) = object_key(entry) else {
            return Ok(());
        };
        self.tick += 1;
        match action {
            Action::CredentialAdded
            | Action::CertificateRenewalStarted
            | Action::CredentialPending => {
                let open = self.open_mut(&key);
                if open.started_at.is_none() {
                    open.started_at = Some(entry.record.at);
                }
            }
            Action::CredentialProving if entry.record.outcome == Outcome::Failed => {
                let open = self.open_mut(&key);
                open.proof = entry
                    .record
                    .reason
                    .as_ref()
                    .map(|r| format!("not proven: {r}"));
            }
            Action::CredentialProven => {
                let open = self.open_mut(&key);
                open.proof = Some(
                    entry
                        .record
                        .reason
                        .as_ref()
                        .map_or_else(|| "proven".to_owned(), |r| format!("proven: {r}")),
                );
                open.proven_at = Some(entry.record.at);
            }
            Action::SecretRotated | Action::CertificateRenewed | Action::RotationFailed => {
                let mut open = self.open.remove(&key).unwrap_or_default();
                if open.started_at.is_none() {
                    open.started_at = text_of(&entry.record.invocation_id).and_then(|invocation| {
                        self.jobs.remove(&(chain.to_owned(), invocation.to_owned()))
                    });
                }
                let new_key = entry.record.object.key_id.as_ref().map(AuditText::as_str);
                let old_key = if action == Action::SecretRotated {
                    match new_key {
                        Some(new_key) => self.last_key.insert(key.clone(), new_key.to_owned()),
                        None => None,
                    }
                } else {
                    self.last_key.get(&key).cloned()
                };
                if self.last_key.len() > MAX_OPEN_ROTATIONS {
                    self.last_key.clear();
                }
                if period.contains(entry.record.at) {
                    self.write(chain, entry, action, open, old_key, out)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn open_mut(&mut self, key: &str) -> &mut Open {
        if !self.open.contains_key(key) && self.open.len() >= MAX_OPEN_ROTATIONS {
            // Let the oldest go: the one seen longest ago.
            if let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, open)| open.seen)
                .map(|(key, _)| key.clone())
            {
                self.open.remove(&oldest);
            }
        }
        let tick = self.tick;
        let open = self.open.entry(key.to_owned()).or_default();
        open.seen = tick;
        open
    }

    fn write(
        &mut self,
        chain: &str,
        entry: &AuditEntry,
        action: Action,
        open: Open,
        old_key: Option<String>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let record = &entry.record;
        let object = &record.object;
        let text = text_of;
        let result = match action {
            Action::SecretRotated => "rotated",
            Action::CertificateRenewed => "renewed",
            _ => "failed",
        };
        let reason = text(&record.reason).unwrap_or_default();
        // Rotations and renewals record the version they replace as "replaces version X".
        let old_version = reason
            .split("replaces version ")
            .nth(1)
            .map(|rest| rest.split([' ', ';', ',']).next().unwrap_or_default())
            .unwrap_or_default();
        let (new_version, new_key) = if result == "failed" {
            (None, None)
        } else {
            (text(&object.secret_version), text(&object.key_id))
        };
        let proof = match (&open.proof, result, text(&object.app_id)) {
            (Some(proof), _, _) => proof.clone(),
            (None, "failed", _) => String::new(),
            (None, _, Some(_)) => "no proof recorded in the log".to_owned(),
            (None, _, None) => "not applicable (no credential to prove)".to_owned(),
        };
        write_row(
            out,
            &[
                time(record.at),
                Cell::Value(result.to_owned()),
                text(&object.vault).into(),
                text(&object.secret_name).into(),
                text(&object.app_id).into(),
                Cell::Text(old_version),
                new_version.into(),
                Cell::Text(old_key.as_deref().unwrap_or_default()),
                new_key.into(),
                Cell::Text(&proof),
                maybe_time(open.proven_at),
                maybe_time(open.started_at),
                Cell::Text(record.actor.name().as_str()),
                text(&record.invocation_id).into(),
                Cell::Value(chain.to_owned()),
                entry.sequence.into(),
                Cell::Value(action.as_str().to_owned()),
                Cell::Text(reason),
            ],
        )?;
        self.rows += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Secret reads

const READ_COLUMNS: [&str; 10] = [
    "actor_kind",
    "identity",
    "vault",
    "secret",
    "granted",
    "refused",
    "failed",
    "entries",
    "first_at",
    "last_at",
];

#[derive(Debug, Default, Clone)]
struct ReadCount {
    granted: u64,
    refused: u64,
    failed: u64,
    entries: u64,
    first_at: Option<DateTime<Utc>>,
    last_at: Option<DateTime<Utc>>,
}

/// Secret reads counted per identity and secret: granted, refused (a folded refusal
/// counts every repeat it stands for) and failed. Memory holds one count per identity
/// and secret pair, however many reads the period holds.
#[derive(Debug, Default)]
pub struct Reads {
    counts: BTreeMap<(String, String, String, String), ReadCount>,
}

impl Reads {
    /// Counts `entry` when it is a secret read stamped in `period`.
    pub fn take(&mut self, entry: &AuditEntry, period: &Period) {
        let record = &entry.record;
        if Action::parse(record.action.as_str()) != Some(Action::SecretRead)
            || !period.contains(record.at)
        {
            return;
        }
        let text = |t: &Option<AuditText>| t.as_ref().map(AuditText::to_string).unwrap_or_default();
        let key = (
            record.actor.kind().to_owned(),
            record.actor.name().to_string(),
            text(&record.object.vault),
            text(&record.object.secret_name),
        );
        let count = self.counts.entry(key).or_default();
        let occurrences = record.occurrences();
        match record.outcome {
            Outcome::Succeeded => count.granted += occurrences,
            Outcome::Denied => count.refused += occurrences,
            Outcome::Failed | Outcome::Skipped => count.failed += occurrences,
        }
        count.entries += 1;
        if count.first_at.is_none_or(|first| record.at < first) {
            count.first_at = Some(record.at);
        }
        if count.last_at.is_none_or(|last| record.at > last) {
            count.last_at = Some(record.at);
        }
    }

    /// Writes the counts, one row per identity and secret; returns the rows.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<u64> {
        write_header(out, &READ_COLUMNS)?;
        for ((kind, identity, vault, secret), count) in &self.counts {
            write_row(
                out,
                &[
                    Cell::Value(kind.clone()),
                    Cell::Text(identity),
                    Cell::Text(vault),
                    Cell::Text(secret),
                    count.granted.into(),
                    count.refused.into(),
                    count.failed.into(),
                    count.entries.into(),
                    maybe_time(count.first_at),
                    maybe_time(count.last_at),
                ],
            )?;
        }
        Ok(self.counts.len() as u64)
    }
}
