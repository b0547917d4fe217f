//! Embedded DNS answers per second and latency percentiles, as a task sees them.
//!
//! `cargo run --release -p routing-mesh --example dns_bench -- [SECONDS] [CLIENTS]`
//!
//! As root it serves 127.0.0.11:53 inside a network namespace it makes (and deletes) and asks
//! from sockets opened in that namespace, as a task would; otherwise it serves and asks on
//! 127.0.0.1. The server runs on a one-thread tokio runtime (the daemon's share), each client on
//! its own thread asking one question at a time (`web` and `tasks.web`, alternately) and timing
//! each answer. Traffic stays on loopback.

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::{Name, RecordType};
use routing_mesh::dns::{
    AskingTask, DnsServer, DnsTable, EMBEDDED_DNS_ADDRESS, ForwardingConfig, NetworkRecords,
    ServiceEndpoint, ServiceRecords, TaskHealth, TaskRecord, TaskSockets, open_task_sockets,
};

fn table() -> DnsTable {
    // 50 services of 10 tasks each on one network: a busy node's view.
    let services = (0..50u8)
        .map(|service| ServiceRecords {
            name: if service == 0 {
                "web".to_owned()
            } else {
                format!("service{service}")
            },
            aliases: Vec::new(),
            endpoint: ServiceEndpoint::VirtualIp(IpAddr::from([10, 0, service, 2])),
            tasks: (0..10u8)
                .map(|slot| TaskRecord {
                    container_name: format!("s{service}.{slot}.t{service}x{slot}"),
                    address: IpAddr::from([10, 0, service, 10 + slot]),
                    running: true,
                    health: TaskHealth::NoHealthcheck,
                })
                .collect(),
        })
        .collect();
    DnsTable::new([NetworkRecords {
        id: "net".to_owned(),
        name: "front".to_owned(),
        ingress: false,
        internal: false,
        services,
    }])
}

fn question(id: u16, name: &str) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_str(name).expect("name"),
        RecordType::A,
    ));
    message.to_vec().expect("encode")
}

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let root = nix::unistd::geteuid().is_root();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let namespace = root.then(|| {
        let name = format!("shoal-dns-bench-{}", std::process::id());
        let namespace = Namespace(name.clone());
        for args in [
            vec!["netns", "add", name.as_str()],
            vec!["-n", name.as_str(), "link", "set", "lo", "up"],
        ] {
            assert!(
                Command::new("ip")
                    .args(&args)
                    .status()
                    .expect("ip")
                    .success()
            );
        }
        namespace
    });
    let netns_path = namespace
        .as_ref()
        .map(|namespace| std::path::Path::new("/run/netns").join(&namespace.0));
    let (sockets, address) = match &netns_path {
        Some(path) => (
            open_task_sockets(path, EMBEDDED_DNS_ADDRESS).expect("sockets in the namespace"),
            EMBEDDED_DNS_ADDRESS,
        ),
        None => {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
            udp.set_nonblocking(true).expect("non-blocking");
            let address = udp.local_addr().expect("address");
            let tcp = TcpListener::bind(address).expect("bind TCP");
            tcp.set_nonblocking(true).expect("non-blocking");
            (TaskSockets { udp, tcp }, address)
        }
    };
    let server = DnsServer::new(table(), ForwardingConfig::default());
    let stop = Arc::new(AtomicBool::new(false));
    let server_thread = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let asker = AskingTask {
                    networks: vec!["net".to_owned()],
                    ndots_set: false,
                    own_upstreams: false,
                };
                let dns = server.serve(sockets, asker).expect("serve");
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                dns.stop().await;
            });
        })
    };

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let client_threads: Vec<_> = (0..clients)
        .map(|client| {
            let netns_path = netns_path.clone();
            std::thread::spawn(move || {
                let open = || -> std::io::Result<UdpSocket> {
                    let socket = UdpSocket::bind("127.0.0.1:0")?;
                    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
                    Ok(socket)
                };
                let socket = match &netns_path {
                    Some(path) => overlay_net::netns::run_in(Some(path), open)
                        .expect("enter the namespace")
                        .expect("client socket"),
                    None => open().expect("client socket"),
                };
                socket.connect(address).expect("connect");
                let questions = [question(0, "web."), question(0, "tasks.web.")];
                let mut latencies = Vec::new();
                let mut buffer = [0u8; 4096];
                let mut id = (client as u16) << 12;
                while Instant::now() < deadline {
                    id = id.wrapping_add(1);
                    let mut bytes = questions[usize::from(id) % 2].clone();
                    bytes[..2].copy_from_slice(&id.to_be_bytes());
                    let sent = Instant::now();
                    socket.send(&bytes).expect("send");
                    loop {
                        let length = socket.recv(&mut buffer).expect("an answer within 1 s");
                        if length >= 2 && buffer[..2] == id.to_be_bytes() {
                            break;
                        }
                    }
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = client_threads
        .into_iter()
        .flat_map(|thread| thread.join().expect("client"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    server_thread.join().expect("server");
    drop(namespace);

    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies[index.min(latencies.len() - 1)]
    };
    println!(
        "where: {}; clients: {clients}; seconds: {seconds}",
        if root {
            "127.0.0.11:53 in a network namespace"
        } else {
            "127.0.0.1 (not root)"
        }
    );
    println!(
        "answers: {} ({:.0}/s); p50 {:?}; p99 {:?}; max {:?}",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        percentile(0.50),
        percentile(0.99),
        percentile(1.0),
    );
}
