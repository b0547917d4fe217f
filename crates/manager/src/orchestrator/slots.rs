//! Classifies a slot (a replica number, or a node for global services) from its tasks. The
//! orchestrators, the convergence report and the tests all read slots through this one
//! function, so "does this slot need a task?" has a single answer.

use std::collections::BTreeMap;

use shoal_proto::api::{Service, Task, TaskState};

use super::restart_policy::EffectiveRestartPolicy;
use super::snapshot::SlotKey;
use super::task_lifecycle::{
    ended_on_its_own, is_wanted, observed_state, oldest_first, spec_version_of_service,
    spec_version_of_task,
};

/// Slots whose restart attempts ran out, with the limit that was reached. The restart
/// supervisor fills it; orchestrators read it so they do not recreate what it gave up on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GivenUpSlots {
    max_attempts_by_slot: BTreeMap<SlotKey, u64>,
}

impl GivenUpSlots {
    /// No slot given up.
    pub fn new() -> GivenUpSlots {
        GivenUpSlots::default()
    }

    /// Records that `slot` used up its `max_attempts` restarts.
    pub fn give_up(&mut self, slot: SlotKey, max_attempts: u64) {
        self.max_attempts_by_slot.insert(slot, max_attempts);
    }

    /// Forgets a slot, for instance because a new spec gives it a fresh start.
    pub fn forget(&mut self, slot: &SlotKey) {
        self.max_attempts_by_slot.remove(slot);
    }

    /// Forgets every slot of services for which `keep` is false.
    pub fn retain_services(&mut self, keep: impl FnMut(&str) -> bool) {
        SlotKey::retain_services(&mut self.max_attempts_by_slot, keep);
    }

    /// The attempt limit reached in `slot`, if it was given up.
    pub fn max_attempts_reached(&self, slot: &SlotKey) -> Option<u64> {
        self.max_attempts_by_slot.get(slot).copied()
    }
}

/// Why a slot that ended stays empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GaveUpReason {
    /// The restart condition does not cover how the task ended, such as a completed task
    /// under `on-failure` or any ending under `none`.
    RestartConditionForbids {
        /// The condition, as the CLI spells it.
        condition: &'static str,
        /// How the last task ended.
        ended_in: TaskState,
    },
    /// The slot was restarted `max_attempts` times within the window and failed again.
    MaxAttemptsReached {
        /// The policy's limit.
        max_attempts: u64,
    },
}

/// What one slot needs.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotStatus<'store> {
    /// At least one task is wanted (running, starting, waiting out a restart delay, or
    /// ended and not yet handled by the restart supervisor): the slot is taken.
    Occupied {
        /// The wanted tasks, oldest first.
        wanted_tasks: Vec<&'store Task>,
    },
    /// A job's task completed: the slot is done for this job iteration.
    Completed,
    /// The last task ended and, under the spec it ran with, will not be replaced.
    GaveUp {
        /// The task that ended last.
        last_task: &'store Task,
        /// Why it is not replaced.
        reason: GaveUpReason,
    },
    /// Nothing holds the slot: it needs a new task if the service wants the slot.
    Vacant,
}

/// Classifies one slot from every task it has had. `is_job` says whether a completed task
/// finishes the slot; `still_wanted` lets a caller discount tasks it is shutting down in
/// the same step. A slot the spec has moved past (its last task ran another spec: an older
/// one, or the one a rollback left) is vacant even if it gave up, because a service update gives every slot a fresh start.
pub fn classify_slot<'store>(
    service: &Service,
    slot: &SlotKey,
    tasks_in_slot: &[&'store Task],
    is_job: bool,
    given_up: &GivenUpSlots,
    still_wanted: &dyn Fn(&Task) -> bool,
) -> SlotStatus<'store> {
    if is_job
        && tasks_in_slot
            .iter()
            .any(|task| observed_state(task) == TaskState::Complete)
    {
        return SlotStatus::Completed;
    }
    let mut wanted_tasks: Vec<&Task> = tasks_in_slot
        .iter()
        .copied()
        .filter(|task| is_wanted(task) && still_wanted(task))
        .collect();
    if !wanted_tasks.is_empty() {
        wanted_tasks.sort_by(oldest_first);
        return SlotStatus::Occupied { wanted_tasks };
    }
    let Some(last_task) = tasks_in_slot.iter().copied().max_by(oldest_first) else {
        return SlotStatus::Vacant;
    };
    let ended_in = observed_state(last_task);
    let spec_moved_on = spec_version_of_task(last_task) != spec_version_of_service(service);
    if !ended_on_its_own(ended_in) || spec_moved_on {
        return SlotStatus::Vacant;
    }
    if let Some(max_attempts) = given_up.max_attempts_reached(slot) {
        return SlotStatus::GaveUp {
            last_task,
            reason: GaveUpReason::MaxAttemptsReached { max_attempts },
        };
    }
    let policy = EffectiveRestartPolicy::of_task(last_task);
    if !policy.condition_allows_restart_after(ended_in) {
        return SlotStatus::GaveUp {
            last_task,
            reason: GaveUpReason::RestartConditionForbids {
                condition: policy.condition_name(),
                ended_in,
            },
        };
    }
    SlotStatus::Vacant
}
