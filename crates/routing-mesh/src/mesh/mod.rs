//! The ingress routing mesh: every node answers on every published port, with nftables (no
//! IPVS), and a port's traffic policy decides whether the task sees the client's address.
//!
//! One table on the node's own network namespace (named by the caller, as the VIP tables are in
//! task namespaces) holds fixed rules; the published ports and the tasks ready to serve them are map
//! elements (`plan`), so a task becoming ready or going away is element commands only and
//! established connections keep their task. `observe` reads the table back from nft's JSON and
//! `apply` runs nft, so reconciling is idempotent and a restarted daemon converges on what it
//! finds without dropping a connection. `health` answers, per node, whether the node has ready
//! tasks of its own for a port; `proxy` is the userspace fallback where nft can't run.

mod apply;
mod error;
mod health;
mod observe;
mod plan;
mod proxy;

pub use apply::{read_table, reconcile, update};
pub use error::MeshError;
pub use health::{Answer, HEALTH_PORT, HealthServer, LocalReadiness, answer, readiness};
pub use observe::observe;
pub use plan::{
    Change, Crossing, Elements, MASQUERADE_MARK, Mesh, Observed, PortKey, PublishedPort,
    TrafficPolicy, desired_elements,
};
pub use proxy::{UDP_IDLE, UserspaceProxy, choose_backend};
