//! Global orchestrator and global jobs: one task per eligible node.

use std::time::Duration;

use shoal_proto::api::{
    JobStatus, Node, Service, Task, TaskState, Version, node_spec, node_status,
    restart_policy::RestartCondition,
};

use super::support::{
    at, global_job, global_service, node, node_with, render, task, with_constraints,
    with_node_label, with_restart_policy,
};
use crate::orchestrator::{
    ClusterObjects, Command, GivenUpSlots, SequentialTaskIds, reconcile_global_service,
};

use TaskState::{Complete, Failed, Running, Shutdown};

fn reconcile(services: &[Service], nodes: &[Node], tasks: &[Task], is_job: bool) -> Vec<Command> {
    let objects = ClusterObjects::new(services, nodes, tasks);
    let snapshot = objects.snapshot();
    let mut ids = SequentialTaskIds::new("new-");
    reconcile_global_service(
        &snapshot,
        &services[0],
        is_job,
        &GivenUpSlots::new(),
        at(100),
        &mut ids,
    )
}

#[test]
fn one_task_per_ready_active_node_matching_the_constraints() {
    let agent = with_constraints(global_service("agent"), &["node.labels.zone==east"]);
    let east = |id: &str| with_node_label(node(id), "zone", "east");
    let nodes = [
        east("has-one"),
        east("needs-one"),
        with_node_label(node("west"), "zone", "west"),
        with_node_label(
            node_with(
                "paused",
                node_spec::Availability::Pause,
                node_status::State::Ready,
            ),
            "zone",
            "east",
        ),
        with_node_label(
            node_with(
                "not-ready-yet",
                node_spec::Availability::Active,
                node_status::State::Unknown,
            ),
            "zone",
            "east",
        ),
    ];
    let tasks = [task("t1", &agent, 0, "has-one", Running, Running, 1)];
    let commands = reconcile(&[agent], &nodes, &tasks, false);
    assert_eq!(
        render(&commands),
        [r#"create new-000001 service=agent slot=0 node="needs-one" desired=TASK_STATE_RUNNING"#]
    );
}

#[test]
fn tasks_on_drained_down_removed_or_no_longer_matching_nodes_are_shut_down() {
    let agent = with_constraints(global_service("agent"), &["node.labels.zone==east"]);
    let nodes = [
        with_node_label(
            node_with(
                "drained",
                node_spec::Availability::Drain,
                node_status::State::Ready,
            ),
            "zone",
            "east",
        ),
        with_node_label(
            node_with(
                "down",
                node_spec::Availability::Active,
                node_status::State::Down,
            ),
            "zone",
            "east",
        ),
        with_node_label(node("relabelled"), "zone", "west"),
    ];
    let tasks = [
        task("t1", &agent, 0, "drained", Running, Running, 1),
        task("t2", &agent, 0, "down", Running, Running, 1),
        task("t3", &agent, 0, "relabelled", Running, Running, 1),
        task("t4", &agent, 0, "gone", Running, Running, 1),
        // Already shut down: nothing to do.
        task("t5", &agent, 0, "drained", Shutdown, Shutdown, 1),
    ];
    let commands = reconcile(&[agent], &nodes, &tasks, false);
    assert_eq!(
        render(&commands),
        [
            "desire t4@3 TASK_STATE_SHUTDOWN",
            "desire t2@3 TASK_STATE_SHUTDOWN",
            "desire t1@3 TASK_STATE_SHUTDOWN",
            "desire t3@3 TASK_STATE_SHUTDOWN",
        ]
    );
}

#[test]
fn a_node_whose_task_ended_under_restart_condition_none_gets_no_new_task() {
    let agent = with_restart_policy(
        global_service("agent"),
        RestartCondition::None,
        Duration::ZERO,
        0,
        Duration::ZERO,
    );
    let tasks = [
        task("t1", &agent, 0, "a", Shutdown, Failed, 1),
        // A drain-and-reactivate leaves a manager-initiated shutdown: refilled.
        task("t2", &agent, 0, "b", Shutdown, Shutdown, 1),
    ];
    let commands = reconcile(&[agent], &[node("a"), node("b")], &tasks, false);
    assert_eq!(
        render(&commands),
        [r#"create new-000001 service=agent slot=0 node="b" desired=TASK_STATE_RUNNING"#]
    );
}

#[test]
fn a_global_job_runs_once_per_node_and_reruns_for_a_new_iteration() {
    let mut migrate = global_job("migrate");
    migrate.job_status = Some(JobStatus {
        job_iteration: Some(Version { index: 2 }),
        last_execution: None,
    });
    let mut previous_iteration = global_job("migrate");
    previous_iteration.job_status = Some(JobStatus {
        job_iteration: Some(Version { index: 1 }),
        last_execution: None,
    });
    let tasks = [
        task("t1", &migrate, 0, "done", Complete, Complete, 1),
        task("t2", &migrate, 0, "busy", Complete, Running, 1),
        // Still running from the previous iteration: stopped, and the node runs again.
        task("t3", &previous_iteration, 0, "stale", Complete, Running, 1),
    ];
    let nodes = [node("done"), node("busy"), node("stale"), node("fresh")];
    let commands = reconcile(&[migrate], &nodes, &tasks, true);
    assert_eq!(
        render(&commands),
        [
            "desire t3@3 TASK_STATE_SHUTDOWN",
            r#"create new-000001 service=migrate slot=0 node="fresh" desired=TASK_STATE_COMPLETE"#,
            r#"create new-000002 service=migrate slot=0 node="stale" desired=TASK_STATE_COMPLETE"#,
        ]
    );
    let Command::CreateTask(created) = &commands[1] else {
        panic!("expected a created task");
    };
    assert_eq!(created.job_iteration, Some(Version { index: 2 }));
}
