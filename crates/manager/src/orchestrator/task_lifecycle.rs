//! Predicates over a task's two states (desired, written by managers; observed, written by
//! workers) and the constructor for new tasks. Every core classifies tasks through these so
//! that they agree on what "runnable" or "old" means.

use shoal_proto::api::{Meta, Service, Task, TaskState, TaskStatus};

use super::command::TaskIdGenerator;
use super::time::ClusterTime;

/// The state the worker (or, before assignment, the scheduler) last reported.
pub fn observed_state(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .map_or(TaskState::New, |status| status.state())
}

/// Whether an observed state is final: the task's process has ended or will never start.
/// As in SwarmKit, everything after RUNNING is final.
pub fn is_terminal(state: TaskState) -> bool {
    state as i32 > TaskState::Running as i32
}

/// Whether a task ended on its own (exit, crash, rejection) rather than because a manager
/// shut it down or its node vanished: only such endings are the restart policy's business.
pub fn ended_on_its_own(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Complete | TaskState::Failed | TaskState::Rejected
    )
}

/// Whether managers still want this task to run, now (RUNNING, or COMPLETE for jobs) or
/// after a restart delay (READY). Such a task holds its slot.
pub fn is_wanted(task: &Task) -> bool {
    task.desired_state <= TaskState::Complete as i32
}

/// Whether managers want this task running now and it has not ended: the task the
/// "one per slot" invariant is about.
pub fn is_runnable(task: &Task) -> bool {
    matches!(
        task.desired_state(),
        TaskState::Running | TaskState::Complete
    ) && !is_terminal(observed_state(task))
}

/// Whether the task waits out a restart delay before it may start.
pub fn is_waiting_for_restart_delay(task: &Task) -> bool {
    task.desired_state() == TaskState::Ready
}

/// Whether no worker holds the task any more, or never did: it has ended, or it was never
/// assigned. Only such tasks may be deleted.
pub fn no_worker_holds(task: &Task) -> bool {
    let observed = observed_state(task);
    is_terminal(observed) || (observed as i32) < TaskState::Assigned as i32
}

/// Whether the task is history: managers want it stopped and no worker holds it.
pub fn is_history(task: &Task) -> bool {
    !is_wanted(task) && no_worker_holds(task)
}

/// When the task was created, for ordering a slot's tasks from oldest to newest.
pub fn created_at(task: &Task) -> ClusterTime {
    task.meta
        .as_ref()
        .and_then(|meta| meta.created_at.as_ref())
        .map_or(ClusterTime::UNIX_EPOCH, ClusterTime::from_proto_timestamp)
}

/// Orders tasks oldest first; the id breaks ties so the order never depends on store order.
pub(crate) fn oldest_first(left: &&Task, right: &&Task) -> std::cmp::Ordering {
    created_at(left)
        .cmp(&created_at(right))
        .then_with(|| left.id.cmp(&right.id))
}

/// The `meta.version.index` a command about this task states it read.
pub(crate) fn read_version(task: &Task) -> u64 {
    task.meta
        .as_ref()
        .and_then(|meta| meta.version.as_ref())
        .map_or(0, |version| version.index)
}

/// The spec version a task was made from, or the service is at; 0 when unset.
pub(crate) fn spec_version_of_task(task: &Task) -> u64 {
    task.spec_version
        .as_ref()
        .map_or(0, |version| version.index)
}

/// The spec version the service is at; 0 when unset.
pub(crate) fn spec_version_of_service(service: &Service) -> u64 {
    service
        .spec_version
        .as_ref()
        .map_or(0, |version| version.index)
}

/// The job iteration a task belongs to, or a job service is at; 0 when unset.
pub(crate) fn job_iteration_of_task(task: &Task) -> u64 {
    task.job_iteration
        .as_ref()
        .map_or(0, |version| version.index)
}

/// The job iteration a job service is at; 0 when unset.
pub(crate) fn job_iteration_of_service(service: &Service) -> u64 {
    service
        .job_status
        .as_ref()
        .and_then(|status| status.job_iteration.as_ref())
        .map_or(0, |version| version.index)
}

/// Where a new task goes: a slot number (replicated) or a node (global).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewTaskPlacement<'node> {
    /// A replicated slot; the scheduler picks the node later.
    Slot(u64),
    /// A global task, bound to this node from the start.
    Node(&'node str),
}

/// Builds a new task of `service`: spec (with the networks the service attaches to), spec
/// version, job iteration, endpoint and service annotations copied from the service, observed
/// state NEW, and the given desired state.
pub fn new_task(
    service: &Service,
    placement: NewTaskPlacement<'_>,
    desired_state: TaskState,
    now: ClusterTime,
    task_ids: &mut dyn TaskIdGenerator,
) -> Task {
    let service_spec = service.spec.clone().unwrap_or_default();
    let (slot, node_id) = match placement {
        NewTaskPlacement::Slot(slot) => (slot, String::new()),
        NewTaskPlacement::Node(node_id) => (0, node_id.to_owned()),
    };
    let networks = crate::allocator::service_attachments(&service_spec).to_vec();
    let mut task_spec = service_spec.task.unwrap_or_default();
    // The task names its networks itself, even those of the service spec's deprecated list,
    // so the allocator and the scheduler's gate read the task alone.
    task_spec.networks = networks;
    let mut task = Task {
        id: task_ids.next_task_id(),
        meta: Some(Meta {
            version: None,
            created_at: Some(now.to_proto_timestamp()),
            updated_at: Some(now.to_proto_timestamp()),
        }),
        log_driver: task_spec.log_driver.clone(),
        spec: Some(task_spec),
        spec_version: service.spec_version,
        service_id: service.id.clone(),
        slot,
        node_id,
        service_annotations: service_spec.annotations,
        status: Some(TaskStatus {
            timestamp: Some(now.to_proto_timestamp()),
            message: "created".to_owned(),
            ..TaskStatus::default()
        }),
        endpoint: service.endpoint.clone(),
        job_iteration: service
            .job_status
            .as_ref()
            .and_then(|status| status.job_iteration),
        ..Task::default()
    };
    task.set_desired_state(desired_state);
    if let Some(status) = task.status.as_mut() {
        status.set_state(TaskState::New);
    }
    task
}
