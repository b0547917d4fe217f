//! Restart supervisor: conditions, delays, attempt limits within a window, jobs and nodes.

use std::time::Duration;

use shoal_proto::api::{
    Node, Service, Task, TaskState, node_spec, node_status, restart_policy::RestartCondition,
};

use super::support::{
    apply, at, global_service, node, node_with, render, replicated_job, replicated_service, report,
    task, with_restart_policy,
};
use crate::orchestrator::{
    ClusterObjects, ClusterTime, Command, RestartSupervisor, SequentialTaskIds, SlotKey,
};

use TaskState::{Complete, Failed, Ready, Running, Shutdown};

fn step(
    supervisor: &mut RestartSupervisor,
    services: &[Service],
    nodes: &[Node],
    tasks: &[Task],
    now: ClusterTime,
    ids: &mut SequentialTaskIds,
) -> Vec<Command> {
    let objects = ClusterObjects::new(services, nodes, tasks);
    let snapshot = objects.snapshot();
    supervisor.step(&snapshot, now, ids)
}

fn policy(
    condition: RestartCondition,
    delay_seconds: u64,
    max_attempts: u64,
    window_seconds: u64,
) -> impl Fn(Service) -> Service {
    move |service| {
        with_restart_policy(
            service,
            condition,
            Duration::from_secs(delay_seconds),
            max_attempts,
            Duration::from_secs(window_seconds),
        )
    }
}

#[test]
fn default_policy_replaces_after_five_seconds_through_a_ready_task() {
    let web = replicated_service("web", 1);
    let services = [web.clone()];
    let nodes = [node("a")];
    let mut tasks = vec![task("t1", &web, 1, "a", Running, Failed, 1)];
    let mut supervisor = RestartSupervisor::new();
    let mut ids = SequentialTaskIds::new("new-");

    let commands = step(&mut supervisor, &services, &nodes, &tasks, at(10), &mut ids);
    assert_eq!(
        render(&commands),
        [
            "desire t1@3 TASK_STATE_SHUTDOWN",
            r#"create new-000001 service=web slot=1 node="" desired=TASK_STATE_READY"#,
            "wake up at 15s",
        ]
    );
    apply(&mut tasks, &commands);

    let too_early = step(&mut supervisor, &services, &nodes, &tasks, at(14), &mut ids);
    assert_eq!(render(&too_early), ["wake up at 15s"]);

    let due = step(&mut supervisor, &services, &nodes, &tasks, at(15), &mut ids);
    assert_eq!(render(&due), ["desire new-000001@0 TASK_STATE_RUNNING"]);
}

#[test]
fn the_restart_condition_decides_which_endings_are_replaced() {
    let table = [
        (RestartCondition::Any, Complete, true),
        (RestartCondition::Any, Failed, true),
        (RestartCondition::Any, TaskState::Rejected, true),
        (RestartCondition::OnFailure, Complete, false),
        (RestartCondition::OnFailure, Failed, true),
        (RestartCondition::None, Failed, false),
        (RestartCondition::None, Complete, false),
    ];
    for (condition, ended_in, expect_replacement) in table {
        let web = policy(condition, 0, 0, 0)(replicated_service("web", 1));
        let tasks = [task("t1", &web, 1, "a", Running, ended_in, 1)];
        let mut ids = SequentialTaskIds::new("new-");
        let commands = step(
            &mut RestartSupervisor::new(),
            &[web],
            &[node("a")],
            &tasks,
            at(10),
            &mut ids,
        );
        let mut expected = vec!["desire t1@3 TASK_STATE_SHUTDOWN".to_owned()];
        if expect_replacement {
            expected.push(
                r#"create new-000001 service=web slot=1 node="" desired=TASK_STATE_RUNNING"#
                    .to_owned(),
            );
        }
        assert_eq!(
            render(&commands),
            expected,
            "{condition:?} after {ended_in:?}"
        );
    }
}

#[test]
fn max_attempts_stops_restarting_and_marks_the_slot_given_up() {
    let web = policy(RestartCondition::Any, 0, 2, 0)(replicated_service("web", 1));
    let services = [web.clone()];
    let nodes = [node("a")];
    let mut tasks = vec![task("t1", &web, 1, "a", Running, Failed, 1)];
    let mut supervisor = RestartSupervisor::new();
    let mut ids = SequentialTaskIds::new("new-");
    let slot = SlotKey::Replica {
        service_id: "web".to_owned(),
        slot: 1,
    };

    for (second, replacement) in [(10, "new-000001"), (20, "new-000002")] {
        let commands = step(
            &mut supervisor,
            &services,
            &nodes,
            &tasks,
            at(second),
            &mut ids,
        );
        assert_eq!(commands.len(), 2, "restart at {second}s: {commands:?}");
        apply(&mut tasks, &commands);
        report(&mut tasks, replacement, Failed);
    }
    let commands = step(&mut supervisor, &services, &nodes, &tasks, at(30), &mut ids);
    assert_eq!(
        render(&commands),
        ["desire new-000002@0 TASK_STATE_SHUTDOWN"]
    );
    assert_eq!(
        supervisor.given_up_slots().max_attempts_reached(&slot),
        Some(2)
    );
}

#[test]
fn only_restarts_inside_the_window_count_towards_max_attempts() {
    let web = policy(RestartCondition::Any, 0, 1, 10)(replicated_service("web", 1));
    let services = [web.clone()];
    let nodes = [node("a")];
    for (second_failure_at, expect_restart) in [(5, false), (20, true)] {
        let mut tasks = vec![task("t1", &web, 1, "a", Running, Failed, 0)];
        let mut supervisor = RestartSupervisor::new();
        let mut ids = SequentialTaskIds::new("new-");
        let first = step(&mut supervisor, &services, &nodes, &tasks, at(0), &mut ids);
        apply(&mut tasks, &first);
        report(&mut tasks, "new-000001", Failed);
        let second = step(
            &mut supervisor,
            &services,
            &nodes,
            &tasks,
            at(second_failure_at),
            &mut ids,
        );
        assert_eq!(
            second.len() == 2,
            expect_restart,
            "second failure at {second_failure_at}s: {second:?}"
        );
    }
}

#[test]
fn repeating_a_step_whose_transaction_failed_counts_the_restart_once() {
    let web = policy(RestartCondition::Any, 0, 1, 0)(replicated_service("web", 1));
    let services = [web.clone()];
    let nodes = [node("a")];
    let tasks = vec![task("t1", &web, 1, "a", Running, Failed, 0)];
    let mut supervisor = RestartSupervisor::new();
    let mut ids = SequentialTaskIds::new("new-");
    let first = step(&mut supervisor, &services, &nodes, &tasks, at(1), &mut ids);
    let retried = step(&mut supervisor, &services, &nodes, &tasks, at(2), &mut ids);
    assert_eq!(first.len(), 2);
    assert_eq!(retried.len(), 2, "the retry restarts again: {retried:?}");
}

#[test]
fn global_replacements_stay_on_their_node_unless_the_node_is_excluded() {
    let agent = policy(RestartCondition::Any, 0, 0, 0)(global_service("agent"));
    let nodes = [
        node("a"),
        node_with(
            "drained",
            node_spec::Availability::Drain,
            node_status::State::Ready,
        ),
    ];
    let tasks = [
        task("t1", &agent, 0, "a", Running, Failed, 1),
        task("t2", &agent, 0, "drained", Running, Failed, 1),
    ];
    let mut ids = SequentialTaskIds::new("new-");
    let commands = step(
        &mut RestartSupervisor::new(),
        &[agent],
        &nodes,
        &tasks,
        at(10),
        &mut ids,
    );
    assert_eq!(
        render(&commands),
        [
            "desire t1@3 TASK_STATE_SHUTDOWN",
            r#"create new-000001 service=agent slot=0 node="a" desired=TASK_STATE_RUNNING"#,
        ]
    );
}

#[test]
fn job_tasks_that_complete_are_left_alone_and_failed_ones_rerun_to_completion() {
    let job = policy(RestartCondition::Any, 0, 0, 0)(replicated_job("batch", 2, 2));
    let tasks = [
        task("t1", &job, 1, "a", Complete, Complete, 1),
        task("t2", &job, 2, "a", Complete, Failed, 1),
    ];
    let mut ids = SequentialTaskIds::new("new-");
    let commands = step(
        &mut RestartSupervisor::new(),
        &[job],
        &[node("a")],
        &tasks,
        at(10),
        &mut ids,
    );
    assert_eq!(
        render(&commands),
        [
            "desire t2@3 TASK_STATE_SHUTDOWN",
            r#"create new-000001 service=batch slot=2 node="" desired=TASK_STATE_COMPLETE"#,
        ]
    );
}

#[test]
fn a_delayed_task_inherited_from_another_leader_starts_at_once() {
    let web = replicated_service("web", 1);
    let tasks = [
        task("t1", &web, 1, "a", Shutdown, Failed, 1),
        task("t2", &web, 1, "", Ready, TaskState::New, 2),
    ];
    let mut ids = SequentialTaskIds::new("new-");
    let commands = step(
        &mut RestartSupervisor::new(),
        &[web],
        &[node("a")],
        &tasks,
        at(10),
        &mut ids,
    );
    assert_eq!(render(&commands), ["desire t2@3 TASK_STATE_RUNNING"]);
}

#[test]
fn a_held_task_starts_only_once_the_old_task_of_its_slot_has_stopped() {
    let web = replicated_service("web", 1);
    let held = |old_observed: TaskState| {
        [
            task("old", &web, 1, "a", Shutdown, old_observed, 1),
            task("new", &web, 1, "", Ready, TaskState::New, 2),
        ]
    };
    let start = |tasks: &[Task], nodes: &[Node]| {
        let mut ids = SequentialTaskIds::new("new-");
        render(&step(
            &mut RestartSupervisor::new(),
            std::slice::from_ref(&web),
            nodes,
            tasks,
            at(10),
            &mut ids,
        ))
    };
    assert!(start(&held(Running), &[node("a")]).is_empty());
    assert_eq!(
        start(&held(Shutdown), &[node("a")]),
        ["desire new@3 TASK_STATE_RUNNING"]
    );
    // A down node never reports its task stopping, so it holds nothing back.
    let down = node_with(
        "a",
        node_spec::Availability::Active,
        node_status::State::Down,
    );
    assert_eq!(
        start(&held(Running), &[down]),
        ["desire new@3 TASK_STATE_RUNNING"]
    );
}

/// What the supervisor remembers per slot is forgotten with the service, and only then; the
/// check visits each service once, whatever its number of slots.
#[test]
fn slots_are_forgotten_with_their_service_only() {
    let replica = |service: &str, slot: u64| SlotKey::Replica {
        service_id: service.to_owned(),
        slot,
    };
    let per_node = |service: &str, node: &str| SlotKey::Node {
        service_id: service.to_owned(),
        node_id: node.to_owned(),
    };
    let slots: std::collections::BTreeMap<SlotKey, ()> = [
        replica("a", 1),
        replica("a", u64::MAX),
        replica("a0", 2),
        replica("b", 1),
        per_node("a", "n1"),
        per_node("a", "n2"),
        per_node("a\0", "n1"),
        per_node("c", "n1"),
    ]
    .into_iter()
    .map(|key| (key, ()))
    .collect();

    let mut visited = Vec::new();
    let mut kept = slots.clone();
    SlotKey::retain_services(&mut kept, |service| {
        visited.push(service.to_owned());
        true
    });
    assert_eq!(kept, slots);
    assert_eq!(visited, ["a", "a0", "b", "a", "a\0", "c"]);

    for gone in ["a", "a\0", "c"] {
        let mut kept = slots.clone();
        SlotKey::retain_services(&mut kept, |service| service != gone);
        let expected: Vec<&SlotKey> = slots
            .keys()
            .filter(|slot| slot.service_id() != gone)
            .collect();
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            expected,
            "{gone:?} deleted"
        );
    }
}
