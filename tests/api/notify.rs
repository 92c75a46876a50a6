//! Alert channels against strict receivers: Teams (Adaptive Card through Workflows), Slack
//! (incoming webhook), CloudEvents (structured mode) and Graph sendMail; webhook URLs read
//! from the vault and never logged.

use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::{TimeZone, Utc};
use serde_json::json;

use keyturn::adapters::azure::graph::GraphClient;
use keyturn::adapters::azure::mail::GraphMailNotifier;
use keyturn::adapters::local::crypto::VaultKey;
use keyturn::adapters::local::store::LocalStore;
use keyturn::adapters::local::vault::LocalVault;
use keyturn::adapters::notify::cloudevents::{CloudEventsNotifier, STRUCTURED_CONTENT_TYPE};
use keyturn::adapters::notify::slack::SlackNotifier;
use keyturn::adapters::notify::teams::TeamsNotifier;
use keyturn::adapters::notify::{WebhookClient, WebhookUrl};
use keyturn::alerts::routes::{RouteName, parse_routes};
use keyturn::domain::clock::Clock;
use keyturn::domain::contact::MailAddress;
use keyturn::domain::names::{ObjectName, VaultUrl};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::FailureKind;
use keyturn::ports::notify::{Fact, Notice, NoticeKind, Notifier, Severity};
use keyturn::ports::vault::{NewSecretVersion, SecretStore};
use keyturn::startup::notify::{ChannelError, MailSetup, channels};
use keyturn_standins::{Receiver, Receivers, Standins};

fn notice() -> Notice {
    Notice {
        id: "alert-kv-prod-db-password-14d".to_owned(),
        kind: NoticeKind::Expiring,
        severity: Severity::Warning,
        title: "Secret db-password in kv-prod expires in 14 days".to_owned(),
        summary: "db-password expires on 2026-12-20; keyturn does not manage it.".to_owned(),
        facts: vec![
            Fact::new("Source", "vault kv-prod"),
            Fact::new("Expires", "2026-12-20 (14 days)"),
            Fact::new("Managed", "no"),
        ],
        actions: vec![
            "Tag it keyturn-rotate=generated to have keyturn rotate it".to_owned(),
            "Or move the caller to a managed identity or federated credential".to_owned(),
        ],
        subject: Some("vault/kv-prod/secret/db-password".to_owned()),
        time: Utc
            .with_ymd_and_hms(2026, 12, 6, 6, 0, 0)
            .single()
            .expect("a time"),
        detail: json!({"daysLeft": 14, "threshold": 14}),
    }
}

fn owners() -> Vec<MailAddress> {
    vec![MailAddress::parse("alice@contoso.com").expect("an address")]
}

fn hook(receivers: &Receivers, receiver: Receiver) -> WebhookUrl {
    WebhookUrl::parse(&SecretValue::new(receivers.url(receiver))).expect("a webhook URL")
}

fn client(receivers: &Receivers) -> WebhookClient {
    WebhookClient::new(Some(receivers.http_client())).expect("a client")
}

#[tokio::test]
async fn a_teams_alert_arrives_as_an_adaptive_card_the_workflow_accepts() {
    let receivers = Receivers::start().await.expect("receivers start");
    let teams = TeamsNotifier::new("ops", hook(&receivers, Receiver::Teams), client(&receivers));

    teams.notify(&notice(), &owners()).await.expect("delivered");

    let received = receivers.received(Receiver::Teams);
    assert_eq!(received.len(), 1, "refusals: {:?}", receivers.refusals());
    let card = &received[0].body["attachments"][0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["body"][0]["text"], notice().title);
    assert_eq!(card["body"][0]["color"], "Warning");
    let facts = card["body"][2]["facts"].as_array().expect("a FactSet");
    assert!(facts.contains(&json!({"title": "Expires", "value": "2026-12-20 (14 days)"})));
    assert!(facts.contains(&json!({"title": "For", "value": "alice@contoso.com"})));
    let text = card.to_string();
    assert!(
        text.contains("keyturn-rotate=generated"),
        "the card says what to do"
    );
}

#[tokio::test]
async fn a_slack_alert_has_text_and_blocks_within_slacks_limits() {
    let receivers = Receivers::start().await.expect("receivers start");
    let slack = SlackNotifier::new(
        "platform",
        hook(&receivers, Receiver::Slack),
        client(&receivers),
    );
    let mut long = notice();
    long.title = "T".repeat(400);
    long.summary = "<!channel> ".repeat(600);
    long.facts = (0..23)
        .map(|i| Fact::new(format!("fact {i}"), "v".repeat(2500)))
        .collect();

    slack.notify(&notice(), &owners()).await.expect("delivered");
    slack
        .notify(&long, &[])
        .await
        .expect("a long notice is clipped, not refused");

    let received = receivers.received(Receiver::Slack);
    assert_eq!(received.len(), 2, "refusals: {:?}", receivers.refusals());
    let first = &received[0].body;
    assert!(
        first["text"]
            .as_str()
            .expect("text")
            .contains("db-password")
    );
    assert_eq!(first["blocks"][0]["type"], "header");
    let long = received[1].body.to_string();
    assert!(!long.contains("<!channel>"), "mentions are escaped");
    let field_sections = received[1].body["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter(|b| b.get("fields").is_some())
        .count();
    assert_eq!(
        field_sections, 3,
        "23 facts in sections of at most 10 fields"
    );
}

#[tokio::test]
async fn a_cloudevent_carries_the_required_attributes_in_structured_mode() {
    let receivers = Receivers::start().await.expect("receivers start");
    let events = CloudEventsNotifier::new(
        "siem",
        Some("https://keyturn.contoso.com/alerts".to_owned()),
        hook(&receivers, Receiver::CloudEvents),
        client(&receivers),
    );

    events
        .notify(&notice(), &owners())
        .await
        .expect("delivered");
    events
        .notify(&notice(), &owners())
        .await
        .expect("delivered again");

    let received = receivers.received(Receiver::CloudEvents);
    assert_eq!(received.len(), 2, "refusals: {:?}", receivers.refusals());
    assert_eq!(
        received[0].content_type.as_deref(),
        Some(STRUCTURED_CONTENT_TYPE)
    );
    let event = &received[0].body;
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "io.keyturn.credential.expiring");
    assert_eq!(event["source"], "https://keyturn.contoso.com/alerts");
    assert_eq!(event["subject"], "vault/kv-prod/secret/db-password");
    assert_eq!(event["time"], "2026-12-06T06:00:00Z");
    assert_eq!(event["data"]["owners"], json!(["alice@contoso.com"]));
    assert_eq!(event["data"]["detail"]["daysLeft"], 14);
    assert_eq!(
        received[1].body["id"], event["id"],
        "a repeated delivery keeps its id, so the receiver can drop it"
    );
}

#[tokio::test]
async fn the_receivers_refuse_payloads_their_services_would_refuse() {
    let receivers = Receivers::start().await.expect("receivers start");
    let http = receivers.http_client();
    let cases = [
        (
            Receiver::Teams,
            "application/json",
            json!({"type": "message", "attachments": []}),
        ),
        (
            Receiver::Teams,
            "application/json",
            json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock"}]}}]}),
        ),
        (Receiver::Slack, "application/json", json!({"blocks": []})),
        (
            Receiver::Slack,
            "application/json",
            json!({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(151)}}]}),
        ),
        (
            Receiver::CloudEvents,
            "application/json",
            json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "t"}),
        ),
        (
            Receiver::CloudEvents,
            STRUCTURED_CONTENT_TYPE,
            json!({"specversion": "1.0", "id": "1", "type": "t"}),
        ),
        (
            Receiver::CloudEvents,
            STRUCTURED_CONTENT_TYPE,
            json!({"specversion": "0.3", "id": "1", "source": "/x", "type": "t"}),
        ),
        (
            Receiver::CloudEvents,
            STRUCTURED_CONTENT_TYPE,
            json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "t", "Bad_Name": 1}),
        ),
    ];
    for (receiver, content_type, body) in &cases {
        let response = http
            .post(receivers.url(*receiver))
            .header("content-type", *content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 400, "{receiver:?} accepted {body}");
    }
    assert_eq!(receivers.refusals().len(), cases.len());
}

#[tokio::test]
async fn a_revoked_or_throttling_hook_is_reported_by_route_name() {
    let receivers = Receivers::start().await.expect("receivers start");
    let slack = SlackNotifier::new(
        "platform",
        hook(&receivers, Receiver::Slack),
        client(&receivers),
    );

    receivers.fail_next(Receiver::Slack, 429, Some(2));
    let throttled = slack.notify(&notice(), &[]).await.expect_err("throttled");
    receivers.revoke(Receiver::Slack);
    let revoked = slack.notify(&notice(), &[]).await.expect_err("revoked");

    assert_eq!(
        throttled.kind,
        FailureKind::Transient {
            retry_after: Some(std::time::Duration::from_secs(2))
        }
    );
    assert_eq!(revoked.kind, FailureKind::NotFound);
    assert!(revoked.context.contains("channel platform"));
    assert!(revoked.context.contains("no_service"));
    for error in [&throttled, &revoked] {
        assert!(!error.to_string().contains(&receivers.token()));
    }
}

async fn mail_rig() -> (Standins, GraphClient) {
    let standins = Standins::start().await.expect("stand-ins start");
    let graph = GraphClient::with_scope(
        standins.graph().url(),
        "https://graph.microsoft.com/.default".to_owned(),
        standins.credential(),
        Some(standins.client_options()),
    )
    .expect("a Graph client");
    standins.graph().seed_mailbox("keyturn-alerts@contoso.com");
    standins.graph().seed_mailbox("hr@contoso.com");
    (standins, graph)
}

#[tokio::test]
async fn mail_goes_out_through_graph_send_mail_from_the_configured_mailbox() {
    let (standins, graph) = mail_rig().await;
    let mailbox = MailAddress::parse("keyturn-alerts@contoso.com").expect("an address");
    let mail = GraphMailNotifier::new("owners", graph, mailbox);

    mail.notify(&notice(), &owners()).await.expect("sent");

    let sent = standins.graph().sent_mail();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].from, "keyturn-alerts@contoso.com");
    assert_eq!(sent[0].to, ["alice@contoso.com"]);
    assert_eq!(sent[0].subject, notice().title);
    assert_eq!(sent[0].content_type, "Text");
    assert!(
        sent[0]
            .content
            .contains("What to do:\n- Tag it keyturn-rotate=generated")
    );
    assert_eq!(sent[0].save_to_sent_items, Some(false));
}

#[tokio::test]
async fn mail_as_a_mailbox_outside_the_access_policy_is_a_missing_permission() {
    let (standins, graph) = mail_rig().await;
    standins
        .graph()
        .restrict_mail_send(standins.identity().app_id, &["keyturn-alerts@contoso.com"]);
    let outside = GraphMailNotifier::new(
        "owners",
        graph.clone(),
        MailAddress::parse("hr@contoso.com").expect("an address"),
    );
    let unknown = GraphMailNotifier::new(
        "owners",
        graph.clone(),
        MailAddress::parse("nobody@contoso.com").expect("an address"),
    );
    let allowed = GraphMailNotifier::new(
        "owners",
        graph,
        MailAddress::parse("keyturn-alerts@contoso.com").expect("an address"),
    );

    let refused = outside.notify(&notice(), &owners()).await.expect_err("403");
    let missing = unknown.notify(&notice(), &owners()).await.expect_err("404");
    let nobody = allowed
        .notify(&notice(), &[])
        .await
        .expect_err("no recipient");
    allowed
        .notify(&notice(), &owners())
        .await
        .expect("the policy's own mailbox sends");

    assert!(
        matches!(&refused.kind, FailureKind::PermissionDenied { missing } if missing.contains("Mail.Send") && missing.contains("access policy"))
    );
    assert!(refused.context.contains("ErrorAccessDenied"));
    assert_eq!(missing.kind, FailureKind::NotFound);
    assert_eq!(nobody.kind, FailureKind::Invalid);
    assert_eq!(standins.graph().sent_mail().len(), 1);
}

/// Collects every log line, at every level and from every crate.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

// A current-thread runtime: every task runs on this thread, under the subscriber set here.
#[tokio::test(flavor = "current_thread")]
async fn webhook_urls_are_read_from_the_local_vault_and_never_logged() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let receivers = Receivers::start().await.expect("receivers start");
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = LocalStore::open(dir.path().join("keyturn.db")).expect("the store opens");
    let key = VaultKey::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "test")
        .expect("a key");
    let local = LocalVault::open(store, key, Clock::system())
        .await
        .expect("the vault opens");
    let vault = VaultUrl::parse("https://kv-local.vault.azure.net/").expect("a vault URL");
    for (name, receiver) in [
        ("hook-teams", Receiver::Teams),
        ("hook-slack", Receiver::Slack),
        ("hook-events", Receiver::CloudEvents),
    ] {
        local
            .set_secret(
                &vault,
                &ObjectName::parse(name).expect("a name"),
                &SecretValue::new(receivers.url(receiver)),
                NewSecretVersion::default(),
            )
            .await
            .expect("stored");
    }
    let routes = parse_routes("ops=teams:hook-teams;platform=slack:hook-slack;siem=cloudevents:hook-events;gone=slack:hook-missing")
        .expect("routes");
    let webhooks = client(&receivers);

    let missing = channels(&routes, &local, &vault, &webhooks, None, None)
        .await
        .expect_err("a route whose secret is missing stops start-up");
    let built = channels(&routes[..3], &local, &vault, &webhooks, None, None)
        .await
        .expect("the channels build");
    let mut errors = vec![missing.to_string(), format!("{missing:?}")];
    for notifier in built.values() {
        notifier
            .notify(&notice(), &owners())
            .await
            .expect("delivered");
        errors.push(format!("{notifier:?}"));
    }
    receivers.revoke(Receiver::Slack);
    receivers.fail_next(Receiver::Teams, 500, None);
    for route in ["ops", "platform"] {
        let notifier = &built[&RouteName::parse(route).expect("a route name")];
        let error = notifier.notify(&notice(), &[]).await.expect_err("refused");
        errors.push(error.to_string());
    }

    assert!(matches!(missing, ChannelError::SecretMissing { .. }));
    assert_eq!(receivers.received(Receiver::Teams).len(), 1);
    assert_eq!(receivers.received(Receiver::Slack).len(), 1);
    assert_eq!(receivers.received(Receiver::CloudEvents).len(), 1);
    let token = receivers.token();
    let logs = captured.text();
    assert!(!logs.is_empty(), "the run logged something to search");
    assert!(!logs.contains(&token), "a webhook URL reached the logs");
    for error in &errors {
        assert!(
            !error.contains(&token),
            "a webhook URL reached an error or Debug: {error}"
        );
    }
}

#[tokio::test]
async fn a_mail_route_without_a_mailbox_is_refused_at_start_up() {
    let routes = parse_routes("owners=mail").expect("routes");
    let vault = VaultUrl::parse("https://kv-local.vault.azure.net/").expect("a vault URL");
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = LocalStore::open(dir.path().join("keyturn.db")).expect("the store opens");
    let local = LocalVault::open(
        store,
        VaultKey::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "test")
            .expect("a key"),
        Clock::system(),
    )
    .await
    .expect("the vault opens");
    let webhooks = WebhookClient::new(None).expect("a client");

    let error = channels(&routes, &local, &vault, &webhooks, None::<&MailSetup>, None)
        .await
        .expect_err("no mailbox");

    assert!(matches!(error, ChannelError::NoMailbox { .. }));
}
