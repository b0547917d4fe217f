//! The orchestration loop against a real (single-member) cluster store: services written to the
//! store get their tasks, scaling and deletion take effect, all through committed transactions.

#[path = "../../raft-store/tests/support/pki.rs"]
#[allow(dead_code, unreachable_pub)]
mod pki;

use std::sync::Arc;
use std::time::Duration;

use manager::objects::{self, ClusterObject};
use manager::orchestration_loop::OrchestrationLoop;
use raft_store::{ReadConsistency, Store, StoreConfig, Transaction};
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_in_the_store_get_their_tasks_scaled_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = StoreConfig::new(1, dir.path(), &addr, pki::TestPki::new().identity(1));
    let store = Arc::new(Store::open(config).await.unwrap());
    store.serve(listener).unwrap();
    store.bootstrap().await.unwrap();
    store
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let orchestration = tokio::spawn(OrchestrationLoop::new(Arc::clone(&store)).run(stopped));

    store
        .write(Transaction::new(vec![objects::create(
            &replicated_service("svc1", "web", 3),
        )]))
        .await
        .unwrap();
    let created = wait_for_tasks(&store, "three tasks", |tasks| {
        wanted_running(tasks) == [1, 2, 3]
    })
    .await;
    for task in &created {
        assert_eq!(task.service_id, "svc1");
        assert_eq!(task.id.len(), 25, "ids have Swarm's form");
        assert!(task.spec.is_some());
    }

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

    // Deleting the service removes its tasks (no worker holds them), then the service itself.
    let mut deleted = service(&store, "svc1").await.unwrap();
    deleted.pending_delete = true;
    store
        .write(Transaction::new(vec![objects::update(&deleted)]))
        .await
        .unwrap();
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
    orchestration.await.unwrap().unwrap();
    Arc::try_unwrap(store)
        .ok()
        .expect("the loop let go of the store")
        .shutdown()
        .await
        .unwrap();
}
