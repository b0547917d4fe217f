//! The normalised compose project: every short syntax expanded, durations and sizes parsed,
//! references checked. `stack config` prints it; `stack deploy` will convert it to service specs.

use std::collections::BTreeMap;
use std::time::Duration;

use super::yaml::Node;

#[derive(Clone, Debug, Default)]
pub(crate) struct ComposeProject {
    pub(crate) services: BTreeMap<String, Service>,
    pub(crate) networks: BTreeMap<String, Network>,
    pub(crate) volumes: BTreeMap<String, Volume>,
    pub(crate) secrets: BTreeMap<String, FileObject>,
    pub(crate) configs: BTreeMap<String, FileObject>,
    /// Top-level `x-` fields, kept verbatim.
    pub(crate) extensions: BTreeMap<String, Node>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Service {
    pub(crate) image: String,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) entrypoint: Option<Vec<String>>,
    /// `None` is a variable named without a value that the environment does not set either.
    pub(crate) environment: BTreeMap<String, Option<String>>,
    /// Absolute paths; the files are read when the stack is deployed.
    pub(crate) env_file: Vec<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) deploy: Deploy,
    pub(crate) ports: Vec<Port>,
    pub(crate) networks: BTreeMap<String, ServiceNetwork>,
    pub(crate) volumes: Vec<Mount>,
    pub(crate) secrets: Vec<FileReference>,
    pub(crate) configs: Vec<FileReference>,
    pub(crate) healthcheck: Option<Healthcheck>,
    pub(crate) stop_grace_period: Option<Duration>,
    pub(crate) stop_signal: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) working_dir: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) init: Option<bool>,
    pub(crate) read_only: bool,
    pub(crate) tty: bool,
    pub(crate) stdin_open: bool,
    pub(crate) cap_add: Vec<String>,
    pub(crate) cap_drop: Vec<String>,
    pub(crate) sysctls: BTreeMap<String, String>,
    pub(crate) ulimits: BTreeMap<String, Ulimit>,
    pub(crate) depends_on: BTreeMap<String, DependsOn>,
    pub(crate) logging: Option<Logging>,
    pub(crate) dns: Vec<String>,
    pub(crate) dns_search: Vec<String>,
    pub(crate) extra_hosts: BTreeMap<String, String>,
    pub(crate) tmpfs: Vec<String>,
    pub(crate) extensions: BTreeMap<String, Node>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ServiceMode {
    #[default]
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

impl ServiceMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Replicated => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob => "replicated-job",
            ServiceMode::GlobalJob => "global-job",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Deploy {
    /// `None` when the file does not say; docker prints no mode then.
    pub(crate) mode: Option<ServiceMode>,
    pub(crate) replicas: Option<u64>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) update_config: Option<UpdateConfig>,
    pub(crate) rollback_config: Option<UpdateConfig>,
    pub(crate) resources: Resources,
    pub(crate) restart_policy: Option<RestartPolicy>,
    pub(crate) placement: Placement,
    pub(crate) endpoint_mode: Option<EndpointMode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndpointMode {
    Vip,
    Dnsrr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureAction {
    Continue,
    Rollback,
    Pause,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpdateOrder {
    StopFirst,
    StartFirst,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct UpdateConfig {
    pub(crate) parallelism: Option<u64>,
    pub(crate) delay: Option<Duration>,
    pub(crate) failure_action: Option<FailureAction>,
    pub(crate) monitor: Option<Duration>,
    pub(crate) max_failure_ratio: Option<f64>,
    pub(crate) order: Option<UpdateOrder>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Resources {
    pub(crate) limits: Option<ResourceLimits>,
    pub(crate) reservations: Option<ResourceLimits>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ResourceLimits {
    /// CPUs as a decimal string as written (`0.5`), validated; converted to nano-CPUs on deploy.
    pub(crate) cpus: Option<String>,
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) pids: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct RestartPolicy {
    pub(crate) condition: Option<RestartCondition>,
    pub(crate) delay: Option<Duration>,
    pub(crate) max_attempts: Option<u64>,
    pub(crate) window: Option<Duration>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Placement {
    pub(crate) constraints: Vec<String>,
    /// Each is a `spread` descriptor such as `node.labels.zone`.
    pub(crate) preferences: Vec<String>,
    pub(crate) max_replicas_per_node: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PublishMode {
    Ingress,
    Host,
}

#[derive(Clone, Debug)]
pub(crate) struct Port {
    pub(crate) mode: PublishMode,
    pub(crate) target: u16,
    pub(crate) published: Option<u16>,
    pub(crate) protocol: String,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ServiceNetwork {
    pub(crate) aliases: Vec<String>,
    pub(crate) ipv4_address: Option<String>,
    pub(crate) ipv6_address: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MountType {
    Bind,
    Volume,
    Tmpfs,
}

#[derive(Clone, Debug)]
pub(crate) struct Mount {
    pub(crate) kind: MountType,
    /// A host path (bind), a volume name (volume, `None` for an anonymous one).
    pub(crate) source: Option<String>,
    pub(crate) target: String,
    pub(crate) read_only: bool,
    pub(crate) bind_propagation: Option<String>,
    pub(crate) volume_nocopy: bool,
    pub(crate) tmpfs_size_bytes: Option<u64>,
}

/// A service's use of a secret or config.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileReference {
    pub(crate) source: String,
    pub(crate) target: Option<String>,
    pub(crate) uid: Option<String>,
    pub(crate) gid: Option<String>,
    pub(crate) mode: Option<u32>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Healthcheck {
    pub(crate) test: Vec<String>,
    pub(crate) interval: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) start_period: Option<Duration>,
    pub(crate) start_interval: Option<Duration>,
    pub(crate) retries: Option<u64>,
    pub(crate) disable: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Ulimit {
    pub(crate) soft: i64,
    pub(crate) hard: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DependsOnCondition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

impl DependsOnCondition {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DependsOnCondition::Started => "service_started",
            DependsOnCondition::Healthy => "service_healthy",
            DependsOnCondition::CompletedSuccessfully => "service_completed_successfully",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct DependsOn {
    pub(crate) condition: DependsOnCondition,
    pub(crate) required: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Logging {
    pub(crate) driver: Option<String>,
    pub(crate) options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Network {
    pub(crate) name: Option<String>,
    pub(crate) driver: Option<String>,
    pub(crate) driver_opts: BTreeMap<String, String>,
    pub(crate) attachable: bool,
    pub(crate) internal: bool,
    pub(crate) enable_ipv6: bool,
    pub(crate) external: bool,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) ipam: Option<Ipam>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Ipam {
    pub(crate) driver: Option<String>,
    pub(crate) config: Vec<IpamPool>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct IpamPool {
    pub(crate) subnet: Option<String>,
    pub(crate) ip_range: Option<String>,
    pub(crate) gateway: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Volume {
    pub(crate) name: Option<String>,
    pub(crate) driver: Option<String>,
    pub(crate) driver_opts: BTreeMap<String, String>,
    pub(crate) external: bool,
    pub(crate) labels: BTreeMap<String, String>,
}

/// A top-level secret or config.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileObject {
    pub(crate) name: Option<String>,
    /// Absolute path of the file holding the data.
    pub(crate) file: Option<String>,
    pub(crate) external: bool,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) template_driver: Option<String>,
}
