//! The log broker: `service logs` on a manager becomes one subscription per node that runs the
//! selected tasks; each node's agent publishes its containers' output back through the
//! dispatcher, and the broker forwards it to the caller's stream.

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
    /// Nodes that have not closed their side yet.
    open_nodes: HashSet<String>,
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
        let mut open_nodes = HashSet::new();
        let mut unreachable = Vec::new();
        for target in targets {
            let request = LogSubscription {
                id: id.clone(),
                task_ids: target.task_ids,
                follow,
                tail,
                close: false,
            };
            match state.node_listeners.get(&target.node_id) {
                Some(listener) if listener.send(request).is_ok() => {
                    open_nodes.insert(target.node_id);
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
            for node in subscription.open_nodes {
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
    /// node can stop.
    pub(crate) async fn publish(&self, node_id: &str, message: PublishLogsMessage) -> bool {
        let Some(sender) = self
            .lock()
            .subscriptions
            .get(&message.subscription_id)
            .filter(|subscription| subscription.open_nodes.contains(node_id))
            .map(|subscription| subscription.sender.clone())
        else {
            return false;
        };
        for mut line in message.messages {
            line.node_id = node_id.to_owned();
            if sender.send(Ok(line)).await.is_err() {
                self.cancel(&message.subscription_id);
                return false;
            }
        }
        if message.close {
            self.node_done(&message.subscription_id, node_id);
        }
        true
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
