//! keyturn's own TLS listener under attack, on loopback: silent, trickling and idle
//! connections are closed, one source cannot take every connection or handshake slot,
//! and failed handshakes are logged folded. While each attack runs, a device from
//! another source address (127.0.0.2) is still served.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use keyturn_testkit::pki::{self, TestCa};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use keyturn::host::tls::{self, ListenerLimits, TlsPeer};

/// A generous bound for "closed" or "served": far above what either takes on loopback,
/// so it fails only when the listener does not do it at all.
const BOUND: Duration = Duration::from_secs(15);

/// The attacker's address; the device connects from [`DEVICE_SOURCE`].
const ATTACKER_SOURCE: [u8; 4] = [127, 0, 0, 1];
const DEVICE_SOURCE: [u8; 4] = [127, 0, 0, 2];

/// Limits small enough for tests to reach quickly; each test lowers the one it tries.
fn limits() -> ListenerLimits {
    ListenerLimits {
        handshake_timeout: Duration::from_secs(60),
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        max_connections: 64,
        max_connections_per_source: 32,
        max_pending_handshakes: 16,
        max_pending_handshakes_per_source: 8,
        log_window: Duration::from_secs(60),
    }
}

struct Listener {
    address: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tls::TlsServer>,
    _dir: TempDir,
}

impl Listener {
    /// A listener on 127.0.0.1 port 0 answering `GET /whoami` with the number of
    /// certificates the client presented.
    async fn start(limits: ListenerLimits) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let ca = TestCa::root("keyturn test server CA");
        let server_cert = ca.issue(&pki::server_params(&["localhost"]));
        let cert_path = dir.path().join("server.pem");
        let key_path = dir.path().join("server.key");
        std::fs::write(&cert_path, &server_cert.cert_pem).expect("write");
        std::fs::write(&key_path, &server_cert.key_pem).expect("write");
        let config = tls::server_config(&cert_path, &key_path).expect("TLS configuration");

        let device = pki::self_signed(&pki::client_params("device", &["device.example"]));
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().to_vec()))
            .expect("the CA is a certificate");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the defaults")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(device.cert_der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(device.key_der)),
        )
        .expect("a usable client certificate");

        let router = Router::new().route(
            "/whoami",
            get(
                |Extension(ConnectInfo(peer)): Extension<ConnectInfo<TlsPeer>>| async move {
                    peer.chain.len().to_string()
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tls::spawn_with(listener, config, router, limits, async move {
            let _ = stopped.await;
        })
        .expect("the listener starts");
        Self {
            address: server.local_addr(),
            client: Arc::new(client),
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    /// A TCP connection from `source` (any loopback address).
    async fn tcp_from(&self, source: [u8; 4]) -> std::io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        socket.connect(self.address).await
    }

    /// A completed TLS handshake from `source`, presenting the device certificate.
    async fn tls_from(&self, source: [u8; 4]) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = self.tcp_from(source).await?;
        TlsConnector::from(self.client.clone())
            .connect(ServerName::try_from("localhost").expect("a DNS name"), tcp)
            .await
    }

    /// The legitimate device, from 127.0.0.2: one request on a new connection, answered
    /// with 200 and the one certificate it presented, within [`BOUND`].
    async fn assert_device_served(&self) {
        let served = tokio::time::timeout(BOUND, async {
            let mut stream = self.tls_from(DEVICE_SOURCE).await?;
            stream
                .write_all(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await?;
            let mut response = Vec::new();
            match stream.read_to_end(&mut response).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(e),
            }
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
        })
        .await
        .expect("the device is answered within the bound")
        .expect("the device's request succeeds");
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
        assert!(
            served.ends_with("\r\n\r\n1"),
            "the presented chain: {served}"
        );
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(BOUND, server.stopped())
                .await
                .expect("the listener stops within the bound")
                .expect("the listener stops cleanly");
        }
    }
}

/// True once the server has closed `stream` (end of stream or an error), reading and
/// discarding whatever it sent first; false if it is still open after [`BOUND`].
async fn closed_by_server(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn silent_connections_after_the_handshake_are_closed_by_the_header_timeout() {
    let listener = Listener::start(ListenerLimits {
        header_read_timeout: Duration::from_millis(500),
        ..limits()
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(listener.tls_from(ATTACKER_SOURCE).await.expect("handshake"));
    }
    listener.assert_device_served().await;
    for stream in &mut silent {
        assert!(
            closed_by_server(stream).await,
            "a silent connection is closed"
        );
    }
    listener.stop().await;
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_closed_by_the_header_timeout() {
    let listener = Listener::start(ListenerLimits {
        header_read_timeout: Duration::from_millis(800),
        ..limits()
    })
    .await;
    let mut tricklers = Vec::new();
    for _ in 0..10 {
        let mut stream = listener.tls_from(ATTACKER_SOURCE).await.expect("handshake");
        stream
            .write_all(b"GET /whoami HTTP/1.1\r\n")
            .await
            .expect("the request line");
        tricklers.push(tokio::spawn(async move {
            // One header line every 100 ms, never the end of the head: far faster than
            // any idle timeout, and bounded so the task ends by itself.
            for line in 0..200 {
                let header = format!("X-Trickle-{line}: x\r\n");
                if stream.write_all(header.as_bytes()).await.is_err() {
                    return true;
                }
                let mut buf = [0u8; 256];
                let read =
                    tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
                if let Ok(Ok(0) | Err(_)) = read {
                    return true;
                }
            }
            false
        }));
    }
    listener.assert_device_served().await;
    for trickler in tricklers {
        assert!(
            trickler.await.expect("the trickler does not panic"),
            "a trickling client is closed before it has sent 200 header lines"
        );
    }
    listener.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_by_the_idle_timeout() {
    let listener = Listener::start(ListenerLimits {
        idle_timeout: Duration::from_millis(500),
        ..limits()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut stream = listener.tls_from(ATTACKER_SOURCE).await.expect("handshake");
        stream
            .write_all(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("a keep-alive request");
        let mut buf = [0u8; 1024];
        let read = stream.read(&mut buf).await.expect("the answer");
        let answer = String::from_utf8_lossy(&buf[..read]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "the connection is kept alive: {answer}"
        );
        idle.push(stream);
    }
    listener.assert_device_served().await;
    for stream in &mut idle {
        assert!(
            closed_by_server(stream).await,
            "an idle keep-alive connection is closed"
        );
    }
    listener.stop().await;
}

#[tokio::test]
async fn one_source_beyond_its_connection_share_is_refused_while_another_is_served() {
    let limits = limits();
    let listener = Listener::start(limits).await;
    let mut held = Vec::new();
    for _ in 0..limits.max_connections_per_source {
        held.push(listener.tls_from(ATTACKER_SOURCE).await.expect("handshake"));
    }
    // Beyond its share, the source's connections are closed before any handshake.
    for _ in 0..5 {
        let refused = tokio::time::timeout(BOUND, listener.tls_from(ATTACKER_SOURCE))
            .await
            .expect("refused within the bound");
        assert!(refused.is_err(), "a connection beyond the share is refused");
    }
    listener.assert_device_served().await;
    // The held connections are still open (none was taken for the refused ones).
    for stream in &mut held {
        stream
            .write_all(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("still open");
        let mut buf = [0u8; 256];
        let read = stream.read(&mut buf).await.expect("answered");
        assert!(buf[..read].starts_with(b"HTTP/1.1 200"));
    }
    listener.stop().await;
}

#[tokio::test]
async fn connections_that_never_handshake_cannot_starve_a_fresh_client() {
    let limits = limits();
    let listener = Listener::start(limits).await;
    // One source opens far more connections than the listener has handshake slots and
    // never sends a ClientHello; it keeps only its share.
    let mut stalled = Vec::new();
    for _ in 0..(limits.max_pending_handshakes * 4) {
        stalled.push(
            listener
                .tcp_from(ATTACKER_SOURCE)
                .await
                .expect("TCP connects"),
        );
    }
    listener.assert_device_served().await;
    // A second attacking source fills the rest of the slots: the listener is full, and
    // a fresh client takes a slot from the largest holder rather than being dropped.
    for _ in 0..(limits.max_pending_handshakes * 4) {
        stalled.push(
            listener
                .tcp_from([127, 0, 0, 3])
                .await
                .expect("TCP connects"),
        );
    }
    for _ in 0..3 {
        listener.assert_device_served().await;
    }
    drop(stalled);
    listener.stop().await;
}

/// Collects what the listener logs, as JSON lines.
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
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .collect()
    }
}

// A current-thread runtime: every task of the listener runs on this thread, under the
// subscriber set for it.
#[tokio::test(flavor = "current_thread")]
async fn failed_handshakes_are_logged_folded_with_their_count() {
    const GARBAGE: usize = 200;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let window = Duration::from_millis(500);
    let listener = Listener::start(ListenerLimits {
        log_window: window,
        ..limits()
    })
    .await;
    let started = tokio::time::Instant::now();
    for _ in 0..GARBAGE {
        let mut tcp = listener.tcp_from(ATTACKER_SOURCE).await.expect("connects");
        tcp.write_all(b"this is not a ClientHello\r\n\r\n")
            .await
            .expect("writes");
        assert!(closed_by_server(&mut tcp).await, "the handshake fails");
    }
    listener.assert_device_served().await;
    // The last window's folded line is written when that window closes: wait for it
    // (bounded), then count.
    let failures_of = |captured: &Captured| -> Vec<serde_json::Value> {
        captured
            .lines()
            .into_iter()
            .filter(|line| line["fields"]["reason"] == "TLS handshake failed")
            .collect()
    };
    let counted_of = |failures: &[serde_json::Value]| -> u64 {
        failures
            .iter()
            .map(|line| line["fields"]["count"].as_u64().expect("a count"))
            .sum()
    };
    let waiting = tokio::time::Instant::now();
    while counted_of(&failures_of(&captured)) < GARBAGE as u64 && waiting.elapsed() < BOUND {
        tokio::time::sleep(window / 5).await;
    }
    let elapsed = started.elapsed();
    listener.stop().await;

    let failures = failures_of(&captured);
    let counted = counted_of(&failures);
    assert_eq!(
        counted, GARBAGE as u64,
        "every failed handshake is counted: {failures:?}"
    );
    let windows = elapsed.as_millis() / window.as_millis() + 1;
    assert!(
        failures.len() as u128 <= 2 * windows,
        "at most two lines per window, not one per failure: {} lines over {windows} windows",
        failures.len()
    );
    assert!(
        failures
            .iter()
            .all(|line| line["fields"]["source"] == "127.0.0.1"),
        "the lines name the source"
    );
}
