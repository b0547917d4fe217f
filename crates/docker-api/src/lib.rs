//! The Docker Engine API on every node: the stock docker CLI drives shoal through it.
//!
//! [`shape`] turns shoal's objects into Docker's JSON and Docker's specs into shoal's (pure, and
//! shared with the shoal CLI's `inspect` output); [`version`], [`route`], [`filters`],
//! [`select`], [`system`] and [`logs`]' framing are the rest of the pure part. [`server`] and
//! [`calls`] are a thin HTTP shell: each call is answered through the same gRPC APIs the shoal
//! CLI uses, on the daemon's own socket, so both clients see the same rules.

mod calls;
pub mod error;
pub mod exec;
pub mod filters;
pub mod logs;
pub mod route;
pub mod select;
pub mod server;
pub mod shape;
pub mod system;
pub mod version;

pub use server::{Backend, serve};
