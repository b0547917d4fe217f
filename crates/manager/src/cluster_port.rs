//! The cluster port's TLS, done here rather than by tonic so that a manager can put a new
//! certificate to use (a renewal, a root rotation) without restarting anything: every accepted
//! connection's handshake uses the configuration current at that moment.
//!
//! The manager presents its certificate followed by the roots, so that a joining node can read
//! the root from the handshake and check it against its token. A client certificate is optional
//! (a joining node has none yet); [`crate::authz`] decides per service who may call.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use raft_store::TlsIdentity;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::error::ManagerError;

/// A handshake that takes longer is dropped: a stalled client must not hold a task for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// the established ones to the server. Ends when the receiving side is dropped.
    pub(crate) fn incoming(
        &self,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (sender, receiver) = mpsc::channel(64);
        let tls = self.clone();
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
                // Nagle's algorithm would hold small replies back until the peer's delayed ACK.
                let _ = stream.set_nodelay(true);
                let acceptor = tls.acceptor();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(Ok(stream)).await;
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
