//! A member whose log or snapshot file is damaged refuses to start with an error that names the
//! file and the damage, and leaves the file exactly as it found it.

mod support;

use std::path::Path;

use raft_store::{ReadConsistency, Store, StoreConfig, StoreError, Transaction};
use support::pki::TestPki;

const MARKER: &[u8] = b"damage-me-0123456789";

async fn member_with_data(dir: &Path, snapshot: bool) -> StoreConfig {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = StoreConfig::new(1, dir, &addr, TestPki::new().identity(1));
    let store = Store::open(config.clone()).await.unwrap();
    store.serve(listener).unwrap();
    store.bootstrap().await.unwrap();
    store
        .write(Transaction::create("secret", "s1", "", MARKER.to_vec()))
        .await
        .unwrap();
    if snapshot {
        store.snapshot_now().await.unwrap();
    }
    store.shutdown().await.unwrap();
    config
}

/// Flips one bit in every copy of the marker, so no stale page keeps a good copy.
fn flip_marker(path: &Path) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let mut flipped = 0;
    for start in 0..=bytes.len().saturating_sub(MARKER.len()) {
        if &bytes[start..start + MARKER.len()] == MARKER {
            bytes[start + 5] ^= 0x01;
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
    let config = member_with_data(dir.path(), false).await;
    let log = dir.path().join("raft-log.redb");
    assert!(
        flip_marker(&log) > 0,
        "the entry's payload is in the log file"
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
    let config = member_with_data(dir.path(), false).await;
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
    let config = member_with_data(dir.path(), true).await;
    let snapshot = dir.path().join("snapshot.bin");

    // Sound files: the object survives a restart from the snapshot.
    let store = Store::open(config.clone()).await.unwrap();
    let secret = store
        .get("secret", "s1", ReadConsistency::Local)
        .await
        .unwrap();
    assert_eq!(secret.map(|record| record.data), Some(MARKER.to_vec()));
    store.shutdown().await.unwrap();

    assert_eq!(flip_marker(&snapshot), 1);
    let error = expect_refusal(config, &snapshot).await;
    assert!(
        matches!(&error, StoreError::CorruptSnapshot { detail, .. } if detail.contains("checksum mismatch")),
        "{error}"
    );
}
