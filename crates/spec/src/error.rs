//! The one error of this crate: what was wrong, where, and what is accepted instead.

/// A value or spec that breaks one of Docker's rules. Every message names the value or field,
/// says what is wrong and what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A duration that is not Go's `time.ParseDuration` syntax, or is negative or too long.
    #[error(
        "invalid duration {text:?}: {problem}; use a number with a unit (ns, us, ms, s, m, h) such as 500ms, 10s, 1m30s or 2h"
    )]
    Duration { text: String, problem: String },
    /// A size that is not go-units' syntax.
    #[error(
        "invalid size {text:?}: {problem}; use a number of bytes with an optional unit b, k, m, g, t or p, such as 512m or 1g"
    )]
    Size { text: String, problem: String },
    /// A word that is not one of an enum's text forms.
    #[error("invalid {what} {text:?}: use {accepted}")]
    UnknownName {
        what: &'static str,
        text: String,
        accepted: String,
    },
    /// A Go-template placeholder Swarm does not expand, or broken template syntax.
    #[error("invalid template {text:?}: {problem}")]
    Template { text: String, problem: String },
    /// A value of some kind (a capability, a ulimit) that is not one, and what would be.
    #[error("invalid {what}: {problem}")]
    Invalid { what: &'static str, problem: String },
    /// A field of a spec that breaks a rule; `problem` says which and what to do.
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
    /// A rule about the spec as a whole, already phrased as a full sentence with its fix.
    #[error("{0}")]
    Rule(String),
}

impl SpecError {
    /// The same error, said of `field` (a flag, a compose key path or a spec field).
    pub fn in_field(self, field: impl Into<String>) -> SpecError {
        SpecError::Field {
            field: field.into(),
            problem: self.to_string(),
        }
    }

    pub(crate) fn rule(message: impl Into<String>) -> SpecError {
        SpecError::Rule(message.into())
    }
}
