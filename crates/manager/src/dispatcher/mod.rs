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
    HeartbeatResponse, LogSubscription, LogSubscriptionsRequest, Node, NodeStatus, Peer,
    PublishLogsMessage, PublishLogsResponse, SessionMessage, SessionRequest, Task,
    UpdateTaskStatusRequest, UpdateTaskStatusResponse, WeightedPeer, node_status,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

pub use logs::LogStream;
pub(crate) use logs::{LogBroker, LogReading, LogTarget};
use status::NodeReport;

use crate::error::ManagerError;
use crate::objects::{self, ClusterObject};
use crate::peer::{PeerIdentity, identity_of_request};
use crate::rate_limit::{PerSourceLimiter, TokenBucket};
use shoal_metrics::DispatcherMetrics;
use spec::time::proto_duration;

/// A node is marked down after this many heartbeat periods without one.
const MISSED_HEARTBEATS_BEFORE_DOWN: u32 = 3;
/// Attempts at a write that keeps meeting concurrent changes to the same objects.
const WRITE_ATTEMPTS: usize = 5;

/// One `UpdateTaskStatus` call waiting for its reports to be written.
type QueuedReports = (Vec<NodeReport>, oneshot::Sender<Result<(), Status>>);

struct Session {
    /// Empty for a node that was ready when this dispatcher started and has not come back yet:
    /// it gets the same grace as a live session before it is marked down.
    session_id: String,
    last_heartbeat: Instant,
    /// Set to true when the session ends, which closes its streams.
    ended: watch::Sender<bool>,
    /// How many more `UpdateTaskStatus` calls the session may make now.
    status_calls: TokenBucket,
    /// How many more heartbeats the session may send now.
    heartbeats: TokenBucket,
}

impl Session {
    fn new(session_id: String, ended: watch::Sender<bool>, now: Instant) -> Session {
        Session {
            session_id,
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
    let ended = watch::channel(false).0;
    let now = Instant::now();
    let nodes: Vec<Node> =
        store.local_view(|view| objects::decode_all::<Node>(view.list(Node::KIND)))?;
    Ok(nodes
        .into_iter()
        .filter(|node| {
            node.status
                .as_ref()
                .is_some_and(|status| status.state() == node_status::State::Ready)
        })
        .map(|node| (node.id, Session::new(String::new(), ended.clone(), now)))
        .collect())
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

    /// The node a live session belongs to.
    /// Runs `visit` on a live session, provided the caller's certificate is its node's: a node
    /// acts only in its own session. `visit` gets the node id and the session.
    fn with_callers_session<R>(
        &self,
        caller: &PeerIdentity,
        session_id: &str,
        visit: impl FnOnce(&str, &mut Session) -> R,
    ) -> Result<R, Status> {
        let mut sessions = self.sessions();
        let (node_id, session) = sessions
            .iter_mut()
            .find(|(_, session)| !session_id.is_empty() && session.session_id == session_id)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "session {session_id:?} is not open (it expired or was replaced): open a new session"
                ))
            })?;
        if caller.node_id != *node_id {
            return Err(Status::permission_denied(format!(
                "session {session_id} belongs to node {node_id}, not to the caller's node {}",
                caller.node_id
            )));
        }
        Ok(visit(node_id, session))
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

    fn require_leader(&self) -> Result<(), Status> {
        let status = self.store.status();
        if status.is_leader {
            return Ok(());
        }
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

    /// What every session carries from the cluster object: the roots nodes must trust now, and
    /// the network keys.
    fn cluster_parts(&self) -> (String, Vec<EncryptionKey>) {
        self.store
            .local_view(|view| objects::cluster_of(view).ok().flatten())
            .map(|cluster| {
                (
                    crate::node_ca::trust_bundle(&cluster),
                    cluster.network_bootstrap_keys,
                )
            })
            .unwrap_or_default()
    }

    fn managers(&self) -> Vec<WeightedPeer> {
        self.store
            .local_view(|view| objects::decode_all::<Node>(view.list(Node::KIND)))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|node| {
                let manager = node.manager_status?;
                Some(WeightedPeer {
                    peer: Some(Peer {
                        node_id: node.id,
                        addr: manager.addr,
                    }),
                    weight: 1,
                })
            })
            .collect()
    }
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
async fn mark_ready_again(store: &Store, node_id: &str) {
    let stored = store.local_view(|view| {
        view.get(Node::KIND, node_id)
            .map(objects::decode::<Node>)
            .transpose()
    });
    let ready = stored
        .ok()
        .flatten()
        .and_then(|node| node.status)
        .is_some_and(|status| status.state() == node_status::State::Ready);
    if ready {
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
    let mut was_leader = shared.store.status().is_leader;
    loop {
        let period = shared.heartbeat_period();
        tokio::select! {
            _ = tokio::time::sleep(period / 2) => {}
            _ = stop.changed() => return,
        }
        let is_leader = shared.store.status().is_leader;
        if is_leader != was_leader {
            was_leader = is_leader;
            let replacement = if is_leader {
                match grace_sessions(&shared.store) {
                    Ok(sessions) => sessions,
                    Err(error) => {
                        tracing::warn!(%error, "could not read the nodes after becoming leader");
                        HashMap::new()
                    }
                }
            } else {
                HashMap::new()
            };
            let previous = std::mem::replace(&mut *shared.sessions(), replacement);
            for session in previous.into_values() {
                let _ = session.ended.send(true);
            }
            tracing::info!(leader = is_leader, "leadership changed: sessions reset");
            continue;
        }
        if !is_leader {
            continue;
        }
        let deadline = period * MISSED_HEARTBEATS_BEFORE_DOWN;
        let silent: Vec<String> = {
            let mut sessions = shared.sessions();
            let silent: Vec<String> = sessions
                .iter()
                .filter(|(_, session)| session.last_heartbeat.elapsed() > deadline)
                .map(|(node_id, _)| node_id.clone())
                .collect();
            for node_id in &silent {
                if let Some(session) = sessions.remove(node_id) {
                    let _ = session.ended.send(true);
                }
            }
            silent
        };
        for node_id in silent {
            tracing::warn!(node = %node_id, "no heartbeat: marking the node down");
            shared.metrics.nodes_marked_down.inc();
            let result = objects::update_node(&shared.store, &node_id, |node| {
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
    sender: mpsc::Sender<Result<SessionMessage, Status>>,
    mut ended: watch::Receiver<bool>,
) {
    let store = Arc::clone(&shared.store);
    let mut changes = store.watch(store.local_view(|view| view.applied_index()) + 1);
    let mut last = first.clone();
    if sender.send(Ok(first)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = session_ended(&mut ended) => {
                let _ = sender
                    .send(Err(Status::unavailable(
                        "the session ended (missed heartbeats, a newer session or a new leader): open a new one",
                    )))
                    .await;
                return;
            }
            _ = sender.closed() => return,
            next = changes.next() => {
                match next {
                    Ok(committed) => {
                        let relevant = committed.changes.iter().any(|change| {
                            let kind = &change.object().kind;
                            kind == Node::KIND || kind == Cluster::KIND
                        });
                        if !relevant {
                            continue;
                        }
                    }
                    // Fell behind the watch buffer: start again from what is applied now.
                    Err(_) => changes = store.watch(store.local_view(|view| view.applied_index()) + 1),
                }
                let node = store.local_view(|view| {
                    view.get(Node::KIND, &node_id).and_then(|record| objects::decode::<Node>(record).ok())
                });
                let Some(node) = node else {
                    let _ = sender
                        .send(Err(Status::permission_denied(format!(
                            "node {node_id} was removed from the swarm: join it again with 'shoal swarm join'"
                        ))))
                        .await;
                    return;
                };
                let (root_ca, network_keys) = shared.cluster_parts();
                let next = SessionMessage {
                    node: Some(node),
                    managers: shared.managers(),
                    root_ca,
                    network_keys,
                    ..last.clone()
                };
                if next != last {
                    if sender.send(Ok(next.clone())).await.is_err() {
                        return;
                    }
                    last = next;
                }
            }
        }
    }
}

/// Returns once the session ends.
async fn session_ended(ended: &mut watch::Receiver<bool>) {
    // The borrow the wait returns is dropped at once: it may not be held across an await.
    let _ = ended.wait_for(|ended| *ended).await.is_ok();
}

type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A stream fed by a spawned task; it ends when the task drops its sender.
fn channel_stream<T: Send + 'static>(
    receiver: mpsc::Receiver<Result<T, Status>>,
) -> ServerStream<T> {
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

#[tonic::async_trait]
impl Dispatcher for DispatcherService {
    type SessionStream = ServerStream<SessionMessage>;

    async fn session(
        &self,
        request: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let shared = &self.shared;
        shared.require_leader()?;
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
        let node = objects::update_node(&shared.store, &node_id, |node| {
            if description.is_some() {
                node.description = description.clone();
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
            Session::new(session_id.clone(), ended, Instant::now()),
        ) {
            // A node has one session: a reconnecting agent replaces its old one.
            let _ = previous.ended.send(true);
        }
        tracing::info!(node = %node_id, session = %session_id, "session opened");
        let (sender, receiver) = mpsc::channel(4);
        let (root_ca, network_keys) = shared.cluster_parts();
        let first = SessionMessage {
            session_id,
            node: Some(node),
            managers: shared.managers(),
            heartbeat_period: Some(proto_duration(shared.heartbeat_period())),
            root_ca,
            network_keys,
        };
        tokio::spawn(follow_session(
            Arc::clone(shared),
            node_id,
            first,
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
        mark_ready_again(&self.shared.store, &node_id).await;
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
        let store = Arc::clone(&self.shared.store);
        let sent_messages = self.shared.metrics.assignment_messages.clone();
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut changes = store.watch(store.local_view(|view| view.applied_index()) + 1);
            let mut sent_key = None;
            let mut version = 0;
            loop {
                let computed = store.local_view(|view| assignments::assignment_set(view, &node_id));
                match computed {
                    Ok((key, mut message)) if sent_key.as_ref() != Some(&key) => {
                        version += 1;
                        message.version = version;
                        // The parts of one set go out back to back, computed from one read.
                        for part in
                            assignments::into_parts(message, assignments::ASSIGNMENT_PART_BYTES)
                        {
                            if sender.send(Ok(part)).await.is_err() {
                                return;
                            }
                            sent_messages.inc();
                        }
                        sent_key = Some(key);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                }
                tokio::select! {
                    next = changes.next() => {
                        if let Err(StoreError::WatchCompacted { .. }) = next {
                            // The set is recomputed from the whole store, so a fresh position
                            // loses nothing.
                            changes = store.watch(store.local_view(|view| view.applied_index()) + 1);
                        } else if let Err(error) = next {
                            let _ = sender.send(Err(error.into())).await;
                            return;
                        }
                    }
                    _ = session_ended(&mut ended) => return,
                    _ = sender.closed() => return,
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
                            if sender.send(Ok(subscription)).await.is_err() {
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
    use raft_store::{ReadConsistency, StoreConfig, Transaction};
    use shoal_proto::api::{TaskState, TaskStatus};

    use super::*;
    use crate::test_pki as pki;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_status_batch_over_the_proposal_limit_is_written_in_several_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut config = StoreConfig::new(
            1,
            dir.path(),
            &addr,
            pki::TestPki::new().identity(1),
            pki::data_key(1),
        );
        // Small enough that the batch below is several proposals' worth.
        config.max_proposal_bytes = 16 * 1024;
        let store = Store::open(config).await.unwrap();
        store.serve(listener).unwrap();
        store.bootstrap().await.unwrap();
        store
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
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
