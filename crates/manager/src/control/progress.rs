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
        .filter(|task| !mode.is_job() || job_iteration_of_task(task) == iteration)
        .collect()
}

/// Docker's service status: running tasks, the tasks the spec asks for, and completed ones
/// (jobs). A replicated job asks for as many as may run at once, finished or not, as SwarmKit
/// counts it (`service ls` shows a finished job of 2 as `0/2 (2/2 completed)`).
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
        ServiceMode::ReplicatedJob { max_concurrent, .. } => max_concurrent,
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
        .filter(|task| mode.is_job() || spec_version_of_task(task) == current_spec)
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
    // A task the scheduler could not place waits for a node that fits, and one the allocator
    // could not give its addresses stays NEW waiting for them; until the cluster changes that
    // wait has no end, so the CLI is told rather than left waiting. Slots that wait for the
    // same reason are named together.
    let mut unplaceable_slots: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for task in slot_tasks
        .iter()
        .filter(|task| matches!(observed_state(task), TaskState::New | TaskState::Pending))
    {
        if let Some(status) = task.status.as_ref().filter(|status| !status.err.is_empty()) {
            unplaceable_slots
                .entry(status.err.as_str())
                .or_default()
                .push(slot_label(service_name, &SlotKey::of_task(task)));
        }
    }
    let unplaceable: Vec<String> = unplaceable_slots
        .into_iter()
        .map(|(reason, slots)| format!("{} can't be placed: {reason}", slots.join(", ")))
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

#[cfg(test)]
mod tests {
    use shoal_proto::api::{
        Annotations, Meta, ReplicatedJob, ReplicatedService, ServiceSpec, TaskStatus, Timestamp,
        Version, service_spec,
    };

    use super::*;
    use crate::orchestrator::ClusterObjects;

    fn service(replicas: u64, spec_version: u64) -> Service {
        Service {
            id: "svc".into(),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: "web".into(),
                    ..Default::default()
                }),
                mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                    replicas,
                })),
                ..Default::default()
            }),
            spec_version: Some(Version {
                index: spec_version,
            }),
            ..Default::default()
        }
    }

    fn task(slot: u64, observed: TaskState, err: &str, spec_version: u64) -> Task {
        let mut status = TaskStatus {
            err: err.into(),
            ..Default::default()
        };
        status.set_state(observed);
        let mut task = Task {
            id: format!("t{slot}-{spec_version}"),
            service_id: "svc".into(),
            slot,
            node_id: if observed == TaskState::Pending {
                ""
            } else {
                "n1"
            }
            .into(),
            status: Some(status),
            spec_version: Some(Version {
                index: spec_version,
            }),
            meta: Some(Meta {
                created_at: Some(Timestamp {
                    seconds: spec_version as i64,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        task.set_desired_state(TaskState::Running);
        task
    }

    fn progress(service: &Service, tasks: &[Task]) -> ServiceProgressResponse {
        let services = [service.clone()];
        let objects = ClusterObjects::new(&services, &[], tasks);
        let snapshot = objects.snapshot();
        service_progress(&snapshot, "svc", &GivenUpSlots::new()).unwrap()
    }

    #[test]
    fn running_tasks_of_the_current_spec_converge_the_service() {
        let web = service(2, 1);
        let tasks = [
            task(1, TaskState::Running, "", 1),
            task(2, TaskState::Starting, "", 1),
        ];
        let report = progress(&web, &tasks);
        assert_eq!(report.verdict(), Verdict::Converging);
        assert_eq!((report.done, report.desired), (1, 2));
        let tasks = [
            task(1, TaskState::Running, "", 1),
            task(2, TaskState::Running, "", 1),
        ];
        assert_eq!(progress(&web, &tasks).verdict(), Verdict::Converged);
        let status = service_status(
            &ClusterObjects::new(std::slice::from_ref(&web), &[], &tasks).snapshot(),
            &web,
        );
        assert_eq!((status.running_tasks, status.desired_tasks), (2, 2));
    }

    #[test]
    fn a_finished_replicated_job_still_desires_its_concurrency() {
        let mut job = service(0, 1);
        if let Some(spec) = job.spec.as_mut() {
            spec.mode = Some(service_spec::Mode::ReplicatedJob(ReplicatedJob {
                max_concurrent: 2,
                total_completions: 2,
            }));
        }
        let tasks = [
            task(1, TaskState::Complete, "", 1),
            task(2, TaskState::Complete, "", 1),
        ];
        let status = service_status(
            &ClusterObjects::new(std::slice::from_ref(&job), &[], &tasks).snapshot(),
            &job,
        );
        assert_eq!(
            (
                status.running_tasks,
                status.desired_tasks,
                status.completed_tasks
            ),
            (0, 2, 2)
        );
    }

    #[test]
    fn a_task_of_an_older_spec_is_not_done_while_an_update_is_under_way() {
        let web = service(1, 2);
        let report = progress(&web, &[task(1, TaskState::Running, "", 1)]);
        assert_eq!(report.verdict(), Verdict::Converging);
        assert_eq!(report.done, 0);
    }

    #[test]
    fn slots_that_cannot_be_placed_are_named_together_with_their_reason() {
        let web = service(3, 1);
        let reason = "no suitable node (1 node not available for new tasks)";
        let tasks = [
            task(1, TaskState::Pending, reason, 1),
            task(2, TaskState::Running, "", 1),
            task(3, TaskState::Pending, reason, 1),
        ];
        let report = progress(&web, &tasks);
        assert_eq!(report.verdict(), Verdict::CannotConverge);
        assert_eq!(
            report.reasons,
            [format!("web.1, web.3 can't be placed: {reason}")]
        );
    }

    #[test]
    fn a_slot_waiting_for_its_addresses_says_why() {
        let web = service(1, 1);
        let reason = "no IP address left on network front (10.0.9.0/29): remove services or tasks on it, or use a network with a larger subnet";
        let report = progress(&web, &[task(1, TaskState::New, reason, 1)]);
        assert_eq!(report.verdict(), Verdict::CannotConverge);
        assert_eq!(report.reasons, [format!("web.1 can't be placed: {reason}")]);
    }
}
