//! The engine's single error type. Every variant says what went wrong and, where the user can do
//! something about it, what to do next.

use std::path::PathBuf;

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An I/O call failed; `context` names what the engine was doing.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing, e.g. "creating /var/lib/shoal/tmp".
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A blob's content does not hash to the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which blob or layer.
        what: String,
        /// The digest it was announced with.
        expected: String,
        /// The digest of the bytes actually received.
        actual: String,
    },
    /// Input that is not what it claims to be: a corrupt tarball, a truncated layer, bad JSON.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was being read.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A reference such as `busybox:latest` that cannot be parsed.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No image by that name or ID.
    #[error("no such image: {0} (see 'shoal image ls', or 'shoal image import|load|pull' it)")]
    ImageNotFound(String),
    /// The image is still used by a container.
    #[error("image {image} is in use by container {container}: remove the container first")]
    ImageInUse {
        /// The image.
        image: String,
        /// One container using it.
        container: String,
    },
    /// No container by that name or ID.
    #[error("no such container: {0} (see 'shoal container ls -a')")]
    ContainerNotFound(String),
    /// A container name is taken.
    #[error("container name {0:?} is already in use: remove that container or pick another name")]
    NameInUse(String),
    /// The container is in the wrong state for the operation.
    #[error("container {id} is {state}: {hint}")]
    WrongState {
        /// The container.
        id: String,
        /// Its current state.
        state: String,
        /// What the user can do.
        hint: String,
    },
    /// The OCI runtime (libcontainer or an external binary) failed.
    #[error("OCI runtime failed: {0}")]
    Runtime(String),
    /// The per-container shim failed to start the container.
    #[error("starting container {id} failed: {reason} (see {log})")]
    Shim {
        /// The container.
        id: String,
        /// The shim's message.
        reason: String,
        /// The shim's own log file.
        log: PathBuf,
    },
    /// A kernel call outside plain file I/O failed (mount, pidfd, prctl).
    #[error("{call} failed: {source}")]
    Sys {
        /// The call and its argument, e.g. "mount overlay on /x".
        call: String,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// A feature the engine does not implement yet.
    #[error("{0} is not supported yet")]
    NotSupported(String),
}

impl EngineError {
    /// Wraps an I/O error with what the engine was doing.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
        let context = context.into();
        move |source| EngineError::Io { context, source }
    }

    /// An `InvalidInput` error.
    pub fn invalid(what: impl Into<String>, reason: impl std::fmt::Display) -> EngineError {
        EngineError::InvalidInput {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// A `Sys` error from the current `errno`.
    #[cfg(feature = "runtime")]
    pub(crate) fn last_os(call: impl Into<String>) -> EngineError {
        EngineError::Sys {
            call: call.into(),
            source: std::io::Error::last_os_error(),
        }
    }
}

/// A name the Docker vocabulary refuses (a capability, a ulimit, a sysctl) is invalid input, said
/// as spec says it.
impl From<spec::SpecError> for EngineError {
    fn from(error: spec::SpecError) -> EngineError {
        match error {
            spec::SpecError::Invalid { what, problem } => EngineError::invalid(what, problem),
            other => EngineError::invalid("container spec", other),
        }
    }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// An error with its causes, for messages that must say what actually went wrong (a library's
/// outermost error is often only "transport error" or "invalid archive").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_names_the_error_then_its_causes() {
        #[derive(Debug)]
        struct Transport(std::io::Error);
        impl std::fmt::Display for Transport {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Transport {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_chain(&Transport(refused)), "transport error: refused");
    }
}
