//! The nodes a batch is placed on, kept between batches: each node's starting load, the
//! per-service task counts and the node-id order are worked out as nodes change, not again
//! for every batch.
//!
//! A manager keeps one [`NodeSet`] beside its nodes and places every batch on it, so that
//! placing one task does not read every node's description: at 5,000 nodes, building the
//! load, counts and order from the descriptions was most of a one-task batch, and it grew
//! with the cluster.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use crate::filter::NodeLoad;
use crate::model::NodeView;

/// Index of a node in a [`NodeSet`]; stable until a node leaves the set.
pub(crate) type NodeIndex = u32;

/// A hash map keyed by node index, hashed by one multiplication: a service's counts hold an
/// entry for every node that runs it, and a keyed hash over each was a large part of a
/// one-task batch.
pub(crate) type NodeIndexMap<Value> =
    HashMap<NodeIndex, Value, BuildHasherDefault<NodeIndexHasher>>;

/// A hash map whose hasher has fixed keys, keeping the crate free of OS randomness.
pub(crate) type FixedKeyHashMap<Key, Value> =
    HashMap<Key, Value, BuildHasherDefault<DefaultHasher>>;

/// Fibonacci hashing of node indices. The keys are dense numbers this crate gives out, not
/// input anyone could choose to collide, so a keyed hash buys nothing here.
#[derive(Default)]
pub(crate) struct NodeIndexHasher(u64);

impl Hasher for NodeIndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(FIBONACCI_MULTIPLIER);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = u64::from(value).wrapping_mul(FIBONACCI_MULTIPLIER);
    }
}

/// 2^64 divided by the golden ratio, made odd: consecutive keys land far apart.
const FIBONACCI_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// Nodes told apart by id, with what placement reads of them kept up to date as they change.
/// Place a batch on it with [`crate::schedule_on`].
#[derive(Clone, Default)]
pub struct NodeSet {
    /// By node index. A node that leaves gives its index to the last one.
    views: Vec<NodeView>,
    /// Each node's load before any batch, by node index.
    loads: Vec<NodeLoad>,
    index_by_id: FixedKeyHashMap<String, NodeIndex>,
    /// Tasks of each service on each node that runs some of them.
    service_task_counts: FixedKeyHashMap<String, NodeIndexMap<u64>>,
    /// Each node's position in node-id order, by node index: worked out by the first batch
    /// after a node joins or leaves, since a join moves every later node's position.
    ranks: OnceLock<Vec<u32>>,
}

impl NodeSet {
    /// A set with no nodes.
    pub fn new() -> NodeSet {
        NodeSet::default()
    }

    /// How many nodes the set holds.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Whether the set holds no node.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// The node with this id.
    pub fn get(&self, id: &str) -> Option<&NodeView> {
        let index = self.index_by_id.get(id)?;
        self.views.get(*index as usize)
    }

    /// Every node, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeView> {
        self.views.iter()
    }

    /// Adds a node, or replaces the one with the same id.
    pub fn insert(&mut self, view: NodeView) {
        if let Some(index) = self.index_by_id.get(&view.id).copied() {
            self.unfile_counts(index);
            self.views[index as usize] = view;
            self.refile(index);
            return;
        }
        let index = node_index(self.views.len());
        self.index_by_id.insert(view.id.clone(), index);
        self.loads.push(NodeLoad::from_view(&view));
        self.views.push(view);
        self.refile(index);
        self.ranks = OnceLock::new();
    }

    /// Removes the node with this id, returning it.
    pub fn remove(&mut self, id: &str) -> Option<NodeView> {
        let index = self.index_by_id.remove(id)?;
        self.unfile_counts(index);
        let last = node_index(self.views.len() - 1);
        if index != last {
            // The last node takes the freed index: its counts are filed again under it.
            self.unfile_counts(last);
            self.index_by_id
                .insert(self.views[last as usize].id.clone(), index);
        }
        let view = self.views.swap_remove(index as usize);
        self.loads.swap_remove(index as usize);
        if index != last {
            self.file_counts(index);
        }
        self.ranks = OnceLock::new();
        Some(view)
    }

    /// Changes the node with this id in place; answers whether there was one. A change of
    /// the id itself files the node under its new id.
    pub fn update(&mut self, id: &str, change: impl FnOnce(&mut NodeView)) -> bool {
        let Some(index) = self.index_by_id.get(id).copied() else {
            return false;
        };
        self.unfile_counts(index);
        change(&mut self.views[index as usize]);
        self.refile(index);
        if self.views[index as usize].id != id {
            // Still filed under the old id: taken out and put back under the new one.
            if let Some(view) = self.remove(id) {
                self.insert(view);
            }
        }
        true
    }

    /// The nodes' descriptions, by node index.
    pub(crate) fn views(&self) -> &[NodeView] {
        &self.views
    }

    /// The nodes' loads before any batch, by node index.
    pub(crate) fn loads(&self) -> &[NodeLoad] {
        &self.loads
    }

    /// Tasks of `service_id` on each node that runs some, by node index.
    pub(crate) fn service_task_counts(&self, service_id: &str) -> Option<&NodeIndexMap<u64>> {
        self.service_task_counts.get(service_id)
    }

    /// Each node's position in node-id order, by node index.
    pub(crate) fn ranks(&self) -> &[u32] {
        self.ranks.get_or_init(|| {
            let mut indices_by_id: Vec<NodeIndex> = (0..node_index(self.views.len())).collect();
            indices_by_id.sort_unstable_by(|left, right| {
                self.views[*left as usize]
                    .id
                    .cmp(&self.views[*right as usize].id)
            });
            let mut ranks = vec![0_u32; self.views.len()];
            for (rank, index) in indices_by_id.iter().enumerate() {
                ranks[*index as usize] = node_index(rank);
            }
            ranks
        })
    }

    /// Brings the load and counts of the node at `index` up to its description.
    fn refile(&mut self, index: NodeIndex) {
        self.loads[index as usize] = NodeLoad::from_view(&self.views[index as usize]);
        self.file_counts(index);
    }

    fn file_counts(&mut self, index: NodeIndex) {
        for (service_id, count) in &self.views[index as usize].task_count_by_service {
            if *count == 0 {
                continue;
            }
            match self.service_task_counts.get_mut(service_id.as_str()) {
                Some(counts) => {
                    counts.insert(index, *count);
                }
                None => {
                    let counts = NodeIndexMap::from_iter([(index, *count)]);
                    self.service_task_counts.insert(service_id.clone(), counts);
                }
            }
        }
    }

    fn unfile_counts(&mut self, index: NodeIndex) {
        for service_id in self.views[index as usize].task_count_by_service.keys() {
            if let Some(counts) = self.service_task_counts.get_mut(service_id.as_str()) {
                counts.remove(&index);
                if counts.is_empty() {
                    self.service_task_counts.remove(service_id.as_str());
                }
            }
        }
    }
}

impl FromIterator<NodeView> for NodeSet {
    /// Of two nodes with the same id, the later one stands.
    fn from_iter<Nodes: IntoIterator<Item = NodeView>>(nodes: Nodes) -> NodeSet {
        let mut set = NodeSet::new();
        for node in nodes {
            set.insert(node);
        }
        set
    }
}

/// Two sets are equal when they hold the same nodes, whatever order they joined in.
impl PartialEq for NodeSet {
    fn eq(&self, other: &NodeSet) -> bool {
        self.len() == other.len()
            && self
                .views
                .iter()
                .all(|view| other.get(&view.id) == Some(view))
    }
}

impl fmt::Debug for NodeSet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut views: Vec<&NodeView> = self.views.iter().collect();
        views.sort_by(|left, right| left.id.cmp(&right.id));
        formatter.debug_list().entries(views).finish()
    }
}

/// Converts a position to a node index. Four billion nodes is far past any cluster, so
/// saturating (rather than failing) can never merge real nodes.
pub(crate) fn node_index(position: usize) -> NodeIndex {
    u32::try_from(position).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;

    fn node(id: &str, counts: &[(&str, u64)]) -> NodeView {
        let mut node = NodeView::new(id, Resources::new(1_000_000_000, 1 << 30));
        for (service_id, count) in counts {
            node.task_count_by_service
                .insert((*service_id).to_owned(), *count);
        }
        node
    }

    /// A node's id, its total task count and its count per service, as a set keeps them.
    type KeptNode = (String, u64, Vec<(String, u64)>);

    /// The counts and loads a set keeps, read back by node id.
    fn kept(set: &NodeSet) -> Vec<KeptNode> {
        let mut kept: Vec<_> = set
            .views
            .iter()
            .enumerate()
            .map(|(index, view)| {
                let index = node_index(index);
                let mut counts: Vec<(String, u64)> = set
                    .service_task_counts
                    .iter()
                    .filter_map(|(service, counts)| {
                        counts.get(&index).map(|count| (service.clone(), *count))
                    })
                    .collect();
                counts.sort();
                (
                    view.id.clone(),
                    set.loads[index as usize].total_task_count,
                    counts,
                )
            })
            .collect();
        kept.sort();
        kept
    }

    #[test]
    fn counts_loads_and_order_follow_joins_changes_and_departures() {
        let mut set: NodeSet = [
            node("c", &[("web", 2)]),
            node("a", &[("web", 1), ("db", 1)]),
            node("b", &[]),
        ]
        .into_iter()
        .collect();
        assert_eq!(set.ranks(), [2, 0, 1]);

        // "c" leaves: "b", the last, takes its index.
        assert_eq!(set.remove("c").map(|view| view.id), Some("c".to_owned()));
        assert_eq!(set.ranks(), [1, 0]);
        assert!(set.update("b", |view| {
            view.task_count_by_service.insert("web".to_owned(), 3);
        }));
        assert!(set.update("a", |view| {
            view.task_count_by_service.remove("db");
        }));
        assert!(!set.update("gone", |_| {}));
        assert_eq!(
            kept(&set),
            [
                ("a".to_owned(), 1, vec![("web".to_owned(), 1)]),
                ("b".to_owned(), 3, vec![("web".to_owned(), 3)]),
            ]
        );
        assert!(set.service_task_counts("db").is_none());

        // A replaced node keeps its index and the order; a renamed one is filed anew.
        set.insert(node("a", &[("db", 4)]));
        assert!(set.update("b", |view| view.id = "0".to_owned()));
        assert_eq!(set.get("b"), None);
        assert_eq!(
            kept(&set),
            [
                ("0".to_owned(), 3, vec![("web".to_owned(), 3)]),
                ("a".to_owned(), 4, vec![("db".to_owned(), 4)]),
            ]
        );
        let rebuilt: NodeSet = set.iter().cloned().collect();
        assert_eq!(set, rebuilt);
        assert_eq!(kept(&set), kept(&rebuilt));
        let rank_of = |set: &NodeSet, id: &str| set.ranks()[set.index_by_id[id] as usize];
        assert_eq!((rank_of(&set, "0"), rank_of(&set, "a")), (0, 1));
    }
}
