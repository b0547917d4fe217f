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
    seed: u64,
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
            seed,
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
