//! The settings parser: each section's rules, every problem reported at once, and the
//! rules start-up relies on (names, hosts, files) refused here first.

use super::*;

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("FUNCTIONS_WORKER_RUNTIME", "Custom"),
        ("AZURE_TENANT_ID", "00000000-0000-0000-0000-0000000000aa"),
        ("KEYTURN_VAULTS", "https://kv-one.vault.azure.net/"),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-one.servicebus.windows.net",
        ),
        ("KEYTURN_AUDIT_STORE", "sqlite"),
    ]
}

fn with(extra: &[(&str, &str)]) -> Environment {
    let mut pairs: Vec<(String, String)> = base()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in extra {
        pairs.retain(|(pk, _)| pk != k);
        pairs.push((k.to_string(), v.to_string()));
    }
    Environment::from_pairs(pairs)
}

fn errors_for(env: &Environment) -> Vec<SettingError> {
    Settings::from_env(env)
        .expect_err("configuration should be rejected")
        .errors
}

#[test]
fn a_complete_environment_yields_defaults_where_unset() {
    let s = Settings::from_env(&with(&[])).expect("valid");
    assert_eq!(s.rotation.queue.as_str(), "rotations");
    assert_eq!(
        s.rotation.sweep_schedule.to_string(),
        DEFAULT_SWEEP_SCHEDULE
    );
    assert_eq!(s.credential.kind, CredentialKind::ManagedIdentity);
    assert_eq!(s.rotation.vaults.len(), 1);
    assert_eq!(s.host.enabled_functions.len(), 8);
    assert_eq!(
        s.rotation.evidence_schedule.to_string(),
        DEFAULT_EVIDENCE_SCHEDULE
    );
    assert_eq!(s.alerts.schedule.to_string(), DEFAULT_ALERT_SCHEDULE);
    assert_eq!(s.alerts.thresholds.to_string(), "60,30,14,7,1,0");
    assert!(s.alerts.routes.is_empty());
    assert_eq!(
        (s.alerts.digest_days, s.alerts.digest_horizon_days),
        (7, 30)
    );
    assert_eq!(s.alerts.table.as_str(), DEFAULT_ALERT_TABLE);
    assert_eq!(s.rotation.discovery_queue.as_str(), DEFAULT_DISCOVERY_QUEUE);
    assert_eq!(
        s.rotation.discovery_schedule.to_string(),
        DEFAULT_DISCOVERY_SCHEDULE
    );
    assert_eq!(
        s.rotation.defaults,
        RotationDefaults {
            validity_days: 90,
            rotate_before_days: 30,
            overlap_days: 7,
            proof_successes: 3,
            proof_window_seconds: 60,
            proof_deadline_minutes: 60,
        }
    );
    assert_eq!(
        s.entra.tenant_id.map(|t| t.to_string()).as_deref(),
        Some("00000000-0000-0000-0000-0000000000aa")
    );
}

#[test]
fn rotation_defaults_are_checked_for_range_and_order() {
    for (setting, value) in [
        ("KEYTURN_DEFAULT_VALIDITY_DAYS", "0"),
        ("KEYTURN_DEFAULT_VALIDITY_DAYS", "ninety"),
        ("KEYTURN_DEFAULT_OVERLAP_DAYS", "-1"),
        ("KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS", "99999"),
        ("KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS", "90"),
        ("AZURE_TENANT_ID", "contoso.onmicrosoft.com"),
    ] {
        let errors = errors_for(&with(&[(setting, value)]));
        assert!(
            errors.iter().any(|e| e.setting == setting),
            "{setting}={value}: {errors:?}"
        );
    }
    let zero_overlap = Settings::from_env(&with(&[("KEYTURN_DEFAULT_OVERLAP_DAYS", "0")]))
        .expect("an overlap of zero retires at once");
    assert_eq!(zero_overlap.rotation.defaults.overlap_days, 0);
}

#[test]
fn every_problem_names_the_setting_and_gives_an_example() {
    let env = with(&[
        ("KEYTURN_SWEEP_SCHEDULE", "0 */5 * * *"),
        ("KEYTURN_CREDENTIAL", "password"),
        ("KEYTURN_VAULTS", "http://kv-one.vault.azure.net/"),
        ("KEYTURN_ROTATION_QUEUE", "-bad-"),
        ("AZURE_CLIENT_ID", "not-a-guid"),
        ("KEYTURN_LOG_LEVEL", "loud=["),
    ]);
    let errors = errors_for(&env);
    let named: Vec<&str> = errors.iter().map(|e| e.setting.as_str()).collect();
    for expected in [
        "KEYTURN_SWEEP_SCHEDULE",
        "KEYTURN_CREDENTIAL",
        "KEYTURN_VAULTS",
        "KEYTURN_ROTATION_QUEUE",
        "AZURE_CLIENT_ID",
        "KEYTURN_LOG_LEVEL",
    ] {
        assert!(
            named.contains(&expected),
            "{expected} not reported in {named:?}"
        );
    }
    assert!(errors.iter().all(|e| !e.example.is_empty()));
}

#[test]
fn entra_endpoints_default_to_the_public_cloud_and_refuse_anything_but_https_hosts() {
    let s = Settings::from_env(&with(&[])).expect("valid");
    assert_eq!(
        s.entra.authority_host.as_str(),
        "https://login.microsoftonline.com/"
    );
    assert_eq!(
        s.entra.graph_endpoint.as_str(),
        "https://graph.microsoft.com/"
    );

    let sovereign = Settings::from_env(&with(&[
        ("KEYTURN_AUTHORITY_HOST", "https://login.microsoftonline.us"),
        ("KEYTURN_GRAPH_ENDPOINT", "https://graph.microsoft.us/"),
        ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
        // A US Government authority manages US Government vaults.
        ("KEYTURN_VAULTS", "https://kv-one.vault.usgovcloudapi.net/"),
    ]))
    .expect("valid");
    assert_eq!(
        sovereign.entra.graph_endpoint.as_str(),
        "https://graph.microsoft.us/"
    );
    assert!(sovereign.entra.tenant_id.is_some());

    for (setting, bad) in [
        ("KEYTURN_AUTHORITY_HOST", "http://login.microsoftonline.com"),
        (
            "KEYTURN_AUTHORITY_HOST",
            "https://login.microsoftonline.com/tenant",
        ),
        ("KEYTURN_GRAPH_ENDPOINT", "graph.microsoft.com"),
        ("KEYTURN_GRAPH_ENDPOINT", "https://graph.microsoft.com/?x=1"),
        ("AZURE_TENANT_ID", "contoso.onmicrosoft.com"),
    ] {
        let named: Vec<String> = errors_for(&with(&[(setting, bad)]))
            .into_iter()
            .map(|e| e.setting)
            .collect();
        assert_eq!(named, [setting], "{bad}");
    }
}

#[test]
fn rotation_settings_are_required_only_while_a_rotation_function_is_enabled() {
    let missing = Environment::from_pairs([("KEYTURN_AUDIT_STORE", "sqlite")]);
    let named: Vec<String> = errors_for(&missing)
        .into_iter()
        .map(|e| e.setting)
        .collect();
    assert!(named.contains(&"KEYTURN_VAULTS".to_string()));
    assert!(named.contains(&"ServiceBusConnection__fullyQualifiedNamespace".to_string()));

    let endpoint_only = Environment::from_pairs([
        ("KEYTURN_AUDIT_STORE", "sqlite"),
        ("AzureWebJobs.KeyVaultEvents.Disabled", "true"),
        ("AzureWebJobs_ExpirySweep_Disabled", "true"),
        ("AzureWebJobs.RotationWorker.Disabled", "1"),
        ("AzureWebJobs.DiscoverySweep.Disabled", "true"),
        ("AzureWebJobs.DiscoveryWorker.Disabled", "true"),
        ("AzureWebJobs.AlertSweep.Disabled", "true"),
        ("AzureWebJobs.EvidenceExport.Disabled", "true"),
    ]);
    let s =
        Settings::from_env(&endpoint_only).expect("endpoint-only app needs no rotation settings");
    assert_eq!(s.host.enabled_functions, vec![Function::SecretEndpoint]);
}

#[test]
fn the_table_audit_store_needs_exactly_one_way_in() {
    let neither = with(&[("KEYTURN_AUDIT_STORE", "table")]);
    assert!(
        errors_for(&neither)
            .iter()
            .any(|e| e.setting == "KEYTURN_TABLE_ENDPOINT")
    );

    let both = with(&[
        ("KEYTURN_AUDIT_STORE", "table"),
        (
            "KEYTURN_TABLE_ENDPOINT",
            "https://st.table.core.windows.net",
        ),
        (
            "KEYTURN_TABLE_CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        ),
    ]);
    assert!(
        errors_for(&both)
            .iter()
            .any(|e| e.setting == "KEYTURN_TABLE_CONNECTION_STRING")
    );

    let http = with(&[
        ("KEYTURN_AUDIT_STORE", "table"),
        ("KEYTURN_TABLE_ENDPOINT", "http://st.table.core.windows.net"),
    ]);
    assert!(
        errors_for(&http)
            .iter()
            .any(|e| e.setting == "KEYTURN_TABLE_ENDPOINT")
    );
}

#[test]
fn the_checkpoint_container_and_signing_key_come_together_and_parse_at_the_edge() {
    let table = [
        ("KEYTURN_AUDIT_STORE", "table"),
        (
            "KEYTURN_TABLE_ENDPOINT",
            "https://st.table.core.windows.net",
        ),
    ];
    let key =
        "https://kv-one.vault.azure.net/keys/audit-checkpoints/0123456789abcdef0123456789abcdef";
    let anchored = Settings::from_env(&with(
        &[
            &table[..],
            &[
                (
                    "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                    "https://st.blob.core.windows.net",
                ),
                ("KEYTURN_AUDIT_SIGNING_KEY", key),
            ],
        ]
        .concat(),
    ))
    .expect("anchored settings parse");
    let AuditSettings::Table {
        checkpoints: Some(checkpoints),
        ..
    } = &anchored.audit
    else {
        panic!("the table store is anchored: {:?}", anchored.audit);
    };
    assert_eq!(checkpoints.container, "audit-checkpoints");
    assert_eq!(checkpoints.signing_key.as_str(), key);
    assert_eq!(
        checkpoints.exceptions, None,
        "no register unless one is named"
    );
    let unanchored = Settings::from_env(&with(&table)).expect("unanchored settings parse");
    assert!(matches!(
        unanchored.audit,
        AuditSettings::Table {
            checkpoints: None,
            ..
        }
    ));

    let with_register = Settings::from_env(&with(
        &[
            &table[..],
            &[
                (
                    "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                    "https://st.blob.core.windows.net",
                ),
                ("KEYTURN_AUDIT_SIGNING_KEY", key),
                (
                    "KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB",
                    "compliance/registers/exceptions.json",
                ),
            ],
        ]
        .concat(),
    ))
    .expect("a register blob parses");
    let AuditSettings::Table {
        checkpoints: Some(checkpoints),
        ..
    } = &with_register.audit
    else {
        panic!("anchored: {:?}", with_register.audit);
    };
    assert_eq!(
        checkpoints.exceptions.as_ref().map(ToString::to_string),
        Some("compliance/registers/exceptions.json".to_owned())
    );
    let anchored_with = |register: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                "https://st.blob.core.windows.net",
            ),
            ("KEYTURN_AUDIT_SIGNING_KEY", key),
            ("KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB", register),
        ]
    };
    for register in [
        "exceptions.json",
        "Compliance/exceptions.json",
        "compliance/",
        "compliance/a//b.json",
        "compliance/../x.json",
    ] {
        let env = with(&[&table[..], &anchored_with(register)].concat());
        assert!(
            errors_for(&env)
                .iter()
                .any(|e| e.setting == "KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB"),
            "{register}"
        );
    }
    // A register without the checkpoints' Blob service to read it from.
    let env = with(
        &[
            &table[..],
            &[(
                "KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB",
                "compliance/exceptions.json",
            )],
        ]
        .concat(),
    );
    assert!(
        errors_for(&env)
            .iter()
            .any(|e| e.setting == "KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB")
    );

    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[(
                "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                "https://st.blob.core.windows.net",
            )],
            "KEYTURN_AUDIT_SIGNING_KEY",
        ),
        (
            &[("KEYTURN_AUDIT_SIGNING_KEY", key)],
            "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
        ),
        (
            &[
                (
                    "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                    "http://st.blob.core.windows.net",
                ),
                ("KEYTURN_AUDIT_SIGNING_KEY", key),
            ],
            "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
        ),
        (
            &[
                (
                    "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                    "https://st.blob.core.windows.net/?sv=1&sig=x",
                ),
                ("KEYTURN_AUDIT_SIGNING_KEY", key),
            ],
            "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
        ),
        (
            &[
                (
                    "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                    "https://st.blob.core.windows.net",
                ),
                (
                    "KEYTURN_AUDIT_SIGNING_KEY",
                    "https://kv-one.vault.azure.net/secrets/audit",
                ),
            ],
            "KEYTURN_AUDIT_SIGNING_KEY",
        ),
        (
            &[
                (
                    "KEYTURN_AUDIT_CHECKPOINT_ENDPOINT",
                    "https://st.blob.core.windows.net",
                ),
                ("KEYTURN_AUDIT_SIGNING_KEY", key),
                ("KEYTURN_AUDIT_CHECKPOINT_CONTAINER", "Audit_Checkpoints"),
            ],
            "KEYTURN_AUDIT_CHECKPOINT_CONTAINER",
        ),
    ];
    for (extra, setting) in cases {
        let env = with(&[&table[..], extra].concat());
        assert!(
            errors_for(&env).iter().any(|e| e.setting == setting),
            "{setting}: {extra:?}"
        );
    }
}

#[test]
fn the_connection_string_never_appears_in_debug_or_json() {
    let env = with(&[
        ("KEYTURN_AUDIT_STORE", "table"),
        (
            "KEYTURN_TABLE_CONNECTION_STRING",
            "AccountName=a;AccountKey=c2VjcmV0LWtleS12YWx1ZQ==",
        ),
    ]);
    let s = Settings::from_env(&env).expect("valid");
    let json = serde_json::to_string(&s).expect("serialises");
    let debug = format!("{s:?}");
    for text in [json, debug] {
        assert!(!text.contains("c2VjcmV0LWtleS12YWx1ZQ"), "leaked in {text}");
        assert!(text.contains("[redacted]"));
    }
}

#[test]
fn an_appsettings_prefix_may_not_cover_keyturns_or_the_platforms_settings() {
    for prefix in [
        "KEYTURN_",
        "KEYTURN_TABLE",
        "AzureWebJobs",
        "IDENTITY_HEADER_X",
        "WEBSITE_AUTH",
        "SECRET",
    ] {
        let errors = errors_for(&with(&[("KEYTURN_APPSETTINGS_PREFIX", prefix)]));
        assert!(
            errors
                .iter()
                .any(|e| e.setting == "KEYTURN_APPSETTINGS_PREFIX"),
            "{prefix} was accepted"
        );
    }
    let s = Settings::from_env(&with(&[("KEYTURN_APPSETTINGS_PREFIX", "DEVICE_SECRET_")]))
        .expect("own prefix");
    assert_eq!(s.endpoint.appsettings_prefix, "DEVICE_SECRET_");
}

/// For each reserved prefix, prefixes that overlap it: longer ones in either case, and
/// a shorter one it extends (when that one is long enough to be judged on overlap).
fn overlapping(reserved: &str) -> Vec<String> {
    let mut prefixes = vec![
        format!("{reserved}SECRETS_"),
        format!("{reserved}SECRETS_").to_ascii_lowercase(),
        format!("{reserved}SECRETS_").to_ascii_uppercase(),
    ];
    if reserved.len() > MIN_APPSETTINGS_PREFIX_LEN {
        prefixes.push(reserved[..reserved.len() - 1].to_owned());
    }
    if reserved.len() >= MIN_APPSETTINGS_PREFIX_LEN {
        prefixes.push(reserved.to_owned());
    }
    prefixes
}

#[test]
fn an_appsettings_prefix_overlapping_a_reserved_platform_prefix_is_refused() {
    for reserved in PLATFORM_SETTING_PREFIXES {
        for prefix in overlapping(reserved) {
            let errors = errors_for(&with(&[("KEYTURN_APPSETTINGS_PREFIX", prefix.as_str())]));
            let error = errors
                .iter()
                .find(|e| e.setting == "KEYTURN_APPSETTINGS_PREFIX")
                .unwrap_or_else(|| panic!("{prefix} was accepted"));
            assert!(
                error.to_string().contains(reserved),
                "{prefix}: {error} does not name {reserved}"
            );
        }
    }
}

#[test]
fn an_appsettings_prefix_overlapping_one_of_keyturns_settings_is_refused() {
    for setting in SETTINGS.iter().filter(|s| s.name.starts_with("KEYTURN_")) {
        for prefix in [setting.name.to_owned(), format!("{}_X", setting.name)] {
            let errors = errors_for(&with(&[("KEYTURN_APPSETTINGS_PREFIX", prefix.as_str())]));
            assert!(
                errors
                    .iter()
                    .any(|e| e.setting == "KEYTURN_APPSETTINGS_PREFIX"),
                "{prefix} was accepted"
            );
        }
    }
}

#[test]
fn the_default_appsettings_prefix_overlaps_nothing_reserved() {
    let s = Settings::from_env(&with(&[(
        "KEYTURN_APPSETTINGS_PREFIX",
        DEFAULT_APPSETTINGS_PREFIX,
    )]))
    .expect("the default prefix is valid");
    assert_eq!(s.endpoint.appsettings_prefix, DEFAULT_APPSETTINGS_PREFIX);
}

#[test]
fn the_forwarded_certificate_header_is_never_trusted_beside_keyturns_own_tls() {
    let errors = errors_for(&with(&[
        ("KEYTURN_TRUST_ARR_CLIENT_CERT", "true"),
        ("KEYTURN_TLS_ADDRESS", "127.0.0.1:8443"),
        ("KEYTURN_TLS_CERT", "/tls/cert.pem"),
        ("KEYTURN_TLS_KEY", "/tls/key.pem"),
    ]));
    assert!(
        errors
            .iter()
            .any(|e| e.setting == "KEYTURN_TRUST_ARR_CLIENT_CERT")
    );
}

#[test]
fn empty_values_count_as_unset() {
    let env = with(&[("KEYTURN_ROTATION_QUEUE", "  ")]);
    assert_eq!(
        Settings::from_env(&env)
            .expect("valid")
            .rotation
            .queue
            .as_str(),
        "rotations"
    );
}

#[test]
fn endpoint_settings_default_to_refusing_everyone() {
    let s = Settings::from_env(&with(&[])).expect("valid");
    assert!(s.endpoint.policies.is_empty());
    assert!(!s.endpoint.trust_arr_header);
    assert_eq!(s.endpoint.rate_limit_per_identity, 60);
    assert_eq!(s.endpoint.appsettings_prefix, DEFAULT_APPSETTINGS_PREFIX);
    assert!(s.endpoint.tls.is_none());
}

#[test]
fn a_configured_policy_needs_its_material() {
    let env = with(&[(
        "KEYTURN_CERT_POLICIES",
        "chain, trusted-thumbprints,entra-device",
    )]);
    let named: Vec<String> = errors_for(&env).into_iter().map(|e| e.setting).collect();
    for expected in [
        "KEYTURN_CHAIN_ROOTS",
        "KEYTURN_TRUSTED_THUMBPRINTS",
        "KEYTURN_ENTRA_DEVICE_ROOTS",
    ] {
        assert!(
            named.iter().any(|n| n == expected),
            "{expected} in {named:?}"
        );
    }
}

#[test]
fn malformed_endpoint_settings_are_each_reported() {
    let env = with(&[
        ("KEYTURN_CERT_POLICIES", "chain,pinning"),
        ("KEYTURN_TRUST_ARR_CLIENT_CERT", "yes"),
        ("KEYTURN_TRUSTED_THUMBPRINTS", "AB:CD"),
        ("KEYTURN_CLOCK_SKEW_SECONDS", "7200"),
        ("KEYTURN_RATE_LIMIT_PER_IDENTITY", "-1"),
        ("KEYTURN_SECRETS_TABLE", "no-dashes"),
        ("KEYTURN_TLS_ADDRESS", "0.0.0.0:8443"),
        ("KEYTURN_ENTRA_DEVICE_REQUIRE", "patched"),
        ("KEYTURN_CHAIN_REVOCATION", "ocsp"),
    ]);
    let named: Vec<String> = errors_for(&env).into_iter().map(|e| e.setting).collect();
    for expected in [
        "KEYTURN_CERT_POLICIES",
        "KEYTURN_TRUST_ARR_CLIENT_CERT",
        "KEYTURN_TRUSTED_THUMBPRINTS",
        "KEYTURN_CLOCK_SKEW_SECONDS",
        "KEYTURN_RATE_LIMIT_PER_IDENTITY",
        "KEYTURN_SECRETS_TABLE",
        "KEYTURN_TLS_ADDRESS",
        "KEYTURN_ENTRA_DEVICE_REQUIRE",
        "KEYTURN_CHAIN_REVOCATION",
    ] {
        assert!(
            named.iter().any(|n| n == expected),
            "{expected} in {named:?}"
        );
    }
}

#[test]
fn a_complete_endpoint_configuration_parses() {
    let env = with(&[
        ("KEYTURN_CERT_POLICIES", "chain,entra-device"),
        ("KEYTURN_CHAIN_ROOTS", "/etc/keyturn/roots.pem"),
        ("KEYTURN_CHAIN_CRLS", "/a.crl, /b.crl"),
        ("KEYTURN_ENTRA_DEVICE_ROOTS", "/etc/keyturn/ms-org.pem"),
        ("KEYTURN_ENTRA_DEVICE_REQUIRE", "compliant"),
        ("KEYTURN_TLS_ADDRESS", "127.0.0.1:8443"),
        ("KEYTURN_TLS_CERT", "/tls/cert.pem"),
        ("KEYTURN_TLS_KEY", "/tls/key.pem"),
        ("KEYTURN_RATE_LIMIT_PER_ADDRESS", "0"),
    ]);
    let endpoint = Settings::from_env(&env).expect("valid").endpoint;
    let chain = endpoint.chain.expect("chain");
    assert_eq!(chain.crls.len(), 2);
    assert!(chain.check_revocation);
    let entra = endpoint.entra_device.expect("entra");
    assert!(entra.require_compliant && !entra.require_managed);
    assert_eq!(
        entra.clock_skew_seconds, 300,
        "the one clock-skew setting reaches entra-device too"
    );
    assert_eq!(endpoint.tls.expect("tls").address.port(), 8443);
    assert_eq!(endpoint.rate_limit_per_address, 0);
}

fn problems_of(env: &Environment) -> String {
    errors_for(env)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn vault_urls_must_be_key_vault_hosts_of_the_configured_cloud() {
    let us = ("KEYTURN_AUTHORITY_HOST", "https://login.microsoftonline.us");
    let stand_in_authority = ("KEYTURN_AUTHORITY_HOST", "https://127.0.0.1:8443");
    for (extra, vault, accepted) in [
        (None, "https://kv-one.vault.azure.net/", true),
        (None, "https://KV-One.Vault.Azure.Net/", true),
        (None, "https://kv-one.vault.azure.cn/", false),
        (None, "https://127.0.0.1:8443/", false),
        (None, "https://vault.example.com/", false),
        (None, "https://kv-one.vault.azure.net:8443/", false),
        (None, "https://kv-one.vault.azure.net.example.com/", false),
        (Some(us), "https://kv-one.vault.usgovcloudapi.net/", true),
        (Some(us), "https://kv-one.vault.azure.net/", false),
        (
            Some(stand_in_authority),
            "https://kv-one.vault.azure.cn/",
            true,
        ),
        (Some(stand_in_authority), "https://127.0.0.1:8443/", false),
    ] {
        let mut pairs = vec![("KEYTURN_VAULTS", vault), ("KEYTURN_SECRETS_VAULT", vault)];
        pairs.extend(extra);
        let result = Settings::from_env(&with(&pairs));
        match (accepted, result) {
            (true, Ok(s)) => assert_eq!(s.rotation.vaults.len(), 1, "{vault}"),
            (false, Err(e)) => {
                let named: Vec<&str> = e.errors.iter().map(|e| e.setting.as_str()).collect();
                assert_eq!(
                    named,
                    ["KEYTURN_VAULTS", "KEYTURN_SECRETS_VAULT"],
                    "{vault}"
                );
            }
            (accepted, result) => {
                panic!("{vault} with {extra:?}: expected accepted={accepted}, got {result:?}")
            }
        }
    }
}

#[test]
fn the_stand_in_escape_accepts_any_https_vault_host_and_nothing_else() {
    let s = Settings::from_env(&with(&[
        ("KEYTURN_ALLOW_ANY_VAULT_HOST", "true"),
        ("KEYTURN_VAULTS", "https://127.0.0.1:8443/"),
    ]))
    .expect("the escape lets a stand-in in");
    assert_eq!(s.rotation.vaults[0].as_str(), "https://127.0.0.1:8443/");
    for (setting, value) in [
        ("KEYTURN_VAULTS", "http://127.0.0.1:8443/"),
        ("KEYTURN_ALLOW_ANY_VAULT_HOST", "sure"),
    ] {
        let named: Vec<String> = errors_for(&with(&[
            ("KEYTURN_ALLOW_ANY_VAULT_HOST", "true"),
            (setting, value),
        ]))
        .into_iter()
        .map(|e| e.setting)
        .collect();
        assert_eq!(named, [setting], "{value}");
    }
}

#[test]
fn names_follow_the_rules_start_up_applies() {
    for (setting, value) in [
        ("KEYTURN_AUDIT_TABLE", "tables"),
        ("KEYTURN_SECRETS_TABLE", "Tables"),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-one.servicebus.windows.net:5671",
        ),
        ("ServiceBusConnection__fullyQualifiedNamespace", "sb-one"),
        ("KEYTURN_ROTATION_QUEUE", "rotations/"),
    ] {
        let env = with(&[
            ("KEYTURN_AUDIT_STORE", "table"),
            (
                "KEYTURN_TABLE_ENDPOINT",
                "https://st.table.core.windows.net",
            ),
            (setting, value),
        ]);
        let named: Vec<String> = errors_for(&env).into_iter().map(|e| e.setting).collect();
        assert_eq!(named, [setting], "{value}");
    }
}

#[test]
fn a_private_key_pasted_in_place_of_its_path_is_refused_without_being_quoted() {
    let canary = "-----BEGIN PRIVATE KEY-----\nMIIcanaryc2VjcmV0LWtleQ\n-----END PRIVATE KEY-----";
    let env = with(&[
        ("KEYTURN_TLS_ADDRESS", "127.0.0.1:8443"),
        ("KEYTURN_TLS_CERT", "/tls/cert.pem"),
        ("KEYTURN_TLS_KEY", canary),
    ]);
    let errors = errors_for(&env);
    assert!(
        errors.iter().any(|e| e.setting == "KEYTURN_TLS_KEY"),
        "{errors:?}"
    );
    let text = format!("{errors:?} {}", problems_of(&env));
    assert!(!text.contains("MIIcanary"), "{text}");
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let inside = file.path().join("store");
    for dir in [
        "/dev/null".to_string(),
        file.path().display().to_string(),
        inside.display().to_string(),
    ] {
        let named: Vec<String> = errors_for(&with(&[("KEYTURN_DATA_DIR", &dir)]))
            .into_iter()
            .map(|e| e.setting)
            .collect();
        assert_eq!(named, ["KEYTURN_DATA_DIR"], "{dir}");
    }
    let fresh = tempfile::tempdir().expect("tempdir");
    let not_yet = fresh.path().join("a/b");
    let s = Settings::from_env(&with(&[(
        "KEYTURN_DATA_DIR",
        &not_yet.display().to_string(),
    )]))
    .expect("a directory still to be created is fine");
    assert_eq!(s.local.data_dir, not_yet);
    assert!(!not_yet.exists(), "parsing creates nothing");
}

#[test]
fn the_local_vault_key_must_be_base64_of_32_bytes_and_is_never_quoted() {
    let good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let s = Settings::from_env(&with(&[("KEYTURN_LOCAL_VAULT_KEY", good)])).expect("valid key");
    assert!(s.local.vault_key.is_some());
    let json = serde_json::to_string(&s).expect("serialises");
    assert!(!json.contains(good) && !format!("{s:?}").contains(good));
    for bad in [
        "c2hvcnQ=",
        "not base64 at all!",
        "Y2FuYXJ5Y2FuYXJ5Y2FuYXJ5Y2FuYXJ5Y2FuYXJ5Y2FuYXJ5",
    ] {
        let env = with(&[("KEYTURN_LOCAL_VAULT_KEY", bad)]);
        let errors = errors_for(&env);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].setting, "KEYTURN_LOCAL_VAULT_KEY");
        assert!(!problems_of(&env).contains(bad));
    }
}

#[test]
fn the_audit_command_needs_only_the_audit_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().display().to_string();
    let env = Environment::from_pairs([
        ("KEYTURN_AUDIT_STORE", "sqlite"),
        ("KEYTURN_DATA_DIR", data_dir.as_str()),
    ]);
    assert!(Settings::from_env(&env).is_err(), "serving needs more");
    let s = AuditCommandSettings::from_env(&env).expect("the audit log is all it reads");
    match s.audit {
        AuditSettings::Sqlite { path } => assert_eq!(path, dir.path().join("keyturn.db")),
        other => panic!("{other:?}"),
    }
    let table = Environment::from_pairs([("KEYTURN_AUDIT_STORE", "table")]);
    let named: Vec<String> = AuditCommandSettings::from_env(&table)
        .expect_err("no way to the table")
        .errors
        .into_iter()
        .map(|e| e.setting)
        .collect();
    assert_eq!(named, ["KEYTURN_TABLE_ENDPOINT"]);
}

#[test]
fn exit_with_parent_and_the_log_level_are_settings_like_any_other() {
    let s = Settings::from_env(&with(&[
        ("KEYTURN_EXIT_WITH_PARENT", "true"),
        ("KEYTURN_LOG_LEVEL", "warn,keyturn=debug"),
    ]))
    .expect("valid");
    assert!(s.host.exit_with_parent);
    assert_eq!(s.host.log_level, "warn,keyturn=debug");
    assert!(
        !Settings::from_env(&with(&[]))
            .expect("valid")
            .host
            .exit_with_parent
    );
    let named: Vec<String> = errors_for(&with(&[("KEYTURN_EXIT_WITH_PARENT", "maybe")]))
        .into_iter()
        .map(|e| e.setting)
        .collect();
    assert_eq!(named, ["KEYTURN_EXIT_WITH_PARENT"]);
    assert_eq!(
        Environment::from_pairs([("KEYTURN_LOG_LEVEL", "")])
            .log_level_or("warn")
            .expect("unset"),
        "warn"
    );
    assert!(
        Environment::from_pairs([("KEYTURN_LOG_LEVEL", "loud=[")])
            .log_level_or("warn")
            .is_err()
    );
}

#[test]
fn the_front_end_check_reads_the_clouds_resource_manager_every_interval() {
    let s = Settings::from_env(&with(&[("KEYTURN_TRUST_ARR_CLIENT_CERT", "true")])).expect("valid");
    assert_eq!(
        s.entra
            .resource_manager_endpoint
            .as_ref()
            .map(url::Url::as_str),
        Some("https://management.azure.com/")
    );
    assert_eq!(s.endpoint.front_end_check_seconds, 300);

    let s = Settings::from_env(&with(&[
        ("KEYTURN_AUTHORITY_HOST", "https://127.0.0.1:8443"),
        ("KEYTURN_ALLOW_ANY_VAULT_HOST", "true"),
        ("KEYTURN_TRUST_ARR_CLIENT_CERT", "true"),
        (
            "KEYTURN_RESOURCE_MANAGER_ENDPOINT",
            "https://127.0.0.1:9443",
        ),
        ("KEYTURN_FRONT_END_CHECK_SECONDS", "1"),
        (
            "WEBSITE_OWNER_NAME",
            "00000000-0000-0000-0000-000000000001+rg-EastUSwebspace",
        ),
        ("WEBSITE_RESOURCE_GROUP", "rg"),
        ("WEBSITE_SITE_NAME", "kt"),
    ]))
    .expect("valid");
    assert_eq!(
        s.entra
            .resource_manager_endpoint
            .as_ref()
            .map(url::Url::as_str),
        Some("https://127.0.0.1:9443/")
    );
    assert_eq!(s.endpoint.front_end_check_seconds, 1);
    assert_eq!(s.endpoint.site.site_name.as_deref(), Some("kt"));
    assert_eq!(s.endpoint.site.resource_group.as_deref(), Some("rg"));
}

#[test]
fn a_trusted_header_needs_a_resource_manager_and_a_sane_interval() {
    // An authority host of no known cloud gives no Resource Manager to derive.
    let named: Vec<String> = errors_for(&with(&[
        ("KEYTURN_AUTHORITY_HOST", "https://127.0.0.1:8443"),
        ("KEYTURN_ALLOW_ANY_VAULT_HOST", "true"),
        ("KEYTURN_TRUST_ARR_CLIENT_CERT", "true"),
    ]))
    .into_iter()
    .map(|e| e.setting)
    .collect();
    assert_eq!(named, ["KEYTURN_RESOURCE_MANAGER_ENDPOINT"]);
    // Without the header trusted nothing reads it.
    assert!(
        Settings::from_env(&with(&[
            ("KEYTURN_AUTHORITY_HOST", "https://127.0.0.1:8443"),
            ("KEYTURN_ALLOW_ANY_VAULT_HOST", "true"),
        ]))
        .is_ok()
    );
    for (setting, value) in [
        (
            "KEYTURN_RESOURCE_MANAGER_ENDPOINT",
            "http://management.azure.com",
        ),
        (
            "KEYTURN_RESOURCE_MANAGER_ENDPOINT",
            "https://management.azure.com/subscriptions",
        ),
        ("KEYTURN_FRONT_END_CHECK_SECONDS", "0"),
        ("KEYTURN_FRONT_END_CHECK_SECONDS", "86401"),
        ("KEYTURN_FRONT_END_CHECK_SECONDS", "soon"),
    ] {
        let named: Vec<String> = errors_for(&with(&[(setting, value)]))
            .into_iter()
            .map(|e| e.setting)
            .collect();
        assert_eq!(named, [setting], "{value}");
    }
}

#[test]
fn discovery_budgets_default_to_the_engines_and_are_bounded_by_each_services_limit() {
    let defaults = Settings::from_env(&with(&[])).expect("valid");
    let engine = crate::discovery::budget::Budgets::default();
    assert_eq!(
        defaults.rotation.discovery_budgets,
        super::rotation::DiscoveryBudgets {
            key_vault_per_vault: engine.key_vault_per_vault,
            graph: engine.graph,
            resource_manager: engine.resource_manager,
        }
    );

    let set = Settings::from_env(&with(&[
        ("KEYTURN_DISCOVERY_KEYVAULT_BUDGET", "400"),
        ("KEYTURN_DISCOVERY_GRAPH_BUDGET", "50"),
        ("KEYTURN_DISCOVERY_RESOURCE_MANAGER_BUDGET", "10"),
    ]))
    .expect("valid");
    assert_eq!(
        set.rotation.discovery_budgets,
        super::rotation::DiscoveryBudgets {
            key_vault_per_vault: 400,
            graph: 50,
            resource_manager: 10,
        }
    );

    let named: Vec<String> = errors_for(&with(&[
        ("KEYTURN_DISCOVERY_KEYVAULT_BUDGET", "4001"),
        ("KEYTURN_DISCOVERY_GRAPH_BUDGET", "0"),
        ("KEYTURN_DISCOVERY_RESOURCE_MANAGER_BUDGET", "ten"),
    ]))
    .into_iter()
    .map(|e| e.setting)
    .collect();
    assert_eq!(
        named,
        [
            "KEYTURN_DISCOVERY_KEYVAULT_BUDGET",
            "KEYTURN_DISCOVERY_GRAPH_BUDGET",
            "KEYTURN_DISCOVERY_RESOURCE_MANAGER_BUDGET"
        ]
    );
}

#[test]
fn discovery_subscriptions_are_every_visible_one_unless_listed() {
    let unset = Settings::from_env(&with(&[])).expect("valid");
    let empty =
        Settings::from_env(&with(&[("KEYTURN_DISCOVERY_SUBSCRIPTIONS", " ")])).expect("valid");
    assert!(unset.rotation.discovery_subscriptions.is_empty());
    assert!(empty.rotation.discovery_subscriptions.is_empty());

    let listed = Settings::from_env(&with(&[(
        "KEYTURN_DISCOVERY_SUBSCRIPTIONS",
        "6f1b3c1e-0000-4000-8000-000000000001, 0c8d2a4f-0000-4000-8000-000000000002,6f1b3c1e-0000-4000-8000-000000000001",
    )]))
    .expect("valid");
    let ids: Vec<String> = listed
        .rotation
        .discovery_subscriptions
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        ids,
        [
            "6f1b3c1e-0000-4000-8000-000000000001",
            "0c8d2a4f-0000-4000-8000-000000000002"
        ]
    );

    let errors = errors_for(&with(&[(
        "KEYTURN_DISCOVERY_SUBSCRIPTIONS",
        "6f1b3c1e-0000-4000-8000-000000000001,/subscriptions/not-a-guid",
    )]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].setting, "KEYTURN_DISCOVERY_SUBSCRIPTIONS");
    assert!(
        errors[0].problem.contains("`/subscriptions/not-a-guid`"),
        "{}",
        errors[0].problem
    );
}

#[test]
fn bad_alert_settings_are_refused_naming_the_setting_and_never_echoing_a_url() {
    /// Settings given, the setting named, what its problem says.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case<'_>; 7] = [
        (
            &[("KEYTURN_ALERT_THRESHOLDS", "30,soon")],
            "KEYTURN_ALERT_THRESHOLDS",
            "entry 2",
        ),
        (
            &[("KEYTURN_ALERT_ROUTES", "ops=pager:x")],
            "KEYTURN_ALERT_ROUTES",
            "unknown kind",
        ),
        (
            &[
                ("KEYTURN_ALERT_ROUTES", "owners=mail"),
                ("KEYTURN_ALERT_MAILBOX", "keyturn@contoso.com"),
                ("KEYTURN_ALERT_DEFAULT_ROUTE", "ops"),
            ],
            "KEYTURN_ALERT_DEFAULT_ROUTE",
            "not one of KEYTURN_ALERT_ROUTES",
        ),
        (
            &[("KEYTURN_ALERT_ROUTES", "owners=mail")],
            "KEYTURN_ALERT_MAILBOX",
            "route owners sends mail",
        ),
        (
            &[("KEYTURN_ALERT_ROUTES", "ops=slack:hook-ops")],
            "KEYTURN_ALERT_VAULT",
            "route ops reads its webhook URL",
        ),
        (
            &[("KEYTURN_ALERT_DIGEST_DAYS", "0")],
            "KEYTURN_ALERT_DIGEST_DAYS",
            "from 1 to 366",
        ),
        (
            &[(
                "KEYTURN_ALERT_ROUTES",
                "ops=slack:https://hooks.slack.com/services/T0/B0/tok3n",
            )],
            "KEYTURN_ALERT_ROUTES",
            "not a Key Vault object name",
        ),
    ];
    for (settings, setting, problem) in cases {
        let errors = errors_for(&with(settings));
        let error = errors
            .iter()
            .find(|e| e.setting == setting)
            .unwrap_or_else(|| panic!("{setting} is named: {errors:?}"));
        assert!(error.problem.contains(problem), "{error}");
        assert!(!error.to_string().contains("tok3n"), "{error}");
    }
}

#[test]
fn alert_settings_parse_into_routes_thresholds_and_the_digest() {
    let s = Settings::from_env(&with(&[
        ("KEYTURN_ALERT_ROUTES", "ops=teams:hook-ops;owners=mail"),
        ("KEYTURN_ALERT_DEFAULT_ROUTE", "ops"),
        ("KEYTURN_ALERT_MAILBOX", "keyturn@contoso.com"),
        ("KEYTURN_ALERT_VAULT", "https://kv-alerts.vault.azure.net/"),
        ("KEYTURN_ALERT_THRESHOLDS", "0,7,30"),
        ("KEYTURN_ALERT_DIGEST_DAYS", "1"),
    ]))
    .expect("valid");
    assert_eq!(s.alerts.routes.len(), 2);
    assert_eq!(
        s.alerts.default_route.as_ref().map(|r| r.as_str()),
        Some("ops")
    );
    assert_eq!(s.alerts.thresholds.to_string(), "30,7,0");
    assert_eq!(s.alerts.digest_days, 1);
    let shown = serde_json::to_value(&s).expect("serialises");
    assert_eq!(shown["alert_routes"], "ops=teams:hook-ops;owners=mail");
    assert_eq!(shown["alert_vault"], "https://kv-alerts.vault.azure.net/");
}
