//! The crate's one error type, [`WorkerError`]: why a task can't run here, why the assignment
//! store could not be read or written, or why an assignment set's parts don't fit together.

use std::path::PathBuf;

/// Everything that can go wrong in the worker crate. Each variant has a stable code
/// ([`WorkerError::code`]) so that logs and status messages can be matched on.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The task can't be turned into a container on this node; the task becomes REJECTED with
    /// this message.
    #[error("task {task_id} rejected: {reason}")]
    TaskRejected {
        /// The task concerned.
        task_id: String,
        /// What is wrong and, where possible, what to change.
        reason: String,
    },
    /// Reading or writing the assignment store failed.
    #[error("assignment store {path}: {operation}: {source}")]
    StoreIo {
        /// The file or directory involved.
        path: PathBuf,
        /// What the store was doing.
        operation: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The assignment store holds something this version can't read. The file is left alone
    /// so that it can be inspected; delete it to start with an empty assignment set.
    #[error("assignment store {path} is unreadable: {reason}; move it aside to start afresh")]
    StoreCorrupt {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The dispatcher sent a part of an assignment set out of order; the session is opened
    /// again, and the dispatcher sends the whole set afresh.
    #[error(
        "assignment set {version} part {part} came when {expected} was due; reconnecting for a fresh set"
    )]
    AssignmentPartOutOfOrder {
        /// The version the part carries.
        version: u64,
        /// The part's number.
        part: u32,
        /// What was due instead, as "part N of set V".
        expected: String,
    },
}

impl WorkerError {
    pub(crate) fn rejected(task_id: &str, reason: impl Into<String>) -> WorkerError {
        WorkerError::TaskRejected {
            task_id: task_id.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;
