//! The embedded DNS's errors, each saying what to check next.

use std::io;
use std::path::PathBuf;

/// What can go wrong setting up the embedded DNS of a task.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The network namespace file could not be opened.
    #[error(
        "cannot open network namespace {path}: {source}; check that the task's namespace exists"
    )]
    OpenNamespace { path: PathBuf, source: io::Error },
    /// setns(2) into the namespace failed.
    #[error("cannot enter network namespace {path}: {source}; the daemon needs CAP_SYS_ADMIN")]
    EnterNamespace { path: PathBuf, source: nix::Error },
    /// Binding the listening sockets failed.
    #[error(
        "cannot listen on {address} inside {path}: {source}; check that `lo` is up in the \
         namespace and that nothing else listens there"
    )]
    Bind {
        path: PathBuf,
        address: std::net::SocketAddr,
        source: io::Error,
    },
    /// Work run inside a namespace failed.
    #[error("inside network namespace {path}: {source}")]
    InNamespace { path: PathBuf, source: io::Error },
    /// The thread that enters the namespace could not start or panicked.
    #[error("the thread entering network namespace {path} failed: {reason}")]
    NamespaceThread { path: PathBuf, reason: String },
    /// Handing the sockets to the tokio runtime failed.
    #[error("cannot serve the embedded DNS sockets: {0}; call this inside the daemon's runtime")]
    Register(io::Error),
}
