//! Builders for services, nodes and tasks, and a renderer for commands, shared by the tests.

use std::time::Duration;

use shoal_proto::api::{
    self, ContainerSpec, GlobalJob, GlobalService, Meta, Node, NodeSpec, NodeStatus, Placement,
    ReplicatedJob, ReplicatedService, RestartPolicy, Service, ServiceSpec, Task, TaskSpec,
    TaskState, TaskStatus, Version, node_spec, node_status, restart_policy, service_spec,
    task_spec,
};

use crate::orchestrator::{ClusterTime, Command};
use spec::time::proto_duration;

/// The fake clock reading `seconds` after the epoch.
pub(super) fn at(seconds: u64) -> ClusterTime {
    ClusterTime::from_duration_since_unix_epoch(Duration::from_secs(seconds))
}

fn service_with_mode(service_id: &str, mode: service_spec::Mode) -> Service {
    Service {
        id: service_id.to_owned(),
        meta: Some(Meta {
            version: Some(Version { index: 7 }),
            ..Meta::default()
        }),
        spec: Some(ServiceSpec {
            annotations: Some(api::Annotations {
                name: service_id.to_owned(),
                ..api::Annotations::default()
            }),
            task: Some(TaskSpec {
                runtime: Some(task_spec::Runtime::Container(ContainerSpec {
                    image: "busybox".to_owned(),
                    ..ContainerSpec::default()
                })),
                ..TaskSpec::default()
            }),
            mode: Some(mode),
            ..ServiceSpec::default()
        }),
        spec_version: Some(Version { index: 1 }),
        ..Service::default()
    }
}

pub(super) fn replicated_service(service_id: &str, replicas: u64) -> Service {
    service_with_mode(
        service_id,
        service_spec::Mode::Replicated(ReplicatedService { replicas }),
    )
}

pub(super) fn global_service(service_id: &str) -> Service {
    service_with_mode(service_id, service_spec::Mode::Global(GlobalService {}))
}

pub(super) fn replicated_job(
    service_id: &str,
    max_concurrent: u64,
    total_completions: u64,
) -> Service {
    service_with_mode(
        service_id,
        service_spec::Mode::ReplicatedJob(ReplicatedJob {
            max_concurrent,
            total_completions,
        }),
    )
}

pub(super) fn global_job(service_id: &str) -> Service {
    service_with_mode(service_id, service_spec::Mode::GlobalJob(GlobalJob {}))
}

/// Sets the restart policy of the service's task template.
pub(super) fn with_restart_policy(
    mut service: Service,
    condition: restart_policy::RestartCondition,
    delay: Duration,
    max_attempts: u64,
    window: Duration,
) -> Service {
    let task_spec = task_spec_of(&mut service);
    let mut policy = RestartPolicy {
        delay: Some(proto_duration(delay)),
        max_attempts,
        window: Some(proto_duration(window)),
        ..RestartPolicy::default()
    };
    policy.set_condition(condition);
    task_spec.restart = Some(policy);
    service
}

pub(super) fn with_constraints(mut service: Service, constraints: &[&str]) -> Service {
    task_spec_of(&mut service).placement = Some(Box::new(Placement {
        constraints: constraints.iter().map(|text| (*text).to_owned()).collect(),
        ..Placement::default()
    }));
    service
}

fn task_spec_of(service: &mut Service) -> &mut TaskSpec {
    service
        .spec
        .get_or_insert_default()
        .task
        .get_or_insert_default()
}

/// A ready, active node.
pub(super) fn node(node_id: &str) -> Node {
    node_with(
        node_id,
        node_spec::Availability::Active,
        node_status::State::Ready,
    )
}

pub(super) fn node_with(
    node_id: &str,
    availability: node_spec::Availability,
    state: node_status::State,
) -> Node {
    let mut spec = NodeSpec::default();
    spec.set_availability(availability);
    let mut status = NodeStatus::default();
    status.set_state(state);
    Node {
        id: node_id.to_owned(),
        spec: Some(spec),
        status: Some(status),
        ..Node::default()
    }
}

pub(super) fn with_node_label(mut node: Node, key: &str, value: &str) -> Node {
    node.spec
        .get_or_insert_default()
        .annotations
        .get_or_insert_default()
        .labels
        .insert(key.to_owned(), value.to_owned());
    node
}

/// A task of `service` in `slot` (0 for global) on `node_id` ("" for unassigned), created at
/// `created_second`, at store version 3, with the service's current spec.
pub(super) fn task(
    task_id: &str,
    service: &Service,
    slot: u64,
    node_id: &str,
    desired: TaskState,
    observed: TaskState,
    created_second: u64,
) -> Task {
    let mut status = TaskStatus::default();
    status.set_state(observed);
    let mut task = Task {
        id: task_id.to_owned(),
        meta: Some(Meta {
            version: Some(Version { index: 3 }),
            created_at: Some(at(created_second).to_proto_timestamp()),
            updated_at: None,
        }),
        spec: service.spec.as_ref().and_then(|spec| spec.task.clone()),
        spec_version: service.spec_version,
        service_id: service.id.clone(),
        slot,
        node_id: node_id.to_owned(),
        status: Some(status),
        job_iteration: service
            .job_status
            .as_ref()
            .and_then(|status| status.job_iteration),
        ..Task::default()
    };
    task.set_desired_state(desired);
    task
}

/// Renders commands one per line, for comparing with an expected table.
pub(super) fn render(commands: &[Command]) -> Vec<String> {
    commands.iter().map(ToString::to_string).collect()
}

/// Applies commands to a task list the way the store would, for multi-step tests.
pub(super) fn apply(tasks: &mut Vec<Task>, commands: &[Command]) {
    for command in commands {
        match command {
            Command::CreateTask(task) => tasks.push((**task).clone()),
            Command::SetDesiredState {
                task_id,
                desired_state,
                ..
            } => {
                let task = tasks
                    .iter_mut()
                    .find(|task| &task.id == task_id)
                    .expect("command names an existing task");
                task.set_desired_state(*desired_state);
            }
            Command::DeleteTask { task_id, .. } => tasks.retain(|task| &task.id != task_id),
            Command::DeleteService { .. }
            | Command::UpdateService(_)
            | Command::WakeUpAt { .. } => {}
        }
    }
}

/// Sets the observed state of a task, as a worker report would.
pub(super) fn report(tasks: &mut [Task], task_id: &str, observed: TaskState) {
    let task = tasks
        .iter_mut()
        .find(|task| task.id == task_id)
        .expect("report names an existing task");
    task.status.get_or_insert_default().set_state(observed);
}
