//! `keyturn dev`'s alert receiver: a loopback HTTP endpoint that takes the CloudEvents the
//! local `dev` route posts, so the demo's alerts are seen arriving. Its URL carries a
//! random token, like a real webhook's: the URL is stored in the local vault as the
//! route's secret and never printed; what is printed and recorded is the address without
//! it, and what each alert says (type, subject, title), never a secret value, which an
//! alert never carries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;

/// The route `keyturn dev` configures, and the local vault secret holding its URL.
pub const DEV_ROUTE: &str = "dev";
pub const DEV_ROUTE_SECRET: &str = "keyturn-dev-alerts";
/// The file beside the store each received alert is appended to, one JSON line each.
pub const RECEIVED_FILE: &str = "alerts-received.jsonl";

/// What the receiver kept of one alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedAlert {
    /// The CloudEvents `type` (`io.keyturn.credential.expiring`, `...expired`, `io.keyturn.digest`).
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    /// The credential's inventory id; `None` for a digest.
    pub subject: Option<String>,
    pub title: String,
    pub severity: String,
}

#[derive(Debug)]
struct Shared {
    token: String,
    received: Mutex<Vec<ReceivedAlert>>,
    /// Print each alert as it arrives (the continuous mode's terminal).
    echo: bool,
    record: PathBuf,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct AlertReceiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl AlertReceiver {
    /// Listens on `address` (loopback; port 0 picks a free port). Each alert is appended
    /// to `record` and, with `echo`, printed.
    pub async fn start(address: &str, echo: bool, record: PathBuf) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        if !address.ip().is_loopback() {
            return Err(std::io::Error::other(format!(
                "the alert receiver listens on loopback only, not {address}"
            )));
        }
        let shared = Arc::new(Shared {
            token: uuid::Uuid::new_v4().simple().to_string(),
            received: Mutex::new(Vec::new()),
            echo,
            record,
        });
        let router = Router::new()
            .route("/alerts/{token}", post(receive))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            address,
            shared,
            task,
        })
    }

    /// Where it listens, without the token: what may be printed.
    pub fn address(&self) -> String {
        format!("http://{}/alerts/", self.address)
    }

    /// The hook's URL with its token: a secret, stored in the local vault only.
    pub fn url(&self) -> String {
        format!("http://{}/alerts/{}", self.address, self.shared.token)
    }

    /// Alerts received so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedAlert> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    body: Bytes,
) -> StatusCode {
    if token != shared.token {
        return StatusCode::NOT_FOUND;
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let (Some(kind), Some(id), Some("1.0")) = (
        text(&event["type"]),
        text(&event["id"]),
        event["specversion"].as_str(),
    ) else {
        return StatusCode::BAD_REQUEST;
    };
    let alert = ReceivedAlert {
        kind,
        id,
        subject: text(&event["subject"]),
        title: text(&event["data"]["title"]).unwrap_or_default(),
        severity: text(&event["data"]["severity"]).unwrap_or_default(),
    };
    if shared.echo {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "alert received [{}] {}", alert.severity, alert.title);
        let _ = out.flush();
    }
    if let Ok(line) = serde_json::to_string(&alert) {
        use std::io::Write;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shared.record)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = appended {
            tracing::warn!(%error, "cannot record a received alert");
        }
    }
    shared
        .received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(alert);
    StatusCode::ACCEPTED
}
