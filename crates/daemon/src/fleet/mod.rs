//! A simulated fleet in one process, for tests and benchmarks at many nodes: real managers
//! ([`ManagerRole`], each on its own 127.0.0.x address), and N worker agents, each joined with
//! the worker token as a daemon joins (`manager::join::join`: the token's root check, a CSR,
//! its own certificate) and running the real agent (`worker::run_agent`) over gRPC with mutual
//! TLS, against a [`FakeEngine`] that "runs" containers at once and records every run.
//!
//! Agents are cheap: no thread of their own, only the few tokio tasks of an agent and its
//! connection on the caller's runtime. Each manager runs on a runtime of its own (one thread),
//! as it would in its own process. Agents and managers can be killed and revived: a killed
//! manager's Raft member stops at once and the agents' connections to it are reset (`cut`), as
//! when its process dies; a revived agent keeps its identity, assignment store and engine (its
//! containers ran on, as under a restarted daemon), a revived manager its data. [`Fleet::check_slots`] holds Swarm's rule
//! over everything the engines recorded ([`slots`]).

mod cut;
mod fake_engine;
pub mod slots;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use manager::data_key::StoredDataKey;
use manager::{ControlApi, InitOptions, ManagerError, ManagerRole, Membership, SwarmDir};
use raft_store::TlsIdentity;
use shoal_proto::api::control_server::Control as _;
use shoal_proto::api::{GetClusterRequest, SessionMessage};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use worker::networking::NoNetworking;
use worker::{AgentConfig, DispatcherConnector};

pub use fake_engine::{FakeEngine, FleetClock};
pub use slots::{ContainerRun, SlotOverlap};

use crate::follower::manager_addrs_of;
use cut::{ConnectionCutter, CuttableConnector};

/// The fleet's workload: a replicated service of `replicas` tasks of busybox, which the fake
/// engines "run" at once.
pub fn replicated_service(name: &str, replicas: u64) -> shoal_proto::api::ServiceSpec {
    use shoal_proto::api::{
        Annotations, ContainerSpec, ReplicatedService, ServiceSpec, TaskSpec, service_spec,
        task_spec,
    };
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.to_owned(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                image: "busybox".to_owned(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        mode: Some(service_spec::Mode::Replicated(ReplicatedService {
            replicas,
        })),
        ..Default::default()
    }
}

/// How long one attempt to reach a manager may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an agent keeps retrying a join the CA refused for its rate.
const JOIN_PATIENCE: Duration = Duration::from_secs(120);
/// How many joins are in flight at once.
const CONCURRENT_JOINS: usize = 16;
/// How long a new manager may take to become a voter, or a fleet to find a leader.
const LEADER_PATIENCE: Duration = Duration::from_secs(20);

/// What went wrong in the fleet.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{what}: {source}")]
    Manager {
        what: String,
        #[source]
        source: ManagerError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error(
        "no slot may run two tasks at once, but {count} pairs of runs overlapped; the first: {first}"
    )]
    SlotRanTwice {
        count: usize,
        first: Box<SlotOverlap>,
    },
}

impl FleetError {
    fn manager(what: impl Into<String>) -> impl FnOnce(ManagerError) -> FleetError {
        let what = what.into();
        move |source| FleetError::Manager { what, source }
    }

    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FleetError {
        let what = what.into();
        move |source| FleetError::Io { what, source }
    }
}

/// How big a fleet to start.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Managers, each on its own loopback address (127.0.0.2, .3, …).
    pub managers: usize,
    /// Simulated worker agents.
    pub agents: usize,
    /// The dispatcher's heartbeat period (Swarm's default is 5 s).
    pub heartbeat_period: Duration,
}

/// A folder under the system's temporary directory, removed with the fleet.
struct DataRoot(PathBuf);

impl DataRoot {
    fn create() -> Result<DataRoot, FleetError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "shoal-fleet-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .map_err(FleetError::io(format!("creating {}", path.display())))?;
        Ok(DataRoot(path))
    }
}

impl Drop for DataRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A manager's own runtime, one worker thread, as a manager is its own process: its Raft
/// heartbeats don't queue behind thousands of agents' tasks. Shut down in the background when
/// dropped, which may happen inside another runtime.
struct ManagerRuntime(Option<tokio::runtime::Runtime>);

impl ManagerRuntime {
    fn new(index: usize) -> Result<ManagerRuntime, FleetError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("fleet-manager-{index}"))
            .enable_all()
            .build()
            .map(|runtime| ManagerRuntime(Some(runtime)))
            .map_err(FleetError::io(format!(
                "starting manager {index}'s runtime"
            )))
    }

    /// Runs `work` on this runtime and waits for it.
    async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, FleetError> {
        let Some(runtime) = &self.0 else {
            return Err(FleetError::Unavailable(
                "the manager's runtime is gone".into(),
            ));
        };
        runtime
            .spawn(work)
            .await
            .map_err(|error| FleetError::Unavailable(format!("a manager's task failed: {error}")))
    }

    fn spawn(
        &self,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.0.as_ref().map(|runtime| runtime.spawn(work))
    }
}

impl Drop for ManagerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// One manager of the fleet, running or killed.
struct FleetManager {
    runtime: ManagerRuntime,
    swarm_dir: SwarmDir,
    /// Its cluster port, fixed at its first start so that it comes back where it was.
    addr: String,
    role: Option<ManagerRole>,
    /// The orderly end of a killed role, which must finish before it starts again.
    winding_down: Option<tokio::task::JoinHandle<()>>,
}

/// Where an agent's managers are and the certificate it shows them, shared by its connector
/// and the fleet; also what the fleet sees of its sessions.
struct AgentLink {
    identity: TlsIdentity,
    manager_addrs: RwLock<Vec<String>>,
    /// The leader a follower named; tried first on the next connect.
    leader_hint: RwLock<Option<String>>,
    next: AtomicUsize,
    /// The id of the latest session a first message came on.
    session_id: RwLock<String>,
    sessions_opened: AtomicU64,
}

/// Reaches the managers' dispatcher over mutual TLS with the agent's certificate, as the
/// daemon's connector does: the leader a follower named if any, else each manager in turn.
struct FleetConnector {
    link: Arc<AgentLink>,
    cutter: Arc<ConnectionCutter>,
}

impl DispatcherConnector for FleetConnector {
    async fn connect(&self) -> Result<Channel, String> {
        let link = &self.link;
        let hint = link
            .leader_hint
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let addr = match hint {
            Some(leader) => leader,
            None => {
                let addrs = link
                    .manager_addrs
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if addrs.is_empty() {
                    return Err("this agent knows no manager to connect to".to_owned());
                }
                addrs[link.next.fetch_add(1, Ordering::Relaxed) % addrs.len()].clone()
            }
        };
        Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|error| format!("manager address {addr}: {error}"))?
            .tls_config(link.identity.client_config())
            .map_err(|error| format!("TLS settings for {addr}: {error}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(CuttableConnector {
                cutter: Arc::clone(&self.cutter),
            })
            .await
            .map_err(|error| {
                format!(
                    "connecting to the manager at {addr}: {}",
                    engine::error::error_chain(&error)
                )
            })
    }

    fn observe_session(&self, message: &SessionMessage) {
        let addrs = manager_addrs_of(message);
        if !addrs.is_empty() {
            *self
                .link
                .manager_addrs
                .write()
                .unwrap_or_else(|p| p.into_inner()) = addrs;
        }
        let mut session_id = self
            .link
            .session_id
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if *session_id != message.session_id {
            session_id.clone_from(&message.session_id);
            self.link.sessions_opened.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn redirect(&self, leader_addr: &str) {
        *self
            .link
            .leader_hint
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(leader_addr.to_owned());
    }
}

/// A running agent: the switch that stops it and its task.
struct RunningAgent {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// One simulated worker node.
pub struct SimulatedAgent {
    node_id: String,
    hostname: String,
    state_dir: PathBuf,
    engine: Arc<FakeEngine>,
    link: Arc<AgentLink>,
    running: Option<RunningAgent>,
}

impl SimulatedAgent {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn engine(&self) -> &Arc<FakeEngine> {
        &self.engine
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Sessions this node has had with a dispatcher, across its restarts.
    pub fn sessions_opened(&self) -> u64 {
        self.link.sessions_opened.load(Ordering::SeqCst)
    }

    fn start(&mut self, cutter: &Arc<ConnectionCutter>) {
        let (stop, stopped) = watch::channel(false);
        let config = AgentConfig {
            node_id: self.node_id.clone(),
            hostname: self.hostname.clone(),
            state_dir: self.state_dir.clone(),
            engine_version: "shoal-fleet".to_owned(),
        };
        let connector = FleetConnector {
            link: Arc::clone(&self.link),
            cutter: Arc::clone(cutter),
        };
        let engine = Arc::clone(&self.engine);
        let node_id = self.node_id.clone();
        let task = tokio::spawn(async move {
            if let Err(error) =
                worker::run_agent(config, engine, connector, stopped, Arc::new(NoNetworking)).await
            {
                tracing::error!(node = %node_id, %error, "a simulated agent stopped");
            }
        });
        self.running = Some(RunningAgent { stop, task });
    }
}

/// Managers and simulated agents in this process; dropping it stops them all and removes
/// their data.
pub struct Fleet {
    managers: Vec<FleetManager>,
    agents: Vec<SimulatedAgent>,
    clock: Arc<FleetClock>,
    cutter: Arc<ConnectionCutter>,
    worker_token: String,
    data_root: DataRoot,
}

/// A free port on `ip`, for a manager that must know its address before it listens.
fn free_port(ip: &str) -> Result<u16, FleetError> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(FleetError::io(format!("finding a free port on {ip}")))
}

fn manager_ip(index: usize) -> String {
    format!("127.0.0.{}", index + 2)
}

impl Fleet {
    /// Founds a swarm on the first manager, joins the others as managers and then the agents
    /// as workers, each through the manager at its turn, and starts every agent.
    pub async fn start(options: FleetOptions) -> Result<Fleet, FleetError> {
        if options.managers == 0 || options.managers > 250 {
            return Err(FleetError::Unavailable(format!(
                "a fleet has 1 to 250 managers, not {}",
                options.managers
            )));
        }
        let data_root = DataRoot::create()?;
        let first_dir = SwarmDir::new(&data_root.0.join("manager-0"));
        let runtime = ManagerRuntime::new(0)?;
        let init_options = InitOptions {
            advertise_addr: manager_ip(0),
            listen_addr: format!("{}:0", manager_ip(0)),
            hostname: "fleet-manager-0".to_owned(),
            dispatcher_heartbeat: Some(options.heartbeat_period),
            ..InitOptions::default()
        };
        let dir = first_dir.clone();
        let first = runtime
            .run(async move { ManagerRole::init(&dir, init_options, Default::default()).await })
            .await?
            .map_err(FleetError::manager("founding the fleet's swarm"))?;
        let first_addr = first.membership().advertise_addr.clone();
        let tokens = first
            .control()
            .get_cluster(tonic::Request::new(GetClusterRequest {}))
            .await
            .map_err(|status| {
                FleetError::Unavailable(format!("reading the join tokens: {status}"))
            })?
            .into_inner()
            .cluster
            .and_then(|cluster| cluster.root_ca)
            .and_then(|root_ca| root_ca.join_tokens)
            .ok_or_else(|| FleetError::Unavailable("the cluster has no join tokens".to_owned()))?;
        let mut fleet = Fleet {
            managers: vec![FleetManager {
                runtime,
                swarm_dir: first_dir,
                addr: first_addr.clone(),
                role: Some(first),
                winding_down: None,
            }],
            agents: Vec::with_capacity(options.agents),
            clock: Arc::default(),
            cutter: Arc::default(),
            worker_token: tokens.worker,
            data_root,
        };
        for index in 1..options.managers {
            let runtime = ManagerRuntime::new(index)?;
            let data_root = fleet.data_root.0.join(format!("manager-{index}"));
            let (first_addr, token) = (first_addr.clone(), tokens.manager.clone());
            let (swarm_dir, addr, role) = runtime
                .run(async move { join_manager(&data_root, &first_addr, &token, index).await })
                .await??;
            fleet.managers.push(FleetManager {
                runtime,
                swarm_dir,
                addr,
                role: Some(role),
                winding_down: None,
            });
        }
        fleet.join_agents(options.agents).await?;
        for agent in &mut fleet.agents {
            agent.start(&fleet.cutter);
        }
        Ok(fleet)
    }

    /// Joins `count` agents, a few at a time, each through the next manager in turn (the CA
    /// limits join attempts per source address on each manager).
    async fn join_agents(&mut self, count: usize) -> Result<(), FleetError> {
        let manager_addrs: Vec<String> = self.managers.iter().map(|m| m.addr.clone()).collect();
        let mut joins = tokio::task::JoinSet::new();
        let mut joined = Vec::with_capacity(count);
        let mut next = 0;
        while next < count || !joins.is_empty() {
            while next < count && joins.len() < CONCURRENT_JOINS {
                let addr = manager_addrs[next % manager_addrs.len()].clone();
                let token = self.worker_token.clone();
                let index = next;
                joins.spawn(async move { (index, join_worker(&addr, &token, index).await) });
                next += 1;
            }
            if let Some(finished) = joins.join_next().await {
                let (index, grant) = finished.map_err(|error| {
                    FleetError::Unavailable(format!("a join task failed: {error}"))
                })?;
                joined.push((index, grant?));
            }
        }
        joined.sort_by_key(|(index, _)| *index);
        for (index, grant) in joined {
            let state_dir = self.data_root.0.join(format!("agent-{index}"));
            let mut manager_addrs = grant.manager_addrs.clone();
            if manager_addrs.is_empty() {
                manager_addrs.clone_from(&self.managers_addrs());
            }
            self.agents.push(SimulatedAgent {
                engine: Arc::new(FakeEngine::new(&grant.node_id, Arc::clone(&self.clock))),
                node_id: grant.node_id,
                hostname: format!("fleet-agent-{index}"),
                state_dir,
                link: Arc::new(AgentLink {
                    identity: grant.identity,
                    manager_addrs: RwLock::new(manager_addrs),
                    leader_hint: RwLock::new(None),
                    next: AtomicUsize::new(index),
                    session_id: RwLock::default(),
                    sessions_opened: AtomicU64::new(0),
                }),
                running: None,
            });
        }
        Ok(())
    }

    fn managers_addrs(&self) -> Vec<String> {
        self.managers.iter().map(|m| m.addr.clone()).collect()
    }

    pub fn data_root(&self) -> &Path {
        &self.data_root.0
    }

    pub fn agents(&self) -> &[SimulatedAgent] {
        &self.agents
    }

    pub fn agent(&self, index: usize) -> &SimulatedAgent {
        &self.agents[index]
    }

    /// The index of the manager that leads, among the running ones.
    pub fn leader(&self) -> Option<usize> {
        self.managers.iter().position(|manager| {
            manager
                .role
                .as_ref()
                .is_some_and(|role| role.store().status().is_leader)
        })
    }

    /// Waits until a running manager leads; its index.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<usize, FleetError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(FleetError::Unavailable(format!(
                    "no running manager leads after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The control API of the leader, else of any running manager (which forwards writes).
    pub fn control(&self) -> Result<ControlApi, FleetError> {
        let running = |index: usize| self.managers[index].role.as_ref();
        self.leader()
            .and_then(running)
            .or_else(|| self.managers.iter().find_map(|m| m.role.as_ref()))
            .map(ManagerRole::control)
            .ok_or_else(|| FleetError::Unavailable("every manager of the fleet is down".into()))
    }

    /// Kills the manager at `index`, keeping its data: the agents' connections to it are
    /// reset and its Raft member stops at once, as when its process dies; the rest of the role
    /// winds down in the background.
    pub async fn kill_manager(&mut self, index: usize) -> Result<(), FleetError> {
        let manager = &mut self.managers[index];
        let role = manager
            .role
            .take()
            .ok_or_else(|| FleetError::Unavailable(format!("manager {index} is already down")))?;
        self.cutter.cut(&manager.addr);
        // Its Raft member goes first, so that the others elect a leader without waiting for the
        // role's graceful end; stopping it again in `shutdown` changes nothing.
        let store = Arc::clone(role.store());
        let stopped = manager
            .runtime
            .run(async move { store.shutdown().await })
            .await?;
        if let Err(error) = stopped {
            tracing::debug!(%error, "stopping a killed manager's Raft member");
        }
        manager.winding_down = manager.runtime.spawn(role.shutdown());
        Ok(())
    }

    /// Stops the leader; its index.
    pub async fn kill_leader(&mut self) -> Result<usize, FleetError> {
        let leader = self.wait_for_leader(LEADER_PATIENCE).await?;
        self.kill_manager(leader).await?;
        Ok(leader)
    }

    /// Starts the manager at `index` again from its data, at its address.
    pub async fn revive_manager(&mut self, index: usize) -> Result<(), FleetError> {
        let manager = &mut self.managers[index];
        if manager.role.is_some() {
            return Err(FleetError::Unavailable(format!(
                "manager {index} is running already"
            )));
        }
        if let Some(winding_down) = manager.winding_down.take() {
            let _ = winding_down.await;
        }
        let what = format!("restarting manager {index}");
        let (membership, identity) = manager
            .swarm_dir
            .load()
            .map_err(FleetError::manager(what.clone()))?
            .ok_or_else(|| FleetError::Unavailable(format!("{what}: it has no swarm state")))?;
        let StoredDataKey::Clear(data_key) = manager
            .swarm_dir
            .load_data_key()
            .map_err(FleetError::manager(what.clone()))?
        else {
            return Err(FleetError::Unavailable(format!(
                "{what}: its data key is sealed (the fleet never turns autolock on)"
            )));
        };
        let swarm_dir = manager.swarm_dir.clone();
        let role = manager
            .runtime
            .run(async move {
                ManagerRole::start(
                    &swarm_dir,
                    membership,
                    identity,
                    data_key,
                    Default::default(),
                )
                .await
            })
            .await?
            .map_err(FleetError::manager(what))?;
        manager.role = Some(role);
        self.cutter.restore(&self.managers[index].addr);
        Ok(())
    }

    /// Stops the agent at `index` at once, as a daemon that crashed: its containers run on.
    pub async fn kill_agent(&mut self, index: usize) -> Result<(), FleetError> {
        let running = self.agents[index]
            .running
            .take()
            .ok_or_else(|| FleetError::Unavailable(format!("agent {index} is already down")))?;
        running.task.abort();
        let _ = running.task.await;
        drop(running.stop);
        Ok(())
    }

    /// Starts the agent at `index` again, with its identity, assignment store and engine.
    pub fn revive_agent(&mut self, index: usize) -> Result<(), FleetError> {
        let agent = &mut self.agents[index];
        if agent.running.is_some() {
            return Err(FleetError::Unavailable(format!(
                "agent {index} is running already"
            )));
        }
        agent.start(&self.cutter);
        Ok(())
    }

    /// Every run every agent's engine recorded.
    pub fn runs(&self) -> Vec<ContainerRun> {
        self.agents
            .iter()
            .flat_map(|agent| agent.engine.runs())
            .collect()
    }

    /// Containers running now, over the whole fleet.
    pub fn running_containers(&self) -> usize {
        self.agents.iter().map(|agent| agent.engine.running()).sum()
    }

    /// Swarm's rule over everything recorded so far: no slot ran two containers at once.
    pub fn check_slots(&self) -> Result<(), FleetError> {
        let overlaps = slots::overlapping_runs(&self.runs());
        let count = overlaps.len();
        match overlaps.into_iter().next() {
            None => Ok(()),
            Some(first) => Err(FleetError::SlotRanTwice {
                count,
                first: Box::new(first),
            }),
        }
    }

    /// Stops every agent and manager.
    pub async fn shutdown(mut self) {
        for index in 0..self.agents.len() {
            if let Some(running) = self.agents[index].running.take() {
                running.stop.send_replace(true);
                running.task.abort();
                let _ = running.task.await;
            }
        }
        for manager in &mut self.managers {
            if let Some(role) = manager.role.take() {
                let _ = manager.runtime.run(role.shutdown()).await;
            }
            if let Some(winding_down) = manager.winding_down.take() {
                let _ = winding_down.await;
            }
        }
    }
}

/// Joins one agent with the worker token through `addr`, retrying while the CA says it is
/// asked too often. Each agent joins from its own loopback address (127.1.0.1 on), as machines
/// would: the CA limits joins per source address.
async fn join_worker(
    addr: &str,
    token: &str,
    index: usize,
) -> Result<manager::join::JoinGrant, FleetError> {
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let source = agent_source_address(index);
    loop {
        let joined = manager::join::join_from(
            addr,
            token,
            &format!("fleet-agent-{index}"),
            "",
            Some(source),
        )
        .await;
        match joined {
            Ok(grant) => return Ok(grant),
            Err(error) if asked_too_often(&error) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => {
                return Err(FleetError::Manager {
                    what: format!("joining agent {index} through {addr}"),
                    source: error,
                });
            }
        }
    }
}

/// Agent `index`'s loopback address, apart from the managers' 127.0.0.x.
fn agent_source_address(index: usize) -> std::net::IpAddr {
    let first = u32::from(std::net::Ipv4Addr::new(127, 1, 0, 1));
    std::net::Ipv4Addr::from(first + index as u32).into()
}

/// Whether the CA refused a join for the rate of attempts from this address.
fn asked_too_often(error: &ManagerError) -> bool {
    match error {
        ManagerError::ResourceExhausted(_) => true,
        ManagerError::Remote(status) => status.code() == tonic::Code::ResourceExhausted,
        _ => false,
    }
}

/// Joins a manager as a daemon does: admitted by the CA with the manager token, its role
/// started on its own loopback address, and taken into the Raft group.
async fn join_manager(
    data_root: &Path,
    first_addr: &str,
    token: &str,
    index: usize,
) -> Result<(SwarmDir, String, ManagerRole), FleetError> {
    let what = format!("joining manager {index}");
    let grant = manager::join::join(first_addr, token, &format!("fleet-manager-{index}"), "")
        .await
        .map_err(FleetError::manager(what.clone()))?;
    let ip = manager_ip(index);
    let addr = format!("{ip}:{}", free_port(&ip)?);
    let membership = Membership {
        node_id: grant.node_id.clone(),
        cluster_id: grant.cluster_id.clone(),
        role: manager::MembershipRole::Manager,
        raft_member_id: manager::raft_member_id_for(&grant.node_id),
        listen_addr: addr.clone(),
        advertise_addr: addr.clone(),
        manager_addrs: vec![first_addr.to_owned()],
    };
    let swarm_dir = SwarmDir::new(data_root);
    swarm_dir
        .save(&membership, &grant.identity)
        .map_err(FleetError::manager(what.clone()))?;
    let data_key = swarm_dir
        .new_manager_data_key()
        .map_err(FleetError::manager(what.clone()))?;
    let role = ManagerRole::start(
        &swarm_dir,
        membership.clone(),
        grant.identity.clone(),
        data_key,
        Default::default(),
    )
    .await
    .map_err(FleetError::manager(what.clone()))?;
    let joined = tokio::time::timeout(
        LEADER_PATIENCE,
        manager::join::join_raft(
            &membership.manager_addrs,
            &grant.identity,
            membership.raft_member_id,
            &addr,
        ),
    )
    .await;
    match joined {
        Ok(Ok(())) => Ok((swarm_dir, addr, role)),
        Ok(Err(error)) => {
            role.shutdown().await;
            Err(FleetError::Manager {
                what: format!("{what}: taking it into the Raft group"),
                source: error,
            })
        }
        Err(_) => {
            role.shutdown().await;
            Err(FleetError::Unavailable(format!(
                "{what}: not a voter after {LEADER_PATIENCE:?}"
            )))
        }
    }
}
