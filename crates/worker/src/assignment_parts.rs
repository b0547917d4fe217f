//! Puts an assignment set back together from the parts the dispatcher sends it in, so that the
//! agent acts only on whole sets: a part is held until the set's last part has come.

use shoal_proto::api::AssignmentsMessage;

use crate::error::{Result, WorkerError};

/// The parts of the set being received; one per session, since a new session starts with a
/// fresh set.
#[derive(Debug, Default)]
pub struct AssignmentParts {
    partial: Option<AssignmentsMessage>,
}

impl AssignmentParts {
    /// Takes the stream's next message. Returns the whole set once its last part has come
    /// (at once for a set sent whole), and `None` while parts are still due. A part out of
    /// order (not the next of the set under way, or a new set before it ended) is an error and
    /// drops the partial set.
    pub fn push(&mut self, part: AssignmentsMessage) -> Result<Option<AssignmentsMessage>> {
        let partial = self.partial.take();
        let (due_version, due_part) = match &partial {
            Some(partial) => (Some(partial.version), partial.part + 1),
            None => (None, 0),
        };
        if part.part != due_part || due_version.is_some_and(|version| version != part.version) {
            return Err(WorkerError::AssignmentPartOutOfOrder {
                version: part.version,
                part: part.part,
                expected: match due_version {
                    Some(version) => format!("part {due_part} of set {version}"),
                    None => "the first part of a set".to_owned(),
                },
            });
        }
        let mut set = match partial {
            None => part,
            Some(mut set) => {
                set.tasks.extend(part.tasks);
                set.secrets.extend(part.secrets);
                set.configs.extend(part.configs);
                set.part = part.part;
                set.more = part.more;
                set
            }
        };
        if set.more {
            self.partial = Some(set);
            return Ok(None);
        }
        set.part = 0;
        Ok(Some(set))
    }
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{Secret, Task};

    use super::*;

    fn part(version: u64, number: u32, more: bool, task: &str) -> AssignmentsMessage {
        AssignmentsMessage {
            version,
            part: number,
            more,
            tasks: vec![Task {
                id: task.to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn task_ids(set: &AssignmentsMessage) -> Vec<&str> {
        set.tasks.iter().map(|task| task.id.as_str()).collect()
    }

    #[test]
    fn a_set_sent_whole_passes_at_once() {
        let mut parts = AssignmentParts::default();
        let set = parts.push(part(1, 0, false, "a")).unwrap().unwrap();
        assert_eq!(task_ids(&set), ["a"]);
        let set = parts.push(part(2, 0, false, "b")).unwrap().unwrap();
        assert_eq!(task_ids(&set), ["b"]);
    }

    #[test]
    fn parts_are_held_until_the_last_then_come_out_whole_in_order() {
        let mut parts = AssignmentParts::default();
        assert_eq!(parts.push(part(4, 0, true, "a")).unwrap(), None);
        let mut middle = part(4, 1, true, "b");
        middle.secrets.push(Secret {
            id: "s1".into(),
            ..Default::default()
        });
        assert_eq!(parts.push(middle).unwrap(), None);
        let set = parts.push(part(4, 2, false, "c")).unwrap().unwrap();
        assert_eq!(task_ids(&set), ["a", "b", "c"]);
        assert_eq!(set.secrets.len(), 1);
        assert_eq!((set.version, set.part, set.more), (4, 0, false));
        // The next set starts afresh.
        let set = parts.push(part(5, 0, false, "d")).unwrap().unwrap();
        assert_eq!(task_ids(&set), ["d"]);
    }

    #[test]
    fn a_part_out_of_order_is_refused_and_nothing_half_made_comes_out() {
        let mut parts = AssignmentParts::default();
        // A set's middle without its start.
        let error = parts.push(part(1, 1, false, "b")).unwrap_err();
        assert!(error.to_string().contains("the first part"), "{error}");
        // A skipped part.
        assert_eq!(parts.push(part(2, 0, true, "a")).unwrap(), None);
        let error = parts.push(part(2, 2, false, "c")).unwrap_err();
        assert!(error.to_string().contains("part 1 of set 2"), "{error}");
        // A new set before the last ended: the partial one is dropped.
        assert_eq!(parts.push(part(3, 0, true, "a")).unwrap(), None);
        assert!(parts.push(part(4, 0, false, "x")).is_err());
        let set = parts.push(part(5, 0, false, "y")).unwrap().unwrap();
        assert_eq!(task_ids(&set), ["y"]);
    }
}
