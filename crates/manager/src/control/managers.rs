//! Rules about the managers' Raft group that the control API applies, kept free of IO: when a
//! manager may be demoted or may leave, and how the node list shows each manager's state.

use std::collections::BTreeSet;

use raft_store::StoreStatus;
use shoal_proto::api::{Node, raft_member_status};

use crate::error::ManagerError;

/// Whether manager `raft_id` may stop being one (demotion, or leaving the swarm). The managers
/// left, counting only those reachable now, must be a majority of the managers now: then the
/// change itself commits even if the departing manager dies half-way, and the swarm keeps its
/// quorum afterwards. So the last manager never goes, one of two never goes, and one of three
/// goes only while the other two are reachable.
pub(crate) fn check_manager_may_go(
    raft_id: u64,
    voters: &BTreeSet<u64>,
    unreachable: &BTreeSet<u64>,
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
    if reachable_after * 2 <= total {
        return Err(ManagerError::FailedPrecondition(format!(
            "{what} is refused: it would leave {reachable_after} reachable manager(s) of the {total} now, not a majority, and the swarm would lose its Raft quorum; promote another node first (or use --force where offered)"
        )));
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

    #[test]
    fn one_of_three_may_go_but_not_the_second_nor_the_last() {
        assert!(check_manager_may_go(1, &set(&[1, 2, 3]), &set(&[]), "demoting").is_ok());
        let second = check_manager_may_go(1, &set(&[1, 2]), &set(&[]), "demoting")
            .unwrap_err()
            .to_string();
        assert!(
            second.contains("1 reachable manager(s) of the 2"),
            "{second}"
        );
        assert!(second.contains("quorum"), "{second}");
        let last = check_manager_may_go(1, &set(&[1]), &set(&[]), "leaving")
            .unwrap_err()
            .to_string();
        assert!(last.contains("last manager"), "{last}");
    }

    #[test]
    fn unreachable_managers_do_not_count() {
        // Of five, two unreachable: the remaining two reachable are no majority.
        assert!(check_manager_may_go(1, &set(&[1, 2, 3, 4, 5]), &set(&[4, 5]), "x").is_err());
        assert!(check_manager_may_go(1, &set(&[1, 2, 3, 4, 5]), &set(&[5]), "x").is_ok());
        // The departing manager's own reachability does not matter.
        assert!(check_manager_may_go(3, &set(&[1, 2, 3]), &set(&[3]), "x").is_ok());
    }
}
