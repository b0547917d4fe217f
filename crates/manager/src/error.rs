//! The manager's one error type.

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
}

impl ManagerError {
    /// A stable, machine-readable code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            ManagerError::Store(error) => error.code(),
            ManagerError::Corrupt { .. } => "corrupt_object",
        }
    }
}

impl From<ManagerError> for tonic::Status {
    fn from(error: ManagerError) -> Self {
        match error {
            ManagerError::Store(error) => error.into(),
            corrupt @ ManagerError::Corrupt { .. } => tonic::Status::data_loss(corrupt.to_string()),
        }
    }
}
