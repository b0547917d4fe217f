//! The simulated fleet's engine: containers in memory that "run" from `start` until stopped,
//! with every image present. It records each container's run (task, slot, start and stop on
//! the fleet's shared sequence) and outlives the agent that drives it, as a node's containers
//! outlive a restarted daemon.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use engine::{
    ContainerInfo, ContainerSpec, EngineError, HealthState, LogEntry, RunStatus, ShimState,
};
use tokio::sync::{mpsc, watch};
use worker::{ImageProvider, LABEL_SERVICE_ID, LABEL_TASK_ID, LABEL_TASK_NAME};

use super::slots::ContainerRun;

/// Ticks shared by every engine of a fleet, so that runs on different nodes can be ordered.
#[derive(Debug, Default)]
pub struct FleetClock {
    ticks: AtomicU64,
}

impl FleetClock {
    /// The next tick; each call returns a larger one.
    pub fn tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::SeqCst) + 1
    }
}

struct FakeContainer {
    spec: ContainerSpec,
    state: watch::Sender<ShimState>,
    /// The index of its current run in `EngineState::runs`, while it runs.
    run: Option<usize>,
}

#[derive(Default)]
struct EngineState {
    containers: HashMap<String, FakeContainer>,
    next_id: u64,
    runs: Vec<ContainerRun>,
}

/// One simulated node's engine.
pub struct FakeEngine {
    node_id: String,
    clock: Arc<FleetClock>,
    state: Mutex<EngineState>,
}

impl FakeEngine {
    pub fn new(node_id: &str, clock: Arc<FleetClock>) -> FakeEngine {
        FakeEngine {
            node_id: node_id.to_owned(),
            clock,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, EngineState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every run of every container this engine ever started.
    pub fn runs(&self) -> Vec<ContainerRun> {
        self.state().runs.clone()
    }

    /// How many containers run now.
    pub fn running(&self) -> usize {
        self.state()
            .containers
            .values()
            .filter(|container| container.run.is_some())
            .count()
    }

    /// Ends one running container as if its process had exited with status 1. False when no
    /// container runs.
    pub fn crash_one(&self) -> bool {
        let mut state = self.state();
        let Some(id) = state
            .containers
            .iter()
            .find(|(_, container)| container.run.is_some())
            .map(|(id, _)| id.clone())
        else {
            return false;
        };
        self.end_run(&mut state, &id, 1);
        true
    }

    /// Ends the current run of `container`, if it runs, at the next tick.
    fn end_run(&self, state: &mut EngineState, id: &str, exit_code: i32) {
        let Some(container) = state.containers.get_mut(id) else {
            return;
        };
        let Some(run) = container.run.take() else {
            return;
        };
        container.state.send_modify(|shim| {
            shim.status = RunStatus::Exited;
            shim.exit_code = Some(exit_code);
            shim.pid = None;
        });
        state.runs[run].stopped = Some(self.clock.tick());
    }

    fn info(id: &str, container: &FakeContainer) -> ContainerInfo {
        ContainerInfo {
            id: id.to_owned(),
            name: container.spec.name.clone().unwrap_or_default(),
            image: container.spec.image.clone(),
            image_id: engine::util::Digest::of(container.spec.image.as_bytes()),
            args: Vec::new(),
            created: String::new(),
            state: container.state.borrow().clone(),
            health: None,
            spec: container.spec.clone(),
        }
    }
}

fn not_found(id: &str) -> EngineError {
    EngineError::ContainerNotFound(id.to_owned())
}

impl engine::Engine for FakeEngine {
    async fn create(&self, spec: ContainerSpec) -> engine::Result<String> {
        let mut state = self.state();
        if spec.name.is_some()
            && state
                .containers
                .values()
                .any(|container| container.spec.name == spec.name)
        {
            return Err(EngineError::NameInUse(spec.name.unwrap_or_default()));
        }
        state.next_id += 1;
        let id = format!("{}-c{}", self.node_id, state.next_id);
        state.containers.insert(
            id.clone(),
            FakeContainer {
                spec,
                state: watch::channel(ShimState::default()).0,
                run: None,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> engine::Result<()> {
        let mut state = self.state();
        let started = self.clock.tick();
        let runs = state.runs.len();
        let container = state.containers.get_mut(id).ok_or_else(|| not_found(id))?;
        if container.run.is_some() {
            return Ok(());
        }
        let label = |name: &str| container.spec.labels.get(name).cloned().unwrap_or_default();
        let run = ContainerRun {
            node_id: self.node_id.clone(),
            container_id: id.to_owned(),
            task_id: label(LABEL_TASK_ID),
            service_id: label(LABEL_SERVICE_ID),
            slot: label(LABEL_TASK_NAME),
            started,
            stopped: None,
        };
        container.run = Some(runs);
        container.state.send_modify(|shim| {
            shim.status = RunStatus::Running;
            shim.exit_code = None;
            shim.pid = Some(1);
        });
        state.runs.push(run);
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout: Option<Duration>) -> engine::Result<()> {
        let mut state = self.state();
        if !state.containers.contains_key(id) {
            return Err(not_found(id));
        }
        self.end_run(&mut state, id, 143);
        Ok(())
    }

    async fn remove(&self, id: &str, _force: bool) -> engine::Result<()> {
        let mut state = self.state();
        self.end_run(&mut state, id, 137);
        // Dropping the state sender tells waiters the container is gone.
        state
            .containers
            .remove(id)
            .map(drop)
            .ok_or_else(|| not_found(id))
    }

    async fn inspect(&self, id: &str) -> engine::Result<ContainerInfo> {
        let state = self.state();
        let container = state.containers.get(id).ok_or_else(|| not_found(id))?;
        Ok(FakeEngine::info(id, container))
    }

    async fn list(&self, all: bool) -> engine::Result<Vec<ContainerInfo>> {
        Ok(self
            .state()
            .containers
            .iter()
            .filter(|(_, container)| all || container.run.is_some())
            .map(|(id, container)| FakeEngine::info(id, container))
            .collect())
    }

    async fn wait(&self, id: &str) -> engine::Result<ShimState> {
        let mut state = {
            let engine = self.state();
            let container = engine.containers.get(id).ok_or_else(|| not_found(id))?;
            container.state.subscribe()
        };
        loop {
            if state.borrow_and_update().status != RunStatus::Running {
                return Ok(state.borrow().clone());
            }
            if state.changed().await.is_err() {
                return Err(not_found(id));
            }
        }
    }

    async fn logs(
        &self,
        id: &str,
        _follow: bool,
        _tail: Option<usize>,
    ) -> engine::Result<mpsc::Receiver<engine::Result<LogEntry>>> {
        if !self.state().containers.contains_key(id) {
            return Err(not_found(id));
        }
        // No output: the channel closes at once.
        Ok(mpsc::channel(1).1)
    }

    async fn health(&self, id: &str) -> engine::Result<Option<HealthState>> {
        if !self.state().containers.contains_key(id) {
            return Err(not_found(id));
        }
        Ok(None)
    }
}

impl ImageProvider for FakeEngine {
    async fn has_image(&self, _reference: &str) -> engine::Result<bool> {
        Ok(true)
    }

    async fn pull(&self, _reference: &str) -> engine::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::Engine as _;

    fn task_container(task: &str, slot: &str) -> ContainerSpec {
        ContainerSpec {
            name: Some(format!("{slot}.{task}")),
            image: "busybox".to_owned(),
            labels: [
                (LABEL_TASK_ID.to_owned(), task.to_owned()),
                (LABEL_SERVICE_ID.to_owned(), "web".to_owned()),
                (LABEL_TASK_NAME.to_owned(), slot.to_owned()),
            ]
            .into(),
            ..ContainerSpec::default()
        }
    }

    #[tokio::test]
    async fn runs_are_recorded_from_start_to_stop_and_removal() {
        let clock = Arc::new(FleetClock::default());
        let engine = FakeEngine::new("node-a", Arc::clone(&clock));
        let first = engine.create(task_container("t1", "web.1")).await.unwrap();
        let second = engine.create(task_container("t2", "web.2")).await.unwrap();
        engine.start(&first).await.unwrap();
        engine.start(&second).await.unwrap();
        assert_eq!(engine.running(), 2);
        engine.stop(&first, None).await.unwrap();
        assert_eq!(engine.wait(&first).await.unwrap().exit_code, Some(143));
        engine.remove(&second, true).await.unwrap();
        assert_eq!(engine.running(), 0);
        let runs = engine.runs();
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (runs[0].task_id.as_str(), runs[0].slot.as_str()),
            ("t1", "web.1")
        );
        assert_eq!((runs[0].started, runs[0].stopped), (1, Some(3)));
        assert_eq!((runs[1].started, runs[1].stopped), (2, Some(4)));
        assert!(engine.list(true).await.unwrap().len() == 1);
    }

    #[tokio::test]
    async fn a_name_in_use_is_refused() {
        let engine = FakeEngine::new("node-a", Arc::default());
        engine.create(task_container("t1", "web.1")).await.unwrap();
        let refused = engine.create(task_container("t1", "web.1")).await;
        assert!(
            matches!(refused, Err(EngineError::NameInUse(_))),
            "{refused:?}"
        );
    }
}
