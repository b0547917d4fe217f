//! The orchestration loop against a real (single-member) cluster store: services written to the
//! store get their tasks, scaling and deletion take effect, all through committed transactions.

#[path = "../../raft-store/tests/support/pki.rs"]
#[allow(dead_code, unreachable_pub)]
mod pki;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use manager::objects::{self, ClusterObject};
use manager::orchestration_loop::{OrchestrationLoop, PhaseCommitter};
use raft_store::{ReadConsistency, Store, StoreConfig, StoreError, Transaction};
use shoal_proto::api::{self, Service, Task, TaskState};

fn replicated_service(id: &str, name: &str, replicas: u64) -> Service {
    Service {
        id: id.into(),
        spec: Some(api::ServiceSpec {
            annotations: Some(api::Annotations {
                name: name.into(),
                ..Default::default()
            }),
            task: Some(api::TaskSpec {
                runtime: Some(api::task_spec::Runtime::Container(api::ContainerSpec {
                    image: "busybox:latest".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            mode: Some(api::service_spec::Mode::Replicated(
                api::ReplicatedService { replicas },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ready_node(id: &str) -> api::Node {
    api::Node {
        id: id.into(),
        spec: Some(api::NodeSpec::default()),
        description: Some(api::NodeDescription {
            hostname: id.into(),
            resources: Some(api::Resources {
                nano_cpus: 2_000_000_000,
                memory_bytes: 1 << 30,
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(api::NodeStatus {
            state: api::node_status::State::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn tasks(store: &Store) -> Vec<Task> {
    let records = store
        .list(Task::KIND, ReadConsistency::Local)
        .await
        .expect("a local read");
    objects::decode_all(&records).expect("decodable tasks")
}

async fn service(store: &Store, id: &str) -> Option<Service> {
    let record = store
        .get(Service::KIND, id, ReadConsistency::Local)
        .await
        .expect("a local read")?;
    Some(objects::decode(&record).expect("a decodable service"))
}

/// Polls until `check` holds for the store's tasks, failing after ten seconds.
async fn wait_for_tasks(store: &Store, what: &str, check: impl Fn(&[Task]) -> bool) -> Vec<Task> {
    wait_for_tasks_within(store, what, Duration::from_secs(10), check).await
}

/// Polls until `check` holds for the store's tasks, failing after `timeout`.
async fn wait_for_tasks_within(
    store: &Store,
    what: &str,
    timeout: Duration,
    check: impl Fn(&[Task]) -> bool,
) -> Vec<Task> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = tasks(store).await;
        if check(&current) {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; tasks: {:?}",
            current
                .iter()
                .take(20)
                .map(|task| (task.slot, task.desired_state))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn wanted_running(tasks: &[Task]) -> Vec<u64> {
    let mut slots: Vec<u64> = tasks
        .iter()
        .filter(|task| task.desired_state == TaskState::Running as i32)
        .map(|task| task.slot)
        .collect();
    slots.sort();
    slots
}

/// A single-member store on loopback, serving and leading.
async fn leading_store(dir: &std::path::Path) -> Arc<Store> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = StoreConfig::new(
        1,
        dir,
        &addr,
        pki::TestPki::new().identity(1),
        pki::data_key(1),
    );
    let store = Arc::new(Store::open(config).await.unwrap());
    store.serve(listener).unwrap();
    store.bootstrap().await.unwrap();
    store
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    store
}

/// Writes a ready node and a two-replica service "web" (id `svc1`) in one transaction.
async fn write_node_and_web_service(store: &Store) {
    store
        .write(Transaction::new(vec![
            objects::create(&ready_node("node1")),
            objects::create(&replicated_service("svc1", "web", 2)),
        ]))
        .await
        .unwrap();
}

/// Every task of `service_id` is wanted running and assigned to a node.
fn all_assigned(tasks: &[Task], service_id: &str, replicas: usize) -> bool {
    let of_service: Vec<&Task> = tasks
        .iter()
        .filter(|task| task.service_id == service_id)
        .collect();
    of_service.len() == replicas
        && of_service.iter().all(|task| {
            task.desired_state == TaskState::Running as i32
                && task.status.as_ref().map(|status| status.state)
                    == Some(TaskState::Assigned as i32)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_in_the_store_get_their_tasks_scaled_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = leading_store(dir.path()).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let orchestration = tokio::spawn(OrchestrationLoop::new(Arc::clone(&store)).run(stopped));

    store
        .write(Transaction::new(vec![
            objects::create(&ready_node("node1")),
            objects::create(&replicated_service("svc1", "web", 3)),
        ]))
        .await
        .unwrap();
    let created = wait_for_tasks(&store, "three tasks assigned to the node", |tasks| {
        wanted_running(tasks) == [1, 2, 3]
            && tasks.iter().all(|task| {
                task.status.as_ref().map(|status| status.state) == Some(TaskState::Assigned as i32)
            })
    })
    .await;
    for task in &created {
        assert_eq!(task.service_id, "svc1");
        assert_eq!(task.node_id, "node1");
        assert_eq!(task.id.len(), 25, "ids have Swarm's form");
        assert!(task.spec.is_some());
    }

    // A task no node can take stays pending, and says why.
    let mut pinned = replicated_service("svc2", "pinned", 1);
    let task_spec = pinned.spec.as_mut().unwrap().task.as_mut().unwrap();
    task_spec.placement = Some(Box::new(api::Placement {
        constraints: vec!["node.labels.zone==nowhere".into()],
        ..Default::default()
    }));
    store
        .write(Transaction::new(vec![objects::create(&pinned)]))
        .await
        .unwrap();
    let pending = wait_for_tasks(&store, "a pending task", |tasks| {
        tasks.iter().any(|task| {
            task.service_id == "svc2"
                && task.status.as_ref().is_some_and(|status| {
                    status.state == TaskState::Pending as i32
                        && status.err.contains("scheduling constraints not satisfied")
                })
        })
    })
    .await;
    let pinned_tasks = pending.iter().filter(|task| task.service_id == "svc2");
    assert!(
        pinned_tasks.clone().count() == 1 && pinned_tasks.clone().all(|t| t.node_id.is_empty())
    );
    let mut removed = service(&store, "svc2").await.unwrap();
    removed.pending_delete = true;
    store
        .write(Transaction::new(vec![objects::update(&removed)]))
        .await
        .unwrap();

    // Scale down to one: two tasks are told to shut down, one keeps running.
    let mut scaled = service(&store, "svc1").await.unwrap();
    scaled.spec.as_mut().unwrap().mode = Some(api::service_spec::Mode::Replicated(
        api::ReplicatedService { replicas: 1 },
    ));
    store
        .write(Transaction::new(vec![objects::update(&scaled)]))
        .await
        .unwrap();
    wait_for_tasks(&store, "one wanted task", |tasks| {
        wanted_running(tasks).len() == 1
    })
    .await;

    // Deleting the service: every task is told to go; once the node's worker reports them shut
    // down (played here by the test), the reaper deletes them, then the service itself.
    let mut deleted = service(&store, "svc1").await.unwrap();
    deleted.pending_delete = true;
    store
        .write(Transaction::new(vec![objects::update(&deleted)]))
        .await
        .unwrap();
    let stopping = wait_for_tasks(&store, "every task told to stop", |tasks| {
        tasks
            .iter()
            .all(|task| task.desired_state >= TaskState::Shutdown as i32)
    })
    .await;
    let reports = stopping
        .iter()
        .filter(|task| task.node_id == "node1")
        .map(|task| {
            let mut reported = task.clone();
            reported.status = Some(api::TaskStatus {
                state: TaskState::Shutdown as i32,
                ..Default::default()
            });
            objects::update(&reported)
        })
        .collect();
    store.write(Transaction::new(reports)).await.unwrap();
    wait_for_tasks(&store, "no tasks", <[Task]>::is_empty).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while service(&store, "svc1").await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    stop.send(true).unwrap();
    orchestration.await.unwrap();
    Arc::try_unwrap(store)
        .ok()
        .expect("the loop let go of the store")
        .shutdown()
        .await
        .unwrap();
}

/// A service whose tasks together are over the proposal limit: 3,000 replicas, each task
/// carrying a 400-byte environment variable, make about 1.8 MB of task creations (and as much
/// again of assignments) in one step, over the store's 1.5 MiB. Each phase commits in several
/// transactions, and the loop goes on serving services created after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_over_the_proposal_limit_commits_in_several_transactions() {
    const REPLICAS: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let store = leading_store(dir.path()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let orchestration = tokio::spawn(OrchestrationLoop::new(Arc::clone(&store)).run(stopped));

    let mut big = replicated_service("big", "big", REPLICAS as u64);
    let task_spec = big.spec.as_mut().unwrap().task.as_mut().unwrap();
    let Some(api::task_spec::Runtime::Container(container)) = task_spec.runtime.as_mut() else {
        unreachable!("the builder makes a container spec")
    };
    container.env = vec![format!("PAYLOAD={}", "x".repeat(400))];
    store
        .write(Transaction::new(vec![
            objects::create(&ready_node("node1")),
            objects::create(&big),
        ]))
        .await
        .unwrap();
    let created = wait_for_tasks_within(
        &store,
        "3,000 tasks assigned to the node",
        Duration::from_secs(120),
        |tasks| all_assigned(tasks, "big", REPLICAS),
    )
    .await;
    let mut slots: Vec<u64> = created.iter().map(|task| task.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, (1..=REPLICAS as u64).collect::<Vec<_>>());

    store
        .write(Transaction::new(vec![objects::create(
            &replicated_service("after", "after", 2),
        )]))
        .await
        .unwrap();
    wait_for_tasks_within(
        &store,
        "the tasks of a service created afterwards",
        Duration::from_secs(60),
        |tasks| all_assigned(tasks, "after", 2),
    )
    .await;

    stop.send(true).unwrap();
    orchestration.await.unwrap();
}

/// Commits through the store, after failing the first `failures` commits as a store without
/// quorum does, or panicking on the first one. Every commit must come in the term the store
/// leads in.
struct FlakyCommitter {
    store: Arc<Store>,
    failures: std::sync::atomic::AtomicUsize,
    panic_first: std::sync::atomic::AtomicBool,
}

impl PhaseCommitter for FlakyCommitter {
    fn commit(&self, term: u64, txn: Transaction) -> BoxFuture<'_, Result<u64, StoreError>> {
        use std::sync::atomic::Ordering;
        assert_eq!(
            Some(term),
            self.store.leading_term(),
            "a commit in a term the store does not lead in"
        );
        if self.panic_first.swap(false, Ordering::SeqCst) {
            panic!("a bug in the loop");
        }
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if failing {
            return Box::pin(async {
                Err(StoreError::NoQuorum {
                    detail: "injected".into(),
                })
            });
        }
        Box::pin(self.store.write_in_term(term, txn))
    }
}

/// A transient write error (no quorum) delays orchestration; it no longer ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_retries_after_a_transient_write_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = leading_store(dir.path()).await;
    let committer = Arc::new(FlakyCommitter {
        store: Arc::clone(&store),
        failures: 3.into(),
        panic_first: false.into(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let orchestration = tokio::spawn(
        OrchestrationLoop::with_committer(Arc::clone(&store), committer.clone()).run(stopped),
    );
    write_node_and_web_service(&store).await;
    wait_for_tasks(&store, "tasks despite three failed writes", |tasks| {
        all_assigned(tasks, "svc1", 2)
    })
    .await;
    assert_eq!(
        committer.failures.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    stop.send(true).unwrap();
    orchestration.await.unwrap();
}

/// How many steps the loop has timed into `metrics`.
fn steps_taken(metrics: &shoal_metrics::Metrics) -> u64 {
    let text = metrics.encode(shoal_metrics::Format::PrometheusText);
    text.lines()
        .find_map(|line| line.strip_prefix("shoal_orchestration_step_duration_seconds_count "))
        .and_then(|count| count.trim().parse().ok())
        .expect("the step histogram's count")
}

/// A step visits every task, so the loop steps when something was committed or a wake-up it
/// asked for falls due, never on a timer of its own: a converged cluster costs its leader no
/// orchestration. At 1,000 nodes and 10,000 tasks, stepping with nothing to do took half of
/// one of the leader's cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_rests_while_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = leading_store(dir.path()).await;
    let metrics = shoal_metrics::Metrics::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let orchestration = tokio::spawn(
        OrchestrationLoop::new(Arc::clone(&store))
            .with_metrics(metrics.orchestration.clone())
            .run(stopped),
    );
    write_node_and_web_service(&store).await;
    wait_for_tasks(&store, "the service's tasks", |tasks| {
        all_assigned(tasks, "svc1", 2)
    })
    .await;
    // The step after the loop's own last commit finds nothing to do; then nothing changes
    // for eight of its leadership polls.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let converged = steps_taken(&metrics);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        steps_taken(&metrics),
        converged,
        "the loop stepped while nothing changed"
    );

    let mut scaled = service(&store, "svc1").await.unwrap();
    scaled.spec.as_mut().unwrap().mode = Some(api::service_spec::Mode::Replicated(
        api::ReplicatedService { replicas: 3 },
    ));
    store
        .write(Transaction::new(vec![objects::update(&scaled)]))
        .await
        .unwrap();
    wait_for_tasks(&store, "a third task after the scale", |tasks| {
        all_assigned(tasks, "svc1", 3)
    })
    .await;
    assert!(steps_taken(&metrics) > converged);
    stop.send(true).unwrap();
    orchestration.await.unwrap();
}

/// A loop that panics is started again by its supervisor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_restarts_a_loop_that_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let store = leading_store(dir.path()).await;
    let committer = Arc::new(FlakyCommitter {
        store: Arc::clone(&store),
        failures: 0.into(),
        panic_first: true.into(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let orchestration = tokio::spawn(
        OrchestrationLoop::with_committer(Arc::clone(&store), committer.clone())
            .run_supervised(stopped),
    );
    write_node_and_web_service(&store).await;
    wait_for_tasks(&store, "tasks after the loop panicked", |tasks| {
        all_assigned(tasks, "svc1", 2)
    })
    .await;
    assert!(
        !committer
            .panic_first
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    stop.send(true).unwrap();
    orchestration.await.unwrap();
}

/// A failed write (here, a leader that lost its quorum) does not end the loop: once the quorum
/// is back, the same leader's loop carries on and gives the service its tasks. The fault
/// campaign (`tests/tests/campaign.rs`, seed 1, round 3) found the loop stopped for good, every
/// service frozen until the leadership changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_outlives_a_lost_quorum_and_carries_on_once_it_is_back() {
    let pki = pki::TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut members = Vec::new();
    for id in 1..=2u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut config = StoreConfig::new(
            id,
            dir.path().join(id.to_string()),
            &addr,
            pki.identity(id),
            pki::data_key(id),
        );
        config.request_timeout = Duration::from_secs(1);
        let links = config.links.clone();
        let store = Arc::new(Store::open(config).await.unwrap());
        store.serve(listener).unwrap();
        members.push((id, addr, links, store));
    }
    let voters = members
        .iter()
        .map(|(id, addr, _, _)| (*id, addr.clone()))
        .collect();
    members[0].3.bootstrap_with(voters).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let leader = loop {
        if let Some((_, _, _, store)) = members.iter().find(|member| member.3.status().is_leader) {
            break Arc::clone(store);
        }
        assert!(tokio::time::Instant::now() < deadline, "no member led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    write_node_and_web_service(&leader).await;

    // Neither member reaches the other: the leader still leads but can commit nothing, and the
    // loop's first write (the service's tasks) fails.
    members[0].2.cut(2);
    members[1].2.cut(1);
    // Every member runs the loop, as every manager does; only the leader's steps.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let loops: Vec<_> = members
        .iter()
        .map(|(_, _, _, store)| {
            let (store, stopped) = (Arc::clone(store), stopped.clone());
            let leads = Arc::ptr_eq(&store, &leader);
            (
                leads,
                tokio::spawn(OrchestrationLoop::new(store).run(stopped)),
            )
        })
        .collect();
    let orchestration = loops
        .into_iter()
        .find_map(|(leads, handle)| leads.then_some(handle))
        .unwrap();
    // Past the write's timeout, and a retry or two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !orchestration.is_finished(),
        "the loop ended on a failed write: {:?}",
        orchestration.await
    );
    assert!(tasks(&leader).await.is_empty());

    // Healed: whichever member leads now gives the service its tasks (the old leader, most
    // likely, as the other needs its vote and its log is the longer one).
    members[0].2.heal_all();
    members[1].2.heal_all();
    wait_for_tasks(&leader, "two tasks after the quorum came back", |tasks| {
        wanted_running(tasks) == [1, 2]
    })
    .await;
}
