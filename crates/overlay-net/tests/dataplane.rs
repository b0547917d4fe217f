//! Root tests of the data plane on real namespaces: hosts are network namespaces on a test
//! switch, each with its own instance; tasks reach each other across VXLAN, reach the test
//! underlay through the gateway bridge, a node's own underlay reaches them through its host
//! leg, and the node converges after moves, removals and restarts. Every namespace is this run's own (named with its prefix) and goes at the end.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use overlay_net::apply::{observe, reconcile, reconcile_since};
use overlay_net::diff::Change;
use overlay_net::plan::{LinkKey, Netns};
use overlay_net::{
    DEFAULT_VXLAN_PORT, Desired, HostLeg, Ipv4Cidr, LocalEndpoint, LocalTask, Mac, Network,
    NodeConfig, RemotePeer, netns, plan,
};

/// Removes every namespace named with the run's prefix (their links, VXLAN devices and nftables
/// tables go with them), also when the test panics.
struct Cleanup {
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in netns::list(&self.prefix).unwrap_or_default() {
            let _ = netns::delete(&name);
        }
    }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests make network namespaces and links: run them as root"
    );
}

/// A prefix no other run uses: 't', then 4 hex digits of time and process id.
fn run_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t{:04x}",
        (nanos ^ std::process::id().rotate_left(7)) & 0xffff
    )
}

/// Runs a command inside the named namespace; panics with its output when it fails.
fn sh(ns: &str, args: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(args.split_whitespace())
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "nsenter --net=/run/netns/{ns} {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell `script` in network namespace `ns` with that namespace's sysfs at /sys (in a
/// mount namespace of its own), and returns its output, trimmed.
fn with_sysfs(ns: &str, script: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["unshare", "--mount", "sh", "-c"])
        .arg(format!("mount -t sysfs sysfs /sys && {script}"))
        .output()
        .expect("run nsenter");
    assert!(out.status.success(), "{script} in {ns}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test's hosts: a switch namespace, and per host an underlay namespace on it and a task
/// namespace.
struct Lab {
    p: String,
}

impl Lab {
    fn new(p: &str, hosts: &[char]) -> Lab {
        let lab = Lab { p: p.to_string() };
        netns::create(&lab.switch()).unwrap();
        sh(&lab.switch(), "ip link add sw0 type bridge");
        sh(&lab.switch(), "ip link set sw0 up");
        for (i, h) in hosts.iter().enumerate() {
            netns::create(&lab.host(*h)).unwrap();
            netns::create(&lab.task_ns(*h)).unwrap();
            sh(
                &lab.switch(),
                &format!(
                    "ip link add port{h} type veth peer name eth0 netns {}",
                    lab.host(*h)
                ),
            );
            sh(&lab.switch(), &format!("ip link set port{h} master sw0 up"));
            sh(
                &lab.host(*h),
                &format!("ip addr add {}/24 dev eth0", underlay_ip(i)),
            );
            sh(&lab.host(*h), "ip link set eth0 up");
            sh(&lab.host(*h), "ip link set lo up");
            sh(&lab.task_ns(*h), "ip link set lo up");
        }
        lab
    }

    fn switch(&self) -> String {
        format!("{}sw", self.p)
    }
    fn host(&self, h: char) -> String {
        format!("{}h{h}", self.p)
    }
    fn task_ns(&self, h: char) -> String {
        format!("{}t{h}", self.p)
    }
}

fn underlay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 1 + i as u8)
}

fn task_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 90, 0, 11 + i as u8)
}

fn cidr(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(addr, prefix).unwrap()
}

fn network(internal: bool) -> Network {
    Network {
        id: "n1".into(),
        vni: 4097,
        gateway: cidr(Ipv4Addr::new(10, 90, 0, 1), 24),
        internal,
        encrypted: false,
    }
}

/// Host `h` (number `i` on the switch) with its task, whose address is `task_ip(addr_of)`, on
/// the network, and `peers` (host numbers whose tasks are elsewhere).
fn desired(
    lab: &Lab,
    h: char,
    i: usize,
    addr_of: usize,
    internal: bool,
    peers: &[(usize, usize)],
) -> Desired {
    let task_id = format!("task{h}0000000000000000000");
    Desired {
        config: NodeConfig {
            prefix: format!("{}{h}", lab.p),
            underlay_netns: Some(netns::path(&lab.host(h))),
            vtep: underlay_ip(i),
            underlay_mtu: 1500,
            vxlan_port: DEFAULT_VXLAN_PORT,
            gwbridge: cidr(Ipv4Addr::new(172, 30, 0, 0), 24),
        },
        networks: vec![network(internal)],
        tasks: vec![LocalTask {
            id: task_id.clone(),
            netns: netns::path(&lab.task_ns(h)),
            egress: (!internal).then(|| Ipv4Addr::new(172, 30, 0, 2)),
        }],
        endpoints: vec![LocalEndpoint {
            task_id,
            network_id: "n1".into(),
            address: cidr(task_ip(addr_of), 24),
            mac: Mac::for_ipv4(task_ip(addr_of)),
            interface: "eth0".into(),
        }],
        peers: peers
            .iter()
            .map(|&(addr_of, host)| RemotePeer {
                network_id: "n1".into(),
                address: task_ip(addr_of),
                mac: Mac::for_ipv4(task_ip(addr_of)),
                vtep: underlay_ip(host),
            })
            .collect(),
        host_legs: Vec::new(),
    }
}

/// Nothing on host `h` for this instance.
fn empty(lab: &Lab, h: char, i: usize) -> Desired {
    let mut d = desired(lab, h, i, i, false, &[]);
    d.networks.clear();
    d.tasks.clear();
    d.endpoints.clear();
    d
}

fn udp_in(ns: &str, bind: SocketAddr) -> UdpSocket {
    let socket = netns::run_in(Some(&netns::path(ns)), move || UdpSocket::bind(bind))
        .unwrap()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    socket
}

/// Sends datagrams from namespace `from` to `to` until one arrives on a socket bound in
/// namespace `at` (or 3 s pass); returns the source address the receiver saw.
fn reach(from: &str, at: &str, to: Ipv4Addr, port: u16) -> Option<Ipv4Addr> {
    let rx = udp_in(at, SocketAddr::from(([0, 0, 0, 0], port)));
    let tx = udp_in(from, SocketAddr::from(([0, 0, 0, 0], 0)));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        // Unreachable (no route) shows as a send error: keep trying until the deadline.
        let _ = tx.send_to(b"hello", (to, port));
        if let Ok((n, src)) = rx.recv_from(&mut buf)
            && &buf[..n] == b"hello"
            && let SocketAddr::V4(src) = src
        {
            return Some(*src.ip());
        }
    }
    None
}

/// Sends `len` bytes of UDP payload with the don't-fragment bit (as `ping -M do`): the local
/// error the kernel gives when the packet is bigger than the path MTU, or Ok.
fn send_df(from: &str, to: Ipv4Addr, len: usize) -> std::io::Result<usize> {
    let tx = udp_in(from, SocketAddr::from(([0, 0, 0, 0], 0)));
    let on: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: the socket is open for the whole call and the option value is a c_int that lives
    // on the stack for its duration, with its true size.
    let rc = unsafe {
        libc::setsockopt(
            tx.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "set IP_MTU_DISCOVER");
    tx.send_to(&vec![0u8; len], (to, 9))
}

fn fdb_and_neigh(changes: &[Change]) -> Vec<&Change> {
    changes
        .iter()
        .filter(|c| {
            matches!(
                c,
                Change::ReplaceFdb { .. }
                    | Change::ReplaceNeigh { .. }
                    | Change::DelFdb { .. }
                    | Change::DelNeigh { .. }
            )
        })
        .collect()
}

#[test]
fn tasks_on_two_hosts_talk_across_vxlan_and_converge() {
    require_root();
    let p = run_prefix();
    let _cleanup = Cleanup { prefix: p.clone() };
    let lab = Lab::new(&p, &['a', 'b', 'c']);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // a (task 0) and b (task 1) see each other.
    let a = desired(&lab, 'a', 0, 0, false, &[(1, 1)]);
    let b = desired(&lab, 'b', 1, 1, false, &[(0, 0)]);
    assert!(!rt.block_on(reconcile(&a)).unwrap().is_empty());
    assert!(!rt.block_on(reconcile(&b)).unwrap().is_empty());

    assert_eq!(
        reach(&lab.task_ns('a'), &lab.task_ns('b'), task_ip(1), 7001),
        Some(task_ip(0)),
        "task a reaches task b across VXLAN, from its overlay address"
    );
    assert_eq!(
        reach(&lab.task_ns('b'), &lab.task_ns('a'), task_ip(0), 7002),
        Some(task_ip(1))
    );

    // The overlay's MTU is the underlay's less 50, and a don't-fragment datagram of exactly
    // that size goes while one byte more fails locally (as ping -M do -s 1422 / 1423).
    let link = sh(&lab.task_ns('a'), "ip -o link show eth0");
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(
        link.contains(&Mac::for_ipv4(task_ip(0)).to_string()),
        "{link}"
    );
    let rx = udp_in(&lab.task_ns('b'), SocketAddr::from(([0, 0, 0, 0], 9)));
    assert_eq!(send_df(&lab.task_ns('a'), task_ip(1), 1422).unwrap(), 1422);
    let mut buf = [0u8; 2048];
    let (n, _) = rx
        .recv_from(&mut buf)
        .expect("the 1450-byte packet crosses VXLAN whole");
    assert_eq!(n, 1422);
    let too_big = send_df(&lab.task_ns('a'), task_ip(1), 1423).unwrap_err();
    assert_eq!(too_big.raw_os_error(), Some(libc::EMSGSIZE));

    // The VXLAN device as Docker makes it, with its UDP socket in the underlay namespace, and
    // the peer's entries permanent.
    let vxlan = sh(
        &format!("{p}a-n1"),
        &format!("ip -d -o link show {p}a-x001001"),
    );
    for want in [
        "mtu 1450",
        "vxlan id 4097",
        "local 10.77.0.1",
        "dstport 4789",
        "nolearning",
        "proxy",
        "master br0",
    ] {
        assert!(vxlan.contains(want), "{want} in {vxlan}");
    }
    let sockets = sh(&lab.host('a'), "ss -Hlun");
    assert!(sockets.contains(":4789"), "{sockets}");
    let fdb = sh(
        &format!("{p}a-n1"),
        &format!("bridge fdb show dev {p}a-x001001"),
    );
    assert!(
        fdb.lines()
            .any(|l| l.contains(&Mac::for_ipv4(task_ip(1)).to_string())
                && l.contains("dst 10.77.0.2")
                && l.contains("self permanent")),
        "{fdb}"
    );
    let neigh = sh(
        &format!("{p}a-n1"),
        &format!("ip neigh show dev {p}a-x001001"),
    );
    assert!(
        neigh.contains(&format!(
            "10.90.0.12 lladdr {} PERMANENT",
            Mac::for_ipv4(task_ip(1))
        )),
        "{neigh}"
    );

    // The network's bridge forwards frames without netfilter, whatever the kernel's default.
    let net_ns = format!("{p}a-n1");
    let nf_calls = "cat /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/bridge/bridge-nf-call-ip6tables /proc/sys/net/bridge/bridge-nf-call-arptables";
    let calls = sh(&net_ns, nf_calls);
    assert!(calls.split_whitespace().all(|v| v == "0"), "{calls}");

    // Applying again changes nothing.
    assert_eq!(rt.block_on(reconcile(&a)).unwrap(), vec![]);
    assert_eq!(rt.block_on(reconcile(&b)).unwrap(), vec![]);

    // Someone turned netfilter back on for the bridge: the next reconcile turns it off, and
    // does nothing else.
    sh(&net_ns, "sysctl -q -w net.bridge.bridge-nf-call-iptables=1");
    assert_eq!(
        rt.block_on(reconcile(&a)).unwrap(),
        vec![Change::UnfilterBridge(net_ns.clone())]
    );
    let calls = sh(&net_ns, nf_calls);
    assert!(calls.split_whitespace().all(|v| v == "0"), "{calls}");

    // What the tunnel receives is spread over the machine's CPUs, and so is what the task sends
    // into its gateway leg (not into its overlay leg); set back to none, the next reconcile
    // spreads it again, and does nothing else.
    let rps_of = |link: &str| format!("/sys/class/net/{link}/queues/rx-0/rps_cpus");
    let steering = |ns: &str, start: &str| {
        let links = links_starting(ns, start);
        assert_eq!(links.len(), 1, "{links:?} in {ns}");
        with_sysfs(ns, &format!("cat {}", rps_of(&links[0])))
    };
    let gateway_leg = steering(&lab.host('a'), &format!("{p}a-gtask"));
    assert!(
        !gateway_leg.trim_matches(['0', ',']).is_empty(),
        "{gateway_leg}"
    );
    let overlay_leg = steering(&net_ns, "vetask");
    assert!(
        overlay_leg.trim_matches(['0', ',']).is_empty(),
        "{overlay_leg}"
    );
    let tunnel = format!("{p}a-x001001");
    let rps_cpus = rps_of(&tunnel);
    let spread = with_sysfs(&net_ns, &format!("cat {rps_cpus}"));
    assert!(
        !spread.trim_matches(['0', ',']).is_empty(),
        "rps_cpus {spread}"
    );
    with_sysfs(&net_ns, &format!("echo 0 > {rps_cpus}"));
    assert_eq!(
        rt.block_on(reconcile(&a)).unwrap(),
        vec![Change::SteerLink(LinkKey {
            ns: Netns::Named(net_ns.clone()),
            name: tunnel.clone(),
        })]
    );
    assert_eq!(with_sysfs(&net_ns, &format!("cat {rps_cpus}")), spread);

    // Egress: task a reaches host b's underlay address through the gateway bridge, masqueraded
    // to host a's underlay address.
    assert_eq!(
        reach(&lab.task_ns('a'), &lab.host('b'), underlay_ip(1), 7003),
        Some(underlay_ip(0))
    );

    // The task moves from b to c: b drops it, c runs it, and a's entry for it is replaced in
    // place with c's VTEP.
    rt.block_on(reconcile(&empty(&lab, 'b', 1))).unwrap();
    let c = desired(&lab, 'c', 2, 1, false, &[(0, 0)]);
    rt.block_on(reconcile(&c)).unwrap();
    let a_moved = desired(&lab, 'a', 0, 0, false, &[(1, 2)]);
    let changes = rt.block_on(reconcile(&a_moved)).unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        matches!(&changes[0], Change::ReplaceFdb { vtep, .. } if *vtep == underlay_ip(2)),
        "{changes:?}"
    );
    assert_eq!(
        reach(&lab.task_ns('a'), &lab.task_ns('c'), task_ip(1), 7004),
        Some(task_ip(0))
    );
    // Nothing of b's instance is left on host b.
    let leftover = sh(&lab.host('b'), "ip -o link show");
    assert!(!leftover.contains(&format!("{p}b-")), "{leftover}");
    assert!(netns::list(&format!("{p}b-")).unwrap().is_empty());

    // A restart: new runtime (a single-threaded one, as a daemon may run), nothing kept in
    // memory; observing finds everything in place.
    drop(rt);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(reconcile(&a_moved)).unwrap(), vec![]);
    assert_eq!(rt.block_on(reconcile(&c)).unwrap(), vec![]);

    // The peer goes: its FDB and neighbour entries go, and it is no longer reached.
    let alone = desired(&lab, 'a', 0, 0, false, &[]);
    let changes = rt.block_on(reconcile(&alone)).unwrap();
    assert_eq!(fdb_and_neigh(&changes).len(), 2, "{changes:?}");
    assert_eq!(changes.len(), 2, "{changes:?}");
    let planned = plan(&alone).unwrap();
    let seen = rt.block_on(observe(&alone.config, &planned)).unwrap();
    assert!(seen.fdb.is_empty() && seen.neigh.is_empty(), "{seen:?}");
    let fdb = sh(
        &format!("{p}a-n1"),
        &format!("bridge fdb show dev {p}a-x001001"),
    );
    // The bridge may still have learned the MAC on the VXLAN port; the device's own entry (the
    // one with a destination VTEP) is what must be gone.
    let mac = Mac::for_ipv4(task_ip(1)).to_string();
    assert!(
        !fdb.lines().any(|l| l.contains(&mac) && l.contains("dst")),
        "{fdb}"
    );
    assert_eq!(
        reach(&lab.task_ns('a'), &lab.task_ns('c'), task_ip(1), 7005),
        None
    );
}

#[test]
fn an_internal_network_has_no_way_out() {
    require_root();
    let p = run_prefix();
    let _cleanup = Cleanup { prefix: p.clone() };
    let lab = Lab::new(&p, &['a', 'b']);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = desired(&lab, 'a', 0, 0, true, &[(1, 1)]);
    let b = desired(&lab, 'b', 1, 1, true, &[(0, 0)]);
    rt.block_on(reconcile(&a)).unwrap();
    rt.block_on(reconcile(&b)).unwrap();

    // The tasks still reach each other over the overlay...
    assert_eq!(
        reach(&lab.task_ns('a'), &lab.task_ns('b'), task_ip(1), 7101),
        Some(task_ip(0))
    );
    // ...but have no route out, no gateway bridge and no masquerade table.
    assert_eq!(
        reach(&lab.task_ns('a'), &lab.host('b'), underlay_ip(1), 7102),
        None
    );
    let routes = sh(&lab.task_ns('a'), "ip route show default");
    assert!(routes.trim().is_empty(), "{routes}");
    let links = sh(&lab.host('a'), "ip -o link show");
    assert!(!links.contains(&format!("{p}a-gw")), "{links}");
    let tables = sh(&lab.host('a'), "nft list tables");
    assert!(!tables.contains(&format!("{p}a_nat")), "{tables}");
}

#[test]
fn a_task_whose_namespace_is_gone_does_not_hold_up_the_others() {
    require_root();
    let p = run_prefix();
    let _cleanup = Cleanup { prefix: p.clone() };
    let lab = Lab::new(&p, &['a', 'b']);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Host a also lists a task whose namespace no longer exists (it ended meanwhile).
    let mut a = desired(&lab, 'a', 0, 0, false, &[(1, 1)]);
    a.tasks.push(LocalTask {
        id: "ghost0000000000000000000".into(),
        netns: netns::path(&format!("{p}gone")),
        egress: Some(Ipv4Addr::new(172, 30, 0, 3)),
    });
    a.endpoints.push(LocalEndpoint {
        task_id: "ghost0000000000000000000".into(),
        network_id: "n1".into(),
        address: cidr(task_ip(5), 24),
        mac: Mac::for_ipv4(task_ip(5)),
        interface: "eth0".into(),
    });
    let b = desired(&lab, 'b', 1, 1, false, &[(0, 0)]);
    let err = rt.block_on(reconcile(&a)).unwrap_err();
    rt.block_on(reconcile(&b)).unwrap();
    // Everything else on host a was made: its live task reaches b's.
    assert_eq!(
        reach(&lab.task_ns('a'), &lab.task_ns('b'), task_ip(1), 7201),
        Some(task_ip(0)),
        "{err}"
    );
    // The failures are all the gone task's, and say so.
    let gone = format!("{p}gone");
    assert!(
        matches!(&err, overlay_net::Error::Apply { failures, .. }
            if !failures.is_empty() && failures.iter().all(|f| f.contains(&gone))),
        "{err}"
    );
}

#[test]
fn a_task_on_two_networks_reaches_peers_on_both() {
    require_root();
    let p = run_prefix();
    let _cleanup = Cleanup { prefix: p.clone() };
    let lab = Lab::new(&p, &['a', 'b']);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let second = Network {
        id: "n2".into(),
        vni: 4098,
        gateway: cidr(Ipv4Addr::new(10, 91, 0, 1), 24),
        internal: true,
        encrypted: false,
    };
    let on_n2 = |i: usize| Ipv4Addr::new(10, 91, 0, 11 + i as u8);
    let with_second = |mut d: Desired, i: usize, other: usize| {
        d.networks.push(second.clone());
        d.endpoints.push(LocalEndpoint {
            task_id: d.tasks[0].id.clone(),
            network_id: "n2".into(),
            address: cidr(on_n2(i), 24),
            mac: Mac::for_ipv4(on_n2(i)),
            interface: "eth1".into(),
        });
        d.peers.push(RemotePeer {
            network_id: "n2".into(),
            address: on_n2(other),
            mac: Mac::for_ipv4(on_n2(other)),
            vtep: underlay_ip(other),
        });
        d
    };
    let a = with_second(desired(&lab, 'a', 0, 0, false, &[(1, 1)]), 0, 1);
    let b = with_second(desired(&lab, 'b', 1, 1, false, &[(0, 0)]), 1, 0);
    rt.block_on(reconcile(&a)).unwrap();
    rt.block_on(reconcile(&b)).unwrap();

    // Two VXLAN devices share port 4789 in one underlay, each in its network's namespace.
    assert_eq!(
        reach(&lab.task_ns('a'), &lab.task_ns('b'), task_ip(1), 7301),
        Some(task_ip(0))
    );
    assert_eq!(
        reach(&lab.task_ns('a'), &lab.task_ns('b'), on_n2(1), 7302),
        Some(on_n2(0))
    );
    // eth0 and eth1 are the overlays, eth2 the way out, the default route through it.
    let route = sh(&lab.task_ns('a'), "ip route show default");
    assert!(route.contains("via 172.30.0.1 dev eth2"), "{route}");
    assert_eq!(rt.block_on(reconcile(&a)).unwrap(), vec![]);
}

/// A node's host-leg address on the network: 10.90.0.101 for host number 0.
fn leg_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 90, 0, 101 + i as u8)
}

fn host_leg(i: usize) -> HostLeg {
    HostLeg {
        network_id: "n1".into(),
        address: cidr(leg_ip(i), 24),
    }
}

/// Something at `address` on n1 behind host number `host`'s VTEP.
fn peer_at(address: Ipv4Addr, host: usize) -> RemotePeer {
    RemotePeer {
        network_id: "n1".into(),
        address,
        mac: Mac::for_ipv4(address),
        vtep: underlay_ip(host),
    }
}

/// The names of the links in namespace `ns` that start with `start`.
fn links_starting(ns: &str, start: &str) -> Vec<String> {
    sh(ns, "ip -o link show")
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|name| name.starts_with(start))
        .collect()
}

#[test]
fn a_host_leg_takes_the_node_s_own_namespace_into_the_network() {
    require_root();
    let p = run_prefix();
    let _cleanup = Cleanup { prefix: p.clone() };
    let lab = Lab::new(&p, &['a', 'b']);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Host a has no task, only its leg on n1; host b has the task (task_ip(1)) and its own leg.
    // Each sees the other's leg as a peer, and a sees the task.
    let mut a = empty(&lab, 'a', 0);
    a.networks.push(network(false));
    a.host_legs.push(host_leg(0));
    a.peers = vec![peer_at(task_ip(1), 1), peer_at(leg_ip(1), 1)];
    let mut b = desired(&lab, 'b', 1, 1, false, &[]);
    b.host_legs.push(host_leg(1));
    b.peers = vec![peer_at(leg_ip(0), 0)];
    assert!(!rt.block_on(reconcile(&a)).unwrap().is_empty());
    assert!(!rt.block_on(reconcile(&b)).unwrap().is_empty());

    // From a's own namespace to the task on b, across VXLAN, from a's leg address; and back.
    assert_eq!(
        reach(&lab.host('a'), &lab.task_ns('b'), task_ip(1), 7401),
        Some(leg_ip(0)),
        "host a's underlay reaches the task on b through its leg"
    );
    assert_eq!(
        reach(&lab.task_ns('b'), &lab.host('a'), leg_ip(0), 7402),
        Some(task_ip(1)),
        "the task on b reaches host a's leg"
    );

    // The leg as planned: in a's namespace, named with the prefix, the overlay's MTU, the MAC of
    // its address; the subnet is reached through its connected route, with no default route.
    let leg = format!("{p}a-i001001");
    let link = sh(&lab.host('a'), &format!("ip -o link show {leg}"));
    for want in [
        "mtu 1450".to_string(),
        Mac::for_ipv4(leg_ip(0)).to_string(),
        "state UP".to_string(),
    ] {
        assert!(link.contains(&want), "{want} in {link}");
    }
    let route = sh(&lab.host('a'), "ip route show 10.90.0.0/24");
    assert!(route.contains(&format!("dev {leg}")), "{route}");
    let default = sh(&lab.host('a'), "ip route show default");
    assert!(default.trim().is_empty(), "{default}");
    let port = sh(&format!("{p}a-n1"), "ip -o link show hostleg");
    assert!(port.contains("master br0"), "{port}");

    // b has a gateway bridge, so its reverse-path filter is loose; a has none.
    let rp_filter = format!("/proc/sys/net/ipv4/conf/{p}b-gw/rp_filter");
    assert_eq!(sh(&lab.host('b'), &format!("cat {rp_filter}")).trim(), "2");
    assert!(links_starting(&lab.host('a'), &format!("{p}a-gw")).is_empty());

    // Applying again, whole or scoped, changes nothing.
    assert_eq!(rt.block_on(reconcile(&a)).unwrap(), vec![]);
    assert_eq!(rt.block_on(reconcile(&b)).unwrap(), vec![]);
    assert_eq!(rt.block_on(reconcile_since(&b, &b)).unwrap(), vec![]);

    // A restart: a fresh runtime, nothing kept in memory, everything found in place.
    drop(rt);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(reconcile(&a)).unwrap(), vec![]);
    assert_eq!(rt.block_on(reconcile(&b)).unwrap(), vec![]);

    // Someone made b's bridge strict: the next reconcile loosens it, and only that.
    sh(
        &lab.host('b'),
        &format!("sysctl -q -w net.ipv4.conf.{p}b-gw.rp_filter=1"),
    );
    assert_eq!(
        rt.block_on(reconcile(&b)).unwrap(),
        vec![Change::LooseRpFilter(format!("{p}b-gw"))]
    );
    assert_eq!(sh(&lab.host('b'), &format!("cat {rp_filter}")).trim(), "2");

    // b drops its leg (scoped, as the daemon's loop does): both ends go, the task stays.
    let mut b_without = b.clone();
    b_without.host_legs.clear();
    let changes = rt.block_on(reconcile_since(&b, &b_without)).unwrap();
    assert_eq!(
        changes
            .iter()
            .filter(|c| matches!(c, Change::DeleteLink(_)))
            .count(),
        2,
        "{changes:?}"
    );
    assert!(links_starting(&lab.host('b'), &format!("{p}b-i")).is_empty());
    assert!(links_starting(&format!("{p}b-n1"), "hostleg").is_empty());
    assert_eq!(
        reach(&lab.task_ns('b'), &lab.host('a'), leg_ip(0), 7403),
        Some(task_ip(1)),
        "b's task still reaches a's leg"
    );
    assert_eq!(rt.block_on(reconcile(&b_without)).unwrap(), vec![]);

    // a drops the network with its leg: nothing of a's instance is left; nor of b's once it
    // drops everything too.
    rt.block_on(reconcile(&empty(&lab, 'a', 0))).unwrap();
    assert!(links_starting(&lab.host('a'), &format!("{p}a-")).is_empty());
    assert!(netns::list(&format!("{p}a-")).unwrap().is_empty());
    rt.block_on(reconcile(&empty(&lab, 'b', 1))).unwrap();
    assert!(links_starting(&lab.host('b'), &format!("{p}b-")).is_empty());
    assert!(netns::list(&format!("{p}b-")).unwrap().is_empty());
}
