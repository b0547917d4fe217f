//! What a node is assigned: the pure half of the assignment stream. The set is sent again only
//! when something the worker acts on changes (a task added or dropped, or its desired state),
//! not on every status report.

use std::collections::BTreeSet;

use raft_store::StoreView;
use shoal_proto::api::{AssignmentsMessage, Config, Secret, Task, TaskState, task_spec};

use crate::error::ManagerError;
use crate::objects::{self, ClusterObject};
use crate::orchestrator::{is_terminal, observed_state};

/// What decides whether a new set must be sent: each task's id and desired state.
pub(crate) type AssignmentKey = Vec<(String, i32)>;

/// Whether a worker must hold `task`: it is on the node and scheduled there, and it is not a
/// removed task that has already stopped.
pub(crate) fn is_assigned_to(task: &Task, node_id: &str) -> bool {
    let observed = observed_state(task);
    task.node_id == node_id
        && observed as i32 >= TaskState::Assigned as i32
        && !(task.desired_state >= TaskState::Remove as i32 && is_terminal(observed))
}

/// The node's assignment set at `view`, its change key, and the secrets and configs its tasks
/// reference.
pub(crate) fn assignment_set(
    view: &StoreView<'_>,
    node_id: &str,
) -> Result<(AssignmentKey, AssignmentsMessage), ManagerError> {
    let mut tasks: Vec<Task> = objects::decode_all::<Task>(view.list(Task::KIND))?
        .into_iter()
        .filter(|task| is_assigned_to(task, node_id))
        .collect();
    tasks.sort_by(|left, right| left.id.cmp(&right.id));
    let key = tasks
        .iter()
        .map(|task| (task.id.clone(), task.desired_state))
        .collect();
    let mut secret_ids = BTreeSet::new();
    let mut config_ids = BTreeSet::new();
    for task in &tasks {
        if let Some(task_spec::Runtime::Container(container)) =
            task.spec.as_ref().and_then(|spec| spec.runtime.as_ref())
        {
            secret_ids.extend(container.secrets.iter().map(|s| s.secret_id.clone()));
            config_ids.extend(container.configs.iter().map(|c| c.config_id.clone()));
        }
    }
    let secrets = secret_ids
        .iter()
        .filter_map(|id| view.get(Secret::KIND, id))
        .map(objects::decode::<Secret>)
        .collect::<Result<_, _>>()?;
    let configs = config_ids
        .iter()
        .filter_map(|id| view.get(Config::KIND, id))
        .map(objects::decode::<Config>)
        .collect::<Result<_, _>>()?;
    Ok((
        key,
        AssignmentsMessage {
            version: 0,
            tasks,
            secrets,
            configs,
        },
    ))
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::TaskStatus;

    use super::*;

    fn task(node: &str, observed: TaskState, desired: TaskState) -> Task {
        let mut task = Task {
            id: "t".to_owned(),
            node_id: node.to_owned(),
            status: Some(TaskStatus::default()),
            ..Default::default()
        };
        task.status.as_mut().unwrap().set_state(observed);
        task.set_desired_state(desired);
        task
    }

    #[test]
    fn only_scheduled_tasks_of_the_node_that_a_worker_must_hold() {
        use TaskState::*;
        assert!(is_assigned_to(&task("n1", Assigned, Running), "n1"));
        assert!(is_assigned_to(&task("n1", Running, Shutdown), "n1"));
        // History stays assigned: its stopped container is kept until the reaper deletes it.
        assert!(is_assigned_to(&task("n1", Shutdown, Shutdown), "n1"));
        // A removed task is held until it has stopped, then dropped so its container goes.
        assert!(is_assigned_to(&task("n1", Running, Remove), "n1"));
        assert!(!is_assigned_to(&task("n1", Shutdown, Remove), "n1"));
        // Not scheduled yet, or elsewhere.
        assert!(!is_assigned_to(&task("n1", Pending, Running), "n1"));
        assert!(!is_assigned_to(&task("n2", Running, Running), "n1"));
    }
}
