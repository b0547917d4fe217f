//! The rules every spec the cluster stores must follow: services (with their networks, DNS
//! settings, hosts entries and endpoint, whose ports `ports::check_ports` checks), networks,
//! secrets, configs, cluster settings and the address pools of `swarm init`. The manager calls
//! these on every write path; clients call them to fail early with the same message.

use std::net::Ipv4Addr;
use std::time::Duration;

use shoal_proto::api::{
    ClusterSpec, ContainerSpec, EndpointSpec, NetworkSpec, ResourceRequirements, ServiceSpec,
    UpdateConfig, endpoint_spec, mount, port_config, task_spec, update_config,
};

use crate::{SpecError, linux, template};

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
    name_resolution_rule(container)?;
    linux_rule(container)?;
    for attachment in task.networks.iter().chain(&spec.networks) {
        crate::network::check_attachment(attachment)?;
    }
    service_endpoint(spec)
}

/// A service's endpoint: its ports (`ports::check_ports`) and, in `dnsrr` mode, none published
/// through the routing mesh. Part of [`service_spec`]; compose calls it alone for a file's
/// `ports:`.
pub fn service_endpoint(spec: &ServiceSpec) -> Result<(), SpecError> {
    endpoint_rule(spec.endpoint.as_ref())?;
    crate::ports::check_ports(spec)
}

/// The container's Linux settings by `linux`'s lists: capability names, sysctls of the
/// container's own namespaces, ulimit names and values. The engine refuses any other, so every
/// task would be rejected; the spec is refused instead.
fn linux_rule(container: &ContainerSpec) -> Result<(), SpecError> {
    for name in container
        .capability_add
        .iter()
        .chain(&container.capability_drop)
    {
        linux::capability_name(name)?;
    }
    for name in container.sysctls.keys() {
        linux::sysctl_name(name)?;
    }
    for ulimit in &container.ulimits {
        let name = linux::ulimit_name(&ulimit.name)?;
        linux::ulimit_values(
            &name,
            linux::rlimit_value(ulimit.soft),
            linux::rlimit_value(ulimit.hard),
        )?;
    }
    Ok(())
}

/// The container's DNS settings and hosts entries, as the flags and compose take them.
fn name_resolution_rule(container: &ContainerSpec) -> Result<(), SpecError> {
    if let Some(config) = container.dns_config.as_ref() {
        crate::dns::check_dns_config(config)?;
    }
    for entry in &container.hosts {
        crate::dns::check_host_entry(entry)?;
    }
    Ok(())
}

/// A port published through the routing mesh needs the service's VIP, which `dnsrr` mode does
/// not have (Swarm's rule); a port published on the host needs none.
fn endpoint_rule(endpoint: Option<&EndpointSpec>) -> Result<(), SpecError> {
    let Some(endpoint) = endpoint else {
        return Ok(());
    };
    if endpoint.mode() == endpoint_spec::ResolutionMode::Dnsrr
        && let Some(port) = endpoint
            .ports
            .iter()
            .find(|port| port.publish_mode() == port_config::PublishMode::Ingress)
    {
        return Err(rule(format!(
            "port {} is published through the routing mesh (ingress mode), which dnsrr endpoint mode can't serve: publish it with mode=host, or use --endpoint-mode vip",
            crate::ports::describe(port)
        )));
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
    if !failure_ratio_in_range(config.max_failure_ratio) {
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

/// Whether a max failure ratio is a share of the update's tasks: from 0 to 1.
fn failure_ratio_in_range<Ratio: PartialOrd + From<u8>>(ratio: Ratio) -> bool {
    (Ratio::from(0)..=Ratio::from(1)).contains(&ratio)
}

/// A max failure ratio as a flag or compose file writes it: the share of an update's tasks that
/// may fail, from 0 to 1. Generic over the float it is read into, so the CLI reads the spec's
/// `f32` directly and compose keeps the `f64` it prints back.
pub fn max_failure_ratio<Ratio>(text: &str) -> Result<Ratio, SpecError>
where
    Ratio: std::str::FromStr + PartialOrd + From<u8> + Copy,
{
    text.trim()
        .parse::<Ratio>()
        .ok()
        .filter(|ratio| failure_ratio_in_range(*ratio))
        .ok_or_else(|| {
            rule(format!(
                "invalid max failure ratio {text:?}: give a share between 0 and 1, e.g. 0.2"
            ))
        })
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

/// The names Docker keeps for its own local networks; a swarm network can't take them.
pub const PREDEFINED_NETWORK_NAMES: [&str; 3] = ["bridge", "host", "none"];

/// A network name as Docker allows it: a letter or digit, then letters, digits, '_', '.' or
/// '-'; not one of Docker's predefined networks.
pub fn network_name(name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(rule(
            "a network needs a name: give one, as in 'shoal network create -d overlay backend'"
                .to_owned(),
        ));
    }
    let starts_well = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    let characters_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !starts_well || !characters_ok {
        return Err(rule(format!(
            "invalid network name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )));
    }
    if PREDEFINED_NETWORK_NAMES.contains(&name) {
        return Err(rule(format!(
            "network name {name:?} is taken by Docker's predefined {name} network: choose another name"
        )));
    }
    Ok(())
}

/// A network spec: Docker's name rules, the overlay driver, options shoal understands with
/// valid values (Docker accepts any option and fails later, or silently ignores a misspelt
/// `encrypted`; here both are refused up front), IPv4 only, and IPAM configs whose subnet,
/// range and gateway are CIDRs and addresses that fit inside each other.
pub fn network_spec(spec: &NetworkSpec) -> Result<(), SpecError> {
    use crate::network::{self, Subnet};

    let annotations = spec.annotations.clone().unwrap_or_default();
    network_name(&annotations.name)?;
    let name = annotations.name.as_str();
    if annotations.labels.keys().any(|key| key.trim().is_empty()) {
        return Err(rule(format!(
            "network {name} has a label with an empty key: give labels as key=value"
        )));
    }
    let driver = spec.driver_config.clone().unwrap_or_default();
    if !driver.name.is_empty() && driver.name != network::OVERLAY_DRIVER {
        return Err(rule(format!(
            "network driver {:?} is not supported: swarm networks use the {} driver (-d {})",
            driver.name,
            network::OVERLAY_DRIVER,
            network::OVERLAY_DRIVER
        )));
    }
    let mut options: Vec<(&String, &String)> = driver.options.iter().collect();
    options.sort();
    for (option, value) in options {
        network_option(option, value)?;
    }
    if spec.ingress && spec.attachable {
        return Err(rule(format!(
            "network {name} is the ingress network, which only the routing mesh uses: leave out --attachable"
        )));
    }
    if spec.ipv6_enabled {
        return Err(rule(format!(
            "network {name} asks for IPv6, which overlay networks do not support: leave out --ipv6 (enable_ipv6)"
        )));
    }
    let Some(ipam) = spec.ipam.as_ref() else {
        return Ok(());
    };
    let ipam_driver = ipam
        .driver
        .as_ref()
        .map_or("", |driver| driver.name.as_str());
    if !ipam_driver.is_empty() && ipam_driver != network::DEFAULT_IPAM_DRIVER {
        return Err(rule(format!(
            "IPAM driver {ipam_driver:?} is not supported: leave it out, or use {}",
            network::DEFAULT_IPAM_DRIVER
        )));
    }
    let mut subnets: Vec<Subnet> = Vec::new();
    for config in &ipam.configs {
        if config.subnet.is_empty() {
            if !config.range.is_empty() || !config.gateway.is_empty() {
                return Err(rule(
                    "an IP range or gateway needs its subnet: give --subnet with --ip-range and --gateway"
                        .to_owned(),
                ));
            }
            continue;
        }
        let subnet = Subnet::parse(&config.subnet, "subnet")?;
        if subnet.prefix_len() > network::MAX_NETWORK_PREFIX {
            return Err(rule(format!(
                "subnet {subnet} is too small for a network: give a prefix length of at most /{}",
                network::MAX_NETWORK_PREFIX
            )));
        }
        if let Some(other) = subnets.iter().find(|other| other.overlaps(subnet)) {
            return Err(rule(format!(
                "subnet {subnet} overlaps subnet {other} of the same network: give subnets that do not overlap"
            )));
        }
        if !config.range.is_empty() {
            let range = Subnet::parse(&config.range, "ip range")?;
            if !subnet.covers(range) {
                return Err(rule(format!(
                    "ip range {range} is not inside subnet {subnet}: give a range within the subnet"
                )));
            }
        }
        if !config.gateway.is_empty() {
            let gateway: Ipv4Addr = config.gateway.parse().map_err(|_| {
                rule(format!(
                    "invalid gateway {:?}: give an IPv4 address without a prefix length, such as 10.0.9.1",
                    config.gateway
                ))
            })?;
            if !subnet.contains(gateway) {
                return Err(rule(format!(
                    "gateway {gateway} is not inside subnet {subnet}: give an address within the subnet"
                )));
            }
            if gateway == subnet.network() || gateway == subnet.broadcast() {
                return Err(rule(format!(
                    "gateway {gateway} is the network or broadcast address of subnet {subnet}: give a host address such as the first one"
                )));
            }
        }
        subnets.push(subnet);
    }
    Ok(())
}

/// One driver option of a network: a name shoal knows, with a value it can use.
fn network_option(option: &str, value: &str) -> Result<(), SpecError> {
    use crate::network;

    match option {
        network::ENCRYPTED_OPTION => {
            if !matches!(value, "" | "true") {
                return Err(rule(format!(
                    "option {option}={value:?}: give --opt encrypted (or encrypted=true); leave it out for a network that is not encrypted"
                )));
            }
        }
        network::MTU_OPTION => {
            let valid = value
                .parse::<u32>()
                .is_ok_and(|mtu| (network::MIN_MTU..=network::MAX_MTU).contains(&mtu));
            if !valid {
                return Err(rule(format!(
                    "option {option}={value:?}: give the underlay MTU as a whole number from {} to {}, such as 1500",
                    network::MIN_MTU,
                    network::MAX_MTU
                )));
            }
        }
        network::VXLAN_ID_LIST_OPTION => {
            let valid = value.split(',').all(|vni| {
                vni.trim()
                    .parse::<u32>()
                    .is_ok_and(|vni| (1..=network::MAX_VNI).contains(&vni))
            });
            if !valid {
                return Err(rule(format!(
                    "option {option}={value:?}: give VXLAN ids from 1 to {}, comma separated, such as 4097",
                    network::MAX_VNI
                )));
            }
        }
        unknown => {
            return Err(rule(format!(
                "unknown network option {unknown:?}: use {}",
                network::DRIVER_OPTIONS.join(", ")
            )));
        }
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
/// default, /24): IPv4 networks in CIDR form with no host bits set (the allocator hands out IPv4
/// addresses only; `network::Subnet::parse` reads them, as it reads every subnet), each
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
        let prefix =
            u32::from(crate::network::Subnet::parse(pool.trim(), "address pool")?.prefix_len());
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

    #[test]
    fn max_failure_ratios_are_shares_from_0_to_1_whatever_float_reads_them() {
        assert_eq!(max_failure_ratio::<f32>("0.25"), Ok(0.25));
        assert_eq!(max_failure_ratio::<f64>(" 1 "), Ok(1.0));
        assert_eq!(max_failure_ratio::<f64>("0"), Ok(0.0));
        for refused in ["2", "-0.1", "NaN", "a lot", ""] {
            assert_eq!(
                max_failure_ratio::<f32>(refused).map_err(|error| error.to_string()),
                Err(format!(
                    "invalid max failure ratio {refused:?}: give a share between 0 and 1, e.g. 0.2"
                ))
            );
        }
    }

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
                resources: resources.map(Box::new),
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

    /// What the engine would refuse at every task's start (issue 13's class: a spec stored, then
    /// each task rejected) is refused when the spec is written, with `linux`'s messages.
    #[test]
    fn linux_settings_are_checked_by_linuxs_lists() {
        let with = |change: &dyn Fn(&mut api::ContainerSpec)| {
            let mut spec = service(None, "");
            if let Some(task_spec::Runtime::Container(container)) =
                spec.task.as_mut().and_then(|task| task.runtime.as_mut())
            {
                change(container);
            }
            service_spec(&spec).map_err(|error| error.to_string())
        };
        let ulimit = |soft, hard| api::container_spec::Ulimit {
            name: "NOFILE".into(),
            soft,
            hard,
        };
        assert_eq!(
            with(&|container| {
                container.capability_add = vec!["net_admin".into(), "ALL".into()];
                container.sysctls = [("net.core.somaxconn".into(), "1024".into())].into();
                container.ulimits = vec![ulimit(1024, -1)];
            }),
            Ok(())
        );
        let refused = [
            (
                with(&|container| container.capability_drop = vec!["NET_ADMINN".into()]),
                linux::capability_name("NET_ADMINN"),
            ),
            (
                with(&|container| {
                    container.sysctls = [("vm.swappiness".into(), "1".into())].into();
                }),
                linux::sysctl_name("vm.swappiness").map(|()| String::new()),
            ),
            (
                with(&|container| container.ulimits = vec![ulimit(-1, 1024)]),
                linux::ulimit_values("nofile", u64::MAX, 1024).map(|()| String::new()),
            ),
        ];
        for (got, expected) in refused {
            assert_eq!(got, Err(expected.unwrap_err().to_string()));
        }
    }

    #[test]
    fn networking_settings_are_checked() {
        let mut spec = service(None, "");
        let task = spec.task.as_mut().unwrap();
        task.networks.push(api::NetworkAttachmentConfig {
            target: "n1".into(),
            aliases: vec!["api".into()],
            ..Default::default()
        });
        let Some(task_spec::Runtime::Container(container)) = task.runtime.as_mut() else {
            unreachable!()
        };
        container.hosts = vec!["10.0.0.5 db".into()];
        container.dns_config = Some(Box::new(api::container_spec::DnsConfig {
            nameservers: vec!["10.0.0.2".into()],
            search: vec!["example.com".into()],
            options: vec!["ndots:2".into()],
        }));
        assert!(service_spec(&spec).is_ok());

        let mut bad_host = spec.clone();
        if let Some(task_spec::Runtime::Container(container)) =
            bad_host.task.as_mut().unwrap().runtime.as_mut()
        {
            container.hosts = vec!["db:10.0.0.5".into()];
        }
        assert!(
            service_spec(&bad_host)
                .unwrap_err()
                .to_string()
                .contains("invalid hosts entry")
        );
        let mut bad_alias = spec.clone();
        bad_alias.task.as_mut().unwrap().networks[0].aliases = vec![String::new()];
        assert!(
            service_spec(&bad_alias)
                .unwrap_err()
                .to_string()
                .contains("invalid alias")
        );

        let port = |mode: port_config::PublishMode| api::PortConfig {
            published_port: 8080,
            target_port: 80,
            publish_mode: mode as i32,
            ..Default::default()
        };
        let mut dnsrr = spec.clone();
        dnsrr.endpoint = Some(EndpointSpec {
            mode: endpoint_spec::ResolutionMode::Dnsrr as i32,
            ports: vec![port(port_config::PublishMode::Host)],
        });
        assert!(service_spec(&dnsrr).is_ok());
        dnsrr.endpoint.as_mut().unwrap().ports = vec![port(port_config::PublishMode::Ingress)];
        assert!(
            service_spec(&dnsrr)
                .unwrap_err()
                .to_string()
                .starts_with("port 8080:80/tcp is published through the routing mesh")
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
        assert!(address_pools(&pools(&["16.0.0.0/4"]), 4).is_ok());
        let message =
            |list: &[&str], size| address_pools(&pools(list), size).unwrap_err().to_string();
        assert!(message(&["10.0.0.0/8"], 30).contains("from 1 to 29"));
        assert!(message(&["10.20.0.0/16"], 12).contains("smaller than the /12 subnets"));
        assert!(message(&["10.20.0.0/25"], 0).contains("smaller than the /24 subnets"));
        assert!(message(&["fd00::/8"], 24).contains("IPv6 is not supported"));
        assert!(message(&["10.20.0.0"], 24).contains("CIDR form"));
        assert!(message(&["10.20.0.0/33"], 24).contains("prefix length 0 to 32"));
        assert!(message(&["10.20.0.5/16"], 24).contains("host bits set"));
    }

    fn network(name: &str) -> NetworkSpec {
        NetworkSpec {
            annotations: Some(api::Annotations {
                name: name.into(),
                ..Default::default()
            }),
            driver_config: Some(api::Driver {
                name: "overlay".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_option(option: &str, value: &str) -> NetworkSpec {
        let mut spec = network("net");
        spec.driver_config
            .as_mut()
            .unwrap()
            .options
            .insert(option.into(), value.into());
        spec
    }

    fn with_pool(subnet: &str, range: &str, gateway: &str) -> NetworkSpec {
        let mut spec = network("net");
        spec.ipam = Some(api::IpamOptions {
            driver: None,
            configs: vec![api::IpamConfig {
                subnet: subnet.into(),
                range: range.into(),
                gateway: gateway.into(),
                ..Default::default()
            }],
        });
        spec
    }

    fn network_error(spec: &NetworkSpec) -> String {
        network_spec(spec).unwrap_err().to_string()
    }

    #[test]
    fn network_names_follow_docker() {
        for name in ["backend", "app_default", "a", "web.v2-x", "9lives"] {
            assert!(network_spec(&network(name)).is_ok(), "{name}");
        }
        assert!(network_error(&network("")).contains("a network needs a name"));
        for name in ["-x", ".x", "has space", "x/y", "ü"] {
            assert!(
                network_error(&network(name)).contains("invalid network name"),
                "{name}"
            );
        }
        assert!(network_error(&network("host")).contains("predefined host network"));
        let mut labelled = network("net");
        labelled
            .annotations
            .as_mut()
            .unwrap()
            .labels
            .insert(" ".into(), "x".into());
        assert!(network_error(&labelled).contains("label with an empty key"));
    }

    #[test]
    fn networks_use_the_overlay_driver_and_ipv4_only() {
        let mut no_driver = network("net");
        no_driver.driver_config = None;
        assert!(network_spec(&no_driver).is_ok());
        let mut bridge = network("net");
        bridge.driver_config.as_mut().unwrap().name = "bridge".into();
        assert_eq!(
            network_error(&bridge),
            "network driver \"bridge\" is not supported: swarm networks use the overlay driver (-d overlay)"
        );
        let mut attachable_ingress = network("net");
        attachable_ingress.ingress = true;
        assert!(network_spec(&attachable_ingress).is_ok());
        attachable_ingress.attachable = true;
        assert!(network_error(&attachable_ingress).contains("leave out --attachable"));
        assert!(network_spec(&crate::defaults::ingress_network_spec(true)).is_ok());
        let mut ipv6 = network("net");
        ipv6.ipv6_enabled = true;
        assert!(network_error(&ipv6).contains("IPv6"));
        let mut ipam_driver = with_pool("10.1.0.0/24", "", "");
        ipam_driver.ipam.as_mut().unwrap().driver = Some(api::Driver {
            name: "infoblox".into(),
            ..Default::default()
        });
        assert!(network_error(&ipam_driver).contains("IPAM driver \"infoblox\" is not supported"));
    }

    #[test]
    fn network_options_are_known_names_with_valid_values() {
        for (option, value) in [
            ("encrypted", ""),
            ("encrypted", "true"),
            ("com.docker.network.driver.mtu", "1500"),
            ("com.docker.network.driver.mtu", "68"),
            ("com.docker.network.driver.mtu", "65535"),
            ("com.docker.network.driver.overlay.vxlanid_list", "4097"),
            (
                "com.docker.network.driver.overlay.vxlanid_list",
                "4097,4098",
            ),
        ] {
            assert!(
                network_spec(&with_option(option, value)).is_ok(),
                "{option}={value}"
            );
        }
        assert!(network_error(&with_option("encrypted", "false")).contains("--opt encrypted"));
        for mtu in ["67", "65536", "1500b", "", "-1"] {
            assert!(
                network_error(&with_option("com.docker.network.driver.mtu", mtu))
                    .contains("whole number from 68 to 65535"),
                "{mtu}"
            );
        }
        assert!(
            network_error(&with_option(
                "com.docker.network.driver.overlay.vxlanid_list",
                "16777216"
            ))
            .contains("VXLAN ids from 1 to 16777215")
        );
        assert_eq!(
            network_error(&with_option("encrpyted", "")),
            "unknown network option \"encrpyted\": use encrypted, com.docker.network.driver.mtu, com.docker.network.driver.overlay.vxlanid_list"
        );
    }

    #[test]
    fn network_subnets_ranges_and_gateways_fit_together() {
        for (subnet, range, gateway) in [
            ("10.1.0.0/24", "", ""),
            ("10.1.0.0/16", "10.1.5.0/24", "10.1.0.1"),
            ("10.1.0.0/24", "10.1.0.128/25", "10.1.0.254"),
            ("10.1.0.0/30", "", "10.1.0.1"),
            ("", "", ""),
        ] {
            assert!(
                network_spec(&with_pool(subnet, range, gateway)).is_ok(),
                "{subnet} {range} {gateway}"
            );
        }
        for (subnet, range, gateway, expected) in [
            ("10.1.0.0", "", "", "CIDR form"),
            ("10.1.0.0/33", "", "", "prefix length 0 to 32"),
            (
                "10.1.0.5/24",
                "",
                "",
                "give the network itself, 10.1.0.0/24",
            ),
            ("fd00::/64", "", "", "IPv6 is not supported"),
            ("10.1.0.0/31", "", "", "at most /30"),
            (
                "10.1.0.0/24",
                "10.2.0.0/25",
                "",
                "ip range 10.2.0.0/25 is not inside subnet 10.1.0.0/24",
            ),
            ("10.1.0.0/24", "10.1.0.0/23", "", "is not inside subnet"),
            ("10.1.0.0/24", "10.1.0.0", "", "invalid ip range"),
            (
                "10.1.0.0/24",
                "",
                "10.2.0.1",
                "gateway 10.2.0.1 is not inside subnet 10.1.0.0/24",
            ),
            ("10.1.0.0/24", "", "10.1.0.1/24", "without a prefix length"),
            (
                "10.1.0.0/24",
                "",
                "10.1.0.0",
                "network or broadcast address",
            ),
            (
                "10.1.0.0/24",
                "",
                "10.1.0.255",
                "network or broadcast address",
            ),
            ("", "10.1.0.0/24", "", "needs its subnet"),
            ("", "", "10.1.0.1", "needs its subnet"),
        ] {
            let error = network_error(&with_pool(subnet, range, gateway));
            assert!(
                error.contains(expected),
                "{subnet} {range} {gateway}: {error}"
            );
        }
        let mut two = with_pool("10.1.0.0/16", "", "");
        two.ipam.as_mut().unwrap().configs.push(api::IpamConfig {
            subnet: "10.1.2.0/24".into(),
            ..Default::default()
        });
        assert!(network_error(&two).contains("overlaps subnet 10.1.0.0/16 of the same network"));
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
