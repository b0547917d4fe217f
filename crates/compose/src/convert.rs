//! Converts a checked [`ComposeProject`] into the specs `stack deploy` sends: services, networks,
//! and the names of the secrets, configs and volumes they use. Pure; follows docker's stack
//! conversion so that a stack deployed by either CLI looks the same (names `STACK_NAME`, the
//! `com.docker.stack.namespace` label, `STACK_default` for services without networks).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shoal_proto::api;
use spec::defaults;
use spec::time::proto_duration;

use super::model::*;

/// The label docker puts on everything a stack owns; `stack rm` and `stack ls` find them by it.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// Everything `stack deploy` creates or looks up, in dependency order of creation.
#[derive(Debug, Default)]
pub struct StackSpecs {
    /// Networks the stack creates, by full name: those its services use, as docker creates
    /// them. External networks are not here.
    pub networks: BTreeMap<String, api::NetworkSpec>,
    /// The external networks its services use, by name: they must exist before the deploy.
    pub external_networks: BTreeSet<String>,
    /// Secrets and configs the stack creates from files: full name → absolute file path. The
    /// caller reads the files (and checks their size) before anything is written.
    pub secret_files: BTreeMap<String, String>,
    pub config_files: BTreeMap<String, String>,
    pub services: BTreeMap<String, api::ServiceSpec>,
}

fn scoped(stack: &str, name: &str) -> String {
    format!("{stack}_{name}")
}

/// The name an object gets in the cluster: its `name:` if set, its own name if external, else
/// prefixed with the stack.
fn object_name(stack: &str, key: &str, explicit: &Option<String>, external: bool) -> String {
    match explicit {
        Some(name) => name.clone(),
        None if external => key.to_owned(),
        None => scoped(stack, key),
    }
}

fn namespace_labels(stack: &str, labels: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut out: HashMap<String, String> =
        labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    out.insert(NAMESPACE_LABEL.into(), stack.into());
    out
}

/// Parses `0.5` CPUs into nano-CPUs (validated by the parser already).
fn nano_cpus(cpus: &Option<String>) -> i64 {
    cpus.as_deref()
        .and_then(|c| c.parse::<f64>().ok())
        .map_or(0, |c| (c * 1e9).round() as i64)
}

pub fn to_specs(stack: &str, project: &ComposeProject) -> StackSpecs {
    let mut specs = StackSpecs::default();
    // As docker's `convert.Networks`: only the networks some service uses are made, and a
    // service that names none uses the stack's `default` network.
    let mut used_networks = BTreeSet::new();
    for (name, service) in &project.services {
        if service.networks.is_empty() {
            used_networks.insert("default");
        }
        used_networks.extend(service.networks.keys().map(String::as_str));
        specs.services.insert(
            scoped(stack, name),
            service_spec(stack, name, service, project),
        );
    }
    let default_network = Network::default();
    for key in used_networks {
        let network = project.networks.get(key).unwrap_or(&default_network);
        if network.external {
            specs
                .external_networks
                .insert(object_name(stack, key, &network.name, true));
            continue;
        }
        let name = object_name(stack, key, &network.name, false);
        specs
            .networks
            .insert(name.clone(), network_spec(stack, &name, network));
    }
    for (key, secret) in &project.secrets {
        if let (false, Some(file)) = (secret.external, &secret.file) {
            specs
                .secret_files
                .insert(object_name(stack, key, &secret.name, false), file.clone());
        }
    }
    for (key, config) in &project.configs {
        if let (false, Some(file)) = (config.external, &config.file) {
            specs
                .config_files
                .insert(object_name(stack, key, &config.name, false), file.clone());
        }
    }
    specs
}

pub(crate) fn network_spec(stack: &str, name: &str, network: &Network) -> api::NetworkSpec {
    api::NetworkSpec {
        annotations: Some(api::Annotations {
            name: name.to_owned(),
            labels: namespace_labels(stack, &network.labels),
            indices: Vec::new(),
        }),
        driver_config: Some(api::Driver {
            name: network
                .driver
                .clone()
                .unwrap_or_else(|| spec::network::OVERLAY_DRIVER.into()),
            options: network
                .driver_opts
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        ipv6_enabled: network.enable_ipv6,
        internal: network.internal,
        ipam: network.ipam.as_ref().map(|ipam| api::IpamOptions {
            driver: ipam.driver.as_ref().map(|name| api::Driver {
                name: name.clone(),
                options: HashMap::new(),
            }),
            configs: ipam
                .config
                .iter()
                .map(|pool| api::IpamConfig {
                    subnet: pool.subnet.clone().unwrap_or_default(),
                    range: pool.ip_range.clone().unwrap_or_default(),
                    gateway: pool.gateway.clone().unwrap_or_default(),
                    ..Default::default()
                })
                .collect(),
        }),
        attachable: network.attachable,
        ingress: false,
        config_from: None,
    }
}

fn service_spec(
    stack: &str,
    name: &str,
    service: &Service,
    project: &ComposeProject,
) -> api::ServiceSpec {
    let deploy = &service.deploy;
    let container = container_spec(stack, service, project);
    api::ServiceSpec {
        annotations: Some(api::Annotations {
            name: scoped(stack, name),
            labels: namespace_labels(stack, &deploy.labels),
            indices: Vec::new(),
        }),
        task: Some(api::TaskSpec {
            runtime: Some(api::task_spec::Runtime::Container(container)),
            resources: resource_requirements(&deploy.resources).map(Box::new),
            restart: deploy.restart_policy.as_ref().map(restart_policy),
            placement: Some(Box::new(placement(&deploy.placement))),
            log_driver: service.logging.as_ref().map(log_driver).map(Box::new),
            networks: network_attachments(stack, name, service, project),
            force_update: 0,
            resource_references: Vec::new(),
        }),
        mode: Some(service_mode(deploy)),
        update: deploy.update_config.as_ref().map(update_config),
        rollback: deploy.rollback_config.as_ref().map(update_config),
        networks: Vec::new(),
        endpoint: Some(endpoint_spec(deploy, &service.ports)),
        depends_on: dependencies(stack, &service.depends_on),
    }
}

fn service_mode(deploy: &Deploy) -> api::service_spec::Mode {
    let replicas = deploy.replicas.unwrap_or(defaults::REPLICAS);
    match deploy.mode.unwrap_or(defaults::MODE) {
        ServiceMode::Replicated => {
            api::service_spec::Mode::Replicated(api::ReplicatedService { replicas })
        }
        ServiceMode::Global => api::service_spec::Mode::Global(api::GlobalService {}),
        ServiceMode::ReplicatedJob => api::service_spec::Mode::ReplicatedJob(api::ReplicatedJob {
            max_concurrent: replicas,
            total_completions: replicas,
        }),
        ServiceMode::GlobalJob => api::service_spec::Mode::GlobalJob(api::GlobalJob {}),
    }
}

/// The networks a service's tasks join, sorted by target; the stack's default network when the
/// service names none. The service's name is always one of its aliases.
fn network_attachments(
    stack: &str,
    name: &str,
    service: &Service,
    project: &ComposeProject,
) -> Vec<api::NetworkAttachmentConfig> {
    let mut networks: Vec<api::NetworkAttachmentConfig> = if service.networks.is_empty() {
        vec![api::NetworkAttachmentConfig {
            target: scoped(stack, "default"),
            aliases: vec![name.to_owned()],
            ..Default::default()
        }]
    } else {
        service
            .networks
            .iter()
            .map(|(key, attachment)| {
                let target = match project.networks.get(key) {
                    Some(network) => object_name(stack, key, &network.name, network.external),
                    None => scoped(stack, key),
                };
                let mut aliases = vec![name.to_owned()];
                aliases.extend(attachment.aliases.iter().cloned());
                api::NetworkAttachmentConfig {
                    target,
                    aliases,
                    addresses: attachment
                        .ipv4_address
                        .iter()
                        .chain(&attachment.ipv6_address)
                        .cloned()
                        .collect(),
                    ..Default::default()
                }
            })
            .collect()
    };
    networks.sort_by(|a, b| a.target.cmp(&b.target));
    networks
}

fn resource_requirements(resources: &Resources) -> Option<api::ResourceRequirements> {
    let limits = resources.limits.as_ref();
    let reservations = resources.reservations.as_ref();
    (limits.is_some() || reservations.is_some()).then(|| api::ResourceRequirements {
        limits: limits.map(|l| api::Resources {
            nano_cpus: nano_cpus(&l.cpus),
            memory_bytes: l
                .memory_bytes
                .map_or(0, |m| i64::try_from(m).unwrap_or(i64::MAX)),
            generic: Vec::new(),
        }),
        reservations: reservations.map(|r| api::Resources {
            nano_cpus: nano_cpus(&r.cpus),
            memory_bytes: r
                .memory_bytes
                .map_or(0, |m| i64::try_from(m).unwrap_or(i64::MAX)),
            generic: Vec::new(),
        }),
        ..Default::default()
    })
}

pub(crate) fn placement(placement: &Placement) -> api::Placement {
    api::Placement {
        constraints: placement.constraints.clone(),
        preferences: placement
            .preferences
            .iter()
            .map(|spread| api::placement::Preference {
                preference: Some(api::placement::preference::Preference::Spread(
                    api::placement::preference::Spread {
                        spread_descriptor: spread.clone(),
                    },
                )),
            })
            .collect(),
        platforms: Vec::new(),
        max_replicas: placement.max_replicas_per_node.unwrap_or(0),
    }
}

fn log_driver(logging: &Logging) -> api::Driver {
    api::Driver {
        name: logging.driver.clone().unwrap_or_default(),
        options: logging
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The endpoint a service's ports and `deploy.endpoint_mode` ask for; parsing checks it with
/// `spec`'s rules, so a file gets the answer the flags get.
pub(crate) fn endpoint_spec(deploy: &Deploy, ports: &[Port]) -> api::EndpointSpec {
    api::EndpointSpec {
        // Unset, the mode of the endpoint `spec::defaults` fills in (a virtual IP).
        mode: deploy
            .endpoint_mode
            .map_or(api::EndpointSpec::default().mode, |mode| mode as i32),
        ports: ports
            .iter()
            .map(|port| api::PortConfig {
                name: String::new(),
                protocol: port.protocol as i32,
                target_port: u32::from(port.target),
                published_port: port.published.map_or(0, u32::from),
                publish_mode: port.mode as i32,
                traffic_policy: port.traffic_policy as i32,
            })
            .collect(),
    }
}

fn dependencies(
    stack: &str,
    depends_on: &BTreeMap<String, DependsOn>,
) -> Vec<api::ServiceDependency> {
    depends_on
        .iter()
        .map(|(dependency, how)| api::ServiceDependency {
            service: scoped(stack, dependency),
            condition: how.condition as i32,
            required: how.required,
        })
        .collect()
}

fn container_spec(stack: &str, service: &Service, project: &ComposeProject) -> api::ContainerSpec {
    // docker's ContainerSpec.Command is the entrypoint and Args the command.
    let env = service
        .environment
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    api::ContainerSpec {
        image: service.image.clone(),
        labels: namespace_labels(stack, &service.labels),
        command: service.entrypoint.clone().unwrap_or_default(),
        args: service.command.clone().unwrap_or_default(),
        hostname: service.hostname.clone().unwrap_or_default(),
        env,
        dir: service.working_dir.clone().unwrap_or_default(),
        user: service.user.clone().unwrap_or_default(),
        init: service.init,
        tty: service.tty,
        open_stdin: service.stdin_open,
        read_only: service.read_only,
        stop_signal: service.stop_signal.clone().unwrap_or_default(),
        mounts: service
            .volumes
            .iter()
            .map(|mount| container_mount(stack, mount, project))
            .collect(),
        stop_grace_period: service.stop_grace_period.map(proto_duration),
        secrets: secret_references(stack, &service.secrets, project),
        configs: config_references(stack, &service.configs, project),
        hosts: service
            .extra_hosts
            .iter()
            .map(|(host, ip)| spec::dns::host_entry(host, ip))
            .collect(),
        dns_config: (!service.dns.is_empty()
            || !service.dns_search.is_empty()
            || !service.dns_opt.is_empty())
        .then(|| {
            Box::new(api::container_spec::DnsConfig {
                nameservers: service.dns.clone(),
                search: service.dns_search.clone(),
                options: service.dns_opt.clone(),
            })
        }),
        healthcheck: service
            .healthcheck
            .as_ref()
            .map(|health| Box::new(health_config(health))),
        pid_limit: service
            .deploy
            .resources
            .limits
            .as_ref()
            .and_then(|l| l.pids)
            .unwrap_or(0),
        sysctls: service
            .sysctls
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        capability_add: service.cap_add.clone(),
        capability_drop: service.cap_drop.clone(),
        ulimits: service
            .ulimits
            .iter()
            .map(|(name, limit)| api::container_spec::Ulimit {
                name: name.clone(),
                soft: limit.soft,
                hard: limit.hard,
            })
            .collect(),
        ..Default::default()
    }
}

/// A bind, tmpfs or volume mount; a volume's source is its name in the cluster.
fn container_mount(stack: &str, mount: &Mount, project: &ComposeProject) -> api::Mount {
    let source = match mount.kind {
        MountType::Volume => match &mount.source {
            None => String::new(),
            Some(key) => match project.volumes.get(key) {
                Some(volume) => object_name(stack, key, &volume.name, volume.external),
                None => scoped(stack, key),
            },
        },
        MountType::Tmpfs => String::new(),
        _ => mount.source.clone().unwrap_or_default(),
    };
    api::Mount {
        r#type: mount.kind as i32,
        source,
        target: mount.target.clone(),
        readonly: mount.read_only,
        consistency: 0,
        bind_options: mount
            .bind_propagation
            .map(|propagation| api::mount::BindOptions {
                propagation: propagation as i32,
                ..Default::default()
            }),
        volume_options: (mount.kind == MountType::Volume).then(|| api::mount::VolumeOptions {
            nocopy: mount.volume_nocopy,
            labels: [(NAMESPACE_LABEL.to_owned(), stack.to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        tmpfs_options: mount.tmpfs_size_bytes.map(|size| api::mount::TmpfsOptions {
            size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
            ..Default::default()
        }),
    }
}

fn secret_references(
    stack: &str,
    references: &[FileReference],
    project: &ComposeProject,
) -> Vec<api::SecretReference> {
    references
        .iter()
        .map(|reference| api::SecretReference {
            secret_id: String::new(),
            secret_name: file_object_name(stack, &reference.source, &project.secrets),
            target: Some(api::secret_reference::Target::File(
                api::secret_reference::FileTarget {
                    // Relative targets land under /run/secrets/, as in docker.
                    name: reference
                        .target
                        .clone()
                        .unwrap_or_else(|| reference.source.clone()),
                    uid: reference
                        .uid
                        .clone()
                        .unwrap_or_else(|| defaults::FILE_UID.into()),
                    gid: reference
                        .gid
                        .clone()
                        .unwrap_or_else(|| defaults::FILE_GID.into()),
                    mode: Some(reference.mode.unwrap_or(defaults::FILE_MODE)),
                },
            )),
        })
        .collect()
}

fn config_references(
    stack: &str,
    references: &[FileReference],
    project: &ComposeProject,
) -> Vec<api::ConfigReference> {
    references
        .iter()
        .map(|reference| api::ConfigReference {
            config_id: String::new(),
            config_name: file_object_name(stack, &reference.source, &project.configs),
            target: Some(api::config_reference::Target::File(
                api::config_reference::FileTarget {
                    name: reference
                        .target
                        .clone()
                        .unwrap_or_else(|| format!("/{}", reference.source)),
                    uid: reference
                        .uid
                        .clone()
                        .unwrap_or_else(|| defaults::FILE_UID.into()),
                    gid: reference
                        .gid
                        .clone()
                        .unwrap_or_else(|| defaults::FILE_GID.into()),
                    mode: Some(reference.mode.unwrap_or(defaults::FILE_MODE)),
                },
            )),
        })
        .collect()
}

fn health_config(check: &Healthcheck) -> api::HealthConfig {
    api::HealthConfig {
        test: if check.disable {
            vec!["NONE".into()]
        } else {
            check.test.clone()
        },
        interval: check.interval.map(proto_duration),
        timeout: check.timeout.map(proto_duration),
        retries: check
            .retries
            .map_or(0, |r| i32::try_from(r).unwrap_or(i32::MAX)),
        start_period: check.start_period.map(proto_duration),
        start_interval: check.start_interval.map(proto_duration),
    }
}

fn file_object_name(stack: &str, key: &str, declared: &BTreeMap<String, FileObject>) -> String {
    match declared.get(key) {
        Some(object) => object_name(stack, key, &object.name, object.external),
        None => scoped(stack, key),
    }
}

/// The file's restart policy, Swarm's (`spec::defaults`) filling the condition and attempts it
/// leaves out. Unset durations stay unset, as docker sends them.
fn restart_policy(policy: &RestartPolicy) -> api::RestartPolicy {
    let swarm = defaults::restart_policy();
    api::RestartPolicy {
        condition: policy.condition.map_or(swarm.condition, |c| c as i32),
        delay: policy.delay.map(proto_duration),
        max_attempts: policy.max_attempts.unwrap_or(swarm.max_attempts),
        window: policy.window.map(proto_duration),
    }
}

/// The file's update or rollback config, Swarm's (`spec::defaults`) filling the parallelism,
/// failure action, ratio and order it leaves out. Unset durations stay unset, as docker sends
/// them.
fn update_config(config: &UpdateConfig) -> api::UpdateConfig {
    let swarm = defaults::update_config();
    api::UpdateConfig {
        parallelism: config.parallelism.unwrap_or(swarm.parallelism),
        delay: config.delay.map(proto_duration),
        failure_action: config
            .failure_action
            .map_or(swarm.failure_action, |action| action as i32),
        monitor: config.monitor.map(proto_duration),
        max_failure_ratio: config
            .max_failure_ratio
            .map_or(swarm.max_failure_ratio, |ratio| ratio as f32),
        order: config.order.map_or(swarm.order, |order| order as i32),
    }
}
