//! What a member records into the daemon's Raft families: a new leader, appends and commits
//! timed, a built snapshot's size; and the log's indexes in its status.

use std::time::Duration;

use shoal_metrics::{Format, Metrics};

use crate::fail_stop_tests::pki;
use crate::{Store, StoreConfig, Transaction};

/// The value of the sample written exactly as `series` in a scrape of `metrics`.
fn value(metrics: &Metrics, series: &str) -> f64 {
    let text = metrics.encode(Format::PrometheusText);
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_records_its_leader_appends_commits_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = StoreConfig::new(
        1,
        dir.path(),
        &addr,
        pki::TestPki::new().identity(1),
        pki::data_key(1),
    );
    config.metrics = metrics.raft.clone();
    let store = Store::open(config).await.unwrap();
    store.serve(listener).unwrap();
    store.bootstrap().await.unwrap();
    store
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let index = store
        .write(Transaction::create("thing", "a", "a", vec![1, 2, 3]))
        .await
        .unwrap();

    // The status and the leader counting come from Raft's own metrics, which may trail the
    // write by a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = store.status();
        let indexes = (status.last_log_index, status.committed, status.last_applied);
        if indexes == (index, index, index)
            && value(&metrics, "shoal_raft_leader_changes_total") >= 1.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the status never caught up with index {index}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(value(&metrics, "shoal_raft_leader_changes_total"), 1.0);
    // Every entry (the founding membership, the leader's blank one, the write) was appended.
    assert!(value(&metrics, "shoal_raft_append_duration_seconds_count") >= 1.0);
    assert_eq!(
        value(&metrics, "shoal_raft_commit_duration_seconds_count"),
        1.0
    );

    store.snapshot_now().await.unwrap();
    assert_eq!(
        value(
            &metrics,
            "shoal_raft_snapshot_size_bytes_count{origin=\"built\"}"
        ),
        1.0
    );
    assert!(
        value(
            &metrics,
            "shoal_raft_snapshot_size_bytes_sum{origin=\"built\"}"
        ) > 0.0
    );
    let _ = store.shutdown().await;
}
