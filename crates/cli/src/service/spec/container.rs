//! The container's settings: capabilities, sysctls, ulimits, restart policy, resources and
//! healthcheck, as `create` sets them and `update` changes them.

use std::collections::HashMap;

use anyhow::{anyhow, bail};
use shoal_proto::api;
use spec::enums::TextForm as _;

use super::*;

/// Adds and drops capabilities as `docker service update` does: adding one takes it off the
/// dropped list, dropping one takes it off the added list. Names are checked and written the
/// engine's way (`CAP_NET_ADMIN`, or `ALL`), by spec's list.
pub(super) fn update_capabilities(
    container: &mut api::ContainerSpec,
    add: &[String],
    drop: &[String],
) -> anyhow::Result<()> {
    let normalise = |flag: &str, names: &[String]| -> anyhow::Result<Vec<String>> {
        names
            .iter()
            .map(|name| {
                spec::linux::capability_name(name).map_err(|error| anyhow!("--{flag}: {error}"))
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
                spec::linux::sysctl_name(name.trim())
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
        let name = spec::linux::ulimit_name(name.trim())
            .map_err(|error| anyhow!("--{flag} {item:?}: {error}"))?;
        let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
        let number = |text: &str| text.trim().parse::<i64>().map_err(|_| usage());
        let (soft, hard) = (number(soft)?, number(hard)?);
        spec::linux::ulimit_values(
            &name,
            spec::linux::rlimit_value(soft),
            spec::linux::rlimit_value(hard),
        )
        .map_err(|error| anyhow!("--{flag} {item:?}: {error}"))?;
        if ulimits.iter().any(|ulimit| ulimit.name == name) {
            bail!("--{flag}: {name} is given twice");
        }
        ulimits.push(api::container_spec::Ulimit { name, soft, hard });
    }
    Ok(ulimits)
}

pub(super) fn parse_restart_condition(text: &str) -> anyhow::Result<i32> {
    Ok(api::restart_policy::RestartCondition::parse(text)
        .map_err(|error| error.in_field("--restart-condition"))? as i32)
}

pub(super) fn apply_restart(
    policy: &mut api::RestartPolicy,
    args: &RestartArgs,
) -> anyhow::Result<()> {
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
    pub(super) fn any(&self) -> bool {
        self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some()
    }
}

impl ResourceArgs {
    pub(super) fn any_cpu_or_memory(&self) -> bool {
        self.reserve_cpu.is_some()
            || self.reserve_memory.is_some()
            || self.limit_cpu.is_some()
            || self.limit_memory.is_some()
    }
}

pub(super) fn apply_resources(
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

pub(super) fn apply_pids(
    container: &mut api::ContainerSpec,
    args: &ResourceArgs,
) -> anyhow::Result<()> {
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
pub(super) fn apply_health(
    current: Option<Box<api::HealthConfig>>,
    args: &HealthArgs,
) -> anyhow::Result<Option<Box<api::HealthConfig>>> {
    if !args.no_healthcheck && !args.any_health_setting() {
        return Ok(current);
    }
    if args.no_healthcheck {
        if args.any_health_setting() {
            bail!("--no-healthcheck conflicts with --health-* options: use one or the other");
        }
        return Ok(Some(Box::new(api::HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        })));
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

pub(super) fn apply_container(
    container: &mut api::ContainerSpec,
    args: &ContainerArgs,
) -> anyhow::Result<()> {
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
