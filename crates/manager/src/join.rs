//! The joining node's side of `swarm join`. It learns the root CA from the chain a manager
//! presents in its TLS handshake, trusts it only when its digest is the one in the join token
//! (anything else may be a man in the middle), and from then on talks TLS verified against that
//! root: it sends the token and a certificate signing request, and gets its node certificate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use raft_store::{MANAGER_SERVER_NAME, TlsIdentity};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use shoal_proto::api::node_ca_client::NodeCaClient;
use shoal_proto::api::raft_membership_client::RaftMembershipClient;
use shoal_proto::api::{
    IssueNodeCertificateRequest, NodeRole, RaftJoinRequest, RenewNodeCertificateRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::ca::new_key_and_request;
use crate::error::ManagerError;
use crate::join_token::JoinToken;
use crate::membership::{Membership, MembershipRole};

/// How long each step of a join may take.
const JOIN_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a node gets when the CA accepts it.
#[derive(Clone, Debug)]
pub struct JoinGrant {
    pub node_id: String,
    pub cluster_id: String,
    pub role: NodeRole,
    pub identity: TlsIdentity,
    pub manager_addrs: Vec<String>,
    /// This node's address on the connection to the manager: its advertise address unless the
    /// user gives one.
    pub local_ip: std::net::IpAddr,
}

impl JoinGrant {
    /// The membership the node keeps after this join: a manager's role and Raft member id when
    /// the managers admitted it as a manager, a worker's otherwise.
    pub fn membership(
        &self,
        listen_addr: String,
        advertise_addr: String,
        manager_addrs: Vec<String>,
    ) -> Membership {
        let (role, raft_member_id) = if self.role == NodeRole::Manager {
            (
                MembershipRole::Manager,
                crate::role::raft_member_id_for(&self.node_id),
            )
        } else {
            (MembershipRole::Worker, 0)
        };
        Membership {
            node_id: self.node_id.clone(),
            cluster_id: self.cluster_id.clone(),
            role,
            raft_member_id,
            listen_addr,
            advertise_addr,
            manager_addrs,
        }
    }
}

/// Accepts whatever certificate the server shows, while still checking that the server holds
/// its key: the chain is judged afterwards, against the join token's digest.
#[derive(Debug)]
struct ChainRecorder {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainRecorder {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn unreachable_manager(remote: &str, why: impl std::fmt::Display) -> ManagerError {
    ManagerError::Unavailable(format!(
        "could not reach the manager at {remote}: {why}; check the address and that port 2377 is open"
    ))
}

/// The root CA certificate (PEM) the manager at `remote` presents, provided the token vouches
/// for it, and this node's address on the connection.
pub async fn fetch_trusted_root(
    remote: &str,
    token: &JoinToken,
    source: Option<IpAddr>,
) -> Result<(String, IpAddr), ManagerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| ManagerError::Pki(format!("TLS settings: {error}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainRecorder { provider }))
        .with_no_client_auth();
    let handshake = async {
        let tcp = connect_tcp(remote, source)
            .await
            .map_err(|error| unreachable_manager(remote, error))?;
        let _ = tcp.set_nodelay(true);
        let local_ip = tcp
            .local_addr()
            .map_err(|error| unreachable_manager(remote, error))?
            .ip();
        let name = ServerName::try_from(MANAGER_SERVER_NAME)
            .map_err(|error| ManagerError::Pki(format!("server name: {error}")))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|error| unreachable_manager(remote, format!("TLS handshake: {error}")))?;
        Ok::<_, ManagerError>((stream, local_ip))
    };
    let (stream, local_ip) = tokio::time::timeout(JOIN_STEP_TIMEOUT, handshake)
        .await
        .map_err(|_| unreachable_manager(remote, "no answer in time"))??;
    let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
    // Managers present their certificate followed by the roots (and, during a root rotation,
    // the new root cross-signed by the old). Only the root the token names is trusted.
    if chain.len() < 2 {
        return Err(ManagerError::PermissionDenied(format!(
            "{remote} presented no root CA: it is not a swarm manager"
        )));
    }
    let root = chain[1..]
        .iter()
        .find(|certificate| token.trusts(certificate.as_ref()))
        .ok_or_else(|| {
            ManagerError::PermissionDenied(format!(
                "the root CA presented by {remote} does not match the join token's digest: \
                 this may be a man-in-the-middle attack, or the token is from another swarm (or \
                 from before a root rotation); check the address and get a fresh token with \
                 'shoal swarm join-token' on a manager"
            ))
        })?;
    let root_pem = pem::encode(&pem::Pem::new("CERTIFICATE", root.as_ref().to_vec()));
    Ok((root_pem, local_ip))
}

/// A TCP connection to `remote` (HOST:PORT), from `source` when given.
async fn connect_tcp(
    remote: &str,
    source: Option<IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(source) = source else {
        return tokio::net::TcpStream::connect(remote).await;
    };
    let target = tokio::net::lookup_host(remote)
        .await?
        .find(|target| target.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!("no address of the same family as {source}"),
            )
        })?;
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// Joins the swarm through the manager at `remote` (HOST:PORT): checks its root CA against the
/// token, then has the CA sign a certificate for a key made here.
pub async fn join(
    remote: &str,
    token_text: &str,
    hostname: &str,
    advertise_addr: &str,
) -> Result<JoinGrant, ManagerError> {
    join_from(remote, token_text, hostname, advertise_addr, None).await
}

/// [`join`] with the connections made from `source`, a local address, when given: the CA
/// limits join attempts per source address, so a simulated fleet's agents each join from
/// their own loopback address.
pub async fn join_from(
    remote: &str,
    token_text: &str,
    hostname: &str,
    advertise_addr: &str,
    source: Option<IpAddr>,
) -> Result<JoinGrant, ManagerError> {
    let token = JoinToken::parse(token_text)?;
    let (root_pem, local_ip) = fetch_trusted_root(remote, &token, source).await?;
    let (key_pem, csr) = new_key_and_request()?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&root_pem))
        .domain_name(MANAGER_SERVER_NAME);
    let channel = connect(remote, tls, source).await?;
    let response = NodeCaClient::new(channel)
        .issue_node_certificate(IssueNodeCertificateRequest {
            token: token.to_string(),
            csr,
            hostname: hostname.to_owned(),
            advertise_addr: advertise_addr.to_owned(),
        })
        .await
        .map_err(ManagerError::from_status)?
        .into_inner();
    let role = response.role();
    // The answer came over TLS verified against the token's root, so the roots it names (two
    // during a rotation) are the swarm's.
    let trust = if response.root_ca.is_empty() {
        root_pem
    } else {
        response.root_ca
    };
    Ok(JoinGrant {
        node_id: response.node_id,
        cluster_id: response.cluster_id,
        role,
        identity: TlsIdentity {
            ca_pem: trust.into_bytes(),
            cert_pem: response.certificate.into_bytes(),
            key_pem: key_pem.into_bytes(),
        },
        manager_addrs: response.manager_addrs,
        local_ip,
    })
}

async fn connect(
    remote: &str,
    tls: ClientTlsConfig,
    source: Option<IpAddr>,
) -> Result<Channel, ManagerError> {
    Endpoint::from_shared(format!("https://{remote}"))
        .map_err(|error| {
            ManagerError::InvalidArgument(format!("manager address {remote:?}: {error}"))
        })?
        .tls_config(tls)
        .map_err(|error| ManagerError::Pki(format!("TLS settings: {error}")))?
        .connect_timeout(JOIN_STEP_TIMEOUT)
        .local_address(source)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|error| unreachable_manager(remote, error))
}

/// Runs `call` against each manager in turn until one answers; returns the first answer, or
/// the last failure.
async fn with_any_manager<T, F, Fut>(
    manager_addrs: &[String],
    identity: &TlsIdentity,
    mut call: F,
) -> Result<T, ManagerError>
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut last = ManagerError::Unavailable("this node knows no manager to ask".to_owned());
    for addr in manager_addrs {
        let channel = match connect(addr, identity.client_config(), None).await {
            Ok(channel) => channel,
            Err(error) => {
                last = error;
                continue;
            }
        };
        match call(channel).await {
            Ok(answer) => return Ok(answer),
            // Only a manager that could not serve the call is worth asking again elsewhere.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                last = ManagerError::from_status(status)
            }
            Err(status) => return Err(ManagerError::from_status(status)),
        }
    }
    Err(last)
}

/// Asks a manager to take this (new) manager into the Raft group, at `raft_id` and `addr`.
/// Returns once this member is a voter.
pub async fn join_raft(
    manager_addrs: &[String],
    identity: &TlsIdentity,
    raft_id: u64,
    addr: &str,
) -> Result<(), ManagerError> {
    let others: Vec<String> = manager_addrs
        .iter()
        .filter(|manager| manager.as_str() != addr)
        .cloned()
        .collect();
    with_any_manager(&others, identity, |channel| async move {
        RaftMembershipClient::new(channel)
            .join(RaftJoinRequest {
                raft_id,
                addr: addr.to_owned(),
            })
            .await
    })
    .await
    .map(|_| ())
}

/// A new certificate for this node from the CA, for the role its spec asks for now, with a new
/// key made here. Returns the identity and its role.
pub async fn renew_certificate(
    manager_addrs: &[String],
    identity: &TlsIdentity,
) -> Result<(TlsIdentity, NodeRole), ManagerError> {
    let (key_pem, csr) = new_key_and_request()?;
    let response = with_any_manager(manager_addrs, identity, |channel| {
        let csr = csr.clone();
        async move {
            NodeCaClient::new(channel)
                .renew_node_certificate(RenewNodeCertificateRequest { csr })
                .await
        }
    })
    .await?
    .into_inner();
    let role = response.role();
    Ok((
        TlsIdentity {
            ca_pem: response.root_ca.into_bytes(),
            cert_pem: response.certificate.into_bytes(),
            key_pem: key_pem.into_bytes(),
        },
        role,
    ))
}
