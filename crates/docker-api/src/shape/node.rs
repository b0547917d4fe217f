//! Nodes as Docker shapes them (`GET /nodes`, `docker node inspect`), the `NodeSpec` that
//! `docker node update` sends, and Docker's words for a node's state, role and availability.

use serde_json::{Map, Value, json};
use shoal_proto::api;
use spec::enums::{TextForm as _, text_of};

use super::ShapeError;
use super::common::{annotations_from_json, insert_meta, labels_json, tls_info_json};
use super::read::Object;

/// Docker's word for a node's state.
pub fn node_state_name(state: i32) -> &'static str {
    use api::node_status::State as S;
    match S::try_from(state) {
        Ok(S::Down) => "down",
        Ok(S::Ready) => "ready",
        Ok(S::Disconnected) => "disconnected",
        _ => "unknown",
    }
}

/// Docker's word for a node's availability.
pub fn availability_name(availability: i32) -> &'static str {
    text_of::<api::node_spec::Availability>(availability)
}

/// A node's role; a number the enum does not have reads as a worker.
pub fn role_name(role: i32) -> &'static str {
    api::NodeRole::try_from(role)
        .unwrap_or(api::NodeRole::Worker)
        .text()
}

/// Docker's word for how a manager's Raft peers reach it.
pub fn reachability_name(reachability: i32) -> &'static str {
    use api::raft_member_status::Reachability as R;
    match R::try_from(reachability) {
        Ok(R::Reachable) => "reachable",
        Ok(R::Unreachable) => "unreachable",
        _ => "unknown",
    }
}

/// `GET /nodes/{id}` and `docker node inspect`: one node in Docker's shape.
pub fn node_inspect_json(node: &api::Node) -> Value {
    let spec = node.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let mut spec_json = Map::new();
    if !annotations.name.is_empty() {
        spec_json.insert("Name".into(), json!(annotations.name));
    }
    spec_json.insert("Labels".into(), labels_json(&annotations.labels));
    spec_json.insert("Role".into(), json!(role_name(spec.desired_role)));
    spec_json.insert(
        "Availability".into(),
        json!(availability_name(spec.availability)),
    );
    let description = node.description.clone().unwrap_or_default();
    let platform = description.platform.clone().unwrap_or_default();
    let resources = description.resources.clone().unwrap_or_default();
    let engine = description.engine.clone().unwrap_or_default();
    let mut engine_json = Map::new();
    engine_json.insert("EngineVersion".into(), json!(engine.engine_version));
    if !engine.labels.is_empty() {
        engine_json.insert("Labels".into(), labels_json(&engine.labels));
    }
    if !engine.plugins.is_empty() {
        engine_json.insert(
            "Plugins".into(),
            Value::Array(
                engine
                    .plugins
                    .iter()
                    .map(|p| json!({"Type": p.r#type, "Name": p.name}))
                    .collect(),
            ),
        );
    }
    let status = node.status.clone().unwrap_or_default();
    let mut status_json = Map::new();
    status_json.insert("State".into(), json!(node_state_name(status.state)));
    if !status.message.is_empty() {
        status_json.insert("Message".into(), json!(status.message));
    }
    status_json.insert("Addr".into(), json!(status.addr));
    let mut object = Map::new();
    insert_meta(&mut object, &node.id, node.meta.as_ref());
    object.insert("Spec".into(), Value::Object(spec_json));
    object.insert(
        "Description".into(),
        json!({
            "Hostname": description.hostname,
            "Platform": {"Architecture": platform.architecture, "OS": platform.os},
            "Resources": {"NanoCPUs": resources.nano_cpus, "MemoryBytes": resources.memory_bytes},
            "Engine": Value::Object(engine_json),
            "TLSInfo": tls_info_json(description.tls_info.as_ref()),
        }),
    );
    object.insert("Status".into(), Value::Object(status_json));
    if let Some(manager) = &node.manager_status {
        object.insert(
            "ManagerStatus".into(),
            json!({
                "Leader": manager.leader,
                "Reachability": reachability_name(manager.reachability),
                "Addr": manager.addr,
            }),
        );
    }
    Value::Object(object)
}

/// The node spec of Docker's `NodeSpec` (`POST /nodes/{id}/update`). Role and availability
/// are required, as Docker's daemon requires them. `current` is the node's spec now: its
/// membership, which Docker's JSON does not carry, stays.
pub fn node_spec_from_json(
    value: &Value,
    current: Option<&api::NodeSpec>,
) -> Result<api::NodeSpec, ShapeError> {
    let object = Object::root(value, "NodeSpec", "swarm.NodeSpec")?;
    Ok(api::NodeSpec {
        annotations: Some(annotations_from_json(&object)?),
        desired_role: object.required_word::<api::NodeRole>("Role")? as i32,
        membership: current.map_or(0, |spec| spec.membership),
        availability: object.required_word::<api::node_spec::Availability>("Availability")? as i32,
    })
}
