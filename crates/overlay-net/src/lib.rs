//! Per-node L2/L3 for overlay networks: a pure plan of the namespaces, bridges, VXLAN devices,
//! veths, routes, FDB and neighbour entries a node should have, a pure diff against what is there,
//! and a thin netlink shell that observes and applies it; and node gossip (`gossip`): membership and
//! the endpoint table, encrypted, on 7946; and encrypted overlays (`ipsec`): ESP between VTEPs
//! through XFRM. `netns` and `nft` are the node's one way into network namespaces and nftables,
//! which routing-mesh uses too.

pub mod apply;
pub mod desired;
pub mod diff;
mod error;
pub mod gossip;
pub mod ipsec;
pub mod netns;
pub mod nft;
pub mod plan;
pub mod scope;

pub use desired::{
    DEFAULT_VXLAN_PORT, Desired, HostLeg, Ipv4Cidr, LocalEndpoint, LocalTask, Mac, Network,
    NodeConfig, RemotePeer, VXLAN_OVERHEAD,
};
pub use diff::{Change, diff};
pub use error::Error;
pub use plan::{State, plan, prefix_for_data_root};
