//! Mutual TLS between managers. The caller supplies the PEM material; the cluster PKI that issues
//! it lives in the manager crate.

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The DNS name every manager certificate carries, as in Swarm. Clients check the server's
/// certificate against it, so only a manager can answer Raft traffic.
pub const MANAGER_SERVER_NAME: &str = "swarm-manager";

/// One member's TLS material: the cluster's root CA and the member's own certificate and key.
#[derive(Clone)]
pub struct TlsIdentity {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log line.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Server side: present our certificate and require a client certificate from the same CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(MANAGER_SERVER_NAME)
    }
}
