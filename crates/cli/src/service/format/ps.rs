//! `service ps`: one row per task, slots newest first, with docker's filters; and the task names
//! `service logs` prefixes its lines with.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use shoal_proto::api;

use super::*;

/// One line of `service ps`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TaskRow {
    pub(crate) id: String,
    /// With docker's ` \_ ` indent for older tasks of a slot, in tables only.
    pub(crate) table_name: String,
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) node: String,
    pub(crate) desired_state: String,
    pub(crate) current_state: String,
    pub(crate) error: String,
    pub(crate) ports: String,
}

impl ListRow for TaskRow {
    fn id(&self) -> &str {
        &self.id
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.table_name.clone(),
            self.image.clone(),
            self.node.clone(),
            self.desired_state.clone(),
            self.current_state.clone(),
            self.error.clone(),
            self.ports.clone(),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "ID": self.id, "Name": self.name, "Image": self.image, "Node": self.node,
            "DesiredState": self.desired_state, "CurrentState": self.current_state,
            "Error": self.error, "Ports": self.ports,
        })
    }
}

pub(crate) const TASK_HEADER: [&str; 8] = [
    "ID",
    "NAME",
    "IMAGE",
    "NODE",
    "DESIRED STATE",
    "CURRENT STATE",
    "ERROR",
    "PORTS",
];

/// How `service ps` names things.
pub(crate) struct TaskNames<'a> {
    /// Service id → name.
    pub(crate) services: &'a HashMap<String, String>,
    /// Node id → hostname.
    pub(crate) nodes: &'a HashMap<String, String>,
    /// `--no-trunc` unset: ids cut to 12, errors to 30 characters, image pins dropped.
    pub(crate) truncate: bool,
    /// `--no-resolve`: ids instead of names.
    pub(crate) no_resolve: bool,
}

/// "Running 5 seconds ago", as `service ps` prints the current state.
pub(crate) fn current_state(status: Option<&api::TaskStatus>, now: SystemTime) -> String {
    let state = status.map_or(0, |s| s.state);
    let since = system_time(status.and_then(|s| s.timestamp.as_ref()))
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or(Duration::ZERO);
    format!(
        "{} {} ago",
        capitalize(task_state_name(state)),
        human_duration(since).to_lowercase()
    )
}

/// The task name docker gives: `service.slot`, or `service.nodeid` for global services.
pub(crate) fn task_name(task: &api::Task, names: &TaskNames<'_>) -> String {
    let service = if names.no_resolve {
        task.service_id.clone()
    } else {
        names
            .services
            .get(&task.service_id)
            .cloned()
            .unwrap_or_else(|| task.service_id.clone())
    };
    if task.slot != 0 {
        format!("{service}.{}", task.slot)
    } else {
        format!("{service}.{}", task.node_id)
    }
}

/// The rows of `service ps`: tasks of one slot together, newest first, older ones indented.
pub(crate) fn task_rows(
    tasks: &[api::Task],
    names: &TaskNames<'_>,
    now: SystemTime,
) -> Vec<TaskRow> {
    let mut named: Vec<(String, &api::Task)> = tasks
        .iter()
        .map(|task| (task_name(task, names), task))
        .collect();
    named.sort_by(|(a_name, a), (b_name, b)| {
        natural_cmp(a_name, b_name).then_with(|| created(b).cmp(&created(a)))
    });
    let mut rows = Vec::new();
    let mut previous = String::new();
    for (name, task) in named {
        let table_name = if name == previous {
            format!(" \\_ {name}")
        } else {
            name.clone()
        };
        previous = name.clone();
        let status = task.status.as_ref();
        let image = container(task.spec.as_ref())
            .map(|c| c.image.clone())
            .unwrap_or_default();
        let node = if names.no_resolve {
            task.node_id.clone()
        } else {
            names
                .nodes
                .get(&task.node_id)
                .cloned()
                .unwrap_or_else(|| task.node_id.clone())
        };
        let mut error = status.map(|s| s.err.clone()).unwrap_or_default();
        if names.truncate {
            error = ellipsis(&error, 30);
        }
        if !error.is_empty() {
            error = format!("\"{error}\"");
        }
        let ports = status
            .and_then(|s| s.port_status.as_ref())
            .map(|ports| {
                ports
                    .ports
                    .iter()
                    .map(|p| {
                        format!(
                            "*:{}->{}/{}",
                            p.published_port,
                            p.target_port,
                            protocol_name(p.protocol)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        rows.push(TaskRow {
            id: if names.truncate {
                truncate_id(&task.id).to_owned()
            } else {
                task.id.clone()
            },
            table_name,
            name,
            image: if names.truncate {
                display_image(&image)
            } else {
                image
            },
            node,
            desired_state: capitalize(task_state_name(task.desired_state)),
            current_state: current_state(status, now),
            error,
            ports,
        });
    }
    rows
}

pub(super) fn created(task: &api::Task) -> (i64, i32) {
    task.meta
        .as_ref()
        .and_then(|meta| meta.created_at.as_ref())
        .map_or((0, 0), |t| (t.seconds, t.nanos))
}

/// Which tasks `service ps --filter` keeps: docker's `desired-state`, `id`, `name` and `node`.
#[derive(Debug, Default)]
pub(crate) struct TaskFilter {
    desired_states: Vec<&'static str>,
    ids: Vec<String>,
    names: Vec<String>,
    nodes: Vec<String>,
}

impl TaskFilter {
    pub(crate) fn parse(filters: &[String]) -> anyhow::Result<TaskFilter> {
        let mut filter = TaskFilter::default();
        for text in filters {
            let Some((key, value)) = text.split_once('=') else {
                anyhow::bail!(
                    "invalid filter {text:?}: use KEY=VALUE, e.g. --filter desired-state=running"
                );
            };
            match key {
                "desired-state" => filter.desired_states.push(match value {
                    "running" => "running",
                    "shutdown" => "shutdown",
                    "accepted" => "accepted",
                    "ready" => "ready",
                    _ => anyhow::bail!(
                        "invalid filter 'desired-state={value}': use running, shutdown, accepted or ready"
                    ),
                }),
                "id" => filter.ids.push(value.to_owned()),
                "name" => filter.names.push(value.to_owned()),
                "node" => filter.nodes.push(value.to_owned()),
                _ => anyhow::bail!(
                    "invalid filter {key:?}: service ps filters on desired-state, id, name or node"
                ),
            }
        }
        Ok(filter)
    }

    /// Whether `task` passes; `name` is its docker name and `hostname` its node's.
    pub(crate) fn keeps(&self, task: &api::Task, name: &str, hostname: &str) -> bool {
        let desired = task_state_name(task.desired_state);
        (self.desired_states.is_empty() || self.desired_states.contains(&desired))
            && (self.ids.is_empty() || self.ids.iter().any(|id| task.id.starts_with(id.as_str())))
            && (self.names.is_empty() || self.names.iter().any(|n| name.starts_with(n.as_str())))
            && (self.nodes.is_empty()
                || self
                    .nodes
                    .iter()
                    .any(|n| n == hostname || task.node_id.starts_with(n.as_str())))
    }
}

/// The prefix docker puts before each line of `service logs`: `name.slot.taskid@node`, padded so
/// that slots of different widths line up, then `    | `.
pub(crate) fn log_prefix(
    service_name: &str,
    slot: u64,
    task_id: Option<&str>,
    node: &str,
    slot_width: usize,
) -> String {
    let mut name = format!("{service_name}.{slot}");
    if let Some(id) = task_id {
        name.push('.');
        name.push_str(id);
    }
    let padding = slot_width.saturating_sub(slot.to_string().len());
    format!("{name}@{node}{}    | ", " ".repeat(padding))
}
