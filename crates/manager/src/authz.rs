//! Who may call what on the cluster port. The TLS layer accepts connections without a client
//! certificate (a joining node has none yet) and checks any certificate it is shown against the
//! cluster's root; these checks then decide per service:
//! - the CA's join call needs no certificate (the join token is the credential);
//! - the dispatcher and certificate renewal need a certificate of this cluster;
//! - the control API needs a manager certificate of a node this manager knows as a manager
//!   (its desired role) and that is a current member of the Raft group;
//! - Raft calls need a manager certificate, and votes and the calls only a leader serves
//!   (forwarded proposals and reads, membership changes) a current Raft member too;
//! - asking to join the Raft group needs a manager certificate (the call itself checks that the
//!   node is to be a manager).
//!
//! Replication (append entries, snapshots) is not held to membership: a member judges by its own
//! copy of the state, and a member that is behind (new, or back after a while) does not know the
//! leader that is catching it up yet; refusing it would leave it behind for good. What any copy
//! does know is whether a certificate was revoked, and demotion revokes the manager certificates
//! the node held, so those are refused by every manager call, replication included.
//!
//! A node removed from the swarm is refused whatever it shows: its id is on the cluster's list of
//! revoked certificates. A demoted node's entry revokes only its manager certificates issued
//! until its demotion: it keeps a worker's rights, so its daemon can renew to a worker
//! certificate with the old one.
//!
//! [`check_member`] and [`check_manager`] decide from facts; [`ClusterAuth`] looks them up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use raft_store::{RaftCall, RaftCallGuard, Store, StoreView};
use shoal_proto::api::{BlacklistedCertificate, Cluster, Node, NodeRole, Timestamp};
use tonic::{Request, Status};

use crate::objects::{self, ClusterObject as _};
use crate::peer::{PeerIdentity, identity_of_request};

/// What a manager-only call asks of its caller beyond a manager certificate that is not revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ManagerCall {
    /// The control API: known here as a manager, and a current Raft member.
    Control,
    /// Asking to join the Raft group: the call checks the role the node is to have.
    RaftJoin,
    /// One of the Raft service's calls.
    Raft(RaftCall),
}

impl ManagerCall {
    fn needs_raft_membership(self) -> bool {
        match self {
            ManagerCall::Control => true,
            ManagerCall::RaftJoin => false,
            ManagerCall::Raft(call) => match call {
                RaftCall::Vote
                | RaftCall::Propose
                | RaftCall::Read
                | RaftCall::ChangeMembership => true,
                RaftCall::AppendEntries | RaftCall::InstallSnapshot => false,
            },
        }
    }
}

/// What this manager's copy of the state says about the caller's node.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CallerRecord {
    /// The cluster's revocation entry for the node.
    pub(crate) revocation: Option<BlacklistedCertificate>,
    /// The role the cluster wants the node in; `None` when this copy does not know the node.
    pub(crate) desired_role: Option<NodeRole>,
    /// Whether the node's Raft member id is in this member's view of the Raft group (voter or
    /// learner).
    pub(crate) raft_member: bool,
}

fn seconds_of(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Whether `revocation` revokes the manager certificate issued at `issued_at` (compared in whole
/// seconds, the resolution certificates record).
fn revokes_manager_certificate(revocation: &BlacklistedCertificate, issued_at: SystemTime) -> bool {
    match &revocation.manager_issued_until {
        None => true,
        Some(until) => seconds_of(issued_at) <= until.seconds,
    }
}

/// The caller may make calls open to every node of this cluster (dispatcher, renewal).
pub(crate) fn check_member(
    caller: &PeerIdentity,
    this_cluster: &str,
    revocation: Option<&BlacklistedCertificate>,
) -> Result<(), Status> {
    if caller.cluster_id != this_cluster {
        return Err(Status::permission_denied(format!(
            "the caller's certificate is for cluster {:?}, not this one ({this_cluster}): leave that swarm, then join this one",
            caller.cluster_id
        )));
    }
    // A demoted node's entry leaves its worker rights alone.
    if revocation.is_some_and(|revocation| revocation.manager_issued_until.is_none()) {
        return Err(Status::permission_denied(format!(
            "node {} was removed from the swarm and its certificate is revoked: leave with 'shoal swarm leave --force', then join again",
            caller.node_id
        )));
    }
    Ok(())
}

/// The caller may make manager call `call`.
pub(crate) fn check_manager(
    call: ManagerCall,
    caller: &PeerIdentity,
    this_cluster: &str,
    record: &CallerRecord,
) -> Result<(), Status> {
    check_member(caller, this_cluster, record.revocation.as_ref())?;
    let node = &caller.node_id;
    if caller.role != NodeRole::Manager {
        return Err(Status::permission_denied(format!(
            "node {node} holds a worker certificate: only managers may call this; promote it with 'shoal node promote'"
        )));
    }
    if record
        .revocation
        .as_ref()
        .is_some_and(|revocation| revokes_manager_certificate(revocation, caller.issued_at))
    {
        return Err(Status::permission_denied(format!(
            "node {node} was demoted and its manager certificate is revoked: it has a worker's rights only (its daemon renews to a worker certificate by itself); to make it a manager again, run 'shoal node promote {node}'"
        )));
    }
    if call == ManagerCall::Control {
        match record.desired_role {
            Some(NodeRole::Manager) => {}
            Some(NodeRole::Worker) => {
                return Err(Status::permission_denied(format!(
                    "node {node} is not a manager: promote it with 'shoal node promote {node}'"
                )));
            }
            None => {
                return Err(Status::permission_denied(format!(
                    "node {node} is not known to this manager (yet): try again shortly, or call another manager"
                )));
            }
        }
    }
    if call.needs_raft_membership() && !record.raft_member {
        return Err(Status::permission_denied(format!(
            "node {node} is not a member of the managers' Raft group: a manager's daemon joins it by itself; if it was left out by 'swarm init --force-new-cluster', run 'shoal swarm leave --force' on it and join again"
        )));
    }
    Ok(())
}

/// Revokes every certificate of `node_id` (it is removed from the swarm) until they would have
/// expired, as of `now`.
pub(crate) fn revoke_every_certificate(cluster: &mut Cluster, node_id: &str, now: SystemTime) {
    let expiry = revocation_expiry(cluster, now);
    cluster.blacklisted_certificates.insert(
        node_id.to_owned(),
        BlacklistedCertificate {
            expiry: Some(expiry),
            manager_issued_until: None,
        },
    );
}

/// Revokes the manager certificates `node_id` was issued until `now` (it is demoted), leaving
/// it a worker's rights. A node whose every certificate is revoked stays so.
pub(crate) fn revoke_manager_certificates(cluster: &mut Cluster, node_id: &str, now: SystemTime) {
    let removed = cluster
        .blacklisted_certificates
        .get(node_id)
        .is_some_and(|revocation| revocation.manager_issued_until.is_none());
    if removed {
        return;
    }
    let expiry = revocation_expiry(cluster, now);
    cluster.blacklisted_certificates.insert(
        node_id.to_owned(),
        BlacklistedCertificate {
            expiry: Some(expiry),
            manager_issued_until: Some(Timestamp {
                seconds: seconds_of(now),
                nanos: 0,
            }),
        },
    );
}

/// A certificate issued until `now` has expired by then, whatever it is.
fn revocation_expiry(cluster: &Cluster, now: SystemTime) -> Timestamp {
    let lifetime: Duration = cluster
        .spec
        .as_ref()
        .and_then(|spec| spec.ca_config.as_ref())
        .and_then(|ca| ca.node_cert_expiry.as_ref())
        .map_or(
            crate::ca::DEFAULT_NODE_CERT_LIFETIME,
            spec::time::std_duration,
        );
    Timestamp {
        seconds: seconds_of(now + lifetime),
        nanos: 0,
    }
}

/// The checks, for one cluster: the facts they need, from this manager's store.
#[derive(Clone)]
pub(crate) struct ClusterAuth {
    store: Arc<Store>,
    cluster_id: String,
    /// The cluster object's revoked certificates, decoded once per version of the object:
    /// every call on the cluster port asks, each heartbeat of thousands of nodes included, and
    /// the object also carries the CA and the networks' keys.
    revocations: Arc<Mutex<Revocations>>,
}

/// The revoked certificates of one version of the cluster object.
#[derive(Default)]
struct Revocations {
    /// The Raft index that wrote that version; `None` before the first call.
    version: Option<u64>,
    by_node: HashMap<String, BlacklistedCertificate>,
}

impl ClusterAuth {
    pub(crate) fn new(store: Arc<Store>, cluster_id: String) -> ClusterAuth {
        ClusterAuth {
            store,
            cluster_id,
            revocations: Arc::default(),
        }
    }

    fn revocation_of(&self, node_id: &str) -> Option<BlacklistedCertificate> {
        self.store
            .local_view(|view| self.revocation_in(view, node_id))
    }

    /// `node_id`'s entry on the cluster's list of revoked certificates, as `view` has it. A
    /// cluster object that does not decode revokes nothing, as when there is none.
    fn revocation_in(&self, view: &StoreView<'_>, node_id: &str) -> Option<BlacklistedCertificate> {
        let record = view.list(Cluster::KIND).next()?;
        let mut revocations = self
            .revocations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if revocations.version != Some(record.version) {
            *revocations = Revocations {
                version: Some(record.version),
                by_node: objects::decode::<Cluster>(record)
                    .map(|cluster| cluster.blacklisted_certificates)
                    .unwrap_or_default(),
            };
        }
        revocations.by_node.get(node_id).cloned()
    }

    fn record_of(&self, node_id: &str) -> CallerRecord {
        let (revocation, desired_role) = self.store.local_view(|view| {
            let revocation = self.revocation_in(view, node_id);
            let desired_role = view
                .get(Node::KIND, node_id)
                .and_then(|record| objects::decode::<Node>(record).ok())
                .map(|node| {
                    node.spec
                        .as_ref()
                        .map_or(NodeRole::Worker, |spec| spec.desired_role())
                });
            (revocation, desired_role)
        });
        let member_id = crate::role::raft_member_id_for(node_id);
        let status = self.store.status();
        CallerRecord {
            revocation,
            desired_role,
            raft_member: status.voters.contains_key(&member_id)
                || status.learners.contains_key(&member_id),
        }
    }

    /// The caller, provided it shows a certificate of this cluster that is not revoked.
    pub(crate) fn member<T>(&self, request: &Request<T>) -> Result<PeerIdentity, Status> {
        let caller = identity_of_request(request)?;
        check_member(
            &caller,
            &self.cluster_id,
            self.revocation_of(&caller.node_id).as_ref(),
        )?;
        Ok(caller)
    }

    /// The caller, provided it may make manager call `call`.
    pub(crate) fn manager<T>(
        &self,
        call: ManagerCall,
        request: &Request<T>,
    ) -> Result<PeerIdentity, Status> {
        let caller = identity_of_request(request)?;
        check_manager(
            call,
            &caller,
            &self.cluster_id,
            &self.record_of(&caller.node_id),
        )?;
        Ok(caller)
    }

    /// An interceptor that lets through only the callers that may make `call`, for services
    /// served whole to managers.
    pub(crate) fn managers_only(
        &self,
        call: ManagerCall,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        let auth = self.clone();
        move |request: Request<()>| {
            auth.manager(call, &request)?;
            Ok(request)
        }
    }

    /// The guard of the Raft service: each call as [`ManagerCall::Raft`].
    pub(crate) fn raft_guard(&self) -> RaftCallGuard {
        let auth = self.clone();
        Arc::new(move |call: RaftCall, request: &Request<()>| {
            auth.manager(ManagerCall::Raft(call), request).map(|_| ())
        })
    }

    /// An interceptor that lets only members through.
    pub(crate) fn members_only(
        &self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        let auth = self.clone();
        move |request: Request<()>| {
            auth.member(&request)?;
            Ok(request)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "cluster-1";

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn caller(role: NodeRole, issued_at: SystemTime) -> PeerIdentity {
        PeerIdentity {
            node_id: "node-b".into(),
            role,
            cluster_id: CLUSTER.into(),
            issued_at,
        }
    }

    /// A current manager, as every copy of the state knows it.
    fn manager_record() -> CallerRecord {
        CallerRecord {
            revocation: None,
            desired_role: Some(NodeRole::Manager),
            raft_member: true,
        }
    }

    fn every_manager_call() -> Vec<ManagerCall> {
        let mut calls = vec![ManagerCall::Control, ManagerCall::RaftJoin];
        calls.extend(RaftCall::ALL.map(ManagerCall::Raft));
        calls
    }

    /// The cluster after demoting node-b at `when`.
    fn demoted_at(when: SystemTime) -> CallerRecord {
        let mut cluster = Cluster::default();
        revoke_manager_certificates(&mut cluster, "node-b", when);
        CallerRecord {
            revocation: cluster.blacklisted_certificates.get("node-b").cloned(),
            desired_role: Some(NodeRole::Worker),
            raft_member: false,
        }
    }

    #[test]
    fn a_current_manager_may_make_every_manager_call() {
        for call in every_manager_call() {
            check_manager(
                call,
                &caller(NodeRole::Manager, at(100)),
                CLUSTER,
                &manager_record(),
            )
            .unwrap();
        }
    }

    #[test]
    fn a_demoted_managers_old_certificate_is_refused_by_every_manager_call() {
        let record = demoted_at(at(1_000));
        for issued in [at(100), at(1_000)] {
            let old = caller(NodeRole::Manager, issued);
            for call in every_manager_call() {
                let refused = check_manager(call, &old, CLUSTER, &record).unwrap_err();
                assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{call:?}");
                assert!(refused.message().contains("demoted"), "{call:?}: {refused}");
                assert!(refused.message().contains("node promote"), "{refused}");
            }
            // Its worker rights stay, so that it can renew to a worker certificate.
            check_member(&old, CLUSTER, record.revocation.as_ref()).unwrap();
        }
        // Even a copy that has not seen the demotion's other changes refuses it.
        let behind = CallerRecord {
            desired_role: Some(NodeRole::Manager),
            raft_member: true,
            ..record.clone()
        };
        for call in every_manager_call() {
            assert!(
                check_manager(call, &caller(NodeRole::Manager, at(900)), CLUSTER, &behind).is_err()
            );
        }
    }

    #[test]
    fn a_node_promoted_again_is_a_manager_with_its_new_certificate() {
        let record = CallerRecord {
            desired_role: Some(NodeRole::Manager),
            raft_member: true,
            ..demoted_at(at(1_000))
        };
        for call in every_manager_call() {
            check_manager(
                call,
                &caller(NodeRole::Manager, at(1_001)),
                CLUSTER,
                &record,
            )
            .unwrap();
        }
    }

    #[test]
    fn removal_revokes_every_certificate_and_a_later_demotion_does_not_soften_it() {
        let mut cluster = Cluster::default();
        revoke_every_certificate(&mut cluster, "node-b", at(1_000));
        revoke_manager_certificates(&mut cluster, "node-b", at(2_000));
        let revocation = cluster.blacklisted_certificates.get("node-b").unwrap();
        assert_eq!(revocation.manager_issued_until, None);
        let refused = check_member(
            &caller(NodeRole::Worker, at(3_000)),
            CLUSTER,
            Some(revocation),
        )
        .unwrap_err();
        assert!(refused.message().contains("removed"), "{refused}");
        // The entry lasts as long as a certificate issued at the revocation could.
        let lifetime = crate::ca::DEFAULT_NODE_CERT_LIFETIME.as_secs() as i64;
        assert_eq!(
            revocation.expiry.as_ref().unwrap().seconds,
            1_000 + lifetime
        );
    }

    #[test]
    fn a_manager_certificate_of_a_node_that_is_to_be_a_worker_opens_no_control_call() {
        let record = CallerRecord {
            desired_role: Some(NodeRole::Worker),
            ..manager_record()
        };
        let refused = check_manager(
            ManagerCall::Control,
            &caller(NodeRole::Manager, at(5)),
            CLUSTER,
            &record,
        )
        .unwrap_err();
        assert!(refused.message().contains("not a manager"), "{refused}");
        let unknown = CallerRecord {
            desired_role: None,
            ..manager_record()
        };
        let refused = check_manager(
            ManagerCall::Control,
            &caller(NodeRole::Manager, at(5)),
            CLUSTER,
            &unknown,
        )
        .unwrap_err();
        assert!(refused.message().contains("not known"), "{refused}");
    }

    #[test]
    fn raft_membership_is_required_except_to_catch_up_or_to_join() {
        let outsider = CallerRecord {
            raft_member: false,
            ..manager_record()
        };
        let manager = caller(NodeRole::Manager, at(5));
        for call in every_manager_call() {
            let checked = check_manager(call, &manager, CLUSTER, &outsider);
            let open = matches!(
                call,
                ManagerCall::RaftJoin
                    | ManagerCall::Raft(RaftCall::AppendEntries | RaftCall::InstallSnapshot)
            );
            assert_eq!(checked.is_ok(), open, "{call:?}: {checked:?}");
            if let Err(refused) = checked {
                assert!(refused.message().contains("Raft group"), "{refused}");
                assert!(
                    refused.message().contains("swarm leave --force"),
                    "{refused}"
                );
            }
        }
        // A member that does not know the leader yet (new, or far behind) is caught up.
        let knows_nothing = CallerRecord::default();
        check_manager(
            ManagerCall::Raft(RaftCall::AppendEntries),
            &manager,
            CLUSTER,
            &knows_nothing,
        )
        .unwrap();
    }

    #[test]
    fn worker_and_foreign_certificates_open_no_manager_call() {
        for call in every_manager_call() {
            let refused = check_manager(
                call,
                &caller(NodeRole::Worker, at(5)),
                CLUSTER,
                &manager_record(),
            )
            .unwrap_err();
            assert!(
                refused.message().contains("worker certificate"),
                "{refused}"
            );
            let foreign = PeerIdentity {
                cluster_id: "cluster-2".into(),
                ..caller(NodeRole::Manager, at(5))
            };
            let refused = check_manager(call, &foreign, CLUSTER, &manager_record()).unwrap_err();
            assert!(refused.message().contains("not this one"), "{refused}");
        }
    }
}
