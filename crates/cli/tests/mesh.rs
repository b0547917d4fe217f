//! End-to-end tests of the routing mesh across test hosts: a port a service publishes answers on
//! every node's address, spread over the ready tasks as its traffic policy says, and seen from
//! a client on the underlay that runs no daemon. Each scenario builds its own hosts with the
//! `shoal-tests` harness, which removes them (and every namespace, link and nft table their
//! daemons made) afterwards, even when the test fails.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use shoal_tests::{ClusterOptions, TestCluster, TestHost, wait_until};

/// How long a cluster may take to reach the state a test waits for.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);

/// A busybox web server: `/` answers with the task's hostname (so a client can tell replicas
/// apart) and `/cgi-bin/addr` with the address the connection came from.
const WEB_COMMAND: &str = "mkdir -p /www/cgi-bin && hostname > /www/index.html \
     && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/addr \
     && chmod +x /www/cgi-bin/addr && exec httpd -f -p 80 -h /www";

/// A swarm of three hosts (`h1` manages) with the busybox image, and a fourth host on the same
/// underlay outside the swarm, the client.
fn swarm_and_client(test_name: &str) -> Option<TestCluster> {
    let cluster = TestCluster::start_or_skip(test_name, ClusterOptions::new(4))?;
    for host in &cluster.hosts()[..3] {
        host.import_busybox();
    }
    cluster.form_swarm(1, 2);
    Some(cluster)
}

/// `http://{through's address}:{port}{path}` fetched from the client host: the body, or why not.
fn fetch(client: &TestHost, through: &TestHost, port: u16, path: &str) -> Result<String, String> {
    get(
        client,
        &format!("http://{}:{port}{path}", through.address()),
    )
}

/// `url` fetched from `from`'s namespace: the body, or why not.
fn get(from: &TestHost, url: &str) -> Result<String, String> {
    answer(
        url,
        from.run_in_host("busybox", &["timeout", "3", "wget", "-q", "-O", "-", url]),
    )
}

/// `url` fetched from inside the network namespace of the task whose init is `pid`.
fn get_in_task(pid: &str, url: &str) -> Result<String, String> {
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["busybox", "timeout", "3", "wget", "-q", "-O", "-", url])
        .output()
        .map_err(|error| format!("nsenter: {error}"))?;
    answer(url, output)
}

/// The body a `wget` of `url` printed, or why it failed.
fn answer(url: &str, output: std::process::Output) -> Result<String, String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{url}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The web server's command line.
const WEB: [&str; 3] = ["sh", "-c", WEB_COMMAND];

/// Fails unless a request for `path` on `port` through each of `hosts` fails with an error
/// holding `why` (`refused`, `503`).
fn refused_through(client: &TestHost, hosts: &[TestHost], port: u16, path: &str, why: &str) {
    for host in hosts {
        let refused = fetch(client, host, port, path);
        assert!(
            refused.as_ref().is_err_and(|error| error.contains(why)),
            "port {port} through {}: {refused:?}",
            host.name()
        );
    }
}

/// The address a task's `/cgi-bin/addr` reports through `host`: busybox httpd listens on IPv6
/// and writes IPv4 peers mapped (`[::ffff:10.1.2.3]`), read here as plain IPv4.
fn seen_by_task(client: &TestHost, host: &TestHost, port: u16) -> String {
    let seen = fetch(client, host, port, "/cgi-bin/addr").unwrap_or_else(|error| panic!("{error}"));
    seen.trim_start_matches("[::ffff:")
        .trim_end_matches(']')
        .to_owned()
}

/// Answers every UDP datagram to port 5300 in the network namespace of the task whose init is
/// `pid` with `pong`, from a thread of the test (busybox has no UDP server), until `stop`. (Not
/// 53: the task's embedded DNS holds 127.0.0.11:53.)
fn udp_answerer_in_task(pid: &str, stop: Arc<AtomicBool>) {
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .unwrap_or_else(|error| panic!("opening task {pid}'s namespace: {error}"));
    let (bound, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: setns takes a descriptor open for the call and moves only this thread.
        let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        let socket = UdpSocket::bind("0.0.0.0:5300").expect("binding UDP 5300 in the task");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        bound.send(()).expect("the test waits for the socket");
        let mut buffer = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(b"pong", from);
            }
        }
    });
    ready.recv().expect("the UDP answerer to bind");
}

/// One datagram to `target` from the client, and the answer.
fn udp_ask(client: &TestHost, target: SocketAddr) -> Result<String, String> {
    client.in_host_netns(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(|error| error.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|error| error.to_string())?;
        socket
            .send_to(b"ping", target)
            .map_err(|error| format!("send: {error}"))?;
        let mut buffer = [0u8; 64];
        let (length, _) = socket
            .recv_from(&mut buffer)
            .map_err(|error| format!("{target}: {error}"))?;
        Ok(String::from_utf8_lossy(&buffer[..length]).into_owned())
    })
}

/// The replicas' hostnames as `/` answers through `host`'s address in `requests` requests.
fn replicas_answering(
    client: &TestHost,
    host: &TestHost,
    port: u16,
    requests: usize,
) -> BTreeSet<String> {
    (0..requests)
        .map(|_| {
            fetch(client, host, port, "/")
                .unwrap_or_else(|error| panic!("through {}: {error}", host.name()))
        })
        .collect()
}

/// Every swarm host answers a published port, also those the client never sent to before:
/// - `prefer-local` (shoal's default): each host sends to its own replica, and the task sees the
///   client's own address;
/// - `cluster` (Docker's behaviour): each host spreads over every replica, and the task sees the
///   entry host's address instead of the client's;
/// - `local`: only the host running a replica answers; the others refuse at once;
/// - each host answers on 127.0.0.1 as well, and to its own tasks (hairpin);
/// - `mode=host`: only the task's own host answers, and the task sees the client;
/// - UDP goes through the mesh as TCP does, to a task answering from an unbound socket: its own
///   host sends to it keeping the client's address, the others hand it on;
/// - each host's health endpoint says whether it has a ready task of its own for a port.
///
/// A host leaving the swarm leaves none of it behind.
#[test]
fn a_published_port_answers_on_every_host_as_its_traffic_policy_says() {
    let Some(cluster) =
        swarm_and_client("a_published_port_answers_on_every_host_as_its_traffic_policy_says")
    else {
        return;
    };
    let manager = cluster.host(1);
    let client = cluster.host(4);
    let swarm = &cluster.hosts()[..3];
    let three = |publish| ["--replicas", "3", "--publish", publish];
    manager.create_service("local-first", &three("published=8080,target=80"), &WEB);
    manager.create_service(
        "spread",
        &three("published=8081,target=80,traffic-policy=cluster"),
        &WEB,
    );
    let on_h1 = |publish| ["--constraint", "node.role==manager", "--publish", publish];
    manager.create_service(
        "only-here",
        &on_h1("published=8082,target=80,traffic-policy=local"),
        &WEB,
    );
    manager.create_service(
        "datagrams",
        &on_h1("published=5353,target=5300,protocol=udp"),
        &["sleep", "3600"],
    );
    manager.create_service(
        "on-its-host",
        &on_h1("published=8090,target=80,mode=host"),
        &WEB,
    );

    for host in swarm {
        for port in [8080, 8081] {
            wait_until(
                &format!("port {port} to answer through {}", host.name()),
                CONVERGE_TIMEOUT,
                || fetch(client, host, port, "/"),
            );
        }
    }

    // prefer-local: one replica per host, each host's own, and each sees the client.
    let mut local_replicas = BTreeSet::new();
    for host in swarm {
        let answered = replicas_answering(client, host, 8080, 10);
        assert_eq!(answered.len(), 1, "{} sent to {answered:?}", host.name());
        local_replicas.extend(answered);
        let seen = seen_by_task(client, host, 8080);
        assert_eq!(
            seen,
            client.address().to_string(),
            "through {}",
            host.name()
        );
    }
    assert_eq!(local_replicas.len(), 3, "{local_replicas:?}");

    // On each host itself, 127.0.0.1 answers too (through the daemon's loopback proxy): the
    // prefer-local port from the host's own replica, the cluster port from the others' as well.
    for host in swarm {
        let own = get(host, "http://127.0.0.1:8080/")
            .unwrap_or_else(|error| panic!("on {}: {error}", host.name()));
        assert_eq!(
            replicas_answering(client, host, 8080, 1),
            BTreeSet::from([own])
        );
        wait_until(
            &format!(
                "127.0.0.1:8081 on {} to reach another host's replica",
                host.name()
            ),
            CONVERGE_TIMEOUT,
            || {
                let answered: BTreeSet<String> = (0..15)
                    .map(|_| get(host, "http://127.0.0.1:8081/"))
                    .collect::<Result<_, _>>()?;
                if answered.len() > 1 {
                    Ok(())
                } else {
                    Err(format!("{answered:?}"))
                }
            },
        );
    }

    // Hairpin: a task reaches its own host's published ports, served by a task there (itself,
    // for prefer-local, as each host has one replica) or by another host's.
    let on_h1 = wait_until("local-first's task on h1", CONVERGE_TIMEOUT, || {
        manager.running_task_pid("local-first")
    });
    for port in [8080, 8081] {
        let url = format!("http://{}:{port}/", manager.address());
        for _ in 0..10 {
            get_in_task(&on_h1, &url)
                .unwrap_or_else(|error| panic!("from local-first's task on h1: {error}"));
        }
    }

    // cluster: every host reaches every replica, and the tasks see the mesh, not the client.
    for host in swarm {
        wait_until(
            &format!("every replica through {}", host.name()),
            CONVERGE_TIMEOUT,
            || {
                let answered = replicas_answering(client, host, 8081, 30);
                if answered.len() == 3 {
                    Ok(())
                } else {
                    Err(format!("{answered:?}"))
                }
            },
        );
        // The entry host's address: on its gateway bridge (172.18.0.1, as docker_gwbridge's)
        // when its own task serves the connection, on the underlay when it hands it to another
        // host's task.
        let seen = seen_by_task(client, host, 8081);
        assert!(
            seen == "172.18.0.1" || swarm.iter().any(|h| h.address().to_string() == seen),
            "through {}: the task saw {seen}, not an address of a swarm host",
            host.name()
        );
    }

    // mode=host: only the manager, which runs the task, answers, and the task sees the client.
    wait_until("port 8090 through h1", CONVERGE_TIMEOUT, || {
        fetch(client, manager, 8090, "/")
    });
    assert_eq!(
        seen_by_task(client, manager, 8090),
        client.address().to_string()
    );
    refused_through(client, &swarm[1..], 8090, "/", "refused");
    // Its task reports the port in its status, which `service ps` shows as Docker does.
    let on_its_host = manager.shoal_ok(&["service", "ps", "on-its-host", "--format", "json"]);
    let ports: Vec<String> = on_its_host
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|task| task["DesiredState"] == "Running")
        .map(|task| task["Ports"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ports, ["*:8090->80/tcp"], "{on_its_host}");

    // UDP through the mesh, from every host to the one task on the manager, which answers from
    // the address its default route gives.
    let udp_task = wait_until("the UDP service's task", CONVERGE_TIMEOUT, || {
        manager.running_task_pid("datagrams")
    });
    let stop_udp = Arc::new(AtomicBool::new(false));
    udp_answerer_in_task(&udp_task, Arc::clone(&stop_udp));
    for host in swarm {
        let target = SocketAddr::from((host.address(), 5353));
        let answer = wait_until(
            &format!("UDP 5353 through {}", host.name()),
            CONVERGE_TIMEOUT,
            || udp_ask(client, target),
        );
        assert_eq!(answer, "pong");
    }
    stop_udp.store(true, Ordering::Relaxed);

    // local: the manager answers; the workers, which run no replica, refuse.
    wait_until("port 8082 through h1", CONVERGE_TIMEOUT, || {
        fetch(client, manager, 8082, "/")
    });
    refused_through(client, &swarm[1..], 8082, "/", "refused");

    // The node says how it serves published ports.
    let info = manager.shoal_ok(&["info"]);
    assert!(info.contains("Routing Mesh: nftables"), "{info}");

    // The health endpoint tells a load balancer which hosts keep the client's address.
    let healthy = fetch(client, manager, 7947, "/ports/8082")
        .unwrap_or_else(|error| panic!("h1's health endpoint: {error}"));
    assert_eq!(healthy, "8082/tcp: 1 ready task(s) on this node");
    refused_through(client, &swarm[1..], 7947, "/ports/8082", "503");

    // A worker leaving the swarm takes its leg, the ingress network's namespace and the mesh's
    // table with it.
    let worker = cluster.host(3);
    let footprint = worker.overlay_footprint();
    assert!(
        footprint
            .iter()
            .any(|item| item.contains(&format!("{}_mesh", worker.overlay_prefix()))),
        "{footprint:?}"
    );
    worker.leave_swarm_leaving_nothing();
}

/// One HTTP/1.0 request to `target` on a new connection: `Ok` on a 200 answer.
fn request(target: SocketAddr) -> Result<(), String> {
    shoal_tests::http::get(target, "/", &mut [0_u8; 4096], Duration::from_secs(3)).map(drop)
}

/// What the test is changing while the load runs, for the failures' report.
const PHASES: [&str; 4] = [
    "start-first update",
    "stop-first update",
    "drain",
    "after the changes",
];

/// Requests sent so far by a load run, the phase the test is in, and when to stop.
#[derive(Default)]
struct LoadControl {
    sent: AtomicUsize,
    phase: AtomicUsize,
    stop: AtomicBool,
}

/// A failed request: where it went, in which phase, how long after the load started, and why.
type Failure = (SocketAddr, &'static str, u128, String);

/// Sends requests one after another from the client, to each target in turn, until told to
/// stop; returns the failures.
fn load(client: &TestHost, targets: &[SocketAddr], control: &LoadControl) -> Vec<Failure> {
    client.in_host_netns(|| {
        let started = std::time::Instant::now();
        let mut failures = Vec::new();
        for target in targets.iter().cycle() {
            if control.stop.load(Ordering::Relaxed) {
                break;
            }
            let sent_at = started.elapsed().as_millis();
            if let Err(error) = request(*target) {
                let phase = PHASES[control.phase.load(Ordering::Relaxed).min(PHASES.len() - 1)];
                failures.push((*target, phase, sent_at, error));
            }
            control.sent.fetch_add(1, Ordering::Relaxed);
        }
        failures
    })
}

/// Stops the load when dropped, so a test that fails while the load runs ends instead of waiting
/// for it for ever.
struct StopOnDrop<'a>(&'a LoadControl);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until the load has sent `count` requests in all.
fn wait_sent(control: &LoadControl, count: usize) {
    wait_until(
        &format!("{count} requests sent"),
        CONVERGE_TIMEOUT,
        || match control.sent.load(Ordering::Relaxed) {
            sent if sent >= count => Ok(()),
            sent => Err(format!("{sent} sent")),
        },
    );
}

/// `service inspect`'s update state of `service`.
fn update_state(manager: &TestHost, service: &str) -> Result<String, String> {
    let text = manager.shoal_ok(&["service", "inspect", service]);
    let value: Value = serde_json::from_str(&text).map_err(|error| error.to_string())?;
    Ok(value[0]["UpdateStatus"]["State"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Runs `service update -d ARGS web` and waits for the update to complete.
fn update_and_wait(manager: &TestHost, args: &[&str]) {
    let mut command = vec!["service", "update", "-d"];
    command.extend_from_slice(args);
    command.push("web");
    manager.shoal_ok(&command);
    wait_until(
        "the update to complete",
        CONVERGE_TIMEOUT,
        || match update_state(manager, "web")?.as_str() {
            "completed" => Ok(()),
            state => Err(format!("update state {state:?}")),
        },
    );
}

/// Tasks of `service` running on `host`, by `service ps`.
fn running_on(manager: &TestHost, service: &str, node: &str) -> usize {
    manager
        .shoal_ok(&["service", "ps", service, "--format", "json"])
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|task| {
            task["Node"] == node
                && task["DesiredState"] == "Running"
                && task["CurrentState"]
                    .as_str()
                    .is_some_and(|state| state.starts_with("Running"))
        })
        .count()
}

/// Requests sent without a pause to every host's published port while the service changes under
/// them, and not one fails: a `start-first` rolling update with a healthcheck, a `stop-first`
/// one with parallelism 1, and a node drained. A task leaves every node's tables before its stop
/// signal, and a new one joins them only once it is healthy.
#[test]
fn no_request_fails_while_the_service_updates_or_a_node_drains() {
    let Some(cluster) =
        swarm_and_client("no_request_fails_while_the_service_updates_or_a_node_drains")
    else {
        return;
    };
    let manager = cluster.host(1);
    let client = cluster.host(4);
    let swarm = &cluster.hosts()[..3];
    manager.create_service(
        "web",
        &[
            "--replicas",
            "3",
            "--publish",
            "8080:80",
            "--update-order",
            "start-first",
            "--update-parallelism",
            "1",
            // An init in front of httpd, so the stop signal ends it at once (httpd as pid 1
            // would ignore it and serve out the grace period): only the drain keeps requests
            // off it.
            "--init",
            "--health-cmd",
            "wget -q -O /dev/null http://127.0.0.1/",
            "--health-interval",
            "1s",
        ],
        &WEB,
    );
    for host in swarm {
        wait_until(
            &format!("port 8080 through {}", host.name()),
            CONVERGE_TIMEOUT,
            || fetch(client, host, 8080, "/"),
        );
    }
    let targets: Vec<SocketAddr> = swarm
        .iter()
        .map(|host| SocketAddr::from((host.address(), 8080)))
        .collect();
    let control = LoadControl::default();
    let failures = std::thread::scope(|scope| {
        let running = scope.spawn(|| load(client, &targets, &control));
        let stopper = StopOnDrop(&control);
        update_and_wait(manager, &["--env-add", "ROUND=1"]);
        control.phase.store(1, Ordering::Relaxed);
        update_and_wait(
            manager,
            &["--update-order", "stop-first", "--env-add", "ROUND=2"],
        );
        control.phase.store(2, Ordering::Relaxed);
        let drained = swarm[2].name().to_owned();
        manager.shoal_ok(&["node", "update", "--availability", "drain", &drained]);
        wait_until(
            "the drained node to run no task",
            CONVERGE_TIMEOUT,
            || match running_on(manager, "web", &drained) {
                0 => Ok(()),
                count => Err(format!("{count} still running on {drained}")),
            },
        );
        wait_until("3 tasks running again", CONVERGE_TIMEOUT, || {
            let running: usize = swarm
                .iter()
                .map(|host| running_on(manager, "web", host.name()))
                .sum();
            if running == 3 {
                Ok(())
            } else {
                Err(format!("{running} running"))
            }
        });
        control.phase.store(3, Ordering::Relaxed);
        // Requests after the last change count too, and 10,000 in all.
        let after_changes = control.sent.load(Ordering::Relaxed) + 500;
        wait_sent(&control, after_changes.max(10_000));
        drop(stopper);
        running.join().expect("the load thread")
    });
    let sent = control.sent.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed (target, phase, ms after the start, why): {:?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
}

/// A line sent on `stream` comes back: the echo service still answers on that connection.
fn echoes(stream: &mut TcpStream, line: &str) -> Result<(), String> {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|error| format!("send: {error}"))?;
    let mut answer = vec![0u8; line.len() + 1];
    stream
        .read_exact(&mut answer)
        .map_err(|error| format!("receive: {error}"))?;
    if answer == format!("{line}\n").as_bytes() {
        Ok(())
    } else {
        Err(format!("answer {:?}", String::from_utf8_lossy(&answer)))
    }
}

/// A new connection from the client to the echo service's port 7000 through `through`, which
/// has echoed `line` once.
fn echo_connection(client: &TestHost, through: &TestHost, line: &str) -> Result<TcpStream, String> {
    let target = SocketAddr::from((through.address(), 7000));
    let mut stream = client.in_host_netns(|| {
        TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .map_err(|error| error.to_string())
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|error| error.to_string())?;
    echoes(&mut stream, line)?;
    Ok(stream)
}

/// The mesh's table on `host` with its handle (`nft -a`): the same handle after a restart shows
/// the table was kept, not made again.
fn mesh_table_handle(host: &TestHost) -> String {
    let table = format!("{}_mesh", host.overlay_prefix());
    let listed = host.run_in_host("nft", &["-a", "list", "table", "inet", &table]);
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The task addresses in the `overlay` map of `host`'s mesh table: every ready task's ingress
/// address (the `cluster` map names other nodes instead of their tasks).
fn mesh_backends(host: &TestHost) -> BTreeSet<String> {
    let table = format!("{}_mesh", host.overlay_prefix());
    let listed = host.run_in_host("nft", &["list", "map", "inet", &table, "overlay"]);
    String::from_utf8_lossy(&listed.stdout)
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|word| word.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_owned)
        .collect()
}

/// A daemon killed with SIGKILL and started again: connections the client opened through every
/// host, its own included, keep going while it is down and after, and its mesh table is
/// reconciled in place (the same table, not one made again), so new connections through it work
/// too. A clean stop removes the table.
#[test]
fn a_killed_daemon_s_node_keeps_its_connections_and_converges_in_place() {
    let Some(cluster) =
        swarm_and_client("a_killed_daemon_s_node_keeps_its_connections_and_converges_in_place")
    else {
        return;
    };
    let manager = cluster.host(1);
    let client = cluster.host(4);
    let swarm = &cluster.hosts()[..3];
    let killed = cluster.host(2);
    manager.create_service(
        "echo",
        &["--replicas", "3", "--publish", "7000:7"],
        &["nc", "-ll", "-p", "7", "-e", "cat"],
    );
    let mut connections: Vec<(String, TcpStream)> = swarm
        .iter()
        .map(|host| {
            let stream = wait_until(
                &format!("a connection through {}", host.name()),
                CONVERGE_TIMEOUT,
                || echo_connection(client, host, "hello"),
            );
            (host.name().to_owned(), stream)
        })
        .collect();
    let handle = mesh_table_handle(killed);
    assert!(handle.contains("handle"), "{handle:?}");

    killed.kill_daemon();
    for (through, stream) in &mut connections {
        echoes(stream, "while down")
            .unwrap_or_else(|error| panic!("through {through} with h2's daemon down: {error}"));
    }
    killed.restart_daemon();
    wait_until(
        "the restarted node to serve new connections",
        CONVERGE_TIMEOUT,
        || echo_connection(client, killed, "new"),
    );
    for (through, stream) in &mut connections {
        echoes(stream, "after")
            .unwrap_or_else(|error| panic!("through {through} after the restart: {error}"));
    }
    // The restarted daemon keeps programming the same table: a fourth replica joins it.
    manager.shoal_ok(&["service", "scale", "-d", "echo=4"]);
    wait_until(
        "the restarted node's table to send to four replicas",
        CONVERGE_TIMEOUT,
        || match mesh_backends(killed).len() {
            4 => Ok(()),
            count => Err(format!("{count} backends")),
        },
    );
    assert_eq!(mesh_table_handle(killed), handle);

    // A clean stop takes the table away: the node no longer takes connections for the mesh.
    killed.stop_daemon();
    let footprint = killed.overlay_footprint();
    assert!(
        !footprint.iter().any(|item| item.contains("_mesh")),
        "{footprint:?}"
    );
}
