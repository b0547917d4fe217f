//! A simulated fleet, for tests and benchmarks at many nodes: real managers, each a process of
//! its own ([`manager_process`]) on its own 127.0.0.x address, and N worker agents in this
//! process, each joined with the worker token as a daemon joins (`manager::join::join`: the
//! token's root check, a CSR, its own certificate) and running the real agent
//! (`worker::run_agent`) over gRPC with mutual TLS, against a [`FakeEngine`] that "runs"
//! containers at once and records every run.
//!
//! Agents are cheap: no thread of their own, only the few tokio tasks of an agent and its
//! connection on the caller's runtime. Agents and managers can be killed and revived: a killed
//! manager gets `SIGKILL`; a revived agent keeps its identity, assignment store and engine (its
//! containers ran on, as under a restarted daemon), a revived manager its data.
//! [`Fleet::check_slots`] holds Swarm's rule over everything the engines recorded ([`slots`]).

mod fake_engine;
mod manager_process;
pub mod slots;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use manager::{ManagerError, SwarmDir};
use raft_store::TlsIdentity;
use shoal_proto::api::SessionMessage;
use shoal_proto::api::control_client::ControlClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use worker::networking::NoNetworking;
use worker::{AgentConfig, DispatcherConnector};

pub use fake_engine::{FakeEngine, FleetClock};
pub use manager_process::{MANAGER_SUBCOMMAND, ProcessUsage, serve_manager};
pub use slots::{ContainerRun, SlotOverlap};

use crate::follower::manager_addrs_of;
use manager_process::{Launch, ManagerProcess};

/// The fleet's workload: a replicated service of `replicas` tasks of busybox, which the fake
/// engines "run" at once. A task that exits is replaced at once (no restart delay), so that a
/// crash times the managers' reaction rather than Swarm's default 5 s wait.
pub fn replicated_service(name: &str, replicas: u64) -> shoal_proto::api::ServiceSpec {
    use shoal_proto::api::{
        Annotations, ContainerSpec, ReplicatedService, RestartPolicy, ServiceSpec, TaskSpec,
        restart_policy::RestartCondition, service_spec, task_spec,
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
            restart: Some(RestartPolicy {
                condition: RestartCondition::Any as i32,
                delay: Some(shoal_proto::api::Duration::default()),
                ..Default::default()
            }),
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
    /// The program each manager runs in a process of its own: one that hands the arguments
    /// after [`MANAGER_SUBCOMMAND`] to [`serve_manager`], as bench-fleet does.
    pub manager_program: PathBuf,
    /// Where the agents keep their assignment stores; `None` puts them beside the managers'
    /// data, under the system's temporary directory. Each real node saves to a disk of its
    /// own. Thousands of simulated ones saving to one disk (two fsyncs before each status
    /// report) would make the managers' Raft fsyncs queue behind theirs, so a benchmark puts
    /// them on a tmpfs.
    pub agent_state_parent: Option<PathBuf>,
}

/// A folder of the fleet's own, removed with the fleet.
struct DataRoot(PathBuf);

impl DataRoot {
    fn create(parent: &Path) -> Result<DataRoot, FleetError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = parent.join(format!(
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

/// One manager of the fleet, running or killed.
struct FleetManager {
    /// Its data root, where its swarm state is.
    dir: PathBuf,
    /// Its cluster port, fixed at its first start so that it comes back where it was.
    addr: String,
    process: Option<ManagerProcess>,
    /// Its control API over the cluster port, with the first manager's certificate.
    control: ControlClient<Channel>,
    /// What its process had used when it was killed.
    usage_at_kill: Option<ProcessUsage>,
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
    /// When the latest session's first message came.
    session_opened_at: RwLock<Option<Instant>>,
    /// Connections tried, whether or not a session followed.
    connects: AtomicU64,
}

/// Reaches the managers' dispatcher over mutual TLS with the agent's certificate, as the
/// daemon's connector does: the leader a follower named if any, else each manager in turn.
struct FleetConnector {
    link: Arc<AgentLink>,
}

impl DispatcherConnector for FleetConnector {
    async fn connect(&self) -> Result<Channel, String> {
        let link = &self.link;
        link.connects.fetch_add(1, Ordering::Relaxed);
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
        manager_endpoint(&addr, &link.identity)?
            .connect()
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
            *self
                .link
                .session_opened_at
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
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

    /// When its latest session opened.
    pub fn session_opened_at(&self) -> Option<Instant> {
        *self
            .link
            .session_opened_at
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections it has tried to the managers, sessions or not.
    pub fn connects(&self) -> u64 {
        self.link.connects.load(Ordering::Relaxed)
    }

    fn start(&mut self) {
        let (stop, stopped) = watch::channel(false);
        let config = AgentConfig {
            node_id: self.node_id.clone(),
            hostname: self.hostname.clone(),
            state_dir: self.state_dir.clone(),
            engine_version: "shoal-fleet".to_owned(),
        };
        let connector = FleetConnector {
            link: Arc::clone(&self.link),
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
    /// The program each manager process runs.
    manager_program: PathBuf,
    /// Before the data root: dropping a manager kills its process, which writes there.
    managers: Vec<FleetManager>,
    agents: Vec<SimulatedAgent>,
    clock: Arc<FleetClock>,
    worker_token: String,
    data_root: DataRoot,
    /// The agents' assignment stores, beside `data_root` unless the options named a parent.
    agent_root: DataRoot,
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
        let data_root = DataRoot::create(&std::env::temp_dir())?;
        let agent_root = DataRoot::create(
            &options
                .agent_state_parent
                .clone()
                .unwrap_or_else(std::env::temp_dir),
        )?;
        let first_dir = data_root.0.join("manager-0");
        let (first, started) = ManagerProcess::launch(
            &options.manager_program,
            &Launch::Init {
                dir: first_dir.clone(),
                ip: manager_ip(0),
                heartbeat: options.heartbeat_period,
            },
            "founding the fleet's swarm",
        )
        .await?;
        let first_addr = started.addr;
        let Some((worker_token, manager_token)) = started.tokens else {
            return Err(FleetError::Unavailable(
                "the founding manager gave no join tokens".into(),
            ));
        };
        // The fleet's own calls show the first manager's certificate, as its CLI would.
        let (_, identity) = SwarmDir::new(&first_dir)
            .load()
            .map_err(FleetError::manager("reading the first manager's identity"))?
            .ok_or_else(|| FleetError::Unavailable("the first manager saved no identity".into()))?;
        let control_to = |addr: &str| control_client(addr, &identity);
        let mut fleet = Fleet {
            manager_program: options.manager_program.clone(),
            managers: vec![FleetManager {
                dir: first_dir,
                control: control_to(&first_addr)?,
                addr: first_addr.clone(),
                process: Some(first),
                usage_at_kill: None,
            }],
            agents: Vec::with_capacity(options.agents),
            clock: Arc::default(),
            worker_token,
            data_root,
            agent_root,
        };
        for index in 1..options.managers {
            let dir = fleet.data_root.0.join(format!("manager-{index}"));
            let launch = Launch::Join {
                dir: dir.clone(),
                ip: manager_ip(index),
                first: first_addr.clone(),
                token: manager_token.clone(),
                index,
            };
            let (process, started) = ManagerProcess::launch(
                &fleet.manager_program,
                &launch,
                &format!("joining manager {index}"),
            )
            .await?;
            fleet.managers.push(FleetManager {
                dir,
                control: control_to(&started.addr)?,
                addr: started.addr,
                process: Some(process),
                usage_at_kill: None,
            });
        }
        fleet.join_agents(options.agents).await?;
        for agent in &mut fleet.agents {
            agent.start();
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
            let state_dir = self.agent_root.0.join(format!("agent-{index}"));
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
                    session_opened_at: RwLock::new(None),
                    connects: AtomicU64::new(0),
                }),
                running: None,
            });
        }
        Ok(())
    }

    fn managers_addrs(&self) -> Vec<String> {
        self.managers.iter().map(|m| m.addr.clone()).collect()
    }

    pub fn agents(&self) -> &[SimulatedAgent] {
        &self.agents
    }

    pub fn agent(&self, index: usize) -> &SimulatedAgent {
        &self.agents[index]
    }

    /// The index of the manager that leads, among the running ones: the last one that said
    /// it leads.
    pub fn leader(&self) -> Option<usize> {
        self.managers
            .iter()
            .position(|manager| manager.process.as_ref().is_some_and(ManagerProcess::leads))
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

    /// The control API of the leader, else of any running manager (which forwards writes),
    /// over its cluster port.
    pub fn control(&self) -> Result<ControlClient<Channel>, FleetError> {
        self.leader()
            .map(|leader| &self.managers[leader])
            .or_else(|| self.managers.iter().find(|m| m.process.is_some()))
            .map(|manager| manager.control.clone())
            .ok_or_else(|| FleetError::Unavailable("every manager of the fleet is down".into()))
    }

    /// How many managers the fleet has, running or not.
    pub fn manager_count(&self) -> usize {
        self.managers.len()
    }

    /// Whether manager `index` runs (it was not killed, or was revived since).
    pub fn manager_runs(&self, index: usize) -> bool {
        self.managers[index].process.is_some()
    }

    /// What manager `index`'s process has used so far, or had used when it was killed.
    pub fn manager_usage(&self, index: usize) -> Option<ProcessUsage> {
        let manager = &self.managers[index];
        match &manager.process {
            Some(process) => ProcessUsage::read(Some(process.id()?)),
            None => manager.usage_at_kill,
        }
    }

    /// Kills the manager at `index` (`SIGKILL`), keeping its data.
    pub async fn kill_manager(&mut self, index: usize) -> Result<(), FleetError> {
        let usage = self.manager_usage(index);
        let manager = &mut self.managers[index];
        let process = manager
            .process
            .take()
            .ok_or_else(|| FleetError::Unavailable(format!("manager {index} is already down")))?;
        manager.usage_at_kill = usage;
        process.kill().await;
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
        if manager.process.is_some() {
            return Err(FleetError::Unavailable(format!(
                "manager {index} is running already"
            )));
        }
        let launch = Launch::Restart {
            dir: manager.dir.clone(),
        };
        let (process, _) = ManagerProcess::launch(
            &self.manager_program,
            &launch,
            &format!("restarting manager {index}"),
        )
        .await?;
        manager.process = Some(process);
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
        agent.start();
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
            if let Some(process) = manager.process.take() {
                process.stop().await;
            }
        }
    }
}

/// A manager's cluster port, reached over mutual TLS with `identity`: the agents' dispatcher
/// connections and the fleet's control clients.
fn manager_endpoint(addr: &str, identity: &TlsIdentity) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|error| format!("manager address {addr}: {error}"))?
        .tls_config(identity.client_config())
        .map_err(|error| format!("TLS settings for {addr}: {error}"))?
        .connect_timeout(CONNECT_TIMEOUT))
}

/// A control API client over a manager's cluster port; it connects at its first call and again
/// after a failure. Lists at thousands of nodes are larger than tonic's default 4 MiB.
fn control_client(
    addr: &str,
    identity: &TlsIdentity,
) -> Result<ControlClient<Channel>, FleetError> {
    let channel = manager_endpoint(addr, identity)
        .map_err(FleetError::Unavailable)?
        .connect_lazy();
    Ok(ControlClient::new(channel).max_decoding_message_size(usize::MAX))
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
