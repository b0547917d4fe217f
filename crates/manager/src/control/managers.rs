//! Rules about the managers' Raft group that the control API applies, kept free of IO: when a
//! manager may be demoted or may leave, and how the node list shows each manager's state.

use std::collections::BTreeSet;

use raft_store::StoreStatus;
use shoal_proto::api::{Node, raft_member_status};

use crate::error::ManagerError;

/// How a manager stops being one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Departure {
    /// Another manager demotes it, while it still takes part in the change.
    Demotion,
    /// It leaves the swarm itself (`swarm leave`, which `--force` overrides).
    Leave,
}

/// Whether manager `raft_id` may stop being one. The last manager never goes.
/// - A demotion needs the managers that stay, counting only those reachable now, to be a
///   quorum of their own group, as SwarmKit's rule is: one of two may be demoted, and one of
///   three only while the other two are reachable.
/// - A leave needs them to be a majority of the managers now, so that the change commits even
///   if the leaving manager stops half-way: one of two never leaves without `--force`.
pub(crate) fn check_manager_may_go(
    raft_id: u64,
    voters: &BTreeSet<u64>,
    unreachable: &BTreeSet<u64>,
    departure: Departure,
    what: &str,
) -> Result<(), ManagerError> {
    let total = voters.len();
    if total <= 1 {
        return Err(ManagerError::FailedPrecondition(format!(
            "{what} is refused: this is the swarm's last manager, and the swarm would have none; promote another node first with 'shoal node promote'"
        )));
    }
    let reachable_after = voters
        .iter()
        .filter(|voter| **voter != raft_id && !unreachable.contains(voter))
        .count();
    let enough = match departure {
        Departure::Demotion => reachable_after > (total - 1) / 2,
        Departure::Leave => reachable_after * 2 > total,
    };
    if !enough {
        let staying = total - 1;
        return Err(ManagerError::FailedPrecondition(match departure {
            Departure::Demotion => format!(
                "{what} is refused: only {reachable_after} of the {staying} managers that would stay are reachable, not a quorum of them, and the swarm would lose its Raft quorum; bring the unreachable managers back or promote another node first"
            ),
            Departure::Leave => format!(
                "{what} is refused: it would leave {reachable_after} reachable manager(s) of the {total} now, not a majority, and the swarm would lose its Raft quorum; promote another node first (or use --force where offered)"
            ),
        }));
    }
    Ok(())
}

/// Whether the leader hears from manager `raft_id`: it is a voter, and not among those that
/// missed an election timeout of heartbeats. Only the leader knows.
pub(crate) fn reachability_on_leader(
    raft_id: u64,
    status: &StoreStatus,
) -> raft_member_status::Reachability {
    if status.voters.contains_key(&raft_id) && !status.unreachable.contains(&raft_id) {
        raft_member_status::Reachability::Reachable
    } else {
        raft_member_status::Reachability::Unreachable
    }
}

/// Fills in each manager's leader flag from this member's view of the Raft group, and on the
/// leader its reachability too. Elsewhere the reachability is what the leader last recorded in
/// the node, except that a manager no longer in the group is unreachable.
pub(crate) fn with_live_manager_status(mut nodes: Vec<Node>, status: &StoreStatus) -> Vec<Node> {
    for node in &mut nodes {
        if let Some(manager) = node.manager_status.as_mut() {
            manager.leader = status.leader == Some(manager.raft_id);
            if status.is_leader || !status.voters.contains_key(&manager.raft_id) {
                manager.reachability = reachability_on_leader(manager.raft_id, status) as i32;
            }
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    use Departure::{Demotion, Leave};

    #[test]
    fn one_of_two_may_be_demoted_but_not_leave_and_the_last_never_goes() {
        for departure in [Demotion, Leave] {
            assert!(check_manager_may_go(1, &set(&[1, 2, 3]), &set(&[]), departure, "x").is_ok());
            let last = check_manager_may_go(1, &set(&[1]), &set(&[]), departure, "x")
                .unwrap_err()
                .to_string();
            assert!(last.contains("last manager"), "{last}");
        }
        assert!(check_manager_may_go(1, &set(&[1, 2]), &set(&[]), Demotion, "x").is_ok());
        let second = check_manager_may_go(1, &set(&[1, 2]), &set(&[]), Leave, "leaving")
            .unwrap_err()
            .to_string();
        assert!(
            second.contains("1 reachable manager(s) of the 2"),
            "{second}"
        );
        assert!(second.contains("quorum"), "{second}");
    }

    #[test]
    fn unreachable_managers_do_not_count() {
        for departure in [Demotion, Leave] {
            // Of five, two unreachable: the two reachable that stay are no quorum of four.
            let five = set(&[1, 2, 3, 4, 5]);
            assert!(check_manager_may_go(1, &five, &set(&[4, 5]), departure, "x").is_err());
            assert!(check_manager_may_go(1, &five, &set(&[5]), departure, "x").is_ok());
            // Of three, one unreachable: the one reachable that stays is no quorum of two.
            let three = set(&[1, 2, 3]);
            assert!(check_manager_may_go(1, &three, &set(&[3]), departure, "x").is_err());
            // The departing manager's own reachability does not matter.
            assert!(check_manager_may_go(3, &three, &set(&[3]), departure, "x").is_ok());
        }
        // Of four, one unreachable: two of the three that stay are a quorum of them, but no
        // majority of the four now.
        let four = set(&[1, 2, 3, 4]);
        assert!(check_manager_may_go(1, &four, &set(&[4]), Demotion, "x").is_ok());
        assert!(check_manager_may_go(1, &four, &set(&[4]), Leave, "x").is_err());
    }
}
