//! The log broker: `service logs` on a manager becomes one subscription per node that runs the
//! selected tasks; each node's agent publishes its containers' output back through the
//! dispatcher, and the broker forwards it to the caller's stream. A node's lines are forwarded
//! only for the tasks that subscription asked of that node, so no node can put words in another
//! node's tasks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use shoal_proto::api::{LogMessage, LogSubscription, PublishLogsMessage};
use tokio::sync::mpsc;
use tonic::Status;

/// Output lines buffered per caller before publishers wait.
const SUBSCRIBER_BUFFER: usize = 1024;

/// The tasks to read on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogTarget {
    pub(crate) node_id: String,
    pub(crate) task_ids: Vec<String>,
}

struct ActiveSubscription {
    sender: mpsc::Sender<Result<LogMessage, Status>>,
    /// Nodes that have not closed their side yet, each with the tasks asked of it.
    open_nodes: HashMap<String, HashSet<String>>,
}

#[derive(Default)]
struct BrokerState {
    next_subscription: u64,
    /// Each connected node's channel of subscriptions to serve.
    node_listeners: HashMap<String, mpsc::UnboundedSender<LogSubscription>>,
    subscriptions: HashMap<String, ActiveSubscription>,
}

/// The caller's side of a subscription. Dropping it (the caller hung up) ends the
/// subscription on every node, even one that has nothing to send.
pub struct LogStream {
    receiver: mpsc::Receiver<Result<LogMessage, Status>>,
    subscription: Option<(LogBroker, String)>,
}

impl futures::Stream for LogStream {
    type Item = Result<LogMessage, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.receiver.poll_recv(context)
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        if let Some((broker, id)) = self.subscription.take() {
            broker.cancel(&id);
        }
    }
}

#[derive(Clone, Default)]
pub(crate) struct LogBroker {
    state: Arc<Mutex<BrokerState>>,
}

impl LogBroker {
    fn lock(&self) -> std::sync::MutexGuard<'_, BrokerState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks every node in `targets` for its tasks' output. The stream ends when every node
    /// has sent all it has (without `follow`), or when the caller goes away.
    pub(crate) fn subscribe(
        &self,
        targets: Vec<LogTarget>,
        follow: bool,
        tail: Option<u64>,
    ) -> LogStream {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut state = self.lock();
        state.next_subscription += 1;
        let id = format!("logs-{}", state.next_subscription);
        let mut open_nodes = HashMap::new();
        let mut unreachable = Vec::new();
        for target in targets {
            let asked: HashSet<String> = target.task_ids.iter().cloned().collect();
            let request = LogSubscription {
                id: id.clone(),
                task_ids: target.task_ids,
                follow,
                tail,
                close: false,
            };
            match state.node_listeners.get(&target.node_id) {
                Some(listener) if listener.send(request).is_ok() => {
                    open_nodes.insert(target.node_id, asked);
                }
                _ => unreachable.push(target.node_id),
            }
        }
        if !unreachable.is_empty() {
            tracing::warn!(nodes = ?unreachable, "log request skips nodes without a session");
        }
        if open_nodes.is_empty() {
            if !unreachable.is_empty() {
                let _ = sender.try_send(Err(Status::unavailable(format!(
                    "no node holding these tasks is connected ({}): check 'shoal node ls'",
                    unreachable.join(", ")
                ))));
            }
            return LogStream {
                receiver,
                subscription: None,
            };
        }
        state
            .subscriptions
            .insert(id.clone(), ActiveSubscription { sender, open_nodes });
        LogStream {
            receiver,
            subscription: Some((self.clone(), id)),
        }
    }

    fn cancel(&self, id: &str) {
        let mut state = self.lock();
        if let Some(subscription) = state.subscriptions.remove(id) {
            for node in subscription.open_nodes.into_keys() {
                if let Some(listener) = state.node_listeners.get(&node) {
                    let _ = listener.send(LogSubscription {
                        id: id.to_owned(),
                        close: true,
                        ..Default::default()
                    });
                }
            }
        }
    }

    /// A node's session asks for its subscriptions; a newer listener replaces an older one.
    pub(crate) fn listen(&self, node_id: &str) -> mpsc::UnboundedReceiver<LogSubscription> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.lock()
            .node_listeners
            .insert(node_id.to_owned(), sender);
        receiver
    }

    /// Forwards what a node published. Returns false when the caller has gone away, so the
    /// node can stop. A message with a line of a task the subscription did not ask of this node
    /// is refused whole, and nothing of it is forwarded.
    pub(crate) async fn publish(
        &self,
        node_id: &str,
        message: PublishLogsMessage,
    ) -> Result<bool, Status> {
        let sender = {
            let state = self.lock();
            let Some((subscription, asked)) = state
                .subscriptions
                .get(&message.subscription_id)
                .and_then(|subscription| {
                    Some((subscription, subscription.open_nodes.get(node_id)?))
                })
            else {
                return Ok(false);
            };
            if let Some(foreign) = message
                .messages
                .iter()
                .find(|line| !asked.contains(&line.task_id))
            {
                return Err(Status::permission_denied(format!(
                    "log subscription {} did not ask node {node_id} for task {:?}: a node publishes output only of the tasks it was asked for",
                    message.subscription_id, foreign.task_id
                )));
            }
            subscription.sender.clone()
        };
        for mut line in message.messages {
            line.node_id = node_id.to_owned();
            if sender.send(Ok(line)).await.is_err() {
                self.cancel(&message.subscription_id);
                return Ok(false);
            }
        }
        if message.close {
            self.node_done(&message.subscription_id, node_id);
        }
        Ok(true)
    }

    /// The node will send nothing more for this subscription, as when its publisher stream
    /// broke off.
    pub(crate) fn node_done(&self, subscription_id: &str, node_id: &str) {
        let mut state = self.lock();
        let finished = state
            .subscriptions
            .get_mut(subscription_id)
            .is_some_and(|subscription| {
                subscription.open_nodes.remove(node_id);
                subscription.open_nodes.is_empty()
            });
        if finished {
            // Dropping the last sender ends the caller's stream.
            state.subscriptions.remove(subscription_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    fn line(task: &str, data: &str) -> LogMessage {
        LogMessage {
            task_id: task.to_owned(),
            data: data.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn output_from_every_node_reaches_the_caller_and_the_stream_ends() {
        let broker = LogBroker::default();
        let mut node1 = broker.listen("n1");
        let mut node2 = broker.listen("n2");
        let mut output = broker.subscribe(
            vec![
                LogTarget {
                    node_id: "n1".into(),
                    task_ids: vec!["t1".into()],
                },
                LogTarget {
                    node_id: "n2".into(),
                    task_ids: vec!["t2".into()],
                },
            ],
            false,
            Some(10),
        );
        let asked1 = node1.recv().await.unwrap();
        let asked2 = node2.recv().await.unwrap();
        assert_eq!(asked1.task_ids, ["t1"]);
        assert_eq!(asked2.tail, Some(10));
        for (node, asked, task) in [("n1", &asked1, "t1"), ("n2", &asked2, "t2")] {
            assert!(
                broker
                    .publish(
                        node,
                        PublishLogsMessage {
                            subscription_id: asked.id.clone(),
                            messages: vec![line(task, "hello")],
                            close: true,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap()
            );
        }
        let mut received = Vec::new();
        while let Some(message) = output.next().await {
            let message = message.unwrap();
            received.push((message.node_id, message.task_id));
        }
        received.sort();
        assert_eq!(
            received,
            [("n1".into(), "t1".into()), ("n2".into(), "t2".into())]
        );
    }

    #[tokio::test]
    async fn a_node_cannot_attribute_lines_to_tasks_it_was_not_asked_for() {
        let broker = LogBroker::default();
        let mut node1 = broker.listen("n1");
        let mut node2 = broker.listen("n2");
        let mut output = broker.subscribe(
            vec![
                LogTarget {
                    node_id: "n1".into(),
                    task_ids: vec!["t1".into()],
                },
                LogTarget {
                    node_id: "n2".into(),
                    task_ids: vec!["t2".into()],
                },
            ],
            false,
            None,
        );
        let asked = node1.recv().await.unwrap();
        let _ = node2.recv().await.unwrap();
        // n1 claims a line of n2's task, and of a task nobody asked for.
        let refusal = broker
            .publish(
                "n1",
                PublishLogsMessage {
                    subscription_id: asked.id.clone(),
                    messages: vec![line("t2", "forged"), line("t9", "forged")],
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(refusal.code(), tonic::Code::PermissionDenied);
        let _ = broker
            .publish(
                "n1",
                PublishLogsMessage {
                    subscription_id: asked.id.clone(),
                    messages: vec![line("t1", "genuine")],
                    close: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        broker.node_done(&asked.id, "n2");
        let mut received = Vec::new();
        while let Some(message) = output.next().await {
            if let Ok(message) = message {
                received.push((message.task_id, message.data));
            }
        }
        assert_eq!(received, [("t1".to_owned(), b"genuine".to_vec())]);
    }

    #[tokio::test]
    async fn a_caller_hanging_up_closes_the_subscription_on_its_nodes() {
        let broker = LogBroker::default();
        let mut node = broker.listen("n1");
        let output = broker.subscribe(
            vec![LogTarget {
                node_id: "n1".into(),
                task_ids: vec!["t1".into()],
            }],
            true,
            None,
        );
        let asked = node.recv().await.unwrap();
        drop(output);
        let closed = node.recv().await.unwrap();
        assert!(closed.close);
        assert_eq!(closed.id, asked.id);
    }

    #[tokio::test]
    async fn tasks_on_disconnected_nodes_give_an_error_that_says_where_to_look() {
        let broker = LogBroker::default();
        let mut output = broker.subscribe(
            vec![LogTarget {
                node_id: "gone".into(),
                task_ids: vec!["t1".into()],
            }],
            false,
            None,
        );
        let error = output.next().await.unwrap().unwrap_err();
        assert!(error.message().contains("shoal node ls"), "{error:?}");
        assert!(output.next().await.is_none());
    }
}
