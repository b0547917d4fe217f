//! Encryption at rest: no object's data appears in any file of a member's data directory, in
//! the log or in a snapshot; the member reads it all back with its data key, and refuses to
//! start, changing nothing, with any other key.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use raft_store::{DataKey, ReadConsistency, Store, StoreConfig, StoreError, Transaction};
use support::pki::{TestPki, data_key};

const MARKER: &[u8] = b"plaintext-marker-7f3e9a";

fn payload(tag: &str) -> Vec<u8> {
    let mut payload = format!("{tag}:").into_bytes();
    payload.extend_from_slice(MARKER);
    payload
}

async fn config(dir: &Path) -> (StoreConfig, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = StoreConfig::new(1, dir, &addr, TestPki::new().identity(1), data_key(1));
    (config, listener)
}

fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(every_file(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn files_holding_the_marker(dir: &Path) -> Vec<PathBuf> {
    every_file(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes.windows(MARKER.len()).any(|window| window == MARKER)
        })
        .collect()
}

fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    every_file(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

/// A one-member store in `dir`, serving and bootstrapped, with the config it was opened with.
async fn bootstrapped(dir: &Path) -> (StoreConfig, Store) {
    let (config, listener) = config(dir).await;
    let store = Store::open(config.clone()).await.unwrap();
    store.serve(listener).unwrap();
    store.bootstrap().await.unwrap();
    (config, store)
}

async fn open_with(config: &StoreConfig, key: DataKey) -> Result<Store, StoreError> {
    let mut config = config.clone();
    config.data_key = key;
    Store::open(config).await
}

/// Opening with `key` fails and leaves every file as it was; returns the error.
async fn refused(config: &StoreConfig, key: DataKey) -> StoreError {
    let before = contents(&config.data_dir);
    let error = match open_with(config, key).await {
        Err(error) => error,
        Ok(store) => {
            store.shutdown().await.unwrap();
            panic!("a member must not start with another data key");
        }
    };
    assert!(
        contents(&config.data_dir) == before,
        "a refused start changed the files"
    );
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_data_is_sealed_in_the_log_and_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = bootstrapped(dir.path()).await;
    // One object ends up in the snapshot, the other only in the log after it.
    store
        .write(Transaction::create(
            "secret",
            "in-snapshot",
            "",
            payload("snapshot"),
        ))
        .await
        .unwrap();
    store.snapshot_now().await.unwrap();
    store
        .write(Transaction::create("secret", "in-log", "", payload("log")))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    assert!(dir.path().join("snapshot.bin").exists());
    assert!(
        files_holding_the_marker(dir.path()).is_empty(),
        "object data in clear on disk: {:?}",
        files_holding_the_marker(dir.path())
    );

    // The right key reads both back.
    let store = open_with(&config, data_key(1)).await.unwrap();
    store
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    for (id, tag) in [("in-snapshot", "snapshot"), ("in-log", "log")] {
        let record = store
            .get("secret", id, ReadConsistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(
            record.map(|record| record.data.to_vec()),
            Some(payload(tag)),
            "{id}"
        );
    }
    store.shutdown().await.unwrap();

    // Another key is refused at the snapshot, which is read first, with what to do.
    let error = refused(&config, data_key(2)).await;
    let snapshot = dir.path().join("snapshot.bin");
    assert!(
        matches!(&error, StoreError::UndecryptableSnapshot { path } if *path == snapshot),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("cannot decrypt the snapshot")
            && message.contains("wrong data key or damaged file")
            && message.contains("changed nothing")
            && message.contains("data key it was written with"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_sealed_with_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store) = bootstrapped(dir.path()).await;
    store
        .write(Transaction::create("secret", "s", "", payload("log")))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    assert!(!dir.path().join("snapshot.bin").exists());
    assert!(files_holding_the_marker(dir.path()).is_empty());

    let error = refused(&config, data_key(2)).await;
    assert!(
        matches!(error, StoreError::UndecryptableLog { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("cannot decrypt the raft log")
            && message.contains("wrong data key or damaged file")
            && message.contains(&dir.path().join("raft-log.redb").display().to_string())
            && message.contains("changed nothing"),
        "{message}"
    );
    let store = open_with(&config, data_key(1)).await.unwrap();
    store
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let record = store
        .get("secret", "s", ReadConsistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        record.map(|record| record.data.to_vec()),
        Some(payload("log"))
    );
    store.shutdown().await.unwrap();
}
