//! As root: two nodes' `NodeNetworking` end to end. Each node is a network namespace on a test
//! switch of its own, and runs its networking on a runtime whose threads entered that namespace
//! (so its gossip, netlink and nft calls stay there), with gossip keys set directly. A task on
//! each node, on one overlay network: they ping each other, each one's embedded DNS resolves the
//! other's service and `tasks.<service>`, and a task the worker drops disappears from the other
//! node's FDB, neighbours and DNS. Everything is named with the run's prefix (or the nodes' data
//! roots') and removed at the end, also when the test fails.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon::networking::NodeNetworking;
use overlay_net::gossip::{GossipKey, Keyring};
use overlay_net::netns;
use worker::networking::{
    DnsOptions, EndpointMode, LocalEndpoint, NetworkAttachment, TaskNetworking, TaskNetworks,
};

/// How long the test waits for something that should happen (gossip, reconciling) before it
/// fails; it polls, so it is usually far quicker.
const PATIENCE: Duration = Duration::from_secs(90);

/// A prefix no other run uses: 'd', then 4 hex digits of time and process id.
fn run_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "d{:04x}",
        (nanos ^ std::process::id().rotate_left(7)) & 0xffff
    )
}

/// Runs a command inside the namespace at `ns`; returns whether it succeeded and what it printed.
fn run_in(ns: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(args)
        .output()
        .expect("run nsenter");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn must(ns: &Path, args: &[&str]) {
    let (ok, printed) = run_in(ns, args);
    assert!(ok, "{args:?} in {}: {printed}", ns.display());
}

/// Polls `check` until it returns `Ok`, or fails with its last complaint.
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check() {
            Ok(()) => return,
            Err(complaint) if Instant::now() > deadline => panic!("{what}: {complaint}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// One node: its namespace, a runtime whose threads live in it, and its networking.
struct Node {
    runtime: tokio::runtime::Runtime,
    networking: Arc<NodeNetworking>,
    data_root: PathBuf,
}

impl Node {
    fn start(host_ns: &Path, data_root: PathBuf, node_id: &str, vtep: Ipv4Addr) -> Node {
        std::fs::create_dir_all(&data_root).unwrap();
        // Worker threads are made by the thread that builds the runtime, inside the namespace,
        // and blocking threads by the workers: every thread of this runtime is in it.
        let runtime = netns::run_in(Some(host_ns), || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        })
        .unwrap()
        .unwrap();
        let root = data_root.clone();
        let networking = runtime
            .block_on(runtime.spawn(async move { Arc::new(NodeNetworking::new(&root)) }))
            .unwrap();
        networking.set_node(Some((node_id.to_owned(), IpAddr::V4(vtep))));
        Node {
            runtime,
            networking,
            data_root,
        }
    }

    /// Runs `work` on the node's runtime (never on the test's thread, which is outside).
    fn on<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        self.runtime
            .block_on(self.runtime.spawn(work))
            .expect("the node's work panicked")
    }

    fn prepare(&self, task: &TaskNetworks) -> worker::networking::PreparedNetworks {
        let networking = Arc::clone(&self.networking);
        let id = task.task_id.clone();
        let task = task.clone();
        self.on(async move { networking.prepare(&task).await })
            .unwrap_or_else(|error| panic!("prepare {id}: {error}"))
            .expect("the node's networking prepares every networked task")
    }

    fn set_serving(&self, tasks: &[&TaskNetworks]) {
        self.networking.set_endpoints(
            tasks
                .iter()
                .map(|task| {
                    (
                        task.task_id.clone(),
                        LocalEndpoint {
                            networks: (*task).clone(),
                            serving: true,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        );
    }
}

/// Removes both nodes' networking and the lab's namespaces, also after a failure.
struct Lab {
    prefix: String,
    nodes: Vec<Node>,
}

impl Lab {
    fn switch(&self) -> PathBuf {
        netns::path(&format!("{}sw", self.prefix))
    }
    fn host(&self, i: usize) -> PathBuf {
        netns::path(&format!("{}h{i}", self.prefix))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in self.nodes.drain(..) {
            let networking = Arc::clone(&node.networking);
            if let Err(error) = node.on(async move { networking.remove_all().await }) {
                eprintln!("cleanup of {}: {error}", node.networking.prefix());
            }
            for name in netns::list(node.networking.prefix()).unwrap_or_default() {
                let _ = netns::delete(&name);
            }
            let _ = std::fs::remove_dir_all(&node.data_root);
        }
        for name in netns::list(&self.prefix).unwrap_or_default() {
            let _ = netns::delete(&name);
        }
    }
}

fn underlay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, i as u8)
}

fn task(id: &str, service: &str, mode: EndpointMode, address: &str) -> TaskNetworks {
    TaskNetworks {
        task_id: id.to_owned(),
        container_name: format!("{service}.1.{id}"),
        service_id: format!("svc-{service}"),
        service_name: service.to_owned(),
        endpoint_mode: mode,
        attachments: vec![NetworkAttachment {
            network_id: "ovnet".to_owned(),
            network_name: "front".to_owned(),
            vni: 4200,
            gateway: "10.90.0.1/24".to_owned(),
            address: address.to_owned(),
            internal: false,
            encrypted: false,
            ingress: false,
            aliases: Vec::new(),
            virtual_ip: (mode == EndpointMode::Vip).then(|| "10.90.0.2/24".to_owned()),
        }],
        ingress_ports: Vec::new(),
        host_ports: Vec::new(),
        dns: DnsOptions::default(),
        hosts: Vec::new(),
        hostname: id.to_owned(),
    }
}

fn nslookup(ns: &Path, name: &str) -> String {
    run_in(
        ns,
        &["/bin/busybox", "nslookup", "-type=a", name, "127.0.0.11"],
    )
    .1
}

#[test]
fn two_nodes_reach_and_resolve_each_other_s_tasks_and_forget_a_removed_one() {
    if let Some(reason) = shoal_tests::root_skip_reason() {
        shoal_tests::skip("node_networking", &reason);
        return;
    }
    let prefix = run_prefix();
    let mut lab = Lab {
        prefix,
        nodes: Vec::new(),
    };
    netns::create(&format!("{}sw", lab.prefix)).unwrap();
    must(
        &lab.switch(),
        &["ip", "link", "add", "sw0", "type", "bridge"],
    );
    must(&lab.switch(), &["ip", "link", "set", "sw0", "up"]);
    for i in 1..=2 {
        let host = format!("{}h{i}", lab.prefix);
        netns::create(&host).unwrap();
        let port = format!("port{i}");
        must(
            &lab.switch(),
            &[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host,
            ],
        );
        must(
            &lab.switch(),
            &["ip", "link", "set", &port, "master", "sw0", "up"],
        );
        let address = format!("{}/24", underlay_ip(i));
        must(
            &lab.host(i),
            &["ip", "addr", "add", &address, "dev", "eth0"],
        );
        must(&lab.host(i), &["ip", "link", "set", "eth0", "up"]);
        must(&lab.host(i), &["ip", "link", "set", "lo", "up"]);
    }
    let keyring = Keyring::new(GossipKey::new(1, [7; 32]), Vec::new()).unwrap();
    for i in 1..=2 {
        let data_root = std::env::temp_dir().join(format!("{}-node{i}", lab.prefix));
        let node = Node::start(&lab.host(i), data_root, &format!("node{i}"), underlay_ip(i));
        let other = underlay_ip(3 - i);
        node.networking
            .set_gossip(keyring.clone(), vec![SocketAddr::from((other, 7946))]);
        lab.nodes.push(node);
    }

    let web = task("taskweb", "web", EndpointMode::Vip, "10.90.0.11/24");
    let api = task(
        "taskapi",
        "api",
        EndpointMode::DnsRoundRobin,
        "10.90.0.12/24",
    );
    let web_prepared = lab.nodes[0].prepare(&web);
    let api_prepared = lab.nodes[1].prepare(&api);
    assert_eq!(
        web_prepared.netns,
        lab.nodes[0].networking.task_netns_path("taskweb")
    );
    assert!(
        String::from_utf8_lossy(&web_prepared.resolv_conf).starts_with("nameserver 127.0.0.11\n")
    );
    assert!(String::from_utf8_lossy(&web_prepared.hosts).contains("10.90.0.11\ttaskweb\n"));
    // Preparing again gives the same namespace back.
    assert_eq!(lab.nodes[0].prepare(&web).netns, web_prepared.netns);
    let (ok, links) = run_in(
        &web_prepared.netns,
        &["ip", "-o", "addr", "show", "dev", "eth0"],
    );
    assert!(
        ok && links.contains("10.90.0.11/24"),
        "task interface: {links}"
    );

    lab.nodes[0].set_serving(&[&web]);
    lab.nodes[1].set_serving(&[&api]);

    eventually("web's task pings api's across the overlay", || {
        let (ok, printed) = run_in(
            &web_prepared.netns,
            &["/bin/busybox", "ping", "-c", "1", "-W", "1", "10.90.0.12"],
        );
        ok.then_some(()).ok_or(printed)
    });
    eventually("api's task pings web's", || {
        let (ok, printed) = run_in(
            &api_prepared.netns,
            &["/bin/busybox", "ping", "-c", "1", "-W", "1", "10.90.0.11"],
        );
        ok.then_some(()).ok_or(printed)
    });
    for (ns, name, address) in [
        (&web_prepared.netns, "api", "10.90.0.12"),
        (&web_prepared.netns, "tasks.api", "10.90.0.12"),
        (&api_prepared.netns, "web", "10.90.0.2"),
        (&api_prepared.netns, "tasks.web", "10.90.0.11"),
    ] {
        eventually(&format!("{name} resolves to {address}"), || {
            let printed = nslookup(ns, name);
            printed
                .contains(&format!("Address: {address}"))
                .then_some(())
                .ok_or(printed)
        });
    }

    // The worker drops api's task on node 2: node 1 forgets it.
    lab.nodes[1].networking.set_endpoints(BTreeMap::new());
    let network_ns = lab.nodes[0].networking.network_netns_path("ovnet");
    eventually("api's task leaves node 1's FDB and neighbours", || {
        let (_, fdb) = run_in(&network_ns, &["bridge", "fdb", "show"]);
        let (_, neighbours) = run_in(&network_ns, &["ip", "neigh", "show"]);
        if fdb.contains("02:42:0a:5a:00:0c") || neighbours.contains("10.90.0.12 ") {
            Err(format!("fdb:\n{fdb}\nneighbours:\n{neighbours}"))
        } else {
            Ok(())
        }
    });
    eventually("tasks.api no longer resolves on node 1", || {
        let printed = nslookup(&web_prepared.netns, "tasks.api");
        (!printed.contains("10.90.0.12"))
            .then_some(())
            .ok_or(printed)
    });
    eventually("node 2 deleted the task's namespace", || {
        (!api_prepared.netns.exists())
            .then_some(())
            .ok_or_else(|| format!("{} is still there", api_prepared.netns.display()))
    });
}
