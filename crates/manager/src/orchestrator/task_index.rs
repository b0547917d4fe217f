//! The tasks filed by what the orchestration cores look for: by service, slot and node, and
//! the few that need a decision (ended but still wanted, held for a restart delay, waiting for
//! a node, history beyond its slot's limit). It is kept as tasks change, one task at a time,
//! so that a step finds its work without passing over every task: a task's status change
//! costs the managers the same in a cluster of ten nodes or of five thousand.
//!
//! Every set holds task ids, and no entry is ever left empty, so an index kept through any
//! sequence of changes equals one built from the same tasks at once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::api::{Task, TaskState};

use super::snapshot::SlotKey;
use super::task_lifecycle::{
    is_history, is_terminal, is_waiting_for_restart_delay, is_wanted, observed_state,
    spec_version_of_task,
};
use crate::assignment::NodeOccupancy;

/// The kind of slot a task fills, which tells which orchestrator counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotKind {
    /// A numbered slot of a replicated service or job.
    Replica,
    /// A node's slot of a global service or job.
    Node,
    /// Neither: slot 0 and no node yet.
    None,
}

impl SlotKind {
    pub fn of_task(task: &Task) -> SlotKind {
        if task.slot > 0 {
            SlotKind::Replica
        } else if task.node_id.is_empty() {
            SlotKind::None
        } else {
            SlotKind::Node
        }
    }
}

/// One slot's tasks, old and current.
#[derive(Clone, Debug, Default, PartialEq)]
struct SlotTasks {
    tasks: BTreeSet<String>,
    /// How many of them the managers want ([`is_wanted`]).
    wanted: usize,
    /// How many of them are history ([`is_history`]).
    history: usize,
}

/// One service's tasks.
#[derive(Clone, Debug, Default, PartialEq)]
struct ServiceTasks {
    tasks: BTreeSet<String>,
    slots: BTreeMap<SlotKey, SlotTasks>,
    /// Numbered slots with at least one wanted task.
    occupied_replica_slots: usize,
    /// Slots that have tasks but no wanted one.
    unoccupied_slots: BTreeSet<SlotKey>,
    /// Wanted tasks with slot 0, numbered slots' or not.
    wanted_unnumbered: BTreeSet<String>,
    /// How many wanted tasks run each spec version, by the kind of slot they fill.
    wanted_by_spec_version: BTreeMap<(SlotKind, u64), usize>,
}

impl ServiceTasks {
    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// The cluster's tasks, filed for the orchestration cores (see the module's doc).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskIndex {
    services: BTreeMap<String, ServiceTasks>,
    /// Assigned tasks by node (a task waiting for a node is on none).
    nodes: BTreeMap<String, BTreeSet<String>>,
    /// Wanted tasks that ended, and tasks held for a restart delay that have not: the restart
    /// supervisor's work.
    restart_work: BTreeSet<String>,
    /// History tasks a scale-down removed (desired REMOVE or later): the reaper deletes them
    /// whatever the history limit.
    removed_history: BTreeSet<String>,
    /// Slots with history, the most first.
    history_by_size: BTreeSet<(Reverse<usize>, SlotKey)>,
    /// Tasks the scheduler has to place.
    waiting_for_node: BTreeSet<String>,
    /// What the tasks on each node hold of it, for the scheduler.
    occupancy: BTreeMap<String, NodeOccupancy>,
    /// Tasks the network allocator reads ([`crate::allocator::allocator_reads`]).
    allocator_reads: BTreeSet<String>,
}

/// What a task counts for in the index; the same task always counts the same.
struct Facts {
    slot: SlotKey,
    wanted: bool,
    history: bool,
}

impl Facts {
    fn of(task: &Task) -> Facts {
        Facts {
            slot: SlotKey::of_task(task),
            wanted: is_wanted(task),
            history: is_history(task),
        }
    }
}

impl TaskIndex {
    /// Files `task`, which must not be filed already.
    pub fn insert(&mut self, task: &Task) {
        self.file(task, true);
    }

    /// Takes `task` out, as it was filed.
    pub fn remove(&mut self, task: &Task) {
        self.file(task, false);
    }

    fn file(&mut self, task: &Task, add: bool) {
        let id = task.id.as_str();
        let facts = Facts::of(task);
        set(
            &mut self.restart_work,
            id,
            add && needs_restart_decision(task),
        );
        set(
            &mut self.removed_history,
            id,
            add && facts.history && task.desired_state >= TaskState::Remove as i32,
        );
        set(
            &mut self.waiting_for_node,
            id,
            add && crate::assignment::waits_for_node(task),
        );
        set(
            &mut self.allocator_reads,
            id,
            add && crate::allocator::allocator_reads(task),
        );
        if NodeOccupancy::counts(task) {
            let occupancy = self.occupancy.entry(task.node_id.clone()).or_default();
            occupancy.count(task, add);
            if occupancy.is_empty() {
                self.occupancy.remove(&task.node_id);
            }
        }
        if !task.node_id.is_empty() {
            let on_node = self.nodes.entry(task.node_id.clone()).or_default();
            set(on_node, id, add);
            if on_node.is_empty() {
                self.nodes.remove(&task.node_id);
            }
        }

        let service = self.services.entry(task.service_id.clone()).or_default();
        set(&mut service.tasks, id, add);
        set(
            &mut service.wanted_unnumbered,
            id,
            add && facts.wanted && task.slot == 0,
        );
        if facts.wanted {
            let key = (SlotKind::of_task(task), spec_version_of_task(task));
            tally(&mut service.wanted_by_spec_version, key, add);
        }

        let slot = service.slots.entry(facts.slot.clone()).or_default();
        let (was_occupied, history_before) = (slot.wanted > 0, slot.history);
        set(&mut slot.tasks, id, add);
        if facts.wanted {
            slot.wanted = step(slot.wanted, add);
        }
        if facts.history {
            slot.history = step(slot.history, add);
        }
        let (occupied, history_after, slot_is_empty) =
            (slot.wanted > 0, slot.history, slot.tasks.is_empty());
        if slot_is_empty {
            service.slots.remove(&facts.slot);
        }
        if matches!(facts.slot, SlotKey::Replica { .. }) && was_occupied != occupied {
            service.occupied_replica_slots = step(service.occupied_replica_slots, occupied);
        }
        set(
            &mut service.unoccupied_slots,
            &facts.slot,
            !slot_is_empty && !occupied,
        );
        if service.is_empty() {
            self.services.remove(&task.service_id);
        }
        if history_before != history_after {
            if history_before > 0 {
                self.history_by_size
                    .remove(&(Reverse(history_before), facts.slot.clone()));
            }
            if history_after > 0 {
                self.history_by_size
                    .insert((Reverse(history_after), facts.slot));
            }
        }
    }

    fn service(&self, service_id: &str) -> Option<&ServiceTasks> {
        self.services.get(service_id)
    }

    fn slot(&self, slot: &SlotKey) -> Option<&SlotTasks> {
        self.service(slot.service_id())?.slots.get(slot)
    }

    /// The ids of a service's tasks (`""`: tasks of no service), in id order.
    pub fn tasks_of_service<'a>(
        &'a self,
        service_id: &str,
    ) -> impl Iterator<Item = &'a str> + use<'a> {
        self.service(service_id)
            .into_iter()
            .flat_map(|service| service.tasks.iter().map(String::as_str))
    }

    /// The ids of the services that have tasks, in id order.
    pub fn services_with_tasks(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    /// The ids of the tasks assigned to `node_id`, in id order.
    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        self.nodes
            .get(node_id)
            .into_iter()
            .flat_map(|tasks| tasks.iter().map(String::as_str))
    }

    /// The ids of the nodes that have tasks assigned, in id order.
    pub fn nodes_with_tasks(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// The ids of the tasks that fill `slot`, old and current, in id order.
    pub fn tasks_of_slot<'a>(&'a self, slot: &SlotKey) -> impl Iterator<Item = &'a str> + use<'a> {
        self.slot(slot)
            .into_iter()
            .flat_map(|slot| slot.tasks.iter().map(String::as_str))
    }

    /// Whether some task the managers want fills `slot`.
    pub fn slot_is_occupied(&self, slot: &SlotKey) -> bool {
        self.slot(slot).is_some_and(|slot| slot.wanted > 0)
    }

    /// How many numbered slots of the service hold a wanted task.
    pub fn occupied_replica_slots(&self, service_id: &str) -> usize {
        self.service(service_id)
            .map_or(0, |service| service.occupied_replica_slots)
    }

    /// The service's slots that have tasks but none the managers want, in order.
    pub fn unoccupied_slots<'a>(
        &'a self,
        service_id: &str,
    ) -> impl Iterator<Item = &'a SlotKey> + use<'a> {
        self.service(service_id)
            .into_iter()
            .flat_map(|service| service.unoccupied_slots.iter())
    }

    /// The service's slots that have tasks, in order.
    pub fn slots<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a SlotKey> + use<'a> {
        self.service(service_id)
            .into_iter()
            .flat_map(|service| service.slots.keys())
    }

    /// The ids of the service's wanted tasks with no slot number.
    pub fn wanted_unnumbered<'a>(
        &'a self,
        service_id: &str,
    ) -> impl Iterator<Item = &'a str> + use<'a> {
        self.service(service_id)
            .into_iter()
            .flat_map(|service| service.wanted_unnumbered.iter().map(String::as_str))
    }

    /// The spec versions the service's wanted tasks in slots of `kind` run.
    pub fn wanted_spec_versions<'a>(
        &'a self,
        service_id: &str,
        kind: SlotKind,
    ) -> impl Iterator<Item = u64> + use<'a> {
        self.service(service_id)
            .into_iter()
            .flat_map(move |service| {
                service
                    .wanted_by_spec_version
                    .keys()
                    .filter(move |(slot_kind, _)| *slot_kind == kind)
                    .map(|(_, version)| *version)
            })
    }

    /// The ids of the wanted tasks that ended and of the tasks held for a restart delay, in
    /// id order.
    pub fn restart_work(&self) -> impl Iterator<Item = &str> {
        self.restart_work.iter().map(String::as_str)
    }

    /// The ids of the history tasks a scale-down removed, in id order.
    pub fn removed_history(&self) -> impl Iterator<Item = &str> {
        self.removed_history.iter().map(String::as_str)
    }

    /// The slots with more than `keep` history tasks (removed ones included), the most first.
    pub fn slots_with_history_over(&self, keep: usize) -> impl Iterator<Item = &SlotKey> {
        self.history_by_size
            .iter()
            .take_while(move |(Reverse(history), _)| *history > keep)
            .map(|(_, slot)| slot)
    }

    /// What the tasks on `node_id` hold of it, if any counts there.
    pub fn occupancy(&self, node_id: &str) -> Option<&NodeOccupancy> {
        self.occupancy.get(node_id)
    }

    /// The ids of the tasks the network allocator reads, in id order.
    pub fn allocator_reads(&self) -> impl Iterator<Item = &str> {
        self.allocator_reads.iter().map(String::as_str)
    }

    /// The ids of the tasks the scheduler has to place, in id order.
    pub fn waiting_for_node(&self) -> impl Iterator<Item = &str> {
        self.waiting_for_node.iter().map(String::as_str)
    }
}

/// Whether the restart supervisor has something to decide about `task`: it ended while still
/// wanted, or it is held for a restart delay and has not ended.
fn needs_restart_decision(task: &Task) -> bool {
    let ended = is_terminal(observed_state(task));
    if is_waiting_for_restart_delay(task) {
        !ended
    } else {
        is_wanted(task) && ended
    }
}

fn set<T: Ord + Clone + std::borrow::Borrow<Q>, Q: Ord + ?Sized + ToOwned<Owned = T>>(
    set: &mut BTreeSet<T>,
    member: &Q,
    present: bool,
) {
    if present {
        if !set.contains(member) {
            set.insert(member.to_owned());
        }
    } else {
        set.remove(member);
    }
}

/// Counts one more of `key`, or one fewer, dropping a count that reaches zero.
pub(crate) fn tally<K: Ord>(counts: &mut BTreeMap<K, usize>, key: K, add: bool) {
    if add {
        *counts.entry(key).or_default() += 1;
    } else if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

fn step(count: usize, up: bool) -> usize {
    if up {
        count + 1
    } else {
        count.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt as _, SeedableRng as _};
    use shoal_proto::api::{TaskStatus, Version};

    use super::*;

    const STATES: [TaskState; 9] = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Ready,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Complete,
        TaskState::Failed,
        TaskState::Shutdown,
        TaskState::Remove,
    ];

    fn random_task(random: &mut StdRng, id: usize) -> Task {
        let mut status = TaskStatus::default();
        status.set_state(STATES[random.random_range(0..STATES.len())]);
        let mut task = Task {
            id: format!("t{id}"),
            service_id: ["s0", "s1"][random.random_range(0..2)].to_owned(),
            slot: random.random_range(0..4),
            node_id: ["", "n0", "n1"][random.random_range(0..3)].to_owned(),
            spec_version: Some(Version {
                index: random.random_range(1..3),
            }),
            status: Some(status),
            ..Default::default()
        };
        task.set_desired_state(STATES[random.random_range(0..STATES.len())]);
        task
    }

    /// What each accessor must answer, worked out from the tasks themselves.
    fn check(index: &TaskIndex, tasks: &BTreeMap<String, Task>) {
        let ids = |filter: &dyn Fn(&Task) -> bool| -> Vec<&str> {
            tasks
                .values()
                .filter(|task| filter(task))
                .map(|task| task.id.as_str())
                .collect()
        };
        assert_eq!(
            index.restart_work().collect::<Vec<_>>(),
            ids(&needs_restart_decision)
        );
        assert_eq!(
            index.removed_history().collect::<Vec<_>>(),
            ids(&|task| is_history(task) && task.desired_state >= TaskState::Remove as i32)
        );
        assert_eq!(
            index.waiting_for_node().collect::<Vec<_>>(),
            ids(&crate::assignment::waits_for_node)
        );
        for service_id in ["s0", "s1"] {
            let of_service = |task: &Task| task.service_id == service_id;
            assert_eq!(
                index.tasks_of_service(service_id).collect::<Vec<_>>(),
                ids(&of_service)
            );
            assert_eq!(
                index.wanted_unnumbered(service_id).collect::<Vec<_>>(),
                ids(&|task| of_service(task) && is_wanted(task) && task.slot == 0)
            );
            let mut slots: BTreeMap<SlotKey, Vec<&Task>> = BTreeMap::new();
            for task in tasks.values().filter(|task| of_service(task)) {
                slots.entry(SlotKey::of_task(task)).or_default().push(task);
            }
            assert_eq!(
                index.slots(service_id).collect::<Vec<_>>(),
                slots.keys().collect::<Vec<_>>()
            );
            let occupied = |slot: &[&Task]| slot.iter().any(|task| is_wanted(task));
            assert_eq!(
                index.occupied_replica_slots(service_id),
                slots
                    .iter()
                    .filter(|(key, slot)| matches!(key, SlotKey::Replica { .. }) && occupied(slot))
                    .count()
            );
            assert_eq!(
                index.unoccupied_slots(service_id).collect::<Vec<_>>(),
                slots
                    .iter()
                    .filter(|(_, slot)| !occupied(slot))
                    .map(|(key, _)| key)
                    .collect::<Vec<_>>()
            );
            for kind in [SlotKind::Replica, SlotKind::Node] {
                let versions: BTreeSet<u64> = tasks
                    .values()
                    .filter(|task| {
                        of_service(task) && is_wanted(task) && SlotKind::of_task(task) == kind
                    })
                    .map(spec_version_of_task)
                    .collect();
                assert_eq!(
                    index
                        .wanted_spec_versions(service_id, kind)
                        .collect::<BTreeSet<_>>(),
                    versions
                );
            }
            for keep in 0..3 {
                let crowded: BTreeSet<&SlotKey> = slots
                    .iter()
                    .filter(|(_, slot)| slot.iter().filter(|task| is_history(task)).count() > keep)
                    .map(|(key, _)| key)
                    .collect();
                let filed: BTreeSet<&SlotKey> = index
                    .slots_with_history_over(keep)
                    .filter(|slot| slot.service_id() == service_id)
                    .collect();
                assert_eq!(filed, crowded, "history over {keep}");
            }
        }
        for node_id in ["n0", "n1"] {
            assert_eq!(
                index.tasks_on_node(node_id).collect::<Vec<_>>(),
                ids(&|task| task.node_id == node_id)
            );
            let mut occupancy = NodeOccupancy::default();
            for task in tasks
                .values()
                .filter(|task| task.node_id == node_id && NodeOccupancy::counts(task))
            {
                occupancy.count(task, true);
            }
            let expected = (!occupancy.is_empty()).then_some(&occupancy);
            assert_eq!(index.occupancy(node_id), expected);
        }
    }

    #[test]
    fn the_index_answers_as_the_tasks_do_through_random_changes() {
        let mut random = StdRng::seed_from_u64(5);
        let mut index = TaskIndex::default();
        let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
        for _ in 0..2_000 {
            let id = random.random_range(0..40);
            let task = random_task(&mut random, id);
            if let Some(old) = tasks.remove(&task.id) {
                index.remove(&old);
            }
            // Now and then a task goes instead of changing.
            if random.random_range(0..5) > 0 {
                index.insert(&task);
                tasks.insert(task.id.clone(), task);
            }
            check(&index, &tasks);
        }
        let mut rebuilt = TaskIndex::default();
        for task in tasks.values() {
            rebuilt.insert(task);
        }
        assert_eq!(index, rebuilt);
    }
}
