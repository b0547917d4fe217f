//! The daemon's errors: each says what failed and what to do next. The cause, when there is
//! one, is the error's source, so `{:#}` prints "what: why".

use std::path::PathBuf;

/// Why the daemon could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("unsupported host {0:?}: use -H unix:///path/to/shoal.sock")]
    UnsupportedHost(String),
    #[error(
        "unsupported Docker API address {0:?}: use --docker-api unix:///path/to/docker.sock, or none"
    )]
    UnsupportedDockerApi(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the data root {}", data_root.display())]
    Engine {
        data_root: PathBuf,
        #[source]
        source: engine::EngineError,
    },
    #[error(
        "can't serve metrics on {addr:?}: use --metrics-addr HOST:PORT with a free port on one of this machine's addresses, such as 127.0.0.1:9323"
    )]
    MetricsAddr {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another daemon is already listening on {}: stop it or pick another -H", .0.display())]
    AlreadyListening(PathBuf),
    #[error("resuming this node's swarm roles (its swarm state is under <data-root>/swarm)")]
    Resume(#[source] manager::ManagerError),
    #[error("serving the engine API")]
    Serve(#[source] tonic::transport::Error),
    #[error(
        "this manager's Raft store stopped on a fatal storage error ({0}); the daemon exits so that its supervisor restarts it: check the disk under the data root, then start it again if nothing does"
    )]
    RaftStoreStopped(String),
}

impl DaemonError {
    /// Wraps an IO error with what was being done, for `map_err`.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
        let what = what.into();
        move |source| DaemonError::Io { what, source }
    }
}
