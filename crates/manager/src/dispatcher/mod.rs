//! The dispatcher: the leader's side of every worker's session, the manager's own worker
//! included. It registers a node when its session opens, marks it down when heartbeats stop,
//! pushes each session the node, the managers, the trusted roots and the network keys again when
//! they change, streams each node its full assignment set when that changes (in parts, when it
//! is large), writes status reports in batches (whatever queued while the previous write was in
//! flight, in as few transactions as the proposal size limit allows), and relays log requests
//! and output.
//! Every call is checked against the caller's certificate: a node acts only in its own session;
//! what it sends, and how often it opens sessions, is bounded in size and rate (`limits.rs`).

mod assignments;
mod limits;
mod logs;
mod status;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use raft_store::{Store, StoreError, TxnRejection};
use shoal_proto::api::dispatcher_server::Dispatcher;
use shoal_proto::api::{
    AssignmentsMessage, AssignmentsRequest, Certificate, Cluster, EncryptionKey, HeartbeatRequest,
    HeartbeatResponse, LogSubscription, LogSubscriptionsRequest, Node, NodeStatus, NodeTlsInfo,
    Peer, PublishLogsMessage, PublishLogsResponse, SessionMessage, SessionRequest, Task,
    UpdateTaskStatusRequest, UpdateTaskStatusResponse, WeightedPeer, node_status,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

pub use logs::LogStream;
pub(crate) use logs::{LogBroker, LogReading, LogTarget};
use status::NodeReport;

use crate::error::ManagerError;
use crate::objects::{self, ClusterObject};
use crate::peer::{PeerIdentity, identity_of_request};
use crate::rate_limit::{PerSourceLimiter, TokenBucket};
use crate::view::shared::{NodeNotices, SharedView};
use crate::view::{ClusterView, Touched};
use shoal_metrics::DispatcherMetrics;
use spec::time::proto_duration;

/// A node is marked down after this many heartbeat periods without one.
const MISSED_HEARTBEATS_BEFORE_DOWN: u32 = 3;
/// Attempts at a write that keeps meeting concurrent changes to the same objects.
const WRITE_ATTEMPTS: usize = 5;
/// How long a session opened while no manager is known to lead (or the known leader has gone
/// silent) waits for an election before it is refused. Otherwise a follower names a dead leader
/// or none, and agents that lost their leader each retry on a growing backoff and miss the
/// moment the new leader is ready: at 100 nodes, 7 connections per agent and the last agent back
/// 2 s after the election. An agent gives a session 10 s to open.
const ELECTION_WAIT: Duration = Duration::from_secs(5);

/// One `UpdateTaskStatus` call waiting for its reports to be written.
type QueuedReports = (Vec<NodeReport>, oneshot::Sender<Result<(), Status>>);

struct Session {
    /// Empty for a node that was ready when this dispatcher started and has not come back yet:
    /// it gets the same grace as a live session before it is marked down.
    session_id: String,
    /// The Raft term this manager led in when the session opened: a session lives only as long
    /// as that leadership.
    term: u64,
    last_heartbeat: Instant,
    /// Set to true when the session ends, which closes its streams.
    ended: watch::Sender<bool>,
    /// How many more `UpdateTaskStatus` calls the session may make now.
    status_calls: TokenBucket,
    /// How many more heartbeats the session may send now.
    heartbeats: TokenBucket,
}

impl Session {
    fn new(session_id: String, term: u64, ended: watch::Sender<bool>, now: Instant) -> Session {
        Session {
            session_id,
            term,
            last_heartbeat: now,
            ended,
            status_calls: TokenBucket::new(limits::STATUS_CALL_RATE, now),
            heartbeats: TokenBucket::new(limits::HEARTBEAT_RATE, now),
        }
    }
}

struct Shared {
    store: Arc<Store>,
    heartbeat_period: watch::Receiver<Duration>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Session opens per node, kept apart from the sessions: each open replaces the node's
    /// session, and its buckets with it.
    session_opens: Mutex<PerSourceLimiter<String>>,
    reports: mpsc::UnboundedSender<QueuedReports>,
    logs: LogBroker,
    metrics: DispatcherMetrics,
    /// The decoded store the assignment streams read, instead of each decoding every task.
    view: Arc<SharedView>,
}

/// The dispatcher service; clones share one state.
#[derive(Clone)]
pub struct DispatcherService {
    shared: Arc<Shared>,
}

impl DispatcherService {
    /// Starts the dispatcher's background work (status writer, heartbeat monitor) until `stop`
    /// changes. `heartbeat_period` follows the cluster spec.
    pub(crate) fn start(
        store: Arc<Store>,
        heartbeat_period: watch::Receiver<Duration>,
        view: Arc<SharedView>,
        logs: LogBroker,
        metrics: DispatcherMetrics,
        stop: watch::Receiver<bool>,
    ) -> Result<DispatcherService, ManagerError> {
        let (reports, report_queue) = mpsc::unbounded_channel();
        let sessions = grace_sessions(&store)?;
        let shared = Arc::new(Shared {
            store,
            heartbeat_period,
            sessions: Mutex::new(sessions),
            session_opens: Mutex::new(PerSourceLimiter::new(
                limits::SESSION_OPEN_RATE,
                limits::SESSION_OPEN_NODES_TRACKED,
            )),
            reports,
            logs,
            metrics,
            view,
        });
        tokio::spawn(write_status_reports(
            Arc::clone(&shared),
            report_queue,
            stop.clone(),
        ));
        tokio::spawn(mark_silent_nodes_down(Arc::clone(&shared), stop));
        Ok(DispatcherService { shared })
    }

    /// Nodes with a live session here, not counting the grace a new leader gives nodes that
    /// have yet to come back.
    pub(crate) fn live_sessions(&self) -> usize {
        self.shared
            .sessions()
            .values()
            .filter(|session| !session.session_id.is_empty())
            .count()
    }
}

/// A placeholder session for every node the store calls ready, so that each gets one grace
/// period to open its session with this dispatcher before it is marked down.
fn grace_sessions(store: &Store) -> Result<HashMap<String, Session>, ManagerError> {
    let term = store.status().term;
    let (sessions, _) =
        sessions_on_leading(HashMap::new(), term, ready_nodes(store)?, Instant::now());
    Ok(sessions)
}

/// The nodes the store calls ready.
fn ready_nodes(store: &Store) -> Result<Vec<String>, ManagerError> {
    let nodes: Vec<Node> =
        store.local_view(|view| objects::decode_all::<Node>(view.list(Node::KIND)))?;
    Ok(nodes
        .into_iter()
        .filter(|node| {
            node.status
                .as_ref()
                .is_some_and(|status| status.state() == node_status::State::Ready)
        })
        .map(|node| node.id)
        .collect())
}

/// The sessions to keep, and those to end, once this manager is seen leading in `term`.
/// Sessions opened in `term` stay: agents reach a new leader before the heartbeat monitor sees
/// it lead, and ending their sessions would send every one of them round again. Every other
/// ready node gets a grace session; sessions of earlier terms end.
fn sessions_on_leading(
    previous: HashMap<String, Session>,
    term: u64,
    ready_nodes: Vec<String>,
    now: Instant,
) -> (HashMap<String, Session>, Vec<Session>) {
    let (mut kept, ended): (HashMap<String, Session>, HashMap<String, Session>) = previous
        .into_iter()
        .partition(|(_, session)| session.term == term && !session.session_id.is_empty());
    let grace_ended = watch::channel(false).0;
    for node_id in ready_nodes {
        kept.entry(node_id)
            .or_insert_with(|| Session::new(String::new(), term, grace_ended.clone(), now));
    }
    (kept, ended.into_values().collect())
}

/// Takes out the sessions silent for longer than `deadline` of the time this manager was
/// running. `stalled` is how long the manager itself just stood still: it read no heartbeat
/// meanwhile, so every session is credited with that time first. Without the credit, a manager
/// paused past the deadline marks every node down the moment it wakes, before it reads the
/// heartbeats waiting in its sockets, and every task in the swarm is replaced.
fn take_silent_sessions(
    sessions: &mut HashMap<String, Session>,
    stalled: Duration,
    deadline: Duration,
    now: Instant,
) -> Vec<(String, Session)> {
    sessions
        .extract_if(|_, session| {
            session.last_heartbeat = session
                .last_heartbeat
                .checked_add(stalled)
                .map_or(now, |credited| credited.min(now));
            now.saturating_duration_since(session.last_heartbeat) > deadline
        })
        .collect()
}

impl Shared {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn heartbeat_period(&self) -> Duration {
        *self.heartbeat_period.borrow()
    }

    /// Runs `visit` on a live session, provided the caller's certificate is its node's: a node
    /// acts only in its own session. `visit` gets the node id and the session.
    fn with_callers_session<R>(
        &self,
        caller: &PeerIdentity,
        session_id: &str,
        visit: impl FnOnce(&str, &mut Session) -> R,
    ) -> Result<R, Status> {
        let mut sessions = self.sessions();
        if let Some(refusal) = session_refusal(&sessions, &caller.node_id, session_id) {
            return Err(refusal);
        }
        let session = sessions
            .get_mut(&caller.node_id)
            .ok_or_else(|| session_not_open(session_id))?;
        Ok(visit(&caller.node_id, session))
    }

    /// The node of the caller's live session, and a receiver that says when the session ends.
    fn session_of_caller<T>(
        &self,
        request: &Request<T>,
        session_id: &str,
    ) -> Result<(String, watch::Receiver<bool>), Status> {
        let caller = identity_of_request(request)?;
        self.with_callers_session(&caller, session_id, |node_id, session| {
            (node_id.to_owned(), session.ended.subscribe())
        })
    }

    /// The term this manager leads in, or a refusal that names the leader.
    fn require_leader(&self) -> Result<u64, Status> {
        if let Some(term) = self.store.leading_term() {
            return Ok(term);
        }
        let status = self.store.status();
        let leader = status
            .leader
            .and_then(|leader| status.voters.get(&leader).cloned());
        let mut refusal = Status::unavailable(format!(
            "this manager does not lead the swarm (the leader is at {}): connect to the leader",
            leader.as_deref().unwrap_or("unknown")
        ));
        // Agents read the leader's address from here and go straight to it.
        if let Some(value) = leader.and_then(|addr| addr.parse().ok()) {
            refusal
                .metadata_mut()
                .insert(shoal_proto::metadata::LEADER_ADDR, value);
        }
        Err(refusal)
    }

    /// [`Shared::require_leader`], after waiting up to [`ELECTION_WAIT`] for a live leader when
    /// none is known or the known one has gone silent: the refusal then names the new leader,
    /// or this manager serves.
    async fn require_leader_once_elected(&self) -> Result<u64, Status> {
        // No live leader within the wait is refused below, as before.
        self.store.wait_for_live_leader(ELECTION_WAIT).await;
        self.require_leader()
    }

    /// What every session carries from the cluster object: the roots nodes must trust now, and
    /// the network keys.
    fn cluster_parts(&self) -> (String, Vec<EncryptionKey>) {
        self.view
            .read(|view| {
                view.cluster().map(|cluster| {
                    (
                        crate::node_ca::trust_bundle(cluster),
                        cluster.network_bootstrap_keys.clone(),
                    )
                })
            })
            .unwrap_or_default()
    }

    /// Docker's TLS information of a node that presented `leaf_pem`: it trusts what sessions
    /// push (the trust bundle), and its issuer is the root that signed its certificate.
    fn tls_info_of(&self, leaf_pem: &[u8]) -> Option<NodeTlsInfo> {
        let (trust_root, root_ca) = self.view.read(|view| {
            let cluster = view.cluster()?;
            Some((
                crate::node_ca::trust_bundle(cluster),
                cluster.root_ca.clone()?,
            ))
        })?;
        spec::tls_info::of_node(leaf_pem, trust_root.as_bytes(), &root_ca)
    }
}

/// Why node `caller` may not act in session `session_id`, or `None` when it is the node's live
/// session. Found by the caller's node, not by scanning every session (each heartbeat asks, a
/// thousand a second at 5,000 nodes); only a refusal looks further, to name another node's.
fn session_refusal(
    sessions: &HashMap<String, Session>,
    caller: &str,
    session_id: &str,
) -> Option<Status> {
    let is_live = |session: &Session| !session_id.is_empty() && session.session_id == session_id;
    if sessions.get(caller).is_some_and(is_live) {
        return None;
    }
    match sessions.iter().find(|(_, session)| is_live(session)) {
        Some((owner, _)) => Some(Status::permission_denied(format!(
            "session {session_id} belongs to node {owner}, not to the caller's node {caller}"
        ))),
        None => Some(session_not_open(session_id)),
    }
}

fn session_not_open(session_id: &str) -> Status {
    Status::not_found(format!(
        "session {session_id:?} is not open (it expired or was replaced): open a new session"
    ))
}

/// The managers as a session message lists them.
fn manager_peers(view: &ClusterView) -> Vec<WeightedPeer> {
    view.managers()
        .filter_map(|node| {
            Some(WeightedPeer {
                peer: Some(Peer {
                    node_id: node.id.clone(),
                    addr: node.manager_status.as_ref()?.addr.clone(),
                }),
                weight: 1,
            })
        })
        .collect()
}

/// Whether changes that touched `touched` may change node `node_id`'s session message: its own
/// object, a manager's, or the cluster (roots, network keys).
fn is_session_touched(touched: &Touched, node_id: &str) -> bool {
    touched.everything
        || touched.managers
        || touched.nodes.contains(node_id)
        || touched.kinds.contains(Cluster::KIND)
}

/// Writes queued status reports, everything that queued up as one transaction.
async fn write_status_reports(
    shared: Arc<Shared>,
    mut queue: mpsc::UnboundedReceiver<QueuedReports>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            next = queue.recv() => match next {
                Some(first) => first,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let mut batch = vec![first];
        while let Ok(more) = queue.try_recv() {
            batch.push(more);
        }
        let reports: Vec<NodeReport> = batch
            .iter()
            .flat_map(|(reports, _)| reports.iter().cloned())
            .collect();
        let result = write_reports(&shared.store, &reports).await;
        for (_, reply) in batch {
            let _ = reply.send(result.clone());
        }
    }
}

/// Writes `reports` in as many transactions as keep each under the store's proposal limit: each
/// report stands alone, so a large batch need not commit whole. After a conflict everything is
/// read again, and reports already written change nothing the second time.
async fn write_reports(store: &Store, reports: &[NodeReport]) -> Result<(), Status> {
    'attempts: for _ in 0..WRITE_ATTEMPTS {
        let changes = store.local_view(|view| {
            status::status_changes(reports, |task_id| {
                view.get(Task::KIND, task_id)
                    .and_then(|record| objects::decode::<Task>(record).ok())
            })
        });
        let transactions = store.pack(changes.into_iter().map(|change| vec![change]))?;
        for transaction in transactions {
            match store.write(transaction).await {
                Ok(_) => {}
                Err(StoreError::Rejected(TxnRejection::Conflict { .. })) => continue 'attempts,
                Err(error) => return Err(error.into()),
            }
        }
        return Ok(());
    }
    Err(Status::aborted(
        "the tasks kept changing while their status was written: report again",
    ))
}

/// Marks the node of a live session ready again when the store says otherwise. A manager that
/// has just lost the leadership, and not yet noticed, may mark the node down after the new leader
/// opened its session (the write is forwarded and commits); the session's heartbeats put that
/// right instead of leaving a working node down for good.
async fn mark_ready_again(shared: &Shared, node_id: &str) {
    let is_ready = |node: Option<&Node>| {
        node.and_then(|node| node.status.as_ref())
            .is_some_and(|status| status.state() == node_status::State::Ready)
    };
    // Every heartbeat asks, so the view answers first (no decoding); only a node it does not
    // call ready is looked up in the store, which the view may be behind.
    if shared.view.read(|view| is_ready(view.node(node_id))) {
        return;
    }
    let store = &shared.store;
    let stored = store.local_view(|view| {
        view.get(Node::KIND, node_id)
            .map(objects::decode::<Node>)
            .transpose()
    });
    if is_ready(stored.ok().flatten().as_ref()) {
        return;
    }
    tracing::info!(node = %node_id, "a live session's node is not ready in the store: marking it ready");
    let marked = objects::update_node(store, node_id, |node| {
        let addr = node
            .status
            .take()
            .map(|status| status.addr)
            .unwrap_or_default();
        node.status = Some(NodeStatus {
            state: node_status::State::Ready as i32,
            message: String::new(),
            addr,
        });
    })
    .await;
    if let Err(error) = marked {
        tracing::warn!(node = %node_id, %error, "could not mark the node ready again");
    }
}

/// Ends sessions whose heartbeats stopped and marks their nodes down.
/// A manager that has just become leader gives every ready node a grace period first, and one
/// that has stopped leading ends its sessions so that their agents go to the new leader.
async fn mark_silent_nodes_down(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut led_term = shared.store.leading_term();
    loop {
        let period = shared.heartbeat_period();
        let nap = period / 2;
        let asleep_at = Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = stop.changed() => return,
        }
        // How much later than asked the nap ended: time this manager stood still (its process
        // stopped, its machine paused or starved), in which it could read no heartbeat.
        let stalled = asleep_at.elapsed().saturating_sub(nap);
        let leading = shared.store.leading_term();
        if leading != led_term {
            led_term = leading;
            let ready = match leading.map(|_| ready_nodes(&shared.store)).transpose() {
                Ok(ready) => ready.unwrap_or_default(),
                Err(error) => {
                    tracing::warn!(%error, "could not read the nodes after becoming leader");
                    Vec::new()
                }
            };
            let ended = {
                let mut sessions = shared.sessions();
                let previous = std::mem::take(&mut *sessions);
                match leading {
                    Some(term) => {
                        let (kept, ended) =
                            sessions_on_leading(previous, term, ready, Instant::now());
                        *sessions = kept;
                        ended
                    }
                    None => previous.into_values().collect(),
                }
            };
            tracing::info!(
                leader = leading.is_some(),
                ended = ended.len(),
                "leadership changed: sessions of other terms ended"
            );
            for session in ended {
                let _ = session.ended.send(true);
            }
            continue;
        }
        let Some(term) = leading else {
            continue;
        };
        let deadline = period * MISSED_HEARTBEATS_BEFORE_DOWN;
        let silent: Vec<String> = {
            let mut sessions = shared.sessions();
            take_silent_sessions(&mut sessions, stalled, deadline, Instant::now())
                .into_iter()
                .map(|(node_id, session)| {
                    let _ = session.ended.send(true);
                    node_id
                })
                .collect()
        };
        for node_id in silent {
            tracing::warn!(node = %node_id, "no heartbeat: marking the node down");
            shared.metrics.nodes_marked_down.inc();
            // Judged from this leader's sessions, so written only while it leads in the term
            // they belong to: a deposed leader's verdicts never reach its successor.
            let result = objects::update_node_in_term(&shared.store, term, &node_id, |node| {
                node.status = Some(NodeStatus {
                    state: node_status::State::Down as i32,
                    message: "heartbeat failure".to_owned(),
                    addr: node
                        .status
                        .as_ref()
                        .map(|status| status.addr.clone())
                        .unwrap_or_default(),
                });
            })
            .await;
            if let Err(error) = result {
                tracing::warn!(node = %node_id, %error, "could not mark the node down");
            }
        }
    }
}

/// Streams a session's messages: `first`, then a new one whenever the node object, the list
/// of managers (a promotion, a demotion, a manager joining or leaving), the trusted roots or the
/// network keys change, until the session ends. A node removed from the swarm has its session ended with a refusal.
async fn follow_session(
    shared: Arc<Shared>,
    node_id: String,
    first: SessionMessage,
    mut notices: NodeNotices,
    sender: mpsc::Sender<StreamItem<SessionMessage>>,
    mut ended: watch::Receiver<bool>,
) {
    let mut last = first.clone();
    if sender.send(Box::new(Ok(first))).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = session_ended(&mut ended) => {
                let _ = sender
                    .send(Box::new(Err(Status::unavailable(
                        "the session ended (missed heartbeats, a newer session or a new leader): open a new one",
                    ))))
                    .await;
                return;
            }
            _ = sender.closed() => return,
            changed = notices.object.changed() => if changed.is_err() {
                return;
            },
            notice = notices.wide.recv() => match notice {
                Ok(touched) if !is_session_touched(&touched, &node_id) => continue,
                // A lagging subscriber may have missed anything.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        let parts = shared.view.read(|view| {
            view.node(&node_id)
                .cloned()
                .map(|node| (node, manager_peers(view)))
        });
        let Some((node, managers)) = parts else {
            let _ = sender
                .send(Box::new(Err(Status::permission_denied(format!(
                    "node {node_id} was removed from the swarm: join it again with 'shoal swarm join'"
                )))))
                .await;
            return;
        };
        let (root_ca, network_keys) = shared.cluster_parts();
        let next = SessionMessage {
            node: Some(node),
            managers,
            root_ca,
            network_keys,
            ..last.clone()
        };
        if next != last {
            if sender.send(Box::new(Ok(next.clone()))).await.is_err() {
                return;
            }
            last = next;
        }
    }
}

/// Returns once the session ends.
async fn session_ended(ended: &mut watch::Receiver<bool>) {
    // The borrow the wait returns is dropped at once: it may not be held across an await.
    let _ = ended.wait_for(|ended| *ended).await.is_ok();
}

type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What the task feeding a server stream sends. Boxed: a channel allocates room for 32 items at
/// its start whatever its bound, which for an unboxed session message was 27 KB per session,
/// over 100 MB on a leader of 5,000 nodes.
type StreamItem<T> = Box<Result<T, Status>>;

/// A stream fed by a spawned task; it ends when the task drops its sender.
fn channel_stream<T: Send + 'static>(receiver: mpsc::Receiver<StreamItem<T>>) -> ServerStream<T> {
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver).map(|item| *item))
}

#[tonic::async_trait]
impl Dispatcher for DispatcherService {
    type SessionStream = ServerStream<SessionMessage>;

    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let shared = &self.shared;
        let term = shared.require_leader_once_elected().await?;
        let caller = identity_of_request(&request)?;
        let peer_ip = request.remote_addr().map(|addr| addr.ip().to_string());
        // What the node presents is what it has installed: a root rotation waits for it.
        let presented = request
            .peer_certs()
            .and_then(|chain| chain.first().map(|leaf| leaf.as_ref().to_vec()))
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der)))
            .unwrap_or_default();
        let request = request.into_inner();
        let node_id = request.node_id.clone();
        if caller.node_id != node_id {
            return Err(Status::permission_denied(format!(
                "the caller's certificate is node {}'s: a node opens a session only for itself, not for {node_id}",
                caller.node_id
            )));
        }
        let description = request.description;
        if let Some(description) = &description {
            limits::check_description(description)?;
        }
        shared
            .session_opens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(&node_id, Instant::now())
            .map_err(|wait| {
                limits::rate_exceeded("session opens", limits::SESSION_OPEN_RATE, wait)
            })?;
        let tls_info = shared.tls_info_of(presented.as_bytes());
        let written = objects::update_node(&shared.store, &node_id, |node| {
            if description.is_some() {
                node.description = description.clone();
            }
            if let Some(description) = node.description.as_mut() {
                description.tls_info = tls_info.clone();
            }
            node.status = Some(NodeStatus {
                state: node_status::State::Ready as i32,
                message: String::new(),
                addr: peer_ip.clone().unwrap_or_default(),
            });
            node.certificate = Some(Certificate {
                role: caller.role as i32,
                certificate: presented.clone().into_bytes(),
                cn: node_id.clone(),
                ..Default::default()
            });
        })
        .await
        .map_err(Status::from)?
        .ok_or_else(|| {
            Status::permission_denied(format!(
                "node {node_id} is not a member of this swarm: join it with 'shoal swarm join'"
            ))
        })?;
        let session_id = raft_store::new_object_id();
        let (ended, ended_receiver) = watch::channel(false);
        if let Some(previous) = shared.sessions().insert(
            node_id.clone(),
            Session::new(session_id.clone(), term, ended, Instant::now()),
        ) {
            // A node has one session: a reconnecting agent replaces its old one.
            let _ = previous.ended.send(true);
        }
        tracing::info!(node = %node_id, session = %session_id, "session opened");
        let (sender, receiver) = mpsc::channel(4);
        // Subscribed before the first message is read, so a change after it is told.
        let notices = shared.view.subscribe_node(&node_id);
        let (node, managers) = shared
            .view
            .read_current(|view| (view.node(&node_id).cloned(), manager_peers(view)))
            .map_err(Status::from)?;
        let (root_ca, network_keys) = shared.cluster_parts();
        let first = SessionMessage {
            session_id,
            node: Some(node.unwrap_or(written)),
            managers,
            heartbeat_period: Some(proto_duration(shared.heartbeat_period())),
            root_ca,
            network_keys,
        };
        tokio::spawn(follow_session(
            Arc::clone(shared),
            node_id,
            first,
            notices,
            sender,
            ended_receiver,
        ));
        Ok(Response::new(channel_stream(receiver)))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.shared.require_leader()?;
        let caller = identity_of_request(&request)?;
        let node_id = self
            .shared
            .with_callers_session(
                &caller,
                &request.get_ref().session_id,
                |node_id, session| {
                    let now = Instant::now();
                    session.heartbeats.take(1.0, now)?;
                    session.last_heartbeat = now;
                    Ok(node_id.to_owned())
                },
            )?
            .map_err(|wait| limits::rate_exceeded("heartbeats", limits::HEARTBEAT_RATE, wait))?;
        self.shared.metrics.heartbeats.inc();
        mark_ready_again(&self.shared, &node_id).await;
        Ok(Response::new(HeartbeatResponse {
            period: Some(proto_duration(self.shared.heartbeat_period())),
        }))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        let caller = identity_of_request(&request)?;
        let request = request.into_inner();
        limits::check_status_updates(&request.updates)?;
        let node_id = self
            .shared
            .with_callers_session(&caller, &request.session_id, |node_id, session| {
                session
                    .status_calls
                    .take(1.0, Instant::now())
                    .map(|()| node_id.to_owned())
            })?
            .map_err(|wait| {
                limits::rate_exceeded("status reports", limits::STATUS_CALL_RATE, wait)
            })?;
        let reports = request
            .updates
            .into_iter()
            .filter_map(|update| {
                Some(NodeReport {
                    node_id: node_id.clone(),
                    task_id: update.task_id,
                    status: update.status?,
                })
            })
            .collect();
        let (reply, written) = oneshot::channel();
        self.shared
            .reports
            .send((reports, reply))
            .map_err(|_| Status::unavailable("the dispatcher is shutting down: report again"))?;
        written
            .await
            .map_err(|_| Status::unavailable("the dispatcher is shutting down: report again"))??;
        Ok(Response::new(UpdateTaskStatusResponse {}))
    }

    type AssignmentsStream = ServerStream<AssignmentsMessage>;

    async fn assignments(
        &self,
        request: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let (node_id, mut ended) = self.shared.session_of_caller(&request, &session_id)?;
        let view = Arc::clone(&self.shared.view);
        let sent_messages = self.shared.metrics.assignment_messages.clone();
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            // Subscribed before the first read, so no change falls between the two.
            let mut notices = view.subscribe_node(&node_id);
            let mut sent_key = None;
            let mut version = 0;
            loop {
                let set = view.read(|cluster| {
                    assignments::assignment_set(cluster, &node_id, sent_key.as_ref())
                });
                if let Some(mut message) = set.message {
                    version += 1;
                    message.version = version;
                    // The parts of one set go out back to back, computed from one read.
                    for part in assignments::into_parts(message, assignments::ASSIGNMENT_PART_BYTES)
                    {
                        if sender.send(Box::new(Ok(part))).await.is_err() {
                            return;
                        }
                        sent_messages.inc();
                    }
                    sent_key = Some(set.key);
                }
                // Only a change to this node's tasks, or to what they reference, is worth
                // building the set again for.
                loop {
                    tokio::select! {
                        changed = notices.tasks.changed() => match changed {
                            Ok(()) => break,
                            Err(_) => return,
                        },
                        notice = notices.wide.recv() => match notice {
                            Ok(touched)
                                if !assignments::is_touched_by(
                                    &touched,
                                    &node_id,
                                    &set.secret_ids,
                                    &set.config_ids,
                                ) => {}
                            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        _ = session_ended(&mut ended) => return,
                        _ = sender.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(channel_stream(receiver)))
    }

    type LogSubscriptionsStream = ServerStream<LogSubscription>;

    async fn log_subscriptions(
        &self,
        request: Request<LogSubscriptionsRequest>,
    ) -> Result<Response<Self::LogSubscriptionsStream>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let (node_id, mut ended) = self.shared.session_of_caller(&request, &session_id)?;
        let mut subscriptions = self.shared.logs.listen(&node_id);
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    next = subscriptions.recv() => match next {
                        Some(subscription) => {
                            if sender.send(Box::new(Ok(*subscription))).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    _ = session_ended(&mut ended) => return,
                }
            }
        });
        Ok(Response::new(channel_stream(receiver)))
    }

    async fn publish_logs(
        &self,
        request: Request<Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        let caller = identity_of_request(&request)?;
        let mut messages = request.into_inner();
        let mut publisher: Option<(String, String)> = None;
        let mut log_bytes = TokenBucket::new(limits::LOG_BYTE_RATE, Instant::now());
        let relayed: Result<(), Status> = async {
            while let Some(message) = messages.next().await {
                let message = message?;
                let node_id = self.shared.with_callers_session(
                    &caller,
                    &message.session_id,
                    |node_id, _| node_id.to_owned(),
                )?;
                publisher = Some((message.subscription_id.clone(), node_id.clone()));
                let bytes = limits::check_log_message(&message)? as f64;
                // Output past the rate is slowed down, not refused: this stream is read later,
                // HTTP/2 flow control holds the worker back, and `service logs` of a large log
                // still completes. Only a message larger than the burst can never pass.
                loop {
                    match log_bytes.take(bytes, Instant::now()) {
                        Ok(()) => break,
                        Err(Duration::MAX) => {
                            return Err(limits::rate_exceeded(
                                "log bytes",
                                limits::LOG_BYTE_RATE,
                                Duration::MAX,
                            ));
                        }
                        Err(wait) => tokio::time::sleep(wait).await,
                    }
                }
                let close = message.close;
                if !self.shared.logs.publish(&node_id, message).await? || close {
                    break;
                }
            }
            Ok(())
        }
        .await;
        // Whether it closed, broke off or was refused, nothing more will come from this node.
        if let Some((subscription_id, node_id)) = publisher {
            self.shared.logs.node_done(&subscription_id, &node_id);
        }
        relayed.map(|()| Response::new(PublishLogsResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use raft_store::{ReadConsistency, Transaction};
    use shoal_proto::api::{TaskState, TaskStatus};

    use super::*;

    #[test]
    fn a_node_acts_only_in_its_own_live_session() {
        let now = Instant::now();
        let session = |id: &str| Session::new(id.to_owned(), 1, watch::channel(false).0, now);
        let sessions: HashMap<String, Session> = [
            ("n1".to_owned(), session("s1")),
            ("n2".to_owned(), session("s2")),
            ("n3".to_owned(), session("")),
        ]
        .into();
        assert!(session_refusal(&sessions, "n1", "s1").is_none());
        let code = |caller: &str, session_id: &str| {
            session_refusal(&sessions, caller, session_id).map(|refusal| refusal.code())
        };
        assert_eq!(code("n1", "s2"), Some(tonic::Code::PermissionDenied));
        assert_eq!(code("n1", "gone"), Some(tonic::Code::NotFound));
        assert_eq!(code("n9", "s1"), Some(tonic::Code::PermissionDenied));
        // A grace session (no id yet) is no session to act in.
        assert_eq!(code("n3", ""), Some(tonic::Code::NotFound));
    }

    #[test]
    fn a_session_message_is_built_again_only_for_its_node_a_manager_or_the_cluster() {
        let ids = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect();
        let is_touched = |touched: Touched| is_session_touched(&touched, "n1");
        assert!(is_touched(Touched::everything()));
        assert!(is_touched(Touched {
            nodes: ids(&["n1"]),
            ..Default::default()
        }));
        assert!(is_touched(Touched {
            nodes: ids(&["m2"]),
            managers: true,
            ..Default::default()
        }));
        assert!(is_touched(Touched {
            kinds: ids(&[Cluster::KIND]),
            ..Default::default()
        }));
        // Another worker's node, tasks on this node, secrets: the message stays as it is.
        assert!(!is_touched(Touched {
            nodes: ids(&["n2"]),
            task_nodes: ids(&["n1"]),
            secrets: ids(&["s1"]),
            kinds: ids(&["node", "task", "secret"]),
            ..Default::default()
        }));
    }

    #[test]
    fn a_new_leader_keeps_the_sessions_opened_in_its_term_and_ends_the_rest() {
        let now = Instant::now();
        let session =
            |id: &str, term| Session::new(id.to_owned(), term, watch::channel(false).0, now);
        let previous = HashMap::from([
            ("early".to_owned(), session("s-early", 7)),
            ("stale".to_owned(), session("s-stale", 5)),
            ("stale-grace".to_owned(), session("", 5)),
        ]);
        let ready = ["early", "stale", "silent"].map(str::to_owned).to_vec();

        let (kept, ended) = sessions_on_leading(previous, 7, ready, now);

        let mut kept: Vec<(&str, &str, u64)> = kept
            .iter()
            .map(|(node, session)| (node.as_str(), session.session_id.as_str(), session.term))
            .collect();
        kept.sort();
        // The agent that came before the leadership was seen keeps its session; the other
        // ready nodes get a grace session in the new term.
        assert_eq!(
            kept,
            [("early", "s-early", 7), ("silent", "", 7), ("stale", "", 7)]
        );
        let mut ended: Vec<&str> = ended
            .iter()
            .map(|session| session.session_id.as_str())
            .collect();
        ended.sort();
        assert_eq!(ended, ["", "s-stale"]);
    }

    #[test]
    fn only_the_time_the_manager_was_running_counts_as_a_nodes_silence() {
        let now = Instant::now();
        let deadline = Duration::from_secs(3);
        // Heard from 1, 4 and 10 s ago.
        let sessions = || -> HashMap<String, Session> {
            [("fresh", 1), ("quiet", 4), ("gone", 10)]
                .into_iter()
                .map(|(node, ago)| {
                    let heard = now.checked_sub(Duration::from_secs(ago)).unwrap();
                    let ended = watch::channel(false).0;
                    (
                        node.to_owned(),
                        Session::new(format!("s-{node}"), 1, ended, heard),
                    )
                })
                .collect()
        };
        let nodes = |taken: Vec<(String, Session)>| {
            let mut nodes: Vec<String> = taken.into_iter().map(|(node, _)| node).collect();
            nodes.sort();
            nodes
        };

        let mut running = sessions();
        let taken = take_silent_sessions(&mut running, Duration::ZERO, deadline, now);
        assert_eq!(nodes(taken), ["gone", "quiet"]);
        assert_eq!(running.keys().collect::<Vec<_>>(), ["fresh"]);

        // The manager stood still for the last 5 s: "quiet" was silent 0 s of the time it ran,
        // "gone" 5 s, past the deadline anyway. No heartbeat is put in the future.
        let mut paused = sessions();
        let taken = take_silent_sessions(&mut paused, Duration::from_secs(5), deadline, now);
        assert_eq!(nodes(taken), ["gone"]);
        assert_eq!(paused.len(), 2);
        assert!(paused.values().all(|session| session.last_heartbeat == now));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_status_batch_over_the_proposal_limit_is_written_in_several_transactions() {
        let dir = tempfile::tempdir().unwrap();
        // Small enough that the batch below is several proposals' worth.
        let store = crate::view::tests::leading_store_with(dir.path(), |config| {
            config.max_proposal_bytes = 16 * 1024;
        })
        .await;
        let tasks: Vec<Task> = (0..40)
            .map(|index| Task {
                id: format!("task{index}"),
                node_id: "node1".into(),
                ..Default::default()
            })
            .collect();
        store
            .write(Transaction::new(
                tasks.iter().map(objects::create).collect(),
            ))
            .await
            .unwrap();
        // 40 reports of about 1 KiB each: about 40 KiB in all.
        let reports: Vec<NodeReport> = tasks
            .iter()
            .map(|task| {
                let mut status = TaskStatus {
                    message: "x".repeat(1000),
                    ..Default::default()
                };
                status.set_state(TaskState::Running);
                NodeReport {
                    node_id: "node1".into(),
                    task_id: task.id.clone(),
                    status,
                }
            })
            .collect();
        write_reports(&store, &reports).await.unwrap();
        let written: Vec<Task> = objects::decode_all(
            &store
                .list(Task::KIND, ReadConsistency::Local)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(written.len(), 40);
        assert!(
            written
                .iter()
                .all(|task| task.status.as_ref().unwrap().state() == TaskState::Running)
        );
    }
}
