//! The leader-only loop that drives the orchestration cores: it reads the cluster view, runs the
//! orchestrators, the restart supervisor, the network allocator, the scheduler and the reaper in
//! turn, and commits each one's commands as one transaction, or in order as several under the
//! store's proposal limit when they are more than one can carry. This shell is the only part
//! that reads a clock or touches the store; the decisions are all in [`crate::orchestrator`],
//! [`crate::allocator`] and [`crate::assignment`]. The cores borrow the objects from the view
//! (decoded once, as they are committed), so a step costs no decoding, whatever the
//! cluster's size.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use raft_store::{Change, Store, StoreError, Transaction, TxnRejection};
use shoal_metrics::OrchestrationMetrics;
use shoal_proto::api::{Network, Node, Service, Task, TaskState, TaskStatus};
use tokio::sync::watch;

use crate::allocator::{self, AddressPools, Allocation, AllocatorInput, MAX_TASKS_PER_STEP};
use crate::assignment::{Assignment, AssignmentOutcome, plan_assignments};
use crate::error::ManagerError;
use crate::objects::{self, ClusterObject};
use crate::orchestrator::{
    ClusterTime, Command, GivenUpSlots, RestartSupervisor, TaskHistoryLimit, commit_groups,
    reap_tasks, reconcile_all_services,
};
use crate::view::ClusterView;
use crate::view::shared::SharedView;

/// How often a member that does not lead checks whether it has become the leader.
const LEADERSHIP_POLL: Duration = Duration::from_millis(250);
/// A phase whose transaction keeps conflicting with concurrent writes gives up for this step;
/// the next committed change steps again.
const ATTEMPTS_PER_PHASE: usize = 5;
/// After a step fails for any other reason (no quorum, a lost leader, a damaged object), the
/// loop waits this long before the next step, doubling on each failure in a row up to
/// [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Where the loop commits its transactions: the store itself, or in tests a wrapper that fails
/// on cue.
pub trait PhaseCommitter: Send + Sync {
    /// Commits `txn` only while this member leads in `term`, never forwarding it, and returns
    /// the index it committed at, as [`Store::write_in_term`] does.
    fn commit(&self, term: u64, txn: Transaction) -> BoxFuture<'_, Result<u64, StoreError>>;
}

impl PhaseCommitter for Store {
    fn commit(&self, term: u64, txn: Transaction) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write_in_term(term, txn))
    }
}

/// Pauses that double from `first` up to `max`, for retries of something that keeps failing.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The pause before the next retry; each call doubles the one after, up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        pause
    }

    /// Something succeeded: the next failure waits the first pause again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Orchestrators,
    RestartSupervisor,
    Allocator,
    Scheduler,
    Reaper,
}

pub struct OrchestrationLoop {
    store: Arc<Store>,
    /// What the phases read; made by [`OrchestrationLoop::run`] when none was given.
    view: Option<Arc<SharedView>>,
    committer: Arc<dyn PhaseCommitter>,
    supervisor: RestartSupervisor,
    /// The supervisor's given-up slots after each step, for the control API's progress
    /// reports.
    given_up: watch::Sender<GivenUpSlots>,
    /// Where steps and scheduler batches are timed.
    metrics: OrchestrationMetrics,
    /// The time the current step has spent reading the view and deciding, which the loop
    /// then rests for.
    deciding: Duration,
}

impl OrchestrationLoop {
    pub fn new(store: Arc<Store>) -> Self {
        let committer: Arc<dyn PhaseCommitter> = Arc::clone(&store) as Arc<dyn PhaseCommitter>;
        Self::with_committer(store, committer)
    }

    /// A loop that reads `store` and commits through `committer`.
    pub fn with_committer(store: Arc<Store>, committer: Arc<dyn PhaseCommitter>) -> Self {
        OrchestrationLoop {
            store,
            view: None,
            committer,
            supervisor: RestartSupervisor::new(),
            given_up: watch::channel(GivenUpSlots::new()).0,
            metrics: OrchestrationMetrics::default(),
            deciding: Duration::ZERO,
        }
    }

    /// The same loop, timing its steps and scheduler batches into `metrics`.
    pub fn with_metrics(mut self, metrics: OrchestrationMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same loop, reading the manager's shared cluster view of the same store.
    pub(crate) fn with_view(mut self, view: Arc<SharedView>) -> Self {
        self.view = Some(view);
        self
    }

    /// The slots the restart supervisor gave up on, as of the latest step.
    pub fn given_up_slots(&self) -> watch::Receiver<GivenUpSlots> {
        self.given_up.subscribe()
    }

    /// Runs [`OrchestrationLoop::run`] until `stop` changes, starting a fresh loop (with a
    /// fresh restart supervisor, as a new leader would) whenever one panics, after a pause that
    /// grows while it keeps panicking.
    pub async fn run_supervised(self, stop: watch::Receiver<bool>) {
        let (store, view, committer, given_up, metrics) = (
            Arc::clone(&self.store),
            self.view.clone(),
            Arc::clone(&self.committer),
            self.given_up.clone(),
            self.metrics.clone(),
        );
        let mut next = Some(self);
        let mut backoff = Backoff::new(FIRST_RETRY_PAUSE, MAX_RETRY_PAUSE);
        loop {
            let orchestration = next.take().unwrap_or_else(|| OrchestrationLoop {
                store: Arc::clone(&store),
                view: view.clone(),
                committer: Arc::clone(&committer),
                supervisor: RestartSupervisor::new(),
                given_up: given_up.clone(),
                metrics: metrics.clone(),
                deciding: Duration::ZERO,
            });
            let started = tokio::time::Instant::now();
            let ended = tokio::spawn(orchestration.run(stop.clone())).await;
            let error = match ended {
                // The loop returns only once told to stop.
                Ok(()) => return,
                Err(error) => error,
            };
            if started.elapsed() > MAX_RETRY_PAUSE {
                backoff.reset();
            }
            let pause = backoff.next_pause();
            tracing::error!(%error, ?pause, "the orchestration loop ended unexpectedly; starting it again");
            let mut stop = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Steps whenever the store commits a change or a time the last step asked to be woken at
    /// (a delayed restart, an update's next batch) falls due, and only then, while this member
    /// leads, until `stop` changes. On becoming leader, and after a step that failed, it
    /// first waits for every earlier write to be settled ([`Store::write_barrier`]), then steps
    /// again. A step or barrier that fails is tried again after a pause that grows while it keeps
    /// failing: a lost quorum or leader holds orchestration up only until the store can commit
    /// again.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(FIRST_RETRY_PAUSE, MAX_RETRY_PAUSE);
        let view = loop {
            let started = match &self.view {
                Some(view) => Ok(Arc::clone(view)),
                None => SharedView::unfollowed(Arc::clone(&self.store)),
            };
            match started {
                Ok(view) => break view,
                Err(error) => {
                    let pause = backoff.next_pause();
                    tracing::warn!(%error, ?pause, "could not read the cluster view; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        backoff.reset();
        let mut changes = self.store.watch_unpublished();
        // The term in which every write proposed before was found applied here or gone for
        // good. A step reads this member's own state, so it must not run on top of a write
        // whose outcome is still open: one from an earlier leader not yet applied here, or this
        // loop's own that failed (a leader that lost its quorum keeps it and may commit it
        // later), or it would create a slot's task a second time. Its writes commit only in
        // that term: once deposed, a leader that decided before its successor took over cannot
        // hand the decisions to it, as an ordinary write that forwards would.
        let mut settled: Option<u64> = None;
        // Whether something may have changed the decisions since the last step: a commit, a
        // wake-up time reached, a failed step, or leadership just taken. A step visits every
        // task, so the loop does not step while nothing changed (at 1,000 nodes and 10,000
        // tasks, stepping with nothing to do took half of a core).
        let mut step_due = true;
        // When the last step asked to be woken, even if nothing changes.
        let mut wake_at: Option<ClusterTime> = None;
        loop {
            let mut retry_after = None;
            let leading = self.store.leading_term();
            if settled != leading {
                settled = None;
            }
            if let (Some(term), None) = (leading, settled) {
                match self.store.write_barrier().await {
                    Ok(_) => {
                        settled = Some(term);
                        step_due = true;
                    }
                    Err(error) => {
                        let pause = backoff.next_pause();
                        tracing::warn!(%error, ?pause, "could not settle earlier writes; trying again");
                        retry_after = Some(pause);
                    }
                }
            }
            if wake_at.is_some_and(|at| at <= now()) {
                step_due = true;
            }
            if let (Some(term), true) = (settled, step_due) {
                step_due = false;
                wake_at = None;
                // The step reads every change published so far, so those need no step of their
                // own: one step for a thousand queued commits, not a thousand.
                changes = self.store.watch_unpublished();
                let started = Instant::now();
                let stepped = self.step(&view, term).await;
                self.metrics
                    .step_duration
                    .observe(started.elapsed().as_secs_f64());
                // As long again as the step spent deciding before the next one, so that however
                // often the store commits (a thousand agents reconnecting each write their
                // node), the loop takes at most half of the manager's time and the session
                // handshakes and Raft get the rest. Changes committed meanwhile are all read by
                // that next step.
                tokio::select! {
                    _ = tokio::time::sleep(std::mem::take(&mut self.deciding)) => {}
                    _ = stop.changed() => return,
                }
                match stepped {
                    Ok(at) => {
                        wake_at = at;
                        backoff.reset();
                    }
                    Err(error) => {
                        settled = None;
                        step_due = true;
                        let pause = backoff.next_pause();
                        tracing::warn!(%error, ?pause, "an orchestration step failed; trying again");
                        retry_after = Some(pause);
                    }
                }
            }
            let pause = match (retry_after, wake_at) {
                (Some(pause), _) => pause,
                (None, Some(at)) => at
                    .duration_since_unix_epoch()
                    .saturating_sub(now().duration_since_unix_epoch())
                    .min(LEADERSHIP_POLL),
                (None, None) => LEADERSHIP_POLL,
            };
            tokio::select! {
                // While a failed step waits for its retry, committed changes don't cut the
                // pause short.
                next = changes.next(), if retry_after.is_none() => match next {
                    Ok(_) => step_due = true,
                    // The loop re-reads the whole store each step, so a watcher that fell
                    // behind, or whose stream failed, only needs a fresh position.
                    Err(error) => {
                        step_due = true;
                        if !matches!(error, StoreError::WatchCompacted { .. }) {
                            tracing::warn!(%error, "watching the store; watching again");
                            tokio::time::sleep(backoff.next_pause()).await;
                        }
                        changes = self.store.watch_unpublished();
                    }
                },
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One step: the phases in order, each on a fresh read of the view, caught up with what
    /// the store has applied, committed in `term`. Returns when the next step is due even if
    /// nothing changes.
    async fn step(
        &mut self,
        view: &SharedView,
        term: u64,
    ) -> Result<Option<ClusterTime>, ManagerError> {
        let mut wake_at: Option<ClusterTime> = None;
        for phase in [
            Phase::Orchestrators,
            Phase::RestartSupervisor,
            Phase::Allocator,
            Phase::Scheduler,
            Phase::Reaper,
        ] {
            // A phase decides without awaiting anything, holding the view's lock, which the
            // dispatcher and the control API also read under: let them in between phases.
            tokio::task::yield_now().await;
            let mut max_tasks_allocated = MAX_TASKS_PER_STEP;
            let mut conflicts = 0;
            while conflicts < ATTEMPTS_PER_PHASE {
                let deciding = Instant::now();
                let (groups, phase_wake_at) =
                    view.read_current(|cluster| self.decide(phase, cluster, max_tasks_allocated))?;
                self.deciding += deciding.elapsed();
                if let Some(at) = phase_wake_at {
                    wake_at = Some(wake_at.map_or(at, |earlier| earlier.min(at)));
                }
                if groups.is_empty() {
                    break;
                }
                tracing::debug!(
                    ?phase,
                    changes = groups.iter().map(Vec::len).sum::<usize>(),
                    "a phase commits"
                );
                let transactions = match self.store.pack(groups) {
                    // An allocation too large for one proposal is tried again with half as
                    // many tasks; the rest follow on later steps.
                    Err(StoreError::ProposalTooLarge { .. })
                        if matches!(phase, Phase::Allocator) && max_tasks_allocated > 1 =>
                    {
                        max_tasks_allocated /= 2;
                        continue;
                    }
                    packed => packed?,
                };
                match self.commit_in_order(term, transactions).await {
                    Ok(()) => break,
                    Err(StoreError::Rejected(TxnRejection::Conflict { .. })) => {
                        conflicts += 1;
                        tracing::debug!(?phase, "a concurrent write changed a task; re-reading");
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let given_up = self.supervisor.given_up_slots();
        self.given_up.send_if_modified(|published| {
            let changed = published != given_up;
            if changed {
                *published = given_up.clone();
            }
            changed
        });
        Ok(wake_at)
    }

    /// Commits `transactions` one after the other, stopping at the first that fails: each
    /// holds whole commit groups, so what committed before it stands on its own, and the next
    /// read decides the rest again.
    async fn commit_in_order(
        &self,
        term: u64,
        transactions: Vec<Transaction>,
    ) -> Result<(), StoreError> {
        let count = transactions.len();
        for transaction in transactions {
            self.committer.commit(term, transaction).await?;
        }
        if count > 1 {
            tracing::debug!(count, "a phase committed in several transactions");
        }
        Ok(())
    }

    /// What one phase would write, read from `cluster`, and when the next step is due even if
    /// nothing changes.
    fn decide(
        &mut self,
        phase: Phase,
        cluster: &ClusterView,
        max_tasks_allocated: usize,
    ) -> (Vec<Vec<Change>>, Option<ClusterTime>) {
        let snapshot = cluster.snapshot();
        let mut task_ids = raft_store::new_object_id;
        let now = now();
        match phase {
            Phase::Orchestrators => changes_for(
                cluster,
                reconcile_all_services(
                    &snapshot,
                    self.supervisor.given_up_slots(),
                    now,
                    &mut task_ids,
                ),
            ),
            Phase::RestartSupervisor => {
                changes_for(cluster, self.supervisor.step(&snapshot, now, &mut task_ids))
            }
            // One group: every network written carries the last address given on it, so the
            // allocation commits whole or not at all.
            Phase::Allocator => {
                let networks: Vec<&Network> = cluster.networks().collect();
                let services: Vec<&Service> = snapshot.services().collect();
                let nodes: Vec<&Node> = if allocator::mesh_serves(services.iter().copied()) {
                    snapshot.nodes().collect()
                } else {
                    snapshot.nodes_with_attachments().collect()
                };
                let tasks: Vec<&Task> = snapshot
                    .tasks_with_ids(snapshot.index().allocator_reads())
                    .collect();
                let allocation = allocator::allocate(
                    &AllocatorInput {
                        networks: &networks,
                        nodes: &nodes,
                        services: &services,
                        tasks: &tasks,
                        pools: &AddressPools::of_cluster(cluster.cluster()),
                        max_tasks: max_tasks_allocated,
                    },
                    now,
                );
                (allocation_changes(allocation), None)
            }
            // Each assignment is one task's own status: it needs no other change.
            Phase::Scheduler => {
                let started = Instant::now();
                let assignments = plan_assignments(&snapshot);
                self.metrics
                    .scheduler_batch_duration
                    .observe(started.elapsed().as_secs_f64());
                (
                    assignment_changes(cluster, assignments, now)
                        .into_iter()
                        .map(|change| vec![change])
                        .collect(),
                    None,
                )
            }
            Phase::Reaper => changes_for(
                cluster,
                reap_tasks(
                    &snapshot,
                    TaskHistoryLimit::of_cluster_spec(
                        cluster.cluster().and_then(|cluster| cluster.spec.as_ref()),
                    ),
                ),
            ),
        }
    }
}

/// Writes the scheduler's decisions as task status changes (and the node, when assigned),
/// stamped with the time of the step.
fn assignment_changes(
    cluster: &ClusterView,
    assignments: Vec<Assignment>,
    now: ClusterTime,
) -> Vec<Change> {
    assignments
        .into_iter()
        .filter_map(|assignment| {
            let task = cluster.task(&assignment.task_id)?;
            let mut changed = task.clone();
            // As in SwarmKit, why a task waits is its status's error, which `service ps`
            // shows in its ERROR column.
            let (state, message, err) = match assignment.outcome {
                AssignmentOutcome::Assigned { node_id } => {
                    changed.node_id = node_id;
                    (
                        TaskState::Assigned,
                        "scheduler assigned task to node".to_owned(),
                        String::new(),
                    )
                }
                AssignmentOutcome::Pending { message } => (
                    TaskState::Pending,
                    "pending task scheduling".to_owned(),
                    message,
                ),
            };
            changed.status = Some(TaskStatus {
                timestamp: Some(now.to_proto_timestamp()),
                state: state as i32,
                message,
                err,
                ..Default::default()
            });
            Some(objects::update_at(&changed, assignment.read_version))
        })
        .collect()
}

/// The allocator's writes as one commit group (none when it has nothing to write), each object
/// at the version it was read at; networks it could not allocate are logged, and the tasks
/// waiting for them show why.
fn allocation_changes(allocation: Allocation) -> Vec<Vec<Change>> {
    for (network_id, failure) in &allocation.failed_networks {
        tracing::debug!(%network_id, %failure, "a network could not be allocated");
    }
    for (service_id, failure) in &allocation.failed_services {
        tracing::debug!(%service_id, %failure, "a service's published ports could not be given; it keeps those it holds");
    }
    for (node_id, failure) in &allocation.failed_nodes {
        tracing::debug!(%node_id, %failure, "a node could not get its address on the ingress network; its routing mesh waits for one");
    }
    if allocation.is_empty() {
        return Vec::new();
    }
    let mut changes: Vec<Change> = Vec::new();
    changes.extend(allocation.networks.iter().map(objects::update));
    changes.extend(allocation.services.iter().map(objects::update));
    changes.extend(allocation.tasks.iter().map(objects::update));
    changes.extend(allocation.nodes.iter().map(objects::update));
    changes.extend(allocation.deleted_networks.iter().map(objects::delete));
    vec![changes]
}

/// The system clock as cluster time: the one place the manager's shells read it, to hand it to
/// the cores or stamp what they write.
pub(crate) fn now() -> ClusterTime {
    ClusterTime::from_duration_since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Turns a core's commands into store changes against the state it read, grouped as they must
/// commit ([`commit_groups`]); a wake-up time is not a change but the time of the next step.
fn changes_for(
    cluster: &ClusterView,
    commands: Vec<Command>,
) -> (Vec<Vec<Change>>, Option<ClusterTime>) {
    let wake_at = commands
        .iter()
        .filter_map(|command| match command {
            Command::WakeUpAt { at } => Some(*at),
            _ => None,
        })
        .min();
    let groups = commit_groups(|id| cluster.task(id), commands)
        .into_iter()
        .map(|group| {
            group
                .into_iter()
                .filter_map(|command| change_for(cluster, command))
                .collect::<Vec<Change>>()
        })
        .filter(|changes| !changes.is_empty())
        .collect();
    (groups, wake_at)
}

fn change_for(cluster: &ClusterView, command: Command) -> Option<Change> {
    match command {
        Command::CreateTask(task) => Some(objects::create(&*task)),
        Command::SetDesiredState {
            task_id,
            read_version,
            desired_state,
        } => {
            let mut changed = cluster.task(&task_id)?.clone();
            changed.desired_state = desired_state as i32;
            Some(objects::update_at(&changed, read_version))
        }
        Command::DeleteTask {
            task_id,
            read_version,
        } => Some(Change::Delete {
            kind: Task::KIND.to_owned(),
            id: task_id,
            expected_version: read_version,
        }),
        Command::DeleteService {
            service_id,
            read_version,
        } => Some(Change::Delete {
            kind: Service::KIND.to_owned(),
            id: service_id,
            expected_version: read_version,
        }),
        Command::UpdateService(service) => Some(objects::update(&*service)),
        Command::WakeUpAt { .. } => None,
    }
}
