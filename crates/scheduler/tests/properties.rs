//! Property tests: over random clusters and batches, `schedule` keeps every placement invariant.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use scheduler::{
    Constraint, Decision, HostPort, NodeAvailability, NodeRole, NodeSet, NodeView, Platform,
    Resources, SpreadPreference, TaskRequest, schedule, schedule_on,
};

/// Half a CPU, the resource grain of generated nodes and tasks.
const HALF_CPU: u64 = 500_000_000;
/// 256 MiB, the memory grain of generated nodes and tasks.
const QUARTER_GIB: u64 = 256 << 20;

const SERVICES: [&str; 4] = ["web", "db", "cache", "batch"];
const ZONES: [Option<&str>; 4] = [Some("a"), Some("b"), Some("c"), None];
const PORTS: [HostPort; 3] = [HostPort::tcp(80), HostPort::tcp(443), HostPort::udp(53)];
const CONSTRAINT_POOL: [&str; 8] = [
    "node.role==worker",
    "node.role==manager",
    "node.labels.zone==a",
    "node.labels.zone!=b",
    "node.labels.disk==ssd",
    "engine.labels.gpu!=yes",
    "node.platform.arch==amd64",
    "node.hostname!=node-3",
];
const PREFERENCE_POOL: [&str; 2] = ["node.labels.zone", "node.labels.disk"];

fn node_strategy(index: usize) -> impl Strategy<Value = NodeView> {
    (
        (any::<bool>(), prop::bool::weighted(0.85), 0..10_usize),
        (0..4_usize, any::<bool>(), any::<bool>(), any::<bool>()),
        (0..9_u64, 0..9_u64, 0..5_u64, 0..5_u64),
        (
            prop::collection::vec(0..4_u64, SERVICES.len()),
            prop::collection::vec(any::<bool>(), 3),
        ),
    )
        .prop_map(
            move |(
                (is_manager, ready, availability_roll),
                (zone, has_ssd, has_gpu, is_arm),
                (total_half_cpus, total_quarter_gibs, reserved_half_cpus, reserved_quarter_gibs),
                (service_counts, ports_in_use),
            )| {
                let mut node = NodeView::new(
                    format!("node-{index}"),
                    Resources::new(total_half_cpus * HALF_CPU, total_quarter_gibs * QUARTER_GIB),
                );
                node.role = if is_manager {
                    NodeRole::Manager
                } else {
                    NodeRole::Worker
                };
                node.ready = ready;
                node.availability = match availability_roll {
                    0 => NodeAvailability::Drain,
                    1 => NodeAvailability::Pause,
                    _ => NodeAvailability::Active,
                };
                if let Some(zone) = ZONES[zone] {
                    node.labels.insert("zone".to_owned(), zone.to_owned());
                }
                if has_ssd {
                    node.labels.insert("disk".to_owned(), "ssd".to_owned());
                }
                if has_gpu {
                    node.engine_labels
                        .insert("gpu".to_owned(), "yes".to_owned());
                }
                if is_arm {
                    node.platform = Platform::new("linux", "arm64");
                }
                // Some nodes are reserved beyond their total, which must simply leave nothing free.
                node.reserved_resources = Resources::new(
                    reserved_half_cpus * HALF_CPU,
                    reserved_quarter_gibs * QUARTER_GIB,
                );
                for (service, count) in SERVICES.iter().zip(service_counts) {
                    if count > 0 {
                        node.task_count_by_service
                            .insert((*service).to_owned(), count);
                    }
                }
                for (port, in_use) in PORTS.iter().zip(ports_in_use) {
                    if in_use {
                        node.host_ports_in_use.insert(*port);
                    }
                }
                node
            },
        )
}

/// A service's placement rules; tasks of one service usually share them, as in a real batch.
fn task_shape_strategy() -> impl Strategy<Value = TaskRequest> {
    (
        (0..SERVICES.len(), 0..4_u64, 0..4_u64, 0..4_u64),
        prop::collection::vec(0..CONSTRAINT_POOL.len(), 0..3),
        prop::collection::vec(0..PREFERENCE_POOL.len(), 0..3),
        (prop::collection::vec(any::<bool>(), 3), 0..4_usize),
    )
        .prop_map(
            |(
                (service, half_cpus, quarter_gibs, max_replicas_per_node),
                constraints,
                preferences,
                (ports, platform_roll),
            )| {
                let mut task = TaskRequest::new("", SERVICES[service]);
                task.reservations =
                    Resources::new(half_cpus * HALF_CPU, quarter_gibs * QUARTER_GIB);
                task.max_replicas_per_node = max_replicas_per_node;
                task.constraints = constraints
                    .into_iter()
                    .map(|index| Constraint::parse(CONSTRAINT_POOL[index]).expect("pool is valid"))
                    .collect();
                task.placement_preferences = preferences
                    .into_iter()
                    .map(|index| SpreadPreference::parse(PREFERENCE_POOL[index]).expect("valid"))
                    .collect();
                task.host_published_ports = PORTS
                    .iter()
                    .zip(ports)
                    .filter_map(|(port, wanted)| wanted.then_some(*port))
                    .collect();
                task.platforms = match platform_roll {
                    0 => vec![Platform::new("linux", "amd64")],
                    1 => vec![
                        Platform::new("linux", "arm64"),
                        Platform::new("linux", "x86_64"),
                    ],
                    _ => Vec::new(),
                };
                task
            },
        )
}

fn cluster_and_batch_strategy() -> impl Strategy<Value = (Vec<NodeView>, Vec<TaskRequest>)> {
    let nodes =
        (0..12_usize).prop_flat_map(|count| (0..count).map(node_strategy).collect::<Vec<_>>());
    let shapes = prop::collection::vec(task_shape_strategy(), 1..5);
    let batch = (
        shapes,
        prop::collection::vec((any::<prop::sample::Index>(), 1..6_usize), 0..10),
    )
        .prop_map(|(shapes, runs)| {
            let mut tasks = Vec::new();
            for (shape, run_length) in runs {
                for _ in 0..run_length {
                    let mut task = shape.get(&shapes).clone();
                    task.task_id = format!("task-{}", tasks.len());
                    tasks.push(task);
                }
            }
            tasks
        });
    (nodes, batch)
}

fn platform_accepts(task: &TaskRequest, node: &NodeView) -> bool {
    let canonical = |architecture: &str| match architecture {
        "x86_64" => "amd64".to_owned(),
        other => other.to_owned(),
    };
    task.platforms.is_empty()
        || task.platforms.iter().any(|platform| {
            platform.os == node.platform.os
                && canonical(&platform.architecture) == canonical(&node.platform.architecture)
        })
}

/// The order `schedule` documents for placing tasks: groups of identical
/// tasks of one service in order of first appearance, each group in input order.
fn placement_order(tasks: &[TaskRequest]) -> Vec<usize> {
    let mut groups: Vec<(TaskRequest, Vec<usize>)> = Vec::new();
    for (index, task) in tasks.iter().enumerate() {
        let shape = TaskRequest {
            task_id: String::new(),
            ..task.clone()
        };
        match groups
            .iter_mut()
            .find(|(group_shape, _)| *group_shape == shape)
        {
            Some((_, members)) => members.push(index),
            None => groups.push((shape, vec![index])),
        }
    }
    groups
        .into_iter()
        .flat_map(|(_, members)| members)
        .collect()
}

/// Everything the batch put on one node.
#[derive(Default)]
struct PlacedOnNode {
    reserved: Resources,
    tasks_by_service: BTreeMap<String, u64>,
    ports: BTreeSet<HostPort>,
}

/// Whether `task` would still fit `node` after the batch, by every filter.
fn would_fit_after_batch(task: &TaskRequest, node: &NodeView, placed: &PlacedOnNode) -> bool {
    let available = node.available_resources().saturating_sub(placed.reserved);
    let service_count = node
        .task_count_by_service
        .get(&task.service_id)
        .copied()
        .unwrap_or(0)
        + placed
            .tasks_by_service
            .get(&task.service_id)
            .copied()
            .unwrap_or(0);
    node.ready
        && node.availability == NodeAvailability::Active
        && task.reservations.nano_cpus <= available.nano_cpus
        && task.reservations.memory_bytes <= available.memory_bytes
        && task
            .constraints
            .iter()
            .all(|constraint| constraint.is_satisfied_by(node))
        && platform_accepts(task, node)
        && (task.max_replicas_per_node == 0 || service_count < task.max_replicas_per_node)
        && task
            .host_published_ports
            .iter()
            .all(|port| !node.host_ports_in_use.contains(port) && !placed.ports.contains(port))
}

/// A fixed seed keeps runs deterministic, as every test here must be; set
/// `PROPTEST_RNG_SEED` to explore other cases and `PROPTEST_CASES` (above 512)
/// to run more. Failures print their minimal input and are not written to disk.
fn deterministic_config() -> ProptestConfig {
    let from_environment = ProptestConfig::default();
    let rng_seed = match from_environment.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x5c4e_d01e),
        chosen => chosen,
    };
    ProptestConfig {
        cases: 512,
        rng_seed,
        failure_persistence: None,
        ..from_environment
    }
}

proptest! {
    #![proptest_config(deterministic_config())]

    #[test]
    fn placements_respect_every_filter_and_every_task_gets_one_decision(
        (nodes, tasks) in cluster_and_batch_strategy()
    ) {
        let decisions = schedule(&nodes, &tasks);

        // Exactly one decision per task, in input order.
        prop_assert_eq!(decisions.len(), tasks.len());
        for (decision, task) in decisions.iter().zip(&tasks) {
            prop_assert_eq!(decision.task_id(), task.task_id.as_str());
        }

        let node_by_id: BTreeMap<&str, &NodeView> =
            nodes.iter().map(|node| (node.id.as_str(), node)).collect();
        let mut placed_by_node: BTreeMap<&str, PlacedOnNode> = BTreeMap::new();
        for (decision, task) in decisions.iter().zip(&tasks) {
            let Some(node_id) = decision.assigned_node_id() else { continue };
            let node = node_by_id.get(node_id).copied();
            prop_assert!(node.is_some(), "assigned to unknown node {}", node_id);
            let Some(node) = node else { continue };
            prop_assert!(node.ready, "{} placed on non-ready {}", task.task_id, node_id);
            prop_assert_eq!(node.availability, NodeAvailability::Active);
            for constraint in &task.constraints {
                prop_assert!(constraint.is_satisfied_by(node), "{} breaks {}", node_id, constraint);
            }
            prop_assert!(platform_accepts(task, node), "{} has the wrong platform", node_id);

            let placed = placed_by_node.entry(node_id).or_default();
            placed.reserved = placed.reserved.saturating_add(task.reservations);
            *placed.tasks_by_service.entry(task.service_id.clone()).or_default() += 1;
            for port in &task.host_published_ports {
                prop_assert!(!node.host_ports_in_use.contains(port), "{:?} in use on {}", port, node_id);
                prop_assert!(placed.ports.insert(*port), "{:?} given twice on {}", port, node_id);
            }
        }
        // Tasks of one service with different limits (old and new spec during
        // an update) each see the count at the moment they are placed, so the
        // limit is checked in the documented placement order.
        let mut running_counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for task_index in placement_order(&tasks) {
            let task = &tasks[task_index];
            let Some(node_id) = decisions[task_index].assigned_node_id() else { continue };
            let count = running_counts.entry((node_id, task.service_id.as_str())).or_insert_with(|| {
                node_by_id[node_id].task_count_by_service.get(&task.service_id).copied().unwrap_or(0)
            });
            *count += 1;
            if task.max_replicas_per_node != 0 {
                prop_assert!(
                    *count <= task.max_replicas_per_node,
                    "{} runs {} of {} over the limit {}",
                    node_id, count, task.service_id, task.max_replicas_per_node
                );
            }
        }
        for (node_id, placed) in &placed_by_node {
            let available = node_by_id[node_id].available_resources();
            prop_assert!(placed.reserved.nano_cpus <= available.nano_cpus, "cpu overcommitted on {}", node_id);
            prop_assert!(placed.reserved.memory_bytes <= available.memory_bytes, "memory overcommitted on {}", node_id);
        }

        // A task is left unplaceable only if no node could take it even now.
        let nothing_placed = PlacedOnNode::default();
        for (decision, task) in decisions.iter().zip(&tasks) {
            if let Decision::Unplaceable { reason, .. } = decision {
                for node in &nodes {
                    let placed = placed_by_node.get(node.id.as_str()).unwrap_or(&nothing_placed);
                    prop_assert!(
                        !would_fit_after_batch(task, node, placed),
                        "{} left unplaceable ({}) although {} fits it", task.task_id, reason, node.id
                    );
                }
                let counted: usize = reason.rejected_node_counts().iter().map(|(_, count)| count).sum();
                prop_assert_eq!(counted, nodes.len(), "every node is counted once in {}", reason);
            }
        }
    }

    #[test]
    fn the_result_depends_only_on_the_inputs_not_on_node_order(
        (nodes, tasks) in cluster_and_batch_strategy()
    ) {
        let decisions = schedule(&nodes, &tasks);
        prop_assert_eq!(&decisions, &schedule(&nodes, &tasks));
        let mut reversed = nodes.clone();
        reversed.reverse();
        prop_assert_eq!(&decisions, &schedule(&reversed, &tasks));
    }

    /// A set kept through joins, departures and changes in any order places a batch as one
    /// built afresh from the same nodes.
    #[test]
    fn a_kept_node_set_places_as_a_fresh_one_does(
        (nodes, tasks) in cluster_and_batch_strategy(),
        departures in 0..8_usize,
    ) {
        // Every node first joins in a stale form, with no resources and another service.
        let mut kept: NodeSet = nodes
            .iter()
            .map(|node| {
                let mut stale = NodeView::new(node.id.clone(), Resources::ZERO);
                stale.task_count_by_service.insert("stale".to_owned(), 3);
                stale
            })
            .collect();
        for node in nodes.iter().rev() {
            prop_assert!(kept.update(&node.id, |view| *view = node.clone()));
        }
        // Departures move the last nodes into the freed places; the departed come back.
        let departing: Vec<&NodeView> = nodes.iter().take(departures).collect();
        for node in &departing {
            prop_assert!(kept.remove(&node.id).is_some());
        }
        for node in departing.iter().rev() {
            kept.insert((*node).clone());
        }
        prop_assert_eq!(kept.len(), nodes.len());
        prop_assert_eq!(schedule_on(&kept, &tasks), schedule(&nodes, &tasks));
    }

    #[test]
    fn spread_keeps_label_groups_within_one_task_of_each_other(
        zone_of_each_node in prop::collection::vec(0..ZONES.len(), 1..20),
        task_count in 0..60_usize,
    ) {
        // Nothing but spread limits placement here, so the groups (zones plus
        // the no-zone group) present in the cluster must end up even.
        let nodes: Vec<NodeView> = zone_of_each_node
            .iter()
            .enumerate()
            .map(|(index, zone)| {
                let mut node = NodeView::new(format!("node-{index:02}"), Resources::ZERO);
                if let Some(zone) = ZONES[*zone] {
                    node.labels.insert("zone".to_owned(), zone.to_owned());
                }
                node
            })
            .collect();
        let preference = SpreadPreference::parse("node.labels.zone").expect("valid");
        let tasks: Vec<TaskRequest> = (0..task_count)
            .map(|number| {
                let mut task = TaskRequest::new(format!("task-{number}"), "web");
                task.placement_preferences = vec![preference.clone()];
                task
            })
            .collect();
        let mut tasks_per_group: BTreeMap<Option<&str>, usize> =
            zone_of_each_node.iter().map(|zone| (ZONES[*zone], 0)).collect();
        for decision in schedule(&nodes, &tasks) {
            let node_id = decision.assigned_node_id();
            prop_assert!(node_id.is_some(), "{} was not placed", decision.task_id());
            let node = nodes.iter().find(|node| Some(node.id.as_str()) == node_id);
            let zone = node.and_then(|node| node.labels.get("zone")).map(String::as_str);
            *tasks_per_group.entry(zone).or_default() += 1;
        }
        let most = tasks_per_group.values().max().copied().unwrap_or(0);
        let fewest = tasks_per_group.values().min().copied().unwrap_or(0);
        prop_assert!(most - fewest <= 1, "uneven spread {:?}", tasks_per_group);
    }
}
