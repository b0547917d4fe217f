//! Nodes: the inspect document, Docker's words, and the spec `docker node update` sends.

use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::shape::node::{node_inspect_json, node_spec_from_json, role_name};

fn node(id: &str, host: &str, leader: Option<bool>) -> api::Node {
    api::Node {
        id: id.into(),
        meta: Some(api::Meta {
            version: Some(api::Version { index: 9 }),
            created_at: Some(ts(1_257_894_000)),
            updated_at: None,
        }),
        spec: Some(api::NodeSpec {
            annotations: Some(api::Annotations {
                labels: HashMap::from([("zone".to_owned(), "east".to_owned())]),
                ..Default::default()
            }),
            desired_role: if leader.is_some() {
                api::NodeRole::Manager as i32
            } else {
                api::NodeRole::Worker as i32
            },
            availability: api::node_spec::Availability::Active as i32,
            ..Default::default()
        }),
        description: Some(api::NodeDescription {
            hostname: host.into(),
            platform: Some(api::Platform {
                architecture: "x86_64".into(),
                os: "linux".into(),
            }),
            resources: Some(api::Resources {
                nano_cpus: 4_000_000_000,
                memory_bytes: 20 << 20,
                generic: Vec::new(),
            }),
            engine: Some(api::EngineDescription {
                engine_version: "0.1.0".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(api::NodeStatus {
            state: api::node_status::State::Ready as i32,
            message: String::new(),
            addr: "127.0.0.1".into(),
        }),
        manager_status: leader.map(|leader| api::ManagerStatus {
            raft_id: 1,
            addr: "127.0.0.1:2377".into(),
            leader,
            reachability: api::raft_member_status::Reachability::Reachable as i32,
        }),
        ..Default::default()
    }
}

#[test]
fn node_inspect_is_docker_shaped() {
    let leader = node("nodeID", "defaultNodeHostname", Some(true));
    let value = node_inspect_json(&leader);
    assert_eq!(value["Version"]["Index"], 9);
    assert_eq!(value["CreatedAt"], "2009-11-10T23:00:00Z");
    assert_eq!(value["Spec"]["Role"], "manager");
    assert_eq!(value["Spec"]["Availability"], "active");
    assert_eq!(value["Spec"]["Labels"]["zone"], "east");
    assert_eq!(value["Description"]["Platform"]["OS"], "linux");
    assert_eq!(
        value["Description"]["Resources"]["NanoCPUs"],
        4_000_000_000i64
    );
    assert_eq!(value["Status"]["State"], "ready");
    assert_eq!(value["ManagerStatus"]["Reachability"], "reachable");
    let worker = node_inspect_json(&node("w", "w", None));
    assert!(worker.get("ManagerStatus").is_none());
}

#[test]
fn roles_are_spelled_with_specs_words() {
    assert_eq!(role_name(api::NodeRole::Manager as i32), "manager");
    assert_eq!(role_name(99), "worker");
}

#[test]
fn node_updates_read_as_dockers_daemon_reads_them() {
    let mut current = node("n", "h", None).spec.unwrap();
    current.membership = api::node_spec::Membership::Accepted as i32;
    // `docker node update --availability drain --label-add rack=1 n`, and promote's upper case.
    let body = json!({"Labels": {"zone": "east", "rack": "1"}, "Role": "Manager", "Availability": "drain"});
    let spec = node_spec_from_json(&body, Some(&current)).unwrap();
    assert_eq!(
        spec,
        api::NodeSpec {
            annotations: Some(api::Annotations {
                labels: HashMap::from([
                    ("zone".to_owned(), "east".to_owned()),
                    ("rack".to_owned(), "1".to_owned()),
                ]),
                ..Default::default()
            }),
            desired_role: api::NodeRole::Manager as i32,
            membership: api::node_spec::Membership::Accepted as i32,
            availability: api::node_spec::Availability::Drain as i32,
        }
    );
    // Round trip through the inspect document's spec.
    let shown = node_inspect_json(&node("n", "h", Some(false)));
    let read = node_spec_from_json(&shown["Spec"], None).unwrap();
    assert_eq!(Some(read), node("n", "h", Some(false)).spec);
    assert_eq!(
        refusal(node_spec_from_json(
            &json!({"Availability": "active"}),
            None
        )),
        "NodeSpec.Role: invalid role \"\": use worker or manager"
    );
    assert_eq!(
        refusal(node_spec_from_json(
            &json!({"Role": "worker", "Availability": "sleep"}),
            None
        )),
        "NodeSpec.Availability: invalid availability \"sleep\": use active, pause or drain"
    );
    assert_eq!(
        refusal(node_spec_from_json(
            &json!({"Role": "worker", "Availability": "active", "Labels": []}),
            None
        )),
        "json: cannot unmarshal array into Go struct field NodeSpec.Labels of type map[string]string"
    );
}
