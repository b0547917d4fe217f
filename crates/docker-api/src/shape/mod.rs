//! Docker's JSON shapes for shoal's objects, both ways, as moby's API types spell them: what
//! `docker service inspect` and `GET /services/{id}` show, and the specs `docker service create`
//! sends. Pure: proto values in, `serde_json` values out, and back. The shoal CLI prints its
//! `inspect` documents with these same functions.
//!
//! Reading follows Go's encoding/json (keys in any case, unknown keys skipped, a wrong type
//! refused naming the field's path) and then Docker's daemon (what an empty word or a missing
//! field means). Where the proto has no field for one of Docker's, the field is not read, and
//! the reader says so.

pub mod common;
pub mod container;
pub mod engine;
mod error;
pub mod network;
pub mod node;
pub mod payload;
mod read;
pub mod service;
pub mod swarm;
pub mod task;
mod task_spec;
#[cfg(test)]
mod tests;

pub use error::ShapeError;
