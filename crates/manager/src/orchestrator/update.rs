//! The rolling updater: moves a service's tasks to its current spec in batches, after Swarm's
//! updater, as a pure step over the store.
//!
//! A slot (a replica, or a node for global services) is *outdated* while its wanted tasks ran an
//! older spec. Each step replaces outdated slots until `parallelism` replacements are on their way
//! (0: all at once), once `delay` has passed since the last replacement came up. With
//! `stop-first` the old task is shut down and the new one created held (desired READY) in the same
//! transaction; the restart supervisor starts it once the old one has stopped. With `start-first`
//! the new task starts at once, and the old one is shut down when the new one runs (and is
//! healthy, since a task with a healthcheck reports RUNNING only once healthy).
//!
//! A replacement that ends on its own (fails, is rejected, exits) while the update runs is a
//! failure of its slot; a slot that fails again counts once. Past `max_failure_ratio` of the
//! update's slots, the failure action applies: pause, continue, or roll back to the previous spec
//! (a rollback that fails pauses). Once nothing is outdated, the update completes when every
//! replacement has run for `monitor`.
//!
//! Everything the step needs is in the store (the service's `update_status`, the tasks' spec
//! versions, creation times and states), so a new leader resumes an update where it stopped.
//! Counting failures over the whole update rather than each task's own monitor window is the one
//! deliberate difference from Swarm: a replacement that dies while the update still runs stops
//! it, even if it had been up for longer than `monitor`.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_proto::api::{
    Service, Task, TaskState, UpdateConfig, UpdateStatus, update_config, update_status,
};

use super::TaskIdGenerator;
use super::command::Command;
use super::snapshot::{ClusterSnapshot, ServiceMode, SlotKey};
use super::task_index::SlotKind;
use super::task_lifecycle::{
    NewTaskPlacement, created_at, ended_on_its_own, is_terminal, is_wanted, new_task,
    observed_state, oldest_first, read_version, spec_version_of_service, spec_version_of_task,
};
use super::time::ClusterTime;
use spec::time::std_duration;

use update_status::UpdateState;

/// What to do once too many replacements have failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    /// Stop updating and wait for the user.
    Pause,
    /// Carry on as if nothing happened.
    Continue,
    /// Go back to the previous spec, with the rollback settings.
    Rollback,
}

/// The settings one update runs with: the spec's update config, or its rollback config while
/// rolling back, with Swarm's defaults for a missing config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateSettings {
    /// Slots replaced at once; 0 replaces every slot at once.
    pub parallelism: u64,
    /// The wait between a replacement coming up and the next one starting.
    pub delay: Duration,
    /// What follows too many failures.
    pub failure_action: FailureAction,
    /// How long a replacement must run before the update may complete.
    pub monitor: Duration,
    /// The share of the update's slots that may fail without the failure action applying.
    pub max_failure_ratio: f32,
    /// Whether the new task starts before the old one stops.
    pub start_first: bool,
}

impl Default for UpdateSettings {
    /// Swarm's defaults (`spec::defaults::update_config`): one at a time, no delay, pause on
    /// failure, monitor 5 s, stop-first.
    fn default() -> UpdateSettings {
        UpdateSettings::of_config(Some(&spec::defaults::update_config()))
    }
}

impl UpdateSettings {
    /// The settings a config asks for; unset durations keep their defaults, and a missing config
    /// is Swarm's default one.
    pub fn of_config(config: Option<&UpdateConfig>) -> UpdateSettings {
        let Some(config) = config else {
            return UpdateSettings::default();
        };
        UpdateSettings {
            parallelism: config.parallelism,
            delay: config.delay.as_ref().map_or(Duration::ZERO, std_duration),
            failure_action: match config.failure_action() {
                update_config::FailureAction::Pause => FailureAction::Pause,
                update_config::FailureAction::Continue => FailureAction::Continue,
                update_config::FailureAction::Rollback => FailureAction::Rollback,
            },
            monitor: config
                .monitor
                .as_ref()
                .map_or(spec::defaults::UPDATE_MONITOR, std_duration),
            max_failure_ratio: config.max_failure_ratio,
            start_first: config.order() == update_config::UpdateOrder::StartFirst,
        }
    }

    /// The settings the current update of `service` runs with.
    pub fn of_service(service: &Service) -> UpdateSettings {
        let spec = service.spec.as_ref();
        let config = if update_state(service) == UpdateState::RollbackStarted {
            spec.and_then(|spec| spec.rollback.as_ref())
        } else {
            spec.and_then(|spec| spec.update.as_ref())
        };
        UpdateSettings::of_config(config)
    }
}

/// The state of the service's latest update; UNKNOWN when it never had one.
pub fn update_state(service: &Service) -> UpdateState {
    service
        .update_status
        .as_ref()
        .map_or(UpdateState::Unknown, UpdateStatus::state)
}

/// Whether an update or rollback of the service is under way (not paused, not finished).
pub fn update_in_progress(service: &Service) -> bool {
    matches!(
        update_state(service),
        UpdateState::Updating | UpdateState::RollbackStarted
    )
}

/// One slot as the updater sees it.
#[derive(Debug, Default)]
struct SlotUpdate<'store> {
    /// Wanted tasks made from another spec version than the service's.
    outdated: Vec<&'store Task>,
    /// Whether a wanted task of the current spec runs.
    current_runs: bool,
    /// The first task of the current spec created since the update began: the replacement
    /// the updater made. Later ones are the restart supervisor's.
    replacement: Option<&'store Task>,
    /// The update's tasks in this slot that ended on their own.
    failed: Vec<&'store Task>,
}

impl SlotUpdate<'_> {
    fn is_outdated(&self) -> bool {
        !self.outdated.is_empty() && self.replacement.is_none()
    }

    /// The replacement is on its way: created, not yet running, not ended.
    fn is_in_flight(&self) -> bool {
        self.replacement.is_some_and(|task| {
            let observed = observed_state(task);
            observed != TaskState::Running && !is_terminal(observed)
        })
    }
}

/// When a running task reached RUNNING: its status's time, which the worker set then.
fn running_since(task: &Task) -> ClusterTime {
    task.status
        .as_ref()
        .and_then(|status| status.timestamp.as_ref())
        .map_or(ClusterTime::UNIX_EPOCH, ClusterTime::from_proto_timestamp)
}

/// The commands that advance the update of `service`; none when nothing is outdated and no
/// update is under way. Jobs are left alone: updating a job starts a new iteration of it.
pub fn reconcile_service_update(
    snapshot: &ClusterSnapshot<'_>,
    service: &Service,
    now: ClusterTime,
    task_ids: &mut dyn TaskIdGenerator,
) -> Vec<Command> {
    let Some(mode) = ServiceMode::of_service(service) else {
        return Vec::new();
    };
    let state = update_state(service);
    if mode.is_job() || matches!(state, UpdateState::Paused | UpdateState::RollbackPaused) {
        return Vec::new();
    }
    let in_progress = update_in_progress(service);
    // Most steps find no update under way and nothing outdated: a scan that builds nothing
    // says so, without grouping the service's tasks into slots.
    if !in_progress && !has_outdated_task(snapshot, service, mode) {
        return Vec::new();
    }
    let started_at = service
        .update_status
        .as_ref()
        .and_then(|status| status.started_at.as_ref())
        .filter(|_| in_progress)
        .map_or(now, ClusterTime::from_proto_timestamp);
    let slots = slots_of(snapshot, service, mode, started_at);
    let outdated: Vec<(&SlotKey, &SlotUpdate<'_>)> = slots
        .iter()
        .filter(|(_, slot)| slot.is_outdated())
        .collect();

    let mut commands = Vec::new();
    if in_progress {
        if let Some(verdict) = failure_verdict(service, &slots, now) {
            return vec![verdict];
        }
    } else {
        if outdated.is_empty() {
            return Vec::new();
        }
        commands.push(Command::UpdateService(Box::new(with_status(
            service,
            UpdateState::Updating,
            "update in progress",
            now,
            None,
        ))));
    }
    let settings = UpdateSettings::of_service(service);

    // A start-first replacement runs: its old task goes now.
    for slot in slots.values().filter(|slot| slot.current_runs) {
        for task in &slot.outdated {
            commands.push(shut_down(task));
        }
    }

    let in_flight = slots.values().filter(|slot| slot.is_in_flight()).count();
    let last_came_up = slots
        .values()
        .filter_map(|slot| slot.replacement)
        .filter(|task| observed_state(task) == TaskState::Running)
        .map(running_since)
        .max();
    if !outdated.is_empty() {
        let next_batch_at = last_came_up
            .filter(|_| !settings.delay.is_zero())
            .map_or(now, |came_up| came_up.saturating_add(settings.delay));
        let room = match usize::try_from(settings.parallelism) {
            Ok(0) | Err(_) => usize::MAX,
            Ok(parallelism) => parallelism.saturating_sub(in_flight),
        };
        if now < next_batch_at {
            if room > 0 {
                commands.push(Command::WakeUpAt { at: next_batch_at });
            }
        } else {
            let mut batch = outdated;
            // Slots whose old task is not running lose nothing by going first.
            batch.sort_by_key(|(key, slot)| {
                let runs = slot
                    .outdated
                    .iter()
                    .any(|task| observed_state(task) == TaskState::Running);
                (runs, *key)
            });
            for (key, slot) in batch.into_iter().take(room) {
                replace_slot(service, key, slot, &settings, now, task_ids, &mut commands);
            }
        }
        return commands;
    }
    if in_flight > 0 || !in_progress {
        return commands;
    }
    // Nothing is outdated or on its way: the update completes once every replacement has run
    // for the monitor period.
    let monitored_until =
        last_came_up.map_or(now, |came_up| came_up.saturating_add(settings.monitor));
    if now < monitored_until {
        commands.push(Command::WakeUpAt {
            at: monitored_until,
        });
    } else if state == UpdateState::RollbackStarted {
        commands.push(Command::UpdateService(Box::new(with_status(
            service,
            UpdateState::RollbackCompleted,
            "rollback completed",
            now,
            Some(now),
        ))));
    } else {
        commands.push(Command::UpdateService(Box::new(with_status(
            service,
            UpdateState::Completed,
            "update completed",
            now,
            Some(now),
        ))));
    }
    commands
}

/// Every slot of the service that holds a wanted task or had a task of this update.
/// Whether a task the managers still want runs another spec than the service's: what
/// [`slots_of`] would file as outdated.
fn has_outdated_task(snapshot: &ClusterSnapshot<'_>, service: &Service, mode: ServiceMode) -> bool {
    let current_version = spec_version_of_service(service);
    let kind = if mode.is_per_node() {
        SlotKind::Node
    } else {
        SlotKind::Replica
    };
    snapshot
        .index()
        .wanted_spec_versions(&service.id, kind)
        .any(|version| version != current_version)
}

/// Whether a task fills one of the service's slots: a numbered one, or for a global service a
/// node.
fn has_slot(task: &Task, mode: ServiceMode) -> bool {
    if mode.is_per_node() {
        task.slot == 0 && !task.node_id.is_empty()
    } else {
        task.slot > 0
    }
}

fn slots_of<'store>(
    snapshot: &ClusterSnapshot<'store>,
    service: &Service,
    mode: ServiceMode,
    started_at: ClusterTime,
) -> BTreeMap<SlotKey, SlotUpdate<'store>> {
    let current_version = spec_version_of_service(service);
    // Grouped first and each slot's few tasks sorted apart: sorting the whole service by age
    // was most of a step's time at 50,000 tasks, all created in the same second so that
    // every comparison fell through to their ids.
    let mut tasks_by_slot: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
    for task in snapshot.tasks_of_service(&service.id) {
        if !has_slot(task, mode) {
            continue;
        }
        let is_current = spec_version_of_task(task) == current_version;
        let of_this_update = is_current && created_at(task) >= started_at;
        if is_wanted(task) || of_this_update {
            tasks_by_slot
                .entry(SlotKey::of_task(task))
                .or_default()
                .push(task);
        }
    }
    let mut slots: BTreeMap<SlotKey, SlotUpdate<'store>> = BTreeMap::new();
    for (key, mut tasks) in tasks_by_slot {
        tasks.sort_by(oldest_first);
        let slot = slots.entry(key).or_default();
        for task in tasks {
            let is_current = spec_version_of_task(task) == current_version;
            let of_this_update = is_current && created_at(task) >= started_at;
            if is_wanted(task) && !is_current {
                slot.outdated.push(task);
            }
            if is_wanted(task) && is_current && observed_state(task) == TaskState::Running {
                slot.current_runs = true;
            }
            if of_this_update {
                slot.replacement.get_or_insert(task);
                if ended_on_its_own(observed_state(task)) {
                    slot.failed.push(task);
                }
            }
        }
    }
    slots
}

/// What too many failures lead to, as the one command of this step; `None` while the failures
/// stay within the ratio or the action is to continue.
fn failure_verdict(
    service: &Service,
    slots: &BTreeMap<SlotKey, SlotUpdate<'_>>,
    now: ClusterTime,
) -> Option<Command> {
    let settings = UpdateSettings::of_service(service);
    if settings.failure_action == FailureAction::Continue {
        return None;
    }
    let first_failure = slots
        .values()
        .flat_map(|slot| slot.failed.iter().copied())
        .min_by(oldest_first)?;
    let failed_slots = slots
        .values()
        .filter(|slot| !slot.failed.is_empty())
        .count();
    let slots_in_update = slots
        .values()
        .filter(|slot| slot.is_outdated() || slot.replacement.is_some())
        .count()
        .max(1);
    if (failed_slots as f32) / (slots_in_update as f32) <= settings.max_failure_ratio {
        return None;
    }
    let task_id = &first_failure.id;
    let rolling_back = update_state(service) == UpdateState::RollbackStarted;
    if rolling_back {
        return Some(Command::UpdateService(Box::new(with_status(
            service,
            UpdateState::RollbackPaused,
            &format!("rollback paused due to failure or early termination of task {task_id}"),
            now,
            None,
        ))));
    }
    if settings.failure_action == FailureAction::Rollback {
        if let Some(previous_spec) = &service.previous_spec {
            let mut rolled_back = with_status(
                service,
                UpdateState::RollbackStarted,
                &format!(
                    "update rolled back due to failure or early termination of task {task_id}"
                ),
                now,
                None,
            );
            rolled_back.spec = Some(previous_spec.clone());
            rolled_back.spec_version = service.previous_spec_version;
            rolled_back.previous_spec = None;
            rolled_back.previous_spec_version = None;
            return Some(Command::UpdateService(Box::new(rolled_back)));
        }
        return Some(Command::UpdateService(Box::new(with_status(
            service,
            UpdateState::Paused,
            &format!(
                "update paused due to failure or early termination of task {task_id}; there is no previous spec to roll back to"
            ),
            now,
            None,
        ))));
    }
    Some(Command::UpdateService(Box::new(with_status(
        service,
        UpdateState::Paused,
        &format!("update paused due to failure or early termination of task {task_id}"),
        now,
        None,
    ))))
}

/// The service with a new update status. A status that starts an update or a rollback starts
/// at `now`; any other keeps the start of the update it belongs to.
fn with_status(
    service: &Service,
    state: UpdateState,
    message: &str,
    now: ClusterTime,
    completed_at: Option<ClusterTime>,
) -> Service {
    let started_at = match state {
        UpdateState::Updating | UpdateState::RollbackStarted => Some(now.to_proto_timestamp()),
        _ => service
            .update_status
            .as_ref()
            .and_then(|status| status.started_at),
    };
    let mut changed = service.clone();
    changed.update_status = Some(UpdateStatus {
        state: state as i32,
        started_at,
        completed_at: completed_at.map(ClusterTime::to_proto_timestamp),
        message: message.to_owned(),
    });
    changed
}

fn shut_down(task: &Task) -> Command {
    Command::SetDesiredState {
        task_id: task.id.clone(),
        read_version: read_version(task),
        desired_state: TaskState::Shutdown,
    }
}

/// Starts replacing one outdated slot: the new task, and with stop-first the old one's shutdown.
fn replace_slot(
    service: &Service,
    key: &SlotKey,
    slot: &SlotUpdate<'_>,
    settings: &UpdateSettings,
    now: ClusterTime,
    task_ids: &mut dyn TaskIdGenerator,
    commands: &mut Vec<Command>,
) {
    let placement = match key {
        SlotKey::Replica { slot, .. } => NewTaskPlacement::Slot(*slot),
        SlotKey::Node { node_id, .. } => NewTaskPlacement::Node(node_id),
    };
    let desired_state = if settings.start_first {
        TaskState::Running
    } else {
        for task in &slot.outdated {
            commands.push(shut_down(task));
        }
        // Held until the old task has stopped; the restart supervisor then starts it.
        TaskState::Ready
    };
    let task = new_task(service, placement, desired_state, now, task_ids);
    commands.push(Command::CreateTask(Box::new(task)));
}
