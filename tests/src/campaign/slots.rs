//! The slot checker: every replicated service runs as many slots as it has replicas, each
//! exactly once, on a live node, in exactly one container there, and no container runs that no
//! running task accounts for.

use std::collections::{BTreeMap, BTreeSet};

/// A task as a manager lists it (`service ps`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedTask {
    pub id: String,
    pub service: String,
    pub slot: u64,
    /// The hostname of the node it is assigned to.
    pub node: String,
    /// Desired and current state both running.
    pub running: bool,
}

/// A running container as a host's engine lists it, named `<service>.<slot>.<task id>` by the
/// worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedContainer {
    /// The hostname of the host it runs on.
    pub host: String,
    pub name: String,
}

/// Checks the tasks and containers against the services' replica counts (`replicas`, by
/// service name) and the nodes that are up (`live_nodes`, by hostname). `Err` lists every slot
/// that runs more than once, every service running another number of slots than its replicas,
/// every task on a node that is not up, every running task without exactly one container, and
/// every container no running task accounts for (orphaned).
pub fn check_slots(
    replicas: &BTreeMap<String, u64>,
    tasks: &[ObservedTask],
    live_nodes: &BTreeSet<String>,
    containers: &[ObservedContainer],
) -> Result<(), Vec<String>> {
    let mut violations = Vec::new();
    let running: Vec<&ObservedTask> = tasks.iter().filter(|task| task.running).collect();
    for (service, wanted) in replicas {
        let mut by_slot: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for task in running.iter().filter(|task| &task.service == service) {
            by_slot.entry(task.slot).or_default().push(&task.id);
        }
        for (slot, ids) in &by_slot {
            if ids.len() > 1 {
                violations.push(format!(
                    "{service}.{slot}: runs {} times: {ids:?}",
                    ids.len()
                ));
            }
        }
        // Which slots a scaled-down service keeps is the orchestrator's choice (Swarm's too),
        // so only their number is checked, not that they are 1 to N.
        if by_slot.len() as u64 != *wanted {
            violations.push(format!(
                "{service}: slots {:?} run, but the service has {wanted} replicas",
                by_slot.keys().collect::<Vec<_>>()
            ));
        }
    }
    let mut accounted: BTreeSet<(&str, String)> = BTreeSet::new();
    for task in &running {
        if !replicas.contains_key(&task.service) {
            violations.push(format!(
                "task {} of {}: running, but the service does not exist",
                task.id, task.service
            ));
        }
        if !live_nodes.contains(&task.node) {
            violations.push(format!(
                "{}.{}: runs on {:?}, which is not up",
                task.service, task.slot, task.node
            ));
        }
        let name = format!("{}.{}.{}", task.service, task.slot, task.id);
        let copies = containers
            .iter()
            .filter(|container| container.host == task.node && container.name == name)
            .count();
        if copies != 1 {
            violations.push(format!(
                "{}.{}: task {} has {copies} containers on {}",
                task.service, task.slot, task.id, task.node
            ));
        }
        accounted.insert((&task.node, name));
    }
    for container in containers {
        if !accounted.contains(&(container.host.as_str(), container.name.clone())) {
            violations.push(format!(
                "container {} on {}: no running task accounts for it (orphaned)",
                container.name, container.host
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, service: &str, slot: u64, node: &str, running: bool) -> ObservedTask {
        ObservedTask {
            id: id.into(),
            service: service.into(),
            slot,
            node: node.into(),
            running,
        }
    }

    fn container(host: &str, name: &str) -> ObservedContainer {
        ObservedContainer {
            host: host.into(),
            name: name.into(),
        }
    }

    fn replicas(services: &[(&str, u64)]) -> BTreeMap<String, u64> {
        services
            .iter()
            .map(|(name, count)| ((*name).to_owned(), *count))
            .collect()
    }

    fn nodes(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn one_task_per_slot_each_in_one_container_on_a_live_node_checks_out() {
        let tasks = [
            task("t1", "web", 1, "h1", true),
            task("t2", "web", 2, "h2", true),
            // History: a task that ran before and was shut down, its container gone.
            task("t0", "web", 1, "h3", false),
        ];
        let containers = [container("h1", "web.1.t1"), container("h2", "web.2.t2")];
        let result = check_slots(
            &replicas(&[("web", 2), ("idle", 0)]),
            &tasks,
            &nodes(&["h1", "h2", "h3"]),
            &containers,
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_scaled_down_service_may_keep_any_of_its_slots() {
        let tasks = [task("t2", "web", 2, "h1", true)];
        let containers = [container("h1", "web.2.t2")];
        let result = check_slots(
            &replicas(&[("web", 1)]),
            &tasks,
            &nodes(&["h1"]),
            &containers,
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_slot_run_twice_or_too_few_slots_are_reported() {
        let tasks = [
            task("t1", "web", 1, "h1", true),
            task("t9", "web", 1, "h2", true),
        ];
        let containers = [container("h1", "web.1.t1"), container("h2", "web.1.t9")];
        let violations = check_slots(
            &replicas(&[("web", 2)]),
            &tasks,
            &nodes(&["h1", "h2"]),
            &containers,
        )
        .unwrap_err();
        assert_eq!(
            violations,
            [
                "web.1: runs 2 times: [\"t1\", \"t9\"]",
                "web: slots [1] run, but the service has 2 replicas"
            ]
        );
    }

    #[test]
    fn a_task_on_a_dead_node_or_beyond_the_replica_count_is_reported() {
        let tasks = [
            task("t1", "web", 1, "h4", true),
            task("t2", "web", 2, "h1", true),
        ];
        let containers = [container("h4", "web.1.t1"), container("h1", "web.2.t2")];
        let violations = check_slots(
            &replicas(&[("web", 1)]),
            &tasks,
            &nodes(&["h1"]),
            &containers,
        )
        .unwrap_err();
        assert_eq!(
            violations,
            [
                "web: slots [1, 2] run, but the service has 1 replicas",
                "web.1: runs on \"h4\", which is not up"
            ]
        );
    }

    #[test]
    fn orphaned_and_missing_containers_are_reported() {
        let tasks = [task("t1", "web", 1, "h1", true)];
        // The task's container is on the wrong host, and an old task's container still runs.
        let containers = [container("h2", "web.1.t1"), container("h1", "web.1.t0")];
        let violations = check_slots(
            &replicas(&[("web", 1)]),
            &tasks,
            &nodes(&["h1", "h2"]),
            &containers,
        )
        .unwrap_err();
        assert_eq!(
            violations,
            [
                "web.1: task t1 has 0 containers on h1",
                "container web.1.t1 on h2: no running task accounts for it (orphaned)",
                "container web.1.t0 on h1: no running task accounts for it (orphaned)"
            ]
        );
    }

    #[test]
    fn a_running_task_of_a_removed_service_is_reported() {
        let tasks = [task("t1", "gone", 1, "h1", true)];
        let containers = [container("h1", "gone.1.t1")];
        let violations =
            check_slots(&replicas(&[]), &tasks, &nodes(&["h1"]), &containers).unwrap_err();
        assert_eq!(
            violations,
            ["task t1 of gone: running, but the service does not exist"]
        );
    }
}
