//! What a worker may send the dispatcher, and how often: the sizes of a session's node
//! description, of status reports and of log output, the rates of session opens per node, and
//! of heartbeats, status reports and log bytes per session. Each refusal names the limit, so that no worker can exhaust a manager's
//! memory or its Raft log, and a worker that hits one is told what it sent.

use prost::Message;
use shoal_proto::api::{NodeDescription, PublishLogsMessage, TaskStatusUpdate};
use tonic::Status;

use crate::rate_limit::Rate;

/// The largest node description a session may register: hostname, platform, resources, engine
/// and TLS information take a few KiB.
pub(crate) const MAX_DESCRIPTION_BYTES: usize = 64 * 1024;
/// Sessions a node may open. Each open writes the node object through Raft; an agent reconnects
/// with a backoff that starts at 100 ms, so a burst of reconnects passes and a loop does not.
pub(crate) const SESSION_OPEN_RATE: Rate = Rate {
    per_second: 1.0,
    burst: 10.0,
};
/// Nodes whose session opens are counted at once; as many as the cluster port's connections.
pub(crate) const SESSION_OPEN_NODES_TRACKED: usize = 16_384;
/// Heartbeats per session: twice what an agent sends at the shortest heartbeat period the
/// cluster accepts (100 ms).
pub(crate) const HEARTBEAT_RATE: Rate = Rate {
    per_second: 20.0,
    burst: 40.0,
};
/// The most task status updates in one `UpdateTaskStatus` call.
pub(crate) const MAX_STATUS_UPDATES_PER_CALL: usize = 10_000;
/// The largest single task status, message and error included.
pub(crate) const MAX_STATUS_BYTES: usize = 16 * 1024;
/// `UpdateTaskStatus` calls per session: a worker reports a batch per reconciler step.
pub(crate) const STATUS_CALL_RATE: Rate = Rate {
    per_second: 50.0,
    burst: 200.0,
};
/// The largest log line; the engine splits lines at 16 KiB.
pub(crate) const MAX_LOG_LINE_BYTES: usize = 64 * 1024;
/// The most log lines in one published message.
pub(crate) const MAX_LOG_LINES_PER_MESSAGE: usize = 1024;
/// Log bytes per publishing stream; past it the stream is slowed down, not refused.
pub(crate) const LOG_BYTE_RATE: Rate = Rate {
    per_second: 8.0 * 1024.0 * 1024.0,
    burst: 32.0 * 1024.0 * 1024.0,
};

/// Refuses a node description over [`MAX_DESCRIPTION_BYTES`].
pub(crate) fn check_description(description: &NodeDescription) -> Result<(), Status> {
    let size = description.encoded_len();
    if size > MAX_DESCRIPTION_BYTES {
        return Err(Status::invalid_argument(format!(
            "the node description is {size} bytes, over the {MAX_DESCRIPTION_BYTES}-byte limit for a session: shorten the node's labels, hostname or engine plugins list"
        )));
    }
    Ok(())
}

/// Refuses a status call with more than [`MAX_STATUS_UPDATES_PER_CALL`] updates, or with a
/// status over [`MAX_STATUS_BYTES`].
pub(crate) fn check_status_updates(updates: &[TaskStatusUpdate]) -> Result<(), Status> {
    if updates.len() > MAX_STATUS_UPDATES_PER_CALL {
        return Err(Status::invalid_argument(format!(
            "{} status updates in one call, over the limit of {MAX_STATUS_UPDATES_PER_CALL}: send them in several calls",
            updates.len()
        )));
    }
    for update in updates {
        let size = update.status.as_ref().map_or(0, Message::encoded_len);
        if size > MAX_STATUS_BYTES {
            return Err(Status::invalid_argument(format!(
                "the status of task {} is {size} bytes, over the {MAX_STATUS_BYTES}-byte limit: shorten its message and error",
                update.task_id
            )));
        }
    }
    Ok(())
}

/// Refuses a published log message with more than [`MAX_LOG_LINES_PER_MESSAGE`] lines or a
/// line over [`MAX_LOG_LINE_BYTES`]. Returns the bytes of log data it carries, which count
/// against [`LOG_BYTE_RATE`].
pub(crate) fn check_log_message(message: &PublishLogsMessage) -> Result<usize, Status> {
    if message.messages.len() > MAX_LOG_LINES_PER_MESSAGE {
        return Err(Status::invalid_argument(format!(
            "{} log lines in one message, over the limit of {MAX_LOG_LINES_PER_MESSAGE}: send them in several messages",
            message.messages.len()
        )));
    }
    let mut total = 0;
    for line in &message.messages {
        if line.data.len() > MAX_LOG_LINE_BYTES {
            return Err(Status::invalid_argument(format!(
                "a log line of task {} is {} bytes, over the {MAX_LOG_LINE_BYTES}-byte limit: split long lines",
                line.task_id,
                line.data.len()
            )));
        }
        total += line.data.len();
    }
    Ok(total)
}

/// The refusal for a caller over `limit`, with how long to wait.
pub(crate) fn rate_exceeded(what: &str, rate: Rate, wait: std::time::Duration) -> Status {
    let wait = if wait == std::time::Duration::MAX {
        "it is larger than the burst allowed; send less at once".to_owned()
    } else {
        format!("retry in {} ms", wait.as_millis().max(1))
    };
    Status::resource_exhausted(format!(
        "{what} exceed the limit of {} a second (bursts of {}): {wait}",
        rate.per_second, rate.burst
    ))
}

#[cfg(test)]
mod tests {
    use shoal_proto::api::{LogMessage, TaskStatus};

    use super::*;

    #[test]
    fn a_huge_description_is_refused_naming_the_limit() {
        let ordinary = NodeDescription {
            hostname: "worker-1".into(),
            ..Default::default()
        };
        assert!(check_description(&ordinary).is_ok());
        let huge = NodeDescription {
            hostname: "x".repeat(MAX_DESCRIPTION_BYTES),
            ..Default::default()
        };
        let refusal = check_description(&huge).unwrap_err();
        assert_eq!(refusal.code(), tonic::Code::InvalidArgument);
        assert!(
            refusal.message().contains("65536-byte limit"),
            "{refusal:?}"
        );
    }

    fn update(task: &str, message_bytes: usize) -> TaskStatusUpdate {
        TaskStatusUpdate {
            task_id: task.into(),
            status: Some(TaskStatus {
                message: "m".repeat(message_bytes),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn status_calls_are_bounded_in_count_and_size() {
        assert!(check_status_updates(&[update("a", 100), update("b", 1000)]).is_ok());
        let too_large = check_status_updates(&[update("a", MAX_STATUS_BYTES)]).unwrap_err();
        assert!(too_large.message().contains("task a"), "{too_large:?}");
        let too_many = vec![update("a", 0); MAX_STATUS_UPDATES_PER_CALL + 1];
        let refusal = check_status_updates(&too_many).unwrap_err();
        assert!(refusal.message().contains("10000"), "{refusal:?}");
    }

    fn lines(count: usize, bytes: usize) -> PublishLogsMessage {
        PublishLogsMessage {
            messages: vec![
                LogMessage {
                    task_id: "t1".into(),
                    data: vec![b'x'; bytes],
                    ..Default::default()
                };
                count
            ],
            ..Default::default()
        }
    }

    #[test]
    fn log_messages_are_bounded_in_lines_and_line_length() {
        assert_eq!(check_log_message(&lines(3, 10)).unwrap(), 30);
        assert!(check_log_message(&lines(MAX_LOG_LINES_PER_MESSAGE + 1, 1)).is_err());
        let long = check_log_message(&lines(1, MAX_LOG_LINE_BYTES + 1)).unwrap_err();
        assert!(long.message().contains("split long lines"), "{long:?}");
    }
}
