//! Times `schedule` on a synthetic cluster of 1,000 nodes and 10,000 tasks and prints one JSON line of figures.
//!
//! Run with `cargo run --release -p scheduler --example sched-bench`.
//! Two batches are timed: the usual one (100 services of 100 tasks each, with
//! constraints and a zone spread), and a worst case where every task is its own
//! service, so no filtering or spread tree can be shared between tasks. A third
//! figure is one task's replacement, the batch a task's crash brings, on clusters of
//! 100 to 5,000 nodes that each run ten tasks of its service: what a status change
//! costs the leader's scheduler as the cluster grows.

use std::time::{Duration, Instant};

use scheduler::{
    Constraint, Decision, NodeRole, NodeSet, NodeView, Resources, SpreadPreference, TaskRequest,
    schedule_on,
};

const NODE_COUNT: usize = 1_000;
const TASK_COUNT: usize = 10_000;
const TIMED_RUNS: usize = 9;
const ONE_CPU: u64 = 1_000_000_000;
const GIB: u64 = 1 << 30;
const ZONES: [&str; 5] = ["a", "b", "c", "d", "e"];

fn synthetic_nodes() -> Vec<NodeView> {
    (0..NODE_COUNT)
        .map(|index| {
            let mut node = NodeView::new(
                format!("node-{index:04}"),
                Resources::new(16 * ONE_CPU, 64 * GIB),
            );
            node.hostname = format!("host-{index:04}.example");
            // One node in ten is a manager, one in three has SSDs, and one in
            // fifty lacks a zone label, so every filter and spread group is exercised.
            if index.is_multiple_of(10) {
                node.role = NodeRole::Manager;
            }
            if index % 50 != 7 {
                node.labels
                    .insert("zone".to_owned(), ZONES[index % ZONES.len()].to_owned());
            }
            if index.is_multiple_of(3) {
                node.labels.insert("disk".to_owned(), "ssd".to_owned());
            }
            node.engine_labels
                .insert("kernel".to_owned(), "6.1".to_owned());
            node.reserved_resources =
                Resources::new((index % 4) as u64 * ONE_CPU, (index % 8) as u64 * GIB);
            node.task_count_by_service
                .insert(format!("service-{:03}", index % 100), (index % 3) as u64);
            node
        })
        .collect()
}

fn task(task_number: usize, service_number: usize, service_count: usize) -> TaskRequest {
    let mut task = TaskRequest::new(
        format!("task-{task_number:05}"),
        format!("service-{service_number:03}"),
    );
    task.reservations = Resources::new(ONE_CPU / 10, 256 << 20);
    let mut expressions = vec!["node.role==worker", "engine.labels.kernel!=4.19"];
    if service_number.is_multiple_of(4) {
        expressions.push("node.labels.disk==ssd");
    }
    task.constraints = Constraint::parse_all(&expressions).unwrap_or_default();
    task.placement_preferences = SpreadPreference::parse("node.labels.zone")
        .map(|preference| vec![preference])
        .unwrap_or_default();
    if service_number.is_multiple_of(5) {
        task.max_replicas_per_node = 2;
    }
    // The worst case has one task per service; keep its shapes varied too.
    if service_count == TASK_COUNT && service_number.is_multiple_of(7) {
        task.reservations.memory_bytes += GIB;
    }
    task
}

/// 100 services of 100 tasks, interleaved as an orchestrator emits them.
fn usual_batch() -> Vec<TaskRequest> {
    (0..TASK_COUNT)
        .map(|number| task(number, number % 100, 100))
        .collect()
}

/// Every task its own service.
fn one_task_per_service_batch() -> Vec<TaskRequest> {
    (0..TASK_COUNT)
        .map(|number| task(number, number, TASK_COUNT))
        .collect()
}

struct Timing {
    median: Duration,
    fastest: Duration,
    slowest: Duration,
    assigned: usize,
}

fn time_schedule(nodes: &NodeSet, tasks: &[TaskRequest]) -> Timing {
    let mut durations = Vec::with_capacity(TIMED_RUNS);
    let mut assigned = 0;
    for _ in 0..TIMED_RUNS {
        let started = Instant::now();
        let decisions = schedule_on(nodes, tasks);
        durations.push(started.elapsed());
        assigned = decisions
            .iter()
            .filter(|decision| matches!(decision, Decision::Assign { .. }))
            .count();
    }
    durations.sort_unstable();
    Timing {
        median: durations[durations.len() / 2],
        fastest: durations[0],
        slowest: durations[durations.len() - 1],
        assigned,
    }
}

/// Sizes of the one-task figure: those of the simulated fleet's runs.
const ONE_TASK_NODE_COUNTS: [usize; 3] = [100, 1_000, 5_000];
const ONE_TASK_RUNS: usize = 201;

/// `count` ready workers with random-looking ids, each running ten tasks of the one service.
fn fleet_nodes(count: usize) -> NodeSet {
    (0..count as u64)
        .map(|index| {
            let mut node = NodeView::new(
                format!("{:025x}", index.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                Resources::new(2 * ONE_CPU, 8 * GIB),
            );
            node.task_count_by_service
                .insert("fleet-service".to_owned(), 10);
            node
        })
        .collect()
}

/// The median time to place one task of the fleet's service on `count` nodes.
fn time_one_task(count: usize) -> Duration {
    let nodes = fleet_nodes(count);
    let tasks = [TaskRequest::new("replacement", "fleet-service")];
    let mut durations: Vec<Duration> = (0..ONE_TASK_RUNS)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(schedule_on(&nodes, &tasks));
            started.elapsed()
        })
        .collect();
    durations.sort_unstable();
    durations[durations.len() / 2]
}

fn microseconds(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1_000_000.0)
}

fn milliseconds(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1_000.0)
}

fn main() {
    // Kept between batches, as a manager keeps its nodes.
    let nodes: NodeSet = synthetic_nodes().into_iter().collect();
    let usual = time_schedule(&nodes, &usual_batch());
    let worst = time_schedule(&nodes, &one_task_per_service_batch());
    let one_task: Vec<String> = ONE_TASK_NODE_COUNTS
        .iter()
        .map(|count| format!("\"{count}\":{}", microseconds(time_one_task(*count))))
        .collect();
    println!(
        "{{\"benchmark\":\"scheduler.schedule\",\"nodes\":{NODE_COUNT},\"tasks\":{TASK_COUNT},\"runs\":{TIMED_RUNS},\
         \"usual_batch\":{{\"services\":100,\"median_ms\":{},\"min_ms\":{},\"max_ms\":{},\"assigned\":{}}},\
         \"one_task_per_service\":{{\"services\":{TASK_COUNT},\"median_ms\":{},\"min_ms\":{},\"max_ms\":{},\"assigned\":{}}},\
         \"one_task_median_us_by_nodes\":{{{}}},\"target_ms\":200}}",
        milliseconds(usual.median),
        milliseconds(usual.fastest),
        milliseconds(usual.slowest),
        usual.assigned,
        milliseconds(worst.median),
        milliseconds(worst.fastest),
        milliseconds(worst.slowest),
        worst.assigned,
        one_task.join(","),
    );
}
