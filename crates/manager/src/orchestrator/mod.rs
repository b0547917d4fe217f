//! The leader-only orchestration cores of swarm mode, as pure functions and state machines:
//! given a snapshot of the cluster view and the time, they return [`Command`]s for the async shell
//! to commit, one store transaction per core per step.
//!
//! - [`reconcile_all_services`] runs the replicated, global and job orchestrators and the
//!   rolling updater over every service (creating tasks only once a service's dependencies
//!   run) and stops the tasks of deleted services.
//! - [`RestartSupervisor`] replaces ended tasks according to their restart policy.
//! - [`reap_tasks`] bounds task history and finishes service deletion.
//! - [`service_convergence`] tells the CLI whether a deploy can still succeed.
//!
//! The shell runs the cores one after the other, committing each one's commands before
//! handing the next a fresh snapshot, in the order orchestrators, supervisor, reaper; commands
//! too many for one transaction commit in several, grouped by [`commit_groups`]. Desired
//! state is the only task state these cores write; observed state belongs to workers.

mod command;
mod commit_groups;
mod convergence;
mod dependencies;
mod eligibility;
mod global;
mod jobs;
mod reaper;
mod replicated;
mod restart;
mod restart_policy;
mod slots;
mod snapshot;
mod task_index;
mod task_lifecycle;
mod time;
mod update;

use std::collections::BTreeSet;

use shoal_proto::api::TaskState;

pub use command::{Command, SequentialTaskIds, TaskIdGenerator};
pub use commit_groups::commit_groups;
pub use convergence::{ServiceConvergence, StuckSlot, service_convergence};
pub use dependencies::dependencies_met;
pub use eligibility::{NodeEligibility, ServiceConstraints, node_eligibility};
pub use global::reconcile_global_service;
pub use jobs::reconcile_replicated_job;
pub use reaper::{TaskHistoryLimit, reap_tasks};
pub use replicated::reconcile_replicated_service;
pub use restart::RestartSupervisor;
pub use restart_policy::EffectiveRestartPolicy;
pub use slots::{GaveUpReason, GivenUpSlots, SlotStatus, classify_slot};
pub use snapshot::{ClusterObjects, ClusterSnapshot, ServiceMode, SlotKey};
pub(crate) use task_index::tally;
pub use task_index::{SlotKind, TaskIndex};
pub use task_lifecycle::{
    NewTaskPlacement, created_at, ended_on_its_own, is_history, is_runnable, is_terminal,
    is_waiting_for_restart_delay, is_wanted, new_task, no_worker_holds, observed_state,
};
pub(crate) use task_lifecycle::{
    job_iteration_of_service, job_iteration_of_task, spec_version_of_service, spec_version_of_task,
};
pub use time::ClusterTime;
pub use update::{
    FailureAction, UpdateSettings, reconcile_service_update, update_in_progress, update_state,
};

use command::stop_task_once;

/// Runs the orchestrator that fits each service's mode, then, for a service it left settled,
/// the rolling update that moves its tasks to its current spec; and stops (desired REMOVE) every
/// wanted task of a service that is `pending_delete` or no longer exists. `given_up` comes
/// from [`RestartSupervisor::given_up_slots`].
pub fn reconcile_all_services(
    snapshot: &ClusterSnapshot<'_>,
    given_up: &GivenUpSlots,
    now: ClusterTime,
    task_ids: &mut dyn TaskIdGenerator,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for service in snapshot
        .services()
        .filter(|service| !service.pending_delete)
    {
        let Some(mode) = ServiceMode::of_service(service) else {
            continue;
        };
        let mode_commands = match mode {
            ServiceMode::Replicated { replicas } => {
                reconcile_replicated_service(snapshot, service, replicas, given_up, now, task_ids)
            }
            ServiceMode::Global => {
                reconcile_global_service(snapshot, service, false, given_up, now, task_ids)
            }
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => reconcile_replicated_job(
                snapshot,
                service,
                max_concurrent,
                total_completions,
                given_up,
                now,
                task_ids,
            ),
            ServiceMode::GlobalJob => {
                reconcile_global_service(snapshot, service, true, given_up, now, task_ids)
            }
        };
        // Until its dependencies run, a service gets no new task, from its orchestrator or
        // its update.
        let waits_for_dependencies = !dependencies_met(snapshot, service);
        let mode_commands: Vec<Command> = mode_commands
            .into_iter()
            .filter(|command| {
                !(waits_for_dependencies && matches!(command, Command::CreateTask(_)))
            })
            .collect();
        // An update advances only while the service is otherwise settled, so its shutdowns
        // never meet the orchestrator's commands for the same tasks in one transaction.
        if !mode_commands.is_empty() {
            commands.extend(mode_commands);
        } else if !waits_for_dependencies {
            commands.extend(reconcile_service_update(snapshot, service, now, task_ids));
        }
    }

    let mut stopped_this_step = BTreeSet::new();
    let going_services = snapshot.index().services_with_tasks().filter(|service_id| {
        snapshot
            .service(service_id)
            .is_none_or(|service| service.pending_delete)
    });
    for service_id in going_services {
        for task in snapshot
            .tasks_of_service(service_id)
            .filter(|task| is_wanted(task))
        {
            stop_task_once(
                task,
                TaskState::Remove,
                &mut commands,
                &mut stopped_this_step,
            );
        }
    }
    commands
}

#[cfg(test)]
mod tests;
