//! Commands run inside a running container: `exec` (for `shoal container exec` and the Docker
//! API's), and the healthcheck loop and its probes. A probe that outlives its timeout is told to
//! stop (so the exec helper kills what it runs in the container), then killed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Entry, Inner, LocalEngine, lock};
use crate::container::RunStatus;
use crate::error::{EngineError, Result};
use crate::health::Probe;
use crate::host::ExecOutput;
use crate::util;

impl LocalEngine {
    /// Runs `args` inside running container `name_or_id`, through the runtime it was created
    /// with, and returns its exit code and output once it exits.
    pub async fn exec(&self, name_or_id: &str, args: &[String]) -> Result<ExecOutput> {
        let entry = self.inner.find(name_or_id)?;
        if args.is_empty() {
            return Err(EngineError::invalid(
                "exec",
                "no command given: name what to run in the container",
            ));
        }
        let status = entry.dir.read_state().status;
        if status != RunStatus::Running {
            return Err(EngineError::WrongState {
                id: entry.record.id.clone(),
                state: serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                hint: "start it first: a command runs only in a running container".into(),
            });
        }
        let process =
            self.inner
                .host
                .exec(self.inner.runtime_of(&entry), &entry.record.id, args)?;
        process
            .output
            .await
            .map_err(EngineError::io("running the command in the container"))
    }
}

/// How long an exec helper told to stop (a healthcheck that timed out) gets to kill its probe
/// and exit before it is killed itself.
const PROBE_STOP_GRACE: Duration = Duration::from_secs(2);

/// How much of a probe's output is kept.
const PROBE_OUTPUT_BYTES: usize = 4096;

impl Inner {
    /// Runs the container's healthcheck every interval while it runs, recording each result.
    pub(super) fn start_health(self: &Arc<Self>, entry: &Arc<Entry>) {
        let Some(check) = entry.record.spec.healthcheck.clone() else {
            return;
        };
        let inner = self.clone();
        let task_entry = entry.clone();
        let task = tokio::spawn(async move {
            let entry = task_entry;
            let started = Instant::now();
            let mut interval = tokio::time::interval_at(
                tokio::time::Instant::now() + check.interval,
                check.interval,
            );
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if entry.dir.read_state().status != RunStatus::Running {
                    return;
                }
                let probe = inner.probe(&entry, &check.test, check.timeout).await;
                let mut health = entry.dir.read_health().unwrap_or_default();
                health.record(probe, started.elapsed() < check.start_period, check.retries);
                if let Err(error) = util::write_json(&entry.dir.health(), &health) {
                    tracing::warn!(%error, "could not record health");
                }
            }
        });
        if let Some(old) = lock(&entry.health_task).replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// Runs `test` in the container once, giving it `timeout`.
    pub(super) async fn probe(&self, entry: &Entry, test: &[String], timeout: Duration) -> Probe {
        let start = util::rfc3339(SystemTime::now());
        let (exit_code, output) =
            match self
                .host
                .exec(self.runtime_of(entry), &entry.record.id, test)
            {
                Err(error) => (-1, format!("cannot run the healthcheck: {error}")),
                Ok(mut process) => match tokio::time::timeout(timeout, &mut process.output).await {
                    Err(_) => {
                        // Dropping the output would SIGKILL the exec helper and leave the probe
                        // running in the container; told to stop, the helper kills the probe first
                        // (runc exec passes the signal on to it). The helper is unreaped until its
                        // output completes, so its pid is still its own.
                        if let Some(pid) = process.pid {
                            self.host.kill(pid, libc::SIGTERM);
                            let _ =
                                tokio::time::timeout(PROBE_STOP_GRACE, &mut process.output).await;
                        }
                        (-1, format!("healthcheck timed out after {timeout:?}"))
                    }
                    Ok(Err(error)) => (-1, error.to_string()),
                    Ok(Ok(output)) => (output.code, probe_text(&output)),
                },
            };
        Probe {
            start,
            end: util::rfc3339(SystemTime::now()),
            exit_code,
            output,
        }
    }
}

/// stdout then stderr, cut to at most [`PROBE_OUTPUT_BYTES`] on a character boundary (a probe
/// may print any text, and cutting inside a character would panic).
fn probe_text(output: &ExecOutput) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if text.len() > PROBE_OUTPUT_BYTES {
        let mut end = PROBE_OUTPUT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod probe_text_tests {
    use super::*;

    #[test]
    fn long_output_is_cut_on_a_character_boundary() {
        // 'é' is two bytes, so the limit falls inside a character.
        let output = ExecOutput {
            code: 1,
            stdout: "é".repeat(PROBE_OUTPUT_BYTES).into_bytes(),
            stderr: Vec::new(),
        };
        let text = probe_text(&output);
        assert!(text.len() <= PROBE_OUTPUT_BYTES && text.len() >= PROBE_OUTPUT_BYTES - 1);
        assert!(text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn short_output_is_stdout_then_stderr() {
        let output = ExecOutput {
            code: 0,
            stdout: b"out ".to_vec(),
            stderr: b"err".to_vec(),
        };
        assert_eq!(probe_text(&output), "out err");
    }
}
