//! Tasks as Docker shapes them (`GET /tasks`, `docker inspect TASK`): the template they run,
//! where they are, their status and the networks they are attached to.

use serde_json::{Map, Value, json};
use shoal_proto::api;

use super::common::{insert_meta, insert_nonempty, labels_json, rfc3339_nano};
use super::network::swarm_network_json;
use super::service::port_json;
use super::task_spec::{generic_resources_json, task_template_json};

/// Docker's lower-case word for a task state.
pub fn task_state_name(state: i32) -> &'static str {
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

fn status_json(status: &api::TaskStatus) -> Value {
    let mut object = Map::new();
    object.insert(
        "Timestamp".into(),
        json!(rfc3339_nano(status.timestamp.as_ref())),
    );
    object.insert("State".into(), json!(task_state_name(status.state)));
    insert_nonempty(&mut object, "Message", json!(status.message));
    insert_nonempty(&mut object, "Err", json!(status.err));
    if let Some(api::task_status::RuntimeStatus::Container(container)) = &status.runtime_status {
        object.insert(
            "ContainerStatus".into(),
            json!({
                "ContainerID": container.container_id,
                "PID": container.pid,
                "ExitCode": container.exit_code,
            }),
        );
    }
    let mut ports = Map::new();
    if let Some(port_status) = &status.port_status {
        insert_nonempty(
            &mut ports,
            "Ports",
            Value::Array(port_status.ports.iter().map(port_json).collect()),
        );
    }
    object.insert("PortStatus".into(), Value::Object(ports));
    Value::Object(object)
}

/// `GET /tasks` and `GET /tasks/{id}`: one task in Docker's shape.
pub fn task_json(task: &api::Task) -> Value {
    let mut object = Map::new();
    insert_meta(&mut object, &task.id, task.meta.as_ref());
    let annotations = task.annotations.clone().unwrap_or_default();
    insert_nonempty(&mut object, "Name", json!(annotations.name));
    object.insert("Labels".into(), labels_json(&annotations.labels));
    object.insert(
        "Spec".into(),
        task_template_json(&task.spec.clone().unwrap_or_default()),
    );
    insert_nonempty(&mut object, "ServiceID", json!(task.service_id));
    insert_nonempty(&mut object, "Slot", json!(task.slot));
    insert_nonempty(&mut object, "NodeID", json!(task.node_id));
    object.insert(
        "Status".into(),
        status_json(&task.status.clone().unwrap_or_default()),
    );
    object.insert(
        "DesiredState".into(),
        json!(task_state_name(task.desired_state)),
    );
    let attachments: Vec<Value> = task
        .networks
        .iter()
        .map(|attachment| {
            let mut value = Map::new();
            value.insert(
                "Network".into(),
                swarm_network_json(&attachment.network.clone().unwrap_or_default()),
            );
            insert_nonempty(&mut value, "Addresses", json!(attachment.addresses));
            Value::Object(value)
        })
        .collect();
    insert_nonempty(
        &mut object,
        "NetworksAttachments",
        Value::Array(attachments),
    );
    insert_nonempty(
        &mut object,
        "GenericResources",
        generic_resources_json(&task.assigned_generic_resources),
    );
    if let Some(iteration) = &task.job_iteration {
        object.insert("JobIteration".into(), json!({"Index": iteration.index}));
    }
    Value::Object(object)
}
