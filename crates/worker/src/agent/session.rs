//! The agent's side of the Dispatcher: opens a session, heartbeats, forwards assignment sets
//! (once all their parts have come) and log subscriptions to the reconciler loop, and
//! reconnects with backoff whenever any of that fails. Status reports go through their own
//! task, one call at a time and in order.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use shoal_proto::api;
use shoal_proto::api::dispatcher_client::DispatcherClient;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use super::{AgentConfig, DispatcherConnector, Input, SessionLink, stopped};
use crate::assignment_parts::AssignmentParts;
use crate::reconciler::{CommandOutcome, Event};

/// First pause before reconnecting; doubled after each failed attempt.
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// The pause before following a redirect to the leader: short, but no busy loop while the
/// named leader is itself about to step down.
const REDIRECT_DELAY: Duration = Duration::from_millis(20);
/// Longest the connector and the session call may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Used when the dispatcher names no heartbeat period (Swarm's default).
const DEFAULT_HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);
/// Guards against a period of zero turning heartbeats into a busy loop.
const MIN_HEARTBEAT_PERIOD: Duration = Duration::from_millis(50);
/// Longest a status report may take; a report that times out is retried on a later tick.
const REPORT_TIMEOUT: Duration = Duration::from_secs(15);

/// Who this node is, as sent when a session opens.
pub(super) struct NodeIdentity {
    node_id: String,
    description: api::NodeDescription,
}

impl NodeIdentity {
    pub(super) fn of(config: &AgentConfig) -> NodeIdentity {
        NodeIdentity {
            node_id: config.node_id.clone(),
            description: node_description(config),
        }
    }
}

/// Hostname, platform, resources and engine version, as Swarm's node description has them.
fn node_description(config: &AgentConfig) -> api::NodeDescription {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let memory_bytes = match std::fs::read_to_string("/proc/meminfo") {
        Ok(meminfo) => total_memory_bytes(&meminfo).unwrap_or_else(|| {
            tracing::warn!("/proc/meminfo has no MemTotal line; reporting no memory");
            0
        }),
        Err(error) => {
            tracing::warn!(%error, "reading /proc/meminfo failed; reporting no memory");
            0
        }
    };
    api::NodeDescription {
        hostname: config.hostname.clone(),
        platform: Some(api::Platform {
            architecture: node_architecture().to_owned(),
            os: NODE_OS.to_owned(),
        }),
        resources: Some(api::Resources {
            nano_cpus: i64::try_from(cpus).unwrap_or(i64::MAX / 1_000_000_000) * 1_000_000_000,
            memory_bytes,
            ..api::Resources::default()
        }),
        engine: Some(api::EngineDescription {
            engine_version: config.engine_version.clone(),
            ..api::EngineDescription::default()
        }),
        ..api::NodeDescription::default()
    }
}

/// The OS a node reports, and `{{.Node.Platform.OS}}` stands for.
pub(crate) const NODE_OS: &str = "linux";

/// This node's architecture as its description reports it, and `{{.Node.Platform.Architecture}}`
/// stands for.
pub(crate) fn node_architecture() -> &'static str {
    docker_architecture(std::env::consts::ARCH)
}

/// The architecture as Docker reports it for a node (the kernel's `uname -m` name), from
/// Rust's name for the target.
fn docker_architecture(rust_architecture: &'static str) -> &'static str {
    match rust_architecture {
        "x86" => "i686",
        "arm" => "armv7l",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => other,
    }
}

/// `MemTotal` from the text of `/proc/meminfo`, in bytes.
fn total_memory_bytes(meminfo: &str) -> Option<i64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?;
    let kibibytes: i64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kibibytes.checked_mul(1024)
}

/// Doubles the pause after each failed attempt, up to a cap.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: FIRST_RECONNECT_DELAY,
        }
    }

    fn reset(&mut self) {
        self.next = FIRST_RECONNECT_DELAY;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_RECONNECT_DELAY);
        delay
    }
}

/// How a session attempt ended.
struct SessionEnded {
    /// The dispatcher accepted the session before it ended; the backoff starts afresh.
    established: bool,
    /// A manager that does not lead named the leader: try again at once, without backoff.
    redirected: bool,
    reason: String,
}

impl SessionEnded {
    fn before_start(reason: impl Into<String>) -> SessionEnded {
        SessionEnded {
            established: false,
            redirected: false,
            reason: reason.into(),
        }
    }

    fn after_start(reason: impl Into<String>) -> SessionEnded {
        SessionEnded {
            established: true,
            redirected: false,
            reason: reason.into(),
        }
    }
}

/// Keeps a session with the managers open until `stop`, publishing the current one in
/// `session` (`None` between sessions).
pub(super) async fn run_sessions<C: DispatcherConnector>(
    identity: NodeIdentity,
    connector: C,
    session: watch::Sender<Option<SessionLink>>,
    inputs: mpsc::UnboundedSender<Input>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    loop {
        let ended = tokio::select! {
            ended = run_session(&identity, &connector, &session, &inputs) => ended,
            () = stopped(&mut stop) => return,
        };
        session.send_replace(None);
        if ended.redirected {
            tracing::info!(reason = %ended.reason, "redirected to the leader");
            tokio::select! {
                () = tokio::time::sleep(REDIRECT_DELAY) => {}
                () = stopped(&mut stop) => return,
            }
            continue;
        }
        if ended.established {
            backoff.reset();
            tracing::warn!(reason = %ended.reason, "the session with the managers ended; reconnecting");
        } else {
            tracing::warn!(reason = %ended.reason, "could not open a session with the managers; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// One session attempt: opens it, publishes it in `session` and serves it until it ends.
async fn run_session<C: DispatcherConnector>(
    identity: &NodeIdentity,
    connector: &C,
    session: &watch::Sender<Option<SessionLink>>,
    inputs: &mpsc::UnboundedSender<Input>,
) -> SessionEnded {
    let opened = match open_session(identity, connector).await {
        Ok(opened) => opened,
        Err(ended) => return ended,
    };
    connector.observe_session(&opened.first);
    let session_id = opened.first.session_id.clone();
    let heartbeat_period = heartbeat_period(opened.first.heartbeat_period.as_ref());
    tracing::info!(session = %session_id, ?heartbeat_period, "session with the managers open");
    let mut client = opened.client;
    let streams = match open_streams(&mut client, &session_id).await {
        Ok(streams) => streams,
        Err(ended) => return ended,
    };
    session.send_replace(Some(SessionLink {
        session_id: session_id.clone(),
        client: client.clone(),
    }));
    serve_session(
        connector,
        inputs,
        OpenSession {
            client,
            session_id,
            heartbeat_period,
            session_stream: opened.stream,
            streams,
        },
    )
    .await
}

/// A session the dispatcher accepted, with its first message.
struct OpenedSession {
    client: DispatcherClient<Channel>,
    stream: tonic::Streaming<api::SessionMessage>,
    first: api::SessionMessage,
}

/// Connects and opens a session; a refusal that names the leader sends the connector there.
async fn open_session<C: DispatcherConnector>(
    identity: &NodeIdentity,
    connector: &C,
) -> Result<OpenedSession, SessionEnded> {
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(error)) => return Err(SessionEnded::before_start(format!("connecting: {error}"))),
        Err(_) => {
            return Err(SessionEnded::before_start(format!(
                "connecting took longer than {CONNECT_TIMEOUT:?}"
            )));
        }
    };
    let mut client = DispatcherClient::new(channel);
    let request = api::SessionRequest {
        node_id: identity.node_id.clone(),
        description: Some(identity.description.clone()),
    };
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut stream = client.session(request).await?.into_inner();
        let first = stream.message().await?;
        Ok::<_, tonic::Status>((stream, first))
    })
    .await;
    match opened {
        Ok(Ok((stream, Some(first)))) => Ok(OpenedSession {
            client,
            stream,
            first,
        }),
        Ok(Ok((_, None))) => Err(SessionEnded::before_start(
            "the dispatcher closed the session at once",
        )),
        Ok(Err(status)) => {
            let leader = status
                .metadata()
                .get(shoal_proto::metadata::LEADER_ADDR)
                .and_then(|value| value.to_str().ok());
            if let Some(leader) = leader {
                connector.redirect(leader);
                return Err(SessionEnded {
                    redirected: true,
                    ..SessionEnded::before_start(describe(&status))
                });
            }
            Err(SessionEnded::before_start(describe(&status)))
        }
        Err(_) => Err(SessionEnded::before_start(format!(
            "opening the session took longer than {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// The session's assignment stream and, when the dispatcher serves them, its log
/// subscriptions.
struct SessionStreams {
    assignments: tonic::Streaming<api::AssignmentsMessage>,
    log_subscriptions: Option<tonic::Streaming<api::LogSubscription>>,
}

async fn open_streams(
    client: &mut DispatcherClient<Channel>,
    session_id: &str,
) -> Result<SessionStreams, SessionEnded> {
    let assignments = match client
        .assignments(api::AssignmentsRequest {
            session_id: session_id.to_owned(),
        })
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Err(SessionEnded::after_start(format!(
                "opening the assignment stream: {}",
                describe(&status)
            )));
        }
    };
    let log_subscriptions = match client
        .log_subscriptions(api::LogSubscriptionsRequest {
            session_id: session_id.to_owned(),
        })
        .await
    {
        Ok(response) => Some(response.into_inner()),
        // A dispatcher without log support still runs tasks; only `service logs` goes dark.
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            tracing::warn!("the dispatcher serves no log subscriptions; logs are not published");
            None
        }
        Err(status) => {
            return Err(SessionEnded::after_start(format!(
                "opening the log subscription stream: {}",
                describe(&status)
            )));
        }
    };
    Ok(SessionStreams {
        assignments,
        log_subscriptions,
    })
}

/// An open session and its streams, as [`serve_session`] runs it.
struct OpenSession {
    client: DispatcherClient<Channel>,
    session_id: String,
    heartbeat_period: Duration,
    session_stream: tonic::Streaming<api::SessionMessage>,
    streams: SessionStreams,
}

/// Forwards session messages, whole assignment sets and log subscriptions, and heartbeats,
/// until any of them fails or the connector wants a new connection.
async fn serve_session<C: DispatcherConnector>(
    connector: &C,
    inputs: &mpsc::UnboundedSender<Input>,
    open: OpenSession,
) -> SessionEnded {
    let OpenSession {
        mut client,
        session_id,
        mut heartbeat_period,
        mut session_stream,
        streams:
            SessionStreams {
                mut assignments,
                mut log_subscriptions,
            },
    } = open;
    let heartbeat = tokio::time::sleep(heartbeat_period);
    tokio::pin!(heartbeat);
    let mut sets = WholeSets::default();
    loop {
        tokio::select! {
            message = session_stream.next() => match message {
                // Later messages carry node and manager list changes, for the daemon to act on.
                Some(Ok(message)) => connector.observe_session(&message),
                Some(Err(status)) => return SessionEnded::after_start(describe(&status)),
                None => return SessionEnded::after_start("the dispatcher ended the session"),
            },
            message = assignments.next() => match message {
                Some(Ok(part)) => match sets.push(part) {
                    Ok(Some(message)) => {
                        let _ = inputs.send(Input::Assignments(message));
                    }
                    Ok(None) => {}
                    Err(ended) => return ended,
                },
                Some(Err(status)) => {
                    return SessionEnded::after_start(format!("assignment stream: {}", describe(&status)));
                }
                None => return SessionEnded::after_start("the dispatcher ended the assignment stream"),
            },
            message = next_subscription(&mut log_subscriptions) => match message {
                Some(Ok(subscription)) => {
                    let _ = inputs.send(Input::LogSubscription(subscription));
                }
                Some(Err(status)) => {
                    return SessionEnded::after_start(format!("log subscription stream: {}", describe(&status)));
                }
                None => {
                    return SessionEnded::after_start("the dispatcher ended the log subscription stream");
                }
            },
            () = connector.reconnect_requested() => {
                return SessionEnded {
                    redirected: true,
                    ..SessionEnded::after_start("reconnecting with the node's new certificate")
                };
            }
            () = &mut heartbeat => {
                match send_heartbeat(&mut client, &session_id, heartbeat_period).await {
                    Ok(Some(period)) => heartbeat_period = period,
                    Ok(None) => {}
                    Err(ended) => return ended,
                }
                heartbeat.as_mut().reset(tokio::time::Instant::now() + heartbeat_period);
            }
        }
    }
}

/// Assembles assignment sets from their parts and lets through only whole sets newer than the
/// last one.
#[derive(Default)]
struct WholeSets {
    parts: AssignmentParts,
    /// The dispatcher's own numbering is only trusted to increase within this session; the
    /// reconciler loop gives each set the version the reconciler needs.
    last_dispatcher_version: u64,
}

impl WholeSets {
    /// The set `part` completes, if it completes one that is newer than the last.
    fn push(
        &mut self,
        part: api::AssignmentsMessage,
    ) -> Result<Option<api::AssignmentsMessage>, SessionEnded> {
        // Only a whole set goes on: a half one would look like tasks removed.
        let message = match self.parts.push(part) {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(None),
            Err(error) => {
                return Err(SessionEnded::after_start(format!(
                    "assignment stream: {error}"
                )));
            }
        };
        if message.version != 0 && message.version <= self.last_dispatcher_version {
            tracing::warn!(
                version = message.version,
                last = self.last_dispatcher_version,
                "dropping an assignment set that is not newer than the last one"
            );
            return Ok(None);
        }
        self.last_dispatcher_version = message.version;
        Ok(Some(message))
    }
}

/// Sends one heartbeat; answers the period the dispatcher asks for from now on, if it names one.
async fn send_heartbeat(
    client: &mut DispatcherClient<Channel>,
    session_id: &str,
    period: Duration,
) -> Result<Option<Duration>, SessionEnded> {
    let beat = client.heartbeat(api::HeartbeatRequest {
        session_id: session_id.to_owned(),
    });
    match tokio::time::timeout(period.max(Duration::from_secs(1)), beat).await {
        Ok(Ok(response)) => Ok(response
            .into_inner()
            .period
            .as_ref()
            .map(|period| heartbeat_period(Some(period)))),
        Ok(Err(status)) => Err(SessionEnded::after_start(format!(
            "heartbeat: {}",
            describe(&status)
        ))),
        Err(_) => Err(SessionEnded::after_start("a heartbeat went unanswered")),
    }
}

/// The next log subscription; never resolves when the dispatcher serves none.
async fn next_subscription(
    stream: &mut Option<tonic::Streaming<api::LogSubscription>>,
) -> Option<Result<api::LogSubscription, tonic::Status>> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

fn heartbeat_period(period: Option<&api::Duration>) -> Duration {
    period
        .and_then(|period| Duration::try_from(*period).ok())
        .filter(|period| !period.is_zero())
        .map_or(DEFAULT_HEARTBEAT_PERIOD, |period| {
            period.max(MIN_HEARTBEAT_PERIOD)
        })
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// One `ReportStatuses` command on its way to the dispatcher.
pub(super) struct QueuedReport {
    pub(super) batch_id: u64,
    pub(super) statuses: BTreeMap<String, api::TaskStatus>,
}

/// Sends status reports one call at a time, so that they reach the dispatcher in the order the
/// reconciler made them. Reports that queued while a call was in flight go in the next call
/// together; each batch still gets its own answer.
pub(super) async fn send_reports(
    mut queue: mpsc::UnboundedReceiver<QueuedReport>,
    session: watch::Receiver<Option<SessionLink>>,
    results: mpsc::UnboundedSender<Input>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = queue.try_recv() {
            batch.push(more);
        }
        let mut statuses = BTreeMap::new();
        let mut batch_ids = Vec::with_capacity(batch.len());
        // Later batches carry newer statuses; `append` lets them overwrite earlier ones.
        for mut report in batch {
            statuses.append(&mut report.statuses);
            batch_ids.push(report.batch_id);
        }
        let link = session.borrow().clone();
        let result = match link {
            None => Err("no session with a manager is open; the report is retried".to_owned()),
            Some(link) => send_report(link, statuses).await,
        };
        if let Err(error) = &result {
            tracing::debug!(%error, "a status report failed; retried on the next tick");
        }
        for batch_id in batch_ids {
            let _ = results.send(Input::Event(Event::CommandFinished(
                CommandOutcome::ReportFinished {
                    batch_id,
                    result: result.clone(),
                },
            )));
        }
    }
}

async fn send_report(
    mut link: SessionLink,
    statuses: BTreeMap<String, api::TaskStatus>,
) -> Result<(), String> {
    let request = api::UpdateTaskStatusRequest {
        session_id: link.session_id,
        updates: statuses
            .into_iter()
            .map(|(task_id, status)| api::TaskStatusUpdate {
                task_id,
                status: Some(status),
            })
            .collect(),
    };
    match tokio::time::timeout(REPORT_TIMEOUT, link.client.update_task_status(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("reporting task status: {}", describe(&status))),
        Err(_) => Err(format!(
            "reporting task status took longer than {REPORT_TIMEOUT:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_comes_from_mem_total_in_bytes() {
        let meminfo = "MemTotal:       16314208 kB\nMemFree:         1234 kB\n";
        assert_eq!(total_memory_bytes(meminfo), Some(16_314_208 * 1024));
        assert_eq!(total_memory_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(total_memory_bytes("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn architectures_are_named_as_docker_names_them() {
        assert_eq!(docker_architecture("x86_64"), "x86_64");
        assert_eq!(docker_architecture("aarch64"), "aarch64");
        assert_eq!(docker_architecture("arm"), "armv7l");
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..7).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 2000, 2000].map(Duration::from_millis)
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn a_missing_or_zero_heartbeat_period_falls_back_to_the_default() {
        assert_eq!(heartbeat_period(None), DEFAULT_HEARTBEAT_PERIOD);
        let zero = api::Duration::default();
        assert_eq!(heartbeat_period(Some(&zero)), DEFAULT_HEARTBEAT_PERIOD);
        let tiny = api::Duration {
            seconds: 0,
            nanos: 1,
        };
        assert_eq!(heartbeat_period(Some(&tiny)), MIN_HEARTBEAT_PERIOD);
    }
}
