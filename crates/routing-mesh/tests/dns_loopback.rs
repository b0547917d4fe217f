//! The embedded DNS server end to end on loopback, without root: answers from the table over UDP
//! and TCP, TTL 600, truncation, forwarding to a fake upstream and its failure rules.

mod support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use routing_mesh::dns::{DnsServer, ForwardingConfig, TaskDns, TaskSockets};
use support::{FakeUpstream, UPSTREAM_ADDRESS, addresses, ask_tcp, ask_udp, ask_udp_edns, ip};

/// Serves the test table for one task on 127.0.0.1 (a free port), forwarding to `upstreams`.
fn serve(server: &DnsServer) -> (TaskDns, SocketAddr) {
    let (udp, tcp) = support::loopback_udp_and_tcp();
    udp.set_nonblocking(true).expect("non-blocking");
    let address = udp.local_addr().expect("address");
    tcp.set_nonblocking(true).expect("non-blocking");
    let dns = server
        .serve(TaskSockets { udp, tcp }, support::asker())
        .expect("serve");
    (dns, address)
}

fn server(upstreams: Vec<SocketAddr>, timeout: Duration) -> DnsServer {
    DnsServer::new(support::table(3), ForwardingConfig { upstreams, timeout })
}

async fn client() -> tokio::net::UdpSocket {
    tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind client")
}

#[tokio::test]
async fn answers_service_names_from_the_table_with_ttl_600() {
    let server = server(Vec::new(), Duration::from_secs(1));
    let (_dns, address) = serve(&server);
    let client = client().await;

    let answer = ask_udp(&client, address, "web.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&answer), vec![ip("10.0.1.2")]);
    assert_eq!(answer.answers[0].ttl, 600);
    assert_eq!(answer.answers[0].name.to_ascii(), "web.");
    assert!(answer.metadata.recursion_available);

    let answer = ask_udp(&client, address, "TASKS.www.", RecordType::A).await;
    assert_eq!(
        addresses(&answer),
        vec![ip("10.0.1.5"), ip("10.0.1.6"), ip("10.0.1.7")]
    );

    let answer = ask_udp(&client, address, "web.", RecordType::AAAA).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty());

    let answer = ask_udp(&client, address, "6.1.0.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(
        answer.answers[0].data.to_string(),
        "web.2.task2.front.",
        "{answer:?}"
    );
}

#[tokio::test]
async fn answers_over_tcp_too() {
    let server = server(Vec::new(), Duration::from_secs(1));
    let (_dns, address) = serve(&server);
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let answer = ask_tcp(&mut stream, "tasks.web.", RecordType::A).await;
    assert_eq!(addresses(&answer).len(), 3);
    // The same connection carries a second question.
    let answer = ask_tcp(&mut stream, "web.1.task1.", RecordType::A).await;
    assert_eq!(addresses(&answer), vec![ip("10.0.1.5")]);
}

#[tokio::test]
async fn a_udp_answer_too_large_is_truncated_and_complete_over_tcp_or_edns() {
    let server = DnsServer::new(support::table(100), ForwardingConfig::default());
    let (_dns, address) = serve(&server);
    let client = client().await;

    let answer = ask_udp(&client, address, "tasks.many.", RecordType::A).await;
    assert!(answer.metadata.truncation, "{answer:?}");
    assert!(answer.answers.len() < 100);

    let answer = ask_udp_edns(&client, address, "tasks.many.", RecordType::A, true).await;
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 100);

    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let answer = ask_tcp(&mut stream, "tasks.many.", RecordType::A).await;
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 100);
}

#[tokio::test]
async fn other_names_are_relayed_from_the_upstream_as_they_come() {
    let upstream = FakeUpstream::start(false).await;
    let server = server(vec![upstream.address], Duration::from_secs(2));
    let (_dns, address) = serve(&server);
    let client = client().await;

    let answer = ask_udp(&client, address, "example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&answer), vec![ip(UPSTREAM_ADDRESS)]);
    // The upstream's TTL, not ours.
    assert_eq!(answer.answers[0].ttl, 30);

    let answer = ask_udp(&client, address, "nx.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);

    // A type the table does not answer goes upstream even for one of our names.
    let answer = ask_udp(&client, address, "web.", RecordType::TXT).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);

    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let answer = ask_tcp(&mut stream, "example.test.", RecordType::A).await;
    assert_eq!(addresses(&answer), vec![ip(UPSTREAM_ADDRESS)]);
}

#[tokio::test]
async fn the_next_upstream_is_asked_after_a_server_failure_or_a_timeout() {
    let failing = FakeUpstream::start(true).await;
    // Bound but never answering: the question times out.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind silent");
    let working = FakeUpstream::start(false).await;
    let server = server(
        vec![
            failing.address,
            silent.local_addr().expect("address"),
            working.address,
        ],
        Duration::from_millis(300),
    );
    let (_dns, address) = serve(&server);
    let client = client().await;

    let started = Instant::now();
    let answer = ask_udp(&client, address, "example.test.", RecordType::A).await;
    assert_eq!(addresses(&answer), vec![ip(UPSTREAM_ADDRESS)]);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn only_the_first_three_upstreams_are_asked_and_none_answering_is_server_failure() {
    let failing = FakeUpstream::start(true).await;
    let working = FakeUpstream::start(false).await;
    let server = server(
        vec![
            failing.address,
            failing.address,
            failing.address,
            working.address,
        ],
        Duration::from_secs(1),
    );
    let (_dns, address) = serve(&server);
    let client = client().await;
    let answer = ask_udp(&client, address, "example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(answer.answers.is_empty());
}

#[tokio::test]
async fn a_new_table_and_new_upstreams_apply_to_the_next_question() {
    let server = server(Vec::new(), Duration::from_secs(1));
    let (_dns, address) = serve(&server);
    let client = client().await;
    let answer = ask_udp(&client, address, "example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);

    let upstream = FakeUpstream::start(false).await;
    server.set_forwarding(ForwardingConfig {
        upstreams: vec![upstream.address],
        timeout: Duration::from_secs(1),
    });
    server.set_table(routing_mesh::dns::DnsTable::default());
    let answer = ask_udp(&client, address, "example.test.", RecordType::A).await;
    assert_eq!(addresses(&answer), vec![ip(UPSTREAM_ADDRESS)]);
    let answer = ask_udp(&client, address, "web.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn stopping_a_task_s_dns_closes_its_sockets() {
    let server = server(Vec::new(), Duration::from_secs(1));
    let (dns, address) = serve(&server);
    dns.stop().await;
    // The port is free again once the sockets are closed.
    UdpSocket::bind(address).expect("UDP port released");
    TcpListener::bind(address).expect("TCP port released");
}

#[tokio::test]
async fn dropping_a_task_s_dns_closes_its_sockets_too() {
    let server = server(Vec::new(), Duration::from_secs(1));
    let (dns, address) = serve(&server);
    drop(dns);
    // The aborted tasks let go of the sockets the next time the runtime runs them.
    let deadline = Instant::now() + Duration::from_secs(2);
    while UdpSocket::bind(address).is_err() || TcpListener::bind(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "sockets still open 2 s after the drop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn upstreams_come_from_a_resolv_conf_file() {
    let path = std::env::temp_dir().join(format!("shoal-dns-resolv-{}.conf", std::process::id()));
    std::fs::write(&path, "nameserver 192.0.2.53\noptions ndots:1\n").expect("write file");
    let forwarding = ForwardingConfig::from_resolv_conf_file(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        forwarding.expect("read file"),
        ForwardingConfig {
            upstreams: vec!["192.0.2.53:53".parse().expect("address")],
            timeout: Duration::from_secs(4),
        }
    );
    assert!(
        ForwardingConfig::from_resolv_conf_file(std::path::Path::new("/nonexistent/resolv.conf"))
            .is_err()
    );
}

#[tokio::test]
async fn a_question_of_another_class_than_internet_is_not_answered_from_the_table() {
    use hickory_server::proto::op::{Message, MessageType, OpCode, Query};
    use hickory_server::proto::rr::{DNSClass, Name};
    use std::str::FromStr;

    let server = server(Vec::new(), Duration::from_secs(1));
    let (_dns, address) = serve(&server);
    let client = client().await;
    let mut question = Message::new(4242, MessageType::Query, OpCode::Query);
    let mut query = Query::query(Name::from_str("web.").expect("name"), RecordType::A);
    query.set_query_class(DNSClass::CH);
    question.add_query(query);
    client
        .send_to(&question.to_vec().expect("encode"), address)
        .await
        .expect("send");
    let mut buffer = vec![0; 4096];
    let length = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
        .await
        .expect("an answer within 5 s")
        .expect("receive");
    let answer = Message::from_vec(&buffer[..length]).expect("parse");
    // Forwarded, and with no upstream configured nothing answers it.
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(answer.answers.is_empty());
}
