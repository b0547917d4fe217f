//! The Prometheus metrics of a shoal daemon, defined in one place. [`Metrics`] registers every
//! family once; the components record into the handles it holds ([`RaftMetrics`],
//! [`DispatcherMetrics`], [`OrchestrationMetrics`], [`EngineMetrics`]), handed to them by the
//! daemon rather than reached through globals, so several managers in one process (tests) keep
//! their figures apart. Gauges that mirror state are not kept by hand: a running manager role
//! lends a sampler ([`Metrics::attach_manager`]) that each scrape reads (`manager_state`), and
//! the process's memory and CPU time are read from the kernel at scrape time (`process`).
//! [`Metrics::encode`] writes the Prometheus text format (0.0.4) or OpenMetrics, through the
//! `prometheus-client` crate.
//!
//! **Architecture invariant:** records and encodes, and decides nothing; knows none of the
//! components' types (a manager's state comes in as plain numbers); does no network IO and
//! starts no task.

mod manager_state;
mod process;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::{Registry, Unit};

pub use manager_state::{ManagerAttachment, ManagerSample, RaftProgress};
pub use process::kb_field_bytes;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::histogram::Histogram;

/// Every name below goes out as `shoal_NAME` (the process's own families excepted, which keep
/// the names every Prometheus client library gives them).
const PREFIX: &str = "shoal";

/// Buckets of the latency histograms: 0.5 ms doubling to about 16 s, which covers an fsync, a
/// commit, a scheduler batch, an orchestration step and a container start alike.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Buckets of image pull times: 0.1 s doubling to about 14 minutes (a pull may take 10).
fn pull_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 14))
}

/// Buckets of snapshot sizes: 1 KiB, times 4, up to 4 GiB (the largest a member installs).
fn snapshot_size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1024.0, 4.0, 12))
}

/// How something a counter counts ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn of<T, E>(result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.word(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// Where a Raft snapshot came from.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SnapshotOrigin {
    /// Built by this member from its own state.
    Built,
    /// Installed from the leader.
    Installed,
}

impl EncodeLabelValue for SnapshotOrigin {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let word = match self {
            SnapshotOrigin::Built => "built",
            SnapshotOrigin::Installed => "installed",
        };
        EncodeLabelValue::encode(&word, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SnapshotLabels {
    origin: SnapshotOrigin,
}

/// What the Raft store records (`crates/raft-store`). Its term and indexes are read at scrape
/// time instead, from the manager's [`RaftProgress`].
#[derive(Clone, Debug)]
pub struct RaftMetrics {
    /// Times this member saw a new leader elected (a leader in a new term).
    pub leader_changes: Counter,
    /// From handing entries to the log to their being on disk, fsync included.
    pub append_duration: Histogram,
    /// On the leader, from proposing a transaction to its being committed and applied.
    pub commit_duration: Histogram,
    snapshot_size: Family<SnapshotLabels, Histogram, fn() -> Histogram>,
}

impl Default for RaftMetrics {
    /// Handles registered nowhere: what a store opened without a daemon (tests, tools) records
    /// into.
    fn default() -> Self {
        let snapshot_size: Family<SnapshotLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(snapshot_size_histogram);
        // Every series exists from the start, at zero: a family with none would not be written.
        for origin in [SnapshotOrigin::Built, SnapshotOrigin::Installed] {
            drop(snapshot_size.get_or_create(&SnapshotLabels { origin }));
        }
        RaftMetrics {
            leader_changes: Counter::default(),
            append_duration: latency_histogram(),
            commit_duration: latency_histogram(),
            snapshot_size,
        }
    }
}

impl RaftMetrics {
    /// A snapshot of `bytes` was built or installed.
    pub fn record_snapshot(&self, origin: SnapshotOrigin, bytes: usize) {
        self.snapshot_size
            .get_or_create(&SnapshotLabels { origin })
            .observe(bytes as f64);
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "raft_leader_changes",
            "Times this member saw a new Raft leader elected (a leader in a new term)",
            self.leader_changes.clone(),
        );
        registry.register_with_unit(
            "raft_append_duration",
            "Time from handing entries to the Raft log to their being on disk, fsync included",
            Unit::Seconds,
            self.append_duration.clone(),
        );
        registry.register_with_unit(
            "raft_commit_duration",
            "Time on the leader from proposing a transaction to its being committed and applied",
            Unit::Seconds,
            self.commit_duration.clone(),
        );
        registry.register_with_unit(
            "raft_snapshot_size",
            "Size of the Raft snapshots this member built or installed from the leader",
            Unit::Bytes,
            self.snapshot_size.clone(),
        );
    }
}

/// What the dispatcher records (`crates/manager/src/dispatcher`). The sessions it holds are read
/// at scrape time.
#[derive(Clone, Debug, Default)]
pub struct DispatcherMetrics {
    pub heartbeats: Counter,
    /// Nodes marked down because their heartbeats stopped.
    pub nodes_marked_down: Counter,
    /// Assignment messages sent to nodes (each part of a set in parts counts).
    pub assignment_messages: Counter,
}

impl DispatcherMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "dispatcher_heartbeats",
            "Heartbeats the dispatcher accepted from nodes",
            self.heartbeats.clone(),
        );
        registry.register(
            "dispatcher_nodes_marked_down",
            "Nodes the dispatcher marked down after they missed their heartbeats",
            self.nodes_marked_down.clone(),
        );
        registry.register(
            "dispatcher_assignment_messages",
            "Assignment messages the dispatcher sent to nodes",
            self.assignment_messages.clone(),
        );
    }
}

/// What the orchestration loop records (`crates/manager/src/orchestration_loop.rs`), timed in
/// its shell around the pure cores. Tasks by state and unplaceable tasks are read at scrape
/// time.
#[derive(Clone, Debug)]
pub struct OrchestrationMetrics {
    /// One step: every phase, each read, decided and committed.
    pub step_duration: Histogram,
    /// One scheduler batch: every task waiting for a node, placed.
    pub scheduler_batch_duration: Histogram,
}

impl Default for OrchestrationMetrics {
    fn default() -> Self {
        OrchestrationMetrics {
            step_duration: latency_histogram(),
            scheduler_batch_duration: latency_histogram(),
        }
    }
}

impl OrchestrationMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "orchestration_step_duration",
            "Time the leader's orchestration loop took for one step (every phase, committed)",
            Unit::Seconds,
            self.step_duration.clone(),
        );
        registry.register_with_unit(
            "scheduler_batch_duration",
            "Time the scheduler took to place one batch of the tasks waiting for a node",
            Unit::Seconds,
            self.scheduler_batch_duration.clone(),
        );
    }
}

/// What the worker agent's engine records, for the containers and images of the tasks it runs
/// (the daemon's `MeteredEngine`; the local engine API's own calls are not counted).
#[derive(Clone, Debug)]
pub struct EngineMetrics {
    container_starts: Family<OutcomeLabels, Counter>,
    container_start_duration: Histogram,
    image_pulls: Family<OutcomeLabels, Counter>,
    image_pull_duration: Histogram,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        let (container_starts, image_pulls) = (Family::default(), Family::default());
        // Every series exists from the start, at zero: a family with none would not be written.
        for outcome in [Outcome::Success, Outcome::Failure] {
            let labels = OutcomeLabels { outcome };
            drop(container_starts.get_or_create(&labels));
            drop(image_pulls.get_or_create(&labels));
        }
        EngineMetrics {
            container_starts,
            container_start_duration: latency_histogram(),
            image_pulls,
            image_pull_duration: pull_histogram(),
        }
    }
}

impl EngineMetrics {
    /// A container start that ended as `outcome` after `took`; only successful starts are
    /// timed, so the latency is that of a container coming up.
    pub fn record_container_start(&self, outcome: Outcome, took: Duration) {
        self.container_starts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if outcome == Outcome::Success {
            self.container_start_duration.observe(took.as_secs_f64());
        }
    }

    /// An image pull that ended as `outcome` after `took`.
    pub fn record_image_pull(&self, outcome: Outcome, took: Duration) {
        self.image_pulls
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if outcome == Outcome::Success {
            self.image_pull_duration.observe(took.as_secs_f64());
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "engine_container_starts",
            "Container starts of tasks by the node's engine, by outcome",
            self.container_starts.clone(),
        );
        registry.register_with_unit(
            "engine_container_start_duration",
            "Time a successful container start of a task took, from the call to its process running",
            Unit::Seconds,
            self.container_start_duration.clone(),
        );
        registry.register(
            "engine_image_pulls",
            "Image pulls for tasks by the node's engine, by outcome",
            self.image_pulls.clone(),
        );
        registry.register_with_unit(
            "engine_image_pull_duration",
            "Time a successful image pull for a task took",
            Unit::Seconds,
            self.image_pull_duration.clone(),
        );
    }
}

/// The text formats a scrape can get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' text exposition format, version 0.0.4: what `promtool check metrics` reads,
    /// and the answer when the scraper names no other.
    PrometheusText,
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header asks for: OpenMetrics when it names it (Prometheus
    /// itself does, first), the Prometheus text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let asks_for_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|choice| {
                let mut parameters = choice.split(';').map(str::trim);
                let media_type = parameters.next().unwrap_or_default();
                let refused = parameters.any(|parameter| {
                    parameter
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media_type.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if asks_for_openmetrics {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Every metric family of one daemon, registered once. Share it by `Arc`.
pub struct Metrics {
    registry: Registry,
    pub raft: RaftMetrics,
    pub dispatcher: DispatcherMetrics,
    pub orchestration: OrchestrationMetrics,
    pub engine: EngineMetrics,
    manager: Arc<manager_state::ManagerSlot>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let (raft, dispatcher, orchestration, engine) = (
            RaftMetrics::default(),
            DispatcherMetrics::default(),
            OrchestrationMetrics::default(),
            EngineMetrics::default(),
        );
        let manager = Arc::new(manager_state::ManagerSlot::default());
        let shoal = registry.sub_registry_with_prefix(PREFIX);
        raft.register(shoal);
        dispatcher.register(shoal);
        orchestration.register(shoal);
        engine.register(shoal);
        shoal.register_collector(Box::new(manager_state::ManagerCollector::new(&manager)));
        Metrics {
            registry,
            raft,
            dispatcher,
            orchestration,
            engine,
            manager,
        }
    }

    /// Lends the scrape a running manager role's state: `sample` is called on each scrape
    /// until the returned attachment is dropped (or another manager attaches).
    pub fn attach_manager(
        &self,
        sample: impl Fn() -> ManagerSample + Send + Sync + 'static,
    ) -> ManagerAttachment {
        self.manager.attach(Box::new(sample))
    }

    /// Every family as `format`'s text, values read now.
    pub fn encode(&self, format: Format) -> String {
        let mut text = String::new();
        let encoded = match format {
            Format::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
        };
        // Writing into a String fails only if a value's own formatting does, which none of
        // these can; the scrape would get what was written before it.
        let _ = encoded;
        text
    }
}

#[cfg(test)]
mod tests;
