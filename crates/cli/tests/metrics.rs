//! End-to-end test of `shoal daemon --metrics-addr`: a manager and a worker (test hosts of the
//! `shoal-tests` harness) each serve `GET /metrics` on their own loopback, run a global service,
//! and their scrapes are valid Prometheus text (`promtool check metrics`, from Debian's
//! `prometheus` package) with every family and values that fit the cluster: the service and its
//! tasks among the objects, a Raft term of at least 1, a container start counted on the worker.
//! Without root it prints why and checks nothing; without promtool too, except where every test
//! must run (`SHOAL_REQUIRE_ALL_TESTS`), where it fails.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use shoal_tests::{ClusterOptions, TestCluster, TestHost, output_text, wait_until};

/// Where every host's daemon serves its metrics, each on its own loopback (dockerd's usual port).
const METRICS_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9323);
/// How long the cluster may take to reach the state a scrape waits for.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The families every daemon serves, manager or worker.
const NODE_FAMILIES: [&str; 6] = [
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "shoal_engine_container_starts_total",
    "shoal_engine_container_start_duration_seconds",
    "shoal_engine_image_pulls_total",
    "shoal_engine_image_pull_duration_seconds",
];

/// The families only a running manager role serves.
const MANAGER_FAMILIES: [&str; 18] = [
    "shoal_raft_term",
    "shoal_raft_last_log_index",
    "shoal_raft_commit_index",
    "shoal_raft_applied_index",
    "shoal_raft_is_leader",
    "shoal_raft_leader_changes_total",
    "shoal_raft_append_duration_seconds",
    "shoal_raft_commit_duration_seconds",
    "shoal_raft_snapshot_size_bytes",
    "shoal_store_objects",
    "shoal_dispatcher_sessions",
    "shoal_dispatcher_heartbeats_total",
    "shoal_dispatcher_nodes_marked_down_total",
    "shoal_dispatcher_assignment_messages_total",
    "shoal_orchestration_step_duration_seconds",
    "shoal_tasks",
    "shoal_scheduler_unplaceable_tasks",
    "shoal_scheduler_batch_duration_seconds",
];

/// `promtool` on PATH, or `None` after saying why this test checks nothing (a failure where
/// every test must run).
fn promtool(test: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        shoal_tests::skip(
            test,
            "promtool not found on PATH (apt-get install --no-install-recommends prometheus)",
        );
    }
    found
}

/// `GET /metrics` from `host`'s daemon, over the host's own loopback.
fn scrape(host: &TestHost) -> Result<String, String> {
    host.in_host_netns(|| {
        shoal_tests::http::get_text(METRICS_ADDR, "/metrics", Duration::from_secs(10))
    })
}

/// Every sample of a scrape by its series (name and labels as written), to its value.
fn samples(text: &str) -> BTreeMap<&str, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series, value.parse().ok()?))
        })
        .collect()
}

/// The value of `series` in `text`; NaN (which compares false with anything) when the scrape
/// has no such sample.
fn value(text: &str, series: &str) -> f64 {
    samples(text).get(series).copied().unwrap_or(f64::NAN)
}

/// The families a scrape declares (`# TYPE` lines), by name.
fn families(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split_once(' '))
        .collect()
}

/// Runs `promtool check metrics` on `text`; panics with what it said when it finds anything.
fn promtool_check(promtool: &std::path::Path, cluster: &TestCluster, name: &str, text: &str) {
    let file = cluster.dir().join(format!("{name}.metrics"));
    std::fs::write(&file, text)
        .unwrap_or_else(|error| panic!("writing {}: {error}", file.display()));
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", r#"exec "$0" check metrics < "$1""#])
        .arg(promtool)
        .arg(&file);
    let output = shoal_tests::run_with_timeout(&mut command, Duration::from_secs(30))
        .unwrap_or_else(|error| panic!("running promtool: {error}"));
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics on {name}'s scrape: {}\n{text}",
        output_text(&output)
    );
}

#[test]
fn a_manager_and_a_worker_serve_valid_prometheus_metrics_on_metrics_addr() {
    let test = "a_manager_and_a_worker_serve_valid_prometheus_metrics_on_metrics_addr";
    let Some(promtool) = promtool(test) else {
        return;
    };
    let mut options = ClusterOptions::new(2);
    options.daemon_args = vec!["--metrics-addr".to_owned(), METRICS_ADDR.to_string()];
    let Some(cluster) = TestCluster::start_or_skip(test, options) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(1, 1);
    let (manager, worker) = (cluster.host(1), cluster.host(2));
    manager.create_service("watched", &["--mode", "global"], &["sleep", "86400"]);

    let worker_text = wait_until(
        "the worker's metrics to count a container start",
        CONVERGE_TIMEOUT,
        || {
            let text = scrape(worker)?;
            let started = value(
                &text,
                "shoal_engine_container_starts_total{outcome=\"success\"}",
            );
            if started >= 1.0 {
                Ok(text)
            } else {
                Err(format!("{started} starts in:\n{text}"))
            }
        },
    );
    let manager_text = wait_until(
        "the manager's metrics to show the service, its two tasks running and a heartbeat",
        CONVERGE_TIMEOUT,
        || {
            let text = scrape(manager)?;
            let shown = (
                value(&text, "shoal_store_objects{kind=\"service\"}"),
                value(&text, "shoal_store_objects{kind=\"task\"}"),
                value(&text, "shoal_tasks{state=\"running\"}"),
            );
            // Nodes send one heartbeat a second.
            let heartbeats = value(&text, "shoal_dispatcher_heartbeats_total");
            if shown == (1.0, 2.0, 2.0) && heartbeats >= 1.0 {
                Ok(text)
            } else {
                Err(format!(
                    "(services, tasks, running) {shown:?}, {heartbeats} heartbeats in:\n{text}"
                ))
            }
        },
    );

    promtool_check(&promtool, &cluster, "manager", &manager_text);
    promtool_check(&promtool, &cluster, "worker", &worker_text);
    let (on_manager, on_worker) = (families(&manager_text), families(&worker_text));
    for family in NODE_FAMILIES {
        assert!(on_manager.contains_key(family), "{family}:\n{manager_text}");
        assert!(on_worker.contains_key(family), "{family}:\n{worker_text}");
    }
    for family in MANAGER_FAMILIES {
        assert!(on_manager.contains_key(family), "{family}:\n{manager_text}");
    }
    // A worker runs no manager role, so it has no Raft, store or dispatcher to show.
    assert!(
        !on_worker.contains_key("shoal_raft_term") && !on_worker.contains_key("shoal_tasks"),
        "{worker_text}"
    );

    let at_least = |text: &str, series: &str, least: f64| {
        let found = value(text, series);
        assert!(
            found >= least,
            "{series} is {found}, not at least {least}:\n{text}"
        );
    };
    let m = manager_text.as_str();
    at_least(m, "shoal_raft_term", 1.0);
    at_least(m, "shoal_raft_is_leader", 1.0);
    at_least(m, "shoal_raft_leader_changes_total", 1.0);
    at_least(m, "shoal_raft_applied_index", 1.0);
    at_least(
        m,
        "shoal_raft_commit_index",
        value(m, "shoal_raft_applied_index"),
    );
    at_least(
        m,
        "shoal_raft_last_log_index",
        value(m, "shoal_raft_commit_index"),
    );
    at_least(m, "shoal_raft_append_duration_seconds_count", 1.0);
    at_least(m, "shoal_raft_commit_duration_seconds_count", 1.0);
    assert_eq!(value(m, "shoal_store_objects{kind=\"node\"}"), 2.0, "{m}");
    // The ingress network `swarm init` makes.
    at_least(m, "shoal_store_objects{kind=\"network\"}", 1.0);
    assert_eq!(value(m, "shoal_scheduler_unplaceable_tasks"), 0.0, "{m}");
    at_least(m, "shoal_scheduler_batch_duration_seconds_count", 1.0);
    at_least(m, "shoal_orchestration_step_duration_seconds_count", 1.0);
    assert_eq!(value(m, "shoal_dispatcher_sessions"), 2.0, "{m}");
    at_least(m, "shoal_dispatcher_heartbeats_total", 1.0);
    assert_eq!(
        value(m, "shoal_dispatcher_nodes_marked_down_total"),
        0.0,
        "{m}"
    );
    // Each node's first set, empty, and then its task's.
    at_least(m, "shoal_dispatcher_assignment_messages_total", 2.0);
    for text in [m, worker_text.as_str()] {
        at_least(
            text,
            "shoal_engine_container_start_duration_seconds_count",
            1.0,
        );
        // The image was imported on every node: nothing was pulled.
        assert_eq!(
            value(text, "shoal_engine_image_pulls_total{outcome=\"success\"}"),
            0.0,
            "{text}"
        );
        at_least(text, "process_resident_memory_bytes", 1e6);
        at_least(text, "process_cpu_seconds_total", 0.001);
    }
}
