//! The host contract: shutdown, definitions, settings files.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use keyturn::adapters::local::audit::LocalAuditStore;
use keyturn::adapters::local::store::LocalStore;
use keyturn::config::{FUNCTIONS, ReadBy, SETTINGS};
use keyturn::domain::ncrontab::Schedule;

use crate::helpers::{SlowStore, envelope, fixture, spawn_app_with_store};

fn project(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_json(relative: &str) -> Value {
    let text = std::fs::read_to_string(project(relative)).expect("readable");
    serde_json::from_str(&text).expect("json")
}

#[tokio::test]
async fn shutdown_lets_in_flight_invocations_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalStore::open(dir.path().join("keyturn.db")).expect("open");
    let slow = SlowStore { inner: Arc::new(LocalAuditStore::new(local)), delay: Duration::from_millis(400) };
    let mut app = spawn_app_with_store(Arc::new(slow)).await;

    let event = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json");
    let in_flight = {
        let http = app.http.clone();
        let url = format!("{}/KeyVaultEvents", app.address);
        let body = envelope("event", event);
        tokio::spawn(async move { http.post(url).json(&body).send().await })
    };
    // Arrange for shutdown to begin while the invocation is inside its audit append.
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.begin_shutdown();

    let response = in_flight.await.expect("task").expect("in-flight request is answered");
    assert_eq!(response.status(), 200);
    app.wait_stopped().await.expect("server stops cleanly");
    let refused = reqwest::Client::new().post(format!("{}/KeyVaultEvents", app.address)).send().await;
    assert!(refused.is_err(), "no new invocations after shutdown");
}

#[test]
fn every_function_definition_is_served_and_every_served_function_is_defined() {
    let defined: BTreeSet<String> = std::fs::read_dir(project("function-definitions"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let served: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.to_string()).collect();
    assert_eq!(defined, served);
}

#[test]
fn function_definitions_bind_what_the_handlers_read() {
    let events = read_json("function-definitions/KeyVaultEvents/function.json");
    assert_eq!(events["bindings"][0]["type"], "eventGridTrigger");
    assert_eq!(events["bindings"][0]["name"], keyturn::functions::key_vault_events::BINDING);

    let sweep = read_json("function-definitions/ExpirySweep/function.json");
    assert_eq!(sweep["bindings"][0]["type"], "timerTrigger");
    assert_eq!(sweep["bindings"][0]["name"], keyturn::functions::expiry_sweep::BINDING);
    assert_eq!(sweep["bindings"][0]["schedule"], "%KEYTURN_SWEEP_SCHEDULE%");

    let worker = read_json("function-definitions/RotationWorker/function.json");
    let trigger = &worker["bindings"][0];
    assert_eq!(trigger["type"], "serviceBusTrigger");
    assert_eq!(trigger["name"], keyturn::functions::rotation_worker::BINDING);
    assert_eq!(trigger["queueName"], "%KEYTURN_ROTATION_QUEUE%");
    assert_eq!(trigger["connection"], "ServiceBusConnection");
    assert_eq!(trigger["isSessionsEnabled"], true);

    let endpoint = read_json("function-definitions/SecretEndpoint/function.json");
    let trigger = &endpoint["bindings"][0];
    assert_eq!(trigger["type"], "httpTrigger");
    assert_eq!(trigger["authLevel"], "anonymous");
    assert_eq!(trigger["route"], "secrets/{name}");
    assert_eq!(trigger["methods"], serde_json::json!(["get"]));
}

#[test]
fn host_json_starts_the_packaged_binary_with_forwarding_and_the_pinned_bundle() {
    let host = read_json("host.json");
    assert_eq!(host["version"], "2.0");
    assert_eq!(host["customHandler"]["description"]["defaultExecutablePath"], "keyturn");
    assert_eq!(host["customHandler"]["description"]["arguments"], serde_json::json!(["serve"]));
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], true);
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    let service_bus = &host["extensions"]["serviceBus"];
    assert!(service_bus["maxConcurrentCalls"].as_u64().is_some());
    assert!(service_bus["maxAutoLockRenewalDuration"].as_str().is_some());
}

#[test]
fn the_sample_settings_carry_every_configurable_setting_with_a_valid_value() {
    let sample = read_json("local.settings.sample.json");
    let values = sample["Values"].as_object().expect("Values");
    let in_sample: BTreeSet<&str> = values.keys().map(String::as_str).collect();
    let configurable: BTreeSet<&str> = SETTINGS
        .iter()
        .filter(|s| s.read_by != ReadBy::HostProvided)
        .map(|s| s.name)
        .collect();
    assert_eq!(in_sample, configurable);
    assert_eq!(values["FUNCTIONS_WORKER_RUNTIME"], "Custom");

    let env = keyturn::config::Environment::from_pairs(
        values.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())),
    );
    keyturn::config::Settings::from_env(&env).expect("the sample is a working configuration");
}

#[test]
fn the_readme_documents_every_setting() {
    let readme = std::fs::read_to_string(project("README.md")).expect("README");
    for s in SETTINGS {
        assert!(readme.contains(&format!("`{}`", s.name)), "README does not document {}", s.name);
    }
}

#[test]
fn the_default_sweep_schedule_is_a_valid_six_field_expression() {
    let schedule = Schedule::parse(keyturn::config::DEFAULT_SWEEP_SCHEDULE).expect("valid");
    assert_eq!(schedule.to_string(), "0 0 */6 * * *");
}
