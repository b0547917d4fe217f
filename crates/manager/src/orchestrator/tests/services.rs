//! The dispatcher over all services: modes are routed, deleted services' tasks removed.

use shoal_proto::api::{Service, TaskState};

use super::support::{at, global_service, node, render, replicated_service, task};
use crate::orchestrator::{
    ClusterObjects, GivenUpSlots, SequentialTaskIds, reconcile_all_services,
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
    let objects = ClusterObjects::new(&services, &nodes, &tasks);
    let snapshot = objects.snapshot();
    let mut ids = SequentialTaskIds::new("new-");
    let commands = reconcile_all_services(&snapshot, &GivenUpSlots::new(), at(5), &mut ids);
    assert_eq!(
        render(&commands),
        [
            r#"create new-000001 service=agent slot=0 node="a" desired=TASK_STATE_RUNNING"#,
            r#"create new-000002 service=web slot=1 node="" desired=TASK_STATE_RUNNING"#,
            "desire g1@3 TASK_STATE_REMOVE",
            "desire l1@3 TASK_STATE_REMOVE",
        ]
    );
}

#[test]
fn a_service_gets_tasks_only_once_its_dependencies_run() {
    use shoal_proto::api::{ServiceDependency, service_dependency::Condition};
    let db = replicated_service("db", 1);
    let mut web = replicated_service("web", 1);
    let mut job_done = ServiceDependency {
        service: "migrate".into(),
        condition: Condition::CompletedSuccessfully as i32,
        required: false,
    };
    if let Some(spec) = web.spec.as_mut() {
        spec.depends_on = vec![
            ServiceDependency {
                service: "db".into(),
                condition: Condition::Healthy as i32,
                required: true,
            },
            job_done.clone(),
        ];
    }
    let step = |tasks: &[shoal_proto::api::Task], services: &[Service]| {
        let nodes = [node("a")];
        let objects = ClusterObjects::new(services, &nodes, tasks);
        let snapshot = objects.snapshot();
        let mut ids = SequentialTaskIds::new("new-");
        render(&reconcile_all_services(
            &snapshot,
            &GivenUpSlots::new(),
            at(5),
            &mut ids,
        ))
    };
    let services = [db.clone(), web.clone()];
    // db's task is not running yet, so web waits.
    let starting = [task("d1", &db, 1, "a", Running, TaskState::Starting, 1)];
    assert!(step(&starting, &services).is_empty());
    let running = [task("d1", &db, 1, "a", Running, Running, 1)];
    assert_eq!(
        step(&running, &services),
        [r#"create new-000001 service=web slot=1 node="" desired=TASK_STATE_RUNNING"#]
    );
    // A required dependency that does not exist is never met; an optional one is ignored.
    let creates = |lines: Vec<String>| lines.iter().any(|line| line.starts_with("create"));
    assert!(!creates(step(&running, &[web.clone()])));
    job_done.required = true;
    if let Some(spec) = web.spec.as_mut() {
        spec.depends_on[1] = job_done;
    }
    assert!(!creates(step(&running, &[db, web])));
}
