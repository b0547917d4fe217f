//! The scheduler's own input and output types; the manager converts its protobuf objects into these.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::constraint::Constraint;
use crate::preference::SpreadPreference;
use crate::reason::UnplaceableReason;

/// A CPU and memory amount, in the units the Docker API uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resources {
    /// Billionths of one CPU: 1_000_000_000 is one whole CPU.
    pub nano_cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Resources {
    /// Resources of zero CPU and zero memory.
    pub const ZERO: Resources = Resources {
        nano_cpus: 0,
        memory_bytes: 0,
    };

    /// Builds an amount from CPUs in billionths and memory in bytes.
    pub const fn new(nano_cpus: u64, memory_bytes: u64) -> Resources {
        Resources {
            nano_cpus,
            memory_bytes,
        }
    }

    /// Subtracts component-wise, stopping at zero; a node reserved beyond its
    /// total (possible after a node shrinks) simply has nothing left.
    pub const fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            nano_cpus: self.nano_cpus.saturating_sub(other.nano_cpus),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }

    /// Adds component-wise, stopping at the largest value instead of wrapping.
    pub const fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            nano_cpus: self.nano_cpus.saturating_add(other.nano_cpus),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// Whether a node is a manager or a worker; constraints spell these `manager` and `worker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeRole {
    /// A node that takes part in Raft and runs the manager role (it may also run tasks).
    Manager,
    /// A node that only runs tasks.
    Worker,
}

impl NodeRole {
    /// The name used in constraints and on the CLI: `spec`'s word for the role, which this crate
    /// can't take from there (`spec` speaks protobuf); the manager's tests check the two agree.
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What the operator allows on a node (`docker node update --availability`). Its words are
/// `spec`'s (`active`, `pause`, `drain`); the scheduler, which knows no protobuf, only tells the
/// values apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeAvailability {
    /// Takes new tasks.
    Active,
    /// Keeps its running tasks but takes no new ones.
    Pause,
    /// Takes no new tasks; the orchestrator moves its tasks away.
    Drain,
}

/// An operating system and CPU architecture pair, as a node reports it or an image supports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// Operating system, for example `linux`. Empty in a task's platform list means any.
    pub os: String,
    /// CPU architecture, for example `amd64`. Empty in a task's platform list means any.
    pub architecture: String,
}

impl Platform {
    /// Builds a platform from its operating system and architecture.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
        }
    }
}

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A port on the node's own addresses, taken by a host-mode published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// Transport protocol; tcp/80 and udp/80 do not conflict.
    pub protocol: PortProtocol,
    /// Port number on the host.
    pub port: u16,
}

impl HostPort {
    /// A TCP port on the host.
    pub const fn tcp(port: u16) -> HostPort {
        HostPort {
            protocol: PortProtocol::Tcp,
            port,
        }
    }

    /// A UDP port on the host.
    pub const fn udp(port: u16) -> HostPort {
        HostPort {
            protocol: PortProtocol::Udp,
            port,
        }
    }
}

/// What the scheduler needs to know about one node at the moment of scheduling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Cluster-wide node id; also the final tie-breaker between equally loaded nodes.
    pub id: String,
    /// Hostname the node reported.
    pub hostname: String,
    /// Manager or worker.
    pub role: NodeRole,
    /// Operating system and architecture the node reported.
    pub platform: Platform,
    /// Labels set by operators (`docker node update --label-add`).
    pub labels: BTreeMap<String, String>,
    /// Labels the node's engine reported about itself.
    pub engine_labels: BTreeMap<String, String>,
    /// Whether the operator lets the node take new tasks.
    pub availability: NodeAvailability,
    /// Whether the node is up and connected to the dispatcher.
    pub ready: bool,
    /// Everything the node has.
    pub total_resources: Resources,
    /// The part of `total_resources` already reserved by tasks on the node.
    pub reserved_resources: Resources,
    /// How many live tasks of each service (by service id) already run on the node.
    pub task_count_by_service: BTreeMap<String, u64>,
    /// Host ports already taken on the node by host-mode published ports.
    pub host_ports_in_use: BTreeSet<HostPort>,
}

impl NodeView {
    /// A ready, active `linux`/`amd64` worker with the given id and resources,
    /// no labels, nothing reserved and no tasks; the hostname is the id.
    /// Mostly useful in tests and benchmarks.
    pub fn new(id: impl Into<String>, total_resources: Resources) -> NodeView {
        let id = id.into();
        NodeView {
            hostname: id.clone(),
            id,
            role: NodeRole::Worker,
            platform: Platform::new("linux", "amd64"),
            labels: BTreeMap::new(),
            engine_labels: BTreeMap::new(),
            availability: NodeAvailability::Active,
            ready: true,
            total_resources,
            reserved_resources: Resources::ZERO,
            task_count_by_service: BTreeMap::new(),
            host_ports_in_use: BTreeSet::new(),
        }
    }

    /// Resources still free for new reservations.
    pub fn available_resources(&self) -> Resources {
        self.total_resources.saturating_sub(self.reserved_resources)
    }

    /// How many tasks of all services already run on the node.
    pub fn total_task_count(&self) -> u64 {
        self.task_count_by_service
            .values()
            .fold(0_u64, |sum, count| sum.saturating_add(*count))
    }
}

/// One task waiting for a node, with everything that constrains where it may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// Task id; echoed in the task's decision.
    pub task_id: String,
    /// Service the task belongs to; spread and least-loaded count tasks per service.
    pub service_id: String,
    /// Resources the task reserves on its node.
    pub reservations: Resources,
    /// Every constraint must hold on the chosen node.
    pub constraints: Vec<Constraint>,
    /// Spread preferences, outermost first (the first one splits the cluster first).
    pub placement_preferences: Vec<SpreadPreference>,
    /// At most this many tasks of the service per node; 0 means no limit.
    pub max_replicas_per_node: u64,
    /// Host ports the task publishes in host mode; each must be free on the chosen node.
    pub host_published_ports: Vec<HostPort>,
    /// Platforms the task's image supports; empty means any.
    pub platforms: Vec<Platform>,
}

impl TaskRequest {
    /// A task with no reservations, constraints, preferences, limits, ports or platforms.
    pub fn new(task_id: impl Into<String>, service_id: impl Into<String>) -> TaskRequest {
        TaskRequest {
            task_id: task_id.into(),
            service_id: service_id.into(),
            reservations: Resources::ZERO,
            constraints: Vec::new(),
            placement_preferences: Vec::new(),
            max_replicas_per_node: 0,
            host_published_ports: Vec::new(),
            platforms: Vec::new(),
        }
    }
}

/// The scheduler's verdict for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The task goes to this node.
    Assign {
        /// The task placed.
        task_id: String,
        /// The node chosen.
        node_id: String,
    },
    /// No node can take the task now; it stays pending with this reason as its status message.
    Unplaceable {
        /// The task that could not be placed.
        task_id: String,
        /// Why, counting the nodes each filter rejected.
        reason: UnplaceableReason,
    },
}

impl Decision {
    /// The task this decision is about.
    pub fn task_id(&self) -> &str {
        match self {
            Decision::Assign { task_id, .. } | Decision::Unplaceable { task_id, .. } => task_id,
        }
    }

    /// The chosen node, if the task was placed.
    pub fn assigned_node_id(&self) -> Option<&str> {
        match self {
            Decision::Assign { node_id, .. } => Some(node_id),
            Decision::Unplaceable { .. } => None,
        }
    }
}
