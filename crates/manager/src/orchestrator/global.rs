//! The global orchestrator: one task per eligible node for global services, and one run per
//! eligible node for global jobs.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::api::{Service, Task, TaskState};

use super::command::{Command, TaskIdGenerator, stop_task_once};
use super::eligibility::{NodeEligibility, ServiceConstraints, node_eligibility};
use super::slots::{GivenUpSlots, SlotStatus, classify_slot};
use super::snapshot::ClusterSnapshot;
use super::snapshot::SlotKey;
use super::task_lifecycle::{
    NewTaskPlacement, is_wanted, job_iteration_of_service, job_iteration_of_task, new_task,
};
use super::time::ClusterTime;

/// Reconciles a global service (`is_job == false`) or global job (`is_job == true`).
///
/// A node that is ready, active and satisfies the constraints gets a task when its slot is
/// vacant. A paused node, or one not reported ready yet, keeps what it has. A drained or
/// down node, a node failing the constraints and a node that left the cluster have their
/// wanted tasks shut down. For jobs, a node whose task completed is done, and tasks of an
/// earlier job iteration are shut down.
pub fn reconcile_global_service(
    snapshot: &ClusterSnapshot<'_>,
    service: &Service,
    is_job: bool,
    given_up: &GivenUpSlots,
    now: ClusterTime,
    task_ids: &mut dyn TaskIdGenerator,
) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut stopped_this_step = BTreeSet::new();
    let constraints = ServiceConstraints::of_service(service);
    let current_iteration = job_iteration_of_service(service);

    let mut tasks_by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in snapshot.tasks_of_service(&service.id) {
        let belongs_to_this_run = task.slot == 0
            && !task.node_id.is_empty()
            && (!is_job || job_iteration_of_task(task) == current_iteration);
        if belongs_to_this_run {
            tasks_by_node
                .entry(task.node_id.as_str())
                .or_default()
                .push(task);
        } else if is_wanted(task) {
            stop_task_once(
                task,
                TaskState::Shutdown,
                &mut commands,
                &mut stopped_this_step,
            );
        }
    }

    // Nodes that left the cluster keep no tasks.
    for (node_id, node_tasks) in &tasks_by_node {
        if snapshot.node(node_id).is_none() {
            for task in node_tasks.iter().filter(|task| is_wanted(task)) {
                stop_task_once(
                    task,
                    TaskState::Shutdown,
                    &mut commands,
                    &mut stopped_this_step,
                );
            }
        }
    }

    let desired_state_of_new_tasks = if is_job {
        TaskState::Complete
    } else {
        TaskState::Running
    };
    for node in snapshot.nodes() {
        let node_tasks = tasks_by_node
            .get(node.id.as_str())
            .map_or(&[][..], Vec::as_slice);
        match node_eligibility(node, &constraints) {
            NodeEligibility::Excluded => {
                for task in node_tasks.iter().filter(|task| is_wanted(task)) {
                    stop_task_once(
                        task,
                        TaskState::Shutdown,
                        &mut commands,
                        &mut stopped_this_step,
                    );
                }
            }
            NodeEligibility::KeepsExistingTasks => {}
            NodeEligibility::RunsNewTasks => {
                let key = SlotKey::Node {
                    service_id: service.id.clone(),
                    node_id: node.id.clone(),
                };
                let slot_status =
                    classify_slot(service, &key, node_tasks, is_job, given_up, &|_| true);
                if slot_status == SlotStatus::Vacant {
                    let task = new_task(
                        service,
                        NewTaskPlacement::Node(&node.id),
                        desired_state_of_new_tasks,
                        now,
                        task_ids,
                    );
                    commands.push(Command::CreateTask(Box::new(task)));
                }
            }
        }
    }
    commands
}
