//! The crate's one error type: the ways a placement rule written by a user can be malformed.

/// A placement rule that cannot be parsed. Scheduling itself cannot fail: a task
/// that fits nowhere gets [`crate::Decision::Unplaceable`], not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// A constraint expression such as `node.labels.zone==east` is malformed.
    #[error("invalid constraint {expression:?}: {problem}")]
    InvalidConstraint {
        /// The expression exactly as the user wrote it.
        expression: String,
        /// What is wrong and what is accepted instead.
        problem: String,
    },
    /// A spread descriptor such as `node.labels.zone` is malformed.
    #[error("invalid placement preference {descriptor:?}: {problem}")]
    InvalidSpreadDescriptor {
        /// The descriptor exactly as the user wrote it.
        descriptor: String,
        /// What is wrong and what is accepted instead.
        problem: String,
    },
}
