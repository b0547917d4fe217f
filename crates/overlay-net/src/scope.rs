//! Narrowing a reconcile to the task namespaces whose part of the plan changed. Looking into a
//! task's namespace costs a thread and a netlink socket of its own, so observing every task on
//! every change made starting the n-th task cost n looks. A task whose part is the same as in
//! the plan last applied without error is left out of both the plan and the observation, so
//! `diff` neither checks nor touches it; the periodic full reconcile still checks everything.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::desired::Ipv4Cidr;
use crate::plan::{Link, LinkKey, Netns, State, VethPeer};

/// A task's part of a plan: the links in its namespace, the veth pairs that reach into it
/// (both ends), their addresses, and its default route.
#[derive(Debug, PartialEq, Eq)]
struct TaskPart<'a> {
    links: Vec<(&'a LinkKey, &'a Link)>,
    veths: Vec<(&'a LinkKey, &'a VethPeer)>,
    addresses: Vec<&'a (LinkKey, Ipv4Cidr)>,
    default_route: Option<&'a (String, Ipv4Addr)>,
}

/// The keys of the links that make up the parts of `tasks` in `plan`: every link in those
/// namespaces and the near ends of the veth pairs whose far ends are there.
fn part_keys(plan: &State, tasks: &BTreeSet<Netns>) -> BTreeSet<LinkKey> {
    let inside = plan.links.keys().filter(|key| tasks.contains(&key.ns));
    let near_ends = plan
        .veths
        .iter()
        .filter(|(_, peer)| tasks.contains(&peer.key.ns))
        .map(|(near, _)| near);
    inside.chain(near_ends).cloned().collect()
}

fn task_part<'a>(plan: &'a State, ns: &Netns) -> TaskPart<'a> {
    let keys = part_keys(plan, &BTreeSet::from([ns.clone()]));
    TaskPart {
        links: plan
            .links
            .iter()
            .filter(|(key, _)| keys.contains(*key))
            .collect(),
        veths: plan
            .veths
            .iter()
            .filter(|(near, _)| keys.contains(*near))
            .collect(),
        addresses: plan
            .addresses
            .iter()
            .filter(|(key, _)| keys.contains(key))
            .collect(),
        default_route: plan.default_routes.get(ns),
    }
}

fn task_namespaces(plan: &State) -> BTreeSet<Netns> {
    plan.links
        .keys()
        .map(|key| &key.ns)
        .filter(|ns| matches!(ns, Netns::Task(_)))
        .cloned()
        .collect()
}

/// The task namespaces `next` plans exactly as `last` did.
pub fn unchanged_tasks(last: &State, next: &State) -> BTreeSet<Netns> {
    task_namespaces(next)
        .into_iter()
        .filter(|ns| task_part(last, ns) == task_part(next, ns))
        .collect()
}

impl State {
    /// This state (a plan, or what was observed) without the parts `plan` gives `tasks`: their
    /// links, the veth pairs reaching into them, those links' addresses and steering, and their
    /// default routes.
    pub fn without_tasks(&self, plan: &State, tasks: &BTreeSet<Netns>) -> State {
        let keys = part_keys(plan, tasks);
        let mut narrowed = self.clone();
        narrowed.links.retain(|key, _| !keys.contains(key));
        narrowed.veths.retain(|near, _| !keys.contains(near));
        narrowed.addresses.retain(|(key, _)| !keys.contains(key));
        narrowed.default_routes.retain(|ns, _| !tasks.contains(ns));
        narrowed.steered_links.retain(|key| !keys.contains(key));
        narrowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{LocalEndpoint, LocalTask, Mac};
    use crate::diff::diff;
    use crate::plan::plan;
    use crate::plan::tests::{cidr, desired, ip, steered_names, with_host_leg};

    const SECOND: &str = "taskbbbbbbbbbbbbbbbbbbbbb";

    fn task_ns(path: &str) -> Netns {
        Netns::Task(path.into())
    }

    /// `desired()` with a second task on the same network.
    fn two_tasks() -> crate::Desired {
        let mut d = desired();
        d.tasks.push(LocalTask {
            id: SECOND.into(),
            netns: "/proc/200/ns/net".into(),
            egress: Some(ip("172.18.0.3")),
        });
        d.endpoints.push(LocalEndpoint {
            task_id: SECOND.into(),
            network_id: "net1".into(),
            address: cidr("10.0.1.9/24"),
            mac: Mac::for_ipv4(ip("10.0.1.9")),
            interface: "eth0".into(),
        });
        d
    }

    #[test]
    fn a_new_task_leaves_the_others_unchanged_and_a_moved_address_does_not() {
        let last = plan(&desired()).unwrap();
        let next = plan(&two_tasks()).unwrap();
        assert_eq!(
            unchanged_tasks(&last, &next),
            BTreeSet::from([task_ns("/proc/100/ns/net")])
        );

        let mut moved = two_tasks();
        moved.endpoints[0].address = cidr("10.0.1.8/24");
        assert_eq!(
            unchanged_tasks(&next, &plan(&moved).unwrap()),
            BTreeSet::from([task_ns("/proc/200/ns/net")])
        );
    }

    #[test]
    fn a_changed_network_mtu_changes_every_task_on_it() {
        let last = plan(&two_tasks()).unwrap();
        let mut d = two_tasks();
        d.config.underlay_mtu = 9000;
        assert!(unchanged_tasks(&last, &plan(&d).unwrap()).is_empty());
    }

    #[test]
    fn leaving_unchanged_tasks_out_of_both_sides_makes_only_the_new_tasks_changes() {
        let last = plan(&desired()).unwrap();
        let next = plan(&two_tasks()).unwrap();
        let unchanged = unchanged_tasks(&last, &next);
        // What the node has after applying `last`, seen without the unchanged task (observe is
        // told the narrowed plan, so it does not look into that task's namespace).
        let mut seen = last.clone();
        seen.veths.clear();
        let seen = seen.without_tasks(&next, &unchanged);
        let narrowed = next.without_tasks(&next, &unchanged);
        assert!(
            narrowed
                .links
                .keys()
                .all(|key| key.ns != task_ns("/proc/100/ns/net"))
        );
        // Nor is its gateway leg's steering looked at.
        assert_eq!(steered_names(&narrowed), ["t1-gtaskbbb", "t1-x001001"]);

        let changes = diff(&narrowed, &seen);
        assert!(!changes.is_empty());
        let touched_first = changes.iter().any(|change| {
            let change = format!("{change:?}");
            change.contains("taskaaa") || change.contains("/proc/100/")
        });
        assert!(!touched_first, "{changes:#?}");
        // The whole diff makes the same changes for the new task.
        let mut whole_seen = last.clone();
        whole_seen.veths.clear();
        assert_eq!(diff(&next, &whole_seen), changes);
    }

    #[test]
    fn a_host_leg_is_no_task_s_part_and_is_made_by_the_narrowed_diff() {
        let last = plan(&desired()).unwrap();
        let next = plan(&with_host_leg()).unwrap();
        let unchanged = unchanged_tasks(&last, &next);
        assert_eq!(unchanged, BTreeSet::from([task_ns("/proc/100/ns/net")]));

        let mut seen = last.clone();
        seen.veths.clear();
        let narrowed = next.without_tasks(&next, &unchanged);
        assert_eq!(narrowed.loose_rp_filter, next.loose_rp_filter);
        let changes = diff(&narrowed, &seen.without_tasks(&next, &unchanged));
        assert_eq!(diff(&next, &seen), changes);
        assert!(
            changes.iter().any(|change| matches!(change,
                crate::diff::Change::CreateVeth { peer, .. } if peer.key.ns == Netns::Underlay)),
            "{changes:#?}"
        );

        // Dropping it again leaves the task alone too.
        let mut applied = next.clone();
        applied.veths.clear();
        let back = plan(&desired()).unwrap();
        let unchanged = unchanged_tasks(&next, &back);
        assert_eq!(unchanged.len(), 1);
        let changes = diff(
            &back.without_tasks(&back, &unchanged),
            &applied.without_tasks(&back, &unchanged),
        );
        assert_eq!(changes.len(), 2, "{changes:#?}");
    }
}
