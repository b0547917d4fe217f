//! Pure task placement for shoal: filters, spread placement preferences and least-loaded selection over a batch of tasks.
//!
//! **Architecture invariant:** this crate does no IO, reads no clock, uses no
//! randomness and knows nothing of protobuf or the network. The manager
//! converts its objects into [`NodeView`] and [`TaskRequest`], keeps its
//! nodes in a [`NodeSet`] as they change, calls [`schedule_on`] and turns the
//! [`Decision`]s into task updates. The same input always gives the same output.
//!
//! Placement rules written by users are parsed up front with
//! [`Constraint::parse`] and [`SpreadPreference::parse`], so a bad rule is
//! rejected when the service is created rather than when its tasks are placed.
//!
//! ```
//! use scheduler::{Constraint, Decision, NodeView, Resources, TaskRequest, schedule};
//!
//! let mut east = NodeView::new("node-east", Resources::new(2_000_000_000, 4 << 30));
//! east.labels.insert("zone".into(), "east".into());
//! let west = NodeView::new("node-west", Resources::new(2_000_000_000, 4 << 30));
//!
//! let mut task = TaskRequest::new("task-1", "web");
//! task.constraints = Constraint::parse_all(&["node.labels.zone==east"])?;
//!
//! let decisions = schedule(&[east, west], &[task]);
//! assert_eq!(decisions[0].assigned_node_id(), Some("node-east"));
//! # Ok::<(), scheduler::SchedulerError>(())
//! ```

mod constraint;
mod error;
mod filter;
mod model;
mod node_set;
mod placement;
mod preference;
mod reason;

pub use constraint::{Constraint, ConstraintOperator, NodeAttribute};
pub use error::SchedulerError;
pub use model::{
    Decision, HostPort, NodeAvailability, NodeRole, NodeView, Platform, PortProtocol, Resources,
    TaskRequest,
};
pub use node_set::NodeSet;
pub use placement::{schedule, schedule_on};
pub use preference::{SpreadLabel, SpreadPreference};
pub use reason::{FilterRejection, UnplaceableReason};
