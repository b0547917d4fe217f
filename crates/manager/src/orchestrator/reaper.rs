//! The task reaper: bounds the history of ended tasks kept per slot, and clears away the
//! tasks, then the record, of deleted services.

use std::collections::BTreeSet;

use shoal_proto::api::{ClusterSpec, Task};

use super::command::Command;
use super::snapshot::ClusterSnapshot;
use super::task_lifecycle::{is_history, oldest_first, read_version};

/// How many old tasks to keep per slot (`--task-history-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskHistoryLimit {
    /// Keep every old task.
    Unlimited,
    /// Keep at most this many old tasks per slot, deleting the oldest first.
    KeepAtMost(usize),
}

impl TaskHistoryLimit {
    /// Swarm's default: five old tasks per slot.
    pub const DEFAULT: TaskHistoryLimit =
        TaskHistoryLimit::KeepAtMost(spec::defaults::TASK_HISTORY_LIMIT as usize);

    /// Reads `orchestration.task_history_retention_limit`: absent means the default, a
    /// negative value means unlimited.
    pub fn of_cluster_spec(cluster_spec: Option<&ClusterSpec>) -> TaskHistoryLimit {
        let Some(orchestration) = cluster_spec.and_then(|spec| spec.orchestration.as_ref()) else {
            return TaskHistoryLimit::DEFAULT;
        };
        match usize::try_from(orchestration.task_history_retention_limit) {
            Ok(limit) => TaskHistoryLimit::KeepAtMost(limit),
            Err(_) => TaskHistoryLimit::Unlimited,
        }
    }
}

/// Computes the deletions for one step.
///
/// An old task is one managers want stopped (desired SHUTDOWN or later) and no worker holds
/// (it ended, or was never assigned). For each slot, the oldest old tasks beyond `limit` are
/// deleted. Every old task of a deleted or `pending_delete` service, and every old task a
/// scale-down removed (desired REMOVE), is deleted whatever the
/// limit; a `pending_delete` service whose tasks are all gone (or go in this step) is
/// deleted itself. Tasks still running are never deleted: the orchestrators stop them first.
pub fn reap_tasks(snapshot: &ClusterSnapshot<'_>, limit: TaskHistoryLimit) -> Vec<Command> {
    let index = snapshot.index();
    let service_is_going = |service_id: &str| {
        snapshot
            .service(service_id)
            .is_none_or(|service| service.pending_delete)
    };
    let mut deleted_task_ids: BTreeSet<&str> = BTreeSet::new();
    let going_services_history = index
        .services_with_tasks()
        .filter(|service_id| service_is_going(service_id))
        .flat_map(|service_id| snapshot.tasks_of_service(service_id))
        .filter(|task| is_history(task));
    for task in going_services_history.chain(snapshot.tasks_with_ids(index.removed_history())) {
        deleted_task_ids.insert(task.id.as_str());
    }

    // Only the slots whose history (removed tasks included) is over the limit can have
    // history to delete.
    let keep = match limit {
        TaskHistoryLimit::KeepAtMost(keep) => Some(keep),
        TaskHistoryLimit::Unlimited => None,
    };
    let crowded_slots = keep.into_iter().flat_map(|keep| {
        index
            .slots_with_history_over(keep)
            .map(move |slot| (keep, slot))
    });
    let mut surplus_history: Vec<&Task> = Vec::new();
    for (keep, slot) in crowded_slots {
        if service_is_going(slot.service_id()) {
            continue;
        }
        let mut history: Vec<&Task> = snapshot
            .tasks_of_slot(slot)
            .filter(|task| is_history(task) && !deleted_task_ids.contains(task.id.as_str()))
            .collect();
        history.sort_by(oldest_first);
        let surplus = history.len().saturating_sub(keep);
        surplus_history.extend(history.into_iter().take(surplus));
    }

    let mut commands: Vec<Command> = deleted_task_ids
        .iter()
        .filter_map(|id| snapshot.task(id))
        .chain(surplus_history)
        .map(delete_task)
        .collect();

    for service in snapshot.services().filter(|service| service.pending_delete) {
        let has_tasks_left = index
            .tasks_of_service(&service.id)
            .any(|task_id| !deleted_task_ids.contains(task_id));
        if !has_tasks_left {
            commands.push(Command::DeleteService {
                service_id: service.id.clone(),
                read_version: service
                    .meta
                    .as_ref()
                    .and_then(|meta| meta.version.as_ref())
                    .map_or(0, |version| version.index),
            });
        }
    }
    commands
}

fn delete_task(task: &Task) -> Command {
    Command::DeleteTask {
        task_id: task.id.clone(),
        read_version: read_version(task),
    }
}
