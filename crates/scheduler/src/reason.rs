//! Why a task could not be placed: how many nodes each filter rejected, worded the way Docker words it.

use std::fmt;

/// The filters, in the fixed order they run. A node is counted against the
/// first filter that rejects it, so every node is counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FilterRejection {
    /// The node is down or not connected.
    NotReady,
    /// The node is paused or drained.
    NotActive,
    /// Neither enough CPU nor enough memory is left.
    InsufficientResources,
    /// Enough CPU is left but not enough memory.
    InsufficientMemory,
    /// Enough memory is left but not enough CPU.
    InsufficientCpu,
    /// A placement constraint does not hold.
    ConstraintsNotSatisfied,
    /// The node's platform is not one the task's image supports.
    UnsupportedPlatform,
    /// The node already runs `max_replicas_per_node` tasks of the service.
    MaxReplicasPerNodeReached,
    /// A host-mode port the task publishes is taken on the node.
    HostPortInUse,
}

impl FilterRejection {
    /// Renders the rejection for `node_count` nodes, with Docker's phrasing and correct plurals.
    fn describe(self, node_count: usize) -> String {
        let nodes = if node_count == 1 { "node" } else { "nodes" };
        match self {
            FilterRejection::NotReady => format!("{node_count} {nodes} not ready"),
            FilterRejection::NotActive => {
                format!("{node_count} {nodes} not available for new tasks")
            }
            FilterRejection::InsufficientResources => {
                format!("insufficient resources on {node_count} {nodes}")
            }
            FilterRejection::InsufficientMemory => {
                format!("insufficient memory on {node_count} {nodes}")
            }
            FilterRejection::InsufficientCpu => format!("insufficient cpu on {node_count} {nodes}"),
            FilterRejection::ConstraintsNotSatisfied => {
                format!("scheduling constraints not satisfied on {node_count} {nodes}")
            }
            FilterRejection::UnsupportedPlatform => {
                format!("unsupported platform on {node_count} {nodes}")
            }
            // Docker words this one without a count; kept so users searching for it find it.
            FilterRejection::MaxReplicasPerNodeReached => {
                "max replicas per node limit exceed".to_owned()
            }
            FilterRejection::HostPortInUse => {
                format!("host-mode port already in use on {node_count} {nodes}")
            }
        }
    }
}

/// How many nodes each filter rejected for an unplaceable task, in filter order.
///
/// Displays as Docker's message, for example
/// `no suitable node (1 node not available for new tasks; insufficient memory on 2 nodes)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnplaceableReason {
    rejected_node_counts: Vec<(FilterRejection, usize)>,
}

impl UnplaceableReason {
    /// Builds a reason from one rejection per node, in any order.
    pub(crate) fn from_rejections(rejections: impl IntoIterator<Item = FilterRejection>) -> Self {
        let mut rejected_node_counts: Vec<(FilterRejection, usize)> = Vec::new();
        for rejection in rejections {
            match rejected_node_counts
                .iter_mut()
                .find(|(kind, _)| *kind == rejection)
            {
                Some((_, count)) => *count += 1,
                None => rejected_node_counts.push((rejection, 1)),
            }
        }
        rejected_node_counts.sort_unstable();
        UnplaceableReason {
            rejected_node_counts,
        }
    }

    /// Each filter that rejected at least one node, in filter order, with the number of nodes.
    pub fn rejected_node_counts(&self) -> &[(FilterRejection, usize)] {
        &self.rejected_node_counts
    }

    /// How many nodes `filter` rejected.
    pub fn nodes_rejected_by(&self, filter: FilterRejection) -> usize {
        self.rejected_node_counts
            .iter()
            .find(|(kind, _)| *kind == filter)
            .map_or(0, |(_, count)| *count)
    }
}

impl fmt::Display for UnplaceableReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("no suitable node")?;
        if self.rejected_node_counts.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = self
            .rejected_node_counts
            .iter()
            .map(|(rejection, count)| rejection.describe(*count))
            .collect();
        write!(formatter, " ({})", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::FilterRejection::*;
    use super::*;

    #[test]
    fn renders_counts_in_filter_order_with_plurals() {
        let table: [(&[FilterRejection], &str); 8] = [
            (&[], "no suitable node"),
            (
                &[InsufficientMemory, NotActive, InsufficientMemory],
                "no suitable node (1 node not available for new tasks; insufficient memory on 2 nodes)",
            ),
            (
                &[NotReady, NotReady],
                "no suitable node (2 nodes not ready)",
            ),
            (
                &[InsufficientResources, InsufficientCpu],
                "no suitable node (insufficient resources on 1 node; insufficient cpu on 1 node)",
            ),
            (
                &[ConstraintsNotSatisfied; 3],
                "no suitable node (scheduling constraints not satisfied on 3 nodes)",
            ),
            (
                &[UnsupportedPlatform],
                "no suitable node (unsupported platform on 1 node)",
            ),
            (
                &[MaxReplicasPerNodeReached, MaxReplicasPerNodeReached],
                "no suitable node (max replicas per node limit exceed)",
            ),
            (
                &[HostPortInUse, HostPortInUse, ConstraintsNotSatisfied],
                "no suitable node (scheduling constraints not satisfied on 1 node; host-mode port already in use on 2 nodes)",
            ),
        ];
        for (rejections, expected) in table {
            let reason = UnplaceableReason::from_rejections(rejections.iter().copied());
            assert_eq!(reason.to_string(), expected, "rejections {rejections:?}");
        }
    }
}
