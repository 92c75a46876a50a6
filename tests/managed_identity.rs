//! keyturn's managed identity credential (as start-up builds it) against a stand-in of App
//! Service's identity endpoint, reached through `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`
//! exactly as on the platform. An endpoint that fails (5xx, throttling, a dropped
//! connection) is a transient failure the caller retries; only an identity that is not
//! assigned to the app is permanent.
//!
//! azure_identity reads the two variables from the process environment, so this is a test
//! binary of its own with one test that sets them before any other thread runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use keyturn::adapters::azure::servicebus::ServiceBusQueue;
use keyturn::config::{CredentialKind, CredentialSettings};
use keyturn::ports::FailureKind;
use keyturn::ports::queue::{JobQueue, OutgoingMessage};
use keyturn::startup::credential;
use keyturn_standins::ManagedIdentityStandin;
use keyturn_standins::managed_identity::{API_VERSION, IdentityFault};
use url::Url;

fn message() -> OutgoingMessage {
    OutgoingMessage {
        message_id: "kv/secret/x/1".into(),
        session_id: "kv/secret/x".into(),
        scheduled_enqueue: None,
        content_type: "application/json",
        body: b"{}".to_vec(),
    }
}

/// A Service Bus sender authenticating with `credential`. Its namespace is never reached:
/// every case here fails (or succeeds) at getting the token.
fn sender(credential: Arc<dyn TokenCredential>) -> ServiceBusQueue {
    ServiceBusQueue::with_base_url(
        Url::parse("https://127.0.0.1:9/").expect("valid"),
        "rotations",
        credential,
        None,
    )
    .expect("https")
}

fn managed_identity(client_id: Option<String>) -> Arc<dyn TokenCredential> {
    credential(&CredentialSettings {
        kind: CredentialKind::ManagedIdentity,
        client_id,
    })
    .expect("the credential builds from the environment")
}

#[test]
fn the_identity_endpoint_failing_is_transient_and_an_unassigned_identity_is_permanent() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = runtime
        .block_on(ManagedIdentityStandin::start())
        .expect("starts");
    // SAFETY: the only test in this binary, and the runtime is single-threaded: no other
    // thread reads the environment while it is written.
    unsafe {
        std::env::set_var("IDENTITY_ENDPOINT", endpoint.endpoint().as_str());
        std::env::set_var("IDENTITY_HEADER", endpoint.identity_header());
    }
    runtime.block_on(async {
        let client_id = endpoint.assign_user_identity();

        // The protocol: api-version, resource, client_id and the secret header.
        let token = managed_identity(Some(client_id.to_string()))
            .get_token(&["https://servicebus.azure.net/.default"], None)
            .await
            .expect("an assigned identity gets a token");
        assert!(token.expires_on > azure_core::time::OffsetDateTime::now_utc());
        let seen = endpoint.requests();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].secret_header_matched);
        assert_eq!(seen[0].param("api-version"), Some(API_VERSION));
        assert_eq!(
            seen[0].param("resource"),
            Some("https://servicebus.azure.net")
        );
        assert_eq!(
            seen[0].param("client_id"),
            Some(client_id.to_string().as_str())
        );

        // An endpoint that fails is transient, whatever the failure.
        for fault in [
            IdentityFault::Status {
                status: 500,
                retry_after_seconds: None,
            },
            IdentityFault::Status {
                status: 504,
                retry_after_seconds: None,
            },
            IdentityFault::DropConnection,
        ] {
            endpoint.fail_always(fault);
            let error = sender(managed_identity(Some(client_id.to_string())))
                .send(&message())
                .await
                .expect_err("no token");
            assert!(error.is_transient(), "{fault:?}: {error:?}");
            endpoint.clear_faults();
        }

        // A throttled or restarting endpoint's long Retry-After is handed back at once,
        // carried by the transient failure.
        endpoint.clear_requests();
        endpoint.fail_always(IdentityFault::Status {
            status: 503,
            retry_after_seconds: Some(86_400),
        });
        let started = Instant::now();
        let error = sender(managed_identity(Some(client_id.to_string())))
            .send(&message())
            .await
            .expect_err("no token");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let FailureKind::Transient { retry_after } = error.kind else {
            panic!("transient: {error:?}");
        };
        assert!(
            retry_after.is_some_and(|d| d >= Duration::from_secs(60 * 60)),
            "{retry_after:?}"
        );
        assert_eq!(endpoint.requests().len(), 1, "not retried inside the call");
        endpoint.clear_faults();

        // An identity that is not assigned to the app is permanent, and not retried.
        endpoint.clear_requests();
        let error = sender(managed_identity(Some(uuid::Uuid::new_v4().to_string())))
            .send(&message())
            .await
            .expect_err("not assigned");
        let FailureKind::PermissionDenied { missing } = &error.kind else {
            panic!("permanent: {error:?}");
        };
        assert!(missing.contains("managed identity assigned"), "{missing}");
        assert!(error.context.contains("not assigned"), "{error:?}");
        assert_eq!(endpoint.requests().len(), 1);
        assert_eq!(endpoint.requests()[0].status, 400);

        // No system-assigned identity either: the same permanent refusal.
        let error = sender(managed_identity(None))
            .send(&message())
            .await
            .expect_err("no system identity");
        assert!(
            matches!(error.kind, FailureKind::PermissionDenied { .. }),
            "{error:?}"
        );
    });
}
