//! shoal's cluster store: every manager holds the whole cluster state (nodes, services, tasks,
//! networks, secrets, configs, stacks) as opaque objects that Raft replicates.
//!
//! - Writes are [`Transaction`]s: batches of creates, updates and deletes that commit whole or not
//!   at all. Each update and delete states the version it read; a stale one fails the batch with
//!   [`TxnRejection::Conflict`].
//! - Reads are linearizable (through the leader's read index) or local.
//! - Committed changes come out of [`Store::watch`] in log order, resumable from an index.
//! - The log and vote live in redb and are fsynced before anything is acknowledged; the object
//!   state is rebuilt from a snapshot file plus the log. Log entries and snapshot contents are
//!   sealed on disk with AES-256-GCM under the member's [`DataKey`], which its caller keeps.
//!
//! Architecture invariant: the store knows kinds, ids, names and versions, never what an object
//! means. openraft is used only inside this crate.

// The test PKI shared with the integration tests names the crate `raft_store`.
#[cfg(test)]
extern crate self as raft_store;

mod client;
mod data_key;
mod error;
#[cfg(test)]
mod fail_stop_tests;
mod fence;
mod log_store;
#[cfg(test)]
mod metrics_tests;
mod network;
mod object_store;
mod server;
pub mod standalone;
mod state_machine;
#[cfg(test)]
mod storage_suite;
mod store;
mod tls;
mod types;
mod watch;
mod wire;

pub use client::StoreClient;
pub use data_key::DataKey;
pub use error::StoreError;
pub use network::LinkFilter;
pub use server::{RaftCall, RaftCallGuard};
pub use store::{ReadConsistency, Store, StoreConfig, StoreStatus, StoreView, force_new_cluster};
pub use tls::{MANAGER_SERVER_NAME, TlsIdentity};
pub use types::{
    Change, ChangeEvent, CommittedChanges, Kind, MemberId, ObjectRecord, Transaction, TxnOutcome,
    TxnRejection, new_object_id,
};
pub use watch::Watch;
