//! Who may call what on the cluster port. The TLS layer accepts connections without a client
//! certificate (a joining node has none yet) and checks any certificate it is shown against the
//! cluster's root; these checks then decide per service:
//! - the CA's join call needs no certificate (the join token is the credential);
//! - the dispatcher and certificate renewal need a certificate of this cluster;
//! - Raft, Raft membership and the control API need a manager certificate of this cluster.
//!
//! A node removed from the swarm is refused whatever it shows: its id is on the cluster's
//! list of revoked certificates.

use std::sync::Arc;

use raft_store::Store;
use shoal_proto::api::NodeRole;
use tonic::{Request, Status};

use crate::objects;
use crate::peer::{PeerIdentity, identity_of_request};

/// The checks, for one cluster.
#[derive(Clone)]
pub(crate) struct ClusterAuth {
    store: Arc<Store>,
    cluster_id: String,
}

impl ClusterAuth {
    pub(crate) fn new(store: Arc<Store>, cluster_id: String) -> ClusterAuth {
        ClusterAuth { store, cluster_id }
    }

    /// The caller, provided it shows a certificate of this cluster that is not revoked.
    pub(crate) fn member<T>(&self, request: &Request<T>) -> Result<PeerIdentity, Status> {
        let caller = identity_of_request(request)?;
        if caller.cluster_id != self.cluster_id {
            return Err(Status::permission_denied(format!(
                "the caller's certificate is for cluster {:?}, not this one ({}): leave that swarm, then join this one",
                caller.cluster_id, self.cluster_id
            )));
        }
        let revoked = self.store.local_view(|view| {
            objects::cluster_of(view)
                .ok()
                .flatten()
                .is_some_and(|cluster| {
                    cluster
                        .blacklisted_certificates
                        .contains_key(&caller.node_id)
                })
        });
        if revoked {
            return Err(Status::permission_denied(format!(
                "node {} was removed from the swarm and its certificate is revoked: leave with 'shoal swarm leave --force', then join again",
                caller.node_id
            )));
        }
        Ok(caller)
    }

    /// The caller, provided it is a member with a manager certificate.
    pub(crate) fn manager<T>(&self, request: &Request<T>) -> Result<PeerIdentity, Status> {
        let caller = self.member(request)?;
        if caller.role != NodeRole::Manager {
            return Err(Status::permission_denied(format!(
                "node {} holds a worker certificate: only managers may call this; promote it with 'shoal node promote'",
                caller.node_id
            )));
        }
        Ok(caller)
    }

    /// An interceptor that lets only managers through, for services served whole to managers.
    pub(crate) fn managers_only(
        &self,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        let auth = self.clone();
        move |request: Request<()>| {
            auth.manager(&request)?;
            Ok(request)
        }
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
