//! Keeps `infra/` (the Bicep deployment) in step with the code and with its own README:
//! app-setting names, function names, the Event Grid event types the rotator is subscribed
//! to, the plan-dependent site properties, the endpoint's trust in `X-ARR-ClientCert`, the
//! roles, the cloud-dependent host names and the deployment steps.
//!
//! The Bicep writes every app setting as a one-line `{ name: '<NAME>', value: ... }` entry,
//! and each app's own settings live in one `var <app>AppSettings = [ ... ]` block of
//! `infra/main.bicep`; top-level declarations (`param`, `var`, `resource`, `module`) end at
//! a closing line in column 0. These tests read those shapes; no Bicep compiler runs here.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use keyturn::config::{self, ReadBy, Required, SETTINGS};
use keyturn::events::keyvault::KeyVaultEventKind;

/// Settings the Functions platform reads that keyturn neither reads nor lists in
/// `config::SETTINGS`: the runtime version, identity-based host storage and Entra-authenticated
/// Application Insights. `WEBSITE_*` platform settings and `AzureWebJobs.<Function>.Disabled`
/// flags are allowed by shape in [`is_platform_setting`].
const HOST_SETTINGS: [&str; 8] = [
    "FUNCTIONS_EXTENSION_VERSION",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
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

/// A file under `infra/`, by its path relative to that folder.
fn infra_file(relative: &str) -> String {
    let path = repo_root().join("infra").join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn main_bicep() -> String {
    infra_file("main.bicep")
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
fn discovery_reads_the_subscriptions_the_bicep_grants_it() {
    let main = main_bicep();
    let line = var_block(&main, "rotatorAppSettings")
        .into_iter()
        .find(|line| setting_entry(line) == Some("KEYTURN_DISCOVERY_SUBSCRIPTIONS"))
        .expect("rotatorAppSettings sets KEYTURN_DISCOVERY_SUBSCRIPTIONS");
    assert!(
        line.contains("value: join(discoverySubscriptions, ',') }"),
        "{line}"
    );
    assert!(param_default(&main, "discoverySubscriptions").is_some());
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

// ---------------------------------------------------------------------------------------
// Plan-dependent site properties, the endpoint's front end, roles, clouds and the README.
// ---------------------------------------------------------------------------------------

/// siteConfig properties Resource Manager refuses, or Flex Consumption does not have, on
/// Flex Consumption sites (ftpsState: error 51021).
const DEDICATED_ONLY_SITE_PROPERTIES: [&str; 5] = [
    "ftpsState",
    "remoteDebuggingEnabled",
    "vnetRouteAllEnabled",
    "alwaysOn",
    "linuxFxVersion",
];

/// Built-in role definition ids, the same in every tenant.
const READER_ROLE: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
const SERVICE_BUS_DATA_OWNER_ROLE: &str = "090c5cfd-751d-490a-894a-3ce6f1109419";
const SERVICE_BUS_DATA_SENDER_ROLE: &str = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39";
const SERVICE_BUS_DATA_RECEIVER_ROLE: &str = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0";
/// Microsoft Graph's application id: a well-known application, not a role.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// Host names that exist in the public cloud only; sovereign clouds have their own.
const PUBLIC_CLOUD_HOSTS: [&str; 4] = [
    "core.windows.net",
    "servicebus.windows.net",
    "vault.azure.net",
    "vaultcore.azure.net",
];

/// A cloud as `environment()` describes it (its storage and Key Vault DNS suffixes), with
/// the private DNS zone names Microsoft documents for Service Bus and Key Vault there.
struct Cloud {
    name: &'static str,
    storage_suffix: &'static str,
    keyvault_dns: &'static str,
    service_bus_zone: &'static str,
    vault_zone: &'static str,
}

const CLOUDS: [Cloud; 3] = [
    Cloud {
        name: "AzureCloud",
        storage_suffix: "core.windows.net",
        keyvault_dns: ".vault.azure.net",
        service_bus_zone: "privatelink.servicebus.windows.net",
        vault_zone: "privatelink.vaultcore.azure.net",
    },
    Cloud {
        name: "AzureUSGovernment",
        storage_suffix: "core.usgovcloudapi.net",
        keyvault_dns: ".vault.usgovcloudapi.net",
        service_bus_zone: "privatelink.servicebus.usgovcloudapi.net",
        vault_zone: "privatelink.vaultcore.usgovcloudapi.net",
    },
    Cloud {
        name: "AzureChinaCloud",
        storage_suffix: "core.chinacloudapi.cn",
        keyvault_dns: ".vault.azure.cn",
        service_bus_zone: "privatelink.servicebus.chinacloudapi.cn",
        vault_zone: "privatelink.vaultcore.azure.cn",
    },
];

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with("//")
}

/// The line indices of the body of the top-level declaration whose first line starts with
/// `opening`: the lines after it, up to its closing line in column 0 (`}`, `]` or `}]`).
fn top_level_block_range(text: &str, opening: &str) -> std::ops::Range<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(opening))
        .unwrap_or_else(|| panic!("no declaration starting `{opening}`"))
        + 1;
    let len = lines[start..]
        .iter()
        .take_while(|l| !matches!(**l, "}" | "]" | "}]"))
        .count();
    start..start + len
}

fn top_level_block<'t>(text: &'t str, opening: &str) -> Vec<&'t str> {
    let range = top_level_block_range(text, opening);
    text.lines()
        .skip(range.start)
        .take(range.end - range.start)
        .collect()
}

/// The first line starting with `opening`.
fn declaration_line<'t>(text: &'t str, opening: &str) -> &'t str {
    text.lines()
        .find(|l| l.starts_with(opening))
        .unwrap_or_else(|| panic!("no line starting `{opening}`"))
}

/// The default of `param <name> <type> = <default>`, as written; None without a default.
fn param_default<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let prefix = format!("param {name} ");
    let line = declaration_line(text, &prefix);
    line.split_once(" = ").map(|(_, default)| default.trim())
}

/// The decorator (and comment) lines directly above `param <name>`, up to a blank line.
fn param_decorators<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
    let lines: Vec<&str> = text.lines().collect();
    let prefix = format!("param {name} ");
    let at = lines
        .iter()
        .position(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `param {name}`"));
    lines[..at]
        .iter()
        .rev()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("param "))
        .copied()
        .collect()
}

/// The text of `@description('...')` above `param <name>`.
fn param_description(text: &str, name: &str) -> String {
    param_decorators(text, name)
        .into_iter()
        .find_map(|l| l.strip_prefix("@description('")?.strip_suffix("')"))
        .unwrap_or_else(|| panic!("`param {name}` has no @description"))
        .to_string()
}

/// The expression of a one-line `var <name> = <expression>`.
fn var_expression<'t>(text: &'t str, name: &str) -> &'t str {
    let prefix = format!("var {name} = ");
    declaration_line(text, &prefix)
        .strip_prefix(&prefix)
        .expect("the line starts with the prefix")
}

/// Evaluates `replace(<input>, '<from>', '<to>')` as Bicep does (every occurrence), with
/// `input_name` standing for `input`.
fn bicep_replace(expression: &str, input_name: &str, input: &str) -> String {
    let args = expression
        .strip_prefix("replace(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`{expression}` is not a replace() call"));
    let parts: Vec<&str> = args.split(", ").collect();
    assert_eq!(
        parts.len(),
        3,
        "replace() takes three arguments: {expression}"
    );
    assert_eq!(parts[0], input_name, "replace() input in {expression}");
    let quoted = |s: &str| -> String {
        s.strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .unwrap_or_else(|| panic!("`{s}` is not a string literal"))
            .to_string()
    };
    input.replace(&quoted(parts[1]), &quoted(parts[2]))
}

/// Every GUID written as a quoted string in the text.
fn quoted_guids(text: &str) -> BTreeSet<String> {
    let is_guid = |s: &str| {
        s.len() == 36
            && s.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            })
    };
    text.split('\'')
        .skip(1)
        .step_by(2)
        .filter(|s| is_guid(s))
        .map(str::to_string)
        .collect()
}

/// The lines of a Markdown section: from its heading to the next heading of the same level.
fn markdown_section<'t>(text: &'t str, heading: &str) -> Vec<&'t str> {
    let level = heading.split(' ').next().expect("a heading has a level");
    let mut lines = text.lines().skip_while(|l| l.trim() != heading);
    assert!(lines.next().is_some(), "`{heading}` not found");
    lines
        .take_while(|l| l.split(' ').next() != Some(level))
        .collect()
}

/// The shell commands of the ```sh blocks in a Markdown text, continuation lines joined.
fn shell_commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = line.trim_start() == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

/// What main.bicep does to baseName, read from its own expressions: lower-case, keep the
/// allowed characters, fall back to a default when nothing is left.
fn derived_base_name(main: &str, base_name: &str) -> String {
    let kept = var_expression(main, "baseNameKept");
    let allowed = kept
        .split('\'')
        .nth(1)
        .unwrap_or_else(|| panic!("no quoted character set in `{kept}`"));
    let fallback = var_expression(main, "base")
        .split('\'')
        .nth(1)
        .expect("a quoted fallback name");
    let derived: String = base_name
        .to_lowercase()
        .chars()
        .filter(|c| allowed.contains(*c))
        .collect();
    if derived.is_empty() {
        fallback.to_string()
    } else {
        derived
    }
}

#[test]
fn plan_specific_site_properties_are_sent_to_dedicated_plans_only() {
    let app = infra_file("modules/function-app.bicep");
    let dedicated = top_level_block_range(&app, "var dedicatedSiteConfig = {");
    let body: Vec<&str> = app
        .lines()
        .skip(dedicated.start)
        .take(dedicated.len())
        .collect();
    for property in DEDICATED_ONLY_SITE_PROPERTIES {
        let key = format!("{property}:");
        assert!(
            body.iter().any(|l| l.trim_start().starts_with(&key)),
            "dedicatedSiteConfig does not set {property}"
        );
        for file in bicep_files() {
            let stray: Vec<usize> = file
                .text
                .lines()
                .enumerate()
                .filter(|(i, l)| {
                    !is_comment(l)
                        && l.trim_start().starts_with(&key)
                        && !(file.path.ends_with("function-app.bicep") && dedicated.contains(i))
                })
                .map(|(i, _)| i + 1)
                .collect();
            assert!(
                stray.is_empty(),
                "{property} is set outside dedicatedSiteConfig, {} line(s) {stray:?}: Flex \
                 Consumption refuses it",
                file.path.display()
            );
        }
    }

    assert!(
        app.lines()
            .any(|l| l.trim() == "var isFlex = hostingPlan == 'FlexConsumption'"),
        "isFlex no longer means the Flex Consumption plan"
    );
    let uses: Vec<&str> = app
        .lines()
        .filter(|l| !is_comment(l) && l.contains("dedicatedSiteConfig"))
        .filter(|l| !l.starts_with("var dedicatedSiteConfig = {"))
        .collect();
    assert_eq!(uses.len(), 1, "dedicatedSiteConfig is used {uses:?}");
    assert!(
        uses[0].contains("isFlex ? {} : dedicatedSiteConfig"),
        "dedicatedSiteConfig must be added on Dedicated plans only: {}",
        uses[0]
    );
}

#[test]
fn the_ftp_publishing_policy_is_sent_to_dedicated_plans_only_and_scm_to_both() {
    let app = infra_file("modules/function-app.bicep");
    let policies: Vec<(&str, String)> = app
        .lines()
        .filter(|l| {
            l.starts_with("resource ") && l.contains("/basicPublishingCredentialsPolicies@")
        })
        .map(|decl| {
            let name = top_level_block(&app, decl)
                .into_iter()
                .find_map(|l| l.trim().strip_prefix("name: "))
                .unwrap_or_else(|| panic!("no name in `{decl}`"))
                .to_string();
            (decl, name)
        })
        .collect();
    let declaration = |wanted: &str| {
        policies
            .iter()
            .find(|(_, name)| name == wanted)
            .map(|(decl, _)| *decl)
            .unwrap_or_else(|| panic!("no {wanted} publishing policy"))
    };
    assert!(
        declaration("'ftp'").ends_with(" = if (!isFlex) {"),
        "the ftp policy must be conditional on a Dedicated plan: {}",
        declaration("'ftp'")
    );
    assert!(
        declaration("'scm'").ends_with("' = {"),
        "the scm policy applies to every plan: {}",
        declaration("'scm'")
    );
}

#[test]
fn the_endpoint_defaults_to_the_dedicated_plan_and_says_why() {
    let main = main_bicep();
    assert_eq!(
        param_default(&main, "endpointHostingPlan"),
        Some("'Dedicated'")
    );
    let description = param_description(&main, "endpointHostingPlan");
    for needle in [
        "clientCertMode Required",
        "Flex Consumption",
        "endpointFlexClientCertVerified",
        "infra/README.md",
    ] {
        assert!(
            description.contains(needle),
            "endpointHostingPlan's description does not mention {needle}: {description}"
        );
    }
    let example = infra_file("main.bicepparam");
    for line in example
        .lines()
        .filter(|l| l.starts_with("param endpointHostingPlan "))
    {
        assert!(
            line.ends_with("= 'Dedicated'"),
            "main.bicepparam undoes the Dedicated default: {line}"
        );
    }
    let readme = infra_file("README.md");
    assert!(
        readme.contains("| `endpointHostingPlan` | `Dedicated` |"),
        "infra/README.md's parameter table does not give Dedicated as the endpoint's default"
    );
}

#[test]
fn the_endpoint_believes_x_arr_client_cert_only_where_the_front_end_is_known_to_demand_it() {
    let main = main_bicep();
    let entry = var_block(&main, "endpointAppSettings")
        .into_iter()
        .find(|l| setting_entry(l) == Some("KEYTURN_TRUST_ARR_CLIENT_CERT"))
        .expect("endpointAppSettings sets KEYTURN_TRUST_ARR_CLIENT_CERT");
    assert!(
        entry.contains("value: trustArrClientCert }"),
        "KEYTURN_TRUST_ARR_CLIENT_CERT must come from trustArrClientCert: {entry}"
    );
    assert_eq!(
        var_expression(&main, "trustArrClientCert"),
        "(endpointHostingPlan == 'Dedicated' || endpointFlexClientCertVerified) ? 'true' : 'false'"
    );
    assert_eq!(
        param_default(&main, "endpointFlexClientCertVerified"),
        Some("false")
    );
    assert!(
        !app_settings("rotatorAppSettings").contains("KEYTURN_TRUST_ARR_CLIENT_CERT"),
        "the rotator serves no secrets and must not believe the header"
    );
    for file in bicep_files() {
        for line in file.text.lines() {
            if setting_entry(line) == Some("KEYTURN_TRUST_ARR_CLIENT_CERT") {
                assert!(
                    !line.contains("value: 'true'"),
                    "{} believes X-ARR-ClientCert unconditionally: {line}",
                    file.path.display()
                );
            }
        }
    }
    assert_eq!(
        declaration_line(&main, "output endpointTrustsArrClientCert "),
        "output endpointTrustsArrClientCert string = trustArrClientCert"
    );
}

#[test]
fn the_endpoint_instance_cap_gives_the_per_instance_rate_limit_arithmetic() {
    let main = main_bicep();
    let default = |name: &str| -> u64 {
        param_default(&main, name)
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("`param {name}` has no integer default"))
    };
    let cap = default("endpointMaximumInstanceCount");
    let per_identity = default("endpointRateLimitPerIdentity");
    let per_address = default("endpointRateLimitPerAddress");

    let decorators = param_decorators(&main, "endpointMaximumInstanceCount");
    assert!(
        decorators.contains(&"@minValue(1)") && decorators.contains(&"@maxValue(1000)"),
        "endpointMaximumInstanceCount must allow the platform's 1-1000: {decorators:?}"
    );
    let description = param_description(&main, "endpointMaximumInstanceCount");
    assert!(
        description.contains("times the instance count"),
        "endpointMaximumInstanceCount's description does not say the limits multiply"
    );
    for (what, effective) in [
        ("certificate", per_identity * cap),
        ("address", per_address * cap),
    ] {
        assert!(
            description.contains(&format!("up to {effective} ")),
            "the description's arithmetic for one {what} does not match the defaults \
             ({effective} a minute): {description}"
        );
    }
    for name in [
        "endpointRateLimitPerIdentity",
        "endpointRateLimitPerAddress",
    ] {
        assert!(
            param_description(&main, name).contains("times the instance count"),
            "{name}'s description does not say the limit is per instance"
        );
    }
    assert!(
        top_level_block(&main, "module endpointApp ")
            .iter()
            .any(|l| l.trim() == "maximumInstanceCount: endpointMaximumInstanceCount"),
        "the endpoint app does not receive endpointMaximumInstanceCount"
    );

    let app = infra_file("modules/function-app.bicep");
    assert!(
        param_decorators(&app, "maximumInstanceCount").contains(&"@minValue(1)"),
        "the module must accept the platform's minimum of 1 instance"
    );
    for file in bicep_files() {
        assert!(
            !file.text.contains("lowest the platform accepts"),
            "{} repeats the outdated minimum of 40 instances",
            file.path.display()
        );
    }
}

#[test]
fn only_the_endpoint_identity_reads_its_own_site_with_reader_on_that_site_alone() {
    let app = infra_file("modules/function-app.bicep");
    assert_eq!(
        var_expression(&app, "readerRoleId"),
        format!("'{READER_ROLE}'")
    );
    let declaration = declaration_line(&app, "resource selfReader ");
    assert!(
        declaration.contains("'Microsoft.Authorization/roleAssignments@")
            && declaration.ends_with(" = if (readsOwnSite) {"),
        "{declaration}"
    );
    let body = top_level_block(&app, "resource selfReader ");
    for expected in [
        "scope: site",
        "principalId: identityPrincipalId",
        "roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)",
    ] {
        assert!(
            body.iter().any(|l| l.trim() == expected),
            "selfReader lacks `{expected}`"
        );
    }

    let main = main_bicep();
    let reads_own_site = |module: &str| {
        top_level_block(&main, module)
            .into_iter()
            .find_map(|l| l.trim().strip_prefix("readsOwnSite: "))
            .unwrap_or_else(|| panic!("`{module}` does not set readsOwnSite"))
            .to_string()
    };
    assert_eq!(reads_own_site("module endpointApp "), "true");
    assert_eq!(reads_own_site("module rotatorApp "), "false");

    for file in bicep_files() {
        if file.text.contains(READER_ROLE) {
            assert!(
                file.path.ends_with("function-app.bicep"),
                "Reader is assigned outside the endpoint's own site: {}",
                file.path.display()
            );
        }
    }
}

#[test]
fn the_endpoint_reads_its_site_from_the_deployment_clouds_resource_manager() {
    let main = main_bicep();
    let endpoint = var_block(&main, "endpointAppSettings");
    let entry = endpoint
        .iter()
        .find(|l| setting_entry(l) == Some("KEYTURN_RESOURCE_MANAGER_ENDPOINT"))
        .expect("endpointAppSettings sets KEYTURN_RESOURCE_MANAGER_ENDPOINT");
    assert_eq!(
        entry.trim(),
        "{ name: 'KEYTURN_RESOURCE_MANAGER_ENDPOINT', value: environment().resourceManager }"
    );
    assert!(
        config::spec("KEYTURN_RESOURCE_MANAGER_ENDPOINT").is_some()
            && config::spec("KEYTURN_FRONT_END_CHECK_SECONDS").is_some()
    );
    // The rotator never believes the header, so it never reads its site.
    assert!(!app_settings("rotatorAppSettings").contains("KEYTURN_RESOURCE_MANAGER_ENDPOINT"));
    // What environment().resourceManager is in each cloud is what keyturn derives from
    // the authority host when the setting is absent.
    for (authority, resource_manager) in [
        (
            "https://login.microsoftonline.com/",
            "https://management.azure.com/",
        ),
        (
            "https://login.microsoftonline.us/",
            "https://management.usgovcloudapi.net/",
        ),
        (
            "https://login.chinacloudapi.cn/",
            "https://management.chinacloudapi.cn/",
        ),
    ] {
        let env = config::Environment::from_pairs([
            ("FUNCTIONS_WORKER_RUNTIME", "custom"),
            ("KEYTURN_BACKEND", "local"),
            ("KEYTURN_AUDIT_STORE", "sqlite"),
            ("AzureWebJobs.KeyVaultEvents.Disabled", "true"),
            ("AzureWebJobs.ExpirySweep.Disabled", "true"),
            ("AzureWebJobs.RotationWorker.Disabled", "true"),
            ("AzureWebJobs.DiscoverySweep.Disabled", "true"),
            ("AzureWebJobs.DiscoveryWorker.Disabled", "true"),
            ("AzureWebJobs.AlertSweep.Disabled", "true"),
            ("AzureWebJobs.EvidenceExport.Disabled", "true"),
            ("KEYTURN_AUTHORITY_HOST", authority),
        ]);
        let settings = config::Settings::from_env(&env).expect("valid settings");
        assert_eq!(
            settings
                .entra
                .resource_manager_endpoint
                .as_ref()
                .map(|u| u.as_str()),
            Some(resource_manager),
            "{authority}"
        );
    }
}

#[test]
fn host_storage_is_reached_through_service_uris_built_from_the_clouds_storage_suffix() {
    let app = infra_file("modules/function-app.bicep");
    assert_eq!(
        var_expression(&app, "storageSuffix"),
        "environment().suffixes.storage"
    );
    for service in ["blob", "queue", "table"] {
        let name = format!("AzureWebJobsStorage__{service}ServiceUri");
        let line = app
            .lines()
            .find(|l| setting_entry(l) == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} is not written"));
        assert!(
            line.contains(&format!(
                "value: 'https://${{storageAccountName}}.{service}.${{storageSuffix}}' }}"
            )),
            "{name} is not built from environment().suffixes.storage: {line}"
        );
    }
    for file in bicep_files() {
        assert!(
            !setting_names(&file.text).contains(&"AzureWebJobsStorage__accountName".to_string()),
            "{} writes AzureWebJobsStorage__accountName, which works in the public cloud only",
            file.path.display()
        );
    }
}

#[test]
fn no_bicep_line_hard_codes_a_public_cloud_host_name() {
    for file in bicep_files() {
        for (i, line) in file.text.lines().enumerate() {
            if is_comment(line) {
                continue;
            }
            for host in PUBLIC_CLOUD_HOSTS {
                assert!(
                    !line.contains(host),
                    "{}:{} names {host}; derive it from environment() so sovereign clouds work",
                    file.path.display(),
                    i + 1
                );
            }
        }
    }
}

#[test]
fn private_dns_zone_names_are_derived_from_the_cloud_for_every_cloud() {
    let network = infra_file("modules/network.bicep");
    assert_eq!(
        var_expression(&network, "storageSuffix"),
        "environment().suffixes.storage"
    );
    let zones = top_level_block(&network, "var zones = {");
    let zone = |key: &str| -> &str {
        zones
            .iter()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key} zone"))
    };
    assert_eq!(zone("blob"), "'privatelink.blob.${storageSuffix}'");
    assert_eq!(zone("table"), "'privatelink.table.${storageSuffix}'");
    for cloud in CLOUDS {
        assert_eq!(
            bicep_replace(zone("serviceBus"), "storageSuffix", cloud.storage_suffix),
            cloud.service_bus_zone,
            "Service Bus zone in {}",
            cloud.name
        );
        assert_eq!(
            bicep_replace(
                zone("vault"),
                "environment().suffixes.keyvaultDns",
                cloud.keyvault_dns
            ),
            cloud.vault_zone,
            "Key Vault zone in {}",
            cloud.name
        );
    }
}

#[test]
fn resource_names_come_from_base_name_reduced_to_lower_case_letters_and_digits() {
    let main = main_bicep();
    assert!(
        var_expression(&main, "baseNameChars").contains("toLower(baseName)"),
        "baseName is not lower-cased before names are derived"
    );
    let names = top_level_block(&main, "var names = {");
    for line in &names {
        assert!(
            !line.contains("baseName") && line.contains("${base}"),
            "a resource name does not use the derived base: {line}"
        );
    }
    assert_eq!(
        var_expression(&main, "suffix"),
        "uniqueString(resourceGroup().id, base)"
    );
    let storage = names
        .iter()
        .find_map(|l| l.trim().strip_prefix("storage: "))
        .expect("a storage account name");
    assert_eq!(storage, "take('st${base}${suffix}', 24)");

    // uniqueString() gives 13 lower-case letters and digits.
    let unique = "a1b2c3d4e5f6g";
    for raw in ["keyturn", "My-App", "KEY_TURN.01", "Ünïcode-9", "---"] {
        let base = derived_base_name(&main, raw);
        let account: String = format!("st{base}{unique}").chars().take(24).collect();
        assert!(
            (3..=24).contains(&account.len())
                && account
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "baseName {raw:?} gives the invalid storage account name {account:?}"
        );
        let namespace = format!("sb-{base}-{unique}");
        assert!(
            namespace
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !namespace.contains("--"),
            "baseName {raw:?} gives the invalid Service Bus namespace {namespace:?}"
        );
    }
    assert_eq!(derived_base_name(&main, "My-App"), "myapp");
    assert_eq!(derived_base_name(&main, "---"), "keyturn");
}

#[test]
fn the_audit_checkpoint_key_signs_only_and_each_writer_may_only_sign_with_it() {
    let signing = infra_file("modules/audit-signing.bicep");
    let key = top_level_block(&signing, "resource key ").join("\n");
    assert!(key.contains("kty: 'EC-HSM'"), "{key}");
    assert!(key.contains("curveName: 'P-256'"), "{key}");
    let ops = key
        .split("keyOps: [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("keyOps");
    let ops: BTreeSet<&str> = ops.split_whitespace().collect();
    assert_eq!(ops, BTreeSet::from(["'sign'", "'verify'"]), "{key}");
    assert!(key.contains("exportable: false"), "{key}");

    let actions = var_block(&signing, "signerDataActions").join("\n");
    let actions: BTreeSet<&str> = actions
        .split('\'')
        .filter(|a| a.starts_with("Microsoft."))
        .collect();
    assert_eq!(
        actions,
        BTreeSet::from([
            "Microsoft.KeyVault/vaults/keys/sign/action",
            "Microsoft.KeyVault/vaults/keys/read",
        ])
    );
    let role = top_level_block(&signing, "resource signerRole ").join("\n");
    assert!(
        role.lines().any(|l| l.trim() == "actions: []"),
        "no control-plane action: {role}"
    );
    assert!(role.contains("dataActions: signerDataActions"), "{role}");
    assert!(role.contains("notDataActions: []"), "{role}");
    let assignments = top_level_block(&signing, "resource signerAssignments ").join("\n");
    assert!(
        assignments.contains("scope: key"),
        "assigned on the key alone: {assignments}"
    );
    let vault = top_level_block(&signing, "resource vault ").join("\n");
    for property in [
        "enableRbacAuthorization: true",
        "enablePurgeProtection: true",
        "enableSoftDelete: true",
    ] {
        assert!(vault.contains(property), "{property}: {vault}");
    }

    let main = main_bicep();
    let module = top_level_block(&main, "module auditSigning ").join("\n");
    for identity in ["rotatorIdentity", "endpointIdentity"] {
        assert!(
            module.contains(&format!("{identity}.properties.principalId")),
            "{identity} writes audit entries and signs their checkpoints: {module}"
        );
    }
    for app in ["rotatorAppSettings", "endpointAppSettings"] {
        let settings = var_block(&main, app).join("\n");
        for (name, value) in [
            (
                "KEYTURN_AUDIT_SIGNING_KEY",
                "auditSigning.outputs.keyUriWithVersion",
            ),
            (
                "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                "storage.outputs.blobEndpoint",
            ),
            (
                "KEYTURN_AUDIT_CHECKPOINT_CONTAINER",
                "storage.outputs.auditCheckpointContainer",
            ),
        ] {
            assert!(
                settings.contains(&format!("{{ name: '{name}', value: {value} }}")),
                "{app} lacks {name}"
            );
        }
    }
    let readme = infra_file("README.md");
    let matrix = markdown_section(&readme, "## Permission matrix").join("\n");
    for action in actions {
        assert!(
            matrix.contains(action),
            "{action} is missing from the permission matrix"
        );
    }
}

#[test]
fn the_rotator_holds_service_bus_data_owner_on_the_rotation_queue_alone() {
    let service_bus = infra_file("modules/servicebus.bicep");
    assert_eq!(
        var_expression(&service_bus, "dataOwner"),
        format!("'{SERVICE_BUS_DATA_OWNER_ROLE}'")
    );
    for (resource, scope) in [
        ("resource owner ", "scope: queue"),
        ("resource discoveryOwner ", "scope: discoveryQueue"),
    ] {
        let body = top_level_block(&service_bus, resource);
        for expected in [
            scope,
            "principalId: rotatorPrincipalId",
            "roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataOwner)",
        ] {
            assert!(
                body.iter().any(|l| l.trim() == expected),
                "the Data Owner assignment `{resource}` lacks `{expected}`"
            );
        }
    }
    // Data Owner covers sending and receiving; the narrower roles are not assigned as well.
    for file in bicep_files() {
        for role in [SERVICE_BUS_DATA_SENDER_ROLE, SERVICE_BUS_DATA_RECEIVER_ROLE] {
            assert!(
                !file.text.contains(role),
                "{} assigns {role} beside Data Owner",
                file.path.display()
            );
        }
    }
}

#[test]
fn the_rotator_alone_holds_table_data_contributor_on_the_lease_table_keyturn_uses() {
    let startup = std::fs::read_to_string(repo_root().join("handlers/startup/mod.rs"))
        .expect("handlers/startup/mod.rs is readable");
    let code_name = startup
        .lines()
        .find_map(|l| l.trim().strip_prefix("const LEASE_TABLE: &str = "))
        .and_then(|rest| rest.strip_suffix(';'))
        .expect("start-up names its lease table in LEASE_TABLE")
        .trim_matches('"');
    let storage = infra_file("modules/storage.bicep");
    let table = top_level_block(&storage, "resource leaseTable ");
    assert!(
        table
            .iter()
            .any(|l| l.trim() == format!("name: '{code_name}'")),
        "the Bicep's lease table is not the `{code_name}` start-up uses"
    );
    let role = top_level_block(&storage, "resource rotatorLeaseTable ");
    for expected in [
        "scope: leaseTable",
        "principalId: rotatorPrincipalId",
        "roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)",
    ] {
        assert!(
            role.iter().any(|l| l.trim() == expected),
            "the lease table's role assignment lacks `{expected}`"
        );
    }
    let leased: Vec<_> = storage
        .lines()
        .filter(|l| l.trim() == "scope: leaseTable")
        .collect();
    assert_eq!(
        leased.len(),
        1,
        "only the rotator is granted the lease table"
    );
}

#[test]
fn the_hosts_diagnostic_events_role_is_account_wide_and_off_unless_asked_for() {
    let main = main_bicep();
    assert_eq!(param_default(&main, "hostDiagnosticEvents"), Some("false"));
    assert!(
        top_level_block(&main, "module storage ")
            .iter()
            .any(|l| l.trim() == "hostDiagnosticEvents: hostDiagnosticEvents"),
        "the storage module does not receive hostDiagnosticEvents"
    );
    let storage = infra_file("modules/storage.bicep");
    let body = top_level_block(&storage, "resource hostDiagnosticTables ");
    assert!(
        body.iter()
            .any(|l| l.trim() == "]: if (hostDiagnosticEvents) {"),
        "the account-wide table role is not conditional on hostDiagnosticEvents"
    );
    assert!(body.iter().any(|l| l.trim() == "scope: account"));
}

#[test]
fn every_role_the_bicep_assigns_is_in_the_readme_permission_matrix() {
    let readme = infra_file("README.md");
    let matrix = markdown_section(&readme, "## Permission matrix").join("\n");
    let mut seen = 0;
    for file in bicep_files() {
        for id in quoted_guids(&file.text) {
            if id == GRAPH_APP_ID {
                continue;
            }
            seen += 1;
            assert!(
                matrix.contains(&format!("`{id}`")),
                "role {id} ({}) is missing from infra/README.md's permission matrix",
                file.path.display()
            );
        }
    }
    assert!(seen > 0, "no role definition ids found in infra/");
}

#[test]
fn every_main_parameter_is_in_the_readme_parameter_table() {
    let main = main_bicep();
    let readme = infra_file("README.md");
    let table = markdown_section(&readme, "## Parameters").join("\n");
    let params: Vec<&str> = main
        .lines()
        .filter_map(|l| l.strip_prefix("param ")?.split(' ').next())
        .collect();
    assert!(params.len() > 10, "parameters not found in main.bicep");
    for name in params {
        assert!(
            table.contains(&format!("| `{name}` |")),
            "parameter {name} is missing from infra/README.md's parameter table"
        );
    }
}

#[test]
fn graph_permissions_follow_the_cloud_and_the_readme_grants_them_in_a_step_of_their_own() {
    let main = main_bicep();
    assert_eq!(
        param_default(&main, "grantGraphPermissions"),
        Some("environment().name == 'AzureCloud'")
    );
    let graph = param_default(&main, "graphEndpoint").expect("graphEndpoint has a default");
    for expected in [
        "environment().name",
        "'https://graph.microsoft.com'",
        "'https://graph.microsoft.us'",
        "'https://microsoftgraph.chinacloudapi.cn'",
    ] {
        assert!(
            graph.contains(expected),
            "graphEndpoint's default lacks {expected}"
        );
    }
    assert!(
        !infra_file("main.bicepparam")
            .lines()
            .any(|l| l.starts_with("param grantGraphPermissions ")),
        "main.bicepparam must leave grantGraphPermissions to the deployment steps"
    );

    let readme = infra_file("README.md");
    let commands = shell_commands(&readme);
    let deployments: Vec<&String> = commands
        .iter()
        .filter(|c| c.contains("az deployment group create") && c.contains("-f infra/main.bicep"))
        .collect();
    assert!(
        !deployments.is_empty(),
        "no deployment of infra/main.bicep in the README"
    );
    for command in deployments {
        assert!(
            command.contains("grantGraphPermissions=false"),
            "a README deployment grants Graph permissions again (msgraph-bicep-types#161): \
             {command}"
        );
    }
    for permission in [
        "Application.ReadWrite.OwnedBy",
        "Application.ReadWrite.All",
        "Device.Read.All",
    ] {
        assert!(
            commands.iter().any(|c| {
                c.trim_start_matches('#').trim_start().starts_with("grant ")
                    && c.contains(permission)
            }),
            "the README's grant script has no line for {permission}"
        );
    }
}

#[test]
fn flex_subnet_delegation_comes_with_the_microsoft_app_prerequisite() {
    let network = infra_file("modules/network.bicep");
    assert!(network.contains("'Microsoft.App/environments'"));
    let readme = infra_file("README.md");
    assert!(
        shell_commands(&readme)
            .iter()
            .any(|c| c.contains("az provider register --namespace Microsoft.App")),
        "infra/README.md does not register Microsoft.App, which Flex subnet delegation needs"
    );
}

#[test]
fn the_readme_lists_what_only_a_real_deployment_can_prove_with_its_commands() {
    let readme = infra_file("README.md");
    let section = markdown_section(&readme, "## Verify on first deployment").join("\n");
    let commands = shell_commands(&section);
    for needle in [
        "curl",
        "clientCertMode",
        "basicPublishingCredentialsPolicies/ftp",
        "DeadLetteredCount",
        READER_ROLE,
        "AzureWebJobsStorage",
        "api-version=2024-04-01",
        "KEYTURN_RESOURCE_MANAGER_ENDPOINT",
        KEY_VAULT_SECRETS_USER_ROLE,
        "--action alerts.sent",
    ] {
        assert!(
            commands.iter().any(|c| c.contains(needle)),
            "no command in \"Verify on first deployment\" checks {needle}"
        );
    }
}

/// The names a Bicep file declares with `<keyword> <name> ` at the start of a line.
fn declared(text: &str, keyword: &str) -> BTreeSet<String> {
    let prefix = format!("{keyword} ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.split(' ').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_commands_name_only_parameters_and_outputs_the_templates_declare() {
    let readme = infra_file("README.md");
    let commands = shell_commands(&readme);
    let main_outputs = declared(&main_bicep(), "output");
    let mut checked = 0;
    for command in &commands {
        // `-p name=value` arguments, against the template the command deploys.
        let template = command
            .split_once(" -f ")
            .and_then(|(_, rest)| rest.split(' ').next())
            .and_then(|path| path.strip_prefix("infra/"));
        if let Some(template) = template {
            let params = declared(&infra_file(template), "param");
            let mut after_p = false;
            for word in command.split_whitespace() {
                if word == "-p" {
                    after_p = true;
                } else if word.starts_with('-') {
                    after_p = false;
                } else if let Some((name, _)) = word.split_once('=').filter(|_| after_p) {
                    checked += 1;
                    assert!(
                        params.contains(name),
                        "the README passes {name} to infra/{template}, which has no such \
                         parameter: {command}"
                    );
                }
            }
        }
        // Outputs read back as `properties.outputs.<name>` or with the `out <name>` helper.
        let mut outputs: Vec<&str> = command
            .split("properties.outputs.")
            .skip(1)
            .filter_map(|rest| rest.split(['.', ' ', '"']).next())
            .filter(|name| !name.starts_with('$'))
            .collect();
        outputs.extend(
            command
                .split("$(out ")
                .skip(1)
                .filter_map(|rest| rest.split(')').next()),
        );
        for name in outputs {
            checked += 1;
            assert!(
                main_outputs.contains(name),
                "the README reads output {name}, which main.bicep does not declare: {command}"
            );
        }
    }
    assert!(
        checked > 10,
        "too few parameters and outputs found in the README's commands"
    );
}

/// The value every queue of `modules/servicebus.bicep` (rotation and discovery) gives the
/// property `name`: both set it, to the same value.
fn queue_property<'t>(text: &'t str, name: &str) -> &'t str {
    let prefix = format!("{name}:");
    let values: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !is_comment(line))
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .map(str::trim)
        .collect();
    assert_eq!(
        values.len(),
        2,
        "the rotation and the discovery queue each set {name}: {values:?}"
    );
    assert_eq!(values[0], values[1], "both queues set the same {name}");
    values[0]
}

/// An ISO 8601 duration of one unit as the Bicep writes them (`'P1D'`, `'PT10M'`);
/// `None` for anything else.
fn iso_duration(quoted: &str) -> Option<chrono::TimeDelta> {
    let text = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
    let (time, rest) = match text.strip_prefix("PT") {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('P')?),
    };
    let (number, unit) = rest.split_at(rest.len().checked_sub(1)?);
    let count: i64 = number.parse().ok()?;
    match (time, unit) {
        (false, "D") => Some(chrono::TimeDelta::days(count)),
        (true, "H") => Some(chrono::TimeDelta::hours(count)),
        (true, "M") => Some(chrono::TimeDelta::minutes(count)),
        (true, "S") => Some(chrono::TimeDelta::seconds(count)),
        _ => None,
    }
}

#[test]
fn one_unit_iso_durations_are_read_and_others_refused() {
    assert_eq!(iso_duration("'P1D'"), Some(chrono::TimeDelta::days(1)));
    assert_eq!(
        iso_duration("'PT10M'"),
        Some(chrono::TimeDelta::minutes(10))
    );
    assert_eq!(iso_duration("'PT5M'"), Some(chrono::TimeDelta::minutes(5)));
    for odd in ["'P1M'", "'PT1D'", "'P1DT2H'", "'1D'", "P1D", "'P'", "''"] {
        assert_eq!(iso_duration(odd), None, "{odd} is refused");
    }
}

#[test]
fn the_rotation_queue_dead_letters_and_drops_duplicates_alike_in_azure_and_locally() {
    use keyturn::adapters::local::queue::QueueSettings;
    use keyturn::ports::queue::{DUPLICATE_DETECTION_WINDOW, MAX_DELIVERY_COUNT};
    let bicep = infra_file("modules/servicebus.bicep");
    let local = QueueSettings::default();

    // The discovery queue is deployed under the rotation queue's policy.
    let deliveries: u32 = queue_property(&bicep, "maxDeliveryCount")
        .parse()
        .expect("a whole number");
    let window = queue_property(&bicep, "duplicateDetectionHistoryTimeWindow");
    for shared in [
        "requiresSession",
        "requiresDuplicateDetection",
        "defaultMessageTimeToLive",
        "deadLetteringOnMessageExpiration",
    ] {
        queue_property(&bicep, shared);
    }
    let window = iso_duration(window).unwrap_or_else(|| panic!("not a duration: {window}"));

    assert_eq!(
        (deliveries, window),
        (MAX_DELIVERY_COUNT, DUPLICATE_DETECTION_WINDOW),
        "the Bicep deploys the queue the code expects"
    );
    assert_eq!(
        (local.max_delivery_count, local.duplicate_detection_window),
        (MAX_DELIVERY_COUNT, DUPLICATE_DETECTION_WINDOW),
        "local mode's queue behaves like the deployed one"
    );

    // The lock differs on purpose (DEFAULT_LOCK_DURATION says why): the Bicep's is the
    // one the code names for Azure, and local mode's is shorter, never longer.
    let lock = queue_property(&bicep, "lockDuration");
    let lock = iso_duration(lock).unwrap_or_else(|| panic!("not a duration: {lock}"));
    assert_eq!(lock, keyturn::ports::queue::LOCK_DURATION);
    assert!(local.lock_duration <= lock);
}

#[test]
fn the_rotator_may_read_the_app_management_policies_it_checks_before_add_password() {
    let permission = "Policy.Read.All";
    assert!(
        keyturn::adapters::azure::graph::POLICY_PERMISSION.contains(permission),
        "the permission keyturn names when the read is refused is the one granted"
    );
    let grants = infra_file("modules/graph-permissions.bicep");
    let block = top_level_block(&grants, "resource rotatorPolicyRead ");
    assert!(
        block
            .iter()
            .any(|l| l.trim() == "principalId: rotatorPrincipalId"),
        "Policy.Read.All is granted to the rotator"
    );
    assert!(
        block
            .iter()
            .any(|l| l.contains(&format!("role.value == '{permission}'"))),
        "the rotator's grant is Policy.Read.All"
    );

    let readme = infra_file("README.md");
    assert!(
        shell_commands(&readme)
            .iter()
            .any(|c| { c.starts_with("grant <rotatorPrincipalId> ") && c.contains(permission) }),
        "the README's grant script grants {permission} to the rotator"
    );
    let matrix = markdown_section(&readme, "## Permission matrix").join("\n");
    assert!(
        matrix.lines().any(|row| {
            row.starts_with(
                "| rotator | Graph `Policy.Read.All` (`246dd0d5-5bd0-4def-940b-0421030a5b68`)",
            )
        }),
        "the permission matrix lists the rotator's {permission} with its app role id"
    );
}

/// Key Vault Secrets User, the role that reads a secret's value.
const KEY_VAULT_SECRETS_USER_ROLE: &str = "4633458b-17de-408a-b874-0445c86b69e6";

/// Each `KEYTURN_ALERT_*` setting keyturn reads, and the `main.bicep` parameter the rotator's
/// entry is written from (`None`: written from a variable).
const ALERT_SETTING_PARAMETERS: [(&str, Option<&str>); 9] = [
    ("KEYTURN_ALERT_SCHEDULE", Some("alertSchedule")),
    ("KEYTURN_ALERT_TABLE", Some("alertTableName")),
    ("KEYTURN_ALERT_THRESHOLDS", Some("alertThresholds")),
    ("KEYTURN_ALERT_ROUTES", Some("alertRoutes")),
    ("KEYTURN_ALERT_DEFAULT_ROUTE", Some("alertDefaultRoute")),
    ("KEYTURN_ALERT_MAILBOX", Some("alertMailbox")),
    ("KEYTURN_ALERT_VAULT", None),
    ("KEYTURN_ALERT_DIGEST_DAYS", Some("alertDigestDays")),
    (
        "KEYTURN_ALERT_DIGEST_HORIZON_DAYS",
        Some("alertDigestHorizonDays"),
    ),
];

/// The value expression of the one-line setting entry `name` in `var <app> = [ ... ]`.
fn setting_value<'t>(main: &'t str, app: &str, name: &str) -> &'t str {
    let line = var_block(main, app)
        .into_iter()
        .find(|l| setting_entry(l) == Some(name))
        .unwrap_or_else(|| panic!("{app} does not set {name}"));
    line.split_once(", value: ")
        .and_then(|(_, value)| value.trim().strip_suffix(" }"))
        .unwrap_or_else(|| panic!("`{line}` is not a one-line setting entry"))
}

#[test]
fn the_rotator_gets_every_alert_setting_from_a_parameter_defaulting_as_keyturn_does() {
    let code: BTreeSet<&str> = SETTINGS
        .iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with("KEYTURN_ALERT_"))
        .collect();
    let listed: BTreeSet<&str> = ALERT_SETTING_PARAMETERS.iter().map(|(n, _)| *n).collect();
    assert_eq!(code, listed, "the alert settings keyturn reads changed");
    let main = main_bicep();
    for (name, parameter) in ALERT_SETTING_PARAMETERS {
        let value = setting_value(&main, "rotatorAppSettings", name);
        let Some(parameter) = parameter else {
            continue;
        };
        let spec = config::spec(name).expect("a setting keyturn reads");
        let default = param_default(&main, parameter)
            .unwrap_or_else(|| panic!("param {parameter} has no default"));
        match value {
            v if v == parameter => {
                let unquoted = default.trim_matches('\'');
                assert_eq!(
                    Some(unquoted).filter(|d| !d.is_empty()),
                    spec.default,
                    "param {parameter}'s default is not {name}'s"
                );
            }
            v if v == format!("string({parameter})") => {
                assert_eq!(Some(default), spec.default, "param {parameter} vs {name}");
            }
            other => panic!("{name} is written from `{other}`, not from param {parameter}"),
        }
        assert!(
            param_description(&main, parameter).contains(name),
            "param {parameter}'s description does not name {name}"
        );
    }
    // Empty routes turn alerts off, which the code says at each run.
    assert!(param_description(&main, "alertRoutes").contains("alerts are off"));
    let sweep = fs::read_to_string(repo_root().join("handlers/functions/alert_sweep.rs"))
        .expect("alert_sweep.rs is readable");
    assert!(sweep.contains("alerts are off: KEYTURN_ALERT_ROUTES names no route"));
    // The vault is keyturn's own unless one is given, in this cloud's Key Vault domain.
    assert_eq!(
        setting_value(&main, "rotatorAppSettings", "KEYTURN_ALERT_VAULT"),
        "alertVaultUrl"
    );
    assert_eq!(
        var_expression(&main, "alertVaultName"),
        "empty(alertVault) ? names.auditVault : alertVault.name"
    );
    assert!(var_expression(&main, "alertVaultUrl").contains("environment().suffixes.keyvaultDns"));
    // The endpoint runs no AlertSweep: it resolves the schedule and nothing else.
    let endpoint = app_settings("endpointAppSettings");
    let endpoint_alerts: Vec<&String> = endpoint
        .iter()
        .filter(|n| n.starts_with("KEYTURN_ALERT_"))
        .collect();
    assert_eq!(endpoint_alerts, ["KEYTURN_ALERT_SCHEDULE"]);
}

#[test]
fn the_rotator_reads_each_alert_webhook_secret_alone_never_the_vault() {
    let access = infra_file("modules/alert-secret-access.bicep");
    assert_eq!(
        var_expression(&access, "secretsUser"),
        format!("'{KEY_VAULT_SECRETS_USER_ROLE}'")
    );
    assert!(
        declaration_line(&access, "resource secrets ").contains(
            "'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [for name in secretNames: {"
        ),
        "the secrets are the vault's, one per name"
    );
    let secrets = top_level_block(&access, "resource secrets ");
    assert!(secrets.iter().any(|l| l.trim() == "parent: vault"));
    let readers = top_level_block(&access, "resource readers ");
    for expected in [
        "scope: secrets[i]",
        "principalId: principalId",
        "principalType: 'ServicePrincipal'",
        "roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUser)",
    ] {
        assert!(
            readers.iter().any(|l| l.trim() == expected),
            "the webhook secrets' role assignment lacks `{expected}`"
        );
    }
    let scopes: Vec<&str> = access
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("scope:"))
        .collect();
    assert_eq!(
        scopes,
        ["scope: secrets[i]"],
        "a role is assigned at a scope wider than one secret"
    );

    let main = main_bicep();
    assert_eq!(param_default(&main, "alertWebhookSecrets"), Some("[]"));
    let module = top_level_block(&main, "module alertSecretAccess ");
    assert!(
        declaration_line(&main, "module alertSecretAccess ")
            .ends_with("= if (!empty(alertWebhookSecrets)) {"),
        "no assignment without a webhook secret"
    );
    for expected in [
        "scope: resourceGroup(alertVaultResourceGroup)",
        "vaultName: alertVaultName",
        "principalId: rotatorIdentity.properties.principalId",
        "secretNames: alertWebhookSecrets",
    ] {
        assert!(
            module.iter().any(|l| l.trim() == expected),
            "module alertSecretAccess lacks `{expected}`"
        );
    }
    // Only the rotator runs AlertSweep; the endpoint is never given the webhook URLs.
    assert!(!module.iter().any(|l| l.contains("endpointIdentity")));

    let readme = infra_file("README.md");
    let matrix = markdown_section(&readme, "## Permission matrix").join("\n");
    let row = matrix
        .lines()
        .find(|l| l.contains("alertWebhookSecrets"))
        .expect("the permission matrix has the webhook secrets' row");
    assert!(
        row.starts_with("| rotator")
            && row.contains(&format!("`{KEY_VAULT_SECRETS_USER_ROLE}`"))
            && row.contains("each secret in `alertWebhookSecrets`"),
        "{row}"
    );
}

#[test]
fn mail_send_is_granted_by_no_template_and_the_readme_scopes_it_to_the_mailbox() {
    for file in bicep_files() {
        // A grant names the app role as a string literal (`role.value == 'Mail.Send'`).
        assert!(
            !file.text.contains("'Mail.Send'"),
            "{} grants Mail.Send, which Entra grants for every mailbox",
            file.path.display()
        );
    }
    let readme = infra_file("README.md");
    let section = markdown_section(&readme, "### Mail.Send for the alert mailbox").join("\n");
    for expected in [
        "New-ServicePrincipal -AppId",
        "New-ManagementScope",
        "RecipientRestrictionFilter",
        "New-ManagementRoleAssignment",
        "-Role \"Application Mail.Send\"",
        "-CustomResourceScope",
        "Test-ServicePrincipalAuthorization",
        "rotatorClientId",
        "rotatorPrincipalId",
        "https://learn.microsoft.com/exchange/permissions-exo/application-rbac",
        "New-ApplicationAccessPolicy",
    ] {
        assert!(
            section.contains(expected),
            "the Mail.Send section lacks {expected}"
        );
    }
    let matrix = markdown_section(&readme, "## Permission matrix").join("\n");
    assert!(
        matrix
            .lines()
            .any(|l| l.starts_with("| rotator") && l.contains("Application Mail.Send")),
        "the permission matrix has no Mail.Send row"
    );
}
