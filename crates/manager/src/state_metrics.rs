//! The manager's state as a scrape of `/metrics` sees it ([`shoal_metrics::ManagerSample`]):
//! the Raft store's term and indexes, objects by kind, tasks by state, unplaceable tasks and
//! the dispatcher's live sessions, read from this manager's own copy and cluster view when the scrape asks, so
//! none of it is kept up by hand. The counting is pure (`count_tasks`); `sample` reads.

use std::collections::BTreeMap;

use raft_store::Store;
use shoal_metrics::{ManagerSample, RaftProgress};
use shoal_proto::api::{Cluster, Config, Network, Node, Secret, Service, Stack, Task};

use crate::assignment::is_unplaceable;
use crate::dispatcher::DispatcherService;
use crate::objects::ClusterObject;
use crate::orchestrator::observed_state;
use crate::view::shared::SharedView;

/// The kinds `shoal_store_objects` counts, by the store's word for each.
const KINDS: [&str; 8] = [
    Node::KIND,
    Service::KIND,
    Task::KIND,
    Network::KIND,
    Secret::KIND,
    Config::KIND,
    Stack::KIND,
    Cluster::KIND,
];

/// Tasks by observed state, and how many of them the scheduler could not place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TaskCounts {
    /// Docker's lower-case word for each state a task is in (`running`, `pending`, …).
    pub(crate) by_state: BTreeMap<String, u64>,
    pub(crate) unplaceable: u64,
}

/// Counts `tasks` by observed state, and those waiting for a node the scheduler found none for.
pub(crate) fn count_tasks<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> TaskCounts {
    let mut counts = TaskCounts::default();
    for task in tasks {
        // The proto's name, TASK_STATE_RUNNING, is Docker's word in capitals behind a prefix.
        let name = observed_state(task).as_str_name();
        let word = name.strip_prefix("TASK_STATE_").unwrap_or(name);
        *counts
            .by_state
            .entry(word.to_ascii_lowercase())
            .or_default() += 1;
        if is_unplaceable(task) {
            counts.unplaceable += 1;
        }
    }
    counts
}

/// This manager's state now: its own copy of the store (a follower's may lag the leader's by a
/// moment), its cluster view for the tasks (decoded already; decoding every task on each scrape
/// cost a scrape tens of milliseconds at 50,000 tasks) and its dispatcher.
pub(crate) fn sample(
    store: &Store,
    view: &SharedView,
    dispatcher: &DispatcherService,
) -> ManagerSample {
    let status = store.status();
    let objects_by_kind: Vec<(String, u64)> = store.local_view(|view| {
        KINDS
            .iter()
            .map(|kind| ((*kind).to_owned(), view.list(kind).count() as u64))
            .collect()
    });
    let counts = view.read(|view| count_tasks(view.tasks()));
    ManagerSample {
        raft: RaftProgress {
            term: status.term,
            last_log_index: status.last_log_index,
            commit_index: status.committed,
            applied_index: status.last_applied,
            is_leader: status.is_leader,
        },
        objects_by_kind,
        tasks_by_state: counts.by_state.into_iter().collect(),
        unplaceable_tasks: counts.unplaceable,
        dispatcher_sessions: dispatcher.live_sessions() as u64,
    }
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{TaskState, TaskStatus};

    use super::*;

    fn task(state: TaskState, desired: TaskState, err: &str) -> Task {
        Task {
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                err: err.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn tasks_are_counted_by_state_and_those_no_node_fits_are_unplaceable() {
        let tasks = [
            task(TaskState::Running, TaskState::Running, ""),
            task(TaskState::Running, TaskState::Running, ""),
            // Waiting, and the scheduler said why: no node fits.
            task(
                TaskState::Pending,
                TaskState::Running,
                "no suitable node (insufficient resources on 1 node)",
            ),
            // Allocated, and not yet seen by the scheduler.
            task(TaskState::Pending, TaskState::Running, ""),
            // Told to stop before it was placed: it waits for nothing.
            task(TaskState::Pending, TaskState::Shutdown, "no suitable node"),
            task(TaskState::Shutdown, TaskState::Shutdown, ""),
        ];
        let counts = count_tasks(&tasks);
        assert_eq!(
            counts.by_state,
            BTreeMap::from([
                ("pending".to_owned(), 3),
                ("running".to_owned(), 2),
                ("shutdown".to_owned(), 1),
            ])
        );
        assert_eq!(counts.unplaceable, 1);
    }
}
