//! The task reaper: bounds the history of ended tasks kept per slot, and clears away the
//! tasks, then the record, of deleted services.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::api::{ClusterSpec, Task, TaskState};

use super::command::Command;
use super::snapshot::{ClusterSnapshot, SlotKey};
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
    let mut commands = Vec::new();
    let mut deleted_task_ids = BTreeSet::new();
    let mut history_by_slot: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
    for task in snapshot.tasks().iter().filter(|task| is_history(task)) {
        let service_is_going = snapshot
            .service(&task.service_id)
            .is_none_or(|service| service.pending_delete);
        let removed = task.desired_state >= TaskState::Remove as i32;
        if service_is_going || removed {
            deleted_task_ids.insert(task.id.as_str());
            commands.push(delete_task(task));
        } else {
            history_by_slot
                .entry(SlotKey::of_task(task))
                .or_default()
                .push(task);
        }
    }

    if let TaskHistoryLimit::KeepAtMost(keep) = limit {
        for history in history_by_slot.values_mut() {
            history.sort_by(oldest_first);
            let surplus = history.len().saturating_sub(keep);
            commands.extend(history.iter().take(surplus).map(|task| delete_task(task)));
        }
    }

    for service in snapshot
        .services()
        .iter()
        .filter(|service| service.pending_delete)
    {
        let has_tasks_left = snapshot.tasks().iter().any(|task| {
            task.service_id == service.id && !deleted_task_ids.contains(task.id.as_str())
        });
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
