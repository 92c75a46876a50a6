//! The compliance engine over crafted inventories and audit logs: each rule fires on the
//! record made to break it and stays quiet on its twin that keeps it; exceptions (in
//! force, lapsed, malformed); scores per framework and per scope; and `keyturn
//! compliance` over `keyturn dev`'s demo store, with clear refusals of bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use keyturn::audit::{AuditLog, verify_log};
use keyturn::compliance::engine::{AuditInput, Finding};
use keyturn::compliance::{
    Catalogue, Evaluation, Register, Report, SPILL_AFTER, ScopeKind, Scores, Status, Thresholds,
};
use keyturn::domain::ids::{AppId, DirectoryObjectId, KeyId, SubscriptionId};
use keyturn::domain::inventory::{
    CertificateDetails, CredentialHandle, CredentialKind, CredentialSource, DirectoryDetails,
    InventoryCredential, InventoryVault, KeyDetails, LifetimeAction, LifetimeActionType,
    LifetimeTrigger, Owner, PermissionModel, SweepId,
};
use keyturn::domain::names::VaultUrl;
use keyturn::ports::audit::{Actor, AuditObject, AuditRecord, AuditStore, AuditText, Outcome};
use keyturn::ports::inventory::InventoryStore;
use keyturn_doubles::{MemoryAuditStore, MemoryInventory};

use crate::helpers::keyturn;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-06-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc)
}

fn days(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}

fn sweep() -> SweepId {
    SweepId::parse("20300601T000000Z").expect("sweep")
}

const SUBSCRIPTION: &str = "00000000-0000-0000-0000-00000000000a";

fn vault(name: &str, model: PermissionModel) -> InventoryVault {
    InventoryVault {
        subscription: Some(SubscriptionId::parse(SUBSCRIPTION).expect("id")),
        resource_group: Some("rg".into()),
        name: name.parse().expect("vault name"),
        uri: VaultUrl::parse(&format!("https://{name}.vault.azure.net/")).expect("url"),
        location: Some("westeurope".into()),
        soft_delete: Some(true),
        purge_protection: Some(true),
        permission_model: model,
        public_network_access: Some("Disabled".into()),
        scanned_at: now(),
        sweep: sweep(),
    }
}

/// A vault object that keeps every rule: owned, valid for 90 days from 30 days ago,
/// enabled, managed.
fn vault_object(vault: &InventoryVault, kind: CredentialKind, name: &str) -> InventoryCredential {
    InventoryCredential {
        source: vault.source(),
        kind,
        name: name.into(),
        handle: CredentialHandle::VaultObject {
            name: name.into(),
            version: Some("0123456789abcdef0123456789abcdef".into()),
            versions: Some(1),
        },
        enabled: true,
        created: Some(now() - days(30)),
        updated: Some(now() - days(30)),
        not_before: Some(now() - days(30)),
        expires: Some(now() + days(60)),
        content_type: None,
        tags: [("keyturn-owner".to_owned(), "team-payments".to_owned())].into(),
        certificate: (kind == CredentialKind::Certificate).then(|| CertificateDetails {
            key_type: Some("RSA".into()),
            key_size: Some(2048),
            lifetime_actions: vec![LifetimeAction {
                action: LifetimeActionType::AutoRenew,
                trigger: LifetimeTrigger::LifetimePercentage(80),
            }],
            ..CertificateDetails::default()
        }),
        key: (kind == CredentialKind::Key).then(|| KeyDetails {
            key_type: Some("RSA".into()),
            key_size: Some(3072),
            curve: None,
            rotation_policy: true,
        }),
        directory: None,
        owners: Vec::new(),
        managed: true,
        scanned_at: now(),
        sweep: sweep(),
    }
}

fn application(n: u8) -> CredentialSource {
    CredentialSource::Application {
        object_id: DirectoryObjectId::parse(&format!("7d1c0a52-3b1e-4d7e-9a51-0c2b7f1e4a{n:02}"))
            .expect("id"),
        app_id: AppId::parse(&format!("a4f3c9e2-1111-4c2a-8d55-2b6e0f9a7c{n:02}")).expect("id"),
        display_name: Some(format!("app-{n}")),
    }
}

/// An application's certificate credential that keeps every rule.
fn app_credential(source: CredentialSource, kind: CredentialKind, n: u8) -> InventoryCredential {
    InventoryCredential {
        source,
        kind,
        name: format!("credential {n}"),
        handle: CredentialHandle::DirectoryCredential {
            key_id: KeyId::parse(&format!("0f5e8c1a-2222-4d3b-9e66-3c7f1a0b8d{n:02}")).expect("id"),
        },
        enabled: true,
        created: None,
        updated: None,
        not_before: Some(now() - days(30)),
        expires: Some(now() + days(60)),
        content_type: None,
        tags: Default::default(),
        certificate: None,
        key: None,
        directory: Some(DirectoryDetails {
            federated_credentials: Some(0),
            ..DirectoryDetails::default()
        }),
        owners: vec![Owner {
            object_id: None,
            display_name: Some("Ada Lovelace".into()),
            user_principal_name: Some("ada@contoso.com".into()),
            mail: None,
        }],
        managed: true,
        scanned_at: now(),
        sweep: sweep(),
    }
}

/// Runs the engine with the default thresholds over `inventory` (and `audit`), collecting
/// the findings.
async fn evaluate(
    inventory: &dyn InventoryStore,
    audit: Option<AuditInput<'_>>,
    register: &Register,
    framework: Option<&str>,
) -> (Vec<Finding>, Report) {
    evaluate_within(inventory, audit, register, framework, SPILL_AFTER).await
}

/// As [`evaluate`], holding at most `spill_after` scope tallies and applications in
/// memory.
async fn evaluate_within(
    inventory: &dyn InventoryStore,
    audit: Option<AuditInput<'_>>,
    register: &Register,
    framework: Option<&str>,
    spill_after: usize,
) -> (Vec<Finding>, Report) {
    let catalogue = Catalogue::builtin();
    let thresholds = Thresholds::default();
    let evaluation = Evaluation {
        catalogue: &catalogue,
        thresholds: &thresholds,
        register,
        framework,
        now: now(),
        spill_after,
    };
    let mut findings = Vec::new();
    let mut sink = |finding: &Finding| {
        findings.push(finding.clone());
        Ok(())
    };
    let report = evaluation
        .run(inventory, audit, &mut sink)
        .await
        .expect("evaluated");
    (findings, report)
}

fn fired(findings: &[Finding]) -> BTreeSet<(String, String)> {
    findings
        .iter()
        .map(|f| (f.rule.clone(), f.name.clone()))
        .collect()
}

fn pair(rule: &str, name: &str) -> (String, String) {
    (rule.to_owned(), name.to_owned())
}

#[tokio::test]
async fn a_compliant_inventory_raises_no_finding_and_scores_full_marks() {
    let inventory = MemoryInventory::new();
    let kv = vault("kv-good", PermissionModel::Rbac);
    inventory.put_vault(&kv).await.expect("vault");
    inventory
        .put_credentials(&[
            vault_object(&kv, CredentialKind::Secret, "db-password"),
            vault_object(&kv, CredentialKind::Key, "cmk"),
            vault_object(&kv, CredentialKind::Certificate, "tls"),
            app_credential(application(1), CredentialKind::KeyCredential, 1),
        ])
        .await
        .expect("credentials");

    let (findings, report) = evaluate(&inventory, None, &Register::empty(), None).await;

    assert!(findings.is_empty(), "{findings:#?}");
    assert!(report.board.total.checks > 20, "{:?}", report.board.total);
    assert_eq!(report.board.total.score(), Some(100.0));
    let skipped: Vec<&str> = report
        .not_evaluated
        .iter()
        .map(|n| n.rule.as_str())
        .collect();
    assert!(skipped.contains(&"audit-chain-broken"), "{skipped:?}");
}

/// Each case: the rule, a record made to break it, and what the finding's name is.
#[tokio::test]
async fn every_credential_and_vault_rule_fires_on_the_record_that_breaks_it_and_only_there() {
    let inventory = MemoryInventory::new();
    let good = vault("kv-good", PermissionModel::Rbac);
    let mut open = vault("kv-open", PermissionModel::AccessPolicy);
    open.purge_protection = Some(false);
    open.public_network_access = Some("Enabled".into());
    for v in [&good, &open] {
        inventory.put_vault(v).await.expect("vault");
    }
    let object = |kind, name: &str| vault_object(&good, kind, name);
    let mut records = Vec::new();

    let mut no_expiry_secret = object(CredentialKind::Secret, "no-expiry-secret");
    no_expiry_secret.expires = None;
    records.push(no_expiry_secret);
    let mut no_expiry_key = object(CredentialKind::Key, "no-expiry-key");
    no_expiry_key.expires = None;
    records.push(no_expiry_key);
    let mut expired = object(CredentialKind::Secret, "expired-enabled");
    expired.expires = Some(now() - days(3));
    records.push(expired);
    let mut expired_disabled = object(CredentialKind::Secret, "expired-disabled");
    expired_disabled.expires = Some(now() - days(3));
    expired_disabled.enabled = false;
    records.push(expired_disabled);
    let mut expiring = object(CredentialKind::Secret, "expiring-unmanaged");
    expiring.expires = Some(now() + days(10));
    expiring.managed = false;
    records.push(expiring);
    let mut expiring_managed = object(CredentialKind::Secret, "expiring-managed");
    expiring_managed.expires = Some(now() + days(10));
    records.push(expiring_managed);
    let mut long_lived = object(CredentialKind::Secret, "long-lived");
    long_lived.not_before = Some(now() - days(10));
    long_lived.created = Some(now() - days(10));
    long_lived.expires = Some(now() + days(800));
    records.push(long_lived);
    let mut stale = object(CredentialKind::Key, "not-rotated");
    stale.created = Some(now() - days(400));
    stale.not_before = Some(now() - days(400));
    stale.expires = Some(now() + days(200));
    records.push(stale);
    let mut unowned = object(CredentialKind::Secret, "no-owner");
    unowned.tags.clear();
    records.push(unowned);
    let mut weak = object(CredentialKind::Certificate, "weak-rsa");
    weak.certificate.as_mut().expect("details").key_size = Some(1024);
    records.push(weak);
    let mut weak_curve = object(CredentialKind::Certificate, "weak-curve");
    let details = weak_curve.certificate.as_mut().expect("details");
    details.key_type = Some("EC".into());
    details.key_size = None;
    details.curve = Some("P-192".into());
    records.push(weak_curve);
    let mut strong_curve = object(CredentialKind::Certificate, "strong-curve");
    let details = strong_curve.certificate.as_mut().expect("details");
    details.key_type = Some("EC".into());
    details.key_size = None;
    details.curve = Some("P-384".into());
    records.push(strong_curve);
    let mut sha1 = object(CredentialKind::Certificate, "sha1");
    sha1.certificate.as_mut().expect("details").sha1_signature = true;
    records.push(sha1);
    let mut manual = object(CredentialKind::Certificate, "no-auto-renew");
    manual
        .certificate
        .as_mut()
        .expect("details")
        .lifetime_actions = vec![LifetimeAction {
        action: LifetimeActionType::EmailContacts,
        trigger: LifetimeTrigger::DaysBeforeExpiry(30),
    }];
    manual.managed = false;
    records.push(manual);
    let mut unrotated = object(CredentialKind::Key, "no-rotation-policy");
    unrotated.key.as_mut().expect("details").rotation_policy = false;
    records.push(unrotated);
    records.push(vault_object(&open, CredentialKind::Secret, "in-open-vault"));

    let crowded = application(2);
    for n in 10..13 {
        records.push(app_credential(
            crowded.clone(),
            CredentialKind::KeyCredential,
            n,
        ));
    }
    let mut expired_extra = app_credential(crowded.clone(), CredentialKind::KeyCredential, 13);
    expired_extra.expires = Some(now() - days(1));
    expired_extra.enabled = false;
    records.push(expired_extra);
    let mut password = app_credential(application(3), CredentialKind::PasswordCredential, 20);
    password.name = "client-secret".into();
    records.push(password);
    let mut forever = app_credential(application(4), CredentialKind::KeyCredential, 21);
    forever.name = "forever".into();
    forever.expires = None;
    records.push(forever);
    let mut orphan = app_credential(application(5), CredentialKind::KeyCredential, 22);
    orphan.name = "orphan".into();
    orphan.owners.clear();
    records.push(orphan);
    inventory
        .put_credentials(&records)
        .await
        .expect("credentials");

    let (findings, _) = evaluate(&inventory, None, &Register::empty(), None).await;
    let fired = fired(&findings);

    let expected = BTreeSet::from([
        pair("secret-no-expiry", "no-expiry-secret"),
        pair("key-no-expiry", "no-expiry-key"),
        pair("credential-expired-enabled", "expired-enabled"),
        pair("credential-expiring-unmanaged", "expiring-unmanaged"),
        pair("credential-lifetime-too-long", "long-lived"),
        pair("credential-not-rotated", "not-rotated"),
        pair("credential-no-owner", "no-owner"),
        pair("certificate-weak-key", "weak-rsa"),
        pair("certificate-weak-key", "weak-curve"),
        pair("certificate-sha1-signature", "sha1"),
        pair("certificate-no-auto-renew", "no-auto-renew"),
        pair("key-no-rotation-policy", "no-rotation-policy"),
        pair("vault-not-recoverable", "kv-open"),
        pair("vault-public-network-access", "kv-open"),
        pair("vault-access-policy-mode", "kv-open"),
        pair("application-too-many-credentials", "app-2"),
        pair("application-password-credential", "client-secret"),
        pair("credential-no-expiry", "forever"),
        pair("credential-no-owner", "orphan"),
    ]);
    assert_eq!(
        fired.difference(&expected).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "fired where it should not"
    );
    assert_eq!(
        expected.difference(&fired).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "did not fire"
    );
}

#[tokio::test]
async fn a_finding_carries_its_record_id_scope_severity_and_the_controls_of_its_vaults_mode() {
    let inventory = MemoryInventory::new();
    let rbac = vault("kv-rbac", PermissionModel::Rbac);
    let policies = vault("kv-policies", PermissionModel::AccessPolicy);
    let mut secrets = Vec::new();
    for v in [&rbac, &policies] {
        inventory.put_vault(v).await.expect("vault");
        let mut secret = vault_object(v, CredentialKind::Secret, &format!("{}-secret", v.name));
        secret.expires = None;
        secrets.push(secret);
    }
    inventory
        .put_credentials(&secrets)
        .await
        .expect("credentials");

    let (findings, _) = evaluate(&inventory, None, &Register::empty(), None).await;

    let cis = |name: &str| -> Vec<String> {
        let finding = findings
            .iter()
            .find(|f| f.rule == "secret-no-expiry" && f.name == name)
            .unwrap_or_else(|| panic!("{name} fired"));
        finding
            .controls
            .iter()
            .filter(|c| c.framework == "cis-azure")
            .map(|c| format!("{} {}", c.version, c.control))
            .collect()
    };
    assert_eq!(cis("kv-rbac-secret"), ["2.1.0 8.3"]);
    assert_eq!(cis("kv-policies-secret"), ["2.1.0 8.4"]);
    let finding = findings
        .iter()
        .find(|f| f.name == "kv-rbac-secret")
        .expect("fired");
    assert_eq!(finding.record_id.as_ref(), Some(&secrets[0].id()));
    assert_eq!(finding.scope.vault.as_deref(), Some("kv-rbac"));
    assert_eq!(finding.scope.subscription.as_deref(), Some(SUBSCRIPTION));
    assert_eq!(finding.scope.owners, ["team-payments"]);
    assert_eq!(finding.severity.as_str(), "high");
    assert_eq!(finding.status, Status::Open);
    let frameworks: BTreeSet<&str> = finding
        .controls
        .iter()
        .map(|c| c.framework.as_str())
        .collect();
    assert_eq!(
        frameworks,
        BTreeSet::from([
            "cis-azure",
            "hipaa",
            "iso-27001",
            "nist-800-53",
            "pci-dss",
            "soc2"
        ])
    );
}

/// An inventory with one vault that breaks two rules and one secret without an expiry.
async fn two_vault_findings() -> MemoryInventory {
    let inventory = MemoryInventory::new();
    let mut kv = vault("kv-legacy", PermissionModel::Rbac);
    kv.public_network_access = Some("Enabled".into());
    kv.purge_protection = Some(false);
    inventory.put_vault(&kv).await.expect("vault");
    let mut secret = vault_object(&kv, CredentialKind::Secret, "api-key");
    secret.expires = None;
    inventory
        .put_credentials(&[secret])
        .await
        .expect("credential");
    inventory
}

fn register(text: &str) -> Register {
    Register::parse(text, "exceptions.json", &Catalogue::builtin()).expect("valid register")
}

#[tokio::test]
async fn an_exception_in_force_shows_the_finding_as_excepted_and_counts_it_apart() {
    let inventory = two_vault_findings().await;
    let register = register(
        r#"{ "exceptions": [ { "rule": "vault-public-network-access", "subject": "vault:kv-legacy",
            "owner": "ada@contoso.com", "reason": "partner integration", "expires": "2030-12-31" } ] }"#,
    );

    let (findings, report) = evaluate(&inventory, None, &register, None).await;

    let excepted = findings
        .iter()
        .find(|f| f.rule == "vault-public-network-access")
        .expect("still listed");
    assert_eq!(excepted.status, Status::Excepted);
    let exception = excepted.exception.as_ref().expect("the exception named");
    assert_eq!(exception.owner, "ada@contoso.com");
    assert!(!exception.lapsed);
    assert_eq!(report.excepted, 1);
    assert_eq!(report.open, 2);
    let nist = report.board.frameworks["nist-800-53"];
    assert_eq!(nist.excepted, 1, "{nist:?}");
    let vault = report
        .board
        .scopes
        .get(ScopeKind::Vault, "kv-legacy")
        .expect("the tallies read back")
        .expect("the vault's tally");
    assert_eq!((vault.failed, vault.excepted), (2, 1), "{vault:?}");
    assert!(vault.score() > vault.strict_score(), "{vault:?}");
}

#[tokio::test]
async fn an_exception_declared_by_tags_excepts_its_objects_finding_and_a_malformed_one_is_named() {
    let inventory = MemoryInventory::new();
    let kv = vault("kv-tags", PermissionModel::Rbac);
    inventory.put_vault(&kv).await.expect("vault");
    let tagged = |name: &str, tags: &[(&str, &str)]| {
        let mut secret = vault_object(&kv, CredentialKind::Secret, name);
        secret.expires = None;
        secret
            .tags
            .extend(tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        secret
    };
    let excepted = tagged(
        "legacy-token",
        &[
            ("keyturn-exception-rule", "secret-no-expiry"),
            (
                "Keyturn-Exception-Reason",
                "read by a device that cannot renew it",
            ),
            ("keyturn-exception-owner", "ada@contoso.com"),
            ("keyturn-exception-expires", "2030-12-31"),
        ],
    );
    let lapsed = tagged(
        "old-token",
        &[
            ("keyturn-exception-rule", "secret-no-expiry"),
            ("keyturn-exception-reason", "until the migration"),
            ("keyturn-exception-owner", "ops"),
            ("keyturn-exception-expires", "2020-01-01"),
        ],
    );
    let malformed = tagged(
        "typo-token",
        &[
            ("keyturn-exception-rule", "secret-no-expiry"),
            ("keyturn-exception-reason", "forgot the rest"),
            ("keyturn-exception-expires", "next year"),
        ],
    );
    let unknown_rule = tagged(
        "unknown-rule-token",
        &[
            ("keyturn-exception-rule", "secret-no-expiri"),
            ("keyturn-exception-reason", "r"),
            ("keyturn-exception-owner", "o"),
            ("keyturn-exception-expires", "2030-01-01"),
        ],
    );
    let plain = tagged("plain-token", &[]);
    inventory
        .put_credentials(&[
            excepted.clone(),
            lapsed.clone(),
            malformed.clone(),
            unknown_rule.clone(),
            plain,
        ])
        .await
        .expect("credentials");

    let (findings, report) = evaluate(&inventory, None, &Register::empty(), None).await;

    let no_expiry = |name: &str| {
        findings
            .iter()
            .find(|f| f.rule == "secret-no-expiry" && f.name == name)
            .unwrap_or_else(|| panic!("{name}'s finding is listed"))
    };
    let finding = no_expiry("legacy-token");
    assert_eq!(finding.status, Status::Excepted);
    let exception = finding.exception.as_ref().expect("the exception named");
    assert_eq!(exception.declared_on, Some(excepted.id()));
    assert_eq!(exception.owner, "ada@contoso.com");
    let finding = no_expiry("old-token");
    assert_eq!(finding.status, Status::Open);
    assert!(finding.exception.as_ref().is_some_and(|e| e.lapsed));
    for name in ["typo-token", "unknown-rule-token", "plain-token"] {
        let finding = no_expiry(name);
        assert_eq!(finding.status, Status::Open, "{name}");
        assert_eq!(finding.exception, None, "{name}");
    }
    assert_eq!(report.excepted, 1);
    assert_eq!(report.tag_exceptions.len(), 2);
    let named: BTreeMap<&str, &str> = report
        .malformed_exception_tags
        .iter()
        .map(|m| (m.name.as_str(), m.problem.as_str()))
        .collect();
    assert_eq!(named.len(), 2, "{named:?}");
    assert!(
        named["typo-token"].contains("keyturn-exception-owner"),
        "{named:?}"
    );
    assert!(
        named["unknown-rule-token"].contains("secret-no-expiri"),
        "{named:?}"
    );
    assert!(
        report
            .malformed_exception_tags
            .iter()
            .all(|m| m.source.contains("kv-tags")),
        "{:?}",
        report.malformed_exception_tags
    );
}

#[tokio::test]
async fn a_lapsed_exception_no_longer_applies_and_is_reported() {
    let inventory = two_vault_findings().await;
    let register = register(
        r#"{ "exceptions": [ { "rule": "vault-public-network-access", "subject": "*",
            "owner": "ada@contoso.com", "reason": "until the VPN", "expires": "2030-05-31" } ] }"#,
    );

    let (findings, report) = evaluate(&inventory, None, &register, None).await;

    let finding = findings
        .iter()
        .find(|f| f.rule == "vault-public-network-access")
        .expect("listed");
    assert_eq!(finding.status, Status::Open);
    assert!(finding.exception.as_ref().is_some_and(|e| e.lapsed));
    assert_eq!((report.open, report.excepted), (3, 0));
    assert_eq!(report.lapsed_exceptions.len(), 1);
    assert_eq!(report.lapsed_exceptions[0].owner, "ada@contoso.com");
}

#[tokio::test]
async fn scores_are_kept_per_framework_control_and_scope_and_a_framework_limits_the_run() {
    let inventory = two_vault_findings().await;

    let (all, report) = evaluate(&inventory, None, &Register::empty(), None).await;
    let (cis_only, cis_report) =
        evaluate(&inventory, None, &Register::empty(), Some("cis-azure")).await;

    let scores = Scores::of(&report, &Catalogue::builtin()).expect("the tallies read back");
    let cis = scores
        .frameworks
        .iter()
        .find(|f| f.id == "cis-azure")
        .expect("cis scored");
    assert_eq!(cis.version, "2.1.0");
    assert_eq!(cis.result, "fail");
    let recoverable = cis
        .controls
        .iter()
        .find(|c| c.control == "8.5")
        .expect("8.5 listed");
    assert_eq!(
        (recoverable.scored.tally.checks, recoverable.result),
        (1, "fail")
    );
    assert_eq!(recoverable.rules, ["vault-not-recoverable"]);
    let rotation = cis
        .controls
        .iter()
        .find(|c| c.control == "8.8")
        .expect("8.8 listed");
    assert_eq!(rotation.result, "not_evaluated");
    assert!(
        scores.scopes[&ScopeKind::Owner]
            .iter()
            .any(|s| s.name == "team-payments")
    );
    assert!(
        scores.scopes[&ScopeKind::Subscription]
            .iter()
            .any(|s| s.name == SUBSCRIPTION)
    );

    assert!(cis_only.len() < all.len());
    assert!(
        cis_only
            .iter()
            .all(|f| f.controls.iter().all(|c| c.framework == "cis-azure"))
    );
    let cis_rules: BTreeSet<&str> = cis_only.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        cis_rules,
        BTreeSet::from(["secret-no-expiry", "vault-not-recoverable"])
    );
    assert_eq!(
        cis_report.board.frameworks.keys().collect::<Vec<_>>(),
        ["cis-azure"]
    );
}

fn rotation_record(at: DateTime<Utc>, action: &str, outcome: Outcome, secret: &str) -> AuditRecord {
    let mut record = AuditRecord::new(
        at,
        Actor::Function(AuditText::parse("RotationWorker").expect("text")),
        AuditText::parse(action).expect("action"),
        outcome,
    );
    record.object = AuditObject {
        vault: Some(AuditText::parse("https://kv-prod.vault.azure.net/").expect("text")),
        secret_name: Some(AuditText::parse(secret).expect("text")),
        ..AuditObject::default()
    };
    record.reason = Some(AuditText::parse("permission missing on kv-prod").expect("text"));
    record
}

#[tokio::test]
async fn rotations_that_failed_in_the_period_are_findings_and_a_tampered_log_fails_its_rule() {
    let store = Arc::new(MemoryAuditStore::new());
    let log = AuditLog::new(store.clone());
    for record in [
        rotation_record(
            now() - days(2),
            "rotation.failed",
            Outcome::Failed,
            "db-password",
        ),
        rotation_record(
            now() - days(90),
            "rotation.failed",
            Outcome::Failed,
            "old-failure",
        ),
        rotation_record(
            now() - days(1),
            "secret.rotated",
            Outcome::Succeeded,
            "api-key",
        ),
    ] {
        log.append(record).await.expect("appended");
    }
    let inventory = MemoryInventory::new();

    let intact = verify_log(store.as_ref(), None, None)
        .await
        .expect("verified");
    let audit = AuditInput {
        store: store.as_ref(),
        verification: Ok(intact),
    };
    let (findings, report) = evaluate(&inventory, Some(audit), &Register::empty(), None).await;

    assert_eq!(
        fired(&findings),
        BTreeSet::from([pair("rotation-failed", "db-password")])
    );
    let failure = &findings[0];
    assert_eq!(failure.scope.vault.as_deref(), Some("kv-prod"));
    assert!(
        failure.detail.contains("permission missing"),
        "{}",
        failure.detail
    );
    assert_eq!(report.board.rules["rotation-failed"].checks, 2);
    assert_eq!(report.board.rules["audit-chain-broken"].passed, 1);

    store.tamper(|entries| {
        let first = entries.get_mut(&1).expect("entry 1");
        first.record.reason = Some(AuditText::parse("nothing happened").expect("text"));
    });
    let broken = verify_log(store.as_ref(), None, None)
        .await
        .expect("verified");
    assert!(!broken.is_intact());
    let audit = AuditInput {
        store: store.as_ref() as &dyn AuditStore,
        verification: Ok(broken),
    };
    let (findings, _) = evaluate(&inventory, Some(audit), &Register::empty(), None).await;
    let broken = findings
        .iter()
        .find(|f| f.rule == "audit-chain-broken")
        .expect("the broken chain is a finding");
    assert_eq!(broken.severity.as_str(), "critical");
    let controls: BTreeSet<String> = broken
        .controls
        .iter()
        .map(|c| format!("{} {}", c.framework, c.control))
        .collect();
    assert!(
        controls.contains("pci-dss 10.3.4") && controls.contains("nist-800-53 AU-9"),
        "{controls:?}"
    );
}

/// A tenant of 12 applications (1 to 4 client secrets each, some over the credential
/// limit, owned by 5 people in turn), 6 vaults holding a secret each (some tagged with
/// an owner, some without an expiry), and a log whose rotations name the applications
/// by app id only.
async fn many_scopes() -> (MemoryInventory, Arc<MemoryAuditStore>) {
    let inventory = MemoryInventory::new();
    let mut credentials = Vec::new();
    for n in 0..6u8 {
        let kv = vault(&format!("kv-{n}"), PermissionModel::Rbac);
        inventory.put_vault(&kv).await.expect("vault");
        let mut secret = vault_object(&kv, CredentialKind::Secret, &format!("secret-{n}"));
        if n % 2 == 0 {
            secret.expires = None;
        }
        if n % 3 == 0 {
            secret.tags.clear();
        } else {
            secret
                .tags
                .insert("keyturn-owner".into(), format!("team-{}", n % 4));
        }
        credentials.push(secret);
    }
    for app in 0..12u8 {
        for k in 0..=(app % 4) {
            let n = app * 4 + k;
            let mut credential =
                app_credential(application(app), CredentialKind::PasswordCredential, n);
            credential.owners[0].user_principal_name = Some(format!("owner{}@contoso.com", n % 5));
            credentials.push(credential);
        }
    }
    inventory
        .put_credentials(&credentials)
        .await
        .expect("credentials");
    let store = Arc::new(MemoryAuditStore::new());
    let log = AuditLog::new(store.clone());
    for app in (0..12u8).step_by(3) {
        let (action, outcome) = if app % 2 == 0 {
            ("rotation.failed", Outcome::Failed)
        } else {
            ("secret.rotated", Outcome::Succeeded)
        };
        let mut record = rotation_record(now() - days(1), action, outcome, "client-secret");
        record.object.vault = None;
        record.object.secret_name = None;
        record.object.app_id = Some(
            AuditText::parse(format!("a4f3c9e2-1111-4c2a-8d55-2b6e0f9a7c{app:02}")).expect("text"),
        );
        log.append(record).await.expect("appended");
    }
    (inventory, store)
}

#[tokio::test]
async fn scopes_and_applications_spilled_past_the_bound_give_the_same_findings_and_scores() {
    let (inventory, store) = many_scopes().await;
    let verification = verify_log(store.as_ref(), None, None)
        .await
        .expect("verified");
    let audit = || AuditInput {
        store: store.as_ref(),
        verification: Ok(verification.clone()),
    };
    let catalogue = Catalogue::builtin();

    let (held, held_report) = evaluate_within(
        &inventory,
        Some(audit()),
        &Register::empty(),
        None,
        SPILL_AFTER,
    )
    .await;
    let (spilled, spilled_report) =
        evaluate_within(&inventory, Some(audit()), &Register::empty(), None, 3).await;

    assert!(!held_report.board.scopes.is_spilled());
    assert!(spilled_report.board.scopes.is_spilled());
    assert_eq!(spilled, held, "the same findings, in the same order");
    let held_scores = Scores::of(&held_report, &catalogue).expect("held tallies");
    let spilled_scores = Scores::of(&spilled_report, &catalogue).expect("spilled tallies");
    assert_eq!(spilled_scores, held_scores);
    assert_eq!(
        (spilled_report.open, spilled_report.excepted),
        (held_report.open, held_report.excepted)
    );
    assert_eq!(spilled_report.by_severity, held_report.by_severity);
    // The fixture is past the bound in every scope kind it has, and the rotations count
    // under the inventory's application names, not under bare app ids.
    let listed = |kind| held_scores.scopes[&kind].len();
    assert_eq!(listed(ScopeKind::Application), 12);
    assert_eq!(listed(ScopeKind::Vault), 6);
    assert_eq!(
        listed(ScopeKind::Owner),
        5 + 3 + 1,
        "5 people, 3 teams, (no owner)"
    );
    let app_3 = held_scores.scopes[&ScopeKind::Application]
        .iter()
        .find(|s| s.name == "app-3 (a4f3c9e2-1111-4c2a-8d55-2b6e0f9a7c03)")
        .expect("app-3's scope");
    assert!(app_3.scored.tally.passed > 0, "{app_3:?}");
    assert!(
        held.iter()
            .any(|f| f.rule == "application-too-many-credentials" && f.name == "app-3"),
        "app-3 has 4 active credentials, over the limit of 2"
    );
    assert!(
        held.iter()
            .filter(|f| f.rule == "rotation-failed")
            .all(|f| f
                .scope
                .application
                .as_ref()
                .is_some_and(|a| a.name.starts_with("app-"))),
        "{held:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The command

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = keyturn(&[])
        .arg("compliance")
        .args(args)
        .output()
        .expect("keyturn compliance runs");
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("utf-8"),
        String::from_utf8(output.stderr).expect("utf-8"),
    )
}

fn dev_once(data: &std::path::Path) {
    let output = keyturn(&[
        ("KEYTURN_PROOF_SUCCESSES", "1"),
        ("KEYTURN_PROOF_WINDOW_SECONDS", "0"),
    ])
    .args(["dev", "--once", "--data-dir"])
    .arg(data)
    .output()
    .expect("keyturn dev runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn keyturn_compliance_on_the_dev_demo_finds_problems_in_several_frameworks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    dev_once(&data);
    let data = data.to_str().expect("utf-8 path");

    let (code, stdout, stderr) = run(&["--data-dir", data, "--format", "json"]);

    assert_eq!(code, Some(1), "open findings exit 1: {stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON document");
    let findings = report["findings"].as_array().expect("findings");
    assert!(!findings.is_empty(), "{stdout}");
    let mut by_framework: BTreeMap<String, usize> = BTreeMap::new();
    for finding in findings {
        for control in finding["controls"].as_array().expect("controls") {
            *by_framework
                .entry(control["framework"].as_str().expect("framework").to_owned())
                .or_default() += 1;
        }
        for field in ["rule", "severity", "status", "record_id", "scope", "detail"] {
            assert!(finding.get(field).is_some(), "{field} missing in {finding}");
        }
    }
    for framework in [
        "cis-azure",
        "nist-800-53",
        "pci-dss",
        "soc2",
        "iso-27001",
        "hipaa",
    ] {
        assert!(
            by_framework.contains_key(framework),
            "no finding maps to {framework}: {by_framework:?}"
        );
    }
    let rules: BTreeSet<&str> = findings.iter().filter_map(|f| f["rule"].as_str()).collect();
    assert!(rules.contains("vault-not-recoverable"), "{rules:?}");
    assert!(rules.contains("credential-expired-enabled"), "{rules:?}");
    assert_eq!(
        report["scores"]["frameworks"].as_array().map(Vec::len),
        Some(6)
    );
    assert!(
        report["scores"]["scopes"]["vault"]
            .as_array()
            .is_some_and(|v| !v.is_empty())
    );
    assert_eq!(
        report["summary"]["open"].as_u64(),
        Some(findings.len() as u64)
    );
    assert!(
        report["not_evaluated"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["rule"] != "audit-chain-broken")),
        "the demo's audit log is verified: {}",
        report["not_evaluated"]
    );
    assert!(stderr.contains("not a certification"), "{stderr}");

    let (code, table, stderr) = run(&["--data-dir", data, "--framework", "cis-azure"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(table.starts_with("SEVERITY"), "{table}");
    assert!(table.contains("vault-not-recoverable"), "{table}");
    assert!(
        table.contains("CIS Microsoft Azure Foundations Benchmark"),
        "{table}"
    );
    assert!(!table.contains("NIST SP 800-53"), "{table}");
}

#[test]
fn keyturn_compliance_applies_the_data_directorys_exceptions_register() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    dev_once(&data);
    std::fs::write(
        data.join("compliance-exceptions.json"),
        r#"{ "exceptions": [ { "rule": "vault-not-recoverable", "subject": "*",
            "owner": "platform-team", "reason": "local mode has no purge protection",
            "expires": "2999-01-01" } ] }"#,
    )
    .expect("register written");
    let data = data.to_str().expect("utf-8 path");

    let (_, stdout, stderr) = run(&["--data-dir", data, "--format", "json"]);

    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let excepted: Vec<&Value> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["rule"] == "vault-not-recoverable")
        .collect();
    assert!(!excepted.is_empty());
    assert!(
        excepted
            .iter()
            .all(|f| f["status"] == "excepted" && f["exception"]["owner"] == "platform-team")
    );
    assert_eq!(
        report["summary"]["excepted"].as_u64(),
        Some(excepted.len() as u64)
    );
}

#[test]
fn keyturn_compliance_refuses_bad_input_clearly() {
    let empty = tempfile::tempdir().expect("temp dir");
    let dir = empty.path().to_str().expect("utf-8 path");
    let malformed = empty.path().join("exceptions.json");
    std::fs::write(
        &malformed,
        r#"{ "exceptions": [ { "rule": "vault-not-recoverable", "subject": "*", "owner": "a",
            "reason": "r", "expires": "soon" } ] }"#,
    )
    .expect("written");
    let malformed = malformed.to_str().expect("utf-8 path");

    let (unknown, _, unknown_err) = run(&["--data-dir", dir, "--framework", "fedramp"]);
    let (missing, _, missing_err) = run(&["--data-dir", dir]);
    let (bad_span, _, span_err) = run(&["--data-dir", dir, "--rotation-period", "1y"]);
    let (bad_register, _, register_err) = run(&["--data-dir", dir, "--exceptions", malformed]);

    assert_eq!(unknown, Some(2));
    assert!(
        unknown_err.contains("--framework")
            && unknown_err.contains("fedramp")
            && unknown_err.contains("pci-dss"),
        "{unknown_err}"
    );
    assert_eq!(missing, Some(2));
    assert!(
        missing_err.contains("holds no keyturn store"),
        "{missing_err}"
    );
    assert_eq!(bad_span, Some(2));
    assert!(span_err.contains("--rotation-period"), "{span_err}");
    assert_eq!(bad_register, Some(2));
    assert!(
        register_err.contains(malformed)
            && register_err.contains("entry 1")
            && register_err.contains("expires"),
        "{register_err}"
    );
}

// ---------------------------------------------------------------------------------------
// The trend

#[tokio::test]
async fn a_complete_run_records_its_scores_on_the_latest_sweep_and_a_rerun_replaces_them() {
    use keyturn::compliance::trend::{summary_of, update};
    use keyturn::domain::inventory::SweepSnapshot;

    let inventory = two_vault_findings().await;
    let older = SweepId::parse("20300531T000000Z").expect("sweep");
    inventory
        .put_snapshot(&SweepSnapshot::new(older.clone(), now() - days(1)))
        .await
        .expect("snapshot");
    let (_, first) = evaluate(&inventory, None, &Register::empty(), None).await;
    let recorded = update(&inventory, Ok(summary_of(&first)))
        .await
        .expect("trend");
    assert_eq!(recorded.recorded_on.as_ref(), Some(&older));
    assert_eq!(recorded.points.len(), 1);

    inventory
        .put_snapshot(&SweepSnapshot::new(sweep(), now()))
        .await
        .expect("snapshot");
    let (_, second) = evaluate(&inventory, None, &Register::empty(), None).await;
    update(&inventory, Ok(summary_of(&second)))
        .await
        .expect("trend");
    let again = update(&inventory, Ok(summary_of(&second)))
        .await
        .expect("trend");

    let sweeps: Vec<&SweepId> = again.points.iter().map(|p| &p.sweep).collect();
    assert_eq!(
        sweeps,
        [&older, &sweep()],
        "one point per sweep, oldest first"
    );
    let latest = &again.points[1];
    assert_eq!(latest.score, second.board.total.score());
    assert_eq!(
        latest.frameworks.get("cis-azure").copied().flatten(),
        second.board.frameworks["cis-azure"].score()
    );
    assert_eq!(latest.open, 3);
}

#[tokio::test]
async fn a_store_that_refuses_the_write_leaves_the_trend_as_it_was_and_says_why() {
    use keyturn::compliance::trend::{summary_of, update};
    use keyturn::domain::inventory::SweepSnapshot;

    let inventory = two_vault_findings().await;
    inventory
        .put_snapshot(&SweepSnapshot::new(sweep(), now()))
        .await
        .expect("snapshot");
    let (_, report) = evaluate(&inventory, None, &Register::empty(), None).await;
    inventory.refuse_writes(true);

    let trend = update(&inventory, Ok(summary_of(&report)))
        .await
        .expect("read");
    let skipped = update(&inventory, Err("--no-record was given".into()))
        .await
        .expect("read");

    assert!(trend.points.is_empty());
    assert!(trend.recorded_on.is_none());
    assert!(
        trend
            .not_recorded
            .as_deref()
            .is_some_and(|why| why.contains("Storage Table Data Contributor")),
        "{:?}",
        trend.not_recorded
    );
    assert_eq!(
        skipped.not_recorded.as_deref(),
        Some("--no-record was given")
    );
}

#[tokio::test]
async fn keyturn_compliance_prints_the_trend_over_the_inventorys_sweeps() {
    use keyturn::adapters::local::inventory::LocalInventory;
    use keyturn::adapters::local::store::LocalStore;
    use keyturn::domain::inventory::SweepSnapshot;

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    dev_once(&data);
    let store = LocalStore::open(data.join("keyturn.db")).expect("the store opens");
    let inventory = LocalInventory::new(store);
    for (n, sweep) in ["20300101T000000Z", "20300102T000000Z"]
        .into_iter()
        .enumerate()
    {
        inventory
            .put_snapshot(&SweepSnapshot::new(
                SweepId::parse(sweep).expect("sweep"),
                now() + days(n as i64),
            ))
            .await
            .expect("snapshot");
    }
    let data = data.to_str().expect("utf-8 path");

    let (_, _, limited) = run(&["--data-dir", data, "--framework", "pci-dss"]);
    let (_, _, skipped) = run(&["--data-dir", data, "--no-record"]);
    let (_, _, first) = run(&["--data-dir", data]);
    let (_, stdout, second) = run(&["--data-dir", data, "--format", "json"]);

    assert!(
        limited.contains("not recorded: a run limited to one framework"),
        "{limited}"
    );
    assert!(skipped.contains("not recorded: --no-record"), "{skipped}");
    assert!(
        first.contains("recorded as sweep 20300102T000000Z"),
        "{first}"
    );
    assert!(
        second.contains("recorded as sweep 20300102T000000Z"),
        "{second}"
    );
    let report: Value = serde_json::from_str(&stdout).expect("one JSON document");
    let points = report["trend"]["points"].as_array().expect("points");
    assert_eq!(
        points.len(),
        1,
        "a rerun replaces its sweep's point: {points:?}"
    );
    assert_eq!(points[0]["sweep"], "20300102T000000Z");
    assert!(
        points[0]["score"]
            .as_f64()
            .is_some_and(|s| s > 0.0 && s < 100.0)
    );
    assert!(points[0]["frameworks"]["pci-dss"].as_f64().is_some());
    let (_, table, _) = run(&["--data-dir", data, "--no-record"]);
    assert!(
        table.lines().any(|l| l.starts_with("20300102T000000Z")),
        "{table}"
    );
}
