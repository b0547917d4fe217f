//! The one error of reading Docker's JSON into shoal's specs, worded as Docker words it: the
//! caller answers it with a 400.

/// A document that does not read as the spec a call takes. Paths are Go's field paths from the
/// document's type (`ServiceSpec.TaskTemplate.ContainerSpec.Env`), without array indices.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The document is not a JSON object.
    #[error("json: cannot unmarshal {found} into Go value of type {go_type}")]
    NotAnObject { found: String, go_type: String },
    /// A field holds a JSON value of another type than Docker's field (`found` is `string`,
    /// `array`, … or `number -1` for a number the field can't hold).
    #[error("json: cannot unmarshal {found} into Go struct field {path} of type {go_type}")]
    WrongType {
        path: String,
        found: String,
        go_type: String,
    },
    /// A field of the right type whose value Docker refuses; `problem` says what is accepted.
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
}
