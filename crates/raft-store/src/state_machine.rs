//! The Raft state machine: the object store in memory, made durable by the log plus a snapshot
//! file. On restart the store loads the snapshot and openraft re-applies the log after it, up to
//! the last committed index it saved. Applying is pure (see `object_store`), so replay reproduces
//! exactly the state that was acknowledged. The objects in the snapshot file are sealed under
//! the member's data key; snapshots sent to other members travel in clear over mutual TLS.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

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
    pub(crate) fn open(dir: &Path, key: &DataKey) -> Result<Self, StoreError> {
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
        let (dir, key) = (self.shared.dir.clone(), self.shared.key.clone());
        let (meta, data) = tokio::task::spawn_blocking(move || {
            StateMachine::persist(&dir, &key, &meta, &data).map(|()| (meta, data))
        })
        .await
        .map_err(io::Error::other)??;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "built a snapshot");
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
        let (dir, key) = (self.shared.dir.clone(), self.shared.key.clone());
        let persisted_meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            StateMachine::persist(&dir, &key, &persisted_meta, &data)
        })
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
