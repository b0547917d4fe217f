//! The rules every spec the cluster stores must follow: services, networks, secrets, configs,
//! cluster settings and the address pools of `swarm init`. The manager calls these on every
//! write path; clients call them to fail early with the same message.

use std::net::Ipv4Addr;
use std::time::Duration;

use shoal_proto::api::{
    ClusterSpec, NetworkSpec, ResourceRequirements, ServiceSpec, UpdateConfig, mount, task_spec,
    update_config,
};

use crate::{SpecError, template};

/// Docker's limit for a service name: a DNS label.
pub const MAX_SERVICE_NAME_LENGTH: usize = 63;
/// Docker's limit on a secret's or config's data.
pub const MAX_PAYLOAD_BYTES: usize = 500 * 1024;
/// The most secrets and configs, together, one task may mount. Each is a file in the task's
/// in-memory file mounts, so a task holds at most this many times [`MAX_PAYLOAD_BYTES`] of
/// worker memory (about 49 MiB), and its assignments stay a bounded size.
pub const MAX_PAYLOADS_PER_TASK: usize = 100;
/// Docker's limit on a secret's or config's name.
pub const MAX_PAYLOAD_NAME_LENGTH: usize = 64;
/// The shortest dispatcher heartbeat a cluster may ask for: shorter ones would cost more in Raft
/// writes than they gain in detection time.
pub const MIN_DISPATCHER_HEARTBEAT: Duration = Duration::from_millis(100);
/// The largest subnet size cut from an address pool: a /29 still leaves addresses for tasks once
/// the network, gateway and broadcast addresses are taken (Docker's limit).
pub const MAX_SUBNET_SIZE: u32 = 29;

fn rule(message: String) -> SpecError {
    SpecError::rule(message)
}

/// A service name as Docker allows it: letters, digits, '-' and '_', starting and ending with a
/// letter or digit, at most 63 characters.
pub fn service_name(name: &str) -> Result<(), SpecError> {
    let valid_characters = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    let valid_ends = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if name.len() > MAX_SERVICE_NAME_LENGTH || !valid_characters || !valid_ends {
        return Err(rule(format!(
            "invalid service name {name:?}: use at most {MAX_SERVICE_NAME_LENGTH} letters, digits, '-' or '_', starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

/// Everything about a service spec that does not depend on other objects (placement
/// constraints are the scheduler's grammar and are checked by the manager with it).
pub fn service_spec(spec: &ServiceSpec) -> Result<(), SpecError> {
    let name = spec
        .annotations
        .as_ref()
        .map_or("", |annotations| annotations.name.as_str());
    service_name(name)?;
    if spec.mode.is_none() {
        return Err(rule(
            "the service has no mode: choose replicated, global, replicated-job or global-job"
                .to_owned(),
        ));
    }
    let task = spec.task.as_ref().ok_or_else(|| {
        rule("the service has no task template: give at least an image".to_owned())
    })?;
    let Some(task_spec::Runtime::Container(container)) = task.runtime.as_ref() else {
        return Err(rule(
            "the service's task runs no container: give an image".to_owned(),
        ));
    };
    if container.image.trim().is_empty() {
        return Err(rule(
            "the service has no image: give one, as in 'shoal service create busybox'".to_owned(),
        ));
    }
    if let Some(resources) = task.resources.as_ref() {
        resources_rule(resources)?;
    }
    for duration in [
        container.stop_grace_period.as_ref(),
        task.restart
            .as_ref()
            .and_then(|restart| restart.delay.as_ref()),
        task.restart
            .as_ref()
            .and_then(|restart| restart.window.as_ref()),
    ]
    .into_iter()
    .flatten()
    {
        if Duration::try_from(*duration).is_err() {
            return Err(rule(
                "a negative duration: durations must be 0 or more".to_owned(),
            ));
        }
    }
    update_config_rule("update", spec.update.as_ref())?;
    update_config_rule("rollback", spec.rollback.as_ref())?;
    for mount in &container.mounts {
        if !mount.target.starts_with('/') {
            return Err(rule(format!(
                "mount target {:?} is not an absolute path: give a path inside the container such as /data",
                mount.target
            )));
        }
        if mount.r#type() == mount::Type::Bind && !mount.source.starts_with('/') {
            return Err(rule(format!(
                "bind mount source {:?} is not an absolute path: give a host path such as /srv/data",
                mount.source
            )));
        }
    }
    // Swarm expands these when it makes each task; a placeholder it can't expand would leave
    // every task rejected, so the spec is refused instead.
    template::check(&container.hostname).map_err(|error| error.in_field("hostname"))?;
    for entry in &container.env {
        template::check(entry).map_err(|error| error.in_field("environment"))?;
    }
    for mount in &container.mounts {
        template::check(&mount.source).map_err(|error| error.in_field("mount source"))?;
        template::check(&mount.target).map_err(|error| error.in_field("mount target"))?;
    }
    Ok(())
}

/// Limits and reservations: none negative, and no reservation above its limit (a task reserving
/// more than it may use could never be given what it reserves).
pub fn resources_rule(resources: &ResourceRequirements) -> Result<(), SpecError> {
    for (which, resources) in [
        ("limit", resources.limits.as_ref()),
        ("reservation", resources.reservations.as_ref()),
    ] {
        let Some(resources) = resources else { continue };
        if resources.nano_cpus < 0 || resources.memory_bytes < 0 {
            return Err(rule(format!(
                "a negative CPU or memory {which}: give 0 (none) or more"
            )));
        }
    }
    if let (Some(limits), Some(reservations)) = (&resources.limits, &resources.reservations) {
        if limits.memory_bytes > 0 && reservations.memory_bytes > limits.memory_bytes {
            return Err(rule(format!(
                "the memory reservation ({} bytes) is larger than the memory limit ({} bytes): reserve at most the limit, or raise the limit",
                reservations.memory_bytes, limits.memory_bytes
            )));
        }
        if limits.nano_cpus > 0 && reservations.nano_cpus > limits.nano_cpus {
            return Err(rule(format!(
                "the CPU reservation ({}) is larger than the CPU limit ({}): reserve at most the limit, or raise the limit",
                cpus(reservations.nano_cpus),
                cpus(limits.nano_cpus)
            )));
        }
    }
    Ok(())
}

/// Nano-CPUs as a decimal number of CPUs, without trailing zeros.
fn cpus(nano_cpus: i64) -> String {
    let whole = nano_cpus / 1_000_000_000;
    let fraction = nano_cpus % 1_000_000_000;
    if fraction == 0 {
        return whole.to_string();
    }
    format!("{whole}.{}", format!("{fraction:09}").trim_end_matches('0'))
}

/// An update or rollback config: durations of 0 or more, a ratio between 0 and 1, and no
/// rollback of a rollback.
fn update_config_rule(which: &str, config: Option<&UpdateConfig>) -> Result<(), SpecError> {
    let Some(config) = config else {
        return Ok(());
    };
    for (setting, duration) in [("delay", &config.delay), ("monitor", &config.monitor)] {
        if duration
            .as_ref()
            .is_some_and(|duration| Duration::try_from(*duration).is_err())
        {
            return Err(rule(format!(
                "a negative {which} {setting}: give 0 or more, e.g. --{which}-{setting} 5s"
            )));
        }
    }
    if !(0.0..=1.0).contains(&config.max_failure_ratio) {
        return Err(rule(format!(
            "{which} max failure ratio {} is out of range: give a share between 0 and 1, e.g. 0.2",
            config.max_failure_ratio
        )));
    }
    if which == "rollback" {
        rollback_failure_action_rule(config.failure_action())?;
    }
    Ok(())
}

/// A rollback config's failure action: a rollback can't itself fail over to a rollback.
pub fn rollback_failure_action_rule(action: update_config::FailureAction) -> Result<(), SpecError> {
    if action == update_config::FailureAction::Rollback {
        return Err(rule(
            "a rollback can't itself roll back on failure: use pause or continue".to_owned(),
        ));
    }
    Ok(())
}

/// Secrets or configs, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    Secret,
    Config,
}

impl PayloadKind {
    pub fn noun(self) -> &'static str {
        match self {
            PayloadKind::Secret => "secret",
            PayloadKind::Config => "config",
        }
    }
}

/// A secret's or config's name and data: Docker's names, some data, at most 500 KiB.
pub fn payload(kind: PayloadKind, name: &str, data: &[u8]) -> Result<(), SpecError> {
    let noun = kind.noun();
    if name.is_empty() {
        return Err(rule(format!(
            "a {noun} needs a name: 'shoal {noun} create NAME FILE'"
        )));
    }
    let edges_ok = name
        .chars()
        .next()
        .zip(name.chars().last())
        .is_some_and(|(first, last)| first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric());
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.len() > MAX_PAYLOAD_NAME_LENGTH || !edges_ok || !chars_ok {
        return Err(rule(format!(
            "invalid {noun} name {name:?}: use up to {MAX_PAYLOAD_NAME_LENGTH} letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        )));
    }
    if data.is_empty() {
        return Err(rule(format!(
            "{noun} {name} has no data: give a file (or - for standard input) that is not empty"
        )));
    }
    payload_size(kind, name, data.len() as u64)
}

/// A secret's or config's size alone, for a client that knows a file's size before reading it.
pub fn payload_size(kind: PayloadKind, name: &str, bytes: u64) -> Result<(), SpecError> {
    if bytes > MAX_PAYLOAD_BYTES as u64 {
        return Err(rule(format!(
            "{} {name} is {bytes} bytes, over the limit of {MAX_PAYLOAD_BYTES} (500 KiB): keep large files in an image or a volume",
            kind.noun()
        )));
    }
    Ok(())
}

/// A network spec: a name.
pub fn network_spec(spec: &NetworkSpec) -> Result<(), SpecError> {
    let name = spec
        .annotations
        .as_ref()
        .map_or("", |annotations| annotations.name.as_str());
    if name.trim().is_empty() {
        return Err(rule(
            "a network needs a name: give one, as in 'networks: {backend: {}}'".to_owned(),
        ));
    }
    Ok(())
}

/// Cluster settings: a dispatcher heartbeat of at least 100 ms, a task history of 0 or more.
pub fn cluster_spec(spec: &ClusterSpec) -> Result<(), SpecError> {
    if let Some(heartbeat) = spec
        .dispatcher
        .as_ref()
        .and_then(|dispatcher| dispatcher.heartbeat_period.as_ref())
    {
        let Ok(period) = Duration::try_from(*heartbeat) else {
            return Err(rule(format!(
                "a negative dispatcher heartbeat: give {MIN_DISPATCHER_HEARTBEAT:?} or more"
            )));
        };
        if period < MIN_DISPATCHER_HEARTBEAT {
            return Err(rule(format!(
                "dispatcher heartbeat {period:?} is too short: give {MIN_DISPATCHER_HEARTBEAT:?} or more"
            )));
        }
    }
    if spec
        .orchestration
        .as_ref()
        .is_some_and(|orchestration| orchestration.task_history_retention_limit < 0)
    {
        return Err(rule(
            "a negative task history limit: give 0 or more".to_owned(),
        ));
    }
    Ok(())
}

/// The address pools overlay subnets are cut from, and the subnets' size (0 means Swarm's
/// default, /24): IPv4 networks in CIDR form (the allocator hands out IPv4 addresses only), each
/// no smaller than the subnets cut from it, which are at most /29 (Docker's limit).
pub fn address_pools(pools: &[String], subnet_size: u32) -> Result<(), SpecError> {
    let size = if subnet_size == 0 {
        crate::defaults::SUBNET_SIZE
    } else {
        subnet_size
    };
    if size > MAX_SUBNET_SIZE {
        return Err(rule(format!(
            "invalid subnet size /{size}: give a mask length from 1 to {MAX_SUBNET_SIZE}, e.g. 24"
        )));
    }
    for pool in pools {
        let Some((address, prefix)) = pool.trim().split_once('/') else {
            return Err(rule(format!(
                "invalid address pool {pool:?}: give an IPv4 network in CIDR form such as 10.20.0.0/16"
            )));
        };
        if address.parse::<Ipv4Addr>().is_err() {
            return Err(rule(format!(
                "invalid address pool {pool:?}: give an IPv4 network in CIDR form such as 10.20.0.0/16 (IPv6 pools are not supported)"
            )));
        }
        let prefix: u32 = match prefix.parse() {
            Ok(prefix @ 0..=32) => prefix,
            _ => {
                return Err(rule(format!(
                    "invalid address pool {pool:?}: the prefix length must be from 0 to 32, as in 10.20.0.0/16"
                )));
            }
        };
        if prefix > size {
            return Err(rule(format!(
                "invalid address pool {pool:?}: it is smaller than the /{size} subnets cut from it; give a larger pool or a larger mask length"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use shoal_proto::api;

    use super::*;

    fn service(resources: Option<ResourceRequirements>, hostname: &str) -> ServiceSpec {
        ServiceSpec {
            annotations: Some(api::Annotations {
                name: "web".into(),
                ..Default::default()
            }),
            mode: Some(api::service_spec::Mode::Global(Default::default())),
            task: Some(api::TaskSpec {
                runtime: Some(task_spec::Runtime::Container(api::ContainerSpec {
                    image: "busybox".into(),
                    hostname: hostname.into(),
                    ..Default::default()
                })),
                resources,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn resources(
        limit_memory: i64,
        reserve_memory: i64,
        limit_cpu: i64,
        reserve_cpu: i64,
    ) -> ResourceRequirements {
        ResourceRequirements {
            limits: Some(api::Resources {
                nano_cpus: limit_cpu,
                memory_bytes: limit_memory,
                ..Default::default()
            }),
            reservations: Some(api::Resources {
                nano_cpus: reserve_cpu,
                memory_bytes: reserve_memory,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn reservations_stay_within_limits() {
        assert!(service_spec(&service(Some(resources(64, 64, 2, 1)), "")).is_ok());
        assert!(service_spec(&service(Some(resources(0, 64, 0, 5)), "")).is_ok());
        assert_eq!(
            service_spec(&service(Some(resources(64, 65, 0, 0)), ""))
                .unwrap_err()
                .to_string(),
            "the memory reservation (65 bytes) is larger than the memory limit (64 bytes): reserve at most the limit, or raise the limit"
        );
        assert_eq!(
            resources_rule(&resources(0, 0, 500_000_000, 1_250_000_000))
                .unwrap_err()
                .to_string(),
            "the CPU reservation (1.25) is larger than the CPU limit (0.5): reserve at most the limit, or raise the limit"
        );
    }

    #[test]
    fn templates_are_checked_in_hostnames_env_and_mounts() {
        assert!(service_spec(&service(None, "{{.Node.Platform.OS}}-{{- .Task.Slot -}}")).is_ok());
        let error = service_spec(&service(None, "{{.Task.Colour}}")).unwrap_err();
        assert!(
            error.to_string().starts_with(
                "hostname: invalid template \"{{.Task.Colour}}\": unknown placeholder"
            ),
            "{error}"
        );
    }

    #[test]
    fn payloads_are_named_and_bounded() {
        assert!(payload(PayloadKind::Secret, "db.pw", b"x").is_ok());
        assert!(payload(PayloadKind::Config, "-x", b"x").is_err());
        assert!(payload(PayloadKind::Config, "x", b"").is_err());
        assert!(payload(PayloadKind::Secret, "big", &vec![0; MAX_PAYLOAD_BYTES]).is_ok());
        assert_eq!(
            payload(PayloadKind::Secret, "big", &vec![0; MAX_PAYLOAD_BYTES + 1])
                .unwrap_err()
                .to_string(),
            "secret big is 512001 bytes, over the limit of 512000 (500 KiB): keep large files in an image or a volume"
        );
    }

    #[test]
    fn address_pools_follow_docker() {
        let pools = |list: &[&str]| list.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        assert!(address_pools(&pools(&["10.0.0.0/8"]), 0).is_ok());
        assert!(address_pools(&pools(&["10.20.0.0/16", "10.30.0.0/16"]), 26).is_ok());
        assert!(address_pools(&pools(&["10.20.0.0/16"]), 29).is_ok());
        assert!(address_pools(&pools(&["10.0.0.0/4"]), 4).is_ok());
        let message =
            |list: &[&str], size| address_pools(&pools(list), size).unwrap_err().to_string();
        assert!(message(&["10.0.0.0/8"], 30).contains("from 1 to 29"));
        assert!(message(&["10.20.0.0/16"], 12).contains("smaller than the /12 subnets"));
        assert!(message(&["10.20.0.0/25"], 0).contains("smaller than the /24 subnets"));
        assert!(message(&["fd00::/8"], 24).contains("IPv6 pools are not supported"));
        assert!(message(&["10.20.0.0"], 24).contains("CIDR form"));
        assert!(message(&["10.20.0.0/33"], 24).contains("from 0 to 32"));
    }

    #[test]
    fn cluster_settings() {
        let heartbeat = |seconds, nanos| ClusterSpec {
            dispatcher: Some(api::DispatcherConfig {
                heartbeat_period: Some(api::Duration { seconds, nanos }),
            }),
            ..Default::default()
        };
        assert!(cluster_spec(&heartbeat(1, 0)).is_ok());
        assert!(
            cluster_spec(&heartbeat(0, 50_000_000))
                .unwrap_err()
                .to_string()
                .contains("too short")
        );
        assert!(cluster_spec(&heartbeat(-1, 0)).is_err());
    }
}
