//! The pure core of the routing mesh: from the ports the swarm publishes, as one node sees them,
//! to the elements of one nftables table whose rules never change, and from what the table holds
//! to the few element commands that make it hold what is wanted.
//!
//! The rules are fixed (`LAYOUT`). A new connection to one of the node's own addresses is looked
//! up by protocol and port in the verdict map `published`, which sends it down its port's path:
//! - `prefer_local`: DNAT to a ready task on this node, picked by `numgen random` through the
//!   interval map `local`, with no SNAT, so the task sees the client's address; a miss (no ready
//!   local task) goes on to `cluster`.
//! - `local_only`: the same, and a miss is refused.
//! - `cluster`: marked, then DNAT through `cluster` to a ready task on this node, or to the
//!   published port of another node with ready tasks, which serves the connection from its own;
//!   `postrouting` gives what is marked this node's address, so replies come back through it, as
//!   in Docker's mesh. Between the nodes the connection is plainly routed: it crosses no VXLAN,
//!   which costs this machine's kernel a third of the underlay's rate. Where the ingress network
//!   is encrypted, `cluster` sends to the tasks' ingress addresses instead, inside the overlay.
//!
//! A connection from another node of the swarm (`peers`) to a published port is one that node
//! handed on: `from_peer` serves it from a ready local task and, when there is none (the other
//! node's view was a moment behind), across the overlay through `overlay`; it never hands it on
//! again, so no connection goes round between nodes.
//!
//! A connection no path took (no ready task) reaches the node's own `input` and is refused at
//! once, a TCP reset or an ICMP port unreachable, instead of hanging. A connection to the
//! loopback address takes none of these paths: the kernel will not route it away from 127.0.0.1
//! once DNATed, so it goes to the daemon's userspace proxy listening there. Everything that
//! varies lives in map and set elements, so a task or port change is element commands only and
//! conntrack keeps every established flow where it was sent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::vip::{Protocol, SLOTS};

use super::MeshError;
use crate::table::TableElements;

/// The mark the `cluster` path sets so `postrouting` masquerades the connection. One bit, so the
/// mesh leaves the other bits of a packet's mark to whoever else uses them.
pub const MASQUERADE_MARK: u32 = 0x0010_0000;

/// Where a published port sends connections that reach this node (Swarm has only `Cluster`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficPolicy {
    /// Any ready task in the swarm, the client's address replaced by this node's.
    Cluster,
    /// A ready task on this node, keeping the client's address; any ready task otherwise.
    PreferLocal,
    /// A ready task on this node, keeping the client's address; refused when there is none.
    Local,
}

impl TrafficPolicy {
    /// The chain of `LAYOUT` that a connection to a port with this policy goes to.
    fn chain(self) -> &'static str {
        match self {
            TrafficPolicy::Cluster => "cluster",
            TrafficPolicy::PreferLocal => "prefer_local",
            TrafficPolicy::Local => "local_only",
        }
    }

    fn from_chain(chain: &str) -> Option<TrafficPolicy> {
        [
            TrafficPolicy::Cluster,
            TrafficPolicy::PreferLocal,
            TrafficPolicy::Local,
        ]
        .into_iter()
        .find(|policy| policy.chain() == chain)
    }
}

/// How the `cluster` path reaches the ready tasks of other nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Crossing {
    /// Through the published port of the node each runs on, by the node's address (its tunnel
    /// endpoint), with its number of ready tasks, so that nodes weigh as their tasks do.
    NodePorts(BTreeMap<Ipv4Addr, usize>),
    /// To each task's ingress address, across the overlay: the ingress network is encrypted,
    /// and the mesh's traffic between nodes must be too.
    Overlay,
}

/// One port published on this node, with the tasks ready to serve it (running, and healthy when
/// the service has a healthcheck), each as the address and port the node sends to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedPort {
    pub protocol: Protocol,
    pub port: u16,
    pub policy: TrafficPolicy,
    /// Ready tasks on this node.
    pub local: BTreeSet<SocketAddrV4>,
    /// Ready tasks anywhere in the swarm, this node's included, by their ingress addresses.
    pub cluster: BTreeSet<SocketAddrV4>,
    /// How the `cluster` path reaches the ready tasks of other nodes.
    pub crossing: Crossing,
}

/// Everything the mesh's table serves on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mesh {
    /// The node's own address, the source of the connections it hands to other nodes.
    pub address: Ipv4Addr,
    /// The other nodes that may hand connections to this one, by their addresses.
    pub peers: BTreeSet<Ipv4Addr>,
    pub ports: Vec<PublishedPort>,
}

/// A published port's key in the table: protocol and published port.
pub type PortKey = (Protocol, u16);

/// The elements of a mesh table: everything in it that is not a fixed rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Elements {
    /// Every published port and its path.
    pub published: BTreeMap<PortKey, TrafficPolicy>,
    /// (protocol, port, first slot, last slot) → a ready task on this node.
    pub local: BTreeMap<(Protocol, u16, u32, u32), SocketAddrV4>,
    /// (protocol, port, first slot, last slot) → a ready task on this node, or another node's
    /// published port.
    pub cluster: BTreeMap<(Protocol, u16, u32, u32), SocketAddrV4>,
    /// (protocol, port, first slot, last slot) → a ready task anywhere, by its ingress address.
    pub overlay: BTreeMap<(Protocol, u16, u32, u32), SocketAddrV4>,
    /// Ports with at least one element in `cluster`: only those are marked for SNAT.
    pub cluster_ports: BTreeSet<PortKey>,
    /// Ports with at least one element in `overlay`.
    pub overlay_ports: BTreeSet<PortKey>,
    /// Every published port, refused at `input` when no path took the connection.
    pub ports: BTreeSet<PortKey>,
    /// Each other node → this node's address. The table holds it as two maps: `peers`, which
    /// sends that node's connections to a published port to `from_peer`, and `peer_source`, the
    /// source of what this node hands to it.
    pub peers: BTreeMap<Ipv4Addr, Ipv4Addr>,
}

/// The elements that make this node's table serve `mesh`. Tasks share a port's slots in address
/// order, and nodes after this node's tasks in address order, so the same input always gives the
/// same elements.
pub fn desired_elements(mesh: &Mesh) -> Result<Elements, MeshError> {
    let mut elements = Elements::default();
    for published in &mesh.ports {
        let key = (published.protocol, published.port);
        elements.ports.insert(key);
        if elements.published.insert(key, published.policy).is_some() {
            return Err(MeshError::DuplicatePort {
                protocol: published.protocol.nft_name(),
                port: published.port,
            });
        }
        // Every policy's local tasks serve what other nodes hand on (`from_peer`).
        let local: Vec<SocketAddrV4> = published.local.iter().copied().collect();
        spread(published, &local, &mut elements.local)?;
        // A `local` port never goes on to `cluster`, and no node hands one on.
        if published.policy == TrafficPolicy::Local {
            continue;
        }
        let anywhere: Vec<SocketAddrV4> = published.cluster.iter().copied().collect();
        let across: Vec<SocketAddrV4> = match &published.crossing {
            Crossing::Overlay => anywhere.clone(),
            Crossing::NodePorts(nodes) => {
                let handed_on = nodes.iter().flat_map(|(node, tasks)| {
                    std::iter::repeat_n(SocketAddrV4::new(*node, published.port), *tasks)
                });
                local.iter().copied().chain(handed_on).collect()
            }
        };
        if !across.is_empty() {
            spread(published, &across, &mut elements.cluster)?;
            elements.cluster_ports.insert(key);
        }
        if !anywhere.is_empty() {
            spread(published, &anywhere, &mut elements.overlay)?;
            elements.overlay_ports.insert(key);
        }
    }
    for peer in mesh.peers.iter().filter(|peer| **peer != mesh.address) {
        elements.peers.insert(*peer, mesh.address);
    }
    Ok(elements)
}

fn spread(
    published: &PublishedPort,
    tasks: &[SocketAddrV4],
    map: &mut BTreeMap<(Protocol, u16, u32, u32), SocketAddrV4>,
) -> Result<(), MeshError> {
    let runs = crate::vip::slot_runs(tasks.len()).ok_or(MeshError::TooManyTasks {
        protocol: published.protocol.nft_name(),
        port: published.port,
        count: tasks.len(),
        slots: SLOTS,
    })?;
    for ((first, last), task) in runs.zip(tasks) {
        map.insert((published.protocol, published.port, first, last), *task);
    }
    Ok(())
}

/// The fixed part of the table, with no element. `{table}` is replaced by the table's name.
/// `observe` recognises it by its maps, sets, chains and rule counts: change those with it.
/// `input` refuses through its own set `ports` rather than a lookup in `published`: a verdict
/// map bound to a filter chain may not lead to the nat chains (the kernel refuses the DNATs).
const LAYOUT: &str = "\
table inet {table} {
	map published {
		typeof meta l4proto . th dport : verdict
	}
	map local {
		typeof meta l4proto . th dport . numgen random mod 720720 : ip daddr . th dport
		flags interval
	}
	map cluster {
		typeof meta l4proto . th dport . numgen random mod 720720 : ip daddr . th dport
		flags interval
	}
	map overlay {
		typeof meta l4proto . th dport . numgen random mod 720720 : ip daddr . th dport
		flags interval
	}
	set cluster_ports {
		typeof meta l4proto . th dport
	}
	set overlay_ports {
		typeof meta l4proto . th dport
	}
	set ports {
		typeof meta l4proto . th dport
	}
	map peers {
		typeof ip saddr : verdict
	}
	map peer_source {
		typeof ip daddr : ip saddr
	}
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		fib daddr type local meta l4proto . th dport @ports ip saddr vmap @peers
		fib daddr type local meta l4proto . th dport vmap @published
	}
	chain output {
		type nat hook output priority -100; policy accept;
		ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @published
	}
	chain prefer_local {
		meta l4proto { tcp, udp, sctp } dnat ip to meta l4proto . th dport . numgen random mod 720720 map @local
		goto cluster
	}
	chain local_only {
		meta l4proto { tcp, udp, sctp } dnat ip to meta l4proto . th dport . numgen random mod 720720 map @local
	}
	chain cluster {
		meta l4proto . th dport @cluster_ports meta l4proto { tcp, udp, sctp } meta mark set meta mark | 0x00100000 dnat ip to meta l4proto . th dport . numgen random mod 720720 map @cluster
	}
	chain from_peer {
		meta l4proto { tcp, udp, sctp } dnat ip to meta l4proto . th dport . numgen random mod 720720 map @local
		meta l4proto . th dport @overlay_ports meta l4proto { tcp, udp, sctp } meta mark set meta mark | 0x00100000 dnat ip to meta l4proto . th dport . numgen random mod 720720 map @overlay
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		meta mark & 0x00100000 == 0x00100000 snat ip to ip daddr map @peer_source
		meta mark & 0x00100000 == 0x00100000 masquerade
	}
	chain input {
		type filter hook input priority 0; policy accept;
		ip daddr 127.0.0.0/8 accept
		ct state new meta l4proto . th dport @ports meta l4proto tcp reject with tcp reset
		ct state new meta l4proto . th dport @ports reject with icmpx port-unreachable
	}
}
";

impl TableElements for Elements {
    const LAYOUT: &'static str = LAYOUT;

    fn is_empty(&self) -> bool {
        self.published.is_empty()
            && self.local.is_empty()
            && self.cluster.is_empty()
            && self.overlay.is_empty()
            && self.cluster_ports.is_empty()
            && self.overlay_ports.is_empty()
            && self.ports.is_empty()
            && self.peers.is_empty()
    }

    fn minus(&self, other: &Elements) -> Elements {
        fn map_minus<K: Ord + Copy, V: PartialEq + Copy>(
            this: &BTreeMap<K, V>,
            other: &BTreeMap<K, V>,
        ) -> BTreeMap<K, V> {
            this.iter()
                .filter(|(key, value)| other.get(key) != Some(value))
                .map(|(key, value)| (*key, *value))
                .collect()
        }
        fn set_minus<K: Ord + Copy>(this: &BTreeSet<K>, other: &BTreeSet<K>) -> BTreeSet<K> {
            this.difference(other).copied().collect()
        }
        Elements {
            published: map_minus(&self.published, &other.published),
            local: map_minus(&self.local, &other.local),
            cluster: map_minus(&self.cluster, &other.cluster),
            overlay: map_minus(&self.overlay, &other.overlay),
            cluster_ports: set_minus(&self.cluster_ports, &other.cluster_ports),
            overlay_ports: set_minus(&self.overlay_ports, &other.overlay_ports),
            ports: set_minus(&self.ports, &other.ports),
            peers: map_minus(&self.peers, &other.peers),
        }
    }

    fn lines(&self, data: bool) -> Vec<(&'static str, Vec<String>)> {
        let slot_map = |map: &BTreeMap<(Protocol, u16, u32, u32), SocketAddrV4>| {
            map.iter()
                .map(|((protocol, port, first, last), task)| {
                    let key = format!("{} . {port} . {first}-{last}", protocol.nft_name());
                    if data {
                        format!("{key} : {} . {}", task.ip(), task.port())
                    } else {
                        key
                    }
                })
                .collect()
        };
        let peer_map = |datum: fn(&Ipv4Addr) -> String| {
            self.peers
                .iter()
                .map(|(peer, source)| {
                    if data {
                        format!("{peer} : {}", datum(source))
                    } else {
                        peer.to_string()
                    }
                })
                .collect()
        };
        let port_set = |set: &BTreeSet<PortKey>| {
            set.iter()
                .map(|(protocol, port)| format!("{} . {port}", protocol.nft_name()))
                .collect()
        };
        vec![
            ("local", slot_map(&self.local)),
            ("cluster", slot_map(&self.cluster)),
            ("overlay", slot_map(&self.overlay)),
            ("cluster_ports", port_set(&self.cluster_ports)),
            ("overlay_ports", port_set(&self.overlay_ports)),
            ("ports", port_set(&self.ports)),
            ("peers", peer_map(|_| "goto from_peer".to_owned())),
            ("peer_source", peer_map(|source| source.to_string())),
            (
                "published",
                self.published
                    .iter()
                    .map(|((protocol, port), policy)| {
                        let key = format!("{} . {port}", protocol.nft_name());
                        if data {
                            format!("{key} : goto {}", policy.chain())
                        } else {
                            key
                        }
                    })
                    .collect(),
            ),
        ]
    }

    fn read_layout(objects: &[serde_json::Value]) -> Option<Elements> {
        super::observe::read_layout(objects)
    }
}

/// What the mesh's table holds now, as read back by the apply shell.
pub type Observed = crate::table::Observed<Elements>;

/// The commands that turn what the mesh's table holds into what is wanted: one nft transaction.
pub type Change = crate::table::Change<Elements>;

/// Reads a `published` element's verdict back (`observe`).
pub(crate) fn policy_of_chain(chain: &str) -> Option<TrafficPolicy> {
    TrafficPolicy::from_chain(chain)
}

#[cfg(test)]
mod tests;
