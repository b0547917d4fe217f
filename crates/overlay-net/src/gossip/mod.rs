//! Node gossip on port 7946, as Docker's networkdb: which nodes are alive (SWIM, via the foca
//! crate) and which task endpoints are up on which node, per network, sealed under keys the
//! managers hand out.
//!
//! `seal` seals and opens frames, `table` is the versioned endpoint table, `core` the node's
//! state machine (membership, dissemination, anti-entropy), all IO-free; `shell` runs a core on
//! tokio UDP and TCP sockets.

mod core;
mod seal;
mod shell;
mod table;

#[cfg(test)]
mod shell_tests;
#[cfg(test)]
mod sim_tests;

pub use self::core::{GossipConfig, GossipCore, GossipStats, MemberId, Output};
pub use self::seal::{GossipKey, KEY_LEN, Keyring, SALT_LEN};
pub use self::shell::{GossipAgent, GossipAgentConfig, TableView};
pub use self::table::{
    EndpointKey, EndpointRecord, IngressPortRecord, NodeName, TableChange, VisibleEndpoint,
};

/// The port Docker's gossip listens on, UDP and TCP.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;

/// What can go wrong in the gossip.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// Two keys of a keyring share an id.
    #[error("two gossip keys share id {0}: give every key in the ring its own id")]
    DuplicateKeyId(u32),
    /// An endpoint was published on a network this node has not joined.
    #[error(
        "this node has not joined network {0}'s gossip: join the network before publishing endpoints on it"
    )]
    NotAttached(String),
    /// The UDP or TCP socket could not be bound.
    #[error(
        "could not bind the gossip port on {addr}: {source}; free the port or configure another address"
    )]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent would advertise an address peers cannot reach.
    #[error(
        "the gossip would advertise {0}, which peers cannot reach: give the node's own address to advertise"
    )]
    UnspecifiedAdvertise(std::net::SocketAddr),
    /// The agent's task has ended.
    #[error("the gossip agent has stopped; start a new one")]
    Stopped,
}
