//! The store's one error type. Each variant has a stable code and says what to do next.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::types::TxnRejection;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Rejected(#[from] TxnRejection),
    #[error(
        "proposal of {size} bytes exceeds the {limit}-byte limit; split it into smaller transactions"
    )]
    ProposalTooLarge { size: usize, limit: usize },
    #[error(
        "no quorum: {detail}; writes are refused until a majority of managers can reach each other"
    )]
    NoQuorum { detail: String },
    #[error(
        "the raft log at {path} is damaged ({detail}); this member refuses to start from it and has changed nothing. Move the data directory aside and rejoin the member from its peers, or restore the directory from a backup"
    )]
    CorruptLog { path: PathBuf, detail: String },
    #[error(
        "the snapshot at {path} is damaged ({detail}); this member refuses to start from it and has changed nothing. Move the data directory aside and rejoin the member from its peers"
    )]
    CorruptSnapshot { path: PathBuf, detail: String },
    #[error(
        "cannot decrypt the raft log at {path}: wrong data key or damaged file ({detail}); this member refuses to start from it and has changed nothing. Start it with the data key it was written with; if that key is lost, move the data directory aside and rejoin the member from its peers"
    )]
    UndecryptableLog { path: PathBuf, detail: String },
    #[error(
        "cannot decrypt the snapshot at {path}: wrong data key or damaged file; this member refuses to start from it and has changed nothing. Start it with the data key it was written with; if that key is lost, move the data directory aside and rejoin the member from its peers"
    )]
    UndecryptableSnapshot { path: PathBuf },
    #[error("{0}")]
    Crypto(String),
    #[error("disk I/O failed on {path}: {detail}; check free space and permissions")]
    Io { path: PathBuf, detail: String },
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error(
        "watch from index {requested} can't be resumed: changes before index {oldest_retained} are no longer kept; list the objects again and watch from the index of that read"
    )]
    WatchCompacted {
        requested: u64,
        oldest_retained: u64,
    },
    #[error("TLS set-up failed: {0}; check the CA, certificate and key files")]
    Tls(String),
    #[error("can't reach member {member} at {addr}: {detail}")]
    Unreachable {
        member: u64,
        addr: String,
        detail: String,
    },
    #[error("member {member} is not the leader; retry on the leader")]
    NotLeader { member: u64 },
    #[error("raft: {0}")]
    Raft(String),
    /// This member belongs to a cluster that a forced recovery left behind; the detail says
    /// how to rejoin.
    #[error("{detail}")]
    Fenced { detail: String },
    #[error("the store is shutting down")]
    ShuttingDown,
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: impl std::fmt::Display) -> Self {
        StoreError::Io {
            path: path.into(),
            detail: error.to_string(),
        }
    }
}

impl From<StoreError> for tonic::Status {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::Rejected(TxnRejection::Conflict { .. }) => tonic::Status::aborted(message),
            StoreError::Rejected(TxnRejection::NotFound { .. }) => {
                tonic::Status::not_found(message)
            }
            StoreError::Rejected(
                TxnRejection::AlreadyExists { .. } | TxnRejection::NameInUse { .. },
            ) => tonic::Status::already_exists(message),
            StoreError::Rejected(_) | StoreError::ProposalTooLarge { .. } => {
                tonic::Status::invalid_argument(message)
            }
            StoreError::NoQuorum { .. }
            | StoreError::Unreachable { .. }
            | StoreError::NotLeader { .. } => tonic::Status::unavailable(message),
            StoreError::Membership(_)
            | StoreError::WatchCompacted { .. }
            | StoreError::Fenced { .. } => tonic::Status::failed_precondition(message),
            _ => tonic::Status::internal(message),
        }
    }
}
