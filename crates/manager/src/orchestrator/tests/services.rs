//! The dispatcher over all services: modes are routed, deleted services' tasks removed.

use shoal_proto::api::{Service, TaskState};

use super::support::{at, global_service, node, render, replicated_service, task};
use crate::orchestrator::{
    ClusterSnapshot, GivenUpSlots, SequentialTaskIds, reconcile_all_services,
};

use TaskState::{Remove, Running, Shutdown};

#[test]
fn every_mode_is_reconciled_and_tasks_of_deleted_services_are_removed() {
    let web = replicated_service("web", 1);
    let agent = global_service("agent");
    let mut leaving: Service = replicated_service("leaving", 1);
    leaving.pending_delete = true;
    let gone = replicated_service("gone", 1);
    let tasks = [
        task("l1", &leaving, 1, "a", Running, Running, 1),
        task("l2", &leaving, 1, "a", Shutdown, Shutdown, 0),
        task("g1", &gone, 1, "a", Running, Running, 1),
        task("g2", &gone, 2, "a", Remove, Running, 1),
    ];
    let services = [web, agent, leaving];
    let nodes = [node("a")];
    let snapshot = ClusterSnapshot::new(&services, &nodes, &tasks);
    let mut ids = SequentialTaskIds::new("new-");
    let commands = reconcile_all_services(&snapshot, &GivenUpSlots::new(), at(5), &mut ids);
    assert_eq!(
        render(&commands),
        [
            r#"create new-000001 service=web slot=1 node="" desired=TASK_STATE_RUNNING"#,
            r#"create new-000002 service=agent slot=0 node="a" desired=TASK_STATE_RUNNING"#,
            "desire l1@3 TASK_STATE_REMOVE",
            "desire g1@3 TASK_STATE_REMOVE",
        ]
    );
}
