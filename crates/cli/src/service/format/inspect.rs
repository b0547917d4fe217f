//! `service inspect`: the service as docker's JSON shapes it.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use shoal_proto::api;
use spec::enums::text_of;

use super::*;

pub(super) fn labels_json(labels: &HashMap<String, String>) -> Value {
    let sorted: std::collections::BTreeMap<&String, &String> = labels.iter().collect();
    json!(sorted)
}

pub(super) fn insert_nonempty(object: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0) || n.as_u64() == Some(0),
        Value::Bool(b) => !b,
    };
    if !empty {
        object.insert(key.to_owned(), value);
    }
}

pub(super) fn mount_json(mount: &api::Mount) -> Value {
    let mut object = Map::new();
    object.insert("Type".into(), json!(mount_type_name(mount.r#type)));
    insert_nonempty(&mut object, "Source", json!(mount.source));
    object.insert("Target".into(), json!(mount.target));
    insert_nonempty(&mut object, "ReadOnly", json!(mount.readonly));
    if let Some(bind) = &mount.bind_options {
        let mut options = Map::new();
        options.insert(
            "Propagation".into(),
            json!(propagation_name(bind.propagation)),
        );
        insert_nonempty(&mut options, "NonRecursive", json!(bind.nonrecursive));
        insert_nonempty(
            &mut options,
            "CreateMountpoint",
            json!(bind.create_mountpoint),
        );
        object.insert("BindOptions".into(), Value::Object(options));
    }
    if let Some(volume) = &mount.volume_options {
        let mut options = Map::new();
        insert_nonempty(&mut options, "NoCopy", json!(volume.nocopy));
        insert_nonempty(&mut options, "Labels", labels_json(&volume.labels));
        if let Some(driver) = &volume.driver_config {
            options.insert("DriverConfig".into(), driver_json(driver));
        }
        insert_nonempty(&mut options, "Subpath", json!(volume.subpath));
        object.insert("VolumeOptions".into(), Value::Object(options));
    }
    if let Some(tmpfs) = &mount.tmpfs_options {
        let mut options = Map::new();
        insert_nonempty(&mut options, "SizeBytes", json!(tmpfs.size_bytes));
        insert_nonempty(&mut options, "Mode", json!(tmpfs.mode));
        object.insert("TmpfsOptions".into(), Value::Object(options));
    }
    Value::Object(object)
}

pub(super) fn driver_json(driver: &api::Driver) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "Name", json!(driver.name));
    insert_nonempty(&mut object, "Options", labels_json(&driver.options));
    Value::Object(object)
}

pub(super) fn health_json(health: &api::HealthConfig) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "Test", json!(health.test));
    for (key, value) in [
        ("Interval", &health.interval),
        ("Timeout", &health.timeout),
        ("StartPeriod", &health.start_period),
        ("StartInterval", &health.start_interval),
    ] {
        if let Some(duration) = value {
            insert_nonempty(&mut object, key, json!(duration_nanos(duration)));
        }
    }
    insert_nonempty(&mut object, "Retries", json!(health.retries));
    Value::Object(object)
}

pub(super) fn container_json(container: &api::ContainerSpec) -> Value {
    let mut object = Map::new();
    object.insert("Image".into(), json!(container.image));
    insert_nonempty(&mut object, "Labels", labels_json(&container.labels));
    insert_nonempty(&mut object, "Command", json!(container.command));
    insert_nonempty(&mut object, "Args", json!(container.args));
    insert_nonempty(&mut object, "Hostname", json!(container.hostname));
    insert_nonempty(&mut object, "Env", json!(container.env));
    insert_nonempty(&mut object, "Dir", json!(container.dir));
    insert_nonempty(&mut object, "User", json!(container.user));
    insert_nonempty(&mut object, "Groups", json!(container.groups));
    if let Some(init) = container.init {
        object.insert("Init".into(), json!(init));
    }
    insert_nonempty(&mut object, "TTY", json!(container.tty));
    insert_nonempty(&mut object, "OpenStdin", json!(container.open_stdin));
    insert_nonempty(&mut object, "ReadOnly", json!(container.read_only));
    insert_nonempty(
        &mut object,
        "Mounts",
        Value::Array(container.mounts.iter().map(mount_json).collect()),
    );
    insert_nonempty(&mut object, "StopSignal", json!(container.stop_signal));
    if let Some(grace) = &container.stop_grace_period {
        object.insert("StopGracePeriod".into(), json!(duration_nanos(grace)));
    }
    if let Some(health) = &container.healthcheck {
        object.insert("Healthcheck".into(), health_json(health));
    }
    insert_nonempty(&mut object, "Hosts", json!(container.hosts));
    if let Some(dns) = &container.dns_config {
        // Docker's `DNSConfig`, each list left out when empty.
        let mut value = Map::new();
        insert_nonempty(&mut value, "Nameservers", json!(dns.nameservers));
        insert_nonempty(&mut value, "Search", json!(dns.search));
        insert_nonempty(&mut value, "Options", json!(dns.options));
        object.insert("DNSConfig".into(), Value::Object(value));
    }
    let secrets: Vec<Value> = container
        .secrets
        .iter()
        .map(|secret| {
            let mut object = Map::new();
            if let Some(api::secret_reference::Target::File(file)) = &secret.target {
                object.insert(
                    "File".into(),
                    json!({"Name": file.name, "UID": file.uid, "GID": file.gid, "Mode": file.mode.unwrap_or(spec::defaults::FILE_MODE)}),
                );
            }
            object.insert("SecretID".into(), json!(secret.secret_id));
            object.insert("SecretName".into(), json!(secret.secret_name));
            Value::Object(object)
        })
        .collect();
    insert_nonempty(&mut object, "Secrets", Value::Array(secrets));
    let configs: Vec<Value> = container
        .configs
        .iter()
        .map(|config| {
            let mut object = Map::new();
            match &config.target {
                Some(api::config_reference::Target::File(file)) => {
                    object.insert(
                        "File".into(),
                        json!({"Name": file.name, "UID": file.uid, "GID": file.gid, "Mode": file.mode.unwrap_or(spec::defaults::FILE_MODE)}),
                    );
                }
                Some(api::config_reference::Target::Runtime(_)) => {
                    object.insert("Runtime".into(), json!({}));
                }
                None => {}
            }
            object.insert("ConfigID".into(), json!(config.config_id));
            object.insert("ConfigName".into(), json!(config.config_name));
            Value::Object(object)
        })
        .collect();
    insert_nonempty(&mut object, "Configs", Value::Array(configs));
    insert_nonempty(&mut object, "Sysctls", labels_json(&container.sysctls));
    insert_nonempty(
        &mut object,
        "CapabilityAdd",
        json!(container.capability_add),
    );
    insert_nonempty(
        &mut object,
        "CapabilityDrop",
        json!(container.capability_drop),
    );
    let ulimits: Vec<Value> = container
        .ulimits
        .iter()
        .map(|ulimit| json!({"Name": ulimit.name, "Soft": ulimit.soft, "Hard": ulimit.hard}))
        .collect();
    insert_nonempty(&mut object, "Ulimits", Value::Array(ulimits));
    object.insert("Isolation".into(), json!("default"));
    Value::Object(object)
}

pub(super) fn resources_json(resources: &api::Resources, pids: i64) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "NanoCPUs", json!(resources.nano_cpus));
    insert_nonempty(&mut object, "MemoryBytes", json!(resources.memory_bytes));
    insert_nonempty(&mut object, "Pids", json!(pids));
    Value::Object(object)
}

pub(super) fn update_config_json(config: &api::UpdateConfig) -> Value {
    use api::update_config::{FailureAction, UpdateOrder};
    let mut object = Map::new();
    object.insert("Parallelism".into(), json!(config.parallelism));
    if let Some(delay) = &config.delay {
        insert_nonempty(&mut object, "Delay", json!(duration_nanos(delay)));
    }
    object.insert(
        "FailureAction".into(),
        json!(text_of::<FailureAction>(config.failure_action)),
    );
    if let Some(monitor) = &config.monitor {
        insert_nonempty(&mut object, "Monitor", json!(duration_nanos(monitor)));
    }
    object.insert("MaxFailureRatio".into(), json!(config.max_failure_ratio));
    object.insert("Order".into(), json!(text_of::<UpdateOrder>(config.order)));
    Value::Object(object)
}

pub(super) fn task_template_json(task: &api::TaskSpec) -> Value {
    let mut object = Map::new();
    let container = container(Some(task));
    if let Some(container) = container {
        object.insert("ContainerSpec".into(), container_json(container));
    }
    let pids = container.map_or(0, |c| c.pid_limit);
    let mut resources = Map::new();
    let requirements = task.resources.clone().unwrap_or_default();
    let limits = requirements.limits.unwrap_or_default();
    let limits = resources_json(&limits, pids);
    insert_nonempty(&mut resources, "Limits", limits);
    if let Some(reservations) = &requirements.reservations {
        insert_nonempty(
            &mut resources,
            "Reservations",
            resources_json(reservations, 0),
        );
    }
    object.insert("Resources".into(), Value::Object(resources));
    if let Some(restart) = &task.restart {
        let mut policy = Map::new();
        policy.insert(
            "Condition".into(),
            json!(restart_condition_name(restart.condition)),
        );
        if let Some(delay) = &restart.delay {
            policy.insert("Delay".into(), json!(duration_nanos(delay)));
        }
        policy.insert("MaxAttempts".into(), json!(restart.max_attempts));
        if let Some(window) = &restart.window {
            policy.insert("Window".into(), json!(duration_nanos(window)));
        }
        object.insert("RestartPolicy".into(), Value::Object(policy));
    }
    if let Some(placement) = &task.placement {
        let mut value = Map::new();
        insert_nonempty(&mut value, "Constraints", json!(placement.constraints));
        let preferences: Vec<Value> = placement
            .preferences
            .iter()
            .filter_map(|p| {
                p.preference.as_ref().map(
                    |api::placement::preference::Preference::Spread(spread)| {
                        json!({"Spread": {"SpreadDescriptor": spread.spread_descriptor}})
                    },
                )
            })
            .collect();
        insert_nonempty(&mut value, "Preferences", Value::Array(preferences));
        insert_nonempty(&mut value, "MaxReplicas", json!(placement.max_replicas));
        let platforms: Vec<Value> = placement
            .platforms
            .iter()
            .map(|p| json!({"Architecture": p.architecture, "OS": p.os}))
            .collect();
        insert_nonempty(&mut value, "Platforms", Value::Array(platforms));
        object.insert("Placement".into(), Value::Object(value));
    }
    if let Some(driver) = &task.log_driver {
        object.insert("LogDriver".into(), driver_json(driver));
    }
    let networks: Vec<Value> = task
        .networks
        .iter()
        .map(|n| {
            let mut value = Map::new();
            value.insert("Target".into(), json!(n.target));
            insert_nonempty(&mut value, "Aliases", json!(n.aliases));
            insert_nonempty(
                &mut value,
                "DriverOpts",
                labels_json(&n.driver_attachment_opts),
            );
            Value::Object(value)
        })
        .collect();
    insert_nonempty(&mut object, "Networks", Value::Array(networks));
    object.insert("ForceUpdate".into(), json!(task.force_update));
    object.insert("Runtime".into(), json!("container"));
    Value::Object(object)
}

pub(super) fn mode_json(mode: Option<&api::service_spec::Mode>) -> Value {
    match mode {
        Some(api::service_spec::Mode::Replicated(r)) => {
            json!({"Replicated": {"Replicas": r.replicas}})
        }
        Some(api::service_spec::Mode::Global(_)) => json!({"Global": {}}),
        Some(api::service_spec::Mode::ReplicatedJob(job)) => json!({"ReplicatedJob": {
            "MaxConcurrent": job.max_concurrent, "TotalCompletions": job.total_completions,
        }}),
        Some(api::service_spec::Mode::GlobalJob(_)) => json!({"GlobalJob": {}}),
        None => json!({}),
    }
}

pub(super) fn port_json(port: &api::PortConfig) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "Name", json!(port.name));
    object.insert("Protocol".into(), json!(protocol_name(port.protocol)));
    object.insert("TargetPort".into(), json!(port.target_port));
    insert_nonempty(&mut object, "PublishedPort", json!(port.published_port));
    object.insert(
        "PublishMode".into(),
        json!(publish_mode_name(port.publish_mode)),
    );
    // shoal's own: where the routing mesh sends a connection (Docker has only "cluster").
    if port.publish_mode() == api::port_config::PublishMode::Ingress {
        object.insert(
            "TrafficPolicy".into(),
            json!(text_of::<api::port_config::TrafficPolicy>(
                port.traffic_policy
            )),
        );
    }
    Value::Object(object)
}

pub(super) fn endpoint_spec_json(spec: &api::EndpointSpec) -> Value {
    let mut object = Map::new();
    object.insert(
        "Mode".into(),
        json!(text_of::<api::endpoint_spec::ResolutionMode>(spec.mode)),
    );
    insert_nonempty(
        &mut object,
        "Ports",
        Value::Array(spec.ports.iter().map(port_json).collect()),
    );
    Value::Object(object)
}

/// A service spec in the shape of docker's `ServiceSpec` JSON.
pub(crate) fn service_spec_json(spec: &api::ServiceSpec) -> Value {
    let mut object = Map::new();
    let annotations = spec.annotations.clone().unwrap_or_default();
    object.insert("Name".into(), json!(annotations.name));
    object.insert("Labels".into(), labels_json(&annotations.labels));
    if let Some(task) = &spec.task {
        object.insert("TaskTemplate".into(), task_template_json(task));
    }
    object.insert("Mode".into(), mode_json(spec.mode.as_ref()));
    if let Some(update) = &spec.update {
        object.insert("UpdateConfig".into(), update_config_json(update));
    }
    if let Some(rollback) = &spec.rollback {
        object.insert("RollbackConfig".into(), update_config_json(rollback));
    }
    if let Some(endpoint) = &spec.endpoint {
        object.insert("EndpointSpec".into(), endpoint_spec_json(endpoint));
    }
    Value::Object(object)
}

pub(super) fn version_json(meta: Option<&api::Meta>) -> Value {
    json!({"Index": meta.and_then(|m| m.version.as_ref()).map_or(0, |v| v.index)})
}

/// `service inspect`'s document for one service, in docker's shape.
pub(crate) fn service_inspect_json(service: &api::Service) -> Value {
    let meta = service.meta.as_ref();
    let mut object = Map::new();
    object.insert("ID".into(), json!(service.id));
    object.insert("Version".into(), version_json(meta));
    object.insert(
        "CreatedAt".into(),
        json!(rfc3339_nano(meta.and_then(|m| m.created_at.as_ref()))),
    );
    object.insert(
        "UpdatedAt".into(),
        json!(rfc3339_nano(meta.and_then(|m| m.updated_at.as_ref()))),
    );
    object.insert(
        "Spec".into(),
        service_spec_json(&service.spec.clone().unwrap_or_default()),
    );
    if let Some(previous) = &service.previous_spec {
        object.insert("PreviousSpec".into(), service_spec_json(previous));
    }
    let mut endpoint = Map::new();
    if let Some(value) = &service.endpoint {
        endpoint.insert(
            "Spec".into(),
            value
                .spec
                .as_ref()
                .map_or_else(|| json!({}), endpoint_spec_json),
        );
        insert_nonempty(
            &mut endpoint,
            "Ports",
            Value::Array(value.ports.iter().map(port_json).collect()),
        );
        let vips: Vec<Value> = value
            .virtual_ips
            .iter()
            .map(|vip| json!({"NetworkID": vip.network_id, "Addr": vip.addr}))
            .collect();
        insert_nonempty(&mut endpoint, "VirtualIPs", Value::Array(vips));
    } else {
        endpoint.insert("Spec".into(), json!({}));
    }
    object.insert("Endpoint".into(), Value::Object(endpoint));
    if let Some(status) = &service.update_status
        && !update_state_name(status.state).is_empty()
    {
        let mut value = Map::new();
        value.insert("State".into(), json!(update_state_name(status.state)));
        if status.started_at.is_some() {
            value.insert(
                "StartedAt".into(),
                json!(rfc3339_nano(status.started_at.as_ref())),
            );
        }
        if status.completed_at.is_some() {
            value.insert(
                "CompletedAt".into(),
                json!(rfc3339_nano(status.completed_at.as_ref())),
            );
        }
        value.insert("Message".into(), json!(status.message));
        object.insert("UpdateStatus".into(), Value::Object(value));
    }
    if let Some(job) = &service.job_status {
        let mut value = Map::new();
        value.insert(
            "JobIteration".into(),
            json!({"Index": job.job_iteration.as_ref().map_or(0, |v| v.index)}),
        );
        if job.last_execution.is_some() {
            value.insert(
                "LastExecution".into(),
                json!(rfc3339_nano(job.last_execution.as_ref())),
            );
        }
        object.insert("JobStatus".into(), Value::Object(value));
    }
    Value::Object(object)
}
