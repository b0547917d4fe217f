//! The batch scheduler: groups identical tasks, filters nodes once per distinct rule set, spreads over label values and fills the least-loaded nodes.
//!
//! How a batch is placed:
//! 1. Tasks with the same service and the same placement requirements form a
//!    group; groups are placed one after another in order of first appearance.
//! 2. The filters that cannot change during a batch (ready, availability,
//!    constraints, platform) run once per node for each distinct set of
//!    constraints and platforms, not once per task, and the candidates'
//!    arrangement by spread-label values is cached the same way.
//! 3. The nodes that pass form a spread tree: one level per spread preference,
//!    one branch per label value (plus one for nodes without the label), nodes
//!    at the leaves. Each task walks down to the branch with the fewest tasks of
//!    its service, then takes the least-loaded node of that leaf from a heap.
//! 4. Resources, per-service counts and host ports are updated after each
//!    placement, so later tasks in the batch see earlier ones.
//!
//! Within a group, a node that fails the changing filters (resources, max
//! replicas, host ports) can never pass them again in the same batch: those
//! only get tighter as tasks land. So such a node is dropped for good, and a
//! group whose tree is empty marks all its remaining tasks unplaceable at once.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, BinaryHeap};
use std::ops::Range;
use std::rc::Rc;

use crate::constraint::Constraint;
use crate::filter::{self, ChangingRequirements, NodeLoad};
use crate::model::{Decision, HostPort, NodeView, Platform, Resources, TaskRequest};
use crate::node_set::{FixedKeyHashMap, NodeIndex, NodeIndexMap, NodeSet, node_index};
use crate::preference::SpreadPreference;
use crate::reason::{FilterRejection, UnplaceableReason};

/// Dense number given to each service id that appears in the batch.
type ServiceNumber = usize;

/// Places a batch of tasks on nodes, returning exactly one decision per task,
/// in the order of `tasks`.
///
/// Tasks of one service with identical placement requirements form a group.
/// Groups are placed in the order each first appears in `tasks`, and the tasks
/// of a group in input order; every placement is charged to its node before
/// the next one is chosen, so a batch never over-commits a node.
///
/// The result depends only on the inputs: not on the order of `nodes` (ties
/// are broken by node id), not on a clock, not on randomness. Nodes are told
/// apart by id: of two with the same id, the later one stands.
///
/// This builds a [`NodeSet`] for the one batch; a caller placing batch after
/// batch keeps one and calls [`schedule_on`].
pub fn schedule<'a>(
    nodes: impl IntoIterator<Item = &'a NodeView>,
    tasks: &[TaskRequest],
) -> Vec<Decision> {
    let nodes: NodeSet = nodes.into_iter().cloned().collect();
    schedule_on(&nodes, tasks)
}

/// Places a batch of tasks on a kept set of nodes, as [`schedule`] does.
pub fn schedule_on(nodes: &NodeSet, tasks: &[TaskRequest]) -> Vec<Decision> {
    BatchScheduler::new(nodes, tasks).run()
}

/// The fixed filters' answers for every node, by node index.
type FixedRejections = Rc<Vec<Option<FilterRejection>>>;
/// What the fixed filters and the spread layout depend on.
type LayoutKey<'input> = (
    &'input [Constraint],
    &'input [Platform],
    &'input [SpreadPreference],
);

/// Everything placement needs besides the task: nodes with their changing load,
/// the per-service task counts, and caches shared by groups with equal rules.
struct BatchScheduler<'input> {
    nodes: &'input [NodeView],
    tasks: &'input [TaskRequest],
    /// Position of each node in node-id order, indexed by node index: the
    /// deterministic order behind every tie.
    node_rank_by_index: &'input [u32],
    /// Every node's load before the batch, as the set keeps it.
    kept_loads: &'input [NodeLoad],
    /// The loads of the nodes this batch has placed on so far; the rest are as kept.
    changed_loads: NodeIndexMap<NodeLoad>,
    service_numbers: FixedKeyHashMap<&'input str, ServiceNumber>,
    /// Tasks of each batch service on each node, indexed by service number; absent means zero.
    service_task_counts: Vec<NodeIndexMap<u64>>,
    /// Answers of the fixed filters, computed once per distinct (constraints, platforms).
    fixed_rejections_cache:
        FixedKeyHashMap<(&'input [Constraint], &'input [Platform]), FixedRejections>,
    /// Candidate nodes arranged by spread-label values, once per distinct rules.
    layout_cache: FixedKeyHashMap<LayoutKey<'input>, Rc<SpreadLayout>>,
}

/// Tasks that share a service and every placement requirement, so one
/// filtering pass and one spread tree serve them all.
#[derive(Hash, PartialEq, Eq)]
struct TaskGroupKey<'input> {
    service_id: &'input str,
    reservations: Resources,
    constraints: &'input [Constraint],
    placement_preferences: &'input [SpreadPreference],
    max_replicas_per_node: u64,
    host_published_ports: &'input [HostPort],
    platforms: &'input [Platform],
}

impl<'input> TaskGroupKey<'input> {
    fn of(task: &'input TaskRequest) -> Self {
        TaskGroupKey {
            service_id: &task.service_id,
            reservations: task.reservations,
            constraints: &task.constraints,
            placement_preferences: &task.placement_preferences,
            max_replicas_per_node: task.max_replicas_per_node,
            host_published_ports: &task.host_published_ports,
            platforms: &task.platforms,
        }
    }
}

impl<'input> BatchScheduler<'input> {
    fn new(node_set: &'input NodeSet, tasks: &'input [TaskRequest]) -> Self {
        let mut service_numbers: FixedKeyHashMap<&str, ServiceNumber> = FixedKeyHashMap::default();
        // Only services in this batch matter for per-service counts; other
        // services count towards a node's total load alone.
        let mut service_task_counts: Vec<NodeIndexMap<u64>> = Vec::new();
        for task in tasks {
            if let Entry::Vacant(entry) = service_numbers.entry(task.service_id.as_str()) {
                entry.insert(service_task_counts.len());
                service_task_counts.push(
                    node_set
                        .service_task_counts(&task.service_id)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
        }

        BatchScheduler {
            nodes: node_set.views(),
            tasks,
            node_rank_by_index: node_set.ranks(),
            kept_loads: node_set.loads(),
            changed_loads: NodeIndexMap::default(),
            service_numbers,
            service_task_counts,
            fixed_rejections_cache: FixedKeyHashMap::default(),
            layout_cache: FixedKeyHashMap::default(),
        }
    }

    fn run(mut self) -> Vec<Decision> {
        let mut group_numbers: FixedKeyHashMap<TaskGroupKey<'input>, usize> =
            FixedKeyHashMap::default();
        let mut task_indices_by_group: Vec<Vec<usize>> = Vec::new();
        for (task_index, task) in self.tasks.iter().enumerate() {
            match group_numbers.entry(TaskGroupKey::of(task)) {
                Entry::Occupied(entry) => task_indices_by_group[*entry.get()].push(task_index),
                Entry::Vacant(entry) => {
                    entry.insert(task_indices_by_group.len());
                    task_indices_by_group.push(vec![task_index]);
                }
            }
        }

        let mut decisions_by_task_index: Vec<(usize, Decision)> =
            Vec::with_capacity(self.tasks.len());
        for group_task_indices in &task_indices_by_group {
            self.place_group(group_task_indices, &mut decisions_by_task_index);
        }
        decisions_by_task_index.sort_unstable_by_key(|(task_index, _)| *task_index);
        decisions_by_task_index
            .into_iter()
            .map(|(_, decision)| decision)
            .collect()
    }

    /// Places every task of one group, appending one decision per task.
    fn place_group(
        &mut self,
        group_task_indices: &[usize],
        decisions: &mut Vec<(usize, Decision)>,
    ) {
        let Some(first_task_index) = group_task_indices.first() else {
            return;
        };
        let tasks = self.tasks;
        let representative = &tasks[*first_task_index];
        let service_number = self.service_numbers[representative.service_id.as_str()];
        let requirements = ChangingRequirements {
            reservations: representative.reservations,
            max_replicas_per_node: representative.max_replicas_per_node,
            host_published_ports: &representative.host_published_ports,
        };
        let layout = self.spread_layout(
            &representative.constraints,
            &representative.platforms,
            &representative.placement_preferences,
        );
        let mut tree =
            SpreadTree::from_layout(&layout, |index| self.load_key(service_number, index));

        let mut remaining_task_indices = group_task_indices.iter();
        for task_index in remaining_task_indices.by_ref() {
            let chosen = tree.take_least_loaded(|index| {
                let count = self.service_task_count(service_number, index);
                filter::changing_filters_pass(self.load(index), count, requirements)
            });
            let Some(TakenNode {
                node_index,
                leaf_branch,
            }) = chosen
            else {
                // Nothing fits this task, so nothing fits its identical successors.
                let fixed_rejections =
                    self.fixed_rejections(&representative.constraints, &representative.platforms);
                let reason =
                    self.unplaceable_reason(&fixed_rejections, service_number, requirements);
                decisions.push((
                    *task_index,
                    unplaceable(&tasks[*task_index], reason.clone()),
                ));
                for later_task_index in remaining_task_indices.by_ref() {
                    let decision = unplaceable(&tasks[*later_task_index], reason.clone());
                    decisions.push((*later_task_index, decision));
                }
                break;
            };
            self.record_placement(node_index, service_number, requirements);
            tree.return_after_placement(leaf_branch, self.load_key(service_number, node_index));
            decisions.push((
                *task_index,
                Decision::Assign {
                    task_id: tasks[*task_index].task_id.clone(),
                    node_id: self.nodes[node_index as usize].id.clone(),
                },
            ));
        }
    }

    /// The fixed filters' answer for every node, from the cache when possible.
    fn fixed_rejections(
        &mut self,
        constraints: &'input [Constraint],
        platforms: &'input [Platform],
    ) -> FixedRejections {
        let nodes = self.nodes;
        let cached = self
            .fixed_rejections_cache
            .entry((constraints, platforms))
            .or_insert_with(|| {
                Rc::new(
                    nodes
                        .iter()
                        .map(|node| filter::fixed_rejection(node, constraints, platforms))
                        .collect(),
                )
            });
        Rc::clone(cached)
    }

    /// The nodes passing the fixed filters, arranged by spread-label values,
    /// from the cache when possible.
    fn spread_layout(
        &mut self,
        constraints: &'input [Constraint],
        platforms: &'input [Platform],
        preferences: &'input [SpreadPreference],
    ) -> Rc<SpreadLayout> {
        if let Some(layout) = self
            .layout_cache
            .get(&(constraints, platforms, preferences))
        {
            return Rc::clone(layout);
        }
        let fixed_rejections = self.fixed_rejections(constraints, platforms);
        let candidates = (0..self.nodes.len())
            .filter(|position| fixed_rejections[*position].is_none())
            .map(node_index);
        let layout = Rc::new(SpreadLayout::build(
            self.nodes,
            self.node_rank_by_index,
            candidates,
            preferences,
        ));
        self.layout_cache
            .insert((constraints, platforms, preferences), Rc::clone(&layout));
        layout
    }

    fn service_task_count(&self, service_number: ServiceNumber, node_index: NodeIndex) -> u64 {
        let counts = &self.service_task_counts[service_number];
        // Most services run on few nodes; skipping the hash for them matters when
        // a batch holds thousands of single-task services.
        if counts.is_empty() {
            0
        } else {
            counts.get(&node_index).copied().unwrap_or(0)
        }
    }

    /// The node's load now, with what this batch placed on it.
    fn load(&self, node_index: NodeIndex) -> &NodeLoad {
        // Most batches place a few tasks: skip the hash while none has landed.
        if self.changed_loads.is_empty() {
            return &self.kept_loads[node_index as usize];
        }
        self.changed_loads
            .get(&node_index)
            .unwrap_or(&self.kept_loads[node_index as usize])
    }

    /// The least-loaded ordering: fewest tasks of this service, then fewest tasks
    /// in total, then node id (through its rank).
    fn load_key(&self, service_number: ServiceNumber, node_index: NodeIndex) -> NodeLoadKey {
        NodeLoadKey {
            service_task_count: self.service_task_count(service_number, node_index),
            total_task_count: self.load(node_index).total_task_count,
            node_id_rank: self.node_rank_by_index[node_index as usize],
            node_index,
        }
    }

    /// Charges a placed task to its node so later tasks in the batch see it.
    fn record_placement(
        &mut self,
        node_index: NodeIndex,
        service_number: ServiceNumber,
        requirements: ChangingRequirements<'_>,
    ) {
        let kept_loads = self.kept_loads;
        let load = self
            .changed_loads
            .entry(node_index)
            .or_insert_with(|| kept_loads[node_index as usize].clone());
        load.available_resources = load
            .available_resources
            .saturating_sub(requirements.reservations);
        load.total_task_count = load.total_task_count.saturating_add(1);
        load.host_ports_in_use
            .extend(requirements.host_published_ports.iter().copied());
        let count = self.service_task_counts[service_number]
            .entry(node_index)
            .or_insert(0);
        *count = count.saturating_add(1);
    }

    /// Counts, for every node, the first filter that rejects it now.
    fn unplaceable_reason(
        &self,
        fixed_rejections: &[Option<FilterRejection>],
        service_number: ServiceNumber,
        requirements: ChangingRequirements<'_>,
    ) -> UnplaceableReason {
        UnplaceableReason::from_rejections((0..self.nodes.len()).filter_map(|position| {
            filter::first_rejection(
                fixed_rejections[position],
                self.load(node_index(position)),
                self.service_task_count(service_number, node_index(position)),
                requirements,
            )
        }))
    }
}

fn unplaceable(task: &TaskRequest, reason: UnplaceableReason) -> Decision {
    Decision::Unplaceable {
        task_id: task.task_id.clone(),
        reason,
    }
}

/// A node's label value for each spread preference, outermost first;
/// `(true, "")` stands for a missing label and sorts after every real value.
type SpreadPath<'node> = Vec<(bool, &'node str)>;

/// The shape of a spread tree, which depends on the rules but not on load:
/// candidates sorted so every branch covers one contiguous range of them.
struct SpreadLayout {
    candidates_in_leaf_order: Vec<NodeIndex>,
    /// Branches in pre-order (a parent before its children); the root is first.
    branches: Vec<LayoutBranch>,
}

struct LayoutBranch {
    parent: Option<usize>,
    position_among_siblings: u32,
    /// Empty for a leaf.
    children: Vec<usize>,
    candidate_range: Range<usize>,
}

impl SpreadLayout {
    fn build(
        nodes: &[NodeView],
        node_rank_by_index: &[u32],
        candidates: impl Iterator<Item = NodeIndex>,
        preferences: &[SpreadPreference],
    ) -> SpreadLayout {
        // Sorting by path, then by node-id rank, makes every branch one contiguous range.
        // Without preferences there is one branch, and a leaf's order is its heap's.
        let mut paths: Vec<(SpreadPath<'_>, u32, NodeIndex)> = candidates
            .map(|index| {
                let node = &nodes[index as usize];
                let path = preferences
                    .iter()
                    .map(|preference| match preference.group_value(node) {
                        Some(value) => (false, value),
                        None => (true, ""),
                    })
                    .collect();
                (path, node_rank_by_index[index as usize], index)
            })
            .collect();
        if !preferences.is_empty() {
            paths.sort_unstable();
        }

        let mut layout = SpreadLayout {
            candidates_in_leaf_order: paths.iter().map(|(_, _, index)| *index).collect(),
            branches: Vec::new(),
        };
        let path_values: Vec<&[(bool, &str)]> =
            paths.iter().map(|(path, _, _)| path.as_slice()).collect();
        layout.add_branch(None, 0, &path_values, 0..paths.len(), 0);
        layout
    }

    /// Adds the branch covering `range` of the sorted paths at `depth`, with its
    /// subtree, and returns its index.
    fn add_branch(
        &mut self,
        parent: Option<usize>,
        position_among_siblings: u32,
        paths: &[&[(bool, &str)]],
        range: Range<usize>,
        depth: usize,
    ) -> usize {
        let branch_index = self.branches.len();
        self.branches.push(LayoutBranch {
            parent,
            position_among_siblings,
            children: Vec::new(),
            candidate_range: range.clone(),
        });
        let is_leaf = paths
            .get(range.start)
            .is_none_or(|path| depth >= path.len());
        if is_leaf {
            return branch_index;
        }
        let mut start = range.start;
        let mut position = 0_u32;
        while start < range.end {
            let value = paths[start][depth];
            let length = paths[start..range.end]
                .iter()
                .take_while(|path| path[depth] == value)
                .count();
            let child = self.add_branch(
                Some(branch_index),
                position,
                paths,
                start..start + length,
                depth + 1,
            );
            self.branches[branch_index].children.push(child);
            start += length;
            position = position.saturating_add(1);
        }
        branch_index
    }
}

/// Heap order of a node inside a leaf: smaller is less loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct NodeLoadKey {
    service_task_count: u64,
    total_task_count: u64,
    node_id_rank: u32,
    node_index: NodeIndex,
}

/// Order of a child inside its parent: fewest tasks of the service first, then
/// the label-value order (missing label last).
type ChildOrderKey = (u64, u32, usize);

enum BranchContents {
    /// Child branches that still have a node able to take the group's tasks.
    Children(BTreeSet<ChildOrderKey>),
    /// Nodes of a leaf, least loaded on top.
    Nodes(BinaryHeap<Reverse<NodeLoadKey>>),
}

struct SpreadBranch {
    parent: Option<usize>,
    position_among_siblings: u32,
    /// Tasks of the group's service on this branch's nodes, including ones placed in this batch.
    service_task_count: u64,
    contents: BranchContents,
}

/// A node popped from a leaf, to be returned there once its load is updated.
struct TakenNode {
    node_index: NodeIndex,
    leaf_branch: usize,
}

/// Candidate nodes split by spread-label values, one level per preference,
/// kept in an arena whose first entry is the root.
struct SpreadTree {
    branches: Vec<SpreadBranch>,
    exhausted: bool,
}

impl SpreadTree {
    /// Fills a layout with the current load of one group's service.
    fn from_layout(
        layout: &SpreadLayout,
        load_key: impl Fn(NodeIndex) -> NodeLoadKey,
    ) -> SpreadTree {
        let keys: Vec<NodeLoadKey> = layout
            .candidates_in_leaf_order
            .iter()
            .map(|index| load_key(*index))
            .collect();
        // Reverse pre-order visits children before parents, so sums flow upwards in one pass.
        let mut service_task_counts = vec![0_u64; layout.branches.len()];
        for (branch_index, branch) in layout.branches.iter().enumerate().rev() {
            if branch.children.is_empty() {
                service_task_counts[branch_index] = keys[branch.candidate_range.clone()]
                    .iter()
                    .fold(0_u64, |sum, key| sum.saturating_add(key.service_task_count));
            }
            if let Some(parent) = branch.parent {
                service_task_counts[parent] =
                    service_task_counts[parent].saturating_add(service_task_counts[branch_index]);
            }
        }
        let branches = layout
            .branches
            .iter()
            .zip(&service_task_counts)
            .map(|(branch, service_task_count)| SpreadBranch {
                parent: branch.parent,
                position_among_siblings: branch.position_among_siblings,
                service_task_count: *service_task_count,
                contents: if branch.children.is_empty() {
                    let leaf_keys: Vec<Reverse<NodeLoadKey>> = keys[branch.candidate_range.clone()]
                        .iter()
                        .copied()
                        .map(Reverse)
                        .collect();
                    BranchContents::Nodes(BinaryHeap::from(leaf_keys))
                } else {
                    BranchContents::Children(
                        branch
                            .children
                            .iter()
                            .map(|child| {
                                let child_branch = &layout.branches[*child];
                                (
                                    service_task_counts[*child],
                                    child_branch.position_among_siblings,
                                    *child,
                                )
                            })
                            .collect(),
                    )
                },
            })
            .collect();
        SpreadTree {
            branches,
            exhausted: false,
        }
    }

    /// Walks down to the branch with the fewest tasks of the service at each
    /// level and pops that leaf's least-loaded node that passes `fits`. Nodes
    /// that fail are dropped for the rest of the group; empty branches are pruned.
    fn take_least_loaded(&mut self, fits: impl Fn(NodeIndex) -> bool) -> Option<TakenNode> {
        while !self.exhausted {
            let mut branch_index = 0;
            // An internal branch never stays empty (pruning removes it), but an
            // empty one is treated as a dead end to be pruned rather than trusted.
            while let BranchContents::Children(children) = &self.branches[branch_index].contents {
                match children.first() {
                    Some((_, _, child)) => branch_index = *child,
                    None => break,
                }
            }
            if let BranchContents::Nodes(heap) = &mut self.branches[branch_index].contents {
                while let Some(Reverse(key)) = heap.pop() {
                    if fits(key.node_index) {
                        return Some(TakenNode {
                            node_index: key.node_index,
                            leaf_branch: branch_index,
                        });
                    }
                }
            }
            self.prune(branch_index);
        }
        None
    }

    /// Puts a node back after a task landed on it, with its new load, and
    /// counts that task on every branch above it.
    fn return_after_placement(&mut self, leaf_branch: usize, new_key: NodeLoadKey) {
        let mut branch_index = leaf_branch;
        if let BranchContents::Nodes(heap) = &mut self.branches[branch_index].contents {
            heap.push(Reverse(new_key));
        }
        loop {
            let branch = &mut self.branches[branch_index];
            let old_key = (
                branch.service_task_count,
                branch.position_among_siblings,
                branch_index,
            );
            branch.service_task_count = branch.service_task_count.saturating_add(1);
            let new_child_key = (
                branch.service_task_count,
                branch.position_among_siblings,
                branch_index,
            );
            let Some(parent) = branch.parent else {
                break;
            };
            if let BranchContents::Children(children) = &mut self.branches[parent].contents {
                children.remove(&old_key);
                children.insert(new_child_key);
            }
            branch_index = parent;
        }
    }

    /// Removes an empty branch from its parent, and the parent too if that empties it.
    fn prune(&mut self, branch_index: usize) {
        let mut branch_index = branch_index;
        loop {
            let branch = &self.branches[branch_index];
            let Some(parent) = branch.parent else {
                self.exhausted = true;
                return;
            };
            let key = (
                branch.service_task_count,
                branch.position_among_siblings,
                branch_index,
            );
            let BranchContents::Children(children) = &mut self.branches[parent].contents else {
                return;
            };
            children.remove(&key);
            if !children.is_empty() {
                return;
            }
            branch_index = parent;
        }
    }
}
