//! East-west load balancing through service VIPs with nftables (no IPVS); the daemon's node
//! networking programs it in each networked task's namespace.
//!
//! Each task's network namespace gets one table (`inet shoal` for the daemon) whose rules never
//! change: a packet the task sends to a VIP is DNAT'ed in the `output` hook to one of the
//! service's ready backends, picked by `numgen random` through an interval map, and conntrack in
//! the task's namespace undoes it on the replies. Backend, port and service changes are element
//! commands only (`plan`), so established flows survive them. `observe` reads a table back from
//! nft's JSON and `apply` runs nft through nsenter, so reconciling is idempotent and a restarted
//! daemon converges on what it finds.

mod apply;
mod error;
mod observe;
mod plan;

pub use crate::table::{TableAction, TableElements, apply, plan};
pub use apply::{Nft, NftInNamespace, read_table, reconcile, remove_table, update};
pub use error::VipError;
pub use observe::observe;
pub(crate) use plan::slot_runs;
pub use plan::{
    Change, DAEMON_TABLE, Elements, Observed, Protocol, SLOTS, TableName, VipPorts, VipService,
    desired_elements,
};
