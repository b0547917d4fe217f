//! The daemon's swarm roles: the worker agent every node in a swarm runs, and the manager role
//! on managers. Serves the node-local `Swarm` API (init, join, leave, unlock, info) and opens the
//! control gate while this node manages. It also follows what the managers say about this node
//! in its session: the list of managers (kept on disk, so a restarted node finds them), and its
//! desired role, which a promotion or demotion changes; and it renews the node's certificate
//! before it expires. Wiring only: the decisions live in `manager`, `worker` and, for the
//! role follower, the pure [`crate::follower`], whose commands this shell carries out.
//!
//! A manager restarted under autolock comes up locked, as in Docker: its data key is sealed, so
//! neither its manager role nor its worker agent runs (its containers keep running under their
//! shims, and the agent adopts them after the unlock); the control gate refuses calls with how
//! to unlock, and `swarm unlock` with the right key starts both.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use engine::{Engine as _, LocalEngine};
use manager::data_key::{SWARM_LOCKED, SealedDataKey, StoredDataKey, UnlockKey};
use manager::{ControlGate, InitOptions, ManagerRole, Membership, MembershipRole, SwarmDir};
use raft_store::TlsIdentity;
use shoal_metrics::Metrics;
use shoal_proto::api::swarm_server::Swarm;
use shoal_proto::api::{
    InfoRequest, InfoResponse, InitRequest, InitResponse, JoinRequest, JoinResponse, LeaveRequest,
    LeaveResponse, NetworkAttachmentsRequest, NetworkAttachmentsResponse, NodeRole, SessionMessage,
    UnlockRequest, UnlockResponse, info_response, network_attachments_response,
};
use tokio::sync::{Mutex, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use worker::{AgentConfig, DispatcherConnector};

use crate::follower::{
    Command, Event, Issued, NodeView, Report, RoleFollower, SessionView, Validity, manager_addrs_of,
};
use crate::metered_engine::MeteredEngine;
use crate::networking::NodeNetworking;

/// The version every node reports as its engine version.
pub(crate) const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long one attempt to reach a manager may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the agent's connector and the role follower share: where the managers are, the
/// certificate to show them, and the latest session message.
struct ManagerLink {
    manager_addrs: RwLock<Vec<String>>,
    identity: RwLock<TlsIdentity>,
    /// The leader a follower named; tried first on the next connect.
    leader_hint: RwLock<Option<String>>,
    next: AtomicUsize,
    /// The manager the last connect went to.
    last_tried: RwLock<Option<String>>,
    session: watch::Sender<Option<SessionMessage>>,
    /// Asks the agent to reopen its session, so that it shows a new certificate.
    reconnect: tokio::sync::Notify,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(|p| p.into_inner()) = value;
}

/// Reaches the managers' dispatcher over mutual TLS with the node's certificate: the leader a
/// follower named if any, else each known manager in turn. Hands what the session says of
/// networking (gossip keys, managers as gossip seeds) to the node's networking.
struct ManagerConnector {
    link: Arc<ManagerLink>,
    networking: Arc<NodeNetworking>,
}

impl DispatcherConnector for ManagerConnector {
    async fn connect(&self) -> Result<Channel, String> {
        let link = &self.link;
        let addr = match link
            .leader_hint
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(leader) => leader,
            None => {
                let addrs = read(&link.manager_addrs);
                let next = link.next.fetch_add(1, Ordering::Relaxed);
                next_manager(&addrs, next, read(&link.last_tried).as_deref())
                    .ok_or("this node knows no manager to connect to")?
                    .to_owned()
            }
        };
        write(&link.last_tried, Some(addr.clone()));
        let identity = read(&link.identity);
        Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|error| format!("manager address {addr}: {error}"))?
            .tls_config(identity.client_config())
            .map_err(|error| format!("TLS settings for {addr}: {error}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
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
            write(&self.link.manager_addrs, addrs);
        }
        self.networking.observe_session(message);
        self.link.session.send_replace(Some(message.clone()));
    }

    fn redirect(&self, leader_addr: &str) {
        write(&self.link.leader_hint, Some(leader_addr.to_owned()));
    }

    fn reconnect_requested(&self) -> impl std::future::Future<Output = ()> + Send {
        self.link.reconnect.notified()
    }
}

/// The manager a connect without a leader hint goes to: the managers in turn, passing over the
/// one tried last when there is another. A session ends when its manager stops answering, and a
/// frozen manager still completes TCP handshakes, so trying it again first would spend the
/// whole connect timeout on it while the new leader's grace for this node runs out.
fn next_manager<'a>(addrs: &'a [String], next: usize, last_tried: Option<&str>) -> Option<&'a str> {
    let count = addrs.len();
    let at = |offset: usize| addrs[(next + offset) % count].as_str();
    match count {
        0 => None,
        1 => Some(at(0)),
        _ if Some(at(0)) == last_tried => Some(at(1)),
        _ => Some(at(0)),
    }
}

struct RunningAgent {
    stop: watch::Sender<bool>,
    /// The latest session message: on a worker, `info`'s list of managers.
    session: watch::Receiver<Option<SessionMessage>>,
    agent: tokio::task::JoinHandle<()>,
    /// Takes the state lock to change roles, so it is aborted, never awaited, by whoever holds
    /// that lock to stop the agent.
    follower: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct RoleState {
    membership: Option<Membership>,
    manager: Option<ManagerRole>,
    agent: Option<RunningAgent>,
    /// A manager's data key sealed by the unlock key, while this node waits for `swarm unlock`.
    locked: Option<SealedDataKey>,
}

/// The node's roles in a swarm, shared by the daemon's services.
#[derive(Clone)]
pub(crate) struct NodeRoles {
    data_root: PathBuf,
    engine: LocalEngine,
    gate: ControlGate,
    state: Arc<Mutex<RoleState>>,
    /// The node's overlay networking, one per daemon; the worker agent drives it.
    networking: Arc<NodeNetworking>,
    /// The daemon's metric families, which the manager role and the agent's engine record into.
    metrics: Arc<Metrics>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

fn role_of(membership: &Membership) -> NodeRole {
    match membership.role {
        MembershipRole::Manager => NodeRole::Manager,
        MembershipRole::Worker => NodeRole::Worker,
    }
}

/// A certificate's validity, or `None` when it can't be read (it is then renewed soon).
fn validity(identity: &TlsIdentity) -> Option<Validity> {
    let (not_before, not_after) =
        manager::ca::validity_of(&String::from_utf8_lossy(&identity.cert_pem)).ok()?;
    Some(Validity {
        not_before,
        not_after,
    })
}

fn log_report(report: Report) {
    match report {
        Report::Renewed => tracing::info!("node certificate renewed"),
        Report::RenewalFailed(error) => {
            tracing::warn!(%error, "could not renew the node certificate; retrying")
        }
        Report::RoleChangeFailed(error) => {
            tracing::warn!(%error, "could not take up the role the managers asked for; retrying")
        }
        Report::MovedToNewRoots => tracing::info!("moved to the swarm's current root CA"),
        Report::Promoted => tracing::info!("promoted: this node is now a manager"),
        Report::Demoted => tracing::info!("demoted: this node is now a worker"),
    }
}

impl NodeRoles {
    pub(crate) fn new(data_root: &Path, engine: LocalEngine, metrics: Arc<Metrics>) -> NodeRoles {
        NodeRoles {
            data_root: data_root.to_path_buf(),
            engine,
            gate: ControlGate::default(),
            state: Arc::default(),
            networking: Arc::new(NodeNetworking::new(data_root)),
            metrics,
        }
    }

    pub(crate) fn control_gate(&self) -> ControlGate {
        self.gate.clone()
    }

    fn swarm_dir(&self) -> SwarmDir {
        SwarmDir::new(&self.data_root)
    }

    /// Takes up the roles this node had before the daemon restarted.
    pub(crate) async fn resume(&self) -> Result<(), manager::ManagerError> {
        let swarm_dir = self.swarm_dir();
        let Some((membership, identity)) = swarm_dir.load()? else {
            return Ok(());
        };
        let mut state = self.state.lock().await;
        if membership.role == MembershipRole::Manager {
            match swarm_dir.load_data_key()? {
                StoredDataKey::Clear(data_key) => {
                    let manager = ManagerRole::start(
                        &swarm_dir,
                        membership.clone(),
                        identity.clone(),
                        data_key,
                        Arc::clone(&self.metrics),
                    )
                    .await?;
                    self.gate.set(Some(manager.control()));
                    state.manager = Some(manager);
                }
                StoredDataKey::Sealed(sealed) => {
                    self.gate.set_locked();
                    state.locked = Some(sealed);
                    state.membership = Some(membership);
                    tracing::warn!(
                        "the swarm is locked: this manager's data key is sealed by the unlock key; run 'shoal swarm unlock' to start it"
                    );
                    return Ok(());
                }
            }
        }
        state.agent = Some(self.start_agent(&membership, identity));
        state.membership = Some(membership);
        tracing::info!("rejoined the swarm");
        Ok(())
    }

    /// `swarm unlock`: opens the sealed data key with the unlock key and starts the manager
    /// role and the worker agent.
    async fn unlock(&self, request: UnlockRequest) -> Result<(), Status> {
        let mut state = self.state.lock().await;
        let Some(sealed) = &state.locked else {
            return Err(Status::failed_precondition(if state.membership.is_none() {
                "this node is not part of a swarm: there is nothing to unlock"
            } else {
                "swarm is not locked"
            }));
        };
        let unlock_key = UnlockKey::parse(&request.unlock_key).map_err(|error| {
            Status::invalid_argument(format!("swarm could not be unlocked: {error}"))
        })?;
        let data_key = sealed.unseal(&unlock_key).map_err(Status::from)?;
        let swarm_dir = self.swarm_dir();
        let (membership, identity) = swarm_dir
            .load()
            .map_err(Status::from)?
            .ok_or_else(|| Status::internal("the swarm state vanished while locked"))?;
        let manager = ManagerRole::start(
            &swarm_dir,
            membership.clone(),
            identity.clone(),
            data_key,
            Arc::clone(&self.metrics),
        )
        .await
        .map_err(Status::from)?;
        self.gate.set(Some(manager.control()));
        state.manager = Some(manager);
        state.agent = Some(self.start_agent(&membership, identity));
        state.membership = Some(membership);
        state.locked = None;
        tracing::info!("swarm unlocked: the manager role is running");
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
        let link = Arc::new(ManagerLink {
            manager_addrs: RwLock::new(membership.manager_addrs.clone()),
            identity: RwLock::new(identity),
            leader_hint: RwLock::new(None),
            next: AtomicUsize::new(0),
            last_tried: RwLock::new(None),
            session: watch::channel(None).0,
            reconnect: tokio::sync::Notify::new(),
        });
        let engine = Arc::new(MeteredEngine::new(
            self.engine.clone(),
            self.metrics.engine.clone(),
        ));
        self.networking.set_node(
            membership
                .advertise_addr
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|addr| (membership.node_id.clone(), addr.ip())),
        );
        let connector = ManagerConnector {
            link: Arc::clone(&link),
            networking: Arc::clone(&self.networking),
        };
        let agent_stopped = stopped.clone();
        let networking: Arc<dyn worker::networking::TaskNetworking> =
            Arc::clone(&self.networking) as _;
        let agent = tokio::spawn(async move {
            if let Err(error) =
                worker::run_agent(config, engine, connector, agent_stopped, networking).await
            {
                tracing::error!(%error, "the worker agent stopped");
            }
        });
        let session = link.session.subscribe();
        let follower = tokio::spawn(self.clone().follow_managers(
            membership.clone(),
            link,
            stopped,
        ));
        RunningAgent {
            stop,
            session,
            agent,
            follower,
        }
    }

    /// Acts on what the managers say about this node, and renews its certificate in time,
    /// until `stop`: the shell of the [`RoleFollower`], which decides.
    async fn follow_managers(
        self,
        membership: Membership,
        link: Arc<ManagerLink>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut messages = link.session.subscribe();
        let node = NodeView {
            role: role_of(&membership),
            manager_addrs: membership.manager_addrs,
            trusted_roots: read(&link.identity).ca_pem,
            validity: validity(&read(&link.identity)),
        };
        let mut follower = RoleFollower::new(node, SystemTime::now(), rand::random());
        loop {
            let until_wake = follower
                .next_wake()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let event = tokio::select! {
                changed = messages.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let message = messages.borrow_and_update().clone();
                    let Some(message) = message else { continue };
                    Event::Session(SessionView::of(&message, read(&link.manager_addrs)))
                }
                () = tokio::time::sleep(until_wake) => Event::Tick,
                _ = stop.changed() => return,
            };
            self.follow_round(&mut follower, &link, event).await;
        }
    }

    /// Steps the follower with `event` and carries out its commands in order, feeding each
    /// outcome back, under the state lock so that no other role change interleaves.
    async fn follow_round(&self, follower: &mut RoleFollower, link: &ManagerLink, event: Event) {
        let mut state = self.state.lock().await;
        if state.membership.is_none() {
            return;
        }
        let mut issued: Option<TlsIdentity> = None;
        let mut commands: VecDeque<Command> = follower
            .step(event, SystemTime::now(), rand::random())
            .into();
        while let Some(command) = commands.pop_front() {
            let outcome = match command {
                Command::Report(report) => {
                    log_report(report);
                    continue;
                }
                command => match self.carry_out(&mut state, link, &mut issued, command).await {
                    Ok(Some(certificate)) => Event::Issued(certificate),
                    Ok(None) => Event::Done,
                    Err(error) => Event::Failed(error.to_string()),
                },
            };
            commands.extend(follower.step(outcome, SystemTime::now(), rand::random()));
        }
    }

    /// Carries out one of the follower's commands; a renewal returns what was issued (and
    /// keeps the certificate in `issued` for the command that uses it).
    async fn carry_out(
        &self,
        state: &mut RoleState,
        link: &ManagerLink,
        issued: &mut Option<TlsIdentity>,
        command: Command,
    ) -> Result<Option<Issued>, manager::ManagerError> {
        let Some(mut membership) = state.membership.clone() else {
            return Err(manager::ManagerError::FailedPrecondition(
                "this node left the swarm".to_owned(),
            ));
        };
        let swarm_dir = self.swarm_dir();
        let take_issued = |issued: &mut Option<TlsIdentity>| {
            issued.take().ok_or_else(|| {
                manager::ManagerError::FailedPrecondition(
                    "no certificate was issued to put to use".to_owned(),
                )
            })
        };
        match command {
            Command::SaveManagerAddrs(addrs) => {
                membership.manager_addrs = addrs;
                swarm_dir.save(&membership, &read(&link.identity))?;
                state.membership = Some(membership);
            }
            Command::RenewCertificate => {
                let (identity, role) = manager::join::renew_certificate(
                    &membership.manager_addrs,
                    &read(&link.identity),
                )
                .await?;
                let certificate = Issued {
                    role,
                    trusted_roots: identity.ca_pem.clone(),
                    validity: validity(&identity),
                };
                *issued = Some(identity);
                return Ok(Some(certificate));
            }
            Command::InstallCertificate => {
                let identity = take_issued(issued)?;
                swarm_dir.save(&membership, &identity)?;
                write(&link.identity, identity);
                link.reconnect.notify_one();
            }
            Command::ManagerTakesCertificate => {
                if let Some(manager) = &state.manager {
                    manager.replace_identity(&read(&link.identity))?;
                }
            }
            Command::TakeRole(role) => {
                let identity = take_issued(issued)?;
                match role {
                    NodeRole::Manager => {
                        membership.role = MembershipRole::Manager;
                        membership.raft_member_id =
                            manager::raft_member_id_for(&membership.node_id);
                        let manager = ManagerRole::start_new(
                            &swarm_dir,
                            membership.clone(),
                            identity.clone(),
                            Arc::clone(&self.metrics),
                        )
                        .await?;
                        let joined = manager::join::join_raft(
                            &membership.manager_addrs,
                            &identity,
                            membership.raft_member_id,
                            &membership.advertise_addr,
                        )
                        .await;
                        if let Err(error) = joined {
                            manager.shutdown().await;
                            let _ = swarm_dir.remove_manager_data();
                            membership.role = MembershipRole::Worker;
                            membership.raft_member_id = 0;
                            swarm_dir.save(&membership, &read(&link.identity))?;
                            return Err(error);
                        }
                        self.gate.set(Some(manager.control()));
                        state.manager = Some(manager);
                    }
                    NodeRole::Worker => {
                        self.gate.set(None);
                        if let Some(manager) = state.manager.take() {
                            manager.shutdown().await;
                        }
                        membership.role = MembershipRole::Worker;
                        membership.raft_member_id = 0;
                        swarm_dir.save(&membership, &identity)?;
                        let _ = swarm_dir.remove_manager_data();
                    }
                }
                write(&link.identity, identity);
                link.reconnect.notify_one();
                state.membership = Some(membership);
            }
            Command::Report(report) => log_report(report),
        }
        Ok(None)
    }

    async fn init(&self, request: InitRequest) -> Result<String, Status> {
        let mut state = self.state.lock().await;
        if request.force_new_cluster {
            return self.force_new_cluster(&mut state).await;
        }
        if let Some(membership) = &state.membership {
            return Err(Status::failed_precondition(format!(
                "this node is already part of a swarm (node {}): it can't found another; to recover a swarm that lost its quorum, use --force-new-cluster",
                membership.node_id
            )));
        }
        let options = InitOptions {
            advertise_addr: request.advertise_addr,
            listen_addr: request.listen_addr,
            default_addr_pool: request.default_addr_pool,
            subnet_size: request.subnet_size,
            task_history_limit: request.task_history_limit,
            dispatcher_heartbeat: request
                .dispatcher_heartbeat
                .as_ref()
                .map(spec::time::std_duration),
            hostname: hostname(),
            autolock: request.autolock,
        };
        let swarm_dir = self.swarm_dir();
        let manager = ManagerRole::init(&swarm_dir, options, Arc::clone(&self.metrics))
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

    /// `swarm init --force-new-cluster` on a manager: its state becomes a new one-manager
    /// cluster. A locked manager is unlocked first, as in Docker.
    async fn force_new_cluster(&self, state: &mut RoleState) -> Result<String, Status> {
        if state.locked.is_some() {
            return Err(Status::failed_precondition(SWARM_LOCKED));
        }
        let swarm_dir = self.swarm_dir();
        let (membership, identity) = swarm_dir.load().map_err(Status::from)?.ok_or_else(|| {
            Status::failed_precondition(
                "--force-new-cluster recovers a manager's swarm, and this node is in none: run 'shoal swarm init' without it",
            )
        })?;
        if membership.role != MembershipRole::Manager {
            return Err(Status::failed_precondition(
                "--force-new-cluster needs a manager's copy of the swarm, and this node is a worker: run it on a manager",
            ));
        }
        let Some(running) = state.manager.take() else {
            return Err(Status::failed_precondition(
                "this manager's role is not running, so its data key is not at hand: restart the daemon, then try again",
            ));
        };
        let data_key = running.data_key().clone();
        self.gate.set(None);
        running.shutdown().await;
        let manager = ManagerRole::force_new_cluster(
            &swarm_dir,
            membership.clone(),
            identity,
            data_key,
            Arc::clone(&self.metrics),
        )
        .await
        .map_err(Status::from)?;
        self.gate.set(Some(manager.control()));
        state.manager = Some(manager);
        Ok(membership.node_id)
    }

    async fn join(&self, request: JoinRequest) -> Result<JoinResponse, Status> {
        let mut state = self.state.lock().await;
        if let Some(membership) = &state.membership {
            return Err(Status::failed_precondition(format!(
                "this node is already part of a swarm (node {}): leave it first with 'shoal swarm leave'",
                membership.node_id
            )));
        }
        if request.remote_addr.is_empty() {
            return Err(Status::invalid_argument(
                "give the address of a manager, HOST:PORT, such as 10.0.0.1:2377",
            ));
        }
        let listen =
            manager::address::parse_listen_addr(&request.listen_addr).map_err(Status::from)?;
        let remote = if request.remote_addr.contains(':') {
            request.remote_addr.clone()
        } else {
            format!("{}:{}", request.remote_addr, listen.port())
        };
        let grant = manager::join::join(
            &remote,
            &request.token,
            &hostname(),
            &request.advertise_addr,
        )
        .await
        .map_err(Status::from)?;
        let advertise = if request.advertise_addr.is_empty() {
            std::net::SocketAddr::new(grant.local_ip, listen.port())
        } else {
            manager::address::choose_advertise_addr(&request.advertise_addr, listen, &[])
                .map_err(Status::from)?
        };
        let mut manager_addrs = grant.manager_addrs.clone();
        if manager_addrs.is_empty() {
            manager_addrs.push(remote.clone());
        }
        let membership = grant.membership(listen.to_string(), advertise.to_string(), manager_addrs);
        let swarm_dir = self.swarm_dir();
        if membership.role != MembershipRole::Manager {
            swarm_dir
                .save(&membership, &grant.identity)
                .map_err(Status::from)?;
        } else {
            let started = async {
                let manager = ManagerRole::start_new(
                    &swarm_dir,
                    membership.clone(),
                    grant.identity.clone(),
                    Arc::clone(&self.metrics),
                )
                .await?;
                if let Err(error) = manager::join::join_raft(
                    &membership.manager_addrs,
                    &grant.identity,
                    membership.raft_member_id,
                    &membership.advertise_addr,
                )
                .await
                {
                    manager.shutdown().await;
                    return Err(error);
                }
                Ok::<ManagerRole, manager::ManagerError>(manager)
            }
            .await;
            match started {
                Ok(manager) => {
                    self.gate.set(Some(manager.control()));
                    state.manager = Some(manager);
                }
                Err(error) => {
                    let _ = swarm_dir.remove();
                    return Err(Status::unavailable(format!(
                        "node {} was admitted but could not start as a manager or join the managers' Raft group: {error}; remove it with 'shoal node rm --force {}' on a manager and join again",
                        grant.node_id, grant.node_id
                    )));
                }
            }
        }
        state.agent = Some(self.start_agent(&membership, grant.identity));
        state.membership = Some(membership);
        tracing::info!(node = %grant.node_id, role = ?grant.role, "joined the swarm");
        Ok(JoinResponse {
            node_id: grant.node_id,
            role: grant.role as i32,
        })
    }

    async fn leave(&self, request: LeaveRequest) -> Result<(), Status> {
        let mut state = self.state.lock().await;
        if state.membership.is_none() {
            return Err(Status::failed_precondition(
                "this node is not part of a swarm",
            ));
        }
        if state.locked.is_some() && !request.force {
            return Err(Status::failed_precondition(
                "Swarm is encrypted and locked. Please unlock it first with 'shoal swarm unlock' or use `--force` to ignore this message.",
            ));
        }
        state.locked = None;
        if let Some(manager) = &state.manager {
            manager.leave(request.force).await.map_err(Status::from)?;
        }
        self.gate.set(None);
        if let Some(manager) = state.manager.take() {
            manager.shutdown().await;
        }
        if let Some(agent) = state.agent.take() {
            stop_agent(agent).await;
        }
        self.remove_task_containers().await;
        self.networking.set_node(None);
        if let Err(error) = self.networking.remove_all().await {
            tracing::warn!(%error, "could not remove all of the node's overlay networking");
        }
        let _ = std::fs::remove_dir_all(self.data_root.join("worker"));
        self.swarm_dir().remove().map_err(Status::from)?;
        state.membership = None;
        tracing::info!("left the swarm");
        Ok(())
    }

    /// Removes the containers of the swarm's tasks: they belong to the swarm this node left.
    async fn remove_task_containers(&self) {
        let containers = match self.engine.list(true).await {
            Ok(containers) => containers,
            Err(error) => {
                tracing::warn!(%error, "could not list the swarm's containers to remove them");
                return;
            }
        };
        for container in containers.iter().filter(|container| {
            container
                .spec
                .labels
                .contains_key(worker::convert::LABEL_TASK_ID)
        }) {
            if let Err(error) = self.engine.remove(&container.id, true).await {
                tracing::warn!(container = %container.id, %error, "could not remove a task's container");
            }
        }
    }

    async fn info(&self) -> InfoResponse {
        let state = self.state.lock().await;
        let mut info = InfoResponse {
            engine_version: ENGINE_VERSION.to_owned(),
            hostname: hostname(),
            routing_mesh: self.networking.routing_mesh(),
            ..Default::default()
        };
        let Some(membership) = &state.membership else {
            return info;
        };
        info.local_node_state = if state.locked.is_some() {
            info_response::LocalNodeState::Locked
        } else {
            info_response::LocalNodeState::Active
        } as i32;
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
        } else if let Some(agent) = &state.agent {
            // A worker knows the managers from its session, as a Docker worker lists them.
            if let Some(session) = agent.session.borrow().as_ref() {
                info.remote_managers = session
                    .managers
                    .iter()
                    .filter_map(|manager| manager.peer.as_ref())
                    .map(|peer| (peer.node_id.clone(), peer.addr.clone()))
                    .collect();
            }
        }
        info
    }

    /// Why this node's manager role stopped for good, if it did: its Raft store hit a fatal
    /// storage error.
    pub(crate) fn manager_failure(&self) -> Option<String> {
        // A role change holds the lock for a while; the next check sees its outcome.
        let state = self.state.try_lock().ok()?;
        state.manager.as_ref()?.fatal_error()
    }

    /// Stops the agent, the manager role and the node's networking passes (the routing mesh's
    /// table goes). Containers keep running.
    pub(crate) async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        self.gate.set(None);
        if let Some(agent) = state.agent.take() {
            stop_agent(agent).await;
        }
        if let Some(manager) = state.manager.take() {
            manager.shutdown().await;
        }
        self.networking.stop().await;
    }
}

async fn stop_agent(agent: RunningAgent) {
    agent.follower.abort();
    let _ = agent.stop.send(true);
    let _ = agent.agent.await;
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

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        Ok(Response::new(
            NodeRoles::join(self, request.into_inner()).await?,
        ))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        NodeRoles::leave(self, request.into_inner()).await?;
        Ok(Response::new(LeaveResponse {}))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        NodeRoles::unlock(self, request.into_inner()).await?;
        Ok(Response::new(UnlockResponse {}))
    }

    async fn network_attachments(
        &self,
        request: Request<NetworkAttachmentsRequest>,
    ) -> Result<Response<NetworkAttachmentsResponse>, Status> {
        let network_id = request.into_inner().network_id;
        let (attachments, peers) = self.networking.attachments(&network_id).await;
        let containers = self
            .engine
            .list(true)
            .await
            .map_err(|error| Status::internal(format!("listing the containers: {error}")))?;
        let endpoints = attachments
            .into_iter()
            .map(|attachment| network_attachments_response::Endpoint {
                container_id: containers
                    .iter()
                    .find(|container| container.name == attachment.container_name)
                    .map(|container| container.id.clone())
                    .unwrap_or_default(),
                name: attachment.container_name,
                endpoint_id: attachment.task_id,
                mac_address: attachment.mac,
                ipv4_address: attachment.address,
            })
            .collect();
        let peers = peers
            .into_iter()
            .map(|peer| network_attachments_response::Peer {
                name: peer.node,
                ip: peer.address.to_string(),
            })
            .collect();
        Ok(Response::new(NetworkAttachmentsResponse {
            endpoints,
            peers,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::next_manager;

    #[test]
    fn a_connect_passes_over_the_manager_tried_last_when_there_is_another() {
        let addrs: Vec<String> = ["m1:2377", "m2:2377", "m3:2377"].map(String::from).into();
        assert_eq!(next_manager(&addrs, 0, None), Some("m1:2377"));
        assert_eq!(next_manager(&addrs, 4, Some("m1:2377")), Some("m2:2377"));
        // The leader a session was open with stopped answering: the next turn falls on it.
        assert_eq!(next_manager(&addrs, 3, Some("m1:2377")), Some("m2:2377"));
        assert_eq!(next_manager(&addrs, 5, Some("m3:2377")), Some("m1:2377"));
        let one = vec!["m1:2377".to_owned()];
        assert_eq!(next_manager(&one, 7, Some("m1:2377")), Some("m1:2377"));
        assert_eq!(next_manager(&[], 0, None), None);
    }
}
