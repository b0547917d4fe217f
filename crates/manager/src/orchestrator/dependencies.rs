//! shoal's `depends_on` (Docker ignores compose's): a service's tasks are created only once
//! each service it depends on has a task that runs (`started`, and `healthy`, since a task with
//! a healthcheck reports RUNNING only once healthy) or has completed (`completed_successfully`).
//! Only the creation of tasks waits; tasks that already run are never stopped for a dependency.

use shoal_proto::api::{Service, ServiceDependency, TaskState, service_dependency::Condition};

use super::snapshot::ClusterSnapshot;
use super::task_lifecycle::observed_state;

/// Whether every dependency of `service` is met, so that its tasks may be created.
pub fn dependencies_met(snapshot: &ClusterSnapshot<'_>, service: &Service) -> bool {
    let Some(spec) = service.spec.as_ref() else {
        return true;
    };
    spec.depends_on
        .iter()
        .all(|dependency| dependency_met(snapshot, dependency))
}

fn dependency_met(snapshot: &ClusterSnapshot<'_>, dependency: &ServiceDependency) -> bool {
    let found = snapshot.services().find(|service| {
        !service.pending_delete
            && service
                .spec
                .as_ref()
                .and_then(|spec| spec.annotations.as_ref())
                .is_some_and(|annotations| annotations.name == dependency.service)
    });
    let Some(found) = found else {
        return !dependency.required;
    };
    let wanted = match dependency.condition() {
        Condition::Started | Condition::Healthy => TaskState::Running,
        Condition::CompletedSuccessfully => TaskState::Complete,
    };
    snapshot
        .tasks_of_service(&found.id)
        .any(|task| observed_state(task) == wanted)
}
