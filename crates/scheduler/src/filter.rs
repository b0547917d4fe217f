//! The node filters, one small function each, and the per-node state they read while a batch is placed.

use std::collections::BTreeSet;

use crate::constraint::{Constraint, all_constraints_satisfied};
use crate::model::{HostPort, NodeAvailability, NodeView, Platform, Resources};
use crate::reason::FilterRejection;

/// The part of a node that changes as a batch places tasks on it.
#[derive(Debug, Clone)]
pub(crate) struct NodeLoad {
    /// Resources not yet reserved, shrinking as tasks land.
    pub(crate) available_resources: Resources,
    /// Tasks of every service on the node, growing as tasks land.
    pub(crate) total_task_count: u64,
    /// Host ports taken, growing as tasks that publish host ports land.
    pub(crate) host_ports_in_use: BTreeSet<HostPort>,
}

impl NodeLoad {
    /// The load a node reports before the batch starts.
    pub(crate) fn from_view(node: &NodeView) -> NodeLoad {
        NodeLoad {
            available_resources: node.available_resources(),
            total_task_count: node.total_task_count(),
            host_ports_in_use: node.host_ports_in_use.clone(),
        }
    }
}

/// Ready filter: only nodes that are up and connected take tasks.
pub(crate) fn ready_rejection(node: &NodeView) -> Option<FilterRejection> {
    (!node.ready).then_some(FilterRejection::NotReady)
}

/// Availability filter: paused and drained nodes take no new tasks.
pub(crate) fn availability_rejection(node: &NodeView) -> Option<FilterRejection> {
    (node.availability != NodeAvailability::Active).then_some(FilterRejection::NotActive)
}

/// Resource filter: the task's reservations must fit in what is still available.
/// Says which resource ran out so the user knows what to free or add.
pub(crate) fn resource_rejection(
    available: Resources,
    reservations: Resources,
) -> Option<FilterRejection> {
    let cpu_short = reservations.nano_cpus > available.nano_cpus;
    let memory_short = reservations.memory_bytes > available.memory_bytes;
    match (cpu_short, memory_short) {
        (false, false) => None,
        (true, true) => Some(FilterRejection::InsufficientResources),
        (false, true) => Some(FilterRejection::InsufficientMemory),
        (true, false) => Some(FilterRejection::InsufficientCpu),
    }
}

/// Constraint filter: every constraint must hold.
pub(crate) fn constraint_rejection(
    node: &NodeView,
    constraints: &[Constraint],
) -> Option<FilterRejection> {
    (!all_constraints_satisfied(constraints, node))
        .then_some(FilterRejection::ConstraintsNotSatisfied)
}

/// Platform filter: the node's platform must be one the image supports; an
/// empty list, or an empty os or architecture inside an entry, accepts anything.
pub(crate) fn platform_rejection(
    node: &NodeView,
    supported_platforms: &[Platform],
) -> Option<FilterRejection> {
    let supported = supported_platforms.is_empty()
        || supported_platforms
            .iter()
            .any(|platform| platform_accepts(platform, &node.platform));
    (!supported).then_some(FilterRejection::UnsupportedPlatform)
}

/// Whether an image platform accepts a node platform, treating the two common
/// spellings of each architecture (`x86_64`/`amd64`, `aarch64`/`arm64`) as one.
fn platform_accepts(image_platform: &Platform, node_platform: &Platform) -> bool {
    let os_matches = image_platform.os.is_empty() || image_platform.os == node_platform.os;
    let architecture_matches = image_platform.architecture.is_empty()
        || canonical_architecture(&image_platform.architecture)
            == canonical_architecture(&node_platform.architecture);
    os_matches && architecture_matches
}

/// Maps the kernel's architecture names to the Go/OCI names images use.
fn canonical_architecture(architecture: &str) -> &str {
    match architecture {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Max-replicas filter: a node already running the limit of the service's tasks takes no more.
pub(crate) fn max_replicas_rejection(
    service_task_count_on_node: u64,
    max_replicas_per_node: u64,
) -> Option<FilterRejection> {
    (max_replicas_per_node != 0 && service_task_count_on_node >= max_replicas_per_node)
        .then_some(FilterRejection::MaxReplicasPerNodeReached)
}

/// Host-port filter: every host-mode port the task publishes must be free on the node.
pub(crate) fn host_port_rejection(
    host_ports_in_use: &BTreeSet<HostPort>,
    requested_host_ports: &[HostPort],
) -> Option<FilterRejection> {
    requested_host_ports
        .iter()
        .any(|port| host_ports_in_use.contains(port))
        .then_some(FilterRejection::HostPortInUse)
}

/// The filters whose answer cannot change during a batch: ready, availability,
/// constraints and platform. Returns the first that rejects the node.
pub(crate) fn fixed_rejection(
    node: &NodeView,
    constraints: &[Constraint],
    supported_platforms: &[Platform],
) -> Option<FilterRejection> {
    ready_rejection(node)
        .or_else(|| availability_rejection(node))
        .or_else(|| constraint_rejection(node, constraints))
        .or_else(|| platform_rejection(node, supported_platforms))
}

/// What one task asks of a node's changing state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChangingRequirements<'task> {
    pub(crate) reservations: Resources,
    pub(crate) max_replicas_per_node: u64,
    pub(crate) host_published_ports: &'task [HostPort],
}

/// Runs every filter in the fixed order (ready, availability, resources,
/// constraints, platform, max replicas, host ports) and returns the first that
/// rejects the node. `fixed` is the cached answer of [`fixed_rejection`].
pub(crate) fn first_rejection(
    fixed: Option<FilterRejection>,
    load: &NodeLoad,
    service_task_count_on_node: u64,
    requirements: ChangingRequirements<'_>,
) -> Option<FilterRejection> {
    if let Some(rejection @ (FilterRejection::NotReady | FilterRejection::NotActive)) = fixed {
        return Some(rejection);
    }
    resource_rejection(load.available_resources, requirements.reservations)
        .or(fixed)
        .or_else(|| {
            max_replicas_rejection(
                service_task_count_on_node,
                requirements.max_replicas_per_node,
            )
        })
        .or_else(|| host_port_rejection(&load.host_ports_in_use, requirements.host_published_ports))
}

/// Whether the changing filters (resources, max replicas, host ports) let the node take the task.
pub(crate) fn changing_filters_pass(
    load: &NodeLoad,
    service_task_count_on_node: u64,
    requirements: ChangingRequirements<'_>,
) -> bool {
    resource_rejection(load.available_resources, requirements.reservations).is_none()
        && max_replicas_rejection(
            service_task_count_on_node,
            requirements.max_replicas_per_node,
        )
        .is_none()
        && host_port_rejection(&load.host_ports_in_use, requirements.host_published_ports).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeRole;

    const GIB: u64 = 1 << 30;
    const ONE_CPU: u64 = 1_000_000_000;

    fn node() -> NodeView {
        NodeView::new("node-1", Resources::new(4 * ONE_CPU, 8 * GIB))
    }

    #[test]
    fn ready_filter_rejects_only_nodes_that_are_down() {
        let mut down = node();
        down.ready = false;
        assert_eq!(ready_rejection(&node()), None);
        assert_eq!(ready_rejection(&down), Some(FilterRejection::NotReady));
    }

    #[test]
    fn availability_filter_accepts_only_active_nodes() {
        let table = [
            (NodeAvailability::Active, None),
            (NodeAvailability::Pause, Some(FilterRejection::NotActive)),
            (NodeAvailability::Drain, Some(FilterRejection::NotActive)),
        ];
        for (availability, expected) in table {
            let mut candidate = node();
            candidate.availability = availability;
            assert_eq!(
                availability_rejection(&candidate),
                expected,
                "{availability:?}"
            );
        }
    }

    #[test]
    fn resource_filter_names_the_resource_that_ran_out() {
        let available = Resources::new(2 * ONE_CPU, 2 * GIB);
        let table = [
            (Resources::ZERO, None),
            (Resources::new(2 * ONE_CPU, 2 * GIB), None),
            (
                Resources::new(2 * ONE_CPU + 1, 0),
                Some(FilterRejection::InsufficientCpu),
            ),
            (
                Resources::new(0, 2 * GIB + 1),
                Some(FilterRejection::InsufficientMemory),
            ),
            (
                Resources::new(3 * ONE_CPU, 3 * GIB),
                Some(FilterRejection::InsufficientResources),
            ),
        ];
        for (reservations, expected) in table {
            assert_eq!(
                resource_rejection(available, reservations),
                expected,
                "{reservations:?}"
            );
        }
    }

    #[test]
    fn a_node_reserved_beyond_its_total_has_nothing_left() {
        let mut overcommitted = node();
        overcommitted.reserved_resources = Resources::new(5 * ONE_CPU, 9 * GIB);
        assert_eq!(overcommitted.available_resources(), Resources::ZERO);
        assert_eq!(
            resource_rejection(overcommitted.available_resources(), Resources::new(1, 0)),
            Some(FilterRejection::InsufficientCpu)
        );
        assert_eq!(
            resource_rejection(overcommitted.available_resources(), Resources::ZERO),
            None
        );
    }

    #[test]
    fn constraint_filter_requires_every_constraint() {
        let mut manager = node();
        manager.role = NodeRole::Manager;
        manager.labels.insert("zone".to_owned(), "a".to_owned());
        let table: [(&[&str], Option<FilterRejection>); 4] = [
            (&[], None),
            (&["node.role==manager", "node.labels.zone==a"], None),
            (
                &["node.role==manager", "node.labels.zone==b"],
                Some(FilterRejection::ConstraintsNotSatisfied),
            ),
            (
                &["node.role!=manager"],
                Some(FilterRejection::ConstraintsNotSatisfied),
            ),
        ];
        for (expressions, expected) in table {
            let constraints = Constraint::parse_all(expressions).expect("valid table");
            assert_eq!(
                constraint_rejection(&manager, &constraints),
                expected,
                "{expressions:?}"
            );
        }
    }

    #[test]
    fn platform_filter_normalises_architecture_names_and_treats_empty_as_any() {
        let table = [
            (vec![], None),
            (vec![Platform::new("linux", "amd64")], None),
            (vec![Platform::new("linux", "x86_64")], None),
            (vec![Platform::new("", "")], None),
            (
                vec![
                    Platform::new("windows", "amd64"),
                    Platform::new("linux", ""),
                ],
                None,
            ),
            (
                vec![Platform::new("linux", "arm64")],
                Some(FilterRejection::UnsupportedPlatform),
            ),
            (
                vec![Platform::new("windows", "")],
                Some(FilterRejection::UnsupportedPlatform),
            ),
        ];
        let mut x86_node = node();
        x86_node.platform = Platform::new("linux", "x86_64");
        for (platforms, expected) in table {
            assert_eq!(
                platform_rejection(&x86_node, &platforms),
                expected,
                "{platforms:?}"
            );
        }
        let mut arm_node = node();
        arm_node.platform = Platform::new("linux", "aarch64");
        assert_eq!(
            platform_rejection(&arm_node, &[Platform::new("linux", "arm64")]),
            None
        );
    }

    #[test]
    fn max_replicas_filter_treats_zero_as_unlimited() {
        let table = [
            (0, 0, None),
            (1_000, 0, None),
            (0, 1, None),
            (1, 1, Some(FilterRejection::MaxReplicasPerNodeReached)),
            (2, 3, None),
            (3, 3, Some(FilterRejection::MaxReplicasPerNodeReached)),
        ];
        for (count, limit, expected) in table {
            assert_eq!(
                max_replicas_rejection(count, limit),
                expected,
                "{count} of {limit}"
            );
        }
    }

    #[test]
    fn host_port_filter_compares_protocol_and_port() {
        let in_use: BTreeSet<HostPort> = [HostPort::tcp(80)].into_iter().collect();
        let table = [
            (vec![], None),
            (
                vec![HostPort::tcp(80)],
                Some(FilterRejection::HostPortInUse),
            ),
            (vec![HostPort::udp(80)], None),
            (
                vec![HostPort::tcp(8080), HostPort::tcp(80)],
                Some(FilterRejection::HostPortInUse),
            ),
        ];
        for (requested, expected) in table {
            assert_eq!(
                host_port_rejection(&in_use, &requested),
                expected,
                "{requested:?}"
            );
        }
    }

    #[test]
    fn first_rejection_follows_the_fixed_filter_order() {
        let mut load = NodeLoad::from_view(&node());
        load.available_resources = Resources::ZERO;
        load.host_ports_in_use.insert(HostPort::tcp(80));
        let everything_fails = ChangingRequirements {
            reservations: Resources::new(1, 1),
            max_replicas_per_node: 1,
            host_published_ports: &[HostPort::tcp(80)],
        };
        let nothing_changing_fails = ChangingRequirements {
            reservations: Resources::ZERO,
            max_replicas_per_node: 0,
            host_published_ports: &[],
        };
        let ports_only = ChangingRequirements {
            host_published_ports: &[HostPort::tcp(80)],
            ..nothing_changing_fails
        };
        let table = [
            (
                Some(FilterRejection::NotReady),
                everything_fails,
                Some(FilterRejection::NotReady),
            ),
            (
                Some(FilterRejection::NotActive),
                everything_fails,
                Some(FilterRejection::NotActive),
            ),
            (
                Some(FilterRejection::ConstraintsNotSatisfied),
                everything_fails,
                Some(FilterRejection::InsufficientResources),
            ),
            (
                Some(FilterRejection::UnsupportedPlatform),
                nothing_changing_fails,
                Some(FilterRejection::UnsupportedPlatform),
            ),
            (
                None,
                ChangingRequirements {
                    reservations: Resources::ZERO,
                    ..everything_fails
                },
                Some(FilterRejection::MaxReplicasPerNodeReached),
            ),
            (None, ports_only, Some(FilterRejection::HostPortInUse)),
            (None, nothing_changing_fails, None),
        ];
        for (fixed, requirements, expected) in table {
            assert_eq!(
                first_rejection(fixed, &load, 1, requirements),
                expected,
                "{fixed:?}"
            );
            // The fast check used while placing agrees with the full pipeline on the changing filters.
            assert_eq!(
                changing_filters_pass(&load, 1, requirements),
                first_rejection(None, &load, 1, requirements).is_none(),
                "{requirements:?}"
            );
        }
    }
}
