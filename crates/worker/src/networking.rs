//! The seam between the worker and the node's networking: what a task asks of the overlay
//! ([`TaskNetworks`], read purely from the task), and the trait the daemon implements to give a
//! task its network namespace and to keep the node's endpoints, DNS and load balancing in step
//! with the tasks the reconciler holds ([`TaskNetworking`]).
//!
//! The order it guarantees: `prepare` runs before a networked task's container is created (the
//! container joins the namespace it returns); `set_endpoints` carries the whole set of networked
//! tasks whose containers exist or are being made, each with whether it serves (runs and, with a
//! healthcheck, is healthy), so a task that leaves the set is torn down, also after a restart.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use shoal_proto::api::port_config::{Protocol, TrafficPolicy};

/// How a service's name resolves on a network (`--endpoint-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointMode {
    /// To the service's virtual IP, load-balanced to its tasks.
    Vip,
    /// To the addresses of its serving tasks, round robin.
    DnsRoundRobin,
}

/// One network a task is attached to, with what the allocator gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkAttachment {
    pub network_id: String,
    pub network_name: String,
    /// The network's VXLAN id.
    pub vni: u32,
    /// The network's gateway with the subnet's prefix ("10.0.1.1/24").
    pub gateway: String,
    /// The task's address with the subnet's prefix ("10.0.1.5/24").
    pub address: String,
    pub internal: bool,
    /// `--opt encrypted`: IPsec between nodes.
    pub encrypted: bool,
    /// The ingress network of the routing mesh: it holds no names.
    pub ingress: bool,
    /// The service's aliases on this network.
    pub aliases: Vec<String>,
    /// The service's virtual IP on this network with its prefix, in `vip` mode.
    pub virtual_ip: Option<String>,
}

/// A port the task's service publishes through the routing mesh: a connection to `published` on
/// any node's address goes to `target` in one of the service's ready tasks, as `policy` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngressPort {
    pub protocol: Protocol,
    pub published: u16,
    pub target: u16,
    pub policy: TrafficPolicy,
}

/// A port the task publishes on its own node only (`mode=host`): a connection to `published` on
/// the node's addresses goes to `target` in this task, which sees the client's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: Protocol,
    pub published: u16,
    pub target: u16,
}

/// `--dns`, `--dns-search` and `--dns-option`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsOptions {
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// Everything the node's networking needs to know of one task, read from the task alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskNetworks {
    pub task_id: String,
    /// `<service>.<slot>.<task id>`: the name DNS gives the task's own address.
    pub container_name: String,
    pub service_id: String,
    pub service_name: String,
    pub endpoint_mode: EndpointMode,
    /// In the task's order: the first is its eth0.
    pub attachments: Vec<NetworkAttachment>,
    /// What its service publishes through the routing mesh (the task is on the ingress network
    /// then).
    pub ingress_ports: Vec<IngressPort>,
    /// What it publishes on its own node (a task with host ports and no network still gets a
    /// namespace with a way out, for them to reach it).
    pub host_ports: Vec<HostPort>,
    pub dns: DnsOptions,
    /// `--host` entries for /etc/hosts, as the spec holds them ("IP NAME [ALIAS...]").
    pub hosts: Vec<String>,
    /// The container's hostname, for its own /etc/hosts line.
    pub hostname: String,
}

/// What a prepared task's container is created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedNetworks {
    /// The network namespace the container joins (a bind-mounted file).
    pub netns: PathBuf,
    /// The task's /etc/resolv.conf (naming 127.0.0.11).
    pub resolv_conf: Vec<u8>,
    /// The task's /etc/hosts.
    pub hosts: Vec<u8>,
}

/// A networked task the node holds, and whether it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub networks: TaskNetworks,
    /// Running and, with a healthcheck, healthy: only then is it in DNS, behind VIPs and
    /// announced to the other nodes as ready.
    pub serving: bool,
}

/// A boxed future, so the trait can be held as `Arc<dyn TaskNetworking>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The node's networking as the worker drives it; the daemon's implementation programs the
/// overlay, gossip, DNS and VIPs.
pub trait TaskNetworking: Send + Sync + 'static {
    /// Makes the task's network namespace, its interfaces on each network, its DNS and its VIP
    /// table ready, before its container is created. Idempotent: a task prepared before (a
    /// restarted daemon, a retried create) gets the same namespace back. `None`: the node runs
    /// the task without the overlay, in a namespace of its own. Errors say what failed and
    /// become the task's error.
    fn prepare<'a>(
        &'a self,
        task: &'a TaskNetworks,
    ) -> BoxFuture<'a, Result<Option<PreparedNetworks>, String>>;

    /// The whole set of networked tasks whose containers exist or are being made, by task id.
    /// Anything prepared before and missing here is torn down (its namespace, interfaces,
    /// announcements). Called whenever the set or a task's serving changes.
    fn set_endpoints(&self, endpoints: BTreeMap<String, LocalEndpoint>);

    /// Resolves once the task, already marked as not serving by `set_endpoints`, gets no new
    /// connection: it has left this node's DNS, VIP and mesh tables, and the other nodes have had
    /// time to hear so. The worker awaits it before a serving task's stop signal, so a rolling
    /// update or a drain sends no request to a task that is going away. At once for a task the
    /// networking does not hold.
    fn drained<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, ()> {
        let _ = task_id;
        Box::pin(std::future::ready(()))
    }
}

/// A node whose daemon does not drive the overlay: a networked task runs as every task did
/// before the overlay existed, in a network namespace of its own with only loopback, reachable
/// by no other task; there is nothing to keep in step.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNetworking;

impl TaskNetworking for NoNetworking {
    fn prepare<'a>(
        &'a self,
        _task: &'a TaskNetworks,
    ) -> BoxFuture<'a, Result<Option<PreparedNetworks>, String>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn set_endpoints(&self, _endpoints: BTreeMap<String, LocalEndpoint>) {}
}
