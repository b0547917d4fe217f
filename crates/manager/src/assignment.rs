//! Placement of pending tasks, the pure half of the scheduler phase: builds the scheduler's view
//! of the nodes from the store's nodes and the tasks already on them, asks [`scheduler::schedule`]
//! about every task waiting for a node in one batch, and says how each task's status changes.

use std::collections::{BTreeMap, HashMap};

use scheduler::{
    Constraint, Decision, HostPort, NodeAvailability, NodeRole, NodeView, Platform, PortProtocol,
    Resources, SpreadPreference, TaskRequest,
};
use shoal_proto::api::{
    self, Node, Task, TaskState, node_spec, node_status, placement, port_config,
};

use crate::allocator;
use crate::objects::ClusterObject;
use crate::orchestrator::{ClusterSnapshot, is_terminal, observed_state, tally};

/// How the scheduler phase changes one task's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub task_id: String,
    /// The task version the decision was based on.
    pub read_version: u64,
    pub outcome: AssignmentOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignmentOutcome {
    /// Observed state ASSIGNED on this node.
    Assigned { node_id: String },
    /// Observed state PENDING, with why no node fits (the status's error, as in SwarmKit).
    Pending { message: String },
}

/// The scheduler's view of a node, from the node alone (nothing yet reserved on it).
pub fn node_view(node: &Node) -> NodeView {
    // Borrowed, not cloned: a description also carries the node's TLS details, and a pass
    // builds the view of every node.
    let description = node.description.as_ref();
    let resources = description.and_then(|description| description.resources.as_ref());
    let mut view = NodeView::new(
        node.id.clone(),
        Resources::new(
            resources.map_or(0, |resources| {
                u64::try_from(resources.nano_cpus).unwrap_or(0)
            }),
            resources.map_or(0, |resources| {
                u64::try_from(resources.memory_bytes).unwrap_or(0)
            }),
        ),
    );
    if let Some(description) = description.filter(|description| !description.hostname.is_empty()) {
        view.hostname = description.hostname.clone();
    }
    view.role = match node.role() {
        api::NodeRole::Manager => NodeRole::Manager,
        api::NodeRole::Worker => NodeRole::Worker,
    };
    if let Some(platform) = description.and_then(|description| description.platform.as_ref()) {
        view.platform = Platform::new(platform.os.clone(), platform.architecture.clone());
    } else {
        view.platform = Platform::new(String::new(), String::new());
    }
    view.engine_labels = description
        .and_then(|description| description.engine.as_ref())
        .map(|engine| sorted_labels(&engine.labels))
        .unwrap_or_default();
    let spec = node.spec.as_ref();
    view.availability = match spec.map(|spec| spec.availability()) {
        None | Some(node_spec::Availability::Active) => NodeAvailability::Active,
        Some(node_spec::Availability::Pause) => NodeAvailability::Pause,
        Some(node_spec::Availability::Drain) => NodeAvailability::Drain,
    };
    view.labels = spec
        .and_then(|spec| spec.annotations.as_ref())
        .map(|annotations| sorted_labels(&annotations.labels))
        .unwrap_or_default();
    view.ready = node
        .status
        .as_ref()
        .is_some_and(|status| status.state() == node_status::State::Ready);
    view
}

fn sorted_labels(labels: &HashMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn reservations(task: &Task) -> Resources {
    let reserved = task
        .spec
        .as_ref()
        .and_then(|spec| spec.resources.as_ref())
        .and_then(|resources| resources.reservations.clone())
        .unwrap_or_default();
    Resources::new(
        u64::try_from(reserved.nano_cpus).unwrap_or(0),
        u64::try_from(reserved.memory_bytes).unwrap_or(0),
    )
}

fn host_ports(task: &Task) -> Vec<HostPort> {
    let ports = task
        .endpoint
        .as_ref()
        .and_then(|endpoint| endpoint.spec.as_ref())
        .map(|spec| spec.ports.clone())
        .unwrap_or_default();
    ports
        .into_iter()
        .filter(|port| port.publish_mode() == port_config::PublishMode::Host)
        .filter_map(|port| {
            let protocol = match port.protocol() {
                port_config::Protocol::Tcp => PortProtocol::Tcp,
                port_config::Protocol::Udp => PortProtocol::Udp,
                port_config::Protocol::Sctp => PortProtocol::Sctp,
            };
            Some(HostPort {
                protocol,
                port: u16::try_from(port.published_port)
                    .ok()
                    .filter(|port| *port != 0)?,
            })
        })
        .collect()
}

/// Whether a task holds resources on its node: assigned there and not ended.
fn occupies_node(task: &Task) -> bool {
    !task.node_id.is_empty()
        && observed_state(task) as i32 >= TaskState::Assigned as i32
        && !is_terminal(observed_state(task))
}

/// Whether a task waits for the scheduler: managers want it to run, it is not assigned yet, and
/// it has the addresses of the networks it attaches to ([`allocator::ready_for_scheduling`]).
/// A global task already names its node; the scheduler only checks that it fits there.
pub(crate) fn waits_for_node(task: &Task) -> bool {
    matches!(
        task.desired_state(),
        TaskState::Running | TaskState::Complete
    ) && (observed_state(task) as i32) < TaskState::Assigned as i32
        && allocator::ready_for_scheduling(task)
}

/// Whether a task waits for a node that the scheduler found none for: PENDING, with why as its
/// status's error (what `service ps` shows).
pub fn is_unplaceable(task: &Task) -> bool {
    waits_for_node(task)
        && observed_state(task) == TaskState::Pending
        && task
            .status
            .as_ref()
            .is_some_and(|status| !status.err.is_empty())
}

/// The scheduler's request for a task, or why it can never be placed as written.
fn task_request(task: &Task) -> Result<TaskRequest, String> {
    let mut request = TaskRequest::new(task.id.clone(), task.service_id.clone());
    request.reservations = reservations(task);
    request.host_published_ports = host_ports(task);
    let placement = task
        .spec
        .as_ref()
        .and_then(|spec| spec.placement.clone())
        .unwrap_or_default();
    request.constraints =
        Constraint::parse_all(&placement.constraints).map_err(|error| error.to_string())?;
    if !task.node_id.is_empty() {
        request.constraints.push(
            Constraint::parse(&format!("node.id=={}", task.node_id))
                .map_err(|error| error.to_string())?,
        );
    }
    for preference in &placement.preferences {
        if let Some(placement::preference::Preference::Spread(spread)) = &preference.preference {
            request.placement_preferences.push(
                SpreadPreference::parse(&spread.spread_descriptor)
                    .map_err(|error| error.to_string())?,
            );
        }
    }
    request.max_replicas_per_node = placement.max_replicas;
    request.platforms = placement
        .platforms
        .into_iter()
        .map(|platform| Platform::new(platform.os, platform.architecture))
        .collect();
    Ok(request)
}

/// What the tasks on one node hold of it: resources, tasks per service and host ports. The
/// task index keeps it as tasks change, so a scheduling pass reads each node's share without
/// passing over every task.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeOccupancy {
    /// Sums wide enough never to saturate, so that taking a task out undoes putting it in.
    nano_cpus: u128,
    memory_bytes: u128,
    tasks_by_service: BTreeMap<String, usize>,
    host_ports: BTreeMap<HostPort, usize>,
}

impl NodeOccupancy {
    /// Whether `task` counts on its node: assigned there and not ended.
    pub(crate) fn counts(task: &Task) -> bool {
        occupies_node(task)
    }

    /// Counts a task that [`NodeOccupancy::counts`] in, or back out.
    pub(crate) fn count(&mut self, task: &Task, add: bool) {
        let reserved = reservations(task);
        let (cpus, memory) = (
            u128::from(reserved.nano_cpus),
            u128::from(reserved.memory_bytes),
        );
        if add {
            self.nano_cpus += cpus;
            self.memory_bytes += memory;
        } else {
            self.nano_cpus = self.nano_cpus.saturating_sub(cpus);
            self.memory_bytes = self.memory_bytes.saturating_sub(memory);
        }
        tally(&mut self.tasks_by_service, task.service_id.clone(), add);
        for port in host_ports(task) {
            tally(&mut self.host_ports, port, add);
        }
    }

    /// Whether no task counts here (each one counts for its service).
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks_by_service.is_empty()
    }

    /// Sets what a node's view has reserved to `occupancy` (nothing when no task counts there).
    pub(crate) fn reserve_on(occupancy: Option<&NodeOccupancy>, view: &mut NodeView) {
        let empty = NodeOccupancy::default();
        let occupancy = occupancy.unwrap_or(&empty);
        let saturated = |sum: u128| u64::try_from(sum).unwrap_or(u64::MAX);
        view.reserved_resources = Resources::new(
            saturated(occupancy.nano_cpus),
            saturated(occupancy.memory_bytes),
        );
        view.task_count_by_service = occupancy
            .tasks_by_service
            .iter()
            .map(|(service_id, count)| (service_id.clone(), *count as u64))
            .collect();
        view.host_ports_in_use = occupancy.host_ports.keys().copied().collect();
    }
}

/// Places every task waiting for a node ([`crate::orchestrator::TaskIndex::waiting_for_node`]),
/// in one batch, on the nodes as their tasks occupy them (the views the cluster objects keep
/// current, so a pass builds none). Returns only real changes: a task left PENDING for the
/// reason it already shows gets no update, so a step never rewrites the store (and wakes
/// itself) for nothing.
pub fn plan_assignments(snapshot: &ClusterSnapshot<'_>) -> Vec<Assignment> {
    let index = snapshot.index();
    // Most steps have no task waiting: then there is nothing to weigh the nodes for.
    if index.waiting_for_node().next().is_none() {
        return Vec::new();
    }
    let tasks: Vec<&Task> = snapshot.tasks_with_ids(index.waiting_for_node()).collect();

    let mut outcomes = Vec::new();
    let mut requests = Vec::new();
    let mut waiting: HashMap<&str, &Task> = HashMap::new();
    for task in tasks {
        waiting.insert(task.id.as_str(), task);
        match task_request(task) {
            Ok(request) => requests.push(request),
            Err(message) => outcomes.push((task, AssignmentOutcome::Pending { message })),
        }
    }
    for decision in scheduler::schedule_on(snapshot.scheduler_nodes(), &requests) {
        let Some(task) = waiting.get(decision.task_id()) else {
            continue;
        };
        let outcome = match decision {
            Decision::Assign { node_id, .. } => AssignmentOutcome::Assigned { node_id },
            Decision::Unplaceable { reason, .. } => AssignmentOutcome::Pending {
                message: reason.to_string(),
            },
        };
        outcomes.push((task, outcome));
    }
    outcomes
        .into_iter()
        .filter(|(task, outcome)| match outcome {
            AssignmentOutcome::Pending { message } => {
                observed_state(task) != TaskState::Pending
                    || task.status.as_ref().map(|status| &status.err) != Some(message)
            }
            AssignmentOutcome::Assigned { .. } => true,
        })
        .map(|(task, outcome)| Assignment {
            task_id: task.id.clone(),
            read_version: task.read_version(),
            outcome,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::ClusterObjects;

    fn node(id: &str, zone: &str, memory_bytes: i64) -> Node {
        Node {
            id: id.into(),
            spec: Some(api::NodeSpec {
                annotations: Some(api::Annotations {
                    labels: [("zone".to_owned(), zone.to_owned())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            description: Some(api::NodeDescription {
                hostname: format!("host-{id}"),
                resources: Some(api::Resources {
                    nano_cpus: 2_000_000_000,
                    memory_bytes,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(api::NodeStatus {
                state: node_status::State::Ready as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(id: &str, constraints: &[&str], memory_bytes: i64) -> Task {
        Task {
            id: id.into(),
            service_id: "svc".into(),
            desired_state: TaskState::Running as i32,
            spec: Some(api::TaskSpec {
                placement: Some(Box::new(api::Placement {
                    constraints: constraints.iter().map(|c| c.to_string()).collect(),
                    ..Default::default()
                })),
                resources: Some(Box::new(api::ResourceRequirements {
                    reservations: Some(api::Resources {
                        memory_bytes,
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn outcomes(nodes: &[Node], tasks: &[Task]) -> Vec<(String, AssignmentOutcome)> {
        let objects = ClusterObjects::new([], nodes, tasks);
        plan_assignments(&objects.snapshot())
            .into_iter()
            .map(|assignment| (assignment.task_id, assignment.outcome))
            .collect()
    }

    fn assigned(node_id: &str) -> AssignmentOutcome {
        AssignmentOutcome::Assigned {
            node_id: node_id.into(),
        }
    }

    /// The scheduler knows no protobuf, so it can't take `spec`'s words for a node's role; the
    /// words its constraints match (`node.role == manager`) are checked against spec's here,
    /// where the one becomes the other.
    #[test]
    fn the_schedulers_role_words_are_specs() {
        use spec::enums::TextForm as _;
        for role in [api::NodeRole::Manager, api::NodeRole::Worker] {
            let mut stored = node("n", "east", 0);
            stored.role = role as i32;
            assert_eq!(node_view(&stored).role.as_str(), role.text());
        }
    }

    #[test]
    fn waiting_tasks_spread_over_nodes_and_honour_constraints() {
        let nodes = [node("n1", "a", 1 << 30), node("n2", "b", 1 << 30)];
        let tasks = [
            task("t1", &[], 0),
            task("t2", &[], 0),
            task("t3", &["node.labels.zone==b"], 0),
        ];
        let mut result = outcomes(&nodes, &tasks);
        result.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(result[2], ("t3".into(), assigned("n2")));
        let first_two: Vec<&AssignmentOutcome> = result[..2].iter().map(|(_, o)| o).collect();
        assert!(first_two.contains(&&assigned("n1")) && first_two.contains(&&assigned("n2")));
    }

    #[test]
    fn tasks_already_on_a_node_count_against_its_memory() {
        let nodes = [node("n1", "a", 1 << 30)];
        let mut running = task("old", &[], 768 << 20);
        running.node_id = "n1".into();
        running.status = Some(api::TaskStatus {
            state: TaskState::Running as i32,
            ..Default::default()
        });
        let result = outcomes(&nodes, &[running, task("new", &[], 512 << 20)]);
        let [(id, AssignmentOutcome::Pending { message })] = &result[..] else {
            panic!("one pending task expected, got {result:?}");
        };
        assert_eq!(id, "new");
        assert!(
            message.contains("insufficient memory on 1 node"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_constraint_keeps_the_task_pending_with_the_parse_error() {
        let result = outcomes(
            &[node("n1", "a", 1 << 30)],
            &[task("t", &["node.foo==x"], 0)],
        );
        let [(_, AssignmentOutcome::Pending { message })] = &result[..] else {
            panic!("a pending task expected, got {result:?}");
        };
        assert!(message.contains("node.foo"), "{message}");
    }

    #[test]
    fn an_unchanged_pending_reason_is_not_written_again() {
        let mut waiting = task("t", &["node.labels.zone==z"], 0);
        let first = outcomes(&[node("n1", "a", 1 << 30)], std::slice::from_ref(&waiting));
        let [(_, AssignmentOutcome::Pending { message })] = &first[..] else {
            panic!("a pending task expected, got {first:?}");
        };
        waiting.status = Some(api::TaskStatus {
            state: TaskState::Pending as i32,
            message: "pending task scheduling".into(),
            err: message.clone(),
            ..Default::default()
        });
        assert!(outcomes(&[node("n1", "a", 1 << 30)], &[waiting]).is_empty());
    }

    #[test]
    fn a_global_task_is_checked_against_its_own_node_only() {
        let nodes = [node("n1", "a", 1 << 30), node("n2", "b", 256 << 20)];
        let mut fits = task("fits", &[], 512 << 20);
        fits.node_id = "n1".into();
        let mut too_big = task("too-big", &[], 512 << 20);
        too_big.node_id = "n2".into();
        let mut result = outcomes(&nodes, &[fits, too_big]);
        result.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(result[0], ("fits".into(), assigned("n1")));
        let (id, AssignmentOutcome::Pending { message }) = &result[1] else {
            panic!("too-big stays pending: {result:?}");
        };
        assert_eq!(id, "too-big");
        assert!(message.contains("insufficient memory"), "{message}");
    }

    #[test]
    fn only_tasks_wanted_running_without_a_node_are_placed() {
        let mut shut_down = task("down", &[], 0);
        shut_down.desired_state = TaskState::Shutdown as i32;
        let mut delayed = task("delayed", &[], 0);
        delayed.desired_state = TaskState::Ready as i32;
        assert!(outcomes(&[node("n1", "a", 1 << 30)], &[shut_down, delayed]).is_empty());
    }

    #[test]
    fn a_task_on_a_network_is_placed_only_once_it_has_its_addresses() {
        let mut waiting = task("t", &[], 0);
        waiting.spec.as_mut().unwrap().networks = vec![api::NetworkAttachmentConfig {
            target: "net".into(),
            ..Default::default()
        }];
        assert!(outcomes(&[node("n1", "a", 1 << 30)], std::slice::from_ref(&waiting)).is_empty());
        waiting.networks = vec![api::NetworkAttachment {
            addresses: vec!["10.0.0.3/24".into()],
            ..Default::default()
        }];
        waiting.status = Some(api::TaskStatus {
            state: TaskState::Pending as i32,
            ..Default::default()
        });
        assert_eq!(
            outcomes(&[node("n1", "a", 1 << 30)], &[waiting]),
            vec![("t".into(), assigned("n1"))]
        );
    }
}
