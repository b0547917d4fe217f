//! The manager role: control API, orchestrators, allocator, dispatcher, CA and join tokens, stacks.
//!
//! So far: the pure orchestration cores ([`orchestrator`]), the typed view of the cluster store
//! ([`objects`]) and the leader-only loop that drives the cores from the store
//! ([`orchestration_loop`]). The control API, dispatcher and CA arrive with later issues.
//!
//! **Architecture invariant:** the manager runs no containers. Everything under
//! [`orchestrator`] does no IO, reads no clock, spawns nothing and uses no randomness: time comes
//! in as a [`orchestrator::ClusterTime`] value and task ids come from a caller-supplied
//! [`orchestrator::TaskIdGenerator`], so the same snapshot always yields the same commands. Only
//! the shells around the cores touch the store or the clock.

pub mod assignment;
mod error;
pub mod objects;
pub mod orchestration_loop;
pub mod orchestrator;

pub use error::ManagerError;
