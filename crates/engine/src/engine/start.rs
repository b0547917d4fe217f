//! `start`: hands the container to a new shim (which mounts its root filesystem and runs it),
//! then watches the shim so waiters learn when the container exits and `--rm` is honoured.

use std::sync::Arc;

use super::{Entry, Inner, lock};
use crate::container::RunStatus;
use crate::error::{EngineError, Result};
use crate::health::HealthState;
use crate::shim::ShimLaunch;
use crate::spec::MountSpec;
use crate::util;

impl Inner {
    pub(super) async fn start(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<()> {
        let _op = entry.op.lock().await;
        let launch = launch_request(entry)?;
        if entry.record.spec.healthcheck.is_some() {
            util::write_json(&entry.dir.health(), &HealthState::default())?;
        }
        let line = self.host.launch_shim(&entry.record.id, launch).await?;
        let shim_error = |reason: String| EngineError::Shim {
            id: entry.record.id.clone(),
            reason,
            log: entry.dir.shim_log(),
        };
        match line.trim_end().split_once(' ') {
            Some(("ok", _pid)) => {
                self.watch_shim(entry);
                self.start_health(entry);
                Ok(())
            }
            Some(("error", reason)) => Err(shim_error(reason.to_owned())),
            _ => Err(shim_error(format!("the shim gave no answer ({line:?})"))),
        }
    }

    /// Watches the shim until it exits; then notifies waiters and handles `--rm`.
    pub(super) fn watch_shim(self: &Arc<Self>, entry: &Arc<Entry>) {
        let inner = self.clone();
        let entry = entry.clone();
        tokio::spawn(async move {
            if let Some(pid) = entry.dir.read_state().shim_pid {
                inner.host.wait_pid_exit(pid).await;
            }
            let state = entry.dir.read_state();
            if state.status == RunStatus::Running {
                inner.mark_lost(&entry, state).await;
            }
            entry.stop_health();
            entry.changed.send_modify(|n| *n += 1);
            tracing::info!(id = %entry.record.id, "container exited");
            if entry.record.spec.auto_remove
                && let Err(error) = inner.remove(&entry, true).await
            {
                tracing::warn!(id = %entry.record.id, %error, "auto-remove failed");
            }
        });
    }
}

/// The shim's launch request for `entry`, or why it cannot start: it runs already, or its
/// `File` mounts died with an earlier daemon.
fn launch_request(entry: &Entry) -> Result<Vec<u8>> {
    if entry.dir.read_state().status == RunStatus::Running {
        return Err(EngineError::WrongState {
            id: entry.record.id.clone(),
            state: "running".into(),
            hint: "it is already started".into(),
        });
    }
    let has_files = entry
        .record
        .spec
        .mounts
        .iter()
        .any(|m| matches!(m, MountSpec::File { .. }));
    if has_files && lock(&entry.file_contents).is_empty() {
        return Err(EngineError::WrongState {
            id: entry.record.id.clone(),
            state: "exited".into(),
            hint: "its file mounts were only in the memory of an earlier daemon; recreate the container".into(),
        });
    }
    let launch = ShimLaunch {
        files: lock(&entry.file_contents).clone(),
    };
    serde_json::to_vec(&launch).map_err(|e| EngineError::invalid("launch request", e))
}
