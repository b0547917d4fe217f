//! The restart supervisor: decides what happens to a wanted task that has ended, applying
//! its restart policy (condition, delay, attempts within a window), and starts delayed
//! replacements when their delay is over.

use std::collections::BTreeMap;

use shoal_proto::api::{Task, TaskState, node_status};

use super::command::{Command, TaskIdGenerator};
use super::eligibility::{NodeEligibility, ServiceConstraints, node_eligibility};
use super::restart_policy::EffectiveRestartPolicy;
use super::slots::GivenUpSlots;
use super::snapshot::{ClusterSnapshot, ServiceMode, SlotKey};
use super::task_lifecycle::{
    NewTaskPlacement, is_terminal, is_waiting_for_restart_delay, is_wanted,
    job_iteration_of_service, job_iteration_of_task, new_task, no_worker_holds, observed_state,
    read_version, spec_version_of_task,
};
use super::time::ClusterTime;

/// Restarts made in one slot under one spec version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SlotRestarts {
    /// The spec version of the tasks these restarts replaced; a newer spec starts afresh.
    spec_version: u64,
    /// The ended task each restart replaced, and when; keyed by task so that running the
    /// same step twice (after a failed transaction) counts one restart once.
    restarted_at_by_ended_task: BTreeMap<String, ClusterTime>,
}

impl SlotRestarts {
    /// Bounds the memory a slot that restarts forever takes: restarts outside the window
    /// never count again, and beyond the newest `max_attempts` none are needed to compare
    /// with the limit (one is kept under unlimited attempts, to recognise a repeated step).
    fn forget_restarts_that_no_longer_count(
        &mut self,
        policy: &EffectiveRestartPolicy,
        now: ClusterTime,
    ) {
        if !policy.window.is_zero() {
            self.restarted_at_by_ended_task.retain(|_, restarted_at| {
                now.saturating_duration_since(*restarted_at) < policy.window
            });
        }
        let keep = usize::try_from(policy.max_attempts.max(1)).unwrap_or(usize::MAX);
        while self.restarted_at_by_ended_task.len() > keep {
            let oldest = self
                .restarted_at_by_ended_task
                .iter()
                .min_by(|left, right| left.1.cmp(right.1).then_with(|| left.0.cmp(right.0)))
                .map(|(ended_task_id, _)| ended_task_id.clone());
            match oldest {
                Some(ended_task_id) => {
                    self.restarted_at_by_ended_task.remove(&ended_task_id);
                }
                None => break,
            }
        }
    }
}

/// The restart supervisor's memory: restarts per slot, given-up slots and pending delayed
/// starts. It lives only in the leader's memory, as in SwarmKit: a new leader starts with
/// fresh attempt counts and starts delayed replacements it inherits at once.
#[derive(Debug, Clone, Default)]
pub struct RestartSupervisor {
    restarts_by_slot: BTreeMap<SlotKey, SlotRestarts>,
    given_up: GivenUpSlots,
    not_before_by_delayed_task: BTreeMap<String, ClusterTime>,
}

impl RestartSupervisor {
    /// A supervisor that has restarted nothing yet.
    pub fn new() -> RestartSupervisor {
        RestartSupervisor::default()
    }

    /// Slots whose attempts ran out; the orchestrators need this to leave them empty.
    pub fn given_up_slots(&self) -> &GivenUpSlots {
        &self.given_up
    }

    /// How many restarts of `slot` are remembered under its current spec version.
    pub fn remembered_restarts(&self, slot: &SlotKey) -> usize {
        self.restarts_by_slot
            .get(slot)
            .map_or(0, |restarts| restarts.restarted_at_by_ended_task.len())
    }

    /// Runs one step over a fresh snapshot at time `now`.
    ///
    /// First, held tasks (desired READY) whose delay is over and whose slot no longer runs
    /// another task get their final desired state (RUNNING, or COMPLETE for jobs). Then every wanted task that has ended is shut down (desired
    /// SHUTDOWN) and, if its policy allows and attempts remain, replaced in the same slot
    /// (same node for global services) from the service's current spec. A replacement with
    /// a delay is created with desired READY, which holds the slot but starts nothing; a
    /// [`Command::WakeUpAt`] tells the shell when to step again. Completed job tasks are
    /// never rerun; tasks of deleted services and of earlier job iterations are left to the
    /// orchestrators, as are global tasks whose node is excluded.
    pub fn step(
        &mut self,
        snapshot: &ClusterSnapshot<'_>,
        now: ClusterTime,
        task_ids: &mut dyn TaskIdGenerator,
    ) -> Vec<Command> {
        let mut commands = Vec::new();
        self.start_replacements_whose_delay_is_over(snapshot, now, &mut commands);
        for task in snapshot.tasks_with_ids(snapshot.index().restart_work()) {
            self.handle_ended_task(snapshot, task, now, task_ids, &mut commands);
        }
        self.forget_deleted_services(snapshot);
        if let Some(earliest) = self.not_before_by_delayed_task.values().min() {
            commands.push(Command::WakeUpAt { at: *earliest });
        }
        commands
    }

    fn start_replacements_whose_delay_is_over(
        &mut self,
        snapshot: &ClusterSnapshot<'_>,
        now: ClusterTime,
        commands: &mut Vec<Command>,
    ) {
        let mut still_delayed = BTreeMap::new();
        for task in snapshot.tasks_with_ids(snapshot.index().restart_work()) {
            if !is_waiting_for_restart_delay(task) || is_terminal(observed_state(task)) {
                continue;
            }
            // A delayed task this supervisor did not create (it was leader elsewhere) is
            // started at once: its delay began before this leader took over.
            let not_before = self
                .not_before_by_delayed_task
                .get(&task.id)
                .copied()
                .unwrap_or(now);
            if now < not_before {
                still_delayed.insert(task.id.clone(), not_before);
                continue;
            }
            // A stop-first update holds the new task until the old one has stopped; its delay
            // is over, so forgetting it starts it as soon as the slot is clear.
            if another_task_of_the_slot_still_runs(snapshot, task) {
                continue;
            }
            let is_job = snapshot
                .service(&task.service_id)
                .and_then(ServiceMode::of_service)
                .is_some_and(ServiceMode::is_job);
            commands.push(Command::SetDesiredState {
                task_id: task.id.clone(),
                read_version: read_version(task),
                desired_state: if is_job {
                    TaskState::Complete
                } else {
                    TaskState::Running
                },
            });
        }
        // Entries whose task is gone or no longer delayed drop out here.
        self.not_before_by_delayed_task = still_delayed;
    }

    fn handle_ended_task(
        &mut self,
        snapshot: &ClusterSnapshot<'_>,
        task: &Task,
        now: ClusterTime,
        task_ids: &mut dyn TaskIdGenerator,
        commands: &mut Vec<Command>,
    ) {
        let ended_in = observed_state(task);
        if !is_wanted(task) || is_waiting_for_restart_delay(task) || !is_terminal(ended_in) {
            return;
        }
        let Some(service) = snapshot.service(&task.service_id) else {
            return;
        };
        let Some(mode) = ServiceMode::of_service(service) else {
            return;
        };
        if service.pending_delete {
            return;
        }
        let job_task_is_done_or_stale = mode.is_job()
            && (ended_in == TaskState::Complete
                || job_iteration_of_task(task) != job_iteration_of_service(service));
        if job_task_is_done_or_stale {
            return;
        }
        let slot = SlotKey::of_task(task);
        let placement = if mode.is_per_node() {
            let constraints = ServiceConstraints::of_service(service);
            let node_still_takes_it = snapshot.node(&task.node_id).is_some_and(|node| {
                node_eligibility(node, &constraints) != NodeEligibility::Excluded
            });
            if !node_still_takes_it || task.slot != 0 {
                return;
            }
            NewTaskPlacement::Node(&task.node_id)
        } else if task.slot > 0 {
            NewTaskPlacement::Slot(task.slot)
        } else {
            // A slotless task left over from a former global mode: the orchestrator stops it.
            return;
        };

        commands.push(Command::SetDesiredState {
            task_id: task.id.clone(),
            read_version: read_version(task),
            desired_state: TaskState::Shutdown,
        });
        let policy = EffectiveRestartPolicy::of_task(task);
        if !policy.condition_allows_restart_after(ended_in) {
            return;
        }

        let restarts = self.restarts_by_slot.entry(slot.clone()).or_default();
        let spec_version = spec_version_of_task(task);
        if restarts.spec_version != spec_version {
            *restarts = SlotRestarts {
                spec_version,
                ..SlotRestarts::default()
            };
            self.given_up.forget(&slot);
        }
        let restarts_in_window = restarts
            .restarted_at_by_ended_task
            .iter()
            .filter(|(ended_task_id, restarted_at)| {
                **ended_task_id != task.id
                    && (policy.window.is_zero()
                        || now.saturating_duration_since(**restarted_at) < policy.window)
            })
            .count();
        let restarts_in_window = u64::try_from(restarts_in_window).unwrap_or(u64::MAX);
        if policy.max_attempts > 0 && restarts_in_window >= policy.max_attempts {
            self.given_up.give_up(slot, policy.max_attempts);
            return;
        }
        restarts
            .restarted_at_by_ended_task
            .insert(task.id.clone(), now);
        restarts.forget_restarts_that_no_longer_count(&policy, now);

        let start_now_state = if mode.is_job() {
            TaskState::Complete
        } else {
            TaskState::Running
        };
        let desired_state = if policy.delay.is_zero() {
            start_now_state
        } else {
            TaskState::Ready
        };
        let replacement = new_task(service, placement, desired_state, now, task_ids);
        if desired_state == TaskState::Ready {
            self.not_before_by_delayed_task
                .insert(replacement.id.clone(), now.saturating_add(policy.delay));
        }
        commands.push(Command::CreateTask(Box::new(replacement)));
    }

    fn forget_deleted_services(&mut self, snapshot: &ClusterSnapshot<'_>) {
        let service_exists = |service_id: &str| snapshot.service(service_id).is_some();
        SlotKey::retain_services(&mut self.restarts_by_slot, service_exists);
        self.given_up.retain_services(service_exists);
    }
}

/// Whether a worker still holds another task of `task`'s slot on a node that is still there
/// and not down (a down node's tasks never report stopping).
fn another_task_of_the_slot_still_runs(snapshot: &ClusterSnapshot<'_>, task: &Task) -> bool {
    let slot = SlotKey::of_task(task);
    snapshot
        .tasks_of_slot(&slot)
        .filter(|other| other.id != task.id)
        .any(|other| {
            let node_is_up = snapshot.node(&other.node_id).is_some_and(|node| {
                node.status
                    .as_ref()
                    .is_none_or(|status| status.state() != node_status::State::Down)
            });
            !no_worker_holds(other) && node_is_up
        })
}
