//! The shell of embedded DNS: hickory-server serves each task's sockets on the caller's tokio
//! runtime, answers from the shared [`DnsTable`] and relays other questions to the upstream
//! resolvers.
//!
//! One [`DnsServer`] per daemon holds the table and the upstream resolvers; `serve` adds one
//! task's sockets as a few tasks on the runtime (no thread or process per task). Forwarding
//! follows Docker's resolver: the question goes verbatim to each upstream in turn (at most
//! three), over the protocol the task used, with a 4 s timeout each; the next one is asked after
//! a timeout, SERVFAIL or REFUSED; any other answer, NXDOMAIN included, goes back as it came;
//! when none answers, SERVFAIL. The host's resolvers are asked from the daemon's own namespace,
//! so one on the host's loopback (systemd-resolved) is reachable; a task's own (`--dns`) from
//! the task's namespace, through a short-lived thread per question.
//!
//! hickory-server logs every question at `info`: a daemon serving this wants
//! `hickory_server=warn` in its log filter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, PTR};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::DnsError;
use super::netns::TaskSockets;
use super::records::{Answer, AnswerRecord, AskingTask, DnsTable, QueryType, RECORD_TTL};
use super::upstream::{MAX_UPSTREAMS, upstreams_from_resolv_conf};

/// How long one upstream resolver has to answer (Docker's `extIOTimeout`).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a task's TCP connection may stay idle between questions.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many forwarded questions may wait for upstream answers at once, across every task of the
/// node (Docker's `maxConcurrent`); past it a question is REFUSED.
const MAX_FORWARDS_IN_FLIGHT: usize = 1024;

/// The largest DNS message, the size of an upstream answer's buffer.
const MAX_MESSAGE_BYTES: usize = 65_535;

/// Where questions that are not ours go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardingConfig {
    /// Asked in order; only the first [`MAX_UPSTREAMS`] are used.
    pub upstreams: Vec<SocketAddr>,
    /// How long each one has to answer.
    pub timeout: Duration,
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        ForwardingConfig {
            upstreams: Vec::new(),
            timeout: UPSTREAM_TIMEOUT,
        }
    }
}

impl ForwardingConfig {
    /// The resolvers named in a resolv.conf file (the host's `/etc/resolv.conf`), with
    /// [`UPSTREAM_TIMEOUT`].
    pub fn from_resolv_conf_file(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(ForwardingConfig {
            upstreams: upstreams_from_resolv_conf(&std::fs::read(path)?),
            timeout: UPSTREAM_TIMEOUT,
        })
    }
}

/// A task's own nameservers (`--dns`), asked in place of the node's from inside the task's
/// network namespace, as Docker asks them: they may be reachable only from there (a nameserver
/// task on the same overlay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskUpstreams {
    /// As [`task_upstreams`](super::task_upstreams) gives them.
    pub servers: Vec<SocketAddr>,
    /// The task's network namespace (`/run/netns/NAME`, `/proc/PID/ns/net`).
    pub netns_path: PathBuf,
}

/// The node's embedded DNS: the names every task may ask for, and where the rest go. Clones
/// share them.
#[derive(Clone)]
pub struct DnsServer {
    shared: Arc<Shared>,
}

struct Shared {
    table: RwLock<Arc<DnsTable>>,
    forwarding: RwLock<Arc<ForwardingConfig>>,
    forwards_in_flight: Semaphore,
}

impl DnsServer {
    pub fn new(table: DnsTable, forwarding: ForwardingConfig) -> Self {
        DnsServer {
            shared: Arc::new(Shared {
                table: RwLock::new(Arc::new(table)),
                forwarding: RwLock::new(Arc::new(forwarding)),
                forwards_in_flight: Semaphore::new(MAX_FORWARDS_IN_FLIGHT),
            }),
        }
    }

    /// Replaces the names every task sees; questions already being answered finish with the old
    /// ones.
    pub fn set_table(&self, table: DnsTable) {
        *write(&self.shared.table) = Arc::new(table);
    }

    /// Replaces the upstream resolvers.
    pub fn set_forwarding(&self, forwarding: ForwardingConfig) {
        *write(&self.shared.forwarding) = Arc::new(forwarding);
    }

    /// Starts answering `asker`'s questions on its sockets, on the current tokio runtime. Must be
    /// called from inside that runtime. Serving stops when the returned handle is stopped or
    /// dropped.
    pub fn serve(&self, sockets: TaskSockets, asker: AskingTask) -> Result<TaskDns, DnsError> {
        self.serve_task(sockets, asker, None)
    }

    /// As [`serve`](Self::serve), for a task that names its own nameservers: names that are not
    /// ours go to them (with the node's timeout), asked from the task's namespace. The asker's
    /// `own_upstreams` should be set.
    pub fn serve_with_own_upstreams(
        &self,
        sockets: TaskSockets,
        asker: AskingTask,
        upstreams: TaskUpstreams,
    ) -> Result<TaskDns, DnsError> {
        self.serve_task(sockets, asker, Some(Arc::new(upstreams)))
    }

    fn serve_task(
        &self,
        sockets: TaskSockets,
        asker: AskingTask,
        own_upstreams: Option<Arc<TaskUpstreams>>,
    ) -> Result<TaskDns, DnsError> {
        let udp = tokio::net::UdpSocket::from_std(sockets.udp).map_err(DnsError::Register)?;
        let tcp = tokio::net::TcpListener::from_std(sockets.tcp).map_err(DnsError::Register)?;
        let mut server = Server::new(TaskHandler {
            shared: Arc::clone(&self.shared),
            asker,
            own_upstreams,
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, MAX_MESSAGE_BYTES);
        Ok(TaskDns { server })
    }
}

/// One task's embedded DNS being served.
pub struct TaskDns {
    server: Server<TaskHandler>,
}

impl TaskDns {
    /// Stops answering and closes the task's sockets.
    pub async fn stop(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::debug!(%error, "embedded DNS of a task stopped with an error");
        }
    }
}

fn read<T>(lock: &RwLock<Arc<T>>) -> Arc<T> {
    // A panic while holding the lock leaves a whole Arc behind, never a half-written one.
    Arc::clone(&lock.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

fn write<T>(lock: &RwLock<Arc<T>>) -> std::sync::RwLockWriteGuard<'_, Arc<T>> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Answers one task's questions.
struct TaskHandler {
    shared: Arc<Shared>,
    asker: AskingTask,
    own_upstreams: Option<Arc<TaskUpstreams>>,
}

/// What the handler sends back, before it is encoded.
enum Reply {
    Records(Vec<Record>),
    Relayed(Message),
    Code(ResponseCode),
}

#[async_trait::async_trait]
impl RequestHandler for TaskHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.reply(request).await;
        // As hickory's catalog does: an EDNS request gets an EDNS answer as large as it allows.
        let response_edns = request.edns.as_ref().map(|request_edns| {
            let mut edns = Edns::new();
            edns.set_max_payload(request_edns.max_payload().max(512));
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, response_edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let sent = match &reply {
            Reply::Records(records) => {
                let response = builder.build(metadata, records, [], [], []);
                response_handle.send_response(response).await
            }
            Reply::Relayed(message) => {
                metadata.response_code = message.metadata.response_code;
                metadata.truncation = message.metadata.truncation;
                metadata.authoritative = message.metadata.authoritative;
                metadata.authentic_data = message.metadata.authentic_data;
                let response = builder.build(
                    metadata,
                    &message.answers,
                    &message.authorities,
                    [],
                    &message.additionals,
                );
                response_handle.send_response(response).await
            }
            Reply::Code(code) => {
                metadata.response_code = *code;
                response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
        };
        sent.unwrap_or_else(|error| {
            tracing::debug!(%error, "embedded DNS could not send an answer");
            let mut failed = Metadata::response_from_request(&request.metadata);
            failed.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_server::proto::op::Header {
                metadata: failed,
                counts: Default::default(),
            })
        })
    }
}

impl TaskHandler {
    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query
            || request.metadata.message_type != MessageType::Query
        {
            return Reply::Code(ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return Reply::Code(ResponseCode::FormErr);
        };
        let question = query.original();
        let query_type = match question.query_type() {
            // Our names are Internet-class names only: a CHAOS question goes upstream.
            _ if question.query_class() != DNSClass::IN => QueryType::Other,
            RecordType::A => QueryType::A,
            RecordType::AAAA => QueryType::Aaaa,
            RecordType::MX => QueryType::Mx,
            RecordType::PTR => QueryType::Ptr,
            _ => QueryType::Other,
        };
        let table = read(&self.shared.table);
        let answer = table.answer(
            &question.name().to_string(),
            query_type,
            &self.asker,
            &mut rand::rng(),
        );
        match answer {
            Answer::Records(records) => Reply::Records(
                records
                    .into_iter()
                    .filter_map(|record| to_record(question.name(), record))
                    .collect(),
            ),
            Answer::ServerFailure => Reply::Code(ResponseCode::ServFail),
            Answer::Forward => self.forward(request).await,
        }
    }

    async fn forward(&self, request: &Request) -> Reply {
        let Ok(_permit) = self.shared.forwards_in_flight.try_acquire() else {
            return Reply::Code(ResponseCode::Refused);
        };
        let forwarding = read(&self.shared.forwarding);
        let (upstreams, netns_path) = match &self.own_upstreams {
            Some(own) => (&own.servers, Some(own.netns_path.as_path())),
            None => (&forwarding.upstreams, None),
        };
        for upstream in upstreams.iter().take(MAX_UPSTREAMS) {
            let exchange = exchange(
                *upstream,
                request.as_slice(),
                request.protocol(),
                netns_path,
                forwarding.timeout,
            );
            let bytes = match tokio::time::timeout(forwarding.timeout, exchange).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(error)) => {
                    tracing::debug!(%upstream, %error, "upstream resolver failed");
                    continue;
                }
                Err(_elapsed) => {
                    tracing::debug!(%upstream, "upstream resolver timed out");
                    continue;
                }
            };
            let Ok(message) = Message::from_vec(&bytes) else {
                tracing::debug!(%upstream, "upstream resolver sent an answer that does not parse");
                continue;
            };
            if message.metadata.id != request.metadata.id
                || matches!(
                    message.metadata.response_code,
                    ResponseCode::ServFail | ResponseCode::Refused
                )
            {
                continue;
            }
            return Reply::Relayed(message);
        }
        Reply::Code(ResponseCode::ServFail)
    }
}

/// A record of the core's answer, owned by the question's name.
fn to_record(name: &Name, record: AnswerRecord) -> Option<Record> {
    let ttl = u32::try_from(RECORD_TTL.as_secs()).unwrap_or(u32::MAX);
    let rdata = match record {
        AnswerRecord::Address(IpAddr::V4(address)) => RData::A(A(address)),
        AnswerRecord::Address(IpAddr::V6(address)) => RData::AAAA(AAAA(address)),
        AnswerRecord::Pointer(target) => match Name::from_utf8(&target) {
            Ok(target) => RData::PTR(PTR(target)),
            Err(error) => {
                tracing::debug!(%target, %error, "PTR target is not a DNS name");
                return None;
            }
        },
    };
    Some(Record::from_rdata(name.clone(), ttl, rdata))
}

/// Sends `query` to `upstream` and returns its answer's bytes; from the namespace at
/// `netns_path` when given, else from the daemon's.
async fn exchange(
    upstream: SocketAddr,
    query: &[u8],
    protocol: Protocol,
    netns_path: Option<&Path>,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    if protocol == Protocol::Tcp {
        let stream = match netns_path {
            None => tokio::net::TcpStream::connect(upstream).await?,
            Some(path) => {
                let stream = in_netns(path, move || {
                    let stream = std::net::TcpStream::connect_timeout(&upstream, timeout)?;
                    stream.set_nonblocking(true)?;
                    Ok(stream)
                })
                .await?;
                tokio::net::TcpStream::from_std(stream)?
            }
        };
        return exchange_tcp(stream, query).await;
    }
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = match netns_path {
        None => tokio::net::UdpSocket::bind(local).await?,
        Some(path) => {
            let socket = in_netns(path, move || {
                let socket = std::net::UdpSocket::bind(local)?;
                socket.set_nonblocking(true)?;
                Ok(socket)
            })
            .await?;
            tokio::net::UdpSocket::from_std(socket)?
        }
    };
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buffer = vec![0; MAX_MESSAGE_BYTES];
    loop {
        let length = socket.recv(&mut buffer).await?;
        // A datagram whose id differs is a late answer to someone else: waits for ours.
        if length >= 2 && query.len() >= 2 && buffer[..2] == query[..2] {
            buffer.truncate(length);
            return Ok(buffer);
        }
    }
}

/// Opens a socket with `open` inside the namespace at `path`, off the runtime's threads.
async fn in_netns<T: Send + 'static>(
    path: &Path,
    open: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || overlay_net::netns::run_in(Some(&path), open))
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?
}

async fn exchange_tcp(mut stream: tokio::net::TcpStream, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let length = u16::try_from(query.len())
        .map_err(|_| std::io::Error::other("question longer than a DNS message"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut length = [0; 2];
    stream.read_exact(&mut length).await?;
    let mut answer = vec![0; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}
