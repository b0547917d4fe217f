//! The log broker: `service logs` on a manager becomes one subscription, served by a leg on
//! each node that runs the selected tasks; each node's agent publishes its containers' output
//! back through the dispatcher, and the broker forwards it to the caller's stream. A leg's lines
//! are forwarded only for the tasks that leg asked of its node, so no node can put words in
//! another node's tasks. A subscription that follows services stays open with no leg at all,
//! and gains a leg for each task of theirs that starts later ([`LogBroker::extend`]), as
//! `docker service logs -f` shows a scaled-up or restarted service's new tasks.

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

/// How a subscription reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogReading {
    pub(crate) follow: bool,
    pub(crate) tail: Option<u64>,
    /// More legs may come ([`LogBroker::extend`]): the subscription stays open while it has
    /// none, until the caller goes away.
    pub(crate) open_ended: bool,
}

/// One node's part of a subscription, under its own id (the node publishes under it).
struct Leg {
    subscription: String,
    node_id: String,
    asked: HashSet<String>,
}

struct ActiveSubscription {
    sender: mpsc::Sender<Result<LogMessage, Status>>,
    reading: LogReading,
    /// Legs whose node has not closed its side yet.
    open_legs: HashSet<String>,
    next_leg: u64,
}

#[derive(Default)]
struct BrokerState {
    next_subscription: u64,
    /// Each connected node's channel of subscriptions to serve, boxed: a channel allocates
    /// room for 32 items when made, and every node holds one for its whole session.
    node_listeners: HashMap<String, mpsc::UnboundedSender<Box<LogSubscription>>>,
    subscriptions: HashMap<String, ActiveSubscription>,
    legs: HashMap<String, Leg>,
}

impl BrokerState {
    /// Asks each target's node for its tasks under a new leg of `id`; returns the nodes without
    /// a session.
    fn add_legs(&mut self, id: &str, targets: Vec<LogTarget>, tail: Option<u64>) -> Vec<String> {
        let mut unreachable = Vec::new();
        for target in targets {
            let Some(subscription) = self.subscriptions.get_mut(id) else {
                return unreachable;
            };
            subscription.next_leg += 1;
            let leg_id = format!("{id}.{}", subscription.next_leg);
            let request = LogSubscription {
                id: leg_id.clone(),
                task_ids: target.task_ids.clone(),
                follow: subscription.reading.follow,
                tail,
                close: false,
            };
            match self.node_listeners.get(&target.node_id) {
                Some(listener) if listener.send(Box::new(request)).is_ok() => {
                    subscription.open_legs.insert(leg_id.clone());
                    self.legs.insert(
                        leg_id,
                        Leg {
                            subscription: id.to_owned(),
                            node_id: target.node_id,
                            asked: target.task_ids.into_iter().collect(),
                        },
                    );
                }
                _ => unreachable.push(target.node_id),
            }
        }
        unreachable
    }
}

/// The caller's side of a subscription. Dropping it (the caller hung up) ends the
/// subscription on every node, even one that has nothing to send.
pub struct LogStream {
    receiver: mpsc::Receiver<Result<LogMessage, Status>>,
    subscription: Option<(LogBroker, String)>,
}

impl LogStream {
    /// The subscription's id, for [`LogBroker::extend`]; `None` when it ended at once.
    pub(crate) fn id(&self) -> Option<&str> {
        self.subscription.as_ref().map(|(_, id)| id.as_str())
    }
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
    /// has sent all it has (without `follow`, and unless `open_ended`), or when the caller goes
    /// away.
    pub(crate) fn subscribe(&self, targets: Vec<LogTarget>, reading: LogReading) -> LogStream {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut state = self.lock();
        state.next_subscription += 1;
        let id = format!("logs-{}", state.next_subscription);
        state.subscriptions.insert(
            id.clone(),
            ActiveSubscription {
                sender: sender.clone(),
                reading,
                open_legs: HashSet::new(),
                next_leg: 0,
            },
        );
        let unreachable = state.add_legs(&id, targets, reading.tail);
        if !unreachable.is_empty() {
            tracing::warn!(nodes = ?unreachable, "log request skips nodes without a session");
        }
        let no_legs = state
            .subscriptions
            .get(&id)
            .is_none_or(|subscription| subscription.open_legs.is_empty());
        if no_legs && !reading.open_ended {
            state.subscriptions.remove(&id);
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
        LogStream {
            receiver,
            subscription: Some((self.clone(), id)),
        }
    }

    /// Adds legs to open subscription `id` for tasks that started since it began: their whole
    /// output, followed. Returns false once the subscription is gone (the caller hung up).
    pub(crate) fn extend(&self, id: &str, targets: Vec<LogTarget>) -> bool {
        let mut state = self.lock();
        if !state.subscriptions.contains_key(id) {
            return false;
        }
        let unreachable = state.add_legs(id, targets, None);
        if !unreachable.is_empty() {
            tracing::debug!(nodes = ?unreachable, "followed logs skip new tasks on nodes without a session");
        }
        true
    }

    /// Resolves once the caller of subscription `id` has gone away (at once if it has).
    pub(crate) fn caller_gone(&self, id: &str) -> impl Future<Output = ()> + use<> {
        let sender = self
            .lock()
            .subscriptions
            .get(id)
            .map(|subscription| subscription.sender.clone());
        async move {
            if let Some(sender) = sender {
                sender.closed().await;
            }
        }
    }

    fn cancel(&self, id: &str) {
        let mut state = self.lock();
        if let Some(subscription) = state.subscriptions.remove(id) {
            for leg_id in subscription.open_legs {
                let Some(leg) = state.legs.remove(&leg_id) else {
                    continue;
                };
                if let Some(listener) = state.node_listeners.get(&leg.node_id) {
                    let _ = listener.send(Box::new(LogSubscription {
                        id: leg_id,
                        close: true,
                        ..Default::default()
                    }));
                }
            }
        }
    }

    /// A node's session asks for its subscriptions; a newer listener replaces an older one.
    pub(crate) fn listen(&self, node_id: &str) -> mpsc::UnboundedReceiver<Box<LogSubscription>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.lock()
            .node_listeners
            .insert(node_id.to_owned(), sender);
        receiver
    }

    /// Forwards what a node published for one leg. Returns false when the caller has gone away,
    /// so the node can stop. A message with a line of a task the leg did not ask of this node
    /// is refused whole, and nothing of it is forwarded.
    pub(crate) async fn publish(
        &self,
        node_id: &str,
        message: PublishLogsMessage,
    ) -> Result<bool, Status> {
        let sender = {
            let state = self.lock();
            let Some((leg, subscription)) = state
                .legs
                .get(&message.subscription_id)
                .filter(|leg| leg.node_id == node_id)
                .and_then(|leg| Some((leg, state.subscriptions.get(&leg.subscription)?)))
            else {
                return Ok(false);
            };
            if let Some(foreign) = message
                .messages
                .iter()
                .find(|line| !leg.asked.contains(&line.task_id))
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
                let subscription = self
                    .lock()
                    .legs
                    .get(&message.subscription_id)
                    .map(|leg| leg.subscription.clone());
                if let Some(subscription) = subscription {
                    self.cancel(&subscription);
                }
                return Ok(false);
            }
        }
        if message.close {
            self.node_done(&message.subscription_id, node_id);
        }
        Ok(true)
    }

    /// The node will send nothing more for this leg, as when its publisher stream broke off.
    pub(crate) fn node_done(&self, leg_id: &str, node_id: &str) {
        let mut state = self.lock();
        if state
            .legs
            .get(leg_id)
            .is_none_or(|leg| leg.node_id != node_id)
        {
            return;
        }
        let Some(leg) = state.legs.remove(leg_id) else {
            return;
        };
        let finished = state
            .subscriptions
            .get_mut(&leg.subscription)
            .is_some_and(|subscription| {
                subscription.open_legs.remove(leg_id);
                subscription.open_legs.is_empty() && !subscription.reading.open_ended
            });
        if finished {
            // Dropping the last sender ends the caller's stream.
            state.subscriptions.remove(&leg.subscription);
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
            LogReading {
                follow: false,
                tail: Some(10),
                open_ended: false,
            },
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
            LogReading {
                follow: false,
                tail: None,
                open_ended: false,
            },
        );
        let asked = node1.recv().await.unwrap();
        let asked2 = node2.recv().await.unwrap();
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
        // A node can't close another node's leg.
        broker.node_done(&asked.id, "n2");
        broker.node_done(&asked2.id, "n2");
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
            LogReading {
                follow: true,
                tail: None,
                open_ended: false,
            },
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
            LogReading {
                follow: false,
                tail: None,
                open_ended: false,
            },
        );
        let error = output.next().await.unwrap().unwrap_err();
        assert!(error.message().contains("shoal node ls"), "{error:?}");
        assert!(output.next().await.is_none());
    }

    #[tokio::test]
    async fn a_followed_service_stays_open_without_tasks_and_gains_legs_as_they_start() {
        let broker = LogBroker::default();
        let mut node = broker.listen("n1");
        let mut output = broker.subscribe(
            Vec::new(),
            LogReading {
                follow: true,
                tail: Some(5),
                open_ended: true,
            },
        );
        let id = output.id().unwrap().to_owned();
        assert!(broker.extend(
            &id,
            vec![LogTarget {
                node_id: "n1".into(),
                task_ids: vec!["t1".into()],
            }]
        ));
        let asked = node.recv().await.unwrap();
        assert_eq!(
            (asked.task_ids.as_slice(), asked.follow),
            (&["t1".to_owned()][..], true)
        );
        assert_eq!(asked.tail, None, "a new task's output is shown whole");
        let published = PublishLogsMessage {
            subscription_id: asked.id.clone(),
            messages: vec![line("t1", "started")],
            close: true,
            ..Default::default()
        };
        assert!(broker.publish("n1", published).await.unwrap());
        assert_eq!(output.next().await.unwrap().unwrap().data, b"started");
        // The task's leg closed, and the subscription waits for the next one.
        assert!(broker.extend(&id, Vec::new()));
        drop(output);
        assert!(!broker.extend(&id, Vec::new()), "gone with its caller");
        broker.caller_gone(&id).await;
    }
}
