//! The read-only view of the store that every orchestration core reasons over, and the
//! identities (service mode, slot) derived from it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;

use shoal_proto::api::{Node, Service, Task, service_spec};

use scheduler::NodeSet;

use super::eligibility::node_keeps_replicated_tasks;
use super::task_index::TaskIndex;
use crate::assignment::{NodeOccupancy, node_view};

/// Services, nodes and tasks, decoded and indexed: what a snapshot borrows. The manager's
/// cluster view keeps one current as the store commits; a test builds one from its objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterObjects {
    services: BTreeMap<String, Service>,
    nodes: BTreeMap<String, Node>,
    /// Boxed: a B-tree's nodes hold room for eleven values, a third of it empty on average,
    /// and a decoded task is over a kilobyte (at 50,000 tasks, boxing took the leader's
    /// decoded tasks from 195 to 142 MB).
    tasks: BTreeMap<String, Box<Task>>,
    index: TaskIndex,
    /// The scheduler's view of each node, kept with the node and what its tasks hold of it,
    /// so that placing a task builds none and reads no node's description.
    scheduler_nodes: NodeSet,
    /// The nodes that have tasks filed on them but can't keep replicated ones (drained, down
    /// or gone), kept as nodes and tasks change so that a step finds them without passing
    /// over every node.
    nodes_losing_tasks: BTreeSet<String>,
    /// The nodes holding a network attachment (their ingress leg): all the network allocator
    /// reads of the nodes while no service publishes through the mesh.
    nodes_with_attachments: BTreeSet<String>,
}

impl ClusterObjects {
    /// Copies of these services (including ones marked `pending_delete`), nodes and tasks
    /// (old ones included), filed by id.
    pub fn new<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        nodes: impl IntoIterator<Item = &'a Node>,
        tasks: impl IntoIterator<Item = &'a Task>,
    ) -> ClusterObjects {
        let mut objects = ClusterObjects::default();
        for service in services {
            objects.insert_service(service.clone());
        }
        for node in nodes {
            objects.insert_node(node.clone());
        }
        for task in tasks {
            objects.insert_task(task.clone());
        }
        objects
    }

    /// One consistent read of these objects.
    pub fn snapshot(&self) -> ClusterSnapshot<'_> {
        ClusterSnapshot { objects: self }
    }

    /// Adds or replaces a task, keeping the index in step.
    pub fn insert_task(&mut self, task: Task) {
        self.remove_task(&task.id);
        self.index.insert(&task);
        self.occupancy_changed(&task);
        self.refresh_losing_tasks(&task.node_id);
        self.tasks.insert(task.id.clone(), Box::new(task));
    }

    /// Removes a task, returning it.
    pub fn remove_task(&mut self, id: &str) -> Option<Task> {
        let task = *self.tasks.remove(id)?;
        self.index.remove(&task);
        self.occupancy_changed(&task);
        self.refresh_losing_tasks(&task.node_id);
        Some(task)
    }

    /// Files `node_id` among the nodes losing their tasks, or takes it out, by what its
    /// object and its tasks are now.
    fn refresh_losing_tasks(&mut self, node_id: &str) {
        let losing = self.index.tasks_on_node(node_id).next().is_some()
            && !node_keeps_replicated_tasks(self.nodes.get(node_id));
        if losing {
            if !self.nodes_losing_tasks.contains(node_id) {
                self.nodes_losing_tasks.insert(node_id.to_owned());
            }
        } else {
            self.nodes_losing_tasks.remove(node_id);
        }
    }

    /// Brings the scheduler's view of `task`'s node up to what its tasks now hold of it.
    fn occupancy_changed(&mut self, task: &Task) {
        if !NodeOccupancy::counts(task) {
            return;
        }
        let occupancy = self.index.occupancy(&task.node_id);
        self.scheduler_nodes.update(&task.node_id, |view| {
            NodeOccupancy::reserve_on(occupancy, view);
        });
    }

    /// Adds or replaces a service.
    pub fn insert_service(&mut self, service: Service) {
        self.services.insert(service.id.clone(), service);
    }

    pub fn remove_service(&mut self, id: &str) -> Option<Service> {
        self.services.remove(id)
    }

    /// Adds or replaces a node.
    pub fn insert_node(&mut self, node: Node) {
        let mut view = node_view(&node);
        NodeOccupancy::reserve_on(self.index.occupancy(&node.id), &mut view);
        self.scheduler_nodes.insert(view);
        if node.attachments.is_empty() {
            self.nodes_with_attachments.remove(&node.id);
        } else {
            self.nodes_with_attachments.insert(node.id.clone());
        }
        let id = node.id.clone();
        self.nodes.insert(id.clone(), node);
        self.refresh_losing_tasks(&id);
    }

    pub fn remove_node(&mut self, id: &str) -> Option<Node> {
        self.scheduler_nodes.remove(id);
        self.nodes_with_attachments.remove(id);
        let node = self.nodes.remove(id);
        self.refresh_losing_tasks(id);
        node
    }
}

/// One consistent read of the cluster's services, nodes and tasks, that every orchestration
/// core reasons over. The cores never change it: they return commands, and the shell applies
/// them and reads again for the next step. Every list is in id order, the store's order.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSnapshot<'store> {
    objects: &'store ClusterObjects,
}

impl<'store> ClusterSnapshot<'store> {
    /// Every service, including ones marked `pending_delete`.
    pub fn services(&self) -> impl Iterator<Item = &'store Service> + use<'store> {
        self.objects.services.values()
    }

    /// Every node.
    pub fn nodes(&self) -> impl Iterator<Item = &'store Node> + use<'store> {
        self.objects.nodes.values()
    }

    /// Every task, old ones included.
    pub fn tasks(&self) -> impl Iterator<Item = &'store Task> + use<'store> {
        self.objects.tasks.values().map(|task| &**task)
    }

    /// The service with this id, if it still exists.
    pub fn service(&self, service_id: &str) -> Option<&'store Service> {
        self.objects.services.get(service_id)
    }

    /// The node with this id, if it is still a member.
    pub fn node(&self, node_id: &str) -> Option<&'store Node> {
        self.objects.nodes.get(node_id)
    }

    /// The task with this id, if it still exists.
    pub fn task(&self, task_id: &str) -> Option<&'store Task> {
        self.objects.tasks.get(task_id).map(|task| &**task)
    }

    /// The scheduler's view of every node, with what its tasks hold of it.
    pub fn scheduler_nodes(&self) -> &'store NodeSet {
        &self.objects.scheduler_nodes
    }

    /// Where the tasks are filed by what the cores look for.
    pub fn index(&self) -> &'store TaskIndex {
        &self.objects.index
    }

    /// The tasks with these ids that exist.
    pub fn tasks_with_ids<'ids, I>(
        &self,
        ids: I,
    ) -> impl Iterator<Item = &'store Task> + use<'store, 'ids, I>
    where
        I: IntoIterator<Item = &'ids str>,
    {
        let tasks = &self.objects.tasks;
        ids.into_iter()
            .filter_map(move |id| tasks.get(id).map(|task| &**task))
    }

    /// Every task, old or current, of one service.
    pub fn tasks_of_service(
        &self,
        service_id: &str,
    ) -> impl Iterator<Item = &'store Task> + use<'store> {
        self.tasks_with_ids(self.objects.index.tasks_of_service(service_id))
    }

    /// Every task, old or current, that fills `slot`.
    pub fn tasks_of_slot(
        &self,
        slot: &SlotKey,
    ) -> impl Iterator<Item = &'store Task> + use<'store> {
        self.tasks_with_ids(self.objects.index.tasks_of_slot(slot))
    }

    /// Every task assigned to `node_id`.
    pub fn tasks_on_node(&self, node_id: &str) -> impl Iterator<Item = &'store Task> + use<'store> {
        self.tasks_with_ids(self.objects.index.tasks_on_node(node_id))
    }

    /// The nodes that hold a network attachment, in id order.
    pub fn nodes_with_attachments(&self) -> impl Iterator<Item = &'store Node> + use<'store> {
        let nodes = &self.objects.nodes;
        self.objects
            .nodes_with_attachments
            .iter()
            .filter_map(|id| nodes.get(id))
    }

    /// The ids of the nodes that have tasks assigned but can't keep replicated tasks: drained,
    /// down, or no longer members. In id order.
    pub fn nodes_losing_tasks(&self) -> impl Iterator<Item = &'store str> + use<'store> {
        self.objects.nodes_losing_tasks.iter().map(String::as_str)
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

    /// Forgets the slots of services for which `keep` is false. Keys sort by kind, then
    /// service, so each service's slots are one run: the services are visited once each,
    /// jumping over their runs, and the whole map is walked only when one must go.
    pub fn retain_services<Value>(
        slots: &mut BTreeMap<SlotKey, Value>,
        mut keep: impl FnMut(&str) -> bool,
    ) {
        let mut next = slots.first_key_value().map(|(key, _)| key);
        let mut all_kept = true;
        while let Some(key) = next {
            if !keep(key.service_id()) {
                all_kept = false;
                break;
            }
            next = slots
                .range((Bound::Excluded(key.past_its_service()), Bound::Unbounded))
                .next()
                .map(|(key, _)| key);
        }
        if !all_kept {
            slots.retain(|slot, _| keep(slot.service_id()));
        }
    }

    /// A key after every slot of the same kind and service, and before those of the next.
    fn past_its_service(&self) -> SlotKey {
        match self {
            SlotKey::Replica { service_id, .. } => SlotKey::Replica {
                service_id: service_id.clone(),
                slot: u64::MAX,
            },
            // No node id sorts after every other, but the next service id does: the
            // smallest string greater than this one.
            SlotKey::Node { service_id, .. } => SlotKey::Node {
                service_id: format!("{service_id}\0"),
                node_id: String::new(),
            },
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
