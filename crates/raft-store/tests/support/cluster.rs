//! In-process test clusters: every member is a real `Store` serving gRPC over mutual TLS on its
//! own loopback port, with its own data directory. Members can be stopped, restarted and cut off.

use std::collections::BTreeMap;
use std::time::Duration;

use raft_store::{
    LinkFilter, MemberId, ObjectRecord, ReadConsistency, Store, StoreConfig, StoreStatus,
    Transaction,
};
use tempfile::TempDir;

use super::pki::{TestPki, data_key};

pub struct TestMember {
    pub addr: String,
    pub links: LinkFilter,
    pub store: Option<Store>,
}

pub struct TestCluster {
    pub dir: TempDir,
    pub pki: TestPki,
    pub members: BTreeMap<MemberId, TestMember>,
    tune: fn(&mut StoreConfig),
}

pub fn no_tuning(_: &mut StoreConfig) {}

async fn free_listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port")
}

impl TestCluster {
    /// Starts `count` members; member 1 founds the cluster with all of them as voters.
    pub async fn start(count: u64) -> Self {
        Self::start_with(count, no_tuning).await
    }

    pub async fn start_with(count: u64, tune: fn(&mut StoreConfig)) -> Self {
        let mut cluster = TestCluster {
            dir: tempfile::tempdir().expect("a temporary directory"),
            pki: TestPki::new(),
            members: BTreeMap::new(),
            tune,
        };
        for id in 1..=count {
            let listener = free_listener().await;
            let addr = listener.local_addr().expect("listener address").to_string();
            cluster.members.insert(
                id,
                TestMember {
                    addr,
                    links: LinkFilter::default(),
                    store: None,
                },
            );
            cluster.open_on(id, listener).await;
        }
        let voters = cluster
            .members
            .iter()
            .map(|(id, member)| (*id, member.addr.clone()))
            .collect();
        cluster
            .store(1)
            .bootstrap_with(voters)
            .await
            .expect("bootstrap");
        cluster.leader().await;
        cluster
    }

    pub fn config(&self, id: MemberId) -> StoreConfig {
        let member = &self.members[&id];
        let mut config = StoreConfig::new(
            id,
            self.dir.path().join(format!("member-{id}")),
            &member.addr,
            self.pki.identity(id),
            data_key(id),
        );
        config.links = member.links.clone();
        (self.tune)(&mut config);
        config
    }

    async fn open_on(&mut self, id: MemberId, listener: tokio::net::TcpListener) {
        let store = Store::open(self.config(id))
            .await
            .expect("opening a member");
        store.serve(listener).expect("serving");
        self.members.get_mut(&id).expect("known member").store = Some(store);
    }

    pub fn store(&self, id: MemberId) -> &Store {
        self.members[&id]
            .store
            .as_ref()
            .unwrap_or_else(|| panic!("member {id} is stopped"))
    }

    pub fn running(&self) -> impl Iterator<Item = (MemberId, &Store)> {
        self.members
            .iter()
            .filter_map(|(id, member)| member.store.as_ref().map(|store| (*id, store)))
    }

    /// Stops a member, as a crash would (everything it acknowledged is already on disk).
    pub async fn stop(&mut self, id: MemberId) {
        let store = self.members.get_mut(&id).and_then(|m| m.store.take());
        if let Some(store) = store {
            store.shutdown().await.expect("shutting a member down");
        }
    }

    pub async fn restart(&mut self, id: MemberId) {
        let addr = self.members[&id].addr.clone();
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .expect("re-binding a member's port");
        self.open_on(id, listener).await;
    }

    /// Cuts every link between `side` and the other members, both ways.
    pub fn partition(&self, side: &[MemberId]) {
        for (id, member) in &self.members {
            for other in self.members.keys() {
                if side.contains(id) != side.contains(other) {
                    member.links.cut(*other);
                }
            }
        }
    }

    pub fn heal(&self) {
        for member in self.members.values() {
            member.links.heal_all();
        }
    }

    /// Waits until the running members agree on one leader, and returns it.
    pub async fn leader(&self) -> MemberId {
        self.leader_among(&self.running().map(|(id, _)| id).collect::<Vec<_>>())
            .await
    }

    pub async fn leader_among(&self, ids: &[MemberId]) -> MemberId {
        poll(
            Duration::from_secs(15),
            "the members to agree on a leader",
            || {
                let leaders: Vec<Option<MemberId>> = ids
                    .iter()
                    .map(|id| self.store(*id).status().leader)
                    .collect();
                match leaders.first() {
                    Some(Some(leader))
                        if ids.contains(leader)
                            && leaders.iter().all(|other| *other == Some(*leader)) =>
                    {
                        Some(*leader)
                    }
                    _ => None,
                }
            },
        )
        .await
    }

    pub fn status(&self, id: MemberId) -> StoreStatus {
        self.store(id).status()
    }

    /// Waits until every running member has applied `index`.
    pub async fn wait_applied(&self, index: u64) {
        poll(
            Duration::from_secs(15),
            "every member to apply the index",
            || {
                self.running()
                    .all(|(_, store)| store.status().last_applied >= index)
                    .then_some(())
            },
        )
        .await
    }

    pub fn local_objects(&self, id: MemberId, kind: &str) -> Vec<ObjectRecord> {
        self.store(id)
            .local_view(|view| view.list(kind).cloned().collect())
    }

    pub async fn create(&self, via: MemberId, kind: &str, id: &str) -> u64 {
        self.store(via)
            .write(Transaction::create(kind, id, "", id.as_bytes().to_vec()))
            .await
            .unwrap_or_else(|error| panic!("creating {kind} {id} via member {via}: {error}"))
    }

    pub async fn linearizable_ids(&self, via: MemberId, kind: &str) -> Vec<String> {
        self.store(via)
            .list(kind, ReadConsistency::Linearizable)
            .await
            .expect("a linearizable read")
            .into_iter()
            .map(|record| record.id)
            .collect()
    }
}

/// Polls `check` every 10 ms until it yields a value, failing the test after `timeout`.
pub async fn poll<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
