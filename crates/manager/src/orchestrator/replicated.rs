//! The replicated orchestrator: keeps one wanted task in each of a service's `replicas`
//! slots, creates tasks for missing slots, shuts down surplus slots on scale-down and moves
//! tasks off nodes that were drained, went down or left.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::api::{Service, Task, TaskState};

use super::command::{Command, TaskIdGenerator, stop_task_once};
use super::eligibility::node_keeps_replicated_tasks;
use super::slots::{GivenUpSlots, SlotStatus, classify_slot};
use super::snapshot::{ClusterSnapshot, SlotKey};
use super::task_lifecycle::{NewTaskPlacement, is_terminal, is_wanted, new_task, observed_state};
use super::time::ClusterTime;

/// Reconciles one replicated service with `replicas` slots.
///
/// A slot counts towards `replicas` while it is occupied (some task is wanted) or given up
/// (its task ended and the restart policy says it stays ended); only vacant slots get new
/// tasks, so a task that ends is replaced by the restart supervisor, never here. New tasks
/// go into the lowest slot numbers not counted, so slots stay 1..=`replicas` in the usual
/// case and a reused number continues that slot's history. On scale-down, given-up slots
/// are dropped first, then occupied slots in SwarmKit's order of preference: slots whose
/// task is not running, then slots on the nodes with the most tasks of the service, then
/// the highest slot numbers.
pub fn reconcile_replicated_service(
    snapshot: &ClusterSnapshot<'_>,
    service: &Service,
    replicas: u64,
    given_up: &GivenUpSlots,
    now: ClusterTime,
    task_ids: &mut dyn TaskIdGenerator,
) -> Vec<Command> {
    let mut commands = Vec::new();
    let tasks = snapshot.tasks_of_service(&service.id);

    // Tasks without a slot belong to a former global mode of this service.
    let mut shut_down_now: BTreeSet<String> = BTreeSet::new();
    for task in tasks
        .iter()
        .filter(|task| task.slot == 0 && is_wanted(task))
    {
        stop_task_once(task, TaskState::Shutdown, &mut commands, &mut shut_down_now);
    }

    // A live task on a node that can no longer keep it is stopped and its slot refilled
    // now, without a restart delay: the task did not fail, its node went away. Ended tasks
    // are left to the restart supervisor.
    for task in tasks {
        let on_lost_node =
            !task.node_id.is_empty() && !node_keeps_replicated_tasks(snapshot.node(&task.node_id));
        if task.slot > 0 && is_wanted(task) && on_lost_node && !is_terminal(observed_state(task)) {
            stop_task_once(task, TaskState::Shutdown, &mut commands, &mut shut_down_now);
        }
    }

    let mut tasks_by_slot: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for task in tasks.iter().copied().filter(|task| task.slot > 0) {
        tasks_by_slot.entry(task.slot).or_default().push(task);
    }
    let still_wanted = |task: &Task| !shut_down_now.contains(&task.id);
    let mut occupied_slots: Vec<(u64, Vec<&Task>)> = Vec::new();
    let mut given_up_slots: Vec<u64> = Vec::new();
    for (slot, slot_tasks) in &tasks_by_slot {
        let key = SlotKey::Replica {
            service_id: service.id.clone(),
            slot: *slot,
        };
        match classify_slot(service, &key, slot_tasks, false, given_up, &still_wanted) {
            SlotStatus::Occupied { wanted_tasks } => occupied_slots.push((*slot, wanted_tasks)),
            SlotStatus::GaveUp { .. } | SlotStatus::Completed => given_up_slots.push(*slot),
            SlotStatus::Vacant => {}
        }
    }

    let replicas = usize::try_from(replicas).unwrap_or(usize::MAX);
    let counted_slots = occupied_slots.len() + given_up_slots.len();
    if counted_slots < replicas {
        let missing = replicas - counted_slots;
        let counted: BTreeSet<u64> = occupied_slots
            .iter()
            .map(|(slot, _)| *slot)
            .chain(given_up_slots.iter().copied())
            .collect();
        let lowest_vacant_numbers = (1_u64..).filter(|slot| !counted.contains(slot));
        for slot in lowest_vacant_numbers.take(missing) {
            let task = new_task(
                service,
                NewTaskPlacement::Slot(slot),
                TaskState::Running,
                now,
                task_ids,
            );
            commands.push(Command::CreateTask(Box::new(task)));
        }
    } else if occupied_slots.len() > replicas {
        let surplus = occupied_slots.len() - replicas;
        let wanted_tasks_per_node = count_wanted_tasks_per_node(&occupied_slots);
        occupied_slots.sort_by_key(|(slot, wanted_tasks)| {
            let has_running_task = wanted_tasks
                .iter()
                .any(|task| observed_state(task) == TaskState::Running);
            let busiest_node_load = wanted_tasks
                .iter()
                .map(|task| wanted_tasks_per_node.get(task.node_id.as_str()).copied())
                .max()
                .flatten()
                .unwrap_or(0);
            // Sorted ascending, so the first entries are removed first.
            (
                has_running_task,
                std::cmp::Reverse(busiest_node_load),
                std::cmp::Reverse(*slot),
            )
        });
        // As in SwarmKit, a slot scaled away is removed, not kept as history: its tasks go
        // to REMOVE, and the reaper deletes them (and the worker their containers) once
        // they have stopped.
        for (_, wanted_tasks) in occupied_slots.iter().take(surplus) {
            for task in wanted_tasks {
                stop_task_once(task, TaskState::Remove, &mut commands, &mut shut_down_now);
            }
        }
    }
    commands
}

/// How many wanted tasks of the service each node carries; unassigned tasks count for none.
fn count_wanted_tasks_per_node<'store>(
    occupied_slots: &[(u64, Vec<&'store Task>)],
) -> BTreeMap<&'store str, usize> {
    let mut counts = BTreeMap::new();
    for (_, wanted_tasks) in occupied_slots {
        for task in wanted_tasks.iter().filter(|task| !task.node_id.is_empty()) {
            *counts.entry(task.node_id.as_str()).or_insert(0) += 1;
        }
    }
    counts
}
