//! A task template as Docker's `TaskSpec`, both ways: the container, resources, restart
//! policy, placement, networks and log driver. Services and tasks both show it.

use serde_json::{Map, Value, json};
use shoal_proto::api;
use spec::enums::text_of;

use super::ShapeError;
use super::common::{driver_from_json, driver_json, duration_nanos, insert_nonempty, labels_json};
use super::container::{container_from_json, container_json, of_task};
use super::read::Object;

/// Docker's `Runtime` of a container task, the only kind shoal runs.
pub(crate) const CONTAINER_RUNTIME: &str = "container";

/// Docker's `GenericResource` list: named and discrete resources of a node or a reservation.
pub(crate) fn generic_resources_json(resources: &[api::GenericResource]) -> Value {
    use api::generic_resource::Resource;
    Value::Array(
        resources
            .iter()
            .filter_map(|resource| match resource.resource.as_ref()? {
                Resource::NamedResourceSpec(named) => Some(json!({
                    "NamedResourceSpec": {"Kind": named.kind, "Value": named.value},
                })),
                Resource::DiscreteResourceSpec(discrete) => Some(json!({
                    "DiscreteResourceSpec": {"Kind": discrete.kind, "Value": discrete.value},
                })),
            })
            .collect(),
    )
}

fn generic_resources_from_json(
    object: &Object<'_>,
) -> Result<Vec<api::GenericResource>, ShapeError> {
    use api::generic_resource::Resource;
    let mut resources = Vec::new();
    for resource in object.objects("GenericResources", "swarm.GenericResource")? {
        if let Some(named) = resource.object("NamedResourceSpec", "swarm.NamedGenericResource")? {
            resources.push(api::GenericResource {
                resource: Some(Resource::NamedResourceSpec(api::NamedGenericResource {
                    kind: named.string("Kind")?,
                    value: named.string("Value")?,
                })),
            });
        }
        if let Some(discrete) =
            resource.object("DiscreteResourceSpec", "swarm.DiscreteGenericResource")?
        {
            resources.push(api::GenericResource {
                resource: Some(Resource::DiscreteResourceSpec(
                    api::DiscreteGenericResource {
                        kind: discrete.string("Kind")?,
                        value: discrete.int64("Value")?,
                    },
                )),
            });
        }
    }
    Ok(resources)
}

/// Docker's `Limit`: CPUs, memory, and the container's PIDs limit.
fn limits_json(limits: &api::Resources, pids: i64) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "NanoCPUs", json!(limits.nano_cpus));
    insert_nonempty(&mut object, "MemoryBytes", json!(limits.memory_bytes));
    insert_nonempty(&mut object, "Pids", json!(pids));
    Value::Object(object)
}

/// Docker's `Resources` of a reservation: CPUs, memory and generic resources.
fn reservations_json(reservations: &api::Resources) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "NanoCPUs", json!(reservations.nano_cpus));
    insert_nonempty(&mut object, "MemoryBytes", json!(reservations.memory_bytes));
    insert_nonempty(
        &mut object,
        "GenericResources",
        generic_resources_json(&reservations.generic),
    );
    Value::Object(object)
}

fn restart_condition_name(condition: i32) -> &'static str {
    text_of::<api::restart_policy::RestartCondition>(condition)
}

fn placement_json(placement: &api::Placement) -> Value {
    let mut value = Map::new();
    insert_nonempty(&mut value, "Constraints", json!(placement.constraints));
    let preferences: Vec<Value> = placement
        .preferences
        .iter()
        .filter_map(|p| {
            p.preference
                .as_ref()
                .map(|api::placement::preference::Preference::Spread(spread)| {
                    json!({"Spread": {"SpreadDescriptor": spread.spread_descriptor}})
                })
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
    Value::Object(value)
}

fn placement_from_json(object: &Object<'_>) -> Result<api::Placement, ShapeError> {
    use api::placement::{Preference, preference};
    let mut preferences = Vec::new();
    for preference in object.objects("Preferences", "swarm.PlacementPreference")? {
        // A preference without a spread is skipped, as Docker's daemon skips it.
        if let Some(spread) = preference.object("Spread", "swarm.SpreadOver")? {
            preferences.push(Preference {
                preference: Some(preference::Preference::Spread(preference::Spread {
                    spread_descriptor: spread.string("SpreadDescriptor")?,
                })),
            });
        }
    }
    Ok(api::Placement {
        constraints: object.strings("Constraints")?,
        preferences,
        platforms: object
            .objects("Platforms", "swarm.Platform")?
            .iter()
            .map(|platform| {
                Ok(api::Platform {
                    architecture: platform.string("Architecture")?,
                    os: platform.string("OS")?,
                })
            })
            .collect::<Result<_, ShapeError>>()?,
        max_replicas: object.uint64("MaxReplicas")?,
    })
}

/// Docker's `NetworkAttachmentConfig` list, of a task template or (deprecated) of a service.
pub(crate) fn networks_json(networks: &[api::NetworkAttachmentConfig]) -> Value {
    Value::Array(
        networks
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
            .collect(),
    )
}

/// The attachments of Docker's `Networks`. Docker's JSON has no addresses: an attachment to a
/// network the `current` ones also attach to keeps theirs (a compose file's `ipv4_address`).
pub(crate) fn networks_from_json(
    object: &Object<'_>,
    current: &[api::NetworkAttachmentConfig],
) -> Result<Vec<api::NetworkAttachmentConfig>, ShapeError> {
    object
        .objects("Networks", "swarm.NetworkAttachmentConfig")?
        .iter()
        .map(|network| {
            let target = network.string("Target")?;
            let addresses = current
                .iter()
                .find(|attachment| attachment.target == target)
                .map(|attachment| attachment.addresses.clone())
                .unwrap_or_default();
            Ok(api::NetworkAttachmentConfig {
                target,
                aliases: network.strings("Aliases")?,
                addresses,
                driver_attachment_opts: network.string_map("DriverOpts")?,
            })
        })
        .collect()
}

/// Docker's `TaskSpec`, as a task's `Spec` shows it; a service's `TaskTemplate` adds its
/// `Runtime`.
pub(crate) fn task_template_json(task: &api::TaskSpec) -> Value {
    let mut object = Map::new();
    let container = of_task(Some(task));
    if let Some(container) = container {
        object.insert("ContainerSpec".into(), container_json(container));
    }
    let pids = container.map_or(0, |c| c.pid_limit);
    let mut resources = Map::new();
    let requirements = task.resources.clone().unwrap_or_default();
    let limits = requirements.limits.unwrap_or_default();
    insert_nonempty(&mut resources, "Limits", limits_json(&limits, pids));
    if let Some(reservations) = &requirements.reservations {
        insert_nonempty(
            &mut resources,
            "Reservations",
            reservations_json(reservations),
        );
    }
    // Newer API versions' fields; Docker 28's CLI neither sends nor shows them.
    if let Some(swap) = requirements.swap_bytes {
        resources.insert("SwapBytes".into(), json!(swap));
    }
    if let Some(swappiness) = requirements.memory_swappiness {
        resources.insert("MemorySwappiness".into(), json!(swappiness));
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
        object.insert("Placement".into(), placement_json(placement));
    }
    if let Some(driver) = &task.log_driver {
        object.insert("LogDriver".into(), driver_json(driver));
    }
    insert_nonempty(&mut object, "Networks", networks_json(&task.networks));
    object.insert("ForceUpdate".into(), json!(task.force_update));
    Value::Object(object)
}

/// `Resources` of Docker's `TaskSpec`: the requirements (unset when they set nothing) and the
/// container's PIDs limit, which Docker puts among the limits.
fn resources_from_json(
    object: &Object<'_>,
) -> Result<(Option<api::ResourceRequirements>, i64), ShapeError> {
    let Some(resources) = object.object("Resources", "swarm.ResourceRequirements")? else {
        return Ok((None, 0));
    };
    let mut pids = 0;
    let limits = resources
        .object("Limits", "swarm.Limit")?
        .map(|limits| {
            pids = limits.int64("Pids")?;
            Ok::<_, ShapeError>(api::Resources {
                nano_cpus: limits.int64("NanoCPUs")?,
                memory_bytes: limits.int64("MemoryBytes")?,
                generic: Vec::new(),
            })
        })
        .transpose()?;
    let reservations = resources
        .object("Reservations", "swarm.Resources")?
        .map(|reservations| {
            Ok::<_, ShapeError>(api::Resources {
                nano_cpus: reservations.int64("NanoCPUs")?,
                memory_bytes: reservations.int64("MemoryBytes")?,
                generic: generic_resources_from_json(&reservations)?,
            })
        })
        .transpose()?;
    // An empty `Limits` or `Reservations` asks for nothing, the same as none.
    let asked = |resources: Option<api::Resources>| {
        resources.filter(|resources| *resources != api::Resources::default())
    };
    let requirements = api::ResourceRequirements {
        limits: asked(limits),
        reservations: asked(reservations),
        swap_bytes: resources.optional_int64("SwapBytes")?,
        memory_swappiness: resources.optional_int64("MemorySwappiness")?,
    };
    let requirements =
        (requirements != api::ResourceRequirements::default()).then_some(requirements);
    Ok((requirements, pids))
}

fn restart_from_json(object: &Object<'_>) -> Result<api::RestartPolicy, ShapeError> {
    use api::restart_policy::RestartCondition;
    Ok(api::RestartPolicy {
        // Docker's daemon reads an empty condition as `any`.
        condition: object.word("Condition", RestartCondition::Any)? as i32,
        delay: object.duration("Delay")?,
        max_attempts: object.uint64("MaxAttempts")?,
        window: object.duration("Window")?,
    })
}

/// The task template of Docker's `TaskSpec`. `current` is the template the service has now, for
/// what Docker's JSON does not carry (registry credentials, attachment addresses).
pub(crate) fn task_template_from_json(
    object: &Object<'_>,
    current: Option<&api::TaskSpec>,
) -> Result<api::TaskSpec, ShapeError> {
    let runtime = object.string("Runtime")?;
    if !runtime.is_empty() && runtime != CONTAINER_RUNTIME {
        return Err(object.invalid(
            "Runtime",
            format!("shoal runs container tasks only, not {runtime:?}: use \"container\" with a ContainerSpec"),
        ));
    }
    let (resources, pids) = resources_from_json(object)?;
    let runtime = object
        .object("ContainerSpec", "swarm.ContainerSpec")?
        .map(|container| {
            let mut container = container_from_json(&container, of_task(current))?;
            container.pid_limit = pids;
            Ok::<_, ShapeError>(api::task_spec::Runtime::Container(container))
        })
        .transpose()?;
    let current_networks = current.map_or(&[][..], |task| task.networks.as_slice());
    Ok(api::TaskSpec {
        runtime,
        resources: resources.map(Box::new),
        restart: object
            .object("RestartPolicy", "swarm.RestartPolicy")?
            .map(|restart| restart_from_json(&restart))
            .transpose()?,
        placement: object
            .object("Placement", "swarm.Placement")?
            .map(|placement| placement_from_json(&placement).map(Box::new))
            .transpose()?,
        log_driver: driver_from_json(object, "LogDriver")?.map(Box::new),
        networks: networks_from_json(object, current_networks)?,
        force_update: object.uint64("ForceUpdate")?,
        resource_references: Vec::new(),
    })
}
