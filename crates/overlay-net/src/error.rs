//! The data plane's errors, each saying what to fix or look at.

use std::net::Ipv4Addr;

/// What can go wrong planning or applying a node's overlay data plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "name prefix {0:?} is not usable: give 1 to 6 lowercase letters and digits, starting with a letter"
    )]
    InvalidPrefix(String),
    #[error(
        "{addr}/{prefix} is not an IPv4 address with a prefix length: the prefix is at most 32"
    )]
    InvalidPrefixLength { addr: String, prefix: u8 },
    #[error("network {0} is listed twice: list each network once")]
    DuplicateNetwork(String),
    #[error("task {0} is listed twice: list each task once")]
    DuplicateTask(String),
    #[error("task {task} names interface {interface} twice: give each endpoint its own ethN")]
    DuplicateInterface { task: String, interface: String },
    #[error(
        "task {task} is attached to network {network}, which is not in the node's networks: add it"
    )]
    UnknownNetwork { task: String, network: String },
    #[error("an endpoint names task {0}, which is not in the node's tasks: add it")]
    UnknownTask(String),
    #[error(
        "task {0} is on a network that is not internal but has no gateway-bridge address: pick one with NodeConfig::pick_egress_address"
    )]
    MissingEgress(String),
    #[error(
        "task {task}'s gateway-bridge address {addr} is not a host address of {subnet}: pick one inside it"
    )]
    EgressOutsideBridge {
        task: String,
        addr: Ipv4Addr,
        subnet: String,
    },
    #[error("{what}: {source} (run as root, with the kernel's vxlan, veth and bridge support)")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(
        "{} of {total} data-plane changes failed (the others were made; reconciling again retries them): {}",
        failures.len(),
        failures.join("; ")
    )]
    Apply { total: usize, failures: Vec<String> },
    #[error(
        "nft failed on table {table}: {message} (is nftables installed and the nf_tables module loaded?)"
    )]
    Nft { table: String, message: String },
}
