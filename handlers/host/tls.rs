//! keyturn's own TLS listener, for self-hosted and local runs where no App Service front
//! end terminates TLS: rustls, TLS 1.3 and 1.2 only, asking every client for a
//! certificate and handing the chain it proved possession of to the same certificate
//! policies the `X-ARR-ClientCert` path uses.
//!
//! The handshake checks only that the client holds the private key of the leaf it sent
//! (the CertificateVerify signature). Whether that certificate is trusted is the
//! policies' decision, made per request, so that a refusal is a JSON answer with a
//! request id and an audit entry rather than a torn connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

use crate::domain::file::read_capped;

/// How long a client has to complete its handshake. A device on a slow link finishes in
/// well under a second; ten seconds tolerates bad mobile links while keeping a client
/// that opens connections and stalls from holding them.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once. Each costs a task and a few KiB; 1024 keeps a flood
/// of stalled handshakes from exhausting memory while far exceeding what a fleet's
/// legitimate, staggered requests need.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Completed handshakes waiting for the server to pick them up.
const ACCEPTED_QUEUE: usize = 64;

/// The most a certificate chain or key file may hold: the trust material cap.
pub const MAX_TLS_FILE_LEN: u64 = 16 * 1024 * 1024;

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
/// to their answer before this returns.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = TlsListener::new(listener, config)?;
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<TlsPeer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<TlsServer> {
    let address = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, config, router, shutdown));
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
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Accepts TCP connections and completes TLS handshakes in their own tasks, so a slow
/// or stalled client never holds up the next one; axum takes finished connections.
struct TlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, TlsPeer)>,
}

impl TlsListener {
    fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender));
        Ok(Self { local, accepted })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, TlsPeer)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            () = sender.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, address) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // Running out of file descriptors is the usual cause; pausing lets
                // in-flight connections finish and release theirs.
                tracing::warn!(%error, "accepting a TLS connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%address, "too many TLS handshakes in progress; dropping a connection");
            continue;
        };
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let chain: Arc<[CertificateDer<'static>]> = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
                        .unwrap_or_default();
                    // The server may be shutting down; the connection is then dropped.
                    let _ = sender.send((stream, TlsPeer { address, chain })).await;
                }
                Ok(Err(error)) => tracing::info!(%address, %error, "TLS handshake failed"),
                Err(_) => tracing::info!(%address, "TLS handshake timed out"),
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accept loop ended (its listener failed for good): no connection will
            // ever come again; graceful shutdown still ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(TlsPeer {
            address: self.local,
            chain: Arc::from(Vec::new()),
        })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
