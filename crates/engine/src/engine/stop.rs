//! `stop`: the container's stop signal, a grace period, then SIGKILL; and the signalling and
//! waiting that `remove` and `wait` share.

use std::time::Duration;

use super::{Entry, Inner};
use crate::container::RunStatus;
use crate::error::{EngineError, Result};

/// How long a container gets to die after SIGKILL before the engine gives up on it.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(30);

impl Inner {
    /// Signals the container's init, through a pidfd opened while the shim still reports it
    /// running, so a recycled pid is never hit. Returns whether a signal was sent.
    pub(super) fn signal(&self, entry: &Entry, signal: i32) -> Result<bool> {
        let state = entry.dir.read_state();
        let (RunStatus::Running, Some(pid)) = (state.status, state.pid) else {
            return Ok(false);
        };
        self.host
            .signal_pid(pid, signal, &|| entry.dir.read_state().pid == Some(pid))
    }

    /// Waits up to `timeout` for the shim to report the container exited.
    pub(super) async fn wait_exit(&self, entry: &Entry, timeout: Duration) -> bool {
        let mut changed = entry.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if entry.dir.read_state().status != RunStatus::Running {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return entry.dir.read_state().status != RunStatus::Running,
            }
        }
    }

    pub(super) async fn stop(&self, entry: &Entry, timeout: Option<Duration>) -> Result<()> {
        let _op = entry.op.lock().await;
        let grace = timeout.unwrap_or_else(|| entry.record.stop_timeout());
        if !self.signal(entry, entry.record.stop_signal)? {
            return Ok(());
        }
        if self.wait_exit(entry, grace).await {
            return Ok(());
        }
        tracing::info!(id = %entry.record.id, "grace period over; killing");
        self.signal(entry, libc::SIGKILL)?;
        if self.wait_exit(entry, KILL_WAIT).await {
            Ok(())
        } else {
            Err(EngineError::Runtime(format!(
                "container {} survived SIGKILL; see {}",
                entry.record.id,
                entry.dir.shim_log().display()
            )))
        }
    }
}
