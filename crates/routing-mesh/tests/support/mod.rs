//! Helpers the embedded DNS tests share: a table with a `web` service, a DNS client, and a fake
//! upstream resolver on loopback.

#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use routing_mesh::dns::{
    AskingTask, DnsTable, NetworkRecords, ServiceEndpoint, ServiceRecords, TaskHealth, TaskRecord,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// Runs `work` inside the network namespace at `path`, through overlay-net's way in.
pub fn in_netns<T: Send + 'static>(
    path: &std::path::Path,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    overlay_net::netns::run_in(Some(path), work).expect("enter the network namespace")
}

/// What the fake upstream answers for `example.test`.
pub const UPSTREAM_ADDRESS: &str = "192.0.2.7";

pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn task(container_name: &str, address: IpAddr) -> TaskRecord {
    TaskRecord {
        container_name: container_name.to_owned(),
        address,
        running: true,
        health: TaskHealth::NoHealthcheck,
    }
}

/// Network `front` (id `net-front`): service `web` with VIP 10.0.1.2 and three tasks
/// 10.0.1.5–7, and a dnsrr service `many` with `many_tasks` tasks.
pub fn table(many_tasks: u8) -> DnsTable {
    DnsTable::new([NetworkRecords {
        id: "net-front".to_owned(),
        name: "front".to_owned(),
        ingress: false,
        internal: false,
        services: vec![
            ServiceRecords {
                name: "web".to_owned(),
                aliases: vec!["www".to_owned()],
                endpoint: ServiceEndpoint::VirtualIp(ip("10.0.1.2")),
                tasks: (1..=3u8)
                    .map(|slot| {
                        task(
                            &format!("web.{slot}.task{slot}"),
                            IpAddr::from([10, 0, 1, 4 + slot]),
                        )
                    })
                    .collect(),
            },
            ServiceRecords {
                name: "many".to_owned(),
                aliases: Vec::new(),
                endpoint: ServiceEndpoint::DnsRoundRobin,
                tasks: (0..many_tasks)
                    .map(|slot| {
                        task(
                            &format!("many.{slot}.t{slot}"),
                            IpAddr::from([10, 0, 2, slot]),
                        )
                    })
                    .collect(),
            },
        ],
    }])
}

pub fn asker() -> AskingTask {
    AskingTask {
        networks: vec!["net-front".to_owned()],
        ndots_set: false,
        own_upstreams: false,
    }
}

pub fn query(id: u16, name: &str, record_type: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_str(name).expect("query name"),
        record_type,
    ));
    if edns {
        let mut options = Edns::new();
        options.set_max_payload(4096);
        message.set_edns(options);
    }
    message.to_vec().expect("encode query")
}

/// Asks over UDP from `socket` and waits for the answer (5 s at most).
pub async fn ask_udp(
    socket: &UdpSocket,
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
) -> Message {
    ask_udp_edns(socket, server, name, record_type, false).await
}

pub async fn ask_udp_edns(
    socket: &UdpSocket,
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
    edns: bool,
) -> Message {
    let id = rand::random();
    socket
        .send_to(&query(id, name, record_type, edns), server)
        .await
        .expect("send question");
    let mut buffer = vec![0; 65_535];
    let length = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buffer))
        .await
        .expect("an answer within 5 s")
        .expect("receive answer");
    let answer = Message::from_vec(&buffer[..length]).expect("answer parses");
    assert_eq!(answer.metadata.id, id, "answer to another question");
    answer
}

/// Asks over `stream` (DNS over TCP framing).
pub async fn ask_tcp(stream: &mut TcpStream, name: &str, record_type: RecordType) -> Message {
    let id = rand::random();
    let question = query(id, name, record_type, false);
    let mut framed = (question.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&question);
    stream.write_all(&framed).await.expect("send question");
    let mut length = [0; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut length))
        .await
        .expect("an answer within 5 s")
        .expect("read length");
    let mut answer = vec![0; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).await.expect("read answer");
    let answer = Message::from_vec(&answer).expect("answer parses");
    assert_eq!(answer.metadata.id, id, "answer to another question");
    answer
}

/// The IPv4 addresses of an answer, sorted.
pub fn addresses(answer: &Message) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(A(address)) => Some(IpAddr::V4(*address)),
            _ => None,
        })
        .collect();
    addresses.sort();
    addresses
}

/// A fake upstream resolver on 127.0.0.1 (UDP and TCP on the same port): `example.test` has
/// [`UPSTREAM_ADDRESS`], `nx.test` is NXDOMAIN, anything else SERVFAIL, or, with
/// `always_fail`, everything is SERVFAIL.
pub struct FakeUpstream {
    pub address: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn upstream_answer(question: &[u8], always_fail: bool) -> Option<Vec<u8>> {
    let question = Message::from_vec(question).ok()?;
    let mut answer = Message::new(question.metadata.id, MessageType::Response, OpCode::Query);
    answer.metadata.recursion_available = true;
    let query = question.queries.first()?.clone();
    let name = query.name().to_ascii();
    answer.add_query(query.clone());
    if always_fail {
        answer.metadata.response_code = ResponseCode::ServFail;
    } else if name.eq_ignore_ascii_case("example.test.") {
        answer.add_answer(Record::from_rdata(
            query.name().clone(),
            30,
            RData::A(A(UPSTREAM_ADDRESS.parse().expect("address"))),
        ));
    } else if name.eq_ignore_ascii_case("nx.test.") {
        answer.metadata.response_code = ResponseCode::NXDomain;
    } else {
        answer.metadata.response_code = ResponseCode::ServFail;
    }
    answer.to_vec().ok()
}

/// A UDP socket and a TCP listener on one free port of 127.0.0.1, as a DNS server needs.
pub fn loopback_udp_and_tcp() -> (std::net::UdpSocket, std::net::TcpListener) {
    // The UDP port the kernel picks may be taken for TCP by another test: pick again.
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        match std::net::TcpListener::bind(udp.local_addr().expect("UDP address")) {
            Ok(tcp) => return (udp, tcp),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(error) => panic!("bind TCP: {error}"),
        }
    }
    panic!("bind TCP: 20 UDP ports in a row were taken for TCP")
}

impl FakeUpstream {
    pub async fn start(always_fail: bool) -> FakeUpstream {
        let (udp, tcp) = loopback_udp_and_tcp();
        FakeUpstream::start_on(udp, tcp, always_fail)
    }

    /// Serves on sockets already bound (in another namespace, say), on one address.
    pub fn start_on(
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        always_fail: bool,
    ) -> FakeUpstream {
        udp.set_nonblocking(true).expect("non-blocking");
        tcp.set_nonblocking(true).expect("non-blocking");
        let udp = UdpSocket::from_std(udp).expect("tokio UDP socket");
        let tcp = tokio::net::TcpListener::from_std(tcp).expect("tokio listener");
        let address = udp.local_addr().expect("upstream address");
        let udp_task = tokio::spawn(async move {
            let mut buffer = vec![0; 65_535];
            while let Ok((length, from)) = udp.recv_from(&mut buffer).await {
                if let Some(answer) = upstream_answer(&buffer[..length], always_fail) {
                    let _ = udp.send_to(&answer, from).await;
                }
            }
        });
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    let mut length = [0; 2];
                    while stream.read_exact(&mut length).await.is_ok() {
                        let mut question = vec![0; usize::from(u16::from_be_bytes(length))];
                        if stream.read_exact(&mut question).await.is_err() {
                            return;
                        }
                        let Some(answer) = upstream_answer(&question, always_fail) else {
                            return;
                        };
                        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&answer);
                        if stream.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeUpstream {
            address,
            tasks: vec![udp_task, tcp_task],
        }
    }
}
