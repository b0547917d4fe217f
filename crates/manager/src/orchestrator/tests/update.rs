//! Moving tasks to a new spec: one at a time, each waiting for the previous replacement.

use shoal_proto::api::{Service, TaskState, Version};

use super::support::{global_service, render, replicated_job, replicated_service, task};
use crate::orchestrator::{ClusterSnapshot, reconcile_service_update};

use TaskState::{Complete, Pending, Running, Shutdown, Starting};

fn at_spec_version(mut service: Service, version: u64) -> Service {
    service.spec_version = Some(Version { index: version });
    service
}

fn update(service: &Service, tasks: &[shoal_proto::api::Task]) -> Vec<String> {
    let snapshot = ClusterSnapshot::new(std::slice::from_ref(service), &[], tasks);
    render(&reconcile_service_update(&snapshot, service))
}

#[test]
fn outdated_tasks_are_replaced_one_at_a_time_lowest_slot_first() {
    let old = at_spec_version(replicated_service("web", 3), 1);
    let new = at_spec_version(old.clone(), 2);
    let tasks = [
        task("t3", &old, 3, "a", Running, Running, 1),
        task("t1", &old, 1, "a", Running, Running, 1),
        task("t2", &old, 2, "a", Running, Running, 1),
    ];
    assert_eq!(update(&new, &tasks), ["desire t1@3 TASK_STATE_SHUTDOWN"]);
    // Nothing to do once every wanted task is at the current spec.
    assert!(update(&old, &tasks).is_empty());
}

#[test]
fn the_next_task_waits_until_the_replacement_runs() {
    let old = at_spec_version(replicated_service("web", 2), 1);
    let new = at_spec_version(old.clone(), 2);
    let mut tasks = vec![
        task("t1-old", &old, 1, "a", Shutdown, Running, 1),
        task("t1-new", &new, 1, "", Running, Pending, 2),
        task("t2", &old, 2, "a", Running, Running, 1),
    ];
    assert!(update(&new, &tasks).is_empty());
    tasks[1] = task("t1-new", &new, 1, "a", Running, Starting, 2);
    assert!(update(&new, &tasks).is_empty());
    tasks[1] = task("t1-new", &new, 1, "a", Running, Running, 2);
    assert_eq!(update(&new, &tasks), ["desire t2@3 TASK_STATE_SHUTDOWN"]);
}

#[test]
fn global_services_update_node_by_node_and_jobs_are_left_to_their_iterations() {
    let old = at_spec_version(global_service("agent"), 1);
    let new = at_spec_version(old.clone(), 2);
    let tasks = [
        task("on-b", &old, 0, "b", Running, Running, 1),
        task("on-a", &old, 0, "a", Running, Running, 1),
    ];
    assert_eq!(update(&new, &tasks), ["desire on-a@3 TASK_STATE_SHUTDOWN"]);

    let job = at_spec_version(replicated_job("batch", 1, 2), 2);
    let job_tasks = [task(
        "j1",
        &at_spec_version(job.clone(), 1),
        1,
        "a",
        Complete,
        Running,
        1,
    )];
    assert!(update(&job, &job_tasks).is_empty());
}
