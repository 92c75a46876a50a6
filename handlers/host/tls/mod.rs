//! keyturn's own TLS listener, for self-hosted and local runs where no App Service front
//! end terminates TLS: rustls, TLS 1.3 and 1.2 only, asking every client for a
//! certificate and handing the chain it proved possession of to the same certificate
//! policies the `X-ARR-ClientCert` path uses.
//!
//! The handshake checks only that the client holds the private key of the leaf it sent
//! (the CertificateVerify signature). Whether that certificate is trusted is the
//! policies' decision, made per request, so that a refusal is a JSON answer with a
//! request id and an audit entry rather than a torn connection.
//!
//! What the handshake itself refuses (a ClientHello that is not one, a client with no
//! protocol version or cipher suite in common, a certificate that cannot be parsed or
//! carries a critical extension webpki does not understand, a key too weak to check the
//! signature with, a signature that does not verify) is reported to the
//! [`HandshakeRefusals`] the listener was started with, which audits it (folded, see
//! `functions::secret_endpoint::refuse_handshake`). The listener's own limits come
//! first: a connection beyond its source's share is closed before any handshake and only
//! logged, like a handshake that timed out or a client that went away (nothing was
//! refused to them).

mod folded;
mod slots;
mod source;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, ServerConfig,
    SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use zeroize::Zeroizing;

use crate::domain::file::read_capped;

use self::folded::FoldedLog;
use self::slots::{SlotLimits, Slots};
pub(crate) use self::source::Source;

/// How long a client has to complete its handshake. A device on a slow link finishes in
/// well under a second; ten seconds tolerates bad mobile links while keeping a client
/// that opens connections and stalls from holding them.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to send a whole request head once the server waits for one:
/// after the handshake, and again after each answer on a kept-alive connection. A
/// device's request head is a few hundred bytes sent at once; ten seconds covers a bad
/// mobile link, while a client that sends nothing, or trickles a header line every few
/// seconds, loses its connection after ten seconds rather than holding it forever.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may sit with no request being answered and no byte moving
/// before it is closed. A device fetches its secret and goes; reuse within a few seconds
/// (a script reading two secrets) is the only keep-alive worth having, and every idle
/// connection holds a file descriptor an attacker would like to exhaust. Five seconds is
/// the keep-alive timeout Apache httpd ships with. It also closes a connection whose
/// client stops reading its answer.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress at once. Each costs a task and a few KiB; 1024 keeps a flood
/// of stalled handshakes from exhausting memory while far exceeding what a fleet's
/// legitimate, staggered requests need.
pub(crate) const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Handshakes in progress at once from one source (an IPv4 address or an IPv6 /64). A
/// handshake takes milliseconds, so even a site of thousands of devices behind one NAT
/// rarely has more than a handful in progress; 32 is a thirty-second of the total, so
/// it takes 32 sources to fill the listener, and a newcomer then still gets a slot (see
/// [`MAX_CONNECTIONS`]).
pub(crate) const MAX_PENDING_HANDSHAKES_PER_SOURCE: usize = 32;

/// Connections open at once, handshaking or established. Each holds a file descriptor;
/// 4096 stays well below the limits self-hosted services are given (systemd's default
/// hard limit is 524288, container runtimes give 1048576) so the store, the audit log and
/// outbound calls always have descriptors left. When the listener is full, a connection
/// from a source holding fewer connections than the largest holder takes that holder's
/// oldest one: one source hoarding slots never turns a fresh client away.
pub(crate) const MAX_CONNECTIONS: usize = 4096;

/// Connections open at once from one source. A NAT'd site's devices each hold a
/// connection for a second or two (see [`IDLE_TIMEOUT`]); 256 serves hundreds of them
/// fetching at the same moment, and is a sixteenth of [`MAX_CONNECTIONS`].
pub(crate) const MAX_CONNECTIONS_PER_SOURCE: usize = 256;

/// The window handshake failures and refusals are folded over: one line per source and
/// reason per minute, with a count, instead of one per connection.
pub(crate) const LOG_WINDOW: Duration = Duration::from_secs(60);

/// Sources with their own folded lines per window; beyond that, one line per reason
/// covers every other source, so even a flood from many addresses logs a bounded
/// number of lines.
const MAX_LOGGED_SOURCES: usize = 64;

/// Pause after a failed `accept` (running out of file descriptors is the usual cause),
/// so that connections in flight can finish and release theirs.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The listener's timeouts and caps. [`Default`] gives the constants above; tests use
/// smaller values to run quickly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    pub max_pending_handshakes: usize,
    pub max_pending_handshakes_per_source: usize,
    pub log_window: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_source: MAX_CONNECTIONS_PER_SOURCE,
            max_pending_handshakes: MAX_PENDING_HANDSHAKES,
            max_pending_handshakes_per_source: MAX_PENDING_HANDSHAKES_PER_SOURCE,
            log_window: LOG_WINDOW,
        }
    }
}

impl ListenerLimits {
    fn slots(&self) -> SlotLimits {
        SlotLimits {
            connections: self.max_connections,
            connections_per_source: self.max_connections_per_source.min(self.max_connections),
            handshakes: self.max_pending_handshakes,
            handshakes_per_source: self
                .max_pending_handshakes_per_source
                .min(self.max_pending_handshakes),
        }
    }
}

/// The most a certificate chain or key file may hold: the trust material cap.
pub(crate) const MAX_TLS_FILE_LEN: u64 = 16 * 1024 * 1024;

/// Why the TLS listener cannot start. The key's error never names its path: a key
/// pasted into the setting in place of a path would otherwise be echoed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read the server certificate chain {path}: {detail}")]
    Certificate { path: PathBuf, detail: String },
    #[error("cannot read the server private key (KEYTURN_TLS_KEY): {detail}")]
    PrivateKey { detail: String },
    #[error("the server certificate and key are not usable together: {detail}")]
    Config { detail: String },
}

/// The client side of one TLS connection: its address and the chain it presented
/// (leaf first; empty when it sent none). Reaches handlers as `ConnectInfo<TlsPeer>`.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub address: SocketAddr,
    pub chain: Arc<[CertificateDer<'static>]>,
}

/// Where the listener reports each handshake it refused: the client's address and the
/// reason code. The connection's task awaits the report with its
/// slot still held, so reports can never outnumber the connections the listener admits.
#[derive(Clone)]
pub struct HandshakeRefusals(
    Arc<dyn Fn(IpAddr, &'static str) -> BoxFuture<'static, ()> + Send + Sync>,
);

impl HandshakeRefusals {
    /// Reports each refusal to `report`.
    pub fn new(
        report: impl Fn(IpAddr, &'static str) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(report))
    }

    /// Reports nowhere: refusals are only logged, folded. For a listener serving no
    /// audited endpoint.
    pub fn unreported() -> Self {
        Self::new(|_, _| Box::pin(async {}))
    }

    async fn report(&self, source: IpAddr, reason: &'static str) {
        (self.0)(source, reason).await;
    }
}

impl std::fmt::Debug for HandshakeRefusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeRefusals")
    }
}

/// The reason code of a handshake the listener refused, or `None` when nothing was
/// refused (the client went away, reset the connection, or refused the server's own
/// certificate with an alert). The codes of certificate problems are the `chain`
/// policy's own (`mtls::chain`), so one code means one thing in the audit log.
fn refusal_code(error: &io::Error) -> Option<&'static str> {
    let error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    let code = match error {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::BadEncoding => "malformed_certificate",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "unsupported_signature_algorithm"
            }
            CertificateError::Other(OtherError(other)) => {
                if other.downcast_ref::<WeakKey>().is_some() {
                    "forbidden_public_key"
                } else if matches!(
                    other.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::UnsupportedCriticalExtension)
                ) {
                    "unsupported_critical_extension"
                } else {
                    "invalid_certificate"
                }
            }
            _ => "invalid_certificate",
        },
        rustls::Error::NoCertificatesPresented => "certificate_required",
        rustls::Error::PeerIncompatible(_) => "incompatible_client_hello",
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. }
        | rustls::Error::PeerMisbehaved(_)
        | rustls::Error::PeerSentOversizedRecord => "malformed_handshake",
        rustls::Error::AlertReceived(_) => return None,
        _ => "handshake_failed",
    };
    Some(code)
}

/// Below this many bits an RSA key is refused in the handshake (ring verifies no
/// signature made with one), as the `chain` policy's profile refuses it in a chain.
const MIN_RSA_BITS: usize = 2048;

/// Why a signature was not checked: the leaf's RSA key is below [`MIN_RSA_BITS`]. webpki
/// reports such a key as a bad signature; the audit log names the key instead.
#[derive(Debug, thiserror::Error)]
#[error("the client certificate's RSA key has {bits} bits; at least {MIN_RSA_BITS} are required")]
struct WeakKey {
    bits: usize,
}

/// `error` from checking the handshake signature of `leaf`, naming a weak RSA key as such.
fn name_weak_key(error: rustls::Error, leaf: &CertificateDer<'_>) -> rustls::Error {
    if !matches!(
        error,
        rustls::Error::InvalidCertificate(CertificateError::BadSignature)
    ) {
        return error;
    }
    let bits = x509_parser::parse_x509_certificate(leaf)
        .ok()
        .and_then(|(_, cert)| match cert.public_key().parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => Some(rsa.key_size()),
            _ => None,
        });
    match bits {
        Some(bits) if bits < MIN_RSA_BITS => rustls::Error::InvalidCertificate(
            CertificateError::Other(OtherError(Arc::new(WeakKey { bits }))),
        ),
        _ => error,
    }
}

/// The server configuration: the certificate chain and key (PEM files), TLS 1.3 and 1.2,
/// HTTP/1.1, and a request for a client certificate.
pub fn server_config(certificate: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certificate_error = |detail: String| TlsError::Certificate {
        path: certificate.to_owned(),
        detail,
    };
    // Bounded reads: `KEYTURN_TLS_CERT=/dev/zero` is refused after the cap.
    let pem =
        read_capped(certificate, MAX_TLS_FILE_LEN).map_err(|e| certificate_error(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| certificate_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: certificate.to_owned(),
            detail: "holds no certificate".into(),
        });
    }
    let key_error = |detail: String| TlsError::PrivateKey { detail };
    let key_pem =
        Zeroizing::new(read_capped(key, MAX_TLS_FILE_LEN).map_err(|e| key_error(e.to_string()))?);
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| key_error(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(RequestClientCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config {
            detail: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config {
            detail: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then waits for
/// in-flight requests, as the plain listener does: once `shutdown` completes, the
/// listening socket is closed (new connections are refused), handshakes not yet finished
/// are dropped, idle keep-alive connections are closed, and requests being served run
/// to their answer before this returns. Each refused handshake is reported to
/// `refusals`. The listener's limits are the defaults ([`ListenerLimits`]).
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    refusals: HandshakeRefusals,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(
        listener,
        config,
        router,
        refusals,
        ListenerLimits::default(),
        shutdown,
    )
    .await
}

/// [`serve`] with the given limits.
///
/// The accept loop never waits on a client: each connection gets a slot (or is closed
/// at once, see [`MAX_CONNECTIONS`]) and its handshake and requests run in its own task.
pub(crate) async fn serve_with(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    refusals: HandshakeRefusals,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(config);
    let slots = Slots::new(limits.slots());
    let log = Arc::new(FoldedLog::new(limits.log_window, MAX_LOGGED_SOURCES));
    let (stop, stopping) = watch::channel(false);
    // Every connection task holds a sender; `recv` ends once all have finished.
    let (running, mut all_finished) = mpsc::channel::<Infallible>(1);
    let mut flush = tokio::time::interval(limits.log_window);
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            _ = flush.tick() => {
                log.flush();
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (tcp, address) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                log.record(
                    Source::of(local.ip()),
                    "accepting a connection failed",
                    &error,
                );
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let slot = match slots.admit(address.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                log.record(Source::of(address.ip()), refused.reason(), &address);
                continue;
            }
        };
        tokio::spawn(
            Connection {
                address,
                slot,
                limits,
                log: log.clone(),
                refusals: refusals.clone(),
                stopping: stopping.clone(),
                _running: running.clone(),
            }
            .run(tcp, acceptor.clone(), router.clone()),
        );
    }
    drop(listener);
    // Nobody may be listening any more: every task has then ended already.
    let _ = stop.send(true);
    drop(running);
    let _ = all_finished.recv().await;
    Ok(())
}

/// A TLS listener serving in its own task (see [`spawn`]).
#[derive(Debug)]
pub struct TlsServer {
    address: SocketAddr,
    task: JoinHandle<io::Result<()>>,
}

/// Starts [`serve`] in its own task, so the process can run it beside the plain
/// listener; await [`TlsServer::stopped`] before exiting, or requests still in flight
/// on TLS connections are cut off when the runtime shuts down.
pub fn spawn(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    refusals: HandshakeRefusals,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<TlsServer> {
    spawn_with(
        listener,
        config,
        router,
        refusals,
        ListenerLimits::default(),
        shutdown,
    )
}

/// [`spawn`] with the given limits.
pub fn spawn_with(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    refusals: HandshakeRefusals,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<TlsServer> {
    let address = listener.local_addr()?;
    let task = tokio::spawn(serve_with(
        listener, config, router, refusals, limits, shutdown,
    ));
    Ok(TlsServer { address, task })
}

impl TlsServer {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Completes once `shutdown` has completed and every request in flight has been
    /// answered; reports how the listener ended.
    pub async fn stopped(self) -> io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(io::Error::other(format!(
                "the TLS listener task failed: {join}"
            ))),
        }
    }
}

/// Asks for a client certificate without requiring one, and checks only the handshake
/// signature: see the module documentation.
#[derive(Debug)]
struct RequestClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RequestClientCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients offer whatever client certificate they have, and the
        // policies decide. (curl, PowerShell and browsers all send one without hints.)
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        // A client without a certificate still gets an HTTP answer (401 with a request
        // id), which is easier to diagnose than a failed handshake.
        false
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
            .map_err(|error| name_weak_key(error, cert))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
            .map_err(|error| name_weak_key(error, cert))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// One accepted connection: its handshake, then its requests, in its own task.
struct Connection {
    address: SocketAddr,
    slot: slots::Slot,
    limits: ListenerLimits,
    log: Arc<FoldedLog>,
    refusals: HandshakeRefusals,
    stopping: watch::Receiver<bool>,
    _running: mpsc::Sender<Infallible>,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream, acceptor: TlsAcceptor, router: Router) {
        let source = Source::of(self.address.ip());
        let handshake = tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(tcp));
        let finished = tokio::select! {
            finished = handshake => finished,
            () = self.slot.taken() => {
                self.log.record(source, "handshake dropped for a newcomer", &self.address);
                return;
            }
            // Shutting down: handshakes not yet finished are dropped.
            _ = self.stopping.wait_for(|stop| *stop) => return,
        };
        let stream = match finished {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                self.log.record(source, "TLS handshake failed", &error);
                if let Some(reason) = refusal_code(&error) {
                    self.refusals.report(self.address.ip(), reason).await;
                }
                return;
            }
            Err(_) => {
                self.log
                    .record(source, "TLS handshake timed out", &self.address);
                return;
            }
        };
        self.slot.handshake_done();
        let chain: Arc<[CertificateDer<'static>]> = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        let peer = TlsPeer {
            address: self.address,
            chain,
        };
        let activity = Arc::new(Activity::new());
        let service = hyper::service::service_fn({
            let activity = activity.clone();
            move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer.clone()));
                let answering = activity.answering();
                let router = router.clone();
                async move {
                    let response = router.oneshot(request).await;
                    drop(answering);
                    response
                }
            }
        });
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .keep_alive(true);
        let connection = http.serve_connection(io, service);
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                // Errors here are the client's doing (a malformed request, a header
                // timeout, a reset): the connection simply ends.
                _ = connection.as_mut() => return,
                () = activity.idle_for(self.limits.idle_timeout) => return,
                () = self.slot.taken(), if !closing => {
                    self.log.record(source, "connection closed for a newcomer", &self.address);
                    closing = true;
                }
                _ = self.stopping.wait_for(|stop| *stop), if !closing => closing = true,
            }
            // Closing: an idle connection ends now; one being answered gets its answer
            // (hyper then closes it instead of keeping it alive).
            if activity.in_flight() == 0 {
                return;
            }
            connection.as_mut().graceful_shutdown();
        }
    }
}

/// When a connection last moved a byte or finished an answer, and how many of its
/// requests are being answered.
struct Activity {
    origin: Instant,
    last_millis: AtomicU64,
    answering: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_millis: AtomicU64::new(0),
            answering: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    fn in_flight(&self) -> usize {
        self.answering.load(Ordering::Relaxed)
    }

    fn answering(self: &Arc<Self>) -> Answering {
        self.answering.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Answering(self.clone())
    }

    /// Completes once nothing has been answered and no byte has moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last =
                self.origin + Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if self.in_flight() == 0 && Instant::now() >= deadline {
                return;
            }
            // While a request is being answered the handler's own time is not idleness;
            // look again a timeout later.
            let wake = if self.in_flight() == 0 {
                deadline
            } else {
                Instant::now() + timeout
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// Counts a request as being answered until dropped.
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.touch();
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records in its [`Activity`] every read or write that moves bytes.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled
            && written > 0
        {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled
            && written > 0
        {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
