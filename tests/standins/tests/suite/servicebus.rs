use std::time::Duration;

use keyturn_standins::{Audience, QueueOptions, Standins};

use crate::{start, token};

async fn send(
    standins: &Standins,
    token: &str,
    queue: &str,
    properties: Option<&str>,
) -> reqwest::Response {
    let mut request = standins
        .http_client()
        .post(
            standins
                .servicebus()
                .url()
                .join(&format!("{queue}/messages"))
                .unwrap(),
        )
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(r#"{"job":"rotate"}"#);
    if let Some(properties) = properties {
        request = request.header("BrokerProperties", properties);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_sent_message_is_recorded_with_its_broker_properties() {
    let standins = start().await;
    standins
        .servicebus()
        .create_queue("rotations", QueueOptions::default());
    let token = token(&standins, Audience::ServiceBus).await;

    let response = send(
        &standins,
        &token,
        "rotations",
        Some(r#"{"MessageId":"job-1","SessionId":"kv/app","ScheduledEnqueueTimeUtc":"Sun, 06 Nov 2044 08:49:37 GMT","TimeToLive":3600}"#),
    )
    .await;

    assert_eq!(response.status(), 201);
    let messages = standins.servicebus().messages("rotations");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].message_id.as_deref(), Some("job-1"));
    assert_eq!(messages[0].session_id.as_deref(), Some("kv/app"));
    assert_eq!(
        messages[0].scheduled_enqueue_time_utc,
        chrono::DateTime::parse_from_rfc3339("2044-11-06T08:49:37Z")
            .ok()
            .map(|t| t.to_utc())
    );
    assert_eq!(messages[0].body, br#"{"job":"rotate"}"#);
}

#[tokio::test]
async fn a_duplicate_message_id_inside_the_window_is_accepted_but_stored_once() {
    let standins = start().await;
    standins.servicebus().create_queue(
        "rotations",
        QueueOptions {
            duplicate_detection_window: Some(Duration::from_secs(600)),
            ..QueueOptions::default()
        },
    );
    let token = token(&standins, Audience::ServiceBus).await;
    let properties = Some(r#"{"MessageId":"job-1"}"#);

    let first = send(&standins, &token, "rotations", properties).await;
    let second = send(&standins, &token, "rotations", properties).await;
    standins.advance_clock(Duration::from_secs(601));
    let third = send(&standins, &token, "rotations", properties).await;

    assert_eq!(
        [first.status(), second.status(), third.status()],
        [201, 201, 201]
    );
    assert_eq!(standins.servicebus().messages("rotations").len(), 2);
}

#[tokio::test]
async fn a_session_queue_refuses_a_message_without_a_session_id() {
    let standins = start().await;
    standins.servicebus().create_queue(
        "rotations",
        QueueOptions {
            requires_session: true,
            ..QueueOptions::default()
        },
    );
    let token = token(&standins, Audience::ServiceBus).await;

    let response = send(
        &standins,
        &token,
        "rotations",
        Some(r#"{"MessageId":"job-1"}"#),
    )
    .await;

    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("SessionId was not set")
    );
    assert!(standins.servicebus().messages("rotations").is_empty());
}

#[tokio::test]
async fn malformed_broker_properties_are_refused() {
    let standins = start().await;
    standins
        .servicebus()
        .create_queue("rotations", QueueOptions::default());
    let token = token(&standins, Audience::ServiceBus).await;
    for bad in [
        "{not json",
        r#"{"MessageID":"wrong-case"}"#,
        r#"{"ScheduledEnqueueTimeUtc":"2044-11-06T08:49:37Z"}"#,
        r#"{"TimeToLive":-1}"#,
    ] {
        let response = send(&standins, &token, "rotations", Some(bad)).await;
        assert_eq!(response.status(), 400, "properties {bad}");
    }
    assert!(standins.servicebus().messages("rotations").is_empty());
}

#[tokio::test]
async fn an_unknown_queue_is_not_found() {
    let standins = start().await;
    let token = token(&standins, Audience::ServiceBus).await;

    let response = send(&standins, &token, "nowhere", None).await;

    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_vault_token_cannot_send() {
    let standins = start().await;
    standins
        .servicebus()
        .create_queue("rotations", QueueOptions::default());
    let token = token(&standins, Audience::KeyVault).await;

    let response = send(&standins, &token, "rotations", None).await;

    assert_eq!(response.status(), 401);
    assert!(standins.servicebus().messages("rotations").is_empty());
}
