//! Storage errors are fail-stop: after a failed log write the member acknowledges nothing more,
//! stops leading and reports why.

#[path = "../tests/support/pki.rs"]
#[allow(dead_code, unreachable_pub)]
pub(crate) mod pki;

use std::time::Duration;

use crate::{Store, StoreConfig, StoreError, Transaction};

async fn leading_store(dir: &std::path::Path) -> Store {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = StoreConfig::new(
        1,
        dir,
        &addr,
        pki::TestPki::new().identity(1),
        pki::data_key(1),
    );
    // The log is purged right behind each snapshot, so a snapshot is followed by a purge.
    config.entries_kept_after_snapshot = 0;
    config.request_timeout = Duration::from_secs(2);
    let store = Store::open(config).await.unwrap();
    store.serve(listener).unwrap();
    store.bootstrap().await.unwrap();
    store
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    store
}

fn object(id: &str) -> Transaction {
    Transaction::create("thing", id, id, vec![1, 2, 3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_purge_stops_the_member_before_anything_more_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = leading_store(dir.path()).await;
    store.write(object("before")).await.unwrap();
    assert_eq!(store.fatal_error(), None);

    // The purge behind this snapshot is the writer's next batch, and it fails. Nothing reports
    // a purge's outcome to Raft, so only the writer can keep later writes from being
    // acknowledged over a log whose state on disk is unknown.
    store.log().fail_next_write();
    store.snapshot_now().await.unwrap();
    // Raft may see the writer's failure before it reports the purge as done: either shows the
    // purge was issued.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.status().purged_index == 0 && store.fatal_error().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log was never purged"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The writer takes the purge up at once; this leaves it ample time.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let refused = store.write(object("after")).await;
    assert!(
        refused.is_err(),
        "a write after a failed purge was acknowledged"
    );
    let status = store.status();
    assert!(!status.is_leader && status.leader.is_none(), "{status:?}");
    let fatal = store.fatal_error().expect("the member says why it stopped");
    assert!(fatal.contains("injected write failure"), "{fatal}");
    assert!(matches!(
        store.write(object("later")).await,
        Err(StoreError::Raft(_) | StoreError::NoQuorum { .. } | StoreError::NotLeader { .. })
    ));
    let _ = store.shutdown().await;
}
