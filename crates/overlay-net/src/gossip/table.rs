//! The endpoint table: which task endpoints are up on which node, per network, versioned so
//! that every node that sees the same updates, in any order, holds the same table.
//!
//! Each entry carries a stamp (Lamport time, origin node); a higher stamp wins. A withdrawn
//! endpoint stays as a tombstone for `tombstone_ttl` so an older copy still travelling cannot
//! bring it back. A node keeps only the networks it is attached to, and only entries whose
//! origin is alive and announces that network: when membership declares a node down, or the
//! node leaves the network, its entries go, and copies arriving later are refused.
//! No IO, no clock: `now` is passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A node's name in the gossip: its cluster node id.
pub type NodeName = String;

/// What a node publishes about one task endpoint on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The task's name (`web.1.<task id>`).
    pub task_name: String,
    /// The endpoint's address with its prefix, as the allocator wrote it ("10.0.1.5/24").
    pub address: String,
    /// The endpoint's MAC ("02:42:0a:00:01:05").
    pub mac: String,
    /// The node's data-plane address, where VXLAN packets for this endpoint go.
    pub tunnel_endpoint: IpAddr,
    /// The service the task belongs to.
    pub service_id: String,
    /// That service's name.
    pub service_name: String,
    /// The service's virtual IP on this network, when it has one (vip mode).
    pub virtual_ip: Option<String>,
    /// Aliases from the service's network attachment.
    pub aliases: Vec<String>,
    /// Whether the task passes its health check (or has none): unhealthy endpoints stay known
    /// but are not load-balanced to.
    pub healthy: bool,
    /// On the ingress network, the ports the task's service publishes through the routing mesh:
    /// every node sends connections for them to this endpoint while it is healthy.
    pub ingress_ports: Vec<IngressPortRecord>,
}

/// A port published through the routing mesh, as an endpoint record carries it; the words are
/// spec's text forms ("tcp", "prefer-local").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IngressPortRecord {
    pub protocol: String,
    pub published: u16,
    pub target: u16,
    pub policy: String,
}

/// Names one endpoint: the network it is on and its endpoint (task) id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointKey {
    /// The network's id.
    pub network: String,
    /// The endpoint's id (the task's id).
    pub endpoint: String,
}

/// The version of an entry: Lamport time, then the origin node to break ties.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Stamp {
    /// The origin's Lamport clock when it wrote the entry.
    pub lamport: u64,
    /// The node that wrote it.
    pub origin: NodeName,
}

/// One change the gossip carries.
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every update is an endpoint; boxing would allocate once more per update"
)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Update {
    /// The networks a node is attached to, as of its Lamport time `lamport`.
    NodeNetworks {
        /// The node.
        node: NodeName,
        /// Its clock when its set last changed.
        lamport: u64,
        /// The networks' ids.
        networks: BTreeSet<String>,
    },
    /// An endpoint published (`record` set) or withdrawn (`None`, a tombstone).
    Endpoint {
        /// Which endpoint.
        key: EndpointKey,
        /// Its version.
        stamp: Stamp,
        /// The record, or `None` once withdrawn.
        record: Option<EndpointRecord>,
    },
}

impl Update {
    /// The network whose members need this update; `None` for updates every node needs.
    pub(crate) fn network(&self) -> Option<&str> {
        match self {
            Update::NodeNetworks { .. } => None,
            Update::Endpoint { key, .. } => Some(&key.network),
        }
    }
}

/// An endpoint as the data plane and DNS see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisibleEndpoint {
    /// The node it runs on.
    pub node: NodeName,
    /// What that node published.
    pub record: EndpointRecord,
}

/// One change to what is visible.
#[expect(
    clippy::large_enum_variant,
    reason = "most changes are upserts; boxing would allocate once more per change"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableChange {
    /// An endpoint appeared or changed.
    Upserted(EndpointKey, VisibleEndpoint),
    /// An endpoint went away (withdrawn, its node down, or its network left).
    Removed(EndpointKey),
}

#[derive(Clone, Debug)]
struct Entry {
    stamp: Stamp,
    record: Option<EndpointRecord>,
    /// When this node stored the tombstone, for reaping.
    deleted_at: Option<Instant>,
}

#[derive(Clone, Debug, Default)]
struct NodeNetworks {
    lamport: u64,
    networks: BTreeSet<String>,
}

/// What applying a received update did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The update was newer than what this node had and was stored: worth passing on.
    pub(crate) stored: bool,
    /// Updates this node writes in answer (it re-asserts its own entries when it meets older
    /// copies of itself, as after a restart).
    pub(crate) answers: Vec<Update>,
    /// What became visible or went away.
    pub(crate) changes: Vec<TableChange>,
}

/// The endpoint table of one node.
#[derive(Debug)]
pub(crate) struct EndpointTable {
    me: NodeName,
    clock: u64,
    node_networks: BTreeMap<NodeName, NodeNetworks>,
    alive: BTreeSet<NodeName>,
    entries: BTreeMap<EndpointKey, Entry>,
    tombstone_ttl: Duration,
}

impl EndpointTable {
    /// An empty table for node `me`, keeping tombstones for `tombstone_ttl`.
    pub(crate) fn new(me: NodeName, tombstone_ttl: Duration) -> Self {
        let mut node_networks = BTreeMap::new();
        node_networks.insert(me.clone(), NodeNetworks::default());
        Self {
            me,
            clock: 0,
            node_networks,
            alive: BTreeSet::new(),
            entries: BTreeMap::new(),
            tombstone_ttl,
        }
    }

    /// The networks this node is attached to.
    pub(crate) fn attached(&self) -> &BTreeSet<String> {
        &self.node_networks[&self.me].networks
    }

    fn is_attached(&self, network: &str) -> bool {
        self.attached().contains(network)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn witness(&mut self, lamport: u64) {
        self.clock = self.clock.max(lamport);
    }

    fn my_networks_update(&self) -> Update {
        let mine = &self.node_networks[&self.me];
        Update::NodeNetworks {
            node: self.me.clone(),
            lamport: mine.lamport,
            networks: mine.networks.clone(),
        }
    }

    /// Attaches this node to `network`: it will store and relay the network's endpoints.
    /// Returns the announcement to gossip, or nothing when already attached.
    pub(crate) fn join_network(&mut self, network: &str) -> Option<Update> {
        if self.is_attached(network) {
            return None;
        }
        let lamport = self.tick();
        let mine = self.node_networks.entry(self.me.clone()).or_default();
        mine.networks.insert(network.to_owned());
        mine.lamport = lamport;
        Some(self.my_networks_update())
    }

    /// Detaches this node from `network` and forgets its endpoints (this node's own included:
    /// peers drop them when they see the announcement).
    pub(crate) fn leave_network(&mut self, network: &str) -> (Option<Update>, Vec<TableChange>) {
        if !self.is_attached(network) {
            return (None, Vec::new());
        }
        let lamport = self.tick();
        let mine = self.node_networks.entry(self.me.clone()).or_default();
        mine.networks.remove(network);
        mine.lamport = lamport;
        let changes = self.remove_where(|key, _| key.network == network);
        (Some(self.my_networks_update()), changes)
    }

    /// Publishes (or republishes) one of this node's endpoints. `None` when this node is not
    /// attached to the network, or the record is the one already published.
    pub(crate) fn publish(&mut self, key: EndpointKey, record: EndpointRecord) -> Option<Update> {
        if !self.is_attached(&key.network) {
            return None;
        }
        if let Some(existing) = self.entries.get(&key)
            && existing.stamp.origin == self.me
            && existing.record.as_ref() == Some(&record)
        {
            return None;
        }
        let stamp = Stamp {
            lamport: self.tick(),
            origin: self.me.clone(),
        };
        self.entries.insert(
            key.clone(),
            Entry {
                stamp: stamp.clone(),
                record: Some(record.clone()),
                deleted_at: None,
            },
        );
        Some(Update::Endpoint {
            key,
            stamp,
            record: Some(record),
        })
    }

    /// Withdraws one of this node's endpoints, leaving a tombstone. `None` when there is no
    /// such live endpoint of this node.
    pub(crate) fn withdraw(&mut self, key: &EndpointKey, now: Instant) -> Option<Update> {
        let existing = self.entries.get(key)?;
        if existing.stamp.origin != self.me || existing.record.is_none() {
            return None;
        }
        let stamp = Stamp {
            lamport: self.tick(),
            origin: self.me.clone(),
        };
        self.entries.insert(
            key.clone(),
            Entry {
                stamp: stamp.clone(),
                record: None,
                deleted_at: Some(now),
            },
        );
        Some(Update::Endpoint {
            key: key.clone(),
            stamp,
            record: None,
        })
    }

    /// Membership declared `node` alive: its entries are accepted from now on.
    pub(crate) fn node_up(&mut self, node: &str) {
        self.alive.insert(node.to_owned());
    }

    /// Membership declared `node` down (or gone): its entries are removed and refused until it
    /// is alive again.
    pub(crate) fn node_down(&mut self, node: &str) -> Vec<TableChange> {
        self.alive.remove(node);
        self.remove_where(|_, entry| entry.stamp.origin == node)
    }

    fn accepts(&self, origin: &str, network: &str) -> bool {
        self.is_attached(network)
            && (origin == self.me
                || (self.alive.contains(origin)
                    && self
                        .node_networks
                        .get(origin)
                        .is_some_and(|known| known.networks.contains(network))))
    }

    /// Applies an update received from a peer.
    pub(crate) fn apply(&mut self, update: Update, now: Instant) -> Applied {
        match update {
            Update::NodeNetworks {
                node,
                lamport,
                networks,
            } => self.apply_node_networks(node, lamport, networks),
            Update::Endpoint { key, stamp, record } => self.apply_endpoint(key, stamp, record, now),
        }
    }

    fn apply_node_networks(
        &mut self,
        node: NodeName,
        lamport: u64,
        networks: BTreeSet<String>,
    ) -> Applied {
        self.witness(lamport);
        let mut applied = Applied::default();
        if node == self.me {
            // A copy of this node's set from a previous life (it restarted with a fresh clock):
            // the set as it is now is announced again, newer than that copy.
            if lamport > self.node_networks[&self.me].lamport {
                let lamport = self.tick();
                if let Some(mine) = self.node_networks.get_mut(&self.me) {
                    mine.lamport = lamport;
                }
                applied.answers.push(self.my_networks_update());
            }
            return applied;
        }
        let known = self.node_networks.entry(node.clone()).or_default();
        if lamport <= known.lamport {
            return applied;
        }
        let left: Vec<String> = known.networks.difference(&networks).cloned().collect();
        known.lamport = lamport;
        known.networks = networks;
        applied.stored = true;
        applied.changes = self
            .remove_where(|key, entry| entry.stamp.origin == node && left.contains(&key.network));
        applied
    }

    fn apply_endpoint(
        &mut self,
        key: EndpointKey,
        stamp: Stamp,
        record: Option<EndpointRecord>,
        now: Instant,
    ) -> Applied {
        self.witness(stamp.lamport);
        let mut applied = Applied::default();
        if !self.accepts(&stamp.origin, &key.network) {
            return applied;
        }
        let existing = self.entries.get(&key);
        if existing.is_some_and(|existing| existing.stamp >= stamp) {
            return applied;
        }
        if stamp.origin == self.me {
            // A copy of one of this node's entries newer than what it holds: written before a
            // restart. What this node holds now wins, written again with a newer stamp.
            let answer = match existing.and_then(|existing| existing.record.clone()) {
                Some(current) => {
                    self.entries.remove(&key);
                    self.publish(key, current)
                }
                None => {
                    self.entries.insert(
                        key.clone(),
                        Entry {
                            stamp,
                            record: Some(placeholder_record()),
                            deleted_at: None,
                        },
                    );
                    self.withdraw(&key, now)
                }
            };
            applied.answers.extend(answer);
            return applied;
        }
        let was_visible = existing.is_some_and(|existing| existing.record.is_some());
        let deleted_at = record.is_none().then_some(now);
        let change = match &record {
            Some(record) => Some(TableChange::Upserted(
                key.clone(),
                VisibleEndpoint {
                    node: stamp.origin.clone(),
                    record: record.clone(),
                },
            )),
            None if was_visible => Some(TableChange::Removed(key.clone())),
            None => None,
        };
        self.entries.insert(
            key,
            Entry {
                stamp,
                record,
                deleted_at,
            },
        );
        applied.stored = true;
        applied.changes.extend(change);
        applied
    }

    /// Forgets tombstones older than the TTL.
    pub(crate) fn reap(&mut self, now: Instant) {
        let ttl = self.tombstone_ttl;
        self.entries.retain(|_, entry| {
            entry
                .deleted_at
                .is_none_or(|deleted_at| now.saturating_duration_since(deleted_at) < ttl)
        });
    }

    fn remove_where(&mut self, doomed: impl Fn(&EndpointKey, &Entry) -> bool) -> Vec<TableChange> {
        let mut changes = Vec::new();
        self.entries.retain(|key, entry| {
            if !doomed(key, entry) {
                return true;
            }
            if entry.record.is_some() {
                changes.push(TableChange::Removed(key.clone()));
            }
            false
        });
        changes
    }

    /// Whether `node` is known to be attached to `network`.
    pub(crate) fn node_on_network(&self, node: &str, network: &str) -> bool {
        self.node_networks
            .get(node)
            .is_some_and(|known| known.networks.contains(network))
    }

    /// Everything `peer` should hear in a full-state exchange: every node's network set, and
    /// every entry (tombstones too) of the networks both this node and `peer` are on.
    pub(crate) fn full_state_for(&self, peer: &str) -> Vec<Update> {
        let mut updates: Vec<Update> = self
            .node_networks
            .iter()
            .filter(|(node, known)| known.lamport > 0 || **node == self.me)
            .map(|(node, known)| Update::NodeNetworks {
                node: node.clone(),
                lamport: known.lamport,
                networks: known.networks.clone(),
            })
            .collect();
        updates.extend(
            self.entries
                .iter()
                .filter(|(key, _)| self.node_on_network(peer, &key.network))
                .map(|(key, entry)| Update::Endpoint {
                    key: key.clone(),
                    stamp: entry.stamp.clone(),
                    record: entry.record.clone(),
                }),
        );
        updates
    }

    /// The live endpoints, as the data plane and DNS see them.
    pub(crate) fn visible(&self) -> BTreeMap<EndpointKey, VisibleEndpoint> {
        self.entries
            .iter()
            .filter_map(|(key, entry)| {
                let record = entry.record.clone()?;
                Some((
                    key.clone(),
                    VisibleEndpoint {
                        node: entry.stamp.origin.clone(),
                        record,
                    },
                ))
            })
            .collect()
    }

    /// How many entries, tombstones included, this node holds.
    #[cfg(test)]
    pub(crate) fn stored_entries(&self) -> usize {
        self.entries.len()
    }
}

/// Stands in for a record this node no longer has, just long enough to withdraw it.
fn placeholder_record() -> EndpointRecord {
    EndpointRecord {
        task_name: String::new(),
        address: String::new(),
        mac: String::new(),
        tunnel_endpoint: IpAddr::from([0, 0, 0, 0]),
        service_id: String::new(),
        service_name: String::new(),
        virtual_ip: None,
        aliases: Vec::new(),
        healthy: false,
        ingress_ports: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(endpoint: &str) -> EndpointKey {
        EndpointKey {
            network: "net-a".to_owned(),
            endpoint: endpoint.to_owned(),
        }
    }

    fn record(address: &str) -> EndpointRecord {
        EndpointRecord {
            address: address.to_owned(),
            ..placeholder_record()
        }
    }

    fn endpoint(stamp: (u64, &str), record: Option<EndpointRecord>) -> Update {
        Update::Endpoint {
            key: key("t1"),
            stamp: Stamp {
                lamport: stamp.0,
                origin: stamp.1.to_owned(),
            },
            record,
        }
    }

    fn networks(node: &str, lamport: u64, networks: &[&str]) -> Update {
        Update::NodeNetworks {
            node: node.to_owned(),
            lamport,
            networks: networks
                .iter()
                .map(|network| (*network).to_owned())
                .collect(),
        }
    }

    /// A table for node "me" on net-a, with "peer" alive and on net-a.
    fn table() -> EndpointTable {
        let mut table = EndpointTable::new("me".to_owned(), Duration::from_secs(60));
        table.join_network("net-a");
        table.node_up("peer");
        table.apply(networks("peer", 1, &["net-a"]), Instant::now());
        table
    }

    fn address(table: &EndpointTable) -> Option<String> {
        table
            .visible()
            .get(&key("t1"))
            .map(|seen| seen.record.address.clone())
    }

    #[test]
    fn a_later_stamp_wins_whatever_the_order() {
        let now = Instant::now();
        let mut table = table();
        assert!(
            table
                .apply(endpoint((5, "peer"), Some(record("10.0.0.5/24"))), now)
                .stored
        );
        let older = table.apply(endpoint((4, "peer"), Some(record("10.0.0.4/24"))), now);
        assert!(!older.stored);
        assert_eq!(address(&table).as_deref(), Some("10.0.0.5/24"));
    }

    #[test]
    fn a_tombstone_hides_the_endpoint_and_refuses_older_copies_until_reaped() {
        let now = Instant::now();
        let mut table = table();
        table.apply(endpoint((5, "peer"), Some(record("10.0.0.5/24"))), now);
        let deleted = table.apply(endpoint((6, "peer"), None), now);
        assert_eq!(deleted.changes, vec![TableChange::Removed(key("t1"))]);
        assert!(
            !table
                .apply(endpoint((5, "peer"), Some(record("10.0.0.5/24"))), now)
                .stored
        );
        assert_eq!(address(&table), None);
        assert_eq!(table.stored_entries(), 1);
        table.reap(now + Duration::from_secs(59));
        assert_eq!(table.stored_entries(), 1);
        table.reap(now + Duration::from_secs(60));
        assert_eq!(table.stored_entries(), 0);
    }

    #[test]
    fn entries_of_a_down_node_go_and_stay_refused_until_it_is_up() {
        let now = Instant::now();
        let mut table = table();
        table.apply(endpoint((5, "peer"), Some(record("10.0.0.5/24"))), now);
        assert_eq!(
            table.node_down("peer"),
            vec![TableChange::Removed(key("t1"))]
        );
        assert!(
            !table
                .apply(endpoint((5, "peer"), Some(record("10.0.0.5/24"))), now)
                .stored
        );
        table.node_up("peer");
        assert!(
            table
                .apply(endpoint((5, "peer"), Some(record("10.0.0.5/24"))), now)
                .stored
        );
    }

    #[test]
    fn only_networks_both_ends_announce_are_stored() {
        let now = Instant::now();
        let mut table = table();
        let elsewhere = Update::Endpoint {
            key: EndpointKey {
                network: "net-b".to_owned(),
                endpoint: "t9".to_owned(),
            },
            stamp: Stamp {
                lamport: 3,
                origin: "peer".to_owned(),
            },
            record: Some(record("10.1.0.9/24")),
        };
        assert!(
            !table.apply(elsewhere, now).stored,
            "this node is not on net-b"
        );
        table.apply(endpoint((5, "peer"), Some(record("10.0.0.5/24"))), now);
        let left = table.apply(networks("peer", 7, &["net-b"]), now);
        assert_eq!(
            left.changes,
            vec![TableChange::Removed(key("t1"))],
            "peer left net-a"
        );
        assert!(
            !table
                .apply(endpoint((8, "peer"), Some(record("10.0.0.8/24"))), now)
                .stored
        );
    }

    #[test]
    fn a_newer_copy_of_this_nodes_own_entry_is_answered_with_a_newer_tombstone() {
        let now = Instant::now();
        let mut table = table();
        let stale = table.apply(endpoint((40, "me"), Some(record("10.0.0.40/24"))), now);
        assert_eq!(stale.answers, vec![endpoint((41, "me"), None)]);
        assert_eq!(address(&table), None);
    }
}
