//! The local container engine: OCI image store, overlayfs root filesystems, OCI runtime
//! (youki's libcontainer or an external runc), cgroups, logs, healthchecks and the per-container
//! shim that lets containers outlive the daemon. Knows nothing of the cluster.

mod beneath;
pub mod container;
pub mod engine;
pub mod error;
pub mod health;
pub mod init;
pub mod logs;
pub mod pull;
pub mod runtime;
pub mod shim;
pub mod spec;
pub mod store;
pub mod sys;
pub mod unpack;
pub mod util;

pub use container::{RunStatus, ShimState};
pub use engine::{ContainerInfo, Engine, EngineConfig, LocalEngine};
pub use error::{EngineError, Result};
pub use health::{HealthState, HealthStatus};
pub use logs::LogEntry;
pub use spec::{ContainerSpec, HealthcheckSpec, LogOptions, MountSpec, Resources, Ulimit};
pub use store::ImageSummary;
