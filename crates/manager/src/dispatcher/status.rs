//! Task status reports from workers turned into store changes: the pure half of the batched
//! status writer. A worker may only report on tasks of its own node, and a task's observed
//! state only moves forward.

use std::collections::BTreeMap;

use raft_store::Change;
use shoal_proto::api::{Task, TaskStatus};

use crate::objects;

/// One worker's report.
#[derive(Clone, Debug)]
pub(crate) struct NodeReport {
    pub(crate) node_id: String,
    pub(crate) task_id: String,
    pub(crate) status: TaskStatus,
}

/// The changes that apply `reports` to the tasks as read (`task_id` → task). Reports on
/// unknown tasks, on tasks of another node, and ones that would move a task's state
/// backwards are dropped; several reports on one task become one change with the furthest.
pub(crate) fn status_changes<'a>(
    reports: impl IntoIterator<Item = &'a NodeReport>,
    read_task: impl Fn(&str) -> Option<Task>,
) -> Vec<Change> {
    let mut furthest: BTreeMap<&str, &NodeReport> = BTreeMap::new();
    for report in reports {
        let keep = furthest
            .get(report.task_id.as_str())
            .is_none_or(|known| report.status.state >= known.status.state);
        if keep {
            furthest.insert(report.task_id.as_str(), report);
        }
    }
    furthest
        .into_values()
        .filter_map(|report| {
            let mut task = read_task(&report.task_id)?;
            if task.node_id != report.node_id {
                return None;
            }
            let current = task.status.clone().unwrap_or_default();
            if report.status.state < current.state || report.status == current {
                return None;
            }
            task.status = Some(report.status.clone());
            Some(objects::update(&task))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{Meta, TaskState, Version};

    use super::*;

    fn task(id: &str, node: &str, state: TaskState) -> Task {
        let mut status = TaskStatus::default();
        status.set_state(state);
        Task {
            id: id.to_owned(),
            node_id: node.to_owned(),
            status: Some(status),
            meta: Some(Meta {
                version: Some(Version { index: 7 }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn report(node: &str, task: &str, state: TaskState, message: &str) -> NodeReport {
        let mut status = TaskStatus {
            message: message.to_owned(),
            ..Default::default()
        };
        status.set_state(state);
        NodeReport {
            node_id: node.to_owned(),
            task_id: task.to_owned(),
            status,
        }
    }

    fn changed_ids(changes: &[Change]) -> Vec<&str> {
        changes.iter().map(Change::id).collect()
    }

    #[test]
    fn reports_move_tasks_forward_on_their_own_node_only() {
        let tasks = [
            task("a", "n1", TaskState::Starting),
            task("b", "n1", TaskState::Running),
            task("c", "n2", TaskState::Assigned),
        ];
        let read = |id: &str| tasks.iter().find(|task| task.id == id).cloned();
        let reports = [
            report("n1", "a", TaskState::Running, "started"),
            report("n1", "b", TaskState::Starting, "late report"),
            report("n1", "c", TaskState::Running, "not my task"),
            report("n1", "gone", TaskState::Running, "deleted task"),
        ];
        assert_eq!(changed_ids(&status_changes(&reports, read)), ["a"]);
    }

    #[test]
    fn several_reports_on_one_task_become_one_change() {
        let tasks = [task("a", "n1", TaskState::Assigned)];
        let read = |id: &str| tasks.iter().find(|task| task.id == id).cloned();
        let reports = [
            report("n1", "a", TaskState::Running, "started"),
            report("n1", "a", TaskState::Starting, "starting"),
        ];
        let changes = status_changes(&reports, read);
        assert_eq!(changed_ids(&changes), ["a"]);
        let Change::Update { data, .. } = &changes[0] else {
            panic!("expected an update, got {changes:?}");
        };
        let written = <Task as prost::Message>::decode(&data[..]).unwrap();
        assert_eq!(written.status.unwrap().state(), TaskState::Running);
    }
}
