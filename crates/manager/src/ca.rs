//! The cluster's certificate authority: a root CA made by `swarm init` and the node certificates
//! it signs. Certificates follow Swarm's shape: ECDSA P-256, CN = node id, OU = the node's role
//! (`swarm-manager` or `swarm-worker`), O = cluster id, and the role as a DNS name so that a
//! client can insist on talking to a manager.

use std::time::{Duration, SystemTime};

use raft_store::TlsIdentity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use shoal_proto::api::NodeRole;

use crate::error::ManagerError;

/// Swarm's root CA lifetime: 20 years.
pub const ROOT_CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Swarm's node certificate lifetime: 90 days.
pub const DEFAULT_NODE_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// The root CA's common name, as in Swarm.
const ROOT_CA_COMMON_NAME: &str = "swarm-ca";
/// Certificates are valid from a little before they are made, so a peer whose clock runs
/// slightly behind still accepts them.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

/// When a node certificate was issued, from the start of its validity: the CA starts validity
/// [`CLOCK_SKEW_ALLOWANCE`] before the moment it signs.
pub fn issued_at(not_before: SystemTime) -> SystemTime {
    not_before + CLOCK_SKEW_ALLOWANCE
}

/// The role name a node certificate carries as its OU and DNS name.
pub fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => raft_store::MANAGER_SERVER_NAME,
        NodeRole::Worker => "swarm-worker",
    }
}

/// The DER bytes of the first certificate in `pem`.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, ManagerError> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map(|(_, block)| block.contents)
        .map_err(|error| ManagerError::Pki(format!("a certificate can't be read: {error}")))
}

/// When a PEM certificate stops being valid, in seconds since the Unix epoch, and when it started.
pub fn validity_of(pem: &str) -> Result<(i64, i64), ManagerError> {
    let der = pem_to_der(pem)?;
    let (_, certificate) = x509_parser::parse_x509_certificate(&der)
        .map_err(|error| ManagerError::Pki(format!("a certificate can't be read: {error}")))?;
    let validity = certificate.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// The root CA: its certificate, and its key on managers.
#[derive(Clone)]
pub struct RootCa {
    pub cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log line.
        f.debug_struct("RootCa").finish_non_exhaustive()
    }
}

/// A node's certificate and key, signed by the root CA.
#[derive(Clone)]
pub struct NodeCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCertificate").finish_non_exhaustive()
    }
}

fn pki_error(what: &str, error: rcgen::Error) -> ManagerError {
    ManagerError::Pki(format!("{what}: {error}"))
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + lifetime;
}

/// The CA's parameters. Rebuilt identically whenever the CA signs, so that the issuer name and
/// key identifier of every node certificate match the root certificate's.
fn root_params() -> Result<CertificateParams, ManagerError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|error| pki_error("root CA parameters", error))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params
        .distinguished_name
        .push(DnType::CommonName, ROOT_CA_COMMON_NAME);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl RootCa {
    /// A fresh root CA (ECDSA P-256, 20 years).
    pub fn generate() -> Result<RootCa, ManagerError> {
        let key = KeyPair::generate().map_err(|error| pki_error("generating the CA key", error))?;
        let mut params = root_params()?;
        validity(&mut params, ROOT_CA_LIFETIME);
        let cert = params
            .self_signed(&key)
            .map_err(|error| pki_error("self-signing the root CA", error))?;
        Ok(RootCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA as stored in the cluster object.
    pub fn from_pem(cert_pem: String, key_pem: String) -> RootCa {
        RootCa { cert_pem, key_pem }
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Signs a new certificate and key for a node.
    pub fn issue(
        &self,
        node_id: &str,
        role: NodeRole,
        cluster_id: &str,
        lifetime: Duration,
    ) -> Result<NodeCertificate, ManagerError> {
        let key = KeyPair::generate().map_err(|error| pki_error("generating a node key", error))?;
        let cert = self.sign(node_params(node_id, role, cluster_id, lifetime)?, &key)?;
        Ok(NodeCertificate {
            cert_pem: cert,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a node certificate for the public key of a PKCS#10 request (PEM). Only the key is
    /// taken from the request: the subject, names and lifetime are the CA's to choose.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: NodeRole,
        cluster_id: &str,
        lifetime: Duration,
    ) -> Result<String, ManagerError> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|error| {
            ManagerError::InvalidArgument(format!(
                "the certificate signing request can't be used: {error}"
            ))
        })?;
        let signed = CertificateSigningRequestParams {
            params: node_params(node_id, role, cluster_id, lifetime)?,
            public_key: request.public_key,
        };
        let (ca_key, ca_params) = self.signing_key()?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        signed
            .signed_by(&issuer)
            .map(|cert| cert.pem())
            .map_err(|error| pki_error("signing a node certificate", error))
    }

    /// `next`'s root certificate re-signed by this CA: same subject and key as `next`, but
    /// chaining to this root. During a root rotation, certificates signed by `next` carry it, so
    /// nodes that still trust only this root accept them.
    pub fn cross_sign(&self, next: &RootCa) -> Result<String, ManagerError> {
        let next_key = KeyPair::from_pem(&next.key_pem)
            .map_err(|error| pki_error("reading the new CA key", error))?;
        let mut params = root_params()?;
        validity(&mut params, ROOT_CA_LIFETIME);
        self.sign(params, &next_key)
    }

    fn signing_key(&self) -> Result<(KeyPair, CertificateParams), ManagerError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)
            .map_err(|error| pki_error("reading the CA key", error))?;
        Ok((ca_key, root_params()?))
    }

    fn sign(&self, params: CertificateParams, key: &KeyPair) -> Result<String, ManagerError> {
        let (ca_key, ca_params) = self.signing_key()?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        params
            .signed_by(key, &issuer)
            .map(|cert| cert.pem())
            .map_err(|error| pki_error("signing a node certificate", error))
    }
}

/// A node certificate's parameters: Swarm's subject, the role and node id as DNS names, and
/// both TLS usages (every node is a client, and managers serve).
fn node_params(
    node_id: &str,
    role: NodeRole,
    cluster_id: &str,
    lifetime: Duration,
) -> Result<CertificateParams, ManagerError> {
    let mut params = CertificateParams::new(vec![role_name(role).to_owned(), node_id.to_owned()])
        .map_err(|error| pki_error("node certificate parameters", error))?;
    params.distinguished_name.push(DnType::CommonName, node_id);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, role_name(role));
    params
        .distinguished_name
        .push(DnType::OrganizationName, cluster_id);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, lifetime);
    Ok(params)
}

/// A fresh node key and a certificate signing request for it, both PEM: what a node sends the CA
/// when it joins or renews. The key never leaves the node.
pub fn new_key_and_request() -> Result<(String, String), ManagerError> {
    let key = KeyPair::generate().map_err(|error| pki_error("generating a node key", error))?;
    let request = CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(&key))
        .and_then(|request| request.pem())
        .map_err(|error| pki_error("making a certificate signing request", error))?;
    Ok((key.serialize_pem(), request))
}

impl NodeCertificate {
    /// The TLS identity this certificate gives its node, trusting `root`.
    pub fn tls_identity(&self, root_cert_pem: &str) -> TlsIdentity {
        TlsIdentity {
            ca_pem: root_cert_pem.as_bytes().to_vec(),
            cert_pem: self.cert_pem.as_bytes().to_vec(),
            key_pem: self.key_pem.as_bytes().to_vec(),
        }
    }
}
