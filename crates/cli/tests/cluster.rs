//! End-to-end tests of swarms across test hosts: formation, security, promotion and demotion,
//! leader loss, a paused leader, worker loss, a partitioned manager, a rolling restart of the
//! managers, a rolling update that outlives its leader, stacks deployed, redeployed and
//! removed, and autolock across managers. Each scenario builds its own hosts (network
//! namespaces on a private underlay, each running `shoal daemon`) with the `shoal-tests`
//! harness, which removes them all afterwards, even when the test fails. They run in parallel.
//! Without root they print why and check nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::{ClusterOptions, TestCluster, TestHost, output_text, wait_until};

/// How long a cluster may take to reach the state a test waits for.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

fn start(test: &str, hosts: usize) -> Option<TestCluster> {
    TestCluster::start_or_skip(test, ClusterOptions::new(hosts))
}

#[test]
fn three_managers_and_two_workers_form_one_swarm_every_manager_agrees_on() {
    let Some(cluster) = start(
        "three_managers_and_two_workers_form_one_swarm_every_manager_agrees_on",
        5,
    ) else {
        return;
    };
    cluster.form_swarm(3, 2);
    let tables: Vec<_> = (1..=3)
        .map(|number| {
            wait_until("node ls on a manager", CONVERGE_TIMEOUT, || {
                cluster.host(number).node_table()
            })
        })
        .collect();
    for table in &tables {
        let hostnames: BTreeSet<&String> = table.keys().collect();
        let expected: BTreeSet<String> = cluster
            .hosts()
            .iter()
            .map(|host| host.name().to_owned())
            .collect();
        assert_eq!(hostnames, expected.iter().collect(), "{table:?}");
        let leaders = table.values().filter(|(_, m)| m == "Leader").count();
        let reachable = table.values().filter(|(_, m)| m == "Reachable").count();
        assert_eq!((leaders, reachable), (1, 2), "{table:?}");
    }
    // The workers are workers: no control API, with the reason.
    let refused = cluster.host(4).shoal(&["node", "ls"]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("not a swarm manager"),
        "{}",
        output_text(&refused)
    );
    // A worker's `info` lists the managers it knows from its session, as a manager's does.
    let managers = manager_addresses(&cluster.host(1).shoal_ok(&["info"]));
    assert_eq!(managers.len(), 3, "{managers:?}");
    wait_until("the worker to list the managers", CONVERGE_TIMEOUT, || {
        let listed = manager_addresses(&cluster.host(4).shoal_ok(&["info"]));
        if listed == managers {
            Ok(())
        } else {
            Err(format!("{listed:?}, not {managers:?}"))
        }
    });
}

/// The addresses `info` lists under "Manager Addresses:".
fn manager_addresses(info: &str) -> Vec<String> {
    info.lines()
        .skip_while(|line| line.trim() != "Manager Addresses:")
        .skip(1)
        .take_while(|line| line.trim().parse::<std::net::SocketAddr>().is_ok())
        .map(|line| line.trim().to_owned())
        .collect()
}

#[test]
fn wrong_and_rotated_tokens_are_refused_and_joined_nodes_stay() {
    let Some(cluster) = start(
        "wrong_and_rotated_tokens_are_refused_and_joined_nodes_stay",
        4,
    ) else {
        return;
    };
    let (manager, h2, h3, h4) = (
        cluster.host(1),
        cluster.host(2),
        cluster.host(3),
        cluster.host(4),
    );
    manager.swarm_init();
    let old_token = manager.join_token("worker");
    h2.swarm_join(&old_token, manager);

    // A token with the right CA digest and a made-up secret.
    let digest = old_token.split('-').nth(2).expect("a digest part");
    let forged = format!("SWMTKN-1-{digest}-{}", "0".repeat(25));
    let remote = format!("{}:2377", manager.address());
    let refused = h3.shoal(&["swarm", "join", "--token", &forged, &remote]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("join token is not valid"),
        "{}",
        output_text(&refused)
    );

    // A token for another CA: the joiner refuses the manager before sending anything.
    let foreign = format!("SWMTKN-1-{}-{}", "1".repeat(50), "a".repeat(25));
    let refused = h3.shoal(&["swarm", "join", "--token", &foreign, &remote]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("man-in-the-middle"),
        "{}",
        output_text(&refused)
    );

    // Rotation: the old token stops working at once, the new one works, h2 stays.
    let rotated = manager.shoal_ok(&["swarm", "join-token", "--rotate", "worker"]);
    assert!(
        rotated.contains("Successfully rotated worker join token."),
        "{rotated}"
    );
    let new_token = manager.join_token("worker");
    assert_ne!(new_token, old_token);
    assert!(rotated.contains(&new_token), "{rotated}");
    let refused = h3.shoal(&["swarm", "join", "--token", &old_token, &remote]);
    assert!(!refused.status.success(), "{}", output_text(&refused));
    h3.swarm_join(&new_token, manager);
    wait_until("h2 and h3 ready", CONVERGE_TIMEOUT, || {
        let table = manager.node_table()?;
        let ready = table
            .values()
            .filter(|(status, _)| status == "Ready")
            .count();
        if ready == 3 {
            Ok(())
        } else {
            Err(format!("{table:?}"))
        }
    });

    // A worker can't use the control API, locally or by calling a manager's cluster port with
    // its worker certificate.
    let refused = h2.shoal(&["service", "ls"]);
    assert!(!refused.status.success());
    let refused = h2.shoal(&["node", "ls"]);
    assert!(
        output_text(&refused).contains("not a swarm manager"),
        "{}",
        output_text(&refused)
    );

    // A removed node's certificate is refused: h4 joins, leaves, and is removed.
    h4.swarm_join(&new_token, manager);
    let h4_id = h4.shoal_ok(&["info", "--format", "{{json .Swarm}}"]);
    let h4_id: Value = serde_json::from_str(&h4_id).expect("info JSON");
    let h4_id = h4_id["NodeID"].as_str().expect("a node id").to_owned();
    let refused = manager.shoal(&["node", "rm", &h4_id]);
    assert!(
        output_text(&refused).contains("not down"),
        "{}",
        output_text(&refused)
    );
    manager.shoal_ok(&["node", "rm", "--force", &h4_id]);
    wait_until("h4's session refused", CONVERGE_TIMEOUT, || {
        let log = std::fs::read_to_string(h4.daemon_log()).unwrap_or_default();
        if log.contains("was removed from the swarm") {
            Ok(())
        } else {
            Err("no refusal in h4's daemon log yet".to_owned())
        }
    });
}

#[test]
fn promotion_and_demotion_change_the_raft_group_and_keep_a_quorum() {
    let Some(cluster) = start(
        "promotion_and_demotion_change_the_raft_group_and_keep_a_quorum",
        3,
    ) else {
        return;
    };
    cluster.form_swarm(1, 2);
    let manager = cluster.host(1);
    let (h2, h3) = (cluster.host(2).name(), cluster.host(3).name());
    let said = manager.shoal_ok(&["node", "promote", h2, h3]);
    assert!(said.contains("promoted to a manager"), "{said}");
    wait_until("three managers", CONVERGE_TIMEOUT, || {
        let table = manager.node_table()?;
        let managers: Vec<&String> = table
            .values()
            .map(|(_, m)| m)
            .filter(|m| !m.is_empty())
            .collect();
        if managers.len() == 3 && managers.iter().all(|m| *m == "Leader" || *m == "Reachable") {
            Ok(())
        } else {
            Err(format!("{table:?}"))
        }
    });
    // The promoted node serves the control API.
    wait_until("node ls on h2", CONVERGE_TIMEOUT, || {
        cluster.host(2).node_table()
    });

    let said = manager.shoal_ok(&["node", "demote", h3]);
    assert!(said.contains("demoted"), "{said}");
    wait_until("two managers", CONVERGE_TIMEOUT, || {
        let table = manager.node_table()?;
        let managers = table.values().filter(|(_, m)| !m.is_empty()).count();
        if managers == 2 {
            Ok(())
        } else {
            Err(format!("{table:?}"))
        }
    });
    // The demoted node no longer manages.
    let no_longer_manages = |host: usize| {
        wait_until(
            &format!("h{host} refuses node ls"),
            CONVERGE_TIMEOUT,
            || {
                let output = cluster.host(host).shoal(&["node", "ls"]);
                if output_text(&output).contains("not a swarm manager") {
                    Ok(())
                } else {
                    Err(output_text(&output))
                }
            },
        )
    };
    no_longer_manages(3);

    // One of two managers may not leave: the other alone would be no majority of two.
    let refused = cluster.host(2).shoal(&["swarm", "leave"]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("quorum") && output_text(&refused).contains("--force"),
        "{}",
        output_text(&refused)
    );
    // But it may be demoted, as in Docker: the change commits with both, and the one that
    // stays is a quorum of itself.
    let said = manager.shoal_ok(&["node", "demote", h2]);
    assert!(said.contains("demoted"), "{said}");
    no_longer_manages(2);
    let table = wait_until("node ls", CONVERGE_TIMEOUT, || manager.node_table());
    let managers: Vec<&String> = table
        .values()
        .map(|(_, m)| m)
        .filter(|m| !m.is_empty())
        .collect();
    assert_eq!(managers, ["Leader"], "{table:?}");
    // A worker leaves; once it is down, a manager removes it without --force.
    let said = cluster.host(3).shoal_ok(&["swarm", "leave"]);
    assert!(said.contains("Node left the swarm."), "{said}");
    let info = cluster.host(3).shoal_ok(&["info"]);
    assert!(info.contains("Swarm: inactive"), "{info}");
    succeeds_within(
        manager,
        "h3 down, then removed",
        CONVERGE_TIMEOUT,
        &["node", "rm", h3],
    );
    let table = wait_until("node ls", CONVERGE_TIMEOUT, || manager.node_table());
    assert!(!table.contains_key(h3), "{table:?}");
}

#[test]
fn a_lost_quorum_is_recovered_with_force_new_cluster() {
    let Some(cluster) = start("a_lost_quorum_is_recovered_with_force_new_cluster", 3) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(3, 0);
    let survivor = cluster.host(1);
    create_service(survivor, "kept", 2);
    wait_for_slots(survivor, "kept", 2, CONVERGE_TIMEOUT, |_| true);
    cluster.host(2).kill_daemon();
    cluster.host(3).kill_daemon();
    let refused = survivor.shoal(&["service", "scale", "-d", "kept=3"]);
    assert!(
        output_text(&refused).contains("no quorum"),
        "{}",
        output_text(&refused)
    );

    let said = survivor.shoal_ok(&["swarm", "init", "--force-new-cluster"]);
    assert!(said.contains("Swarm initialized"), "{said}");
    // Its state is kept, writes work again, and the lost managers show as unreachable until
    // they are demoted and removed.
    succeeds_within(
        survivor,
        "a write on the recovered swarm",
        CONVERGE_TIMEOUT,
        &["service", "scale", "-d", "kept=3"],
    );
    let table = wait_until("node ls", CONVERGE_TIMEOUT, || survivor.node_table());
    let unreachable = table.values().filter(|(_, m)| m == "Unreachable").count();
    assert_eq!(unreachable, 2, "{table:?}");
    let (h2, h3) = (cluster.host(2).name(), cluster.host(3).name());
    survivor.shoal_ok(&["node", "demote", h2, h3]);
    wait_until("the lost managers removed", CONVERGE_TIMEOUT, || {
        for name in [h2, h3] {
            let output = survivor.shoal(&["node", "rm", "--force", name]);
            if !output.status.success() && !output_text(&output).contains("not found") {
                return Err(output_text(&output));
            }
        }
        Ok(())
    });
    let table = wait_until("node ls", CONVERGE_TIMEOUT, || survivor.node_table());
    assert_eq!(table.len(), 1, "{table:?}");
    wait_for_slots(survivor, "kept", 3, CONVERGE_TIMEOUT, |_| true);
}

/// Runs `args` on `host` until it succeeds (a write meeting an election or a partition, say),
/// and panics with the last failure after `timeout`.
fn succeeds_within(host: &TestHost, description: &str, timeout: Duration, args: &[&str]) {
    wait_until(description, timeout, || {
        let output = host.shoal(args);
        if output.status.success() {
            Ok(())
        } else {
            Err(output_text(&output))
        }
    });
}

/// One task as `service ps --no-trunc --format json` lists it.
#[derive(Debug)]
struct ListedTask {
    id: String,
    slot: u64,
    node: String,
    image: String,
    desired: String,
    current: String,
}

impl ListedTask {
    fn runs(&self) -> bool {
        self.desired == "Running" && self.current.starts_with("Running")
    }
}

/// Every task of `service` as `host` lists it, history included.
fn listed_tasks(host: &TestHost, service: &str) -> Result<Vec<ListedTask>, String> {
    let output = host.shoal(&["service", "ps", "--no-trunc", "--format", "json", service]);
    if !output.status.success() {
        return Err(output_text(&output));
    }
    json_lines(&String::from_utf8_lossy(&output.stdout))
        .iter()
        .map(|task| {
            let text = |key: &str| task[key].as_str().unwrap_or_default().to_owned();
            let name = text("Name");
            let slot = name
                .rsplit('.')
                .next()
                .and_then(|slot| slot.parse().ok())
                .ok_or_else(|| format!("no slot in task name {name:?}"))?;
            Ok(ListedTask {
                id: text("ID"),
                slot,
                node: text("Node"),
                image: text("Image"),
                desired: text("DesiredState"),
                current: text("CurrentState"),
            })
        })
        .collect()
}

/// The running tasks of `service` as `host` lists them, by slot: (task id, node).
fn running_by_slot(
    host: &TestHost,
    service: &str,
) -> Result<BTreeMap<u64, Vec<(String, String)>>, String> {
    let mut slots: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
    for task in listed_tasks(host, service)? {
        if task.runs() {
            slots
                .entry(task.slot)
                .or_default()
                .push((task.id, task.node));
        }
    }
    Ok(slots)
}

/// Waits until `service` runs exactly one task in each of slots 1..=`replicas`, on nodes
/// `accept` allows, and returns them by slot.
fn wait_for_slots(
    host: &TestHost,
    service: &str,
    replicas: u64,
    timeout: Duration,
    accept: impl Fn(&str) -> bool,
) -> BTreeMap<u64, (String, String)> {
    wait_until(
        &format!("{service}: one running task in each of {replicas} slots"),
        timeout,
        || {
            let slots = running_by_slot(host, service)?;
            let whole = slots.len() as u64 == replicas
                && slots.keys().copied().eq(1..=replicas)
                && slots
                    .values()
                    .all(|tasks| tasks.len() == 1 && accept(&tasks[0].1));
            if whole {
                Ok(slots
                    .into_iter()
                    .map(|(slot, mut tasks)| (slot, tasks.remove(0)))
                    .collect())
            } else {
                Err(format!("{slots:?}"))
            }
        },
    )
}

/// How many containers run on `host`'s engine.
fn running_containers(host: &TestHost) -> Result<usize, String> {
    let output = host.shoal(&["container", "ls", "-q"]);
    if !output.status.success() {
        return Err(output_text(&output));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .count())
}

/// Waits until the hosts in `hosts` run `expected` containers between them.
fn wait_for_containers(hosts: &[&TestHost], expected: usize, timeout: Duration) {
    wait_until(
        &format!("{expected} containers across the hosts"),
        timeout,
        || {
            let counts = hosts
                .iter()
                .map(|host| running_containers(host))
                .collect::<Result<Vec<usize>, String>>()?;
            if counts.iter().sum::<usize>() == expected {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        },
    )
}

fn create_service(manager: &TestHost, name: &str, replicas: u64) {
    let replicas = replicas.to_string();
    manager.create_service(name, &["--replicas", &replicas], &["sleep", "86400"]);
}

#[test]
fn a_killed_leader_is_replaced_and_no_task_is_lost_or_duplicated() {
    let Some(cluster) = start(
        "a_killed_leader_is_replaced_and_no_task_is_lost_or_duplicated",
        5,
    ) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(3, 2);
    let (leader, survivor) = (cluster.host(1), cluster.host(2));
    create_service(leader, "web", 6);
    wait_for_slots(leader, "web", 6, CONVERGE_TIMEOUT, |_| true);

    leader.kill_daemon();
    let killed = Instant::now();
    // The first write through a surviving manager: the issue asks for it within 5 s, and
    // BENCHMARKS.md records the figure; the bound here leaves room for a loaded CI machine.
    succeeds_within(
        survivor,
        "service scale through h2",
        Duration::from_secs(30),
        &["service", "scale", "-d", "web=8"],
    );
    eprintln!("leader failover: first write after {:?}", killed.elapsed());
    // A new leader, and every surviving manager shows the old one down and unreachable.
    for host in [cluster.host(2), cluster.host(3)] {
        wait_until(
            "a new leader, the old one unreachable",
            CONVERGE_TIMEOUT,
            || {
                let table = host.node_table()?;
                let leader = table.iter().find(|(_, (_, m))| m == "Leader");
                let old = table.get(cluster.host(1).name());
                match (leader, old) {
                    (Some((name, _)), Some((status, manager)))
                        if name != cluster.host(1).name()
                            && status == "Down"
                            && manager == "Unreachable" =>
                    {
                        Ok(())
                    }
                    _ => Err(format!("{table:?}")),
                }
            },
        );
    }
    // Every slot runs exactly once on a live node (h1's tasks moved once it was marked down).
    let dead = cluster.host(1).name().to_owned();
    let slots = wait_for_slots(survivor, "web", 8, CONVERGE_TIMEOUT, |node| node != dead);
    let ids: BTreeSet<&String> = slots.values().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 8, "{slots:?}");

    // h1 comes back as a follower, and shuts its stale tasks down: 8 containers in all.
    leader.restart_daemon();
    let hosts: Vec<&TestHost> = cluster.hosts().iter().collect();
    wait_for_containers(&hosts, 8, CONVERGE_TIMEOUT);
    wait_until("h1 back in the managers", CONVERGE_TIMEOUT, || {
        let table = leader.node_table()?;
        let managing = table
            .values()
            .filter(|(status, m)| status == "Ready" && (m == "Leader" || m == "Reachable"))
            .count();
        if managing == 3 {
            Ok(())
        } else {
            Err(format!("{table:?}"))
        }
    });
}

#[test]
fn a_paused_leader_is_replaced_and_the_other_nodes_keep_their_tasks() {
    let Some(cluster) = start(
        "a_paused_leader_is_replaced_and_the_other_nodes_keep_their_tasks",
        3,
    ) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(3, 0);
    let (leader, survivor) = (cluster.host(1), cluster.host(2));
    create_service(leader, "web", 6);
    let paused = leader.name().to_owned();
    let before = wait_for_slots(leader, "web", 6, CONVERGE_TIMEOUT, |_| true);
    let elsewhere: BTreeSet<String> = before
        .values()
        .filter(|(_, node)| *node != paused)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        !elsewhere.is_empty(),
        "no task outside {paused}: {before:?}"
    );

    // Past the heartbeat deadline (3 s) and many election timeouts: the others elect a leader,
    // and h1 wakes believing for a moment that it still leads.
    leader.pause_daemon(Duration::from_secs(6));

    let slots = wait_for_slots(survivor, "web", 6, CONVERGE_TIMEOUT, |_| true);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let running: BTreeSet<String> = running_by_slot(survivor, "web")
            .unwrap_or_else(|error| panic!("{error}"))
            .into_values()
            .flatten()
            .map(|(id, _)| id)
            .collect();
        let replaced: Vec<&String> = elsewhere.difference(&running).collect();
        if !replaced.is_empty() {
            // Who marked which node down, and when leadership moved, on every host.
            let verdicts: Vec<String> = cluster
                .hosts()
                .iter()
                .flat_map(|host| {
                    let log = std::fs::read_to_string(host.daemon_log()).unwrap_or_default();
                    let name = host.name().to_owned();
                    log.lines()
                        .filter(|line| {
                            [
                                "marking the node down",
                                "leadership changed",
                                "session opened",
                            ]
                            .iter()
                            .any(|what| line.contains(what))
                        })
                        .map(|line| format!("{name}: {line}"))
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!(
                "tasks on the nodes that never stopped were replaced: {replaced:?}; slots \
                 {slots:?}; the daemons said:\n{}",
                verdicts.join("\n")
            );
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_dead_workers_tasks_move_and_come_back_without_duplicates() {
    let Some(cluster) = start(
        "a_dead_workers_tasks_move_and_come_back_without_duplicates",
        3,
    ) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(1, 2);
    let (manager, worker) = (cluster.host(1), cluster.host(3));
    create_service(manager, "api", 6);
    let before = wait_for_slots(manager, "api", 6, CONVERGE_TIMEOUT, |_| true);
    assert!(
        before.values().any(|(_, node)| node == worker.name()),
        "h3 runs none of the tasks: {before:?}"
    );

    worker.kill_daemon();
    let killed = Instant::now();
    let gone = worker.name().to_owned();
    // The issue asks for 10 s; BENCHMARKS.md records the figure.
    wait_for_slots(manager, "api", 6, Duration::from_secs(30), |node| {
        node != gone
    });
    eprintln!(
        "worker loss: tasks running elsewhere after {:?}",
        killed.elapsed()
    );

    // Back: its stale tasks stop, and exactly 6 containers run across the hosts.
    worker.restart_daemon();
    let hosts: Vec<&TestHost> = cluster.hosts().iter().collect();
    wait_for_containers(&hosts, 6, CONVERGE_TIMEOUT);
    wait_for_slots(manager, "api", 6, CONVERGE_TIMEOUT, |_| true);
}

#[test]
fn a_partitioned_manager_refuses_writes_and_converges_after_healing() {
    let Some(cluster) = start(
        "a_partitioned_manager_refuses_writes_and_converges_after_healing",
        3,
    ) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(3, 0);
    // Cut off the leader itself: the other two elect a new one.
    let (lone, other) = (cluster.host(1), cluster.host(2));
    lone.partition();
    succeeds_within(
        other,
        "a write on the majority side",
        CONVERGE_TIMEOUT,
        &[
            "service", "create", "-d", "--name", "during", "busybox", "sleep", "86400",
        ],
    );
    let refused = lone.shoal(&[
        "service", "create", "-d", "--name", "lonely", "busybox", "sleep", "86400",
    ]);
    assert!(!refused.status.success(), "{}", output_text(&refused));
    assert!(
        output_text(&refused).contains("no quorum"),
        "{}",
        output_text(&refused)
    );

    lone.heal();
    wait_until(
        "h1 sees the service made while it was cut off",
        CONVERGE_TIMEOUT,
        || {
            let output = lone.shoal(&["service", "ls", "--format", "json"]);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            if output.status.success() && text.contains("\"during\"") && !text.contains("lonely") {
                Ok(())
            } else {
                Err(output_text(&output))
            }
        },
    );
    wait_for_slots(lone, "during", 1, CONVERGE_TIMEOUT, |_| true);
}

#[test]
fn restarting_every_manager_in_turn_loses_no_committed_state() {
    let Some(cluster) = start(
        "restarting_every_manager_in_turn_loses_no_committed_state",
        3,
    ) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(3, 0);
    let mut expected = Vec::new();
    for number in 1..=3 {
        let host = cluster.host(number);
        let writer = cluster.host(number % 3 + 1);
        let name = format!("before{number}");
        succeeds_within(
            writer,
            "a write",
            CONVERGE_TIMEOUT,
            &[
                "service", "create", "-d", "--name", &name, "busybox", "sleep", "86400",
            ],
        );
        expected.push(name);
        host.kill_daemon();
        host.restart_daemon();
        wait_until("all three managers reachable", CONVERGE_TIMEOUT, || {
            let table = host.node_table()?;
            let managing = table
                .values()
                .filter(|(_, m)| m == "Leader" || m == "Reachable")
                .count();
            if managing == 3 {
                Ok(())
            } else {
                Err(format!("{table:?}"))
            }
        });
    }
    for host in cluster.hosts() {
        wait_until("every service on every manager", CONVERGE_TIMEOUT, || {
            let output = host.shoal(&["service", "ls", "--format", "json"]);
            let names: BTreeSet<String> = json_lines(&String::from_utf8_lossy(&output.stdout))
                .iter()
                .map(|row| row["Name"].as_str().unwrap_or_default().to_owned())
                .collect();
            if expected.iter().all(|name| names.contains(name)) {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        });
    }
    for name in &expected {
        wait_for_slots(cluster.host(1), name, 1, CONVERGE_TIMEOUT, |_| true);
    }
}

#[test]
fn a_root_ca_rotation_moves_every_node_without_stopping_tasks() {
    let Some(cluster) = start(
        "a_root_ca_rotation_moves_every_node_without_stopping_tasks",
        5,
    ) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
    }
    cluster.form_swarm(3, 1);
    let manager = cluster.host(1);
    create_service(manager, "steady", 4);
    let before = wait_for_slots(manager, "steady", 4, CONVERGE_TIMEOUT, |_| true);
    let old_root = manager.shoal_ok(&["swarm", "ca"]);
    let old_token = manager.join_token("worker");

    let new_root = manager.shoal_ok(&["swarm", "ca", "--rotate"]);
    assert!(
        new_root.starts_with("-----BEGIN CERTIFICATE-----"),
        "{new_root}"
    );
    assert_ne!(new_root, old_root);
    // Every node ends up trusting only the new root, with a certificate from it.
    for host in cluster.hosts().iter().take(4) {
        let trust = host
            .data_root()
            .join("swarm/certificates/swarm-root-ca.crt");
        wait_until(
            &format!("{} trusting only the new root", host.name()),
            CONVERGE_TIMEOUT,
            || {
                let text = std::fs::read_to_string(&trust).map_err(|error| error.to_string())?;
                if text.trim() == new_root.trim() {
                    Ok(())
                } else {
                    Err(text)
                }
            },
        );
    }
    // The tasks never stopped, and the swarm still works.
    let after = wait_for_slots(manager, "steady", 4, CONVERGE_TIMEOUT, |_| true);
    assert_eq!(before, after, "tasks were replaced during the rotation");
    succeeds_within(
        cluster.host(2),
        "a write after the rotation",
        CONVERGE_TIMEOUT,
        &["service", "scale", "-d", "steady=6"],
    );
    wait_for_slots(manager, "steady", 6, CONVERGE_TIMEOUT, |_| true);

    // The join tokens name the new root: the old one is refused, the new one works.
    let newcomer = cluster.host(5);
    let remote = format!("{}:2377", manager.address());
    let refused = newcomer.shoal(&["swarm", "join", "--token", &old_token, &remote]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("does not match the join token"),
        "{}",
        output_text(&refused)
    );
    newcomer.swarm_join(&manager.join_token("worker"), manager);
    wait_until("five ready nodes", CONVERGE_TIMEOUT, || {
        let table = manager.node_table()?;
        let ready = table
            .values()
            .filter(|(status, _)| status == "Ready")
            .count();
        if ready == 5 {
            Ok(())
        } else {
            Err(format!("{table:?}"))
        }
    });
}

#[test]
fn a_rolling_update_survives_a_leader_failover_and_replaces_each_slot_once() {
    let Some(cluster) = start(
        "a_rolling_update_survives_a_leader_failover_and_replaces_each_slot_once",
        5,
    ) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
        host.import_busybox_as("busybox:v2");
    }
    cluster.form_swarm(3, 2);
    let (leader, survivor) = (cluster.host(1), cluster.host(2));
    // On the workers only, so the killed leader takes no task down with it; slowed by a delay
    // so the kill lands mid-update.
    leader.shoal_ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "4",
        "--init",
        "--constraint",
        "node.role==worker",
        "--update-delay",
        "1s",
        "--update-monitor",
        "1s",
        "busybox",
        "sleep",
        "86400",
    ]);
    leader.shoal_ok(&["service", "update", "-d", "--image", "busybox:v2", "web"]);
    wait_until("the first slot on the new image", CONVERGE_TIMEOUT, || {
        let rows = listed_tasks(leader, "web")?;
        let updated = rows
            .iter()
            .filter(|task| task.image == "busybox:v2" && task.current.starts_with("Running"))
            .count();
        if updated >= 1 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    leader.kill_daemon();

    wait_until("the update to complete on h2", CONVERGE_TIMEOUT, || {
        let output = survivor.shoal(&["service", "inspect", "web"]);
        if !output.status.success() {
            return Err(output_text(&output));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let state = value[0]["UpdateStatus"]["State"]
            .as_str()
            .unwrap_or_default();
        if state == "completed" {
            Ok(())
        } else {
            Err(format!("update state {state:?}"))
        }
    });
    // Each slot went to the new image exactly once: the new leader neither started over nor
    // left a slot behind, and no old-image task was made after the kill.
    let rows = wait_until("the task list", CONVERGE_TIMEOUT, || {
        listed_tasks(survivor, "web")
    });
    for slot in 1..=4 {
        let of_slot: Vec<_> = rows.iter().filter(|task| task.slot == slot).collect();
        let new_tasks = of_slot
            .iter()
            .filter(|task| task.image == "busybox:v2")
            .count();
        let old_tasks = of_slot.len() - new_tasks;
        assert_eq!((old_tasks, new_tasks), (1, 1), "slot {slot}: {rows:?}");
        assert!(
            of_slot
                .iter()
                .any(|task| task.image == "busybox:v2" && task.runs()),
            "slot {slot} runs the new image: {rows:?}"
        );
    }
}

/// The running tasks of `service` as `host` lists them: task ids.
fn running_task_ids(host: &TestHost, service: &str) -> BTreeSet<String> {
    running_by_slot(host, service)
        .unwrap_or_else(|error| panic!("{error}"))
        .into_values()
        .flatten()
        .map(|(id, _)| id)
        .collect()
}

/// Files under `dir` holding `needle`, leaving out files on a tmpfs (a container's in-memory
/// secrets directory).
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let grep = std::process::Command::new("grep")
        .args(["-rl", needle])
        .arg(dir)
        .output()
        .expect("grep");
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("reading the mount table");
    String::from_utf8_lossy(&grep.stdout)
        .lines()
        .filter(|path| {
            let in_memory = std::path::Path::new(path).ancestors().any(|dir| {
                mounts
                    .lines()
                    .any(|line| line.starts_with(&format!("tmpfs {} tmpfs ", dir.display())))
            });
            !in_memory
        })
        .map(str::to_owned)
        .collect()
}

const STACK_FILE: &str = r#"
services:
  web:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "tr a-z A-Z < /run/secrets/pw; cat /etc/app.conf; exec sleep 86400"]
    networks: [front]
    secrets: [pw]
    configs:
      - source: conf
        target: /etc/app.conf
    deploy:
      replicas: 2
      update_config:
        parallelism: 2
        order: start-first
        monitor: 1s
  api:
    image: busybox:latest
    init: true
    command: ["sleep", "86400"]
    networks: [front]
    deploy:
      replicas: 2
  db:
    image: busybox:latest
    init: true
    command: ["sleep", "86400"]
networks:
  front: {}
secrets:
  pw:
    file: ./pw.txt
configs:
  conf:
    file: ./app.conf
"#;

#[test]
fn a_stack_deploys_redeploys_only_what_changed_and_is_removed_whole() {
    let Some(cluster) = start(
        "a_stack_deploys_redeploys_only_what_changed_and_is_removed_whole",
        3,
    ) else {
        return;
    };
    for host in cluster.hosts() {
        host.import_busybox();
        host.import_busybox_as("busybox:v2");
    }
    cluster.form_swarm(1, 2);
    let manager = cluster.host(1);
    let dir = manager.dir().join("stack");
    std::fs::create_dir_all(&dir).expect("stack directory");
    std::fs::write(dir.join("pw.txt"), "hunter2-stack").expect("secret file");
    std::fs::write(dir.join("app.conf"), "listen=8080\n").expect("config file");
    let file = dir.join("stack.yml");
    std::fs::write(&file, STACK_FILE).expect("compose file");
    let file = file.display().to_string();

    let deployed = manager.shoal_ok(&["stack", "deploy", "-c", &file, "--detach=false", "app"]);
    for line in [
        "Creating network app_front",
        "Creating secret app_pw",
        "Creating config app_conf",
        "Creating service app_web",
        "Creating service app_api",
        "Creating service app_db",
    ] {
        assert!(deployed.contains(line), "{line:?} in {deployed}");
    }
    let listed = manager.shoal_ok(&["stack", "ls", "--format", "json"]);
    assert_eq!(
        json_lines(&listed),
        vec![serde_json::json!({"Name": "app", "Services": "3"})]
    );
    let services = manager.shoal_ok(&["stack", "services", "-q", "app"]);
    assert_eq!(services.lines().count(), 3, "{services}");
    let tasks = manager.shoal_ok(&["stack", "ps", "-q", "app"]);
    assert_eq!(tasks.lines().count(), 5, "{tasks}");

    // The task reads the secret and the config; no worker has the secret on disk.
    wait_until("web's logs", CONVERGE_TIMEOUT, || {
        let logs = output_text(&manager.shoal(&["service", "logs", "app_web"]));
        if logs.matches("HUNTER2-STACK").count() == 2 && logs.contains("listen=8080") {
            Ok(())
        } else {
            Err(logs)
        }
    });
    for worker in [cluster.host(2), cluster.host(3)] {
        let on_disk = files_holding(&worker.data_root(), "hunter2-stack");
        assert!(
            on_disk.is_empty(),
            "the secret is on {}'s disk: {on_disk:?}",
            worker.name()
        );
    }

    // An unchanged file changes nothing.
    let again = manager.shoal_ok(&["stack", "deploy", "-c", &file, "app"]);
    assert!(
        !again.contains("Creating") && !again.contains("Updating"),
        "{again}"
    );

    // A new image for web: only web's tasks are replaced, with its update settings.
    let api_before = running_task_ids(manager, "app_api");
    let db_before = running_task_ids(manager, "app_db");
    let web_before = running_task_ids(manager, "app_web");
    std::fs::write(
        dir.join("stack.yml"),
        STACK_FILE.replacen("busybox:latest", "busybox:v2", 1),
    )
    .expect("changed compose file");
    let redeployed = manager.shoal_ok(&["stack", "deploy", "-c", &file, "--detach=false", "app"]);
    assert_eq!(
        redeployed
            .lines()
            .filter(|line| line.starts_with("Creating") || line.starts_with("Updating"))
            .map(|line| line.split(" (id:").next().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["Updating service app_web"],
        "{redeployed}"
    );
    let web_after = running_task_ids(manager, "app_web");
    assert_eq!(web_after.len(), 2);
    assert!(
        web_after.is_disjoint(&web_before),
        "{web_before:?} -> {web_after:?}"
    );
    assert_eq!(running_task_ids(manager, "app_api"), api_before);
    assert_eq!(running_task_ids(manager, "app_db"), db_before);

    // Rolling back the stack returns web to the first image.
    let rolled_back = manager.shoal_ok(&["stack", "rollback", "--detach=false", "app"]);
    assert!(
        rolled_back.contains("Updating service app_web"),
        "{rolled_back}"
    );
    let images = manager.shoal_ok(&["stack", "services", "--format", "json", "app"]);
    assert!(
        json_lines(&images)
            .iter()
            .all(|service| service["Image"] == "busybox:latest"),
        "{images}"
    );

    // --prune removes a service the file no longer has.
    let db =
        "  db:\n    image: busybox:latest\n    init: true\n    command: [\"sleep\", \"86400\"]\n";
    assert!(STACK_FILE.contains(db));
    let without_db = STACK_FILE.replace(db, "");
    std::fs::write(dir.join("stack.yml"), without_db).expect("compose file without db");
    let pruned = manager.shoal_ok(&["stack", "deploy", "-c", &file, "--prune", "app"]);
    assert!(pruned.contains("Removing service app_db"), "{pruned}");

    // A bad file is refused with the key named, before anything is written.
    std::fs::write(
        dir.join("stack.yml"),
        "services:\n  web:\n    image: busybox\n    replicas: 2\n",
    )
    .expect("bad compose file");
    let refused = manager.shoal(&["stack", "deploy", "-c", &file, "app"]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("replicas"),
        "{}",
        output_text(&refused)
    );

    let removed = manager.shoal_ok(&["stack", "rm", "app"]);
    for line in [
        "Removing service app_web",
        "Removing service app_api",
        "Removing secret app_pw",
        "Removing config app_conf",
        "Removing network app_front",
    ] {
        assert!(removed.contains(line), "{line:?} in {removed}");
    }
    wait_until("the stack's services to go", CONVERGE_TIMEOUT, || {
        let left = manager.shoal_ok(&["service", "ls", "-q"]);
        if left.trim().is_empty() {
            Ok(())
        } else {
            Err(left)
        }
    });
    assert!(manager.shoal_ok(&["secret", "ls", "-q"]).trim().is_empty());
    let listed = manager.shoal_ok(&["stack", "ls", "--format", "json"]);
    assert!(listed.trim().is_empty(), "{listed}");
}

/// A manager's data key file on `host`, as it is now.
fn data_key_file(host: &TestHost) -> String {
    std::fs::read_to_string(host.data_root().join("swarm/raft-data-key.json"))
        .unwrap_or_else(|error| panic!("{}: reading the data key file: {error}", host.name()))
}

/// Runs `shoal swarm unlock` on `host` with `key` piped to its stdin.
fn unlock(host: &TestHost, key: &str) -> std::process::Output {
    shoal_tests::run_with_timeout(
        std::process::Command::new("sh").args([
            "-c",
            r#"printf '%s\n' "$1" | "$0" -H "$2" swarm unlock"#,
            &shoal_tests::default_shoal_binary().display().to_string(),
            key,
            &host.host_url(),
        ]),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|error| panic!("{}: {error}", host.name()))
}

fn locked(host: &TestHost) -> Result<(), String> {
    let info = host.shoal_ok(&["info"]);
    let refused = host.shoal(&["node", "ls"]);
    if info.contains("Swarm: locked")
        && String::from_utf8_lossy(&refused.stderr)
            .contains("Swarm is encrypted and needs to be unlocked")
    {
        Ok(())
    } else {
        Err(format!("{info}; node ls: {}", output_text(&refused)))
    }
}

#[test]
fn autolock_reaches_every_manager_and_a_manager_down_during_a_rotation_keeps_the_old_key() {
    let Some(cluster) = start(
        "autolock_reaches_every_manager_and_a_manager_down_during_a_rotation_keeps_the_old_key",
        3,
    ) else {
        return;
    };
    cluster.form_swarm(3, 0);
    let (first, third) = (cluster.host(1), cluster.host(3));

    // Turned on after the others joined, autolock seals every manager's data key.
    let on = first.shoal_ok(&["swarm", "update", "--autolock=true"]);
    let key = on
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in {on:?}"))
        .to_owned();
    for host in cluster.hosts() {
        wait_until("the data key file sealed", CONVERGE_TIMEOUT, || {
            let file = data_key_file(host);
            if file.contains("\"sealed_by_unlock_key\": true") {
                Ok(())
            } else {
                Err(file)
            }
        });
    }

    // A restarted manager is locked; the other two keep the swarm writable.
    third.kill_daemon();
    third.restart_daemon();
    wait_until("the restarted manager locked", CONVERGE_TIMEOUT, || {
        locked(third)
    });
    succeeds_within(
        first,
        "a write with one manager locked",
        CONVERGE_TIMEOUT,
        &["secret", "create", "while-locked", "/etc/hostname"],
    );

    // A rotation while it is locked: the running managers re-seal with the new key, the locked
    // one still opens with the old key, then re-seals with the new one once it has caught up.
    let sealed_before: Vec<String> = [1, 2].map(|n| data_key_file(cluster.host(n))).into();
    let new_key = first
        .shoal_ok(&["swarm", "unlock-key", "--rotate", "-q"])
        .trim()
        .to_owned();
    assert_ne!(new_key, key);
    for (index, number) in [1, 2].into_iter().enumerate() {
        wait_until("a running manager re-sealed", CONVERGE_TIMEOUT, || {
            if data_key_file(cluster.host(number)) != sealed_before[index] {
                Ok(())
            } else {
                Err("unchanged".to_owned())
            }
        });
    }
    let sealed_by_old_key = data_key_file(third);
    let refused = unlock(third, &new_key);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("invalid key provided"),
        "{}",
        output_text(&refused)
    );
    let unlocked = unlock(third, &key);
    assert!(unlocked.status.success(), "{}", output_text(&unlocked));
    wait_until("the unlocked manager re-sealed", CONVERGE_TIMEOUT, || {
        if data_key_file(third) != sealed_by_old_key {
            Ok(())
        } else {
            Err("unchanged".to_owned())
        }
    });
    succeeds_within(
        third,
        "the unlocked manager serving the swarm",
        CONVERGE_TIMEOUT,
        &["secret", "inspect", "while-locked"],
    );

    // From now on only the new key unlocks it.
    third.kill_daemon();
    third.restart_daemon();
    wait_until("the restarted manager locked", CONVERGE_TIMEOUT, || {
        locked(third)
    });
    let old = unlock(third, &key);
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("invalid key provided"),
        "{}",
        output_text(&old)
    );
    let unlocked = unlock(third, &new_key);
    assert!(unlocked.status.success(), "{}", output_text(&unlocked));
    wait_until("all three managers reachable", CONVERGE_TIMEOUT, || {
        let table = first.node_table()?;
        let managing = table
            .values()
            .filter(|(_, manager)| manager == "Leader" || manager == "Reachable")
            .count();
        if managing == 3 {
            Ok(())
        } else {
            Err(format!("{table:?}"))
        }
    });
}
