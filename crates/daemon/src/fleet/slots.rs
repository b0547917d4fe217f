//! Swarm's rule over what a simulated fleet's engines recorded: at most one running task per
//! slot, and no task's container started twice. Pure functions over [`ContainerRun`]s, ordered
//! by one sequence shared by every fake engine of the fleet.

use std::collections::BTreeMap;

/// One container's time running on one node: from its start to its stop (or removal), in
/// ticks of the fleet's shared sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRun {
    /// The node whose engine ran it.
    pub node_id: String,
    pub container_id: String,
    pub task_id: String,
    pub service_id: String,
    /// The task's name (`<service>.<slot>`, or `<service>.<node id>` for a global service): one
    /// per slot.
    pub slot: String,
    /// The tick at which it started.
    pub started: u64,
    /// The tick at which it stopped; `None` while it runs.
    pub stopped: Option<u64>,
}

impl ContainerRun {
    /// Whether it ran at any tick `other` ran.
    fn overlaps(&self, other: &ContainerRun) -> bool {
        let ends_after = |run: &ContainerRun, tick: u64| run.stopped.is_none_or(|end| end > tick);
        ends_after(self, other.started) && ends_after(other, self.started)
    }
}

/// Two containers of one slot that ran at the same time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotOverlap {
    pub first: ContainerRun,
    pub second: ContainerRun,
}

impl std::fmt::Display for SlotOverlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = |run: &ContainerRun| run.stopped.map_or("now".to_owned(), |t| t.to_string());
        write!(
            f,
            "slot {} of service {} ran twice at once: task {} on node {} (ticks {}..{}) and task {} on node {} (ticks {}..{})",
            self.first.slot,
            self.first.service_id,
            self.first.task_id,
            self.first.node_id,
            self.first.started,
            end(&self.first),
            self.second.task_id,
            self.second.node_id,
            self.second.started,
            end(&self.second),
        )
    }
}

/// Every pair of runs of the same slot that overlap in time, by slot and then start.
pub fn overlapping_runs(runs: &[ContainerRun]) -> Vec<SlotOverlap> {
    let mut by_slot: BTreeMap<(&str, &str), Vec<&ContainerRun>> = BTreeMap::new();
    for run in runs {
        by_slot
            .entry((run.service_id.as_str(), run.slot.as_str()))
            .or_default()
            .push(run);
    }
    let mut overlaps = Vec::new();
    for runs in by_slot.values_mut() {
        runs.sort_by_key(|run| run.started);
        for (index, first) in runs.iter().enumerate() {
            for second in &runs[index + 1..] {
                if first.overlaps(second) {
                    overlaps.push(SlotOverlap {
                        first: (*first).clone(),
                        second: (*second).clone(),
                    });
                }
            }
        }
    }
    overlaps
}

/// Tasks whose containers were started more than once, with how many times: a restarted agent
/// that adopts its containers starts none of them again.
pub fn tasks_started_more_than_once(runs: &[ContainerRun]) -> BTreeMap<String, usize> {
    let mut starts: BTreeMap<String, usize> = BTreeMap::new();
    for run in runs {
        *starts.entry(run.task_id.clone()).or_default() += 1;
    }
    starts.retain(|_, count| *count > 1);
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(task: &str, slot: &str, started: u64, stopped: Option<u64>) -> ContainerRun {
        ContainerRun {
            node_id: format!("node-of-{task}"),
            container_id: format!("container-of-{task}"),
            task_id: task.to_owned(),
            service_id: "web".to_owned(),
            slot: slot.to_owned(),
            started,
            stopped,
        }
    }

    #[test]
    fn a_slot_whose_runs_follow_each_other_is_fine() {
        let runs = [
            run("a", "web.1", 1, Some(5)),
            run("b", "web.1", 5, Some(9)),
            run("c", "web.1", 10, None),
            run("d", "web.2", 2, None),
        ];
        assert_eq!(overlapping_runs(&runs), []);
    }

    #[test]
    fn two_runs_of_a_slot_at_once_are_reported_whatever_their_order() {
        let runs = [
            run("c", "web.1", 10, None),
            run("a", "web.1", 1, Some(5)),
            run("b", "web.1", 4, Some(7)),
            run("d", "web.2", 2, None),
        ];
        let overlaps = overlapping_runs(&runs);
        assert_eq!(overlaps.len(), 1, "{overlaps:?}");
        assert_eq!(overlaps[0].first.task_id, "a");
        assert_eq!(overlaps[0].second.task_id, "b");
        assert!(
            overlaps[0]
                .to_string()
                .contains("slot web.1 of service web ran twice at once"),
            "{}",
            overlaps[0]
        );
    }

    #[test]
    fn a_run_still_going_overlaps_every_later_start() {
        let runs = [
            run("a", "web.1", 1, None),
            run("b", "web.1", 100, Some(101)),
        ];
        assert_eq!(overlapping_runs(&runs).len(), 1);
    }

    #[test]
    fn the_same_slot_name_in_two_services_is_two_slots() {
        let mut other = run("b", "web.1", 2, None);
        other.service_id = "api".to_owned();
        assert_eq!(overlapping_runs(&[run("a", "web.1", 1, None), other]), []);
    }

    #[test]
    fn a_task_started_twice_is_named() {
        let runs = [
            run("a", "web.1", 1, Some(3)),
            run("a", "web.1", 4, None),
            run("b", "web.2", 2, None),
        ];
        assert_eq!(
            tasks_started_more_than_once(&runs),
            BTreeMap::from([("a".to_owned(), 2)])
        );
    }
}
