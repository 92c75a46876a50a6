//! Keeps `infra/` (the Bicep deployment) in step with the code: app-setting names, function
//! names and the Event Grid event types the rotator is subscribed to.
//!
//! The Bicep writes every app setting as a one-line `{ name: '<NAME>', value: ... }` entry,
//! and each app's own settings live in one `var <app>AppSettings = [ ... ]` block of
//! `infra/main.bicep`; these tests read those shapes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use keyturn::config::{self, ReadBy, Required, SETTINGS};
use keyturn::events::keyvault::KeyVaultEventKind;

/// Settings the Functions platform reads that keyturn neither reads nor lists in
/// `config::SETTINGS`: the runtime version, identity-based host storage and Entra-authenticated
/// Application Insights. `WEBSITE_*` platform settings and `AzureWebJobs.<Function>.Disabled`
/// flags are allowed by shape in [`is_platform_setting`].
const HOST_SETTINGS: [&str; 6] = [
    "FUNCTIONS_EXTENSION_VERSION",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
];

/// What the rotator needs in Azure beyond the settings `config::SETTINGS` marks as required:
/// its user-assigned identity (for keyturn and for the host's Service Bus trigger), the Table
/// audit store reached with that identity, and the names its bindings resolve.
const ROTATOR_AZURE_SETTINGS: [&str; 9] = [
    "KEYTURN_CREDENTIAL",
    "AZURE_CLIENT_ID",
    "KEYTURN_AUDIT_STORE",
    "KEYTURN_AUDIT_TABLE",
    "KEYTURN_TABLE_ENDPOINT",
    "KEYTURN_ROTATION_QUEUE",
    "KEYTURN_SWEEP_SCHEDULE",
    "ServiceBusConnection__credential",
    "ServiceBusConnection__clientId",
];

const SETTING_ENTRY_PREFIX: &str = "{ name: '";
const DISABLED_PREFIX: &str = "AzureWebJobs.";
const DISABLED_SUFFIX: &str = ".Disabled";
const FUNCTION_DESTINATION_MARKER: &str = "/functions/";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct BicepFile {
    path: PathBuf,
    text: String,
}

fn bicep_files() -> Vec<BicepFile> {
    fn walk(dir: &Path, out: &mut Vec<BicepFile>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry is readable").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "bicep") {
                let text = fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                out.push(BicepFile { path, text });
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo_root().join("infra"), &mut files);
    assert!(!files.is_empty(), "no Bicep files under infra/");
    files
}

fn main_bicep() -> String {
    let path = repo_root().join("infra").join("main.bicep");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The setting name of a one-line `{ name: 'X', value: ... }` entry, if the line is one.
fn setting_entry(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix(SETTING_ENTRY_PREFIX)?;
    let (name, after) = rest.split_once('\'')?;
    after.trim_start().starts_with(", value:").then_some(name)
}

/// Every app-setting name written anywhere in the given Bicep text.
fn setting_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(setting_entry)
        .map(str::to_string)
        .collect()
}

/// The lines of `var <name> = [` up to its closing `]` at the start of a line.
fn var_block<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
    let opening = format!("var {name} = [");
    let mut lines = text.lines().skip_while(|l| l.trim() != opening);
    assert!(
        lines.next().is_some(),
        "`{opening}` not found in infra/main.bicep"
    );
    lines.take_while(|l| *l != "]").collect()
}

fn app_settings(app_block: &str) -> BTreeSet<String> {
    let main = main_bicep();
    let names: BTreeSet<String> = var_block(&main, app_block)
        .into_iter()
        .filter_map(setting_entry)
        .map(str::to_string)
        .collect();
    assert!(!names.is_empty(), "{app_block} holds no settings");
    names
}

/// The function named by an `AzureWebJobs.<Function>.Disabled` setting.
fn disabled_function(setting: &str) -> Option<&str> {
    setting
        .strip_prefix(DISABLED_PREFIX)?
        .strip_suffix(DISABLED_SUFFIX)
        .filter(|f| !f.is_empty() && !f.contains('.'))
}

fn is_platform_setting(name: &str) -> bool {
    HOST_SETTINGS.contains(&name)
        || name.starts_with("WEBSITE_")
        || disabled_function(name).is_some()
}

fn disabled_functions(settings: &BTreeSet<String>) -> BTreeSet<String> {
    settings
        .iter()
        .filter_map(|s| disabled_function(s))
        .map(str::to_string)
        .collect()
}

/// Function names in Event Grid destinations: `'${...}/functions/<Function>'`.
fn destination_functions(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once(FUNCTION_DESTINATION_MARKER))
        .filter_map(|(_, rest)| rest.split_once('\''))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The quoted strings of the `includedEventTypes: [ ... ]` array in the given text.
fn included_event_types(text: &str) -> Option<BTreeSet<String>> {
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != "includedEventTypes: [");
    lines.next()?;
    Some(
        lines
            .take_while(|l| l.trim() != "]")
            .filter_map(|l| l.trim().strip_prefix('\'')?.strip_suffix('\''))
            .map(str::to_string)
            .collect(),
    )
}

fn function_definition_folders() -> BTreeSet<String> {
    let dir = repo_root().join("function-definitions");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry is readable").path())
        .filter(|p| p.join("function.json").is_file())
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect()
}

fn rotation_trigger_event_types() -> BTreeSet<String> {
    KeyVaultEventKind::ROTATION_TRIGGERS
        .iter()
        .map(|kind| kind.event_type().to_string())
        .collect()
}

#[test]
fn every_app_setting_the_bicep_writes_is_read_by_keyturn_or_its_host() {
    let mut unknown = Vec::new();
    let mut seen = 0;
    for file in bicep_files() {
        for name in setting_names(&file.text) {
            seen += 1;
            if config::spec(&name).is_none() && !is_platform_setting(&name) {
                unknown.push(format!("{name} ({})", file.path.display()));
            }
        }
    }
    assert!(
        seen > 0,
        "no `{{ name: '...', value: ... }}` setting entries found in infra/"
    );
    assert!(
        unknown.is_empty(),
        "app settings written by Bicep that neither keyturn::config::SETTINGS nor the host \
         allow-list knows: {unknown:?}"
    );
}

#[test]
fn the_rotator_gets_every_setting_rotation_needs_in_azure() {
    let rotator = app_settings("rotatorAppSettings");
    let required_by_code = SETTINGS.iter().filter(|s| {
        matches!(s.read_by, ReadBy::Keyturn | ReadBy::Both)
            && s.required != Required::Never
            && s.default.is_none()
    });
    let missing: Vec<&str> = required_by_code
        .map(|s| s.name)
        .chain(ROTATOR_AZURE_SETTINGS)
        .filter(|name| !rotator.contains(*name))
        .collect();
    assert!(missing.is_empty(), "rotatorAppSettings lacks {missing:?}");
}

#[test]
fn the_azure_only_settings_the_test_expects_are_real_settings() {
    for name in ROTATOR_AZURE_SETTINGS {
        assert!(
            config::spec(name).is_some(),
            "{name} is not in keyturn::config::SETTINGS"
        );
    }
}

#[test]
fn the_bicep_writes_no_secret_setting() {
    let secrets: Vec<String> = bicep_files()
        .iter()
        .flat_map(|f| setting_names(&f.text))
        .filter(|name| config::spec(name).is_some_and(|s| s.secret))
        .collect();
    assert!(
        secrets.is_empty(),
        "deploying keyturn must need no secret, yet Bicep writes {secrets:?}"
    );
}

#[test]
fn every_function_the_bicep_names_exists_in_function_definitions() {
    let folders = function_definition_folders();
    let mut named = Vec::new();
    for file in bicep_files() {
        named.extend(
            setting_names(&file.text)
                .iter()
                .filter_map(|s| disabled_function(s).map(str::to_string)),
        );
        named.extend(destination_functions(&file.text));
    }
    assert!(
        named.iter().any(|f| f == "KeyVaultEvents"),
        "no Event Grid destination `/functions/KeyVaultEvents` found in infra/"
    );
    let missing: Vec<&String> = named.iter().filter(|f| !folders.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "functions named in Bicep but absent from function-definitions/: {missing:?}"
    );
}

#[test]
fn each_app_disables_exactly_the_functions_it_does_not_serve() {
    let all = function_definition_folders();
    let rotation: BTreeSet<String> = config::ROTATION_FUNCTIONS
        .iter()
        .map(|f| f.to_string())
        .collect();

    let rotator_disabled = disabled_functions(&app_settings("rotatorAppSettings"));
    let endpoint_disabled = disabled_functions(&app_settings("endpointAppSettings"));

    let rotator_expected: BTreeSet<String> = all.difference(&rotation).cloned().collect();
    let endpoint_expected: BTreeSet<String> = all
        .iter()
        .filter(|f| *f != "SecretEndpoint")
        .cloned()
        .collect();
    assert_eq!(
        rotator_disabled, rotator_expected,
        "rotator's Disabled flags"
    );
    assert_eq!(
        endpoint_disabled, endpoint_expected,
        "endpoint's Disabled flags"
    );
}

#[test]
fn the_event_grid_subscription_delivers_exactly_the_rotation_triggers() {
    let subscriptions: Vec<(PathBuf, BTreeSet<String>)> = bicep_files()
        .into_iter()
        .filter_map(|f| included_event_types(&f.text).map(|types| (f.path, types)))
        .collect();
    assert!(
        !subscriptions.is_empty(),
        "no `includedEventTypes: [` array found in infra/"
    );
    let expected = rotation_trigger_event_types();
    for (path, types) in subscriptions {
        assert_eq!(types, expected, "includedEventTypes in {}", path.display());
    }
}

#[test]
fn setting_entries_are_recognised_only_in_their_one_line_shape() {
    assert_eq!(
        setting_entry("  { name: 'KEYTURN_VAULTS', value: join(vaultUrls, ',') }"),
        Some("KEYTURN_VAULTS")
    );
    assert_eq!(setting_entry("  name: 'KEYTURN_VAULTS'"), None);
    assert_eq!(setting_entry("  { name: 'plan', kind: 'linux' }"), None);
    assert_eq!(setting_entry("// { name: 'X', value: 'y' }"), None);
}

#[test]
fn disabled_flags_name_their_function_and_nothing_else_does() {
    assert_eq!(
        disabled_function("AzureWebJobs.KeyVaultEvents.Disabled"),
        Some("KeyVaultEvents")
    );
    assert_eq!(
        disabled_function("AzureWebJobs__KeyVaultEvents__Disabled"),
        None
    );
    assert_eq!(disabled_function("AzureWebJobs..Disabled"), None);
    assert_eq!(disabled_function("AzureWebJobsStorage__accountName"), None);
}
