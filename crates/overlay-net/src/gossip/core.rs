//! The gossip core of one node: SWIM membership (foca) and the endpoint table's dissemination
//! and anti-entropy, as a state machine the shell feeds with frames, timers and `now`.
//!
//! It reads no clock and no randomness of its own (a seed and a salt are passed in) and does no
//! IO: what it wants sent or scheduled accumulates as [`Output`]s the shell drains.
//!
//! Dissemination: every change is queued and sent, each gossip round, to `gossip_fanout` random
//! live peers on its network (membership announcements to any live peer), for
//! `retransmit_mult × ⌈log10(members + 1)⌉` rounds; a peer that stores it queues it in turn.
//! Anti-entropy: every `push_pull_interval`, and whenever a peer comes up (a new node, a
//! returning one, the other side of a healed partition), a full-state exchange over TCP, which
//! is how anything gossip lost still converges.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use foca::{AccumulatingRuntime, Foca, Identity, NoCustomBroadcast, PostcardCodec, Timer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::GossipError;
use super::seal::{Channel, Keyring, OpenError, SALT_LEN, SEAL_OVERHEAD, Sealer};
use super::table::{
    Applied, EndpointKey, EndpointRecord, EndpointTable, NodeName, TableChange, Update,
    VisibleEndpoint,
};

/// A node's identity in the membership: its name, its gossip address, and a generation that
/// grows each time it (re)joins, so a returning node wins over its old self.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberId {
    /// The node's cluster id.
    pub name: NodeName,
    /// Where its gossip listens (UDP and TCP on one port).
    pub addr: SocketAddr,
    /// Grows on every rejoin.
    pub generation: u64,
}

impl Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// The gossip's timings and sizes.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// How often a node probes a random member.
    pub probe_period: Duration,
    /// How long a direct probe waits before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// How long a suspected member has to refute before it is declared down.
    pub suspect_to_down_after: Duration,
    /// How often queued table changes are sent.
    pub gossip_interval: Duration,
    /// To how many peers each round sends them.
    pub gossip_fanout: usize,
    /// Rounds a change is sent for, times ⌈log10(members + 1)⌉.
    pub retransmit_mult: u32,
    /// How often a node exchanges its full state with a random peer.
    pub push_pull_interval: Duration,
    /// How often a node announces itself to members it believes down, so both sides of a
    /// healed partition find each other.
    pub rejoin_interval: Duration,
    /// How long a withdrawn endpoint's tombstone is kept.
    pub tombstone_ttl: Duration,
    /// The largest UDP datagram sent, sealing included.
    pub max_datagram: usize,
}

impl Default for GossipConfig {
    /// Faster than memberlist's LAN defaults (probe 1 s, suspicion 4 s) so a dead node's
    /// endpoints are gone everywhere within 3 s: with N members, each probed in turn, someone
    /// probes the dead node within 4 probe periods of 300 ms in a 5-node cluster, it is suspected
    /// 300 ms later, declared down 1 s after that, and the news spreads in a gossip round or two.
    /// A 1,400-byte datagram as Docker's networkdb.
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(150),
            suspect_to_down_after: Duration::from_millis(1000),
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            retransmit_mult: 4,
            push_pull_interval: Duration::from_secs(10),
            rejoin_interval: Duration::from_secs(2),
            tombstone_ttl: Duration::from_secs(30 * 60),
            max_datagram: 1400,
        }
    }
}

/// Counters of what the core received and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Frames sealed under a key id not in the ring.
    pub dropped_unknown_key: u64,
    /// Frames naming a known key that did not authenticate.
    pub dropped_forged: u64,
    /// Frames too short, of another format, or that did not decode.
    pub dropped_malformed: u64,
    /// Table changes too large for one datagram (they travel by push-pull only).
    pub oversized_updates: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Push-pull exchanges started.
    pub push_pulls_started: u64,
}

impl GossipStats {
    /// Frames dropped because no current key authenticates them.
    pub fn dropped_unauthenticated(&self) -> u64 {
        self.dropped_unknown_key + self.dropped_forged
    }
}

/// What the core wants done.
#[derive(Debug)]
pub enum Output {
    /// Send this sealed datagram.
    Datagram {
        /// To this gossip address.
        to: SocketAddr,
        /// The sealed bytes.
        frame: Vec<u8>,
    },
    /// Open a TCP connection, send this sealed frame, and feed the reply frame to
    /// [`GossipCore::handle_push_pull_reply`].
    PushPull {
        /// To this gossip address.
        to: SocketAddr,
        /// The sealed request.
        frame: Vec<u8>,
    },
    /// Open a TCP connection and send this sealed frame; no reply comes. Carries a round's
    /// changes for one peer when they would take more than a few datagrams.
    Stream {
        /// To this gossip address.
        to: SocketAddr,
        /// The sealed changes.
        frame: Vec<u8>,
    },
    /// Feed `timer` back to [`GossipCore::handle_timer`] after `after`.
    Timer {
        /// The delay.
        after: Duration,
        /// The membership timer.
        timer: Timer<MemberId>,
    },
}

#[derive(Serialize, Deserialize)]
enum Wire {
    Swim(Vec<u8>),
    Table(Vec<Update>),
    PushPull {
        from: MemberId,
        updates: Vec<Update>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PendingKey {
    Node(NodeName),
    Endpoint(EndpointKey),
}

fn pending_key(update: &Update) -> PendingKey {
    match update {
        Update::NodeNetworks { node, .. } => PendingKey::Node(node.clone()),
        Update::Endpoint { key, .. } => PendingKey::Endpoint(key.clone()),
    }
}

/// A change waiting to be gossiped.
struct Pending {
    update: Update,
    /// Rounds it is still sent in.
    rounds: u32,
    /// Peers it was already sent to, who are not picked for it again.
    sent_to: BTreeSet<NodeName>,
}

/// A round's changes for one peer go by TCP rather than UDP past this many datagrams: a burst
/// of datagrams overflows the receiver's socket buffer and is lost.
const MAX_DATAGRAMS_PER_PEER: usize = 4;

/// Room for the wire enum's tag and a vector's length around the payload.
const WIRE_OVERHEAD: usize = 8;

type Swim = Foca<MemberId, PostcardCodec, StdRng, NoCustomBroadcast>;

/// One node's gossip state.
pub struct GossipCore {
    me: MemberId,
    config: GossipConfig,
    swim: Swim,
    runtime: AccumulatingRuntime<MemberId>,
    rng: StdRng,
    table: EndpointTable,
    members: BTreeMap<NodeName, MemberId>,
    pending: BTreeMap<PendingKey, Pending>,
    sealer: Sealer,
    stats: GossipStats,
    outputs: Vec<Output>,
    changes: Vec<TableChange>,
    next_gossip: Option<Instant>,
    next_push_pull: Option<Instant>,
    next_reap: Option<Instant>,
    seeds: Vec<SocketAddr>,
    next_seed_announce: Option<Instant>,
}

impl GossipCore {
    /// A node `me` that seals with `keyring` (`salt` fresh per process) and draws its random
    /// choices from `seed`.
    pub fn new(
        me: MemberId,
        config: GossipConfig,
        keyring: Keyring,
        salt: [u8; SALT_LEN],
        seed: u64,
    ) -> Self {
        let swim_config = swim_config(&config);
        let swim = Foca::new(
            me.clone(),
            swim_config,
            StdRng::seed_from_u64(seed),
            PostcardCodec,
        );
        let table = EndpointTable::new(me.name.clone(), config.tombstone_ttl);
        Self {
            me,
            config,
            swim,
            runtime: AccumulatingRuntime::new(),
            rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            table,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            sealer: Sealer::new(keyring, salt),
            stats: GossipStats::default(),
            outputs: Vec::new(),
            changes: Vec::new(),
            next_gossip: None,
            next_push_pull: None,
            next_reap: None,
            seeds: Vec::new(),
            next_seed_announce: None,
        }
    }

    /// This node's identity as it is now (the generation grows when it rejoins).
    pub fn identity(&self) -> &MemberId {
        self.swim.identity()
    }

    /// Asks each seed address to let this node in, and again every `rejoin_interval` while
    /// this node knows no live peer (an announcement is a datagram, and may be lost).
    pub fn join(&mut self, seeds: &[SocketAddr]) {
        self.seeds = seeds.to_vec();
        self.announce_to_seeds();
    }

    fn announce_to_seeds(&mut self) {
        for &addr in &self.seeds {
            if addr == self.me.addr {
                continue;
            }
            // Only the address matters for an announcement: the seed answers with who it is.
            let seed = MemberId {
                name: String::new(),
                addr,
                generation: 0,
            };
            let _ = self.swim.announce(seed, &mut self.runtime);
        }
        self.after_swim();
    }

    /// Leaves the membership gracefully: peers drop this node's endpoints at once.
    pub fn leave(&mut self) {
        let _ = self.swim.leave_cluster(&mut self.runtime);
        self.after_swim();
    }

    /// Replaces the keyring (the managers rotate it).
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.sealer.set_keyring(keyring);
    }

    /// Joins `network`'s gossip: this node stores and relays its endpoints from now on.
    pub fn join_network(&mut self, network: &str) {
        if let Some(update) = self.table.join_network(network) {
            self.enqueue(update);
            // Fetches the network's endpoints from the peers already on it now, rather than at
            // the next periodic exchange.
            let peers: Vec<NodeName> = self.members.keys().cloned().collect();
            for peer in peers {
                if self.table.node_on_network(&peer, network) {
                    self.push_pull_to(&peer);
                }
            }
        }
    }

    /// Leaves `network`'s gossip and forgets its endpoints.
    pub fn leave_network(&mut self, network: &str) {
        let (update, changes) = self.table.leave_network(network);
        self.changes.extend(changes);
        if let Some(update) = update {
            self.enqueue(update);
        }
    }

    /// Publishes one of this node's endpoints.
    pub fn publish(
        &mut self,
        network: &str,
        endpoint: &str,
        record: EndpointRecord,
    ) -> Result<(), GossipError> {
        if !self.table.attached().contains(network) {
            return Err(GossipError::NotAttached(network.to_owned()));
        }
        let key = EndpointKey {
            network: network.to_owned(),
            endpoint: endpoint.to_owned(),
        };
        if let Some(update) = self.table.publish(key.clone(), record.clone()) {
            self.changes.push(TableChange::Upserted(
                key,
                VisibleEndpoint {
                    node: self.me.name.clone(),
                    record,
                },
            ));
            self.enqueue(update);
        }
        Ok(())
    }

    /// Withdraws one of this node's endpoints.
    pub fn withdraw(&mut self, network: &str, endpoint: &str, now: Instant) {
        let key = EndpointKey {
            network: network.to_owned(),
            endpoint: endpoint.to_owned(),
        };
        if let Some(update) = self.table.withdraw(&key, now) {
            self.changes.push(TableChange::Removed(key));
            self.enqueue(update);
        }
    }

    /// A datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, frame: &[u8]) {
        let Some(wire) = self.open(Channel::Datagram, frame) else {
            return;
        };
        match wire {
            Wire::Swim(data) => {
                let _ = self.swim.handle_data(&data, &mut self.runtime);
                self.after_swim();
            }
            Wire::Table(updates) => self.apply_all(updates, now, true),
            Wire::PushPull { .. } => self.stats.dropped_malformed += 1,
        }
    }

    /// A membership timer fired.
    pub fn handle_timer(&mut self, timer: Timer<MemberId>) {
        let _ = self.swim.handle_timer(timer, &mut self.runtime);
        self.after_swim();
    }

    /// A frame arrived on a TCP connection: a push-pull request, answered with the sealed reply
    /// to send back, or a peer's bulk changes, which need no answer.
    pub fn handle_push_pull(&mut self, now: Instant, frame: &[u8]) -> Option<Vec<u8>> {
        let (from, updates) = match self.open(Channel::Stream, frame)? {
            Wire::PushPull { from, updates } => (from, updates),
            Wire::Table(updates) => {
                self.apply_all(updates, now, true);
                return None;
            }
            Wire::Swim(_) => {
                self.stats.dropped_malformed += 1;
                return None;
            }
        };
        self.apply_all(updates, now, false);
        let reply = Wire::PushPull {
            from: self.identity().clone(),
            updates: self.table.full_state_for(&from.name),
        };
        self.seal(Channel::Stream, &reply)
    }

    /// The reply to this node's push-pull request arrived.
    pub fn handle_push_pull_reply(&mut self, now: Instant, frame: &[u8]) {
        match self.open(Channel::Stream, frame) {
            Some(Wire::PushPull { updates, .. }) => self.apply_all(updates, now, false),
            Some(_) => self.stats.dropped_malformed += 1,
            None => {}
        }
    }

    /// Runs what is due at `now`: a gossip round, a push-pull, the tombstone reaper.
    pub fn tick(&mut self, now: Instant) {
        if self.next_gossip.is_none_or(|due| now >= due) {
            self.gossip_round();
            self.next_gossip = Some(now + self.config.gossip_interval);
        }
        match self.next_push_pull {
            None => self.next_push_pull = Some(now + self.config.push_pull_interval),
            Some(due) if now >= due => {
                if !self.members.is_empty() {
                    let pick = self.rng.random_range(0..self.members.len());
                    if let Some(peer) = self.members.keys().nth(pick).cloned() {
                        self.push_pull_to(&peer);
                    }
                }
                self.next_push_pull = Some(now + self.config.push_pull_interval);
            }
            Some(_) => {}
        }
        if self.members.is_empty() && !self.seeds.is_empty() {
            match self.next_seed_announce {
                Some(due) if now < due => {}
                Some(_) => {
                    self.announce_to_seeds();
                    self.next_seed_announce = Some(now + self.config.rejoin_interval);
                }
                None => self.next_seed_announce = Some(now + self.config.rejoin_interval),
            }
        }
        if self.next_reap.is_none_or(|due| now >= due) {
            self.table.reap(now);
            self.next_reap = Some(now + Duration::from_secs(5));
        }
    }

    /// Takes what the core wants sent and scheduled.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// Takes the changes to the visible table since the last call.
    pub fn take_changes(&mut self) -> Vec<TableChange> {
        std::mem::take(&mut self.changes)
    }

    /// The live endpoints this node knows.
    pub fn visible(&self) -> BTreeMap<EndpointKey, VisibleEndpoint> {
        self.table.visible()
    }

    /// The peers membership holds alive.
    pub fn live_members(&self) -> BTreeSet<NodeName> {
        self.members.keys().cloned().collect()
    }

    /// What was received and refused so far.
    pub fn stats(&self) -> GossipStats {
        self.stats
    }

    /// Changes still queued for gossip.
    pub fn pending_updates(&self) -> usize {
        self.pending.len()
    }

    fn transmissions(&self) -> u32 {
        let members = self.members.len() as f64 + 1.0;
        self.config.retransmit_mult * ((members + 1.0).log10().ceil().max(1.0) as u32)
    }

    fn enqueue(&mut self, update: Update) {
        let rounds = self.transmissions();
        self.pending.insert(
            pending_key(&update),
            Pending {
                update,
                rounds,
                sent_to: BTreeSet::new(),
            },
        );
    }

    fn apply_all(&mut self, updates: Vec<Update>, now: Instant, regossip: bool) {
        for update in updates {
            let Applied {
                stored,
                answers,
                changes,
            } = self.table.apply(update.clone(), now);
            self.changes.extend(changes);
            for answer in answers {
                self.enqueue(answer);
            }
            if stored && regossip {
                self.enqueue(update);
            }
        }
    }

    fn open(&mut self, channel: Channel, frame: &[u8]) -> Option<Wire> {
        let plain = match self.sealer.open(channel, frame) {
            Ok(plain) => plain,
            Err(OpenError::UnknownKey) => {
                self.stats.dropped_unknown_key += 1;
                return None;
            }
            Err(OpenError::Forged) => {
                self.stats.dropped_forged += 1;
                return None;
            }
            Err(OpenError::Malformed) => {
                self.stats.dropped_malformed += 1;
                return None;
            }
        };
        match postcard::from_bytes(&plain) {
            Ok(wire) => Some(wire),
            Err(_) => {
                self.stats.dropped_malformed += 1;
                None
            }
        }
    }

    fn seal(&mut self, channel: Channel, wire: &Wire) -> Option<Vec<u8>> {
        let plain = postcard::to_allocvec(wire).ok()?;
        self.sealer.seal(channel, &plain)
    }

    fn send_datagram(&mut self, to: SocketAddr, wire: &Wire) {
        if let Some(frame) = self.seal(Channel::Datagram, wire) {
            self.stats.datagrams_sent += 1;
            self.outputs.push(Output::Datagram { to, frame });
        }
    }

    fn push_pull_to(&mut self, peer: &str) {
        let Some(to) = self.members.get(peer).map(|member| member.addr) else {
            return;
        };
        let request = Wire::PushPull {
            from: self.identity().clone(),
            updates: self.table.full_state_for(peer),
        };
        if let Some(frame) = self.seal(Channel::Stream, &request) {
            self.stats.push_pulls_started += 1;
            self.outputs.push(Output::PushPull { to, frame });
        }
    }

    /// Drains what foca asked for, and brings the table's idea of who is alive in line with
    /// foca's.
    fn after_swim(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.send_datagram(to.addr, &Wire::Swim(data.to_vec()));
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.outputs.push(Output::Timer { after, timer });
        }
        // Notifications only say that something changed; the active set is read from foca.
        while self.runtime.to_notify().is_some() {}
        let current: BTreeMap<NodeName, MemberId> = self
            .swim
            .iter_members()
            .map(|member| (member.id().name.clone(), member.id().clone()))
            .filter(|(name, _)| *name != self.me.name && !name.is_empty())
            .collect();
        let gone: Vec<NodeName> = self
            .members
            .keys()
            .filter(|name| !current.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            let changes = self.table.node_down(&name);
            self.changes.extend(changes);
        }
        let arrived: Vec<NodeName> = current
            .iter()
            .filter(|(name, id)| self.members.get(*name) != Some(id))
            .map(|(name, _)| name.clone())
            .collect();
        self.members = current;
        for name in arrived {
            self.table.node_up(&name);
            self.push_pull_to(&name);
        }
    }

    fn gossip_round(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let networks: BTreeSet<Option<String>> = self
            .pending
            .values()
            .map(|pending| pending.update.network().map(str::to_owned))
            .collect();
        let mut targets: BTreeMap<Option<String>, Vec<NodeName>> = BTreeMap::new();
        for network in networks {
            let mut candidates: Vec<NodeName> = self
                .members
                .keys()
                .filter(|peer| {
                    network
                        .as_deref()
                        .is_none_or(|network| self.table.node_on_network(peer, network))
                })
                .cloned()
                .collect();
            let fanout = self.config.gossip_fanout.min(candidates.len());
            for chosen in 0..fanout {
                let pick = self.rng.random_range(chosen..candidates.len());
                candidates.swap(chosen, pick);
            }
            candidates.truncate(fanout);
            targets.insert(network, candidates);
        }
        let mut per_peer: BTreeMap<NodeName, Vec<Update>> = BTreeMap::new();
        for pending in self.pending.values_mut() {
            let network = pending.update.network().map(str::to_owned);
            for peer in targets.get(&network).into_iter().flatten() {
                if pending.sent_to.insert(peer.clone()) {
                    per_peer
                        .entry(peer.clone())
                        .or_default()
                        .push(pending.update.clone());
                }
            }
            pending.rounds = pending.rounds.saturating_sub(1);
        }
        self.pending.retain(|_, pending| pending.rounds > 0);
        let budget = self.config.max_datagram - SEAL_OVERHEAD - WIRE_OVERHEAD;
        for (peer, updates) in per_peer {
            let Some(to) = self.members.get(&peer).map(|member| member.addr) else {
                continue;
            };
            let mut batches: Vec<Vec<Update>> = Vec::new();
            let mut batch = Vec::new();
            let mut size = 0;
            for update in updates {
                let Ok(encoded) = postcard::to_allocvec(&update) else {
                    continue;
                };
                if encoded.len() > budget {
                    self.stats.oversized_updates += 1;
                    continue;
                }
                if size + encoded.len() > budget {
                    batches.push(std::mem::take(&mut batch));
                    size = 0;
                }
                size += encoded.len();
                batch.push(update);
            }
            if !batch.is_empty() {
                batches.push(batch);
            }
            if batches.len() > MAX_DATAGRAMS_PER_PEER {
                let all = batches.into_iter().flatten().collect();
                if let Some(frame) = self.seal(Channel::Stream, &Wire::Table(all)) {
                    self.outputs.push(Output::Stream { to, frame });
                }
            } else {
                for batch in batches {
                    self.send_datagram(to, &Wire::Table(batch));
                }
            }
        }
    }
}

fn swim_config(config: &GossipConfig) -> foca::Config {
    let mut swim = foca::Config::new_lan(NonZeroU32::MIN);
    swim.probe_period = config.probe_period;
    swim.probe_rtt = config.probe_rtt;
    swim.suspect_to_down_after = config.suspect_to_down_after;
    swim.max_transmissions =
        NonZeroU8::new(config.retransmit_mult.clamp(1, 255) as u8).unwrap_or(NonZeroU8::MIN);
    swim.max_packet_size = NonZeroUsize::new(config.max_datagram - SEAL_OVERHEAD - WIRE_OVERHEAD)
        .unwrap_or(NonZeroUsize::MIN);
    swim.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: config.rejoin_interval,
        num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    });
    swim
}
