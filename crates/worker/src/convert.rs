//! The pure translation of an assigned [`Task`] into the engine's [`ContainerSpec`]: container
//! name, labels, process, mounts, limits and healthcheck; and into the [`TaskNetworks`] the
//! node's overlay networking prepares for it ([`task_networks`]). Anything the engine can't
//! honour is refused with a [`WorkerError::TaskRejected`] rather than silently dropped, because
//! a task that runs differently from its spec is worse than one that visibly fails to start.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use engine::{ContainerSpec, HealthcheckSpec, MountSpec};
use shoal_proto::api;
use shoal_proto::api::ContainerSpec as TaskContainerSpec;

use crate::error::{Result, WorkerError};
use crate::networking::{
    DnsOptions, EndpointMode, HostPort, IngressPort, NetworkAttachment, TaskNetworks,
};
use spec::network::{ENCRYPTED_OPTION, MAX_VNI, Subnet, VXLAN_ID_LIST_OPTION};
use spec::template::{self, TemplateContext};

/// Label carrying the task id; re-adoption after a restart finds containers by it.
pub const LABEL_TASK_ID: &str = "com.docker.swarm.task.id";
/// Label carrying the task's name (`<service>.<slot>` or `<service>.<node id>`).
pub const LABEL_TASK_NAME: &str = "com.docker.swarm.task.name";
/// Label marking a container as a swarm task; its value is empty, as in Swarm.
pub const LABEL_TASK: &str = "com.docker.swarm.task";
/// Label carrying the service id.
pub const LABEL_SERVICE_ID: &str = "com.docker.swarm.service.id";
/// Label carrying the service name.
pub const LABEL_SERVICE_NAME: &str = "com.docker.swarm.service.name";
/// Label carrying the node id the task was assigned to.
pub const LABEL_NODE_ID: &str = "com.docker.swarm.node.id";

/// The contents of the secrets and configs the dispatcher sent with an assignment set, by id.
/// They live only in memory: the assignment store never writes them.
#[derive(Clone, Default, PartialEq)]
pub struct TaskPayloads {
    /// Secret id → secret data.
    pub secrets_by_id: BTreeMap<String, Vec<u8>>,
    /// Config id → config data.
    pub configs_by_id: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for TaskPayloads {
    // Lists ids only, so that a debug log of an assignment never prints secret data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskPayloads")
            .field("secret_ids", &self.secrets_by_id.keys().collect::<Vec<_>>())
            .field("config_ids", &self.configs_by_id.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The task's name as Swarm shows it: `<service>.<slot>` for replicated tasks and
/// `<service>.<node id>` for global ones (slot 0).
pub fn task_name(task: &api::Task) -> String {
    let service_name = task
        .service_annotations
        .as_ref()
        .map(|annotations| annotations.name.as_str())
        .filter(|name| !name.is_empty())
        .unwrap_or(task.service_id.as_str());
    if task.slot == 0 {
        format!("{service_name}.{}", task.node_id)
    } else {
        format!("{service_name}.{}", task.slot)
    }
}

/// The container name Swarm uses: `<service>.<slot>.<task id>`, or `<service>.<node id>.<task id>`
/// for global tasks.
pub fn container_name_for_task(task: &api::Task) -> String {
    format!("{}.{}", task_name(task), task.id)
}

/// Whether the task's container has a healthcheck that runs (not absent, not `NONE`). The
/// reconciler keeps such a task in STARTING until the container is first healthy, as Swarm does,
/// so that rolling updates wait for real readiness.
pub fn task_has_healthcheck(task: &api::Task) -> bool {
    match task_container_spec(task) {
        Some(container) => container.healthcheck.as_ref().is_some_and(|health| {
            matches!(
                health.test.first().map(String::as_str),
                Some("CMD" | "CMD-SHELL")
            )
        }),
        None => false,
    }
}

fn task_container_spec(task: &api::Task) -> Option<&TaskContainerSpec> {
    match task.spec.as_ref()?.runtime.as_ref()? {
        api::task_spec::Runtime::Container(container) => Some(container),
        _ => None,
    }
}

/// Converts an assigned task into the spec the engine creates its container from. Pure: the
/// same task and payloads always give the same spec.
pub fn container_spec_for_task(
    task: &api::Task,
    payloads: &TaskPayloads,
    node_hostname: &str,
) -> Result<ContainerSpec> {
    let reject = |reason: String| WorkerError::rejected(&task.id, reason);
    if task.id.is_empty() {
        return Err(reject("the task has no id".to_owned()));
    }
    let name = container_name_for_task(task);
    if !is_valid_container_name(&name) {
        return Err(reject(format!(
            "container name {name:?} is not valid: service names and ids may only hold letters, digits, '_', '.' and '-'"
        )));
    }
    let task_spec = task
        .spec
        .as_ref()
        .ok_or_else(|| reject("the task has no spec".to_owned()))?;
    let container = match task_spec.runtime.as_ref() {
        Some(api::task_spec::Runtime::Container(container)) => container,
        Some(api::task_spec::Runtime::Attachment(_)) => {
            return Err(reject(
                "network attachment tasks are not run by the worker's container reconciler"
                    .to_owned(),
            ));
        }
        Some(api::task_spec::Runtime::Generic(generic)) => {
            return Err(reject(format!(
                "generic runtime {:?} is not supported: only container tasks run on this node",
                generic.kind
            )));
        }
        None => return Err(reject("the task spec has no container spec".to_owned())),
    };
    if container.image.trim().is_empty() {
        return Err(reject("the container spec names no image".to_owned()));
    }
    refuse_unsupported_container_fields(container).map_err(reject)?;
    if !task_names_networks(task) {
        refuse_network_fields_without_networks(container).map_err(reject)?;
    }

    let mut spec = ContainerSpec {
        name: Some(name.clone()),
        image: container.image.clone(),
        entrypoint: (!container.command.is_empty()).then(|| container.command.clone()),
        command: container.args.clone(),
        env: container.env.clone(),
        user: non_empty(&container.user),
        workdir: non_empty(&container.dir),
        read_only_rootfs: container.read_only,
        stop_signal: non_empty(&container.stop_signal),
        init: container.init.unwrap_or(false),
        groups: container.groups.clone(),
        cap_add: container.capability_add.clone(),
        cap_drop: container.capability_drop.clone(),
        ulimits: container
            .ulimits
            .iter()
            .map(|ulimit| engine::Ulimit {
                name: ulimit.name.clone(),
                soft: spec::linux::rlimit_value(ulimit.soft),
                hard: spec::linux::rlimit_value(ulimit.hard),
            })
            .collect(),
        sysctls: container
            .sysctls
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        ..ContainerSpec::default()
    };
    if let Some(grace) = &container.stop_grace_period {
        spec.stop_timeout = Some(duration_from_proto(grace, "stop grace period").map_err(reject)?);
    }
    if let Some(limits) = task_spec
        .resources
        .as_ref()
        .and_then(|resources| resources.limits.as_ref())
    {
        spec.resources.nano_cpus = positive_limit(limits.nano_cpus, "CPU limit").map_err(reject)?;
        spec.resources.memory_bytes =
            positive_limit(limits.memory_bytes, "memory limit").map_err(reject)?;
    }
    // Docker treats 0 as "no limit" and a negative value as "unlimited" too.
    if container.pid_limit > 0 {
        spec.resources.pids_limit = Some(container.pid_limit);
    }
    if let Some(health) = &container.healthcheck {
        spec.healthcheck = healthcheck_from_proto(health).map_err(reject)?;
    }
    // Swarm's placeholders ({{.Task.Slot}} and the like) in the hostname, the environment and
    // mount paths stand for this task and this node.
    let template = template_context(task, &name, node_hostname);
    let expand = |what: &str, text: &str| {
        template::expand(text, &template).map_err(|error| reject(error.in_field(what).to_string()))
    };
    spec.hostname = container_hostname(task, container, node_hostname)?;
    spec.env = spec
        .env
        .iter()
        .map(|entry| expand("environment", entry))
        .collect::<Result<_>>()?;
    for (index, mount) in container.mounts.iter().enumerate() {
        let mount = api::Mount {
            source: expand("mount source", &mount.source)?,
            target: expand("mount target", &mount.target)?,
            ..mount.clone()
        };
        spec.mounts
            .push(mount_from_proto(&task.id, index, &mount).map_err(reject)?);
    }
    for secret in &container.secrets {
        spec.mounts
            .push(secret_mount(secret, payloads).map_err(reject)?);
    }
    for config in &container.configs {
        if let Some(mount) = config_mount(config, payloads).map_err(reject)? {
            spec.mounts.push(mount);
        }
    }

    // User labels first, so that the swarm labels written after them can't be spoofed by a spec.
    spec.labels = container
        .labels
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let service_name = task
        .service_annotations
        .as_ref()
        .map(|annotations| annotations.name.clone())
        .unwrap_or_default();
    for (key, value) in [
        (LABEL_TASK, String::new()),
        (LABEL_TASK_ID, task.id.clone()),
        (LABEL_TASK_NAME, task_name(task)),
        (LABEL_SERVICE_ID, task.service_id.clone()),
        (LABEL_SERVICE_NAME, service_name),
        (LABEL_NODE_ID, task.node_id.clone()),
    ] {
        spec.labels.insert(key.to_owned(), value);
    }
    Ok(spec)
}

/// The hostname a task's container gets: the spec's, with Swarm's placeholders expanded. A task
/// on networks that gives none gets the first 12 characters of its id, so that the name is
/// known before the container exists and the task's /etc/hosts can hold it (Docker's default,
/// the container id's first 12, exists only once the container does). Without networks the
/// engine's default stands.
fn container_hostname(
    task: &api::Task,
    container: &TaskContainerSpec,
    node_hostname: &str,
) -> Result<Option<String>> {
    if container.hostname.is_empty() {
        return Ok(gets_networking(task).then(|| task.id.chars().take(12).collect()));
    }
    let template = template_context(task, &container_name_for_task(task), node_hostname);
    template::expand(&container.hostname, &template)
        .map(Some)
        .map_err(|error| WorkerError::rejected(&task.id, error.in_field("hostname").to_string()))
}

/// Whether the task's spec attaches it to any network.
fn task_names_networks(task: &api::Task) -> bool {
    !task.networks.is_empty()
        || task
            .spec
            .as_ref()
            .is_some_and(|spec| !spec.networks.is_empty())
}

/// Whether the node's networking gives the task its namespace: it is on a network, or publishes
/// a port on its host.
fn gets_networking(task: &api::Task) -> bool {
    task_names_networks(task) || host_ports(task).is_ok_and(|ports| !ports.is_empty())
}

/// What the node's networking needs to give the task its network namespace, names and
/// addresses, read from the task alone: `None` for a task on no network that publishes nothing
/// on its host. A task whose networks
/// were not allocated (no address, no subnet, no VXLAN id) is refused: the managers allocate
/// before they schedule, so such a task can't be made to work here.
pub fn task_networks(task: &api::Task, node_hostname: &str) -> Result<Option<TaskNetworks>> {
    let reject = |reason: String| WorkerError::rejected(&task.id, reason);
    let endpoint = task.endpoint.clone().unwrap_or_default();
    let host_ports = host_ports(task).map_err(reject)?;
    if !task_names_networks(task) && host_ports.is_empty() {
        return Ok(None);
    }
    if task.networks.is_empty() && task_names_networks(task) {
        return Err(reject(
            "the task names networks but carries no addresses on them: the managers did not \
             allocate it; check the service's networks with 'shoal network ls' and update the \
             service to recreate its tasks"
                .to_owned(),
        ));
    }
    let container = task_container_spec(task)
        .ok_or_else(|| reject("the task spec has no container spec".to_owned()))?;
    let endpoint_mode = match endpoint.spec.as_ref().map(|spec| spec.mode()) {
        Some(api::endpoint_spec::ResolutionMode::Dnsrr) => EndpointMode::DnsRoundRobin,
        Some(api::endpoint_spec::ResolutionMode::Vip) | None => EndpointMode::Vip,
    };
    let attachments = task
        .networks
        .iter()
        .map(|attachment| network_attachment(attachment, endpoint_mode, &endpoint.virtual_ips))
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(reject)?;
    let ingress_ports = ingress_ports(&endpoint.ports).map_err(reject)?;
    let dns = container.dns_config.clone().unwrap_or_default();
    let hostname = container_hostname(task, container, node_hostname)?.unwrap_or_default();
    Ok(Some(TaskNetworks {
        task_id: task.id.clone(),
        container_name: container_name_for_task(task),
        service_id: task.service_id.clone(),
        service_name: task
            .service_annotations
            .as_ref()
            .map(|annotations| annotations.name.clone())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| task.service_id.clone()),
        endpoint_mode,
        attachments,
        ingress_ports,
        host_ports,
        dns: DnsOptions {
            nameservers: dns.nameservers,
            search: dns.search,
            options: dns.options,
        },
        hosts: container.hosts.clone(),
        hostname,
    }))
}

/// A published or target port number as the task uses it: 1 to 65535.
fn port_number(value: u32, what: &str) -> std::result::Result<u16, String> {
    u16::try_from(value)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| {
            format!(
                "the service's {what} port {value} is not a port number from 1 to 65535: \
                 update the service's --publish"
            )
        })
}

/// The ports a task publishes on its own node (`mode=host`): what the node's networking serves
/// and the task's status reports. One given no number is left out: the managers choose numbers
/// for the mesh's ports only, and Docker's pick of a free host port is not done here.
pub(crate) fn host_published(task: &api::Task) -> impl Iterator<Item = &api::PortConfig> {
    task.endpoint
        .iter()
        .flat_map(|endpoint| &endpoint.ports)
        .filter(|port| {
            port.publish_mode() == api::port_config::PublishMode::Host && port.published_port != 0
        })
}

fn host_ports(task: &api::Task) -> std::result::Result<Vec<HostPort>, String> {
    host_published(task)
        .map(|port| {
            Ok(HostPort {
                protocol: port.protocol(),
                published: port_number(port.published_port, "published")?,
                target: port_number(port.target_port, "target")?,
            })
        })
        .collect()
}

/// The ports of an allocated endpoint published through the routing mesh (host-mode ones are
/// not the mesh's).
fn ingress_ports(ports: &[api::PortConfig]) -> std::result::Result<Vec<IngressPort>, String> {
    ports
        .iter()
        .filter(|port| port.publish_mode() == api::port_config::PublishMode::Ingress)
        .map(|port| {
            Ok(IngressPort {
                protocol: port.protocol(),
                published: port_number(port.published_port, "published")?,
                target: port_number(port.target_port, "target")?,
                policy: port.traffic_policy(),
            })
        })
        .collect()
}

/// The node's own leg on the ingress network, from the node's attachments as the managers gave
/// them (while a service publishes through the routing mesh): `None` without one, or why the
/// one given can't be used.
pub fn node_ingress_leg(
    node: &api::Node,
) -> Option<std::result::Result<NetworkAttachment, String>> {
    let attachment = node.attachments.iter().find(|attachment| {
        attachment
            .network
            .as_ref()
            .and_then(|network| network.spec.as_ref())
            .is_some_and(|spec| spec.ingress)
    })?;
    Some(network_attachment(
        attachment,
        EndpointMode::DnsRoundRobin,
        &[],
    ))
}

/// One network attachment as the allocator filled it: the task's address, and the subnet,
/// gateway and VXLAN id of the network it lies in.
fn network_attachment(
    attachment: &api::NetworkAttachment,
    endpoint_mode: EndpointMode,
    virtual_ips: &[api::endpoint::VirtualIp],
) -> std::result::Result<NetworkAttachment, String> {
    let network = attachment
        .network
        .as_ref()
        .ok_or_else(|| "a network attachment of the task names no network".to_owned())?;
    let spec = network.spec.clone().unwrap_or_default();
    let name = spec
        .annotations
        .as_ref()
        .map(|annotations| annotations.name.clone())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| network.id.clone());
    let not_allocated = |what: String| {
        format!(
            "network {name} is not allocated for this task ({what}): the managers allocate \
             networks before scheduling; check it with 'shoal network inspect {name}'"
        )
    };
    let address = attachment
        .addresses
        .first()
        .ok_or_else(|| not_allocated("the task has no address on it".to_owned()))?;
    let (ip, prefix) = address
        .split_once('/')
        .and_then(|(ip, prefix)| Some((ip.parse::<Ipv4Addr>().ok()?, prefix.parse::<u8>().ok()?)))
        .filter(|(_, prefix)| *prefix <= 32)
        .ok_or_else(|| {
            format!(
                "network {name}: the task's address {address:?} is not an IPv4 address with its \
                 prefix length, such as 10.0.1.5/24"
            )
        })?;
    let configs = network
        .ipam
        .as_ref()
        .map(|ipam| ipam.configs.as_slice())
        .unwrap_or_default();
    let (index, subnet) = configs
        .iter()
        .enumerate()
        .find_map(|(index, config)| {
            let subnet = Subnet::parse(&config.subnet, "subnet").ok()?;
            subnet.contains(ip).then_some((index, subnet))
        })
        .ok_or_else(|| not_allocated(format!("no subnet of it holds the address {address}")))?;
    if subnet.prefix_len() != prefix {
        return Err(format!(
            "network {name}: the task's address {address} does not carry the prefix of its subnet {subnet}"
        ));
    }
    let gateway: Ipv4Addr = configs[index]
        .gateway
        .parse()
        .map_err(|_| not_allocated(format!("subnet {subnet} has no gateway")))?;
    let vni = network
        .driver_state
        .as_ref()
        .and_then(|driver| driver.options.get(VXLAN_ID_LIST_OPTION))
        .and_then(|list| list.split(',').nth(index))
        .and_then(|vni| vni.trim().parse::<u32>().ok())
        .filter(|vni| (1..=MAX_VNI).contains(vni))
        .ok_or_else(|| not_allocated(format!("subnet {subnet} has no VXLAN id")))?;
    let virtual_ip = match endpoint_mode {
        EndpointMode::Vip => virtual_ips
            .iter()
            .find(|vip| vip.network_id == network.id)
            .map(|vip| vip.addr.clone()),
        EndpointMode::DnsRoundRobin => None,
    };
    Ok(NetworkAttachment {
        network_id: network.id.clone(),
        network_name: name,
        vni,
        gateway: format!("{gateway}/{prefix}"),
        address: address.clone(),
        internal: spec.internal,
        encrypted: spec
            .driver_config
            .as_ref()
            .is_some_and(|driver| driver.options.contains_key(ENCRYPTED_OPTION)),
        ingress: spec.ingress,
        aliases: attachment.aliases.clone(),
        virtual_ip,
    })
}

fn template_context(task: &api::Task, task_name: &str, node_hostname: &str) -> TemplateContext {
    let annotations = task.service_annotations.clone().unwrap_or_default();
    TemplateContext {
        service_id: task.service_id.clone(),
        service_name: annotations.name,
        service_labels: annotations.labels,
        node_id: task.node_id.clone(),
        node_hostname: node_hostname.to_owned(),
        node_platform_os: crate::agent::NODE_OS.to_owned(),
        node_platform_architecture: crate::agent::node_architecture().to_owned(),
        task_id: task.id.clone(),
        task_name: task_name.to_owned(),
        task_slot: task.slot.to_string(),
    }
}

fn is_valid_container_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric())
        && characters.all(|character| {
            character.is_ascii_alphanumeric() || matches!(character, '_' | '.' | '-')
        })
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn positive_limit(value: i64, what: &str) -> std::result::Result<Option<u64>, String> {
    match value {
        0 => Ok(None),
        negative if negative < 0 => Err(format!("{what} {negative} is negative")),
        positive => Ok(Some(positive as u64)),
    }
}

fn duration_from_proto(
    duration: &api::Duration,
    what: &str,
) -> std::result::Result<Duration, String> {
    Duration::try_from(*duration).map_err(|_| {
        format!(
            "{what} {}s {}ns is not a valid non-negative duration",
            duration.seconds, duration.nanos
        )
    })
}

fn duration_or_default(
    duration: Option<&api::Duration>,
    default: Duration,
    what: &str,
) -> std::result::Result<Duration, String> {
    match duration {
        Some(duration) => {
            let converted = duration_from_proto(duration, what)?;
            Ok(if converted.is_zero() {
                default
            } else {
                converted
            })
        }
        None => Ok(default),
    }
}

/// `--dns*` and `--host` shape the resolv.conf and hosts files the node's networking writes for
/// a task on networks ([`task_networks`]); a task on none has no resolver to reach, so they are
/// refused there rather than dropped.
fn refuse_network_fields_without_networks(
    container: &TaskContainerSpec,
) -> std::result::Result<(), String> {
    let dns = container.dns_config.clone().unwrap_or_default();
    let mut given = Vec::new();
    if !dns.nameservers.is_empty() || !dns.search.is_empty() || !dns.options.is_empty() {
        given.push("DNS settings");
    }
    if !container.hosts.is_empty() {
        given.push("extra hosts");
    }
    if given.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} need the task to be on a network: attach the service to an overlay network or remove them",
            given.join(" and ")
        ))
    }
}

/// Fields of the container spec the engine has no way to honour yet.
fn refuse_unsupported_container_fields(
    container: &TaskContainerSpec,
) -> std::result::Result<(), String> {
    let mut unsupported = Vec::new();
    if container.tty {
        unsupported.push("tty");
    }
    if container.open_stdin {
        unsupported.push("open_stdin");
    }
    if !container.oom_score_adj.is_empty() {
        unsupported.push("oom_score_adj");
    }
    if container.isolation == api::container_spec::Isolation::Hyperv as i32 {
        unsupported.push("isolation=hyperv");
    }
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "this node's engine does not support {}; remove them from the service spec",
            unsupported.join(", ")
        ))
    }
}

fn healthcheck_from_proto(
    health: &api::HealthConfig,
) -> std::result::Result<Option<HealthcheckSpec>, String> {
    let test = match health.test.split_first() {
        // An empty test inherits the image's healthcheck; the engine runs none from images.
        None => return Ok(None),
        Some((kind, rest)) => match kind.as_str() {
            "NONE" => return Ok(None),
            "CMD" if !rest.is_empty() => rest.to_vec(),
            "CMD-SHELL" if rest.len() == 1 => {
                vec!["/bin/sh".to_owned(), "-c".to_owned(), rest[0].clone()]
            }
            other => {
                return Err(format!(
                    "healthcheck test {other:?} with {} arguments is not valid: use [\"CMD\", program, args...], [\"CMD-SHELL\", command] or [\"NONE\"]",
                    rest.len()
                ));
            }
        },
    };
    if health.retries < 0 {
        return Err(format!(
            "healthcheck retries {} is negative",
            health.retries
        ));
    }
    Ok(Some(HealthcheckSpec {
        test,
        interval: duration_or_default(
            health.interval.as_ref(),
            spec::defaults::HEALTH_INTERVAL,
            "healthcheck interval",
        )?,
        timeout: duration_or_default(
            health.timeout.as_ref(),
            spec::defaults::HEALTH_TIMEOUT,
            "healthcheck timeout",
        )?,
        retries: if health.retries == 0 {
            spec::defaults::HEALTH_RETRIES
        } else {
            health.retries as u32
        },
        start_period: duration_or_default(
            health.start_period.as_ref(),
            Duration::ZERO,
            "healthcheck start period",
        )?,
    }))
}

fn mount_from_proto(
    task_id: &str,
    index: usize,
    mount: &api::Mount,
) -> std::result::Result<MountSpec, String> {
    use api::mount::Type;
    let target = mount.target.clone();
    if !target.starts_with('/') {
        return Err(format!("mount target {target:?} must be an absolute path"));
    }
    match Type::try_from(mount.r#type) {
        Ok(Type::Bind) => {
            if !mount.source.starts_with('/') {
                return Err(format!(
                    "bind mount source {:?} must be an absolute host path",
                    mount.source
                ));
            }
            if let Some(options) = &mount.bind_options
                && (options.propagation != api::mount::bind_options::Propagation::Rprivate as i32
                    || options.nonrecursive)
            {
                return Err(format!(
                    "bind mount {target:?}: only rprivate, recursive propagation is supported"
                ));
            }
            Ok(MountSpec::Bind {
                source: PathBuf::from(&mount.source),
                target,
                read_only: mount.readonly,
            })
        }
        Ok(Type::Volume) => {
            if let Some(options) = &mount.volume_options {
                let driver = options
                    .driver_config
                    .as_ref()
                    .map(|driver| driver.name.as_str())
                    .unwrap_or("");
                if !matches!(driver, "" | "local") {
                    return Err(format!(
                        "volume driver {driver:?} is not supported; use the local driver"
                    ));
                }
                if !options.subpath.is_empty() {
                    return Err(format!("volume mount {target:?}: subpath is not supported"));
                }
            }
            // An anonymous volume gets a name derived from the task, so a re-created spec names
            // the same volume and the conversion stays deterministic.
            let name = if mount.source.is_empty() {
                format!("{task_id}-{index}")
            } else {
                mount.source.clone()
            };
            Ok(MountSpec::Volume {
                name,
                target,
                read_only: mount.readonly,
            })
        }
        Ok(Type::Tmpfs) => {
            let options = mount.tmpfs_options.clone().unwrap_or_default();
            if options.size_bytes < 0 {
                return Err(format!(
                    "tmpfs {target:?}: size {} is negative",
                    options.size_bytes
                ));
            }
            if options.mode != 0 || !options.options.is_empty() {
                return Err(format!(
                    "tmpfs {target:?}: mode and extra options are not supported"
                ));
            }
            Ok(MountSpec::Tmpfs {
                target,
                size_bytes: (options.size_bytes > 0).then_some(options.size_bytes as u64),
            })
        }
        Ok(Type::Npipe) => Err("npipe mounts exist only on Windows".to_owned()),
        Ok(Type::Cluster) => Err("cluster volumes are not supported".to_owned()),
        Err(_) => Err(format!("mount type {} is unknown", mount.r#type)),
    }
}

/// The numeric owner of a secret or config file (Docker's uid and gid are strings; empty is 0).
fn file_owner(
    kind: &str,
    name: &str,
    uid: &str,
    gid: &str,
) -> std::result::Result<(u32, u32), String> {
    let number = |what: &str, text: &str| {
        if text.is_empty() {
            return Ok(0);
        }
        text.parse::<u32>().map_err(|_| {
            format!(
                "{kind} {name:?}: {what} {text:?} is not a number: give a numeric id such as 1000"
            )
        })
    };
    Ok((number("uid", uid)?, number("gid", gid)?))
}

fn secret_mount(
    secret: &api::SecretReference,
    payloads: &TaskPayloads,
) -> std::result::Result<MountSpec, String> {
    let Some(api::secret_reference::Target::File(file)) = &secret.target else {
        return Err(format!(
            "secret {:?} has no file target",
            secret.secret_name
        ));
    };
    let (uid, gid) = file_owner("secret", &secret.secret_name, &file.uid, &file.gid)?;
    let contents = payloads
        .secrets_by_id
        .get(&secret.secret_id)
        .ok_or_else(|| {
            format!(
                "secret {:?} ({}) was not sent to this node with the assignment",
                secret.secret_name, secret.secret_id
            )
        })?;
    let target = if file.name.starts_with('/') {
        file.name.clone()
    } else {
        format!("/run/secrets/{}", file.name)
    };
    Ok(MountSpec::File {
        target,
        contents: contents.clone(),
        mode: file.mode.unwrap_or(spec::defaults::FILE_MODE),
        uid,
        gid,
    })
}

fn config_mount(
    config: &api::ConfigReference,
    payloads: &TaskPayloads,
) -> std::result::Result<Option<MountSpec>, String> {
    let file = match &config.target {
        Some(api::config_reference::Target::File(file)) => file,
        // Runtime targets are read by the runtime itself (credential specs), not mounted.
        Some(api::config_reference::Target::Runtime(_)) => return Ok(None),
        None => return Err(format!("config {:?} has no target", config.config_name)),
    };
    let (uid, gid) = file_owner("config", &config.config_name, &file.uid, &file.gid)?;
    let contents = payloads
        .configs_by_id
        .get(&config.config_id)
        .ok_or_else(|| {
            format!(
                "config {:?} ({}) was not sent to this node with the assignment",
                config.config_name, config.config_id
            )
        })?;
    let target = if file.name.starts_with('/') {
        file.name.clone()
    } else {
        format!("/{}", file.name)
    };
    Ok(Some(MountSpec::File {
        target,
        contents: contents.clone(),
        mode: file.mode.unwrap_or(spec::defaults::FILE_MODE),
        uid,
        gid,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn duration(seconds: i64) -> Option<api::Duration> {
        Some(api::Duration { seconds, nanos: 0 })
    }

    fn task_with(container: TaskContainerSpec) -> api::Task {
        api::Task {
            id: "t1".to_owned(),
            service_id: "svc1".to_owned(),
            node_id: "node1".to_owned(),
            slot: 2,
            service_annotations: Some(api::Annotations {
                name: "web".to_owned(),
                ..api::Annotations::default()
            }),
            spec: Some(api::TaskSpec {
                runtime: Some(api::task_spec::Runtime::Container(container)),
                ..api::TaskSpec::default()
            }),
            ..api::Task::default()
        }
    }

    fn image(name: &str) -> TaskContainerSpec {
        TaskContainerSpec {
            image: name.to_owned(),
            ..TaskContainerSpec::default()
        }
    }

    #[test]
    fn swarm_placeholders_expand_in_hostname_environment_and_mounts() {
        let task = task_with(TaskContainerSpec {
            hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
            env: vec!["NODE={{.Node.Hostname}}".into(), "PLAIN=x".into()],
            mounts: vec![api::Mount {
                r#type: api::mount::Type::Bind as i32,
                source: "/srv/{{.Task.Name}}".into(),
                target: "/data/{{.Node.ID}}".into(),
                ..api::Mount::default()
            }],
            ..image("busybox")
        });
        let spec = container_spec_for_task(&task, &TaskPayloads::default(), "h2").unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.env, ["NODE=h2", "PLAIN=x"]);
        let MountSpec::Bind { source, target, .. } = &spec.mounts[0] else {
            panic!("a bind mount: {:?}", spec.mounts);
        };
        assert_eq!(source, &PathBuf::from("/srv/web.2.t1"));
        assert_eq!(target, "/data/node1");

        // What compose and the manager accept, the worker expands: the node's platform and Go's
        // trim markers (issue 13: such a stack validated, deployed, and every task was rejected).
        let platform = task_with(TaskContainerSpec {
            hostname: "{{.Node.Platform.OS}}-{{.Node.Platform.Architecture}}".into(),
            env: vec!["SLOT= {{- .Task.Slot -}} ".into()],
            ..image("busybox")
        });
        let spec = container_spec_for_task(&platform, &TaskPayloads::default(), "h2").unwrap();
        assert_eq!(
            spec.hostname,
            Some(format!("linux-{}", crate::agent::node_architecture()))
        );
        assert_eq!(spec.env, ["SLOT=2"]);

        let unknown = task_with(TaskContainerSpec {
            env: vec!["X={{.Task.Colour}}".into()],
            ..image("busybox")
        });
        let error = container_spec_for_task(&unknown, &TaskPayloads::default(), "h2")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("environment: invalid template \"X={{.Task.Colour}}\": unknown placeholder `{{.Task.Colour}}`"),
            "{error}"
        );
    }

    fn swarm_labels(task: &api::Task) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_TASK.to_owned(), String::new()),
            (LABEL_TASK_ID.to_owned(), task.id.clone()),
            (LABEL_TASK_NAME.to_owned(), task_name(task)),
            (LABEL_SERVICE_ID.to_owned(), task.service_id.clone()),
            (LABEL_SERVICE_NAME.to_owned(), "web".to_owned()),
            (LABEL_NODE_ID.to_owned(), task.node_id.clone()),
        ])
    }

    fn expected_base(task: &api::Task) -> ContainerSpec {
        ContainerSpec {
            name: Some(container_name_for_task(task)),
            image: "busybox".to_owned(),
            labels: swarm_labels(task),
            ..ContainerSpec::default()
        }
    }

    #[test]
    fn names_follow_swarm_for_replicated_and_global_tasks() {
        let replicated = task_with(image("busybox"));
        assert_eq!(container_name_for_task(&replicated), "web.2.t1");
        let global = api::Task {
            slot: 0,
            ..replicated.clone()
        };
        assert_eq!(container_name_for_task(&global), "web.node1.t1");
        let unnamed_service = api::Task {
            service_annotations: None,
            ..replicated
        };
        assert_eq!(container_name_for_task(&unnamed_service), "svc1.2.t1");
    }

    #[test]
    fn conversions_that_succeed() {
        type Case = (
            &'static str,
            TaskContainerSpec,
            Option<api::ResourceRequirements>,
            fn(&mut ContainerSpec),
        );
        let cases: Vec<Case> = vec![
            ("image only", image("busybox"), None, |_| {}),
            (
                "process, user, dir, hostname, env, init, read-only, stop signal and grace",
                TaskContainerSpec {
                    command: vec!["/bin/sh".into()],
                    args: vec!["-c".into(), "sleep 1".into()],
                    env: vec!["A=1".into()],
                    user: "1000:1000".into(),
                    dir: "/srv".into(),
                    hostname: "h".into(),
                    init: Some(true),
                    read_only: true,
                    stop_signal: "SIGINT".into(),
                    stop_grace_period: duration(3),
                    pid_limit: 100,
                    ..image("busybox")
                },
                None,
                |spec| {
                    spec.entrypoint = Some(vec!["/bin/sh".into()]);
                    spec.command = vec!["-c".into(), "sleep 1".into()];
                    spec.env = vec!["A=1".into()];
                    spec.user = Some("1000:1000".into());
                    spec.workdir = Some("/srv".into());
                    spec.hostname = Some("h".into());
                    spec.init = true;
                    spec.read_only_rootfs = true;
                    spec.stop_signal = Some("SIGINT".into());
                    spec.stop_timeout = Some(Duration::from_secs(3));
                    spec.resources.pids_limit = Some(100);
                },
            ),
            (
                "limits become cgroup limits; reservations are the scheduler's business",
                image("busybox"),
                Some(api::ResourceRequirements {
                    limits: Some(api::Resources {
                        nano_cpus: 1_500_000_000,
                        memory_bytes: 64 << 20,
                        generic: vec![],
                    }),
                    reservations: Some(api::Resources {
                        nano_cpus: 1,
                        memory_bytes: 1,
                        generic: vec![],
                    }),
                    ..api::ResourceRequirements::default()
                }),
                |spec| {
                    spec.resources.nano_cpus = Some(1_500_000_000);
                    spec.resources.memory_bytes = Some(64 << 20);
                },
            ),
            (
                "groups, capabilities, ulimits (negative is unlimited) and sysctls",
                TaskContainerSpec {
                    groups: vec!["staff".into()],
                    capability_add: vec!["NET_ADMIN".into()],
                    capability_drop: vec!["MKNOD".into()],
                    ulimits: vec![
                        api::container_spec::Ulimit {
                            name: "nofile".into(),
                            soft: 1024,
                            hard: 2048,
                        },
                        api::container_spec::Ulimit {
                            name: "core".into(),
                            soft: -1,
                            hard: -1,
                        },
                    ],
                    sysctls: HashMap::from([("net.core.somaxconn".to_owned(), "512".to_owned())]),
                    ..image("busybox")
                },
                None,
                |spec| {
                    spec.groups = vec!["staff".into()];
                    spec.cap_add = vec!["NET_ADMIN".into()];
                    spec.cap_drop = vec!["MKNOD".into()];
                    spec.ulimits = vec![
                        engine::Ulimit {
                            name: "nofile".into(),
                            soft: 1024,
                            hard: 2048,
                        },
                        engine::Ulimit {
                            name: "core".into(),
                            soft: u64::MAX,
                            hard: u64::MAX,
                        },
                    ];
                    spec.sysctls = BTreeMap::from([("net.core.somaxconn".into(), "512".into())]);
                },
            ),
            (
                "user labels kept, swarm labels can't be spoofed",
                TaskContainerSpec {
                    labels: HashMap::from([
                        ("com.docker.stack.namespace".to_owned(), "shop".to_owned()),
                        (LABEL_TASK_ID.to_owned(), "forged".to_owned()),
                    ]),
                    ..image("busybox")
                },
                None,
                |spec| {
                    spec.labels
                        .insert("com.docker.stack.namespace".into(), "shop".into());
                },
            ),
            (
                "CMD-SHELL healthcheck with defaults filled in",
                TaskContainerSpec {
                    healthcheck: Some(Box::new(api::HealthConfig {
                        test: vec!["CMD-SHELL".into(), "true".into()],
                        ..api::HealthConfig::default()
                    })),
                    ..image("busybox")
                },
                None,
                |spec| {
                    spec.healthcheck = Some(HealthcheckSpec {
                        test: vec!["/bin/sh".into(), "-c".into(), "true".into()],
                        interval: Duration::from_secs(30),
                        timeout: Duration::from_secs(30),
                        retries: 3,
                        start_period: Duration::ZERO,
                    });
                },
            ),
            (
                "CMD healthcheck with explicit timings",
                TaskContainerSpec {
                    healthcheck: Some(Box::new(api::HealthConfig {
                        test: vec!["CMD".into(), "probe".into(), "-q".into()],
                        interval: duration(5),
                        timeout: duration(2),
                        retries: 1,
                        start_period: duration(10),
                        start_interval: None,
                    })),
                    ..image("busybox")
                },
                None,
                |spec| {
                    spec.healthcheck = Some(HealthcheckSpec {
                        test: vec!["probe".into(), "-q".into()],
                        interval: Duration::from_secs(5),
                        timeout: Duration::from_secs(2),
                        retries: 1,
                        start_period: Duration::from_secs(10),
                    });
                },
            ),
            (
                "NONE disables the healthcheck",
                TaskContainerSpec {
                    healthcheck: Some(Box::new(api::HealthConfig {
                        test: vec!["NONE".into()],
                        ..api::HealthConfig::default()
                    })),
                    ..image("busybox")
                },
                None,
                |_| {},
            ),
            (
                "bind, named and anonymous volumes, tmpfs",
                TaskContainerSpec {
                    mounts: vec![
                        api::Mount {
                            r#type: api::mount::Type::Bind as i32,
                            source: "/srv/data".into(),
                            target: "/data".into(),
                            readonly: true,
                            ..api::Mount::default()
                        },
                        api::Mount {
                            r#type: api::mount::Type::Volume as i32,
                            source: "db".into(),
                            target: "/db".into(),
                            ..api::Mount::default()
                        },
                        api::Mount {
                            r#type: api::mount::Type::Volume as i32,
                            target: "/cache".into(),
                            ..api::Mount::default()
                        },
                        api::Mount {
                            r#type: api::mount::Type::Tmpfs as i32,
                            target: "/tmp".into(),
                            tmpfs_options: Some(api::mount::TmpfsOptions {
                                size_bytes: 1 << 20,
                                ..api::mount::TmpfsOptions::default()
                            }),
                            ..api::Mount::default()
                        },
                    ],
                    ..image("busybox")
                },
                None,
                |spec| {
                    spec.mounts = vec![
                        MountSpec::Bind {
                            source: "/srv/data".into(),
                            target: "/data".into(),
                            read_only: true,
                        },
                        MountSpec::Volume {
                            name: "db".into(),
                            target: "/db".into(),
                            read_only: false,
                        },
                        MountSpec::Volume {
                            name: "t1-2".into(),
                            target: "/cache".into(),
                            read_only: false,
                        },
                        MountSpec::Tmpfs {
                            target: "/tmp".into(),
                            size_bytes: Some(1 << 20),
                        },
                    ];
                },
            ),
            (
                "secrets under /run/secrets, configs at /<name>, from the payloads",
                TaskContainerSpec {
                    secrets: vec![api::SecretReference {
                        secret_id: "s1".into(),
                        secret_name: "db_password".into(),
                        target: Some(api::secret_reference::Target::File(
                            api::secret_reference::FileTarget {
                                name: "db_password".into(),
                                uid: "0".into(),
                                gid: "0".into(),
                                mode: Some(0o400),
                            },
                        )),
                    }],
                    configs: vec![api::ConfigReference {
                        config_id: "c1".into(),
                        config_name: "nginx.conf".into(),
                        target: Some(api::config_reference::Target::File(
                            api::config_reference::FileTarget {
                                name: "nginx.conf".into(),
                                ..api::config_reference::FileTarget::default()
                            },
                        )),
                    }],
                    ..image("busybox")
                },
                None,
                |spec| {
                    spec.mounts = vec![
                        MountSpec::File {
                            target: "/run/secrets/db_password".into(),
                            contents: b"hunter2".to_vec(),
                            mode: 0o400,
                            uid: 0,
                            gid: 0,
                        },
                        MountSpec::File {
                            target: "/nginx.conf".into(),
                            contents: b"events {}".to_vec(),
                            mode: 0o444,
                            uid: 0,
                            gid: 0,
                        },
                    ];
                },
            ),
            (
                "a file mode of 0 is kept: only an absent mode means 0444",
                TaskContainerSpec {
                    secrets: vec![api::SecretReference {
                        secret_id: "s1".into(),
                        secret_name: "db_password".into(),
                        target: Some(api::secret_reference::Target::File(
                            api::secret_reference::FileTarget {
                                name: "db_password".into(),
                                mode: Some(0),
                                ..api::secret_reference::FileTarget::default()
                            },
                        )),
                    }],
                    configs: vec![api::ConfigReference {
                        config_id: "c1".into(),
                        config_name: "nginx.conf".into(),
                        target: Some(api::config_reference::Target::File(
                            api::config_reference::FileTarget {
                                name: "nginx.conf".into(),
                                mode: Some(0),
                                ..api::config_reference::FileTarget::default()
                            },
                        )),
                    }],
                    ..image("busybox")
                },
                None,
                |spec| {
                    spec.mounts = vec![
                        MountSpec::File {
                            target: "/run/secrets/db_password".into(),
                            contents: b"hunter2".to_vec(),
                            mode: 0,
                            uid: 0,
                            gid: 0,
                        },
                        MountSpec::File {
                            target: "/nginx.conf".into(),
                            contents: b"events {}".to_vec(),
                            mode: 0,
                            uid: 0,
                            gid: 0,
                        },
                    ];
                },
            ),
        ];
        let payloads = TaskPayloads {
            secrets_by_id: BTreeMap::from([("s1".to_owned(), b"hunter2".to_vec())]),
            configs_by_id: BTreeMap::from([("c1".to_owned(), b"events {}".to_vec())]),
        };
        for (name, container, resources, adjust) in cases {
            let mut task = task_with(container);
            if let Some(spec) = task.spec.as_mut() {
                spec.resources = resources.map(Box::new);
            }
            let mut expected = expected_base(&task);
            adjust(&mut expected);
            let converted = container_spec_for_task(&task, &payloads, "node-host")
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(converted, expected, "{name}");
        }
    }

    #[test]
    fn conversions_that_are_rejected() {
        let no_runtime = api::Task {
            spec: Some(api::TaskSpec::default()),
            ..task_with(image("busybox"))
        };
        let generic = api::Task {
            spec: Some(api::TaskSpec {
                runtime: Some(api::task_spec::Runtime::Generic(api::GenericRuntimeSpec {
                    kind: "plugin".into(),
                    payload: vec![],
                })),
                ..api::TaskSpec::default()
            }),
            ..task_with(image("busybox"))
        };
        let bad_service_name = api::Task {
            service_annotations: Some(api::Annotations {
                name: "we b".into(),
                ..api::Annotations::default()
            }),
            ..task_with(image("busybox"))
        };
        let negative_memory = {
            let mut task = task_with(image("busybox"));
            if let Some(spec) = task.spec.as_mut() {
                spec.resources = Some(Box::new(api::ResourceRequirements {
                    limits: Some(api::Resources {
                        memory_bytes: -1,
                        ..api::Resources::default()
                    }),
                    ..api::ResourceRequirements::default()
                }));
            }
            task
        };
        let cases: Vec<(&str, api::Task, &str)> = vec![
            ("no container spec", no_runtime, "has no container spec"),
            (
                "generic runtime",
                generic,
                "generic runtime \"plugin\" is not supported",
            ),
            ("empty image", task_with(image(" ")), "names no image"),
            ("invalid name", bad_service_name, "is not valid"),
            (
                "negative memory",
                negative_memory,
                "memory limit -1 is negative",
            ),
            (
                "tty and stdin",
                task_with(TaskContainerSpec {
                    tty: true,
                    open_stdin: true,
                    ..image("busybox")
                }),
                "does not support tty, open_stdin",
            ),
            (
                "relative bind source",
                task_with(TaskContainerSpec {
                    mounts: vec![api::Mount {
                        r#type: api::mount::Type::Bind as i32,
                        source: "data".into(),
                        target: "/data".into(),
                        ..api::Mount::default()
                    }],
                    ..image("busybox")
                }),
                "must be an absolute host path",
            ),
            (
                "npipe mount",
                task_with(TaskContainerSpec {
                    mounts: vec![api::Mount {
                        r#type: api::mount::Type::Npipe as i32,
                        target: "/pipe".into(),
                        ..api::Mount::default()
                    }],
                    ..image("busybox")
                }),
                "only on Windows",
            ),
            (
                "malformed healthcheck",
                task_with(TaskContainerSpec {
                    healthcheck: Some(Box::new(api::HealthConfig {
                        test: vec!["CMD-SHELL".into()],
                        ..api::HealthConfig::default()
                    })),
                    ..image("busybox")
                }),
                "healthcheck test \"CMD-SHELL\" with 0 arguments",
            ),
            (
                "negative grace period",
                task_with(TaskContainerSpec {
                    stop_grace_period: duration(-1),
                    ..image("busybox")
                }),
                "stop grace period",
            ),
            (
                "secret not sent",
                task_with(TaskContainerSpec {
                    secrets: vec![api::SecretReference {
                        secret_id: "missing".into(),
                        secret_name: "pw".into(),
                        target: Some(api::secret_reference::Target::File(
                            api::secret_reference::FileTarget {
                                name: "pw".into(),
                                ..api::secret_reference::FileTarget::default()
                            },
                        )),
                    }],
                    ..image("busybox")
                }),
                "was not sent to this node",
            ),
        ];
        for (name, task, expected_fragment) in cases {
            match container_spec_for_task(&task, &TaskPayloads::default(), "node-host") {
                Ok(spec) => panic!("{name}: expected a rejection, got {spec:?}"),
                Err(error) => {
                    assert!(matches!(error, WorkerError::TaskRejected { .. }), "{name}");
                    let message = error.to_string();
                    assert!(message.contains(expected_fragment), "{name}: {message}");
                }
            }
        }
    }

    /// Network `back` (net2) with two subnets, allocated: VNIs 4100 and 4101, the second
    /// subnet 10.0.3.0/24 with gateway 10.0.3.1; encrypted and internal.
    fn back_network() -> api::Network {
        api::Network {
            id: "net2".into(),
            spec: Some(api::NetworkSpec {
                annotations: Some(api::Annotations {
                    name: "back".into(),
                    ..api::Annotations::default()
                }),
                driver_config: Some(api::Driver {
                    name: "overlay".into(),
                    options: [(ENCRYPTED_OPTION.to_owned(), String::new())].into(),
                }),
                internal: true,
                ..api::NetworkSpec::default()
            }),
            driver_state: Some(api::Driver {
                name: "overlay".into(),
                options: [(VXLAN_ID_LIST_OPTION.to_owned(), "4100,4101".to_owned())].into(),
            }),
            ipam: Some(api::IpamOptions {
                driver: None,
                configs: ["10.0.2", "10.0.3"]
                    .into_iter()
                    .map(|prefix| api::IpamConfig {
                        subnet: format!("{prefix}.0/24"),
                        gateway: format!("{prefix}.1"),
                        ..api::IpamConfig::default()
                    })
                    .collect(),
            }),
            ..api::Network::default()
        }
    }

    /// The ingress network (net0): 10.255.0.0/16, VNI 4096.
    fn ingress_network() -> api::Network {
        api::Network {
            id: "net0".into(),
            spec: Some(api::NetworkSpec {
                annotations: Some(api::Annotations {
                    name: "ingress".into(),
                    ..api::Annotations::default()
                }),
                ingress: true,
                ..api::NetworkSpec::default()
            }),
            driver_state: Some(api::Driver {
                name: "overlay".into(),
                options: [(VXLAN_ID_LIST_OPTION.to_owned(), "4096".to_owned())].into(),
            }),
            ipam: Some(api::IpamOptions {
                driver: None,
                configs: vec![api::IpamConfig {
                    subnet: "10.255.0.0/16".into(),
                    gateway: "10.255.0.1".into(),
                    ..api::IpamConfig::default()
                }],
            }),
            ..api::Network::default()
        }
    }

    /// The task of `task_with`, allocated on `back` (aliases db, store) and ingress, with the
    /// service's VIPs on both.
    fn networked_task(container: TaskContainerSpec) -> api::Task {
        let mut task = task_with(container);
        if let Some(spec) = task.spec.as_mut() {
            spec.networks = ["net2", "net0"]
                .into_iter()
                .map(|target| api::NetworkAttachmentConfig {
                    target: target.into(),
                    ..api::NetworkAttachmentConfig::default()
                })
                .collect();
        }
        task.networks = vec![
            api::NetworkAttachment {
                network: Some(back_network()),
                addresses: vec!["10.0.3.7/24".into()],
                aliases: vec!["db".into(), "store".into()],
                ..api::NetworkAttachment::default()
            },
            api::NetworkAttachment {
                network: Some(ingress_network()),
                addresses: vec!["10.255.0.9/16".into()],
                ..api::NetworkAttachment::default()
            },
        ];
        task.endpoint = Some(api::Endpoint {
            spec: Some(api::EndpointSpec::default()),
            ports: vec![
                api::PortConfig {
                    protocol: api::port_config::Protocol::Udp as i32,
                    target_port: 53,
                    published_port: 30053,
                    traffic_policy: api::port_config::TrafficPolicy::Cluster as i32,
                    ..api::PortConfig::default()
                },
                // On its node only: not the mesh's.
                api::PortConfig {
                    target_port: 80,
                    published_port: 8080,
                    publish_mode: api::port_config::PublishMode::Host as i32,
                    ..api::PortConfig::default()
                },
            ],
            virtual_ips: vec![
                api::endpoint::VirtualIp {
                    network_id: "net0".into(),
                    addr: "10.255.0.2/16".into(),
                },
                api::endpoint::VirtualIp {
                    network_id: "net2".into(),
                    addr: "10.0.3.2/24".into(),
                },
            ],
        });
        task
    }

    #[test]
    fn a_networked_task_gives_everything_its_networks_need() {
        let task = networked_task(TaskContainerSpec {
            hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
            hosts: vec!["10.1.2.3 cache cache.local".into()],
            dns_config: Some(Box::new(api::container_spec::DnsConfig {
                nameservers: vec!["10.0.0.53".into()],
                search: vec!["example.org".into()],
                options: vec!["ndots:2".into()],
            })),
            ..image("busybox")
        });
        let networks = task_networks(&task, "h2").unwrap();
        assert_eq!(
            networks,
            Some(TaskNetworks {
                task_id: "t1".into(),
                container_name: "web.2.t1".into(),
                service_id: "svc1".into(),
                service_name: "web".into(),
                endpoint_mode: EndpointMode::Vip,
                attachments: vec![
                    NetworkAttachment {
                        network_id: "net2".into(),
                        network_name: "back".into(),
                        vni: 4101,
                        gateway: "10.0.3.1/24".into(),
                        address: "10.0.3.7/24".into(),
                        internal: true,
                        encrypted: true,
                        ingress: false,
                        aliases: vec!["db".into(), "store".into()],
                        virtual_ip: Some("10.0.3.2/24".into()),
                    },
                    NetworkAttachment {
                        network_id: "net0".into(),
                        network_name: "ingress".into(),
                        vni: 4096,
                        gateway: "10.255.0.1/16".into(),
                        address: "10.255.0.9/16".into(),
                        internal: false,
                        encrypted: false,
                        ingress: true,
                        aliases: Vec::new(),
                        virtual_ip: Some("10.255.0.2/16".into()),
                    },
                ],
                ingress_ports: vec![IngressPort {
                    protocol: api::port_config::Protocol::Udp,
                    published: 30053,
                    target: 53,
                    policy: api::port_config::TrafficPolicy::Cluster,
                }],
                host_ports: vec![HostPort {
                    protocol: api::port_config::Protocol::Tcp,
                    published: 8080,
                    target: 80,
                }],
                dns: DnsOptions {
                    nameservers: vec!["10.0.0.53".into()],
                    search: vec!["example.org".into()],
                    options: vec!["ndots:2".into()],
                },
                hosts: vec!["10.1.2.3 cache cache.local".into()],
                hostname: "web-2".into(),
            })
        );
        // The container gets the same hostname its hosts file names.
        let spec = container_spec_for_task(&task, &TaskPayloads::default(), "h2").unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
    }

    #[test]
    fn a_published_port_that_is_not_a_port_number_rejects_the_task() {
        let mut task = networked_task(image("busybox"));
        task.endpoint.as_mut().unwrap().ports[0].published_port = 70000;
        let error = task_networks(&task, "h2").unwrap_err().to_string();
        assert!(
            error.contains(
                "the service's published port 70000 is not a port number from 1 to 65535"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_task_on_no_network_publishing_on_its_host_gets_networking_for_it() {
        let mut task = task_with(image("busybox"));
        let host_port = |published| api::PortConfig {
            target_port: 80,
            published_port: published,
            publish_mode: api::port_config::PublishMode::Host as i32,
            ..api::PortConfig::default()
        };
        task.endpoint = Some(api::Endpoint {
            ports: vec![host_port(8080)],
            ..api::Endpoint::default()
        });
        let networks = task_networks(&task, "h2").unwrap().unwrap();
        assert!(networks.attachments.is_empty());
        assert_eq!(
            networks.host_ports,
            [HostPort {
                protocol: api::port_config::Protocol::Tcp,
                published: 8080,
                target: 80,
            }]
        );
        // Without a number there is nothing to bind.
        task.endpoint.as_mut().unwrap().ports = vec![host_port(0)];
        assert_eq!(task_networks(&task, "h2").unwrap(), None);
    }

    #[test]
    fn a_node_reads_its_ingress_leg_from_its_attachments() {
        let mut node = api::Node::default();
        assert_eq!(node_ingress_leg(&node), None);
        // Only the ingress network's attachment is the leg.
        node.attachments = vec![
            api::NetworkAttachment {
                network: Some(back_network()),
                addresses: vec!["10.0.3.9/24".into()],
                ..api::NetworkAttachment::default()
            },
            api::NetworkAttachment {
                network: Some(ingress_network()),
                addresses: vec!["10.255.0.40/16".into()],
                ..api::NetworkAttachment::default()
            },
        ];
        let leg = node_ingress_leg(&node).unwrap().unwrap();
        assert_eq!(
            (
                leg.network_id.as_str(),
                leg.vni,
                leg.gateway.as_str(),
                leg.address.as_str()
            ),
            ("net0", 4096, "10.255.0.1/16", "10.255.0.40/16")
        );
        assert!(leg.ingress && leg.virtual_ip.is_none());
        node.attachments[1].addresses = vec!["10.9.0.40/16".into()];
        assert!(node_ingress_leg(&node).unwrap().is_err());
    }

    #[test]
    fn a_networked_task_without_a_hostname_gets_one_known_before_its_container() {
        let mut task = networked_task(image("busybox"));
        task.id = "abcdefghijklmnopqrstuvwxy".into();
        let networks = task_networks(&task, "h2").unwrap().unwrap();
        assert_eq!(networks.hostname, "abcdefghijkl");
        let spec = container_spec_for_task(&task, &TaskPayloads::default(), "h2").unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("abcdefghijkl"));
        // Without networks the engine's default (the container id's) stands.
        let plain = task_with(image("busybox"));
        assert_eq!(task_networks(&plain, "h2").unwrap(), None);
        let spec = container_spec_for_task(&plain, &TaskPayloads::default(), "h2").unwrap();
        assert_eq!(spec.hostname, None);
    }

    #[test]
    fn in_dnsrr_mode_a_task_has_no_virtual_ips() {
        let mut task = networked_task(image("busybox"));
        if let Some(endpoint) = task.endpoint.as_mut() {
            endpoint.spec = Some(api::EndpointSpec {
                mode: api::endpoint_spec::ResolutionMode::Dnsrr as i32,
                ports: Vec::new(),
            });
        }
        let networks = task_networks(&task, "h2").unwrap().unwrap();
        assert_eq!(networks.endpoint_mode, EndpointMode::DnsRoundRobin);
        assert!(
            networks
                .attachments
                .iter()
                .all(|attachment| attachment.virtual_ip.is_none())
        );
    }

    #[test]
    fn tasks_whose_networks_were_not_allocated_are_rejected() {
        let allocated = networked_task(image("busybox"));
        let change = |change: fn(&mut api::Task)| {
            let mut task = allocated.clone();
            change(&mut task);
            task
        };
        let cases: Vec<(&str, api::Task, &str)> = vec![
            (
                "no attachments",
                change(|task| task.networks.clear()),
                "the task names networks but carries no addresses on them: the managers did not allocate it",
            ),
            (
                "no address",
                change(|task| task.networks[0].addresses.clear()),
                "network back is not allocated for this task (the task has no address on it)",
            ),
            (
                "no VNI",
                change(|task| {
                    if let Some(network) = task.networks[0].network.as_mut() {
                        network.driver_state = None;
                    }
                }),
                "network back is not allocated for this task (subnet 10.0.3.0/24 has no VXLAN id)",
            ),
            (
                "too few VNIs",
                change(|task| {
                    if let Some(driver) = task.networks[0]
                        .network
                        .as_mut()
                        .and_then(|network| network.driver_state.as_mut())
                    {
                        driver
                            .options
                            .insert(VXLAN_ID_LIST_OPTION.to_owned(), "4100".to_owned());
                    }
                }),
                "subnet 10.0.3.0/24 has no VXLAN id",
            ),
            (
                "no subnet",
                change(|task| {
                    if let Some(network) = task.networks[0].network.as_mut() {
                        network.ipam = None;
                    }
                }),
                "network back is not allocated for this task (no subnet of it holds the address 10.0.3.7/24)",
            ),
            (
                "an address outside its subnets",
                change(|task| task.networks[0].addresses = vec!["10.9.9.9/24".into()]),
                "no subnet of it holds the address 10.9.9.9/24",
            ),
            (
                "an address without its prefix",
                change(|task| task.networks[0].addresses = vec!["10.0.3.7".into()]),
                "the task's address \"10.0.3.7\" is not an IPv4 address with its prefix length",
            ),
            (
                "a prefix other than the subnet's",
                change(|task| task.networks[0].addresses = vec!["10.0.3.7/16".into()]),
                "does not carry the prefix of its subnet 10.0.3.0/24",
            ),
        ];
        for (name, task, expected_fragment) in cases {
            match task_networks(&task, "h2") {
                Ok(networks) => panic!("{name}: expected a rejection, got {networks:?}"),
                Err(error) => {
                    assert!(matches!(error, WorkerError::TaskRejected { .. }), "{name}");
                    let message = error.to_string();
                    assert!(message.contains(expected_fragment), "{name}: {message}");
                }
            }
        }
    }

    #[test]
    fn dns_settings_and_extra_hosts_without_networks_are_refused_not_dropped() {
        let with_dns = task_with(TaskContainerSpec {
            dns_config: Some(Box::new(api::container_spec::DnsConfig {
                nameservers: vec!["10.0.0.53".into()],
                ..Default::default()
            })),
            hosts: vec!["10.1.2.3 cache".into()],
            ..image("busybox")
        });
        let error = container_spec_for_task(&with_dns, &TaskPayloads::default(), "h2")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "DNS settings and extra hosts need the task to be on a network: attach the \
                 service to an overlay network or remove them"
            ),
            "{error}"
        );
        // An empty DNS config asks for nothing.
        let empty_dns = task_with(TaskContainerSpec {
            dns_config: Some(Box::new(api::container_spec::DnsConfig::default())),
            ..image("busybox")
        });
        assert!(container_spec_for_task(&empty_dns, &TaskPayloads::default(), "h2").is_ok());
    }

    #[test]
    fn payload_debug_output_never_shows_secret_data() {
        let payloads = TaskPayloads {
            secrets_by_id: BTreeMap::from([("s1".to_owned(), b"hunter2".to_vec())]),
            configs_by_id: BTreeMap::new(),
        };
        let printed = format!("{payloads:?}");
        assert!(
            printed.contains("s1") && !printed.contains("104"),
            "{printed}"
        );
    }
}
