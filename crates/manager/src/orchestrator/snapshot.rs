//! The read-only view of the store that every orchestration core reasons over, and the
//! identities (service mode, slot) derived from it.

use std::collections::BTreeMap;
use std::fmt;

use shoal_proto::api::{Node, Service, Task, service_spec};

/// Services, nodes and tasks as one consistent read of the store, indexed by id. The cores
/// never change it: they return commands, and the shell applies them and builds a fresh
/// snapshot for the next step.
#[derive(Debug, Clone)]
pub struct ClusterSnapshot<'store> {
    services: Vec<&'store Service>,
    nodes: Vec<&'store Node>,
    tasks: Vec<&'store Task>,
    services_by_id: BTreeMap<&'store str, &'store Service>,
    nodes_by_id: BTreeMap<&'store str, &'store Node>,
    tasks_by_service: BTreeMap<&'store str, Vec<&'store Task>>,
}

impl<'store> ClusterSnapshot<'store> {
    /// Indexes one read of the store: every service (including ones marked
    /// `pending_delete`), every member node, and every task, old ones included, each in the
    /// store's order. It borrows them, from the store's decoded view or a test's vectors alike.
    /// Building the indexes once keeps a step over many services linear in the number of tasks.
    pub fn new(
        services: impl IntoIterator<Item = &'store Service>,
        nodes: impl IntoIterator<Item = &'store Node>,
        tasks: impl IntoIterator<Item = &'store Task>,
    ) -> ClusterSnapshot<'store> {
        let services: Vec<&Service> = services.into_iter().collect();
        let nodes: Vec<&Node> = nodes.into_iter().collect();
        let tasks: Vec<&Task> = tasks.into_iter().collect();
        let mut tasks_by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
        for &task in &tasks {
            tasks_by_service
                .entry(task.service_id.as_str())
                .or_default()
                .push(task);
        }
        ClusterSnapshot {
            services_by_id: services
                .iter()
                .map(|&service| (service.id.as_str(), service))
                .collect(),
            nodes_by_id: nodes.iter().map(|&node| (node.id.as_str(), node)).collect(),
            services,
            nodes,
            tasks,
            tasks_by_service,
        }
    }

    /// Every service, in the store's order.
    pub fn services(&self) -> &[&'store Service] {
        &self.services
    }

    /// Every member node, in the store's order.
    pub fn nodes(&self) -> &[&'store Node] {
        &self.nodes
    }

    /// Every task, in the store's order.
    pub fn tasks(&self) -> &[&'store Task] {
        &self.tasks
    }

    /// The service with this id, if it still exists.
    pub fn service(&self, service_id: &str) -> Option<&'store Service> {
        self.services_by_id.get(service_id).copied()
    }

    /// The node with this id, if it is still a member.
    pub fn node(&self, node_id: &str) -> Option<&'store Node> {
        self.nodes_by_id.get(node_id).copied()
    }

    /// Every task, old or current, of one service, in the store's order.
    pub fn tasks_of_service(&self, service_id: &str) -> &[&'store Task] {
        self.tasks_by_service
            .get(service_id)
            .map_or(&[], Vec::as_slice)
    }
}

/// How a service turns into tasks, read from `ServiceSpec.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceMode {
    /// `replicas` long-running tasks, one per slot.
    Replicated {
        /// How many slots the service has.
        replicas: u64,
    },
    /// One long-running task per eligible node.
    Global,
    /// Run-to-completion tasks until `total_completions` of them have completed.
    ReplicatedJob {
        /// How many tasks run at once; never 0 (0 in the spec means `total_completions`).
        max_concurrent: u64,
        /// How many tasks must complete for the job to be done.
        total_completions: u64,
    },
    /// One run-to-completion task per eligible node.
    GlobalJob,
}

impl ServiceMode {
    /// Reads the mode of a service; `None` when the spec or its mode is missing, which the
    /// control API never lets through, so such a service is left alone.
    pub fn of_service(service: &Service) -> Option<ServiceMode> {
        let mode = service.spec.as_ref()?.mode.as_ref()?;
        Some(match mode {
            service_spec::Mode::Replicated(replicated) => ServiceMode::Replicated {
                replicas: replicated.replicas,
            },
            service_spec::Mode::Global(_) => ServiceMode::Global,
            service_spec::Mode::ReplicatedJob(job) => ServiceMode::ReplicatedJob {
                max_concurrent: if job.max_concurrent == 0 {
                    job.total_completions
                } else {
                    job.max_concurrent
                },
                total_completions: job.total_completions,
            },
            service_spec::Mode::GlobalJob(_) => ServiceMode::GlobalJob,
        })
    }

    /// Whether tasks of this mode run to completion rather than forever.
    pub const fn is_job(self) -> bool {
        matches!(
            self,
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob
        )
    }

    /// Whether tasks of this mode are bound to a node rather than numbered in slots.
    pub const fn is_per_node(self) -> bool {
        matches!(self, ServiceMode::Global | ServiceMode::GlobalJob)
    }
}

/// The identity a task keeps across restarts: a numbered slot for replicated services and
/// jobs, or a node for global ones. Restart counts and task history are kept per slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotKey {
    /// Slot `slot` (1-based) of a replicated service or job.
    Replica {
        /// The owning service.
        service_id: String,
        /// The slot number, from 1.
        slot: u64,
    },
    /// The one task of a global service or job on a node.
    Node {
        /// The owning service.
        service_id: String,
        /// The node the slot is bound to.
        node_id: String,
    },
}

impl SlotKey {
    /// The slot a task occupies: its slot number when it has one, else its node.
    pub fn of_task(task: &Task) -> SlotKey {
        if task.slot > 0 {
            SlotKey::Replica {
                service_id: task.service_id.clone(),
                slot: task.slot,
            }
        } else {
            SlotKey::Node {
                service_id: task.service_id.clone(),
                node_id: task.node_id.clone(),
            }
        }
    }

    /// The service the slot belongs to.
    pub fn service_id(&self) -> &str {
        match self {
            SlotKey::Replica { service_id, .. } | SlotKey::Node { service_id, .. } => service_id,
        }
    }
}

impl fmt::Display for SlotKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotKey::Replica { service_id, slot } => write!(formatter, "{service_id}.{slot}"),
            SlotKey::Node {
                service_id,
                node_id,
            } => write!(formatter, "{service_id}@{node_id}"),
        }
    }
}
