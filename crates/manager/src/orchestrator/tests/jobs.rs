//! Replicated jobs: bounded concurrency, completions counted, completed slots never rerun.

use std::time::Duration;

use shoal_proto::api::{Service, Task, TaskState, restart_policy::RestartCondition};

use super::support::{at, node, render, replicated_job, task, with_restart_policy};
use crate::orchestrator::{
    ClusterObjects, Command, GivenUpSlots, SequentialTaskIds, reconcile_replicated_job,
};

use TaskState::{Complete, Failed, Running, Shutdown};

fn reconcile(job: &Service, max_concurrent: u64, total: u64, tasks: &[Task]) -> Vec<Command> {
    let services = [job.clone()];
    let nodes = [node("a")];
    let objects = ClusterObjects::new(&services, &nodes, tasks);
    let snapshot = objects.snapshot();
    let mut ids = SequentialTaskIds::new("new-");
    reconcile_replicated_job(
        &snapshot,
        job,
        max_concurrent,
        total,
        &GivenUpSlots::new(),
        at(100),
        &mut ids,
    )
}

#[test]
fn starts_at_most_max_concurrent_tasks_in_the_lowest_slots() {
    let job = replicated_job("batch", 2, 5);
    assert_eq!(
        render(&reconcile(&job, 2, 5, &[])),
        [
            r#"create new-000001 service=batch slot=1 node="" desired=TASK_STATE_COMPLETE"#,
            r#"create new-000002 service=batch slot=2 node="" desired=TASK_STATE_COMPLETE"#,
        ]
    );
}

#[test]
fn completed_slots_free_concurrency_and_are_never_rerun() {
    let job = replicated_job("batch", 2, 4);
    let tasks = [
        task("t1", &job, 1, "a", Complete, Complete, 1),
        task("t2", &job, 2, "a", Complete, Running, 1),
        task("t3", &job, 3, "a", Complete, Complete, 1),
    ];
    assert_eq!(
        render(&reconcile(&job, 2, 4, &tasks)),
        [r#"create new-000001 service=batch slot=4 node="" desired=TASK_STATE_COMPLETE"#]
    );
}

#[test]
fn a_finished_job_creates_nothing_and_surplus_slots_are_stopped() {
    let job = replicated_job("batch", 0, 2);
    let tasks = [
        task("t1", &job, 1, "a", Complete, Complete, 1),
        task("t2", &job, 2, "a", Complete, Complete, 1),
        task("t3", &job, 3, "a", Complete, Running, 1),
    ];
    assert_eq!(
        render(&reconcile(&job, 2, 2, &tasks)),
        ["desire t3@3 TASK_STATE_SHUTDOWN"]
    );
}

#[test]
fn a_failed_slot_under_condition_none_is_not_restarted_and_frees_no_extra_slot_beyond_the_limit() {
    let job = with_restart_policy(
        replicated_job("batch", 1, 3),
        RestartCondition::None,
        Duration::ZERO,
        0,
        Duration::ZERO,
    );
    let tasks = [
        task("t1", &job, 1, "a", Shutdown, Failed, 1),
        task("t2", &job, 2, "a", Complete, Running, 2),
    ];
    // Slot 1 gave up and slot 2 uses the only concurrency: nothing starts.
    assert_eq!(render(&reconcile(&job, 1, 3, &tasks)), Vec::<String>::new());
}

#[test]
fn a_live_job_task_on_a_drained_node_is_stopped_and_its_slot_started_again() {
    let job = replicated_job("batch", 1, 1);
    let services = [job.clone()];
    let nodes = [super::support::node_with(
        "drained",
        shoal_proto::api::node_spec::Availability::Drain,
        shoal_proto::api::node_status::State::Ready,
    )];
    let tasks = [task("t1", &job, 1, "drained", Complete, Running, 1)];
    let objects = ClusterObjects::new(&services, &nodes, &tasks);
    let snapshot = objects.snapshot();
    let mut ids = SequentialTaskIds::new("new-");
    let commands = reconcile_replicated_job(
        &snapshot,
        &job,
        1,
        1,
        &GivenUpSlots::new(),
        at(100),
        &mut ids,
    );
    assert_eq!(
        render(&commands),
        [
            "desire t1@3 TASK_STATE_SHUTDOWN",
            r#"create new-000001 service=batch slot=1 node="" desired=TASK_STATE_COMPLETE"#,
        ]
    );
}
