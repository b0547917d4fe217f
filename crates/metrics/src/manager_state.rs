//! The gauges that mirror a manager's state (Raft term and indexes, objects by kind, tasks by
//! state, unplaceable tasks, dispatcher sessions), computed at scrape time rather than kept up by
//! hand: a running manager role attaches a sampler, and the collector here calls it on each
//! scrape and writes what it returns. A daemon with no manager role running writes none of
//! these families.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

/// Where this member's Raft log stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftProgress {
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub is_leader: bool,
}

/// A manager's state as one scrape sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManagerSample {
    pub raft: RaftProgress,
    /// Objects in this manager's copy of the store, by the store's word for their kind
    /// (`node`, `service`, `task`, …).
    pub objects_by_kind: Vec<(String, u64)>,
    /// Tasks by observed state, in Docker's words (`running`, `pending`, …).
    pub tasks_by_state: Vec<(String, u64)>,
    /// Tasks waiting for a node that the scheduler found none for.
    pub unplaceable_tasks: u64,
    /// Nodes with a live session on this manager's dispatcher (only the leader holds any).
    pub dispatcher_sessions: u64,
}

type Sampler = Box<dyn Fn() -> ManagerSample + Send + Sync>;

/// The manager role attached now, if any, under the number its attachment holds.
#[derive(Default)]
pub(crate) struct ManagerSlot {
    current: Mutex<Option<(u64, Arc<Sampler>)>>,
    attachments: AtomicU64,
}

impl ManagerSlot {
    fn current(&self) -> std::sync::MutexGuard<'_, Option<(u64, Arc<Sampler>)>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn attach(self: &Arc<Self>, sampler: Sampler) -> ManagerAttachment {
        let number = self.attachments.fetch_add(1, Ordering::Relaxed);
        *self.current() = Some((number, Arc::new(sampler)));
        ManagerAttachment {
            slot: Arc::downgrade(self),
            number,
        }
    }

    fn sample(&self) -> Option<ManagerSample> {
        // The sampler runs outside the lock: it reads the store, and a role being attached or
        // detached meanwhile must not wait on it.
        let sampler = self
            .current()
            .as_ref()
            .map(|(_, sampler)| Arc::clone(sampler))?;
        Some(sampler())
    }
}

/// Keeps a manager role's sampler in the scrape; dropping it takes the sampler out (unless
/// another role attached since).
pub struct ManagerAttachment {
    slot: Weak<ManagerSlot>,
    number: u64,
}

impl std::fmt::Debug for ManagerAttachment {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ManagerAttachment")
            .field("number", &self.number)
            .finish()
    }
}

impl Drop for ManagerAttachment {
    fn drop(&mut self) {
        let Some(slot) = self.slot.upgrade() else {
            return;
        };
        let mut current = slot.current();
        if current
            .as_ref()
            .is_some_and(|(number, _)| *number == self.number)
        {
            *current = None;
        }
    }
}

/// Writes the attached manager's state on each scrape.
pub(crate) struct ManagerCollector {
    slot: Weak<ManagerSlot>,
}

impl ManagerCollector {
    pub(crate) fn new(slot: &Arc<ManagerSlot>) -> ManagerCollector {
        ManagerCollector {
            slot: Arc::downgrade(slot),
        }
    }
}

impl std::fmt::Debug for ManagerCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ManagerCollector").finish()
    }
}

/// One gauge without labels.
fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// One gauge family with one label, a series per value.
fn labelled_gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    series: &[(String, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, count) in series {
        family
            .encode_family(&[(label, value.as_str())])?
            .encode_gauge(count)?;
    }
    Ok(())
}

impl Collector for ManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sample) = self.slot.upgrade().and_then(|slot| slot.sample()) else {
            return Ok(());
        };
        let raft = sample.raft;
        let encoder = &mut encoder;
        gauge(
            encoder,
            "raft_term",
            "The Raft term this member is in.",
            raft.term,
        )?;
        gauge(
            encoder,
            "raft_last_log_index",
            "Index of the last entry in this member's Raft log.",
            raft.last_log_index,
        )?;
        gauge(
            encoder,
            "raft_commit_index",
            "Index of the last Raft entry this member knows to be committed.",
            raft.commit_index,
        )?;
        gauge(
            encoder,
            "raft_applied_index",
            "Index of the last Raft entry this member applied to its store.",
            raft.applied_index,
        )?;
        gauge(
            encoder,
            "raft_is_leader",
            "1 while this member leads the Raft group, 0 otherwise.",
            u64::from(raft.is_leader),
        )?;
        labelled_gauges(
            encoder,
            "store_objects",
            "Objects in this manager's copy of the cluster store, by kind.",
            "kind",
            &sample.objects_by_kind,
        )?;
        labelled_gauges(
            encoder,
            "tasks",
            "Tasks in the cluster store, by observed state.",
            "state",
            &sample.tasks_by_state,
        )?;
        gauge(
            encoder,
            "scheduler_unplaceable_tasks",
            "Tasks waiting for a node that the scheduler found no node for.",
            sample.unplaceable_tasks,
        )?;
        gauge(
            encoder,
            "dispatcher_sessions",
            "Nodes with a live session on this manager's dispatcher (only the leader's has any).",
            sample.dispatcher_sessions,
        )
    }
}
