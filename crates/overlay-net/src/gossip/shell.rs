//! The gossip agent: runs a [`GossipCore`] on a tokio UDP socket and a TCP listener sharing one
//! port (7946 by default), with its timers, and hands out the table as a watch.
//!
//! Thin by design: every decision is the core's; this file moves bytes and time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::GossipError;
use super::core::{GossipConfig, GossipCore, GossipStats, MemberId, Output};
use super::seal::{Keyring, SALT_LEN};
use super::table::{EndpointKey, EndpointRecord, NodeName, VisibleEndpoint};

/// The live endpoints a node knows, as one immutable snapshot.
pub type TableView = Arc<BTreeMap<EndpointKey, VisibleEndpoint>>;

/// How to start a [`GossipAgent`].
#[derive(Clone, Debug)]
pub struct GossipAgentConfig {
    /// This node's cluster id.
    pub name: NodeName,
    /// Where to listen, UDP and TCP (port 7946 in production).
    pub bind: SocketAddr,
    /// The address peers reach this node at; the bound address when `None`.
    pub advertise: Option<SocketAddr>,
    /// Gossip addresses of nodes already in the cluster.
    pub seeds: Vec<SocketAddr>,
    /// The keys to seal and open with.
    pub keyring: Keyring,
    /// Timings and sizes.
    pub config: GossipConfig,
    /// Grows across restarts of this node (a time in milliseconds does), so peers prefer the
    /// new incarnation over what they remember of the old.
    pub generation: u64,
}

/// The largest push-pull frame accepted: a whole table of many thousands of endpoints fits.
const MAX_STREAM_FRAME: usize = 32 << 20;
/// How long one push-pull exchange may take (memberlist's TCP timeout).
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the core's periodic work is checked.
const TICK: Duration = Duration::from_millis(20);
/// Datagrams read in one go when several are waiting.
const RECV_BATCH: usize = 256;
/// The least time between two table snapshots: copying a large table on every datagram of a
/// burst would cost more than the burst.
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(10);

enum Command {
    JoinNetwork(String),
    LeaveNetwork(String),
    Publish {
        network: String,
        endpoint: String,
        // Boxed: a record is several times larger than any other command.
        record: Box<EndpointRecord>,
        reply: oneshot::Sender<Result<(), GossipError>>,
    },
    Withdraw {
        network: String,
        endpoint: String,
    },
    SetKeyring(Keyring),
    Leave(oneshot::Sender<()>),
}

enum Event {
    Timer(foca::Timer<MemberId>),
    PushPullReply(Vec<u8>),
    PushPullRequest {
        frame: Vec<u8>,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
}

/// A running gossip node. Dropping it stops the node without a goodbye (peers detect it as
/// failed); [`GossipAgent::leave`] says goodbye first.
pub struct GossipAgent {
    commands: mpsc::UnboundedSender<Command>,
    table: watch::Receiver<TableView>,
    stats: watch::Receiver<GossipStats>,
    members: watch::Receiver<BTreeSet<NodeName>>,
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for GossipAgent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl GossipAgent {
    /// Binds the port, asks the seeds to let this node in, and starts gossiping.
    pub async fn start(config: GossipAgentConfig) -> Result<Self, GossipError> {
        let (udp, tcp) = bind_pair(config.bind).await?;
        let local_addr = udp.local_addr().map_err(|source| GossipError::Bind {
            addr: config.bind,
            source,
        })?;
        let advertise = config.advertise.unwrap_or(local_addr);
        if advertise.ip().is_unspecified() {
            return Err(GossipError::UnspecifiedAdvertise(advertise));
        }
        let random = SystemRandom::new();
        let mut salt = [0u8; SALT_LEN];
        let mut seed = [0u8; 8];
        // The system generator fails only when the OS has no randomness to give; a node without
        // it cannot make unique nonces, so it stops here.
        random
            .fill(&mut salt)
            .and_then(|()| random.fill(&mut seed))
            .map_err(|_| GossipError::Bind {
                addr: config.bind,
                source: std::io::Error::other("the system random generator failed"),
            })?;
        let me = MemberId {
            name: config.name.clone(),
            addr: advertise,
            generation: config.generation,
        };
        let mut core = GossipCore::new(
            me,
            config.config.clone(),
            config.keyring.clone(),
            salt,
            u64::from_le_bytes(seed),
        );
        core.join(&config.seeds);

        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (table_tx, table) = watch::channel(TableView::default());
        let (stats_tx, stats) = watch::channel(GossipStats::default());
        let (members_tx, members) = watch::channel(BTreeSet::new());
        let accept = tokio::spawn(accept_loop(tcp, event_tx.clone()));
        let run = tokio::spawn(
            Runner {
                core,
                udp: Arc::new(udp),
                events: event_tx,
                table: table_tx,
                stats: stats_tx,
                members: members_tx,
                table_dirty: false,
                last_snapshot: None,
            }
            .run(command_rx, event_rx),
        );
        Ok(Self {
            commands,
            table,
            stats,
            members,
            local_addr,
            tasks: vec![run, accept],
        })
    }

    /// The address the UDP socket and TCP listener are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The live endpoints, updated whenever they change.
    pub fn watch_table(&self) -> watch::Receiver<TableView> {
        self.table.clone()
    }

    /// The peers membership holds alive.
    pub fn watch_members(&self) -> watch::Receiver<BTreeSet<NodeName>> {
        self.members.clone()
    }

    /// What was received and refused so far.
    pub fn stats(&self) -> GossipStats {
        *self.stats.borrow()
    }

    fn send(&self, command: Command) -> Result<(), GossipError> {
        self.commands
            .send(command)
            .map_err(|_| GossipError::Stopped)
    }

    /// Joins a network's gossip (the node has a task on it).
    pub fn join_network(&self, network: &str) -> Result<(), GossipError> {
        self.send(Command::JoinNetwork(network.to_owned()))
    }

    /// Leaves a network's gossip (the node's last task on it is gone).
    pub fn leave_network(&self, network: &str) -> Result<(), GossipError> {
        self.send(Command::LeaveNetwork(network.to_owned()))
    }

    /// Publishes (or updates) one of this node's endpoints.
    pub async fn publish(
        &self,
        network: &str,
        endpoint: &str,
        record: EndpointRecord,
    ) -> Result<(), GossipError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Publish {
            network: network.to_owned(),
            endpoint: endpoint.to_owned(),
            record: Box::new(record),
            reply,
        })?;
        answer.await.map_err(|_| GossipError::Stopped)?
    }

    /// Withdraws one of this node's endpoints.
    pub fn withdraw(&self, network: &str, endpoint: &str) -> Result<(), GossipError> {
        self.send(Command::Withdraw {
            network: network.to_owned(),
            endpoint: endpoint.to_owned(),
        })
    }

    /// Replaces the keyring.
    pub fn set_keyring(&self, keyring: Keyring) -> Result<(), GossipError> {
        self.send(Command::SetKeyring(keyring))
    }

    /// Leaves the cluster gracefully, then stops.
    pub async fn leave(self) -> Result<(), GossipError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Leave(reply))?;
        answer.await.map_err(|_| GossipError::Stopped)
    }
}

/// Binds UDP and TCP on one port; with port 0, retries until both get the same free port.
async fn bind_pair(bind: SocketAddr) -> Result<(UdpSocket, TcpListener), GossipError> {
    let mut last_error = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(bind)
            .await
            .map_err(|source| GossipError::Bind { addr: bind, source })?;
        let addr = udp
            .local_addr()
            .map_err(|source| GossipError::Bind { addr: bind, source })?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) if bind.port() == 0 => last_error = Some(source),
            Err(source) => return Err(GossipError::Bind { addr, source }),
        }
    }
    Err(GossipError::Bind {
        addr: bind,
        source: last_error.unwrap_or_else(|| std::io::Error::other("no free port")),
    })
}

async fn accept_loop(tcp: TcpListener, events: mpsc::UnboundedSender<Event>) {
    loop {
        let Ok((stream, _)) = tcp.accept().await else {
            // Out of descriptors or similar: waits rather than spinning on the error.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(STREAM_TIMEOUT, answer_push_pull(stream, events)).await;
        });
    }
}

async fn answer_push_pull(
    mut stream: TcpStream,
    events: mpsc::UnboundedSender<Event>,
) -> std::io::Result<()> {
    let frame = read_frame(&mut stream).await?;
    let (reply, answer) = oneshot::channel();
    if events
        .send(Event::PushPullRequest { frame, reply })
        .is_err()
    {
        return Ok(());
    }
    if let Ok(Some(reply)) = answer.await {
        write_frame(&mut stream, &reply).await?;
    }
    Ok(())
}

async fn push_pull(to: SocketAddr, frame: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(to).await?;
    write_frame(&mut stream, &frame).await?;
    read_frame(&mut stream).await
}

async fn push(to: SocketAddr, frame: Vec<u8>) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(to).await?;
    write_frame(&mut stream, &frame).await?;
    stream.shutdown().await
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let length = stream.read_u32().await? as usize;
    if length > MAX_STREAM_FRAME {
        return Err(std::io::Error::other("push-pull frame over the size limit"));
    }
    let mut frame = vec![0; length];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

async fn write_frame(stream: &mut TcpStream, frame: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(frame.len())
        .ok()
        .filter(|length| *length as usize <= MAX_STREAM_FRAME)
        .ok_or_else(|| std::io::Error::other("push-pull frame over the size limit"))?;
    stream.write_u32(length).await?;
    stream.write_all(frame).await?;
    stream.flush().await
}

struct Runner {
    core: GossipCore,
    udp: Arc<UdpSocket>,
    events: mpsc::UnboundedSender<Event>,
    table: watch::Sender<TableView>,
    stats: watch::Sender<GossipStats>,
    members: watch::Sender<BTreeSet<NodeName>>,
    table_dirty: bool,
    last_snapshot: Option<Instant>,
}

impl Runner {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut buffer = vec![0u8; 65_536];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = self.udp.recv_from(&mut buffer) => {
                    if let Ok((length, _)) = received {
                        let now = Instant::now();
                        self.core.handle_datagram(now, &buffer[..length]);
                        // Whatever else is already queued is read before replying, so a burst
                        // costs one flush rather than one per datagram.
                        for _ in 0..RECV_BATCH {
                            let Ok((length, _)) = self.udp.try_recv_from(&mut buffer) else {
                                break;
                            };
                            self.core.handle_datagram(now, &buffer[..length]);
                        }
                    }
                }
                Some(event) = events.recv() => self.handle_event(event),
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    if let Command::Leave(done) = command {
                        self.core.leave();
                        self.flush().await;
                        let _ = done.send(());
                        return;
                    }
                    self.handle_command(command);
                }
                _ = tick.tick() => self.core.tick(Instant::now()),
            }
            self.flush().await;
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Timer(timer) => self.core.handle_timer(timer),
            Event::PushPullReply(frame) => {
                self.core.handle_push_pull_reply(Instant::now(), &frame);
            }
            Event::PushPullRequest { frame, reply } => {
                let _ = reply.send(self.core.handle_push_pull(Instant::now(), &frame));
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::JoinNetwork(network) => self.core.join_network(&network),
            Command::LeaveNetwork(network) => self.core.leave_network(&network),
            Command::Publish {
                network,
                endpoint,
                record,
                reply,
            } => {
                let _ = reply.send(self.core.publish(&network, &endpoint, *record));
            }
            Command::Withdraw { network, endpoint } => {
                self.core.withdraw(&network, &endpoint, Instant::now());
            }
            Command::SetKeyring(keyring) => self.core.set_keyring(keyring),
            Command::Leave(_) => {}
        }
    }

    /// Carries out what the core asked for and publishes what changed.
    async fn flush(&mut self) {
        for output in self.core.take_outputs() {
            match output {
                Output::Datagram { to, frame } => {
                    // A datagram the kernel refuses is a lost datagram, which gossip and
                    // push-pull already make up for.
                    let _ = self.udp.send_to(&frame, to).await;
                }
                Output::PushPull { to, frame } => {
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        let exchange = tokio::time::timeout(STREAM_TIMEOUT, push_pull(to, frame));
                        if let Ok(Ok(reply)) = exchange.await {
                            let _ = events.send(Event::PushPullReply(reply));
                        }
                    });
                }
                Output::Stream { to, frame } => {
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(STREAM_TIMEOUT, push(to, frame)).await;
                    });
                }
                Output::Timer { after, timer } => {
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = events.send(Event::Timer(timer));
                    });
                }
            }
        }
        if !self.core.take_changes().is_empty() {
            self.table_dirty = true;
        }
        let now = Instant::now();
        if self.table_dirty
            && self
                .last_snapshot
                .is_none_or(|last| now.duration_since(last) >= SNAPSHOT_INTERVAL)
        {
            self.table.send_replace(Arc::new(self.core.visible()));
            self.table_dirty = false;
            self.last_snapshot = Some(now);
        }
        let stats = self.core.stats();
        self.stats.send_if_modified(|current| {
            let changed = *current != stats;
            *current = stats;
            changed
        });
        let live = self.core.live_members();
        self.members.send_if_modified(|current| {
            let changed = *current != live;
            *current = live;
            changed
        });
    }
}
