//! What can go wrong planning, reading or applying a VIP table, each saying what to do next.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// An error of the VIP load balancer.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error(
        "table name {0:?} is not an nftables name: use letters, digits and '_', starting with a \
         letter, at most 64 characters"
    )]
    TableName(String),
    #[error("VIP {0} is given to two services on one table: give each service its own VIP")]
    DuplicateVip(Ipv4Addr),
    #[error(
        "VIP {vip} has {count} backends, more than the {slots} slots of its table: \
         scale the service down"
    )]
    TooManyBackends {
        vip: Ipv4Addr,
        count: usize,
        slots: u32,
    },
    #[error("could not run {program}: {source} (is nftables installed? apt-get install nftables)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("nft failed in network namespace {netns}: {stderr}")]
    Nft { netns: PathBuf, stderr: String },
    #[error("nft's listing of table {table} in {netns} is not JSON as nft writes it: {detail}")]
    Listing {
        table: String,
        netns: PathBuf,
        detail: String,
    },
}
