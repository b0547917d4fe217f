//! The agent's async shell against a fake Dispatcher (tonic on 127.0.0.1, no TLS) and an
//! in-memory engine whose containers run until stopped: tasks run and are reported in few
//! batches, dropped tasks are stopped and removed, exits and health reach the managers, lost
//! sessions and restarts duplicate nothing, missing images fail clearly, logs are published, and
//! networked tasks are prepared before their containers are made and kept in the node's set of
//! endpoints until their containers are gone.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use engine::{
    ContainerInfo, ContainerSpec, EngineError, HealthState, HealthStatus, LogEntry, RunStatus,
    ShimState,
};
use futures::Stream;
use shoal_proto::api;
use shoal_proto::api::TaskState;
use shoal_proto::api::dispatcher_server::{Dispatcher, DispatcherServer};
use support::{on_front_network, task, with_container, with_healthcheck};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use worker::networking::{
    BoxFuture, LocalEndpoint, NoNetworking, PreparedNetworks, TaskNetworking, TaskNetworks,
};
use worker::{AgentConfig, DispatcherConnector, ImageProvider, LABEL_TASK_ID, WorkerError};

const PATIENCE: Duration = Duration::from_secs(15);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `condition` until it holds; fails the test after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ----- the fake engine -----

struct FakeContainer {
    spec: ContainerSpec,
    state: watch::Sender<ShimState>,
    health: Option<HealthStatus>,
    logs: Vec<LogEntry>,
    /// Followers' channels stay open until the container is removed.
    log_followers: Vec<mpsc::Sender<engine::Result<LogEntry>>>,
}

#[derive(Default)]
struct FakeEngineState {
    containers: BTreeMap<String, FakeContainer>,
    next_id: u64,
    creates: usize,
    stops: Vec<String>,
    images: HashSet<String>,
    pullable: HashSet<String>,
    pulls: usize,
}

/// An engine in memory: containers "run" from start until stopped or told to exit.
#[derive(Default)]
struct FakeEngine {
    state: Mutex<FakeEngineState>,
}

fn normalized(image: &str) -> String {
    engine::store::normalize_reference(image).unwrap_or_else(|_| image.to_owned())
}

impl FakeEngine {
    fn with_images(images: &[&str]) -> Arc<FakeEngine> {
        let engine = FakeEngine::default();
        lock(&engine.state).images = images.iter().map(|image| normalized(image)).collect();
        Arc::new(engine)
    }

    fn state(&self) -> MutexGuard<'_, FakeEngineState> {
        lock(&self.state)
    }

    fn creates(&self) -> usize {
        self.state().creates
    }

    /// Container ids of a task, whatever their state.
    fn containers_of(&self, task_id: &str) -> Vec<String> {
        self.state()
            .containers
            .iter()
            .filter(|(_, container)| {
                container.spec.labels.get(LABEL_TASK_ID).map(String::as_str) == Some(task_id)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn only_container_of(&self, task_id: &str) -> String {
        let containers = self.containers_of(task_id);
        assert_eq!(
            containers.len(),
            1,
            "containers of {task_id}: {containers:?}"
        );
        containers[0].clone()
    }

    fn running(&self) -> usize {
        self.state()
            .containers
            .values()
            .filter(|container| container.state.borrow().status == RunStatus::Running)
            .count()
    }

    fn is_running(&self, container_id: &str) -> bool {
        self.state()
            .containers
            .get(container_id)
            .is_some_and(|container| container.state.borrow().status == RunStatus::Running)
    }

    /// The container's process exits by itself.
    fn exit(&self, container_id: &str, exit_code: i32) {
        let state = self.state();
        let container = state
            .containers
            .get(container_id)
            .expect("container exists");
        container.state.send_modify(|shim| {
            shim.status = RunStatus::Exited;
            shim.exit_code = Some(exit_code);
            shim.pid = None;
        });
    }

    fn set_health(&self, container_id: &str, health: HealthStatus) {
        let mut state = self.state();
        let container = state
            .containers
            .get_mut(container_id)
            .expect("container exists");
        container.health = Some(health);
    }

    fn set_logs(&self, container_id: &str, logs: Vec<LogEntry>) {
        let mut state = self.state();
        let container = state
            .containers
            .get_mut(container_id)
            .expect("container exists");
        container.logs = logs;
    }

    fn not_found(id: &str) -> EngineError {
        EngineError::ContainerNotFound(id.to_owned())
    }
}

impl engine::Engine for FakeEngine {
    async fn create(&self, spec: ContainerSpec) -> engine::Result<String> {
        let mut state = self.state();
        if !state.images.contains(&normalized(&spec.image)) {
            return Err(EngineError::ImageNotFound(spec.image.clone()));
        }
        if state
            .containers
            .values()
            .any(|container| container.spec.name.is_some() && container.spec.name == spec.name)
        {
            return Err(EngineError::NameInUse(spec.name.unwrap_or_default()));
        }
        state.next_id += 1;
        state.creates += 1;
        let id = format!("container{:04}", state.next_id);
        state.containers.insert(
            id.clone(),
            FakeContainer {
                spec,
                state: watch::channel(ShimState::default()).0,
                health: None,
                logs: Vec::new(),
                log_followers: Vec::new(),
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> engine::Result<()> {
        let state = self.state();
        let container = state
            .containers
            .get(id)
            .ok_or_else(|| Self::not_found(id))?;
        container.state.send_modify(|shim| {
            shim.status = RunStatus::Running;
            shim.pid = Some(4242);
        });
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout: Option<Duration>) -> engine::Result<()> {
        let mut state = self.state();
        state.stops.push(id.to_owned());
        let container = state
            .containers
            .get(id)
            .ok_or_else(|| Self::not_found(id))?;
        container.state.send_if_modified(|shim| {
            if shim.status != RunStatus::Running {
                return false;
            }
            shim.status = RunStatus::Exited;
            shim.exit_code = Some(143);
            shim.pid = None;
            true
        });
        Ok(())
    }

    async fn remove(&self, id: &str, _force: bool) -> engine::Result<()> {
        // Dropping the state sender tells waiters the container is gone.
        self.state()
            .containers
            .remove(id)
            .map(drop)
            .ok_or_else(|| Self::not_found(id))
    }

    async fn inspect(&self, id: &str) -> engine::Result<ContainerInfo> {
        let state = self.state();
        let container = state
            .containers
            .get(id)
            .ok_or_else(|| Self::not_found(id))?;
        Ok(info(id, container))
    }

    async fn list(&self, all: bool) -> engine::Result<Vec<ContainerInfo>> {
        Ok(self
            .state()
            .containers
            .iter()
            .map(|(id, container)| info(id, container))
            .filter(|info| all || info.state.status == RunStatus::Running)
            .collect())
    }

    async fn wait(&self, id: &str) -> engine::Result<ShimState> {
        let mut state = {
            let engine = self.state();
            let container = engine
                .containers
                .get(id)
                .ok_or_else(|| Self::not_found(id))?;
            container.state.subscribe()
        };
        loop {
            if state.borrow_and_update().status != RunStatus::Running {
                return Ok(state.borrow().clone());
            }
            if state.changed().await.is_err() {
                return Err(Self::not_found(id));
            }
        }
    }

    async fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> engine::Result<mpsc::Receiver<engine::Result<LogEntry>>> {
        let mut state = self.state();
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| Self::not_found(id))?;
        let skip = tail.map_or(0, |tail| container.logs.len().saturating_sub(tail));
        let (sender, receiver) = mpsc::channel(container.logs.len().max(1));
        for entry in container.logs.iter().skip(skip) {
            sender
                .try_send(Ok(entry.clone()))
                .expect("channel has room");
        }
        if follow {
            container.log_followers.push(sender);
        }
        Ok(receiver)
    }

    async fn health(&self, id: &str) -> engine::Result<Option<HealthState>> {
        let state = self.state();
        let container = state
            .containers
            .get(id)
            .ok_or_else(|| Self::not_found(id))?;
        Ok(container.health.map(|status| HealthState {
            status,
            ..HealthState::default()
        }))
    }
}

impl ImageProvider for FakeEngine {
    async fn has_image(&self, reference: &str) -> engine::Result<bool> {
        Ok(self.state().images.contains(&normalized(reference)))
    }

    async fn pull(&self, reference: &str) -> engine::Result<()> {
        let mut state = self.state();
        let reference = normalized(reference);
        if !state.pullable.contains(&reference) {
            return Err(EngineError::Runtime(format!(
                "pulling {reference}: manifest unknown"
            )));
        }
        state.pulls += 1;
        state.images.insert(reference);
        Ok(())
    }
}

fn info(id: &str, container: &FakeContainer) -> ContainerInfo {
    ContainerInfo {
        id: id.to_owned(),
        name: container.spec.name.clone().unwrap_or_default(),
        image: container.spec.image.clone(),
        image_id: engine::util::Digest::of(container.spec.image.as_bytes()),
        args: Vec::new(),
        created: String::new(),
        state: container.state.borrow().clone(),
        health: container.health.map(|status| HealthState {
            status,
            ..HealthState::default()
        }),
        spec: container.spec.clone(),
    }
}

// ----- the fake dispatcher -----

#[derive(Default)]
struct DispatcherState {
    sessions_opened: usize,
    descriptions: Vec<api::NodeDescription>,
    /// The open session's id and the switch that ends it.
    current_session: Option<(String, watch::Sender<bool>)>,
    heartbeats: usize,
    status_calls: usize,
    statuses: BTreeMap<String, api::TaskStatus>,
    log_listener: Option<mpsc::UnboundedSender<api::LogSubscription>>,
    published: Vec<api::PublishLogsMessage>,
}

/// How the fake sends a set: whole, or a task a part as the real dispatcher splits large sets,
/// optionally holding the last part back.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Parts {
    #[default]
    Whole,
    OneTaskEach,
    OneTaskEachWithoutTheLast,
}

/// Sends each session the assignment set the test chose, numbering sets from 1 per session
/// as the real dispatcher does, and records everything the agent sends.
#[derive(Clone)]
struct FakeDispatcher {
    state: Arc<Mutex<DispatcherState>>,
    assignments: watch::Sender<(Vec<api::Task>, Parts)>,
}

type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl FakeDispatcher {
    fn new() -> FakeDispatcher {
        FakeDispatcher {
            state: Arc::default(),
            assignments: watch::channel((Vec::new(), Parts::Whole)).0,
        }
    }

    fn state(&self) -> MutexGuard<'_, DispatcherState> {
        lock(&self.state)
    }

    fn assign(&self, tasks: Vec<api::Task>) {
        self.assign_in_parts(tasks, Parts::Whole);
    }

    fn assign_in_parts(&self, tasks: Vec<api::Task>, parts: Parts) {
        self.assignments.send_replace((tasks, parts));
    }

    fn sessions_opened(&self) -> usize {
        self.state().sessions_opened
    }

    fn status_calls(&self) -> usize {
        self.state().status_calls
    }

    fn status(&self, task_id: &str) -> Option<api::TaskStatus> {
        self.state().statuses.get(task_id).cloned()
    }

    fn state_of(&self, task_id: &str) -> Option<TaskState> {
        self.status(task_id)
            .and_then(|status| TaskState::try_from(status.state).ok())
    }

    fn all_in_state(&self, task_ids: &[String], wanted: TaskState) -> bool {
        task_ids
            .iter()
            .all(|task_id| self.state_of(task_id) == Some(wanted))
    }

    /// Ends the open session, as a dispatcher does when it loses leadership.
    fn end_session(&self) {
        let mut state = self.state();
        if let Some((_, ended)) = state.current_session.take() {
            let _ = ended.send(true);
        }
        state.log_listener = None;
    }

    fn request_logs(&self, subscription: api::LogSubscription) {
        let state = self.state();
        let listener = state.log_listener.as_ref().expect("a log listener");
        listener.send(subscription).expect("the listener is open");
    }

    fn published(&self, subscription_id: &str) -> Vec<api::PublishLogsMessage> {
        self.state()
            .published
            .iter()
            .filter(|message| message.subscription_id == subscription_id)
            .cloned()
            .collect()
    }

    fn session_ended(&self) -> Result<watch::Receiver<bool>, Status> {
        let state = self.state();
        match &state.current_session {
            Some((_, ended)) => Ok(ended.subscribe()),
            None => Err(Status::not_found("no session")),
        }
    }

    fn check_session(&self, session_id: &str) -> Result<(), Status> {
        match &self.state().current_session {
            Some((current, _)) if current == session_id => Ok(()),
            _ => Err(Status::not_found(format!(
                "session {session_id} is not open"
            ))),
        }
    }

    async fn serve() -> (FakeDispatcher, SocketAddr) {
        let dispatcher = FakeDispatcher::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let service = DispatcherServer::new(dispatcher.clone());
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .expect("the fake dispatcher serves");
        });
        (dispatcher, address)
    }
}

#[tonic::async_trait]
impl Dispatcher for FakeDispatcher {
    type SessionStream = ServerStream<api::SessionMessage>;

    async fn session(
        &self,
        request: Request<api::SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let request = request.into_inner();
        let (ended, mut ended_receiver) = watch::channel(false);
        let session_id = {
            let mut state = self.state();
            state.sessions_opened += 1;
            state.descriptions.extend(request.description);
            let session_id = format!("session-{}", state.sessions_opened);
            if let Some((_, previous)) = state.current_session.replace((session_id.clone(), ended))
            {
                let _ = previous.send(true);
            }
            session_id
        };
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            let first = api::SessionMessage {
                session_id,
                heartbeat_period: Some(api::Duration {
                    seconds: 0,
                    nanos: 200_000_000,
                }),
                ..api::SessionMessage::default()
            };
            if sender.send(Ok(first)).await.is_err() {
                return;
            }
            // Holding the sender keeps the stream open until the session ends.
            let _ = ended_receiver.wait_for(|ended| *ended).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn heartbeat(
        &self,
        request: Request<api::HeartbeatRequest>,
    ) -> Result<Response<api::HeartbeatResponse>, Status> {
        self.check_session(&request.into_inner().session_id)?;
        self.state().heartbeats += 1;
        Ok(Response::new(api::HeartbeatResponse {
            period: Some(api::Duration {
                seconds: 0,
                nanos: 200_000_000,
            }),
        }))
    }

    async fn update_task_status(
        &self,
        request: Request<api::UpdateTaskStatusRequest>,
    ) -> Result<Response<api::UpdateTaskStatusResponse>, Status> {
        let request = request.into_inner();
        self.check_session(&request.session_id)?;
        let mut state = self.state();
        state.status_calls += 1;
        for update in request.updates {
            if let Some(status) = update.status {
                state.statuses.insert(update.task_id, status);
            }
        }
        Ok(Response::new(api::UpdateTaskStatusResponse {}))
    }

    type AssignmentsStream = ServerStream<api::AssignmentsMessage>;

    async fn assignments(
        &self,
        request: Request<api::AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        self.check_session(&request.into_inner().session_id)?;
        let mut ended = self.session_ended()?;
        let mut assignments = self.assignments.subscribe();
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut version = 0;
            loop {
                version += 1;
                let (tasks, parts) = assignments.borrow_and_update().clone();
                let mut messages: Vec<api::AssignmentsMessage> = if parts == Parts::Whole {
                    vec![api::AssignmentsMessage {
                        version,
                        tasks,
                        ..api::AssignmentsMessage::default()
                    }]
                } else {
                    let count = tasks.len();
                    tasks
                        .into_iter()
                        .enumerate()
                        .map(|(index, task)| api::AssignmentsMessage {
                            version,
                            tasks: vec![task],
                            part: index as u32,
                            more: index + 1 < count,
                            ..api::AssignmentsMessage::default()
                        })
                        .collect()
                };
                if parts == Parts::OneTaskEachWithoutTheLast {
                    messages.pop();
                }
                for message in messages {
                    if sender.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = assignments.changed() => if changed.is_err() { return },
                    _ = ended.wait_for(|ended| *ended) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type LogSubscriptionsStream = ServerStream<api::LogSubscription>;

    async fn log_subscriptions(
        &self,
        request: Request<api::LogSubscriptionsRequest>,
    ) -> Result<Response<Self::LogSubscriptionsStream>, Status> {
        self.check_session(&request.into_inner().session_id)?;
        let (sender, receiver) = mpsc::unbounded_channel();
        self.state().log_listener = Some(sender);
        Ok(Response::new(Box::pin(
            UnboundedReceiverStream::new(receiver).map(Ok),
        )))
    }

    async fn publish_logs(
        &self,
        request: Request<Streaming<api::PublishLogsMessage>>,
    ) -> Result<Response<api::PublishLogsResponse>, Status> {
        let mut messages = request.into_inner();
        while let Some(message) = messages.next().await {
            let message = message?;
            let close = message.close;
            self.state().published.push(message);
            if close {
                break;
            }
        }
        Ok(Response::new(api::PublishLogsResponse {}))
    }
}

// ----- the agent under test -----

struct PlainConnector {
    address: SocketAddr,
}

impl DispatcherConnector for PlainConnector {
    fn connect(&self) -> impl Future<Output = Result<tonic::transport::Channel, String>> + Send {
        let address = self.address;
        async move {
            tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                .map_err(|error| error.to_string())?
                .connect()
                .await
                .map_err(|error| error.to_string())
        }
    }
}

struct RunningAgent {
    stop: watch::Sender<bool>,
    agent: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

impl RunningAgent {
    fn start(engine: &Arc<FakeEngine>, state_dir: &Path, address: SocketAddr) -> RunningAgent {
        RunningAgent::start_with_networking(engine, state_dir, address, Arc::new(NoNetworking))
    }

    fn start_with_networking(
        engine: &Arc<FakeEngine>,
        state_dir: &Path,
        address: SocketAddr,
        networking: Arc<dyn TaskNetworking>,
    ) -> RunningAgent {
        let (stop, stop_receiver) = watch::channel(false);
        let config = AgentConfig {
            node_id: "node1".to_owned(),
            hostname: "worker-1".to_owned(),
            state_dir: state_dir.to_path_buf(),
            engine_version: "shoal-test".to_owned(),
        };
        let agent = tokio::spawn(worker::run_agent(
            config,
            Arc::clone(engine),
            PlainConnector { address },
            stop_receiver,
            networking,
        ));
        RunningAgent { stop, agent }
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        let result = tokio::time::timeout(PATIENCE, self.agent)
            .await
            .expect("the agent stops promptly")
            .expect("the agent did not panic");
        assert!(result.is_ok(), "the agent failed: {result:?}");
    }
}

fn tasks(count: usize) -> (Vec<api::Task>, Vec<String>) {
    let tasks: Vec<api::Task> = (1..=count)
        .map(|slot| task(&format!("task{slot:03}"), slot as u64, TaskState::Running))
        .collect();
    let ids = tasks.iter().map(|task| task.id.clone()).collect();
    (tasks, ids)
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_tasks_run_and_are_reported_in_few_batches() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&["busybox"]);
    let state_dir = tempfile::tempdir().expect("tempdir");
    let (tasks, task_ids) = tasks(50);
    dispatcher.assign(tasks);
    let agent = RunningAgent::start(&engine, state_dir.path(), address);

    wait_until("all 50 tasks are reported running", PATIENCE, || {
        dispatcher.all_in_state(&task_ids, TaskState::Running)
    })
    .await;
    assert_eq!(engine.running(), 50);
    assert_eq!(engine.creates(), 50);
    let calls = dispatcher.status_calls();
    eprintln!("CALLS {calls}");
    assert!(
        calls <= 10,
        "50 tasks through PREPARING, READY, STARTING and RUNNING took {calls} status calls"
    );
    let status = dispatcher.status("task001").expect("a status");
    let Some(api::task_status::RuntimeStatus::Container(container)) = status.runtime_status else {
        panic!("no container status in {status:?}");
    };
    assert_eq!(container.container_id, engine.only_container_of("task001"));
    assert!(status.timestamp.is_some(), "statuses carry the tick's time");

    wait_until("a heartbeat arrives", PATIENCE, || {
        dispatcher.state().heartbeats > 0
    })
    .await;
    let description = dispatcher.state().descriptions[0].clone();
    assert_eq!(description.hostname, "worker-1");
    let platform = description.platform.expect("a platform");
    assert_eq!(platform.os, "linux");
    assert!(!platform.architecture.is_empty());
    let resources = description.resources.expect("resources");
    assert!(resources.nano_cpus >= 1_000_000_000, "{resources:?}");
    assert!(resources.memory_bytes > 0, "{resources:?}");
    assert_eq!(
        description.engine.expect("an engine").engine_version,
        "shoal-test"
    );
    agent.stop().await;
    assert_eq!(engine.running(), 50, "containers outlive the agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_dropped_or_shut_down_are_stopped_and_only_dropped_ones_removed() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&["busybox"]);
    let state_dir = tempfile::tempdir().expect("tempdir");
    let (all, task_ids) = tasks(3);
    dispatcher.assign(all.clone());
    let agent = RunningAgent::start(&engine, state_dir.path(), address);
    wait_until("three tasks run", PATIENCE, || {
        dispatcher.all_in_state(&task_ids, TaskState::Running)
    })
    .await;
    let kept = engine.only_container_of("task001");
    let shut_down = engine.only_container_of("task002");
    let dropped = engine.only_container_of("task003");

    let mut shutdown_task = all[1].clone();
    shutdown_task.desired_state = TaskState::Shutdown as i32;
    dispatcher.assign(vec![all[0].clone(), shutdown_task]);

    wait_until("the dropped task's container is removed", PATIENCE, || {
        engine.containers_of("task003").is_empty()
    })
    .await;
    wait_until("the shut-down task is reported", PATIENCE, || {
        dispatcher.state_of("task002") == Some(TaskState::Shutdown)
    })
    .await;
    assert!(engine.state().stops.contains(&dropped));
    assert!(engine.state().stops.contains(&shut_down));
    assert!(!engine.is_running(&shut_down));
    assert_eq!(
        engine.containers_of("task002"),
        [shut_down],
        "a shut-down task keeps its container until it is unassigned"
    );
    assert!(engine.is_running(&kept));
    assert_eq!(engine.creates(), 3);
    agent.stop().await;
}

/// A set sent in parts is acted on only once its last part has come: a set missing its last
/// task's part would otherwise look like that task dropped, and remove its container.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_set_in_parts_is_acted_on_only_once_whole() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&["busybox"]);
    let state_dir = tempfile::tempdir().expect("tempdir");
    let (all, task_ids) = tasks(3);
    dispatcher.assign_in_parts(all.clone(), Parts::OneTaskEach);
    let agent = RunningAgent::start(&engine, state_dir.path(), address);
    wait_until("three tasks sent in parts run", PATIENCE, || {
        dispatcher.all_in_state(&task_ids, TaskState::Running)
    })
    .await;
    let last = engine.only_container_of("task003");

    // The same set again without its last part: nothing may change.
    dispatcher.assign_in_parts(all.clone(), Parts::OneTaskEachWithoutTheLast);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(engine.is_running(&last), "a half set stopped task003");
    assert!(
        engine.state().stops.is_empty(),
        "{:?}",
        engine.state().stops
    );

    // A whole set without task003, in parts, removes it.
    dispatcher.assign_in_parts(all[..2].to_vec(), Parts::OneTaskEach);
    wait_until("the dropped task's container is removed", PATIENCE, || {
        engine.containers_of("task003").is_empty()
    })
    .await;
    assert_eq!(engine.creates(), 3);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exits_and_vanished_containers_are_reported() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&["busybox"]);
    let state_dir = tempfile::tempdir().expect("tempdir");
    let (tasks, task_ids) = tasks(3);
    dispatcher.assign(tasks);
    let agent = RunningAgent::start(&engine, state_dir.path(), address);
    wait_until("the tasks run", PATIENCE, || {
        dispatcher.all_in_state(&task_ids, TaskState::Running)
    })
    .await;

    engine.exit(&engine.only_container_of("task001"), 3);
    engine.exit(&engine.only_container_of("task002"), 0);
    // Removed behind the agent's back.
    engine::Engine::remove(&*engine, &engine.only_container_of("task003"), true)
        .await
        .expect("remove");
    wait_until("the exits and the loss are reported", PATIENCE, || {
        dispatcher.state_of("task001") == Some(TaskState::Failed)
            && dispatcher.state_of("task002") == Some(TaskState::Complete)
            && dispatcher.state_of("task003") == Some(TaskState::Failed)
    })
    .await;
    let lost = dispatcher.status("task003").expect("a status");
    assert_eq!(lost.err, "task: container is missing");
    assert_eq!(
        engine.creates(),
        3,
        "a lost container is not replaced by the worker"
    );
    let failed = dispatcher.status("task001").expect("a status");
    assert!(failed.err.contains("non-zero exit (3)"), "{failed:?}");
    let Some(api::task_status::RuntimeStatus::Container(container)) = failed.runtime_status else {
        panic!("no container status in {failed:?}");
    };
    assert_eq!(container.exit_code, 3);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_session_is_reopened_and_nothing_is_created_twice() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&["busybox"]);
    let state_dir = tempfile::tempdir().expect("tempdir");
    let (first_five, first_ids) = tasks(5);
    dispatcher.assign(first_five);
    let agent = RunningAgent::start(&engine, state_dir.path(), address);
    wait_until("five tasks run", PATIENCE, || {
        dispatcher.all_in_state(&first_ids, TaskState::Running)
    })
    .await;

    // The new session's first set is numbered 1 again, and it is the only one that names the
    // two new tasks: they run only if the agent does not take it for a stale set.
    let (seven, seven_ids) = tasks(7);
    dispatcher.end_session();
    dispatcher.assign(seven);
    wait_until("a second session opens", PATIENCE, || {
        dispatcher.sessions_opened() >= 2
    })
    .await;
    wait_until("all seven tasks run", PATIENCE, || {
        dispatcher.all_in_state(&seven_ids, TaskState::Running)
    })
    .await;
    assert_eq!(engine.creates(), 7);
    for task_id in &seven_ids {
        assert_eq!(engine.containers_of(task_id).len(), 1, "{task_id}");
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_adopts_its_containers_instead_of_creating_new_ones() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&["busybox"]);
    let state_dir = tempfile::tempdir().expect("tempdir");
    let (three, three_ids) = tasks(3);
    dispatcher.assign(three);
    let agent = RunningAgent::start(&engine, state_dir.path(), address);
    wait_until("three tasks run", PATIENCE, || {
        dispatcher.all_in_state(&three_ids, TaskState::Running)
    })
    .await;
    agent.stop().await;
    assert_eq!(engine.running(), 3);

    // While the daemon is away a fourth task is assigned; the restarted agent's first set is
    // numbered 1 by the new session, below the version it persisted.
    let (four, four_ids) = tasks(4);
    dispatcher.assign(four);
    let calls_before_restart = dispatcher.status_calls();
    let agent = RunningAgent::start(&engine, state_dir.path(), address);
    wait_until("all four tasks run", PATIENCE, || {
        dispatcher.all_in_state(&four_ids, TaskState::Running)
            && dispatcher.status_calls() > calls_before_restart
    })
    .await;
    assert_eq!(
        engine.creates(),
        4,
        "the three running containers were adopted"
    );
    assert_eq!(dispatcher.sessions_opened(), 2);

    // The adopted containers are watched like the agent's own.
    engine.exit(&engine.only_container_of("task002"), 7);
    wait_until("the adopted container's exit is reported", PATIENCE, || {
        dispatcher.state_of("task002") == Some(TaskState::Failed)
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_image_is_pulled_once_or_rejects_the_task_with_what_to_do() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&[]);
    engine
        .state()
        .pullable
        .insert(normalized("registry.example.com/app:1"));
    let state_dir = tempfile::tempdir().expect("tempdir");
    let mut assigned = Vec::new();
    for slot in 1..=5 {
        assigned.push(with_container(
            task(&format!("pulled{slot}"), slot, TaskState::Running),
            |container| container.image = "registry.example.com/app:1".to_owned(),
        ));
    }
    assigned.push(with_container(
        task("ghost", 6, TaskState::Running),
        |container| container.image = "ghost:1".to_owned(),
    ));
    dispatcher.assign(assigned);
    let agent = RunningAgent::start(&engine, state_dir.path(), address);

    wait_until("the task without an image is rejected", PATIENCE, || {
        dispatcher.state_of("ghost") == Some(TaskState::Rejected)
    })
    .await;
    let rejected = dispatcher.status("ghost").expect("a status");
    assert!(
        rejected.err.contains(
            "No such image: ghost:1 (import, load or pull it on this node, or push it to a registry the node can reach"
        ),
        "{rejected:?}"
    );
    assert!(engine.containers_of("ghost").is_empty());

    let pulled = ids(&["pulled1", "pulled2", "pulled3", "pulled4", "pulled5"]);
    wait_until("the tasks whose image was pulled run", PATIENCE, || {
        dispatcher.all_in_state(&pulled, TaskState::Running)
    })
    .await;
    assert_eq!(engine.state().pulls, 1, "five tasks share one pull");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_with_a_healthcheck_runs_once_healthy() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&["busybox"]);
    let state_dir = tempfile::tempdir().expect("tempdir");
    dispatcher.assign(vec![with_healthcheck(task(
        "checked",
        1,
        TaskState::Running,
    ))]);
    let agent = RunningAgent::start(&engine, state_dir.path(), address);
    wait_until("the task is starting", PATIENCE, || {
        dispatcher.state_of("checked") == Some(TaskState::Starting) && engine.running() == 1
    })
    .await;
    let container = engine.only_container_of("checked");
    engine.set_health(&container, HealthStatus::Healthy);
    wait_until("the healthy task is reported running", PATIENCE, || {
        dispatcher.state_of("checked") == Some(TaskState::Running)
    })
    .await;
    engine.set_health(&container, HealthStatus::Unhealthy);
    wait_until("the unhealthy task fails and is stopped", PATIENCE, || {
        dispatcher.state_of("checked") == Some(TaskState::Failed) && !engine.is_running(&container)
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_subscriptions_publish_output_and_close() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&["busybox"]);
    let state_dir = tempfile::tempdir().expect("tempdir");
    dispatcher.assign(vec![task("logged", 1, TaskState::Running)]);
    let agent = RunningAgent::start(&engine, state_dir.path(), address);
    wait_until("the task runs", PATIENCE, || {
        dispatcher.state_of("logged") == Some(TaskState::Running)
    })
    .await;
    let container = engine.only_container_of("logged");
    engine.set_logs(
        &container,
        vec![
            LogEntry {
                log: "first\n".to_owned(),
                stream: "stdout".to_owned(),
                time: "2024-05-06T07:08:09.000000001Z".to_owned(),
            },
            LogEntry {
                log: "second\n".to_owned(),
                stream: "stderr".to_owned(),
                time: "2024-05-06T07:08:10Z".to_owned(),
            },
            LogEntry {
                log: "third\n".to_owned(),
                stream: "stdout".to_owned(),
                time: "2024-05-06T07:08:11Z".to_owned(),
            },
        ],
    );

    // Without follow: the last two lines, then a close. A task the node does not hold is
    // skipped.
    dispatcher.request_logs(api::LogSubscription {
        id: "once".to_owned(),
        task_ids: ids(&["logged", "elsewhere"]),
        follow: false,
        tail: Some(2),
        close: false,
    });
    wait_until("the subscription is closed", PATIENCE, || {
        dispatcher
            .published("once")
            .last()
            .is_some_and(|message| message.close)
    })
    .await;
    let published = dispatcher.published("once");
    assert!(
        published
            .iter()
            .all(|message| message.session_id == "session-1")
    );
    let lines: Vec<api::LogMessage> = published
        .into_iter()
        .flat_map(|message| message.messages)
        .collect();
    let data: Vec<&[u8]> = lines.iter().map(|line| line.data.as_slice()).collect();
    assert_eq!(data, [&b"second\n"[..], &b"third\n"[..]]);
    assert_eq!(lines[0].task_id, "logged");
    assert_eq!(lines[0].service_id, "svc");
    assert_eq!(lines[0].node_id, "node1");
    assert_eq!(lines[0].stream, api::log_message::Stream::Stderr as i32);
    assert_eq!(
        lines[0].timestamp,
        Some(api::Timestamp {
            seconds: 1_714_979_290,
            nanos: 0,
        })
    );

    // Following: the output so far, then nothing until the subscriber goes away.
    dispatcher.request_logs(api::LogSubscription {
        id: "follow".to_owned(),
        task_ids: ids(&["logged"]),
        follow: true,
        tail: None,
        close: false,
    });
    wait_until("the followed output arrives", PATIENCE, || {
        dispatcher
            .published("follow")
            .iter()
            .map(|message| message.messages.len())
            .sum::<usize>()
            == 3
    })
    .await;
    assert!(
        !dispatcher
            .published("follow")
            .iter()
            .any(|message| message.close)
    );
    dispatcher.request_logs(api::LogSubscription {
        id: "follow".to_owned(),
        close: true,
        ..api::LogSubscription::default()
    });
    wait_until("the cancelled subscription is closed", PATIENCE, || {
        dispatcher
            .published("follow")
            .last()
            .is_some_and(|message| message.close)
    })
    .await;
    agent.stop().await;
}

// ----- networked tasks -----

/// What the recording networking saw, in order.
#[derive(Clone, Debug, PartialEq)]
enum NetworkingCall {
    /// `prepare` for a task, with how many containers the task had then.
    Prepare {
        task_id: String,
        containers_then: usize,
    },
    /// `set_endpoints`: each task with whether it served, and whether its container ran then.
    Endpoints(BTreeMap<String, (bool, bool)>),
}

/// A node's networking that records its calls and prepares every task alike.
struct RecordingNetworking {
    engine: Arc<FakeEngine>,
    calls: Mutex<Vec<NetworkingCall>>,
}

impl RecordingNetworking {
    fn calls(&self) -> Vec<NetworkingCall> {
        lock(&self.calls).clone()
    }

    fn last_endpoints(&self) -> Option<BTreeMap<String, (bool, bool)>> {
        self.calls().into_iter().rev().find_map(|call| match call {
            NetworkingCall::Endpoints(endpoints) => Some(endpoints),
            NetworkingCall::Prepare { .. } => None,
        })
    }
}

impl TaskNetworking for RecordingNetworking {
    fn prepare<'a>(
        &'a self,
        task: &'a TaskNetworks,
    ) -> BoxFuture<'a, Result<Option<PreparedNetworks>, String>> {
        lock(&self.calls).push(NetworkingCall::Prepare {
            task_id: task.task_id.clone(),
            containers_then: self.engine.containers_of(&task.task_id).len(),
        });
        Box::pin(std::future::ready(Ok(Some(PreparedNetworks {
            netns: format!("/run/netns/test-{}", task.task_id).into(),
            resolv_conf: b"nameserver 127.0.0.11\n".to_vec(),
            hosts: format!("{} {}\n", task.attachments[0].address, task.hostname).into_bytes(),
        }))))
    }

    fn set_endpoints(&self, endpoints: BTreeMap<String, LocalEndpoint>) {
        let seen = endpoints
            .into_iter()
            .map(|(task_id, endpoint)| {
                let running = self
                    .engine
                    .containers_of(&task_id)
                    .iter()
                    .any(|container| self.engine.is_running(container));
                (task_id, (endpoint.serving, running))
            })
            .collect();
        lock(&self.calls).push(NetworkingCall::Endpoints(seen));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_networked_task_is_prepared_before_its_container_and_leaves_the_set_once_removed() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&["busybox"]);
    let networking = Arc::new(RecordingNetworking {
        engine: Arc::clone(&engine),
        calls: Mutex::new(Vec::new()),
    });
    let state_dir = tempfile::tempdir().expect("tempdir");
    dispatcher.assign(vec![on_front_network(task("web1", 1, TaskState::Running))]);
    let agent = RunningAgent::start_with_networking(
        &engine,
        state_dir.path(),
        address,
        Arc::clone(&networking) as Arc<dyn TaskNetworking>,
    );
    wait_until("the networked task runs", PATIENCE, || {
        dispatcher.state_of("web1") == Some(TaskState::Running)
    })
    .await;
    wait_until("the task serves", PATIENCE, || {
        networking.last_endpoints() == Some(BTreeMap::from([("web1".to_owned(), (true, true))]))
    })
    .await;

    // Prepared once, before any container of the task existed; the container joined what
    // the preparation gave.
    let prepares: Vec<NetworkingCall> = networking
        .calls()
        .into_iter()
        .filter(|call| matches!(call, NetworkingCall::Prepare { .. }))
        .collect();
    assert_eq!(
        prepares,
        [NetworkingCall::Prepare {
            task_id: "web1".to_owned(),
            containers_then: 0,
        }]
    );
    let container_id = engine.only_container_of("web1");
    let spec = engine.state().containers[&container_id].spec.clone();
    assert_eq!(spec.network_namespace, Some("/run/netns/test-web1".into()));
    let files: Vec<(String, Vec<u8>)> = spec
        .mounts
        .iter()
        .filter_map(|mount| match mount {
            engine::MountSpec::File {
                target, contents, ..
            } => Some((target.clone(), contents.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        files,
        [
            (
                "/etc/resolv.conf".to_owned(),
                b"nameserver 127.0.0.11\n".to_vec()
            ),
            ("/etc/hosts".to_owned(), b"10.0.1.11/24 web1\n".to_vec()),
        ]
    );

    // Unassigned: it stops serving while its container still runs, and leaves the set once
    // the container is removed.
    dispatcher.assign(Vec::new());
    wait_until("the task's container is removed", PATIENCE, || {
        engine.containers_of("web1").is_empty()
    })
    .await;
    wait_until("the task leaves the set", PATIENCE, || {
        networking.last_endpoints() == Some(BTreeMap::new())
    })
    .await;
    let sets: Vec<BTreeMap<String, (bool, bool)>> = networking
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            NetworkingCall::Endpoints(endpoints) => Some(endpoints),
            NetworkingCall::Prepare { .. } => None,
        })
        .collect();
    let web1 =
        |serving: bool, running: bool| BTreeMap::from([("web1".to_owned(), (serving, running))]);
    let tail = &sets[sets.len() - 3..];
    assert_eq!(
        tail,
        [web1(true, true), web1(false, true), BTreeMap::new()],
        "{sets:?}"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_networked_task_on_a_node_without_networking_runs_in_a_namespace_of_its_own() {
    let (dispatcher, address) = FakeDispatcher::serve().await;
    let engine = FakeEngine::with_images(&["busybox"]);
    let state_dir = tempfile::tempdir().expect("tempdir");
    dispatcher.assign(vec![on_front_network(task("web1", 1, TaskState::Running))]);
    let agent = RunningAgent::start(&engine, state_dir.path(), address);
    wait_until("the networked task runs", PATIENCE, || {
        dispatcher.state_of("web1") == Some(TaskState::Running)
    })
    .await;
    let containers = engine.containers_of("web1");
    assert_eq!(containers.len(), 1, "{containers:?}");
    let spec = engine.state().containers[&containers[0]].spec.clone();
    assert_eq!(spec.network_namespace, None);
    assert!(
        !spec.mounts.iter().any(|mount| matches!(
            mount,
            engine::MountSpec::File { target, .. } if target == "/etc/resolv.conf"
        )),
        "{:?}",
        spec.mounts
    );
    agent.stop().await;
}
