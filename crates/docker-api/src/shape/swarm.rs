//! The swarm as Docker shapes it: `GET /swarm`, the `Swarm` section of `GET /info` (and of
//! `docker info --format json`), and the swarm `Spec` that `POST /swarm/update` sends, merged
//! into the cluster's spec as Docker's daemon merges it.

use serde_json::{Map, Value, json};
use shoal_proto::api;

use super::ShapeError;
use super::common::{
    annotations_from_json, driver_from_json, driver_json, duration_nanos, insert_meta,
    insert_nonempty, labels_json, tls_info_json,
};
use super::read::Object;

/// Docker's word for where this node stands in a swarm.
pub fn local_node_state_name(state: i32) -> &'static str {
    use api::info_response::LocalNodeState as S;
    match S::try_from(state) {
        Ok(S::Pending) => "pending",
        Ok(S::Active) => "active",
        Ok(S::Error) => "error",
        Ok(S::Locked) => "locked",
        _ => "inactive",
    }
}

/// The VXLAN port the cluster's overlays use, as `docker info` shows it: Swarm's default when the
/// cluster sets none; a stored number that is no UDP port is shown as it is.
pub fn data_path_port(cluster: &api::Cluster) -> u32 {
    spec::defaults::vxlan_port(cluster.vxlan_udp_port).map_or(cluster.vxlan_udp_port, u32::from)
}

/// The managers as (node id, address), sorted by address, as Docker lists them.
pub fn remote_managers(info: &api::InfoResponse) -> Vec<(&String, &String)> {
    let mut managers: Vec<(&String, &String)> = info.remote_managers.iter().collect();
    managers.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)));
    managers
}

/// Whether the node can show the cluster: a manager, with no error.
pub fn cluster_shown(info: &api::InfoResponse) -> bool {
    let state = local_node_state_name(info.local_node_state);
    info.control_available && info.error.is_empty() && state != "error"
}

fn external_ca_json(ca: &api::ExternalCa) -> Value {
    let mut object = Map::new();
    object.insert("Protocol".into(), json!(EXTERNAL_CA_PROTOCOL));
    object.insert("URL".into(), json!(ca.url));
    insert_nonempty(&mut object, "Options", labels_json(&ca.options));
    object.insert("CACert".into(), json!(String::from_utf8_lossy(&ca.ca_cert)));
    Value::Object(object)
}

/// The only protocol of an external CA, in Docker's word.
const EXTERNAL_CA_PROTOCOL: &str = "cfssl";

fn cluster_spec_json(spec: &api::ClusterSpec) -> Value {
    let annotations = spec.annotations.clone().unwrap_or_default();
    let raft = spec.raft.unwrap_or_default();
    let ca = spec.ca_config.clone().unwrap_or_default();
    let mut object = Map::new();
    object.insert("Name".into(), json!(annotations.name));
    object.insert("Labels".into(), labels_json(&annotations.labels));
    object.insert(
        "Orchestration".into(),
        json!({"TaskHistoryRetentionLimit": spec.orchestration.unwrap_or_default().task_history_retention_limit}),
    );
    object.insert(
        "Raft".into(),
        json!({
            "SnapshotInterval": raft.snapshot_interval, "KeepOldSnapshots": raft.keep_old_snapshots,
            "LogEntriesForSlowFollowers": raft.log_entries_for_slow_followers,
            "ElectionTick": raft.election_tick, "HeartbeatTick": raft.heartbeat_tick,
        }),
    );
    let heartbeat = spec
        .dispatcher
        .as_ref()
        .and_then(|d| d.heartbeat_period.as_ref())
        .map_or(0, duration_nanos);
    object.insert("Dispatcher".into(), json!({"HeartbeatPeriod": heartbeat}));
    let mut ca_json = Map::new();
    ca_json.insert(
        "NodeCertExpiry".into(),
        json!(ca.node_cert_expiry.as_ref().map_or(0, duration_nanos)),
    );
    ca_json.insert("ForceRotate".into(), json!(ca.force_rotate));
    insert_nonempty(
        &mut ca_json,
        "ExternalCAs",
        Value::Array(ca.external_cas.iter().map(external_ca_json).collect()),
    );
    object.insert("CAConfig".into(), Value::Object(ca_json));
    let mut task_defaults = Map::new();
    if let Some(driver) = spec
        .task_defaults
        .as_ref()
        .and_then(|d| d.log_driver.as_ref())
    {
        task_defaults.insert("LogDriver".into(), driver_json(driver));
    }
    object.insert("TaskDefaults".into(), Value::Object(task_defaults));
    object.insert(
        "EncryptionConfig".into(),
        json!({"AutoLockManagers": spec.encryption_config.unwrap_or_default().auto_lock_managers}),
    );
    Value::Object(object)
}

/// Docker's `ClusterInfo`: the cluster's identity, spec, address pools and data path port.
fn cluster_info_json(cluster: &api::Cluster) -> Value {
    let mut object = Map::new();
    insert_meta(&mut object, &cluster.id, cluster.meta.as_ref());
    object.insert(
        "Spec".into(),
        cluster_spec_json(&cluster.spec.clone().unwrap_or_default()),
    );
    let root_ca = cluster.root_ca.as_ref();
    object.insert(
        "TLSInfo".into(),
        tls_info_json(root_ca.and_then(spec::tls_info::of_cluster).as_ref()),
    );
    object.insert(
        "RootRotationInProgress".into(),
        json!(root_ca.is_some_and(|root| root.root_rotation.is_some())),
    );
    object.insert(
        "DefaultAddrPool".into(),
        json!(cluster.default_address_pool),
    );
    object.insert("SubnetSize".into(), json!(cluster.subnet_size));
    object.insert("DataPathPort".into(), json!(data_path_port(cluster)));
    Value::Object(object)
}

/// `GET /swarm` and `docker swarm inspect`: the cluster with its join tokens and the root CA
/// nodes trust (`docker swarm ca` prints it).
pub fn swarm_inspect_json(cluster: &api::Cluster) -> Value {
    let mut value = cluster_info_json(cluster);
    let root_ca = cluster.root_ca.clone().unwrap_or_default();
    let tokens = root_ca.join_tokens.unwrap_or_default();
    value["JoinTokens"] = json!({"Worker": tokens.worker, "Manager": tokens.manager});
    value
}

/// Docker's `Info.Swarm` object, as `GET /info` and `docker info --format json` show it;
/// `cluster` is what a manager could read of the cluster.
pub fn swarm_info_json(info: &api::InfoResponse, cluster: Option<&api::Cluster>) -> Value {
    let mut object = Map::new();
    object.insert("NodeID".into(), json!(info.node_id));
    object.insert("NodeAddr".into(), json!(info.node_addr));
    object.insert(
        "LocalNodeState".into(),
        json!(local_node_state_name(info.local_node_state)),
    );
    object.insert("ControlAvailable".into(), json!(info.control_available));
    object.insert("Error".into(), json!(info.error));
    let managers: Vec<Value> = remote_managers(info)
        .into_iter()
        .map(|(id, address)| json!({"NodeID": id, "Addr": address}))
        .collect();
    object.insert(
        "RemoteManagers".into(),
        if managers.is_empty() {
            Value::Null
        } else {
            Value::Array(managers)
        },
    );
    if info.nodes > 0 {
        object.insert("Nodes".into(), json!(info.nodes));
    }
    if info.managers > 0 {
        object.insert("Managers".into(), json!(info.managers));
    }
    if cluster_shown(info) {
        object.insert(
            "Cluster".into(),
            cluster.map_or_else(|| json!({"ID": info.cluster_id}), cluster_info_json),
        );
    }
    Value::Object(object)
}

fn external_ca_from_json(object: &Object<'_>) -> Result<api::ExternalCa, ShapeError> {
    let protocol = object.string("Protocol")?;
    // Docker's daemon reads the word in any case, and has no default for it.
    if !protocol.eq_ignore_ascii_case(EXTERNAL_CA_PROTOCOL) {
        return Err(object.invalid(
            "Protocol",
            format!("invalid protocol {protocol:?}: use {EXTERNAL_CA_PROTOCOL}"),
        ));
    }
    Ok(api::ExternalCa {
        protocol: api::external_ca::CaProtocol::Cfssl as i32,
        url: object.string("URL")?,
        options: object.string_map("Options")?,
        ca_cert: object.string("CACert")?.into_bytes(),
    })
}

/// The cluster spec `POST /swarm/update` asks for, merged into `current` as Docker's daemon
/// merges it: a name, labels or setting the JSON leaves empty or zero keeps the current one,
/// while `ForceRotate` and `AutoLockManagers` are always taken. Unlike Docker's daemon, which
/// appends them, external CAs given replace the current ones (Docker's CLI sends the whole
/// list). A log driver in `TaskDefaults` replaces the current one (Docker's daemon ignores it).
pub fn cluster_spec_from_json(
    value: &Value,
    current: Option<&api::ClusterSpec>,
) -> Result<api::ClusterSpec, ShapeError> {
    let object = Object::root(value, "Spec", "swarm.Spec")?;
    let mut spec = current.cloned().unwrap_or_default();
    let given = annotations_from_json(&object)?;
    let annotations = spec.annotations.get_or_insert_default();
    if !given.name.is_empty() {
        annotations.name = given.name;
    }
    if !given.labels.is_empty() {
        annotations.labels = given.labels;
    }
    if let Some(orchestration) = object.object("Orchestration", "swarm.OrchestrationConfig")?
        && let Some(limit) = orchestration.optional_int64("TaskHistoryRetentionLimit")?
    {
        spec.orchestration
            .get_or_insert_default()
            .task_history_retention_limit = limit;
    }
    if let Some(raft) = object.object("Raft", "swarm.RaftConfig")? {
        let stored = spec.raft.get_or_insert_default();
        let nonzero = |key: &str, stored: &mut u64| -> Result<(), ShapeError> {
            let value = raft.uint64(key)?;
            if value != 0 {
                *stored = value;
            }
            Ok(())
        };
        nonzero("SnapshotInterval", &mut stored.snapshot_interval)?;
        nonzero(
            "LogEntriesForSlowFollowers",
            &mut stored.log_entries_for_slow_followers,
        )?;
        if let Some(keep) = raft.optional_uint64("KeepOldSnapshots")? {
            stored.keep_old_snapshots = keep;
        }
        for (key, stored) in [
            ("HeartbeatTick", &mut stored.heartbeat_tick),
            ("ElectionTick", &mut stored.election_tick),
        ] {
            let value = raft.uint32(key, "int")?;
            if value != 0 {
                *stored = value;
            }
        }
    }
    if let Some(dispatcher) = object.object("Dispatcher", "swarm.DispatcherConfig")?
        && let Some(period) = dispatcher.nonzero_duration("HeartbeatPeriod")?
    {
        spec.dispatcher.get_or_insert_default().heartbeat_period = Some(period);
    }
    let ca = object.object("CAConfig", "swarm.CAConfig")?;
    let force_rotate = ca.as_ref().map_or(Ok(0), |ca| ca.uint64("ForceRotate"))?;
    if force_rotate != 0 || spec.ca_config.is_some() {
        spec.ca_config.get_or_insert_default().force_rotate = force_rotate;
    }
    if let Some(ca) = ca {
        let stored = spec.ca_config.get_or_insert_default();
        if let Some(expiry) = ca.nonzero_duration("NodeCertExpiry")? {
            stored.node_cert_expiry = Some(expiry);
        }
        let cert = ca.string("SigningCACert")?;
        if !cert.is_empty() {
            stored.signing_ca_cert = cert.into_bytes();
        }
        let key = ca.string("SigningCAKey")?;
        if !key.is_empty() {
            stored.signing_ca_key = key.into_bytes();
        }
        let external = ca
            .objects("ExternalCAs", "swarm.ExternalCA")?
            .iter()
            .map(external_ca_from_json)
            .collect::<Result<Vec<_>, _>>()?;
        if !external.is_empty() {
            stored.external_cas = external;
        }
    }
    if let Some(defaults) = object.object("TaskDefaults", "swarm.TaskDefaults")?
        && let Some(driver) = driver_from_json(&defaults, "LogDriver")?
    {
        spec.task_defaults.get_or_insert_default().log_driver = Some(driver);
    }
    let auto_lock = match object.object("EncryptionConfig", "swarm.EncryptionConfig")? {
        Some(encryption) => encryption.boolean("AutoLockManagers")?,
        None => false,
    };
    if auto_lock || spec.encryption_config.is_some() {
        spec.encryption_config
            .get_or_insert_default()
            .auto_lock_managers = auto_lock;
    }
    Ok(spec)
}
