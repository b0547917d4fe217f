//! What the orchestration cores ask the async shell to do: concrete store changes, plus wake-ups.

use std::collections::BTreeSet;
use std::fmt;

use shoal_proto::api::{Service, Task, TaskState};

use super::task_lifecycle::read_version;
use super::time::ClusterTime;

/// One change the shell carries out. The commands one core returns from one step form one
/// store transaction when they fit in one, and otherwise several, each holding whole
/// [`super::commit_groups`]; on a version conflict the shell re-reads the store and runs the
/// step again.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Creates this task; it is complete apart from the store's bookkeeping (`meta.version`).
    CreateTask(Box<Task>),
    /// Sets a task's desired state, which belongs to managers. `read_version` is the
    /// `meta.version.index` the decision was based on, for optimistic concurrency.
    SetDesiredState {
        /// The task to change.
        task_id: String,
        /// The task version the decision was based on.
        read_version: u64,
        /// The new desired state.
        desired_state: TaskState,
    },
    /// Deletes a task from the store; only ever emitted for tasks no worker still runs.
    DeleteTask {
        /// The task to delete.
        task_id: String,
        /// The task version the decision was based on.
        read_version: u64,
    },
    /// Deletes a service that was marked `pending_delete` and has no tasks left.
    DeleteService {
        /// The service to delete.
        service_id: String,
        /// The service version the decision was based on.
        read_version: u64,
    },
    /// Writes a service's update state, or its rollback to the previous spec, at the version
    /// in its `meta` (the version the decision was based on). Only the updater emits it.
    UpdateService(Box<Service>),
    /// Asks the shell to run the emitting core again no later than `at`, because something
    /// (a delayed restart) becomes due then even if the store does not change.
    WakeUpAt {
        /// When the next step is due.
        at: ClusterTime,
    },
}

/// Renders commands one per line, compactly, for snapshot-style test assertions and logs.
impl fmt::Display for Command {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::CreateTask(task) => {
                write!(
                    formatter,
                    "create {} service={} slot={} node={:?} desired={}",
                    task.id,
                    task.service_id,
                    task.slot,
                    task.node_id,
                    task.desired_state().as_str_name()
                )
            }
            Command::SetDesiredState {
                task_id,
                read_version,
                desired_state,
            } => write!(
                formatter,
                "desire {task_id}@{read_version} {}",
                desired_state.as_str_name()
            ),
            Command::DeleteTask {
                task_id,
                read_version,
            } => write!(formatter, "delete task {task_id}@{read_version}"),
            Command::DeleteService {
                service_id,
                read_version,
            } => write!(formatter, "delete service {service_id}@{read_version}"),
            Command::UpdateService(service) => {
                let status = service.update_status.clone().unwrap_or_default();
                write!(
                    formatter,
                    "update service {}@{} spec={} {} {:?}",
                    service.id,
                    service
                        .meta
                        .as_ref()
                        .and_then(|meta| meta.version.as_ref())
                        .map_or(0, |version| version.index),
                    service.spec_version.map_or(0, |version| version.index),
                    status.state().as_str_name(),
                    status.message
                )
            }
            Command::WakeUpAt { at } => write!(formatter, "wake up at {at}"),
        }
    }
}

/// Hands out ids for new tasks. The shell uses random ids; tests use a counter so that the
/// commands they assert on are deterministic.
pub trait TaskIdGenerator {
    /// Returns an id no task has had before.
    fn next_task_id(&mut self) -> String;
}

impl<Generate: FnMut() -> String> TaskIdGenerator for Generate {
    fn next_task_id(&mut self) -> String {
        self()
    }
}

/// Ids `PREFIX000001`, `PREFIX000002`, ...: deterministic, for tests and simulations.
#[derive(Debug, Clone)]
pub struct SequentialTaskIds {
    prefix: String,
    issued: u64,
}

impl SequentialTaskIds {
    /// A generator whose first id is `{prefix}000001`; the padding keeps ids in creation order when sorted as strings.
    pub fn new(prefix: impl Into<String>) -> SequentialTaskIds {
        SequentialTaskIds {
            prefix: prefix.into(),
            issued: 0,
        }
    }
}

impl TaskIdGenerator for SequentialTaskIds {
    fn next_task_id(&mut self) -> String {
        self.issued += 1;
        format!("{}{:06}", self.prefix, self.issued)
    }
}

/// Emits a desired-state change that stops `task` (SHUTDOWN, or REMOVE for a deleted
/// service), at most once per task per step: `stopped_this_step` remembers the tasks already
/// stopped so one transaction never changes the same task twice.
pub(crate) fn stop_task_once(
    task: &Task,
    desired_state: TaskState,
    commands: &mut Vec<Command>,
    stopped_this_step: &mut BTreeSet<String>,
) {
    if stopped_this_step.insert(task.id.clone()) {
        commands.push(Command::SetDesiredState {
            task_id: task.id.clone(),
            read_version: read_version(task),
            desired_state,
        });
    }
}
