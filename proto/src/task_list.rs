//! `Control.ListTasks`'s answer, the one message written by hand rather than generated: a
//! manager answers a `service ps` of 50,000 tasks by encoding them straight from its view,
//! where the generated message would need a decoded copy of each first (some 2 KB apiece, 100 MB
//! at 50,000 tasks, held until the answer is sent). Clients decode it as the generated message.

use std::fmt;

use prost::bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::api::Task;

/// The field number of `tasks` in `message ListTasksResponse { repeated Task tasks = 1; }`.
const TASKS_FIELD: u32 = 1;

/// `message ListTasksResponse { repeated Task tasks = 1; }`: the tasks a client decoded, or
/// those a manager encoded from its view with [`ListTasksResponse::encoding`]. Both are sent as
/// the same field, decoded tasks first.
#[derive(Clone, Default, PartialEq)]
pub struct ListTasksResponse {
    /// The tasks decoded from an answer. An answer made with [`ListTasksResponse::encoding`]
    /// holds its tasks encoded, not here, until it is sent and decoded by the client.
    pub tasks: Vec<Task>,
    /// Tasks already encoded as entries of the `tasks` field.
    encoded: Bytes,
}

impl ListTasksResponse {
    /// An answer of `tasks`, encoded now into one buffer of exactly their size.
    pub fn encoding<'a>(tasks: impl IntoIterator<Item = &'a Task> + Clone) -> Self {
        let size = tasks
            .clone()
            .into_iter()
            .map(|task| encoding::message::encoded_len(TASKS_FIELD, task))
            .sum();
        let mut encoded = BytesMut::with_capacity(size);
        for task in tasks {
            encoding::message::encode(TASKS_FIELD, task, &mut encoded);
        }
        ListTasksResponse {
            tasks: Vec::new(),
            encoded: encoded.freeze(),
        }
    }
}

impl Message for ListTasksResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for task in &self.tasks {
            encoding::message::encode(TASKS_FIELD, task, buf);
        }
        buf.put_slice(&self.encoded);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == TASKS_FIELD {
            encoding::message::merge_repeated(wire_type, &mut self.tasks, buf, ctx)
        } else {
            encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        encoding::message::encoded_len_repeated(TASKS_FIELD, &self.tasks) + self.encoded.len()
    }

    fn clear(&mut self) {
        self.tasks.clear();
        self.encoded.clear();
    }
}

impl fmt::Debug for ListTasksResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListTasksResponse")
            .field("tasks", &self.tasks)
            .field("encoded_bytes", &self.encoded.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TaskSpec, TaskStatus};

    fn task(id: &str, slot: u64) -> Task {
        Task {
            id: id.to_owned(),
            service_id: "web".to_owned(),
            slot,
            spec: Some(TaskSpec::default()),
            status: Some(TaskStatus {
                message: format!("task {id}"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The generated form of the message, which the hand-written one must match on the wire.
    #[derive(Clone, PartialEq, Message)]
    struct Generated {
        #[prost(message, repeated, tag = "1")]
        tasks: Vec<Task>,
    }

    #[test]
    fn tasks_encoded_from_references_decode_as_the_generated_message_would() {
        let tasks = vec![task("a", 1), task("b", 2), task("c", 3)];
        let answer = ListTasksResponse::encoding(tasks.iter());
        assert!(answer.tasks.is_empty());
        let bytes = answer.encode_to_vec();
        assert_eq!(bytes.len(), answer.encoded_len());
        assert_eq!(
            bytes,
            Generated {
                tasks: tasks.clone()
            }
            .encode_to_vec()
        );
        let decoded = ListTasksResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.tasks, tasks);
        assert_eq!(decoded.encoded_len(), bytes.len());
    }

    #[test]
    fn decoded_tasks_encode_again_unchanged_and_unknown_fields_are_skipped() {
        let mut bytes = Generated {
            tasks: vec![task("a", 1)],
        }
        .encode_to_vec();
        // Field 7, a string a newer peer might add.
        encoding::string::encode(7, &"later".to_owned(), &mut bytes);
        let decoded = ListTasksResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.tasks, vec![task("a", 1)]);
        assert_eq!(
            decoded.encode_to_vec(),
            Generated {
                tasks: vec![task("a", 1)]
            }
            .encode_to_vec()
        );
    }

    #[test]
    fn a_field_of_the_wrong_wire_type_is_a_decode_error() {
        let mut bytes = Vec::new();
        encoding::uint64::encode(TASKS_FIELD, &5, &mut bytes);
        assert!(ListTasksResponse::decode(bytes.as_slice()).is_err());
    }
}
