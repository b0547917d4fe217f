//! Carries out the reconciler's engine commands, each as its own task so that a hundred
//! containers start side by side, and watches running containers for their exit and health.
//! Every command is answered with exactly one result, timeouts included.

use std::sync::Arc;
use std::time::Duration;

use engine::{EngineError, HealthStatus, RunStatus};
use tokio::sync::{Semaphore, mpsc};

use super::Input;
use super::images::{ImageProvider, ImagePuller};
use crate::networking::{TaskNetworking, TaskNetworks};
use crate::reconciler::{Command, CommandOutcome, EngineObservation, Event};

/// Engine calls that set up or tear down containers (create, start, remove) running at once.
/// They spawn shims, mount overlays and write container directories. Measured with
/// `LocalEngine` on 2 cores (100 busybox containers, create then start): 28/s one at a time,
/// 86–112/s with 4, 8, 16 or 32 at once, 86–97/s with all 100; 16 keeps that plateau with room
/// for more cores. Stops are not counted: they mostly wait out grace periods.
const CONCURRENT_ENGINE_CALLS: usize = 16;
/// Longest a create, start or remove may take before it is answered as failed.
const ENGINE_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Time a stop may take beyond its grace period (the kill and the shim's report).
const STOP_TIMEOUT_BEYOND_GRACE: Duration = Duration::from_secs(60);
/// How often a container with a healthcheck has its health read.
const HEALTH_POLL_PERIOD: Duration = Duration::from_secs(1);
/// Pause before waiting again after the engine failed to wait for a container.
const WAIT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The exit code reported for a container whose exit status was lost, as the reconciler's
/// adoption does for one found exited without a code.
const LOST_EXIT_CODE: i32 = -1;
/// The mode of the resolv.conf and hosts files a networked task's container gets.
const NETWORK_FILE_MODE: u32 = 0o644;

/// Runs engine commands against one engine, sending results back to the reconciler loop.
pub(super) struct Executor<E> {
    engine: Arc<E>,
    images: ImagePuller<E>,
    networking: Arc<dyn TaskNetworking>,
    engine_calls: Semaphore,
    results: mpsc::UnboundedSender<Input>,
}

impl<E: engine::Engine + ImageProvider> Executor<E> {
    pub(super) fn new(
        engine: Arc<E>,
        networking: Arc<dyn TaskNetworking>,
        results: mpsc::UnboundedSender<Input>,
    ) -> Executor<E> {
        Executor {
            images: ImagePuller::new(Arc::clone(&engine)),
            engine,
            networking,
            engine_calls: Semaphore::new(CONCURRENT_ENGINE_CALLS),
            results,
        }
    }

    /// Carries out one engine command and sends its result (and, for a container found gone,
    /// a `Missing` observation first).
    pub(super) async fn run(&self, command: Command) {
        let outcome = match command {
            Command::CreateContainer {
                task_id,
                spec,
                networks,
            } => {
                let result = self.create(*spec, networks.as_deref()).await;
                if let Err(error) = &result {
                    tracing::warn!(task = %task_id, %error, "creating the container failed");
                }
                CommandOutcome::CreateFinished { task_id, result }
            }
            Command::StartContainer {
                task_id,
                container_id,
            } => {
                let result = self
                    .bounded(
                        "starting the container",
                        ENGINE_CALL_TIMEOUT,
                        self.engine.start(&container_id),
                    )
                    .await;
                let result = match self.noting_missing(&container_id, result) {
                    Ok(()) => Ok(self.pid_of(&container_id).await),
                    Err(error) => Err(error),
                };
                CommandOutcome::StartFinished { task_id, result }
            }
            Command::StopContainer {
                task_id,
                container_id,
                grace_period,
            } => {
                // Outside the stop's bound: the grace period starts with the signal.
                self.networking.drained(&task_id).await;
                let result = with_timeout(
                    "stopping the container",
                    grace_period + STOP_TIMEOUT_BEYOND_GRACE,
                    self.engine.stop(&container_id, Some(grace_period)),
                )
                .await;
                let result = self.noting_missing(&container_id, result);
                CommandOutcome::StopFinished { task_id, result }
            }
            Command::RemoveContainer {
                task_id,
                container_id,
            } => {
                let result = match self
                    .bounded(
                        "removing the container",
                        ENGINE_CALL_TIMEOUT,
                        self.engine.remove(&container_id, true),
                    )
                    .await
                {
                    // Gone already is what removal wanted.
                    Err(EngineCallError::Engine(EngineError::ContainerNotFound(_))) => Ok(()),
                    other => other.map_err(|error| error.to_string()),
                };
                CommandOutcome::RemoveFinished {
                    task_id,
                    container_id,
                    result,
                }
            }
            Command::PersistAssignments(_)
            | Command::ReportStatuses { .. }
            | Command::SetNetworkEndpoints(_) => {
                // The reconciler loop handles these itself, in order; they never reach here.
                return;
            }
        };
        self.send(Event::CommandFinished(outcome));
    }

    async fn create(
        &self,
        mut spec: engine::ContainerSpec,
        networks: Option<&TaskNetworks>,
    ) -> Result<String, String> {
        // The image comes first and outside the bound: a pull can take minutes, and tasks whose
        // image is present should not wait behind it.
        self.images.ensure_present(&spec.image).await?;
        let prepared = match networks {
            Some(networks) => tokio::time::timeout(
                ENGINE_CALL_TIMEOUT,
                self.networking.prepare(networks),
            )
            .await
            .map_err(|_| {
                format!(
                    "preparing the task's networks took longer than {ENGINE_CALL_TIMEOUT:?}; gave up waiting"
                )
            })?
            .map_err(|error| format!("preparing the task's networks failed: {error}"))?,
            None => None,
        };
        if let Some(prepared) = prepared {
            spec.network_namespace = Some(prepared.netns);
            for (target, contents) in [
                ("/etc/resolv.conf", prepared.resolv_conf),
                ("/etc/hosts", prepared.hosts),
            ] {
                spec.mounts.push(engine::MountSpec::File {
                    target: target.to_owned(),
                    contents,
                    mode: NETWORK_FILE_MODE,
                    uid: 0,
                    gid: 0,
                });
            }
        }
        self.bounded(
            "creating the container",
            ENGINE_CALL_TIMEOUT,
            self.engine.create(spec),
        )
        .await
        .map_err(|error| error.to_string())
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        timeout: Duration,
        call: impl Future<Output = engine::Result<T>>,
    ) -> Result<T, EngineCallError> {
        // The semaphore is never closed; were it, calls would simply run unbounded.
        let _permit = self.engine_calls.acquire().await.ok();
        with_timeout(what, timeout, call).await
    }

    /// Turns an engine result into the reconciler's, first reporting the container as missing
    /// when the engine no longer knows it: retrying an operation on it would never succeed.
    fn noting_missing<T>(
        &self,
        container_id: &str,
        result: Result<T, EngineCallError>,
    ) -> Result<T, String> {
        if let Err(EngineCallError::Engine(EngineError::ContainerNotFound(_))) = &result {
            self.send(Event::Engine(EngineObservation::Missing {
                container_id: container_id.to_owned(),
            }));
        }
        result.map_err(|error| error.to_string())
    }

    /// The started container's host pid, for the task's status. Best effort: a container
    /// that already exited, or an inspect that fails, leaves the status without one.
    async fn pid_of(&self, container_id: &str) -> Option<i32> {
        let info = self
            .bounded(
                "inspecting the started container",
                ENGINE_CALL_TIMEOUT,
                self.engine.inspect(container_id),
            )
            .await
            .ok()?;
        info.state
            .pid
            .filter(|_| info.state.status == engine::RunStatus::Running)
    }

    fn send(&self, event: Event) {
        // Nobody listens once the agent has stopped; the result no longer matters then.
        let _ = self.results.send(Input::Event(event));
    }
}

/// Why an engine call gave no result.
#[derive(Debug)]
enum EngineCallError {
    Engine(EngineError),
    TimedOut {
        what: &'static str,
        timeout: Duration,
    },
}

impl std::fmt::Display for EngineCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineCallError::Engine(error) => error.fmt(f),
            EngineCallError::TimedOut { what, timeout } => {
                write!(f, "{what} took longer than {timeout:?}; gave up waiting")
            }
        }
    }
}

async fn with_timeout<T>(
    what: &'static str,
    timeout: Duration,
    call: impl Future<Output = engine::Result<T>>,
) -> Result<T, EngineCallError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(EngineCallError::Engine),
        Err(_) => Err(EngineCallError::TimedOut { what, timeout }),
    }
}

/// Waits for a container to stop running and reports how it ended; meanwhile, when
/// `poll_health` is set, reads its health about every second and reports each change.
pub(super) async fn watch_container<E: engine::Engine>(
    engine: Arc<E>,
    container_id: String,
    poll_health: bool,
    results: mpsc::UnboundedSender<Input>,
) {
    let send = |observation| {
        let _ = results.send(Input::Event(Event::Engine(observation)));
    };
    let mut last_health: Option<HealthStatus> = None;
    let mut health_polls = tokio::time::interval(HEALTH_POLL_PERIOD);
    health_polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ended = {
            let wait = engine.wait(&container_id);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    ended = &mut wait => break ended,
                    _ = health_polls.tick(), if poll_health => {
                        match engine.health(&container_id).await {
                            Ok(Some(health)) if last_health != Some(health.status) => {
                                last_health = Some(health.status);
                                send(EngineObservation::HealthChanged {
                                    container_id: container_id.clone(),
                                    health: health.status,
                                });
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::debug!(container = %container_id, %error, "reading health failed");
                            }
                        }
                    }
                }
            }
        };
        // A wait that ends without an exit means the container's state went away under it
        // (removed behind the agent's back); the engine says whether it still exists.
        let ended = match ended {
            Ok(state) if state.status != RunStatus::Exited => {
                engine.inspect(&container_id).await.map(|info| info.state)
            }
            other => other,
        };
        match ended {
            // Still running after all: the wait ended early, so it starts over (paced, in
            // case the engine keeps ending it).
            Ok(state) if state.status == RunStatus::Running => {
                tokio::time::sleep(WAIT_RETRY_DELAY).await;
            }
            Ok(state) => {
                send(EngineObservation::Exited {
                    container_id,
                    exit_code: state.exit_code.unwrap_or(LOST_EXIT_CODE),
                    oom_killed: state.oom_killed,
                });
                return;
            }
            Err(EngineError::ContainerNotFound(_)) => {
                send(EngineObservation::Missing { container_id });
                return;
            }
            Err(error) => {
                tracing::warn!(container = %container_id, %error, "waiting for the container failed; waiting again");
                tokio::time::sleep(WAIT_RETRY_DELAY).await;
            }
        }
    }
}
