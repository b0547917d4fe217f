//! The worker agent's async shell: one loop owns the pure [`Reconciler`] and turns its commands
//! into engine calls, assignment-store writes and status reports, while side tasks keep a session
//! with the managers' Dispatcher, watch containers and publish logs, all feeding results back as
//! events.
//!
//! Shape of the shell:
//! - the reconciler loop (this module) batches whatever queued up into one `step_batch`, runs
//!   each step's commands in order, and ticks every second;
//! - `session`: connects, opens a session, heartbeats, and forwards assignment sets and log
//!   subscriptions; reconnects with backoff; a separate reporter sends status batches in order;
//! - `executor`: engine commands as their own tasks (bounded), container exit and health
//!   watchers; a networked task's create has the node's networking prepare its namespace first;
//! - the node's networking ([`TaskNetworking`]) is handed each set of network endpoints in step
//!   order, by the loop itself;
//! - `images`: makes sure an image is present before a container is created from it;
//! - `logs`: one publisher per log subscription.
//!
//! Containers outlive the agent: stopping it leaves them running, and the next agent adopts them.

mod executor;
mod images;
mod logs;
mod session;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_proto::api;
use shoal_proto::api::dispatcher_client::DispatcherClient;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tonic::transport::Channel;

use crate::convert::{TaskPayloads, task_has_healthcheck};
use crate::error::{Result, WorkerError};
use crate::networking::TaskNetworking;
use crate::reconciler::{
    AssignmentSet, Command, CommandOutcome, EngineObservation, Event, Reconciler,
};
use crate::store::AssignmentStore;

pub use images::ImageProvider;
pub(crate) use session::{NODE_OS, node_architecture};

/// How often the reconciler is ticked: retries of failed reports, stops and persistence.
const TICK_PERIOD: Duration = Duration::from_secs(1);
/// A cap on inputs taken into one step, so that a flood can't delay the next tick for long.
const MAX_INPUTS_PER_STEP: usize = 4096;
/// How long the agent waits between attempts to list the engine's containers at startup.
const ENGINE_LIST_RETRY_DELAY: Duration = Duration::from_secs(1);

/// What the agent needs to know about the node it runs on.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The node's id, as its certificate names it.
    pub node_id: String,
    /// The hostname reported in the node description.
    pub hostname: String,
    /// Where the assignment store lives (e.g. `<data-root>/worker`).
    pub state_dir: PathBuf,
    /// Engine version string to report in the node description.
    pub engine_version: String,
}

/// Connects to a dispatcher; the daemon supplies one that builds a mutual-TLS channel to the
/// managers on 2377. Called again after every lost session (with backoff).
pub trait DispatcherConnector: Send + Sync + 'static {
    /// A channel to a manager serving the Dispatcher service, or why none could be opened.
    fn connect(&self) -> impl Future<Output = std::result::Result<Channel, String>> + Send;

    /// Sees every session message: the first of each session and each later one, which carry
    /// changes to the node object and the list of managers.
    fn observe_session(&self, _message: &api::SessionMessage) {}

    /// A manager that does not lead named the leader's cluster-port address: connect there next.
    fn redirect(&self, _leader_addr: &str) {}

    /// Resolves when the connector wants the session reopened on a new connection, such as
    /// after the node's certificate changed.
    fn reconnect_requested(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// The open session that reports and log publishers go through.
#[derive(Clone)]
pub(crate) struct SessionLink {
    pub(crate) session_id: String,
    pub(crate) client: DispatcherClient<Channel>,
}

/// What the reconciler loop is fed.
pub(crate) enum Input {
    /// Ready for the reconciler as it is.
    Event(Event),
    /// An assignment set from the dispatcher, still to be renumbered (see
    /// [`ReconcilerLoop::assignment_set`]).
    Assignments(api::AssignmentsMessage),
    /// A log request from the dispatcher, or its cancellation.
    LogSubscription(api::LogSubscription),
}

/// Runs the worker agent until `stop` turns true (or its sender is dropped): adopts the engine's
/// containers, keeps a session with the managers, runs what they assign and reports on it.
/// Networked tasks get their namespaces from `networking`, which is also kept told of every
/// networked task the node holds. Containers are left running when it returns. Fails only when
/// the assignment store can't be opened or read.
pub async fn run_agent<E, C>(
    config: AgentConfig,
    engine: Arc<E>,
    connector: C,
    mut stop: watch::Receiver<bool>,
    networking: Arc<dyn TaskNetworking>,
) -> Result<()>
where
    E: engine::Engine + ImageProvider,
    C: DispatcherConnector,
{
    if *stop.borrow_and_update() {
        return Ok(());
    }
    let state_dir = config.state_dir.clone();
    let (store, persisted) = tokio::task::spawn_blocking(move || {
        let store = AssignmentStore::open(state_dir)?;
        let persisted = store.load()?;
        Ok::<_, WorkerError>((store, persisted))
    })
    .await
    .map_err(|error| WorkerError::StoreIo {
        path: config.state_dir.clone(),
        operation: "opening the store",
        source: std::io::Error::other(error.to_string()),
    })??;
    let reconciler = match persisted {
        Some(persisted) => {
            tracing::info!(
                tasks = persisted.tasks.len(),
                assignment_version = persisted.assignment_version,
                "resuming from the assignment store"
            );
            Reconciler::restore(persisted)
        }
        None => Reconciler::new(),
    }
    .on_node(&config.hostname);

    let (input_sender, inputs) = mpsc::unbounded_channel();
    let (session_sender, session) = watch::channel(None);
    let (report_sender, report_queue) = mpsc::unbounded_channel();
    let mut background = JoinSet::new();
    background.spawn(session::run_sessions(
        session::NodeIdentity::of(&config),
        connector,
        session_sender,
        input_sender.clone(),
        stop.clone(),
    ));
    background.spawn(session::send_reports(
        report_queue,
        session.clone(),
        input_sender.clone(),
    ));

    let mut agent = ReconcilerLoop {
        last_assignment_version: reconciler.assignment_version().unwrap_or(0),
        reconciler,
        executor: Arc::new(executor::Executor::new(
            Arc::clone(&engine),
            Arc::clone(&networking),
            input_sender.clone(),
        )),
        networking,
        engine,
        node_id: config.node_id,
        store,
        inputs: input_sender,
        reports: report_sender,
        session,
        watchers: HashMap::new(),
        publishers: HashMap::new(),
        background,
    };
    let Some(containers) = agent.list_containers(&mut stop).await else {
        return Ok(());
    };
    agent.adopt(containers).await;
    agent.run(inputs, stop).await;
    // Dropping the loop aborts every task it spawned; the containers themselves run on.
    Ok(())
}

/// Resolves once `stop` turns true or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn since_unix_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

fn tick_now() -> Event {
    Event::Tick {
        now_since_unix_epoch: since_unix_epoch(),
    }
}

/// The loop that owns the reconciler. Everything that changes it goes through [`Input`]s.
struct ReconcilerLoop<E> {
    reconciler: Reconciler,
    /// The version given to the last assignment set fed in; see [`Self::assignment_set`].
    last_assignment_version: u64,
    engine: Arc<E>,
    executor: Arc<executor::Executor<E>>,
    /// Told of the node's networked tasks, in step order.
    networking: Arc<dyn TaskNetworking>,
    node_id: String,
    store: AssignmentStore,
    /// Command results and persistence outcomes come back through here.
    inputs: mpsc::UnboundedSender<Input>,
    reports: mpsc::UnboundedSender<session::QueuedReport>,
    session: watch::Receiver<Option<SessionLink>>,
    /// Exit and health watchers by container id.
    watchers: HashMap<String, AbortHandle>,
    /// Log publishers by subscription id; sending (or dropping) cancels one.
    publishers: HashMap<String, oneshot::Sender<()>>,
    /// Every task the agent spawned; dropped (and so aborted) with the loop.
    background: JoinSet<()>,
}

impl<E: engine::Engine + ImageProvider> ReconcilerLoop<E> {
    /// Lists every container the engine has, retrying until it answers: nothing may be created
    /// before the list is known. `None` when stopped meanwhile.
    async fn list_containers(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<engine::ContainerInfo>> {
        loop {
            match self.engine.list(true).await {
                Ok(containers) => return Some(containers),
                Err(error) => {
                    tracing::warn!(%error, "listing the engine's containers failed; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(ENGINE_LIST_RETRY_DELAY) => {}
                () = stopped(stop) => return None,
            }
        }
    }

    /// Feeds the engine's containers in, and watches every running one the reconciler adopted.
    async fn adopt(&mut self, containers: Vec<engine::ContainerInfo>) {
        let listed = containers.iter().map(Into::into).collect();
        let commands = self
            .reconciler
            .step_batch([tick_now(), Event::ContainersListed(listed)]);
        for container in &containers {
            let running = container.state.status == engine::RunStatus::Running;
            let adopted = container
                .spec
                .labels
                .get(crate::convert::LABEL_TASK_ID)
                .and_then(|task_id| self.reconciler.container_id(task_id))
                == Some(container.id.as_str());
            if running && adopted {
                self.watch(&container.id, container.spec.healthcheck.is_some());
            }
        }
        self.execute(commands).await;
    }

    async fn run(
        &mut self,
        mut inputs: mpsc::UnboundedReceiver<Input>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(TICK_PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Biased so that a stream of inputs can neither delay the stop nor starve the tick.
            let first = tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                _ = ticks.tick() => Input::Event(tick_now()),
                Some(input) = inputs.recv() => input,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_INPUTS_PER_STEP {
                match inputs.try_recv() {
                    Ok(input) => batch.push(input),
                    Err(_) => break,
                }
            }
            self.step(batch).await;
            self.reap_finished_tasks();
        }
    }

    async fn step(&mut self, batch: Vec<Input>) {
        let mut events = Vec::with_capacity(batch.len() + 1);
        events.push(Event::Clock {
            now_since_unix_epoch: since_unix_epoch(),
        });
        let mut started = Vec::new();
        for input in batch {
            match input {
                Input::Event(event) => {
                    if let Some(container) = self.note_event(&event) {
                        started.push(container);
                    }
                    events.push(event);
                }
                Input::Assignments(message) => {
                    events.push(Event::Assignments(self.assignment_set(message)));
                }
                Input::LogSubscription(subscription) => self.serve_log_subscription(subscription),
            }
        }
        let commands = self.reconciler.step_batch(events);
        for (container_id, poll_health) in started {
            self.watch(&container_id, poll_health);
        }
        self.execute(commands).await;
    }

    /// Looks at an event on its way to the reconciler: a started container gets a watcher
    /// (returned, to be spawned after the step), a removed or vanished one loses its watcher.
    fn note_event(&mut self, event: &Event) -> Option<(String, bool)> {
        match event {
            Event::CommandFinished(CommandOutcome::StartFinished {
                task_id,
                result: Ok(_),
            }) => {
                let container_id = self.reconciler.container_id(task_id)?;
                let poll_health = self
                    .reconciler
                    .task(task_id)
                    .is_some_and(task_has_healthcheck);
                Some((container_id.to_owned(), poll_health))
            }
            Event::CommandFinished(CommandOutcome::RemoveFinished {
                container_id,
                result: Ok(()),
                ..
            })
            | Event::Engine(EngineObservation::Missing { container_id }) => {
                if let Some(watcher) = self.watchers.remove(container_id) {
                    watcher.abort();
                }
                None
            }
            _ => None,
        }
    }

    /// Turns a dispatcher message into the reconciler's assignment set.
    ///
    /// The dispatcher numbers its messages per session, starting at 1, so its numbers go back
    /// to 1 after every reconnect and mean nothing across sessions or daemon restarts; the
    /// reconciler, though, drops a set whose version is not above the last one it accepted (and
    /// persisted). Every message that reaches this loop is newer than all before it: sessions
    /// run one after another, each stream is ordered, and one FIFO channel carries them here.
    /// So the shell renumbers: each message gets the version after the last one fed in, which
    /// starts from the version restored from the store. The dispatcher's own number is only
    /// checked within its session (see `session`).
    fn assignment_set(&mut self, message: api::AssignmentsMessage) -> AssignmentSet {
        self.last_assignment_version = self
            .last_assignment_version
            .max(self.reconciler.assignment_version().unwrap_or(0))
            + 1;
        let mut payloads = TaskPayloads::default();
        for secret in message.secrets {
            let data = secret.spec.map(|spec| spec.data).unwrap_or_default();
            payloads.secrets_by_id.insert(secret.id, data);
        }
        for config in message.configs {
            let data = config.spec.map(|spec| spec.data).unwrap_or_default();
            payloads.configs_by_id.insert(config.id, data);
        }
        AssignmentSet {
            version: self.last_assignment_version,
            tasks: message.tasks,
            payloads,
        }
    }

    /// Carries out one step's commands in order. Engine commands run as their own tasks;
    /// persistence is awaited here, before the same step's report may leave.
    async fn execute(&mut self, commands: Vec<Command>) {
        let mut persist_failed = false;
        for command in commands {
            match command {
                Command::SetNetworkEndpoints(endpoints) => self.networking.set_endpoints(endpoints),
                Command::PersistAssignments(snapshot) => {
                    let store = self.store.clone();
                    let result = tokio::task::spawn_blocking(move || store.save(&snapshot))
                        .await
                        .map_err(|error| format!("writing the assignment store failed: {error}"))
                        .and_then(|saved| saved.map_err(|error| error.to_string()));
                    if let Err(error) = &result {
                        tracing::warn!(%error, "persisting assignments failed; retried on the next tick");
                        persist_failed = true;
                    }
                    self.feed(Event::CommandFinished(CommandOutcome::PersistFinished {
                        result,
                    }));
                }
                Command::ReportStatuses { batch_id, statuses } => {
                    // A report must not get ahead of the floor kept on disk.
                    let refused = if persist_failed {
                        Some("the assignment store could not be written; the report waits for it")
                    } else if self
                        .reports
                        .send(session::QueuedReport { batch_id, statuses })
                        .is_err()
                    {
                        Some("the status reporter has stopped")
                    } else {
                        None
                    };
                    if let Some(reason) = refused {
                        self.feed(Event::CommandFinished(CommandOutcome::ReportFinished {
                            batch_id,
                            result: Err(reason.to_owned()),
                        }));
                    }
                }
                engine_command => {
                    let executor = Arc::clone(&self.executor);
                    self.background
                        .spawn(async move { executor.run(engine_command).await });
                }
            }
        }
    }

    fn feed(&self, event: Event) {
        // The receiver lives as long as this loop, so the send can't fail while it runs.
        let _ = self.inputs.send(Input::Event(event));
    }

    /// Starts watching a container for its exit (and health), unless it is watched already.
    fn watch(&mut self, container_id: &str, poll_health: bool) {
        if self
            .watchers
            .get(container_id)
            .is_some_and(|watcher| !watcher.is_finished())
        {
            return;
        }
        let watcher = executor::watch_container(
            Arc::clone(&self.engine),
            container_id.to_owned(),
            poll_health,
            self.inputs.clone(),
        );
        let handle = self.background.spawn(watcher);
        self.watchers.insert(container_id.to_owned(), handle);
    }

    fn serve_log_subscription(&mut self, subscription: api::LogSubscription) {
        if subscription.close {
            if let Some(cancel) = self.publishers.remove(&subscription.id) {
                let _ = cancel.send(());
            }
            return;
        }
        let Some(link) = self.session.borrow().clone() else {
            tracing::debug!(subscription = %subscription.id, "log request arrived after its session ended");
            return;
        };
        let targets = subscription
            .task_ids
            .iter()
            .filter_map(|task_id| {
                let container_id = self.reconciler.container_id(task_id)?.to_owned();
                let service_id = self
                    .reconciler
                    .task(task_id)
                    .map(|task| task.service_id.clone())
                    .unwrap_or_default();
                Some(logs::LogTarget {
                    task_id: task_id.clone(),
                    service_id,
                    container_id,
                })
            })
            .collect();
        let (cancel, cancelled) = oneshot::channel();
        if let Some(previous) = self.publishers.insert(subscription.id.clone(), cancel) {
            let _ = previous.send(());
        }
        self.background.spawn(logs::publish(
            Arc::clone(&self.engine),
            link,
            self.node_id.clone(),
            subscription,
            targets,
            cancelled,
        ));
    }

    /// Collects finished tasks so that the set does not grow without bound, and forgets the
    /// bookkeeping of finished watchers and publishers.
    fn reap_finished_tasks(&mut self) {
        while let Some(finished) = self.background.try_join_next() {
            if let Err(error) = finished
                && error.is_panic()
            {
                tracing::error!(%error, "an agent task panicked");
            }
        }
        self.watchers.retain(|_, watcher| !watcher.is_finished());
        self.publishers.retain(|_, cancel| !cancel.is_closed());
    }
}
