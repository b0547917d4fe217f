//! Which objects a list call's filters keep, for the kinds whose control API list takes none:
//! Docker's filter keys and how each matches. Pure.

use shoal_proto::api;

use spec::enums::TextForm;

use crate::filters::Filters;

/// `GET /nodes`' filter keys.
pub const NODE_FILTERS: &[&str] = &["id", "label", "membership", "name", "node.label", "role"];
/// `GET /services`' filter keys.
pub const SERVICE_FILTERS: &[&str] = &["id", "label", "mode", "name"];
/// `GET /tasks`' filter keys (`_up-to-date` is the docker CLI's own, for its progress display).
pub const TASK_FILTERS: &[&str] = &[
    "desired-state",
    "id",
    "label",
    "name",
    "node",
    "service",
    "_up-to-date",
];
/// `GET /secrets` and `GET /configs`' filter keys.
pub const PAYLOAD_FILTERS: &[&str] = &["id", "label", "name", "names"];

fn labels(annotations: Option<&api::Annotations>) -> std::collections::HashMap<String, String> {
    annotations.map(|a| a.labels.clone()).unwrap_or_default()
}

fn name(annotations: Option<&api::Annotations>) -> &str {
    annotations.map_or("", |a| a.name.as_str())
}

/// Whether `node` passes: ids and names by prefix, as Docker matches them.
pub fn node_passes(filters: &Filters, node: &api::Node) -> bool {
    let spec = node.spec.as_ref();
    let annotations = spec.and_then(|s| s.annotations.as_ref());
    let hostname = node
        .description
        .as_ref()
        .map_or("", |d| d.hostname.as_str());
    let engine_labels = node
        .description
        .as_ref()
        .and_then(|d| d.engine.as_ref())
        .map(|e| e.labels.clone())
        .unwrap_or_default();
    let membership = match spec.map(|s| s.membership()) {
        Some(api::node_spec::Membership::Accepted) => "accepted",
        _ => "pending",
    };
    let role = match node.role() {
        api::NodeRole::Manager => "manager",
        api::NodeRole::Worker => "worker",
    };
    filters.any("id", |id| node.id.starts_with(id))
        && filters.any("name", |wanted| {
            name(annotations).starts_with(wanted) || hostname.starts_with(wanted)
        })
        && filters.any("membership", |wanted| wanted == membership)
        && filters.any("role", |wanted| wanted == role)
        && filters.labels_match("label", &engine_labels)
        && filters.labels_match("node.label", &labels(annotations))
}

/// Whether `service` passes.
pub fn service_passes(filters: &Filters, service: &api::Service) -> bool {
    let spec = service.spec.as_ref();
    let annotations = spec.and_then(|s| s.annotations.as_ref());
    let mode = spec
        .and_then(|s| s.mode.as_ref())
        .map_or("replicated", |mode| spec::enums::ModeName::of(mode).text());
    filters.any("id", |id| service.id.starts_with(id))
        && filters.any("name", |wanted| name(annotations).starts_with(wanted))
        && filters.any("mode", |wanted| wanted == mode)
        && filters.labels_match("label", &labels(annotations))
}

/// Whether `task` passes; `services` are the services it may belong to, for whether it runs
/// its service's current spec (`_up-to-date`). Names and labels are its service's, as the task
/// carries them: Swarm matches `label` against the service's labels (`docker stack ps` lists a
/// stack's tasks by the stack's label on its services).
pub fn task_passes(filters: &Filters, task: &api::Task, services: &[api::Service]) -> bool {
    let service = services.iter().find(|s| s.id == task.service_id);
    let service_annotations = task.service_annotations.as_ref();
    // Swarm's task name: `service.slot.id` for a replicated task, `service.node.id` for a
    // global one; the `name` filter matches a prefix of it.
    let slot = if task.slot > 0 {
        task.slot.to_string()
    } else {
        task.node_id.clone()
    };
    let task_name = format!("{}.{slot}.{}", name(service_annotations), task.id);
    let desired = match task.desired_state() {
        api::TaskState::Running => "running",
        api::TaskState::Shutdown | api::TaskState::Remove => "shutdown",
        api::TaskState::Accepted => "accepted",
        api::TaskState::Ready => "ready",
        _ => "",
    };
    let up_to_date = service.is_some_and(|s| {
        s.spec_version.as_ref().map(|v| v.index) == task.spec_version.as_ref().map(|v| v.index)
    });
    filters.any("id", |id| task.id.starts_with(id))
        && filters.any("name", |wanted| task_name.starts_with(wanted))
        && filters.any("desired-state", |wanted| wanted == desired)
        && filters.any("_up-to-date", |wanted| {
            (wanted == "true" || wanted == "1") == up_to_date
        })
        && filters.labels_match("label", &labels(service_annotations))
}

/// Whether a secret or config passes: `name` by prefix, `names` exactly.
pub fn payload_passes(filters: &Filters, id: &str, annotations: Option<&api::Annotations>) -> bool {
    filters.any("id", |wanted| id.starts_with(wanted))
        && filters.any("name", |wanted| name(annotations).starts_with(wanted))
        && filters.any("names", |wanted| wanted == name(annotations))
        && filters.labels_match("label", &labels(annotations))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(text: &str, allowed: &[&str]) -> Filters {
        Filters::parse(Some(text), allowed).unwrap()
    }

    fn node(id: &str, hostname: &str, role: api::NodeRole) -> api::Node {
        api::Node {
            id: id.into(),
            role: role as i32,
            description: Some(api::NodeDescription {
                hostname: hostname.into(),
                ..Default::default()
            }),
            spec: Some(api::NodeSpec {
                membership: api::node_spec::Membership::Accepted as i32,
                annotations: Some(api::Annotations {
                    labels: [("zone".to_owned(), "a".to_owned())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn nodes_match_by_id_prefix_hostname_role_and_label() {
        let manager = node("abc123", "h1", api::NodeRole::Manager);
        let worker = node("def456", "h2", api::NodeRole::Worker);
        let keep = |text: &str| -> Vec<&str> {
            let f = filters(text, NODE_FILTERS);
            [&manager, &worker]
                .into_iter()
                .filter(|n| node_passes(&f, n))
                .map(|n| n.id.as_str())
                .collect()
        };
        assert_eq!(keep(r#"{"role":{"manager":true}}"#), ["abc123"]);
        assert_eq!(keep(r#"{"id":{"def":true}}"#), ["def456"]);
        assert_eq!(keep(r#"{"name":{"h2":true}}"#), ["def456"]);
        assert_eq!(
            keep(r#"{"node.label":{"zone=a":true}}"#),
            ["abc123", "def456"]
        );
        assert!(keep(r#"{"node.label":{"zone=b":true}}"#).is_empty());
        assert_eq!(keep(r#"{"membership":{"accepted":true}}"#).len(), 2);
    }

    #[test]
    fn tasks_match_by_name_desired_state_up_to_date_and_their_service_s_labels() {
        let annotations = api::Annotations {
            name: "app_web".into(),
            labels: [("com.docker.stack.namespace".to_owned(), "app".to_owned())].into(),
            ..Default::default()
        };
        let service = api::Service {
            id: "s1".into(),
            spec: Some(api::ServiceSpec {
                annotations: Some(annotations.clone()),
                ..Default::default()
            }),
            spec_version: Some(api::Version { index: 7 }),
            ..Default::default()
        };
        let task = |id: &str, slot, version, desired: api::TaskState| api::Task {
            id: id.into(),
            service_id: "s1".into(),
            slot,
            node_id: "n1".into(),
            spec_version: Some(api::Version { index: version }),
            desired_state: desired as i32,
            service_annotations: Some(annotations.clone()),
            ..Default::default()
        };
        let tasks = [
            task("t1", 1, 7, api::TaskState::Running),
            task("t2", 2, 5, api::TaskState::Shutdown),
            task("t3", 0, 7, api::TaskState::Running),
        ];
        let keep = |text: &str| -> Vec<&str> {
            let f = filters(text, TASK_FILTERS);
            tasks
                .iter()
                .filter(|t| task_passes(&f, t, std::slice::from_ref(&service)))
                .map(|t| t.id.as_str())
                .collect()
        };
        assert_eq!(keep(r#"{"_up-to-date":{"true":true}}"#), ["t1", "t3"]);
        assert_eq!(keep(r#"{"desired-state":{"shutdown":true}}"#), ["t2"]);
        // Swarm's names: `service.slot.id`, and `service.node.id` for a global task.
        assert_eq!(keep(r#"{"name":{"app_web.2":true}}"#), ["t2"]);
        assert_eq!(keep(r#"{"name":{"app_web.2.t2":true}}"#), ["t2"]);
        assert_eq!(keep(r#"{"name":{"app_web.n1.t3":true}}"#), ["t3"]);
        assert_eq!(
            keep(r#"{"desired-state":["running","shutdown"]}"#),
            ["t1", "t2", "t3"]
        );
        // `docker stack ps app`: the task has no labels of its own; its service's count.
        assert_eq!(
            keep(r#"{"label":{"com.docker.stack.namespace=app":true}}"#),
            ["t1", "t2", "t3"]
        );
        assert!(keep(r#"{"label":{"com.docker.stack.namespace=other":true}}"#).is_empty());
    }

    #[test]
    fn payloads_match_names_by_prefix_and_names_exactly() {
        let annotations = api::Annotations {
            name: "db_password".into(),
            ..Default::default()
        };
        let passes =
            |text: &str| payload_passes(&filters(text, PAYLOAD_FILTERS), "x1", Some(&annotations));
        assert!(passes(r#"{"name":{"db":true}}"#));
        assert!(!passes(r#"{"names":{"db":true}}"#));
        assert!(passes(r#"{"names":{"db_password":true}}"#));
    }
}
