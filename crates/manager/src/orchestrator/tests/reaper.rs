//! Task reaper: per-slot history limit and deletion of deleted services.

use shoal_proto::api::{ClusterSpec, OrchestrationConfig, Service, Task, TaskState};

use super::support::{global_service, render, replicated_service, task};
use crate::orchestrator::{ClusterObjects, TaskHistoryLimit, reap_tasks};

use TaskState::{Assigned, Failed, Pending, Remove, Running, Shutdown};

fn reap(services: &[Service], tasks: &[Task], limit: TaskHistoryLimit) -> Vec<String> {
    let objects = ClusterObjects::new(services, &[], tasks);
    let snapshot = objects.snapshot();
    render(&reap_tasks(&snapshot, limit))
}

#[test]
fn keeps_the_newest_old_tasks_per_slot_and_never_touches_live_ones() {
    let web = replicated_service("web", 2);
    let agent = global_service("agent");
    let mut tasks = Vec::new();
    for age in 0..4 {
        tasks.push(task(
            &format!("web1-{age}"),
            &web,
            1,
            "a",
            Shutdown,
            Failed,
            age,
        ));
        tasks.push(task(
            &format!("agent-a-{age}"),
            &agent,
            0,
            "a",
            Shutdown,
            Failed,
            age,
        ));
    }
    // Slot 2 has one old task only, and live tasks everywhere are kept.
    tasks.push(task("web2-old", &web, 2, "a", Shutdown, Failed, 0));
    tasks.push(task("web1-live", &web, 1, "a", Running, Running, 9));
    // Desired shutdown but still running on its worker: not deletable yet.
    tasks.push(task("web2-stopping", &web, 2, "a", Shutdown, Running, 1));
    // Never assigned: no worker holds it, so it is history already.
    tasks.push(task("web2-unassigned", &web, 2, "", Shutdown, Pending, 2));
    // Assigned but not reported ended: a worker may hold it.
    tasks.push(task("web2-assigned", &web, 2, "b", Shutdown, Assigned, 3));

    assert_eq!(
        reap(&[web, agent], &tasks, TaskHistoryLimit::KeepAtMost(2)),
        [
            "delete task web1-0@3",
            "delete task web1-1@3",
            "delete task agent-a-0@3",
            "delete task agent-a-1@3",
        ]
    );
}

#[test]
fn deleted_services_lose_their_old_tasks_and_then_their_record() {
    let mut going = replicated_service("going", 1);
    going.pending_delete = true;
    let mut empty = replicated_service("empty", 1);
    empty.pending_delete = true;
    let tasks = [
        task("g1", &going, 1, "a", Remove, Shutdown, 1),
        task("g2", &going, 1, "a", Remove, Running, 2),
        task("orphan", &going, 1, "a", Remove, Failed, 1),
    ];
    let mut tasks = tasks.to_vec();
    tasks[2].service_id = "already-deleted".to_owned();
    assert_eq!(
        reap(&[going.clone(), empty], &tasks, TaskHistoryLimit::Unlimited),
        [
            "delete task g1@3",
            "delete task orphan@3",
            "delete service empty@7"
        ]
    );
    // Once the last task has stopped, the service goes in the same step as its tasks.
    tasks[1].status.get_or_insert_default().set_state(Shutdown);
    assert_eq!(
        reap(&[going], &tasks, TaskHistoryLimit::Unlimited),
        [
            "delete task g1@3",
            "delete task g2@3",
            "delete task orphan@3",
            "delete service going@7"
        ]
    );
}

#[test]
fn the_limit_comes_from_the_cluster_spec_with_swarms_default() {
    let spec_with = |limit: i64| ClusterSpec {
        orchestration: Some(OrchestrationConfig {
            task_history_retention_limit: limit,
        }),
        ..ClusterSpec::default()
    };
    assert_eq!(
        TaskHistoryLimit::of_cluster_spec(None),
        TaskHistoryLimit::KeepAtMost(5)
    );
    assert_eq!(
        TaskHistoryLimit::of_cluster_spec(Some(&ClusterSpec::default())),
        TaskHistoryLimit::KeepAtMost(5)
    );
    assert_eq!(
        TaskHistoryLimit::of_cluster_spec(Some(&spec_with(0))),
        TaskHistoryLimit::KeepAtMost(0)
    );
    assert_eq!(
        TaskHistoryLimit::of_cluster_spec(Some(&spec_with(-1))),
        TaskHistoryLimit::Unlimited
    );
}

#[test]
fn tasks_removed_by_a_scale_down_are_deleted_once_stopped_whatever_the_limit() {
    let web = replicated_service("web", 1);
    let tasks = [
        task("scaled-away-stopped", &web, 2, "a", Remove, Shutdown, 1),
        task("scaled-away-stopping", &web, 3, "a", Remove, Running, 1),
        task("kept", &web, 1, "a", Running, Running, 1),
    ];
    assert_eq!(
        reap(&[web], &tasks, TaskHistoryLimit::KeepAtMost(5)),
        ["delete task scaled-away-stopped@3"]
    );
}
