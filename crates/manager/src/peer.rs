//! Who is calling on the cluster port: the node id, role and cluster a peer's certificate
//! names (CN, OU and O, as the CA issues them), and when it was issued. The TLS layer has
//! already checked that the certificate chains to the cluster's root; this reads what it says.

use std::time::{Duration, SystemTime};

use shoal_proto::api::NodeRole;
use tonic::Status;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::{issued_at, role_name};

/// What a peer's certificate says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node_id: String,
    pub role: NodeRole,
    pub cluster_id: String,
    /// When the CA issued the certificate (whole seconds, as certificates record time).
    pub issued_at: SystemTime,
}

/// Reads the identity from a DER certificate.
pub fn identity_of_certificate(der: &[u8]) -> Result<PeerIdentity, String> {
    let (_, certificate) = X509Certificate::from_der(der)
        .map_err(|error| format!("the certificate can't be read: {error}"))?;
    let subject = certificate.subject();
    let first = |values: Vec<&str>| values.first().map(|value| (*value).to_owned());
    let node_id = first(
        subject
            .iter_common_name()
            .filter_map(|name| name.as_str().ok())
            .collect(),
    )
    .ok_or("the certificate names no node (no CN)")?;
    let role_text = first(
        subject
            .iter_organizational_unit()
            .filter_map(|unit| unit.as_str().ok())
            .collect(),
    )
    .ok_or("the certificate names no role (no OU)")?;
    let role = [NodeRole::Manager, NodeRole::Worker]
        .into_iter()
        .find(|role| role_name(*role) == role_text)
        .ok_or_else(|| format!("the certificate's role {role_text:?} is not a swarm role"))?;
    let cluster_id = first(
        subject
            .iter_organization()
            .filter_map(|organization| organization.as_str().ok())
            .collect(),
    )
    .unwrap_or_default();
    let not_before = certificate.validity().not_before.timestamp();
    let not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(not_before.max(0).unsigned_abs());
    Ok(PeerIdentity {
        node_id,
        role,
        cluster_id,
        issued_at: issued_at(not_before),
    })
}

/// The identity of the peer that made `request`, from its client certificate.
pub fn identity_of_request<T>(request: &tonic::Request<T>) -> Result<PeerIdentity, Status> {
    let certificates = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated(
            "no client certificate: nodes call the cluster port with the certificate they got when they joined",
        )
    })?;
    let leaf = certificates.first().ok_or_else(|| {
        Status::unauthenticated("an empty client certificate chain: present the node certificate")
    })?;
    identity_of_certificate(leaf.as_ref())
        .map_err(|why| Status::unauthenticated(format!("client certificate refused: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{DEFAULT_NODE_CERT_LIFETIME, RootCa};

    fn der_of(pem: &str) -> Vec<u8> {
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        parsed.contents
    }

    #[test]
    fn node_certificates_name_their_node_role_and_cluster() {
        let ca = RootCa::generate().unwrap();
        for role in [NodeRole::Manager, NodeRole::Worker] {
            let before = SystemTime::now() - Duration::from_secs(1);
            let certificate = ca
                .issue("node-1", role, "cluster-9", DEFAULT_NODE_CERT_LIFETIME)
                .unwrap();
            let identity = identity_of_certificate(&der_of(&certificate.cert_pem)).unwrap();
            assert_eq!(
                identity,
                PeerIdentity {
                    node_id: "node-1".into(),
                    role,
                    cluster_id: "cluster-9".into(),
                    issued_at: identity.issued_at,
                }
            );
            // The moment of issue, read back to the second.
            let after = SystemTime::now() + Duration::from_secs(1);
            assert!(before <= identity.issued_at && identity.issued_at <= after);
        }
    }

    #[test]
    fn the_root_certificate_is_no_node() {
        let ca = RootCa::generate().unwrap();
        let error = identity_of_certificate(&der_of(&ca.cert_pem)).unwrap_err();
        assert!(error.contains("no role"), "{error}");
        assert!(
            identity_of_certificate(b"garbage")
                .unwrap_err()
                .contains("can't be read")
        );
    }
}
