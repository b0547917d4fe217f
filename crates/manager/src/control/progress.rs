//! Where a service stands against its spec: docker's replica counts for `service ls`, and the
//! per-slot report with a verdict that `service create|update|scale` show as progress. Pure
//! over a store snapshot.

use std::collections::BTreeMap;

use shoal_proto::api::{
    Service, ServiceProgressResponse, ServiceStatus, Task, TaskState,
    service_progress_response::Verdict,
};

use crate::orchestrator::{
    ClusterSnapshot, GaveUpReason, GivenUpSlots, ServiceConvergence, ServiceMode, SlotKey,
    created_at, is_wanted, job_iteration_of_service, job_iteration_of_task, observed_state,
    service_convergence, spec_version_of_service, spec_version_of_task,
};

/// The tasks of the service's current spec (for jobs: of the current iteration).
fn current_tasks<'a>(
    snapshot: &ClusterSnapshot<'a>,
    service: &Service,
    mode: ServiceMode,
) -> Vec<&'a Task> {
    let iteration = job_iteration_of_service(service);
    snapshot
        .tasks_of_service(&service.id)
        .iter()
        .copied()
        .filter(|task| !mode.is_job() || job_iteration_of_task(task) == iteration)
        .collect()
}

/// Docker's service status: running tasks, the tasks the spec asks for, and completed ones
/// (jobs).
pub(crate) fn service_status(snapshot: &ClusterSnapshot<'_>, service: &Service) -> ServiceStatus {
    let Some(mode) = ServiceMode::of_service(service) else {
        return ServiceStatus::default();
    };
    let tasks = current_tasks(snapshot, service, mode);
    let count = |predicate: &dyn Fn(&Task) -> bool| {
        tasks.iter().filter(|task| predicate(task)).count() as u64
    };
    let running_tasks = count(&|task| {
        observed_state(task) == TaskState::Running
            && task.desired_state <= TaskState::Running as i32
    });
    let completed_tasks = count(&|task| observed_state(task) == TaskState::Complete);
    let desired_tasks = match mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => max_concurrent.min(total_completions.saturating_sub(completed_tasks)),
        ServiceMode::Global => count(&|task| task.desired_state == TaskState::Running as i32),
        ServiceMode::GlobalJob => count(&|task| {
            task.desired_state == TaskState::Complete as i32
                && observed_state(task) != TaskState::Complete
        }),
    };
    ServiceStatus {
        running_tasks,
        desired_tasks,
        completed_tasks,
    }
}

fn gave_up_text(reason: &GaveUpReason) -> String {
    match reason {
        GaveUpReason::RestartConditionForbids {
            condition,
            ended_in,
        } => format!(
            "its task ended in {} and the restart condition is {condition}",
            ended_in
                .as_str_name()
                .trim_start_matches("TASK_STATE_")
                .to_lowercase()
        ),
        GaveUpReason::MaxAttemptsReached { max_attempts } => {
            format!("its task failed again after {max_attempts} restart attempts")
        }
    }
}

fn slot_label(service_name: &str, slot: &SlotKey) -> String {
    match slot {
        SlotKey::Replica { slot, .. } => format!("{service_name}.{slot}"),
        SlotKey::Node { node_id, .. } => format!("{service_name} on node {node_id}"),
    }
}

/// The progress report for one service; `None` when it does not exist.
pub(crate) fn service_progress(
    snapshot: &ClusterSnapshot<'_>,
    service_id: &str,
    given_up: &GivenUpSlots,
) -> Option<ServiceProgressResponse> {
    let service = snapshot.service(service_id)?;
    let mode = ServiceMode::of_service(service)?;
    let service_name = service
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
        .map_or(service_id, |annotations| annotations.name.as_str());

    // The newest task of every slot that still holds a wanted task.
    let mut newest_by_slot: BTreeMap<SlotKey, &Task> = BTreeMap::new();
    for task in current_tasks(snapshot, service, mode) {
        let slot = SlotKey::of_task(task);
        let newer = newest_by_slot
            .get(&slot)
            .is_none_or(|known| (created_at(known), &known.id) < (created_at(task), &task.id));
        if newer {
            newest_by_slot.insert(slot, task);
        }
    }
    let slot_tasks: Vec<Task> = newest_by_slot
        .values()
        .filter(|task| is_wanted(task))
        .map(|task| (*task).clone())
        .collect();

    let done_state = if mode.is_job() {
        TaskState::Complete
    } else {
        TaskState::Running
    };
    // A task of an older spec still running is not done: its slot waits for the update.
    let current_spec = spec_version_of_service(service);
    let done = slot_tasks
        .iter()
        .filter(|task| observed_state(task) == done_state)
        .filter(|task| mode.is_job() || spec_version_of_task(task) >= current_spec)
        .count() as u64;
    let desired = match mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => total_completions,
        ServiceMode::Global | ServiceMode::GlobalJob => slot_tasks.len() as u64,
    };

    let mut reasons = Vec::new();
    let verdict = match service_convergence(snapshot, service_id, given_up)? {
        ServiceConvergence::Converged => Verdict::Converged,
        ServiceConvergence::Converging => Verdict::Converging,
        ServiceConvergence::CannotConverge { stuck_slots } => {
            for stuck in &stuck_slots {
                reasons.push(format!(
                    "{} stays empty: {}",
                    slot_label(service_name, &stuck.slot),
                    gave_up_text(&stuck.reason)
                ));
            }
            Verdict::CannotConverge
        }
    };
    // A task the scheduler could not place waits for a node that fits; until the cluster
    // changes that wait has no end, so the CLI is told rather than left waiting.
    let unplaceable: Vec<String> = slot_tasks
        .iter()
        .filter(|task| observed_state(task) == TaskState::Pending)
        .filter_map(|task| {
            let message = task.status.as_ref()?.message.as_str();
            (!message.is_empty()).then(|| {
                format!(
                    "{} can't be placed: {message}",
                    slot_label(service_name, &SlotKey::of_task(task))
                )
            })
        })
        .collect();
    let verdict = if verdict != Verdict::Converged && !unplaceable.is_empty() {
        reasons.extend(unplaceable);
        Verdict::CannotConverge
    } else {
        verdict
    };
    Some(ServiceProgressResponse {
        service: Some(service.clone()),
        slot_tasks,
        desired,
        done,
        verdict: verdict as i32,
        reasons,
    })
}
