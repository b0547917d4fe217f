//! The control API as the daemon's local socket serves it: every call goes to the manager role
//! when this node has one running, and is refused with what to do when it has none (a worker, a
//! daemon not in a swarm yet) or when its manager is locked (autolock, after a restart).

use std::sync::{Arc, RwLock};

use shoal_proto::api::control_server::Control;
use shoal_proto::api::*;
use tonic::{Request, Response, Status};

use super::ControlApi;
use crate::data_key::SWARM_LOCKED;

#[derive(Clone, Default)]
enum GateState {
    #[default]
    NotManager,
    /// A manager whose data key is sealed until `swarm unlock`.
    Locked,
    Open(ControlApi),
}

/// Holds the node's control API once it is a manager.
#[derive(Clone, Default)]
pub struct ControlGate {
    state: Arc<RwLock<GateState>>,
}

impl ControlGate {
    /// Opens the gate to a manager's control API, or closes it with `None`.
    pub fn set(&self, control: Option<ControlApi>) {
        self.replace(control.map_or(GateState::NotManager, GateState::Open));
    }

    /// Closes the gate because this node's manager is locked: calls are refused with how to
    /// unlock it.
    pub fn set_locked(&self) {
        self.replace(GateState::Locked);
    }

    fn replace(&self, state: GateState) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    fn active(&self) -> Result<ControlApi, Status> {
        match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
            GateState::Open(control) => Ok(control.clone()),
            GateState::Locked => Err(Status::failed_precondition(SWARM_LOCKED)),
            GateState::NotManager => Err(Status::failed_precondition(
                "this node is not a swarm manager: run 'shoal swarm init' to make it one, or run the command on a manager",
            )),
        }
    }
}

// async_trait rewrites the methods it sees, so the macro writes the whole impl block.
macro_rules! delegate_control {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        #[tonic::async_trait]
        impl Control for ControlGate {
            $(
                async fn $method(
                    &self,
                    request: Request<$request>,
                ) -> Result<Response<$response>, Status> {
                    Control::$method(&self.active()?, request).await
                }
            )*

            type ServiceLogsStream = <ControlApi as Control>::ServiceLogsStream;

            async fn service_logs(
                &self,
                request: Request<ServiceLogsRequest>,
            ) -> Result<Response<Self::ServiceLogsStream>, Status> {
                Control::service_logs(&self.active()?, request).await
            }

            type ServiceProgressStream = <ControlApi as Control>::ServiceProgressStream;

            async fn service_progress(
                &self,
                request: Request<ServiceProgressRequest>,
            ) -> Result<Response<Self::ServiceProgressStream>, Status> {
                Control::service_progress(&self.active()?, request).await
            }
        }
    };
}

delegate_control! {
    get_cluster(GetClusterRequest) -> ClusterResponse;
    update_cluster(UpdateClusterRequest) -> ClusterResponse;
    get_unlock_key(GetUnlockKeyRequest) -> GetUnlockKeyResponse;
    list_nodes(ListNodesRequest) -> ListNodesResponse;
    get_node(GetNodeRequest) -> NodeResponse;
    update_node(UpdateNodeRequest) -> NodeResponse;
    remove_node(RemoveNodeRequest) -> RemoveNodeResponse;
    create_secret(CreateSecretRequest) -> SecretResponse;
    get_secret(GetSecretRequest) -> SecretResponse;
    list_secrets(ListSecretsRequest) -> ListSecretsResponse;
    remove_secret(RemoveSecretRequest) -> RemoveSecretResponse;
    update_secret(UpdateSecretRequest) -> SecretResponse;
    create_config(CreateConfigRequest) -> ConfigResponse;
    get_config(GetConfigRequest) -> ConfigResponse;
    list_configs(ListConfigsRequest) -> ListConfigsResponse;
    remove_config(RemoveConfigRequest) -> RemoveConfigResponse;
    update_config(UpdateConfigRequest) -> ConfigResponse;
    create_service(CreateServiceRequest) -> ServiceResponse;
    get_service(GetServiceRequest) -> ServiceResponse;
    list_services(ListServicesRequest) -> ListServicesResponse;
    update_service(UpdateServiceRequest) -> ServiceResponse;
    remove_service(RemoveServiceRequest) -> RemoveServiceResponse;
    list_tasks(ListTasksRequest) -> ListTasksResponse;
    get_task(GetTaskRequest) -> TaskResponse;
    deploy_stack(DeployStackRequest) -> DeployStackResponse;
    list_stacks(ListStacksRequest) -> ListStacksResponse;
    remove_stack(RemoveStackRequest) -> StackChangesResponse;
    rollback_stack(RollbackStackRequest) -> DeployStackResponse;
    create_network(CreateNetworkRequest) -> NetworkResponse;
    get_network(GetNetworkRequest) -> NetworkResponse;
    list_networks(ListNetworksRequest) -> ListNetworksResponse;
    remove_network(RemoveNetworkRequest) -> RemoveNetworkResponse;
    prune_networks(PruneNetworksRequest) -> PruneNetworksResponse;
}
