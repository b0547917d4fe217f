//! The families a scrape shows, their values after recording, the manager's scrape-time gauges
//! coming and going with its attachment, and the choice of format.

use std::time::Duration;

use expect_test::expect;

use super::*;

/// The `# TYPE` lines of a scrape: every family's name and type, in order.
fn types(text: &str) -> String {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The value of the sample written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

fn sample() -> ManagerSample {
    ManagerSample {
        raft: RaftProgress {
            term: 3,
            last_log_index: 42,
            commit_index: 41,
            applied_index: 40,
            is_leader: true,
        },
        objects_by_kind: vec![("service".to_owned(), 1), ("task".to_owned(), 2)],
        tasks_by_state: vec![("pending".to_owned(), 1), ("running".to_owned(), 1)],
        unplaceable_tasks: 1,
        dispatcher_sessions: 2,
    }
}

#[test]
fn a_daemon_without_a_manager_shows_the_recorded_families_and_the_process() {
    let text = Metrics::new().encode(Format::PrometheusText);
    expect![[r#"
        process_resident_memory_bytes gauge
        process_cpu_seconds_total counter
        shoal_raft_leader_changes_total counter
        shoal_raft_append_duration_seconds histogram
        shoal_raft_commit_duration_seconds histogram
        shoal_raft_snapshot_size_bytes histogram
        shoal_dispatcher_heartbeats_total counter
        shoal_dispatcher_nodes_marked_down_total counter
        shoal_dispatcher_assignment_messages_total counter
        shoal_orchestration_step_duration_seconds histogram
        shoal_scheduler_batch_duration_seconds histogram
        shoal_engine_container_starts_total counter
        shoal_engine_container_start_duration_seconds histogram
        shoal_engine_image_pulls_total counter
        shoal_engine_image_pull_duration_seconds histogram
    "#]]
    .assert_eq(&types(&text));
    // Every family says what it is.
    let helps = text
        .lines()
        .filter(|line| line.starts_with("# HELP "))
        .count();
    assert_eq!(helps, types(&text).lines().count(), "{text}");
    assert!(value(&text, "process_resident_memory_bytes").is_some_and(|bytes| bytes > 0.0));
}

#[test]
fn an_attached_manager_adds_its_state_until_its_attachment_is_dropped() {
    let metrics = Metrics::new();
    let attachment = metrics.attach_manager(sample);
    let text = metrics.encode(Format::PrometheusText);
    for (series, expected) in [
        ("shoal_raft_term", 3.0),
        ("shoal_raft_last_log_index", 42.0),
        ("shoal_raft_commit_index", 41.0),
        ("shoal_raft_applied_index", 40.0),
        ("shoal_raft_is_leader", 1.0),
        ("shoal_store_objects{kind=\"service\"}", 1.0),
        ("shoal_store_objects{kind=\"task\"}", 2.0),
        ("shoal_tasks{state=\"running\"}", 1.0),
        ("shoal_scheduler_unplaceable_tasks", 1.0),
        ("shoal_dispatcher_sessions", 2.0),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in {text}");
    }
    assert!(types(&text).contains("shoal_store_objects gauge"), "{text}");
    drop(attachment);
    let text = metrics.encode(Format::PrometheusText);
    assert!(!text.contains("shoal_raft_term"), "{text}");
}

#[test]
fn a_stale_attachment_leaves_the_newer_manager_in_place() {
    let metrics = Metrics::new();
    let first = metrics.attach_manager(ManagerSample::default);
    let second = metrics.attach_manager(sample);
    drop(first);
    let text = metrics.encode(Format::PrometheusText);
    assert_eq!(value(&text, "shoal_raft_term"), Some(3.0), "{text}");
    drop(second);
}

#[test]
fn container_starts_and_pulls_are_counted_by_outcome_and_successes_timed() {
    let metrics = Metrics::new();
    let engine = &metrics.engine;
    engine.record_container_start(Outcome::Success, Duration::from_millis(30));
    engine.record_container_start(Outcome::Failure, Duration::from_millis(5));
    engine.record_image_pull(Outcome::Success, Duration::from_secs(2));
    let text = metrics.encode(Format::PrometheusText);
    for (series, expected) in [
        (
            "shoal_engine_container_starts_total{outcome=\"success\"}",
            1.0,
        ),
        (
            "shoal_engine_container_starts_total{outcome=\"failure\"}",
            1.0,
        ),
        ("shoal_engine_container_start_duration_seconds_count", 1.0),
        ("shoal_engine_container_start_duration_seconds_sum", 0.03),
        ("shoal_engine_image_pulls_total{outcome=\"success\"}", 1.0),
        ("shoal_engine_image_pull_duration_seconds_count", 1.0),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in {text}");
    }
}

#[test]
fn raft_figures_are_recorded_by_the_handles_the_store_holds() {
    let metrics = Metrics::new();
    let raft = metrics.raft.clone();
    raft.leader_changes.inc();
    raft.append_duration.observe(0.002);
    raft.record_snapshot(SnapshotOrigin::Built, 4096);
    raft.record_snapshot(SnapshotOrigin::Installed, 100);
    let text = metrics.encode(Format::PrometheusText);
    for (series, expected) in [
        ("shoal_raft_leader_changes_total", 1.0),
        ("shoal_raft_append_duration_seconds_count", 1.0),
        (
            "shoal_raft_snapshot_size_bytes_sum{origin=\"built\"}",
            4096.0,
        ),
        (
            "shoal_raft_snapshot_size_bytes_bucket{origin=\"installed\",le=\"1024\"}",
            1.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in {text}");
    }
}

#[test]
fn openmetrics_is_given_to_scrapers_that_ask_for_it() {
    assert_eq!(Format::negotiate(None), Format::PrometheusText);
    assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
    assert_eq!(
        Format::negotiate(Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
        Format::PrometheusText
    );
    // Prometheus 2's own Accept header.
    assert_eq!(
        Format::negotiate(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::negotiate(Some("application/openmetrics-text; q=0")),
        Format::PrometheusText
    );
    let metrics = Metrics::new();
    let text = metrics.encode(Format::OpenMetrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE shoal_raft_leader_changes counter"),
        "{text}"
    );
}

#[test]
fn sizes_are_read_from_proc_kb_lines() {
    let status = "Name:\tshoal\nVmHWM:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t4\n";
    assert_eq!(kb_field_bytes(status, "VmRSS"), Some(2048 * 1024));
    assert_eq!(kb_field_bytes(status, "VmHWM"), Some(9000 * 1024));
    assert_eq!(kb_field_bytes("Pss:      12 kB\n", "Pss"), Some(12 * 1024));
    // A field is matched whole: `Vm` is no field here.
    assert_eq!(kb_field_bytes(status, "Vm"), None);
    assert_eq!(kb_field_bytes("Name:\tkthread\n", "VmRSS"), None);
    assert_eq!(kb_field_bytes("VmRSS:\tlots\n", "VmRSS"), None);
}

/// `promtool check metrics` (Debian's `prometheus` package) finds nothing to say about a full
/// scrape; without promtool this says so and checks nothing (the end-to-end test in
/// `crates/cli/tests/metrics.rs` requires it).
#[test]
fn promtool_finds_no_problem_in_a_full_scrape() {
    use std::io::Write as _;
    let metrics = Metrics::new();
    let _attachment = metrics.attach_manager(sample);
    metrics.raft.record_snapshot(SnapshotOrigin::Built, 1);
    let text = metrics.encode(Format::PrometheusText);
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("SKIPPED promtool_finds_no_problem_in_a_full_scrape: promtool is not installed");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
