//! shoal's object model and gRPC services, generated at build time from the `.proto` files under
//! `proto/shoal/`. This crate holds no logic; `codec` only sizes the buffers the generated code
//! encodes and decodes into, and `task_list` is the one message written by hand.

/// The cluster object model: nodes, services, tasks, networks, secrets, configs, stacks and the
/// cluster itself, with their specs, and the services around it: `Control` (what the CLI calls on
/// a manager), `Dispatcher` (what workers call on 2377), `NodeCa` and `RaftMembership` (joining,
/// renewing certificates and the managers' Raft group, on 2377) and `Swarm` (node-local
/// membership, on the daemon's socket). Mirrors SwarmKit's `api` package.
pub mod api {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("shoal.api");

    /// `google.protobuf.Duration` and `Timestamp`, which the messages use for spans and points
    /// in time. Their conversions to and from std's types are prost-types' own (`TryFrom`,
    /// `From`); `spec::time` holds the few readings shoal adds to them.
    pub use prost_types::{Duration, Timestamp};

    pub use crate::task_list::ListTasksResponse;
}

/// The manager-to-manager Raft service.
pub mod raft {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("shoal.raft");
}

/// The node-local engine API that `shoal daemon` serves on its unix socket.
pub mod engine {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("shoal.engine");

    /// `google.protobuf.Duration`, which the engine API's timeouts and intervals use.
    pub use prost_types::Duration;
}

pub mod codec;
pub mod task_list;

/// protobuf's well-known types, for callers that name them directly.
pub use prost_types;

/// gRPC metadata keys shoal's services agree on.
pub mod metadata {
    /// Set by a manager that refuses a dispatcher call because it does not lead: the leader's
    /// cluster-port address, so that the agent goes straight there.
    pub const LEADER_ADDR: &str = "shoal-leader-addr";
}
