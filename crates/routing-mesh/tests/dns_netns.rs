//! As root: the embedded DNS of a task in its own network namespace, as the daemon will serve it.
//! The test makes a namespace, opens 127.0.0.11:53 inside it with `open_task_sockets`, serves it
//! from this process's runtime, and asks from inside the namespace (a socket opened there, and
//! busybox's nslookup through nsenter): a service name, `tasks.<service>`, TCP, and a name
//! forwarded to a fake upstream on the host's loopback; and a task's own nameserver, reachable
//! only inside its namespace. The namespaces are deleted even when a test fails. Skipped, saying
//! so, when not root.

mod support;

use std::process::Command;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use routing_mesh::dns::{
    AskingTask, DnsServer, EMBEDDED_DNS_ADDRESS, ForwardingConfig, TaskUpstreams, open_task_sockets,
};
use support::{FakeUpstream, UPSTREAM_ADDRESS, addresses, ask_tcp, ask_udp, in_netns, ip};

/// A named network namespace with `lo` up, deleted on drop (a failing test included).
struct TestNamespace {
    name: String,
}

impl TestNamespace {
    fn create(name: &str) -> TestNamespace {
        // A namespace left by an earlier run that was killed goes first.
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
        let namespace = TestNamespace {
            name: name.to_owned(),
        };
        namespace.ip(&["netns", "add", name]);
        namespace.ip(&["-n", name, "link", "set", "lo", "up"]);
        namespace
    }

    fn ip(&self, args: &[&str]) {
        let output = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            output.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

#[tokio::test]
async fn a_task_in_its_namespace_resolves_services_and_forwards_other_names() {
    if let Some(reason) = shoal_tests::root_skip_reason() {
        shoal_tests::skip("dns_netns", &reason);
        return;
    }
    let namespace = TestNamespace::create(&format!("shoal-dns-{}", std::process::id()));
    let upstream = FakeUpstream::start(false).await;
    let server = DnsServer::new(
        support::table(3),
        ForwardingConfig {
            upstreams: vec![upstream.address],
            ..ForwardingConfig::default()
        },
    );
    let sockets = open_task_sockets(&namespace.path(), EMBEDDED_DNS_ADDRESS).expect("sockets");
    let _dns = server.serve(sockets, support::asker()).expect("serve");

    // Nothing listens at 127.0.0.11:53 in this process's own namespace: the answers below can
    // only come from inside the task's.
    let client_udp = in_netns(&namespace.path(), || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    })
    .expect("client socket in the namespace");
    let client = tokio::net::UdpSocket::from_std(client_udp).expect("tokio socket");

    let answer = ask_udp(&client, EMBEDDED_DNS_ADDRESS, "web.", RecordType::A).await;
    assert_eq!(addresses(&answer), vec![ip("10.0.1.2")]);
    assert_eq!(answer.answers[0].ttl, 600);

    let answer = ask_udp(&client, EMBEDDED_DNS_ADDRESS, "tasks.web.", RecordType::A).await;
    assert_eq!(
        addresses(&answer),
        vec![ip("10.0.1.5"), ip("10.0.1.6"), ip("10.0.1.7")]
    );

    // Forwarded: the upstream listens on the host's loopback, which the task's namespace can't
    // reach; the daemon asks it from its own.
    let answer = ask_udp(
        &client,
        EMBEDDED_DNS_ADDRESS,
        "example.test.",
        RecordType::A,
    )
    .await;
    assert_eq!(addresses(&answer), vec![ip(UPSTREAM_ADDRESS)]);
    let answer = ask_udp(&client, EMBEDDED_DNS_ADDRESS, "nx.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);

    let client_tcp = in_netns(&namespace.path(), || {
        let stream = std::net::TcpStream::connect(EMBEDDED_DNS_ADDRESS)?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    })
    .expect("TCP connection in the namespace");
    let mut stream = tokio::net::TcpStream::from_std(client_tcp).expect("tokio stream");
    let answer = ask_tcp(&mut stream, "web.3.task3.", RecordType::A).await;
    assert_eq!(addresses(&answer), vec![ip("10.0.1.7")]);

    // A real resolver client inside the namespace, run from another process.
    let path = namespace.path();
    let nslookup = tokio::task::spawn_blocking(move || {
        Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["/bin/busybox", "nslookup", "-type=a", "web", "127.0.0.11"])
            .output()
            .expect("run nsenter")
    })
    .await
    .expect("nslookup thread");
    let printed = String::from_utf8_lossy(&nslookup.stdout);
    assert!(
        nslookup.status.success() && printed.contains("10.0.1.2"),
        "nslookup web: {printed}{}",
        String::from_utf8_lossy(&nslookup.stderr)
    );
}

#[test]
fn opening_sockets_in_a_missing_namespace_says_which() {
    let error = open_task_sockets(
        std::path::Path::new("/run/netns/shoal-no-such-namespace"),
        EMBEDDED_DNS_ADDRESS,
    )
    .expect_err("no such namespace");
    assert!(
        error.to_string().contains("shoal-no-such-namespace"),
        "{error}"
    );
}

#[tokio::test]
async fn a_task_s_own_nameserver_is_asked_from_inside_its_namespace() {
    if let Some(reason) = shoal_tests::root_skip_reason() {
        shoal_tests::skip("dns_netns", &reason);
        return;
    }
    let namespace = TestNamespace::create(&format!("shoal-dnsown-{}", std::process::id()));
    // The task's nameserver listens on the namespace's own loopback: the daemon's namespace has
    // nothing there.
    let nameserver: std::net::SocketAddr = "127.0.0.9:5353".parse().expect("address");
    let (udp, tcp) = in_netns(&namespace.path(), move || {
        Ok((
            std::net::UdpSocket::bind(nameserver)?,
            std::net::TcpListener::bind(nameserver)?,
        ))
    })
    .expect("nameserver sockets in the namespace");
    let _nameserver = FakeUpstream::start_on(udp, tcp, false);

    // The node's upstreams would fail: only the task's own can answer.
    let server = DnsServer::new(support::table(3), ForwardingConfig::default());
    let sockets = open_task_sockets(&namespace.path(), EMBEDDED_DNS_ADDRESS).expect("sockets");
    let asker = AskingTask {
        own_upstreams: true,
        ..support::asker()
    };
    let _dns = server
        .serve_with_own_upstreams(
            sockets,
            asker,
            TaskUpstreams {
                servers: vec![nameserver],
                netns_path: namespace.path(),
            },
        )
        .expect("serve");

    let client_udp = in_netns(&namespace.path(), || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    })
    .expect("client socket in the namespace");
    let client = tokio::net::UdpSocket::from_std(client_udp).expect("tokio socket");
    let answer = ask_udp(
        &client,
        EMBEDDED_DNS_ADDRESS,
        "example.test.",
        RecordType::A,
    )
    .await;
    assert_eq!(addresses(&answer), vec![ip(UPSTREAM_ADDRESS)]);

    let client_tcp = in_netns(&namespace.path(), || {
        let stream = std::net::TcpStream::connect(EMBEDDED_DNS_ADDRESS)?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    })
    .expect("TCP connection in the namespace");
    let mut stream = tokio::net::TcpStream::from_std(client_tcp).expect("tokio stream");
    let answer = ask_tcp(&mut stream, "nx.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
}
