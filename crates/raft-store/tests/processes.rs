//! Acknowledged means durable, across real processes: three members run as separate OS
//! processes, clients write concurrently, every member is killed with SIGKILL mid-stream, and
//! after a restart every acknowledged write is there and the cluster elects a leader again.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_store::{StoreClient, Transaction};
use support::member_process::MemberProcesses;
use support::pki::TestPki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9_of_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    pki.write_dir(&dir.path().join("tls"), 3);
    let program = env!("CARGO_BIN_EXE_raft-store-member");
    let mut members = MemberProcesses::new(program, &[], dir.path(), 3);
    for id in 1..=3 {
        members.start(id, id == 1, &[]);
    }

    let client = Arc::new(StoreClient::new(
        members.members(),
        &pki.identity(100),
        Duration::from_secs(10),
    ));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let client = Arc::clone(&client);
            let acknowledged = Arc::clone(&acknowledged);
            tokio::spawn(async move {
                for n in 0.. {
                    let id = format!("w{writer:02}-{n:05}");
                    let txn = Transaction::create("item", id.clone(), "", vec![0; 200]);
                    match client.write(txn).await {
                        Ok(_) => acknowledged.lock().unwrap().push(id),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    // Kill every member mid-stream, once writes are flowing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 500 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes did not flow"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    members.kill_all();
    for writer in writers {
        writer.abort();
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();

    for id in 1..=3 {
        members.start(id, false, &[]);
    }
    // A linearizable read succeeds only once a leader is elected again.
    let stored: std::collections::HashSet<String> = client
        .list("item")
        .await
        .expect("the restarted cluster serves a linearizable read")
        .into_iter()
        .map(|record| record.id)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes were lost, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
    // Writes work again after the restart.
    client
        .write(Transaction::create("item", "after-restart", "", Vec::new()))
        .await
        .unwrap();
}
