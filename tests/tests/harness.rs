//! The multi-host harness's self-test, as root: three test hosts reach each other over their
//! private underlay and nothing else, a partition cuts one off and healing reconnects it, a
//! host's daemon runs in its own namespace with its own hostname and survives kill -9 with its
//! swarm, and dropping the cluster leaves nothing behind. Without root it prints why and checks
//! nothing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::{ClusterOptions, TestCluster, TestHost, skip_notice, wait_until};

/// How long a connection attempt waits before a host counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects from inside `from`'s namespace to `target`.
fn connect(from: &TestHost, target: SocketAddr) -> std::io::Result<()> {
    from.in_host_netns(|| TcpStream::connect_timeout(&target, CONNECT_TIMEOUT).map(drop))
}

/// The inode of a network namespace file, which identifies the namespace.
fn netns_inode(path: &str) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("stat {path}: {error}"))
        .ino()
}

#[test]
fn three_hosts_connect_partition_heal_restart_and_leave_nothing_behind() {
    let started = Instant::now();
    let Some(cluster) = TestCluster::start_or_skip(
        "three_hosts_connect_partition_heal_restart_and_leave_nothing_behind",
        ClusterOptions::new(3),
    ) else {
        return;
    };
    let footprint = cluster.footprint();
    let prefix = cluster.prefix().to_owned();
    let (h1, h2, h3) = (cluster.host(1), cluster.host(2), cluster.host(3));

    // Each daemon answers on its socket and runs inside its host's namespace, where the host's
    // underlay address sits on its veth.
    for host in cluster.hosts() {
        host.shoal_ok(&["container", "ls"]);
        let pid = host.daemon_pid().expect("the daemon runs");
        assert_eq!(
            netns_inode(&format!("/proc/{pid}/ns/net")),
            netns_inode(&host.netns_path().display().to_string()),
            "{}'s daemon is not in the host's network namespace",
            host.name()
        );
        let output = host.run_in_host("ip", &["-o", "-4", "addr", "show", "dev", "eth0"]);
        let addresses = String::from_utf8_lossy(&output.stdout);
        assert!(
            addresses.contains(&format!("{}/24", host.address())),
            "{}: {addresses}",
            host.name()
        );
    }

    // Hosts reach each other over the underlay; a partition cuts h2 off both ways while its
    // loopback keeps working; healing reconnects it.
    let listener = h2
        .in_host_netns(|| TcpListener::bind((h2.address(), 0)))
        .expect("listening on h2's underlay address");
    let on_h2 = listener.local_addr().expect("the listener's address");
    let loopback_listener = h2
        .in_host_netns(|| TcpListener::bind(("127.0.0.1", 0)))
        .expect("listening on h2's loopback");
    let on_h2_loopback = loopback_listener
        .local_addr()
        .expect("the listener's address");
    connect(h1, on_h2).expect("h1 reaches h2 over the underlay");
    connect(h3, on_h2).expect("h3 reaches h2 over the underlay");
    h2.partition();
    assert!(
        connect(h1, on_h2).is_err(),
        "h1 still reaches a partitioned h2"
    );
    let h1_listener = h1
        .in_host_netns(|| TcpListener::bind((h1.address(), 0)))
        .expect("listening on h1's underlay address");
    let on_h1 = h1_listener.local_addr().expect("the listener's address");
    assert!(
        connect(h2, on_h1).is_err(),
        "a partitioned h2 still reaches h1"
    );
    connect(h3, on_h1).expect("h3 reaches h1 while h2 is partitioned");
    connect(h2, on_h2_loopback).expect("a partitioned h2 still reaches its own loopback");
    h2.shoal_ok(&["container", "ls"]);
    h2.heal();
    connect(h1, on_h2).expect("h1 reaches h2 again after heal");
    h2.heal();

    // A swarm on h1's underlay address: its cluster port listens in h1's namespace, reachable
    // from h2 over the underlay, and the node carries the host's name as its hostname.
    let init = h1.swarm_init();
    assert!(init.contains("is now a manager"), "{init}");
    let cluster_port = SocketAddr::from((h1.address(), 2377));
    connect(h2, cluster_port).expect("h2 reaches h1's cluster port over the underlay");
    let nodes = h1.shoal_ok(&["node", "ls", "--format", "json"]);
    let node: Value = serde_json::from_str(nodes.trim()).expect("one node as JSON");
    assert_eq!(node["Hostname"], h1.name(), "{nodes}");

    // Containers under shims on two hosts, so teardown has shims and mounts to remove.
    h1.import_busybox();
    h2.import_busybox();
    h1.shoal_ok(&[
        "service",
        "create",
        "--name",
        "selftest",
        "--replicas",
        "2",
        "busybox",
        "sleep",
        "3600",
    ]);
    h2.shoal_ok(&["container", "run", "-d", "busybox", "sleep", "3600"]);
    let shims = footprint
        .leftovers()
        .into_iter()
        .filter(|found| found.contains(" shim "))
        .count();
    assert_eq!(
        shims,
        3,
        "expected one shim per container: {:#?}",
        footprint.leftovers()
    );

    // kill -9 and restart keep the swarm and the service.
    let before = h1.daemon_pid();
    h1.kill_daemon();
    assert_eq!(h1.daemon_pid(), None);
    assert!(!h1.shoal(&["container", "ls"]).status.success());
    h1.restart_daemon();
    assert_ne!(h1.daemon_pid(), before);
    wait_until(
        "h1's swarm and service back after kill -9",
        Duration::from_secs(30),
        || {
            let info = h1.shoal(&["info"]);
            let services = h1.shoal(&["service", "ls"]);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&info.stdout),
                String::from_utf8_lossy(&services.stdout)
            );
            if text.contains("Swarm: active") && text.contains("selftest") {
                Ok(())
            } else {
                Err(text)
            }
        },
    );

    drop(cluster);
    let leftovers = footprint.leftovers();
    assert!(leftovers.is_empty(), "left behind: {leftovers:#?}");
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(
        !namespaces.contains(&format!("{prefix}-")),
        "namespaces left: {namespaces}"
    );
    skip_notice(&format!("harness self-test took {:?}", started.elapsed()));
}
