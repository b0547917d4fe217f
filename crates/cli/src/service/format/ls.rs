//! `service ls`: one row per service, with its mode, replicas and published ports.

use serde_json::{Value, json};
use shoal_proto::api;

use super::*;

/// `service ls`'s PORTS column: ingress ports, consecutive ones grouped into ranges as docker does.
pub(crate) fn service_ports(service: &api::Service) -> String {
    let mut ports: Vec<&api::PortConfig> = service
        .endpoint
        .as_ref()
        .map(|endpoint| endpoint.ports.iter().collect())
        .unwrap_or_default();
    ports.sort_by(|a, b| {
        protocol_name(a.protocol)
            .cmp(protocol_name(b.protocol))
            .then(a.published_port.cmp(&b.published_port))
    });
    struct Range {
        published: (u32, u32),
        target: (u32, u32),
        protocol: &'static str,
    }
    let render = |range: &Range| {
        let side = |(start, end): (u32, u32)| {
            if end > start {
                format!("{start}-{end}")
            } else {
                start.to_string()
            }
        };
        format!(
            "*:{}->{}/{}",
            side(range.published),
            side(range.target),
            range.protocol
        )
    };
    let mut out = Vec::new();
    let mut current: Option<Range> = None;
    for port in ports {
        // Only the routing mesh's ports, once the swarm gave them a number.
        if api::port_config::PublishMode::try_from(port.publish_mode)
            != Ok(api::port_config::PublishMode::Ingress)
            || port.published_port == 0
        {
            continue;
        }
        let protocol = protocol_name(port.protocol);
        if let Some(range) = current.as_mut() {
            let is_range = range.target.1 != range.target.0;
            let overlaps = port.target_port <= range.target.1;
            let consecutive = port.published_port.wrapping_sub(range.published.1) <= 1
                && port.target_port.wrapping_sub(range.target.1) <= 1;
            if protocol == range.protocol && consecutive && !(is_range && overlaps) {
                range.published.1 = port.published_port;
                range.target.1 = port.target_port;
                continue;
            }
            out.push(render(range));
        }
        current = Some(Range {
            published: (port.published_port, port.published_port),
            target: (port.target_port, port.target_port),
            protocol,
        });
    }
    if let Some(range) = &current {
        out.push(render(range));
    }
    out.join(", ")
}

/// `service ls`'s REPLICAS column, from the server's count of running, desired and completed tasks.
pub(crate) fn replicas_text(spec: &api::ServiceSpec, status: &api::ServiceStatus) -> String {
    let (running, desired, completed) = (
        status.running_tasks,
        status.desired_tasks,
        status.completed_tasks,
    );
    match &spec.mode {
        Some(api::service_spec::Mode::ReplicatedJob(job)) => format!(
            "{running}/{desired} ({completed}/{} completed)",
            job.total_completions
        ),
        Some(api::service_spec::Mode::GlobalJob(_)) => format!(
            "{running}/{desired} ({completed}/{} completed)",
            desired + completed
        ),
        Some(api::service_spec::Mode::Replicated(_)) => {
            let max = spec
                .task
                .as_ref()
                .and_then(|task| task.placement.as_ref())
                .map_or(0, |placement| placement.max_replicas);
            if max > 0 {
                format!("{running}/{desired} (max {max} per node)")
            } else {
                format!("{running}/{desired}")
            }
        }
        _ => format!("{running}/{desired}"),
    }
}

/// One line of `service ls`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ServiceRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) mode: String,
    pub(crate) replicas: String,
    pub(crate) image: String,
    pub(crate) ports: String,
}

impl ListRow for ServiceRow {
    fn id(&self) -> &str {
        &self.id
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.mode.clone(),
            self.replicas.clone(),
            self.image.clone(),
            self.ports.clone(),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "ID": self.id, "Name": self.name, "Mode": self.mode,
            "Replicas": self.replicas, "Image": self.image, "Ports": self.ports,
        })
    }
}

pub(crate) const SERVICE_HEADER: [&str; 6] = ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"];

/// The rows of `service ls`, sorted by name as docker sorts them. `statuses` is parallel to
/// `services`; a missing status counts as zero.
pub(crate) fn service_rows(
    services: &[api::Service],
    statuses: &[api::ServiceStatus],
) -> Vec<ServiceRow> {
    let default_status = api::ServiceStatus::default();
    let mut rows: Vec<ServiceRow> = services
        .iter()
        .enumerate()
        .map(|(i, service)| {
            let spec = service.spec.clone().unwrap_or_default();
            let status = statuses.get(i).unwrap_or(&default_status);
            ServiceRow {
                id: truncate_id(&service.id).to_owned(),
                name: service_name(service).to_owned(),
                mode: mode_name(&spec).to_owned(),
                replicas: replicas_text(&spec, status),
                image: container(spec.task.as_ref())
                    .map(|c| display_image(&c.image))
                    .unwrap_or_default(),
                ports: service_ports(service),
            }
        })
        .collect();
    rows.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    rows
}

pub(crate) fn service_name(service: &api::Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.annotations.as_ref())
        .map_or("", |annotations| annotations.name.as_str())
}
