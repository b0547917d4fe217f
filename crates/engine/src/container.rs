//! A container on disk: its directory layout, the record the engine writes at create time and
//! the runtime state the shim keeps up to date. The daemon holds no state the disk lacks, which
//! is what lets a restarted daemon adopt running containers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::health::HealthState;
use crate::spec::ContainerSpec;
use crate::util::Digest;

/// What the engine decided at create time. Written once; never holds `File` mount contents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// The spec as given, `File` contents stripped.
    pub spec: ContainerSpec,
    /// The image ID it was created from.
    pub image_id: Digest,
    /// Unpacked layers, bottom first.
    pub layer_dirs: Vec<PathBuf>,
    /// The resolved process arguments.
    pub args: Vec<String>,
    /// The resolved stop signal number.
    pub stop_signal: i32,
}

impl ContainerRecord {
    /// The grace period between the stop signal and SIGKILL.
    pub fn stop_timeout(&self) -> Duration {
        self.spec.stop_timeout.unwrap_or(Duration::from_secs(10))
    }
}

/// Lifecycle as the shim reports it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Never started (or the shim has not reported yet).
    #[default]
    Created,
    /// The container's init is alive.
    Running,
    /// It exited; see the exit code.
    Exited,
}

/// The runtime state file, written by the shim (and by the engine when it finds a shim gone).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ShimState {
    /// Lifecycle.
    pub status: RunStatus,
    /// The shim's pid while it runs.
    pub shim_pid: Option<i32>,
    /// The container init's host pid while it runs.
    pub pid: Option<i32>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// Exit code; 128 + signal when killed.
    pub exit_code: Option<i32>,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// Why the container failed to start or was lost.
    pub error: Option<String>,
}

/// Paths inside `<data-root>/containers/<id>`.
#[derive(Clone, Debug)]
pub struct ContainerDir {
    /// The directory itself; also the OCI bundle (it holds `config.json`).
    pub root: PathBuf,
}

impl ContainerDir {
    /// The directory of container `id`.
    pub fn new(data_root: &Path, id: &str) -> ContainerDir {
        ContainerDir {
            root: data_root.join("containers").join(id),
        }
    }
    /// The engine's record.
    pub fn record(&self) -> PathBuf {
        self.root.join("container.json")
    }
    /// The shim's state.
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// The last healthcheck results.
    pub fn health(&self) -> PathBuf {
        self.root.join("health.json")
    }
    /// The OCI runtime spec.
    pub fn oci_config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// The overlay mount point.
    pub fn rootfs(&self) -> PathBuf {
        self.root.join("rootfs")
    }
    /// overlayfs upper directory: the container's writes.
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }
    /// overlayfs work directory.
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
    /// The tmpfs for `File` mounts.
    pub fn files(&self) -> PathBuf {
        self.root.join("files")
    }
    /// The shim's own diagnostics.
    pub fn shim_log(&self) -> PathBuf {
        self.root.join("shim.log")
    }

    /// Reads the state; a missing file means never started.
    pub fn read_state(&self) -> ShimState {
        crate::util::read_json(&self.state()).unwrap_or_default()
    }

    /// Reads the health file, if any.
    pub fn read_health(&self) -> Option<HealthState> {
        crate::util::read_json(&self.health()).ok()
    }
}
