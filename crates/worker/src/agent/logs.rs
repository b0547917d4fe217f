//! Publishes containers' output for one log subscription: reads each requested task's container
//! log from the engine and sends it, in batches, over one `PublishLogs` stream, which ends with a
//! `close` message once every stream that does not follow has ended or the subscription is
//! cancelled.

use std::sync::Arc;

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::stream::SelectAll;
use shoal_proto::api;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::SessionLink;

/// Lines sent in one `PublishLogsMessage` at most.
const MAX_LINES_PER_MESSAGE: usize = 256;
/// Messages queued for the stream before reading pauses.
const QUEUED_MESSAGES: usize = 8;

/// One task whose output was asked for, with the container that holds it.
pub(super) struct LogTarget {
    pub(super) task_id: String,
    pub(super) service_id: String,
    pub(super) container_id: String,
}

/// Serves one subscription until its streams end, it is cancelled, or the dispatcher stops
/// listening.
pub(super) async fn publish<E: engine::Engine>(
    engine: Arc<E>,
    link: SessionLink,
    node_id: String,
    subscription: api::LogSubscription,
    targets: Vec<LogTarget>,
    cancelled: oneshot::Receiver<()>,
) {
    let SessionLink {
        session_id,
        mut client,
    } = link;
    let subscription_id = subscription.id.clone();
    let (sender, receiver) = mpsc::channel(QUEUED_MESSAGES);
    let call = client.publish_logs(ReceiverStream::new(receiver));
    tokio::pin!(call);
    let reading = read_logs(
        engine,
        session_id,
        node_id,
        subscription,
        targets,
        sender,
        cancelled,
    );
    tokio::select! {
        // The dispatcher answers early when the subscriber went away or the session ended.
        answer = &mut call => {
            if let Err(status) = answer {
                tracing::debug!(subscription = %subscription_id, %status, "publishing logs stopped");
            }
            return;
        }
        () = reading => {}
    }
    if let Err(status) = call.await {
        tracing::debug!(subscription = %subscription_id, %status, "publishing logs failed");
    }
}

async fn read_logs<E: engine::Engine>(
    engine: Arc<E>,
    session_id: String,
    node_id: String,
    subscription: api::LogSubscription,
    targets: Vec<LogTarget>,
    sender: mpsc::Sender<api::PublishLogsMessage>,
    mut cancelled: oneshot::Receiver<()>,
) {
    let tail = subscription
        .tail
        .map(|tail| usize::try_from(tail).unwrap_or(usize::MAX));
    let mut entries = SelectAll::new();
    for (index, target) in targets.iter().enumerate() {
        match engine
            .logs(&target.container_id, subscription.follow, tail)
            .await
        {
            Ok(receiver) => {
                entries.push(ReceiverStream::new(receiver).map(move |entry| (index, entry)));
            }
            Err(error) => {
                tracing::warn!(task = %target.task_id, %error, "reading the task's logs failed");
            }
        }
    }
    let message = |messages, close| api::PublishLogsMessage {
        session_id: session_id.clone(),
        subscription_id: subscription.id.clone(),
        messages,
        close,
    };
    loop {
        let first = tokio::select! {
            entry = entries.next() => entry,
            _ = &mut cancelled => break,
        };
        // Every stream ended (a following one only ends when its container stops).
        let Some(first) = first else { break };
        let mut lines = Vec::new();
        let mut add = |(index, entry): (usize, engine::Result<engine::LogEntry>)| match entry {
            Ok(entry) => lines.push(log_message(&targets[index], &node_id, entry)),
            Err(error) => {
                tracing::warn!(task = %targets[index].task_id, %error, "reading the task's logs failed");
            }
        };
        add(first);
        // Whatever else is ready right now goes in the same message.
        for _ in 1..MAX_LINES_PER_MESSAGE {
            match entries.next().now_or_never() {
                Some(Some(entry)) => add(entry),
                _ => break,
            }
        }
        if !lines.is_empty() && sender.send(message(lines, false)).await.is_err() {
            return;
        }
    }
    let _ = sender.send(message(Vec::new(), true)).await;
}

fn log_message(target: &LogTarget, node_id: &str, entry: engine::LogEntry) -> api::LogMessage {
    let stream = if entry.stream == "stderr" {
        api::log_message::Stream::Stderr
    } else {
        api::log_message::Stream::Stdout
    };
    api::LogMessage {
        service_id: target.service_id.clone(),
        task_id: target.task_id.clone(),
        node_id: node_id.to_owned(),
        timestamp: spec::time::parse_rfc3339(&entry.time).map(api::Timestamp::from),
        stream: stream as i32,
        data: entry.log.into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_entry_becomes_a_log_message_with_its_time() {
        let target = LogTarget {
            task_id: "t1".to_owned(),
            service_id: "s1".to_owned(),
            container_id: "c1".to_owned(),
        };
        let message = log_message(
            &target,
            "n1",
            engine::LogEntry {
                log: "hello\n".to_owned(),
                stream: "stderr".to_owned(),
                time: "2024-05-06T07:08:09.123456789Z".to_owned(),
            },
        );
        assert_eq!(message.task_id, "t1");
        assert_eq!(message.service_id, "s1");
        assert_eq!(message.node_id, "n1");
        assert_eq!(message.stream, api::log_message::Stream::Stderr as i32);
        assert_eq!(message.data, b"hello\n");
        assert_eq!(
            message.timestamp,
            Some(api::Timestamp {
                seconds: 1_714_979_289,
                nanos: 123_456_789,
            })
        );
    }
}
