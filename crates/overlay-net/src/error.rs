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
    #[error("{0:?} is not an IPv4 address with a prefix length: give one such as 10.0.1.5/24")]
    InvalidCidr(String),
    #[error("network {0} is listed twice: list each network once")]
    DuplicateNetwork(String),
    #[error(
        "network {network} has VNI {vni}, which is not below 2^24: the allocator gives VNIs from 4096 up"
    )]
    InvalidVni { network: String, vni: u32 },
    #[error("networks {first} and {second} both have VNI {vni}: each network needs its own")]
    DuplicateVni {
        vni: u32,
        first: String,
        second: String,
    },
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
        "the node's host leg names network {0}, which is not in the node's networks: add the network or drop the leg"
    )]
    HostLegUnknownNetwork(String),
    #[error("network {0} has two host legs: give the node one address per network")]
    DuplicateHostLeg(String),
    #[error(
        "the node's host leg on network {network} has address {addr}, which is not a host address of the network's {subnet} other than its gateway: give it one the allocator reserved for the node"
    )]
    HostLegOutsideNetwork {
        network: String,
        addr: String,
        subnet: String,
    },
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
    #[error("{what}: {source}{}", io_hint(source))]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}{}", netlink_hint(source))]
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
    #[error("nftables table {table}: {source}{}", nft_hint(source))]
    Nft {
        table: String,
        #[source]
        source: crate::nft::NftError,
    },
    #[error("the encryption keyring is not usable: {0}")]
    IpsecKeyring(String),
    #[error("ip {command} failed: {message}{}", xfrm_hint(message))]
    Xfrm { command: String, message: String },
}

const ROOT_HINT: &str = " (the data plane needs root: CAP_NET_ADMIN and CAP_SYS_ADMIN)";
const KERNEL_HINT: &str =
    " (the kernel lacks something the data plane uses: check the vxlan, veth and bridge modules)";

fn io_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(1) => ROOT_HINT,
        _ => "",
    }
}

fn netlink_hint(e: &rtnetlink::Error) -> &'static str {
    match e {
        // EPERM, and EOPNOTSUPP when a link kind's module is missing.
        rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == 1 => ROOT_HINT,
        rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == 95 => KERNEL_HINT,
        _ => "",
    }
}

fn nft_hint(e: &crate::nft::NftError) -> &'static str {
    match e {
        crate::nft::NftError::Failed { stderr, .. }
            if stderr.contains("Operation not permitted") =>
        {
            ROOT_HINT
        }
        crate::nft::NftError::Failed { .. } => " (is the nf_tables module loaded?)",
        crate::nft::NftError::Spawn { .. } => "",
    }
}

fn xfrm_hint(message: &str) -> &'static str {
    if message.contains("Requested type not found") || message.contains("algorithm not found") {
        " (the kernel cannot do ESP with AES-GCM: it needs CONFIG_INET_ESP and CONFIG_CRYPTO_GCM, built in or as the esp4 and gcm modules)"
    } else if message.contains("Operation not permitted") {
        ROOT_HINT
    } else {
        ""
    }
}
