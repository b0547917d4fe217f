//! Whether a service has reached, is reaching, or can never reach what its spec asks, so
//! the CLI can report a stuck deploy instead of waiting for it forever.

use std::collections::BTreeMap;

use shoal_proto::api::{Task, TaskState};

use super::eligibility::{NodeEligibility, ServiceConstraints, node_eligibility};
use super::slots::{GaveUpReason, GivenUpSlots, SlotStatus, classify_slot};
use super::snapshot::{ClusterSnapshot, ServiceMode, SlotKey};
use super::task_lifecycle::{
    is_runnable, job_iteration_of_service, job_iteration_of_task, observed_state,
    spec_version_of_service, spec_version_of_task,
};
use super::update::update_in_progress;

/// A slot that will stay empty under the current spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckSlot {
    /// The slot.
    pub slot: SlotKey,
    /// The last task that ran in it.
    pub last_task_id: String,
    /// Why it is not restarted.
    pub reason: GaveUpReason,
}

/// The verdict on one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceConvergence {
    /// Every slot has a running task (services) or a completed one (jobs), and no update is
    /// still replacing or monitoring tasks.
    Converged,
    /// Not there yet, but nothing stands in the way.
    Converging,
    /// Some slots will stay empty until the service is updated: the restart policy forbids
    /// replacing their last task, or its attempts ran out.
    CannotConverge {
        /// The slots that stay empty.
        stuck_slots: Vec<StuckSlot>,
    },
}

/// Judges one service; `None` if it does not exist or has no mode.
pub fn service_convergence(
    snapshot: &ClusterSnapshot<'_>,
    service_id: &str,
    given_up: &GivenUpSlots,
) -> Option<ServiceConvergence> {
    let service = snapshot.service(service_id)?;
    let mode = ServiceMode::of_service(service)?;
    let current_iteration = job_iteration_of_service(service);
    let mut tasks_by_slot: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
    for task in snapshot.tasks_of_service(service_id) {
        if !mode.is_job() || job_iteration_of_task(task) == current_iteration {
            tasks_by_slot
                .entry(SlotKey::of_task(task))
                .or_default()
                .push(task);
        }
    }

    // The slots the spec asks for, in the order they are reported.
    let wanted_slot_keys: Vec<SlotKey> = match mode {
        ServiceMode::Replicated { .. } | ServiceMode::ReplicatedJob { .. } => tasks_by_slot
            .keys()
            .filter(|slot| matches!(slot, SlotKey::Replica { .. }))
            .cloned()
            .collect(),
        ServiceMode::Global | ServiceMode::GlobalJob => {
            let constraints = ServiceConstraints::of_service(service);
            snapshot
                .nodes()
                .filter(|node| {
                    node_eligibility(node, &constraints) == NodeEligibility::RunsNewTasks
                })
                .map(|node| SlotKey::Node {
                    service_id: service_id.to_owned(),
                    node_id: node.id.clone(),
                })
                .collect()
        }
    };

    let mut satisfied_slots: u64 = 0;
    let mut occupied_slots: u64 = 0;
    let mut stuck_slots = Vec::new();
    for slot in &wanted_slot_keys {
        let slot_tasks = tasks_by_slot.get(slot).map_or(&[][..], Vec::as_slice);
        match classify_slot(service, slot, slot_tasks, mode.is_job(), given_up, &|_| {
            true
        }) {
            SlotStatus::Completed => satisfied_slots += 1,
            SlotStatus::Occupied { wanted_tasks } => {
                occupied_slots += 1;
                // A task of an older spec runs, but the slot still waits for its update.
                let running = wanted_tasks.iter().any(|task| {
                    is_runnable(task)
                        && observed_state(task) == TaskState::Running
                        && spec_version_of_task(task) == spec_version_of_service(service)
                });
                if running && !mode.is_job() {
                    satisfied_slots += 1;
                }
            }
            SlotStatus::GaveUp { last_task, reason } => stuck_slots.push(StuckSlot {
                slot: slot.clone(),
                last_task_id: last_task.id.clone(),
                reason,
            }),
            SlotStatus::Vacant => {}
        }
    }

    let slots_needed = match mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => total_completions,
        ServiceMode::Global | ServiceMode::GlobalJob => {
            u64::try_from(wanted_slot_keys.len()).unwrap_or(u64::MAX)
        }
    };
    // Stuck slots block a replicated service only while the slots that can still run are
    // too few: after a scale-down the orchestrator drops stuck slots before running ones.
    let stuck_slots_block_convergence = match mode {
        ServiceMode::Replicated { replicas } => occupied_slots < replicas,
        _ => true,
    };
    Some(
        if !stuck_slots.is_empty() && stuck_slots_block_convergence {
            ServiceConvergence::CannotConverge { stuck_slots }
        } else if satisfied_slots >= slots_needed
            && occupied_slots <= slots_needed
            && !update_in_progress(service)
        {
            ServiceConvergence::Converged
        } else {
            ServiceConvergence::Converging
        },
    )
}
