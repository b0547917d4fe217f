//! What a node is assigned: the pure half of the assignment stream. The set is sent again only
//! when something the worker acts on changes (a task added or dropped, or its desired state),
//! not on every status report, and a set too large for one message goes in several parts.

use std::collections::BTreeSet;

use prost::Message as _;
use shoal_proto::api::{AssignmentsMessage, Config, Secret, Task, TaskState, task_spec};

use crate::orchestrator::{is_terminal, observed_state};
use crate::view::{ClusterView, Touched};

/// What decides whether a new set must be sent: each task's id and desired state.
pub(crate) type AssignmentKey = Vec<(String, i32)>;

/// Whether a worker must hold `task`: it is on the node and scheduled there, and it is not a
/// removed task that has already stopped.
pub(crate) fn is_assigned_to(task: &Task, node_id: &str) -> bool {
    let observed = observed_state(task);
    task.node_id == node_id
        && observed as i32 >= TaskState::Assigned as i32
        && !(task.desired_state >= TaskState::Remove as i32 && is_terminal(observed))
}

/// A node's assignment set, its change key, and what else it was built from.
pub(crate) struct AssignmentSet {
    pub(crate) key: AssignmentKey,
    /// The set itself, built only when its key is not the one last sent: a session waits
    /// between changes holding the key alone, not copies of its node's tasks (at 5,000 nodes
    /// those copies were some 160 MB of the leader's memory).
    pub(crate) message: Option<AssignmentsMessage>,
    /// The secrets and configs the node's tasks reference, found or not.
    pub(crate) secret_ids: BTreeSet<String>,
    pub(crate) config_ids: BTreeSet<String>,
}

/// Whether changes that touched `touched` may change node `node_id`'s set: its tasks, or a
/// secret or config they reference (the set's `secret_ids` and `config_ids`). Anything else
/// leaves the set as it is, so it is not built again.
pub(crate) fn is_touched_by(
    touched: &Touched,
    node_id: &str,
    secret_ids: &BTreeSet<String>,
    config_ids: &BTreeSet<String>,
) -> bool {
    touched.everything
        || touched.task_nodes.contains(node_id)
        || !touched.secrets.is_disjoint(secret_ids)
        || !touched.configs.is_disjoint(config_ids)
}

/// Node `node_id`'s assignment set in `view`, from the node's own tasks only; its message is
/// left out when its key is `sent`.
pub(crate) fn assignment_set(
    view: &ClusterView,
    node_id: &str,
    sent: Option<&AssignmentKey>,
) -> AssignmentSet {
    // In id order, as the view's index keeps them.
    let tasks: Vec<&Task> = view
        .tasks_on_node(node_id)
        .filter(|task| is_assigned_to(task, node_id))
        .collect();
    let key: AssignmentKey = tasks
        .iter()
        .map(|task| (task.id.clone(), task.desired_state))
        .collect();
    let mut secret_ids = BTreeSet::new();
    let mut config_ids = BTreeSet::new();
    for task in &tasks {
        if let Some(task_spec::Runtime::Container(container)) =
            task.spec.as_ref().and_then(|spec| spec.runtime.as_ref())
        {
            secret_ids.extend(container.secrets.iter().map(|s| s.secret_id.clone()));
            config_ids.extend(container.configs.iter().map(|c| c.config_id.clone()));
        }
    }
    let message = (sent != Some(&key)).then(|| AssignmentsMessage {
        version: 0,
        tasks: tasks.into_iter().cloned().collect(),
        secrets: secret_ids
            .iter()
            .filter_map(|id| view.secret(id))
            .cloned()
            .collect(),
        configs: config_ids
            .iter()
            .filter_map(|id| view.config(id))
            .cloned()
            .collect(),
        part: 0,
        more: false,
    });
    AssignmentSet {
        key,
        message,
        secret_ids,
        config_ids,
    }
}

/// The most bytes of tasks, secrets and configs in one assignment message. A gRPC client
/// decodes at most 4 MiB by default, and a single item may be larger than this budget (a task
/// up to a Raft proposal, 1.5 MiB; a secret or config up to 500 KiB): it then goes in a part
/// of its own, still under 4 MiB.
pub(crate) const ASSIGNMENT_PART_BYTES: usize = 1024 * 1024;

/// One item of a set, kept in the order the set lists them.
enum Item {
    /// Boxed: a task is several times the size of the others.
    Task(Box<Task>),
    Secret(Secret),
    Config(Config),
}

/// Splits `set` into the messages that carry it, in order: each holds items of at most
/// `budget` encoded bytes, unless one item alone is larger, which then goes alone. Every part
/// carries the set's version and its own number from 0; all but the last have `more` set. An
/// empty set is one empty part.
pub(crate) fn into_parts(set: AssignmentsMessage, budget: usize) -> Vec<AssignmentsMessage> {
    let version = set.version;
    let items = set
        .tasks
        .into_iter()
        .map(|task| Item::Task(Box::new(task)))
        .chain(set.secrets.into_iter().map(Item::Secret))
        .chain(set.configs.into_iter().map(Item::Config));
    let empty_part = || AssignmentsMessage {
        version,
        ..AssignmentsMessage::default()
    };
    let mut parts = vec![];
    let mut current = empty_part();
    let mut current_bytes = 0;
    for item in items {
        let bytes = match &item {
            Item::Task(task) => task.encoded_len(),
            Item::Secret(secret) => secret.encoded_len(),
            Item::Config(config) => config.encoded_len(),
        };
        // The field's key and length prefix.
        let bytes = bytes + 1 + prost::length_delimiter_len(bytes);
        if current_bytes > 0 && current_bytes + bytes > budget {
            parts.push(std::mem::replace(&mut current, empty_part()));
            current_bytes = 0;
        }
        current_bytes += bytes;
        match item {
            Item::Task(task) => current.tasks.push(*task),
            Item::Secret(secret) => current.secrets.push(secret),
            Item::Config(config) => current.configs.push(config),
        }
    }
    parts.push(current);
    let last = parts.len() - 1;
    for (index, part) in parts.iter_mut().enumerate() {
        part.part = u32::try_from(index).unwrap_or(u32::MAX);
        part.more = index < last;
    }
    parts
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{SecretSpec, TaskStatus};

    use super::*;

    fn secret(id: &str, bytes: usize) -> Secret {
        Secret {
            id: id.to_owned(),
            spec: Some(SecretSpec {
                data: vec![b's'; bytes],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn named_task(id: &str) -> Task {
        Task {
            id: id.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn a_small_set_is_one_part_and_an_empty_set_too() {
        let set = AssignmentsMessage {
            version: 7,
            tasks: vec![named_task("t1")],
            secrets: vec![secret("s1", 10)],
            ..Default::default()
        };
        let parts = into_parts(set.clone(), ASSIGNMENT_PART_BYTES);
        assert_eq!(parts, vec![set]);
        let empty = into_parts(
            AssignmentsMessage {
                version: 3,
                ..Default::default()
            },
            ASSIGNMENT_PART_BYTES,
        );
        assert_eq!(
            empty,
            vec![AssignmentsMessage {
                version: 3,
                ..Default::default()
            }]
        );
    }

    #[test]
    fn a_large_set_is_split_under_the_budget_in_order_and_loses_nothing() {
        let budget = 100_000;
        let set = AssignmentsMessage {
            version: 2,
            tasks: (0..50)
                .map(|i| named_task(&format!("task{i:02}")))
                .collect(),
            // Ten of 30 KB: three a part; one larger than the budget goes alone.
            secrets: (0..10)
                .map(|i| secret(&format!("s{i}"), 30_000))
                .chain([secret("huge", 150_000)])
                .collect(),
            configs: vec![shoal_proto::api::Config {
                id: "c1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let parts = into_parts(set.clone(), budget);
        assert!(parts.len() >= 5, "{} parts", parts.len());
        for (index, part) in parts.iter().enumerate() {
            assert_eq!(part.version, 2);
            assert_eq!(part.part as usize, index);
            assert_eq!(part.more, index + 1 < parts.len());
            let alone = part.tasks.len() + part.secrets.len() + part.configs.len() == 1;
            assert!(
                part.encoded_len() <= budget + 16 || alone,
                "part {index} is {} bytes",
                part.encoded_len()
            );
        }
        let huge = parts
            .iter()
            .find(|part| part.secrets.iter().any(|s| s.id == "huge"))
            .unwrap();
        assert_eq!(huge.secrets.len(), 1);
        // Put back together in order, the parts are the set.
        let mut whole = AssignmentsMessage {
            version: 2,
            ..Default::default()
        };
        for part in parts {
            whole.tasks.extend(part.tasks);
            whole.secrets.extend(part.secrets);
            whole.configs.extend(part.configs);
        }
        assert_eq!(whole, set);
    }

    fn task(node: &str, observed: TaskState, desired: TaskState) -> Task {
        let mut task = Task {
            id: "t".to_owned(),
            node_id: node.to_owned(),
            status: Some(TaskStatus::default()),
            ..Default::default()
        };
        task.status.as_mut().unwrap().set_state(observed);
        task.set_desired_state(desired);
        task
    }

    #[test]
    fn only_scheduled_tasks_of_the_node_that_a_worker_must_hold() {
        use TaskState::*;
        assert!(is_assigned_to(&task("n1", Assigned, Running), "n1"));
        assert!(is_assigned_to(&task("n1", Running, Shutdown), "n1"));
        // History stays assigned: its stopped container is kept until the reaper deletes it.
        assert!(is_assigned_to(&task("n1", Shutdown, Shutdown), "n1"));
        // A removed task is held until it has stopped, then dropped so its container goes.
        assert!(is_assigned_to(&task("n1", Running, Remove), "n1"));
        assert!(!is_assigned_to(&task("n1", Shutdown, Remove), "n1"));
        // Not scheduled yet, or elsewhere.
        assert!(!is_assigned_to(&task("n1", Pending, Running), "n1"));
        assert!(!is_assigned_to(&task("n2", Running, Running), "n1"));
    }

    fn referencing(mut task: Task, secret_ids: &[&str], config_ids: &[&str]) -> Task {
        task.spec = Some(shoal_proto::api::TaskSpec {
            runtime: Some(task_spec::Runtime::Container(
                shoal_proto::api::ContainerSpec {
                    secrets: secret_ids
                        .iter()
                        .map(|id| shoal_proto::api::SecretReference {
                            secret_id: (*id).to_owned(),
                            ..Default::default()
                        })
                        .collect(),
                    configs: config_ids
                        .iter()
                        .map(|id| shoal_proto::api::ConfigReference {
                            config_id: (*id).to_owned(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        });
        task
    }

    #[test]
    fn a_nodes_set_is_its_assigned_tasks_in_id_order_with_what_they_reference() {
        use TaskState::*;
        use raft_store::{ChangeEvent, CommittedChanges};

        let with_id = |id: &str, task: Task| Task {
            id: id.to_owned(),
            ..task
        };
        let records = [
            crate::view::tests::record(
                &with_id(
                    "t2",
                    referencing(task("n1", Running, Running), &["s1"], &["c1"]),
                ),
                4,
            ),
            crate::view::tests::record(&with_id("t1", task("n1", Assigned, Running)), 4),
            crate::view::tests::record(&with_id("t3", task("n1", Shutdown, Remove)), 4),
            crate::view::tests::record(&with_id("t4", task("n2", Running, Running)), 4),
            crate::view::tests::record(&secret("s1", 3), 4),
            crate::view::tests::record(&secret("s2", 3), 4),
            crate::view::tests::record(
                &Config {
                    id: "c1".into(),
                    ..Default::default()
                },
                4,
            ),
        ];
        let mut view = ClusterView::default();
        view.apply(&CommittedChanges {
            index: 4,
            changes: records.into_iter().map(ChangeEvent::Created).collect(),
        })
        .unwrap();
        let set = assignment_set(&view, "n1", None);
        let message = set.message.as_ref().expect("nothing was sent yet");
        let ids: Vec<&str> = message.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2"]);
        assert_eq!(
            set.key,
            vec![
                ("t1".to_owned(), Running as i32),
                ("t2".to_owned(), Running as i32)
            ]
        );
        assert_eq!(message.secrets.len(), 1);
        assert_eq!(message.secrets[0].id, "s1");
        assert_eq!(message.configs.len(), 1);
        // The same key again builds no message.
        assert!(
            assignment_set(&view, "n1", Some(&set.key))
                .message
                .is_none()
        );
        // What touches the set: its node's tasks, what they reference, or everything.
        let is_touched =
            |touched: Touched| is_touched_by(&touched, "n1", &set.secret_ids, &set.config_ids);
        let ids = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect();
        assert!(is_touched(Touched::everything()));
        assert!(is_touched(Touched {
            task_nodes: ids(&["n1"]),
            ..Default::default()
        }));
        assert!(is_touched(Touched {
            secrets: ids(&["s1"]),
            ..Default::default()
        }));
        assert!(is_touched(Touched {
            configs: ids(&["c1"]),
            ..Default::default()
        }));
        assert!(!is_touched(Touched {
            task_nodes: ids(&["n2"]),
            secrets: ids(&["s2"]),
            configs: ids(&["c2"]),
            kinds: ids(&["service", "task", "secret"]),
            ..Default::default()
        }));
    }
}
