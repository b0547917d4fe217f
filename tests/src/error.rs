//! The harness's one error type: what went wrong while building, driving or tearing down test
//! hosts, worded so the failing test's output says what to look at next.

use std::path::PathBuf;
use std::time::Duration;

/// Why the harness could not do what a test asked.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The options asked for a cluster the harness can't build.
    #[error("invalid cluster options: {0}")]
    InvalidOptions(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Setting up a test network through overlay-net failed.
    #[error("{context}: {source}")]
    DataPlane {
        context: String,
        #[source]
        source: overlay_net::Error,
    },
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed: {output}")]
    CommandFailed { command: String, output: String },
    /// A command did not exit in time and was killed.
    #[error("`{command}` did not finish within {timeout:?} (hung); {output}")]
    CommandHung {
        command: String,
        timeout: Duration,
        output: String,
    },
    /// A condition polled for did not come true in time.
    #[error("timed out after {timeout:?} waiting for {description}; last seen: {last}")]
    Timeout {
        description: String,
        timeout: Duration,
        last: String,
    },
    /// A host's daemon did not come up.
    #[error("{host}'s daemon did not start: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    DaemonStart {
        host: String,
        reason: String,
        log: PathBuf,
        log_tail: String,
    },
    /// The `shoal` binary the cluster would run is not there.
    #[error(
        "the shoal binary {} does not exist: build it with `cargo build -p cli --bin shoal` (add `--release` for a release test run) or point SHOAL_BIN at one",
        path.display()
    )]
    ShoalMissing { path: PathBuf },
}

impl HarnessError {
    /// Wraps an IO error with what the harness was doing.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let context = context.into();
        move |source| HarnessError::Io { context, source }
    }
}
