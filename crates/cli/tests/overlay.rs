//! End-to-end tests of overlay networking across test hosts: services on one overlay network
//! reach each other by name through the VIP and by `tasks.<service>`, from a task on another
//! host. Each scenario builds its own hosts with the `shoal-tests` harness, which removes them
//! (and every namespace, link and nft table their daemons made) afterwards, even when the test
//! fails.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::{ClusterOptions, TestCluster, TestHost, wait_until};

/// How long a cluster may take to reach the state a test waits for.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);

/// A busybox web server answering with its own hostname, so a client can tell replicas apart.
const WEB_COMMAND: &str =
    "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

/// Waits until `service` has `replicas` tasks running.
fn wait_running(manager: &TestHost, service: &str, replicas: usize) {
    wait_until(
        &format!("{replicas} running tasks of {service}"),
        CONVERGE_TIMEOUT,
        || {
            let listed =
                json_lines(&manager.shoal_ok(&["service", "ps", service, "--format", "json"]));
            let running = listed
                .iter()
                .filter(|task| {
                    task["DesiredState"] == "Running"
                        && task["CurrentState"]
                            .as_str()
                            .is_some_and(|state| state.starts_with("Running"))
                })
                .count();
            if running == replicas {
                Ok(())
            } else {
                Err(format!("{listed:?}"))
            }
        },
    );
}

/// The host pid of a running task of `service` on `host`, once there is one.
fn task_pid(host: &TestHost, service: &str) -> String {
    wait_until(
        &format!("a running {service} container on {}", host.name()),
        CONVERGE_TIMEOUT,
        || host.running_task_pid(service),
    )
}

/// Runs a busybox applet inside the task whose init is `pid`: its network and its mounts, so
/// its own /etc/resolv.conf (the embedded DNS) is the one used. (Debian's static busybox `wget`
/// crashes with `-T`, so requests are bounded with the `timeout` applet instead.)
fn in_task(pid: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new("nsenter")
        .args(["-t", pid, "-n", "-m", "--"])
        .args(args)
        .output()
        .map_err(|error| format!("running nsenter: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?} exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The IPv4 addresses in busybox nslookup's answer section (after the server's own lines).
fn looked_up_addresses(answer: &str) -> BTreeSet<String> {
    answer
        .split("Name:")
        .skip(1)
        .flat_map(|section| section.lines())
        .filter_map(|line| line.trim().strip_prefix("Address:"))
        .map(|address| address.split_whitespace().next().unwrap_or("").to_owned())
        .filter(|address| address.parse::<std::net::Ipv4Addr>().is_ok())
        .collect()
}

#[test]
fn a_task_on_another_host_reaches_every_replica_through_the_vip_and_by_tasks_name() {
    let Some(cluster) = TestCluster::start_or_skip(
        "a_task_on_another_host_reaches_every_replica_through_the_vip_and_by_tasks_name",
        ClusterOptions::new(3),
    ) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(1, 2);
    let manager = cluster.host(1);
    let client_host = cluster.host(3);
    manager.shoal_ok(&["network", "create", "-d", "overlay", "front"]);
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "3",
        "--network",
        "front",
        "--replicas-max-per-node",
        "1",
        "busybox",
        "sh",
        "-c",
        WEB_COMMAND,
    ]);
    let placement = format!("node.hostname=={}", client_host.name());
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "client",
        "--network",
        "front",
        "--constraint",
        &placement,
        "busybox",
        "sleep",
        "86400",
    ]);
    wait_running(manager, "web", 3);
    wait_running(manager, "client", 1);
    let client = task_pid(client_host, "client");

    // The first answer through the VIP, by name, waits for the gossip to bring the peers.
    wait_until("http://web/ from the client", CONVERGE_TIMEOUT, || {
        in_task(
            &client,
            &["timeout", "2", "wget", "-q", "-O", "-", "http://web/"],
        )
    });
    // Every node holding a replica has announced it once tasks.web names all three.
    let tasks = wait_until("tasks.web to name 3 addresses", CONVERGE_TIMEOUT, || {
        let addresses = looked_up_addresses(&in_task(&client, &["nslookup", "tasks.web"])?);
        if addresses.len() == 3 {
            Ok(addresses)
        } else {
            Err(format!("{addresses:?}"))
        }
    });
    let mut answered = BTreeSet::new();
    for _ in 0..30 {
        let page = in_task(
            &client,
            &["timeout", "5", "wget", "-q", "-O", "-", "http://web/"],
        )
        .unwrap_or_else(|error| panic!("a request through the VIP failed: {error}"));
        answered.insert(page.trim().to_owned());
    }
    assert_eq!(answered.len(), 3, "replicas that answered: {answered:?}");

    // Each task address serves on its own, too.
    for address in &tasks {
        in_task(
            &client,
            &[
                "timeout",
                "5",
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{address}/"),
            ],
        )
        .unwrap_or_else(|error| panic!("task address {address}: {error}"));
    }
    // The service's own name is its VIP, one address that is none of the tasks'.
    let vip = looked_up_addresses(&in_task(&client, &["nslookup", "web"]).unwrap());
    assert_eq!(vip.len(), 1, "{vip:?}");
    assert!(
        vip.is_disjoint(&tasks),
        "VIP {vip:?} among task addresses {tasks:?}"
    );

    // The manager's `network inspect` shows its own replica and the three nodes on the network.
    let inspected: Value =
        serde_json::from_str(&manager.shoal_ok(&["network", "inspect", "front"])).expect("JSON");
    let document = &inspected[0];
    let containers: Vec<&Value> = document["Containers"]
        .as_object()
        .map(|containers| containers.values().collect())
        .unwrap_or_default();
    assert_eq!(containers.len(), 1, "{document}");
    let address = containers[0]["IPv4Address"].as_str().unwrap_or_default();
    assert!(
        containers[0]["Name"]
            .as_str()
            .is_some_and(|name| name.starts_with("web."))
            && tasks.contains(address.split('/').next().unwrap_or_default()),
        "{document}"
    );
    let peers: BTreeSet<String> = document["Peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter_map(|peer| peer["IP"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let hosts: BTreeSet<String> = cluster
        .hosts()
        .iter()
        .map(|host| host.address().to_string())
        .collect();
    assert_eq!(peers, hosts, "{document}");
}

/// A swarm of `hosts` test hosts (one manager), each with the busybox image.
fn swarm_of(test_name: &str, hosts: usize) -> Option<TestCluster> {
    let cluster = TestCluster::start_or_skip(test_name, ClusterOptions::new(hosts))?;
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(1, hosts - 1);
    Some(cluster)
}

/// The pid of a running task of `service`, on whichever host runs one.
fn any_task_pid(cluster: &TestCluster, service: &str) -> String {
    wait_until(
        &format!("a running {service} container"),
        CONVERGE_TIMEOUT,
        || {
            cluster
                .hosts()
                .iter()
                .find_map(|host| host.running_task_pid(service).ok())
                .ok_or_else(|| "none yet".to_owned())
        },
    )
}

/// `http://{target}/` from inside the task `pid`: the page, or why not.
fn http_get(pid: &str, target: &str) -> Result<String, String> {
    in_task(
        pid,
        &[
            "timeout",
            "3",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{target}/"),
        ],
    )
}

/// A stack on two overlay networks, as `voting.yml` lays them out: `ballot` on front (also as
/// `vote`), `tally` on back, `counter` on both. Each service reaches the ones it shares a
/// network with, by name and by alias; the others' names do not resolve and their addresses
/// do not answer.
#[test]
fn stack_services_reach_what_shares_a_network_with_them_and_nothing_else() {
    let Some(cluster) = swarm_of(
        "stack_services_reach_what_shares_a_network_with_them_and_nothing_else",
        2,
    ) else {
        return;
    };
    let manager = cluster.host(1);
    let file = cluster.dir().join("voting.yml");
    let web = serde_json::to_string(&["sh", "-c", WEB_COMMAND]).expect("JSON");
    std::fs::write(
        &file,
        format!(
            "services:\n  ballot:\n    image: busybox:latest\n    command: {web}\n    networks:\n      front:\n        aliases: [vote]\n  tally:\n    image: busybox:latest\n    command: {web}\n    networks: [back]\n  counter:\n    image: busybox:latest\n    command: {web}\n    networks: [front, back]\nnetworks:\n  front: {{}}\n  back: {{}}\n"
        ),
    )
    .expect("writing the stack file");
    manager.shoal_ok(&[
        "stack",
        "deploy",
        "-c",
        file.to_str().expect("UTF-8 path"),
        "--detach=false",
        "voting",
    ]);
    let counter = any_task_pid(&cluster, "voting_counter");
    let ballot = any_task_pid(&cluster, "voting_ballot");
    let tally = any_task_pid(&cluster, "voting_tally");

    for (from, target) in [
        (&counter, "ballot"),
        (&counter, "vote"),
        (&counter, "voting_ballot"),
        (&counter, "tally"),
        (&ballot, "counter"),
        (&tally, "counter"),
    ] {
        wait_until(
            &format!("{target} to answer from a task sharing a network"),
            CONVERGE_TIMEOUT,
            || http_get(from, target),
        );
    }
    let tally_address = looked_up_addresses(
        &in_task(&counter, &["nslookup", "tasks.tally"]).expect("tasks.tally from counter"),
    );
    assert_eq!(tally_address.len(), 1, "{tally_address:?}");
    for (from, name) in [(&ballot, "tally"), (&tally, "ballot"), (&tally, "vote")] {
        let looked_up = in_task(from, &["nslookup", name]);
        assert!(
            looked_up
                .as_ref()
                .map_or(true, |answer| looked_up_addresses(answer).is_empty()),
            "{name} resolved where it shares no network: {looked_up:?}"
        );
    }
    let address = tally_address.first().expect("tally's address");
    assert!(
        http_get(&ballot, address).is_err(),
        "ballot reached tally's task address {address} across networks"
    );
}

/// A task on an ordinary overlay network reaches a host on the underlay (the manager's cluster
/// port) through its node's gateway bridge; on an `--internal` network it cannot.
#[test]
fn tasks_leave_through_the_gateway_bridge_unless_their_network_is_internal() {
    let Some(cluster) = swarm_of(
        "tasks_leave_through_the_gateway_bridge_unless_their_network_is_internal",
        2,
    ) else {
        return;
    };
    let manager = cluster.host(1);
    let worker = cluster.host(2);
    manager.shoal_ok(&["network", "create", "-d", "overlay", "open"]);
    manager.shoal_ok(&["network", "create", "-d", "overlay", "--internal", "closed"]);
    let placement = format!("node.hostname=={}", worker.name());
    for (service, network) in [("outgoing", "open"), ("confined", "closed")] {
        manager.shoal_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            service,
            "--network",
            network,
            "--constraint",
            &placement,
            "busybox",
            "sleep",
            "86400",
        ]);
    }
    let outgoing = task_pid(worker, "outgoing");
    let confined = task_pid(worker, "confined");
    let cluster_port = manager.address().to_string();
    // nc runs `true` once connected: exit 0 means the connection was made.
    let connect = |pid: &str| {
        in_task(
            pid,
            &[
                "timeout",
                "5",
                "nc",
                "-w",
                "3",
                &cluster_port,
                "2377",
                "-e",
                "true",
            ],
        )
    };
    wait_until(
        "the manager's cluster port from a task on an ordinary network",
        CONVERGE_TIMEOUT,
        || connect(&outgoing),
    );
    assert!(
        connect(&confined).is_err(),
        "a task on an internal network reached {cluster_port}"
    );
}

/// A resolver on a test host's underlay address that answers every A question with
/// [`OUTSIDE_ANSWER`], standing in for the resolvers outside the swarm. Its thread serves
/// from inside the host's namespace until the resolver is dropped.
struct OutsideResolver {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What [`OutsideResolver`] answers: a documentation address, never sent to.
const OUTSIDE_ANSWER: [u8; 4] = [192, 0, 2, 77];

impl OutsideResolver {
    fn start(host: &TestHost) -> OutsideResolver {
        use std::os::fd::AsRawFd as _;
        let netns = std::fs::File::open(host.netns_path()).expect("the host's namespace");
        let address = std::net::SocketAddr::from((host.address(), 53));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a namespace file it holds open.
            let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
            let socket = entered
                .then(|| std::net::UdpSocket::bind(address).ok())
                .flatten();
            let _ = bound_tx.send(socket.is_some());
            let Some(socket) = socket else { return };
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("a read timeout");
            let mut buffer = [0_u8; 512];
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((length, from)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                if let Some(answer) = answer_a(&buffer[..length]) {
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        assert!(
            bound_rx.recv().unwrap_or(false),
            "the outside resolver could not listen on {address}"
        );
        OutsideResolver {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for OutsideResolver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A DNS answer to `query` (one question) with one A record, [`OUTSIDE_ANSWER`], for an A
/// question, and no record for any other; `None` for what is not a query.
fn answer_a(query: &[u8]) -> Option<Vec<u8>> {
    const HEADER: usize = 12;
    if query.len() < HEADER || query[2] & 0x80 != 0 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut end = HEADER;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let mut answer = query.get(..question_end)?.to_vec();
    answer[2] = 0x81; // a response, recursion desired
    answer[3] = 0x80; // recursion available, no error
    answer[6..12].copy_from_slice(&[0, u8::from(qtype == 1), 0, 0, 0, 0]);
    if qtype == 1 {
        // The name by pointer to the question, A, IN, TTL 60, four bytes.
        answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        answer.extend_from_slice(&OUTSIDE_ANSWER);
    }
    Some(answer)
}

/// A task asks its embedded DNS for a name that is not the swarm's: the answer comes from the
/// resolver the task was given (`--dns`), through the embedded DNS, while the swarm's names
/// are still answered by the node.
#[test]
fn names_outside_the_swarm_are_answered_by_the_task_s_resolvers() {
    let Some(cluster) = swarm_of(
        "names_outside_the_swarm_are_answered_by_the_task_s_resolvers",
        2,
    ) else {
        return;
    };
    let (manager, worker) = (cluster.host(1), cluster.host(2));
    let _resolver = OutsideResolver::start(manager);
    manager.shoal_ok(&["network", "create", "-d", "overlay", "front"]);
    let resolver = manager.address().to_string();
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "asker",
        "--network",
        "front",
        "--dns",
        &resolver,
        "--constraint",
        &format!("node.hostname=={}", worker.name()),
        "busybox",
        "sleep",
        "86400",
    ]);
    let asker = task_pid(worker, "asker");
    let outside = std::net::Ipv4Addr::from(OUTSIDE_ANSWER).to_string();
    wait_until(
        "a name outside the swarm answered through the task's resolver",
        CONVERGE_TIMEOUT,
        || {
            let answer = in_task(&asker, &["nslookup", "outside.example", "127.0.0.11"])?;
            if looked_up_addresses(&answer).contains(&outside) {
                Ok(())
            } else {
                Err(format!("answer: {answer}"))
            }
        },
    );
    // The node learns the task's own service a moment after the task runs; until then the name
    // is not the swarm's and goes out like any other. Once known, it is answered by the node.
    wait_until(
        "the swarm's own name answered by the node, not the task's resolver",
        CONVERGE_TIMEOUT,
        || {
            let own = in_task(&asker, &["nslookup", "asker", "127.0.0.11"])?;
            let addresses = looked_up_addresses(&own);
            if !addresses.is_empty() && !addresses.contains(&outside) {
                Ok(())
            } else {
                Err(format!("answer: {own}"))
            }
        },
    );
}

/// The MAC overlay-net derives from a task address: 02:42 and the address's four bytes.
fn mac_of(address: &str) -> String {
    let octets = address
        .parse::<std::net::Ipv4Addr>()
        .unwrap_or_else(|error| panic!("{address}: {error}"))
        .octets();
    format!(
        "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
        octets[0], octets[1], octets[2], octets[3]
    )
}

/// The remote MACs programmed in a network's namespace on `host`: the VXLAN device's FDB
/// entries that name a tunnel endpoint, and the permanent neighbour entries' MACs.
fn programmed_peers(host: &TestHost, network_id: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let netns = format!("--net={}", host.overlay_netns_path(network_id).display());
    let run = |args: &[&str]| {
        let output = Command::new("nsenter")
            .arg(&netns)
            .args(args)
            .output()
            .expect("running nsenter");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let fdb = run(&["bridge", "fdb", "show"])
        .lines()
        .filter(|line| line.contains(" dst "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    let neighbours = run(&["ip", "neigh", "show", "nud", "permanent"])
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|word| *word == "lladdr")?;
            words.get(at + 1).map(|mac| (*mac).to_owned())
        })
        .collect();
    (fdb, neighbours)
}

/// `kill -9` of a worker's daemon: its task leaves the other hosts' DNS and their FDB and
/// neighbour tables; restarted, it serves again and every table holds exactly the live remote
/// tasks. Then `swarm leave` removes everything its overlay networking made.
#[test]
fn a_killed_daemon_s_endpoints_leave_every_table_and_come_back_without_stale_entries() {
    let Some(cluster) = swarm_of(
        "a_killed_daemon_s_endpoints_leave_every_table_and_come_back_without_stale_entries",
        3,
    ) else {
        return;
    };
    let manager = cluster.host(1);
    let victim = cluster.host(3);
    let network_id = manager
        .shoal_ok(&["network", "create", "-d", "overlay", "front"])
        .trim()
        .to_owned();
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "3",
        "--network",
        "front",
        "--replicas-max-per-node",
        "1",
        "busybox",
        "sh",
        "-c",
        WEB_COMMAND,
    ]);
    let placement = format!("node.hostname=={}", manager.name());
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "client",
        "--network",
        "front",
        "--constraint",
        &placement,
        "busybox",
        "sleep",
        "86400",
    ]);
    wait_running(manager, "web", 3);
    let client = task_pid(manager, "client");
    let lookup = |name: &str| -> Result<BTreeSet<String>, String> {
        Ok(looked_up_addresses(&in_task(&client, &["nslookup", name])?))
    };
    let web_tasks = |count: usize| {
        wait_until(
            &format!("tasks.web to name {count} addresses"),
            CONVERGE_TIMEOUT,
            || match lookup("tasks.web")? {
                addresses if addresses.len() == count => Ok(addresses),
                addresses => Err(format!("{addresses:?}")),
            },
        )
    };
    let before = web_tasks(3);
    // The manager's own replica is the one address whose MAC is no remote peer's.
    let local: BTreeSet<String> = wait_until(
        "the manager's FDB to hold the two remote replicas",
        CONVERGE_TIMEOUT,
        || {
            let (fdb, _) = programmed_peers(manager, &network_id);
            let local: BTreeSet<String> = before
                .iter()
                .filter(|address| !fdb.contains(&mac_of(address)))
                .cloned()
                .collect();
            if local.len() == 1 {
                Ok(local)
            } else {
                Err(format!("fdb {fdb:?}"))
            }
        },
    );
    assert_eq!(local.len(), 1, "the manager's own replica among {before:?}");

    victim.kill_daemon();
    let survivors = web_tasks(2);
    let gone: Vec<&String> = before.difference(&survivors).collect();
    assert_eq!(gone.len(), 1, "{before:?} then {survivors:?}");
    let gone_mac = mac_of(gone[0]);
    wait_until(
        "the dead host's task to leave the manager's FDB and neighbours",
        CONVERGE_TIMEOUT,
        || {
            let (fdb, neighbours) = programmed_peers(manager, &network_id);
            if fdb.contains(&gone_mac) || neighbours.contains(&gone_mac) {
                Err(format!("fdb {fdb:?}, neighbours {neighbours:?}"))
            } else {
                Ok(())
            }
        },
    );

    victim.restart_daemon();
    let after = web_tasks(3);
    wait_until(
        "the restarted host's replica to answer",
        CONVERGE_TIMEOUT,
        || {
            after
                .iter()
                .try_for_each(|address| http_get(&client, address).map(drop))
        },
    );
    let remote: BTreeSet<String> = after.difference(&local).map(|a| mac_of(a)).collect();
    wait_until(
        "the manager's tables to hold exactly the live remote tasks",
        CONVERGE_TIMEOUT,
        || {
            let (fdb, neighbours) = programmed_peers(manager, &network_id);
            if fdb == remote && neighbours == remote {
                Ok(())
            } else {
                Err(format!(
                    "want {remote:?}; fdb {fdb:?}, neighbours {neighbours:?}"
                ))
            }
        },
    );

    victim.leave_swarm_leaving_nothing();
}

/// A replica whose healthcheck starts failing leaves `tasks.<service>` and the VIP's backends
/// on the other hosts at once (no request reaches it while it stops), and its replacement
/// joins them.
#[test]
fn an_unhealthy_replica_leaves_dns_and_the_vip_and_its_replacement_joins() {
    let Some(cluster) = swarm_of(
        "an_unhealthy_replica_leaves_dns_and_the_vip_and_its_replacement_joins",
        2,
    ) else {
        return;
    };
    let manager = cluster.host(1);
    let worker = cluster.host(2);
    manager.shoal_ok(&["network", "create", "-d", "overlay", "front"]);
    let command = format!("touch /tmp/healthy && {WEB_COMMAND}");
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "--replicas-max-per-node",
        "1",
        "--network",
        "front",
        "--health-cmd",
        "test -e /tmp/healthy",
        "--health-interval",
        "500ms",
        "--health-retries",
        "1",
        "busybox",
        "sh",
        "-c",
        &command,
    ]);
    let placement = format!("node.hostname=={}", manager.name());
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "client",
        "--network",
        "front",
        "--constraint",
        &placement,
        "busybox",
        "sleep",
        "86400",
    ]);
    wait_running(manager, "web", 2);
    let client = task_pid(manager, "client");
    let web_tasks = |count: usize| {
        wait_until(
            &format!("tasks.web to name {count} addresses"),
            CONVERGE_TIMEOUT,
            || {
                let addresses = looked_up_addresses(&in_task(&client, &["nslookup", "tasks.web"])?);
                if addresses.len() == count {
                    Ok(addresses)
                } else {
                    Err(format!("{addresses:?}"))
                }
            },
        )
    };
    let both = web_tasks(2);
    let remote = task_pid(worker, "web");
    let remote_page = in_task(&remote, &["cat", "/www/index.html"]).expect("the page");

    in_task(&remote, &["rm", "/tmp/healthy"]).expect("failing the healthcheck");
    let healthy = web_tasks(1);
    assert!(healthy.is_subset(&both), "{healthy:?} among {both:?}");
    for _ in 0..20 {
        let page = http_get(&client, "web")
            .unwrap_or_else(|error| panic!("a request through the VIP failed: {error}"));
        assert_ne!(
            page,
            remote_page,
            "the VIP sent a request to the unhealthy replica; healthy {healthy:?} of {both:?}; tasks {}; the client's table: {:?}",
            manager.shoal_ok(&["service", "ps", "web", "--no-trunc"]),
            Command::new("nsenter")
                .args(["-t", &client, "-n", "nft", "list", "ruleset"])
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        );
    }

    // As in Docker, the unhealthy task is replaced: a new replica with a new address.
    let replaced = web_tasks(2);
    assert!(
        replaced.is_superset(&healthy) && !replaced.is_subset(&both),
        "{replaced:?} after {both:?}"
    );
}

/// The names of the running containers on `host` whose service is one of `services`.
fn running_on(host: &TestHost, services: &[&str]) -> usize {
    json_lines(&host.shoal_ok(&["container", "ls", "--format", "json"]))
        .iter()
        .filter(|c| {
            c["Names"].as_str().is_some_and(|name| {
                services
                    .iter()
                    .any(|service| name.starts_with(&format!("{service}.")))
            })
        })
        .count()
}

/// A worker cut off the underlay while the service changes: once healed, every host's FDB and
/// neighbour entries on the network are exactly the other hosts' live tasks, and the names
/// resolve to the live tasks only.
#[test]
fn after_a_partition_heals_every_host_converges_on_the_live_tasks() {
    let Some(cluster) = swarm_of(
        "after_a_partition_heals_every_host_converges_on_the_live_tasks",
        3,
    ) else {
        return;
    };
    let manager = cluster.host(1);
    let cut_off = cluster.host(3);
    let network_id = manager
        .shoal_ok(&["network", "create", "-d", "overlay", "front"])
        .trim()
        .to_owned();
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "3",
        "--replicas-max-per-node",
        "2",
        "--network",
        "front",
        "busybox",
        "sh",
        "-c",
        WEB_COMMAND,
    ]);
    let placement = format!("node.hostname=={}", manager.name());
    manager.shoal_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "client",
        "--network",
        "front",
        "--constraint",
        &placement,
        "busybox",
        "sleep",
        "86400",
    ]);
    wait_running(manager, "web", 3);
    let client = task_pid(manager, "client");

    cut_off.partition();
    manager.shoal_ok(&["service", "scale", "-d", "web=4"]);
    wait_until(
        "the cut-off host to be down",
        CONVERGE_TIMEOUT,
        || match manager.node_table()?.get(cut_off.name()) {
            Some((status, _)) if status == "Down" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    wait_running(manager, "web", 4);
    cut_off.heal();

    // Converged: tasks.web names the 4 live replicas, and on every host the remote entries are
    // exactly the live tasks that are not its own.
    wait_until("every host's tables to converge", CONVERGE_TIMEOUT, || {
        let web = looked_up_addresses(&in_task(&client, &["nslookup", "tasks.web"])?);
        let clients = looked_up_addresses(&in_task(&client, &["nslookup", "tasks.client"])?);
        if web.len() != 4 || clients.len() != 1 {
            return Err(format!("tasks.web {web:?}, tasks.client {clients:?}"));
        }
        let live: BTreeSet<String> = web.union(&clients).map(|a| mac_of(a)).collect();
        let mut unsettled = Vec::new();
        for host in cluster.hosts() {
            let local = running_on(host, &["web", "client"]);
            if local == 0 {
                continue;
            }
            let (fdb, neighbours) = programmed_peers(host, &network_id);
            if !fdb.is_subset(&live) || fdb.len() + local != live.len() || neighbours != fdb {
                unsettled.push(format!(
                    "{}: {local} local tasks, fdb {fdb:?}, neighbours {neighbours:?}",
                    host.name()
                ));
            }
        }
        if unsettled.is_empty() {
            Ok(())
        } else {
            Err(format!("live {live:?}; {unsettled:?}"))
        }
    });
}

/// The byte counts of the ESP states in `host`'s namespace (`ip -s xfrm state`'s "current"
/// lines), summed.
fn esp_bytes(host: &TestHost) -> u64 {
    let listing = String::from_utf8_lossy(&host.run_in_host("ip", &["-s", "xfrm", "state"]).stdout)
        .into_owned();
    listing
        .lines()
        .skip_while(|line| !line.contains("proto esp"))
        .filter_map(|line| {
            let line = line.trim();
            // "12345(bytes), 67(packets)" follows the "current:" heading.
            line.strip_suffix("(packets)")
                .and_then(|rest| rest.split("(bytes)").next())
                .and_then(|bytes| bytes.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Whether the kernel can do ESP with AES-GCM, tried with a throwaway state in `host`'s
/// namespace.
fn kernel_has_esp(host: &TestHost) -> bool {
    let state = [
        "xfrm",
        "state",
        "add",
        "src",
        "127.0.0.1",
        "dst",
        "127.0.0.2",
        "proto",
        "esp",
        "spi",
        "0x7e57",
        "mode",
        "transport",
        "aead",
        "rfc4106(gcm(aes))",
        "0x0102030405060708090a0b0c0d0e0f1011121314",
        "128",
    ];
    let added = host.run_in_host("ip", &state).status.success();
    host.run_in_host(
        "ip",
        &[
            "xfrm",
            "state",
            "delete",
            "src",
            "127.0.0.1",
            "dst",
            "127.0.0.2",
            "proto",
            "esp",
            "spi",
            "0x7e57",
        ],
    );
    added
}

/// An `--opt encrypted` network carries its tasks' traffic between hosts inside IPsec ESP: a
/// request across it succeeds and the ESP states' counters grow; `swarm leave` removes them.
/// On a kernel without ESP (this machine's), its tasks are rejected with why.
#[test]
fn an_encrypted_network_carries_requests_inside_esp_or_refuses_its_tasks() {
    let Some(cluster) = swarm_of(
        "an_encrypted_network_carries_requests_inside_esp_or_refuses_its_tasks",
        2,
    ) else {
        return;
    };
    let manager = cluster.host(1);
    let worker = cluster.host(2);
    manager.shoal_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--opt",
        "encrypted",
        "sealed",
    ]);
    for (service, host, command) in [
        ("web", worker, WEB_COMMAND),
        ("client", manager, "exec sleep 86400"),
    ] {
        let placement = format!("node.hostname=={}", host.name());
        manager.shoal_ok(&[
            "service",
            "create",
            "-d",
            "--name",
            service,
            "--network",
            "sealed",
            "--constraint",
            &placement,
            "busybox",
            "sh",
            "-c",
            command,
        ]);
    }
    if !kernel_has_esp(manager) {
        wait_until(
            "the web task to be rejected with why",
            CONVERGE_TIMEOUT,
            || {
                let tasks =
                    manager.shoal_ok(&["service", "ps", "web", "--no-trunc", "--format", "json"]);
                let said = json_lines(&tasks).iter().any(|task| {
                    task["Error"].as_str().is_some_and(|error| {
                        error.contains("network sealed is encrypted")
                            && error.contains("--opt encrypted")
                    })
                });
                if said { Ok(()) } else { Err(tasks) }
            },
        );
        return;
    }
    let client = task_pid(manager, "client");
    wait_until(
        "http://web/ across the encrypted network",
        CONVERGE_TIMEOUT,
        || http_get(&client, "web"),
    );
    let before = esp_bytes(manager);
    for _ in 0..5 {
        http_get(&client, "web").unwrap_or_else(|error| panic!("a request failed: {error}"));
    }
    let after = esp_bytes(manager);
    assert!(
        after > before && before > 0,
        "ESP byte counters on the manager: {before} then {after}"
    );

    worker.shoal_ok(&["swarm", "leave", "--force"]);
    wait_until(
        "swarm leave to remove the IPsec states",
        CONVERGE_TIMEOUT,
        || {
            let states =
                String::from_utf8_lossy(&worker.run_in_host("ip", &["xfrm", "state"]).stdout)
                    .into_owned();
            match worker.overlay_footprint() {
                left if left.is_empty() && states.trim().is_empty() => Ok(()),
                left => Err(format!("{left:?}; xfrm states: {states}")),
            }
        },
    );
}
