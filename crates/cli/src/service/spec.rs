//! The flags of `service create`, `update` and `scale`, and the pure functions that turn them into
//! a `ServiceSpec` (or change the current one) the way docker's CLI does. Every error names the
//! flag and says how to fix it. The process environment is passed in, for `--env KEY`.

use std::collections::HashMap;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use shoal_proto::api;
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
    fn any_health_setting(&self) -> bool {
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

/// The six settings of an update or rollback policy, as given on the command line.
struct PolicyFlags<'args> {
    /// `update` or `rollback`: the flags' prefix.
    which: &'static str,
    parallelism: Option<u64>,
    delay: Option<&'args str>,
    failure_action: Option<&'args str>,
    monitor: Option<&'args str>,
    max_failure_ratio: Option<&'args str>,
    order: Option<&'args str>,
}

impl UpdatePolicyArgs {
    fn flags(&self) -> PolicyFlags<'_> {
        PolicyFlags {
            which: "update",
            parallelism: self.update_parallelism,
            delay: self.update_delay.as_deref(),
            failure_action: self.update_failure_action.as_deref(),
            monitor: self.update_monitor.as_deref(),
            max_failure_ratio: self.update_max_failure_ratio.as_deref(),
            order: self.update_order.as_deref(),
        }
    }
}

impl RollbackPolicyArgs {
    fn flags(&self) -> PolicyFlags<'_> {
        PolicyFlags {
            which: "rollback",
            parallelism: self.rollback_parallelism,
            delay: self.rollback_delay.as_deref(),
            failure_action: self.rollback_failure_action.as_deref(),
            monitor: self.rollback_monitor.as_deref(),
            max_failure_ratio: self.rollback_max_failure_ratio.as_deref(),
            order: self.rollback_order.as_deref(),
        }
    }
}

impl PolicyFlags<'_> {
    fn any(&self) -> bool {
        self.parallelism.is_some()
            || self.delay.is_some()
            || self.failure_action.is_some()
            || self.monitor.is_some()
            || self.max_failure_ratio.is_some()
            || self.order.is_some()
    }

    /// Sets what the flags name in `config`, leaving the rest as it is.
    fn apply(&self, config: &mut api::UpdateConfig) -> anyhow::Result<()> {
        use api::update_config::{FailureAction, UpdateOrder};
        let which = self.which;
        if let Some(parallelism) = self.parallelism {
            config.parallelism = parallelism;
        }
        if let Some(delay) = self.delay {
            config.delay = Some(parse_flag_duration(&format!("{which}-delay"), delay)?);
        }
        if let Some(monitor) = self.monitor {
            config.monitor = Some(parse_flag_duration(&format!("{which}-monitor"), monitor)?);
        }
        if let Some(action) = self.failure_action {
            let flag = format!("--{which}-failure-action");
            let parsed = FailureAction::parse(action);
            // A rollback can't itself roll back, so its flag offers only the first two words.
            if which == "rollback"
                && !matches!(parsed, Ok(FailureAction::Pause | FailureAction::Continue))
            {
                bail!("{flag}: invalid value {action:?}: use pause or continue");
            }
            config.set_failure_action(parsed.map_err(|error| error.in_field(&flag))?);
        }
        if let Some(ratio) = self.max_failure_ratio {
            config.max_failure_ratio = ratio
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|ratio| (0.0..=1.0).contains(ratio))
                .ok_or_else(|| {
                    anyhow!(
                        "--{which}-max-failure-ratio: invalid value {ratio:?}: give a share between 0 and 1, e.g. 0.2"
                    )
                })?;
        }
        if let Some(order) = self.order {
            config.set_order(
                UpdateOrder::parse(order)
                    .map_err(|error| error.in_field(format!("--{which}-order")))?,
            );
        }
        Ok(())
    }
}

/// The config a new service gets: Swarm's defaults with what the flags change, or nothing when
/// no flag is given (the manager fills Swarm's defaults into every spec it stores).
fn new_update_config(flags: &PolicyFlags<'_>) -> anyhow::Result<Option<api::UpdateConfig>> {
    if !flags.any() {
        return Ok(None);
    }
    let mut config = spec::defaults::update_config();
    flags.apply(&mut config)?;
    Ok(Some(config))
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
    #[arg(long, default_value = "replicated")]
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

/// Parses a replica count, refusing negative numbers with a clear message.
pub(crate) fn parse_replicas(text: &str) -> anyhow::Result<u64> {
    parse_count(text, "replicas")
}

fn parse_count(text: &str, what: &str) -> anyhow::Result<u64> {
    let trimmed = text.trim();
    if let Ok(value) = trimmed.parse::<u64>() {
        return Ok(value);
    }
    if trimmed.parse::<i128>().is_ok() {
        bail!("invalid {what} value {text}: the number of {what} must be 0 or more");
    }
    bail!("invalid {what} value {text:?}: use a whole number such as 3")
}

/// Parses one `SERVICE=N` argument of `service scale`.
pub(crate) fn parse_scale_arg(text: &str) -> anyhow::Result<(String, u64)> {
    let Some((service, replicas)) = text.split_once('=') else {
        bail!("invalid scale specifier {text:?}: use SERVICE=REPLICAS, e.g. web=3");
    };
    if service.is_empty() {
        bail!("invalid scale specifier {text:?}: use SERVICE=REPLICAS, e.g. web=3");
    }
    Ok((service.to_owned(), parse_replicas(replicas)?))
}

/// Sets the replica count (completions for replicated jobs), as `service scale` does.
pub(crate) fn scale_spec(
    mut spec: api::ServiceSpec,
    replicas: u64,
) -> anyhow::Result<api::ServiceSpec> {
    match spec.mode.as_mut() {
        Some(api::service_spec::Mode::Replicated(replicated)) => replicated.replicas = replicas,
        Some(api::service_spec::Mode::ReplicatedJob(job)) => job.total_completions = replicas,
        _ => bail!("scale can only be used with replicated or replicated-job mode"),
    }
    Ok(spec)
}

/// A Go duration for the flag `flag` (`1m30s`, `500ms`).
pub(crate) fn parse_flag_duration(flag: &str, text: &str) -> anyhow::Result<api::Duration> {
    spec::units::parse_duration(text)
        .map(spec::time::proto_duration)
        .map_err(|error| anyhow!(error.in_field(format!("--{flag}"))))
}

fn parse_memory(flag: &str, text: &str) -> anyhow::Result<i64> {
    let bytes = spec::units::parse_ram_bytes(text)
        .map_err(|error| anyhow!(error.in_field(format!("--{flag}"))))?;
    i64::try_from(bytes).map_err(|_| anyhow!("--{flag}: {text:?} is too large"))
}

/// A decimal number of CPUs as nano-CPUs, exactly (docker's `NanoCPUs` flag).
pub(crate) fn parse_cpus(flag: &str, text: &str) -> anyhow::Result<i64> {
    let hint = "use a decimal number of CPUs such as 0.5 or 2";
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        bail!("--{flag}: invalid value {text:?}: CPUs can't be negative; {hint}");
    }
    let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
    let digits_only = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_only(whole) || !digits_only(fraction) {
        bail!("--{flag}: invalid value {text:?}: {hint}");
    }
    if fraction.len() > 9 {
        bail!("--{flag}: value {text:?} is too precise: use at most 9 decimals");
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| anyhow!("--{flag}: {text:?} is too large; {hint}"))?
    };
    let fraction: i64 = format!("{fraction:0<9}")
        .parse()
        .map_err(|_| anyhow!("--{flag}: invalid value {text:?}: {hint}"))?;
    whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(fraction))
        .ok_or_else(|| anyhow!("--{flag}: {text:?} is too large; {hint}"))
}

/// docker's `ConvertKVStringsToMap`: `k=v`, or `k` for an empty value.
/// Adds and drops capabilities as `docker service update` does: adding one takes it off the
/// dropped list, dropping one takes it off the added list. Names are checked and written the
/// engine's way (`CAP_NET_ADMIN`, or `ALL`).
fn update_capabilities(
    container: &mut api::ContainerSpec,
    add: &[String],
    drop: &[String],
) -> anyhow::Result<()> {
    let normalise = |flag: &str, names: &[String]| -> anyhow::Result<Vec<String>> {
        names
            .iter()
            .map(|name| {
                engine::spec::capability_name(name).map_err(|error| anyhow!("--{flag}: {error}"))
            })
            .collect()
    };
    let add = normalise("cap-add", add)?;
    let drop = normalise("cap-drop", drop)?;
    if let Some(both) = add.iter().find(|name| drop.contains(name)) {
        bail!("{both} is both added and dropped: give it to --cap-add or --cap-drop, not both");
    }
    container.capability_add.retain(|name| !drop.contains(name));
    container.capability_drop.retain(|name| !add.contains(name));
    for name in add {
        if !container.capability_add.contains(&name) {
            container.capability_add.push(name);
        }
    }
    for name in drop {
        if !container.capability_drop.contains(&name) {
            container.capability_drop.push(name);
        }
    }
    Ok(())
}

/// `NAME=VALUE` kernel parameters.
pub(crate) fn parse_sysctls(
    flag: &str,
    items: &[String],
) -> anyhow::Result<HashMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                engine::spec::check_sysctl(name.trim())
                    .map_err(|error| anyhow!("--{flag}: {error}"))?;
                Ok((name.trim().to_owned(), value.to_owned()))
            }
            _ => bail!("--{flag} {item:?}: use NAME=VALUE, e.g. net.core.somaxconn=1024"),
        })
        .collect()
}

/// `NAME=SOFT[:HARD]` resource limits; one number sets both, -1 is unlimited.
pub(crate) fn parse_ulimits(
    flag: &str,
    items: &[String],
) -> anyhow::Result<Vec<api::container_spec::Ulimit>> {
    let mut ulimits: Vec<api::container_spec::Ulimit> = Vec::new();
    for item in items {
        let usage = || anyhow!("--{flag} {item:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048");
        let (name, limits) = item.split_once('=').ok_or_else(usage)?;
        let name = name.trim().to_ascii_lowercase();
        if !engine::spec::ULIMIT_NAMES.contains(&name.as_str()) {
            bail!(
                "--{flag} {item:?}: {name:?} is not a limit; use one of {}",
                engine::spec::ULIMIT_NAMES.join(", ")
            );
        }
        let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
        let number = |text: &str| text.trim().parse::<i64>().map_err(|_| usage());
        let (soft, hard) = (number(soft)?, number(hard)?);
        let as_unsigned = |limit: i64| u64::try_from(limit).unwrap_or(u64::MAX);
        if as_unsigned(soft) > as_unsigned(hard) {
            bail!("--{flag} {item:?}: the soft limit {soft} is above the hard limit {hard}");
        }
        if ulimits.iter().any(|ulimit| ulimit.name == name) {
            bail!("--{flag}: {name} is given twice");
        }
        ulimits.push(api::container_spec::Ulimit { name, soft, hard });
    }
    Ok(ulimits)
}

fn key_values(items: &[String]) -> HashMap<String, String> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (item.clone(), String::new()),
        })
        .collect()
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// docker's `ValidateEnv`: `KEY` alone takes its value from the environment when it is set there.
fn resolve_env(
    flag: &str,
    items: &[String],
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let key = env_key(item);
        if key.is_empty() {
            bail!("--{flag}: invalid environment variable {item:?}: use KEY=value");
        }
        let entry = if item.contains('=') {
            item.clone()
        } else {
            match lookup_env(key) {
                Some(value) => format!("{key}={value}"),
                None => item.clone(),
            }
        };
        out.retain(|existing| env_key(existing) != key);
        out.push(entry);
    }
    Ok(out)
}

fn check_constraint(flag: &str, constraint: &str) -> anyhow::Result<()> {
    let ok = ["==", "!="].iter().any(|op| {
        constraint
            .split_once(op)
            .is_some_and(|(key, value)| !key.trim().is_empty() && !value.trim().is_empty())
    });
    if !ok {
        bail!(
            "--{flag}: invalid constraint {constraint:?}: use KEY==VALUE or KEY!=VALUE, e.g. node.role==manager or node.labels.zone==east"
        );
    }
    Ok(())
}

fn parse_placement_pref(flag: &str, text: &str) -> anyhow::Result<api::placement::Preference> {
    let Some((strategy, argument)) = text.split_once('=').filter(|(s, _)| !s.is_empty()) else {
        bail!(
            "--{flag}: placement preference {text:?} must be of the format \"<strategy>=<arg>\", e.g. spread=node.labels.zone"
        );
    };
    if strategy != "spread" {
        bail!(
            "--{flag}: unsupported placement preference {strategy} (only spread is supported), e.g. spread=node.labels.zone"
        );
    }
    Ok(api::placement::Preference {
        preference: Some(api::placement::preference::Preference::Spread(
            api::placement::preference::Spread {
                spread_descriptor: argument.to_owned(),
            },
        )),
    })
}

fn spread_descriptor(preference: &api::placement::Preference) -> Option<&str> {
    match &preference.preference {
        Some(api::placement::preference::Preference::Spread(spread)) => {
            Some(&spread.spread_descriptor)
        }
        None => None,
    }
}

/// Splits one line of CSV as Go's encoding/csv does for `--mount`: fields may be double-quoted,
/// with `""` for a quote inside.
fn split_csv(text: &str) -> anyhow::Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_field_start => {
                at_field_start = false;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => field.push(c),
                        None => bail!("unclosed quote in {text:?}"),
                    }
                }
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            c => {
                at_field_start = false;
                field.push(c);
            }
        }
    }
    fields.push(field);
    Ok(fields)
}

fn parse_go_bool(flag: &str, key: &str, value: &str) -> anyhow::Result<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => bail!("--{flag}: invalid value {value:?} for {key}: use true or false"),
    }
}

/// The parts of a `--secret`/`--config` value: `NAME`, or `source=NAME,target=…,uid=…,gid=…,mode=…`
/// with Docker's defaults (uid and gid 0, mode 0444, target the name).
struct PayloadFlag {
    source: String,
    target: String,
    uid: String,
    gid: String,
    mode: u32,
}

fn parse_payload_flag(
    flag: &str,
    text: &str,
    default_target: impl Fn(&str) -> String,
) -> anyhow::Result<PayloadFlag> {
    let hint = "use NAME, or source=NAME,target=FILE[,uid=0,gid=0,mode=0444]";
    if !text.contains('=') {
        if text.is_empty() {
            bail!("--{flag}: empty value: {hint}");
        }
        return Ok(PayloadFlag {
            source: text.to_owned(),
            target: default_target(text),
            uid: "0".to_owned(),
            gid: "0".to_owned(),
            mode: 0o444,
        });
    }
    let (mut source, mut target) = (None, None);
    let (mut uid, mut gid, mut mode) = ("0".to_owned(), "0".to_owned(), 0o444);
    for field in split_csv(text).map_err(|error| anyhow::anyhow!("--{flag}: {error}: {hint}"))? {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--{flag}: invalid field {field:?}: {hint}"))?;
        match key.to_ascii_lowercase().as_str() {
            "source" | "src" => source = Some(value.to_owned()),
            "target" => target = Some(value.to_owned()),
            "uid" => uid = value.to_owned(),
            "gid" => gid = value.to_owned(),
            "mode" => {
                mode = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|mode| *mode <= 0o777)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--{flag}: invalid mode {value:?}: give octal permissions such as 0400"
                        )
                    })?;
            }
            other => bail!("--{flag}: unknown field {other:?}: {hint}"),
        }
    }
    let source = source
        .filter(|source| !source.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--{flag}: source is required: {hint}"))?;
    let target = target.unwrap_or_else(|| default_target(&source));
    Ok(PayloadFlag {
        source,
        target,
        uid,
        gid,
        mode,
    })
}

/// `--secret`: mounted at `/run/secrets/<target>` unless the target is absolute.
pub(crate) fn parse_secret_reference(
    flag: &str,
    text: &str,
) -> anyhow::Result<api::SecretReference> {
    let parsed = parse_payload_flag(flag, text, str::to_owned)?;
    Ok(api::SecretReference {
        secret_name: parsed.source,
        target: Some(api::secret_reference::Target::File(
            api::secret_reference::FileTarget {
                name: parsed.target,
                uid: parsed.uid,
                gid: parsed.gid,
                mode: Some(parsed.mode),
            },
        )),
        ..Default::default()
    })
}

/// `--config`: mounted at its target, `/<name>` by default.
pub(crate) fn parse_config_reference(
    flag: &str,
    text: &str,
) -> anyhow::Result<api::ConfigReference> {
    let parsed = parse_payload_flag(flag, text, |name| format!("/{name}"))?;
    Ok(api::ConfigReference {
        config_name: parsed.source,
        target: Some(api::config_reference::Target::File(
            api::config_reference::FileTarget {
                name: parsed.target,
                uid: parsed.uid,
                gid: parsed.gid,
                mode: Some(parsed.mode),
            },
        )),
        ..Default::default()
    })
}

/// Sets a container's secrets and configs, refusing two at the same target.
fn set_payload_references(
    container: &mut api::ContainerSpec,
    secrets: Vec<api::SecretReference>,
    configs: Vec<api::ConfigReference>,
) -> anyhow::Result<()> {
    let mut targets = std::collections::HashSet::new();
    for secret in &secrets {
        if let Some(api::secret_reference::Target::File(file)) = &secret.target
            && !targets.insert(file.name.clone())
        {
            bail!(
                "--secret: two secrets target {}: give each its own target",
                file.name
            );
        }
    }
    let mut config_targets = std::collections::HashSet::new();
    for config in &configs {
        if let Some(api::config_reference::Target::File(file)) = &config.target
            && !config_targets.insert(file.name.clone())
        {
            bail!(
                "--config: two configs target {}: give each its own target",
                file.name
            );
        }
    }
    container.secrets = secrets;
    container.configs = configs;
    Ok(())
}

/// Parses docker's `--mount` syntax: `type=bind|volume|tmpfs,source=…,target=…,readonly,…`.
pub(crate) fn parse_mount(flag: &str, text: &str) -> anyhow::Result<api::Mount> {
    let hint = "use e.g. type=volume,source=data,target=/data or type=bind,source=/srv,target=/srv,readonly";
    let fields = split_csv(text).with_context(|| format!("--{flag}: {hint}"))?;
    let mut mount = api::Mount {
        r#type: api::mount::Type::Volume as i32,
        ..Default::default()
    };
    let mut kind_name = "volume".to_owned();
    let mut bind_options: Option<api::mount::BindOptions> = None;
    let mut volume_options: Option<api::mount::VolumeOptions> = None;
    let mut tmpfs_options: Option<api::mount::TmpfsOptions> = None;
    for field in fields.iter().filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.trim().to_ascii_lowercase(), Some(value)),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        match (key.as_str(), value) {
            ("readonly" | "ro", None) => mount.readonly = true,
            ("readonly" | "ro", Some(value)) => mount.readonly = parse_go_bool(flag, &key, value)?,
            ("volume-nocopy", None) => volume_options.get_or_insert_default().nocopy = true,
            ("volume-nocopy", Some(value)) => {
                volume_options.get_or_insert_default().nocopy = parse_go_bool(flag, &key, value)?
            }
            ("bind-nonrecursive", None) => bind_options.get_or_insert_default().nonrecursive = true,
            (_, None) => bail!(
                "--{flag}: invalid field {field:?} in {text:?}: must be a key=value pair; {hint}"
            ),
            ("type", Some(value)) => {
                kind_name = value.to_ascii_lowercase();
                mount.r#type = match kind_name.as_str() {
                    "bind" => api::mount::Type::Bind,
                    "volume" => api::mount::Type::Volume,
                    "tmpfs" => api::mount::Type::Tmpfs,
                    "npipe" => api::mount::Type::Npipe,
                    "cluster" => api::mount::Type::Cluster,
                    _ => bail!("--{flag}: invalid mount type {value:?}: use bind, volume or tmpfs"),
                } as i32;
            }
            ("source" | "src", Some(value)) => mount.source = value.to_owned(),
            ("target" | "dst" | "destination", Some(value)) => mount.target = value.to_owned(),
            ("bind-propagation", Some(value)) => {
                use api::mount::bind_options::Propagation as P;
                bind_options.get_or_insert_default().propagation = match value
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "rprivate" => P::Rprivate,
                    "private" => P::Private,
                    "rshared" => P::Rshared,
                    "shared" => P::Shared,
                    "rslave" => P::Rslave,
                    "slave" => P::Slave,
                    _ => bail!(
                        "--{flag}: invalid bind-propagation {value:?}: use rprivate, private, rshared, shared, rslave or slave"
                    ),
                } as i32;
            }
            ("bind-nonrecursive", Some(value)) => {
                bind_options.get_or_insert_default().nonrecursive =
                    parse_go_bool(flag, &key, value)?
            }
            ("volume-label", Some(value)) => {
                let (k, v) = value.split_once('=').unwrap_or((value, ""));
                volume_options
                    .get_or_insert_default()
                    .labels
                    .insert(k.to_owned(), v.to_owned());
            }
            ("volume-driver", Some(value)) => {
                volume_options
                    .get_or_insert_default()
                    .driver_config
                    .get_or_insert_default()
                    .name = value.to_owned();
            }
            ("volume-opt", Some(value)) => {
                let (k, v) = value.split_once('=').unwrap_or((value, ""));
                volume_options
                    .get_or_insert_default()
                    .driver_config
                    .get_or_insert_default()
                    .options
                    .insert(k.to_owned(), v.to_owned());
            }
            ("volume-subpath", Some(value)) => {
                volume_options.get_or_insert_default().subpath = value.to_owned()
            }
            ("tmpfs-size", Some(value)) => {
                tmpfs_options.get_or_insert_default().size_bytes =
                    parse_memory(flag, value).with_context(|| "in tmpfs-size".to_owned())?;
            }
            ("tmpfs-mode", Some(value)) => {
                tmpfs_options.get_or_insert_default().mode = u32::from_str_radix(value, 8)
                    .map_err(|_| {
                        anyhow!(
                            "--{flag}: invalid tmpfs-mode {value:?}: use an octal mode such as 1777"
                        )
                    })?;
            }
            (_, Some(_)) => bail!("--{flag}: unexpected key {key:?} in {text:?}; {hint}"),
        }
    }
    if mount.target.is_empty() {
        bail!("--{flag}: target is required in {text:?}; {hint}");
    }
    let kind = api::mount::Type::try_from(mount.r#type).unwrap_or(api::mount::Type::Volume);
    if volume_options.is_some() && kind != api::mount::Type::Volume {
        bail!("--{flag}: cannot mix 'volume-*' options with mount type '{kind_name}'");
    }
    if bind_options.is_some() && kind != api::mount::Type::Bind {
        bail!("--{flag}: cannot mix 'bind-*' options with mount type '{kind_name}'");
    }
    if tmpfs_options.is_some() && kind != api::mount::Type::Tmpfs {
        bail!("--{flag}: cannot mix 'tmpfs-*' options with mount type '{kind_name}'");
    }
    if kind == api::mount::Type::Bind && !mount.source.starts_with('/') {
        bail!(
            "--{flag}: a bind mount needs an absolute source path on every node, got {:?}; {hint}",
            mount.source
        );
    }
    if kind == api::mount::Type::Tmpfs && !mount.source.is_empty() {
        bail!(
            "--{flag}: a tmpfs mount takes no source; drop source={}",
            mount.source
        );
    }
    mount.bind_options = bind_options;
    mount.volume_options = volume_options;
    mount.tmpfs_options = tmpfs_options;
    Ok(mount)
}

fn parse_restart_condition(text: &str) -> anyhow::Result<i32> {
    Ok(api::restart_policy::RestartCondition::parse(text)
        .map_err(|error| error.in_field("--restart-condition"))? as i32)
}

fn apply_restart(policy: &mut api::RestartPolicy, args: &RestartArgs) -> anyhow::Result<()> {
    if let Some(condition) = &args.restart_condition {
        policy.condition = parse_restart_condition(condition)?;
    }
    if let Some(delay) = &args.restart_delay {
        policy.delay = Some(parse_flag_duration("restart-delay", delay)?);
    }
    if let Some(attempts) = args.restart_max_attempts {
        policy.max_attempts = attempts;
    }
    if let Some(window) = &args.restart_window {
        policy.window = Some(parse_flag_duration("restart-window", window)?);
    }
    Ok(())
}

impl RestartArgs {
    fn any(&self) -> bool {
        self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some()
    }
}

impl ResourceArgs {
    fn any_cpu_or_memory(&self) -> bool {
        self.reserve_cpu.is_some()
            || self.reserve_memory.is_some()
            || self.limit_cpu.is_some()
            || self.limit_memory.is_some()
    }
}

fn apply_resources(
    requirements: &mut api::ResourceRequirements,
    args: &ResourceArgs,
) -> anyhow::Result<()> {
    if let Some(cpus) = &args.reserve_cpu {
        requirements.reservations.get_or_insert_default().nano_cpus =
            parse_cpus("reserve-cpu", cpus)?;
    }
    if let Some(memory) = &args.reserve_memory {
        requirements
            .reservations
            .get_or_insert_default()
            .memory_bytes = parse_memory("reserve-memory", memory)?;
    }
    if let Some(cpus) = &args.limit_cpu {
        requirements.limits.get_or_insert_default().nano_cpus = parse_cpus("limit-cpu", cpus)?;
    }
    if let Some(memory) = &args.limit_memory {
        requirements.limits.get_or_insert_default().memory_bytes =
            parse_memory("limit-memory", memory)?;
    }
    spec::validate::resources_rule(requirements)?;
    Ok(())
}

fn apply_pids(container: &mut api::ContainerSpec, args: &ResourceArgs) -> anyhow::Result<()> {
    if let Some(pids) = args.limit_pids {
        if pids < 0 {
            bail!("--limit-pids: invalid value {pids}: use 0 (unlimited) or a positive number");
        }
        container.pid_limit = pids;
    }
    Ok(())
}

/// Applies the health flags to `current` (None when creating) as docker's `updateHealthcheck`
/// does: unset flags keep what is there, `--no-healthcheck` alone disables the image's check.
fn apply_health(
    current: Option<api::HealthConfig>,
    args: &HealthArgs,
) -> anyhow::Result<Option<api::HealthConfig>> {
    if !args.no_healthcheck && !args.any_health_setting() {
        return Ok(current);
    }
    if args.no_healthcheck {
        if args.any_health_setting() {
            bail!("--no-healthcheck conflicts with --health-* options: use one or the other");
        }
        return Ok(Some(api::HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    let mut health = current.unwrap_or_default();
    if health.test.first().is_some_and(|t| t == "NONE") {
        health.test.clear();
    }
    if let Some(interval) = &args.health_interval {
        health.interval = Some(parse_flag_duration("health-interval", interval)?);
    }
    if let Some(timeout) = &args.health_timeout {
        health.timeout = Some(parse_flag_duration("health-timeout", timeout)?);
    }
    if let Some(start) = &args.health_start_period {
        health.start_period = Some(parse_flag_duration("health-start-period", start)?);
    }
    if let Some(start) = &args.health_start_interval {
        health.start_interval = Some(parse_flag_duration("health-start-interval", start)?);
    }
    if let Some(retries) = args.health_retries {
        if retries < 0 {
            bail!("--health-retries: invalid value {retries}: use 0 or more");
        }
        health.retries = retries;
    }
    if let Some(cmd) = &args.health_cmd {
        health.test = if cmd.is_empty() {
            Vec::new()
        } else {
            vec!["CMD-SHELL".into(), cmd.clone()]
        };
    }
    Ok(Some(health))
}

fn apply_container(container: &mut api::ContainerSpec, args: &ContainerArgs) -> anyhow::Result<()> {
    if let Some(hostname) = &args.hostname {
        container.hostname = hostname.clone();
    }
    if let Some(user) = &args.user {
        container.user = user.clone();
    }
    if let Some(workdir) = &args.workdir {
        container.dir = workdir.clone();
    }
    if let Some(entrypoint) = &args.entrypoint {
        container.command = compose::parse::shell_split(entrypoint)
            .map_err(|message| anyhow!("--entrypoint: {message}"))?;
    }
    if let Some(init) = args.init {
        container.init = Some(init);
    }
    if let Some(grace) = &args.stop_grace_period {
        container.stop_grace_period = Some(parse_flag_duration("stop-grace-period", grace)?);
    }
    if let Some(signal) = &args.stop_signal {
        container.stop_signal = signal.clone();
    }
    Ok(())
}

enum ModeName {
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

fn parse_mode(text: &str) -> anyhow::Result<ModeName> {
    Ok(match text {
        "replicated" => ModeName::Replicated,
        "global" => ModeName::Global,
        "replicated-job" => ModeName::ReplicatedJob,
        "global-job" => ModeName::GlobalJob,
        _ => bail!("invalid --mode {text:?}: use replicated, global, replicated-job or global-job"),
    })
}

/// Builds the spec `service create` sends.
pub(crate) fn create_spec(
    args: &CreateArgs,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<api::ServiceSpec> {
    if args.image.trim().is_empty() {
        bail!("an image is required: shoal service create [OPTIONS] IMAGE [COMMAND [ARG...]]");
    }
    let replicas = args.replicas.as_deref().map(parse_replicas).transpose()?;
    let max_concurrent = args
        .max_concurrent
        .as_deref()
        .map(|text| parse_count(text, "max-concurrent"))
        .transpose()?;
    let mode = match parse_mode(&args.mode)? {
        ModeName::Replicated => {
            if max_concurrent.is_some() {
                bail!(
                    "max-concurrent can only be used with replicated-job mode: add --mode replicated-job or drop --max-concurrent"
                );
            }
            api::service_spec::Mode::Replicated(api::ReplicatedService {
                replicas: replicas.unwrap_or(1),
            })
        }
        ModeName::ReplicatedJob => {
            let total = replicas.unwrap_or(1);
            api::service_spec::Mode::ReplicatedJob(api::ReplicatedJob {
                max_concurrent: max_concurrent.unwrap_or(total),
                total_completions: total,
            })
        }
        global @ (ModeName::Global | ModeName::GlobalJob) => {
            if replicas.is_some() {
                bail!(
                    "replicas can only be used with replicated or replicated-job mode: a global service runs one task per node, so drop --replicas"
                );
            }
            if args.replicas_max_per_node.is_some_and(|n| n > 0) {
                bail!(
                    "replicas-max-per-node can only be used with replicated or replicated-job mode: drop --replicas-max-per-node"
                );
            }
            if max_concurrent.is_some() {
                bail!(
                    "max-concurrent can only be used with replicated-job mode: drop --max-concurrent"
                );
            }
            match global {
                ModeName::GlobalJob => api::service_spec::Mode::GlobalJob(api::GlobalJob {}),
                _ => api::service_spec::Mode::Global(api::GlobalService {}),
            }
        }
    };
    for constraint in &args.constraints {
        check_constraint("constraint", constraint)?;
    }
    let preferences = args
        .placement_prefs
        .iter()
        .map(|text| parse_placement_pref("placement-pref", text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mounts = args
        .mounts
        .iter()
        .map(|text| parse_mount("mount", text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut targets = std::collections::HashSet::new();
    for mount in &mounts {
        if !targets.insert(mount.target.as_str()) {
            bail!(
                "--mount: duplicate mount target {}: give each mount its own target",
                mount.target
            );
        }
    }
    let secrets = args
        .secrets
        .iter()
        .map(|text| parse_secret_reference("secret", text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let configs = args
        .configs
        .iter()
        .map(|text| parse_config_reference("config", text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut container = api::ContainerSpec {
        image: args.image.clone(),
        labels: key_values(&args.container_labels),
        args: args.command.clone(),
        env: resolve_env("env", &args.env, lookup_env)?,
        mounts,
        ..Default::default()
    };
    set_payload_references(&mut container, secrets, configs)?;
    update_capabilities(&mut container, &args.cap_add, &args.cap_drop)?;
    container.sysctls = parse_sysctls("sysctl", &args.sysctls)?;
    container.ulimits = parse_ulimits("ulimit", &args.ulimits)?;
    container.groups = args.groups.clone();
    apply_container(&mut container, &args.container)?;
    apply_pids(&mut container, &args.resources)?;
    container.healthcheck = apply_health(None, &args.health)?;
    let resources = if args.resources.any_cpu_or_memory() {
        let mut requirements = api::ResourceRequirements::default();
        apply_resources(&mut requirements, &args.resources)?;
        Some(requirements)
    } else {
        None
    };
    let restart = if args.restart.any() {
        let mut policy = spec::defaults::restart_policy();
        apply_restart(&mut policy, &args.restart)?;
        Some(policy)
    } else {
        None
    };
    Ok(api::ServiceSpec {
        annotations: Some(api::Annotations {
            name: args.name.clone().unwrap_or_default(),
            labels: key_values(&args.labels),
            indices: Vec::new(),
        }),
        task: Some(api::TaskSpec {
            runtime: Some(api::task_spec::Runtime::Container(container)),
            resources,
            restart,
            placement: Some(api::Placement {
                constraints: args.constraints.clone(),
                preferences,
                platforms: Vec::new(),
                max_replicas: args.replicas_max_per_node.unwrap_or(0),
            }),
            ..Default::default()
        }),
        mode: Some(mode),
        update: new_update_config(&args.update_policy.flags())?,
        rollback: new_update_config(&args.rollback_policy.flags())?,
        endpoint: Some(api::EndpointSpec::default()),
        ..Default::default()
    })
}

/// Adds `added` (replacing entries with the same key) and drops the keys in `removed`, keeping
/// the order of what stays.
fn update_env(current: &mut Vec<String>, added: &[String], removed: &[String]) {
    current.retain(|entry| !removed.iter().any(|key| env_key(key) == env_key(entry)));
    for entry in added {
        match current.iter_mut().find(|e| env_key(e) == env_key(entry)) {
            Some(existing) => existing.clone_from(entry),
            None => current.push(entry.clone()),
        }
    }
}

fn update_labels(labels: &mut HashMap<String, String>, added: &[String], removed: &[String]) {
    for key in removed {
        labels.remove(key.split_once('=').map_or(key.as_str(), |(k, _)| k));
    }
    labels.extend(key_values(added));
}

/// Applies `service update`'s flags to the current spec, as docker's `updateService` does.
pub(crate) fn update_spec(
    mut spec: api::ServiceSpec,
    args: &UpdateArgs,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<api::ServiceSpec> {
    if let Some(text) = &args.replicas {
        let replicas = parse_replicas(text)?;
        match spec.mode.as_mut() {
            Some(api::service_spec::Mode::Replicated(r)) => r.replicas = replicas,
            Some(api::service_spec::Mode::ReplicatedJob(job)) => job.total_completions = replicas,
            _ => bail!(
                "replicas can only be used with replicated or replicated-job mode: this service is global, so it runs one task per eligible node"
            ),
        }
    }
    if let Some(text) = &args.max_concurrent {
        let concurrent = parse_count(text, "max-concurrent")?;
        match spec.mode.as_mut() {
            Some(api::service_spec::Mode::ReplicatedJob(job)) => job.max_concurrent = concurrent,
            _ => bail!(
                "max-concurrent can only be used with replicated-job mode: this service is not a replicated job"
            ),
        }
    }
    let is_global = matches!(
        spec.mode,
        Some(api::service_spec::Mode::Global(_) | api::service_spec::Mode::GlobalJob(_))
    );
    if is_global && args.replicas_max_per_node.is_some_and(|n| n > 0) {
        bail!(
            "replicas-max-per-node can only be used with replicated or replicated-job mode: this service is global"
        );
    }

    let annotations = spec.annotations.get_or_insert_default();
    update_labels(&mut annotations.labels, &args.label_add, &args.label_rm);

    let task = spec.task.get_or_insert_default();
    let container = match task
        .runtime
        .get_or_insert_with(|| api::task_spec::Runtime::Container(api::ContainerSpec::default()))
    {
        api::task_spec::Runtime::Container(container) => container,
        _ => bail!("this service does not run containers, so its container flags can't be updated"),
    };
    if let Some(image) = &args.image {
        if image.trim().is_empty() {
            bail!("--image: the image can't be empty");
        }
        container.image = image.clone();
    }
    if let Some(text) = &args.args {
        container.args =
            compose::parse::shell_split(text).map_err(|message| anyhow!("--args: {message}"))?;
    }
    let env_add = resolve_env("env-add", &args.env_add, lookup_env)?;
    update_env(&mut container.env, &env_add, &args.env_rm);
    update_labels(
        &mut container.labels,
        &args.container_label_add,
        &args.container_label_rm,
    );
    apply_container(container, &args.container)?;
    apply_pids(container, &args.resources)?;
    container.healthcheck = apply_health(container.healthcheck.take(), &args.health)?;
    update_capabilities(container, &args.cap_add, &args.cap_drop)?;
    let sysctls = parse_sysctls("sysctl-add", &args.sysctl_add)?;
    container
        .sysctls
        .retain(|name, _| !args.sysctl_rm.contains(name));
    container.sysctls.extend(sysctls);
    let ulimits = parse_ulimits("ulimit-add", &args.ulimit_add)?;
    container.ulimits.retain(|ulimit| {
        !args.ulimit_rm.contains(&ulimit.name) && !ulimits.iter().any(|u| u.name == ulimit.name)
    });
    container.ulimits.extend(ulimits);
    container
        .groups
        .retain(|group| !args.group_rm.contains(group) && !args.group_add.contains(group));
    container.groups.extend(args.group_add.iter().cloned());

    if !args.mount_add.is_empty() || !args.mount_rm.is_empty() {
        let added = args
            .mount_add
            .iter()
            .map(|text| parse_mount("mount-add", text))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut targets = std::collections::HashSet::new();
        for mount in &added {
            if !targets.insert(mount.target.clone()) {
                bail!(
                    "--mount-add: duplicate mount target {}: give each mount its own target",
                    mount.target
                );
            }
        }
        container
            .mounts
            .retain(|m| !targets.contains(&m.target) && !args.mount_rm.contains(&m.target));
        container.mounts.extend(
            added
                .into_iter()
                .filter(|m| !args.mount_rm.contains(&m.target)),
        );
    }

    if !(args.secret_add.is_empty()
        && args.secret_rm.is_empty()
        && args.config_add.is_empty()
        && args.config_rm.is_empty())
    {
        let added_secrets = args
            .secret_add
            .iter()
            .map(|text| parse_secret_reference("secret-add", text))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let added_configs = args
            .config_add
            .iter()
            .map(|text| parse_config_reference("config-add", text))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut secrets = std::mem::take(&mut container.secrets);
        secrets.retain(|s| {
            !args.secret_rm.contains(&s.secret_name)
                && !added_secrets.iter().any(|a| a.secret_name == s.secret_name)
        });
        secrets.extend(added_secrets);
        let mut configs = std::mem::take(&mut container.configs);
        configs.retain(|c| {
            !args.config_rm.contains(&c.config_name)
                && !added_configs.iter().any(|a| a.config_name == c.config_name)
        });
        configs.extend(added_configs);
        set_payload_references(container, secrets, configs)?;
    }

    let placement = task.placement.get_or_insert_default();
    for constraint in &args.constraint_add {
        check_constraint("constraint-add", constraint)?;
        if !placement.constraints.contains(constraint) {
            placement.constraints.push(constraint.clone());
        }
    }
    placement.constraints.retain(|c| {
        !args
            .constraint_rm
            .iter()
            .any(|removed| removed.trim() == c.trim())
    });
    placement.constraints.sort();
    if !args.placement_pref_rm.is_empty() {
        let removed = args
            .placement_pref_rm
            .iter()
            .map(|text| parse_placement_pref("placement-pref-rm", text))
            .collect::<anyhow::Result<Vec<_>>>()?;
        placement.preferences.retain(|existing| {
            !removed.iter().any(|r| {
                spread_descriptor(r).is_some()
                    && spread_descriptor(r) == spread_descriptor(existing)
            })
        });
    }
    for text in &args.placement_pref_add {
        placement
            .preferences
            .push(parse_placement_pref("placement-pref-add", text)?);
    }
    if let Some(max) = args.replicas_max_per_node {
        placement.max_replicas = max;
    }

    if args.resources.any_cpu_or_memory() {
        apply_resources(task.resources.get_or_insert_default(), &args.resources)?;
    }
    if args.restart.any() {
        apply_restart(
            task.restart
                .get_or_insert_with(spec::defaults::restart_policy),
            &args.restart,
        )?;
    }
    if args.force {
        task.force_update = task.force_update.wrapping_add(1);
    }
    for (flags, config) in [
        (args.update_policy.flags(), &mut spec.update),
        (args.rollback_policy.flags(), &mut spec.rollback),
    ] {
        if flags.any() {
            flags.apply(config.get_or_insert_with(spec::defaults::update_config))?;
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct CreateCli {
        #[command(flatten)]
        args: CreateArgs,
    }

    #[derive(Parser)]
    struct UpdateCli {
        #[command(flatten)]
        args: UpdateArgs,
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn create(flags: &[&str]) -> anyhow::Result<api::ServiceSpec> {
        let cli =
            CreateCli::try_parse_from(std::iter::once("create").chain(flags.iter().copied()))?;
        create_spec(&cli.args, &no_env)
    }

    fn create_error(flags: &[&str]) -> String {
        match create(flags) {
            Ok(spec) => panic!("expected an error, got {spec:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn update(spec: api::ServiceSpec, flags: &[&str]) -> anyhow::Result<api::ServiceSpec> {
        let cli =
            UpdateCli::try_parse_from(std::iter::once("update").chain(flags.iter().copied()))?;
        update_spec(spec, &cli.args, &no_env)
    }

    fn container_of(spec: &api::ServiceSpec) -> api::ContainerSpec {
        crate::service::format::container(spec.task.as_ref())
            .cloned()
            .unwrap_or_default()
    }

    fn seconds(seconds: i64) -> Option<api::Duration> {
        Some(api::Duration { seconds, nanos: 0 })
    }

    #[test]
    fn groups_capabilities_sysctls_and_ulimits_are_created_and_updated() -> anyhow::Result<()> {
        let spec = create(&[
            "--cap-add",
            "net_admin",
            "--cap-drop",
            "CAP_MKNOD",
            "--sysctl",
            "net.core.somaxconn=512",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "core=-1",
            "--group",
            "staff",
            "--group",
            "4242",
            "busybox",
        ])?;
        let container = container_of(&spec);
        assert_eq!(container.groups, ["staff", "4242"]);
        assert_eq!(container.capability_add, ["CAP_NET_ADMIN"]);
        assert_eq!(container.capability_drop, ["CAP_MKNOD"]);
        assert_eq!(container.sysctls["net.core.somaxconn"], "512");
        let limits: Vec<(&str, i64, i64)> = container
            .ulimits
            .iter()
            .map(|u| (u.name.as_str(), u.soft, u.hard))
            .collect();
        assert_eq!(limits, [("nofile", 1024, 2048), ("core", -1, -1)]);

        // Dropping an added capability takes it off the added list, as Docker does.
        let updated = update(
            spec,
            &[
                "--cap-drop",
                "NET_ADMIN",
                "--cap-add",
                "mknod",
                "--sysctl-rm",
                "net.core.somaxconn",
                "--sysctl-add",
                "net.ipv4.ip_forward=1",
                "--ulimit-rm",
                "core",
                "--ulimit-add",
                "nofile=4096",
                "--group-rm",
                "staff",
                "--group-add",
                "audio",
            ],
        )?;
        let container = container_of(&updated);
        assert_eq!(container.groups, ["4242", "audio"]);
        assert_eq!(container.capability_add, ["CAP_MKNOD"]);
        assert_eq!(container.capability_drop, ["CAP_NET_ADMIN"]);
        assert_eq!(
            container.sysctls,
            HashMap::from([("net.ipv4.ip_forward".to_owned(), "1".to_owned())])
        );
        let limits: Vec<(&str, i64, i64)> = container
            .ulimits
            .iter()
            .map(|u| (u.name.as_str(), u.soft, u.hard))
            .collect();
        assert_eq!(limits, [("nofile", 4096, 4096)]);

        assert!(
            create_error(&["--cap-add", "NET_ADMINN", "busybox"]).contains(
                "--cap-add: invalid capability: \"NET_ADMINN\" is not a Linux capability"
            )
        );
        assert!(
            create_error(&["--cap-add", "ALL", "--cap-drop", "all", "busybox"])
                .contains("ALL is both added and dropped")
        );
        assert!(create_error(&["--sysctl", "somaxconn", "busybox"]).contains("use NAME=VALUE"));
        assert!(
            create_error(&["--sysctl", "vm.swappiness=1", "busybox"])
                .contains("--sysctl: invalid sysctl: vm.swappiness is not namespaced")
        );
        assert!(
            create_error(&["--ulimit", "files=1", "busybox"]).contains("\"files\" is not a limit")
        );
        assert!(
            create_error(&["--ulimit", "nofile=10:5", "busybox"])
                .contains("soft limit 10 is above the hard limit 5")
        );
        assert!(create_error(&["--ulimit", "nofile=lots", "busybox"]).contains("NAME=SOFT[:HARD]"));
        Ok(())
    }

    #[test]
    fn create_maps_every_flag() -> anyhow::Result<()> {
        let spec = create(&[
            "--name",
            "web",
            "--replicas",
            "3",
            "-e",
            "A=1",
            "--env",
            "B=2",
            "-e",
            "A=3",
            "-l",
            "tier=front",
            "--container-label",
            "c=d",
            "--constraint",
            "node.role==worker",
            "--placement-pref",
            "spread=node.labels.zone",
            "--replicas-max-per-node",
            "2",
            "--reserve-cpu",
            "0.25",
            "--reserve-memory",
            "64m",
            "--limit-cpu",
            "1.5",
            "--limit-memory",
            "1g",
            "--limit-pids",
            "100",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "3",
            "--mount",
            "type=bind,source=/srv,target=/srv,readonly",
            "--mount",
            "type=tmpfs,target=/tmp,tmpfs-size=16m",
            "--hostname",
            "h",
            "-u",
            "1000:1000",
            "-w",
            "/app",
            "--entrypoint",
            "/bin/sh -c",
            "--init",
            "--stop-grace-period",
            "1m30s",
            "--stop-signal",
            "SIGINT",
            "--health-cmd",
            "curl -f localhost",
            "--health-interval",
            "10s",
            "--health-retries",
            "5",
            "nginx:alpine",
            "echo",
            "-n",
            "hi",
        ])?;
        let annotations = spec.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.name, "web");
        assert_eq!(annotations.labels["tier"], "front");
        assert_eq!(
            spec.mode,
            Some(api::service_spec::Mode::Replicated(
                api::ReplicatedService { replicas: 3 }
            ))
        );
        let container = container_of(&spec);
        assert_eq!(container.image, "nginx:alpine");
        assert_eq!(container.args, ["echo", "-n", "hi"]);
        assert_eq!(container.command, ["/bin/sh", "-c"]);
        assert_eq!(container.env, ["B=2", "A=3"]);
        assert_eq!(container.labels["c"], "d");
        assert_eq!(container.hostname, "h");
        assert_eq!(container.user, "1000:1000");
        assert_eq!(container.dir, "/app");
        assert_eq!(container.init, Some(true));
        assert_eq!(container.stop_grace_period, seconds(90));
        assert_eq!(container.stop_signal, "SIGINT");
        assert_eq!(container.pid_limit, 100);
        assert_eq!(container.mounts.len(), 2);
        assert_eq!(container.mounts[0].r#type, api::mount::Type::Bind as i32);
        assert!(container.mounts[0].readonly);
        assert_eq!(
            container.mounts[1]
                .tmpfs_options
                .as_ref()
                .map(|t| t.size_bytes),
            Some(16 << 20)
        );
        let health = container.healthcheck.unwrap_or_default();
        assert_eq!(health.test, ["CMD-SHELL", "curl -f localhost"]);
        assert_eq!(health.interval, seconds(10));
        assert_eq!(health.retries, 5);
        assert_eq!(health.timeout, None);
        let task = spec.task.clone().unwrap_or_default();
        let placement = task.placement.unwrap_or_default();
        assert_eq!(placement.constraints, ["node.role==worker"]);
        assert_eq!(placement.max_replicas, 2);
        assert_eq!(
            placement.preferences.first().and_then(spread_descriptor),
            Some("node.labels.zone")
        );
        let resources = task.resources.unwrap_or_default();
        let reservations = resources.reservations.unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        assert_eq!(reservations.nano_cpus, 250_000_000);
        assert_eq!(reservations.memory_bytes, 64 << 20);
        assert_eq!(limits.nano_cpus, 1_500_000_000);
        assert_eq!(limits.memory_bytes, 1 << 30);
        let restart = task.restart.unwrap_or_default();
        assert_eq!(
            restart.condition,
            api::restart_policy::RestartCondition::OnFailure as i32
        );
        assert_eq!(restart.delay, seconds(5));
        assert_eq!(restart.max_attempts, 3);
        Ok(())
    }

    #[test]
    fn create_defaults_leave_server_defaults_alone() -> anyhow::Result<()> {
        let spec = create(&["alpine"])?;
        assert_eq!(
            spec.mode,
            Some(api::service_spec::Mode::Replicated(
                api::ReplicatedService { replicas: 1 }
            ))
        );
        let task = spec.task.clone().unwrap_or_default();
        assert!(task.restart.is_none());
        assert!(task.resources.is_none());
        let container = container_of(&spec);
        assert!(container.healthcheck.is_none());
        assert_eq!(container.init, None);
        // `--init` does not swallow the image that follows it.
        let spec = create(&["--init", "alpine", "sleep", "1"])?;
        assert_eq!(container_of(&spec).image, "alpine");
        assert_eq!(container_of(&spec).init, Some(true));
        let spec = create(&["--init=false", "alpine"])?;
        assert_eq!(container_of(&spec).init, Some(false));
        Ok(())
    }

    #[test]
    fn modes_follow_docker() -> anyhow::Result<()> {
        let spec = create(&["--mode", "replicated-job", "--replicas", "5", "alpine"])?;
        assert_eq!(
            spec.mode,
            Some(api::service_spec::Mode::ReplicatedJob(api::ReplicatedJob {
                max_concurrent: 5,
                total_completions: 5
            }))
        );
        let spec = create(&[
            "--mode",
            "replicated-job",
            "--replicas",
            "5",
            "--max-concurrent",
            "2",
            "alpine",
        ])?;
        assert_eq!(
            spec.mode,
            Some(api::service_spec::Mode::ReplicatedJob(api::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 5
            }))
        );
        let spec = create(&["--mode", "global", "alpine"])?;
        assert_eq!(
            spec.mode,
            Some(api::service_spec::Mode::Global(api::GlobalService {}))
        );
        let spec = create(&["--mode", "global-job", "alpine"])?;
        assert_eq!(
            spec.mode,
            Some(api::service_spec::Mode::GlobalJob(api::GlobalJob {}))
        );
        assert!(
            create_error(&["--mode", "global", "--replicas", "2", "alpine"]).starts_with(
                "replicas can only be used with replicated or replicated-job mode: a global service runs one task per node, so drop --replicas"
            )
        );
        assert!(
            create_error(&["--max-concurrent", "2", "alpine"])
                .starts_with("max-concurrent can only be used with replicated-job mode: add --mode replicated-job")
        );
        assert!(
            create_error(&["--mode", "daemonset", "alpine"]).contains("use replicated, global")
        );
        Ok(())
    }

    #[test]
    fn bad_flags_say_what_to_do() {
        assert_eq!(
            create_error(&["--replicas", "-3", "alpine"]),
            "invalid replicas value -3: the number of replicas must be 0 or more"
        );
        assert_eq!(
            create_error(&["--replicas=-3", "alpine"]),
            "invalid replicas value -3: the number of replicas must be 0 or more"
        );
        assert!(create_error(&["--replicas", "three", "alpine"]).contains("use a whole number"));
        assert!(create_error(&["--limit-cpu", "0.1234567891", "alpine"]).contains("too precise"));
        assert!(create_error(&["--limit-cpu", "lots", "alpine"]).starts_with("--limit-cpu:"));
        assert!(create_error(&["--limit-memory", "12q", "alpine"]).starts_with("--limit-memory:"));
        assert!(create_error(&["--restart-delay", "5", "alpine"]).starts_with("--restart-delay:"));
        assert!(
            create_error(&["--restart-condition", "always", "alpine"])
                .contains("use none, on-failure or any")
        );
        assert!(create_error(&["--constraint", "node.role", "alpine"]).contains("KEY==VALUE"));
        assert!(
            create_error(&["--placement-pref", "pack=node.labels.x", "alpine"])
                .contains("only spread is supported")
        );
        assert!(
            create_error(&["--no-healthcheck", "--health-cmd", "true", "alpine"])
                .contains("conflicts with --health-* options")
        );
        assert!(
            create_error(&["--mount", "type=bind,source=/a", "alpine"])
                .contains("target is required")
        );
        assert!(
            create_error(&["--mount", "type=bind,source=rel,target=/a", "alpine"])
                .contains("absolute source path")
        );
        assert!(
            create_error(&["--mount", "type=tmpfs,target=/a,volume-nocopy", "alpine"])
                .contains("cannot mix 'volume-*' options")
        );
        assert!(
            create_error(&["--mount", "type=volume,target=/a,colour=red", "alpine"])
                .contains("unexpected key")
        );
        assert!(
            create_error(&["--reserve-memory", "2g", "--limit-memory", "1g", "alpine"])
                .contains("reserve at most the limit")
        );
    }

    #[test]
    fn env_without_value_comes_from_the_environment() -> anyhow::Result<()> {
        let cli = CreateCli::try_parse_from(["create", "-e", "HOME", "-e", "UNSET", "alpine"])?;
        let lookup = |key: &str| (key == "HOME").then(|| "/root".to_owned());
        let spec = create_spec(&cli.args, &lookup)?;
        assert_eq!(container_of(&spec).env, ["HOME=/root", "UNSET"]);
        Ok(())
    }

    #[test]
    fn secrets_and_configs_parse_dockers_flags() -> anyhow::Result<()> {
        let short = parse_secret_reference("secret", "db-password")?;
        assert_eq!(short.secret_name, "db-password");
        let Some(api::secret_reference::Target::File(file)) = short.target else {
            panic!("a file target");
        };
        assert_eq!(
            (
                file.name.as_str(),
                file.uid.as_str(),
                file.gid.as_str(),
                file.mode
            ),
            ("db-password", "0", "0", Some(0o444))
        );
        let long =
            parse_secret_reference("secret", "source=pw,target=db_pw,uid=7,gid=8,mode=0400")?;
        let Some(api::secret_reference::Target::File(file)) = long.target else {
            panic!("a file target");
        };
        assert_eq!(
            (
                file.name.as_str(),
                file.uid.as_str(),
                file.gid.as_str(),
                file.mode
            ),
            ("db_pw", "7", "8", Some(0o400))
        );
        let config = parse_config_reference("config", "nginx.conf")?;
        let Some(api::config_reference::Target::File(file)) = config.target else {
            panic!("a file target");
        };
        assert_eq!(file.name, "/nginx.conf");
        for (text, why) in [
            ("target=x", "source is required"),
            ("source=x,mode=999", "invalid mode"),
            ("source=x,colour=red", "unknown field"),
            ("", "empty value"),
        ] {
            let error = parse_secret_reference("secret", text)
                .unwrap_err()
                .to_string();
            assert!(error.contains(why), "{text}: {error}");
        }
        let mut container = api::ContainerSpec::default();
        let twice = vec![
            parse_secret_reference("secret", "source=a,target=x")?,
            parse_secret_reference("secret", "source=b,target=x")?,
        ];
        let error = set_payload_references(&mut container, twice, Vec::new()).unwrap_err();
        assert!(
            error.to_string().contains("two secrets target x"),
            "{error}"
        );
        Ok(())
    }

    #[test]
    fn mounts_parse_docker_csv() -> anyhow::Result<()> {
        let mount = parse_mount(
            "mount",
            "type=volume,src=data,dst=/data,volume-label=a=b,volume-driver=local,\"volume-opt=o=x,y\",ro=false",
        )?;
        assert_eq!(mount.r#type, api::mount::Type::Volume as i32);
        assert_eq!(mount.source, "data");
        assert_eq!(mount.target, "/data");
        assert!(!mount.readonly);
        let volume = mount.volume_options.unwrap_or_default();
        assert_eq!(volume.labels["a"], "b");
        let driver = volume.driver_config.unwrap_or_default();
        assert_eq!(driver.name, "local");
        assert_eq!(driver.options["o"], "x,y");
        let mount = parse_mount("mount", "target=/cache")?;
        assert_eq!(mount.r#type, api::mount::Type::Volume as i32);
        let mount = parse_mount("mount", "type=tmpfs,target=/t,tmpfs-mode=1777")?;
        assert_eq!(mount.tmpfs_options.map(|t| t.mode), Some(0o1777));
        Ok(())
    }

    fn existing() -> anyhow::Result<api::ServiceSpec> {
        create(&[
            "--name",
            "web",
            "--replicas",
            "2",
            "-e",
            "A=1",
            "-e",
            "B=2",
            "-l",
            "keep=1",
            "-l",
            "drop=1",
            "--constraint",
            "node.role==worker",
            "--placement-pref",
            "spread=node.labels.zone",
            "--mount",
            "type=volume,source=a,target=/a",
            "--mount",
            "type=volume,source=b,target=/b",
            "--health-cmd",
            "true",
            "nginx:1",
            "serve",
        ])
    }

    #[test]
    fn update_changes_only_what_is_asked() -> anyhow::Result<()> {
        let before = existing()?;
        let after = update(before.clone(), &[])?;
        assert_eq!(before, after);

        let after = update(
            before.clone(),
            &[
                "--replicas",
                "5",
                "--image",
                "nginx:2",
                "--args",
                "serve --port 80",
                "--env-add",
                "B=3",
                "--env-add",
                "C=4",
                "--env-rm",
                "A",
                "--label-add",
                "new=1",
                "--label-rm",
                "drop",
                "--constraint-add",
                "node.labels.zone==east",
                "--constraint-rm",
                "node.role==worker",
                "--placement-pref-rm",
                "spread=node.labels.zone",
                "--placement-pref-add",
                "spread=node.labels.rack",
                "--mount-add",
                "type=volume,source=c,target=/b",
                "--mount-rm",
                "/a",
                "--limit-memory",
                "256m",
                "--restart-delay",
                "10s",
                "--health-retries",
                "2",
                "--force",
            ],
        )?;
        assert_eq!(
            after.mode,
            Some(api::service_spec::Mode::Replicated(
                api::ReplicatedService { replicas: 5 }
            ))
        );
        let container = container_of(&after);
        assert_eq!(container.image, "nginx:2");
        assert_eq!(container.args, ["serve", "--port", "80"]);
        assert_eq!(container.env, ["B=3", "C=4"]);
        assert_eq!(container.mounts.len(), 1);
        assert_eq!(container.mounts[0].source, "c");
        let health = container.healthcheck.unwrap_or_default();
        assert_eq!(health.test, ["CMD-SHELL", "true"]);
        assert_eq!(health.retries, 2);
        let labels = after.annotations.clone().unwrap_or_default().labels;
        assert_eq!(labels.get("keep").map(String::as_str), Some("1"));
        assert_eq!(labels.get("new").map(String::as_str), Some("1"));
        assert!(!labels.contains_key("drop"));
        let task = after.task.clone().unwrap_or_default();
        let placement = task.placement.unwrap_or_default();
        assert_eq!(placement.constraints, ["node.labels.zone==east"]);
        assert_eq!(
            placement
                .preferences
                .iter()
                .filter_map(spread_descriptor)
                .collect::<Vec<_>>(),
            ["node.labels.rack"]
        );
        assert_eq!(
            task.resources
                .and_then(|r| r.limits)
                .map(|l| l.memory_bytes),
            Some(256 << 20)
        );
        let restart = task.restart.unwrap_or_default();
        assert_eq!(restart.delay, seconds(10));
        assert_eq!(
            restart.condition,
            api::restart_policy::RestartCondition::Any as i32
        );
        assert_eq!(task.force_update, 1);

        let after = update(before, &["--no-healthcheck"])?;
        assert_eq!(
            container_of(&after).healthcheck.map(|h| h.test),
            Some(vec!["NONE".to_owned()])
        );
        Ok(())
    }

    #[test]
    fn update_refuses_what_docker_refuses() -> anyhow::Result<()> {
        let global = create(&["--mode", "global", "alpine"])?;
        let error = update(global.clone(), &["--replicas", "3"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with("replicas can only be used with replicated or replicated-job mode: "),
            "{error}"
        );
        let error = update(existing()?, &["--replicas", "-1"])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("invalid replicas value -1: the number of replicas must be 0 or more")
        );
        let job = create(&["--mode", "replicated-job", "--replicas", "2", "alpine"])?;
        let job = update(job, &["--replicas", "4", "--max-concurrent", "3"])?;
        assert_eq!(
            job.mode,
            Some(api::service_spec::Mode::ReplicatedJob(api::ReplicatedJob {
                max_concurrent: 3,
                total_completions: 4
            }))
        );
        Ok(())
    }

    #[test]
    fn scale_follows_docker() -> anyhow::Result<()> {
        assert_eq!(parse_scale_arg("web=3")?, ("web".to_owned(), 3));
        assert!(
            parse_scale_arg("web=-3")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("must be 0 or more")
        );
        assert!(parse_scale_arg("web").is_err());
        let scaled = scale_spec(existing()?, 7)?;
        assert_eq!(
            scaled.mode,
            Some(api::service_spec::Mode::Replicated(
                api::ReplicatedService { replicas: 7 }
            ))
        );
        let global = create(&["--mode", "global", "alpine"])?;
        assert_eq!(
            scale_spec(global, 2)
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("scale can only be used with replicated or replicated-job mode")
        );
        Ok(())
    }

    #[test]
    fn cpus_are_exact() -> anyhow::Result<()> {
        assert_eq!(parse_cpus("limit-cpu", "1")?, 1_000_000_000);
        assert_eq!(parse_cpus("limit-cpu", ".5")?, 500_000_000);
        assert_eq!(parse_cpus("limit-cpu", "0.000000001")?, 1);
        assert!(parse_cpus("limit-cpu", "-1").is_err());
        assert!(parse_cpus("limit-cpu", ".").is_err());
        Ok(())
    }

    #[test]
    fn update_and_rollback_flags_set_their_configs_over_swarms_defaults() -> anyhow::Result<()> {
        use api::update_config::{FailureAction, UpdateOrder};
        let spec = create(&[
            "--update-parallelism",
            "5",
            "--update-delay",
            "2s",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "1s",
            "--update-max-failure-ratio",
            "0.25",
            "--update-order",
            "start-first",
            "--rollback-parallelism",
            "0",
            "busybox",
        ])?;
        let update_config = spec.update.unwrap_or_default();
        assert_eq!(update_config.parallelism, 5);
        assert_eq!(update_config.delay, seconds(2));
        assert_eq!(update_config.failure_action(), FailureAction::Rollback);
        assert_eq!(update_config.monitor, seconds(1));
        assert_eq!(update_config.max_failure_ratio, 0.25);
        assert_eq!(update_config.order(), UpdateOrder::StartFirst);
        let rollback_config = spec.rollback.unwrap_or_default();
        assert_eq!(rollback_config.parallelism, 0);
        assert_eq!(rollback_config.monitor, seconds(5));
        assert_eq!(rollback_config.failure_action(), FailureAction::Pause);

        // An update changes only what its flags name.
        let updated = update(spec, &["--update-parallelism", "2"])?;
        let update_config = updated.update.unwrap_or_default();
        assert_eq!(update_config.parallelism, 2);
        assert_eq!(update_config.order(), UpdateOrder::StartFirst);

        assert!(
            create_error(&["--rollback-failure-action", "rollback", "busybox"])
                .contains("use pause or continue")
        );
        assert!(
            create_error(&["--update-max-failure-ratio", "2", "busybox"])
                .contains("between 0 and 1")
        );
        assert!(create_error(&["--update-order", "random", "busybox"]).contains("start-first"));
        assert!(create_error(&["--update-delay", "soon", "busybox"]).contains("update-delay"));
        Ok(())
    }
}
