//! The cluster port's TLS, done here rather than by tonic so that a manager can put a new
//! certificate to use (a renewal, a root rotation) without restarting anything: every accepted
//! connection's handshake uses the configuration current at that moment.
//!
//! The manager presents its certificate followed by the roots, so that a joining node can read
//! the root from the handshake and check it against its token. A client certificate is optional
//! (a joining node has none yet); [`crate::authz`] decides per service who may call.

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use raft_store::TlsIdentity;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::error::ManagerError;

/// A handshake that takes longer is dropped: a stalled client must not hold a task for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the cluster port holds at once, handshakes included; past it, a new connection
/// is closed at once. Every node of the swarm holds one to the leader, and each manager one
/// to each other manager.
pub(crate) const MAX_CONNECTIONS: usize = 16_384;
/// Calls one connection may have under way at once (a worker's session needs a handful).
pub(crate) const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// How often the port pings an HTTP/2 connection that has been quiet, and how long it waits for
/// the answer before closing it: a peer that vanished gives its place back within a minute.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// An established connection that holds one of the port's connection places until it closes.
pub(crate) struct PortConnection {
    stream: TlsStream<TcpStream>,
    _place: OwnedSemaphorePermit,
}

impl Connected for PortConnection {
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for PortConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PortConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The TLS configuration new connections get; [`ClusterPortTls::replace`] swaps it.
#[derive(Clone)]
pub(crate) struct ClusterPortTls {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

fn pki(what: &str, error: impl std::fmt::Display) -> ManagerError {
    ManagerError::Pki(format!("the cluster port's TLS: {what}: {error}"))
}

fn server_config(identity: &TlsIdentity) -> Result<Arc<rustls::ServerConfig>, ManagerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for root in CertificateDer::pem_slice_iter(&identity.ca_pem) {
        roots
            .add(root.map_err(|error| pki("reading the root CA", error))?)
            .map_err(|error| pki("trusting the root CA", error))?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|error| pki("client verification", error))?;
    let chain = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .chain(CertificateDer::pem_slice_iter(&identity.ca_pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pki("reading the node certificate", error))?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
        .map_err(|error| pki("reading the node key", error))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| pki("protocol versions", error))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|error| pki("the node certificate", error))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

impl ClusterPortTls {
    pub(crate) fn new(identity: &TlsIdentity) -> Result<ClusterPortTls, ManagerError> {
        Ok(ClusterPortTls {
            current: Arc::new(RwLock::new(server_config(identity)?)),
        })
    }

    /// New connections present `identity` and trust its roots from now on; open ones keep
    /// what they negotiated.
    pub(crate) fn replace(&self, identity: &TlsIdentity) -> Result<(), ManagerError> {
        let config = server_config(identity)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Accepts connections on `listener` and completes their handshakes concurrently, handing
    /// the established ones to the server; at most `max_connections` at once, handshakes
    /// included. Ends when the receiving side is dropped.
    pub(crate) fn incoming(
        &self,
        listener: TcpListener,
        max_connections: usize,
    ) -> tokio_stream::wrappers::ReceiverStream<Result<PortConnection, std::io::Error>> {
        let (sender, receiver) = mpsc::channel(64);
        let tls = self.clone();
        let places = Arc::new(Semaphore::new(max_connections));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = sender.closed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a connection on the cluster port");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
                    tracing::warn!(
                        %peer,
                        "the cluster port holds {max_connections} connections: closing a new one"
                    );
                    continue;
                };
                // Nagle's algorithm would hold small replies back until the peer's delayed ACK.
                let _ = stream.set_nodelay(true);
                let acceptor = tls.acceptor();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let connection = PortConnection {
                                stream,
                                _place: place,
                            };
                            let _ = sender.send(Ok(connection)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake on the cluster port failed")
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake on the cluster port timed out")
                        }
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(receiver)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// Whether the server closed `client`'s connection within a second.
    async fn closed(client: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), client.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_at_once() {
        let tls = ClusterPortTls::new(&crate::test_pki::TestPki::new().identity(1)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _incoming = tls.incoming(listener, 2);
        let first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(closed(&mut third).await, "a third connection was kept");
        assert!(
            !closed(&mut second).await,
            "a connection within the limit was closed"
        );
        // The first gives up its handshake: its place goes to the next connection.
        drop(first);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        assert!(
            !closed(&mut fourth).await,
            "a freed place was not given again"
        );
    }
}
