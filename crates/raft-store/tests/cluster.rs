//! In-process clusters of 1, 3 and 5 members on loopback with mutual TLS: replication,
//! forwarding, leader loss, partitions, snapshots, conflicts, membership and recovery.

mod support;

use std::time::Duration;

use raft_store::{
    Change, ChangeEvent, ReadConsistency, Store, StoreClient, StoreError, Transaction,
    TxnRejection, force_new_cluster,
};
use support::cluster::{TestCluster, poll};
use support::pki::{TestPki, data_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_commits_reads_and_watches() {
    let cluster = TestCluster::start(1).await;
    let store = cluster.store(1);
    let mut watch = store.watch(store.local_view(|view| view.applied_index()) + 1);

    let created = store
        .write(Transaction::create(
            "service",
            "svc1",
            "web",
            b"v1".to_vec(),
        ))
        .await
        .unwrap();
    let record = store
        .get("service", "svc1", ReadConsistency::Linearizable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.version, record.name.as_str()), (created, "web"));
    assert_eq!(record.created_at, record.updated_at);

    let updated = store
        .write(Transaction::new(vec![Change::Update {
            kind: "service".into(),
            id: "svc1".into(),
            name: "web".into(),
            expected_version: created,
            data: b"v2".to_vec().into(),
        }]))
        .await
        .unwrap();
    assert!(updated > created);

    let first = watch.next().await.unwrap();
    assert_eq!(first.index, created);
    assert!(matches!(&first.changes[..], [ChangeEvent::Created(r)] if r.id == "svc1"));
    let second = watch.next().await.unwrap();
    assert!(
        matches!(&second.changes[..], [ChangeEvent::Updated { old, new }]
        if old.data == b"v1"[..] && new.data == b"v2"[..] && new.version == updated)
    );

    // A watcher can resume from any index it still covers.
    let mut resumed = store.watch(created + 1);
    assert_eq!(resumed.next().await.unwrap().index, updated);

    let name_taken = store
        .write(Transaction::create("service", "svc2", "web", Vec::new()))
        .await;
    assert!(matches!(
        name_taken,
        Err(StoreError::Rejected(TxnRejection::NameInUse { .. }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_forward_writes_and_apply_the_same_state() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut last = 0;
    for i in 0..20 {
        // Writes on a follower are forwarded to the leader.
        last = cluster.create(follower, "task", &format!("t{i:02}")).await;
    }
    cluster.wait_applied(last).await;
    let expected: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    for id in 1..=3 {
        let ids: Vec<String> = cluster
            .local_objects(id, "task")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, expected, "member {id}");
        // A linearizable read on a follower sees everything acknowledged before it.
        assert_eq!(cluster.linearizable_ids(id, "task").await, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_survive_losing_the_leader_and_another() {
    let mut cluster = TestCluster::start(5).await;
    let first_leader = cluster.leader().await;
    cluster.create(first_leader, "node", "before").await;
    let other = (1..=5).find(|id| *id != first_leader).unwrap();
    cluster.stop(first_leader).await;
    cluster.stop(other).await;
    let leader = cluster.leader().await;
    assert_ne!(leader, first_leader);
    let survivor = cluster
        .running()
        .map(|(id, _)| id)
        .find(|id| *id != leader)
        .unwrap();
    let index = cluster.create(survivor, "node", "after").await;
    cluster.wait_applied(index).await;
    for (id, _) in cluster.running() {
        let ids: Vec<String> = cluster
            .local_objects(id, "node")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["after", "before"], "member {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_elects_another_and_writes_continue() {
    let mut cluster = TestCluster::start(3).await;
    let old_leader = cluster.leader().await;
    let committed = cluster.create(old_leader, "service", "kept").await;
    cluster.wait_applied(committed).await;

    cluster.stop(old_leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    for (id, _) in cluster.running() {
        cluster.create(id, "service", &format!("after-{id}")).await;
    }

    // The old leader comes back as a follower and catches up.
    cluster.restart(old_leader).await;
    let index = cluster.create(new_leader, "service", "last").await;
    cluster.wait_applied(index).await;
    let everywhere: Vec<Vec<String>> = (1..=3)
        .map(|id| {
            cluster
                .local_objects(id, "service")
                .into_iter()
                .map(|r| r.id)
                .collect()
        })
        .collect();
    assert!(everywhere.iter().all(|ids| ids == &everywhere[0]));
    assert!(everywhere[0].contains(&"kept".to_owned()));
    assert_eq!(everywhere[0].len(), 4);
}

/// A follower that hears nothing from its leader for an election timeout calls the leader gone
/// (the dispatcher holds agents' sessions then, instead of sending them to a dead leader), and
/// a live one again once it hears from a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_its_leader_calls_it_gone_until_it_hears_one() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let committed = cluster.create(leader, "service", "a").await;
    cluster.wait_applied(committed).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    assert!(!cluster.store(leader).leader_seems_gone());
    assert!(!cluster.store(follower).leader_seems_gone());

    cluster.partition(&[follower]);
    poll(
        Duration::from_secs(5),
        "the cut-off follower to call its leader gone",
        || cluster.store(follower).leader_seems_gone().then_some(()),
    )
    .await;
    assert!(
        !cluster
            .store(follower)
            .wait_for_live_leader(Duration::from_millis(300))
            .await
    );

    cluster.heal();
    assert!(
        cluster
            .store(follower)
            .wait_for_live_leader(Duration::from_secs(10))
            .await
    );
}

/// A new leader whose first heartbeats go unanswered for longer than a leader lease (800 ms
/// here), as when its runtime is busy with reconnecting workers, still serves the read a write
/// makes first: the read waits for the quorum within the request timeout rather than being
/// refused after one lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_serves_a_read_then_write_through_a_late_quorum() {
    let mut cluster = TestCluster::start(3).await;
    let old_leader = cluster.leader().await;
    cluster.create(old_leader, "service", "before").await;
    cluster.stop(old_leader).await;
    let new_leader = cluster.leader().await;
    let follower = (1..=3)
        .find(|id| *id != old_leader && *id != new_leader)
        .unwrap();

    // Only the leader's calls to its one live follower are cut: the follower still reaches
    // the leader, whose lease keeps it from being voted out meanwhile.
    let links = &cluster.members[&new_leader].links;
    links.cut(follower);
    let store = cluster.store(new_leader);
    let started = tokio::time::Instant::now();
    let read_then_write = async {
        let existing = store.list("service", ReadConsistency::Linearizable).await?;
        store
            .write(Transaction::create("service", "after", "", Vec::new()))
            .await?;
        Ok::<_, StoreError>(existing.len())
    };
    let heal_after_two_leases = async {
        tokio::time::sleep(Duration::from_millis(1600)).await;
        links.heal(follower);
    };
    let (written, ()) = tokio::join!(read_then_write, heal_after_two_leases);
    assert_eq!(written, Ok(1), "the read or the write was refused");
    // Three election timeouts (400 ms each), well inside the 5 s request timeout.
    assert!(
        started.elapsed() < Duration::from_millis(1600 + 1200),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_commit_and_converges_after_healing() {
    let mut cluster = TestCluster::start_with(3, |config| {
        config.request_timeout = Duration::from_secs(2);
    })
    .await;
    let leader = cluster.leader().await;
    cluster.create(leader, "task", "before").await;

    // Cut the leader off: it is now a minority of one.
    cluster.partition(&[leader]);
    let majority: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let refused = cluster
        .store(leader)
        .write(Transaction::create("task", "minority", "", Vec::new()))
        .await;
    assert!(
        matches!(refused, Err(StoreError::NoQuorum { .. })),
        "a lone member must refuse writes, got {refused:?}"
    );
    let refused_message = refused.unwrap_err().to_string();
    assert!(
        refused_message.starts_with("no quorum"),
        "{refused_message}"
    );

    let new_leader = cluster.leader_among(&majority).await;
    assert_ne!(new_leader, leader);
    cluster.create(majority[0], "task", "majority").await;
    let read_on_minority = cluster
        .store(leader)
        .list("task", ReadConsistency::Linearizable)
        .await;
    assert!(
        read_on_minority.is_err(),
        "a minority cannot serve linearizable reads"
    );

    cluster.heal();
    let index = cluster.create(majority[1], "task", "healed").await;
    cluster.wait_applied(index).await;
    let states: Vec<Vec<String>> = (1..=3)
        .map(|id| {
            cluster
                .local_objects(id, "task")
                .into_iter()
                .map(|r| r.id)
                .collect()
        })
        .collect();
    assert_eq!(states[0], ["before", "healed", "majority"]);
    assert!(states.iter().all(|s| s == &states[0]), "{states:?}");
    cluster.stop(leader).await;
}

/// A write bound to a term commits only through the member that leads in it, and is never
/// forwarded: not by a follower, not by the leader asked for another term, and not by a deposed
/// leader once it knows of its successor, which would forward an ordinary write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_term_commits_only_through_its_leader() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let term = cluster
        .store(leader)
        .leading_term()
        .expect("the leader's term");
    let node = |id: &str| Transaction::create("node", id, "", Vec::new());
    let not_leader = |written: Result<u64, StoreError>| {
        assert!(
            matches!(written, Err(StoreError::NotLeader { .. })),
            "expected NotLeader, got {written:?}"
        );
    };

    not_leader(cluster.store(follower).write_in_term(term, node("f")).await);
    not_leader(
        cluster
            .store(leader)
            .write_in_term(term + 1, node("t"))
            .await,
    );
    cluster
        .store(leader)
        .write_in_term(term, node("kept"))
        .await
        .expect("the leader commits in its term");

    // Depose the leader: cut it off until the others elect one, then let it hear of it.
    cluster.partition(&[leader]);
    let majority: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let new_leader = cluster.leader_among(&majority).await;
    cluster.heal();
    poll(Duration::from_secs(10), "the old leader to follow", || {
        (cluster.status(leader).leader == Some(new_leader)).then_some(())
    })
    .await;
    not_leader(
        cluster
            .store(leader)
            .write_in_term(term, node("stale"))
            .await,
    );

    let index = cluster.create(new_leader, "node", "after").await;
    cluster.wait_applied(index).await;
    for id in 1..=3 {
        let ids: Vec<String> = cluster
            .local_objects(id, "node")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["after", "kept"], "member {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restarted_after_the_log_was_purged_catches_up_through_a_snapshot() {
    let mut cluster = TestCluster::start_with(3, |config| {
        config.snapshot_interval = 50;
        config.entries_kept_after_snapshot = 0;
    })
    .await;
    let leader = cluster.leader().await;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.stop(lagging).await;
    let applied_when_stopped = 0;
    let mut last = 0;
    for i in 0..200 {
        // Large enough objects that the snapshot spans several 1 MiB chunks.
        let data = vec![i as u8; 16 * 1024];
        last = cluster
            .store(leader)
            .write(Transaction::create("config", format!("c{i:03}"), "", data))
            .await
            .unwrap();
    }
    poll(
        Duration::from_secs(10),
        "the leader to purge its log",
        || (cluster.status(leader).purged_index > applied_when_stopped + 100).then_some(()),
    )
    .await;

    cluster.restart(lagging).await;
    cluster.wait_applied(last).await;
    let status = cluster.status(lagging);
    assert!(
        status.snapshot_index > 0,
        "the follower installed a snapshot: {status:?}"
    );
    let objects = cluster.local_objects(lagging, "config");
    assert_eq!(objects.len(), 200);
    assert!(objects.iter().all(|o| o.data.len() == 16 * 1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conflicting_updates_have_exactly_one_winner() {
    let cluster = TestCluster::start(3).await;
    let version = cluster.create(1, "service", "contested").await;
    cluster.wait_applied(version).await;
    let update = |via: u64| {
        let store = cluster.store(via);
        async move {
            store
                .write(Transaction::new(vec![Change::Update {
                    kind: "service".into(),
                    id: "contested".into(),
                    name: String::new(),
                    expected_version: version,
                    data: format!("from {via}").into_bytes().into(),
                }]))
                .await
        }
    };
    let results = futures::future::join_all([update(1), update(2), update(3)]).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for result in results.iter().filter(|r| r.is_err()) {
        assert!(matches!(
            result,
            Err(StoreError::Rejected(TxnRejection::Conflict { expected, .. })) if *expected == version
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_proposal_is_refused_and_writes_nothing() {
    let cluster = TestCluster::start(1).await;
    let store = cluster.store(1);
    let too_big = Transaction::new(vec![
        Change::Create {
            kind: "secret".into(),
            id: "small".into(),
            name: String::new(),
            data: vec![1; 16].into(),
        },
        Change::Create {
            kind: "secret".into(),
            id: "huge".into(),
            name: String::new(),
            data: vec![0; 2 * 1024 * 1024].into(),
        },
    ]);
    let refused = store.write(too_big).await;
    let Err(StoreError::ProposalTooLarge { size, limit }) = &refused else {
        panic!("expected ProposalTooLarge, got {refused:?}");
    };
    assert!(*size > 2 * 1024 * 1024);
    assert_eq!(*limit, 1536 * 1024);
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("split it into smaller transactions")
    );
    assert!(
        store
            .list("secret", ReadConsistency::Linearizable)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_presenting_another_ca_is_rejected() {
    let cluster = TestCluster::start(1).await;
    let members = vec![(1, cluster.members[&1].addr.clone())];
    let stranger = TestPki::new().identity(9);
    // The client tries again until its timeout and reports the refusal, not the last attempt
    // the timeout cut short (which it once did in CI); 3 s leaves a loaded machine room for
    // the first handshake.
    let client = StoreClient::new(members.clone(), &stranger, Duration::from_secs(3));
    let refused = client
        .write(Transaction::create("node", "intruder", "", Vec::new()))
        .await;
    let Err(StoreError::Unreachable { detail, .. }) = &refused else {
        panic!("a stranger's write must be refused at the TLS handshake: {refused:?}");
    };
    assert!(
        detail.to_lowercase().contains("certificate")
            || detail.contains("tls")
            || detail.contains("handshake"),
        "{detail}"
    );
    // A client with the cluster's CA gets through, and the stranger wrote nothing.
    let friend = StoreClient::new(members, &cluster.pki.identity(7), Duration::from_secs(5));
    assert!(friend.list("node").await.unwrap().is_empty());
    friend
        .write(Transaction::create("node", "friend", "", Vec::new()))
        .await
        .unwrap();

    // A member with certificates from another CA can't be added to the cluster.
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = raft_store::StoreConfig::new(
        9,
        dir.path(),
        &addr,
        TestPki::new().identity(9),
        data_key(9),
    );
    config.request_timeout = Duration::from_secs(2);
    let outsider = Store::open(config).await.unwrap();
    outsider.serve(listener).unwrap();
    let join = cluster.store(1).add_learner(9, addr).await;
    let Err(StoreError::Membership(reason)) = &join else {
        panic!("an outsider must not catch up: {join:?}");
    };
    assert!(reason.contains("trusts this cluster's CA"), "{reason}");
    assert!(outsider.local_view(|view| view.object_count()) == 0);
    outsider.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_and_the_quorum_guard() {
    let mut cluster = TestCluster::start(1).await;
    cluster.create(1, "node", "n1").await;
    // Two new members join as learners, catch up, and become voters.
    for id in [2, 3] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        cluster.members.insert(
            id,
            support::cluster::TestMember {
                addr: addr.clone(),
                links: Default::default(),
                store: None,
            },
        );
        let store = Store::open(cluster.config(id)).await.unwrap();
        store.serve(listener).unwrap();
        cluster.members.get_mut(&id).unwrap().store = Some(store);
        cluster.store(1).add_learner(id, addr).await.unwrap();
        assert!(cluster.status(1).learners.contains_key(&id));
        // Promotion works from any member: followers forward it.
        cluster.store(id).promote(id).await.unwrap();
    }
    let status = cluster.status(1);
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(cluster.local_objects(3, "node").len(), 1);

    // With member 3 down, removing member 2 would leave one reachable voter of two.
    let leader = cluster.leader().await;
    let down = if leader == 3 { 2 } else { 3 };
    let other = (1..=3).find(|id| *id != leader && *id != down).unwrap();
    cluster.stop(down).await;
    poll(
        Duration::from_secs(10),
        "the leader to notice the stopped member",
        || {
            cluster
                .status(leader)
                .unreachable
                .contains(&down)
                .then_some(())
        },
    )
    .await;
    let refused = cluster.store(leader).remove_member(other).await;
    let Err(StoreError::Membership(reason)) = &refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert!(reason.contains("quorum"), "{reason}");

    // Removing the member that is down is fine, and leaves two voters.
    cluster.store(leader).remove_member(down).await.unwrap();
    assert_eq!(cluster.status(leader).voters.len(), 2);
    let index = cluster.create(other, "node", "n2").await;
    cluster.wait_applied(index).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_on_a_lone_survivor_keeps_every_committed_object() {
    let mut cluster = TestCluster::start_with(3, |config| config.snapshot_interval = 30).await;
    let leader = cluster.leader().await;
    let mut last = 0;
    for i in 0..50 {
        last = cluster.create(leader, "service", &format!("s{i:02}")).await;
    }
    cluster.wait_applied(last).await;
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    for id in 1..=3 {
        cluster.stop(id).await;
    }

    let config = cluster.config(survivor);
    force_new_cluster(
        &config.data_dir,
        &config.data_key,
        survivor,
        &config.advertise_addr,
    )
    .await
    .unwrap();
    cluster.restart(survivor).await;
    let store = cluster.store(survivor);
    assert_eq!(
        store
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap(),
        survivor
    );
    let status = store.status();
    assert_eq!(
        status.voters.keys().copied().collect::<Vec<_>>(),
        [survivor]
    );
    let ids = cluster.linearizable_ids(survivor, "service").await;
    assert_eq!(ids, (0..50).map(|i| format!("s{i:02}")).collect::<Vec<_>>());
    cluster.create(survivor, "service", "after-recovery").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_snapshot_early_to_bound_the_log_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = raft_store::StoreConfig::new(
        1,
        dir.path(),
        &addr,
        TestPki::new().identity(1),
        data_key(1),
    );
    // The entry count alone would never snapshot here; the byte budget must.
    config.snapshot_interval = 1_000_000;
    config.entries_kept_after_snapshot = 10;
    config.log_memory_budget = 256 << 10;
    let store = Store::open(config).await.unwrap();
    store.serve(listener).unwrap();
    store.bootstrap().await.unwrap();
    for number in 0..100 {
        store
            .write(Transaction::create(
                "task",
                format!("t{number}"),
                "",
                vec![b'x'; 16 << 10],
            ))
            .await
            .unwrap();
    }
    let status = poll(
        Duration::from_secs(20),
        "an early snapshot and a purged log",
        || {
            let status = store.status();
            (status.snapshot_index > 0 && status.purged_index > 0).then_some(status)
        },
    )
    .await;
    assert!(status.snapshot_index <= status.last_applied);
    // Everything is still there.
    let tasks = store
        .list("task", ReadConsistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(tasks.len(), 100);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_proposal_is_held_to_the_size_limit_too() {
    use shoal_proto::raft::RaftMessage;
    use shoal_proto::raft::raft_client::RaftClient;

    /// What a follower sends when it forwards a write, encoded as members encode it.
    #[derive(serde::Serialize)]
    struct ProposeCall {
        txn: Transaction,
        forwarded: bool,
    }

    let cluster = TestCluster::start_with(1, |config| config.max_proposal_bytes = 4096).await;
    let leader = cluster.leader().await;
    let payload = postcard::to_allocvec(&ProposeCall {
        txn: Transaction::create("task", "big", "", vec![b'x'; 16 << 10]),
        forwarded: true,
    })
    .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "https://{}",
        cluster.members[&leader].addr
    ))
    .unwrap()
    .tls_config(cluster.pki.identity(2).client_config())
    .unwrap()
    .connect()
    .await
    .unwrap();
    let reply = RaftClient::new(channel)
        .propose(RaftMessage { payload })
        .await
        .unwrap()
        .into_inner();
    let result: Result<u64, StoreError> = postcard::from_bytes(&reply.payload).unwrap();
    assert!(
        matches!(
            result,
            Err(StoreError::ProposalTooLarge { limit: 4096, .. })
        ),
        "{result:?}"
    );
    assert!(cluster.local_objects(leader, "task").is_empty());
}

/// Writes through member `via` until it is refused as fenced out, and returns the refusal.
async fn refusal_of_a_fenced_member(cluster: &TestCluster, via: u64) -> StoreError {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for attempt in 0.. {
        let written = cluster
            .store(via)
            .write(Transaction::create(
                "service",
                format!("stale-{via}-{attempt}"),
                "",
                Vec::new(),
            ))
            .await;
        match written {
            Err(error) if error.to_string().contains("fenced out") => return error,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "old member {via} was never fenced out; its last write: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!("the loop returns or fails")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_cluster_fences_out_the_old_members_when_they_come_back() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let index = cluster.create(leader, "service", "before").await;
    cluster.wait_applied(index).await;
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    let old: Vec<u64> = (1..=3).filter(|id| *id != survivor).collect();
    for id in 1..=3 {
        cluster.stop(id).await;
    }
    let config = cluster.config(survivor);
    force_new_cluster(
        &config.data_dir,
        &config.data_key,
        survivor,
        &config.advertise_addr,
    )
    .await
    .unwrap();
    cluster.restart(survivor).await;
    cluster
        .store(survivor)
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let mut acknowledged = vec!["before".to_owned()];
    for number in 0..5 {
        let id = format!("forced-{number}");
        cluster.create(survivor, "service", &id).await;
        acknowledged.push(id);
    }

    // The two old members come back with their old data: a majority of the old membership,
    // whose leader would outrank the survivor.
    for id in &old {
        cluster.restart(*id).await;
    }
    for id in &old {
        let refusal = refusal_of_a_fenced_member(&cluster, *id).await.to_string();
        assert!(refusal.contains("--force-new-cluster"), "{refusal}");
        assert!(
            refusal.contains("shoal swarm leave --force") && refusal.contains("shoal swarm join"),
            "{refusal}"
        );
    }
    // The forced cluster goes on, alone, with every write it acknowledged.
    for number in 5..10 {
        let id = format!("forced-{number}");
        cluster.create(survivor, "service", &id).await;
        acknowledged.push(id);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = cluster.status(survivor);
    assert_eq!(status.leader, Some(survivor));
    assert_eq!(
        status.voters.keys().copied().collect::<Vec<_>>(),
        [survivor]
    );
    let mut ids = cluster.linearizable_ids(survivor, "service").await;
    ids.sort();
    acknowledged.sort();
    assert_eq!(ids, acknowledged);

    // The fence holds across a restart of the survivor.
    cluster.stop(survivor).await;
    cluster.restart(survivor).await;
    cluster
        .store(survivor)
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    cluster.create(survivor, "service", "after-restart").await;
    let ids = cluster.linearizable_ids(survivor, "service").await;
    assert_eq!(ids.len(), acknowledged.len() + 1);
}
