//! The HTTPS listener every stand-in runs on: rustls (TLS 1.2 and 1.3) over a loopback
//! socket on an ephemeral port, HTTP/1.1 by hyper, requests routed by axum.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::faults::DropConnection;
use keyturn_testkit::pki::Issued;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("could not bind 127.0.0.1:0: {0}")]
    Bind(std::io::Error),
    #[error("could not configure TLS: {0}")]
    Tls(rustls::Error),
}

/// A running listener; dropping it stops accepting connections.
#[derive(Debug)]
pub(crate) struct Listener {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

pub(crate) fn tls_config(cert: &Issued) -> Result<Arc<ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ServerError::Tls)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone())),
        )
        .map_err(ServerError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub(crate) async fn start(tls: Arc<ServerConfig>, router: Router) -> Result<Listener, ServerError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(ServerError::Bind)?;
    let addr = listener.local_addr().map_err(ServerError::Bind)?;
    let acceptor = TlsAcceptor::from(tls);
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                // A client that gives up during the handshake is not the server's problem.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |request: http::Request<Incoming>| {
                        let router = router.clone();
                        async move {
                            let response = match router.oneshot(request.map(Body::new)).await {
                                Ok(response) => response,
                                Err(infallible) => match infallible {},
                            };
                            if response.extensions().get::<DropConnection>().is_some() {
                                return Err(ConnectionDropped);
                            }
                            Ok::<_, ConnectionDropped>(response)
                        }
                    });
                // Errors here are clients hanging up or an injected drop; both end the
                // connection, which is all that can be done.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(Listener { addr, accept })
}

/// The error a connection ends with when a fault drops it.
#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for ConnectionDropped {}
