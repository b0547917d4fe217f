//! Moving a service's tasks to its new spec after `service update`: the tasks made from an
//! older spec version are shut down one at a time, and the orchestrator of the service's mode
//! refills each slot (or node) from the current spec. The next one goes only once no task of
//! the current spec is still on its way to RUNNING, so a bad spec stops the rollout after one
//! task instead of taking the whole service down.
//!
//! This is Swarm's default update behaviour (parallelism 1, no delay, stop-first, wait on
//! failure). The update config's other settings (parallelism, delay, monitor, failure action,
//! rollback) belong to the rolling updater, which replaces this core.

use shoal_proto::api::{Service, TaskState};

use super::command::Command;
use super::snapshot::{ClusterSnapshot, ServiceMode};
use super::task_lifecycle::{
    is_terminal, observed_state, read_version, spec_version_of_service, spec_version_of_task,
};

/// Tasks replaced at once.
const UPDATE_PARALLELISM: usize = 1;

/// The shutdowns that advance an update of `service`; none when its tasks are all current.
/// Jobs are left alone: updating a job starts a new iteration of it instead.
pub fn reconcile_service_update(snapshot: &ClusterSnapshot<'_>, service: &Service) -> Vec<Command> {
    let Some(mode) = ServiceMode::of_service(service) else {
        return Vec::new();
    };
    if mode.is_job() {
        return Vec::new();
    }
    let current_version = spec_version_of_service(service);
    let running_wanted = snapshot
        .tasks_of_service(&service.id)
        .iter()
        .copied()
        .filter(|task| task.desired_state() == TaskState::Running);
    let (mut outdated, current): (Vec<_>, Vec<_>) =
        running_wanted.partition(|task| spec_version_of_task(task) < current_version);
    let on_their_way = current
        .iter()
        .filter(|task| {
            let observed = observed_state(task);
            observed != TaskState::Running && !is_terminal(observed)
        })
        .count();
    outdated.sort_by(|left, right| {
        (left.slot, &left.node_id, &left.id).cmp(&(right.slot, &right.node_id, &right.id))
    });
    outdated
        .into_iter()
        .take(UPDATE_PARALLELISM.saturating_sub(on_their_way))
        .map(|task| Command::SetDesiredState {
            task_id: task.id.clone(),
            read_version: read_version(task),
            desired_state: TaskState::Shutdown,
        })
        .collect()
}
