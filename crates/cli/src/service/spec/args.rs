//! The flags of `service create` and `update`, as clap reads them.

use clap::Args;
use shoal_proto::api::endpoint_spec::ResolutionMode;
use spec::enums::TextForm as _;

/// Flags that set resources, shared by `create` and `update`.
#[derive(Args, Debug, Default, Clone, PartialEq)]
pub(crate) struct ResourceArgs {
    /// Reserve CPUs, e.g. 0.5.
    #[arg(long)]
    pub(crate) reserve_cpu: Option<String>,
    /// Reserve memory, e.g. 64m.
    #[arg(long)]
    pub(crate) reserve_memory: Option<String>,
    /// Limit CPUs, e.g. 1.5.
    #[arg(long)]
    pub(crate) limit_cpu: Option<String>,
    /// Limit memory, e.g. 512m.
    #[arg(long)]
    pub(crate) limit_memory: Option<String>,
    /// Limit the number of processes (0 = unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) limit_pids: Option<i64>,
}

/// Flags of the restart policy, shared by `create` and `update`.
#[derive(Args, Debug, Default, Clone, PartialEq)]
pub(crate) struct RestartArgs {
    /// Restart when: none, on-failure or any.
    #[arg(long)]
    pub(crate) restart_condition: Option<String>,
    /// Delay between restart attempts, e.g. 5s.
    #[arg(long)]
    pub(crate) restart_delay: Option<String>,
    /// Maximum number of restarts before giving up (0 = unlimited).
    #[arg(long)]
    pub(crate) restart_max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy, e.g. 1m.
    #[arg(long)]
    pub(crate) restart_window: Option<String>,
}

/// Healthcheck flags, shared by `create` and `update`.
#[derive(Args, Debug, Default, Clone, PartialEq)]
pub(crate) struct HealthArgs {
    /// Command run in the container to check health (through /bin/sh -c).
    #[arg(long)]
    pub(crate) health_cmd: Option<String>,
    /// Time between checks, e.g. 30s.
    #[arg(long)]
    pub(crate) health_interval: Option<String>,
    /// Maximum time one check may take, e.g. 10s.
    #[arg(long)]
    pub(crate) health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) health_retries: Option<i32>,
    /// Start period during which failures do not count, e.g. 1m.
    #[arg(long)]
    pub(crate) health_start_period: Option<String>,
    /// Time between checks during the start period, e.g. 5s.
    #[arg(long)]
    pub(crate) health_start_interval: Option<String>,
    /// Disables any container-specified HEALTHCHECK.
    #[arg(long)]
    pub(crate) no_healthcheck: bool,
}

impl HealthArgs {
    pub(super) fn any_health_setting(&self) -> bool {
        self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
            || self.health_start_interval.is_some()
    }
}

/// Container flags that mean the same in `create` and `update`.
#[derive(Args, Debug, Default, Clone, PartialEq)]
pub(crate) struct ContainerArgs {
    /// Container hostname.
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short = 'u', long)]
    pub(crate) user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub(crate) workdir: Option<String>,
    /// Overrides the image's ENTRYPOINT (split like a shell would).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) entrypoint: Option<String>,
    /// Runs an init inside each container that forwards signals and reaps processes.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) init: Option<bool>,
    /// Time to wait before force-killing a container, e.g. 10s.
    #[arg(long)]
    pub(crate) stop_grace_period: Option<String>,
    /// Signal that stops the container, e.g. SIGTERM.
    #[arg(long)]
    pub(crate) stop_signal: Option<String>,
}

/// `--update-*` flags, shared by `create` and `update`.
#[derive(Args, Debug, Default, Clone, PartialEq)]
pub(crate) struct UpdatePolicyArgs {
    /// Maximum number of tasks updated at once (0 = all at once).
    #[arg(long)]
    pub(crate) update_parallelism: Option<u64>,
    /// Delay between updates, e.g. 10s.
    #[arg(long)]
    pub(crate) update_delay: Option<String>,
    /// Action on update failure: pause, continue or rollback.
    #[arg(long)]
    pub(crate) update_failure_action: Option<String>,
    /// How long each updated task is watched for failure, e.g. 5s.
    #[arg(long)]
    pub(crate) update_monitor: Option<String>,
    /// Share of updated tasks that may fail, between 0 and 1.
    #[arg(long)]
    pub(crate) update_max_failure_ratio: Option<String>,
    /// Update order: stop-first or start-first.
    #[arg(long)]
    pub(crate) update_order: Option<String>,
}

/// `--rollback-*` flags, shared by `create` and `update`.
#[derive(Args, Debug, Default, Clone, PartialEq)]
pub(crate) struct RollbackPolicyArgs {
    /// Maximum number of tasks rolled back at once (0 = all at once).
    #[arg(long)]
    pub(crate) rollback_parallelism: Option<u64>,
    /// Delay between task rollbacks, e.g. 10s.
    #[arg(long)]
    pub(crate) rollback_delay: Option<String>,
    /// Action on rollback failure: pause or continue.
    #[arg(long)]
    pub(crate) rollback_failure_action: Option<String>,
    /// How long each rolled-back task is watched for failure, e.g. 5s.
    #[arg(long)]
    pub(crate) rollback_monitor: Option<String>,
    /// Share of rolled-back tasks that may fail, between 0 and 1.
    #[arg(long)]
    pub(crate) rollback_max_failure_ratio: Option<String>,
    /// Rollback order: stop-first or start-first.
    #[arg(long)]
    pub(crate) rollback_order: Option<String>,
}

/// `shoal service create`'s flags and arguments.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct CreateArgs {
    /// Service name.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Number of tasks (for replicated-job: completions).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) replicas: Option<String>,
    /// replicated, global, replicated-job or global-job.
    #[arg(long, default_value = spec::defaults::MODE.text())]
    pub(crate) mode: String,
    /// Number of job tasks to run concurrently (replicated-job; default: --replicas).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) max_concurrent: Option<String>,
    /// Sets an environment variable, KEY=value or KEY to copy it from here (repeatable).
    #[arg(short = 'e', long = "env")]
    pub(crate) env: Vec<String>,
    /// Service label, key=value (repeatable).
    #[arg(short = 'l', long = "label")]
    pub(crate) labels: Vec<String>,
    /// Container label, key=value (repeatable).
    #[arg(long = "container-label")]
    pub(crate) container_labels: Vec<String>,
    /// Placement constraint, e.g. node.labels.zone==east (repeatable).
    #[arg(long = "constraint")]
    pub(crate) constraints: Vec<String>,
    /// Placement preference, spread=node.labels.X (repeatable).
    #[arg(long = "placement-pref")]
    pub(crate) placement_prefs: Vec<String>,
    /// Maximum number of tasks per node (0 = unlimited).
    #[arg(long)]
    pub(crate) replicas_max_per_node: Option<u64>,
    #[command(flatten)]
    pub(crate) resources: ResourceArgs,
    #[command(flatten)]
    pub(crate) restart: RestartArgs,
    #[command(flatten)]
    pub(crate) update_policy: UpdatePolicyArgs,
    #[command(flatten)]
    pub(crate) rollback_policy: RollbackPolicyArgs,
    /// type=bind|volume|tmpfs,source=…,target=…[,readonly] (repeatable).
    #[arg(long = "mount")]
    pub(crate) mounts: Vec<String>,
    /// A secret to expose: NAME, or source=NAME,target=FILE,uid=…,gid=…,mode=0400 (repeatable).
    #[arg(long = "secret")]
    pub(crate) secrets: Vec<String>,
    /// A config to expose: NAME, or source=NAME,target=/PATH,uid=…,gid=…,mode=0444 (repeatable).
    #[arg(long = "config")]
    pub(crate) configs: Vec<String>,
    /// Adds a Linux capability to the default set, e.g. NET_ADMIN, or ALL (repeatable).
    #[arg(long)]
    pub(crate) cap_add: Vec<String>,
    /// Drops a Linux capability from the default set, or ALL (repeatable).
    #[arg(long)]
    pub(crate) cap_drop: Vec<String>,
    /// A namespaced kernel parameter, e.g. net.core.somaxconn=1024 (repeatable).
    #[arg(long = "sysctl")]
    pub(crate) sysctls: Vec<String>,
    /// A resource limit, NAME=SOFT[:HARD], e.g. nofile=1024:2048 (repeatable).
    #[arg(long = "ulimit")]
    pub(crate) ulimits: Vec<String>,
    /// A supplementary group for the container's user, by name or number (repeatable).
    #[arg(long = "group")]
    pub(crate) groups: Vec<String>,
    /// A network to attach to: NAME, or name=NAME[,alias=ALIAS][,driver-opt=KEY=VALUE] (repeatable).
    #[arg(long = "network")]
    pub(crate) networks: Vec<String>,
    /// How the service is found on its networks: vip (one virtual IP) or dnsrr (its tasks' IPs).
    #[arg(long, default_value = ResolutionMode::Vip.text())]
    pub(crate) endpoint_mode: String,
    /// Publishes a port: PUBLISHED:TARGET[/PROTOCOL], TARGET alone (the swarm picks a number), or
    /// published=P,target=T[,protocol=tcp|udp|sctp][,mode=ingress|host][,traffic-policy=prefer-local|cluster|local] (repeatable).
    #[arg(short = 'p', long = "publish")]
    pub(crate) publish: Vec<String>,
    /// A DNS server, by IP address (repeatable).
    #[arg(long = "dns")]
    pub(crate) dns: Vec<String>,
    /// A DNS search domain (repeatable).
    #[arg(long = "dns-search")]
    pub(crate) dns_search: Vec<String>,
    /// A DNS resolver option, e.g. ndots:2 (repeatable).
    #[arg(long = "dns-option")]
    pub(crate) dns_options: Vec<String>,
    /// A custom host-to-IP mapping, HOST:IP (repeatable).
    #[arg(long = "host")]
    pub(crate) hosts: Vec<String>,
    #[command(flatten)]
    pub(crate) container: ContainerArgs,
    #[command(flatten)]
    pub(crate) health: HealthArgs,
    /// Exits immediately instead of waiting for the service to converge.
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,
    /// Suppresses progress output.
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
    /// Does not check that the image exists on this node.
    #[arg(long)]
    pub(crate) no_resolve_image: bool,
    pub(crate) image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

/// `shoal service update`'s flags.
#[derive(Args, Debug, Default, Clone, PartialEq)]
pub(crate) struct UpdateArgs {
    /// Number of tasks (for replicated-job: completions).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) replicas: Option<String>,
    /// Number of job tasks to run concurrently (replicated-job).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) max_concurrent: Option<String>,
    /// Service image tag.
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// Service command args (split like a shell would).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) args: Option<String>,
    /// Adds or updates an environment variable (repeatable).
    #[arg(long)]
    pub(crate) env_add: Vec<String>,
    /// Removes an environment variable (repeatable).
    #[arg(long)]
    pub(crate) env_rm: Vec<String>,
    /// Adds or updates a service label (repeatable).
    #[arg(long)]
    pub(crate) label_add: Vec<String>,
    /// Removes a label by its key (repeatable).
    #[arg(long)]
    pub(crate) label_rm: Vec<String>,
    /// Adds or updates a container label (repeatable).
    #[arg(long)]
    pub(crate) container_label_add: Vec<String>,
    /// Removes a container label by its key (repeatable).
    #[arg(long)]
    pub(crate) container_label_rm: Vec<String>,
    /// Adds or updates a placement constraint (repeatable).
    #[arg(long)]
    pub(crate) constraint_add: Vec<String>,
    /// Removes a constraint (repeatable).
    #[arg(long)]
    pub(crate) constraint_rm: Vec<String>,
    /// Adds a placement preference (repeatable).
    #[arg(long)]
    pub(crate) placement_pref_add: Vec<String>,
    /// Removes a placement preference (repeatable).
    #[arg(long)]
    pub(crate) placement_pref_rm: Vec<String>,
    /// Maximum number of tasks per node (0 = unlimited).
    #[arg(long)]
    pub(crate) replicas_max_per_node: Option<u64>,
    #[command(flatten)]
    pub(crate) resources: ResourceArgs,
    #[command(flatten)]
    pub(crate) restart: RestartArgs,
    #[command(flatten)]
    pub(crate) update_policy: UpdatePolicyArgs,
    #[command(flatten)]
    pub(crate) rollback_policy: RollbackPolicyArgs,
    /// Adds or updates a mount (repeatable).
    #[arg(long)]
    pub(crate) mount_add: Vec<String>,
    /// Removes a mount by its target path (repeatable).
    #[arg(long)]
    pub(crate) mount_rm: Vec<String>,
    /// Adds or updates a secret, as --secret takes it (repeatable).
    #[arg(long)]
    pub(crate) secret_add: Vec<String>,
    /// Removes a secret by its name (repeatable).
    #[arg(long)]
    pub(crate) secret_rm: Vec<String>,
    /// Adds or updates a config, as --config takes it (repeatable).
    #[arg(long)]
    pub(crate) config_add: Vec<String>,
    /// Removes a config by its name (repeatable).
    #[arg(long)]
    pub(crate) config_rm: Vec<String>,
    /// Adds a Linux capability, e.g. NET_ADMIN, or ALL (repeatable).
    #[arg(long)]
    pub(crate) cap_add: Vec<String>,
    /// Drops a Linux capability, or ALL (repeatable).
    #[arg(long)]
    pub(crate) cap_drop: Vec<String>,
    /// Adds or changes a kernel parameter, NAME=VALUE (repeatable).
    #[arg(long)]
    pub(crate) sysctl_add: Vec<String>,
    /// Removes a kernel parameter by its name (repeatable).
    #[arg(long)]
    pub(crate) sysctl_rm: Vec<String>,
    /// Adds or changes a resource limit, NAME=SOFT[:HARD] (repeatable).
    #[arg(long)]
    pub(crate) ulimit_add: Vec<String>,
    /// Removes a resource limit by its name (repeatable).
    #[arg(long)]
    pub(crate) ulimit_rm: Vec<String>,
    /// Adds a supplementary group (repeatable).
    #[arg(long)]
    pub(crate) group_add: Vec<String>,
    /// Removes a supplementary group (repeatable).
    #[arg(long)]
    pub(crate) group_rm: Vec<String>,
    /// Attaches to a network, as --network takes it (repeatable).
    #[arg(long)]
    pub(crate) network_add: Vec<String>,
    /// Detaches from a network, by name or ID (repeatable).
    #[arg(long)]
    pub(crate) network_rm: Vec<String>,
    /// Endpoint mode: vip or dnsrr.
    #[arg(long)]
    pub(crate) endpoint_mode: Option<String>,
    /// Publishes a port, as --publish takes it (repeatable).
    #[arg(long)]
    pub(crate) publish_add: Vec<String>,
    /// Stops publishing a port: its published PORT[/PROTOCOL] (or, when none is published
    /// there, its target, as Docker reads it), or a port as --publish takes it (repeatable).
    #[arg(long)]
    pub(crate) publish_rm: Vec<String>,
    /// Adds a DNS server (repeatable).
    #[arg(long)]
    pub(crate) dns_add: Vec<String>,
    /// Removes a DNS server (repeatable).
    #[arg(long)]
    pub(crate) dns_rm: Vec<String>,
    /// Adds a DNS search domain (repeatable).
    #[arg(long)]
    pub(crate) dns_search_add: Vec<String>,
    /// Removes a DNS search domain (repeatable).
    #[arg(long)]
    pub(crate) dns_search_rm: Vec<String>,
    /// Adds a DNS resolver option (repeatable).
    #[arg(long)]
    pub(crate) dns_option_add: Vec<String>,
    /// Removes a DNS resolver option (repeatable).
    #[arg(long)]
    pub(crate) dns_option_rm: Vec<String>,
    /// Adds a custom host-to-IP mapping, HOST:IP (repeatable).
    #[arg(long)]
    pub(crate) host_add: Vec<String>,
    /// Removes a host mapping: HOST for every one of the name, or HOST:IP for one (repeatable).
    #[arg(long)]
    pub(crate) host_rm: Vec<String>,
    #[command(flatten)]
    pub(crate) container: ContainerArgs,
    #[command(flatten)]
    pub(crate) health: HealthArgs,
    /// Forces the update even if no changes require it.
    #[arg(long)]
    pub(crate) force: bool,
    /// Exits immediately instead of waiting for the service to converge.
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,
    /// Suppresses progress output.
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
}
