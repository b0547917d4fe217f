//! As root: the routing mesh's table on a node, with real connections. The test builds its own
//! network namespaces: a node with a bridge standing for its leg on the ingress network, two
//! tasks on that bridge (each serving TCP port 80, answering its name and the address it sees
//! the client at, then echoing; UDP 5353 answering its name), and a client on a veth to the node.
//! It checks each traffic policy's path (`prefer-local` keeps the client's address, `cluster`
//! hides it behind the node's, `local` with no local task is refused at once), that a task
//! leaving the local map is element commands only and keeps an established connection, that UDP
//! goes through the mesh, that a connection from another node of the swarm is served by a local
//! task, or across the overlay when there is none, and never handed on, and that reconciling
//! twice changes nothing. Every namespace, and with
//! it every table, is deleted even when the test fails. Fails when not root.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use routing_mesh::mesh::{
    Crossing, Mesh, Observed, PublishedPort, TrafficPolicy, read_table, reconcile,
};
use routing_mesh::vip::{NftInNamespace, Protocol, TableAction, TableName, remove_table};

/// The node's address on the client's link: what the client connects to.
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// The node's address on its ingress leg: what the `cluster` path masquerades to.
const NODE_INGRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
const LOCAL_TASK: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 11);
/// Stands for a task on another node: only the `cluster` path may reach it.
const OTHER_TASK: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 12);

fn ip(namespace: Option<&str>, args: &[&str]) {
    let mut command = Command::new("ip");
    if let Some(namespace) = namespace {
        command.args(["-n", namespace]);
    }
    let output = command.args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The test's namespaces, all deleted on drop, a failing test included.
struct Namespaces {
    base: String,
    names: Vec<String>,
}

impl Namespaces {
    fn add(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.base);
        // A namespace left by an earlier run that was killed goes first.
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        ip(None, &["netns", "add", &name]);
        self.names.push(name.clone());
        ip(Some(&name), &["link", "set", "lo", "up"]);
        name
    }

    /// A veth between `left` (as `left_name`) and `right` (as `right_name`).
    fn link(&self, left: &str, left_name: &str, right: &str, right_name: &str) {
        ip(
            Some(left),
            &[
                "link", "add", left_name, "type", "veth", "peer", "name", right_name, "netns",
                right,
            ],
        );
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "delete", name]).output();
        }
    }
}

fn path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `work` inside the network namespace at `path`, through overlay-net's way in.
fn in_netns<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    overlay_net::netns::run_in(Some(path), work).expect("enter the network namespace")
}

/// Serves port 80 inside `netns`: each connection gets `name`, the client address it sees, and a
/// newline, then its own bytes echoed back. UDP port 5353 answers every datagram with `name`.
fn serve(netns: &Path, name: &'static str) {
    let udp = in_netns(netns, || UdpSocket::bind("0.0.0.0:5353")).expect("bind UDP");
    std::thread::spawn(move || {
        let mut buffer = [0; 256];
        while let Ok((_, from)) = udp.recv_from(&mut buffer) {
            let _ = udp.send_to(name.as_bytes(), from);
        }
    });
    let listener = in_netns(netns, || TcpListener::bind("0.0.0.0:80")).expect("listen");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let Ok(peer) = stream.peer_addr() else { return };
                if stream
                    .write_all(format!("{name} {}\n", peer.ip()).as_bytes())
                    .is_err()
                {
                    return;
                }
                let mut buffer = [0; 256];
                while let Ok(read) = stream.read(&mut buffer) {
                    if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn connect(netns: &Path, port: u16) -> io::Result<TcpStream> {
    let address = SocketAddrV4::new(NODE, port);
    let stream = in_netns(netns, move || {
        TcpStream::connect_timeout(&address.into(), Duration::from_secs(3))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0; 1];
    loop {
        stream.read_exact(&mut byte).expect("read a line");
        if byte[0] == b'\n' {
            return String::from_utf8(line).expect("UTF-8");
        }
        line.push(byte[0]);
    }
}

/// "task client-address" of each of `count` new connections to the node's `port`.
fn answers(netns: &Path, port: u16, count: usize) -> BTreeSet<String> {
    (0..count)
        .map(|_| read_line(&mut connect(netns, port).expect("connect through the mesh")))
        .collect()
}

fn published(
    protocol: Protocol,
    port: u16,
    policy: TrafficPolicy,
    local: &[Ipv4Addr],
    cluster: &[Ipv4Addr],
) -> PublishedPort {
    let target = if protocol == Protocol::Udp { 5353 } else { 80 };
    PublishedPort {
        protocol,
        port,
        policy,
        local: local
            .iter()
            .map(|a| SocketAddrV4::new(*a, target))
            .collect(),
        cluster: cluster
            .iter()
            .map(|a| SocketAddrV4::new(*a, target))
            .collect(),
        crossing: Crossing::Overlay,
    }
}

/// 8080 prefer-local, 8081 cluster, 8082 local, 8083 prefer-local with no local task, UDP 5300
/// cluster; `local` is what is ready on this node, `peers` the other nodes of the swarm.
fn mesh(local: &[Ipv4Addr], peers: &[Ipv4Addr]) -> Mesh {
    let both = [LOCAL_TASK, OTHER_TASK];
    let ports = vec![
        published(
            Protocol::Tcp,
            8080,
            TrafficPolicy::PreferLocal,
            local,
            &both,
        ),
        published(Protocol::Tcp, 8081, TrafficPolicy::Cluster, local, &both),
        published(Protocol::Tcp, 8082, TrafficPolicy::Local, &[], &both),
        published(
            Protocol::Tcp,
            8083,
            TrafficPolicy::PreferLocal,
            &[],
            &[OTHER_TASK],
        ),
        published(Protocol::Udp, 5300, TrafficPolicy::Cluster, &[], &both),
    ];
    Mesh {
        address: NODE,
        peers: peers.iter().copied().collect(),
        ports,
    }
}

#[test]
fn every_policy_takes_its_path_and_tasks_come_and_go_by_elements_only() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "mesh_netns programs nftables in network namespaces it creates: run it as root"
    );
    let mut namespaces = Namespaces {
        base: format!("smesh{}", std::process::id()),
        names: Vec::new(),
    };
    let node = namespaces.add("node");
    let client = namespaces.add("client");
    namespaces.link(&node, "eth0", &client, "eth0");
    ip(
        Some(&node),
        &["addr", "add", &format!("{NODE}/24"), "dev", "eth0"],
    );
    ip(Some(&node), &["link", "set", "eth0", "up"]);
    ip(
        Some(&client),
        &["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"],
    );
    ip(Some(&client), &["link", "set", "eth0", "up"]);
    ip(Some(&node), &["link", "add", "ingress", "type", "bridge"]);
    ip(
        Some(&node),
        &[
            "addr",
            "add",
            &format!("{NODE_INGRESS}/24"),
            "dev",
            "ingress",
        ],
    );
    ip(Some(&node), &["link", "set", "ingress", "up"]);
    let forwarding = Command::new("nsenter")
        .args([&format!("--net={}", path(&node).display()), "sysctl", "-qw"])
        .arg("net.ipv4.ip_forward=1")
        .status()
        .expect("run sysctl");
    assert!(
        forwarding.success(),
        "could not turn on forwarding in the node"
    );
    for (name, address) in [("t1", LOCAL_TASK), ("t2", OTHER_TASK)] {
        let task = namespaces.add(name);
        namespaces.link(&node, &format!("v{name}"), &task, "eth0");
        ip(
            Some(&node),
            &[
                "link",
                "set",
                &format!("v{name}"),
                "master",
                "ingress",
                "up",
            ],
        );
        ip(
            Some(&task),
            &["addr", "add", &format!("{address}/24"), "dev", "eth0"],
        );
        ip(Some(&task), &["link", "set", "eth0", "up"]);
        ip(
            Some(&task),
            &["route", "add", "default", "via", &NODE_INGRESS.to_string()],
        );
    }
    serve(&path(&format!("{}-t1", namespaces.base)), "t1");
    serve(&path(&format!("{}-t2", namespaces.base)), "t2");
    let node_path = path(&node);
    let client_path = path(&client);
    let nft = NftInNamespace::default();
    let table = TableName::new(&format!("shoaltest_{}", std::process::id())).expect("table name");

    let change = reconcile(&nft, &node_path, &table, &mesh(&[LOCAL_TASK], &[])).expect("create");
    assert_eq!(change.table, TableAction::Create);
    let again = reconcile(&nft, &node_path, &table, &mesh(&[LOCAL_TASK], &[])).expect("again");
    assert!(again.is_empty(), "a second reconcile changed {again:?}");

    // prefer-local with a ready local task: only that task, and it sees the client.
    assert_eq!(
        answers(&client_path, 8080, 20),
        BTreeSet::from([format!("t1 {CLIENT}")])
    );
    // cluster: every task, each seeing the node's ingress address instead of the client's.
    assert_eq!(
        answers(&client_path, 8081, 30),
        BTreeSet::from([format!("t1 {NODE_INGRESS}"), format!("t2 {NODE_INGRESS}")])
    );
    // prefer-local with no local task falls through to the cluster path.
    assert_eq!(
        answers(&client_path, 8083, 10),
        BTreeSet::from([format!("t2 {NODE_INGRESS}")])
    );
    // local with no local task: refused at once (connect gives up after 3 s with TimedOut).
    let refused = connect(&client_path, 8082).expect_err("refused");
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    // UDP through the mesh reaches both tasks.
    let udp_names: BTreeSet<String> = (0..30)
        .map(|_| {
            let socket = in_netns(&client_path, || UdpSocket::bind("0.0.0.0:0")).expect("socket");
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            socket
                .send_to(b"who?", SocketAddrV4::new(NODE, 5300))
                .expect("send");
            let mut buffer = [0; 64];
            let (read, _) = socket.recv_from(&mut buffer).expect("a UDP answer");
            String::from_utf8_lossy(&buffer[..read]).into_owned()
        })
        .collect();
    assert_eq!(
        udp_names,
        BTreeSet::from(["t1".to_owned(), "t2".to_owned()])
    );

    // The local task stops being ready: element commands only; its established connection
    // goes on, and new ones take the cluster path.
    let mut kept = connect(&client_path, 8080).expect("connect");
    assert_eq!(read_line(&mut kept), format!("t1 {CLIENT}"));
    let change = reconcile(&nft, &node_path, &table, &mesh(&[], &[])).expect("t1 not ready");
    assert!(
        change.table == TableAction::Keep && !change.is_empty(),
        "{change:?}"
    );
    kept.write_all(b"still here\n")
        .expect("write on the kept connection");
    assert_eq!(read_line(&mut kept), "still here");
    let after: BTreeSet<String> = answers(&client_path, 8080, 30);
    assert!(
        after
            .iter()
            .all(|answer| answer.ends_with(&NODE_INGRESS.to_string())),
        "with no ready local task, prefer-local goes through the cluster path: {after:?}"
    );

    // The client stands for another node of the swarm, handing connections on: each is served
    // by the local task as it is, whatever the port's policy, or across the overlay when no
    // task here is ready, and never handed on again.
    let change =
        reconcile(&nft, &node_path, &table, &mesh(&[LOCAL_TASK], &[CLIENT])).expect("a peer");
    assert_eq!(change.table, TableAction::Keep, "{change:?}");
    for port in [8080, 8081] {
        assert_eq!(
            answers(&client_path, port, 20),
            BTreeSet::from([format!("t1 {CLIENT}")]),
            "port {port} from a peer"
        );
    }
    assert_eq!(
        answers(&client_path, 8083, 10),
        BTreeSet::from([format!("t2 {NODE_INGRESS}")])
    );

    remove_table(&nft, &node_path, &table).expect("remove the table");
    assert_eq!(
        read_table(&nft, &node_path, &table).expect("read"),
        Observed::Absent
    );
}
