//! The cluster store decoded once and indexed: tasks by id, node and service; services, nodes,
//! networks, the cluster object, and the secrets and configs tasks reference, by id. Objects of
//! one kind iterate in id order, the store's own order. It is built from a whole
//! store view and kept current by applying the store's committed changes in order, each change
//! decoding only the records it carries, so a reader pays for what it asks, not for the store's
//! size. `apply` says what it touched, so a follower of one node or one object can tell whether
//! it cares.
//!
//! This module is pure: `shared.rs` is the shell that follows the store's watch on a manager
//! and tells subscribers what each change touched.

pub(crate) mod shared;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use raft_store::{ChangeEvent, CommittedChanges, ObjectRecord, StoreView};
use shoal_proto::api::{Cluster, Config, Network, Node, Secret, Service, Task};

use crate::error::ManagerError;
use crate::objects::{self, ClusterObject};
use crate::orchestrator::{ClusterObjects, ClusterSnapshot};

/// The decoded, indexed cluster. Indexes hold ids and never empty sets, so two views of the
/// same objects are equal whatever changes led to them.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ClusterView {
    /// Services, nodes and tasks, the tasks filed as the orchestration cores look for them.
    objects: ClusterObjects,
    networks: BTreeMap<String, Network>,
    /// A swarm has one cluster object, once it is initialised.
    clusters: BTreeMap<String, Cluster>,
    /// The nodes with a manager status.
    managers: BTreeSet<String>,
    secrets: HashMap<String, Secret>,
    configs: HashMap<String, Config>,
}

/// What applying changes touched. A task counts on the node it was on and on the node it is on
/// now, so a task moved between nodes touches both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Touched {
    /// The view was rebuilt: anything may have changed.
    pub(crate) everything: bool,
    /// Nodes whose set of tasks, or one of whose tasks, changed.
    pub(crate) task_nodes: BTreeSet<String>,
    /// Nodes whose own object changed.
    pub(crate) nodes: BTreeSet<String>,
    /// A manager's node object changed, or a node became or stopped being a manager.
    pub(crate) managers: bool,
    pub(crate) secrets: BTreeSet<String>,
    pub(crate) configs: BTreeSet<String>,
    /// Every kind of object that changed, indexed here or not.
    pub(crate) kinds: BTreeSet<String>,
}

impl Touched {
    /// What a rebuild touched: everything.
    pub(crate) fn everything() -> Touched {
        Touched {
            everything: true,
            ..Touched::default()
        }
    }

    /// Whether the changes can concern any node, not only those they name: a rebuild, a
    /// manager (every session lists them), the cluster object (roots, network keys), a secret
    /// or a config (any node's tasks may reference it).
    pub(crate) fn is_wide(&self) -> bool {
        self.everything
            || self.managers
            || self.kinds.contains(Cluster::KIND)
            || !self.secrets.is_empty()
            || !self.configs.is_empty()
    }

    /// Adds what `other` touched, for a batch of changes told as one.
    pub(crate) fn extend(&mut self, other: Touched) {
        self.everything |= other.everything;
        self.task_nodes.extend(other.task_nodes);
        self.nodes.extend(other.nodes);
        self.managers |= other.managers;
        self.secrets.extend(other.secrets);
        self.configs.extend(other.configs);
        self.kinds.extend(other.kinds);
    }
}

impl ClusterView {
    /// Decodes the whole store: the view a rebuild starts from, and the reference `apply` must
    /// always agree with.
    pub(crate) fn from_store(store: &StoreView<'_>) -> Result<ClusterView, ManagerError> {
        let mut view = ClusterView::default();
        for record in store.list(Task::KIND) {
            view.objects.insert_task(objects::decode(record)?);
        }
        for record in store.list(Service::KIND) {
            view.objects.insert_service(objects::decode(record)?);
        }
        for record in store.list(Node::KIND) {
            view.insert_node(objects::decode(record)?);
        }
        for record in store.list(Network::KIND) {
            let network: Network = objects::decode(record)?;
            view.networks.insert(network.id.clone(), network);
        }
        for record in store.list(Cluster::KIND) {
            let cluster: Cluster = objects::decode(record)?;
            view.clusters.insert(cluster.id.clone(), cluster);
        }
        for record in store.list(Secret::KIND) {
            let secret: Secret = objects::decode(record)?;
            view.secrets.insert(secret.id.clone(), secret);
        }
        for record in store.list(Config::KIND) {
            let config: Config = objects::decode(record)?;
            view.configs.insert(config.id.clone(), config);
        }
        Ok(view)
    }

    /// Applies one committed entry's changes, in order. On an error (an undecodable record)
    /// the view holds the changes before it only and must be rebuilt.
    pub(crate) fn apply(&mut self, changes: &CommittedChanges) -> Result<Touched, ManagerError> {
        let mut touched = Touched::default();
        for change in &changes.changes {
            let new = match change {
                ChangeEvent::Created(new) | ChangeEvent::Updated { new, .. } => Some(new),
                ChangeEvent::Deleted(_) => None,
            };
            let record = change.object();
            touched.kinds.insert(record.kind.clone());
            self.replace(&record.kind, &record.id, new, &mut touched)?;
        }
        Ok(touched)
    }

    /// Replaces the object `kind`/`id` with `new` (removes it when `None`).
    fn replace(
        &mut self,
        kind: &str,
        id: &str,
        new: Option<&ObjectRecord>,
        touched: &mut Touched,
    ) -> Result<(), ManagerError> {
        match kind {
            Task::KIND => {
                let new: Option<Task> = new.map(objects::decode).transpose()?;
                // The view's copy, not the event's old record: the same object, already decoded.
                if let Some(old) = self.objects.remove_task(id) {
                    touched.task_nodes.extend(non_empty(old.node_id));
                }
                if let Some(new) = new {
                    touched.task_nodes.extend(non_empty(new.node_id.clone()));
                    self.objects.insert_task(new);
                }
            }
            Service::KIND => match new.map(objects::decode::<Service>).transpose()? {
                Some(service) => self.objects.insert_service(service),
                None => {
                    self.objects.remove_service(id);
                }
            },
            Node::KIND => {
                let new: Option<Node> = new.map(objects::decode).transpose()?;
                touched.nodes.insert(id.to_owned());
                self.objects.remove_node(id);
                touched.managers |= self.managers.remove(id);
                if let Some(new) = new {
                    touched.managers |= new.manager_status.is_some();
                    self.insert_node(new);
                }
            }
            Network::KIND => match new.map(objects::decode::<Network>).transpose()? {
                Some(network) => {
                    self.networks.insert(id.to_owned(), network);
                }
                None => {
                    self.networks.remove(id);
                }
            },
            Cluster::KIND => match new.map(objects::decode::<Cluster>).transpose()? {
                Some(cluster) => {
                    self.clusters.insert(id.to_owned(), cluster);
                }
                None => {
                    self.clusters.remove(id);
                }
            },
            Secret::KIND => {
                touched.secrets.insert(id.to_owned());
                match new.map(objects::decode::<Secret>).transpose()? {
                    Some(secret) => self.secrets.insert(id.to_owned(), secret),
                    None => self.secrets.remove(id),
                };
            }
            Config::KIND => {
                touched.configs.insert(id.to_owned());
                match new.map(objects::decode::<Config>).transpose()? {
                    Some(config) => self.configs.insert(id.to_owned(), config),
                    None => self.configs.remove(id),
                };
            }
            _ => {}
        }
        Ok(())
    }

    fn insert_node(&mut self, node: Node) {
        if node.manager_status.is_some() {
            self.managers.insert(node.id.clone());
        }
        self.objects.insert_node(node);
    }

    /// The services, nodes and tasks as the orchestration cores read them.
    pub(crate) fn snapshot(&self) -> ClusterSnapshot<'_> {
        self.objects.snapshot()
    }

    pub(crate) fn task(&self, id: &str) -> Option<&Task> {
        self.snapshot().task(id)
    }

    /// Every task, in id order.
    pub(crate) fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.snapshot().tasks()
    }

    /// The tasks whose `node_id` is `node_id`, in id order.
    pub(crate) fn tasks_on_node<'a>(
        &'a self,
        node_id: &str,
    ) -> impl Iterator<Item = &'a Task> + use<'a> {
        self.snapshot().tasks_on_node(node_id)
    }

    /// The tasks of service `service_id` (`""`: tasks of no service), in id order.
    pub(crate) fn tasks_of_service<'a>(
        &'a self,
        service_id: &str,
    ) -> impl Iterator<Item = &'a Task> + use<'a> {
        self.snapshot().tasks_of_service(service_id)
    }

    /// Every service, in id order.
    pub(crate) fn services(&self) -> impl Iterator<Item = &Service> {
        self.snapshot().services()
    }

    pub(crate) fn node(&self, id: &str) -> Option<&Node> {
        self.snapshot().node(id)
    }

    /// Every node, in id order.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.snapshot().nodes()
    }

    /// The nodes with a manager status, in id order.
    pub(crate) fn managers(&self) -> impl Iterator<Item = &Node> {
        let snapshot = self.snapshot();
        self.managers.iter().filter_map(move |id| snapshot.node(id))
    }

    /// Every network, in id order.
    pub(crate) fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }

    /// The cluster object (the first in id order, as the store lists them).
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.clusters.values().next()
    }

    pub(crate) fn secret(&self, id: &str) -> Option<&Secret> {
        self.secrets.get(id)
    }

    pub(crate) fn config(&self, id: &str) -> Option<&Config> {
        self.configs.get(id)
    }
}

fn non_empty(node_id: String) -> Option<String> {
    (!node_id.is_empty()).then_some(node_id)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use raft_store::{Change, Store, StoreConfig, Transaction};
    use rand::rngs::StdRng;
    use rand::{RngExt as _, SeedableRng as _};
    use shoal_proto::api::{
        Annotations, ClusterSpec, ConfigSpec, ManagerStatus, NetworkSpec, NodeStatus, SecretSpec,
        ServiceSpec, TaskState, TaskStatus,
    };

    use super::*;
    use crate::test_pki as pki;

    const SEED: u64 = 17;
    const TRANSACTIONS: usize = 300;
    const NODE_IDS: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];
    const SERVICE_IDS: [&str; 3] = ["", "s0", "s1"];
    const TASK_STATES: [TaskState; 7] = [
        TaskState::New,
        TaskState::Ready,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Failed,
        TaskState::Shutdown,
        TaskState::Remove,
    ];

    /// A single-member store on a fresh directory, leading.
    pub(crate) async fn leading_store(dir: &std::path::Path) -> Store {
        leading_store_with(dir, |_| {}).await
    }

    /// A single-member store on a fresh directory, leading, with `configure`'s settings.
    pub(crate) async fn leading_store_with(
        dir: &std::path::Path,
        configure: impl FnOnce(&mut StoreConfig),
    ) -> Store {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut config = StoreConfig::new(
            1,
            dir,
            &addr,
            pki::TestPki::new().identity(1),
            pki::data_key(1),
        );
        configure(&mut config);
        let store = Store::open(config).await.unwrap();
        store.serve(listener).unwrap();
        store.bootstrap().await.unwrap();
        store
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
        store
    }

    fn pick<T: Copy>(random: &mut StdRng, from: &[T]) -> T {
        from[random.random_range(0..from.len())]
    }

    fn random_task(random: &mut StdRng, id: String) -> Task {
        let mut status = TaskStatus::default();
        status.set_state(pick(random, &TASK_STATES));
        let mut task = Task {
            id,
            node_id: pick(random, &[&["" as &str][..], &NODE_IDS[..]].concat()).to_owned(),
            service_id: pick(random, &SERVICE_IDS).to_owned(),
            slot: random.random_range(0..3),
            status: Some(status),
            ..Default::default()
        };
        task.set_desired_state(pick(random, &TASK_STATES));
        task
    }

    fn random_node(random: &mut StdRng, id: String) -> Node {
        Node {
            id,
            // Sometimes no status at all: such a node counts as unknown.
            status: (random.random_range(0..4) > 0).then(|| NodeStatus {
                state: random.random_range(0..4),
                ..Default::default()
            }),
            // Sometimes a manager, at one of two addresses.
            manager_status: (random.random_range(0..3) == 0).then(|| ManagerStatus {
                addr: format!("10.0.0.{}:2377", random.random_range(1..3)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn annotations(random: &mut StdRng, name: &str) -> Option<Annotations> {
        Some(Annotations {
            name: name.to_owned(),
            labels: [("v".to_owned(), random.random_range(0..100).to_string())].into(),
            ..Default::default()
        })
    }

    /// A change to one object of `kind` that `store` makes valid now: a create of a new id,
    /// or an update or delete of a stored one at its version.
    fn random_change(random: &mut StdRng, store: &StoreView<'_>, kind: &str) -> Change {
        let stored: Vec<&ObjectRecord> = store.list(kind).collect();
        let id = format!("{kind}{}", random.random_range(0..12));
        let action = random.random_range(0..3);
        match stored.iter().find(|record| record.id == id) {
            None => match kind {
                Task::KIND => objects::create(&random_task(random, id)),
                Node::KIND => objects::create(&random_node(random, id)),
                Service::KIND => objects::create(&Service {
                    spec: Some(ServiceSpec {
                        annotations: annotations(random, &id),
                        ..Default::default()
                    }),
                    id,
                    ..Default::default()
                }),
                Secret::KIND => objects::create(&Secret {
                    spec: Some(SecretSpec {
                        annotations: annotations(random, &id),
                        ..Default::default()
                    }),
                    id,
                    ..Default::default()
                }),
                Network::KIND => objects::create(&Network {
                    spec: Some(NetworkSpec {
                        annotations: annotations(random, &id),
                        ..Default::default()
                    }),
                    id,
                    ..Default::default()
                }),
                Cluster::KIND => objects::create(&Cluster {
                    spec: Some(ClusterSpec {
                        annotations: annotations(random, &id),
                        ..Default::default()
                    }),
                    id,
                    ..Default::default()
                }),
                _ => objects::create(&Config {
                    spec: Some(ConfigSpec {
                        annotations: annotations(random, &id),
                        ..Default::default()
                    }),
                    id,
                    ..Default::default()
                }),
            },
            Some(record) if action == 0 => Change::Delete {
                kind: kind.to_owned(),
                id,
                expected_version: record.version,
            },
            Some(record) => match kind {
                Task::KIND => {
                    let mut task = random_task(random, id);
                    task.meta = objects::decode::<Task>(record).unwrap().meta;
                    objects::update(&task)
                }
                Node::KIND => {
                    let mut node = random_node(random, id);
                    node.meta = objects::decode::<Node>(record).unwrap().meta;
                    objects::update(&node)
                }
                Service::KIND => {
                    let mut service: Service = objects::decode(record).unwrap();
                    service.spec.as_mut().unwrap().annotations = annotations(random, &id);
                    objects::update(&service)
                }
                Secret::KIND => {
                    let mut secret: Secret = objects::decode(record).unwrap();
                    secret.spec.as_mut().unwrap().annotations = annotations(random, &id);
                    objects::update(&secret)
                }
                Network::KIND => {
                    let mut network: Network = objects::decode(record).unwrap();
                    network.spec.as_mut().unwrap().annotations = annotations(random, &id);
                    objects::update(&network)
                }
                Cluster::KIND => {
                    let mut cluster: Cluster = objects::decode(record).unwrap();
                    cluster.spec.as_mut().unwrap().annotations = annotations(random, &id);
                    objects::update(&cluster)
                }
                _ => {
                    let mut config: Config = objects::decode(record).unwrap();
                    config.spec.as_mut().unwrap().annotations = annotations(random, &id);
                    objects::update(&config)
                }
            },
        }
    }

    /// A transaction of one to four changes to distinct objects, mostly tasks.
    fn random_transaction(random: &mut StdRng, store: &StoreView<'_>) -> Transaction {
        let mut changes: Vec<Change> = Vec::new();
        for _ in 0..random.random_range(1..=4) {
            let kind = pick(
                random,
                &[
                    Task::KIND,
                    Task::KIND,
                    Task::KIND,
                    Task::KIND,
                    Node::KIND,
                    Service::KIND,
                    Secret::KIND,
                    Config::KIND,
                    Network::KIND,
                    Cluster::KIND,
                ],
            );
            let change = random_change(random, store, kind);
            if !changes
                .iter()
                .any(|chosen| chosen.kind() == change.kind() && chosen.id() == change.id())
            {
                changes.push(change);
            }
        }
        Transaction::new(changes)
    }

    /// Node ids whose tasks differ between `before` and `after`: what `apply` must report.
    fn nodes_whose_tasks_changed(before: &ClusterView, after: &ClusterView) -> BTreeSet<String> {
        let node_ids = before
            .snapshot()
            .index()
            .nodes_with_tasks()
            .chain(after.snapshot().index().nodes_with_tasks());
        node_ids
            .filter(|node_id| {
                !before
                    .tasks_on_node(node_id)
                    .eq(after.tasks_on_node(node_id))
            })
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_view_matches_a_full_decode_after_random_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let store = leading_store(dir.path()).await;
        let mut random = StdRng::seed_from_u64(SEED);
        let (mut view, applied) = store.local_view(|whole| {
            (
                ClusterView::from_store(whole).unwrap(),
                whole.applied_index(),
            )
        });
        let mut changes = store.watch(applied + 1);
        // Whether each kind of work the index files was there after some step.
        let mut filed = [false; 5];
        for step in 0..TRANSACTIONS {
            let transaction = store.local_view(|whole| random_transaction(&mut random, whole));
            let index = store.write(transaction).await.unwrap();
            let before = view.clone();
            let mut touched = Touched::default();
            loop {
                let entry = changes.next().await.unwrap();
                touched.extend(view.apply(&entry).unwrap());
                if entry.index >= index {
                    break;
                }
            }
            let decoded = store.local_view(|whole| ClusterView::from_store(whole).unwrap());
            let index = view.snapshot().index();
            for (filed, now) in filed.iter_mut().zip([
                index.restart_work().next().is_some(),
                index.waiting_for_node().next().is_some(),
                index.removed_history().next().is_some(),
                index.slots_with_history_over(1).next().is_some(),
                index.unoccupied_slots("s0").next().is_some(),
            ]) {
                *filed |= now;
            }
            assert!(
                view == decoded,
                "seed {SEED}, step {step}: the view differs from a full decode\nview: {view:#?}\ndecoded: {decoded:#?}"
            );
            let changed_nodes = nodes_whose_tasks_changed(&before, &view);
            assert!(
                changed_nodes.is_subset(&touched.task_nodes),
                "seed {SEED}, step {step}: tasks changed on {changed_nodes:?}, touched {:?}",
                touched.task_nodes
            );
            for node in before.nodes().chain(view.nodes()) {
                let id = &node.id;
                if before.node(id) != view.node(id) {
                    assert!(touched.nodes.contains(id), "seed {SEED}, step {step}: {id}");
                }
            }
            if !before.managers().eq(view.managers()) {
                assert!(
                    touched.managers,
                    "seed {SEED}, step {step}: managers changed"
                );
            }
            for id in before.secrets.keys().chain(view.secrets.keys()) {
                if before.secret(id) != view.secret(id) {
                    assert!(
                        touched.secrets.contains(id),
                        "seed {SEED}, step {step}: {id}"
                    );
                }
            }
            for id in before.configs.keys().chain(view.configs.keys()) {
                if before.config(id) != view.config(id) {
                    assert!(
                        touched.configs.contains(id),
                        "seed {SEED}, step {step}: {id}"
                    );
                }
            }
        }
        // The run reached every index: tasks on several nodes and in several states.
        let index = view.snapshot().index();
        assert!(index.nodes_with_tasks().count() > 1 && index.services_with_tasks().count() > 1);
        assert!(
            filed.iter().all(|filed| *filed),
            "not every kind of work was filed at some step: {filed:?}"
        );
        assert!(
            view.services().count() > 0 && view.nodes().count() > 0 && !view.secrets.is_empty()
        );
        assert!(!view.managers.is_empty() && view.managers.len() < view.nodes().count());
    }

    /// The record the store would hold for `object` at `version`.
    pub(crate) fn record<T: ClusterObject>(object: &T, version: u64) -> ObjectRecord {
        let Change::Create {
            kind,
            id,
            name,
            data,
        } = objects::create(object)
        else {
            unreachable!("create makes a Create");
        };
        ObjectRecord {
            kind,
            id,
            name,
            version,
            created_at: std::time::SystemTime::UNIX_EPOCH,
            updated_at: std::time::SystemTime::UNIX_EPOCH,
            data,
        }
    }

    fn task_on(id: &str, node_id: &str, service_id: &str, desired: TaskState) -> Task {
        let mut task = Task {
            id: id.to_owned(),
            node_id: node_id.to_owned(),
            service_id: service_id.to_owned(),
            ..Default::default()
        };
        task.set_desired_state(desired);
        task
    }

    fn ids<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<&'a str> {
        tasks.map(|task| task.id.as_str()).collect()
    }

    #[test]
    fn a_task_moved_between_nodes_touches_both_and_the_indexes_follow_it() {
        let mut view = ClusterView::default();
        let first = task_on("t1", "n1", "s1", TaskState::Running);
        let touched = view
            .apply(&CommittedChanges {
                index: 5,
                changes: vec![
                    ChangeEvent::Created(record(&first, 5)),
                    ChangeEvent::Created(record(&task_on("t2", "", "s1", TaskState::Running), 5)),
                ],
            })
            .unwrap();
        assert_eq!(touched.task_nodes, BTreeSet::from(["n1".to_owned()]));
        assert_eq!(touched.kinds, BTreeSet::from(["task".to_owned()]));
        assert_eq!(ids(view.tasks_of_service("s1")), ["t1", "t2"]);
        let moved = task_on("t1", "n2", "s1", TaskState::Shutdown);
        let touched = view
            .apply(&CommittedChanges {
                index: 6,
                changes: vec![ChangeEvent::Updated {
                    old: record(&first, 5),
                    new: record(&moved, 6),
                }],
            })
            .unwrap();
        assert_eq!(
            touched.task_nodes,
            BTreeSet::from(["n1".to_owned(), "n2".to_owned()])
        );
        assert_eq!(ids(view.tasks_on_node("n1")), Vec::<&str>::new());
        assert_eq!(ids(view.tasks_on_node("n2")), ["t1"]);
        assert_eq!(
            view.task("t1")
                .unwrap()
                .meta
                .as_ref()
                .unwrap()
                .version
                .unwrap()
                .index,
            6
        );
        let touched = view
            .apply(&CommittedChanges {
                index: 7,
                changes: vec![ChangeEvent::Deleted(record(&moved, 6))],
            })
            .unwrap();
        assert_eq!(touched.task_nodes, BTreeSet::from(["n2".to_owned()]));
        assert_eq!(view.snapshot().index().nodes_with_tasks().count(), 0);
        assert_eq!(ids(view.tasks()), ["t2"]);
    }

    #[test]
    fn an_undecodable_record_is_an_error_naming_it() {
        let mut broken = record(&task_on("t1", "n1", "", TaskState::Running), 3);
        broken.data = vec![0xff, 0xff, 0xff].into();
        let error = ClusterView::default()
            .apply(&CommittedChanges {
                index: 3,
                changes: vec![ChangeEvent::Created(broken)],
            })
            .unwrap_err();
        assert!(error.to_string().contains("task t1"), "{error}");
    }
}
