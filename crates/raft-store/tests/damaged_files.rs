//! A member whose log or snapshot file is damaged refuses to start with an error that names the
//! file and the damage, and leaves the file exactly as it found it. Records are sealed under the
//! data key, and damage is still told apart from a wrong key: the checksum covers the sealed
//! bytes.

mod support;

use std::path::Path;

use raft_store::{ReadConsistency, Store, StoreConfig, StoreError, Transaction};
use redb::ReadableDatabase as _;
use support::pki::{TestPki, data_key};

const PAYLOAD: &[u8] = b"damage-me-0123456789";

/// A member holding one object, written at the returned log index.
async fn member_with_data(dir: &Path, snapshot: bool) -> (StoreConfig, u64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = StoreConfig::new(1, dir, &addr, TestPki::new().identity(1), data_key(1));
    let store = Store::open(config.clone()).await.unwrap();
    store.serve(listener).unwrap();
    store.bootstrap().await.unwrap();
    let index = store
        .write(Transaction::create("secret", "s1", "", PAYLOAD.to_vec()))
        .await
        .unwrap();
    if snapshot {
        store.snapshot_now().await.unwrap();
    }
    store.shutdown().await.unwrap();
    (config, index)
}

/// The stored bytes of the log entry at `index`, as the log's table holds them.
fn stored_entry(log: &Path, index: u64) -> Vec<u8> {
    let database = redb::ReadOnlyDatabase::open(log).unwrap();
    let txn = database.begin_read().unwrap();
    let entries = txn
        .open_table(redb::TableDefinition::<u64, &[u8]>::new("entries"))
        .unwrap();
    entries.get(index).unwrap().unwrap().value().to_vec()
}

/// Flips one bit in the middle of every copy of `record` in the file, so no stale page keeps a
/// good copy.
fn flip_every_copy(path: &Path, record: &[u8]) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let mut flipped = 0;
    for start in 0..=bytes.len().saturating_sub(record.len()) {
        if &bytes[start..start + record.len()] == record {
            bytes[start + record.len() / 2] ^= 0x01;
            flipped += 1;
        }
    }
    std::fs::write(path, bytes).unwrap();
    flipped
}

async fn expect_refusal(config: StoreConfig, file: &Path) -> StoreError {
    let before = std::fs::read(file).unwrap();
    let refused = Store::open(config).await;
    let error = match refused {
        Err(error) => error,
        Ok(store) => {
            store.shutdown().await.unwrap();
            panic!("a member must not start from a damaged {}", file.display());
        }
    };
    assert!(
        std::fs::read(file).unwrap() == before,
        "the damaged file was modified"
    );
    let message = error.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("changed nothing"), "{message}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_log_entry_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (config, index) = member_with_data(dir.path(), false).await;
    let log = dir.path().join("raft-log.redb");
    let record = stored_entry(&log, index);
    assert!(
        flip_every_copy(&log, &record) > 0,
        "the entry's sealed record is in the log file"
    );
    let error = expect_refusal(config, &log).await;
    assert!(
        matches!(&error, StoreError::CorruptLog { detail, .. } if detail.contains("checksum mismatch")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_file_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = member_with_data(dir.path(), false).await;
    let log = dir.path().join("raft-log.redb");
    let length = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    let error = expect_refusal(config, &log).await;
    assert!(matches!(error, StoreError::CorruptLog { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_caught_and_a_sound_one_restores_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = member_with_data(dir.path(), true).await;
    let snapshot = dir.path().join("snapshot.bin");

    // Sound files: the object survives a restart from the snapshot.
    let store = Store::open(config.clone()).await.unwrap();
    let secret = store
        .get("secret", "s1", ReadConsistency::Local)
        .await
        .unwrap();
    assert_eq!(
        secret.map(|record| record.data.to_vec()),
        Some(PAYLOAD.to_vec())
    );
    store.shutdown().await.unwrap();

    // A bit near the end: in the sealed objects' authentication tag.
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let near_end = bytes.len() - 5;
    bytes[near_end] ^= 0x01;
    std::fs::write(&snapshot, bytes).unwrap();
    let error = expect_refusal(config, &snapshot).await;
    assert!(
        matches!(&error, StoreError::CorruptSnapshot { detail, .. } if detail.contains("checksum mismatch")),
        "{error}"
    );
}
