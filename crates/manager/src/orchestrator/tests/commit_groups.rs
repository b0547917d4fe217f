//! Commit groups: a service's change first, then each slot's changes together.

use shoal_proto::api::{TaskState, Version};

use super::support::{node, render, replicated_service, task};
use crate::orchestrator::{
    ClusterObjects, Command, SequentialTaskIds, commit_groups, reconcile_service_update,
};

use TaskState::{Failed, Running, Shutdown};

#[test]
fn a_service_change_commits_first_and_each_slot_commits_whole() {
    let old = replicated_service("web", 3);
    let mut new = old.clone();
    new.spec_version = Some(Version { index: 2 });
    new.spec.as_mut().unwrap().update = Some(shoal_proto::api::UpdateConfig {
        parallelism: 0,
        ..Default::default()
    });
    let tasks = vec![
        task("t1", &old, 1, "a", Running, Running, 1),
        task("t2", &old, 2, "a", Running, Running, 1),
        task("t3", &old, 3, "a", Running, Running, 1),
    ];
    let nodes = [node("a")];
    let services = [new.clone()];
    let objects = ClusterObjects::new(&services, &nodes, &tasks);
    let snapshot = objects.snapshot();
    let mut ids = SequentialTaskIds::new("new-");
    let mut commands = reconcile_service_update(&snapshot, &new, super::support::at(10), &mut ids);
    // Cores emit in their own order; the groups do not depend on it.
    commands.reverse();
    let groups: Vec<Vec<String>> =
        commit_groups(|id| tasks.iter().find(|task| task.id == id), commands)
            .iter()
            .map(|group| render(group))
            .collect();
    assert_eq!(
        groups,
        [
            vec!["update service web@7 spec=2 UPDATE_STATE_UPDATING \"update in progress\""],
            vec![
                "create new-000003 service=web slot=3 node=\"\" desired=TASK_STATE_READY",
                "desire t3@3 TASK_STATE_SHUTDOWN",
            ],
            vec![
                "create new-000002 service=web slot=2 node=\"\" desired=TASK_STATE_READY",
                "desire t2@3 TASK_STATE_SHUTDOWN",
            ],
            vec![
                "create new-000001 service=web slot=1 node=\"\" desired=TASK_STATE_READY",
                "desire t1@3 TASK_STATE_SHUTDOWN",
            ],
        ]
    );
}

#[test]
fn wake_ups_are_left_out_and_unknown_tasks_stand_alone() {
    let web = replicated_service("web", 1);
    let tasks = [task("t1", &web, 1, "a", Shutdown, Failed, 1)];
    let commands = vec![
        Command::WakeUpAt {
            at: super::support::at(20),
        },
        Command::DeleteTask {
            task_id: "gone".into(),
            read_version: 4,
        },
        Command::DeleteTask {
            task_id: "t1".into(),
            read_version: 3,
        },
        Command::DeleteService {
            service_id: "old".into(),
            read_version: 9,
        },
    ];
    let groups: Vec<Vec<String>> =
        commit_groups(|id| tasks.iter().find(|task| task.id == id), commands)
            .iter()
            .map(|group| render(group))
            .collect();
    assert_eq!(
        groups,
        [
            vec!["delete service old@9"],
            vec!["delete task gone@4"],
            vec!["delete task t1@3"],
        ]
    );
}
