//! The pure plan: the namespaces, links, addresses, routes, FDB and neighbour entries a node's
//! desired state asks for, in the same shape `apply` observes, so the two compare directly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::Error;
use crate::desired::{Desired, Ipv4Cidr, MAX_PREFIX_LEN, Mac, NodeConfig};

/// Name of every network namespace's bridge; each network has a namespace of its own, so the
/// name need not be unique on the host.
pub const OVERLAY_BRIDGE: &str = "br0";

/// A network namespace the data plane works in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Netns {
    /// The underlay's namespace ([`NodeConfig::underlay_netns`]): the gateway bridge, its legs
    /// and the VXLAN sockets.
    Underlay,
    /// One of this instance's namespaces, /run/netns/NAME: one per network.
    Named(String),
    /// A task's namespace, which the engine owns.
    Task(PathBuf),
}

/// A link by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkKey {
    pub ns: Netns,
    pub name: String,
}

impl LinkKey {
    fn new(ns: &Netns, name: impl Into<String>) -> LinkKey {
        LinkKey {
            ns: ns.clone(),
            name: name.into(),
        }
    }
}

/// The VXLAN settings that make a device fit for an overlay network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vxlan {
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    /// Always false: peers are programmed, never learned from traffic.
    pub learning: bool,
    /// Always true: the device answers ARP from its neighbour entries, so ARP never floods.
    pub proxy: bool,
}

/// What a link is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkKind {
    Bridge,
    Vxlan(Vxlan),
    Veth,
    /// Any other kind found on observation (the kernel's name for it); never planned.
    Other(String),
}

/// A link and the attributes the plan holds it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub kind: LinkKind,
    pub mtu: u32,
    /// Planned only where the address matters (task interfaces); observation always fills it.
    pub mac: Option<Mac>,
    /// The bridge (same namespace) the link is a port of.
    pub master: Option<String>,
    pub up: bool,
}

/// The far end of a planned veth pair and the name it has between its creation beside the near
/// end and its move into its own namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPeer {
    pub key: LinkKey,
    pub temp_name: String,
}

/// The gateway bridge's source NAT: traffic from `source` leaving by any other interface than
/// `bridge` is masqueraded, in the nftables table `table` of the underlay namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub table: String,
    pub source: Ipv4Cidr,
    pub bridge: String,
}

/// A node's data plane: what the plan asks for, or what observation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// This instance's named namespaces.
    pub namespaces: BTreeSet<String>,
    pub links: BTreeMap<LinkKey, Link>,
    /// Planned veth pairs by their near end; observation leaves this empty and `diff` takes a
    /// pair as whole when both ends are there.
    pub veths: BTreeMap<LinkKey, VethPeer>,
    pub addresses: BTreeSet<(LinkKey, Ipv4Cidr)>,
    /// Default routes by namespace: the device and the gateway.
    pub default_routes: BTreeMap<Netns, (String, Ipv4Addr)>,
    /// Permanent FDB entries on VXLAN devices: MAC → remote VTEP.
    pub fdb: BTreeMap<(LinkKey, Mac), Ipv4Addr>,
    /// Permanent neighbour entries on VXLAN devices: IP → MAC.
    pub neigh: BTreeMap<(LinkKey, Ipv4Addr), Mac>,
    pub masquerade: Option<Masquerade>,
    /// IPv4 forwarding in the underlay namespace (needed for the gateway bridge's egress and for
    /// connections the routing mesh forwards into a network through a host leg).
    pub forwarding: bool,
    /// Underlay links whose reverse-path filter must be loose (`rp_filter` 2): the gateway
    /// bridge while a host leg exists, since a task's replies to a client the routing mesh sent
    /// without SNAT come in on the bridge from an address routed through the leg. Like
    /// `forwarding`, only ever loosened: a link not listed may be anything (the distribution's
    /// default may itself be loose), so nothing makes it strict again.
    pub loose_rp_filter: BTreeSet<String>,
    /// Network namespaces whose bridge hands frames on without netfilter seeing them
    /// (`net.bridge.bridge-nf-call-{iptables,ip6tables,arptables}` 0 there). Nothing of ours
    /// filters inside a network's namespace, but where `br_netfilter` is loaded (built into
    /// many kernels, on by default in every namespace) each frame crossing the bridge went
    /// through the IPv4 hooks: 11 to 15 % more CPU per GiB task to task (BENCHMARKS.md).
    pub unfiltered_bridges: BTreeSet<String>,
    /// Links whose received packets the kernel spreads over the node's CPUs (receive packet
    /// steering, `queues/rx-0/rps_cpus`): each network's VXLAN device, and the gateway-bridge
    /// end of each task's leg, which receives what the task sends out of the node and through
    /// published ports. Each has one receive queue, so without steering the CPU that took a
    /// packet in carried it the whole rest of the way (from the tunnel: decapsulation, bridge,
    /// the task's TCP; from the task: bridge, routing, NAT, the way out); with it the packet goes
    /// on on a CPU its flow hash picks, beside the sender or the reader instead of in turn with
    /// it. Measured (BENCHMARKS.md): task to task over the overlay, and transfers through the
    /// routing mesh. Not the tasks' overlay legs: steering what a task sends into the overlay
    /// cost throughput there. Like `loose_rp_filter`, only ever set.
    pub steered_links: BTreeSet<LinkKey>,
}

/// The names this instance gives what it creates, all from its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    prefix: String,
}

impl Naming {
    /// Checks the prefix: 1 to [`MAX_PREFIX_LEN`] lowercase letters and digits, a letter first,
    /// so names stay within Linux's 15 bytes and nftables takes the table name unquoted.
    pub fn new(prefix: &str) -> Result<Naming, Error> {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            return Err(Error::InvalidPrefix(prefix.to_string()));
        }
        Ok(Naming {
            prefix: prefix.to_string(),
        })
    }

    /// What every underlay link of this instance starts with (the dash keeps prefix "ab" from
    /// claiming prefix "abc"'s links).
    pub fn link_prefix(&self) -> String {
        format!("{}-", self.prefix)
    }

    /// What every namespace name of this instance starts with.
    pub fn netns_prefix(&self) -> String {
        format!("{}-", self.prefix)
    }

    /// The namespace of a network.
    pub fn network_netns(&self, network_id: &str) -> String {
        format!("{}-{network_id}", self.prefix)
    }

    /// The VXLAN device of a network, named in the underlay where it is created and kept on its
    /// move into the network's namespace.
    pub fn vxlan(&self, vni: u32) -> String {
        format!("{}-x{:06x}", self.prefix, vni & 0x00ff_ffff)
    }

    /// The gateway bridge in the underlay.
    pub fn gwbridge(&self) -> String {
        format!("{}-gw", self.prefix)
    }

    /// A task's leg on the gateway bridge, in the underlay.
    pub fn gw_leg(&self, task_id: &str) -> String {
        format!("{}-g{}", self.prefix, short(task_id, 7))
    }

    /// The task end of that leg until it moves into the task.
    pub fn gw_leg_temp(&self, task_id: &str) -> String {
        format!("{}-h{}", self.prefix, short(task_id, 7))
    }

    /// A task's port on a network's bridge, in the network's namespace.
    pub fn endpoint(&self, task_id: &str) -> String {
        format!("ve{}", short(task_id, 13))
    }

    /// The task end of that port until it moves into the task.
    pub fn endpoint_temp(&self, task_id: &str) -> String {
        format!("vt{}", short(task_id, 13))
    }

    /// This node's host leg on a network, in the underlay: the end the node's own routing
    /// uses, named with the prefix so observation finds it.
    pub fn host_leg(&self, vni: u32) -> String {
        format!("{}-i{:06x}", self.prefix, vni & 0x00ff_ffff)
    }

    /// The host leg's port on the network's bridge, in the network's namespace: the same name
    /// in every network, since each has a namespace of its own and at most one leg.
    pub fn host_leg_port(&self) -> String {
        "hostleg".to_string()
    }

    /// The underlay end of the host leg until it moves out of the network's namespace.
    pub fn host_leg_temp(&self) -> String {
        "hostlegtmp".to_string()
    }

    /// The masquerade's nftables table (in the `ip` family).
    pub fn nft_table(&self) -> String {
        format!("{}_nat", self.prefix)
    }
}

/// The prefix a daemon names its things with: 's' and five hex digits of a stable hash of its
/// data root, so daemons with different data roots on one host never share a name, and a
/// restarted daemon finds its own.
pub fn prefix_for_data_root(data_root: &std::path::Path) -> String {
    // FNV-1a: the same value in every build and run, which std's hasher does not promise.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in data_root.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("s{:05x}", hash & 0xf_ffff)
}

fn short(id: &str, n: usize) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(n)
        .collect()
}

/// A veth pair whose near end is a port of a bridge and whose far end, in another namespace,
/// carries an address: a task's interface on a network, its egress leg, a node's host leg.
struct PortVeth {
    near: LinkKey,
    bridge: String,
    far: LinkKey,
    /// Made beside the near end under this name, then moved into the far end's namespace.
    temp_name: String,
    mac: Mac,
    address: Ipv4Cidr,
    mtu: u32,
}

impl State {
    fn add_port_veth(&mut self, veth: PortVeth) {
        self.links.insert(
            veth.near.clone(),
            Link {
                kind: LinkKind::Veth,
                mtu: veth.mtu,
                mac: None,
                master: Some(veth.bridge),
                up: true,
            },
        );
        self.links.insert(
            veth.far.clone(),
            Link {
                kind: LinkKind::Veth,
                mtu: veth.mtu,
                mac: Some(veth.mac),
                master: None,
                up: true,
            },
        );
        self.addresses.insert((veth.far.clone(), veth.address));
        self.veths.insert(
            veth.near,
            VethPeer {
                key: veth.far,
                temp_name: veth.temp_name,
            },
        );
    }
}

/// The state `desired` asks for on this node.
pub fn plan(desired: &Desired) -> Result<State, Error> {
    let config: &NodeConfig = &desired.config;
    let naming = Naming::new(&config.prefix)?;
    let overlay_mtu = config.overlay_mtu();
    let mut state = State::default();

    let mut networks = BTreeMap::new();
    let mut vnis = BTreeMap::new();
    for network in &desired.networks {
        if networks.insert(network.id.as_str(), network).is_some() {
            return Err(Error::DuplicateNetwork(network.id.clone()));
        }
        if network.vni >= 1 << 24 {
            return Err(Error::InvalidVni {
                network: network.id.clone(),
                vni: network.vni,
            });
        }
        if let Some(first) = vnis.insert(network.vni, network.id.as_str()) {
            return Err(Error::DuplicateVni {
                vni: network.vni,
                first: first.to_string(),
                second: network.id.clone(),
            });
        }
        let ns_name = naming.network_netns(&network.id);
        state.namespaces.insert(ns_name.clone());
        state.unfiltered_bridges.insert(ns_name.clone());
        let ns = Netns::Named(ns_name);
        let bridge = LinkKey::new(&ns, OVERLAY_BRIDGE);
        state.links.insert(
            bridge.clone(),
            Link {
                kind: LinkKind::Bridge,
                mtu: overlay_mtu,
                mac: None,
                master: None,
                up: true,
            },
        );
        state.addresses.insert((bridge, network.gateway));
        let tunnel = LinkKey::new(&ns, naming.vxlan(network.vni));
        state.steered_links.insert(tunnel.clone());
        state.links.insert(
            tunnel,
            Link {
                kind: LinkKind::Vxlan(Vxlan {
                    vni: network.vni,
                    port: config.vxlan_port,
                    local: config.vtep,
                    learning: false,
                    proxy: true,
                }),
                mtu: overlay_mtu,
                mac: None,
                master: Some(OVERLAY_BRIDGE.to_string()),
                up: true,
            },
        );
    }

    let mut tasks = BTreeMap::new();
    for task in &desired.tasks {
        if tasks.insert(task.id.as_str(), task).is_some() {
            return Err(Error::DuplicateTask(task.id.clone()));
        }
    }

    // Endpoints by task, to know which tasks need a way out and which interface names they use.
    // A task given an egress address has a way out whatever its networks (one on none, whose
    // host-mode ports are reached through it).
    let mut needs_egress: BTreeSet<&str> = desired
        .tasks
        .iter()
        .filter(|task| task.egress.is_some())
        .map(|task| task.id.as_str())
        .collect();
    let mut interfaces: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for ep in &desired.endpoints {
        let network =
            networks
                .get(ep.network_id.as_str())
                .ok_or_else(|| Error::UnknownNetwork {
                    task: ep.task_id.clone(),
                    network: ep.network_id.clone(),
                })?;
        let task = tasks
            .get(ep.task_id.as_str())
            .ok_or_else(|| Error::UnknownTask(ep.task_id.clone()))?;
        if !interfaces
            .entry(ep.task_id.as_str())
            .or_default()
            .insert(ep.interface.as_str())
        {
            return Err(Error::DuplicateInterface {
                task: ep.task_id.clone(),
                interface: ep.interface.clone(),
            });
        }
        if !network.internal {
            needs_egress.insert(ep.task_id.as_str());
        }
        state.add_port_veth(PortVeth {
            near: LinkKey::new(
                &Netns::Named(naming.network_netns(&network.id)),
                naming.endpoint(&task.id),
            ),
            bridge: OVERLAY_BRIDGE.to_string(),
            far: LinkKey::new(&Netns::Task(task.netns.clone()), ep.interface.clone()),
            temp_name: naming.endpoint_temp(&task.id),
            mac: ep.mac,
            address: ep.address,
            mtu: overlay_mtu,
        });
    }

    let mut legged = BTreeSet::new();
    for leg in &desired.host_legs {
        let network = networks
            .get(leg.network_id.as_str())
            .ok_or_else(|| Error::HostLegUnknownNetwork(leg.network_id.clone()))?;
        if !legged.insert(network.id.as_str()) {
            return Err(Error::DuplicateHostLeg(network.id.clone()));
        }
        let gateway = network.gateway;
        if leg.address.prefix != gateway.prefix
            || !gateway.is_host(leg.address.addr)
            || leg.address.addr == gateway.addr
        {
            return Err(Error::HostLegOutsideNetwork {
                network: network.id.clone(),
                addr: leg.address.to_string(),
                subnet: format!("{}/{}", gateway.network(), gateway.prefix),
            });
        }
        // Made from the network's side like a task's port, its far end moved out into the
        // underlay, where its address gives the node a connected route into the network.
        state.add_port_veth(PortVeth {
            near: LinkKey::new(
                &Netns::Named(naming.network_netns(&network.id)),
                naming.host_leg_port(),
            ),
            bridge: OVERLAY_BRIDGE.to_string(),
            far: LinkKey::new(&Netns::Underlay, naming.host_leg(network.vni)),
            temp_name: naming.host_leg_temp(),
            mac: Mac::for_ipv4(leg.address.addr),
            address: leg.address,
            mtu: overlay_mtu,
        });
        // The routing mesh forwards connections from the underlay's interfaces into the leg.
        state.forwarding = true;
    }

    if !needs_egress.is_empty() {
        let gw = LinkKey::new(&Netns::Underlay, naming.gwbridge());
        let gateway = config.gwbridge_gateway();
        state.links.insert(
            gw.clone(),
            Link {
                kind: LinkKind::Bridge,
                mtu: config.gwbridge_mtu(),
                // Fixed, as the tasks' default gateway: a bridge left to itself takes its
                // lowest port's MAC, so a task's leg joining or leaving would change it under
                // the other tasks' ARP caches (their replies then vanish until those expire).
                mac: Some(Mac::for_ipv4(gateway)),
                master: None,
                up: true,
            },
        );
        state.addresses.insert((
            gw,
            Ipv4Cidr {
                addr: gateway,
                prefix: config.gwbridge.prefix,
            },
        ));
        state.masquerade = Some(Masquerade {
            table: naming.nft_table(),
            source: Ipv4Cidr {
                addr: config.gwbridge.network(),
                prefix: config.gwbridge.prefix,
            },
            bridge: naming.gwbridge(),
        });
        state.forwarding = true;
        if !desired.host_legs.is_empty() {
            state.loose_rp_filter.insert(naming.gwbridge());
        }
        for task_id in &needs_egress {
            let task = tasks[task_id];
            let egress = task
                .egress
                .ok_or_else(|| Error::MissingEgress(task.id.clone()))?;
            if !config.gwbridge.is_host(egress) || egress == gateway {
                return Err(Error::EgressOutsideBridge {
                    task: task.id.clone(),
                    addr: egress,
                    subnet: config.gwbridge.to_string(),
                });
            }
            // The egress leg comes after the task's overlay interfaces, as docker_gwbridge's does.
            let used = interfaces.get(task_id).map_or(0, BTreeSet::len);
            let name = format!("eth{used}");
            let task_ns = Netns::Task(task.netns.clone());
            let leg = LinkKey::new(&Netns::Underlay, naming.gw_leg(&task.id));
            state.steered_links.insert(leg.clone());
            state.add_port_veth(PortVeth {
                near: leg,
                bridge: naming.gwbridge(),
                far: LinkKey::new(&task_ns, name.clone()),
                temp_name: naming.gw_leg_temp(&task.id),
                mac: Mac::for_ipv4(egress),
                address: Ipv4Cidr {
                    addr: egress,
                    prefix: config.gwbridge.prefix,
                },
                mtu: config.gwbridge_mtu(),
            });
            state.default_routes.insert(task_ns, (name, gateway));
        }
    }

    for peer in &desired.peers {
        // Peers on networks this node has no task on are not its business, and a "peer" behind
        // this node's own VTEP is a local task, which the bridge already reaches.
        let Some(network) = networks.get(peer.network_id.as_str()) else {
            continue;
        };
        if peer.vtep == config.vtep {
            continue;
        }
        let vxlan = LinkKey::new(
            &Netns::Named(naming.network_netns(&network.id)),
            naming.vxlan(network.vni),
        );
        state.fdb.insert((vxlan.clone(), peer.mac), peer.vtep);
        state.neigh.insert((vxlan, peer.address), peer.mac);
    }

    Ok(state)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::desired::{
        DEFAULT_VXLAN_PORT, HostLeg, LocalEndpoint, LocalTask, Network, RemotePeer,
    };

    pub(crate) fn cidr(s: &str) -> Ipv4Cidr {
        let (a, p) = s.split_once('/').unwrap();
        Ipv4Cidr::new(a.parse().unwrap(), p.parse().unwrap()).unwrap()
    }

    pub(crate) fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// The names of the links `state` steers, in order.
    pub(crate) fn steered_names(state: &State) -> Vec<&str> {
        state
            .steered_links
            .iter()
            .map(|key| key.name.as_str())
            .collect()
    }

    /// One non-internal network with one local task and one peer on another node.
    pub(crate) fn desired() -> Desired {
        Desired {
            config: NodeConfig {
                prefix: "t1".into(),
                underlay_netns: None,
                vtep: ip("192.0.2.1"),
                underlay_mtu: 1500,
                vxlan_port: DEFAULT_VXLAN_PORT,
                gwbridge: cidr("172.18.0.0/16"),
            },
            networks: vec![Network {
                id: "net1".into(),
                vni: 4097,
                gateway: cidr("10.0.1.1/24"),
                internal: false,
                encrypted: false,
            }],
            tasks: vec![LocalTask {
                id: "taskaaaaaaaaaaaaaaaaaaaaa".into(),
                netns: "/proc/100/ns/net".into(),
                egress: Some(ip("172.18.0.2")),
            }],
            endpoints: vec![LocalEndpoint {
                task_id: "taskaaaaaaaaaaaaaaaaaaaaa".into(),
                network_id: "net1".into(),
                address: cidr("10.0.1.5/24"),
                mac: Mac::for_ipv4(ip("10.0.1.5")),
                interface: "eth0".into(),
            }],
            peers: vec![RemotePeer {
                network_id: "net1".into(),
                address: ip("10.0.1.6"),
                mac: Mac::for_ipv4(ip("10.0.1.6")),
                vtep: ip("192.0.2.2"),
            }],
            host_legs: Vec::new(),
        }
    }

    fn key(ns: Netns, name: &str) -> LinkKey {
        LinkKey::new(&ns, name)
    }

    /// `desired()` with the node's host leg on net1 at 10.0.1.2.
    pub(crate) fn with_host_leg() -> Desired {
        let mut d = desired();
        d.host_legs.push(HostLeg {
            network_id: "net1".into(),
            address: cidr("10.0.1.2/24"),
        });
        d
    }

    #[test]
    fn a_task_on_no_network_with_an_egress_address_gets_its_way_out_as_eth0() {
        let mut d = desired();
        d.endpoints.clear();
        d.networks.clear();
        d.peers.clear();
        let state = plan(&d).unwrap();
        let task = Netns::Task("/proc/100/ns/net".into());
        assert!(state.links.contains_key(&key(task.clone(), "eth0")));
        assert_eq!(
            state.default_routes.get(&task),
            Some(&("eth0".to_owned(), ip("172.18.0.1")))
        );
        assert!(state.masquerade.is_some() && state.namespaces.is_empty());
        // Without one, it gets nothing.
        d.tasks[0].egress = None;
        assert_eq!(plan(&d).unwrap().links.len(), 0);
    }

    #[test]
    fn plan_of_one_network_one_task_one_peer() {
        let state = plan(&desired()).unwrap();
        let net = Netns::Named("t1-net1".into());
        let task = Netns::Task("/proc/100/ns/net".into());
        let vx = key(net.clone(), "t1-x001001");

        assert_eq!(state.namespaces, BTreeSet::from(["t1-net1".to_string()]));
        let links: Vec<(LinkKey, Link)> = state.links.clone().into_iter().collect();
        let link = |kind, mtu, mac, master: Option<&str>| Link {
            kind,
            mtu,
            mac,
            master: master.map(str::to_string),
            up: true,
        };
        assert_eq!(
            links,
            vec![
                (
                    key(Netns::Underlay, "t1-gtaskaaa"),
                    link(LinkKind::Veth, 1500, None, Some("t1-gw"))
                ),
                (
                    key(Netns::Underlay, "t1-gw"),
                    link(
                        LinkKind::Bridge,
                        1500,
                        Some(Mac::for_ipv4(ip("172.18.0.1"))),
                        None
                    )
                ),
                (
                    key(net.clone(), "br0"),
                    link(LinkKind::Bridge, 1450, None, None)
                ),
                (
                    vx.clone(),
                    link(
                        LinkKind::Vxlan(Vxlan {
                            vni: 4097,
                            port: 4789,
                            local: ip("192.0.2.1"),
                            learning: false,
                            proxy: true,
                        }),
                        1450,
                        None,
                        Some("br0")
                    )
                ),
                (
                    key(net.clone(), "vetaskaaaaaaaaa"),
                    link(LinkKind::Veth, 1450, None, Some("br0"))
                ),
                (
                    key(task.clone(), "eth0"),
                    link(
                        LinkKind::Veth,
                        1450,
                        Some(Mac::for_ipv4(ip("10.0.1.5"))),
                        None
                    )
                ),
                (
                    key(task.clone(), "eth1"),
                    link(
                        LinkKind::Veth,
                        1500,
                        Some(Mac::for_ipv4(ip("172.18.0.2"))),
                        None
                    )
                ),
            ]
        );
        assert_eq!(
            state.veths,
            BTreeMap::from([
                (
                    key(Netns::Underlay, "t1-gtaskaaa"),
                    VethPeer {
                        key: key(task.clone(), "eth1"),
                        temp_name: "t1-htaskaaa".into()
                    }
                ),
                (
                    key(net.clone(), "vetaskaaaaaaaaa"),
                    VethPeer {
                        key: key(task.clone(), "eth0"),
                        temp_name: "vttaskaaaaaaaaa".into()
                    }
                ),
            ])
        );
        assert_eq!(
            state.addresses,
            BTreeSet::from([
                (key(Netns::Underlay, "t1-gw"), cidr("172.18.0.1/16")),
                (key(net.clone(), "br0"), cidr("10.0.1.1/24")),
                (key(task.clone(), "eth0"), cidr("10.0.1.5/24")),
                (key(task.clone(), "eth1"), cidr("172.18.0.2/16")),
            ])
        );
        assert_eq!(
            state.default_routes,
            BTreeMap::from([(task, ("eth1".to_string(), ip("172.18.0.1")))])
        );
        assert_eq!(
            state.fdb,
            BTreeMap::from([((vx.clone(), Mac::for_ipv4(ip("10.0.1.6"))), ip("192.0.2.2"))])
        );
        assert_eq!(
            state.neigh,
            BTreeMap::from([((vx, ip("10.0.1.6")), Mac::for_ipv4(ip("10.0.1.6")))])
        );
        assert_eq!(
            state.masquerade,
            Some(Masquerade {
                table: "t1_nat".into(),
                source: cidr("172.18.0.0/16"),
                bridge: "t1-gw".into(),
            })
        );
        assert!(state.forwarding);
    }

    #[test]
    fn internal_network_has_no_way_out() {
        let mut d = desired();
        d.networks[0].internal = true;
        d.tasks[0].egress = None;
        let state = plan(&d).unwrap();
        assert!(state.links.keys().all(|k| k.ns != Netns::Underlay));
        assert!(state.default_routes.is_empty());
        assert_eq!(state.masquerade, None);
        assert!(!state.forwarding);
        // The task still has its overlay interface.
        assert!(
            state
                .links
                .contains_key(&key(Netns::Task("/proc/100/ns/net".into()), "eth0"))
        );
    }

    #[test]
    fn peers_elsewhere_or_behind_this_node_are_left_out() {
        let mut d = desired();
        d.peers.push(RemotePeer {
            network_id: "other".into(),
            address: ip("10.0.9.9"),
            mac: Mac::for_ipv4(ip("10.0.9.9")),
            vtep: ip("192.0.2.3"),
        });
        d.peers.push(RemotePeer {
            network_id: "net1".into(),
            address: ip("10.0.1.7"),
            mac: Mac::for_ipv4(ip("10.0.1.7")),
            vtep: ip("192.0.2.1"),
        });
        let state = plan(&d).unwrap();
        assert_eq!(state.fdb.len(), 1);
        assert_eq!(state.neigh.len(), 1);
    }

    #[test]
    fn a_data_root_gives_a_stable_valid_prefix_of_its_own() {
        let root = std::path::Path::new("/var/lib/shoal");
        let prefix = prefix_for_data_root(root);
        assert_eq!(prefix, "s9c5fd");
        assert!(Naming::new(&prefix).is_ok());
        assert_ne!(
            prefix,
            prefix_for_data_root(std::path::Path::new("/var/lib/shoal2"))
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        let mut d = desired();
        d.config.prefix = "toolong1".into();
        assert!(matches!(plan(&d), Err(Error::InvalidPrefix(_))));
        let mut d = desired();
        d.config.prefix = "1a".into();
        assert!(matches!(plan(&d), Err(Error::InvalidPrefix(_))));
        let mut d = desired();
        d.tasks[0].egress = None;
        assert!(matches!(plan(&d), Err(Error::MissingEgress(_))));
        let mut d = desired();
        d.tasks[0].egress = Some(ip("10.9.9.9"));
        assert!(matches!(plan(&d), Err(Error::EgressOutsideBridge { .. })));
        // Inside the bridge's subnet but its broadcast address: no host may take it.
        let mut d = desired();
        d.tasks[0].egress = Some(ip("172.18.255.255"));
        assert!(matches!(plan(&d), Err(Error::EgressOutsideBridge { .. })));
        let mut d = desired();
        d.networks[0].vni = 1 << 24;
        assert!(matches!(plan(&d), Err(Error::InvalidVni { .. })));
        let mut d = desired();
        let mut second = d.networks[0].clone();
        second.id = "net2".into();
        d.networks.push(second);
        assert!(matches!(
            plan(&d),
            Err(Error::DuplicateVni { vni: 4097, .. })
        ));
        let mut d = desired();
        d.endpoints[0].network_id = "nope".into();
        assert!(matches!(plan(&d), Err(Error::UnknownNetwork { .. })));
    }

    #[test]
    fn a_host_leg_is_a_veth_from_br0_out_to_the_underlay() {
        let without = plan(&desired()).unwrap();
        let state = plan(&with_host_leg()).unwrap();
        let near = key(Netns::Named("t1-net1".into()), "hostleg");
        let far = key(Netns::Underlay, "t1-i001001");

        let added: Vec<(&LinkKey, &Link)> = state
            .links
            .iter()
            .filter(|(k, _)| !without.links.contains_key(*k))
            .collect();
        let veth = |mac, master: Option<&str>| Link {
            kind: LinkKind::Veth,
            mtu: 1450,
            mac,
            master: master.map(str::to_string),
            up: true,
        };
        assert_eq!(
            added,
            vec![
                (&far, &veth(Some(Mac::for_ipv4(ip("10.0.1.2"))), None)),
                (&near, &veth(None, Some("br0"))),
            ]
        );
        assert_eq!(
            state.veths.get(&near),
            Some(&VethPeer {
                key: far.clone(),
                temp_name: "hostlegtmp".into()
            })
        );
        assert!(state.addresses.contains(&(far, cidr("10.0.1.2/24"))));
        assert_eq!(state.addresses.len(), without.addresses.len() + 1);
        // No default route for the node: the leg's connected route reaches the subnet.
        assert_eq!(state.default_routes, without.default_routes);
        assert_eq!(state.loose_rp_filter, BTreeSet::from(["t1-gw".to_string()]));
        assert!(without.loose_rp_filter.is_empty());
        assert!(state.forwarding);
    }

    #[test]
    fn without_a_gateway_bridge_no_rp_filter_is_loosened_but_the_leg_forwards() {
        let mut d = with_host_leg();
        d.networks[0].internal = true;
        d.tasks[0].egress = None;
        let state = plan(&d).unwrap();
        assert!(!state.links.contains_key(&key(Netns::Underlay, "t1-gw")));
        assert!(
            state
                .links
                .contains_key(&key(Netns::Underlay, "t1-i001001"))
        );
        assert!(state.loose_rp_filter.is_empty());
        assert!(state.forwarding);

        // A leg alone, with no task on the node: the network and its leg are all there is.
        d.tasks.clear();
        d.endpoints.clear();
        let state = plan(&d).unwrap();
        assert_eq!(state.links.len(), 4, "{:?}", state.links.keys());
    }

    #[test]
    fn bad_host_legs_are_refused_with_what_is_wrong() {
        let mut d = with_host_leg();
        d.host_legs[0].network_id = "nope".into();
        let err = plan(&d).unwrap_err();
        assert!(matches!(&err, Error::HostLegUnknownNetwork(n) if n == "nope"));
        assert!(err.to_string().contains("network nope"), "{err}");

        let mut d = with_host_leg();
        d.host_legs.push(HostLeg {
            network_id: "net1".into(),
            address: cidr("10.0.1.3/24"),
        });
        let err = plan(&d).unwrap_err();
        assert!(matches!(&err, Error::DuplicateHostLeg(n) if n == "net1"));
        assert!(err.to_string().contains("two host legs"), "{err}");

        // Another subnet, another prefix, the gateway's own address, the broadcast address.
        for address in ["10.0.2.2/24", "10.0.1.2/16", "10.0.1.1/24", "10.0.1.255/24"] {
            let mut d = with_host_leg();
            d.host_legs[0].address = cidr(address);
            let err = plan(&d).unwrap_err();
            assert!(
                matches!(&err, Error::HostLegOutsideNetwork { network, .. } if network == "net1"),
                "{address}: {err}"
            );
            assert!(err.to_string().contains("10.0.1.0/24"), "{err}");
        }
    }

    #[test]
    fn host_leg_names_fit_linux_names_at_the_longest_prefix() {
        let naming = Naming::new("abcdef").unwrap();
        let name = naming.host_leg(0x00ff_ffff);
        assert_eq!(name, "abcdef-iffffff");
        assert!(name.len() <= 15 && naming.host_leg_temp().len() <= 15);
        assert!(name.starts_with(&naming.link_prefix()));
    }
}
