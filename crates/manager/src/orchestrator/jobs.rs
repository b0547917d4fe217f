//! The replicated-job orchestrator: runs at most `max_concurrent` tasks at once until
//! `total_completions` slots have a completed task. Global jobs share the global
//! orchestrator ([`super::global`]).

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::api::{Service, Task, TaskState};

use super::command::{Command, TaskIdGenerator, stop_task_once};
use super::eligibility::node_keeps_replicated_tasks;
use super::slots::{GivenUpSlots, SlotStatus, classify_slot};
use super::snapshot::{ClusterSnapshot, SlotKey};
use super::task_lifecycle::{
    NewTaskPlacement, is_terminal, is_wanted, job_iteration_of_service, job_iteration_of_task,
    new_task, observed_state,
};
use super::time::ClusterTime;

/// Reconciles a replicated job. Slots 1..=`total_completions` each need one completed task;
/// a slot is started only while fewer than `max_concurrent` slots are occupied, lowest
/// number first. A completed task is never rerun. Tasks of an earlier job iteration and
/// tasks in slots beyond `total_completions` are shut down, and live tasks on drained, down
/// or departed nodes are shut down and their slots started again.
pub fn reconcile_replicated_job(
    snapshot: &ClusterSnapshot<'_>,
    service: &Service,
    max_concurrent: u64,
    total_completions: u64,
    given_up: &GivenUpSlots,
    now: ClusterTime,
    task_ids: &mut dyn TaskIdGenerator,
) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut stopped_this_step = BTreeSet::new();
    let current_iteration = job_iteration_of_service(service);

    let mut tasks_by_slot: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for task in snapshot.tasks_of_service(&service.id) {
        let belongs_to_this_run = (1..=total_completions).contains(&task.slot)
            && job_iteration_of_task(task) == current_iteration;
        // A live task on a node that was drained, went down or left is stopped, and its
        // slot (vacant from then on) is started afresh below, as for replicated services.
        let on_lost_node = !task.node_id.is_empty()
            && !node_keeps_replicated_tasks(snapshot.node(&task.node_id))
            && !is_terminal(observed_state(task));
        if belongs_to_this_run {
            tasks_by_slot.entry(task.slot).or_default().push(task);
        }
        if is_wanted(task) && (!belongs_to_this_run || on_lost_node) {
            stop_task_once(
                task,
                TaskState::Shutdown,
                &mut commands,
                &mut stopped_this_step,
            );
        }
    }

    // Only slots that have tasks are classified, so a job of a million completions costs
    // what its started slots cost, not a million steps.
    let mut occupied_slot_count: u64 = 0;
    let mut slots_not_to_start = BTreeSet::new();
    for (slot, slot_tasks) in &tasks_by_slot {
        let key = SlotKey::Replica {
            service_id: service.id.clone(),
            slot: *slot,
        };
        let still_wanted = |task: &Task| !stopped_this_step.contains(&task.id);
        match classify_slot(service, &key, slot_tasks, true, given_up, &still_wanted) {
            SlotStatus::Occupied { .. } => {
                occupied_slot_count += 1;
                slots_not_to_start.insert(*slot);
            }
            SlotStatus::Completed | SlotStatus::GaveUp { .. } => {
                slots_not_to_start.insert(*slot);
            }
            SlotStatus::Vacant => {}
        }
    }

    let free_concurrency = max_concurrent.saturating_sub(occupied_slot_count);
    let free_concurrency = usize::try_from(free_concurrency).unwrap_or(usize::MAX);
    let slots_to_start = (1..=total_completions)
        .filter(|slot| !slots_not_to_start.contains(slot))
        .take(free_concurrency);
    for slot in slots_to_start {
        let task = new_task(
            service,
            NewTaskPlacement::Slot(slot),
            TaskState::Complete,
            now,
            task_ids,
        );
        commands.push(Command::CreateTask(Box::new(task)));
    }
    commands
}
