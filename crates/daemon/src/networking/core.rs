//! The pure core of the node's networking: from the networked tasks this node holds, its own
//! leg on the ingress network and the endpoints the gossip makes visible, everything the shell
//! programs (the overlay's data plane, the embedded DNS's names, each task's VIP table, the
//! routing mesh's published ports, this node's gossip publications and the networks it gossips
//! on), and what changes between two such plans. No IO, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use overlay_net::gossip::{
    EndpointKey, EndpointRecord, GossipKey, IngressPortRecord, KEY_LEN, Keyring, VisibleEndpoint,
};
use overlay_net::{
    Desired, HostLeg, Ipv4Cidr, LocalEndpoint, LocalTask, Mac, Network, NodeConfig, RemotePeer,
    ipsec,
};
use routing_mesh::dns::{
    AskingTask, NetworkRecords, ServiceEndpoint, ServiceRecords, TaskHealth, TaskRecord,
};
use routing_mesh::mesh::{Crossing, Mesh, PublishedPort, TrafficPolicy};
use routing_mesh::vip::{Protocol, VipPorts, VipService};
use shoal_proto::api::EncryptionKey;
use shoal_proto::api::encryption_key::Algorithm;
use shoal_proto::api::port_config;
use spec::enums::TextForm;
use worker::networking::{EndpointMode, IngressPort, NetworkAttachment, TaskNetworks};

/// One networked task this node holds: what the worker said of it, and what the node gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldTask {
    pub networks: TaskNetworks,
    /// The task's network namespace, which its container joins.
    pub netns: PathBuf,
    /// Its address on the gateway bridge, when one of its networks is not internal.
    pub egress: Option<Ipv4Addr>,
    /// Running and, with a healthcheck, healthy.
    pub serving: bool,
}

/// One attachment with its addresses read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedAttachment {
    pub gateway: Ipv4Cidr,
    pub address: Ipv4Cidr,
    pub virtual_ip: Option<Ipv4Cidr>,
}

/// Reads an attachment's gateway, address and VIP, saying which one is wrong.
pub fn parse_attachment(attachment: &NetworkAttachment) -> Result<ParsedAttachment, String> {
    let field = |what: &str, text: &str| {
        Ipv4Cidr::parse(text)
            .map_err(|error| format!("network {}: its {what}: {error}", attachment.network_name))
    };
    Ok(ParsedAttachment {
        gateway: field("gateway", &attachment.gateway)?,
        address: field("task address", &attachment.address)?,
        virtual_ip: attachment
            .virtual_ip
            .as_deref()
            .map(|vip| field("virtual IP", vip))
            .transpose()?,
    })
}

/// Whether the task needs a leg on the gateway bridge: one of its networks leads out, or it
/// publishes a port on its host (reached through that leg).
pub fn needs_egress(task: &TaskNetworks) -> bool {
    !task.host_ports.is_empty()
        || task
            .attachments
            .iter()
            .any(|attachment| !attachment.internal)
}

/// The interface a task's `index`th network gets inside it.
pub fn interface_name(index: usize) -> String {
    format!("eth{index}")
}

/// Everything the shell programs for one state of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// The overlay's data plane.
    pub desired: Desired,
    /// The names the embedded DNS answers, per network this node has a task on.
    pub dns: Vec<NetworkRecords>,
    /// Each local task's VIP table, by task id.
    pub vips: BTreeMap<String, Vec<VipService>>,
    /// This node's endpoints as the gossip should carry them.
    pub publications: BTreeMap<EndpointKey, EndpointRecord>,
    /// The networks whose gossip this node is on: those it has a task on, and the ingress
    /// network while the managers give the node an address there.
    pub gossip_networks: BTreeSet<String>,
    /// What the mesh's table serves on this node: the swarm's published ports, while the node
    /// has an address on the ingress network, and its own tasks' host-mode ports; `None`: none,
    /// and no table.
    pub mesh: Option<Mesh>,
}

/// The gossip's endpoint id of a node's own leg on the ingress network. Task ids have no dash,
/// so it can't be a task's.
pub fn leg_endpoint(node: &str) -> String {
    format!("node-{node}")
}

/// A task's endpoint on one network, local or from the gossip, as DNS and VIPs see it.
struct SeenEndpoint {
    service_id: String,
    service_name: String,
    aliases: Vec<String>,
    virtual_ip: Option<Ipv4Addr>,
    container_name: String,
    address: Ipv4Addr,
    serving: bool,
}

/// Plans the node: `node` is this node's gossip name (its node id), `ingress_leg` its own address
/// on the ingress network (while a service publishes through the routing mesh), `table` what
/// the gossip makes visible (this node's own entries in it are ignored: the local tasks are the
/// truth about them). Attachments whose addresses don't read are left out (`prepare` refuses
/// such tasks).
pub fn plan_node(
    config: &NodeConfig,
    node: &str,
    tasks: &BTreeMap<String, HeldTask>,
    ingress_leg: Option<&NetworkAttachment>,
    table: &BTreeMap<EndpointKey, VisibleEndpoint>,
) -> NodePlan {
    let mut networks: BTreeMap<String, Network> = BTreeMap::new();
    let mut network_names: BTreeMap<String, (String, bool, bool)> = BTreeMap::new();
    let mut used_vnis: BTreeSet<u32> = BTreeSet::new();
    let mut local_tasks = Vec::new();
    let mut endpoints = Vec::new();
    let mut publications = BTreeMap::new();
    // network id → endpoint (task) id → what DNS and VIPs see of it.
    let mut seen: BTreeMap<String, BTreeMap<String, SeenEndpoint>> = BTreeMap::new();
    let mut local_addresses: BTreeSet<(String, Ipv4Addr)> = BTreeSet::new();

    for (task_id, task) in tasks {
        let mut any = false;
        for (index, attachment) in task.networks.attachments.iter().enumerate() {
            let Ok(parsed) = parse_attachment(attachment) else {
                continue;
            };
            let network_id = &attachment.network_id;
            if !networks.contains_key(network_id) {
                // Two networks with one VNI can't both be planned; the allocator never gives
                // one twice, so the second is a stale task's and waits for it to go.
                if !used_vnis.insert(attachment.vni) {
                    continue;
                }
                networks.insert(
                    network_id.clone(),
                    Network {
                        id: network_id.clone(),
                        vni: attachment.vni,
                        gateway: parsed.gateway,
                        internal: attachment.internal,
                        encrypted: attachment.encrypted,
                    },
                );
                network_names.insert(
                    network_id.clone(),
                    (
                        attachment.network_name.clone(),
                        attachment.ingress,
                        attachment.internal,
                    ),
                );
            }
            any = true;
            let mac = Mac::for_ipv4(parsed.address.addr);
            endpoints.push(LocalEndpoint {
                task_id: task_id.clone(),
                network_id: network_id.clone(),
                address: parsed.address,
                mac,
                interface: interface_name(index),
            });
            local_addresses.insert((network_id.clone(), parsed.address.addr));
            publications.insert(
                EndpointKey {
                    network: network_id.clone(),
                    endpoint: task_id.clone(),
                },
                EndpointRecord {
                    task_name: task.networks.container_name.clone(),
                    address: parsed.address.to_string(),
                    mac: mac.to_string(),
                    tunnel_endpoint: IpAddr::V4(config.vtep),
                    service_id: task.networks.service_id.clone(),
                    service_name: task.networks.service_name.clone(),
                    virtual_ip: vip_of(task, &parsed).map(|vip| vip.to_string()),
                    aliases: attachment.aliases.clone(),
                    healthy: task.serving,
                    ingress_ports: if attachment.ingress {
                        task.networks
                            .ingress_ports
                            .iter()
                            .map(ingress_port_record)
                            .collect()
                    } else {
                        Vec::new()
                    },
                },
            );
            seen.entry(network_id.clone()).or_default().insert(
                task_id.clone(),
                SeenEndpoint {
                    service_id: task.networks.service_id.clone(),
                    service_name: task.networks.service_name.clone(),
                    aliases: attachment.aliases.clone(),
                    virtual_ip: vip_of(task, &parsed).map(|vip| vip.addr),
                    container_name: task.networks.container_name.clone(),
                    address: parsed.address.addr,
                    serving: task.serving,
                },
            );
        }
        if any || !task.networks.host_ports.is_empty() {
            local_tasks.push(LocalTask {
                id: task_id.clone(),
                netns: task.netns.clone(),
                egress: task.egress,
            });
        }
    }

    // The ingress network's gossip tells the node which ports the swarm publishes; the leg is
    // made only once there is a port to serve.
    let ingress_ports = ingress_leg
        .map(|leg| mesh_ports(node, leg, tasks, &local_addresses, table))
        .unwrap_or_default();
    let mut gossip_networks: BTreeSet<String> = ingress_leg
        .map(|leg| leg.network_id.clone())
        .into_iter()
        .collect();
    let host_legs = if !ingress_ports.is_empty() {
        plan_leg(
            config,
            node,
            ingress_leg,
            &mut networks,
            &mut network_names,
            &mut used_vnis,
            &mut local_addresses,
            &mut publications,
        )
    } else {
        Vec::new()
    };
    // A leg that can't be planned serves nothing through the mesh; host ports need none.
    let mut mesh = if host_legs.is_empty() {
        Vec::new()
    } else {
        ingress_ports
    };
    add_host_ports(tasks, &mut mesh);
    let mesh = (!mesh.is_empty()).then(|| Mesh {
        address: config.vtep,
        peers: ingress_leg
            .map(|leg| mesh_peers(node, &leg.network_id, table))
            .unwrap_or_default(),
        ports: mesh,
    });

    let mut peers = BTreeMap::new();
    for (key, visible) in table {
        if visible.node == node || !networks.contains_key(&key.network) {
            continue;
        }
        let record = &visible.record;
        let (Ok(address), IpAddr::V4(vtep)) =
            (Ipv4Cidr::parse(&record.address), record.tunnel_endpoint)
        else {
            continue;
        };
        // A remote copy of an address a local task holds is stale (the task moved here).
        if local_addresses.contains(&(key.network.clone(), address.addr)) {
            continue;
        }
        let mac = parse_mac(&record.mac).unwrap_or_else(|| Mac::for_ipv4(address.addr));
        peers.insert(
            (key.network.clone(), address.addr),
            RemotePeer {
                network_id: key.network.clone(),
                address: address.addr,
                mac,
                vtep,
            },
        );
        // A node's leg is a peer to reach, not a task with names.
        if record.service_id.is_empty() {
            continue;
        }
        seen.entry(key.network.clone()).or_default().insert(
            key.endpoint.clone(),
            SeenEndpoint {
                service_id: record.service_id.clone(),
                service_name: record.service_name.clone(),
                aliases: record.aliases.clone(),
                virtual_ip: record
                    .virtual_ip
                    .as_deref()
                    .and_then(|vip| Ipv4Cidr::parse(vip).ok())
                    .map(|vip| vip.addr),
                container_name: record.task_name.clone(),
                address: address.addr,
                serving: record.healthy,
            },
        );
    }

    let dns = network_names
        .iter()
        .map(|(id, (name, ingress, internal))| NetworkRecords {
            id: id.clone(),
            name: name.clone(),
            ingress: *ingress,
            internal: *internal,
            services: services_on(seen.get(id)),
        })
        .collect();

    let vips = tasks
        .iter()
        .filter(|(task_id, _)| local_tasks.iter().any(|task| &task.id == *task_id))
        .map(|(task_id, task)| {
            let mut by_vip: BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>> = BTreeMap::new();
            for attachment in &task.networks.attachments {
                if attachment.ingress {
                    continue;
                }
                for endpoint in seen
                    .get(&attachment.network_id)
                    .into_iter()
                    .flat_map(|s| s.values())
                {
                    let Some(vip) = endpoint.virtual_ip else {
                        continue;
                    };
                    let backends = by_vip.entry(vip).or_default();
                    if endpoint.serving {
                        backends.insert(endpoint.address);
                    }
                }
            }
            let services = by_vip
                .into_iter()
                .map(|(vip, backends)| VipService {
                    vip,
                    ports: VipPorts::All,
                    backends,
                })
                .collect();
            (task_id.clone(), services)
        })
        .collect();

    gossip_networks.extend(networks.keys().cloned());

    NodePlan {
        gossip_networks,
        desired: Desired {
            config: config.clone(),
            networks: networks.into_values().collect(),
            tasks: local_tasks,
            endpoints,
            peers: peers.into_values().collect(),
            host_legs,
        },
        dns,
        vips,
        publications,
        mesh,
    }
}

/// The node's leg on the ingress network, when it has one that reads: the network planned (when
/// no task brought it), the leg's address taken as local, and the leg published so the other
/// nodes can reach it (the mesh's SNAT source, and where replies to it go).
#[allow(clippy::too_many_arguments)]
fn plan_leg(
    config: &NodeConfig,
    node: &str,
    ingress_leg: Option<&NetworkAttachment>,
    networks: &mut BTreeMap<String, Network>,
    network_names: &mut BTreeMap<String, (String, bool, bool)>,
    used_vnis: &mut BTreeSet<u32>,
    local_addresses: &mut BTreeSet<(String, Ipv4Addr)>,
    publications: &mut BTreeMap<EndpointKey, EndpointRecord>,
) -> Vec<HostLeg> {
    let Some((leg, parsed)) = ingress_leg.and_then(|leg| Some((leg, parse_attachment(leg).ok()?)))
    else {
        return Vec::new();
    };
    if !networks.contains_key(&leg.network_id) {
        if !used_vnis.insert(leg.vni) {
            return Vec::new();
        }
        networks.insert(
            leg.network_id.clone(),
            Network {
                id: leg.network_id.clone(),
                vni: leg.vni,
                gateway: parsed.gateway,
                internal: leg.internal,
                encrypted: leg.encrypted,
            },
        );
        network_names.insert(
            leg.network_id.clone(),
            (leg.network_name.clone(), leg.ingress, leg.internal),
        );
    }
    local_addresses.insert((leg.network_id.clone(), parsed.address.addr));
    publications.insert(
        EndpointKey {
            network: leg.network_id.clone(),
            endpoint: leg_endpoint(node),
        },
        EndpointRecord {
            task_name: String::new(),
            address: parsed.address.to_string(),
            mac: Mac::for_ipv4(parsed.address.addr).to_string(),
            tunnel_endpoint: IpAddr::V4(config.vtep),
            service_id: String::new(),
            service_name: String::new(),
            virtual_ip: None,
            aliases: Vec::new(),
            healthy: true,
            ingress_ports: Vec::new(),
        },
    );
    vec![HostLeg {
        network_id: leg.network_id.clone(),
        address: parsed.address,
    }]
}

fn ingress_port_record(port: &IngressPort) -> IngressPortRecord {
    IngressPortRecord {
        protocol: port.protocol.text().to_owned(),
        published: port.published,
        target: port.target,
        policy: port.policy.text().to_owned(),
    }
}

fn mesh_protocol(protocol: port_config::Protocol) -> Protocol {
    match protocol {
        port_config::Protocol::Tcp => Protocol::Tcp,
        port_config::Protocol::Udp => Protocol::Udp,
        port_config::Protocol::Sctp => Protocol::Sctp,
    }
}

fn mesh_policy(policy: port_config::TrafficPolicy) -> TrafficPolicy {
    match policy {
        port_config::TrafficPolicy::PreferLocal => TrafficPolicy::PreferLocal,
        port_config::TrafficPolicy::Cluster => TrafficPolicy::Cluster,
        port_config::TrafficPolicy::Local => TrafficPolicy::Local,
    }
}

/// Adds the ports local tasks publish on this node (`mode=host`): each to its task's address on
/// the gateway bridge, only while it serves, keeping the client's address. A number the mesh
/// already serves stays the mesh's (the managers keep the two apart).
fn add_host_ports(tasks: &BTreeMap<String, HeldTask>, mesh: &mut Vec<PublishedPort>) {
    for task in tasks.values() {
        let Some(egress) = task.egress else {
            continue;
        };
        for port in &task.networks.host_ports {
            let protocol = mesh_protocol(port.protocol);
            if mesh
                .iter()
                .any(|taken| (taken.protocol, taken.port) == (protocol, port.published))
            {
                continue;
            }
            mesh.push(PublishedPort {
                protocol,
                port: port.published,
                policy: TrafficPolicy::Local,
                local: task
                    .serving
                    .then(|| SocketAddrV4::new(egress, port.target))
                    .into_iter()
                    .collect(),
                cluster: BTreeSet::new(),
                crossing: Crossing::NodePorts(BTreeMap::new()),
            });
        }
    }
    mesh.sort_by_key(|port| (port.protocol, port.port));
}

/// The other nodes on the ingress network, by their tunnel endpoints: those that may hand the
/// mesh's connections to this one.
fn mesh_peers(
    node: &str,
    ingress_network: &str,
    table: &BTreeMap<EndpointKey, VisibleEndpoint>,
) -> BTreeSet<Ipv4Addr> {
    table
        .iter()
        .filter(|(key, visible)| key.network == ingress_network && visible.node != node)
        .filter_map(|(_, visible)| match visible.record.tunnel_endpoint {
            IpAddr::V4(address) => Some(address),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// One ready task behind a published port, as the mesh reaches it.
enum Backend {
    /// A task on this node: its ingress address, and the address the node's own paths send to,
    /// on the gateway bridge, where the task's replies leave by its default route (its ingress
    /// address when it has no leg there).
    Here {
        ingress: SocketAddrV4,
        direct: SocketAddrV4,
    },
    /// A task on another node: its ingress address, and that node's tunnel endpoint.
    Elsewhere { ingress: SocketAddrV4, node: IpAddr },
}

/// The ports the mesh serves on this node: every port a task on the ingress network publishes,
/// local or gossiped, with the ready ones as its backends: local tasks in `local` and `cluster`,
/// remote ones in `cluster` and counted by their node for handing on, unless the ingress network
/// is encrypted. A port whose tasks are all unready stays, with no backend, so it is refused at
/// once rather than left to whatever else listens. A port two services claim (which the managers
/// refuse) goes to the first in task order.
fn mesh_ports(
    node: &str,
    ingress_leg: &NetworkAttachment,
    tasks: &BTreeMap<String, HeldTask>,
    local_addresses: &BTreeSet<(String, Ipv4Addr)>,
    table: &BTreeMap<EndpointKey, VisibleEndpoint>,
) -> Vec<PublishedPort> {
    let ingress_network = &ingress_leg.network_id;
    let mut ports: BTreeMap<(Protocol, u16), PublishedPort> = BTreeMap::new();
    let mut add = |protocol: port_config::Protocol,
                   published: u16,
                   policy: port_config::TrafficPolicy,
                   backend: Option<Backend>| {
        let protocol = mesh_protocol(protocol);
        let port = ports
            .entry((protocol, published))
            .or_insert_with(|| PublishedPort {
                protocol,
                port: published,
                policy: mesh_policy(policy),
                local: BTreeSet::new(),
                cluster: BTreeSet::new(),
                // ESP covers the overlay only: an encrypted ingress keeps the mesh inside it.
                crossing: if ingress_leg.encrypted {
                    Crossing::Overlay
                } else {
                    Crossing::NodePorts(BTreeMap::new())
                },
            });
        match backend {
            None => {}
            Some(Backend::Here { ingress, direct }) => {
                port.cluster.insert(ingress);
                port.local.insert(direct);
            }
            Some(Backend::Elsewhere { ingress, node }) => {
                port.cluster.insert(ingress);
                if let (IpAddr::V4(node), Crossing::NodePorts(nodes)) = (node, &mut port.crossing) {
                    *nodes.entry(node).or_default() += 1;
                }
            }
        }
    };
    for task in tasks.values() {
        let Some(parsed) = task
            .networks
            .attachments
            .iter()
            .find(|attachment| attachment.network_id == *ingress_network)
            .and_then(|attachment| parse_attachment(attachment).ok())
        else {
            continue;
        };
        for port in &task.networks.ingress_ports {
            let backend = task.serving.then(|| Backend::Here {
                ingress: SocketAddrV4::new(parsed.address.addr, port.target),
                direct: SocketAddrV4::new(task.egress.unwrap_or(parsed.address.addr), port.target),
            });
            add(port.protocol, port.published, port.policy, backend);
        }
    }
    for (key, visible) in table {
        if visible.node == node || key.network != *ingress_network {
            continue;
        }
        let record = &visible.record;
        let Ok(address) = Ipv4Cidr::parse(&record.address) else {
            continue;
        };
        if local_addresses.contains(&(key.network.clone(), address.addr)) {
            continue;
        }
        for port in &record.ingress_ports {
            let (Ok(protocol), Ok(policy)) = (
                port_config::Protocol::parse(&port.protocol),
                port_config::TrafficPolicy::parse(&port.policy),
            ) else {
                continue;
            };
            let backend = record.healthy.then(|| Backend::Elsewhere {
                ingress: SocketAddrV4::new(address.addr, port.target),
                node: record.tunnel_endpoint,
            });
            add(protocol, port.published, policy, backend);
        }
    }
    ports.into_values().collect()
}

/// The service's VIP on this network, in `vip` mode.
fn vip_of(task: &HeldTask, parsed: &ParsedAttachment) -> Option<Ipv4Cidr> {
    match task.networks.endpoint_mode {
        EndpointMode::Vip => parsed.virtual_ip,
        EndpointMode::DnsRoundRobin => None,
    }
}

fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(Mac(mac))
}

/// One network's services, in service id order, each with its tasks in name order. A service's
/// name, aliases and VIP are those of its first endpoint in endpoint id order.
fn services_on(endpoints: Option<&BTreeMap<String, SeenEndpoint>>) -> Vec<ServiceRecords> {
    let mut services: BTreeMap<&str, ServiceRecords> = BTreeMap::new();
    for endpoint in endpoints.into_iter().flat_map(|e| e.values()) {
        let service = services
            .entry(&endpoint.service_id)
            .or_insert_with(|| ServiceRecords {
                name: endpoint.service_name.clone(),
                aliases: endpoint.aliases.clone(),
                endpoint: match endpoint.virtual_ip {
                    Some(vip) => ServiceEndpoint::VirtualIp(IpAddr::V4(vip)),
                    None => ServiceEndpoint::DnsRoundRobin,
                },
                tasks: Vec::new(),
            });
        service.tasks.push(TaskRecord {
            container_name: endpoint.container_name.clone(),
            address: IpAddr::V4(endpoint.address),
            // `serving` already folds in the healthcheck.
            running: endpoint.serving,
            health: TaskHealth::NoHealthcheck,
        });
    }
    services
        .into_values()
        .map(|mut service| {
            service
                .tasks
                .sort_by(|a, b| a.container_name.cmp(&b.container_name));
            service
        })
        .collect()
}

/// What the gossip agent is told to go from one plan's publications and networks to the next:
/// joins before publications, withdrawals before leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GossipChanges {
    pub join: Vec<String>,
    pub publish: Vec<(EndpointKey, EndpointRecord)>,
    pub withdraw: Vec<EndpointKey>,
    pub leave: Vec<String>,
}

impl GossipChanges {
    pub fn is_empty(&self) -> bool {
        self.join.is_empty()
            && self.publish.is_empty()
            && self.withdraw.is_empty()
            && self.leave.is_empty()
    }
}

/// The gossip changes from what was applied (`networks`, `published`) to `plan`.
pub fn gossip_changes(
    networks: &BTreeSet<String>,
    published: &BTreeMap<EndpointKey, EndpointRecord>,
    plan: &NodePlan,
) -> GossipChanges {
    GossipChanges {
        join: plan.gossip_networks.difference(networks).cloned().collect(),
        publish: plan
            .publications
            .iter()
            .filter(|(key, record)| published.get(*key) != Some(*record))
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect(),
        withdraw: published
            .keys()
            .filter(|key| !plan.publications.contains_key(*key))
            .cloned()
            .collect(),
        leave: networks
            .difference(&plan.gossip_networks)
            .cloned()
            .collect(),
    }
}

/// The gateway bridge's subnet: Docker's docker_gwbridge default, 172.18.0.0/16, or the next
/// /16 up to 172.31.0.0/16 when an address of the host (`taken`) lies in it; the default when
/// all are taken.
pub fn pick_gateway_bridge(taken: &[Ipv4Addr]) -> Ipv4Cidr {
    let candidate = |second: u8| Ipv4Cidr {
        addr: Ipv4Addr::new(172, second, 0, 0),
        prefix: 16,
    };
    (18..=31)
        .map(candidate)
        .find(|subnet| !taken.iter().any(|address| subnet.contains(*address)))
        .unwrap_or_else(|| candidate(18))
}

/// The task as its embedded DNS sees the asker: its networks in its order, and its DNS options.
pub fn asking_task(task: &TaskNetworks, ndots_set: bool) -> AskingTask {
    AskingTask {
        networks: task
            .attachments
            .iter()
            .map(|attachment| attachment.network_id.clone())
            .collect(),
        ndots_set,
        own_upstreams: !routing_mesh::dns::task_upstreams(&task.dns.nameservers).is_empty(),
    }
}

/// The task's /etc/hosts: Docker's localhost lines, the task's first address with its hostname,
/// then its `--host` entries ("IP NAME [ALIAS...]").
pub fn hosts_file(task: &TaskNetworks) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    let own_address = task
        .attachments
        .iter()
        .find_map(|attachment| Ipv4Cidr::parse(&attachment.address).ok());
    if let Some(address) = own_address
        && !task.hostname.is_empty()
    {
        text.push_str(&format!("{}\t{}\n", address.addr, task.hostname));
    }
    for entry in &task.hosts {
        let mut words = entry.split_whitespace();
        if let Some(ip) = words.next() {
            let names: Vec<&str> = words.collect();
            if !names.is_empty() {
                text.push_str(&format!("{ip}\t{}\n", names.join(" ")));
            }
        }
    }
    text
}

/// A subsystem's usable keys from the session: AES-256-GCM keys of `subsystem`, newest (by
/// Lamport time, the same on every node) first, one per Lamport time.
fn session_keys(keys: &[EncryptionKey], subsystem: &str) -> Vec<(u64, [u8; KEY_LEN])> {
    let mut usable: Vec<(u64, [u8; KEY_LEN])> = keys
        .iter()
        .filter(|key| key.subsystem == subsystem && key.algorithm == Algorithm::Aes256Gcm as i32)
        .filter_map(|key| {
            Some((
                key.lamport_time,
                <[u8; KEY_LEN]>::try_from(key.key.as_slice()).ok()?,
            ))
        })
        .collect();
    usable.sort_by_key(|(lamport, _)| std::cmp::Reverse(*lamport));
    usable.dedup_by_key(|(lamport, _)| *lamport as u32);
    usable
}

/// Which of the keys, newest first, a node seals with: the second newest, as Docker's nodes
/// do, so after a rotation the nodes that have not had the new key yet still read what the
/// others send; the newest is only accepted. A lone key seals.
fn sealing_index(keys: usize) -> usize {
    usize::from(keys >= 2)
}

/// The gossip's keyring from the session's network keys, each named by its Lamport time.
/// `None` when there is no usable key.
pub fn gossip_keyring(keys: &[EncryptionKey]) -> Option<Keyring> {
    let mut keys: Vec<GossipKey> = session_keys(keys, spec::network::KEY_SUBSYSTEM_GOSSIP)
        .into_iter()
        .map(|(lamport, secret)| GossipKey::new(lamport as u32, secret))
        .collect();
    if keys.is_empty() {
        return None;
    }
    let primary = keys.remove(sealing_index(keys.len()));
    Keyring::new(primary, keys).ok()
}

/// The encrypted overlays' keyring from the session's network keys: each key's first 16 bytes
/// are the AES-GCM key and the next 4 the rfc4106 salt, tagged by its Lamport time; the second
/// newest sends, as with the gossip. `None` when there is no usable key.
pub fn ipsec_keyring(keys: &[EncryptionKey]) -> Option<ipsec::Keyring> {
    let keys: Vec<ipsec::Key> = session_keys(keys, spec::network::KEY_SUBSYSTEM_IPSEC)
        .into_iter()
        .take(ipsec::MAX_KEYS)
        .map(|(lamport, secret)| {
            let mut key = [0; 16];
            let mut salt = [0; 4];
            key.copy_from_slice(&secret[..16]);
            salt.copy_from_slice(&secret[16..20]);
            ipsec::Key {
                tag: lamport as u32,
                key,
                salt,
            }
        })
        .collect();
    let primary = keys.get(sealing_index(keys.len()))?.tag;
    Some(ipsec::Keyring { keys, primary })
}

/// What encryption this node's plan asks for: the tunnel endpoints of the peers on its
/// encrypted networks, and those networks' VNIs (whose cleartext VXLAN is refused).
pub fn encrypted_peers(
    held: &BTreeMap<String, HeldTask>,
    desired: &Desired,
) -> (Vec<Ipv4Addr>, BTreeSet<u32>) {
    let encrypted: BTreeMap<&str, u32> = held
        .values()
        .flat_map(|task| &task.networks.attachments)
        .filter(|attachment| attachment.encrypted)
        .map(|attachment| (attachment.network_id.as_str(), attachment.vni))
        .collect();
    let vteps: BTreeSet<Ipv4Addr> = desired
        .peers
        .iter()
        .filter(|peer| encrypted.contains_key(peer.network_id.as_str()))
        .map(|peer| peer.vtep)
        .collect();
    (
        vteps.into_iter().collect(),
        encrypted.into_values().collect(),
    )
}

/// One of this node's task endpoints on a network, as `network inspect` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAttachment {
    pub task_id: String,
    pub container_name: String,
    pub mac: String,
    /// With the subnet's prefix ("10.0.1.5/24").
    pub address: String,
}

/// A node this one shares a network with: its gossip name and its VXLAN tunnel endpoint.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NetworkPeer {
    pub node: String,
    pub address: IpAddr,
}

/// What this node knows of `network_id`: its own tasks' endpoints there, and the nodes on it
/// (itself first, while it has a task there; then those the gossip shows an endpoint of).
pub fn network_attachments(
    node: &str,
    vtep: Ipv4Addr,
    network_id: &str,
    held: &BTreeMap<String, HeldTask>,
    table: &BTreeMap<EndpointKey, VisibleEndpoint>,
) -> (Vec<LocalAttachment>, Vec<NetworkPeer>) {
    let attachments: Vec<LocalAttachment> = held
        .iter()
        .flat_map(|(task_id, task)| {
            task.networks
                .attachments
                .iter()
                .filter(|attachment| attachment.network_id == network_id)
                .filter_map(|attachment| parse_attachment(attachment).ok())
                .map(|parsed| LocalAttachment {
                    task_id: task_id.clone(),
                    container_name: task.networks.container_name.clone(),
                    mac: Mac::for_ipv4(parsed.address.addr).to_string(),
                    address: parsed.address.to_string(),
                })
        })
        .collect();
    let mut peers = Vec::new();
    if !attachments.is_empty() {
        peers.push(NetworkPeer {
            node: node.to_owned(),
            address: IpAddr::V4(vtep),
        });
    }
    let remote: BTreeSet<NetworkPeer> = table
        .iter()
        .filter(|(key, visible)| key.network == network_id && visible.node != node)
        .map(|(_, visible)| NetworkPeer {
            node: visible.node.clone(),
            address: visible.record.tunnel_endpoint,
        })
        .collect();
    peers.extend(remote);
    (attachments, peers)
}

#[cfg(test)]
mod tests {
    use overlay_net::DEFAULT_VXLAN_PORT;
    use worker::networking::{DnsOptions, HostPort};

    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(text).unwrap()
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn config() -> NodeConfig {
        NodeConfig {
            prefix: "s00001".into(),
            underlay_netns: None,
            vtep: ip("192.0.2.1"),
            underlay_mtu: 1500,
            vxlan_port: DEFAULT_VXLAN_PORT,
            gwbridge: cidr("172.18.0.0/16"),
        }
    }

    fn attachment(network: &str, vni: u32, address: &str, vip: Option<&str>) -> NetworkAttachment {
        NetworkAttachment {
            network_id: format!("net-{network}"),
            network_name: network.to_owned(),
            vni,
            gateway: format!("10.0.{}.1/24", vni - 4096),
            address: address.to_owned(),
            internal: network == "back",
            encrypted: false,
            ingress: false,
            aliases: if network == "front" {
                vec!["www".into()]
            } else {
                Vec::new()
            },
            virtual_ip: vip.map(str::to_owned),
        }
    }

    fn task(
        id: &str,
        service: &str,
        attachments: Vec<NetworkAttachment>,
        serving: bool,
    ) -> HeldTask {
        HeldTask {
            networks: TaskNetworks {
                task_id: id.to_owned(),
                container_name: format!("{service}.1.{id}"),
                service_id: format!("svc-{service}"),
                service_name: service.to_owned(),
                endpoint_mode: EndpointMode::Vip,
                attachments,
                ingress_ports: Vec::new(),
                host_ports: Vec::new(),
                dns: DnsOptions::default(),
                hosts: Vec::new(),
                hostname: id.to_owned(),
            },
            netns: PathBuf::from(format!("/run/netns/s00001t-{id}")),
            egress: Some(ip("172.18.0.2")),
            serving,
        }
    }

    fn remote(
        node: &str,
        network: &str,
        id: &str,
        address: &str,
        healthy: bool,
    ) -> (EndpointKey, VisibleEndpoint) {
        (
            EndpointKey {
                network: format!("net-{network}"),
                endpoint: id.to_owned(),
            },
            VisibleEndpoint {
                node: node.to_owned(),
                record: EndpointRecord {
                    task_name: format!("web.2.{id}"),
                    address: address.to_owned(),
                    mac: Mac::for_ipv4(cidr(address).addr).to_string(),
                    tunnel_endpoint: IpAddr::V4(ip("192.0.2.2")),
                    service_id: "svc-web".to_owned(),
                    service_name: "web".to_owned(),
                    virtual_ip: Some("10.0.1.2/24".to_owned()),
                    aliases: vec!["www".into()],
                    healthy,
                    ingress_ports: Vec::new(),
                },
            },
        )
    }

    /// Task a of web (VIPs) on front then back, task b of db (dnsrr, not serving) on the
    /// internal back; and the gossip's view: web's task c on node n2, a stale copy of this
    /// node's own a, and a task on a network this node has no task on.
    fn scene() -> (
        BTreeMap<String, HeldTask>,
        BTreeMap<EndpointKey, VisibleEndpoint>,
    ) {
        let mut db = task(
            "b",
            "db",
            vec![attachment("back", 4098, "10.0.2.7/24", None)],
            false,
        );
        db.networks.endpoint_mode = EndpointMode::DnsRoundRobin;
        db.egress = None;
        let tasks = BTreeMap::from([
            (
                "a".to_owned(),
                task(
                    "a",
                    "web",
                    vec![
                        attachment("front", 4097, "10.0.1.5/24", Some("10.0.1.2/24")),
                        attachment("back", 4098, "10.0.2.5/24", Some("10.0.2.2/24")),
                    ],
                    true,
                ),
            ),
            ("b".to_owned(), db),
        ]);
        let table = BTreeMap::from([
            remote("n2", "front", "c", "10.0.1.6/24", true),
            remote("n1", "front", "a", "10.0.1.5/24", false),
            remote("n2", "elsewhere", "d", "10.0.9.6/24", true),
        ]);
        (tasks, table)
    }

    #[test]
    fn the_data_plane_has_the_node_s_networks_tasks_and_the_peers_on_them() {
        let (tasks, table) = scene();
        let plan = plan_node(&config(), "n1", &tasks, None, &table);
        assert_eq!(
            plan.desired,
            Desired {
                config: config(),
                networks: vec![
                    Network {
                        id: "net-back".into(),
                        vni: 4098,
                        gateway: cidr("10.0.2.1/24"),
                        internal: true,
                        encrypted: false,
                    },
                    Network {
                        id: "net-front".into(),
                        vni: 4097,
                        gateway: cidr("10.0.1.1/24"),
                        internal: false,
                        encrypted: false,
                    },
                ],
                tasks: vec![
                    LocalTask {
                        id: "a".into(),
                        netns: "/run/netns/s00001t-a".into(),
                        egress: Some(ip("172.18.0.2")),
                    },
                    LocalTask {
                        id: "b".into(),
                        netns: "/run/netns/s00001t-b".into(),
                        egress: None,
                    },
                ],
                endpoints: vec![
                    LocalEndpoint {
                        task_id: "a".into(),
                        network_id: "net-front".into(),
                        address: cidr("10.0.1.5/24"),
                        mac: Mac::for_ipv4(ip("10.0.1.5")),
                        interface: "eth0".into(),
                    },
                    LocalEndpoint {
                        task_id: "a".into(),
                        network_id: "net-back".into(),
                        address: cidr("10.0.2.5/24"),
                        mac: Mac::for_ipv4(ip("10.0.2.5")),
                        interface: "eth1".into(),
                    },
                    LocalEndpoint {
                        task_id: "b".into(),
                        network_id: "net-back".into(),
                        address: cidr("10.0.2.7/24"),
                        mac: Mac::for_ipv4(ip("10.0.2.7")),
                        interface: "eth0".into(),
                    },
                ],
                peers: vec![RemotePeer {
                    network_id: "net-front".into(),
                    address: ip("10.0.1.6"),
                    mac: Mac::for_ipv4(ip("10.0.1.6")),
                    vtep: ip("192.0.2.2"),
                }],
                host_legs: Vec::new(),
            }
        );
        assert_eq!(
            plan.gossip_networks,
            BTreeSet::from(["net-back".to_owned(), "net-front".to_owned()])
        );
        // The plan is a valid input of the data plane's own plan.
        overlay_net::plan(&plan.desired).unwrap();
    }

    fn task_record(name: &str, address: &str, running: bool) -> TaskRecord {
        TaskRecord {
            container_name: name.to_owned(),
            address: IpAddr::V4(ip(address)),
            running,
            health: TaskHealth::NoHealthcheck,
        }
    }

    #[test]
    fn dns_holds_local_and_remote_tasks_with_vips_aliases_and_dnsrr() {
        let (tasks, table) = scene();
        let plan = plan_node(&config(), "n1", &tasks, None, &table);
        assert_eq!(
            plan.dns,
            vec![
                NetworkRecords {
                    id: "net-back".into(),
                    name: "back".into(),
                    ingress: false,
                    internal: true,
                    services: vec![
                        ServiceRecords {
                            name: "db".into(),
                            aliases: Vec::new(),
                            endpoint: ServiceEndpoint::DnsRoundRobin,
                            tasks: vec![task_record("db.1.b", "10.0.2.7", false)],
                        },
                        ServiceRecords {
                            name: "web".into(),
                            aliases: Vec::new(),
                            endpoint: ServiceEndpoint::VirtualIp(IpAddr::V4(ip("10.0.2.2"))),
                            tasks: vec![task_record("web.1.a", "10.0.2.5", true)],
                        },
                    ],
                },
                NetworkRecords {
                    id: "net-front".into(),
                    name: "front".into(),
                    ingress: false,
                    internal: false,
                    services: vec![ServiceRecords {
                        name: "web".into(),
                        aliases: vec!["www".into()],
                        endpoint: ServiceEndpoint::VirtualIp(IpAddr::V4(ip("10.0.1.2"))),
                        tasks: vec![
                            task_record("web.1.a", "10.0.1.5", true),
                            task_record("web.2.c", "10.0.1.6", true),
                        ],
                    }],
                },
            ]
        );
    }

    #[test]
    fn each_task_balances_the_vips_on_its_networks_to_serving_backends() {
        let (mut tasks, mut table) = scene();
        // The remote web task stops serving: only the local one is a backend on front.
        table.insert(
            remote("n2", "front", "c", "10.0.1.6/24", false).0,
            remote("n2", "front", "c", "10.0.1.6/24", false).1,
        );
        let plan = plan_node(&config(), "n1", &tasks, None, &table);
        let vip = |vip: &str, backends: &[&str]| VipService {
            vip: ip(vip),
            ports: VipPorts::All,
            backends: backends.iter().map(|b| ip(b)).collect(),
        };
        assert_eq!(
            plan.vips,
            BTreeMap::from([
                (
                    "a".to_owned(),
                    vec![
                        vip("10.0.1.2", &["10.0.1.5"]),
                        vip("10.0.2.2", &["10.0.2.5"])
                    ]
                ),
                ("b".to_owned(), vec![vip("10.0.2.2", &["10.0.2.5"])]),
            ])
        );
        // No serving task: the VIP stays, with no backend, so it is refused at once.
        tasks.get_mut("a").unwrap().serving = false;
        let plan = plan_node(&config(), "n1", &tasks, None, &table);
        assert_eq!(plan.vips["b"], vec![vip("10.0.2.2", &[])]);
    }

    #[test]
    fn publications_are_this_node_s_endpoints_with_serving_as_healthy() {
        let (tasks, table) = scene();
        let plan = plan_node(&config(), "n1", &tasks, None, &table);
        let key = |network: &str, endpoint: &str| EndpointKey {
            network: network.to_owned(),
            endpoint: endpoint.to_owned(),
        };
        assert_eq!(
            plan.publications.keys().cloned().collect::<Vec<_>>(),
            vec![
                key("net-back", "a"),
                key("net-back", "b"),
                key("net-front", "a")
            ]
        );
        assert_eq!(
            plan.publications[&key("net-front", "a")],
            EndpointRecord {
                task_name: "web.1.a".into(),
                address: "10.0.1.5/24".into(),
                mac: "02:42:0a:00:01:05".into(),
                tunnel_endpoint: IpAddr::V4(ip("192.0.2.1")),
                service_id: "svc-web".into(),
                service_name: "web".into(),
                virtual_ip: Some("10.0.1.2/24".into()),
                aliases: vec!["www".into()],
                healthy: true,
                ingress_ports: Vec::new(),
            }
        );
        let db = &plan.publications[&key("net-back", "b")];
        assert_eq!((db.virtual_ip.clone(), db.healthy), (None, false));
    }

    #[test]
    fn a_remote_copy_of_a_local_address_and_bad_records_are_left_out() {
        let (tasks, mut table) = scene();
        table.insert(
            remote("n3", "front", "old", "10.0.1.5/24", true).0,
            remote("n3", "front", "old", "10.0.1.5/24", true).1,
        );
        let (key, mut broken) = remote("n3", "front", "x", "10.0.1.9/24", true);
        broken.record.address = "not an address".into();
        table.insert(key, broken);
        let plan = plan_node(&config(), "n1", &tasks, None, &table);
        let peers: Vec<Ipv4Addr> = plan.desired.peers.iter().map(|peer| peer.address).collect();
        assert_eq!(peers, vec![ip("10.0.1.6")]);
    }

    #[test]
    fn gossip_changes_join_publish_withdraw_and_leave() {
        let (mut tasks, table) = scene();
        let before = plan_node(&config(), "n1", &tasks, None, &table);
        let first = gossip_changes(&BTreeSet::new(), &BTreeMap::new(), &before);
        assert_eq!(
            first.join,
            vec!["net-back".to_owned(), "net-front".to_owned()]
        );
        assert_eq!(first.publish.len(), 3);
        assert!(first.withdraw.is_empty() && first.leave.is_empty());
        assert!(gossip_changes(&before.gossip_networks, &before.publications, &before).is_empty());

        // a goes; b starts serving.
        tasks.remove("a");
        tasks.get_mut("b").unwrap().serving = true;
        let after = plan_node(&config(), "n1", &tasks, None, &table);
        let changes = gossip_changes(&before.gossip_networks, &before.publications, &after);
        assert!(changes.join.is_empty());
        assert_eq!(changes.publish.len(), 1);
        assert_eq!(changes.publish[0].0.endpoint, "b");
        assert!(changes.publish[0].1.healthy);
        let withdrawn: Vec<(&str, &str)> = changes
            .withdraw
            .iter()
            .map(|key| (key.network.as_str(), key.endpoint.as_str()))
            .collect();
        assert_eq!(withdrawn, vec![("net-back", "a"), ("net-front", "a")]);
        assert_eq!(changes.leave, vec!["net-front".to_owned()]);
        // Nothing of front is programmed once the node has no task on it.
        assert!(after.desired.peers.is_empty());
        assert_eq!(after.dns.len(), 1);
    }

    #[test]
    fn an_attachment_that_does_not_read_names_its_field_and_is_left_out() {
        let mut bad = attachment("front", 4097, "10.0.1.5", None);
        let error = parse_attachment(&bad).unwrap_err();
        assert!(
            error.contains("front") && error.contains("task address"),
            "{error}"
        );
        bad.address = "10.0.1.5/24".into();
        bad.virtual_ip = Some("10.0.1.2".into());
        assert!(parse_attachment(&bad).unwrap_err().contains("virtual IP"));
        let tasks = BTreeMap::from([("a".to_owned(), task("a", "web", vec![bad], true))]);
        let plan = plan_node(&config(), "n1", &tasks, None, &BTreeMap::new());
        assert!(plan.desired.tasks.is_empty() && plan.publications.is_empty());
    }

    #[test]
    fn hosts_have_localhost_the_task_s_own_line_and_its_extra_hosts() {
        let mut held = task(
            "a",
            "web",
            vec![attachment("front", 4097, "10.0.1.5/24", None)],
            true,
        );
        held.networks.hostname = "web-1".into();
        held.networks.hosts = vec!["192.0.2.9 db  db.local".into(), "lonely".into()];
        assert_eq!(
            hosts_file(&held.networks),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n10.0.1.5\tweb-1\n192.0.2.9\tdb db.local\n"
        );
    }

    fn key(subsystem: &str, lamport_time: u64, byte: u8, length: usize) -> EncryptionKey {
        EncryptionKey {
            subsystem: subsystem.to_owned(),
            algorithm: Algorithm::Aes256Gcm as i32,
            key: vec![byte; length],
            lamport_time,
        }
    }

    #[test]
    fn the_second_newest_gossip_key_seals_and_other_keys_are_ignored() {
        assert_eq!(gossip_keyring(&[]), None);
        let keys = [
            key(spec::network::KEY_SUBSYSTEM_GOSSIP, 3, 1, KEY_LEN),
            key(spec::network::KEY_SUBSYSTEM_GOSSIP, 9, 5, KEY_LEN),
            key(spec::network::KEY_SUBSYSTEM_GOSSIP, 7, 2, KEY_LEN),
            key("networking:ipsec", 10, 3, KEY_LEN),
            key(spec::network::KEY_SUBSYSTEM_GOSSIP, 8, 4, 16),
        ];
        let ring = gossip_keyring(&keys).unwrap();
        assert_eq!(ring.primary_id(), 7);
        assert_eq!(
            ring,
            Keyring::new(
                GossipKey::new(7, [2; KEY_LEN]),
                vec![
                    GossipKey::new(9, [5; KEY_LEN]),
                    GossipKey::new(3, [1; KEY_LEN])
                ]
            )
            .unwrap()
        );
        // A lone key seals too.
        let lone = gossip_keyring(&keys[..1]).unwrap();
        assert_eq!(lone.primary_id(), 3);
        let mut aes128 = key(spec::network::KEY_SUBSYSTEM_GOSSIP, 1, 1, KEY_LEN);
        aes128.algorithm = Algorithm::Aes128Gcm as i32;
        assert_eq!(gossip_keyring(&[aes128]), None);
    }

    #[test]
    fn network_inspect_lists_this_node_s_endpoints_and_the_nodes_on_the_network() {
        let (tasks, table) = scene();
        let (attachments, peers) =
            network_attachments("n1", ip("192.0.2.1"), "net-front", &tasks, &table);
        let listed: Vec<(&str, &str, &str)> = attachments
            .iter()
            .map(|a| (a.task_id.as_str(), a.mac.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(listed, vec![("a", "02:42:0a:00:01:05", "10.0.1.5/24")]);
        let nodes: Vec<&str> = peers.iter().map(|peer| peer.node.as_str()).collect();
        assert_eq!(nodes, vec!["n1", "n2"]);
        assert_eq!(peers[1].address, IpAddr::V4(ip("192.0.2.2")));
        // No task of this node on it: only the nodes the gossip shows there.
        let (none, others) =
            network_attachments("n9", ip("192.0.2.9"), "net-front", &BTreeMap::new(), &table);
        assert!(none.is_empty());
        let nodes: Vec<&str> = others.iter().map(|peer| peer.node.as_str()).collect();
        assert_eq!(nodes, vec!["n1", "n2"]);
    }

    #[test]
    fn ipsec_keys_come_from_their_subsystem_and_the_second_newest_sends() {
        assert_eq!(ipsec_keyring(&[]), None);
        let ring = ipsec_keyring(&[
            key(spec::network::KEY_SUBSYSTEM_IPSEC, 4, 1, KEY_LEN),
            key(spec::network::KEY_SUBSYSTEM_IPSEC, 6, 2, KEY_LEN),
            key(spec::network::KEY_SUBSYSTEM_GOSSIP, 9, 3, KEY_LEN),
        ])
        .unwrap();
        assert_eq!(ring.primary, 4);
        let tags: Vec<u32> = ring.keys.iter().map(|key| key.tag).collect();
        assert_eq!(tags, vec![6, 4]);
        assert_eq!((ring.keys[0].key, ring.keys[0].salt), ([2; 16], [2; 4]));
    }

    #[test]
    fn encryption_covers_the_peers_on_encrypted_networks_only() {
        let (mut tasks, table) = scene();
        for attachment in &mut tasks.get_mut("a").unwrap().networks.attachments {
            attachment.encrypted = attachment.network_id == "net-front";
        }
        let plan = plan_node(&config(), "n1", &tasks, None, &table);
        let (vteps, vnis) = encrypted_peers(&tasks, &plan.desired);
        assert_eq!(vteps, vec![ip("192.0.2.2")]);
        assert_eq!(vnis, BTreeSet::from([4097]));
        let (none, no_vnis) = encrypted_peers(&BTreeMap::new(), &plan.desired);
        assert!(none.is_empty() && no_vnis.is_empty());
    }

    #[test]
    fn the_gateway_bridge_takes_the_first_free_candidate() {
        assert_eq!(pick_gateway_bridge(&[]), cidr("172.18.0.0/16"));
        assert_eq!(
            pick_gateway_bridge(&[ip("172.18.0.1"), ip("172.19.3.4"), ip("10.0.0.1")]),
            cidr("172.20.0.0/16")
        );
    }

    fn ingress(address: &str) -> NetworkAttachment {
        NetworkAttachment {
            ingress: true,
            ..attachment("ingress", 4096, address, None)
        }
    }

    fn tcp_8080() -> IngressPort {
        IngressPort {
            protocol: port_config::Protocol::Tcp,
            published: 8080,
            target: 80,
            policy: port_config::TrafficPolicy::PreferLocal,
        }
    }

    /// The endpoint as `node` publishes it, from its tunnel endpoint 192.0.2.N for node nN.
    fn with_ports(
        (key, mut visible): (EndpointKey, VisibleEndpoint),
        node: &str,
        ports: Vec<IngressPortRecord>,
    ) -> (EndpointKey, VisibleEndpoint) {
        visible.node = node.to_owned();
        visible.record.ingress_ports = ports;
        visible.record.tunnel_endpoint = IpAddr::V4(ip(&format!("192.0.2.{}", &node[1..])));
        (key, visible)
    }

    fn port_record(protocol: &str, published: u16, target: u16, policy: &str) -> IngressPortRecord {
        IngressPortRecord {
            protocol: protocol.to_owned(),
            published,
            target,
            policy: policy.to_owned(),
        }
    }

    fn backends(addresses: &[&str]) -> BTreeSet<SocketAddrV4> {
        addresses.iter().map(|a| a.parse().unwrap()).collect()
    }

    /// Node n1 with its leg 10.0.0.10 on the ingress network; web's tasks w (serving) and x
    /// (not yet) here, its task on n2 (healthy) and on n3 (not); n2's leg; and dns's UDP port
    /// served by a task on n3 only. The cluster path hands a connection for another node's task
    /// to that node, unless the ingress network is encrypted.
    #[test]
    fn the_leg_joins_the_ingress_network_and_the_mesh_serves_every_ready_task() {
        let mut w = task("w", "web", vec![ingress("10.0.0.5/24")], true);
        w.networks.ingress_ports = vec![tcp_8080()];
        let mut x = task("x", "web", vec![ingress("10.0.0.9/24")], false);
        x.networks.ingress_ports = vec![tcp_8080()];
        let tasks = BTreeMap::from([("w".to_owned(), w), ("x".to_owned(), x)]);
        let web_port = || vec![port_record("tcp", 8080, 80, "prefer-local")];
        let mut n2_leg = remote("n2", "ingress", &leg_endpoint("n2"), "10.0.0.11/24", true);
        n2_leg.1.record.service_id = String::new();
        n2_leg.1.record.service_name = String::new();
        n2_leg.1.record.virtual_ip = None;
        let table = BTreeMap::from([
            with_ports(
                remote("n2", "ingress", "r", "10.0.0.6/24", true),
                "n2",
                web_port(),
            ),
            with_ports(
                remote("n3", "ingress", "s", "10.0.0.7/24", false),
                "n3",
                web_port(),
            ),
            with_ports(
                remote("n3", "ingress", "d", "10.0.0.8/24", true),
                "n3",
                vec![port_record("udp", 5353, 53, "cluster")],
            ),
            n2_leg,
        ]);
        let leg = ingress("10.0.0.10/24");
        let plan = plan_node(&config(), "n1", &tasks, Some(&leg), &table);
        let key = |network: &str, endpoint: &str| EndpointKey {
            network: network.to_owned(),
            endpoint: endpoint.to_owned(),
        };

        assert_eq!(
            plan.desired.host_legs,
            vec![HostLeg {
                network_id: "net-ingress".into(),
                address: cidr("10.0.0.10/24"),
            }]
        );
        assert!(plan.gossip_networks.contains("net-ingress"));
        // The other node's leg is a peer, as its tasks are.
        assert!(plan.desired.peers.iter().any(|peer| {
            peer.address == ip("10.0.0.11") && peer.mac == Mac::for_ipv4(ip("10.0.0.11"))
        }));
        // This node's leg is published, as a node's (no service), and the task with its ports.
        let own_leg = &plan.publications[&key("net-ingress", &leg_endpoint("n1"))];
        assert_eq!(
            (own_leg.address.as_str(), own_leg.service_id.as_str()),
            ("10.0.0.10/24", "")
        );
        assert_eq!(
            plan.publications[&key("net-ingress", "w")].ingress_ports,
            web_port()
        );
        // A leg has no name.
        let ingress_names = plan.dns.iter().find(|n| n.id == "net-ingress").unwrap();
        assert!(ingress_names.services.iter().all(|s| !s.name.is_empty()));

        // The local task is reached on the gateway bridge, where its replies leave.
        let web = PublishedPort {
            protocol: Protocol::Tcp,
            port: 8080,
            policy: TrafficPolicy::PreferLocal,
            local: backends(&["172.18.0.2:80"]),
            cluster: backends(&["10.0.0.5:80", "10.0.0.6:80"]),
            crossing: Crossing::NodePorts(BTreeMap::from([(ip("192.0.2.2"), 1)])),
        };
        let dns = PublishedPort {
            protocol: Protocol::Udp,
            port: 5353,
            policy: TrafficPolicy::Cluster,
            local: BTreeSet::new(),
            cluster: backends(&["10.0.0.8:53"]),
            crossing: Crossing::NodePorts(BTreeMap::from([(ip("192.0.2.3"), 1)])),
        };
        assert_eq!(
            plan.mesh,
            Some(Mesh {
                address: ip("192.0.2.1"),
                peers: BTreeSet::from([ip("192.0.2.2"), ip("192.0.2.3")]),
                ports: vec![web.clone(), dns.clone()],
            })
        );

        let mut encrypted = leg.clone();
        encrypted.encrypted = true;
        let plan = plan_node(&config(), "n1", &tasks, Some(&encrypted), &table);
        let across = |port: PublishedPort| PublishedPort {
            crossing: Crossing::Overlay,
            ..port
        };
        assert_eq!(
            plan.mesh.map(|mesh| mesh.ports),
            Some(vec![across(web), across(dns)])
        );
    }

    #[test]
    fn without_a_leg_there_is_no_mesh_and_a_port_with_no_ready_task_stays_to_be_refused() {
        let mut w = task("w", "web", vec![ingress("10.0.0.5/24")], false);
        w.networks.ingress_ports = vec![tcp_8080()];
        let tasks = BTreeMap::from([("w".to_owned(), w)]);
        let plan = plan_node(&config(), "n1", &tasks, None, &BTreeMap::new());
        assert_eq!(plan.mesh, None);
        assert!(plan.desired.host_legs.is_empty());

        let leg = ingress("10.0.0.10/24");
        let plan = plan_node(&config(), "n1", &tasks, Some(&leg), &BTreeMap::new());
        assert_eq!(
            plan.mesh.map(|mesh| mesh.ports),
            Some(vec![PublishedPort {
                protocol: Protocol::Tcp,
                port: 8080,
                policy: TrafficPolicy::PreferLocal,
                local: BTreeSet::new(),
                cluster: BTreeSet::new(),
                crossing: Crossing::NodePorts(BTreeMap::new()),
            }])
        );
        // With no port to serve, the node only listens to the ingress network's gossip: no
        // leg, no network, no table.
        let plan = plan_node(
            &config(),
            "n1",
            &BTreeMap::new(),
            Some(&leg),
            &BTreeMap::new(),
        );
        assert!(plan.desired.networks.is_empty() && plan.desired.host_legs.is_empty());
        assert_eq!(plan.mesh, None);
        assert_eq!(
            plan.gossip_networks,
            BTreeSet::from(["net-ingress".to_owned()])
        );
        // A port published on another node brings the network, with no task of this node's on
        // it.
        let table = BTreeMap::from([with_ports(
            remote("n2", "ingress", "r", "10.0.0.6/24", true),
            "n2",
            vec![port_record("tcp", 8080, 80, "cluster")],
        )]);
        let plan = plan_node(&config(), "n1", &BTreeMap::new(), Some(&leg), &table);
        assert_eq!(plan.desired.networks.len(), 1);
        assert_eq!(plan.desired.host_legs.len(), 1);
        assert_eq!(plan.mesh.map(|mesh| mesh.ports.len()), Some(1));
    }

    #[test]
    fn a_host_port_goes_to_its_task_on_the_gateway_bridge_only_while_it_serves() {
        let mut h = task("h", "web", Vec::new(), true);
        h.egress = Some(ip("172.18.0.5"));
        h.networks.host_ports = vec![HostPort {
            protocol: port_config::Protocol::Tcp,
            published: 8090,
            target: 80,
        }];
        assert!(needs_egress(&h.networks));
        let mut tasks = BTreeMap::from([("h".to_owned(), h)]);
        let plan = plan_node(&config(), "n1", &tasks, None, &BTreeMap::new());
        // The task has its way out and no overlay; the node no leg.
        assert_eq!(plan.desired.tasks.len(), 1);
        assert!(plan.desired.networks.is_empty() && plan.desired.host_legs.is_empty());
        let local_port = |local: &[&str]| PublishedPort {
            protocol: Protocol::Tcp,
            port: 8090,
            policy: TrafficPolicy::Local,
            local: backends(local),
            cluster: BTreeSet::new(),
            crossing: Crossing::NodePorts(BTreeMap::new()),
        };
        let ports = |plan: NodePlan| plan.mesh.map(|mesh| mesh.ports);
        assert_eq!(ports(plan), Some(vec![local_port(&["172.18.0.5:80"])]));
        tasks.get_mut("h").unwrap().serving = false;
        let plan = plan_node(&config(), "n1", &tasks, None, &BTreeMap::new());
        assert_eq!(ports(plan), Some(vec![local_port(&[])]));
    }
}
