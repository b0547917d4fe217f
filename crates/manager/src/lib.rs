//! The manager role: control API, orchestrators, allocator, dispatcher, CA and join tokens, stacks.
//!
//! [`ManagerRole`] runs it all: the Raft store, the cluster port, the leader-only loop that drives
//! the pure orchestration cores ([`orchestration_loop`], [`orchestrator`]), the dispatcher every
//! worker talks to, and the control API the CLI calls. [`ca`] issues the certificates,
//! [`membership`] keeps the node's place in the swarm on disk, [`data_key`] the key that seals
//! its Raft store and the swarm's unlock key, [`network_keys`] the keys of node gossip and
//! encrypted overlays the leader rotates, and [`objects`] is the typed view of the cluster
//! store.
//!
//! **Architecture invariant:** the manager runs no containers. Everything under
//! [`orchestrator`] does no IO, reads no clock, spawns nothing and uses no randomness: time comes
//! in as a [`orchestrator::ClusterTime`] value and task ids come from a caller-supplied
//! [`orchestrator::TaskIdGenerator`], so the same snapshot always yields the same commands. Only
//! the shells around the cores touch the store or the clock.

pub mod address;
pub mod allocator;
pub mod assignment;
mod authz;
pub mod ca;
mod cluster_port;
mod control;
pub mod data_key;
mod dispatcher;
mod error;
pub mod join;
pub mod join_token;
pub mod membership;
pub mod network_keys;
mod node_ca;
pub mod objects;
pub mod orchestration_loop;
pub mod orchestrator;
pub mod peer;
mod rate_limit;
mod role;
mod state_metrics;
/// The raft-store tests' certificate authority, for the unit tests that need TLS identities.
#[cfg(test)]
#[path = "../../raft-store/tests/support/pki.rs"]
#[allow(dead_code, unreachable_pub)]
mod test_pki;
mod view;

pub use control::{ControlApi, ControlGate};
pub use dispatcher::{DispatcherService, LogStream};
pub use error::ManagerError;
pub use membership::{Membership, MembershipRole, SwarmDir};
pub use role::{
    DEFAULT_DISPATCHER_HEARTBEAT, InitOptions, ManagerRole, SwarmSummary, raft_member_id_for,
};
