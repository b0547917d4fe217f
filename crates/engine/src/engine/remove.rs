//! `remove` (refused for a running container unless forced), and the tidying up after a shim
//! that died without reporting.

use std::sync::Arc;
use std::time::SystemTime;

use super::stop::KILL_WAIT;
use super::{Entry, Inner, blocking, lock};
use crate::container::{RunStatus, ShimState};
use crate::error::{EngineError, Result};
use crate::spec;
use crate::util;

impl Inner {
    pub(super) async fn remove(&self, entry: &Arc<Entry>, force: bool) -> Result<()> {
        if entry.dir.read_state().status == RunStatus::Running {
            if !force {
                return Err(EngineError::WrongState {
                    id: entry.record.id.clone(),
                    state: "running".into(),
                    hint: "stop it first, or remove it with -f".into(),
                });
            }
            self.signal(entry, libc::SIGKILL)?;
            if !self.wait_exit(entry, KILL_WAIT).await {
                return Err(EngineError::Runtime(format!(
                    "container {} survived SIGKILL",
                    entry.record.id
                )));
            }
        }
        let _op = entry.op.lock().await;
        entry.stop_health();
        let leftovers = self.host.is_mounted(&entry.dir.rootfs())
            || self.host.is_mounted(&entry.dir.files())
            || self
                .host
                .has_runtime_state(&self.config.data_root, &entry.record.id);
        if leftovers {
            self.run_cleanup(&entry.record.id).await;
        }
        let root = entry.dir.root.clone();
        let host = self.host.clone();
        blocking(move || host.remove_dir_all(&root)).await?;
        lock(&self.containers).remove(&entry.record.id);
        Ok(())
    }

    /// Records that a container's shim died without reporting, kills what is left of the
    /// container and releases its mounts and cgroups.
    pub(super) async fn mark_lost(&self, entry: &Entry, mut state: ShimState) {
        if let Some(pid) = state.pid
            && self
                .host
                .process_cgroup(pid)
                .contains(&spec::cgroup_path(&entry.record.id))
        {
            self.host.kill(pid, libc::SIGKILL);
        }
        self.run_cleanup(&entry.record.id).await;
        state.status = RunStatus::Exited;
        state.shim_pid = None;
        state.pid = None;
        state
            .finished_at
            .get_or_insert_with(|| util::rfc3339(SystemTime::now()));
        state
            .error
            .get_or_insert_with(|| "the shim died; exit status unknown".to_owned());
        if let Err(error) = util::write_json(&entry.dir.state(), &state) {
            tracing::warn!(%error, "could not record a lost container");
        }
    }
}
