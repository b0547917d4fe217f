//! The leader-only loop that drives the orchestration cores: it reads the store, runs the
//! orchestrators, the restart supervisor and the reaper in turn, and commits each one's commands
//! as one transaction. This shell is the only part that reads a clock or touches the store; the
//! decisions are all in [`crate::orchestrator`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use raft_store::{Change, Store, StoreError, Transaction, TxnRejection};
use shoal_proto::api::{Cluster, Node, Service, Task, TaskState, TaskStatus};
use tokio::sync::watch;

use crate::assignment::{Assignment, AssignmentOutcome, plan_assignments};
use crate::error::ManagerError;
use crate::objects::{self, ClusterObject};
use crate::orchestrator::{
    ClusterSnapshot, ClusterTime, Command, GivenUpSlots, RestartSupervisor, TaskHistoryLimit,
    reap_tasks, reconcile_all_services,
};

/// How often a member that does not lead checks whether it has become the leader.
const LEADERSHIP_POLL: Duration = Duration::from_millis(250);
/// A phase whose transaction keeps conflicting with concurrent writes gives up for this step;
/// the next committed change steps again.
const ATTEMPTS_PER_PHASE: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Phase {
    Orchestrators,
    RestartSupervisor,
    Scheduler,
    Reaper,
}

/// What one phase reads: the objects the cores look at, decoded at one applied index.
struct StoreState {
    services: Vec<Service>,
    nodes: Vec<Node>,
    tasks: Vec<Task>,
    cluster: Option<Cluster>,
}

pub struct OrchestrationLoop {
    store: Arc<Store>,
    supervisor: RestartSupervisor,
    /// The supervisor's given-up slots after each step, for the control API's progress
    /// reports.
    given_up: watch::Sender<GivenUpSlots>,
}

impl OrchestrationLoop {
    pub fn new(store: Arc<Store>) -> Self {
        OrchestrationLoop {
            store,
            supervisor: RestartSupervisor::new(),
            given_up: watch::channel(GivenUpSlots::new()).0,
        }
    }

    /// The slots the restart supervisor gave up on, as of the latest step.
    pub fn given_up_slots(&self) -> watch::Receiver<GivenUpSlots> {
        self.given_up.subscribe()
    }

    /// Steps whenever the store commits a change or a delayed restart falls due, while this
    /// member leads, until `stop` changes. On becoming leader, and after a step that failed, it
    /// first waits for every earlier write to be settled ([`Store::write_barrier`]), then steps
    /// again; only losing the store's change stream ends the loop early.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), ManagerError> {
        let mut changes = self
            .store
            .watch(self.store.local_view(|view| view.applied_index()) + 1);
        // Whether every write proposed before now is applied here or never will be. A step
        // reads this member's own state, so it must not run on top of a write whose outcome is
        // still open: one from an earlier leader not yet applied here, or this loop's own that
        // failed (a leader that lost its quorum keeps it and may commit it later), or it would
        // create a slot's task a second time.
        let mut settled = false;
        loop {
            let mut wake_at = None;
            if !self.store.status().is_leader {
                settled = false;
            } else if !settled {
                match self.store.write_barrier().await {
                    Ok(_) => settled = true,
                    Err(error) => {
                        tracing::warn!(%error, "could not settle earlier writes; trying again");
                    }
                }
            }
            if settled {
                match self.step().await {
                    Ok(at) => wake_at = at,
                    // A failed step is taken again on the next turn, once its writes are
                    // settled: ending the loop would freeze every service until the leadership
                    // moved.
                    Err(error) => {
                        settled = false;
                        tracing::warn!(%error, "an orchestration step failed; trying again");
                    }
                }
            }
            let pause = match wake_at {
                Some(at) => at
                    .duration_since_unix_epoch()
                    .saturating_sub(now().duration_since_unix_epoch())
                    .min(LEADERSHIP_POLL),
                None => LEADERSHIP_POLL,
            };
            tokio::select! {
                next = changes.next() => match next {
                    Ok(_) => {}
                    // The loop re-reads the whole store each step, so a watcher that fell behind
                    // only needs a fresh position.
                    Err(StoreError::WatchCompacted { .. }) => {
                        changes = self
                            .store
                            .watch(self.store.local_view(|view| view.applied_index()) + 1);
                    }
                    Err(error) => return Err(error.into()),
                },
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// One step: the three phases in order, each on a fresh read of the store. Returns when the
    /// next step is due even if nothing changes.
    pub async fn step(&mut self) -> Result<Option<ClusterTime>, ManagerError> {
        let mut wake_at: Option<ClusterTime> = None;
        for phase in [
            Phase::Orchestrators,
            Phase::RestartSupervisor,
            Phase::Scheduler,
            Phase::Reaper,
        ] {
            for _ in 0..ATTEMPTS_PER_PHASE {
                let state = self.read_state()?;
                let snapshot = ClusterSnapshot::new(&state.services, &state.nodes, &state.tasks);
                let mut task_ids = raft_store::new_object_id;
                let now = now();
                let (changes, phase_wake_at) = match phase {
                    Phase::Orchestrators => changes_for(
                        &state,
                        reconcile_all_services(
                            &snapshot,
                            self.supervisor.given_up_slots(),
                            now,
                            &mut task_ids,
                        ),
                    ),
                    Phase::RestartSupervisor => {
                        changes_for(&state, self.supervisor.step(&snapshot, now, &mut task_ids))
                    }
                    Phase::Scheduler => (
                        assignment_changes(
                            &state,
                            plan_assignments(&state.nodes, &state.tasks),
                            now,
                        ),
                        None,
                    ),
                    Phase::Reaper => changes_for(
                        &state,
                        reap_tasks(
                            &snapshot,
                            TaskHistoryLimit::of_cluster_spec(
                                state
                                    .cluster
                                    .as_ref()
                                    .and_then(|cluster| cluster.spec.as_ref()),
                            ),
                        ),
                    ),
                };
                if let Some(at) = phase_wake_at {
                    wake_at = Some(wake_at.map_or(at, |earlier| earlier.min(at)));
                }
                if changes.is_empty() {
                    break;
                }
                match self.store.write(Transaction::new(changes)).await {
                    Ok(_) => break,
                    Err(StoreError::Rejected(TxnRejection::Conflict { .. })) => {
                        tracing::debug!(?phase, "a concurrent write changed a task; re-reading");
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let given_up = self.supervisor.given_up_slots();
        self.given_up.send_if_modified(|published| {
            let changed = published != given_up;
            if changed {
                *published = given_up.clone();
            }
            changed
        });
        Ok(wake_at)
    }

    fn read_state(&self) -> Result<StoreState, ManagerError> {
        self.store.local_view(|view| {
            Ok(StoreState {
                services: objects::decode_all(view.list(Service::KIND))?,
                nodes: objects::decode_all(view.list(Node::KIND))?,
                tasks: objects::decode_all(view.list(Task::KIND))?,
                cluster: objects::decode_all::<Cluster>(view.list(Cluster::KIND))?
                    .into_iter()
                    .next(),
            })
        })
    }
}

/// Writes the scheduler's decisions as task status changes (and the node, when assigned),
/// stamped with the time of the step.
fn assignment_changes(
    state: &StoreState,
    assignments: Vec<Assignment>,
    now: ClusterTime,
) -> Vec<Change> {
    assignments
        .into_iter()
        .filter_map(|assignment| {
            let task = state
                .tasks
                .iter()
                .find(|task| task.id == assignment.task_id)?;
            let mut changed = task.clone();
            // As in SwarmKit, why a task waits is its status's error, which `service ps`
            // shows in its ERROR column.
            let (state, message, err) = match assignment.outcome {
                AssignmentOutcome::Assigned { node_id } => {
                    changed.node_id = node_id;
                    (
                        TaskState::Assigned,
                        "scheduler assigned task to node".to_owned(),
                        String::new(),
                    )
                }
                AssignmentOutcome::Pending { message } => (
                    TaskState::Pending,
                    "pending task scheduling".to_owned(),
                    message,
                ),
            };
            changed.status = Some(TaskStatus {
                timestamp: Some(now.to_proto_timestamp()),
                state: state as i32,
                message,
                err,
                ..Default::default()
            });
            Some(objects::update_at(&changed, assignment.read_version))
        })
        .collect()
}

/// The system clock as cluster time: the one place the manager's shells read it, to hand it to
/// the cores or stamp what they write.
pub(crate) fn now() -> ClusterTime {
    ClusterTime::from_duration_since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Turns a core's commands into store changes against the state it read; a wake-up time is
/// not a change but the time of the next step.
fn changes_for(state: &StoreState, commands: Vec<Command>) -> (Vec<Change>, Option<ClusterTime>) {
    let mut changes = Vec::with_capacity(commands.len());
    let mut wake_at = None;
    for command in commands {
        match command {
            Command::CreateTask(task) => changes.push(objects::create(&*task)),
            Command::SetDesiredState {
                task_id,
                read_version,
                desired_state,
            } => {
                if let Some(task) = state.tasks.iter().find(|task| task.id == task_id) {
                    let mut changed = task.clone();
                    changed.desired_state = desired_state as i32;
                    changes.push(objects::update_at(&changed, read_version));
                }
            }
            Command::DeleteTask {
                task_id,
                read_version,
            } => changes.push(Change::Delete {
                kind: Task::KIND.to_owned(),
                id: task_id,
                expected_version: read_version,
            }),
            Command::DeleteService {
                service_id,
                read_version,
            } => changes.push(Change::Delete {
                kind: Service::KIND.to_owned(),
                id: service_id,
                expected_version: read_version,
            }),
            Command::UpdateService(service) => changes.push(objects::update(&*service)),
            Command::WakeUpAt { at } => {
                wake_at = Some(wake_at.map_or(at, |earlier: ClusterTime| earlier.min(at)));
            }
        }
    }
    (changes, wake_at)
}
