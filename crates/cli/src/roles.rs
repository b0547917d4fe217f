//! The daemon's swarm roles: the worker agent every node in a swarm runs, and the manager role
//! after `swarm init`. Serves the node-local `Swarm` API (init, info) and opens the control
//! gate once this node manages. Wiring only: the decisions live in `manager` and `worker`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::LocalEngine;
use manager::{ControlGate, InitOptions, ManagerRole, Membership, MembershipRole, SwarmDir};
use raft_store::TlsIdentity;
use shoal_proto::api::swarm_server::Swarm;
use shoal_proto::api::{InfoRequest, InfoResponse, InitRequest, InitResponse, info_response};
use tokio::sync::{Mutex, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use worker::{AgentConfig, DispatcherConnector};

/// The version every node reports as its engine version.
pub(crate) const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long one attempt to reach a manager may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reaches the managers' dispatcher over mutual TLS with the node's certificate, trying each
/// known manager in turn.
struct ManagerConnector {
    manager_addrs: Vec<String>,
    identity: TlsIdentity,
    next: std::sync::atomic::AtomicUsize,
}

impl DispatcherConnector for ManagerConnector {
    async fn connect(&self) -> Result<Channel, String> {
        if self.manager_addrs.is_empty() {
            return Err("this node knows no manager to connect to".to_owned());
        }
        let index =
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.manager_addrs.len();
        let addr = &self.manager_addrs[index];
        Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|error| format!("manager address {addr}: {error}"))?
            .tls_config(self.identity.client_config())
            .map_err(|error| format!("TLS settings for {addr}: {error}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|error| format!("connecting to the manager at {addr}: {error}"))
    }
}

struct RunningAgent {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct RoleState {
    membership: Option<Membership>,
    manager: Option<ManagerRole>,
    agent: Option<RunningAgent>,
}

/// The node's roles in a swarm, shared by the daemon's services.
#[derive(Clone)]
pub(crate) struct NodeRoles {
    data_root: PathBuf,
    engine: LocalEngine,
    gate: ControlGate,
    state: Arc<Mutex<RoleState>>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

impl NodeRoles {
    pub(crate) fn new(data_root: &Path, engine: LocalEngine) -> NodeRoles {
        NodeRoles {
            data_root: data_root.to_path_buf(),
            engine,
            gate: ControlGate::default(),
            state: Arc::default(),
        }
    }

    pub(crate) fn control_gate(&self) -> ControlGate {
        self.gate.clone()
    }

    fn swarm_dir(&self) -> SwarmDir {
        SwarmDir::new(&self.data_root)
    }

    /// Takes up the roles this node had before the daemon restarted.
    pub(crate) async fn resume(&self) -> anyhow::Result<()> {
        let swarm_dir = self.swarm_dir();
        let Some((membership, identity)) = swarm_dir.load()? else {
            return Ok(());
        };
        let mut state = self.state.lock().await;
        if membership.role == MembershipRole::Manager {
            let manager =
                ManagerRole::start(&swarm_dir, membership.clone(), identity.clone()).await?;
            self.gate.set(Some(manager.control()));
            state.manager = Some(manager);
        }
        state.agent = Some(self.start_agent(&membership, identity));
        state.membership = Some(membership);
        tracing::info!("rejoined the swarm");
        Ok(())
    }

    fn start_agent(&self, membership: &Membership, identity: TlsIdentity) -> RunningAgent {
        let (stop, stopped) = watch::channel(false);
        let config = AgentConfig {
            node_id: membership.node_id.clone(),
            hostname: hostname(),
            state_dir: self.data_root.join("worker"),
            engine_version: ENGINE_VERSION.to_owned(),
        };
        let connector = ManagerConnector {
            manager_addrs: membership.manager_addrs.clone(),
            identity,
            next: std::sync::atomic::AtomicUsize::new(0),
        };
        let engine = Arc::new(self.engine.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = worker::run_agent(config, engine, connector, stopped).await {
                tracing::error!(%error, "the worker agent stopped");
            }
        });
        RunningAgent { stop, task }
    }

    async fn init(&self, request: InitRequest) -> Result<String, Status> {
        let mut state = self.state.lock().await;
        if let Some(membership) = &state.membership {
            return Err(Status::failed_precondition(format!(
                "this node is already part of a swarm (node {}): it can't found another",
                membership.node_id
            )));
        }
        let options = InitOptions {
            advertise_addr: request.advertise_addr,
            listen_addr: request.listen_addr,
            default_addr_pool: request.default_addr_pool,
            subnet_size: request.subnet_size,
            task_history_limit: (request.task_history_limit != 0)
                .then_some(request.task_history_limit),
            dispatcher_heartbeat: request
                .dispatcher_heartbeat
                .as_ref()
                .map(manager::orchestrator::duration_from_proto),
            hostname: hostname(),
        };
        let swarm_dir = self.swarm_dir();
        let manager = ManagerRole::init(&swarm_dir, options)
            .await
            .map_err(Status::from)?;
        let (membership, identity) = swarm_dir
            .load()
            .map_err(Status::from)?
            .ok_or_else(|| Status::internal("the swarm state vanished right after init"))?;
        self.gate.set(Some(manager.control()));
        state.manager = Some(manager);
        state.agent = Some(self.start_agent(&membership, identity));
        let node_id = membership.node_id.clone();
        state.membership = Some(membership);
        Ok(node_id)
    }

    async fn info(&self) -> InfoResponse {
        let state = self.state.lock().await;
        let mut info = InfoResponse {
            engine_version: ENGINE_VERSION.to_owned(),
            hostname: hostname(),
            ..Default::default()
        };
        let Some(membership) = &state.membership else {
            return info;
        };
        info.local_node_state = info_response::LocalNodeState::Active as i32;
        info.node_id = membership.node_id.clone();
        info.cluster_id = membership.cluster_id.clone();
        info.node_addr = membership
            .advertise_addr
            .rsplit_once(':')
            .map_or(membership.advertise_addr.clone(), |(ip, _)| ip.to_owned());
        if let Some(manager) = &state.manager {
            info.control_available = true;
            match manager.summary() {
                Ok(summary) => {
                    info.managers = summary.managers;
                    info.nodes = summary.nodes;
                    info.remote_managers = summary.manager_addrs.into_iter().collect();
                }
                Err(error) => info.error = error.to_string(),
            }
        }
        info
    }

    /// Stops the agent and the manager role. Containers keep running.
    pub(crate) async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        self.gate.set(None);
        if let Some(agent) = state.agent.take() {
            let _ = agent.stop.send(true);
            let _ = agent.task.await;
        }
        if let Some(manager) = state.manager.take() {
            manager.shutdown().await;
        }
    }
}

#[tonic::async_trait]
impl Swarm for NodeRoles {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let node_id = NodeRoles::init(self, request.into_inner()).await?;
        Ok(Response::new(InitResponse { node_id }))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(NodeRoles::info(self).await))
    }
}
