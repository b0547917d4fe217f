//! The local container engine: OCI image store, overlayfs root filesystems, OCI runtime
//! (youki's libcontainer or an external runc), cgroups, logs, healthchecks and the per-container
//! shim that lets containers outlive the daemon. Knows nothing of the cluster. Without the
//! `runtime` feature (on by default) it is the image store alone.

mod beneath;
#[cfg(feature = "runtime")]
pub mod console;
#[cfg(feature = "runtime")]
pub mod container;
#[cfg(feature = "runtime")]
pub mod engine;
pub mod error;
#[cfg(feature = "runtime")]
pub mod exec_spec;
#[cfg(feature = "runtime")]
pub mod health;
#[cfg(feature = "runtime")]
pub mod host;
#[cfg(feature = "runtime")]
pub mod init;
#[cfg(feature = "runtime")]
pub mod logs;
#[cfg(feature = "runtime")]
pub mod pull;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "runtime")]
pub mod shim;
#[cfg(feature = "runtime")]
pub mod spec;
pub mod store;
#[cfg(feature = "runtime")]
pub mod sys;
pub mod unpack;
pub mod util;

#[cfg(feature = "runtime")]
pub use container::{RunStatus, ShimState};
#[cfg(feature = "runtime")]
pub use engine::{
    ContainerInfo, Engine, EngineConfig, ExecEvent, ExecInput, ExecSession, LocalEngine,
};
pub use error::{EngineError, Result};
#[cfg(feature = "runtime")]
pub use exec_spec::{ExecSpec, TerminalSize};
#[cfg(feature = "runtime")]
pub use health::{HealthState, HealthStatus};
#[cfg(feature = "runtime")]
pub use logs::LogEntry;
#[cfg(feature = "runtime")]
pub use spec::{ContainerSpec, HealthcheckSpec, LogOptions, MountSpec, Resources, Ulimit};
pub use store::ImageSummary;
