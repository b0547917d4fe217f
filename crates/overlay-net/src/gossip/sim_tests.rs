//! Deterministic simulation of several gossip cores on an in-memory network that loses,
//! delays and partitions: convergence, dead-node removal, partition heal, interest, keys.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::core::{GossipConfig, GossipCore, MemberId, Output};
use super::seal::{GossipKey, KEY_LEN, Keyring};
use super::table::{EndpointKey, EndpointRecord, VisibleEndpoint};

enum Message {
    Datagram { from: usize, frame: Vec<u8> },
    PushPullRequest { from: usize, frame: Vec<u8> },
    PushPullReply(Vec<u8>),
}

struct Sim {
    base: Instant,
    now: Duration,
    nodes: Vec<Option<GossipCore>>,
    addrs: Vec<SocketAddr>,
    /// (due, destination, message), kept in send order.
    in_flight: Vec<(Duration, usize, Message)>,
    timers: Vec<(Duration, usize, foca::Timer<MemberId>)>,
    rng: StdRng,
    loss: f64,
    /// Nodes in different groups cannot reach each other.
    groups: Vec<u8>,
}

const STEP: Duration = Duration::from_millis(10);
const LATENCY: Duration = Duration::from_millis(2);

fn keyring(id: u32, byte: u8) -> Keyring {
    Keyring::new(GossipKey::new(id, [byte; KEY_LEN]), vec![]).expect("one key")
}

fn name(index: usize) -> String {
    format!("node-{index}")
}

fn record(node: usize, endpoint: usize) -> EndpointRecord {
    EndpointRecord {
        task_name: format!("web.{endpoint}.t{node}x{endpoint}"),
        address: format!("10.0.{node}.{}/16", endpoint + 2),
        mac: format!("02:42:0a:00:{node:02x}:{:02x}", endpoint + 2),
        tunnel_endpoint: IpAddr::from([192, 168, 0, node as u8 + 1]),
        service_id: "svc-web".to_owned(),
        service_name: "web".to_owned(),
        virtual_ip: Some("10.0.0.2/16".to_owned()),
        aliases: vec!["www".to_owned()],
        healthy: true,
        ingress_ports: Vec::new(),
    }
}

impl Sim {
    fn new(seed: u64, count: usize, loss: f64) -> Self {
        Self::with_keyrings(seed, (0..count).map(|_| keyring(1, 1)).collect(), loss)
    }

    fn with_keyrings(seed: u64, keyrings: Vec<Keyring>, loss: f64) -> Self {
        let count = keyrings.len();
        let addrs: Vec<SocketAddr> = (0..count)
            .map(|index| SocketAddr::from(([127, 0, 0, 1], 7000 + index as u16)))
            .collect();
        let nodes = keyrings
            .into_iter()
            .enumerate()
            .map(|(index, keyring)| {
                let me = MemberId {
                    name: name(index),
                    addr: addrs[index],
                    generation: 1,
                };
                let mut salt = [0u8; 16];
                salt[..8].copy_from_slice(&(seed ^ index as u64).to_le_bytes());
                salt[8] = index as u8;
                Some(GossipCore::new(
                    me,
                    GossipConfig::default(),
                    keyring,
                    salt,
                    seed.wrapping_add(index as u64),
                ))
            })
            .collect();
        let mut sim = Self {
            base: Instant::now(),
            now: Duration::ZERO,
            nodes,
            addrs,
            in_flight: Vec::new(),
            timers: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            loss,
            groups: vec![0; count],
        };
        let seeds = [sim.addrs[0]];
        for index in 1..count {
            sim.with_node(index, |core| core.join(&seeds));
        }
        sim
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn with_node(&mut self, index: usize, act: impl FnOnce(&mut GossipCore)) {
        let Some(core) = self.nodes[index].as_mut() else {
            return;
        };
        act(core);
        let outputs = core.take_outputs();
        self.route(index, outputs);
    }

    fn reachable(&self, from: usize, to: usize) -> bool {
        self.nodes[from].is_some()
            && self.nodes[to].is_some()
            && self.groups[from] == self.groups[to]
    }

    fn route(&mut self, from: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Datagram { to, frame } => {
                    let Some(to) = self.addrs.iter().position(|addr| *addr == to) else {
                        continue;
                    };
                    if self.rng.random_bool(self.loss) {
                        continue;
                    }
                    self.in_flight.push((
                        self.now + LATENCY,
                        to,
                        Message::Datagram { from, frame },
                    ));
                }
                Output::PushPull { to, frame } => {
                    let Some(to) = self.addrs.iter().position(|addr| *addr == to) else {
                        continue;
                    };
                    self.in_flight.push((
                        self.now + LATENCY,
                        to,
                        Message::PushPullRequest { from, frame },
                    ));
                }
                Output::Stream { to, frame } => {
                    let Some(to) = self.addrs.iter().position(|addr| *addr == to) else {
                        continue;
                    };
                    self.in_flight.push((
                        self.now + LATENCY,
                        to,
                        Message::PushPullRequest { from, frame },
                    ));
                }
                Output::Timer { after, timer } => {
                    self.timers.push((self.now + after, from, timer));
                }
            }
        }
    }

    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        let instant = self.instant();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.in_flight = later;
        for (_, to, message) in due {
            match message {
                Message::Datagram { from, frame } => {
                    if !self.reachable(from, to) {
                        continue;
                    }
                    self.with_node(to, |core| core.handle_datagram(instant, &frame));
                }
                Message::PushPullRequest { from, frame } => {
                    // TCP: nothing is lost, but a partition or a dead end refuses the connection.
                    if !self.reachable(from, to) {
                        continue;
                    }
                    let mut reply = None;
                    self.with_node(to, |core| reply = core.handle_push_pull(instant, &frame));
                    if let Some(reply) = reply {
                        self.in_flight
                            .push((now + LATENCY, from, Message::PushPullReply(reply)));
                    }
                }
                Message::PushPullReply(frame) => {
                    self.with_node(to, |core| core.handle_push_pull_reply(instant, &frame));
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.timers = later;
        for (_, node, timer) in due {
            self.with_node(node, |core| core.handle_timer(timer));
        }
        for index in 0..self.nodes.len() {
            self.with_node(index, |core| core.tick(instant));
        }
    }

    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    fn visible(&self, index: usize) -> BTreeMap<EndpointKey, VisibleEndpoint> {
        self.nodes[index]
            .as_ref()
            .map(GossipCore::visible)
            .unwrap_or_default()
    }

    fn converged(&self, expected: usize) -> bool {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|index| self.nodes[*index].is_some())
            .collect();
        let first = self.visible(live[0]);
        first.len() == expected && live.iter().all(|index| self.visible(*index) == first)
    }

    /// Runs until every live node holds the same `expected` endpoints, or `limit` passes;
    /// returns how long it took.
    fn run_until_converged(&mut self, expected: usize, limit: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            if self.converged(expected) {
                return Some(self.now - start);
            }
            self.run(STEP);
        }
        None
    }

    fn publish(&mut self, node: usize, network: &str, count: usize) {
        let network = network.to_owned();
        self.with_node(node, |core| {
            for endpoint in 0..count {
                core.publish(
                    &network,
                    &format!("t{node}x{endpoint}"),
                    record(node, endpoint),
                )
                .expect("attached");
            }
        });
    }
}

#[test]
fn gossip_sim_five_nodes_converge_despite_loss() {
    for seed in 1..=4 {
        let mut sim = Sim::new(seed, 5, 0.2);
        sim.run(Duration::from_secs(3));
        for node in 0..5 {
            sim.with_node(node, |core| core.join_network("net-a"));
        }
        sim.run(Duration::from_millis(500));
        for node in 0..5 {
            sim.publish(node, "net-a", 40);
        }
        let took = sim.run_until_converged(200, Duration::from_secs(15));
        assert!(
            took.is_some(),
            "seed {seed}: 5 nodes did not converge on 200 endpoints"
        );
    }
}

fn converged_cluster(seed: u64, count: usize, per_node: usize) -> Sim {
    let mut sim = Sim::new(seed, count, 0.05);
    sim.run(Duration::from_secs(3));
    for node in 0..count {
        sim.with_node(node, |core| core.join_network("net-a"));
    }
    sim.run(Duration::from_millis(500));
    for node in 0..count {
        sim.publish(node, "net-a", per_node);
    }
    let expected = count * per_node;
    assert!(
        sim.run_until_converged(expected, Duration::from_secs(10))
            .is_some(),
        "seed {seed}: the cluster did not converge before the test began"
    );
    sim
}

fn endpoints_of(sim: &Sim, viewer: usize, node: usize) -> usize {
    sim.visible(viewer)
        .values()
        .filter(|endpoint| endpoint.node == name(node))
        .count()
}

#[test]
fn gossip_sim_a_dead_nodes_endpoints_are_gone_everywhere_within_3_s() {
    for seed in 1..=4 {
        let mut sim = converged_cluster(seed, 5, 10);
        sim.nodes[4] = None;
        let start = sim.now;
        while (0..4).any(|viewer| endpoints_of(&sim, viewer, 4) > 0) {
            assert!(
                sim.now - start < Duration::from_secs(3),
                "seed {seed}: node-4's endpoints still visible 3 s after it died"
            );
            sim.run(STEP);
        }
        assert_eq!(
            sim.visible(0).len(),
            40,
            "seed {seed}: the others' endpoints stay"
        );
        // They stay gone: a stale copy still travelling is refused.
        sim.run(Duration::from_secs(15));
        assert!(sim.converged(40), "seed {seed}: the survivors disagree");
    }
}

#[test]
fn gossip_sim_both_sides_of_a_healed_partition_converge() {
    for seed in 1..=3 {
        let mut sim = converged_cluster(seed, 5, 10);
        sim.groups = vec![0, 0, 1, 1, 1];
        sim.run(Duration::from_secs(10));
        assert_eq!(
            endpoints_of(&sim, 0, 3),
            0,
            "seed {seed}: the far side is declared down"
        );
        assert_eq!(
            endpoints_of(&sim, 3, 0),
            0,
            "seed {seed}: the far side is declared down"
        );
        // Changes on both sides while apart.
        sim.publish(0, "net-a", 15);
        let instant = sim.instant();
        sim.with_node(3, |core| core.withdraw("net-a", "t3x0", instant));
        sim.groups = vec![0; 5];
        let took = sim.run_until_converged(50 + 5 - 1, Duration::from_secs(30));
        assert!(
            took.is_some(),
            "seed {seed}: no convergence 30 s after the partition healed"
        );
        assert!(!sim.visible(1).contains_key(&EndpointKey {
            network: "net-a".to_owned(),
            endpoint: "t3x0".to_owned(),
        }));
    }
}

/// After a heal, a node that was cut off withdraws its endpoints and leaves the network (its
/// tasks were replaced elsewhere meanwhile): every other node forgets them.
#[test]
fn gossip_sim_a_healed_node_that_withdraws_and_leaves_is_forgotten_everywhere() {
    for seed in 1..=3 {
        let mut sim = converged_cluster(seed, 3, 2);
        sim.groups = vec![0, 0, 1];
        sim.run(Duration::from_secs(10));
        assert_eq!(endpoints_of(&sim, 0, 2), 0, "seed {seed}: node 2 is down");
        sim.groups = vec![0; 3];
        let took = sim.run_until_converged(6, Duration::from_secs(30));
        assert!(took.is_some(), "seed {seed}: no convergence after the heal");
        let instant = sim.instant();
        sim.with_node(2, |core| {
            core.withdraw("net-a", "t2x0", instant);
            core.withdraw("net-a", "t2x1", instant);
            core.leave_network("net-a");
        });
        sim.run(Duration::from_secs(15));
        for viewer in 0..2 {
            assert_eq!(
                endpoints_of(&sim, viewer, 2),
                0,
                "seed {seed}: node {viewer} still shows node 2's endpoints"
            );
        }
    }
}

#[test]
fn gossip_sim_a_node_stores_only_the_networks_it_is_on() {
    let mut sim = Sim::new(7, 3, 0.0);
    sim.run(Duration::from_secs(2));
    sim.with_node(0, |core| core.join_network("net-a"));
    sim.with_node(1, |core| core.join_network("net-a"));
    sim.with_node(2, |core| core.join_network("net-b"));
    sim.run(Duration::from_millis(500));
    sim.publish(0, "net-a", 5);
    sim.run(Duration::from_secs(12));
    assert_eq!(sim.visible(1).len(), 5);
    assert!(sim.visible(2).is_empty(), "node-2 is not on net-a");

    // Joining fetches the network's endpoints; leaving forgets them, and the others drop the
    // leaver's.
    sim.with_node(2, |core| core.join_network("net-a"));
    sim.run(Duration::from_secs(1));
    assert_eq!(sim.visible(2).len(), 5);
    sim.with_node(2, |core| {
        core.publish("net-a", "t2x0", record(2, 0))
            .expect("attached");
    });
    sim.run(Duration::from_secs(1));
    assert_eq!(endpoints_of(&sim, 0, 2), 1);
    sim.with_node(2, |core| core.leave_network("net-a"));
    sim.run(Duration::from_secs(1));
    assert!(sim.visible(2).is_empty());
    assert_eq!(endpoints_of(&sim, 0, 2), 0);
    assert_eq!(sim.visible(0).len(), 5);
}

#[test]
fn gossip_sim_a_node_without_the_key_is_kept_out_and_counted() {
    let mut sim = Sim::with_keyrings(
        11,
        vec![keyring(1, 1), keyring(1, 1), keyring(1, 1), keyring(9, 9)],
        0.0,
    );
    sim.run(Duration::from_secs(3));
    for node in 0..4 {
        sim.with_node(node, |core| core.join_network("net-a"));
    }
    sim.run(Duration::from_millis(500));
    sim.publish(3, "net-a", 3);
    sim.publish(0, "net-a", 2);
    sim.run(Duration::from_secs(12));
    let core = |index: usize| sim.nodes[index].as_ref().expect("running");
    assert!(!core(0).live_members().contains("node-3"));
    assert_eq!(core(3).live_members().len(), 0);
    assert_eq!(endpoints_of(&sim, 1, 3), 0);
    assert!(
        core(0).stats().dropped_unknown_key > 0,
        "node-0 counts the intruder's announcements"
    );
}

#[test]
fn gossip_sim_a_restarted_node_replaces_what_it_published_before() {
    for seed in 1..=3 {
        let mut sim = converged_cluster(seed, 5, 10);
        // node-4 restarts at once (faster than failure detection), with a fresh clock and a
        // higher generation, and now runs three other tasks.
        let me = MemberId {
            name: name(4),
            addr: sim.addrs[4],
            generation: 2,
        };
        sim.nodes[4] = Some(GossipCore::new(
            me,
            GossipConfig::default(),
            keyring(1, 1),
            [44; 16],
            seed + 100,
        ));
        let seeds = [sim.addrs[0]];
        sim.with_node(4, |core| {
            core.join(&seeds);
            core.join_network("net-a");
            for endpoint in 0..3 {
                core.publish("net-a", &format!("new{endpoint}"), record(4, endpoint))
                    .expect("attached");
            }
        });
        let took = sim.run_until_converged(43, Duration::from_secs(20));
        assert!(
            took.is_some(),
            "seed {seed}: no convergence after node-4 restarted"
        );
        let endpoints: Vec<String> = sim
            .visible(0)
            .iter()
            .filter(|(_, seen)| seen.node == name(4))
            .map(|(key, _)| key.endpoint.clone())
            .collect();
        assert_eq!(endpoints, ["new0", "new1", "new2"], "seed {seed}");
    }
}
