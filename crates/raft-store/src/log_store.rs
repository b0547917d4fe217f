//! The Raft log and vote on disk, in redb. Every entry is also kept in memory (the log is purged
//! behind each snapshot, so it stays small) so reads never touch the disk. One writer thread turns
//! whatever has queued up into a single redb transaction and a single fsync: group commit.
//! Entries carry object data, so each is sealed under the data key (see `data_key`) before it
//! is checksummed and stored; the vote and the marks beside it hold only ids and stay in clear.
//!
//! Storage errors are fail-stop: once a write, truncation or purge fails, the writer writes
//! nothing more and fails everything queued or sent after it, so nothing later is acknowledged
//! over a log whose state on disk is unknown; openraft takes the error as a fatal storage error
//! and stops the member.

use std::collections::BTreeMap;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Instant;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use redb::{
    Database, Durability, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition,
};
use shoal_metrics::{Histogram, RaftMetrics};
use tokio::sync::oneshot;

use crate::data_key::{DataKey, Undecryptable};
use crate::error::StoreError;
use crate::types::TypeConfig;
use crate::types::raft_types::{Entry, LogId, Vote};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_else(|error| {
        // Serializing plain in-memory data to a Vec cannot fail; reaching this is a bug.
        panic!("encoding a log record: {error}")
    })
}

/// Puts a CRC32 in front of `body`, so that a flipped bit is caught when the log is opened
/// instead of being replicated (or taken for a wrong key).
fn checksummed(body: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(body.len() + 4);
    record.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    record.extend_from_slice(body);
    record
}

fn verified(record: &[u8]) -> Result<&[u8], String> {
    let (checksum, body) = record
        .split_first_chunk::<4>()
        .ok_or_else(|| format!("record of {} bytes is truncated", record.len()))?;
    if u32::from_le_bytes(*checksum) != crc32fast::hash(body) {
        return Err("checksum mismatch".to_owned());
    }
    Ok(body)
}

/// The vote, the committed id and the purge mark: log ids and member ids only, no object data,
/// so they are kept in clear with their checksum.
fn clear_record<T: serde::Serialize>(value: &T) -> Vec<u8> {
    checksummed(&encode(value))
}

fn read_clear_record<T: serde::de::DeserializeOwned>(record: &[u8]) -> Result<T, String> {
    postcard::from_bytes(verified(record)?).map_err(|error| format!("undecodable record: {error}"))
}

/// What an entry's seal is bound to: its place in the log, so that no entry can stand in for
/// another.
fn entry_binding(index: u64) -> [u8; 24] {
    let mut binding = [0u8; 24];
    binding[..16].copy_from_slice(b"shoal raft entry");
    binding[16..].copy_from_slice(&index.to_be_bytes());
    binding
}

/// An entry as stored: sealed under the data key, bound to its index, then checksummed.
fn sealed_entry(key: &DataKey, entry: &Entry) -> io::Result<Vec<u8>> {
    let sealed = key
        .seal(&entry_binding(entry.index()), &encode(entry))
        .map_err(io::Error::other)?;
    Ok(checksummed(&sealed))
}

/// Why a stored record can't be read.
enum Unreadable {
    /// Its checksum or structure is wrong: the file is damaged.
    Damaged(String),
    /// It is whole but does not open: another data key sealed it.
    WrongKey(String),
}

impl From<String> for Unreadable {
    fn from(detail: String) -> Self {
        Unreadable::Damaged(detail)
    }
}

fn read_sealed_entry(key: &DataKey, index: u64, record: &[u8]) -> Result<Entry, Unreadable> {
    let sealed = verified(record).map_err(|e| format!("entry at index {index}: {e}"))?;
    let body = key
        .open(&entry_binding(index), sealed)
        .map_err(|Undecryptable| {
            Unreadable::WrongKey(format!("the entry at index {index} does not open"))
        })?;
    let entry: Entry = postcard::from_bytes(&body)
        .map_err(|error| format!("entry at index {index}: undecodable record: {error}"))?;
    Ok(entry)
}

/// redb's page cache.
const REDB_CACHE_BYTES: usize = 4 << 20;

#[derive(Default)]
struct LogCache {
    entries: BTreeMap<u64, Entry>,
    /// The stored size of each cached entry, and their sum: what the cache costs in memory,
    /// roughly, so that the store can snapshot early when entries are large.
    sizes: BTreeMap<u64, usize>,
    bytes: usize,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

impl LogCache {
    fn insert(&mut self, index: u64, entry: Entry, size: usize) {
        self.entries.insert(index, entry);
        if let Some(replaced) = self.sizes.insert(index, size) {
            self.bytes -= replaced;
        }
        self.bytes += size;
    }

    /// Drops every entry at or after `first`.
    fn remove_from(&mut self, first: u64) {
        self.entries.split_off(&first);
        let removed = self.sizes.split_off(&first);
        self.bytes -= removed.values().sum::<usize>();
    }

    /// Drops every entry up to and including `last`.
    fn remove_up_to(&mut self, last: u64) {
        self.entries = self.entries.split_off(&(last + 1));
        let kept = self.sizes.split_off(&(last + 1));
        self.bytes -= self.sizes.values().sum::<usize>();
        self.sizes = kept;
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.sizes.clear();
        self.bytes = 0;
    }
}

enum WriteOp {
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        flushed: IOFlushed<TypeConfig>,
        /// When openraft handed the entries over: the append's latency runs until they are
        /// on disk.
        handed_over: Instant,
    },
    /// Removes every entry at or after this index.
    TruncateFrom(u64),
    PurgeUpTo(LogId),
    SaveVote {
        vote: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
    SaveCommitted(Vec<u8>),
    /// Makes everything queued before it durable, then replies.
    Sync(oneshot::Sender<io::Result<()>>),
}

/// The writer's first failure, after which it writes nothing more. Shared by the writer thread
/// and every handle, so that new operations are refused up front.
#[derive(Default)]
struct WriterHealth {
    failure: Mutex<Option<String>>,
    /// Makes the writer's next batch fail as a failed disk write would, for tests.
    #[cfg(test)]
    fail_next_batch: AtomicBool,
}

impl WriterHealth {
    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the first failure; later ones only repeat its consequence.
    fn fail(&self, detail: String) {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(detail);
    }

    fn stopped_error(&self) -> Option<io::Error> {
        self.failure().map(|detail| {
            io::Error::other(format!(
                "the raft log writer stopped after a failed write ({detail}); nothing more is written until the daemon restarts"
            ))
        })
    }
}

struct Shared {
    path: PathBuf,
    key: DataKey,
    health: Arc<WriterHealth>,
    cache: Mutex<LogCache>,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Shared {
    /// Stops the writer after it has written everything queued, and closes the database, so the
    /// same file can be opened again at once (redb refuses a second open while the first lives).
    fn close(&self) {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.close();
    }
}

/// The on-disk Raft log and vote; cheap to clone.
#[derive(Clone)]
pub(crate) struct LogStore {
    shared: Arc<Shared>,
}

impl LogStore {
    /// Opens (or creates) the log at `path`, verifying every record and opening every entry
    /// with `key`. A damaged file, or one sealed with another key, is reported and left exactly
    /// as it was: it is first read through a read-only handle, and only a file that reads whole
    /// is opened for writing.
    pub(crate) fn open(
        path: &Path,
        key: &DataKey,
        metrics: &RaftMetrics,
    ) -> Result<Self, StoreError> {
        let corrupt = |detail: String| StoreError::CorruptLog {
            path: path.to_owned(),
            detail,
        };
        let unreadable = |unreadable: Unreadable| match unreadable {
            Unreadable::Damaged(detail) => corrupt(detail),
            Unreadable::WrongKey(detail) => StoreError::UndecryptableLog {
                path: path.to_owned(),
                detail,
            },
        };
        let already_open = || {
            StoreError::io(
                path,
                "the raft log is already open; is another shoal daemon using this data root?",
            )
        };
        let existed = path.exists();
        let verified = if existed {
            match ReadOnlyDatabase::open(path) {
                Ok(database) => Some(Self::load(&database, key).map_err(unreadable)?),
                // A crash left a commit half done; redb's own recovery finishes it when the file
                // is opened for writing below, and the records are verified after that.
                Err(redb::DatabaseError::RepairAborted) => None,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(already_open()),
                Err(other) => return Err(corrupt(other.to_string())),
            }
        } else {
            None
        };
        // Entries are read back from the in-memory cache, so redb's page cache only serves
        // writes; its default (up to 1 GiB) would grow the daemon's RSS for nothing.
        let mut builder = Database::builder();
        builder.set_cache_size(REDB_CACHE_BYTES);
        let database = if existed {
            builder.open(path)
        } else {
            builder.create(path)
        }
        .map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => already_open(),
            other => corrupt(other.to_string()),
        })?;
        let cache = match verified {
            Some(cache) => cache,
            None if existed => Self::load(&database, key).map_err(unreadable)?,
            None => {
                Self::initialise(&database).map_err(|error| StoreError::io(path, error))?;
                LogCache::default()
            }
        };
        let (sender, receiver) = mpsc::channel();
        let writer_path = path.to_owned();
        let health = Arc::new(WriterHealth::default());
        let writer_health = Arc::clone(&health);
        let append_duration = metrics.append_duration.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".to_owned())
            .spawn(move || {
                write_loop(
                    database,
                    receiver,
                    writer_path,
                    &writer_health,
                    &append_duration,
                )
            })
            .map_err(|error| StoreError::io(path, error))?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                key: key.clone(),
                health,
                cache: Mutex::new(cache),
                writer: Mutex::new(Some(sender)),
                writer_thread: Mutex::new(Some(thread)),
            }),
        })
    }

    fn initialise(database: &Database) -> Result<(), redb::Error> {
        let txn = database.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    }

    fn load(database: &impl ReadableDatabase, key: &DataKey) -> Result<LogCache, Unreadable> {
        let txn = database.begin_read().map_err(|error| error.to_string())?;
        let mut cache = LogCache::default();
        let meta = txn.open_table(META).map_err(|error| error.to_string())?;
        let read_meta = |key: &str| -> Result<Option<Vec<u8>>, String> {
            Ok(meta
                .get(key)
                .map_err(|error| error.to_string())?
                .map(|value| value.value().to_vec()))
        };
        if let Some(sealed) = read_meta(VOTE_KEY)? {
            cache.vote = Some(read_clear_record(&sealed).map_err(|e| format!("vote: {e}"))?);
        }
        if let Some(sealed) = read_meta(COMMITTED_KEY)? {
            cache.committed =
                read_clear_record(&sealed).map_err(|e| format!("committed id: {e}"))?;
        }
        if let Some(sealed) = read_meta(PURGED_KEY)? {
            cache.last_purged =
                read_clear_record(&sealed).map_err(|e| format!("purge mark: {e}"))?;
        }
        let entries = txn.open_table(ENTRIES).map_err(|error| error.to_string())?;
        let mut expected_next = cache.last_purged.as_ref().map(|id| id.index() + 1);
        for row in entries.iter().map_err(|error| error.to_string())? {
            let (index, sealed) = row.map_err(|error| error.to_string())?;
            let index = index.value();
            let entry = read_sealed_entry(key, index, sealed.value())?;
            if entry.index() != index {
                return Err(Unreadable::Damaged(format!(
                    "entry stored at index {index} claims index {}",
                    entry.index()
                )));
            }
            if let Some(expected) = expected_next
                && index != expected
            {
                return Err(Unreadable::Damaged(format!(
                    "entries {expected} to {} are missing",
                    index - 1
                )));
            }
            expected_next = Some(index + 1);
            cache.insert(index, entry, sealed.value().len());
        }
        Ok(cache)
    }

    /// About how many bytes the entries kept in memory take (their stored size).
    pub(crate) fn cached_bytes(&self) -> usize {
        self.cache().bytes
    }

    /// Closes the log for every clone: later writes fail with "the raft log writer has stopped".
    pub(crate) fn close(&self) {
        self.shared.close();
    }

    pub(crate) fn path(&self) -> &Path {
        &self.shared.path
    }

    fn cache(&self) -> MutexGuard<'_, LogCache> {
        // A panic while holding this lock leaves the cache consistent: every mutation is a single
        // map operation.
        self.shared
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the writer's next batch fail as a failed disk write would.
    #[cfg(test)]
    pub(crate) fn fail_next_write(&self) {
        self.shared
            .health
            .fail_next_batch
            .store(true, Ordering::SeqCst);
    }

    /// The failure that stopped the writer, if one did.
    pub(crate) fn writer_failure(&self) -> Option<String> {
        self.shared.health.failure()
    }

    fn send(&self, op: WriteOp) -> io::Result<()> {
        if let Some(stopped) = self.shared.health.stopped_error() {
            return Err(stopped);
        }
        let writer = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer
            .as_ref()
            .and_then(|writer| writer.send(op).ok())
            .ok_or_else(|| io::Error::other("the raft log writer has stopped"))
    }

    /// The last log id kept, for offline tools such as `force_new_cluster`.
    pub(crate) fn last_log_id(&self) -> Option<LogId> {
        let cache = self.cache();
        cache
            .entries
            .values()
            .next_back()
            .map(|entry| entry.log_id())
            .or_else(|| cache.last_purged)
    }

    pub(crate) fn entries_after(&self, index: Option<u64>) -> Vec<Entry> {
        let start = index.map_or(0, |index| index + 1);
        self.cache()
            .entries
            .range(start..)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Drops every entry, writing `purged_up_to` as the purge mark, and waits until it is durable.
    /// Used when a member is re-founded from a snapshot.
    pub(crate) async fn reset(&self, purged_up_to: LogId) -> io::Result<()> {
        {
            let mut cache = self.cache();
            cache.clear();
            cache.last_purged = Some(purged_up_to);
        }
        self.send(WriteOp::PurgeUpTo(purged_up_to))?;
        self.sync().await
    }

    /// Waits until every operation queued so far is on disk.
    pub(crate) async fn sync(&self) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.send(WriteOp::Sync(done))?;
        wait.await
            .map_err(|_| io::Error::other("the raft log writer has stopped"))?
    }

    async fn save_vote_durably(&self, vote: &Vote) -> io::Result<()> {
        self.cache().vote = Some(*vote);
        let (done, wait) = oneshot::channel();
        self.send(WriteOp::SaveVote {
            vote: clear_record(vote),
            done,
        })?;
        wait.await
            .map_err(|_| io::Error::other("the raft log writer has stopped"))?
    }
}

/// The writer thread: batches queued operations into one transaction and one fsync. After a
/// batch fails, it writes nothing more: what the file holds is then unknown (a truncation or
/// purge may be missing under later entries), so every later operation fails with the first
/// error.
fn write_loop(
    database: Database,
    receiver: mpsc::Receiver<WriteOp>,
    path: PathBuf,
    health: &WriterHealth,
    append_duration: &Histogram,
) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        batch.extend(receiver.try_iter());
        let result = match health.stopped_error() {
            Some(stopped) => Err(stopped.to_string()),
            None => write_batch_checked(&database, &batch, health).map_err(|error| {
                tracing::error!(
                    path = %path.display(),
                    %error,
                    "writing the raft log failed; the log writer stops and this member with it"
                );
                health.fail(error.to_string());
                error.to_string()
            }),
        };
        for op in batch {
            let outcome = result.clone().map_err(io::Error::other);
            match op {
                WriteOp::Append {
                    flushed,
                    handed_over,
                    ..
                } => {
                    if outcome.is_ok() {
                        append_duration.observe(handed_over.elapsed().as_secs_f64());
                    }
                    flushed.io_completed(outcome)
                }
                WriteOp::SaveVote { done, .. } | WriteOp::Sync(done) => {
                    let _ = done.send(outcome);
                }
                WriteOp::TruncateFrom(_) | WriteOp::PurgeUpTo(_) | WriteOp::SaveCommitted(_) => {}
            }
        }
    }
}

fn write_batch_checked(
    database: &Database,
    batch: &[WriteOp],
    health: &WriterHealth,
) -> Result<(), redb::Error> {
    #[cfg(test)]
    if health.fail_next_batch.swap(false, Ordering::SeqCst) {
        return Err(redb::Error::Io(io::Error::other("injected write failure")));
    }
    #[cfg(not(test))]
    let _ = health;
    write_batch(database, batch)
}

fn write_batch(database: &Database, batch: &[WriteOp]) -> Result<(), redb::Error> {
    let mut txn = database.begin_write()?;
    // Only the committed mark may be lost on a crash: openraft re-learns it from the leader.
    let needs_fsync = batch
        .iter()
        .any(|op| !matches!(op, WriteOp::SaveCommitted(_)));
    txn.set_durability(if needs_fsync {
        Durability::Immediate
    } else {
        Durability::None
    })?;
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut meta = txn.open_table(META)?;
        for op in batch {
            match op {
                WriteOp::Append { entries: new, .. } => {
                    for (index, sealed) in new {
                        entries.insert(index, sealed.as_slice())?;
                    }
                }
                WriteOp::TruncateFrom(first_removed) => {
                    entries.retain_in::<u64, _>(*first_removed.., |_, _| false)?;
                }
                WriteOp::PurgeUpTo(log_id) => {
                    entries.retain_in::<u64, _>(..=log_id.index(), |_, _| false)?;
                    meta.insert(PURGED_KEY, clear_record(&Some(*log_id)).as_slice())?;
                }
                WriteOp::SaveVote { vote, .. } => {
                    meta.insert(VOTE_KEY, vote.as_slice())?;
                }
                WriteOp::SaveCommitted(sealed) => {
                    meta.insert(COMMITTED_KEY, sealed.as_slice())?;
                }
                WriteOp::Sync(_) => {}
            }
        }
    }
    txn.commit()?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self
            .cache()
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.cache().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let cache = self.cache();
        let last_purged_log_id = cache.last_purged;
        let last_log_id = cache
            .entries
            .values()
            .next_back()
            .map(|entry| entry.log_id())
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.save_vote_durably(vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let sealed = clear_record(&committed);
        self.cache().committed = committed;
        self.send(WriteOp::SaveCommitted(sealed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.cache().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        flushed: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let handed_over = Instant::now();
        let mut sealed = Vec::new();
        let mut kept = Vec::new();
        // Sealed before the cache is locked: readers never wait on the cipher.
        for entry in entries {
            let index = entry.index();
            let bytes = sealed_entry(&self.shared.key, &entry)?;
            kept.push((index, entry, bytes.len()));
            sealed.push((index, bytes));
        }
        {
            let mut cache = self.cache();
            for (index, entry, size) in kept {
                cache.insert(index, entry, size);
            }
        }
        self.send(WriteOp::Append {
            entries: sealed,
            flushed,
            handed_over,
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let first_removed = last_log_id.map_or(0, |id| id.index() + 1);
        self.cache().remove_from(first_removed);
        self.send(WriteOp::TruncateFrom(first_removed))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        {
            let mut cache = self.cache();
            cache.remove_up_to(log_id.index());
            cache.last_purged = Some(log_id);
        }
        self.send(WriteOp::PurgeUpTo(log_id))
    }
}
