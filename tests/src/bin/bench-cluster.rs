//! Issue 5's figures across test hosts, each the median of ROUNDS (default 5):
//! - join time: `shoal swarm join` as a worker, and as a manager, wall time of the command;
//! - leader failover: from `kill -9` of the leader's daemon to the first successful write
//!   (`service scale -d`) through a surviving manager;
//! - worker loss: from `kill -9` of a worker's daemon to every slot of a 6-replica service
//!   running on live nodes again.
//!
//! Run as root through `deploy/bench-cluster.sh`, which builds the release binaries and sets
//! `SHOAL_BIN`. Every host, namespace and process is removed at the end, as in the tests.

use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::figures::rounds;
use shoal_tests::{ClusterOptions, TestCluster, TestHost, output_text, wait_until};

const TIMEOUT: Duration = Duration::from_secs(60);

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn report(what: &str, samples: Vec<Duration>) {
    let listed: Vec<String> = samples
        .iter()
        .map(|sample| format!("{:.3}", sample.as_secs_f64()))
        .collect();
    println!(
        "{what}: median {:.3} s over {} rounds ({} s)",
        median(samples.clone()).as_secs_f64(),
        samples.len(),
        listed.join(", ")
    );
}

fn cluster(hosts: usize) -> TestCluster {
    let cluster = TestCluster::start(ClusterOptions::new(hosts))
        .unwrap_or_else(|error| panic!("starting {hosts} test hosts: {error}"));
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// (hostname, manager status) of every node, from `host`.
fn nodes(host: &TestHost) -> Result<Vec<(String, String)>, String> {
    let output = host.shoal(&["node", "ls", "--format", "json"]);
    if !output.status.success() {
        return Err(output_text(&output));
    }
    Ok(json_lines(&String::from_utf8_lossy(&output.stdout))
        .iter()
        .map(|node| {
            let text = |key: &str| node[key].as_str().unwrap_or_default().to_owned();
            (text("Hostname"), text("ManagerStatus"))
        })
        .collect())
}

/// The nodes running `service`'s current tasks, one entry per running slot.
fn running_nodes(host: &TestHost, service: &str) -> Result<Vec<String>, String> {
    let output = host.shoal(&["service", "ps", "--format", "json", service]);
    if !output.status.success() {
        return Err(output_text(&output));
    }
    Ok(json_lines(&String::from_utf8_lossy(&output.stdout))
        .iter()
        .filter(|task| {
            task["DesiredState"] == "Running"
                && task["CurrentState"]
                    .as_str()
                    .is_some_and(|state| state.starts_with("Running"))
        })
        .map(|task| task["Node"].as_str().unwrap_or_default().to_owned())
        .collect())
}

fn join_times() {
    let rounds = rounds();
    let cluster = cluster(1 + 2 * rounds);
    let manager = cluster.host(1);
    manager.swarm_init();
    let (worker_token, manager_token) =
        (manager.join_token("worker"), manager.join_token("manager"));
    let mut workers = Vec::new();
    for round in 0..rounds {
        let host = cluster.host(2 + round);
        let started = Instant::now();
        host.swarm_join(&worker_token, manager);
        workers.push(started.elapsed());
    }
    report("swarm join (worker)", workers);
    // Managers join a growing Raft group: 2, then 3 … voters.
    let mut managers = Vec::new();
    for round in 0..rounds {
        let host = cluster.host(2 + rounds + round);
        let started = Instant::now();
        host.swarm_join(&manager_token, manager);
        managers.push(started.elapsed());
    }
    report("swarm join (manager)", managers);
}

fn failover_times() {
    let cluster = cluster(3);
    let first = cluster.host(1);
    first.swarm_init();
    let manager_token = first.join_token("manager");
    cluster.host(2).swarm_join(&manager_token, first);
    cluster.host(3).swarm_join(&manager_token, first);
    first.create_service("web", &["--replicas", "3"], &["sleep", "86400"]);
    let mut samples = Vec::new();
    for round in 0..rounds() {
        let leader_name = wait_until("a leader", TIMEOUT, || {
            let table = nodes(first)?;
            let managers = table.iter().filter(|(_, m)| !m.is_empty()).count();
            let reachable = table
                .iter()
                .filter(|(_, m)| m == "Leader" || m == "Reachable")
                .count();
            match table.iter().find(|(_, m)| m == "Leader") {
                Some((name, _)) if managers == 3 && reachable == 3 => Ok(name.clone()),
                _ => Err(format!("{table:?}")),
            }
        });
        let leader = cluster
            .hosts()
            .iter()
            .find(|host| host.name() == leader_name)
            .expect("the leader is a test host");
        let survivor = cluster
            .hosts()
            .iter()
            .find(|host| host.name() != leader_name)
            .expect("another manager");
        let replicas = format!("web={}", 3 + round % 2);
        let killed = Instant::now();
        leader.kill_daemon();
        wait_until("a write through a surviving manager", TIMEOUT, || {
            let output = survivor.shoal(&["service", "scale", "-d", &replicas]);
            if output.status.success() {
                Ok(())
            } else {
                Err(output_text(&output))
            }
        });
        samples.push(killed.elapsed());
        leader.restart_daemon();
    }
    report("leader failover (kill -9 to first write)", samples);
}

fn worker_loss_times() {
    let cluster = cluster(3);
    let manager = cluster.host(1);
    manager.swarm_init();
    let worker_token = manager.join_token("worker");
    cluster.host(2).swarm_join(&worker_token, manager);
    cluster.host(3).swarm_join(&worker_token, manager);
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "api",
        "--replicas",
        "6",
        "busybox",
        "sleep",
        "86400",
    ]);
    let mut samples = Vec::new();
    for _ in 0..rounds() {
        // Kill the worker that runs the most tasks, once all six run and no stale ones remain.
        let busiest = wait_until("six running tasks", TIMEOUT, || {
            let running = running_nodes(manager, "api")?;
            let containers: usize = cluster
                .hosts()
                .iter()
                .map(|host| {
                    String::from_utf8_lossy(&host.shoal(&["container", "ls", "-q"]).stdout)
                        .lines()
                        .count()
                })
                .sum();
            if running.len() != 6 || containers != 6 {
                return Err(format!("{running:?}, {containers} containers"));
            }
            let count = |name: &str| running.iter().filter(|node| *node == name).count();
            let (h2, h3) = (cluster.host(2).name(), cluster.host(3).name());
            Ok(if count(h2) >= count(h3) { 2 } else { 3 })
        });
        let worker = cluster.host(busiest);
        let gone = worker.name().to_owned();
        let killed = Instant::now();
        worker.kill_daemon();
        wait_until("tasks running elsewhere", TIMEOUT, || {
            let running = running_nodes(manager, "api")?;
            if running.len() == 6 && running.iter().all(|node| *node != gone) {
                Ok(())
            } else {
                Err(format!("{running:?}"))
            }
        });
        samples.push(killed.elapsed());
        worker.restart_daemon();
    }
    report("worker loss (kill -9 to tasks running elsewhere)", samples);
}

fn main() {
    join_times();
    failover_times();
    worker_loss_times();
}
