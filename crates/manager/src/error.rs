//! The manager's one error type, and its mapping to gRPC statuses.

use raft_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "stored {kind} {id} can't be decoded ({detail}); the store holds data this manager doesn't understand: check that every manager runs the same shoal version"
    )]
    Corrupt {
        kind: String,
        id: String,
        detail: String,
    },
    /// A request the caller must change: the message says what and how.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{kind} {reference} not found: list them with 'shoal {kind} ls'")]
    NotFound {
        kind: &'static str,
        reference: String,
    },
    #[error(
        "{kind} reference {reference:?} is ambiguous: it matches {matches} {kind}s; give more characters of the ID, or the name"
    )]
    Ambiguous {
        kind: &'static str,
        reference: String,
        matches: usize,
    },
    /// The request is valid but the cluster's state refuses it; the message says why.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("certificate authority: {0}")]
    Pki(String),
    /// Making or sealing a key failed; the message says what to check.
    #[error("{0}")]
    Crypto(String),
    /// Another node could not be reached; the message says which and what to check.
    #[error("{0}")]
    Unavailable(String),
    /// The caller, or the node it talks to, is not who it must be.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller passed a size or rate limit; the message names it and when to retry.
    #[error("{0}")]
    ResourceExhausted(String),
    /// What a manager answered a call this node made to it.
    #[error("{}", .0.message())]
    Remote(tonic::Status),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A spec rule a request breaks is the caller's to fix.
impl From<spec::SpecError> for ManagerError {
    fn from(error: spec::SpecError) -> ManagerError {
        ManagerError::InvalidArgument(error.to_string())
    }
}

impl ManagerError {
    /// A manager's answer to a call, kept with its code.
    pub fn from_status(status: tonic::Status) -> ManagerError {
        ManagerError::Remote(status)
    }
}

impl From<ManagerError> for tonic::Status {
    fn from(error: ManagerError) -> Self {
        let message = error.to_string();
        match error {
            ManagerError::Store(error) => error.into(),
            ManagerError::Corrupt { .. } => tonic::Status::data_loss(message),
            ManagerError::InvalidArgument(_) | ManagerError::Ambiguous { .. } => {
                tonic::Status::invalid_argument(message)
            }
            ManagerError::NotFound { .. } => tonic::Status::not_found(message),
            ManagerError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            ManagerError::Pki(_) | ManagerError::Crypto(_) | ManagerError::Io { .. } => {
                tonic::Status::internal(message)
            }
            ManagerError::Unavailable(_) => tonic::Status::unavailable(message),
            ManagerError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            ManagerError::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            ManagerError::Remote(status) => tonic::Status::new(status.code(), message),
        }
    }
}
