//! The cluster port's membership services: the CA that admits joining nodes and renews
//! certificates ([`NodeCaService`]), and the managers' Raft group as nodes change it
//! ([`RaftMembershipService`]). Both run on every manager; their writes reach the leader through
//! the store.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_store::{Store, Transaction};
use shoal_proto::api::node_ca_server::NodeCa;
use shoal_proto::api::raft_membership_server::RaftMembership;
use shoal_proto::api::{
    Cluster, IssueNodeCertificateRequest, IssueNodeCertificateResponse, ManagerStatus, Node,
    NodeDescription, NodeRole, NodeSpec, NodeStatus, RaftJoinRequest, RaftJoinResponse,
    RenewNodeCertificateRequest, RenewNodeCertificateResponse, RootRotation, node_spec,
    node_status, raft_member_status,
};
use tonic::{Request, Response, Status};

use crate::authz::{ClusterAuth, ManagerCall};
use crate::ca::{DEFAULT_NODE_CERT_LIFETIME, RootCa};
use crate::error::ManagerError;
use crate::join_token::JoinToken;
use crate::objects::{self, ClusterObject};
use crate::rate_limit::{PerSourceLimiter, Rate};
use crate::view::shared::SharedView;
use spec::time::std_duration;

fn read_cluster(store: &Store) -> Result<Cluster, ManagerError> {
    store.local_view(objects::cluster_of)?.ok_or_else(|| {
        ManagerError::FailedPrecondition(
            "this manager holds no cluster object yet: try another manager".to_owned(),
        )
    })
}

fn read_node(store: &Store, node_id: &str) -> Result<Option<Node>, ManagerError> {
    store.local_view(|view| {
        view.get(Node::KIND, node_id)
            .map(objects::decode::<Node>)
            .transpose()
    })
}

/// The cluster's CA as the cluster object holds it: the root that signs now (the new one during
/// a root rotation), what issued certificates carry after them, and the roots nodes trust.
pub(crate) struct ClusterCa {
    pub(crate) signer: RootCa,
    /// During a rotation, the new root cross-signed by the old, so that nodes still trusting
    /// only the old root accept certificates from the new one; empty otherwise.
    pub(crate) cross_signed: String,
    /// PEM: the root, or during a rotation the old and the new root.
    pub(crate) trust: String,
    pub(crate) lifetime: Duration,
}

impl ClusterCa {
    /// Signs a node certificate for a CSR; the result carries the cross-signed root if any.
    pub(crate) fn sign(
        &self,
        csr: &str,
        node_id: &str,
        role: NodeRole,
        cluster_id: &str,
    ) -> Result<String, ManagerError> {
        let leaf = self
            .signer
            .sign_request(csr, node_id, role, cluster_id, self.lifetime)?;
        Ok(format!("{leaf}{}", self.cross_signed))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The roots nodes trust now (PEM): during a root rotation, the old and the new.
pub(crate) fn trust_bundle(cluster: &Cluster) -> String {
    let Some(root) = cluster.root_ca.as_ref() else {
        return String::new();
    };
    let mut trust = text(&root.ca_cert);
    if let Some(rotation) = root.root_rotation.as_ref() {
        trust.push_str(&text(&rotation.ca_cert));
    }
    trust
}

pub(crate) fn cluster_ca(cluster: &Cluster) -> Result<ClusterCa, ManagerError> {
    let root = cluster.root_ca.as_ref().ok_or_else(|| {
        ManagerError::FailedPrecondition("the cluster object holds no root CA".to_owned())
    })?;
    let (cert, key, cross_signed) = match root.root_rotation.as_ref() {
        Some(rotation) => (
            &rotation.ca_cert,
            &rotation.ca_key,
            text(&rotation.cross_signed_ca_cert),
        ),
        None => (&root.ca_cert, &root.ca_key, String::new()),
    };
    if key.is_empty() {
        return Err(ManagerError::FailedPrecondition(
            "the cluster's CA key is not available on this manager".to_owned(),
        ));
    }
    let lifetime = cluster
        .spec
        .as_ref()
        .and_then(|spec| spec.ca_config.as_ref())
        .and_then(|ca| ca.node_cert_expiry.as_ref())
        .map(std_duration)
        .filter(|lifetime| !lifetime.is_zero())
        .unwrap_or(DEFAULT_NODE_CERT_LIFETIME);
    Ok(ClusterCa {
        signer: RootCa::from_pem(text(cert), text(key)),
        cross_signed,
        trust: trust_bundle(cluster),
        lifetime,
    })
}

/// Starts moving `cluster` to a new root CA: a new root signs from now on, with its certificate
/// cross-signed by the old root so that nodes not yet moved accept what it signs, and nodes trust
/// both until [`nodes_left_to_rotate`] is empty. The join tokens name the new root from now on;
/// their secrets stay.
pub(crate) fn start_root_rotation(cluster: &mut Cluster) -> Result<(), ManagerError> {
    let root = cluster.root_ca.get_or_insert_with(Default::default);
    if root.root_rotation.is_some() {
        return Err(ManagerError::FailedPrecondition(
            "a root CA rotation is already under way: wait for every node to move to the new root ('shoal swarm ca' shows the root in use)".to_owned(),
        ));
    }
    let current = RootCa::from_pem(text(&root.ca_cert), text(&root.ca_key));
    let next = RootCa::generate()?;
    let cross_signed = current.cross_sign(&next)?;
    let next_der = crate::ca::pem_to_der(&next.cert_pem)?;
    let tokens = root.join_tokens.get_or_insert_with(Default::default);
    for token in [&mut tokens.worker, &mut tokens.manager] {
        if let Ok(mut parsed) = JoinToken::parse(token) {
            parsed.ca_digest = crate::join_token::ca_digest(&next_der);
            *token = parsed.to_string();
        }
    }
    root.root_rotation = Some(RootRotation {
        ca_cert: next.cert_pem.clone().into_bytes(),
        ca_key: next.key_pem().as_bytes().to_vec(),
        cross_signed_ca_cert: cross_signed.into_bytes(),
    });
    Ok(())
}

/// The nodes (ids) whose last session showed no certificate from the new root, while a root
/// rotation is under way; down nodes are not waited for. Empty: the rotation can finish.
pub(crate) fn nodes_left_to_rotate(cluster: &Cluster, nodes: &[Node]) -> Vec<String> {
    spec::root_rotation::root_rotation_progress(cluster, nodes)
        .map(|progress| progress.left)
        .unwrap_or_default()
}

/// Ends a root rotation: the new root becomes the only one.
pub(crate) fn finish_root_rotation(cluster: &mut Cluster) -> Result<(), ManagerError> {
    let root = cluster.root_ca.get_or_insert_with(Default::default);
    let rotation = root.root_rotation.take().ok_or_else(|| {
        ManagerError::FailedPrecondition("no root CA rotation is under way".to_owned())
    })?;
    root.ca_cert_hash =
        crate::join_token::ca_digest(&crate::ca::pem_to_der(&text(&rotation.ca_cert))?);
    root.ca_cert = rotation.ca_cert;
    root.ca_key = rotation.ca_key;
    Ok(())
}

/// The role a join token grants in `cluster`, or why it grants none.
fn role_for_token(cluster: &Cluster, token: &str) -> Result<NodeRole, ManagerError> {
    let parsed = JoinToken::parse(token)?;
    let tokens = cluster
        .root_ca
        .as_ref()
        .and_then(|root| root.join_tokens.clone())
        .unwrap_or_default();
    // Both are compared, whichever matches, so the time taken doesn't tell which role a
    // token was close to.
    let (worker, manager) = (parsed.is(&tokens.worker), parsed.is(&tokens.manager));
    if worker {
        Ok(NodeRole::Worker)
    } else if manager {
        Ok(NodeRole::Manager)
    } else {
        Err(ManagerError::PermissionDenied(
            "the join token is not valid for this swarm (it may have been rotated): get the current one with 'shoal swarm join-token worker' (or manager) on a manager".to_owned(),
        ))
    }
}

/// Cluster-port addresses of the managers the cluster view knows (it indexes them: decoding
/// every node at each join made joining n nodes cost n² decodes).
fn manager_addrs(view: &SharedView) -> Vec<String> {
    view.read(|view| {
        view.managers()
            .filter_map(|node| node.manager_status.as_ref())
            .map(|status| status.addr.clone())
            .filter(|addr| !addr.is_empty())
            .collect()
    })
}

/// Join attempts (`IssueNodeCertificate`, the one call on the cluster port that needs no
/// certificate) per source address: enough for a burst of nodes behind one address, too few to
/// guess a token or to flood the CA with signing work.
const JOIN_ATTEMPT_RATE: Rate = Rate {
    per_second: 2.0,
    burst: 20.0,
};
/// Source addresses whose join attempts are remembered at once.
const JOIN_SOURCES_TRACKED: usize = 10_000;

/// Takes one join attempt from `source`'s allowance, or says when to try again.
fn admit_join_attempt(
    limiter: &mut PerSourceLimiter<Option<IpAddr>>,
    source: Option<IpAddr>,
    now: Instant,
) -> Result<(), ManagerError> {
    limiter.take(&source, now).map_err(|wait| {
        ManagerError::ResourceExhausted(format!(
            "too many join attempts from {}: the limit is {} a second in bursts of {}; retry in {} ms",
            source.map_or_else(|| "this address".to_owned(), |ip| ip.to_string()),
            JOIN_ATTEMPT_RATE.per_second,
            JOIN_ATTEMPT_RATE.burst,
            wait.as_millis().max(1)
        ))
    })
}

/// The CA on the cluster port.
#[derive(Clone)]
pub(crate) struct NodeCaService {
    store: Arc<Store>,
    view: Arc<SharedView>,
    auth: ClusterAuth,
    join_attempts: Arc<Mutex<PerSourceLimiter<Option<IpAddr>>>>,
}

impl NodeCaService {
    pub(crate) fn new(
        store: Arc<Store>,
        view: Arc<SharedView>,
        auth: ClusterAuth,
    ) -> NodeCaService {
        NodeCaService {
            store,
            view,
            auth,
            join_attempts: Arc::new(Mutex::new(PerSourceLimiter::new(
                JOIN_ATTEMPT_RATE,
                JOIN_SOURCES_TRACKED,
            ))),
        }
    }

    async fn admit(
        &self,
        request: IssueNodeCertificateRequest,
        peer_ip: Option<String>,
    ) -> Result<IssueNodeCertificateResponse, ManagerError> {
        let cluster = read_cluster(&self.store)?;
        let role = role_for_token(&cluster, &request.token)?;
        let ca = cluster_ca(&cluster)?;
        let node_id = raft_store::new_object_id();
        let certificate = ca.sign(&request.csr, &node_id, role, &cluster.id)?;
        let node = Node {
            id: node_id.clone(),
            spec: Some(NodeSpec {
                desired_role: role as i32,
                membership: node_spec::Membership::Accepted as i32,
                availability: node_spec::Availability::Active as i32,
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: request.hostname.clone(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: node_status::State::Unknown as i32,
                message: String::new(),
                addr: peer_ip.unwrap_or_default(),
            }),
            // A manager counts as one once it is in the Raft group (RaftMembership.Join).
            role: NodeRole::Worker as i32,
            ..Default::default()
        };
        self.store
            .write(Transaction::new(vec![objects::create(&node)]))
            .await?;
        tracing::info!(node = %node_id, hostname = %request.hostname, ?role, "node admitted");
        Ok(IssueNodeCertificateResponse {
            node_id,
            cluster_id: cluster.id,
            certificate,
            role: role as i32,
            manager_addrs: manager_addrs(&self.view),
            root_ca: ca.trust,
        })
    }

    async fn renew(
        &self,
        node_id: &str,
        request: RenewNodeCertificateRequest,
    ) -> Result<RenewNodeCertificateResponse, ManagerError> {
        let cluster = read_cluster(&self.store)?;
        let node = read_node(&self.store, node_id)?.ok_or_else(|| {
            ManagerError::PermissionDenied(format!(
                "node {node_id} is not a member of this swarm: join it with 'shoal swarm join'"
            ))
        })?;
        let role = node
            .spec
            .as_ref()
            .map_or(NodeRole::Worker, |spec| spec.desired_role());
        let ca = cluster_ca(&cluster)?;
        let certificate = ca.sign(&request.csr, node_id, role, &cluster.id)?;
        Ok(RenewNodeCertificateResponse {
            certificate,
            role: role as i32,
            root_ca: ca.trust,
        })
    }
}

#[tonic::async_trait]
impl NodeCa for NodeCaService {
    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        let source = request.remote_addr().map(|addr| addr.ip());
        admit_join_attempt(
            &mut self
                .join_attempts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            source,
            Instant::now(),
        )?;
        let peer_ip = source.map(|ip| ip.to_string());
        Ok(Response::new(
            self.admit(request.into_inner(), peer_ip).await?,
        ))
    }

    async fn renew_node_certificate(
        &self,
        request: Request<RenewNodeCertificateRequest>,
    ) -> Result<Response<RenewNodeCertificateResponse>, Status> {
        let caller = self.auth.member(&request)?;
        Ok(Response::new(
            self.renew(&caller.node_id, request.into_inner()).await?,
        ))
    }
}

/// Raft membership on the cluster port.
#[derive(Clone)]
pub(crate) struct RaftMembershipService {
    store: Arc<Store>,
    auth: ClusterAuth,
}

impl RaftMembershipService {
    pub(crate) fn new(store: Arc<Store>, auth: ClusterAuth) -> RaftMembershipService {
        RaftMembershipService { store, auth }
    }

    async fn join(&self, node_id: &str, request: RaftJoinRequest) -> Result<(), ManagerError> {
        let node = read_node(&self.store, node_id)?.ok_or_else(|| ManagerError::NotFound {
            kind: "node",
            reference: node_id.to_owned(),
        })?;
        let desired = node
            .spec
            .as_ref()
            .map_or(NodeRole::Worker, |spec| spec.desired_role());
        if desired != NodeRole::Manager {
            return Err(ManagerError::PermissionDenied(format!(
                "node {node_id} is not to be a manager: promote it first with 'shoal node promote'"
            )));
        }
        if request.raft_id == 0 || request.addr.is_empty() {
            return Err(ManagerError::InvalidArgument(
                "a Raft join needs the member id and the address it is reached at".to_owned(),
            ));
        }
        let status = self.store.status();
        if !status.voters.contains_key(&request.raft_id) {
            self.store
                .add_learner(request.raft_id, request.addr.clone())
                .await?;
            self.store.promote(request.raft_id).await?;
        }
        objects::update_node(&self.store, node_id, |node| {
            node.role = NodeRole::Manager as i32;
            node.manager_status = Some(ManagerStatus {
                raft_id: request.raft_id,
                addr: request.addr.clone(),
                leader: false,
                reachability: raft_member_status::Reachability::Reachable as i32,
            });
        })
        .await?
        .ok_or_else(|| ManagerError::NotFound {
            kind: "node",
            reference: node_id.to_owned(),
        })?;
        tracing::info!(node = %node_id, member = request.raft_id, addr = %request.addr, "manager joined the Raft group");
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftMembership for RaftMembershipService {
    async fn join(
        &self,
        request: Request<RaftJoinRequest>,
    ) -> Result<Response<RaftJoinResponse>, Status> {
        let caller = self.auth.manager(ManagerCall::RaftJoin, &request)?;
        self.join(&caller.node_id, request.into_inner()).await?;
        Ok(Response::new(RaftJoinResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::api::{Certificate, RootCa as RootCaObject};

    #[test]
    fn join_attempts_are_limited_per_source_address() {
        let mut limiter = PerSourceLimiter::new(JOIN_ATTEMPT_RATE, JOIN_SOURCES_TRACKED);
        let now = Instant::now();
        let guesser: Option<IpAddr> = "192.0.2.7".parse().ok();
        for _ in 0..20 {
            admit_join_attempt(&mut limiter, guesser, now).unwrap();
        }
        let refusal = admit_join_attempt(&mut limiter, guesser, now)
            .unwrap_err()
            .to_string();
        assert!(
            refusal.contains("too many join attempts from 192.0.2.7"),
            "{refusal}"
        );
        assert!(refusal.contains("retry in 500 ms"), "{refusal}");
        // Another address is not held back by the first.
        admit_join_attempt(&mut limiter, "192.0.2.8".parse().ok(), now).unwrap();
        // Half a second later the guesser has one more attempt.
        admit_join_attempt(&mut limiter, guesser, now + Duration::from_millis(500)).unwrap();
    }

    #[test]
    fn a_root_rotation_waits_for_every_node_that_is_not_down() {
        let old = RootCa::generate().unwrap();
        let mut cluster = Cluster {
            root_ca: Some(RootCaObject {
                ca_cert: old.cert_pem.clone().into_bytes(),
                ca_key: old.key_pem().as_bytes().to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let node = |id: &str, signer: &RootCa, state: node_status::State| Node {
            id: id.to_owned(),
            status: Some(NodeStatus {
                state: state as i32,
                ..Default::default()
            }),
            certificate: Some(Certificate {
                certificate: signer
                    .issue(id, NodeRole::Worker, "cluster", Duration::from_secs(3600))
                    .unwrap()
                    .cert_pem
                    .into_bytes(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let nodes = |next: &RootCa| {
            vec![
                node("moved", next, node_status::State::Ready),
                node("behind", &old, node_status::State::Ready),
                node("down", &old, node_status::State::Down),
                Node {
                    id: "no-certificate".to_owned(),
                    ..Default::default()
                },
            ]
        };
        assert!(nodes_left_to_rotate(&cluster, &nodes(&old)).is_empty());

        start_root_rotation(&mut cluster).unwrap();
        let rotation = cluster
            .root_ca
            .as_ref()
            .and_then(|root| root.root_rotation.clone())
            .unwrap();
        let next = RootCa::from_pem(
            text(&rotation.ca_cert),
            String::from_utf8(rotation.ca_key).unwrap(),
        );
        assert_eq!(
            nodes_left_to_rotate(&cluster, &nodes(&next)),
            ["behind", "no-certificate"]
        );
    }
}
