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

use keyturn::host::tls::{self, HandshakeRefusals, ListenerLimits, TlsPeer};

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
        let server = tls::spawn_with(
            listener,
            config,
            router,
            HandshakeRefusals::unreported(),
            limits,
            async move {
                let _ = stopped.await;
            },
        )
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

// ---------------------------------------------------------------------------------------
// Refused handshakes in the audit log: keyturn's listener as start-up starts it.

/// The handshakes of each kind the flood test refuses.
const REFUSED_PER_KIND: usize = 1_000;

/// Connections the flood keeps in flight at once: below a source's handshake share
/// (`MAX_PENDING_HANDSHAKES_PER_SOURCE`), so the listener's own limits refuse none of
/// them and every refusal is the handshake's.
const FLOOD_LANES: usize = 8;

const DEVICE_SECRET: &str = "db-value-5e1a";

/// keyturn serving the SecretEndpoint over its own TLS listener (`startup::spawn_tls`),
/// with a device pinned by thumbprint and granted `db-password`, and its audit log.
struct Audited {
    address: SocketAddr,
    ca: TestCa,
    device: pki::Issued,
    audit: keyturn::audit::AuditLog,
    store: Arc<dyn keyturn::ports::audit::AuditStore>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tls::TlsServer>,
    _dir: TempDir,
}

impl Audited {
    async fn start() -> Self {
        use keyturn::domain::thumbprint::Thumbprint;

        let dir = TempDir::new().expect("temp dir");
        let ca = TestCa::root("keyturn test CA");
        let server_cert = ca.issue(&pki::server_params(&["localhost"]));
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        let device = ca.issue(&pki::client_params("device", &["device.example"]));
        let thumbprint = Thumbprint::of_der(&device.cert_der).to_string();
        let policy = format!(
            r#"{{ "version": 1, "grants": [ {{ "identities": [ {{ "thumbprint": "{thumbprint}" }} ], "secrets": [ "db-password" ], "backend": "appsettings" }} ] }}"#
        );
        let settings = vec![
            ("KEYTURN_SECRET_DB_PASSWORD", DEVICE_SECRET.to_owned()),
            ("KEYTURN_CERT_POLICIES", "trusted-thumbprints".to_owned()),
            ("KEYTURN_TRUSTED_THUMBPRINTS", thumbprint),
            ("KEYTURN_ACCESS_POLICY", policy),
            ("KEYTURN_RATE_LIMIT_PER_IDENTITY", "0".to_owned()),
            ("KEYTURN_RATE_LIMIT_PER_ADDRESS", "0".to_owned()),
            ("KEYTURN_TLS_ADDRESS", "127.0.0.1:0".to_owned()),
            (
                "KEYTURN_TLS_CERT",
                write("server.pem", &server_cert.cert_pem),
            ),
            ("KEYTURN_TLS_KEY", write("server.key", &server_cert.key_pem)),
        ];
        let options = crate::helpers::AppOptions {
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ..crate::helpers::AppOptions::default()
        };
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let (settings, state, store) =
            crate::helpers::start_up(options, &crate::helpers::rotation(), &data).await;
        let audit = state.services.audit.clone();
        let config = keyturn::startup::tls_config(&settings)
            .expect("TLS configuration")
            .expect("a TLS listener is configured");
        let address = settings.endpoint.tls.as_ref().expect("configured").address;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = keyturn::startup::spawn_tls(address, config, state, async move {
            let _ = stopped.await;
        })
        .await
        .expect("the listener starts");
        Self {
            address: server.local_addr(),
            ca,
            device,
            audit,
            store,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    /// A client trusting the server's CA and presenting what `resolver` gives.
    fn client(&self, resolver: Arc<dyn rustls::client::ResolvesClientCert>) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.cert_der().to_vec()))
            .expect("the CA is a certificate");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the defaults")
        .with_root_certificates(roots)
        .with_client_cert_resolver(resolver);
        TlsConnector::from(Arc::new(config))
    }

    /// One `GET /api/secrets/db-password` over a new connection from `source`: the
    /// status and body, or the error that ended the connection.
    async fn get_from(
        &self,
        source: [u8; 4],
        connector: &TlsConnector,
    ) -> std::io::Result<(u16, String)> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let tcp = socket.connect(self.address).await?;
        let name = ServerName::try_from("localhost").expect("a DNS name");
        let mut stream = connector.connect(name, tcp).await?;
        stream
            .write_all(
                b"GET /api/secrets/db-password HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )
            .await?;
        let mut response = Vec::new();
        match stream.read_to_end(&mut response).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
            Err(e) => return Err(e),
        }
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line: {text:?}")))?;
        Ok((status, text))
    }

    /// Stops the listener (every connection's task, and so every report of a refusal,
    /// has then finished), closes the refusals' window and returns every entry.
    async fn stop_and_read(mut self) -> Vec<keyturn::ports::audit::AuditEntry> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(BOUND, server.stopped())
                .await
                .expect("the listener stops within the bound")
                .expect("the listener stops cleanly");
        }
        self.audit.flush().await.expect("the window closes");
        let report = self.audit.verify().await.expect("verify");
        assert!(report.is_intact(), "{report}");
        crate::helpers::read_all(self.store.as_ref()).await
    }
}

/// Presents one chain, signing with `key`.
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl Presents {
    fn issued(issued: &pki::Issued) -> Arc<Self> {
        let key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(issued.key_der.clone()),
        ))
        .expect("a usable key");
        Self::signed_by(&issued.cert_der, key)
    }

    fn signed_by(cert_der: &[u8], key: Arc<dyn rustls::sign::SigningKey>) -> Arc<Self> {
        let chain = vec![CertificateDer::from(cert_der.to_vec())];
        Arc::new(Self(Arc::new(rustls::sign::CertifiedKey::new(chain, key))))
    }
}

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A leaf the test CA issued for an RSA-1024 public key. No library here signs with so
/// small a key (ring and aws-lc-rs start at 2048 bits), so the client signs with
/// [`RsaSignatureOfSize`]: the listener refuses the key before it looks at a signature,
/// as it would a real RSA-1024 device's.
fn rsa_1024_client(ca: &TestCa) -> Arc<Presents> {
    use pki::rcgen;

    struct Rsa1024(Vec<u8>);
    impl rcgen::PublicKeyData for Rsa1024 {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_RSA_SHA256
        }
    }
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            len @ 0..=0x7f => out.push(len as u8),
            len @ 0x80..=0xff => out.extend([0x81, len as u8]),
            len => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(content);
        out
    }
    // RSAPublicKey { modulus: 1024 bits, publicExponent: 65537 }.
    let mut modulus = vec![0u8];
    modulus.extend([0xffu8; 128]);
    let key = der(0x30, &[der(0x02, &modulus), der(0x02, &[1, 0, 1])].concat());
    let cert = pki::client_params("rsa-1024-device", &["rsa-1024.example"])
        .signed_by(&Rsa1024(key), &ca.issuer())
        .expect("the CA signs");
    Presents::signed_by(cert.der(), Arc::new(RsaSignatureOfSize(128)))
}

/// An RSA-PSS "signature" of the key's size that no key made.
#[derive(Debug)]
struct RsaSignatureOfSize(usize);

impl rustls::sign::SigningKey for RsaSignatureOfSize {
    fn choose_scheme(
        &self,
        offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&rustls::SignatureScheme::RSA_PSS_SHA256)
            .then(|| Box::new(RsaSignatureOfSize(self.0)) as Box<dyn rustls::sign::Signer>)
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::RSA
    }
}

impl rustls::sign::Signer for RsaSignatureOfSize {
    fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(vec![0x5a; self.0])
    }

    fn scheme(&self) -> rustls::SignatureScheme {
        rustls::SignatureScheme::RSA_PSS_SHA256
    }
}

/// A leaf with a critical extension nobody understands (a private OID), and its key.
fn critical_extension_client(ca: &TestCa) -> Arc<Presents> {
    let mut params = pki::client_params("odd-device", &["odd.example"]);
    let mut extension =
        pki::rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 7], vec![5, 0]);
    extension.set_criticality(true);
    params.custom_extensions = vec![extension];
    Presents::issued(&ca.issue(&params))
}

/// The refusal entries the handshake wrote, by reason.
fn handshake_refusals(
    entries: &[keyturn::ports::audit::AuditEntry],
) -> std::collections::BTreeMap<String, (usize, u64)> {
    let mut by_reason = std::collections::BTreeMap::new();
    for entry in entries {
        let reason = entry
            .record
            .reason
            .as_ref()
            .map(|r| r.as_str())
            .unwrap_or("");
        if reason.starts_with("policy=handshake;") {
            assert_eq!(
                entry.record.outcome,
                keyturn::ports::audit::Outcome::Denied,
                "{entry:?}"
            );
            assert_eq!(entry.record.action.as_str(), "secret.read");
            let (entries, occurrences) = by_reason.entry(reason.to_owned()).or_insert((0, 0));
            *entries += 1;
            *occurrences += entry.record.occurrences();
        }
    }
    by_reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_handshakes_is_audited_folded_while_a_device_is_served_and_audited() {
    let app = Audited::start().await;
    let weak = app.client(rsa_1024_client(&app.ca));
    let odd = app.client(critical_extension_client(&app.ca));
    let device = app.client(Presents::issued(&app.device));
    let started = tokio::time::Instant::now();

    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reads = {
        let device = device.clone();
        let flooding = flooding.clone();
        let app = &app;
        async move {
            let mut answers = Vec::new();
            while flooding.load(std::sync::atomic::Ordering::Relaxed) || answers.is_empty() {
                answers.push(app.get_from(DEVICE_SOURCE, &device).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        }
    };
    let flood = async {
        let lanes = (0..FLOOD_LANES).map(|lane| {
            let (weak, odd, app) = (weak.clone(), odd.clone(), &app);
            async move {
                let mut refused = 0;
                for index in (lane..2 * REFUSED_PER_KIND).step_by(FLOOD_LANES) {
                    let client = if index % 2 == 0 { &weak } else { &odd };
                    if app.get_from(ATTACKER_SOURCE, client).await.is_err() {
                        refused += 1;
                    }
                }
                refused
            }
        });
        let refused: usize = futures::future::join_all(lanes).await.into_iter().sum();
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        refused
    };
    let (refused, answers) = tokio::join!(flood, reads);
    let elapsed = started.elapsed();
    let entries = app.stop_and_read().await;

    assert_eq!(
        refused,
        2 * REFUSED_PER_KIND,
        "every flooding handshake fails"
    );
    let served = answers.len();
    for answer in &answers {
        let (status, body) = answer.as_ref().expect("the device is answered");
        assert_eq!(*status, 200, "{body}");
        assert!(body.contains(DEVICE_SECRET), "{body}");
    }
    let by_reason = handshake_refusals(&entries);
    let expected: Vec<String> = ["forbidden_public_key", "unsupported_critical_extension"]
        .iter()
        .map(|code| format!("policy=handshake; reason={code}; source=127.0.0.1"))
        .collect();
    assert_eq!(
        by_reason.keys().cloned().collect::<Vec<_>>(),
        expected,
        "one kind per reason, naming the source"
    );
    for (reason, (_, occurrences)) in &by_reason {
        assert_eq!(
            *occurrences, REFUSED_PER_KIND as u64,
            "{reason}: the counts add up to every refusal"
        );
    }
    // Per window and kind: the first refusal, and one entry for its repeats.
    let windows = 2 + elapsed.as_secs() / keyturn::audit::FOLD_WINDOW.as_secs();
    let written: usize = by_reason.values().map(|(entries, _)| entries).sum();
    assert!(
        written as u64 <= windows * 2 * 2,
        "{written} entries for {} refusals over {windows} windows",
        2 * REFUSED_PER_KIND
    );
    let granted: Vec<_> = entries
        .iter()
        .filter(|e| e.record.outcome == keyturn::ports::audit::Outcome::Succeeded)
        .collect();
    assert_eq!(
        granted.len(),
        served,
        "every read during the flood is audited"
    );
    assert!(granted.iter().all(|e| {
        e.record.count.is_none()
            && e.record.reason.as_ref().is_some_and(|r| {
                r.as_str().contains("reason=granted") && r.as_str().ends_with("source=127.0.0.2")
            })
    }));
}

#[tokio::test]
async fn a_hello_that_is_not_one_is_audited_and_a_client_that_goes_away_is_not() {
    let app = Audited::start().await;
    // A client that connects and leaves refuses nothing and is refused nothing.
    for _ in 0..3 {
        let tcp = TcpStream::connect(app.address).await.expect("connects");
        drop(tcp);
    }
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(app.address).await.expect("connects");
        tcp.write_all(b"GET /api/secrets/db-password HTTP/1.1\r\n\r\n")
            .await
            .expect("writes");
        assert!(closed_by_server(&mut tcp).await, "the handshake fails");
    }
    let device = app.client(Presents::issued(&app.device));
    let (status, body) = app
        .get_from(DEVICE_SOURCE, &device)
        .await
        .expect("the device is answered");
    assert_eq!(status, 200, "{body}");
    let entries = app.stop_and_read().await;

    let by_reason = handshake_refusals(&entries);
    assert_eq!(
        by_reason.into_iter().collect::<Vec<_>>(),
        vec![(
            "policy=handshake; reason=malformed_handshake; source=127.0.0.1".to_owned(),
            (2, 5)
        )],
        "the first refusal, then its four repeats as one entry"
    );
}
