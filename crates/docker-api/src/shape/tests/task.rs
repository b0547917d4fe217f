//! Tasks: Docker's `Task` of `GET /tasks`.

use serde_json::json;

use super::*;
use crate::shape::task::task_json;

#[test]
fn tasks_are_docker_shaped() {
    let task = api::Task {
        id: "task1".into(),
        meta: Some(api::Meta {
            version: Some(api::Version { index: 21 }),
            created_at: Some(ts(1_700_000_000)),
            updated_at: Some(ts(1_700_000_005)),
        }),
        spec: Some(api::TaskSpec {
            runtime: Some(api::task_spec::Runtime::Container(api::ContainerSpec {
                image: "nginx:alpine".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        service_id: "svc1".into(),
        slot: 2,
        node_id: "node1".into(),
        status: Some(api::TaskStatus {
            timestamp: Some(ts(1_700_000_004)),
            state: api::TaskState::Running as i32,
            message: "started".into(),
            runtime_status: Some(api::task_status::RuntimeStatus::Container(
                api::ContainerStatus {
                    container_id: "c0ffee".into(),
                    pid: 42,
                    exit_code: 0,
                },
            )),
            port_status: Some(api::PortStatus {
                ports: vec![api::PortConfig {
                    target_port: 80,
                    published_port: 8080,
                    publish_mode: api::port_config::PublishMode::Host as i32,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        desired_state: api::TaskState::Running as i32,
        networks: vec![api::NetworkAttachment {
            network: Some(api::Network {
                id: "net1".into(),
                spec: Some(api::NetworkSpec {
                    annotations: Some(api::Annotations {
                        name: "front".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            addresses: vec!["10.0.1.5/24".into()],
            ..Default::default()
        }],
        job_iteration: Some(api::Version { index: 3 }),
        ..Default::default()
    };
    let value = task_json(&task);
    assert_eq!(value["ID"], "task1");
    assert_eq!(value["Version"]["Index"], 21);
    assert_eq!(value["Labels"], json!({}));
    assert_eq!(value["Spec"]["ContainerSpec"]["Image"], "nginx:alpine");
    // Docker names the runtime in a service's template only.
    assert!(value["Spec"].get("Runtime").is_none(), "{value}");
    assert_eq!(value["ServiceID"], "svc1");
    assert_eq!(value["Slot"], 2);
    assert_eq!(value["NodeID"], "node1");
    assert_eq!(
        value["Status"],
        json!({
            "Timestamp": "2023-11-14T22:13:24Z",
            "State": "running",
            "Message": "started",
            "ContainerStatus": {"ContainerID": "c0ffee", "PID": 42, "ExitCode": 0},
            "PortStatus": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}]},
        })
    );
    assert_eq!(value["DesiredState"], "running");
    let attachment = &value["NetworksAttachments"][0];
    assert_eq!(attachment["Addresses"], json!(["10.0.1.5/24"]));
    assert_eq!(attachment["Network"]["ID"], "net1");
    assert_eq!(attachment["Network"]["Spec"]["Name"], "front");
    assert_eq!(attachment["Network"]["Spec"]["Scope"], "swarm");
    assert_eq!(value["JobIteration"], json!({"Index": 3}));
    // A global task has no slot; a new one no error, no container and no attachments.
    let fresh = task_json(&api::Task {
        id: "t".into(),
        ..Default::default()
    });
    assert!(fresh.get("Slot").is_none());
    assert!(fresh.get("NetworksAttachments").is_none());
    assert_eq!(
        fresh["Status"],
        json!({"Timestamp": "1970-01-01T00:00:00Z", "State": "new", "PortStatus": {}})
    );
}
