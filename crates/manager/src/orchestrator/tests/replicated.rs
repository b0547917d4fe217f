//! Replicated orchestrator: slot creation, scale-down preference, node loss, given-up slots.

use std::time::Duration;

use shoal_proto::api::{
    Node, Service, Task, TaskState, Version, node_spec, node_status,
    restart_policy::RestartCondition, service_spec,
};

use super::support::{at, node, node_with, render, replicated_service, task, with_restart_policy};
use crate::orchestrator::{
    ClusterObjects, Command, GivenUpSlots, SequentialTaskIds, SlotKey, created_at, observed_state,
    reconcile_replicated_service,
};

use TaskState::{Complete, Failed, Pending, Ready, Running, Shutdown};

fn reconcile(
    services: &[Service],
    nodes: &[Node],
    tasks: &[Task],
    given_up: &GivenUpSlots,
) -> Vec<Command> {
    let objects = ClusterObjects::new(services, nodes, tasks);
    let snapshot = objects.snapshot();
    let service = &services[0];
    let replicas = match service.spec.as_ref().and_then(|spec| spec.mode.as_ref()) {
        Some(service_spec::Mode::Replicated(mode)) => mode.replicas,
        _ => panic!("test service is not replicated"),
    };
    let mut ids = SequentialTaskIds::new("new-");
    reconcile_replicated_service(&snapshot, service, replicas, given_up, at(100), &mut ids)
}

#[test]
fn creates_one_task_per_missing_slot_with_the_service_spec() {
    let web = replicated_service("web", 3);
    let existing = [task("t1", &web, 2, "a", Running, Running, 1)];
    let commands = reconcile(
        std::slice::from_ref(&web),
        &[node("a")],
        &existing,
        &GivenUpSlots::new(),
    );
    assert_eq!(
        render(&commands),
        [
            r#"create new-000001 service=web slot=1 node="" desired=TASK_STATE_RUNNING"#,
            r#"create new-000002 service=web slot=3 node="" desired=TASK_STATE_RUNNING"#,
        ]
    );
    let Command::CreateTask(created) = &commands[0] else {
        panic!("expected a created task");
    };
    assert_eq!(
        created.spec,
        web.spec.as_ref().and_then(|spec| spec.task.clone())
    );
    assert_eq!(created.spec_version, web.spec_version);
    assert_eq!(
        created.service_annotations,
        web.spec.as_ref().and_then(|spec| spec.annotations.clone())
    );
    assert_eq!(observed_state(created), TaskState::New);
    assert_eq!(
        created_at(created),
        at(100),
        "creation time is the given now"
    );
}

#[test]
fn leaves_full_services_and_ended_or_delayed_tasks_alone() {
    let web = replicated_service("web", 3);
    let tasks = [
        task("t1", &web, 1, "a", Running, Running, 1),
        // Ended but still desired running: the restart supervisor decides, not us.
        task("t2", &web, 2, "a", Running, Failed, 1),
        // Old ended task plus a replacement waiting out its restart delay.
        task("t3", &web, 3, "a", Shutdown, Failed, 1),
        task("t4", &web, 3, "", Ready, TaskState::New, 2),
    ];
    let commands = reconcile(&[web], &[node("a")], &tasks, &GivenUpSlots::new());
    assert_eq!(render(&commands), Vec::<String>::new());
}

#[test]
fn scale_down_removes_tasks_not_running_then_on_busiest_nodes_then_highest_slots() {
    let web = replicated_service("web", 2);
    let tasks = [
        task("t1", &web, 1, "a", Running, Running, 1),
        task("t2", &web, 2, "a", Running, Running, 1),
        task("t3", &web, 3, "", Running, Pending, 1),
        task("t4", &web, 4, "b", Running, Running, 1),
    ];
    let commands = reconcile(
        &[web],
        &[node("a"), node("b")],
        &tasks,
        &GivenUpSlots::new(),
    );
    assert_eq!(
        render(&commands),
        [
            "desire t3@3 TASK_STATE_REMOVE",
            "desire t2@3 TASK_STATE_REMOVE"
        ]
    );
}

#[test]
fn scale_down_of_balanced_running_tasks_removes_the_highest_slots() {
    let web = replicated_service("web", 1);
    let tasks = [
        task("t1", &web, 1, "a", Running, Running, 1),
        task("t2", &web, 2, "b", Running, Running, 1),
        task("t3", &web, 3, "c", Running, Running, 1),
    ];
    let nodes = [node("a"), node("b"), node("c")];
    let commands = reconcile(&[web], &nodes, &tasks, &GivenUpSlots::new());
    assert_eq!(
        render(&commands),
        [
            "desire t3@3 TASK_STATE_REMOVE",
            "desire t2@3 TASK_STATE_REMOVE"
        ]
    );
}

#[test]
fn tasks_on_drained_down_or_removed_nodes_are_replaced_at_once_but_paused_nodes_keep_theirs() {
    let web = replicated_service("web", 4);
    let nodes = [
        node_with(
            "drained",
            node_spec::Availability::Drain,
            node_status::State::Ready,
        ),
        node_with(
            "down",
            node_spec::Availability::Active,
            node_status::State::Down,
        ),
        node_with(
            "paused",
            node_spec::Availability::Pause,
            node_status::State::Ready,
        ),
    ];
    let tasks = [
        task("t1", &web, 1, "drained", Running, Running, 1),
        task("t2", &web, 2, "down", Running, Running, 1),
        task("t3", &web, 3, "gone", Running, Running, 1),
        task("t4", &web, 4, "paused", Running, Running, 1),
    ];
    let commands = reconcile(&[web], &nodes, &tasks, &GivenUpSlots::new());
    assert_eq!(
        render(&commands),
        [
            "desire t1@3 TASK_STATE_SHUTDOWN",
            "desire t2@3 TASK_STATE_SHUTDOWN",
            "desire t3@3 TASK_STATE_SHUTDOWN",
            r#"create new-000001 service=web slot=1 node="" desired=TASK_STATE_RUNNING"#,
            r#"create new-000002 service=web slot=2 node="" desired=TASK_STATE_RUNNING"#,
            r#"create new-000003 service=web slot=3 node="" desired=TASK_STATE_RUNNING"#,
        ]
    );
}

/// The objects keep the nodes losing their tasks as nodes and tasks come and go, in any
/// order, so that a step need not look at every node.
#[test]
fn the_nodes_losing_tasks_follow_their_nodes_and_tasks() {
    let web = replicated_service("web", 2);
    let losing = |objects: &ClusterObjects| -> Vec<String> {
        objects
            .snapshot()
            .nodes_losing_tasks()
            .map(str::to_owned)
            .collect()
    };
    let mut objects = ClusterObjects::new([&web], [&node("a")], []);
    // A task filed before its node joins is on a node that is not (yet) a member.
    objects.insert_task(task("t1", &web, 1, "b", Running, Running, 1));
    assert_eq!(losing(&objects), ["b"]);
    objects.insert_node(node("b"));
    assert!(losing(&objects).is_empty());
    objects.insert_node(node_with(
        "b",
        node_spec::Availability::Active,
        node_status::State::Down,
    ));
    objects.insert_task(task("t2", &web, 2, "a", Running, Running, 1));
    assert_eq!(losing(&objects), ["b"]);
    objects.insert_node(node_with(
        "a",
        node_spec::Availability::Drain,
        node_status::State::Ready,
    ));
    assert_eq!(losing(&objects), ["a", "b"]);
    // The task moves off the down node: nothing is left to lose there.
    objects.insert_task(task("t1", &web, 1, "c", Running, Running, 1));
    assert_eq!(losing(&objects), ["a", "c"]);
    objects.insert_node(node("c"));
    objects.remove_task("t2");
    assert!(losing(&objects).is_empty());
    objects.remove_node("c");
    assert_eq!(losing(&objects), ["c"]);
}

#[test]
fn a_slot_the_restart_condition_gave_up_on_stays_empty_until_the_spec_changes() {
    let web = with_restart_policy(
        replicated_service("web", 2),
        RestartCondition::None,
        Duration::ZERO,
        0,
        Duration::ZERO,
    );
    let tasks = [
        task("t1", &web, 1, "a", Running, Running, 1),
        task("t2", &web, 2, "a", Shutdown, Complete, 1),
    ];
    let commands = reconcile(
        std::slice::from_ref(&web),
        &[node("a")],
        &tasks,
        &GivenUpSlots::new(),
    );
    assert_eq!(render(&commands), Vec::<String>::new());

    let mut updated = web;
    updated.spec_version = Some(Version { index: 2 });
    let commands = reconcile(&[updated], &[node("a")], &tasks, &GivenUpSlots::new());
    assert_eq!(
        render(&commands),
        [r#"create new-000001 service=web slot=2 node="" desired=TASK_STATE_RUNNING"#]
    );
}

#[test]
fn a_slot_whose_attempts_ran_out_stays_empty_but_a_shut_down_slot_is_refilled() {
    let web = replicated_service("web", 2);
    let tasks = [
        task("t1", &web, 1, "a", Shutdown, Failed, 1),
        // Shut down by a manager (scale-down), not ended on its own: refilled.
        task("t2", &web, 2, "a", Shutdown, Shutdown, 1),
    ];
    let mut given_up = GivenUpSlots::new();
    given_up.give_up(
        SlotKey::Replica {
            service_id: "web".to_owned(),
            slot: 1,
        },
        3,
    );
    let commands = reconcile(&[web], &[node("a")], &tasks, &given_up);
    assert_eq!(
        render(&commands),
        [r#"create new-000001 service=web slot=2 node="" desired=TASK_STATE_RUNNING"#]
    );
}
