//! The node's overlay networking, as the worker drives it through
//! [`worker::networking::TaskNetworking`]: each networked task gets a persistent, named network
//! namespace with its interfaces on each overlay, an embedded DNS at 127.0.0.11 and a VIP table,
//! and the node gossips its endpoints to the other nodes and programs theirs.
//!
//! While a service publishes through the routing mesh, the node also has a leg on the ingress
//! network (the address the managers gave it) and the mesh's nftables table in its own
//! namespace, so every published port answers on the node's addresses.
//!
//! Decisions are the pure [`core`]'s; this shell carries them out. One background loop applies
//! the whole plan (data plane, DNS names, VIP elements, mesh elements, gossip publications)
//! whenever the set of tasks, the node's leg or the gossip's table changes, coalescing bursts,
//! and every [`RESYNC_PERIOD`]; a failure is logged and retried, never fatal to the daemon.

pub mod core;
mod host;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use overlay_net::gossip::{
    DEFAULT_GOSSIP_PORT, EndpointKey, EndpointRecord, GossipAgent, GossipAgentConfig, GossipConfig,
    Keyring, TableView,
};
use overlay_net::{DEFAULT_VXLAN_PORT, Desired, Ipv4Cidr, NodeConfig, ipsec, netns};
use routing_mesh::dns::{
    DnsServer, DnsTable, EMBEDDED_DNS_ADDRESS, ForwardingConfig, TaskDns, TaskUpstreams,
    open_task_sockets, task_resolv_conf, task_upstreams,
};
use routing_mesh::mesh::{HEALTH_PORT, HealthServer, Mesh, PublishedPort, UserspaceProxy};
use routing_mesh::vip::{DAEMON_TABLE, NftInNamespace, Protocol, TableName, VipService};
use shoal_proto::api::SessionMessage;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use worker::networking::{
    BoxFuture, LocalEndpoint, NetworkAttachment, PreparedNetworks, TaskNetworking, TaskNetworks,
};

use self::core::{GossipChanges, HeldTask, NodePlan, gossip_changes, plan_node};

/// How often the whole plan is applied again even when nothing asked for it, so whatever failed
/// or was changed behind the daemon's back is put right.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(30);

/// How soon a pass that failed is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// How long the loop waits after a trigger for more of a burst before it applies.
const COALESCE: Duration = Duration::from_millis(50);

/// A pass slower than this is logged with where its time went.
const SLOW_PASS: Duration = Duration::from_millis(500);

/// How long a task that stopped serving is still kept from its stop signal, once this node has
/// taken it out of its tables and gossiped so: the other nodes hear it within tens of
/// milliseconds and take it out of theirs in one pass, and connections they sent just before
/// finish meanwhile.
const DRAIN_SETTLE: Duration = Duration::from_secs(2);

/// The longest a stop waits for this node to take its task out of its tables, should passes
/// keep failing: the stop is not held back for ever.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// The host's resolv.conf: the upstream resolvers and the search domains tasks inherit.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Who this node is in the swarm: its gossip name and its VXLAN tunnel endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeIdentity {
    node_id: String,
    vtep: Ipv4Addr,
}

/// What the worker and the session told the node; read by every pass.
#[derive(Default)]
struct Inputs {
    node: Option<NodeIdentity>,
    keyring: Option<Keyring>,
    /// The encrypted overlays' keys, from the session.
    ipsec_keyring: Option<ipsec::Keyring>,
    seeds: Vec<SocketAddr>,
    /// The cluster's VXLAN port; 0 is overlay-net's default.
    vxlan_port: u16,
    /// This node's address on the ingress network, from its session: given while a service
    /// publishes through the routing mesh.
    ingress_leg: Option<NetworkAttachment>,
    /// The networked tasks the node holds, by task id.
    held: BTreeMap<String, HeldTask>,
    /// Tasks whose `prepare` is running: never torn down meanwhile.
    preparing: BTreeSet<String>,
    /// Whether the worker has given its set at least once: only then are namespaces of tasks it
    /// does not hold (left by an earlier run) removed.
    set_known: bool,
}

/// What the last passes made, owned by whichever pass runs.
#[derive(Default)]
struct Applied {
    config: Option<NodeConfig>,
    /// The data plane last reconciled without error.
    desired: Option<Desired>,
    dns_records: Option<Vec<routing_mesh::dns::NetworkRecords>>,
    task_dns: BTreeMap<String, TaskDns>,
    vips: BTreeMap<String, Vec<VipService>>,
    gossip: Option<RunningGossip>,
    gossip_networks: BTreeSet<String>,
    published: BTreeMap<EndpointKey, EndpointRecord>,
    /// What the routing mesh's table was last made to serve; `None` when unknown or there is no
    /// table.
    mesh: Option<Mesh>,
    /// The mesh's health endpoint, while the node serves published ports.
    health: Option<HealthServer>,
    /// The userspace mesh while the node serves published ports: on every address where nft
    /// can't run, on 127.0.0.1 beside the nftables table (which can't send a connection to the
    /// loopback address elsewhere).
    proxy: Option<UserspaceProxy>,
    /// When each held task's endpoints were last gossiped as no longer serving, after serving:
    /// where its drain's settling time starts.
    unserved_at: BTreeMap<String, Instant>,
    /// The IPsec last reconciled (`None`: none), and the VNIs whose cleartext is refused.
    ipsec: Option<Option<ipsec::IpsecDesired>>,
    guarded_vnis: Option<BTreeSet<u32>>,
}

struct RunningGossip {
    agent: GossipAgent,
    keyring: Keyring,
    seeds: Vec<SocketAddr>,
    /// Triggers a pass whenever the table changes; held only to end with the gossip.
    _watcher: AbortOnDrop,
}

/// A spawned task that ends with its handle's owner.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Shared {
    prefix: String,
    /// The gateway bridge's subnet, chosen when the daemon starts.
    gwbridge: Ipv4Cidr,
    runtime: tokio::runtime::Handle,
    dns: DnsServer,
    nft: NftInNamespace,
    table: TableName,
    /// The routing mesh's table in the node's own namespace: named from the prefix, as the
    /// masquerade's, so daemons sharing a namespace (tests) keep apart.
    mesh_table: TableName,
    inputs: Mutex<Inputs>,
    /// Whether the kernel can do ESP with AES-GCM, found out for the first encrypted task.
    esp: tokio::sync::OnceCell<Result<(), String>>,
    /// How published ports are served, found out the first time there is one.
    mesh_backend: tokio::sync::OnceCell<MeshBackend>,
    applied: tokio::sync::Mutex<Applied>,
    trigger: Arc<Notify>,
    /// Woken after every pass, for stops waiting on a drain.
    passed: Notify,
}

/// The node's overlay networking: one per daemon, shared by the worker agent (as its
/// [`TaskNetworking`]) and the roles that feed it the node's identity and gossip keys.
pub struct NodeNetworking {
    shared: Arc<Shared>,
    reconciler: JoinHandle<()>,
}

impl Drop for NodeNetworking {
    fn drop(&mut self) {
        self.reconciler.abort();
    }
}

fn lock(inputs: &Mutex<Inputs>) -> MutexGuard<'_, Inputs> {
    inputs
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl NodeNetworking {
    /// The node's networking for the daemon with `data_root`; names everything it makes with
    /// the data root's prefix, so a restarted daemon finds its own. Must be called inside the
    /// runtime that runs it: its loop and the tasks' DNS live there.
    pub fn new(data_root: &Path) -> NodeNetworking {
        let forwarding = ForwardingConfig::from_resolv_conf_file(Path::new(HOST_RESOLV_CONF))
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "could not read {HOST_RESOLV_CONF}: tasks' names that are not the swarm's will not resolve");
                ForwardingConfig::default()
            });
        let prefix = overlay_net::prefix_for_data_root(data_root);
        let gwbridge = host::gateway_bridge_subnet(&format!("{prefix}-gw"));
        let shared = Arc::new(Shared {
            prefix: prefix.clone(),
            gwbridge,
            runtime: tokio::runtime::Handle::current(),
            dns: DnsServer::new(DnsTable::default(), forwarding),
            nft: NftInNamespace::default(),
            table: TableName::new(DAEMON_TABLE).expect("the daemon's table name is valid"),
            mesh_table: TableName::new(&mesh_table_name(&prefix))
                .expect("the prefix makes a valid table name"),
            inputs: Mutex::default(),
            esp: tokio::sync::OnceCell::new(),
            mesh_backend: tokio::sync::OnceCell::new(),
            applied: tokio::sync::Mutex::default(),
            trigger: Arc::new(Notify::new()),
            passed: Notify::new(),
        });
        let reconciler = tokio::spawn(reconcile_loop(Arc::clone(&shared)));
        NodeNetworking { shared, reconciler }
    }

    /// The prefix of every namespace, link and table this node's networking makes.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The network namespace a task gets.
    pub fn task_netns_path(&self, task_id: &str) -> PathBuf {
        netns::path(&task_netns_name(&self.shared.prefix, task_id))
    }

    /// The network namespace of an overlay network on this node.
    pub fn network_netns_path(&self, network_id: &str) -> PathBuf {
        netns::path(&format!("{}-{network_id}", self.shared.prefix))
    }

    /// Who this node is, once it is in a swarm (`None` after it leaves): its node id names it in
    /// the gossip, and its advertise address is its VXLAN tunnel endpoint.
    pub fn set_node(&self, node: Option<(String, IpAddr)>) {
        let node = match node {
            Some((node_id, IpAddr::V4(vtep))) => Some(NodeIdentity { node_id, vtep }),
            Some((node_id, IpAddr::V6(address))) => {
                tracing::warn!(node = %node_id, %address, "overlay networks need an IPv4 advertise address; this node runs no networked task");
                None
            }
            None => None,
        };
        lock(&self.shared.inputs).node = node;
        self.shared.trigger.notify_one();
    }

    /// Takes what a dispatcher session message says for networking: the gossip keys (the newest
    /// by Lamport time sends), the managers as gossip seeds (their hosts on port 7946), the
    /// cluster's VXLAN port, and the node's address on the ingress network.
    pub fn observe_session(&self, message: &SessionMessage) {
        let seeds: Vec<SocketAddr> = message
            .managers
            .iter()
            .filter_map(|manager| manager.peer.as_ref())
            .filter_map(|peer| peer.addr.parse::<SocketAddr>().ok())
            .map(|addr| SocketAddr::new(addr.ip(), DEFAULT_GOSSIP_PORT))
            .collect();
        let vxlan_port = message.node.as_ref().map_or(0, |node| {
            u16::try_from(node.vxlan_udp_port).unwrap_or_default()
        });
        let keyring = core::gossip_keyring(&message.network_keys);
        let ipsec_keyring = core::ipsec_keyring(&message.network_keys);
        let ingress_leg = message
            .node
            .as_ref()
            .and_then(worker::convert::node_ingress_leg)
            .and_then(|leg| {
                leg.map_err(|error| tracing::warn!(%error, "this node's address on the ingress network can't be used: published ports don't answer here"))
                    .ok()
            });
        let mut inputs = lock(&self.shared.inputs);
        inputs.ingress_leg = ingress_leg;
        if keyring.is_some() {
            inputs.keyring = keyring;
        }
        if ipsec_keyring.is_some() {
            inputs.ipsec_keyring = ipsec_keyring;
        }
        if !seeds.is_empty() {
            inputs.seeds = seeds;
        }
        inputs.vxlan_port = vxlan_port;
        drop(inputs);
        self.shared.trigger.notify_one();
    }

    /// Sets the gossip keys directly (what [`observe_session`](Self::observe_session) takes from
    /// the session) and the nodes to join the gossip through.
    pub fn set_gossip(&self, keyring: Keyring, seeds: Vec<SocketAddr>) {
        let mut inputs = lock(&self.shared.inputs);
        inputs.keyring = Some(keyring);
        inputs.seeds = seeds;
        drop(inputs);
        self.shared.trigger.notify_one();
    }

    /// What this node knows of `network_id` (`network inspect`'s Containers and Peers): its
    /// tasks' endpoints there and the nodes on it.
    pub async fn attachments(
        &self,
        network_id: &str,
    ) -> (Vec<core::LocalAttachment>, Vec<core::NetworkPeer>) {
        let (node, held) = {
            let inputs = lock(&self.shared.inputs);
            (inputs.node.clone(), inputs.held.clone())
        };
        let Some(node) = node else {
            return (Vec::new(), Vec::new());
        };
        let table: TableView = self
            .shared
            .applied
            .lock()
            .await
            .gossip
            .as_ref()
            .map(|gossip| gossip.agent.watch_table().borrow().clone())
            .unwrap_or_default();
        core::network_attachments(&node.node_id, node.vtep, network_id, &held, &table)
    }

    /// How this node serves published ports, for `shoal info`: empty until it has served one.
    pub fn routing_mesh(&self) -> String {
        self.shared
            .mesh_backend
            .get()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// A clean daemon stop: the passes end and the routing mesh's table and health endpoint go,
    /// so the node stops taking new connections on published ports (established ones keep
    /// their conntrack entries). Tasks' namespaces and the overlay stay, for the next start to
    /// adopt.
    pub async fn stop(&self) {
        self.reconciler.abort();
        let mut applied = self.shared.applied.lock().await;
        applied.health = None;
        applied.proxy = None;
        // Whatever this run applied: a table an earlier run left goes too.
        applied.mesh = None;
        let nft_serves = !matches!(
            self.shared.mesh_backend.get(),
            Some(MeshBackend::Userspace(_))
        );
        if nft_serves && let Err(error) = remove_mesh(&self.shared).await {
            tracing::warn!(%error, "could not remove the routing mesh's table");
        }
    }

    /// `swarm leave`: stops every task's DNS, leaves the gossip, and removes every namespace,
    /// link and nftables table this node's networking made (its prefix's), also those of an
    /// earlier run.
    pub async fn remove_all(&self) -> Result<(), String> {
        let mut applied = self.shared.applied.lock().await;
        {
            let mut inputs = lock(&self.shared.inputs);
            inputs.held.clear();
            inputs.set_known = false;
        }
        for (_, dns) in std::mem::take(&mut applied.task_dns) {
            dns.stop().await;
        }
        if let Some(gossip) = applied.gossip.take() {
            let RunningGossip { agent, .. } = gossip;
            if tokio::time::timeout(Duration::from_secs(2), agent.leave())
                .await
                .is_err()
            {
                tracing::debug!("the gossip did not say goodbye in time");
            }
        }
        let config = applied
            .config
            .clone()
            .unwrap_or_else(|| placeholder_config(&self.shared));
        *applied = Applied::default();
        let mut failures = Vec::new();
        {
            let mut inputs = lock(&self.shared.inputs);
            inputs.ingress_leg = None;
        }
        if let Err(error) = remove_mesh(&self.shared).await {
            failures.push(format!("removing the routing mesh's table: {error}"));
        }
        let empty = Desired {
            config,
            networks: Vec::new(),
            tasks: Vec::new(),
            endpoints: Vec::new(),
            peers: Vec::new(),
            host_legs: Vec::new(),
        };
        if let Err(error) = overlay_net::apply::reconcile(&empty).await {
            failures.push(format!(
                "removing the overlay's links and namespaces: {error}"
            ));
        }
        let (reqid, table, port) = (
            ipsec_reqid(&self.shared.prefix),
            ipsec_guard_table(&self.shared.prefix),
            empty.config.vxlan_port,
        );
        let removed = tokio::task::spawn_blocking(move || {
            ipsec::shell::cleanup(None, reqid)?;
            ipsec::shell::set_guard(None, &table, port, &BTreeSet::new())
        })
        .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                failures.push(format!("removing the encrypted overlays' IPsec: {error}"))
            }
            Err(error) => failures.push(error.to_string()),
        }
        let prefix = self.shared.prefix.clone();
        let deleted = tokio::task::spawn_blocking(move || -> Vec<String> {
            let names = match netns::list(&prefix) {
                Ok(names) => names,
                Err(error) => return vec![format!("listing the namespaces: {error}")],
            };
            names
                .iter()
                .filter_map(|name| netns::delete(name).err().map(|e| format!("{name}: {e}")))
                .collect()
        })
        .await
        .unwrap_or_else(|error| vec![error.to_string()]);
        failures.extend(deleted);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    async fn prepare_task(&self, task: &TaskNetworks) -> Result<PreparedNetworks, String> {
        for attachment in &task.attachments {
            core::parse_attachment(attachment)
                .map_err(|error| format!("task {} can't be attached: {error}", task.task_id))?;
        }
        if let Some(encrypted) = task.attachments.iter().find(|a| a.encrypted) {
            self.esp_supported().await.map_err(|error| {
                format!(
                    "network {} is encrypted, but this node's kernel cannot encrypt it ({error}): \
                     run the task on a node whose kernel has ESP and AES-GCM, or use a network \
                     without --opt encrypted",
                    encrypted.network_name
                )
            })?;
        }
        let netns_name = task_netns_name(&self.shared.prefix, &task.task_id);
        let netns_path = netns::path(&netns_name);
        {
            let mut inputs = lock(&self.shared.inputs);
            if inputs.node.is_none() {
                return Err("this node is not in a swarm yet, so it has no overlay networking: the task is retried".to_owned());
            }
            if inputs.keyring.is_none() {
                return Err("this node has no gossip keys from the managers yet, so it can't announce the task's endpoints: the task is retried once its session brings them".to_owned());
            }
            // Before the namespace exists, so no pass removes it as left over.
            inputs.preparing.insert(task.task_id.clone());
        }
        let prepared = self.prepare_namespace(task, &netns_name, &netns_path).await;
        lock(&self.shared.inputs).preparing.remove(&task.task_id);
        prepared?;
        let host_resolv_conf = tokio::fs::read(HOST_RESOLV_CONF).await.unwrap_or_default();
        let resolv = task_resolv_conf(&task.dns.search, &task.dns.options, &host_resolv_conf);
        Ok(PreparedNetworks {
            netns: netns_path,
            resolv_conf: resolv.text.into_bytes(),
            hosts: core::hosts_file(task).into_bytes(),
        })
    }

    /// Whether the kernel can do the encrypted overlays' ESP, probed once.
    async fn esp_supported(&self) -> Result<(), String> {
        let reqid = ipsec_reqid(&self.shared.prefix);
        self.shared
            .esp
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || ipsec::shell::probe_esp(None, reqid))
                    .await
                    .map_err(|error| error.to_string())?
                    .map_err(|error| error.to_string())
            })
            .await
            .clone()
    }

    /// Makes the task's namespace with `lo` up, then runs a pass so its interfaces, DNS and VIP
    /// table exist before its container does.
    async fn prepare_namespace(
        &self,
        task: &TaskNetworks,
        netns_name: &str,
        netns_path: &Path,
    ) -> Result<(), String> {
        let name = netns_name.to_owned();
        tokio::task::spawn_blocking(move || netns::create(&name))
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| {
                format!("making the task's network namespace {netns_name}: {error}")
            })?;
        overlay_net::apply::loopback_up(netns_path)
            .await
            .map_err(|error| format!("bringing up lo in the task's namespace: {error}"))?;
        // Held only once its namespace exists, so no pass plans interfaces into a missing one.
        {
            let mut inputs = lock(&self.shared.inputs);
            let egress = match inputs.held.get(&task.task_id) {
                Some(held) if held.egress.is_some() || !core::needs_egress(task) => held.egress,
                _ => pick_egress(&self.shared, &inputs, task)?,
            };
            let serving = inputs
                .held
                .get(&task.task_id)
                .is_some_and(|held| held.serving);
            inputs.held.insert(
                task.task_id.clone(),
                HeldTask {
                    networks: task.clone(),
                    netns: netns_path.to_owned(),
                    egress,
                    serving,
                },
            );
        }
        let waiting = Instant::now();
        let mut applied = self.shared.applied.lock().await;
        if waiting.elapsed() >= SLOW_PASS {
            tracing::info!(task = %task.task_id, waited_ms = waiting.elapsed().as_millis() as u64, "a task's networking waited for another pass");
        }
        // Other tasks' VIP tables are the loop's: a new backend changes every table of its
        // service, and the n-th task should not wait for n tables.
        let outcome = apply_pass(&self.shared, &mut applied, false, Some(&task.task_id)).await;
        self.shared.trigger.notify_one();
        if !applied.task_dns.contains_key(&task.task_id) {
            return Err(format!(
                "the task's networks could not be set up: {}",
                outcome
                    .err()
                    .unwrap_or_else(|| "its DNS did not start".to_owned())
            ));
        }
        match outcome {
            Err(error) if applied.desired.is_none() => {
                Err(format!("the task's interfaces could not be made: {error}"))
            }
            Err(error) => {
                // Another task's trouble: this one's interfaces were made; the loop retries.
                tracing::warn!(task = %task.task_id, %error, "networking pass failed in part");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }
}

impl NodeNetworking {
    /// [`TaskNetworking::drained`]: waits for a pass that gossiped the task as not serving,
    /// then for [`DRAIN_SETTLE`] from when it did.
    async fn wait_drained(&self, task_id: &str) {
        let give_up = Instant::now() + DRAIN_LIMIT;
        let settled_at = loop {
            let passed = self.shared.passed.notified();
            {
                let applied = self.shared.applied.lock().await;
                let still_served = applied
                    .published
                    .iter()
                    .any(|(key, record)| key.endpoint == task_id && record.healthy);
                if !still_served {
                    // Never announced as serving: nobody sends to it.
                    break applied
                        .unserved_at
                        .get(task_id)
                        .map(|at| *at + DRAIN_SETTLE);
                }
            }
            self.shared.trigger.notify_one();
            if tokio::time::timeout_at(give_up.into(), passed)
                .await
                .is_err()
            {
                tracing::warn!(task = %task_id, "the task's networking did not let it go in time; stopping it anyway");
                return;
            }
        };
        if let Some(at) = settled_at {
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

impl TaskNetworking for NodeNetworking {
    fn prepare<'a>(
        &'a self,
        task: &'a TaskNetworks,
    ) -> BoxFuture<'a, Result<Option<PreparedNetworks>, String>> {
        Box::pin(async move { self.prepare_task(task).await.map(Some) })
    }

    fn set_endpoints(&self, endpoints: BTreeMap<String, LocalEndpoint>) {
        let mut inputs = lock(&self.shared.inputs);
        let inputs = &mut *inputs;
        inputs.set_known = true;
        let preparing = &inputs.preparing;
        inputs
            .held
            .retain(|task_id, _| endpoints.contains_key(task_id) || preparing.contains(task_id));
        for (task_id, endpoint) in endpoints {
            if let Some(held) = inputs.held.get_mut(&task_id) {
                held.serving = endpoint.serving;
                held.networks = endpoint.networks;
                continue;
            }
            // Held by the worker but not prepared by this run: a restarted daemon adopts the
            // namespace its task already has.
            let netns_path = netns::path(&task_netns_name(&self.shared.prefix, &task_id));
            let parses = endpoint
                .networks
                .attachments
                .iter()
                .all(|attachment| core::parse_attachment(attachment).is_ok());
            if !parses || !netns::is_namespace(&netns_path) {
                continue;
            }
            let Ok(egress) = pick_egress(&self.shared, inputs, &endpoint.networks) else {
                continue;
            };
            inputs.held.insert(
                task_id,
                HeldTask {
                    networks: endpoint.networks,
                    netns: netns_path,
                    egress,
                    serving: endpoint.serving,
                },
            );
        }
        self.shared.trigger.notify_one();
    }

    fn drained<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.wait_drained(task_id))
    }
}

/// The namespace of a task: the prefix, 't' and the task id. Not `PREFIX-…`, which names the
/// overlay's own namespaces, so the data plane's reconcile never claims a task's.
fn task_netns_name(prefix: &str, task_id: &str) -> String {
    format!("{prefix}t-{task_id}")
}

/// An egress address for `task` that no held task has, or `None` when it needs none.
fn pick_egress(
    shared: &Shared,
    inputs: &Inputs,
    task: &TaskNetworks,
) -> Result<Option<Ipv4Addr>, String> {
    if !core::needs_egress(task) {
        return Ok(None);
    }
    let in_use: BTreeSet<Ipv4Addr> = inputs
        .held
        .iter()
        .filter(|(task_id, _)| **task_id != task.task_id)
        .filter_map(|(_, held)| held.egress)
        .collect();
    placeholder_config(shared)
        .pick_egress_address(&in_use)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "the gateway bridge's subnet {} is full: this node runs too many tasks with a way out",
                shared.gwbridge
            )
        })
}

/// A configuration with the node's prefix and gateway bridge only: enough to pick egress
/// addresses, and to find and remove what carries the prefix.
fn placeholder_config(shared: &Shared) -> NodeConfig {
    NodeConfig {
        prefix: shared.prefix.clone(),
        underlay_netns: None,
        vtep: Ipv4Addr::UNSPECIFIED,
        underlay_mtu: 1500,
        vxlan_port: DEFAULT_VXLAN_PORT,
        gwbridge: shared.gwbridge,
    }
}

/// Applies passes on triggers (bursts coalesced), after a failure, and every [`RESYNC_PERIOD`].
async fn reconcile_loop(shared: Arc<Shared>) {
    let mut retry = false;
    loop {
        let wait = if retry {
            RETRY_AFTER_FAILURE
        } else {
            RESYNC_PERIOD
        };
        let resync = tokio::select! {
            () = shared.trigger.notified() => {
                tokio::time::sleep(COALESCE).await;
                false
            }
            () = tokio::time::sleep(wait) => true,
        };
        let mut applied = shared.applied.lock().await;
        match apply_pass(&shared, &mut applied, resync, None).await {
            Ok(()) => retry = false,
            Err(error) => {
                tracing::warn!(%error, "the node's networking is not fully in step yet; retrying");
                retry = true;
            }
        }
        drop(applied);
        shared.passed.notify_waiters();
    }
}

/// One pass: plans the node from what it holds and what the gossip shows, and makes it so.
/// `resync` reconciles the data plane and VIP tables even when the plan did not change;
/// `only_vips_of` limits the VIP tables touched to that task's.
async fn apply_pass(
    shared: &Shared,
    applied: &mut Applied,
    resync: bool,
    only_vips_of: Option<&str>,
) -> Result<(), String> {
    let (node, keyring, ipsec_keyring, seeds, vxlan_port, held, preparing, set_known, leg) = {
        let inputs = lock(&shared.inputs);
        (
            inputs.node.clone(),
            inputs.keyring.clone(),
            inputs.ipsec_keyring.clone(),
            inputs.seeds.clone(),
            inputs.vxlan_port,
            inputs.held.clone(),
            inputs.preparing.clone(),
            inputs.set_known,
            inputs.ingress_leg.clone(),
        )
    };
    let Some(node) = node else {
        return Ok(());
    };
    let mut clock = PassClock::new();
    let mut failures = Vec::new();
    let config = node_config(shared, applied, &node, vxlan_port)?;

    let wants_gossip = !held.is_empty() || leg.is_some();
    if let Err(error) = ensure_gossip(applied, &node, keyring, seeds, wants_gossip, shared).await {
        failures.push(error);
    }
    let table: TableView = applied
        .gossip
        .as_ref()
        .map(|gossip| gossip.agent.watch_table().borrow().clone())
        .unwrap_or_default();
    let plan = plan_node(&config, &node.node_id, &held, leg.as_ref(), &table);
    clock.lap("gossip and plan");

    if resync || applied.desired.as_ref() != Some(&plan.desired) {
        let reconciled = match applied.desired.as_ref().filter(|_| !resync) {
            Some(last) => overlay_net::apply::reconcile_since(last, &plan.desired).await,
            None => overlay_net::apply::reconcile(&plan.desired).await,
        };
        match reconciled {
            Ok(_) => applied.desired = Some(plan.desired.clone()),
            Err(error) => {
                applied.desired = None;
                failures.push(format!("the overlay data plane: {error}"));
            }
        }
    }
    clock.lap("data plane");

    apply_ipsec(
        shared,
        applied,
        (&config, ipsec_keyring),
        &held,
        &plan,
        resync,
        &mut failures,
    )
    .await;
    tear_down_gone(shared, applied, &held, &preparing, set_known, &mut failures).await;
    clock.lap("ipsec and tear-down");

    // The VIPs before the names: once a task has left DNS, it has left every VIP too.
    program_vips(
        shared,
        applied,
        &held,
        &plan,
        resync,
        only_vips_of,
        &mut failures,
    )
    .await;
    clock.lap("VIP tables");
    program_mesh(shared, applied, &plan, resync, &mut failures).await;
    serve_mesh_health(applied, &node, &plan, &mut failures).await;
    clock.lap("mesh");
    // A pass scoped to one task leaves the other tasks' VIP tables to the loop's pass that
    // follows at once; the names wait for it too, so no name points at a VIP whose tables
    // lack a backend.
    if only_vips_of.is_none() && applied.dns_records.as_ref() != Some(&plan.dns) {
        shared.dns.set_table(DnsTable::new(plan.dns.clone()));
        applied.dns_records = Some(plan.dns.clone());
    }
    serve_dns(shared, applied, &held, &mut failures);
    apply_gossip(applied, &plan, &mut failures).await;
    clock.lap("DNS and gossip");
    clock.report_if_slow(held.len(), resync);

    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Where a pass's time went, logged when the pass is slower than [`SLOW_PASS`].
struct PassClock {
    started: Instant,
    lap_started: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl PassClock {
    fn new() -> PassClock {
        let now = Instant::now();
        PassClock {
            started: now,
            lap_started: now,
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.laps.push((phase, now - self.lap_started));
        self.lap_started = now;
    }

    fn report_if_slow(&self, tasks: usize, resync: bool) {
        let took = self.started.elapsed();
        if took < SLOW_PASS {
            return;
        }
        let laps: Vec<String> = self
            .laps
            .iter()
            .map(|(phase, spent)| format!("{phase} {} ms", spent.as_millis()))
            .collect();
        tracing::info!(
            took_ms = took.as_millis() as u64,
            tasks,
            resync,
            laps = %laps.join(", "),
            "slow networking pass"
        );
    }
}

/// The node's data-plane settings, worked out once per identity and VXLAN port.
fn node_config(
    shared: &Shared,
    applied: &mut Applied,
    node: &NodeIdentity,
    vxlan_port: u16,
) -> Result<NodeConfig, String> {
    let vxlan_port = if vxlan_port == 0 {
        DEFAULT_VXLAN_PORT
    } else {
        vxlan_port
    };
    if let Some(config) = &applied.config
        && config.vtep == node.vtep
        && config.vxlan_port == vxlan_port
    {
        return Ok(config.clone());
    }
    let underlay_mtu = host::mtu_of_interface_with(node.vtep).map_err(|error| {
        format!(
            "finding the MTU of the interface holding this node's address {}: {error}",
            node.vtep
        )
    })?;
    let config = NodeConfig {
        prefix: shared.prefix.clone(),
        underlay_netns: None,
        vtep: node.vtep,
        underlay_mtu,
        vxlan_port,
        gwbridge: shared.gwbridge,
    };
    applied.config = Some(config.clone());
    Ok(config)
}

/// Starts the gossip once the node has keys and a reason (`wanted`: it holds a task, or has its
/// leg on the ingress network), and keeps its keys current.
async fn ensure_gossip(
    applied: &mut Applied,
    node: &NodeIdentity,
    keyring: Option<Keyring>,
    seeds: Vec<SocketAddr>,
    wanted: bool,
    shared: &Shared,
) -> Result<(), String> {
    let Some(keyring) = keyring else {
        return Ok(());
    };
    if let Some(gossip) = &mut applied.gossip {
        if gossip.keyring != keyring {
            gossip
                .agent
                .set_keyring(keyring.clone())
                .map_err(|error| format!("the gossip's keys: {error}"))?;
            gossip.keyring = keyring.clone();
        }
        if gossip.seeds == seeds {
            return Ok(());
        }
        // New seeds matter only to an agent that found nobody; a restart joins through them.
        if gossip.agent.watch_members().borrow().is_empty() {
            applied.gossip = None;
            applied.gossip_networks.clear();
            applied.published.clear();
        } else {
            gossip.seeds = seeds.clone();
            return Ok(());
        }
    }
    if !wanted {
        return Ok(());
    }
    let seeds_without_self: Vec<SocketAddr> = seeds
        .iter()
        .copied()
        .filter(|seed| seed.ip() != IpAddr::V4(node.vtep))
        .collect();
    let bind = SocketAddr::new(IpAddr::V4(node.vtep), DEFAULT_GOSSIP_PORT);
    let generation = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let agent = GossipAgent::start(GossipAgentConfig {
        name: node.node_id.clone(),
        bind,
        advertise: None,
        seeds: seeds_without_self,
        keyring: keyring.clone(),
        config: GossipConfig::default(),
        generation,
    })
    .await
    .map_err(|error| format!("starting the gossip on {bind}: {error}"))?;
    let mut table = agent.watch_table();
    let trigger = Arc::clone(&shared.trigger);
    let watcher = tokio::spawn(async move {
        while table.changed().await.is_ok() {
            trigger.notify_one();
        }
    });
    tracing::info!(%bind, "overlay gossip started");
    applied.gossip = Some(RunningGossip {
        agent,
        keyring,
        seeds,
        _watcher: AbortOnDrop(watcher),
    });
    applied.gossip_networks.clear();
    applied.published.clear();
    Ok(())
}

/// Encrypts the VXLAN traffic to the peers on this node's encrypted networks (IPsec ESP through
/// the kernel's XFRM, keys from the managers) and refuses those networks' cleartext VXLAN; with
/// no encrypted network, removes both. Only what changed is touched, unless `resync`.
async fn apply_ipsec(
    shared: &Shared,
    applied: &mut Applied,
    (config, keyring): (&NodeConfig, Option<ipsec::Keyring>),
    held: &BTreeMap<String, HeldTask>,
    plan: &NodePlan,
    resync: bool,
    failures: &mut Vec<String>,
) {
    let (remotes, vnis) = core::encrypted_peers(held, &plan.desired);
    let reqid = ipsec_reqid(&shared.prefix);
    let wanted = match keyring {
        _ if remotes.is_empty() => None,
        Some(keyring) => Some(ipsec::IpsecDesired {
            local: config.vtep,
            remotes,
            keyring,
            vxlan_port: config.vxlan_port,
            reqid,
        }),
        None => {
            failures.push("no IPsec keys from the managers yet: the encrypted networks carry nothing to other nodes until the session brings them".to_owned());
            None
        }
    };
    if resync || applied.ipsec.as_ref() != Some(&wanted) {
        let desired = wanted.clone();
        let outcome = tokio::task::spawn_blocking(move || match &desired {
            Some(desired) => ipsec::shell::reconcile(None, desired).map(drop),
            None => ipsec::shell::cleanup(None, reqid),
        })
        .await;
        match outcome {
            Ok(Ok(())) => applied.ipsec = Some(wanted),
            Ok(Err(error)) => {
                applied.ipsec = None;
                failures.push(format!("the encrypted overlays' IPsec: {error}"));
            }
            Err(error) => failures.push(error.to_string()),
        }
    }
    if resync || applied.guarded_vnis.as_ref() != Some(&vnis) {
        let (table, port, guarded) = (
            ipsec_guard_table(&shared.prefix),
            config.vxlan_port,
            vnis.clone(),
        );
        let outcome = tokio::task::spawn_blocking(move || {
            ipsec::shell::set_guard(None, &table, port, &guarded)
        })
        .await;
        match outcome {
            Ok(Ok(())) => applied.guarded_vnis = Some(vnis),
            Ok(Err(error)) => {
                applied.guarded_vnis = None;
                failures.push(format!(
                    "refusing cleartext on the encrypted overlays: {error}"
                ));
            }
            Err(error) => failures.push(error.to_string()),
        }
    }
}

/// The reqid this daemon's XFRM states and policies carry: its prefix's hash digits, so
/// observing and removing touch only its own.
fn ipsec_reqid(prefix: &str) -> u32 {
    u32::from_str_radix(prefix.trim_start_matches('s'), 16).unwrap_or(1) | 0x1000_0000
}

/// The nftables table that drops cleartext VXLAN of encrypted networks.
fn ipsec_guard_table(prefix: &str) -> String {
    format!("{prefix}_ipsec")
}

/// Stops the DNS of tasks the node no longer holds and deletes their namespaces (which takes
/// their interfaces and VIP tables along), and, once the worker's set is known, namespaces of
/// tasks an earlier run held.
async fn tear_down_gone(
    shared: &Shared,
    applied: &mut Applied,
    held: &BTreeMap<String, HeldTask>,
    preparing: &BTreeSet<String>,
    set_known: bool,
    failures: &mut Vec<String>,
) {
    let kept = |task_id: &str| held.contains_key(task_id) || preparing.contains(task_id);
    let gone: Vec<String> = applied
        .task_dns
        .keys()
        .filter(|task_id| !kept(task_id))
        .cloned()
        .collect();
    for task_id in gone {
        if let Some(dns) = applied.task_dns.remove(&task_id) {
            dns.stop().await;
        }
    }
    applied.vips.retain(|task_id, _| kept(task_id));
    applied.unserved_at.retain(|task_id, _| kept(task_id));
    if !set_known {
        return;
    }
    let task_prefix = task_netns_name(&shared.prefix, "");
    let stale = tokio::task::spawn_blocking(move || netns::list(&task_prefix)).await;
    let names = match stale {
        Ok(Ok(names)) => names,
        Ok(Err(error)) => return failures.push(format!("listing task namespaces: {error}")),
        Err(error) => return failures.push(error.to_string()),
    };
    let task_prefix = task_netns_name(&shared.prefix, "");
    for name in names {
        let task_id = name.strip_prefix(&task_prefix).unwrap_or_default();
        // What is held now, not at the pass's start: a task prepared meanwhile keeps its new
        // namespace.
        let held_now = {
            let inputs = lock(&shared.inputs);
            inputs.held.contains_key(task_id) || inputs.preparing.contains(task_id)
        };
        if kept(task_id) || held_now {
            continue;
        }
        let deleted = {
            let name = name.clone();
            tokio::task::spawn_blocking(move || netns::delete(&name)).await
        };
        match deleted {
            Ok(Ok(())) => tracing::info!(task = %task_id, "task's network namespace removed"),
            Ok(Err(error)) => failures.push(format!("removing {name}: {error}")),
            Err(error) => failures.push(error.to_string()),
        }
    }
}

/// Serves the embedded DNS of every held task that has no server yet.
fn serve_dns(
    shared: &Shared,
    applied: &mut Applied,
    held: &BTreeMap<String, HeldTask>,
    failures: &mut Vec<String>,
) {
    for (task_id, task) in held {
        if applied.task_dns.contains_key(task_id) {
            continue;
        }
        let resolv = task_resolv_conf(&task.networks.dns.search, &task.networks.dns.options, b"");
        let asker = core::asking_task(&task.networks, resolv.ndots_set);
        let served = open_task_sockets(&task.netns, EMBEDDED_DNS_ADDRESS).and_then(|sockets| {
            let own = task_upstreams(&task.networks.dns.nameservers);
            let _runtime = shared.runtime.enter();
            if own.is_empty() {
                shared.dns.serve(sockets, asker)
            } else {
                shared.dns.serve_with_own_upstreams(
                    sockets,
                    asker,
                    TaskUpstreams {
                        servers: own,
                        netns_path: task.netns.clone(),
                    },
                )
            }
        });
        match served {
            Ok(dns) => {
                applied.task_dns.insert(task_id.clone(), dns);
            }
            Err(error) => failures.push(format!("task {task_id}'s embedded DNS: {error}")),
        }
    }
}

/// How many tasks' VIP tables are changed at once: each change is an nft run, mostly spent
/// starting the process, and a service's new backend changes every table of its network.
const VIP_PARALLELISM: usize = 4;

/// Brings each local task's VIP table (or only `only_of`'s) to the services it should balance;
/// only tables whose services changed are touched, unless `resync`. A table this daemon applied
/// is changed from what it applied (one nft run); a resync, or a table it has not applied, is
/// read back first.
async fn program_vips(
    shared: &Shared,
    applied: &mut Applied,
    held: &BTreeMap<String, HeldTask>,
    plan: &NodePlan,
    resync: bool,
    only_of: Option<&str>,
    failures: &mut Vec<String>,
) {
    // Each change with the services its table was last brought to, when this run knows them.
    let mut changed: Vec<_> = plan
        .vips
        .iter()
        .filter(|(task_id, _)| only_of.is_none_or(|only| only == task_id.as_str()))
        .filter(|(task_id, services)| resync || applied.vips.get(*task_id) != Some(*services))
        .filter_map(|(task_id, services)| {
            let last = applied.vips.get(task_id).filter(|_| !resync).cloned();
            Some((
                task_id.clone(),
                services.clone(),
                held.get(task_id)?.netns.clone(),
                last,
            ))
        })
        .collect();
    let mut runs = tokio::task::JoinSet::new();
    loop {
        while runs.len() < VIP_PARALLELISM
            && let Some((task_id, wanted, netns, last)) = changed.pop()
        {
            let (nft, table) = (shared.nft.clone(), shared.table.clone());
            runs.spawn_blocking(move || {
                let outcome = match &last {
                    Some(last) => routing_mesh::vip::update(&nft, &netns, &table, last, &wanted),
                    None => routing_mesh::vip::reconcile(&nft, &netns, &table, &wanted),
                };
                (task_id, wanted, outcome)
            });
        }
        let Some(done) = runs.join_next().await else {
            break;
        };
        match done {
            Ok((task_id, wanted, Ok(_))) => {
                applied.vips.insert(task_id, wanted);
            }
            Ok((task_id, _, Err(error))) => {
                applied.vips.remove(&task_id);
                failures.push(format!("task {task_id}'s VIP table: {error}"));
            }
            Err(error) => failures.push(error.to_string()),
        }
    }
}

/// How a node serves published ports.
#[derive(Clone, Debug, PartialEq, Eq)]
enum MeshBackend {
    /// The mesh's nftables table: the kernel forwards, and `prefer-local` and `local` ports keep
    /// the client's address.
    Nftables,
    /// The userspace proxy, because nft can't run here (why): every task sees this node's
    /// address.
    Userspace(String),
}

impl std::fmt::Display for MeshBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeshBackend::Nftables => f.write_str("nftables"),
            MeshBackend::Userspace(why) => write!(f, "userspace proxy ({why})"),
        }
    }
}

/// Whether nft runs in the node's namespace: a scratch table made and deleted. Where it can't,
/// published ports go through the userspace proxy.
async fn choose_mesh_backend(shared: &Shared) -> MeshBackend {
    let (nft, probe) = (
        shared.nft.clone(),
        format!("{}_probe", mesh_table_name(&shared.prefix)),
    );
    let probed = tokio::task::spawn_blocking(move || {
        routing_mesh::vip::Nft::run(
            &nft,
            &own_netns(),
            &format!("add table inet {probe}\ndelete table inet {probe}\n"),
        )
    })
    .await;
    match probed {
        Ok(Ok(())) => MeshBackend::Nftables,
        Ok(Err(error)) => {
            tracing::warn!(%error, "nft can't run here: published ports go through the userspace proxy, and tasks see this node's address instead of the client's");
            MeshBackend::Userspace(format!("nft can't run: {error}"))
        }
        Err(error) => MeshBackend::Userspace(error.to_string()),
    }
}

/// The routing mesh's table name for the daemon with `prefix`.
fn mesh_table_name(prefix: &str) -> String {
    format!("{prefix}_mesh")
}

/// The node's own network namespace, as nft is run in it (through `nsenter`, like every table).
fn own_netns() -> PathBuf {
    PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))
}

/// Brings the routing mesh's table to the plan's ports: changed from what was applied last (one
/// nft run), read back first on a resync or when this run has applied none, and removed when the
/// node has no leg on the ingress network.
async fn program_mesh(
    shared: &Shared,
    applied: &mut Applied,
    plan: &NodePlan,
    resync: bool,
    failures: &mut Vec<String>,
) {
    let Some(mesh) = &plan.mesh else {
        applied.proxy = None;
        if resync || applied.mesh.is_some() {
            match remove_mesh(shared).await {
                Ok(()) => applied.mesh = None,
                Err(error) => failures.push(format!("removing the routing mesh's table: {error}")),
            }
        }
        return;
    };
    let backend = shared
        .mesh_backend
        .get_or_init(|| choose_mesh_backend(shared))
        .await;
    if let MeshBackend::Userspace(_) = backend {
        let failed = applied
            .proxy
            .get_or_insert_with(UserspaceProxy::default)
            .set(&mesh.ports)
            .await;
        failures.extend(
            failed
                .into_iter()
                .map(|error| format!("the userspace mesh: {error}")),
        );
        return;
    }
    if !resync && applied.mesh.as_ref() == Some(mesh) {
        return;
    }
    // Best effort, so not retried each pass: a program holding the port on 127.0.0.1 keeps it.
    let on_loopback: Vec<PublishedPort> = mesh
        .ports
        .iter()
        .filter(|port| port.protocol != Protocol::Sctp)
        .cloned()
        .collect();
    let loopback = applied
        .proxy
        .get_or_insert_with(|| UserspaceProxy::on(Ipv4Addr::LOCALHOST));
    for failure in loopback.set(&on_loopback).await {
        tracing::warn!(%failure, "a published port does not answer on 127.0.0.1");
    }
    let last = applied.mesh.take().filter(|_| !resync);
    let (nft, table, wanted) = (shared.nft.clone(), shared.mesh_table.clone(), mesh.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let netns = own_netns();
        match &last {
            Some(last) => routing_mesh::mesh::update(&nft, &netns, &table, last, &wanted),
            None => routing_mesh::mesh::reconcile(&nft, &netns, &table, &wanted),
        }
    })
    .await;
    match outcome {
        Ok(Ok(_)) => applied.mesh = Some(mesh.clone()),
        Ok(Err(error)) => failures.push(format!("the routing mesh's table: {error}")),
        Err(error) => failures.push(error.to_string()),
    }
}

/// Runs the mesh's health endpoint on the node's address while it serves published ports, and
/// gives it each pass's readiness.
async fn serve_mesh_health(
    applied: &mut Applied,
    node: &NodeIdentity,
    plan: &NodePlan,
    failures: &mut Vec<String>,
) {
    let Some(mesh) = &plan.mesh else {
        applied.health = None;
        return;
    };
    let address = SocketAddr::new(IpAddr::V4(node.vtep), HEALTH_PORT);
    if applied.health.as_ref().map(HealthServer::address) != Some(address) {
        applied.health = None;
        match HealthServer::start(address).await {
            Ok(server) => applied.health = Some(server),
            Err(error) => {
                failures.push(format!("the mesh's health endpoint on {address}: {error}"));
                return;
            }
        }
    }
    if let Some(server) = &applied.health {
        server.set(routing_mesh::mesh::readiness(&mesh.ports));
    }
}

/// Removes the routing mesh's table from the node's namespace, if it is there.
async fn remove_mesh(shared: &Shared) -> Result<(), String> {
    let (nft, table) = (shared.nft.clone(), shared.mesh_table.clone());
    tokio::task::spawn_blocking(move || routing_mesh::vip::remove_table(&nft, &own_netns(), &table))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())
}

/// Joins, publishes, withdraws and leaves what the plan asks of the gossip.
async fn apply_gossip(applied: &mut Applied, plan: &NodePlan, failures: &mut Vec<String>) {
    let Some(gossip) = &applied.gossip else {
        return;
    };
    let GossipChanges {
        join,
        publish,
        withdraw,
        leave,
    } = gossip_changes(&applied.gossip_networks, &applied.published, plan);
    let agent = &gossip.agent;
    for network in join {
        match agent.join_network(&network) {
            Ok(()) => {
                applied.gossip_networks.insert(network);
            }
            Err(error) => failures.push(format!("joining network {network}'s gossip: {error}")),
        }
    }
    for (key, record) in publish {
        match agent
            .publish(&key.network, &key.endpoint, record.clone())
            .await
        {
            Ok(()) => {
                let was_serving = applied.published.get(&key).is_some_and(|old| old.healthy);
                if was_serving && !record.healthy {
                    applied
                        .unserved_at
                        .insert(key.endpoint.clone(), Instant::now());
                }
                applied.published.insert(key, record);
            }
            Err(error) => failures.push(format!(
                "announcing task {} on network {}: {error}",
                key.endpoint, key.network
            )),
        }
    }
    for key in withdraw {
        match agent.withdraw(&key.network, &key.endpoint) {
            Ok(()) => {
                if applied
                    .published
                    .remove(&key)
                    .is_some_and(|old| old.healthy)
                {
                    applied
                        .unserved_at
                        .insert(key.endpoint.clone(), Instant::now());
                }
            }
            Err(error) => failures.push(format!(
                "withdrawing task {} on network {}: {error}",
                key.endpoint, key.network
            )),
        }
    }
    for network in leave {
        match agent.leave_network(&network) {
            Ok(()) => {
                applied.gossip_networks.remove(&network);
            }
            Err(error) => failures.push(format!("leaving network {network}'s gossip: {error}")),
        }
    }
}
