//! The replicated orchestrator: keeps one wanted task in each of a service's `replicas`
//! slots, creates tasks for missing slots, shuts down surplus slots on scale-down and moves
//! tasks off nodes that were drained, went down or left.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::api::{Service, Task, TaskState};

use super::command::{Command, TaskIdGenerator, stop_task_once};
use super::slots::{GivenUpSlots, SlotStatus, classify_slot};
use super::snapshot::{ClusterSnapshot, SlotKey};
use super::task_lifecycle::{
    NewTaskPlacement, is_terminal, is_wanted, new_task, observed_state, oldest_first,
};
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
    let index = snapshot.index();

    // Tasks without a slot belong to a former global mode of this service.
    let mut shut_down_now: BTreeSet<String> = BTreeSet::new();
    for task in snapshot.tasks_with_ids(index.wanted_unnumbered(&service.id)) {
        stop_task_once(task, TaskState::Shutdown, &mut commands, &mut shut_down_now);
    }

    // A live task on a node that can no longer keep it is stopped and its slot refilled
    // now, without a restart delay: the task did not fail, its node went away. Ended tasks
    // are left to the restart supervisor.
    let mut on_lost_nodes: Vec<&Task> = snapshot
        .nodes_losing_tasks()
        .flat_map(|node_id| snapshot.tasks_on_node(node_id))
        .filter(|task| {
            task.service_id == service.id
                && task.slot > 0
                && is_wanted(task)
                && !is_terminal(observed_state(task))
        })
        .collect();
    on_lost_nodes.sort_by(|left, right| left.id.cmp(&right.id));
    let mut lost_slots: BTreeSet<SlotKey> = BTreeSet::new();
    for task in on_lost_nodes {
        stop_task_once(task, TaskState::Shutdown, &mut commands, &mut shut_down_now);
        lost_slots.insert(SlotKey::of_task(task));
    }

    // A slot keeps a wanted task, and so counts towards `replicas`, unless it has none (then
    // it is looked at: it may have given up) or this step stops its tasks; only those slots
    // are classified, so a service's step costs what changed in it, not its size.
    let still_wanted = |task: &Task| !shut_down_now.contains(&task.id);
    let mut looked_at: BTreeMap<u64, SlotStatus<'_>> = BTreeMap::new();
    for key in index
        .unoccupied_slots(&service.id)
        .filter(|key| matches!(key, SlotKey::Replica { .. }))
        .chain(lost_slots.iter())
    {
        let SlotKey::Replica { slot, .. } = key else {
            continue;
        };
        let slot_tasks: Vec<&Task> = snapshot.tasks_of_slot(key).collect();
        let status = classify_slot(service, key, &slot_tasks, false, given_up, &still_wanted);
        looked_at.insert(*slot, status);
    }
    let occupied_before = looked_at
        .keys()
        .filter(|slot| index.slot_is_occupied(&replica_key(service, **slot)))
        .count();
    let occupied_count = index.occupied_replica_slots(&service.id) - occupied_before
        + looked_at
            .values()
            .filter(|status| matches!(status, SlotStatus::Occupied { .. }))
            .count();
    let is_counted = |slot: u64| match looked_at.get(&slot) {
        Some(status) => !matches!(status, SlotStatus::Vacant),
        None => index.slot_is_occupied(&replica_key(service, slot)),
    };
    let given_up_count = looked_at
        .values()
        .filter(|status| matches!(status, SlotStatus::GaveUp { .. } | SlotStatus::Completed))
        .count();

    let replicas = usize::try_from(replicas).unwrap_or(usize::MAX);
    let counted_slots = occupied_count + given_up_count;
    if counted_slots < replicas {
        let missing = replicas - counted_slots;
        let lowest_vacant_numbers = (1_u64..).filter(|slot| !is_counted(*slot));
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
    } else if occupied_count > replicas {
        // A scale-down weighs every occupied slot.
        let mut occupied_slots: Vec<(u64, Vec<&Task>)> = Vec::new();
        for key in index.slots(&service.id) {
            let SlotKey::Replica { slot, .. } = key else {
                continue;
            };
            let wanted_tasks = match looked_at.get(slot) {
                Some(SlotStatus::Occupied { wanted_tasks }) => wanted_tasks.clone(),
                Some(_) => continue,
                None if index.slot_is_occupied(key) => {
                    let mut wanted: Vec<&Task> = snapshot
                        .tasks_of_slot(key)
                        .filter(|task| is_wanted(task))
                        .collect();
                    wanted.sort_by(oldest_first);
                    wanted
                }
                None => continue,
            };
            occupied_slots.push((*slot, wanted_tasks));
        }
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

fn replica_key(service: &Service, slot: u64) -> SlotKey {
    SlotKey::Replica {
        service_id: service.id.clone(),
        slot,
    }
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
