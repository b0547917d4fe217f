//! The flags of `service create`, `update` and `scale`, and the pure functions that turn them into
//! a `ServiceSpec` (or change the current one) the way docker's CLI does. Every error names the
//! flag and says how to fix it. The process environment is passed in, for `--env KEY`, and the
//! ids of the networks `update` names, for `--network-add` and `--network-rm`.

use std::collections::HashMap;

use anyhow::{Context as _, anyhow, bail};
use shoal_proto::api;
use spec::enums::{ModeName, TextForm as _};

mod args;
mod container;
mod mounts;
mod networking;
mod payloads;
mod policy;
#[cfg(test)]
mod tests;
mod values;

pub(crate) use args::*;
pub(crate) use container::*;
pub(crate) use mounts::*;
use networking::*;
pub(crate) use networking::{NetworkIds, network_references};
pub(crate) use payloads::*;
use policy::*;
pub(crate) use values::*;

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
    let mode = match ModeName::parse(&args.mode).map_err(|error| error.in_field("--mode"))? {
        ModeName::Replicated => {
            if max_concurrent.is_some() {
                bail!(
                    "max-concurrent can only be used with replicated-job mode: add --mode replicated-job or drop --max-concurrent"
                );
            }
            api::service_spec::Mode::Replicated(api::ReplicatedService {
                replicas: replicas.unwrap_or(spec::defaults::REPLICAS),
            })
        }
        ModeName::ReplicatedJob => {
            let total = replicas.unwrap_or(spec::defaults::REPLICAS);
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
    container.dns_config = Some(Box::new(create_dns_config(args)?));
    container.hosts = create_hosts(args)?;
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
    let spec = api::ServiceSpec {
        annotations: Some(api::Annotations {
            name: args.name.clone().unwrap_or_default(),
            labels: key_values(&args.labels),
            indices: Vec::new(),
        }),
        task: Some(api::TaskSpec {
            runtime: Some(api::task_spec::Runtime::Container(container)),
            resources: resources.map(Box::new),
            restart,
            placement: Some(Box::new(api::Placement {
                constraints: args.constraints.clone(),
                preferences,
                platforms: Vec::new(),
                max_replicas: args.replicas_max_per_node.unwrap_or(0),
            })),
            networks: parse_networks("network", &args.networks)?,
            ..Default::default()
        }),
        mode: Some(mode),
        update: new_update_config(&args.update_policy.flags())?,
        rollback: new_update_config(&args.rollback_policy.flags())?,
        endpoint: Some(api::EndpointSpec {
            mode: parse_endpoint_mode(&args.endpoint_mode)?,
            ports: parse_publish("publish", &args.publish)?,
        }),
        ..Default::default()
    };
    check_ports(&spec)?;
    Ok(spec)
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
/// `network_ids` holds the id of each network [`network_references`] lists.
pub(crate) fn update_spec(
    mut spec: api::ServiceSpec,
    args: &UpdateArgs,
    lookup_env: &dyn Fn(&str) -> Option<String>,
    network_ids: &NetworkIds,
) -> anyhow::Result<api::ServiceSpec> {
    update_mode(&mut spec, args)?;
    update_networks(&mut spec, args, network_ids)?;
    update_endpoint_mode(&mut spec, args)?;
    update_ports(&mut spec, args)?;
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
    update_container(container, args, lookup_env)?;
    update_placement(task.placement.get_or_insert_default(), args)?;
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
    check_ports(&spec)?;
    Ok(spec)
}

/// `--replicas`, `--max-concurrent` and `--replicas-max-per-node`, each only where the mode has it.
fn update_mode(spec: &mut api::ServiceSpec, args: &UpdateArgs) -> anyhow::Result<()> {
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

    Ok(())
}

/// The container flags of `service update`.
fn update_container(
    container: &mut api::ContainerSpec,
    args: &UpdateArgs,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
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

    update_dns(container, args)?;
    update_hosts(container, args)?;
    update_mounts(container, args)?;
    update_payloads(container, args)
}

/// `--mount-add` and `--mount-rm`: an added mount replaces one with its target.
fn update_mounts(container: &mut api::ContainerSpec, args: &UpdateArgs) -> anyhow::Result<()> {
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

    Ok(())
}

/// `--secret-add/-rm` and `--config-add/-rm`: an added reference replaces one of its name.
fn update_payloads(container: &mut api::ContainerSpec, args: &UpdateArgs) -> anyhow::Result<()> {
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

    Ok(())
}

/// The placement flags of `service update`: constraints, preferences and the per-node maximum.
fn update_placement(placement: &mut api::Placement, args: &UpdateArgs) -> anyhow::Result<()> {
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

    Ok(())
}
