//! The embedded DNS's errors, each saying what to check next.

use std::io;
use std::path::PathBuf;

/// What can go wrong setting up the embedded DNS of a task.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The namespace could not be opened or entered, or its thread failed.
    #[error(transparent)]
    Namespace(#[from] overlay_net::Error),
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
    /// Handing the sockets to the tokio runtime failed.
    #[error("cannot serve the embedded DNS sockets: {0}; call this inside the daemon's runtime")]
    Register(io::Error),
}
