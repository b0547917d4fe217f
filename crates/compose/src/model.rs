//! The normalised compose project: every short syntax expanded, durations and sizes parsed,
//! references checked. `stack config` prints it; `stack deploy` will convert it to service specs.
//!
//! Its enums are the specs' own (`shoal_proto::api`'s, and `spec`'s [`ServiceMode`]), under
//! compose's key names, so their words are `spec::enums::TextForm`'s: a file, a flag and the
//! JSON output spell them alike.

use std::collections::BTreeMap;
use std::time::Duration;

pub use shoal_proto::api::endpoint_spec::ResolutionMode as EndpointMode;
pub use shoal_proto::api::mount::Type as MountType;
pub use shoal_proto::api::mount::bind_options::Propagation;
pub use shoal_proto::api::port_config::{Protocol, PublishMode, TrafficPolicy};
pub use shoal_proto::api::restart_policy::RestartCondition;
pub use shoal_proto::api::service_dependency::Condition as DependsOnCondition;
pub use shoal_proto::api::update_config::{FailureAction, UpdateOrder};
pub use spec::enums::ModeName as ServiceMode;

use super::yaml::Node;

#[derive(Clone, Debug, Default)]
pub struct ComposeProject {
    pub services: BTreeMap<String, Service>,
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    pub secrets: BTreeMap<String, FileObject>,
    pub configs: BTreeMap<String, FileObject>,
    /// Top-level `x-` fields, kept verbatim.
    pub extensions: BTreeMap<String, Node>,
}

#[derive(Clone, Debug, Default)]
pub struct Service {
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `None` is a variable named without a value that the environment does not set either.
    pub environment: BTreeMap<String, Option<String>>,
    /// Absolute paths; the files are read when the stack is deployed.
    pub env_file: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub deploy: Deploy,
    pub ports: Vec<Port>,
    pub networks: BTreeMap<String, ServiceNetwork>,
    pub volumes: Vec<Mount>,
    pub secrets: Vec<FileReference>,
    pub configs: Vec<FileReference>,
    pub healthcheck: Option<Healthcheck>,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub init: Option<bool>,
    pub read_only: bool,
    pub tty: bool,
    pub stdin_open: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    pub ulimits: BTreeMap<String, Ulimit>,
    pub depends_on: BTreeMap<String, DependsOn>,
    pub logging: Option<Logging>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_opt: Vec<String>,
    pub extra_hosts: BTreeMap<String, String>,
    pub tmpfs: Vec<String>,
    pub extensions: BTreeMap<String, Node>,
}

#[derive(Clone, Debug, Default)]
pub struct Deploy {
    /// `None` when the file does not say; docker prints no mode then.
    pub mode: Option<ServiceMode>,
    pub replicas: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub resources: Resources,
    pub restart_policy: Option<RestartPolicy>,
    pub placement: Placement,
    pub endpoint_mode: Option<EndpointMode>,
}

#[derive(Clone, Debug, Default)]
pub struct UpdateConfig {
    pub parallelism: Option<u64>,
    pub delay: Option<Duration>,
    pub failure_action: Option<FailureAction>,
    pub monitor: Option<Duration>,
    pub max_failure_ratio: Option<f64>,
    pub order: Option<UpdateOrder>,
}

#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub limits: Option<ResourceLimits>,
    pub reservations: Option<ResourceLimits>,
}

#[derive(Clone, Debug, Default)]
pub struct ResourceLimits {
    /// CPUs as a decimal string as written (`0.5`), validated; converted to nano-CPUs on deploy.
    pub cpus: Option<String>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct RestartPolicy {
    pub condition: Option<RestartCondition>,
    pub delay: Option<Duration>,
    pub max_attempts: Option<u64>,
    pub window: Option<Duration>,
}

#[derive(Clone, Debug, Default)]
pub struct Placement {
    pub constraints: Vec<String>,
    /// Each is a `spread` descriptor such as `node.labels.zone`.
    pub preferences: Vec<String>,
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Port {
    pub mode: PublishMode,
    pub target: u16,
    pub published: Option<u16>,
    pub protocol: Protocol,
    /// shoal's own, from the long syntax's `x-traffic-policy` (an extension key, which Docker
    /// ignores, so the file still deploys there).
    pub traffic_policy: TrafficPolicy,
}

#[derive(Clone, Debug, Default)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Mount {
    pub kind: MountType,
    /// A host path (bind), a volume name (volume, `None` for an anonymous one).
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub bind_propagation: Option<Propagation>,
    pub volume_nocopy: bool,
    pub tmpfs_size_bytes: Option<u64>,
}

/// A service's use of a secret or config.
#[derive(Clone, Debug, Default)]
pub struct FileReference {
    pub source: String,
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub mode: Option<u32>,
}

#[derive(Clone, Debug, Default)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u64>,
    pub disable: bool,
}

#[derive(Clone, Debug)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Clone, Debug)]
pub struct DependsOn {
    pub condition: DependsOnCondition,
    pub required: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
pub struct Network {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub attachable: bool,
    pub internal: bool,
    pub enable_ipv6: bool,
    pub external: bool,
    pub labels: BTreeMap<String, String>,
    pub ipam: Option<Ipam>,
}

#[derive(Clone, Debug, Default)]
pub struct Ipam {
    pub driver: Option<String>,
    pub config: Vec<IpamPool>,
}

#[derive(Clone, Debug, Default)]
pub struct IpamPool {
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Volume {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub external: bool,
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config.
#[derive(Clone, Debug, Default)]
pub struct FileObject {
    pub name: Option<String>,
    /// Absolute path of the file holding the data.
    pub file: Option<String>,
    pub external: bool,
    pub labels: BTreeMap<String, String>,
    pub template_driver: Option<String>,
}
