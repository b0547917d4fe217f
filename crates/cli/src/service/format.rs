//! Pure printing for the swarm verbs: docker's tables (tabwriter with a minimum cell width of
//! 10), `--format json` objects, inspect documents, go-units' human durations and the names and
//! states `service ps` shows. Every function takes what it prints (and `now` where time matters).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use shoal_proto::api;
use spec::enums::text_of;

/// JSON indented with four spaces, as `docker inspect` prints it.
pub(crate) fn pretty_json(value: &Value) -> anyhow::Result<String> {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    Ok(String::from_utf8(out)?)
}

/// docker's `formatter.TruncateID`: the first 12 characters.
pub(crate) fn truncate_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// A row of a list command (`service ls`, `service ps`, `node ls`).
pub(crate) trait ListRow {
    /// What `-q` prints.
    fn id(&self) -> &str;
    /// The table cells, in the header's order.
    fn cells(&self) -> Vec<String>;
    /// The object `--format json` prints, with docker's field names.
    fn json(&self) -> Value;
}

/// Prints list rows as docker does: IDs only (`-q`), one JSON object per line, or a table.
pub(crate) fn print_rows<Row: ListRow>(rows: &[Row], header: &[&str], quiet: bool, json: bool) {
    if quiet {
        for row in rows {
            println!("{}", row.id());
        }
    } else if json {
        for row in rows {
            println!("{}", row.json());
        }
    } else {
        let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
        print!("{}", table(header, &cells));
    }
}

/// Lays rows out as docker's tabwriter does (minimum width 10, padding 3); the last column is
/// not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let width = (widths.get(i).copied().unwrap_or(0) + 3).max(10);
                let pad = width.saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// go-units' `HumanDuration`, which docker prints in `ps`, `info` and every list.
pub(crate) use spec::human::human_duration;

pub(crate) fn system_time(timestamp: Option<&api::Timestamp>) -> Option<SystemTime> {
    SystemTime::try_from(*timestamp?).ok()
}

/// Go's RFC3339Nano (trailing zeros of the fraction dropped), as docker prints `CreatedAt`.
pub(crate) fn rfc3339_nano(timestamp: Option<&api::Timestamp>) -> String {
    let time = system_time(timestamp).unwrap_or(UNIX_EPOCH);
    let fixed = engine::util::rfc3339(time);
    match fixed.rsplit_once('.') {
        Some((whole, fraction)) => {
            let digits = fraction.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{digits}Z")
            }
        }
        None => fixed,
    }
}

/// Go's `time.Time.String()` lowercased, as `node inspect --pretty` prints "Joined at".
pub(crate) fn go_time_string(timestamp: Option<&api::Timestamp>) -> String {
    let nano = rfc3339_nano(timestamp);
    format!(
        "{} +0000 utc",
        nano.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

/// A protobuf duration in nanoseconds, as Go's `time.Duration` marshals to JSON.
pub(crate) fn duration_nanos(duration: &api::Duration) -> i64 {
    duration
        .seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(duration.nanos))
}

pub(crate) use spec::time::std_duration;

/// Compares as `sortorder.NaturalLess` does: runs of digits compare by value.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let a_len = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let b_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (a_digits, b_digits) = (&a[..a_len], &b[..b_len]);
                let a_trimmed = trim_leading_zeros(a_digits);
                let b_trimmed = trim_leading_zeros(b_digits);
                let order = a_trimmed
                    .len()
                    .cmp(&b_trimmed.len())
                    .then_with(|| a_trimmed.cmp(b_trimmed))
                    .then_with(|| a_len.cmp(&b_len));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[a_len..];
                b = &b[b_len..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|c| **c == b'0').count();
    &digits[zeros..]
}

/// docker's `formatter.Ellipsis`: at most `width` characters, the last one `…` when cut.
pub(crate) fn ellipsis(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// docker's lower-case task state name.
pub(crate) fn task_state_name(state: i32) -> &'static str {
    use api::TaskState as S;
    match S::try_from(state) {
        Ok(S::New) => "new",
        Ok(S::Pending) => "pending",
        Ok(S::Assigned) => "assigned",
        Ok(S::Accepted) => "accepted",
        Ok(S::Preparing) => "preparing",
        Ok(S::Ready) => "ready",
        Ok(S::Starting) => "starting",
        Ok(S::Running) => "running",
        Ok(S::Complete) => "complete",
        Ok(S::Shutdown) => "shutdown",
        Ok(S::Failed) => "failed",
        Ok(S::Rejected) => "rejected",
        Ok(S::Remove) => "remove",
        Ok(S::Orphaned) => "orphaned",
        Err(_) => "unknown",
    }
}

/// docker's `PrettyPrint`: the first letter upper-cased.
pub(crate) fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The image without its `@sha256:…` pin when it also has a tag, as `service ls` and `ps` show.
pub(crate) fn display_image(image: &str) -> String {
    match image.split_once('@') {
        Some((named, _digest)) if has_tag(named) => named.to_owned(),
        _ => image.to_owned(),
    }
}

fn has_tag(named: &str) -> bool {
    let last = named.rsplit('/').next().unwrap_or(named);
    last.contains(':')
}

pub(crate) fn container(spec: Option<&api::TaskSpec>) -> Option<&api::ContainerSpec> {
    match spec?.runtime.as_ref()? {
        api::task_spec::Runtime::Container(container) => Some(container),
        _ => None,
    }
}

/// `service ls`'s MODE column.
pub(crate) fn mode_name(spec: &api::ServiceSpec) -> &'static str {
    match spec.mode {
        Some(api::service_spec::Mode::Replicated(_)) => "replicated",
        Some(api::service_spec::Mode::Global(_)) => "global",
        Some(api::service_spec::Mode::ReplicatedJob(_)) => "replicated job",
        Some(api::service_spec::Mode::GlobalJob(_)) => "global job",
        None => "",
    }
}

fn protocol_name(protocol: i32) -> &'static str {
    text_of::<api::port_config::Protocol>(protocol)
}

fn publish_mode_name(mode: i32) -> &'static str {
    text_of::<api::port_config::PublishMode>(mode)
}

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
        if api::port_config::PublishMode::try_from(port.publish_mode)
            != Ok(api::port_config::PublishMode::Ingress)
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

fn created(task: &api::Task) -> (i64, i32) {
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

fn labels_json(labels: &HashMap<String, String>) -> Value {
    let sorted: std::collections::BTreeMap<&String, &String> = labels.iter().collect();
    json!(sorted)
}

fn insert_nonempty(object: &mut Map<String, Value>, key: &str, value: Value) {
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

fn mount_type_name(kind: i32) -> &'static str {
    text_of::<api::mount::Type>(kind)
}

fn propagation_name(propagation: i32) -> &'static str {
    use api::mount::bind_options::Propagation as P;
    match P::try_from(propagation) {
        Ok(P::Rprivate) => "rprivate",
        Ok(P::Private) => "private",
        Ok(P::Rshared) => "rshared",
        Ok(P::Shared) => "shared",
        Ok(P::Rslave) => "rslave",
        Ok(P::Slave) => "slave",
        Err(_) => "",
    }
}

fn mount_json(mount: &api::Mount) -> Value {
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

fn driver_json(driver: &api::Driver) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "Name", json!(driver.name));
    insert_nonempty(&mut object, "Options", labels_json(&driver.options));
    Value::Object(object)
}

fn health_json(health: &api::HealthConfig) -> Value {
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

fn container_json(container: &api::ContainerSpec) -> Value {
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

fn resources_json(resources: &api::Resources, pids: i64) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "NanoCPUs", json!(resources.nano_cpus));
    insert_nonempty(&mut object, "MemoryBytes", json!(resources.memory_bytes));
    insert_nonempty(&mut object, "Pids", json!(pids));
    Value::Object(object)
}

pub(crate) fn restart_condition_name(condition: i32) -> &'static str {
    text_of::<api::restart_policy::RestartCondition>(condition)
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

fn task_template_json(task: &api::TaskSpec) -> Value {
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
            Value::Object(value)
        })
        .collect();
    insert_nonempty(&mut object, "Networks", Value::Array(networks));
    object.insert("ForceUpdate".into(), json!(task.force_update));
    object.insert("Runtime".into(), json!("container"));
    Value::Object(object)
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

fn port_json(port: &api::PortConfig) -> Value {
    let mut object = Map::new();
    insert_nonempty(&mut object, "Name", json!(port.name));
    object.insert("Protocol".into(), json!(protocol_name(port.protocol)));
    object.insert("TargetPort".into(), json!(port.target_port));
    insert_nonempty(&mut object, "PublishedPort", json!(port.published_port));
    object.insert(
        "PublishMode".into(),
        json!(publish_mode_name(port.publish_mode)),
    );
    Value::Object(object)
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

fn update_state_name(state: i32) -> &'static str {
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

fn version_json(meta: Option<&api::Meta>) -> Value {
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

/// A decimal number of CPUs from nano-CPUs, as Go's `%v` prints a float64 (`0.5`, `2`).
pub(crate) fn cpus_text(nano_cpus: i64) -> String {
    let whole = nano_cpus / 1_000_000_000;
    let fraction = (nano_cpus % 1_000_000_000).unsigned_abs();
    if fraction == 0 {
        whole.to_string()
    } else {
        let digits = format!("{fraction:09}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// go-units' `BytesSize`: binary units with four significant digits (`20MiB`, `1.5GiB`).
pub(crate) fn bytes_size(bytes: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    let decimals = if value >= 1000.0 {
        0
    } else if value >= 100.0 {
        1
    } else if value >= 10.0 {
        2
    } else {
        3
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{}", units[unit])
}

fn go_duration(duration: Option<&api::Duration>) -> String {
    spec::units::format_duration(duration.map_or(Duration::ZERO, std_duration))
}

/// `service inspect --pretty`: docker's template, for the fields shoal has.
pub(crate) fn service_pretty(service: &api::Service) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
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
        let value = update_config_json(config);
        line(format!("{title}:"));
        line(format!(" Parallelism:\t{}", config.parallelism));
        if let Some(delay) = config.delay.as_ref().filter(|d| duration_nanos(d) > 0) {
            line(format!(" Delay:\t\t{}", go_duration(Some(delay))));
        }
        line(format!(
            " On failure:\t{}",
            value["FailureAction"].as_str().unwrap_or("pause")
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
            value["Order"].as_str().unwrap_or("stop-first")
        ));
    }
    let container = container(Some(&task)).cloned().unwrap_or_default();
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
                    bytes_size(reservations.memory_bytes)
                ));
            }
        }
        if has_limits {
            line(" Limits:".into());
            if limits.nano_cpus > 0 {
                line(format!("  CPU:\t\t{}", cpus_text(limits.nano_cpus)));
            }
            if limits.memory_bytes > 0 {
                line(format!("  Memory:\t{}", bytes_size(limits.memory_bytes)));
            }
        }
    }
    if container.pid_limit > 0 {
        line(format!("  PIDs:\t\t{}", container.pid_limit));
    }
    let endpoint_mode = spec
        .endpoint
        .as_ref()
        .map(endpoint_spec_json)
        .and_then(|v| v["Mode"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "vip".into());
    line(format!("Endpoint Mode:\t{endpoint_mode}"));
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
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> api::Timestamp {
        api::Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn tables_pad_like_tabwriter() {
        let text = table(
            &["ID", "NAME"],
            &[
                vec!["id-foo".into(), "web".into()],
                vec!["a".into(), "b".into()],
            ],
        );
        assert_eq!(text, "ID        NAME\nid-foo    web\na         b\n");
        let text = table(&["LONGER-HEADER", "X"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(text, "LONGER-HEADER   X\n1               2\n");
    }

    #[test]
    fn natural_order_compares_numbers_by_value() {
        let mut names = vec!["node-10-foo", "node-2-foo", "node-1-foo", "web.10", "web.9"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["node-1-foo", "node-2-foo", "node-10-foo", "web.9", "web.10"]
        );
    }

    #[test]
    fn small_formatters() {
        assert_eq!(truncate_id("abcdefghijklmnopqrstuvwxy"), "abcdefghijkl");
        assert_eq!(truncate_id("short"), "short");
        assert_eq!(ellipsis("0123456789", 5), "0123…");
        assert_eq!(ellipsis("0123", 5), "0123");
        assert_eq!(display_image("nginx:1.25@sha256:abc"), "nginx:1.25");
        assert_eq!(display_image("nginx@sha256:abc"), "nginx@sha256:abc");
        assert_eq!(display_image("localhost:5000/app"), "localhost:5000/app");
        assert_eq!(cpus_text(500_000_000), "0.5");
        assert_eq!(cpus_text(2_000_000_000), "2");
        assert_eq!(bytes_size(20 << 20), "20MiB");
        assert_eq!(bytes_size(1536 << 20), "1.5GiB");
        assert_eq!(bytes_size(512), "512B");
        assert_eq!(
            rfc3339_nano(Some(&api::Timestamp {
                seconds: 1_700_000_000,
                nanos: 120_000_000
            })),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            rfc3339_nano(Some(&ts(1_700_000_000))),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            go_time_string(Some(&ts(1_257_894_000))),
            "2009-11-10 23:00:00 +0000 utc"
        );
        assert_eq!(
            log_prefix("web", 1, Some("abcdefabcdef"), "node1", 2),
            "web.1.abcdefabcdef@node1     | "
        );
        assert_eq!(
            log_prefix("web", 10, None, "node1", 2),
            "web.10@node1    | "
        );
    }

    fn service(name: &str, mode: api::service_spec::Mode, max_replicas: u64) -> api::Service {
        api::Service {
            id: format!("{name}0123456789abcdef"),
            spec: Some(api::ServiceSpec {
                annotations: Some(api::Annotations {
                    name: name.into(),
                    ..Default::default()
                }),
                task: Some(api::TaskSpec {
                    runtime: Some(api::task_spec::Runtime::Container(api::ContainerSpec {
                        image: "nginx:alpine@sha256:0123".into(),
                        ..Default::default()
                    })),
                    placement: Some(api::Placement {
                        max_replicas,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                mode: Some(mode),
                ..Default::default()
            }),
            endpoint: Some(api::Endpoint {
                ports: [(80, 8080), (81, 8081), (443, 8443)]
                    .into_iter()
                    .map(|(target, published)| api::PortConfig {
                        target_port: target,
                        published_port: published,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn service_ls_rows_match_docker() {
        use api::service_spec::Mode;
        let services = vec![
            service(
                "web10",
                Mode::Replicated(api::ReplicatedService { replicas: 10 }),
                2,
            ),
            service(
                "job",
                Mode::ReplicatedJob(api::ReplicatedJob {
                    max_concurrent: 1,
                    total_completions: 3,
                }),
                0,
            ),
            service("web9", Mode::Global(api::GlobalService {}), 0),
        ];
        let status = |running, desired, completed| api::ServiceStatus {
            running_tasks: running,
            desired_tasks: desired,
            completed_tasks: completed,
        };
        let rows = service_rows(
            &services,
            &[status(7, 10, 0), status(0, 0, 3), status(1, 1, 0)],
        );
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["job", "web9", "web10"]);
        assert_eq!(rows[0].replicas, "0/0 (3/3 completed)");
        assert_eq!(rows[0].mode, "replicated job");
        assert_eq!(rows[1].replicas, "1/1");
        assert_eq!(rows[2].replicas, "7/10 (max 2 per node)");
        assert_eq!(rows[2].id, "web100123456");
        assert_eq!(rows[2].image, "nginx:alpine");
        assert_eq!(rows[2].ports, "*:8080-8081->80-81/tcp, *:8443->443/tcp");
        assert_eq!(
            rows[2].json().to_string(),
            r#"{"ID":"web100123456","Image":"nginx:alpine","Mode":"replicated","Name":"web10","Ports":"*:8080-8081->80-81/tcp, *:8443->443/tcp","Replicas":"7/10 (max 2 per node)"}"#
        );
    }

    fn task(id: &str, slot: u64, created: i64, state: api::TaskState, err: &str) -> api::Task {
        api::Task {
            id: id.into(),
            meta: Some(api::Meta {
                created_at: Some(ts(created)),
                ..Default::default()
            }),
            service_id: "svc1".into(),
            slot,
            node_id: "node1".into(),
            spec: Some(api::TaskSpec {
                runtime: Some(api::task_spec::Runtime::Container(api::ContainerSpec {
                    image: "nginx:alpine".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            status: Some(api::TaskStatus {
                timestamp: Some(ts(created)),
                state: state as i32,
                err: err.into(),
                ..Default::default()
            }),
            desired_state: api::TaskState::Running as i32,
            ..Default::default()
        }
    }

    #[test]
    fn service_ps_groups_slots_newest_first() {
        let services = HashMap::from([("svc1".to_owned(), "web".to_owned())]);
        let nodes = HashMap::from([("node1".to_owned(), "host-a".to_owned())]);
        let names = TaskNames {
            services: &services,
            nodes: &nodes,
            truncate: true,
            no_resolve: false,
        };
        let tasks = vec![
            task(
                "old-task-id-0000",
                1,
                100,
                api::TaskState::Failed,
                "No such image: nginx:alpine here",
            ),
            task("new-task-id-0000", 1, 200, api::TaskState::Running, ""),
            task("slot10-task-0000", 10, 150, api::TaskState::Running, ""),
            task("slot2-task-00000", 2, 150, api::TaskState::Pending, ""),
        ];
        let now = UNIX_EPOCH + Duration::from_secs(205);
        let rows = task_rows(&tasks, &names, now);
        let table_names: Vec<&str> = rows.iter().map(|r| r.table_name.as_str()).collect();
        assert_eq!(table_names, ["web.1", " \\_ web.1", "web.2", "web.10"]);
        assert_eq!(rows[0].current_state, "Running 5 seconds ago");
        assert_eq!(rows[0].node, "host-a");
        assert_eq!(rows[0].id, "new-task-id-");
        assert_eq!(rows[1].error, "\"No such image: nginx:alpine h…\"");
        assert_eq!(rows[1].current_state, "Failed about a minute ago");
        assert_eq!(rows[1].name, "web.1");
        assert_eq!(rows[1].desired_state, "Running");
        let global = api::Task {
            slot: 0,
            ..task("global-task", 0, 100, api::TaskState::Running, "")
        };
        assert_eq!(task_name(&global, &names), "web.node1");
    }

    #[test]
    fn ps_filters() -> anyhow::Result<()> {
        let filter = TaskFilter::parse(&["desired-state=running".into()])?;
        let running = task("t1", 1, 0, api::TaskState::Running, "");
        let mut shutdown = running.clone();
        shutdown.desired_state = api::TaskState::Shutdown as i32;
        assert!(filter.keeps(&running, "web.1", "host"));
        assert!(!filter.keeps(&shutdown, "web.1", "host"));
        let error = TaskFilter::parse(&["desired-state=sleeping".into()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("use running, shutdown"), "{error}");
        assert!(TaskFilter::parse(&["colour=red".into()]).is_err());
        Ok(())
    }

    #[test]
    fn inspect_json_is_docker_shaped() {
        let mut svc = service(
            "web",
            api::service_spec::Mode::Replicated(api::ReplicatedService { replicas: 2 }),
            0,
        );
        svc.meta = Some(api::Meta {
            version: Some(api::Version { index: 11 }),
            created_at: Some(ts(1_700_000_000)),
            updated_at: Some(ts(1_700_000_001)),
        });
        if let Some(task) = svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
            task.restart = Some(api::RestartPolicy {
                condition: api::restart_policy::RestartCondition::OnFailure as i32,
                delay: Some(api::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                max_attempts: 3,
                window: None,
            });
            task.resources = Some(api::ResourceRequirements {
                limits: Some(api::Resources {
                    memory_bytes: 16 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let value = service_inspect_json(&svc);
        assert_eq!(value["ID"], "web0123456789abcdef");
        assert_eq!(value["Version"]["Index"], 11);
        assert_eq!(value["CreatedAt"], "2023-11-14T22:13:20Z");
        assert_eq!(value["Spec"]["Name"], "web");
        assert_eq!(value["Spec"]["Mode"]["Replicated"]["Replicas"], 2);
        let template = &value["Spec"]["TaskTemplate"];
        assert_eq!(
            template["ContainerSpec"]["Image"],
            "nginx:alpine@sha256:0123"
        );
        assert_eq!(template["RestartPolicy"]["Condition"], "on-failure");
        assert_eq!(template["RestartPolicy"]["Delay"], 5_000_000_000i64);
        assert_eq!(template["RestartPolicy"]["MaxAttempts"], 3);
        assert_eq!(template["Resources"]["Limits"]["MemoryBytes"], 16 << 20);
        assert_eq!(template["Placement"], json!({}));
        assert_eq!(value["Endpoint"]["Ports"][0]["PublishedPort"], 8080);
        let pretty = service_pretty(&svc);
        assert!(
            pretty.contains("Service Mode:\tReplicated\n Replicas:\t2\n"),
            "{pretty}"
        );
        assert!(pretty.contains("  Memory:\t16MiB\n"), "{pretty}");
    }
}
