//! Acknowledged means durable, across real processes: three members run as separate OS
//! processes, clients write concurrently, every member is killed with SIGKILL mid-stream, and
//! after a restart every acknowledged write is there and the cluster elects a leader again.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_store::{StoreClient, Transaction};
use support::pki::TestPki;

/// Member processes, killed when the test ends however it ends.
struct Members {
    children: BTreeMap<u64, Child>,
}

impl Members {
    fn kill_all(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn spawn_member(dir: &Path, id: u64, addrs: &BTreeMap<u64, String>, bootstrap: bool) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_raft-store-member"));
    command
        .arg("--id")
        .arg(id.to_string())
        .arg("--data-dir")
        .arg(dir.join(format!("member-{id}")))
        .arg("--listen")
        .arg(&addrs[&id])
        .arg("--tls-dir")
        .arg(dir.join("tls"))
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(dir.join(format!("member-{id}.log")))
                .expect("a log file"),
        );
    if bootstrap {
        let voters: Vec<String> = addrs
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect();
        command.arg("--bootstrap").arg(voters.join(","));
    }
    let mut child = command.spawn().expect("starting a member process");
    let stdout = child.stdout.take().expect("the member's stdout");
    let mut first_line = String::new();
    BufReader::new(stdout)
        .read_line(&mut first_line)
        .expect("reading the member's stdout");
    assert_eq!(
        first_line.trim(),
        "ready",
        "member {id} did not start; see its log in {}",
        dir.display()
    );
    child
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.local_addr().expect("its address").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9_of_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    pki.write_dir(&dir.path().join("tls"), 3);
    let addrs: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut members = Members {
        children: BTreeMap::new(),
    };
    for id in 1..=3 {
        members
            .children
            .insert(id, spawn_member(dir.path(), id, &addrs, id == 1));
    }

    let client = Arc::new(StoreClient::new(
        addrs.iter().map(|(id, addr)| (*id, addr.clone())).collect(),
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
        members
            .children
            .insert(id, spawn_member(dir.path(), id, &addrs, false));
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
