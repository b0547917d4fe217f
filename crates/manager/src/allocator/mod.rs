//! The network allocator, the pure core of the leader's allocation phase: given the stored
//! networks, services and tasks and the cluster's address pools, [`allocate`] decides what to
//! write: a subnet, gateway and VXLAN VNI for each network not yet allocated, a virtual IP per
//! service per network in `vip` endpoint mode, and an address per task per network, which takes
//! the task from NEW to PENDING (the scheduler places only tasks that have their addresses).
//!
//! A service publishing ports through the routing mesh is on the ingress network too, as in
//! Swarm: a VIP there (in `vip` mode) and, for each of its tasks, an address there, first among
//! the task's attachments, so every node can plumb the mesh to it; one that stops publishing
//! loses them (its tasks are replaced, since its endpoint is part of what they run). Its
//! published ports are [`ports`]' (the control API allocates them on every write; here a
//! service whose spec changed without it, by an automatic rollback, is brought back in line).
//! While a service publishes through the mesh, every node gets an address on the ingress
//! network too (its node attachment, as Docker's `Node.Attachments`): the node's own leg into
//! the network, through which its routing mesh reaches the tasks behind a published port and
//! which the mesh's SNAT gives as the source. Docker keeps one on every node always; giving it
//! only while the mesh has a port to serve spares a swarm that publishes nothing a namespace,
//! a link and the gossip on every node.
//!
//! A network removed while only services being removed still used it (`stack rm`) is marked
//! `pending_delete`; the allocator deletes it on the first step that finds it unused.
//!
//! Nothing is remembered between steps. What is in use is read from the stored objects every
//! time, so a new leader starts from exactly what Raft holds:
//! - a VIP is in use while its service is stored and still on its network in `vip` mode;
//! - a task's addresses are in use while a worker may run the task (ASSIGNED to RUNNING) or the
//!   scheduler may still send it to one (NEW or PENDING and wanted). A task that ended, or was
//!   shut down before it reached a node, keeps its attachment record as history, but its
//!   addresses are free again, so the reaper's kept history pins nothing;
//! - a node's ingress address is in use while the node is stored and the network is the ingress
//!   network (a node on a replaced or removed ingress network loses that attachment).
//!
//! Addresses are handed out serially (the next free one after the last one given, wrapping
//! round, as Docker does), so an address just freed is not reused at once. The last address
//! given is stored in the network ([`Network::last_allocated_address`]) and rewritten, at the
//! version read, with every allocation on the network: two allocations decided on one read
//! cannot both commit, whoever makes them.
//!
//! A task whose network can't be allocated, or whose subnet is full, stays NEW with the reason
//! as its status's error, which `service ps` shows; it is allocated on a later step once the
//! cause is gone (a task or service removed frees addresses), with no new task made meanwhile.

mod ipam;
pub mod ports;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_proto::api::{
    Cluster, Driver, Endpoint, IpamConfig, IpamOptions, Network, NetworkAttachment,
    NetworkAttachmentConfig, Node, Service, ServiceSpec, Task, TaskState, TaskStatus, endpoint,
    endpoint_spec, ipam_config, port_config,
};

pub use ipam::AddressSpace;
pub use ports::{PortAllocationError, PublishedPorts, needs_ingress};

use spec::network::{DEFAULT_IPAM_DRIVER, MAX_VNI, OVERLAY_DRIVER, Subnet, VXLAN_ID_LIST_OPTION};

use crate::orchestrator::{ClusterTime, created_at, is_terminal, is_wanted, observed_state};

/// The first VXLAN network identifier given to a network (Docker's `vxlanIDStart`).
pub const FIRST_VNI: u32 = 4096;
/// One past the largest VNI: VXLAN carries 24 bits.
const VNI_LIMIT: u32 = MAX_VNI + 1;
/// Tasks allocated in one step at most, so that one step's writes stay inside one proposal; a
/// larger batch continues on the next step, which its own commit starts.
pub const MAX_TASKS_PER_STEP: usize = 256;

/// Why something could not be allocated, as the task waiting for it shows it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocationFailure {
    #[error(
        "network {network}: {problem}: remove the network and create it again with a valid IPv4 subnet, range and gateway"
    )]
    InvalidIpam { network: String, problem: String },
    #[error(
        "network {network}: subnet {subnet} overlaps network {other}'s subnet {other_subnet}: remove {network} and create it with a subnet no other network uses"
    )]
    SubnetOverlaps {
        network: String,
        subnet: String,
        other: String,
        other_subnet: String,
    },
    #[error(
        "network {network}: no /{prefix_len} subnet is left in the address pools {pools}: remove unused networks, or give the network a subnet of its own"
    )]
    PoolExhausted {
        network: String,
        prefix_len: u8,
        pools: String,
    },
    #[error(
        "network {network}: VXLAN id {vni} is not free or not from 1 to 16777215: remove the network and create it with another {VXLAN_ID_LIST_OPTION}, or none"
    )]
    VniUnavailable { network: String, vni: String },
    #[error("network {network}: no VXLAN id is left: remove unused networks")]
    VniExhausted { network: String },
    #[error(
        "network {network_id} not found: it was removed; update the service to leave it, or create the network again"
    )]
    NetworkNotFound { network_id: String },
    #[error(
        "no IP address left on network {network} ({subnets}): remove services or tasks on it, or use a network with a larger subnet"
    )]
    AddressesExhausted { network: String, subnets: String },
    #[error(
        "the service publishes port {port} through the routing mesh, but the swarm has no ingress network: create one with 'shoal network create -d overlay --ingress ingress', or publish the port with mode=host"
    )]
    NoIngressNetwork { port: String },
}

/// The address pools subnets are carved from, and the size of the subnets carved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPools {
    pub pools: Vec<Subnet>,
    pub subnet_prefix_len: u8,
}

impl AddressPools {
    /// The cluster's pools (`swarm init --default-addr-pool`, `--default-addr-pool-mask-length`),
    /// or Swarm's defaults where the cluster names none. The pools were checked by
    /// `spec::validate::address_pools` when they were set; one that does not parse is skipped.
    pub fn of_cluster(cluster: Option<&Cluster>) -> AddressPools {
        let named: Vec<&str> = cluster
            .map(|cluster| {
                cluster
                    .default_address_pool
                    .iter()
                    .map(String::as_str)
                    .collect()
            })
            .unwrap_or_default();
        let pools: Vec<Subnet> = if named.is_empty() {
            vec![spec::defaults::ADDRESS_POOL]
        } else {
            named
        }
        .into_iter()
        .filter_map(ipam::parse_subnet)
        .collect();
        let size = cluster
            .map(|cluster| cluster.subnet_size)
            .filter(|size| *size != 0)
            .unwrap_or(spec::defaults::SUBNET_SIZE);
        AddressPools {
            pools,
            subnet_prefix_len: u8::try_from(size.min(32)).unwrap_or(24),
        }
    }
}

/// What the allocator reads: the store's objects at one index, borrowed from the store's
/// decoded view.
pub struct AllocatorInput<'a> {
    pub networks: &'a [&'a Network],
    /// Every node while the mesh serves ([`mesh_serves`]); otherwise the nodes holding an
    /// attachment are enough, since a node without one has nothing to keep or drop.
    pub nodes: &'a [&'a Node],
    pub services: &'a [&'a Service],
    pub tasks: &'a [&'a Task],
    pub pools: &'a AddressPools,
    /// Tasks allocated in this step at most ([`MAX_TASKS_PER_STEP`], or fewer when their
    /// writes did not fit one proposal); the oldest go first. Nodes given their ingress
    /// address share what the tasks leave of it.
    pub max_tasks: usize,
}

/// What one step writes, every object at the version it was read at. It must commit as one
/// transaction: each network written carries the last address given on it, which is what
/// makes a concurrent allocation from the same read conflict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allocation {
    pub networks: Vec<Network>,
    pub services: Vec<Service>,
    pub tasks: Vec<Task>,
    /// Nodes whose ingress attachment was given, moved or dropped.
    pub nodes: Vec<Node>,
    /// Nodes (by id) that could not get an ingress address, for the shell's log; they get one
    /// on a later step once addresses are free.
    pub failed_nodes: Vec<(String, AllocationFailure)>,
    /// Networks that could not be allocated, for the shell's log; the tasks that need them
    /// carry the same reason.
    pub failed_networks: Vec<(String, AllocationFailure)>,
    /// Services (by id) whose spec's published ports could not be given, for the shell's log;
    /// they keep the ports they hold.
    pub failed_services: Vec<(String, PortAllocationError)>,
    /// Networks being removed that nothing uses any more: they are deleted, at the version read.
    pub deleted_networks: Vec<Network>,
}

impl Allocation {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
            && self.services.is_empty()
            && self.tasks.is_empty()
            && self.nodes.is_empty()
            && self.deleted_networks.is_empty()
    }
}

/// The networks a service's tasks attach to: the task spec's, or, when it names none, the
/// service spec's deprecated list (SwarmKit reads both the same way).
pub fn service_attachments(spec: &ServiceSpec) -> &[NetworkAttachmentConfig] {
    match spec.task.as_ref().map(|task| task.networks.as_slice()) {
        Some(networks) if !networks.is_empty() => networks,
        _ => &spec.networks,
    }
}

/// The networks a task attaches to, from its own spec ([`crate::orchestrator::new_task`]
/// copies the service's deprecated list in when the task spec names none).
fn task_attachments(task: &Task) -> &[NetworkAttachmentConfig] {
    task.spec
        .as_ref()
        .map_or(&[], |spec| spec.networks.as_slice())
}

/// Whether the scheduler may place the task: it has its addresses (the allocator took it to
/// PENDING), or it attaches to no network and needs none (not even the ingress network).
pub fn ready_for_scheduling(task: &Task) -> bool {
    observed_state(task) as i32 >= TaskState::Pending as i32
        || (task_attachments(task).is_empty() && !task_needs_ingress(task, None))
}

/// Whether some service publishes a port through the routing mesh, so that every node needs
/// an address on the ingress network.
pub fn mesh_serves<'a>(services: impl IntoIterator<Item = &'a Service>) -> bool {
    services
        .into_iter()
        .any(|service| !service.pending_delete && needs_ingress(service.spec.as_ref()))
}

/// Whether the task gets an address on the ingress network: its service publishes a port
/// through the routing mesh (the service as this step sees it, or, when it is gone, the
/// endpoint the task was made with).
fn task_needs_ingress(task: &Task, service: Option<&Service>) -> bool {
    match service {
        Some(service) => needs_ingress(service.spec.as_ref()),
        None => needs_ingress_endpoint(task.endpoint.as_ref()),
    }
}

fn needs_ingress_endpoint(endpoint: Option<&Endpoint>) -> bool {
    endpoint
        .and_then(|endpoint| endpoint.spec.as_ref())
        .is_some_and(|spec| {
            spec.ports
                .iter()
                .any(|port| port.publish_mode() == port_config::PublishMode::Ingress)
        })
}

/// The ingress network, if the swarm has one: the one marked `ingress` and not being removed
/// (there is at most one; should there be more, the oldest id).
pub fn ingress_network<'a>(networks: impl IntoIterator<Item = &'a Network>) -> Option<&'a Network> {
    networks
        .into_iter()
        .filter(|network| {
            !network.pending_delete && network.spec.as_ref().is_some_and(|spec| spec.ingress)
        })
        .min_by(|left, right| left.id.cmp(&right.id))
}

/// Whether the task's addresses count as in use: a worker may be running it, or the scheduler
/// may still send it to one. An ended task, or one shut down before it reached a node, is
/// history, and its attachment record pins nothing.
pub fn holds_addresses(task: &Task) -> bool {
    let observed = observed_state(task);
    !is_terminal(observed) && (observed as i32 >= TaskState::Assigned as i32 || is_wanted(task))
}

/// Whether [`allocate`] needs to see the task: it has network attachments, whose addresses
/// may be in use, or it is new and wanted, and may need some. The others are left out of its
/// input, so a step costs what attaches to networks, not every task.
pub fn allocator_reads(task: &Task) -> bool {
    !task.networks.is_empty() || (observed_state(task) == TaskState::New && is_wanted(task))
}

/// Whether a network marked `pending_delete` can go: no stored service attaches to it or holds
/// a virtual IP on it, and no task holds an address on it.
fn deletable(network: &Network, services: &[&Service], tasks: &[&Task]) -> bool {
    let id = network.id.as_str();
    let attached = services.iter().any(|service| {
        let spec_attaches = service.spec.as_ref().is_some_and(|spec| {
            service_attachments(spec)
                .iter()
                .any(|attachment| attachment.target == id)
        });
        let holds_vip = service
            .endpoint
            .as_ref()
            .is_some_and(|endpoint| endpoint.virtual_ips.iter().any(|vip| vip.network_id == id));
        spec_attaches || holds_vip
    });
    let addressed = tasks
        .iter()
        .filter(|task| holds_addresses(task))
        .flat_map(|task| &task.networks)
        .any(|attachment| attachment.network.as_ref().is_some_and(|n| n.id == id));
    network.pending_delete && !attached && !addressed
}

/// Whether a service wants VIPs: `vip` endpoint mode, Swarm's default.
fn wants_virtual_ips(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.endpoint.as_ref())
        .is_none_or(|endpoint| endpoint.mode() == endpoint_spec::ResolutionMode::Vip)
}

fn network_name(network: &Network) -> String {
    network
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
        .map(|annotations| annotations.name.clone())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| network.id.clone())
}

fn is_allocated(network: &Network) -> bool {
    network
        .ipam
        .as_ref()
        .is_some_and(|ipam| !ipam.configs.is_empty())
}

fn vnis_of(network: &Network) -> Vec<u32> {
    network
        .driver_state
        .as_ref()
        .and_then(|driver| driver.options.get(VXLAN_ID_LIST_OPTION))
        .map(|list| {
            list.split(',')
                .filter_map(|vni| vni.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A network with its address spaces, as this step sees it.
struct NetworkState {
    network: Network,
    spaces: Vec<AddressSpace>,
    in_use: BTreeSet<u32>,
    last_allocated: Option<u32>,
    changed: bool,
}

impl NetworkState {
    fn of_allocated(network: &Network) -> NetworkState {
        let spaces = network
            .ipam
            .as_ref()
            .map(|ipam| {
                ipam.configs
                    .iter()
                    .filter_map(|config| {
                        let subnet = ipam::parse_subnet(&config.subnet)?;
                        let range = ipam::parse_subnet(&config.range);
                        let gateway = ipam::parse_address(&config.gateway)
                            .unwrap_or_else(|| AddressSpace::default_gateway(subnet, range));
                        Some(AddressSpace {
                            subnet,
                            range,
                            gateway,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        NetworkState {
            last_allocated: ipam::parse_address(&network.last_allocated_address),
            network: network.clone(),
            spaces,
            in_use: BTreeSet::new(),
            changed: false,
        }
    }

    fn subnets_text(&self) -> String {
        self.spaces
            .iter()
            .map(|space| space.subnet.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The next free address, serially after the last one given (in the space holding it,
    /// then the spaces after it, wrapping round), written as stored: `10.0.1.5/24`.
    fn allocate_address(&mut self) -> Result<String, AllocationFailure> {
        let count = self.spaces.len();
        let start = self
            .last_allocated
            .and_then(|last| self.spaces.iter().position(|space| space.contains(last)))
            .unwrap_or(0);
        for offset in 0..count {
            let space = &self.spaces[(start + offset) % count];
            let after = if offset == 0 {
                self.last_allocated
            } else {
                None
            };
            if let Some(address) = space.next_free(&self.in_use, after) {
                self.in_use.insert(address);
                self.last_allocated = Some(address);
                self.changed = true;
                return Ok(ipam::address_with_prefix(space.subnet, address));
            }
        }
        Err(AllocationFailure::AddressesExhausted {
            network: network_name(&self.network),
            subnets: self.subnets_text(),
        })
    }

    /// Whether `address` (as stored) lies in one of this network's spaces, so it can be kept.
    fn holds(&self, address: &str) -> Option<u32> {
        let address = ipam::parse_address(address)?;
        self.spaces
            .iter()
            .any(|space| space.is_assignable(address))
            .then_some(address)
    }

    /// The network as written back: its allocation and the last address given.
    fn written(&self) -> Network {
        let mut network = self.network.clone();
        network.last_allocated_address = self
            .last_allocated
            .map(ipam::format_address)
            .unwrap_or_default();
        network
    }
}

/// Decides one step's allocations. The same input always gives the same output.
pub fn allocate(input: &AllocatorInput<'_>, now: ClusterTime) -> Allocation {
    let mut allocation = Allocation::default();
    let mut states: BTreeMap<String, NetworkState> = BTreeMap::new();
    let mut failed: HashMap<String, AllocationFailure> = HashMap::new();

    allocate_networks(input, &mut states, &mut failed);

    for service in input.services {
        if let Some(endpoint) = &service.endpoint {
            for vip in &endpoint.virtual_ips {
                mark_in_use(&mut states, &vip.network_id, &vip.addr);
            }
        }
    }
    for task in input.tasks.iter().filter(|task| holds_addresses(task)) {
        for attachment in &task.networks {
            if let Some(network) = &attachment.network {
                for address in &attachment.addresses {
                    mark_in_use(&mut states, &network.id, address);
                }
            }
        }
    }

    let ingress = ingress_network(input.networks.iter().copied()).map(|network| network.id.clone());
    for node in input.nodes {
        for attachment in node_attachments_kept(node, ingress.as_deref()) {
            if let Some(network) = &attachment.network {
                for address in &attachment.addresses {
                    mark_in_use(&mut states, &network.id, address);
                }
            }
        }
    }
    let mut published = PublishedPorts::of_services(input.services.iter().copied());
    let mut published_changed = false;
    let mut vip_failures: HashMap<(String, String), AllocationFailure> = HashMap::new();
    let mut services_by_id: HashMap<&str, Service> = HashMap::new();
    let mut ordered_services: Vec<&Service> = input.services.to_vec();
    ordered_services.sort_by(|left, right| left.id.cmp(&right.id));
    for service in ordered_services {
        let mut current = service.clone();
        if !service.pending_delete {
            match reconcile_ports(&mut current, &mut published) {
                Ok(changed) => published_changed |= changed,
                Err(failure) => allocation
                    .failed_services
                    .push((service.id.clone(), failure)),
            }
        }
        let updated =
            allocate_virtual_ips(&current, ingress.as_deref(), &mut states, &mut vip_failures);
        if &updated != service {
            allocation.services.push(updated.clone());
        }
        services_by_id.insert(service.id.as_str(), updated);
    }
    // Every write that changes the published numbers also rewrites the ingress network at the
    // version read, as the control API's do, so two of them decided on one read can't both
    // commit.
    if published_changed && let Some(state) = ingress.as_ref().and_then(|id| states.get_mut(id)) {
        state.changed = true;
    }

    let mut waiting: Vec<&Task> = input
        .tasks
        .iter()
        .copied()
        .filter(|task| {
            observed_state(task) == TaskState::New
                && is_wanted(task)
                && (!task_attachments(task).is_empty()
                    || task_needs_ingress(task, services_by_id.get(task.service_id.as_str())))
        })
        .collect();
    waiting.sort_by(|left, right| {
        created_at(left)
            .cmp(&created_at(right))
            .then_with(|| left.id.cmp(&right.id))
    });
    for task in waiting.into_iter().take(input.max_tasks.max(1)) {
        let service = services_by_id.get(task.service_id.as_str());
        let ingress_needed = task_needs_ingress(task, service).then(|| {
            ingress
                .as_deref()
                .ok_or_else(|| AllocationFailure::NoIngressNetwork {
                    port: service
                        .and_then(|service| ports::first_ingress_port(service.spec.as_ref()))
                        .map(spec::ports::describe)
                        .unwrap_or_default(),
                })
        });
        match allocate_task(task, ingress_needed, &mut states, &failed, &vip_failures) {
            Ok(attachments) => {
                let mut allocated = task.clone();
                allocated.networks = attachments;
                if let Some(service) = service {
                    allocated.endpoint = service.endpoint.clone();
                }
                allocated.status = Some(TaskStatus {
                    timestamp: Some(now.to_proto_timestamp()),
                    state: TaskState::Pending as i32,
                    message: "pending task scheduling".to_owned(),
                    ..Default::default()
                });
                allocation.tasks.push(allocated);
            }
            Err(failure) => {
                let err = failure.to_string();
                if task.status.as_ref().map(|status| &status.err) != Some(&err) {
                    let mut waiting = task.clone();
                    waiting.status = Some(TaskStatus {
                        timestamp: Some(now.to_proto_timestamp()),
                        state: TaskState::New as i32,
                        message: "waiting for network allocation".to_owned(),
                        err,
                        ..Default::default()
                    });
                    allocation.tasks.push(waiting);
                }
            }
        }
    }

    let node_budget = input
        .max_tasks
        .max(1)
        .saturating_sub(allocation.tasks.len());
    allocate_nodes(
        input.nodes,
        ingress
            .as_deref()
            .filter(|_| mesh_serves(input.services.iter().copied())),
        &mut states,
        node_budget,
        &mut allocation,
    );

    allocation.networks = states
        .values()
        .filter(|state| state.changed)
        .map(NetworkState::written)
        .collect();
    allocation.deleted_networks = input
        .networks
        .iter()
        .filter(|network| deletable(network, input.services, input.tasks))
        .map(|&network| network.clone())
        .collect();
    let mut failed: Vec<(String, AllocationFailure)> = failed.into_iter().collect();
    failed.sort_by(|left, right| left.0.cmp(&right.0));
    allocation.failed_networks = failed;
    allocation
}

/// The attachments of `node` that stay: the one on the ingress network, when there is one
/// (there is one at most; a node's attachments are only ever its ingress leg).
fn node_attachments_kept<'a>(
    node: &'a Node,
    ingress: Option<&'a str>,
) -> impl Iterator<Item = &'a NetworkAttachment> {
    node.attachments.iter().filter(move |attachment| {
        attachment
            .network
            .as_ref()
            .is_some_and(|network| Some(network.id.as_str()) == ingress)
    })
}

/// Gives each node (in id order, at most `budget` written) one address on `ingress` (the
/// ingress network while a service publishes through the mesh), kept while it stays valid, and
/// drops attachments on any other network. A node that can't get an address is noted and keeps
/// nothing stale.
fn allocate_nodes<'a>(
    nodes: &[&'a Node],
    ingress: Option<&str>,
    states: &mut BTreeMap<String, NetworkState>,
    budget: usize,
    allocation: &mut Allocation,
) {
    let kept_attachment = |node: &'a Node, states: &BTreeMap<String, NetworkState>| {
        let state = ingress.and_then(|id| states.get(id));
        node_attachments_kept(node, ingress).find(|attachment| {
            let [address] = attachment.addresses.as_slice() else {
                return false;
            };
            state.is_some_and(|state| state.holds(address).is_some())
        })
    };
    // Most nodes already hold what they should, and such a node is neither written nor given
    // an address: only the others are sorted into id order, so a step does not sort every
    // node of the cluster.
    let mut unsettled: Vec<&Node> = nodes
        .iter()
        .copied()
        .filter(|node| match kept_attachment(node, states) {
            Some(kept) => node.attachments.as_slice() != std::slice::from_ref(kept),
            None => {
                !node.attachments.is_empty() || ingress.is_some_and(|id| states.contains_key(id))
            }
        })
        .collect();
    unsettled.sort_by(|left, right| left.id.cmp(&right.id));
    for node in unsettled {
        if allocation.nodes.len() >= budget {
            break;
        }
        let kept = kept_attachment(node, states);
        let state = ingress.and_then(|id| states.get_mut(id));
        let wanted: Vec<NetworkAttachment> = match (kept, state) {
            (Some(kept), _) => vec![kept.clone()],
            (None, Some(state)) => match state.allocate_address() {
                Ok(address) => vec![NetworkAttachment {
                    network: Some(state.network.clone()),
                    addresses: vec![address],
                    ..Default::default()
                }],
                Err(failure) => {
                    allocation.failed_nodes.push((node.id.clone(), failure));
                    Vec::new()
                }
            },
            // No ingress network, or one not allocated yet.
            (None, None) => Vec::new(),
        };
        if wanted != node.attachments {
            let mut written = node.clone();
            written.attachments = wanted;
            allocation.nodes.push(written);
        }
    }
}

/// Brings the service's endpoint in line with its spec: the spec's endpoint, and the published
/// ports it asks for ([`PublishedPorts::allocate`]). The service is left as it is when nothing
/// differs, or when its ports can't be given. Answers whether the published numbers changed.
fn reconcile_ports(
    service: &mut Service,
    published: &mut PublishedPorts,
) -> Result<bool, PortAllocationError> {
    let mut candidate = service.clone();
    let spec_endpoint = service.spec.as_ref().and_then(|spec| spec.endpoint.clone());
    let endpoint_exists = candidate.endpoint.is_some();
    if let Some(endpoint) = candidate.endpoint.as_mut() {
        endpoint.spec = spec_endpoint;
    }
    let changed = published.allocate(&mut candidate)?;
    let held = |service: &Service| {
        service
            .endpoint
            .as_ref()
            .map(|endpoint| endpoint.ports.clone())
            .unwrap_or_default()
    };
    let differs = held(&candidate) != held(service)
        || (endpoint_exists
            && candidate.endpoint.as_ref().map(|endpoint| &endpoint.spec)
                != service.endpoint.as_ref().map(|endpoint| &endpoint.spec));
    if differs {
        *service = candidate;
    }
    Ok(changed)
}

fn mark_in_use(states: &mut BTreeMap<String, NetworkState>, network_id: &str, address: &str) {
    if let Some(state) = states.get_mut(network_id)
        && let Some(address) = ipam::parse_address(address)
    {
        state.in_use.insert(address);
    }
}

/// Gives every network not yet allocated its subnets, gateways and VNIs: first the networks
/// that ask for subnets of their own, so no subnet carved from the pools lands on one of
/// theirs, oldest first.
fn allocate_networks(
    input: &AllocatorInput<'_>,
    states: &mut BTreeMap<String, NetworkState>,
    failed: &mut HashMap<String, AllocationFailure>,
) {
    let mut taken: Vec<(Subnet, String)> = Vec::new();
    let mut vnis: BTreeSet<u32> = BTreeSet::new();
    for network in input
        .networks
        .iter()
        .filter(|network| is_allocated(network))
    {
        let state = NetworkState::of_allocated(network);
        taken.extend(
            state
                .spaces
                .iter()
                .map(|space| (space.subnet, network_name(network))),
        );
        vnis.extend(vnis_of(network));
        states.insert(network.id.clone(), state);
    }
    let requested: Vec<Subnet> = input
        .networks
        .iter()
        .filter(|network| !is_allocated(network))
        .flat_map(|network| requested_configs(network))
        .filter_map(|config| ipam::parse_subnet(&config.subnet))
        .collect();
    let mut unallocated: Vec<&Network> = input
        .networks
        .iter()
        .copied()
        .filter(|network| !is_allocated(network) && !network.pending_delete)
        .collect();
    unallocated.sort_by_key(|network| {
        let asks_for_subnet = requested_configs(network)
            .iter()
            .any(|config| !config.subnet.is_empty());
        (
            !asks_for_subnet,
            network
                .meta
                .as_ref()
                .and_then(|meta| meta.created_at)
                .map(|at| (at.seconds, at.nanos)),
            network.id.clone(),
        )
    });
    for network in unallocated {
        match allocate_network(network, input.pools, &taken, &requested, &vnis) {
            Ok(state) => {
                taken.extend(
                    state
                        .spaces
                        .iter()
                        .map(|space| (space.subnet, network_name(network))),
                );
                vnis.extend(vnis_of(&state.network));
                states.insert(network.id.clone(), state);
            }
            Err(failure) => {
                failed.insert(network.id.clone(), failure);
            }
        }
    }
}

fn requested_configs(network: &Network) -> &[IpamConfig] {
    network
        .spec
        .as_ref()
        .and_then(|spec| spec.ipam.as_ref())
        .map_or(&[], |ipam| ipam.configs.as_slice())
}

fn allocate_network(
    network: &Network,
    pools: &AddressPools,
    taken: &[(Subnet, String)],
    requested: &[Subnet],
    vnis_in_use: &BTreeSet<u32>,
) -> Result<NetworkState, AllocationFailure> {
    let name = network_name(network);
    let invalid = |problem: String| AllocationFailure::InvalidIpam {
        network: name.clone(),
        problem,
    };
    let asked: Vec<IpamConfig> = match requested_configs(network) {
        [] => vec![IpamConfig::default()],
        configs => configs.to_vec(),
    };
    let mut spaces: Vec<AddressSpace> = Vec::new();
    let mut configs: Vec<IpamConfig> = Vec::new();
    for config in &asked {
        if config.family() == ipam_config::AddressFamily::Ipv6 {
            return Err(invalid("IPv6 subnets are not supported".to_owned()));
        }
        let subnet = if config.subnet.trim().is_empty() {
            if !config.range.is_empty() || !config.gateway.is_empty() {
                return Err(invalid(
                    "an IP range or gateway needs a subnet to lie in".to_owned(),
                ));
            }
            let mut in_the_way: Vec<Subnet> = taken.iter().map(|(subnet, _)| *subnet).collect();
            in_the_way.extend_from_slice(requested);
            in_the_way.extend(spaces.iter().map(|space| space.subnet));
            ipam::carve_subnet(&pools.pools, pools.subnet_prefix_len, &in_the_way).ok_or_else(
                || AllocationFailure::PoolExhausted {
                    network: name.clone(),
                    prefix_len: pools.subnet_prefix_len,
                    pools: pools
                        .pools
                        .iter()
                        .map(Subnet::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            )?
        } else {
            let subnet = Subnet::parse(config.subnet.trim(), "subnet")
                .map_err(|error| invalid(error.to_string()))?;
            let own = spaces.iter().map(|space| (space.subnet, name.clone()));
            if let Some((other_subnet, other)) = taken
                .iter()
                .cloned()
                .chain(own)
                .find(|(other, _)| other.overlaps(subnet))
            {
                return Err(AllocationFailure::SubnetOverlaps {
                    network: name.clone(),
                    subnet: subnet.to_string(),
                    other,
                    other_subnet: other_subnet.to_string(),
                });
            }
            subnet
        };
        let range = match config.range.trim() {
            "" => None,
            text => {
                let range =
                    Subnet::parse(text, "IP range").map_err(|error| invalid(error.to_string()))?;
                if !subnet.covers(range) {
                    return Err(invalid(format!(
                        "IP range {range} is not inside subnet {subnet}"
                    )));
                }
                Some(range)
            }
        };
        let gateway = match config.gateway.trim() {
            "" => AddressSpace::default_gateway(subnet, range),
            text => {
                let gateway = ipam::parse_address(text)
                    .ok_or_else(|| invalid(format!("gateway {text:?} is not an IPv4 address")))?;
                if !subnet.contains(std::net::Ipv4Addr::from(gateway)) {
                    return Err(invalid(format!(
                        "gateway {text} is not inside subnet {subnet}"
                    )));
                }
                gateway
            }
        };
        configs.push(IpamConfig {
            family: ipam_config::AddressFamily::Ipv4 as i32,
            subnet: subnet.to_string(),
            range: range.map(|range| range.to_string()).unwrap_or_default(),
            gateway: ipam::format_address(gateway),
            reserved: Default::default(),
        });
        spaces.push(AddressSpace {
            subnet,
            range,
            gateway,
        });
    }

    let driver_config = network
        .spec
        .as_ref()
        .and_then(|spec| spec.driver_config.clone())
        .unwrap_or_default();
    let vnis = choose_vnis(&name, &driver_config, spaces.len(), vnis_in_use)?;
    let mut options = driver_config.options.clone();
    options.insert(
        VXLAN_ID_LIST_OPTION.to_owned(),
        vnis.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    let mut allocated = network.clone();
    allocated.driver_state = Some(Driver {
        name: if driver_config.name.is_empty() {
            OVERLAY_DRIVER.to_owned()
        } else {
            driver_config.name.clone()
        },
        options,
    });
    allocated.ipam = Some(IpamOptions {
        driver: Some(Driver {
            name: DEFAULT_IPAM_DRIVER.to_owned(),
            options: Default::default(),
        }),
        configs,
    });
    Ok(NetworkState {
        network: allocated,
        spaces,
        in_use: BTreeSet::new(),
        last_allocated: None,
        changed: true,
    })
}

/// One VNI per subnet: those the network's driver options name (Docker's `vxlanid_list`,
/// honoured in order, the rest filled in), each free; the others the lowest free ones from
/// just above the highest in use, wrapping round to [`FIRST_VNI`], so a freed VNI is not
/// reused at once while nodes may still hold the old network's devices.
fn choose_vnis(
    network: &str,
    driver_config: &Driver,
    count: usize,
    in_use: &BTreeSet<u32>,
) -> Result<Vec<u32>, AllocationFailure> {
    let mut chosen: Vec<u32> = Vec::new();
    if let Some(list) = driver_config.options.get(VXLAN_ID_LIST_OPTION) {
        for text in list
            .split(',')
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .take(count)
        {
            match text.parse::<u32>() {
                Ok(vni)
                    if (1..VNI_LIMIT).contains(&vni)
                        && !in_use.contains(&vni)
                        && !chosen.contains(&vni) =>
                {
                    chosen.push(vni)
                }
                _ => {
                    return Err(AllocationFailure::VniUnavailable {
                        network: network.to_owned(),
                        vni: text.to_owned(),
                    });
                }
            }
        }
    }
    while chosen.len() < count {
        let start = in_use
            .iter()
            .chain(chosen.iter())
            .copied()
            .filter(|vni| *vni >= FIRST_VNI)
            .max()
            .map_or(FIRST_VNI, |highest| highest.saturating_add(1));
        let vni = (start..VNI_LIMIT)
            .chain(FIRST_VNI..start.min(VNI_LIMIT))
            .find(|vni| !in_use.contains(vni) && !chosen.contains(vni))
            .ok_or_else(|| AllocationFailure::VniExhausted {
                network: network.to_owned(),
            })?;
        chosen.push(vni);
    }
    Ok(chosen)
}

/// The service with one VIP on each network it attaches to (in `vip` mode; none in `dnsrr`
/// mode): the VIPs it holds are kept, those on networks it left are dropped (and so free), and
/// missing ones are allocated. A service being removed gets no new VIP.
fn allocate_virtual_ips(
    service: &Service,
    ingress: Option<&str>,
    states: &mut BTreeMap<String, NetworkState>,
    failures: &mut HashMap<(String, String), AllocationFailure>,
) -> Service {
    let wanted: Vec<&str> = if wants_virtual_ips(service) {
        let ingress = ingress.filter(|_| needs_ingress(service.spec.as_ref()));
        let mut targets: Vec<&str> = ingress
            .into_iter()
            .chain(
                service
                    .spec
                    .as_ref()
                    .map(service_attachments)
                    .unwrap_or_default()
                    .iter()
                    .map(|config| config.target.as_str()),
            )
            .collect();
        let mut seen = BTreeSet::new();
        targets.retain(|target| seen.insert(*target));
        targets
    } else {
        Vec::new()
    };
    let held: Vec<endpoint::VirtualIp> = service
        .endpoint
        .as_ref()
        .map(|endpoint| endpoint.virtual_ips.clone())
        .unwrap_or_default();
    let mut virtual_ips = Vec::new();
    for network_id in wanted {
        let kept = held.iter().find(|vip| {
            vip.network_id == network_id
                && states
                    .get(network_id)
                    .is_some_and(|state| state.holds(&vip.addr).is_some())
        });
        if let Some(vip) = kept {
            virtual_ips.push(vip.clone());
            continue;
        }
        if service.pending_delete {
            continue;
        }
        let Some(state) = states.get_mut(network_id) else {
            continue;
        };
        match state.allocate_address() {
            Ok(addr) => virtual_ips.push(endpoint::VirtualIp {
                network_id: network_id.to_owned(),
                addr,
            }),
            Err(failure) => {
                failures.insert((service.id.clone(), network_id.to_owned()), failure);
            }
        }
    }
    let mut updated = service.clone();
    if virtual_ips != held {
        let mut endpoint = service.endpoint.clone().unwrap_or_else(|| Endpoint {
            spec: service.spec.as_ref().and_then(|spec| spec.endpoint.clone()),
            ..Default::default()
        });
        endpoint.virtual_ips = virtual_ips;
        updated.endpoint = Some(endpoint);
    }
    updated
}

/// One attachment per network the task names, each with a fresh address, after one on the
/// ingress network when the task needs it (`ingress`: its id, or why there is none); on any
/// failure, the networks are left as they were before the task (addresses and the serial
/// position both), so a task that keeps failing writes nothing but its error.
fn allocate_task(
    task: &Task,
    ingress: Option<Result<&str, AllocationFailure>>,
    states: &mut BTreeMap<String, NetworkState>,
    failed_networks: &HashMap<String, AllocationFailure>,
    vip_failures: &HashMap<(String, String), AllocationFailure>,
) -> Result<Vec<NetworkAttachment>, AllocationFailure> {
    let ingress_config = match ingress.transpose()? {
        Some(network_id) => vec![NetworkAttachmentConfig {
            target: network_id.to_owned(),
            ..Default::default()
        }],
        None => Vec::new(),
    };
    let mut attachments: Vec<NetworkAttachment> = Vec::new();
    // Each network touched, with its serial position and changed flag before the task, and
    // the address taken.
    let mut taken: Vec<(String, Option<u32>, bool, u32)> = Vec::new();
    let mut outcome = Ok(());
    for config in ingress_config.iter().chain(task_attachments(task)) {
        let already_attached = attachments.iter().any(|attachment| {
            attachment
                .network
                .as_ref()
                .map(|network| network.id.as_str())
                == Some(config.target.as_str())
        });
        if already_attached {
            continue;
        }
        if let Some(failure) = failed_networks
            .get(&config.target)
            .or_else(|| vip_failures.get(&(task.service_id.clone(), config.target.clone())))
        {
            outcome = Err(failure.clone());
            break;
        }
        let Some(state) = states.get_mut(&config.target) else {
            outcome = Err(AllocationFailure::NetworkNotFound {
                network_id: config.target.clone(),
            });
            break;
        };
        let (last_before, changed_before) = (state.last_allocated, state.changed);
        match state.allocate_address() {
            Ok(address) => {
                if let Some(number) = ipam::parse_address(&address) {
                    taken.push((config.target.clone(), last_before, changed_before, number));
                }
                attachments.push(NetworkAttachment {
                    network: Some(state.network.clone()),
                    addresses: vec![address],
                    aliases: config.aliases.clone(),
                    driver_attachment_opts: config.driver_attachment_opts.clone(),
                });
            }
            Err(failure) => {
                outcome = Err(failure);
                break;
            }
        }
    }
    match outcome {
        Ok(()) => Ok(attachments),
        Err(failure) => {
            for (network_id, last_before, changed_before, address) in taken.into_iter().rev() {
                if let Some(state) = states.get_mut(&network_id) {
                    state.in_use.remove(&address);
                    state.last_allocated = last_before;
                    state.changed = changed_before;
                }
            }
            Err(failure)
        }
    }
}
