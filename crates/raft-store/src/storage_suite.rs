//! openraft's own conformance suite, run against the redb log and the snapshot-backed state
//! machine.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use shoal_metrics::RaftMetrics;
use tempfile::TempDir;

use crate::data_key::DataKey;
use crate::log_store::LogStore;
use crate::state_machine::StateMachine;
use crate::types::TypeConfig;

struct DiskStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for DiskStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = DataKey::generate().expect("a data key");
        let log = LogStore::open(
            &dir.path().join("raft-log.redb"),
            &key,
            &RaftMetrics::default(),
        )
        .expect("opening the log");
        let state_machine = StateMachine::open(dir.path(), &key, &RaftMetrics::default())
            .expect("opening the state machine");
        Ok((dir, log, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_passes_openraft_s_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(DiskStoreBuilder).await?;
    Ok(())
}
