//! As root: VIP load balancing through a real nftables table. The test builds its own network
//! namespaces: one holding a bridge, three backend "tasks" each serving TCP port 80 (answering
//! its own name, then echoing; UDP 5353 answering its name), and a client task whose namespace
//! gets the VIP table. It checks that connections to VIP:80, and UDP flows to a VIP serving every
//! port, reach every backend, that removing a backend is element commands
//! only, keeps an established connection to another backend and sends no new connection to the
//! removed one, that a task reaches itself through its own VIP, and that zero backends or an
//! unserved port are refused at once. Every namespace (and with it every table) is deleted even
//! when the test fails. Fails when not root: it has nothing to check without.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use routing_mesh::vip::{
    NftInNamespace, Observed, Protocol, TableAction, TableName, VipPorts, VipService, read_table,
    reconcile, remove_table,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The VIP of a second service, on every port, with the same three backends.
const ANY_PORT_VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const BACKENDS: [(&str, Ipv4Addr); 3] = [
    ("b1", Ipv4Addr::new(10, 77, 0, 11)),
    ("b2", Ipv4Addr::new(10, 77, 0, 12)),
    ("b3", Ipv4Addr::new(10, 77, 0, 13)),
];
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The test's namespaces: `<base>-net` with bridge `br0`, and one per task with `eth0` on the
/// bridge. All deleted on drop, a failing test included.
struct Overlay {
    base: String,
    names: Vec<String>,
}

impl Overlay {
    fn create(base: &str) -> Overlay {
        let mut overlay = Overlay {
            base: base.to_owned(),
            names: Vec::new(),
        };
        let net = overlay.add_namespace("net");
        ip(&["-n", &net, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &net, "link", "set", "br0", "up"]);
        overlay
    }

    fn add_namespace(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.base);
        // A namespace left by an earlier run that was killed goes first.
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        ip(&["netns", "add", &name]);
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A task namespace with `address`/24 on a veth attached to the bridge.
    fn add_task(&mut self, suffix: &str, address: Ipv4Addr) -> PathBuf {
        let name = self.add_namespace(suffix);
        let net = format!("{}-net", self.base);
        let port = format!("v{}", self.names.len());
        ip(&[
            "-n", &net, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &name,
        ]);
        ip(&["-n", &net, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        Path::new("/run/netns").join(name)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "delete", name]).output();
        }
    }
}

/// Runs `work` inside the network namespace at `path`, through overlay-net's way in.
fn in_netns<T: Send + 'static>(
    path: &std::path::Path,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    overlay_net::netns::run_in(Some(path), work).expect("enter the network namespace")
}

/// Serves port 80 inside `netns`: each connection gets `name` and a newline, then its own bytes
/// echoed back until it closes. UDP port 5353 answers every datagram with `name`.
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
                if stream.write_all(format!("{name}\n").as_bytes()).is_err() {
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

/// Connects to `address` from inside `netns`.
fn connect(netns: &Path, address: SocketAddrV4) -> io::Result<TcpStream> {
    let stream = in_netns(netns, move || {
        TcpStream::connect_timeout(&address.into(), Duration::from_secs(3))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// Which backend answers one datagram to `address`, sent from a fresh socket in `netns` (a new
/// flow each time).
fn udp_answer(netns: &Path, address: SocketAddrV4) -> String {
    let socket = in_netns(netns, || UdpSocket::bind("0.0.0.0:0")).expect("UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket.send_to(b"who?", address).expect("send");
    let mut buffer = [0; 256];
    let (read, _) = socket.recv_from(&mut buffer).expect("an answer");
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

/// Reads one line (without its newline).
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

/// Which backend answers each of `count` new connections to VIP:80 from `netns`.
fn answers(netns: &Path, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            let mut stream = connect(netns, SocketAddrV4::new(VIP, 80)).expect("connect to VIP");
            read_line(&mut stream)
        })
        .collect()
}

/// `web` on VIP:80 only with `backends`, and a service on every port of [`ANY_PORT_VIP`] with all
/// three backends.
fn web(backends: &[Ipv4Addr]) -> Vec<VipService> {
    vec![
        VipService {
            vip: VIP,
            ports: VipPorts::Only([(Protocol::Tcp, 80)].into_iter().collect()),
            backends: backends.iter().copied().collect(),
        },
        VipService {
            vip: ANY_PORT_VIP,
            ports: VipPorts::All,
            backends: BACKENDS.iter().map(|(_, address)| *address).collect(),
        },
    ]
}

/// Refused, not left to time out: `connect` gives up after 3 s with TimedOut, so a refusal
/// means a reset came back.
fn assert_refused_fast(netns: &Path, port: u16) {
    let error = connect(netns, SocketAddrV4::new(VIP, port)).expect_err("refused");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
}

#[test]
fn vip_balances_across_backends_and_follows_them_by_elements_only() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "vip_netns programs nftables in network namespaces it creates: run it as root"
    );
    let pid = std::process::id();
    let mut overlay = Overlay::create(&format!("svip{pid}"));
    let backend_paths: Vec<PathBuf> = BACKENDS
        .iter()
        .map(|(name, address)| overlay.add_task(name, *address))
        .collect();
    let client = overlay.add_task("c", CLIENT);
    for ((name, _), path) in BACKENDS.iter().zip(&backend_paths) {
        serve(path, name);
    }
    let nft = NftInNamespace::default();
    let table = TableName::new(&format!("shoaltest_{pid}")).expect("table name");
    let all: Vec<Ipv4Addr> = BACKENDS.iter().map(|(_, address)| *address).collect();

    let change = reconcile(&nft, &client, &table, &web(&all)).expect("create the table");
    assert_eq!(change.table, TableAction::Create);
    let again = reconcile(&nft, &client, &table, &web(&all)).expect("reconcile again");
    assert!(again.is_empty(), "a second reconcile changed {again:?}");

    let names: BTreeSet<String> = answers(&client, 30).into_iter().collect();
    assert_eq!(
        names,
        ["b1", "b2", "b3"].into_iter().map(str::to_owned).collect(),
        "30 connections to the VIP reach every backend"
    );

    // A VIP serving every port: UDP flows are balanced too, and TCP reaches port 80 through it.
    let names: BTreeSet<String> = (0..30)
        .map(|_| udp_answer(&client, SocketAddrV4::new(ANY_PORT_VIP, 5353)))
        .collect();
    assert_eq!(
        names.len(),
        3,
        "30 UDP flows reach every backend: {names:?}"
    );
    let mut stream = connect(&client, SocketAddrV4::new(ANY_PORT_VIP, 80)).expect("connect");
    assert!(read_line(&mut stream).starts_with('b'));

    // An established connection, and a backend other than its own removed.
    let mut kept = connect(&client, SocketAddrV4::new(VIP, 80)).expect("connect");
    let kept_name = read_line(&mut kept);
    let (removed_name, removed_address) = *BACKENDS
        .iter()
        .find(|(name, _)| *name != kept_name)
        .expect("another backend");
    let remaining: Vec<Ipv4Addr> = all
        .iter()
        .copied()
        .filter(|a| *a != removed_address)
        .collect();
    let change = reconcile(&nft, &client, &table, &web(&remaining)).expect("remove a backend");
    assert!(
        change.elements_only() && !change.is_empty(),
        "removing a backend is element commands only: {change:?}"
    );
    kept.write_all(b"still here\n")
        .expect("write on the kept connection");
    assert_eq!(read_line(&mut kept), "still here");
    let names: BTreeSet<String> = answers(&client, 30).into_iter().collect();
    assert!(
        !names.contains(removed_name),
        "a new connection reached the removed backend {removed_name}"
    );
    assert_eq!(names.len(), 2, "both remaining backends answer: {names:?}");
    kept.write_all(b"and now\n")
        .expect("write on the kept connection");
    assert_eq!(read_line(&mut kept), "and now");

    // A port the service does not serve, and then no backend at all: refused, not hung.
    assert_refused_fast(&client, 81);
    let change = reconcile(&nft, &client, &table, &web(&[])).expect("no backends");
    assert!(change.elements_only(), "{change:?}");
    assert_refused_fast(&client, 80);

    // A task reaches itself through its own service's VIP (the DNAT goes to its own address).
    let b1 = &backend_paths[0];
    reconcile(&nft, b1, &table, &web(&all)).expect("table in a backend");
    let names: BTreeSet<String> = answers(b1, 30).into_iter().collect();
    assert!(names.contains("b1"), "b1 never reached itself: {names:?}");
    assert_eq!(names.len(), 3, "{names:?}");

    remove_table(&nft, &client, &table).expect("remove the table");
    assert_eq!(
        read_table(&nft, &client, &table).expect("read"),
        Observed::Absent
    );
    remove_table(&nft, &client, &table).expect("removing it twice is fine");
}
