//! Services as Docker shapes them: the `ServiceSpec` both ways (what `docker service create`
//! and `update` send, what `inspect` shows), the `Service` of `GET /services` with its endpoint,
//! update and job status, and the `ServiceStatus` of `GET /services?status=true`.

use serde_json::{Map, Value, json};
use shoal_proto::api;
use spec::enums::text_of;

use super::ShapeError;
use super::common::{
    annotations_from_json, duration_nanos, insert_meta, insert_nonempty, labels_json, rfc3339_nano,
};
use super::read::Object;
use super::task_spec::{
    CONTAINER_RUNTIME, networks_from_json, networks_json, task_template_from_json,
    task_template_json,
};

/// A published port's protocol in Docker's word.
pub fn protocol_name(protocol: i32) -> &'static str {
    text_of::<api::port_config::Protocol>(protocol)
}

/// A published port's mode in Docker's word.
pub fn publish_mode_name(mode: i32) -> &'static str {
    text_of::<api::port_config::PublishMode>(mode)
}

/// Docker's word for where a rolling update stands; empty while there is none.
pub fn update_state_name(state: i32) -> &'static str {
    use api::update_status::UpdateState as U;
    match U::try_from(state) {
        Ok(U::Updating) => "updating",
        Ok(U::Paused) => "paused",
        Ok(U::Completed) => "completed",
        Ok(U::RollbackStarted) => "rollback_started",
        Ok(U::RollbackPaused) => "rollback_paused",
        Ok(U::RollbackCompleted) => "rollback_completed",
        _ => "",
    }
}

fn update_config_json(config: &api::UpdateConfig) -> Value {
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

fn update_config_from_json(object: &Object<'_>) -> Result<api::UpdateConfig, ShapeError> {
    use api::update_config::{FailureAction, UpdateOrder};
    Ok(api::UpdateConfig {
        parallelism: object.uint64("Parallelism")?,
        delay: object.nonzero_duration("Delay")?,
        failure_action: object.word("FailureAction", FailureAction::Pause)? as i32,
        monitor: object.nonzero_duration("Monitor")?,
        max_failure_ratio: object.float32("MaxFailureRatio")?,
        order: object.word("Order", UpdateOrder::StopFirst)? as i32,
    })
}

fn mode_json(mode: Option<&api::service_spec::Mode>) -> Value {
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

/// Docker's `ServiceMode`: one mode at most; none leaves the mode to the manager's default.
fn mode_from_json(object: &Object<'_>) -> Result<Option<api::service_spec::Mode>, ShapeError> {
    use api::service_spec::Mode;
    let Some(mode) = object.object("Mode", "swarm.ServiceMode")? else {
        return Ok(None);
    };
    let mut modes = Vec::new();
    if mode.object("Global", "swarm.GlobalService")?.is_some() {
        modes.push(Mode::Global(api::GlobalService {}));
    }
    if mode.object("GlobalJob", "swarm.GlobalJob")?.is_some() {
        modes.push(Mode::GlobalJob(api::GlobalJob {}));
    }
    if let Some(job) = mode.object("ReplicatedJob", "swarm.ReplicatedJob")? {
        // Docker's defaults: one task at a time, as many completions as run at once.
        let max_concurrent = job.optional_uint64("MaxConcurrent")?.unwrap_or(1);
        modes.push(Mode::ReplicatedJob(api::ReplicatedJob {
            max_concurrent,
            total_completions: job
                .optional_uint64("TotalCompletions")?
                .unwrap_or(max_concurrent),
        }));
    }
    if let Some(replicated) = mode.object("Replicated", "swarm.ReplicatedService")? {
        modes.push(Mode::Replicated(api::ReplicatedService {
            replicas: replicated
                .optional_uint64("Replicas")?
                .unwrap_or(spec::defaults::REPLICAS),
        }));
    }
    if modes.len() > 1 {
        return Err(object.invalid(
            "Mode",
            "give one of Replicated, Global, ReplicatedJob and GlobalJob, not several",
        ));
    }
    Ok(modes.pop())
}

/// Docker's `PortConfig`, of a spec, an endpoint or a task's published ports.
pub(crate) fn port_json(port: &api::PortConfig) -> Value {
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

/// A port of Docker's `PortConfig`. Docker's clients drop shoal's `TrafficPolicy` when they
/// send back a spec they read, so a port without one keeps the policy of the same port among
/// the `current` ones.
fn port_from_json(
    object: &Object<'_>,
    current: &[api::PortConfig],
) -> Result<api::PortConfig, ShapeError> {
    use api::port_config::{Protocol, PublishMode, TrafficPolicy};
    let mut port = api::PortConfig {
        name: object.string("Name")?,
        protocol: object.word("Protocol", Protocol::Tcp)? as i32,
        target_port: object.uint32("TargetPort", "uint32")?,
        published_port: object.uint32("PublishedPort", "uint32")?,
        publish_mode: object.word("PublishMode", PublishMode::Ingress)? as i32,
        traffic_policy: TrafficPolicy::PreferLocal as i32,
    };
    port.traffic_policy = if object.has("TrafficPolicy") {
        object.word("TrafficPolicy", TrafficPolicy::PreferLocal)? as i32
    } else {
        current
            .iter()
            .find(|kept| {
                (
                    kept.protocol,
                    kept.target_port,
                    kept.published_port,
                    kept.publish_mode,
                ) == (
                    port.protocol,
                    port.target_port,
                    port.published_port,
                    port.publish_mode,
                )
            })
            .map_or(port.traffic_policy, |kept| kept.traffic_policy)
    };
    Ok(port)
}

fn endpoint_spec_json(spec: &api::EndpointSpec) -> Value {
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

fn endpoint_spec_from_json(
    object: &Object<'_>,
    current: Option<&api::EndpointSpec>,
) -> Result<api::EndpointSpec, ShapeError> {
    use api::endpoint_spec::ResolutionMode;
    let current_ports = current.map_or(&[][..], |endpoint| endpoint.ports.as_slice());
    Ok(api::EndpointSpec {
        mode: object.word("Mode", ResolutionMode::Vip)? as i32,
        ports: object
            .objects("Ports", "swarm.PortConfig")?
            .iter()
            .map(|port| port_from_json(port, current_ports))
            .collect::<Result<_, _>>()?,
    })
}

/// A service spec in the shape of Docker's `ServiceSpec` JSON.
pub fn service_spec_json(spec: &api::ServiceSpec) -> Value {
    let mut object = Map::new();
    let annotations = spec.annotations.clone().unwrap_or_default();
    object.insert("Name".into(), json!(annotations.name));
    object.insert("Labels".into(), labels_json(&annotations.labels));
    if let Some(task) = &spec.task {
        let mut template = task_template_json(task);
        // Docker names the runtime in a service's template only, not in its tasks' specs.
        template["Runtime"] = json!(CONTAINER_RUNTIME);
        object.insert("TaskTemplate".into(), template);
    }
    object.insert("Mode".into(), mode_json(spec.mode.as_ref()));
    if let Some(update) = &spec.update {
        object.insert("UpdateConfig".into(), update_config_json(update));
    }
    if let Some(rollback) = &spec.rollback {
        object.insert("RollbackConfig".into(), update_config_json(rollback));
    }
    // Deprecated in Docker for `TaskTemplate.Networks`, still shown while a spec has them.
    insert_nonempty(&mut object, "Networks", networks_json(&spec.networks));
    if let Some(endpoint) = &spec.endpoint {
        object.insert("EndpointSpec".into(), endpoint_spec_json(endpoint));
    }
    Value::Object(object)
}

/// The service spec of Docker's `ServiceSpec` JSON, the inverse of [`service_spec_json`].
///
/// `current` is the spec the service has now, when this is an update: what Docker's JSON can't
/// carry comes from it (the dependencies a compose file gave, registry credentials, the
/// addresses of network attachments, the traffic policy of a port the JSON names without one).
/// What Docker fills in when the JSON leaves it out is filled in as Docker does; Swarm's
/// defaults for what stays unset are the manager's to fill.
pub fn service_spec_from_json(
    value: &Value,
    current: Option<&api::ServiceSpec>,
) -> Result<api::ServiceSpec, ShapeError> {
    let object = Object::root(value, "ServiceSpec", "swarm.ServiceSpec")?;
    let current_networks = current.map_or(&[][..], |spec| spec.networks.as_slice());
    Ok(api::ServiceSpec {
        annotations: Some(annotations_from_json(&object)?),
        task: object
            .object("TaskTemplate", "swarm.TaskSpec")?
            .map(|task| task_template_from_json(&task, current.and_then(|spec| spec.task.as_ref())))
            .transpose()?,
        mode: mode_from_json(&object)?,
        update: object
            .object("UpdateConfig", "swarm.UpdateConfig")?
            .map(|update| update_config_from_json(&update))
            .transpose()?,
        rollback: object
            .object("RollbackConfig", "swarm.UpdateConfig")?
            .map(|rollback| update_config_from_json(&rollback))
            .transpose()?,
        networks: networks_from_json(&object, current_networks)?,
        endpoint: object
            .object("EndpointSpec", "swarm.EndpointSpec")?
            .map(|endpoint| {
                endpoint_spec_from_json(&endpoint, current.and_then(|spec| spec.endpoint.as_ref()))
            })
            .transpose()?,
        // shoal's own, from compose's `depends_on`: Docker has no field for it.
        depends_on: current
            .map(|spec| spec.depends_on.clone())
            .unwrap_or_default(),
    })
}

/// `GET /services/{id}` and `docker service inspect`: one service in Docker's shape.
pub fn service_inspect_json(service: &api::Service) -> Value {
    let mut object = Map::new();
    insert_meta(&mut object, &service.id, service.meta.as_ref());
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

/// Docker's `ServiceStatus` (`GET /services?status=true`), from the manager's counts.
pub fn service_status_json(status: &api::ServiceStatus) -> Value {
    json!({
        "RunningTasks": status.running_tasks,
        "DesiredTasks": status.desired_tasks,
        "CompletedTasks": status.completed_tasks,
    })
}
