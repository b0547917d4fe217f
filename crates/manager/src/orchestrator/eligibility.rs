//! Which nodes may run a service's per-node (global) tasks, reusing the scheduler's parser
//! and matcher for placement constraints.

use shoal_proto::api::{Node, Service, node_spec, node_status};

/// What a node allows for one service's per-node task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeEligibility {
    /// Ready, active and satisfying the constraints: gets a task if it has none.
    RunsNewTasks,
    /// Paused, or connected but not (yet) reported ready: keeps a task it has but gets no
    /// new one.
    KeepsExistingTasks,
    /// Drained, down, or failing the constraints: its task must be shut down.
    Excluded,
}

/// Placement constraints of a service, parsed once per reconcile.
#[derive(Debug, Clone)]
pub struct ServiceConstraints {
    parsed: Result<Vec<scheduler::Constraint>, scheduler::SchedulerError>,
}

impl ServiceConstraints {
    /// Parses the constraints in the service's task spec. A constraint the control API
    /// should have rejected makes every node ineligible rather than every node eligible:
    /// running nowhere is the safer reading of a rule nobody can interpret.
    pub fn of_service(service: &Service) -> ServiceConstraints {
        let expressions: &[String] = service
            .spec
            .as_ref()
            .and_then(|spec| spec.task.as_ref())
            .and_then(|task| task.placement.as_ref())
            .map_or(&[], |placement| placement.constraints.as_slice());
        ServiceConstraints {
            parsed: scheduler::Constraint::parse_all(expressions),
        }
    }

    /// Whether every constraint holds on the node.
    pub fn are_satisfied_by(&self, node: &Node) -> bool {
        match &self.parsed {
            Ok(constraints) => {
                let view = crate::assignment::node_view(node);
                constraints
                    .iter()
                    .all(|constraint| constraint.is_satisfied_by(&view))
            }
            Err(_) => false,
        }
    }

    /// The parse error, when a constraint could not be read.
    pub fn parse_error(&self) -> Option<&scheduler::SchedulerError> {
        self.parsed.as_ref().err()
    }
}

/// Classifies a node for one service's per-node task.
pub fn node_eligibility(node: &Node, constraints: &ServiceConstraints) -> NodeEligibility {
    let availability = node
        .spec
        .as_ref()
        .map_or(node_spec::Availability::Active, |spec| spec.availability());
    let state = node
        .status
        .as_ref()
        .map_or(node_status::State::Unknown, |status| status.state());
    if availability == node_spec::Availability::Drain
        || state == node_status::State::Down
        || !constraints.are_satisfied_by(node)
    {
        return NodeEligibility::Excluded;
    }
    if availability == node_spec::Availability::Active && state == node_status::State::Ready {
        NodeEligibility::RunsNewTasks
    } else {
        NodeEligibility::KeepsExistingTasks
    }
}

/// Whether a replicated task assigned to this node (`None`: a node no longer in the cluster)
/// may stay there: it must move
/// when its node is drained, down or gone, but not when it is merely paused.
pub(crate) fn node_keeps_replicated_tasks(node: Option<&Node>) -> bool {
    let Some(node) = node else {
        return false;
    };
    let drained = node
        .spec
        .as_ref()
        .is_some_and(|spec| spec.availability() == node_spec::Availability::Drain);
    let down = node
        .status
        .as_ref()
        .is_some_and(|status| status.state() == node_status::State::Down);
    !drained && !down
}
