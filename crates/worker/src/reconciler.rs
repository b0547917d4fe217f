//! The worker's reconciler: a pure state machine that takes the dispatcher's assignment sets,
//! the engine's observations and the results of earlier commands, and emits the engine calls,
//! persistence and status reports that bring the node to what the managers asked for.
//!
//! Invariants, checked by the tests after every step:
//! - a task's observed state only moves forward;
//! - at most one `CreateContainer` is ever emitted per task, and none before the engine's list of
//!   existing containers has been seen, so a restart adopts containers instead of duplicating them;
//! - all status changes of one step leave in one `ReportStatuses` command, preceded by the
//!   `PersistAssignments` that makes the reported floor durable;
//! - `SetNetworkEndpoints` carries every networked task whose container is being made or exists
//!   and has not exited, each with whether it serves; it is emitted, first among the step's commands, only
//!   when that changed, and never before the engine's containers are known (an empty set then
//!   would tear down the namespaces of the containers a restarted daemon is about to adopt).
//!
//! The reconciler reads no clock: time arrives in `Event::Tick` (which also paces retries) and in
//! `Event::Clock` at the start of every step, and status timestamps carry the latest value.
//!
//! What the async shell that drives it must do:
//! - run each step's commands in order;
//! - when a `PersistAssignments` fails, not send that step's report, and answer the report with
//!   an error instead: otherwise a restart could report a lower state than the manager applied;
//! - answer every command with exactly one result, timeouts included, or its task stays stuck;
//! - hand each `SetNetworkEndpoints` to the node's networking in order, before the engine
//!   commands of the same step;
//! - feed events that queued up together through `step_batch`;
//! - send a `Tick` about once a second.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use engine::{ContainerSpec, HealthStatus};
use shoal_proto::api;
use shoal_proto::api::TaskState;

use crate::convert::{
    LABEL_TASK_ID, TaskPayloads, container_spec_for_task, host_published, task_has_healthcheck,
    task_networks,
};
use crate::networking::{LocalEndpoint, TaskNetworks};
use crate::store::PersistedAssignments;

/// The full set of tasks the dispatcher assigns to this node, with the secrets and configs they
/// reference. Each set replaces the previous one; a set whose version is not newer than the last
/// accepted one is stale and dropped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AssignmentSet {
    /// Increases with every set the dispatcher sends.
    pub version: u64,
    /// Every task assigned to this node.
    pub tasks: Vec<api::Task>,
    /// Secret and config contents the tasks reference.
    pub payloads: TaskPayloads,
}

/// A container's run state as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerRunState {
    /// Created, never started.
    Created,
    /// Its process runs.
    Running,
    /// It exited.
    Exited {
        /// Exit code; 128 + signal when killed.
        exit_code: i32,
        /// The kernel's OOM killer killed a process of the container.
        oom_killed: bool,
    },
}

/// A container the engine already has, as listed when the agent starts.
#[derive(Clone, Debug, PartialEq)]
pub struct ExistingContainer {
    /// The engine's container id.
    pub container_id: String,
    /// Its labels; swarm task containers carry [`LABEL_TASK_ID`].
    pub labels: BTreeMap<String, String>,
    /// Its run state.
    pub run_state: ContainerRunState,
    /// Its health, if it has a healthcheck.
    pub health: Option<HealthStatus>,
    /// Its init's host pid, while it runs and the engine knows it.
    pub pid: Option<i32>,
}

/// Something the engine saw happen to a container, by container id.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineObservation {
    /// The container's process started.
    Started {
        /// The container.
        container_id: String,
    },
    /// The container's process exited.
    Exited {
        /// The container.
        container_id: String,
        /// Exit code; 128 + signal when killed.
        exit_code: i32,
        /// The kernel's OOM killer killed a process of the container.
        oom_killed: bool,
    },
    /// The healthcheck's verdict changed.
    HealthChanged {
        /// The container.
        container_id: String,
        /// The new verdict.
        health: HealthStatus,
    },
    /// The container is gone (removed behind the agent's back, or its state was lost).
    Missing {
        /// The container.
        container_id: String,
    },
}

/// The result of a command the shell carried out. Errors are carried as text: the reconciler
/// only reports them, it never branches on their kind.
#[derive(Clone, Debug, PartialEq)]
pub enum CommandOutcome {
    /// `CreateContainer` finished; on success, with the new container's id.
    CreateFinished {
        /// The task.
        task_id: String,
        /// The container id, or why creation failed.
        result: Result<String, String>,
    },
    /// `StartContainer` finished.
    StartFinished {
        /// The task.
        task_id: String,
        /// Success, with the container init's host pid when the engine told it, or why
        /// starting failed.
        result: Result<Option<i32>, String>,
    },
    /// `StopContainer` finished.
    StopFinished {
        /// The task.
        task_id: String,
        /// Success, or why stopping failed.
        result: Result<(), String>,
    },
    /// `RemoveContainer` finished. The shell reports a container that was already gone as
    /// success.
    RemoveFinished {
        /// The task.
        task_id: String,
        /// The container that was to be removed.
        container_id: String,
        /// Success, or why removal failed.
        result: Result<(), String>,
    },
    /// `ReportStatuses` finished.
    ReportFinished {
        /// The batch, as the command numbered it.
        batch_id: u64,
        /// Success, or why the dispatcher did not take the batch.
        result: Result<(), String>,
    },
    /// `PersistAssignments` finished.
    PersistFinished {
        /// Success, or why the store could not be written.
        result: Result<(), String>,
    },
}

/// Everything the reconciler reacts to.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new full assignment set from the dispatcher.
    Assignments(AssignmentSet),
    /// The engine's containers, listed once when the agent starts. Nothing is created before
    /// this arrives.
    ContainersListed(Vec<ExistingContainer>),
    /// An engine observation.
    Engine(EngineObservation),
    /// A command's result.
    CommandFinished(CommandOutcome),
    /// Time passes: retries failed stops, removals, reports and persistence.
    Tick {
        /// Wall-clock time as the shell read it.
        now_since_unix_epoch: Duration,
    },
    /// The time the shell read as it began a step: the time states observed in the step are
    /// stamped with (a task's RUNNING time starts the manager's update monitor). Retries wait
    /// for ticks, not for this.
    Clock {
        /// Wall-clock time as the shell read it.
        now_since_unix_epoch: Duration,
    },
}

/// What the shell must do. Commands of one step are carried out in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Creates (not starts) the task's container; answered by `CreateFinished`. The shell pulls
    /// the image first if the engine lacks it, and for a task on networks has the node's
    /// networking prepare them, the container joining the namespace it returns.
    CreateContainer {
        /// The task.
        task_id: String,
        /// The engine spec.
        spec: Box<ContainerSpec>,
        /// The task's networks, for a task on any.
        networks: Option<Box<TaskNetworks>>,
    },
    /// Starts the container; answered by `StartFinished`.
    StartContainer {
        /// The task.
        task_id: String,
        /// The container.
        container_id: String,
    },
    /// Sends the stop signal, waits up to the grace period, then kills; answered by
    /// `StopFinished`.
    StopContainer {
        /// The task.
        task_id: String,
        /// The container.
        container_id: String,
        /// Time between the stop signal and SIGKILL.
        grace_period: Duration,
    },
    /// Removes the container, killing it if it still runs; answered by `RemoveFinished`.
    RemoveContainer {
        /// The task.
        task_id: String,
        /// The container.
        container_id: String,
    },
    /// Writes the assignment store; answered by `PersistFinished`. When it fails, the shell
    /// does not send the `ReportStatuses` of the same step (it answers that with an error
    /// instead): a report must never get ahead of the floor kept on disk, or a restart could
    /// report a lower state than the manager already applied. Both are retried on the next tick.
    PersistAssignments(PersistedAssignments),
    /// Sends status updates to the dispatcher in one batch; answered by `ReportFinished`.
    ReportStatuses {
        /// Numbers the batch, to match its result.
        batch_id: u64,
        /// The new status of every task whose status changed, by task id.
        statuses: BTreeMap<String, api::TaskStatus>,
    },
    /// The whole set of networked tasks whose containers exist or are being made, by task id,
    /// each with whether it serves (its container runs, is healthy if it has a healthcheck, and
    /// the task is still meant to run). Handed to the node's networking in order, unanswered.
    /// It comes first among a step's commands, so a task asked to stop leaves DNS and the VIPs
    /// before its stop signal, as in Docker.
    SetNetworkEndpoints(BTreeMap<String, LocalEndpoint>),
}

/// What the managers want done with a task, reduced to what the worker acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    /// Desired READY (or earlier): create the container but don't start it, as the updater
    /// asks for tasks it will start later.
    Prepare,
    /// Desired RUNNING, or COMPLETE for jobs: run it until it exits.
    Run,
    /// Desired SHUTDOWN or later: stop it, keep the container until the task is unassigned.
    Stop,
}

fn intent_of(task: &api::Task) -> Intent {
    if task.desired_state >= TaskState::Shutdown as i32 {
        Intent::Stop
    } else if task.desired_state >= TaskState::Running as i32 {
        Intent::Run
    } else {
        Intent::Prepare
    }
}

#[derive(Clone, Debug, PartialEq)]
enum ContainerLife {
    Created,
    Running {
        health: Option<HealthStatus>,
        /// The init's host pid, reported in the task's container status as Docker does.
        pid: Option<i32>,
    },
    /// The exit code is unknown when only the stop's result was seen.
    Exited {
        exit_code: Option<i32>,
        oom_killed: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
struct TrackedContainer {
    container_id: String,
    life: ContainerLife,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EngineOperation {
    Create,
    Start,
    Stop,
    Remove,
}

/// One task as the worker sees it: the managers' intent (`task`) apart from what the worker
/// observed (`observed_status`, `container`).
#[derive(Clone, Debug)]
struct TaskRecord {
    /// The latest copy from the dispatcher; for containers found without a task, a stub.
    task: api::Task,
    /// False once the task left the assignment set: its container is stopped and removed, and
    /// nothing more is reported.
    assigned: bool,
    observed_status: api::TaskStatus,
    container: Option<TrackedContainer>,
    operation_in_flight: Option<EngineOperation>,
    /// Set once a container exists or was asked for, and never cleared: the guard against a
    /// second container for the task.
    container_ever_requested: bool,
    /// The task's networks, once read from the task (at its create, or for an adopted
    /// container when the set is next worked out). A task's attachments never change.
    networks: Option<TaskNetworks>,
    /// Set after a failed stop or removal; cleared by the next tick.
    waiting_for_tick_to_retry: bool,
    status_changed_since_report: bool,
    report_failed_waiting_for_tick: bool,
    last_reported_status: Option<api::TaskStatus>,
}

impl TaskRecord {
    fn new(task: api::Task, assigned: bool) -> TaskRecord {
        let observed_status = task.status.clone().unwrap_or_default();
        TaskRecord {
            task,
            assigned,
            observed_status,
            container: None,
            operation_in_flight: None,
            container_ever_requested: false,
            networks: None,
            waiting_for_tick_to_retry: false,
            status_changed_since_report: false,
            report_failed_waiting_for_tick: false,
            last_reported_status: None,
        }
    }

    fn observed_state(&self) -> i32 {
        self.observed_status.state
    }

    fn is_terminal(&self) -> bool {
        self.observed_state() >= TaskState::Complete as i32
    }

    /// Raises the floor from a status someone else recorded (the manager's copy, or our own
    /// last report before a restart) without reporting it again.
    fn raise_floor(&mut self, status: &api::TaskStatus) {
        if status.state > self.observed_state() {
            self.observed_status = status.clone();
        }
    }

    /// Whether the task is in the set of network endpoints: it has networks, and its container
    /// is being made, or exists and has not exited. An exited container (kept for the task's
    /// history) holds no address: the other nodes forget it.
    fn holds_network_endpoint(&self) -> bool {
        let live = match self.container.as_ref().map(|container| &container.life) {
            Some(ContainerLife::Exited { .. }) => false,
            Some(ContainerLife::Created | ContainerLife::Running { .. }) => true,
            None => self.operation_in_flight == Some(EngineOperation::Create),
        };
        self.networks.is_some() && live
    }

    /// Whether the task serves on its networks: its container runs (healthy, if it has a
    /// healthcheck) and the task is still meant to run, so a task asked to stop stops serving
    /// before its container is signalled.
    fn serving(&self) -> bool {
        let health = match self.container.as_ref().map(|container| &container.life) {
            Some(ContainerLife::Running { health, .. }) => *health,
            _ => return false,
        };
        self.assigned
            && intent_of(&self.task) == Intent::Run
            && !self.is_terminal()
            && (health == Some(HealthStatus::Healthy) || !task_has_healthcheck(&self.task))
    }

    fn grace_period(&self) -> Duration {
        match self
            .task
            .spec
            .as_ref()
            .and_then(|spec| spec.runtime.as_ref())
        {
            Some(api::task_spec::Runtime::Container(container)) => container
                .stop_grace_period
                .and_then(|grace| Duration::try_from(grace).ok())
                .unwrap_or(spec::defaults::STOP_GRACE_PERIOD),
            _ => spec::defaults::STOP_GRACE_PERIOD,
        }
    }
}

/// What a step needs besides the record itself.
struct StepContext<'a> {
    containers_listed: bool,
    assignments_received_since_start: bool,
    payloads: &'a TaskPayloads,
    node_hostname: &'a str,
    now: Option<api::Timestamp>,
}

/// The worker's reconciler. See the module documentation for its invariants.
#[derive(Debug, Default)]
pub struct Reconciler {
    assignment_version: Option<u64>,
    payloads: TaskPayloads,
    /// Boxed: a record holds a whole task, and a B-tree moves its values on every insert.
    tasks: BTreeMap<String, Box<TaskRecord>>,
    containers_listed: bool,
    /// Secrets and configs are not persisted, so after a restart nothing is created until the
    /// dispatcher has sent a set again.
    assignments_received_since_start: bool,
    /// This node's hostname, for `{{.Node.Hostname}}` in task specs.
    node_hostname: String,
    now: Option<api::Timestamp>,
    next_report_batch_id: u64,
    reports_in_flight: BTreeMap<u64, Vec<String>>,
    persist_needed: bool,
    persist_failed_waiting_for_tick: bool,
    /// What the last `SetNetworkEndpoints` held, by task id: whether each served. `None` until
    /// the first is emitted.
    network_endpoints_sent: Option<BTreeMap<String, bool>>,
}

impl Reconciler {
    /// A reconciler for a node with nothing stored.
    pub fn new() -> Reconciler {
        Reconciler::default()
    }

    /// The same reconciler, on a node of this hostname (what `{{.Node.Hostname}}` in a task's
    /// spec stands for).
    pub fn on_node(mut self, hostname: &str) -> Reconciler {
        self.node_hostname = hostname.to_owned();
        self
    }

    /// A reconciler resumed from the assignment store after a restart. Every task is reported
    /// again once the engine's containers are known; none is reported below its stored floor.
    pub fn restore(persisted: PersistedAssignments) -> Reconciler {
        let mut reconciler = Reconciler {
            assignment_version: Some(persisted.assignment_version),
            ..Reconciler::default()
        };
        for task in persisted.tasks {
            let mut record = TaskRecord::new(task, true);
            if let Some(status) = persisted.last_reported_status_by_task.get(&record.task.id) {
                record.raise_floor(status);
                record.last_reported_status = Some(status.clone());
            }
            record.status_changed_since_report = true;
            reconciler
                .tasks
                .insert(record.task.id.clone(), Box::new(record));
        }
        reconciler
    }

    /// The version of the last accepted assignment set.
    pub fn assignment_version(&self) -> Option<u64> {
        self.assignment_version
    }

    /// The observed status of a task the worker still tracks.
    pub fn observed_status(&self, task_id: &str) -> Option<&api::TaskStatus> {
        self.tasks
            .get(task_id)
            .map(|record| &record.observed_status)
    }

    /// The container tracked for a task, if any.
    pub fn container_id(&self, task_id: &str) -> Option<&str> {
        self.tasks
            .get(task_id)?
            .container
            .as_ref()
            .map(|container| container.container_id.as_str())
    }

    /// The latest copy of a tracked task as the dispatcher sent it (a stub with only its id for
    /// a container found without an assignment).
    pub fn task(&self, task_id: &str) -> Option<&api::Task> {
        self.tasks.get(task_id).map(|record| &record.task)
    }

    /// Ids of every task tracked, assigned or still being cleaned up.
    pub fn tracked_task_ids(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// Feeds one event in; returns the commands to carry out, in order.
    pub fn step(&mut self, event: Event) -> Vec<Command> {
        self.step_batch([event])
    }

    /// Feeds several events in as one step: the shell passes everything that queued up while
    /// it was busy, so that a thousand containers starting give one persist and one report
    /// rather than a thousand.
    pub fn step_batch(&mut self, events: impl IntoIterator<Item = Event>) -> Vec<Command> {
        let mut commands = Vec::new();
        for event in events {
            self.apply_event(event, &mut commands);
            self.advance_all(&mut commands);
        }
        self.flush_reports(&mut commands);
        if let Some(endpoints) = self.network_endpoints_if_changed() {
            commands.insert(0, Command::SetNetworkEndpoints(endpoints));
        }
        commands
    }

    /// The set of network endpoints, when it differs from the last one sent (or none was sent
    /// yet and the engine's containers are known).
    fn network_endpoints_if_changed(&mut self) -> Option<BTreeMap<String, LocalEndpoint>> {
        if !self.containers_listed {
            return None;
        }
        let mut serving_by_task = BTreeMap::new();
        for (task_id, record) in &mut self.tasks {
            // A container adopted after a restart gets its networks read here; a stub (a
            // container whose task is no longer assigned) has none to read.
            if record.networks.is_none() && record.container.is_some() {
                record.networks = task_networks(&record.task, &self.node_hostname)
                    .ok()
                    .flatten();
            }
            if record.holds_network_endpoint() {
                serving_by_task.insert(task_id.clone(), record.serving());
            }
        }
        if self.network_endpoints_sent.as_ref() == Some(&serving_by_task) {
            return None;
        }
        let endpoints = serving_by_task
            .iter()
            .filter_map(|(task_id, serving)| {
                let networks = self.tasks.get(task_id)?.networks.clone()?;
                Some((
                    task_id.clone(),
                    LocalEndpoint {
                        networks,
                        serving: *serving,
                    },
                ))
            })
            .collect();
        self.network_endpoints_sent = Some(serving_by_task);
        Some(endpoints)
    }

    fn apply_event(&mut self, event: Event, commands: &mut Vec<Command>) {
        match event {
            Event::Assignments(set) => self.accept_assignments(set),
            Event::ContainersListed(containers) => self.adopt_containers(containers, commands),
            Event::Engine(observation) => self.apply_observation(observation),
            Event::CommandFinished(outcome) => self.apply_outcome(outcome),
            Event::Tick {
                now_since_unix_epoch,
            } => self.apply_tick(now_since_unix_epoch),
            Event::Clock {
                now_since_unix_epoch,
            } => self.now = Some(spec::time::timestamp_after_unix_epoch(now_since_unix_epoch)),
        }
    }

    fn accept_assignments(&mut self, set: AssignmentSet) {
        if self
            .assignment_version
            .is_some_and(|current| set.version <= current)
        {
            return;
        }
        self.assignment_version = Some(set.version);
        self.payloads = set.payloads;
        self.assignments_received_since_start = true;
        self.persist_needed = true;
        let assigned_ids: BTreeSet<String> = set.tasks.iter().map(|task| task.id.clone()).collect();
        for record in self.tasks.values_mut() {
            if !assigned_ids.contains(&record.task.id) {
                record.assigned = false;
            }
        }
        for task in set.tasks {
            match self.tasks.get_mut(&task.id) {
                Some(record) => {
                    if let Some(status) = &task.status {
                        record.raise_floor(status);
                    }
                    record.task = task;
                    record.assigned = true;
                }
                None => {
                    self.tasks
                        .insert(task.id.clone(), Box::new(TaskRecord::new(task, true)));
                }
            }
        }
    }

    fn adopt_containers(
        &mut self,
        containers: Vec<ExistingContainer>,
        commands: &mut Vec<Command>,
    ) {
        self.containers_listed = true;
        let mut containers_by_task: BTreeMap<String, Vec<ExistingContainer>> = BTreeMap::new();
        for container in containers {
            // Containers without the task label are not the cluster's; they are left alone.
            if let Some(task_id) = container
                .labels
                .get(LABEL_TASK_ID)
                .filter(|id| !id.is_empty())
            {
                containers_by_task
                    .entry(task_id.clone())
                    .or_default()
                    .push(container);
            }
        }
        for (task_id, mut candidates) in containers_by_task {
            // Prefers a running container, then a created one, then an exited one; ties go to
            // the smallest id so that the choice is deterministic.
            candidates.sort_by(|left, right| {
                adoption_rank(left.run_state)
                    .cmp(&adoption_rank(right.run_state))
                    .then_with(|| left.container_id.cmp(&right.container_id))
            });
            let record = self.tasks.entry(task_id.clone()).or_insert_with(|| {
                // A container of a task no longer assigned: tracked under a stub so that it is
                // stopped and removed like any unassigned task's.
                Box::new(TaskRecord::new(
                    api::Task {
                        id: task_id.clone(),
                        ..api::Task::default()
                    },
                    false,
                ))
            });
            if record.operation_in_flight == Some(EngineOperation::Create) {
                // The container being created may be among these; the create result decides.
                continue;
            }
            let mut candidates = candidates.into_iter();
            if record.container.is_none()
                && let Some(chosen) = candidates.next()
            {
                record.container_ever_requested = true;
                record.container = Some(TrackedContainer {
                    container_id: chosen.container_id,
                    life: match chosen.run_state {
                        ContainerRunState::Created => ContainerLife::Created,
                        ContainerRunState::Running => ContainerLife::Running {
                            health: chosen.health,
                            pid: chosen.pid,
                        },
                        ContainerRunState::Exited {
                            exit_code,
                            oom_killed,
                        } => ContainerLife::Exited {
                            exit_code: Some(exit_code),
                            oom_killed,
                        },
                    },
                });
            }
            let tracked_id = record
                .container
                .as_ref()
                .map(|container| container.container_id.clone());
            for duplicate in candidates {
                if Some(&duplicate.container_id) != tracked_id.as_ref() {
                    commands.push(Command::RemoveContainer {
                        task_id: task_id.clone(),
                        container_id: duplicate.container_id,
                    });
                }
            }
        }
    }

    fn record_for_container(&mut self, container_id: &str) -> Option<&mut TaskRecord> {
        self.tasks
            .values_mut()
            .find(|record| {
                record
                    .container
                    .as_ref()
                    .is_some_and(|container| container.container_id == container_id)
            })
            .map(|record| &mut **record)
    }

    fn apply_observation(&mut self, observation: EngineObservation) {
        let now = self.now;
        match observation {
            EngineObservation::Started { container_id } => {
                if let Some(container) = self
                    .record_for_container(&container_id)
                    .and_then(|record| record.container.as_mut())
                    && container.life == ContainerLife::Created
                {
                    container.life = ContainerLife::Running {
                        health: None,
                        pid: None,
                    };
                }
            }
            EngineObservation::Exited {
                container_id,
                exit_code,
                oom_killed,
            } => {
                if let Some(container) = self
                    .record_for_container(&container_id)
                    .and_then(|record| record.container.as_mut())
                {
                    container.life = ContainerLife::Exited {
                        exit_code: Some(exit_code),
                        oom_killed,
                    };
                }
            }
            EngineObservation::HealthChanged {
                container_id,
                health,
            } => {
                if let Some(container) = self
                    .record_for_container(&container_id)
                    .and_then(|record| record.container.as_mut())
                    && let ContainerLife::Running {
                        health: current, ..
                    } = &mut container.life
                {
                    *current = Some(health);
                }
            }
            EngineObservation::Missing { container_id } => {
                if let Some(record) = self.record_for_container(&container_id) {
                    record.container = None;
                    // A stop or removal in flight has nothing left to act on; its result will
                    // no longer match and is ignored.
                    if record.operation_in_flight != Some(EngineOperation::Create) {
                        record.operation_in_flight = None;
                    }
                    if record.assigned {
                        observe(
                            record,
                            TaskState::Failed,
                            "failed",
                            "task: container is missing",
                            now,
                        );
                    }
                }
            }
        }
    }

    fn apply_outcome(&mut self, outcome: CommandOutcome) {
        let now = self.now;
        match outcome {
            CommandOutcome::CreateFinished { task_id, result } => {
                let Some(record) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                if record.operation_in_flight != Some(EngineOperation::Create) {
                    return;
                }
                record.operation_in_flight = None;
                match result {
                    Ok(container_id) => {
                        record.container = Some(TrackedContainer {
                            container_id,
                            life: ContainerLife::Created,
                        });
                    }
                    Err(error) => observe(record, TaskState::Rejected, "rejected", &error, now),
                }
            }
            CommandOutcome::StartFinished { task_id, result } => {
                let Some(record) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                if record.operation_in_flight != Some(EngineOperation::Start) {
                    return;
                }
                record.operation_in_flight = None;
                match result {
                    Ok(pid) => {
                        if let Some(container) = record.container.as_mut()
                            && container.life == ContainerLife::Created
                        {
                            container.life = ContainerLife::Running { health: None, pid };
                        }
                    }
                    Err(error) => observe(
                        record,
                        TaskState::Failed,
                        "failed",
                        &format!("task: starting container failed: {error}"),
                        now,
                    ),
                }
            }
            CommandOutcome::StopFinished { task_id, result } => {
                let Some(record) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                if record.operation_in_flight != Some(EngineOperation::Stop) {
                    return;
                }
                record.operation_in_flight = None;
                match result {
                    Ok(()) => {
                        if let Some(container) = record.container.as_mut()
                            && !matches!(container.life, ContainerLife::Exited { .. })
                        {
                            container.life = ContainerLife::Exited {
                                exit_code: None,
                                oom_killed: false,
                            };
                        }
                    }
                    Err(_) => record.waiting_for_tick_to_retry = true,
                }
            }
            CommandOutcome::RemoveFinished {
                task_id,
                container_id,
                result,
            } => {
                let Some(record) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                let is_tracked = record
                    .container
                    .as_ref()
                    .is_some_and(|container| container.container_id == container_id);
                // A duplicate found at adoption is removed without being tracked; its result
                // changes nothing.
                if !is_tracked || record.operation_in_flight != Some(EngineOperation::Remove) {
                    return;
                }
                record.operation_in_flight = None;
                match result {
                    Ok(()) => record.container = None,
                    Err(_) => record.waiting_for_tick_to_retry = true,
                }
            }
            CommandOutcome::ReportFinished { batch_id, result } => {
                let Some(task_ids) = self.reports_in_flight.remove(&batch_id) else {
                    return;
                };
                if result.is_err() {
                    for task_id in task_ids {
                        if let Some(record) = self.tasks.get_mut(&task_id) {
                            record.report_failed_waiting_for_tick = true;
                        }
                    }
                }
            }
            CommandOutcome::PersistFinished { result } => {
                if result.is_err() {
                    self.persist_failed_waiting_for_tick = true;
                }
            }
        }
    }

    fn apply_tick(&mut self, now_since_unix_epoch: Duration) {
        self.now = Some(spec::time::timestamp_after_unix_epoch(now_since_unix_epoch));
        for record in self.tasks.values_mut() {
            record.waiting_for_tick_to_retry = false;
            if std::mem::take(&mut record.report_failed_waiting_for_tick) && record.assigned {
                record.status_changed_since_report = true;
            }
        }
        if std::mem::take(&mut self.persist_failed_waiting_for_tick) {
            self.persist_needed = true;
        }
    }

    fn advance_all(&mut self, commands: &mut Vec<Command>) {
        let context = StepContext {
            containers_listed: self.containers_listed,
            assignments_received_since_start: self.assignments_received_since_start,
            payloads: &self.payloads,
            node_hostname: &self.node_hostname,
            now: self.now,
        };
        self.tasks
            .retain(|_, record| advance(record, &context, commands) == Keep::Tracking);
    }

    fn flush_reports(&mut self, commands: &mut Vec<Command>) {
        let mut statuses = BTreeMap::new();
        for (task_id, record) in &mut self.tasks {
            if std::mem::take(&mut record.status_changed_since_report) && record.assigned {
                record.last_reported_status = Some(record.observed_status.clone());
                statuses.insert(task_id.clone(), record.observed_status.clone());
            }
        }
        // The floor of what is about to be reported must be durable before the report leaves,
        // so that a restart never reports lower than the manager may already have applied.
        if !statuses.is_empty() {
            self.persist_needed = true;
        }
        if std::mem::take(&mut self.persist_needed) {
            commands.push(Command::PersistAssignments(self.snapshot()));
        }
        if !statuses.is_empty() {
            self.next_report_batch_id += 1;
            let batch_id = self.next_report_batch_id;
            self.reports_in_flight
                .insert(batch_id, statuses.keys().cloned().collect());
            commands.push(Command::ReportStatuses { batch_id, statuses });
        }
    }

    /// What the assignment store should hold now.
    pub fn snapshot(&self) -> PersistedAssignments {
        let assigned = self.tasks.values().filter(|record| record.assigned);
        PersistedAssignments {
            assignment_version: self.assignment_version.unwrap_or(0),
            tasks: assigned.clone().map(|record| record.task.clone()).collect(),
            last_reported_status_by_task: assigned
                .filter_map(|record| {
                    record
                        .last_reported_status
                        .clone()
                        .map(|status| (record.task.id.clone(), status))
                })
                .collect(),
        }
    }
}

fn adoption_rank(run_state: ContainerRunState) -> u8 {
    match run_state {
        ContainerRunState::Running => 0,
        ContainerRunState::Created => 1,
        ContainerRunState::Exited { .. } => 2,
    }
}

/// Moves the observed state forward; a state not above the current one is ignored, which is
/// what keeps observed state monotonic whatever order events arrive in.
fn observe(
    record: &mut TaskRecord,
    state: TaskState,
    message: &str,
    err: &str,
    now: Option<api::Timestamp>,
) {
    let state = state as i32;
    if state <= record.observed_state() {
        return;
    }
    let runtime_status = record.container.as_ref().map(|container| {
        let (pid, exit_code) = match container.life {
            ContainerLife::Running { pid, .. } => (pid.unwrap_or(0), 0),
            ContainerLife::Exited {
                exit_code: Some(code),
                ..
            } => (0, code),
            _ => (0, 0),
        };
        api::task_status::RuntimeStatus::Container(api::ContainerStatus {
            container_id: container.container_id.clone(),
            pid,
            exit_code,
        })
    });
    // As Docker reads them from the running container: the ports bound on this node's host.
    let running = matches!(
        record.container.as_ref().map(|container| &container.life),
        Some(ContainerLife::Running { .. })
    );
    let port_status = running
        .then(|| api::PortStatus {
            ports: host_published(&record.task).cloned().collect(),
        })
        .filter(|status| !status.ports.is_empty());
    record.observed_status = api::TaskStatus {
        timestamp: now,
        state,
        message: message.to_owned(),
        err: err.to_owned(),
        runtime_status,
        port_status,
        ..api::TaskStatus::default()
    };
    record.status_changed_since_report = true;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    Tracking,
    Forget,
}

/// The engine operations on an existing container; creation is issued with its spec instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ContainerOperation {
    Start,
    Stop,
    Remove,
}

fn issue(record: &mut TaskRecord, operation: ContainerOperation, commands: &mut Vec<Command>) {
    let task_id = record.task.id.clone();
    let container_id = record
        .container
        .as_ref()
        .map(|container| container.container_id.clone())
        .unwrap_or_default();
    let (in_flight, command) = match operation {
        ContainerOperation::Start => (
            EngineOperation::Start,
            Command::StartContainer {
                task_id,
                container_id,
            },
        ),
        ContainerOperation::Stop => (
            EngineOperation::Stop,
            Command::StopContainer {
                task_id,
                container_id,
                grace_period: record.grace_period(),
            },
        ),
        ContainerOperation::Remove => (
            EngineOperation::Remove,
            Command::RemoveContainer {
                task_id,
                container_id,
            },
        ),
    };
    record.operation_in_flight = Some(in_flight);
    commands.push(command);
}

/// Decides the next move for one task from its intent and what was observed. Level-triggered:
/// called after every event, it only ever looks at the current record.
fn advance(
    record: &mut TaskRecord,
    context: &StepContext<'_>,
    commands: &mut Vec<Command>,
) -> Keep {
    // One engine operation at a time per task; and nothing at all before the engine's
    // containers are known, since acting earlier could duplicate or orphan one.
    if record.operation_in_flight.is_some()
        || record.waiting_for_tick_to_retry
        || !context.containers_listed
    {
        return Keep::Tracking;
    }
    let now = context.now;
    if !record.assigned {
        match record.container.as_ref().map(|container| &container.life) {
            Some(ContainerLife::Running { .. }) => {
                issue(record, ContainerOperation::Stop, commands)
            }
            Some(_) => issue(record, ContainerOperation::Remove, commands),
            None => return Keep::Forget,
        }
        return Keep::Tracking;
    }
    let intent = intent_of(&record.task);
    let running = matches!(
        record.container.as_ref().map(|container| &container.life),
        Some(ContainerLife::Running { .. })
    );
    if intent == Intent::Stop {
        if running {
            issue(record, ContainerOperation::Stop, commands);
        } else if !record.is_terminal() {
            // A task that already completed or failed keeps that outcome; SHUTDOWN is only for
            // tasks the worker itself stopped (or never started).
            observe(record, TaskState::Shutdown, "shutdown", "", now);
        }
        return Keep::Tracking;
    }
    if record.is_terminal() {
        // A terminal task must not keep a process running: a failed (e.g. unhealthy) task's
        // replacement may already be starting elsewhere.
        if running {
            issue(record, ContainerOperation::Stop, commands);
        }
        return Keep::Tracking;
    }
    let Some(container) = record.container.clone() else {
        if record.container_ever_requested || record.observed_state() >= TaskState::Ready as i32 {
            observe(
                record,
                TaskState::Failed,
                "failed",
                "task: container is missing",
                now,
            );
            return Keep::Tracking;
        }
        if !context.assignments_received_since_start {
            return Keep::Tracking;
        }
        let converted =
            container_spec_for_task(&record.task, context.payloads, context.node_hostname)
                .and_then(|spec| {
                    task_networks(&record.task, context.node_hostname)
                        .map(|networks| (spec, networks))
                });
        match converted {
            Err(error) => observe(
                record,
                TaskState::Rejected,
                "rejected",
                &error.to_string(),
                now,
            ),
            Ok((spec, networks)) => {
                observe(record, TaskState::Accepted, "accepted", "", now);
                observe(record, TaskState::Preparing, "preparing", "", now);
                record.container_ever_requested = true;
                record.operation_in_flight = Some(EngineOperation::Create);
                record.networks = networks.clone();
                commands.push(Command::CreateContainer {
                    task_id: record.task.id.clone(),
                    spec: Box::new(spec),
                    networks: networks.map(Box::new),
                });
            }
        }
        return Keep::Tracking;
    };
    match container.life {
        ContainerLife::Created => {
            observe(record, TaskState::Ready, "prepared", "", now);
            if intent == Intent::Run {
                observe(record, TaskState::Starting, "starting", "", now);
                issue(record, ContainerOperation::Start, commands);
            }
        }
        ContainerLife::Running { health, .. } => {
            // With a healthcheck the task stays STARTING until the first healthy verdict, so
            // that an update's monitor period measures a task that really serves.
            let has_healthcheck = task_has_healthcheck(&record.task);
            match health {
                Some(HealthStatus::Unhealthy) => {
                    observe(
                        record,
                        TaskState::Failed,
                        "failed",
                        "task: unhealthy container",
                        now,
                    );
                    issue(record, ContainerOperation::Stop, commands);
                }
                Some(HealthStatus::Healthy) => {
                    observe(record, TaskState::Running, "started", "", now)
                }
                _ if has_healthcheck => observe(record, TaskState::Starting, "starting", "", now),
                _ => observe(record, TaskState::Running, "started", "", now),
            }
        }
        ContainerLife::Exited {
            exit_code,
            oom_killed,
        } => match exit_code {
            Some(0) => observe(record, TaskState::Complete, "finished", "", now),
            Some(code) => {
                let mut error = format!("task: non-zero exit ({code})");
                if oom_killed {
                    error.push_str(": killed by the kernel's out-of-memory killer");
                }
                observe(record, TaskState::Failed, "failed", &error, now);
            }
            None => observe(
                record,
                TaskState::Failed,
                "failed",
                "task: container exited",
                now,
            ),
        },
    }
    Keep::Tracking
}

impl From<&engine::ContainerInfo> for ExistingContainer {
    /// The view of an engine container that re-adoption needs.
    fn from(info: &engine::ContainerInfo) -> ExistingContainer {
        let run_state = match info.state.status {
            engine::RunStatus::Created => ContainerRunState::Created,
            engine::RunStatus::Running => ContainerRunState::Running,
            engine::RunStatus::Exited => ContainerRunState::Exited {
                // An exited container with no recorded code was lost rather than finished.
                exit_code: info.state.exit_code.unwrap_or(-1),
                oom_killed: info.state.oom_killed,
            },
        };
        ExistingContainer {
            container_id: info.id.clone(),
            labels: info.spec.labels.clone(),
            run_state,
            health: info.health.as_ref().map(|health| health.status),
            pid: info
                .state
                .pid
                .filter(|_| run_state == ContainerRunState::Running),
        }
    }
}
