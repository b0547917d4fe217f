//! The Raft state machine: the object store in memory, made durable by the log plus a snapshot
//! file. On restart the store loads the snapshot and openraft re-applies the log after it, up to
//! the last committed index it saved. Applying is pure (see `object_store`), so replay reproduces
//! exactly the state that was acknowledged. The objects in the snapshot file are sealed under
//! the member's data key; snapshots sent to other members travel in clear over mutual TLS.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use shoal_metrics::{RaftMetrics, SnapshotOrigin};

use crate::data_key::{DataKey, Undecryptable};
use crate::error::StoreError;
use crate::object_store::ObjectStore;
use crate::types::raft_types::{LogId, Snapshot, SnapshotMeta, StoredMembership};
use crate::types::{CommittedChanges, ObjectRecord, TxnOutcome, TypeConfig};
use crate::watch::WatchHub;

const SNAPSHOT_FILE: &str = "snapshot.bin";
/// Recent committed entries kept for watchers to resume from.
const WATCH_HISTORY: usize = 20_000;
/// The most bytes of object data those entries may hold (each update keeps its old and new
/// record), so that large objects can't make the history outgrow the manager's memory.
const WATCH_HISTORY_BYTES: usize = 64 << 20;

pub(crate) struct Applied {
    pub(crate) objects: ObjectStore,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

/// The snapshot file, behind a checksum of the whole: the metadata in clear (log ids and member
/// addresses, no object data) and the encoded objects sealed under the data key, bound to that
/// metadata.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    sealed_data: Vec<u8>,
}

/// What the sealed objects are bound to: the snapshot's metadata, so that the objects of one
/// snapshot can't pass for another's.
fn snapshot_binding(meta: &SnapshotMeta) -> Vec<u8> {
    let mut binding = b"shoal raft snapshot".to_vec();
    binding.extend(
        postcard::to_allocvec(meta)
            .unwrap_or_else(|error| panic!("encoding in-memory metadata cannot fail: {error}")),
    );
    binding
}

pub(crate) struct Shared {
    pub(crate) applied: RwLock<Applied>,
    pub(crate) watch: Arc<WatchHub>,
    dir: PathBuf,
    key: DataKey,
    metrics: RaftMetrics,
    /// The log id the snapshot file covers. Building a snapshot and installing one from the
    /// leader run concurrently; each writes the file while holding this lock, and only over an
    /// older one, so the file is never a mix of both, nor set back by a build that started
    /// before an install and finished after it.
    on_disk: Mutex<Option<LogId>>,
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.applied
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Applied> {
        self.applied
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the snapshot file for `meta` unless the file already covers as much of the log or
    /// more; returns whether it wrote. Blocks on the disk: call it off the async runtime.
    fn persist_if_newer(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<bool> {
        // A panic while holding the lock leaves the file whole (it is replaced by a rename) and
        // the mark at the file's last successful write.
        let mut on_disk = self.on_disk.lock().unwrap_or_else(|p| p.into_inner());
        if on_disk.is_some() && *on_disk >= meta.last_log_id {
            return Ok(false);
        }
        StateMachine::persist(&self.dir, &self.key, meta, data)?;
        *on_disk = meta.last_log_id;
        Ok(true)
    }
}

#[derive(Clone)]
pub(crate) struct StateMachine {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) fn encode_records(objects: &ObjectStore) -> Vec<u8> {
    let records: Vec<&ObjectRecord> = objects.records().collect();
    postcard::to_allocvec(&records)
        .unwrap_or_else(|error| panic!("encoding in-memory records cannot fail: {error}"))
}

fn decode_records(data: &[u8]) -> Result<Vec<ObjectRecord>, String> {
    postcard::from_bytes(data).map_err(|error| format!("undecodable snapshot data: {error}"))
}

impl StateMachine {
    /// Loads the snapshot in `dir`, if any, opening it with `key`. A damaged snapshot, or one
    /// sealed with another key, is reported, never overwritten.
    pub(crate) fn open(
        dir: &Path,
        key: &DataKey,
        metrics: &RaftMetrics,
    ) -> Result<Self, StoreError> {
        let path = dir.join(SNAPSHOT_FILE);
        let (applied, snapshot_index) = match read_snapshot_file(&path, key)? {
            Some(file) => {
                let records =
                    decode_records(&file.data).map_err(|detail| StoreError::CorruptSnapshot {
                        path: path.clone(),
                        detail,
                    })?;
                let index = file.meta.last_log_id.as_ref().map_or(0, |id| id.index());
                let applied = Applied {
                    objects: ObjectStore::from_records(records),
                    last_applied: file.meta.last_log_id,
                    membership: file.meta.last_membership,
                };
                (applied, index)
            }
            None => (
                Applied {
                    objects: ObjectStore::default(),
                    last_applied: None,
                    membership: StoredMembership::default(),
                },
                0,
            ),
        };
        let on_disk = applied.last_applied;
        Ok(StateMachine {
            shared: Arc::new(Shared {
                applied: RwLock::new(applied),
                watch: Arc::new(WatchHub::new(
                    snapshot_index,
                    WATCH_HISTORY,
                    WATCH_HISTORY_BYTES,
                )),
                dir: dir.to_owned(),
                key: key.clone(),
                metrics: metrics.clone(),
                on_disk: Mutex::new(on_disk),
            }),
        })
    }

    /// Writes a snapshot to disk, its objects (`data`) sealed under `key`: a temporary file,
    /// fsync, rename, fsync the folder.
    pub(crate) fn persist(
        dir: &Path,
        key: &DataKey,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> io::Result<()> {
        use std::io::Write;
        let file = SnapshotFile {
            meta: meta.clone(),
            sealed_data: key
                .seal(&snapshot_binding(meta), data)
                .map_err(io::Error::other)?,
        };
        let body = postcard::to_allocvec(&file).map_err(io::Error::other)?;
        let temporary = dir.join("snapshot.tmp");
        let mut out = std::fs::File::create(&temporary)?;
        out.write_all(&crc32fast::hash(&body).to_le_bytes())?;
        out.write_all(&body)?;
        out.sync_all()?;
        std::fs::rename(&temporary, dir.join(SNAPSHOT_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// A snapshot as read back: its metadata and its objects, opened.
struct OpenedSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

fn read_snapshot_file(path: &Path, key: &DataKey) -> Result<Option<OpenedSnapshot>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StoreError::io(path, error)),
    };
    let corrupt = |detail: String| StoreError::CorruptSnapshot {
        path: path.to_owned(),
        detail,
    };
    let (checksum, body) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt(format!("only {} bytes long", bytes.len())))?;
    if u32::from_le_bytes(*checksum) != crc32fast::hash(body) {
        return Err(corrupt("checksum mismatch".to_owned()));
    }
    let file: SnapshotFile =
        postcard::from_bytes(body).map_err(|error| corrupt(format!("undecodable: {error}")))?;
    let data = key
        .open(&snapshot_binding(&file.meta), &file.sealed_data)
        .map_err(|Undecryptable| StoreError::UndecryptableSnapshot {
            path: path.to_owned(),
        })?;
    Ok(Some(OpenedSnapshot {
        meta: file.meta,
        data,
    }))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, data) = {
            let applied = self.shared.read();
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            };
            (meta, encode_records(&applied.objects))
        };
        let shared = Arc::clone(&self.shared);
        let (meta, data, written) = tokio::task::spawn_blocking(move || {
            shared
                .persist_if_newer(&meta, &data)
                .map(|written| (meta, data, written))
        })
        .await
        .map_err(io::Error::other)??;
        self.shared
            .metrics
            .record_snapshot(SnapshotOrigin::Built, data.len());
        if written {
            tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "built a snapshot");
        } else {
            tracing::info!(
                last_log_id = ?meta.last_log_id,
                "built a snapshot older than the one installed meanwhile; the installed one stays"
            );
        }
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut published = Vec::new();
        let mut last_index = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let index = log_id.index();
            let outcome = {
                let mut applied = self.shared.write();
                let outcome = match &entry.payload {
                    EntryPayload::Normal(txn) => match applied.objects.apply(txn, index) {
                        Ok(changes) => {
                            published.push(CommittedChanges { index, changes });
                            TxnOutcome::Committed { index }
                        }
                        Err(rejection) => TxnOutcome::Rejected(rejection),
                    },
                    EntryPayload::Membership(membership) => {
                        applied.membership =
                            StoredMembership::new(Some(log_id), membership.clone());
                        TxnOutcome::Committed { index }
                    }
                    EntryPayload::Blank => TxnOutcome::Committed { index },
                };
                applied.last_applied = Some(log_id);
                outcome
            };
            last_index = Some(index);
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        if let Some(index) = last_index {
            self.shared.watch.publish(published, index);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<(), io::Error> {
        let records = decode_records(&data).map_err(io::Error::other)?;
        self.shared
            .metrics
            .record_snapshot(SnapshotOrigin::Installed, data.len());
        let shared = Arc::clone(&self.shared);
        let persisted_meta = meta.clone();
        tokio::task::spawn_blocking(move || shared.persist_if_newer(&persisted_meta, &data))
            .await
            .map_err(io::Error::other)??;
        let index = meta.last_log_id.as_ref().map_or(0, |id| id.index());
        {
            let mut applied = self.shared.write();
            applied.objects = ObjectStore::from_records(records);
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
        }
        self.shared.watch.reset(index);
        tracing::info!(last_log_id = ?meta.last_log_id, "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let path = self.shared.dir.join(SNAPSHOT_FILE);
        let file = read_snapshot_file(&path, &self.shared.key).map_err(io::Error::other)?;
        Ok(file.map(|file| Snapshot {
            meta: file.meta,
            snapshot: file.data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(openraft::testing::log_id::<TypeConfig>(1, 1, index)),
            last_membership: StoredMembership::default(),
        }
    }

    fn on_disk(dir: &Path, key: &DataKey) -> Option<u64> {
        read_snapshot_file(&dir.join(SNAPSHOT_FILE), key)
            .expect("a whole snapshot file")
            .and_then(|file| file.meta.last_log_id.map(|id| id.index()))
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let key = DataKey::generate().unwrap();
        let machine = StateMachine::open(dir.path(), &key, &RaftMetrics::default()).unwrap();
        let data = encode_records(&ObjectStore::default());
        // A snapshot installed from the leader at 200 while a build of the state at 100 was
        // still writing: the build finishing last must not set the file back.
        assert!(machine.shared.persist_if_newer(&meta(200), &data).unwrap());
        assert!(!machine.shared.persist_if_newer(&meta(100), &data).unwrap());
        assert_eq!(on_disk(dir.path(), &key), Some(200));
        assert!(machine.shared.persist_if_newer(&meta(300), &data).unwrap());
        assert_eq!(on_disk(dir.path(), &key), Some(300));
        // A reopened member knows what its file covers.
        drop(machine);
        let reopened = StateMachine::open(dir.path(), &key, &RaftMetrics::default()).unwrap();
        assert!(!reopened.shared.persist_if_newer(&meta(250), &data).unwrap());
        assert_eq!(on_disk(dir.path(), &key), Some(300));
    }

    #[test]
    fn concurrent_builds_and_installs_leave_one_whole_file_of_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let key = DataKey::generate().unwrap();
        let machine = StateMachine::open(dir.path(), &key, &RaftMetrics::default()).unwrap();
        // Big enough that two writers' bytes would interleave in a shared temporary file.
        let data = vec![9u8; 1 << 20];
        std::thread::scope(|scope| {
            for writer in 0..2u64 {
                let (shared, data) = (&machine.shared, &data);
                scope.spawn(move || {
                    for round in 1..=20u64 {
                        shared
                            .persist_if_newer(&meta(round * 2 + writer), data)
                            .expect("persisting a snapshot");
                    }
                });
            }
        });
        assert_eq!(on_disk(dir.path(), &key), Some(41));
    }
}
