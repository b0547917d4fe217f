//! The manager role: control API, orchestrators, allocator, dispatcher, CA and join tokens, stacks.
//!
//! Only the pure orchestration cores exist so far ([`orchestrator`]); the async shell that feeds
//! them from the Raft store and the other manager subsystems arrive with later issues.
//!
//! **Architecture invariant:** everything under [`orchestrator`] does no IO, reads no clock,
//! spawns nothing and uses no randomness. Time comes in as a [`orchestrator::ClusterTime`] value
//! and task ids come from a caller-supplied [`orchestrator::TaskIdGenerator`], so the same
//! snapshot always yields the same commands.

pub mod orchestrator;
