//! What a node's overlay data plane should serve: plain data the worker fills in from its tasks
//! and the gossip it hears, with no protocol types, and the naming and MAC rules derived from it.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use spec::defaults::DEFAULT_VXLAN_PORT;
use spec::network::Subnet;

use crate::Error;

/// Bytes of VXLAN encapsulation over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14):
/// every overlay link is this much smaller than the underlay.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The longest name prefix: the per-task gateway-bridge veth in the underlay is the prefix, one
/// letter and eight characters of the task id, and Linux names stop at 15 bytes.
pub const MAX_PREFIX_LEN: usize = 6;

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Docker's MAC for a task on an overlay: 02:42 and then the four octets of its IPv4 address,
    /// so every node derives the same MAC for an address without asking.
    pub fn for_ipv4(addr: Ipv4Addr) -> Mac {
        let [a, b, c, d] = addr.octets();
        Mac([0x02, 0x42, a, b, c, d])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// An IPv4 address with its prefix length, as it sits on an interface ("10.0.1.5/24"). Its
/// subnet is spec's [`Subnet`], which holds the containment and host rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// The address with its prefix length; prefixes above 32 are refused.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Cidr, Error> {
        let cidr = Ipv4Cidr { addr, prefix };
        match cidr.subnet() {
            Some(_) => Ok(cidr),
            None => Err(Error::InvalidPrefixLength {
                addr: addr.to_string(),
                prefix,
            }),
        }
    }

    /// The subnet the address lies in; `None` only for a prefix above 32, which [`Ipv4Cidr::new`]
    /// refuses.
    pub fn subnet(&self) -> Option<Subnet> {
        Subnet::containing(self.addr, self.prefix)
    }

    /// Reads "10.0.1.5/24", as the allocator writes an address with its subnet's prefix.
    pub fn parse(text: &str) -> Result<Ipv4Cidr, Error> {
        let invalid = || Error::InvalidCidr(text.to_owned());
        let (addr, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        Ipv4Cidr::new(addr, prefix)
    }

    /// The network part, host bits cleared.
    pub fn network(&self) -> Ipv4Addr {
        self.subnet().map_or(self.addr, Subnet::network)
    }

    /// Whether `addr` lies in this address's network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.subnet().is_some_and(|subnet| subnet.contains(addr))
    }

    /// Whether `addr` is a host address of this address's network: in it, and neither its
    /// network nor its broadcast address.
    pub fn is_host(&self, addr: Ipv4Addr) -> bool {
        self.subnet().is_some_and(|subnet| subnet.is_host(addr))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How this node's data plane is set up: the same for every network on it.
/// The largest MTU the kernel lets a bridge or a veth have (`ETH_MAX_MTU`).
pub const MAX_ETHERNET_MTU: u32 = 65535;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Starts the name of every namespace, link and nftables table this instance makes, so two
    /// instances (or a test run) never touch each other's, and a restart finds its own.
    pub prefix: String,
    /// The underlay's network namespace; `None` is the caller's own (the daemon's host namespace).
    pub underlay_netns: Option<PathBuf>,
    /// This node's VXLAN tunnel endpoint: the underlay address peers send to.
    pub vtep: Ipv4Addr,
    /// The underlay's MTU; every overlay link gets this less [`VXLAN_OVERHEAD`].
    pub underlay_mtu: u32,
    /// The VXLAN UDP destination port: `spec::defaults::vxlan_port` of the cluster's
    /// `vxlan_udp_port` ([`DEFAULT_VXLAN_PORT`] when it says 0).
    pub vxlan_port: u16,
    /// The gateway bridge's subnet (Docker's docker_gwbridge is 172.18.0.0/16); its first host
    /// address is the bridge's and the tasks' default gateway.
    pub gwbridge: Ipv4Cidr,
}

impl NodeConfig {
    /// The MTU of every overlay link: the bridge, the VXLAN device and the task interfaces.
    pub fn overlay_mtu(&self) -> u32 {
        self.underlay_mtu.saturating_sub(VXLAN_OVERHEAD)
    }

    /// The MTU of the gateway bridge and the tasks' legs on it: the underlay's, but no more than
    /// an Ethernet link takes (loopback's 65536 is one more than a bridge or veth accepts).
    pub fn gwbridge_mtu(&self) -> u32 {
        self.underlay_mtu.min(MAX_ETHERNET_MTU)
    }

    /// The gateway bridge's own address (the first host in its subnet), the tasks' default route.
    /// A /31 or /32 has no host: then the network address, which no task's egress address can
    /// use (see [`Ipv4Cidr::is_host`]).
    pub fn gwbridge_gateway(&self) -> Ipv4Addr {
        self.gwbridge
            .subnet()
            .and_then(Subnet::first_host)
            .unwrap_or_else(|| self.gwbridge.network())
    }

    /// The first address of the gateway subnet that neither the bridge nor `in_use` holds, for
    /// the worker to give a new task's egress leg; `None` when the subnet is full.
    pub fn pick_egress_address(
        &self,
        in_use: &std::collections::BTreeSet<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        let gateway = self.gwbridge_gateway();
        self.gwbridge
            .subnet()?
            .hosts()
            .find(|a| *a != gateway && !in_use.contains(a))
    }
}

/// One overlay network this node has at least one task on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub id: String,
    /// The VXLAN network identifier the allocator gave the network.
    pub vni: u32,
    /// The network's subnet with the gateway's prefix; the gateway address sits on the bridge.
    pub gateway: Ipv4Cidr,
    /// No way out: its tasks get no gateway-bridge leg and no default route through it.
    pub internal: bool,
    /// Asked for IPsec between nodes; not acted on yet.
    pub encrypted: bool,
}

/// A task running on this node, with the namespace its interfaces go into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTask {
    pub id: String,
    /// The task's network namespace (a /proc/PID/ns/net or a bind-mounted file); the engine owns
    /// it, this crate only puts interfaces in it.
    pub netns: PathBuf,
    /// The task's address on the gateway bridge, when it has a way out: any of its networks is
    /// not internal, or it is reached from the host (see [`NodeConfig::pick_egress_address`]).
    /// With one, the task gets its leg whatever its networks.
    pub egress: Option<Ipv4Addr>,
}

/// A local task's attachment to one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub task_id: String,
    pub network_id: String,
    /// The task's address on the network, with the network's prefix ("10.0.1.5/24").
    pub address: Ipv4Cidr,
    /// Normally [`Mac::for_ipv4`] of the address.
    pub mac: Mac,
    /// The interface's name inside the task: eth0, eth1… in the order of the task's networks.
    pub interface: String,
}

/// A task on another node, on a network this node has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePeer {
    pub network_id: String,
    pub address: Ipv4Addr,
    pub mac: Mac,
    /// The underlay address of the node the task runs on.
    pub vtep: Ipv4Addr,
}

/// This node's own interface on a network, in the underlay namespace (the routing mesh's way
/// into the ingress network): an address the managers gave the node there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLeg {
    pub network_id: String,
    /// The node's address on the network, with the network's prefix ("10.0.0.2/24"); its MAC
    /// is [`Mac::for_ipv4`] of it, so other nodes' peer entries for it need no asking either.
    pub address: Ipv4Cidr,
}

/// Everything the node should serve; [`crate::plan`] turns it into links and entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub config: NodeConfig,
    pub networks: Vec<Network>,
    pub tasks: Vec<LocalTask>,
    pub endpoints: Vec<LocalEndpoint>,
    pub peers: Vec<RemotePeer>,
    /// At most one per network, on networks in `networks`.
    pub host_legs: Vec<HostLeg>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_02_42_and_the_address_octets() {
        let mac = Mac::for_ipv4(Ipv4Addr::new(10, 0, 1, 5));
        assert_eq!(mac.to_string(), "02:42:0a:00:01:05");
    }

    #[test]
    fn cidr_network_and_contains() {
        let c = Ipv4Cidr::new(Ipv4Addr::new(10, 0, 1, 5), 24).unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(10, 0, 1, 0));
        assert!(c.contains(Ipv4Addr::new(10, 0, 1, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 2, 1)));
        assert!(c.is_host(Ipv4Addr::new(10, 0, 1, 254)));
        assert!(!c.is_host(Ipv4Addr::new(10, 0, 1, 255)));
        assert!(
            Ipv4Cidr::new(Ipv4Addr::new(1, 2, 3, 4), 0)
                .unwrap()
                .contains(Ipv4Addr::new(9, 9, 9, 9))
        );
        assert!(Ipv4Cidr::new(Ipv4Addr::new(1, 2, 3, 4), 33).is_err());
        assert_eq!(Ipv4Cidr::parse("10.0.1.5/24").unwrap(), c);
        for text in [
            "10.0.1.5",
            "10.0.1.5/33",
            "10.0.1/24",
            "fd00::1/64",
            "10.0.1.5/x",
        ] {
            assert!(Ipv4Cidr::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn egress_addresses_skip_the_gateway_and_those_in_use() {
        let config = NodeConfig {
            prefix: "t".into(),
            underlay_netns: None,
            vtep: Ipv4Addr::new(192, 0, 2, 1),
            underlay_mtu: 1500,
            vxlan_port: DEFAULT_VXLAN_PORT,
            gwbridge: Ipv4Cidr::new(Ipv4Addr::new(172, 18, 0, 0), 30).unwrap(),
        };
        assert_eq!(config.gwbridge_gateway(), Ipv4Addr::new(172, 18, 0, 1));
        assert_eq!(config.overlay_mtu(), 1450);
        assert_eq!(config.gwbridge_mtu(), 1500);
        let on_loopback = NodeConfig {
            underlay_mtu: 65536,
            ..config.clone()
        };
        assert_eq!(
            (on_loopback.overlay_mtu(), on_loopback.gwbridge_mtu()),
            (65486, MAX_ETHERNET_MTU)
        );
        let mut used = std::collections::BTreeSet::new();
        assert_eq!(
            config.pick_egress_address(&used),
            Some(Ipv4Addr::new(172, 18, 0, 2))
        );
        used.insert(Ipv4Addr::new(172, 18, 0, 2));
        // A /30 has one address left after the gateway: none once that one is taken.
        assert_eq!(config.pick_egress_address(&used), None);
    }
}
