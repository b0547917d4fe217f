//! The manager role as one running unit: the Raft store, the cluster port (2377: Raft and the
//! dispatcher, over mutual TLS), the orchestration loop, the dispatcher and the control API.
//! `swarm init` founds a new swarm with [`ManagerRole::init`]; a restarted daemon resumes its
//! role with [`ManagerRole::start`], given the manager's data key (unsealed by the unlock key
//! first under autolock). While it runs, the role keeps its data key file sealed as the swarm's
//! autolock setting says.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use raft_store::{DataKey, Store, StoreConfig, StoreError, TlsIdentity, Transaction, TxnRejection};
use shoal_metrics::{ManagerAttachment, Metrics};
use shoal_proto::api::control_server::ControlServer;
use shoal_proto::api::dispatcher_server::DispatcherServer;
use shoal_proto::api::node_ca_server::NodeCaServer;
use shoal_proto::api::raft_membership_server::RaftMembershipServer;
use shoal_proto::api::{
    self, Annotations, CaConfig, Cluster, ClusterSpec, DispatcherConfig, EncryptionConfig,
    ManagerStatus, Node, NodeDescription, NodeRole, NodeSpec, NodeStatus, OrchestrationConfig,
    RaftConfig, node_spec, node_status, raft_member_status,
};
use tokio::sync::{oneshot, watch};
use tonic::service::interceptor::InterceptedService;

use crate::address::{choose_advertise_addr, host_ipv4_addresses, parse_listen_addr};
use crate::authz::{ClusterAuth, ManagerCall};
use crate::ca::{DEFAULT_NODE_CERT_LIFETIME, RootCa};
use crate::cluster_port::{
    ClusterPortTls, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_CONNECTIONS,
    MAX_STREAMS_PER_CONNECTION,
};
use crate::control::ControlApi;
use crate::data_key::{self, UnlockKey};
use crate::dispatcher::{DispatcherService, LogBroker};
use crate::error::ManagerError;
use crate::join_token::JoinToken;
use crate::membership::{Membership, MembershipRole, SwarmDir};
use crate::network_keys;
use crate::node_ca::{NodeCaService, RaftMembershipService};
use crate::objects::{self, ClusterObject};
use crate::orchestration_loop::OrchestrationLoop;
use crate::state_metrics;
use crate::view::shared::SharedView;
use spec::defaults::NETWORK_KEY_ROTATION_INTERVAL;
use spec::time::{proto_duration, std_duration};

/// How often workers send heartbeats unless `swarm update --dispatcher-heartbeat` says
/// otherwise. Swarm's is 5 s; heartbeats cost no Raft writes, so a shorter one detects a dead
/// node (after three missed) in 3 s instead of 15.
pub const DEFAULT_DISPATCHER_HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a new single-member store may take to elect itself.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(10);

/// What `swarm init` asks for.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    pub advertise_addr: String,
    pub listen_addr: String,
    pub default_addr_pool: Vec<String>,
    /// 0 = /24.
    pub subnet_size: u32,
    pub task_history_limit: Option<i64>,
    pub dispatcher_heartbeat: Option<Duration>,
    /// This node's hostname, for its node object.
    pub hostname: String,
    /// Seals the managers' data keys by an unlock key, so a restarted manager stays locked
    /// until `swarm unlock`.
    pub autolock: bool,
}

/// The swarm as `shoal info` shows it from a manager.
#[derive(Clone, Debug, Default)]
pub struct SwarmSummary {
    pub managers: u64,
    pub nodes: u64,
    /// Node id and address of every manager.
    pub manager_addrs: Vec<(String, String)>,
}

/// A running manager.
pub struct ManagerRole {
    store: Arc<Store>,
    control: ControlApi,
    membership: Membership,
    stop: watch::Sender<bool>,
    server: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    tls: ClusterPortTls,
    orchestration: tokio::task::JoinHandle<()>,
    data_key: DataKey,
    data_key_keeper: tokio::task::JoinHandle<()>,
    /// Lends the daemon's `/metrics` this manager's state while the role runs.
    metrics_attachment: Option<ManagerAttachment>,
}

/// A node's member id in the managers' Raft group, derived from its node id: the same on every
/// attempt, so a manager whose join was interrupted retries as the same member rather than
/// leaving a stranger behind at its address.
pub fn raft_member_id_for(node_id: &str) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(node_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 0 is never a member id.
    u64::from_be_bytes(first).max(1)
}

impl ManagerRole {
    /// Founds a new swarm with this node as its only manager, recording into `metrics`. Nothing
    /// is left on disk if it fails.
    pub async fn init(
        swarm_dir: &SwarmDir,
        options: InitOptions,
        metrics: Arc<Metrics>,
    ) -> Result<ManagerRole, ManagerError> {
        if let Some((membership, _)) = swarm_dir.load()? {
            return Err(ManagerError::FailedPrecondition(format!(
                "this node is already part of a swarm (node {}, cluster {}): it can't found another",
                membership.node_id, membership.cluster_id
            )));
        }
        let settings = InitSettings::of_options(&options)?;
        let (listener, bound) = bind_cluster_port(&options.listen_addr).await?;
        let advertise =
            choose_advertise_addr(&options.advertise_addr, bound, &host_ipv4_addresses())?;

        let data_key = DataKey::generate()?;
        let unlock_key = options.autolock.then(UnlockKey::generate).transpose()?;
        let cluster_id = raft_store::new_object_id();
        let node_id = raft_store::new_object_id();
        let raft_member_id = raft_member_id_for(&node_id);
        let root_ca = RootCa::generate()?;
        let identity = root_ca
            .issue(
                &node_id,
                NodeRole::Manager,
                &cluster_id,
                DEFAULT_NODE_CERT_LIFETIME,
            )?
            .tls_identity(&root_ca.cert_pem);
        let membership = Membership {
            node_id: node_id.clone(),
            cluster_id: cluster_id.clone(),
            role: MembershipRole::Manager,
            raft_member_id,
            listen_addr: bound.to_string(),
            advertise_addr: advertise.to_string(),
            manager_addrs: vec![advertise.to_string()],
        };
        let mut cluster = founding_cluster(&cluster_id, &root_ca, &options, settings)?;
        let node = founding_node(&node_id, raft_member_id, advertise, &options.hostname);
        // The routing mesh's network, as `docker swarm init` makes it.
        let ingress = api::Network {
            id: raft_store::new_object_id(),
            spec: Some(spec::defaults::ingress_network_spec(
                options.default_addr_pool.is_empty(),
            )),
            ..Default::default()
        };
        if let Some(unlock_key) = &unlock_key {
            data_key::settle_unlock_keys(&mut cluster, false, || Ok(unlock_key.clone()))?;
        }
        let founded = found_store(
            swarm_dir,
            &membership,
            &identity,
            &data_key,
            &metrics,
            unlock_key.as_ref(),
            vec![
                objects::create(&cluster),
                objects::create(&node),
                objects::create(&ingress),
            ],
        )
        .await;
        let store = match founded {
            Ok(store) => store,
            Err(error) => {
                if let Err(cleanup) = swarm_dir.remove() {
                    tracing::warn!(%cleanup, "could not remove the half-made swarm folder");
                }
                return Err(error);
            }
        };
        tracing::info!(node = %node_id, cluster = %cluster_id, addr = %advertise, autolock = options.autolock, "swarm initialised");
        ManagerRole::run(
            Arc::new(store),
            listener,
            membership,
            &identity,
            swarm_dir,
            data_key,
            metrics,
        )
    }

    /// Starts the manager role of a node that has just become a manager (joined with a manager
    /// token, or promoted): makes its data key, then saves its membership and certificate, then
    /// starts, so a saved manager membership always has its key. Joining the Raft group is the
    /// caller's next step ([`crate::join::join_raft`]).
    pub async fn start_new(
        swarm_dir: &SwarmDir,
        membership: Membership,
        identity: TlsIdentity,
        metrics: Arc<Metrics>,
    ) -> Result<ManagerRole, ManagerError> {
        let data_key = swarm_dir.new_manager_data_key()?;
        swarm_dir.save(&membership, &identity)?;
        ManagerRole::start(swarm_dir, membership, identity, data_key, metrics).await
    }

    /// Resumes the manager role of a node that already belongs to a swarm, with the manager's
    /// data key: the one in its data key file, or for a manager that starts for the first time,
    /// [`SwarmDir::new_manager_data_key`]. It records into `metrics`.
    pub async fn start(
        swarm_dir: &SwarmDir,
        membership: Membership,
        identity: TlsIdentity,
        data_key: DataKey,
        metrics: Arc<Metrics>,
    ) -> Result<ManagerRole, ManagerError> {
        let listener = tokio::net::TcpListener::bind(&membership.listen_addr)
            .await
            .map_err(|error| {
                ManagerError::FailedPrecondition(format!(
                    "cannot listen on {} for the swarm: {error}; free the port, or stop whatever else uses it",
                    membership.listen_addr
                ))
            })?;
        let store = Store::open(store_config(
            swarm_dir,
            &membership,
            &identity,
            &data_key,
            &metrics,
        ))
        .await?;
        ManagerRole::run(
            Arc::new(store),
            listener,
            membership,
            &identity,
            swarm_dir,
            data_key,
            metrics,
        )
    }

    /// Recovers from a lost quorum (`swarm init --force-new-cluster`): this manager's copy of
    /// the state becomes a new cluster with this manager as its only member. Nodes, services and
    /// tasks are kept; the other managers are no longer members, and show as unreachable until
    /// they are demoted or removed.
    pub async fn force_new_cluster(
        swarm_dir: &SwarmDir,
        membership: Membership,
        identity: TlsIdentity,
        data_key: DataKey,
        metrics: Arc<Metrics>,
    ) -> Result<ManagerRole, ManagerError> {
        raft_store::force_new_cluster(
            &swarm_dir.raft_dir(),
            &data_key,
            membership.raft_member_id,
            &membership.advertise_addr,
        )
        .await?;
        let manager =
            ManagerRole::start(swarm_dir, membership, identity, data_key, metrics).await?;
        manager.store.wait_for_leader(BOOTSTRAP_TIMEOUT).await?;
        tracing::warn!("a new cluster was forced from this manager's state");
        Ok(manager)
    }

    fn run(
        store: Arc<Store>,
        listener: tokio::net::TcpListener,
        membership: Membership,
        identity: &TlsIdentity,
        swarm_dir: &SwarmDir,
        data_key: DataKey,
        metrics: Arc<Metrics>,
    ) -> Result<ManagerRole, ManagerError> {
        let (stop, stopped) = watch::channel(false);
        let data_key_keeper = tokio::spawn(keep_data_key_file_sealed(
            Arc::clone(&store),
            swarm_dir.clone(),
            data_key.clone(),
            stopped.clone(),
        ));
        let heartbeat = watch::channel(DEFAULT_DISPATCHER_HEARTBEAT);
        tokio::spawn(follow_heartbeat_setting(
            Arc::clone(&store),
            heartbeat.0,
            stopped.clone(),
        ));
        tokio::spawn(finish_root_rotations(Arc::clone(&store), stopped.clone()));
        tokio::spawn(rotate_network_keys(Arc::clone(&store), stopped.clone()));
        let logs = LogBroker::default();
        let view = SharedView::start(Arc::clone(&store), stopped.clone())?;
        tokio::spawn(record_manager_reachability(
            Arc::clone(&store),
            Arc::clone(&view),
            stopped.clone(),
        ));
        let dispatcher = DispatcherService::start(
            Arc::clone(&store),
            heartbeat.1,
            Arc::clone(&view),
            logs.clone(),
            metrics.dispatcher.clone(),
            stopped.clone(),
        )?;
        let metrics_attachment = {
            let (store, view, dispatcher) =
                (Arc::clone(&store), Arc::clone(&view), dispatcher.clone());
            metrics.attach_manager(move || state_metrics::sample(&store, &view, &dispatcher))
        };
        let orchestration_loop = OrchestrationLoop::new(Arc::clone(&store))
            .with_view(Arc::clone(&view))
            .with_metrics(metrics.orchestration.clone());
        let given_up = orchestration_loop.given_up_slots();
        let orchestration = tokio::spawn(orchestration_loop.run_supervised(stopped.clone()));
        let control = ControlApi::new(Arc::clone(&store), Arc::clone(&view), given_up, logs);

        let auth = ClusterAuth::new(Arc::clone(&store), membership.cluster_id.clone());
        let tls = ClusterPortTls::new(identity)?;
        let router = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .add_service(store.guarded_raft_service(auth.raft_guard()))
            .add_service(InterceptedService::new(
                DispatcherServer::new(dispatcher),
                auth.members_only(),
            ))
            .add_service(NodeCaServer::new(NodeCaService::new(
                Arc::clone(&store),
                view,
                auth.clone(),
            )))
            .add_service(InterceptedService::new(
                RaftMembershipServer::new(RaftMembershipService::new(
                    Arc::clone(&store),
                    auth.clone(),
                )),
                auth.managers_only(ManagerCall::RaftJoin),
            ))
            .add_service(InterceptedService::new(
                ControlServer::new(control.clone()),
                auth.managers_only(ManagerCall::Control),
            ));
        let incoming = tls.incoming(listener, MAX_CONNECTIONS);
        let (stop_server, server_stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            let shutdown = async {
                let _ = server_stopped.await;
            };
            if let Err(error) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!(%error, "the cluster port stopped serving");
            }
        });
        Ok(ManagerRole {
            store,
            control,
            membership,
            stop,
            server: Some((stop_server, serving)),
            tls,
            orchestration,
            data_key,
            data_key_keeper,
            metrics_attachment: Some(metrics_attachment),
        })
    }

    /// Puts a new certificate (a renewal, a root rotation) to use without a restart: new
    /// connections to the cluster port see it, and calls to other managers show it. Saving it
    /// to disk is the caller's business.
    pub fn replace_identity(&self, identity: &TlsIdentity) -> Result<(), ManagerError> {
        self.tls.replace(identity)?;
        self.store.replace_tls(identity);
        Ok(())
    }

    /// Why this manager's Raft store stopped for good, if it did: a failed write to its log or
    /// snapshot. Such a manager neither leads nor votes until its daemon restarts.
    pub fn fatal_error(&self) -> Option<String> {
        self.store.fatal_error()
    }

    pub fn control(&self) -> ControlApi {
        self.control.clone()
    }

    /// The Raft store this manager serves, for callers that read or write objects directly
    /// (tests that play a stale manager, for one).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The key this manager's Raft store is sealed with.
    pub fn data_key(&self) -> &DataKey {
        &self.data_key
    }

    /// Takes this manager out of the Raft group before the node leaves the swarm; refused
    /// without `force` when the managers left would lose their quorum.
    pub async fn leave(&self, force: bool) -> Result<(), ManagerError> {
        self.control
            .leave_managers(&self.membership.node_id, force)
            .await
    }

    /// Counts of managers and nodes, from this manager's copy of the store.
    pub fn summary(&self) -> Result<SwarmSummary, ManagerError> {
        let nodes: Vec<Node> = self
            .store
            .local_view(|view| objects::decode_all(view.list(Node::KIND)))?;
        let manager_addrs: Vec<(String, String)> = nodes
            .iter()
            .filter_map(|node| {
                let status = node.manager_status.as_ref()?;
                Some((node.id.clone(), status.addr.clone()))
            })
            .collect();
        Ok(SwarmSummary {
            managers: manager_addrs.len() as u64,
            nodes: nodes.len() as u64,
            manager_addrs,
        })
    }

    /// Stops serving and closes the store. Containers are not touched.
    pub async fn shutdown(mut self) {
        // A scrape from here on sees no manager, rather than one winding down.
        self.metrics_attachment.take();
        let _ = self.stop.send(true);
        if let Some((stop, serving)) = self.server.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(2), serving).await;
        }
        let _ = (&mut self.orchestration).await;
        // A data key file written after this returns could outlive a demotion's clean-up.
        let _ = (&mut self.data_key_keeper).await;
        drop(self.control);
        // Session streams may still hold the store for a moment; it is closed all the same, so
        // the role can start again on the same data at once (a new certificate, a promotion).
        if let Err(error) = self.store.shutdown().await {
            tracing::warn!(%error, "closing the store");
        }
    }
}

/// What `swarm init`'s options come to once checked, with Swarm's defaults for what they leave
/// out.
#[derive(Clone, Copy, Debug)]
struct InitSettings {
    subnet_size: u32,
    heartbeat: Duration,
    /// Ended tasks kept per slot; 0 (keep none) is a real limit.
    task_history_limit: i64,
}

impl InitSettings {
    /// Checks the options that need no network: address pools, and the task history and
    /// heartbeat by the rules `swarm update` meets too (`spec::validate::cluster_spec`).
    fn of_options(options: &InitOptions) -> Result<InitSettings, ManagerError> {
        let subnet_size = if options.subnet_size == 0 {
            spec::defaults::SUBNET_SIZE
        } else {
            options.subnet_size
        };
        spec::validate::address_pools(&address_pools(options), subnet_size)?;
        let settings = InitSettings {
            subnet_size,
            heartbeat: options
                .dispatcher_heartbeat
                .unwrap_or(DEFAULT_DISPATCHER_HEARTBEAT),
            task_history_limit: options
                .task_history_limit
                .unwrap_or(spec::defaults::TASK_HISTORY_LIMIT),
        };
        spec::validate::cluster_spec(&ClusterSpec {
            orchestration: Some(settings.orchestration()),
            dispatcher: Some(settings.dispatcher()),
            ..Default::default()
        })?;
        Ok(settings)
    }

    fn orchestration(&self) -> OrchestrationConfig {
        OrchestrationConfig {
            task_history_retention_limit: self.task_history_limit,
        }
    }

    fn dispatcher(&self) -> DispatcherConfig {
        DispatcherConfig {
            heartbeat_period: Some(proto_duration(self.heartbeat)),
        }
    }
}

/// The address pools `swarm init` asked for, or Swarm's default pool.
fn address_pools(options: &InitOptions) -> Vec<String> {
    if options.default_addr_pool.is_empty() {
        vec![spec::defaults::ADDRESS_POOL.to_owned()]
    } else {
        options.default_addr_pool.clone()
    }
}

/// Binds the cluster port `swarm init` asked for; answers the listener and the address it got.
async fn bind_cluster_port(
    listen_addr: &str,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), ManagerError> {
    let listen = parse_listen_addr(listen_addr)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| {
            ManagerError::InvalidArgument(format!(
                "cannot listen on {listen}: {error}; pick another address with --listen-addr"
            ))
        })?;
    let bound = listener.local_addr().map_err(|source| ManagerError::Io {
        what: "reading the address of",
        path: listen.to_string().into(),
        source,
    })?;
    Ok((listener, bound))
}

/// The cluster object a new swarm starts with: its settings, root CA, join tokens and network
/// keys.
fn founding_cluster(
    cluster_id: &str,
    root_ca: &RootCa,
    options: &InitOptions,
    settings: InitSettings,
) -> Result<Cluster, ManagerError> {
    let root_der = crate::ca::pem_to_der(&root_ca.cert_pem)?;
    let mut cluster = Cluster {
        id: cluster_id.to_owned(),
        spec: Some(ClusterSpec {
            annotations: Some(Annotations {
                name: "default".to_owned(),
                ..Default::default()
            }),
            orchestration: Some(settings.orchestration()),
            // What the store runs with, in Swarm's terms: ticks of 100 ms, a heartbeat
            // every tick and elections after 4 to 8 ticks without one.
            raft: Some(RaftConfig {
                snapshot_interval: 10_000,
                heartbeat_tick: 1,
                election_tick: 4,
                ..Default::default()
            }),
            dispatcher: Some(settings.dispatcher()),
            ca_config: Some(CaConfig {
                node_cert_expiry: Some(proto_duration(DEFAULT_NODE_CERT_LIFETIME)),
                ..Default::default()
            }),
            encryption_config: Some(EncryptionConfig {
                auto_lock_managers: options.autolock,
            }),
            ..Default::default()
        }),
        root_ca: Some(api::RootCa {
            ca_cert: root_ca.cert_pem.clone().into_bytes(),
            ca_key: root_ca.key_pem().as_bytes().to_vec(),
            ca_cert_hash: crate::join_token::ca_digest(&root_der),
            join_tokens: Some(api::JoinTokens {
                worker: JoinToken::generate(&root_der).to_string(),
                manager: JoinToken::generate(&root_der).to_string(),
            }),
            ..Default::default()
        }),
        default_address_pool: address_pools(options),
        subnet_size: settings.subnet_size,
        ..Default::default()
    };
    // The first sessions carry the network keys already; the leader rotates them from here.
    network_keys::settle_network_keys(
        &mut cluster,
        SystemTime::now(),
        NETWORK_KEY_ROTATION_INTERVAL,
        &mut rand::rng(),
    );
    Ok(cluster)
}

/// The node object of a swarm's founding manager: an accepted, active manager that leads.
fn founding_node(
    node_id: &str,
    raft_member_id: u64,
    advertise: std::net::SocketAddr,
    hostname: &str,
) -> Node {
    Node {
        id: node_id.to_owned(),
        spec: Some(NodeSpec {
            desired_role: NodeRole::Manager as i32,
            membership: node_spec::Membership::Accepted as i32,
            availability: node_spec::Availability::Active as i32,
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: hostname.to_owned(),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: node_status::State::Unknown as i32,
            message: String::new(),
            addr: advertise.ip().to_string(),
        }),
        manager_status: Some(ManagerStatus {
            raft_id: raft_member_id,
            addr: advertise.to_string(),
            leader: true,
            reachability: raft_member_status::Reachability::Reachable as i32,
        }),
        role: NodeRole::Manager as i32,
        ..Default::default()
    }
}

/// How this manager's Raft store member is set up: StoreConfig's defaults, recording into the
/// daemon's Raft families.
fn store_config(
    swarm_dir: &SwarmDir,
    membership: &Membership,
    identity: &TlsIdentity,
    data_key: &DataKey,
    metrics: &Metrics,
) -> StoreConfig {
    let mut config = StoreConfig::new(
        membership.raft_member_id,
        swarm_dir.raft_dir(),
        membership.advertise_addr.clone(),
        identity.clone(),
        data_key.clone(),
    );
    config.metrics = metrics.raft.clone();
    config
}

/// Writes the new swarm to disk: the data key file, a one-member store that elects itself and
/// holds the founding objects, then the membership and identity. The caller removes the swarm
/// folder if this fails.
async fn found_store(
    swarm_dir: &SwarmDir,
    membership: &Membership,
    identity: &TlsIdentity,
    data_key: &DataKey,
    metrics: &Metrics,
    unlock_key: Option<&UnlockKey>,
    founding_objects: Vec<raft_store::Change>,
) -> Result<Store, ManagerError> {
    swarm_dir.save_data_key(data_key, unlock_key)?;
    let store = Store::open(store_config(
        swarm_dir, membership, identity, data_key, metrics,
    ))
    .await?;
    store.bootstrap().await?;
    store.wait_for_leader(BOOTSTRAP_TIMEOUT).await?;
    store.write(Transaction::new(founding_objects)).await?;
    swarm_dir.save(membership, identity)?;
    Ok(store)
}

/// Keeps this manager's data key file sealed as the swarm's autolock setting says: by the
/// cluster's unlock key while autolock is on (again after each rotation), in clear while it is
/// off. A manager that was down during a rotation re-seals once it has caught up; until then
/// only the key from before the rotation unlocks it.
async fn keep_data_key_file_sealed(
    store: Arc<Store>,
    swarm_dir: SwarmDir,
    key: DataKey,
    mut stop: watch::Receiver<bool>,
) {
    const RETRY_DELAY: Duration = Duration::from_secs(5);
    let mut changes = store.watch(store.local_view(|view| view.applied_index()) + 1);
    // Right after a start the local copy may lag what is committed, and would have the file
    // sealed by a key rotated away since: act only on a state that has caught up.
    loop {
        tokio::select! {
            caught_up = store.read_barrier() => match caught_up {
                Ok(_) => break,
                Err(StoreError::ShuttingDown) => return,
                Err(error) => {
                    tracing::debug!(%error, "waiting to catch up before sealing the data key file");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.changed() => return,
                    }
                }
            },
            _ = stop.changed() => return,
        }
    }
    loop {
        let wanted = store.local_view(|view| {
            objects::cluster_of(view)
                .ok()
                .flatten()
                .map(|cluster| data_key::cluster_unlock_key(&cluster))
        });
        let mut failed = false;
        match wanted {
            // A manager that just joined may not have the cluster object yet.
            None => {}
            Some(Err(error)) => {
                tracing::warn!(%error, "can't tell how to seal this manager's data key file");
            }
            Some(Ok(wanted)) if !swarm_dir.data_key_sealed_by(wanted.as_ref()) => {
                match swarm_dir.save_data_key(&key, wanted.as_ref()) {
                    Ok(()) => tracing::info!(
                        autolock = wanted.is_some(),
                        "re-sealed this manager's data key file as the swarm's autolock setting says"
                    ),
                    Err(error) => {
                        failed = true;
                        tracing::error!(%error, "could not write this manager's data key file; retrying");
                    }
                }
            }
            Some(Ok(_)) => {}
        }
        // Waits for a change to the cluster object, or the time to retry a failed write.
        let retry_at = failed.then(|| tokio::time::Instant::now() + RETRY_DELAY);
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                next = changes.next() => match next {
                    Ok(committed) => {
                        if committed.changes.iter().any(|change| change.object().kind == Cluster::KIND) {
                            break;
                        }
                    }
                    Err(_) => {
                        changes = store.watch(store.local_view(|view| view.applied_index()) + 1);
                        break;
                    }
                },
                () = retry => break,
                _ = stop.changed() => return,
            }
        }
    }
}

/// On the leader, ends a root rotation once every node that is not down has shown a
/// certificate from the new root: the new root becomes the only one, and nodes renew once more
/// to trust only it.
async fn finish_root_rotations(store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    let mut changes = store.watch(store.local_view(|view| view.applied_index()) + 1);
    loop {
        if store.status().is_leader {
            // The nodes are decoded only while a rotation is under way: this runs on every
            // commit, and most commits in a big swarm are nodes' own.
            let state = store.local_view(|view| {
                let cluster = objects::cluster_of(view).ok()??;
                cluster.root_ca.as_ref()?.root_rotation.as_ref()?;
                let nodes = objects::decode_all::<Node>(view.list(Node::KIND)).ok()?;
                Some((cluster, nodes))
            });
            if let Some((mut cluster, nodes)) = state
                && crate::node_ca::nodes_left_to_rotate(&cluster, &nodes).is_empty()
            {
                let finished = crate::node_ca::finish_root_rotation(&mut cluster)
                    .map(|()| Transaction::new(vec![objects::update(&cluster)]));
                match finished {
                    Ok(transaction) => match store.write(transaction).await {
                        Ok(_) => tracing::info!(
                            "root CA rotation finished: every node moved to the new root"
                        ),
                        Err(error) => {
                            tracing::warn!(%error, "could not finish the root CA rotation; retrying")
                        }
                    },
                    Err(error) => tracing::warn!(%error, "could not finish the root CA rotation"),
                }
            }
        }
        tokio::select! {
            next = changes.next() => {
                if next.is_err() {
                    changes = store.watch(store.local_view(|view| view.applied_index()) + 1);
                }
            }
            // Leadership changes come without a store change; look again now and then.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// On the leader, gives the cluster the network keys it lacks and rotates them every
/// [`NETWORK_KEY_ROTATION_INTERVAL`] (`network_keys.rs` decides). The keys themselves are never
/// logged, only their lamport clock.
async fn rotate_network_keys(store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    // Rotation is due by the clock, and leadership changes come without a store change: look
    // every second, which costs one read of the cluster object.
    const CHECK_PERIOD: Duration = Duration::from_secs(1);
    loop {
        if store.status().is_leader
            && let Err(error) = settle_network_keys(&store).await
        {
            tracing::warn!(%error, "could not rotate the network keys; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_PERIOD) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One look at the network keys: decides on the cluster object as this manager has it and
/// writes at the version read, deciding again on a fresh read when another write came first.
async fn settle_network_keys(store: &Store) -> Result<(), ManagerError> {
    const WRITE_ATTEMPTS: usize = 5;
    for _ in 0..WRITE_ATTEMPTS {
        // A manager that just joined may not have the cluster object yet.
        let Some(mut cluster) = store.local_view(objects::cluster_of)? else {
            return Ok(());
        };
        let change = network_keys::settle_network_keys(
            &mut cluster,
            SystemTime::now(),
            NETWORK_KEY_ROTATION_INTERVAL,
            &mut rand::rng(),
        );
        let Some(change) = change else {
            return Ok(());
        };
        match store
            .write(Transaction::new(vec![objects::update(&cluster)]))
            .await
        {
            Ok(_) => {
                tracing::info!(
                    ?change,
                    lamport_clock = cluster.encryption_key_lamport_clock,
                    "network keys written"
                );
                return Ok(());
            }
            Err(StoreError::Rejected(TxnRejection::Conflict { .. })) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ManagerError::FailedPrecondition(
        "the cluster object kept changing while the network keys were written; the next look tries again".to_owned(),
    ))
}

/// On the leader, records in each manager's node whether the leader hears from it, when that
/// changes, so that `node ls` on any manager shows an unreachable one (only the leader can tell).
async fn record_manager_reachability(
    store: Arc<Store>,
    view: Arc<SharedView>,
    mut stop: watch::Receiver<bool>,
) {
    const CHECK_PERIOD: Duration = Duration::from_secs(1);
    // A new leader has heard from nobody yet; it judges after a few heartbeats' worth of time.
    const SETTLING: Duration = Duration::from_secs(2);
    let mut leading_since: Option<(u64, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_PERIOD) => {}
            _ = stop.changed() => return,
        }
        let status = store.status();
        if !status.is_leader {
            leading_since = None;
            continue;
        }
        let (term, since) =
            *leading_since.get_or_insert((status.term, tokio::time::Instant::now()));
        if term != status.term {
            leading_since = Some((status.term, tokio::time::Instant::now()));
            continue;
        }
        if since.elapsed() < SETTLING {
            continue;
        }
        // The managers only, from the view's index: decoding every node each second cost the
        // leader a share of a core at thousands of nodes. A view behind the store makes the
        // write conflict, and the next check looks again.
        let managers: Vec<Node> = view.read(|view| view.managers().cloned().collect());
        let changed: Vec<Node> = managers
            .into_iter()
            .filter_map(|mut node| {
                let manager = node.manager_status.as_mut()?;
                let now = crate::control::reachability_on_leader(manager.raft_id, &status) as i32;
                if manager.reachability == now {
                    return None;
                }
                manager.reachability = now;
                Some(node)
            })
            .collect();
        if changed.is_empty() {
            continue;
        }
        let changes = changed.iter().map(objects::update).collect();
        // A conflict means the node changed meanwhile; the next check looks again. Only this
        // leader can tell, so it is written only in its term.
        if let Err(error) = store.write_in_term(term, Transaction::new(changes)).await {
            tracing::debug!(%error, "could not record the managers' reachability");
        }
    }
}

/// Keeps the dispatcher's heartbeat period in step with the cluster spec.
async fn follow_heartbeat_setting(
    store: Arc<Store>,
    heartbeat: watch::Sender<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = store.watch(store.local_view(|view| view.applied_index()) + 1);
    loop {
        let configured = store.local_view(|view| {
            objects::cluster_of(view)
                .ok()
                .flatten()
                .and_then(|cluster| cluster.spec?.dispatcher?.heartbeat_period)
                .map(|period| std_duration(&period))
        });
        if let Some(period) = configured {
            heartbeat.send_if_modified(|current| {
                let changed = *current != period;
                *current = period;
                changed
            });
        }
        tokio::select! {
            next = changes.next() => {
                if next.is_err() {
                    changes = store.watch(store.local_view(|view| view.applied_index()) + 1);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(options: InitOptions) -> Result<InitSettings, String> {
        InitSettings::of_options(&options).map_err(|error| error.to_string())
    }

    /// `swarm init --task-history-limit 0` keeps no ended tasks (issue 13: proto3's "0 means
    /// unset" made it 5); only an absent limit is Swarm's default.
    #[test]
    fn a_task_history_of_zero_is_kept_and_only_absence_means_the_default() {
        let keep_none = settings(InitOptions {
            task_history_limit: Some(0),
            ..Default::default()
        });
        assert_eq!(
            keep_none.map(|s| s.orchestration()),
            Ok(OrchestrationConfig {
                task_history_retention_limit: 0
            })
        );
        let unset = settings(InitOptions::default());
        assert_eq!(
            unset.map(|s| s.task_history_limit),
            Ok(spec::defaults::TASK_HISTORY_LIMIT)
        );
    }

    /// `swarm init` refuses the task history and heartbeat `swarm update` refuses, with spec's
    /// message.
    #[test]
    fn init_refuses_cluster_settings_as_spec_does() {
        for (options, cluster) in [
            (
                InitOptions {
                    task_history_limit: Some(-1),
                    ..Default::default()
                },
                ClusterSpec {
                    orchestration: Some(OrchestrationConfig {
                        task_history_retention_limit: -1,
                    }),
                    ..Default::default()
                },
            ),
            (
                InitOptions {
                    dispatcher_heartbeat: Some(Duration::from_millis(50)),
                    ..Default::default()
                },
                ClusterSpec {
                    dispatcher: Some(DispatcherConfig {
                        heartbeat_period: Some(proto_duration(Duration::from_millis(50))),
                    }),
                    ..Default::default()
                },
            ),
        ] {
            let expected =
                spec::validate::cluster_spec(&cluster).map_err(|error| error.to_string());
            assert!(expected.is_err(), "{cluster:?}");
            assert_eq!(settings(options).map(|_| ()), expected);
        }
    }
}
