//! Behaviour tests for `schedule`: each case lists nodes and tasks and the expected decisions as text.

use std::collections::BTreeMap;

use scheduler::{
    Constraint, Decision, HostPort, NodeAvailability, NodeRole, NodeView, Resources,
    SpreadPreference, TaskRequest, schedule,
};

const ONE_CPU: u64 = 1_000_000_000;
const GIB: u64 = 1 << 30;

/// A ready, active worker with 4 CPUs and 8 GiB.
fn node(id: &str) -> NodeView {
    NodeView::new(id, Resources::new(4 * ONE_CPU, 8 * GIB))
}

fn node_in_zone(id: &str, zone: &str) -> NodeView {
    let mut node = node(id);
    node.labels.insert("zone".to_owned(), zone.to_owned());
    node
}

/// `count` tasks of `service`, numbered from 1, shaped by `shape`.
fn tasks(service: &str, count: usize, shape: impl Fn(&mut TaskRequest)) -> Vec<TaskRequest> {
    (1..=count)
        .map(|number| {
            let mut task = TaskRequest::new(format!("{service}.{number}"), service);
            shape(&mut task);
            task
        })
        .collect()
}

fn spread_over(descriptor: &str) -> SpreadPreference {
    SpreadPreference::parse(descriptor).expect("test descriptors are valid")
}

/// One line per decision: `task -> node` or `task unplaceable: reason`.
fn render(decisions: &[Decision]) -> String {
    decisions
        .iter()
        .map(|decision| match decision {
            Decision::Assign { task_id, node_id } => format!("{task_id} -> {node_id}"),
            Decision::Unplaceable { task_id, reason } => format!("{task_id} unplaceable: {reason}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many tasks landed on each node, as `node=count` pairs in node-id order.
fn tasks_per_node(decisions: &[Decision]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for node_id in decisions.iter().filter_map(Decision::assigned_node_id) {
        *counts.entry(node_id).or_default() += 1;
    }
    counts
        .iter()
        .map(|(node_id, count)| format!("{node_id}={count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How many tasks landed in each zone, looking zones up on `nodes`.
fn tasks_per_zone(nodes: &[NodeView], decisions: &[Decision]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for node_id in decisions.iter().filter_map(Decision::assigned_node_id) {
        let node = nodes
            .iter()
            .find(|node| node.id == node_id)
            .expect("assigned to a known node");
        let zone = node.labels.get("zone").map_or("(none)", String::as_str);
        *counts.entry(zone).or_default() += 1;
    }
    counts
        .iter()
        .map(|(zone, count)| format!("{zone}={count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn spreads_nine_tasks_evenly_over_three_zones() {
    // Zones are deliberately uneven in size: spread evens zones, not nodes.
    let nodes = vec![
        node_in_zone("n1", "a"),
        node_in_zone("n2", "a"),
        node_in_zone("n3", "a"),
        node_in_zone("n4", "a"),
        node_in_zone("n5", "b"),
        node_in_zone("n6", "c"),
        node_in_zone("n7", "c"),
    ];
    let batch = tasks("web", 9, |task| {
        task.placement_preferences = vec![spread_over("node.labels.zone")]
    });
    let decisions = schedule(&nodes, &batch);
    assert_eq!(tasks_per_zone(&nodes, &decisions), "a=3 b=3 c=3");
    // Inside zone a, three tasks go to the three lowest ids and n4 gets none.
    assert_eq!(tasks_per_node(&decisions), "n1=1 n2=1 n3=1 n5=3 n6=2 n7=1");
}

#[test]
fn nodes_without_the_spread_label_form_their_own_group() {
    let nodes = vec![
        node_in_zone("n1", "a"),
        node_in_zone("n2", "a"),
        node_in_zone("n3", "b"),
        node("n4"),
        node("n5"),
    ];
    let batch = tasks("web", 6, |task| {
        task.placement_preferences = vec![spread_over("node.labels.zone")]
    });
    let decisions = schedule(&nodes, &batch);
    assert_eq!(tasks_per_zone(&nodes, &decisions), "(none)=2 a=2 b=2");
    assert_eq!(tasks_per_node(&decisions), "n1=1 n2=1 n3=2 n4=1 n5=1");
}

#[test]
fn spread_counts_tasks_the_service_already_runs() {
    let mut busy = node_in_zone("n1", "a");
    busy.task_count_by_service.insert("web".to_owned(), 4);
    let nodes = vec![busy, node_in_zone("n2", "b"), node_in_zone("n3", "c")];
    let batch = tasks("web", 6, |task| {
        task.placement_preferences = vec![spread_over("node.labels.zone")]
    });
    // b and c fill up to a's 4 first; only then would a get more.
    assert_eq!(tasks_per_node(&schedule(&nodes, &batch)), "n2=3 n3=3");
}

#[test]
fn nested_preferences_spread_over_zones_then_racks() {
    let mut nodes = Vec::new();
    for (id, zone, rack) in [
        ("n1", "a", "r1"),
        ("n2", "a", "r1"),
        ("n3", "a", "r2"),
        ("n4", "b", "r3"),
        ("n5", "b", "r4"),
    ] {
        let mut node = node_in_zone(id, zone);
        node.labels.insert("rack".to_owned(), rack.to_owned());
        nodes.push(node);
    }
    let batch = tasks("web", 8, |task| {
        task.placement_preferences = vec![
            spread_over("node.labels.zone"),
            spread_over("node.labels.rack"),
        ];
    });
    let decisions = schedule(&nodes, &batch);
    assert_eq!(tasks_per_zone(&nodes, &decisions), "a=4 b=4");
    // Rack r1 has two nodes and r2 one, but racks get two tasks each.
    assert_eq!(tasks_per_node(&decisions), "n1=1 n2=1 n3=2 n4=2 n5=2");
}

#[test]
fn least_loaded_prefers_fewest_service_tasks_then_fewest_tasks_then_node_id() {
    let mut runs_web = node("a-runs-web");
    runs_web.task_count_by_service.insert("web".to_owned(), 1);
    let mut runs_other = node("b-runs-two-others");
    runs_other.task_count_by_service.insert("db".to_owned(), 2);
    let mut runs_one_other = node("c-runs-one-other");
    runs_one_other
        .task_count_by_service
        .insert("db".to_owned(), 1);
    let nodes = vec![
        runs_web,
        runs_other,
        runs_one_other,
        node("d-empty"),
        node("e-empty"),
    ];
    let batch = tasks("web", 7, |_| {});
    // After four tasks every node runs one web task; a, d and e then tie on
    // one task in total and go in id order.
    assert_eq!(
        render(&schedule(&nodes, &batch)),
        "web.1 -> d-empty\n\
         web.2 -> e-empty\n\
         web.3 -> c-runs-one-other\n\
         web.4 -> b-runs-two-others\n\
         web.5 -> a-runs-web\n\
         web.6 -> d-empty\n\
         web.7 -> e-empty"
    );
}

#[test]
fn node_order_in_the_input_does_not_change_the_result() {
    let nodes: Vec<NodeView> = ["n3", "n1", "n4", "n2"]
        .iter()
        .map(|id| node_in_zone(id, if *id < "n3" { "a" } else { "b" }))
        .collect();
    let mut reversed = nodes.clone();
    reversed.reverse();
    let batch = tasks("web", 7, |task| {
        task.placement_preferences = vec![spread_over("node.labels.zone")]
    });
    assert_eq!(
        render(&schedule(&nodes, &batch)),
        render(&schedule(&reversed, &batch))
    );
}

#[test]
fn max_replicas_per_node_caps_each_node() {
    let nodes = vec![node("n1"), node("n2"), node("n3")];
    let batch = tasks("web", 5, |task| task.max_replicas_per_node = 1);
    assert_eq!(
        render(&schedule(&nodes, &batch)),
        "web.1 -> n1\n\
         web.2 -> n2\n\
         web.3 -> n3\n\
         web.4 unplaceable: no suitable node (max replicas per node limit exceed)\n\
         web.5 unplaceable: no suitable node (max replicas per node limit exceed)"
    );
}

#[test]
fn max_replicas_per_node_counts_tasks_already_running() {
    let mut full = node("n1");
    full.task_count_by_service.insert("web".to_owned(), 2);
    let nodes = vec![full, node("n2")];
    let batch = tasks("web", 3, |task| task.max_replicas_per_node = 2);
    assert_eq!(tasks_per_node(&schedule(&nodes, &batch)), "n2=2");
}

#[test]
fn host_mode_ports_conflict_with_ports_in_use_and_with_each_other() {
    let mut taken = node("n1");
    taken.host_ports_in_use.insert(HostPort::tcp(80));
    let nodes = vec![taken, node("n2"), node("n3")];
    let mut batch = tasks("web", 3, |task| {
        task.host_published_ports = vec![HostPort::tcp(80)]
    });
    // udp/80 is a different port from tcp/80.
    batch.extend(tasks("dns", 1, |task| {
        task.host_published_ports = vec![HostPort::udp(80)]
    }));
    assert_eq!(
        render(&schedule(&nodes, &batch)),
        "web.1 -> n2\n\
         web.2 -> n3\n\
         web.3 unplaceable: no suitable node (host-mode port already in use on 3 nodes)\n\
         dns.1 -> n1"
    );
}

#[test]
fn a_batch_never_overcommits_a_node() {
    let mut small = NodeView::new("n1", Resources::new(2 * ONE_CPU, 8 * GIB));
    small.reserved_resources = Resources::new(0, 6 * GIB);
    let batch = tasks("web", 3, |task| {
        task.reservations = Resources::new(ONE_CPU, GIB)
    });
    assert_eq!(
        render(&schedule(&[small], &batch)),
        "web.1 -> n1\n\
         web.2 -> n1\n\
         web.3 unplaceable: no suitable node (insufficient resources on 1 node)"
    );
}

#[test]
fn reasons_count_the_first_filter_that_rejected_each_node() {
    let mut drained = node("drained");
    drained.availability = NodeAvailability::Drain;
    let mut down = node("down");
    down.ready = false;
    down.availability = NodeAvailability::Pause;
    let mut paused = node("paused");
    paused.availability = NodeAvailability::Pause;
    let mut low_memory_1 = NodeView::new("low-memory-1", Resources::new(8 * ONE_CPU, GIB));
    low_memory_1.role = NodeRole::Manager;
    let low_memory_2 = NodeView::new("low-memory-2", Resources::new(8 * ONE_CPU, GIB));
    let low_cpu = NodeView::new("low-cpu", Resources::new(ONE_CPU, 64 * GIB));
    let manager = {
        let mut manager = node("manager");
        manager.role = NodeRole::Manager;
        manager.total_resources = Resources::new(8 * ONE_CPU, 64 * GIB);
        manager
    };
    let mut arm = node("arm");
    arm.platform.architecture = "arm64".to_owned();
    arm.total_resources = Resources::new(8 * ONE_CPU, 64 * GIB);
    let nodes = vec![
        drained,
        down,
        paused,
        low_memory_1,
        low_memory_2,
        low_cpu,
        manager,
        arm,
    ];
    let batch = tasks("web", 1, |task| {
        task.reservations = Resources::new(2 * ONE_CPU, 2 * GIB);
        task.constraints = Constraint::parse_all(&["node.role==worker"]).expect("valid");
        task.platforms = vec![scheduler::Platform::new("linux", "amd64")];
    });
    assert_eq!(
        render(&schedule(&nodes, &batch)),
        "web.1 unplaceable: no suitable node (1 node not ready; 2 nodes not available for new tasks; \
         insufficient memory on 2 nodes; insufficient cpu on 1 node; \
         scheduling constraints not satisfied on 1 node; unsupported platform on 1 node)"
    );
}

#[test]
fn the_briefs_example_reason() {
    let mut drained = node("n1");
    drained.availability = NodeAvailability::Drain;
    let nodes = vec![
        drained,
        NodeView::new("n2", Resources::new(ONE_CPU, GIB)),
        NodeView::new("n3", Resources::new(ONE_CPU, GIB)),
    ];
    let batch = tasks("web", 1, |task| {
        task.reservations = Resources::new(0, 2 * GIB)
    });
    assert_eq!(
        render(&schedule(&nodes, &batch)),
        "web.1 unplaceable: no suitable node (1 node not available for new tasks; insufficient memory on 2 nodes)"
    );
}

#[test]
fn an_empty_cluster_has_no_suitable_node() {
    assert_eq!(
        render(&schedule(&[] as &[NodeView], &tasks("web", 2, |_| {}))),
        "web.1 unplaceable: no suitable node\nweb.2 unplaceable: no suitable node"
    );
}

#[test]
fn every_task_gets_one_decision_in_input_order_across_interleaved_groups() {
    let nodes = vec![node_in_zone("n1", "a"), node_in_zone("n2", "b")];
    let mut batch = Vec::new();
    for number in 1..=3 {
        batch.push(TaskRequest::new(format!("web.{number}"), "web"));
        let mut db = TaskRequest::new(format!("db.{number}"), "db");
        db.constraints = Constraint::parse_all(&["node.labels.zone==b"]).expect("valid");
        batch.push(db);
        let mut cache = TaskRequest::new(format!("cache.{number}"), "cache");
        cache.constraints = Constraint::parse_all(&["node.labels.zone==c"]).expect("valid");
        batch.push(cache);
    }
    // Groups are placed in order of first appearance: web first, then db on
    // b alone; web's three tasks left n1 the less loaded node overall.
    assert_eq!(
        render(&schedule(&nodes, &batch)),
        "web.1 -> n1\n\
         db.1 -> n2\n\
         cache.1 unplaceable: no suitable node (scheduling constraints not satisfied on 2 nodes)\n\
         web.2 -> n2\n\
         db.2 -> n2\n\
         cache.2 unplaceable: no suitable node (scheduling constraints not satisfied on 2 nodes)\n\
         web.3 -> n1\n\
         db.3 -> n2\n\
         cache.3 unplaceable: no suitable node (scheduling constraints not satisfied on 2 nodes)"
    );
}

#[test]
fn an_unplaceable_spread_branch_sends_its_share_to_the_others() {
    let mut full = node_in_zone("n1", "a");
    full.total_resources = Resources::new(ONE_CPU, GIB);
    let nodes = vec![full, node_in_zone("n2", "b"), node_in_zone("n3", "c")];
    let batch = tasks("web", 6, |task| {
        task.reservations = Resources::new(ONE_CPU, GIB);
        task.placement_preferences = vec![spread_over("node.labels.zone")];
    });
    let decisions = schedule(&nodes, &batch);
    assert_eq!(tasks_per_zone(&nodes, &decisions), "a=1 b=3 c=2");
}
