//! The store handle that managers use: open, serve, write, read, watch, change membership.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{
    ClientWriteError, Fatal, InitializeError, LinearizableReadError, RaftError,
};
use openraft::raft::ReadPolicy;
use openraft::type_config::alias::WatchReceiverOf;
use openraft::{BasicNode, ChangeMembers, EntryPayload, Membership, SnapshotPolicy};
use shoal_metrics::{Counter, RaftMetrics};
use shoal_proto::raft::raft_client::RaftClient;
use shoal_proto::raft::raft_server::RaftServer;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::data_key::DataKey;
use crate::error::StoreError;
use crate::fence::{self, Fence};
use crate::log_store::LogStore;
use crate::network::{LinkFilter, MAX_MESSAGE_BYTES, NetworkFactory, Peers, describe_status};
use crate::object_store::ObjectStore;
use crate::server::{RaftCallGuard, RaftService};
use crate::state_machine::{self, StateMachine};
use crate::tls::TlsIdentity;
use crate::types::raft_types::{SnapshotMeta, StoredMembership};
use crate::types::{
    Change, MemberId, ObjectRecord, Transaction, TxnOutcome, TxnRejection, TypeConfig,
};
use crate::watch::Watch;
use crate::wire::{self, MembershipCall, ProposeCall, ReadCall};

pub(crate) type RaftHandle = openraft::Raft<TypeConfig, StateMachine>;

const LOG_FILE: &str = "raft-log.redb";
/// How long a caller waits between attempts while a leader is being elected.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// How a member is set up. [`StoreConfig::new`] gives Swarm's defaults, tuned for fail-over in
/// well under two seconds.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub member_id: MemberId,
    pub data_dir: PathBuf,
    /// The `host:port` other members reach this one at.
    pub advertise_addr: String,
    pub tls: TlsIdentity,
    /// Seals the log entries and snapshots on disk; the member's data must always be opened
    /// with the key it was written with.
    pub data_key: DataKey,
    /// Larger transactions are refused before they are proposed. Swarm's limit is 1.5 MiB.
    pub max_proposal_bytes: usize,
    /// A snapshot a peer installs is held in memory whole: a larger one is refused.
    pub max_snapshot_bytes: u64,
    /// A snapshot is built every this many log entries, and the log behind it is purged.
    pub snapshot_interval: u64,
    /// Entries kept behind a snapshot, so a briefly lagging follower catches up from the log.
    pub entries_kept_after_snapshot: u64,
    /// The log's entries are also kept in memory until a snapshot covers them; past this many
    /// bytes a snapshot is built early, whatever `snapshot_interval` says.
    pub log_memory_budget: usize,
    pub heartbeat_interval: Duration,
    /// The shortest election timeout; each member draws its timeout from this to twice this.
    pub election_timeout: Duration,
    /// How long a write or linearizable read waits for a leader before giving up.
    pub request_timeout: Duration,
    /// Links to cut for partition tests; empty in production.
    pub links: LinkFilter,
    /// Where the member records its append and commit latencies, snapshot sizes and leader
    /// changes: the daemon's families, or handles registered nowhere by default.
    pub metrics: RaftMetrics,
}

impl StoreConfig {
    pub fn new(
        member_id: MemberId,
        data_dir: impl Into<PathBuf>,
        advertise_addr: impl Into<String>,
        tls: TlsIdentity,
        data_key: DataKey,
    ) -> Self {
        StoreConfig {
            member_id,
            data_dir: data_dir.into(),
            advertise_addr: advertise_addr.into(),
            tls,
            data_key,
            max_proposal_bytes: 1536 * 1024,
            max_snapshot_bytes: 4 << 30,
            snapshot_interval: 10_000,
            entries_kept_after_snapshot: 1_000,
            log_memory_budget: 64 << 20,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(400),
            request_timeout: Duration::from_secs(5),
            links: LinkFilter::default(),
            metrics: RaftMetrics::default(),
        }
    }

    fn raft_config(&self) -> Result<openraft::Config, StoreError> {
        let millis = |duration: Duration| duration.as_millis() as u64;
        openraft::Config {
            cluster_name: "shoal".to_owned(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout),
            election_timeout_max: millis(self.election_timeout) * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_interval),
            max_in_snapshot_log_to_keep: self.entries_kept_after_snapshot,
            max_payload_entries: 64,
            install_snapshot_timeout: 10_000,
            enable_pre_vote: Some(true),
            // The committed index is saved without an fsync and the state machine lives in
            // memory, so a restarted leader must not resume leading from its saved vote: it
            // would serve reads at a stale commit index. It re-learns the index in an election.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .map_err(|error| StoreError::Raft(format!("invalid raft settings: {error}")))
    }
}

/// Whether a read must reflect every write acknowledged anywhere in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Confirms the leader's commit index with a quorum first, then reads locally.
    Linearizable,
    /// Reads this member's state as it is; may lag the leader.
    Local,
}

/// A consistent read-only view of the whole store at one applied index.
pub struct StoreView<'a> {
    objects: &'a ObjectStore,
    applied_index: u64,
}

impl StoreView<'_> {
    pub fn get(&self, kind: &str, id: &str) -> Option<&ObjectRecord> {
        self.objects.get(kind, id)
    }

    pub fn get_by_name(&self, kind: &str, name: &str) -> Option<&ObjectRecord> {
        self.objects.get_by_name(kind, name)
    }

    pub fn list(&self, kind: &str) -> impl Iterator<Item = &ObjectRecord> {
        self.objects.list(kind)
    }

    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// The log index this view reflects; watch from one past it to see every later change.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }
}

/// A member's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    pub member_id: MemberId,
    pub leader: Option<MemberId>,
    pub is_leader: bool,
    pub term: u64,
    /// The index of the last entry in this member's log.
    pub last_log_index: u64,
    /// The index of the last entry this member knows to be committed.
    pub committed: u64,
    pub last_applied: u64,
    /// The index the newest snapshot covers, and the index up to which the log was purged.
    pub snapshot_index: u64,
    pub purged_index: u64,
    /// Voting members and their addresses.
    pub voters: BTreeMap<MemberId, String>,
    /// Members that receive the log but do not vote yet.
    pub learners: BTreeMap<MemberId, String>,
    /// Voters the leader has not heard from within an election timeout; known on the leader only.
    pub unreachable: BTreeSet<MemberId>,
}

pub(crate) struct Inner {
    pub(crate) raft: RaftHandle,
    log: LogStore,
    state: Arc<state_machine::Shared>,
    peers: Arc<Peers>,
    pub(crate) config: StoreConfig,
    /// Membership changes on the leader, one at a time: openraft refuses a change while the
    /// previous one is uncommitted, and two managers joining at once must both get in.
    membership_changes: tokio::sync::Mutex<()>,
    /// When a leader's append (entries or a heartbeat) last reached this member.
    pub(crate) leader_heard: Mutex<Option<Instant>>,
    /// Where Raft's own tasks run; last, so that it stops after everything above is dropped.
    _runtime: RaftRuntime,
}

/// The runtime Raft's tasks (its core, heartbeats, replication, the state machine's applies
/// and their connections) run on: a thread of their own. On the caller's runtime they queued
/// behind the manager's other work; at 5,000 nodes a busy leader's heartbeats to its followers
/// came later than an election timeout, and it lost its leadership in the middle of a create.
/// The operating system shares the cores between this thread and the others fairly, however
/// many tasks the others have queued.
struct RaftRuntime(Option<tokio::runtime::Runtime>);

impl RaftRuntime {
    fn start(member: MemberId) -> Result<RaftRuntime, StoreError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("raft-{member}"))
            .enable_all()
            .build()
            .map(|runtime| RaftRuntime(Some(runtime)))
            .map_err(|error| StoreError::Raft(format!("starting Raft's runtime: {error}")))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        // The last handle to a store may go inside another runtime, where waiting is refused.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// One member of the cluster store.
pub struct Store {
    inner: Arc<Inner>,
    server: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl Store {
    /// Opens the member's data directory (creating it when new) and starts Raft. Call
    /// [`Store::serve`] to answer peers, and [`Store::bootstrap`] once to found a new cluster.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|error| StoreError::io(&config.data_dir, error))?;
        // The snapshot is only read, and the log is opened for writing only once it reads whole:
        // in this order, a member refused for either file has changed neither.
        let state_machine =
            StateMachine::open(&config.data_dir, &config.data_key, &config.metrics)?;
        let log = LogStore::open(
            &config.data_dir.join(LOG_FILE),
            &config.data_key,
            &config.metrics,
        )?;
        let state = Arc::clone(&state_machine.shared);
        let fence = Arc::new(Fence::open(&config.data_dir)?);
        let peers = Arc::new(Peers::new(
            config.tls.client_config(),
            config.links.clone(),
            fence,
        ));
        let network = NetworkFactory {
            peers: Arc::clone(&peers),
        };
        let runtime = RaftRuntime::start(config.member_id)?;
        let raft_config = Arc::new(config.raft_config()?);
        let (member_id, raft_log) = (config.member_id, log.clone());
        let started = runtime
            .handle()
            .ok_or_else(|| StoreError::Raft("Raft's runtime is gone".to_owned()))?
            .spawn(async move {
                openraft::Raft::new(member_id, raft_config, network, raft_log, state_machine).await
            })
            .await;
        let raft = started
            .map_err(|error| StoreError::Raft(format!("starting Raft: {error}")))?
            .map_err(|error| StoreError::Raft(error.to_string()))?;
        let store = Store {
            inner: Arc::new(Inner {
                raft,
                log,
                state,
                peers,
                config,
                membership_changes: tokio::sync::Mutex::new(()),
                leader_heard: Mutex::new(None),
                _runtime: runtime,
            }),
            server: Mutex::new(None),
        };
        tokio::spawn(snapshot_when_the_log_outgrows_its_budget(Arc::downgrade(
            &store.inner,
        )));
        tokio::spawn(count_leader_changes(
            store.inner.raft.metrics(),
            store.inner.config.metrics.leader_changes.clone(),
        ));
        Ok(store)
    }

    /// The gRPC service peers call, for a server that hosts other services too. Every caller
    /// the server's TLS lets in may make every call.
    pub fn raft_service(&self) -> RaftServer<impl shoal_proto::raft::raft_server::Raft> {
        self.service(None)
    }

    /// The gRPC service peers call, with `guard` deciding who may make which call.
    pub fn guarded_raft_service(
        &self,
        guard: RaftCallGuard,
    ) -> RaftServer<impl shoal_proto::raft::raft_server::Raft> {
        self.service(Some(guard))
    }

    fn service(
        &self,
        guard: Option<RaftCallGuard>,
    ) -> RaftServer<impl shoal_proto::raft::raft_server::Raft> {
        RaftServer::new(RaftService {
            inner: Arc::clone(&self.inner),
            guard,
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Serves the Raft service on `listener` with mutual TLS until [`Store::shutdown`].
    pub fn serve(&self, listener: tokio::net::TcpListener) -> Result<(), StoreError> {
        let mut server = tonic::transport::Server::builder()
            .tls_config(self.inner.config.tls.server_config())
            .map_err(|error| StoreError::Tls(error.to_string()))?;
        let router = server.add_service(self.raft_service());
        let (stop, stopped) = oneshot::channel::<()>();
        // Nagle's algorithm would hold small replies back until the peer's delayed ACK (40 ms):
        // a fixed tax on every commit.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let member = self.inner.config.member_id;
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!(member, %error, "the raft server stopped");
            }
        });
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, task));
        Ok(())
    }

    /// Founds a new single-member cluster with this member as its voter. Does nothing when the
    /// member already belongs to a cluster.
    pub async fn bootstrap(&self) -> Result<(), StoreError> {
        let config = &self.inner.config;
        let members = BTreeMap::from([(config.member_id, config.advertise_addr.clone())]);
        self.bootstrap_with(members).await
    }

    /// Founds a new cluster whose voters are `members` (id to address), this member among them.
    /// The others must be new and serving; they learn the membership from the leader.
    pub async fn bootstrap_with(
        &self,
        members: BTreeMap<MemberId, String>,
    ) -> Result<(), StoreError> {
        let members: BTreeMap<MemberId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        match self.inner.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(error) => Err(StoreError::Raft(error.to_string())),
        }
    }

    /// Commits `txn` through the leader, forwarding when this member is a follower. Returns the
    /// log index it committed at, which is the new version of every object it changed.
    pub async fn write(&self, txn: Transaction) -> Result<u64, StoreError> {
        self.inner.write(txn).await
    }

    /// Commits `txn` only while this member leads in `term`, and never forwards it: for what a
    /// leader decides from what it alone holds (the dispatcher's sessions), which a deposed
    /// leader must not hand to its successor, not even in a write it retries until a partition
    /// heals. `NotLeader` when this member does not lead in `term`, or stops leading before the
    /// write commits.
    pub async fn write_in_term(&self, term: u64, txn: Transaction) -> Result<u64, StoreError> {
        if self.leading_term() != Some(term) {
            return Err(StoreError::NotLeader {
                member: self.inner.member_id(),
            });
        }
        self.inner.write_as_leader(txn).await
    }

    /// The largest transaction [`Store::write`] accepts, in bytes.
    pub fn max_proposal_bytes(&self) -> usize {
        self.inner.config.max_proposal_bytes
    }

    /// Packs `groups` of changes into transactions this store accepts, as
    /// [`Transaction::pack`] does under [`Store::max_proposal_bytes`].
    pub fn pack(
        &self,
        groups: impl IntoIterator<Item = Vec<Change>>,
    ) -> Result<Vec<Transaction>, StoreError> {
        Transaction::pack(groups, self.max_proposal_bytes())
    }

    /// Returns once this member has applied every write acknowledged before the call, and the
    /// index it has applied.
    pub async fn read_barrier(&self) -> Result<u64, StoreError> {
        self.inner.read_barrier().await
    }

    /// Returns once every write proposed before the call, through this member or any other,
    /// has either been applied here or can never be applied, even one whose caller was told
    /// its outcome is unknown (a leader that lost its quorum keeps such a write in its log and
    /// may commit it once the quorum is back). Returns the index this member has applied.
    ///
    /// It commits an entry with no changes through the leader: an entry commits only together
    /// with every entry before it in the leader's log, and entries that are not before it are
    /// gone for good. The empty transaction applies as a rejection that changes nothing, which
    /// is how its commit is told apart from a failure.
    pub async fn write_barrier(&self) -> Result<u64, StoreError> {
        match self.inner.write(Transaction::new(Vec::new())).await {
            Ok(_) | Err(StoreError::Rejected(TxnRejection::Empty)) => {}
            Err(error) => return Err(error),
        }
        self.inner.read_barrier().await
    }

    /// Runs `read` over a consistent view of the store.
    pub async fn view<R>(
        &self,
        consistency: ReadConsistency,
        read: impl FnOnce(&StoreView<'_>) -> R,
    ) -> Result<R, StoreError> {
        if consistency == ReadConsistency::Linearizable {
            self.inner.read_barrier().await?;
        }
        Ok(self.local_view(read))
    }

    /// Runs `read` over this member's state as it is now, without asking the leader.
    pub fn local_view<R>(&self, read: impl FnOnce(&StoreView<'_>) -> R) -> R {
        let applied = self.inner.state.read();
        let view = StoreView {
            objects: &applied.objects,
            applied_index: applied.last_applied.as_ref().map_or(0, |id| id.index()),
        };
        read(&view)
    }

    pub async fn get(
        &self,
        kind: &str,
        id: &str,
        consistency: ReadConsistency,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        self.view(consistency, |view| view.get(kind, id).cloned())
            .await
    }

    pub async fn list(
        &self,
        kind: &str,
        consistency: ReadConsistency,
    ) -> Result<Vec<ObjectRecord>, StoreError> {
        self.view(consistency, |view| view.list(kind).cloned().collect())
            .await
    }

    /// Committed changes from log index `from_index` on, in order.
    pub fn watch(&self, from_index: u64) -> Watch {
        self.inner.state.watch.subscribe(from_index)
    }

    /// Committed changes from the first one not yet published to watchers on. Unlike a watch
    /// from the applied index, it skips nothing: entries are applied before their changes are
    /// published, so a reader that has caught up with every published change and then waits on
    /// this watch misses none.
    pub fn watch_unpublished(&self) -> Watch {
        self.inner.state.watch.subscribe_after_published()
    }

    /// Calls to other members show `tls` from now on (a renewed certificate, new roots). The
    /// member's own server is its owner's to update.
    pub fn replace_tls(&self, tls: &TlsIdentity) {
        self.inner.peers.replace_tls(tls.client_config());
    }

    /// Adds a member that receives the log without voting, and waits until it has caught up.
    pub async fn add_learner(
        &self,
        member: MemberId,
        addr: impl Into<String>,
    ) -> Result<(), StoreError> {
        let addr = addr.into();
        self.inner
            .change_membership(MembershipCall::AddLearner { member, addr })
            .await
    }

    /// Makes a learner a voter.
    pub async fn promote(&self, member: MemberId) -> Result<(), StoreError> {
        self.inner
            .change_membership(MembershipCall::Promote { member })
            .await
    }

    /// Removes a voter or learner. Refused when the voters left could not form a quorum.
    pub async fn remove_member(&self, member: MemberId) -> Result<(), StoreError> {
        self.inner
            .change_membership(MembershipCall::Remove { member })
            .await
    }

    pub fn status(&self) -> StoreStatus {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        let leader = self.live_leader(&metrics);
        let membership = metrics.membership_config.membership();
        let voter_ids: BTreeSet<MemberId> = membership.voter_ids().collect();
        let (mut voters, mut learners) = (BTreeMap::new(), BTreeMap::new());
        for (id, node) in membership.nodes() {
            let group = if voter_ids.contains(id) {
                &mut voters
            } else {
                &mut learners
            };
            group.insert(*id, node.addr.clone());
        }
        StoreStatus {
            member_id: self.inner.config.member_id,
            leader,
            is_leader: leader == Some(self.inner.config.member_id),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed: metrics.local_committed.as_ref().map_or(0, |id| id.index()),
            last_applied: metrics.last_applied.as_ref().map_or(0, |id| id.index()),
            snapshot_index: metrics.snapshot.as_ref().map_or(0, |id| id.index()),
            purged_index: metrics.purged.as_ref().map_or(0, |id| id.index()),
            voters,
            learners,
            unreachable: self.inner.unreachable_voters(&metrics),
        }
    }

    /// The term this member leads in, if it leads: what [`Store::status`] says in `is_leader`
    /// and `term`, without copying the metrics or building the membership's maps. A leader
    /// asks on every heartbeat it answers.
    pub fn leading_term(&self) -> Option<u64> {
        let (leader, term) = self.leadership();
        (leader == Some(self.inner.config.member_id)).then_some(term)
    }

    /// The live leader ([`Store::live_leader`]) and the current term, read in place.
    fn leadership(&self) -> (Option<MemberId>, u64) {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        (self.live_leader(&metrics), metrics.current_term)
    }

    /// The leader Raft knows of. Raft keeps its last metrics once it has stopped, and a member
    /// whose log writer has failed is about to stop: neither leads anything.
    fn live_leader(&self, metrics: &openraft::RaftMetrics<TypeConfig>) -> Option<MemberId> {
        metrics
            .current_leader
            .filter(|_| metrics.running_state.is_ok() && self.inner.log.writer_failure().is_none())
    }

    /// Why this member's Raft stopped for good, if it did: a failed write to its log or state
    /// machine. Such a member neither leads nor votes until its process restarts and reopens
    /// its data; `None` while it runs, and after an orderly [`Store::shutdown`].
    pub fn fatal_error(&self) -> Option<String> {
        let metrics = self.inner.raft.metrics().borrow_watched().clone();
        match &metrics.running_state {
            Ok(()) | Err(Fatal::Stopped) => None,
            Err(fatal) => Some(fatal.to_string()),
        }
        .or_else(|| self.inner.log.writer_failure())
    }

    #[cfg(test)]
    pub(crate) fn log(&self) -> &LogStore {
        &self.inner.log
    }

    /// Waits until some member is leader, and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<MemberId, StoreError> {
        let mut metrics = self.inner.raft.metrics();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                {
                    let now = metrics.borrow_watched();
                    // Right after a restart the leader comes from the saved vote and may no
                    // longer be a member; only a voter of the current membership counts.
                    if let Some(leader) = now.current_leader
                        && now
                            .membership_config
                            .membership()
                            .voter_ids()
                            .any(|v| v == leader)
                    {
                        return Ok(leader);
                    }
                }
                if metrics.changed().await.is_err() {
                    return Err(StoreError::ShuttingDown);
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err(StoreError::NoQuorum {
                detail: format!("no leader was elected within {timeout:?}"),
            })
        })
    }

    /// Whether no member is known to lead, or this member follows one it has heard nothing
    /// from for an election timeout: most likely dead, with an election to follow. The leader
    /// itself is never gone.
    pub fn leader_seems_gone(&self) -> bool {
        let (leader, _) = self.leadership();
        if leader == Some(self.inner.config.member_id) {
            return false;
        }
        let heard = *self
            .inner
            .leader_heard
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        leader.is_none()
            || heard.is_none_or(|heard| heard.elapsed() >= self.inner.config.election_timeout)
    }

    /// Waits up to `timeout` until a leader that is not gone ([`Store::leader_seems_gone`]) is
    /// known; whether one is.
    pub async fn wait_for_live_leader(&self, timeout: Duration) -> bool {
        let mut metrics = self.inner.raft.metrics();
        let deadline = Instant::now() + timeout;
        while self.leader_seems_gone() {
            if Instant::now() >= deadline {
                return false;
            }
            // A new leader shows in the metrics; a known one's next heartbeat does not.
            let _ = tokio::time::timeout_at(
                deadline.min(Instant::now() + self.inner.config.heartbeat_interval),
                metrics.changed(),
            )
            .await;
        }
        true
    }

    /// Builds a snapshot now and purges the log behind it, whatever the interval says.
    pub async fn snapshot_now(&self) -> Result<(), StoreError> {
        let raft = &self.inner.raft;
        let before = raft.metrics().borrow_watched().snapshot;
        raft.trigger()
            .snapshot()
            .await
            .map_err(|error| StoreError::Raft(error.to_string()))?;
        let mut metrics = raft.metrics();
        tokio::time::timeout(self.inner.config.request_timeout, async {
            while metrics.borrow_watched().snapshot == before {
                if metrics.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .map_err(|_| StoreError::Raft("the snapshot was not built in time".to_owned()))
    }

    /// Stops serving and stops Raft, and closes the log file, so that the member can be opened
    /// again at once even while other holders of this handle wind down (their calls fail from
    /// now on). Every acknowledged write is already on disk.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, task)) = server {
            let _ = stop.send(());
            let _ = task.await;
        }
        let stopped = self
            .inner
            .raft
            .shutdown()
            .await
            .map_err(|error| StoreError::Raft(error.to_string()));
        // Closes the log file now rather than when openraft's last aborted task lets go of it,
        // so the member can be reopened at once.
        self.inner.log.close();
        stopped
    }
}

impl Inner {
    fn member_id(&self) -> MemberId {
        self.config.member_id
    }

    pub(crate) fn fence(&self) -> &Fence {
        &self.peers.fence
    }

    /// Whether this member holds no state at all yet: no vote, no log, no snapshot.
    pub(crate) fn holds_no_state(&self) -> bool {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics.current_term == 0 && metrics.last_log_index.is_none() && metrics.snapshot.is_none()
    }

    pub(crate) fn list_local(&self, kind: &str) -> Vec<ObjectRecord> {
        self.state.read().objects.list(kind).cloned().collect()
    }

    fn leader(&self) -> Option<(MemberId, String)> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let leader = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .clone();
        Some((leader, node.addr))
    }

    fn no_leader(&self) -> StoreError {
        StoreError::NoQuorum {
            detail: format!(
                "member {} could not reach a leader within {:?}",
                self.member_id(),
                self.config.request_timeout
            ),
        }
    }

    /// Runs `attempt` until it succeeds, fails for a reason other than a missing or moving leader,
    /// or the request timeout passes.
    async fn retry_until_leader<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(Instant) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            match attempt(deadline).await {
                Err(StoreError::NotLeader { .. } | StoreError::Unreachable { .. })
                    if Instant::now() + RETRY_PAUSE < deadline =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(StoreError::NotLeader { .. } | StoreError::Unreachable { .. }) => {
                    return Err(self.no_leader());
                }
                other => return other,
            }
        }
    }

    /// Refuses a transaction larger than the configured limit, wherever it was proposed.
    fn check_proposal_size(&self, txn: &Transaction) -> Result<(), StoreError> {
        let size = txn.proposal_size()?;
        if size > self.config.max_proposal_bytes {
            return Err(StoreError::ProposalTooLarge {
                size,
                limit: self.config.max_proposal_bytes,
            });
        }
        Ok(())
    }

    pub(crate) async fn write(&self, mut txn: Transaction) -> Result<u64, StoreError> {
        self.fence().check()?;
        txn.proposed_at.get_or_insert_with(SystemTime::now);
        self.check_proposal_size(&txn)?;
        self.retry_until_leader(|deadline| {
            let txn = txn.clone();
            async move {
                match self.leader() {
                    Some((leader, _)) if leader == self.member_id() => {
                        self.commit_as_leader(txn, deadline).await
                    }
                    Some((leader, addr)) => self.forward_write(leader, &addr, txn, deadline).await,
                    None => Err(StoreError::NotLeader {
                        member: self.member_id(),
                    }),
                }
            }
        })
        .await
    }

    /// Commits a forwarded write; never forwards again. The sender checked the size too, but
    /// the leader is the one that must not be flooded, so it checks again.
    pub(crate) async fn write_as_leader(&self, mut txn: Transaction) -> Result<u64, StoreError> {
        self.fence().check()?;
        txn.proposed_at.get_or_insert_with(SystemTime::now);
        self.check_proposal_size(&txn)?;
        let deadline = Instant::now() + self.config.request_timeout;
        self.commit_as_leader(txn, deadline).await
    }

    async fn commit_as_leader(
        &self,
        txn: Transaction,
        deadline: Instant,
    ) -> Result<u64, StoreError> {
        let proposed = std::time::Instant::now();
        let written = tokio::time::timeout_at(deadline, self.raft.client_write(txn))
            .await
            .map_err(|_| StoreError::NoQuorum {
                detail: format!(
                    "leader {} could not commit within {:?}; its outcome is unknown until a majority is reachable",
                    self.member_id(),
                    self.config.request_timeout
                ),
            })?;
        match written {
            Ok(response) => match response.data {
                TxnOutcome::Committed { index } => {
                    self.config
                        .metrics
                        .commit_duration
                        .observe(proposed.elapsed().as_secs_f64());
                    Ok(index)
                }
                TxnOutcome::Rejected(rejection) => Err(rejection.into()),
            },
            Err(RaftError::APIError(
                ClientWriteError::ForwardToLeader(_) | ClientWriteError::LogEntryDiscarded(_),
            )) => Err(StoreError::NotLeader {
                member: self.member_id(),
            }),
            Err(error) => Err(StoreError::Raft(error.to_string())),
        }
    }

    async fn forward_write(
        &self,
        leader: MemberId,
        addr: &str,
        txn: Transaction,
        deadline: Instant,
    ) -> Result<u64, StoreError> {
        let call = self.fence().tag(wire::encode(&ProposeCall {
            txn,
            forwarded: true,
        }));
        self.call_leader(leader, addr, deadline, |mut client| async move {
            client.propose(call).await
        })
        .await
    }

    /// Sends one call to the leader at `addr` and decodes its reply, within `deadline`.
    async fn call_leader<T, F, Fut>(
        &self,
        leader: MemberId,
        addr: &str,
        deadline: Instant,
        send: F,
    ) -> Result<T, StoreError>
    where
        T: serde::de::DeserializeOwned,
        F: FnOnce(RaftClient<Channel>) -> Fut,
        Fut: std::future::Future<
                Output = Result<tonic::Response<shoal_proto::raft::RaftMessage>, tonic::Status>,
            >,
    {
        let client = self.peers.client(leader, addr)?;
        let response = tokio::time::timeout_at(deadline, send(client))
            .await
            .map_err(|_| self.no_leader())?
            .map_err(|status| {
                self.fence()
                    .note_refusal(&status)
                    .unwrap_or_else(|| forward_failure(leader, addr, status))
            })?;
        wire::decode::<Result<T, StoreError>>(response.get_ref())
            .map_err(|status| forward_failure(leader, addr, status))?
    }

    async fn read_barrier(&self) -> Result<u64, StoreError> {
        self.fence().check()?;
        let index = self
            .retry_until_leader(|deadline| async move {
                match self.leader() {
                    Some((leader, _)) if leader == self.member_id() => {
                        self.read_index_as_leader(deadline).await
                    }
                    Some((leader, addr)) => {
                        let call = self.fence().tag(wire::encode(&ReadCall { kind: None }));
                        let (index, _): (u64, Vec<ObjectRecord>) = self
                            .call_leader(leader, &addr, deadline, |mut client| async move {
                                client.read(call).await
                            })
                            .await?;
                        Ok(index)
                    }
                    None => Err(StoreError::NotLeader {
                        member: self.member_id(),
                    }),
                }
            })
            .await?;
        self.state.watch.wait_applied(index).await?;
        Ok(index)
    }

    /// The index a linearizable read waits for, once a quorum has answered a heartbeat sent
    /// after the call. openraft gives up after one leader lease without a quorum's answer; that
    /// is asked again until `deadline`, as it is what a new leader meets while its first
    /// heartbeats are answered (or while its runtime is busy), and a read refused then would
    /// refuse the write behind it.
    pub(crate) async fn read_index_as_leader(&self, deadline: Instant) -> Result<u64, StoreError> {
        self.fence().check()?;
        let unconfirmed = |detail: String| StoreError::NoQuorum {
            detail: format!(
                "leader {} heard from no majority within {:?} ({detail})",
                self.member_id(),
                self.config.request_timeout
            ),
        };
        loop {
            let confirmed = tokio::time::timeout_at(
                deadline,
                self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
            )
            .await
            .map_err(|_| unconfirmed("no answer in time".to_owned()))?;
            match confirmed {
                Ok(read_log_id) => return Ok(read_log_id.index()),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => {
                    return Err(StoreError::NotLeader {
                        member: self.member_id(),
                    });
                }
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(error))) => {
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        return Err(unconfirmed(error.to_string()));
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(error) => return Err(StoreError::Raft(error.to_string())),
            }
        }
    }

    async fn change_membership(&self, call: MembershipCall) -> Result<(), StoreError> {
        self.fence().check()?;
        self.retry_until_leader(|deadline| {
            let call = call.clone();
            async move {
                match self.leader() {
                    Some((leader, _)) if leader == self.member_id() => {
                        self.change_membership_as_leader(call).await
                    }
                    Some((leader, addr)) => {
                        let call = self.fence().tag(wire::encode(&call));
                        self.call_leader(leader, &addr, deadline, |mut client| async move {
                            client.change_membership(call).await
                        })
                        .await
                    }
                    None => Err(StoreError::NotLeader {
                        member: self.member_id(),
                    }),
                }
            }
        })
        .await
    }

    /// Carries out a membership change on the leader, within the request timeout: a change whose
    /// new membership can't reach a quorum never commits, and the caller hears so.
    pub(crate) async fn change_membership_as_leader(
        &self,
        call: MembershipCall,
    ) -> Result<(), StoreError> {
        self.fence().check()?;
        let timeout = self.config.request_timeout;
        let _one_at_a_time = self.membership_changes.lock().await;
        let learner = match &call {
            MembershipCall::AddLearner { member, addr } => Some((*member, addr.clone())),
            _ => None,
        };
        tokio::time::timeout(timeout, self.apply_membership_change(call))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::NoQuorum {
                    detail: format!("the membership change did not commit within {timeout:?}"),
                })
            })?;
        match learner {
            Some((member, addr)) => self.wait_caught_up(member, &addr).await,
            None => Ok(()),
        }
    }

    async fn apply_membership_change(&self, call: MembershipCall) -> Result<(), StoreError> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        if metrics.current_leader != Some(self.member_id()) {
            return Err(StoreError::NotLeader {
                member: self.member_id(),
            });
        }
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<MemberId> = membership.voter_ids().collect();
        let result = match call {
            MembershipCall::AddLearner { member, addr } => {
                if voters.contains(&member) {
                    return Err(StoreError::Membership(format!(
                        "member {member} is already a voter"
                    )));
                }
                self.raft
                    .add_learner(member, BasicNode { addr }, false)
                    .await
            }
            MembershipCall::Promote { member } => {
                if membership.get_node(&member).is_none() {
                    return Err(StoreError::Membership(format!(
                        "member {member} is not in the cluster; add it as a learner first"
                    )));
                }
                if voters.contains(&member) {
                    return Ok(());
                }
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([member])), false)
                    .await
            }
            MembershipCall::Remove { member } => {
                if membership.get_node(&member).is_none() {
                    return Err(StoreError::Membership(format!(
                        "member {member} is not in the cluster"
                    )));
                }
                if voters.contains(&member) {
                    self.check_quorum_without(member, &voters, &metrics)?;
                    self.raft
                        .change_membership(
                            ChangeMembers::RemoveVoters(BTreeSet::from([member])),
                            false,
                        )
                        .await
                } else {
                    self.raft
                        .change_membership(
                            ChangeMembers::RemoveNodes(BTreeSet::from([member])),
                            false,
                        )
                        .await
                }
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(StoreError::NotLeader {
                    member: self.member_id(),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(StoreError::Membership(error.to_string()))
            }
            Err(error) => Err(StoreError::Raft(error.to_string())),
        }
    }

    /// Waits until a new learner holds the leader's whole log. openraft's own blocking add only
    /// waits until the lag is under its replication threshold, which an unreachable learner
    /// with a short log passes at once.
    async fn wait_caught_up(&self, member: MemberId, addr: &str) -> Result<(), StoreError> {
        let target = self
            .raft
            .metrics()
            .borrow_watched()
            .last_log_index
            .unwrap_or(0);
        let mut metrics = self.raft.metrics();
        let caught_up = tokio::time::timeout(self.config.request_timeout, async {
            loop {
                let matched = metrics
                    .borrow_watched()
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(&member).cloned().flatten())
                    .map_or(0, |log_id| log_id.index());
                if matched >= target {
                    return true;
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        match caught_up {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::ShuttingDown),
            Err(_) => Err(StoreError::Membership(format!(
                "member {member} at {addr} has not caught up within {:?}; check that it is reachable and trusts this cluster's CA",
                self.config.request_timeout
            ))),
        }
    }

    /// The voters a leader has not heard from within an election timeout. Empty on followers,
    /// which can't tell.
    fn unreachable_voters(
        &self,
        metrics: &openraft::RaftMetrics<TypeConfig>,
    ) -> BTreeSet<MemberId> {
        let Some(heartbeats) = metrics.heartbeat.as_ref() else {
            return BTreeSet::new();
        };
        metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|voter| *voter != self.member_id())
            .filter(|voter| {
                heartbeats
                    .get(voter)
                    .cloned()
                    .flatten()
                    .is_none_or(|acked| acked.elapsed() >= self.config.election_timeout)
            })
            .collect()
    }

    /// Refuses to remove `member` when the voters left, counting only those that answered the
    /// leader recently, could not form a majority of the new membership.
    fn check_quorum_without(
        &self,
        member: MemberId,
        voters: &BTreeSet<MemberId>,
        metrics: &openraft::RaftMetrics<TypeConfig>,
    ) -> Result<(), StoreError> {
        let remaining: Vec<MemberId> = voters.iter().copied().filter(|v| *v != member).collect();
        if remaining.is_empty() {
            return Err(StoreError::Membership(format!(
                "member {member} is the last voter; removing it would leave no cluster"
            )));
        }
        let unreachable = self.unreachable_voters(metrics);
        let reachable = remaining
            .iter()
            .filter(|voter| !unreachable.contains(voter))
            .count();
        let quorum = remaining.len() / 2 + 1;
        if reachable < quorum {
            return Err(StoreError::Membership(format!(
                "removing member {member} would leave {reachable} reachable of {} voters, short of the {quorum} a quorum needs; bring the unreachable managers back first",
                remaining.len()
            )));
        }
        Ok(())
    }
}

fn forward_failure(leader: MemberId, addr: &str, status: tonic::Status) -> StoreError {
    StoreError::Unreachable {
        member: leader,
        addr: addr.to_owned(),
        detail: describe_status(&status),
    }
}

/// Builds a snapshot early when the entries kept in memory pass the configured budget (large
/// transactions, such as status reports for many tasks, fill memory long before the entry
/// count reaches the snapshot interval). Only when the log holds more than the entries a
/// snapshot keeps behind it, so a tail of large entries does not snapshot over and over. Ends
/// with the store.
async fn snapshot_when_the_log_outgrows_its_budget(inner: std::sync::Weak<Inner>) {
    const CHECK_PERIOD: Duration = Duration::from_secs(1);
    loop {
        tokio::time::sleep(CHECK_PERIOD).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.log.cached_bytes() <= inner.config.log_memory_budget {
            continue;
        }
        let metrics = inner.raft.metrics().borrow_watched().clone();
        let last = metrics.last_log_index.unwrap_or(0);
        let covered = metrics.snapshot.as_ref().map_or(0, |id| id.index());
        if last.saturating_sub(covered) <= inner.config.entries_kept_after_snapshot {
            continue;
        }
        tracing::info!(
            bytes = inner.log.cached_bytes(),
            "the raft log outgrew its memory budget: snapshotting early"
        );
        if inner.raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// Counts each new leadership this member sees (a leader known in a term not counted yet), until
/// Raft stops. A member that starts counts the leader it first learns of.
async fn count_leader_changes(
    mut metrics: WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>,
    leader_changes: Counter,
) {
    let mut counted_term = None;
    loop {
        let (term, leader) = {
            let now = metrics.borrow_watched();
            (now.current_term, now.current_leader)
        };
        if leader.is_some() && counted_term != Some(term) {
            counted_term = Some(term);
            leader_changes.inc();
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Turns one surviving member's data into a healthy single-member cluster, keeping every object
/// it holds, as `docker swarm init --force-new-cluster` does. Every entry in the member's log is
/// applied, committed or not: the survivor's log becomes the truth. The new cluster gets a new
/// epoch ([`crate::fence`]), so the members left out can't replicate into it should they come
/// back, and are told they are fenced out. Run it while the member is stopped, then open the
/// store as usual. `data_key` is the member's own.
pub async fn force_new_cluster(
    data_dir: &Path,
    data_key: &DataKey,
    member_id: MemberId,
    advertise_addr: &str,
) -> Result<(), StoreError> {
    // An offline tool: what it does is counted nowhere.
    let metrics = RaftMetrics::default();
    let state_machine = StateMachine::open(data_dir, data_key, &metrics)?;
    let log = LogStore::open(&data_dir.join(LOG_FILE), data_key, &metrics)?;
    // The fence first: should what follows fail, the member is fenced off from its old peers
    // rather than open to them with a half-made cluster; running the recovery again finishes it.
    let epoch = fence::load(data_dir)?.forced(rand::random());
    fence::save(data_dir, epoch)?;
    let (objects, last_log_id) = {
        let applied = state_machine.shared.read();
        let mut objects = applied.objects.clone();
        let mut last = applied.last_applied;
        for entry in log.entries_after(last.as_ref().map(|id| id.index())) {
            if let EntryPayload::Normal(txn) = &entry.payload {
                // A refused transaction was refused everywhere; skipping it is what applying does.
                let _ = objects.apply(txn, entry.log_id.index());
            }
            last = Some(entry.log_id);
        }
        (objects, last)
    };
    let Some(last_log_id) = last_log_id.or_else(|| log.last_log_id()) else {
        return Err(StoreError::Membership(format!(
            "{} holds no cluster state to recover",
            data_dir.display()
        )));
    };
    let membership = Membership::new(
        vec![BTreeSet::from([member_id])],
        BTreeMap::from([(
            member_id,
            BasicNode {
                addr: advertise_addr.to_owned(),
            },
        )]),
    )
    .map_err(|error| StoreError::Membership(error.to_string()))?;
    let meta = SnapshotMeta {
        last_log_id: Some(last_log_id),
        last_membership: StoredMembership::new(Some(last_log_id), membership),
    };
    let data = state_machine::encode_records(&objects);
    StateMachine::persist(data_dir, data_key, &meta, &data)
        .map_err(|error| StoreError::io(data_dir, error))?;
    log.reset(last_log_id)
        .await
        .map_err(|error| StoreError::io(log.path(), error))?;
    log.close();
    tracing::info!(
        member_id,
        objects = objects.len(),
        "re-founded the cluster on this member"
    );
    Ok(())
}
