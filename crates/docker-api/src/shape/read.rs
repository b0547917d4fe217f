//! Reading Docker's JSON as Go's encoding/json reads it into moby's types: a key matches its
//! field whatever its case, null reads as absent, keys no field has are skipped (newer clients
//! send fields shoal does not know), and a value of the wrong type is refused with Go's message,
//! naming the field's path. Each reader says what an absent field reads as.

use std::collections::HashMap;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Map, Value};
use shoal_proto::api;
use spec::enums::TextForm;

use super::ShapeError;
use super::common::duration_from_nanos;

/// A JSON object read as one of Docker's structs, and where it is in the document.
pub(crate) struct Object<'a> {
    fields: &'a Map<String, Value>,
    path: String,
}

/// A field that is present and not null, and its path.
pub(crate) struct Field<'a> {
    value: &'a Value,
    path: String,
}

/// The JSON type of a value, as Go's messages name it.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl<'a> Field<'a> {
    fn wrong_type(&self, go_type: &str) -> ShapeError {
        ShapeError::WrongType {
            path: self.path.clone(),
            found: kind(self.value).to_owned(),
            go_type: go_type.to_owned(),
        }
    }

    /// A number the field's Go type can't hold (negative, fractional or too large): Go quotes
    /// the number.
    fn number_out_of_range(&self, go_type: &str) -> ShapeError {
        match self.value {
            Value::Number(number) => ShapeError::WrongType {
                path: self.path.clone(),
                found: format!("number {number}"),
                go_type: go_type.to_owned(),
            },
            _ => self.wrong_type(go_type),
        }
    }

    fn string(&self) -> Result<String, ShapeError> {
        self.value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.wrong_type("string"))
    }

    fn number<T>(
        &self,
        go_type: &str,
        read: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<T, ShapeError> {
        if !self.value.is_number() {
            return Err(self.wrong_type(go_type));
        }
        read(self.value).ok_or_else(|| self.number_out_of_range(go_type))
    }

    /// An element of a string list or map: null reads as the empty string, as in Go.
    fn element_string(value: &Value, path: &str) -> Result<String, ShapeError> {
        match value {
            Value::Null => Ok(String::new()),
            Value::String(text) => Ok(text.clone()),
            other => Err(ShapeError::WrongType {
                path: path.to_owned(),
                found: kind(other).to_owned(),
                go_type: "string".to_owned(),
            }),
        }
    }
}

impl<'a> Object<'a> {
    /// The document a call takes: `name` starts every path, `go_type` names it when the
    /// document is no object.
    pub(crate) fn root(
        value: &'a Value,
        name: &str,
        go_type: &str,
    ) -> Result<Object<'a>, ShapeError> {
        match value {
            Value::Object(fields) => Ok(Object {
                fields,
                path: name.to_owned(),
            }),
            other => Err(ShapeError::NotAnObject {
                found: kind(other).to_owned(),
                go_type: go_type.to_owned(),
            }),
        }
    }

    fn path_of(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// A field's value refused for what it is rather than its type.
    pub(crate) fn invalid(&self, key: &str, problem: impl Into<String>) -> ShapeError {
        ShapeError::Invalid {
            path: self.path_of(key),
            problem: problem.into(),
        }
    }

    /// The field under `key`, spelt exactly or, failing that, in any case (Go's rule); `None`
    /// when it is absent or null.
    fn field(&self, key: &str) -> Option<Field<'a>> {
        let value = self.fields.get(key).or_else(|| {
            self.fields
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(key))
                .map(|(_, value)| value)
        })?;
        (!value.is_null()).then(|| Field {
            value,
            path: self.path_of(key),
        })
    }

    /// Whether the field is present and not null.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.field(key).is_some()
    }

    /// A string; absent reads as empty.
    pub(crate) fn string(&self, key: &str) -> Result<String, ShapeError> {
        self.field(key)
            .map_or_else(|| Ok(String::new()), |field| field.string())
    }

    /// A boolean; absent reads as false.
    pub(crate) fn boolean(&self, key: &str) -> Result<bool, ShapeError> {
        match self.field(key) {
            None => Ok(false),
            Some(field) => field
                .value
                .as_bool()
                .ok_or_else(|| field.wrong_type("bool")),
        }
    }

    /// A Go `uint64` behind a pointer: `None` when absent.
    pub(crate) fn optional_uint64(&self, key: &str) -> Result<Option<u64>, ShapeError> {
        self.field(key)
            .map(|field| field.number("uint64", Value::as_u64))
            .transpose()
    }

    /// A Go `uint64`; absent reads as 0.
    pub(crate) fn uint64(&self, key: &str) -> Result<u64, ShapeError> {
        Ok(self.optional_uint64(key)?.unwrap_or(0))
    }

    /// A Go `int64` behind a pointer: `None` when absent.
    pub(crate) fn optional_int64(&self, key: &str) -> Result<Option<i64>, ShapeError> {
        self.field(key)
            .map(|field| field.number("int64", Value::as_i64))
            .transpose()
    }

    /// A Go `int64`; absent reads as 0.
    pub(crate) fn int64(&self, key: &str) -> Result<i64, ShapeError> {
        Ok(self.optional_int64(key)?.unwrap_or(0))
    }

    /// A whole number the proto holds in 32 bits unsigned; `go_type` is Docker's (`uint32`,
    /// `int` for Raft's ticks, `os.FileMode`). Absent reads as 0.
    pub(crate) fn uint32(&self, key: &str, go_type: &str) -> Result<u32, ShapeError> {
        self.field(key).map_or(Ok(0), |field| {
            field.number(go_type, |value| {
                value.as_u64().and_then(|number| u32::try_from(number).ok())
            })
        })
    }

    /// A Go `int` the proto holds in 32 bits (a healthcheck's retries, a process id); absent
    /// reads as 0.
    pub(crate) fn int32(&self, key: &str) -> Result<i32, ShapeError> {
        self.field(key).map_or(Ok(0), |field| {
            field.number("int", |value| {
                value.as_i64().and_then(|number| i32::try_from(number).ok())
            })
        })
    }

    /// A Go `float32`; absent reads as 0.
    pub(crate) fn float32(&self, key: &str) -> Result<f32, ShapeError> {
        self.field(key).map_or(Ok(0.0), |field| {
            field.number("float32", |value| {
                value
                    .as_f64()
                    .filter(|number| number.abs() <= f64::from(f32::MAX))
                    // In range, so the narrowing only rounds.
                    .map(|number| number as f32)
            })
        })
    }

    /// A Go `[]byte`, which JSON carries as standard base64 with padding; absent reads as
    /// empty.
    pub(crate) fn bytes(&self, key: &str) -> Result<Vec<u8>, ShapeError> {
        let Some(field) = self.field(key) else {
            return Ok(Vec::new());
        };
        let text = field
            .value
            .as_str()
            .ok_or_else(|| field.wrong_type("[]uint8"))?;
        BASE64_STANDARD
            .decode(text)
            .map_err(|error| self.invalid(key, format!("not standard base64: {error}")))
    }

    /// A Go `*time.Duration` (integer nanoseconds): `None` when absent, and a present 0 is a
    /// real zero.
    pub(crate) fn duration(&self, key: &str) -> Result<Option<api::Duration>, ShapeError> {
        self.field(key)
            .map(|field| {
                field
                    .number("time.Duration", Value::as_i64)
                    .map(duration_from_nanos)
            })
            .transpose()
    }

    /// A Go `time.Duration` that is not a pointer, so 0 can't be told from absent: both read as
    /// unset.
    pub(crate) fn nonzero_duration(&self, key: &str) -> Result<Option<api::Duration>, ShapeError> {
        Ok(self
            .duration(key)?
            .filter(|duration| duration.seconds != 0 || duration.nanos != 0))
    }

    /// A `[]string`; absent reads as empty.
    pub(crate) fn strings(&self, key: &str) -> Result<Vec<String>, ShapeError> {
        let Some(field) = self.field(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = field.value else {
            return Err(field.wrong_type("[]string"));
        };
        items
            .iter()
            .map(|item| Field::element_string(item, &field.path))
            .collect()
    }

    /// A `[][]string` (a tmpfs mount's options); absent reads as empty.
    pub(crate) fn string_lists(&self, key: &str) -> Result<Vec<Vec<String>>, ShapeError> {
        let Some(field) = self.field(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(lists) = field.value else {
            return Err(field.wrong_type("[][]string"));
        };
        lists
            .iter()
            .map(|list| match list {
                Value::Null => Ok(Vec::new()),
                Value::Array(items) => items
                    .iter()
                    .map(|item| Field::element_string(item, &field.path))
                    .collect(),
                other => Err(ShapeError::WrongType {
                    path: field.path.clone(),
                    found: kind(other).to_owned(),
                    go_type: "[]string".to_owned(),
                }),
            })
            .collect()
    }

    /// A `map[string]string` (labels, options); absent reads as empty.
    pub(crate) fn string_map(&self, key: &str) -> Result<HashMap<String, String>, ShapeError> {
        let Some(field) = self.field(key) else {
            return Ok(HashMap::new());
        };
        let Value::Object(entries) = field.value else {
            return Err(field.wrong_type("map[string]string"));
        };
        entries
            .iter()
            .map(|(name, value)| Ok((name.clone(), Field::element_string(value, &field.path)?)))
            .collect()
    }

    /// A nested struct; `None` when absent. `go_type` is Docker's (`swarm.RestartPolicy`).
    pub(crate) fn object(
        &self,
        key: &str,
        go_type: &str,
    ) -> Result<Option<Object<'a>>, ShapeError> {
        let Some(field) = self.field(key) else {
            return Ok(None);
        };
        match field.value {
            Value::Object(fields) => Ok(Some(Object {
                fields,
                path: field.path,
            })),
            _ => Err(field.wrong_type(go_type)),
        }
    }

    /// A list of structs; absent reads as empty, and a null element is skipped. `go_type` is
    /// the element's Docker type (`mount.Mount`).
    pub(crate) fn objects(&self, key: &str, go_type: &str) -> Result<Vec<Object<'a>>, ShapeError> {
        let Some(field) = self.field(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = field.value else {
            return Err(field.wrong_type(&format!("[]{go_type}")));
        };
        items
            .iter()
            .filter(|item| !item.is_null())
            .map(|item| match item {
                Value::Object(fields) => Ok(Object {
                    fields,
                    path: field.path.clone(),
                }),
                other => Err(ShapeError::WrongType {
                    path: field.path.clone(),
                    found: kind(other).to_owned(),
                    go_type: go_type.to_owned(),
                }),
            })
            .collect()
    }

    /// One of spec's words for an enum; absent or empty reads as `default`, as Docker's
    /// conversions take an empty word.
    pub(crate) fn word<T: TextForm>(&self, key: &str, default: T) -> Result<T, ShapeError> {
        if self.string(key)?.is_empty() {
            return Ok(default);
        }
        self.required_word(key)
    }

    /// One of spec's words for an enum, which must be there. Docker reads most of these words
    /// in any case, so an upper-case word is taken too.
    pub(crate) fn required_word<T: TextForm>(&self, key: &str) -> Result<T, ShapeError> {
        let text = self.string(key)?;
        T::parse(&text)
            .or_else(|error| T::parse(&text.to_ascii_lowercase()).map_err(|_| error))
            .map_err(|error| self.invalid(key, error.to_string()))
    }
}
