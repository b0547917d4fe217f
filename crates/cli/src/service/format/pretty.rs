//! `service inspect --pretty`: docker's text template, for the fields shoal has.

use std::collections::HashMap;

use shoal_proto::api;
use spec::enums::text_of;

use super::*;

/// The networks a service's tasks attach to, as its spec names them (ids, once stored).
pub(crate) fn task_networks(service: &api::Service) -> &[api::NetworkAttachmentConfig] {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.task.as_ref())
        .map_or(&[], |task| task.networks.as_slice())
}

/// `service inspect --pretty`: docker's template, for the fields shoal has. `network_names`
/// gives the names of the networks by id (an id it lacks is shown as is).
pub(crate) fn service_pretty(
    service: &api::Service,
    network_names: &HashMap<String, String>,
) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let container = container(Some(&task)).cloned().unwrap_or_default();
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    identity_and_mode(service, &spec, &annotations, &mut line);
    placement_and_policies(&spec, &task, &mut line);
    container_and_mounts(&container, &mut line);
    resources(&task, &container, &mut line);
    networks(service, network_names, &mut line);
    endpoint_and_health(service, &spec, &container, &mut line);
    out
}

/// ID, name, labels, the mode and the update status.
fn identity_and_mode(
    service: &api::Service,
    spec: &api::ServiceSpec,
    annotations: &api::Annotations,
    line: &mut dyn FnMut(String),
) {
    line(String::new());
    line(format!("ID:\t\t{}", service.id));
    line(format!("Name:\t\t{}", annotations.name));
    if !annotations.labels.is_empty() {
        line("Labels:".into());
        let sorted: std::collections::BTreeMap<_, _> = annotations.labels.iter().collect();
        for (key, value) in sorted {
            if value.is_empty() {
                line(format!(" {key}"));
            } else {
                line(format!(" {key}={value}"));
            }
        }
    }
    match &spec.mode {
        Some(api::service_spec::Mode::Global(_)) => line("Service Mode:\tGlobal".into()),
        Some(api::service_spec::Mode::Replicated(r)) => {
            line("Service Mode:\tReplicated".into());
            line(format!(" Replicas:\t{}", r.replicas));
        }
        Some(api::service_spec::Mode::ReplicatedJob(job)) => {
            line("Service Mode:\tReplicated Job".into());
            line(format!(" Max Concurrent:\t{}", job.max_concurrent));
            line(format!(" Total Completions:\t{}", job.total_completions));
        }
        Some(api::service_spec::Mode::GlobalJob(_)) => line("Service Mode:\tGlobal Job".into()),
        None => line("Service Mode:".into()),
    }
    if let Some(status) = &service.update_status
        && !update_state_name(status.state).is_empty()
    {
        line("UpdateStatus:".into());
        line(format!(" State:\t\t{}", update_state_name(status.state)));
        if status.started_at.is_some() {
            line(format!(
                " Started:\t{}",
                go_time_string(status.started_at.as_ref())
            ));
        }
        if status.completed_at.is_some() {
            line(format!(
                " Completed:\t{}",
                go_time_string(status.completed_at.as_ref())
            ));
        }
        line(format!(" Message:\t{}", status.message));
    }
}

/// Placement, and the update and rollback configs.
fn placement_and_policies(
    spec: &api::ServiceSpec,
    task: &api::TaskSpec,
    line: &mut dyn FnMut(String),
) {
    line("Placement:".into());
    if let Some(placement) = &task.placement {
        if !placement.constraints.is_empty() {
            line(format!(
                " Constraints:\t[{}]",
                placement.constraints.join(" ")
            ));
        }
        let preferences: Vec<String> = placement
            .preferences
            .iter()
            .filter_map(|p| {
                p.preference
                    .as_ref()
                    .map(|api::placement::preference::Preference::Spread(s)| {
                        format!("{{Spread={}}}", s.spread_descriptor)
                    })
            })
            .collect();
        if !preferences.is_empty() {
            line(format!(" Preferences:   [{}]", preferences.join(" ")));
        }
        if placement.max_replicas > 0 {
            line(format!(
                " Max Replicas Per Node:   {}",
                placement.max_replicas
            ));
        }
    }
    for (title, config, order_title) in [
        ("UpdateConfig", &spec.update, "Update order:      "),
        ("RollbackConfig", &spec.rollback, "Rollback order:    "),
    ] {
        let Some(config) = config else { continue };
        line(format!("{title}:"));
        line(format!(" Parallelism:\t{}", config.parallelism));
        if let Some(delay) = config.delay.as_ref().filter(|d| duration_nanos(d) > 0) {
            line(format!(" Delay:\t\t{}", go_duration(Some(delay))));
        }
        line(format!(
            " On failure:\t{}",
            text_of::<api::update_config::FailureAction>(config.failure_action)
        ));
        if let Some(monitor) = config.monitor.as_ref().filter(|d| duration_nanos(d) > 0) {
            line(format!(
                " Monitoring Period: {}",
                go_duration(Some(monitor))
            ));
        }
        line(format!(" Max failure ratio: {}", config.max_failure_ratio));
        line(format!(
            " {order_title}{}",
            text_of::<api::update_config::UpdateOrder>(config.order)
        ));
    }
}

/// The container's image, command, environment and user, and its mounts.
fn container_and_mounts(container: &api::ContainerSpec, line: &mut dyn FnMut(String)) {
    line("ContainerSpec:".into());
    line(format!(" Image:\t\t{}", container.image));
    if !container.args.is_empty() {
        line(format!(" Args:\t\t{} ", container.args.join(" ")));
    }
    if !container.env.is_empty() {
        line(format!(" Env:\t\t{} ", container.env.join(" ")));
    }
    if !container.dir.is_empty() {
        line(format!(" Dir:\t\t{}", container.dir));
    }
    if let Some(init) = container.init {
        line(format!(" Init:\t\t{init}"));
    }
    if !container.user.is_empty() {
        line(format!(" User: {}", container.user));
    }
    if !container.mounts.is_empty() {
        line("Mounts:".into());
        for mount in &container.mounts {
            line(format!(" Target:\t{}", mount.target));
            line(format!("  Source:\t{}", mount.source));
            line(format!("  ReadOnly:\t{}", mount.readonly));
            line(format!("  Type:\t\t{}", mount_type_name(mount.r#type)));
        }
    }
}

/// Reservations, limits and the PIDs limit.
fn resources(task: &api::TaskSpec, container: &api::ContainerSpec, line: &mut dyn FnMut(String)) {
    let resources = task.resources.clone().unwrap_or_default();
    let reservations = resources.reservations.unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    let has_reservations = reservations.nano_cpus > 0 || reservations.memory_bytes > 0;
    let has_limits = limits.nano_cpus > 0 || limits.memory_bytes > 0;
    if has_reservations || has_limits {
        line("Resources:".into());
        if has_reservations {
            line(" Reservations:".into());
            if reservations.nano_cpus > 0 {
                line(format!("  CPU:\t\t{}", cpus_text(reservations.nano_cpus)));
            }
            if reservations.memory_bytes > 0 {
                line(format!(
                    "  Memory:\t{}",
                    spec::units::bytes_size(u64::try_from(reservations.memory_bytes).unwrap_or(0))
                ));
            }
        }
        if has_limits {
            line(" Limits:".into());
            if limits.nano_cpus > 0 {
                line(format!("  CPU:\t\t{}", cpus_text(limits.nano_cpus)));
            }
            if limits.memory_bytes > 0 {
                line(format!(
                    "  Memory:\t{}",
                    spec::units::bytes_size(u64::try_from(limits.memory_bytes).unwrap_or(0))
                ));
            }
        }
    }
    if container.pid_limit > 0 {
        line(format!("  PIDs:\t\t{}", container.pid_limit));
    }
}

/// `Networks:` and each network's name on one line, as docker's template spaces them.
fn networks(
    service: &api::Service,
    network_names: &HashMap<String, String>,
    line: &mut dyn FnMut(String),
) {
    let attachments = task_networks(service);
    if attachments.is_empty() {
        return;
    }
    let mut text = "Networks:".to_owned();
    for attachment in attachments {
        let name = network_names
            .get(&attachment.target)
            .filter(|name| !name.is_empty())
            .unwrap_or(&attachment.target);
        text.push(' ');
        text.push_str(name);
    }
    text.push(' ');
    line(text);
}

/// The endpoint mode, the published ports (as the swarm gave them; shoal adds each ingress
/// port's traffic policy) and the healthcheck.
fn endpoint_and_health(
    service: &api::Service,
    spec: &api::ServiceSpec,
    container: &api::ContainerSpec,
    line: &mut dyn FnMut(String),
) {
    // A spec without an endpoint has the default one, as the manager fills it in.
    let endpoint_mode = text_of::<api::endpoint_spec::ResolutionMode>(
        spec.endpoint.clone().unwrap_or_default().mode,
    );
    line(format!("Endpoint Mode:\t{endpoint_mode}"));
    let ports = service
        .endpoint
        .as_ref()
        .map(|endpoint| endpoint.ports.as_slice())
        .unwrap_or_default();
    if !ports.is_empty() {
        line("Ports:".into());
        let mut lines = Vec::new();
        for port in ports {
            lines.push(format!(" PublishedPort = {}", port.published_port));
            lines.push(format!("  Protocol = {}", protocol_name(port.protocol)));
            lines.push(format!("  TargetPort = {}", port.target_port));
            lines.push(format!(
                "  PublishMode = {}",
                publish_mode_name(port.publish_mode)
            ));
            if port.publish_mode() == api::port_config::PublishMode::Ingress {
                lines.push(format!(
                    "  TrafficPolicy = {}",
                    text_of::<api::port_config::TrafficPolicy>(port.traffic_policy)
                ));
            }
        }
        // Docker's template leaves a space after the last one.
        if let Some(last) = lines.last_mut() {
            last.push(' ');
        }
        lines.into_iter().for_each(&mut *line);
    }
    if let Some(health) = &container.healthcheck {
        line(" Healthcheck:".into());
        line(format!(
            "  Interval = {}",
            go_duration(health.interval.as_ref())
        ));
        line(format!("  Retries = {}", health.retries));
        line(format!(
            "  StartPeriod =\t{}",
            go_duration(health.start_period.as_ref())
        ));
        line(format!(
            "  Timeout =\t{}",
            go_duration(health.timeout.as_ref())
        ));
        if !health.test.is_empty() {
            line("  Tests:".into());
            for test in &health.test {
                line(format!("\t Test = {test}"));
            }
        }
    }
}
